"""RMSprop (Hinton, 2012), centered (Graves, 2013), with momentum."""

from dataclasses import dataclass
from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend
from arrayopt.optimizer import ElementwiseOptimizer, Hyper
from arrayopt.parameter import Parameter

__all__ = ["RMSprop", "rmsprop_update"]


def rmsprop_update(
    xp: Any,
    param: Any,
    grad: Any,
    square_avg: Any,
    grad_avg: Any,
    momentum_buffer: Any,
    lr: float,
    alpha: float,
    one_minus_alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    *,
    maximize: bool,
    decay: bool,
    centered: bool,
    small_weight: bool,
    use_momentum: bool,
) -> None:
    r"""One RMSprop step, in place on ``param`` and the running averages.

    .. math::

        g &\leftarrow \pm g + \lambda\theta \\
        v &\leftarrow \alpha v + (1-\alpha)\, g^2 \\
        \bar g &\leftarrow \bar g + (1-\alpha)(g - \bar g) \quad\text{(centered)} \\
        d &\leftarrow \sqrt{v - \bar g^2} + \epsilon
            \quad\text{(centered; else } \sqrt{v} + \epsilon) \\
        b &\leftarrow \mu b + g / d, \quad \theta \leftarrow \theta - \gamma b
            \quad\text{(use_momentum; else } \theta \leftarrow \theta - \gamma g / d)

    with weight decay :math:`\lambda` (flag ``decay``), smoothing :math:`\alpha`,
    momentum :math:`\mu`, ``square_avg`` :math:`v`, ``grad_avg`` :math:`\bar g` and
    ``momentum_buffer`` :math:`b`. As in torch, :math:`\epsilon` is added after the
    square root, and :math:`\bar g` is torch's ``lerp``: for a weight
    :math:`1-\alpha` below 0.5 (``small_weight``) it moves from :math:`\bar g`
    towards :math:`g`, otherwise it is written :math:`g - (g - \bar g)\alpha`.
    ``grad_avg`` and ``momentum_buffer`` are unused (any placeholder) when their
    option is off.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param, grad, square_avg, grad_avg, momentum_buffer: arrays of one shape and dtype (the
            parameter, its gradient and its state); ``param`` and the state arrays are updated in place;
            ``grad`` is only read.
        lr, alpha, one_minus_alpha, eps, weight_decay, momentum: per-step Python floats, the quantities
            named in the math above, computed by :class:`RMSprop` with torch's expressions so they round
            as torch's do.
        maximize, decay, centered, small_weight, use_momentum: keyword flags that select the formula;
            they are fixed when the kernel is built (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np
        >>> p, g, square_avg = np.array([1.0, -2.0]), np.array([0.5, -0.25]), np.zeros(2)
        >>> flags = dict(maximize=False, decay=False, centered=False, small_weight=True, use_momentum=False)
        >>> rmsprop_update(np, p, g, square_avg, None, None, 0.01, 0.99, 0.01, 1e-8, 0.0, 0.0, **flags)
        >>> p.round(6), square_avg  # the first step moves by lr / sqrt(1 - alpha) = 0.1
        (array([ 0.9, -1.9]), array([0.0025  , 0.000625]))
    """
    g = -grad if maximize else grad
    if decay:
        g = g + weight_decay * param
    square_avg *= alpha
    square_avg += one_minus_alpha * g * g
    if centered:
        if small_weight:
            grad_avg += one_minus_alpha * (g - grad_avg)
        else:
            grad_avg[...] = g - (g - grad_avg) * alpha
        avg = xp.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = xp.sqrt(square_avg) + eps
    if use_momentum:
        momentum_buffer *= momentum
        momentum_buffer += g / avg
        param -= lr * momentum_buffer
    else:
        param -= lr * g / avg


@dataclass(frozen=True)
class RMSpropHyper(Hyper):
    """RMSprop's numbers for one step, as :func:`rmsprop_update` takes them."""

    lr: float
    alpha: float
    one_minus_alpha: float
    eps: float
    weight_decay: float
    momentum: float


class RMSprop(ElementwiseOptimizer[RMSpropHyper]):
    r"""RMSprop, optionally centered and with momentum; torch.optim.RMSprop.

    The rule is :func:`rmsprop_update`. As in torch, every argument is positional.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
        lr: learning rate :math:`\gamma` (float or 1-element array). Default: 1e-2.
        alpha: smoothing constant :math:`\alpha` of the averages (>= 0). Default: 0.99.
        eps: :math:`\epsilon`, added to the root of the average. Default: 1e-8.
        weight_decay: L2 penalty :math:`\lambda`. Default: 0.
        momentum: momentum factor :math:`\mu`. Default: 0.
        centered: divide by an estimate of the gradient's standard deviation
            (the root of :math:`v - \bar g^2`) instead of its root mean square.
            Default: False.
        capturable, differentiable: must be False (NotImplementedError otherwise).
        foreach: accepted for torch compatibility and stored in the groups; arrayopt
            has one implementation per backend, so it changes nothing.
        maximize: maximise the objective instead of minimising it. Default: False.

    State per parameter: ``step`` (a Python float), ``square_avg`` and, only if the
    option was on when the state was created (as torch), ``momentum_buffer``
    (momentum > 0) and ``grad_avg`` (centered), all zeros at creation. Turning an
    option on later raises ``KeyError`` at the next step, before anything changes.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.RMSprop([w], lr=0.01)
        >>> w.grad = 2 * w.data           # gradient of |w|^2
        >>> opt.step()                    # a first step is lr / sqrt(1 - alpha)
        >>> np.round(w.data, 6)
        array([ 0.9, -1.9])

    Reference:
        Hinton, Srivastava and Swersky, "Neural Networks for Machine Learning",
        lecture 6e, 2012. Graves, "Generating Sequences With Recurrent Neural
        Networks", arXiv:1308.0850, 2013 (the centered form).
    """

    _defaults_on_load: ClassVar[dict[str, Any]] = {
        "momentum": 0,
        "centered": False,
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }
    _flat_runs = True  # elementwise state and rule: flat Parameters update in one call per run
    _bundled = True  # _update only runs kernels: separate Parameters update in one call
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": StateKey("step"),
        "square_avg": StateKey(),
        "momentum_buffer": StateKey(required=False, required_if="momentum"),
        "grad_avg": StateKey(required=False, required_if="centered"),
    }

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-2,
        alpha: Any = 0.99,
        eps: Any = 1e-8,
        weight_decay: Any = 0,
        momentum: Any = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        v.check_lr(lr)
        v.check_nonnegative(eps, "eps", f"Invalid epsilon value: {eps}")
        v.check_nonnegative(momentum, "momentum", f"Invalid momentum value: {momentum}")
        v.check_nonnegative(weight_decay, "weight_decay", f"Invalid weight_decay value: {weight_decay}")
        v.check_nonnegative(alpha, "alpha", f"Invalid alpha value: {alpha}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        # Before the params are looked at, so a refused flag leaves the caller's
        # param-group dicts untouched (torch only fails at the first step).
        v.check_flag_conflicts(None, foreach, differentiable, capturable)
        super().__init__(params, defaults)

    def _hyper(self, group: dict[str, Any]) -> RMSpropHyper:
        alpha = v.to_float(group["alpha"])
        weight_decay = v.to_float(group["weight_decay"])
        momentum = v.to_float(group["momentum"])
        flags = {
            "maximize": bool(group["maximize"]),
            "decay": weight_decay != 0,
            "centered": bool(group["centered"]),
            "small_weight": abs(1 - alpha) < 0.5,
            "use_momentum": momentum > 0,
        }
        return RMSpropHyper(
            flags=flags,
            lr=v.to_float(group["lr"]),
            alpha=alpha,
            one_minus_alpha=1 - alpha,
            eps=v.to_float(group["eps"]),
            weight_decay=weight_decay,
            momentum=momentum,
        )

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        xp = get_backend(p.data).xp
        state = {"step": 0.0, "square_avg": xp.zeros_like(p.data)}
        if v.to_float(group["momentum"]) > 0:
            state["momentum_buffer"] = xp.zeros_like(p.data)
        if group["centered"]:
            state["grad_avg"] = xp.zeros_like(p.data)
        return state

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        # Missing keys (a loaded state, or an option turned on after the state was
        # made) raise KeyError here, before any parameter is updated.
        if "step" not in state:
            raise KeyError("step")
        grad_avg = state["grad_avg"] if group["centered"] else 0.0
        buffer = state["momentum_buffer"] if v.to_float(group["momentum"]) > 0 else 0.0
        return (p.data, p.grad, state["square_avg"], grad_avg, buffer)

    def _update(self, backend: Backend, hyper: RMSpropHyper, state: Any, operands: tuple[Any, ...]) -> None:
        state["step"] += 1
        kernel = backend.kernel(rmsprop_update, **hyper.flags)
        kernel(*operands, hyper.lr, hyper.alpha, hyper.one_minus_alpha, hyper.eps, hyper.weight_decay, hyper.momentum)

"""Adamax, the infinity-norm variant of Adam (Kingma and Ba, 2015, section 7.1)."""

from dataclasses import dataclass
from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend
from arrayopt.optimizer import ElementwiseOptimizer, Hyper
from arrayopt.parameter import Parameter

__all__ = ["Adamax", "adamax_update"]


def adamax_update(
    xp: Any,
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_inf: Any,
    weight_decay: float,
    weight: float,
    one_minus_weight: float,
    beta2: float,
    eps: float,
    step_size: float,
    *,
    maximize: bool,
    decay: bool,
    small_weight: bool,
) -> None:
    r"""One Adamax step, in place on ``param``, ``exp_avg`` and ``exp_inf``.

    .. math::

        g &\leftarrow \pm g + \lambda\theta \\
        m &\leftarrow m + (1-\beta_1)(g - m) \\
        u &\leftarrow \max(\beta_2 u,\ |g| + \epsilon) \\
        \theta &\leftarrow \theta - \frac{\gamma}{1-\beta_1^t}\,\frac{m}{u}

    with weight decay :math:`\lambda` (flag ``decay``). As in torch, :math:`\epsilon`
    is added to :math:`|g|` inside the maximum (not to the denominator, as in the
    paper), so :math:`u > 0` from the first step on. The host computes ``weight``
    :math:`= 1-\beta_1`, ``one_minus_weight`` :math:`= \beta_1` and ``step_size``
    :math:`= \gamma/(1-\beta_1^t)`. The first moment is torch's ``lerp``: for a
    weight below 0.5 (``small_weight``) it moves from :math:`m` towards :math:`g`,
    otherwise it is written :math:`g - (g - m)\beta_1`; the two round differently.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param, grad, exp_avg, exp_inf: arrays of one shape and dtype (the parameter, its gradient and
            its state); ``param`` and the state arrays are updated in place; ``grad`` is only read.
        weight_decay, weight, one_minus_weight, beta2, eps, step_size: per-step Python floats, the
            quantities named in the math above, computed by :class:`Adamax` with torch's expressions so
            they round as torch's do.
        maximize, decay, small_weight: keyword flags that select the formula; they are fixed when the
            kernel is built (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np, arrayopt
        >>> p = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.Adamax([p], lr=0.1)
        >>> p.grad = np.array([0.5, -0.25])
        >>> opt.step()  # calls the rule with the scalars computed for step 1
        >>> p.data.round(6)
        array([ 0.9, -1.9])
    """
    g = -grad if maximize else grad
    if decay:
        g = g + weight_decay * param
    if small_weight:
        exp_avg += weight * (g - exp_avg)
    else:
        exp_avg[...] = g - (g - exp_avg) * one_minus_weight
    exp_inf[...] = xp.maximum(exp_inf * beta2, xp.abs(g) + eps)
    param -= step_size * exp_avg / exp_inf


@dataclass(frozen=True)
class AdamaxHyper(Hyper):
    """Adamax's hyper-parameters for one step (``weight`` is ``1 - beta1``, as :func:`adamax_update` takes it)."""

    lr: float
    beta1: float
    weight_decay: float
    weight: float
    one_minus_weight: float
    beta2: float
    eps: float


class Adamax(ElementwiseOptimizer[AdamaxHyper]):
    r"""Adamax; torch.optim.Adamax.

    The rule is :func:`adamax_update`.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
        lr: learning rate :math:`\gamma` (float or 1-element array). Default: 2e-3.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1) (floats or 1-element
            arrays), stored as given. Default: (0.9, 0.999).
        eps: :math:`\epsilon`, added to :math:`|g|` inside the maximum. Default: 1e-8.
        weight_decay: L2 penalty :math:`\lambda`. Default: 0.
        foreach: accepted for torch compatibility and stored in the groups; arrayopt
            has one implementation per backend, so it changes nothing.
        maximize: maximise the objective instead of minimising it. Default: False.
        differentiable, capturable: must be False (NotImplementedError otherwise).

    State per parameter: ``step`` (a Python float), ``exp_avg`` and ``exp_inf``
    (zeros at creation).

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.Adamax([w], lr=0.1)
        >>> w.grad = 2 * w.data           # gradient of |w|^2
        >>> opt.step()                    # a first step moves each entry by about lr
        >>> np.round(w.data, 6)
        array([ 0.9, -1.9])

    Reference:
        Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    _defaults_on_load: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }
    _flat_runs = True  # elementwise state and rule: flat Parameters update in one call per run
    _bundled = True  # _update only runs kernels: separate Parameters update in one call
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": StateKey("step"),
        "exp_avg": StateKey(),
        "exp_inf": StateKey(),
    }

    def __init__(
        self,
        params: Any,
        lr: Any = 2e-3,
        betas: Any = (0.9, 0.999),
        eps: Any = 1e-8,
        weight_decay: Any = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        v.check_lr(lr)
        v.check_nonnegative(eps, "eps", f"Invalid epsilon value: {eps}")
        v.check_betas(betas)
        v.check_nonnegative(weight_decay, "weight_decay", f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        # Before the params are looked at, so a refused flag leaves the caller's
        # param-group dicts untouched (torch only fails at the first step).
        v.check_flag_conflicts(None, foreach, differentiable, capturable)
        super().__init__(params, defaults)

    def _hyper(self, group: dict[str, Any]) -> AdamaxHyper:
        beta1, beta2 = (v.to_float(beta) for beta in group["betas"])
        weight_decay = v.to_float(group["weight_decay"])
        weight = 1 - beta1
        return AdamaxHyper(
            flags={"maximize": bool(group["maximize"]), "decay": weight_decay != 0, "small_weight": abs(weight) < 0.5},
            lr=v.scalar_like(group["lr"]),  # a float32 lr: the step size is a float32 number, as torch's
            beta1=beta1,
            weight_decay=weight_decay,
            weight=weight,
            one_minus_weight=1 - weight,
            beta2=beta2,
            eps=v.to_float(group["eps"]),
        )

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        xp = get_backend(p.data).xp
        return {"step": 0.0, "exp_avg": xp.zeros_like(p.data), "exp_inf": xp.zeros_like(p.data)}

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        if "step" not in state:  # a loaded state without it: fail now, before any update
            raise KeyError("step")
        return (p.data, p.grad, state["exp_avg"], state["exp_inf"])

    def _update(self, backend: Backend, hyper: AdamaxHyper, state: Any, operands: tuple[Any, ...]) -> None:
        state["step"] += 1
        # torch's Python-float expressions, so the step size rounds identically.
        step_size = float(hyper.lr / (1 - hyper.beta1 ** state["step"]))
        kernel = backend.kernel(adamax_update, **hyper.flags)
        kernel(*operands, hyper.weight_decay, hyper.weight, hyper.one_minus_weight, hyper.beta2, hyper.eps, step_size)

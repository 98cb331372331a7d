"""Adadelta (Zeiler, 2012)."""

from dataclasses import dataclass
from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend
from arrayopt.optimizer import ElementwiseOptimizer, Hyper
from arrayopt.parameter import Parameter

__all__ = ["Adadelta", "adadelta_update"]


def adadelta_update(
    xp: Any,
    param: Any,
    grad: Any,
    square_avg: Any,
    acc_delta: Any,
    lr: float,
    rho: float,
    one_minus_rho: float,
    eps: float,
    weight_decay: float,
    *,
    maximize: bool,
    decay: bool,
) -> None:
    r"""One Adadelta step, in place on ``param``, ``square_avg`` and ``acc_delta``.

    .. math::

        g &\leftarrow \pm g + \lambda\theta \\
        v &\leftarrow \rho v + (1-\rho)\, g^2 \\
        \Delta &\leftarrow \frac{\sqrt{u + \epsilon}}{\sqrt{v + \epsilon}}\, g \\
        u &\leftarrow \rho u + (1-\rho)\, \Delta^2 \\
        \theta &\leftarrow \theta - \gamma \Delta

    with learning rate :math:`\gamma` (1 in the paper, which has no learning rate),
    decay :math:`\rho`, weight decay :math:`\lambda` (flag ``decay``), running averages
    :math:`v` of :math:`g^2` (``square_avg``) and :math:`u` of :math:`\Delta^2`
    (``acc_delta``). As in torch, :math:`\epsilon` sits inside both square roots, and
    the ratio of the roots is formed before it multiplies :math:`g`.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param, grad, square_avg, acc_delta: arrays of one shape and dtype (the parameter, its gradient
            and its state); ``param`` and the state arrays are updated in place; ``grad`` is only read.
        lr, rho, one_minus_rho, eps, weight_decay: per-step Python floats, the quantities named in the
            math above, computed by :class:`Adadelta` with torch's expressions so they round as torch's
            do.
        maximize, decay: keyword flags that select the formula; they are fixed when the kernel is built
            (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np
        >>> p, g = np.array([1.0, -2.0]), np.array([0.5, -0.25])
        >>> square_avg, acc_delta = np.zeros(2), np.zeros(2)
        >>> adadelta_update(np, p, g, square_avg, acc_delta, 1.0, 0.9, 0.1, 1e-6, 0.0, maximize=False, decay=False)
        >>> p.round(6), square_avg  # the first step: sqrt(eps / (0.1 g^2 + eps)) g
        (array([ 0.996838, -1.996838]), array([0.025  , 0.00625]))
    """
    g = -grad if maximize else grad
    if decay:
        g = g + weight_decay * param
    square_avg *= rho
    square_avg += one_minus_rho * g * g
    delta = xp.sqrt(acc_delta + eps) / xp.sqrt(square_avg + eps) * g
    acc_delta *= rho
    acc_delta += one_minus_rho * delta * delta
    param -= lr * delta


@dataclass(frozen=True)
class AdadeltaHyper(Hyper):
    """Adadelta's numbers for one step, as :func:`adadelta_update` takes them."""

    lr: float
    rho: float
    one_minus_rho: float
    eps: float
    weight_decay: float


class Adadelta(ElementwiseOptimizer[AdadeltaHyper]):
    r"""Adadelta; torch.optim.Adadelta.

    The rule is :func:`adadelta_update`.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
        lr: learning rate :math:`\gamma` that scales each update (float or 1-element
            array). Default: 1.0.
        rho: decay :math:`\rho` of both running averages, in [0, 1]. Default: 0.9.
        eps: :math:`\epsilon` inside the square roots. Default: 1e-6.
        weight_decay: L2 penalty :math:`\lambda`. Default: 0.
        foreach: accepted for torch compatibility and stored in the groups; arrayopt
            has one implementation per backend, so it changes nothing.
        capturable, differentiable: must be False (NotImplementedError otherwise).
        maximize: maximise the objective instead of minimising it. Default: False.

    State per parameter: ``step`` (a Python float), ``square_avg`` and ``acc_delta``
    (zeros at creation).

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.Adadelta([w])
        >>> w.grad = 2 * w.data           # gradient of |w|^2
        >>> opt.step()                    # a first step is about sqrt(eps / (1 - rho))
        >>> np.round(w.data, 5)
        array([ 0.99684, -1.99684])

    Reference:
        Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012.
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
        "square_avg": StateKey(),
        "acc_delta": StateKey(),
    }

    def __init__(
        self,
        params: Any,
        lr: Any = 1.0,
        rho: Any = 0.9,
        eps: Any = 1e-6,
        weight_decay: Any = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        v.check_lr(lr)
        v.require(0.0 <= v.number(rho, "rho") <= 1.0, f"Invalid rho value: {rho}")
        v.check_nonnegative(eps, "eps", f"Invalid epsilon value: {eps}")
        v.check_nonnegative(weight_decay, "weight_decay", f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr,
            "rho": rho,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "capturable": capturable,
            "foreach": foreach,
            "differentiable": differentiable,
        }
        # Before the params are looked at, so a refused flag leaves the caller's
        # param-group dicts untouched (torch only fails at the first step).
        v.check_flag_conflicts(None, foreach, differentiable, capturable)
        super().__init__(params, defaults)

    def _hyper(self, group: dict[str, Any]) -> AdadeltaHyper:
        rho = v.to_float(group["rho"])
        weight_decay = v.to_float(group["weight_decay"])
        return AdadeltaHyper(
            flags={"maximize": bool(group["maximize"]), "decay": weight_decay != 0},
            lr=v.to_float(group["lr"]),
            rho=rho,
            one_minus_rho=1 - rho,
            eps=v.to_float(group["eps"]),
            weight_decay=weight_decay,
        )

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        xp = get_backend(p.data).xp
        return {"step": 0.0, "square_avg": xp.zeros_like(p.data), "acc_delta": xp.zeros_like(p.data)}

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        if "step" not in state:  # a loaded state without it: fail now, before any update
            raise KeyError("step")
        return (p.data, p.grad, state["square_avg"], state["acc_delta"])

    def _update(self, backend: Backend, hyper: AdadeltaHyper, state: Any, operands: tuple[Any, ...]) -> None:
        state["step"] += 1
        kernel = backend.kernel(adadelta_update, **hyper.flags)
        kernel(*operands, hyper.lr, hyper.rho, hyper.one_minus_rho, hyper.eps, hyper.weight_decay)

"""Resilient backpropagation, Rprop (Riedmiller and Braun, 1993)."""

from dataclasses import dataclass
from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend
from arrayopt.optimizer import ElementwiseOptimizer, Hyper
from arrayopt.parameter import Parameter

__all__ = ["Rprop", "rprop_update"]


def rprop_update(
    xp: Any,
    param: Any,
    grad: Any,
    prev: Any,
    step_size: Any,
    etaminus: float,
    etaplus: float,
    step_size_min: float,
    step_size_max: float,
    *,
    maximize: bool,
) -> None:
    r"""One Rprop step, in place on ``param``, ``prev`` and ``step_size``.

    .. math::

        g &\leftarrow \pm g, \qquad s = g\, g_{prev} \\
        \eta &\leftarrow \operatorname{clamp}\Big(\eta \cdot
            \begin{cases} \eta_+ & s > 0 \\ \eta_- & s < 0 \\ 1 & \text{otherwise}\end{cases},
            \ \Gamma_{min},\ \Gamma_{max}\Big) \\
        g &\leftarrow 0 \quad\text{where } s < 0 \\
        \theta &\leftarrow \theta - \eta\,\operatorname{sign}(g), \qquad g_{prev} \leftarrow g

    per entry, with step sizes :math:`\eta` (``step_size``), factors
    :math:`(\eta_-, \eta_+)` and bounds :math:`(\Gamma_{min}, \Gamma_{max})`. Where the
    gradient changed sign, the step size shrinks and that entry neither moves nor
    remembers its gradient (``prev`` becomes 0), so the next step there counts as
    "no sign information". As in torch, a NaN product counts as "otherwise" and a NaN
    gradient does not move its entry (torch's sign of NaN is 0). Complex arrays are
    pairs of reals (torch's ``view_as_real``): each part has its own step size.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param, grad, prev, step_size: arrays of one shape and dtype (the parameter, its gradient and its
            state); ``param`` and the state arrays are updated in place; ``grad`` is only read.
        etaminus, etaplus, step_size_min, step_size_max: per-step Python floats, the quantities named in
            the math above, computed by :class:`Rprop` with torch's expressions so they round as torch's
            do.
        maximize: keyword flags that select the formula; they are fixed when the kernel is built
            (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np
        >>> p, g = np.array([1.0, 1.0]), np.array([0.5, -0.5])
        >>> prev, step_size = np.array([1.0, 1.0]), np.array([0.01, 0.01])
        >>> rprop_update(np, p, g, prev, step_size, 0.5, 1.2, 1e-6, 50.0, maximize=False)
        >>> p, step_size, prev  # same sign: grow the step and move; sign flip: shrink, stay, forget
        (array([0.988, 1.   ]), array([0.012, 0.005]), array([0.5, 0. ]))
    """
    g = -grad if maximize else grad
    product = g * prev
    grown = xp.where(product > 0, step_size * etaplus, xp.where(product < 0, step_size * etaminus, step_size))
    step_size[...] = xp.minimum(xp.maximum(grown, step_size_min), step_size_max)
    flipped = product < 0
    moved = xp.where(g > 0, param - step_size, xp.where(g < 0, param + step_size, param))
    # The gradient to remember, taken before the parameter moves (torch clones it first;
    # it matters when the gradient is the parameter's own array). Where the sign flipped,
    # g is non-zero and not NaN, so sign(g) - sign(g) is +0 (no literal constant:
    # cupy.fuse would type it as float64).
    kept = xp.where(flipped, xp.sign(g) - xp.sign(g), g)
    param[...] = xp.where(flipped, param, moved)
    prev[...] = kept


@dataclass(frozen=True)
class RpropHyper(Hyper):
    """Rprop's numbers for one step, as :func:`rprop_update` takes them."""

    etaminus: float
    etaplus: float
    step_size_min: float
    step_size_max: float


class Rprop(ElementwiseOptimizer[RpropHyper]):
    r"""Resilient backpropagation; torch.optim.Rprop.

    The rule is :func:`rprop_update`.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
        lr: the initial step size of every entry (float or 1-element array). It is
            read once, when a parameter's state is created; changing the group's lr
            later (e.g. with a scheduler) has no effect, as in torch. Default: 1e-2.
        etas: :math:`(\eta_-, \eta_+)`, with :math:`0 < \eta_- < 1 < \eta_+`, the
            factors that shrink and grow the step sizes. Default: (0.5, 1.2).
        step_sizes: :math:`(\Gamma_{min}, \Gamma_{max})`, the bounds of the step
            sizes (not checked against each other, as in torch). Default: (1e-6, 50).
        capturable, differentiable: must be False (NotImplementedError otherwise).
        foreach: accepted for torch compatibility and stored in the groups; arrayopt
            has one implementation per backend, so it changes nothing.
        maximize: maximise the objective instead of minimising it. Default: False.

    State per parameter: ``step`` (a Python float), ``prev`` (the last gradient
    used, zeros at creation) and ``step_size`` (lr everywhere at creation; for complex
    parameters lr + lr·j, so both parts start at lr).

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.Rprop([w], lr=0.1)
        >>> for _ in range(2):
        ...     w.grad = 2 * w.data       # gradient of |w|^2
        ...     opt.step()                # steps of 0.1, then 0.1 * 1.2
        >>> np.round(w.data, 6)
        array([ 0.78, -1.78])

    Reference:
        Riedmiller and Braun, "A Direct Adaptive Method for Faster Backpropagation
        Learning: The RPROP Algorithm", IEEE ICNN 1993.
    """

    _defaults_on_load: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }
    # torch accepts an infinite etaplus or step-size bound (no growth limit, no clamp).
    _infinite_ok: ClassVar[frozenset[str]] = frozenset({"etas", "step_sizes"})
    _flat_runs = True  # elementwise state and rule: flat Parameters update in one call per run
    _bundled = True  # _update only runs kernels: separate Parameters update in one call
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": StateKey("step"),
        "prev": StateKey(),
        "step_size": StateKey(),
    }

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-2,
        etas: Any = (0.5, 1.2),
        step_sizes: Any = (1e-6, 50),
        *,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        v.check_lr(lr)
        v.check_pair(etas, "etas", "etaminus, etaplus")
        etaminus, etaplus = v.number(etas[0], "etas[0]"), v.number(etas[1], "etas[1]")
        v.require(0.0 < etaminus < 1.0 < etaplus, f"Invalid eta values: {etas[0]}, {etas[1]}")
        v.check_pair(step_sizes, "step_sizes", "min, max")
        v.number(step_sizes[0], "step_sizes[0]")
        v.number(step_sizes[1], "step_sizes[1]")
        defaults = {
            "lr": lr,
            "etas": etas,
            "step_sizes": step_sizes,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        # Before the params are looked at, so a refused flag leaves the caller's
        # param-group dicts untouched (torch only fails at the first step).
        v.check_flag_conflicts(None, foreach, differentiable, capturable)
        super().__init__(params, defaults)

    def _hyper(self, group: dict[str, Any]) -> RpropHyper:
        etaminus, etaplus = (v.to_float(eta) for eta in group["etas"])
        step_size_min, step_size_max = (v.to_float(bound) for bound in group["step_sizes"])
        return RpropHyper(
            flags={"maximize": bool(group["maximize"])},
            etaminus=etaminus,
            etaplus=etaplus,
            step_size_min=step_size_min,
            step_size_max=step_size_max,
        )

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        backend = get_backend(p.data)
        lr = v.to_float(group["lr"])
        # Complex entries are two independent reals: both parts start at lr.
        fill = complex(lr, lr) if backend.is_complex(p.data) else lr
        return {"step": 0.0, "prev": backend.xp.zeros_like(p.data), "step_size": backend.xp.full_like(p.data, fill)}

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        if "step" not in state:  # a loaded state without it: fail now, before any update
            raise KeyError("step")
        return (p.data, p.grad, state["prev"], state["step_size"])

    def _update(self, backend: Backend, hyper: RpropHyper, state: Any, operands: tuple[Any, ...]) -> None:
        state["step"] += 1
        kernel = backend.kernel(rprop_update, **hyper.flags)
        kernel(*operands, hyper.etaminus, hyper.etaplus, hyper.step_size_min, hyper.step_size_max)

"""Adagrad (Duchi, Hazan and Singer, 2011), for dense and sparse gradients."""

from dataclasses import dataclass
from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend
from arrayopt.optimizer import ElementwiseOptimizer, Hyper
from arrayopt.parameter import Parameter
from arrayopt.sparse import update_entries

__all__ = ["Adagrad", "adagrad_update"]


def adagrad_update(
    xp: Any,
    param: Any,
    grad: Any,
    state_sum: Any,
    weight_decay: float,
    clr: float,
    eps: float,
    *,
    maximize: bool,
    decay: bool,
    divide_first: bool,
) -> None:
    r"""One Adagrad step, in place on ``param`` and the running sum of squares ``state_sum``.

    .. math::

        g &\leftarrow \pm g + \lambda\theta \qquad \text{(}\lambda\text{ with flag decay)} \\
        s &\leftarrow s + g^2 \\
        \theta &\leftarrow \theta - \tilde\gamma\, \frac{g}{\sqrt{s} + \epsilon}

    The host computes the decayed learning rate ``clr``
    :math:`\tilde\gamma = \gamma / (1 + (t - 1)\,\eta)` (lr decay :math:`\eta`, step
    :math:`t` counted from 1). As in torch, :math:`\epsilon` is added after the square
    root. Dense gradients round the last line as :math:`(\tilde\gamma g)/(\sqrt s+\epsilon)`
    (torch's ``addcdiv``); sparse ones, updated on their touched entries only, as
    :math:`\tilde\gamma\,(g/(\sqrt s+\epsilon))` (flag ``divide_first``, torch's sparse path).

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param, grad, state_sum: arrays of one shape and dtype (the parameter, its gradient and its
            state); ``param`` and the state arrays are updated in place; ``grad`` is only read.
        weight_decay, clr, eps: per-step Python floats, the quantities named in the math above, computed
            by :class:`Adagrad` with torch's expressions so they round as torch's do.
        maximize, decay, divide_first: keyword flags that select the formula; they are fixed when the
            kernel is built (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np
        >>> p, g, state_sum = np.array([1.0, -2.0]), np.array([3.0, 4.0]), np.zeros(2)
        >>> adagrad_update(np, p, g, state_sum, 0.0, 0.1, 1e-10, maximize=False, decay=False, divide_first=False)
        >>> p.round(6), state_sum  # each entry moves by lr * |g| / sqrt(g^2) = lr
        (array([ 0.9, -2.1]), array([ 9., 16.]))
    """
    g = -grad if maximize else grad
    if decay:
        g = g + weight_decay * param
    state_sum += g * g
    std = xp.sqrt(state_sum) + eps
    if divide_first:
        param -= clr * (g / std)
    else:
        param -= clr * g / std


@dataclass(frozen=True)
class AdagradHyper(Hyper):
    """Adagrad's hyper-parameters for one step (the rule's flags ``decay`` and ``divide_first`` are set per path)."""

    lr: float
    lr_decay: float
    weight_decay: float
    eps: float


class Adagrad(ElementwiseOptimizer[AdagradHyper]):
    r"""Adagrad; torch.optim.Adagrad, with its sparse-gradient path.

    The rule is :func:`adagrad_update`.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
        lr: learning rate :math:`\gamma` (float or 1-element array). Default: 1e-2.
        lr_decay: :math:`\eta`; step :math:`t` uses :math:`\gamma/(1+(t-1)\eta)`. Default: 0.
        weight_decay: L2 penalty :math:`\lambda` (not with sparse gradients). Default: 0.
        initial_accumulator_value: starting value of the sum of squares
            (:math:`v + vi` for a complex parameter). Default: 0.
        eps: :math:`\epsilon` added to the denominator. Default: 1e-10.
        foreach, fused: accepted for torch compatibility and stored in the groups;
            arrayopt has one implementation per backend, so they change nothing, except
            that ``fused=True`` refuses sparse gradients and complex parameters at
            ``step`` as torch does.
        maximize: maximise the objective. Default: False.
        differentiable: must be False (NotImplementedError otherwise).

    State per parameter: ``step`` (a Python float) and ``sum``. As in torch, the state
    of every parameter given to the constructor is created there, from the
    constructor's ``initial_accumulator_value`` (a per-group value is ignored);
    parameters added later with :meth:`add_param_group` get theirs at their first
    step, from ``self.defaults["initial_accumulator_value"]``.

    Sparse gradients (:class:`~arrayopt.SparseGrad`) are coalesced, and only the
    entries they name change, in ``sum`` and in the parameter. With ``weight_decay``
    they raise torch's RuntimeError. On a complex parameter the sparse path computes
    in complex arithmetic (a complex square and square root), as torch does, whereas
    the dense path treats real and imaginary parts as independent reals.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.Adagrad([w], lr=0.5)
        >>> w.grad = 2 * w.data           # gradient of |w|^2
        >>> opt.step()                    # the first step moves each entry by about lr
        >>> np.round(w.data, 6)
        array([ 0.5, -1.5])

    Reference:
        Duchi, Hazan and Singer, "Adaptive Subgradient Methods for Online Learning and
        Stochastic Optimization", JMLR 12, 2011.
    """

    _defaults_on_load: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "fused": None,
    }
    _flat_runs = True  # elementwise state and rule: flat Parameters update in one call per run
    _bundled = True  # _update only runs kernels: separate Parameters update in one call
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": StateKey("step"),
        "sum": StateKey(),
    }

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-2,
        lr_decay: Any = 0,
        weight_decay: Any = 0,
        initial_accumulator_value: Any = 0,
        eps: Any = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        v.check_lr(lr)
        v.check_nonnegative(lr_decay, "lr_decay", f"Invalid lr_decay value: {lr_decay}")
        v.check_nonnegative(weight_decay, "weight_decay", f"Invalid weight_decay value: {weight_decay}")
        v.check_nonnegative(
            initial_accumulator_value,
            "initial_accumulator_value",
            f"Invalid initial_accumulator_value value: {initial_accumulator_value}",
        )
        v.check_nonnegative(eps, "eps", f"Invalid epsilon value: {eps}")
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        # Before the params are looked at, so a refused flag leaves the caller's
        # param-group dicts untouched (torch checks these after).
        v.check_flag_conflicts(fused, foreach, differentiable)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = self._fresh_state(p, initial_accumulator_value)
        self._flat.hold(self)  # flat Parameters' sums are held by their buffer, so they update in one call

    def share_memory(self) -> None:
        """torch moves each ``sum`` to shared memory; array libraries have no such move."""
        raise NotImplementedError(
            "share_memory() is not supported: NumPy and CuPy arrays cannot be moved into "
            "shared memory in place; allocate the parameters in shared memory instead"
        )

    @staticmethod
    def _fresh_state(p: Parameter, initial_accumulator_value: Any) -> dict[str, Any]:
        backend = get_backend(p.data)
        xp = backend.xp
        value = v.to_float(initial_accumulator_value)
        fill = complex(value, value) if backend.is_complex(p.data) else value
        return {"step": 0.0, "sum": xp.full_like(p.data, fill)}

    def _hyper(self, group: dict[str, Any]) -> AdagradHyper:
        return AdagradHyper(
            flags={"maximize": bool(group["maximize"])},
            lr=v.scalar_like(group["lr"]),  # a float32 lr: the decayed rate is a float32 number, as torch's
            lr_decay=v.to_float(group["lr_decay"]),
            weight_decay=v.to_float(group["weight_decay"]),
            eps=v.to_float(group["eps"]),
        )

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        # A parameter added after construction: torch reads the optimizer's defaults,
        # not the group's own initial_accumulator_value.
        return self._fresh_state(p, self.defaults["initial_accumulator_value"])

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        if group["fused"] and get_backend(p.data).is_complex(p.data):
            raise RuntimeError("`fused` does not support sparse grad or complex param")
        if "step" not in state:  # a loaded state without it: fail now, before any update
            raise KeyError("step")
        return (p.data, p.grad, state["sum"])

    def _sparse_operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        if group["fused"]:
            raise RuntimeError("`fused` does not support sparse grad or complex param")
        if v.to_float(group["weight_decay"]) != 0:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        if "step" not in state:
            raise KeyError("step")
        return (p.data, p.grad.coalesce(), state["sum"])

    def _clr(self, hyper: AdagradHyper, state: Any) -> float:
        state["step"] += 1
        # torch's expression on Python floats, so the decayed rate rounds identically
        return float(hyper.lr / (1 + (state["step"] - 1) * hyper.lr_decay))

    def _update(self, backend: Backend, hyper: AdagradHyper, state: Any, operands: tuple[Any, ...]) -> None:
        clr = self._clr(hyper, state)
        weight_decay = hyper.weight_decay
        kernel = backend.kernel(adagrad_update, decay=weight_decay != 0, divide_first=False, **hyper.flags)
        kernel(*operands, weight_decay, clr, hyper.eps)

    def _sparse_update(self, backend: Backend, hyper: AdagradHyper, state: Any, operands: tuple[Any, ...]) -> None:
        clr = self._clr(hyper, state)
        if operands[1].nnz == 0:
            return
        flags = {"decay": False, "divide_first": True, **hyper.flags}
        if backend.is_complex(operands[0]):
            run = backend.eager(adagrad_update, **flags)
        else:
            run = backend.kernel(adagrad_update, **flags)
        update_entries(backend, run, operands, 0.0, clr, hyper.eps)

"""Stochastic gradient descent with momentum (Polyak 1964; Nesterov 1983; Sutskever et al. 2013)."""

from dataclasses import dataclass
from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend
from arrayopt.optimizer import ElementwiseOptimizer, Hyper
from arrayopt.parameter import Parameter
from arrayopt.sparse import SparseGrad, union, update_entries

__all__ = ["SGD", "sgd_update"]

# torch's error where its sparse-gradient path would add a sparse tensor and a dense one
_SPARSE_PLUS_DENSE = "add(sparse, dense) is not supported. Use add(dense, sparse) instead."


def sgd_update(
    xp: Any,
    param: Any,
    grad: Any,
    momentum_buffer: Any,
    lr: float,
    weight_decay: float,
    momentum: float,
    one_minus_dampening: float,
    *,
    maximize: bool,
    decay: bool,
    use_momentum: bool,
    first_step: bool,
    nesterov: bool,
) -> None:
    r"""One SGD step, in place on ``param`` and ``momentum_buffer``.

    .. math::

        g &\leftarrow \pm g + \lambda\theta \\
        b &\leftarrow \begin{cases} g & \text{first step} \\
                                     \mu b + (1-\tau) g & \text{otherwise}\end{cases} \\
        g &\leftarrow \begin{cases} g + \mu b & \text{nesterov} \\ b & \text{otherwise}\end{cases} \\
        \theta &\leftarrow \theta - \gamma g

    with learning rate :math:`\gamma`, weight decay :math:`\lambda` (flag ``decay``),
    momentum :math:`\mu` and dampening :math:`\tau` (flag ``use_momentum``). As in
    torch, the first momentum step copies the gradient without dampening.
    ``momentum_buffer`` is unused (any placeholder) without momentum.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param, grad, momentum_buffer: arrays of one shape and dtype (the parameter, its gradient and its
            state); ``param`` and the state arrays are updated in place; ``grad`` is only read.
        lr, weight_decay, momentum, one_minus_dampening: per-step Python floats, the quantities named in
            the math above, computed by :class:`SGD` with torch's expressions so they round as torch's
            do.
        maximize, decay, use_momentum, first_step, nesterov: keyword flags that select the formula; they
            are fixed when the kernel is built (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np
        >>> p, g, buf = np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.zeros(2)
        >>> flags = dict(maximize=False, decay=False, use_momentum=True, first_step=True, nesterov=False)
        >>> sgd_update(np, p, g, buf, 0.1, 0.0, 0.9, 1.0, **flags)
        >>> p, buf
        (array([ 0.95, -2.05]), array([0.5, 0.5]))
    """
    g = -grad if maximize else grad
    if decay:
        g = g + weight_decay * param
    if use_momentum:
        if first_step:
            momentum_buffer[...] = g
        else:
            momentum_buffer *= momentum
            momentum_buffer += one_minus_dampening * g
        g = g + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= lr * g


@dataclass(frozen=True)
class SGDHyper(Hyper):
    """SGD's numbers for one step, as :func:`sgd_update` takes them."""

    lr: float
    weight_decay: float
    momentum: float
    one_minus_dampening: float

    def numbers(self) -> tuple[float, float, float, float]:
        """The rule's number arguments, in its order."""
        return (self.lr, self.weight_decay, self.momentum, self.one_minus_dampening)


class SGD(ElementwiseOptimizer[SGDHyper]):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum; torch.optim.SGD.

    The rule is :func:`sgd_update`.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
        lr: learning rate :math:`\gamma` (float or 1-element array). Default: 1e-3.
        momentum: momentum factor :math:`\mu`. Default: 0.
        dampening: dampening :math:`\tau` for momentum. Default: 0.
        weight_decay: L2 penalty :math:`\lambda`. Default: 0.
        nesterov: use Nesterov momentum (needs momentum > 0 and dampening 0). Default: False.
        maximize: maximise the objective instead of minimising it. Default: False.
        foreach, fused: accepted for torch compatibility and stored in the groups;
            arrayopt has one implementation per backend, so they change nothing.
        differentiable: must be False (NotImplementedError otherwise).

    State (only when momentum is non-zero): ``momentum_buffer``, created at the first
    step that has a gradient.

    Sparse gradients (:class:`~arrayopt.SparseGrad`) are accepted where torch accepts
    them: without weight decay. Without momentum only the named entries change. With
    momentum the buffer is sparse too (a coalesced SparseGrad holding every position
    any gradient named so far), and the rule runs on those positions; a buffer made
    dense by earlier dense gradients stays dense (torch's ``dense.add_(sparse)``).
    Combinations torch cannot add raise its RuntimeError ``"add(sparse, dense) is not
    supported. Use add(dense, sparse) instead."``: weight decay with a sparse gradient,
    a dense gradient after a sparse buffer, and Nesterov with a sparse gradient after a
    dense buffer.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.SGD([w], lr=0.1, momentum=0.9)
        >>> w.grad = 2 * w.data          # gradient of |w|^2
        >>> opt.step()
        >>> w.data
        array([ 0.8, -1.6])

    Reference:
        Sutskever, Martens, Dahl and Hinton, "On the importance of initialization and
        momentum in deep learning", ICML 2013.
    """

    _flat_runs = True  # elementwise state and rule: flat Parameters update in one call per run
    _bundled = True  # _update only runs kernels: separate Parameters update in one call

    _defaults_on_load: ClassVar[dict[str, Any]] = {
        "nesterov": False,
        "maximize": False,
        "foreach": None,
        "differentiable": False,
        "fused": False,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "momentum_buffer": StateKey(required=False, none_ok=True),
    }

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-3,
        momentum: Any = 0,
        dampening: Any = 0,
        weight_decay: Any = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        v.check_lr(lr)
        v.check_nonnegative(momentum, "momentum", f"Invalid momentum value: {momentum}")
        v.check_nonnegative(weight_decay, "weight_decay", f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):  # torch's check, first (even for dampening=None)
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        v.check_finite(dampening, "dampening", f"Invalid dampening value: {dampening}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        # Before the params are looked at, so a refused flag leaves the caller's
        # param-group dicts untouched (torch checks these after).
        v.check_flag_conflicts(fused, foreach, differentiable)
        super().__init__(params, defaults)

    def _hyper(self, group: dict[str, Any]) -> SGDHyper:
        v.check_fused(group, sparse_error="`_fused_sgd` does not support sparse gradients")
        momentum = v.to_float(group["momentum"])
        weight_decay = v.to_float(group["weight_decay"])
        flags = {
            "maximize": bool(group["maximize"]),
            "decay": weight_decay != 0,
            "use_momentum": momentum != 0,
            "nesterov": bool(group["nesterov"]),
        }
        return SGDHyper(
            flags=flags,
            lr=v.to_float(group["lr"]),
            weight_decay=weight_decay,
            momentum=momentum,
            one_minus_dampening=1 - v.to_float(group["dampening"]),
        )

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any] | None:
        # torch keeps no state at all without momentum; with it, the buffer is made by
        # the first step (a copy of the gradient).
        return {"momentum_buffer": None} if v.to_float(group["momentum"]) != 0 else None

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        if v.to_float(group["momentum"]) == 0:
            return (p.data, p.grad, 0.0)
        buffer = state.get("momentum_buffer")  # as torch: a state without one starts afresh
        if isinstance(buffer, SparseGrad):  # torch: sparse_buffer.add_(dense_grad)
            raise RuntimeError(_SPARSE_PLUS_DENSE)
        if buffer is None:
            buffer = get_backend(p.data).xp.empty_like(p.data)
        return (p.data, p.grad, buffer)

    def _update(self, backend: Backend, hyper: SGDHyper, state: Any, operands: tuple[Any, ...]) -> None:
        first_step = hyper.flags["use_momentum"] and state.get("momentum_buffer") is None
        if first_step:
            state["momentum_buffer"] = operands[2]
        kernel = backend.kernel(sgd_update, first_step=first_step, **hyper.flags)
        kernel(*operands, *hyper.numbers())

    def _sparse_operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        if v.to_float(group["weight_decay"]) != 0:  # torch: sparse_grad.add(param, alpha=weight_decay)
            raise RuntimeError(_SPARSE_PLUS_DENSE)
        grad = p.grad.coalesce()
        if v.to_float(group["momentum"]) == 0:
            return (p.data, grad, 0.0)
        buffer = state.get("momentum_buffer")
        if isinstance(buffer, SparseGrad) and buffer.sparse_dim != grad.sparse_dim:
            buffer, grad = _one_layout(buffer, grad)
        if buffer is None or isinstance(buffer, SparseGrad):
            return (p.data, grad, buffer)
        if group["nesterov"]:  # torch: sparse_grad.add(dense_buffer, alpha=momentum)
            raise RuntimeError(_SPARSE_PLUS_DENSE)
        # A dense buffer takes the sparse gradient as the dense array it stands for.
        return (p.data, grad.to_dense(), buffer)

    def _sparse_update(self, backend: Backend, hyper: SGDHyper, state: Any, operands: tuple[Any, ...]) -> None:
        param, grad, buffer = operands
        flags = hyper.flags
        if not isinstance(grad, SparseGrad):  # densified for a dense buffer
            self._update(backend, hyper, state, operands)
            return
        if not flags["use_momentum"]:
            kernel = backend.kernel(sgd_update, first_step=False, **flags)
            update_entries(backend, kernel, operands, *hyper.numbers())
            return
        # The rule runs on the positions named by the gradient or the sparse buffer,
        # each given as compact values there; the buffer stays a coalesced SparseGrad.
        if buffer is None:
            indices, grad_values = grad.indices, grad.values
            buffer_values = backend.xp.empty_like(grad_values)
        else:
            indices, buffer_values, grad_values = union(buffer, grad)
        kernel = backend.kernel(sgd_update, first_step=buffer is None, **flags)
        rows = backend.take_entries(param, indices)
        kernel(rows, grad_values, buffer_values, *hyper.numbers())
        backend.put_entries(param, indices, rows)
        state["momentum_buffer"] = SparseGrad._trusted(indices, buffer_values, grad.shape, coalesced=True)


def _one_layout(buffer: SparseGrad, grad: SparseGrad) -> tuple[SparseGrad, SparseGrad]:
    """torch's ``sparse_buffer.add_(sparse_grad)`` across sparse dims: an empty one adds
    nothing, so it takes the other's layout; otherwise torch's RuntimeError."""
    if grad.nnz == 0:
        return buffer, _empty_like(buffer)
    if buffer.nnz == 0:
        return _empty_like(grad), grad
    raise RuntimeError(
        "add: expected 'self' and 'other' to have same density, but 'self' has "
        f"{buffer.sparse_dim} sparse dimensions while 'other' has {grad.sparse_dim} sparse dimensions"
    )


def _empty_like(sparse: SparseGrad) -> SparseGrad:
    """A SparseGrad with no entries, laid out as ``sparse`` (same sparse and dense dims)."""
    return SparseGrad._trusted(sparse.indices[:, :0], sparse.values[:0], sparse.shape, coalesced=True)

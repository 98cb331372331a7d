r"""Functional optimizers: ``torch.optim.functional`` (torch 2.15) for lists of arrays.

Each function takes the parameters, their gradients and the optimizer state as lists
of arrays owned by the caller, and updates the parameters and the state in place, as
torch's functional optimizers do. Nothing is kept between calls: a GPU pipeline that
keeps its own state (its own buffers, its own checkpoints) calls one function per
step. The names and arguments are torch's: ``adam(params, grads, exp_avgs,
exp_avg_sqs, max_exp_avg_sqs, state_steps, ..., *, amsgrad, beta1, beta2, lr,
weight_decay, eps, maximize)`` and so on.

The contract, as torch states it for its functional API:

* every list has one entry per parameter, in the same order; a state list an option
  leaves unused (``max_exp_avg_sqs`` without ``amsgrad``, ``grad_avgs`` without
  ``centered``, ``momentum_buffer_list`` without momentum) may be empty;
* ``state_steps`` holds each parameter's step count. The function increments it
  before the update, as the optimizer classes do, and writes the new count back: an
  array entry (0-d or 1-element, like torch's step tensors) in place, a Python
  number by replacing the list entry (so the list must be a ``list``). Counts kept as
  Python numbers never make a GPU pipeline wait; an array count is read once per
  step. :func:`sparse_adam` is torch's exception: its counts are read, not
  incremented, so the caller increments them before the call;
* state the function creates (SGD's momentum buffer on its first step, where the
  list holds None) is put into the list;
* NAdam's ``mu_products`` and ASGD's ``etas`` and ``mus`` are 0-d arrays (float32,
  as torch keeps them), written in place;
* ``foreach``, ``fused`` and ``has_complex`` are accepted and change nothing;
  ``capturable=True`` and ``differentiable=True`` raise NotImplementedError, as the
  classes do, and so do ``grad_scale`` and ``found_inf`` (torch's AMP unscaling:
  unscale the gradients before the call).

Every function **calls the optimizer's rule** through the optimizer class's own
per-parameter step (its hyper-parameter checks, its per-step scalars, its kernel):
``adam`` runs exactly what :class:`arrayopt.Adam`'s ``step`` runs for one parameter,
so its numbers are the class's bit for bit, on every backend (tests/test_functional.py).
No update rule is written here. The math of each rule is in the docstring of its
``*_update`` function, at the top of ``arrayopt/optimizers/<name>.py``.

Everything (the arguments, every list entry and its shape and dtype) is checked before
the first parameter changes, so an error leaves every array as it was.

Example:
    >>> import numpy as np
    >>> from arrayopt import functional as F
    >>> w, g = np.array([1.0, -2.0]), np.array([0.5, -0.25])
    >>> exp_avgs, exp_avg_sqs, steps = [np.zeros(2)], [np.zeros(2)], [0]
    >>> for _ in range(2):
    ...     F.adam([w], [g], exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, beta1=0.9,
    ...            beta2=0.999, lr=0.1, weight_decay=0.0, eps=1e-8, maximize=False)
    >>> w.round(4), steps
    (array([ 0.8, -1.8]), [2])

Reference:
    torch.optim.functional (torch 2.15), whose functions are those of torch 2.14's
    ``torch.optim.<name>.<name>`` (``adam``, ``sgd``, ...) and
    ``torch.optim._functional.sparse_adam``, with the same arguments.
"""

import math
from collections.abc import Sequence
from typing import Any

from arrayopt import optimizers as _optimizers
from arrayopt._state_check import step_to_float
from arrayopt.backends import get_backend, is_array
from arrayopt.optimizer import ElementwiseOptimizer
from arrayopt.parameter import Parameter
from arrayopt.sparse import SparseGrad

__all__ = [
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "asgd",
    "muon",
    "nadam",
    "radam",
    "rmsprop",
    "rprop",
    "sgd",
    "sparse_adam",
]


class _State:
    """One state list: the optimizer's state key, the argument's name, the list, whether it is needed."""

    __slots__ = ("arg", "key", "needed", "values")

    def __init__(self, key: str, arg: str, values: Any, needed: bool = True) -> None:
        self.key, self.arg, self.values, self.needed = key, arg, values, needed


def _apply(
    name: str,
    cls: type[ElementwiseOptimizer[Any]],
    kwargs: dict[str, Any],
    params: Sequence[Any],
    grads: Sequence[Any],
    states: list[_State],
    state_steps: Any = None,
    *,
    grads_arg: str = "grads",
    counted_by_caller: bool = False,
) -> None:
    """Check everything, then run ``cls``'s own per-parameter update for each parameter."""
    params, grads = _sequence(name, "params", params), _sequence(name, grads_arg, grads)
    n = len(params)
    if len(grads) != n:
        raise ValueError(f"{name}: {grads_arg} has {len(grads)} entries for {n} params")
    used = []
    for s in states:
        if not isinstance(s.values, list):
            raise TypeError(f"{name}: {s.arg} must be a list (its entries are updated), got {type(s.values).__name__}")
        if len(s.values) == n:
            if s.needed or any(v is not None for v in s.values):
                used.append(s)
        elif s.needed or len(s.values) != 0:
            wanted = f"{n} entries, one per parameter" if s.needed else f"0 or {n} entries"
            raise ValueError(f"{name}: {s.arg} has {len(s.values)} entries; it needs {wanted}")
    if state_steps is not None:
        if not isinstance(state_steps, list):
            raise TypeError(
                f"{name}: state_steps must be a list (its entries are updated), got {type(state_steps).__name__}"
            )
        if len(state_steps) != n:
            raise ValueError(f"{name}: state_steps has {len(state_steps)} entries for {n} params")
    stand_ins = []
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        try:
            stand_in = Parameter(p, name=f"params[{i}]")
        except TypeError as exc:
            raise TypeError(f"{name}: {exc}") from None
        if g is None:
            raise TypeError(
                f"{name}: {grads_arg}[{i}] is None; pass only the parameters that have a gradient (as torch's "
                "optimizers do)"
            )
        try:
            stand_in.grad = g
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}: {exc}") from None
        stand_ins.append(stand_in)
    if n == 0:
        return
    # The class checks the hyper-parameters (its constructor's checks) on an empty group;
    # the group then lists the stand-ins, as a step of the class would see them.
    optimizer = cls([{"params": []}], **kwargs)
    group = dict(optimizer.param_groups[0], params=stand_ins)
    hyper = optimizer._hyper(group)
    prepared = []
    for i, stand_in in enumerate(stand_ins):
        state: dict[str, Any] = {s.key: s.values[i] for s in used}
        if state_steps is not None:
            step = _read_step(name, state_steps[i], i)
            if counted_by_caller:
                if step < 1:
                    raise ValueError(
                        f"{name}: state_steps[{i}] is {state_steps[i]!r}; this function reads the counts without "
                        "incrementing them, so increment each before the call (the first update is step 1)"
                    )
                step -= 1  # the class's update increments it back
            state["step"] = step
        sparse = isinstance(stand_in.grad, SparseGrad)
        try:
            if sparse:
                operands = optimizer._sparse_operands(stand_in, group, state)
            else:
                operands = optimizer._operands(stand_in, group, state)
        except KeyError as exc:
            raise ValueError(f"{name}: no state {exc.args[0]!r} for params[{i}]: its list is empty") from None
        backend = get_backend(stand_in.data)
        try:
            backend.check_operands(operands)
        except ValueError as exc:
            raise ValueError(f"{name}: params[{i}]: {exc}") from None
        prepared.append((backend, state, operands, sparse, dict(state)))
    for i, (backend, state, operands, sparse, before) in enumerate(prepared):
        if sparse:
            optimizer._sparse_update(backend, hyper, state, operands)
        else:
            optimizer._update(backend, hyper, state, operands)
        for s in used:
            if state.get(s.key) is not before.get(s.key):
                s.values[i] = state[s.key]
        if state_steps is not None and not counted_by_caller:
            _write_step(state_steps, i, state["step"])


def _sequence(name: str, arg: str, values: Any) -> Sequence[Any]:
    if isinstance(values, Parameter) or is_array(values) or not isinstance(values, Sequence):
        raise TypeError(f"{name}: {arg} must be a list of arrays, got {type(values).__name__}")
    return values


def _read_step(name: str, value: Any, i: int) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name}: state_steps[{i}] must be a number or a 1-element array, got {value!r}")
    if is_array(value) and math.prod(value.shape) != 1:
        raise ValueError(
            f"{name}: state_steps[{i}] must be a number or a 1-element array, got an array of shape "
            f"{tuple(value.shape)}"
        )
    try:
        return step_to_float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: state_steps[{i}] is {value!r}, not a finite count >= 0") from None


def _write_step(state_steps: list[Any], i: int, step: float) -> None:
    old = state_steps[i]
    if is_array(old):
        old[...] = step
    elif isinstance(old, int):
        state_steps[i] = int(step)
    else:
        state_steps[i] = float(step)


def _no_amp(name: str, grad_scale: Any, found_inf: Any) -> None:
    if grad_scale is not None or found_inf is not None:
        raise NotImplementedError(
            f"{name}: grad_scale and found_inf (torch's AMP unscaling for fused kernels) are not supported; "
            "unscale the gradients before the call"
        )


def _betas(beta1: Any, beta2: Any) -> tuple[Any, Any]:
    """``(beta1, beta2)`` for the classes, which want both floats or both arrays (ints become floats)."""
    if is_array(beta1) or is_array(beta2):
        return (beta1, beta2)
    return (float(beta1), float(beta2))


# -- the functions, in torch.optim.functional's order ------------------------------------------


def adadelta(
    params: list[Any],
    grads: list[Any],
    square_avgs: list[Any],
    acc_deltas: list[Any],
    state_steps: list[Any],
    capturable: bool = False,
    foreach: bool | None = None,
    differentiable: bool = False,
    has_complex: bool = False,
    *,
    lr: Any,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    r"""Adadelta on lists of arrays: :class:`arrayopt.Adadelta`'s step, state held by the caller.

    The rule is :func:`arrayopt.optimizers.adadelta.adadelta_update` (its math is there).

    Args:
        params, grads: the parameters (updated in place) and their gradients.
        square_avgs, acc_deltas: the running averages :math:`v` and :math:`u`, one
            array per parameter (zeros at first), updated in place.
        state_steps: step counts, incremented (see the module docstring).
        capturable, differentiable: must be False. foreach, has_complex: ignored.
        lr, rho, eps, weight_decay, maximize: as for :class:`arrayopt.Adadelta`.

    Example:
        >>> import numpy as np
        >>> w, v, u, steps = np.array([1.0]), np.zeros(1), np.zeros(1), [0]
        >>> adadelta([w], [np.array([2.0])], [v], [u], steps, lr=1.0, rho=0.9, eps=1e-6,
        ...          weight_decay=0.0, maximize=False)
        >>> w.round(5), steps  # the first step moves by sqrt(eps / (v + eps)) * g
        (array([0.99684]), [1])
    """
    kwargs = {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay, "maximize": maximize}
    kwargs.update(foreach=foreach, capturable=capturable, differentiable=differentiable)
    states = [_State("square_avg", "square_avgs", square_avgs), _State("acc_delta", "acc_deltas", acc_deltas)]
    _apply("adadelta", _optimizers.Adadelta, kwargs, params, grads, states, state_steps)


def adafactor(
    params: list[Any],
    grads: list[Any],
    row_vars: list[Any],
    col_vars: list[Any],
    variances: list[Any],
    state_steps: list[Any],
    foreach: bool | None = None,
    grad_scale: Any = None,
    found_inf: Any = None,
    has_complex: bool = False,
    *,
    d: float,
    lr: Any,
    beta2_decay: float,
    weight_decay: float,
    eps1: float | None,
    eps2: float,
    maximize: bool,
) -> None:
    r"""Adafactor on lists of arrays: :class:`arrayopt.Adafactor`'s step, state held by the caller.

    The rules are :func:`arrayopt.optimizers.adafactor.adafactor_moment_update`,
    ``adafactor_direction`` and ``adafactor_param_update`` (the math is in the class).

    Args:
        params, grads: the parameters (updated in place) and their gradients.
        row_vars, col_vars: for a parameter of 2 or more dimensions, its factored second
            moments, of shapes ``(*shape[:-1], 1)`` and ``(*shape[:-2], 1, shape[-1])``
            (zeros at first); None for a vector.
        variances: for a vector (or 0-d) parameter, its second moment; None otherwise.
        state_steps: step counts, incremented (see the module docstring).
        grad_scale, found_inf: must be None. foreach, has_complex: ignored.
        d, lr, beta2_decay, weight_decay, maximize: as for :class:`arrayopt.Adafactor`.
        eps1, eps2: the class's ``eps`` pair (``eps1`` None: the dtype's machine epsilon).

    Example:
        >>> import numpy as np
        >>> w, steps = np.array([3.0, 4.0]), [0]
        >>> adafactor([w], [np.array([1.0, 1.0])], [None], [None], [np.zeros(2)], steps, d=1.0, lr=0.01,
        ...           beta2_decay=-0.8, weight_decay=0.0, eps1=None, eps2=1e-3, maximize=False)
        >>> w.round(6)  # the step is lr times the RMS of the parameter, 3.5355...
        array([2.964645, 3.964645])
    """
    _no_amp("adafactor", grad_scale, found_inf)
    kwargs = {"lr": lr, "beta2_decay": beta2_decay, "eps": (eps1, eps2), "d": d, "weight_decay": weight_decay}
    kwargs.update(foreach=foreach, maximize=maximize)
    states = [
        _State("row_var", "row_vars", row_vars),
        _State("col_var", "col_vars", col_vars),
        _State("variance", "variances", variances),
    ]
    _apply("adafactor", _optimizers.Adafactor, kwargs, params, grads, states, state_steps)


def adagrad(
    params: list[Any],
    grads: list[Any],
    state_sums: list[Any],
    state_steps: list[Any],
    fused: bool | None = None,
    grad_scale: Any = None,
    found_inf: Any = None,
    has_sparse_grad: bool = False,
    foreach: bool | None = None,
    differentiable: bool = False,
    has_complex: bool = False,
    *,
    lr: Any,
    weight_decay: float,
    lr_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    r"""Adagrad on lists of arrays: :class:`arrayopt.Adagrad`'s step, state held by the caller.

    The rule is :func:`arrayopt.optimizers.adagrad.adagrad_update`. Sparse gradients
    (:class:`~arrayopt.SparseGrad`) take the class's sparse path.

    Args:
        params, grads: the parameters (updated in place) and their gradients.
        state_sums: the sums of squared gradients (``initial_accumulator_value`` at
            first), updated in place.
        state_steps: step counts, incremented (see the module docstring).
        fused: as the class (refuses complex parameters when true). grad_scale,
            found_inf: must be None. differentiable: must be False.
            has_sparse_grad, foreach, has_complex: ignored.
        lr, weight_decay, lr_decay, eps, maximize: as for :class:`arrayopt.Adagrad`.

    Example:
        >>> import numpy as np
        >>> w, total, steps = np.array([1.0]), np.zeros(1), [0]
        >>> adagrad([w], [np.array([2.0])], [total], steps, lr=0.5, weight_decay=0.0, lr_decay=0.0,
        ...         eps=1e-10, maximize=False)
        >>> w, total  # g / sqrt(g^2): the first step moves by lr
        (array([0.5]), array([4.]))
    """
    _no_amp("adagrad", grad_scale, found_inf)
    kwargs = {"lr": lr, "lr_decay": lr_decay, "weight_decay": weight_decay, "eps": eps, "maximize": maximize}
    kwargs.update(foreach=foreach, differentiable=differentiable, fused=fused)
    states = [_State("sum", "state_sums", state_sums)]
    _apply("adagrad", _optimizers.Adagrad, kwargs, params, grads, states, state_steps)


def adam(
    params: list[Any],
    grads: list[Any],
    exp_avgs: list[Any],
    exp_avg_sqs: list[Any],
    max_exp_avg_sqs: list[Any],
    state_steps: list[Any],
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
    grad_scale: Any = None,
    found_inf: Any = None,
    has_complex: bool = False,
    decoupled_weight_decay: bool = False,
    *,
    amsgrad: bool,
    beta1: Any,
    beta2: Any,
    lr: Any,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    r"""Adam on lists of arrays: :class:`arrayopt.Adam`'s step, state held by the caller.

    The rule is :func:`arrayopt.optimizers.adam.adam_update` (its math is there).

    Args:
        params, grads: the parameters (updated in place) and their gradients.
        exp_avgs, exp_avg_sqs: the first and second moments (zeros at first), updated
            in place.
        max_exp_avg_sqs: with ``amsgrad``, the running maxima of the second moment
            (zeros at first); may be empty without it.
        state_steps: step counts, incremented (see the module docstring).
        capturable, differentiable: must be False. grad_scale, found_inf: must be None.
            foreach, fused, has_complex: ignored.
        decoupled_weight_decay: AdamW's decay (:func:`adamw`). Default: False.
        amsgrad, beta1, beta2, lr, weight_decay, eps, maximize: as for
            :class:`arrayopt.Adam` (``betas = (beta1, beta2)``).

    Example:
        >>> import numpy as np
        >>> w, m, v, steps = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2), [0]
        >>> adam([w], [np.array([0.5, -0.25])], [m], [v], [], steps, amsgrad=False, beta1=0.9, beta2=0.999,
        ...      lr=0.1, weight_decay=0.0, eps=1e-8, maximize=False)
        >>> w.round(6), steps  # a first Adam step moves each entry by lr
        (array([ 0.9, -1.9]), [1])
    """
    _no_amp("adam", grad_scale, found_inf)
    kwargs = {"lr": lr, "betas": _betas(beta1, beta2), "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad}
    kwargs.update(foreach=foreach, maximize=maximize, capturable=capturable, differentiable=differentiable)
    kwargs.update(fused=fused, decoupled_weight_decay=decoupled_weight_decay)
    states = _adam_states(exp_avgs, exp_avg_sqs, max_exp_avg_sqs, amsgrad)
    _apply("adam", _optimizers.Adam, kwargs, params, grads, states, state_steps)


def _adam_states(exp_avgs: Any, exp_avg_sqs: Any, max_exp_avg_sqs: Any, amsgrad: bool) -> list[_State]:
    return [
        _State("exp_avg", "exp_avgs", exp_avgs),
        _State("exp_avg_sq", "exp_avg_sqs", exp_avg_sqs),
        _State("max_exp_avg_sq", "max_exp_avg_sqs", max_exp_avg_sqs, needed=bool(amsgrad)),
    ]


def adamax(
    params: list[Any],
    grads: list[Any],
    exp_avgs: list[Any],
    exp_infs: list[Any],
    state_steps: list[Any],
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
    has_complex: bool = False,
    *,
    eps: float,
    beta1: float,
    beta2: float,
    lr: Any,
    weight_decay: float,
) -> None:
    r"""Adamax on lists of arrays: :class:`arrayopt.Adamax`'s step, state held by the caller.

    The rule is :func:`arrayopt.optimizers.adamax.adamax_update` (its math is there).

    Args:
        params, grads: the parameters (updated in place) and their gradients.
        exp_avgs, exp_infs: the first moment and the infinity norm (zeros at first),
            updated in place.
        state_steps: step counts, incremented (see the module docstring).
        maximize: maximise the objective. Default: False.
        capturable, differentiable: must be False. foreach, has_complex: ignored.
        eps, beta1, beta2, lr, weight_decay: as for :class:`arrayopt.Adamax`.

    Example:
        >>> import numpy as np
        >>> w, m, u, steps = np.array([1.0]), np.zeros(1), np.zeros(1), [0]
        >>> adamax([w], [np.array([3.0])], [m], [u], steps, eps=1e-8, beta1=0.9, beta2=0.999, lr=0.002,
        ...        weight_decay=0.0)
        >>> w.round(6)
        array([0.998])
    """
    kwargs = {"lr": lr, "betas": _betas(beta1, beta2), "eps": eps, "weight_decay": weight_decay}
    kwargs.update(foreach=foreach, maximize=maximize, differentiable=differentiable, capturable=capturable)
    states = [_State("exp_avg", "exp_avgs", exp_avgs), _State("exp_inf", "exp_infs", exp_infs)]
    _apply("adamax", _optimizers.Adamax, kwargs, params, grads, states, state_steps)


def adamw(
    params: list[Any],
    grads: list[Any],
    exp_avgs: list[Any],
    exp_avg_sqs: list[Any],
    max_exp_avg_sqs: list[Any],
    state_steps: list[Any],
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
    grad_scale: Any = None,
    found_inf: Any = None,
    has_complex: bool = False,
    *,
    amsgrad: bool,
    beta1: Any,
    beta2: Any,
    lr: Any,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    r"""AdamW on lists of arrays: :class:`arrayopt.AdamW`'s step, state held by the caller.

    Adam with decoupled weight decay, :math:`\theta \leftarrow \theta(1 - \gamma\lambda)`;
    the rule is :func:`arrayopt.optimizers.adam.adam_update`.

    Args:
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps: as for :func:`adam`.
        capturable, differentiable: must be False. grad_scale, found_inf: must be None.
            foreach, fused, has_complex: ignored.
        amsgrad, beta1, beta2, lr, weight_decay, eps, maximize: as for :class:`arrayopt.AdamW`.

    Example:
        >>> import numpy as np
        >>> w, m, v, steps = np.array([1.0]), np.zeros(1), np.zeros(1), [0]
        >>> adamw([w], [np.array([0.0])], [m], [v], [], steps, amsgrad=False, beta1=0.9, beta2=0.999,
        ...       lr=0.1, weight_decay=0.5, eps=1e-8, maximize=False)
        >>> w  # a zero gradient: only the decay, 1 - lr * weight_decay
        array([0.95])
    """
    _no_amp("adamw", grad_scale, found_inf)
    kwargs = {"lr": lr, "betas": _betas(beta1, beta2), "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad}
    kwargs.update(foreach=foreach, maximize=maximize, capturable=capturable, differentiable=differentiable)
    kwargs.update(fused=fused)
    states = _adam_states(exp_avgs, exp_avg_sqs, max_exp_avg_sqs, amsgrad)
    _apply("adamw", _optimizers.AdamW, kwargs, params, grads, states, state_steps)


def asgd(
    params: list[Any],
    grads: list[Any],
    axs: list[Any],
    mus: list[Any],
    etas: list[Any],
    state_steps: list[Any],
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
    has_complex: bool = False,
    *,
    lambd: float,
    lr: Any,
    t0: float,
    alpha: float,
    weight_decay: float,
) -> None:
    r"""ASGD on lists of arrays: :class:`arrayopt.ASGD`'s step, state held by the caller.

    The rule is :func:`arrayopt.optimizers.asgd.asgd_update` (its math is there).

    Args:
        params, grads: the parameters (updated in place) and their gradients.
        axs: the averaged parameters (zeros at first), updated in place.
        mus, etas: 0-d float32 arrays, :math:`\mu` (1 at first) and :math:`\eta` (``lr``
            at first), written in place.
        state_steps: step counts, incremented (see the module docstring).
        maximize: maximise the objective. Default: False.
        capturable, differentiable: must be False. foreach, has_complex: ignored.
        lambd, lr, t0, alpha, weight_decay: as for :class:`arrayopt.ASGD`.

    Example:
        >>> import numpy as np
        >>> w, ax, steps = np.array([1.0]), np.zeros(1), [0]
        >>> mu, eta = np.asarray(1.0, dtype=np.float32), np.asarray(0.1, dtype=np.float32)
        >>> asgd([w], [np.array([1.0])], [ax], [mu], [eta], steps, lambd=0.0, lr=0.1, t0=1e6, alpha=0.75,
        ...      weight_decay=0.0)
        >>> w.round(6), ax.round(6)  # with mu = 1 the average is the parameter
        (array([0.9]), array([0.9]))
    """
    kwargs = {"lr": lr, "lambd": lambd, "alpha": alpha, "t0": t0, "weight_decay": weight_decay}
    kwargs.update(foreach=foreach, maximize=maximize, differentiable=differentiable, capturable=capturable)
    states = [_State("ax", "axs", axs), _State("mu", "mus", mus), _State("eta", "etas", etas)]
    _apply("asgd", _optimizers.ASGD, kwargs, params, grads, states, state_steps)


def muon(
    params: list[Any],
    grads: list[Any],
    muon_momentum_bufs: list[Any],
    *,
    foreach: bool | None = None,
    lr: Any,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
    ns_coefficients: tuple[float, float, float],
    ns_steps: int,
    eps: float,
    adjust_lr_fn: str | None,
    has_complex: bool,
) -> None:
    r"""Muon on lists of 2-D arrays: :class:`arrayopt.Muon`'s step, state held by the caller.

    The rules are :func:`arrayopt.optimizers.muon.muon_momentum`,
    :func:`~arrayopt.optimizers.muon.newton_schulz_bfloat16` and
    :func:`~arrayopt.optimizers.muon.muon_apply` (the math is there). Muon keeps no step count.

    Args:
        params, grads: 2-D parameters (updated in place) and their gradients.
        muon_momentum_bufs: the momentum buffers (zeros at first), updated in place.
        foreach: ignored. has_complex: required, as in torch, and ignored (complex
            parameters are refused).
        lr, weight_decay, momentum, nesterov, ns_coefficients, ns_steps, eps, adjust_lr_fn:
            as for :class:`arrayopt.Muon`.

    Example:
        >>> import numpy as np
        >>> w, buf = np.eye(2) * 3.0, np.zeros((2, 2))
        >>> muon([w], [np.diag([2.0, 1.0])], [buf], lr=0.1, weight_decay=0.0, momentum=0.95, nesterov=True,
        ...      ns_coefficients=(3.4445, -4.7750, 2.0315), ns_steps=5, eps=1e-7, adjust_lr_fn=None, has_complex=False)
        >>> np.round(w, 1)  # both directions move by about lr
        array([[2.9, 0. ],
               [0. , 2.9]])
    """
    kwargs = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov}
    kwargs.update(ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)
    states = [_State("momentum_buffer", "muon_momentum_bufs", muon_momentum_bufs)]
    _apply("muon", _optimizers.Muon, kwargs, params, grads, states)


def nadam(
    params: list[Any],
    grads: list[Any],
    exp_avgs: list[Any],
    exp_avg_sqs: list[Any],
    mu_products: list[Any],
    state_steps: list[Any],
    decoupled_weight_decay: bool = False,
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    has_complex: bool = False,
    maximize: bool = False,
    *,
    beta1: float,
    beta2: float,
    lr: Any,
    weight_decay: float,
    momentum_decay: float,
    eps: float,
) -> None:
    r"""NAdam on lists of arrays: :class:`arrayopt.NAdam`'s step, state held by the caller.

    The rule is :func:`arrayopt.optimizers.nadam.nadam_update` (its math is there).

    Args:
        params, grads: the parameters (updated in place) and their gradients.
        exp_avgs, exp_avg_sqs: the moments (zeros at first), updated in place.
        mu_products: 0-d float32 arrays, the products of the momentum coefficients (1 at
            first), written in place.
        state_steps: step counts, incremented (see the module docstring).
        decoupled_weight_decay: NAdamW's decay. Default: False.
        maximize: maximise the objective. Default: False.
        capturable, differentiable: must be False. foreach, has_complex: ignored.
        beta1, beta2, lr, weight_decay, momentum_decay, eps: as for :class:`arrayopt.NAdam`.

    Example:
        >>> import numpy as np
        >>> w, m, v, steps = np.array([1.0]), np.zeros(1), np.zeros(1), [0]
        >>> mu_product = np.asarray(1.0, dtype=np.float32)
        >>> nadam([w], [np.array([0.5])], [m], [v], [mu_product], steps, beta1=0.9, beta2=0.999, lr=0.002,
        ...       weight_decay=0.0, momentum_decay=4e-3, eps=1e-8)
        >>> bool(w[0] < 1.0), steps, bool(mu_product < 1.0)
        (True, [1], True)
    """
    kwargs = {"lr": lr, "betas": _betas(beta1, beta2), "eps": eps, "weight_decay": weight_decay}
    kwargs.update(momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay, foreach=foreach)
    kwargs.update(maximize=maximize, capturable=capturable, differentiable=differentiable)
    states = [
        _State("exp_avg", "exp_avgs", exp_avgs),
        _State("exp_avg_sq", "exp_avg_sqs", exp_avg_sqs),
        _State("mu_product", "mu_products", mu_products),
    ]
    _apply("nadam", _optimizers.NAdam, kwargs, params, grads, states, state_steps)


def radam(
    params: list[Any],
    grads: list[Any],
    exp_avgs: list[Any],
    exp_avg_sqs: list[Any],
    state_steps: list[Any],
    decoupled_weight_decay: bool = False,
    foreach: bool | None = None,
    differentiable: bool = False,
    capturable: bool = False,
    has_complex: bool = False,
    maximize: bool = False,
    *,
    beta1: float,
    beta2: float,
    lr: Any,
    weight_decay: float,
    eps: float,
) -> None:
    r"""RAdam on lists of arrays: :class:`arrayopt.RAdam`'s step, state held by the caller.

    The rule is :func:`arrayopt.optimizers.radam.radam_update` (its math is there).

    Args:
        params, grads: the parameters (updated in place) and their gradients.
        exp_avgs, exp_avg_sqs: the moments (zeros at first), updated in place.
        state_steps: step counts, incremented (see the module docstring).
        decoupled_weight_decay: AdamW's decay. Default: False.
        maximize: maximise the objective. Default: False.
        capturable, differentiable: must be False. foreach, has_complex: ignored.
        beta1, beta2, lr, weight_decay, eps: as for :class:`arrayopt.RAdam`.

    Example:
        >>> import numpy as np
        >>> w, m, v, steps = np.array([1.0]), np.zeros(1), np.zeros(1), [0]
        >>> radam([w], [np.array([0.5])], [m], [v], steps, beta1=0.9, beta2=0.999, lr=0.1, weight_decay=0.0,
        ...       eps=1e-8)
        >>> w.round(6)  # not yet rectified: an SGD-with-momentum step, lr * m / (1 - beta1)
        array([0.95])
    """
    kwargs = {"lr": lr, "betas": _betas(beta1, beta2), "eps": eps, "weight_decay": weight_decay}
    kwargs.update(decoupled_weight_decay=decoupled_weight_decay, foreach=foreach, maximize=maximize)
    kwargs.update(capturable=capturable, differentiable=differentiable)
    states = [_State("exp_avg", "exp_avgs", exp_avgs), _State("exp_avg_sq", "exp_avg_sqs", exp_avg_sqs)]
    _apply("radam", _optimizers.RAdam, kwargs, params, grads, states, state_steps)


def rmsprop(
    params: list[Any],
    grads: list[Any],
    square_avgs: list[Any],
    grad_avgs: list[Any],
    momentum_buffer_list: list[Any],
    state_steps: list[Any],
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
    has_complex: bool = False,
    *,
    lr: Any,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
) -> None:
    r"""RMSprop on lists of arrays: :class:`arrayopt.RMSprop`'s step, state held by the caller.

    The rule is :func:`arrayopt.optimizers.rmsprop.rmsprop_update` (its math is there).

    Args:
        params, grads: the parameters (updated in place) and their gradients.
        square_avgs: the running averages of the squared gradients (zeros at first).
        grad_avgs: with ``centered``, the running averages of the gradients (zeros at
            first); may be empty without it.
        momentum_buffer_list: with ``momentum > 0``, the buffers (zeros at first); may be
            empty without it.
        state_steps: step counts, incremented (see the module docstring).
        maximize: maximise the objective. Default: False.
        capturable, differentiable: must be False. foreach, has_complex: ignored.
        lr, alpha, eps, weight_decay, momentum, centered: as for :class:`arrayopt.RMSprop`.

    Example:
        >>> import numpy as np
        >>> w, sq, steps = np.array([1.0]), np.zeros(1), [0]
        >>> rmsprop([w], [np.array([2.0])], [sq], [], [], steps, lr=0.01, alpha=0.99, eps=1e-8,
        ...         weight_decay=0.0, momentum=0.0, centered=False)
        >>> w.round(4)  # lr * g / sqrt((1 - alpha) g^2) = lr / sqrt(0.01)
        array([0.9])
    """
    kwargs = {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay, "momentum": momentum}
    kwargs.update(centered=centered, capturable=capturable, foreach=foreach, maximize=maximize)
    kwargs.update(differentiable=differentiable)
    states = [
        _State("square_avg", "square_avgs", square_avgs),
        _State("grad_avg", "grad_avgs", grad_avgs, needed=bool(centered)),
        _State("momentum_buffer", "momentum_buffer_list", momentum_buffer_list, needed=_positive(momentum)),
    ]
    _apply("rmsprop", _optimizers.RMSprop, kwargs, params, grads, states, state_steps)


def _positive(value: Any) -> bool:
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return True  # not a number: the class's check names it


def rprop(
    params: list[Any],
    grads: list[Any],
    prevs: list[Any],
    step_sizes: list[Any],
    state_steps: list[Any],
    foreach: bool | None = None,
    capturable: bool = False,
    maximize: bool = False,
    differentiable: bool = False,
    has_complex: bool = False,
    *,
    step_size_min: float,
    step_size_max: float,
    etaminus: float,
    etaplus: float,
) -> None:
    r"""Rprop on lists of arrays: :class:`arrayopt.Rprop`'s step, state held by the caller.

    The rule is :func:`arrayopt.optimizers.rprop.rprop_update` (its math is there).

    Args:
        params, grads: the parameters (updated in place) and their gradients.
        prevs: the previous gradients (zeros at first), updated in place.
        step_sizes: the per-entry step sizes (``lr`` at first), updated in place.
        state_steps: step counts, incremented (see the module docstring).
        maximize: maximise the objective. Default: False.
        capturable, differentiable: must be False. foreach, has_complex: ignored.
        step_size_min, step_size_max, etaminus, etaplus: the class's ``step_sizes`` and
            ``etas`` pairs.

    Example:
        >>> import numpy as np
        >>> w, prev, sizes, steps = np.array([1.0, 1.0]), np.zeros(2), np.full(2, 0.01), [0]
        >>> rprop([w], [np.array([3.0, -0.5])], [prev], [sizes], steps, step_size_min=1e-6, step_size_max=50.0,
        ...       etaminus=0.5, etaplus=1.2)
        >>> w  # each entry moves by its step size, against the sign of its gradient
        array([0.99, 1.01])
    """
    kwargs = {"etas": (etaminus, etaplus), "step_sizes": (step_size_min, step_size_max), "capturable": capturable}
    kwargs.update(foreach=foreach, maximize=maximize, differentiable=differentiable)
    states = [_State("prev", "prevs", prevs), _State("step_size", "step_sizes", step_sizes)]
    _apply("rprop", _optimizers.Rprop, kwargs, params, grads, states, state_steps)


def sgd(
    params: list[Any],
    d_p_list: list[Any],
    momentum_buffer_list: list[Any],
    has_sparse_grad: bool = False,
    foreach: bool | None = None,
    fused: bool | None = None,
    grad_scale: Any = None,
    found_inf: Any = None,
    *,
    weight_decay: float,
    momentum: float,
    lr: Any,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    r"""SGD on lists of arrays: :class:`arrayopt.SGD`'s step, state held by the caller.

    The rule is :func:`arrayopt.optimizers.sgd.sgd_update` (its math is there).

    Args:
        params: the parameters, updated in place.
        d_p_list: their gradients (dense arrays or :class:`~arrayopt.SparseGrad`).
        momentum_buffer_list: with momentum, one buffer per parameter: None before the
            first step (the function then puts the new buffer, a copy of the gradient,
            in the list), else updated in place. May be empty without momentum.
        grad_scale, found_inf: must be None. has_sparse_grad, foreach, fused: ignored.
        weight_decay, momentum, lr, dampening, nesterov, maximize: as for :class:`arrayopt.SGD`.

    Example:
        >>> import numpy as np
        >>> w, buffers = np.array([1.0, 2.0]), [None]
        >>> sgd([w], [np.array([1.0, 1.0])], buffers, weight_decay=0.0, momentum=0.9, lr=0.1,
        ...     dampening=0.0, nesterov=False, maximize=False)
        >>> w, buffers
        (array([0.9, 1.9]), [array([1., 1.])])
    """
    _no_amp("sgd", grad_scale, found_inf)
    kwargs = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay}
    kwargs.update(nesterov=nesterov, maximize=maximize, foreach=foreach, fused=fused)
    needed = _nonzero(momentum)
    states = [_State("momentum_buffer", "momentum_buffer_list", momentum_buffer_list, needed=needed)]
    _apply("sgd", _optimizers.SGD, kwargs, params, d_p_list, states, grads_arg="d_p_list")


def _nonzero(value: Any) -> bool:
    try:
        return float(value) != 0
    except (TypeError, ValueError):
        return True  # not a number: the class's check names it


def sparse_adam(
    params: list[Any],
    grads: list[Any],
    exp_avgs: list[Any],
    exp_avg_sqs: list[Any],
    state_steps: list[Any],
    *,
    eps: float,
    beta1: float,
    beta2: float,
    lr: Any,
    maximize: bool,
) -> None:
    r"""SparseAdam on lists of arrays: :class:`arrayopt.SparseAdam`'s step, state held by the caller.

    The rule is :func:`arrayopt.optimizers.sparse_adam.sparse_adam_update`, applied
    where each sparse gradient has entries. Unlike the other functions, this one reads
    ``state_steps`` without incrementing it (as torch's): increment each count before
    the call, so the first update sees 1.

    Args:
        params: the parameters, updated in place.
        grads: their sparse gradients (:class:`~arrayopt.SparseGrad`, or SciPy / CuPy
            sparse matrices).
        exp_avgs, exp_avg_sqs: the moments (zeros at first), updated in place where the
            gradients have entries.
        state_steps: the current step counts (at least 1), read only.
        eps, beta1, beta2, lr, maximize: as for :class:`arrayopt.SparseAdam`.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w, m, v, steps = np.ones(3), np.zeros(3), np.zeros(3), [1]
        >>> g = arrayopt.SparseGrad(np.array([[2]]), np.array([0.5]), (3,))
        >>> sparse_adam([w], [g], [m], [v], steps, eps=1e-8, beta1=0.9, beta2=0.999, lr=0.1, maximize=False)
        >>> w.round(6), steps  # only the entry with a gradient moves
        (array([1. , 1. , 0.9]), [1])
    """
    kwargs = {"lr": lr, "betas": _betas(beta1, beta2), "eps": eps, "maximize": maximize}
    states = [_State("exp_avg", "exp_avgs", exp_avgs), _State("exp_avg_sq", "exp_avg_sqs", exp_avg_sqs)]
    _apply("sparse_adam", _optimizers.SparseAdam, kwargs, params, grads, states, state_steps, counted_by_caller=True)

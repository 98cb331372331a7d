r"""Adafactor: adaptive steps with factored second moments (Shazeer and Stern, 2018).

Unlike the elementwise optimizers, a step mixes elementwise updates with reductions
(root mean squares, row and column means, a norm between two elementwise passes). The
elementwise parts are the three rules below, each a single kernel in the cupy.fuse
dialect; :meth:`Adafactor._update` does the reductions with the array namespace in
between. For a parameter :math:`\theta` of shape :math:`(\dots, m, n)` with gradient
:math:`G` (:math:`\pm` for ``maximize``), step :math:`t` is

.. math::

    \omega_t &= t^{\tau}, \qquad \rho_t = \min(\gamma, 1/\sqrt t), \qquad
        \alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta))\,\rho_t \\
    R &\leftarrow \mathrm{lerp}(R, \mathrm{mean}_{-1}(G^2), \omega_t), \quad
    C \leftarrow \mathrm{lerp}(C, \mathrm{mean}_{-2}(G^2), \omega_t)
        \qquad \text{(} R: (\dots, m, 1),\ C: (\dots, 1, n)\text{)} \\
    \hat V &= R\,C / \max(\mathrm{mean}_{-2}(R), \epsilon_1)
        \qquad \text{(0-d and 1-d: } \hat V = V \leftarrow \mathrm{lerp}(V, G^2, \omega_t)\text{)} \\
    U &= G / \sqrt{\max(\hat V, \epsilon_1^2)} \\
    \theta &\leftarrow \theta\,(1 - \gamma\lambda)
        - \frac{\alpha_t}{\max(1, \mathrm{RMS}(U)/d)}\, U

with :math:`\mathrm{RMS}(x) = \lVert x\rVert_2/\sqrt{\mathrm{numel}(x)}` and
:math:`\mathrm{mean}_k(G^2)` computed as torch does, :math:`\lVert G\rVert_{2,k}^2 /
\mathrm{size}_k` (the norm rounded, then squared).
"""

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend, is_array
from arrayopt.optimizer import ElementwiseOptimizer, Hyper
from arrayopt.parameter import Parameter
from arrayopt.sparse import SparseGrad

__all__ = ["Adafactor", "adafactor_direction", "adafactor_moment_update", "adafactor_param_update"]


def adafactor_moment_update(
    xp: Any,
    second: Any,
    target: Any,
    weight: float,
    one_minus_weight: float,
    *,
    square: bool,
    lerp_from_end: bool,
) -> None:
    r"""Move a second-moment estimate towards its target, in place: :math:`S \leftarrow
    \mathrm{lerp}(S, T, \omega)`.

    ``target`` is a row or column mean of :math:`G^2` (same shape as ``second``), or
    with ``square`` the gradient itself, squared here (:math:`T = G \cdot G`). The lerp
    is torch's: :math:`S + \omega(T - S)` for :math:`\omega < 0.5`, else (flag
    ``lerp_from_end``) :math:`T - (T - S)(1 - \omega)`, so the first step
    (:math:`\omega = 1`) copies :math:`T` exactly.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        second: the estimate :math:`S` (``row_var``, ``col_var`` or ``variance``),
            updated in place.
        target: :math:`T`, or the gradient with ``square``; only read.
        weight, one_minus_weight: :math:`\omega = t^\tau` and :math:`1 - \omega`,
            Python floats computed by :class:`Adafactor`.
        square, lerp_from_end: keyword flags that select the formula; they are fixed
            when the kernel is built (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np
        >>> s = np.array([1.0, 4.0])
        >>> adafactor_moment_update(np, s, np.array([3.0, 2.0]), 0.25, 0.75, square=False, lerp_from_end=False)
        >>> s
        array([1.5, 3.5])
        >>> v = np.zeros(2)  # the first step of an unfactored moment: V = G * G
        >>> adafactor_moment_update(np, v, np.array([3.0, -2.0]), 1.0, 0.0, square=True, lerp_from_end=True)
        >>> v
        array([9., 4.])
    """
    end = target * target if square else target
    if lerp_from_end:
        second[...] = end - (end - second) * one_minus_weight
    else:
        second += weight * (end - second)


def adafactor_direction(
    xp: Any,
    update: Any,
    grad: Any,
    eps1_squared: float,
    *,
    maximize: bool,
) -> None:
    r"""The unscaled update, in place over the second-moment estimate :math:`\hat V` that
    ``update`` holds: :math:`U = \frac{1}{\sqrt{\max(\hat V, \epsilon_1^2)}}\,(\pm G)`.

    As torch (``clamp_``, ``rsqrt_``, ``mul_``): the reciprocal square root is rounded
    before the product.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        update: holds :math:`\hat V` on entry and :math:`U` on return (the gradient's
            shape).
        grad: the gradient :math:`G`; only read.
        eps1_squared: :math:`\epsilon_1^2`, a Python float.
        maximize: keyword flag (negate the gradient), fixed when the kernel is built.

    Example:
        >>> import numpy as np
        >>> u = np.array([4.0, 0.0])  # the second-moment estimate
        >>> adafactor_direction(np, u, np.array([2.0, 3.0]), 0.25, maximize=False)
        >>> u  # 2 / sqrt(4) and 3 / sqrt(0.25)
        array([1., 6.])
    """
    g = -grad if maximize else grad
    update[...] = 1 / xp.sqrt(xp.maximum(update, eps1_squared)) * g


def adafactor_param_update(
    xp: Any,
    param: Any,
    update: Any,
    decay_factor: float,
    step: float,
    *,
    decay: bool,
) -> None:
    r"""The parameter step, in place: :math:`\theta \leftarrow \theta(1-\gamma\lambda)
    + s\,U` (flag ``decay`` for the first factor), where the host computed
    ``step`` :math:`s = -\alpha_t / \max(1, \mathrm{RMS}(U)/d)`.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param: the parameter :math:`\theta`, updated in place.
        update: the unscaled update :math:`U` from :func:`adafactor_direction`; only read.
        decay_factor: :math:`1 - \gamma\lambda`, a Python float.
        step: :math:`s`, a Python float (negative: a descent step).
        decay: keyword flag (apply ``decay_factor``), fixed when the kernel is built.

    Example:
        >>> import numpy as np
        >>> p = np.array([1.0, 2.0])
        >>> adafactor_param_update(np, p, np.array([1.0, -1.0]), 0.5, -0.25, decay=True)
        >>> p
        array([0.25, 1.25])
    """
    if decay:
        param *= decay_factor
    param += step * update


@dataclass(frozen=True)
class AdafactorHyper(Hyper):
    """Adafactor's hyper-parameters for one step (flags ``maximize`` and ``decay`` select its two rules)."""

    lr: float
    beta2_decay: float
    eps1: float
    eps2: float
    d: float
    weight_decay: float


class Adafactor(ElementwiseOptimizer[AdafactorHyper]):
    r"""Adafactor; torch.optim.Adafactor.

    The math is in this module's docstring; the elementwise rules are
    :func:`adafactor_moment_update`, :func:`adafactor_direction` and
    :func:`adafactor_param_update`. Parameters with two or more dimensions keep
    factored second moments over their last two dimensions (leading dimensions are
    batched); 0-d and 1-d parameters keep a full one. Complex parameters are refused,
    as torch does.

    Each step reads two norms per parameter on the host (the RMS of the parameter and
    of the update), as torch does with ``.item()``: on CuPy, a step waits for the
    device.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
        lr: learning rate :math:`\gamma` (float or 1-element array); the relative step
            is :math:`\min(\gamma, 1/\sqrt t)`. Default: 1e-2.
        beta2_decay: :math:`\tau \le 0`; the second-moment weight is :math:`t^\tau`.
            Default: -0.8.
        eps: :math:`(\epsilon_1, \epsilon_2)`. :math:`\epsilon_1` bounds the second
            moment from below; None means the machine epsilon of the group's first
            parameter (with a gradient) dtype, used for every parameter of the group, as
            torch. :math:`\epsilon_2` bounds the parameter's RMS from below.
            Default: (None, 1e-3).
        d: clipping threshold: the update's RMS is clipped to :math:`d`. Default: 1.0.
        weight_decay: decoupled decay :math:`\lambda`. Default: 0.0 (torch's
            documentation says 1e-2; its code, and arrayopt, use 0.0).
        foreach: accepted for torch compatibility and stored in the groups; it changes
            nothing.
        maximize: maximise the objective. Default: False.

    State per parameter: ``step`` (a Python float) and either ``row_var`` (shape
    ``(..., m, 1)``) and ``col_var`` (shape ``(..., 1, n)``), or ``variance`` (the
    parameter's shape, for 0-d and 1-d parameters).

    An empty parameter is left as it is (its step counter still advances); torch
    raises ZeroDivisionError on one (the RMS of no numbers).

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([[3.0, -4.0]]))
        >>> opt = arrayopt.Adafactor([w], lr=0.1)
        >>> w.grad = 2 * w.data           # gradient of |w|^2
        >>> opt.step()                    # a relative step of lr times RMS(w)
        >>> np.round(w.data, 6)
        array([[ 2.646447, -3.646447]])

    Reference:
        Shazeer and Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
        Cost", ICML 2018.
    """

    _defaults_on_load: ClassVar[dict[str, Any]] = {"foreach": None}
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": StateKey("step"),
        "row_var": StateKey(shape=lambda shape: (*shape[:-1], 1) if len(shape) > 1 else None),
        "col_var": StateKey(shape=lambda shape: (*shape[:-2], 1, shape[-1]) if len(shape) > 1 else None),
        "variance": StateKey(shape=lambda shape: shape if len(shape) <= 1 else None),
    }

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-2,
        beta2_decay: float = -0.8,
        eps: Any = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        v.check_nonnegative(lr, "lr", f"Learning rate should be >= 0 but is: {lr}")
        v.require(v.number(beta2_decay, "beta2_decay") <= 0.0, f"beta2_decay should be <= 0 but is: {beta2_decay}")
        v.check_pair(eps, "eps", "eps1, eps2")
        if eps[0] is not None:
            v.check_nonnegative(eps[0], "eps[0]", f"epsilon1 should be >= 0 but is: {eps[0]}")
        v.check_nonnegative(eps[1], "eps[1]", f"epsilon2 should be >= 0 but is: {eps[1]}")
        v.require(1.0 <= v.number(d, "d"), f"Clipping threshold d should be >= 1 but is: {d}")
        v.check_nonnegative(weight_decay, "weight_decay", f"weight_decay should be >= 0 but is: {weight_decay}")
        defaults = {
            "lr": lr,
            "beta2_decay": beta2_decay,
            "eps": eps,
            "d": d,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _hyper(self, group: dict[str, Any]) -> AdafactorHyper:
        eps1, eps2 = group["eps"]
        if eps1 is None:
            # torch sets it from the first parameter it updates and keeps it for the rest
            # of the group.
            first = next(p for p in group["params"] if p.grad is not None)
            eps1 = get_backend(first.data).xp.finfo(first.data.dtype).eps
        weight_decay = v.to_float(group["weight_decay"])
        return AdafactorHyper(
            flags={"maximize": bool(group["maximize"]), "decay": weight_decay != 0},
            lr=v.scalar_like(group["lr"]),  # a float32 lr: the step is a float32 number, as torch's
            beta2_decay=v.to_float(group["beta2_decay"]),
            eps1=v.to_float(eps1),
            eps2=v.to_float(eps2),
            d=v.to_float(group["d"]),
            weight_decay=weight_decay,
        )

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        _refuse(p)
        grad = p.grad
        backend = get_backend(grad)
        shape = tuple(grad.shape)
        if len(shape) > 1:
            zeros = backend.xp.zeros
            like = {"dtype": grad.dtype, "device": backend.device(grad)}
            return {
                "step": 0.0,
                "row_var": zeros((*shape[:-1], 1), **like),
                "col_var": zeros((*shape[:-2], 1, shape[-1]), **like),
            }
        return {"step": 0.0, "variance": backend.xp.zeros_like(grad)}

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        _refuse(p)
        if "step" not in state:  # a loaded state without it: fail now, before any update
            raise KeyError("step")
        shape = tuple(p.grad.shape)
        if len(shape) > 1:
            if state.get("row_var") is None or state.get("col_var") is None:
                raise AssertionError("row_var and col_var should be defined when grad is multidimensional")
            expected = {"row_var": (*shape[:-1], 1), "col_var": (*shape[:-2], 1, shape[-1])}
        else:
            if state.get("variance") is None:
                raise AssertionError("variance should be defined when grad is a vector")
            expected = {"variance": shape}
        for key, want in expected.items():
            array = state[key]
            if not is_array(array):  # a loaded state may hold anything here: refuse it before any update
                raise TypeError(
                    f"{p._label()}: optimizer state {key} must be an array of shape {want}, "
                    f"but got {type(array).__name__}"
                )
            if tuple(array.shape) != want or array.dtype != p.data.dtype:
                raise ValueError(
                    f"{p._label()}: optimizer state {key} has shape {tuple(array.shape)} and dtype {array.dtype}, "
                    f"but the parameter needs shape {want} and dtype {p.data.dtype}"
                )
        return (p.data, p.grad)

    def _update(self, backend: Backend, hyper: AdafactorHyper, state: Any, operands: tuple[Any, ...]) -> None:
        param, grad = operands
        xp = backend.xp
        state["step"] += 1
        t = state["step"]
        numel = math.prod(param.shape)
        if numel == 0:
            return  # torch divides 0 by 0 here (ZeroDivisionError); nothing to update
        # The same Python-float expressions as torch's single-tensor Adafactor.
        weight = t**hyper.beta2_decay
        rho = min(hyper.lr, 1 / (t**0.5))
        alpha = max(hyper.eps2, v.to_float(_norm(xp, param)) / (numel**0.5)) * rho
        eps1 = hyper.eps1
        lerp_from_end = abs(weight) >= 0.5
        decay = hyper.flags["decay"]
        decay_factor = 1 - hyper.lr * hyper.weight_decay
        if decay and backend.in_order_kernels:
            # The gradient is the parameter's own array: as in torch, the moments read it
            # after the decay. The decay alone: adding -0.0 * 0 = -0.0 changes no value.
            backend.kernel(adafactor_param_update, decay=True)(param, xp.zeros_like(param), float(decay_factor), -0.0)
            decay = False
        if grad.ndim > 1:
            moment = backend.kernel(adafactor_moment_update, square=False, lerp_from_end=lerp_from_end)
            row_var, col_var = state["row_var"], state["col_var"]
            moment(row_var, _mean_square(xp, grad, -1), weight, 1 - weight)
            moment(col_var, _mean_square(xp, grad, -2), weight, 1 - weight)
            # R @ C over the last two axes is an outer product (inner size 1): one
            # rounded product per entry, the same as broadcasting.
            update = row_var * col_var
            update = update / xp.clip(xp.mean(row_var, axis=-2, keepdims=True), min=eps1)
        else:
            moment = backend.kernel(adafactor_moment_update, square=True, lerp_from_end=lerp_from_end)
            moment(state["variance"], grad, weight, 1 - weight)
            update = xp.asarray(state["variance"], copy=True)
        backend.kernel(adafactor_direction, maximize=hyper.flags["maximize"])(update, grad, eps1 * eps1)
        rms = v.to_float(_norm(xp, update)) / ((numel**0.5) * hyper.d)
        step = -alpha / max(1.0, rms)
        backend.kernel(adafactor_param_update, decay=decay)(param, update, float(decay_factor), float(step))


def _refuse(p: Parameter) -> None:
    """torch's errors for what Adafactor cannot update, in torch's order."""
    if get_backend(p.data).is_complex(p.data):
        raise RuntimeError("Adafactor does not support complex parameters")
    if isinstance(p.grad, SparseGrad):
        raise RuntimeError("Adafactor does not support sparse gradients")


def _norm(xp: Any, x: Any, axis: int | None = None) -> Any:
    """The 2-norm of ``x`` (along ``axis``, kept), as a sum of squares: the same bits on
    every host library (NumPy's own norms sum in different orders on different paths)."""
    if axis is None:
        return xp.sqrt(xp.sum(x * x))
    return xp.sqrt(xp.sum(x * x, axis=axis, keepdims=True))


def _mean_square(xp: Any, grad: Any, axis: int) -> Any:
    """Mean of ``grad**2`` along ``axis`` (kept), as torch computes it: norm, squared, divided."""
    norm = _norm(xp, grad, axis)
    return norm * norm / grad.shape[axis]

"""Muon: momentum orthogonalised by Newton–Schulz iterations (Jordan et al., 2024)."""

import math
import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend, is_array
from arrayopt.optimizer import ElementwiseOptimizer, Hyper
from arrayopt.parameter import Parameter

__all__ = ["Muon", "muon_apply", "muon_momentum", "newton_schulz_bfloat16"]


def muon_momentum(
    xp: Any,
    grad: Any,
    momentum_buffer: Any,
    update: Any,
    one_minus_momentum: float,
    momentum: float,
    *,
    nesterov: bool,
    small_buffer_weight: bool,
    small_nesterov_weight: bool,
) -> None:
    r"""Muon's momentum, in place on ``momentum_buffer``, and the matrix to orthogonalise in ``update``.

    .. math::

        B &\leftarrow B + (1-\mu)(g - B) \\
        U &\leftarrow g + \mu (B - g) \quad\text{(nesterov; else } U = B)

    As in torch, the buffer is an exponential moving average (torch's docstring shows
    :math:`\mu B + g`; its code does this), and both lines are torch's ``lerp``: with
    weight :math:`w` below 0.5 (``small_*_weight``) it moves from the start towards
    the end, otherwise it is written :math:`\text{end} - (\text{end} - \text{start})(1-w)`.
    ``update`` is an output array of the gradient's shape.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        grad: the gradient :math:`g`; only read.
        momentum_buffer: :math:`B`, updated in place.
        update: output array for :math:`U`.
        one_minus_momentum, momentum: :math:`1 - \mu` and :math:`\mu`, Python floats.
        nesterov, small_buffer_weight, small_nesterov_weight: keyword flags that select
            the formula (``small_buffer_weight``: :math:`1 - \mu < 0.5`;
            ``small_nesterov_weight``: :math:`\mu < 0.5`); they are fixed when the
            kernel is built (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np
        >>> buf, u = np.array([1.0, 2.0]), np.empty(2)
        >>> flags = dict(nesterov=True, small_buffer_weight=False, small_nesterov_weight=False)
        >>> muon_momentum(np, np.array([3.0, 0.0]), buf, u, 0.5, 0.5, **flags)
        >>> buf, u  # B = lerp(B, g, 0.5), U = lerp(g, B, 0.5)
        (array([2., 1.]), array([2.5, 0.5]))
    """
    if small_buffer_weight:
        momentum_buffer += one_minus_momentum * (grad - momentum_buffer)
    else:
        momentum_buffer[...] = grad - (grad - momentum_buffer) * momentum
    if nesterov:
        if small_nesterov_weight:
            update[...] = grad + momentum * (momentum_buffer - grad)
        else:
            update[...] = momentum_buffer - (momentum_buffer - grad) * one_minus_momentum
    else:
        update[...] = momentum_buffer


#: Veltkamp's splitting constant for float64: ``x * (2**45 + 1)`` keeps 53 - 45 = 8
#: significant bits, bfloat16's precision.
_SPLIT = 2.0**45 + 1.0
#: Below float32's (and bfloat16's) smallest normal number the grid is fixed: 2**-133.
_SMALLEST_NORMAL = 2.0**-126
_SUBNORMAL_SHIFT = 1.5 * 2.0**-81  # its ulp in float64 is 2**-133


def _float32(x: float) -> float:
    """A Python float rounded to float32 (nearest even), as torch converts its scalars."""
    try:
        return float(struct.unpack("f", struct.pack("f", x))[0])
    except OverflowError:  # rounds past float32's largest finite number
        return math.copysign(math.inf, x)


def _round_float32(xp: Any, x: Any) -> Any:
    """float64 ``x`` rounded to float32 (round to nearest even), kept as float64."""
    return xp.astype(xp.astype(x, xp.float32), xp.float64)


def _round_bfloat16(xp: Any, x: Any) -> Any:
    """float64 ``x`` holding float32 values, rounded to bfloat16 (nearest even), kept as float64.

    Veltkamp's split gives the nearest 8-bit number with ties to even (checked against
    ml_dtypes on random and exactly half-way bit patterns); subnormals use bfloat16's
    fixed grid and keep their sign; infinities and NaN pass through. A value that
    rounds past bfloat16's largest finite number stays finite here and becomes
    infinite once cast to float32.
    """
    c = x * _SPLIT
    normal = c - (c - x)
    subnormal = xp.copysign((x + _SUBNORMAL_SHIFT) - _SUBNORMAL_SHIFT, x)  # -tiny rounds to -0
    rounded = xp.where(xp.abs(x) < _SMALLEST_NORMAL, subnormal, normal)
    return xp.where(xp.isfinite(x), rounded, x)


def _exact_matmul(xp: Any, a: Any, b: Any) -> Any:
    """``a @ b`` for bfloat16-valued float64 matrices, rounded once to float32.

    Products of bfloat16 numbers are exact in float64 and their sums almost always
    are, so this is the correctly rounded float32 result on every backend. torch's
    CPU kernels accumulate in float32 in an order of their own, which can round across
    a bfloat16 boundary in rare entries (see the Muon class docstring).
    """
    return _round_float32(xp, xp.matmul(a, b))


def newton_schulz_bfloat16(
    xp: Any,
    matrix: Any,
    coefficients: tuple[float, float, float],
    steps: int,
    eps: float,
    matmul: Callable[[Any, Any, Any], Any] = _exact_matmul,
) -> Any:
    r"""Orthogonalise a 2-D ``matrix`` with torch's quintic Newton–Schulz iteration in bfloat16.

    .. math::

        X &\leftarrow \operatorname{bf16}(G)^{(\top)} / \max(\lVert X \rVert_F, \epsilon) \\
        A &\leftarrow X X^\top, \quad
        B \leftarrow b A + c A A, \quad
        X \leftarrow a X + B X \qquad (\text{``steps`` times}) \\

    then transposed back. :math:`X` is transposed first when the matrix has more rows
    than columns, so :math:`X X^\top` is the smaller Gram matrix. The result
    approximates :math:`U V^\top` of the SVD :math:`G = U S V^\top` (with singular
    values roughly between 0.5 and 1.5 rather than exactly 1, by design of the
    coefficients).

    torch runs this in bfloat16; here every value is held in float64 and rounded
    where torch rounds: the input to float32 and then to bfloat16; the norm (float32
    sum of squares and root) to bfloat16; each quotient to float32 and bfloat16; each
    product's dot products to float32 (``matmul(xp, a, b)``: torch accumulates in
    float32, the default here accumulates exactly and rounds once), then
    ``fma(beta, C, alpha * dot)`` in float32 as torch's CPU kernels combine it, then
    bfloat16. The coefficients are rounded to float32 as torch's ``addmm`` does.
    Returns a float64 array of bfloat16 values with the matrix's shape; everything
    goes through the array namespace ``xp``.

    Args:
        xp: the array namespace of ``matrix``.
        matrix: the 2-D array :math:`G` (any real floating dtype); only read.
        coefficients: :math:`(a, b, c)`, Python floats (Muon's default:
            ``(3.4445, -4.775, 2.0315)``).
        steps: the number of iterations.
        eps: the floor :math:`\epsilon` of the norm.
        matmul: ``matmul(xp, a, b)``, the float32-rounded product of two
            bfloat16-valued float64 matrices. Default: exact accumulation, one rounding.

    Reference: K. Jordan et al., "Muon: An optimizer for hidden layers in neural
    networks" (2024), https://kellerjordan.github.io/posts/muon/.

    Example:
        >>> import numpy as np
        >>> g = np.array([[3.0, 0.0], [0.0, 0.5]])
        >>> newton_schulz_bfloat16(np, g, (3.4445, -4.775, 2.0315), 5, 1e-7)  # singular values near 1
        array([[0.73046875, 0.        ],
               [0.        , 1.046875  ]])
    """
    a, b, c = (_float32(float(k)) for k in coefficients)
    # The norm's floor, eps, as torch's clamp of a bfloat16 norm sees it.
    floor = float(_round_bfloat16(xp, xp.asarray(_float32(float(eps)), dtype=xp.float64)))
    rows, cols = matrix.shape
    x = _round_bfloat16(xp, _round_float32(xp, xp.astype(matrix, xp.float64)))
    if rows > cols:
        x = x.T
    norm = _round_bfloat16(xp, _round_float32(xp, xp.sqrt(_round_float32(xp, xp.sum(x * x)))))
    x = _round_bfloat16(xp, _round_float32(xp, x / xp.maximum(norm, floor)))
    for _ in range(steps):
        gram = _round_bfloat16(xp, matmul(xp, x, x.T))
        gram_update = _round_bfloat16(xp, _round_float32(xp, b * gram + _round_float32(xp, c * matmul(xp, gram, gram))))
        x = _round_bfloat16(xp, _round_float32(xp, a * x + matmul(xp, gram_update, x)))
    return x.T if rows > cols else x


def muon_apply(xp: Any, param: Any, orthogonal: Any, decay_factor: float, adjusted_lr: float) -> None:
    r"""Muon's parameter step, in place: :math:`\theta \leftarrow \theta(1-\gamma\lambda) - \gamma' O`.

    ``decay_factor`` :math:`= 1 - \gamma\lambda` uses the unadjusted learning rate,
    ``adjusted_lr`` :math:`\gamma'` the shape-adjusted one; :math:`O` is the
    orthogonalised update in the parameter's dtype.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param: the parameter :math:`\theta`, updated in place.
        orthogonal: :math:`O`, of the parameter's shape and dtype; only read.
        decay_factor, adjusted_lr: Python floats, as above.

    Example:
        >>> import numpy as np
        >>> p = np.array([1.0, 2.0])
        >>> muon_apply(np, p, np.array([1.0, -1.0]), 0.5, 0.25)
        >>> p
        array([0.25, 1.25])
    """
    param *= decay_factor
    param -= adjusted_lr * orthogonal


@dataclass(frozen=True)
class MuonHyper(Hyper):
    """Muon's hyper-parameters for one step: the momentum rule's numbers, then the orthogonalisation's."""

    one_minus_momentum: float
    momentum: float
    lr: float
    weight_decay: float
    coefficients: tuple[Any, ...]
    steps: int
    eps: float
    adjust_lr_fn: str | None


class Muon(ElementwiseOptimizer[MuonHyper]):
    r"""Muon for 2-D parameters; torch.optim.Muon.

    Each step: the momentum rule :func:`muon_momentum`, the orthogonalisation
    :func:`newton_schulz_bfloat16` (through the array namespace, not elementwise),
    then :func:`muon_apply`.

    Args:
        params: 2-D Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
            Use another optimizer (e.g. AdamW) for biases and embeddings.
        lr: learning rate :math:`\gamma` (float or 1-element array). Default: 1e-3.
        weight_decay: decoupled weight decay :math:`\lambda`; it uses the unadjusted
            lr. Default: 0.1 (so a zero gradient still shrinks the parameter).
        momentum: :math:`\mu` of the moving average. Default: 0.95.
        nesterov: orthogonalise :math:`g + \mu(B - g)` instead of :math:`B`. Default: True.
        ns_coefficients: :math:`(a, b, c)` of the quintic iteration.
            Default: (3.4445, -4.7750, 2.0315).
        eps: floor of the Frobenius norm the input is divided by. Default: 1e-7.
        ns_steps: Newton–Schulz iterations (< 100). Default: 5.
        adjust_lr_fn: None or ``"original"``: :math:`\gamma' = \gamma\sqrt{\max(1, A/B)}`;
            ``"match_rms_adamw"``: :math:`\gamma' = 0.2\,\gamma\sqrt{\max(A, B)}`;
            ``"spectral_unclamped"`` (torch 2.14): :math:`\gamma' = \gamma\sqrt{A/B}`, the
            ``"original"`` ratio without its floor of 1; for a parameter of shape
            :math:`(A, B)` (fan-out, fan-in).

    State per parameter: ``momentum_buffer`` (zeros at creation); no step counter.

    Numerics: torch runs the iteration in bfloat16, and so does this class (see
    :func:`newton_schulz_bfloat16`), so the result is the same bfloat16 matrix torch
    computes, up to the order in which torch's CPU kernels accumulate each float32 dot
    product: rarely, a sum lands on the other side of a bfloat16 rounding boundary and
    that entry differs by one bfloat16 ulp, which the later iterations spread (a
    relative change of about 1e-3 in that step's update). The products here are
    accumulated exactly and rounded once, so the results are the same on NumPy, CuPy
    and other array-API libraries. torch refuses complex parameters, and so does
    this class.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.eye(2) * 3.0)
        >>> opt = arrayopt.Muon([w], lr=0.1, weight_decay=0.0)
        >>> w.grad = np.diag([2.0, 1.0])
        >>> opt.step()                    # both directions move by about lr
        >>> np.round(w.data, 1)
        array([[2.9, 0. ],
               [0. , 2.9]])

    Reference:
        Jordan, Jin, Boza, You, Cesista, Newhouse and Bernstein, "Muon: An optimizer
        for hidden layers in neural networks", 2024,
        https://kellerjordan.github.io/posts/muon/. Liu et al., "Muon is Scalable for
        LLM Training", arXiv:2502.16982, 2025 (``match_rms_adamw``). Bernstein,
        "Deriving Muon", 2025, https://jeremybernste.in/writing/deriving-muon
        (``spectral_unclamped``).
    """

    _defaults_on_load: ClassVar[dict[str, Any]] = {}
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "momentum_buffer": StateKey(),
    }
    #: The float32-rounded matrix product of the iteration (see :func:`newton_schulz_bfloat16`);
    #: the tests swap in an emulation of torch's CPU accumulation order.
    _matmul = staticmethod(_exact_matmul)

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-3,
        weight_decay: Any = 0.1,
        momentum: Any = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
    ) -> None:
        v.check_nonnegative(lr, "lr", f"Learning rate should be >= 0 but is: {lr}")
        v.check_nonnegative(momentum, "momentum", f"momentum should be >= 0 but is: {momentum}")
        v.check_nonnegative(weight_decay, "weight_decay", f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ("original", "match_rms_adamw", "spectral_unclamped"):
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        if isinstance(params, Parameter) or is_array(params):
            super().__init__(params, defaults)  # the base class raises its TypeError
        params = list(params)
        # torch checks the constructor's parameters after building the groups; here it
        # happens before, so a refused parameter leaves the caller's group dicts as they were.
        for p in _listed_parameters(params):
            _check_2d(p)
        super().__init__(params, defaults)
        for group in self.param_groups:  # any the scan above could not see without consuming it
            for p in group["params"]:
                _check_2d(p)

    def _hyper(self, group: dict[str, Any]) -> MuonHyper:
        steps = group["ns_steps"]
        try:
            steps = operator.index(steps)  # torch's range(ns_steps): an int, not 2.0
        except TypeError:
            raise TypeError(f"ns_steps must be an integer, got {steps!r}") from None
        if steps >= 100:
            raise ValueError("Number of steps must be less than 100 for computational efficiency")
        eps = group["eps"]
        if eps is None:  # torch: clamp(min=None), a RuntimeError
            raise RuntimeError("Muon's eps must be a real number (the norm's lower bound), got None")
        coefficients = tuple(group["ns_coefficients"])
        if len(coefficients) != 3:
            raise ValueError("Coefficients must be a tuple of exactly 3 values")
        momentum = v.to_float(group["momentum"])
        flags = {
            "nesterov": bool(group["nesterov"]),
            "small_buffer_weight": abs(1 - momentum) < 0.5,
            "small_nesterov_weight": abs(momentum) < 0.5,
        }
        return MuonHyper(
            flags=flags,
            one_minus_momentum=1 - momentum,
            momentum=momentum,
            lr=v.scalar_like(group["lr"]),  # a float32 lr: both factors are float32 numbers, as torch's
            weight_decay=v.to_float(group["weight_decay"]),
            coefficients=coefficients,
            steps=steps,
            eps=v.to_float(eps),
            adjust_lr_fn=group["adjust_lr_fn"],
        )

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        return {"momentum_buffer": get_backend(p.data).xp.zeros_like(p.grad)}

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        backend = get_backend(p.data)
        if backend.is_complex(p.data):
            raise RuntimeError("Muon does not support complex parameters")
        if len(p.grad.shape) != 2:
            raise ValueError("Param gradient must be a 2D matrix")
        buffer = state.get("momentum_buffer")
        if buffer is None:  # a loaded state without one starts afresh, as in torch
            buffer = backend.xp.zeros_like(p.grad)
        return (p.data, p.grad, buffer, backend.xp.empty_like(p.grad))

    def _update(self, backend: Backend, hyper: MuonHyper, state: Any, operands: tuple[Any, ...]) -> None:
        param, grad, buffer, update = operands
        state["momentum_buffer"] = buffer
        kernel = backend.kernel(muon_momentum, **hyper.flags)
        kernel(grad, buffer, update, hyper.one_minus_momentum, hyper.momentum)
        xp = backend.xp
        orthogonal = newton_schulz_bfloat16(xp, update, hyper.coefficients, hyper.steps, hyper.eps, matmul=self._matmul)
        orthogonal = xp.astype(orthogonal, param.dtype)
        lr = hyper.lr
        # torch's Python-float expressions, so both factors round identically.
        adjusted_lr = lr * _lr_ratio(hyper.adjust_lr_fn, tuple(param.shape))
        backend.kernel(muon_apply)(param, orthogonal, float(1 - lr * hyper.weight_decay), float(adjusted_lr))


def _lr_ratio(adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    rows, cols = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if adjust_lr_fn == "spectral_unclamped":
        return math.sqrt(rows / cols)
    return 1.0


def _listed_parameters(params: list[Any]) -> list[Parameter]:
    """The Parameters of a constructor's params list that can be seen without consuming an iterator."""
    found: list[Any] = []
    for item in params:
        if isinstance(item, dict):
            inner = item.get("params")
            if isinstance(inner, Parameter):
                found.append(inner)
            elif isinstance(inner, (list, tuple)):
                found.extend(inner)
        else:
            found.append(item)
    parameters: list[Parameter] = []
    for p in found:
        if isinstance(p, tuple) and len(p) == 2:  # (name, Parameter)
            p = p[1]
        if isinstance(p, Parameter):
            parameters.append(p)
    return parameters


def _check_2d(p: Any) -> None:
    if isinstance(p, Parameter) and len(p.shape) != 2:
        raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter with size: {p.shape}")

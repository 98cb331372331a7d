r"""Gradient clipping with ``torch.nn.utils``' functions: norms, clipping by norm and by value.

:func:`clip_grad_norm_` is what a torch training loop calls between ``backward()`` and
``optimizer.step()``; here it takes Parameters (a list, a single Parameter, a
:class:`~arrayopt.ParameterList` or :class:`~arrayopt.ParameterDict`, or anything with
a ``parameters()`` method) and scales their gradients in place:

.. math::

    \|g\|_p = \Big(\sum_{\text{every gradient entry } x} |x|^p\Big)^{1/p}, \qquad
    g \leftarrow g \cdot \min\Big(1, \frac{\text{max\_norm}}{\|g\|_p + 10^{-6}}\Big)

with :math:`\|g\|_\infty = \max |x|` and :math:`\|g\|_{-\infty} = \min |x|`: the norm
of all the gradients taken as one vector (torch takes the norm of the per-tensor norms,
the same number). Parameters whose gradient is None are skipped.

How it runs:

* The Parameters of a ``ParameterList`` or ``ParameterDict`` keep their gradients in
  one flat buffer (:mod:`arrayopt.flat`): a stretch of them is one reduction for the
  norm and one in-place multiply for the scaling, whatever the number of arrays.
* Everything stays on the gradients' device: the norm is a 0-d array of their library,
  the coefficient is computed from it there, and on CuPy nothing waits for the GPU
  (``error_if_nonfinite=True`` reads the norm back, as torch does, to decide whether
  to raise). Sparse gradients (:class:`~arrayopt.SparseGrad`) are coalesced first,
  which may wait.
* The norms are sums in the gradients' own precision (float32 gradients: a float32
  norm, as torch's), through the array library's ``sum`` and ``max``: the same bits
  on every machine for a given library. They may differ from torch's in the last
  bits, which sums in another order.

``norm_type=0`` follows torch to the letter: torch's "norm of the per-tensor norms"
with order 0 counts the gradients that have a nonzero entry (not the nonzero entries).

Example:
    >>> import numpy as np
    >>> import arrayopt
    >>> params = arrayopt.ParameterList([np.zeros(2), np.zeros(3)])
    >>> params.flat_grad = np.array([3.0, 4.0, 0.0, 0.0, 12.0])   # norm 13
    >>> total = arrayopt.utils.clip_grad_norm_(params, max_norm=1.0)
    >>> float(total), np.round(params.flat_grad, 4)        # now of norm 1 (less 1e-6 / 13)
    (13.0, array([0.2308, 0.3077, 0.    , 0.    , 0.9231]))

Reference:
    torch.nn.utils (torch 2.14): ``clip_grad_norm_``, ``clip_grad_value_``,
    ``get_total_norm``, ``clip_grads_with_norm_``.
"""

import math
import types
import warnings
from collections.abc import Iterable
from typing import Any

from arrayopt.backends import Backend, get_backend, is_array
from arrayopt.flat import FlatBuffer
from arrayopt.parameter import Parameter
from arrayopt.sparse import SparseGrad

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]


def get_total_norm(
    tensors: Any, norm_type: float | str = 2.0, error_if_nonfinite: bool = False, foreach: bool | None = None
) -> Any:
    r"""The norm of arrays taken together as one vector; ``torch.nn.utils.get_total_norm``.

    .. math::

        \Big(\sum_{\text{every entry } x \text{ of every array}} |x|^p\Big)^{1/p}
        \quad(\max|x| \text{ for } p = \infty,\ \min|x| \text{ for } p = -\infty)

    Args:
        tensors: an array, a :class:`~arrayopt.SparseGrad`, or an iterable of them
            (usually gradients); complex entries count by their modulus.
        norm_type: :math:`p`: a number, ``float("inf")`` or ``"inf"`` (any value
            ``float()`` accepts). Default: 2.
        error_if_nonfinite: raise RuntimeError if the norm is NaN or infinite (this
            reads the norm back to the host). Default: False.
        foreach: accepted for torch compatibility; changes nothing.

    Returns:
        A 0-d array of the first array's library and device, in the precision of the
        arrays (the widest, if they differ); ``0.0`` when there are no arrays.

    Example:
        >>> import numpy as np
        >>> float(get_total_norm([np.array([3.0]), np.array([[4.0]])]))
        5.0
        >>> float(get_total_norm(np.array([1.0, -7.0, 2.0]), norm_type="inf"))
        7.0
    """
    if is_array(tensors) or isinstance(tensors, SparseGrad):
        tensors = [tensors]
    else:
        tensors = list(tensors)
    for i, t in enumerate(tensors):
        if not (is_array(t) or isinstance(t, SparseGrad)):
            raise TypeError(f"get_total_norm: tensors[{i}] must be an array or a SparseGrad, got {type(t).__name__}")
    p = _norm_type(norm_type)
    if not tensors:
        return 0.0
    return _total(tensors, p, error_if_nonfinite)


def clip_grads_with_norm_(parameters: Any, max_norm: float, total_norm: Any, foreach: bool | None = None) -> None:
    r"""Scale the gradients by :math:`\min(1, \text{max\_norm} / (\text{total\_norm} + 10^{-6}))`, in place.

    ``torch.nn.utils.clip_grads_with_norm_``: :func:`clip_grad_norm_` with a norm
    computed beforehand (by :func:`get_total_norm`, say over several models).

    Args:
        parameters: Parameters: a list, a single Parameter, a ParameterList or
            ParameterDict, or an object with ``parameters()``. None gradients are skipped.
        max_norm: the largest norm the gradients keep.
        total_norm: the norm, a 0-d array (it stays on its device) or a number.
        foreach: accepted for torch compatibility; changes nothing.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.zeros(2))
        >>> w.grad = np.array([3.0, 4.0])
        >>> clip_grads_with_norm_([w], max_norm=2.5, total_norm=5.0)
        >>> np.round(w.grad, 6)
        array([1.5, 2. ])
    """
    params = _parameters(parameters, "clip_grads_with_norm_")
    max_norm = float(max_norm)
    pieces = _pieces(params, merge=True)
    if not pieces:
        return
    if not is_array(total_norm):
        first = _values(pieces[0])
        backend = get_backend(first)
        real = _real_dtype(backend, first)
        total_norm = backend.xp.asarray(float(total_norm), dtype=real, device=backend.device(first))
    _scale(pieces, max_norm, total_norm)


def clip_grad_norm_(
    parameters: Any,
    max_norm: float,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Any:
    r"""Clip the gradients' total norm to ``max_norm``, in place; ``torch.nn.utils.clip_grad_norm_``.

    .. math::

        g \leftarrow g \cdot \min\Big(1, \frac{\text{max\_norm}}{\|g\|_p + 10^{-6}}\Big)

    where :math:`\|g\|_p` is the norm of every gradient taken as one vector (see the
    module docstring). Equivalent to :func:`get_total_norm` of the gradients followed by
    :func:`clip_grads_with_norm_`.

    Args:
        parameters: Parameters: a list, a single Parameter, a ParameterList or
            ParameterDict, or an object with ``parameters()``. None gradients are skipped.
        max_norm: the largest norm the gradients keep.
        norm_type: :math:`p`: a number, ``float("inf")`` or ``"inf"``. Default: 2.
        error_if_nonfinite: raise RuntimeError (torch's message) if the norm is NaN or
            infinite, before any gradient changes; this reads the norm back to the
            host. Default: False (the gradients are then scaled by the non-finite
            coefficient, as torch does).
        foreach: accepted for torch compatibility; changes nothing.

    Returns:
        The total norm before clipping: a 0-d array on the gradients' library and
        device (0 in the first parameter's precision if no parameter has a gradient;
        ``0.0`` if there are no parameters).

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w, b = arrayopt.Parameter(np.zeros(2)), arrayopt.Parameter(np.zeros(1))
        >>> w.grad, b.grad = np.array([6.0, 0.0]), np.array([8.0])
        >>> float(clip_grad_norm_([w, b], max_norm=5.0))
        10.0
        >>> np.round(w.grad, 6), np.round(b.grad, 6)
        (array([3., 0.]), array([4.]))
    """
    is_generator = isinstance(parameters, types.GeneratorType)
    params = _parameters(parameters, "clip_grad_norm_")
    if is_generator and not params:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=2)
    max_norm = float(max_norm)
    p = _norm_type(norm_type)
    pieces = _pieces(params, merge=p != 0)
    if not pieces:
        if not params:
            return 0.0
        first = params[0].data
        backend = get_backend(first)
        return backend.xp.zeros((), dtype=_real_dtype(backend, first), device=backend.device(first))
    total = _total(pieces, p, error_if_nonfinite)
    _scale(pieces, max_norm, total)
    return total


def clip_grad_value_(parameters: Any, clip_value: float, foreach: bool | None = None) -> None:
    r"""Clip every gradient entry to :math:`[-c, c]`, in place; ``torch.nn.utils.clip_grad_value_``.

    .. math::

        x \leftarrow \min(\max(x, -c), c)

    (so a negative :math:`c` sets every entry to :math:`c`, and NaN stays NaN, as in
    torch). One elementwise pass per flat stretch of a ParameterList or ParameterDict.
    A sparse gradient is coalesced first (replaced by its coalesced form).

    Args:
        parameters: Parameters: a list, a single Parameter, a ParameterList or
            ParameterDict, or an object with ``parameters()``. None gradients are skipped.
        clip_value: :math:`c`.
        foreach: accepted for torch compatibility; changes nothing.

    Raises:
        RuntimeError: for complex gradients (as torch's ``clamp``), before any change.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.zeros(3))
        >>> w.grad = np.array([-5.0, 0.5, 2.0])
        >>> clip_grad_value_([w], 1.0)
        >>> w.grad
        array([-1. ,  0.5,  1. ])
    """
    params = _parameters(parameters, "clip_grad_value_")
    clip_value = float(clip_value)
    for p in params:
        grad = p.grad
        if grad is not None and get_backend(_values(grad)).is_complex(_values(grad)):
            raise RuntimeError(
                f"clip_grad_value_: {p._label()} has a complex gradient; clamp is not supported for complex types"
            )
    for p in params:
        if isinstance(p.grad, SparseGrad):
            p.grad = p.grad.coalesce()
    for piece in _pieces(params, merge=True):
        values = _values(piece)
        if math.prod(values.shape):
            get_backend(values).kernel(clip_value_rule)(values, clip_value)


def clip_value_rule(xp: Any, grad: Any, clip_value: float) -> None:
    r"""Clamp ``grad`` to :math:`[-c, c]` in place: :math:`x \leftarrow \min(\max(x, -c), c)`.

    The elementwise rule :func:`clip_grad_value_` runs (one pass, one kernel on CuPy).

    Args:
        xp: the array namespace.
        grad: the gradient (real), updated in place.
        clip_value: :math:`c`, a Python float.

    Example:
        >>> import numpy as np
        >>> g = np.array([-3.0, 0.25, 9.0])
        >>> clip_value_rule(np, g, 1.0)
        >>> g
        array([-1.  ,  0.25,  1.  ])
    """
    grad[...] = xp.minimum(xp.maximum(grad, -clip_value), clip_value)


# -- what the functions share ------------------------------------------------------------------


def _parameters(parameters: Any, caller: str) -> list[Parameter]:
    """The Parameters: a single one, an iterable, or an object with ``parameters()`` (ParameterDict)."""
    if isinstance(parameters, Parameter):
        return [parameters]
    if is_array(parameters):
        raise TypeError(
            f"{caller}: parameters must be Parameters (whose .grad is clipped), got an array; "
            "wrap it in arrayopt.Parameter"
        )
    method = getattr(parameters, "parameters", None)
    if callable(method):
        parameters = method()
    if not isinstance(parameters, Iterable):
        raise TypeError(f"{caller}: parameters must be an iterable of Parameters, got {type(parameters).__name__}")
    params = list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"{caller}: parameters[{i}] must be an arrayopt.Parameter, got {type(p).__name__}")
    return params


def _norm_type(norm_type: Any) -> float:
    try:
        p = float(norm_type)
    except (TypeError, ValueError):
        raise ValueError(f"norm_type must be a number or 'inf', got {norm_type!r}") from None
    if math.isnan(p):
        raise ValueError(f"norm_type must be a number or 'inf', got {norm_type!r}")
    return p


def _pieces(params: list[Parameter], merge: bool) -> list[Any]:
    """The gradients to reduce and scale: flat stretches of a buffer merged into one slice each.

    A Parameter listed more than once stays a piece of its own each time (as torch,
    whose norm then counts it twice, and which scales it twice).
    """
    counts: dict[int, int] = {}
    for p in params:
        counts[id(p)] = counts.get(id(p), 0) + 1
    pieces: list[Any] = []
    members: dict[FlatBuffer, list[int]] = {}
    for p in params:
        grad = p.grad
        if grad is None:
            continue
        flat = p._flat
        if merge and flat is not None and counts[id(p)] == 1:
            members.setdefault(flat[0], []).append(flat[1])
        else:
            pieces.append(grad)
    for buffer, indices in members.items():
        indices.sort()
        start = previous = indices[0]
        for index in [*indices[1:], None]:
            if index is not None and index == previous + 1:
                previous = index
                continue
            pieces.append(buffer.raw_grad[buffer.offsets[start] : buffer.offsets[previous + 1]])
            if index is not None:
                start = previous = index
    return pieces


def _values(piece: Any) -> Any:
    """A piece's entries: the array, or a SparseGrad's stored values."""
    return piece.values if isinstance(piece, SparseGrad) else piece


def _real_dtype(backend: Backend, array: Any) -> Any:
    if backend.is_complex(array):
        return backend.xp.real(backend.xp.zeros((), dtype=array.dtype, device=backend.device(array))).dtype
    return array.dtype


def _piece_norm(piece: Any, p: float) -> Any:
    """The piece's contribution: its sum of :math:`|x|^p`, its max or min of :math:`|x|`, or (p = 0) 0 or 1."""
    if isinstance(piece, SparseGrad):
        piece = piece.coalesce().values
    backend = get_backend(piece)
    xp = backend.xp
    real = _real_dtype(backend, piece)
    if math.prod(piece.shape) == 0:
        return None
    if p == 2:
        if backend.is_complex(piece):
            re, im = xp.real(piece), xp.imag(piece)
            return xp.sum(re * re + im * im)
        return xp.sum(piece * piece)
    magnitude = xp.abs(piece)
    if p == math.inf:
        return xp.max(magnitude)
    if p == -math.inf:
        return xp.min(magnitude)
    if p == 0:
        return xp.astype(xp.any(piece != 0), real)
    if p == 1:
        return xp.sum(magnitude)
    return xp.sum(magnitude**p)


def _total(pieces: list[Any], p: float, error_if_nonfinite: bool) -> Any:
    """Combine the pieces' contributions into the norm, on the first piece's library and device."""
    first = _values(pieces[0])
    backend = get_backend(first)
    xp = backend.xp
    parts = [part for part in (_piece_norm(piece, p) for piece in pieces) if part is not None]
    if not parts:
        total = xp.zeros((), dtype=_real_dtype(backend, first), device=backend.device(first))
    else:
        # combined one by one with 0-d arithmetic (promoting mixed precisions), on the device
        total = None
        for part in parts:
            source = get_backend(part)
            if source is not backend or source.device(part) != backend.device(first):
                part = backend.convert(part, first, cast=False)  # another library or device: one copy
            if total is None:
                total = part
            elif p == math.inf:
                total = xp.maximum(total, part)
            elif p == -math.inf:
                total = xp.minimum(total, part)
            else:
                total = total + part
        if p == 2:
            total = xp.sqrt(total)
        elif p not in (0, 1, math.inf, -math.inf):
            total = total ** (1.0 / p)
    if error_if_nonfinite and not bool(backend.to_numpy(xp.isfinite(total))):
        raise RuntimeError(
            f"The total norm of order {p} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    return total


def _scale(pieces: list[Any], max_norm: float, total: Any) -> None:
    """Multiply every piece in place by :math:`\\min(1, \\text{max\\_norm} / (\\text{total} + 10^{-6}))`."""
    source = get_backend(total)
    xp = source.xp
    one = xp.ones((), dtype=total.dtype, device=source.device(total))
    coefficient = xp.minimum(max_norm / (total + 1e-6), one)  # NaN stays NaN, as torch's clamp
    for piece in pieces:
        values = _values(piece)
        backend = get_backend(values)
        factor = coefficient
        if backend is not source or backend.device(values) != source.device(coefficient):
            factor = backend.convert(coefficient, values, cast=False)
        factor = backend.xp.astype(factor, _real_dtype(backend, values))
        values *= factor

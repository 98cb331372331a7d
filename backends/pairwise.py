"""Fixed-order dot products and vector updates for NumPy, over cache-sized blocks (L-BFGS's vector algebra).

``Backend.dot`` on NumPy is ``add.reduce(multiply(a, b))``: the products, then NumPy's
pairwise sum over them. That sum is a fixed tree (see :func:`pairwise_tree`): a run of
more than 128 elements is split at ``n // 2`` rounded down to a multiple of 8, the
halves are summed separately and then added; runs of at most 128 are summed with eight
interleaved partial sums; the whole sum starts from the identity 0. Evaluating the same
tree over blocks of at most :data:`BLOCK` elements (each block a node of the tree,
summed by NumPy itself, from -0.0 so that the block's own sum is kept exactly) gives
the same bits (tested against NumPy on every length class), without a product array
as long as the vectors: the products of one block stay in cache, and a pass over
``a`` and ``b`` is all the memory traffic, as in BLAS's ``dot``.

The same blocks carry fused updates: :func:`axpy_dot` updates ``y += alpha * x`` one
block at a time and takes the dot product of the new ``y`` with ``z`` while the block
is in cache, which is what each step of L-BFGS's two-loop recursion does. Every
operation is the NumPy ufunc the unfused expression would call, on the same elements,
so the results are the same bits as ``y += alpha * x; dot(z, y)``. It can write
``y + alpha * x`` to another array instead, and :func:`scale_dot` does the same for
``out = x * c``: L-BFGS forms its new pair (``g - g_prev`` with its norm, ``t d`` with
its product with it) and its scaled direction that way.

With numba, :func:`compiled` gives the same operations compiled into single passes
(:mod:`arrayopt.backends.pairwise_jit`: the same tree, the same bits), made where the
NumPy backend makes its rule kernels: in the caller's thread, or off the critical path
(:mod:`arrayopt.backends.background`), NumPy's blocks serving until they are ready.
"""

import functools
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy

from arrayopt.backends import background

__all__ = ["BLOCK", "axpy", "axpy_dot", "compiled", "dot", "max_abs", "pairwise_tree", "products", "scale_dot"]

#: Elements per block: the largest node of the sum's tree evaluated at once (512 KiB
#: of float64 products, the L2 cache of the project machines). Longer vectors are cut
#: into blocks of between ``BLOCK / 2`` and ``BLOCK`` elements.
BLOCK = 1 << 16

_add, _multiply = numpy.add, numpy.multiply
_local = threading.local()
_MISSING = object()


def pairwise_tree(lo: int, hi: int, leaf: Callable[[int, int], Any]) -> Any:
    """NumPy's pairwise sum of elements ``lo .. hi-1``, with ``leaf(a, b)`` summing nodes of at most BLOCK.

    ``leaf`` returns the exact pairwise sum of its node (a NumPy scalar of the
    vectors' dtype, so the additions here round in that dtype); nodes are visited
    left to right.
    """
    n = hi - lo
    if n <= BLOCK or n <= 128:  # NumPy sums up to 128 elements as one node
        return leaf(lo, hi)
    half = n // 2
    half -= half % 8
    return pairwise_tree(lo, lo + half, leaf) + pairwise_tree(lo + half, hi, leaf)


def _scratch(dtype: Any) -> Any:
    """A buffer for the largest node of the tree (BLOCK elements, and at least 128) of ``dtype``, one per thread."""
    buffers: dict[Any, Any] | None = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    size = max(BLOCK, 128)
    buffer = buffers.get(dtype)
    if buffer is None or buffer.shape[0] < size:
        buffer = buffers[dtype] = numpy.empty(size, dtype)
    return buffer


def _whole(node_sum: Any) -> Any:
    """The reduction's result from the tree's: NumPy starts a sum from the identity 0."""
    return node_sum.dtype.type(0) + node_sum


def dot(a: Any, b: Any, ops: Any = None) -> Any:
    """``add.reduce(multiply(a, b))`` of two 1-D arrays of one real dtype, the same bits, blocked.

    ``ops``: the compiled operations (:func:`compiled`), used if they take these arrays.
    """
    if ops is not None:
        try:
            return ops.dot(a, b)
        except TypeError:  # not compiled for these arrays (layout, writability): raised before anything ran
            pass
    n = a.shape[0]
    if n <= BLOCK:
        return _add.reduce(_multiply(a, b))
    scratch = _scratch(a.dtype)

    def leaf(lo: int, hi: int) -> Any:
        products = _multiply(a[lo:hi], b[lo:hi], out=scratch[: hi - lo])
        return _add.reduce(products, initial=-0.0)

    return _whole(pairwise_tree(0, n, leaf))


def axpy(y: Any, alpha: Any, x: Any, ops: Any = None) -> None:
    """``y += alpha * x`` in place (the product rounded, then the sum), blocked: no temporary as long as ``y``.

    ``y`` and ``x`` have one shape; C-contiguous ones of any shape are taken as 1-D.
    ``ops``: as for :func:`dot`.
    """
    if y.ndim != 1:
        if not (y.flags.c_contiguous and x.flags.c_contiguous) or y.dtype != x.dtype:
            y += alpha * x
            return
        y, x = y.reshape(-1), x.reshape(-1)
    if ops is not None and x.dtype == y.dtype:
        scalar = _scalar(alpha, y.dtype)
        if scalar is not None:
            try:
                ops.axpy(y, scalar, x)
                return
            except TypeError:
                pass
    n = y.shape[0]
    if n <= BLOCK:
        y += alpha * x
        return
    scratch = _scratch(y.dtype)
    for lo in range(0, n, BLOCK):
        hi = min(lo + BLOCK, n)
        part = y[lo:hi]
        _add(part, _multiply(x[lo:hi], alpha, out=scratch[: hi - lo]), out=part)


def axpy_dot(y: Any, alpha: Any, x: Any, z: Any, ops: Any = None, out: Any = None, scale: Any = None) -> Any:
    """``out = y + alpha * x`` (``out`` defaults to ``y``: in place), then ``dot(z, out)``: one pass, the same bits.

    ``out`` and ``z`` may be the same array (``dot(out, out)``). With ``scale``, ``out``
    is ``(y + alpha * x) * scale``, the sum rounded before the product. ``ops``: as for
    :func:`dot`.
    """
    if out is None:
        out = y
    if ops is not None and x.dtype == y.dtype == z.dtype == out.dtype:
        scalar = _scalar(alpha, y.dtype)
        factor = None if scale is None else _scalar(scale, y.dtype)
        if scalar is not None and (scale is None or factor is not None):
            try:
                return ops.axpy_dot(y, scalar, x, z, out, factor)
            except TypeError:
                pass
    n = y.shape[0]
    if n <= BLOCK:
        _add(y, alpha * x, out=out)
        if scale is not None:
            _multiply(out, scale, out=out)
        return _add.reduce(_multiply(z, out))
    scratch = _scratch(y.dtype)

    def leaf(lo: int, hi: int) -> Any:
        part, buffer = out[lo:hi], scratch[: hi - lo]
        _add(y[lo:hi], _multiply(x[lo:hi], alpha, out=buffer), out=part)
        if scale is not None:
            _multiply(part, scale, out=part)
        return _add.reduce(_multiply(z[lo:hi], part, out=buffer), initial=-0.0)

    return _whole(pairwise_tree(0, n, leaf))


def scale_dot(out: Any, x: Any, c: Any, z: Any, ops: Any = None) -> Any:
    """``out = x * c`` (``out`` may be ``x``), then ``dot(z, out)``: one pass over the blocks, the same bits.

    ``ops``: as for :func:`dot`.
    """
    if ops is not None and x.dtype == out.dtype == z.dtype:
        scalar = _scalar(c, x.dtype)
        if scalar is not None:
            try:
                return ops.scale_dot(out, x, scalar, z)
            except TypeError:
                pass
    n = x.shape[0]
    if n <= BLOCK:
        _multiply(x, c, out=out)
        return _add.reduce(_multiply(z, out))
    scratch = _scratch(x.dtype)

    def leaf(lo: int, hi: int) -> Any:
        part = out[lo:hi]
        _multiply(x[lo:hi], c, out=part)
        return _add.reduce(_multiply(z[lo:hi], part, out=scratch[: hi - lo]), initial=-0.0)

    return _whole(pairwise_tree(0, n, leaf))


def max_abs(x: Any, ops: Any = None) -> Any:
    """``max(abs(x))`` of a non-empty 1-D real array (NaN if it holds one), blocked: no temporary as long as ``x``.

    ``ops``: as for :func:`dot`.
    """
    if ops is not None:
        try:
            return ops.max_abs(x)
        except TypeError:
            pass
    n = x.shape[0]
    if n <= BLOCK:
        return numpy.max(numpy.abs(x))
    scratch = _scratch(x.dtype)
    result = None
    for lo in range(0, n, BLOCK):
        hi = min(lo + BLOCK, n)
        found = numpy.maximum.reduce(numpy.abs(x[lo:hi], out=scratch[: hi - lo]))
        result = found if result is None else numpy.maximum(result, found)
    return result


def products(rows: Any, vectors: Any, block: int, ops: Any = None) -> Any:
    """``Backend.products`` on NumPy: ``rows @ vectors.T`` (k, j), summed block by block in a fixed order.

    Each block of ``block`` columns: the (k, j, block) products, summed along the block by
    NumPy's pairwise sum; the blocks' sums added in column order. ``ops``: the compiled
    operations (:func:`compiled`), which take the whole blocks when ``block`` is 128
    times a power of two (their tree is then NumPy's, level by level); the last, partial
    block is NumPy's here.
    """
    k, j, n = rows.shape[0], vectors.shape[0], rows.shape[1]
    out = numpy.zeros((k, j), rows.dtype)
    done = 0
    leaves = block // 128
    if ops is not None and rows.dtype == vectors.dtype and block % 128 == 0 and leaves & (leaves - 1) == 0:
        try:
            done = ops.products(rows, vectors, block, out)
        except TypeError:  # not compiled for these arrays (layout): raised before anything ran
            done = 0
    for start in range(done, n, block):
        stop = min(start + block, n)
        # the products in C order, so that each (row, vector) pair's are contiguous and summed pairwise
        products = _multiply(rows[:, None, start:stop], vectors[None, :, start:stop], order="C")
        partial = _add.reduce(products, axis=-1)
        if start == 0:
            out[...] = partial
        else:
            out += partial
    return out


# -- compiled by numba -------------------------------------------------------------------

_REAL = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
#: dtype -> its compiled operations (``pairwise_jit.VectorKernels``), the pid of the
#: process making them in the background, or None (never: numba failed for it)
_made: dict[Any, Any] = {}


def compiled(dtype: Any, mode: "bool | str | None") -> Any:
    """The numba operations for ``dtype`` if they are ready, else None (and they are asked for).

    ``mode`` is the NumPy backend's numba setting: falsy (never), True (made here and
    now) or ``"background"`` (made by the background thread; None until then).
    """
    if not mode:
        return None
    entry = _made.get(dtype, _MISSING)
    if entry is not _MISSING and type(entry) is not int:
        return entry  # the operations, or None: never
    if dtype not in _REAL or entry == os.getpid():
        return None
    if mode is True:
        try:
            return _make(dtype, frozen=False)
        except Exception as exc:
            warnings.warn(f"arrayopt: numba could not compile the vector operations; using NumPy ({exc})", stacklevel=3)
            return None
    _made[dtype] = os.getpid()  # being made by this process (a forked child asks again)
    background.submit(functools.partial(_make, dtype, frozen=True))
    return None


def _make(dtype: Any, frozen: bool) -> Any:
    try:
        from arrayopt.backends import pairwise_jit

        _made[dtype] = made = pairwise_jit.VectorKernels.make(dtype, frozen)
    except BaseException:
        _made[dtype] = None
        raise
    return made


def _scalar(alpha: Any, dtype: Any) -> "float | None":
    """``alpha`` as the Python float a compiled operation takes, if that rounds as ``alpha * x`` does."""
    if type(alpha) is float or type(alpha) is int:
        return float(alpha)  # weak, as in NumPy: cast to the arrays' dtype
    if getattr(alpha, "dtype", None) == dtype and getattr(alpha, "shape", None) == ():
        return float(alpha)  # of the arrays' dtype: exact
    return None

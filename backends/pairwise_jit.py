"""The operations of :mod:`arrayopt.backends.pairwise` compiled by numba: one pass, the same bits.

Imported only when numba is used (``backends/pairwise.py`` asks for it). Each operation
is generated as Python source for one dtype and compiled like the rules
(:mod:`arrayopt.backends.jit`: NumPy's error model, no fastmath, so every product and
sum rounds once, as in NumPy, and nothing is fused into a multiply-add; the module is
cached on disk). The dot products walk NumPy's pairwise tree (runs of more than 128
elements halved at a multiple of 8; eight interleaved partial sums per run of at most
128; a run under 8 summed from -0.0; the whole added to 0), left to right, with an
explicit stack, and form each product as it is summed, so no array of products is
written; ``axpy_dot`` and ``scale_dot`` write each element of their result on its way into the sum. Results
are NumPy's to the bit (tested).
"""

import functools
from typing import Any

import numpy

from arrayopt.backends import jit

__all__ = ["VectorKernels"]

_OPTIONS = "cache=CACHE, fastmath=False, error_model='numpy', nogil=True, boundscheck=False"


def _node(name: str, args: str, element: str) -> list[str]:
    """``name(args, n)``: the sum of ``element(i)`` over ``0 .. n-1`` in NumPy's pairwise order.

    ``element`` is a template of statements ending in ``{out} = <value>`` for index
    ``{i}``. The tree is walked with an explicit stack (numba cannot cache recursive
    functions); its leaves, runs of at most 128, are summed by ``name_leaf``.
    """

    def value(out: str, i: str, indent: str) -> list[str]:
        return [f"{indent}{line}" for line in element.format(out=out, i=i).splitlines()]

    lines = [
        f"@numba.njit({_OPTIONS})",
        f"def {name}_leaf({args}, lo, n):",
        "    if n < 8:",
        "        res = NEG_ZERO",
        "        for i in range(lo, lo + n):",
        *value("term", "i", "            "),
        "            res += term",
        "        return res",
    ]
    for j in range(8):
        lines += value(f"r{j}", f"lo + {j}", "    ")
    lines += ["    i = lo + 8", "    stop = lo + n - n % 8", "    while i < stop:"]
    for j in range(8):
        lines += value(f"t{j}", f"i + {j}", "        ")
        lines.append(f"        r{j} += t{j}")
    lines += [
        "        i += 8",
        "    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))",
        "    end = lo + n",
        "    while i < end:",
        *value("term", "i", "        "),
        "        res += term",
        "        i += 1",
        "    return res",
        "",
        "",
        f"@numba.njit({_OPTIONS})",
        f"def {name}({args}, n):",
        "    if n <= 128:",
        f"        return {name}_leaf({args}, 0, n)",
        "    # nodes (start, length, next child to visit) and the sums of finished nodes",
        "    starts = numpy.empty(64, numpy.int64)",
        "    lengths = numpy.empty(64, numpy.int64)",
        "    visited = numpy.empty(64, numpy.int64)",
        "    sums = numpy.empty(64, T)",
        "    depth, done = 1, 0",
        "    starts[0], lengths[0], visited[0] = 0, n, 0",
        "    while depth:",
        "        top = depth - 1",
        "        lo, m = starts[top], lengths[top]",
        "        if m <= 128:",
        f"            sums[done] = {name}_leaf({args}, lo, m)",
        "            done += 1",
        "            depth -= 1",
        "            continue",
        "        half = m // 2",
        "        half -= half % 8",
        "        if visited[top] == 0:",
        "            visited[top] = 1",
        "            starts[depth], lengths[depth], visited[depth] = lo, half, 0",
        "            depth += 1",
        "        elif visited[top] == 1:",
        "            visited[top] = 2",
        "            starts[depth], lengths[depth], visited[depth] = lo + half, m - half, 0",
        "            depth += 1",
        "        else:",
        "            sums[done - 2] = sums[done - 2] + sums[done - 1]",
        "            done -= 1",
        "            depth -= 1",
        "    return sums[0]",
        "",
        "",
    ]
    return lines


# ``products``: ``r @ v.T`` over whole blocks of ``block`` columns (``block`` = 128 * 2**p, so
# the pairwise tree of a block is balanced: leaves of 128, then pairs of nodes added level by
# level, which is the order of NumPy's recursion). Each leaf of 128 columns of the rows is
# copied into a (128, K) tile, so that the eight interleaved partial sums of a leaf are
# vectors over the K rows; every product and sum is still one rounding of NumPy's.
_PRODUCTS = [
    f"@numba.njit({_OPTIONS})",
    "def products(r, v, block, full, out):",
    "    K, J = r.shape[0], v.shape[0]",
    "    leaves = block // 128",
    "    tile = numpy.empty((128, K), T)",
    "    acc = numpy.empty((J, 8, K), T)",
    "    sums = numpy.empty((J, leaves, K), T)",
    "    for start in range(0, full, block):",
    "        for leaf in range(leaves):",
    "            base = start + leaf * 128",
    "            for k in range(K):",
    "                for i in range(128):",
    "                    tile[i, k] = r[k, base + i]",
    "            for q in range(8):",
    "                for j in range(J):",
    "                    w = v[j, base + q]",
    "                    for k in range(K):",
    "                        acc[j, q, k] = tile[q, k] * w",
    "            for i in range(8, 128, 8):",
    "                for q in range(8):",
    "                    for j in range(J):",
    "                        w = v[j, base + i + q]",
    "                        for k in range(K):",
    "                            acc[j, q, k] += tile[i + q, k] * w",
    "            for j in range(J):",
    "                for k in range(K):",
    "                    sums[j, leaf, k] = ((acc[j, 0, k] + acc[j, 1, k]) + (acc[j, 2, k] + acc[j, 3, k])) + (",
    "                        (acc[j, 4, k] + acc[j, 5, k]) + (acc[j, 6, k] + acc[j, 7, k])",
    "                    )",
    "        width = leaves",
    "        while width > 1:",
    "            width //= 2",
    "            for j in range(J):",
    "                for i in range(width):",
    "                    for k in range(K):",
    "                        sums[j, i, k] = sums[j, 2 * i, k] + sums[j, 2 * i + 1, k]",
    "        for j in range(J):",
    "            for k in range(K):",
    "                s = ZERO + sums[j, 0, k]",
    "                if start == 0:",
    "                    out[k, j] = s",
    "                else:",
    "                    out[k, j] = out[k, j] + s",
    "",
    "",
]


def source(dtype: Any) -> str:
    """The module for one real dtype: ``dot``, ``axpy``, ``axpy_dot`` (in place and into another array), ``scale_dot``,
    ``products`` and ``max_abs``."""
    dtype = numpy.dtype(dtype)
    text = [
        f"# pairwise vector operations for {dtype.name}: generated by arrayopt.backends.pairwise_jit.",
        "# NumPy's error model and no fastmath: each product and sum rounds once, as in NumPy.",
        "import numba",
        "import numpy",
        "",
        "CACHE = False",
        f"T = numpy.{dtype.name}",
        "NEG_ZERO = T(-0.0)",
        "ZERO = T(0.0)",
        "",
        "",
        *_node("dot_tree", "a, b", "{out} = a[{i}] * b[{i}]"),
        *_node("axpy_dot_tree", "y, c, x, z", "v = y[{i}] + c * x[{i}]\ny[{i}] = v\n{out} = z[{i}] * v"),
        # the same into another array (a kernel of its own: the in-place one runs faster
        # where the compiler knows that the array it writes is the one it reads)
        *_node("axpy_into_dot_tree", "y, c, x, z, out", "v = y[{i}] + c * x[{i}]\nout[{i}] = v\n{out} = z[{i}] * v"),
        *_node("axpy_scale_dot_tree", "y, c, x, h, z", "v = (y[{i}] + c * x[{i}]) * h\ny[{i}] = v\n{out} = z[{i}] * v"),
        *_node("scale_dot_tree", "out, x, c, z", "v = x[{i}] * c\nout[{i}] = v\n{out} = z[{i}] * v"),
        f"@numba.njit({_OPTIONS})",
        "def dot(a, b):",
        "    return ZERO + dot_tree(a, b, a.shape[0])",
        "",
        "",
        f"@numba.njit({_OPTIONS})",
        "def axpy_dot(y, alpha, x, z):",
        "    return ZERO + axpy_dot_tree(y, T(alpha), x, z, y.shape[0])",
        "",
        "",
        f"@numba.njit({_OPTIONS})",
        "def axpy_into_dot(y, alpha, x, z, out):",
        "    return ZERO + axpy_into_dot_tree(y, T(alpha), x, z, out, y.shape[0])",
        "",
        "",
        f"@numba.njit({_OPTIONS})",
        "def axpy_scale_dot(y, alpha, x, scale, z):",
        "    return ZERO + axpy_scale_dot_tree(y, T(alpha), x, T(scale), z, y.shape[0])",
        "",
        "",
        f"@numba.njit({_OPTIONS})",
        "def scale_dot(out, x, c, z):",
        "    return ZERO + scale_dot_tree(out, x, T(c), z, x.shape[0])",
        "",
        "",
        f"@numba.njit({_OPTIONS})",
        "def axpy(y, alpha, x):",
        "    c = T(alpha)",
        "    for i in range(y.shape[0]):",
        "        y[i] = y[i] + c * x[i]",
        "",
        "",
        *_PRODUCTS,
        f"@numba.njit({_OPTIONS})",
        "def max_abs(x):",
        "    m = abs(x[0])",
        "    if m != m:",
        "        return m",
        "    for i in range(1, x.shape[0]):",
        "        v = abs(x[i])",
        "        if not v <= m:",
        "            if v != v:",
        "                return v",
        "            m = v",
        "    return m",
    ]
    return "\n".join(text) + "\n"


class VectorKernels:
    """The compiled operations for one dtype, with the calling conventions of ``backends/pairwise.py``.

    Made (compiled or loaded from the cache, and run once on small arrays) by
    :meth:`make`; frozen when made in the background: a call that would compile
    (arrays of another layout, read-only ones) raises TypeError before any write.
    """

    def __init__(self, dtype: Any, frozen: bool) -> None:
        self.dtype = numpy.dtype(dtype)
        self.scalar = self.dtype.type
        self.module, _ = jit._load(source(self.dtype), f"pairwise-{self.dtype.name}")
        self._dot = self.module.dot
        self._axpy_dot = self.module.axpy_dot
        self._axpy_into_dot = self.module.axpy_into_dot
        self._axpy_scale_dot = self.module.axpy_scale_dot
        self._scale_dot = self.module.scale_dot
        self._axpy = self.module.axpy
        self._max_abs = self.module.max_abs
        self._products = self.module.products
        if frozen:
            x, y, z = (numpy.ones(3, self.dtype) for _ in range(3))
            self._dot(x, y)
            self._axpy_dot(y, 0.5, x, z)
            self._axpy_into_dot(y, 0.5, x, z, x)
            self._axpy_scale_dot(y, 0.5, x, 0.5, z)
            self._scale_dot(y, x, 0.5, z)
            self._axpy(y, 0.5, x)
            self._max_abs(x)
            rows = numpy.ones((2, 256), self.dtype)
            self._products(rows, rows[:1], 128, 256, numpy.empty((2, 1), self.dtype))
            for dispatcher in self.dispatchers():
                dispatcher.disable_compile(True)

    @classmethod
    @functools.cache
    def make(cls, dtype: Any, frozen: bool) -> "VectorKernels":
        return cls(dtype, frozen)

    def dot(self, a: Any, b: Any) -> Any:
        return self.scalar(self._dot(a, b))

    def dispatchers(self) -> tuple[Any, ...]:
        """Every compiled function of the module."""
        return (
            self._dot,
            self._axpy_dot,
            self._axpy_into_dot,
            self._axpy_scale_dot,
            self._scale_dot,
            self._axpy,
            self._max_abs,
            self._products,
        )

    def axpy_dot(self, y: Any, alpha: float, x: Any, z: Any, out: Any, scale: float | None = None) -> Any:
        if scale is not None:
            if out is not y:
                raise TypeError("a scaled axpy_dot is compiled in place only")
            return self.scalar(self._axpy_scale_dot(y, alpha, x, scale, z))
        if out is y:
            return self.scalar(self._axpy_dot(y, alpha, x, z))
        return self.scalar(self._axpy_into_dot(y, alpha, x, z, out))

    def scale_dot(self, out: Any, x: Any, c: float, z: Any) -> Any:
        return self.scalar(self._scale_dot(out, x, c, z))

    def axpy(self, y: Any, alpha: float, x: Any) -> None:
        self._axpy(y, alpha, x)

    def max_abs(self, x: Any) -> Any:
        return self.scalar(self._max_abs(x))

    def products(self, rows: Any, vectors: Any, block: int, out: Any) -> int:
        """``rows @ vectors.T`` over the whole blocks of ``block`` columns into ``out``; the columns done."""
        full: int = rows.shape[1] - rows.shape[1] % block
        if full:
            self._products(rows, vectors, block, full, out)
        return full

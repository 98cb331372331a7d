"""Test problems for LBFGS and minimize: loss and gradient in array-API code.

Each problem computes its loss and gradients with the namespace of the arrays it is
given, so the same numbers come out for NumPy, array-api-strict and CuPy, and for
torch (whose closure converts to NumPy and back): a parity test then compares the
optimizers, not two implementations of the loss.

The losses and gradients give the same bits on every CPU, BLAS kernel and thread
count, so that a trajectory recorded on one machine (the golden file) is the
trajectory on every other: they use only correctly rounded elementwise operations
(``+ - * /``, ``sqrt``, each rounded once: products and sums are separate operations,
complex products are spelled out in real arithmetic) and sums in a fixed order
(``xp.sum``, NumPy's pairwise summation). Never ``@`` (BLAS: the result depends on the
kernel OpenBLAS picks for the CPU) and never ``exp`` or ``log`` (NumPy's AVX-512 and
AVX2 versions differ in the last bit).

A problem is ``init(dtype) -> list of NumPy arrays`` (the starting parameters) and
``loss_and_grad(xp, arrays) -> (loss 0-d array, list of gradient arrays)``.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Problem:
    name: str
    sizes: tuple[tuple[int, ...], ...]

    def init(self, dtype: str) -> list[np.ndarray]:
        rng = np.random.default_rng(_seed(self.name))
        complex_ = dtype.startswith("complex")
        out = []
        for shape in self.sizes:
            if self.name.startswith("rosenbrock"):
                x = np.resize(np.array([-1.2, 1.0]), shape) + 0.1 * rng.standard_normal(shape)
            else:
                x = 0.5 * rng.standard_normal(shape)
            if complex_:
                x = x + 0.5j * rng.standard_normal(shape)
            out.append(np.asarray(x, dtype=dtype))
        return out

    def loss_and_grad(self, xp: Any, arrays: list[Any]) -> tuple[Any, list[Any]]:
        kind = self.name.split("-")[0]
        return _LOSSES[kind](self, xp, arrays)

    def data(self, xp: Any, dtype: Any) -> dict[str, Any]:
        """The problem's fixed data (matrices, labels), as arrays of ``xp`` in ``dtype``."""
        rng = np.random.default_rng(_seed(self.name) + 1)
        if self.name.startswith("quadratic"):
            n = self.sizes[0][0]
            q = rng.standard_normal((n, n))
            a = _gram(q) / n + 0.1 * np.eye(n)
            return {"A": xp.asarray(a, dtype=dtype), "b": xp.asarray(rng.standard_normal(n), dtype=dtype)}
        if self.name.startswith("classify"):
            (features,) = self.sizes[0]
            samples = 200
            x = rng.standard_normal((samples, features))
            w_true = rng.standard_normal(features)
            labels = np.where(_matvec(np, x, w_true) + 0.3 * rng.standard_normal(samples) > 0, 1.0, -1.0)
            return {"X": xp.asarray(x, dtype=dtype), "y": xp.asarray(labels, dtype=dtype)}
        if self.name.startswith("splitquad"):
            n = sum(int(np.prod(shape)) for shape in self.sizes[:-1])
            q = rng.standard_normal((n, n))
            a = _gram(q) / n + 0.2 * np.eye(n)
            return {"A": xp.asarray(a, dtype=dtype), "b": xp.asarray(rng.standard_normal(n), dtype=dtype)}
        if self.name.startswith("complexls"):
            n = self.sizes[0][0]
            a = rng.standard_normal((2 * n, n)) + 1j * rng.standard_normal((2 * n, n))
            c = rng.standard_normal(2 * n) + 1j * rng.standard_normal(2 * n)
            return {"A": a, "c": c}
        return {}


def _gram(q: np.ndarray) -> np.ndarray:
    """``q.T @ q``, summed over the rows of ``q`` in order, not by BLAS."""
    return np.sum(q[:, :, None] * q[:, None, :], axis=0)


def _seed(name: str) -> int:
    return sum(ord(ch) * 31**i for i, ch in enumerate(name)) % (2**31)


def _rosenbrock(problem: Problem, xp: Any, arrays: list[Any]) -> tuple[Any, list[Any]]:
    # the chained Rosenbrock function of scipy.optimize.rosen
    (x,) = arrays
    head, tail = x[:-1], x[1:]
    r = tail - head * head
    loss = xp.sum(100.0 * r * r + (1.0 - head) * (1.0 - head))
    zero = xp.zeros((1,), dtype=x.dtype)
    grad = xp.concat([-400.0 * head * r - 2.0 * (1.0 - head), zero]) + xp.concat([zero, 200.0 * r])
    return loss, [grad]


def _matvec(xp: Any, a: Any, x: Any) -> Any:
    """``a @ x`` for a matrix ``a`` and a vector ``x``: each row's products summed by ``xp.sum``, not BLAS."""
    return xp.sum(a * x, axis=1)


def _vecmat(xp: Any, x: Any, a: Any) -> Any:
    """``x @ a`` for a vector ``x`` and a matrix ``a``, summed row after row by ``xp.sum``, not BLAS."""
    return xp.sum(x[:, None] * a, axis=0)


def _quadratic(problem: Problem, xp: Any, arrays: list[Any]) -> tuple[Any, list[Any]]:
    (x,) = arrays
    data = problem.data(xp, x.dtype)
    ax = _matvec(xp, data["A"], x)
    loss = 0.5 * xp.sum(x * ax) - xp.sum(data["b"] * x)
    return loss, [ax - data["b"]]


def _classify(problem: Problem, xp: Any, arrays: list[Any]) -> tuple[Any, list[Any]]:
    # an L2-regularised linear classifier (a weight vector and a 0-d bias) with the
    # smooth, convex margin loss sqrt(1 + m^2) - m (about -2m for m << 0, 0 for m >> 0):
    # logistic regression's shape, with a square root where it needs exp and log
    w, bias = arrays
    data = problem.data(xp, w.dtype)
    x, y = data["X"], data["y"]
    margin = y * (_matvec(xp, x, w) + bias)
    samples = x.shape[0]
    root = xp.sqrt(1.0 + margin * margin)
    loss = xp.sum(root - margin) / samples + 0.05 * xp.sum(w * w)
    coef = y * (margin / root - 1.0) / samples  # d loss / d (x w + b)
    grad_w = _vecmat(xp, coef, x) + 0.1 * w
    grad_b = xp.sum(coef)
    return loss, [grad_w, grad_b]


def _split_quadratic(problem: Problem, xp: Any, arrays: list[Any]) -> tuple[Any, list[Any]]:
    # a quadratic over several parameters of different shapes (a 0-d and an empty one
    # too); the last parameter takes no part and its gradient stays None (zeros)
    used = arrays[:-1]
    x = xp.concat([xp.reshape(a, (-1,)) for a in used])
    data = problem.data(xp, x.dtype)
    ax = _matvec(xp, data["A"], x)
    loss = 0.5 * xp.sum(x * ax) - xp.sum(data["b"] * x)
    flat = ax - data["b"]
    grads: list[Any] = []
    offset = 0
    for a in used:
        size = int(np.prod(a.shape))
        grads.append(xp.reshape(flat[offset : offset + size], a.shape))
        offset += size
    return loss, [*grads, None]


def _complex_least_squares(problem: Problem, xp: Any, arrays: list[Any]) -> tuple[Any, list[Any]]:
    # |A z - c|^2 over complex z; torch's gradient convention: d/dRe + i d/dIm, that is
    # 2 conj(A)^T (A z - c), in real arithmetic (NumPy's complex product may fuse a
    # multiply-add on one CPU and not on another)
    (z,) = arrays
    data = problem.data(xp, None)
    real = xp.real(z).dtype
    ar, ai = xp.asarray(data["A"].real, dtype=real), xp.asarray(data["A"].imag, dtype=real)
    cr, ci = xp.asarray(data["c"].real, dtype=real), xp.asarray(data["c"].imag, dtype=real)
    zr, zi = xp.real(z), xp.imag(z)
    rr = _matvec(xp, ar, zr) - _matvec(xp, ai, zi) - cr
    ri = _matvec(xp, ar, zi) + _matvec(xp, ai, zr) - ci
    loss = xp.sum(rr * rr + ri * ri)
    grad_r = 2.0 * (_vecmat(xp, rr, ar) + _vecmat(xp, ri, ai))
    grad_i = 2.0 * (_vecmat(xp, ri, ar) - _vecmat(xp, rr, ai))
    grad = xp.astype(grad_r, z.dtype) + xp.astype(grad_i, z.dtype) * 1j
    return loss, [grad]


_LOSSES = {
    "rosenbrock": _rosenbrock,
    "quadratic": _quadratic,
    "classify": _classify,
    "splitquad": _split_quadratic,
    "complexls": _complex_least_squares,
}

PROBLEMS = {
    p.name: p
    for p in [
        Problem("rosenbrock-2", ((2,),)),
        Problem("rosenbrock-10", ((10,),)),
        Problem("rosenbrock-1000", ((1000,),)),
        Problem("quadratic-20", ((20,),)),
        Problem("classify-8", ((8,), ())),
        Problem("splitquad-18", ((3, 4), (5,), (), (2, 0), (3,))),
        Problem("complexls-6", ((6,),)),
    ]
}

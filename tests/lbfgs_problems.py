"""Test problems for LBFGS and minimize: loss and gradient in array-API code.

Each problem computes its loss and gradients with the namespace of the arrays it is
given, so the same numbers come out for NumPy, array-api-strict and CuPy, and for
torch (whose closure converts to NumPy and back): a parity test then compares the
optimizers, not two implementations of the loss. Reductions are sums in a fixed
order (``xp.sum``), so both sides see bit-identical losses at identical parameters.

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
            a = q.T @ q / n + 0.1 * np.eye(n)
            return {"A": xp.asarray(a, dtype=dtype), "b": xp.asarray(rng.standard_normal(n), dtype=dtype)}
        if self.name.startswith("logistic"):
            (features,) = self.sizes[0]
            samples = 200
            x = rng.standard_normal((samples, features))
            w_true = rng.standard_normal(features)
            labels = np.where(x @ w_true + 0.3 * rng.standard_normal(samples) > 0, 1.0, -1.0)
            return {"X": xp.asarray(x, dtype=dtype), "y": xp.asarray(labels, dtype=dtype)}
        if self.name.startswith("splitquad"):
            n = sum(int(np.prod(shape)) for shape in self.sizes[:-1])
            q = rng.standard_normal((n, n))
            a = q.T @ q / n + 0.2 * np.eye(n)
            return {"A": xp.asarray(a, dtype=dtype), "b": xp.asarray(rng.standard_normal(n), dtype=dtype)}
        if self.name.startswith("complexls"):
            n = self.sizes[0][0]
            a = rng.standard_normal((2 * n, n)) + 1j * rng.standard_normal((2 * n, n))
            c = rng.standard_normal(2 * n) + 1j * rng.standard_normal(2 * n)
            return {"A": a, "c": c}
        return {}


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


def _quadratic(problem: Problem, xp: Any, arrays: list[Any]) -> tuple[Any, list[Any]]:
    (x,) = arrays
    data = problem.data(xp, x.dtype)
    ax = data["A"] @ x
    loss = 0.5 * xp.sum(x * ax) - xp.sum(data["b"] * x)
    return loss, [ax - data["b"]]


def _logistic(problem: Problem, xp: Any, arrays: list[Any]) -> tuple[Any, list[Any]]:
    # L2-regularised logistic regression with a weight vector and a 0-d bias
    w, bias = arrays
    data = problem.data(xp, w.dtype)
    x, y = data["X"], data["y"]
    margin = y * (x @ w + bias)
    samples = x.shape[0]
    # log(1 + exp(-m)) without overflow
    loss = xp.sum(xp.log1p(xp.exp(-xp.abs(margin))) + xp.maximum(-margin, 0.0)) / samples + 0.05 * xp.sum(w * w)
    sigma = 1.0 / (1.0 + xp.exp(margin))  # d loss / d margin = -sigma
    coef = -(y * sigma) / samples
    grad_w = coef @ x + 0.1 * w
    grad_b = xp.sum(coef)
    return loss, [grad_w, grad_b]


def _split_quadratic(problem: Problem, xp: Any, arrays: list[Any]) -> tuple[Any, list[Any]]:
    # a quadratic over several parameters of different shapes (a 0-d and an empty one
    # too); the last parameter takes no part and its gradient stays None (zeros)
    used = arrays[:-1]
    x = xp.concat([xp.reshape(a, (-1,)) for a in used])
    data = problem.data(xp, x.dtype)
    ax = data["A"] @ x
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
    # |A z - c|^2 over complex z; torch's gradient convention: d/dRe + i d/dIm
    (z,) = arrays
    data = problem.data(xp, None)
    a = xp.asarray(data["A"], dtype=z.dtype)
    c = xp.asarray(data["c"], dtype=z.dtype)
    r = a @ z - c
    loss = xp.sum(xp.real(r) * xp.real(r) + xp.imag(r) * xp.imag(r))
    grad = 2.0 * (xp.conj(a).T @ r)
    return loss, [grad]


_LOSSES = {
    "rosenbrock": _rosenbrock,
    "quadratic": _quadratic,
    "logistic": _logistic,
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
        Problem("logistic-8", ((8,), ())),
        Problem("splitquad-18", ((3, 4), (5,), (), (2, 0), (3,))),
        Problem("complexls-6", ((6,),)),
    ]
}

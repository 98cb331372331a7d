"""Model families for the batched-fitting tests, and SciPy run problem by problem as the reference.

Each :class:`Family` is a model ``f(xp, t, p)`` with p of shape (B, n) (any array
namespace), its analytic Jacobian, sample points, a way to draw true parameters and
starting points near them, and bounds of which some bind at the solution for some draws.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np


def gaussian(xp, t, p):
    a, mu, s, c = (p[:, j : j + 1] for j in range(4))
    z = (t - mu) / s
    return a * xp.exp(-0.5 * z * z) + c


def gaussian_jac(xp, t, p):
    a, mu, s, _ = (p[:, j : j + 1] for j in range(4))
    z = (t - mu) / s
    e = xp.exp(-0.5 * z * z)
    return xp.stack([e, a * e * z / s, a * e * z * z / s, xp.ones_like(e)], axis=-1)


def decay(xp, t, p):
    a, k, c = (p[:, j : j + 1] for j in range(3))
    return a * xp.exp(-k * t) + c


def decay_jac(xp, t, p):
    a, k, _ = (p[:, j : j + 1] for j in range(3))
    e = xp.exp(-k * t)
    return xp.stack([e, -a * t * e, xp.ones_like(e)], axis=-1)


def hill(xp, x, p):
    top, K, h = (p[:, j : j + 1] for j in range(3))
    return top / (1 + xp.pow(K / x, h))


def hill_jac(xp, x, p):
    top, K, h = (p[:, j : j + 1] for j in range(3))
    u = 1 / (1 + xp.pow(K / x, h))
    w = top * u * (1 - u)
    return xp.stack([u, -w * h / K, w * xp.log(x / K)], axis=-1)


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    model: Callable[..., Any]
    jac: Callable[..., Any]
    t: np.ndarray
    low: tuple[float, ...]  # true parameters are drawn uniformly in [low, high]
    high: tuple[float, ...]
    lb: tuple[float, ...]  # bounds for the bounded runs; some bind for some draws
    ub: tuple[float, ...]
    noise: float

    @property
    def n(self):
        return len(self.low)

    def draw(self, count, seed=0, dtype=np.float64):
        """(truth, p0, y) for ``count`` problems, as NumPy arrays."""
        rng = np.random.default_rng(seed)
        truth = rng.uniform(self.low, self.high, (count, self.n))
        p0 = truth * rng.uniform(0.85, 1.15, truth.shape)
        y = gaussian_noise(self.model(np, self.t, truth), self.noise, rng)
        return truth.astype(dtype), p0.astype(dtype), y.astype(dtype)

    def start_in_bounds(self, p0):
        return np.clip(p0, self.lb, self.ub)

    def residual(self, y):
        """Residuals for one problem, as SciPy wants them."""
        return lambda q: self.model(np, self.t, q[None, :])[0] - y

    def residual_jac(self):
        return lambda q: self.jac(np, self.t, q[None, :])[0]


def gaussian_noise(values, scale, rng):
    return values + scale * rng.standard_normal(values.shape)


FAMILIES = [
    Family(
        "gaussian",
        gaussian,
        gaussian_jac,
        np.linspace(0.0, 10.0, 30),
        (1.0, 3.0, 0.6, 0.0),
        (5.0, 7.0, 1.5, 0.5),
        (0.0, 0.0, 0.1, -1.0),
        (10.0, 10.0, 5.0, 0.3),
        0.01,
    ),
    Family(
        "decay",
        decay,
        decay_jac,
        np.linspace(0.0, 5.0, 25),
        (1.0, 0.3, -0.2),
        (3.0, 2.0, 0.2),
        (0.0, 0.0, 0.0),
        (5.0, 3.0, 1.0),
        0.01,
    ),
    Family(
        "hill",
        hill,
        hill_jac,
        np.logspace(-2.0, 2.0, 20),
        (0.8, 0.1, 0.5),
        (1.2, 10.0, 3.0),
        (0.0, 0.01, 0.1),
        (1.1, 100.0, 2.5),
        0.01,
    ),
]

BY_NAME = {family.name: family for family in FAMILIES}


def scipy_least_squares(family, y, p0, method, bounds=(-np.inf, np.inf), **options):
    """SciPy's least_squares on each problem in turn (analytic Jacobian): a list of results."""
    from scipy.optimize import least_squares

    return [
        least_squares(family.residual(y[b]), p0[b], jac=family.residual_jac(), method=method, bounds=bounds, **options)
        for b in range(y.shape[0])
    ]


def to_numpy(array):
    """Host copy of an array of any namespace (CuPy refuses ``np.asarray``: its backend copies it)."""
    from arrayopt.backends import get_backend, is_array

    if is_array(array) and not isinstance(array, np.ndarray):
        return np.asarray(get_backend(array).to_numpy(array))
    return np.asarray(array)

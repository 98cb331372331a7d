"""The strong-Wolfe line search: its accepted steps satisfy the conditions, as SciPy tests its own.

The families follow scipy/optimize/tests/test_linesearch.py: scalar functions with
phi'(0) < 0, and n-D functions restricted to random descent directions. Then the
exits that do not satisfy the conditions (``max_ls`` spent, bracket too narrow),
the zoom's safeguard, the interpolation itself, and torch's ``_strong_wolfe`` step
for step.
"""

import math

import numpy as np
import pytest

import arrayopt.line_search as ls
from arrayopt.line_search import cubic_interpolate, strong_wolfe

SCALAR_FUNCTIONS = {
    # SciPy's three
    "quartic": (lambda s: -s - s**3 + s**4, lambda s: -1 - 3 * s**2 + 4 * s**3),
    "exp": (lambda s: math.exp(-4 * s) + s**2, lambda s: -4 * math.exp(-4 * s) + 2 * s),
    "sin": (lambda s: -math.sin(10 * s), lambda s: -10 * math.cos(10 * s)),
    # and a few more shapes: exact quadratic, steep narrow valley, barrier, far flat minimum
    "quadratic": (lambda s: (s - 2) ** 2, lambda s: 2 * (s - 2)),
    "steep": (lambda s: 1e4 * (s - 0.01) ** 2, lambda s: 2e4 * (s - 0.01)),
    "log": (lambda s: -math.log(s + 0.1) + s, lambda s: -1 / (s + 0.1) + 1),
    "cosh": (lambda s: math.cosh(3 * (s - 1)), lambda s: 3 * math.sinh(3 * (s - 1))),
    "far": (lambda s: -math.atan(s - 50), lambda s: -1 / (1 + (s - 50) ** 2)),
}


def assert_wolfe(t, phi, derphi, c1=1e-4, c2=0.9, msg=""):
    phi0, derphi0 = phi(0.0), derphi(0.0)
    assert phi(t) <= phi0 + c1 * t * derphi0, f"sufficient decrease fails at t={t}: {msg}"
    assert abs(derphi(t)) <= c2 * abs(derphi0), f"curvature fails at t={t}: {msg}"


@pytest.mark.parametrize("name", sorted(SCALAR_FUNCTIONS))
@pytest.mark.parametrize("t0", [1e-3, 0.1, 1.0, 10.0])
@pytest.mark.parametrize(("c1", "c2"), [(1e-4, 0.9), (1e-4, 0.1), (0.1, 0.5)])
def test_scalar_functions_accept_a_strong_wolfe_step(name, t0, c1, c2):
    phi, derphi = SCALAR_FUNCTIONS[name]
    calls = []

    def line(t):
        calls.append(t)
        return phi(t), derphi(t)

    result = strong_wolfe(line, t0, phi(0.0), derphi(0.0), c1=c1, c2=c2)
    assert result.converged
    assert result.evals == len(calls)
    assert result.f == phi(result.t) and result.slope == derphi(result.t)
    assert_wolfe(result.t, phi, derphi, c1, c2, name)


def _line_functions():
    rng = np.random.default_rng(1231892908)
    a = rng.standard_normal((20, 20))
    return {
        "dot": (lambda x: float(x @ x), lambda x: 2 * x),
        "quadratic": (lambda x: float(x @ a @ x) + 1.0, lambda x: (a + a.T) @ x),
    }


def _line_cases():
    rng = np.random.default_rng(2231892908)
    cases = []
    for name, (_, fprime) in _line_functions().items():
        while sum(c[0] == name for c in cases) < 9:
            x, p = rng.standard_normal(20), rng.standard_normal(20)
            if p @ fprime(x) < 0:  # a descent direction
                cases.append((name, x, p))
    return cases


def test_line_functions_accept_a_strong_wolfe_step():
    # As SciPy's test: x^T A x with a random (indefinite) A is unbounded below along
    # some directions; there the search can only extrapolate until max_ls.
    functions = _line_functions()
    checked = 0
    for name, x, p in _line_cases():
        f, fprime = functions[name]

        def phi(s, f=f, x=x, p=p):
            return f(x + s * p)

        def derphi(s, fprime=fprime, x=x, p=p):
            return float(fprime(x + s * p) @ p)

        def line(s, phi=phi, derphi=derphi, fprime=fprime, x=x, p=p):
            return phi(s), derphi(s), fprime(x + s * p)

        result = strong_wolfe(line, 1.0, phi(0.0), derphi(0.0))
        np.testing.assert_array_equal(result.payload, fprime(x + result.t * p))  # the gradient at the step
        if result.converged:
            checked += 1
            assert_wolfe(result.t, phi, derphi, msg=name)
        else:
            assert result.evals == 26 and result.f < phi(0.0) - 1e6, name  # unbounded: still going down
    assert checked > 9


def test_max_ls_spent_extrapolating_an_unbounded_line():
    # phi(t) = -t: the cubic degenerates (a zero divisor: IEEE inf, clamped to 10 t)
    steps = []

    def line(t):
        steps.append(t)
        return -t, -1.0

    result = strong_wolfe(line, 1.0, 0.0, -1.0, max_ls=5)
    assert not result.converged
    assert result.evals == 6 == len(steps)
    assert steps == [1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0]
    assert result.t == 100000.0 and result.f == -100000.0


def test_max_ls_spent_returns_the_start_when_nothing_was_lower():
    start = object()
    result = strong_wolfe(lambda t: ((t - 0.1) ** 2 + 1, 2 * (t - 0.1), "moved"), 5.0, 0.01 + 1, -0.2, max_ls=0,
                          payload=start)  # fmt: skip
    assert not result.converged and result.evals == 1
    assert result.t == 0 and type(result.t) is int  # torch's int 0
    assert result.f == 1.01 and result.slope == -0.2 and result.payload is start


def test_zoom_finds_the_minimum_after_an_overshoot():
    steps = []

    def line(t):
        steps.append(t)
        return (t - 2.0) ** 2, 2.0 * (t - 2.0)

    result = strong_wolfe(line, 10.0, 4.0, -4.0, c2=0.1)
    assert result.converged and result.t == 2.0
    assert steps == [10.0, 2.0]  # Armijo fails at 10: bracket [0, 10], then the cubic is exact


def test_zoom_stops_on_a_narrow_bracket():
    result = strong_wolfe(lambda t: ((t - 2.0) ** 2, 2.0 * (t - 2.0)), 10.0, 4.0, -4.0, tolerance_change=100.0)
    assert not result.converged
    assert result.evals == 1 and result.t == 0  # the lower end of [0, 10]


def test_zoom_moves_a_boundary_guess_inside(monkeypatch):
    """A trial at (or near, twice) a bracket end is replaced by one 10% of the width inside."""
    real = ls.cubic_interpolate

    def at_the_high_end(x1, f1, g1, x2, f2, g2, bounds=None):
        if bounds is not None:  # extrapolation: unchanged
            return real(x1, f1, g1, x2, f2, g2, bounds)
        return max(x1, x2)

    monkeypatch.setattr(ls, "cubic_interpolate", at_the_high_end)
    steps = []

    def line(t):
        steps.append(t)
        return (t - 1.0) ** 2, 2.0 * (t - 1.0)

    strong_wolfe(line, 10.0, 1.0, -2.0, c2=0.01, max_ls=4)
    # bracket [0, 10]; the guess 10 is on the boundary: 10 - 0.1 * 10 = 9, and so on
    assert steps[:3] == [10.0, 9.0, 8.1]


def test_cubic_interpolate():
    # exact on a quadratic and on a cubic with a local minimum, from either side
    assert cubic_interpolate(0.0, 4.0, -4.0, 3.0, 1.0, 2.0) == pytest.approx(2.0)

    def cubic(x):
        return x**3 - 3 * x, 3 * x**2 - 3

    assert cubic_interpolate(0.0, *cubic(0.0), 2.0, *cubic(2.0)) == pytest.approx(1.0)
    assert cubic_interpolate(2.0, *cubic(2.0), 0.0, *cubic(0.0)) == pytest.approx(1.0)
    # clamped to the bounds
    assert cubic_interpolate(0.0, 4.0, -4.0, 1.0, 1.0, -2.0, bounds=(1.5, 1.8)) == 1.8
    # no real minimiser (d1 = 0, d1^2 < g1 g2): the middle of the bounds
    assert cubic_interpolate(0.0, 0.0, 3.0, 1.0, 2.0, 3.0, bounds=(2.0, 4.0)) == 3.0


def test_floats_in_floats_out_and_numpy_scalars_keep_their_precision():
    def line(t):
        return (t - 2.0) ** 2, 2.0 * (t - 2.0)

    result = strong_wolfe(line, 10.0, 4.0, -4.0, c2=0.1)
    assert all(type(v) is float for v in (result.t, result.f, result.slope))

    def line32(t):
        return float((t - 2.0) ** 2), np.float32(2.0) * (np.float32(t) - np.float32(2.0))

    result = strong_wolfe(line32, 10.0, 4.0, np.float32(-4.0), c2=0.1)
    assert type(result.t) is np.float32 and type(result.slope) is np.float32


def test_zero_divisors_give_ieee_results():
    assert ls._div(1.0, 0.0) == math.inf and ls._div(-1.0, 0.0) == -math.inf
    assert ls._div(1.0, -0.0) == -math.inf and math.isnan(ls._div(0.0, 0.0))
    # a Python number over a NumPy scalar rounds as torch's number / 0-d tensor:
    # reciprocal, then product
    a, b = 0.037405014038085938, np.float32(-3.9175243377685547)
    assert ls._div(a, b) == (np.float32(1.0) / b) * a != np.float32(a) / b


def test_negative_max_ls_is_refused():
    with pytest.raises(ValueError, match="max_ls must be a non-negative number of evaluations, got -1"):
        strong_wolfe(lambda t: (t, 1.0), 1.0, 0.0, -1.0, max_ls=-1)


@pytest.mark.ref
@pytest.mark.parametrize("name", sorted(SCALAR_FUNCTIONS))
@pytest.mark.parametrize("t0", [1e-3, 1.0, 10.0])
@pytest.mark.parametrize(("c1", "c2"), [(1e-4, 0.9), (0.3, 0.5)])
def test_same_steps_as_torch(name, t0, c1, c2, torch):
    """torch's _strong_wolfe on the same line: same trial steps, bit for bit (sqrt aligned).

    With c1 = 0.3 the search sometimes ends without a Wolfe step (e.g. "log"): so does torch's.
    """
    from torch.optim.lbfgs import _strong_wolfe

    from lbfgs_parity import aligned_torch

    phi, derphi = SCALAR_FUNCTIONS[name]
    theirs = []

    def obj_func(x, t, d):
        theirs.append(float(t))
        return phi(float(t)), torch.tensor([derphi(float(t))], dtype=torch.float64)

    with aligned_torch():
        g0 = torch.tensor([derphi(0.0)], dtype=torch.float64)
        f_t, _, t_t, evals_t = _strong_wolfe(
            obj_func, None, t0, torch.ones(1, dtype=torch.float64), phi(0.0), g0, g0[0], c1=c1, c2=c2
        )
    ours = []

    def line(t):
        ours.append(float(t))
        return phi(float(t)), np.float64(derphi(float(t)))

    # slopes as NumPy float64 scalars, which round as torch's 0-d tensors do
    result = strong_wolfe(line, t0, phi(0.0), np.float64(derphi(0.0)), c1=c1, c2=c2)
    assert ours == theirs
    assert (float(result.t), result.f, result.evals) == (float(t_t), f_t, evals_t)


def test_docstring_examples():
    import doctest

    result = doctest.testmod(ls, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("tolerance_change", [1e-9, 0.0])
def test_a_bracket_of_no_width_ends_the_search_without_dividing_by_zero(tolerance_change, monkeypatch):
    """A first step of 0 (LBFGS with lr=0): torch's cubic divides 0.0 by 0.0 (ZeroDivisionError);
    here the search stops at once, never interpolating through one point."""
    calls = []

    def phi(t):
        calls.append(t)
        return (t - 2.0) ** 2, 2.0 * (t - 2.0)

    real = ls.cubic_interpolate

    def checked(x1, f1, g1, x2, f2, g2, bounds=None):
        assert x1 != x2, "cubic through a single point"
        return real(x1, f1, g1, x2, f2, g2, bounds)

    monkeypatch.setattr(ls, "cubic_interpolate", checked)
    result = strong_wolfe(phi, 0.0, *phi(0.0)[:2], tolerance_change=tolerance_change)
    assert (result.t, result.converged, result.evals) == (0.0, False, 1)
    assert calls == [0.0, 0.0] and all(math.isfinite(t) for t in calls)


def test_lbfgs_with_lr_zero_stays_put_and_stops_cleanly():
    import arrayopt

    w = arrayopt.Parameter(np.array([1.5, -2.0]))
    opt = arrayopt.LBFGS([w], lr=0.0, line_search_fn="strong_wolfe")
    evaluations = []

    def closure():
        evaluations.append(w.data.copy())
        d = w.data - np.array([1.0, 2.0])
        w.grad = 4 * d**3
        return float((d**4).sum())

    for _ in range(3):  # torch raises ZeroDivisionError on the second step
        opt.step(closure)
    assert np.array_equal(w.data, [1.5, -2.0]) and all(np.array_equal(x, [1.5, -2.0]) for x in evaluations)
    assert len(evaluations) <= 6 and opt._stop_reason == "step"

"""L-BFGS-B (arrayopt.lbfgsb and minimize(method="L-BFGS-B")): SciPy's own tests, ported, and ours.

The first part ports scipy/optimize/tests (SciPy 1.17): the L-BFGS-B cases of
test_optimize.py (CheckOptimize's maximum-entropy problem with its exact evaluation
counts and trace, TestLBFGSBBounds, the generic minimize tests run for 'l-bfgs-b',
the equal-bounds tests), test_lbfgsb_hessinv.py and test_lbfgsb_setulb.py. Each runs
on every array library of the ``xp`` fixture where the objective can be written in
it. Expected numbers are SciPy's (its tests' literals, or SciPy run here as the
reference). The second part tests the pieces: the Cauchy point against a
transcription of SciPy's one-breakpoint-at-a-time recurrence, the subspace step
against dense linear algebra, the inverse-Hessian operator against the compact
matrix, bounds that are never left, float32, non-finite values, and the CuPy code
path on the CPU stand-in.
"""

import inspect
import itertools
import re
import warnings

import numpy as np
import pytest

from arrayopt import OptimizeResult, minimize
from arrayopt.backends import get_backend
from arrayopt.lbfgsb import (
    Box,
    CauchyPoint,
    LbfgsbMemory,
    LbfgsInvHessProduct,
    cauchy_direction,
    cauchy_point,
    lbfgsb,
    subspace_minimization,
)

optimize = pytest.importorskip("scipy.optimize")


def host(a):
    return np.asarray(get_backend(a).to_numpy(a))


def rosen(xp):
    def fun(x):
        return float(xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))

    def grad(x):
        inner = -400 * x[1:-1] * (x[2:] - x[1:-1] ** 2) - 2 * (1 - x[1:-1]) + 200 * (x[1:-1] - x[:-2] ** 2)
        first = -400 * x[:1] * (x[1:2] - x[:1] ** 2) - 2 * (1 - x[:1])
        last = 200 * (x[-1:] - x[-2:-1] ** 2)
        return xp.concat([first, inner, last])

    return fun, grad


# -- test_optimize.py: CheckOptimize (maximum entropy, Berger et al. 1996) ------------------


class MaxEnt:
    """SciPy's CheckOptimize problem, counting calls and recording the points evaluated."""

    def __init__(self, xp):
        self.xp = xp
        self.F = xp.asarray([[1, 1, 1], [1, 1, 0], [1, 0, 1], [1, 0, 0], [1, 0, 0]], dtype=xp.float64)
        self.K = xp.asarray([1.0, 0.3, 0.5], dtype=xp.float64)
        self.startparams = xp.zeros(3, dtype=xp.float64)
        self.solution = xp.asarray([0.0, -0.524869316, 0.487525860], dtype=xp.float64)
        self.funccalls = 0
        self.gradcalls = 0
        self.trace = []

    def func(self, x):
        xp = self.xp
        self.funccalls += 1
        log_pdot = self.F @ x
        f = xp.log(xp.sum(xp.exp(log_pdot))) - self.K @ x
        self.trace.append(host(x).copy())
        return float(f)

    def grad(self, x):
        xp = self.xp
        self.gradcalls += 1
        log_pdot = self.F @ x
        p = xp.exp(log_pdot - xp.log(xp.sum(xp.exp(log_pdot))))
        return xp.matrix_transpose(self.F) @ p - self.K


def test_l_bfgs_b_counts_and_trace(xp):
    # test_optimize.py::TestOptimizeSimple::test_l_bfgs_b: SciPy counts 7 calls of func, two of
    # them its own assertion's; the optimizer makes 5 (and 5 of grad)
    problem = MaxEnt(xp)
    result = minimize(problem.func, problem.startparams, jac=problem.grad, method="L-BFGS-B", options={"maxiter": 1000})
    assert (problem.funccalls, problem.gradcalls) == (5, 5)
    assert (result.nfev, result.njev) == (5, 5)
    np.testing.assert_allclose(problem.func(result.x), problem.func(problem.solution), atol=1e-6)
    np.testing.assert_allclose(
        problem.trace[3:5],
        [[8.117083e-16, -5.196198e-01, 4.897617e-01], [0.0, -0.52489628, 0.48753042]],
        atol=1e-14,
        rtol=1e-7,
    )


@pytest.mark.parametrize("jac", [None, "2-point", "3-point", True])
def test_l_bfgs_b_numjac_funjac(xp, jac):
    # test_l_bfgs_b_numjac, test_l_bfgs_b_funjac, test_minimize_l_bfgs_b
    problem = MaxEnt(xp)
    fun = (lambda x: (problem.func(x), problem.grad(x))) if jac is True else problem.func
    result = minimize(fun, problem.startparams, jac=jac, method="L-BFGS-B", options={"maxiter": 1000})
    np.testing.assert_allclose(problem.func(result.x), problem.func(problem.solution), atol=1e-6)
    assert result.nfev == problem.funccalls - 2  # every evaluation is counted (two are the assertion's)
    numpy_problem = MaxEnt(np)
    fun = (lambda x: (numpy_problem.func(x), numpy_problem.grad(x))) if jac is True else numpy_problem.func
    reference = optimize.minimize(fun, np.zeros(3), jac=jac, method="L-BFGS-B")
    assert (result.nfev, result.njev, result.nit) == (reference.nfev, reference.njev, reference.nit)


def test_l_bfgs_b_maxiter(xp):
    # gh7854: never more than maxiter iterations
    fun, _ = rosen(xp)
    seen = {}

    def callback(x):
        seen["x"], seen["fun"] = x, fun(x)
        seen["nit"] = seen.get("nit", 0) + 1

    res = minimize(fun, xp.asarray([0.0, 0.0]), method="l-bfgs-b", callback=callback, options={"maxiter": 5})
    assert res.nit == seen["nit"] == 5
    np.testing.assert_allclose(host(res.x), host(seen["x"]))
    assert res.fun == pytest.approx(seen["fun"])
    assert (res.status, res.success) == (1, False)
    assert res.message == "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT"


def test_minimize_l_bfgs_b_ftol():
    v0 = None
    problem = MaxEnt(np)
    solution = problem.func(problem.solution)
    for tol in [1e-1, 1e-4, 1e-7, 1e-10]:
        sol = minimize(problem.func, problem.startparams, jac=problem.grad, method="L-BFGS-B", options={"ftol": tol})
        v = problem.func(sol.x)
        if v0 is None:
            v0 = v
        else:
            assert v < v0
        np.testing.assert_allclose(v, solution, rtol=tol)


def test_minimize_l_bfgs_maxls(xp):
    fun, grad = rosen(xp)
    sol = minimize(fun, xp.asarray([-1.2, 1.0]), method="L-BFGS-B", jac=grad, options={"maxls": 1})
    reference = optimize.minimize(optimize.rosen, [-1.2, 1.0], jac=optimize.rosen_der, method="L-BFGS-B",
                                  options={"maxls": 1})  # fmt: skip
    assert not sol.success and sol.status == 2 and sol.message.startswith("ABNORMAL")
    assert (sol.nfev, sol.nit) == (reference.nfev, reference.nit) == (2, 0)


def test_minimize_l_bfgs_b_maxfun_interruption():
    # gh-6162: stopped by maxfun, the result is no worse than the best of the first 30 evaluations
    f, g = optimize.rosen, optimize.rosen_der
    values = []
    x0 = np.full(7, 1000.0)

    def objfun(x):
        value = f(x)
        values.append(value)
        return value

    minimize(objfun, x0, jac=g, method="L-BFGS-B", options={"maxfun": 300})
    low, medium = 30, 100
    _, k = max((y, i) for i, y in enumerate(values[medium:]))
    maxfun = medium + k
    target = min(values[:low])
    result = minimize(f, x0, jac=g, method="L-BFGS-B", options={"maxfun": maxfun})
    assert result.fun < target
    assert result.status == 1 and result.message == "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT"


def test_minimize_tol_parameter():
    def func(z):
        x, y = z
        return x**2 * y**2 + x**4 + 1

    def dfunc(z):
        x, y = z
        return np.array([2 * x * y**2 + 4 * x**3, 2 * x**2 * y])

    sol1 = minimize(func, [2, 2], jac=dfunc, tol=1e-10, method="l-bfgs-b")
    sol2 = minimize(func, [2, 2], jac=dfunc, tol=1.0, method="l-bfgs-b")
    assert func(sol1.x) < func(sol2.x)


def test_minimize_callback_copies_array():
    results = []

    def callback(x, *args):
        results.append((x, np.copy(x)))

    minimize(lambda x: (optimize.rosen(x), optimize.rosen_der(x)), np.zeros(10), jac=True, method="l-bfgs-b",
             callback=callback, options={"maxiter": 5})  # fmt: skip
    assert len(results) > 2
    assert all(np.all(x == y) for x, y in results)
    assert not any(np.may_share_memory(a[0], b[0]) for a, b in itertools.combinations(results, 2))


def test_no_increase():
    # a wrong gradient makes the line searches fail: the result is no worse than x0
    def func(x):
        return float(np.sum((x - 1) ** 2))

    def bad_grad(x):
        return 2 * (x - 1) * (-1) - 2

    x0 = np.array([2.0])
    sol = minimize(func, x0, jac=bad_grad, method="l-bfgs-b", options={"maxiter": 20})
    assert func(sol.x) == sol.fun
    assert func(sol.x) <= func(x0)


def test_respect_maxiter():
    calls = []

    def fun(x):
        calls.append(1)
        return optimize.rosen(x)

    sol = minimize(fun, np.zeros(10), jac=optimize.rosen_der, method="L-BFGS-B", options={"maxiter": 4})
    assert sol.nit == 4 and sol.nfev == len(calls)


@pytest.mark.parametrize("scale", [1.0, 1e50])
def test_initial_step_scaling(scale):
    # the first step is about 1 whatever the scale of f (SciPy: 0.5 < step < 3 for L-BFGS-B)
    x0 = [-1.0]
    first_step = [None]

    def f(x):
        if first_step[0] is None and x[0] != x0[0]:
            first_step[0] = abs(x[0] - x0[0])
        if np.max(np.abs(x)) > 1e4:
            raise AssertionError("Optimization stepped far away!")
        return scale * (x[0] - 1) ** 2

    def g(x):
        return np.array([scale * (x[0] - 1)])

    res = minimize(f, x0, jac=g, method="L-BFGS-B")
    assert res.success
    np.testing.assert_allclose(res.x, [1.0])
    assert res.nit <= 3
    assert 0.5 < first_step[0] < 3


def test_nan_values():
    # a NaN objective never succeeds, and never raises
    rng = np.random.default_rng(123122)
    count = [0]

    def func(x):
        return np.nan

    def func2(x):
        count[0] += 1
        return np.nan if count[0] > 2 else rng.random()

    def grad(x):
        return np.array([1.0])

    for f, g in itertools.product([func, func2], [grad, None]):
        count[0] = 0
        with np.errstate(invalid="ignore"):
            sol = minimize(f, np.array([1.0]), jac=g, method="l-bfgs-b", options={"maxiter": 20})
        assert sol.success is False


def test_duplicate_evaluations():
    problem = MaxEnt(np)
    minimize(problem.func, problem.startparams, method="l-bfgs-b")
    for a, b in itertools.pairwise(problem.trace):
        assert not np.array_equal(a, b)


@pytest.mark.parametrize("interface", [0, 1, 2])
def test_callback_stopiteration(interface):
    maxiter = 5

    def f(x):
        return optimize.rosen(x)

    def callback():
        callback.i += 1
        if callback.i == maxiter:
            raise StopIteration

    callback.i = 0
    if interface == 1:

        def wrapped(*, intermediate_result):
            assert intermediate_result.fun == f(intermediate_result.x)
            callback()
    elif interface == 2:

        class Callback:
            def __call__(self, intermediate_result: OptimizeResult):
                assert intermediate_result.fun == f(intermediate_result.x)
                callback()

        wrapped = Callback()
    else:

        def wrapped(xk, *args):
            callback()

    kwargs = {"x0": [1.1] * 5, "method": "l-bfgs-b", "fun": f, "jac": optimize.rosen_der}
    res = minimize(**kwargs, callback=wrapped)
    ref = minimize(**kwargs, options={"maxiter": maxiter})
    assert res.message.startswith("`callback` raised `StopIteration`")
    assert res.nit == ref.nit == maxiter
    assert res.fun == ref.fun
    np.testing.assert_array_equal(res.x, ref.x)
    assert res.status == 99 and not res.success


def test_minimize_invalid_bounds():
    def f(x):
        return float(np.sum(x**2))

    with pytest.raises(ValueError, match=re.escape("The number of bounds is not compatible with the length of `x0`.")):
        minimize(f, x0=[1, 2, 3], method="l-bfgs-b", bounds=optimize.Bounds([1, 2], [3, 4]))
    with pytest.raises(ValueError, match=re.escape("An upper bound is less than the corresponding lower bound.")):
        minimize(f, x0=[1, 2, 3], method="l-bfgs-b", bounds=optimize.Bounds([1, 6, 1], [3, 4, 2]))


def test_minimize_with_scalar():
    res = minimize(lambda x: float(np.sum(x**2)), 17, bounds=[(-100, 100)], method="l-bfgs-b")
    assert res.success
    np.testing.assert_allclose(res.x, [0.0], atol=1e-5)
    assert res.x.shape == (1,)


def test_result_x_shape_when_len_x_is_one():
    res = minimize(lambda x: float(x[0] * x[0]), np.array([0.1]), method="L-BFGS-B")
    assert res.x.shape == (1,)


def test_attributes_present():
    res = minimize(optimize.rosen, [5, 5], jac=optimize.rosen_der, method="L-BFGS-B")
    for attribute in ["nit", "nfev", "x", "success", "status", "fun", "message", "jac", "njev", "hess_inv"]:
        assert hasattr(res, attribute) and attribute in dir(res)
    assert isinstance(res.message, str)


def test_minimize_maxiter_noninteger():
    # gh-23430
    minimize(optimize.rosen, np.array([1.3, 0.7, 0.8, 1.9, 1.2]), method="l-bfgs-b", options={"maxiter": 100.1})


def test_x_overwritten_user_function():
    # gh13740: an objective that writes into x does not derail the run
    def fquad(x):
        a = np.arange(np.size(x))
        x -= a
        x *= x
        return float(np.sum(x))

    res = minimize(fquad, np.ones(5) * 1.5, method="l-bfgs-b")
    np.testing.assert_allclose(res.x, np.arange(5), atol=2e-4)


# -- test_optimize.py::TestLBFGSBBounds ----------------------------------------------------


class TestLBFGSBBounds:
    bounds = ((1, None), (None, None))
    solution = (1, 0)

    @staticmethod
    def fun(x, p=2.0):
        return float(1.0 / p * (x[0] ** p + x[1] ** p))

    @staticmethod
    def jac(x, p=2.0):
        return x ** (p - 1)

    def fj(self, x, p=2.0):
        return self.fun(x, p), self.jac(x, p)

    def test_l_bfgs_b_bounds(self, xp):
        res = minimize(self.fun, xp.asarray([0.0, -1.0]), jac=self.jac, bounds=self.bounds, method="L-BFGS-B")
        assert res.status == 0, res.message
        np.testing.assert_allclose(host(res.x), self.solution, atol=1e-6)

    def test_l_bfgs_b_funjac(self, xp):
        res = minimize(self.fj, xp.asarray([0.0, -1.0]), args=(2.0,), jac=True, bounds=self.bounds)
        assert res.status == 0, res.message
        np.testing.assert_allclose(host(res.x), self.solution, atol=1e-6)

    def test_minimize_l_bfgs_b_bounds(self):
        res = minimize(self.fun, [0, -1], method="L-BFGS-B", jac=self.jac, bounds=self.bounds)
        assert res["success"], res["message"]
        np.testing.assert_allclose(res.x, self.solution, atol=1e-6)

    @pytest.mark.parametrize("bounds", [[(10, 1), (1, 10)], [(1, 10), (10, 1)], [(10, 1), (10, 1)]])
    def test_minimize_l_bfgs_b_incorrect_bounds(self, bounds):
        with pytest.raises(ValueError, match=r".*bound.*"):
            minimize(self.fun, [0, -1], method="L-BFGS-B", jac=self.jac, bounds=bounds)

    @pytest.mark.parametrize(("jac", "args"), list(itertools.product(["2-point", "3-point", None], [(2.0,), ()])))
    def test_minimize_l_bfgs_b_bounds_fd(self, jac, args, xp):
        # x0 outside the bounds is projected; every finite-difference scheme, with and without args
        res = minimize(self.fun, xp.asarray([0.0, -1.0]), args=args, method="L-BFGS-B", jac=jac,
                       bounds=self.bounds, options={"finite_diff_rel_step": None})  # fmt: skip
        assert res["success"], res["message"]
        np.testing.assert_allclose(host(res.x), self.solution, atol=1e-6)
        reference = optimize.minimize(self.fun, [0, -1], args=args, method="L-BFGS-B", jac=jac, bounds=self.bounds)
        assert (res.nfev, res.njev, res.nit) == (reference.nfev, reference.njev, reference.nit)


# -- test_optimize.py: equal bounds ---------------------------------------------------------

EB_RNG = np.random.default_rng(12223)
EB_X0 = EB_RNG.random(4)
EB_LB = np.array([0, 2, -1, -1.0])
EB_UB = np.array([3, 2, 2, -1.0])
EB_FIXED = EB_LB == EB_UB


def _check_x(x):
    assert x.size == 4
    np.testing.assert_allclose(x[EB_FIXED], EB_LB[EB_FIXED])


def _eb_func(x):
    _check_x(x)
    return optimize.rosen(x)


def _eb_grad(x):
    _check_x(x)
    return optimize.rosen_der(x)


def _eb_callback(x, *args):
    _check_x(x)


def _eb_callback2(intermediate_result):
    assert isinstance(intermediate_result, OptimizeResult)
    _check_x(intermediate_result.x)


@pytest.mark.parametrize("callback", [None, _eb_callback, _eb_callback2])
@pytest.mark.parametrize("bound_type", [lambda lb, ub: list(zip(lb, ub, strict=True)), optimize.Bounds])
@pytest.mark.parametrize(
    "kwds",
    [
        {"fun": _eb_func, "jac": False},
        {"fun": _eb_func, "jac": _eb_grad},
        {"fun": lambda x: (_eb_func(x), _eb_grad(x)), "jac": True},
    ],
    ids=["fd", "grad", "fun-and-grad"],
)
def test_equal_bounds(kwds, bound_type, callback):
    """Variables fixed by lb == ub: finite differences skip them and report NaN there, as SciPy does."""
    bounds = bound_type(EB_LB, EB_UB)
    res = minimize(**kwds, x0=EB_X0, method="L-BFGS-B", bounds=bounds, callback=callback)
    expected = optimize.minimize(optimize.rosen, EB_X0, method="L-BFGS-B", jac=optimize.rosen_der, bounds=bounds)
    assert res.success
    np.testing.assert_allclose(res.fun, expected.fun, rtol=5.0e-6)
    np.testing.assert_allclose(res.x, expected.x, rtol=5e-4)
    expected_jac = expected.jac.copy()
    if kwds["jac"] is False:
        expected_jac[EB_FIXED] = np.nan
    assert res.jac.shape[0] == 4
    np.testing.assert_allclose(res.jac[EB_FIXED], expected_jac[EB_FIXED], rtol=1e-6)
    if kwds["jac"] is False and not isinstance(bounds, optimize.Bounds):
        # the same as minimising over the two free variables
        def fun(x):
            new_x = np.array([np.nan, 2, np.nan, -1])
            new_x[[0, 2]] = x
            return optimize.rosen(new_x)

        fd_res = minimize(fun, EB_X0[[0, 2]], method="L-BFGS-B", bounds=bounds[::2])
        np.testing.assert_allclose(res.fun, fd_res.fun)
        np.testing.assert_allclose(res.x[[0, 2]], fd_res.x, rtol=2e-6)
        reference = optimize.minimize(_eb_func, EB_X0, method="L-BFGS-B", bounds=bounds)
        assert (res.nfev, res.nit) == (reference.nfev, reference.nit)


def test_all_bounds_equal():
    def f(x, p1=1):
        return float(np.linalg.norm(x) + p1)

    res = minimize(f, (1.0, 3.0), bounds=[(1, 1), (2, 2)], method="L-BFGS-B")
    assert res.success
    np.testing.assert_allclose(res.fun, f([1.0, 2.0]))
    assert res.nfev == 1
    assert res.message == "All independent variables were fixed by bounds."
    res = minimize(f, (1.0, 3.0), bounds=[(1, 1), (2, 2)], method="L-BFGS-B", args=(2,))
    assert res.success
    np.testing.assert_allclose(res.fun, f([1.0, 2.0], 2))


# -- test_lbfgsb_hessinv.py ----------------------------------------------------------------------


def test_hessinv_1():
    def f(x):
        return float(x[0] ** 4), 4 * x**3

    for gtol in [1e-8, 1e-12, 1e-20]:
        for maxcor in range(20, 35):
            result = minimize(f, 20, jac=True, method="L-BFGS-B", options={"gtol": gtol, "maxcor": maxcor})
            h1 = result.hess_inv(np.array([1.0])).reshape(1, 1)
            h2 = result.hess_inv.todense()
            np.testing.assert_allclose(h1, h2)


def _hessinv_quadratic():
    h0 = np.array([[3.0, 0.0], [1.0, 2.0]])
    inverse = np.linalg.inv(h0)
    return lambda x: float(x @ inverse @ x)


def test_hessinv_2(xp):
    f = _hessinv_quadratic()
    result1 = minimize(lambda x: f(host(x)), xp.asarray([10.0, 20.0]), method="L-BFGS-B")
    result2 = optimize.minimize(f, [10, 20], method="BFGS")
    h1 = host(result1.hess_inv.todense())
    h2 = np.vstack([host(result1.hess_inv(xp.asarray([1.0, 0.0]))), host(result1.hess_inv(xp.asarray([0.0, 1.0])))])
    column = host(result1.hess_inv(xp.reshape(xp.asarray([1.0, 0.0]), (2, 1))))
    np.testing.assert_allclose(column.reshape(-1), host(result1.hess_inv(xp.asarray([1.0, 0.0]))))
    np.testing.assert_allclose(h1, h2)
    np.testing.assert_allclose(h1, result2.hess_inv, rtol=1e-2, atol=0.03)


def test_hessinv_3():
    # todense against the product formula, H_k = V^T H_{k-1} V + rho s s^T from H_0 = h0 I
    f = _hessinv_quadratic()
    hess_inv = minimize(f, [10, 20], method="L-BFGS-B").hess_inv
    s, y, rho = hess_inv.sk, hess_inv.yk, hess_inv.rho
    eye = np.eye(2)
    hk = hess_inv.h0 * eye
    for i in range(hess_inv.n_corrs):
        a1 = eye - s[i][:, None] * y[i][None, :] * rho[i]
        a2 = eye - y[i][:, None] * s[i][None, :] * rho[i]
        hk = a1 @ hk @ a2 + rho[i] * s[i][:, None] * s[i][None, :]
    np.testing.assert_allclose(hess_inv.todense(), hk)


# -- test_lbfgsb_setulb.py ----------------------------------------------------------------------

_SETULB_POINTS = [
    (
        [0.8750000000000278, 0.7500000000000153, 0.9499999999999722, 0.8214285714285992, 0.6363636363636085],
        5163.647901211178,
        [-0.5934820547965749, 1.6251549718258351, -71.99168459202559, 5.346636965797545, 37.10732723092604],
    ),
    (
        [1.0, 0.0, 1.0, 0.0, 0.0],
        5149.8181642072905,
        [-0.43295349282641515, 1.008607936794592, 18.223666726602975, 31.927010036981997, -19.667512518739386],
    ),
    (
        [1.0, 0.0, 0.9889733043149325, 0.0, 0.026353554421041155],
        5149.379332309634,
        [-0.4699874455100256, 0.9466285353668347, -0.016874360242016825, 48.44999161133457, 5.819631620590712],
    ),
    (
        [1.0, 0.0, 0.9889917442915558, 0.0, 0.020341986743231205],
        5149.374490771297,
        [-0.46970678696829116, 0.9612719312174818, 0.006129809488833699, 48.43557729419473, 6.005481418498221],
    ),
]


class _OffTable(Exception):
    pass


def test_setulb_floatround(xp):
    """SciPy's objective is known at four points only: the run steps exactly through them, inside [0, 1].

    SciPy drives ``setulb`` seven times, as far as its table goes; here the objective
    stops the run at the first point beyond the table (which must be inside too).
    """
    visited = []

    def objfun(x):
        x = host(x)
        assert np.all(x >= 0.0) and np.all(x <= 1.0), f"a point outside the bounds: {x!r}"
        for i, (point, f, g) in enumerate(_SETULB_POINTS):
            if np.allclose(x, point):
                visited.append(i)
                return f, xp.asarray(g)
        raise _OffTable

    x0 = xp.asarray(_SETULB_POINTS[0][0])
    with pytest.raises(_OffTable):
        minimize(objfun, x0, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * 5)
    assert visited == [0, 1, 2, 3]


def test_gh_issue18730():
    # an objective returning a float32 gradient for a float64 x
    def fun_single_precision(x):
        x = x.astype(np.float32)
        return np.sum(x**2), (2 * x)

    res = minimize(fun_single_precision, x0=np.array([1.0, 1.0]), jac=True, method="l-bfgs-b")
    np.testing.assert_allclose(res.fun, 0.0, atol=1e-15)


# -- against SciPy on bounded problems: the same iterations and evaluations --------------------

BOXES = [
    ("rosen-2 free", 2, -np.inf, np.inf, 0.1),
    ("rosen-10 free", 10, -np.inf, np.inf, 0.1),
    ("rosen-10 [0, 0.5]", 10, 0.0, 0.5, 0.1),
    ("rosen-10 [-2, 0.8]", 10, -2.0, 0.8, 0.1),
    ("rosen-50 [1.2, 3]", 50, 1.2, 3.0, 2.0),
    ("rosen-10 mixed", 10, np.r_[[-2.0] * 5, [0.3] * 5], 2.0, 0.1),
    ("rosen-30 one-sided", 30, 0.25, np.inf, 1.5),
]


@pytest.mark.parametrize(("name", "n", "lb", "ub", "start"), BOXES, ids=[b[0] for b in BOXES])
def test_same_iterations_and_evaluations_as_scipy(name, n, lb, ub, start, xp):
    lb = np.broadcast_to(lb, (n,)).astype(float)
    ub = np.broadcast_to(ub, (n,)).astype(float)
    x0 = np.full(n, start)
    reference = optimize.minimize(optimize.rosen, x0, jac=optimize.rosen_der, method="L-BFGS-B",
                                  bounds=list(zip(lb, ub, strict=True)))  # fmt: skip
    fun, grad = rosen(xp)
    result = minimize(fun, xp.asarray(x0), jac=grad, method="L-BFGS-B", bounds=optimize.Bounds(lb, ub))
    assert (result.nit, result.nfev, result.njev) == (reference.nit, reference.nfev, reference.njev)
    assert result.message == reference.message and result.status == reference.status
    np.testing.assert_allclose(host(result.x), reference.x, rtol=1e-7, atol=1e-9)
    assert result.fun == pytest.approx(reference.fun, rel=1e-9, abs=1e-14)


# -- bounds: parsing, projection, never violated ---------------------------------------------------


def test_bounds_forms_and_errors():
    x = np.zeros((2, 2))
    box = Box.from_bounds(optimize.Bounds(0.0, [1.0, 2.0]), x)  # broadcast to x's shape
    np.testing.assert_array_equal(box.lower, [0, 0, 0, 0])
    np.testing.assert_array_equal(box.upper, [1, 2, 1, 2])
    box = Box.from_bounds(np.array([[0, 1], [-np.inf, 2], [-np.inf, np.inf], [1, 1]]), x)
    np.testing.assert_array_equal(box.lower, [0, -np.inf, -np.inf, 1])
    assert box.fixed.tolist() == [False, False, False, True] and box.constrained and not box.boxed
    with pytest.raises(ValueError, match=r"element \(1, 0\) has lower bound 3.0 above its upper bound 2.0"):
        Box.from_bounds([(0, 1), (0, 1), (3, 2), (0, 1)], x)
    with pytest.raises(ValueError, match=r"the upper bound of element \(0, 1\) is NaN"):
        Box.from_bounds(optimize.Bounds(0.0, [[1.0, np.nan], [1.0, 1.0]]), x)
    with pytest.raises(ValueError, match="3 \\(min, max\\) pairs for x0 with 4 entries"):
        Box.from_bounds([(0, 1)] * 3, x)
    with pytest.raises(ValueError, match="does not broadcast"):
        Box.from_bounds(optimize.Bounds([0, 0, 0], 1.0), x)
    with pytest.raises(ValueError, match="lower bound of element 0 is inf"):
        Box.from_bounds([(np.inf, None)], np.zeros(1))
    with pytest.raises(TypeError, match=r"element 1 must be a \(min, max\) pair"):
        Box.from_bounds([(0, 1), 5], np.zeros(2))


def test_float32_bounds_are_rounded_inwards():
    box = Box.from_bounds([(0.1, 0.7), (-0.1, 1e-50)], np.zeros(2, dtype=np.float32))
    lower, upper = box.lower.astype(np.float64), box.upper.astype(np.float64)
    assert np.all(lower >= [0.1, -0.1]) and np.all(upper <= [0.7, 1e-50])
    assert np.all(np.nextafter(box.lower, np.float32(-1)) < np.array([0.1, -0.1]))
    with pytest.raises(ValueError, match="no float32 value lies between"):
        Box.from_bounds([(0.1, 0.1 + 1e-12)], np.zeros(1, dtype=np.float32))


def test_x0_outside_is_projected_and_no_iterate_leaves_the_box(xp):
    rng = np.random.default_rng(5)
    n = 40
    lb = rng.uniform(-1.0, 0.5, n)
    ub = lb + rng.uniform(0.0, 1.0, n)
    ub[::7] = lb[::7]  # some fixed variables
    points = []
    target = xp.asarray(rng.uniform(-2, 2, n))
    weights = xp.asarray(rng.uniform(0.5, 20, n))

    def fun(x):
        points.append(host(x))
        r = x - target
        return float(xp.sum(weights * r * r) + xp.sum(r**4)), 2 * weights * r + 4 * r**3

    x0 = xp.asarray(rng.uniform(-3, 3, n))
    result = minimize(fun, x0, jac=True, bounds=list(zip(lb, ub, strict=True)), options={"ftol": 0, "gtol": 1e-9})
    assert result.success
    for p in points:
        assert np.all(p >= lb) and np.all(p <= ub)
    # the solution of a separable convex problem: the clipped unconstrained minimiser
    np.testing.assert_allclose(host(result.x), np.clip(host(target), lb, ub), atol=1e-8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float32_runs_in_float32_and_stays_feasible(dtype, xp):
    fun, grad = rosen(xp)
    n = 20
    bounds = [(0.1, 0.65)] * 10 + [(None, 0.9)] * 10
    points = []

    def counted(x):
        points.append(host(x))
        assert x.dtype == getattr(xp, dtype)
        return fun(x)

    x0 = xp.asarray(np.full(n, 0.3), dtype=getattr(xp, dtype))
    result = minimize(counted, x0, jac=grad, bounds=bounds)
    assert result.x.dtype == x0.dtype and get_backend(result.x) is get_backend(x0)
    assert result.jac.dtype == x0.dtype
    lb = np.array([b[0] if b[0] is not None else -np.inf for b in bounds])
    ub = np.array([b[1] for b in bounds], dtype=float)
    for p in points:
        assert np.all(p.astype(np.float64) >= lb) and np.all(p.astype(np.float64) <= ub)
    reference = optimize.minimize(optimize.rosen, np.full(n, 0.3), jac=optimize.rosen_der, bounds=bounds)
    assert result.fun == pytest.approx(reference.fun, rel=1e-5 if dtype == "float32" else 1e-10)


# -- non-finite values ------------------------------------------------------------------------------------


def test_nonfinite_trial_points_shorten_the_step(xp):
    # log barrier: NaN for x <= 0, reached by the first trial step from x0
    def fun(x):
        with np.errstate(invalid="ignore", divide="ignore"):
            value = float(xp.sum(x - 2.0 * xp.log(x)))
        return value, 1.0 - 2.0 / x

    result = minimize(fun, xp.asarray([0.1, 0.3]), jac=True, method="L-BFGS-B")
    assert result.success, result.message
    np.testing.assert_allclose(host(result.x), [2.0, 2.0], rtol=1e-5)


def test_no_finite_step_returns_the_best_point():
    calls = []

    def fun(x):
        calls.append(x.copy())
        if len(calls) > 1:
            return float("nan"), np.full_like(x, np.nan)
        return float(np.sum(x**2)), 2 * x

    result = minimize(fun, np.array([1.0, -2.0]), jac=True, method="L-BFGS-B")
    assert result.success is False and result.status == 2 and result.message.startswith("ABNORMAL")
    np.testing.assert_array_equal(result.x, [1.0, -2.0])
    assert result.fun == 5.0 and result.nfev == len(calls) == 21


# -- the pieces --------------------------------------------------------------------------------------------


def _dense_b(memory):
    """B = theta I - W M W^T from the memory, densely (NumPy)."""
    order = memory.order
    y, s = memory.Y[order].T, memory.S[order].T
    w = np.hstack([y, memory.theta * s])
    m = np.array(memory.middle_matrix())
    n = y.shape[0]
    return memory.theta * np.eye(n) - w @ m @ w.T


def _reference_cauchy(x, g, lower, upper, memory):
    """SciPy's cauchy, one breakpoint at a time (a transcription of the recurrence, NumPy)."""
    theta = memory.theta
    col = memory.col
    order = memory.order
    w = np.hstack([memory.Y[order].T, theta * memory.S[order].T]) if col else np.zeros((len(x), 0))
    m = np.array(memory.middle_matrix()) if col else np.zeros((0, 0))
    d = np.where(((x <= lower) & (g >= 0)) | ((x > lower) & (x >= upper) & (g <= 0)) | (lower == upper), 0.0, -g)
    t = np.full(len(x), np.inf)
    down = (d < 0) & np.isfinite(lower)
    up = (d > 0) & np.isfinite(upper)
    t[down] = (x[down] - lower[down]) / g[down]
    t[up] = (upper[up] - x[up]) / -g[up]
    p = w.T @ d
    c = np.zeros(2 * col)
    f1 = -d @ d
    f2 = -theta * f1
    f2_org = f2
    f2 = f2 - p @ m @ p
    dtm = -f1 / f2
    xcp = x.copy()
    tsum = 0.0
    tj = 0.0
    active = np.zeros(len(x), bool)
    for i in np.argsort(t, kind="stable"):
        if not np.isfinite(t[i]):
            break
        tj0, tj = tj, t[i]
        dt = tj - tj0
        if dtm < dt:
            break
        tsum += dt
        dibp = d[i]
        d[i] = 0.0
        zibp = (upper[i] if dibp > 0 else lower[i]) - x[i]
        xcp[i] = upper[i] if dibp > 0 else lower[i]
        active[i] = True
        f1 = f1 + dt * f2 + dibp**2 - theta * dibp * zibp
        f2 = f2 - theta * dibp**2
        if col:
            c = c + dt * p
            wbp = w[i]
            v = m @ wbp
            f1 = f1 + dibp * (c @ v)
            f2 = f2 + 2.0 * dibp * (p @ v) - dibp**2 * (wbp @ v)
            p = p - dibp * wbp
        f2 = max(np.finfo(float).eps * f2_org, f2)
        dtm = -f1 / f2 if f2 > 0 else 0.0
    else:
        dtm = 0.0 if not np.any(d) else dtm
    dtm = max(dtm, 0.0)
    tsum += dtm
    xcp = np.where(active, xcp, x + tsum * d)
    return xcp, c + dtm * p


def _memory_with_pairs(rng, n, pairs, m=5):
    memory = LbfgsbMemory(np.zeros(n), m=m)
    a = rng.standard_normal((n, n))
    hess = a @ a.T / n + np.eye(n)
    for _ in range(pairs):
        s = rng.standard_normal(n)
        y = hess @ s
        assert memory.add(s, y, dr=float(s @ y), ss_new=float(s @ s), free=None)
    return memory


@pytest.mark.parametrize("pairs", [0, 1, 4, 7])
@pytest.mark.parametrize("n", [5, 60, 400])
def test_cauchy_point_matches_the_one_breakpoint_at_a_time_recurrence(n, pairs):
    rng = np.random.default_rng(n * 10 + pairs)
    memory = _memory_with_pairs(rng, n, pairs)
    lower = np.where(rng.random(n) < 0.8, -rng.random(n) * 0.05, -np.inf)
    upper = np.where(rng.random(n) < 0.8, rng.random(n) * 0.05, np.inf)
    x = rng.uniform(np.maximum(lower, -1), np.minimum(upper, 1))
    x[:3] = lower[:3] if np.isfinite(lower[:3]).all() else x[:3]  # some variables at a bound
    g = rng.standard_normal(n) * 3
    box = Box(lower, upper)
    point = cauchy_point(x, g, box, memory)
    xcp, c = _reference_cauchy(x, g, lower, upper, memory)
    np.testing.assert_allclose(point.x, xcp, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(point.c, c, rtol=1e-8, atol=1e-10)
    assert np.all(point.x >= lower) and np.all(point.x <= upper)
    # the variables the path took to a bound, and the pinned ones, are not free
    _, _, pinned = cauchy_direction(x, g, box)
    assert not np.any(point.free & pinned)
    assert point.n_free == int(np.sum(point.free))


def test_cauchy_point_passes_many_breakpoints_in_batches():
    # every variable bounded close by: the path passes hundreds of breakpoints (batches of 16, 64, 256, ...)
    rng = np.random.default_rng(0)
    n = 1000
    memory = _memory_with_pairs(rng, n, 3)
    memory.theta = 1e-3  # a flat model: the minimiser lies far along the path
    memory._form_t()
    x = np.zeros(n)
    g = rng.standard_normal(n)
    lower, upper = -rng.random(n), rng.random(n)
    point = cauchy_point(x, g, Box(lower, upper), memory)
    xcp, c = _reference_cauchy(x, g, lower, upper, memory)
    assert point.passed > 300
    np.testing.assert_allclose(point.x, xcp, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(point.c, c, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("flat", [False, True], ids=["few-passed", "hundreds-passed"])
def test_cauchy_point_does_not_depend_on_where_its_search_starts(flat):
    """The search for the segment looks at more breakpoints from where the last Cauchy point stopped;
    the result is the same bits from any start, tied breakpoints (here in runs of 4) included."""
    rng = np.random.default_rng(3)
    n = 2000
    memory = _memory_with_pairs(rng, n, 3)
    if flat:
        memory.theta = 1e-3  # the minimiser lies far along the path
        memory._form_t()
    # breakpoints equal in runs of 4 (t = bound / d, d scaled by powers of 2: exact), the terms of a run
    # different, so the order a run is taken in changes the sums' rounding
    x = np.zeros(n)
    d = np.repeat(rng.standard_normal(n // 4), 4) * np.tile([1.0, 2.0, 4.0, 0.5], n // 4)
    t = np.repeat(rng.random(n // 4) + 0.1, 4)
    g = -d
    lower, upper = np.where(d < 0, t * d, -1.0), np.where(d > 0, t * d, 1.0)
    breakpoints = cauchy_direction(x, g, Box(lower, upper))[1].reshape(-1, 4)
    assert (breakpoints == breakpoints[:, :1]).all()
    results = []
    for start in (0, 3, 40, 700, n):
        memory.breakpoints_passed = start
        point = cauchy_point(x, g, Box(lower, upper), memory)
        results.append((point.x.tobytes(), point.c, point.p, point.passed, point.t))
        assert memory.breakpoints_passed == point.passed
    assert all(r == results[0] for r in results[1:])
    assert results[0][3] > 40  # starts below what the search passes, and at or above it


def test_subspace_step_is_the_model_minimiser_over_the_free_variables():
    rng = np.random.default_rng(2)
    n = 30
    memory = _memory_with_pairs(rng, n, 4)
    lower, upper = np.full(n, -10.0), np.full(n, 10.0)
    box = Box(lower, upper)
    x = rng.uniform(-1, 1, n)
    g = rng.standard_normal(n)
    free = rng.random(n) < 0.7
    memory.update_free_set(free)
    xcp = np.where(free, x + 0.1 * rng.standard_normal(n), np.clip(x + 0.3, -10, 10))
    b = _dense_b(memory)
    order = memory.order
    w = np.hstack([memory.Y[order].T, memory.theta * memory.S[order].T])
    c = list(w.T @ (xcp - x))
    point = CauchyPoint(xcp, c, free, 0, int(free.sum()))
    z = subspace_minimization(x, g, point, box, memory)
    # dense: minimise g^T (z - x) + 1/2 (z - x)^T B (z - x) over z = xcp + Z d
    zb = b[np.ix_(free, free)]
    rhs = -(g + b @ (xcp - x))[free]
    expected = xcp.copy()
    expected[free] += np.linalg.solve(zb, rhs)
    np.testing.assert_allclose(z, expected, rtol=1e-8, atol=1e-10)


def test_inverse_hessian_inverts_the_compact_matrix(xp):
    rng = np.random.default_rng(3)
    n = 12
    memory = _memory_with_pairs(rng, n, 4)
    h = LbfgsInvHessProduct(xp.asarray(memory.S[memory.order]), xp.asarray(memory.Y[memory.order]), 1 / memory.theta)
    dense = host(h.todense())
    np.testing.assert_allclose(dense @ _dense_b(memory), np.eye(n), atol=1e-9)
    v = rng.standard_normal(n)
    np.testing.assert_allclose(host(h @ xp.asarray(v)), dense @ v, rtol=1e-12)
    np.testing.assert_allclose(host(h.dot(xp.asarray(v))), dense @ v, rtol=1e-12)
    if xp is np:  # array-api-strict's arrays do not defer ``@`` to the right operand
        np.testing.assert_allclose(v @ h, dense @ v, rtol=1e-12)
    block = rng.standard_normal((n, 3))
    np.testing.assert_allclose(host(h.matmat(xp.asarray(block))), dense @ block, rtol=1e-12)
    assert h.T is h and h.shape == (n, n) and "12x12 LbfgsInvHessProduct" in repr(h)
    with pytest.raises(ValueError, match="sk and yk must have one shape"):
        LbfgsInvHessProduct(xp.zeros((2, 3)), xp.zeros((3, 3)))


def test_lbfgs_method_gets_hess_inv_and_maxiter_means_iterations():
    fun, x0 = (lambda x: (optimize.rosen(x), optimize.rosen_der(x))), np.full(10, -1.0)
    result = minimize(fun, x0, jac=True, method="lbfgs", options={"maxiter": 25})
    assert result.nit == 25 and result.status == 1
    h = result.hess_inv
    assert isinstance(h, LbfgsInvHessProduct) and h.shape == (10, 10)
    np.testing.assert_allclose(h.todense(), h.todense().T, atol=1e-12)


def test_lbfgs_method_shortens_steps_at_nonfinite_values():
    def fun(x):
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(np.sum(x - 2.0 * np.log(x))), 1.0 - 2.0 / x

    result = minimize(fun, [0.1, 0.3], jac=True, method="lbfgs")
    assert result.success, result.message
    np.testing.assert_allclose(result.x, [2.0, 2.0], rtol=1e-5)


def test_first_order_method_stops_at_its_last_finite_iterate():
    def fun(x):
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(np.sum(np.sqrt(x))), 0.5 / np.sqrt(x)

    result = minimize(fun, [1.0], jac=True, method="sgd", options={"lr": 3.0, "maxiter": 50})
    assert result.status == 2 and not result.success and "not finite after iteration 1" in result.message
    assert result.nit == 0 and result.x.tolist() == [1.0] and result.fun == 1.0


def test_lbfgsb_options_and_tol(monkeypatch):
    import sys

    made = {}

    def spy(*args, **kwargs):
        made.update(kwargs)
        return lbfgsb(*args, **kwargs)

    monkeypatch.setattr(sys.modules["arrayopt.minimize"], "lbfgsb", spy)
    fun = lambda x: (float(np.sum(x**2)), 2 * x)  # noqa: E731
    minimize(fun, np.ones(3), jac=True, method="l-bfgs-b", tol=1e-3, options={"gtol": 1e-7, "disp": True})
    assert made["gtol"] == 1e-7 and made["ftol"] == 1e-3 and made["maxcor"] == 10 and made["maxls"] == 20


def test_signature_matches_scipy_keywords():
    ours = set(inspect.signature(minimize).parameters)
    theirs = set(inspect.signature(optimize.minimize).parameters)
    assert ours <= theirs and {"fun", "x0", "args", "method", "jac", "bounds", "tol", "callback", "options"} <= ours


# -- the CuPy code path on the CPU stand-in -------------------------------------------------------


@pytest.mark.parametrize("elementwise", [True, False], ids=["elementwise", "fuse"])
def test_cupy_backend_code_path_on_a_stand_in(monkeypatch, elementwise):
    """backends/cupy.py running L-BFGS-B: NumPy's numbers, and only small arrays cross to the host.

    The elementwise rules run as generated kernels (compiled as C++ for the CPU) or
    through the ``cupy.fuse`` stand-in; every transfer to the host goes through the
    stand-in's ``asnumpy``, whose sizes are recorded.
    """
    import cpu_elementwise

    if elementwise and cpu_elementwise.COMPILER is None:
        pytest.skip("no C++ compiler to stand in for NVRTC")
    n, m = 300, 5
    rng = np.random.default_rng(11)
    lower, upper = np.full(n, -0.4), np.full(n, 0.7)
    lower[::3] = -np.inf
    x0 = rng.uniform(-0.3, 0.6, n)

    def fun(x):
        return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)), optimize.rosen_der(x)

    reference = lbfgsb(fun, x0.copy(), Box(lower, upper), maxcor=m)
    backend = cpu_elementwise.install_cupy_stand_in(monkeypatch, elementwise)
    module = __import__("arrayopt.backends.cupy", fromlist=["cupy"])
    sizes = []

    def asnumpy(array):
        sizes.append(np.size(array))
        return np.asarray(array)

    monkeypatch.setattr(module.cupy, "asnumpy", asnumpy)
    assert get_backend(x0) is backend
    ours = lbfgsb(fun, x0.copy(), Box(lower, upper), maxcor=m)
    assert backend._kernels, "the CuPy backend's kernels were not used"
    assert sizes, "the CuPy backend's transfers were not used"
    assert max(sizes) <= (2 * m) ** 2 < n  # scalars, 2m-vectors and 2m x 2m matrices only
    assert (ours["nit"], ours["nfev"], ours["message"]) == (reference["nit"], reference["nfev"], reference["message"])
    np.testing.assert_array_equal(ours["x"], reference["x"])
    assert ours["nit"] > 10 and ours["success"]


def test_docstring_examples():
    import doctest

    import arrayopt.lbfgsb

    result = doctest.testmod(arrayopt.lbfgsb, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_warnings_are_not_raised_for_plain_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minimize(optimize.rosen, np.zeros(4), jac=optimize.rosen_der, bounds=[(0, 0.5)] * 4)


def test_subspace_step_from_the_cauchy_products_equals_the_direct_product():
    # W^T Z Z^T r0 comes from the Cauchy point's p and t; computed directly it agrees
    rng = np.random.default_rng(9)
    n = 200
    memory = _memory_with_pairs(rng, n, 5)
    lower, upper = -rng.random(n) * 0.1, rng.random(n) * 0.1
    box = Box(lower, upper)
    x = rng.uniform(lower, upper)
    g = rng.standard_normal(n)
    point = cauchy_point(x, g, box, memory)
    memory.update_free_set(point.free)
    assert point.passed > 0 and point.p is not None
    fast = subspace_minimization(x, g, point, box, memory)
    direct = subspace_minimization(x, g, point._replace(p=None), box, memory)
    np.testing.assert_allclose(fast, direct, rtol=1e-10, atol=1e-13)

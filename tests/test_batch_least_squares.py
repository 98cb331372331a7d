"""``arrayopt.batch.least_squares`` against SciPy's, problem by problem, on every array library.

The references are ``scipy.optimize.least_squares`` run on each problem alone:
``method="lm"`` for unbounded problems, ``method="trf"`` with the same bounds. Both and
the batched solver stop within their tolerances of the same minimiser, so solutions are
compared to a tolerance that the stopping rules imply, and the batch must reach a cost no
higher than SciPy's (to rounding).
"""

import math

import numpy as np
import pytest

from arrayopt import batch

from batch_problems import BY_NAME, FAMILIES, decay, gaussian, scipy_least_squares, to_numpy

scipy_optimize = pytest.importorskip("scipy.optimize")

JAC_MODES = ["analytic", "differences", "with_fun"]


def functions(family, xp, y, mode, pass_indices=False):
    """(fun, jac) in the form least_squares takes for ``mode``."""
    t = xp.asarray(family.t)

    def data(rows):
        return y if rows is None else xp.take(y, rows, axis=0)

    def fun(p, rows=None):
        r = family.model(xp, t, p) - data(rows)
        return (r, family.jac(xp, t, p)) if mode == "with_fun" else r

    def jac(p, rows=None):
        return family.jac(xp, t, p)

    jac_arg = {"analytic": jac, "differences": None, "with_fun": True}[mode]
    return fun, jac_arg


def assert_matches(res, refs, rtol, cost_rtol):
    """Every problem reached SciPy's minimiser (to ``rtol``) at a cost no higher than SciPy's."""
    x = to_numpy(res.x)
    cost = to_numpy(res.cost)
    for b, ref in enumerate(refs):
        np.testing.assert_allclose(x[b], ref.x, rtol=rtol, atol=rtol * 1e-2, err_msg=f"problem {b}")
        assert cost[b] <= ref.cost * (1 + cost_rtol) + 1e-15, (b, cost[b], ref.cost)


@pytest.mark.parametrize("mode", JAC_MODES)
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_unbounded_problems_match_scipy_lm(family, mode, xp):
    _, p0, y = family.draw(12, seed=1)
    fun, jac = functions(family, xp, xp.asarray(y), mode)
    res = batch.least_squares(fun, xp.asarray(p0), jac=jac)
    assert_matches(res, scipy_least_squares(family, y, p0, "lm"), rtol=1e-4, cost_rtol=1e-7)
    status = to_numpy(res.status)
    assert set(status.tolist()) <= {1, 2, 3, 4}
    assert not to_numpy(res.active_mask).any()


@pytest.mark.parametrize("mode", JAC_MODES)
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_bounded_problems_match_scipy_trf(family, mode, xp):
    _, p0, y = family.draw(16, seed=2)
    p0 = family.start_in_bounds(p0)
    bounds = (np.array(family.lb), np.array(family.ub))
    fun, jac = functions(family, xp, xp.asarray(y), mode)
    res = batch.least_squares(fun, xp.asarray(p0), jac=jac, bounds=(xp.asarray(bounds[0]), xp.asarray(bounds[1])))
    refs = scipy_least_squares(family, y, p0, "trf", bounds=bounds)
    assert_matches(res, refs, rtol=1e-4, cost_rtol=1e-7)
    x = to_numpy(res.x)
    assert (x >= bounds[0]).all() and (x <= bounds[1]).all()
    active = to_numpy(res.active_mask)
    expected = np.array([ref.active_mask for ref in refs])
    np.testing.assert_array_equal(active, expected)
    if family.name != "hill":  # the Hill draws with these bounds happen to bind nowhere
        assert active.any(), "these draws should put some solutions on a bound"


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_float32_in_float32_out(family, xp):
    _, p0, y = family.draw(10, seed=3)
    fun, jac = functions(family, xp, xp.asarray(y.astype(np.float32)), "analytic")
    res = batch.least_squares(fun, xp.asarray(p0.astype(np.float32)), jac=jac)
    for key in ("x", "cost", "fun", "jac", "grad", "optimality"):
        assert res[key].dtype == xp.float32, key
    refs = scipy_least_squares(family, y.astype(np.float32).astype(np.float64), p0, "lm")
    assert_matches(res, refs, rtol=2e-3, cost_rtol=1e-3)


def test_the_result_describes_the_solution(xp):
    family = BY_NAME["gaussian"]
    _, p0, y = family.draw(5, seed=4)
    fun, jac = functions(family, xp, xp.asarray(y), "analytic")
    res = batch.least_squares(fun, xp.asarray(p0), jac=jac)
    x = to_numpy(res.x)
    r = family.model(np, family.t, x) - y
    J = family.jac(np, family.t, x)
    np.testing.assert_allclose(to_numpy(res.fun), r, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(to_numpy(res.jac), J, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(to_numpy(res.cost), 0.5 * (r * r).sum(1), rtol=1e-12)
    grad = np.einsum("bmn,bm->bn", J, r)
    np.testing.assert_allclose(to_numpy(res.grad), grad, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(to_numpy(res.optimality), np.abs(grad).max(1), rtol=1e-8, atol=1e-14)
    nfev, nit, njev = to_numpy(res.nfev), to_numpy(res.nit), to_numpy(res.njev)
    np.testing.assert_array_equal(nfev, nit + 1)
    assert (njev >= 1).all() and (njev <= nfev).all()
    np.testing.assert_array_equal(to_numpy(res.success), to_numpy(res.status) > 0)
    assert res.message(0) == batch.Status(int(to_numpy(res.status)[0])).message


def test_problems_that_fail_fail_alone(xp):
    """NaN data, a singular Jacobian, a non-finite Jacobian: the other problems get what they get alone."""
    family = BY_NAME["gaussian"]
    _, p0, y = family.draw(6, seed=5)
    y[1, 7] = np.nan  # NaN data
    p0[2] = [0.0, 5.0, 1.0, 0.2]  # no peak: the Jacobian's mu and s columns are zero at the start
    y[2] = 0.2 + 0.01 * np.random.default_rng(6).standard_normal(y.shape[1])
    t = xp.asarray(family.t)
    y_x = xp.asarray(y)

    def fun(p, rows):
        return gaussian(xp, t, p) - xp.take(y_x, rows, axis=0)

    def jac(p, rows):
        J = family.jac(xp, t, p)
        poisoned = xp.reshape(rows == 3, (-1, 1, 1))  # problem 3's Jacobian is NaN
        return xp.where(poisoned, math.nan, J)

    res = batch.least_squares(fun, xp.asarray(p0), jac=jac, pass_indices=True)
    status = to_numpy(res.status)
    assert status[1] == batch.Status.NONFINITE_RESIDUALS
    assert status[3] == batch.Status.NONFINITE_JACOBIAN
    assert status[2] > 0 and np.isfinite(to_numpy(res.x)[2]).all()
    np.testing.assert_array_equal(to_numpy(res.x)[[1, 3]], p0[[1, 3]])  # nothing done
    assert np.isnan(to_numpy(res.grad)[[1, 3]]).all()
    for b in (0, 4, 5):  # the healthy problems: as when fitted alone
        alone = batch.least_squares(
            lambda p, rows, b=b: fun(p, rows + b), xp.asarray(p0[b : b + 1]), jac=jac, pass_indices=True
        )
        np.testing.assert_allclose(to_numpy(res.x)[b], to_numpy(alone.x)[0], rtol=1e-10)
        assert to_numpy(res.nfev)[b] == to_numpy(alone.nfev)[0]


def test_divergent_trials_are_refused_per_problem(xp):
    """A model that overflows for far-off trial points only slows its own problem down."""
    t = xp.asarray(np.linspace(0.0, 1.0, 8))
    truth = np.array([[1.0, -2.0], [1.0, 300.0]])  # the second grows like e^300 t: huge but finite data

    def model(p):
        return p[:, :1] * xp.exp(p[:, 1:] * t)

    with np.errstate(over="ignore"):
        y = to_numpy(model(xp.asarray(truth)))
    y_x = xp.asarray(y)
    res = batch.least_squares(lambda p: model(p) - y_x, xp.asarray([[0.5, -1.0], [1.0, 290.0]]))
    x = to_numpy(res.x)
    np.testing.assert_allclose(x[0], truth[0], rtol=1e-6)
    assert to_numpy(res.status)[0] > 0


def test_b_zero_and_b_one(xp):
    family = BY_NAME["decay"]
    t = xp.asarray(family.t)
    seen = []

    def fun(p):
        seen.append(tuple(p.shape))
        return decay(xp, t, p) - xp.zeros((p.shape[0], family.t.size))

    res = batch.least_squares(fun, xp.zeros((0, 3)))
    assert seen == [(0, 3)]
    assert res.x.shape == (0, 3) and res.fun.shape == (0, 25) and res.jac.shape == (0, 25, 3)
    assert res.status.shape == (0,) and res.cost.shape == (0,)

    _, p0, y = family.draw(1, seed=7)
    fun1, jac1 = functions(family, xp, xp.asarray(y), "analytic")
    res = batch.least_squares(fun1, xp.asarray(p0), jac=jac1)
    assert res.x.shape == (1, 3)
    assert_matches(res, scipy_least_squares(family, y, p0, "lm"), rtol=1e-4, cost_rtol=1e-7)


def test_pass_indices_evaluates_only_running_problems(xp):
    family = BY_NAME["hill"]
    _, p0, y = family.draw(20, seed=8)
    y_x = xp.asarray(y)
    calls = []
    fun, _ = functions(family, xp, y_x, "with_fun")

    def recorded(p, rows):
        calls.append(to_numpy(rows).tolist())
        return fun(p, rows)

    res = batch.least_squares(recorded, xp.asarray(p0), jac=True, pass_indices=True)
    nfev = to_numpy(res.nfev)
    assert calls[0] == list(range(20))
    for rows in calls:
        assert rows == sorted(rows) or len(rows) <= 20
    # each problem is evaluated exactly nfev times, and never after it stopped
    counts = np.zeros(20, int)
    for rows in calls:
        counts[rows] += 1
    np.testing.assert_array_equal(counts, nfev)
    assert len(calls) == nfev.max()
    stacked = batch.least_squares(lambda p: fun(p), xp.asarray(p0), jac=True)
    np.testing.assert_allclose(to_numpy(res.x), to_numpy(stacked.x), rtol=1e-9)


def test_without_pass_indices_finished_rows_keep_their_values(xp):
    family = BY_NAME["decay"]
    _, p0, y = family.draw(8, seed=9)
    fun, _ = functions(family, xp, xp.asarray(y), "analytic")
    stacks = []

    def recorded(p):
        stacks.append(to_numpy(p).copy())
        return fun(p)

    res = batch.least_squares(recorded, xp.asarray(p0))
    x, nfev = to_numpy(res.x), to_numpy(res.nfev)
    assert all(stack.shape == (8, 3) for stack in stacks)
    last = stacks[-1]
    np.testing.assert_array_equal(last[nfev < nfev.max()], x[nfev < nfev.max()])


@pytest.mark.parametrize(("block_size", "workers"), [(3, 1), (5, 2), (64, 1)])
def test_blocks_and_workers_give_the_same_fits(block_size, workers, xp):
    family = BY_NAME["gaussian"]
    _, p0, y = family.draw(17, seed=10)
    fun, jac = functions(family, xp, xp.asarray(y), "analytic")
    one = batch.least_squares(fun, xp.asarray(p0), jac=jac, pass_indices=True, block_size=17)
    split = batch.least_squares(fun, xp.asarray(p0), jac=jac, pass_indices=True, block_size=block_size, workers=workers)
    np.testing.assert_allclose(to_numpy(split.x), to_numpy(one.x), rtol=1e-9)
    np.testing.assert_array_equal(to_numpy(split.status), to_numpy(one.status))


def test_status_codes():
    family = BY_NAME["gaussian"]
    _, p0, y = family.draw(6, seed=11)
    fun, jac = functions(family, np, y, "analytic")
    budget = batch.least_squares(fun, p0, jac=jac, max_nfev=2)
    assert (budget.status == batch.Status.MAX_NFEV).all() and (budget.nfev == 2).all()
    assert not budget.success.any()
    ftol_only = batch.least_squares(fun, p0, jac=jac, xtol=None, gtol=None)
    assert (ftol_only.status == batch.Status.FTOL).all()
    xtol_only = batch.least_squares(fun, p0, jac=jac, ftol=None, gtol=None)
    assert (xtol_only.status == batch.Status.XTOL).all()
    exact = family.model(np, family.t, p0)  # data the start fits exactly: the gradient is zero
    at_start = batch.least_squares(lambda p: family.model(np, family.t, p) - exact, p0, jac=jac)
    assert (at_start.status == batch.Status.GTOL).all() and (at_start.nfev == 1).all()
    assert [s.message for s in batch.Status] == [
        "The maximum number of function evaluations is exceeded.",
        "`gtol` termination condition is satisfied.",
        "`ftol` termination condition is satisfied.",
        "`xtol` termination condition is satisfied.",
        "Both `ftol` and `xtol` termination conditions are satisfied.",
        "Residuals are not finite in the initial point.",
        "The Jacobian is not finite at the point reached.",
    ]
    from scipy.optimize._lsq.least_squares import TERMINATION_MESSAGES

    for code in range(5):
        assert batch.Status(code).message == TERMINATION_MESSAGES[code]


def test_bounds_forms_and_fixed_variables(xp):
    family = BY_NAME["decay"]
    _, p0, y = family.draw(6, seed=12)
    fun, jac = functions(family, xp, xp.asarray(y), "analytic")
    lb, ub = np.array(family.lb), np.array(family.ub)
    p0 = family.start_in_bounds(p0)
    pair = batch.least_squares(fun, xp.asarray(p0), jac=jac, bounds=(lb.tolist(), ub.tolist()))
    bounds_object = batch.least_squares(fun, xp.asarray(p0), jac=jac, bounds=scipy_optimize.Bounds(lb, ub))
    per_problem = batch.least_squares(
        fun, xp.asarray(p0), jac=jac, bounds=(xp.asarray(np.tile(lb, (6, 1))), xp.asarray(np.tile(ub, (6, 1))))
    )
    for other in (bounds_object, per_problem):
        np.testing.assert_array_equal(to_numpy(other.x), to_numpy(pair.x))
    # lb == ub fixes a variable: problem 0 with its rate held at 0.7, against SciPy without that variable
    lbs, ubs = np.tile(lb, (6, 1)), np.tile(ub, (6, 1))
    lbs[0, 1] = ubs[0, 1] = p0[0, 1] = 0.7
    fixed = batch.least_squares(fun, xp.asarray(p0), jac=jac, bounds=(xp.asarray(lbs), xp.asarray(ubs)))
    x = to_numpy(fixed.x)
    assert x[0, 1] == 0.7

    def reduced(q):
        return family.model(np, family.t, np.array([[q[0], 0.7, q[1]]]))[0] - y[0]

    ref = scipy_optimize.least_squares(reduced, p0[0, [0, 2]], bounds=(lb[[0, 2]], ub[[0, 2]]))
    np.testing.assert_allclose(x[0, [0, 2]], ref.x, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(x[1:], to_numpy(pair.x)[1:], rtol=1e-12)


def test_x_scale_numbers_reach_the_same_solutions():
    family = BY_NAME["gaussian"]
    _, p0, y = family.draw(8, seed=13)
    fun, jac = functions(family, np, y, "analytic")
    res = batch.least_squares(fun, p0, jac=jac, x_scale=np.array([1.0, 1.0, 0.3, 0.1]))
    assert_matches(res, scipy_least_squares(family, y, p0, "lm"), rtol=1e-4, cost_rtol=1e-7)


BAD_ARGUMENTS = [
    ({"x0": np.zeros(3)}, ValueError, "x0 must have shape"),
    ({"x0": np.zeros((2, 0))}, ValueError, "at least one variable"),
    ({"x0": np.zeros((2, 3), complex)}, ValueError, "x0 must be real"),
    ({"x0": [[0.0, 1.0, 1.0]]}, TypeError, "x0 must be an array"),
    ({"bounds": (0.0, -1.0)}, ValueError, "at most its upper bound"),
    ({"bounds": (np.zeros(4), 1.0)}, ValueError, r"lb has shape \(4,\)"),
    ({"bounds": (np.nan, 1.0)}, ValueError, "NaN"),
    ({"bounds": 3.0}, ValueError, "bounds must be a pair"),
    ({"bounds": (0.6, 5.0)}, ValueError, "x0 is infeasible: problem 0, variable 2"),
    ({"ftol": -1.0}, ValueError, "ftol must be"),
    ({"ftol": None, "xtol": None, "gtol": 1e-20}, ValueError, "At least one of the tolerances"),
    ({"max_nfev": 0}, ValueError, "max_nfev must be"),
    ({"x_scale": "auto"}, ValueError, "x_scale must be"),
    ({"x_scale": -1.0}, ValueError, "x_scale must be"),
    ({"jac": "3-point"}, ValueError, "jac must be"),
    ({"workers": 2}, ValueError, "needs pass_indices=True"),
    ({"workers": 0, "pass_indices": True}, ValueError, "workers must be"),
    ({"block_size": 0, "pass_indices": True}, ValueError, "block_size must be"),
    ({"block_size": 8}, ValueError, "block_size=8 needs pass_indices=True"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ARGUMENTS, ids=[m for _, _, m in BAD_ARGUMENTS])
def test_bad_arguments_raise_before_any_evaluation(kwargs, error, match):
    x0 = np.array([[1.0, 2.0, 0.5], [1.0, 1.0, 0.1]])
    before = x0.copy()
    calls = []

    def fun(p, rows=None):
        calls.append(1)
        return decay(np, np.linspace(0, 1, 5), p)

    arguments = {"x0": x0, **kwargs}
    with pytest.raises(error, match=match):
        batch.least_squares(fun, **arguments)
    assert calls == []
    np.testing.assert_array_equal(x0, before)


def test_wrong_shapes_from_fun_and_jac_are_named():
    x0 = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"fun returned an array of shape \(2, 4\); expected \(3, 4\)"):
        batch.least_squares(lambda p: np.ones((2, 4)), x0)
    with pytest.raises(ValueError, match=r"jac returned an array of shape \(3, 4, 3\); expected \(3, 4, 2\)"):
        batch.least_squares(lambda p: np.ones((3, 4)), x0, jac=lambda p: np.ones((3, 4, 3)))
    with pytest.raises(TypeError, match="must return a pair"):
        batch.least_squares(lambda p: np.ones((3, 4)), x0, jac=True)


def test_default_blocks_are_even_across_workers():
    """On NumPy a large batch is fitted in blocks of at most 8192, as many per worker."""
    family = BY_NAME["decay"]
    _, p0, y = family.draw(20000, seed=14)
    fun, _ = functions(family, np, y, "with_fun")
    first_calls = []

    def recorded(p, rows):
        if len(rows) and not any(rows[0] == seen[0] for seen in first_calls):
            first_calls.append((int(rows[0]), len(rows)))
        return fun(p, rows)

    batch.least_squares(recorded, p0, jac=True, pass_indices=True, workers=2, max_nfev=2)
    assert sorted(first_calls) == [(0, 5000), (5000, 5000), (10000, 5000), (15000, 5000)]

"""``arrayopt.batch.minimize`` against SciPy's L-BFGS-B, problem by problem, on every array library.

The reference is ``scipy.optimize.minimize(method="L-BFGS-B")`` run on each problem alone,
with the same options. The batch follows SciPy's algorithm with the same line search, so
on these families it takes SciPy's iterations to within rounding: the solutions must
agree to a tolerance the stopping tests imply, the objective must be no higher than
SciPy's (to rounding), and the evaluation counts must be SciPy's for most problems and
close for the rest (rounding in another order can grow into another path on
ill-conditioned problems such as Rosenbrock's valley). What is measured is printed by
``benchmarks/batch_minimize.py``; the assertions here are:

* per problem, ``x`` within ``rtol`` of SciPy's (scaled by the problem) and ``fun`` no
  higher than SciPy's plus ``1e-8`` relative;
* over a family, the number of evaluations equal to SciPy's for at least ``same`` of the
  problems, and the total within 10 % of SciPy's.

Families: Rosenbrock's chain in n = 2, 5 and 8 variables, unbounded and in per-problem
boxes some of which bind; strictly convex quadratics :math:`\\tfrac12 x^T A x - b^T x`
whose unconstrained minimisers lie outside their boxes; L2-regularised logistic
regressions (one small data set per problem), bounded and not.
"""

import math

import numpy as np
import pytest
from test_batch_cupy import reads  # noqa: F401 (a fixture)

import arrayopt.backends
from arrayopt import batch

import cpu_elementwise
from batch_problems import to_numpy

scipy_optimize = pytest.importorskip("scipy.optimize")


# -- the families: each objective takes the (B, n) stack in any array namespace ----------------


def rosenbrock(xp):
    def fun(x, rows=None):
        a, b = x[:, :-1], x[:, 1:]
        gap = b - a * a
        f = xp.sum(100.0 * gap * gap + (1 - a) * (1 - a), axis=1)
        zero = xp.zeros_like(x[:, :1])
        g = xp.concat([-400.0 * a * gap - 2.0 * (1 - a), zero], axis=1) + xp.concat([zero, 200.0 * gap], axis=1)
        return f, g

    return fun


def draw_rosenbrock(count, n, seed, bounded):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-2.0, 2.0, (count, n))
    if not bounded:
        return x0, None
    lb = rng.uniform(-2.0, -0.5, (count, n))
    ub = np.where(rng.uniform(size=(count, n)) < 0.5, rng.uniform(0.2, 0.9, (count, n)), np.inf)
    return np.clip(x0, lb, ub), (lb, ub)


def quadratic(xp, A, b):
    def fun(x, rows=None):
        AA = A if rows is None else xp.take(A, rows, axis=0)
        bb = b if rows is None else xp.take(b, rows, axis=0)
        Ax = xp.sum(AA * x[:, None, :], axis=2)
        return xp.sum(x * (0.5 * Ax - bb), axis=1), Ax - bb

    return fun


def draw_quadratic(count, n, seed):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((count, n, n)))
    eigen = np.exp(rng.uniform(0.0, math.log(50.0), (count, n)))
    A = np.einsum("bij,bj,bkj->bik", Q, eigen, Q)
    b = rng.standard_normal((count, n)) * 3.0
    x0 = rng.uniform(-0.5, 0.5, (count, n))
    return A, b, x0, (-1.0, 1.0)  # the unconstrained minimisers lie outside the box for most problems


def logistic(xp, X, y, lam):
    def fun(w, rows=None):
        XX = X if rows is None else xp.take(X, rows, axis=0)
        yy = y if rows is None else xp.take(y, rows, axis=0)
        z = xp.sum(XX * w[:, None, :], axis=2)
        loss = xp.log1p(xp.exp(-xp.abs(z))) + xp.maximum(z, 0.0) - yy * z
        f = xp.sum(loss, axis=1) + 0.5 * lam * xp.sum(w * w, axis=1)
        sigma = 1 / (1 + xp.exp(-z))
        return f, xp.sum(XX * (sigma - yy)[:, :, None], axis=1) + lam * w

    return fun


def draw_logistic(count, n, m, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((count, m, n))
    truth = rng.standard_normal((count, n)) * 2.0
    p = 1 / (1 + np.exp(-np.einsum("bmn,bn->bm", X, truth)))
    y = (rng.uniform(size=p.shape) < p).astype(float)
    return X, y, np.zeros((count, n))


def scipy_runs(fun_np, x0, bounds, options=None):
    """SciPy's L-BFGS-B on each problem alone: a list of results."""
    count, n = x0.shape
    results = []
    for b in range(count):

        def one(q, b=b):
            f, g = fun_np(q[None, :], np.array([b]))
            return float(f[0]), np.array(g[0])

        if bounds is None:
            box = None
        else:
            lb = np.broadcast_to(np.asarray(bounds[0], float), (count, n))[b]
            ub = np.broadcast_to(np.asarray(bounds[1], float), (count, n))[b]
            box = scipy_optimize.Bounds(lb, ub)
        results.append(scipy_optimize.minimize(one, x0[b], jac=True, method="L-BFGS-B", bounds=box, options=options))
    return results


def on(xp, bounds):
    return None if bounds is None else tuple(xp.asarray(np.asarray(v, dtype=float)) for v in bounds)


def assert_matches(res, refs, rtol, same, scale=1.0):
    """Solutions within rtol (relative to ``scale``), objectives no higher, evaluation counts mostly SciPy's."""
    x, f = to_numpy(res.x), to_numpy(res.fun)
    nfev = to_numpy(res.nfev)
    equal = 0
    for b, ref in enumerate(refs):
        assert ref.success, (b, ref.message)
        np.testing.assert_allclose(x[b], ref.x, rtol=rtol, atol=rtol * scale, err_msg=f"problem {b}")
        assert f[b] <= ref.fun + 1e-8 * max(1.0, abs(ref.fun)), (b, f[b], ref.fun)
        equal += int(nfev[b] == ref.nfev)
    assert equal >= same * len(refs), f"{equal} of {len(refs)} problems took SciPy's number of evaluations"
    total, ref_total = nfev.sum(), sum(ref.nfev for ref in refs)
    assert abs(total - ref_total) <= 0.1 * ref_total, (total, ref_total)
    np.testing.assert_array_equal(to_numpy(res.success), True)
    np.testing.assert_array_equal(to_numpy(res.status), 0)


# -- against SciPy ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 5, 8])
@pytest.mark.parametrize("bounded", [False, True], ids=["unbounded", "boxed"])
def test_rosenbrock_matches_scipy(n, bounded, xp):
    x0, bounds = draw_rosenbrock(12, n, seed=n, bounded=bounded)
    res = batch.minimize(rosenbrock(xp), xp.asarray(x0), bounds=on(xp, bounds))
    refs = scipy_runs(rosenbrock(np), x0, bounds)
    assert_matches(res, refs, rtol=2e-4, same=0.75)
    if bounded:
        x = to_numpy(res.x)
        assert (x >= bounds[0]).all() and (x <= bounds[1]).all()
        assert (x == bounds[1]).any(), "these boxes should bind for some problems"


def test_quadratics_with_active_bounds_match_scipy(xp):
    A, b, x0, bounds = draw_quadratic(16, 6, seed=20)
    res = batch.minimize(quadratic(xp, xp.asarray(A), xp.asarray(b)), xp.asarray(x0), bounds=bounds)
    refs = scipy_runs(quadratic(np, A, b), x0, bounds)
    assert_matches(res, refs, rtol=1e-5, same=0.9)
    x = to_numpy(res.x)
    assert (np.abs(x) == 1.0).sum() >= 16, "most problems should end with variables on their bounds"
    # the active bounds are where SciPy has them
    np.testing.assert_array_equal(np.abs(x) == 1.0, np.abs(np.array([ref.x for ref in refs])) == 1.0)


@pytest.mark.parametrize("bounded", [False, True], ids=["unbounded", "boxed"])
def test_logistic_fits_match_scipy(bounded, xp):
    X, y, w0 = draw_logistic(10, 4, 40, seed=30)
    bounds = (-0.5, 0.5) if bounded else None
    res = batch.minimize(logistic(xp, xp.asarray(X), xp.asarray(y), 0.1), xp.asarray(w0), bounds=bounds)
    refs = scipy_runs(logistic(np, X, y, 0.1), w0, bounds)
    assert_matches(res, refs, rtol=1e-4, same=0.9, scale=1.0)


def test_options_reach_scipy_too():
    """maxcor, ftol, gtol, maxls as SciPy reads them."""
    x0, bounds = draw_rosenbrock(8, 4, seed=40, bounded=True)
    options = {"maxcor": 3, "ftol": 1e-12, "gtol": 1e-7, "maxls": 10}
    res = batch.minimize(rosenbrock(np), x0, bounds=bounds, options=options)
    refs = scipy_runs(rosenbrock(np), x0, bounds, options=options)
    assert_matches(res, refs, rtol=1e-5, same=0.75)


def test_budgets_stop_as_scipy_does():
    x0, _ = draw_rosenbrock(6, 5, seed=41, bounded=False)
    for options, stop in (({"maxiter": 5}, batch.Stop.MAXITER), ({"maxfun": 7}, batch.Stop.MAXFUN)):
        res = batch.minimize(rosenbrock(np), x0, options=options)
        refs = scipy_runs(rosenbrock(np), x0, None, options=options)
        np.testing.assert_array_equal(res.stop, int(stop))
        np.testing.assert_array_equal(res.status, 1)
        assert not res.success.any()
        np.testing.assert_array_equal(res.nit, [ref.nit for ref in refs])
        np.testing.assert_array_equal(res.nfev, [ref.nfev for ref in refs])
        assert res.message(0) == refs[0].message


def test_the_result_describes_the_solution(xp):
    x0, bounds = draw_rosenbrock(6, 3, seed=42, bounded=True)
    fun = rosenbrock(xp)
    res = batch.minimize(fun, xp.asarray(x0), bounds=on(xp, bounds))
    f, g = fun(xp.asarray(to_numpy(res.x)))
    np.testing.assert_array_equal(to_numpy(res.fun), to_numpy(f))
    np.testing.assert_array_equal(to_numpy(res.jac), to_numpy(g))
    assert res.x.shape == (6, 3) and res.jac.shape == (6, 3) and res.fun.shape == (6,)
    nfev, njev, nit = to_numpy(res.nfev), to_numpy(res.njev), to_numpy(res.nit)
    np.testing.assert_array_equal(njev, nfev)
    assert (nfev > nit).all()
    stop = to_numpy(res.stop)
    np.testing.assert_array_equal(to_numpy(res.status), [batch.Stop(int(s)).status for s in stop])
    np.testing.assert_array_equal(to_numpy(res.success), to_numpy(res.status) == 0)
    assert res.message(0) == batch.Stop(int(stop[0])).message
    assert set(res) == {"x", "fun", "jac", "nit", "nfev", "njev", "status", "success", "stop"}


def test_stop_messages_are_scipys():
    refs = {
        batch.Stop.GTOL: "CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL",
        batch.Stop.FTOL: "CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH",
        batch.Stop.MAXITER: "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT",
        batch.Stop.MAXFUN: "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT",
    }
    for stop, text in refs.items():
        assert stop.message == text
    assert [s.status for s in batch.Stop] == [0, 0, 1, 1, 2, 2]


# -- sizes, precision, methods, gradients ------------------------------------------------------


def test_b_zero_and_b_one(xp):
    calls = []

    def fun(x):
        calls.append(tuple(x.shape))
        return rosenbrock(xp)(x)

    res = batch.minimize(fun, xp.zeros((0, 3)))
    assert calls == []  # nothing to evaluate
    assert res.x.shape == (0, 3) and res.jac.shape == (0, 3) and res.fun.shape == (0,) and res.stop.shape == (0,)
    x0, bounds = draw_rosenbrock(1, 4, seed=43, bounded=True)
    res = batch.minimize(rosenbrock(xp), xp.asarray(x0), bounds=on(xp, bounds))
    assert res.x.shape == (1, 4)
    assert_matches(res, scipy_runs(rosenbrock(np), x0, bounds), rtol=1e-5, same=1.0)


def test_float32_in_float32_out(xp):
    A, b, x0, bounds = draw_quadratic(8, 4, seed=44)
    fun = quadratic(xp, xp.asarray(A.astype(np.float32)), xp.asarray(b.astype(np.float32)))
    res = batch.minimize(fun, xp.asarray(x0.astype(np.float32)), bounds=bounds)
    for key in ("x", "fun", "jac"):
        assert res[key].dtype == xp.float32, key
    refs = scipy_runs(quadratic(np, A, b), x0, bounds)
    x = to_numpy(res.x)
    for k, ref in enumerate(refs):
        np.testing.assert_allclose(x[k], ref.x, atol=2e-3)
    assert to_numpy(res.success).all()


def test_lbfgs_is_the_unbounded_iteration(xp):
    x0, _ = draw_rosenbrock(5, 3, seed=45, bounded=False)
    plain = batch.minimize(rosenbrock(xp), xp.asarray(x0), method="lbfgs")
    bounded_method = batch.minimize(rosenbrock(xp), xp.asarray(x0), method="L-BFGS-B", bounds=(-np.inf, np.inf))
    for key in ("x", "nfev", "nit", "stop"):
        np.testing.assert_array_equal(to_numpy(plain[key]), to_numpy(bounded_method[key]), err_msg=key)
    with pytest.raises(ValueError, match="method 'lbfgs' takes no bounds"):
        batch.minimize(rosenbrock(xp), xp.asarray(x0), method="lbfgs", bounds=(0.0, 1.0))


@pytest.mark.parametrize("jac", ["callable", "2-point", None])
def test_gradients_by_callable_and_differences(jac, xp):
    x0, bounds = draw_rosenbrock(6, 3, seed=46, bounded=True)
    full = rosenbrock(xp)

    def value(x):
        return full(x)[0]

    def gradient(x):
        return full(x)[1]

    jac_arg = gradient if jac == "callable" else jac
    res = batch.minimize(value, xp.asarray(x0), jac=jac_arg, bounds=on(xp, bounds))
    exact = batch.minimize(full, xp.asarray(x0), bounds=on(xp, bounds))
    np.testing.assert_allclose(to_numpy(res.x), to_numpy(exact.x), rtol=1e-4, atol=1e-6)
    nfev, njev = to_numpy(res.nfev), to_numpy(res.njev)
    if jac == "callable":
        np.testing.assert_array_equal(nfev, to_numpy(exact.nfev))
    else:  # one evaluation at the point and one per variable
        np.testing.assert_array_equal(nfev, 4 * njev)
    if jac is None:  # SciPy's own differences with the absolute step eps
        refs = []
        for k in range(6):
            box = scipy_optimize.Bounds(bounds[0][k], bounds[1][k])
            one = scipy_optimize.minimize(lambda q: rosenbrock(np)(q[None])[0][0], x0[k], method="L-BFGS-B", bounds=box)
            refs.append(one)
        np.testing.assert_allclose(to_numpy(res.x), [ref.x for ref in refs], rtol=1e-4, atol=1e-6)
        assert abs(int(nfev.sum()) - sum(ref.nfev for ref in refs)) <= 0.1 * sum(ref.nfev for ref in refs)


def test_x0_outside_the_box_is_projected_as_scipy_does(xp):
    x0 = np.array([[3.0, -3.0], [0.2, 0.3]])
    res = batch.minimize(rosenbrock(xp), xp.asarray(x0), bounds=(-1.0, 0.5))
    refs = scipy_runs(rosenbrock(np), x0, (-1.0, 0.5))
    np.testing.assert_allclose(to_numpy(res.x), [ref.x for ref in refs], rtol=1e-6)


def test_fixed_variables(xp):
    """lb == ub holds a variable; the others solve the reduced problem."""
    x0, _ = draw_rosenbrock(3, 3, seed=47, bounded=False)
    lb = np.full((3, 3), -5.0)
    ub = np.full((3, 3), 5.0)
    lb[0, 1] = ub[0, 1] = x0[0, 1] = 0.7
    res = batch.minimize(rosenbrock(xp), xp.asarray(x0), bounds=(xp.asarray(lb), xp.asarray(ub)))
    assert to_numpy(res.x)[0, 1] == 0.7
    refs = scipy_runs(rosenbrock(np), x0, (lb, ub))
    np.testing.assert_allclose(to_numpy(res.x), [ref.x for ref in refs], rtol=1e-5, atol=1e-7)


# -- one problem's failure is its own ----------------------------------------------------------


def test_problems_that_fail_fail_alone(xp):
    """NaN at the start, NaN beyond a cliff on the way, NaN everywhere but the start: the others are untouched."""
    x0, _ = draw_rosenbrock(6, 4, seed=48, bounded=False)
    x0[0] = [-1.2, 1.0, -1.2, 1.0]
    x0[2] = [-1.0, 0.5, 0.2, 0.1]
    x0[3] = [0.5, 0.5, 0.5, 0.5]
    clean = rosenbrock(xp)

    def fun(x, rows):
        f, g = clean(x, rows)
        rows_b = xp.reshape(rows, (-1,))
        start = rows_b == 1
        cliff = (rows_b == 2) & (x[:, 0] > 0.3)  # problem 2 is not finite beyond x0 > 0.3
        nowhere = (rows_b == 3) & (x[:, 0] != 0.5)  # problem 3 is finite only at its start
        bad = start | cliff | nowhere
        return xp.where(bad, math.nan, f), xp.where(bad[:, None], math.nan, g)

    res = batch.minimize(fun, xp.asarray(x0), pass_indices=True)
    stop = to_numpy(res.stop)
    assert stop[1] == batch.Stop.NONFINITE and to_numpy(res.nit)[1] == 0 and to_numpy(res.nfev)[1] == 1
    np.testing.assert_array_equal(to_numpy(res.x)[1], x0[1])
    # problem 2 goes on, short of the cliff, to a lower value than its start
    assert to_numpy(res.x)[2, 0] <= 0.3 and to_numpy(res.nit)[2] > 5
    assert to_numpy(res.fun)[2] < float(to_numpy(clean(xp.asarray(x0[2:3]))[0])[0]) - 1.0
    assert stop[3] == batch.Stop.LINE_SEARCH and to_numpy(res.status)[3] == 2
    np.testing.assert_array_equal(to_numpy(res.x)[3], x0[3])
    for k in (0, 4, 5):  # the healthy problems: as when minimised alone
        alone = batch.minimize(lambda x, rows, k=k: fun(x, rows + k), xp.asarray(x0[k : k + 1]), pass_indices=True)
        np.testing.assert_allclose(to_numpy(res.x)[k], to_numpy(alone.x)[0], rtol=1e-10)
        assert to_numpy(res.nfev)[k] == to_numpy(alone.nfev)[0]
        assert to_numpy(res.stop)[k] == to_numpy(alone.stop)[0]


def test_overflowing_trial_points_are_refused_per_problem(xp):
    """exp(x - 500) - x from 0: the line search extrapolates into overflow (inf), comes back, and converges.

    SciPy's L-BFGS-B, which feeds the infinite values to its line search, stops at 491
    here; the batch treats them as too high and reaches the minimiser 500. The other
    problem is not disturbed by its neighbour's infinities.
    """
    seen = []

    def fun(x):
        e = xp.exp(x[:, 0] - 500.0)
        seen.append(to_numpy(xp.isfinite(e)).tolist())
        return e - x[:, 0], xp.reshape(e - 1.0, (-1, 1))

    res = batch.minimize(fun, xp.asarray([[0.0], [490.0]]))
    assert sum(not ok for row in seen for ok in row) > 5
    np.testing.assert_allclose(to_numpy(res.x)[:, 0], [500.0, 500.0], atol=1e-3)
    assert to_numpy(res.success).all()
    alone = batch.minimize(fun, xp.asarray([[490.0]]))
    np.testing.assert_allclose(to_numpy(res.x)[1], to_numpy(alone.x)[0], rtol=1e-12)
    assert to_numpy(res.nfev)[1] == to_numpy(alone.nfev)[0]


# -- calling conventions -----------------------------------------------------------------------


def test_pass_indices_evaluates_only_running_problems(xp):
    x0, bounds = draw_rosenbrock(15, 3, seed=49, bounded=True)
    clean = rosenbrock(xp)
    calls = []

    def recorded(x, rows):
        calls.append(to_numpy(rows).tolist())
        return clean(x)

    res = batch.minimize(recorded, xp.asarray(x0), bounds=on(xp, bounds), pass_indices=True)
    nfev = to_numpy(res.nfev)
    assert calls[0] == list(range(15))
    counts = np.zeros(15, int)
    for rows in calls:
        counts[rows] += 1
    np.testing.assert_array_equal(counts, nfev)
    assert len(calls) == nfev.max()
    stacked = batch.minimize(clean, xp.asarray(x0), bounds=on(xp, bounds))
    np.testing.assert_allclose(to_numpy(res.x), to_numpy(stacked.x), rtol=1e-12)


def test_without_pass_indices_finished_rows_keep_their_points(xp):
    x0, _ = draw_rosenbrock(7, 3, seed=50, bounded=False)
    clean = rosenbrock(xp)
    stacks = []

    def recorded(x):
        stacks.append(to_numpy(x).copy())
        return clean(x)

    res = batch.minimize(recorded, xp.asarray(x0))
    x, nfev = to_numpy(res.x), to_numpy(res.nfev)
    assert all(stack.shape == (7, 3) for stack in stacks)
    early = nfev < nfev.max()
    assert early.any()
    np.testing.assert_array_equal(stacks[-1][early], x[early])


@pytest.mark.parametrize(("block_size", "workers"), [(4, 1), (5, 2)])
def test_blocks_and_workers_give_the_same_minima(block_size, workers):
    x0, bounds = draw_rosenbrock(13, 4, seed=51, bounded=True)
    one = batch.minimize(rosenbrock(np), x0, bounds=bounds, pass_indices=True)
    split = batch.minimize(rosenbrock(np), x0, bounds=bounds, pass_indices=True, block_size=block_size, workers=workers)
    np.testing.assert_allclose(split.x, one.x, rtol=1e-9)
    np.testing.assert_array_equal(split.stop, one.stop)


# -- the CuPy backend and the host reads -------------------------------------------------------


@pytest.mark.parametrize("pass_indices", [False, True])
def test_one_host_read_per_round(pass_indices, reads):  # noqa: F811 (the fixture imported above)
    """Only the running count is read back, once per round (one evaluation of every running problem)."""
    xp, log = reads
    x0, bounds = draw_rosenbrock(20, 4, seed=52, bounded=True)
    res = batch.minimize(rosenbrock(xp), xp.asarray(x0), bounds=on(xp, bounds), pass_indices=pass_indices)
    rounds = int(to_numpy(res.nfev).max())  # the first evaluation, then one round per evaluation
    assert log.count("__int__") == rounds, log
    setup = 7  # bounds: NaN in lb, in ub, lb > ub, any finite bound; lb = +inf, ub = -inf
    assert len(log) <= rounds + setup, log


def test_the_cupy_backend_minimises_what_numpy_minimises(monkeypatch):
    x0, bounds = draw_rosenbrock(12, 4, seed=53, bounded=True)
    plain = batch.minimize(rosenbrock(np), x0, bounds=bounds)
    backend = cpu_elementwise.install_cupy_stand_in(monkeypatch, elementwise=False)
    with np.errstate(all="ignore"):  # CuPy does not warn (its backend's quiet() is empty); the stand-in's NumPy does
        on_cupy = batch.minimize(rosenbrock(np), x0, bounds=bounds, pass_indices=True)
    assert arrayopt.backends.get_backend(x0) is backend
    # the same iterations; NumPy takes shortcuts a device does not (see _minimize), so the last bits may differ
    for key in ("stop", "nfev", "nit"):
        np.testing.assert_array_equal(on_cupy[key], plain[key], err_msg=key)
    for key in ("x", "fun"):
        np.testing.assert_allclose(on_cupy[key], plain[key], rtol=1e-12, atol=1e-15, err_msg=key)


# -- bad input ---------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    ({"x0": np.zeros(3)}, ValueError, "x0 must have shape"),
    ({"x0": np.zeros((2, 0))}, ValueError, "at least one variable"),
    ({"x0": [[0.0, 1.0, 1.0]]}, TypeError, "x0 must be an array"),
    ({"fun": 3.0}, TypeError, "fun must be callable"),
    ({"method": "bfgs"}, ValueError, "method must be 'l-bfgs-b' or 'lbfgs'"),
    ({"method": "lbfgs", "bounds": (0.0, 2.0)}, ValueError, "takes no bounds"),
    ({"jac": "3-point"}, ValueError, "jac must be"),
    ({"bounds": (0.0, -1.0)}, ValueError, "at most its upper bound"),
    ({"bounds": (np.zeros(4), 1.0)}, ValueError, r"lb has shape \(4,\)"),
    ({"bounds": (np.nan, 1.0)}, ValueError, "NaN"),
    ({"bounds": (np.inf, np.inf)}, ValueError, "lb contains inf"),
    ({"bounds": 3.0}, ValueError, "bounds must be a pair"),
    ({"options": {"maxcor": 0}}, ValueError, "maxcor must be a positive integer"),
    ({"options": {"maxls": 2.5}}, ValueError, "maxls must be a positive integer"),
    ({"options": {"maxiter": -1}}, ValueError, "maxiter must be a non-negative integer"),
    ({"options": {"ftol": -1.0}}, ValueError, "ftol must be"),
    ({"options": {"gtol": math.nan}}, ValueError, "gtol must be"),
    ({"options": {"eps": 0.0}}, ValueError, "eps must be"),
    ({"options": {"finite_diff_rel_step": 1e-3}}, TypeError, "unknown option 'finite_diff_rel_step'"),
    ({"options": [("maxcor", 3)]}, TypeError, "options must be a dict"),
    ({"pass_indices": 1}, ValueError, "pass_indices must be True or False"),
    ({"workers": 2}, ValueError, "needs pass_indices=True"),
    ({"block_size": 0, "pass_indices": True}, ValueError, "block_size must be"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ARGUMENTS, ids=[m for _, _, m in BAD_ARGUMENTS])
def test_bad_arguments_raise_before_any_evaluation(kwargs, error, match):
    x0 = np.array([[1.0, 2.0, 0.5], [1.0, 1.0, 0.1]])
    before = x0.copy()
    calls = []

    def fun(x, rows=None):
        calls.append(1)
        return rosenbrock(np)(x)

    arguments = {"fun": fun, "x0": x0, **kwargs}
    with pytest.raises(error, match=match):
        batch.minimize(**arguments)
    assert calls == []
    np.testing.assert_array_equal(x0, before)


def test_wrong_outputs_from_fun_are_named():
    x0 = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"fun returned an array of shape \(3, 1\); expected \(3,\)"):
        batch.minimize(lambda x: (np.ones((3, 1)), np.ones((3, 2))), x0)
    with pytest.raises(ValueError, match=r"fun's gradient returned an array of shape \(3, 3\); expected \(3, 2\)"):
        batch.minimize(lambda x: (np.ones(3), np.ones((3, 3))), x0)
    with pytest.raises(TypeError, match="must return a pair"):
        batch.minimize(lambda x: np.ones(3), x0)
    with pytest.raises(ValueError, match=r"jac returned an array of shape \(2, 2\); expected \(3, 2\)"):
        batch.minimize(lambda x: np.ones(3), x0, jac=lambda x: np.ones((2, 2)))

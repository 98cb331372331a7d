"""``arrayopt.batch.curve_fit`` against SciPy's ``curve_fit`` problem by problem, and its Poisson estimator.

``popt`` is compared to SciPy's to the tolerance the stopping rules allow; ``pcov`` (a
function of the Jacobian at ``popt`` and of the residuals) to a tolerance a little wider.
The Poisson maximum-likelihood fit is checked against a direct minimisation of the
Poisson deviance by ``scipy.optimize.minimize``, and its covariance against the inverse
Fisher information computed with NumPy.
"""

import warnings

import numpy as np
import pytest

from arrayopt import batch

from batch_problems import BY_NAME, FAMILIES, gaussian, gaussian_jac, to_numpy

scipy_optimize = pytest.importorskip("scipy.optimize")


def model_for(family, xp, mode="plain"):
    """f(xdata, p) (or the (values, jacobian) pair) in curve_fit's form, with its jac argument."""

    def f(t, p):
        values = family.model(xp, t, p)
        return (values, family.jac(xp, t, p)) if mode == "with_fun" else values

    jac = {"plain": None, "analytic": lambda t, p: family.jac(xp, t, p), "with_fun": True}[mode]
    return f, jac


def scipy_curve_fit(family, y, p0, **options):
    """SciPy's curve_fit on each row; OptimizeWarning silenced (the tests check pcov itself)."""
    out = []
    sigma = options.pop("sigma", None)
    for b in range(y.shape[0]):
        if sigma is None or np.ndim(sigma) == 1:
            s = sigma
        elif np.ndim(sigma) == 0:  # as a vector: SciPy's 0-d sigma fails with a callable jac
            s = np.full(y.shape[1], sigma)
        else:
            s = sigma[b]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy_optimize.OptimizeWarning)
            popt, pcov = scipy_optimize.curve_fit(
                lambda t, *q: family.model(np, t, np.array(q)[None, :])[0],
                family.t,
                y[b],
                p0[b],
                sigma=s,
                jac=lambda t, *q: family.jac(np, t, np.array(q)[None, :])[0],
                **options,
            )
        out.append((popt, pcov))
    return out


def assert_curve_fits_match(popt, pcov, refs, rtol=1e-4, cov_rtol=2e-3):
    popt, pcov = to_numpy(popt), to_numpy(pcov)
    for b, (ref_popt, ref_pcov) in enumerate(refs):
        np.testing.assert_allclose(popt[b], ref_popt, rtol=rtol, atol=rtol * 1e-2, err_msg=f"popt {b}")
        if np.isinf(ref_pcov).all():
            assert np.isinf(pcov[b]).all(), b
            continue
        scale = np.abs(ref_pcov).max()
        np.testing.assert_allclose(pcov[b], ref_pcov, rtol=cov_rtol, atol=cov_rtol * scale, err_msg=f"pcov {b}")


def sigma_forms(family, count):
    rng = np.random.default_rng(20)
    m = family.t.size
    per_point = 0.01 * rng.uniform(0.5, 2.0, m)
    per_problem = 0.01 * rng.uniform(0.5, 2.0, (count, m))
    correlated = np.empty((count, m, m))
    for b in range(count):
        a = 0.003 * rng.standard_normal((m, m))
        correlated[b] = a @ a.T + np.diag(per_problem[b] ** 2)
    return {"none": None, "scalar": 0.02, "per_point": per_point, "per_problem": per_problem, "covariance": correlated}


@pytest.mark.parametrize("absolute_sigma", [False, True])
@pytest.mark.parametrize("sigma", ["none", "scalar", "per_point", "per_problem", "covariance"])
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_popt_and_pcov_match_scipy_unbounded(family, sigma, absolute_sigma, xp):
    _, p0, y = family.draw(6, seed=21)
    s = sigma_forms(family, 6)[sigma]
    f, jac = model_for(family, xp, "analytic")
    popt, pcov = batch.curve_fit(
        f,
        xp.asarray(family.t),
        xp.asarray(y),
        xp.asarray(p0),
        sigma=None if s is None else s if np.ndim(s) == 0 else xp.asarray(s),
        absolute_sigma=absolute_sigma,
        jac=jac,
    )
    refs = scipy_curve_fit(family, y, p0, sigma=s, absolute_sigma=absolute_sigma)
    assert_curve_fits_match(popt, pcov, refs)


@pytest.mark.parametrize("mode", ["plain", "analytic", "with_fun"])
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_popt_and_pcov_match_scipy_with_bounds(family, mode, xp):
    _, p0, y = family.draw(10, seed=22)
    p0 = family.start_in_bounds(p0)
    f, jac = model_for(family, xp, mode)
    bounds = (xp.asarray(np.array(family.lb)), xp.asarray(np.array(family.ub)))
    popt, pcov = batch.curve_fit(f, xp.asarray(family.t), xp.asarray(y), xp.asarray(p0), bounds=bounds, jac=jac)
    refs = scipy_curve_fit(family, y, p0, bounds=(family.lb, family.ub))
    assert_curve_fits_match(popt, pcov, refs)


def test_float32_in_float32_out(xp):
    family = BY_NAME["gaussian"]
    _, p0, y = family.draw(8, seed=23)
    y32, p32 = y.astype(np.float32), p0.astype(np.float32)
    f, jac = model_for(family, xp, "analytic")
    t = xp.asarray(family.t.astype(np.float32))
    popt, pcov, info = batch.curve_fit(f, t, xp.asarray(y32), xp.asarray(p32), jac=jac, full_output=True)
    assert popt.dtype == xp.float32 and pcov.dtype == xp.float32 and info.cost.dtype == xp.float32
    refs = scipy_curve_fit(family, y32.astype(np.float64), p0)
    assert_curve_fits_match(popt, pcov, refs, rtol=2e-3, cov_rtol=2e-2)


def test_pcov_is_infinite_where_scipy_gives_infinity(xp):
    # too few points (m == n) without absolute_sigma: SciPy gives inf and warns
    family = BY_NAME["decay"]
    t3 = family.t[[0, 5, 10]]
    truth = np.array([[2.0, 1.0, 0.1], [1.0, 0.5, 0.0]])
    y = family.model(np, t3, truth) + np.array([[0.01, -0.02, 0.0], [0.0, 0.01, 0.02]])
    f, jac = model_for(family, xp, "analytic")
    with pytest.warns(batch.OptimizeWarning, match="could not be estimated for 2 of 2"):
        _, pcov = batch.curve_fit(f, xp.asarray(t3), xp.asarray(y), xp.asarray(truth * 1.1), jac=jac)
    assert np.isinf(to_numpy(pcov)).all()
    with pytest.warns(scipy_optimize.OptimizeWarning):
        _, ref = scipy_optimize.curve_fit(lambda t, *q: family.model(np, t, np.array([q]))[0], t3, y[0], truth[0] * 1.1)
    assert np.isinf(ref).all()
    start = xp.asarray(truth * 1.1)
    _, pcov_abs = batch.curve_fit(f, xp.asarray(t3), xp.asarray(y), start, jac=jac, absolute_sigma=True)
    assert np.isfinite(to_numpy(pcov_abs)).all()


def unidentifiable(t, p, xp=np):
    """A decay whose third parameter has no effect: its Jacobian column is exactly zero."""
    return p[:, :1] * xp.exp(-p[:, 1:2] * t) + 0.0 * p[:, 2:]


@pytest.mark.parametrize("bounded", [False, True])
def test_a_zero_jacobian_column_gives_scipy_s_covariance(bounded, xp):
    t = np.linspace(0.0, 4.0, 12)
    y = 2.0 * np.exp(-0.8 * t) + 0.01 * np.random.default_rng(24).standard_normal((3, 12))
    p0 = np.array([[1.5, 1.0, 0.3]] * 3)
    bounds = ([0.0, 0.0, -1.0], [10.0, 10.0, 1.0]) if bounded else (-np.inf, np.inf)
    f = lambda t, p: unidentifiable(t, p, xp)  # noqa: E731
    with pytest.warns(batch.OptimizeWarning) if not bounded else warnings.catch_warnings():
        popt, pcov = batch.curve_fit(f, xp.asarray(t), xp.asarray(y), xp.asarray(p0), bounds=bounds)
    for b in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy_optimize.OptimizeWarning)
            ref_popt, ref_pcov = scipy_optimize.curve_fit(
                lambda t, *q: unidentifiable(t, np.array([q]))[0], t, y[b], p0[b], bounds=bounds
            )
        np.testing.assert_allclose(to_numpy(popt)[b], ref_popt, rtol=1e-5)
        if bounded:  # SciPy's trf: the pseudo-inverse, zero in the unidentifiable row and column
            np.testing.assert_allclose(to_numpy(pcov)[b], ref_pcov, rtol=1e-3, atol=1e-12)
            assert (to_numpy(pcov)[b][2] == 0).all()
        else:  # SciPy's lm: R has an exactly zero pivot, and the whole matrix is inf
            assert np.isinf(ref_pcov).all() and np.isinf(to_numpy(pcov)[b]).all()


def test_a_failed_problem_warns_and_reports_alone(xp):
    family = BY_NAME["hill"]
    _, p0, y = family.draw(5, seed=25)
    y[3, 2] = np.nan
    f, jac = model_for(family, xp, "analytic")
    with pytest.warns(batch.OptimizeWarning) as caught:
        popt, pcov = batch.curve_fit(f, xp.asarray(family.t), xp.asarray(y), xp.asarray(p0), jac=jac)
    messages = [str(w.message) for w in caught]
    assert any("1 of 5 fits did not succeed (NONFINITE_RESIDUALS)" in m for m in messages), messages
    assert np.isinf(to_numpy(pcov)[3]).all() and np.isfinite(to_numpy(pcov)[[0, 1, 2, 4]]).all()
    with pytest.raises(ValueError):  # SciPy refuses the NaN outright
        scipy_optimize.curve_fit(lambda t, *q: family.model(np, t, np.array([q]))[0], family.t, y[3], p0[3])
    healthy = [0, 1, 2, 4]
    refs = scipy_curve_fit(family, y[healthy], p0[healthy])
    assert_curve_fits_match(to_numpy(popt)[healthy], to_numpy(pcov)[healthy], refs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", batch.OptimizeWarning)
        _, _, info = batch.curve_fit(f, xp.asarray(family.t), xp.asarray(y), xp.asarray(p0), jac=jac, full_output=True)
    assert to_numpy(info.status).tolist()[3] == batch.Status.NONFINITE_RESIDUALS
    assert info.message(3) == "Residuals are not finite in the initial point."


def test_full_output_holds_the_fit(xp):
    family = BY_NAME["decay"]
    _, p0, y = family.draw(4, seed=26)
    sigma = 0.02
    f, jac = model_for(family, xp, "analytic")
    popt, _, info = batch.curve_fit(
        f, xp.asarray(family.t), xp.asarray(y), xp.asarray(p0), sigma=sigma, jac=jac, full_output=True
    )
    assert isinstance(info, batch.LeastSquaresResult)
    residuals = (family.model(np, family.t, to_numpy(popt)) - y) / sigma
    np.testing.assert_allclose(to_numpy(info.fun), residuals, rtol=1e-10, atol=1e-12)  # SciPy's fvec
    np.testing.assert_array_equal(to_numpy(info.x), to_numpy(popt))
    assert to_numpy(info.success).all()


def test_shared_p0_pass_indices_and_per_problem_xdata(xp):
    rng = np.random.default_rng(27)
    truth = rng.uniform([2.0, 4.5, 0.8, 0.0], [4.0, 5.5, 1.2, 0.3], (7, 4))
    tt = BY_NAME["gaussian"].t + np.linspace(-1.0, 1.0, 7)[:, None]  # every problem has its own sample points
    y = gaussian(np, tt, truth) + 0.01 * rng.standard_normal(tt.shape)
    tt_x = xp.asarray(tt)

    def f_stack(t, p):
        return gaussian(xp, t, p)

    def f_rows(t, p, rows):
        return gaussian(xp, xp.take(t, rows, axis=0), p)

    start = np.array([3.0, 5.0, 1.0, 0.15])  # one p0 for all
    stack = batch.curve_fit(f_stack, tt_x, xp.asarray(y), xp.asarray(start))
    rows = batch.curve_fit(f_rows, tt_x, xp.asarray(y), xp.asarray(start), pass_indices=True, block_size=3)
    np.testing.assert_allclose(to_numpy(rows[0]), to_numpy(stack[0]), rtol=1e-8)
    cov = to_numpy(stack[1])
    np.testing.assert_allclose(to_numpy(rows[1]), cov, rtol=1e-6, atol=1e-6 * np.abs(cov).max())
    for b in range(7):
        ref, _ = scipy_optimize.curve_fit(lambda t, *q: gaussian(np, t, np.array([q]))[0], tt[b], y[b], start)
        np.testing.assert_allclose(to_numpy(stack[0])[b], ref, rtol=1e-5)


def counts_problem(count, seed):
    """1-D Gaussian spots on a background, Poisson counts."""
    rng = np.random.default_rng(seed)
    t = np.arange(15.0)
    truth = np.column_stack(
        [rng.uniform(20, 200, count), rng.uniform(5, 9, count), rng.uniform(1.0, 2.0, count), rng.uniform(1, 5, count)]
    )
    y = rng.poisson(gaussian(np, t, truth)).astype(float)
    return t, truth, y


def deviance(t, y):
    def value_and_grad(q):
        f = gaussian(np, t, q[None, :])[0]
        if np.any(f <= 0):
            return np.inf, np.zeros_like(q)
        J = gaussian_jac(np, t, q[None, :])[0]
        terms = f - y - np.where(y > 0, y * np.log(np.where(y > 0, f / np.where(y > 0, y, 1), 1)), 0)
        return 2 * terms.sum(), 2 * J.T @ (1 - y / f)

    return value_and_grad


def test_poisson_maximises_the_likelihood(xp):
    t, truth, y = counts_problem(12, seed=29)
    p0 = truth * np.random.default_rng(30).uniform(0.8, 1.2, truth.shape)
    f, jac = model_for(BY_NAME["gaussian"], xp, "analytic")
    # tight tolerances: the minimisers are compared to 1e-6, well inside what the defaults promise
    tight = {"ftol": 1e-13, "xtol": 1e-13}
    popt, pcov, info = batch.curve_fit(
        f, xp.asarray(t), xp.asarray(y), xp.asarray(p0), jac=jac, loss="poisson", full_output=True, **tight
    )
    popt, pcov = to_numpy(popt), to_numpy(pcov)
    lower = [0.0, -10.0, 0.1, 1e-3]
    for b in range(12):
        ref = scipy_optimize.minimize(
            deviance(t, y[b]),
            p0[b],
            jac=True,
            method="L-BFGS-B",
            bounds=list(zip(lower, [np.inf] * 4, strict=True)),
            options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 10000},
        )
        np.testing.assert_allclose(popt[b], ref.x, rtol=1e-6, atol=1e-8, err_msg=str(b))
        ours = deviance(t, y[b])(popt[b])[0]
        assert ours <= ref.fun + 1e-9 * abs(ref.fun), (b, ours, ref.fun)
        np.testing.assert_allclose(2 * to_numpy(info.cost)[b], ours, rtol=1e-10)
        # pcov: the inverse Fisher information J^T diag(1/f) J at popt
        J = gaussian_jac(np, t, popt[b : b + 1])[0]
        model = gaussian(np, t, popt[b : b + 1])[0]
        fisher = J.T @ (J / model[:, None])
        np.testing.assert_allclose(pcov[b], np.linalg.inv(fisher), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(to_numpy(info.fun), gaussian(np, t, popt) - y, rtol=1e-10, atol=1e-10)


def test_poisson_refuses_unusable_counts_per_problem():
    t, truth, y = counts_problem(4, seed=31)
    y[1, 0] = -1.0  # a negative count
    y[2, 3] = np.nan
    f, jac = model_for(BY_NAME["gaussian"], np, "analytic")
    _, _, info = batch.curve_fit(f, t, y, truth, jac=jac, loss="poisson", full_output=True)
    assert info.status.tolist()[1:3] == [batch.Status.NONFINITE_RESIDUALS] * 2
    assert info.success[[0, 3]].all()


BAD_ARGUMENTS = [
    ({"loss": "huber"}, ValueError, "loss must be 'linear' or 'poisson'"),
    ({"loss": "poisson", "sigma": 1.0}, ValueError, "sigma must be None with loss='poisson'"),
    ({"sigma": np.ones(7)}, ValueError, r"sigma has shape \(7,\)"),
    ({"sigma": np.ones((2, 9, 9))}, ValueError, r"sigma has shape \(2, 9, 9\)"),
    ({"sigma": 0.0}, ValueError, "sigma must be positive"),
    ({"sigma": -np.eye(9)[None]}, ValueError, "`sigma` must be positive definite"),
    ({"ydata": np.ones(9)}, ValueError, "ydata must have shape"),
    ({"p0": np.ones((2, 3))}, ValueError, r"p0 has shape \(2, 3\)"),
    ({"jac": "cs"}, ValueError, "jac must be"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD_ARGUMENTS, ids=[m for _, _, m in BAD_ARGUMENTS])
def test_bad_arguments_raise_before_any_evaluation(kwargs, error, match):
    calls = []

    def f(t, p):
        calls.append(1)
        return BY_NAME["decay"].model(np, t, p)

    arguments = {"xdata": np.linspace(0, 1, 9), "ydata": np.ones((3, 9)), "p0": np.ones((3, 3)), **kwargs}
    with pytest.raises(error, match=match):
        batch.curve_fit(f, **arguments)
    assert calls == []


def test_model_of_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match=r"f returned \(3, 8\); expected \(3, 9, ...\)"):
        batch.curve_fit(lambda t, p: np.ones((3, 8)), np.linspace(0, 1, 9), np.ones((3, 9)), np.ones((3, 2)))

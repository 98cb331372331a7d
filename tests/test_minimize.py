"""minimize(): SciPy's answers on the same problems, SciPy's callback and result conventions."""

import itertools

import numpy as np
import pytest

import arrayopt
from arrayopt import OptimizeResult, minimize

from lbfgs_problems import PROBLEMS

scipy_optimize = pytest.importorskip("scipy.optimize")

TIGHT = {"tolerance_grad": 1e-10, "tolerance_change": 1e-20}


def objective(name, xp):
    """``fun(x) -> (value, gradient)`` over one vector, and a NumPy starting point."""
    problem = PROBLEMS[name]
    if name.startswith("classify"):
        # the weights and the bias packed into one vector

        def fun(x):
            loss, (grad_w, grad_b) = problem.loss_and_grad(xp, [x[:-1], x[-1]])
            return loss, xp.concat([grad_w, xp.reshape(grad_b, (1,))])

        return fun, np.concatenate([problem.init("float64")[0], [0.3]])

    def fun(x):
        loss, grads = problem.loss_and_grad(xp, [x])
        return loss, grads[0]

    x0 = problem.init("float64")[0]
    if name == "rosenbrock-1000":
        # from the usual start L-BFGS needs ~5000 iterations; this start keeps the test short
        x0 = 1.0 + 0.3 * np.random.default_rng(7).standard_normal(1000)
    return fun, x0


def counted(fun):
    calls = []

    def wrapper(*args):
        calls.append(1)
        return fun(*args)

    return wrapper, calls


def reference_minimum(name):
    """``(x, f)`` at the minimum: the closed form for the quadratic, else SciPy's L-BFGS-B.

    SciPy cannot converge on the quadratic to ``gtol=1e-10``: near its minimum the
    objective changes by less than its rounding, SciPy's line search finds no decrease
    and the run ends ``ABNORMAL`` (on some CPUs and BLAS kernels and not others).
    """
    fun, x0 = objective(name, np)
    if name.startswith("quadratic"):
        data = PROBLEMS[name].data(np, np.float64)
        x = np.linalg.solve(data["A"], data["b"])  # the gradient A x - b is zero
        return x, float(fun(x)[0])
    reference = scipy_optimize.minimize(
        fun, x0, jac=True, method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 0, "maxiter": 20000, "maxfun": 40000}
    )
    assert reference.success, reference.message
    return reference.x, reference.fun


@pytest.mark.parametrize("name", ["rosenbrock-2", "rosenbrock-10", "rosenbrock-1000", "quadratic-20", "classify-8"])
def test_reaches_the_reference_minimum(name, xp):
    reference_x, reference_fun = reference_minimum(name)
    fun, x0 = objective(name, xp)
    fun, calls = counted(fun)
    result = minimize(fun, xp.asarray(x0), jac=True, options=TIGHT)
    assert result.success and result.status == 0
    x = np.asarray(arrayopt.backends.get_backend(result.x).to_numpy(result.x))
    np.testing.assert_allclose(x, reference_x, rtol=1e-6, atol=1e-9 * np.max(np.abs(reference_x)))
    assert result.fun == pytest.approx(reference_fun, rel=1e-10, abs=1e-15)
    assert result.nfev == result.njev == len(calls)
    assert result.nit > 0


@pytest.mark.parametrize("name", ["rosenbrock-10", "classify-8"])
def test_default_tolerances_are_close_to_scipys_defaults(name):
    fun, x0 = objective(name, np)
    ours = minimize(fun, x0, jac=True)
    theirs = scipy_optimize.minimize(fun, x0, jac=True, method="L-BFGS-B")
    assert ours.success and theirs.success
    np.testing.assert_allclose(ours.x, theirs.x, rtol=0, atol=1e-4 * np.max(np.abs(theirs.x)))


def test_result_fields_and_types(xp):
    fun, x0 = objective("quadratic-20", xp)
    x0 = xp.asarray(x0, dtype=xp.float32)
    result = minimize(fun, x0, jac=True)
    assert isinstance(result, OptimizeResult) and isinstance(result, dict)
    assert set(result) == {"x", "fun", "jac", "nit", "nfev", "njev", "status", "success", "message", "hess_inv"}
    assert result.x.dtype == xp.float32 and result.x.shape == (20,)
    assert arrayopt.backends.get_backend(result.x) is arrayopt.backends.get_backend(x0)
    assert result.jac.shape == (20,) and result.jac.dtype == xp.float32
    assert type(result.fun) is float and type(result.nit) is int and type(result.nfev) is int
    assert type(result.success) is bool and type(result.status) is int and isinstance(result.message, str)
    assert result["x"] is result.x
    assert "message" in repr(result) and "nfev" in dir(result)
    assert isinstance(result.hess_inv, arrayopt.lbfgsb.LbfgsInvHessProduct) and result.hess_inv.shape == (20, 20)
    with pytest.raises(AttributeError):
        result.hess  # noqa: B018
    # the gradient reported is the gradient at x
    np.testing.assert_allclose(
        np.asarray(arrayopt.backends.get_backend(x0).to_numpy(result.jac)),
        np.asarray(arrayopt.backends.get_backend(x0).to_numpy(fun(result.x)[1])),
        rtol=1e-6,
    )


def test_x0_is_not_modified_and_keeps_its_shape():
    problem = PROBLEMS["quadratic-20"]
    x0 = problem.init("float64")[0].reshape(4, 5)
    before = x0.copy()

    def fun(x):
        loss, grads = problem.loss_and_grad(np, [x.reshape(-1)])
        return loss, grads[0].reshape(4, 5)

    result = minimize(fun, x0, jac=True)
    np.testing.assert_array_equal(x0, before)
    assert result.x.shape == (4, 5) and result.jac.shape == (4, 5)


def test_integer_x0_becomes_float64():
    result = minimize(lambda x: (float(np.sum((x - 0.5) ** 2)), 2 * (x - 0.5)), np.array([3, -1]), jac=True)
    assert result.x.dtype == np.float64
    np.testing.assert_allclose(result.x, [0.5, 0.5])


def test_jac_callable_equals_jac_true():
    fun, x0 = objective("rosenbrock-10", np)
    value_only, value_calls = counted(lambda x: fun(x)[0])
    gradient_only, gradient_calls = counted(lambda x: fun(x)[1])
    a = minimize(fun, x0, jac=True)
    b = minimize(value_only, x0, jac=gradient_only)
    np.testing.assert_array_equal(a.x, b.x)
    assert (a.fun, a.nit, a.nfev) == (b.fun, b.nit, b.nfev)
    assert len(value_calls) == len(gradient_calls) == b.nfev


def test_args_are_passed_to_fun_and_jac():
    seen = []

    def fun(x, a, b):
        seen.append((a, b))
        return float(np.sum((x - a) ** 2)), None

    def value(x, a, b):
        return float(np.sum((x - a) ** 2))

    def jac(x, a, b):
        seen.append((a, b))
        return 2 * (x - a)

    result = minimize(value, np.zeros(2), args=(3.0, "b"), jac=jac)
    np.testing.assert_allclose(result.x, [3.0, 3.0])
    assert set(seen) == {(3.0, "b")}


def test_callback_intermediate_result_and_stop_iteration():
    fun, x0 = objective("rosenbrock-10", np)
    full = minimize(fun, x0, jac=True)
    seen = []

    def callback(intermediate_result):
        assert isinstance(intermediate_result, OptimizeResult)
        seen.append((intermediate_result.x, intermediate_result.fun))
        if len(seen) == 5:
            raise StopIteration

    result = minimize(fun, x0, jac=True, callback=callback)
    assert len(seen) == result.nit == 5
    assert (result.success, result.status, result.message) == (False, 99, "`callback` raised `StopIteration`.")
    # each intermediate x is a copy, and fun is the objective there
    for x, value in seen:
        assert value == float(fun(x)[0])
    assert seen[-1][0] is not result.x
    np.testing.assert_array_equal(seen[-1][0], result.x)
    assert len({float(v) for _, v in seen}) == 5
    assert full.nit > 5


def test_legacy_callback_gets_a_copy_of_x():
    fun, x0 = objective("quadratic-20", np)
    xs = []
    result = minimize(fun, x0, jac=True, callback=lambda xk: xs.append(xk))
    assert len(xs) == result.nit
    np.testing.assert_array_equal(xs[-1], result.x)
    assert xs[-1] is not result.x


def test_callback_with_scipy_semantics_matches_scipy_count():
    # SciPy calls callback(intermediate_result) once per iteration too; here both count iterations.
    fun, x0 = objective("classify-8", np)
    ours, theirs = [], []
    result = minimize(fun, x0, jac=True, callback=lambda intermediate_result: ours.append(intermediate_result.fun))
    reference = scipy_optimize.minimize(
        fun, x0, jac=True, method="L-BFGS-B", callback=lambda intermediate_result: theirs.append(1)
    )
    assert len(ours) == result.nit and len(theirs) == reference.nit
    assert all(b <= a for a, b in itertools.pairwise(ours))  # strong Wolfe steps decrease the objective


def test_budget_exhausted_lbfgs():
    fun, x0 = objective("rosenbrock-10", np)
    fun, calls = counted(fun)
    result = minimize(fun, x0, jac=True, options={"maxiter": 7})
    assert (result.success, result.status) == (False, 1)
    assert result.message == "Maximum number of iterations has been exceeded."
    assert result.nit == 7 and result.nfev == len(calls)
    result = minimize(fun, x0, jac=True, options={"maxfun": 9})
    assert result.status == 1 and "function evaluations" in result.message


def test_lbfgs_without_line_search_evaluates_the_final_point():
    fun, x0 = objective("quadratic-20", np)
    fun, calls = counted(fun)
    result = minimize(fun, x0, jac=True, options={"line_search_fn": None, "lr": 0.5, "maxiter": 6})
    assert result.nit == 6 and result.status == 1
    assert result.nfev == len(calls) == 7  # 6 iterations, the last one's point evaluated for the result
    value, grad = fun(result.x)
    assert result.fun == float(value)
    np.testing.assert_array_equal(result.jac, grad)


def test_lbfgs_options_reach_the_optimizer():
    made = []

    class Spy(arrayopt.LBFGS):
        def __init__(self, params, **kwargs):
            made.append(kwargs)
            super().__init__(params, **kwargs)

    fun, x0 = objective("quadratic-20", np)
    minimize(fun, x0, jac=True, method=Spy, tol=1e-6, options={"maxcor": 4, "gtol": 1e-3})
    assert made == [
        {
            "history_size": 4,
            "tolerance_grad": 1e-3,
            "tolerance_change": 1e-6,
            "max_iter": 15000,
            "max_eval": 15000,
            "line_search_fn": "strong_wolfe",
        }
    ]


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("adam", {"lr": 0.05, "maxiter": 4000, "gtol": 1e-7}),
        ("Adam", {"lr": 0.05, "betas": (0.8, 0.99), "maxiter": 4000, "gtol": 1e-7}),
        ("sgd", {"lr": 0.2, "momentum": 0.9, "maxiter": 4000, "gtol": 1e-7}),
        ("AdamW", {"lr": 0.05, "weight_decay": 0.0, "maxiter": 4000, "gtol": 1e-7}),
    ],
)
def test_first_order_methods_reach_scipys_answer(method, options, xp):
    fun, x0 = objective("classify-8", np)
    reference = scipy_optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 0})
    fun, _ = objective("classify-8", xp)
    fun, calls = counted(fun)
    result = minimize(fun, xp.asarray(x0), jac=True, method=method, options=options)
    assert result.success and result.status == 0, result.message
    assert result.nfev == len(calls) == result.nit + 1
    x = np.asarray(arrayopt.backends.get_backend(result.x).to_numpy(result.x))
    np.testing.assert_allclose(x, reference.x, rtol=1e-5, atol=1e-6)


def test_first_order_budget_and_callback():
    fun, x0 = objective("classify-8", np)
    fun, calls = counted(fun)
    result = minimize(fun, x0, jac=True, method="sgd", options={"lr": 0.01, "maxiter": 25})
    assert (result.success, result.status, result.nit, result.nfev) == (False, 1, 25, 26)
    assert result.message == "Maximum number of iterations has been exceeded."
    assert len(calls) == 26
    # the result is SGD's 25th iterate, and fun/jac are evaluated there
    p = arrayopt.Parameter(x0.copy())
    opt = arrayopt.SGD([p], lr=0.01)
    for _ in range(25):
        p.grad = fun(p.data)[1]
        opt.step()
    np.testing.assert_array_equal(result.x, p.data)
    assert result.fun == float(fun(p.data)[0])
    seen = []

    def callback(intermediate_result):
        seen.append(intermediate_result.fun)
        if len(seen) == 3:
            raise StopIteration

    result = minimize(fun, x0, jac=True, method=arrayopt.Adam, callback=callback)
    assert (result.status, result.nit, len(seen)) == (99, 3, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"jac": "cs"}, ValueError, "jac must be True, a callable, None, '2-point' or '3-point'"),
        ({"jac": True, "method": "nelder-mead"}, ValueError, "Unknown method 'nelder-mead'"),
        ({"jac": True, "method": "adam", "bounds": [(0, 1)] * 3}, ValueError, "'Adam' cannot handle bounds"),
        ({"jac": True, "method": "L-BFGS-B", "options": {"maxfev": 3}}, TypeError, "unknown option 'maxfev'"),
        ({"jac": True, "method": "L-BFGS-B", "options": {"maxls": 0}}, ValueError, "maxls must be a positive"),
        ({"jac": True, "method": "L-BFGS-B", "options": {"gtol": -1.0}}, ValueError, "gtol must be a non-negative"),
        ({"jac": True, "method": 3}, TypeError, "method must be a name or an arrayopt optimizer class"),
        ({"jac": True, "options": {"maxls": 3}}, TypeError, "unknown option 'maxls' for method 'lbfgs'"),
        ({"jac": True, "method": "adam", "options": {"maxls": 3}}, TypeError, "maxls"),
        ({"jac": True, "method": "adam", "options": {"maxiter": -1}}, ValueError, "maxiter must be"),
        ({"jac": True, "options": {"lr": -1.0}}, ValueError, "Invalid learning rate: -1.0"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        minimize(lambda x: (float(np.sum(x**2)), 2 * x), np.ones(3), **kwargs)


def test_bad_objectives():
    with pytest.raises(TypeError, match="x0 must be an array"):
        minimize(lambda x: (0.0, x), "abc", jac=True)
    with pytest.raises(TypeError, match=r"with jac=True, fun must return \(value, gradient\)"):
        minimize(lambda x: float(np.sum(x**2)), np.ones(3), jac=True)
    with pytest.raises(ValueError, match=r"the gradient has shape \(2,\), but x has shape \(3,\)"):
        minimize(lambda x: (float(np.sum(x**2)), np.ones(2)), np.ones(3), jac=True)
    with pytest.raises(TypeError, match="the gradient must be a numpy array like x"):
        minimize(lambda x: (float(np.sum(x**2)), [1.0, 1.0, 1.0]), np.ones(3), jac=True)
    # a NaN objective at x0 is a result, not an exception (SciPy's convention)
    result = minimize(lambda x: (float("nan"), x), np.ones(3), jac=True)
    assert (result.success, result.status, result.nfev) == (False, 2, 1)
    assert "not finite" in result.message


def test_docstring_examples():
    import doctest
    import importlib

    module = importlib.import_module("arrayopt.minimize")  # the attribute arrayopt.minimize is the function
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_complex_x0():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((8, 3)) + 1j * rng.standard_normal((8, 3))
    c = rng.standard_normal(8) + 1j * rng.standard_normal(8)

    def fun(z):
        r = a @ z - c
        return float(np.sum(np.abs(r) ** 2)), 2 * (a.conj().T @ r)  # d/dRe + i d/dIm, torch's convention

    result = minimize(fun, np.zeros(3, dtype=np.complex128), jac=True, options=TIGHT)
    assert result.success and result.x.dtype == np.complex128 and result.jac.dtype == np.complex128
    np.testing.assert_allclose(result.x, np.linalg.lstsq(a, c, rcond=None)[0], rtol=1e-8)
    np.testing.assert_allclose(result.jac, fun(result.x)[1], atol=1e-8)


@pytest.mark.parametrize("jac", [None, "2-point", "3-point"])
@pytest.mark.parametrize("method", ["lbfgs", "l-bfgs-b"])
def test_finite_differences_for_every_quasi_newton_method(method, jac, xp):
    target = xp.asarray([1.0, -2.0, 0.5])

    def value(x):
        return float(xp.sum((x - target) ** 2) + xp.sum((x - target) ** 4))

    calls = []

    def counted(x):
        calls.append(1)
        return value(x)

    result = minimize(counted, xp.zeros(3), jac=jac, method=method, options={"disp": False})
    assert result.success, result.message
    x = np.asarray(arrayopt.backends.get_backend(result.x).to_numpy(result.x))
    np.testing.assert_allclose(x, [1.0, -2.0, 0.5], atol=1e-4)
    assert result.nfev == len(calls) and result.njev < result.nfev


def test_finite_differences_for_a_first_order_method():
    result = minimize(lambda x: float(np.sum((x - 3.0) ** 2)), [0.0, 1.0], jac="3-point", method="adam",
                      options={"lr": 0.1, "maxiter": 3000, "gtol": 1e-6, "disp": True})  # fmt: skip
    assert result.success
    np.testing.assert_allclose(result.x, [3.0, 3.0], atol=1e-5)


def test_x0_as_list_tuple_or_number():
    fun = lambda x: (float(np.sum((x - 1.0) ** 2)), 2 * (x - 1.0))  # noqa: E731
    for x0, shape in (([0.0, 2.0], (2,)), ((0, 2, 3), (3,)), (5, (1,)), ([[0.0, 1.0], [2.0, 3.0]], (2, 2))):
        result = minimize(fun, x0, jac=True)
        assert result.x.shape == shape and result.x.dtype == np.float64
        np.testing.assert_allclose(result.x, np.ones(shape), atol=1e-6)

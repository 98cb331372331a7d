"""LBFGS against torch.optim.LBFGS 2.14 (maximize included): numbers, counters, state, errors.

Three kinds of comparison (``lbfgs_parity`` runs both libraries the same way):

* real torch, live or from the golden file: every step's returned loss, the
  parameters after every step and the ``func_evals`` / ``n_iter`` counters, over
  budgets where torch's fused multiply-adds and MKL reductions have not yet grown
  into more than the tolerance (float64 1e-9 relative, float32 1e-4);
* torch with its arithmetic aligned to NumPy's (``aligned_torch``), live: runs to
  convergence and past it, bit for bit, state included, in every dtype;
* arrayopt against itself: array-api-strict gives NumPy's bits.
"""

import copy
import math

import numpy as np
import pytest

import arrayopt

import lbfgs_parity as lp
from lbfgs_problems import PROBLEMS
from make_golden import load_lbfgs

GOLDEN = load_lbfgs()


def _reference(scenario, torch_module):
    if torch_module is not None:
        return lp.run_torch(scenario)
    return GOLDEN[scenario.id]


@pytest.fixture(scope="module")
def maybe_torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


# -- parity with torch ----------------------------------------------------------------


@pytest.mark.parametrize("scenario", lp.SCENARIOS, ids=str)
def test_matches_torch(scenario, xp, maybe_torch):
    """Losses returned by step(), parameters and counters after every step (live torch, else golden)."""
    ours = lp.run_arrayopt(scenario, xp)
    ref = _reference(scenario, maybe_torch)
    ours = {k: v for k, v in ours.items() if not k.startswith("state/")}
    ref = {k: v for k, v in ref.items() if not k.startswith(("state/", "input/"))}
    on_cupy = arrayopt.backends.get_backend(xp.zeros(1)).name == "cupy"
    lp.assert_same_run(scenario, ours, ref, other_sum_order=on_cupy)


@pytest.mark.ref
@pytest.mark.parametrize("scenario", lp.SCENARIOS, ids=str)
def test_golden_file_is_current(scenario, torch):
    stored = GOLDEN[scenario.id]
    for i, a in enumerate(PROBLEMS[scenario.problem].init(scenario.dtype)):
        np.testing.assert_array_equal(stored[f"input/param{i}"], a, err_msg="run tests/make_golden.py lbfgs")
    fresh = {k: v for k, v in lp.run_torch(scenario).items() if not k.startswith("state/")}
    lp.assert_same_run(scenario, {k: v for k, v in stored.items() if not k.startswith("input/")}, fresh)


@pytest.mark.ref
@pytest.mark.parametrize("scenario", lp.LONG_SCENARIOS, ids=str)
def test_bit_exact_with_torch_when_arithmetic_is_aligned(scenario, torch):
    """Same algorithm: with torch's FMA/MKL roundings replaced by NumPy's, every bit agrees.

    Runs of up to 300 iterations, to convergence and past it, with the state_dict
    round trip, in float64, float32, complex128 and complex64: every loss, parameter,
    counter and state entry (directions, curvature pairs, ro, al, t, H_diag).
    """
    ours = lp.run_arrayopt(scenario, np)
    theirs = lp.run_torch(scenario, aligned=True)
    worst, mismatched = lp.compare(ours, theirs, state=True)
    assert not mismatched, mismatched[:5]
    assert worst == 0.0, f"max relative error {worst:.3e}"


@pytest.mark.parametrize("scenario", lp.LONG_SCENARIOS[::3], ids=str)
def test_array_api_strict_gives_numpys_bits(scenario):
    strict = pytest.importorskip("array_api_strict")
    ours = lp.run_arrayopt(scenario, strict)
    reference = lp.run_arrayopt(scenario, np)
    worst, mismatched = lp.compare(ours, reference, state=True)
    assert not mismatched and worst == 0.0


@pytest.mark.ref
def test_loads_torchs_state_dict_and_continues_as_torch(torch):
    """A state_dict saved by torch (tensors, lists, ints) loads and the run goes on identically."""
    scenario = lp.Scenario("rosenbrock-10", "float64", {"line_search_fn": lp.SW, "history_size": 5, "max_iter": 6})
    problem = PROBLEMS[scenario.problem]
    with lp.aligned_torch():
        tparams = [torch.nn.Parameter(torch.from_numpy(a)) for a in problem.init("float64")]
        topt = torch.optim.LBFGS(tparams, **scenario.kwargs)

        def tclosure():
            loss, grads = problem.loss_and_grad(np, [p.detach().numpy() for p in tparams])
            tparams[0].grad = torch.from_numpy(grads[0].copy())
            return loss

        for _ in range(3):
            topt.step(tclosure)
        params = [arrayopt.Parameter(p.detach().numpy().copy()) for p in tparams]
        opt = arrayopt.LBFGS(params, **scenario.kwargs)
        opt.load_state_dict(topt.state_dict())
        state = opt.state[params[0]]
        assert isinstance(state["d"], np.ndarray) and all(isinstance(y, np.ndarray) for y in state["old_dirs"])

        def closure():
            loss, grads = problem.loss_and_grad(np, [p.data for p in params])
            params[0].grad = grads[0]
            return loss

        for _ in range(3):
            assert float(opt.step(closure)) == float(topt.step(tclosure))
            np.testing.assert_array_equal(params[0].data, tparams[0].detach().numpy())
            assert state["func_evals"] == topt.state[tparams[0]]["func_evals"]
            assert state["n_iter"] == topt.state[tparams[0]]["n_iter"]


# -- maximize (torch 2.14) --------------------------------------------------------------


def _needs_maximize(torch_module):
    import inspect

    if "maximize" not in inspect.signature(torch_module.optim.LBFGS).parameters:
        pytest.skip(f"torch {torch_module.__version__} has no LBFGS(maximize=...): it came with torch 2.14")


@pytest.mark.ref
@pytest.mark.parametrize("scenario", lp.MAXIMIZE_SCENARIOS, ids=str)
def test_maximize_matches_torch(scenario, torch):
    """maximize=True with and without strong Wolfe: torch's numbers, and its bits with aligned arithmetic."""
    _needs_maximize(torch)
    ours = lp.run_arrayopt(scenario, np)
    live = {k: v for k, v in lp.run_torch(scenario).items() if not k.startswith("state/")}
    worst, mismatched = lp.compare({k: v for k, v in ours.items() if not k.startswith("state/")}, live, state=False)
    assert not mismatched, mismatched[:5]
    assert worst <= lp.TOLERANCE[scenario.dtype], f"max relative error {worst:.3e}"
    worst, mismatched = lp.compare(ours, lp.run_torch(scenario, aligned=True), state=True)
    assert not mismatched and worst == 0.0, (mismatched[:5], worst)


@pytest.mark.parametrize("scenario", lp.MAXIMIZE_SCENARIOS, ids=str)
def test_maximizing_is_minimizing_the_negation_bit_for_bit(scenario, xp):
    """Negation is exact, so maximising -f retraces the minimisation of f: only the returned losses flip sign."""
    maximized = lp.run_arrayopt(scenario, xp)
    plain = dict(scenario.kwargs)
    del plain["maximize"]
    minimized = lp.run_arrayopt(lp.Scenario(scenario.problem, scenario.dtype, plain, scenario.steps), xp)
    assert set(maximized) == set(minimized)
    for key, value in minimized.items():
        expected = -value if key.endswith("/loss") else value
        np.testing.assert_array_equal(maximized[key], expected, err_msg=key)


def test_maximize_is_a_keyword_only_group_option_and_old_state_dicts_load():
    p = arrayopt.Parameter(np.zeros(2))
    with pytest.raises(TypeError):
        arrayopt.LBFGS([p], 1, 20, None, 1e-7, 1e-9, 100, None, True)
    opt = arrayopt.LBFGS([p], maximize=True)
    assert opt.param_groups[0]["maximize"] is True and opt.defaults["maximize"] is True
    saved = arrayopt.LBFGS([arrayopt.Parameter(np.zeros(2))]).state_dict()
    del saved["param_groups"][0]["maximize"]  # as torch 2.13 and earlier saved it
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["maximize"] is False


def test_a_group_without_parameters_only_evaluates_the_closure():
    calls = []

    def closure():
        calls.append(1)
        return 2.5

    opt = arrayopt.LBFGS([{"params": []}], line_search_fn="strong_wolfe")
    assert opt.step(closure) == 2.5 and calls == [1]
    assert opt.state_dict()["state"] == {}


@pytest.mark.ref
def test_a_group_without_parameters_steps_as_torch(torch):
    if "maximize" not in __import__("inspect").signature(torch.optim.LBFGS).parameters:
        pytest.skip("torch 2.13 fails on an empty group; torch 2.14 evaluates the closure")
    topt = torch.optim.LBFGS([{"params": []}])
    opt = arrayopt.LBFGS([{"params": []}])
    assert opt.step(lambda: 1.5) == topt.step(lambda: 1.5) == 1.5
    assert opt.state_dict() == topt.state_dict()


def test_minimize_does_not_take_maximize():
    with pytest.raises(TypeError, match="unknown option 'maximize'"):
        arrayopt.minimize(lambda x: (float(x @ x), 2 * x), np.ones(2), jac=True, options={"maximize": True})


# -- behaviour ------------------------------------------------------------------------


def _quadratic(xp=np, n=5, dtype="float64"):
    a = np.diag(np.arange(1.0, n + 1))
    p = arrayopt.Parameter(xp.asarray(np.ones(n), dtype=getattr(xp, dtype)))
    matrix = xp.asarray(a, dtype=getattr(xp, dtype))
    calls = []

    def closure():
        calls.append(1)
        grad = matrix @ p.data
        p.grad = grad
        return 0.5 * xp.sum(p.data * grad)

    return p, closure, calls


def test_state_keys_and_types_as_torch(xp):
    p, closure, _ = _quadratic(xp)
    opt = arrayopt.LBFGS([p], max_iter=1)
    opt.step(closure)
    state = opt.state[p]
    # first iteration: steepest descent, no pair yet, no al
    assert list(state) == [
        "func_evals",
        "n_iter",
        "d",
        "t",
        "old_dirs",
        "old_stps",
        "ro",
        "H_diag",
        "prev_flat_grad",
        "prev_loss",
    ]
    assert (state["func_evals"], state["n_iter"]) == (1, 1)
    assert state["H_diag"] == 1 and type(state["H_diag"]) is int
    assert state["old_dirs"] == [] and state["ro"] == []
    assert type(state["prev_loss"]) is float
    assert state["t"].shape == ()  # min(1, 1/|g|_1) came from an array, as torch's 0-d tensor
    opt.step(closure)
    assert "al" in state and len(state["al"]) == 100
    assert len(state["old_dirs"]) == len(state["old_stps"]) == len(state["ro"]) == 1
    assert state["ro"][0].shape == () and state["H_diag"].shape == ()
    assert state["d"].shape == (5,) and state["prev_flat_grad"].shape == (5,)
    assert state["t"] == 1 and type(state["t"]) is int  # t = lr, the int 1, as torch
    assert (state["func_evals"], state["n_iter"]) == (2, 2)


@pytest.mark.ref
def test_state_dict_layout_matches_torch(torch):
    p, closure, _ = _quadratic()
    opt = arrayopt.LBFGS([p], max_iter=3, line_search_fn="strong_wolfe")
    opt.step(closure)
    tp = torch.nn.Parameter(torch.ones(5, dtype=torch.float64))
    a = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))

    def tclosure():
        tp.grad = (a @ tp).detach()
        return 0.5 * (tp * (a @ tp)).sum()

    topt = torch.optim.LBFGS([tp], max_iter=3, line_search_fn="strong_wolfe")
    topt.step(tclosure)
    ours, theirs = opt.state_dict(), topt.state_dict()
    if "maximize" not in theirs["param_groups"][0]:  # torch before 2.14
        del ours["param_groups"][0]["maximize"]
    assert ours["param_groups"] == theirs["param_groups"]
    assert list(ours["state"]) == list(theirs["state"]) == [0]
    assert list(ours["state"][0]) == list(theirs["state"][0])
    for key, value in theirs["state"][0].items():
        mine = ours["state"][0][key]
        if isinstance(value, list):
            assert len(mine) == len(value), key
        elif isinstance(value, torch.Tensor):
            assert np.shape(mine) == tuple(value.shape), key
        else:
            assert type(mine) is type(value) and mine == pytest.approx(value), key


def test_early_exit_when_already_optimal():
    p = arrayopt.Parameter(np.zeros(3))
    loss = np.asarray(0.25)

    def closure():
        p.grad = np.zeros(3)
        return loss

    opt = arrayopt.LBFGS([p])
    assert opt.step(closure) is loss  # the closure's own object, not a float
    assert dict(opt.state[p]) == {"func_evals": 1, "n_iter": 0}
    np.testing.assert_array_equal(p.data, np.zeros(3))


def test_returns_the_first_loss_of_the_step():
    p, closure, _ = _quadratic()
    opt = arrayopt.LBFGS([p], max_iter=5, line_search_fn="strong_wolfe")
    first = float(0.5 * np.sum(np.arange(1.0, 6.0)))
    assert float(opt.step(closure)) == first
    assert float(opt.step(closure)) < first


def test_counters_are_cumulative_and_max_eval_defaults_to_five_quarters():
    p, closure, calls = _quadratic(n=50)
    opt = arrayopt.LBFGS([p], max_iter=7)
    assert opt.param_groups[0]["max_eval"] == 8
    assert arrayopt.LBFGS([arrayopt.Parameter(np.ones(2))], max_iter=21).defaults["max_eval"] == 26
    opt.step(closure)
    opt.step(closure)
    state = opt.state[p]
    assert state["func_evals"] == len(calls)
    assert state["n_iter"] == 14  # two steps of max_iter=7, no re-evaluation after the last


def test_one_element_loss_arrays_and_numbers_are_accepted():
    for make in (lambda v: np.asarray([v]), lambda v: float(v), lambda v: np.float32(v), lambda v: round(v)):
        p = arrayopt.Parameter(np.array([3.0]))

        def closure(make=make, p=p):
            p.grad = 2 * p.data
            return make(float(p.data[0] ** 2))

        arrayopt.LBFGS([p], max_iter=3).step(closure)


@pytest.mark.parametrize(
    ("returned", "error", "match"),
    [
        (math.nan, ValueError, "the closure returned a NaN loss"),
        (None, TypeError, "the closure must return the loss as a number or a 1-element array, got None"),
        ("1.0", TypeError, "the closure must return the loss"),
        (np.ones(3), ValueError, r"got an array of shape \(3,\)"),
        (np.asarray(1 + 2j), TypeError, "the closure must return a real loss"),
        (object(), TypeError, "the closure must return the loss"),
    ],
    ids=["nan", "none", "str", "vector", "complex", "object"],
)
def test_bad_closure_values_are_clear_errors(returned, error, match):
    p = arrayopt.Parameter(np.ones(2))

    def closure():
        p.grad = np.ones(2)
        return returned

    with pytest.raises(error, match=match):
        arrayopt.LBFGS([p]).step(closure)


def test_nan_inside_the_line_search_restores_the_parameters():
    p = arrayopt.Parameter(np.array([1.0, 2.0]))
    calls = []

    def closure():
        calls.append(1)
        p.grad = 2 * p.data
        return float(np.sum(p.data**2)) if len(calls) == 1 else math.nan

    with pytest.raises(ValueError, match="NaN"):
        arrayopt.LBFGS([p], line_search_fn="strong_wolfe").step(closure)
    np.testing.assert_array_equal(p.data, [1.0, 2.0])


# (keyword arguments, error type, message); lr and the group error are torch's
BAD_ARGUMENTS = [
    ({"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ({"lr": np.array([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
    ({"history_size": 0}, ValueError, "history_size must be at least 1, got 0"),
    ({"max_iter": -1}, ValueError, "max_iter must be at least 0, got -1"),
    ({"max_iter": 2.5}, TypeError, "max_iter must be an integer, got 2.5"),
    ({"max_eval": True}, TypeError, "max_eval must be an integer, got True"),
    ({"tolerance_grad": "small"}, TypeError, "tolerance_grad must be a real number, got 'small'"),
    ({"line_search_fn": 3}, TypeError, "line_search_fn must be None or 'strong_wolfe', got 3"),
]


@pytest.mark.parametrize("row", BAD_ARGUMENTS, ids=lambda row: "-".join(map(str, row[0])))
def test_bad_arguments_raise_before_params_are_looked_at(row):
    kwargs, error, message = row
    with pytest.raises(error) as info:
        arrayopt.LBFGS(None, **kwargs)
    assert str(info.value) == message


@pytest.mark.ref
def test_same_errors_as_torch(torch):
    with pytest.raises(ValueError) as theirs:
        torch.optim.LBFGS([torch.nn.Parameter(torch.zeros(2))], lr=-1.0)
    with pytest.raises(ValueError) as ours:
        arrayopt.LBFGS([arrayopt.Parameter(np.zeros(2))], lr=-1.0)
    assert str(ours.value) == str(theirs.value)
    groups_t = [{"params": [torch.nn.Parameter(torch.zeros(2))]}, {"params": [torch.nn.Parameter(torch.zeros(2))]}]
    groups_a = [{"params": [arrayopt.Parameter(np.zeros(2))]}, {"params": [arrayopt.Parameter(np.zeros(2))]}]
    with pytest.raises(ValueError) as theirs:
        torch.optim.LBFGS(groups_t)
    with pytest.raises(ValueError) as ours:
        arrayopt.LBFGS(groups_a)
    assert str(ours.value) == str(theirs.value) == "LBFGS doesn't support per-parameter options (parameter groups)"
    tp = torch.nn.Parameter(torch.ones(2))

    def tclosure():
        tp.grad = torch.ones(2)
        return 1.0

    with pytest.raises(RuntimeError) as theirs:
        torch.optim.LBFGS([tp], line_search_fn="armijo").step(tclosure)
    p = arrayopt.Parameter(np.ones(2))

    def closure():
        p.grad = np.ones(2)
        return 1.0

    with pytest.raises(RuntimeError) as ours:
        arrayopt.LBFGS([p], line_search_fn="armijo").step(closure)
    assert str(ours.value) == str(theirs.value) == "only 'strong_wolfe' is supported"


def test_step_errors():
    p = arrayopt.Parameter(np.ones(2))
    with pytest.raises(TypeError, match=r"LBFGS\.step needs a closure"):
        arrayopt.LBFGS([p]).step()
    with pytest.raises(RuntimeError, match=r"^only 'strong_wolfe' is supported$"):
        arrayopt.LBFGS([p], line_search_fn="Strong_Wolfe").step(lambda: 1.0)
    with pytest.raises(ValueError, match="max_eval must be at least 1 with line_search_fn='strong_wolfe', got 0"):
        arrayopt.LBFGS([p], max_eval=0, line_search_fn="strong_wolfe").step(lambda: 1.0)
    with pytest.raises(ValueError, match="LBFGS needs every parameter in one precision"):
        arrayopt.LBFGS([p, arrayopt.Parameter(np.ones(2, dtype=np.float32))])
    with pytest.raises(ValueError, match="at least one parameter entry"):
        arrayopt.LBFGS([arrayopt.Parameter(np.ones((2, 0)))])
    strict = pytest.importorskip("array_api_strict")
    with pytest.raises(ValueError, match="one array library and device"):
        arrayopt.LBFGS([p, arrayopt.Parameter(strict.ones(2, dtype=strict.float64))])


def test_max_iter_zero_with_strong_wolfe_evaluates_once_and_moves_nothing(maybe_torch):
    """No iteration means no line search, so no evaluation budget is needed (as in torch)."""
    p = arrayopt.Parameter(np.array([1.0, -2.0]))
    calls = []

    def closure():
        calls.append(1)
        p.grad = 2 * p.data
        return float(p.data @ p.data)

    opt = arrayopt.LBFGS([p], max_iter=0, line_search_fn="strong_wolfe")
    assert opt.defaults["max_eval"] == 0
    assert opt.step(closure) == 5.0 and calls == [1]
    np.testing.assert_array_equal(p.data, [1.0, -2.0])
    if maybe_torch is not None:
        w = maybe_torch.nn.Parameter(maybe_torch.tensor([1.0, -2.0], dtype=maybe_torch.float64))
        theirs = maybe_torch.optim.LBFGS([w], max_iter=0, line_search_fn="strong_wolfe")

        def torch_closure():
            theirs.zero_grad()
            loss = (w * w).sum()
            loss.backward()
            return loss

        assert float(theirs.step(torch_closure)) == 5.0
        np.testing.assert_array_equal(w.detach().numpy(), [1.0, -2.0])


def test_complex_and_real_parameters_of_one_precision_mix():
    z = arrayopt.Parameter(np.array([1 + 1j, -2 + 0.5j], dtype=np.complex64))
    w = arrayopt.Parameter(np.array([3.0], dtype=np.float32))

    def closure():
        # |z - c|^2 + (w - 1)^2; torch's convention for complex gradients (d/dRe + i d/dIm)
        c = np.array([0.5j, 1.0], dtype=np.complex64)
        z.grad = 2 * (z.data - c)
        w.grad = 2 * (w.data - 1)
        return float(np.sum(np.abs(z.data - c) ** 2) + np.sum((w.data - 1) ** 2))

    opt = arrayopt.LBFGS([z, w], max_iter=50, line_search_fn="strong_wolfe")
    opt.step(closure)
    np.testing.assert_allclose(z.data, [0.5j, 1.0], atol=1e-5)
    np.testing.assert_allclose(w.data, [1.0], atol=1e-5)
    assert z.data.dtype == np.complex64 and opt.state[z]["d"].dtype == np.float32


def test_only_scalars_cross_to_the_host(monkeypatch):
    """Every host transfer in a step is a 0-d result (array-api-strict refuses the rest)."""
    strict = pytest.importorskip("array_api_strict")
    from arrayopt.backends.array_api import ArrayAPIBackend

    shapes = []
    original = ArrayAPIBackend.to_numpy

    def to_numpy(self, array):
        shapes.append(tuple(array.shape))
        return original(self, array)

    monkeypatch.setattr(ArrayAPIBackend, "to_numpy", to_numpy)
    problem = PROBLEMS["rosenbrock-10"]
    p = arrayopt.Parameter(strict.asarray(problem.init("float64")[0]))

    def closure():
        loss, grads = problem.loss_and_grad(strict, [p.data])
        p.grad = grads[0]
        return loss

    for kwargs in ({"line_search_fn": "strong_wolfe"}, {"lr": 0.1}):
        arrayopt.LBFGS([p], max_iter=10, **kwargs).step(closure)
    assert shapes and set(shapes) == {()}


def test_float32_stays_float32(xp):
    p, closure, _ = _quadratic(xp, dtype="float32")
    opt = arrayopt.LBFGS([p], max_iter=4, line_search_fn="strong_wolfe")
    opt.step(closure)
    opt.step(closure)
    state = opt.state[p]
    for value in [p.data, state["d"], state["prev_flat_grad"], *state["old_dirs"], *state["ro"], state["H_diag"]]:
        assert value.dtype == xp.float32


def test_state_dict_round_trip_continues_exactly():
    scenario = lp.Scenario("rosenbrock-10", "float64", {"line_search_fn": lp.SW, "history_size": 4, "max_iter": 5}, 8)
    problem = PROBLEMS[scenario.problem]

    def run(round_trip):
        p = arrayopt.Parameter(problem.init("float64")[0])
        opt = arrayopt.LBFGS([p], **scenario.kwargs)
        losses = []
        for k in range(scenario.steps):

            def closure(p=p):
                loss, grads = problem.loss_and_grad(np, [p.data])
                p.grad = grads[0]
                return loss

            losses.append(float(opt.step(closure)))
            if round_trip and k == 3:
                saved = copy.deepcopy(opt.state_dict())
                p = arrayopt.Parameter(p.data.copy())
                opt = arrayopt.LBFGS([p], **scenario.kwargs)
                opt.load_state_dict(saved)
        return losses, p.data

    (l1, x1), (l2, x2) = run(True), run(False)
    assert l1 == l2
    np.testing.assert_array_equal(x1, x2)


def test_docstring_examples():
    import doctest

    import arrayopt.optimizers.lbfgs

    result = doctest.testmod(arrayopt.optimizers.lbfgs, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_cupy_backend_code_path_on_a_stand_in(monkeypatch):
    """backends/cupy.py's to_numpy on a CPU stand-in for cupy: NumPy's bits, 0-d transfers only."""
    import importlib
    import sys

    import array_api_compat.numpy

    import fuse_dialect

    fake = fuse_dialect.fake_cupy_module()
    shapes = []

    def asnumpy(array):
        shapes.append(np.shape(array))
        return np.asarray(array)

    fake.asnumpy = asnumpy
    scenario = lp.Scenario("splitquad-18", "float32", {"line_search_fn": lp.SW, "history_size": 3, "max_iter": 6}, 4)
    reference = lp.run_arrayopt(scenario, np)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", array_api_compat.numpy)
    monkeypatch.delitem(sys.modules, "arrayopt.backends.cupy", raising=False)
    monkeypatch.setattr(arrayopt.backends, "cupy", None, raising=False)
    module = importlib.import_module("arrayopt.backends.cupy")
    monkeypatch.setitem(arrayopt.backends._BY_TYPE, np.ndarray, module.CuPyBackend())
    ours = lp.run_arrayopt(scenario, np)
    worst, mismatched = lp.compare(ours, reference)
    assert worst == 0.0 and not mismatched
    problem = PROBLEMS[scenario.problem]
    params = [arrayopt.Parameter(a) for a in problem.init("float32")]

    def closure():
        loss, grads = problem.loss_and_grad(np, [p.data for p in params])
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        return loss

    opt = arrayopt.LBFGS(params, **scenario.kwargs)
    shapes.clear()
    for _ in range(3):
        opt.step(closure)
    assert shapes and set(shapes) == {()}


def _machine_variants():
    """Environments that change how this machine computes, for a child process.

    OpenBLAS kernels the CPU can run (OpenBLAS does not check a forced kernel against
    the CPU: SkylakeX needs AVX-512, Haswell AVX2 and FMA, Prescott runs on any
    x86-64), NumPy with its dispatched CPU features switched off, and thread counts.
    """
    import platform

    try:  # NumPy's record of its CPU dispatch (a private module)
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:
        __cpu_dispatch__, __cpu_features__ = [], {}

    threads = {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    variants = {"threads=2": threads, "threads=1": {k: "1" for k in threads}}
    if __cpu_dispatch__:
        variants["numpy-baseline-only"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(__cpu_dispatch__)}
    if platform.machine().lower() in ("x86_64", "amd64"):
        variants["openblas=Prescott"] = {"OPENBLAS_CORETYPE": "Prescott", **threads}
        if __cpu_features__.get("AVX2") and __cpu_features__.get("FMA3"):
            variants["openblas=Haswell"] = {"OPENBLAS_CORETYPE": "Haswell"}
        if __cpu_features__.get("AVX512F"):
            variants["openblas=SkylakeX"] = {"OPENBLAS_CORETYPE": "SkylakeX"}
    return variants


def test_same_bits_on_every_blas_kernel_cpu_dispatch_and_thread_count():
    """LBFGS and its dot products give the same bits whatever BLAS kernel, NumPy CPU
    dispatch and thread count the process has (each variant runs in a child process)."""
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    expected = [arrayopt.__file__, lp.fingerprint()]
    code = "import arrayopt, lbfgs_parity; print(arrayopt.__file__); print(lbfgs_parity.fingerprint())"
    for name, settings in _machine_variants().items():
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        env.update(settings)
        env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])
        # run from tests/, so that the child imports the arrayopt this process tests
        child = subprocess.run(
            [sys.executable, "-c", code], cwd=here, env=env, capture_output=True, text=True, timeout=300
        )
        assert child.returncode == 0, f"{name}: {child.stderr[-2000:]}"
        assert child.stdout.split()[-2:] == expected, f"{name}: different bits"


@pytest.mark.parametrize("scenario", [s for s in lp.LONG_SCENARIOS if s.problem == "rosenbrock-1000"], ids=str)
def test_long_vectors_over_blocks_give_the_bits_of_one_block(scenario, monkeypatch):
    """Products, updates and maxima over blocks of 64 entries (what vectors longer than
    ``backends.pairwise.BLOCK`` go through) give the iterates of whole-vector NumPy expressions."""
    from arrayopt.backends import pairwise

    reference = lp.run_arrayopt(scenario, np)
    monkeypatch.setattr(pairwise, "BLOCK", 64)
    worst, mismatched = lp.compare(lp.run_arrayopt(scenario, np), reference, state=True)
    assert not mismatched and worst == 0.0

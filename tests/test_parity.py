"""Every case of the table equals torch.optim 2.14, on every backend and dtype.

Against the golden trajectories always, and against a live torch run when torch is
importable (which also proves the golden files are current).
"""

import numpy as np
import pytest

import harness
from cases import CASES, by_dtype
from make_golden import MUON_WRITTEN_WITH, TORCH_VERSION, golden_path, load_golden, written_with


@pytest.mark.parametrize(("case", "dtype"), by_dtype(), ids=str)
def test_matches_golden_torch_trajectory(case, dtype, xp):
    golden = load_golden(case.id, dtype)
    ours = harness.run_arrayopt(case, xp, golden)
    harness.assert_matches(ours, golden, dtype, case.ulps)


@pytest.mark.ref
@pytest.mark.parametrize(("case", "dtype"), by_dtype(), ids=str)
def test_matches_live_torch(case, dtype, xp, torch):
    inputs = harness.make_inputs(dtype)
    harness.assert_matches(harness.run_arrayopt(case, xp, inputs), harness.run_torch(case, inputs), dtype, case.ulps)


@pytest.mark.ref
@pytest.mark.parametrize("case", CASES, ids=str)
def test_golden_file_is_current(case, torch):
    """The stored inputs are today's, and today's torch reproduces the stored trajectory.

    Inputs must match exactly; trajectories within the parity tolerance, so that a
    machine whose torch kernels round differently (another CPU) does not fail, while a
    stale file (other cases, steps or inputs) does.
    """
    for dtype in case.dtypes:
        stored = load_golden(case.id, dtype)
        inputs = harness.make_inputs(dtype)
        regenerate = "run python tests/make_golden.py optimizers"
        assert sorted(k for k in stored if k.startswith("input/")) == sorted(inputs), regenerate
        for key, value in inputs.items():
            np.testing.assert_array_equal(stored[key], value, err_msg=f"{key}: {regenerate}")
        trajectory = {k: v for k, v in stored.items() if not k.startswith("input/")}
        harness.assert_matches(trajectory, harness.run_torch(case, inputs), dtype, case.ulps)


def test_every_golden_file_comes_from_the_reference_torch():
    """Regenerate them all when TORCH_VERSION (tests/make_golden.py) moves to another release."""
    for name in {case.optimizer for case in CASES} | {"SparseAdam", "LBFGS"}:
        assert written_with(golden_path(name))[0] == TORCH_VERSION, name
    assert written_with(golden_path("Muon")) == MUON_WRITTEN_WITH  # the one exception, explained there


#: 0-d state entries torch keeps in its default scalar dtype (float32) whatever the
#: parameter's dtype, until load_state_dict casts them to a real parameter's dtype.
SCALAR_STATE = ("eta", "mu", "mu_product")


def _scalar_state(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in SCALAR_STATE and "/state" in key


@pytest.mark.parametrize(("case", "dtype"), by_dtype(("float64", "complex64")), ids=str)
def test_state_dict_round_trip_continues_exactly(case, dtype, xp):
    """Saving and loading mid-run changes nothing: bitwise equal to an uninterrupted run.

    Except, as in torch, where the load casts float32 scalar state to a float64
    parameter's dtype (NAdam's mu_product is then multiplied in float64): there the
    runs agree up to the round trip, and the rest is checked against torch.
    """
    inputs = harness.make_inputs(dtype)
    with_round_trip = harness.run_arrayopt(case, xp, inputs, roundtrip=True)
    uninterrupted = harness.run_arrayopt(case, xp, inputs, roundtrip=False)
    assert with_round_trip.keys() == uninterrupted.keys()
    cast = dtype == "float64" and any(_scalar_state(key) for key in uninterrupted)
    for key, value in uninterrupted.items():
        if cast and int(key.split("/", 1)[0].removeprefix("step")) > harness.ROUNDTRIP_AFTER:
            continue
        np.testing.assert_array_equal(with_round_trip[key], value, err_msg=key)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_dtype_is_preserved(case, xp):
    """float32 stays float32 (params and state), float64 stays float64.

    Scalar state (``SCALAR_STATE``) is float32, as torch's; after the round trip it has
    a real parameter's dtype, as torch's load casts it.
    """
    for dtype in set(case.dtypes) & {"float32", "float64", "complex64"}:
        ours = harness.run_arrayopt(case, xp, harness.make_inputs(dtype))
        for key, value in ours.items():
            if _scalar_state(key):
                step = int(key.split("/", 1)[0].removeprefix("step"))
                loaded = step > harness.ROUNDTRIP_AFTER and not dtype.startswith("complex")
                assert value.dtype == np.dtype(dtype if loaded else "float32"), key
            elif not key.endswith("/step"):
                assert value.dtype == np.dtype(dtype), key


#: Optimizers whose torch computes host scalars from ``lr`` (``lr / bias_correction``,
#: ``1 - lr * weight_decay``, ASGD's eta, ...): with a 0-d float32 lr tensor they are
#: float32 numbers, whatever the parameter's dtype.
FLOAT32_LR = {
    "Adam": {"weight_decay": 0.1, "decoupled_weight_decay": True},
    "AdamW": {"weight_decay": 0.1},
    "Adamax": {},
    "ASGD": {"weight_decay": 0.1, "lambd": 0.01, "t0": 2.0},
    "NAdam": {"weight_decay": 0.1, "decoupled_weight_decay": True},
    "RAdam": {"weight_decay": 0.1, "decoupled_weight_decay": True},
    "Adafactor": {"weight_decay": 0.1},
    "Adagrad": {"lr_decay": 0.01},
    "Muon": {"weight_decay": 0.1},
    "SparseAdam": {},
}


@pytest.mark.ref
@pytest.mark.parametrize("name", list(FLOAT32_LR))
def test_a_float32_lr_array_rounds_its_scalars_as_torch_on_float64_parameters(name, xp, torch):
    rng = np.random.default_rng(7)
    x0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(6)]
    rows = np.array([[0, 2]])
    import arrayopt

    ours = arrayopt.Parameter(xp.asarray(x0))
    theirs = torch.nn.Parameter(torch.tensor(x0))
    opt = getattr(arrayopt, name)([ours], lr=xp.asarray(np.float32(0.0123)), **FLOAT32_LR[name])
    reference = getattr(torch.optim, name)([theirs], lr=torch.tensor(0.0123, dtype=torch.float32), **FLOAT32_LR[name])
    for g in grads:
        if name == "SparseAdam":
            ours.grad = arrayopt.SparseGrad(xp.asarray(rows), xp.asarray(g[rows[0]]), (3, 4))
            theirs.grad = torch.sparse_coo_tensor(torch.tensor(rows), torch.tensor(g[rows[0]]), (3, 4))
        else:
            ours.grad, theirs.grad = xp.asarray(g), torch.tensor(g)
        opt.step()
        reference.step()
        expected = theirs.detach().numpy()
        got = np.asarray(harness._to_numpy(ours.data))
        np.testing.assert_allclose(got, expected, rtol=harness.TOLERANCE["float64"], atol=0)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "NAdam", "RAdam", "Adamax"])
def test_the_first_moment_is_torch_s_lerp(name, xp):
    """torch updates m with lerp(m, g, 1 - beta1), which for a weight of 0.5 or more is
    g - (g - m) * beta1: with beta1 = 0 the moment is the gradient, exactly, however far apart."""
    import arrayopt

    p = arrayopt.Parameter(xp.asarray([1.0, -2.0, 3.0]))
    opt = getattr(arrayopt, name)([p], lr=1e-3, betas=(0.0, 0.5))
    for g in ([1e20, -1e20, 3.0], [1.0, 2.0, -1e-30], [-0.5, 1e-300, 7.0]):
        p.grad = xp.asarray(g)
        opt.step()
        moment = harness._to_numpy(opt.state[p]["exp_avg"])
        assert moment.tobytes() == np.asarray(g).tobytes(), (name, moment, g)


@pytest.mark.ref
@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adamax", "Adagrad", "Adadelta", "RMSprop", "NAdam", "ASGD"])
def test_complex_entries_with_a_non_finite_part_follow_torch_s_foreach_path(name, torch):
    """README, where it differs: on NumPy complex entries are pairs of reals throughout, as in
    torch's foreach implementations (its single-tensor ones decay in complex arithmetic:
    inf+1j -> inf+nanj). (array-api libraries put the parts back together with complex
    arithmetic, where a NaN part spreads to the other.)"""
    import arrayopt

    xp = np

    x = np.array([complex("inf+1j"), complex(1, float("nan")), 1 + 1j])
    g = np.full(3, 0.5 + 0.5j)
    ours = arrayopt.Parameter(xp.asarray(x))
    ours.grad = xp.asarray(g)
    theirs = torch.nn.Parameter(torch.tensor(x))
    theirs.grad = torch.tensor(g)
    with np.errstate(all="ignore"):
        getattr(arrayopt, name)([ours], lr=0.1, weight_decay=0.1).step()
    getattr(torch.optim, name)([theirs], lr=0.1, weight_decay=0.1, foreach=True).step()
    got, expected = harness._to_numpy(ours.data), theirs.detach().numpy()
    assert np.isnan(got[0].real) or np.isinf(got[0].real)
    np.testing.assert_allclose(got.view(np.float64), expected.view(np.float64), rtol=1e-12, atol=0)

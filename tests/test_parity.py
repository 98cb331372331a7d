"""Every case of the table equals torch.optim 2.13, on every backend and dtype.

Against the golden trajectories always, and against a live torch run when torch is
importable (which also proves the golden files are current).
"""

import numpy as np
import pytest

import harness
from cases import CASES, by_dtype
from make_golden import TORCH_VERSION, golden_path, load_golden, written_with


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
    for name in {case.optimizer for case in CASES} | {"Muon", "SparseAdam", "LBFGS"}:
        assert written_with(golden_path(name))[0] == TORCH_VERSION, name


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

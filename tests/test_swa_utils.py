"""arrayopt.swa_utils against torch.optim.swa_utils 2.14 (live, marker ``ref``, and golden).

The averages of the same parameter streams (``swa_cases.py``) must agree within 1e-12
(float64) or 4 float32 ulp, relative to each parameter's largest magnitude. The one
deliberate exception is ``get_swa_multi_avg_fn`` on float64, where torch rounds the
weight 1/(n+1) to float32 (see its docstring): there arrayopt must equal the exact
running mean instead, and torch within its own float32 error.
"""

import doctest

import numpy as np
import pytest

import arrayopt
from arrayopt import swa_utils
from arrayopt.backends import numpy as numpy_backend
from arrayopt.swa_utils import (
    AveragedModel,
    get_ema_avg_fn,
    get_ema_multi_avg_fn,
    get_swa_avg_fn,
    get_swa_multi_avg_fn,
    lerp_update,
    mean_update,
)

import fuse_dialect
import make_golden
import swa_cases as S

GOLDEN = make_golden.SWA_UTILS
TOLERANCE = {"float64": 1e-12, "float32": 4 * 2.0**-23}
TORCH_FLOAT32_WEIGHT = 5e-8  # torch's float32 SWA weight on float64 (relative error of 1/(n+1))


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as data:
        return dict(data)


def assert_same_averages(ours, ref, tolerance, what=""):
    assert sorted(ours) == sorted(ref)
    for i in range(len(S.SHAPES)):
        keys = [f"step{k}/param{i}" for k in range(S.UPDATES)]
        scale = max(float(np.max(np.abs(ref[key]))) if ref[key].size else 0.0 for key in keys)
        for key in keys:
            assert ours[key].dtype == ref[key].dtype, key
            error = float(np.max(np.abs(ours[key].astype(np.float64) - ref[key]))) if ref[key].size else 0.0
            assert error <= tolerance * scale, f"{what} {key}: error {error:.3g}, scale {scale:.3g}"


def exact_means(stream, dtype):
    """The arithmetic mean of the first k+1 snapshots, in float64."""
    out = {}
    for i in range(len(S.SHAPES)):
        total = 0.0
        for k in range(S.UPDATES):
            total = total + stream[f"input/step{k}/param{i}"].astype(np.float64)
            out[f"step{k}/param{i}"] = (total / (k + 1)).astype(dtype)
    return out


# -- against torch ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", S.DTYPES)
@pytest.mark.parametrize("config", list(S.CONFIGS))
def test_averages_match_golden(config, dtype, golden):
    stream = S.golden_stream(golden, dtype)
    np.testing.assert_array_equal(stream["input/step3/param0"], S.make_stream(dtype)["input/step3/param0"])
    ref = S.golden_averages(golden, dtype, config)
    ours = S.run_arrayopt(config, stream)
    tolerance = TOLERANCE[dtype]
    if config == "swa-multi" and dtype == "float64":
        assert_same_averages(ours, exact_means(stream, dtype), 1e-12, "exact mean")
        tolerance = TORCH_FLOAT32_WEIGHT
    assert_same_averages(ours, ref, tolerance, config)


@pytest.mark.ref
@pytest.mark.parametrize("dtype", S.DTYPES)
@pytest.mark.parametrize("config", list(S.CONFIGS))
def test_averages_match_torch(config, dtype, torch):
    stream = S.make_stream(dtype)
    tolerance = TORCH_FLOAT32_WEIGHT if (config, dtype) == ("swa-multi", "float64") else TOLERANCE[dtype]
    assert_same_averages(S.run_arrayopt(config, stream), S.run_torch(config, stream), tolerance, config)


@pytest.mark.parametrize("config", list(S.CONFIGS))
def test_every_library_gives_numpys_numbers(config, xp):
    stream = S.make_stream("float64")
    ours = S.run_arrayopt(config, stream, xp=xp)
    ref = S.run_arrayopt(config, stream)
    for key, value in ref.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


def test_swa_is_the_running_mean_and_ema_its_recursion():
    stream = S.make_stream("float64")
    assert_same_averages(S.run_arrayopt("swa-default", stream), exact_means(stream, "float64"), 1e-14)
    ema = S.run_arrayopt("ema-avg", stream)
    decay = S.CONFIGS["ema-avg"][1]
    for i in range(len(S.SHAPES)):
        expected = stream[f"input/step0/param{i}"]  # the first update copies
        for k in range(S.UPDATES):
            if k:
                expected = decay * expected + (1 - decay) * stream[f"input/step{k}/param{i}"]
            np.testing.assert_array_equal(ema[f"step{k}/param{i}"], expected)


@pytest.mark.parametrize("rule", [lerp_update, mean_update])
def test_averaging_rules_stay_in_the_cupy_fuse_dialect(rule, monkeypatch):
    stream = S.make_stream("float64")
    config = "ema-multi-small-decay" if rule is lerp_update else "swa-default"
    plain = S.run_arrayopt(config, stream)
    monkeypatch.setattr(numpy_backend, "_apply", fuse_dialect.apply_traced)
    traced = S.run_arrayopt(config, stream)
    for key, value in plain.items():
        np.testing.assert_array_equal(traced[key], value, err_msg=key)


# -- AveragedModel API ------------------------------------------------------------------------------


def host(array):
    """A NumPy copy of an array of any backend (CuPy refuses ``np.asarray``)."""
    return np.asarray(arrayopt.backends.get_backend(array).to_numpy(array))


def make_params(xp=np):
    return [arrayopt.Parameter(xp.asarray(np.arange(6.0).reshape(2, 3)), name="w"), arrayopt.Parameter(xp.zeros(3))]


def test_first_update_copies_and_n_averaged_counts():
    params = make_params()
    averaged = AveragedModel(params, avg_fn=lambda a, c, n: a * 0)  # would zero if it were applied
    params[0].data[...] = 5.0
    assert averaged.n_averaged == 0
    np.testing.assert_array_equal(averaged.parameters()[0].data, np.arange(6.0).reshape(2, 3))  # a copy
    averaged.update_parameters(params)
    assert averaged.n_averaged == 1
    np.testing.assert_array_equal(averaged.parameters()[0].data, 5.0)
    averaged.update_parameters(params)
    assert averaged.n_averaged == 2
    np.testing.assert_array_equal(averaged.parameters()[0].data, 0.0)
    assert averaged.parameters()[0].data is not params[0].data


def test_functions_receive_n_averaged_as_an_int():
    seen = []
    params = make_params()
    averaged = AveragedModel(params, multi_avg_fn=lambda a, c, n: seen.append((len(a), n)))
    for _ in range(3):
        averaged.update_parameters(params)
    assert seen == [(2, 1), (2, 2)]


def test_multi_avg_fn_is_called_per_dtype_group():
    params = [
        arrayopt.Parameter(np.zeros(2)),
        arrayopt.Parameter(np.zeros(2, dtype=np.float32)),
        arrayopt.Parameter(np.zeros(3)),
    ]
    calls = []
    averaged = AveragedModel(params, multi_avg_fn=lambda a, c, n: calls.append([x.dtype for x in a]))
    averaged.update_parameters(params)
    averaged.update_parameters(params)
    assert calls == [[np.float64, np.float64], [np.float32]]


def test_models_list_dict_pairs_and_objects():
    w, b = make_params()

    class Model:
        def parameters(self):
            return [w, b]

    class Named(Model):
        def named_parameters(self):
            return [("weight", w), ("bias", b)]

    for model, names in (
        ([w, b], ["0", "1"]),
        ({"weight": w, "bias": b}, ["weight", "bias"]),
        ([("weight", w), ("bias", b)], ["weight", "bias"]),
        (Model(), ["0", "1"]),
        (Named(), ["weight", "bias"]),
    ):
        averaged = AveragedModel(model)
        assert [name for name, _ in averaged.named_parameters()] == names
        averaged.update_parameters(model)
        assert list(averaged.state_dict()) == ["n_averaged", *(f"module.{n}" for n in names)]
    averaged = AveragedModel({"weight": w, "bias": b})
    averaged.update_parameters({"bias": b, "weight": w})  # matched by name, not position


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_parameter_lists_and_dicts_are_models(kind):
    """A ParameterList or ParameterDict averages as the Parameters it holds, under their names."""
    arrays = {"weight": np.arange(4.0).reshape(2, 2), "bias": np.array([1.0, -1.0])}
    holder = (
        arrayopt.ParameterList(list(arrays.values()), names=list(arrays))
        if kind == "list"
        else (arrayopt.ParameterDict(arrays))
    )
    plain = [arrayopt.Parameter(a.copy()) for a in arrays.values()]
    averaged, reference = AveragedModel(holder), AveragedModel(plain)
    assert [name for name, _ in averaged.named_parameters()] == list(arrays)
    for scale in (1.0, 3.0, -2.0):
        for p, q in zip(holder.parameters(), plain, strict=True):
            p.data, q.data = q.data * 0 + scale, q.data * 0 + scale
        averaged.update_parameters(holder)
        reference.update_parameters(plain)
    for (_, a), (_, b) in zip(averaged.named_parameters(), reference.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize(
    ("model", "error", "match"),
    [
        (np.zeros(3), TypeError, "must be a list or dict of Parameters"),
        (arrayopt.Parameter(np.zeros(3)), TypeError, "got a Parameter"),
        ([np.zeros(3)], TypeError, "model parameter '0' must be an arrayopt.Parameter, got ndarray"),
        ([("a", arrayopt.Parameter(np.zeros(1))), ("a", arrayopt.Parameter(np.zeros(1)))], ValueError, "duplicate"),
    ],
)
def test_bad_models_are_refused(model, error, match):
    with pytest.raises(error, match=match):
        AveragedModel(model)


def test_mismatched_models_are_refused_before_anything_changes():
    params = make_params()
    averaged = AveragedModel(params)
    averaged.update_parameters(params)
    with pytest.raises(ValueError, match="do not match the averaged parameters"):
        averaged.update_parameters(params[:1])
    with pytest.raises(ValueError, match=r"parameter '1': the model has shape \(4,\)"):
        averaged.update_parameters([params[0], arrayopt.Parameter(np.zeros(4))])
    assert averaged.n_averaged == 1


def test_only_one_averaging_function():
    with pytest.raises(AssertionError, match="Only one of avg_fn and multi_avg_fn should be provided"):
        AveragedModel(make_params(), avg_fn=get_swa_avg_fn(), multi_avg_fn=get_swa_multi_avg_fn())


@pytest.mark.parametrize("factory", [get_ema_avg_fn, get_ema_multi_avg_fn])
@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_decay_is_checked(factory, decay):
    with pytest.raises(ValueError, match=rf"Invalid decay value {decay} provided. Please provide a value in \[0,1\]"):
        factory(decay)


@pytest.mark.ref
def test_decay_message_matches_torch(torch):
    from torch.optim import swa_utils as ref

    for ours, theirs in ((get_ema_avg_fn, ref.get_ema_avg_fn), (get_ema_multi_avg_fn, ref.get_ema_multi_avg_fn)):
        with pytest.raises(ValueError) as mine:
            ours(2.0)
        with pytest.raises(ValueError) as reference:
            theirs(2.0)
        assert str(mine.value) == str(reference.value)


def test_swapped_into_evaluates_the_average_and_restores(xp):
    params = make_params(xp)
    live = [p.data for p in params]
    averaged = AveragedModel(params)
    averaged.update_parameters(params)
    for p in params:
        p.data[...] = p.data + 10.0
    averaged.update_parameters(params)  # mean: original + 5
    expected_live = [host(a).copy() for a in live]
    with averaged.swapped_into(params):
        for p, array, value in zip(params, live, expected_live, strict=True):
            assert p.data is array  # written in place
            np.testing.assert_array_equal(host(p.data), value - 5.0)
    for p, value in zip(params, expected_live, strict=True):
        np.testing.assert_array_equal(host(p.data), value)
    with pytest.raises(RuntimeError, match="boom"), averaged.swapped_into(params):
        raise RuntimeError("boom")
    for p, value in zip(params, expected_live, strict=True):
        np.testing.assert_array_equal(host(p.data), value)


def test_copy_to_writes_the_average_into_the_model():
    params = make_params()
    averaged = AveragedModel(params)
    averaged.update_parameters(params)
    params[1].data[...] = 4.0
    averaged.update_parameters(params)
    averaged.copy_to(params)
    np.testing.assert_array_equal(params[1].data, 2.0)


def test_state_dict_round_trip_and_checks(xp):
    params = make_params(xp)
    averaged = AveragedModel(params)
    for _ in range(3):
        for p in params:
            p.data[...] = p.data * 1.5 + 1.0
        averaged.update_parameters(params)
    state = averaged.state_dict()
    assert state["n_averaged"] == 3 and list(state) == ["n_averaged", "module.0", "module.1"]
    fresh = AveragedModel(make_params(xp))
    fresh.load_state_dict(state)
    assert fresh.n_averaged == 3
    for a, b in zip(fresh.parameters(), averaged.parameters(), strict=True):
        assert a.data is not b.data
        np.testing.assert_array_equal(host(a.data), host(b.data))
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "module\.1"'):
        fresh.load_state_dict({"n_averaged": 1, "module.0": state["module.0"]})
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "module\.2"'):
        fresh.load_state_dict({**state, "module.2": state["module.0"]})
    with pytest.raises(RuntimeError, match=r"size mismatch for module\.1"):
        fresh.load_state_dict({**state, "module.1": xp.zeros(4)})
    assert fresh.n_averaged == 3
    fresh.load_state_dict({"n_averaged": np.asarray(7)}, strict=False)
    assert fresh.n_averaged == 7 and isinstance(fresh.n_averaged, int)


@pytest.mark.ref
def test_torch_state_dict_layout_and_loading(torch):
    """Same keys as torch's AveragedModel over a ParameterList; its state_dict loads here."""
    stream = S.make_stream("float64")
    values = [stream[f"input/init/param{i}"] for i in range(len(S.SHAPES))]
    ref_model = torch.nn.ParameterList([torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values])
    ref = torch.optim.swa_utils.AveragedModel(ref_model)
    ref.update_parameters(ref_model)
    ref.update_parameters(ref_model)
    params = [arrayopt.Parameter(v.copy()) for v in values]
    ours = AveragedModel(params)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict({k: v.numpy() if k != "n_averaged" else int(v) for k, v in ref.state_dict().items()})
    assert ours.n_averaged == 2


def test_device_argument_places_the_copies():
    params = make_params()
    averaged = AveragedModel(params, device="cpu")
    averaged.update_parameters(params)
    np.testing.assert_array_equal(averaged.parameters()[0].data, params[0].data)


def test_use_buffers_is_accepted_and_changes_nothing():
    stream = S.make_stream("float64")
    params = [arrayopt.Parameter(stream[f"input/init/param{i}"].copy()) for i in range(len(S.SHAPES))]
    a, b = AveragedModel(params), AveragedModel(params, use_buffers=True)
    for k in range(4):
        for i, p in enumerate(params):
            p.data[...] = stream[f"input/step{k}/param{i}"]
        a.update_parameters(params)
        b.update_parameters(params)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_array_equal(x.data, y.data)
    assert b.use_buffers is True


def test_update_bn_explains_what_to_do_instead():
    with pytest.raises(NotImplementedError, match="swapped_into"):
        swa_utils.update_bn([], make_params())


def test_multi_functions_on_integer_arrays():
    ema = np.array([10, 20])
    get_ema_multi_avg_fn(0.5)([ema], [np.array([20, 40])], 0)
    np.testing.assert_array_equal(ema, [15, 30])
    mean = np.array([10, 20])
    get_swa_multi_avg_fn()([mean], [np.array([20, 40])], 1)
    np.testing.assert_array_equal(mean, [15, 30])


@pytest.mark.ref
def test_public_names_and_signatures_match_torch(torch):
    import inspect

    assert set(swa_utils.__all__) == set(torch.optim.swa_utils.__all__)
    for name in ("AveragedModel", "SWALR", "get_ema_multi_avg_fn", "get_ema_avg_fn", "update_bn"):
        ours, theirs = getattr(swa_utils, name), getattr(torch.optim.swa_utils, name)
        mine = [(p.name, p.default, p.kind) for p in inspect.signature(ours).parameters.values()]
        ref = [(p.name, p.default, p.kind) for p in inspect.signature(theirs).parameters.values()]
        assert mine == ref, name


def test_docstring_examples():
    result = doctest.testmod(swa_utils, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0

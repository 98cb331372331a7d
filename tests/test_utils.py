"""arrayopt.utils against torch.nn.utils: gradient norms and clipping, on random inputs.

Every backend (``xp``), every dtype, norm types 2, 1, inf, -inf, 0, fractional,
non-integer and negative, on separate Parameters, on ParameterLists (one flat buffer)
and on ParameterDicts, with None gradients among them: the returned norm and the
clipped gradients equal torch's within rounding (the norms are sums in another order),
and clip_grad_value_ equals torch bit for bit. On CuPy (the CPU stand-in of
tests/test_no_host_sync.py) nothing is read back from the device.
"""

import math
import warnings

import numpy as np
import pytest

import arrayopt
from arrayopt import utils
from arrayopt.backends import get_backend

SHAPES = [(3, 4), (5,), (), (2, 3, 2), (7,)]
EMPTY = (2, 0)
NORM_TYPES = [2.0, 1.0, math.inf, -math.inf, 0.0, 0.5, 3.7, -2.0, "inf", 4]
DTYPES = ["float64", "float32", "complex128", "complex64"]
#: relative tolerance of the norm against torch's (sums in another order)
RTOL = {"float64": 1e-13, "complex128": 1e-13, "float32": 16 * 2.0**-23, "complex64": 16 * 2.0**-23}


def _draw(rng, shape, dtype, scale=1.0):
    x = rng.standard_normal(shape) * scale
    if dtype.startswith("complex"):
        x = x + 1j * rng.standard_normal(shape) * scale
    return np.asarray(x, dtype=dtype)


def _shapes(norm_type):
    # torch refuses a max, min or negative-order norm when one gradient is empty (see the test below)
    p = float(norm_type)
    return SHAPES if (p == math.inf or p < 0) else [*SHAPES, EMPTY]


def _build(kind, xp, shapes, dtype):
    zeros = [xp.zeros(s, dtype=getattr(xp, dtype)) for s in shapes]
    if kind == "list":
        holder = arrayopt.ParameterList(zeros)
        return holder, list(holder)
    if kind == "dict":
        holder = arrayopt.ParameterDict({f"p{i}": z for i, z in enumerate(zeros)})
        return holder, list(holder.values())
    params = [arrayopt.Parameter(z) for z in zeros]
    return (iter(params) if kind == "generator" else params), params


def _torch_params(torch, grads, shapes, dtype):
    tparams = [torch.nn.Parameter(torch.zeros(s, dtype=getattr(torch, dtype))) for s in shapes]
    for t, g in zip(tparams, grads, strict=True):
        t.grad = None if g is None else torch.from_numpy(g.copy())
    return tparams


def _host(a):
    return np.asarray(get_backend(a).to_numpy(a))


@pytest.mark.ref
@pytest.mark.parametrize("kind", ["separate", "list", "dict", "generator"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=str)
def test_clip_grad_norm_matches_torch(norm_type, dtype, kind, xp, torch):
    rng = np.random.default_rng(abs(hash((str(norm_type), dtype, kind))) % 2**32)
    shapes = _shapes(norm_type)
    for max_norm, scale in [(0.7, 1.0), (1e6, 1.0), (1.0, 1e-3)]:  # clipped, untouched, tiny norm
        grads = [None if i == 1 else _draw(rng, s, dtype, scale) for i, s in enumerate(shapes)]
        holder, params = _build(kind, xp, shapes, dtype)
        for p, g in zip(params, grads, strict=True):
            p.grad = None if g is None else xp.asarray(g)
        tparams = _torch_params(torch, grads, shapes, dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch: "Casting complex values to real..."
            theirs = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type, foreach=False)
        ours = utils.clip_grad_norm_(holder, max_norm, norm_type=norm_type)
        assert get_backend(ours) is get_backend(params[0].data)
        total = _host(ours)
        assert total.shape == () and total.dtype == theirs.numpy().dtype
        np.testing.assert_allclose(total, theirs.numpy(), rtol=RTOL[dtype], atol=0)
        for i, (p, t) in enumerate(zip(params, tparams, strict=True)):
            if t.grad is None:
                assert p.grad is None
                continue
            mine, expected = _host(p.grad), t.grad.numpy()
            scale_of = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
            np.testing.assert_allclose(mine, expected, rtol=0, atol=RTOL[dtype] * scale_of, err_msg=f"grad {i}")


@pytest.mark.ref
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_clip_grad_value_matches_torch_bit_for_bit(dtype, xp, torch):
    rng = np.random.default_rng(7)
    for clip_value, kind in [(0.5, "separate"), (0.5, "list"), (2.0, "dict"), (-0.25, "list"), (0.0, "separate")]:
        grads = [None if i == 2 else _draw(rng, s, dtype) for i, s in enumerate([*SHAPES, EMPTY])]
        grads[0][0, 0] = np.nan
        holder, params = _build(kind, xp, [*SHAPES, EMPTY], dtype)
        for p, g in zip(params, grads, strict=True):
            p.grad = None if g is None else xp.asarray(g)
        tparams = _torch_params(torch, grads, [*SHAPES, EMPTY], dtype)
        torch.nn.utils.clip_grad_value_(tparams, clip_value, foreach=False)
        utils.clip_grad_value_(holder, clip_value)
        for p, t in zip(params, tparams, strict=True):
            if t.grad is not None:
                np.testing.assert_array_equal(_host(p.grad), t.grad.numpy())


@pytest.mark.ref
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0, 0.0], ids=str)
def test_get_total_norm_and_clip_grads_with_norm_match_torch(norm_type, xp, torch):
    rng = np.random.default_rng(11)
    grads = [_draw(rng, s, "float64") for s in SHAPES]
    theirs = torch.nn.utils.get_total_norm([torch.from_numpy(g) for g in grads], norm_type)
    ours = utils.get_total_norm([xp.asarray(g) for g in grads], norm_type)
    np.testing.assert_allclose(_host(ours), theirs.numpy(), rtol=1e-13, atol=0)
    single = utils.get_total_norm(xp.asarray(grads[0]), norm_type)
    expected = torch.nn.utils.get_total_norm(torch.from_numpy(grads[0]), norm_type)
    np.testing.assert_allclose(_host(single), expected.numpy(), rtol=1e-13, atol=0)
    # a norm over two "models", then each clipped with it
    holder, params = _build("list", xp, SHAPES, "float64")
    for p, g in zip(params, grads, strict=True):
        p.grad = xp.asarray(g)
    tparams = _torch_params(torch, grads, SHAPES, "float64")
    torch.nn.utils.clip_grads_with_norm_(tparams, 1.5, theirs)
    utils.clip_grads_with_norm_(holder, 1.5, ours)
    for p, t in zip(params, tparams, strict=True):
        np.testing.assert_allclose(_host(p.grad), t.grad.numpy(), rtol=1e-13, atol=1e-300)


@pytest.mark.ref
def test_empty_inputs_as_torch(torch):
    assert utils.get_total_norm([]) == 0.0 == float(torch.nn.utils.get_total_norm([]))
    with pytest.warns(UserWarning, match="`parameters` is an empty generator, no gradient clipping will occur."):
        assert utils.clip_grad_norm_((p for p in []), 1.0) == 0.0
    p = arrayopt.Parameter(np.zeros(3, dtype=np.float32))  # no gradient: a zero norm, nothing scaled
    total = utils.clip_grad_norm_([p], 1.0)
    assert float(total) == float(torch.nn.utils.clip_grad_norm_([torch.nn.Parameter(torch.zeros(3))], 1.0))
    assert total.dtype == np.float32 and p.grad is None


@pytest.mark.ref
def test_non_finite_norms_as_torch(torch):
    message = (
        "The total norm of order 2.0 for gradients from `parameters` is non-finite, so it cannot be clipped. "
        "To disable this error and scale the gradients by the non-finite norm anyway, set "
        "`error_if_nonfinite=False`"
    )
    for bad in (np.nan, np.inf):
        g = np.array([1.0, bad, 2.0])
        p, t = arrayopt.Parameter(np.zeros(3)), torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        p.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
        with pytest.raises(RuntimeError) as theirs:
            torch.nn.utils.clip_grad_norm_([t], 1.0, error_if_nonfinite=True)
        with pytest.raises(RuntimeError) as ours:
            utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
        assert str(ours.value) == str(theirs.value) == message
        np.testing.assert_array_equal(p.grad, g)  # refused before any change
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's "invalid value" for inf * 0; torch is silent
            total = utils.clip_grad_norm_([p], 1.0)
        expected = torch.nn.utils.clip_grad_norm_([t], 1.0)
        np.testing.assert_array_equal(total, expected.numpy())
        np.testing.assert_array_equal(p.grad, t.grad.numpy())  # scaled by the non-finite coefficient, as torch


@pytest.mark.ref
def test_torch_refuses_max_norms_over_an_empty_gradient_and_arrayopt_skips_it(torch):
    """A deliberate difference: the max (or min, or negative order) over the other gradients is well defined."""
    g = np.array([3.0, -4.0])
    tparams = _torch_params(torch, [g, np.zeros((2, 0))], [(2,), (2, 0)], "float64")
    with pytest.raises(RuntimeError, match=r"cannot compute the inf(inity)? norm on an empty tensor"):
        torch.nn.utils.clip_grad_norm_(tparams, 1.0, norm_type="inf")
    params = [arrayopt.Parameter(np.zeros(2)), arrayopt.Parameter(np.zeros((2, 0)))]
    params[0].grad, params[1].grad = g, np.zeros((2, 0))
    assert float(utils.clip_grad_norm_(params, 10.0, norm_type="inf")) == 4.0


# -- behaviour without torch ------------------------------------------------------------------


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 0.5, -1.0], ids=str)
def test_closed_forms(norm_type, xp):
    values = np.array([3.0, -4.0, 0.5, 2.0])
    magnitudes = np.abs(values)
    if norm_type == math.inf:
        expected = magnitudes.max()
    else:
        expected = np.sum(magnitudes**norm_type) ** (1 / norm_type)
    params = arrayopt.ParameterList([xp.zeros(1, dtype=xp.float64), xp.zeros(3, dtype=xp.float64)])
    params.flat_grad = xp.asarray(values)
    total = float(_host(utils.clip_grad_norm_(params, 1.0, norm_type=norm_type)))
    assert total == pytest.approx(expected, rel=1e-15)
    coefficient = min(1.0, 1.0 / (expected + 1e-6))  # p = -1: a norm below max_norm leaves the gradients
    np.testing.assert_allclose(_host(params.flat_grad), values * coefficient, rtol=1e-15)


def test_flat_and_separate_parameters_agree(xp):
    """A ParameterList reduces its buffer in one pass; separate Parameters one by one: the same norm."""
    rng = np.random.default_rng(3)
    grads = [_draw(rng, s, "float64") for s in SHAPES]
    results = []
    for kind in ("list", "separate", "dict"):
        holder, params = _build(kind, xp, SHAPES, "float64")
        for p, g in zip(params, grads, strict=True):
            p.grad = xp.asarray(g, copy=True)
        results.append((float(_host(utils.clip_grad_norm_(holder, 0.5))), [_host(p.grad) for p in params]))
    for total, clipped in results[1:]:
        assert total == pytest.approx(results[0][0], rel=1e-14)
        for a, b in zip(clipped, results[0][1], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-14)


def test_a_subset_of_a_parameter_list_touches_only_its_members():
    params = arrayopt.ParameterList([np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2)])
    params.flat_grad = np.full(8, 3.0)
    total = utils.clip_grad_norm_([params[0], params[2], params[3]], 1.0)  # two stretches: [0] and [2, 3]
    assert float(total) == pytest.approx(3.0 * math.sqrt(6), rel=1e-15)
    np.testing.assert_array_equal(params[1].grad, [3.0, 3.0])
    np.testing.assert_allclose(params[0].grad, 3.0 / (3.0 * math.sqrt(6) + 1e-6), rtol=1e-15)


def test_a_parameter_listed_twice_counts_twice_as_in_torch():
    p = arrayopt.Parameter(np.zeros(1))
    p.grad = np.array([3.0])
    total = utils.clip_grad_norm_([p, p], 1.0)
    assert float(total) == pytest.approx(3.0 * math.sqrt(2), rel=1e-15)
    coefficient = 1.0 / (3.0 * math.sqrt(2) + 1e-6)
    np.testing.assert_allclose(p.grad, [3.0 * coefficient * coefficient], rtol=1e-15)  # scaled twice, as torch


def test_sparse_gradients_are_clipped_as_their_dense_arrays():
    g = arrayopt.SparseGrad(np.array([[0, 2, 0]]), np.array([1.0, 4.0, 2.0]), (4,))  # position 0 twice: 3
    p = arrayopt.Parameter(np.zeros(4))
    p.grad = g
    total = utils.clip_grad_norm_([p], 1.0)
    assert float(total) == pytest.approx(5.0, rel=1e-15)
    np.testing.assert_allclose(p.grad.to_dense(), np.array([3.0, 0.0, 4.0, 0.0]) / (5.0 + 1e-6), rtol=1e-15)
    p.grad = arrayopt.SparseGrad(np.array([[0, 2, 0]]), np.array([1.0, 4.0, 2.0]), (4,))
    utils.clip_grad_value_([p], 2.5)
    np.testing.assert_array_equal(p.grad.to_dense(), [2.5, 0.0, 2.5, 0.0])  # the sum 3 is clipped, not 1 and 2


def test_float_total_norm_and_single_parameter():
    p = arrayopt.Parameter(np.zeros(2, dtype=np.float32))
    p.grad = np.array([3.0, 4.0], dtype=np.float32)
    utils.clip_grads_with_norm_(p, 1.0, 5.0)
    expected = np.float32(1.0) / (np.float32(5.0) + np.float32(1e-6))  # in the gradients' precision, as torch
    np.testing.assert_array_equal(p.grad, np.array([3.0, 4.0], dtype=np.float32) * expected)


BAD = [
    (lambda: utils.clip_grad_norm_(np.zeros(2), 1.0), TypeError, "got an array; wrap it in arrayopt.Parameter"),
    (lambda: utils.clip_grad_norm_([np.zeros(2)], 1.0), TypeError, "parameters[0] must be an arrayopt.Parameter"),
    (lambda: utils.clip_grad_norm_(3, 1.0), TypeError, "parameters must be an iterable of Parameters, got int"),
    (lambda: utils.clip_grad_norm_([], 1.0, norm_type="two"), ValueError, "norm_type must be a number or 'inf'"),
    (lambda: utils.get_total_norm([None]), TypeError, "tensors[0] must be an array or a SparseGrad, got NoneType"),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD, ids=[row[2][:30] for row in BAD])
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


def test_clip_grad_value_refuses_complex_before_any_change():
    a, b = arrayopt.Parameter(np.zeros(2)), arrayopt.Parameter(np.zeros(2, dtype=np.complex128))
    a.grad, b.grad = np.array([5.0, -5.0]), np.array([1j, 2.0])
    with pytest.raises(RuntimeError, match="clamp is not supported for complex types"):
        utils.clip_grad_value_([a, b], 1.0)
    np.testing.assert_array_equal(a.grad, [5.0, -5.0])


# -- on CuPy: no host sync ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["separate", "list"])
def test_cupy_norm_and_scaling_stay_on_the_device(kind, monkeypatch):
    import test_no_host_sync as probe

    probe.install_probe(monkeypatch)
    allocate = arrayopt.flat.FlatBuffer._allocate
    monkeypatch.setattr(arrayopt.flat.FlatBuffer, "_allocate", lambda self: allocate(self).view(probe.DeviceArray))
    rng = np.random.default_rng(0)
    on_device = [rng.standard_normal(s).astype(np.float32).view(probe.DeviceArray) for s in [(3, 4), (5,), (2, 2)]]
    holder = arrayopt.ParameterList(on_device) if kind == "list" else [arrayopt.Parameter(a) for a in on_device]
    params = list(holder)
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(np.float32).view(probe.DeviceArray)
    probe.READS.clear()
    total = utils.clip_grad_norm_(holder, 0.1)
    utils.clip_grad_value_(holder, 0.01)
    inf_total = utils.clip_grad_norm_(holder, 0.1, norm_type="inf")
    assert probe.READS == []
    assert type(total) is probe.DeviceArray and type(inf_total) is probe.DeviceArray
    assert all(type(p.grad) is probe.DeviceArray for p in params)
    utils.clip_grad_norm_(holder, 0.1, error_if_nonfinite=True)  # the documented read-back
    assert probe.READS

"""Muon against torch.optim.Muon 2.14, which runs its Newton–Schulz iteration in bfloat16.

arrayopt rounds where torch rounds (float32, then bfloat16, after every operation),
so what is left is the order in which torch's CPU kernels accumulate each float32 dot
product. ``torch_cpu_matmul`` below emulates that order for the kernels torch 2.13 and
2.14 dispatch to on an AVX2 CPU (worked out by probing them with sums whose rounding
depends on the order); with it the iteration gives torch's bfloat16 matrices bit for
bit, which pins down every other rounding. arrayopt itself accumulates exactly and
rounds once: on small matrices that is again torch's result; on larger ones a float32
sum now and then lands on the other side of a bfloat16 rounding boundary, and the
test states how far that moves the parameters.

Every comparison uses a live torch when it is importable (and, for the emulated
order, runs on AVX2 kernels), otherwise the golden file (``python tests/make_golden.py muon``).
"""

import copy
import doctest
import inspect

import numpy as np
import pytest

import arrayopt
import arrayopt.backends.numpy as numpy_backend
import arrayopt.optimizers.muon as muon_module
from arrayopt.optimizers.muon import Muon, newton_schulz_bfloat16

import cpu_elementwise
import fuse_dialect
import make_golden as mg

F32 = np.float32
TOLERANCE = {"float64": 1e-12, "float32": 4 * 2.0**-23}
CASES = {case[0]: case for case in mg.MUON_CASES}
SMALL_CASES = [name for name, case in CASES.items() if case[1] == mg.SMALL]


# -- torch's CPU summation order (AVX2), for bfloat16 matrices ---------------------------------


def _ilp4(products):
    """Four running sums over k = 0, 1, 2, 3 (mod 4), then added in order."""
    k = products.shape[-1]
    parts = [np.zeros(products.shape[:-1], F32) for _ in range(4)]
    i = 0
    while i + 4 <= k:
        for j in range(4):
            parts[j] = parts[j] + products[..., i + j]
        i += 4
    while i < k:
        parts[0] = parts[0] + products[..., i]
        i += 1
    total = parts[0]
    for j in range(1, 4):
        total = total + parts[j]
    return total


def _sequential(products):
    total = np.zeros(products.shape[:-1], F32)
    for i in range(products.shape[-1]):
        total = total + products[..., i]
    return total


def _reduce8(v):
    """A horizontal sum of 8 float lanes as AVX2 shuffles do it: (i, i+4), (i, i^2), (i, i^1)."""
    a = v[..., 0:4] + v[..., 4:8]
    b = a[..., [0, 1]] + a[..., [2, 3]]
    return b[..., 0] + b[..., 1]


def _vectorized_dot(products):
    """Blocks of 64 in 8 registers of 8 lanes, halved to one and reduced; then 16s; then singles."""
    k = products.shape[-1]
    registers = np.zeros((*products.shape[:-1], 8, 8), F32)
    blocks = k & ~63
    for j in range(0, blocks, 64):
        registers = registers + products[..., j : j + 64].reshape((*products.shape[:-1], 8, 8))
    regs = [registers[..., i, :] for i in range(8)]
    for offset in (4, 2, 1):
        for i in range(offset):
            regs[i] = regs[i] + regs[offset + i]
    total = _reduce8(regs[0])
    tail = np.zeros((*products.shape[:-1], 8), F32)
    vectors = k & ~15
    for j in range(blocks, vectors, 16):
        tail = tail + products[..., j : j + 8]
        tail = tail + products[..., j + 8 : j + 16]
    total = total + _reduce8(tail)
    for j in range(vectors, k):
        total = total + products[..., j]
    return total


def torch_cpu_matmul(xp, a, b):
    """``a @ b`` of bfloat16-valued float64 NumPy matrices, summed in float32 as torch 2.13 and 2.14 on the CPU do.

    The kernel depends on the operands' layouts (C order, or a transposed view), which
    the iteration reproduces: both C: four running sums; C and transposed: torch's
    vectorized dot; transposed and C: one running sum; both transposed: four sums.
    The products of bfloat16 numbers are exact in float32, so only the order matters.
    """
    products = a.astype(F32)[:, None, :] * b.T.astype(F32)[None, :, :]
    layout = (a.flags.c_contiguous, b.flags.c_contiguous)
    order = {(True, True): _ilp4, (True, False): _vectorized_dot, (False, True): _sequential}.get(layout, _ilp4)
    return order(products).astype(np.float64)


# -- runs ----------------------------------------------------------------------------------


def run_arrayopt(name, dtype, xp=np):
    _, shapes, kwargs, arrays = CASES[name]
    kwargs = {k: xp.asarray(v, dtype=xp.float64) if k in arrays else v for k, v in kwargs.items()}
    return mg.run_muon(
        arrayopt.Muon,
        kwargs,
        lambda a: arrayopt.Parameter(xp.asarray(a)),
        xp.asarray,
        lambda a: np.array(arrayopt.backends.get_backend(a).to_numpy(a), copy=True),
        mg.muon_inputs(shapes, dtype),
        len(shapes),
    )


def torch_reference(name, dtype, emulated_order):
    """torch's trajectory: live if possible (on AVX2 kernels when the order is emulated), else golden."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and (not emulated_order or torch.backends.cpu.get_cpu_capability() == "AVX2"):
        torch.set_num_threads(1)
        return mg.run_muon_torch(CASES[name], mg.muon_inputs(CASES[name][1], dtype))
    golden = mg.load_muon(name, dtype)
    np.testing.assert_array_equal(golden.pop("inputs"), mg.checksum(mg.muon_inputs(CASES[name][1], dtype)))
    return golden


def worst_error(ours, ref, dtype=None):
    """Largest |difference| over each entry's largest magnitude; asserts within TOLERANCE if dtype is given."""
    worst = 0.0
    for key, b in ref.items():
        if key == "inputs":
            continue
        a = ours[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        error = float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-300)
        if dtype is not None:
            assert error <= TOLERANCE[dtype], f"{key}: relative error {error:.3e}"
        worst = max(worst, error)
    return worst


# -- parity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", mg.MUON_DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch_with_torchs_cpu_summation_order(name, dtype, monkeypatch):
    """With torch's accumulation order, every case (small and large) equals torch over 14 steps."""
    monkeypatch.setattr(Muon, "_matmul", staticmethod(torch_cpu_matmul))
    worst_error(run_arrayopt(name, dtype), torch_reference(name, dtype, emulated_order=True), dtype)


@pytest.mark.parametrize("dtype", mg.MUON_DTYPES)
@pytest.mark.parametrize("name", SMALL_CASES)
def test_small_matrices_match_torch_as_they_are(name, dtype):
    """arrayopt's own (exact) accumulation: small matrices give torch's trajectories."""
    worst_error(run_arrayopt(name, dtype), torch_reference(name, dtype, emulated_order=False), dtype)


@pytest.mark.parametrize("dtype", mg.MUON_DTYPES)
def test_exact_accumulation_stays_within_the_stated_tolerance_of_torchs_order(dtype, monkeypatch):
    """On 64x64 to 128x32 matrices, exact accumulation moves a few bfloat16 roundings.

    Compared with torch's order (which the tests above show to be torch's results),
    each such rounding changes one entry of that step's Gram matrix or iterate by one
    bfloat16 ulp, and the later iterations spread it at that level: the parameters
    differ by about 1e-2 * adjusted_lr after 14 steps (measured 0.4e-2 to 0.9e-2,
    about 5e-5 relative). Asserted: less than steps * adjusted_lr * 2**-7, and more
    than nothing (so the test sees the effect it bounds).
    """
    shapes, steps, lr = [(64, 64), (96, 48), (48, 96), (128, 32)], 14, 0.02
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    grads = [[rng.standard_normal(shape).astype(dtype) for shape in shapes] for _ in range(steps)]

    def trajectory(matmul):
        monkeypatch.setattr(Muon, "_matmul", staticmethod(matmul))
        params = [arrayopt.Parameter(a.copy()) for a in start]
        opt = Muon(params, lr=lr)
        out = []
        for step_grads in grads:
            for p, g in zip(params, step_grads, strict=True):
                p.grad = g.copy()
            opt.step()
            out.append([p.data.copy() for p in params])
        return out

    exact, torch_order = trajectory(muon_module._exact_matmul), trajectory(torch_cpu_matmul)
    largest = 0.0
    for i, shape in enumerate(shapes):
        adjusted_lr = lr * max(1.0, shape[0] / shape[1]) ** 0.5
        difference = max(float(np.max(np.abs(a[i] - b[i]))) for a, b in zip(exact, torch_order, strict=True))
        assert difference <= steps * adjusted_lr * 2.0**-7, shape
        largest = max(largest, difference)
    assert largest > 0


@pytest.mark.ref
def test_newton_schulz_gives_torchs_bfloat16_matrices(torch):
    """The iteration alone, on matrices of many shapes and scales, bit for bit (AVX2 kernels)."""
    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        pytest.skip("the emulated summation order is that of torch's AVX2 kernels")
    from torch.optim._muon import _zeropower_via_newtonschulz

    rng = np.random.default_rng(0)
    shapes = [(2, 3), (3, 2), (4, 6), (8, 8), (5, 12), (12, 5), (16, 16), (16, 72), (72, 16), (24, 40), (64, 64)]
    for shape in shapes:
        for trial in range(6):
            g = rng.standard_normal(shape) * 10.0 ** rng.uniform(-4, 3)
            for dtype in (np.float64, np.float32):
                g = g.astype(dtype)
                for coefficients, steps, eps in [((3.4445, -4.7750, 2.0315), 5, 1e-7), ((2.0, -1.5, 0.5), 2, 1e-3)]:
                    theirs = _zeropower_via_newtonschulz(torch.from_numpy(g), coefficients, steps, eps)
                    ours = newton_schulz_bfloat16(np, g, coefficients, steps, eps, matmul=torch_cpu_matmul)
                    np.testing.assert_array_equal(ours, theirs.float().numpy(), err_msg=f"{shape} {trial}")
    zero = np.zeros((3, 4))
    theirs = _zeropower_via_newtonschulz(torch.from_numpy(zero), (3.4445, -4.7750, 2.0315), 5, 1e-7)
    np.testing.assert_array_equal(newton_schulz_bfloat16(np, zero, (3.4445, -4.7750, 2.0315), 5, 1e-7), theirs.float())


def test_golden_file_was_made_on_avx2_kernels():
    assert mg.written_with(mg.golden_path("Muon")) == mg.MUON_WRITTEN_WITH


@pytest.mark.ref
def test_golden_file_is_current(torch):
    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        pytest.skip("the golden file holds torch's results on AVX2 kernels")
    torch.set_num_threads(1)
    for name, case in CASES.items():
        for dtype in mg.MUON_DTYPES:
            stored = mg.load_muon(name, dtype)
            inputs = mg.muon_inputs(case[1], dtype)
            np.testing.assert_array_equal(stored.pop("inputs"), mg.checksum(inputs), err_msg="make_golden.py muon")
            fresh = mg.run_muon_torch(case, inputs)
            assert sorted(stored) == sorted(fresh)
            for key, value in fresh.items():
                np.testing.assert_array_equal(stored[key], value, err_msg=f"{name} {dtype} {key}")


# -- the bfloat16 rounding ---------------------------------------------------------------------


def test_bfloat16_rounding_equals_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    ties = (bits & np.uint32(0xFFFF0000)) | np.uint32(0x8000)  # exactly half-way: to even
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -3e-39, 3.3961775e38], dtype=F32)
    for values in (bits.view(F32), ties.view(F32), special):
        with np.errstate(over="ignore", invalid="ignore"):
            expected = values.astype(ml_dtypes.bfloat16).astype(F32)
            got = muon_module._round_bfloat16(np, values.astype(np.float64)).astype(F32)
        np.testing.assert_array_equal(got, expected)
        assert np.array_equal(np.signbit(got), np.signbit(expected))


# -- backends ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "large"])
def test_numpy_and_array_api_strict_agree_bitwise(name):
    strict = pytest.importorskip("array_api_strict")
    ours = run_arrayopt(name, "float32")
    theirs = run_arrayopt(name, "float32", xp=strict)
    for key, value in ours.items():
        np.testing.assert_array_equal(theirs[key], value, err_msg=key)


def test_elementwise_rules_stay_in_the_cupy_fuse_dialect(monkeypatch):
    plain = run_arrayopt("small-momentum-match_rms_adamw", "float64")
    monkeypatch.setattr(numpy_backend, "_apply", fuse_dialect.apply_traced)
    traced = run_arrayopt("small-momentum-match_rms_adamw", "float64")
    for key, value in plain.items():
        np.testing.assert_array_equal(traced[key], value, err_msg=key)


def test_cupy_backend_code_runs_muon_like_numpy(monkeypatch):
    """backends/cupy.py on a CPU stand-in (as tests/test_cupy_backend.py): same bits as NumPy."""

    plain = run_arrayopt("large", "float32")
    backend = cpu_elementwise.install_cupy_stand_in(monkeypatch)
    fused = run_arrayopt("large", "float32")
    assert backend._kernels, "the CuPy backend was not used"
    for key, value in plain.items():
        np.testing.assert_array_equal(fused[key], value, err_msg=key)


# -- adjust_lr_fn="spectral_unclamped" (torch 2.14) ----------------------------------------------

#: Not in the golden file (it predates torch 2.14): compared with a live torch 2.14 only.
SPECTRAL_CASE = ("spectral_unclamped", mg.SMALL, {"lr": 0.02, "adjust_lr_fn": "spectral_unclamped"}, ())


@pytest.mark.ref
@pytest.mark.parametrize("dtype", mg.MUON_DTYPES)
def test_spectral_unclamped_matches_torch(dtype, torch):
    try:
        torch.optim.Muon([torch.nn.Parameter(torch.zeros(2, 3))], adjust_lr_fn="spectral_unclamped")
    except ValueError:
        pytest.skip(f"torch {torch.__version__} has no adjust_lr_fn='spectral_unclamped': it came with torch 2.14")
    inputs = mg.muon_inputs(mg.SMALL, dtype)
    _, shapes, kwargs, _ = SPECTRAL_CASE
    ours = mg.run_muon(
        arrayopt.Muon, kwargs, lambda a: arrayopt.Parameter(a), np.asarray, np.array, inputs, len(shapes)
    )
    worst_error(ours, mg.run_muon_torch(SPECTRAL_CASE, inputs), dtype)


@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (5, 5), (2, 12)])
def test_spectral_unclamped_scales_the_update_by_sqrt_rows_over_cols(shape):
    """One step without weight decay moves by lr sqrt(A/B) O; "original" by lr sqrt(max(1, A/B)) O."""
    rng = np.random.default_rng(7)
    start, grad = rng.standard_normal(shape), rng.standard_normal(shape)
    moves = {}
    for fn in ("original", "spectral_unclamped"):
        p = arrayopt.Parameter(start.copy())
        p.grad = grad.copy()
        Muon([p], lr=0.1, weight_decay=0.0, adjust_lr_fn=fn).step()
        moves[fn] = p.data - start
    rows, cols = shape
    expected = (rows / cols) ** 0.5 / max(1.0, rows / cols) ** 0.5
    np.testing.assert_allclose(moves["spectral_unclamped"], expected * moves["original"], rtol=1e-12, atol=0)
    if rows < cols:
        assert np.max(np.abs(moves["spectral_unclamped"])) < np.max(np.abs(moves["original"]))


# -- constructor, groups, state ------------------------------------------------------------------


@pytest.mark.ref
def test_signature_and_groups_are_torchs(torch):
    ours = inspect.signature(Muon).parameters
    theirs = inspect.signature(torch.optim.Muon).parameters
    assert list(ours) == list(theirs)
    for key, parameter in theirs.items():
        assert ours[key].kind == parameter.kind and ours[key].default == parameter.default, key
    start = np.random.default_rng(2).standard_normal((3, 4))
    p, tp = arrayopt.Parameter(start.copy()), torch.nn.Parameter(torch.tensor(start))
    opt, topt = Muon([p], lr=0.1), torch.optim.Muon([tp], lr=0.1)
    p.grad, tp.grad = np.ones((3, 4)), torch.ones(3, 4, dtype=torch.float64)
    opt.step()
    topt.step()
    a, b = opt.state_dict(), topt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert list(a["state"][0]) == list(b["state"][0]) == ["momentum_buffer"]
    assert repr(opt) == repr(topt)


BAD = [
    ({"lr": -1.0}, ValueError, "Learning rate should be >= 0 but is: -1.0"),
    ({"momentum": -0.5}, ValueError, "momentum should be >= 0 but is: -0.5"),
    ({"weight_decay": -0.1}, ValueError, "weight decay should be >= 0 but is: -0.1"),
    ({"adjust_lr_fn": "sqrt"}, ValueError, "Adjust learning rate function sqrt is not supported"),
    ({"lr": -1.0, "momentum": -1.0}, ValueError, "Learning rate should be >= 0 but is: -1.0"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD, ids=str)
def test_bad_arguments_raise_torchs_errors(kwargs, error, message):
    with pytest.raises(error) as ours:
        Muon(None, **kwargs)
    assert str(ours.value) == message
    try:
        import torch
    except ImportError:
        return
    with pytest.raises(error) as theirs:
        torch.optim.Muon([torch.nn.Parameter(torch.zeros(2, 2))], **kwargs)
    assert str(theirs.value) == message


def test_constructor_refuses_non_2d_parameters_before_changing_the_groups():
    group = {"params": [arrayopt.Parameter(np.zeros((2, 2))), arrayopt.Parameter(np.zeros(3))]}
    with pytest.raises(ValueError, match=r"^Muon only supports 2D parameters whereas we found a parameter with size: "):
        Muon([group])
    assert list(group) == ["params"]
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        Muon([("w", arrayopt.Parameter(np.zeros((2, 2, 2))))])
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        Muon([{"params": {"v": arrayopt.Parameter(np.zeros(3))}.values()}])  # checked after the groups


def test_step_errors_come_before_any_change():
    good = arrayopt.Parameter(np.ones((2, 3)))
    opt = Muon([good])
    later = arrayopt.Parameter(np.ones(4))  # add_param_group does not check the shape, as torch
    opt.add_param_group({"params": [later]})
    good.grad, later.grad = np.ones((2, 3)), np.ones(4)
    with pytest.raises(ValueError, match=r"^Param gradient must be a 2D matrix$"):
        opt.step()
    np.testing.assert_array_equal(good.data, np.ones((2, 3)))
    assert not opt.state
    later.grad = None
    opt.param_groups[0]["ns_steps"] = 100
    with pytest.raises(ValueError, match=r"^Number of steps must be less than 100 for computational efficiency$"):
        opt.step()
    opt.param_groups[0]["ns_steps"] = 5
    opt.param_groups[0]["ns_coefficients"] = (1.0, 2.0)
    with pytest.raises(ValueError, match=r"^Coefficients must be a tuple of exactly 3 values$"):
        opt.step()
    np.testing.assert_array_equal(good.data, np.ones((2, 3)))
    z = arrayopt.Parameter(np.ones((2, 2), dtype=np.complex64))
    copt = Muon([z])
    z.grad = np.ones((2, 2), dtype=np.complex64)
    with pytest.raises(RuntimeError, match=r"^Muon does not support complex parameters$"):
        copt.step()


STEP_GROUP_ERRORS = [
    ({"eps": None}, RuntimeError, r"^Muon's eps must be a real number \(the norm's lower bound\), got None$"),
    ({"ns_steps": 2.0}, TypeError, r"^ns_steps must be an integer, got 2.0$"),
]


@pytest.mark.parametrize(("change", "error", "pattern"), STEP_GROUP_ERRORS)
def test_group_values_torch_fails_on_at_step_raise_its_type_before_any_change(change, error, pattern):
    p = arrayopt.Parameter(np.ones((2, 3)))
    opt = Muon([p], **change)
    p.grad = np.ones((2, 3))
    with pytest.raises(error, match=pattern):
        opt.step()
    np.testing.assert_array_equal(p.data, np.ones((2, 3)))
    assert not opt.state


@pytest.mark.ref
@pytest.mark.parametrize(("change", "error", "pattern"), STEP_GROUP_ERRORS)
def test_group_values_torch_fails_on_at_step_are_torchs_type(change, error, pattern, torch):
    p = torch.nn.Parameter(torch.ones(2, 3))
    opt = torch.optim.Muon([p], **change)
    p.grad = torch.ones(2, 3)
    with pytest.raises(error):
        opt.step()


def test_a_zero_gradient_still_decays_the_parameter():
    p = arrayopt.Parameter(np.full((2, 2), 2.0))
    opt = Muon([p], lr=0.1, weight_decay=0.5)
    p.grad = np.zeros((2, 2))
    opt.step()
    np.testing.assert_array_equal(p.data, np.full((2, 2), 2.0 * (1 - 0.1 * 0.5)))
    np.testing.assert_array_equal(opt.state[p]["momentum_buffer"], np.zeros((2, 2)))


@pytest.mark.ref
def test_a_torch_state_dict_loads_and_continues_like_torch(torch):
    rng = np.random.default_rng(5)
    start = [rng.standard_normal((3, 5)), rng.standard_normal((4, 2))]
    grads = [[rng.standard_normal(a.shape) for a in start] for _ in range(6)]
    tparams = [torch.nn.Parameter(torch.tensor(a)) for a in start]
    theirs = torch.optim.Muon(tparams, lr=0.05)

    def torch_step(k):
        for tp, g in zip(tparams, grads[k], strict=True):
            tp.grad = torch.tensor(g)
        theirs.step()

    for k in range(3):
        torch_step(k)
    params = [arrayopt.Parameter(tp.detach().numpy().copy()) for tp in tparams]
    ours = Muon(params)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for k in range(3, 6):
        torch_step(k)
        for p, g in zip(params, grads[k], strict=True):
            p.grad = g.copy()
        ours.step()
    for p, tp in zip(params, tparams, strict=True):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_a_loaded_state_without_a_buffer_starts_afresh():
    p, q = arrayopt.Parameter(np.eye(2)), arrayopt.Parameter(np.eye(2))
    grad = np.array([[1.0, 2.0], [3.0, 4.0]])
    fresh, loaded = Muon([p]), Muon([q])
    sd = loaded.state_dict()
    sd["state"] = {0: {}}
    loaded.load_state_dict(sd)
    p.grad, q.grad = grad.copy(), grad.copy()
    fresh.step()
    loaded.step()
    np.testing.assert_array_equal(p.data, q.data)


def test_docstring_example():
    result = doctest.testmod(muon_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0

"""numba-compiled rules (``backends/jit.py``) give the NumPy path's bits, for every case.

Skipped as a whole when numba is not installed; ``tests/test_imports.py`` checks that
arrayopt does not import numba before a kernel needs it.
"""

import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest

pytest.importorskip("numba")

import numba
from special_values import WHICH, assert_same_bits, every_function, special_pairs

import arrayopt
import arrayopt.backends.numpy as numpy_backend
import arrayopt.optimizer
from arrayopt.backends import background, get_backend, jit, trace
from arrayopt.optimizers.adam import adam_update

import harness
from cases import by_dtype


def with_numba(enabled, function, *args):
    saved = numpy_backend._numba
    numpy_backend._numba = enabled
    try:
        return function(*args)
    finally:
        numpy_backend._numba = saved


@pytest.mark.parametrize(("case", "dtype"), by_dtype(("float32", "float64", "complex64")), ids=str)
def test_numba_equals_numpy_bitwise(case, dtype):
    """Every case of the table: parameters and state after every step, numba against NumPy."""
    inputs = harness.make_inputs(dtype)
    compiled = with_numba(True, harness.run_arrayopt, case, np, inputs)
    plain = with_numba(False, harness.run_arrayopt, case, np, inputs)
    assert_same_bits(compiled, plain)


# -- made off the critical path (ARRAYOPT_NUMBA unset or auto) ---------------------------


@pytest.fixture
def fresh_kernels(monkeypatch):
    """The NumPy backend with no kernel built yet, so that each is made again."""
    backend = get_backend(np.zeros(1))
    monkeypatch.setattr(backend, "_kernels", {})
    monkeypatch.setattr(backend, "_by_call", {})
    return backend


@pytest.mark.parametrize(("case", "dtype"), by_dtype(("float32", "float64", "complex64")), ids=str)
def test_switching_to_numba_in_mid_run_changes_no_bit(case, dtype, fresh_kernels, monkeypatch):
    """Steps before the kernel is ready run on NumPy, steps after it on numba: the bits of NumPy throughout."""
    inputs = harness.make_inputs(dtype)
    plain = with_numba(False, harness.run_arrayopt, case, np, inputs)
    queued = []
    monkeypatch.setattr(background, "submit", queued.append)  # the background jobs run after step 2
    compiled_launches = []
    run_ready = jit.JitKernel.run_ready
    monkeypatch.setattr(jit.JitKernel, "run_ready", lambda k, *a: (run_ready(k, *a), compiled_launches.append(1)))
    steps = []

    def after_step(optimizer, args, kwargs):
        steps.append(1)
        if len(steps) == 2:
            while queued:
                queued.pop(0)()

    handle = arrayopt.optimizer.register_optimizer_step_post_hook(after_step)
    try:
        switched = with_numba("background", harness.run_arrayopt, case, np, inputs)
    finally:
        handle.remove()
    assert_same_bits(switched, plain)
    if any(kernel.compiled for kernel in fresh_kernels._kernels.values()):  # a rule numba compiles
        assert compiled_launches


def test_steps_while_the_background_thread_compiles(fresh_kernels):
    """The real thread: the step that first finds the kernel ready is whichever it is; the bits are NumPy's."""
    rng = np.random.default_rng(2)
    shapes = [(300,), (17, 5), (), (4000,)]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(8)]

    def ready():
        return any(type(entry) is tuple for run in fresh_kernels._kernels.values() for entry in run.compiled.values())

    def optimizer():
        params = [arrayopt.Parameter(np.ones(s, np.float32)) for s in shapes] + list(
            arrayopt.ParameterList([np.ones(s, np.float32) for s in shapes])
        )
        return params, arrayopt.Adam(params, lr=0.01, amsgrad=True, weight_decay=0.1)

    def step(params, opt, mode, k):
        for p, g in zip(params, grads[k % 8] * 2, strict=True):
            p.grad = g
        with_numba(mode, opt.step)

    params, opt = optimizer()
    before = 0
    while not ready() and before < 10_000:
        step(params, opt, "background", before)
        before += 1
    assert before >= 1 and background.wait(240) and ready()  # one step at least ran before the kernel was ready
    for k in range(before, before + 8):
        step(params, opt, "background", k)
    plain_params, plain_opt = optimizer()
    for k in range(before + 8):
        step(plain_params, plain_opt, False, k)
    results = [[p.data for p in params], [p.data for p in plain_params]]
    for x, y in zip(*results, strict=True):
        np.testing.assert_array_equal(x, y)


# -- L-BFGS's vector operations (backends/pairwise_jit.py) --------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_vector_operations_give_numpys_bits(dtype):
    """dot, axpy, axpy_dot, scale_dot and max_abs compiled in one pass: the bits of NumPy's whole-array expressions."""
    from arrayopt.backends import pairwise

    ops = pairwise.compiled(np.dtype(dtype), True)
    assert ops is not None
    rng = np.random.default_rng(8)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3e38], dtype=dtype)
    for n in [*range(0, 140), 255, 256, 257, 1000, 4099, 65537, 300_001]:
        x, y, z = ((rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)).astype(dtype) for _ in range(3))
        if n > 20 and n % 3 == 0:  # signed zeros, infinities and NaNs in some of the vectors
            x[rng.integers(0, n, 5)] = rng.choice(specials, 5)
        for alpha in (0.37, float(np.asarray(-1.3, dtype=dtype))):
            expected = y.copy()
            with np.errstate(all="ignore"):
                expected += alpha * x
                expected_dot = np.add.reduce(np.multiply(z, expected))
            with np.errstate(all="ignore"):
                expected_norm = np.add.reduce(np.multiply(expected, expected))
                scaled = x * alpha
                expected_scaled_dot = np.add.reduce(np.multiply(z, scaled))
            # in place; into another array (y untouched), with z the result itself (its squared norm)
            for into, norm in ((False, False), (True, False), (True, True)):
                got = y.copy()
                target = np.empty_like(y) if into else got
                want = expected_norm if norm else expected_dot
                got_dot = ops.axpy_dot(got, alpha, x, target if norm else z, target)
                assert target.tobytes() == expected.tobytes(), n
                assert not into or got.tobytes() == y.tobytes(), n
                assert type(got_dot) is type(want), n
                assert (np.isnan(want) and np.isnan(got_dot)) or got_dot.tobytes() == want.tobytes(), n
            # in place and scaled: (y + alpha x) h, the sum rounded first
            for h in (0.75, float(np.asarray(-3.1, dtype=dtype))):
                with np.errstate(all="ignore"):
                    want = expected * np.asarray(h, dtype=dtype)
                    want_dot = np.add.reduce(np.multiply(z, want))
                got = y.copy()
                got_dot = ops.axpy_dot(got, alpha, x, z, got, h)
                assert got.tobytes() == want.tobytes(), n
                assert (np.isnan(want_dot) and np.isnan(got_dot)) or got_dot.tobytes() == want_dot.tobytes(), n
            with pytest.raises(TypeError):  # compiled in place only
                ops.axpy_dot(y.copy(), alpha, x, z, np.empty_like(y), 0.75)
            # scale_dot into another array and in place
            for in_place in (False, True):
                source = x.copy()
                target = source if in_place else np.empty_like(x)
                got_dot = ops.scale_dot(target, source, alpha, z)
                assert target.tobytes() == scaled.tobytes(), n
                assert type(got_dot) is type(expected_scaled_dot), n
                assert (np.isnan(expected_scaled_dot) and np.isnan(got_dot)) or (
                    got_dot.tobytes() == expected_scaled_dot.tobytes()
                ), n
            got = y.copy()
            ops.axpy(got, alpha, x)
            assert got.tobytes() == expected.tobytes(), n
        with np.errstate(all="ignore"):
            expected_dot = np.add.reduce(np.multiply(x, z))
        got_dot = ops.dot(x, z)
        assert (np.isnan(expected_dot) and np.isnan(got_dot)) or got_dot.tobytes() == expected_dot.tobytes(), n
        if n:
            expected_max = np.max(np.abs(x))
            assert np.isnan(expected_max) == np.isnan(ops.max_abs(x)), n
            assert np.isnan(expected_max) or ops.max_abs(x).tobytes() == expected_max.tobytes(), n


def _rows_and_vectors(rng, k, j, n, dtype):
    """Rows and vectors over many magnitudes, some with signed zeros, infinities and NaNs."""
    rows, vectors = ((rng.standard_normal((m, n)) * 10.0 ** rng.integers(-3, 4, (m, n))).astype(dtype) for m in (k, j))
    if n > 20:
        rows[0, ::97], vectors[-1, 1::89] = 0.0, -0.0
        rows[-1, rng.integers(0, n, 3)] = np.array([np.inf, -np.inf, np.nan], dtype=dtype)
    return rows, vectors


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_products_give_numpys_bits(dtype):
    """Backend.products compiled (whole blocks of 128 * 2**p columns): the bits of NumPy's blocks."""
    from arrayopt.backends import pairwise

    ops = pairwise.compiled(np.dtype(dtype), True)
    assert ops is not None
    rng = np.random.default_rng(9)
    for block in (128, 256, 1024, 8192):
        for k, j, n in ((1, 1, 128), (2, 5, 1000), (20, 5, 3 * block + 77), (7, 20, 4 * block), (3, 2, block - 1)):
            rows, vectors = _rows_and_vectors(rng, k, j, n, dtype)
            with np.errstate(all="ignore"):
                expected = pairwise.products(rows, vectors, block)  # NumPy's blocks
                got = pairwise.products(rows, vectors, block, ops)
            assert got.dtype == expected.dtype and got.shape == (k, j)
            assert same_bits_or_both_nan(got, expected), (block, k, j, n)
    # a layout it was not compiled for (made in the background, frozen): NumPy's blocks, the same bits
    frozen = type(ops)(np.dtype(dtype), frozen=True)
    rows, vectors = _rows_and_vectors(rng, 4, 3, 2 * 8192, dtype)
    with np.errstate(all="ignore"):
        expected = pairwise.products(rows, vectors, 8192)
        assert same_bits_or_both_nan(pairwise.products(rows[:, ::-1][:, ::-1], vectors, 8192, frozen), expected)
        assert same_bits_or_both_nan(pairwise.products(np.asfortranarray(rows), vectors, 8192, frozen), expected)


def same_bits_or_both_nan(got, expected):
    """The same bits where ``expected`` is a number, NaN where it is NaN (a NaN's sign is not defined)."""
    nan = np.isnan(expected)
    return (
        bool((np.isnan(got) == nan).all()) and np.where(nan, 0, got).tobytes() == np.where(nan, 0, expected).tobytes()
    )


def test_compiled_vector_operations_fuse_no_multiply_add(monkeypatch):
    monkeypatch.setenv("ARRAYOPT_CACHE_DIR", "")  # machine code loaded from a cache cannot be inspected
    from arrayopt.backends import pairwise_jit

    ops = pairwise_jit.VectorKernels(np.float64, frozen=True)
    assembly = "".join(
        "".join(dispatcher.inspect_asm().values()) for dispatcher in ops.dispatchers() if dispatcher is not ops._max_abs
    )
    assert "vmulsd" in assembly or "mulsd" in assembly  # the inspection sees the loops
    assert "vfmadd" not in assembly and "vfmsub" not in assembly and "vfnmadd" not in assembly


def test_lbfgsb_with_compiled_products_gives_numpys_bits():
    """L-BFGS-B on 3 blocks of columns and a partial one, with an active box: numba's products, NumPy's bits."""
    n = 3 * 8192 + 500

    def run():
        def fun(x):
            a, b = x[0::2], x[1::2]
            f = float(np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2))
            g = np.empty_like(x)
            g[0::2] = -400.0 * a * (b - a * a) - 2.0 * (1.0 - a)
            g[1::2] = 200.0 * (b - a * a)
            return f, g

        x0 = np.tile([-1.2, 1.0], n // 2)
        upper = np.tile([0.8, 2.0], n // 2)
        box = types.SimpleNamespace(lb=np.full(n, -1.5), ub=upper)  # as scipy.optimize.Bounds
        return arrayopt.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=box)

    compiled = with_numba(True, run)
    plain = with_numba(False, run)
    assert compiled.nit == plain.nit > 10 and compiled.nfev == plain.nfev
    assert compiled.x.tobytes() == plain.x.tobytes() and compiled.fun == plain.fun


def test_lbfgs_with_compiled_vector_operations_gives_numpys_bits():
    import lbfgs_parity as lp

    for scenario in [s for s in lp.LONG_SCENARIOS if s.problem in ("rosenbrock-1000", "splitquad-18")]:
        compiled = with_numba(True, lp.run_arrayopt, scenario, np)
        plain = with_numba(False, lp.run_arrayopt, scenario, np)
        worst, mismatched = lp.compare(compiled, plain, state=True)
        assert not mismatched and worst == 0.0, scenario


FAKE_SLOW_NUMBA = """
import time
time.sleep(30)
raise ImportError("this numba takes 30 s to fail")
"""


def test_a_slow_numba_never_delays_a_step(tmp_path):
    """With numba installed and ARRAYOPT_NUMBA unset, no step waits for numba's import or a compilation."""
    fake = tmp_path / "fake"
    (fake / "numba").mkdir(parents=True)
    (fake / "numba" / "__init__.py").write_text(FAKE_SLOW_NUMBA)
    code = (
        "import time, numpy as np, arrayopt\n"
        "p = arrayopt.Parameter(np.linspace(-1, 1, 1000)); p.grad = np.cos(p.data)\n"
        "opt = arrayopt.Adam([p], lr=0.1)\n"
        "start = time.perf_counter()\n"
        "for _ in range(5): opt.step()\n"
        "print(time.perf_counter() - start < 20, p.data.tobytes().hex()[:64])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "ARRAYOPT_NUMBA"}
    env["PYTHONPATH"] = os.pathsep.join([str(fake), *filter(None, [env.get("PYTHONPATH")])])
    runs = [
        subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=e, capture_output=True, text=True, timeout=120)
        for e in (env, {**env, "ARRAYOPT_NUMBA": "0"})
    ]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert runs[0].stdout.split()[0] == "True"
    assert runs[0].stdout == runs[1].stdout


def compiled_kernels(kernel):
    """The numba kernels behind a NumPy-backend kernel: {(dtype, argument types...): JitKernel or None}."""
    return {key: plan and plan[0] for key, plan in kernel.compiled.items()}


def test_the_cases_really_run_compiled():
    backend = get_backend(np.zeros(1))
    p = arrayopt.Parameter(np.ones((3, 4), np.float32))
    p.grad = np.ones((3, 4), np.float32)
    with_numba(True, arrayopt.Adam([p], amsgrad=True).step)
    kernel = backend.kernel(adam_update, maximize=False, decay="none", amsgrad=True, lerp_from_end=False)
    compiled = compiled_kernels(kernel)
    assert any(isinstance(k, jit.JitKernel) and k.dtype == np.float32 for k in compiled.values())


# -- the element operations, on values where libraries differ ---------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("which", WHICH)
def test_element_operations_match_numpy_on_special_values(which, dtype):
    a, b = special_pairs(dtype)
    program = trace.trace(every_function, {"which": which}, ("array", "array", "array", "scalar"))
    kernel = jit.JitKernel(program, dtype)
    expected = np.full_like(a, 7.0)
    with np.errstate(all="ignore"):
        every_function(np, expected, a, b, 0.3, which=which)
    out = np.full_like(a, 7.0)
    kernel(out, a, b, 0.3)
    np.testing.assert_array_equal(out, expected)
    # the sign of zeros too (IEEE 754 leaves a NaN's sign and payload to the machine)
    numbers = ~np.isnan(expected)
    np.testing.assert_array_equal(np.signbit(out[numbers]), np.signbit(expected[numbers]))


def test_no_fused_multiply_add(monkeypatch):
    """a * b + c rounds twice, as in NumPy; an FMA rounds once and differs in many elements."""
    monkeypatch.setenv("ARRAYOPT_CACHE_DIR", "")  # machine code loaded from a cache cannot be inspected
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(10_000).astype(np.float32) for _ in range(3))

    def rule(xp, out, a, b, c):
        out[...] = a * b + c

    kernel = jit.JitKernel(trace.trace(rule, {}, ("array",) * 4), np.float32)
    out = np.empty_like(a)
    kernel(out, a, b, c)
    np.testing.assert_array_equal(out, a * b + c)
    # a*b is exact in float64, so this is a fused multiply-add up to a rare double rounding
    fused = (a.astype(np.float64) * b + c).astype(np.float32)
    assert np.count_nonzero(fused != out) > 100  # the comparison above could fail
    assembly = "".join(kernel.compile().inspect_asm().values())
    assert "vfmadd" not in assembly and "vfmsub" not in assembly and "vfnmadd" not in assembly


def test_parallel_chunks_give_the_same_bits(monkeypatch):
    """Above the threshold the loop runs in blocks on numba's threads; same bits."""
    monkeypatch.setattr(jit, "PARALLEL_MIN_ELEMENTS", 1000)
    flags = {"maximize": False, "decay": "l2", "amsgrad": True, "lerp_from_end": False}
    rng = np.random.default_rng(1)
    data = rng.standard_normal(5_000).astype(np.float32)
    grads = [rng.standard_normal(5_000).astype(np.float32) for _ in range(3)]
    results = []
    saved = numba.get_num_threads()
    for threads in (numba.config.NUMBA_NUM_THREADS, 1):
        kernel = jit.JitKernel(trace.trace(adam_update, flags, ("array",) * 5 + ("scalar",) * 9), np.float32)
        param, state = data.copy(), [np.zeros_like(data) for _ in range(3)]
        numba.set_num_threads(threads)
        try:
            for t, g in enumerate(grads, 1):
                scalars = (0.1, 0.99, 0.1, 0.9, 0.999, 0.001, 1e-3 / (1 - 0.9**t), (1 - 0.999**t) ** 0.5, 1e-8)
                kernel(param, g, *state, *scalars)
        finally:
            numba.set_num_threads(saved)
        assert (kernel._parallel is not None) == (threads > 1)
        results.append([param, *state])
    for x, y in zip(*results, strict=True):
        np.testing.assert_array_equal(x, y)


# -- what stays on NumPy ----------------------------------------------------------------


def test_inexact_functions_stay_on_numpy():
    def with_exp(xp, p, g, lr):
        p -= lr * xp.exp(g)

    with pytest.raises(trace.NotCompilable, match="exp"):
        trace.trace(with_exp, {}, ("array", "array", "scalar"))
    backend = get_backend(np.zeros(1))
    p, g = np.ones(5), np.linspace(0, 1, 5)
    with_numba(True, backend.kernel(with_exp), p, g, 0.1)
    np.testing.assert_array_equal(p, 1 - 0.1 * np.exp(np.linspace(0, 1, 5)))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (lambda xp, p, g, s: p.__setitem__(Ellipsis, p**3), "powers"),
        (lambda xp, p, g, s: p.__setitem__(Ellipsis, p * xp.sqrt(s)), "scalars"),
        (lambda xp, p, g, s: p.__setitem__(Ellipsis, p - (g if s > 0 else 0.0)), "comparison of scalars"),
        (lambda xp, p, g, s: p.__setitem__(Ellipsis, (p > g) * g), "booleans"),
        (lambda xp, p, g, s: p.__setitem__(slice(0, 2), g), "assignment"),
    ],
)
def test_what_cannot_be_compiled_exactly_is_refused(body, reason):
    with pytest.raises(trace.NotCompilable, match=reason):
        trace.trace(body, {}, ("array", "array", "scalar"))


def test_non_contiguous_operands_use_numpy():
    base = np.arange(12.0).reshape(3, 4)
    view = base[:, ::2]
    p = arrayopt.Parameter(view)
    p.grad = np.ones(view.shape)
    with_numba(True, arrayopt.SGD([p], lr=0.5).step)
    np.testing.assert_array_equal(base[:, ::2], np.arange(12.0).reshape(3, 4)[:, ::2] - 0.5)
    np.testing.assert_array_equal(base[:, 1::2], np.arange(12.0).reshape(3, 4)[:, 1::2])


def test_set_numba_switches_and_validates(monkeypatch):
    monkeypatch.setattr(numpy_backend, "_numba", None)
    monkeypatch.setenv("ARRAYOPT_NUMBA", "0")
    assert numpy_backend.numba_enabled() is False
    monkeypatch.setattr(numpy_backend, "_numba", None)
    monkeypatch.setenv("ARRAYOPT_NUMBA", "1")
    assert numpy_backend.numba_enabled() is True
    monkeypatch.setattr(numpy_backend, "_numba", None)
    monkeypatch.setenv("ARRAYOPT_NUMBA", "maybe")
    with pytest.raises(ValueError, match="ARRAYOPT_NUMBA must be 0, 1 or auto, got 'maybe'"):
        numpy_backend.numba_enabled()
    with pytest.raises(ValueError, match="set_numba expects True, False or 'auto'"):
        numpy_backend.set_numba("yes")
    assert numpy_backend.set_numba("auto") is True
    assert numpy_backend.set_numba(False) is False


def test_each_kernel_is_compiled_once_per_kinds_and_dtype():
    backend = get_backend(np.zeros(1))
    kernel = backend.kernel(adam_update, maximize=True, decay="decoupled", amsgrad=False, lerp_from_end=False)
    args = [np.ones(4, np.float32), np.ones(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32), 0.0]
    scalars = [0.1, 0.99, 0.1, 0.9, 0.999, 0.001, 0.01, 0.03, 1e-8]
    for _ in range(3):
        with_numba(True, kernel, *args, *scalars)
    with_numba(True, kernel, *[a.astype(np.float64) if isinstance(a, np.ndarray) else a for a in args], *scalars)
    with_numba(True, kernel, *[a.reshape(2, 2) if isinstance(a, np.ndarray) else a for a in args], *scalars)
    compiled = compiled_kernels(kernel)
    assert len(compiled) == 2
    (k32,) = [k for key, k in compiled.items() if key[0] == np.float32]
    assert len(k32.compile().signatures) == 1


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_strided_one_dimensional_operands_run_compiled(name):
    """A 1-D strided view goes to numba as it is (no copy); the result is NumPy's."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal(40).astype(np.float32)
    grads = [rng.standard_normal(20).astype(np.float32) for _ in range(3)]
    results = []
    for enabled in (True, False):
        storage = base.copy()
        p = arrayopt.Parameter(storage[::2])
        opt = getattr(arrayopt, name)([p], lr=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
        for g in grads:
            p.grad = g
            with_numba(enabled, opt.step)
        results.append(storage)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0][1::2], base[1::2])
    # the compiled path was taken: a kernel was specialised for a non-contiguous layout
    layouts = {
        arg.layout
        for run in get_backend(base)._kernels.values()
        for plan in run.compiled.values()
        if plan and plan[0]._serial is not None
        for signature in plan[0]._serial.signatures
        for arg in signature
        if hasattr(arg, "layout")
    }
    assert "A" in layouts


@pytest.mark.parametrize(("setting", "loaded"), [("0", False), ("auto", True)])
def test_numba_is_imported_by_the_first_step_only_when_enabled(setting, loaded, tmp_path):
    # with auto, the first step hands numba's import to the background thread
    code = (
        "import sys, numpy as np, arrayopt\n"
        "p = arrayopt.Parameter(np.ones(3)); p.grad = np.ones(3)\n"
        "assert 'numba' not in sys.modules\n"
        "arrayopt.Adam([p]).step()\n"
        "from arrayopt.backends import background\n"
        "assert background.wait(240)\n"
        "print('numba' in sys.modules)\n"
    )
    env = {**os.environ, "ARRAYOPT_NUMBA": setting}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(loaded)


CACHED_STEP = (
    "import numpy as np, arrayopt\n"
    "from arrayopt.backends import get_backend\n"
    "p = arrayopt.Parameter(np.ones(5, np.float32)); p.grad = np.ones(5, np.float32)\n"
    "arrayopt.Adam([p], amsgrad=True).step()\n"
    "plans = [plan for run in get_backend(p.data)._kernels.values() for plan in run.compiled.values() if plan]\n"
    "print(sum(sum(plan[0]._serial.stats.cache_hits.values()) for plan in plans))\n"
)


def test_compiled_kernels_are_cached_between_processes(tmp_path):
    env = {**os.environ, "ARRAYOPT_CACHE_DIR": str(tmp_path / "cache"), "ARRAYOPT_NUMBA": "1"}
    hits = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", CACHED_STEP], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
        hits.append(int(result.stdout))
    assert hits == [0, 1]  # compiled by the first process, loaded by the second
    (module,) = (tmp_path / "cache").glob("arrayopt_kernel_*.py")
    assert "def kernel(" in module.read_text()


def test_the_cache_folder_follows_the_environment(monkeypatch):
    monkeypatch.setenv("ARRAYOPT_CACHE_DIR", "")
    assert jit.cache_dir() is None
    monkeypatch.setenv("ARRAYOPT_CACHE_DIR", "/somewhere")
    assert jit.cache_dir() == "/somewhere"
    monkeypatch.delenv("ARRAYOPT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert jit.cache_dir() == os.path.join("/xdg", "arrayopt", "numba")


def test_asking_for_numba_without_it_says_so(tmp_path):
    code = "import sys; sys.modules['numba'] = None\nfrom arrayopt.backends import numpy as nb\nnb.set_numba(True)\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "numba-compiled rules were asked for, but numba cannot be imported" in result.stderr


# -- an untrusted cache, and fork -------------------------------------------------------


def scaled_step(xp, p, g, lr):
    p -= lr * g


def cached_kernel_files(folder):
    """{"py": the generated module, "index": numba's index, "data": numba's data file} of the one kernel there."""
    (py,) = folder.glob("arrayopt_kernel_*.py")
    index = sorted(folder.glob("__pycache__/arrayopt_kernel_*.kernel-*.nbi"))
    data = sorted(folder.glob("__pycache__/arrayopt_kernel_*.kernel-*.nbc"))
    assert len(index) == len(data) == 1, (index, data)
    return {"py": py, "index": index[0], "data": data[0]}


def run_kernel():
    """A fresh kernel (so it loads the cache folder again) run once; the parameter it stepped."""
    program = trace.trace(scaled_step, {}, ("array", "array", "scalar"))
    p = np.ones(8)
    jit.JitKernel(program, np.float64, "scaled_step")(p, np.full(8, 2.0), 0.25)
    return p


def cut_before_the_stores(text):
    body = text.index("def kernel(")
    return text[: text.index("\n        a", body) + 1]  # the loop keeps its loads, loses its stores


DAMAGE = {
    # the generated module: written again, silently
    "module cut before its stores": ("py", lambda b: cut_before_the_stores(b.decode()).encode(), False),
    "module cut in half": ("py", lambda b: b[: len(b) // 2], False),
    "module empty": ("py", lambda b: b"", False),
    "module one byte changed": ("py", lambda b: b.replace(b"lr", b"lR", 1) if b"lr" in b else b[:-2] + b"#\n", False),
    # numba's own files: it raises while compiling; emptied, compiled again
    "index cut short": ("index", lambda b: b[:12], True),
    "index garbage after its version": ("index", lambda b: b[: len(b) // 2] + b"\x80\x04garbage", True),
    "data cut short": ("data", lambda b: b[: len(b) // 3], True),
    "data another pickle": ("data", lambda b: pickle.dumps(("not", "a", "kernel")), True),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_kernel_cache_is_never_trusted_and_never_fails_a_step(damage, tmp_path, monkeypatch):
    monkeypatch.setenv("ARRAYOPT_CACHE_DIR", str(tmp_path))
    expected = np.full(8, 0.5)
    np.testing.assert_array_equal(run_kernel(), expected)  # compiles, and fills the cache
    which, change, warns = DAMAGE[damage]
    path = cached_kernel_files(tmp_path)[which]
    stamp = os.stat(cached_kernel_files(tmp_path)["py"])
    path.write_bytes(change(path.read_bytes()))
    if which != "py":  # keep the module's time: numba's index is for that file as it was
        os.utime(cached_kernel_files(tmp_path)["py"], ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    if warns:
        with pytest.warns(RuntimeWarning, match=r"numba could not use its cache of the scaled_step kernel"):
            np.testing.assert_array_equal(run_kernel(), expected)
    else:
        np.testing.assert_array_equal(run_kernel(), expected)
    np.testing.assert_array_equal(run_kernel(), expected)  # the cache works again: no warning (an error here)
    assert "# sha256 of the above: " in cached_kernel_files(tmp_path)["py"].read_text().splitlines()[-1]


STEP_AND_PRINT = (
    "import numpy as np, arrayopt\n"
    "p = arrayopt.Parameter(np.linspace(-1, 1, 7).astype(np.float32)); p.grad = np.full(7, 0.5, np.float32)\n"
    "opt = arrayopt.Adam([p], lr=0.1, amsgrad=True)\n"
    "for _ in range(3): opt.step()\n"
    "print(p.data.view(np.uint32).tolist())\n"
)


def test_a_step_in_a_new_process_survives_every_cache_file_cut_in_half(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "ARRAYOPT_CACHE_DIR": str(cache), "ARRAYOPT_NUMBA": "1"}
    runs = []
    for damage in (False, True, False):
        if damage:
            for path in cache.rglob("*"):
                if path.is_file():
                    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        result = subprocess.run(
            [sys.executable, "-c", STEP_AND_PRINT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr
        runs.append(result.stdout)
    plain = subprocess.run(
        [sys.executable, "-c", STEP_AND_PRINT],
        cwd=tmp_path,
        env={**env, "ARRAYOPT_NUMBA": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert runs == [plain.stdout] * 3


FORKED_STEP = """
import os, select, signal, sys
import numpy as np, arrayopt
from arrayopt.backends import get_backend, jit
n = jit.PARALLEL_MIN_ELEMENTS
p = arrayopt.Parameter(np.ones(n)); p.grad = np.ones(n)
opt = arrayopt.SGD([p], lr=0.5, momentum=0.9)
opt.step()
kernels = [plan[0] for run in get_backend(p.data)._kernels.values() for plan in run.compiled.values() if plan]
assert any(k._parallel is not None for k in kernels), "no parallel kernel ran"
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        opt.step()  # momentum 0.9: the buffer is 1.9, so p = 0.5 - 0.95
        q = arrayopt.Parameter(np.ones(n)); q.grad = np.ones(n); arrayopt.SGD([q], lr=0.25).step()
        os.write(write, b"ok" if (p.data == 0.5 - 0.95).all() and (q.data == 0.75).all() else b"wrong")
    finally:
        os._exit(0)
os.close(write)
ready, _, _ = select.select([read], [], [], 120)
if not ready:
    os.kill(pid, signal.SIGKILL)
_, status = os.waitpid(pid, 0)
print(os.read(read, 16).decode() if ready else "hung", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_after_parallel_kernels_ran_steps_serially(tmp_path):
    # GNU OpenMP terminates a forked child that uses its threads; two threads whatever the machine
    env = {**os.environ, "ARRAYOPT_NUMBA": "1", "NUMBA_NUM_THREADS": "2", "ARRAYOPT_CACHE_DIR": ""}
    result = subprocess.run(
        [sys.executable, "-c", FORKED_STEP], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "0"], result.stderr

"""The backend layer: dispatch, kernel caching, chunking, layouts, and the fuse dialect."""

import functools

import numpy as np
import pytest

import arrayopt
import arrayopt.backends.numpy as numpy_backend
from arrayopt.backends import get_backend, is_array
from arrayopt.optimizers.adam import adam_update

import fuse_dialect
import harness
from cases import CASES, by_dtype


@pytest.fixture
def numpy_path(monkeypatch):
    """Rules run through NumPy ufuncs (``_apply``), even where numba would compile them."""
    monkeypatch.setattr(numpy_backend, "_numba", False)


def test_dispatch_by_library(xp):
    backend = get_backend(xp.zeros(2))
    assert backend is get_backend(xp.ones((3, 3)))
    assert backend.name == xp.__name__.split(".")[-1]
    assert is_array(xp.zeros(2)) and not is_array([1.0]) and not is_array(1.0)


def test_non_arrays_are_refused_by_name():
    with pytest.raises(TypeError, match=r"expected an array .* got builtins\.list"):
        get_backend([1.0, 2.0])


def test_kernels_are_cached_per_flags():
    backend = get_backend(np.zeros(1))
    flags = {"decay": "none", "amsgrad": True, "lerp_from_end": False}
    a = backend.kernel(adam_update, maximize=False, **flags)
    assert a is backend.kernel(adam_update, lerp_from_end=False, amsgrad=True, decay="none", maximize=False)
    assert a is not backend.kernel(adam_update, maximize=True, **flags)


@pytest.mark.parametrize(("case", "dtype"), by_dtype(("float64", "complex64")), ids=str)
def test_every_rule_stays_in_the_cupy_fuse_dialect(case, dtype, monkeypatch, numpy_path):
    """Each rule, with each case's flags, runs on cupy.fuse-like proxies and gives NumPy's numbers."""
    inputs = harness.make_inputs(dtype)
    plain = harness.run_arrayopt(case, np, inputs)
    monkeypatch.setattr(numpy_backend, "_apply", fuse_dialect.apply_traced)
    traced = harness.run_arrayopt(case, np, inputs)
    for key, value in plain.items():
        np.testing.assert_array_equal(traced[key], value, err_msg=key)


def test_the_dialect_checker_catches_violations():
    def branches(xp, param, grad):
        if grad > 0:
            param[...] = param - grad

    def rebinds(xp, param, grad):
        param = param - grad

    def uses_shape(xp, param, grad):
        param[...] = param - grad * param.shape[0]

    for rule in (branches, uses_shape):
        with pytest.raises(fuse_dialect.DialectError):
            fuse_dialect.apply_traced(rule, [np.ones(2), np.ones(2)], {})
    with pytest.raises(fuse_dialect.DialectError):
        fuse_dialect.apply_traced(lambda xp, p: xp.sort(p), [np.ones(2)], {})
    fuse_dialect.apply_traced(rebinds, [np.ones(2), np.ones(2)], {})  # legal, if useless


@pytest.mark.parametrize(("case", "dtype"), by_dtype(("float32", "complex128"), CASES[::3]), ids=str)
def test_numpy_chunking_changes_no_bit(case, dtype, monkeypatch, numpy_path):
    """The rule run directly on chunks of large operands (what a plan cannot take) gives the same bits."""
    monkeypatch.setattr(numpy_backend, "_ufunc_plans", False)  # the direct path (plans: test_ufunc_plan.py)
    inputs = harness.make_inputs(dtype)
    whole = harness.run_arrayopt(case, np, inputs)
    monkeypatch.setattr(numpy_backend, "DIRECT_CHUNK_BYTES", 16)  # 2-4 elements per chunk
    chunked = harness.run_arrayopt(case, np, inputs)
    for key, value in whole.items():
        np.testing.assert_array_equal(chunked[key], value, err_msg=key)


@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_strided_parameters_update_in_place(name, dtype):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 6)).astype(dtype)
    strided = base.copy()
    view = strided[:, ::2]  # not contiguous: the whole-array path
    contiguous = np.ascontiguousarray(view)
    grad = rng.standard_normal(view.shape).astype(dtype)
    runs = []
    for data in (view, contiguous):
        p = arrayopt.Parameter(data)
        opt = getattr(arrayopt, name)([p], lr=0.1, momentum=0.9) if name == "SGD" else arrayopt.Adam([p], lr=0.1)
        for _ in range(3):
            p.grad = grad.copy()
            opt.step()
        runs.append(np.array(p.data))
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(strided[:, ::2], runs[0])  # the view was written through
    np.testing.assert_array_equal(strided[:, 1::2], base[:, 1::2])  # and nothing else


def test_mismatched_operands_are_refused():
    backend = get_backend(np.zeros(1))
    backend.check_operands([np.zeros(3), np.zeros(3), 0.5])
    with pytest.raises(ValueError, match=r"shape \(4,\) and dtype float64, but the parameter has shape \(3,\)"):
        backend.check_operands([np.zeros(3), np.zeros(3), np.zeros(4)])
    with pytest.raises(ValueError, match="dtype float32"):
        backend.check_operands([np.zeros(3), np.zeros(3, dtype=np.float32)])


def _pairwise_sum(values):
    """NumPy's pairwise summation order, in Python: 8 interleaved partial sums per block
    of at most 128 entries, longer runs halved (rounded down to a multiple of 8)."""
    n = len(values)
    if n < 8:
        total = values.dtype.type(-0.0)
        for v in values:
            total = total + v
        return total
    if n <= 128:
        partial = list(values[:8])
        whole = n - n % 8
        for i in range(8, whole, 8):
            for j in range(8):
                partial[j] = partial[j] + values[i + j]
        total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + (
            (partial[4] + partial[5]) + (partial[6] + partial[7])
        )
        for v in values[whole:]:
            total = total + v
        return total
    half = n // 2
    half -= half % 8
    return _pairwise_sum(values[:half]) + _pairwise_sum(values[half:])


@pytest.mark.parametrize("generic", [False, True], ids=["backend", "base-class"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dot_sums_the_products_in_one_fixed_order(xp, dtype, generic):
    """Backend.dot is the pairwise sum of the rounded products, not BLAS's (kernel-dependent) dot.

    ``base-class``: the generic ``xp.sum(a * b)`` that the NumPy backend shortcuts.
    """
    backend = get_backend(xp.zeros(1))
    dot = functools.partial(arrayopt.backends.Backend.dot, backend) if generic else backend.dot
    rng = np.random.default_rng(11)
    for n in (1, 7, 8, 9, 127, 128, 129, 1000, 12345, 100003):
        a, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
        got = xp.asarray(dot(xp.asarray(a), xp.asarray(b)))
        assert got.shape == () and got.dtype == getattr(xp, dtype)
        expected = np.asarray(_pairwise_sum(a * b))
        got = np.asarray(backend.to_numpy(got))
        if backend.name == "cupy":  # CuPy's own reduction order: on the device, not NumPy's bits
            np.testing.assert_allclose(got, expected, rtol=n * np.finfo(dtype).eps)
        else:
            assert got.tobytes() == expected.tobytes(), n


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_products_sum_each_block_in_one_fixed_order(xp, dtype):
    """Backend.products: per block of reduction_block columns the pairwise sum of the rounded products,
    the blocks added in column order (never BLAS); the NumPy backend's blocks give the base class's bits."""
    backend = get_backend(xp.zeros(1))
    rng = np.random.default_rng(12)
    block = backend.reduction_block
    for k, j, n in ((1, 1, 1), (3, 2, 0), (2, 5, 1000), (4, 3, 2 * 8192 + 129), (20, 5, 12345)):
        rows, vectors = rng.standard_normal((k, n)).astype(dtype), rng.standard_normal((j, n)).astype(dtype)
        got = backend.to_numpy(backend.products(xp.asarray(rows), xp.asarray(vectors)))
        generic = backend.to_numpy(arrayopt.backends.Backend.products(backend, xp.asarray(rows), xp.asarray(vectors)))
        assert got.shape == (k, j) and got.dtype == np.dtype(dtype)
        width = block or max(n, 1)
        expected = np.zeros((k, j), dtype)
        for a in range(k):
            for b in range(j):
                parts = [_pairwise_sum(rows[a, s : s + width] * vectors[b, s : s + width]) for s in range(0, n, width)]
                for i, part in enumerate(parts):  # the blocks' sums added in column order
                    expected[a, b] = part if i == 0 else expected[a, b] + part
        if backend.name == "cupy":  # CuPy's own reduction order: on the device, not NumPy's bits
            np.testing.assert_allclose(got, expected, rtol=max(n, 1) * np.finfo(dtype).eps)
        else:
            assert got.tobytes() == expected.tobytes(), (k, j, n)
            assert generic.tobytes() == expected.tobytes(), (k, j, n)


def _vectors(rng, n, dtype):
    """Three vectors over many magnitudes, with signed zeros and repeated values."""
    x, y, z = ((rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)).astype(dtype) for _ in range(3))
    x[::97], y[1::89], z[2::83] = 0.0, -0.0, x[2::83]
    return x, y, z


@pytest.mark.parametrize("into", [False, True], ids=["in-place", "into-another"])
def test_fused_vector_operations_give_the_separate_bits(xp, into):
    """axpy_dot and scale_dot on every library: the bits of the operations one at a time (``y + alpha x``,
    ``(y + alpha x) h`` or ``x c``, then ``dot``), the result written where asked and nothing else touched."""
    backend = get_backend(xp.zeros(1))
    rng = np.random.default_rng(11)
    for n in (1, 9, 300):
        x, y, z = (xp.asarray(v) for v in _vectors(rng, n, "float64"))
        keep_x, keep_y = np.asarray(backend.to_numpy(x)).copy(), np.asarray(backend.to_numpy(y)).copy()
        expected = y + (-0.37) * x
        target = xp.empty_like(y) if into else xp.asarray(y, copy=True)
        got = backend.axpy_dot(y if into else target, -0.37, x, z, out=target if into else None)
        assert backend.to_numpy(target).tobytes() == backend.to_numpy(expected).tobytes()
        assert backend.to_numpy(got).tobytes() == backend.to_numpy(backend.dot(z, expected)).tobytes()
        got = backend.axpy_dot(y, -0.37, x, target, out=target) if into else None
        if into:  # z the result itself: its squared norm
            assert backend.to_numpy(got).tobytes() == backend.to_numpy(backend.dot(expected, expected)).tobytes()
        target = xp.empty_like(y) if into else xp.asarray(y, copy=True)
        got = backend.axpy_dot(y if into else target, -0.37, x, z, out=target if into else None, scale=1.5)
        assert backend.to_numpy(target).tobytes() == backend.to_numpy(expected * 1.5).tobytes()
        assert backend.to_numpy(got).tobytes() == backend.to_numpy(backend.dot(z, expected * 1.5)).tobytes()
        scaled = x * 2.5
        target = xp.asarray(x, copy=True) if not into else xp.empty_like(x)
        got = backend.scale_dot(target, target if not into else x, 2.5, z)
        assert backend.to_numpy(target).tobytes() == backend.to_numpy(scaled).tobytes()
        assert backend.to_numpy(got).tobytes() == backend.to_numpy(backend.dot(z, scaled)).tobytes()
        assert backend.to_numpy(x).tobytes() == keep_x.tobytes() and backend.to_numpy(y).tobytes() == keep_y.tobytes()


@pytest.mark.parametrize("block", [None, 64], ids=["default-blocks", "small-blocks"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blocked_vector_operations_give_the_unblocked_bits(dtype, block, monkeypatch, numpy_path):
    """NumPy's axpy, axpy_dot, scale_dot and max_abs over cache-sized blocks (backends/pairwise.py) give the
    bits of the whole-array expressions: ``y += alpha * x``, ``add.reduce(multiply(z, y))``, ``x * c``,
    ``max(abs(x))``."""
    from arrayopt.backends import pairwise

    if block:
        monkeypatch.setattr(pairwise, "BLOCK", block)
    backend = get_backend(np.zeros(1))
    rng = np.random.default_rng(5)
    for n in (1, 7, 64, 65, 1000, 1031, 70001, 200003):
        x, y, z = _vectors(rng, n, dtype)
        for alpha in (np.asarray(-0.37, dtype=dtype), 1.7, np.asarray(1e-30, dtype=dtype)[()]):
            expected = y.copy()
            expected += alpha * x
            expected_dot = np.add.reduce(np.multiply(z, expected))
            expected_norm = np.add.reduce(np.multiply(expected, expected))
            # in place; into another array (y untouched), with z the result itself (its squared norm)
            for into, norm in ((False, False), (True, False), (True, True)):
                got = y.copy()
                target = np.empty_like(y) if into else got
                want = expected_norm if norm else expected_dot
                got_dot = backend.axpy_dot(got, alpha, x, target if norm else z, out=target if into else None)
                assert target.tobytes() == expected.tobytes(), n
                assert not into or got.tobytes() == y.tobytes(), n
                assert type(got_dot) is type(want) and got_dot.tobytes() == want.tobytes(), n
            assert backend.dot(z, expected).tobytes() == expected_dot.tobytes(), n
            for into in (False, True):  # scaled: (y + alpha x) h, the sum rounded first
                got = y.copy()
                target = np.empty_like(y) if into else got
                want = expected * np.asarray(-0.3, dtype=dtype)
                got_dot = backend.axpy_dot(got, alpha, x, z, out=target if into else None, scale=-0.3)
                assert target.tobytes() == want.tobytes(), n
                assert got_dot.tobytes() == np.add.reduce(np.multiply(z, want)).tobytes(), n
            scaled = x * alpha
            expected_scaled_dot = np.add.reduce(np.multiply(z, scaled))
            for in_place in (False, True):
                source = x.copy()
                target = source if in_place else np.empty_like(x)
                got_dot = backend.scale_dot(target, source, alpha, z)
                assert target.tobytes() == scaled.tobytes(), n
                assert type(got_dot) is type(expected_scaled_dot), n
                assert got_dot.tobytes() == expected_scaled_dot.tobytes(), n
            got = y.copy()
            backend.axpy(got, alpha, x)
            assert got.tobytes() == expected.tobytes(), n
        # C-contiguous arrays of any shape are taken as 1-D, others as they are
        for rows, view in ((0, np.s_[:]), (1, np.s_[:, :]), (2, np.s_[:, ::2])):
            target = (np.tile(y, (rows, 1)) if rows else y.copy())[view]
            source = (np.tile(x, (rows, 1)) if rows else x.copy())[view]
            expected = target.copy()
            expected += 0.5 * source
            backend.axpy(target, 0.5, source)
            np.testing.assert_array_equal(target, expected)
        assert backend.max_abs(x).tobytes() == np.max(np.abs(x)).tobytes()
        for special in (np.inf, -np.inf, np.nan):
            x[n // 2] = special
            assert backend.max_abs(x).tobytes() == np.max(np.abs(x)).tobytes(), (n, special)

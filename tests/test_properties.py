"""Property tests (hypothesis): the same rule gives the same bits on every layout and library."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import arrayopt
import arrayopt.backends.numpy as numpy_backend
from arrayopt.backends import plan

from cases import CASES

PLAN_SETTINGS = plan.PLAN_CHUNK_BYTES, plan.PARALLEL_MIN_ELEMENTS

strict = pytest.importorskip("array_api_strict")

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)
dtypes = st.sampled_from(["float32", "float64", "complex64"])


def run(case, xp, data, grads):
    kwargs = {k: v for k, v in case.kwargs.items()}
    for name in case.array_hyper:
        value = kwargs[name]
        kwargs[name] = tuple(xp.asarray(x) for x in value) if isinstance(value, tuple) else xp.asarray(value)
    p = arrayopt.Parameter(xp.asarray(data.copy()))
    opt = getattr(arrayopt, case.optimizer)([p], **kwargs)
    for g in grads:
        p.grad = xp.asarray(g.copy())
        opt.step()
    return np.asarray(arrayopt.backends.get_backend(p.data).to_numpy(p.data))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(CASES), shape=shapes, dtype=dtypes, seed=st.integers(0, 2**32 - 1))
def test_numpy_and_array_api_strict_agree(case, shape, dtype, seed):
    assume(dtype in case.dtypes)
    rng = np.random.default_rng(seed)

    def draw():
        x = np.asarray(rng.standard_normal(shape))
        if dtype.startswith("complex"):
            x = x + 1j * rng.standard_normal(shape)
        return np.asarray(x, dtype=dtype)

    data, grads = draw(), [draw() for _ in range(3)]
    # == treats -0.0 and 0.0 as equal: the generic backend's complex write-back may flip
    # the sign of a zero, nothing else.
    np.testing.assert_array_equal(run(case, np, data, grads), run(case, strict, data, grads))


@settings(max_examples=40, deadline=None)
@given(
    case=st.sampled_from(CASES),
    size=st.integers(0, 40),
    chunk=st.integers(1, 12),
    dtype=dtypes,
    seed=st.integers(0, 2**32 - 1),
)
def test_chunk_size_never_changes_a_bit(case, size, chunk, dtype, seed):
    assume(dtype in case.dtypes)
    rng = np.random.default_rng(seed)
    data = np.asarray(rng.standard_normal(size), dtype=dtype)
    grads = [np.asarray(rng.standard_normal(size), dtype=dtype) for _ in range(3)]
    whole = run(case, np, data, grads)  # compiled by numba when it is installed
    saved = numpy_backend.DIRECT_CHUNK_BYTES, numpy_backend._numba, numpy_backend.PLAN_MIN_BYTES
    numpy_backend.DIRECT_CHUNK_BYTES = chunk * np.dtype(dtype).itemsize
    numpy_backend._numba = False
    try:
        chunked = run(case, np, data, grads)
        # The ufunc plans too, in chunks of the same size, over three threads.
        numpy_backend.PLAN_MIN_BYTES = 0
        threads = plan.set_num_threads(3)
        plan.PLAN_CHUNK_BYTES, plan.PARALLEL_MIN_ELEMENTS = chunk * np.dtype(dtype).itemsize, 8
        try:
            planned = run(case, np, data, grads)
        finally:
            plan.set_num_threads(threads)
            plan.PLAN_CHUNK_BYTES, plan.PARALLEL_MIN_ELEMENTS = PLAN_SETTINGS
    finally:
        numpy_backend.DIRECT_CHUNK_BYTES, numpy_backend._numba, numpy_backend.PLAN_MIN_BYTES = saved
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_array_equal(planned, whole)


@settings(max_examples=40, deadline=None)
@given(case=st.sampled_from(CASES), shape=shapes, dtype=dtypes, seed=st.integers(0, 2**32 - 1))
def test_maximize_with_g_equals_minimize_with_minus_g(case, shape, dtype, seed):
    assume(dtype in case.dtypes)
    rng = np.random.default_rng(seed)
    data = np.asarray(rng.standard_normal(shape), dtype=dtype)
    grads = [np.asarray(rng.standard_normal(shape), dtype=dtype) for _ in range(3)]
    maximize = case.kwargs.get("maximize", False)
    flipped = type(case)(case.optimizer, {**case.kwargs, "maximize": not maximize}, case.array_hyper)
    np.testing.assert_array_equal(run(case, np, data, grads), run(flipped, np, data, [-g for g in grads]))

"""The CuPy backend: on a GPU against the NumPy backend; without one, its code on a stand-in.

``backends/cupy.py`` is only imported when a CuPy array appears. Without a GPU its
launch logic (flattening to 1-D, complex arrays as real pairs, scalars cast to the
real dtype, one cached fused kernel per flag set) still runs here, with a stand-in
``cupy`` whose ``fuse`` traces rules on dialect-checking proxies over NumPy arrays.
"""

import importlib
import sys

import numpy as np
import pytest

import arrayopt.backends

import fuse_dialect
import harness
from cases import by_dtype
from conftest import load_namespace


@pytest.fixture
def stand_in_cupy_backend(monkeypatch):
    import array_api_compat.numpy

    monkeypatch.setitem(sys.modules, "cupy", fuse_dialect.fake_cupy_module())
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", array_api_compat.numpy)
    monkeypatch.delitem(sys.modules, "arrayopt.backends.cupy", raising=False)
    monkeypatch.setattr(arrayopt.backends, "cupy", None, raising=False)
    module = importlib.import_module("arrayopt.backends.cupy")
    backend = module.CuPyBackend()
    monkeypatch.setitem(arrayopt.backends._BY_TYPE, np.ndarray, backend)
    return backend


@pytest.mark.parametrize(("case", "dtype"), by_dtype(("float64", "float32", "complex64")), ids=str)
def test_stand_in_cupy_backend_equals_numpy_backend(case, dtype, stand_in_cupy_backend):
    inputs = harness.make_inputs(dtype)
    fused = harness.run_arrayopt(case, np, inputs)
    assert stand_in_cupy_backend._kernels, "the CuPy backend was not used"
    del arrayopt.backends._BY_TYPE[np.ndarray]  # back to the NumPy backend (restored after the test)
    assert arrayopt.backends.get_backend(np.zeros(1)).name == "numpy"
    plain = harness.run_arrayopt(case, np, inputs)
    for key, value in plain.items():
        np.testing.assert_array_equal(fused[key], value, err_msg=key)


def test_stand_in_casts_scalars_and_flattens(stand_in_cupy_backend):
    seen = []

    def rule(xp, param, grad, lr, *, maximize):
        seen.append((param.value.shape, type(lr.value)))
        param[...] = param - lr * grad

    kernel = stand_in_cupy_backend.kernel(rule, maximize=False)
    data = np.ones((2, 3), dtype=np.complex64)
    kernel(data, np.full((2, 3), 1 + 2j, dtype=np.complex64), 0.5)
    assert seen == [((12,), np.float32)]
    np.testing.assert_array_equal(data, np.full((2, 3), 0.5 - 1j, dtype=np.complex64))
    assert stand_in_cupy_backend.kernel(rule, maximize=False) is kernel


@pytest.mark.cuda
@pytest.mark.parametrize(("case", "dtype"), by_dtype(("float64", "float32", "complex64")), ids=str)
def test_fused_gpu_kernels_equal_numpy(case, dtype):
    cupy = load_namespace("cupy")
    inputs = harness.make_inputs(dtype)
    gpu = harness.run_arrayopt(case, cupy, inputs)
    cpu = harness.run_arrayopt(case, np, inputs)
    # The GPU may contract multiply-adds into FMAs: same tolerance as against torch.
    harness.assert_matches(gpu, cpu, dtype, case.ulps)

"""The CuPy backend: on a GPU against the NumPy backend; without one, its code on a stand-in.

``backends/cupy.py`` is only imported when a CuPy array appears. Without a GPU its
launch logic (flattening to 1-D, complex arrays as real pairs, host scalars, one
cached kernel per flag set) still runs here, with a stand-in ``cupy``: its
``ElementwiseKernel`` compiles the generated CUDA C++ body as C++ for the CPU
(``tests/cpu_elementwise.py``), and its ``fuse`` traces rules on dialect-checking
proxies over NumPy arrays.
"""

import importlib

import numpy as np
import pytest

import arrayopt.backends

import cpu_elementwise
import harness
from cases import by_dtype
from conftest import load_namespace
from make_golden import load_golden


def install_stand_in(monkeypatch, elementwise):
    """The CuPy backend over a stand-in ``cupy``; generated kernels compiled as C++ or disabled."""
    return cpu_elementwise.install_cupy_stand_in(monkeypatch, elementwise)


@pytest.fixture(params=["elementwise", "fuse"])
def stand_in_cupy_backend(request, monkeypatch):
    """Both CuPy paths: generated ElementwiseKernels (needs a C++ compiler) and cupy.fuse."""
    if request.param == "elementwise" and cpu_elementwise.COMPILER is None:
        pytest.skip("no C++ compiler to stand in for NVRTC")
    return install_stand_in(monkeypatch, request.param == "elementwise")


@pytest.mark.parametrize(("case", "dtype"), by_dtype(("float64", "float32", "complex64")), ids=str)
def test_stand_in_cupy_backend_equals_numpy_backend(case, dtype, stand_in_cupy_backend):
    """Bitwise: the generated kernels round as NumPy does (no FMA), and so does the fused path here."""
    inputs = harness.make_inputs(dtype)
    fused = harness.run_arrayopt(case, np, inputs)
    assert stand_in_cupy_backend._kernels, "the CuPy backend was not used"
    del arrayopt.backends._BY_TYPE[np.ndarray]  # back to the NumPy backend (restored after the test)
    assert arrayopt.backends.get_backend(np.zeros(1)).name == "numpy"
    plain = harness.run_arrayopt(case, np, inputs)
    for key, value in plain.items():
        np.testing.assert_array_equal(fused[key], value, err_msg=key)
        assert np.asarray(fused[key]).tobytes() == np.asarray(value).tobytes(), key


@pytest.mark.skipif(cpu_elementwise.COMPILER is None, reason="no C++ compiler to stand in for NVRTC")
def test_generated_kernels_are_used_and_forbid_fma(monkeypatch):
    backend = install_stand_in(monkeypatch, elementwise=True)
    cpu_elementwise.CpuElementwiseKernel.instances.clear()
    p = arrayopt.Parameter(np.ones(6, np.float32))
    p.grad = np.full(6, 0.5, np.float32)
    arrayopt.Adam([p], amsgrad=True, weight_decay=0.1).step()
    (kernel,) = cpu_elementwise.CpuElementwiseKernel.instances
    assert kernel.options == ("--fmad=false",) and kernel.no_return
    assert kernel.name == "arrayopt_adam_update"
    # inputs: the gradient and the host scalars; outputs: param, exp_avg, exp_avg_sq, max_exp_avg_sq
    assert [name for _, name in kernel.out_params] == ["a0", "a2", "a3", "a4"]
    assert kernel.in_params[0] == ("float32", "a1")
    assert all(dtype == "float64" for dtype, name in kernel.in_params if name.startswith("h"))
    assert "sqrtf(" in kernel.operation and "fma" not in kernel.operation
    (launch,) = [launch for run in backend._kernels.values() for launch in run.compiled.values()]
    assert launch is not None


def test_rules_the_tracer_refuses_run_through_cupy_fuse(monkeypatch):
    backend = install_stand_in(monkeypatch, elementwise=True)

    def with_exp(xp, param, grad, lr):
        param -= lr * xp.exp(grad)

    p, g = np.ones(4), np.linspace(0, 1, 4)
    backend.kernel(with_exp)(p, g, 0.5)
    np.testing.assert_array_equal(p, 1 - 0.5 * np.exp(np.linspace(0, 1, 4)))
    (compiled,) = [run.compiled for run in backend._kernels.values()]
    assert list(compiled.values()) == [None]


def test_stand_in_casts_scalars_and_flattens(monkeypatch):
    stand_in_cupy_backend = install_stand_in(monkeypatch, elementwise=False)
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


#: optimizers whose step also reduces over an array (Adafactor's row and column means and
#: RMS norms): CuPy's reduction kernels sum in another order than NumPy, so these agree with
#: the NumPy path to the torch tolerance (4 ulp float32, 1e-12 float64), not to the bit.
REDUCING = {"Adafactor"}


@pytest.mark.cuda
@pytest.mark.parametrize(("case", "dtype"), by_dtype(("float64", "float32", "complex64")), ids=str)
def test_fused_gpu_kernels_equal_numpy(case, dtype):
    cupy = load_namespace("cupy")
    inputs = harness.make_inputs(dtype)
    gpu = harness.run_arrayopt(case, cupy, inputs)
    cpu = harness.run_arrayopt(case, np, inputs)
    harness.assert_same_keys(gpu, cpu)
    if case.optimizer in REDUCING:
        harness.assert_matches(gpu, cpu, dtype, case.ulps)
        return
    # Generated kernels are compiled with --fmad=false and IEEE division and square
    # root: the GPU rounds every operation as NumPy does.
    for key, value in cpu.items():
        assert np.asarray(gpu[key]).tobytes() == np.asarray(value).tobytes(), key


@pytest.mark.cuda
@pytest.mark.parametrize(("case", "dtype"), by_dtype(), ids=str)
def test_cupy_fuse_fallback_matches_torch(case, dtype, monkeypatch):
    """The ``cupy.fuse`` path (taken by rules the tracer refuses), forced for every case on a GPU.

    NVRTC may contract multiply-adds there, so it is held to the torch tolerance of the
    golden trajectories (4 ulp in float32, 1e-12 in float64), not to the bits.
    """
    cupy = load_namespace("cupy")
    module = importlib.import_module("arrayopt.backends.cupy")
    monkeypatch.setattr(module, "_elementwise_launcher", lambda *args: None)
    backend = module.CuPyBackend()
    monkeypatch.setitem(arrayopt.backends._BY_TYPE, cupy.ndarray, backend)
    golden = load_golden(case.id, dtype)
    ours = harness.run_arrayopt(case, cupy, golden)
    assert backend._kernels, "the CuPy backend was not used"
    harness.assert_matches(ours, golden, dtype, case.ulps)

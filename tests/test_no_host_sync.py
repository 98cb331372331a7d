"""No first-order optimizer waits for the device inside ``step()`` (issue: GPU kernels).

On CuPy a step must only queue kernels: the per-step scalars come from Python
counters on the host, never from reading an array back. Without a GPU this runs on
the CuPy backend over the stand-in ``cupy`` (``tests/cpu_elementwise.py``), with
parameters of a NumPy subclass whose host conversions are counted, and with the
stand-in's ``asnumpy`` (what ``backend.to_numpy`` calls) counted too. Adafactor is
the documented exception (it reads two norms per step, as torch's ``.item()`` does),
and it shows that the probe sees a read-back.
"""

import numpy as np
import pytest

import arrayopt
import arrayopt.backends

import cpu_elementwise
from cases import CASES
from conftest import load_namespace

READS: list[str] = []


class DeviceArray(np.ndarray):
    """An array standing in for a GPU array: every conversion to a host value is recorded."""

    def _recorded(name):
        def read(self, *args, **kwargs):
            READS.append(name)
            return getattr(np.ndarray, name)(self.view(np.ndarray), *args, **kwargs)

        return read

    __float__ = _recorded("__float__")
    __int__ = _recorded("__int__")
    __bool__ = _recorded("__bool__")
    __index__ = _recorded("__index__")
    __complex__ = _recorded("__complex__")
    item = _recorded("item")
    tolist = _recorded("tolist")
    del _recorded

    # As on CuPy, a single element or a reduction stays a (0-d) device array.
    def __getitem__(self, key):
        result = super().__getitem__(key)
        return result if isinstance(result, np.ndarray) else np.asarray(result).view(DeviceArray)

    def __array_wrap__(self, array, context=None, return_scalar=False):
        return np.asarray(array).view(DeviceArray)


SYNCING = {"Adafactor"}  # reads the parameter's and the update's RMS on the host


@pytest.mark.parametrize("case", [c for c in CASES if not c.array_hyper], ids=str)
@pytest.mark.parametrize("elementwise", [True, False], ids=["elementwise", "fuse"])
def test_step_reads_nothing_back(case, elementwise, monkeypatch):
    if elementwise and cpu_elementwise.COMPILER is None:
        pytest.skip("no C++ compiler to stand in for NVRTC")
    backend = cpu_elementwise.install_cupy_stand_in(monkeypatch, elementwise)
    monkeypatch.setitem(arrayopt.backends._BY_TYPE, DeviceArray, backend)
    module = __import__("arrayopt.backends.cupy", fromlist=["cupy"])

    def asnumpy(array):
        READS.append("asnumpy")
        return np.asarray(array)

    monkeypatch.setattr(module.cupy, "asnumpy", asnumpy)
    rng = np.random.default_rng(0)
    dtype = np.float32 if "float32" in case.dtypes or "complex64" not in case.dtypes else np.complex64
    params = [arrayopt.Parameter(rng.standard_normal(s).astype(dtype).view(DeviceArray)) for s in [(3, 4), (5,)]]
    opt = getattr(arrayopt, case.optimizer)(params, **case.kwargs)
    READS.clear()
    for _ in range(3):
        for p in params:
            p.grad = rng.standard_normal(p.shape).astype(dtype).view(DeviceArray)
        opt.step()
    assert all(type(p.data) is DeviceArray for p in params)  # the arrays stayed "on the device"
    if case.optimizer in SYNCING:
        assert READS
    else:
        assert READS == []


# -- on a real GPU: the device itself tells whether a step waited for it ----------------------

SPIN = r"""
extern "C" __global__ void arrayopt_test_spin(unsigned long long nanoseconds) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < nanoseconds);
}
"""
SPIN_NS = 2_000_000  # 2 ms of device time queued before each step
STEPS = 100


@pytest.mark.cuda
@pytest.mark.parametrize("layout", ["separate", "flat"])
@pytest.mark.parametrize("case", [c for c in CASES if not c.array_hyper], ids=str)
def test_step_never_waits_for_a_real_gpu(case, layout):
    """Counted on the device, over 100 steps: how many steps waited for queued GPU work.

    Before each step a kernel that spins for 2 ms is queued, then an event after it. A
    step that reads anything back (``float``, ``.item()``, ``asnumpy``, a synchronising
    copy) must wait for the spinner, so the event has completed when the step returns.
    A step that only queues kernels returns long before: host steps take well under 2 ms,
    so the queue of spinners grows and no event can have completed. Adafactor, which
    reads two norms per step by design, must wait every time (the probe works).
    """
    cupy = load_namespace("cupy")
    spin = cupy.RawKernel(SPIN, "arrayopt_test_spin")
    rng = np.random.default_rng(0)
    dtype = np.float32 if "float32" in case.dtypes or "complex64" not in case.dtypes else np.complex64
    host = [rng.standard_normal(s).astype(dtype) for s in [(3, 4), (5,)]]
    grads = [rng.standard_normal(h.shape).astype(dtype) for h in host]

    def make_optimizer():
        if layout == "flat":
            params = list(arrayopt.ParameterList([cupy.asarray(h) for h in host]))
        else:
            params = [arrayopt.Parameter(cupy.asarray(h)) for h in host]
        for p, g in zip(params, grads, strict=True):
            p.grad = cupy.asarray(g)
        return params, getattr(arrayopt, case.optimizer)(params, **case.kwargs)

    # A first use of a rule variant compiles and loads its kernel, which waits for the
    # device once (RAdam switches variant when its rectification starts): a throwaway run
    # over the same steps loads every variant before the one that is measured.
    _, warm = make_optimizer()
    for _ in range(STEPS + 2):
        warm.step()
    params, opt = make_optimizer()
    for _ in range(2):  # state allocation happens here
        opt.step()
    cupy.cuda.Device().synchronize()
    waited = 0
    for _ in range(STEPS):
        spin((1,), (1,), (np.uint64(SPIN_NS),))
        queued = cupy.cuda.Event()
        queued.record()
        opt.step()
        waited += queued.done
    cupy.cuda.Device().synchronize()
    assert all(isinstance(p.data, cupy.ndarray) for p in params)
    assert waited == (STEPS if case.optimizer in SYNCING else 0), f"{waited} of {STEPS} steps waited for the GPU"

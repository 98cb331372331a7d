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


def install_probe(monkeypatch, elementwise=None):
    """The CuPy backend over the CPU stand-in, serving DeviceArray too, with ``asnumpy`` counted.

    ``READS`` is cleared; the backend is returned. Other tests (tests/test_functional.py,
    tests/test_utils.py) use the same probe.
    """
    backend = cpu_elementwise.install_cupy_stand_in(monkeypatch, elementwise)
    monkeypatch.setitem(arrayopt.backends._BY_TYPE, DeviceArray, backend)
    module = __import__("arrayopt.backends.cupy", fromlist=["cupy"])

    def asnumpy(array):
        READS.append("asnumpy")
        return np.asarray(array)

    monkeypatch.setattr(module.cupy, "asnumpy", asnumpy)
    READS.clear()
    return backend


@pytest.mark.parametrize("case", [c for c in CASES if not c.array_hyper], ids=str)
@pytest.mark.parametrize("elementwise", [True, False], ids=["elementwise", "fuse"])
def test_step_reads_nothing_back(case, elementwise, monkeypatch):
    if elementwise and cpu_elementwise.COMPILER is None:
        pytest.skip("no C++ compiler to stand in for NVRTC")
    install_probe(monkeypatch, elementwise)
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

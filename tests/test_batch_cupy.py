"""Batched fitting on CuPy: on a GPU against NumPy; without one, the CuPy backend over the CPU stand-in.

What must hold on a GPU: all per-problem linear algebra stays on the device, and the
host waits for it only to learn how many problems are still running, at most once per
iteration (plus a few reads while checking the arguments, and one per Jacobi sweep of
``curve_fit``'s covariance). The batch code is the same on every library, so the reads
are counted on array-api-strict, whose arrays are patched to record every conversion
to a host number (``__bool__``, ``__int__``, ``__float__``, ``__index__``); bulk copies
are not counted, because the array-API backend's scatter is a host copy where CuPy's
is a device kernel. The CuPy backend itself runs over the stand-in ``cupy`` of
tests/cpu_elementwise.py.
"""

import numpy as np
import pytest

import arrayopt.backends
from arrayopt import batch

import cpu_elementwise
from batch_problems import BY_NAME, to_numpy
from conftest import load_namespace


def fit(family, xp, y, p0, **options):
    t = xp.asarray(family.t)

    def fun(p, rows=None):
        data = y if rows is None else xp.take(y, rows, axis=0)
        return family.model(xp, t, p) - data, family.jac(xp, t, p)

    return batch.least_squares(fun, p0, jac=True, **options)


@pytest.fixture
def reads(monkeypatch):
    """array_api_strict, with every conversion of one of its arrays to a host number recorded."""
    strict = pytest.importorskip("array_api_strict")
    array_type = type(strict.asarray(0.0))
    log = []
    for name in ("__bool__", "__int__", "__float__", "__index__"):
        original = getattr(array_type, name)

        def recorded(self, *args, _original=original, _name=name):
            log.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(array_type, name, recorded)
    return strict, log


@pytest.mark.parametrize("pass_indices", [False, True])
@pytest.mark.parametrize("bounded", [False, True])
def test_one_host_read_per_iteration(bounded, pass_indices, reads):
    xp, log = reads
    family = BY_NAME["gaussian"]
    _, p0, y = family.draw(40, seed=40)
    if bounded:
        p0 = family.start_in_bounds(p0)
    bounds = (xp.asarray(np.array(family.lb)), xp.asarray(np.array(family.ub))) if bounded else (-np.inf, np.inf)
    res = fit(family, xp, xp.asarray(y), xp.asarray(p0), bounds=bounds, pass_indices=pass_indices)
    iterations = int(to_numpy(res.nit).max())
    assert log.count("__int__") == iterations + 1, log  # the running count: once per iteration, and at the end
    setup = 5  # the bounds read back: NaN in lb, in ub, lb > ub, any finite bound; x0 inside (or ub's)
    assert len(log) == iterations + 1 + setup, log


def test_the_cupy_backend_fits_what_numpy_fits(monkeypatch):
    family = BY_NAME["decay"]
    _, p0, y = family.draw(30, seed=41)
    lb, ub = np.array(family.lb), np.array(family.ub)
    p0 = family.start_in_bounds(p0)
    plain = fit(family, np, y, p0, bounds=(lb, ub))
    backend = cpu_elementwise.install_cupy_stand_in(monkeypatch, elementwise=False)
    assert backend.fit_block is None  # the whole batch at once on a GPU
    on_cupy = fit(family, np, y, p0, bounds=(lb, ub), pass_indices=True)
    assert arrayopt.backends.get_backend(y) is backend
    for key in ("x", "cost", "status", "nfev", "active_mask"):
        np.testing.assert_array_equal(on_cupy[key], plain[key], err_msg=key)


def test_curve_fit_reads_little(reads):
    xp, log = reads
    family = BY_NAME["hill"]
    _, p0, y = family.draw(25, seed=42)
    t = xp.asarray(family.t)

    def f(x, p):
        return family.model(xp, x, p)

    popt, pcov, info = batch.curve_fit(f, t, xp.asarray(y), xp.asarray(p0), full_output=True)
    iterations = int(to_numpy(info.nit).max())
    # one read per iteration, then one count for the covariance warning
    assert log.count("__int__") == iterations + 1 + 1, log
    # and a few more: the bounds (parsed twice), one per Jacobi sweep of the covariance
    assert log.count("__bool__") <= 10 + 12, log
    assert to_numpy(pcov).shape == (25, 3, 3) and to_numpy(popt).shape == (25, 3)


@pytest.mark.cuda
def test_gpu_fits_equal_numpy_fits():
    cupy = load_namespace("cupy")
    family = BY_NAME["gaussian"]
    _, p0, y = family.draw(200, seed=43)
    on_gpu = fit(family, cupy, cupy.asarray(y), cupy.asarray(p0))
    on_cpu = fit(family, np, y, p0)
    np.testing.assert_allclose(to_numpy(on_gpu.x.get()), on_cpu.x, rtol=1e-9)
    np.testing.assert_array_equal(on_gpu.status.get(), on_cpu.status)

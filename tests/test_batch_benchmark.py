"""benchmarks/batch_fit.py runs end to end at tiny sizes: its CPU path, and its --gpu path on a CuPy made of NumPy.

Nothing here is timed; the figures come from running the script itself. The GPU path
must work unattended on a machine with a GPU, so its plumbing (device arrays in, JSON
out, the CPU parity check) is exercised here with a ``cupy`` module made of NumPy.
"""

import importlib.util
import json
import os
import pathlib
import sys
import types

import numpy as np
import pytest

PATH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "batch_fit.py"


def load():
    spec = importlib.util.spec_from_file_location("batch_fit_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpus():
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def test_cpu_run_writes_its_figures(tmp_path):
    pytest.importorskip("scipy")
    out = tmp_path / "cpu.json"
    before = cpus()
    load().main(["--sizes", "300", "--rounds", "1", "--scipy-subset", "40", "--scipy-round", "20", "--json", str(out)])
    assert cpus() == before  # the benchmark pins itself; the process it ran in gets its CPUs back
    report = json.loads(out.read_text())
    assert {row["dtype"] for row in report["runs"]} == {"float32", "float64"}
    assert all(row["fits_per_s"] > 0 and row["vs_scipy_loop"] > 0 for row in report["runs"])
    tight = report["parity"]["float64, tolerances 1e-12"]
    assert tight["largest difference in standard errors (largest)"] < 1e-3  # the same minimiser as SciPy
    assert report["runs"][0]["success share"] > 0.95


def fake_cupy():
    """Just what the benchmark's GPU path calls, over NumPy."""
    device = types.SimpleNamespace(id=0, synchronize=lambda: None)
    runtime = types.SimpleNamespace(getDeviceProperties=lambda i: {"name": b"NumPy stand-in"})
    module = types.ModuleType("cupy")
    for name in ("exp", "empty", "multiply", "take", "arange", "tile", "reshape", "repeat", "asarray"):
        setattr(module, name, getattr(np, name))
    module.asnumpy = np.asarray
    module.cuda = types.SimpleNamespace(Device=lambda: device, runtime=runtime)
    module.get_default_memory_pool = lambda: types.SimpleNamespace(free_all_blocks=lambda: None)
    return module


def test_gpu_run_plumbing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    out = tmp_path / "gpu.json"
    load().main(["--gpu", "--sizes", "2000", "--rounds", "1", "--scipy-subset", "100", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["device"] == "NumPy stand-in"
    assert [row["backend"] for row in report["runs"]] == ["cupy", "cupy"]
    assert report["parity"]["float64, GPU vs NumPy"]["max relative difference (largest)"] == 0.0


MINIMIZE_PATH = PATH.parent / "batch_minimize.py"


def test_minimize_benchmark_writes_its_figures(tmp_path):
    """benchmarks/batch_minimize.py at tiny sizes: both families, the SciPy loop and the parity figures."""
    pytest.importorskip("scipy")
    spec = importlib.util.spec_from_file_location("batch_minimize_benchmark", MINIMIZE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "minimize.json"
    arguments = ["--sizes", "60", "--dims", "4", "--rounds", "1", "--scipy-subset", "30", "--scipy-round", "20"]
    before = cpus()
    module.main([*arguments, "--json", str(out)])
    assert cpus() == before  # pinned to one CPU while it ran, not after
    report = json.loads(out.read_text())
    assert {row["family"] for row in report["runs"]} == {"rosenbrock", "logistic"}
    assert all(row["fits_per_s"] > 0 and row["vs_scipy_loop"] > 0 for row in report["runs"])
    for name, figures in report["parity"].items():
        assert figures["max relative difference in x (largest)"] < 1e-6, name
        assert figures["share with SciPy's number of evaluations"] > 0.9, name
        assert figures["success share"] == 1.0, name

"""The benchmark suite (``benchmarks/bench.py``, also ``python -m arrayopt.bench``) runs end to end on a
tiny workload, and its report checks the targets."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import bench  # noqa: E402


def run_bench(*args, tmp_path):
    out = tmp_path / "rows.json"
    env = {**os.environ, "ARRAYOPT_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "arrayopt.bench", *args, "--json", str(out)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout, json.loads(out.read_text())


def test_a_tiny_run_reports_every_candidate(tmp_path):
    common = ("--workloads", "10x1K", "--threads", "1", "--rounds", "1", "--batch", "0.001", "--no-bandwidth")
    text, rows = run_bench("--optimizers", "SGD,Adam", *common, tmp_path=tmp_path)
    steps = [r for r in rows if r["type"] == "step"]
    assert [(r["optimizer"], r["workload"], r["threads"]) for r in steps] == [("SGD", "10x1K", 1), ("Adam", "10x1K", 1)]
    for r in steps:
        assert bench.ARRAYOPT_NUMPY in r["ms"] and all(ms > 0 for ms in r["ms"].values())
        assert r["bytes_per_step"] == bench.TRAFFIC[r["optimizer"]][0] * 4 * 10 * 1024
    assert "| SGD | 10x1K | 1 |" in text and "Targets:" in text


def test_gpu_workloads_are_skipped_cleanly_without_a_device(tmp_path):
    try:
        import cupy  # noqa: F401

        pytest.skip("CuPy is installed: the GPU workloads would run")
    except ImportError:
        pass
    text, rows = run_bench(
        "--gpu", "--workloads", "gpu-1x256M", "--optimizers", "Adam", "--no-torch", tmp_path=tmp_path
    )
    assert any(r["type"] == "note" and r["text"].startswith("GPU workloads skipped") for r in rows)
    assert "Note: GPU workloads skipped" in text


def test_report_computes_ratios_and_checks_targets():
    rows = [
        {
            "type": "machine",
            "kind": "cpu",
            "threads": 1,
            "cpu": "X",
            "cores": 2,
            "date": "d",
            "python": "3",
            "numpy": "2",
            "arrayopt": "0",
            "torch": "t",
        },
        {"type": "bandwidth", "device": "gpu", "kernel": "copy", "threads": 1, "gbs": 2000.0, "ms": 1.0},
    ]
    for workload, elements, ours, fused, foreach in (
        ("1x16.8M", 16_777_216, 9.0, 10.0, 40.0),
        ("10000x1.6K", 16_000_000, 12.0, 50.0, 100.0),
    ):
        rows.append(
            {
                "type": "step",
                "optimizer": "Adam",
                "workload": workload,
                "threads": 1,
                "layout": "flat",
                "elements": elements,
                "bytes_per_step": 28 * elements,
                "ms": {
                    bench.ARRAYOPT_NUMBA: ours,
                    bench.ARRAYOPT_NUMPY: 30.0,
                    "torch fused": fused,
                    "torch foreach": foreach,
                },
            }
        )
    for workload, elements, ours in (("gpu-1x256M", 268_435_456, 4.0), ("gpu-1000x256K", 262_144_000, 4.5)):
        rows.append(
            {
                "type": "step",
                "optimizer": "Adam",
                "workload": workload,
                "threads": 1,
                "layout": "flat",
                "elements": elements,
                "bytes_per_step": 28 * elements,
                "ms": {bench.ARRAYOPT_GPU: ours, "torch fused": 4.4},
            }
        )
    text = bench.report(rows)
    assert "| Adam | 1x16.8M | 1 | 9.00 | 30.00 |" in text
    assert "- CPU, numba: time / torch's best (fused) (≤ 1.0): met; worst 0.90 (Adam 1x16.8M 1T)" in text
    assert "- CPU, NumPy: time / torch foreach (≤ 0.5): NOT met; worst 0.75 (Adam 1x16.8M 1T)" in text
    # 12 ms / 16.0M against 9 ms / 16.8M elements
    assert f"worst {(12.0 / 16_000_000) / (9.0 / 16_777_216):.2f} (Adam 1T)" in text
    assert "- GPU: time / torch fused CUDA (≤ 1.0): NOT met; worst 1.02 (Adam gpu-1000x256K 1T)" in text
    # 28 B x 262M in 4.5 ms = 1631 GB/s, against 2000 measured for the copy (the worse of the two large rows)
    assert "GPU: share of the measured copy bandwidth (2000 GB/s) (≥ 0.85): NOT met; worst 0.82" in text
    # 4.5 ms / 262.1M against 4 ms / 268.4M elements
    per_element = (4.5 / 262_144_000) / (4.0 / 268_435_456)
    assert f"GPU: time per element, 1000x256K / 1x256M (≤ 1.2): met; worst {per_element:.2f} (Adam)" in text

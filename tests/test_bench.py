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
    skip = ("--no-first-step", "--no-memory", "--no-lbfgs")  # (issue 21's rows: the test below)
    text, rows = run_bench("--optimizers", "SGD,Adam", *common, *skip, tmp_path=tmp_path)
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
        "--gpu",
        "--workloads",
        "gpu-1x256M",
        "--optimizers",
        "Adam",
        "--no-torch",
        "--no-first-step",
        "--no-memory",
        "--no-lbfgs",
        tmp_path=tmp_path,
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


def test_issue_21_rows_at_tiny_sizes(tmp_path):
    """First step in fresh processes, separate Parameters, LBFGS against torch and SciPy, first-step memory."""
    text, rows = run_bench(
        *("--optimizers", "Adam", "--workloads", "3x10-separate", "--threads", "1", "--rounds", "1"),
        *("--batch", "0.001", "--no-bandwidth", "--first-step-runs", "1", "--first-step-elements", "1000"),
        *("--memory-elements", "4000000", "--lbfgs-sizes", "100", "--lbfgs-rounds", "1"),
        tmp_path=tmp_path,
    )
    (step,) = [r for r in rows if r["type"] == "step"]
    assert step["workload"] == "3x10-separate" and step["layout"] == "one Parameter per array"
    first = {r["case"]: r for r in rows if r["type"] == "first_step"}
    assert list(first) == [case for case, _, _ in bench.FIRST_STEP_CASES]
    for r in first.values():
        assert r["total_s"] > r["import_s"] > 0 and r["total_s"] > r["step_s"] > 0 and r["runs"] == 1
    assert not first["ARRAYOPT_NUMBA=0 (NumPy only)"]["numba_imported"]
    memory = [r for r in rows if r["type"] == "memory"]
    assert len(memory) == 2
    for r in memory:
        assert r["state_bytes"] >= 2 * 4 * 4_000_000  # exp_avg and exp_avg_sq
        assert 0 <= r["first_peak_bytes"] <= 8 << 20  # a parameter-sized temporary: 16 MB
    (lbfgs,) = [r for r in rows if r["type"] == "lbfgs"]
    assert lbfgs["n"] == 100 and lbfgs["iterations"] == bench.LBFGS_ITERATIONS
    assert set(lbfgs["ms"]) >= {"arrayopt LBFGS", "scipy L-BFGS-B"}
    for name, ms in lbfgs["ms"].items():
        assert ms > lbfgs["objective_ms"][name] > 0
        assert lbfgs["evaluations"][name] > bench.LBFGS_ITERATIONS  # at least one per iteration, and the first
    assert "| numba installed, cold cache | 1000 | 1 |" in text
    assert "Targets (issue 21):" in text


def test_report_checks_the_targets_of_issue_21():
    rows = [
        {
            "type": "first_step",
            "case": c,
            "elements": 10,
            "runs": 3,
            "total_s": t,
            "import_s": 0.1,
            "step_s": 0.01,
            "numba_imported": False,
        }
        for c, t in (("numba installed, cold cache", 0.14), ("numba installed, warm cache", 0.16), ("NumPy", 9.0))
    ]
    rows += [
        {
            "type": "step",
            "optimizer": "Adam",
            "workload": w,
            "threads": 1,
            "layout": "one Parameter per array",
            "elements": 10_000,
            "bytes_per_step": 1,
            "ms": {bench.ARRAYOPT_NUMBA: ours, "torch fused": 1.0},
        }
        for w, ours in (("100x100-separate", 0.9), ("1000x100-separate", 1.1))
    ]
    rows.append(
        {
            "type": "lbfgs",
            "n": 1_000_000,
            "threads": 1,
            "iterations": 40,
            "evaluations": {},
            "ms": {"arrayopt LBFGS": 80.0, "torch LBFGS": 100.0, "scipy L-BFGS-B": 200.0},
            "objective_ms": {"arrayopt LBFGS": 8.0, "torch LBFGS": 9.0, "scipy L-BFGS-B": 8.0},
        }
    )
    rows.append(
        {
            "type": "memory",
            "case": "NumPy",
            "elements": 10,
            "state_bytes": 1 << 27,
            "first_peak_bytes": 3 << 20,
            "steady_peak_bytes": 0,
            "steady_kept_bytes": 0,
        }
    )
    text = bench.report(rows)
    assert "- script start to end of first step with numba installed, s (≤ 0.15): NOT met; worst 0.16" in text
    assert "- separate Parameters: time / torch fused (≤ 1.0): NOT met; worst 1.10 (Adam 1000x100-separate 1T)" in text
    assert "- LBFGS n = 1e6: time / torch.optim.LBFGS (≤ 0.9): met; worst 0.80 (n=1e+06 1T)" in text
    assert "- first Adam step: peak above its new state, MiB (≤ 8.0): met; worst 3.00 (NumPy)" in text
    assert "| 1e+06 | 1 | 80.0 (8.0) | 100.0 (9.0) | 200.0 (8.0) | 0.80 | 0.40 |" in text

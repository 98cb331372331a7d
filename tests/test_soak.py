"""The soak (benchmarks/soak.py): Adam on NumPy without memory growth, and resumed == uninterrupted.

The short soak runs by default; the issue's 100,000-step soak is marked ``slow``
(``pytest --runslow`` or ``ARRAYOPT_SLOW=1``).
"""

import importlib.util
import pathlib

import pytest

PATH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("arrayopt_soak", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.soak


def check(report):
    assert report["resume_mismatches"] == [], report
    assert report["growth_bytes"] <= report["bound_bytes"], report
    # after the half-way checkpoint every sample is the same: nothing accumulates per step
    assert report["growth_after_resume_point_bytes"] <= 4096, report


def test_short_soak_has_no_memory_growth_and_resumes_exactly(soak):
    # 2,000 steps: a leak of 16 bytes a step would add 16 KiB, twice the bound here
    check(soak(steps=2000, samples=8, warmup=200, bound_kib=8))


@pytest.mark.slow
def test_full_soak_100000_adam_steps(soak):
    check(soak(steps=100_000, samples=20))

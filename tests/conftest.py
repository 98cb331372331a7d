"""Shared fixtures: ``xp`` runs a test once per array library present.

``ARRAYOPT_TEST_BACKENDS`` (comma-separated: numpy, array_api_strict, cupy) narrows
the set; by default every library that imports is used, and cupy also needs a CUDA
device. Missing libraries are skipped with the reason, never silently dropped.
"""

import importlib
import os

import pytest

BACKENDS = ["numpy", "array_api_strict", "cupy"]


def _wanted() -> list[str]:
    names = os.environ.get("ARRAYOPT_TEST_BACKENDS")
    if not names:
        return BACKENDS
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = set(chosen) - set(BACKENDS)
    if unknown:
        raise pytest.UsageError(f"ARRAYOPT_TEST_BACKENDS: unknown backends {sorted(unknown)}")
    return chosen


def load_namespace(name: str):
    """The array namespace called ``name``, or pytest.skip with the reason."""
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        pytest.skip(f"{name} is not installed ({exc})")
    if name == "cupy":
        try:
            count = module.cuda.runtime.getDeviceCount()
        except Exception as exc:  # no driver, no device
            pytest.skip(f"cupy is installed but no CUDA device is usable ({exc})")
        if count == 0:
            pytest.skip("cupy is installed but there is no CUDA device")
    return module


@pytest.fixture(params=[pytest.param(n, marks=[pytest.mark.cuda] if n == "cupy" else []) for n in _wanted()])
def xp(request):
    """An array namespace: numpy, array_api_strict or cupy."""
    return load_namespace(request.param)


@pytest.fixture
def torch():
    """torch, when importable (the live parity tests need torch==2.14.1, the reference)."""
    module = pytest.importorskip("torch")
    module.set_num_threads(1)
    return module


def fuzz_examples(full: int) -> int:
    """A hypothesis budget for a fuzzing suite: ``full`` examples when the slow tests run, else a fifth.

    The slow tests run with ``--runslow``, ``-m slow`` or ``ARRAYOPT_SLOW=1`` (read when
    the test modules are imported, after ``pytest_configure``): the default run fuzzes
    every suite a little, a slow run fully.
    """
    return full if os.environ.get("ARRAYOPT_SLOW", "") not in ("", "0") else max(10, full // 5)


def pytest_configure(config):
    markexpr = config.getoption("markexpr") or ""
    if config.getoption("--runslow") or ("slow" in markexpr and "not slow" not in markexpr):
        os.environ["ARRAYOPT_SLOW"] = "1"  # for fuzz_examples, before the test modules are imported


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow (or ARRAYOPT_SLOW=1)")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` are skipped unless ``--runslow`` or ``ARRAYOPT_SLOW=1`` asks for them."""
    asked = config.getoption("--runslow") or os.environ.get("ARRAYOPT_SLOW", "") not in ("", "0")
    markexpr = config.getoption("markexpr") or ""
    if asked or ("slow" in markexpr and "not slow" not in markexpr):  # -m slow asks for them too
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or ARRAYOPT_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

"""Import hygiene: arrayopt pulls in neither CuPy, torch nor numba, stays light, and backends/ is not top-level."""

import os
import subprocess
import sys

import pytest

import arrayopt
import arrayopt.backends

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code: str, cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


#: never loaded by NumPy work: other libraries, and array-api-compat's wrapper of NumPy (NumPy is its
#: own namespace; importing the wrapper touches every lazy NumPy submodule: 90 ms of a first step)
NOT_FOR_NUMPY = ("cupy", "torch", "array_api_compat.numpy", "numpy.f2py", "numpy.testing")


def test_import_and_a_numpy_step_load_neither_cupy_nor_torch(tmp_path):
    code = (
        "import sys, numpy as np, arrayopt\n"
        f"unwanted = set({NOT_FOR_NUMPY!r})\n"
        "assert not unwanted & set(sys.modules), sorted(unwanted & set(sys.modules))\n"
        "p = arrayopt.Parameter(np.ones(3)); p.grad = np.ones(3)\n"
        "arrayopt.Adam([p]).step(); arrayopt.SGD([p], momentum=0.9).step()\n"
        "w = arrayopt.Parameter(np.ones(3))\n"
        "def loss():\n"
        "    w.grad = 2 * w.data\n"
        "    return float((w.data ** 2).sum())\n"
        "arrayopt.LBFGS([w]).step(loss)\n"
        "loaded = unwanted & set(sys.modules)\n"
        "assert not loaded, sorted(loaded)\n"
        "print('clean')\n"
    )
    result = run_python(code, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_import_does_not_load_numba(tmp_path):
    """numba is imported on the first kernel launch that uses it, never by ``import arrayopt``."""
    code = "import sys, arrayopt, arrayopt.backends.numpy\nprint(sorted({'numba', 'llvmlite'} & set(sys.modules)))\n"
    result = run_python(code, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


#: what ``import arrayopt`` leaves for later: checkpoints (zip, JSON, hashes), plots, threads
HEAVY = ("zipfile", "json", "hashlib", "secrets", "urllib", "tempfile", "matplotlib", "concurrent.futures")


def test_import_leaves_the_heavy_modules_for_when_they_are_used(tmp_path):
    """Loading them is measured by the benchmarks (import time); this checks which are loaded."""
    code = (
        "import sys, numpy\n"
        f"before = {{m for m in {HEAVY!r} if m in sys.modules}}\n"
        "import arrayopt\n"
        f"print(sorted({{m for m in {HEAVY!r} if m in sys.modules}} - before))\n"
        "arrayopt.save\n"
        "print(sorted({'zipfile', 'json'} - set(sys.modules)))\n"
    )
    result = run_python(code, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "[]"]  # none at import; the checkpoint module on first use


def test_backends_is_a_subpackage_only():
    assert arrayopt.backends.__name__ == "arrayopt.backends"
    assert os.path.basename(os.path.dirname(arrayopt.backends.__file__)) == "backends"


def test_backends_is_not_importable_from_elsewhere(tmp_path):
    on_path = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    if REPO in on_path:
        pytest.skip("the checkout is on PYTHONPATH (a source-tree run); .ci/run tests the installed layout")
    result = run_python("import importlib.util; print(importlib.util.find_spec('backends'))", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


def test_top_level_import_of_the_folder_fails_clearly():
    # From the repository root the folder is on sys.path; importing it must refuse.
    result = run_python("import backends", cwd=REPO)
    assert result.returncode != 0
    assert "ImportError: the 'backends' folder is the package 'arrayopt.backends'" in result.stderr

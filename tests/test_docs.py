"""The examples in the README and in the docstrings run and print what they claim."""

import doctest
import importlib
import os
import pkgutil
import re

import numpy as np
import pytest
from test_docstrings import public_modules

import arrayopt

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def all_modules():
    """Every module of the package, private ones too (their examples must run as well)."""
    names = ["arrayopt"]
    names += [m.name for m in pkgutil.walk_packages(arrayopt.__path__, "arrayopt.")]
    names += [m.name for m in pkgutil.walk_packages(arrayopt.backends.__path__, "arrayopt.backends.")]
    return sorted(set(names))


@pytest.mark.parametrize("name", all_modules())
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # CuPy's backend without CuPy, numba's kernels without numba
        pytest.skip(f"{name}: {exc}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


@pytest.mark.parametrize("module", public_modules(), ids=lambda m: m.__name__)
def test_every_public_module_has_examples(module):
    finder = doctest.DocTestFinder()
    modules = [module]
    if hasattr(module, "__path__"):  # a package: its examples live in its modules
        for info in pkgutil.iter_modules(module.__path__, f"{module.__name__}."):
            try:
                modules.append(importlib.import_module(info.name))
            except ImportError:  # CuPy's backend without CuPy
                pass
    examples = sum(len(test.examples) for m in modules for test in finder.find(m))
    assert examples > 0


def test_readme_quickstart_recovers_the_coefficients(capsys):
    with open(README) as f:
        text = f.read()
    code = re.search(r"## Quickstart\s+```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    w = namespace["w"]
    # the least-squares solution the quickstart converges to, from numpy.linalg
    exact = np.linalg.lstsq(namespace["x"], namespace["y"], rcond=None)[0]
    np.testing.assert_allclose(w.data, exact, atol=1e-6)
    assert isinstance(w, arrayopt.Parameter)
    assert capsys.readouterr().out.strip().startswith("[")

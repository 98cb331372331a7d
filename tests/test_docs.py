"""The examples in the README and in the docstrings run and print what they claim."""

import doctest
import os
import re

import numpy as np
import pytest

import arrayopt
import arrayopt.optimizers.adafactor
import arrayopt.optimizers.adam
import arrayopt.optimizers.adamw
import arrayopt.optimizers.asgd
import arrayopt.optimizers.nadam
import arrayopt.optimizers.radam
import arrayopt.optimizers.sgd
import arrayopt.parameter

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


@pytest.mark.parametrize(
    "module",
    [
        arrayopt,
        arrayopt.parameter,
        arrayopt.optimizers.sgd,
        arrayopt.optimizers.adam,
        arrayopt.optimizers.adamw,
        arrayopt.optimizers.asgd,
        arrayopt.optimizers.nadam,
        arrayopt.optimizers.radam,
        arrayopt.optimizers.adafactor,
    ],
    ids=lambda m: m.__name__,
)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


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

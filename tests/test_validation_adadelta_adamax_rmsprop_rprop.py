"""Bad constructor arguments of Adadelta, Adamax, RMSprop and Rprop: torch's error type and message.

Each row is checked against the expected text (from torch 2.13's source) and, when
torch is importable, against what torch raises for the same call. ``Array(values)``
stands for a 1-element-or-more hyper-parameter: a NumPy array for arrayopt, a float64
tensor for torch.
"""

import math

import numpy as np
import pytest

import arrayopt

from test_validation import Array, _convert


def ids(row):
    return f"{row[0]}-{'-'.join(f'{k}={v}' for k, v in row[1].items())}"


def ours(kwargs):
    return _convert(kwargs, np.array)


# Values torch accepts and arrayopt must accept too.
ACCEPTED = [
    ("Adadelta", {"rho": 0.0, "eps": 0.0, "lr": 0.0}),
    ("Adadelta", {"rho": 1.0}),
    ("Adadelta", {"lr": Array(0.5), "rho": Array([0.9]), "eps": Array(1e-6), "weight_decay": Array(0.1)}),
    ("Adamax", {"betas": (0, 0.5)}),  # ints: Adamax has no "both floats" rule
    ("Adamax", {"betas": [0.8, 0.9]}),  # stored as given, a list stays a list
    ("Adamax", {"betas": (Array(0.9), 0.99), "lr": Array([0.01])}),
    ("RMSprop", {"alpha": 2.0, "momentum": 0.0, "centered": True}),
    ("RMSprop", {"alpha": Array(0.9), "momentum": Array(0.5), "lr": Array(0.1)}),
    ("Rprop", {"etas": (0.1, math.inf)}),
    ("Rprop", {"step_sizes": (1.0, 0.5)}),  # min > max: not checked, as torch
    ("Rprop", {"etas": [0.5, 1.5], "step_sizes": [0, 1]}),
    ("Rprop", {"lr": Array(0.1), "step_sizes": (Array(1e-6), Array(50.0))}),
]


@pytest.mark.parametrize("row", ACCEPTED, ids=ids)
def test_accepted_values_are_kept_as_given(row):
    name, kwargs = row
    kwargs = ours(kwargs)
    opt = getattr(arrayopt, name)([arrayopt.Parameter(np.zeros(2))], **kwargs)
    for key, value in kwargs.items():
        assert opt.param_groups[0][key] is value


@pytest.mark.ref
@pytest.mark.parametrize("row", ACCEPTED, ids=ids)
def test_torch_accepts_them_too(row, torch):
    name, kwargs = row
    getattr(torch.optim, name)(
        [torch.nn.Parameter(torch.zeros(2))], **_convert(kwargs, lambda x: torch.tensor(x, dtype=torch.float64))
    )

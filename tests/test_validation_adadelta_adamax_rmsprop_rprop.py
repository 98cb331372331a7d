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


class Array:
    """A hyper-parameter given as an array (NumPy for arrayopt, a tensor for torch)."""

    def __init__(self, values):
        self.values = values

    def __repr__(self):
        return f"Array({self.values})"


def _convert(kwargs, make):
    def one(value):
        if isinstance(value, Array):
            return make(value.values)
        if isinstance(value, tuple):
            return tuple(one(x) for x in value)
        return value

    return {key: one(value) for key, value in kwargs.items()}


# (optimizer, keyword arguments, error type, message)
BAD_ARGUMENTS = [
    ("Adadelta", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("Adadelta", {"lr": math.nan}, ValueError, "Invalid learning rate: nan"),
    ("Adadelta", {"lr": Array([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
    ("Adadelta", {"rho": 1.5}, ValueError, "Invalid rho value: 1.5"),
    ("Adadelta", {"rho": -0.1}, ValueError, "Invalid rho value: -0.1"),
    ("Adadelta", {"rho": math.nan}, ValueError, "Invalid rho value: nan"),
    ("Adadelta", {"eps": -1e-6}, ValueError, "Invalid epsilon value: -1e-06"),
    ("Adadelta", {"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
    ("Adadelta", {"rho": 2.0, "eps": -1.0}, ValueError, "Invalid rho value: 2.0"),
    ("Adamax", {"lr": -0.002}, ValueError, "Invalid learning rate: -0.002"),
    ("Adamax", {"lr": Array([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
    ("Adamax", {"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08"),
    ("Adamax", {"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("Adamax", {"betas": (-0.1, 0.999)}, ValueError, "Invalid beta parameter at index 0: -0.1"),
    ("Adamax", {"betas": (0.9, 1.0)}, ValueError, "Invalid beta parameter at index 1: 1.0"),
    ("Adamax", {"weight_decay": -1.0}, ValueError, "Invalid weight_decay value: -1.0"),
    ("Adamax", {"eps": -1.0, "betas": (2.0, 0.9)}, ValueError, "Invalid epsilon value: -1.0"),
    ("RMSprop", {"lr": -0.01}, ValueError, "Invalid learning rate: -0.01"),
    ("RMSprop", {"lr": Array([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
    ("RMSprop", {"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08"),
    ("RMSprop", {"momentum": -0.5}, ValueError, "Invalid momentum value: -0.5"),
    ("RMSprop", {"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
    ("RMSprop", {"alpha": -0.5}, ValueError, "Invalid alpha value: -0.5"),
    ("RMSprop", {"alpha": -1.0, "momentum": -1.0}, ValueError, "Invalid momentum value: -1.0"),
    ("Rprop", {"lr": -0.01}, ValueError, "Invalid learning rate: -0.01"),
    ("Rprop", {"lr": Array([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
    ("Rprop", {"etas": (1.0, 1.2)}, ValueError, "Invalid eta values: 1.0, 1.2"),
    ("Rprop", {"etas": (0.0, 1.2)}, ValueError, "Invalid eta values: 0.0, 1.2"),
    ("Rprop", {"etas": (0.5, 1.0)}, ValueError, "Invalid eta values: 0.5, 1.0"),
    ("Rprop", {"etas": (0.5, 0.9)}, ValueError, "Invalid eta values: 0.5, 0.9"),
    ("Rprop", {"etas": (math.nan, 1.2)}, ValueError, "Invalid eta values: nan, 1.2"),
    ("Rprop", {"lr": -1.0, "etas": (2.0, 1.0)}, ValueError, "Invalid learning rate: -1.0"),
]

# Rows where arrayopt is stricter than torch (torch accepts these values, or fails
# later, at the first step).
ARRAYOPT_ONLY = [
    ("Adadelta", {"lr": math.inf}, ValueError, "Invalid learning rate: inf"),
    ("Adadelta", {"eps": math.inf}, ValueError, "Invalid epsilon value: inf"),
    ("Adadelta", {"rho": "0.9"}, TypeError, "rho must be a real number, got '0.9'"),
    ("Adamax", {"betas": (0.9,)}, ValueError, "betas must be a pair (beta1, beta2), got (0.9,)"),
    ("Adamax", {"betas": (0.9, None)}, TypeError, "betas[1] must be a real number, got None"),
    ("RMSprop", {"alpha": math.inf}, ValueError, "Invalid alpha value: inf"),
    ("RMSprop", {"momentum": math.nan}, ValueError, "Invalid momentum value: nan"),
    ("Rprop", {"etas": (0.5, 1.2, 2.0)}, ValueError, "etas must be a pair (etaminus, etaplus), got (0.5, 1.2, 2.0)"),
    ("Rprop", {"step_sizes": (1e-6,)}, ValueError, "step_sizes must be a pair (min, max), got (1e-06,)"),
    ("Rprop", {"step_sizes": (1e-6, "50")}, TypeError, "step_sizes[1] must be a real number, got '50'"),
    # torch accepts these flags and fails at the first step on CPU (capturable), or
    # supports them through autograd (differentiable), which arrayopt does not have.
    ("Adadelta", {"capturable": True}, NotImplementedError, "capturable=True is not supported"),
    ("Adadelta", {"differentiable": True}, NotImplementedError, "differentiable=True is not supported"),
    ("Adamax", {"capturable": True}, NotImplementedError, "capturable=True is not supported"),
    ("Adamax", {"differentiable": True}, NotImplementedError, "differentiable=True is not supported"),
    ("RMSprop", {"capturable": True}, NotImplementedError, "capturable=True is not supported"),
    ("RMSprop", {"differentiable": True}, NotImplementedError, "differentiable=True is not supported"),
    ("Rprop", {"capturable": True}, NotImplementedError, "capturable=True is not supported"),
    ("Rprop", {"differentiable": True}, NotImplementedError, "differentiable=True is not supported"),
]


def ids(row):
    return f"{row[0]}-{'-'.join(f'{k}={v}' for k, v in row[1].items())}"


def ours(kwargs):
    return _convert(kwargs, np.array)


@pytest.mark.parametrize("row", BAD_ARGUMENTS + ARRAYOPT_ONLY, ids=ids)
def test_raised_before_params_are_looked_at(row):
    name, kwargs, error, message = row
    with pytest.raises(error) as info:
        getattr(arrayopt, name)(None, **ours(kwargs))
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("row", BAD_ARGUMENTS + ARRAYOPT_ONLY, ids=ids)
def test_caller_objects_are_untouched(row):
    name, kwargs, error, _ = row
    p = arrayopt.Parameter(np.ones(3))
    p.grad = np.ones(3)
    group = {"params": [p]}
    with pytest.raises(error):
        getattr(arrayopt, name)([group], **ours(kwargs))
    assert group == {"params": [p]}
    np.testing.assert_array_equal(p.data, np.ones(3))


@pytest.mark.ref
@pytest.mark.parametrize("row", BAD_ARGUMENTS, ids=ids)
def test_same_error_as_torch(row, torch):
    name, kwargs, error, message = row
    with pytest.raises(Exception) as theirs:
        getattr(torch.optim, name)(
            [torch.nn.Parameter(torch.zeros(2))], **_convert(kwargs, lambda x: torch.tensor(x, dtype=torch.float64))
        )
    with pytest.raises(Exception) as mine:
        getattr(arrayopt, name)([arrayopt.Parameter(np.zeros(2))], **ours(kwargs))
    assert type(mine.value) is type(theirs.value) is error
    assert str(mine.value) == str(theirs.value) == message


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

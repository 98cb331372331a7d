"""Bad constructor arguments: torch's error type and message, raised before anything changes.

Every row is checked against the expected text below (copied from torch 2.13's
source) and, when torch is importable, against what torch itself raises for the same
call.
"""

import math

import numpy as np
import pytest

import arrayopt

# (optimizer, keyword arguments, error type, message)
BAD_ARGUMENTS = [
    ("SGD", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("SGD", {"momentum": -0.5}, ValueError, "Invalid momentum value: -0.5"),
    ("SGD", {"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
    ("SGD", {"nesterov": True}, ValueError, "Nesterov momentum requires a momentum and zero dampening"),
    (
        "SGD",
        {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
        ValueError,
        "Nesterov momentum requires a momentum and zero dampening",
    ),
    ("SGD", {"fused": True, "foreach": True}, RuntimeError, "`fused` and `foreach` cannot be `True` together."),
    ("SGD", {"fused": True, "differentiable": True}, RuntimeError, "`fused` does not support `differentiable`"),
    ("Adam", {"lr": -0.001}, ValueError, "Invalid learning rate: -0.001"),
    ("Adam", {"lr": math.nan}, ValueError, "Invalid learning rate: nan"),
    ("Adam", {"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08"),
    ("Adam", {"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("Adam", {"betas": (-0.1, 0.999)}, ValueError, "Invalid beta parameter at index 0: -0.1"),
    ("Adam", {"betas": (0.9, 1.0)}, ValueError, "Invalid beta parameter at index 1: 1.0"),
    ("Adam", {"betas": (0, 0.99)}, ValueError, "betas must be either both floats or both Tensors"),
    ("Adam", {"weight_decay": -1.0}, ValueError, "Invalid weight_decay value: -1.0"),
    ("Adam", {"fused": True, "foreach": True}, RuntimeError, "`fused` and `foreach` cannot be `True` together."),
    ("Adam", {"fused": True, "differentiable": True}, RuntimeError, "`fused` does not support `differentiable`"),
    ("AdamW", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("AdamW", {"betas": (0.9, 1.5)}, ValueError, "Invalid beta parameter at index 1: 1.5"),
    ("AdamW", {"eps": -1.0}, ValueError, "Invalid epsilon value: -1.0"),
    ("AdamW", {"weight_decay": -0.01}, ValueError, "Invalid weight_decay value: -0.01"),
]

# Rows where arrayopt is stricter than torch (torch accepts these values).
ARRAYOPT_ONLY = [
    ("SGD", {"lr": math.inf}, ValueError, "Invalid learning rate: inf"),
    ("SGD", {"lr": math.nan}, ValueError, "Invalid learning rate: nan"),
    ("Adam", {"lr": math.inf}, ValueError, "Invalid learning rate: inf"),
    ("AdamW", {"lr": math.inf}, ValueError, "Invalid learning rate: inf"),
    ("Adam", {"eps": math.inf}, ValueError, "Invalid epsilon value: inf"),
    ("SGD", {"weight_decay": math.inf}, ValueError, "Invalid weight_decay value: inf"),
    ("SGD", {"dampening": math.nan, "momentum": 0.9}, ValueError, "Invalid dampening value: nan"),
    ("SGD", {"lr": "0.1"}, TypeError, "lr must be a real number, got '0.1'"),
    ("Adam", {"differentiable": True}, NotImplementedError, "differentiable=True is not supported"),
    ("Adam", {"capturable": True}, NotImplementedError, "capturable=True is not supported"),
    ("SGD", {"differentiable": True}, NotImplementedError, "differentiable=True is not supported"),
    ("AdamW", {"capturable": True}, NotImplementedError, "capturable=True is not supported"),
]


def ids(row):
    return f"{row[0]}-{'-'.join(f'{k}={v}' for k, v in row[1].items())}"


@pytest.mark.parametrize("row", BAD_ARGUMENTS + ARRAYOPT_ONLY, ids=ids)
def test_raised_before_params_are_looked_at(row):
    name, kwargs, error, message = row
    # torch's own tests pass params=None: the hyper-parameter error must come first.
    with pytest.raises(error) as info:
        getattr(arrayopt, name)(None, **kwargs)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("row", BAD_ARGUMENTS + ARRAYOPT_ONLY, ids=ids)
def test_caller_objects_are_untouched(row):
    name, kwargs, error, _ = row
    p = arrayopt.Parameter(np.ones(3))
    p.grad = np.ones(3)
    group = {"params": [p]}
    with pytest.raises(error):
        getattr(arrayopt, name)([group], **kwargs)
    assert group == {"params": [p]}
    np.testing.assert_array_equal(p.data, np.ones(3))


@pytest.mark.ref
@pytest.mark.parametrize("row", BAD_ARGUMENTS, ids=ids)
def test_same_error_as_torch(row, torch):
    name, kwargs, error, message = row
    with pytest.raises(Exception) as theirs:
        getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))], **kwargs)
    with pytest.raises(Exception) as ours:
        getattr(arrayopt, name)([arrayopt.Parameter(np.zeros(2))], **kwargs)
    assert type(ours.value) is type(theirs.value) is error
    assert str(ours.value) == str(theirs.value) == message


def test_array_hyper_parameters_must_have_one_element():
    with pytest.raises(ValueError, match=r"^Tensor lr must be 1-element$"):
        arrayopt.SGD(None, lr=np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"^Tensor betas\[1\] must be 1-element$"):
        arrayopt.Adam(None, betas=(np.array(0.9), np.array([0.9, 0.99])))
    with pytest.raises(ValueError, match=r"^lr as a Tensor is not supported for capturable=False and foreach=True$"):
        arrayopt.Adam(None, lr=np.array(0.1), foreach=True)
    with pytest.raises(ValueError, match=r"^betas must be either both floats or both Tensors$"):
        arrayopt.Adam(None, betas=(np.array(0.9), 0.999))


def test_array_hyper_parameters_are_accepted_and_kept():
    p = arrayopt.Parameter(np.zeros(2))
    lr = np.array(0.1)
    opt = arrayopt.Adam([p], lr=lr, betas=(np.array([0.9]), np.array(0.99)))
    assert opt.param_groups[0]["lr"] is lr
    assert all(np.shape(b) == () for b in opt.param_groups[0]["betas"])
    assert isinstance(opt.param_groups[0]["betas"], tuple)


def test_betas_list_becomes_a_tuple():
    opt = arrayopt.Adam([arrayopt.Parameter(np.zeros(2))], betas=[0.8, 0.9])
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)

"""Constructor arguments of every optimizer: torch's error type and message, raised before anything changes.

Every row of ``BAD_ARGUMENTS`` is checked against the expected text below (copied
from torch 2.13's source) and, when torch is importable, against what torch itself
raises for the same call; ``ARRAYOPT_ONLY`` holds what arrayopt refuses and torch
accepts, ``ACCEPTED`` what both accept (and keep as given). ``Array(values)`` stands
for a hyper-parameter given as an array: a NumPy array for arrayopt, a float64 tensor
for torch.
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
    (
        "SGD",
        {"nesterov": True, "momentum": 0.9, "dampening": None},
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
    # Adadelta, Adamax, RMSprop, Rprop
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
    # ASGD, NAdam, RAdam, Adafactor
    ("ASGD", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("ASGD", {"lr": math.nan}, ValueError, "Invalid learning rate: nan"),
    ("ASGD", {"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
    ("NAdam", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("NAdam", {"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08"),
    ("NAdam", {"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("NAdam", {"betas": (0.9, -0.1)}, ValueError, "Invalid beta parameter at index 1: -0.1"),
    ("NAdam", {"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
    ("NAdam", {"momentum_decay": -0.1}, ValueError, "Invalid momentum_decay value: -0.1"),
    ("RAdam", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("RAdam", {"eps": -1.0}, ValueError, "Invalid epsilon value: -1.0"),
    ("RAdam", {"betas": (-0.5, 0.999)}, ValueError, "Invalid beta parameter at index 0: -0.5"),
    ("RAdam", {"betas": (0.9, 1.0)}, ValueError, "Invalid beta parameter at index 1: 1.0"),
    ("RAdam", {"weight_decay": -1.0}, ValueError, "Invalid weight_decay value: -1.0"),
    ("Adafactor", {"lr": -1.0}, ValueError, "Learning rate should be >= 0 but is: -1.0"),
    ("Adafactor", {"beta2_decay": 0.5}, ValueError, "beta2_decay should be <= 0 but is: 0.5"),
    ("Adafactor", {"beta2_decay": math.nan}, ValueError, "beta2_decay should be <= 0 but is: nan"),
    ("Adafactor", {"eps": (-1.0, 1e-3)}, ValueError, "epsilon1 should be >= 0 but is: -1.0"),
    ("Adafactor", {"eps": (None, -1e-3)}, ValueError, "epsilon2 should be >= 0 but is: -0.001"),
    ("Adafactor", {"d": 0.5}, ValueError, "Clipping threshold d should be >= 1 but is: 0.5"),
    ("Adafactor", {"weight_decay": -0.1}, ValueError, "weight_decay should be >= 0 but is: -0.1"),
    ("ASGD", {"lr": Array([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
    ("NAdam", {"lr": Array([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
    ("RAdam", {"lr": Array([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
    ("Adafactor", {"lr": Array([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
    # SparseAdam, Adagrad
    ("SparseAdam", {"lr": 0.0}, ValueError, "Invalid learning rate: 0.0"),
    ("SparseAdam", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("SparseAdam", {"eps": 0.0}, ValueError, "Invalid epsilon value: 0.0"),
    ("SparseAdam", {"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("SparseAdam", {"betas": (0.9, -0.1)}, ValueError, "Invalid beta parameter at index 1: -0.1"),
    ("Adagrad", {"lr": -0.1}, ValueError, "Invalid learning rate: -0.1"),
    ("Adagrad", {"lr_decay": -0.5}, ValueError, "Invalid lr_decay value: -0.5"),
    ("Adagrad", {"weight_decay": -1.0}, ValueError, "Invalid weight_decay value: -1.0"),
    ("Adagrad", {"initial_accumulator_value": -0.1}, ValueError, "Invalid initial_accumulator_value value: -0.1"),
    ("Adagrad", {"eps": -1e-10}, ValueError, "Invalid epsilon value: -1e-10"),
    ("Adagrad", {"fused": True, "foreach": True}, RuntimeError, "`fused` and `foreach` cannot be `True` together."),
    ("Adagrad", {"fused": True, "differentiable": True}, RuntimeError, "`fused` does not support `differentiable`"),
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
    # Adadelta, Adamax, RMSprop, Rprop
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
    # ASGD, NAdam, RAdam, Adafactor
    ("ASGD", {"lr": math.inf}, ValueError, "Invalid learning rate: inf"),
    ("ASGD", {"t0": "1e6"}, TypeError, "t0 must be a real number, got '1e6'"),
    ("ASGD", {"differentiable": True}, NotImplementedError, "differentiable=True is not supported"),
    ("ASGD", {"capturable": True}, NotImplementedError, "capturable=True is not supported"),
    ("NAdam", {"momentum_decay": math.inf}, ValueError, "Invalid momentum_decay value: inf"),
    ("NAdam", {"betas": (0.9,)}, ValueError, "betas must be a pair (beta1, beta2), got (0.9,)"),
    ("NAdam", {"capturable": True}, NotImplementedError, "capturable=True is not supported"),
    ("RAdam", {"eps": math.inf}, ValueError, "Invalid epsilon value: inf"),
    ("RAdam", {"differentiable": True}, NotImplementedError, "differentiable=True is not supported"),
    ("Adafactor", {"lr": math.inf}, ValueError, "Learning rate should be >= 0 but is: inf"),
    ("Adafactor", {"eps": (None, 1e-3, 1.0)}, ValueError, "eps must be a pair (eps1, eps2), got (None, 0.001, 1.0)"),
    ("Adafactor", {"eps": ("a", 1e-3)}, TypeError, "eps[0] must be a real number, got 'a'"),
    # SparseAdam, Adagrad
    ("SparseAdam", {"lr": math.inf}, ValueError, "Invalid learning rate: inf"),
    ("SparseAdam", {"lr": Array([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
    ("SparseAdam", {"betas": (0.9,)}, ValueError, "betas must be a pair (beta1, beta2), got (0.9,)"),
    ("Adagrad", {"lr": math.nan}, ValueError, "Invalid learning rate: nan"),
    ("Adagrad", {"differentiable": True}, NotImplementedError, "differentiable=True is not supported"),
]


def ids(row):
    return f"{row[0]}-{'-'.join(f'{k}={v}' for k, v in row[1].items())}"


def ours(kwargs):
    """The row's keyword arguments with ``Array`` values as NumPy arrays."""
    return _convert(kwargs, np.array)


@pytest.mark.parametrize("row", BAD_ARGUMENTS + ARRAYOPT_ONLY, ids=ids)
def test_raised_before_params_are_looked_at(row):
    name, kwargs, error, message = row
    # torch's own tests pass params=None: the hyper-parameter error must come first.
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
    # unlike Adam, torch's NAdam and RAdam do not require both betas to be floats
    ("NAdam", {"betas": [0, 0.99]}),
    ("RAdam", {"betas": [0, 0.99]}),
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

"""SparseAdam beyond the sparse parity cases: complex parameters refused, groups and state as torch's."""

import numpy as np
import pytest

import arrayopt
from arrayopt import Parameter, SparseGrad


def test_sparse_adam_refuses_complex_parameters_before_changing_groups():
    groups = [
        {"params": [Parameter(np.zeros(2)), Parameter(np.zeros(2, dtype=np.complex128))]},
        {"params": [Parameter(np.zeros(2, dtype=np.complex64))], "lr": 0.5},
    ]
    with pytest.raises(ValueError) as info:
        arrayopt.SparseAdam(groups)
    assert str(info.value) == (
        "Complex params at indices [[0, 1], [1, 0]]: SparseAdam does not support complex parameters"
    )
    assert [sorted(g) for g in groups] == [["params"], ["lr", "params"]]


@pytest.mark.ref
def test_sparse_adam_complex_error_is_torchs(torch):
    groups = [
        {"params": [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, dtype=torch.complex128))]},
        {"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))], "lr": 0.5},
    ]
    with pytest.raises(ValueError) as theirs:
        torch.optim.SparseAdam(groups)
    assert str(theirs.value) == (
        "Complex params at indices [[0, 1], [1, 0]]: SparseAdam does not support complex parameters"
    )


def test_sparse_adam_groups_and_state_layout():
    ours = arrayopt.SparseAdam([Parameter(np.zeros(2))], betas=[0.8, 0.9])
    assert ours.state_dict()["param_groups"] == [
        {"lr": 0.001, "betas": [0.8, 0.9], "eps": 1e-08, "maximize": False, "params": [0]}
    ]
    p = ours.param_groups[0]["params"][0]
    p.grad = SparseGrad(np.array([[1]]), np.array([1.0]), (2,))
    ours.step()
    assert ours.state[p]["step"] == 1 and type(ours.state[p]["step"]) is int
    assert list(ours.state[p]) == ["step", "exp_avg", "exp_avg_sq"]


@pytest.mark.ref
def test_sparse_adam_groups_are_torchs(torch):
    theirs = torch.optim.SparseAdam([torch.nn.Parameter(torch.zeros(2))], betas=[0.8, 0.9])
    ours = arrayopt.SparseAdam([Parameter(np.zeros(2))], betas=[0.8, 0.9])
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]

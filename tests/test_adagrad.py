"""Adagrad beyond the case table: state made at construction, torch's state and old groups, what it refuses."""

import numpy as np
import pytest

import arrayopt
from arrayopt import Parameter
from arrayopt.backends import get_backend


def to_numpy(a):
    return np.array(get_backend(a).to_numpy(a), copy=True)


def _adagrad_construction(lib, xp=np):
    """Adagrad over a real and a complex parameter, then a parameter added later and stepped."""
    if lib == "torch":
        import torch

        make, module = (lambda a: torch.nn.Parameter(torch.from_numpy(a))), torch.optim
        dense = torch.from_numpy
    else:
        make, module, dense = (lambda a: Parameter(xp.asarray(a))), arrayopt, xp.asarray
    params = [make(np.ones(2)), make(np.ones((2, 2), dtype=np.complex128))]
    # a per-group initial_accumulator_value is ignored: the constructor's is used
    opt = module.Adagrad([{"params": params, "initial_accumulator_value": 5.0}], initial_accumulator_value=0.5)
    at_construction = {i: {k: to_numpy_any(v) for k, v in s.items()} for i, s in opt.state_dict()["state"].items()}
    # params added later get state at their first step, from defaults (not the group)
    opt.defaults["initial_accumulator_value"] = 2.0
    late = make(np.ones(3))
    opt.add_param_group({"params": [late], "initial_accumulator_value": 9.0})
    before_step = late in opt.state
    late.grad = dense(np.ones(3))
    opt.step()
    return at_construction, before_step, to_numpy_any(opt.state[late]["sum"]), to_numpy_any(late.data)


def to_numpy_any(a):
    if hasattr(a, "detach"):
        return a.detach().numpy().copy()
    if isinstance(a, float):
        return a
    return to_numpy(a)


def test_adagrad_state_is_made_at_construction(xp):
    state, late_has_state, late_sum, late_data = _adagrad_construction("arrayopt", xp)
    assert state.keys() == {0, 1} and state[0]["step"] == state[1]["step"] == 0.0
    np.testing.assert_array_equal(state[0]["sum"], np.full(2, 0.5))
    np.testing.assert_array_equal(state[1]["sum"], np.full((2, 2), 0.5 + 0.5j))
    assert not late_has_state
    np.testing.assert_array_equal(late_sum, np.full(3, 3.0))  # 2.0 from defaults, plus 1**2
    np.testing.assert_array_equal(late_data, 1 - 0.01 / (np.sqrt(3.0) + 1e-10))


@pytest.mark.ref
def test_adagrad_construction_is_torchs(torch):
    ours, theirs = _adagrad_construction("arrayopt"), _adagrad_construction("torch")
    assert ours[0].keys() == theirs[0].keys() and ours[1] == theirs[1]
    for i in ours[0]:
        assert ours[0][i]["step"] == float(theirs[0][i]["step"])
        np.testing.assert_array_equal(ours[0][i]["sum"], theirs[0][i]["sum"])
    np.testing.assert_array_equal(ours[2], theirs[2])
    np.testing.assert_array_equal(ours[3], theirs[3])


@pytest.mark.ref
def test_adagrad_loads_torch_state_and_old_groups(torch):
    theirs_p = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    theirs = torch.optim.Adagrad([theirs_p], lr=0.1)
    theirs_p.grad = torch.ones(2, dtype=torch.float64)
    theirs.step()
    saved = theirs.state_dict()
    converted = {
        "state": {k: {n: (v.numpy() if n == "sum" else v) for n, v in s.items()} for k, s in saved["state"].items()},
        "param_groups": [{k: v for k, v in g.items() if k not in ("foreach", "fused")} for g in saved["param_groups"]],
    }
    p = Parameter(np.ones(2))
    ours = arrayopt.Adagrad([p], lr=0.5)
    ours.load_state_dict(converted)
    assert ours.state[p]["step"] == 1.0 and isinstance(ours.state[p]["step"], float)  # a torch tensor, read
    assert ours.param_groups[0]["foreach"] is None and ours.param_groups[0]["fused"] is None
    assert ours.param_groups[0]["lr"] == 0.1


def test_adagrad_fused_refuses_complex_parameters():
    p = Parameter(np.ones(2, dtype=np.complex128))
    opt = arrayopt.Adagrad([p], fused=True)
    p.grad = np.ones(2, dtype=np.complex128)
    with pytest.raises(RuntimeError, match=r"^`fused` does not support sparse grad or complex param$"):
        opt.step()
    np.testing.assert_array_equal(p.data, np.ones(2))
    q = Parameter(np.ones(2))
    opt = arrayopt.Adagrad([q], fused=True)
    q.grad = np.ones(2)
    opt.step()  # real parameters: accepted, and the same rule runs


def test_adagrad_share_memory_is_refused():
    with pytest.raises(NotImplementedError, match="share_memory"):
        arrayopt.Adagrad([Parameter(np.ones(2))]).share_memory()

"""Each optimizer's surface is torch.optim's: signature and defaults, group keys, repr,
state keys and their first values, the group keys filled in on load, and torch's own
state dicts loaded and stepped on. Where torch is importable the same scenario runs
through torch.optim and what can be observed is compared.
"""

import copy
import inspect

import numpy as np
import pytest

import arrayopt

from harness import assert_close, draws, run_pair

NAMES = ["Adadelta", "Adamax", "RMSprop", "Rprop", "ASGD", "NAdam", "RAdam", "Adafactor"]

# A configuration per optimizer that creates every optional state entry.
FULL = {
    "Adadelta": {"lr": 0.5, "weight_decay": 0.1},
    "Adamax": {"lr": 0.05, "weight_decay": 0.1},
    "RMSprop": {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1},
    "Rprop": {"lr": 0.05},
}


@pytest.mark.ref
@pytest.mark.parametrize("name", NAMES)
def test_signature_defaults_and_group_keys_are_torchs(name, torch):
    ours, theirs = inspect.signature(getattr(arrayopt, name)), inspect.signature(getattr(torch.optim, name))
    assert list(ours.parameters) == list(theirs.parameters)
    for key, parameter in theirs.parameters.items():
        assert ours.parameters[key].kind == parameter.kind, key
        assert ours.parameters[key].default == parameter.default, key
    mine = getattr(arrayopt, name)([arrayopt.Parameter(np.zeros(2))])
    reference = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))])
    assert list(mine.param_groups[0]) == list(reference.param_groups[0])
    assert mine.defaults == reference.defaults


@pytest.mark.ref
@pytest.mark.parametrize("name", list(FULL))
def test_groups_state_keys_and_repr_are_torchs(name, torch):
    start, grads = draws(0, [(3, 2), (4,), ()], 3)
    grads[0][1] = None  # a parameter without a gradient gets no state at first
    ours, theirs, _, _ = run_pair(torch, name, FULL[name], start, grads)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert list(a["state"]) == list(b["state"])
    for index, entries in b["state"].items():
        assert list(a["state"][index]) == list(entries)
        assert a["state"][index]["step"] == float(entries["step"])
    assert repr(ours) == repr(theirs)
    assert list(ours.defaults) == list(theirs.defaults)


@pytest.mark.parametrize(
    "name, kwargs, keys",
    [
        ("Adadelta", {}, ["step", "square_avg", "acc_delta"]),
        ("Adamax", {}, ["step", "exp_avg", "exp_inf"]),
        ("RMSprop", {}, ["step", "square_avg"]),
        ("RMSprop", {"momentum": 0.5}, ["step", "square_avg", "momentum_buffer"]),
        ("RMSprop", {"centered": True}, ["step", "square_avg", "grad_avg"]),
        ("RMSprop", {"momentum": 0.5, "centered": True}, ["step", "square_avg", "momentum_buffer", "grad_avg"]),
        ("Rprop", {}, ["step", "prev", "step_size"]),
    ],
)
def test_state_keys_and_initial_values(name, kwargs, keys):
    p = arrayopt.Parameter(np.array([1.0, -2.0, 3.0]))
    opt = getattr(arrayopt, name)([p], **kwargs)
    p.grad = np.zeros(3)
    new = opt._init_state(p, opt.param_groups[0])
    assert list(new) == keys
    assert new["step"] == 0.0 and type(new["step"]) is float
    for key in keys[1:]:
        expected = 0.01 if key == "step_size" else 0.0  # Rprop: the group lr everywhere
        np.testing.assert_array_equal(new[key], np.full(3, expected))
        assert new[key].dtype == p.data.dtype
    opt.step()
    assert list(opt.state[p]) == keys and opt.state[p]["step"] == 1.0


@pytest.mark.parametrize("name", list(FULL))
def test_setstate_fills_torchs_defaults(name):
    p = arrayopt.Parameter(np.ones(2))
    opt = getattr(arrayopt, name)([p])
    p.grad = np.ones(2)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    expected = {"foreach": None, "maximize": False, "differentiable": False, "capturable": False}
    if name == "RMSprop":
        expected.update({"momentum": 0, "centered": False})
    for key in expected:
        del sd["param_groups"][0][key]
    sd["state"][0]["step"] = np.array(1.0, dtype=np.float32)  # as torch saves it
    opt.load_state_dict(sd)
    for key, value in expected.items():
        assert opt.param_groups[0][key] == value and type(opt.param_groups[0][key]) is type(value), key
    assert opt.state[p]["step"] == 1.0 and type(opt.state[p]["step"]) is float
    state = {"state": opt.state, "param_groups": opt.param_groups}
    opt.state[p]["step"] = np.array(2.0)
    opt.__setstate__(state)  # an unpickled state with an array counter
    assert opt.state[p]["step"] == 2.0 and type(opt.state[p]["step"]) is float


@pytest.mark.ref
@pytest.mark.parametrize("name", list(FULL))
def test_a_torch_state_dict_loads_and_continues_like_torch(name, torch):
    start, grads = draws(1, [(3, 2), (4,)], 6)
    theirs_p = [torch.nn.Parameter(torch.tensor(a)) for a in start]
    theirs = getattr(torch.optim, name)(theirs_p, **FULL[name])

    def torch_step(k):
        for tp, g in zip(theirs_p, grads[k], strict=True):
            tp.grad = torch.tensor(g)
        theirs.step()

    for k in range(3):
        torch_step(k)
    ours_p = [arrayopt.Parameter(tp.detach().numpy().copy()) for tp in theirs_p]
    ours = getattr(arrayopt, name)(ours_p)
    ours.load_state_dict(theirs.state_dict())
    for k in range(3, 6):
        torch_step(k)
        for p, g in zip(ours_p, grads[k], strict=True):
            p.grad = g.copy()
        ours.step()
    assert_close(ours_p, theirs_p)
    assert all(type(v) is np.ndarray for s in ours.state.values() for k, v in s.items() if k != "step")


@pytest.mark.ref
@pytest.mark.parametrize("name", NAMES[4:])
def test_load_fills_the_same_missing_group_keys_as_torch(name, torch):
    mine = getattr(arrayopt, name)([arrayopt.Parameter(np.zeros(2))])
    reference = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))])
    keys = ("maximize", "foreach", "capturable", "differentiable", "decoupled_weight_decay")
    saved = reference.state_dict()
    for key in keys:
        saved["param_groups"][0].pop(key, None)
    reference.load_state_dict(saved)
    # A key torch does not fill back would fail torch's next step (KeyError); arrayopt
    # refuses such a state dict when it is loaded, and changes nothing.
    unfilled = [key for key in keys if key in mine.param_groups[0] and key not in reference.param_groups[0]]
    for key in unfilled:
        broken = mine.state_dict()
        broken["param_groups"][0].pop(key)
        with pytest.raises(ValueError, match=f"has no '{key}', which {name} needs"):
            mine.load_state_dict(broken)
        assert key in mine.param_groups[0]
    saved = mine.state_dict()
    for key in keys:
        if key not in unfilled:
            saved["param_groups"][0].pop(key, None)
    mine.load_state_dict(saved)
    assert mine.param_groups[0].keys() - {"params"} == reference.param_groups[0].keys() - {"params"} | set(unfilled)
    for key, value in reference.param_groups[0].items():
        if key != "params":
            assert mine.param_groups[0][key] == value, key

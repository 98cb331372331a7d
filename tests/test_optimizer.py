"""The Optimizer base: param groups, zero_grad, step, state_dict, hooks, copying.

Behaviour is asserted directly; where torch is importable the same scenario is also
run through torch.optim and the observable results compared.
"""

import copy
import pickle
import warnings

import numpy as np
import pytest

import arrayopt
from arrayopt import Parameter
from arrayopt.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook


def params(n=3, size=2, grads=True):
    out = []
    for i in range(n):
        p = Parameter(np.full(size, float(i + 1)), name=f"p{i}")
        if grads:
            p.grad = np.full(size, 0.5)
        out.append(p)
    return out


# -- constructing ---------------------------------------------------------------------


def test_params_as_list_generator_groups_and_named_pairs():
    ps = params()
    assert arrayopt.SGD(ps).param_groups[0]["params"] == ps
    assert arrayopt.SGD(p for p in ps).param_groups[0]["params"] == ps
    opt = arrayopt.SGD([{"params": ps[:2]}, {"params": ps[2], "lr": 0.5}], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.9]
    assert opt.param_groups[1]["params"] == [ps[2]]
    named = arrayopt.Adam([("a", ps[0]), ("b", ps[1])])
    assert named.param_groups[0]["param_names"] == ["a", "b"]
    assert named.param_groups[0]["params"] == ps[:2]
    assert list(named.param_groups[0])[:2] == ["params", "param_names"]


def test_group_key_order_and_defaults():
    opt = arrayopt.Adam(params())
    assert list(opt.param_groups[0]) == [
        "params",
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "amsgrad",
        "maximize",
        "foreach",
        "capturable",
        "differentiable",
        "fused",
        "decoupled_weight_decay",
    ]
    assert opt.defaults["lr"] == 1e-3 and opt.defaults["betas"] == (0.9, 0.999)
    assert arrayopt.AdamW(params()).defaults["weight_decay"] == 1e-2
    assert arrayopt.AdamW(params()).defaults["decoupled_weight_decay"] is True
    assert arrayopt.SGD(params()).defaults["lr"] == 1e-3


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda ps: arrayopt.SGD([]), ValueError, "optimizer got an empty parameter list"),
        (
            lambda ps: arrayopt.SGD(ps[0]),
            TypeError,
            "params argument given to the optimizer should be an iterable of Parameters or dicts, "
            "but got arrayopt.parameter.Parameter",
        ),
        (
            lambda ps: arrayopt.SGD(np.zeros(3)),
            TypeError,
            "params argument given to the optimizer should be an iterable of Parameters or dicts, "
            "but got numpy.ndarray",
        ),
        (
            lambda ps: arrayopt.SGD([1.0]),
            TypeError,
            "optimizer can only optimize Parameters, but one of the params is float",
        ),
        (
            lambda ps: arrayopt.SGD([np.zeros(2)]),
            TypeError,
            "optimizer can only optimize Parameters, but one of the params is numpy.ndarray",
        ),
        (
            lambda ps: arrayopt.SGD([ps[0], {"params": [ps[1]]}]),
            TypeError,
            "optimizer can only optimize Parameters, but one of the params is dict",
        ),
        (
            lambda ps: arrayopt.SGD([{"params": [ps[0]]}, ps[1]]),
            TypeError,
            "param_group must be a dict, but got <class 'arrayopt.parameter.Parameter'>",
        ),
        (
            lambda ps: arrayopt.SGD([{"params": set(ps)}]),
            TypeError,
            "optimizer parameters need to be organized in ordered collections",
        ),
        (
            lambda ps: arrayopt.SGD([("a", ps[0]), ps[1]]),
            ValueError,
            "all optimizer params should be with/without names. Some param names are missing",
        ),
        (
            lambda ps: arrayopt.SGD([{"params": [ps[0]]}, {"params": [ps[0]]}]),
            ValueError,
            "some parameters appear in more than one parameter group",
        ),
        (
            lambda ps: arrayopt.SGD([{"params": [("a", ps[0])]}, {"params": [ps[1]]}]),
            ValueError,
            "all optimizer param groups should be with/without names. "
            "cannot add param group without names to the optimizer",
        ),
    ],
)
def test_bad_params(build, error, message):
    with pytest.raises(error) as info:
        build(params())
    assert str(info.value).startswith(message)


def test_top_level_set_is_accepted_and_duplicates_in_a_group_warn():
    p = params(1)[0]
    assert arrayopt.SGD({p}).param_groups[0]["params"] == [p]
    with pytest.warns(UserWarning, match="duplicate parameters"):
        arrayopt.SGD([p, p])


def test_add_param_group_completes_the_given_dict_only_when_valid():
    ps = params()
    opt = arrayopt.SGD(ps[:1], lr=0.1)
    bad = {"params": [ps[0], ps[1]], "lr": 0.2}
    with pytest.raises(ValueError):
        opt.add_param_group(bad)
    assert bad == {"params": [ps[0], ps[1]], "lr": 0.2} and len(opt.param_groups) == 1
    good = {"params": (p for p in ps[1:]), "lr": 0.2}
    opt.add_param_group(good)
    assert opt.param_groups[1] is good
    assert good["params"] == ps[1:] and good["lr"] == 0.2 and good["momentum"] == 0


def test_a_bad_later_group_leaves_earlier_group_dicts_untouched():
    ps = params()
    first, second = {"params": ps[:2], "lr": 0.5}, {"params": [ps[1]]}
    with pytest.raises(ValueError, match="more than one parameter group"):
        arrayopt.Adam([first, second])
    assert first == {"params": ps[:2], "lr": 0.5} and second == {"params": [ps[1]]}


def test_the_constructor_adds_groups_through_add_param_group():
    seen = []

    class Recording(arrayopt.SGD):
        def add_param_group(self, param_group):
            seen.append(param_group)
            super().add_param_group(param_group)

    first, second = {"params": params(1)}, {"params": params(1), "lr": 0.5}
    opt = Recording([first, second])
    assert seen == [first, second] and opt.param_groups[0] is first and opt.param_groups[1] is second


def test_required_hyper_parameter():
    class Custom(arrayopt.Optimizer):
        def __init__(self, params):
            super().__init__(params, {"lr": arrayopt.optimizer.required})

    with pytest.raises(ValueError, match="didn't specify a value of required optimization parameter lr"):
        Custom(params())
    assert Custom([{"params": params(), "lr": 1.0}]).param_groups[0]["lr"] == 1.0


# -- stepping -------------------------------------------------------------------------


def test_zero_grad(xp):
    p = Parameter(xp.ones(3))
    p.grad = xp.ones(3)
    opt = arrayopt.SGD([p])
    grad = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is grad
    assert float(xp.max(xp.abs(p.grad))) == 0.0
    opt.zero_grad()
    assert p.grad is None


def test_step_returns_the_closure_value_and_calls_it_once():
    ps = params()
    calls = []
    sentinel = object()

    def closure():
        calls.append(1)
        return sentinel

    opt = arrayopt.Adam(ps)
    assert opt.step(closure) is sentinel
    assert opt.step() is None
    assert len(calls) == 1


def test_a_none_grad_is_skipped_without_state(xp):
    a, b = Parameter(xp.ones(2)), Parameter(xp.ones(2))
    a.grad = xp.ones(2)
    opt = arrayopt.Adam([a, b], lr=0.1)
    opt.step()
    assert b not in opt.state and float(xp.max(b.data)) == 1.0
    assert list(opt.state_dict()["state"]) == [0]


def test_a_failing_step_changes_nothing():
    ps = params()
    opt = arrayopt.Adam([{"params": ps[:2]}, {"params": ps[2:]}], lr=0.1)
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    data = [p.data.copy() for p in ps]
    opt.param_groups[1]["amsgrad"] = True  # state has no max_exp_avg_sq: torch's KeyError
    with pytest.raises(KeyError, match="max_exp_avg_sq"):
        opt.step()
    for p, d in zip(ps, data, strict=True):
        np.testing.assert_array_equal(p.data, d)
    after = opt.state_dict()
    for index, entry in before["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(after["state"][index][key], value)


def test_a_state_without_step_fails_before_any_update():
    ps = params()
    opt = arrayopt.Adam(ps, lr=0.1)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    del sd["state"][2]["step"]
    with pytest.raises(KeyError, match=r"state of parameter 2 .* has no 'step'"):
        opt.load_state_dict(sd)  # refused on load (torch loads it and fails at step)
    del opt.state[ps[2]]["step"]  # state edited by hand: step still fails before any update
    data = [p.data.copy() for p in ps]
    with pytest.raises(KeyError, match="step"):
        opt.step()
    for p, d in zip(ps, data, strict=True):
        np.testing.assert_array_equal(p.data, d)
    assert [opt.state[p]["step"] for p in ps[:2]] == [1.0, 1.0]


def test_state_of_the_wrong_shape_is_refused_before_any_update():
    ps = params()
    opt = arrayopt.Adam(ps, lr=0.1)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][2]["exp_avg"] = np.zeros(5)
    with pytest.raises(ValueError, match=r"state of parameter 2 .*'exp_avg' has shape \(5,\)"):
        opt.load_state_dict(sd)  # refused on load (torch loads it and fails at step)
    opt.state[ps[2]]["exp_avg"] = np.zeros(5)  # state edited by hand: step still fails before any update
    data = [p.data.copy() for p in ps]
    with pytest.raises(ValueError, match=r"Parameter 'p2': optimizer state has shape \(5,\)"):
        opt.step()
    for p, d in zip(ps, data, strict=True):
        np.testing.assert_array_equal(p.data, d)


def test_duplicate_parameter_is_stepped_twice_like_torch(torch):
    data = np.array([1.0, -2.0])
    p = Parameter(data.copy())
    p.grad = np.array([0.5, 0.25])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = arrayopt.Adam([p, p], lr=0.1)
        tp = torch.nn.Parameter(torch.tensor(data))
        tp.grad = torch.tensor([0.5, 0.25], dtype=torch.float64)
        theirs = torch.optim.Adam([tp, tp], lr=0.1)
    ours.step()
    theirs.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-15)
    assert ours.state[p]["step"] == float(theirs.state[tp]["step"]) == 2.0


# -- state_dict -----------------------------------------------------------------------


def test_state_dict_layout():
    ps = params(4)
    ps[0].grad = None
    opt = arrayopt.Adam([("w0", ps[0]), ("w1", ps[1])], lr=0.1)
    opt.add_param_group({"params": [("w2", ps[2]), ("w3", ps[3])], "lr": 0.2})
    ps[3].grad = None
    opt.step()
    ps[0].grad = np.ones(2)
    opt.step()
    sd = opt.state_dict()
    assert list(sd) == ["state", "param_groups"]
    assert list(sd["state"]) == [1, 2, 0]  # order in which parameters first got state
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    assert [g["param_names"] for g in sd["param_groups"]] == [["w0", "w1"], ["w2", "w3"]]
    keys = list(sd["param_groups"][0])
    assert keys[0] == "param_names" and keys[-1] == "params"
    assert list(sd["state"][1]) == ["step", "exp_avg", "exp_avg_sq"]
    assert sd["state"][1]["step"] == 2.0 and sd["state"][0]["step"] == 1.0
    assert sd["state"][1]["exp_avg"] is opt.state[ps[1]]["exp_avg"]  # live, as torch


def test_state_dict_maps_a_duplicate_to_its_last_index():
    p, q = params(2)
    with pytest.warns(UserWarning):
        opt = arrayopt.SGD([p, q, p])
    assert opt.state_dict()["param_groups"][0]["params"] == [2, 1, 2]


def test_state_dict_layout_matches_torch(torch):
    ours_ps = params(3)
    theirs_ps = [torch.nn.Parameter(torch.tensor(p.data)) for p in ours_ps]
    for tp in theirs_ps:
        tp.grad = torch.full((2,), 0.5, dtype=torch.float64)
    ours_ps[1].grad = None
    theirs_ps[1].grad = None
    ours = arrayopt.AdamW([{"params": ours_ps[:2]}, {"params": ours_ps[2:], "lr": 0.5}], amsgrad=True)
    theirs = torch.optim.AdamW([{"params": theirs_ps[:2]}, {"params": theirs_ps[2:], "lr": 0.5}], amsgrad=True)
    ours.step()
    theirs.step()
    a, b = ours.state_dict(), theirs.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert list(a["state"]) == list(b["state"])
    for index in b["state"]:
        assert list(a["state"][index]) == list(b["state"][index])
    assert repr(ours) == repr(theirs)


def test_load_state_dict_checks_groups_before_changing_anything():
    ps = params()
    opt = arrayopt.SGD([{"params": ps[:2]}, {"params": ps[2:]}], momentum=0.9)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    other = arrayopt.SGD(params(), momentum=0.9, lr=0.5)
    with pytest.raises(
        ValueError,
        match=r"^loaded state dict has a different number of parameter groups \(2 saved, 1 in the optimizer\)$",
    ):
        other.load_state_dict(sd)
    other = arrayopt.SGD([{"params": params(1)}, {"params": params(2)}], momentum=0.9, lr=0.5)
    with pytest.raises(
        ValueError,
        match=r"^loaded state dict contains a parameter group that doesn't match the size of optimizer's group "
        r"\(param group 0: 2 saved parameters, 1 in the optimizer\)$",
    ):
        other.load_state_dict(sd)
    assert len(other.state) == 0 and other.param_groups[0]["lr"] == 0.5


def test_load_state_dict_copies_casts_and_keeps_step():
    p = Parameter(np.ones(3, dtype=np.float32))
    p.grad = np.ones(3, dtype=np.float32)
    source = arrayopt.Adam([p], lr=0.1)
    source.step()
    sd = source.state_dict()
    q = Parameter(np.ones(3, dtype=np.float64))
    target = arrayopt.Adam([q], lr=0.7)
    target.load_state_dict(sd)
    assert target.param_groups[0]["lr"] == 0.1 and target.param_groups[0]["params"] == [q]
    loaded = target.state[q]
    assert loaded["exp_avg"].dtype == np.float64 and loaded["step"] == 1.0
    assert loaded["exp_avg"] is not sd["state"][0]["exp_avg"]
    sd["state"][0]["exp_avg"][...] = 99.0
    assert float(loaded["exp_avg"][0]) != 99.0


def test_complex_state_keeps_its_dtype_on_load():
    # torch only moves a complex parameter's state (no cast), and Adam's step then fails on
    # complex64 state for a complex128 parameter: arrayopt refuses it on load instead.
    p = Parameter(np.ones(2, dtype=np.complex128))
    opt = arrayopt.Adam([p])
    sd = {
        "state": {0: {"step": 3.0, "exp_avg": np.ones(2, np.complex64), "exp_avg_sq": np.ones(2, np.complex64)}},
        "param_groups": copy.deepcopy(opt.state_dict()["param_groups"]),
    }
    with pytest.raises(ValueError, match="'exp_avg' has dtype complex64, but the parameter is complex128"):
        opt.load_state_dict(sd)
    sd["state"][0]["exp_avg"] = np.ones(2, np.complex128)
    sd["state"][0]["exp_avg_sq"] = np.ones(2, np.complex128)
    opt.load_state_dict(sd)
    assert opt.state[p]["exp_avg"].dtype == np.complex128


def test_state_dict_loads_across_libraries():
    strict = pytest.importorskip("array_api_strict")
    p = Parameter(np.array([1.0, 2.0]))
    p.grad = np.array([0.1, -0.2])
    opt = arrayopt.Adam([p], lr=0.1)
    opt.step()
    q = Parameter(strict.asarray([1.0, 2.0]))
    other = arrayopt.Adam([q])
    other.load_state_dict(opt.state_dict())
    assert arrayopt.backends.get_backend(other.state[q]["exp_avg"]).name == "array_api_strict"
    np.testing.assert_array_equal(np.asarray(other.state[q]["exp_avg_sq"]), opt.state[p]["exp_avg_sq"])


# -- hooks ----------------------------------------------------------------------------


def test_step_hook_order_and_removal():
    opt = arrayopt.SGD(params())
    calls = []
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: calls.append(0)),
        opt.register_step_pre_hook(lambda o, a, k: calls.append(1)),
        opt.register_step_post_hook(lambda o, a, k: calls.append(2)),
        register_optimizer_step_post_hook(lambda o, a, k: calls.append(5)),
    ]
    try:
        opt.step()
        assert calls == [0, 1, 2, 5]
    finally:
        for h in handles:
            h.remove()
    opt.step()
    assert calls == [0, 1, 2, 5]


def test_step_pre_hook_can_replace_arguments_or_must_return_none():
    opt = arrayopt.SGD(params())
    seen = []
    handle = opt.register_step_pre_hook(lambda o, args, kwargs: ((o,), {"closure": lambda: "replaced"}))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append(kwargs))
    assert opt.step() == "replaced"
    assert "closure" in seen[0]
    handle.remove()
    opt.register_step_pre_hook(lambda o, a, k: 42)
    with pytest.raises(RuntimeError, match="must return None or a tuple of \\(new_args, new_kwargs\\), but got 42"):
        opt.step()


def test_hooks_run_once_when_a_subclass_calls_super_step():
    class Verbose(arrayopt.SGD):
        def step(self, closure=None):
            return super().step(closure)

    opt = Verbose(params())
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    opt.step()
    assert calls == ["pre", "post"]


def test_state_dict_hooks():
    opt = arrayopt.SGD(params(), momentum=0.9)
    calls = []
    opt.register_state_dict_pre_hook(lambda o: calls.append("second"))
    opt.register_state_dict_pre_hook(lambda o: calls.append("first"), prepend=True)
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "extra": 1})
    sd = opt.state_dict()
    assert calls == ["first", "second"] and sd["extra"] == 1

    loaded = []

    def pre(o, sd):
        sd = dict(sd)
        sd["param_groups"] = copy.deepcopy(sd["param_groups"])
        sd["param_groups"][0]["lr"] = 0.25
        return sd

    opt.register_load_state_dict_pre_hook(pre)
    handle = opt.register_load_state_dict_post_hook(lambda o: loaded.append(o.param_groups[0]["lr"]))
    opt.load_state_dict(opt.state_dict())
    assert loaded == [0.25]
    handle.remove()
    opt.load_state_dict(opt.state_dict())
    assert loaded == [0.25]


# -- copying and printing -------------------------------------------------------------


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))], ids=["deepcopy", "pickle"])
def test_copies_step_like_the_original(clone):
    ps = params()
    opt = arrayopt.Adam(ps, lr=0.1, amsgrad=True)
    opt.register_step_pre_hook(lambda o, a, k: None)
    opt.step()
    twin = clone(opt)
    twin_params = twin.param_groups[0]["params"]
    assert twin_params[0] is not ps[0]
    assert twin._optimizer_step_pre_hooks == {}  # hooks are not copied, as in torch
    opt.step()
    twin.step()
    for p, q in zip(ps, twin_params, strict=True):
        np.testing.assert_array_equal(p.data, q.data)
        np.testing.assert_array_equal(opt.state[p]["max_exp_avg_sq"], twin.state[q]["max_exp_avg_sq"])


def test_repr():
    opt = arrayopt.SGD([{"params": params(1)}, {"params": params(1), "lr": 0.5}])
    text = repr(opt)
    assert text.startswith("SGD (\nParameter Group 0\n    dampening: 0\n    differentiable: False\n")
    assert "\nParameter Group 1\n" in text and "    lr: 0.5\n" in text and text.endswith(")")


def test_invalid_loaded_step_is_refused_before_anything_changes():
    ps = params()
    opt = arrayopt.Adam(ps, lr=0.1)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    before = copy.deepcopy(opt.state_dict())
    for bad in (-1.0, float("nan"), "3", None):
        sd["state"][1]["step"] = bad
        with pytest.raises(ValueError, match="invalid step counter in optimizer state"):
            opt.load_state_dict(sd)
        assert opt.state[ps[1]]["step"] == before["state"][1]["step"]


def test_bad_group_value_fails_the_step_before_any_update():
    ps = params()
    opt = arrayopt.SGD([{"params": ps[:2]}, {"params": ps[2:]}], lr=0.1)
    opt.param_groups[1]["lr"] = "fast"
    data = [p.data.copy() for p in ps]
    with pytest.raises((TypeError, ValueError)):
        opt.step()
    for p, d in zip(ps, data, strict=True):
        np.testing.assert_array_equal(p.data, d)


@pytest.mark.ref
@pytest.mark.parametrize(
    "name, kwargs", [("Adam", {"lr": 0.1, "amsgrad": True}), ("SGD", {"lr": 0.1, "momentum": 0.9})]
)
def test_a_torch_state_dict_loads_and_continues_like_torch(torch, name, kwargs):
    rng = np.random.default_rng(3)
    start = [rng.standard_normal((3, 2)), rng.standard_normal(4)]
    grads = [[rng.standard_normal(a.shape) for a in start] for _ in range(6)]
    tparams = [torch.nn.Parameter(torch.tensor(a)) for a in start]
    theirs = getattr(torch.optim, name)(tparams, **kwargs)

    def torch_step(k):
        for tp, g in zip(tparams, grads[k], strict=True):
            tp.grad = torch.tensor(g)
        theirs.step()

    for k in range(3):
        torch_step(k)
    ours_params = [Parameter(tp.detach().numpy().copy()) for tp in tparams]
    ours = getattr(arrayopt, name)(ours_params)
    ours.load_state_dict(theirs.state_dict())  # torch tensors in, NumPy state out
    for k in range(3, 6):
        torch_step(k)
        for p, g in zip(ours_params, grads[k], strict=True):
            p.grad = g.copy()
        ours.step()
    for p, tp in zip(ours_params, tparams, strict=True):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-13, atol=1e-15)
    assert all(type(v) is np.ndarray for s in ours.state.values() for k, v in s.items() if k != "step")


def test_parameters_of_different_libraries_in_one_optimizer():
    strict = pytest.importorskip("array_api_strict")
    start, grad = np.array([1.0, -2.0, 0.5]), np.array([0.3, -0.1, 0.2])
    mixed = [Parameter(start.copy()), Parameter(strict.asarray(start.copy()))]
    alone = Parameter(start.copy())
    opt = arrayopt.Adam(mixed, lr=0.1, amsgrad=True)
    ref = arrayopt.Adam([alone], lr=0.1, amsgrad=True)
    for _ in range(3):
        mixed[0].grad, mixed[1].grad, alone.grad = grad.copy(), strict.asarray(grad.copy()), grad.copy()
        opt.step()
        ref.step()
    np.testing.assert_array_equal(mixed[0].data, alone.data)
    np.testing.assert_array_equal(np.asarray(mixed[1].data), alone.data)


def test_group_params_given_as_a_generator_are_kept():
    """torch reads a group's params once; a generator must not be used up by the checks."""
    ps = [arrayopt.Parameter(np.ones(2)), arrayopt.Parameter(np.ones(3))]
    opt = arrayopt.SGD([{"params": (p for p in ps)}], lr=0.1)
    assert opt.param_groups[0]["params"] == ps
    opt = arrayopt.SGD((p for p in ps), lr=0.1)
    assert opt.param_groups[0]["params"] == ps


def test_a_parameter_dict_given_whole_says_to_pass_its_parameters():
    params = arrayopt.ParameterDict({"w": np.zeros(2)})
    with pytest.raises(TypeError) as info:
        arrayopt.Adam(params)
    text = str(info.value)
    assert text.startswith("optimizer can only optimize Parameters, but one of the params is str")
    assert "pass .parameters(), or .named_parameters() to keep the names" in text
    arrayopt.Adam(params.parameters())
    assert arrayopt.Adam(params.named_parameters()).param_groups[0]["param_names"] == ["w"]

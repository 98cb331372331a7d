"""load_state_dict checks everything before it changes anything.

Every bad state dict below must raise the stated error, with a message naming the
group, parameter or key at fault, and leave the optimizer exactly as it was: the
same ``state`` and ``param_groups`` objects, holding the same values and arrays.
Then random damage (hypothesis) anywhere in a state dict: it loads, or it raises
TypeError, ValueError or KeyError and changes nothing; and what loads can step.
"""

import copy
import io
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arrayopt
from arrayopt import Parameter

from conftest import fuzz_examples


def make_params():
    ps = [
        Parameter(np.linspace(-1.0, 1.0, 6).reshape(2, 3), name="w"),
        Parameter(np.array([0.5, -0.25]), name="b"),
        Parameter(np.full(4, 1.0 + 1.0j), name="z"),
    ]
    for i, p in enumerate(ps):
        p.grad = np.full(p.shape, 0.5 + 0.1 * i, dtype=p.dtype)
    return ps


def trained_adam():
    ps = make_params()
    opt = arrayopt.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.01, "amsgrad": True}], lr=0.1)
    opt.step()
    opt.step()
    return opt


def trained_sgd():
    ps = make_params()
    opt = arrayopt.SGD([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.01}], lr=0.1, momentum=0.9)
    opt.step()
    return opt


# -- "exactly as before" --------------------------------------------------------------


def snapshot(opt):
    return {
        "state": opt.state,
        "groups": opt.param_groups,
        "group_objects": list(opt.param_groups),
        "group_values": [
            {k: (list(v) if k == "params" else copy.deepcopy(v)) for k, v in g.items()} for g in opt.param_groups
        ],
        "entries": {p: (s, dict(s)) for p, s in opt.state.items()},
        "copies": {p: copy.deepcopy(dict(s)) for p, s in opt.state.items()},
        "defaults": copy.deepcopy(opt.defaults),
        "data": [p.data.copy() for g in opt.param_groups for p in g["params"]],
    }


def same_value(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def assert_unchanged(opt, snap):
    assert opt.state is snap["state"] and opt.param_groups is snap["groups"]
    assert all(a is b for a, b in zip(opt.param_groups, snap["group_objects"], strict=True))
    assert len(opt.param_groups) == len(snap["group_objects"])
    for group, saved in zip(opt.param_groups, snap["group_values"], strict=True):
        assert list(group) == list(saved)
        for key, value in group.items():
            if key == "params":
                assert all(p is q for p, q in zip(value, saved[key], strict=True))
            else:
                assert same_value(value, saved[key]), key
    assert list(opt.state) == list(snap["entries"])
    for p, (entry, items) in snap["entries"].items():
        assert opt.state[p] is entry and list(entry) == list(items)
        for key, value in entry.items():
            assert value is items[key]  # the very same arrays
            assert same_value(value, snap["copies"][p][key])  # holding the same values
    assert opt.defaults == snap["defaults"]
    data = [p.data for g in opt.param_groups for p in g["params"]]
    assert all(np.array_equal(a, b) for a, b in zip(data, snap["data"], strict=True))


def check_refused(opt, sd, error, pattern):
    snap = snapshot(opt)
    with pytest.raises(error, match=pattern):
        opt.load_state_dict(sd)
    assert_unchanged(opt, snap)


# -- every kind of bad state dict -----------------------------------------------------


def set_in(path, value):
    def mutate(sd):
        node = sd
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return sd

    return mutate


def delete(path):
    def mutate(sd):
        node = sd
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        return sd

    return mutate


def other_optimizer_state(sd):
    return copy.deepcopy(trained_sgd().state_dict())


BAD_ADAM = [
    ("a list", lambda sd: [sd], TypeError, r"^state_dict must be a dict, but got list$"),
    ("None", lambda sd: None, TypeError, r"^state_dict must be a dict, but got NoneType$"),
    ("no param_groups", delete(["param_groups"]), KeyError, r"no 'param_groups' entry"),
    ("no state", delete(["state"]), KeyError, r"no 'state' entry"),
    ("param_groups a dict", set_in(["param_groups"], {}), TypeError, r"'param_groups' must be a list of dicts"),
    (
        "one group fewer",
        lambda sd: {**sd, "param_groups": sd["param_groups"][:1]},
        ValueError,
        r"^loaded state dict has a different number of parameter groups \(1 saved, 2 in the optimizer\)$",
    ),
    ("group a str", set_in(["param_groups", 1], "group"), TypeError, r"param group 1 must be a dict, but got str"),
    ("group without params", delete(["param_groups", 0, "params"]), KeyError, r"param group 0 has no 'params'"),
    (
        "params a set",
        set_in(["param_groups", 0, "params"], {0, 1}),
        TypeError,
        r"param group 0: 'params' must be a list",
    ),
    ("params holds a str", set_in(["param_groups", 0, "params", 1], "1"), TypeError, r"params\[1\] is '1', not a"),
    ("params holds a bool", set_in(["param_groups", 0, "params", 0], True), TypeError, r"params\[0\] is True"),
    ("params holds a float", set_in(["param_groups", 1, "params", 0], 2.0), TypeError, r"param group 1: params\[0\]"),
    (
        "one param more",
        set_in(["param_groups", 1, "params"], [2, 3]),
        ValueError,
        r"^loaded state dict contains a parameter group that doesn't match the size of optimizer's group "
        r"\(param group 1: 2 saved parameters, 1 in the optimizer\)$",
    ),
    (
        "a non-str group key",
        set_in(["param_groups", 0, 5], 1.0),
        TypeError,
        r"param group 0: the key 5 is not a string",
    ),
    ("param_names too short", set_in(["param_groups", 0, "param_names"], ["w"]), ValueError, r"1 'param_names' for 2"),
    ("param_names not str", set_in(["param_groups", 0, "param_names"], [1, 2]), TypeError, r"'param_names' must be"),
    ("no betas", delete(["param_groups", 1, "betas"]), ValueError, r"param group 1 has no 'betas', which Adam needs"),
    ("lr nan", set_in(["param_groups", 0, "lr"], math.nan), ValueError, r"param group 0: 'lr' is nan, which is not"),
    ("lr a str", set_in(["param_groups", 1, "lr"], "fast"), TypeError, r"param group 1: lr must be a real number"),
    (
        "lr 2 elements",
        set_in(["param_groups", 0, "lr"], np.ones(2)),
        ValueError,
        r"group 0: Tensor lr must be 1-element",
    ),
    ("betas > 1", set_in(["param_groups", 0, "betas"], (1.5, 0.9)), ValueError, r"Invalid beta parameter at index 0"),
    ("betas inf", set_in(["param_groups", 0, "betas"], (0.9, math.inf)), ValueError, r"'betas' is \(0.9, inf\)"),
    ("eps a str", set_in(["param_groups", 0, "eps"], "tiny"), TypeError, r"param group 0: eps must be a real number"),
    (
        "weight_decay -inf",
        set_in(["param_groups", 1, "weight_decay"], -math.inf),
        ValueError,
        r"'weight_decay' is -inf",
    ),
    ("initial_lr nan", set_in(["param_groups", 0, "initial_lr"], math.nan), ValueError, r"'initial_lr' is nan"),
    (
        "fused with a complex parameter",  # it would load, and the step refuse it (issue 14, item 16)
        set_in(["param_groups", 1, "fused"], True),
        ValueError,
        r"param group 1: fused=True, but parameter 0 \(Parameter 'z'\) is complex",
    ),
    ("state a list", set_in(["state"], []), TypeError, r"'state' must be a dict, but got list"),
    ("state entry a list", set_in(["state", 1], []), TypeError, r"state of parameter 1 \(param group 0, position 1"),
    ("orphan state", set_in(["state", 7], {}), ValueError, r"entry for parameter 7, but no param group lists that"),
    (
        "state key True",
        lambda sd: {**sd, "state": {True if k == 1 else k: v for k, v in sd["state"].items()}},
        TypeError,
        r"the state key True is not a parameter index",
    ),
    ("non-str state key", set_in(["state", 0, 3], 1.0), TypeError, r"state of parameter 0 .*the key 3 is not a string"),
    ("unknown state key", set_in(["state", 2, "momentum_buffer"], None), ValueError, r"'momentum_buffer', which Adam"),
    ("no exp_avg_sq", delete(["state", 0, "exp_avg_sq"]), KeyError, r"parameter 0 .* has no 'exp_avg_sq'"),
    (
        "no step",
        delete(["state", 2, "step"]),
        KeyError,
        r"parameter 2 \(param group 1, position 0, 'z'\) has no 'step'",
    ),
    ("step nan", set_in(["state", 0, "step"], math.nan), ValueError, r"'step': invalid step counter"),
    ("step -1", set_in(["state", 0, "step"], -1.0), ValueError, r"invalid step counter in optimizer state: -1.0"),
    ("step a str", set_in(["state", 1, "step"], "2"), ValueError, r"parameter 1 .*invalid step counter"),
    ("step None", set_in(["state", 1, "step"], None), ValueError, r"invalid step counter in optimizer state: None"),
    ("step 2 elements", set_in(["state", 1, "step"], np.ones(2)), ValueError, r"an array of shape \(2,\)"),
    (
        "exp_avg transposed",
        set_in(["state", 0, "exp_avg"], np.zeros((3, 2))),
        ValueError,
        r"state of parameter 0 \(param group 0, position 0, 'w'\): 'exp_avg' has shape \(3, 2\), but the parameter "
        r"has shape \(2, 3\)",
    ),
    ("exp_avg a list", set_in(["state", 1, "exp_avg"], [0.0, 0.0]), TypeError, r"'exp_avg' must be an array"),
    ("exp_avg None", set_in(["state", 1, "exp_avg"], None), TypeError, r"'exp_avg' is None"),
    ("exp_avg complex", set_in(["state", 1, "exp_avg"], np.zeros(2, complex)), ValueError, r"'exp_avg' is complex"),
    ("exp_avg of str", set_in(["state", 1, "exp_avg"], np.array(["a", "b"])), TypeError, r"not a number type"),
    (
        "complex64 state",
        set_in(["state", 2, "exp_avg_sq"], np.zeros(4, np.complex64)),
        ValueError,
        r"'exp_avg_sq' has dtype complex64, but the parameter is complex128",
    ),
    ("real state, complex param", set_in(["state", 2, "exp_avg"], np.zeros(4)), ValueError, r"has dtype float64"),
    (
        "amsgrad without max_exp_avg_sq",
        set_in(["param_groups", 0, "amsgrad"], True),
        KeyError,
        r"parameter 0 .* has no 'max_exp_avg_sq', which Adam needs in a parameter's state with amsgrad",
    ),
    ("max_exp_avg_sq shape", set_in(["state", 2, "max_exp_avg_sq"], np.zeros(5, complex)), ValueError, r"shape \(5,\)"),
    ("an SGD state dict", other_optimizer_state, ValueError, r"has no 'betas', .*another kind of optimizer"),
]


@pytest.mark.parametrize("case", BAD_ADAM, ids=[row[0] for row in BAD_ADAM])
def test_bad_adam_state_dict_is_refused_and_changes_nothing(case):
    _, mutate, error, pattern = case
    opt = trained_adam()
    check_refused(opt, mutate(copy.deepcopy(opt.state_dict())), error, pattern)


BAD_SGD = [
    ("an Adam state dict", lambda sd: copy.deepcopy(trained_adam().state_dict()), ValueError, r"has no 'momentum'"),
    ("Adam state keys", set_in(["state", 0, "exp_avg"], np.zeros((2, 3))), ValueError, r"'exp_avg', which SGD does"),
    ("buffer shape", set_in(["state", 1, "momentum_buffer"], np.zeros(3)), ValueError, r"'momentum_buffer' has shape"),
    ("buffer a float", set_in(["state", 1, "momentum_buffer"], 0.5), TypeError, r"'momentum_buffer' must be an array"),
    ("momentum -1", set_in(["param_groups", 0, "momentum"], -1.0), ValueError, r"group 0: Invalid momentum value: -1"),
    (
        "nesterov with dampening",
        lambda sd: set_in(["param_groups", 1, "nesterov"], True)(set_in(["param_groups", 1, "dampening"], 0.5)(sd)),
        ValueError,
        r"param group 1: Nesterov momentum requires a momentum and zero dampening",
    ),
]


@pytest.mark.parametrize("case", BAD_SGD, ids=[row[0] for row in BAD_SGD])
def test_bad_sgd_state_dict_is_refused_and_changes_nothing(case):
    _, mutate, error, pattern = case
    opt = trained_sgd()
    check_refused(opt, mutate(copy.deepcopy(opt.state_dict())), error, pattern)


def test_a_refusal_after_a_load_pre_hook_changes_nothing():
    opt = trained_adam()
    opt.register_load_state_dict_pre_hook(lambda o, sd: {**sd, "param_groups": sd["param_groups"][:1]})
    check_refused(opt, copy.deepcopy(opt.state_dict()), ValueError, "different number of parameter groups")


# -- what torch loads still loads -----------------------------------------------------


def continues_like(opt, sd, make):
    """Load ``sd`` into a fresh optimizer from ``make`` and check it steps like ``opt``."""
    twin = make()
    twin.load_state_dict(sd)
    for ours, theirs in zip(opt.param_groups, twin.param_groups, strict=True):
        for p, q in zip(ours["params"], theirs["params"], strict=True):
            q.data[...] = p.data
    opt.step()
    twin.step()
    for ours, theirs in zip(opt.param_groups, twin.param_groups, strict=True):
        for p, q in zip(ours["params"], theirs["params"], strict=True):
            np.testing.assert_array_equal(p.data, q.data)


def fresh_adam():
    ps = make_params()
    return arrayopt.Adam([{"params": ps[:2]}, {"params": ps[2:]}])


def test_valid_variants_still_load():
    opt = trained_adam()
    sd = copy.deepcopy(opt.state_dict())
    # no state at all for a parameter (it had no gradient yet): fine, as in torch
    partial = copy.deepcopy(sd)
    del partial["state"][1]
    fresh_adam().load_state_dict(partial)
    # extra top-level and group keys (a post-hook or a scheduler may add them)
    extra = copy.deepcopy(sd)
    extra["extra"] = 1
    extra["param_groups"][0]["initial_lr"] = 0.1
    extra["param_groups"][1]["swa_lr"] = 0.05
    fresh_adam().load_state_dict(extra)
    # an empty state entry (treated as no state) and a non-index key (kept as is, as torch)
    odd = copy.deepcopy(sd)
    odd["state"][1] = {}
    odd["state"]["note"] = "kept"
    other = fresh_adam()
    other.load_state_dict(odd)
    assert other.state["note"] == "kept"
    # a 0-d array step (torch's tensor) and an lr array
    arrays = copy.deepcopy(sd)
    arrays["state"][0]["step"] = np.array(2.0, dtype=np.float32)
    arrays["param_groups"][0]["lr"] = np.array(0.1)
    fresh_adam().load_state_dict(arrays)
    # an AdamW state dict into Adam (same keys; torch loads it too)
    ps = make_params()
    adamw = arrayopt.AdamW([{"params": ps[:2]}, {"params": ps[2:]}])
    adamw.step()
    fresh_adam().load_state_dict(copy.deepcopy(adamw.state_dict()))
    continues_like(opt, sd, fresh_adam)


def test_duplicate_parameters_and_names_still_load():
    p, q = make_params()[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = arrayopt.Adam([("a", p), ("b", q), ("c", p)], lr=0.1)
        opt.step()
        sd = copy.deepcopy(opt.state_dict())
        assert sd["param_groups"][0]["params"] == [2, 1, 2]
        p2, q2 = make_params()[:2]
        other = arrayopt.Adam([("a", p2), ("b", q2), ("c", p2)])
    other.load_state_dict(sd)
    assert other.state[p2]["step"] == 2.0 and other.param_groups[0]["param_names"] == ["a", "b", "c"]


@pytest.mark.ref
def test_a_torch_state_dict_with_tensors_loads(torch):
    tp = [torch.nn.Parameter(torch.tensor(p.data)) for p in make_params()]
    for t in tp:
        t.grad = torch.ones_like(t)
    theirs = torch.optim.Adam([{"params": tp[:2]}, {"params": tp[2:], "amsgrad": True}], lr=0.1)
    theirs.step()
    ours = fresh_adam()
    ours.load_state_dict(theirs.state_dict())
    assert ours.state[ours.param_groups[1]["params"][0]]["step"] == 1.0
    assert ours.param_groups[1]["amsgrad"] is True


# -- random damage --------------------------------------------------------------------


def filled(shape, dtype, fill):
    with np.errstate(invalid="ignore"):  # nan and inf into integers: any value will do
        return np.full(shape, fill).astype(dtype)


ARRAYS = st.builds(
    filled,
    st.sampled_from([(), (1,), (2,), (4,), (2, 3), (3, 2)]),
    st.sampled_from(["float64", "float32", "complex128", "complex64", "int64", "bool"]),
    st.sampled_from([0.0, 1.0, -2.5, math.nan, math.inf]),
)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-3, 10)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=3)
    | ARRAYS
)
GARBAGE = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=3) | st.integers(0, 5), children, max_size=3)
    ),
    max_leaves=6,
)


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from paths(value, (*prefix, i))


def replaced(node, path, value, remove):
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(node, dict):
        out = dict(node)
        if remove and not rest:
            del out[key]
        else:
            out[key] = replaced(node[key], rest, value, remove)
        return out
    items = list(node)
    if remove and not rest:
        del items[key]
    else:
        items[key] = replaced(node[key], rest, value, remove)
    return type(node)(items)


@settings(max_examples=fuzz_examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), garbage=GARBAGE, remove=st.booleans(), sgd=st.booleans())
def test_random_damage_loads_or_is_refused_without_change(data, garbage, remove, sgd):
    opt = trained_sgd() if sgd else trained_adam()
    sd = copy.deepcopy(opt.state_dict())
    path = data.draw(st.sampled_from(list(paths(sd))))
    damaged = replaced(sd, path, garbage, remove and bool(path))
    snap = snapshot(opt)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            opt.load_state_dict(damaged)
    except (TypeError, ValueError, KeyError):
        assert_unchanged(opt, snap)
        return
    # Loaded: a step either works or fails before it changes a parameter.
    before = [p.data.copy() for g in opt.param_groups for p in g["params"]]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            opt.step()
    except (TypeError, ValueError, KeyError):
        after = [p.data for g in opt.param_groups for p in g["params"]]
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(after, before, strict=True))


# -- every state dict the library itself produces loads -------------------------------

SCHEDULERS = {
    # each drives lr to the edge of what a constructor accepts, or past it, as torch's do
    "cosine to 0.0": lambda opt: arrayopt.lr_scheduler.CosineAnnealingLR(opt, T_max=1),
    "cosine, eta_min 1e-20": lambda opt: arrayopt.lr_scheduler.CosineAnnealingLR(opt, T_max=3, eta_min=1e-20),
    "polynomial to 0.0": lambda opt: arrayopt.lr_scheduler.PolynomialLR(opt, total_iters=2),
    "negative lambda": lambda opt: arrayopt.lr_scheduler.LambdaLR(opt, lambda epoch: -0.5 * epoch),
    "one cycle": lambda opt: arrayopt.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=10, cycle_momentum="momentum" in opt.defaults or "betas" in opt.defaults
    ),
    "plateau": lambda opt: arrayopt.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=0),
}


def stepped_optimizer(name, seed=0):
    """An optimizer of class ``name`` over parameters it can step, and a function stepping it once."""
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (2, 3)] if name == "Muon" else [(3, 4), (4,)]
    ps = [Parameter(rng.standard_normal(s)) for s in shapes]
    opt = getattr(arrayopt, name)(ps)

    def step():
        for p in ps:
            grad = rng.standard_normal(p.shape)
            if name == "SparseAdam":
                rows = np.array([[0, 2]]) if p.data.ndim == 2 else np.array([[1, 3]])
                grad = arrayopt.SparseGrad(rows, grad[rows[0]], p.shape)
            p.grad = grad
        if name == "LBFGS":
            opt.step(lambda: float(sum((p.data**2).sum() for p in ps)))
        else:
            opt.step()

    return opt, step


OPTIMIZERS = sorted(arrayopt.optimizers.__all__)


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@pytest.mark.parametrize("name", [n for n in OPTIMIZERS if isinstance(getattr(arrayopt, n), type)])
def test_every_state_dict_an_optimizer_and_its_scheduler_produce_loads(name, scheduler):
    opt, step = stepped_optimizer(name)
    sched = SCHEDULERS[scheduler](opt)
    for epoch in range(4):
        step()
        sched.step(1.0) if scheduler == "plateau" else sched.step()
        sd = copy.deepcopy(opt.state_dict())
        opt.load_state_dict(copy.deepcopy(sd))
        opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # a second time (LBFGS failed there)
        twin, twin_step = stepped_optimizer(name, seed=1)
        twin_sched = SCHEDULERS[scheduler](twin)
        buffer = io.BytesIO()
        arrayopt.save(buffer, optimizer=opt, scheduler=sched)
        arrayopt.load_into(buffer, optimizer=twin, scheduler=twin_sched)
        assert [g["lr"] for g in twin.param_groups] == [g["lr"] for g in opt.param_groups], epoch
        twin_step()  # and it steps


@pytest.mark.parametrize(
    "name, key, value, error, pattern",
    [
        ("Adafactor", "row_var", np.zeros((4, 1)), ValueError, r"'row_var' has shape \(4, 1\), but a parameter of"),
        ("Adafactor", "col_var", np.zeros((3, 1)), ValueError, r"'col_var' has shape \(3, 1\), but a parameter of"),
        ("Adafactor", "variance", np.zeros((3, 4)), ValueError, r"'variance' is not kept for a parameter of shape"),
        ("Adafactor", "row_var", None, KeyError, r"has no 'row_var', which Adafactor needs in a parameter's state"),
        ("LBFGS", "d", np.zeros(15), ValueError, r"'d' has shape \(15,\), but the parameters make vectors of \(16,"),
        ("LBFGS", "prev_flat_grad", np.zeros((4, 4)), ValueError, r"'prev_flat_grad' has shape \(4, 4\)"),
        ("LBFGS", "old_dirs", [np.zeros(16)] * 9, ValueError, r"'old_dirs', 'old_stps' and 'ro' must be as long as"),
        ("LBFGS", "ro", "x", TypeError, r"'old_dirs', 'old_stps' and 'ro' must be lists"),
        ("LBFGS", "H_diag", np.ones(2), ValueError, r"'H_diag' must be a number or a 1-element array"),
        ("LBFGS", "n_iter", -1, ValueError, r"'n_iter' must be an int >= 0, got -1"),
        ("LBFGS", "d", None, KeyError, r"has n_iter \d+ but no 'd'"),
    ],
)
def test_adafactor_and_lbfgs_states_of_the_wrong_shape_are_refused(name, key, value, error, pattern):
    opt, step = stepped_optimizer(name)
    step()
    step()
    sd = copy.deepcopy(opt.state_dict())
    if value is None:
        del sd["state"][0][key]
    else:
        sd["state"][0][key] = value
    snap = snapshot(opt)
    with pytest.raises(error, match=pattern):
        opt.load_state_dict(sd)
    assert_unchanged(opt, snap)

"""Adadelta, Adamax, RMSprop and Rprop beyond the shared case table.

Signatures, group keys, state keys and their creation rules, loading defaults, the
behaviours torch users rely on (Rprop's step sizes fixed at creation, RMSprop's
optional buffers), complex parameters as real pairs, and the docstring examples.
Where torch is importable the same scenario runs through torch.optim and the
observable results are compared.
"""

import copy
import doctest
import inspect

import numpy as np
import pytest

import arrayopt
import arrayopt.optimizers.adadelta
import arrayopt.optimizers.adamax
import arrayopt.optimizers.rmsprop
import arrayopt.optimizers.rprop

NAMES = ["Adadelta", "Adamax", "RMSprop", "Rprop"]

# A configuration per optimizer that creates every optional state entry.
FULL = {
    "Adadelta": {"lr": 0.5, "weight_decay": 0.1},
    "Adamax": {"lr": 0.05, "weight_decay": 0.1},
    "RMSprop": {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1},
    "Rprop": {"lr": 0.05},
}


def draws(seed, shapes, steps, dtype="float64"):
    rng = np.random.default_rng(seed)

    def draw(shape):
        x = rng.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            x = x + 1j * rng.standard_normal(shape)
        return x.astype(dtype)

    return [draw(s) for s in shapes], [[draw(s) for s in shapes] for _ in range(steps)]


def run_pair(torch, name, kwargs, start, grads, between=None):
    """Run arrayopt and torch side by side; ``between(k, opt)`` may change either optimizer."""
    ours_p = [arrayopt.Parameter(a.copy()) for a in start]
    theirs_p = [torch.nn.Parameter(torch.tensor(a.copy())) for a in start]
    ours = getattr(arrayopt, name)(ours_p, **kwargs)
    theirs = getattr(torch.optim, name)(theirs_p, **kwargs)
    for k, step_grads in enumerate(grads):
        for p, tp, g in zip(ours_p, theirs_p, step_grads, strict=True):
            p.grad = None if g is None else g.copy()
            tp.grad = None if g is None else torch.tensor(g.copy())
        if between is not None:
            between(k, ours)
            between(k, theirs)
        ours.step()
        theirs.step()
    return ours, theirs, ours_p, theirs_p


def assert_close(ours_p, theirs_p):
    for p, tp in zip(ours_p, theirs_p, strict=True):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-13, atol=1e-15)


# -- signatures, groups and state ---------------------------------------------------------


@pytest.mark.ref
@pytest.mark.parametrize("name", NAMES)
def test_signature_is_torchs(name, torch):
    ours = inspect.signature(getattr(arrayopt, name)).parameters
    theirs = inspect.signature(getattr(torch.optim, name)).parameters
    assert list(ours) == list(theirs)
    for key, parameter in theirs.items():
        assert ours[key].kind == parameter.kind, key
        assert ours[key].default == parameter.default, key


@pytest.mark.ref
@pytest.mark.parametrize("name", NAMES)
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


@pytest.mark.parametrize("name", NAMES)
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
@pytest.mark.parametrize("name", NAMES)
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


# -- RMSprop's optional buffers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "key"), [("momentum", 0.9, "momentum_buffer"), ("centered", True, "grad_avg")]
)
def test_rmsprop_option_turned_on_later_raises_keyerror_before_any_change(option, value, key):
    ps = [arrayopt.Parameter(np.ones(2)), arrayopt.Parameter(np.ones(3))]
    opt = arrayopt.RMSprop(ps)
    for p in ps:
        p.grad = np.full(p.shape, 0.5)
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    data = [p.data.copy() for p in ps]
    opt.param_groups[0][option] = value
    with pytest.raises(KeyError, match=key):
        opt.step()
    for p, d in zip(ps, data, strict=True):
        np.testing.assert_array_equal(p.data, d)
    after = opt.state_dict()
    for index, entries in before["state"].items():
        assert after["state"][index]["step"] == entries["step"]
        np.testing.assert_array_equal(after["state"][index]["square_avg"], entries["square_avg"])


@pytest.mark.ref
@pytest.mark.parametrize(("option", "value"), [("momentum", 0.9), ("centered", True)])
def test_rmsprop_option_turned_on_later_fails_in_torch_too(option, value, torch):
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.RMSprop([p])
    p.grad = torch.full((2,), 0.5)
    opt.step()
    opt.param_groups[0][option] = value
    with pytest.raises(KeyError):
        opt.step()


@pytest.mark.ref
def test_rmsprop_options_turned_off_later_keep_their_unused_buffers_like_torch(torch):
    start, grads = draws(2, [(3,), (2, 2)], 6)

    def switch_off(k, opt):
        if k == 3:
            opt.param_groups[0]["momentum"] = 0
            opt.param_groups[0]["centered"] = False

    ours, theirs, ours_p, theirs_p = run_pair(
        torch, "RMSprop", {"momentum": 0.9, "centered": True}, start, grads, switch_off
    )
    assert_close(ours_p, theirs_p)
    assert list(ours.state_dict()["state"][0]) == list(theirs.state_dict()["state"][0])


# -- Rprop ----------------------------------------------------------------------------------


@pytest.mark.ref
def test_rprop_step_sizes_come_from_lr_once(torch):
    start, grads = draws(3, [(4,), (3,)], 6)

    def change_lr(k, opt):
        if k == 2:
            for group in opt.param_groups:
                group["lr"] = 10.0  # no effect: the step sizes live in the state

    ours, _, ours_p, theirs_p = run_pair(torch, "Rprop", {"lr": 0.05}, start, grads, change_lr)
    assert_close(ours_p, theirs_p)
    assert np.all(ours.state[ours_p[0]]["step_size"] <= 0.05 * 1.2**6)


def test_rprop_sign_flip_shrinks_the_step_and_skips_the_entry():
    p = arrayopt.Parameter(np.array([1.0, 1.0, 1.0]))
    opt = arrayopt.Rprop([p], lr=0.25, etas=(0.5, 1.5), step_sizes=(1 / 64, 4.0))
    p.grad = np.array([1.0, 1.0, 0.0])
    opt.step()  # no history: the step sizes stay lr; a zero gradient does not move
    np.testing.assert_array_equal(p.data, [0.75, 0.75, 1.0])
    state = opt.state[p]
    p.grad = np.array([2.0, -3.0, 1.0])
    opt.step()  # same sign: grow; flipped: shrink, no move, prev = 0; no history: keep
    np.testing.assert_array_equal(state["step_size"], [0.375, 0.125, 0.25])
    np.testing.assert_array_equal(p.data, [0.375, 0.75, 0.75])
    np.testing.assert_array_equal(state["prev"], [2.0, 0.0, 1.0])
    assert not np.signbit(state["prev"][1])
    p.grad = np.array([1.0, -1.0, 1.0])
    opt.step()  # after a flip the entry has no history: it moves by its unchanged step size
    np.testing.assert_array_equal(state["step_size"], [0.5625, 0.125, 0.375])
    np.testing.assert_array_equal(p.data, [-0.1875, 0.875, 0.375])
    np.testing.assert_array_equal(state["prev"], [1.0, -1.0, 1.0])


def test_rprop_step_sizes_are_clamped():
    p = arrayopt.Parameter(np.array([0.0, 0.0]))
    opt = arrayopt.Rprop([p], lr=0.1, etas=(0.1, 10.0), step_sizes=(0.05, 0.5))
    for g in ([1.0, 1.0], [1.0, -1.0], [1.0, 1.0], [1.0, -1.0]):
        p.grad = np.array(g)
        opt.step()
    np.testing.assert_array_equal(opt.state[p]["step_size"], [0.5, 0.05])


@pytest.mark.ref
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rprop_nan_and_zero_gradients_like_torch(torch, dtype):
    start = [np.array([1.0, -1.0, 2.0, 0.5, 0.0], dtype=dtype)]
    grads = [
        [np.array([1.0, np.nan, 0.0, -0.0, 1.0], dtype=dtype)],
        [np.array([1.0, 1.0, 1.0, -2.0, np.nan], dtype=dtype)],
        [np.array([-1.0, 1.0, 0.0, 1.0, 1.0], dtype=dtype)],
    ]
    ours, theirs, ours_p, theirs_p = run_pair(torch, "Rprop", {"lr": 0.1}, start, grads)
    np.testing.assert_array_equal(ours_p[0].data, theirs_p[0].detach().numpy())
    for key in ("prev", "step_size"):
        np.testing.assert_array_equal(ours.state[ours_p[0]][key], theirs.state[theirs_p[0]][key].numpy())


def test_rprop_complex_step_sizes_start_at_lr_in_both_parts():
    p = arrayopt.Parameter(np.zeros(2, dtype=np.complex64))
    opt = arrayopt.Rprop([p], lr=np.array(0.25))
    p.grad = np.array([1 + 1j, -1j], dtype=np.complex64)
    opt.step()
    np.testing.assert_array_equal(opt.state[p]["step_size"], np.full(2, 0.25 + 0.25j, dtype=np.complex64))
    np.testing.assert_array_equal(p.data, np.array([-0.25 - 0.25j, 0.25j], dtype=np.complex64))


# -- Adamax ---------------------------------------------------------------------------------


def test_adamax_eps_is_inside_the_maximum():
    p = arrayopt.Parameter(np.array([1.0, 1.0]))
    opt = arrayopt.Adamax([p], lr=0.1, betas=(0.5, 0.5), eps=0.25)
    p.grad = np.array([0.0, 1.0])
    opt.step()
    np.testing.assert_array_equal(opt.state[p]["exp_inf"], [0.25, 1.25])
    p.grad = np.array([0.0, 0.0])
    opt.step()  # max(0.5 u, 0 + eps): the old norm decays until eps takes over
    np.testing.assert_array_equal(opt.state[p]["exp_inf"], [0.25, 0.625])


# -- complex parameters are pairs of reals ----------------------------------------------------


CONFIGS = [
    ("Adadelta", {"lr": 0.5, "weight_decay": 0.1, "maximize": True}),
    ("Adamax", {"lr": 0.05, "weight_decay": 0.1}),
    ("Adamax", {"lr": 0.05, "betas": (0.2, 0.9)}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.01, "alpha": 0.3, "centered": True}),
    ("Rprop", {"lr": 0.05, "maximize": True}),
]


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=lambda x: str(x))
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_a_complex_parameter_steps_like_its_real_view(name, kwargs, dtype):
    start, grads = draws(4, [(3, 2)], 5, dtype)
    z = arrayopt.Parameter(start[0].copy())
    real_dtype = np.zeros(0, dtype).real.dtype
    r = arrayopt.Parameter(start[0].copy().view(real_dtype).reshape(3, 2, 2))
    opts = [getattr(arrayopt, name)([q], **kwargs) for q in (z, r)]
    for (g,) in grads:
        z.grad = g.copy()
        r.grad = g.copy().view(real_dtype).reshape(3, 2, 2)
        for opt in opts:
            opt.step()
    np.testing.assert_array_equal(z.data.view(real_dtype).reshape(3, 2, 2), r.data)
    for key, value in opts[0].state[z].items():
        if key != "step":
            np.testing.assert_array_equal(value.view(real_dtype).reshape(3, 2, 2), opts[1].state[r][key])


# -- documentation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        arrayopt.optimizers.adadelta,
        arrayopt.optimizers.adamax,
        arrayopt.optimizers.rmsprop,
        arrayopt.optimizers.rprop,
    ],
    ids=lambda m: m.__name__,
)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0

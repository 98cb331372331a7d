"""Bad input gets a clear error, and the opt-in non-finite guard.

Covered here: hyper-parameters given per group (constructor dicts, add_param_group),
gradients that do not fit their parameter, parameters on several devices, closures
returning odd values, and ``skip_nonfinite``. Constructor arguments are in
test_constructor_errors.py, state dicts in test_transactional_load.py, checkpoint files in
test_checkpoint.py.
"""

import copy
import math

import numpy as np
import pytest

import arrayopt
from arrayopt import Parameter
from arrayopt._validate import loss_value
from arrayopt.backends import get_backend


def to_numpy(a):
    return np.asarray(get_backend(a).to_numpy(a))


# -- hyper-parameters in param groups -------------------------------------------------

BAD_GROUPS = [
    ("SGD", {"lr": -1.0}, ValueError, r"^param group 0: Invalid learning rate: -1.0$"),
    ("SGD", {"lr": math.nan}, ValueError, r"^param group 0: 'lr' is nan, which is not finite$"),
    ("SGD", {"lr": math.inf}, ValueError, r"^param group 0: 'lr' is inf, which is not finite$"),
    ("SGD", {"lr": "fast"}, TypeError, r"^param group 0: lr must be a real number, got 'fast'$"),
    ("SGD", {"lr": None}, TypeError, r"^param group 0: lr must be a real number, got None$"),
    ("SGD", {"lr": np.array([0.1, 0.2])}, ValueError, r"^param group 0: Tensor lr must be 1-element$"),
    ("SGD", {"momentum": -0.5}, ValueError, r"^param group 0: Invalid momentum value: -0.5$"),
    ("SGD", {"nesterov": True}, ValueError, r"^param group 0: Nesterov momentum requires a momentum and zero"),
    ("SGD", {"dampening": math.inf, "momentum": 0.9}, ValueError, r"'dampening' is inf, which is not finite"),
    ("Adam", {"betas": (0.9, 1.0)}, ValueError, r"^param group 0: Invalid beta parameter at index 1: 1.0$"),
    ("Adam", {"betas": (0.9, math.nan)}, ValueError, r"^param group 0: 'betas' is \(0.9, nan\), which is not"),
    ("Adam", {"betas": (0.9,)}, ValueError, r"^param group 0: betas must be a pair"),
    ("Adam", {"eps": -1e-8}, ValueError, r"^param group 0: Invalid epsilon value: -1e-08$"),
    ("Adam", {"weight_decay": np.array(math.nan)}, ValueError, r"'weight_decay' is array\(nan\), which is not"),
    ("AdamW", {"lr": -0.5}, ValueError, r"^param group 0: Invalid learning rate: -0.5$"),
    ("AdamW", {"initial_lr": math.inf}, ValueError, r"^param group 0: 'initial_lr' is inf, which is not finite$"),
]


def group_ids(row):
    return f"{row[0]}-{'-'.join(f'{k}={v}' for k, v in row[1].items())}"


@pytest.mark.parametrize("row", BAD_GROUPS, ids=group_ids)
def test_bad_hyper_parameters_in_a_constructor_group(row):
    # torch accepts all of these (it checks only the constructor's own arguments)
    name, options, error, pattern = row
    p = Parameter(np.ones(3))
    group = {"params": [p], **options}
    before = dict(group)
    with pytest.raises(error, match=pattern):
        getattr(arrayopt, name)([group])
    assert group.keys() == before.keys() and all(group[k] is before[k] for k in group)


@pytest.mark.parametrize("row", BAD_GROUPS, ids=group_ids)
def test_bad_hyper_parameters_in_add_param_group(row):
    name, options, error, pattern = row
    opt = getattr(arrayopt, name)([Parameter(np.ones(2))], lr=0.1)
    groups = list(opt.param_groups)
    group = {"params": [Parameter(np.ones(3))], **options}
    with pytest.raises(error, match=pattern.replace("param group 0", "param group 1")):
        opt.add_param_group(group)
    assert opt.param_groups == groups and set(group) == {"params", *options}  # the dict was not completed


def test_good_group_values_and_subclasses_with_other_constructors_still_work():
    p, q = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = arrayopt.SGD([{"params": [p], "lr": 0.0}, {"params": [q], "momentum": 0.9, "nesterov": True}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.1]

    class Custom(arrayopt.Adam):
        def __init__(self, params, scale):
            super().__init__(params, lr=0.1 * scale)

    custom = Custom([p], 2.0)
    custom.add_param_group({"params": [q], "lr": 0.5})  # its constructor cannot take the group: not re-checked
    assert custom.param_groups[1]["lr"] == 0.5


# -- gradients ------------------------------------------------------------------------

BAD_GRADS = [
    ("wrong shape", lambda xp: xp.zeros(4), ValueError, r"Parameter 'w': gradient has shape \(4,\), but the data has"),
    ("wrong rank", lambda xp: xp.zeros((3, 1)), ValueError, r"gradient has shape \(3, 1\)"),
    ("wrong dtype", lambda xp: xp.zeros(3, dtype=xp.float32), ValueError, r"gradient has dtype .*float32"),
    ("complex for real", lambda xp: xp.zeros(3, dtype=xp.complex128), ValueError, r"gradient has dtype .*complex128"),
    (
        "a list",
        lambda xp: [0.0, 0.0, 0.0],
        TypeError,
        r"Parameter 'w': gradient must be an array, a SparseGrad or None, got list",
    ),
    ("a float", lambda xp: 0.5, TypeError, r"gradient must be an array, a SparseGrad or None, got float"),
    ("a string", lambda xp: "0", TypeError, r"gradient must be an array, a SparseGrad or None, got str"),
]


@pytest.mark.parametrize("case", BAD_GRADS, ids=[c[0] for c in BAD_GRADS])
def test_a_grad_that_does_not_fit_is_refused_on_assignment(case, xp):
    _, make, error, pattern = case
    p = Parameter(xp.asarray([1.0, 2.0, 3.0]), name="w")
    good = xp.asarray([0.5, 0.5, 0.5])
    p.grad = good
    with pytest.raises(error, match=pattern):
        p.grad = make(xp)
    assert p.grad is good
    opt = arrayopt.SGD([p], lr=1.0)
    opt.step()
    np.testing.assert_array_equal(to_numpy(p.data), [0.5, 1.5, 2.5])


def test_a_grad_from_another_library_or_device_is_refused():
    strict = pytest.importorskip("array_api_strict")
    p = Parameter(strict.asarray([1.0, 2.0]), name="w")
    with pytest.raises(ValueError, match=r"'w': gradient is a numpy array, but the data is a array_api_strict array"):
        p.grad = np.zeros(2)
    with pytest.raises(ValueError, match=r"'w': gradient has device .*device1.*, but the data has device .*CPU_DEVICE"):
        p.grad = strict.zeros(2, dtype=strict.float64, device=strict.Device("device1"))
    q = Parameter(np.ones(2), name="q")
    with pytest.raises(ValueError, match=r"'q': gradient is a array_api_strict array, but the data is a numpy array"):
        q.grad = strict.zeros(2, dtype=strict.float64)


def test_parameters_on_several_devices_in_one_optimizer_are_supported():
    # Each parameter is updated on its own device (with state made there), so mixing is fine
    # for elementwise optimizers; only a parameter's own data and gradient must share one.
    strict = pytest.importorskip("array_api_strict")
    devices = [strict.Device("CPU_DEVICE"), strict.Device("device1"), strict.Device("device2")]
    start, grad = np.array([1.0, -2.0, 0.5]), np.array([0.3, -0.1, 0.2])
    mixed = [Parameter(strict.asarray(start.copy(), device=d)) for d in devices]
    alone = Parameter(start.copy())
    opt = arrayopt.Adam(mixed, lr=0.1, amsgrad=True)
    ref = arrayopt.Adam([alone], lr=0.1, amsgrad=True)
    for _ in range(3):
        for p, d in zip(mixed, devices, strict=True):
            p.grad = strict.asarray(grad, device=d)
        alone.grad = grad.copy()
        opt.step()
        ref.step()
    for p, d in zip(mixed, devices, strict=True):
        assert p.data.device == d and opt.state[p]["exp_avg"].device == d
        np.testing.assert_array_equal(to_numpy(p.data), alone.data)


# -- closures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [math.nan, np.array([1.0, 2.0]), "loss", None, np.array(math.inf)],
    ids=["nan", "array", "str", "none", "inf"],
)
def test_elementwise_optimizers_return_the_closure_value_unchanged(value):
    # As torch: Adam and SGD do not read the loss, so they neither check nor convert it.
    p = Parameter(np.ones(2))
    p.grad = np.ones(2)
    for opt in (arrayopt.SGD([p], lr=0.1), arrayopt.Adam([p])):
        assert opt.step(lambda: value) is value


LOSSES = [
    (None, TypeError, r"^the closure returned None; the closure must return the loss"),
    (True, TypeError, r"^the closure returned True;"),
    ("0.5", TypeError, r"^the closure returned '0.5';"),
    (1 + 2j, TypeError, r"^the closure returned \(1\+2j\);"),
    (object(), TypeError, r"^the closure returned a value of type object;"),
    (np.ones(3), ValueError, r"^the closure returned an array of shape \(3,\);"),
    (np.ones((2, 2)), ValueError, r"^the closure returned an array of shape \(2, 2\);"),
    (np.zeros(0), ValueError, r"^the closure returned an array of shape \(0,\);"),
    (np.array([1 + 1j]), TypeError, r"^the closure returned an array of dtype complex128;"),
    (np.array(["a"]), TypeError, r"^the closure returned an array of dtype <U1;"),
    (math.nan, ValueError, r"^the closure returned a non-finite loss \(nan\)$"),
    (-math.inf, ValueError, r"^the closure returned a non-finite loss \(-inf\)$"),
    (np.array([math.inf]), ValueError, r"^the closure returned a non-finite loss \(inf\)$"),
]


@pytest.mark.parametrize("case", LOSSES, ids=[repr(c[0])[:20] for c in LOSSES])
def test_loss_value_refuses_what_is_not_a_finite_number(case):
    value, error, pattern = case
    with pytest.raises(error, match=pattern):
        loss_value(value)


def test_loss_value_reads_numbers_and_one_element_arrays(xp):
    assert loss_value(2) == 2.0 and loss_value(np.float32(0.5)) == 0.5
    assert loss_value(xp.asarray([3.5])) == 3.5 and loss_value(xp.asarray(-1.0)) == -1.0


# -- the non-finite guard -------------------------------------------------------------

GUARDED = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    ("Adam", {"lr": 0.05, "amsgrad": True}),
    ("AdamW", {"lr": 0.05}),
]


def build(name, kwargs, xp, dtype="float64"):
    shapes = [(3, 2), (4,), ()]
    rng = np.random.default_rng(0)
    ps = [Parameter(xp.asarray(rng.standard_normal(s).astype(dtype))) for s in shapes]
    return getattr(arrayopt, name)([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.01}], **kwargs), ps


def grads(ps, xp, k, dtype="float64"):
    rng = np.random.default_rng(10 + k)
    return [xp.asarray(rng.standard_normal(p.shape).astype(dtype)) for p in ps]


def frozen(opt, ps):
    """Everything a step could change, copied to NumPy."""
    sd = opt.state_dict()
    state = {
        i: {k: (to_numpy(v).copy() if hasattr(v, "shape") else v) for k, v in s.items()} for i, s in sd["state"].items()
    }
    return [to_numpy(p.data).copy() for p in ps], state, copy.deepcopy(sd["param_groups"])


def assert_frozen_equal(a, b):
    (data_a, state_a, groups_a), (data_b, state_b, groups_b) = a, b
    assert all(np.array_equal(x, y) for x, y in zip(data_a, data_b, strict=True))
    assert list(state_a) == list(state_b) and groups_a == groups_b
    for i in state_a:
        assert list(state_a[i]) == list(state_b[i])
        for k in state_a[i]:
            assert np.array_equal(state_a[i][k], state_b[i][k]), (i, k)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name, kwargs", GUARDED, ids=[g[0] for g in GUARDED])
def test_a_nonfinite_step_is_skipped_counted_and_the_next_one_is_normal(name, kwargs, bad, xp):
    opt, ps = build(name, kwargs, xp)
    twin, twin_ps = build(name, kwargs, xp)  # never sees the bad step
    opt.skip_nonfinite = True
    posts = []
    opt.register_step_post_hook(lambda *a: posts.append(1))
    for k in range(2):
        for model, params in ((opt, ps), (twin, twin_ps)):
            for p, g in zip(params, grads(params, xp, k), strict=True):
                p.grad = g
            model.step()
    assert opt.skipped_steps == 0 and len(posts) == 2
    before = frozen(opt, ps)
    poisoned = grads(ps, xp, 99)
    poisoned[1] = xp.asarray(np.where(np.arange(4) == 2, bad, to_numpy(poisoned[1])))
    for p, g in zip(ps, poisoned, strict=True):
        p.grad = g
    assert opt.step() is None
    assert opt.skipped_steps == 1 and len(posts) == 2  # skipped: no post-hooks
    assert_frozen_equal(frozen(opt, ps), before)  # parameters, state and step counters
    for k in range(2, 4):
        for model, params in ((opt, ps), (twin, twin_ps)):
            for p, g in zip(params, grads(params, xp, k), strict=True):
                p.grad = g
            model.step()
    assert_frozen_equal(frozen(opt, ps), frozen(twin, twin_ps))
    assert opt.skipped_steps == 1 and twin.skipped_steps == 0


def test_a_complex_grad_with_a_nan_imaginary_part_is_caught(xp):
    p = Parameter(xp.asarray(np.array([1 + 1j, 2 - 1j])))
    opt = arrayopt.Adam([p], lr=0.1)
    opt.skip_nonfinite = True
    p.grad = xp.asarray(np.array([0.5 + 0.5j, complex(1.0, math.nan)]))
    opt.step()
    assert opt.skipped_steps == 1 and p not in opt.state
    np.testing.assert_array_equal(to_numpy(p.data), [1 + 1j, 2 - 1j])


def test_without_the_guard_nonfinite_grads_flow_through_like_torch():
    p = Parameter(np.ones(2))
    opt = arrayopt.SGD([p], lr=0.1)
    p.grad = np.array([math.nan, 0.0])
    opt.step()
    assert math.isnan(p.data[0]) and p.data[1] == 1.0 and opt.skipped_steps == 0


def test_the_guard_with_a_closure_calls_it_once_and_returns_its_value():
    p, q = Parameter(np.ones(2)), Parameter(np.ones(3))
    opt = arrayopt.Adam([p, q], lr=0.1)
    opt.skip_nonfinite = True
    calls = []

    def closure(bad):
        def run():
            calls.append(1)
            p.grad = np.array([math.nan if bad else 0.5, 0.5])
            q.grad = None  # a parameter without a gradient is not looked at
            return 1.25

        return run

    assert opt.step(closure(bad=True)) == 1.25
    assert len(calls) == 1 and opt.skipped_steps == 1 and not opt.state
    assert opt.step(closure=closure(bad=False)) == 1.25
    assert len(calls) == 2 and opt.skipped_steps == 1 and opt.state[p]["step"] == 1.0


def test_the_guard_replays_the_first_closure_call_only():
    class Evaluates3Times(arrayopt.SGD):
        """Like LBFGS: the step calls the closure several times."""

        def step(self, closure=None):
            values = [closure() for _ in range(3)]
            super().step()
            return values

    p = Parameter(np.ones(2))
    opt = Evaluates3Times([p], lr=0.1)
    opt.skip_nonfinite = True
    count = [0]

    def closure():
        count[0] += 1
        p.grad = np.ones(2)
        return count[0]

    assert opt.step(closure) == [1, 2, 3] and count[0] == 3


def test_the_guard_checks_every_device_and_library():
    strict = pytest.importorskip("array_api_strict")
    devices = [strict.Device("CPU_DEVICE"), strict.Device("device1")]
    ps = [Parameter(strict.asarray([1.0, 2.0], device=d)) for d in devices] + [Parameter(np.ones(2))]
    opt = arrayopt.SGD(ps, lr=0.1)
    opt.skip_nonfinite = True
    for bad in range(3):
        for i, p in enumerate(ps):
            value = [0.5, math.inf if i == bad else 0.5]
            p.grad = np.array(value) if i == 2 else strict.asarray(value, device=devices[i])
        opt.step()
        assert opt.skipped_steps == bad + 1
    assert all(np.array_equal(to_numpy(p.data), [1.0, 2.0] if i < 2 else [1.0, 1.0]) for i, p in enumerate(ps))


def test_the_guard_is_not_saved_and_copies_start_with_it_off():
    p = Parameter(np.ones(2))
    opt = arrayopt.SGD([p])
    opt.skip_nonfinite = True
    assert "skip_nonfinite" not in opt.state_dict() and "skip_nonfinite" not in opt.state_dict()["param_groups"][0]
    assert copy.deepcopy(opt).skip_nonfinite is False


# -- what torch refuses at step time, refused before anything changes ----------------------

STEP_REFUSALS = [
    # fused=True: torch's check that every parameter is real floating point
    ("SGD", {"fused": True}, "complex", RuntimeError, r"^`fused=True` requires all the params to be floating point"),
    ("Adam", {"fused": True}, "complex", RuntimeError, r"^`fused=True` requires all the params to be floating point"),
    ("AdamW", {"fused": True}, "complex", RuntimeError, r"^`fused=True` requires all the params to be floating point"),
    # a string where a number belongs (float("0.1") would read it)
    ("SGD", {"momentum": 0.9}, "lr='0.1'", TypeError, r"must be a real number or a 1-element array, got '0.1'$"),
    ("Adam", {}, "lr='0.1'", TypeError, r"must be a real number or a 1-element array, got '0.1'$"),
]


def refused_step(lib, name, kwargs, what):
    """An optimizer stepped once, then given ``what`` (a complex parameter, or a string lr)."""
    if lib == "torch":
        import torch

        make, optim = (lambda a: torch.nn.Parameter(torch.tensor(a))), torch.optim
    else:
        make, optim = (lambda a: Parameter(np.array(a))), arrayopt
    real, other = make([1.0, -2.0]), make([0.5 + 1j, 2.0 - 1j] if what == "complex" else [0.5, 2.0])
    opt = getattr(optim, name)([real, other], lr=0.1, **kwargs)
    for p in (real, other):
        p.grad = p.detach().clone() if lib == "torch" else p.data.copy()
    if what != "complex":
        opt.step()
        opt.param_groups[0]["lr"] = "0.1"
    return opt, [real, other]


@pytest.mark.parametrize("row", STEP_REFUSALS, ids=lambda r: f"{r[0]}-{r[2]}")
def test_what_torch_refuses_at_step_is_refused_before_anything_changes(row):
    name, kwargs, what, error, pattern = row
    opt, params = refused_step("arrayopt", name, kwargs, what)
    data, state = [p.data.copy() for p in params], copy.deepcopy(opt.state_dict()["state"])
    with pytest.raises(error, match=pattern):
        opt.step()
    assert all(np.array_equal(p.data, d) for p, d in zip(params, data, strict=True))
    after = opt.state_dict()["state"]
    assert after.keys() == state.keys() and all(after[k].keys() == state[k].keys() for k in state)
    assert all(np.array_equal(after[k][key], state[k][key]) for k in state for key in state[k])


@pytest.mark.ref
@pytest.mark.parametrize("row", STEP_REFUSALS, ids=lambda r: f"{r[0]}-{r[2]}")
def test_what_torch_refuses_at_step_raises_torch_s_type(row, torch):
    name, kwargs, what, error, _ = row
    opt, _ = refused_step("torch", name, kwargs, what)
    with pytest.raises(error):
        opt.step()

"""Separate Parameters updated together (``arrayopt._bundles``): the numbers of the one-by-one loop."""

import numpy as np
import pytest
from special_values import assert_same_bits

import arrayopt
import arrayopt.backends.numpy as numpy_backend
from arrayopt import _bundles
from arrayopt.backends import get_backend
from arrayopt.backends.base import Bundle

import harness
from cases import by_dtype

BUNDLED = sorted(
    {case.optimizer for case, _ in by_dtype() if getattr(arrayopt, case.optimizer)._bundled},
)


def one_by_one(monkeypatch, name):
    monkeypatch.setattr(getattr(arrayopt, name), "_bundled", False)


@pytest.mark.parametrize("numba", [False, True], ids=["numpy", "numba"])
@pytest.mark.parametrize(
    ("case", "dtype"), [(c, d) for c, d in by_dtype(("float32", "complex64")) if c.optimizer in BUNDLED], ids=str
)
def test_bundled_updates_give_the_bits_of_one_by_one(case, dtype, numba, monkeypatch):
    """The harness's groups of separate Parameters (some without a gradient at some steps, a 0-d and an empty
    one, a state_dict round trip): parameters and state after every step, bundled against one by one."""
    if numba:
        pytest.importorskip("numba")
    monkeypatch.setattr(numpy_backend, "_numba", numba)
    inputs = harness.make_inputs(dtype)
    calls = []
    commit = _bundles.commit
    monkeypatch.setattr(_bundles, "commit", lambda *a: (calls.append(len(a[1])), commit(*a)))
    bundled = harness.run_arrayopt(case, np, inputs)
    assert calls  # some updates were bundled
    one_by_one(monkeypatch, case.optimizer)
    assert_same_bits(bundled, harness.run_arrayopt(case, np, inputs))


SITUATIONS = {
    # a parameter listed twice steps twice, one after the other (as in torch)
    "listed twice": lambda ps: [{"params": [ps[0], ps[1], ps[0], ps[2]]}],
    # two dtypes in one group: two bundles
    "mixed dtypes": lambda ps: [{"params": ps}],
    # two groups: their own hyper-parameters
    "two groups": lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.3}],
}


@pytest.mark.parametrize("situation", list(SITUATIONS))
@pytest.mark.parametrize(("name", "kwargs"), [("Adam", {"amsgrad": True}), ("SGD", {"momentum": 0.9, "lr": 0.1})])
def test_bundles_keep_what_the_loop_does(name, kwargs, situation, monkeypatch):
    if name == "SGD" and situation == "listed twice":
        # the loop itself reads an unset buffer there (the second occurrence's first step: SGD's
        # _operands makes an empty one while the first occurrence's is not stored yet)
        kwargs = {"lr": 0.1}
    rng = np.random.default_rng(4)
    shapes = [(3,), (2, 2), (), (5,)]
    dtypes = [np.float32, np.float64, np.float32, np.float64] if situation == "mixed dtypes" else [np.float64] * 4
    starts = [rng.standard_normal(s).astype(t) for s, t in zip(shapes, dtypes, strict=True)]
    grads = [[rng.standard_normal(s).astype(t) for s, t in zip(shapes, dtypes, strict=True)] for _ in range(4)]
    grads[1][2] = None  # a step without this gradient: its counter falls behind, it leaves the bundle

    def run():
        params = [arrayopt.Parameter(a.copy()) for a in starts]
        opt = getattr(arrayopt, name)(SITUATIONS[situation](params), **kwargs)
        for step_grads in grads:
            for p, g in zip(params, step_grads, strict=True):
                p.grad = None if g is None else g.copy()
            opt.step()
        return params, opt

    params, opt = run()
    one_by_one(monkeypatch, name)
    expected_params, expected_opt = run()
    for p, q in zip(params, expected_params, strict=True):
        assert p.data.tobytes() == q.data.tobytes()
    state, expected = opt.state_dict()["state"], expected_opt.state_dict()["state"]
    assert list(state) == list(expected)
    for index, entries in expected.items():
        assert list(state[index]) == list(entries)  # same keys, same order
        for key, value in entries.items():
            assert np.asarray(state[index][key]).tobytes() == np.asarray(value).tobytes(), (index, key)
    # every parameter has arrays of its own
    arrays = [id(v) for entries in opt.state.values() for v in entries.values() if isinstance(v, np.ndarray)]
    assert len(arrays) == len(set(arrays))


def test_state_the_buffer_cannot_share_is_stepped_alone(monkeypatch):
    """A state a user gave an int step (or any other value) is not bundled with the others."""
    rng = np.random.default_rng(5)
    starts = [rng.standard_normal(4) for _ in range(4)]
    results = []
    for bundled in (True, False):
        monkeypatch.setattr(arrayopt.Adam, "_bundled", bundled)
        params = [arrayopt.Parameter(a.copy()) for a in starts]
        opt = arrayopt.Adam(params, lr=0.1)
        for step in range(3):
            for p in params:
                p.grad = np.cos(p.data + step)
            opt.step()
            if step == 0:
                opt.state[params[1]]["step"] = 1  # an int: loaded from elsewhere
                opt.state[params[2]]["note"] = "mine"
        results.append([p.data.copy() for p in params])
    for x, y in zip(*results, strict=True):
        assert x.tobytes() == y.tobytes()


def test_many_parameters_take_one_kernel_call(monkeypatch):
    calls = []
    monkeypatch.setattr(numpy_backend, "_run_bundles", lambda run, *a: (calls.append(len(a[-1][0])), None)[1])
    params = [arrayopt.Parameter(np.ones(10)) for _ in range(50)]
    for p in params:
        p.grad = np.ones(10)
    arrayopt.Adam(params).step()
    assert calls == [50]


def test_a_kernel_runs_the_rule_on_each_member_in_order():
    def accumulate(xp, total, x, a):
        total += a * x

    total = np.zeros(3)
    members = Bundle([total, total, total])  # one array three times: each member sees the ones before
    get_backend(total).kernel(accumulate)(members, Bundle([np.ones(3), 2 * np.ones(3), 3 * np.ones(3)]), 0.5)
    np.testing.assert_array_equal(total, np.full(3, 3.0))


def test_an_update_that_must_run_in_order_is_never_bundled(monkeypatch):
    """A gradient that is its parameter (the rule then runs as written, InOrder) amid ordinary parameters:
    stepped alone, with the numbers of the one-by-one loop."""
    rng = np.random.default_rng(6)
    starts = [rng.standard_normal(5) for _ in range(5)]
    bundles = []
    commit = _bundles.commit
    monkeypatch.setattr(_bundles, "commit", lambda *a: (bundles.append([u[0] for u in a[1]]), commit(*a)))
    results, aliased = [], []
    for bundled in (True, False):
        monkeypatch.setattr(arrayopt.SGD, "_bundled", bundled)
        params = [arrayopt.Parameter(a.copy()) for a in starts]
        opt = arrayopt.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.1)
        for step in range(3):
            for i, p in enumerate(params):
                p.grad = p.data if i == 2 else np.sin(p.data + step)
            opt.step()
        results.append([p.data.copy() for p in params])
        aliased.append(params[2])
    assert bundles and all(all(p is not aliased[0] for p in members) for members in bundles)
    assert any(len(members) >= 2 for members in bundles)
    for x, y in zip(*results, strict=True):
        assert x.tobytes() == y.tobytes()


def _adam_like(n=4, dtype=np.float32):
    p, g, m, v = (np.full(n, x, dtype=dtype) for x in (1.0, 0.5, 0.0, 0.0))
    return [p, g, m, v, 0.0], {"step": 1.0, "exp_avg": m, "exp_avg_sq": v}


def _read_only(a):
    a.flags.writeable = False
    return a


# situation -> what it does to the second of three updates (operands, state)
CHECKS = {
    "plain": lambda ops, st: None,
    "gradient is the parameter": lambda ops, st: ops.__setitem__(1, ops[0]),
    "read-only parameter": lambda ops, st: _read_only(ops[0]),
    "read-only state array": lambda ops, st: _read_only(st["exp_avg"]),
    "read-only gradient": lambda ops, st: _read_only(ops[1]),
    "a state array that is a view": lambda ops, st: ops.__setitem__(
        2, st.__setitem__("exp_avg", np.zeros(8, ops[0].dtype)[::2]) or st["exp_avg"]
    ),
    "a parameter that is a view": lambda ops, st: ops.__setitem__(0, np.ones(8, ops[0].dtype)[:4]),
    "gradient of another shape": lambda ops, st: ops.__setitem__(1, np.ones(5, ops[0].dtype)),
    "gradient of another dtype": lambda ops, st: ops.__setitem__(1, ops[1].astype(np.float64)),
    "an int operand": lambda ops, st: ops.__setitem__(4, 0),
    "an odd state value": lambda ops, st: st.__setitem__("note", "mine"),
    "a state array not among the operands, read-only": lambda ops, st: st.__setitem__("extra", _read_only(np.ones(4))),
}


@pytest.mark.parametrize("situation", list(CHECKS))
def test_updates_checked_together_pass_only_what_each_passes_alone(situation):
    """``check_updates`` says True only where every update passes ``check_update`` and none must run in order
    (False sends them to those one-by-one checks, which raise or find the order)."""
    updates = [_adam_like() for _ in range(3)]
    CHECKS[situation](*updates[1])
    backend = get_backend(updates[0][0][0])
    together = backend.check_updates([ops for ops, _ in updates], [st for _, st in updates])
    alone = []
    for ops, st in updates:
        try:
            alone.append(backend.check_update(ops, st))
        except ValueError:
            alone.append("refused")
    if situation in ("plain", "read-only gradient"):
        assert together is True and alone == [False] * 3
    else:
        assert together is False
    if together:
        assert alone == [False] * 3


def test_a_step_holds_the_garbage_collector_back():
    """A step on thousands of separate Parameters runs no collection (it would traverse every object the process
    holds, for tuples that die at the end of the step anyway), and leaves the collector as it found it."""
    import gc

    params = [arrayopt.Parameter(np.ones(3)) for _ in range(3000)]
    for p in params:
        p.grad = np.ones(3)
    opt = arrayopt.Adam(params, lr=0.1)
    opt.step()
    collections = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        opt.step()
    finally:
        gc.callbacks.remove(count)
    assert collections == [] and gc.isenabled()
    gc.disable()
    try:
        opt.step()
        assert not gc.isenabled()
    finally:
        gc.enable()
    opt.state[params[5]]["exp_avg"].flags.writeable = False  # refused: the collector is back on all the same
    with pytest.raises(ValueError):
        opt.step()
    assert gc.isenabled()

"""Flat parameter storage (ParameterList, ParameterDict) and the optimizers' runs over it.

The central check: every case of the table gives bitwise the same parameters and state,
step by step, with flat storage as with one array per Parameter, across None grads, two
param groups that split a buffer, and state_dict round trips between the two layouts.
Then what makes flat storage worth having (one kernel call per buffer) and what it must
not do (move a user's arrays, change anything before an error is raised).
"""

import copy
import doctest
import pickle
import warnings
from collections import defaultdict
from collections.abc import MutableMapping

import numpy as np
import pytest

import arrayopt
import arrayopt._flat_runs
import arrayopt.flat
from arrayopt import Parameter, ParameterDict, ParameterList
from arrayopt.backends import get_backend
from arrayopt.backends.base import Bundle

import harness
from cases import CASES, by_dtype

ONE_GROUP = [[0, 1, 2, 3, 4]]
FLAT_CASES = [case for case in CASES if getattr(arrayopt, case.optimizer)._flat_runs]


def to_numpy(a):
    return np.array(get_backend(a).to_numpy(a), copy=True)


def make_params(layout, xp, arrays):
    """(list of Parameters, the ParameterList or None) holding copies of ``arrays``."""
    names = [f"p{i}" for i in range(len(arrays))]
    if layout == "flat":
        plist = ParameterList([xp.asarray(a) for a in arrays], names=names)
        return list(plist), plist
    return [Parameter(xp.asarray(a.copy()), name=n) for a, n in zip(arrays, names, strict=True)], None


def run(case, xp, inputs, first="arrays", then="arrays", groups=harness.GROUPS, flat_grad=False):
    """The harness run (harness._run), with the Parameters built per array or flat.

    ``first`` is the layout until the state_dict round trip, ``then`` the one after.
    With ``flat_grad`` the gradients of a flat list are set in one assignment whenever
    every parameter has one.
    """
    cls = getattr(arrayopt, case.optimizer)
    kwargs = harness._hyper(case, lambda x: xp.asarray(x, dtype=xp.float64))
    lr2 = harness._group_lr(case, cls)

    def build(layout, arrays):
        params, plist = make_params(layout, xp, arrays)
        param_groups = [{"params": [params[i] for i in groups[0]]}]
        if len(groups) > 1:
            param_groups.append({"params": [params[i] for i in groups[1]], "lr": lr2})
        return params, plist, cls(param_groups, **kwargs)

    params, plist, opt = build(first, [inputs[f"input/param{i}"] for i in range(len(harness.SHAPES))])
    out = {}
    for step in range(harness.STEPS):
        grads = [None if i in case.without_grad else inputs.get(f"input/grad{step}_{i}") for i in range(len(params))]
        if flat_grad and plist is not None and all(g is not None for g in grads):
            plist.flat_grad = xp.asarray(np.concatenate([g.reshape(-1) for g in grads]))
        else:
            for p, g in zip(params, grads, strict=True):
                p.grad = None if g is None else xp.asarray(g.copy())
        opt.step()
        harness._record(out, step, [p.data for p in params], opt.state_dict()["state"], harness._to_numpy)
        if step == harness.ROUNDTRIP_AFTER:
            saved = copy.deepcopy(opt.state_dict())
            params, plist, opt = build(then, [to_numpy(p.data) for p in params])
            opt.load_state_dict(saved)
    return out


def assert_bitwise(ours, ref):
    """Same entries, in the same order (state_dict order too), with the same bits."""
    assert list(ours) == list(ref)
    for key, value in ref.items():
        a, b = np.asarray(ours[key]), np.asarray(value)
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert a.tobytes() == b.tobytes(), f"{key}: {a} != {b}"


# -- every case: flat equals per-array, bit for bit -------------------------------------


@pytest.mark.parametrize(("case", "dtype"), by_dtype(), ids=str)
def test_flat_storage_changes_no_bit(case, dtype, xp):
    inputs = harness.make_inputs(dtype)
    reference = run(case, xp, inputs)
    assert_bitwise(run(case, xp, inputs, "flat", "flat"), reference)
    if dtype in ("float64", "complex64"):
        assert_bitwise(reference, harness.run_arrayopt(case, xp, inputs))  # this runner is the harness's
        assert_bitwise(run(case, xp, inputs, "flat", "arrays"), reference)
        assert_bitwise(run(case, xp, inputs, "arrays", "flat"), reference)
    one_group = run(case, xp, inputs, groups=ONE_GROUP)
    assert_bitwise(run(case, xp, inputs, "flat", "flat", groups=ONE_GROUP, flat_grad=True), one_group)


@pytest.mark.parametrize(("case", "dtype"), by_dtype(("float32", "complex64")), ids=str)
def test_fresh_state_made_in_pieces_changes_no_bit(case, dtype, monkeypatch):
    """The held state of a fresh run is made a few elements at a time (the usual piece is 1 MiB)."""
    monkeypatch.setattr(arrayopt._flat_runs, "FRESH_PIECE_BYTES", 24)
    inputs = harness.make_inputs(dtype)
    assert_bitwise(run(case, np, inputs, "flat", "flat"), run(case, np, inputs))


def test_first_step_makes_no_parameter_sized_temporary(monkeypatch):
    """The first Adam step on one 4M-element float32 vector: its new state (2 x 16 MiB) and at most 8 MiB more
    (NumPy reports its allocations to tracemalloc); later steps allocate no parameter-sized array."""
    import tracemalloc

    import arrayopt.backends.numpy as numpy_backend

    monkeypatch.setattr(numpy_backend, "_numba", False)  # (a compiling numba allocates as it goes)
    n = 1 << 22
    (p,) = ParameterList([np.ones(n, dtype=np.float32)])
    p.grad = np.full(n, 0.5, dtype=np.float32)
    opt = arrayopt.Adam([p], lr=1e-3)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        opt.step()
        current, peak = tracemalloc.get_traced_memory()
        state = current - base
        opt.step()
        steady = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        opt.step()
        after, steady_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert state >= 2 * 4 * n  # exp_avg and exp_avg_sq
    assert peak - base - state <= 8 << 20
    # (a parameter-sized temporary would be 16 MiB; the test process itself allocates a little meanwhile)
    assert after - steady <= 1 << 20 and steady_peak - steady <= 1 << 20


# -- one kernel call per buffer ---------------------------------------------------------

SHAPES = [(3, 4), (5,), (), (2, 0), (7,), (1, 1, 2)] * 4  # 24 arrays


def count_kernel_calls(monkeypatch, xp):
    """A list that receives one entry per kernel launch on ``xp``'s backend."""
    backend = get_backend(xp.zeros(1))
    original = backend.kernel
    calls = []

    def kernel(rule, **flags):
        compiled = original(rule, **flags)

        def counted(*args):
            first = args[0][0] if type(args[0]) is Bundle else args[0]  # (separate Parameters, bundled)
            calls.append(tuple(first.shape))
            return compiled(*args)

        return counted

    monkeypatch.setattr(backend, "kernel", kernel)
    return calls


def mixed_arrays(seed=0):
    """float64 and float32 arrays, interleaved: two buffers whose members alternate in the list."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype("float64" if i % 2 else "float32") for i, s in enumerate(SHAPES)]


@pytest.mark.parametrize("case", FLAT_CASES, ids=str)
def test_one_kernel_call_per_buffer_and_splits_where_needed(case, xp, monkeypatch):
    cls = getattr(arrayopt, case.optimizer)
    kwargs = harness._hyper(case, lambda x: xp.asarray(x, dtype=xp.float64))
    arrays = mixed_arrays()
    plist = ParameterList([xp.asarray(a) for a in arrays])
    assert len(plist.buffers) == 2
    flat_opt = cls(plist, **kwargs)
    ref_params = [Parameter(xp.asarray(a.copy())) for a in arrays]
    ref_opt = cls(ref_params, **kwargs)
    rng = np.random.default_rng(1)
    calls = count_kernel_calls(monkeypatch, xp)
    for step in range(4):
        for i, (p, q) in enumerate(zip(plist, ref_params, strict=True)):
            g = xp.asarray(rng.standard_normal(SHAPES[i]).astype(arrays[i].dtype))
            p.grad = q.grad = None if (step, i) == (1, 4) else g
        calls.clear()
        flat_opt.step()
        launches = len(calls)
        ref_opt.step()
        if step == 0:
            assert launches == 2  # one per buffer
        elif step == 1:
            assert launches == 3  # the missing gradient splits the float32 buffer
        else:
            assert launches in (2, 4)  # and a per-parameter counter that lags splits it again
        for p, q in zip(plist, ref_params, strict=True):
            assert to_numpy(p.data).tobytes() == to_numpy(q.data).tobytes()
        assert list(flat_opt.state_dict()["state"]) == list(ref_opt.state_dict()["state"])
        for p, q in zip(plist, ref_params, strict=True):
            for key, value in ref_opt.state.get(q, {}).items():
                ours = flat_opt.state[p][key]
                if key == "step":
                    assert ours == value
                else:
                    assert to_numpy(ours).tobytes() == to_numpy(value).tobytes()


def test_adam_steps_that_differ_split_a_run_and_meet_again_after_a_reload(xp, monkeypatch):
    plist = ParameterList([xp.ones(3), xp.ones(2), xp.ones(4)])
    opt = arrayopt.Adam(plist, lr=0.1)
    calls = count_kernel_calls(monkeypatch, xp)
    plist.flat_grad = xp.ones(9)
    opt.step()
    plist[1].grad = None
    opt.step()
    assert [opt.state[p]["step"] for p in plist] == [2.0, 1.0, 2.0]
    calls.clear()
    plist.flat_grad = xp.ones(9)
    opt.step()
    assert calls == [(3,), (2,), (4,)]  # per-parameter steps differ: three calls
    saved = opt.state_dict()
    for entry in saved["state"].values():
        entry["step"] = 7.0
    opt.load_state_dict(saved)
    calls.clear()
    opt.step()
    assert calls == [(9,)]
    assert [opt.state[p]["step"] for p in plist] == [8.0, 8.0, 8.0]


def test_loaded_state_is_laid_out_flat_and_steps_in_one_call(xp, monkeypatch):
    arrays = [np.arange(3.0), np.arange(4.0).reshape(2, 2)]
    ref = [Parameter(xp.asarray(a)) for a in arrays]
    ref_opt = arrayopt.Adam(ref, lr=0.1, amsgrad=True)
    for p in ref:
        p.grad = xp.ones(p.shape, dtype=xp.float64)
    ref_opt.step()
    plist = ParameterList([p.data for p in ref])
    opt = arrayopt.Adam(plist, lr=0.1, amsgrad=True)
    opt.load_state_dict(ref_opt.state_dict())
    if xp is np:
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            a, b = (opt.state[p][key] for p in plist)
            assert a.base is not None and a.base is b.base  # views of one flat array
    calls = count_kernel_calls(monkeypatch, xp)
    plist.flat_grad = xp.ones(7, dtype=xp.float64)
    opt.step()
    assert calls == [(7,)]
    ref_opt.step()
    for p, q in zip(plist, ref, strict=True):
        assert to_numpy(p.data).tobytes() == to_numpy(q.data).tobytes()


def test_buffer_split_across_groups_and_added_later(xp, monkeypatch):
    arrays = [np.full(3, float(i)) for i in range(6)]
    plist = ParameterList([xp.asarray(a) for a in arrays])
    ref = [Parameter(xp.asarray(a.copy())) for a in arrays]
    opts = []
    for params in (list(plist), ref):
        opt = arrayopt.SGD(
            [{"params": params[:2]}, {"params": [params[4], params[5]], "lr": 0.5}], lr=0.1, momentum=0.9
        )
        opt.add_param_group({"params": params[2:4], "lr": 0.25})
        opts.append(opt)
    calls = count_kernel_calls(monkeypatch, xp)
    for step in range(3):
        plist.flat_grad = xp.asarray(np.arange(18.0) * (step + 1))
        for i, p in enumerate(ref):
            p.grad = plist[i].grad
        calls.clear()
        opts[0].step()
        assert sorted(calls) == [(6,), (6,), (6,)]  # one call per group
        opts[1].step()
    for p, q in zip(plist, ref, strict=True):
        assert to_numpy(p.data).tobytes() == to_numpy(q.data).tobytes()


def test_flat_and_ordinary_parameters_mixed_in_one_group(xp):
    arrays = [np.arange(4.0), np.arange(3.0) - 1, np.ones((2, 2))]
    plist = ParameterList([xp.asarray(arrays[0]), xp.asarray(arrays[2])])
    other = xp.asarray(arrays[1].copy())
    lone = Parameter(other)
    ours = [plist[0], lone, plist[1]]
    ref = [Parameter(xp.asarray(a.copy())) for a in arrays]
    opt, ref_opt = arrayopt.AdamW(ours, lr=0.1), arrayopt.AdamW(ref, lr=0.1)
    for step in range(3):
        for p, q in zip(ours, ref, strict=True):
            q.grad = xp.asarray(np.full(p.shape, 0.5 + step))
            p.grad = q.grad
        opt.step()
        ref_opt.step()
    assert lone.data is other  # an ordinary Parameter keeps its array
    assert lone.grad is ref[1].grad
    for p, q in zip(ours, ref, strict=True):
        assert to_numpy(p.data).tobytes() == to_numpy(q.data).tobytes()
    assert list(opt.state_dict()["state"]) == [0, 1, 2]


def test_duplicate_flat_parameter_is_stepped_twice(xp):
    plist = ParameterList([xp.asarray([1.0, -2.0]), xp.asarray([3.0])])
    ref = [Parameter(xp.asarray([1.0, -2.0])), Parameter(xp.asarray([3.0]))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = arrayopt.Adam([plist[0], plist[1], plist[0]], lr=0.1)
        ref_opt = arrayopt.Adam([ref[0], ref[1], ref[0]], lr=0.1)
    plist.flat_grad = xp.asarray([0.5, 0.25, 1.0])
    ref[0].grad, ref[1].grad = xp.asarray([0.5, 0.25]), xp.asarray([1.0])
    opt.step()
    ref_opt.step()
    assert opt.state[plist[0]]["step"] == ref_opt.state[ref[0]]["step"] == 2.0
    for p, q in zip(plist, ref, strict=True):
        assert to_numpy(p.data).tobytes() == to_numpy(q.data).tobytes()


# -- nothing re-homes a user's arrays --------------------------------------------------


def test_arrays_are_copied_in_and_parameters_stay_views():
    originals = [np.arange(6.0).reshape(2, 3), np.ones(4)]
    kept = [a.copy() for a in originals]
    plist = ParameterList(originals)
    datas = [p.data for p in plist]
    opt = arrayopt.Adam(plist, lr=0.1)
    for _ in range(3):
        plist.flat_grad = np.linspace(-1, 1, 10)
        opt.step()
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    opt.step()
    for a, k in zip(originals, kept, strict=True):
        np.testing.assert_array_equal(a, k)  # the given arrays are never written
    flat = plist.flat_data
    for p, d in zip(plist, datas, strict=True):
        assert p.data is d and np.shares_memory(p.data, flat)
        assert np.shares_memory(p.grad, plist.flat_grad)
    states = [opt.state[p] for p in plist]
    for key in ("exp_avg", "exp_avg_sq"):
        assert states[0][key].base is states[1][key].base is not None
        assert not np.shares_memory(states[0][key], flat)


def test_state_arrays_assigned_by_the_user_are_updated_in_place(xp):
    plist = ParameterList([xp.ones(3), xp.ones(2)])
    ref = [Parameter(xp.ones(3)), Parameter(xp.ones(2))]
    opt, ref_opt = arrayopt.Adam(plist, lr=0.1), arrayopt.Adam(ref, lr=0.1)
    for step in range(3):
        plist.flat_grad = xp.asarray([1.0, 2.0, 3.0, 4.0, 5.0]) * (step + 1)
        ref[0].grad, ref[1].grad = plist[0].grad, plist[1].grad
        opt.step()
        ref_opt.step()
        if step == 0:
            mine = xp.asarray(to_numpy(opt.state[plist[1]]["exp_avg"]))
            opt.state[plist[1]]["exp_avg"] = mine
    assert opt.state[plist[1]]["exp_avg"] is mine  # updated where it is, not moved
    assert to_numpy(mine).tobytes() == to_numpy(ref_opt.state[ref[1]]["exp_avg"]).tobytes()
    for p, q in zip(plist, ref, strict=True):
        assert to_numpy(p.data).tobytes() == to_numpy(q.data).tobytes()


# -- gradients -----------------------------------------------------------------------


def test_grad_assignment_copies_into_the_flat_gradient(xp):
    plist = ParameterList([xp.zeros((2, 2)), xp.zeros(3)], names=["w", "b"])
    w, b = plist
    assert w.grad is None and plist.flat_grad is None
    g = xp.ones((2, 2))
    w.grad = g
    assert w.grad is not g and to_numpy(w.grad).tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert w.grad is w.grad  # the same view every time
    g[...] = 5.0
    assert to_numpy(w.grad).tolist() == [[1.0, 1.0], [1.0, 1.0]]  # a copy was taken
    with pytest.raises(ValueError, match="1 of the 2 parameters of this buffer have no gradient"):
        plist.flat_grad  # noqa: B018
    b.grad = xp.asarray([2.0, 3.0, 4.0])
    assert to_numpy(plist.flat_grad).tolist() == [1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0]
    b.grad += xp.ones(3)  # in place through the view
    assert to_numpy(plist.flat_grad)[4:].tolist() == [3.0, 4.0, 5.0]
    w.grad = None
    assert w.grad is None and b.grad is not None
    plist.flat_grad = xp.asarray([9.0] * 7)
    assert to_numpy(w.grad).tolist() == [[9.0, 9.0], [9.0, 9.0]]
    plist.flat_grad = None
    assert w.grad is None and b.grad is None and plist.flat_grad is None


def test_a_none_grad_skips_the_parameter_without_state(xp):
    plist = ParameterList([xp.ones(2), xp.ones(2), xp.ones(2)])
    opt = arrayopt.Adam(plist, lr=0.1)
    plist[0].grad = xp.ones(2)
    plist[2].grad = xp.ones(2)
    opt.step()
    assert plist[1] not in opt.state and to_numpy(plist[1].data).tolist() == [1.0, 1.0]
    assert list(opt.state_dict()["state"]) == [0, 2]


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (lambda xp: xp.zeros(6), ValueError, ["shape (6,)", "7 elements", "expected shape (7,)"]),
        (lambda xp: xp.zeros((7, 1)), ValueError, ["shape (7, 1)"]),
        (lambda xp: xp.zeros(7, dtype=xp.float32), ValueError, ["dtype", "float32", "float64"]),
        (lambda xp: [0.0] * 7, TypeError, ["must be an array", "list"]),
    ],
)
@pytest.mark.parametrize("target", ["flat_grad", "flat_data"])
def test_bad_flat_vectors_are_refused_before_anything_changes(xp, bad, error, words, target):
    plist = ParameterList([xp.zeros((2, 2)), xp.zeros(3)])
    plist[1].grad = xp.ones(3)
    data_before, grad_before = to_numpy(plist.flat_data), to_numpy(plist[1].grad)
    with pytest.raises(error) as info:
        setattr(plist, target, bad(xp))
    for word in words:
        assert word in str(info.value)
    assert to_numpy(plist.flat_data).tobytes() == data_before.tobytes()
    assert plist[0].grad is None and to_numpy(plist[1].grad).tobytes() == grad_before.tobytes()


def test_a_flat_vector_of_another_library_is_refused():
    strict = pytest.importorskip("array_api_strict")
    plist = ParameterList([np.zeros(3)])
    with pytest.raises(ValueError, match="flat gradient is a array_api_strict array, but the parameters are numpy"):
        plist.flat_grad = strict.zeros(3, dtype=strict.float64)
    assert plist[0].grad is None


def test_a_per_parameter_grad_is_checked_like_an_ordinary_one(xp):
    plist = ParameterList([xp.zeros(3)], names=["w"])
    with pytest.raises(ValueError, match=r"Parameter 'w': gradient has shape \(4,\)"):
        plist[0].grad = xp.zeros(4)
    with pytest.raises(ValueError, match="Parameter 'w': gradient has dtype"):
        plist[0].grad = xp.zeros(3, dtype=xp.float32)
    with pytest.raises(TypeError, match="gradient must be an array, a SparseGrad or None"):
        plist[0].grad = [0.0, 0.0, 0.0]
    assert plist[0].grad is None


def test_zero_grad(xp):
    plist = ParameterList([xp.zeros(2), xp.zeros(3)])
    opt = arrayopt.SGD(plist, lr=0.1)
    plist.flat_grad = xp.ones(5)
    opt.zero_grad(set_to_none=False)
    assert to_numpy(plist.flat_grad).tolist() == [0.0] * 5
    plist[0].grad = xp.ones(2)
    plist.zero_grad(set_to_none=False)
    assert to_numpy(plist.flat_grad).tolist() == [0.0] * 5
    opt.zero_grad()
    assert all(p.grad is None for p in plist)
    plist[1].grad = xp.ones(3)
    plist.zero_grad()
    assert plist.flat_grad is None


# -- data --------------------------------------------------------------------------------


def test_flat_data_is_the_buffer_and_data_assignment_copies_into_it(xp):
    plist = ParameterList([xp.zeros((2, 2)), xp.zeros(3)], names=["w", "b"])
    w, b = plist
    view = w.data
    plist.flat_data[...] = xp.asarray([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    assert to_numpy(b.data).tolist() == [5.0, 6.0, 7.0]
    new = xp.asarray([[8.0, 8.0], [8.0, 8.0]])
    w.data = new
    assert w.data is view and w.data is not new
    assert to_numpy(plist.flat_data).tolist() == [8.0] * 4 + [5.0, 6.0, 7.0]
    plist.flat_data = xp.zeros(7)
    assert to_numpy(w.data).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match=r"Parameter 'b': new data has shape \(4,\)"):
        b.data = xp.zeros(4)
    with pytest.raises(TypeError, match="Parameter 'b': data must be an array"):
        b.data = [1.0, 2.0, 3.0]


def test_several_kinds_get_one_buffer_each():
    plist = ParameterList([np.zeros(2, np.float32), np.zeros(3), np.ones(1, np.float32)])
    assert [len(b) for b in plist.buffers] == [2, 1]
    assert [b.dtype for b in plist.buffers] == [np.float32, np.float64]
    with pytest.raises(ValueError, match=r"holds arrays of 2 kinds \(numpy float32, numpy float64\)"):
        plist.flat_data  # noqa: B018
    with pytest.raises(ValueError, match="buffers"):
        plist.flat_grad = np.zeros(3, np.float32)
    plist.buffers[0].grad = np.arange(3, dtype=np.float32)
    assert plist[2].grad.tolist() == [2.0] and plist[1].grad is None
    np.testing.assert_array_equal(plist.buffers[0].data, [0.0, 0.0, 1.0])


# -- containers ---------------------------------------------------------------------------


def test_parameter_list_sequence_and_names(xp):
    plist = ParameterList([xp.zeros(2), xp.ones(3)], names=["a", "b"])
    assert len(plist) == 2 and [p.name for p in plist] == ["a", "b"]
    assert plist[-1] is plist[1] and plist[0:1] == [plist[0]]
    assert plist[1] in plist and list(plist.parameters()) == list(plist)
    assert [n for n, _ in plist.named_parameters()] == ["a", "b"]
    assert [n for n, _ in ParameterList([xp.zeros(1)] * 2).named_parameters()] == ["0", "1"]
    with pytest.raises(TypeError):
        plist[0] = plist[1]
    opt = arrayopt.SGD(plist.named_parameters(), lr=0.1)
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["a", "b"]
    assert "ParameterList(" in repr(plist) and "storage=flat" in repr(plist)


def test_parameter_dict_is_a_mapping(xp):
    pdict = ParameterDict({"w": xp.ones((2, 2)), "b": xp.zeros(3)})
    assert list(pdict) == ["w", "b"] and len(pdict) == 2
    assert "w" in pdict and "x" not in pdict and 0 not in pdict
    assert pdict["b"].name == "b" and pdict["b"].shape == (3,)
    assert list(pdict.keys()) == ["w", "b"] and list(pdict.values()) == list(pdict.parameters())
    assert dict(pdict.items()) == {"w": pdict["w"], "b": pdict["b"]}
    assert pdict.get("x") is None
    with pytest.raises(KeyError):
        pdict["x"]
    assert to_numpy(pdict.flat_data).tolist() == [1.0] * 4 + [0.0] * 3
    opt = arrayopt.Adam(pdict.named_parameters(), lr=0.1)
    pdict.flat_grad = xp.ones(7)
    opt.step()
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["w", "b"]
    assert ParameterDict([("x", xp.ones(1))])["x"].name == "x"


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: ParameterList([np.zeros(2), [1.0]]), TypeError, "ParameterList: item 1 must be an array, got list"),
        (lambda: ParameterList([np.arange(3)]), TypeError, "ParameterList: item 0: only floating-point"),
        (lambda: ParameterList([np.zeros(2)], names=["a", "b"]), ValueError, "1 arrays but 2 names"),
        (lambda: ParameterList([np.zeros(2)], names=[3]), TypeError, "names must be str, got int"),
        (lambda: ParameterDict({1: np.zeros(2)}), TypeError, "keys must be str, got int"),
        (lambda: ParameterDict([("a", np.zeros(1)), ("a", np.ones(1))]), ValueError, r"duplicate keys \['a'\]"),
        (lambda: ParameterDict({"a": np.int32(1)}), TypeError, "key 'a'"),
    ],
)
def test_bad_construction(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_an_empty_list():
    plist = ParameterList([])
    assert len(plist) == 0 and plist.buffers == ()
    with pytest.raises(ValueError, match="holds no arrays"):
        plist.flat_data  # noqa: B018


# -- errors leave everything as it was ------------------------------------------------


def snapshot(opt, plist):
    return [to_numpy(p.data) for p in plist], copy.deepcopy(opt.state_dict())


def assert_unchanged(opt, plist, before):
    datas, state_dict = before
    for p, d in zip(plist, datas, strict=True):
        assert to_numpy(p.data).tobytes() == d.tobytes()
    now = opt.state_dict()["state"]
    assert now.keys() == state_dict["state"].keys()
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            assert np.asarray(to_numpy(now[index][key]) if key != "step" else now[index][key]).tobytes() == (
                np.asarray(to_numpy(value) if key != "step" else value).tobytes()
            )


def test_a_failing_step_changes_nothing(xp):
    plist = ParameterList([xp.ones(2), xp.ones(3), xp.ones(1)])
    opt = arrayopt.Adam([{"params": plist[:2]}, {"params": plist[2:]}], lr=0.1)
    plist.flat_grad = xp.ones(6)
    opt.step()
    before = snapshot(opt, plist)
    opt.param_groups[1]["amsgrad"] = True  # its state has no max_exp_avg_sq
    with pytest.raises(KeyError, match="max_exp_avg_sq"):
        opt.step()
    assert_unchanged(opt, plist, before)


def test_loaded_state_of_the_wrong_shape_is_refused_before_any_update(xp):
    plist = ParameterList([xp.ones(2), xp.ones(3)], names=["a", "b"])
    opt = arrayopt.Adam(plist, lr=0.1)
    plist.flat_grad = xp.ones(5)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][1]["exp_avg"] = np.zeros(5)
    before = snapshot(opt, plist)
    with pytest.raises(ValueError, match=r"state of parameter 1 .*'exp_avg' has shape \(5,\), but the parameter"):
        opt.load_state_dict(saved)  # refused at load, before anything changes
    assert_unchanged(opt, plist, before)
    # State of the wrong shape put in by hand is still refused before any update.
    opt.state[plist[1]]["exp_avg"] = xp.zeros(5)
    before = snapshot(opt, plist)
    with pytest.raises(ValueError, match=r"Parameter 'b': optimizer state has shape \(5,\)"):
        opt.step()
    assert_unchanged(opt, plist, before)


# -- copies --------------------------------------------------------------------------------


@pytest.mark.parametrize("clone", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))], ids=["deepcopy", "pickle"])
def test_copies_keep_flat_storage_and_step_alike(clone):
    plist = ParameterList([np.arange(3.0), np.ones((2, 2))])
    opt = arrayopt.Adam(plist, lr=0.1, amsgrad=True)
    plist.flat_grad = np.linspace(0, 1, 7)
    opt.step()
    plist[0].grad = None
    twin_plist, twin_opt = clone((plist, opt))
    assert twin_plist[0].grad is None and twin_plist[1].grad is not None
    for p in twin_plist:
        assert np.shares_memory(p.data, twin_plist.flat_data) and not np.shares_memory(p.data, plist.flat_data)
    assert twin_opt.param_groups[0]["params"] == list(twin_plist)
    for target in (plist, twin_plist):
        target.flat_grad = np.linspace(1, 2, 7)
    opt.step()
    twin_opt.step()
    for p, q in zip(plist, twin_plist, strict=True):
        np.testing.assert_array_equal(p.data, q.data)
        np.testing.assert_array_equal(opt.state[p]["max_exp_avg_sq"], twin_opt.state[q]["max_exp_avg_sq"])
        assert twin_opt.state[q]["exp_avg"].base is twin_opt.state[twin_plist[0]]["exp_avg"].base


def test_a_lone_flat_parameter_copies_with_its_buffer():
    plist = ParameterList([np.zeros(2), np.ones(3)])
    twin = copy.deepcopy(plist[1])
    np.testing.assert_array_equal(twin.data, [1.0, 1.0, 1.0])
    twin.grad = np.ones(3)
    assert plist[1].grad is None and twin._flat is not None


# -- libraries without writable views ----------------------------------------------------


def test_without_views_the_list_holds_separate_arrays(xp, monkeypatch):
    monkeypatch.setattr(arrayopt.flat, "slices_are_views", lambda backend, like: False)
    arrays = [np.arange(4.0).reshape(2, 2), np.ones(3)]
    plist = ParameterList([xp.asarray(a) for a in arrays])
    assert plist.buffers == () and all(p._flat is None for p in plist)
    assert to_numpy(plist.flat_data).tolist() == [0.0, 1.0, 2.0, 3.0, 1.0, 1.0, 1.0]
    ref = [Parameter(xp.asarray(a.copy())) for a in arrays]
    opt, ref_opt = arrayopt.Adam(plist, lr=0.1), arrayopt.Adam(ref, lr=0.1)
    for step in range(2):
        plist.flat_grad = xp.asarray(np.linspace(-1.0, 1.0, 7) + step)
        ref[0].grad, ref[1].grad = plist[0].grad, plist[1].grad
        opt.step()
        ref_opt.step()
    for p, q in zip(plist, ref, strict=True):
        assert to_numpy(p.data).tobytes() == to_numpy(q.data).tobytes()
    assert to_numpy(plist.flat_grad).tolist() == (np.linspace(-1.0, 1.0, 7) + 1).tolist()
    with pytest.raises(ValueError, match="expected shape"):
        plist.flat_data = xp.zeros(2)
    plist.flat_data = xp.zeros(7)
    assert to_numpy(plist[1].data).tolist() == [0.0, 0.0, 0.0]
    plist.flat_grad = None
    assert plist.flat_grad is None


def test_numpy_and_array_api_strict_have_writable_views():
    strict = pytest.importorskip("array_api_strict")
    for a in (np.zeros(2), strict.zeros(2, dtype=strict.float32)):
        assert arrayopt.flat.slices_are_views(get_backend(a), a)


def test_docstring_examples():
    result = doctest.testmod(arrayopt.flat, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# -- any subclass that follows the protocol ----------------------------------------------


def toy_update(xp, param, grad, avg, step_size, beta, *, clip):
    """avg <- beta avg + (1 - beta) g; param <- param - step_size avg (clipped to [-1, 1] with ``clip``)."""
    avg *= beta
    avg += (1 - beta) * grad
    param -= step_size * (xp.minimum(xp.maximum(avg, -1.0), 1.0) if clip else avg)


class Toy(arrayopt.optimizer.ElementwiseOptimizer):
    """An optimizer written only against the four-method protocol, with a per-parameter counter."""

    _flat_runs = True

    def __init__(self, params, lr=0.1, beta=0.5, clip=False, scale_array=False, late_array=False):
        defaults = {"lr": lr, "beta": beta, "clip": clip, "scale_array": scale_array, "late_array": late_array}
        super().__init__(params, defaults)

    def _hyper(self, group):
        return {"lr": group["lr"], "beta": group["beta"], "flags": {"clip": group["clip"]}, "late": group["late_array"]}

    def _init_state(self, p, group):
        xp = get_backend(p.data).xp
        state = {"step": 0.0, "avg": xp.full_like(p.data, 0.25)}
        if group["scale_array"]:  # a 0-d array: not the parameter's layout, so no flat runs
            state["scale"] = xp.asarray(1.0, dtype=p.data.dtype)
        return state

    def _operands(self, p, group, state):
        return (p.data, p.grad, state["avg"])

    def _update(self, backend, hyper, state, operands):
        state["step"] += 1
        if "scale" in state:
            state["scale"] *= 0.5
        if hyper["late"]:  # a new 0-d array each step: every parameter must get its own
            state["last_step_size"] = backend.xp.asarray(hyper["lr"] / state["step"])
        backend.kernel(toy_update, **hyper["flags"])(*operands, hyper["lr"] / state["step"], hyper["beta"])


class NoRuns(arrayopt.Adam):
    _flat_runs = False
    _bundled = False  # (and no bundles of separate Parameters either: one call per parameter)


@pytest.mark.parametrize(
    "make, launches",
    [
        (lambda ps: Toy(ps, clip=True), [1, 2, 3]),
        (lambda ps: Toy(ps, scale_array=True), [4, 3, 4]),  # falls back to one call per parameter
        (lambda ps: Toy(ps, late_array=True), [1, 3, 4]),
        (lambda ps: NoRuns(ps, lr=0.1), [4, 3, 4]),
    ],
    ids=["protocol-only", "odd-state", "odd-state-later", "opted-out"],
)
def test_a_subclass_following_the_protocol_runs_flat_or_falls_back(xp, monkeypatch, make, launches):
    arrays = [np.linspace(-1, 1, 6).reshape(2, 3), np.ones(2), np.zeros(()), np.arange(3.0)]
    plist = ParameterList([xp.asarray(a) for a in arrays])
    ref = [Parameter(xp.asarray(a.copy())) for a in arrays]
    opt, ref_opt = make(list(plist)), make(ref)
    calls = count_kernel_calls(monkeypatch, xp)
    for step, missing in enumerate([None, 1, None]):
        for i, (p, q) in enumerate(zip(plist, ref, strict=True)):
            q.grad = None if i == missing else xp.asarray(np.full(arrays[i].shape, 0.75 - 0.5 * step - 0.25 * i))
            p.grad = q.grad
        calls.clear()
        opt.step()
        assert len(calls) == launches[step]
        ref_opt.step()
    for p, q in zip(plist, ref, strict=True):
        assert to_numpy(p.data).tobytes() == to_numpy(q.data).tobytes()
        assert list(opt.state[p]) == list(ref_opt.state[q])
        for key, value in ref_opt.state[q].items():
            ours = opt.state[p][key]
            assert ours == value if key == "step" else to_numpy(ours).tobytes() == to_numpy(value).tobytes()
    arrays_in_state = [s["last_step_size"] for s in opt.state.values() if "last_step_size" in s]
    assert len({id(a) for a in arrays_in_state}) == len(arrays_in_state)  # never shared between parameters


# -- held state, and edits between steps --------------------------------------------------
#
# The buffer holds its members' state and a step finds its runs from that state alone.
# Whatever a user does to optimizer.state or a member's state between steps must give
# exactly what it gives Parameters made one by one, errors included.

EDIT_SHAPES = [(3,), (2, 2), (), (4,), (1,), (2, 3), (5,), (2,)]  # the last two join by add_param_group


def _array_key(state, rng):
    keys = [k for k, v in state.items() if arrayopt.backends.is_array(v)]
    return keys[rng.integers(len(keys))] if keys else None


def _edit(kind, opt, params, k, rng, xp):
    """Apply edit ``kind`` to member ``k`` of ``opt``; the same calls for both layouts."""
    state = opt.state.get(params[k])
    key = None if not state else _array_key(state, rng)
    if kind == "foreign" and key is not None:
        state[key] = xp.asarray(to_numpy(state[key]))
    elif kind == "view" and key is not None:
        state[key] = state[key][...]
    elif kind == "step" and state and "step" in state:
        state["step"] = state["step"] + 3.0
    elif kind == "same step" and state and "step" in state:
        state.update(step=state["step"])  # changes nothing, but it is a write
    elif kind == "ior" and state and "step" in state:
        state |= {"step": state["step"] + 1.0}
    elif kind == "setdefault" and state is not None:
        state.setdefault("note", "kept")
    elif kind == "pop and put back" and key is not None:
        state[key] = state.pop(key)  # the key moves to the end
    elif kind == "plain dict" and state is not None:
        opt.state[params[k]] = dict(state)
    elif kind == "delete state" and state is not None:
        del opt.state[params[k]]
    elif kind == "clear" and state is not None:
        state.clear()
    elif kind == "state mapping":
        opt.state = type(opt.state)(dict, opt.state) if rng.integers(2) else defaultdict(dict, opt.state)
    elif kind == "move group":
        groups = opt.param_groups
        source = next((g for g in groups if params[k] in g["params"]), None)
        if source is not None and len(source["params"]) > 1:
            source["params"].remove(params[k])
            groups[(groups.index(source) + 1) % len(groups)]["params"].append(params[k])
    elif kind == "reload":
        try:
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        except ValueError as exc:  # a key the optimizer does not keep ("note"): refused, nothing changed
            return str(exc)
    return None


EDITS = [
    "foreign",
    "view",
    "step",
    "same step",
    "ior",
    "setdefault",
    "pop and put back",
    "plain dict",
    "delete state",
    "clear",
    "state mapping",
    "move group",
    "reload",
]
BREAKING_EDITS = ["delete key", "popitem"]  # may make the next step fail: the value is put back after


def _same_state(ours, ref):
    a, b = ours.state_dict()["state"], ref.state_dict()["state"]
    assert list(a) == list(b)
    for index in b:
        assert list(a[index]) == list(b[index]), index
        for key, value in b[index].items():
            mine = a[index][key]
            if arrayopt.backends.is_array(value):
                assert to_numpy(mine).tobytes() == to_numpy(value).tobytes(), (index, key)
            else:
                assert type(mine) is type(value) and mine == value, (index, key)


def _pair(case, xp, rng):
    """(flat optimizer, its params) and (optimizer, params made one by one): equal, in two groups."""
    cls = getattr(arrayopt, case.optimizer)
    kwargs = harness._hyper(case, lambda x: xp.asarray(x, dtype=xp.float64))
    arrays = [rng.standard_normal(s) for s in EDIT_SHAPES]
    plist = ParameterList([xp.asarray(a) for a in arrays])
    sides = []
    for params in (list(plist), [Parameter(xp.asarray(a.copy())) for a in arrays]):
        opt = cls([{"params": params[:3]}, {"params": params[3:6], "lr": 0.02}], **kwargs)
        sides.append((opt, params))
    return sides


def _edit_both(sides, kind, k, seed, xp):
    """Apply edit ``kind`` to member ``k`` on both sides; what to put back after the next step."""
    put_back, edited = [], []
    for opt, params in sides:
        if kind == "add group":
            opt.add_param_group({"params": params[6:]})
        elif kind in BREAKING_EDITS:
            state = opt.state.get(params[k])
            if state:
                key = _array_key(state, np.random.default_rng(seed)) if kind == "delete key" else None
                put_back.append((state, *(state.popitem() if key is None else (key, state.pop(key)))))
        elif kind is not None:
            edited.append(_edit(kind, opt, params, k, np.random.default_rng(seed), xp))
    assert edited[:1] == edited[1:]
    return put_back


def _step_both(sides, rng, xp, missing=None, nonfinite=None):
    """One step of both sides with the same gradients; asserts the same outcome, parameters and state."""
    grads = [rng.standard_normal(s) for s in EDIT_SHAPES]
    if nonfinite is not None:
        grads[nonfinite].reshape(-1)[:1] = np.nan
    outcomes = []
    for opt, params in sides:
        opt.skip_nonfinite = nonfinite is not None
        for i, p in enumerate(params):
            p.grad = None if i == missing else xp.asarray(grads[i])
        try:
            opt.step()
            outcomes.append(None)
        except Exception as exc:
            outcomes.append((type(exc), str(exc)))
    assert outcomes[0] == outcomes[1]
    for p, q in zip(*(params for _, params in sides), strict=True):
        assert to_numpy(p.data).tobytes() == to_numpy(q.data).tobytes()
    _same_state(sides[0][0], sides[1][0])
    assert sides[0][0].skipped_steps == sides[1][0].skipped_steps


def count_stepped_alone(monkeypatch):
    """A list that receives every flat Parameter an optimizer prepares on its own (not in a run)."""
    calls = []
    prepare_one = arrayopt.optimizer.ElementwiseOptimizer._prepare_one

    def counted(self, p, *args):
        if p._flat is not None:
            calls.append(p)
        return prepare_one(self, p, *args)

    monkeypatch.setattr(arrayopt.optimizer.ElementwiseOptimizer, "_prepare_one", counted)
    return calls


@pytest.mark.parametrize("case", FLAT_CASES, ids=str)
def test_each_edit_of_held_state_gives_what_separate_parameters_give(case, xp, monkeypatch):
    alone = count_stepped_alone(monkeypatch)
    for kind in [*EDITS, *BREAKING_EDITS, "no grad", "not finite", "add group"]:
        rng = np.random.default_rng(len(kind))
        sides = _pair(case, xp, rng)
        for _ in range(3):
            alone.clear()
            _step_both(sides, rng, xp)
        assert alone == []  # the buffer holds every member's state: each block steps as one run
        k = int(rng.integers(6))
        put_back = _edit_both(sides, kind, k, int(rng.integers(1 << 30)), xp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Adagrad with a state that lost its "step", say
            _step_both(
                sides, rng, xp, missing=k if kind == "no grad" else None, nonfinite=k if kind == "not finite" else None
            )
        for state, key, value in put_back:
            state[key] = value
        for _ in range(3):
            _step_both(sides, rng, xp)


@pytest.mark.parametrize("case", FLAT_CASES, ids=str)
def test_edits_at_random_between_steps_give_what_separate_parameters_give(case, xp):
    rng = np.random.default_rng(7)
    sides = _pair(case, xp, rng)
    kinds = EDITS + BREAKING_EDITS
    schedule = [None] * 3 + [str(rng.choice(kinds)) if rng.random() < 0.4 else None for _ in range(20)]
    schedule += ["add group"] + [str(rng.choice(kinds)) if rng.random() < 0.4 else None for _ in range(20)]
    for step, kind in enumerate(schedule):
        k = int(rng.integers(6))
        put_back = _edit_both(sides, kind, k, int(rng.integers(1 << 30)), xp)
        missing = int(rng.integers(len(EDIT_SHAPES))) if rng.random() < 0.2 else None
        _step_both(sides, rng, xp, missing=missing, nonfinite=k if step % 11 == 10 else None)
        for state, key, value in put_back:
            state[key] = value


def test_loaded_and_copied_state_is_held_by_the_buffer(monkeypatch):
    alone = count_stepped_alone(monkeypatch)
    plist = ParameterList([np.ones(3), np.ones((2, 2)), np.ones(1)])
    opt = arrayopt.AdamW(plist, lr=0.1)
    for _ in range(2):
        plist.flat_grad = np.linspace(-1.0, 1.0, 8)
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    clones = [copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))]
    opt.load_state_dict(saved)
    for target in [opt, *clones]:
        params = target.param_groups[0]["params"]
        for _ in range(2):
            for p in params:
                p.grad = np.full(p.shape, 0.5)
            alone.clear()
            target.step()
        assert alone == []  # held by the buffer again after the load or copy: one run
    for p, q, r in zip(plist, *(c.param_groups[0]["params"] for c in clones), strict=True):
        assert to_numpy(p.data).tobytes() == to_numpy(q.data).tobytes() == to_numpy(r.data).tobytes()


def test_state_is_a_mapping_that_copies_and_pickles_as_a_dict():
    plist = ParameterList([np.ones(3), np.ones(2)])
    opt = arrayopt.Adam(plist, lr=0.1)
    for _ in range(3):
        plist.flat_grad = np.ones(5)
        opt.step()
    state = opt.state[plist[0]]
    assert isinstance(state, MutableMapping) and type(opt.state) is defaultdict
    assert list(state) == ["step", "exp_avg", "exp_avg_sq"] and state["step"] == 3.0
    assert repr(opt.state).startswith("defaultdict(<class 'dict'>, {")
    assert repr(state).startswith("{'step': 3.0, 'exp_avg': array([")
    saved = opt.state_dict()
    assert all(type(entry) is dict for entry in saved["state"].values())
    assert saved["state"][0]["exp_avg"] is state["exp_avg"]  # by reference, as torch
    pickled = pickle.dumps((saved, opt.state))
    assert b"MemberState" not in pickled and b"_flat_runs" not in pickled  # loads without private classes
    for twin in (copy.deepcopy(saved), pickle.loads(pickle.dumps(saved)), copy.copy(saved["state"][0])):
        entries = [twin] if "step" in twin else list(twin["state"].values())
        assert all(type(entry) is dict for entry in entries)
    assert type(copy.copy(state)) is dict and type(state.copy()) is dict
    state_copy = copy.deepcopy(opt.state)
    assert isinstance(state_copy, defaultdict) and all(type(s) is dict for s in state_copy.values())
    assert (state | {"note": 1})["note"] == 1 and "note" not in state and ({"note": 1} | state)["step"] == 3.0
    state |= {"step": 4.0}
    key, view = state.popitem()
    assert opt.state[plist[0]]["step"] == 4.0 and key == "exp_avg_sq"  # the last entry, as dict.popitem
    assert list(state) == ["step", "exp_avg"]
    state[key] = view  # its own view: held by the buffer again
    assert list(state) == ["step", "exp_avg", "exp_avg_sq"] and state._own is None


def test_a_failed_load_into_rolls_back_the_held_state(tmp_path, monkeypatch):
    plist = ParameterList([np.ones(3), np.ones(2)])
    opt = arrayopt.Adam(plist, lr=0.1)
    plist.flat_grad = np.ones(5)
    opt.step()
    other = arrayopt.Adam([Parameter(np.ones(2))], lr=0.1)
    arrayopt.save(tmp_path / "a.ckpt", optimizer=opt, other=other)
    held, state = opt._flat, opt.state

    def refuse(optimizer, state_dict):
        raise RuntimeError("refused while loading")

    other.register_load_state_dict_pre_hook(refuse)  # fails after opt was loaded: opt is rolled back
    with pytest.raises(RuntimeError, match="refused while loading"):
        arrayopt.load_into(tmp_path / "a.ckpt", optimizer=opt, other=other)
    assert opt._flat is held and opt.state is state
    alone = count_stepped_alone(monkeypatch)
    plist.flat_grad = np.ones(5)
    opt.step()
    assert alone == [] and opt.state[plist[1]]["step"] == 2.0  # still one run, not one call per member


def test_the_optimizer_frees_its_state_without_the_garbage_collector():
    import gc
    import weakref

    plist = ParameterList([np.ones(3), np.ones(2)])
    opt = arrayopt.Adam(plist, lr=0.1)
    for _ in range(3):
        plist.flat_grad = np.ones(5)
        opt.step()
    flat = weakref.ref(opt.state[plist[0]]["exp_avg"].base)
    gc.disable()
    try:
        del opt
        assert flat() is None  # no reference cycle holds the state arrays
    finally:
        gc.enable()

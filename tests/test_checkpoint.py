"""arrayopt.save / load / load_into: round trips, atomic writes, damaged files, no code on load."""

import collections
import copy
import io
import math
import os
import pickle
import re
import signal
import stat
import string
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib

import numpy as np
import numpy.lib.format as npy_format
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import arrayopt
import arrayopt.backends.numpy as numpy_backend
from arrayopt import Parameter
from arrayopt.backends import get_backend
from arrayopt.backends.archive import _MAX_DIRECTORY_BYTES, MAX_ARRAYS, MAX_METADATA_BYTES
from arrayopt.checkpoint import FORMAT, VERSION

from cases import CASES, by_dtype
from conftest import fuzz_examples


def to_numpy(a):
    return np.asarray(get_backend(a).to_numpy(a))


def bits(a):
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def same(a, b):
    """Equal values of equal types, recursively; arrays equal in dtype, shape and bits (NaN equals NaN)."""
    if isinstance(a, (np.ndarray, np.generic)):
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(bits(a), bits(b))
    if isinstance(a, float):
        return type(b) is float and ((a == b and math.copysign(1, a) == math.copysign(1, b)) or (a != a and b != b))
    if isinstance(a, complex):
        return type(b) is complex and same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, dict):
        return (
            type(a) is type(b)
            and list(a) == list(b)
            and all(type(k) is type(kb) for k, kb in zip(a, b, strict=True))
            and all(same(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def round_trip(**objects):
    buffer = io.BytesIO()
    arrayopt.save(buffer, **objects)
    return arrayopt.load(buffer)


# -- values ---------------------------------------------------------------------------


def test_plain_values_keep_their_types():
    value = {
        "ints": [0, -1, 2**70],
        "floats": (0.5, -0.0, math.inf, -math.inf, math.nan, 1e-310),
        "complex": complex(1.5, -math.inf),
        "flags": [True, False, None],
        "text": "é ∞ \x00",
        0: "int key",
        "0": "str key",
        (1, "a"): "tuple key",
        2.5: "float key",
        None: "None key",
        "nested": {"a": [{"b": ()}]},
        "counter": collections.Counter({3: 2, 10: 1}),
    }
    assert same(round_trip(value=value)["value"], value)


@pytest.mark.parametrize(
    "dtype",
    ["float16", "float32", "float64", "complex64", "complex128", "int8", "int64", "uint16", "bool"],
)
def test_arrays_keep_dtype_shape_and_bits(dtype):
    rng = np.random.default_rng(0)
    arrays = [
        (rng.standard_normal((3, 4)) * 100).astype(dtype),
        np.zeros((0, 5), dtype),
        np.asarray(7, dtype),
        np.asfortranarray((rng.standard_normal((3, 2)) * 10).astype(dtype)),
        (rng.standard_normal(10) * 10).astype(dtype)[::3],
    ]
    loaded = round_trip(arrays=arrays)["arrays"]
    for a, b in zip(arrays, loaded, strict=True):
        assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)
        assert b.flags.writeable and b.flags.c_contiguous
    scalar = np.dtype(dtype).type(3)
    assert same(round_trip(s=scalar)["s"], scalar)  # NumPy scalars come back as NumPy scalars


def test_non_finite_and_negative_zero_bits_survive():
    a = np.array([math.nan, -math.nan, math.inf, -0.0, 5e-324], dtype=np.float64)
    assert same(round_trip(a=a)["a"], a)


KEY = st.one_of(st.text(max_size=4), st.integers(-5, 5), st.none(), st.booleans())
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.builds(
        lambda shape, dtype, seed: (np.random.default_rng(seed).standard_normal(shape) * 4).astype(dtype),
        st.sampled_from([(), (0,), (3,), (2, 2)]),
        st.sampled_from(["float32", "float64", "complex128", "int32", "float16"]),
        st.integers(0, 99),
    ),
)
TREE = st.recursive(
    LEAF,
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(KEY, children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=fuzz_examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=TREE)
def test_any_tree_round_trips(tree):
    assert same(round_trip(tree=tree)["tree"], tree)


def test_what_cannot_be_saved_is_refused_by_path_and_nothing_is_written(tmp_path):
    path = tmp_path / "c.ckpt"

    class Thing:
        pass

    bad = [
        (
            {"sched": {"lr_lambdas": [lambda epoch: 0.9]}},
            TypeError,
            r"sched\['lr_lambdas'\]\[0\]: cannot save a function",
        ),
        ({"fn": math.sqrt}, TypeError, r"fn: cannot save a function \(sqrt\)"),
        ({"x": {"a": Thing()}}, TypeError, r"x\['a'\]: cannot save a .*Thing"),
        ({"x": {frozenset(): 1}}, TypeError, r"the dict key frozenset\(\) \(frozenset\) cannot be saved"),
        ({"x": np.array(["a"])}, TypeError, r"x: arrays of dtype <U1 cannot be saved"),
        ({"x": np.array([None], dtype=object)}, TypeError, r"arrays of dtype object cannot be saved"),
        ({"x": b"bytes"}, TypeError, r"cannot save a bytes"),
        ({}, TypeError, r"save\(\) needs something to save"),
    ]
    looping = [1]
    looping.append(looping)
    bad.append(({"x": looping}, ValueError, r"x\[1\]: the value contains itself"))
    for objects, error, pattern in bad:
        with pytest.raises(error, match=pattern):
            arrayopt.save(path, **objects)
    assert os.listdir(tmp_path) == []


# -- optimizers and parameters --------------------------------------------------------


def build(case, xp, dtype, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 2), (4,), ()]
    ps = [Parameter(xp.asarray(rng.standard_normal(s).astype(dtype)), name=f"p{i}") for i, s in enumerate(shapes)]
    kwargs = dict(case.kwargs)
    for name in case.array_hyper:
        value = kwargs.get(name, getattr(arrayopt, case.optimizer)([Parameter(np.zeros(1))]).defaults[name])
        kwargs[name] = tuple(np.asarray(v) for v in value) if isinstance(value, tuple) else np.asarray(value)
    opt = getattr(arrayopt, case.optimizer)([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.01}], **kwargs)
    return opt, ps


def set_grads(ps, xp, dtype, k):
    rng = np.random.default_rng(100 + k)
    for p in ps:
        p.grad = xp.asarray(rng.standard_normal(p.shape).astype(dtype))


@pytest.mark.parametrize(
    "case, dtype",
    by_dtype(("float32", "complex128"), [c for c in CASES if c.kwargs or c.array_hyper]),
    ids=str,
)
def test_optimizer_checkpoint_continues_bit_for_bit(case, dtype, xp, tmp_path):
    """Save after 3 steps, load into a fresh optimizer on fresh parameters: the next 3 steps agree exactly."""
    if xp.__name__ == "array_api_strict" and dtype == "float16":
        pytest.skip("array-api-strict has no float16")
    opt, ps = build(case, xp, dtype)
    for k in range(3):
        set_grads(ps, xp, dtype, k)
        opt.step()
    path = tmp_path / "opt.ckpt"
    arrayopt.save(path, optimizer=opt, params=ps)
    twin, twin_ps = build(case, xp, dtype, seed=1)
    rest = arrayopt.load_into(path, optimizer=twin, params=twin_ps)
    assert sorted(rest) == ["optimizer", "params"]
    for k in range(3, 6):
        set_grads(ps, xp, dtype, k)
        set_grads(twin_ps, xp, dtype, k)
        opt.step()
        twin.step()
    for p, q in zip(ps, twin_ps, strict=True):
        a, b = to_numpy(p.data), to_numpy(q.data)
        assert a.dtype == b.dtype and np.array_equal(bits(a), bits(b))
    assert opt.state_dict()["param_groups"] == twin.state_dict()["param_groups"]


def test_state_dict_layout_survives_with_int_keys_tuples_and_step_floats():
    p = Parameter(np.ones((2, 2), dtype=np.float32))
    opt = arrayopt.Adam([("w", p)], lr=np.array(0.05), betas=(np.array(0.9), np.array(0.99)), amsgrad=True)
    p.grad = np.full((2, 2), 0.5, dtype=np.float32)
    opt.step()
    sd = opt.state_dict()
    loaded = round_trip(optimizer=opt)["optimizer"]
    assert same(loaded, copy.deepcopy(sd))
    assert list(loaded["state"]) == [0] and type(loaded["state"][0]["step"]) is float
    assert isinstance(loaded["param_groups"][0]["betas"], tuple)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "complex64", "complex128"])
def test_parameters_as_list_and_dict_keep_dtype(dtype):
    ps = [Parameter(np.arange(3, dtype=dtype)), Parameter(np.ones((2, 2), dtype=dtype))]
    loaded = round_trip(params=ps, named={"a": ps[0], "b": [ps[1]]})
    assert [a.dtype for a in loaded["params"]] == [np.dtype(dtype)] * 2
    np.testing.assert_array_equal(loaded["named"]["b"][0], ps[1].data)


def test_library_and_device_round_trip_with_a_non_numpy_stand_in():
    """A checkpoint written from another library's arrays (array-api-strict standing in for CuPy,
    which needs a GPU) loads on NumPy, and a NumPy checkpoint loads onto the other library."""
    strict = pytest.importorskip("array_api_strict")
    device = strict.Device("device1")
    p = Parameter(strict.asarray(np.array([1.0, -2.0, 0.5]), device=device))
    opt = arrayopt.Adam([p], lr=0.1)
    p.grad = strict.asarray(np.array([0.3, -0.1, 0.2]), device=device)
    opt.step()
    buffer = io.BytesIO()
    arrayopt.save(buffer, optimizer=opt, params=[p])
    on_numpy = arrayopt.load(buffer)
    assert type(on_numpy["params"][0]) is np.ndarray
    np.testing.assert_array_equal(on_numpy["optimizer"]["state"][0]["exp_avg"], to_numpy(opt.state[p]["exp_avg"]))
    # and back: onto the library's default device, onto a given array's device, or by name
    like = strict.zeros(1, device=device)
    for xp in (strict, "array_api_strict", like):
        back = arrayopt.load(buffer, xp=xp)
        arr = back["optimizer"]["state"][0]["exp_avg_sq"]
        assert get_backend(arr).name == "array_api_strict"
        assert arr.device == (device if xp is like else strict.Device("CPU_DEVICE"))
    # load_into an optimizer on NumPy parameters: the state lands on NumPy
    q = Parameter(np.zeros(3))
    other = arrayopt.Adam([q])
    arrayopt.load_into(buffer, optimizer=other, params=[q])
    np.testing.assert_array_equal(q.data, to_numpy(p.data))
    assert type(other.state[q]["exp_avg"]) is np.ndarray
    with pytest.raises(TypeError, match="xp must be None, an array namespace"):
        arrayopt.load(buffer, xp=3)


def test_load_into_on_the_xp_library(xp):
    p = Parameter(np.array([1.0, 2.0]))
    buffer = io.BytesIO()
    arrayopt.save(buffer, params={"p": p})
    q = Parameter(xp.zeros(2, dtype=xp.float32))
    arrayopt.load_into(buffer, params={"p": q})
    assert q.data.dtype == xp.float32 and np.array_equal(to_numpy(q.data), [1.0, 2.0])


# -- other objects with state_dict (schedulers, averaged models) ----------------------


class FakeScheduler:
    """A stand-in with torch's scheduler protocol: plain values in, plain values out."""

    def __init__(self, optimizer=None):
        self.optimizer = optimizer
        self.last_epoch = 0
        self.base_lrs = [0.1]
        self.milestones = collections.Counter([2, 5, 5])
        self.best = math.inf
        self.lr_lambdas = [None]
        self.fail = False

    def state_dict(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "fail")}

    def load_state_dict(self, state_dict):
        if self.fail:
            self.fail = False
            self.last_epoch = -999  # a half-done load, then an error
            raise RuntimeError("scheduler load failed")
        self.__dict__.update(state_dict)


def test_objects_with_state_dict_round_trip_and_keep_their_class(tmp_path):
    sched = FakeScheduler()
    sched.last_epoch, sched.best = 4, 0.25
    path = tmp_path / "s.ckpt"
    arrayopt.save(path, scheduler=sched)
    fresh = FakeScheduler()
    arrayopt.load_into(path, scheduler=fresh)
    assert same(fresh.state_dict(), sched.state_dict())
    opt = arrayopt.SGD([Parameter(np.zeros(1))])
    with pytest.raises(
        ValueError, match=r"'scheduler': the checkpoint holds the state of a FakeScheduler, which cannot"
    ):
        arrayopt.load_into(path, scheduler=opt)
    with pytest.raises(KeyError, match=r"the checkpoint has no entry 'optimizer' \(it holds 'scheduler'\)"):
        arrayopt.load_into(path, optimizer=opt)
    with pytest.raises(TypeError, match=r"'scheduler': cannot load into an int"):
        arrayopt.load_into(path, scheduler=3)


@pytest.mark.ref
def test_torch_scheduler_state_dicts_round_trip(torch):
    """torch's own schedulers' state dicts (Counters, inf, None for lambdas, nested dicts) survive and load."""
    lr_scheduler = torch.optim.lr_scheduler

    def make():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
        return opt, [
            lr_scheduler.StepLR(opt, 3),
            lr_scheduler.MultiStepLR(opt, [2, 5, 5]),
            lr_scheduler.LambdaLR(opt, lambda e: 0.95**e),
            lr_scheduler.ReduceLROnPlateau(opt),
            lr_scheduler.CosineAnnealingWarmRestarts(opt, 3),
            lr_scheduler.CyclicLR(opt, 0.01, 0.1),
            lr_scheduler.OneCycleLR(opt, 1.0, total_steps=20),
        ]

    opt, scheds = make()
    for _ in range(4):
        opt.step()
        for s in scheds:
            s.step(1.0) if isinstance(s, lr_scheduler.ReduceLROnPlateau) else s.step()
    loaded = round_trip(**{f"s{i}": s for i, s in enumerate(scheds)})
    _, fresh = make()
    for i, (s, f) in enumerate(zip(scheds, fresh, strict=True)):
        f.load_state_dict(loaded[f"s{i}"])
        assert same(f.state_dict(), s.state_dict()), type(s).__name__


# -- load_into: all or nothing --------------------------------------------------------


def trained(seed):
    ps = [Parameter(np.full(3, float(seed))), Parameter(np.full((2, 2), -float(seed)))]
    opt = arrayopt.Adam(ps, lr=0.1)
    for p in ps:
        p.grad = np.ones(p.shape)
    opt.step()
    return opt, ps


def test_load_into_checks_every_object_before_loading_any():
    source, source_ps = trained(1)
    buffer = io.BytesIO()
    arrayopt.save(buffer, optimizer=source, params=source_ps)
    opt, ps = trained(2)
    state, groups = opt.state, opt.param_groups
    data = [p.data.copy() for p in ps]
    wrong = [ps[0], Parameter(np.zeros(4))]
    with pytest.raises(
        ValueError, match=r"params\[1\]: the checkpoint holds shape \(2, 2\), but the Parameter has \(4,\)"
    ):
        arrayopt.load_into(buffer, optimizer=opt, params=wrong)
    assert opt.state is state and opt.param_groups is groups
    assert all(np.array_equal(p.data, d) for p, d in zip(ps, data, strict=True))
    real = [Parameter(np.zeros(3)), Parameter(np.zeros((2, 2)))]
    buffer_c = io.BytesIO()
    arrayopt.save(buffer_c, params=[Parameter(np.zeros(3, complex)), Parameter(np.zeros((2, 2), complex))])
    with pytest.raises(ValueError, match=r"params\[0\]: the checkpoint holds a complex array"):
        arrayopt.load_into(buffer_c, params=real)
    with pytest.raises(ValueError, match=r"'params': the checkpoint holds a plain value there, not a state dict"):
        arrayopt.load_into(buffer, params=opt)
    with pytest.raises(ValueError, match=r"'optimizer': the checkpoint holds the state dict of a Adam there, not arr"):
        arrayopt.load_into(buffer, optimizer=ps)


def test_load_into_restores_what_it_loaded_when_a_later_object_fails():
    source, source_ps = trained(1)
    sched = FakeScheduler()
    buffer = io.BytesIO()
    arrayopt.save(buffer, params=source_ps, optimizer=source, scheduler=sched)
    opt, ps = trained(2)
    state, groups, data = opt.state, opt.param_groups, [p.data.copy() for p in ps]
    arrays = [p.data for p in ps]
    target = FakeScheduler()
    target.last_epoch = 11
    target.fail = True
    with pytest.raises(RuntimeError, match="scheduler load failed"):
        arrayopt.load_into(buffer, params=ps, optimizer=opt, scheduler=target)
    assert opt.state is state and opt.param_groups is groups  # the optimizer's own objects, back
    assert all(p.data is a and np.array_equal(p.data, d) for p, a, d in zip(ps, arrays, data, strict=True))
    assert target.last_epoch == 11  # the failing object is restored too (from its own state_dict)
    arrayopt.load_into(buffer, params=ps, optimizer=opt, scheduler=target)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(ps, source_ps, strict=True))
    assert target.last_epoch == 0


def test_load_into_refuses_a_bad_optimizer_state_before_touching_parameters():
    source, source_ps = trained(1)
    buffer = io.BytesIO()
    sd = copy.deepcopy(source.state_dict())
    sd["state"][1]["exp_avg"] = np.zeros(7)

    class Holder:
        def state_dict(self):
            return sd

    arrayopt.save(buffer, params=source_ps, optimizer=Holder())
    opt, ps = trained(2)
    data = [p.data.copy() for p in ps]
    with pytest.raises(ValueError, match="holds the state of a Holder"):
        arrayopt.load_into(buffer, params=ps, optimizer=opt)
    sd_loaded = arrayopt.load(buffer)["optimizer"]
    with pytest.raises(ValueError, match=r"state of parameter 1 .*'exp_avg' has shape \(7,\)"):
        opt.load_state_dict(sd_loaded)
    assert all(np.array_equal(p.data, d) for p, d in zip(ps, data, strict=True))


@pytest.mark.parametrize("numba", [False, True], ids=["numpy", "numba"])
def test_a_failed_load_into_leaves_a_parameter_list_on_one_kernel_call(numba, monkeypatch):
    """What a rollback restores includes what makes a step fast: the buffer's held state, one run for all members."""
    if numba:
        pytest.importorskip("numba")
    monkeypatch.setattr(numpy_backend, "_numba", numba)
    plist = arrayopt.ParameterList([np.ones(3), np.full((2, 2), 2.0), np.zeros(1)])
    opt = arrayopt.Adam(plist, lr=0.1)
    plist.flat_grad = np.linspace(-1.0, 1.0, 8)
    opt.step()
    buffer = io.BytesIO()
    arrayopt.save(buffer, optimizer=opt)
    opt.step()

    def refuse(optimizer):
        raise RuntimeError("refused after loading")

    handle = opt.register_load_state_dict_post_hook(refuse)  # the load itself fails, once it replaced the state
    with pytest.raises(RuntimeError, match="refused after loading"):
        arrayopt.load_into(buffer, optimizer=opt)
    handle.remove()
    launches = []
    update = arrayopt.Adam._update

    def counted(self, backend, hyper, state, operands):
        launches.append(operands[0].shape)
        return update(self, backend, hyper, state, operands)

    monkeypatch.setattr(arrayopt.Adam, "_update", counted)
    plist.flat_grad = np.linspace(-1.0, 1.0, 8)
    opt.step()
    assert launches == [(8,)]  # one kernel call over the whole buffer, not one per member
    assert [opt.state[p]["step"] for p in plist] == [3.0, 3.0, 3.0]


# -- atomic writes --------------------------------------------------------------------


def test_a_crash_mid_write_leaves_the_old_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    opt, _ = trained(1)
    arrayopt.save(path, optimizer=opt, epoch=1)
    old = path.read_bytes()
    calls = []
    real_write = npy_format.write_array

    def crash_on_second_array(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            fp.write(b"\x93NUMPY partial")
            raise OSError("disk full (simulated)")
        return real_write(fp, array, *args, **kwargs)

    monkeypatch.setattr(npy_format, "write_array", crash_on_second_array)
    with pytest.raises(OSError, match="simulated"):
        arrayopt.save(path, optimizer=opt, epoch=2)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["run.ckpt"]
    monkeypatch.undo()
    assert arrayopt.load(path)["epoch"] == 1
    arrayopt.save(path, optimizer=opt, epoch=3)
    assert arrayopt.load(path)["epoch"] == 3 and os.listdir(tmp_path) == ["run.ckpt"]


def test_an_interrupt_mid_write_also_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(npy_format, "write_array", interrupt)
    with pytest.raises(KeyboardInterrupt):
        arrayopt.save(path, a=np.ones(2))
    assert os.listdir(tmp_path) == []


def test_written_file_has_ordinary_permissions_and_identical_bytes_for_identical_content(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    path = tmp_path / "c.ckpt"
    arrayopt.save(path, a=np.ones(3), b={"x": 1})
    assert os.stat(path).st_mode == os.stat(plain).st_mode
    first = path.read_bytes()
    arrayopt.save(path, a=np.ones(3), b={"x": 1})
    assert path.read_bytes() == first


# -- damaged and foreign files --------------------------------------------------------


def checkpoint_bytes():
    opt, ps = trained(1)
    buffer = io.BytesIO()
    arrayopt.save(buffer, optimizer=opt, params=ps, epoch=3, note="x")
    return buffer.getvalue()


GOOD = checkpoint_bytes()
GOOD_CONTENT = arrayopt.load(io.BytesIO(GOOD))


def load_bytes(data):
    return arrayopt.load(io.BytesIO(data))


def test_every_truncation_is_refused():
    for n in range(0, len(GOOD), 7):
        with pytest.raises(ValueError, match=r"^checkpoint: "):
            load_bytes(GOOD[:n])


@settings(max_examples=fuzz_examples(300), deadline=None)
@given(position=st.integers(0, len(GOOD) - 1), flip=st.integers(1, 255))
def test_a_damaged_byte_is_refused_or_harmless(position, flip):
    data = bytearray(GOOD)
    data[position] ^= flip
    try:
        loaded = load_bytes(bytes(data))
    except ValueError:
        return
    assert same(loaded, GOOD_CONTENT)  # the byte was one nothing reads (a timestamp, say)


@settings(max_examples=fuzz_examples(200), deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_are_refused(data):
    with pytest.raises(ValueError):
        load_bytes(data)


@settings(max_examples=fuzz_examples(100), deadline=None)
@given(tail=st.binary(max_size=200), keep=st.integers(0, len(GOOD)))
def test_spliced_bytes_are_refused_or_harmless(tail, keep):
    try:
        loaded = load_bytes(GOOD[:keep] + tail)
    except ValueError:
        return
    assert same(loaded, GOOD_CONTENT)


def rewrite(members, meta=None):
    """A zip with the given members (name -> bytes), the metadata replaced if given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            if name == "arrayopt.json" and meta is not None:
                data = meta
            z.writestr(name, data)
    return buffer.getvalue()


def good_members():
    with zipfile.ZipFile(io.BytesIO(GOOD)) as z:
        return {name: z.read(name) for name in z.namelist()}


def npy_bytes(array, allow_pickle=False):
    buffer = io.BytesIO()
    npy_format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


class Boom:
    """Unpickling this would run code: it must never happen."""

    def __reduce__(self):
        return (exec, ("import builtins; builtins.ARRAYOPT_PWNED = True",))


def meta_with(**changes):
    import json

    meta = json.loads(good_members()["arrayopt.json"])
    meta.update(changes)
    return json.dumps(meta).encode()


def test_foreign_and_forged_files_are_refused_without_running_code(tmp_path):
    members = good_members()
    evil = npy_bytes(np.array([Boom()], dtype=object), allow_pickle=True)
    pickled = pickle.dumps({"x": Boom()})
    cases = [
        (b"", r"not a zip archive"),
        (b"PK\x03\x04" + b"\x00" * 40, r"not a zip archive"),
        (pickled, r"not a zip archive"),
        (rewrite({"data.pkl": pickled}), r"not an arrayopt checkpoint \(it has no arrayopt.json\)"),
        (rewrite({**members, "arrays/0.npy": evil}), r"arrays/0.npy holds object of shape \(1,\), but the metadata"),
        (rewrite({**members, "arrays/0.npy": npy_bytes(np.zeros(3, np.float32))}), r"holds float32 of shape"),
        (rewrite({**members, "arrays/0.npy": npy_bytes(np.zeros(3))[:-5]}), r"holds 19 bytes of data, expected 24"),
        (rewrite({**members, "arrays/0.npy": npy_bytes(np.zeros(3)) + b"!"}), r"holds 25 bytes of data, expected 24"),
        (rewrite({k: v for k, v in members.items() if k != "arrays/1.npy"}), r"member 'arrays/1.npy' is missing"),
        (rewrite(members, meta_with(format="something-else")), r"not an arrayopt checkpoint \(format 'something-el"),
        (
            rewrite(members, meta_with(version=VERSION + 1)),
            r"format version 2, but this arrayopt reads versions up to 1",
        ),
        (rewrite(members, meta_with(version="1")), r"invalid format version '1'"),
        (rewrite(members, meta_with(version=True)), r"invalid format version True"),
        (rewrite(members, meta_with(objects={})), r"'objects' is not a list"),
        (rewrite(members, meta_with(arrays=[])), r"corrupted metadata at optimizer"),
        (rewrite(members, b'{"format": NaN}'), r"the JSON holds NaN"),
        (rewrite(members, b"\xff\xfe"), r"can't decode byte 0xff"),
        (rewrite(members, b"[" * 100000), r"RecursionError|corrupted|nested"),
        (rewrite(members, meta_with(objects=[{"name": "a", "kind": "value", "value": {"set": []}}])), r"corrupted"),
        (rewrite(members, meta_with(objects=[{"name": "a", "kind": "value", "value": {"array": 0}}] * 2)), "twice"),
        (rewrite(members, meta_with(objects=[{"name": "a", "kind": "value", "value": 1}])), r"belong to no entry"),
    ]
    for data, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            load_bytes(data)
        path = tmp_path / "f.ckpt"
        path.write_bytes(data)
        with pytest.raises(ValueError, match="^" + str(path)):
            arrayopt.load(path)
    import builtins

    assert not getattr(builtins, "ARRAYOPT_PWNED", False)


def test_a_compressed_or_oversized_member_is_refused():
    members = good_members()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(ValueError, match="is compressed"):
        load_bytes(buffer.getvalue())
    # an .npy header claiming 10**12 elements: refused before any allocation
    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    meta = meta_with(
        arrays=[{"dtype": "float64", "shape": [10**12]}],
        objects=[{"name": "a", "kind": "value", "value": {"array": 0}}],
    )
    with pytest.raises(ValueError, match=r"expected 8000000000000"):
        load_bytes(rewrite({"arrayopt.json": meta, "arrays/0.npy": header.getvalue()}))


def test_a_missing_file_is_an_os_error_and_bytes_are_not_a_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        arrayopt.load(tmp_path / "none.ckpt")
    with pytest.raises(TypeError, match="path must be a file path or a seekable binary file object, but got bytes"):
        arrayopt.load(GOOD)
    with pytest.raises(TypeError, match="path must be a file path or a binary file object, but got int"):
        arrayopt.save(3, a=1)


def test_metadata_names_the_format_and_version():
    import json

    meta = json.loads(good_members()["arrayopt.json"])
    assert meta["format"] == FORMAT and meta["version"] == VERSION == 1
    assert [o["name"] for o in meta["objects"]] == ["optimizer", "params", "epoch", "note"]
    assert meta["objects"][0]["class"] == "Adam"


# -- hostile files: what reading one may cost -------------------------------------------
#
# The promise: any file loads or is refused (ValueError naming the file and the member)
# taking at most 64 MB beyond the arrays it really holds, whatever its zip directory or
# metadata claim. The zips below are written byte by byte, as an attacker would.

LOCAL = struct.Struct("<4s2B4HL2L2H")
CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
END = struct.Struct("<4s4H2LH")
BUDGET = 64 << 20


def local_header(name, data, size=None):
    size = len(data) if size is None else size
    return LOCAL.pack(b"PK\x03\x04", 20, 0, 0, 0, 0, 33, zlib.crc32(data), size, size, len(name), 0) + name


def central_entry(name, offset, data, csize, usize):
    sizes = [0xFFFFFFFF if size >= 0xFFFFFFFF else size for size in (usize, csize)]
    large = [size for size in (usize, csize) if size >= 0xFFFFFFFF]  # zip64: in this order
    extra = struct.pack(f"<HH{len(large)}Q", 1, 8 * len(large), *large) if large else b""
    fields = (20, 3, 20, 0, 0, 0, 0, 33, zlib.crc32(data), sizes[1], sizes[0], len(name), len(extra), 0, 0, 0, 0)
    return CENTRAL.pack(b"PK\x01\x02", *fields, offset) + name + extra


def raw_zip(body, directory):
    """``body`` (local headers and data) followed by a zip directory of ``(name, offset, data, csize, usize)``."""
    entries = b"".join(central_entry(*entry) for entry in directory)
    return body + entries + END.pack(b"PK\x05\x06", 0, 0, len(directory), len(directory), len(entries), len(body), 0)


def npy_header(dtype, shape):
    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return header.getvalue()


def meta_for(specs):
    import json

    meta = {
        "format": FORMAT,
        "version": VERSION,
        "arrays": [{"dtype": dtype, "shape": list(shape)} for dtype, shape in specs],
        "objects": [{"name": "a", "kind": "value", "value": {"list": [{"array": i} for i in range(len(specs))]}}],
    }
    return json.dumps(meta).encode()


def hostile(members):
    """A zip of ``(name, data, claimed_size)`` members, laid out one after another."""
    body, directory = b"", []
    for name, data, claimed in members:
        name = name.encode()
        directory.append((name, len(body), data, len(data), len(data) if claimed is None else claimed))
        body += local_header(name, data) + data
    return raw_zip(body, directory)


def overlapping(count, payload_bytes):
    """``count`` members ``arrays/<k>.npy`` nested in one block: member k's data holds members k+1.. whole."""
    tail = b"\0" * payload_bytes
    shapes = []
    for k in reversed(range(count)):
        data = npy_header("uint8", (len(tail),)) + tail
        shapes.insert(0, (len(tail),))
        tail = local_header(f"arrays/{k}.npy".encode(), data) + data
    meta = meta_for([("uint8", s) for s in shapes])
    body = local_header(b"arrayopt.json", meta) + meta
    directory = [(b"arrayopt.json", 0, meta, len(meta), len(meta))]
    position, block = len(body), tail
    for k in range(count):
        name = f"arrays/{k}.npy".encode()
        data = block[LOCAL.size + len(name) :]
        directory.append((name, position, data, len(data), len(data)))
        skip = LOCAL.size + len(name) + len(npy_header("uint8", shapes[k]))
        position, block = position + skip, block[skip:]
    return raw_zip(body + tail, directory)


def cost_of_loading(data):
    """(what load gave or the exception it raised, peak bytes allocated while loading)."""
    tracemalloc.start()
    try:
        try:
            result = load_bytes(data)
        except Exception as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def forged_size(claimed_elements):
    """One float64 array whose .npy header and zip directory claim ``claimed_elements``; the file holds none."""
    header = npy_header("float64", (claimed_elements,))
    meta = meta_for([("float64", (claimed_elements,))])
    return hostile([("arrayopt.json", meta, None), ("arrays/0.npy", header, len(header) + 8 * claimed_elements)])


HOSTILE = {
    # the 538-byte file of the issue: a stored member claiming 3.4 GB (here 256 MB, and 100 GB)
    "forged size": (lambda: forged_size(32 << 20), r"member 'arrays/0.npy' claims \d+ bytes stored in \d+"),
    "forged 100 GB": (lambda: forged_size(100 << 27), r"member 'arrays/0.npy' claims \d+ bytes stored in \d+"),
    # 25 members nested in one 4 MB block: 100 MB of arrays from a 4 MB file
    "overlapping members": (lambda: overlapping(25, 4 << 20), r"members 'arrays/0.npy' and 'arrays/1.npy' overlap"),
    "the same name twice": (
        lambda: hostile(
            [("arrayopt.json", meta_for([("uint8", (3,))]), None)]
            + [("arrays/0.npy", npy_bytes(np.zeros(3, np.uint8)), None)] * 2
        ),
        r"member 'arrays/0.npy' appears twice in the zip directory",
    ),
    "metadata of empty lists": (
        lambda: hostile([("arrayopt.json", b"[" + b"[[]]," * ((1 << 20) // 5) + b"0]", None)]),
        r"not an arrayopt checkpoint",
    ),
    "metadata over the limit": (
        lambda: hostile([("arrayopt.json", b" " * (MAX_METADATA_BYTES + 1), None)]),
        r"member 'arrayopt.json' holds \d+ bytes, more than the \d+ a checkpoint's metadata may have",
    ),
    "a huge zip directory": (
        lambda: hostile([(f"{i}", b"", None) for i in range(60_000)]),
        r"the zip directory takes \d+ bytes, more than a checkpoint of at most \d+ arrays needs",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_file_is_refused_cheaply_naming_the_file_and_the_member(name, tmp_path):
    make, pattern = HOSTILE[name]
    data = make()
    result, peak = cost_of_loading(data)
    assert isinstance(result, ValueError), result
    assert re.search(pattern, str(result)), str(result)
    assert peak < BUDGET, f"loading took {peak / 2**20:.0f} MB"
    path = tmp_path / "hostile.ckpt"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="^" + re.escape(str(path)) + ": " + pattern):
        arrayopt.load(path)


def test_the_worst_file_within_the_limits_costs_less_than_the_budget():
    # the most a file can make the reader build: the largest zip directory (of the shortest entries)
    # and the largest metadata, all of it nested empty containers (~30 bytes of objects per byte)
    alphabet = string.digits + string.ascii_letters
    count = (_MAX_DIRECTORY_BYTES - 100) // (CENTRAL.size + 3)
    names = [alphabet[i // 62**2] + alphabet[i // 62 % 62] + alphabet[i % 62] for i in range(count)]
    for unit in (b"[[]],", b'{"":{}},'):
        meta = b"[" + unit * ((MAX_METADATA_BYTES - 2) // len(unit)) + b"0]"
        result, peak = cost_of_loading(hostile([("arrayopt.json", meta, None)] + [(n, b"", None) for n in names]))
        assert isinstance(result, ValueError) and peak < BUDGET, (unit, peak / 2**20)


def test_what_save_writes_within_the_limits_loads_and_beyond_them_is_refused_unwritten(tmp_path):
    path = tmp_path / "big.ckpt"
    arrays = [np.zeros(1, np.uint8)] * MAX_ARRAYS
    arrayopt.save(path, arrays=arrays)
    loaded, peak = cost_of_loading(path.read_bytes())
    assert len(loaded["arrays"]) == MAX_ARRAYS and peak < BUDGET
    os.remove(path)
    with pytest.raises(ValueError, match=f"a checkpoint holds at most {MAX_ARRAYS} arrays, this one would hold"):
        arrayopt.save(path, arrays=[*arrays, np.zeros(1)])
    with pytest.raises(ValueError, match=r"the checkpoint's structure \(its JSON metadata\) would take \d+ bytes"):
        arrayopt.save(path, history=[0.1] * (MAX_METADATA_BYTES // 4))
    assert os.listdir(tmp_path) == []


# -- temporary files left by killed saves ---------------------------------------------

PAUSED_SAVE = """
import sys, numpy as np, numpy.lib.format as npy_format, arrayopt
real = npy_format.write_array
def paused(*args, **kwargs):
    real(*args, **kwargs)
    npy_format.write_array = real
    print("writing", flush=True)
    sys.stdin.readline()
npy_format.write_array = paused
arrayopt.save(sys.argv[1], a=np.full(1000, float(sys.argv[2])))
print("saved", flush=True)
"""


def paused_save(path, value):
    """A process saving ``a=value`` to ``path``, stopped half-way (its temporary file open) until told."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(arrayopt.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", PAUSED_SAVE, str(path), str(value)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert child.stdout.readline().strip() == "writing"
    return child


def temporaries(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_the_next_save_removes_what_killed_saves_left_and_never_a_live_save_s_file(tmp_path):
    path = tmp_path / "run.ckpt"
    arrayopt.save(path, a=np.zeros(3))
    killed = [paused_save(path, k) for k in (1, 2)]
    for child in killed:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait()
    orphans = temporaries(tmp_path)
    assert len(orphans) == 2 and all(name.startswith(".run.ckpt.") for name in orphans)
    live = paused_save(path, 3)
    (live_file,) = set(temporaries(tmp_path)) - set(orphans)
    unrelated = [".run.ckpt.notmine.tmp", ".other.ckpt.0123456789ab.tmp", "run.ckpt.0123456789ab.tmp"]
    for name in unrelated:
        (tmp_path / name).write_bytes(b"x")
    try:
        arrayopt.save(path, a=np.full(3, 4.0))
        assert temporaries(tmp_path) == sorted([live_file, *unrelated])  # the orphans went, nothing else
        np.testing.assert_array_equal(arrayopt.load(path)["a"], np.full(3, 4.0))
    finally:
        live.stdin.write("go\n")
        live.stdin.flush()
        assert live.stdout.readline().strip() == "saved"
        assert live.wait(timeout=60) == 0
    np.testing.assert_array_equal(arrayopt.load(path)["a"], np.full(1000, 3.0))  # the live save completed
    assert temporaries(tmp_path) == sorted(unrelated)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_re_saving_keeps_the_file_s_permissions(tmp_path):
    path = tmp_path / "private.ckpt"
    arrayopt.save(path, a=np.ones(2))
    os.chmod(path, 0o600)
    arrayopt.save(path, a=np.zeros(2))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    np.testing.assert_array_equal(arrayopt.load(path)["a"], np.zeros(2))


# -- what save writes, load reads, and the other way round ----------------------------


def test_numbers_that_do_not_fit_a_float_are_a_value_error_on_load_and_refused_by_save():
    huge = r"10+\.\.\.0+"
    cases = [
        ("state", "step", 10**400, rf"'step': invalid step counter in optimizer state: {huge}$"),
        ("group", "lr", 10**400, rf"param group 0: lr is {huge}, which does not fit a float$"),
        ("group", "betas", (0.9, 10**400), rf"param group 0: .*is {huge}, which does not fit a float$"),
        ("group", "eps", -(10**400), rf"param group 0: eps is -{huge}, which does not fit a float$"),
    ]
    for part, key, value, pattern in cases:
        p = Parameter(np.ones(2))
        opt = arrayopt.Adam([p], lr=0.1)
        p.grad = np.ones(2)
        opt.step()
        sd = copy.deepcopy(opt.state_dict())
        (sd["state"][0] if part == "state" else sd["param_groups"][0])[key] = value
        before = copy.deepcopy(opt.state_dict())
        with pytest.raises(ValueError, match=pattern):
            opt.load_state_dict(sd)
        buffer = io.BytesIO()
        arrayopt.save(buffer, optimizer=type("Adam", (), {"state_dict": lambda self, sd=sd: sd})())  # as it is
        with pytest.raises(ValueError, match=pattern):
            arrayopt.load_into(buffer, optimizer=opt)
        assert same(opt.state_dict(), before), key
        # an optimizer holding such a number: save refuses what load would refuse
        (opt.state[p] if part == "state" else opt.param_groups[0])[key] = value
        with pytest.raises(ValueError, match=r"^optimizer: this state dict would not load back, so it is not saved"):
            arrayopt.save(io.BytesIO(), optimizer=opt)
    asgd = arrayopt.ASGD([Parameter(np.ones(2))])
    sd = asgd.state_dict()
    sd["state"][0] = {"step": 1.0, "eta": 10**400, "mu": 1.0, "ax": np.zeros(2)}
    with pytest.raises(ValueError, match=rf"'eta': must be a finite number or a 1-element array, got {huge}$"):
        asgd.load_state_dict(sd)


def test_a_lone_surrogate_is_refused_by_both_save_and_load():
    with pytest.raises(ValueError, match=r"note\['x'\]: the string 'a\\ud800' holds a lone surrogate"):
        arrayopt.save(io.BytesIO(), note={"x": "a\ud800"})
    with pytest.raises(ValueError, match=r"note: the string .* holds a lone surrogate"):
        arrayopt.save(io.BytesIO(), note={"a\udc00": 1})
    with pytest.raises(ValueError, match=r"the name of an entry: the string"):
        arrayopt.save(io.BytesIO(), **{"\ud800": 1})
    import json

    escaped = json.dumps({"x": "a\ud800"}).encode()  # ASCII JSON: '\\ud800' escaped, as a forger would write it
    assert b"\\ud800" in escaped
    meta = meta_with(objects=[{"name": "note", "kind": "value", "value": {"dict": [["x", "a\ud800"]]}}], arrays=[])
    with pytest.raises(ValueError, match=r"^checkpoint: corrupted metadata at note\['x'\]: the string .* surrogate"):
        load_bytes(rewrite({"arrayopt.json": meta}))
    # a surrogate pair written as an escape is one character: it loads, and saves again
    paired = meta_with(objects=[{"name": "note", "kind": "value", "value": "\U0001f600"}], arrays=[])
    assert b"\\ud83d\\ude00" in paired
    assert load_bytes(rewrite({"arrayopt.json": paired}))["note"] == "\U0001f600"
    assert round_trip(note="\U0001f600 é")["note"] == "\U0001f600 é"


def test_a_json_number_that_does_not_fit_a_float_is_refused():
    for literal in (b"1e999", b"-1e999", b"1e400"):
        meta = meta_with(objects=[{"name": "x", "kind": "value", "value": 0.5}], arrays=[]).replace(b"0.5", literal)
        with pytest.raises(ValueError, match=r"corrupted metadata: the JSON number .*e\d+ does not fit a float"):
            load_bytes(rewrite({"arrayopt.json": meta}))
    meta = meta_with(objects=[{"name": "x", "kind": "value", "value": 1e308}], arrays=[])
    assert load_bytes(rewrite({"arrayopt.json": meta}))["x"] == 1e308


# -- ParameterList and ParameterDict (issue 19) ------------------------------------------------


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_parameter_lists_and_dicts_save_and_load_into(kind, xp):
    arrays = {"w": xp.asarray(np.arange(6.0).reshape(2, 3)), "b": xp.asarray(np.array([0.5, -1.0]))}
    if kind == "list":
        params = arrayopt.ParameterList(list(arrays.values()), names=list(arrays))
        members, expected = list(params), [to_numpy(a) for a in arrays.values()]
    else:
        params = arrayopt.ParameterDict(arrays)
        members, expected = list(params.values()), {k: to_numpy(a) for k, a in arrays.items()}
    buffer = io.BytesIO()
    arrayopt.save(buffer, params=params)
    buffer.seek(0)
    saved = arrayopt.load(buffer)["params"]
    assert type(saved) is type(expected)
    if kind == "dict":
        assert list(saved) == list(expected)
        saved, expected = list(saved.values()), list(expected.values())
    for a, b in zip(saved, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    for p in members:
        p.data = p.data * 0.0
    buffer.seek(0)
    arrayopt.load_into(buffer, params=params)
    for p, a in zip(members, arrays.values(), strict=True):
        np.testing.assert_array_equal(to_numpy(p.data), to_numpy(a))


def test_a_parameter_dict_loads_only_its_own_names():
    buffer = io.BytesIO()
    arrayopt.save(buffer, params=arrayopt.ParameterDict({"w": np.ones(2)}))
    target = arrayopt.ParameterDict({"v": np.zeros(2)})
    buffer.seek(0)
    with pytest.raises(ValueError, match="keys differ"):
        arrayopt.load_into(buffer, params=target)
    np.testing.assert_array_equal(target["v"].data, np.zeros(2))


def test_type_names_take_their_article():
    with pytest.raises(TypeError, match=r"x: cannot save an object;"):
        arrayopt.save(io.BytesIO(), x=object())
    with pytest.raises(TypeError, match=r"x: cannot save a set;"):
        arrayopt.save(io.BytesIO(), x={1})

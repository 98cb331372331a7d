"""What a step guarantees: all or nothing, whatever the user does to the arrays around it.

* Ctrl-C (SIGINT) during a step lets it finish, then raises KeyboardInterrupt; no
  worker thread writes after ``step`` has returned or raised.
* Read-only parameters, state arrays or member views, and per-step numbers that do not
  fit the parameter's dtype, are refused before anything changes, on every path, and
  a refusal never makes a later step slower.
* A gradient or state array that is the parameter's own array gives torch's numbers.
* One optimizer is stepped by one thread at a time (a second one is refused); several
  optimizers step in several threads at once.

Every path means: numba, the NumPy ufunc plans, the rule run directly, the CuPy backend
on its CPU stand-ins (generated kernels and ``cupy.fuse``), array-api-strict, and flat
storage (ParameterList).
"""

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import arrayopt
import arrayopt.backends.numpy as numpy_backend
from arrayopt import Parameter, ParameterList
from arrayopt.backends import get_backend, plan

import cpu_elementwise

PATHS = ["numba", "plan", "direct", "cupy-elementwise", "cupy-fuse", "array_api_strict"]


class Path:
    """Arrays for one path: ``asarray`` makes them, ``host`` reads them back as NumPy."""

    def __init__(self, name, monkeypatch):
        self.name = name
        self.xp = None
        if name == "numba":
            pytest.importorskip("numba")
            monkeypatch.setattr(numpy_backend, "_numba", True)
        else:
            monkeypatch.setattr(numpy_backend, "_numba", False)
        if name == "plan":
            monkeypatch.setattr(numpy_backend, "PLAN_MIN_BYTES", 0)  # the small arrays here go through plans
        if name == "direct":
            monkeypatch.setattr(numpy_backend, "_ufunc_plans", False)
        if name.startswith("cupy"):
            elementwise = name == "cupy-elementwise"
            if elementwise and cpu_elementwise.COMPILER is None:
                pytest.skip("no C++ compiler to stand in for NVRTC")
            cpu_elementwise.install_cupy_stand_in(monkeypatch, elementwise)
        if name == "array_api_strict":
            self.xp = pytest.importorskip("array_api_strict")

    def asarray(self, values):
        array = np.array(values)
        return array if self.xp is None else self.xp.asarray(array)

    def set_read_only(self, array):
        (array if self.xp is None else array._array).flags.writeable = False


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    return Path(request.param, monkeypatch)


def host(array):
    return np.array(get_backend(array).to_numpy(array), copy=True)


def everything(opt, params, path=None):
    """Copies of the parameters and of every piece of state (counters included)."""
    state = []
    for p in params:
        for key, value in sorted(opt.state.get(p, {}).items()):
            state.append((key, host(value) if hasattr(value, "shape") else value))
    return [host(p.data) for p in params], state


def assert_same(before, after):
    (data0, state0), (data1, state1) = before, after
    for a, b in zip(data0, data1, strict=True):
        assert a.tobytes() == b.tobytes()
    assert [k for k, _ in state0] == [k for k, _ in state1]
    for (_, a), (_, b) in zip(state0, state1, strict=True):
        if isinstance(a, np.ndarray):
            assert a.tobytes() == b.tobytes()
        else:
            assert a == b


# -- Ctrl-C during a step ---------------------------------------------------------------

INTERRUPTED = ["plan", "numba", "direct", "numba-flat", "plan-flat"]


def interrupt_soon(delay):
    """A thread that sends SIGINT (Ctrl-C) to the main thread after ``delay`` seconds."""
    main = threading.main_thread().ident

    def send():
        time.sleep(delay)
        signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def big_adam(kind, seed):
    """Parameters big enough for the threads (numba's and the plans'), and their Adam."""
    rng = np.random.default_rng(seed)
    n = max(plan.PARALLEL_MIN_ELEMENTS, 1 << 20)
    arrays = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    if kind.endswith("flat"):
        params = list(ParameterList(arrays))
    else:
        params = [Parameter(a.copy()) for a in arrays]
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    return params, grads, arrays


def arrays_of(opt, p):
    state = opt.state[p]
    return p.data, state["exp_avg"], state["exp_avg_sq"], state["max_exp_avg_sq"]


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
@pytest.mark.parametrize("kind", INTERRUPTED)
def test_ctrl_c_during_a_step_lets_it_finish_and_nothing_writes_afterwards(kind, monkeypatch):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread")
    if kind.startswith("numba"):
        pytest.importorskip("numba")
    monkeypatch.setattr(numpy_backend, "_numba", kind.startswith("numba"))
    monkeypatch.setattr(numpy_backend, "_ufunc_plans", kind != "direct")
    previous = plan.set_num_threads(2)
    try:
        for trial, delay in enumerate((0.03, 0.055, 0.08)):
            params, grads, arrays = big_adam(kind, trial)
            opt = arrayopt.Adam(params, lr=1e-3, amsgrad=True)
            opt.step()  # compiled, state made
            sender = interrupt_soon(delay)
            with pytest.raises(KeyboardInterrupt):
                for _ in range(10_000):
                    opt.step()
                time.sleep(1)  # the signals come while sleeping if the steps were all done
            sender.join()
            snapshot = [np.array(a, copy=True) for p in params for a in arrays_of(opt, p)]
            time.sleep(0.05)  # no thread may still be writing
            now = [np.array(a, copy=True) for p in params for a in arrays_of(opt, p)]
            assert all(a.tobytes() == b.tobytes() for a, b in zip(snapshot, now, strict=True))
            # all or nothing: every parameter took the same number of whole steps
            steps = {opt.state[p]["step"] for p in params}
            assert len(steps) == 1
            replay = [Parameter(a.copy()) for a in arrays]
            for p, g in zip(replay, grads, strict=True):
                p.grad = g
            reference = arrayopt.Adam(replay, lr=1e-3, amsgrad=True)
            for _ in range(int(steps.pop())):
                reference.step()
            for p, q in zip(params, replay, strict=True):
                assert p.data.tobytes() == q.data.tobytes()
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    assert opt.state[p][key].tobytes() == reference.state[q][key].tobytes()
    finally:
        plan.set_num_threads(previous)


# -- read-only arrays -------------------------------------------------------------------

READ_ONLY = ["data", "state", "member", "flat_data"]


def read_only_setup(case, path):
    """An Adam stepped once; then the array of ``case`` made read-only. Returns (opt, params, the bad one)."""
    if case in ("member", "flat_data"):
        params = list(ParameterList([path.asarray([1.0, 2.0]), path.asarray([3.0, 4.0, 5.0]), path.asarray([6.0])]))
        for p, name in zip(params, "abc", strict=True):
            p.name = name
    else:
        params = [Parameter(path.asarray([1.0, 2.0]), name="a"), Parameter(path.asarray([3.0, 4.0, 5.0]), name="b")]
    opt = arrayopt.Adam(params, lr=0.1)
    for p in params:
        p.grad = path.asarray(np.ones(p.shape))
    opt.step()
    bad = params[1]
    if case == "data" or case == "member":
        path.set_read_only(bad.data)
    elif case == "state":
        path.set_read_only(opt.state[bad]["exp_avg_sq"])
    else:
        path.set_read_only(params[0]._flat[0].data)
        bad = params[0]
    return opt, params, bad


@pytest.mark.parametrize("case", READ_ONLY)
def test_a_read_only_array_is_refused_before_anything_changes(case, path):
    opt, params, bad = read_only_setup(case, path)
    before = everything(opt, params, path)
    what = "its optimizer state 'exp_avg_sq'" if case == "state" else "the array"
    with pytest.raises(ValueError, match=rf"^Parameter '{bad.name}': {what} is read-only, so the optimizer cannot"):
        opt.step()
    assert_same(before, everything(opt, params, path))


@pytest.mark.parametrize("case", READ_ONLY)
def test_a_refused_step_makes_no_later_step_slower(case, path):
    """The same optimizer steps as before once the array is writable again; numba keeps its kernel."""
    given_up = numba_kernels_given_up()  # other tests may have made numba give up on some on purpose
    opt, params, _ = read_only_setup(case, path)
    with pytest.raises(ValueError, match="read-only"):
        opt.step()
    for p in params:
        array = p.data if path.xp is None else p.data._array
        base = array.base if array.base is not None else array
        base.flags.writeable = True
        array.flags.writeable = True
    for key in ("exp_avg", "exp_avg_sq"):
        for p in params:
            array = opt.state[p][key] if path.xp is None else opt.state[p][key]._array
            array.flags.writeable = True
    twin = [Parameter(path.asarray(host(p.data))) for p in params]
    reference = arrayopt.Adam(twin, lr=0.1)
    reference.load_state_dict(opt.state_dict())
    for p, q in zip(params, twin, strict=True):
        q.grad = p.grad
    opt.step()  # RuntimeWarning (numba giving up on a kernel) is an error here
    reference.step()
    assert_same(everything(reference, twin, path), everything(opt, params, path))
    if path.name == "numba":
        assert numba_kernels_given_up() == given_up


def numba_kernels_given_up():
    """The (rule, signature) pairs for which numba's kernel was given up (None) in this process."""
    runs = get_backend(np.zeros(1))._kernels.items()
    return {(key, sig) for key, run in runs for sig, kernel in run.compiled.items() if kernel is None}


def test_a_read_only_operand_never_disables_a_numba_kernel():
    pytest.importorskip("numba")
    from arrayopt.optimizers.sgd import sgd_update

    saved = numpy_backend._numba
    numpy_backend._numba = True
    try:
        flags = {"maximize": False, "decay": False, "use_momentum": False, "nesterov": False, "first_step": False}
        kernel = get_backend(np.zeros(1)).kernel(sgd_update, **flags)
        p, g = np.ones(4, np.float32), np.ones(4, np.float32)
        p.flags.writeable = False
        with pytest.raises(ValueError, match="sgd_update: an array it writes is read-only"):
            kernel(p, g, 0.0, 0.5, 0.0, 0.0, 1.0)
        p.flags.writeable = True
        kernel(p, g, 0.0, 0.5, 0.0, 0.0, 1.0)
        assert (p == 0.5).all() and all(entry is not None for entry in kernel.compiled.values())
    finally:
        numpy_backend._numba = saved


# -- per-step numbers that do not fit the dtype -----------------------------------------

MISFITS = [
    ("SGD", {"lr": 1e300}, "float32", "lr=1e+300"),
    ("SGD", {"lr": 0.1, "weight_decay": 1e39}, "float32", "weight_decay=1e+39"),
    ("SGD", {"lr": 1e5}, "float16", "lr=100000.0"),
    ("Adam", {"lr": 1e39}, "float32", "lr=1e+39"),
    ("Adam", {"lr": 0.1, "eps": 1e39}, "float32", "eps=1e+39"),
    ("AdamW", {"lr": 0.1, "weight_decay": 1e300}, "complex64", "weight_decay=1e+300"),
    ("RMSprop", {"lr": 1e39}, "float32", "lr=1e+39"),
    ("Adagrad", {"lr": 1e39}, "float32", "lr=1e+39"),
]


@pytest.mark.parametrize("flat", [False, True], ids=["parameters", "flat"])
@pytest.mark.parametrize("row", MISFITS, ids=lambda r: f"{r[0]}-{r[3]}-{r[2]}")
def test_a_number_that_overflows_the_dtype_is_refused_before_anything_changes(row, flat, xp):
    name, kwargs, dtype, shown = row
    if dtype == "float16" and xp.__name__ == "array_api_strict":
        pytest.skip("array-api-strict has no float16")
    wide = xp.asarray(np.array([1.0, 2.0]))  # float64: every number fits, and it would be stepped first
    narrow = xp.asarray(np.array([1.0, -2.0, 3.0]).astype(dtype))
    params = [Parameter(wide, name="wide"), *(ParameterList([narrow]) if flat else [Parameter(narrow, name="narrow")])]
    for p in params:
        p.grad = xp.ones_like(p.data)
    opt = getattr(arrayopt, name)(params, **kwargs)
    before = everything(opt, params)
    message = rf"{name}'s {re.escape(shown)} cannot be converted to the parameter's dtype"
    with pytest.raises(RuntimeError, match=message):
        opt.step()
    assert_same(before, everything(opt, params))


def test_numbers_that_fit_float64_step_as_before():
    p = Parameter(np.array([1.0, 2.0]))
    p.grad = np.array([1e-300, 0.0])
    arrayopt.SGD([p], lr=1e300).step()
    np.testing.assert_array_equal(p.data, [0.0, 2.0])


# -- a gradient or state array that is the parameter's own array --------------------------

#: (optimizer, options, dtype, shape, what is the parameter's array: its gradient or a state key)
ALIASED = [
    ("AdamW", {"lr": 0.1, "weight_decay": 0.5}, "float64", (5,), "grad"),
    ("Adam", {"lr": 0.1, "weight_decay": 0.5, "amsgrad": True, "maximize": True}, "complex128", (5,), "grad"),
    ("NAdam", {"lr": 0.1, "weight_decay": 0.1, "decoupled_weight_decay": True}, "float64", (5,), "grad"),
    ("RAdam", {"lr": 0.1, "weight_decay": 0.1, "decoupled_weight_decay": True}, "float64", (5,), "grad"),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}, "float64", (5,), "grad"),
    ("ASGD", {"lr": 0.1, "t0": 0, "weight_decay": 0.1}, "float64", (5,), "grad"),
    ("Rprop", {"lr": 0.1}, "float64", (5,), "grad"),
    ("Adagrad", {"lr": 0.1, "weight_decay": 0.1}, "complex128", (5,), "grad"),
    ("Adadelta", {"lr": 0.5, "weight_decay": 0.1}, "float64", (5,), "grad"),
    ("Adamax", {"lr": 0.1, "weight_decay": 0.1}, "float64", (5,), "grad"),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1}, "float64", (5,), "grad"),
    ("Adafactor", {"lr": 0.1, "weight_decay": 0.3}, "float64", (2, 3), "grad"),
    ("Adafactor", {"lr": 0.1, "weight_decay": 0.3}, "float64", (5,), "grad"),
    ("Adam", {"lr": 0.1}, "float64", (5,), "exp_avg"),
    ("SGD", {"lr": 0.1, "momentum": 0.9}, "float64", (5,), "momentum_buffer"),
    ("Rprop", {"lr": 0.1}, "float64", (5,), "prev"),
    ("Adagrad", {"lr": 0.1}, "float64", (5,), "sum"),
]


def aliased_ids(row):
    return f"{row[0]}-{'-'.join(f'{k}={v}' for k, v in row[1].items())}-{row[2]}-{row[4]}"


def start(dtype, shape):
    values = np.linspace(0.5, 1.0, math.prod(shape))
    if dtype.startswith("complex"):
        values = values + 1j * np.linspace(-0.3, 0.7, values.size)
    return values.astype(dtype).reshape(shape)


def run_aliased(row, asarray, steps=3):
    """Steps where the gradient (or a state array) is the parameter's own array."""
    name, options, dtype, shape, alias = row
    p = Parameter(asarray(start(dtype, shape)))
    opt = getattr(arrayopt, name)([p], **options)
    for i in range(steps):
        p.grad = p.data if alias == "grad" else asarray(0.5 * host(p.data))
        opt.step()
        if alias != "grad" and i == 0:
            opt.state[p][alias] = p.data
    return host(p.data), {k: host(v) for k, v in opt.state[p].items() if hasattr(v, "shape") and v.ndim}


@pytest.mark.parametrize("row", ALIASED, ids=aliased_ids)
def test_operands_that_are_one_array_run_the_rule_in_order_on_every_path(row, path, monkeypatch):
    """Every path gives the bits of the rule run as written (each operation seeing the ones before)."""
    if row[0] == "Adafactor" and path.name == "array_api_strict":
        pytest.skip("Adafactor's means and norms are summed in another order there (not bitwise)")
    data, state = run_aliased(row, path.asarray)
    monkeypatch.undo()  # back to NumPy, the rule run directly
    monkeypatch.setattr(numpy_backend, "_numba", False)
    monkeypatch.setattr(numpy_backend, "_ufunc_plans", False)
    direct_data, direct_state = run_aliased(row, np.asarray)
    assert data.tobytes() == direct_data.tobytes()
    assert state.keys() == direct_state.keys()
    assert all(state[k].tobytes() == direct_state[k].tobytes() for k in state)


@pytest.mark.ref
@pytest.mark.parametrize("row", ALIASED, ids=aliased_ids)
def test_operands_that_are_one_array_give_torch_s_numbers(row, path, torch):
    name, options, dtype, shape, alias = row
    data, state = run_aliased(row, path.asarray)
    w = torch.nn.Parameter(torch.tensor(start(dtype, shape)))
    opt = getattr(torch.optim, name)([w], **options)
    for i in range(3):
        w.grad = w.data if alias == "grad" else w.data * 0.5
        opt.step()
        if alias != "grad" and i == 0:
            opt.state[w][alias] = w.data
    np.testing.assert_allclose(data, w.detach().numpy(), rtol=1e-12, atol=1e-300)
    for key, value in opt.state[w].items():
        if torch.is_tensor(value) and value.ndim:
            np.testing.assert_allclose(state[key], value.numpy(), rtol=1e-12, atol=1e-300, err_msg=key)


@pytest.mark.parametrize("path", [p for p in PATHS if p != "array_api_strict"], indirect=True)
def test_operands_that_overlap_otherwise_are_refused_and_disjoint_views_are_not(path):
    whole = path.asarray(np.linspace(0.0, 1.0, 11))
    shifted = Parameter(whole[:10], name="shifted")
    shifted.grad = whole[1:]  # the same memory, one element along: no order makes sense of it
    reversed_ = Parameter(path.asarray(np.linspace(1.0, 2.0, 4)), name="reversed")
    reversed_.grad = reversed_.data[::-1]
    for p in (shifted, reversed_):
        opt = arrayopt.Adam([p], lr=0.1)
        before = everything(opt, [p])
        with pytest.raises(ValueError, match=rf"^Parameter '{p.name}': two arrays of this update overlap in memory"):
            opt.step()
        assert_same(before, everything(opt, [p]))
    pair = path.asarray(np.linspace(1.0, 2.0, 8))
    even = Parameter(pair[0::2])
    even.grad = pair[1::2]  # interleaved, no element in common: the usual fused kernel
    copy = Parameter(host(pair)[0::2].copy())
    copy.grad = host(pair)[1::2].copy()
    for p in (even, copy):
        arrayopt.Adam([p], lr=0.1).step()
    assert host(even.data).tobytes() == copy.data.tobytes()


# -- threads ---------------------------------------------------------------------------


def test_a_second_thread_stepping_the_same_optimizer_is_refused():
    p = Parameter(np.ones(3))
    p.grad = np.ones(3)
    opt = arrayopt.Adam([p], lr=0.1)
    inside, release = threading.Event(), threading.Event()

    def closure():  # runs inside the first thread's step
        inside.set()
        release.wait(10)
        return 1.0

    first = threading.Thread(target=opt.step, args=(closure,))
    first.start()
    assert inside.wait(10)
    try:
        before = everything(opt, [p])
        with pytest.raises(RuntimeError, match=r"^Adam.step\(\) was called from two threads at once"):
            opt.step()
        assert_same(before, everything(opt, [p]))
    finally:
        release.set()
        first.join()
    assert opt.state[p]["step"] == 1.0
    opt.step()  # the optimizer is free again
    assert opt.state[p]["step"] == 2.0


@pytest.mark.parametrize("kind", ["numba", "plan"])
def test_several_optimizers_step_in_several_threads_at_once(kind, monkeypatch):
    if kind == "numba":
        pytest.importorskip("numba")
    monkeypatch.setattr(numpy_backend, "_numba", kind == "numba")
    previous = plan.set_num_threads(2)
    try:
        results = {}

        def train(seed, out):
            params, _, _ = big_adam("parameters", seed)
            opt = arrayopt.Adam(params, lr=1e-3)
            for _ in range(5):
                opt.step()
            out[seed] = [p.data for p in params]

        threads = [threading.Thread(target=train, args=(seed, results)) for seed in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for seed in range(3):
            alone = {}
            train(seed, alone)
            assert all(a.tobytes() == b.tobytes() for a, b in zip(results[seed], alone[seed], strict=True))
    finally:
        plan.set_num_threads(previous)


def test_parallel_numba_loops_from_two_threads_with_numba_s_workqueue_layer():
    """numba's fallback threading layer aborts the process when two threads enter it at once."""
    pytest.importorskip("numba")
    code = """
import threading
import numpy as np
import arrayopt
from arrayopt.backends import numpy as numpy_backend

numpy_backend.set_numba(True)

def train():
    p = arrayopt.Parameter(np.ones(1 << 21, np.float32))
    p.grad = np.full(1 << 21, 0.5, np.float32)
    opt = arrayopt.Adam([p], lr=0.1)
    for _ in range(20):
        opt.step()

threads = [threading.Thread(target=train) for _ in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
import numba
print(numba.threading_layer())
"""
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue", "NUMBA_NUM_THREADS": "2"}
    checkout = os.path.dirname(os.path.dirname(arrayopt.__file__))
    env["PYTHONPATH"] = os.pathsep.join([checkout, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "workqueue"

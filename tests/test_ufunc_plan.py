"""The NumPy path's ufunc plans (``backends/plan.py``) give the bits of the rule run directly.

The plan is what the NumPy backend runs for arrays of ``PLAN_MIN_BYTES`` and more when
numba is off. Here the threshold is lowered to zero and the chunks and the threading
threshold are made tiny, so that the small arrays of the case table go through
chunks, short tails and several threads.
"""

import os
import select
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from special_values import WHICH, assert_same_bits, every_function, special_pairs

import arrayopt
import arrayopt.backends.numpy as numpy_backend
from arrayopt.backends import get_backend, plan, trace
from arrayopt.optimizers.adam import adam_update

import harness
from cases import by_dtype


def run_case(case, inputs, *, planned):
    saved = numpy_backend._numba, numpy_backend.PLAN_MIN_BYTES
    numpy_backend._numba = False
    # Direct: every array below the threshold runs the rule itself on NumPy.
    numpy_backend.PLAN_MIN_BYTES = 0 if planned else 1 << 62
    try:
        return harness.run_arrayopt(case, np, inputs)
    finally:
        numpy_backend._numba, numpy_backend.PLAN_MIN_BYTES = saved


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(plan, "PLAN_CHUNK_BYTES", 40)  # 10 float32 or 5 float64 elements per chunk
    monkeypatch.setattr(plan, "PARALLEL_MIN_ELEMENTS", 12)
    previous = plan.set_num_threads(3)
    yield
    plan.set_num_threads(previous)


@pytest.mark.parametrize(("case", "dtype"), by_dtype(("float32", "float64", "complex64")), ids=str)
def test_plan_equals_the_rule_bitwise(case, dtype, small_chunks):
    """Every case of the table: parameters and state after every step."""
    inputs = harness.make_inputs(dtype)
    assert_same_bits(run_case(case, inputs, planned=True), run_case(case, inputs, planned=False))


@pytest.mark.parametrize(("case", "dtype"), by_dtype(("float16", "float32", "complex128")), ids=str)
def test_every_shipped_rule_has_a_plan(case, dtype, monkeypatch):
    """No rule of the case table falls back to running itself on large contiguous operands."""
    monkeypatch.setattr(numpy_backend, "_numba", False)
    monkeypatch.setattr(numpy_backend, "PLAN_MIN_BYTES", 0)
    direct = []
    monkeypatch.setattr(numpy_backend, "_apply", lambda rule, args, flags: direct.append(rule.__name__))
    harness.run_arrayopt(case, np, harness.make_inputs(dtype))
    assert direct == []


def test_the_cases_really_run_planned(monkeypatch):
    monkeypatch.setattr(numpy_backend, "_numba", False)
    p = arrayopt.Parameter(np.ones(1 << 16, np.float32))  # 256 KiB: above PLAN_MIN_BYTES
    p.grad = np.ones(1 << 16, np.float32)
    arrayopt.Adam([p], amsgrad=True).step()
    kernel = get_backend(p.data).kernel(adam_update, maximize=False, decay="none", amsgrad=True, lerp_from_end=False)
    plans = [entry[0] for entry in kernel.plans.values() if entry is not None]
    assert any(isinstance(x, plan.UfuncPlan) and x.dtype == np.float32 for x in plans)


def test_adam_needs_one_temporary():
    """The storage planner writes results into their operands and reuses one buffer."""
    kinds = ("array",) * 4 + ("scalar",) * 10
    flags = {"maximize": False, "decay": "decoupled", "amsgrad": False, "lerp_from_end": False}
    adam = plan.UfuncPlan(trace.trace(adam_update, flags, kinds), np.float32)
    assert (adam.value_temps, adam.bool_temps) == (1, 0)
    assert "copyto" not in adam.source  # every result computed where it is stored


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("which", WHICH)
def test_element_operations_on_special_values(which, dtype, small_chunks):
    a, b = special_pairs(dtype)
    program = trace.trace(every_function, {"which": which}, ("array", "array", "array", "scalar"))
    expected = np.full_like(a, 7.0)
    with np.errstate(all="ignore"):
        every_function(np, expected, a, b, 0.3, which=which)
    out = np.full_like(a, 7.0)
    with np.errstate(all="ignore"):
        plan.UfuncPlan(program, dtype)(out, a, b, 0.3)
    assert out.tobytes() == expected.tobytes()


def aliasing_rule(xp, x, y, z, s):
    # Old values read after new ones are computed, a value stored twice, an old value
    # stored elsewhere, a where over an operand it overwrites.
    t = x * s
    x[...] = y + t
    y[...] = xp.where(y > 0, x, y - t)
    z[...] = t


def test_storage_planning_keeps_old_values():
    rng = np.random.default_rng(3)
    x, y, z = (rng.standard_normal(1000) for _ in range(3))
    expected = [a.copy() for a in (x, y, z)]
    aliasing_rule(np, *expected, 0.7)
    program = trace.trace(aliasing_rule, {}, ("array", "array", "array", "scalar"))
    plan.UfuncPlan(program, np.float64)(x, y, z, 0.7)
    for got, want in zip((x, y, z), expected, strict=True):
        assert got.tobytes() == want.tobytes()


def copy_then_overwrite(xp, a, b):
    b[...] = a  # b is stored the old a, while a gets a computed value
    a[...] = b * 2.0


def test_an_old_value_is_copied_before_it_is_overwritten():
    a, b = np.arange(4.0), np.zeros(4)
    program = trace.trace(copy_then_overwrite, {}, ("array", "array"))
    plan.UfuncPlan(program, np.float64)(a, b)
    np.testing.assert_array_equal(b, np.arange(4.0))
    np.testing.assert_array_equal(a, 2 * np.arange(4.0))


def test_old_values_copied_into_each_other_are_refused():
    """Tracing cannot express a swap, but a hand-made program can; no copy order is right."""
    program = trace.Program(("array", "array"))
    program.nodes += [trace.Node("array", "value", (), 0), trace.Node("array", "value", (), 1)]
    program.stores.update({0: 1, 1: 0})
    with pytest.raises(trace.NotCompilable, match="copied into each other"):
        plan.UfuncPlan(program, np.float64)


def test_errstate_reaches_the_worker_threads(small_chunks):
    def divide(xp, p, g):
        p /= g

    program = trace.trace(divide, {}, ("array", "array"))
    p, g = np.ones(100), np.ones(100)
    g[-1] = 0.0  # in the last thread's block
    with np.errstate(divide="raise"), pytest.raises(FloatingPointError):
        plan.UfuncPlan(program, np.float64)(p, g)
    with np.errstate(divide="ignore"):
        plan.UfuncPlan(program, np.float64)(p, g)
    assert np.isinf(p[-1])


def test_no_thread_writes_after_a_failed_call_has_raised(small_chunks, monkeypatch):
    """A block that fails while another is still running: the call waits for every block before it raises."""

    def add_one(xp, p):
        p += 1.0

    ufunc_plan = plan.UfuncPlan(trace.trace(add_one, {}, ("array",)), np.float64)
    block = ufunc_plan._block

    def slow_or_failing(arrays, scalars, lo, hi):
        if lo == 0:  # the calling thread's block
            block(arrays, scalars, lo, hi)
        elif hi == arrays[0].shape[0]:  # the last thread's: slow, then writes
            time.sleep(0.2)
            block(arrays, scalars, lo, hi)
        else:
            raise MemoryError("a worker failed")

    monkeypatch.setattr(ufunc_plan, "_block", slow_or_failing)
    p = np.zeros(100)
    with pytest.raises(MemoryError, match="a worker failed"):
        ufunc_plan(p)
    when_raised = p.copy()
    time.sleep(0.3)
    assert p.tobytes() == when_raised.tobytes()  # nothing written after the call raised
    assert p[-1] == 1.0  # the slow block had finished


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")
def test_ctrl_c_waits_for_the_threads_and_the_whole_call(small_chunks, monkeypatch):
    """SIGINT while the blocks run: the call completes, then KeyboardInterrupt is raised."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread")

    def add_one(xp, p):
        p += 1.0

    ufunc_plan = plan.UfuncPlan(trace.trace(add_one, {}, ("array",)), np.float64)
    block = ufunc_plan._block
    main = threading.main_thread().ident

    def interrupted(arrays, scalars, lo, hi):
        if lo == 0:  # Ctrl-C reaches the calling thread while the workers are still at it
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.05)
        else:
            time.sleep(0.1)
        block(arrays, scalars, lo, hi)

    monkeypatch.setattr(ufunc_plan, "_block", interrupted)
    p = np.zeros(100)
    with pytest.raises(KeyboardInterrupt):
        ufunc_plan(p)
    assert (p == 1.0).all()  # every block done when KeyboardInterrupt came


# 40 elements: above PARALLEL_MIN_ELEMENTS but within one chunk (64 float32): no thread to give it to
@pytest.mark.parametrize("n", [1001, 40])
@pytest.mark.parametrize("threads", [1, 2, 5])
def test_threads_and_chunks_give_the_same_bits(threads, n, monkeypatch):
    monkeypatch.setattr(plan, "PLAN_CHUNK_BYTES", 256)
    monkeypatch.setattr(plan, "PARALLEL_MIN_ELEMENTS", 8)
    monkeypatch.setattr(plan, "_executor", None)  # no pool yet: the call makes the one it needs
    previous = plan.set_num_threads(threads)
    try:
        flags = {"maximize": False, "decay": "l2", "amsgrad": True, "lerp_from_end": False}
        kinds = ("array",) * 5 + ("scalar",) * 9
        adam = plan.UfuncPlan(trace.trace(adam_update, flags, kinds), np.float32)
        rng = np.random.default_rng(1)
        param = rng.standard_normal(n).astype(np.float32)
        direct = [param.copy(), *(np.zeros_like(param) for _ in range(3))]
        planned = [param.copy(), *(np.zeros_like(param) for _ in range(3))]
        for t in range(1, 4):
            g = rng.standard_normal(n).astype(np.float32)
            scalars = (0.1, 0.99, 0.1, 0.9, 0.999, 0.001, 1e-3 / (1 - 0.9**t), (1 - 0.999**t) ** 0.5, 1e-8)
            adam_update(np, direct[0], g, *direct[1:], *scalars, **flags)
            adam(planned[0], g, *planned[1:], *scalars)
        for x, y in zip(direct, planned, strict=True):
            assert x.tobytes() == y.tobytes()
    finally:
        plan.set_num_threads(previous)


def test_set_num_threads_checks_its_argument():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            plan.set_num_threads(bad)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ARRAYOPT_NUM_THREADS": "3", "OMP_NUM_THREADS": "2"}, "3"),
        ({"OMP_NUM_THREADS": "2"}, "2"),
        ({"ARRAYOPT_NUM_THREADS": "0"}, "ValueError: ARRAYOPT_NUM_THREADS must be a positive integer, got '0'"),
        ({"OMP_NUM_THREADS": "many"}, "ValueError: OMP_NUM_THREADS must be a positive integer, got 'many'"),
        ({}, "the CPUs this process may run on"),
    ],
)
def test_thread_count_from_the_environment(env, expected):
    if not env:  # read now, not at collection: the child inherits this process's affinity as it is now
        expected = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    code = (
        "from arrayopt.backends import plan\n"
        "try:\n    print(plan.get_num_threads())\n"
        "except ValueError as e:\n    print('ValueError:', e)\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("ARRAYOPT_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == expected


def test_the_backend_module_sets_the_plan_threads():
    previous = numpy_backend.set_num_threads(4)
    try:
        assert plan.get_num_threads() == numpy_backend.get_num_threads() == 4
    finally:
        numpy_backend.set_num_threads(previous)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_threads(small_chunks):
    """A child inherits the pool object but not its threads; a task given to a thread it
    believes idle would never run (as ThreadPoolExecutor works), so it starts a new pool."""

    def add_one(xp, p):
        p += 1.0

    program = trace.trace(add_one, {}, ("array",))
    plan.UfuncPlan(program, np.float64)(np.zeros(100))  # the parent's pool now exists
    inherited = plan._pool(2)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a new pool, and one step over three threads
        try:
            p = np.zeros(100)
            plan.UfuncPlan(program, np.float64)(p)
            fresh = plan._pool(2) is not inherited
            os.write(write, b"ok" if fresh and (p == 1.0).all() else b"wrong")
        finally:
            os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 30)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        assert ready, "the forked child hung"
        assert os.read(read, 16) == b"ok"
    finally:
        os.waitpid(pid, 0)
        os.close(read)

"""arrayopt.distributed on several ranks: run under mpiexec by tests/test_distributed.py.

    mpiexec -n 3 python -m mpi4py tests/mpi_scenarios.py [--write CKPT] [--resume CKPT] [scenario ...]

``python -m mpi4py`` aborts every rank when one raises, so a failed check ends the
run instead of leaving the other ranks waiting. Each scenario runs on every rank and
checks on every rank; rank 0 prints ``ok <scenario>`` and ``figure <name> <value>``
lines (the largest relative differences from a single process, memory ratios).

The problem: softmax regression on a fixed data set whose rows are split into equal
contiguous shards, one per rank. Each rank's loss is the mean over its shard, so the
mean over the ranks of the shard gradients is the gradient of the whole data set. The
reference is the same optimizer in one process on the whole data set, computed on
every rank.
"""

import argparse
import copy
import hashlib
import logging
import os
import sys
import tracemalloc

import numpy as np
from mpi4py import MPI

import arrayopt
from arrayopt.distributed import DistributedOptimizer, ZeroRedundancyOptimizer, broadcast_parameters

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
N, D, C = 72, 6, 3  # rows (divisible by 1, 2, 3, 4, 6, 8), features, classes
FIGURES: dict[str, float] = {}


# -- the problem ---------------------------------------------------------------------------


def data():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, D))
    y = rng.integers(0, C, size=N)
    return x, y


def shard(x, y, rank=RANK, size=SIZE):
    n = len(x) // size
    return x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n]


def initial():
    rng = np.random.default_rng(11)
    return rng.normal(size=(D, C)) * 0.5, rng.normal(size=C) * 0.1, rng.normal(size=C) * 0.1


def loss_and_grads(w, b, s, x, y):
    """Mean cross-entropy of softmax(x w + b + s) and its gradients."""
    z = x @ w + b + s
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(x)
    loss = -np.mean(np.log(p[np.arange(n), y]))
    p[np.arange(n), y] -= 1.0
    p /= n
    return float(loss), x.T @ p, p.sum(axis=0), p.sum(axis=0)


class Model:
    """W and b in a ParameterList (flat) or as separate Parameters; s always separate."""

    def __init__(self, flat, dtype=np.float64, values=None):
        w, b, s = initial() if values is None else values
        if flat:
            self.flat = arrayopt.ParameterList([w.astype(dtype), b.astype(dtype)], names=["W", "b"])
            self.w, self.b = self.flat
        else:
            self.w = arrayopt.Parameter(w.astype(dtype), name="W")
            self.b = arrayopt.Parameter(b.astype(dtype), name="b")
        self.s = arrayopt.Parameter(s.astype(dtype), name="s")

    def params(self):
        return [self.w, self.b, self.s]

    def groups(self, **second):
        return [{"params": [self.w, self.b]}, {"params": [self.s], **second}]

    def set_grads(self, x, y):
        loss, gw, gb, gs = loss_and_grads(
            self.w.data.astype(np.float64), self.b.data.astype(np.float64), self.s.data.astype(np.float64), x, y
        )
        dtype = self.w.dtype
        self.w.grad, self.b.grad, self.s.grad = gw.astype(dtype), gb.astype(dtype), gs.astype(dtype)
        return loss

    def values(self):
        return [np.array(p.data, copy=True) for p in self.params()]


def relative(a, b):
    """Largest elementwise relative difference of two lists of arrays."""
    worst = 0.0
    for u, v in zip(a, b, strict=True):
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        worst = max(worst, float(np.max(np.abs(u - v) / np.maximum(np.abs(v), 1e-300))))
    return worst


def same_bits_on_every_rank(arrays, what):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    digests = COMM.allgather(h.hexdigest())
    assert len(set(digests)) == 1, f"{what}: the ranks hold different bits ({digests})"


def figure(name, value):
    FIGURES[name] = max(FIGURES.get(name, 0.0), value)


# -- equality with one process ---------------------------------------------------------------

ELEMENTWISE = [
    ("SGD", lambda p: arrayopt.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("Adam", lambda p: arrayopt.Adam(p, lr=0.05)),
    ("AdamW", lambda p: arrayopt.AdamW(p, lr=0.05, amsgrad=True)),
    ("NAdam", lambda p: arrayopt.NAdam(p, lr=0.05)),
    ("RAdam", lambda p: arrayopt.RAdam(p, lr=0.05)),
    ("Adamax", lambda p: arrayopt.Adamax(p, lr=0.05)),
    ("Adagrad", lambda p: arrayopt.Adagrad(p, lr=0.1)),
    ("Adadelta", lambda p: arrayopt.Adadelta(p, lr=1.0)),
    ("RMSprop", lambda p: arrayopt.RMSprop(p, lr=0.01, momentum=0.5)),
    ("ASGD", lambda p: arrayopt.ASGD(p, lr=0.05)),
]


def copy_into(opt, ref, params, ref_params):
    """Give ``opt``'s parameters and state ``ref``'s values, in place (dtypes kept)."""
    for p, q in zip(params, ref_params, strict=True):
        p.data[...] = q.data
        for key, value in ref.state[q].items():
            if hasattr(value, "shape"):
                opt.state[p][key][...] = value
            else:
                opt.state[p][key] = copy.deepcopy(value)


def scenario_elementwise():
    """DistributedOptimizer(X) equals X on the whole data and the ranks agree bitwise after every step.

    Per step (both starting from the same parameters and state): 1e-12 relative. Over
    a free run of 15 steps the optimizers' own sensitivity to rounding adds up (the
    centered RMSprop's sqrt(v - m^2) cancels), so the trajectory is held to 1e-9.
    """
    x, y = data()
    xs, ys = shard(x, y)
    for flat in (True, False):
        for name, make in ELEMENTWISE:
            for lockstep in (True, False):
                dist, single = Model(flat), Model(flat)
                opt = DistributedOptimizer(make(dist.groups(lr=0.02)))
                ref = make(single.groups(lr=0.02))
                for _ in range(8 if lockstep else 15):
                    opt.zero_grad()
                    dist.set_grads(xs, ys)
                    opt.step()
                    ref.zero_grad()
                    single.set_grads(x, y)
                    ref.step()
                    error = relative(dist.values(), single.values())
                    same_bits_on_every_rank(dist.values(), name)
                    if lockstep:
                        assert error < 1e-12, f"{name} (flat={flat}): {error:.3g} from one process in one step"
                        figure(f"elementwise_step_max_rel[{name}]", error)
                        copy_into(opt, ref, dist.params(), single.params())
                    else:
                        assert error < 1e-9, f"{name} (flat={flat}): {error:.3g} from one process after 15 steps"
                        figure(f"elementwise_15_steps_max_rel[{name}]", error)
                state = [v for s in opt.state.values() for v in s.values() if hasattr(v, "shape")]
                same_bits_on_every_rank(state, name)


def scenario_float32_and_sum():
    """float32 buffers and op='sum' (each rank's loss a share of one total)."""
    x, y = data()
    xs, ys = shard(x, y)
    dist, single = Model(True, np.float32), Model(True, np.float32)
    opt = DistributedOptimizer(arrayopt.Adam(dist.params(), lr=0.05), op="sum")
    ref = arrayopt.Adam(single.params(), lr=0.05)
    for _ in range(10):
        dist.set_grads(xs, ys)
        for p in dist.params():
            p.grad = p.grad / np.float32(SIZE)  # shard mean / ranks = share of the whole mean
        opt.step()
        single.set_grads(x, y)
        ref.step()
        same_bits_on_every_rank(dist.values(), "float32")
    np.testing.assert_allclose(
        np.concatenate([v.ravel() for v in dist.values()]),
        np.concatenate([v.ravel() for v in single.values()]),
        rtol=2e-5,
    )


def lbfgs_closure(model, x, y, calls):
    def closure():
        calls[0] += 1
        return model.set_grads(x, y)

    return closure


def scenario_lbfgs():
    """DistributedOptimizer(LBFGS): gradients and loss averaged per closure call; 1e-9 from one process."""
    x, y = data()
    xs, ys = shard(x, y)
    for line_search in (None, "strong_wolfe"):
        for flat in (True, False):
            dist, single = Model(flat), Model(flat)
            opt = DistributedOptimizer(arrayopt.LBFGS(dist.params(), lr=0.5, max_iter=15, line_search_fn=line_search))
            ref = arrayopt.LBFGS(single.params(), lr=0.5, max_iter=15, line_search_fn=line_search)
            calls, ref_calls = [0], [0]
            for _ in range(3):
                loss = opt.step(lbfgs_closure(dist, xs, ys, calls))
                ref_loss = ref.step(lbfgs_closure(single, x, y, ref_calls))
                assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss), (loss, ref_loss)
                error = relative(dist.values(), single.values())
                assert error < 1e-9, f"LBFGS {line_search} (flat={flat}): {error:.3g} from one process"
                figure(f"lbfgs_max_rel[{line_search}]", error)
                same_bits_on_every_rank(dist.values(), "LBFGS")
            # Same decisions: as many closure calls as one process, on every rank.
            assert calls[0] == ref_calls[0], (calls, ref_calls)
            assert len(set(COMM.allgather(calls[0]))) == 1
            assert opt.state_dict()["state"][0]["n_iter"] == ref.state_dict()["state"][0]["n_iter"]


# -- ZeRO -----------------------------------------------------------------------------------------


def big_model(seed=3, sizes=(5000, 3000, 4000, 2000, 6000, 1000, 3000, 4000)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=n) for n in sizes]


def state_bytes(state):
    return sum(v.nbytes for s in state.values() for v in s.values() if hasattr(v, "nbytes"))


def scenario_zero():
    """ZeRO(Adam): equals Adam on the whole data; state per rank ~1/R; consolidated state loads into Adam."""
    x, y = data()
    xs, ys = shard(x, y)
    for flat in (True, False):
        dist, single = Model(flat), Model(flat)
        opt = ZeroRedundancyOptimizer(dist.groups(lr=0.02), arrayopt.Adam, lr=0.05)
        ref = arrayopt.Adam(single.groups(lr=0.02), lr=0.05)
        for _ in range(10):
            dist.set_grads(xs, ys)
            opt.step()
            single.set_grads(x, y)
            ref.step()
            error = relative(dist.values(), single.values())
            assert error < 1e-12, f"ZeRO (flat={flat}): {error:.3g}"
            figure("zero_max_rel", error)
            same_bits_on_every_rank(dist.values(), "ZeRO")
        owners = COMM.allgather(sorted(opt.owner(p) for p in dist.params()))
        assert len({tuple(o) for o in owners}) == 1
        opt.consolidate_state_dict(to=SIZE - 1)
        if RANK == SIZE - 1:
            whole = opt.state_dict()
            expected = ref.state_dict()
            assert whole["param_groups"] == expected["param_groups"], (whole["param_groups"], expected["param_groups"])
            assert sorted(whole["state"]) == sorted(expected["state"])
            for k, s in expected["state"].items():
                assert s["step"] == whole["state"][k]["step"]
                assert relative([whole["state"][k]["exp_avg_sq"]], [s["exp_avg_sq"]]) < 1e-12
            plain = arrayopt.Adam(Model(flat).groups(lr=0.02), lr=0.05)
            plain.load_state_dict(whole)
        else:
            try:
                opt.state_dict()
            except RuntimeError as exc:
                assert "consolidate_state_dict" in str(exc)
            else:
                raise AssertionError("state_dict() on a rank without the consolidated state")

    # Memory: the state each rank allocates, against Adam on every parameter.
    arrays = big_model()
    plain_params = arrayopt.ParameterList(arrays)
    zero_params = arrayopt.ParameterList(arrays)
    plain = arrayopt.Adam(plain_params, lr=0.01)
    zero = ZeroRedundancyOptimizer(zero_params, arrayopt.Adam, lr=0.01)
    for params in (plain_params, zero_params):
        params.flat_grad = np.ones(params.flat_data.shape)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    plain.step()
    plain_bytes = tracemalloc.get_traced_memory()[0] - before
    before = tracemalloc.get_traced_memory()[0]
    zero.step()
    zero_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    total = 2 * 8 * sum(a.size for a in arrays)  # exp_avg and exp_avg_sq
    assert plain_bytes >= total
    shares = COMM.allgather(state_bytes(zero.state))
    assert sum(shares) == total, (shares, total)
    bound = total / SIZE + 2 * 8 * max(a.size for a in arrays)  # a shard of whole parameters
    assert max(shares) <= bound, (shares, bound)
    allocated = COMM.allgather(zero_bytes)
    assert max(allocated) <= bound + 64 * 1024, (allocated, bound)
    figure("zero_state_share_max", max(shares) / total)
    figure("zero_allocated_share_max", max(allocated) / plain_bytes)
    np.testing.assert_array_equal(plain_params.flat_data, zero_params.flat_data)


def scenario_zero_reshard():
    """load_state_dict re-shards a whole-model state dict (from one process) on any number of ranks."""
    arrays = big_model(5, (300, 200, 500, 100, 400))
    single = arrayopt.ParameterList(arrays)
    ref = arrayopt.AdamW(single, lr=0.01)
    for k in range(3):
        single.flat_grad = np.sin(np.arange(single.flat_data.size) + k)
        ref.step()
    params = arrayopt.ParameterList([np.array(p.data) for p in single])
    # op="sum" with the whole gradient on rank 0 and zeros elsewhere: exactly one process's gradient
    opt = ZeroRedundancyOptimizer(params, arrayopt.AdamW, op="sum", lr=0.5)
    opt.load_state_dict(ref.state_dict())
    assert opt.param_groups[0]["lr"] == 0.01
    for k in range(3, 6):
        g = np.sin(np.arange(single.flat_data.size) + k)
        single.flat_grad = g
        params.flat_grad = g if RANK == 0 else np.zeros_like(g)
        ref.step()
        opt.step()
        np.testing.assert_array_equal(params.flat_data, single.flat_data)
    # add_param_group: a new group split over the ranks, old shards untouched
    owners = [opt.owner(p) for p in params]
    extra = arrayopt.Parameter(np.ones(7), name="extra")
    opt.add_param_group({"params": [extra], "lr": 0.1})
    assert [opt.owner(p) for p in params] == owners
    ref_extra = arrayopt.Parameter(np.ones(7), name="extra")
    ref.add_param_group({"params": [ref_extra], "lr": 0.1})
    for p_, e_ in ((single, ref_extra), (params, extra)):
        p_.zero_grad()
        e_.grad = np.ones(7) if (RANK == 0 or e_ is ref_extra) else np.zeros(7)
    ref.step()
    opt.step()
    np.testing.assert_array_equal(extra.data, ref_extra.data)
    same_bits_on_every_rank([extra.data, params.flat_data], "add_param_group")


# -- checkpoints --------------------------------------------------------------------------------


def checkpoint_run(steps, path_in=None, path_out=None, use_zero=False):
    """Adam (distributed or ZeRO) on the whole problem: steps, optional resume and save."""
    x, y = data()
    xs, ys = shard(x, y)
    model = Model(True)
    if use_zero:
        opt = ZeroRedundancyOptimizer(model.groups(lr=0.02), arrayopt.Adam, lr=0.05)
    else:
        opt = DistributedOptimizer(arrayopt.Adam(model.groups(lr=0.02), lr=0.05))
    sched = arrayopt.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    done = 0
    if path_in is not None:
        loaded = arrayopt.load_into(path_in, optimizer=opt, scheduler=sched, params=model.params())
        done = loaded["done"]
    for _ in range(steps):
        model.set_grads(xs, ys)
        opt.step()
        sched.step()
        done += 1
    if path_out is not None:
        if use_zero:
            opt.consolidate_state_dict(to=0)
        if RANK == 0:
            arrayopt.save(path_out, optimizer=opt, scheduler=sched, params=model.params(), done=done)
        COMM.Barrier()
    return model, done


def single_run(steps):
    x, y = data()
    model = Model(True)
    opt = arrayopt.Adam(model.groups(lr=0.02), lr=0.05)
    sched = arrayopt.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    for _ in range(steps):
        model.set_grads(x, y)
        opt.step()
        sched.step()
    return model


def scenario_checkpoint(write=None, resume=None):
    """Rank 0's checkpoint resumes on another number of ranks (and in one process) to the same numbers."""
    if resume is not None:
        for use_zero, path in ((False, resume), (True, resume + ".zero")):
            model, done = checkpoint_run(5, path_in=path, use_zero=use_zero)
            reference = single_run(done)
            error = relative(model.values(), reference.values())
            assert error < 1e-12, f"resumed on {SIZE} ranks (zero={use_zero}): {error:.3g}"
            figure("checkpoint_resume_max_rel", error)
            same_bits_on_every_rank(model.values(), "resume")
    if write is not None:
        checkpoint_run(6, path_out=write)
        checkpoint_run(6, path_out=write + ".zero", use_zero=True)
        if RANK == 0:  # the state dicts are the plain optimizer's: they load into one
            plain = arrayopt.Adam(Model(True).groups(lr=0.02), lr=0.05)
            for path in (write, write + ".zero"):
                arrayopt.load_into(path, optimizer=plain)


# -- bad input and mismatches ----------------------------------------------------------------------


def expect_everywhere(kind, fragment, action):
    """``action()`` raises ``kind`` with the same message on every rank, containing ``fragment``."""
    try:
        action()
    except kind as exc:
        message = f"{type(exc).__name__}: {exc}"
    else:
        message = "no error"
    messages = COMM.allgather(message)
    assert len(set(messages)) == 1, messages
    assert message.startswith(kind.__name__) and fragment in message, (message, fragment)
    return message


def scenario_errors():
    """Mismatches raise on every rank, naming the parameter; the optimizer still works afterwards."""
    if SIZE > 1:
        construction_mismatches()
        step_mismatches()
    single_rank_errors()


def construction_mismatches():
    """Shapes, dtypes and options that differ across ranks: ValueError at construction, on every rank."""
    shape = (3,) if RANK == 0 else (4,)
    p = arrayopt.Parameter(np.zeros(shape), name="w")
    msg = expect_everywhere(
        ValueError, "the shape of Parameter 'w'", lambda: DistributedOptimizer(arrayopt.SGD([p], lr=0.1))
    )
    assert ("(3,) on rank 0" in msg) and ("(4,) on rank" in msg), msg
    expect_everywhere(ValueError, "Parameter 'w'", lambda: ZeroRedundancyOptimizer([p], arrayopt.Adam))
    expect_everywhere(ValueError, "params[0]", lambda: broadcast_parameters([p]))
    dtype = np.float64 if RANK == 0 else np.float32
    q = arrayopt.ParameterList([np.zeros(3), np.zeros(2, dtype)], names=["a", "b"])
    expect_everywhere(ValueError, "the dtype of Parameter 'b'", lambda: DistributedOptimizer(arrayopt.Adam(q)))
    r = arrayopt.Parameter(np.zeros(2), name="r")
    expect_everywhere(ValueError, "option 'lr'", lambda: DistributedOptimizer(arrayopt.SGD([r], lr=0.1 * (RANK + 1))))


def step_mismatches():
    """A gradient or a loss on some ranks only, and different starting values: RuntimeError at the step."""
    model = Model(True)
    broadcast_parameters(model.params())
    opt = DistributedOptimizer(arrayopt.Adam(model.params(), lr=0.1))
    x, y = data()
    model.set_grads(*shard(x, y))
    if RANK == SIZE - 1:
        model.b.grad = None
    before = model.values()
    msg = expect_everywhere(RuntimeError, "Parameter 'b'", opt.step)
    assert f"no gradient on rank {SIZE - 1}" in msg, msg
    assert relative(model.values(), before) == 0 and not opt.state
    model.set_grads(*shard(x, y))
    opt.step()  # in step again: no collective was left half-done
    same_bits_on_every_rank(model.values(), "after a mismatch")

    # a closure that returns None on one rank
    def closure():
        loss = model.set_grads(*shard(x, y))
        return None if RANK == 0 else loss

    expect_everywhere(RuntimeError, "a closure that returned None on rank 0", lambda: opt.step(closure))

    # different starting values, then broadcast_parameters
    w = arrayopt.ParameterList([np.full(3, float(RANK))], names=["w"])
    opt = DistributedOptimizer(arrayopt.SGD(w, lr=0.1))
    w[0].grad = np.ones(3)
    expect_everywhere(RuntimeError, "values of Parameter 'w'", opt.step)
    broadcast_parameters(w, root=SIZE - 1)
    assert np.all(w[0].data == SIZE - 1)
    opt.step()
    same_bits_on_every_rank([w[0].data], "after broadcast")


def single_rank_errors():
    """Sparse gradients are refused; a non-finite gradient on one rank makes every rank skip the step."""
    e = arrayopt.Parameter(np.zeros((4, 2)), name="emb")
    sparse = DistributedOptimizer(arrayopt.SGD([e], lr=0.1))
    e.grad = arrayopt.SparseGrad(np.array([[1]]), np.ones((1, 2)), (4, 2))
    expect_everywhere(TypeError, "Parameter 'emb' (param_groups[0]['params'][0]) has a sparse gradient", sparse.step)

    # a non-finite gradient on one rank: every rank skips the step
    v = arrayopt.Parameter(np.ones(3), name="v")
    guarded = DistributedOptimizer(arrayopt.Adam([v], lr=0.1))
    guarded.skip_nonfinite = True
    v.grad = np.array([1.0, np.nan if RANK == 0 else 1.0, 1.0])
    guarded.step()
    assert guarded.skipped_steps == 1 and np.all(v.data == 1.0) and not guarded.state
    v.grad = np.ones(3)
    guarded.step()
    assert guarded.skipped_steps == 1 and guarded.state[v]["step"] == 1.0


def scenario_broadcast():
    """broadcast_parameters: flat buffers, separate Parameters, mixed dtypes, any root."""
    rng = np.random.default_rng(RANK)
    flat = arrayopt.ParameterList([rng.normal(size=(2, 3)), rng.normal(size=4).astype(np.float32)])
    single = arrayopt.Parameter(rng.normal(size=5) + 1j * rng.normal(size=5), name="z")
    named = {"a": arrayopt.Parameter(rng.normal(size=2))}
    for root in reversed(range(SIZE)):
        broadcast_parameters(flat, root=root)
        broadcast_parameters(single, root=root)
        broadcast_parameters(named, root=root)
        same_bits_on_every_rank([p.data for p in flat] + [single.data, named["a"].data], f"root {root}")
        if root == SIZE - 1:  # the first: everyone has the last rank's values
            expected = np.random.default_rng(SIZE - 1).normal(size=(2, 3))
            assert np.array_equal(flat[0].data, expected)


def scenario_cupy_stand_in():
    """CuPy arrays (the CPU stand-in): host staging and CUDA-aware direct buffers, with the log line."""
    import pytest

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cpu_elementwise

    x, y = data()
    xs, ys = shard(x, y)
    reference = Model(True)
    ref = arrayopt.Adam(reference.params(), lr=0.05)
    for _ in range(5):
        reference.set_grads(x, y)
        ref.step()
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("arrayopt.distributed")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    for aware in ("0", "1"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ARRAYOPT_MPI_CUDA_AWARE", aware)
            backend = cpu_elementwise.install_cupy_stand_in(mp, elementwise=False)
            model = Model(True)
            assert arrayopt.backends.get_backend(model.w.data) is backend
            opt = DistributedOptimizer(arrayopt.Adam(model.params(), lr=0.05))
            for _ in range(5):
                model.set_grads(xs, ys)
                opt.step()
            zero_model = Model(False)
            zero = ZeroRedundancyOptimizer(zero_model.params(), arrayopt.Adam, lr=0.05)
            for _ in range(5):
                zero_model.set_grads(xs, ys)
                zero.step()
            broadcast_parameters(model.params())
        assert relative(model.values(), reference.values()) < 1e-12
        assert relative(zero_model.values(), reference.values()) < 1e-12
        same_bits_on_every_rank(model.values(), f"CuPy stand-in, CUDA-aware={aware}")
        route = "directly, as device buffers" if aware == "1" else "through host buffers"
        assert any(f"CuPy arrays go to MPI {route}" in r for r in records), records


SCENARIOS = {
    "elementwise": scenario_elementwise,
    "float32_and_sum": scenario_float32_and_sum,
    "lbfgs": scenario_lbfgs,
    "zero": scenario_zero,
    "zero_reshard": scenario_zero_reshard,
    "errors": scenario_errors,
    "broadcast": scenario_broadcast,
    "cupy_stand_in": scenario_cupy_stand_in,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", help="save checkpoints here (rank 0)")
    parser.add_argument("--resume", help="resume from checkpoints written by another number of ranks")
    parser.add_argument("--size", type=int, help="the number of ranks mpiexec was asked for")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    if args.size is not None and args.size != SIZE:
        # e.g. an mpiexec of another MPI than the one mpi4py loaded: every process alone
        raise SystemExit(f"asked for {args.size} ranks, but MPI.COMM_WORLD has {SIZE}: mpiexec and mpi4py's MPI differ")
    for name in args.scenarios:
        SCENARIOS[name]()
        COMM.Barrier()
        if RANK == 0:
            print(f"ok {name}", flush=True)
    if args.write or args.resume:
        scenario_checkpoint(args.write, args.resume)
        if RANK == 0:
            print("ok checkpoint", flush=True)
    for name, value in sorted(FIGURES.items()):
        if RANK == 0:
            print(f"figure {name} {value:.3e}", flush=True)


if __name__ == "__main__":
    main()

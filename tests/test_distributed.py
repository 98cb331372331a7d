"""arrayopt.distributed: in this process on ``MPI.COMM_SELF``, and on 2 and 3 ranks under mpiexec.

The several-rank checks live in tests/mpi_scenarios.py (equality with one process,
bitwise agreement of the ranks, ZeRO's memory and re-sharding, checkpoints resumed on
another number of ranks, mismatches raised on every rank, the CuPy stand-in); the
tests here start it under ``mpiexec -n 2`` and ``-n 3`` with a timeout, so a deadlock
fails instead of hanging. Everything but the import check skips, with the reason,
where mpi4py or an MPI library (or mpiexec) is missing.
"""

import copy
import logging
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest

import arrayopt

import cpu_elementwise

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "mpi_scenarios.py")
TIMEOUT = 240  # seconds for one mpiexec run; a deadlock fails after this


def _mpi():
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as exc:  # no mpi4py, or no MPI library for it
        return None, f"mpi4py is not usable ({exc}); pip install mpi4py mpich"
    return MPI, None


MPI, WHY_NOT = _mpi()
needs_mpi = pytest.mark.skipif(MPI is None, reason=str(WHY_NOT))


def _mpiexec():
    """mpiexec next to this Python (the mpich wheel's), else on PATH; with the flags it needs as root."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    found = shutil.which("mpiexec", path=path)
    if found is None:
        return None
    try:
        version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    command = [found]
    if "Open MPI" in version or "OpenRTE" in version:  # MPICH's hydra needs no flag as root
        command.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-run-as-root")
    return command


MPIEXEC = _mpiexec() if MPI is not None else None
needs_mpiexec = pytest.mark.skipif(
    MPIEXEC is None, reason=str(WHY_NOT) if MPI is None else "no mpiexec next to Python or on PATH"
)


def test_import_arrayopt_does_not_import_mpi4py(tmp_path):
    code = "import sys, arrayopt\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'mpi4py'))\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_import_without_mpi4py_says_what_to_install(tmp_path):
    code = (
        "import sys\nsys.modules['mpi4py'] = None\n"
        "try:\n    import arrayopt.distributed\nexcept ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "arrayopt.distributed needs mpi4py" in result.stdout and "arrayopt[mpi]" in result.stdout


# -- several ranks, under mpiexec ------------------------------------------------------------


def run_ranks(n, *args, script=SCRIPT, cwd=None):
    """``mpiexec -n n python -m mpi4py script args``: its output; fails on error or timeout."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if script == SCRIPT:
        args = ("--size", str(n), *args)
    command = [*MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py", script, *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"mpiexec -n {n} did not finish in {TIMEOUT} s (a deadlock?); its output:\n{output[-4000:]}")
    assert process.returncode == 0, f"mpiexec -n {n} failed:\n{output[-6000:]}"
    return output


def figures(output):
    return {line.split()[1]: float(line.split()[2]) for line in output.splitlines() if line.startswith("figure ")}


@needs_mpiexec
def test_two_then_three_ranks_then_one_process(tmp_path):
    """Every scenario on 2 and on 3 ranks; checkpoints of 2 ranks resume on 3, those of 3 in one process."""
    two, three = str(tmp_path / "two.ckpt"), str(tmp_path / "three.ckpt")
    out2 = run_ranks(2, "--write", two)
    out3 = run_ranks(3, "--resume", two, "--write", three)
    out1 = run_ranks(1, "--resume", three, "errors")
    for output in (out2, out3):
        for name in ("elementwise", "float32_and_sum", "lbfgs", "zero", "zero_reshard", "errors", "broadcast"):
            assert f"ok {name}" in output, output[-3000:]
        assert "ok cupy_stand_in" in output or "skip cupy_stand_in" in output
        numbers = figures(output)
        assert max(v for k, v in numbers.items() if k.startswith("elementwise_step")) < 1e-12
        assert max(v for k, v in numbers.items() if k.startswith("lbfgs")) < 1e-9
        assert numbers["zero_state_share_max"] < 1.0
    assert "ok checkpoint" in out3 and "ok checkpoint" in out1
    assert figures(out3)["zero_state_share_max"] < figures(out2)["zero_state_share_max"]


@needs_mpiexec
def test_the_guides_script_runs_and_resumes_on_another_number_of_ranks(tmp_path):
    with open(os.path.join(os.path.dirname(HERE), "docs", "distributed.md")) as f:
        text = f.read()
    code = re.search(r"## A complete script.*?```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "fit.py").write_text(code)
    first = run_ranks(2, script=str(tmp_path / "fit.py"), cwd=tmp_path)
    assert "step 200" in first and "accuracy 0.8" in first and "on 2 ranks" in first, first
    again = run_ranks(3, script=str(tmp_path / "fit.py"), cwd=tmp_path)  # resumes at step 300: nothing left
    assert "step" not in again and again.split()[-4:] == [*first.split()[-4:-2], "3", "ranks"], again


# -- one process: the wrappers' semantics ---------------------------------------------------------


@pytest.fixture
def distributed():
    if MPI is None:
        pytest.skip(str(WHY_NOT))
    import arrayopt.distributed

    return arrayopt.distributed


def problem(flat=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(3, 2)), rng.normal(size=(2, 2))]
    if flat:
        return list(arrayopt.ParameterList(arrays, names=["w", "b"]))
    return [arrayopt.Parameter(a, name=n) for a, n in zip(arrays, ["w", "b"], strict=True)]


def set_grads(params, k):
    for i, p in enumerate(params):
        p.grad = np.cos(np.arange(p.data.size).reshape(p.shape) + k + 10 * i)


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "separate"])
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Muon", "Adafactor"])
def test_one_rank_equals_the_plain_optimizer_bitwise(distributed, name, flat):
    cls = getattr(arrayopt, name)
    kwargs = {"lr": 0.01, "momentum": 0.9} if name == "SGD" else {"lr": 0.01}
    plain_params, dist_params, zero_params = problem(flat), problem(flat), problem(flat)
    plain = cls(plain_params, **kwargs)
    dist = distributed.DistributedOptimizer(cls(dist_params, **kwargs), comm=MPI.COMM_SELF)
    zero = distributed.ZeroRedundancyOptimizer(zero_params, cls, comm=MPI.COMM_SELF, **kwargs)
    for k in range(4):
        for params, opt in ((plain_params, plain), (dist_params, dist), (zero_params, zero)):
            set_grads(params, k)
            opt.step()
    for p, q, r in zip(plain_params, dist_params, zero_params, strict=True):
        assert p.data.tobytes() == q.data.tobytes() == r.data.tobytes()
    zero.consolidate_state_dict(to=0)
    for got in (dist.state_dict(), zero.state_dict()):
        assert pickle.dumps(got["param_groups"]) == pickle.dumps(plain.state_dict()["param_groups"])
        for k, s in plain.state_dict()["state"].items():
            for key, value in s.items():
                np.testing.assert_array_equal(got["state"][k][key], value)


def test_the_wrapper_is_the_wrapped_optimizer(distributed):
    params = problem()
    inner = arrayopt.Adam(params, lr=0.1)
    opt = distributed.DistributedOptimizer(inner, comm=MPI.COMM_SELF)
    assert opt.param_groups is inner.param_groups and opt.defaults is inner.defaults
    assert opt.optimizer is inner and opt.op == "mean" and opt.comm is MPI.COMM_SELF
    assert isinstance(opt, arrayopt.Optimizer) and "ranks=1" in repr(opt)
    set_grads(params, 0)
    opt.step()
    assert opt.state is inner.state and opt.state[params[0]]["step"] == 1.0
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    extra = arrayopt.Parameter(np.ones(2), name="extra")
    opt.add_param_group({"params": [extra], "lr": 0.5})
    assert inner.param_groups[-1]["params"] == [extra] and inner.param_groups[-1]["lr"] == 0.5
    opt.skip_nonfinite = True
    assert inner.skip_nonfinite
    with pytest.raises(TypeError, match="cannot be copied or pickled"):
        copy.deepcopy(opt)
    with pytest.raises(TypeError, match="already a DistributedOptimizer"):
        distributed.DistributedOptimizer(opt, comm=MPI.COMM_SELF)
    with pytest.raises(TypeError, match="arrayopt optimizer"):
        distributed.DistributedOptimizer([params[0]], comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="op must be 'mean' or 'sum', got 'max'"):
        distributed.DistributedOptimizer(arrayopt.SGD(params, lr=0.1), comm=MPI.COMM_SELF, op="max")
    with pytest.raises(TypeError, match="intracommunicator"):
        distributed.DistributedOptimizer(arrayopt.SGD(params, lr=0.1), comm="world")


def test_hooks_run_once_on_the_averaged_gradients_and_schedulers_work(distributed):
    params = problem()
    inner = arrayopt.SGD(params, lr=1.0)
    opt = distributed.DistributedOptimizer(inner, comm=MPI.COMM_SELF)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(("instance", o)))
    handle = arrayopt.optimizer.register_optimizer_step_pre_hook(lambda o, args, kwargs: seen.append(("global", o)))
    try:
        scheduler = arrayopt.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        set_grads(params, 0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            opt.step()
            scheduler.step()
    finally:
        handle.remove()
    assert seen == [("global", inner), ("instance", inner)]
    assert inner.param_groups[0]["lr"] == 0.5


def test_closure_returns_the_loss_and_lbfgs_converges(distributed):
    target = np.array([1.0, -2.0, 3.0])
    w = arrayopt.Parameter(np.zeros(3), name="w")
    opt = distributed.DistributedOptimizer(arrayopt.LBFGS([w], line_search_fn="strong_wolfe"), comm=MPI.COMM_SELF)

    def closure():
        w.grad = w.data - target
        return np.array(0.5 * np.sum((w.data - target) ** 2))

    assert opt.step(closure) == 7.0
    np.testing.assert_allclose(w.data, target)
    with pytest.raises(TypeError, match="closure must return the loss"):
        opt.step(lambda: "loss")
    with pytest.raises(TypeError, match="closure must be callable"):
        opt.step(3)


@pytest.mark.parametrize("save_from", ["distributed", "zero", "plain"])
def test_checkpoints_move_between_plain_and_distributed_optimizers(distributed, save_from, tmp_path):
    def build(kind, params):
        if kind == "plain":
            return arrayopt.Adam(params, lr=0.1)
        if kind == "distributed":
            return distributed.DistributedOptimizer(arrayopt.Adam(params, lr=0.1), comm=MPI.COMM_SELF)
        return distributed.ZeroRedundancyOptimizer(params, arrayopt.Adam, comm=MPI.COMM_SELF, lr=0.1)

    params = problem()
    opt = build(save_from, params)
    set_grads(params, 0)
    opt.step()
    if save_from == "zero":
        opt.consolidate_state_dict(to=0)
    path = tmp_path / "ckpt"
    arrayopt.save(path, optimizer=opt)
    assert arrayopt.load(path)["optimizer"]["state"][0]["step"] == 1.0
    for kind in ("plain", "distributed", "zero"):
        target = build(kind, problem())
        arrayopt.load_into(path, optimizer=target)
        if kind == "zero":
            target.consolidate_state_dict(to=0)
        np.testing.assert_array_equal(
            target.state_dict()["state"][1]["exp_avg"], opt.state_dict()["state"][1]["exp_avg"]
        )
    with pytest.raises(ValueError, match="state of a Adam, which cannot be loaded into a SGD"):
        arrayopt.load_into(
            path, optimizer=distributed.DistributedOptimizer(arrayopt.SGD(problem(), lr=0.1), comm=MPI.COMM_SELF)
        )


def test_zero_refuses_what_it_cannot_shard_and_wants_consolidation(distributed):
    with pytest.raises(TypeError, match=r"cannot shard LBFGS: its step couples every parameter"):
        distributed.ZeroRedundancyOptimizer(problem(), arrayopt.LBFGS, comm=MPI.COMM_SELF)
    with pytest.raises(TypeError, match="optimizer class"):
        distributed.ZeroRedundancyOptimizer(problem(), arrayopt.Adam(problem()), comm=MPI.COMM_SELF)
    params = problem()
    zero = distributed.ZeroRedundancyOptimizer(params, arrayopt.Adam, comm=MPI.COMM_SELF, lr=0.1)
    with pytest.raises(RuntimeError, match=r"not consolidated on rank 0; call consolidate_state_dict\(to=0\)"):
        zero.state_dict()
    with pytest.raises(ValueError, match="to must be a rank"):
        zero.consolidate_state_dict(to=1)
    assert zero.shard == params and zero.owner(params[1]) == 0 and not zero.state
    set_grads(params, 0)
    zero.step()
    assert set(zero.state) == set(params) and zero.state[params[0]]["exp_avg"].shape == (3, 2)
    assert "ZeroRedundancyOptimizer[Adam]" in repr(zero)
    bad = {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    with pytest.raises(ValueError, match="parameter group"):
        zero.load_state_dict(bad)


def test_zero_steps_its_shard_of_flat_storage_in_place(distributed):
    """The local optimizer's parameters are views of the ParameterList's buffer; its state is laid out flat."""
    params = arrayopt.ParameterList([np.ones(5), np.ones(3)])
    zero = distributed.ZeroRedundancyOptimizer(params, arrayopt.Adam, comm=MPI.COMM_SELF)
    local = zero.optim.param_groups[0]["params"]
    assert all(np.shares_memory(q.data, params.flat_data) for q in local)
    assert all(q is not p and q.shape == p.shape for p, q in zip(params, local, strict=True))
    params.flat_grad = np.ones(8)
    zero.step()
    first, second = (zero.state[p]["exp_avg"] for p in params)
    assert first.base is not None and first.base is second.base  # views into the state the buffer holds
    assert not np.shares_memory(first, second)


@pytest.mark.parametrize(
    ("sizes", "loads", "owners"),
    [
        ([1] * 10, [0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]),
        ([5, 3, 4, 2, 6, 1, 3, 4], [0, 0, 0], [0, 0, 0, 1, 1, 1, 1, 2]),  # largest share 12, the least contiguous
        ([7], [5, 1, 3], [1]),  # a new group: to the least loaded rank
        ([3, 3, 3], [0, 0], [0, 0, 1]),
        ([], [0, 0], []),
    ],
)
def test_partition_is_contiguous_and_balanced(distributed, sizes, loads, owners):
    assert distributed._partition(sizes, loads) == owners


def test_broadcast_parameters_takes_every_container(distributed):
    flat = arrayopt.ParameterList([np.ones(2)])
    single = arrayopt.Parameter(np.ones(3))
    for params in (flat, single, {"a": single}, [("a", single)], flat.parameters()):
        distributed.broadcast_parameters(params, comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="root must be a rank"):
        distributed.broadcast_parameters(flat, root=1, comm=MPI.COMM_SELF)
    with pytest.raises(TypeError, match=r"takes Parameters, got numpy\.ndarray among them"):
        distributed.broadcast_parameters([np.ones(2)], comm=MPI.COMM_SELF)
    with pytest.raises(TypeError, match="not an optimizer"):
        distributed.broadcast_parameters(arrayopt.SGD(flat, lr=0.1), comm=MPI.COMM_SELF)


@pytest.mark.parametrize("aware", ["0", "1"])
def test_cupy_arrays_log_their_route_at_construction(distributed, monkeypatch, caplog, aware):
    monkeypatch.setenv("ARRAYOPT_MPI_CUDA_AWARE", aware)
    cpu_elementwise.install_cupy_stand_in(monkeypatch, elementwise=False)
    params = problem()
    with caplog.at_level(logging.INFO, logger="arrayopt.distributed"):
        opt = distributed.DistributedOptimizer(arrayopt.Adam(params), comm=MPI.COMM_SELF)
    route = "directly, as device buffers" if aware == "1" else "through host buffers"
    assert f"CuPy arrays go to MPI {route}" in caplog.text
    assert f"ARRAYOPT_MPI_CUDA_AWARE={aware}" in caplog.text
    set_grads(params, 0)
    opt.step()


def test_cuda_awareness_is_asked_of_the_mpi_library(distributed, monkeypatch):
    monkeypatch.delenv("ARRAYOPT_MPI_CUDA_AWARE", raising=False)
    aware, how = distributed._cuda_aware_mpi()
    assert isinstance(aware, bool) and how  # MPICH has MPIX_Query_cuda_support; the wheel is not CUDA-aware
    if "MPICH" in MPI.Get_library_version() and "cuda" not in MPI.Get_library_version().lower():
        assert (aware, how.split(" in ")[0]) == (False, "MPIX_Query_cuda_support()")

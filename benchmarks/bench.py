"""The benchmark suite: arrayopt against torch.optim, step time and memory bandwidth.

Every (optimizer, workload) is timed side by side in one process on the same data:
arrayopt with numba-compiled rules (when numba is installed), arrayopt on NumPy ufuncs,
and torch.optim's for-loop, foreach and fused implementations (those that exist for
the optimizer and device; torch is optional, its columns are left out without it).
Each thread count runs in its own worker process, with OpenMP, MKL, OpenBLAS, numba
and torch pinned to that many threads before anything is imported. The worker also
measures the machine's memory bandwidth (STREAM-like copy and triad) on arrays far
larger than the caches.

Reported per step: milliseconds (median over interleaved rounds, each a batch of
about ``--batch`` seconds), GB/s against the minimal memory traffic of the update
(:data:`TRAFFIC`: every operand read once and every result written once), and the
ratio to torch's best implementation measured in the same process.

    python benchmarks/bench.py                     # CPU: 5 optimizers, 3 workloads, 1 and 2 threads
    python benchmarks/bench.py --quick --optimizers Adam,SGD --threads 1
    python benchmarks/bench.py --gpu               # also the CUDA workloads (CuPy; torch with CUDA)

``python -m arrayopt.bench ...`` runs this file too, from the root of a checkout. The
arrayopt measured is the one Python imports (installed, or the checkout on PYTHONPATH).
"""

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

#: optimizer -> constructor keywords (shared by arrayopt and torch)
OPTIMIZERS: dict[str, dict[str, Any]] = {
    "Adam": {"lr": 1e-3},
    "AdamW": {"lr": 1e-3},
    "SGD": {"lr": 1e-3, "momentum": 0.9},
    "Adagrad": {"lr": 1e-2},
    "RMSprop": {"lr": 1e-2},
}

#: minimal traffic per element, in array accesses (each read once, each write once)
TRAFFIC: dict[str, tuple[int, str]] = {
    "Adam": (7, "read p, g, m, v; write p, m, v"),
    "AdamW": (7, "read p, g, m, v; write p, m, v"),
    "SGD": (5, "read p, g, buf; write p, buf"),
    "Adagrad": (5, "read p, g, sum; write p, sum"),
    "RMSprop": (5, "read p, g, square_avg; write p, square_avg"),
}

#: name -> (number of arrays, elements per array, device)
WORKLOADS: dict[str, tuple[int, int, str]] = {
    "1x16.8M": (1, 16_777_216, "cpu"),
    "1000x16K": (1_000, 16_384, "cpu"),
    "10000x1.6K": (10_000, 1_600, "cpu"),
    "10x1K": (10, 1_024, "cpu"),  # a smoke test, not among the defaults
    # separate Parameters (one per array, no flat storage): the Python cost of each parameter
    "100x100-separate": (100, 100, "cpu"),
    "1000x100-separate": (1_000, 100, "cpu"),
    "3x10-separate": (3, 10, "cpu"),  # a smoke test, not among the defaults
    "gpu-1x256M": (1, 268_435_456, "gpu"),
    "gpu-1000x256K": (1_000, 262_144, "gpu"),
    "gpu-10000x1.6K": (10_000, 1_600, "gpu"),  # many small arrays: launch and Python overhead
}
CPU_WORKLOADS = [
    name for name, spec in WORKLOADS.items() if spec[2] == "cpu" and name not in ("10x1K", "3x10-separate")
]
GPU_WORKLOADS = [name for name, spec in WORKLOADS.items() if spec[2] == "gpu"]

TORCH_IMPLEMENTATIONS = {
    "torch loop": {"foreach": False},
    "torch foreach": {"foreach": True},
    "torch fused": {"fused": True},
}
ARRAYOPT_NUMBA, ARRAYOPT_NUMPY, ARRAYOPT_GPU = "arrayopt numba", "arrayopt NumPy", "arrayopt CuPy"

Row = dict[str, Any]


# -- the parent process: workers, tables ---------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        return _worker(args)
    optimizers = _split(args.optimizers, OPTIMIZERS)
    workloads = (
        _split(args.workloads, WORKLOADS) if args.workloads else CPU_WORKLOADS + (GPU_WORKLOADS if args.gpu else [])
    )
    cpu = [w for w in workloads if WORKLOADS[w][2] == "cpu"]
    gpu = [w for w in workloads if WORKLOADS[w][2] == "gpu"]
    threads = [int(t) for t in args.threads.split(",")]
    results: list[Row] = []
    for n in threads if cpu else []:
        results += _run_worker(args, optimizers, cpu, n, "cpu")
    if gpu:
        results += _run_worker(args, optimizers, gpu, 1, "gpu")
    if not args.no_first_step:
        results += first_step_latency(args.first_step_runs, args.first_step_elements)
    if not args.no_memory:
        results += first_step_memory(args.memory_elements)
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"\nraw results: {args.json}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated (default: all five)")
    parser.add_argument(
        "--workloads", default="", help=f"comma-separated, of {', '.join(WORKLOADS)} (default: the CPU ones)"
    )
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts for the CPU (default 1,2)")
    parser.add_argument("--gpu", action="store_true", help="also run the GPU workloads (needs CuPy and a device)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.1 s batches and smaller STREAM arrays")
    parser.add_argument("--rounds", type=int, default=0, help="interleaved rounds per candidate (default 7)")
    parser.add_argument("--batch", type=float, default=0.0, help="seconds per timed batch (default 0.3)")
    parser.add_argument("--no-bandwidth", action="store_true", help="skip the STREAM measurement")
    parser.add_argument("--no-torch", action="store_true", help="time arrayopt only")
    parser.add_argument("--json", default="", help="also write the raw results to this file")
    parser.add_argument("--no-first-step", action="store_true", help="skip the first-step latency (fresh processes)")
    parser.add_argument("--first-step-runs", type=int, default=3, help="fresh processes per case (default 3)")
    parser.add_argument(
        "--first-step-elements", type=int, default=100_000, help="the first-step script's parameter (default 100000)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the first-step peak memory")
    parser.add_argument(
        "--memory-elements", type=int, default=16_777_216, help="the memory script's parameter (default 16777216)"
    )
    parser.add_argument("--no-lbfgs", action="store_true", help="skip LBFGS against torch and SciPy")
    parser.add_argument(
        "--lbfgs-sizes", default="10000,1000000", help="extended Rosenbrock sizes (default 10000,1000000)"
    )
    parser.add_argument("--lbfgs-rounds", type=int, default=3, help="interleaved LBFGS rounds (default 3)")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)  # "cpu" or "gpu": one worker process
    return parser


def _split(text: str, known: dict[str, Any]) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {unknown}; choose among {', '.join(known)}")
    return names


def _run_worker(
    args: argparse.Namespace, optimizers: list[str], workloads: list[str], threads: int, kind: str
) -> list[Row]:
    env = _pinned_env(threads)
    if "ARRAYOPT_CACHE_DIR" not in env:
        # an empty kernel cache, so the first numba step shows the compile time
        env["ARRAYOPT_CACHE_DIR"] = tempfile.mkdtemp(prefix="arrayopt-bench-")
    command = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--threads", str(threads)]
    command += ["--optimizers", ",".join(optimizers), "--workloads", ",".join(workloads)]
    command += ["--rounds", str(args.rounds), "--batch", str(args.batch)]
    command += ["--lbfgs-sizes", "" if args.no_lbfgs else args.lbfgs_sizes, "--lbfgs-rounds", str(args.lbfgs_rounds)]
    command += [
        flag
        for flag, on in (("--quick", args.quick), ("--no-bandwidth", args.no_bandwidth), ("--no-torch", args.no_torch))
        if on
    ]
    print(f"== {kind} worker, {threads} thread(s)", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    finally:
        if "ARRAYOPT_CACHE_DIR" not in os.environ:
            shutil.rmtree(env["ARRAYOPT_CACHE_DIR"], ignore_errors=True)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0:
        rows.append(
            {"type": "note", "text": f"the {kind} worker with {threads} thread(s) failed (exit {done.returncode})"}
        )
    return rows


def _pinned_env(threads: int) -> dict[str, str]:
    """The environment of a process that measures: every thread pool pinned to ``threads``, this arrayopt."""
    env = dict(os.environ)
    thread_variables = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMEXPR_NUM_THREADS")
    for var in (*thread_variables, "ARRAYOPT_NUM_THREADS"):
        env[var] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = "1"  # no BLAS in an optimizer step; keep it off the cores
    # the process must import this same arrayopt (found here without importing it)
    spec = importlib.util.find_spec("arrayopt")
    if spec is not None and spec.origin is not None:
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(spec.origin)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


# -- fresh processes: the first step's latency and memory --------------------------------------

#: A script's first step: seconds from the script's first line to the end of its first Adam step.
FIRST_STEP_SCRIPT = """
import time
start = time.perf_counter()
import json, sys
import numpy as np
import arrayopt
imported = time.perf_counter()
p = arrayopt.Parameter(np.zeros(int(sys.argv[1]), dtype=np.float32))
p.grad = np.ones(int(sys.argv[1]), dtype=np.float32)
opt = arrayopt.Adam([p], lr=1e-3)
before = time.perf_counter()
opt.step()
end = time.perf_counter()
import importlib.util, os
bytecode = all(os.path.exists(importlib.util.cache_from_source(m.__file__))
               for name, m in list(sys.modules.items()) if name.startswith("arrayopt") and getattr(m, "__file__", None))
print(json.dumps({"total_s": end - start, "import_s": imported - start, "step_s": end - before,
                  "numba_imported": "numba" in sys.modules, "bytecode": bytecode}))
if sys.argv[2] == "wait":  # fill the kernel cache for the warm runs
    try:
        from arrayopt.backends import background
        background.wait(600)
    except ImportError:  # an arrayopt that compiles on the first step
        pass
"""

#: (label, ARRAYOPT_NUMBA, kernel cache) of the first-step cases
FIRST_STEP_CASES = [
    ("numba installed, cold cache", None, "cold"),
    ("numba installed, warm cache", None, "warm"),
    ("ARRAYOPT_NUMBA=0 (NumPy only)", "0", "cold"),
]


def first_step_latency(runs: int, elements: int) -> list[Row]:
    """Script start to the end of its first step, in fresh processes (one thread), for each of FIRST_STEP_CASES."""
    rows: list[Row] = []
    env = _pinned_env(1)
    # arrayopt's modules loaded from their bytecode, as pip installs them (the first run
    # writes it where it can), not compiled again by every run
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    warm = tempfile.mkdtemp(prefix="arrayopt-bench-warm-")
    try:
        _log("== first step in fresh processes")
        _script(FIRST_STEP_SCRIPT, [str(elements), "wait"], {**env, "ARRAYOPT_CACHE_DIR": warm})  # fills the cache
        measured: dict[str, list[Row]] = {label: [] for label, _, _ in FIRST_STEP_CASES}
        for _ in range(runs):  # interleaved: one of each case per round
            for label, numba, cache in FIRST_STEP_CASES:
                case_env = dict(env)
                if numba is not None:
                    case_env["ARRAYOPT_NUMBA"] = numba
                cold = tempfile.mkdtemp(prefix="arrayopt-bench-cold-") if cache == "cold" else None
                case_env["ARRAYOPT_CACHE_DIR"] = cold or warm
                try:
                    out = _script(FIRST_STEP_SCRIPT, [str(elements), "exit"], case_env)
                finally:
                    if cold:
                        shutil.rmtree(cold, ignore_errors=True)
                if out is not None:
                    measured[label].append(out)
        for label, outs in measured.items():
            if outs:
                row: Row = {"type": "first_step", "case": label, "elements": elements, "runs": len(outs)}
                for key in ("total_s", "import_s", "step_s"):
                    row[key] = statistics.median(o[key] for o in outs)
                row["numba_imported"] = any(o["numba_imported"] for o in outs)
                row["bytecode"] = all(o.get("bytecode", False) for o in outs)
                rows.append(row)
    finally:
        shutil.rmtree(warm, ignore_errors=True)
    return rows


#: The peak memory of a first Adam step (tracemalloc: NumPy reports its allocations to it).
MEMORY_SCRIPT = """
import json, sys, tracemalloc
import numpy as np
import arrayopt
n = int(sys.argv[1])
if sys.argv[2] == "numba":  # the kernel made and loaded first (on a small parameter), so no compiler runs
    q = arrayopt.Parameter(np.zeros(1000, dtype=np.float32)); q.grad = np.ones(1000, dtype=np.float32)
    warm = arrayopt.Adam([q], lr=1e-3)
    warm.step()
    try:
        from arrayopt.backends import background
        background.wait(600)
    except ImportError:
        pass
    warm.step()
data = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
params = list(arrayopt.ParameterList([data])) if hasattr(arrayopt, "ParameterList") else [arrayopt.Parameter(data)]
params[0].grad = np.ones(n, dtype=np.float32)
opt = arrayopt.Adam(params, lr=1e-3)
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
opt.step()
current, peak = tracemalloc.get_traced_memory()
tracemalloc.reset_peak()
opt.step()
steady = tracemalloc.get_traced_memory()[0]
tracemalloc.reset_peak()
opt.step()
after, steady_peak = tracemalloc.get_traced_memory()
print(json.dumps({"state_bytes": current - base, "first_peak_bytes": peak - current,
                  "steady_peak_bytes": steady_peak - steady, "steady_kept_bytes": after - steady}))
"""


def first_step_memory(elements: int) -> list[Row]:
    """Bytes a first Adam step on one flat float32 vector allocates beyond its new state, in a fresh process."""
    rows: list[Row] = []
    env = _pinned_env(1)
    _log("== first-step memory in fresh processes")
    for label, numba in (("NumPy (ARRAYOPT_NUMBA=0)", "0"), ("numba, kernel loaded before", None)):
        case_env = dict(env)
        if numba is not None:
            case_env["ARRAYOPT_NUMBA"] = numba
        out = _script(MEMORY_SCRIPT, [str(elements), "numpy" if numba else "numba"], case_env)
        if out is not None:
            rows.append({"type": "memory", "case": label, "elements": elements, **out})
    return rows


def _script(source: str, argv: list[str], env: dict[str, str]) -> Row | None:
    """Run ``source`` in a fresh Python; the JSON object its last output line prints (None if it failed).

    It runs in an empty directory: ``python -c`` puts the current directory first on
    ``sys.path``, and from a checkout's root that arrayopt would shadow the one asked for.
    """
    with tempfile.TemporaryDirectory(prefix="arrayopt-bench-run-") as empty:
        done = subprocess.run(
            [sys.executable, "-c", source, *argv],
            env=env,
            cwd=empty,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
            timeout=1200,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return None
    out: Row = json.loads(lines[-1])
    return out


# -- the worker ------------------------------------------------------------------------------


def _emit(row: Row) -> None:
    print(json.dumps(row), flush=True)


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _worker(args: argparse.Namespace) -> int:
    import numpy as np

    import arrayopt
    from arrayopt.backends import numpy as numpy_backend

    threads = int(args.threads)
    rounds = args.rounds or (3 if args.quick else 7)
    batch = args.batch or (0.1 if args.quick else 0.3)
    torch = None if args.no_torch else _import_torch(threads)
    numba_ok = args.worker == "cpu" and _setup_numba(threads)
    _emit(_machine(args.worker, threads, torch, numba_ok))
    xp, sync = np, _no_sync
    if args.worker == "gpu":
        try:
            xp, sync = _cupy()
        except Exception as exc:  # no CuPy, no driver, no device
            _emit({"type": "note", "text": f"GPU workloads skipped: {exc}"})
            return 0
        if torch is not None and not torch.cuda.is_available():
            _emit({"type": "note", "text": "torch has no CUDA device here: GPU rows have no torch columns"})
            torch = None
    if not args.no_bandwidth:
        size = (1 << 24) if args.quick else (1 << 26)
        for measured in _bandwidth(xp, sync, size, threads, numba_ok):
            _emit(measured)
    names = []
    for name in _split(args.optimizers, OPTIMIZERS):
        if hasattr(arrayopt, name):
            names.append(name)
        else:
            _emit({"type": "note", "text": f"arrayopt {arrayopt.__version__} has no {name}: skipped"})
    for workload in _split(args.workloads, WORKLOADS):  # workload first: its inputs are drawn once
        count, size, _ = WORKLOADS[workload]
        for name in names:
            _log(f"   {name} {workload} ({threads} thread(s))")
            separate = workload.endswith("-separate")
            candidates, layout, first = _candidates(name, count, size, xp, torch, numba_ok, numpy_backend, separate)
            times = time_candidates(candidates, rounds, batch, sync)
            row: Row = {"type": "step", "optimizer": name, "workload": workload, "threads": threads, "layout": layout}
            row["ms"] = {k: 1e3 * v for k, v in times.items()}
            row["bytes_per_step"] = TRAFFIC[name][0] * 4 * count * size
            row["elements"] = count * size
            if first is not None:
                row["numba_first_step_s"] = first
            _emit(row)
            del candidates
    if args.worker == "cpu":
        for n in (int(float(t)) for t in args.lbfgs_sizes.split(",") if t.strip()):
            _log(f"   LBFGS n={n} ({threads} thread(s))")
            _emit(lbfgs_row(n, threads, args.lbfgs_rounds, torch))
    return 0


def _no_sync() -> None:
    pass


def _import_torch(threads: int) -> Any:
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def _setup_numba(threads: int) -> bool:
    from arrayopt.backends import numpy as numpy_backend

    try:
        on = numpy_backend.set_numba("auto")
    except Exception:
        return False
    if on:
        numba: Any = importlib.import_module("numba")
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return on


def _cupy() -> tuple[Any, Callable[[], None]]:
    import cupy

    if cupy.cuda.runtime.getDeviceCount() == 0:
        raise RuntimeError("CuPy finds no CUDA device")
    device = cupy.cuda.Device()
    return cupy, device.synchronize


def _machine(kind: str, threads: int, torch: Any, numba_ok: bool) -> Row:
    import numpy as np

    import arrayopt

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    row: Row = {
        "type": "machine",
        "kind": kind,
        "threads": threads,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "arrayopt": arrayopt.__version__,
        "torch": getattr(torch, "__version__", None),
    }
    if numba_ok:
        numba: Any = importlib.import_module("numba")
        row["numba"] = numba.__version__
        row["numba_threading_layer"] = numba.config.THREADING_LAYER
    if kind == "gpu":
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            row["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            row["cupy"] = cupy.__version__
        except Exception:
            pass
    return row


# -- timing ----------------------------------------------------------------------------------


def time_candidates(
    candidates: dict[str, Callable[[], Any]], rounds: int, batch: float, sync: Callable[[], None] = _no_sync
) -> dict[str, float]:
    """Median seconds per call of each candidate, timed in interleaved rounds.

    Each candidate is called twice first (state allocation, first touch of memory,
    compilation). A round times every candidate once, in forward then reverse order
    on alternate rounds, each over a batch of calls lasting about ``batch`` seconds.
    """
    calls: dict[str, int] = {}
    for name, step in candidates.items():
        step()
        sync()
        start = time.perf_counter()
        step()
        sync()
        calls[name] = max(1, round(batch / max(time.perf_counter() - start, 1e-9)))
    per_call: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            step, n = candidates[name], calls[name]
            sync()
            start = time.perf_counter()
            for _ in range(n):
                step()
            sync()
            per_call[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(times) for name, times in per_call.items()}


_HOST_INPUTS: dict[tuple[int, int], tuple[list[Any], list[Any]]] = {}


def _host_inputs(count: int, size: int) -> tuple[list[Any], list[Any]]:
    """Parameters and gradients (float32, seed 0), drawn once per workload and reused by every optimizer."""
    import numpy as np

    if (count, size) not in _HOST_INPUTS:
        _HOST_INPUTS.clear()  # one workload's arrays at a time (the GPU ones take 2 GiB on the host)
        rng = np.random.default_rng(0)
        data = [rng.standard_normal(size, dtype=np.float32) for _ in range(count)]
        grads = [rng.standard_normal(size, dtype=np.float32) for _ in range(count)]
        _HOST_INPUTS[(count, size)] = (data, grads)
    return _HOST_INPUTS[(count, size)]


def _candidates(
    name: str, count: int, size: int, xp: Any, torch: Any, numba_ok: bool, numpy_backend: Any, separate: bool = False
) -> tuple[dict[str, Callable[[], Any]], str, float | None]:
    """Step functions over the same data and gradients, the arrayopt layout, the first numba step's seconds."""
    import numpy as np

    import arrayopt

    host_data, host_grads = _host_inputs(count, size)
    on_gpu = xp is not np
    grads = [xp.asarray(g) for g in host_grads]
    kwargs = OPTIMIZERS[name]
    candidates: dict[str, Callable[[], Any]] = {}
    first: float | None = None
    flat = hasattr(arrayopt, "ParameterList") and not separate
    layout = "ParameterList (flat)" if flat else "one Parameter per array"

    def arrayopt_step(use_numba: bool | None) -> Callable[[], Any]:
        datas = [xp.asarray(d).copy() for d in host_data]
        if flat:
            params = list(arrayopt.ParameterList(datas))
        else:
            params = [arrayopt.Parameter(d) for d in datas]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        optimizer = getattr(arrayopt, name)(params, **kwargs)
        if use_numba is None:
            return optimizer.step  # type: ignore[no-any-return]

        def step() -> Any:
            numpy_backend._numba = use_numba
            return optimizer.step()

        return step

    if on_gpu:
        candidates[ARRAYOPT_GPU] = arrayopt_step(None)
    else:
        if numba_ok:
            step = arrayopt_step(True)
            start = time.perf_counter()
            step()
            first = time.perf_counter() - start
            candidates[ARRAYOPT_NUMBA] = step
        candidates[ARRAYOPT_NUMPY] = arrayopt_step(False)
    if torch is not None:
        device = "cuda" if on_gpu else "cpu"
        torch_grads = [torch.from_numpy(g).to(device) for g in host_grads]
        for impl, flags in TORCH_IMPLEMENTATIONS.items():
            params = [torch.nn.Parameter(torch.from_numpy(d.copy()).to(device)) for d in host_data]
            for p, g in zip(params, torch_grads, strict=True):
                p.grad = g
            try:
                optimizer = getattr(torch.optim, name)(params, **kwargs, **flags)
                optimizer.step()
            except (RuntimeError, ValueError, TypeError):  # no such implementation here
                continue
            candidates[impl] = optimizer.step
    return candidates, layout, first


# -- LBFGS -----------------------------------------------------------------------------------

#: LBFGS runs this many iterations (strong Wolfe line search, 10 correction pairs) on every solver
LBFGS_ITERATIONS, LBFGS_HISTORY = 40, 10
LBFGS_SOLVERS = ("arrayopt LBFGS", "torch LBFGS", "scipy L-BFGS-B")


def lbfgs_row(n: int, threads: int, rounds: int, torch: Any) -> Row:
    """arrayopt.LBFGS, torch.optim.LBFGS and SciPy's L-BFGS-B, 40 iterations each on the extended Rosenbrock
    function (float64; ``benchmarks/lbfgs.py``'s NumPy and torch formulas), interleaved rounds: median seconds
    in all and inside the objective."""
    import lbfgs  # benchmarks/lbfgs.py, next to this file

    from arrayopt.backends import numpy as numpy_backend

    numpy_backend.set_numba("auto")  # as a script finds it (the step candidates leave their own setting)
    _lbfgs_arrayopt(lbfgs.Timed(lbfgs.rosenbrock(1000)[1]), lbfgs.rosenbrock(1000)[0])  # its kernels made
    try:
        from arrayopt.backends import background

        background.wait(600)  # (made off the critical path: measured here once ready)
    except ImportError:  # an arrayopt that compiles them where it stands
        pass
    x0, numpy_fun, torch_fun = lbfgs.rosenbrock(n)
    solvers = {"arrayopt LBFGS": _lbfgs_arrayopt, "scipy L-BFGS-B": _lbfgs_scipy}
    if torch is not None:
        solvers["torch LBFGS"] = _lbfgs_torch
    try:
        import scipy  # noqa: F401
    except ImportError:
        del solvers["scipy L-BFGS-B"]
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in solvers}
    order = list(solvers)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            fun = torch_fun if name.startswith("torch") else numpy_fun
            runs[name].append(solvers[name](lbfgs.Timed(fun), x0))
    return {
        "type": "lbfgs",
        "n": n,
        "threads": threads,
        "iterations": LBFGS_ITERATIONS,
        "ms": {name: 1e3 * statistics.median(r[0] for r in rs) for name, rs in runs.items()},
        "objective_ms": {name: 1e3 * statistics.median(r[1] for r in rs) for name, rs in runs.items()},
        "evaluations": {name: rs[-1][2] for name, rs in runs.items()},
    }


def _lbfgs_arrayopt(objective: Any, x0: Any) -> tuple[float, float, int]:
    import arrayopt

    return _lbfgs_run(arrayopt.Parameter(x0.copy()), arrayopt.LBFGS, lambda p: p.data, objective)


def _lbfgs_torch(objective: Any, x0: Any) -> tuple[float, float, int]:
    import torch

    return _lbfgs_run(
        torch.nn.Parameter(torch.from_numpy(x0.copy())), torch.optim.LBFGS, torch.Tensor.detach, objective
    )


def _lbfgs_run(p: Any, lbfgs: Any, values: Callable[[Any], Any], objective: Any) -> tuple[float, float, int]:
    """Seconds of one LBFGS step of LBFGS_ITERATIONS iterations on parameter ``p``; seconds and calls inside."""

    def closure() -> float:
        value, p.grad = objective(values(p))
        return float(value)

    opt = lbfgs(
        [p],
        max_iter=LBFGS_ITERATIONS,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        history_size=LBFGS_HISTORY,
        line_search_fn="strong_wolfe",
    )
    start = time.perf_counter()
    opt.step(closure)
    return time.perf_counter() - start, objective.seconds, objective.calls


def _lbfgs_scipy(objective: Any, x0: Any) -> tuple[float, float, int]:
    from scipy.optimize import minimize

    options = {"maxiter": LBFGS_ITERATIONS, "maxcor": LBFGS_HISTORY, "gtol": 0.0, "ftol": 0.0}
    start = time.perf_counter()
    minimize(objective, x0.copy(), jac=True, method="L-BFGS-B", options=options)
    return time.perf_counter() - start, objective.seconds, objective.calls


# -- bandwidth -------------------------------------------------------------------------------


def _bandwidth(xp: Any, sync: Callable[[], None], size: int, threads: int, numba_ok: bool) -> list[Row]:
    """STREAM-like copy (8 B/element) and triad (12 B/element), float32, GB/s."""
    import numpy as np

    a = xp.zeros(size, dtype=xp.float32)
    b = xp.asarray(np.random.default_rng(0).standard_normal(size, dtype=np.float32))
    c = b * 0.5
    s = np.float32(3.0)
    kernels: dict[str, tuple[Callable[[], Any], int]] = {"copy": (lambda: xp.copyto(a, b), 8)}
    if xp is np:
        kernels["triad, 2 NumPy ufuncs"] = (lambda: (np.multiply(c, s, out=a), np.add(a, b, out=a)), 12)
        if numba_ok:
            triad = _numba_triad(threads)
            triad(a, b, c, s)
            kernels["triad, numba one pass"] = (lambda: triad(a, b, c, s), 12)
    else:
        triad_kernel = xp.ElementwiseKernel("T b, T c, T s", "T a", "a = b + s * c", "arrayopt_bench_triad")
        kernels["triad"] = (lambda: triad_kernel(b, c, s, a), 12)
    times = time_candidates({k: v[0] for k, v in kernels.items()}, 5, 0.2, sync)
    device = "cpu" if xp is np else "gpu"
    return [
        {
            "type": "bandwidth",
            "device": device,
            "kernel": k,
            "threads": threads,
            "gbs": kernels[k][1] * size / t / 1e9,
            "ms": 1e3 * t,
        }
        for k, t in times.items()
    ]


def _numba_triad(threads: int) -> Callable[..., None]:
    numba: Any = importlib.import_module("numba")

    def triad(a: Any, b: Any, c: Any, s: Any) -> None:
        for i in numba.prange(a.shape[0]):
            a[i] = b[i] + s * c[i]

    compiled: Callable[..., None] = numba.njit(parallel=threads > 1, fastmath=False)(triad)
    return compiled


# -- the report ------------------------------------------------------------------------------


def report(rows: list[Row]) -> str:
    """Markdown tables of the rows a run produced (machine, bandwidth, steps, targets)."""
    out: list[str] = []
    machines = [r for r in rows if r["type"] == "machine"]
    if machines:
        m = machines[0]
        out.append(
            f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, NumPy {m['numpy']}, "
            f"numba {m.get('numba', 'not installed')}, torch {m['torch'] or 'not installed'}, "
            f"arrayopt {m['arrayopt']}; {m['date']}"
        )
        for g in (r for r in machines if r.get("gpu")):
            out.append(f"GPU: {g['gpu']}, CuPy {g.get('cupy')}")
        out.append("")
    for text in dict.fromkeys(r["text"] for r in rows if r["type"] == "note"):
        out.append(f"Note: {text}")
    bandwidth = [r for r in rows if r["type"] == "bandwidth"]
    if bandwidth:
        out += ["", "Memory bandwidth (STREAM-like, float32, arrays far larger than the caches)", ""]
        out += ["| device | kernel | threads | GB/s | ms |", "|---|---|---|---|---|"]
        out += [
            f"| {r['device']} | {r['kernel']} | {r['threads']} | {r['gbs']:.1f} | {r['ms']:.1f} |" for r in bandwidth
        ]
    steps = [r for r in rows if r["type"] == "step"]
    if steps:
        names = [ARRAYOPT_NUMBA, ARRAYOPT_NUMPY, ARRAYOPT_GPU, *TORCH_IMPLEMENTATIONS]
        present = [n for n in names if any(n in r["ms"] for r in steps)]
        ours = [n for n in (ARRAYOPT_NUMBA, ARRAYOPT_NUMPY, ARRAYOPT_GPU) if n in present]
        out += ["", "ms per step (median); GB/s against the minimal traffic; ratios to torch in the same process", ""]
        header = ["optimizer", "workload", "threads", *[f"{n} ms" for n in present]]
        header += [f"{n} GB/s" for n in ours] + [f"{n} × torch best" for n in ours]
        if ARRAYOPT_NUMPY in present and "torch foreach" in present:
            header.append("NumPy × torch foreach")
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in steps:
            ms = r["ms"]
            best = min((ms[k] for k in TORCH_IMPLEMENTATIONS if k in ms), default=None)
            cells = [r["optimizer"], r["workload"], str(r["threads"])]
            cells += [f"{ms[n]:.2f}" if n in ms else "–" for n in present]
            cells += [f"{r['bytes_per_step'] / ms[n] / 1e6:.1f}" if n in ms else "–" for n in ours]
            cells += [f"{ms[n] / best:.2f}" if n in ms and best else "–" for n in ours]
            if ARRAYOPT_NUMPY in present and "torch foreach" in present:
                foreach = ms.get("torch foreach")
                cells.append(f"{ms[ARRAYOPT_NUMPY] / foreach:.2f}" if foreach and ARRAYOPT_NUMPY in ms else "–")
            out.append("| " + " | ".join(cells) + " |")
        first: dict[tuple[str, int], float] = {}
        for r in steps:  # the first workload of an optimizer in a worker compiles its kernel
            if "numba_first_step_s" in r:
                first.setdefault((r["optimizer"], r["threads"]), r["numba_first_step_s"])
        if first:
            listed = ", ".join(f"{name} {t}T {s:.2f} s" for (name, t), s in first.items())
            out += ["", f"First arrayopt numba step (tracing and compiling the rule, then one step): {listed}"]
        out += ["", *_targets(steps, bandwidth)]
        out.append("")
        out.append("Minimal traffic per element (float32, 4 bytes per access):")
        for name in sorted({r["optimizer"] for r in steps}):
            accesses, what = TRAFFIC[name]
            out.append(f"- {name}: {4 * accesses} B ({what})")
    out += _fresh_process_tables(rows)
    lbfgs = [r for r in rows if r["type"] == "lbfgs"]
    if lbfgs:
        solvers = [s for s in LBFGS_SOLVERS if any(s in r["ms"] for r in lbfgs)]
        out += ["", f"LBFGS, {LBFGS_ITERATIONS} iterations (strong Wolfe, history {LBFGS_HISTORY}), extended "]
        out[-1] += "Rosenbrock in float64: ms in all (inside the objective); ratios of the totals, same process"
        header = ["n", "threads", *[f"{s} ms" for s in solvers], "× torch", "× SciPy"]
        out += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in lbfgs:
            ms, inside = r["ms"], r["objective_ms"]
            cells = [f"{r['n']:g}", str(r["threads"])]
            cells += [f"{ms[s]:.1f} ({inside[s]:.1f})" if s in ms else "–" for s in solvers]
            ours = ms.get("arrayopt LBFGS")
            for other in ("torch LBFGS", "scipy L-BFGS-B"):
                cells.append(f"{ours / ms[other]:.2f}" if ours and ms.get(other) else "–")
            out.append("| " + " | ".join(cells) + " |")
    issue21 = _issue21_targets(rows)
    if len(issue21) > 1:
        out += ["", *issue21]
    return "\n".join(out)


def _fresh_process_tables(rows: list[Row]) -> list[str]:
    """The first-step latency and memory tables (rows measured in fresh processes)."""
    out: list[str] = []
    first = [r for r in rows if r["type"] == "first_step"]
    if first:
        out += ["", "First step in a fresh process (Adam, one float32 Parameter; medians; seconds)", ""]
        out += [
            "| case | elements | runs | script start to end of first step | import | first step | numba imported "
            "| arrayopt from bytecode |"
        ]
        out += ["|---|---|---|---|---|---|---|---|"]
        for r in first:
            out.append(
                f"| {r['case']} | {r['elements']} | {r['runs']} | {r['total_s']:.3f} | {r['import_s']:.3f} | "
                f"{r['step_s']:.4f} | {'yes' if r['numba_imported'] else 'no'} | "
                f"{'yes' if r.get('bytecode') else 'no (compiled from source each run)'} |"
            )
    memory = [r for r in rows if r["type"] == "memory"]
    if memory:
        out += ["", "Memory of the first Adam step (one flat float32 vector; tracemalloc; MiB)", ""]
        out += ["| case | elements | new state | first step's peak above it | steady step's peak | steady kept |"]
        out += ["|---|---|---|---|---|---|"]
        mib = float(1 << 20)
        for r in memory:
            out.append(
                f"| {r['case']} | {r['elements']} | {r['state_bytes'] / mib:.1f} | {r['first_peak_bytes'] / mib:.2f} | "
                f"{r['steady_peak_bytes'] / mib:.3f} | {r['steady_kept_bytes'] / mib:.3f} |"
            )
    return out


def _issue21_targets(rows: list[Row]) -> list[str]:
    """The targets of issue 21 (first step, per-parameter cost, LBFGS, first-step memory) on this run's figures."""
    lines = ["Targets (issue 21):"]

    def check(label: str, found: list[tuple[str, float]], limit: float) -> None:
        if found:
            worst = max(found, key=lambda x: x[1])
            lines.append(
                f"- {label} (≤ {limit}): {'met' if worst[1] <= limit else 'NOT met'}; worst {worst[1]:.2f} ({worst[0]})"
            )

    first = [(r["case"], r["total_s"]) for r in rows if r["type"] == "first_step" and r["case"].startswith("numba")]
    check("script start to end of first step with numba installed, s", first, 0.15)
    separate = []
    for r in rows:
        ms = r.get("ms", {})
        if r["type"] == "step" and r["workload"].endswith("-separate") and "torch fused" in ms:
            ours = ms.get(ARRAYOPT_NUMBA, ms.get(ARRAYOPT_NUMPY))
            if ours is not None:
                separate.append((f"{r['optimizer']} {r['workload']} {r['threads']}T", ours / ms["torch fused"]))
    check("separate Parameters: time / torch fused", separate, 1.0)
    lbfgs = [
        (f"n={r['n']:g} {r['threads']}T", r["ms"]["arrayopt LBFGS"] / r["ms"]["torch LBFGS"])
        for r in rows
        if r["type"] == "lbfgs" and "torch LBFGS" in r["ms"] and r["n"] >= 1_000_000
    ]
    check("LBFGS n = 1e6: time / torch.optim.LBFGS", lbfgs, 0.9)
    memory = [(r["case"], r["first_peak_bytes"] / float(1 << 20)) for r in rows if r["type"] == "memory"]
    check("first Adam step: peak above its new state, MiB", memory, 8.0)
    return lines


def _targets(steps: list[Row], bandwidth: list[Row]) -> list[str]:
    """The performance targets of issue 6, checked on this run's figures."""
    lines = ["Targets:"]

    def check(label: str, found: list[tuple[str, float]], limit: float, at_least: bool = False) -> None:
        if not found:
            return
        worst = min(found, key=lambda x: x[1]) if at_least else max(found, key=lambda x: x[1])
        met = worst[1] >= limit if at_least else worst[1] <= limit
        sign = "≥" if at_least else "≤"
        lines.append(f"- {label} ({sign} {limit}): {'met' if met else 'NOT met'}; worst {worst[1]:.2f} ({worst[0]})")

    def ratios(rows: list[Row], ours: str, theirs: list[str]) -> list[tuple[str, float]]:
        found = []
        for r in rows:
            ms = r["ms"]
            reference = [ms[k] for k in theirs if k in ms]
            if ours in ms and reference:
                found.append((f"{r['optimizer']} {r['workload']} {r['threads']}T", ms[ours] / min(reference)))
        return found

    cpu = [r for r in steps if WORKLOADS[r["workload"]][2] == "cpu"]
    gpu = [r for r in steps if WORKLOADS[r["workload"]][2] == "gpu"]
    check("CPU, numba: time / torch's best (fused)", ratios(cpu, ARRAYOPT_NUMBA, list(TORCH_IMPLEMENTATIONS)), 1.0)
    check("CPU, NumPy: time / torch foreach", ratios(cpu, ARRAYOPT_NUMPY, ["torch foreach"]), 0.5)
    for ours in (ARRAYOPT_NUMBA, ARRAYOPT_NUMPY):
        found = []
        for r in cpu:
            if r["workload"] != "10000x1.6K" or ours not in r["ms"]:
                continue
            for big in cpu:
                if (big["workload"], big["optimizer"], big["threads"]) == ("1x16.8M", r["optimizer"], r["threads"]):
                    if ours in big["ms"]:
                        slower = (r["ms"][ours] / r["elements"]) / (big["ms"][ours] / big["elements"])
                        found.append((f"{r['optimizer']} {r['threads']}T", slower))
        check(f"{ours}: time per element, 10000x1.6K / 1x16.8M", found, 1.3)
    if gpu:
        check("GPU: time / torch fused CUDA", ratios(gpu, ARRAYOPT_GPU, ["torch fused"]), 1.0)
        large = ("gpu-1x256M", "gpu-1000x256K")
        copy = max((b["gbs"] for b in bandwidth if b.get("device") == "gpu" and b["kernel"] == "copy"), default=0.0)
        if copy:
            found = [
                (f"{r['optimizer']} {r['workload']}", r["bytes_per_step"] / r["ms"][ARRAYOPT_GPU] / 1e6 / copy)
                for r in gpu
                if ARRAYOPT_GPU in r["ms"] and r["workload"] in large
            ]
            check(f"GPU: share of the measured copy bandwidth ({copy:.0f} GB/s)", found, 0.85, at_least=True)
        per_element = []
        for r in gpu:
            for big in gpu:
                same = (big["optimizer"], big["workload"]) == (r["optimizer"], large[0])
                if r["workload"] == large[1] and same and ARRAYOPT_GPU in r["ms"] and ARRAYOPT_GPU in big["ms"]:
                    slower = (r["ms"][ARRAYOPT_GPU] / r["elements"]) / (big["ms"][ARRAYOPT_GPU] / big["elements"])
                    per_element.append((r["optimizer"], slower))
        check("GPU: time per element, 1000x256K / 1x256M", per_element, 1.2)
    return lines


if __name__ == "__main__":
    raise SystemExit(main())

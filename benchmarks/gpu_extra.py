"""GPU figures that ``python -m arrayopt.bench --gpu`` does not take: half precision,
CUDA-graph capture of a whole step, and L-BFGS at n = 1e7 against torch.optim.LBFGS.

    python benchmarks/gpu_extra.py --json gpu_extra.json [--quick]
    python benchmarks/gpu_extra.py --cpu --quick      # a dry run of the logic on NumPy and torch's CPU

Everything runs in this one process on the current CUDA device, arrayopt (CuPy) and
torch (CUDA) side by side on the same data, timed by ``benchmarks/bench.py``'s ``time_candidates``
(interleaved rounds, medians, the device synchronised around each batch).

* **Where the loads go**: Adam's generated kernel on 256M float32 elements, as printed
  by ``backends/cuda_source.py`` and with a compiler barrier after its loads, against
  torch's fused Adam: whether the compiler sinking a load past the square root and the
  division costs bandwidth.
* **Half precision**: Adam and SGD (momentum 0.9) on one array of 256M float16 (and
  bfloat16 where CuPy has the type) against torch's fused CUDA kernels; also the largest
  difference from torch after 10 steps from the same start, in units of the dtype's
  epsilon, so that a fast but wrong kernel shows.
* **CUDA graphs**: Adam on 10,000 arrays of 1,600 float32, as a ParameterList (one
  kernel per step) and as 10,000 separate Parameters (one kernel per array): the time of
  ``opt.step()`` against replaying one captured step as a CUDA graph. A replay repeats
  the captured per-step scalars, so it is not a correct step; it is the lower bound that
  capture could reach. Also the host time per step spent inside the kernel calls, the
  only part a graph replaces while the per-step scalars and counters stay on the host.
* **LBFGS at n = 1e7**: the extended Rosenbrock function (independent pairs, float64,
  from (-1.2, 1, ...)), strong-Wolfe line search, history 10, to a largest gradient
  entry of 1e-5, objective and gradient written once for CuPy and once for torch; time,
  iterations and evaluations of each.
"""

import argparse
import inspect
import json
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

import arrayopt
import arrayopt.backends

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run with python -P too
from bench import time_candidates

#: the array library and torch device under test: CuPy and "cuda", or NumPy and "cpu" (--cpu, a dry run)
XP: Any = None
DEVICE = "cuda"


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        XP.cuda.Device().synchronize()
        torch.cuda.synchronize()


def _host(array: Any) -> Any:
    return XP.asnumpy(array) if DEVICE == "cuda" else np.asarray(array)


# -- half precision -------------------------------------------------------------------------


def half_precision(size: int, rounds: int, batch: float) -> list[dict[str, Any]]:
    import torch

    xp = XP

    rows = []
    kinds: list[tuple[str, Any, Any]] = [("float16", np.float16, torch.float16)]
    try:
        import ml_dtypes

        bfloat16 = np.dtype(ml_dtypes.bfloat16)
        _ = xp.zeros(4, dtype=bfloat16) + 1  # does the library compute in bfloat16?
        kinds.append(("bfloat16", bfloat16, torch.bfloat16))
    except Exception as exc:  # no ml_dtypes, or CuPy has no bfloat16 arithmetic
        rows.append({"type": "note", "text": f"bfloat16 not run: {type(exc).__name__}: {exc}"})
    rng = np.random.default_rng(0)
    host32 = rng.standard_normal(size, dtype=np.float32)
    grad32 = rng.standard_normal(size, dtype=np.float32)
    for label, np_dtype, torch_dtype in kinds:
        for name, kwargs in (("Adam", {"lr": 1e-3}), ("SGD", {"lr": 1e-3, "momentum": 0.9})):
            row: dict[str, Any] = {"type": "half", "dtype": label, "optimizer": name, "elements": size}
            try:
                data = xp.asarray(host32.astype(np_dtype))
                p = arrayopt.Parameter(data)
                p.grad = xp.asarray(grad32.astype(np_dtype))
                ours = getattr(arrayopt, name)([p], **kwargs)
                t = torch.nn.Parameter(torch.from_numpy(host32).to(DEVICE, torch_dtype))
                t.grad = torch.from_numpy(grad32).to(DEVICE, torch_dtype)
                theirs = getattr(torch.optim, name)([t], fused=True, **kwargs)
                for _ in range(10):
                    ours.step()
                    theirs.step()
                _sync()
                a = _host(p.data).astype(np.float64)
                b = t.detach().float().cpu().numpy().astype(np.float64)
                eps = float(np.finfo(np.float16).eps) if label == "float16" else 2.0**-7
                scale = np.maximum(np.abs(b), 1.0)
                row["max_diff_eps_after_10_steps"] = float(np.max(np.abs(a - b) / scale) / eps)
                times = time_candidates({"arrayopt": ours.step, "torch fused": theirs.step}, rounds, batch, _sync)
                row["ms"] = {k: 1e3 * v for k, v in times.items()}
                accesses = 7 if name == "Adam" else 5
                row["gbs"] = {k: accesses * 2 * size / v / 1e9 for k, v in times.items()}
                del ours, theirs, p, t, data
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


# -- CUDA graphs ---------------------------------------------------------------------------


def graphs(count: int, size: int, rounds: int, batch: float) -> list[dict[str, Any]]:
    import torch

    xp = XP
    if DEVICE != "cuda":
        return [{"type": "note", "text": "graphs: CUDA only, not run"}]

    rng = np.random.default_rng(0)
    host = [rng.standard_normal(size, dtype=np.float32) for _ in range(count)]
    grads = [xp.asarray(rng.standard_normal(size, dtype=np.float32)) for _ in range(count)]
    rows = []
    for layout in ("ParameterList", "separate Parameters"):
        row: dict[str, Any] = {"type": "graph", "layout": layout, "arrays": count, "elements": size}
        datas = [xp.asarray(h) for h in host]
        params = (
            list(arrayopt.ParameterList(datas)) if layout == "ParameterList" else list(map(arrayopt.Parameter, datas))
        )
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt = arrayopt.Adam(params, lr=1e-3)
        stream = xp.cuda.Stream(non_blocking=True)
        candidates: dict[str, Any] = {}

        def step(opt: Any = opt, stream: Any = stream) -> None:
            with stream:
                opt.step()

        candidates["opt.step()"] = step
        try:
            with stream:
                opt.step()
                stream.synchronize()
                stream.begin_capture()
                opt.step()
                graph = stream.end_capture()
            candidates["graph replay"] = lambda graph=graph, stream=stream: graph.launch(stream)
        except Exception as exc:
            row["capture_error"] = f"{type(exc).__name__}: {exc}"

        def sync(stream: Any = stream) -> None:
            stream.synchronize()

        times = time_candidates(candidates, rounds, batch, sync)
        row["ms"] = {k: 1e3 * v for k, v in times.items()}
        if "graph replay" in times:
            row["saving"] = 1.0 - times["graph replay"] / times["opt.step()"]
        row["launch_ms_per_step"] = 1e3 * _launch_seconds(params[0].data, step, 20, sync)
        # device time of one step alone: the kernels queued by one step, timed by events
        start, end = xp.cuda.Event(), xp.cuda.Event()
        with stream:
            start.record()
            opt.step()
            end.record()
        end.synchronize()
        row["device_ms_one_step"] = xp.cuda.get_elapsed_time(start, end)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        del opt, params, datas
    # torch fused over the same arrays, for scale
    tparams = [torch.nn.Parameter(torch.from_numpy(h).cuda()) for h in host]
    for p, g in zip(tparams, grads, strict=True):
        p.grad = torch.as_tensor(g, device="cuda")
    topt = torch.optim.Adam(tparams, lr=1e-3, fused=True)
    times = time_candidates({"torch fused": topt.step}, rounds, batch, _sync)
    rows.append({"type": "graph", "layout": "torch fused", "ms": {k: 1e3 * v for k, v in times.items()}})
    return rows


def _launch_seconds(array: Any, step: Any, steps: int, sync: Any) -> float:
    """Host seconds per step spent inside the backend's kernel calls (all that a CUDA graph replaces).

    The rest of ``opt.step()`` (per-step scalars, counters, hooks) is Python that runs
    before the launches, with or without a graph.
    """
    backend = arrayopt.backends.get_backend(array)
    spent = [0.0]
    saved = dict(backend._by_call)

    def timed(run: Any) -> Any:
        def call(*args: Any) -> None:
            start = time.perf_counter()
            run(*args)
            spent[0] += time.perf_counter() - start

        return call

    backend._by_call.update({key: timed(run) for key, run in saved.items()})
    try:
        sync()
        for _ in range(steps):
            step()
        sync()
    finally:
        backend._by_call.clear()
        backend._by_call.update(saved)
    return spent[0] / steps


# -- where the loads go: Adam's generated kernel with and without a compiler barrier -----------


def _float4_source(parts: Any, operation: str) -> tuple[str, list[str], list[str]]:
    """A raw CUDA kernel moving four float32 elements per thread as float4, calling ``operation``
    (an ElementwiseKernel body) once per element; its array and host parameter names."""
    ins = [x.split() for x in parts.in_params.split(", ")]
    outs = [x.split() for x in parts.out_params.split(", ")]
    names = sorted({n for _, n in ins + outs if n.startswith("a")}, key=lambda n: int(n[1:]))
    hosts = [n for _, n in ins if n.startswith("h")]
    signature = [f"float& {n}" for _, n in outs] + [
        f"const {'float' if t == 'float32' else 'double'} {n}" for t, n in ins
    ]
    order = [n for _, n in outs] + [n for _, n in ins]
    lanes = ["arrayopt_op(" + ", ".join(f"v{n}.{c}" if n.startswith("a") else n for n in order) + ");" for c in "xyzw"]
    source = "\n".join(
        [
            f"__device__ __forceinline__ void arrayopt_op({', '.join(signature)}) {{",
            operation,
            "}",
            'extern "C" __global__ void arrayopt_adam_v4('
            + ", ".join([f"float* p{n}" for n in names] + [f"const double {h}" for h in hosts] + ["long long n4"])
            + ") {",
            "  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n4;"
            " i += (long long)gridDim.x * blockDim.x) {",
            *[f"    float4 v{n} = reinterpret_cast<float4*>(p{n})[i];" for n in names],
            *[f"    {lane}" for lane in lanes],
            *[f"    reinterpret_cast<float4*>(p{n})[i] = v{n};" for _, n in outs],
            "  }",
            "}",
        ]
    )
    return source, names, hosts


def loads(size: int, rounds: int, batch: float) -> list[dict[str, Any]]:
    """Adam's generated elementwise kernel (``backends/cuda_source.py``), with and without the
    compiler barrier it prints after its loads, the same per-element text in a raw kernel that
    moves four elements per thread as float4, and torch's fused Adam, on 256M float32 elements."""
    import torch

    from arrayopt.backends import cuda_source, trace
    from arrayopt.optimizers.adam import adam_update

    xp = XP
    if DEVICE != "cuda":
        return [{"type": "note", "text": "loads: CUDA only, not run"}]
    # Adam's first step with torch's defaults, by argument name (the rule's signature may grow)
    values = {"weight_decay": 0.0, "decay_factor": 1.0, "one_minus_beta1": 0.1, "one_minus_weight": 0.9}
    values |= {"beta2": 0.999, "one_minus_beta2": 0.001, "step_size": 1e-3 / 0.1, "bias_correction2_sqrt": 0.0316}
    values |= {"eps": 1e-8}
    signature = inspect.signature(adam_update).parameters.values()
    positional = [p.name for p in signature if p.kind is p.POSITIONAL_OR_KEYWORD][1:]  # without xp
    flags = {p.name: False for p in signature if p.kind is p.KEYWORD_ONLY} | {"decay": "none"}
    scalars = tuple(values[name] for name in positional[5:])
    kinds = (trace.ARRAY,) * 5 + (trace.SCALAR,) * len(scalars)
    program = trace.trace(adam_update, flags, kinds)
    parts = cuda_source.elementwise_parts(program, np.dtype(np.float32))
    plain = "\n".join(line for line in parts.operation.splitlines() if line != cuda_source.LOAD_BARRIER)
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(size, dtype=np.float32) for _ in range(2)]
    candidates: dict[str, Any] = {}
    arrays: dict[str, list[Any]] = {}
    for name, operation in (("generated (barrier after the loads)", parts.operation), ("without the barrier", plain)):
        kernel = xp.ElementwiseKernel(
            parts.in_params, parts.out_params, operation, "arrayopt_adam_probe", options=cuda_source.NVRTC_OPTIONS
        )
        p, g = xp.asarray(host[0]), xp.asarray(host[1])
        m, v = xp.zeros_like(p), xp.zeros_like(p)
        arrays[name] = [p, g, m, v]
        namespace: dict[str, Any] = {"_kernel": kernel}
        exec(compile(parts.launcher_source, "<probe>", "exec"), namespace)
        launch = namespace["launch"]
        candidates[name] = lambda launch=launch, p=p, g=g, m=m, v=v: launch(p, g, m, v, None, *scalars)
    # four elements per thread, the same per-element text in a device function
    source, names, hosts = _float4_source(parts, plain)
    try:
        raw = xp.RawKernel(source, "arrayopt_adam_v4", options=cuda_source.NVRTC_OPTIONS)
        p, g = xp.asarray(host[0]), xp.asarray(host[1])
        m, v = xp.zeros_like(p), xp.zeros_like(p)
        by_name = {"a0": p, "a1": g, "a2": m, "a3": v}
        host_values = tuple(np.float64(scalars[int(h[1:]) - 5]) for h in hosts)
        args = (*(by_name[n] for n in names), *host_values, np.int64(size // 4))
        blocks = min(size // 4 // 256, 132 * 32)
        raw((blocks,), (256,), args)  # compiles here
        p[...], m[...], v[...] = xp.asarray(host[0]), 0, 0
        candidates["float4, 4 per thread"] = lambda: raw((blocks,), (256,), args)
        arrays["float4, 4 per thread"] = [p, g, m, v]
    except Exception as exc:
        print(json.dumps({"type": "note", "text": f"float4 kernel: {exc}"}), file=sys.stderr, flush=True)
    t = torch.nn.Parameter(torch.from_numpy(host[0]).cuda())
    t.grad = torch.from_numpy(host[1]).cuda()
    topt = torch.optim.Adam([t], lr=1e-3, fused=True)
    candidates["torch fused"] = topt.step
    for run in candidates.values():  # the same number of steps on every copy, then compare bits
        run()
    _sync()
    reference = [_host(a) for a in arrays["without the barrier"]]
    same = {
        k: all(np.array_equal(_host(a), r) for a, r in zip(arrs, reference, strict=True)) for k, arrs in arrays.items()
    }
    times = time_candidates(candidates, rounds, batch, _sync)
    row = {"type": "loads", "elements": size, "ms": {k: 1e3 * v for k, v in times.items()}, "same_bits_after_1": same}
    row["gbs"] = {k: 28 * size / v / 1e9 for k, v in times.items()}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return [row]


# -- LBFGS at n = 1e7 ------------------------------------------------------------------------


def _rosenbrock(xp: Any) -> Any:
    def fun(x: Any) -> tuple[float, Any]:
        a, b = x[0::2], x[1::2]
        r = b - a * a
        value = float((100.0 * r * r + (1.0 - a) ** 2).sum())
        grad = xp.empty_like(x)
        grad[0::2] = -400.0 * a * r - 2.0 * (1.0 - a)
        grad[1::2] = 200.0 * r
        return value, grad

    return fun


class _Counted:
    def __init__(self, fun: Any) -> None:
        self.fun, self.calls, self.seconds = fun, 0, 0.0

    def __call__(self, x: Any) -> Any:
        start = time.perf_counter()
        out = self.fun(x)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def lbfgs(n: int, repeat: int) -> list[dict[str, Any]]:
    import torch

    xp = XP

    host = np.tile([-1.2, 1.0], n // 2)
    settings = {"max_iter": 20_000, "tolerance_grad": 1e-5, "tolerance_change": 0.0, "history_size": 10}

    def ours() -> dict[str, Any]:
        p = arrayopt.Parameter(xp.asarray(host).copy())
        fun = _Counted(_rosenbrock(xp))

        def closure() -> float:
            value, p.grad = fun(p.data)
            return value

        opt = arrayopt.LBFGS([p], line_search_fn="strong_wolfe", **settings)
        _sync()
        start = time.perf_counter()
        opt.step(closure)
        _sync()
        seconds = time.perf_counter() - start
        value, grad = _rosenbrock(xp)(p.data)
        return {"s": seconds, "objective_s": fun.seconds, "evals": fun.calls, "iters": opt.state[p]["n_iter"],
                "f": value, "max_grad": float(abs(grad).max())}  # fmt: skip

    def theirs() -> dict[str, Any]:
        p = torch.nn.Parameter(torch.from_numpy(host).to(DEVICE).clone())
        fun = _Counted(_rosenbrock(torch))

        def closure() -> float:
            value, p.grad = fun(p.detach())
            return value

        opt = torch.optim.LBFGS([p], line_search_fn="strong_wolfe", **settings)
        _sync()
        start = time.perf_counter()
        opt.step(closure)
        _sync()
        seconds = time.perf_counter() - start
        value, grad = _rosenbrock(torch)(p.detach())
        return {"s": seconds, "objective_s": fun.seconds, "evals": fun.calls, "iters": opt.state[p]["n_iter"],
                "f": value, "max_grad": float(grad.abs().max())}  # fmt: skip

    names = ("arrayopt LBFGS", "torch LBFGS")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    ours()  # compile the kernels and warm the allocators
    theirs()
    for r in range(repeat):
        order = list(zip(names, (ours, theirs), strict=True))
        for name, run in order if r % 2 == 0 else order[::-1]:
            runs[name].append(run())
    rows = []
    for name, results in runs.items():
        row = {"type": "lbfgs", "solver": name, "n": n, **results[-1]}
        row["s"] = statistics.median(x["s"] for x in results)
        row["objective_s"] = statistics.median(x["objective_s"] for x in results)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="", help="write the rows here as well")
    parser.add_argument("--quick", action="store_true", help="small sizes: a dry run of the logic")
    parser.add_argument("--only", default="loads,half,graphs,lbfgs", help="comma-separated parts to run")
    parser.add_argument("--cpu", action="store_true", help="NumPy and torch on the CPU: a dry run without a GPU")
    args = parser.parse_args()
    global XP, DEVICE
    import torch

    if args.cpu:
        XP, DEVICE, gpu_name, cupy_version = np, "cpu", None, None
    else:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        XP, gpu_name, cupy_version = cupy, props["name"], cupy.__version__
        gpu_name = gpu_name.decode() if isinstance(gpu_name, bytes) else str(gpu_name)
    parts = set(args.only.split(","))
    rounds, batch = (3, 0.05) if args.quick else (5, 0.2)
    rows: list[dict[str, Any]] = [
        {
            "type": "machine",
            "device": DEVICE,
            "gpu": gpu_name,
            "cupy": cupy_version,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "arrayopt": arrayopt.__version__,
        }
    ]
    for part, run in (
        ("loads", lambda: loads(1 << 20 if args.quick else 1 << 28, rounds, batch)),
        ("half", lambda: half_precision(1 << 20 if args.quick else 1 << 28, rounds, batch)),
        ("graphs", lambda: graphs(100 if args.quick else 10_000, 1_600, rounds, batch)),
        ("lbfgs", lambda: lbfgs(10_000 if args.quick else 10_000_000, 1 if args.quick else 3)),
    ):
        if part in parts:
            try:
                rows += run()
            except Exception as exc:
                rows.append({"type": "note", "text": f"{part} failed: {type(exc).__name__}: {exc}"})
    print(json.dumps(rows, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

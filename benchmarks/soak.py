"""Soak: many Adam steps on NumPy without memory growth, and a resumed run identical to an uninterrupted one.

    PYTHONPATH=. python benchmarks/soak.py                 # 100,000 steps (the issue's soak)
    PYTHONPATH=. python benchmarks/soak.py --steps 2000    # a quick one

A small least-squares-like problem (two parameters, 200 elements) is optimized by Adam
(amsgrad, weight decay: every state array in use) with a gradient that depends only on
the parameters and the step number, so a resumed run can replay it exactly.

Memory: after a warm-up (caches filled, kernels compiled), ``tracemalloc`` traces every
Python allocation; the traced size is sampled (after ``gc.collect()``) at intervals.
Growth is the last sample minus the first; it must stay under ``--bound-kib``. A leak of
even one small object per step (about 50 bytes) would show as megabytes over 100,000 steps.

Resume: half-way, the optimizer and parameters are saved with ``arrayopt.save``; at the
end a fresh optimizer on fresh parameters is loaded from that file with
``arrayopt.load_into`` and run over the second half. Its parameters and state must equal
the uninterrupted run's bit for bit.

Prints a JSON report; exits 1 on growth beyond the bound or on any mismatch.
"""

import argparse
import gc
import json
import math
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import numpy as np

import arrayopt
from arrayopt.backends import background

SHAPES = [(8, 16), (72,)]
KWARGS: dict[str, Any] = {"lr": 1e-3, "weight_decay": 1e-4, "amsgrad": True}


def build(seed: int) -> tuple[list[arrayopt.Parameter], arrayopt.Adam]:
    rng = np.random.default_rng(seed)
    params = [arrayopt.Parameter(rng.standard_normal(s), name=f"p{i}") for i, s in enumerate(SHAPES)]
    return params, arrayopt.Adam(params, **KWARGS)


TARGETS = [np.random.default_rng(1000 + i).standard_normal(s) for i, s in enumerate(SHAPES)]


def set_grads(params: list[arrayopt.Parameter], step: int) -> None:
    """A gradient that depends only on the parameters and the step: replayable after a resume."""
    scale = 1.0 + 0.5 * math.sin(1e-3 * step)
    for p, target in zip(params, TARGETS, strict=True):
        p.grad = (p.data - target) * scale


def run(params: list[arrayopt.Parameter], opt: arrayopt.Adam, start: int, stop: int) -> None:
    for step in range(start, stop):
        set_grads(params, step)
        opt.step()


def same_bits(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return bool(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes())


def compare(ps: list[arrayopt.Parameter], opt: Any, qs: list[arrayopt.Parameter], ref: Any) -> list[str]:
    """What differs between two runs (empty when every bit agrees)."""
    problems = []
    for i, (p, q) in enumerate(zip(ps, qs, strict=True)):
        if not same_bits(p.data, q.data):
            problems.append(f"param {i}: max |diff| {np.max(np.abs(p.data - q.data))}")
        a, b = opt.state[p], ref.state[q]
        if list(a) != list(b):
            problems.append(f"param {i}: state keys {list(a)} != {list(b)}")
            continue
        for key in b:
            ok = same_bits(a[key], b[key]) if isinstance(b[key], np.ndarray) else a[key] == b[key]
            if not ok:
                problems.append(f"param {i}: state {key!r} differs")
    return problems


def soak(steps: int = 100_000, samples: int = 10, warmup: int = 500, bound_kib: float = 64.0) -> dict[str, Any]:
    """Run the soak; the report's ``ok`` says whether it passed."""
    params, opt = build(0)
    # numba's kernels are made off the critical path (arrayopt.backends.background): with
    # an empty kernel cache they are still compiling after a short warm-up, and the
    # compiler's allocations would be traced as growth. Wait for them half-way, then
    # warm up the rest of the way on them.
    run(params, opt, 0, warmup // 2)
    background.wait(600)
    run(params, opt, warmup // 2, warmup)
    half = warmup + (steps - warmup) // 2
    every = max(1, (steps - warmup) // samples)
    # Filled in place: the record of memory must not itself grow the traced memory.
    trace = np.zeros(-(-(steps - warmup) // every) + 3, dtype=np.int64)
    taken = after_save = 1
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "half.ckpt")
        arrayopt.save(path, optimizer=opt, params=params)  # first use outside the trace: imports, caches
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            began = time.perf_counter()
            step = warmup
            while step < steps:
                stop = min(steps, step + every, half if step < half else steps)
                run(params, opt, step, stop)
                step = stop
                if step == half:
                    arrayopt.save(path, optimizer=opt, params=params)
                    after_save = taken
                gc.collect()
                trace[taken] = tracemalloc.get_traced_memory()[0] - base
                taken += 1
            seconds = time.perf_counter() - began
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        resumed_params, resumed = build(1)
        arrayopt.load_into(path, optimizer=resumed, params=resumed_params)
        run(resumed_params, resumed, half, steps)
    mismatches = compare(resumed_params, resumed, params, opt)
    trace = trace[:taken]
    growth = int(trace[-1] - trace[0])
    report: dict[str, Any] = {
        "steps": steps,
        "traced_steps": steps - warmup,
        "seconds": round(seconds, 3),
        "us_per_step_traced": round(1e6 * seconds / max(1, steps - warmup), 2),
        "samples_bytes": [int(x) for x in trace],
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "growth_bytes": growth,
        "growth_after_resume_point_bytes": int(trace[-1] - trace[min(after_save, len(trace) - 1)]),
        "peak_bytes_above_start": peak,
        "bound_bytes": int(bound_kib * 1024),
        "resumed_at": half,
        "resume_mismatches": mismatches,
        "final_loss": float(sum(np.sum((p.data - t) ** 2) for p, t in zip(params, TARGETS, strict=True))),
    }
    report["ok"] = growth <= report["bound_bytes"] and not mismatches
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=10, help="memory samples taken over the traced run")
    parser.add_argument("--bound-kib", type=float, default=64.0, help="allowed growth of traced memory")
    args = parser.parse_args(argv)
    report = soak(args.steps, args.samples, bound_kib=args.bound_kib)
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

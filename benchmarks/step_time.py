"""Time one optimizer step: arrayopt (NumPy backend) against torch.optim, in one process.

    python benchmarks/step_time.py [--quick]

Same data for every candidate; threads pinned to 1 (the machines have 2 cores and
BLAS/OpenMP oversubscribe them); candidates timed in interleaved rounds (A B C ...
then ... C B A) and the median per step reported, with the ratio to torch's
implementations measured in the same process. Needs torch (pip install torch==2.13.0).
This is the first, small benchmark; the full suite (more workloads, bandwidth,
2 threads, GPU) belongs to the performance issue.
"""

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import arrayopt  # noqa: E402

WORKLOADS = {"1 x 16.8M": (1, 16_777_216), "1,000 x 16K": (1_000, 16_384), "10,000 x 1.6K": (10_000, 1_600)}
OPTIMIZERS = {"Adam": {"lr": 1e-3}, "SGD": {"lr": 1e-3, "momentum": 0.9}}


def build(name, kwargs, count, size, rng):
    import torch

    datas = [rng.standard_normal(size).astype(np.float32) for _ in range(count)]
    grads = [rng.standard_normal(size).astype(np.float32) for _ in range(count)]
    candidates = {}
    ours = [arrayopt.Parameter(d.copy()) for d in datas]
    for p, g in zip(ours, grads, strict=True):
        p.grad = g
    candidates["arrayopt"] = getattr(arrayopt, name)(ours, **kwargs).step
    for impl, flags in (
        ("torch loop", {"foreach": False}),
        ("torch foreach", {"foreach": True}),
        ("torch fused", {"fused": True}),
    ):
        params = [torch.nn.Parameter(torch.from_numpy(d.copy())) for d in datas]
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g)
        candidates[impl] = getattr(torch.optim, name)(params, **kwargs, **flags).step
    return candidates


def time_candidates(candidates, rounds):
    for step in candidates.values():  # warm-up: state allocation, first touches
        step()
        step()
    per_step = {name: [] for name in candidates}
    order = list(candidates)
    for r in range(rounds):
        for name in order if r % 2 == 0 else reversed(order):
            step = candidates[name]
            start = time.perf_counter()
            n = 0
            while True:
                step()
                n += 1
                elapsed = time.perf_counter() - start
                if elapsed > 0.25:
                    break
            per_step[name].append(elapsed / n)
    return {name: statistics.median(times) for name, times in per_step.items()}


def main():
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and only the 10,000-array workload")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rounds = 3 if args.quick else 7
    workloads = {"10,000 x 1.6K": WORKLOADS["10,000 x 1.6K"]} if args.quick else WORKLOADS
    print(f"arrayopt {arrayopt.__version__} vs torch {torch.__version__}, float32, 1 thread, {rounds} rounds")
    print(
        f"{'optimizer':<6} {'workload':<14} {'arrayopt ms':>12} {'loop':>8} {'foreach':>8} {'fused':>8}"
        f" {'x loop':>7} {'x foreach':>9} {'x fused':>8}"
    )
    rng = np.random.default_rng(0)
    for name, kwargs in OPTIMIZERS.items():
        for label, (count, size) in workloads.items():
            t = time_candidates(build(name, kwargs, count, size, rng), rounds)
            ms = {k: 1e3 * v for k, v in t.items()}
            print(
                f"{name:<6} {label:<14} {ms['arrayopt']:12.1f} {ms['torch loop']:8.1f} {ms['torch foreach']:8.1f}"
                f" {ms['torch fused']:8.1f} {ms['arrayopt'] / ms['torch loop']:7.2f}"
                f" {ms['arrayopt'] / ms['torch foreach']:9.2f} {ms['arrayopt'] / ms['torch fused']:8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

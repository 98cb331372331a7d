"""Flat parameter storage: step time of many small arrays against one big one, in one process.

    python benchmarks/flat_storage.py [--quick] [--no-torch]

Candidates, all float32 with the same total size, 1 thread:

* ``one array``: 1 x 16M elements, one ordinary Parameter (the floor: one rule call);
* ``flat``: 10,000 x 1,600 elements in an ``arrayopt.ParameterList`` (one buffer);
* ``per-array``: the same 10,000 arrays as ordinary Parameters (one rule call each);
* ``torch fused``: torch.optim with ``fused=True`` on the 10,000 arrays, when torch
  is importable (the fastest torch path on CPU; shared/reference/perf_baseline.md).

and the per-step Python cost alone: 10,000 x 1 element, flat and per-array. The
target is flat within 1.3x of one array. Candidates are timed in interleaved rounds
(A B C ... then ... C B A); the median per step is reported, and ratios are taken
within this process (the machines are shared and drift by 20-30 % between runs).
"""

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import arrayopt  # noqa: E402

OPTIMIZERS = {"Adam": {"lr": 1e-3}, "SGD": {"lr": 1e-3, "momentum": 0.9}}
COUNT, SIZE = 10_000, 1_600


def arrayopt_step(name, kwargs, arrays, grads, flat):
    if flat:
        params = arrayopt.ParameterList(arrays)
        params.flat_grad = np.concatenate([g.reshape(-1) for g in grads])
    else:
        params = [arrayopt.Parameter(a.copy()) for a in arrays]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
    return getattr(arrayopt, name)(params, **kwargs).step


def torch_step(name, kwargs, arrays, grads):
    import torch

    params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
    for p, g in zip(params, grads, strict=True):
        p.grad = torch.from_numpy(g)
    return getattr(torch.optim, name)(params, **kwargs, fused=True).step


def time_candidates(candidates, rounds, batch_s):
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
                if elapsed > batch_s:
                    break
            per_step[name].append(elapsed / n)
    return {name: statistics.median(times) for name, times in per_step.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 0.2 s per candidate")
    parser.add_argument("--no-torch", action="store_true", help="leave torch out even when it is installed")
    args = parser.parse_args()
    use_torch = not args.no_torch
    if use_torch:
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:
            use_torch = False
    rounds, batch_s = (3, 0.2) if args.quick else (7, 0.3)
    rng = np.random.default_rng(0)
    print(f"arrayopt {arrayopt.__version__}, float32, 1 thread, {rounds} rounds; ms per step (median)")
    header = f"{'optimizer':<9} {'one array':>10} {'flat':>8} {'per-array':>10}"
    header += f" {'torch fused':>12}" if use_torch else ""
    header += f" {'flat/one':>9} {'per-array/flat':>15}" + (f" {'flat/torch':>11}" if use_torch else "")
    header += f" | {'10k x 1: flat':>13} {'per-array':>10}"
    print(header)
    for name, kwargs in OPTIMIZERS.items():
        arrays = [rng.standard_normal(SIZE).astype(np.float32) for _ in range(COUNT)]
        grads = [rng.standard_normal(SIZE).astype(np.float32) for _ in range(COUNT)]
        big = [np.concatenate(arrays)]
        big_grad = [np.concatenate(grads)]
        tiny = [a[:1].copy() for a in arrays]
        tiny_grads = [g[:1].copy() for g in grads]
        candidates = {
            "one": arrayopt_step(name, kwargs, big, big_grad, flat=False),
            "flat": arrayopt_step(name, kwargs, arrays, grads, flat=True),
            "per-array": arrayopt_step(name, kwargs, arrays, grads, flat=False),
            "tiny flat": arrayopt_step(name, kwargs, tiny, tiny_grads, flat=True),
            "tiny per-array": arrayopt_step(name, kwargs, tiny, tiny_grads, flat=False),
        }
        if use_torch:
            candidates["torch"] = torch_step(name, kwargs, arrays, grads)
        ms = {k: 1e3 * v for k, v in time_candidates(candidates, rounds, batch_s).items()}
        line = f"{name:<9} {ms['one']:10.1f} {ms['flat']:8.1f} {ms['per-array']:10.1f}"
        line += f" {ms['torch']:12.1f}" if use_torch else ""
        line += f" {ms['flat'] / ms['one']:9.2f} {ms['per-array'] / ms['flat']:15.2f}"
        line += f" {ms['flat'] / ms['torch']:11.2f}" if use_torch else ""
        line += f" | {ms['tiny flat']:13.2f} {ms['tiny per-array']:10.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()

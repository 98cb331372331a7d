"""Batched L-BFGS-B: arrayopt.batch.minimize against SciPy's minimize(method="L-BFGS-B") in a loop.

    python benchmarks/batch_minimize.py                  # B = 1e3, 1e4, 1e5; n = 5, 10, 20; two families
    python benchmarks/batch_minimize.py --quick          # B = 1e3, 1e4; n = 5, 10; one round
    python benchmarks/batch_minimize.py --json out.json  # the figures as JSON too

Many small smooth problems, each with its own data or box, the way a batch of them
arises in practice:

* ``rosenbrock``: Rosenbrock's chain in n variables, each problem in its own box
  (lower bounds in [-2, -0.5], half of the upper bounds in [0.2, 0.9], the others
  infinite, so that many bind at the solution), started uniformly in [-2, 2] and
  projected into the box: an ill-conditioned curved valley, 20-140 evaluations;
* ``logistic``: L2-regularised logistic regression (lambda = 0.1), one data set of 50
  samples with n standard-normal features per problem, started at 0, unbounded: a
  well-conditioned fit, 10-20 evaluations.

Both are written as a user of the batch writes them: one function of the (k, n) stack
returning the (k,) values and (k, n) gradients, with ``pass_indices=True`` (finished
problems are not evaluated again). SciPy runs the same objective one problem per call,
with the same options (SciPy's defaults: maxcor 10, ftol 2.2e-9, gtol 1e-5).

Method: one process, pinned to one CPU, BLAS and OpenMP limited to one thread. In every
round the SciPy loop is timed on ``--scipy-round`` problems right before arrayopt's
runs, and each ratio is taken within its round (a loop's cost is linear in B, so its
rate holds for every B); the median over rounds is reported. B = 1e5 runs once.
Parity: on ``--scipy-subset`` problems, arrayopt's and SciPy's solutions are compared
(largest difference relative to max(1, |x|)), with the share of problems whose objective
is no higher than SciPy's (to 1e-8 relative), whose number of evaluations is SciPy's
exactly, and the ratio of total evaluations.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from arrayopt import batch  # noqa: E402

LOGISTIC_SAMPLES = 50
LOGISTIC_PENALTY = 0.1


def rosenbrock():
    """``fun(x, rows) -> (f, g)`` for Rosenbrock's chain (the data-free family)."""

    def fun(x, rows=None):
        a, b = x[:, :-1], x[:, 1:]
        gap = b - a * a
        f = np.sum(100.0 * gap * gap + (1 - a) * (1 - a), axis=1)
        g = np.zeros_like(x)
        g[:, :-1] = -400.0 * a * gap - 2.0 * (1 - a)
        g[:, 1:] += 200.0 * gap
        return f, g

    return fun


def rosenbrock_problems(count, n, seed):
    """(x0, (lb, ub), data) for ``count`` boxed Rosenbrock problems."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-2.0, 2.0, (count, n))
    lb = rng.uniform(-2.0, -0.5, (count, n))
    ub = np.where(rng.uniform(size=(count, n)) < 0.5, rng.uniform(0.2, 0.9, (count, n)), np.inf)
    return np.clip(x0, lb, ub), (lb, ub), None


def logistic(data):
    """``fun(w, rows) -> (f, g)`` for the logistic fits; ``data`` = (X (B, m, n), y (B, m))."""
    X, y = data

    def fun(w, rows):
        XX, yy = X[rows], y[rows]
        z = np.einsum("kmn,kn->km", XX, w)
        f = np.sum(np.logaddexp(0.0, z) - yy * z, axis=1) + 0.5 * LOGISTIC_PENALTY * np.sum(w * w, axis=1)
        g = np.einsum("kmn,km->kn", XX, 1 / (1 + np.exp(-z)) - yy) + LOGISTIC_PENALTY * w
        return f, g

    return fun


def logistic_problems(count, n, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((count, LOGISTIC_SAMPLES, n))
    truth = rng.standard_normal((count, n))
    p = 1 / (1 + np.exp(-np.einsum("bmn,bn->bm", X, truth)))
    y = (rng.uniform(size=p.shape) < p).astype(float)
    return np.zeros((count, n)), None, (X, y)


FAMILIES = {
    "rosenbrock": (rosenbrock_problems, lambda data: rosenbrock()),
    "logistic": (logistic_problems, logistic),
}


def run_batch(family, x0, bounds, data):
    fun = FAMILIES[family][1](data)
    return batch.minimize(fun, x0, bounds=bounds, pass_indices=True)


def scipy_loop(family, x0, bounds, data):
    """SciPy's L-BFGS-B on each problem: (x (S, n), fun (S,), nfev (S,), seconds)."""
    from scipy.optimize import Bounds, minimize

    fun = FAMILIES[family][1](data)
    count = x0.shape[0]
    out, values, nfev = np.empty_like(x0), np.empty(count), np.empty(count, int)
    start = time.perf_counter()
    for i in range(count):
        rows = np.array([i])

        def one(q, rows=rows):
            f, g = fun(q[None, :], rows)
            return f[0], g[0]

        box = None if bounds is None else Bounds(bounds[0][i], bounds[1][i])
        res = minimize(one, x0[i], jac=True, method="L-BFGS-B", bounds=box)
        out[i], values[i], nfev[i] = res.x, res.fun, res.nfev
    return out, values, nfev, time.perf_counter() - start


def parity(result, scipy_x, scipy_f, scipy_nfev):
    ours = np.asarray(result.x[: len(scipy_x)])
    relative = np.max(np.abs(ours - scipy_x) / np.maximum(np.abs(scipy_x), 1.0), axis=1)
    f = np.asarray(result.fun[: len(scipy_x)])
    nfev = np.asarray(result.nfev[: len(scipy_x)])
    return {
        "problems": len(scipy_x),
        "max relative difference in x (median)": float(np.median(relative)),
        "max relative difference in x (99th percentile)": float(np.percentile(relative, 99)),
        "max relative difference in x (largest)": float(relative.max()),
        "share with f no higher than SciPy's": float(np.mean(f <= scipy_f + 1e-8 * np.maximum(1.0, np.abs(scipy_f)))),
        "share with SciPy's number of evaluations": float(np.mean(nfev == scipy_nfev)),
        "total evaluations / SciPy's": float(nfev.sum() / scipy_nfev.sum()),
        "success share": float(np.mean(result.success[: len(scipy_x)])),
    }


def pin(cpus):
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def main(argv=None):
    """Run the benchmark; the process gets back the CPUs it had (it runs pinned to one)."""
    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        return run(argv)
    finally:
        if available is not None:
            pin(available)


def run(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=None, help="batch sizes, comma-separated (default 1e3,1e4,1e5)")
    parser.add_argument("--dims", default=None, help="variables per problem, comma-separated (default 5,10,20)")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median reported); B >= 1e5 runs once")
    parser.add_argument("--scipy-subset", type=int, default=300, help="problems SciPy solves for the parity check")
    parser.add_argument("--scipy-round", type=int, default=200, help="problems the SciPy loop is timed on per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="B = 1e3, 1e4; n = 5, 10; one round")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or "1e3,1e4"
        args.dims = args.dims or "5,10"
        args.rounds = 1
    sizes = [int(float(s)) for s in (args.sizes or "1e3,1e4,1e5").split(",")]
    dims = [int(s) for s in (args.dims or "5,10,20").split(",")]
    families = [f.strip() for f in args.families.split(",")]
    cpu = sorted(os.sched_getaffinity(0))[0] if hasattr(os, "sched_getaffinity") else 0
    pin({cpu})
    report = {
        "benchmark": "batch.minimize (L-BFGS-B per problem) against a SciPy loop, one CPU",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "runs": [],
        "parity": {},
    }
    for family in families:
        make = FAMILIES[family][0]
        for n in dims:
            largest = max(sizes)
            x0_all, bounds_all, data_all = make(largest, n, args.seed)
            subset = min(args.scipy_subset, largest)
            timed = min(args.scipy_round, subset)

            def take(count, bounds_all=bounds_all, data_all=data_all):
                bounds = None if bounds_all is None else (bounds_all[0][:count], bounds_all[1][:count])
                data = None if data_all is None else tuple(a[:count] for a in data_all)
                return bounds, data

            bounds, data = take(subset)
            scipy_x, scipy_f, scipy_nfev, _ = scipy_loop(family, x0_all[:subset], bounds, data)
            result = run_batch(family, x0_all[:subset], bounds, data)
            report["parity"][f"{family}, n={n}"] = parity(result, scipy_x, scipy_f, scipy_nfev)
            for count in sizes:
                bounds, data = take(count)
                rates, ratios, scipy_rates = [], [], []
                for _ in range(args.rounds if count < 100_000 else 1):
                    bounds_t, data_t = take(timed)
                    scipy_rate = timed / scipy_loop(family, x0_all[:timed], bounds_t, data_t)[-1]
                    start = time.perf_counter()
                    result = run_batch(family, x0_all[:count], bounds, data)
                    rate = count / (time.perf_counter() - start)
                    rates.append(rate)
                    scipy_rates.append(scipy_rate)
                    ratios.append(rate / scipy_rate)
                row = {
                    "family": family,
                    "n": n,
                    "B": count,
                    "fits_per_s": statistics.median(rates),
                    "scipy_fits_per_s": statistics.median(scipy_rates),
                    "vs_scipy_loop": statistics.median(ratios),
                    "rounds": len(rates),
                    "mean evaluations": float(np.mean(result.nfev)),
                    "success share": float(np.mean(result.success)),
                }
                report["runs"].append(row)
                print(
                    f"{family:10s} n={n:2d} B={count:>7,d}: {row['fits_per_s']:>9,.0f} fits/s, SciPy loop "
                    f"{row['scipy_fits_per_s']:>6,.0f} fits/s, {row['vs_scipy_loop']:5.1f}x; "
                    f"mean evaluations {row['mean evaluations']:.1f}, success {row['success share']:.3f}",
                    flush=True,
                )
    print()
    print("| family | n | B | arrayopt fits/s | SciPy loop fits/s | ratio | mean evaluations |")
    print("|---|---|---|---|---|---|---|")
    for row in report["runs"]:
        print(
            f"| {row['family']} | {row['n']} | {row['B']:,} | {row['fits_per_s']:,.0f} | "
            f"{row['scipy_fits_per_s']:,.0f} | {row['vs_scipy_loop']:.1f} | {row['mean evaluations']:.1f} |"
        )
    for name, values in report["parity"].items():
        print(f"\nparity, {name}:")
        for key, value in values.items():
            print(f"  {key}: {value:.3g}" if isinstance(value, float) else f"  {key}: {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()

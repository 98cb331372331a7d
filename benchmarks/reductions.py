"""The cost of a fixed-order dot product against BLAS's, in one process, 1 thread.

    python benchmarks/reductions.py [--quick]

LBFGS's dot products (``Backend.dot``) are the elementwise products summed by NumPy's
pairwise summation, which has one order on every CPU; BLAS's ``ddot`` / ``sdot``
(what ``a @ b`` calls) does not (its kernel is chosen per CPU, and threads split it).
Candidates, side by side on the same arrays:

* ``BLAS a @ b``: the dot product LBFGS used before, OpenBLAS's kernel for this CPU;
* ``Backend.dot``: the fixed-order one LBFGS uses now;

first alone, on float64 and float32 vectors of 1e4 and 1e6 entries; then inside
``LBFGS.step`` (10 iterations, fixed step, a diagonal quadratic as the closure, which
costs three elementwise operations: the worst case, the dot products are most of the
work); then the whole extended-Rosenbrock run of ``benchmarks/lbfgs.py`` (strong
Wolfe, 10 pairs, to max|g| <= 1e-5). ``Backend.dot`` is replaced by ``a @ b`` for the
BLAS candidate. Candidates are timed in interleaved rounds (A B, then B A, ...) and
the median is reported; the ratio is taken within this process (the machines are
shared and drift between runs). Thread counts are pinned to 1 before NumPy is
imported.
"""

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import arrayopt  # noqa: E402
from arrayopt.backends import get_backend  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lbfgs as lbfgs_benchmark  # noqa: E402  # benchmarks/lbfgs.py: its Rosenbrock run

BACKEND = get_backend(np.zeros(1))
FIXED_ORDER = type(BACKEND).dot


def blas_dot(self, a, b):
    return a @ b


def time_rounds(candidates, rounds, batch):
    """Median seconds per call of each candidate, over interleaved rounds of ``batch`` calls."""
    times = {name: [] for name in candidates}
    order = list(candidates)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            run = candidates[name]
            start = time.perf_counter()
            for _ in range(batch):
                run()
            times[name].append((time.perf_counter() - start) / batch)
    return {name: statistics.median(values) for name, values in times.items()}


def dot_alone(n, dtype, rounds):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    batch = max(1, int(2e7 // n))
    return time_rounds({"BLAS a @ b": lambda: a @ b, "Backend.dot": lambda: BACKEND.dot(a, b)}, rounds, batch)


def patched(dot, run):
    """``run`` with ``Backend.dot`` replaced by ``dot`` while it runs."""

    def call():
        type(BACKEND).dot = dot
        try:
            return run()
        finally:
            type(BACKEND).dot = FIXED_ORDER

    return call


def lbfgs_step(n, history, rounds):
    """Seconds per LBFGS.step (10 iterations) with each dot product."""
    rng = np.random.default_rng(1)
    curvature = rng.uniform(0.5, 2.0, n)
    start = rng.standard_normal(n)

    def make():
        p = arrayopt.Parameter(start.copy())

        def closure():
            grad = curvature * p.data
            p.grad = grad
            return float(0.5 * np.sum(grad * p.data))

        opt = arrayopt.LBFGS([p], lr=0.1, max_iter=10, history_size=history, tolerance_grad=0.0, tolerance_change=0.0)
        for _ in range(history // 10 + 1):  # fill the history
            opt.step(closure)
        return lambda: opt.step(closure)

    candidates = {
        "BLAS a @ b": patched(blas_dot, patched(blas_dot, make)()),
        "Backend.dot": patched(FIXED_ORDER, make()),
    }
    return time_rounds(candidates, rounds, 1 if n >= 10**6 else 5)


def rosenbrock_run(n, rounds):
    """Seconds per whole run of benchmarks/lbfgs.py's Rosenbrock problem, and its iteration counts."""
    x0, fun, _ = lbfgs_benchmark.rosenbrock(n)
    iterations = {}

    def run(name):
        def go():
            iterations[name] = lbfgs_benchmark.run_arrayopt(x0, fun, 1e-5)[2]

        return go

    candidates = {
        "BLAS a @ b": patched(blas_dot, run("BLAS a @ b")),
        "Backend.dot": patched(FIXED_ORDER, run("Backend.dot")),
    }
    return time_rounds(candidates, rounds, 1), iterations


def fmt(seconds):
    return f"{seconds * 1e6:,.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 5 if args.quick else 11
    print(f"NumPy {np.__version__}, 1 thread; OpenBLAS kernel: {os.environ.get('OPENBLAS_CORETYPE', 'this CPU')}\n")
    print("| work | n | dtype | BLAS a @ b | Backend.dot | ratio |")
    print("|---|---|---|---|---|---|")
    for n in (10**4, 10**6):
        for dtype in ("float64", "float32"):
            t = dot_alone(n, dtype, rounds)
            ratio = t["Backend.dot"] / t["BLAS a @ b"]
            print(f"| dot | {n:.0e} | {dtype} | {fmt(t['BLAS a @ b'])} | {fmt(t['Backend.dot'])} | {ratio:.2f} |")
    for n, history in ((10**4, 10), (10**4, 100), (10**6, 10)):
        t = lbfgs_step(n, history, rounds)
        ratio = t["Backend.dot"] / t["BLAS a @ b"]
        print(
            f"| LBFGS.step, 10 iterations, history {history} | {n:.0e} | float64 | {fmt(t['BLAS a @ b'])} "
            f"| {fmt(t['Backend.dot'])} | {ratio:.2f} |"
        )
    for n in (10**4, 10**6):
        t, iterations = rosenbrock_run(n, max(3, rounds // 3))
        ratio = t["Backend.dot"] / t["BLAS a @ b"]
        print(
            f"| ext. Rosenbrock to max abs g <= 1e-5 ({iterations['BLAS a @ b']} / {iterations['Backend.dot']} "
            f"iterations) | {n:.0e} | float64 | {fmt(t['BLAS a @ b'])} | {fmt(t['Backend.dot'])} | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()

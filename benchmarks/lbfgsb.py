"""L-BFGS-B with bounds at n = 1e4 and 1e6: arrayopt against SciPy, one process, one thread.

    python benchmarks/lbfgsb.py [--sizes 1e4,1e6] [--repeat N] [--problems rosenbrock,logistic]

Problems, float64, SciPy's default options (``maxcor=10``, ``ftol=2.2e-9``,
``gtol=1e-5``) for both solvers:

* ``rosenbrock``: the extended Rosenbrock function (independent pairs
  ``100 (x[2i+1] - x[2i]^2)^2 + (1 - x[2i])^2``) from (-1.2, 1, -1.2, 1, ...), with
  ``x[2i]`` in [-1.5, 0.8] and ``x[2i+1]`` in [-1.5, 2]: the bound 0.8 is active at
  the solution for every pair.
* ``logistic``: L2-regularised logistic regression (summed loss, lambda = 1) with
  non-negative weights, on a sparse random design (``n`` features, ``5 n`` samples,
  10 non-zeros per sample, labels from a planted sparse weight vector): many weights
  end at 0.

Both solvers evaluate the same NumPy objective (SciPy's sparse matrices for the
logistic design); "objective" is the time inside it, "solver" the rest. Threads are
pinned to 1 (OMP/MKL/OPENBLAS/NUMBA/ARRAYOPT) before NumPy is imported; the solvers
alternate (A B, then B A, ...) over ``--repeat`` rounds and the medians are reported.
"""

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "ARRAYOPT_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from lbfgs import Timed, rosenbrock_numpy  # noqa: E402  (benchmarks/lbfgs.py: the same objective and timer)

import arrayopt  # noqa: E402


def rosenbrock(n):
    x0 = np.tile([-1.2, 1.0], n // 2)
    lower = np.full(n, -1.5)
    upper = np.tile([0.8, 2.0], n // 2)
    return rosenbrock_numpy, x0, lower, upper


def logistic(n, seed=0):
    from scipy import sparse

    rng = np.random.default_rng(seed)
    samples, per_row = 5 * n, 10
    cols = rng.integers(0, n, size=samples * per_row)
    rows = np.repeat(np.arange(samples), per_row)
    data = rng.standard_normal(samples * per_row)
    design = sparse.csr_matrix((data, (rows, cols)), shape=(samples, n))
    planted = np.where(rng.random(n) < 0.1, rng.exponential(1.0, n), 0.0)
    labels = np.where(design @ planted + 0.5 * rng.standard_normal(samples) > 0, 1.0, -1.0)
    transposed = design.T.tocsr()
    lam = 1.0

    def fun(w):
        margin = labels * (design @ w)
        value = float(np.sum(np.logaddexp(0.0, -margin)) + 0.5 * lam * (w @ w))
        weight = -labels / (1.0 + np.exp(margin))
        return value, transposed @ weight + lam * w

    return fun, np.full(n, 0.5), np.zeros(n), np.full(n, np.inf)


PROBLEMS = {"rosenbrock": rosenbrock, "logistic": logistic}


def run(library, fun, x0, lower, upper):
    """One solve by ``library`` ("scipy" or "arrayopt"): the result, the wall time and the timed objective."""
    from scipy import optimize

    minimize = optimize.minimize if library == "scipy" else arrayopt.minimize
    timed = Timed(fun)
    start = time.perf_counter()
    result = minimize(timed, x0, jac=True, method="L-BFGS-B", bounds=optimize.Bounds(lower, upper))
    return result, time.perf_counter() - start, timed


SOLVERS = {"SciPy L-BFGS-B": "scipy", "arrayopt L-BFGS-B": "arrayopt"}


def measure(problem, n, repeat):
    fun, x0, lower, upper = PROBLEMS[problem](n)
    # warm-up (numba compilation, page faults) on a small instance of the same problem
    small = PROBLEMS[problem](1000)
    for library in SOLVERS.values():
        run(library, *small)
    rows = {name: {"wall": [], "objective": [], "solver": []} for name in SOLVERS}
    outcome = {}
    names = list(SOLVERS)
    for round_ in range(repeat):
        for name in names if round_ % 2 == 0 else names[::-1]:
            result, wall, timed = run(SOLVERS[name], fun, x0.copy(), lower, upper)
            rows[name]["wall"].append(wall)
            rows[name]["objective"].append(timed.seconds)
            rows[name]["solver"].append(wall - timed.seconds)
            outcome[name] = result
    table = []
    for name in names:
        result = outcome[name]
        table.append(
            {
                "problem": problem,
                "n": n,
                "solver": name,
                "nit": int(result.nit),
                "nfev": int(result.nfev),
                "fun": float(result.fun),
                "status": int(result.status),
                "wall": statistics.median(rows[name]["wall"]),
                "objective": statistics.median(rows[name]["objective"]),
                "solver_time": statistics.median(rows[name]["solver"]),
            }
        )
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1e4,1e6")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    args = parser.parse_args(argv)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    print("| problem | n | solver | nit | nfev | f | wall s | objective s | solver s | wall vs SciPy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for problem in args.problems.split(","):
        for n in sizes:
            table = measure(problem, n, args.repeat)
            reference = table[0]["wall"]
            for row in table:
                print(
                    f"| {row['problem']} | {row['n']:.0e} | {row['solver']} | {row['nit']} | {row['nfev']} | "
                    f"{row['fun']:.10g} | {row['wall']:.3f} | {row['objective']:.3f} | {row['solver_time']:.3f} | "
                    f"{row['wall'] / reference:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()

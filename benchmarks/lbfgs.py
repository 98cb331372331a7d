"""L-BFGS to a gradient tolerance: arrayopt.LBFGS, scipy's L-BFGS-B and torch.optim.LBFGS.

    python benchmarks/lbfgs.py [--quick] [--repeat N]

Problems, float64: the extended Rosenbrock function (independent pairs,
sum 100 (x[2i+1] - x[2i]^2)^2 + (1 - x[2i])^2, from (-1.2, 1, -1.2, 1, ...)) at
n = 1e4 and 1e6, and an L2-regularised logistic regression (20,000 samples x 500
features). Every solver keeps 10 correction pairs (SciPy's default; torch's and
arrayopt's is 100) and stops when the largest gradient entry is at most ``gtol``:
SciPy with ``ftol=0``, torch and arrayopt with ``tolerance_change=0`` and
``line_search_fn="strong_wolfe"``, so that no other test ends a run first.

SciPy and arrayopt evaluate the same NumPy objective; torch evaluates the same formulas
written with torch tensors (gradients by hand, no autograd), so the "objective" column
(time inside the objective) shows what each library's arithmetic costs and
"solver" (the rest) what the optimizer itself costs. Threads are pinned to 1
(OMP/MKL/OPENBLAS and torch.set_num_threads), all three run in one process, and with
``--repeat N`` in N interleaved rounds (A B C, then C B A, ...) reporting medians.
"""

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import arrayopt  # noqa: E402

HISTORY = 10
MAX_ITER = 20_000


class Timed:
    """Wraps an objective; counts calls and the seconds spent inside."""

    def __init__(self, fun):
        self.fun = fun
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, x):
        start = time.perf_counter()
        out = self.fun(x)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


# -- problems: NumPy and torch versions of the same formulas ----------------------------


def rosenbrock_numpy(x):
    a, b = x[0::2], x[1::2]
    r = b - a * a
    value = float(np.sum(100.0 * r * r + (1.0 - a) ** 2))
    grad = np.empty_like(x)
    grad[0::2] = -400.0 * a * r - 2.0 * (1.0 - a)
    grad[1::2] = 200.0 * r
    return value, grad


def rosenbrock_torch(x):
    import torch

    a, b = x[0::2], x[1::2]
    r = b - a * a
    value = float(torch.sum(100.0 * r * r + (1.0 - a) ** 2))
    grad = torch.empty_like(x)
    grad[0::2] = -400.0 * a * r - 2.0 * (1.0 - a)
    grad[1::2] = 200.0 * r
    return value, grad


def rosenbrock(n):
    x0 = np.tile([-1.2, 1.0], n // 2)
    return x0, rosenbrock_numpy, rosenbrock_torch


def logistic(samples, features, seed=0):
    import torch

    rng = np.random.default_rng(seed)
    # features on scales from 0.1 to 10 and a weak penalty: an ill-conditioned fit
    X = rng.standard_normal((samples, features)) * np.logspace(-1, 1, features)
    w_true = rng.standard_normal(features) / np.logspace(-1, 1, features)
    y = np.where(X @ w_true + 2.0 * rng.standard_normal(samples) > 0, 1.0, -1.0)
    lam = 1e-4
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def numpy_fun(w):
        margin = y * (X @ w)
        value = float(np.mean(np.logaddexp(0.0, -margin)) + 0.5 * lam * (w @ w))
        coef = -y / (1.0 + np.exp(margin)) / samples
        return value, X.T @ coef + lam * w

    def torch_fun(w):
        margin = yt * (Xt @ w)
        value = float(torch.mean(torch.logaddexp(torch.zeros_like(margin), -margin)) + 0.5 * lam * (w @ w))
        coef = -yt / (1.0 + torch.exp(margin)) / samples
        return value, Xt.T @ coef + lam * w

    return np.zeros(features), numpy_fun, torch_fun


# -- solvers ------------------------------------------------------------------------------


def run_arrayopt(x0, fun, gtol):
    p = arrayopt.Parameter(x0.copy())
    objective = Timed(fun)

    def closure():
        value, grad = objective(p.data)
        p.grad = grad
        return value

    opt = arrayopt.LBFGS(
        [p],
        max_iter=MAX_ITER,
        tolerance_grad=gtol,
        tolerance_change=0.0,
        history_size=HISTORY,
        line_search_fn="strong_wolfe",
    )
    start = time.perf_counter()
    opt.step(closure)
    seconds = time.perf_counter() - start
    value, grad = fun(p.data)
    return seconds, objective, opt.state[p]["n_iter"], value, float(np.max(np.abs(grad)))


def run_scipy(x0, fun, gtol):
    from scipy.optimize import minimize

    objective = Timed(fun)
    start = time.perf_counter()
    result = minimize(
        objective,
        x0.copy(),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": gtol, "ftol": 0.0, "maxcor": HISTORY, "maxiter": MAX_ITER, "maxfun": 2 * MAX_ITER},
    )
    seconds = time.perf_counter() - start
    return seconds, objective, result.nit, float(result.fun), float(np.max(np.abs(result.jac)))


def run_torch(x0, fun, gtol):
    import torch

    p = torch.nn.Parameter(torch.from_numpy(x0.copy()))
    objective = Timed(fun)

    def closure():
        value, grad = objective(p.detach())
        p.grad = grad
        return value

    opt = torch.optim.LBFGS(
        [p],
        max_iter=MAX_ITER,
        tolerance_grad=gtol,
        tolerance_change=0.0,
        history_size=HISTORY,
        line_search_fn="strong_wolfe",
    )
    start = time.perf_counter()
    opt.step(closure)
    seconds = time.perf_counter() - start
    value, grad = fun(p.detach())
    return seconds, objective, opt.state[p]["n_iter"], value, float(grad.abs().max())


SOLVERS = {"arrayopt LBFGS": run_arrayopt, "scipy L-BFGS-B": run_scipy, "torch LBFGS": run_torch}


def main():
    import scipy
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small problems")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; medians are reported")
    args = parser.parse_args()
    torch.set_num_threads(1)

    problems = [("ext. Rosenbrock", "n=1e4", rosenbrock(10_000), 1e-5)]
    if not args.quick:
        problems.append(("ext. Rosenbrock", "n=1e6", rosenbrock(1_000_000), 1e-5))
    problems.append(("logistic regression", "20000x500", logistic(20_000, 500), 1e-5))

    print(
        f"numpy {np.__version__}, scipy {scipy.__version__}, torch {torch.__version__}, "
        f"arrayopt {arrayopt.__version__}; 1 thread; history {HISTORY}; medians of {args.repeat} round(s)\n"
    )
    print("| problem | size | gtol | solver | evals | iters | wall s | objective s | solver s | final f | max abs g |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, size, (x0, numpy_fun, torch_fun), gtol in problems:
        results = {solver: [] for solver in SOLVERS}
        order = list(SOLVERS)
        for r in range(args.repeat):
            for solver in order if r % 2 == 0 else reversed(order):
                fun = torch_fun if solver.startswith("torch") else numpy_fun
                results[solver].append(SOLVERS[solver](x0, fun, gtol))
        for solver, runs in results.items():
            seconds = statistics.median(run[0] for run in runs)
            inside = statistics.median(run[1].seconds for run in runs)
            _, objective, iters, value, gmax = runs[-1]
            print(
                f"| {name} | {size} | {gtol:g} | {solver} | {objective.calls} | {iters} | {seconds:.3f} | "
                f"{inside:.3f} | {seconds - inside:.3f} | {value:.6e} | {gmax:.1e} |"
            )


if __name__ == "__main__":
    main()

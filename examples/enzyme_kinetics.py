"""Fit Michaelis-Menten enzyme kinetics with arrayopt on NumPy: ``python examples/enzyme_kinetics.py``.

The data are synthetic reaction rates ``v = Vmax S / (Km + S)`` with 3 % noise. The
model is fitted in log-parameters (both constants are positive) by least squares,
three ways: Adam, SGD with Nesterov momentum, and a Gauss-Newton reference written
with numpy.linalg, which the first two should reach.
"""

import argparse
import time
from typing import Any

import numpy as np

import arrayopt

TRUE_VMAX, TRUE_KM = 3.4, 0.75


def make_data(n: int = 40, noise: float = 0.03, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Substrate concentrations and noisy measured rates."""
    rng = np.random.default_rng(seed)
    s = np.geomspace(0.05, 10.0, n)
    v = TRUE_VMAX * s / (TRUE_KM + s)
    return s, v * (1 + noise * rng.standard_normal(n))


def loss_and_grad(theta: np.ndarray, s: np.ndarray, v: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared residual and its gradient in (log Vmax, log Km)."""
    vmax, km = np.exp(theta)
    model = vmax * s / (km + s)
    r = model - v
    d_logvmax = model
    d_logkm = -model * km / (km + s)
    n = s.size
    return float(r @ r / n), np.array([2 * r @ d_logvmax / n, 2 * r @ d_logkm / n])


def gauss_newton(s: np.ndarray, v: np.ndarray, theta: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Reference least-squares fit (undamped Gauss-Newton in log-parameters)."""
    theta = theta.copy()
    for _ in range(iterations):
        vmax, km = np.exp(theta)
        model = vmax * s / (km + s)
        jac = np.stack([model, -model * km / (km + s)], axis=1)
        theta -= np.linalg.lstsq(jac, model - v, rcond=None)[0]
    return theta


def fit(
    optimizer: str, s: np.ndarray, v: np.ndarray, steps: int = 3000, report: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """Fit with an arrayopt optimizer; ``report(step, loss)`` is called now and then."""
    theta = arrayopt.Parameter(np.log(np.array([1.0, 1.0])), name="log_params")
    opt = getattr(arrayopt, optimizer)([theta], **kwargs)
    start = time.perf_counter()
    loss = float("nan")
    for step in range(1, steps + 1):
        loss, theta.grad = loss_and_grad(theta.data, s, v)
        opt.step()
        if report is not None and (step in (1, 10, 100) or step % 1000 == 0):
            report(step, loss)
    elapsed = time.perf_counter() - start
    return {"theta": theta.data.copy(), "loss": loss_and_grad(theta.data, s, v)[0], "seconds": elapsed, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python examples/enzyme_kinetics.py", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps per method (default 3000)")
    args = parser.parse_args(argv)

    s, v = make_data()
    print(f"arrayopt {arrayopt.__version__}: fitting v = Vmax*S/(Km+S) to {s.size} noisy rates (NumPy, float64)")
    print(f"true constants: Vmax = {TRUE_VMAX}, Km = {TRUE_KM}; start from Vmax = Km = 1\n")

    reference = gauss_newton(s, v, np.zeros(2))
    ref_loss = loss_and_grad(reference, s, v)[0]
    results = {}
    for label, name, kwargs in (
        ("Adam(lr=0.02)", "Adam", {"lr": 0.02}),
        ("SGD(lr=0.05, momentum=0.9, nesterov)", "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ):
        print(f"{label}")

        def report(step: int, loss: float) -> None:
            print(f"  step {step:>6}  loss {loss:.6e}")

        results[label] = fit(name, s, v, steps=args.steps, report=report, **kwargs)

    print("\nsummary")
    header = f"  {'method':<38} {'Vmax':>8} {'Km':>8} {'loss':>12} {'|dtheta| vs ref':>16} {'time':>8}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for label, r in results.items():
        vmax, km = np.exp(r["theta"])
        gap = float(np.max(np.abs(r["theta"] - reference)))
        print(f"  {label:<38} {vmax:8.4f} {km:8.4f} {r['loss']:12.6e} {gap:16.2e} {r['seconds']:7.2f}s")
    vmax, km = np.exp(reference)
    print(f"  {'Gauss-Newton reference (numpy.linalg)':<38} {vmax:8.4f} {km:8.4f} {ref_loss:12.6e} {0.0:16.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The examples (``examples/``) run, and the enzyme-kinetics fit reaches SciPy's least-squares answer."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_example("enzyme_kinetics")


def test_demo_fits_reach_the_least_squares_solution():
    optimize = pytest.importorskip("scipy.optimize")
    s, v = demo.make_data()
    # Independent reference: scipy's trust-region least squares on the same residuals.
    ref = optimize.least_squares(
        lambda th: np.exp(th[0]) * s / (np.exp(th[1]) + s) - v, np.zeros(2), xtol=1e-15, ftol=1e-15, gtol=1e-15
    ).x
    np.testing.assert_allclose(demo.gauss_newton(s, v, np.zeros(2)), ref, rtol=0, atol=1e-8)
    for name, kwargs in (("Adam", {"lr": 0.02}), ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True})):
        result = demo.fit(name, s, v, steps=3000, **kwargs)
        np.testing.assert_allclose(result["theta"], ref, rtol=0, atol=1e-6)


def test_gradient_matches_finite_differences():
    s, v = demo.make_data()
    theta = np.array([0.3, -0.2])
    _, grad = demo.loss_and_grad(theta, s, v)
    h = 1e-6
    numeric = [
        (demo.loss_and_grad(theta + h * e, s, v)[0] - demo.loss_and_grad(theta - h * e, s, v)[0]) / (2 * h)
        for e in np.eye(2)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-6)


def test_command_line_prints_progress_and_a_summary():
    result = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "enzyme_kinetics.py"), "--steps", "200"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "step    100" in result.stdout
    summary = result.stdout.split("summary", 1)[1]
    assert "Adam" in summary and "Gauss-Newton reference" in summary

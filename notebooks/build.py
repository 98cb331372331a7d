"""Write (and with ``--execute`` run) the numbered notebooks in this folder.

    PYTHONPATH=<checkout> python notebooks/build.py --execute

Each notebook is a list of ``(kind, source)`` cells below; the ``.ipynb`` files are
generated from them, so edit here and regenerate rather than editing the JSON. With
``--execute`` every notebook is run top to bottom by nbclient (kernel ``python3``,
matplotlib's inline backend) and saved with its outputs; the committed notebooks are
those outputs. ``scheduler_gallery.ipynb`` is written by hand and not touched here.
Names on the command line (``01_quickstart`` ...) limit the run to those notebooks.
"""

import argparse
import os
import sys
import tempfile
import time

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

M, C = "markdown", "code"

# --------------------------------------------------------------------------------------
QUICKSTART = [
    (
        M,
        """# Quickstart: Parameters, Adam and a learning-rate schedule

arrayopt runs torch.optim's optimizers on plain arrays. There is no autograd: you compute the gradient
(by hand, as here, or with any tool you like), put it in `Parameter.grad`, and call `step()`. Everything
else (param groups, `zero_grad`, schedulers, `state_dict`) is torch.optim's API.

Here: a small neural network, one hidden `tanh` layer of 32 units, fitted to noisy samples of a curve
with Adam and a one-cycle learning-rate schedule.""",
    ),
    (
        C,
        """import matplotlib.pyplot as plt
import numpy as np

import arrayopt
from arrayopt.lr_scheduler import OneCycleLR

plt.rcParams.update({"figure.dpi": 72, "axes.grid": True, "grid.alpha": 0.3})
rng = np.random.default_rng(0)
x = np.linspace(-2.0, 2.0, 256)[:, None]
y = np.sin(2.5 * x) + 0.3 * x + 0.05 * rng.standard_normal(x.shape)""",
    ),
    (
        M,
        """## Parameters

A `Parameter` wraps your array; optimizers update `.data` **in place**, so the array you hold keeps
the current values. The name is optional and shows up in error messages.""",
    ),
    (
        C,
        """hidden = 32
W1 = arrayopt.Parameter(rng.standard_normal((1, hidden)), name="W1")
b1 = arrayopt.Parameter(np.zeros(hidden), name="b1")
W2 = arrayopt.Parameter(rng.standard_normal((hidden, 1)) / np.sqrt(hidden), name="W2")
b2 = arrayopt.Parameter(np.zeros(1), name="b2")
params = [W1, b1, W2, b2]


def loss_and_grads(x, y):
    \"\"\"Mean squared error of the network and its gradient in each parameter (backpropagation by hand).\"\"\"
    h = np.tanh(x @ W1.data + b1.data)
    residual = h @ W2.data + b2.data - y
    d_out = 2 * residual / len(y)
    d_h = d_out @ W2.data.T * (1 - h**2)
    return np.mean(residual**2), (x.T @ d_h, d_h.sum(0), h.T @ d_out, d_out.sum(0))


print(W1)
try:
    W1.grad = np.zeros(3)  # a gradient must match its parameter
except ValueError as error:
    print("ValueError:", error)""",
    ),
    (
        M,
        """A hand-written gradient deserves a check: central differences on a few entries of each parameter.""",
    ),
    (
        C,
        """_, grads = loss_and_grads(x, y)
worst = 0.0  # error relative to the parameter's largest gradient entry
for p, g in zip(params, grads, strict=True):
    for index in list(np.ndindex(p.data.shape))[:5]:
        saved = p.data[index]
        p.data[index] = saved + 1e-6
        up, _ = loss_and_grads(x, y)
        p.data[index] = saved - 1e-6
        down, _ = loss_and_grads(x, y)
        p.data[index] = saved
        worst = max(worst, abs((up - down) / 2e-6 - g[index]) / np.abs(g).max())
print(f"largest relative error of the hand-written gradient: {worst:.1e}")
assert worst < 1e-6""",
    ),
    (
        M,
        """## Adam with a one-cycle schedule

The loop is torch's: `zero_grad()`, compute the gradient, `step()`, then the scheduler's `step()`.
`OneCycleLR` warms the learning rate up to `max_lr` and anneals it far below the start; with Adam it
cycles `betas[0]` the opposite way. The spikes in the loss curve below come at the peak learning rate;
the annealing phase settles them.""",
    ),
    (
        C,
        """steps = 2000
opt = arrayopt.Adam(params, lr=0.01)
sched = OneCycleLR(opt, max_lr=0.05, total_steps=steps)
losses, rates = [], []
for step in range(steps):
    opt.zero_grad()
    loss, grads = loss_and_grads(x, y)
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    opt.step()
    rates.append(opt.param_groups[0]["lr"])
    sched.step()
    losses.append(loss)
print(f"loss: {losses[0]:.4f} at the start, {losses[-1]:.5f} after {steps} steps (noise variance 0.0025)")
assert losses[-1] < 0.004""",
    ),
    (
        C,
        """fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
left.semilogy(losses, color="C0")
left.set_xlabel("step")
left.set_ylabel("training loss (MSE)", color="C0")
twin = left.twinx()
twin.plot(rates, color="C1", lw=1)
twin.set_ylabel("learning rate", color="C1")
twin.grid(False)
left.set_title("loss curve and the one-cycle learning rate")
h = np.tanh(x @ W1.data + b1.data)
right.plot(x, y, ".", ms=3, color="0.6", label="data")
right.plot(x, np.sin(2.5 * x) + 0.3 * x, "--", color="k", lw=1, label="true curve")
right.plot(x, h @ W2.data + b2.data, color="C3", label="network")
right.set_title("the fitted network")
right.legend()
plt.show()""",
    ),
    (
        M,
        """## State, param groups and checkpoints

`state_dict()` has torch's layout: `state` keyed by parameter index (Adam's `step`, `exp_avg`,
`exp_avg_sq`) and `param_groups` with every hyper-parameter. `arrayopt.save` writes optimizer, scheduler
and parameters to one file (a zip of JSON and `.npy`, nothing pickled); `load_into` restores them all or
nothing. Resuming from a checkpoint continues exactly as the uninterrupted run would have.""",
    ),
    (
        C,
        """state = opt.state_dict()
print("state of parameter 0:", {key: getattr(value, "shape", value) for key, value in state["state"][0].items()})
print("param group:", {key: value for key, value in state["param_groups"][0].items() if key != "params"})""",
    ),
    (
        C,
        """import os
import tempfile


def train(steps):
    for _ in range(steps):
        opt.zero_grad()
        _, grads = loss_and_grads(x, y)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()


opt = arrayopt.Adam(params, lr=1e-3)
path = os.path.join(tempfile.mkdtemp(), "fit.arrayopt")
arrayopt.save(path, optimizer=opt, params=params, note="after the one-cycle run")
train(50)
straight_on = [p.data.copy() for p in params]

opt = arrayopt.Adam(params, lr=0.5)  # a fresh optimizer: load_into replaces its state and hyper-parameters
print(arrayopt.load_into(path, optimizer=opt, params=params)["note"])
train(50)
assert all(np.array_equal(p.data, q) for p, q in zip(params, straight_on, strict=True))
print("resumed run equals the uninterrupted one, bit for bit")""",
    ),
]

# --------------------------------------------------------------------------------------
FITTING = [
    (
        M,
        """# Scientific fitting: a damped oscillator, with L-BFGS and next to SciPy

A measured signal $y(t) = A\\,e^{-t/\\tau}\\cos(\\omega t + \\varphi)$ plus Gaussian noise; we want
$\\theta = (A, \\tau, \\omega, \\varphi)$ by least squares,

$$\\min_\\theta\\ f(\\theta) = \\tfrac12 \\sum_i r_i(\\theta)^2, \\qquad r_i = y(t_i;\\theta) - y_i .$$

We solve it with `arrayopt.LBFGS(line_search_fn="strong_wolfe")` (torch.optim.LBFGS, on NumPy), with the
`scipy.optimize`-style front end `arrayopt.minimize`, and with SciPy's `minimize(method="L-BFGS-B")` and
`least_squares` (trust-region Gauss-Newton, which also uses the Jacobian). All four must reach the same
answer; we compare how many function evaluations each needed.""",
    ),
    (
        C,
        """import matplotlib.pyplot as plt
import numpy as np
import scipy
import scipy.optimize

import arrayopt

plt.rcParams.update({"figure.dpi": 72, "axes.grid": True, "grid.alpha": 0.3})
NAMES = ["A", "tau", "omega", "phi"]
TRUE = np.array([2.0, 3.0, 2.5, 0.4])
SIGMA = 0.05
rng = np.random.default_rng(1)
t = np.linspace(0.0, 10.0, 200)


def model(theta, t):
    A, tau, omega, phi = theta
    return A * np.exp(-t / tau) * np.cos(omega * t + phi)


y = model(TRUE, t) + SIGMA * rng.standard_normal(t.size)


def residuals(theta):
    return model(theta, t) - y


def jacobian(theta):
    \"\"\"d r_i / d theta_j, shape (n, 4).\"\"\"
    A, tau, omega, phi = theta
    decay, cos, sin = np.exp(-t / tau), np.cos(omega * t + phi), np.sin(omega * t + phi)
    return np.stack([decay * cos, A * decay * cos * t / tau**2, -A * decay * sin * t, -A * decay * sin], axis=1)


def cost_and_grad(theta):
    r = residuals(theta)
    return 0.5 * (r @ r), jacobian(theta).T @ r


print("scipy", scipy.__version__, "| arrayopt", arrayopt.__version__)
x_check = np.array([1.5, 2.0, 2.4, 0.1])
error = scipy.optimize.check_grad(lambda th: cost_and_grad(th)[0], lambda th: cost_and_grad(th)[1], x_check)
print(f"gradient check (norm of analytic - finite-difference gradient): {error:.1e}")""",
    ),
    (
        M,
        """## A starting point

Oscillator fits have many local minima in $\\omega$, so the start matters: take $\\omega_0$ from the
peak of the signal's spectrum, $A_0$ from the largest sample, and plain guesses for $\\tau$ and $\\varphi$.""",
    ),
    (
        C,
        """spectrum = np.abs(np.fft.rfft(y))
frequencies = 2 * np.pi * np.fft.rfftfreq(t.size, d=t[1] - t[0])
x0 = np.array([np.abs(y).max(), 1.0, frequencies[1:][spectrum[1:].argmax()], 0.0])
print("x0 =", {name: round(float(v), 3) for name, v in zip(NAMES, x0, strict=True)})""",
    ),
    (
        M,
        """## 1. `arrayopt.LBFGS` with a strong-Wolfe line search

Exactly torch.optim.LBFGS: a closure sets the gradient and returns the loss; one `step()` runs up to
`max_iter` iterations. The optimizer's state counts the closure calls (`func_evals`).""",
    ),
    (
        C,
        """theta = arrayopt.Parameter(x0.copy(), name="theta")
opt = arrayopt.LBFGS(
    [theta], max_iter=500, history_size=10, tolerance_grad=1e-9, tolerance_change=1e-14,
    line_search_fn="strong_wolfe",
)
trace = {"arrayopt.LBFGS": []}


def closure():
    loss, theta.grad = cost_and_grad(theta.data)
    trace["arrayopt.LBFGS"].append(loss)
    return loss


opt.step(closure)
lbfgs_state = opt.state[theta]
lbfgs_x = theta.data.copy()
print(f"iterations {lbfgs_state['n_iter']}, closure calls {lbfgs_state['func_evals']}")
print("theta =", {name: round(float(v), 5) for name, v in zip(NAMES, lbfgs_x, strict=True)})""",
    ),
    (
        M,
        """## 2. `arrayopt.minimize`, and SciPy

`arrayopt.minimize(fun, x0, jac=True)` wraps the same LBFGS in SciPy's calling convention and returns an
`OptimizeResult`. SciPy's L-BFGS-B gets the same function, memory size (`maxcor=10`) and gradient
tolerance; `least_squares` gets the residuals and their Jacobian.""",
    ),
    (
        C,
        """def recording(name, function):
    trace[name] = []

    def wrapped(theta):
        value = function(theta)
        trace[name].append(value[0] if isinstance(value, tuple) else 0.5 * (value @ value))
        return value

    return wrapped


results = {
    "arrayopt.minimize": arrayopt.minimize(
        recording("arrayopt.minimize", cost_and_grad), x0, jac=True, options={"gtol": 1e-9, "tolerance_change": 1e-14}
    ),
    "scipy L-BFGS-B": scipy.optimize.minimize(
        recording("scipy L-BFGS-B", cost_and_grad), x0, jac=True, method="L-BFGS-B",
        options={"maxcor": 10, "gtol": 1e-9, "ftol": 1e-15, "maxiter": 500},
    ),
    "scipy least_squares": scipy.optimize.least_squares(
        recording("scipy least_squares", residuals), x0, jac=jacobian, xtol=1e-12, ftol=1e-12, gtol=1e-12
    ),
}
answers = {"arrayopt.LBFGS": lbfgs_x, **{name: result.x for name, result in results.items()}}
evaluations = {
    "arrayopt.LBFGS": f"{lbfgs_state['func_evals']} (value + gradient)",
    "arrayopt.minimize": f"{results['arrayopt.minimize'].nfev} (value + gradient)",
    "scipy L-BFGS-B": f"{results['scipy L-BFGS-B'].nfev} (value + gradient)",
    "scipy least_squares": "{0.nfev} residuals + {0.njev} Jacobians".format(results["scipy least_squares"]),
}
print(f"{'method':22}" + "".join(f"{n:>12}" for n in NAMES) + f"{'cost':>14}   evaluations")
for name, x in answers.items():
    print(f"{name:22}" + "".join(f"{v:12.6f}" for v in x) + f"{cost_and_grad(x)[0]:14.9f}   {evaluations[name]}")
print(f"{'true values':22}" + "".join(f"{v:12.6f}" for v in TRUE))""",
    ),
    (
        M,
        """Same answer: every method's parameters agree with `least_squares`'s to better than $10^{-6}$
relative, and the costs to $10^{-10}$.""",
    ),
    (
        C,
        """reference = results["scipy least_squares"].x
best = cost_and_grad(reference)[0]
for name, x in answers.items():
    difference = np.max(np.abs(x - reference) / np.abs(reference))
    print(f"{name:22} largest relative difference from least_squares: {difference:.1e}")
    assert difference < 1e-6, name
    assert abs(cost_and_grad(x)[0] - best) <= 1e-10 * best, name""",
    ),
    (
        M,
        """## Uncertainties

The answer comes with standard errors from the Gauss-Newton covariance
$s^2 (J^\\top J)^{-1}$, $s^2 = 2f/(n-4)$. The true parameters lie within a few standard errors of the
estimate, and $s$ recovers the noise level $\\sigma = 0.05$.""",
    ),
    (
        C,
        """J = jacobian(lbfgs_x)
s2 = 2 * cost_and_grad(lbfgs_x)[0] / (t.size - len(NAMES))
errors = np.sqrt(np.diag(s2 * np.linalg.inv(J.T @ J)))
for name, estimate, error, true in zip(NAMES, lbfgs_x, errors, TRUE, strict=True):
    away = abs(estimate - true) / error
    print(f"{name:6} = {estimate:.4f} ± {error:.4f}   (true {true}, {away:.1f} standard errors away)")
print(f"noise estimate s = {np.sqrt(s2):.4f} (true sigma {SIGMA})")
assert np.all(np.abs(lbfgs_x - TRUE) < 4 * errors)""",
    ),
    (
        C,
        """fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
fine = np.linspace(0, 10, 600)
axes[0].plot(t, y, ".", ms=3, color="0.6", label="data")
axes[0].plot(fine, model(TRUE, fine), "--", color="k", lw=1, label="true")
axes[0].plot(fine, model(lbfgs_x, fine), color="C3", label="fit (arrayopt.LBFGS)")
axes[0].set_xlabel("t")
axes[0].set_title("data and fit")
axes[0].legend()
for name, values in trace.items():
    gap = np.maximum(np.array(values) - best, 1e-16)
    axes[1].semilogy(np.arange(1, len(gap) + 1), gap, ".-", ms=3, label=name)
axes[1].set_xlabel("function evaluation")
axes[1].set_ylabel("cost - final cost")
axes[1].set_title("convergence per evaluation")
axes[1].legend()
plt.show()""",
    ),
    (
        M,
        """The two arrayopt curves coincide: `minimize` runs the same LBFGS. `least_squares` exploits the
sum-of-squares structure (each of its evaluations also costs a Jacobian,
and it solves a small linear system per iteration), so it needs the fewest evaluations. The two L-BFGS
variants only see $f$ and $\\nabla f$, like any general-purpose optimizer; arrayopt's is torch's
algorithm, so its counts are those torch.optim.LBFGS would report on the same problem.""",
    ),
]

# --------------------------------------------------------------------------------------
GPU = [
    (
        M,
        """# The GPU pipeline: the same code on CuPy

arrayopt never asks which library your arrays come from: an optimizer looks at its parameters' arrays
and uses NumPy's or CuPy's (or another array-API library's) functions for them. Code written against an
array namespace `xp` therefore runs on the GPU when `xp` is CuPy, with the parameters, gradients,
optimizer state and the update kernels all on the device.

This notebook runs on CuPy where CuPy and a CUDA device are present; elsewhere it runs on NumPy and
shows the line that switches.""",
    ),
    (
        C,
        """import time

import numpy

import arrayopt
from arrayopt.backends import get_backend
from arrayopt.lr_scheduler import CosineAnnealingLR

try:
    import cupy

    gpu = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # no CuPy, or CuPy without a usable CUDA device
    cupy, gpu = None, False

xp = cupy if gpu else numpy  # <- the one line that switches between the GPU and the CPU

print("running on", "CuPy (GPU)" if gpu else "NumPy (CPU): CuPy or a CUDA device is not available here")""",
    ),
    (
        M,
        """## A logistic regression written against `xp`

20 000 samples with 100 features, made on the host with NumPy's generator (so both libraries see the same
data) and moved to `xp` once. The loop never leaves the device: the loss of every step is kept as a 0-d
device array and read to the host once, after the loop (each `float(...)` is a synchronisation on the GPU).""",
    ),
    (
        C,
        """host = numpy.random.default_rng(0)
features = host.standard_normal((20_000, 100))
true_w = host.standard_normal(100) / 4
labels = (features @ true_w + 0.5 * host.standard_normal(20_000) > 0).astype(numpy.float64)


def fit(xp, steps=300):
    X, t = xp.asarray(features), xp.asarray(labels)
    w = arrayopt.Parameter(xp.zeros(100), name="w")
    b = arrayopt.Parameter(xp.zeros(1), name="b")
    opt = arrayopt.Adam([w, b], lr=0.05)
    sched = CosineAnnealingLR(opt, T_max=steps, eta_min=0.001)
    losses = []  # 0-d arrays of xp: on the GPU they stay on the device
    for step in range(steps):
        logits = X @ w.data + b.data
        p = 1 / (1 + xp.exp(-logits))
        w.grad = X.T @ (p - t) / len(t)
        b.grad = xp.sum(p - t, keepdims=True) / len(t)
        opt.step()
        sched.step()
        losses.append(xp.mean(xp.logaddexp(0, logits) - t * logits))
    history = [float(loss) for loss in losses]  # the one read back to the host
    accuracy = float(xp.mean((X @ w.data + b.data > 0) == (t > 0.5)))
    return w, b, opt, history, accuracy


fit(xp, steps=2)  # the first call compiles the update kernels (on the GPU) and warms the caches
start = time.perf_counter()
w, b, opt, history, accuracy = fit(xp)
seconds = time.perf_counter() - start
for step in [*range(0, 300, 50), 299]:
    print(f"step {step:3d}: loss {history[step]:.5f}")
print(f"training accuracy {accuracy:.3f}; 300 steps in {seconds:.2f} s")
assert history[-1] < history[0] and accuracy > 0.85""",
    ),
    (
        M,
        """## Where everything lives

The parameters, their gradients and Adam's state are arrays of `xp`; the backend arrayopt picked for
them says which library (and device) ran the updates.""",
    ),
    (
        C,
        """state = opt.state[w]
print("backend:", get_backend(w.data))
print("w.data:", type(w.data).__module__ + "." + type(w.data).__name__, w.data.dtype, w.data.shape)
print("Adam state:", {key: type(value).__module__.split(".")[0] for key, value in state.items()})
print("arrayopt.save copies these arrays to the host file; arrayopt.load(path, xp=cupy) puts them back on the GPU")""",
    ),
    (
        M,
        """## The same run on NumPy

With the GPU in use, the same function on NumPy gives the same fit (to rounding: the GPU sums in a
different order). Without a GPU, this is the run above.""",
    ),
    (
        C,
        """if gpu:
    start = time.perf_counter()
    w_cpu, _, _, history_cpu, _ = fit(numpy)
    seconds_cpu = time.perf_counter() - start
    print(f"final loss: GPU {history[-1]:.12f}, CPU {history_cpu[-1]:.12f}")
    print(f"largest difference in w: {numpy.max(numpy.abs(cupy.asnumpy(w.data) - w_cpu.data)):.1e}")
    print(f"300 steps: GPU {seconds:.2f} s, CPU {seconds_cpu:.2f} s")
    assert abs(history[-1] - history_cpu[-1]) <= 1e-6 * history_cpu[-1]
else:
    history_cpu, seconds_cpu = history, seconds
    print("no GPU here: the run above is the NumPy run. On a machine with CuPy and a CUDA device,")
    print("`xp = cupy if gpu else numpy` picks CuPy and nothing else changes.")""",
    ),
    (
        M,
        """## The two runs, drawn

The loss curves of the two runs lie on top of each other; the right panel shows how far apart they are
(relative to the loss) and the wall time of the 300 steps on each.""",
    ),
    (
        C,
        """import matplotlib.pyplot as plt

steps = numpy.arange(len(history_cpu))
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
if gpu:
    left.plot(steps, history, lw=3, alpha=0.5, label="CuPy (GPU)")
left.plot(steps, history_cpu, "k--", lw=1, label="NumPy (CPU)")
left.set(xlabel="step", ylabel="logistic loss", yscale="log", title="Adam + CosineAnnealingLR")
left.legend()
if gpu:
    gap = numpy.abs(numpy.array(history) - numpy.array(history_cpu)) / numpy.array(history_cpu)
    right.semilogy(steps, numpy.maximum(gap, 1e-17), label="|GPU - CPU| / CPU")
    right.set(xlabel="step", title=f"300 steps: GPU {seconds:.2f} s, CPU {seconds_cpu:.2f} s")
    right.legend()
else:
    right.bar(["NumPy (CPU)"], [seconds_cpu])
    right.set(ylabel="seconds for 300 steps", title="no GPU here: the CPU run only")
plt.tight_layout()
plt.show()""",
    ),
    (
        M,
        """## Notes for GPU work

* Install CuPy with arrayopt: `pip install "arrayopt[cuda13]"` (or `[cuda12]`, or `[cuda]` to build).
* Each optimizer's update rule runs as one generated elementwise kernel per parameter; with many small
  parameters, an `arrayopt.ParameterList` puts them in one flat buffer so a step is one kernel per buffer.
* Only a few scalars cross to the host: LBFGS's branch decisions, Adafactor's norms, and whatever you
  read with `float(...)`.""",
    ),
]

# --------------------------------------------------------------------------------------
MIGRATING = [
    (
        M,
        """# Migrating from torch.optim

arrayopt keeps torch.optim's names, arguments, defaults, `param_groups`, `state_dict` layout and error
messages, and computes the same numbers. What changes:

| torch | arrayopt |
|---|---|
| `torch.nn.Parameter(tensor)` | `arrayopt.Parameter(array)` (NumPy, CuPy or array-API array) |
| `loss.backward()` | `p.grad = gradient_array` (no autograd: bring your own gradient) |
| `torch.optim.AdamW(params, lr=...)` | `arrayopt.AdamW(params, lr=...)` |
| `torch.optim.lr_scheduler.OneCycleLR` | `arrayopt.lr_scheduler.OneCycleLR` |
| `torch.optim.swa_utils` | `arrayopt.swa_utils` |
| `optimizer.step(closure)` | the same; the closure sets `p.grad` and returns the loss |
| `torch.save(opt.state_dict(), f)` | `arrayopt.save(f, optimizer=opt)` (no pickle) |
| `state["step"]` is a tensor | `state["step"]` is a Python float |

Below, the same problems run through both, side by side. To compare the optimizers alone, both sides get
the same gradient arrays each step (torch's autograd would round a little differently). The torch
side runs only where torch is installed; then the two must agree to $10^{-12}$ in float64, relative to
each array's largest entry (the test suite's measure).""",
    ),
    (
        C,
        """import numpy as np

import arrayopt

try:
    import torch

    print("torch", torch.__version__, "is installed: both sides run and are compared")
except ImportError:
    torch = None
    print("torch is not installed: only the arrayopt side runs (install torch==2.13.0 to compare)")


def assert_same(ours, theirs, what):
    \"\"\"Largest difference between float64 arrays, relative to each array's largest entry; at most 1e-12.\"\"\"
    worst = max(np.max(np.abs(a - b)) / np.max(np.abs(b)) for a, b in zip(ours, theirs, strict=True))
    print(f"{what}: largest relative difference {worst:.1e}")
    assert worst <= 1e-12, what


rng = np.random.default_rng(0)
x = rng.standard_normal((64, 3))
y = np.sin(x @ np.array([1.0, -2.0, 0.5]))[:, None]
start = [rng.standard_normal((3, 16)) / 2, np.zeros(16), rng.standard_normal((16, 1)) / 4, np.zeros(1)]


def gradients(W1, b1, W2, b2):
    \"\"\"Mean squared error of a tanh network and its gradients (the stand-in for loss.backward()).\"\"\"
    h = np.tanh(x @ W1 + b1)
    residual = h @ W2 + b2 - y
    d_out = 2 * residual / len(y)
    d_h = d_out @ W2.T * (1 - h**2)
    return np.mean(residual**2), [x.T @ d_h, d_h.sum(0), h.T @ d_out, d_out.sum(0)]""",
    ),
    (
        M,
        """## AdamW with AMSGrad and OneCycleLR

The loops differ only in where the arrays live.""",
    ),
    (
        C,
        """def arrayopt_adamw(steps=200):
    params = [arrayopt.Parameter(a.copy()) for a in start]
    opt = arrayopt.AdamW(params, lr=1e-2, weight_decay=1e-2, amsgrad=True)
    sched = arrayopt.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps)
    for _ in range(steps):
        opt.zero_grad()
        _, grads = gradients(*[p.data for p in params])
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        sched.step()
    return [p.data for p in params], opt


def torch_adamw(steps=200):
    params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2, amsgrad=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps)
    for _ in range(steps):
        opt.zero_grad()
        _, grads = gradients(*[p.detach().numpy() for p in params])
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g)
        opt.step()
        sched.step()
    return [p.detach().numpy() for p in params], opt


ours, our_opt = arrayopt_adamw()
print(f"arrayopt: loss after 200 steps {gradients(*ours)[0]:.6f}")
if torch is not None:
    theirs, their_opt = torch_adamw()
    print(f"torch:    loss after 200 steps {gradients(*theirs)[0]:.6f}")
    assert_same(ours, theirs, "AdamW parameters")""",
    ),
    (
        M,
        """## The state dict

Same keys, same nesting, same values; torch's step counter is a 0-d tensor, arrayopt's a float.""",
    ),
    (
        C,
        """our_state = our_opt.state_dict()
print("arrayopt state[0]:", {k: getattr(v, "shape", v) for k, v in our_state["state"][0].items()})
print("arrayopt group keys:", sorted(k for k in our_state["param_groups"][0] if k != "params"))
if torch is not None:
    their_state = their_opt.state_dict()
    print("torch    state[0]:", {k: tuple(v.shape) if v.ndim else float(v) for k, v in their_state["state"][0].items()})
    assert our_state["param_groups"] == their_state["param_groups"]
    for index, entry in our_state["state"].items():
        assert entry.keys() == their_state["state"][index].keys()
        assert entry["step"] == float(their_state["state"][index]["step"])
        keys = [k for k in entry if k != "step"]
        assert_same([entry[k] for k in keys], [their_state["state"][index][k].numpy() for k in keys], f"state {index}")
    print("param_groups equal, state keys equal")""",
    ),
    (
        M,
        """## SGD with Nesterov momentum, two param groups and MultiStepLR""",
    ),
    (
        C,
        """def sgd_run(library, steps=150):
    if library == "arrayopt":
        make, optim, to_numpy = arrayopt.Parameter, arrayopt, lambda p: p.data
    else:
        make, optim = (lambda a: torch.nn.Parameter(torch.from_numpy(a))), torch.optim
        to_numpy = lambda p: p.detach().numpy()  # noqa: E731
    params = [make(a.copy()) for a in start]
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 0.02, "weight_decay": 1e-3}]
    opt = optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True)
    sched = optim.lr_scheduler.MultiStepLR(opt, milestones=[50, 100], gamma=0.3)
    for _ in range(steps):
        _, grads = gradients(*[to_numpy(p) for p in params])
        for p, g in zip(params, grads, strict=True):
            p.grad = g if library == "arrayopt" else torch.from_numpy(g)
        opt.step()
        sched.step()
    return [to_numpy(p) for p in params]


ours = sgd_run("arrayopt")
print(f"arrayopt: loss {gradients(*ours)[0]:.6f}")
if torch is not None:
    theirs = sgd_run("torch")
    print(f"torch:    loss {gradients(*theirs)[0]:.6f}")
    assert_same(ours, theirs, "SGD parameters")""",
    ),
    (
        M,
        """## LBFGS with a closure

torch's closure calls `loss.backward()`; arrayopt's sets `grad`. The line search, the iteration and the
counters are the same.""",
    ),
    (
        C,
        """def rosenbrock(v):
    value = np.sum(100.0 * (v[1:] - v[:-1] ** 2) ** 2 + (1 - v[:-1]) ** 2)
    grad = np.zeros_like(v)
    grad[:-1] = -400 * v[:-1] * (v[1:] - v[:-1] ** 2) - 2 * (1 - v[:-1])
    grad[1:] += 200 * (v[1:] - v[:-1] ** 2)
    return value, grad


v0 = np.array([-1.2, 1.0, -0.5, 0.8, 1.5])

w = arrayopt.Parameter(v0.copy())
opt = arrayopt.LBFGS([w], max_iter=40, line_search_fn="strong_wolfe")


def closure():
    loss, w.grad = rosenbrock(w.data)
    return loss


opt.step(closure)
ours = opt.state[w]
print(f"arrayopt: f = {rosenbrock(w.data)[0]:.3e}, func_evals {ours['func_evals']}, n_iter {ours['n_iter']}")

if torch is not None:
    tw = torch.nn.Parameter(torch.from_numpy(v0.copy()))
    topt = torch.optim.LBFGS([tw], max_iter=40, line_search_fn="strong_wolfe")

    def torch_closure():
        loss, grad = rosenbrock(tw.detach().numpy())
        tw.grad = torch.from_numpy(grad)
        return torch.tensor(loss)

    topt.step(torch_closure)
    state = topt.state[topt.param_groups[0]["params"][0]]
    f = rosenbrock(tw.detach().numpy())[0]
    print(f"torch:    f = {f:.3e}, func_evals {state['func_evals']}, n_iter {state['n_iter']}")
    assert (state["func_evals"], state["n_iter"]) == (ours["func_evals"], ours["n_iter"])
    assert_same([w.data], [tw.detach().numpy()], "LBFGS parameters")""",
    ),
    (
        M,
        """## Errors read the same

Bad arguments raise torch's exception type with torch's message.""",
    ),
    (
        C,
        """bad = [("Adam", {"lr": -1.0}), ("SGD", {"lr": 0.1, "nesterov": True}), ("AdamW", {"betas": (0.9, 1.5)})]
for name, kwargs in bad:
    try:
        getattr(arrayopt, name)([arrayopt.Parameter(np.zeros(2))], **kwargs)
    except Exception as error:
        ours = f"{type(error).__name__}: {error}"
    print(f"arrayopt {name}{kwargs}: {ours}")
    if torch is not None:
        try:
            getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))], **kwargs)
        except Exception as error:
            theirs = f"{type(error).__name__}: {error}"
        print(f"torch    {name}{kwargs}: {theirs}")
        assert ours == theirs""",
    ),
    (
        M,
        """## Checkpoints

`arrayopt.save(path, optimizer=opt, scheduler=sched, params=params)` writes one file (JSON and `.npy`
in a zip, nothing pickled) and `arrayopt.load_into(path, optimizer=opt, ...)` restores everything or
nothing. A state dict loaded from torch works too once its tensors are NumPy arrays:
`{"state": {i: {k: v.numpy() ...}}, "param_groups": ...}` goes straight into `load_state_dict`.""",
    ),
    (
        C,
        """if torch is not None:
    state = their_opt.state_dict()
    converted = {
        "state": {i: {k: v.numpy() for k, v in entry.items()} for i, entry in state["state"].items()},
        "param_groups": state["param_groups"],
    }
    params = [arrayopt.Parameter(p.copy()) for p in start]
    fresh = arrayopt.AdamW(params)
    fresh.load_state_dict(converted)
    assert fresh.param_groups[0]["amsgrad"] and fresh.state[params[0]]["step"] == 200.0
    print("torch's AdamW state loaded into arrayopt.AdamW: step", fresh.state[params[0]]["step"])
else:
    print("torch is not installed: nothing to convert")""",
    ),
]

NOTEBOOKS = {
    "01_quickstart": QUICKSTART,
    "02_scientific_fitting": FITTING,
    "04_gpu_pipeline": GPU,
    "05_migrating_from_torch": MIGRATING,
}


def make(cells):
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src) if kind == M else new_code_cell(src) for kind, src in cells]
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index:02d}"  # stable ids: regenerating changes only what changed
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return nb


def execute(nb):
    import nbclient

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the plots into the notebook
    with tempfile.TemporaryDirectory() as work:
        client = nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", record_timing=False, resources={"metadata": {"path": work}}
        )
        client.km = client.create_kernel_manager()
        with client.setup_kernel(env=env):
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
    return nb


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebooks to build (default: all)")
    parser.add_argument("--execute", action="store_true", help="run them and save the outputs")
    args = parser.parse_args()
    for name in args.names or NOTEBOOKS:
        nb = make(NOTEBOOKS[name])
        if args.execute:
            start = time.perf_counter()
            execute(nb)
            print(f"{name}: executed in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        nbformat.validate(nb)
        nbformat.write(nb, os.path.join(HERE, name + ".ipynb"))


if __name__ == "__main__":
    main()

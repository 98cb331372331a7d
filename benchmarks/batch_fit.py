"""Batched fitting on Gpufit's benchmark: arrayopt.batch.least_squares against SciPy in a loop.

    python benchmarks/batch_fit.py                       # CPU: float32 and float64, B = 1e3 ... 1e6
    python benchmarks/batch_fit.py --quick               # B = 1e3, 1e4; one round
    python benchmarks/batch_fit.py --gpu --json gpu.json # CuPy on the first GPU (unattended)

The problem is Gpufit's CPU/GPU comparison (Przybylski et al., Sci. Rep. 7:15722, 2017,
figure 6; the scripts of github.com/adrianjp88/Tests, ``figure6_GpuFit_CpuFit_speed.m``):
a symmetric 2-D Gaussian on 5 x 5 pixels, 5 parameters (amplitude 500, centre (2, 2)
moved by up to 0.5 px, width 1, background 10), Gaussian noise of standard deviation
500 / (10 ln 10), starting values off by up to 30 % of amplitude, width and background
and 0.3 px in the centre, tolerance 1e-4 and at most 10 iterations. In arrayopt terms:
``ftol=1e-4`` (Gpufit stops on the relative change of chi-square) and ``max_nfev=11``
(the first evaluation and 10 trial steps), ``jac=True`` (the model returns its Jacobian,
as Gpufit's built-in model does), ``pass_indices=True`` (finished fits are not
evaluated again; on the CPU the batch runs in blocks of 8192 that stay in cache).
SciPy runs ``least_squares(method="lm")`` (MINPACK) with the same ``ftol`` and
``max_nfev`` and the same model, one problem per call.

Method: the process is pinned to one CPU for "1 thread" (``workers=1``) and to two for
"2 threads" (``workers=2``: two Python threads fit blocks side by side; NumPy releases
the GIL inside its loops); both run in the same process, alternating, ``--rounds`` times,
and the median is reported. BLAS and OpenMP are limited to one thread. On a shared
machine the second CPU may be busy: each round also times plain NumPy work on 1 and 2
threads, and the 2-thread rows show that control's speed-up next to arrayopt's. The
SciPy loop is timed on a subset of ``--scipy-subset`` problems on one pinned CPU and its rate
extrapolated to every B (a loop's cost is linear in B), which the output says; it is timed
again in every round, right before arrayopt's runs, and each ratio is taken within its
round (the machine's speed drifts between rounds). Parity:
on that subset, arrayopt's and SciPy's solutions are compared with Gpufit's settings and
again with tolerances of 1e-12, where both must reach the same minimiser (in float32,
to within what float32 model values can resolve); differences are given relative to
the parameters and in units of each fit's standard error (from SciPy's Jacobian).
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

SIZE = 5  # pixels per side
N_PARAMS = 5
AMPLITUDE, WIDTH, BASELINE = 500.0, 1.0, 10.0
OFFSET_MAX = 0.5  # largest shift of the centre, px
START_FRACTION = 0.3  # starting values off by up to this fraction (of the width for the centre)
SNR = 10.0
TOLERANCE = 1e-4
MAX_ITERATIONS = 10

#: Gpufit's published figures for this benchmark (Przybylski et al. 2017 and the Gpufit
#: repository's profiling notes); other hardware, quoted for scale only.
GPUFIT_PUBLISHED = {
    "Cpufit (1 CPU thread)": "about 60,000 fits/s",
    "Gpufit, 1e5 fits": "2.17M fits/s",
    "Gpufit, 1e7 fits": "3.04M fits/s",
    "source": "Przybylski et al., Sci. Rep. 7:15722 (2017); github.com/gpufit/Gpufit",
}


def make_problems(count, seed=0):
    """(data (B, 25), p0 (B, 5), truth (B, 5)) as float64 NumPy arrays, Gpufit's recipe."""
    rng = np.random.default_rng(seed)
    centre = (SIZE - 1) / 2
    truth = np.empty((count, N_PARAMS))
    truth[:, 0] = AMPLITUDE
    truth[:, 1:3] = centre + OFFSET_MAX * rng.uniform(-1, 1, (count, 2))
    truth[:, 3] = WIDTH
    truth[:, 4] = BASELINE
    start = np.empty_like(truth)
    start[:, 0] = AMPLITUDE * (1 + START_FRACTION * rng.uniform(-1, 1, count))
    start[:, 1:3] = truth[:, 1:3] + START_FRACTION * WIDTH * rng.uniform(-1, 1, (count, 2))
    start[:, 3] = WIDTH * (1 + START_FRACTION * rng.uniform(-1, 1, count))
    start[:, 4] = BASELINE * (1 + START_FRACTION * rng.uniform(-1, 1, count))
    xs, ys = pixel_grid(np, np.float64)
    clean = gaussian_2d(np, truth, xs, ys)
    data = clean + AMPLITUDE / (SNR * np.log(10.0)) * rng.standard_normal(clean.shape)
    return data, start, truth


def pixel_grid(xp, dtype):
    """The pixel coordinates, each of shape (25, 1) (pixel index first)."""
    g = xp.arange(SIZE, dtype=dtype)
    xs = xp.reshape(xp.tile(g, (SIZE,)), (-1, 1))
    ys = xp.reshape(xp.repeat(g, SIZE), (-1, 1))
    return xs, ys


def gaussian_2d(xp, p, xs, ys):
    """Model values (B, 25) for parameters p (B, 5)."""
    a, x0, y0, w, b = (p[:, j] for j in range(N_PARAMS))
    r2 = ((xs - x0) ** 2 + (ys - y0) ** 2) / (w * w)
    return (a * xp.exp(-0.5 * r2) + b).T


def residuals_with_jacobian(xp, data_t, dtype):
    """``fun(p, rows) -> (residuals, jacobian)`` for ``least_squares(..., jac=True, pass_indices=True)``.

    Written the way a user who cares about speed writes a batched model: pixel index
    first, problem index last, so every operation runs along contiguous memory, and the
    (k, 25) residuals and (k, 25, 5) Jacobian are returned as transposes of (25, k) and
    (5, 25, k) arrays (``least_squares`` then uses them without copying). ``data_t`` is
    the (25, B) data.
    """
    xs, ys = pixel_grid(xp, dtype)

    def fun(p, rows):
        a, x0, y0, w, b = (p[:, j] for j in range(N_PARAMS))
        dx = xs - x0
        dy = ys - y0
        inv_w2 = 1 / (w * w)
        r2 = (dx * dx + dy * dy) * inv_w2
        e = xp.exp(-0.5 * r2)
        ae = a * e
        J = xp.empty((N_PARAMS, SIZE * SIZE, p.shape[0]), dtype=dtype)
        J[0] = e
        xp.multiply(ae * inv_w2, dx, out=J[1])
        xp.multiply(ae * inv_w2, dy, out=J[2])
        xp.multiply(ae, r2 / w, out=J[3])
        J[4] = 1
        r = ae + b - xp.take(data_t, rows, axis=1)
        return r.T, J.transpose(2, 1, 0)

    return fun


def fit(xp, data_t, p0, dtype, workers=1, **options):
    fun = residuals_with_jacobian(xp, data_t, dtype)
    settings = {"ftol": TOLERANCE, "max_nfev": MAX_ITERATIONS + 1, **options}
    return batch.least_squares(fun, p0, jac=True, pass_indices=True, workers=workers, **settings)


def scipy_loop(data, p0, **options):
    """SciPy's least_squares on each problem: (x (S, 5), status (S,), nfev (S,), seconds)."""
    from scipy.optimize import least_squares

    xs, ys = pixel_grid(np, np.float64)
    xs, ys = xs[:, 0], ys[:, 0]
    settings = {"ftol": TOLERANCE, "max_nfev": MAX_ITERATIONS + 1, **options}

    def make(y):
        def residual(q):
            a, x0, y0, w, b = q
            r2 = ((xs - x0) ** 2 + (ys - y0) ** 2) / (w * w)
            return a * np.exp(-0.5 * r2) + b - y

        def jacobian(q):
            a, x0, y0, w, _ = q
            dx, dy = xs - x0, ys - y0
            r2 = (dx * dx + dy * dy) / (w * w)
            e = np.exp(-0.5 * r2)
            ae = a * e
            return np.column_stack([e, ae * dx / (w * w), ae * dy / (w * w), ae * r2 / w, np.ones_like(e)])

        return residual, jacobian

    out = np.empty_like(p0)
    errors = np.empty_like(p0)
    status = np.empty(len(p0), int)
    nfev = np.empty(len(p0), int)
    start = time.perf_counter()
    for i in range(len(p0)):
        residual, jacobian = make(data[i])
        res = least_squares(residual, p0[i], jac=jacobian, method="lm", **settings)
        out[i], status[i], nfev[i] = res.x, res.status, res.nfev
    seconds = time.perf_counter() - start
    for i in range(len(p0)):  # standard errors at SciPy's solutions (curve_fit's pcov), not timed
        residual, jacobian = make(data[i])
        J, r = jacobian(out[i]), residual(out[i])
        variance = r @ r / (len(r) - len(out[i]))
        errors[i] = np.sqrt(np.diag(np.linalg.inv(J.T @ J)) * variance)
    return out, errors, status, nfev, seconds


def parity(ours, theirs, errors, truth):
    """How arrayopt's solutions compare with SciPy's on the same problems (``errors``: standard errors)."""
    scale = np.maximum(np.abs(theirs), 1.0)
    in_errors = np.max(np.abs(ours - theirs) / errors, axis=1)
    relative = np.max(np.abs(ours - theirs) / scale, axis=1)
    centre = np.max(np.abs(ours[:, 1:3] - theirs[:, 1:3]), axis=1)
    return {
        "problems": len(ours),
        "max relative difference (median)": float(np.median(relative)),
        "max relative difference (99th percentile)": float(np.percentile(relative, 99)),
        "max relative difference (largest)": float(relative.max()),
        "centre difference, px (median)": float(np.median(centre)),
        "centre difference, px (largest)": float(centre.max()),
        "share within 1e-3 relative": float(np.mean(relative < 1e-3)),
        "largest difference in standard errors (median)": float(np.median(in_errors)),
        "largest difference in standard errors (largest)": float(in_errors.max()),
        "x precision, px (arrayopt)": float(np.std(ours[:, 1] - truth[:, 1])),
        "x precision, px (SciPy)": float(np.std(theirs[:, 1] - truth[:, 1])),
    }


def two_core_control(cpus_one, cpus_two, seconds=0.3):
    """Speed-up of plain NumPy work (multiply, reduce) on 2 threads over 1, measured now.

    The machine may be shared: when the second CPU is busy elsewhere, no program gets 2x
    from it, and this control says so next to arrayopt's 2-thread figures.
    """
    import threading

    a = np.random.default_rng(0).random((25, 8192)).astype(np.float32)

    def work(deadline, done):
        count = 0
        while time.perf_counter() < deadline:
            np.sum(a * a, axis=0)
            count += 1
        done.append(count)

    rates = []
    for cpus, threads in ((cpus_one, 1), (cpus_two, 2)):
        pin(cpus)
        done: list[int] = []
        deadline = time.perf_counter() + seconds
        workers = [threading.Thread(target=work, args=(deadline, done)) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        rates.append(sum(done))
    return rates[1] / rates[0]


def pin(cpus):
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def cpu_run(args, report):
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    configs = [("1 thread", {available[0]}, 1)]
    if len(available) >= 2:
        configs.append(("2 threads", set(available[:2]), 2))
    else:
        print("only one CPU available: the 2-thread runs are skipped")
    largest = max(args.sizes)
    data_all, p0_all, truth_all = make_problems(largest, seed=args.seed)
    subset = min(args.scipy_subset, largest)

    pin({available[0]})
    scipy_x, errors, scipy_status, scipy_nfev, scipy_seconds = scipy_loop(data_all[:subset], p0_all[:subset])
    tight = {"ftol": 1e-12, "xtol": 1e-12, "gtol": 1e-12, "max_nfev": None}
    tight_x, tight_errors, _, _, _ = scipy_loop(data_all[:subset], p0_all[:subset], **tight)
    timed = min(subset, args.scipy_round)
    report["scipy"] = {
        "fits_per_s": subset / scipy_seconds,
        "subset": subset,
        "note": (
            f"timed on {timed} problems on one pinned CPU in every round, next to arrayopt's runs; "
            "a loop's cost is linear in B, so the ratio holds for every B"
        ),
        "mean evaluations": float(scipy_nfev.mean()),
        "success share": float(np.mean(scipy_status > 0)),
        "rates": [],
    }
    print(f"SciPy least_squares(method='lm') loop: {subset / scipy_seconds:,.0f} fits/s ({subset} problems, 1 CPU)")

    for dtype_name in args.dtypes:
        dtype = np.dtype(dtype_name)
        for count in args.sizes:
            data_t = np.ascontiguousarray(data_all[:count].T.astype(dtype))
            p0 = p0_all[:count].astype(dtype)
            rounds = args.rounds if count < 1_000_000 else max(1, args.rounds // 3)
            rates: dict[str, list[float]] = {name: [] for name, _, _ in configs}
            ratios: dict[str, list[float]] = {name: [] for name, _, _ in configs}
            controls = []
            result = None
            for r in range(rounds):
                if len(configs) > 1:
                    controls.append(two_core_control(configs[0][1], configs[1][1]))
                # the SciPy loop, timed right next to this round's arrayopt runs
                pin({available[0]})
                seconds = scipy_loop(data_all[:timed], p0_all[:timed])[-1]
                scipy_rate = timed / seconds
                report["scipy"]["rates"].append(scipy_rate)
                for name, cpus, workers in configs if r % 2 == 0 else configs[::-1]:
                    pin(cpus)
                    start = time.perf_counter()
                    result = fit(np, data_t, p0, dtype, workers=workers)
                    rate = count / (time.perf_counter() - start)
                    rates[name].append(rate)
                    ratios[name].append(rate / scipy_rate)
            pin(set(available))
            assert result is not None
            for name, _, workers in configs:
                row = {
                    "backend": "numpy",
                    "dtype": dtype_name,
                    "B": count,
                    "threads": workers,
                    "fits_per_s": statistics.median(rates[name]),
                    "vs_scipy_loop": statistics.median(ratios[name]),
                    "rounds": len(rates[name]),
                    "mean iterations": float(result.nit.mean()),
                    "success share": float(np.mean(result.success)),
                }
                if workers > 1 and controls:
                    row["plain NumPy 2-thread speed-up meanwhile"] = statistics.median(controls)
                report["runs"].append(row)
                control = (
                    f"; plain NumPy on 2 threads: {statistics.median(controls):.2f}x"
                    if workers > 1 and controls
                    else ""
                )
                print(
                    f"{dtype_name:8s} B={count:>9,d} {name:9s}: {row['fits_per_s']:>12,.0f} fits/s "
                    f"({row['vs_scipy_loop']:.1f}x the SciPy loop), "
                    f"mean iterations {row['mean iterations']:.2f}{control}"
                )
            if count == largest:
                ours = np.asarray(result.x[:subset], dtype=np.float64)
                report["parity"][f"{dtype_name}, Gpufit settings"] = parity(ours, scipy_x, errors, truth_all[:subset])
        converged = fit(
            np, np.ascontiguousarray(data_all[:subset].T.astype(dtype)), p0_all[:subset].astype(dtype), dtype, **tight
        )
        report["parity"][f"{dtype_name}, tolerances 1e-12"] = parity(
            np.asarray(converged.x, dtype=np.float64), tight_x, tight_errors, truth_all[:subset]
        )
    report["scipy"]["fits_per_s (median over rounds)"] = statistics.median(report["scipy"]["rates"])


def gpu_run(args, report):
    import cupy

    device = cupy.cuda.Device()
    properties = cupy.cuda.runtime.getDeviceProperties(device.id)
    report["device"] = properties["name"].decode() if isinstance(properties["name"], bytes) else properties["name"]
    largest = max(args.sizes)
    data_all, p0_all, truth_all = make_problems(largest, seed=args.seed)
    subset = min(args.scipy_subset, largest)
    for dtype_name in args.dtypes:
        dtype = np.dtype(dtype_name)
        warm_t = cupy.asarray(np.ascontiguousarray(data_all[:1000].T.astype(dtype)))
        fit(cupy, warm_t, cupy.asarray(p0_all[:1000].astype(dtype)), dtype)  # compile the kernels
        device.synchronize()
        for count in args.sizes:
            data_t = cupy.asarray(np.ascontiguousarray(data_all[:count].T.astype(dtype)))
            p0 = cupy.asarray(p0_all[:count].astype(dtype))
            times = []
            result = None
            for _ in range(args.rounds):
                device.synchronize()
                start = time.perf_counter()
                result = fit(cupy, data_t, p0, dtype)
                device.synchronize()
                times.append(time.perf_counter() - start)
            assert result is not None
            seconds = statistics.median(times)
            row = {
                "backend": "cupy",
                "dtype": dtype_name,
                "B": count,
                "seconds": seconds,
                "fits_per_s": count / seconds,
                "rounds": len(times),
                "mean iterations": float(cupy.asnumpy(result.nit).mean()),
                "success share": float(cupy.asnumpy(result.success).mean()),
            }
            report["runs"].append(row)
            print(f"GPU {dtype_name:8s} B={count:>10,d}: {row['fits_per_s']:>14,.0f} fits/s")
            if count >= subset:
                # the same problems on the CPU: the GPU must give the same fits
                cpu = fit(
                    np, np.ascontiguousarray(data_all[:subset].T.astype(dtype)), p0_all[:subset].astype(dtype), dtype
                )
                gpu_x = cupy.asnumpy(result.x[:subset]).astype(np.float64)
                cpu_x = np.asarray(cpu.x, dtype=np.float64)
                report["parity"][f"{dtype_name}, GPU vs NumPy"] = parity(
                    gpu_x, cpu_x, np.ones_like(cpu_x), truth_all[:subset]
                )
        del data_t, p0, result
        cupy.get_default_memory_pool().free_all_blocks()


def print_tables(report):
    print()
    print("| backend | dtype | B | threads | fits/s | x SciPy loop | mean iterations | NumPy control, 2 threads |")
    print("|---|---|---|---|---|---|---|---|")
    for row in report["runs"]:
        ratio = f"{row['vs_scipy_loop']:.1f}" if "vs_scipy_loop" in row else "-"
        control = row.get("plain NumPy 2-thread speed-up meanwhile")
        print(
            f"| {row['backend']} | {row['dtype']} | {row['B']:,} | {row.get('threads', '-')} | "
            f"{row['fits_per_s']:,.0f} | {ratio} | {row['mean iterations']:.2f} | "
            f"{'-' if control is None else f'{control:.2f}x'} |"
        )
    if report.get("scipy"):
        rates = report["scipy"]["rates"]
        note = report["scipy"]["note"]
        print(f"\nSciPy loop: {statistics.median(rates):,.0f} fits/s, median of {len(rates)} rounds ({note})")
    for name, values in report["parity"].items():
        print(f"\nparity, {name}:")
        for key, value in values.items():
            print(f"  {key}: {value:.3g}" if isinstance(value, float) else f"  {key}: {value}")
    print("\nGpufit's published figures (other hardware):")
    for key, value in GPUFIT_PUBLISHED.items():
        print(f"  {key}: {value}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="fit on the GPU with CuPy (no SciPy loop)")
    parser.add_argument("--sizes", default=None, help="batch sizes, comma-separated (default 1e3,1e4,1e5,1e6)")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--scipy-subset", type=int, default=2000, help="problems SciPy solves for the parity check")
    parser.add_argument("--scipy-round", type=int, default=500, help="problems the SciPy loop is timed on per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="B = 1e3, 1e4; one round; SciPy on 300 problems")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or "1e3,1e4"
        args.rounds = 1
        args.scipy_subset = min(args.scipy_subset, 300)
        args.scipy_round = min(args.scipy_round, 200)
    args.sizes = [int(float(s)) for s in (args.sizes or "1e3,1e4,1e5,1e6").split(",")]
    args.dtypes = [d.strip() for d in args.dtypes.split(",")]
    report = {
        "benchmark": "Gpufit 2-D Gaussian, 5x5 px, 5 parameters, tolerance 1e-4, at most 10 iterations",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "gpufit_published": GPUFIT_PUBLISHED,
        "runs": [],
        "parity": {},
    }
    if args.gpu:
        gpu_run(args, report)
    else:
        available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        try:
            cpu_run(args, report)
        finally:  # the process gets back the CPUs it had
            if available is not None:
                pin(available)
    print_tables(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()

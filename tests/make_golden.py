"""The golden files: torch's results for the tests, all written by this one generator.

They keep torch parity tested on machines without torch. Regenerate them, with
torch == ``TORCH_VERSION`` importable, whenever a case table or a harness changes:

    python tests/make_golden.py all                    # every file below
    python tests/make_golden.py optimizers [NAME ...]  # cases.py through harness.py (default: every optimizer)
    python tests/make_golden.py sparse [NAME ...]      # sparse_harness.py's cases
    python tests/make_golden.py muon                   # make_golden's MUON_CASES (test_muon.py)
    python tests/make_golden.py schedulers             # lr_cases.py and swa_cases.py
    python tests/make_golden.py lbfgs                  # lbfgs_parity.py's scenarios

Trajectory files (``tests/golden/<Optimizer>.npz``, one per optimizer) hold *runs*:
one run per case and dtype (``optimizers/<case id>/<dtype>``, ``sparse/...``,
``muon/...``, ``lbfgs/<scenario id>``), each a dict of arrays as the harnesses record
them (``step3/param0``, ``step3/state2/exp_avg``, ...). A file stores an ``index``
(JSON: the torch version and CPU kernel level, and every run's entries with dtype,
shape and offset) and
one 1-D array per dtype holding every entry of that dtype back to back: the runs are
stacked, so a file has a handful of members instead of thousands. The harness inputs
(the same for every case of a dtype) are stored once, in ``tests/golden/inputs.npz``;
cases with inputs of their own (sparse, LBFGS) keep them in their run under
``input/``; Muon's inputs are drawn again from their seed and checked by a checksum.
The schedulers' results are ``tests/golden/lr_scheduler.json`` and ``swa_utils.npz``.

torch's CPU kernels are pinned to AVX2 (``ATEN_CPU_CAPABILITY``) while writing, the
level the files were first made at, so that a machine with AVX-512 writes the same
numbers. Muon's bfloat16 matrix products follow the CPU itself, whatever that setting
(its larger case came out differently on an AVX-512 machine): its file is written
only on a CPU without AVX-512 (``all`` skips it elsewhere, and says so).
"""

import functools
import json
import os
import sys
from typing import Any

import numpy as np

#: The torch release the golden files come from (and the live parity tests expect).
TORCH_VERSION = "2.14.1"
#: torch's CPU kernel level while the files are written (see the module docstring).
TORCH_CPU_CAPABILITY = "avx2"
#: Muon's file is written only on a CPU without AVX-512 (see the module docstring), and
#: none was at hand when the reference moved from torch 2.13.0 to 2.14.1: it still holds
#: 2.13.0's numbers. Every other file came out bit for bit the same from both releases.
MUON_WRITTEN_WITH = ("2.13.0", "AVX2")

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")
INPUTS = os.path.join(GOLDEN, "inputs.npz")
LR_SCHEDULER = os.path.join(GOLDEN, "lr_scheduler.json")
SWA_UTILS = os.path.join(GOLDEN, "swa_utils.npz")
FORMAT = 1

Run = dict[str, np.ndarray]


# -- the trajectory files ---------------------------------------------------------------------


def golden_path(optimizer: str) -> str:
    return os.path.join(GOLDEN, f"{optimizer}.npz")


def write_runs(path: str, runs: dict[str, Run], replace: str) -> None:
    """Write ``runs`` into the file at ``path``, replacing its runs whose name starts with ``replace``.

    Runs of other suites already in the file are kept as they are.
    """
    import torch

    kept = {name: run for name, run in read_file(path).items() if not name.startswith(replace)}
    merged = {**kept, **runs}
    capability = torch.backends.cpu.get_cpu_capability()
    index: dict[str, Any] = {"format": FORMAT, "torch": TORCH_VERSION, "cpu_capability": capability, "runs": {}}
    chunks: dict[str, list[np.ndarray]] = {}
    sizes: dict[str, int] = {}
    for name in sorted(merged):
        entries = []
        for key, value in merged[name].items():
            value = np.asarray(value)
            kind = value.dtype.name
            offset = sizes.get(kind, 0)
            chunks.setdefault(kind, []).append(value.reshape(-1))
            sizes[kind] = offset + value.size
            entries.append([key, kind, list(value.shape), offset])
        index["runs"][name] = entries
    members = {kind: np.concatenate(parts) for kind, parts in chunks.items()}
    members["index"] = np.frombuffer(json.dumps(index, separators=(",", ":")).encode(), dtype=np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **members)
    _read.cache_clear()


def read_file(path: str) -> dict[str, Run]:
    """Every run of a trajectory file (an empty dict if there is no file)."""
    if not os.path.exists(path):
        return {}
    index, data = _read(path)
    return {name: _entries(data, entries) for name, entries in index["runs"].items()}


def read_run(path: str, name: str) -> Run:
    """One run of a trajectory file."""
    index, data = _read(path)
    return _entries(data, index["runs"][name])


def written_with(path: str) -> tuple[str, str]:
    """The torch release and CPU kernel level a trajectory file was written with."""
    index = _read(path)[0]
    return str(index["torch"]), str(index["cpu_capability"])


@functools.lru_cache(maxsize=64)
def _read(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path) as data:
        index = json.loads(data["index"].tobytes())
        arrays = {name: data[name] for name in data.files if name != "index"}
    if index.get("format") != FORMAT:
        raise ValueError(f"{path}: golden format {index.get('format')}, expected {FORMAT}")
    return index, arrays


def _entries(data: dict[str, np.ndarray], entries: list[Any]) -> Run:
    run: Run = {}
    for key, kind, shape, offset in entries:
        size = int(np.prod(shape, dtype=np.int64))
        run[key] = data[kind][offset : offset + size].reshape(shape).copy()
    return run


# -- what the tests read ------------------------------------------------------------------------


def load_golden(case_id: str, dtype: str) -> Run:
    """The inputs and torch's trajectory of one case of ``cases.py`` and dtype."""
    return {**load_inputs(dtype), **read_run(golden_path(case_id.split("-", 1)[0]), f"optimizers/{case_id}/{dtype}")}


def load_inputs(dtype: str) -> Run:
    """The harness inputs of ``dtype`` (``harness.make_inputs``), as torch was given them."""
    return read_run(INPUTS, dtype)


def load_sparse(case_id: str, dtype: str) -> Run:
    """The inputs and torch's trajectory of one case of ``sparse_harness.py`` and dtype."""
    return read_run(golden_path(case_id.split("-", 1)[0]), f"sparse/{case_id}/{dtype}")


def load_lbfgs() -> dict[str, Run]:
    """scenario id -> torch's LBFGS trajectory (its starting parameters under ``input/``)."""
    return {name.split("/", 1)[1]: run for name, run in read_file(golden_path("LBFGS")).items()}


def load_muon(name: str, dtype: str) -> Run:
    """torch's trajectory of one of :data:`MUON_CASES` (``inputs``: the checksum of its inputs)."""
    return read_run(golden_path("Muon"), f"muon/{name}/{dtype}")


# -- Muon's cases (2-D parameters only: a small harness of its own) --------------------------------

#: Small matrices: torch's float32 accumulation order never decides a bfloat16
#: rounding for these inputs. Larger ones: it does, now and then (see test_muon.py).
SMALL = [(4, 6), (6, 4), (8, 8), (5, 12)]
LARGE = [(16, 72), (72, 16), (32, 40)]
MUON_STEPS = 14
MUON_ROUNDTRIP_AFTER = 6  # state_dict round trip after this step (0-based)
MUON_NONE_GRADS = {(2, 1), (9, 3)}  # (step, parameter index) pairs with grad None
MUON_DTYPES = ("float64", "float32")

#: (name, shapes, constructor keywords, keywords passed as 0-d arrays)
MUON_CASES: list[tuple[str, list[tuple[int, int]], dict[str, Any], tuple[str, ...]]] = [
    ("default", SMALL, {"lr": 0.02}, ()),
    ("plain-momentum", SMALL, {"lr": 0.02, "nesterov": False, "weight_decay": 0.0}, ()),
    (
        "small-momentum-match_rms_adamw",
        SMALL,
        {"lr": 0.05, "momentum": 0.3, "weight_decay": 0.05, "adjust_lr_fn": "match_rms_adamw"},
        (),
    ),
    (
        "coefficients-steps-eps",
        SMALL,
        {"lr": 0.02, "ns_coefficients": (2.0, -1.5, 0.5), "ns_steps": 3, "eps": 1e-3, "adjust_lr_fn": "original"},
        (),
    ),
    ("array-lr", SMALL, {"lr": 0.02, "weight_decay": 0.2}, ("lr",)),
    ("large", LARGE, {"lr": 0.02, "adjust_lr_fn": "match_rms_adamw"}, ()),
]


def muon_inputs(shapes: list[tuple[int, int]], dtype: str, seed: int = 4321) -> Run:
    rng = np.random.default_rng(seed)
    inputs = {f"input/param{i}": rng.standard_normal(shape).astype(dtype) for i, shape in enumerate(shapes)}
    for step in range(MUON_STEPS):
        for i, shape in enumerate(shapes):
            if (step, i) not in MUON_NONE_GRADS:
                scale = 10.0 ** (i - 2) * (1.0 + 0.5 * np.cos(step))  # several magnitudes
                inputs[f"input/grad{step}_{i}"] = (rng.standard_normal(shape) * scale).astype(dtype)
    return inputs


def run_muon(
    cls: Any, kwargs: dict[str, Any], make_param: Any, make_grad: Any, to_numpy: Any, inputs: Run, n: int
) -> Run:
    """Two param groups (the second with half the lr), a state_dict round trip, None grads."""
    import copy

    def build(arrays: list[np.ndarray]) -> tuple[list[Any], Any]:
        params = [make_param(a) for a in arrays]
        lr2 = 0.5 * float(np.asarray(kwargs.get("lr", 1e-3)))
        groups = [{"params": params[: n // 2]}, {"params": params[n // 2 :], "lr": lr2}]
        return params, cls(groups, **kwargs)

    params, opt = build([inputs[f"input/param{i}"].copy() for i in range(n)])
    out: Run = {}
    for step in range(MUON_STEPS):
        for i, p in enumerate(params):
            grad = inputs.get(f"input/grad{step}_{i}")
            p.grad = None if grad is None else make_grad(grad.copy())
        opt.step()
        for i, p in enumerate(params):
            out[f"step{step}/param{i}"] = to_numpy(p.data)
        if step in (MUON_ROUNDTRIP_AFTER, MUON_STEPS - 1):  # buffers at two steps keep the file small
            for index, entries in opt.state_dict()["state"].items():
                out[f"step{step}/state{index}/momentum_buffer"] = to_numpy(entries["momentum_buffer"])
        if step == MUON_ROUNDTRIP_AFTER:
            saved = copy.deepcopy(opt.state_dict())
            params, opt = build([to_numpy(p.data) for p in params])
            opt.load_state_dict(saved)
    return out


def run_muon_torch(case: tuple[Any, ...], inputs: Run) -> Run:
    import torch

    _, shapes, kwargs, arrays = case
    kwargs = {k: torch.tensor(v, dtype=torch.float64) if k in arrays else v for k, v in kwargs.items()}
    return run_muon(
        torch.optim.Muon,
        kwargs,
        lambda a: torch.nn.Parameter(torch.from_numpy(a)),
        torch.from_numpy,
        lambda t: t.detach().numpy().copy(),
        inputs,
        len(shapes),
    )


def checksum(inputs: Run) -> np.ndarray:
    """Each input's sum of values and of squares, in key order: enough to see a changed input."""
    return np.array(
        [[np.sum(inputs[k], dtype=np.float64), np.sum(np.square(inputs[k], dtype=np.float64))] for k in sorted(inputs)]
    )


# -- the subcommands --------------------------------------------------------------------------------


def _by_optimizer(cases: list[Any], names: list[str], known: list[str], what: str) -> dict[str, list[Any]]:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"no {what} cases for {unknown}; the table has {sorted(set(known))}")
    chosen: dict[str, list[Any]] = {}
    for case in cases:
        if not names or case.optimizer in names:
            chosen.setdefault(case.optimizer, []).append(case)
    return chosen


def optimizers(names: list[str]) -> None:
    """tests/golden/<Optimizer>.npz ``optimizers/...`` runs, and tests/golden/inputs.npz."""
    import harness
    from cases import CASES, OPTIMIZERS

    chosen = _by_optimizer(CASES, names, OPTIMIZERS, "optimizer")
    write_runs(INPUTS, {dtype: harness.make_inputs(dtype) for dtype in harness.DTYPES}, replace="")
    for optimizer, cases in chosen.items():
        runs = {}
        for case in cases:
            for dtype in case.dtypes:
                runs[f"optimizers/{case.id}/{dtype}"] = harness.run_torch(case, harness.make_inputs(dtype))
        write_runs(golden_path(optimizer), runs, replace="optimizers/")
        print(f"{optimizer}: {len(runs)} runs")


def sparse(names: list[str]) -> None:
    """tests/golden/<Optimizer>.npz ``sparse/...`` runs (inputs included: each case has its own)."""
    import warnings

    import sparse_harness

    # torch warns that sparse invariant checks are off; the harness's indices are valid.
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    cases = sparse_harness.CASES
    chosen = _by_optimizer(cases, names, [case.optimizer for case in cases], "sparse")
    for optimizer, chosen_cases in chosen.items():
        runs = {}
        for case in chosen_cases:
            for dtype in case.dtypes:
                inputs = sparse_harness.make_inputs(case, dtype)
                runs[f"sparse/{case.id}/{dtype}"] = {**inputs, **sparse_harness.run_torch(case, inputs)}
        write_runs(golden_path(optimizer), runs, replace="sparse/")
        print(f"{optimizer}: {len(runs)} sparse runs")


def muon(names: list[str]) -> None:
    """tests/golden/Muon.npz: torch.optim.Muon on MUON_CASES (the inputs as a checksum)."""
    from numpy._core._multiarray_umath import __cpu_features__

    if __cpu_features__.get("AVX512F"):
        message = "Muon's golden file is written on a CPU without AVX-512 (see the module docstring)"
        if names == ["all"]:
            print(f"skipped: {message}")
            return
        raise SystemExit(message)
    runs = {}
    for case in MUON_CASES:
        name, shapes = case[0], case[1]
        for dtype in MUON_DTYPES:
            inputs = muon_inputs(shapes, dtype)
            runs[f"muon/{name}/{dtype}"] = {"inputs": checksum(inputs), **run_muon_torch(case, inputs)}
    write_runs(golden_path("Muon"), runs, replace="muon/")
    print(f"Muon: {len(runs)} runs")


def schedulers(names: list[str]) -> None:
    """tests/golden/lr_scheduler.json (lr_cases.py) and tests/golden/swa_utils.npz (swa_cases.py)."""
    import torch

    import lr_cases
    import swa_cases

    golden = {
        "torch_version": torch.__version__,
        "cases": {name: lr_cases.run_case("torch", name) for name in lr_cases.CASES},
        "epoch_cases": {name: lr_cases.run_epoch_case("torch", name) for name in lr_cases.EPOCH_CASES},
        "plateau_cases": {name: lr_cases.run_plateau_case("torch", name) for name in lr_cases.PLATEAU_CASES},
        "error_cases": {name: lr_cases.run_error_case("torch", name) for name in lr_cases.ERROR_CASES},
        "warning_cases": {name: lr_cases.run_warning_case("torch", name) for name in lr_cases.WARNING_CASES},
        "state_dicts": {name: lr_cases.state_dict_after("torch", name) for name in lr_cases.CASES},
    }
    with open(LR_SCHEDULER, "w") as f:
        json.dump(golden, f, sort_keys=True, separators=(",", ":"))
        f.write("\n")
    np.savez_compressed(SWA_UTILS, **swa_cases.golden_arrays())
    print(f"wrote {LR_SCHEDULER} and {SWA_UTILS}")


def lbfgs(names: list[str]) -> None:
    """tests/golden/LBFGS.npz: torch.optim.LBFGS on every scenario of lbfgs_parity.py."""
    from lbfgs_parity import SCENARIOS, run_torch
    from lbfgs_problems import PROBLEMS

    runs = {}
    for scenario in SCENARIOS:
        run = {f"input/param{i}": a for i, a in enumerate(PROBLEMS[scenario.problem].init(scenario.dtype))}
        for key, value in run_torch(scenario).items():
            if not key.startswith("state/"):  # compared only with aligned arithmetic (live torch)
                run[key] = np.asarray(value)
        runs[f"lbfgs/{scenario.id}"] = run
    write_runs(golden_path("LBFGS"), runs, replace="lbfgs/")
    print(f"LBFGS: {len(runs)} scenarios")


SUBCOMMANDS = {"optimizers": optimizers, "sparse": sparse, "muon": muon, "schedulers": schedulers, "lbfgs": lbfgs}


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in (*SUBCOMMANDS, "all"):
        raise SystemExit(__doc__)
    os.environ.setdefault("ATEN_CPU_CAPABILITY", TORCH_CPU_CAPABILITY)  # read when torch is imported
    sys.path.insert(0, HERE)
    import torch

    if torch.__version__.split("+")[0] != TORCH_VERSION:
        raise SystemExit(f"the golden files come from torch {TORCH_VERSION}; torch {torch.__version__} is installed")
    torch.set_num_threads(1)
    command, names = argv[0], argv[1:]
    for name, run in SUBCOMMANDS.items():
        if command in (name, "all"):
            run(names if command != "all" else ["all"] if name == "muon" else [])
    print(f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})")


if __name__ == "__main__":
    main(sys.argv[1:])

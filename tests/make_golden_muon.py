"""Write tests/golden/Muon.npz: torch.optim.Muon trajectories for tests/test_muon.py.

Muon takes 2-D parameters only, so it has its own small harness instead of the shared
5-shape one (tests/harness.py). Regenerate with torch==2.13.0 installed whenever the
cases, shapes or inputs below change:

    python tests/make_golden_muon.py

The file holds, per case and dtype, a checksum of the inputs (``<case>/<dtype>/inputs``:
the inputs themselves are drawn again from their seed) and torch's trajectory
(``<case>/<dtype>/step<k>/param<i>``, and ``.../state<i>/momentum_buffer`` at two steps).
It was written on a CPU where torch dispatches to its AVX2 kernels; test_muon.py
explains why that matters for the larger shapes.
"""

import copy
import os
import sys
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden", "Muon.npz")

#: Small matrices: torch's float32 accumulation order never decides a bfloat16
#: rounding for these inputs. Larger ones: it does, now and then (see test_muon.py).
SMALL = [(4, 6), (6, 4), (8, 8), (5, 12)]
LARGE = [(16, 72), (72, 16), (32, 40)]
STEPS = 14
ROUNDTRIP_AFTER = 6  # state_dict round trip after this step (0-based)
NONE_GRADS = {(2, 1), (9, 3)}  # (step, parameter index) pairs with grad None
DTYPES = ("float64", "float32")

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


def make_inputs(shapes: list[tuple[int, int]], dtype: str, seed: int = 4321) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {f"input/param{i}": rng.standard_normal(shape).astype(dtype) for i, shape in enumerate(shapes)}
    for step in range(STEPS):
        for i, shape in enumerate(shapes):
            if (step, i) not in NONE_GRADS:
                scale = 10.0 ** (i - 2) * (1.0 + 0.5 * np.cos(step))  # several magnitudes
                inputs[f"input/grad{step}_{i}"] = (rng.standard_normal(shape) * scale).astype(dtype)
    return inputs


def run(
    cls: Any,
    kwargs: dict[str, Any],
    make_param: Any,
    make_grad: Any,
    to_numpy: Any,
    inputs: dict[str, np.ndarray],
    n: int,
) -> dict[str, np.ndarray]:
    """Two param groups (the second with half the lr), a state_dict round trip, None grads."""

    def build(arrays: list[np.ndarray]) -> tuple[list[Any], Any]:
        params = [make_param(a) for a in arrays]
        lr2 = 0.5 * float(np.asarray(kwargs.get("lr", 1e-3)))
        groups = [{"params": params[: n // 2]}, {"params": params[n // 2 :], "lr": lr2}]
        return params, cls(groups, **kwargs)

    params, opt = build([inputs[f"input/param{i}"].copy() for i in range(n)])
    out: dict[str, np.ndarray] = {}
    for step in range(STEPS):
        for i, p in enumerate(params):
            grad = inputs.get(f"input/grad{step}_{i}")
            p.grad = None if grad is None else make_grad(grad.copy())
        opt.step()
        for i, p in enumerate(params):
            out[f"step{step}/param{i}"] = to_numpy(p.data)
        if step in (ROUNDTRIP_AFTER, STEPS - 1):  # buffers at two steps keep the file small
            for index, entries in opt.state_dict()["state"].items():
                out[f"step{step}/state{index}/momentum_buffer"] = to_numpy(entries["momentum_buffer"])
        if step == ROUNDTRIP_AFTER:
            saved = copy.deepcopy(opt.state_dict())
            params, opt = build([to_numpy(p.data) for p in params])
            opt.load_state_dict(saved)
    return out


def run_torch(case: tuple[Any, ...], inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    _, shapes, kwargs, arrays = case
    kwargs = {k: torch.tensor(v, dtype=torch.float64) if k in arrays else v for k, v in kwargs.items()}
    return run(
        torch.optim.Muon,
        kwargs,
        lambda a: torch.nn.Parameter(torch.from_numpy(a)),
        torch.from_numpy,
        lambda t: t.detach().numpy().copy(),
        inputs,
        len(shapes),
    )


def main() -> None:
    import torch

    torch.set_num_threads(1)
    arrays: dict[str, np.ndarray] = {}
    for case in MUON_CASES:
        name, shapes = case[0], case[1]
        for dtype in DTYPES:
            inputs = make_inputs(shapes, dtype)
            arrays[f"{name}/{dtype}/inputs"] = checksum(inputs)
            for key, value in run_torch(case, inputs).items():
                arrays[f"{name}/{dtype}/{key}"] = np.asarray(value)
    capability = torch.backends.cpu.get_cpu_capability()
    arrays["meta/torch_cpu_capability"] = np.array(capability)
    np.savez_compressed(GOLDEN, **arrays)
    print(f"torch {torch.__version__} ({capability}): {len(MUON_CASES)} cases in {GOLDEN}")


def checksum(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Each input's sum of values and of squares, in key order: enough to see a changed input."""
    return np.array(
        [[np.sum(inputs[k], dtype=np.float64), np.sum(np.square(inputs[k], dtype=np.float64))] for k in sorted(inputs)]
    )


def load(name: str, dtype: str) -> dict[str, np.ndarray]:
    prefix = f"{name}/{dtype}/"
    with np.load(GOLDEN) as data:
        return {k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)}


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()

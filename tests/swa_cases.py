"""Parameter streams averaged by torch.optim.swa_utils and arrayopt.swa_utils (shared by the
tests and make_golden.py schedulers).

A stream is a sequence of snapshots of three parameters (a matrix, a vector and a
0-d one); each snapshot is written into the live parameters, then
``update_parameters`` folds it in, and every averaged value is recorded. Keys:
``"step{k}/param{i}"``.
"""

from typing import Any

import numpy as np

SHAPES = [(3, 4), (5,), ()]
UPDATES = 25
DTYPES = ["float64", "float32"]

# name -> (which averaging function, decay)
CONFIGS: dict[str, tuple[str, float]] = {
    "swa-default": ("default", 0.0),
    "ema-multi": ("ema_multi", 0.9),
    "ema-multi-small-decay": ("ema_multi", 0.3),
    "ema-avg": ("ema_avg", 0.95),
    "swa-avg": ("swa_avg", 0.0),
    "swa-multi": ("swa_multi", 0.0),
}


def make_stream(dtype: str, seed: int = 7) -> dict[str, np.ndarray]:
    """Initial values and ``UPDATES`` snapshots: a drifting, noisy walk (what training gives)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, shape in enumerate(SHAPES):
        value = rng.standard_normal(shape)
        out[f"input/init/param{i}"] = np.asarray(value, dtype=dtype)
        for k in range(UPDATES):
            value = value * 0.97 + 0.3 * rng.standard_normal(shape) + 0.05
            out[f"input/step{k}/param{i}"] = np.asarray(value, dtype=dtype)
    return out


def _kwargs(module: Any, config: str) -> dict[str, Any]:
    kind, decay = CONFIGS[config]
    if kind == "ema_multi":
        return {"multi_avg_fn": module.get_ema_multi_avg_fn(decay)}
    if kind == "ema_avg":
        return {"avg_fn": module.get_ema_avg_fn(decay)}
    if kind == "swa_avg":
        return {"avg_fn": module.get_swa_avg_fn()}
    if kind == "swa_multi":
        return {"multi_avg_fn": module.get_swa_multi_avg_fn()}
    return {}


def run_torch(config: str, stream: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch
    from torch.optim import swa_utils

    params = [torch.nn.Parameter(torch.from_numpy(stream[f"input/init/param{i}"].copy())) for i in range(len(SHAPES))]
    model = torch.nn.ParameterList(params)
    averaged = swa_utils.AveragedModel(model, **_kwargs(swa_utils, config))
    out = {}
    for k in range(UPDATES):
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(torch.from_numpy(stream[f"input/step{k}/param{i}"]))
        averaged.update_parameters(model)
        for i, p in enumerate(averaged.module.parameters()):
            out[f"step{k}/param{i}"] = p.detach().numpy().copy()
    return out


def run_arrayopt(config: str, stream: dict[str, np.ndarray], xp: Any = np) -> dict[str, np.ndarray]:
    import arrayopt
    from arrayopt import swa_utils

    params = [arrayopt.Parameter(xp.asarray(stream[f"input/init/param{i}"].copy())) for i in range(len(SHAPES))]
    averaged = swa_utils.AveragedModel(params, **_kwargs(swa_utils, config))
    out = {}
    for k in range(UPDATES):
        for i, p in enumerate(params):
            p.data[...] = xp.asarray(stream[f"input/step{k}/param{i}"])
        averaged.update_parameters(params)
        for i, p in enumerate(averaged.parameters()):
            out[f"step{k}/param{i}"] = np.asarray(arrayopt.backends.get_backend(p.data).to_numpy(p.data)).copy()
    return out


def golden_arrays() -> dict[str, np.ndarray]:
    """Everything make_golden.py schedulers stores (torch needed), one stacked array per parameter:

    ``"{dtype}/input/param{i}"``: the initial value then the snapshots;
    ``"{dtype}/{config}/param{i}"``: torch's average after each update.
    """
    out = {}
    for dtype in DTYPES:
        stream = make_stream(dtype)
        for i in range(len(SHAPES)):
            rows = [stream[f"input/init/param{i}"]] + [stream[f"input/step{k}/param{i}"] for k in range(UPDATES)]
            out[f"{dtype}/input/param{i}"] = np.stack(rows)
        for config in CONFIGS:
            averages = run_torch(config, stream)
            for i in range(len(SHAPES)):
                out[f"{dtype}/{config}/param{i}"] = np.stack([averages[f"step{k}/param{i}"] for k in range(UPDATES)])
    return out


def golden_stream(golden: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    """The stream of ``dtype`` as stored by :func:`golden_arrays`, in make_stream's layout."""
    out = {}
    for i in range(len(SHAPES)):
        rows = golden[f"{dtype}/input/param{i}"]
        out[f"input/init/param{i}"] = rows[0]
        out.update({f"input/step{k}/param{i}": rows[k + 1] for k in range(UPDATES)})
    return out


def golden_averages(golden: dict[str, np.ndarray], dtype: str, config: str) -> dict[str, np.ndarray]:
    """torch's averages as stored by :func:`golden_arrays`, in run_torch's layout."""
    return {
        f"step{k}/param{i}": golden[f"{dtype}/{config}/param{i}"][k] for i in range(len(SHAPES)) for k in range(UPDATES)
    }

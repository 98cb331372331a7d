"""Write tests/golden_lbfgs/lbfgs.npz: torch.optim.LBFGS trajectories for every scenario.

The file keeps LBFGS's torch parity tested on machines without torch
(``tests/test_lbfgs.py``). Regenerate it, with torch==2.13.0 installed, whenever
``tests/lbfgs_parity.py`` or ``tests/lbfgs_problems.py`` changes:

    PYTHONPATH=. python tests/make_lbfgs_golden.py

Each scenario's entries are stored under ``<scenario id>/``, with its starting
parameters under ``<scenario id>/input/``. It lives apart from tests/golden/, which
``make_golden.py`` prunes to the elementwise optimizers' cases.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = os.path.join(HERE, "golden_lbfgs", "lbfgs.npz")


def load_golden() -> dict[str, dict[str, np.ndarray]]:
    """scenario id -> the stored trajectory (with its inputs under ``input/``)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(PATH) as data:
        for key in data.files:
            scenario, rest = key.split("/", 1)
            out.setdefault(scenario, {})[rest] = data[key]
    return out


def main() -> None:
    sys.path.insert(0, HERE)
    import torch

    from lbfgs_parity import SCENARIOS, run_torch
    from lbfgs_problems import PROBLEMS

    torch.set_num_threads(1)
    arrays: dict[str, np.ndarray] = {}
    for scenario in SCENARIOS:
        for i, a in enumerate(PROBLEMS[scenario.problem].init(scenario.dtype)):
            arrays[f"{scenario.id}/input/param{i}"] = a
        for key, value in run_torch(scenario).items():
            if not key.startswith("state/"):  # compared only with aligned arithmetic (live torch)
                arrays[f"{scenario.id}/{key}"] = np.asarray(value)
    os.makedirs(os.path.dirname(PATH), exist_ok=True)
    np.savez_compressed(PATH, **arrays)
    print(f"torch {torch.__version__}: {len(SCENARIOS)} LBFGS scenarios in {PATH}")


if __name__ == "__main__":
    main()

"""Write tests/golden/<case>.npz: torch.optim trajectories for every case and dtype.

The golden files keep torch parity tested on machines without torch. Regenerate
them (with torch==2.13.0 installed) whenever the case table or the harness changes:

    python tests/make_golden.py            # every case; stale files removed
    python tests/make_golden.py RMSprop    # only the cases of these optimizers

Each file holds, for each dtype the case supports (``Case.dtypes``), the harness inputs
(``<dtype>/input/...``) and torch's trajectory (``<dtype>/step<k>/...``);
``test_parity.py`` checks that the stored files equal a fresh torch run.
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")


def golden_path(case_id: str) -> str:
    return os.path.join(GOLDEN, f"{case_id}.npz")


def torch_golden(case: object) -> dict[str, np.ndarray]:
    """The arrays a golden file for ``case`` holds, computed with torch now."""
    import harness

    arrays: dict[str, np.ndarray] = {}
    for dtype in case.dtypes:  # type: ignore[attr-defined]
        inputs = harness.make_inputs(dtype)
        trajectory = harness.run_torch(case, inputs)  # type: ignore[arg-type]
        for key, value in {**inputs, **trajectory}.items():
            arrays[f"{dtype}/{key}"] = np.asarray(value)
    return arrays


def load_golden(case_id: str, dtype: str) -> dict[str, object]:
    """The stored inputs and torch trajectory of one case and dtype."""
    prefix = f"{dtype}/"
    with np.load(golden_path(case_id)) as data:
        return {k[len(prefix) :]: data[k] for k in data.files if k.startswith(prefix)}


def main(optimizers: list[str]) -> None:
    sys.path.insert(0, HERE)
    import torch

    from cases import CASES, OPTIMIZERS

    unknown = sorted(set(optimizers) - set(OPTIMIZERS))
    if unknown:
        raise SystemExit(f"no cases for {unknown}; the table has {OPTIMIZERS}")
    torch.set_num_threads(1)
    os.makedirs(GOLDEN, exist_ok=True)
    if not optimizers:  # a full run also removes the files of cases that are gone
        wanted = {f"{case.id}.npz" for case in CASES}
        for stale in sorted(set(os.listdir(GOLDEN)) - wanted):
            os.remove(os.path.join(GOLDEN, stale))
            print(f"removed {stale}")
    chosen = [case for case in CASES if not optimizers or case.optimizer in optimizers]
    for case in chosen:
        np.savez_compressed(golden_path(case.id), **torch_golden(case))
        print(f"wrote {case.id}.npz")
    print(f"torch {torch.__version__}: {len(chosen)} golden files in {GOLDEN}")


if __name__ == "__main__":
    main(sys.argv[1:])

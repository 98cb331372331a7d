"""Write tests/golden_sparse/<case>.npz: torch trajectories for the sparse-gradient cases.

The counterpart of ``make_golden.py`` for ``sparse_harness.CASES`` (SGD, Adagrad and
SparseAdam fed uncoalesced ``torch.sparse_coo_tensor`` gradients), so that sparse
parity stays tested on machines without torch. Regenerate (with torch==2.13.0) when
those cases or the sparse harness change:

    python tests/make_sparse_golden.py             # every case; stale files removed
    python tests/make_sparse_golden.py Adagrad     # only the cases of these optimizers

Each file holds, for each dtype of the case, the inputs (``<dtype>/input/...``) and
torch's trajectory (``<dtype>/step<k>/...``).
"""

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden_sparse")


def golden_path(case_id: str) -> str:
    return os.path.join(GOLDEN, f"{case_id}.npz")


def torch_golden(case: object) -> dict[str, np.ndarray]:
    """The arrays a golden file for ``case`` holds, computed with torch now."""
    import sparse_harness

    arrays: dict[str, np.ndarray] = {}
    for dtype in case.dtypes:  # type: ignore[attr-defined]
        inputs = sparse_harness.make_inputs(case, dtype)  # type: ignore[arg-type]
        trajectory = sparse_harness.run_torch(case, inputs)  # type: ignore[arg-type]
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
    import warnings

    import torch

    from sparse_harness import CASES

    known = sorted({case.optimizer for case in CASES})
    unknown = sorted(set(optimizers) - set(known))
    if unknown:
        raise SystemExit(f"no sparse cases for {unknown}; the table has {known}")
    torch.set_num_threads(1)
    # torch warns that sparse invariant checks are off; the harness's indices are valid.
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    os.makedirs(GOLDEN, exist_ok=True)
    if not optimizers:
        wanted = {f"{case.id}.npz" for case in CASES}
        for stale in sorted(set(os.listdir(GOLDEN)) - wanted):
            os.remove(os.path.join(GOLDEN, stale))
            print(f"removed {stale}")
    chosen = [case for case in CASES if not optimizers or case.optimizer in optimizers]
    for case in chosen:
        np.savez_compressed(golden_path(case.id), **torch_golden(case))
        print(f"wrote {case.id}.npz")
    print(f"torch {torch.__version__}: {len(chosen)} sparse golden files in {GOLDEN}")


if __name__ == "__main__":
    main(sys.argv[1:])

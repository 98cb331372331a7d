"""Write the golden files of the schedulers and weight averaging, from torch.

* tests/golden/lr_scheduler.json: every case of lr_cases.py run through torch;
* tests/golden/swa_utils.npz: the parameter streams of swa_cases.py and torch's averages.

Usage (from the repository root, torch 2.13 importable)::

    PYTHONPATH=$PWD python tests/make_lr_golden.py

The files keep these tested where torch is not installed. They hold only what torch
computed (and the inputs it was given): lr / momentum trajectories, the errors and
warnings torch raises, a summary of each scheduler's state_dict, averaged parameters.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import lr_cases  # noqa: E402
import swa_cases  # noqa: E402

GOLDEN = os.path.join(HERE, "golden", "lr_scheduler.json")
SWA_GOLDEN = os.path.join(HERE, "golden", "swa_utils.npz")


def main() -> None:
    import torch

    torch.set_num_threads(1)
    golden = {
        "torch_version": torch.__version__,
        "cases": {name: lr_cases.run_case("torch", name) for name in lr_cases.CASES},
        "epoch_cases": {name: lr_cases.run_epoch_case("torch", name) for name in lr_cases.EPOCH_CASES},
        "plateau_cases": {name: lr_cases.run_plateau_case("torch", name) for name in lr_cases.PLATEAU_CASES},
        "error_cases": {name: lr_cases.run_error_case("torch", name) for name in lr_cases.ERROR_CASES},
        "warning_cases": {name: lr_cases.run_warning_case("torch", name) for name in lr_cases.WARNING_CASES},
        "state_dicts": {name: lr_cases.state_dict_after("torch", name) for name in lr_cases.CASES},
    }
    with open(GOLDEN, "w") as f:
        json.dump(golden, f, sort_keys=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {GOLDEN}")
    np.savez_compressed(SWA_GOLDEN, **swa_cases.golden_arrays())
    print(f"wrote {SWA_GOLDEN}")


if __name__ == "__main__":
    main()

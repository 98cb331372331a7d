"""Print the largest differences from live torch.optim, per optimizer, dtype and backend.

    python tests/parity_report.py              # every optimizer of the table
    python tests/parity_report.py RMSprop      # only the cases of these optimizers

Runs every case of the table through the parity harness (tests/harness.py) on NumPy
and array-api-strict, against the reference torch (2.14.1; 2.13.0 gives the same table), and reports the
largest error relative to each array's largest magnitude, also in float32 ulps
(2**-23) or float64 ulps (2**-52). The README's parity table comes from this.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness
from cases import CASES


def main(optimizers: list[str]) -> None:
    import array_api_strict
    import torch

    torch.set_num_threads(1)
    cases = [case for case in CASES if not optimizers or case.optimizer in optimizers]
    worst: dict[tuple[str, str, str], float] = {}
    for case in cases:
        for dtype in case.dtypes:
            inputs = harness.make_inputs(dtype)
            reference = harness.run_torch(case, inputs)
            for xp in (np, array_api_strict):
                error = harness.max_relative_error(harness.run_arrayopt(case, xp, inputs), reference)
                key = (case.optimizer, dtype, xp.__name__)
                worst[key] = max(worst.get(key, 0.0), error)
    print(f"torch {torch.__version__}, {len(cases)} cases, {harness.STEPS} steps")
    print(f"{'optimizer':<11} {'dtype':<11} {'backend':<17} {'max rel. error':>14} {'ulps':>6}")
    for (optimizer, dtype, backend), error in sorted(worst.items()):
        ulp = 2.0**-23 if dtype in ("float32", "complex64") else 2.0**-52
        print(f"{optimizer:<11} {dtype:<11} {backend:<17} {error:14.2e} {error / ulp:6.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])

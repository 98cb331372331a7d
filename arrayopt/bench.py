"""``python -m arrayopt.bench``: run the benchmark suite, ``benchmarks/bench.py`` of an arrayopt checkout.

The suite lives in the repository, not in the package (see ``benchmarks/README.md``);
this entry point finds it next to this package's source tree, or in the current
directory (an installed arrayopt run from a checkout's root), and runs it with the
same arguments::

    python -m arrayopt.bench --quick --optimizers Adam,SGD --threads 1
    python -m arrayopt.bench --gpu
"""

import os
import runpy
import sys


def suite_path() -> str:
    """Where ``benchmarks/bench.py`` is; SystemExit with a hint if it is nowhere to be found."""
    source_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for root in (source_root, os.getcwd()):
        path = os.path.join(root, "benchmarks", "bench.py")
        if os.path.isfile(path):
            return path
    raise SystemExit(
        "python -m arrayopt.bench runs benchmarks/bench.py of an arrayopt checkout: run it from the root of "
        "one (the installed arrayopt is the one measured)"
    )


if __name__ == "__main__":
    path = suite_path()
    sys.argv[0] = path
    runpy.run_path(path, run_name="__main__")

"""arrayopt: torch.optim's optimizers for NumPy, CuPy and array-API arrays.

>>> import numpy as np
>>> import arrayopt
>>> w = arrayopt.Parameter(np.zeros(3), name="w")
>>> opt = arrayopt.Adam([w], lr=0.1)
>>> w.grad = w.data - np.array([1.0, 2.0, 3.0])     # gradient of 0.5 |w - c|^2
>>> opt.step()

Same class names, arguments, defaults, ``param_groups`` and ``state_dict`` layout as
torch.optim 2.14, and the same numbers. Each update rule is one elementwise function
at the top of ``arrayopt/optimizers/<name>.py``; ``arrayopt.backends`` runs it on
NumPy, on CuPy (one fused kernel) or on any array-API library.
"""

import importlib
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"


def _mount_source_backends() -> None:
    # Installed, arrayopt/backends/ is inside this package. In a source checkout the
    # folder is ../backends (setup.cfg maps it), so when this copy of arrayopt is the
    # checkout itself (not installed, or found first because the current directory is
    # on sys.path, as with `python -m` from the repository root), load that folder as
    # arrayopt.backends rather than fail half-way through importing.
    here = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.join(os.path.dirname(here), "backends")
    init = os.path.join(folder, "__init__.py")
    if "arrayopt.backends" in sys.modules or os.path.isdir(os.path.join(here, "backends")):
        return
    if importlib.util.find_spec("arrayopt.backends") is not None or not os.path.isfile(init):
        return
    spec = importlib.util.spec_from_file_location("arrayopt.backends", init, submodule_search_locations=[folder])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["arrayopt.backends"] = module
    spec.loader.exec_module(module)


_mount_source_backends()

from arrayopt import backends, functional, lr_scheduler, swa_utils, utils  # noqa: E402
from arrayopt.flat import ParameterDict, ParameterList  # noqa: E402
from arrayopt.minimize import OptimizeResult, minimize  # noqa: E402
from arrayopt.optimizer import ElementwiseOptimizer, Optimizer  # noqa: E402
from arrayopt.optimizers import (  # noqa: E402
    ASGD,
    LBFGS,
    SGD,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Muon,
    NAdam,
    RAdam,
    RMSprop,
    Rprop,
    SparseAdam,
)
from arrayopt.parameter import Parameter  # noqa: E402
from arrayopt.sparse import SparseGrad  # noqa: E402

if TYPE_CHECKING:
    from arrayopt import batch
    from arrayopt.checkpoint import load, load_into, save

# Imported on first use (PEP 562), so that ``import arrayopt`` loads no zipfile, json
# or hashlib for checkpoints nobody asked for yet, nor the batched fitting engines
# (arrayopt.batch) before a script asks for them: a script's first step comes sooner.
_LAZY = {"load": "arrayopt.checkpoint", "load_into": "arrayopt.checkpoint", "save": "arrayopt.checkpoint"}


def __getattr__(name: str) -> Any:
    if name == "batch":
        value = importlib.import_module("arrayopt.batch")
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'arrayopt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ASGD",
    "LBFGS",
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "ElementwiseOptimizer",
    "Muon",
    "NAdam",
    "OptimizeResult",
    "Optimizer",
    "Parameter",
    "ParameterDict",
    "ParameterList",
    "RAdam",
    "RMSprop",
    "Rprop",
    "SparseAdam",
    "SparseGrad",
    "__version__",
    "backends",
    "batch",
    "functional",
    "load",
    "load_into",
    "lr_scheduler",
    "minimize",
    "save",
    "swa_utils",
    "utils",
]

"""The one table of optimizer cases every generic test runs over.

Each case is an optimizer class name and constructor keywords, and exercises a
distinct path through its update rule (flags) or its constructor (array
hyper-parameters). Later optimizers add their rows here.
"""

from dataclasses import dataclass, field
from typing import Any

#: every dtype the parity harness knows
ALL_DTYPES = ("float64", "float32", "complex128", "complex64")


@dataclass(frozen=True)
class Case:
    optimizer: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: names of keyword arguments passed as 0-d arrays (tensors for torch)
    array_hyper: tuple[str, ...] = ()
    #: does weight decay or another term move the parameter when the gradient is zero?
    moves_on_zero_grad: bool = False
    #: the dtypes torch supports for this case (e.g. no complex for Adafactor)
    dtypes: tuple[str, ...] = ALL_DTYPES
    #: float32/complex64 tolerance against torch, in units of 2**-23 of the entry's scale
    #: (float64 is always held to 1e-12)
    ulps: float = 4.0

    @property
    def id(self) -> str:
        parts = [self.optimizer]
        for key, value in self.kwargs.items():
            if isinstance(value, bool):
                parts.append(key if value else f"no_{key}")
            elif isinstance(value, tuple):
                parts.append(f"{key}={'_'.join(str(x) for x in value)}")
            else:
                parts.append(f"{key}={value}")
        if self.array_hyper:
            parts.append("arrays=" + "_".join(self.array_hyper))
        return "-".join(parts)

    def __str__(self) -> str:
        return self.id


CASES: list[Case] = [
    # SGD
    Case("SGD"),
    Case("SGD", {"lr": 0.1}),
    Case("SGD", {"lr": 0.1, "maximize": True}),
    Case("SGD", {"lr": 0.1, "weight_decay": 0.1}, moves_on_zero_grad=True),
    Case("SGD", {"lr": 0.1, "momentum": 0.9}),
    Case("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    Case("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    Case("SGD", {"lr": 0.1, "momentum": 0.5, "dampening": 0.5, "weight_decay": 0.05}, moves_on_zero_grad=True),
    Case(
        "SGD",
        {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05, "maximize": True},
        moves_on_zero_grad=True,
    ),
    Case(
        "SGD",
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1},
        array_hyper=("lr", "weight_decay"),
        moves_on_zero_grad=True,
    ),
    # Adam
    Case("Adam"),
    Case("Adam", {"lr": 0.05}),
    Case("Adam", {"lr": 0.05, "amsgrad": True}),
    Case("Adam", {"lr": 0.05, "maximize": True}),
    Case("Adam", {"lr": 0.05, "weight_decay": 0.1}, moves_on_zero_grad=True),
    Case("Adam", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}, moves_on_zero_grad=True),
    Case(
        "Adam",
        {"lr": 0.05, "weight_decay": 0.1, "amsgrad": True, "maximize": True},
        moves_on_zero_grad=True,
    ),
    Case(
        "Adam",
        {"lr": 0.05, "weight_decay": 0.1, "amsgrad": True, "decoupled_weight_decay": True},
        moves_on_zero_grad=True,
    ),
    Case("Adam", {"lr": 0.05, "betas": (0.3, 0.8), "eps": 1e-3}),
    Case("Adam", {"lr": 0.05, "betas": (0.9, 0.99)}, array_hyper=("lr", "betas")),
    # AdamW
    Case("AdamW", moves_on_zero_grad=True),
    Case("AdamW", {"lr": 0.05, "weight_decay": 0.1}, moves_on_zero_grad=True),
    Case("AdamW", {"lr": 0.05, "weight_decay": 0.0}),
    Case("AdamW", {"lr": 0.05, "amsgrad": True}, moves_on_zero_grad=True),
    Case("AdamW", {"lr": 0.05, "maximize": True, "amsgrad": True, "weight_decay": 0.2}, moves_on_zero_grad=True),
    Case("AdamW", {"lr": 0.05}, array_hyper=("lr",), moves_on_zero_grad=True),
    # Adadelta. torch's CPU sqrt (MKL's vector math) is not correctly rounded: measured up to
    # 0.75 ulp off in float32, where NumPy's is exact. Adadelta squares the ratio of two roots
    # into acc_delta, which then differs from torch by up to ~5 ulps: these rows allow 8.
    Case("Adadelta", ulps=8),
    Case("Adadelta", {"lr": 0.5, "rho": 0.8, "eps": 1e-5}, ulps=8),
    Case("Adadelta", {"lr": 0.5, "maximize": True}, ulps=8),
    Case("Adadelta", {"lr": 0.5, "weight_decay": 0.1}, moves_on_zero_grad=True, ulps=8),
    Case(
        "Adadelta",
        {"lr": 0.5, "weight_decay": 0.1, "maximize": True, "foreach": True},
        moves_on_zero_grad=True,
        ulps=8,
    ),
    Case(
        "Adadelta",
        {"lr": 0.5, "rho": 0.8, "eps": 1e-5, "weight_decay": 0.1},
        array_hyper=("lr", "rho", "eps", "weight_decay"),
        moves_on_zero_grad=True,
        ulps=8,
    ),
    # Adamax
    Case("Adamax"),
    Case("Adamax", {"lr": 0.05}),
    Case("Adamax", {"lr": 0.05, "maximize": True}),
    Case("Adamax", {"lr": 0.05, "weight_decay": 0.1}, moves_on_zero_grad=True),
    Case("Adamax", {"lr": 0.05, "weight_decay": 0.1, "maximize": True, "foreach": True}, moves_on_zero_grad=True),
    Case("Adamax", {"lr": 0.05, "betas": (0.3, 0.8), "eps": 1e-3}),
    Case(
        "Adamax",
        {"lr": 0.05, "betas": (0.9, 0.99), "eps": 1e-6, "weight_decay": 0.1},
        array_hyper=("lr", "betas", "eps", "weight_decay"),
        moves_on_zero_grad=True,
    ),
    # RMSprop
    Case("RMSprop"),
    Case("RMSprop", {"lr": 0.01, "maximize": True}),
    Case("RMSprop", {"lr": 0.01, "weight_decay": 0.1}, moves_on_zero_grad=True),
    Case("RMSprop", {"lr": 0.01, "momentum": 0.9}),
    Case("RMSprop", {"lr": 0.01, "centered": True}),
    Case("RMSprop", {"lr": 0.01, "alpha": 0.3, "eps": 1e-3, "centered": True}),
    Case(
        "RMSprop",
        {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 0.1, "maximize": True, "foreach": True},
        moves_on_zero_grad=True,
    ),
    Case(
        "RMSprop",
        {"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.1, "momentum": 0.9, "centered": True},
        array_hyper=("lr", "alpha", "eps", "weight_decay", "momentum"),
        moves_on_zero_grad=True,
    ),
    # Rprop
    Case("Rprop"),
    Case("Rprop", {"lr": 0.05}),
    Case("Rprop", {"lr": 0.05, "maximize": True}),
    Case("Rprop", {"lr": 0.05, "etas": (0.3, 1.5), "step_sizes": (1e-3, 0.2)}),
    Case("Rprop", {"lr": 0.01, "etas": (0.4, 1.1), "step_sizes": (0.02, 1.0), "foreach": True}),
    Case("Rprop", {"lr": 0.05, "step_sizes": (1e-3, 0.2)}, array_hyper=("lr", "step_sizes")),
    # torch writes tensor etas into the sign tensor, which must then have their dtype (float64)
    Case("Rprop", {"lr": 0.05, "etas": (0.4, 1.3)}, array_hyper=("etas",), dtypes=("float64", "complex128")),
]

OPTIMIZERS = sorted({case.optimizer for case in CASES})


def by_dtype(dtypes: tuple[str, ...] = ALL_DTYPES, cases: list[Case] | None = None) -> list[tuple[Case, str]]:
    """``(case, dtype)`` pairs for ``pytest.mark.parametrize``, the dtypes a case supports only."""
    return [(case, dtype) for case in (CASES if cases is None else cases) for dtype in dtypes if dtype in case.dtypes]

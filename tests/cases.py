"""The one table of optimizer cases every generic test runs over.

Each case is an optimizer class name and constructor keywords, and exercises a
distinct path through its update rule (flags) or its constructor (array
hyper-parameters). Later optimizers add their rows here.
"""

from dataclasses import dataclass, field
from typing import Any

#: every dtype the parity harness knows
ALL_DTYPES = ("float64", "float32", "complex128", "complex64")
REAL_DTYPES = ("float64", "float32")


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
    #: harness parameters (indices into ``harness.SHAPES``) never given a gradient
    #: (torch's Adafactor divides 0 by 0 on the empty one)
    without_grad: tuple[int, ...] = ()
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
    # Adagrad
    Case("Adagrad"),
    Case("Adagrad", {"lr": 0.1}),
    Case("Adagrad", {"lr": 0.1, "lr_decay": 0.05}),
    Case("Adagrad", {"lr": 0.1, "weight_decay": 0.1}, moves_on_zero_grad=True),
    Case("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5, "eps": 1e-3}),
    Case("Adagrad", {"lr": 0.1, "maximize": True}),
    Case(
        "Adagrad",
        {"lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.05, "initial_accumulator_value": 0.2, "maximize": True},
        moves_on_zero_grad=True,
    ),
    Case("Adagrad", {"lr": 0.1, "lr_decay": 0.01}, array_hyper=("lr",)),
    # ASGD: the decay term lambd * eta moves the parameter on a zero gradient; t0 below
    # 12 starts the averaging (mu != 1) within the run.
    Case("ASGD", moves_on_zero_grad=True),
    Case("ASGD", {"lr": 0.05}, moves_on_zero_grad=True),
    Case("ASGD", {"lr": 0.05, "maximize": True}, moves_on_zero_grad=True),
    Case("ASGD", {"lr": 0.05, "weight_decay": 0.1}, moves_on_zero_grad=True),
    Case("ASGD", {"lr": 0.05, "t0": 3.5}, moves_on_zero_grad=True),
    Case("ASGD", {"lr": 0.05, "lambd": 0.0, "t0": 0.0}),
    Case(
        "ASGD",
        {"lr": 0.05, "lambd": 0.01, "alpha": 0.5, "t0": 2.0, "weight_decay": 0.05, "maximize": True},
        moves_on_zero_grad=True,
    ),
    Case("ASGD", {"lr": 0.05, "lambd": 0.01, "t0": 3.0}, array_hyper=("lr",), moves_on_zero_grad=True),
    # NAdam
    Case("NAdam"),
    Case("NAdam", {"lr": 0.05}),
    Case("NAdam", {"lr": 0.05, "maximize": True}),
    Case("NAdam", {"lr": 0.05, "weight_decay": 0.1}, moves_on_zero_grad=True),
    Case("NAdam", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}, moves_on_zero_grad=True),
    Case("NAdam", {"lr": 0.05, "momentum_decay": 0.1}),
    Case("NAdam", {"lr": 0.05, "betas": (0.3, 0.8), "eps": 1e-3}),
    Case(
        "NAdam",
        {"lr": 0.05, "momentum_decay": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        moves_on_zero_grad=True,
    ),
    Case("NAdam", {"lr": 0.05, "weight_decay": 0.1}, array_hyper=("lr",), moves_on_zero_grad=True),
    # RAdam: with the default betas steps 1-5 are unrectified, 6-12 rectified; with
    # betas (0.3, 0.8) rectification starts at step 7 and the lerp weight is >= 0.5.
    Case("RAdam"),
    Case("RAdam", {"lr": 0.05}),
    Case("RAdam", {"lr": 0.05, "maximize": True}),
    Case("RAdam", {"lr": 0.05, "weight_decay": 0.1}, moves_on_zero_grad=True),
    Case("RAdam", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}, moves_on_zero_grad=True),
    Case("RAdam", {"lr": 0.05, "betas": (0.3, 0.8), "eps": 1e-3}),
    Case(
        "RAdam",
        {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        moves_on_zero_grad=True,
    ),
    Case("RAdam", {"lr": 0.05, "weight_decay": 0.1}, array_hyper=("lr",), moves_on_zero_grad=True),
    # Adafactor: real dtypes only; the empty parameter gets no gradient (torch raises on it)
    Case("Adafactor", dtypes=REAL_DTYPES, without_grad=(4,)),
    Case("Adafactor", {"lr": 0.05}, dtypes=REAL_DTYPES, without_grad=(4,)),
    Case("Adafactor", {"lr": 0.05, "maximize": True}, dtypes=REAL_DTYPES, without_grad=(4,)),
    Case(
        "Adafactor", {"lr": 0.05, "weight_decay": 0.1}, moves_on_zero_grad=True, dtypes=REAL_DTYPES, without_grad=(4,)
    ),
    Case("Adafactor", {"lr": 0.05, "eps": (0.1, 0.01)}, dtypes=REAL_DTYPES, without_grad=(4,)),
    Case("Adafactor", {"lr": 0.05, "beta2_decay": -0.5}, dtypes=REAL_DTYPES, without_grad=(4,)),
    Case("Adafactor", {"lr": 0.05, "d": 2.0}, dtypes=REAL_DTYPES, without_grad=(4,)),
    Case(
        "Adafactor",
        {"lr": 0.2, "beta2_decay": -0.6, "eps": (1e-2, 0.1), "d": 1.5, "weight_decay": 0.05, "maximize": True},
        moves_on_zero_grad=True,
        dtypes=REAL_DTYPES,
        without_grad=(4,),
    ),
    Case("Adafactor", {"lr": 0.05}, array_hyper=("lr",), dtypes=REAL_DTYPES, without_grad=(4,)),
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

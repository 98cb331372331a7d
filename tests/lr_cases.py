"""The scheduler cases shared by tests/test_lr_scheduler.py and tests/make_golden.py.

Every case is written once against a namespace ``m`` holding the scheduler classes, so
the same line builds ``torch.optim.lr_scheduler.StepLR`` or
``arrayopt.lr_scheduler.StepLR``. Runs use one optimizer with two param groups (the
second with its own lr and momentum), step the optimizer then the scheduler, and
record after construction and after every step:

* ``lr``: each group's ``lr`` (read from the param groups),
* ``last_lr``: ``get_last_lr()``,
* ``momentum``: each group's ``momentum``, or ``betas[0]`` for Adam,
* ``warnings``: the text of every warning raised during the run.

Trajectories are plain lists of Python floats, so they compare exactly and store
exactly in JSON (``tests/golden/lr_scheduler.json``, written by make_golden.py schedulers).
"""

import math
import pickle
import types
import warnings
from collections.abc import Callable
from typing import Any

STEPS = 60  # scheduler steps per run
RESUME_AFTER = 23  # resume tests: state_dict round trip after this many steps
GROUP_LRS = (0.1, 0.05)


# -- the two libraries ------------------------------------------------------------------


def namespace(lib: str) -> types.SimpleNamespace:
    """The scheduler classes (and SWALR) of ``lib``: ``"torch"`` or ``"arrayopt"``."""
    if lib == "torch":
        from torch.optim import lr_scheduler, swa_utils
    else:
        from arrayopt import lr_scheduler, swa_utils
    names = {name: getattr(lr_scheduler, name) for name in lr_scheduler.__all__ if not name.startswith("_")}
    return types.SimpleNamespace(**names, SWALR=swa_utils.SWALR, lib=lib)


def make_optimizer(lib: str, kind: str, lr_array: bool = False, xp: Any = None) -> Any:
    """An SGD (with momentum) or Adam over two param groups of dummy parameters.

    With ``lr_array`` each group's lr is a 0-d float64 array (a tensor for torch; an
    array of namespace ``xp``, NumPy by default, for arrayopt).
    """
    if lib == "torch":
        import torch

        params = [torch.nn.Parameter(torch.zeros(3, dtype=torch.float64)) for _ in range(2)]
        optim = torch.optim

        def scalar(x: float) -> Any:
            return torch.tensor(x, dtype=torch.float64)
    else:
        import numpy as np

        import arrayopt

        xp = np if xp is None else xp
        params = [arrayopt.Parameter(xp.zeros(3, dtype=xp.float64)) for _ in range(2)]
        optim = arrayopt

        def scalar(x: float) -> Any:
            return xp.asarray(x, dtype=xp.float64)

    lrs = [scalar(lr) if lr_array else lr for lr in GROUP_LRS]
    if kind == "sgd":
        groups = [{"params": [params[0]], "lr": lrs[0], "momentum": 0.9}, {"params": [params[1]], "lr": lrs[1]}]
        return optim.SGD(groups, lr=0.2, momentum=0.5)
    if kind == "adam":
        groups = [{"params": [params[0]], "lr": lrs[0]}, {"params": [params[1]], "lr": lrs[1], "betas": (0.8, 0.99)}]
        return optim.Adam(groups, lr=0.2)
    if kind == "sgd_plain":  # no momentum in the defaults' values (the key exists)
        return optim.SGD([{"params": [params[0]], "lr": lrs[0]}, {"params": [params[1]], "lr": lrs[1]}])
    raise ValueError(kind)


def as_float(value: Any) -> float:
    return float(value)


def snapshot(opt: Any, sched: Any) -> dict[str, Any]:
    groups = opt.param_groups
    momentum = None
    if "momentum" in groups[0]:
        momentum = [as_float(g["momentum"]) for g in groups]
    elif "betas" in groups[0]:
        momentum = [as_float(g["betas"][0]) for g in groups]
    return {
        "lr": [as_float(g["lr"]) for g in groups],
        "last_lr": [as_float(v) for v in sched.get_last_lr()],
        "momentum": momentum,
    }


def _append(out: dict[str, list[Any]], snap: dict[str, Any]) -> None:
    for key, value in snap.items():
        out.setdefault(key, []).append(value)


# -- step-by-step cases -------------------------------------------------------------------

# name -> (optimizer kind, factory(m, opt) -> scheduler). Lambdas are named functions of
# this module so torch and arrayopt call the very same Python code.


def _decay_95(epoch: int) -> float:
    return 0.95**epoch


def _inverse(epoch: int) -> float:
    return 1 / (1 + epoch)


def _wiggle(epoch: int) -> float:
    return 0.97 if epoch % 3 else 1.02


def _half_life(x: float) -> float:
    return 0.5 ** (x / 40)


class Warmup:
    """A callable object (its ``__dict__`` goes into the lambda schedulers' state_dict)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def __call__(self, epoch: int) -> float:
        return min(1.0, (epoch + 1) / self.epochs)


Factory = Callable[[Any, Any], Any]


def resumed(make: Factory) -> Factory:
    """Build with ``last_epoch=k`` on groups that already have an ``initial_lr`` (a restart)."""

    def factory(m: Any, opt: Any) -> Any:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"] * 2
        return make(m, opt)

    return factory


CASES: dict[str, tuple[str, Factory]] = {
    "LambdaLR-two": ("sgd", lambda m, o: m.LambdaLR(o, [_decay_95, _inverse])),
    "LambdaLR-object": ("adam", lambda m, o: m.LambdaLR(o, Warmup(10))),
    "MultiplicativeLR": ("sgd", lambda m, o: m.MultiplicativeLR(o, [_wiggle, _decay_95])),
    "StepLR": ("sgd", lambda m, o: m.StepLR(o, step_size=7, gamma=0.5)),
    "StepLR-default-gamma": ("adam", lambda m, o: m.StepLR(o, 10)),
    "MultiStepLR": ("sgd", lambda m, o: m.MultiStepLR(o, milestones=[30, 10, 10, 45], gamma=0.3)),
    "MultiStepLR-zero": ("sgd", lambda m, o: m.MultiStepLR(o, milestones=[0, 2, 2])),
    "ConstantLR": ("sgd", lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=8)),
    "ConstantLR-default": ("adam", lambda m, o: m.ConstantLR(o)),
    "LinearLR": ("sgd", lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=0.9, total_iters=20)),
    "LinearLR-default": ("sgd", lambda m, o: m.LinearLR(o)),
    "LinearLR-decay": ("adam", lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=45)),
    "ExponentialLR": ("sgd", lambda m, o: m.ExponentialLR(o, gamma=0.93)),
    "PolynomialLR": ("sgd", lambda m, o: m.PolynomialLR(o, total_iters=40, power=2.0)),
    "PolynomialLR-default": ("adam", lambda m, o: m.PolynomialLR(o)),
    "PolynomialLR-root": ("sgd", lambda m, o: m.PolynomialLR(o, total_iters=55, power=0.5)),
    "CosineAnnealingLR": ("sgd", lambda m, o: m.CosineAnnealingLR(o, T_max=13, eta_min=0.001)),
    "CosineAnnealingLR-zero-min": ("adam", lambda m, o: m.CosineAnnealingLR(o, T_max=50)),
    "CosineAnnealingWarmRestarts": ("sgd", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=7)),
    "CosineAnnealingWarmRestarts-mult": (
        "sgd",
        lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.002),
    ),
    "CyclicLR-triangular": (
        "sgd",
        lambda m, o: m.CyclicLR(o, base_lr=[0.01, 0.005], max_lr=[0.1, 0.05], step_size_up=5, step_size_down=8),
    ),
    "CyclicLR-triangular2": (
        "sgd",
        lambda m, o: m.CyclicLR(
            o, 0.001, 0.1, step_size_up=6, mode="triangular2", base_momentum=[0.7, 0.75], max_momentum=0.95
        ),
    ),
    "CyclicLR-exp_range-adam": (
        "adam",
        lambda m, o: m.CyclicLR(o, 0.002, [0.08, 0.04], step_size_up=4, mode="exp_range", gamma=0.97),
    ),
    "CyclicLR-scale_fn-iterations": (
        "sgd",
        lambda m, o: m.CyclicLR(o, 0.01, 0.2, step_size_up=9, scale_fn=_half_life, scale_mode="iterations"),
    ),
    "CyclicLR-no-momentum": (
        "sgd_plain",
        lambda m, o: m.CyclicLR(o, 0.01, 0.2, step_size_up=3, step_size_down=11, cycle_momentum=False),
    ),
    "OneCycleLR-cos": ("sgd", lambda m, o: m.OneCycleLR(o, max_lr=[0.1, 0.2], total_steps=STEPS)),
    "OneCycleLR-linear-three-phase-adam": (
        "adam",
        lambda m, o: m.OneCycleLR(
            o, 0.5, epochs=6, steps_per_epoch=10, pct_start=0.25, anneal_strategy="linear", three_phase=True
        ),
    ),
    "OneCycleLR-momentum-lists": (
        "sgd",
        lambda m, o: m.OneCycleLR(
            o,
            0.3,
            total_steps=STEPS + 5,
            base_momentum=[0.8, 0.85],
            max_momentum=[0.9, 0.99],
            div_factor=10.0,
            final_div_factor=100.0,
        ),
    ),
    "OneCycleLR-no-momentum": (
        "adam",
        lambda m, o: m.OneCycleLR(o, 0.01, total_steps=STEPS, cycle_momentum=False, pct_start=0.5),
    ),
    "SWALR-cos": ("sgd", lambda m, o: m.SWALR(o, swa_lr=0.01, anneal_epochs=10)),
    "SWALR-linear-lists": (
        "sgd",
        lambda m, o: m.SWALR(o, swa_lr=[0.02, 0.3], anneal_epochs=17, anneal_strategy="linear"),
    ),
    "SWALR-zero-epochs": ("adam", lambda m, o: m.SWALR(o, swa_lr=0.005, anneal_epochs=0)),
    "SequentialLR-warmup-cosine": (
        "sgd",
        lambda m, o: m.SequentialLR(
            o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=20)], milestones=[5]
        ),
    ),
    "SequentialLR-three": (
        "adam",
        lambda m, o: m.SequentialLR(
            o,
            [m.ConstantLR(o, factor=0.1, total_iters=2), m.ExponentialLR(o, 0.9), m.StepLR(o, 5, 0.5)],
            milestones=[4, 20],
        ),
    ),
    "SequentialLR-to-SWALR": (
        "sgd",
        lambda m, o: m.SequentialLR(
            o, [m.CosineAnnealingLR(o, T_max=30, eta_min=0.01), m.SWALR(o, swa_lr=0.02, anneal_epochs=5)], [30]
        ),
    ),
    "SequentialLR-of-chained": (
        "sgd",
        lambda m, o: m.SequentialLR(
            o,
            [m.ChainedScheduler([m.ConstantLR(o, 0.5, total_iters=6), m.ExponentialLR(o, 0.9)]), m.LinearLR(o)],
            milestones=[15],
        ),
    ),
    "ChainedScheduler-constant-exponential": (
        "sgd",
        lambda m, o: m.ChainedScheduler([m.ConstantLR(o, factor=0.5, total_iters=10), m.ExponentialLR(o, 0.95)]),
    ),
    "ChainedScheduler-warmup-cosine-affine": (
        "adam",
        lambda m, o: m.ChainedScheduler(
            [m.LinearLR(o, start_factor=0.2, total_iters=8), m.CosineAnnealingLR(o, T_max=17, eta_min=0.003)]
        ),
    ),
    "ChainedScheduler-cyclic-step": (
        "sgd",
        lambda m, o: m.ChainedScheduler([m.CyclicLR(o, 0.01, 0.1, step_size_up=5), m.StepLR(o, 9, 0.7)], optimizer=o),
    ),
    "StepLR-last_epoch": ("sgd", resumed(lambda m, o: m.StepLR(o, 4, 0.5, last_epoch=11))),
    "LinearLR-last_epoch": ("sgd", resumed(lambda m, o: m.LinearLR(o, 0.2, total_iters=30, last_epoch=6))),
    "ConstantLR-last_epoch": ("sgd", resumed(lambda m, o: m.ConstantLR(o, 0.5, total_iters=5, last_epoch=4))),
    "PolynomialLR-last_epoch": ("adam", resumed(lambda m, o: m.PolynomialLR(o, 50, 1.5, last_epoch=9))),
    "CosineAnnealingLR-last_epoch": ("sgd", resumed(lambda m, o: m.CosineAnnealingLR(o, 20, 0.01, last_epoch=7))),
    "LambdaLR-last_epoch": ("sgd", resumed(lambda m, o: m.LambdaLR(o, _inverse, last_epoch=3))),
    "CosineAnnealingWarmRestarts-last_epoch": (
        "sgd",
        resumed(lambda m, o: m.CosineAnnealingWarmRestarts(o, 6, 2, last_epoch=8)),
    ),
    "CyclicLR-last_epoch": (
        "sgd",
        resumed(lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=4, last_epoch=9)),
    ),
}


def run_case(
    lib: str, name: str, *, resume_after: int | None = None, xp: Any = None, lr_array: bool = False
) -> dict[str, Any]:
    """Run ``CASES[name]`` for ``STEPS`` steps; with ``resume_after`` resume from state dicts there.

    With ``lr_array`` the groups' lrs are 0-d arrays (tensors for torch), and the run
    also records whether each group still holds the very array object it started with.
    """
    kind, factory = CASES[name]
    m = namespace(lib)
    out: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = make_optimizer(lib, kind, xp=xp, lr_array=lr_array)
        sched = factory(m, opt)
        lr_objects = [g["lr"] for g in opt.param_groups]
        _append(out, snapshot(opt, sched))
        for step in range(STEPS):
            opt.step()
            sched.step()
            _append(out, snapshot(opt, sched))
            if resume_after is not None and step + 1 == resume_after:
                # through pickle, as a checkpoint file would
                opt_state = pickle.loads(pickle.dumps(opt.state_dict()))
                sched_state = pickle.loads(pickle.dumps(sched.state_dict()))
                opt = make_optimizer(lib, kind, xp=xp, lr_array=lr_array)
                sched = factory(m, opt)
                opt.load_state_dict(opt_state)
                sched.load_state_dict(sched_state)
                lr_objects = [g["lr"] for g in opt.param_groups]
    out["warnings"] = [torch_text(str(w.message)) for w in caught]
    out["lr_kept"] = [g["lr"] is lr for g, lr in zip(opt.param_groups, lr_objects, strict=True)]
    return out


# -- step(epoch): closed forms and the schedulers without one --------------------------------

EPOCHS = [1, 2, 5, 3, 0, 7, 13, 14, 26, 27, 40, 39, 52, 60, 8, 100]

EPOCH_CASES: dict[str, tuple[str, Factory, list[Any]]] = {
    "StepLR": ("sgd", CASES["StepLR"][1], EPOCHS),
    "MultiStepLR": ("sgd", CASES["MultiStepLR"][1], EPOCHS),
    "ConstantLR": ("sgd", CASES["ConstantLR"][1], EPOCHS),
    "LinearLR": ("sgd", CASES["LinearLR"][1], EPOCHS),
    "ExponentialLR": ("sgd", CASES["ExponentialLR"][1], EPOCHS),
    "PolynomialLR": ("sgd", CASES["PolynomialLR"][1], EPOCHS),
    "CosineAnnealingLR": ("sgd", CASES["CosineAnnealingLR"][1], EPOCHS),
    "LambdaLR": ("sgd", CASES["LambdaLR-two"][1], EPOCHS),
    "MultiplicativeLR": ("sgd", CASES["MultiplicativeLR"][1], EPOCHS),
    "CyclicLR": ("sgd", CASES["CyclicLR-triangular"][1], EPOCHS),
    "OneCycleLR": ("adam", lambda m, o: m.OneCycleLR(o, 0.1, total_steps=100), EPOCHS),
    "SWALR": ("sgd", CASES["SWALR-cos"][1], EPOCHS),
    "CosineAnnealingWarmRestarts-mult": (
        "sgd",
        CASES["CosineAnnealingWarmRestarts-mult"][1],
        [0.5, 1, 2.25, 3, 8.75, 9, 20, 21.5, 45, 44, 100, 3.5, 0],
    ),
    "CosineAnnealingWarmRestarts": ("sgd", CASES["CosineAnnealingWarmRestarts"][1], [1, 6, 7, 7.5, 15, 3, 0, 70.25]),
}


def run_epoch_case(lib: str, name: str) -> dict[str, Any]:
    """Construct, then call ``step(epoch)`` for each epoch of the case (optimizer stepped first)."""
    kind, factory, epochs = EPOCH_CASES[name]
    opt = make_optimizer(lib, kind)
    out: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sched = factory(namespace(lib), opt)
        _append(out, snapshot(opt, sched))
        for epoch in epochs:
            opt.step()
            sched.step(epoch)
            _append(out, snapshot(opt, sched))
    out["warnings"] = [torch_text(str(w.message)) for w in caught]
    return out


# -- ReduceLROnPlateau ------------------------------------------------------------------------


def _metrics(kind: str) -> list[float]:
    """A loss-like sequence: falls, plateaus with noise, falls again, plateaus (60 values)."""
    values = []
    for i in range(STEPS):
        base = 2.0 * math.exp(-i / 8) if i < 20 else (0.3 if i < 35 else 0.3 * math.exp(-(i - 35) / 6))
        noise = 0.004 * math.sin(1.7 * i)
        values.append(base + noise + 0.05)
    if kind == "max":
        values = [1.0 - v for v in values]
    return values


PLATEAU_CASES: dict[str, tuple[str, dict[str, Any], list[float]]] = {
    "min-rel": ("sgd", {"patience": 2, "cooldown": 1, "min_lr": [1e-3, 5e-4]}, _metrics("min")),
    "min-abs": ("adam", {"threshold": 0.01, "threshold_mode": "abs", "patience": 3, "factor": 0.5}, _metrics("min")),
    "max-rel": ("sgd", {"mode": "max", "threshold": 0.002, "patience": 1, "cooldown": 3}, _metrics("max")),
    "max-abs": (
        "sgd",
        {"mode": "max", "threshold_mode": "abs", "threshold": 0.02, "patience": 2, "min_lr": 0.004, "factor": 0.3},
        _metrics("max"),
    ),
    "min-default": ("adam", {}, _metrics("min")),
    "eps-blocks": ("sgd", {"patience": 0, "factor": 0.5, "eps": 0.02}, [1.0] * 30),
    "cooldown-long": (
        "sgd",
        {"patience": 0, "cooldown": 5, "min_lr": [0.0, 0.01]},
        [1.0 + 0.001 * i for i in range(40)],
    ),
}


def run_plateau_case(lib: str, name: str, *, resume_after: int | None = None, xp: Any = None) -> dict[str, Any]:
    kind, kwargs, metrics = PLATEAU_CASES[name]
    m = namespace(lib)
    out: dict[str, Any] = {"num_bad_epochs": [], "cooldown_counter": [], "best": []}
    opt = make_optimizer(lib, kind, xp=xp)
    sched = m.ReduceLROnPlateau(opt, **kwargs)
    _append(out, snapshot(opt, sched))
    for step, metric in enumerate(metrics):
        opt.step()
        sched.step(metric)
        _append(out, snapshot(opt, sched))
        out["num_bad_epochs"].append(sched.num_bad_epochs)
        out["cooldown_counter"].append(sched.cooldown_counter)
        out["best"].append(sched.best)
        if resume_after is not None and step + 1 == resume_after:
            opt_state = pickle.loads(pickle.dumps(opt.state_dict()))
            sched_state = pickle.loads(pickle.dumps(sched.state_dict()))
            opt = make_optimizer(lib, kind, xp=xp)
            sched = m.ReduceLROnPlateau(opt, **kwargs)
            opt.load_state_dict(opt_state)
            sched.load_state_dict(sched_state)
    return out


# -- constructions that fail -------------------------------------------------------------------

ERROR_CASES: dict[str, tuple[str, Factory]] = {
    "not-an-optimizer": ("sgd", lambda m, o: m.StepLR(object(), 3)),
    "resume-without-initial_lr": ("sgd", lambda m, o: m.ExponentialLR(o, 0.9, last_epoch=4)),
    "LambdaLR-length": ("sgd", lambda m, o: m.LambdaLR(o, [_inverse])),
    "LambdaLR-not-callable": ("sgd", lambda m, o: m.LambdaLR(o, 3)),
    "MultiplicativeLR-not-callable": ("sgd", lambda m, o: m.MultiplicativeLR(o, [_inverse, 0.5])),
    "MultiplicativeLR-length": ("sgd", lambda m, o: m.MultiplicativeLR(o, (_inverse, _inverse, _inverse))),
    "ConstantLR-factor": ("sgd", lambda m, o: m.ConstantLR(o, factor=1.5)),
    "ConstantLR-negative": ("sgd", lambda m, o: m.ConstantLR(o, factor=-0.1)),
    "LinearLR-start": ("sgd", lambda m, o: m.LinearLR(o, start_factor=0)),
    "LinearLR-end": ("sgd", lambda m, o: m.LinearLR(o, end_factor=1.5)),
    "StepLR-zero": ("sgd", lambda m, o: m.StepLR(o, 0).step()),
    "CAWR-T_0": ("sgd", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=0)),
    "CAWR-T_0-float": ("sgd", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=2.0)),
    "CAWR-T_mult": ("sgd", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=1.5)),
    "CAWR-eta_min": ("sgd", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=2, eta_min="0")),
    "CAWR-negative-epoch": ("sgd", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=2).step(-1)),
    "CyclicLR-base-length": ("sgd", lambda m, o: m.CyclicLR(o, [0.1], 1.0)),
    "CyclicLR-max-length": ("sgd", lambda m, o: m.CyclicLR(o, 0.1, [1.0, 2.0, 3.0])),
    "CyclicLR-mode": ("sgd", lambda m, o: m.CyclicLR(o, 0.1, 1.0, mode="square")),
    "CyclicLR-momentum-length": ("sgd", lambda m, o: m.CyclicLR(o, 0.1, 1.0, base_momentum=[0.1])),
    "CyclicLR-not-an-optimizer": ("sgd", lambda m, o: m.CyclicLR(None, 0.1, 1.0)),
    "OneCycleLR-total_steps": ("sgd", lambda m, o: m.OneCycleLR(o, 0.1, total_steps=0)),
    "OneCycleLR-total_steps-float": ("sgd", lambda m, o: m.OneCycleLR(o, 0.1, total_steps=5.0)),
    "OneCycleLR-epochs": ("sgd", lambda m, o: m.OneCycleLR(o, 0.1, epochs=-1, steps_per_epoch=3)),
    "OneCycleLR-steps_per_epoch": ("sgd", lambda m, o: m.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=0)),
    "OneCycleLR-neither": ("sgd", lambda m, o: m.OneCycleLR(o, 0.1, epochs=2)),
    "OneCycleLR-pct_start": ("sgd", lambda m, o: m.OneCycleLR(o, 0.1, total_steps=10, pct_start=1)),
    "OneCycleLR-anneal": ("sgd", lambda m, o: m.OneCycleLR(o, 0.1, total_steps=10, anneal_strategy="quad")),
    "OneCycleLR-phase-zero": ("sgd", lambda m, o: m.OneCycleLR(o, 0.1, total_steps=10, pct_start=0.1)),
    "OneCycleLR-too-many-steps": ("sgd", lambda m, o: [s.step() for s in [m.OneCycleLR(o, 0.1, total_steps=3)] * 4]),
    "OneCycleLR-max_lr-length": ("sgd", lambda m, o: m.OneCycleLR(o, [0.1, 0.2, 0.3], total_steps=10)),
    "ReduceLROnPlateau-factor": ("sgd", lambda m, o: m.ReduceLROnPlateau(o, factor=1.0)),
    "ReduceLROnPlateau-factor-first": ("sgd", lambda m, o: m.ReduceLROnPlateau(None, factor=2.0)),
    "ReduceLROnPlateau-type": ("sgd", lambda m, o: m.ReduceLROnPlateau([1, 2])),
    "ReduceLROnPlateau-min_lr": ("sgd", lambda m, o: m.ReduceLROnPlateau(o, min_lr=[0.1])),
    "ReduceLROnPlateau-mode": ("sgd", lambda m, o: m.ReduceLROnPlateau(o, mode="median")),
    "ReduceLROnPlateau-threshold_mode": ("sgd", lambda m, o: m.ReduceLROnPlateau(o, threshold_mode="pct")),
    "SequentialLR-empty": ("sgd", lambda m, o: m.SequentialLR(o, [], [])),
    "SequentialLR-no-optimizer": ("sgd", lambda m, o: m.SequentialLR(o, [m.StepLR(o, 2), object()], [3])),
    "SequentialLR-plateau": ("sgd", lambda m, o: m.SequentialLR(o, [m.ReduceLROnPlateau(o)], [])),
    "SequentialLR-milestones": ("sgd", lambda m, o: m.SequentialLR(o, [m.StepLR(o, 2), m.StepLR(o, 3)], [1, 2])),
    "SequentialLR-step-epoch": ("sgd", lambda m, o: m.SequentialLR(o, [m.StepLR(o, 2)], []).step(3)),
    "ChainedScheduler-empty": ("sgd", lambda m, o: m.ChainedScheduler([])),
    "ChainedScheduler-plateau": ("sgd", lambda m, o: m.ChainedScheduler([m.StepLR(o, 2), m.ReduceLROnPlateau(o)])),
    "SWALR-anneal_strategy": ("sgd", lambda m, o: m.SWALR(o, 0.1, anneal_strategy="cosine")),
    "SWALR-anneal_epochs": ("sgd", lambda m, o: m.SWALR(o, 0.1, anneal_epochs=1.7)),
    "SWALR-anneal_epochs-negative": ("sgd", lambda m, o: m.SWALR(o, 0.1, anneal_epochs=-1)),
    "SWALR-length": ("sgd", lambda m, o: m.SWALR(o, [0.1, 0.2, 0.3])),
    "momentum-missing": ("adam", lambda m, o: m.CyclicLR(_no_momentum_optimizer(m.lib), 0.1, 1.0)),
}


def _no_momentum_optimizer(lib: str) -> Any:
    """An optimizer whose defaults have neither momentum nor betas."""
    if lib == "torch":
        import torch

        return torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(2))])
    import numpy as np

    import arrayopt

    class Plain(arrayopt.Optimizer):
        def __init__(self, params: Any) -> None:
            super().__init__(params, {"lr": 0.01})

    return Plain([arrayopt.Parameter(np.zeros(2))])


def run_error_case(lib: str, name: str) -> tuple[str, str] | None:
    """``(exception class name, message)`` the case raises, or None."""
    kind, factory = ERROR_CASES[name]
    opt = make_optimizer(lib, kind)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            factory(namespace(lib), opt)
    except Exception as exc:  # every case is meant to raise; which and how is the result
        return type(exc).__name__, str(exc)
    return None


# -- warnings ------------------------------------------------------------------------------

#: torch's texts of the warnings arrayopt words in its own terms (they sent the reader to
#: pytorch.org, PyTorch's issue tracker and "PyTorch 1.1.0"), from torch's
#: torch/optim/lr_scheduler.py; the comparisons with torch and the golden file map
#: arrayopt's texts back to these.
_TORCH_ORDER_URL = "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
_TORCH_TEXTS = {
    "STEP_ORDER_WARNING": (
        "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
        "In PyTorch 1.1.0 and later, you should call them in the opposite order: "
        "`optimizer.step()` before `lr_scheduler.step()`.  Failure to do this "
        "will result in PyTorch skipping the first value of the learning rate schedule. "
        f"See more details at {_TORCH_ORDER_URL}"
    ),
    "STEP_OVERRIDDEN_WARNING": (
        "Seems like `optimizer.step()` has been overridden after learning rate scheduler "
        "initialization. Please, make sure to call `optimizer.step()` before "
        f"`lr_scheduler.step()`. See more details at {_TORCH_ORDER_URL}"
    ),
    "EPOCH_DEPRECATION_WARNING": (
        "The epoch parameter in `scheduler.step()` was not necessary and is being "
        "deprecated where possible. Please use `scheduler.step()` to step the "
        "scheduler. During the deprecation, if epoch is different from None, the "
        "closed form is used instead of the new chainable form, where available. "
        "Please open an issue if you are unable to replicate your use case: "
        "https://github.com/pytorch/pytorch/issues/new/choose."
    ),
}


def torch_text(message: str) -> str:
    """``message``, or torch's text of it where arrayopt words a warning its own way."""
    from arrayopt.lr_scheduler import base

    for name, text in _TORCH_TEXTS.items():
        if message == getattr(base, name):
            return text
    return message


def _order_wrong(m: Any, opt: Any) -> None:
    sched = m.StepLR(opt, 3)
    sched.step()
    opt.step()
    sched.step()


def _order_right(m: Any, opt: Any) -> None:
    sched = m.ExponentialLR(opt, 0.9)
    for _ in range(3):
        opt.step()
        sched.step()


def _step_replaced(m: Any, opt: Any) -> None:
    sched = m.LinearLR(opt)
    original = opt.step
    opt.step = lambda *args, **kwargs: original(*args, **kwargs)
    opt.step()
    sched.step()


def _step_replaced_before(m: Any, opt: Any) -> None:
    original = opt.step
    opt.step = types.MethodType(lambda self, *args, **kwargs: original(*args, **kwargs), opt)
    sched = m.LinearLR(opt)
    opt.step()
    sched.step()


def _two_schedulers_one_optimizer(m: Any, opt: Any) -> None:
    first, second = m.StepLR(opt, 3), m.ConstantLR(opt)
    first.step()  # before any optimizer step: warns
    opt.step()
    second.step()  # the flag is the optimizer's: no warning


WARNING_CASES: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
    "order-wrong": ("sgd", _order_wrong),
    "order-right": ("sgd", _order_right),
    "step-replaced": ("sgd", _step_replaced),
    "step-replaced-before": ("sgd", _step_replaced_before),
    "two-schedulers": ("sgd", _two_schedulers_one_optimizer),
    "epoch": ("sgd", lambda m, o: (o.step(), m.StepLR(o, 3).step(4))),
    "get_lr-outside-step": ("sgd", lambda m, o: m.CosineAnnealingLR(o, 10).get_lr()),
    "SWALR-get_lr": ("sgd", lambda m, o: m.SWALR(o, 0.01).get_lr()),
    "plateau-epoch": ("sgd", lambda m, o: m.ReduceLROnPlateau(o).step(1.0, 5)),
    "CAWR-epoch-silent": ("sgd", lambda m, o: m.CosineAnnealingWarmRestarts(o, 5).step(2.5)),
    "CAWR-order-silent": ("sgd", lambda m, o: m.CosineAnnealingWarmRestarts(o, 5).step()),
    "SequentialLR-order": ("sgd", lambda m, o: m.SequentialLR(o, [m.StepLR(o, 2), m.StepLR(o, 3)], [4]).step()),
    "ChainedScheduler-order": ("sgd", lambda m, o: m.ChainedScheduler([m.StepLR(o, 2), m.LinearLR(o)]).step()),
}


def run_warning_case(lib: str, name: str) -> list[list[str]]:
    """``[category name, message]`` of every warning the case raises, in order."""
    kind, body = WARNING_CASES[name]
    opt = make_optimizer(lib, kind)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        body(namespace(lib), opt)
    return [[w.category.__name__, torch_text(str(w.message))] for w in caught]


# -- state_dict contents -------------------------------------------------------------------


def summarize(value: Any) -> Any:
    """A JSON-able summary of a state_dict: numbers, strings and containers as they are,
    arrays and tensors as floats, functions by kind."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): summarize(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [summarize(v) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return float(value)
    if callable(value):
        return "<callable>"
    return f"<{type(value).__name__}>"


def state_dict_after(lib: str, name: str, steps: int = 5) -> Any:
    kind, factory = CASES[name]
    opt = make_optimizer(lib, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = factory(namespace(lib), opt)
        for _ in range(steps):
            opt.step()
            sched.step()
    return summarize(sched.state_dict())

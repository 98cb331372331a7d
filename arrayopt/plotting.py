"""Pictures of learning-rate schedules: what a scheduler will do over the next N steps.

:func:`schedule_history` computes the values (no plotting library needed) and
:func:`plot_schedule` draws them with matplotlib, an optional dependency
(``pip install arrayopt[plot]``) imported only when a plot is asked for.

Both run the schedule on a copy of the scheduler and of its optimizer's param
groups: the scheduler you pass, its optimizer and the Parameters are left exactly as
they were, so you can look at a schedule before, or in the middle of, training.

Example:
    >>> import numpy as np, arrayopt
    >>> from arrayopt.lr_scheduler import StepLR
    >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
    >>> schedule_history(StepLR(opt, step_size=2, gamma=0.5), steps=5)["lr"]
    [[1.0], [1.0], [0.5], [0.5], [0.25]]
"""

import copy
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

from arrayopt.lr_scheduler.base import LRScheduler
from arrayopt.lr_scheduler.plateau import ReduceLROnPlateau

__all__ = ["plot_schedule", "schedule_history"]

_INSTALL_HINT = "pip install arrayopt[plot]"


def _check_scheduler(scheduler: Any, caller: str) -> None:
    if not isinstance(scheduler, LRScheduler):
        kind = f"{type(scheduler).__module__}.{type(scheduler).__qualname__}"
        raise TypeError(
            f"{caller} expects an arrayopt scheduler (an arrayopt.lr_scheduler.LRScheduler such as StepLR, "
            f"ReduceLROnPlateau or arrayopt.swa_utils.SWALR), got {kind}"
        )


def _check_steps(steps: Any, caller: str) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"{caller}: steps must be a positive int, got {steps!r}")
    if steps <= 0:
        raise ValueError(f"{caller}: steps must be a positive int, got {steps}")
    return int(steps)


def _check_metrics(scheduler: LRScheduler, metrics: Any, steps: int, caller: str) -> list[float] | None:
    plateau = isinstance(scheduler, ReduceLROnPlateau)
    if metrics is None:
        if plateau:
            raise ValueError(
                f"{caller}: ReduceLROnPlateau follows a metric; pass metrics=, one value per step "
                f"after the first ({steps - 1} values for steps={steps})"
            )
        return None
    if not plateau:
        raise ValueError(f"{caller}: metrics only drive ReduceLROnPlateau, not {type(scheduler).__name__}")
    if isinstance(metrics, (str, bytes)) or not isinstance(metrics, Sequence):
        raise TypeError(f"{caller}: metrics must be a sequence of numbers, got {type(metrics).__name__}")
    if len(metrics) < steps - 1:
        raise ValueError(f"{caller}: {len(metrics)} metrics for steps={steps}; need at least {steps - 1}")
    try:
        return [float(m) for m in metrics[: steps - 1]]
    except (TypeError, ValueError):
        raise TypeError(f"{caller}: metrics must be numbers") from None


def _optimizers_of(scheduler: Any) -> list[Any]:
    found = [scheduler.optimizer]
    for child in getattr(scheduler, "_schedulers", ()):
        found.extend(_optimizers_of(child))
    return found


def _detached_copy(scheduler: LRScheduler) -> LRScheduler:
    """A deep copy of ``scheduler`` and its optimizer(s), sharing the Parameters and their state.

    Stepping the copy changes only copied param groups; the arrays (parameters and
    optimizer state, possibly large) are not duplicated.
    """
    memo: dict[int, Any] = {}
    for optimizer in _optimizers_of(scheduler):
        memo[id(optimizer.state)] = optimizer.state
        for group in optimizer.param_groups:
            for p in group["params"]:
                memo[id(p)] = p
    return copy.deepcopy(scheduler, memo)


def schedule_history(scheduler: LRScheduler, steps: int, *, metrics: Sequence[float] | None = None) -> dict[str, Any]:
    """The learning rate (and momentum) of every param group for the next ``steps`` optimizer steps.

    Entry ``k`` is what the optimizer's ``k``-th step from now would use: entry 0 is
    the current value, and each later one follows one more ``scheduler.step()``
    (``scheduler.step(metrics[k - 1])`` for ReduceLROnPlateau). The scheduler, its
    optimizer and the Parameters are not changed (the schedule runs on a copy).

    Args:
        scheduler: any arrayopt scheduler, composites and SWALR included.
        steps: number of values per group (a positive int).
        metrics: for ReduceLROnPlateau only, at least ``steps - 1`` metric values.

    Returns:
        ``{"lr": [[group 0, group 1, ...] per step], "momentum": same or None,
        "momentum_name": "momentum", "beta1" or None}``; momentum is the group's
        ``momentum``, else ``betas[0]``, else None.

    Raises:
        TypeError: ``scheduler`` is not an arrayopt scheduler, ``steps`` not an int,
            ``metrics`` not numbers.
        ValueError: ``steps <= 0``; missing, short or misplaced ``metrics``; and
            whatever the scheduler raises itself (OneCycleLR past ``total_steps``).

    Example:
        >>> import numpy as np, arrayopt
        >>> from arrayopt.lr_scheduler import ReduceLROnPlateau, StepLR
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0, momentum=0.9)
        >>> schedule_history(StepLR(opt, step_size=2, gamma=0.5), steps=3)
        {'lr': [[1.0], [1.0], [0.5]], 'momentum': [[0.9], [0.9], [0.9]], 'momentum_name': 'momentum'}
        >>> plateau = ReduceLROnPlateau(opt, factor=0.5, patience=0)
        >>> schedule_history(plateau, steps=4, metrics=[1.0, 2.0, 3.0])["lr"]  # the loss rises
        [[1.0], [1.0], [0.5], [0.25]]
        >>> opt.param_groups[0]["lr"]  # unchanged
        1.0
    """
    caller = "schedule_history"
    _check_scheduler(scheduler, caller)
    steps = _check_steps(steps, caller)
    values = _check_metrics(scheduler, metrics, steps, caller)
    simulated = _detached_copy(scheduler)
    optimizer = simulated.optimizer
    first = optimizer.param_groups[0]
    name = "momentum" if "momentum" in first else ("beta1" if "betas" in first else None)
    lrs: list[list[float]] = []
    momentums: list[list[float]] = []

    def record() -> None:
        lrs.append([float(group["lr"]) for group in optimizer.param_groups])
        if name == "momentum":
            momentums.append([float(group["momentum"]) for group in optimizer.param_groups])
        elif name == "beta1":
            momentums.append([float(group["betas"][0]) for group in optimizer.param_groups])

    step: Any = simulated.step  # ReduceLROnPlateau.step takes the metric
    with warnings.catch_warnings():
        # The copy's optimizer never steps: the order warnings would be noise here.
        warnings.simplefilter("ignore", UserWarning)
        record()
        for k in range(steps - 1):
            if values is not None:
                step(values[k])
            else:
                step()
            record()
    return {"lr": lrs, "momentum": momentums if name is not None else None, "momentum_name": name}


def _matplotlib() -> Any:
    try:
        import matplotlib
        import matplotlib.pyplot
    except ImportError as exc:
        raise ImportError(f"arrayopt.plotting needs matplotlib, an optional dependency: {_INSTALL_HINT}") from exc
    return matplotlib


def plot_schedule(
    scheduler: LRScheduler,
    steps: int,
    *,
    metrics: Sequence[float] | None = None,
    ax: Any = None,
    momentum: bool | None = None,
    title: str | None = None,
    path: Any = None,
) -> Any:
    """Draw the learning rate of each param group (and the momentum) over the next ``steps`` steps.

    The values are :func:`schedule_history`'s: the scheduler and its optimizer are
    not changed. Learning rates are solid lines on the left axis; momentum (or
    ``betas[0]``) dashed on a right-hand axis.

    Args:
        scheduler: any arrayopt scheduler.
        steps: number of optimizer steps to show (a positive int).
        metrics: for ReduceLROnPlateau only, at least ``steps - 1`` metric values.
        ax: a matplotlib ``Axes`` to draw into; default: a new figure.
        momentum: draw momentum too: True, False, or None (default) to draw it when
            it changes during the shown steps (CyclicLR, OneCycleLR).
        title: the axes title; default: the scheduler's class name.
        path: if given, the figure is saved there (any format matplotlib writes).

    Returns:
        The ``Axes`` drawn into.

    Raises:
        ImportError: matplotlib is not installed (``pip install arrayopt[plot]``).
        TypeError, ValueError: as :func:`schedule_history`; ``ax`` not an Axes;
            ``momentum=True`` for an optimizer without momentum or betas.

    Example:
        >>> import numpy as np, arrayopt
        >>> from matplotlib.figure import Figure  # matplotlib is needed here: pip install arrayopt[plot]
        >>> from arrayopt.lr_scheduler import StepLR
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> ax = plot_schedule(StepLR(opt, step_size=2, gamma=0.5), steps=4, ax=Figure().add_subplot())
        >>> ax.get_title(), ax.get_lines()[0].get_ydata().tolist()
        ('StepLR', [1.0, 1.0, 0.5, 0.5])
    """
    caller = "plot_schedule"
    _check_scheduler(scheduler, caller)
    _check_steps(steps, caller)
    if momentum not in (None, True, False):
        raise TypeError(f"{caller}: momentum must be True, False or None, got {momentum!r}")
    mpl = _matplotlib()
    if ax is not None and not isinstance(ax, mpl.axes.Axes):
        raise TypeError(f"{caller}: ax must be a matplotlib Axes, got {type(ax).__name__}")
    history = schedule_history(scheduler, steps, metrics=metrics)
    if momentum and history["momentum"] is None:
        raise ValueError(f"{caller}: momentum=True, but the optimizer's param groups have no momentum or betas")
    momentums = history["momentum"]
    if momentum is None:
        momentum = momentums is not None and any(row != momentums[0] for row in momentums)

    if ax is None:
        _, ax = mpl.pyplot.subplots(figsize=(6.0, 3.2), layout="constrained")
    x = list(range(steps))
    groups = len(history["lr"][0])
    colors = [f"C{i % 10}" for i in range(groups)]
    for i in range(groups):
        label = f"lr, group {i}" if groups > 1 else "lr"
        ax.plot(x, [row[i] for row in history["lr"]], color=colors[i], label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title(title if title is not None else type(scheduler).__name__)
    handles, labels = ax.get_legend_handles_labels()
    if momentum:
        twin = ax.twinx()
        name = history["momentum_name"]
        for i in range(groups):
            label = f"{name}, group {i}" if groups > 1 else name
            twin.plot(x, [row[i] for row in momentums], color=colors[i], linestyle="--", alpha=0.7, label=label)
        twin.set_ylabel(name)
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if len(handles) > 1:
        ax.legend(handles, labels, fontsize="small", loc="best")
    if path is not None:
        ax.figure.savefig(path)
    return ax

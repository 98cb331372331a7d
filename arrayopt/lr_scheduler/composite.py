"""Schedulers made of schedulers: SequentialLR (one after another) and ChainedScheduler (all at once)."""

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from arrayopt.lr_scheduler.base import LRScheduler, group_values, set_group_value
from arrayopt.lr_scheduler.plateau import ReduceLROnPlateau
from arrayopt.optimizer import Optimizer

__all__ = ["ChainedScheduler", "SequentialLR"]


def _check_children(owner: str, optimizer: Optimizer, schedulers: Sequence[LRScheduler]) -> None:
    for index, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"{owner} at index {index} should have `optimizer` as its attribute.")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(
                f"{owner} does not support `ReduceLROnPlateau` scheduler as it "
                "requires additional kwargs to be specified when calling `step`, "
                f"but got one at index {index} in the given schedulers sequence."
            )
        if optimizer != scheduler.optimizer:
            raise ValueError(
                f"{owner} expects all schedulers to belong to the same optimizer, but "
                f"got scheduler {scheduler.__class__.__name__} at index {index} has {scheduler.optimizer}, "
                f"which is different from {optimizer.__class__.__name__}."
            )


class _Composite(LRScheduler):
    """state_dict handling of the composites: each child's state_dict, nested."""

    _schedulers: Sequence[LRScheduler]

    def state_dict(self) -> dict[str, Any]:
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [child.state_dict() for child in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update({key: value for key, value in state_dict.items() if key != "_schedulers"})
        for child, child_state in zip(self._schedulers, state_dict["_schedulers"], strict=False):
            child.load_state_dict(child_state)


class SequentialLR(_Composite):
    r"""Run schedulers one after another, switching at milestone epochs.

    Scheduler :math:`i` drives the learning rate for epochs
    :math:`[m_{i-1}, m_i)` (with :math:`m_{-1} = 0`). At a milestone the next scheduler
    restarts from its own epoch 0, through its closed form where it has one (so it
    starts from ``base_lr``, e.g. LinearLR from :math:`\eta_0 s`), else from its
    ``get_lr`` at epoch 0.

    Construction resets every group's lr to its ``initial_lr``, takes one epoch back
    from every child (the children already applied their epoch 0 when they were
    made) and replays the initial step of the first one only. As in torch, this class
    does not run ``LRScheduler.__init__`` (it has no ``base_lrs``), and its ``step()``
    takes no epoch.

    Args:
        optimizer: the optimizer every child schedules.
        schedulers: the schedulers, in order (no ReduceLROnPlateau).
        milestones: the epochs at which to switch, one fewer than the schedulers.
        last_epoch: index of the last epoch, -1 for a new schedule. Default: -1.

    Example:
        >>> import numpy as np, arrayopt
        >>> from arrayopt.lr_scheduler import ConstantLR, ExponentialLR
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> warmup = ConstantLR(opt, factor=0.1, total_iters=2)
        >>> decay = ExponentialLR(opt, gamma=0.5)
        >>> sched = SequentialLR(opt, [warmup, decay], milestones=[3])
        >>> lrs = [round(sched.get_last_lr()[0], 4)]
        >>> for _ in range(6):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(sched.get_last_lr()[0])
        >>> lrs
        [0.1, 0.1, 1.0, 1.0, 0.5, 0.25, 0.125]
    """

    def __init__(
        self, optimizer: Optimizer, schedulers: list[LRScheduler], milestones: list[int], last_epoch: int = -1
    ) -> None:
        if len(schedulers) < 1:
            raise ValueError(f"{self.__class__.__name__} expects at least one scheduler, but got no scheduler.")
        _check_children(self.__class__.__name__, optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more "
                f"than the number of milestone points, but got number of schedulers {len(schedulers)} and the "
                f"number of milestones to be equal to {len(milestones)}"
            )
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer
        for group in self.optimizer.param_groups:
            set_group_value(group, "lr", group["initial_lr"])
        self.recursive_undo()
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def recursive_undo(self, sched: Any = None) -> None:
        """Take one epoch back from every scheduler inside this one (nested ones too)."""
        scheds = self if sched is None else sched
        if hasattr(scheds, "_schedulers"):
            for child in scheds._schedulers:
                self.recursive_undo(child)
        elif hasattr(scheds, "last_epoch"):
            scheds.last_epoch -= 1

    def step(self) -> None:  # type: ignore[override]
        """Advance one epoch, handing over to the next scheduler at a milestone."""
        self.last_epoch += 1
        index = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self._milestones[index - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_Composite):
    r"""Step several schedulers together, each acting on the lr the previous one left.

    Because the chainable forms multiply the current ``group["lr"]``, stepping them
    together composes them: e.g. ConstantLR(0.5) with ExponentialLR(0.9) gives
    :math:`\eta_e = \eta_0\, 0.9^e \cdot (0.5 \text{ while } e < T)`.

    Args:
        schedulers: the schedulers (no ReduceLROnPlateau), all on one optimizer.
        optimizer: that optimizer; defaults to the first scheduler's.

    As in torch, this class does not run ``LRScheduler.__init__`` and its ``step()``
    takes no epoch; ``get_last_lr()`` reads the optimizer after the last child.

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> from arrayopt.lr_scheduler import ExponentialLR, MultiStepLR
        >>> sched = ChainedScheduler([ExponentialLR(opt, gamma=0.5), MultiStepLR(opt, milestones=[2], gamma=0.1)])
        >>> lrs = [round(sched.get_last_lr()[0], 4)]
        >>> for _ in range(3):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 4))
        >>> lrs
        [1.0, 0.5, 0.025, 0.0125]
    """

    def __init__(self, schedulers: Sequence[LRScheduler], optimizer: Optimizer | None = None) -> None:
        if len(schedulers) < 1:
            raise ValueError(
                f"{self.__class__.__name__} expects at least one scheduler to be chained, but got no scheduler."
            )
        optimizer = optimizer or schedulers[0].optimizer
        _check_children(self.__class__.__name__, optimizer, schedulers)
        self._schedulers = schedulers
        self.optimizer = optimizer
        self._last_lr = group_values(self._schedulers[-1].optimizer, "lr")

    def step(self) -> None:  # type: ignore[override]
        """Step every scheduler, in order."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = group_values(self._schedulers[-1].optimizer, "lr")

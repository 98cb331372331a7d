"""``LRScheduler``: the base every learning-rate scheduler builds on (torch.optim 2.14).

A scheduler owns no learning rate of its own: it rewrites ``group["lr"]`` in its
optimizer's param groups. Construction records each group's ``initial_lr`` and
immediately applies the schedule's value at epoch 0 (the *initial step*); every
``step()`` then advances ``last_epoch`` by one and writes the next values.

Learning rates may be Python floats or 1-element arrays of any library arrayopt
supports (torch's tensor learning rates). An array ``lr`` is updated in place, so
the array object stays the one the optimizer holds; ``base_lrs``, ``initial_lr``
and ``get_last_lr()`` hold copies, never aliases.
"""

import numbers
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from arrayopt.backends import get_backend, is_array
from arrayopt.optimizer import Optimizer

__all__ = ["EPOCH_DEPRECATION_WARNING", "LRScheduler"]

# torch's texts, where they send the reader to PyTorch's issue tracker, documentation or
# version history, say it in arrayopt's terms (issue 19).
EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available "
    "(as in torch.optim; see the table in the arrayopt.lr_scheduler docstring)."
)

_ORDER_HELP = "See the arrayopt.lr_scheduler module docstring (the training loop)."
STEP_OVERRIDDEN_WARNING = (
    "Seems like `optimizer.step()` has been overridden after learning rate scheduler "
    "initialization. Please, make sure to call `optimizer.step()` before "
    f"`lr_scheduler.step()`. {_ORDER_HELP}"
)
STEP_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
    "Call `optimizer.step()` first and `lr_scheduler.step()` after it (the order torch.optim "
    "has required since its version 1.1.0): in the other order the first value of the "
    f"learning rate schedule is skipped. {_ORDER_HELP}"
)
GET_LR_WARNING = "To get the last learning rate computed by the scheduler, please use `get_last_lr()`."

# The optimizer attribute recording which ``step`` function was current when the first
# scheduler attached its tracking hook (torch marks its wrapper instead).
_TRACKED_STEP = "_lr_scheduler_tracked_step"


# -- values that may be floats or arrays ---------------------------------------------


def is_array_value(value: Any) -> bool:
    """True for an array hyper-parameter (torch's tensor lr); NumPy scalars are numbers."""
    return is_array(value) and not isinstance(value, numbers.Number)


def copy_value(value: Any) -> Any:
    """``value`` itself if it is a number, a copy if it is an array (never an alias)."""
    if is_array_value(value):
        return get_backend(value).xp.asarray(value, copy=True)
    return value


def group_values(optimizer: Optimizer, key: str) -> list[Any]:
    """``group[key]`` for every param group, arrays copied (KeyError if one lacks it)."""
    return [copy_value(group[key]) for group in optimizer.param_groups]


def set_group_value(group: dict[str, Any], key: str, value: Any) -> None:
    """Set ``group[key]``; an array already there is filled in place instead (torch's ``fill_``)."""
    target = group[key]
    if not is_array_value(target):
        group[key] = value
        return
    backend = get_backend(target)
    if is_array_value(value):
        value = backend.convert(value, target, cast=True)
        value = backend.xp.reshape(value, ()) if value.ndim else value
    target[...] = value


def per_group(name: str, optimizer: Optimizer, value: Any) -> list[Any]:
    """``value`` once per param group: a list or tuple must have one entry per group."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(optimizer.param_groups):
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(value)} values, param_groups has {len(optimizer.param_groups)}."
            )
        values = list(value)
    else:
        values = [value] * len(optimizer.param_groups)
    return [copy_value(v) for v in values]


# -- detecting scheduler.step() before optimizer.step() --------------------------------


def _step_function(optimizer: Optimizer) -> Any:
    step = optimizer.step
    return getattr(step, "__func__", step)


def _note_optimizer_step(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
    optimizer._opt_called = True  # type: ignore[attr-defined]


def track_optimizer_steps(optimizer: Optimizer) -> None:
    """Make ``optimizer.step()`` record that it ran (once per optimizer).

    torch wraps the instance's ``step`` for this; arrayopt's optimizers have step
    hooks, so a pre-hook sets ``optimizer._opt_called``. The ``step`` function seen
    here is remembered: if it is replaced later (on the instance), the scheduler
    cannot know whether the replacement steps, and warns as torch does.
    """
    if _TRACKED_STEP in optimizer.__dict__:
        return
    optimizer.register_step_pre_hook(_note_optimizer_step)
    optimizer.__dict__[_TRACKED_STEP] = _step_function(optimizer)


def _check_step_order(optimizer: Optimizer) -> None:
    if optimizer.__dict__.get(_TRACKED_STEP) is not _step_function(optimizer):
        warnings.warn(STEP_OVERRIDDEN_WARNING, UserWarning, stacklevel=3)
    elif not getattr(optimizer, "_opt_called", False):
        warnings.warn(STEP_ORDER_WARNING, UserWarning, stacklevel=3)


class LRScheduler:
    r"""Base class of the learning-rate schedulers; torch.optim.lr_scheduler.LRScheduler.

    Subclasses implement :meth:`get_lr` (the *chainable* form: the next values from the
    current ``group["lr"]`` and ``last_epoch``) and may implement
    ``_get_closed_form_lr`` (the values at ``last_epoch`` from ``base_lrs`` alone),
    which ``step(epoch)`` uses.

    Args:
        optimizer: the :class:`~arrayopt.Optimizer` whose learning rates are scheduled.
        last_epoch: index of the last epoch seen. Leave it at -1 for a new schedule;
            a value ``k >= 0`` resumes one, and needs ``initial_lr`` in every group.

    Attributes:
        base_lrs: each group's ``initial_lr`` when the scheduler was made.
        last_epoch: number of ``step()`` calls since epoch 0 (0 after construction).

    Construction:
        * every group gets ``initial_lr = lr`` unless it has one (``setdefault``, so a
          second scheduler reuses the first's);
        * the epoch-0 value is applied at once (``step()`` run in *initial mode*:
          schedulers that multiply the current lr leave it unchanged then).

    Initialise a scheduler *before* loading the optimizer's state when resuming,
    since construction rewrites ``group["lr"]``.

    ``step()`` should follow ``optimizer.step()``; the first ``step()`` warns if the
    optimizer has not stepped yet (torch's warning, same text).

    Example:
        >>> import numpy as np, arrayopt
        >>> class Halving(LRScheduler):
        ...     def get_lr(self):
        ...         return [0.5 * group["lr"] for group in self.optimizer.param_groups]
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> sched = Halving(opt)
        >>> opt.step()
        >>> sched.step()
        >>> sched.get_last_lr()
        [0.25]
    """

    _get_lr_called_within_step: bool = False
    _is_initial: bool = False

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", copy_value(group["lr"]))
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when resuming scheduler "
                        "with last_epoch >= 0.\n"
                        "This typically happens when:\n"
                        "1. You're trying to resume training from a checkpoint but haven't properly loaded "
                        "the optimizer state\n"
                        "2. You're using last_epoch >= 0 for a fresh training run (not recommended)"
                    )
        self.base_lrs: list[Any] = group_values(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        track_optimizer_steps(optimizer)
        self._initial_step()

    def _initial_step(self) -> None:
        """Reset the step count and apply the current epoch's value (in initial mode)."""
        self._step_count = 0
        with self._initial_mode():
            self.step()

    @contextmanager
    def _initial_mode(self) -> Iterator[None]:
        self._is_initial = True
        try:
            yield
        finally:
            self._is_initial = False

    @contextmanager
    def _within_step(self) -> Iterator[None]:
        self._get_lr_called_within_step = True
        try:
            yield
        finally:
            self._get_lr_called_within_step = False

    # -- state ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer (the same keys as torch's state_dict)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the attributes saved by :meth:`state_dict`."""
        self.__dict__.update(state_dict)

    def get_last_lr(self) -> list[Any]:
        """The learning rates the last step wrote, one per param group (arrays copied)."""
        return self._last_lr

    # -- stepping ---------------------------------------------------------------------

    def get_lr(self) -> list[Any]:
        """The next learning rate of each param group (called by :meth:`step`).

        Use :meth:`get_last_lr` to read the current ones: called outside ``step``,
        this warns (as torch does) and computes from the current state.
        """
        raise NotImplementedError

    def _warn_if_outside_step(self) -> None:
        if not self._get_lr_called_within_step:
            warnings.warn(GET_LR_WARNING, UserWarning, stacklevel=3)

    def step(self, epoch: int | None = None) -> None:
        """Advance the schedule by one epoch and write the new learning rates.

        Args:
            epoch: deprecated (warns, as in torch). Sets ``last_epoch = epoch`` and uses
                the closed form where the scheduler has one, else :meth:`get_lr`.
        """
        if self._step_count == 1:
            _check_step_order(self.optimizer)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        closed_form: Callable[[], list[Any]] | None = getattr(self, "_get_closed_form_lr", None)
        with self._within_step():
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                values = closed_form() if closed_form is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            set_group_value(group, "lr", lr)
        self._last_lr: list[Any] = group_values(self.optimizer, "lr")


class _LRScheduler(LRScheduler):
    """Old name of :class:`LRScheduler`, kept as torch keeps it."""

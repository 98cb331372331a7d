"""ReduceLROnPlateau: cut the learning rate when a metric stops improving."""

import math
import warnings
from typing import Any, Literal, SupportsFloat

from arrayopt.lr_scheduler.base import EPOCH_DEPRECATION_WARNING, LRScheduler, group_values, set_group_value
from arrayopt.optimizer import Optimizer

__all__ = ["ReduceLROnPlateau"]


class ReduceLROnPlateau(LRScheduler):
    r"""Multiply the learning rate by ``factor`` when a metric has stopped improving.

    Each ``step(metric)``:

    1. the metric *improves* on the best value :math:`b` seen so far when

       ============  ===============================  ==========================
       mode          ``threshold_mode="rel"``          ``threshold_mode="abs"``
       ============  ===============================  ==========================
       ``"min"``     :math:`x < b\,(1 - \epsilon)`     :math:`x < b - \epsilon`
       ``"max"``     :math:`x > b\,(1 + \epsilon)`     :math:`x > b + \epsilon`
       ============  ===============================  ==========================

       (:math:`\epsilon` = ``threshold``); it then becomes the best and the count of
       bad epochs is reset, else that count grows by one;
    2. during a cooldown (``cooldown`` epochs after each reduction) bad epochs are not
       counted;
    3. once more than ``patience`` bad epochs have been counted, every group's lr
       becomes :math:`\max(\eta\,f, \eta_{\min,i})`, applied only if that lowers it by
       more than ``eps``; the cooldown starts and the count is reset.

    It has no closed form, keeps no ``initial_lr`` and, as in torch, does not run
    ``LRScheduler.__init__``: construction changes nothing in the optimizer.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        mode: ``"min"`` (the metric should fall) or ``"max"``. Default: ``"min"``.
        factor: :math:`f < 1`. Default: 0.1.
        patience: bad epochs tolerated before a reduction. Default: 10.
        threshold: :math:`\epsilon`, the significance of an improvement. Default: 1e-4.
        threshold_mode: ``"rel"`` or ``"abs"``. Default: ``"rel"``.
        cooldown: epochs to wait after a reduction. Default: 0.
        min_lr: the lower bound, a float or one per group. Default: 0.
        eps: smallest change of the lr that is applied. Default: 1e-8.

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> sched = ReduceLROnPlateau(opt, patience=1)
        >>> for loss in [5.0, 4.0, 4.0, 4.0, 4.0]:
        ...     sched.step(loss)
        >>> sched.get_last_lr()
        [0.1]

    Reference: torch.optim.lr_scheduler.ReduceLROnPlateau (torch 2.14), after the
    Keras callback of the same name.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: list[float] | float = 0,
        eps: float = 1e-8,
    ) -> None:
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.factor = factor
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        self.default_min_lr: Any
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(f"expected {len(optimizer.param_groups)} min_lrs, got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = group_values(self.optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics: SupportsFloat, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record ``metrics`` (a number or 0-d array) and reduce the lr if it has plateaued.

        Args:
            metrics: the monitored value for this epoch.
            epoch: deprecated (warns); sets ``last_epoch``.
        """
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr(epoch)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = group_values(self.optimizer, "lr")

    def _reduce_lr(self, epoch: int) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"The number of param groups in the `optimizer` ({len(groups)}) differs from when "
                    f"`ReduceLROnPlateau` was initialized ({len(self.min_lrs)}), usually due to a new param group "
                    "being added to the optimizer. Please modify the `min_lrs` field to match the length of the "
                    "`optimizer` param groups."
                )
            self.min_lrs = [self.default_min_lr] * len(groups)
        for i, group in enumerate(groups):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                set_group_value(group, "lr", new_lr)

    @property
    def in_cooldown(self) -> bool:
        """True while the cooldown after a reduction lasts."""
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min" and self.threshold_mode == "abs":
            return a < best - self.threshold
        if self.mode == "max" and self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in {"min", "max"}:
            raise ValueError("mode " + mode + " is unknown!")
        if threshold_mode not in {"rel", "abs"}:
            raise ValueError("threshold mode " + threshold_mode + " is unknown!")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the saved attributes (mode and threshold are re-checked)."""
        self.__dict__.update(state_dict)
        self._init_is_better(mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode)

"""Cosine annealing, with and without warm restarts (SGDR)."""

import math
from typing import Any

from arrayopt.lr_scheduler.base import LRScheduler, group_values, set_group_value
from arrayopt.optimizer import Optimizer

__all__ = ["CosineAnnealingLR", "CosineAnnealingWarmRestarts"]


class CosineAnnealingLR(LRScheduler):
    r"""Anneal the learning rate along a cosine from its initial value to ``eta_min``.

    Closed form (used by ``step(epoch)``):

    .. math:: \eta_e = \eta_{\min} + (\eta_0 - \eta_{\min})\,\frac{1 + \cos(\pi e / T)}{2}

    Chainable form (what ``step()`` applies, so other schedulers can act on the same
    optimizer), with :math:`T` = ``T_max``:

    .. math::
        \eta_e = \eta_{\min} + (\eta_{e-1} - \eta_{\min})\,
                 \frac{1 + \cos(\pi e / T)}{1 + \cos(\pi (e-1) / T)}

    except at :math:`e - 1 - T \equiv 0 \pmod{2T}` (just after a minimum, where that
    ratio is 0/0), where :math:`\eta_e = \eta_{e-1} + (\eta_0 - \eta_{\min})(1 - \cos(\pi/T))/2`.
    The schedule does not stop at :math:`T`: it rises again, with period :math:`2T`.
    Construction leaves the lr unchanged.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        T_max: half-period, in epochs.
        eta_min: the minimum learning rate. Default: 0.0.
        last_epoch: index of the last epoch, -1 for a new schedule. Default: -1.

    Reference: Loshchilov and Hutter, "SGDR: Stochastic Gradient Descent with Warm
    Restarts", ICLR 2017 (without the restarts; see :class:`CosineAnnealingWarmRestarts`).

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> sched = CosineAnnealingLR(opt, T_max=4, eta_min=0.0)
        >>> lrs = [round(sched.get_last_lr()[0], 4)]
        >>> for _ in range(4):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 4))
        >>> lrs
        [1.0, 0.8536, 0.5, 0.1464, 0.0]
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_if_outside_step()
        e, period, eta_min = self.last_epoch, self.T_max, self.eta_min
        groups = self.optimizer.param_groups
        if self._is_initial:
            return group_values(self.optimizer, "lr")
        if self._step_count == 1 and e > 0:
            # get_lr asked for directly after a resumed construction: closed form (torch's
            # spelling, e * pi / T, which may round differently from pi * e / T).
            return [
                eta_min + (base_lr - eta_min) * (1 + math.cos(e * math.pi / period)) / 2 for base_lr in self.base_lrs
            ]
        if (e - 1 - period) % (2 * period) == 0:
            return [
                group["lr"] + (base_lr - eta_min) * (1 - math.cos(math.pi / period)) / 2
                for base_lr, group in zip(self.base_lrs, groups, strict=True)
            ]
        ratio = (1 + math.cos(math.pi * e / period)) / (1 + math.cos(math.pi * (e - 1) / period))
        return [ratio * (group["lr"] - eta_min) + eta_min for group in groups]

    def _get_closed_form_lr(self) -> list[Any]:
        cosine = 1 + math.cos(math.pi * self.last_epoch / self.T_max)
        return [self.eta_min + (base_lr - self.eta_min) * cosine / 2 for base_lr in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing restarted every :math:`T_i` epochs, periods growing by ``T_mult``.

    .. math:: \eta = \eta_{\min} + (\eta_0 - \eta_{\min})\,\frac{1 + \cos(\pi T_{cur} / T_i)}{2}

    :math:`T_{cur}` counts epochs since the last restart; when it reaches :math:`T_i`
    it wraps to 0 and :math:`T_i \leftarrow T_i \cdot T_{mult}` (starting at
    :math:`T_0`). The lr at construction is :math:`\eta_0`.

    ``step(epoch)`` accepts any non-negative epoch, fractional ones too (to step
    within an epoch: ``scheduler.step(epoch + i / iters)``), and recomputes
    :math:`T_{cur}` and :math:`T_i` from it, without the deprecation warning. As in
    torch, this scheduler's ``step`` never checks the optimizer-step order and never
    advances ``_step_count``.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        T_0: epochs before the first restart (a positive int).
        T_mult: growth factor of the period (an int >= 1). Default: 1.
        eta_min: the minimum learning rate. Default: 0.0.
        last_epoch: index of the last epoch, -1 for a new schedule. Default: -1.

    Reference: Loshchilov and Hutter, "SGDR: Stochastic Gradient Descent with Warm
    Restarts", ICLR 2017.

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> sched = CosineAnnealingWarmRestarts(opt, T_0=3)
        >>> lrs = [round(sched.get_last_lr()[0], 4)]
        >>> for _ in range(6):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 4))
        >>> lrs
        [1.0, 0.75, 0.25, 1.0, 0.75, 0.25, 1.0]
    """

    def __init__(
        self, optimizer: Optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        if T_0 <= 0 or not isinstance(T_0, int):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not isinstance(T_mult, int):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}")
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur: float = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_if_outside_step()
        cosine = 1 + math.cos(math.pi * self.T_cur / self.T_i)
        return [self.eta_min + (base_lr - self.eta_min) * cosine / 2 for base_lr in self.base_lrs]

    def step(self, epoch: float | None = None) -> None:
        """Advance one epoch, or jump to ``epoch`` (fractional epochs allowed)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        elif epoch < 0:
            raise ValueError(f"Expected non-negative epoch, but got {epoch}")
        elif epoch >= self.T_0:
            if self.T_mult == 1:
                self.T_cur = epoch % self.T_0
            else:
                n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
                self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                self.T_i = self.T_0 * self.T_mult**n
        else:
            self.T_i = self.T_0
            self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        with self._within_step():
            values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            set_group_value(group, "lr", lr)
        self._last_lr = group_values(self.optimizer, "lr")

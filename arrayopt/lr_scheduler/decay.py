"""Schedules that scale the learning rate by a factor depending on the epoch alone.

StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR and PolynomialLR each have two
forms, as in torch: a *chainable* ``get_lr`` that scales the current ``group["lr"]`` by
the ratio between consecutive epochs (so other schedulers may act on the same
optimizer), and a *closed form* ``_get_closed_form_lr`` used by the deprecated
``step(epoch)``. Both are written with torch's Python-float expressions, in torch's
order, so the numbers match to the last bit.

Notation in the docstrings: :math:`\\eta_e` is the learning rate at epoch :math:`e`
(``last_epoch``), :math:`\\eta_0` the group's ``base_lr`` (its ``initial_lr``).
"""

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from typing import Any

from arrayopt.lr_scheduler.base import LRScheduler, group_values
from arrayopt.optimizer import Optimizer

__all__ = ["ConstantLR", "ExponentialLR", "LinearLR", "MultiStepLR", "PolynomialLR", "StepLR"]


class StepLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    .. math:: \eta_e = \eta_0 \, \gamma^{\lfloor e / \text{step\_size} \rfloor}

    Chainable form: :math:`\eta_e = \gamma\,\eta_{e-1}` when :math:`e > 0` is a multiple
    of ``step_size``, else :math:`\eta_{e-1}`. Construction leaves the lr unchanged.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        step_size: period of the decay, in epochs (0 fails at the first step with
            ZeroDivisionError, as in torch).
        gamma: decay factor. Default: 0.1.
        last_epoch: index of the last epoch, -1 for a new schedule. Default: -1.

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> sched = StepLR(opt, step_size=2, gamma=0.5)
        >>> lrs = []
        >>> for _ in range(5):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(sched.get_last_lr()[0])
        >>> lrs
        [1.0, 0.5, 0.5, 0.25, 0.25]

    Reference: the step schedule of He, Zhang, Ren and Sun, "Deep Residual Learning
    for Image Recognition", CVPR 2016.
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1) -> None:
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_if_outside_step()
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        decays = self.last_epoch // self.step_size
        return [base_lr * self.gamma**decays for base_lr in self.base_lrs]


class MultiStepLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` at each milestone epoch.

    .. math:: \eta_e = \eta_0 \, \gamma^{\#\{m \in \text{milestones} : m \le e\}}

    Milestones are counted as a multiset (any order; a repeated milestone decays
    once per occurrence). Chainable form: :math:`\eta_e = \gamma^{c(e)}\eta_{e-1}` with
    :math:`c(e)` the number of times :math:`e` occurs. A milestone 0 applies at
    construction.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        milestones: epoch indices.
        gamma: decay factor. Default: 0.1.
        last_epoch: index of the last epoch, -1 for a new schedule. Default: -1.

    Reference: as :class:`StepLR`.

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> sched = MultiStepLR(opt, milestones=[2, 5], gamma=0.1)
        >>> lrs = [round(sched.get_last_lr()[0], 4)]
        >>> for _ in range(6):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 4))
        >>> lrs
        [1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01]
    """

    def __init__(
        self, optimizer: Optimizer, milestones: Iterable[int], gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_if_outside_step()
        if self.last_epoch not in self.milestones:
            return group_values(self.optimizer, "lr")
        count = self.milestones[self.last_epoch]
        return [group["lr"] * self.gamma**count for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        passed = bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [base_lr * self.gamma**passed for base_lr in self.base_lrs]


class ConstantLR(LRScheduler):
    r"""Scale the learning rate by a constant ``factor`` until epoch ``total_iters``.

    .. math:: \eta_e = \eta_0 \left(f + [e \ge T]\,(1 - f)\right)

    Chainable form: :math:`\eta_0 \leftarrow f\,\eta` at epoch 0 (applied at
    construction), :math:`\eta \leftarrow \eta / f` at epoch :math:`T`, unchanged
    otherwise (``factor=0`` divides by zero at :math:`T`, as in torch).

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        factor: :math:`f \in [0, 1]`. Default: 1/3.
        total_iters: :math:`T`, the number of scaled epochs. Default: 5.
        last_epoch: index of the last epoch, -1 for a new schedule. Default: -1.

    Reference: constant warm-up, Goyal et al., "Accurate, Large Minibatch SGD:
    Training ImageNet in 1 Hour", 2017 (section 2.2).

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> sched = ConstantLR(opt, factor=0.5, total_iters=3)
        >>> lrs = [round(sched.get_last_lr()[0], 4)]
        >>> for _ in range(4):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 4))
        >>> lrs
        [0.5, 0.5, 0.5, 1.0, 1.0]
    """

    def __init__(
        self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5, last_epoch: int = -1
    ) -> None:
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_if_outside_step()
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return group_values(self.optimizer, "lr")
        return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        scale = self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor)
        return [base_lr * scale for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    r"""Scale the learning rate by a factor moving linearly from ``start_factor`` to ``end_factor``.

    .. math:: \eta_e = \eta_0 \left(s + (t - s)\,\frac{\min(T, e)}{T}\right)

    Chainable form: :math:`\eta \leftarrow s\,\eta` at epoch 0 (applied at
    construction), then for :math:`0 < e \le T`

    .. math:: \eta_e = \eta_{e-1}\left(1 + \frac{t - s}{T s + (e - 1)(t - s)}\right)

    and unchanged after :math:`T`.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        start_factor: :math:`s \in (0, 1]`. Default: 1/3.
        end_factor: :math:`t \in [0, 1]`. Default: 1.0.
        total_iters: :math:`T`, epochs to reach ``end_factor``. Default: 5.
        last_epoch: index of the last epoch, -1 for a new schedule. Default: -1.

    Reference: gradual (linear) warm-up, Goyal et al., "Accurate, Large Minibatch SGD:
    Training ImageNet in 1 Hour", 2017 (section 2.2).

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> sched = LinearLR(opt, start_factor=0.25, end_factor=1.0, total_iters=3)
        >>> lrs = [round(sched.get_last_lr()[0], 4)]
        >>> for _ in range(4):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 4))
        >>> lrs
        [0.25, 0.5, 0.75, 1.0, 1.0]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 and less or equal to 1.")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_if_outside_step()
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return group_values(self.optimizer, "lr")
        slope = self.end_factor - self.start_factor
        ratio = 1.0 + slope / (self.total_iters * self.start_factor + (self.last_epoch - 1) * slope)
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        scale = (
            self.start_factor
            + (self.end_factor - self.start_factor) * min(self.total_iters, self.last_epoch) / self.total_iters
        )
        return [base_lr * scale for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    r"""Multiply the learning rate by ``gamma`` every epoch.

    .. math:: \eta_e = \eta_0\,\gamma^{e}

    Chainable form: :math:`\eta_e = \gamma\,\eta_{e-1}`; construction leaves the lr
    unchanged.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        gamma: decay factor per epoch.
        last_epoch: index of the last epoch, -1 for a new schedule. Default: -1.

    Reference: torch.optim.lr_scheduler.ExponentialLR (torch 2.14), whose behaviour
    this reproduces.

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> sched = ExponentialLR(opt, gamma=0.5)
        >>> lrs = [round(sched.get_last_lr()[0], 4)]
        >>> for _ in range(3):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 4))
        >>> lrs
        [1.0, 0.5, 0.25, 0.125]
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_if_outside_step()
        # In initial mode (construction, or resuming at last_epoch=k) the lr already
        # holds this epoch's value.
        if self._is_initial:
            return group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        return [base_lr * self.gamma**self.last_epoch for base_lr in self.base_lrs]


class PolynomialLR(LRScheduler):
    r"""Decay the learning rate polynomially to zero over ``total_iters`` epochs.

    .. math:: \eta_e = \eta_0 \left(1 - \frac{\min(T, e)}{T}\right)^{p}

    Chainable form, for :math:`0 < e \le T`:

    .. math:: \eta_e = \eta_{e-1}\left(\frac{1 - e/T}{1 - (e-1)/T}\right)^{p}

    unchanged at construction and after :math:`T`.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        total_iters: :math:`T`. Default: 5.
        power: :math:`p`. Default: 1.0.
        last_epoch: index of the last epoch, -1 for a new schedule. Default: -1.

    Reference: the "poly" policy of Chen et al., "DeepLab: Semantic Image
    Segmentation with Deep Convolutional Nets, Atrous Convolution, and Fully Connected
    CRFs", TPAMI 2018.

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> sched = PolynomialLR(opt, total_iters=4, power=2.0)
        >>> lrs = [round(sched.get_last_lr()[0], 4)]
        >>> for _ in range(5):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 4))
        >>> lrs
        [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]
    """

    def __init__(self, optimizer: Optimizer, total_iters: int = 5, power: float = 1.0, last_epoch: int = -1) -> None:
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_if_outside_step()
        if self._is_initial or self.last_epoch > self.total_iters:
            return group_values(self.optimizer, "lr")
        e, total = self.last_epoch, self.total_iters
        decay_factor = ((1.0 - e / total) / (1.0 - (e - 1) / total)) ** self.power
        return [group["lr"] * decay_factor for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[Any]:
        remaining = (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
        return [base_lr * remaining for base_lr in self.base_lrs]

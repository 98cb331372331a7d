"""Schedules given by user functions of the epoch: LambdaLR and MultiplicativeLR."""

import types
from collections.abc import Callable
from typing import Any

from arrayopt.lr_scheduler.base import LRScheduler, group_values
from arrayopt.optimizer import Optimizer

__all__ = ["LambdaLR", "MultiplicativeLR"]

LrLambda = Callable[[int], float]


def _one_per_group(optimizer: Optimizer, lr_lambda: LrLambda | list[LrLambda] | tuple[LrLambda, ...]) -> list[Any]:
    if not isinstance(lr_lambda, (list, tuple)):
        return [lr_lambda] * len(optimizer.param_groups)
    if len(lr_lambda) != len(optimizer.param_groups):
        raise ValueError(f"Expected {len(optimizer.param_groups)} lr_lambdas, but got {len(lr_lambda)}")
    return list(lr_lambda)


class _LambdaState(LRScheduler):
    """state_dict handling shared by the two lambda schedulers.

    Plain functions and lambdas are not saved (``None`` in their place); a callable
    object is saved as a copy of its ``__dict__`` and restored into the object the
    loading scheduler was built with. This is torch's format.
    """

    lr_lambdas: list[LrLambda]

    def state_dict(self) -> dict[str, Any]:
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [
            None if isinstance(fn, types.FunctionType) else getattr(fn, "__dict__", {}).copy() for fn in self.lr_lambdas
        ]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Load everything else without mutating the caller's dict.
        saved = state_dict["lr_lambdas"]
        self.__dict__.update({key: value for key, value in state_dict.items() if key != "lr_lambdas"})
        for fn, attributes in zip(self.lr_lambdas, saved, strict=False):
            if attributes is not None:
                fn.__dict__.update(attributes)


class LambdaLR(_LambdaState):
    r"""Set the learning rate to the initial one times a function of the epoch.

    .. math:: \eta_e = \eta_0\,\lambda(e)

    The function is evaluated at construction (:math:`\eta = \eta_0\lambda(0)` at
    once), so a non-callable fails there, with Python's TypeError (as in torch).
    This form is its own closed form.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        lr_lambda: a function of the integer epoch, or a list of them, one per group.
        last_epoch: index of the last epoch, -1 for a new schedule. Default: -1.

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=0.5)
        >>> sched = LambdaLR(opt, lambda epoch: 1 / (1 + epoch))
        >>> opt.step(); sched.step()
        >>> sched.get_last_lr()
        [0.25]

    Reference: torch.optim.lr_scheduler.LambdaLR (torch 2.14).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: LrLambda | list[LrLambda] | tuple[LrLambda, ...],
        last_epoch: int = -1,
    ) -> None:
        self.optimizer = optimizer
        self.lr_lambdas = _one_per_group(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_if_outside_step()
        return [base_lr * lmbda(self.last_epoch) for lmbda, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)]


class MultiplicativeLR(_LambdaState):
    r"""Multiply the learning rate by a function of the epoch, every epoch.

    .. math:: \eta_e = \eta_{e-1}\,\lambda(e), \qquad \eta \text{ unchanged at construction}

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        lr_lambda: a function of the integer epoch, or a list of them, one per group
            (each must be callable: TypeError otherwise).
        last_epoch: index of the last epoch, -1 for a new schedule. Default: -1.

    Reference: torch.optim.lr_scheduler.MultiplicativeLR (torch 2.14).

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> sched = MultiplicativeLR(opt, lr_lambda=lambda epoch: 0.9)
        >>> lrs = [round(sched.get_last_lr()[0], 4)]
        >>> for _ in range(3):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 4))
        >>> lrs
        [1.0, 0.9, 0.81, 0.729]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: LrLambda | list[LrLambda] | tuple[LrLambda, ...],
        last_epoch: int = -1,
    ) -> None:
        self.optimizer = optimizer
        self.lr_lambdas = _one_per_group(optimizer, lr_lambda)
        for fn in self.lr_lambdas:
            if not callable(fn):
                raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[Any]:
        self._warn_if_outside_step()
        if self._is_initial:
            return group_values(self.optimizer, "lr")
        return [
            group["lr"] * lmbda(self.last_epoch)
            for lmbda, group in zip(self.lr_lambdas, self.optimizer.param_groups, strict=True)
        ]

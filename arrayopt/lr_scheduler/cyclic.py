"""Cyclical schedules that also cycle momentum: CyclicLR and OneCycleLR.

Both set the learning rate from ``last_epoch`` alone (no chainable form), and, with
``cycle_momentum``, move each group's momentum opposite to the learning rate: the
``momentum`` hyper-parameter for optimizers that have one (SGD), or ``betas[0]`` for
those with ``betas`` (Adam, AdamW; then ``use_beta1`` is True).
"""

import math
import types
from collections.abc import Callable
from functools import partial
from typing import Any, Literal

from arrayopt.lr_scheduler.base import LRScheduler, per_group, set_group_value
from arrayopt.optimizer import Optimizer

__all__ = ["CyclicLR", "OneCycleLR"]


def _set_momentum(group: dict[str, Any], momentum: Any, use_beta1: bool) -> None:
    if use_beta1:
        group["betas"] = (momentum, *group["betas"][1:])
    else:
        group["momentum"] = momentum


def _momentum_key_is_beta1(optimizer: Optimizer) -> bool:
    """Whether momentum cycling drives ``betas[0]`` (else ``momentum``); refuses optimizers with neither."""
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
    return "betas" in optimizer.defaults


def _start_momentum_cycle(
    optimizer: Optimizer, base_momentums: list[Any], max_momentums: list[Any], use_beta1: bool
) -> None:
    """Set each group's momentum to its maximum and record both bounds in the group."""
    for high, low, group in zip(max_momentums, base_momentums, optimizer.param_groups, strict=True):
        _set_momentum(group, high, use_beta1)
        group["max_momentum"] = high
        group["base_momentum"] = low


class CyclicLR(LRScheduler):
    r"""Cycle the learning rate between ``base_lr`` and ``max_lr`` (cyclical learning rates).

    With :math:`S = s_{up} + s_{down}` (the cycle length, in steps) and :math:`e` the
    step index:

    .. math::
        c &= \lfloor 1 + e / S \rfloor, \qquad x = 1 + e/S - c \in [0, 1) \\
        h &= \begin{cases} x / r & x \le r \\ (x - 1)/(r - 1) & x > r \end{cases},
             \qquad r = s_{up} / S \\
        \eta_e &= \eta_{base} + (\eta_{max} - \eta_{base})\, h\, \sigma(a) \\
        m_e &= m_{max} - (m_{max} - m_{base})\, h\, \sigma(a)

    where the scale :math:`\sigma` is 1 (``triangular``), :math:`2^{-(c-1)}`
    (``triangular2``), :math:`\gamma^{e}` (``exp_range``) or ``scale_fn``, and its
    argument :math:`a` is :math:`c` for ``scale_mode="cycle"``, :math:`e` for
    ``"iterations"`` (the built-in modes choose their own ``scale_mode``).

    Construction sets every group's lr to ``base_lr`` and (with ``cycle_momentum``)
    its momentum to ``max_momentum``; ``base_lrs`` are the ``base_lr`` values, whatever
    ``initial_lr`` the groups had. Step it after every batch.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        base_lr: lower bound, a float or one per group.
        max_lr: upper bound, a float or one per group.
        step_size_up: steps in the rising half. Default: 2000.
        step_size_down: steps in the falling half. Default: ``step_size_up``.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"`` (ignored when
            ``scale_fn`` is given). Default: ``"triangular"``.
        gamma: base of ``exp_range``. Default: 1.0.
        scale_fn: custom scale :math:`\sigma`, a function of one argument.
        scale_mode: ``"cycle"`` or ``"iterations"``, for ``scale_fn``. Default: ``"cycle"``.
        cycle_momentum: also cycle momentum (or ``betas[0]``). Default: True.
        base_momentum: lower momentum bound, a float or one per group. Default: 0.8.
        max_momentum: upper momentum bound, a float or one per group. Default: 0.9.
        last_epoch: index of the last step, -1 for a new schedule. Default: -1.

    ``state_dict`` omits a ``scale_fn`` that is a plain function or lambda (a callable
    object is saved as its ``__dict__``), as torch does.

    Reference: Smith, "Cyclical Learning Rates for Training Neural Networks",
    WACV 2017 (arXiv:1506.01186).

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=0.1, momentum=0.9)
        >>> sched = CyclicLR(opt, base_lr=0.1, max_lr=1.0, step_size_up=2)
        >>> lrs = [round(sched.get_last_lr()[0], 4)]
        >>> for _ in range(5):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 4))
        >>> lrs
        [0.1, 0.55, 1.0, 0.55, 0.1, 0.55]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: Literal["cycle", "iterations"] = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float = 0.8,
        max_momentum: float = 0.9,
        last_epoch: int = -1,
    ) -> None:
        # torch's checks, in torch's order, all before the optimizer is touched.
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        base_lrs = per_group("base_lr", optimizer, base_lr)
        max_lrs = per_group("max_lr", optimizer, max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        total_size = up + down
        step_ratio = up / total_size
        if mode not in ["triangular", "triangular2", "exp_range"] and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        if cycle_momentum:
            use_beta1 = _momentum_key_is_beta1(optimizer)
            base_momentums = per_group("base_momentum", optimizer, base_momentum)
            max_momentums = per_group("max_momentum", optimizer, max_momentum)

        self.optimizer = optimizer
        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups, strict=True):
                set_group_value(group, "lr", lr)
        self.max_lrs = max_lrs
        self.total_size = total_size
        self.step_ratio = step_ratio
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_ref: Callable[[float], float]
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = use_beta1
            self.base_momentums = base_momentums
            self.max_momentums = max_momentums
            if last_epoch == -1:
                _start_momentum_cycle(optimizer, base_momentums, max_momentums, use_beta1)
        super().__init__(optimizer, last_epoch)
        # After the base constructor, so groups that already had an initial_lr still
        # cycle from base_lr (as in torch).
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        if self.mode == "triangular":
            self._scale_fn_ref = self._triangular_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "triangular2":
            self._scale_fn_ref = self._triangular2_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "exp_range":
            self._scale_fn_ref = partial(self._exp_range_scale_fn, self.gamma)
            self.scale_mode = "iterations"

    def scale_fn(self, x: Any) -> float:
        """The scale :math:`\\sigma(x)`: ``scale_fn`` if given, else the mode's."""
        scale: float = self._scale_fn_custom(x) if self._scale_fn_custom is not None else self._scale_fn_ref(x)
        return scale

    @staticmethod
    def _triangular_scale_fn(x: float) -> float:
        return 1.0

    @staticmethod
    def _triangular2_scale_fn(x: float) -> float:
        scale: float = 1 / (2.0 ** (x - 1))
        return scale

    @staticmethod
    def _exp_range_scale_fn(gamma: float, x: float) -> float:
        scale: float = gamma**x
        return scale

    def get_lr(self) -> list[Any]:
        """The learning rates at ``last_epoch``; also writes the cycled momentums."""
        self._warn_if_outside_step()
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        # scale_fn is called once per value, as in torch (a stateful callable sees the same calls).
        argument = cycle if self.scale_mode == "cycle" else self.last_epoch
        lrs = []
        for base_lr, max_lr in zip(self.base_lrs, self.max_lrs, strict=True):
            base_height = (max_lr - base_lr) * scale_factor
            lrs.append(base_lr + base_height * self.scale_fn(argument))
        if self.cycle_momentum:
            momentums = []
            for base_momentum, max_momentum in zip(self.base_momentums, self.max_momentums, strict=True):
                base_height = (max_momentum - base_momentum) * scale_factor
                momentums.append(max_momentum - base_height * self.scale_fn(argument))
            for group, momentum in zip(self.optimizer.param_groups, momentums, strict=True):
                _set_momentum(group, momentum, self.use_beta1)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.pop("_scale_fn_ref", None)
        fn = state.pop("_scale_fn_custom")
        state["_scale_fn_custom"] = None
        if fn is not None and not isinstance(fn, types.FunctionType):
            state["_scale_fn_custom"] = fn.__dict__.copy()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_fn = state_dict["_scale_fn_custom"]
        super().load_state_dict({key: value for key, value in state_dict.items() if key != "_scale_fn_custom"})
        if saved_fn is not None and self._scale_fn_custom is not None:
            self._scale_fn_custom.__dict__.update(saved_fn)
        self._init_scale_fn()


class OneCycleLR(LRScheduler):
    r"""The 1cycle policy: warm up to ``max_lr``, then anneal far below the start.

    Phases (``three_phase=False``), with :math:`T` = ``total_steps`` and
    :math:`p` = ``pct_start``; :math:`\eta_{init} = \eta_{max}/\text{div\_factor}`,
    :math:`\eta_{min} = \eta_{init}/\text{final\_div\_factor}`:

    1. steps :math:`0 \ldots pT - 1`: lr :math:`\eta_{init} \to \eta_{max}`,
       momentum :math:`m_{max} \to m_{base}`;
    2. up to step :math:`T - 1`: lr :math:`\eta_{max} \to \eta_{min}`, momentum
       :math:`m_{base} \to m_{max}`.

    With ``three_phase``: :math:`\eta_{init} \to \eta_{max}` until :math:`pT - 1`,
    back to :math:`\eta_{init}` until :math:`2pT - 2`, then to :math:`\eta_{min}` until
    :math:`T - 1` (momentum mirrored, constant in the last phase). Within a phase from
    step :math:`a` to :math:`b` with :math:`\pi = (e - a)/(b - a)`, values move from
    :math:`s` to :math:`t` by

    .. math::
        \text{cos:}\quad t + \frac{s - t}{2}\,(\cos(\pi\,\pi) + 1), \qquad
        \text{linear:}\quad (t - s)\,\pi + s

    Construction sets ``initial_lr``, ``max_lr``, ``min_lr`` (and the momentum bounds)
    in every group, overwriting what was there, and applies step 0. As in torch,
    ``total_steps`` further steps are allowed (the last extrapolates past the end of
    the schedule) and the next raises ValueError; a first phase ending at step 0
    divides by zero at construction.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        max_lr: peak learning rate, a float or one per group.
        total_steps: steps in the cycle; or give ``epochs`` and ``steps_per_epoch``.
        epochs, steps_per_epoch: ``total_steps = epochs * steps_per_epoch``.
        pct_start: fraction of the cycle spent rising (a float in [0, 1]). Default: 0.3.
        anneal_strategy: ``"cos"`` or ``"linear"``. Default: ``"cos"``.
        cycle_momentum: also cycle momentum (or ``betas[0]``). Default: True.
        base_momentum: momentum at the lr peak, a float or one per group. Default: 0.85.
        max_momentum: momentum at the ends, a float or one per group. Default: 0.95.
        div_factor: :math:`\eta_{max}/\eta_{init}`. Default: 25.
        final_div_factor: :math:`\eta_{init}/\eta_{min}`. Default: 1e4.
        three_phase: use the three-phase variant. Default: False.
        last_epoch: index of the last step, -1 for a new schedule. Default: -1.

    Reference: Smith and Topin, "Super-Convergence: Very Fast Training of Neural
    Networks Using Large Learning Rates", 2017 (arXiv:1708.07120).

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=0.1, momentum=0.9)
        >>> sched = OneCycleLR(opt, max_lr=1.0, total_steps=6)
        >>> lrs = [round(sched.get_last_lr()[0], 4)]
        >>> for _ in range(5):
        ...     opt.step()
        ...     sched.step()
        ...     lrs.append(round(sched.get_last_lr()[0], 4))
        >>> lrs
        [0.04, 0.9944, 0.8117, 0.4626, 0.1335, 0.0]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if total_steps is not None:
            if total_steps <= 0 or not isinstance(total_steps, int):
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")

        rise_end = float(pct_start * self.total_steps) - 1
        last = self.total_steps - 1
        phases: list[tuple[float, str, str, str, str]]
        if three_phase:
            phases = [
                (rise_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                (last, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            phases = [
                (rise_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (last, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]
        # torch's layout (state_dict compatible): one dict per phase.
        keys = ("end_step", "start_lr", "end_lr", "start_momentum", "end_momentum")
        self._schedule_phases: list[dict[str, Any]] = [dict(zip(keys, phase, strict=True)) for phase in phases]

        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        self._anneal_func_type = anneal_strategy

        max_lrs = per_group("max_lr", self.optimizer, max_lr)
        if cycle_momentum:  # checked before any group is written (torch writes the lrs first)
            use_beta1 = _momentum_key_is_beta1(optimizer)
            max_momentums = per_group("max_momentum", optimizer, max_momentum)
            base_momentums = per_group("base_momentum", optimizer, base_momentum)
        if last_epoch == -1:
            for peak, group in zip(max_lrs, self.optimizer.param_groups, strict=True):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = use_beta1
            if last_epoch == -1:
                _start_momentum_cycle(optimizer, base_momentums, max_momentums, use_beta1)
        super().__init__(optimizer, last_epoch)

    def _anneal_func(self, start: Any, end: Any, pct: float) -> Any:
        if self._anneal_func_type == "cos":
            return self._annealing_cos(start, end, pct)
        if self._anneal_func_type == "linear":
            return self._annealing_linear(start, end, pct)
        raise ValueError(f"Unknown _anneal_func_type: {self._anneal_func_type}")

    @staticmethod
    def _annealing_cos(start: Any, end: Any, pct: float) -> Any:
        """Cosine from ``start`` (pct 0) to ``end`` (pct 1)."""
        cos_out = math.cos(math.pi * pct) + 1
        return end + (start - end) / 2.0 * cos_out

    @staticmethod
    def _annealing_linear(start: Any, end: Any, pct: float) -> Any:
        """Straight line from ``start`` (pct 0) to ``end`` (pct 1)."""
        return (end - start) * pct + start

    def get_lr(self) -> list[Any]:
        """The learning rates at ``last_epoch``; also writes the cycled momentums."""
        self._warn_if_outside_step()
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(
                f"Tried to step {step_num} times. The specified number of total steps is {self.total_steps}"
            )
        lrs = []
        final = len(self._schedule_phases) - 1
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step_num <= end_step or i == final:
                    pct = (step_num - start_step) / (end_step - start_step)
                    lrs.append(self._anneal_func(group[phase["start_lr"]], group[phase["end_lr"]], pct))
                    if self.cycle_momentum:
                        momentum = self._anneal_func(group[phase["start_momentum"]], group[phase["end_momentum"]], pct)
                        _set_momentum(group, momentum, self.use_beta1)
                    break
                start_step = phase["end_step"]
        return lrs

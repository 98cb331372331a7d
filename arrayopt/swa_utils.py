r"""Weight averaging (SWA, EMA) over Parameters, and the SWALR scheduler; torch.optim.swa_utils.

:class:`AveragedModel` keeps a running average of a set of Parameters, updated from
the live values with :meth:`~AveragedModel.update_parameters`:

* SWA, the default: the equally weighted mean of every snapshot seen,
  :math:`\bar W_n = \bar W_{n-1} + (W_n - \bar W_{n-1}) / n`;
* EMA, with ``multi_avg_fn=get_ema_multi_avg_fn(decay)``:
  :math:`\bar W_n = d\,\bar W_{n-1} + (1 - d)\,W_n`;

and in both cases the first update copies. torch's version wraps an ``nn.Module``;
arrayopt has no modules, so a *model* here is whatever holds Parameters:

* a list or tuple of Parameters (or of ``(name, Parameter)`` pairs),
* a dict ``{name: Parameter}``,
* any object with a ``parameters()`` method (``named_parameters()`` is used for
  names when it exists).

There are no buffers and no ``forward``: evaluate the averaged weights by swapping
them into the live Parameters (:meth:`AveragedModel.swapped_into`), or read them from
:meth:`AveragedModel.parameters`. See :func:`update_bn` for batch-norm statistics.
"""

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import array_api_compat

from arrayopt.backends import get_backend, is_array
from arrayopt.lr_scheduler.base import LRScheduler, per_group
from arrayopt.optimizer import Optimizer
from arrayopt.parameter import Parameter

__all__ = [
    "SWALR",
    "AveragedModel",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
    "update_bn",
]

ArrayList = Sequence[Any]


# -- the averaging rules (elementwise, in place, in the cupy.fuse dialect) -------------


def lerp_update(xp: Any, averaged: Any, current: Any, weight: float, *, small_weight: bool) -> None:
    r"""``averaged`` moves a fraction ``weight`` of the way to ``current``, in place.

    .. math:: a \leftarrow a + w\,(c - a)

    evaluated as torch's ``lerp`` does: from ``a`` when :math:`|w| < 1/2` (flag
    ``small_weight``), else from ``c`` as :math:`c - (c - a)(1 - w)`, so that
    :math:`w = 1` gives ``c`` exactly.
    """
    if small_weight:
        averaged += weight * (current - averaged)
    else:
        averaged[...] = current - (current - averaged) * (1 - weight)


def mean_update(xp: Any, averaged: Any, current: Any, count: float) -> None:
    r"""One step of a running mean, in place: :math:`a \leftarrow a + (c - a) / k`.

    ``count`` is :math:`k = n + 1`, the number of snapshots including ``current``.
    """
    averaged += (current - averaged) / count


def _lerp_(averaged: Any, current: Any, weight: float) -> None:
    backend = get_backend(averaged)
    if not backend.is_floating(averaged):
        averaged[...] = averaged * (1 - weight) + current * weight
        return
    backend.check_operands((averaged, current))
    backend.kernel(lerp_update, small_weight=abs(weight) < 0.5)(averaged, current, weight)


# -- averaging functions (torch's factories) ------------------------------------------


def get_ema_multi_avg_fn(decay: float = 0.999) -> Callable[[ArrayList, ArrayList, Any], None]:
    r"""An EMA update of lists of arrays, in place: :math:`a \leftarrow d\,a + (1-d)\,c`.

    The returned ``ema_update(averaged_list, current_list, n_averaged)`` ignores
    ``n_averaged`` and updates each floating-point array as
    ``lerp(a, c, 1 - decay)`` (torch's ``_foreach_lerp_``); other arrays as
    ``a * decay + c * (1 - decay)``. Pass it to :class:`AveragedModel` as
    ``multi_avg_fn``.

    Args:
        decay: the weight :math:`d` of the running average, in [0, 1]. Default: 0.999.

    Raises:
        ValueError: if ``decay`` is outside [0, 1].

    Example:
        >>> import numpy as np
        >>> ema_update = get_ema_multi_avg_fn(decay=0.5)
        >>> averaged = [np.array([0.0, 4.0])]
        >>> ema_update(averaged, [np.array([2.0, 0.0])], 0)
        >>> averaged[0]
        array([1., 2.])
    """
    if decay < 0.0 or decay > 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")

    def ema_update(ema_param_list: ArrayList, current_param_list: ArrayList, _: Any) -> None:
        for ema, current in zip(ema_param_list, current_param_list, strict=True):
            if get_backend(ema).is_floating(ema):
                _lerp_(ema, current, 1 - decay)
            else:
                ema[...] = ema * decay + current * (1 - decay)

    return ema_update


def get_swa_multi_avg_fn() -> Callable[[ArrayList, ArrayList, Any], None]:
    r"""A running-mean (SWA) update of lists of arrays, in place: :math:`a \leftarrow a + (c - a)/(n+1)`.

    The returned ``swa_update(averaged_list, current_list, n_averaged)`` computes
    ``lerp(a, c, 1 / (n_averaged + 1))`` for floating-point arrays, as torch does.

    Deviation: torch passes ``n_averaged`` as an int64 tensor, so its weight
    ``1 / (n + 1)`` is a float32 number even for float64 arrays (an error of about
    1e-8 relative); here ``n_averaged`` is a Python int and the weight a double,
    which gives float32 arrays torch's exact numbers and float64 arrays the exact mean.

    It takes no arguments; the returned function's ``n_averaged`` is the number of
    values averaged so far (0 replaces the average by the current values).

    Example:
        >>> import numpy as np
        >>> swa_update = get_swa_multi_avg_fn()
        >>> averaged = [np.array([0.0, 4.0])]
        >>> for n, current in enumerate(([2.0, 2.0], [4.0, 0.0])):
        ...     swa_update(averaged, [np.array(current)], n)
        >>> averaged[0]  # the mean of the two values given
        array([3., 1.])
    """

    def swa_update(averaged_param_list: ArrayList, current_param_list: ArrayList, num_averaged: Any) -> None:
        count = _as_count(num_averaged) + 1
        for averaged, current in zip(averaged_param_list, current_param_list, strict=True):
            if get_backend(averaged).is_floating(averaged):
                _lerp_(averaged, current, 1 / count)
            else:
                averaged[...] = averaged + (current - averaged) / count

    return swa_update


def get_ema_avg_fn(decay: float = 0.999) -> Callable[[Any, Any, Any], Any]:
    r"""An EMA step for one array, returning a new array: :math:`d\,a + (1-d)\,c`.

    The returned ``ema_update(averaged, current, n_averaged)`` ignores
    ``n_averaged``. Pass it to :class:`AveragedModel` as ``avg_fn``.

    Args:
        decay: the weight :math:`d` of the running average, in [0, 1]. Default: 0.999.

    Raises:
        ValueError: if ``decay`` is outside [0, 1].

    Example:
        >>> import numpy as np
        >>> get_ema_avg_fn(decay=0.75)(np.array([4.0, 0.0]), np.array([0.0, 8.0]), 0)
        array([3., 2.])
    """
    if decay < 0.0 or decay > 1.0:
        raise ValueError(f"Invalid decay value {decay} provided. Please provide a value in [0,1] range.")

    def ema_update(ema_param: Any, current_param: Any, num_averaged: Any) -> Any:
        return decay * ema_param + (1 - decay) * current_param

    return ema_update


def get_swa_avg_fn() -> Callable[[Any, Any, Any], Any]:
    r"""A running-mean step for one array, returning a new array: :math:`a + (c - a)/(n+1)`.

    It takes no arguments; the returned ``swa_update(averaged, current, n_averaged)``
    adds ``current`` to the mean ``averaged`` of ``n_averaged`` values. Pass it to
    :class:`AveragedModel` as ``avg_fn``.

    Example:
        >>> import numpy as np
        >>> get_swa_avg_fn()(np.array([1.0, 2.0]), np.array([4.0, 8.0]), 2)  # (2 * a + c) / 3
        array([2., 4.])
    """

    def swa_update(averaged_param: Any, current_param: Any, num_averaged: Any) -> Any:
        return averaged_param + (current_param - averaged_param) / (num_averaged + 1)

    return swa_update


def _as_count(value: Any) -> int:
    """``n_averaged`` as a Python int (a 0-d integer array is read)."""
    if is_array(value):
        value = get_backend(value).to_numpy(value).reshape(())
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"n_averaged must be a non-negative integer, got {value!r}")
    return int(value)


# -- models: what holds the Parameters -------------------------------------------------


def _named_parameters(model: Any) -> list[tuple[str, Parameter]]:
    """``(name, Parameter)`` pairs of a list, tuple, dict or object with ``parameters()``."""
    if isinstance(model, Parameter):
        raise TypeError("model must hold Parameters (a list, a dict, or an object with parameters()); got a Parameter")
    if isinstance(model, dict):
        items = [(str(name), p) for name, p in model.items()]
    elif isinstance(model, (list, tuple)):
        items = [p if isinstance(p, tuple) else (str(i), p) for i, p in enumerate(model)]
    elif callable(getattr(model, "named_parameters", None)):
        items = [(str(name), p) for name, p in model.named_parameters()]
    elif callable(getattr(model, "parameters", None)):
        items = [(str(i), p) for i, p in enumerate(model.parameters())]
    else:
        raise TypeError(
            "model must be a list or dict of Parameters, or an object with a parameters() method; "
            f"got {type(model).__name__}"
        )
    for name, p in items:
        if not isinstance(p, Parameter):
            raise TypeError(f"model parameter {name!r} must be an arrayopt.Parameter, got {type(p).__name__}")
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"model has duplicate parameter names: {names}")
    return items


class AveragedModel:
    r"""A running average (SWA or EMA) of a model's Parameters; torch.optim.swa_utils.AveragedModel.

    The averaged values are separate arrays, copies of the model's made at
    construction (on ``device`` if given); :meth:`update_parameters` folds the
    model's current values in. The first update copies them (it is not averaged
    with the construction-time copy); each later one applies the averaging function:

    * neither function given: the equal-weight running mean,
      :math:`\bar W \leftarrow \bar W + (W - \bar W)/(n+1)` (:func:`mean_update`,
      torch's CPU formula);
    * ``avg_fn(averaged, current, n_averaged) -> array``: per array, the result is
      written into the average (e.g. :func:`get_ema_avg_fn`);
    * ``multi_avg_fn(averaged_list, current_list, n_averaged)``: updates lists in
      place, called once per (library, device, dtype) group, as in torch (e.g.
      :func:`get_ema_multi_avg_fn`).

    Args:
        model: a list or tuple of Parameters (or ``(name, Parameter)`` pairs), a dict
            of them, or an object with ``parameters()`` (names from
            ``named_parameters()`` when it has one).
        device: where to keep the averages (a device of the parameters' library,
            given to ``array_api_compat.to_device``); default: with each parameter.
        avg_fn, multi_avg_fn: the averaging function (at most one).
        use_buffers: accepted for torch compatibility and stored. arrayopt models have
            no buffers, so, like torch's flag on a module without buffers, it changes
            nothing.

    Attributes:
        n_averaged: the number of updates folded in, a Python int (torch keeps an
            int64 tensor buffer; the number is the same, and it is what ``avg_fn``
            and ``multi_avg_fn`` receive).

    Differences from torch, deliberate: the model's Parameters must match the
    averaged ones by name, shape and dtype at every update (torch zips them and
    silently stops at the shorter list); averages live in ``parameters()`` instead of
    a deep-copied module.

    Example:
        >>> import numpy as np, arrayopt
        >>> w = arrayopt.Parameter(np.array([0.0, 0.0]), name="w")
        >>> swa = AveragedModel([w])
        >>> for value in ([1.0, 2.0], [3.0, 4.0], [5.0, 0.0]):
        ...     w.data[...] = value
        ...     swa.update_parameters([w])
        >>> swa.parameters()[0].data, swa.n_averaged
        (array([3., 2.]), 3)
        >>> with swa.swapped_into([w]):
        ...     w.data                  # the average, while evaluating
        array([3., 2.])
        >>> w.data                      # the live value again
        array([5., 0.])

    Reference: Izmailov, Podoprikhin, Garipov, Vetrov and Wilson, "Averaging Weights
    Leads to Wider Optima and Better Generalization", UAI 2018.
    """

    def __init__(
        self,
        model: Any,
        device: Any = None,
        avg_fn: Callable[[Any, Any, Any], Any] | None = None,
        multi_avg_fn: Callable[[ArrayList, ArrayList, Any], None] | None = None,
        use_buffers: bool = False,
    ) -> None:
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self._params: OrderedDict[str, Parameter] = OrderedDict()
        for name, p in _named_parameters(model):
            data = get_backend(p.data).xp.asarray(p.data, copy=True)
            if device is not None:
                data = array_api_compat.to_device(data, device)
            self._params[name] = Parameter(data, name=p.name)
        self.device = device
        self.n_averaged = 0
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers

    # -- reading the averages ---------------------------------------------------------

    def parameters(self) -> list[Parameter]:
        """The averaged Parameters, in the model's order (their arrays are the averages)."""
        return list(self._params.values())

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """``(name, Parameter)`` pairs: list indices as strings, dict keys, or the model's names."""
        return list(self._params.items())

    def __repr__(self) -> str:
        return f"AveragedModel({len(self._params)} parameters, n_averaged={self.n_averaged})"

    # -- updating -----------------------------------------------------------------------

    def _pairs(self, model: Any) -> list[tuple[Any, Any, Parameter]]:
        """``(averaged array, current array on the averaged device, model Parameter)`` by name, checked."""
        named = _named_parameters(model)
        current = dict(named)
        if list(current) != list(self._params) and set(current) != set(self._params):
            raise ValueError(
                f"model parameters {sorted(current)} do not match the averaged parameters {sorted(self._params)}"
            )
        pairs = []
        for name, averaged in self._params.items():
            live = current[name]
            if tuple(live.shape) != tuple(averaged.shape) or live.dtype != averaged.dtype:
                raise ValueError(
                    f"parameter {name!r}: the model has shape {live.shape} and dtype {live.dtype}, the average "
                    f"has shape {averaged.shape} and dtype {averaged.dtype}"
                )
            backend = get_backend(averaged.data)
            value = live.data
            if get_backend(value) is not backend or backend.device(value) != backend.device(averaged.data):
                value = backend.convert(value, averaged.data, cast=False)
            pairs.append((averaged.data, value, live))
        return pairs

    def update_parameters(self, model: Any) -> None:
        """Fold the model's current values into the average (the first call copies them)."""
        pairs = self._pairs(model)
        n = self.n_averaged
        if n == 0:
            for averaged, current, _ in pairs:
                averaged[...] = current
        elif self.multi_avg_fn is not None:
            for averaged_list, current_list in _grouped(pairs):
                self.multi_avg_fn(averaged_list, current_list, n)
        elif self.avg_fn is not None:
            for averaged, current, _ in pairs:
                averaged[...] = self.avg_fn(averaged, current, n)
        else:
            for averaged, current, _ in pairs:
                backend = get_backend(averaged)
                backend.kernel(mean_update)(averaged, current, n + 1)
        self.n_averaged += 1

    # -- using the averages -------------------------------------------------------------

    def copy_to(self, model: Any) -> None:
        """Write the averages into the model's Parameters, in place (e.g. at the end of training)."""
        for averaged, _, live in self._pairs(model):
            _write(live, averaged)

    @contextmanager
    def swapped_into(self, model: Any) -> Iterator[None]:
        """Context manager: the model's Parameters hold the averages inside, their own values after.

        This is arrayopt's stand-in for evaluating torch's ``AveragedModel`` module:
        the live arrays are overwritten in place (so every reference to them sees the
        averages) and restored on exit, also when the block raises.

        Example: ``with swa.swapped_into(model): loss = evaluate(model)``.
        """
        pairs = self._pairs(model)
        saved = [(live, get_backend(live.data).xp.asarray(live.data, copy=True)) for _, _, live in pairs]
        try:
            for averaged, _, live in pairs:
                _write(live, averaged)
            yield
        finally:
            for live, value in saved:
                live.data[...] = value

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> "OrderedDict[str, Any]":
        """``{"n_averaged": int, "module.<name>": array, ...}``: torch's key layout.

        The arrays are the averages themselves, not copies (as torch's
        ``Module.state_dict``); copy or save the dict before updating again if you
        need a snapshot.
        """
        state: OrderedDict[str, Any] = OrderedDict(n_averaged=self.n_averaged)
        for name, p in self._params.items():
            state[f"module.{name}"] = p.data
        return state

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """Load averages and ``n_averaged`` saved by :meth:`state_dict`, copying the arrays.

        Arrays are converted to each average's library, device and dtype. Everything
        is checked before anything changes.

        Raises:
            RuntimeError: with ``strict``, on missing or unexpected keys (torch's
                message); on a shape mismatch.
        """
        expected = ["n_averaged", *(f"module.{name}" for name in self._params)]
        missing = [key for key in expected if key not in state_dict]
        unexpected = [key for key in state_dict if key not in expected]
        errors = []
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: {}. ".format(", ".join(f'"{k}"' for k in unexpected)))
        if strict and missing:
            errors.append("Missing key(s) in state_dict: {}. ".format(", ".join(f'"{k}"' for k in missing)))
        new_values = []
        for name, p in self._params.items():
            key = f"module.{name}"
            if key not in state_dict:
                continue
            value = state_dict[key]
            if not is_array(value) or tuple(value.shape) != tuple(p.shape):
                shape = tuple(value.shape) if is_array(value) else type(value).__name__
                errors.append(
                    f"size mismatch for {key}: copying a param with shape {shape} from checkpoint, "
                    f"the shape in current model is {p.shape}."
                )
                continue
            backend = get_backend(p.data)
            new_values.append((p, backend.convert(value, p.data, cast=True)))
        n_averaged = _as_count(state_dict["n_averaged"]) if "n_averaged" in state_dict else self.n_averaged
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        for p, value in new_values:
            p.data[...] = value
        self.n_averaged = n_averaged


def _grouped(pairs: list[tuple[Any, Any, Parameter]]) -> list[tuple[list[Any], list[Any]]]:
    """Averaged and current arrays grouped by library, device and dtype (first-seen order)."""
    groups: dict[tuple[str, str, str], tuple[list[Any], list[Any]]] = {}
    for averaged, current, _ in pairs:
        backend = get_backend(averaged)
        key = (backend.name, str(backend.device(averaged)), str(averaged.dtype))
        averaged_list, current_list = groups.setdefault(key, ([], []))
        averaged_list.append(averaged)
        current_list.append(current)
    return list(groups.values())


def _write(live: Parameter, value: Any) -> None:
    backend = get_backend(live.data)
    if get_backend(value) is not backend or backend.device(value) != backend.device(live.data):
        value = backend.convert(value, live.data, cast=False)
    live.data[...] = value


def update_bn(loader: Any, model: Any, device: Any = None) -> None:
    """Not available: arrayopt has no batch-norm layers whose statistics it could recompute.

    torch's ``update_bn`` resets every ``nn.BatchNorm`` layer's running statistics
    and recomputes them with one pass over ``loader``. arrayopt only knows
    Parameters; if your model keeps normalisation statistics, recompute them your
    own way with the averaged weights in place::

        with swa_model.swapped_into(model):
            recompute_statistics(model, loader)   # your code
            evaluate(model)

    Args:
        loader: as torch's (an iterable of inputs); unused.
        model: as torch's (a module); unused.
        device: as torch's; unused.

    Raises:
        NotImplementedError: always, with this explanation.

    Example:
        >>> update_bn([], model=None)
        Traceback (most recent call last):
            ...
        NotImplementedError: update_bn needs torch.nn batch-norm layers; arrayopt has none. ...
    """
    raise NotImplementedError(
        "update_bn needs torch.nn batch-norm layers; arrayopt has none. Swap the averages into your "
        "Parameters with `with averaged_model.swapped_into(model):` and recompute your model's "
        "statistics there (see arrayopt.swa_utils.update_bn's docstring)."
    )


class SWALR(LRScheduler):
    r"""Anneal each group's learning rate to a fixed ``swa_lr``, then hold it; torch's SWALR.

    With :math:`E` = ``anneal_epochs`` and :math:`k` the number of ``step()`` calls so
    far, :math:`t_k = \min(1, k / \max(1, E))` and :math:`\alpha = f(t)` with
    :math:`f(t) = (1 - \cos \pi t)/2` (``"cos"``) or :math:`t` (``"linear"``). Each
    step first recovers the lr the annealing started from,
    :math:`\eta_{start} = (\eta - \alpha_{k-1}\,\eta_{swa}) / (1 - \alpha_{k-1})`, then sets

    .. math:: \eta \leftarrow \alpha_k\,\eta_{swa} + (1 - \alpha_k)\,\eta_{start}

    so it reaches ``swa_lr`` after :math:`E` steps (at construction when :math:`E = 0`)
    and keeps it. It counts its own ``step()`` calls (``_step_count``), not
    ``last_epoch``; ``step(epoch)`` warns and changes nothing about that.

    Args:
        optimizer: the optimizer whose learning rates are scheduled.
        swa_lr: the final learning rate, a float or one per group (stored as
            ``group["swa_lr"]``).
        anneal_epochs: steps of annealing, an int >= 0. Default: 10.
        anneal_strategy: ``"cos"`` or ``"linear"``. Default: ``"cos"``.
        last_epoch: index of the last epoch. Default: -1.

    Reference: Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
    Generalization", UAI 2018.

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=1.0)
        >>> scheduler = SWALR(opt, swa_lr=0.5, anneal_epochs=2, anneal_strategy="linear")
        >>> for _ in range(3):
        ...     opt.step()
        ...     scheduler.step()
        ...     print(scheduler.get_last_lr())
        [0.75]
        [0.5]
        [0.5]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        swa_lr: float | list[float],
        anneal_epochs: int = 10,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        last_epoch: int = -1,
    ) -> None:
        swa_lrs = per_group("swa_lr", optimizer, swa_lr)
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        # Checked first, written after: torch writes swa_lr into the groups before its checks.
        for value, group in zip(swa_lrs, optimizer.param_groups, strict=True):
            group["swa_lr"] = value
        self._set_anneal_func(anneal_strategy)
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _linear_anneal(t: float) -> float:
        return t

    @staticmethod
    def _cosine_anneal(t: float) -> float:
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr: Any, swa_lr: Any, alpha: float) -> Any:
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def _set_anneal_func(self, anneal_strategy: str) -> None:
        self._anneal_strategy = anneal_strategy
        self.anneal_func = self._cosine_anneal if anneal_strategy == "cos" else self._linear_anneal

    def get_lr(self) -> list[Any]:
        self._warn_if_outside_step()
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_t = max(0, min(1, (step - 1) / max(1, self.anneal_epochs)))
        prev_alpha = self.anneal_func(prev_t)
        groups = self.optimizer.param_groups
        prev_lrs = [self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha) for group in groups]
        t = max(0, min(1, step / max(1, self.anneal_epochs)))
        alpha = self.anneal_func(t)
        return [group["swa_lr"] * alpha + lr * (1 - alpha) for group, lr in zip(groups, prev_lrs, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer and ``anneal_func`` (rebuilt from ``_anneal_strategy``)."""
        return {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "anneal_func")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)
        self._set_anneal_func(self._anneal_strategy)

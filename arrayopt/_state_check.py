"""What ``load_state_dict`` and ``add_param_group`` check before they change anything.

``check_state_dict`` looks at every part of a state dict an optimizer is about to
load and raises, naming the group, parameter and key at fault, if loading it would
fail or leave an optimizer that cannot step:

* the layout: a dict with ``state`` and ``param_groups``; the groups a list of dicts,
  as many as the optimizer has, each with a ``params`` list of parameter indices as
  long as the optimizer's group (torch's two messages for these, with the counts);
* the kind of optimizer: every hyper-parameter the optimizer needs is in every group
  (or is one torch fills in on load for old state dicts), and, for optimizers that
  declare their state keys (``Optimizer._state_keys``), every state key is one they
  keep and a non-empty state has all the keys they need. A state dict of another
  optimizer fails one of the two (an Adam state dict lacks SGD's ``momentum``);
* hyper-parameters: finite numbers, and accepted by the optimizer's own constructor
  checks (see :func:`check_group_values`);
* per-parameter state: a dict with string keys for a listed parameter (an int key no
  group lists is refused; other keys pass through, as in torch); ``step`` a finite
  non-negative number; declared arrays shaped like their parameter; no complex state
  for a real parameter, and, for a complex parameter, declared arrays of its dtype.

What torch accepts and arrayopt refuses here is listed in the README (reliability).
"""

import cmath
import inspect
import math
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arrayopt._validate import number, typename
from arrayopt.backends import get_backend, is_array
from arrayopt.parameter import Parameter
from arrayopt.sparse import SparseGrad

__all__ = ["StateKey", "check_group_values", "check_state_dict", "check_step", "step_to_float"]

#: torch's implementation flags: arrayopt ignores them (or refuses them when the
#: optimizer is built), so a loaded group may hold any value for them.
_IMPLEMENTATION_FLAGS = frozenset({"foreach", "fused", "capturable", "differentiable"})


@dataclass(frozen=True)
class StateKey:
    """What an optimizer keeps under one key of a parameter's state.

    Attributes:
        kind: ``"array"`` (an array with the parameter's shape, or a
            :class:`~arrayopt.SparseGrad` of that shape), ``"step"`` (a counter: a
            finite number >= 0, or a 1-element array holding one) or ``"scalar"`` (a
            finite number or a 1-element array holding one: ASGD's ``eta``, NAdam's
            ``mu_product``).
        required: a non-empty state must have it.
        none_ok: it may be None (SGD's momentum buffer then starts afresh).
        required_if: a group option that, when true, makes it required (Adam's
            ``max_exp_avg_sq`` with ``amsgrad``).
        shape: for an array not shaped like its parameter, its shape given the
            parameter's; None from it where the optimizer keeps no such array for that
            parameter (then it is neither required nor allowed). Adafactor's factored
            moments: ``row_var`` of shape ``(..., m, 1)`` for a parameter ``(..., m, n)``.
    """

    kind: str = "array"
    required: bool = True
    none_ok: bool = False
    required_if: str | None = None
    shape: Callable[[tuple[int, ...]], tuple[int, ...] | None] | None = None


def check_state_dict(optimizer: Any, state_dict: Any) -> None:
    """Raise unless ``optimizer.load_state_dict(state_dict)`` can load it; change nothing."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict, but got {typename(state_dict)}")
    for key in ("param_groups", "state"):
        if key not in state_dict:
            raise KeyError(f"loaded state dict has no {key!r} entry")
    saved_groups = state_dict["param_groups"]
    if not isinstance(saved_groups, (list, tuple)):
        raise TypeError(f"loaded state dict: 'param_groups' must be a list of dicts, but got {typename(saved_groups)}")
    groups = optimizer.param_groups
    if len(groups) != len(saved_groups):
        raise ValueError(
            "loaded state dict has a different number of parameter groups "
            f"({len(saved_groups)} saved, {len(groups)} in the optimizer)"
        )
    owners: dict[Any, tuple[Parameter, int, int]] = {}
    for i, (group, saved) in enumerate(zip(groups, saved_groups, strict=True)):
        _check_group(optimizer, i, group, saved, owners)
    state = state_dict["state"]
    if not isinstance(state, Mapping):
        raise TypeError(f"loaded state dict: 'state' must be a dict, but got {typename(state)}")
    for key, value in state.items():
        if isinstance(key, bool):
            raise TypeError(f"loaded state dict: the state key {key!r} is not a parameter index")
        if key in owners:
            _check_param_state(optimizer, key, owners[key], value, saved_groups)
        elif isinstance(key, int):
            raise ValueError(
                f"loaded state dict: 'state' has an entry for parameter {key}, but no param group lists that "
                f"index (they list {_ranges(sorted(owners))})"
            )
        # other keys are not parameters: kept as they are, as in torch


def check_group_values(optimizer: Any, group: Mapping[str, Any], where: str, *, skip_defaults: bool = False) -> None:
    """Raise unless the hyper-parameters in ``group`` are finite and pass the optimizer's own checks.

    An optimizer lists the hyper-parameters torch lets be infinite in its class
    attribute ``_infinite_ok`` (Rprop's ``etas`` and ``step_sizes``).

    The checks are the constructor's: every optimizer validates its arguments before
    it looks at ``params`` (torch's rule), so the constructor is run on the group's
    values with a ``params`` that stops it as soon as it is reached. Implementation
    flags (foreach, fused, capturable, differentiable) are left out. Values that are
    the optimizer's own defaults (``skip_defaults``) were checked when it was built.
    """
    unbounded: frozenset[str] = getattr(optimizer, "_infinite_ok", frozenset())
    for key, value in group.items():
        if key in ("params", "param_names"):
            continue
        if key not in unbounded and not _finite(value):
            raise ValueError(f"{where}: {key!r} is {value!r}, which is not finite")
    cls = type(optimizer)
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return
    parameters = list(signature.parameters.values())
    if len(parameters) < 2 or parameters[1].name != "params":
        return
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    kwargs = {
        p.name: group[p.name]
        for p in parameters[2:]
        if p.kind in keyword and p.name in group and p.name not in _IMPLEMENTATION_FLAGS
    }
    if skip_defaults and all(value is optimizer.defaults.get(key) for key, value in kwargs.items()):
        return
    try:
        signature.bind(None, None, **kwargs)
    except TypeError:
        return  # a subclass whose constructor takes other arguments: nothing to reuse
    probe = object.__new__(cls)
    try:
        cls.__init__(probe, _StopAtParams(), **kwargs)
    except _ParamsReached:
        return
    except Exception as exc:
        try:
            prefixed = type(exc)(f"{where}: {exc}")
        except Exception:
            raise exc from None
        raise prefixed from None


class _ParamsReached(Exception):
    pass


class _StopAtParams:
    """A ``params`` argument that ends a constructor's run when it is iterated."""

    def __iter__(self) -> Any:
        raise _ParamsReached


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if is_array(value) and math.prod(value.shape) == 1:
        backend = get_backend(value)
        if backend.is_floating(value):
            return cmath.isfinite(complex(backend.to_numpy(value).reshape(()).item()))
    return True


def _check_group(
    optimizer: Any, i: int, group: dict[str, Any], saved: Any, owners: dict[Any, tuple[Parameter, int, int]]
) -> None:
    where = f"loaded state dict: param group {i}"
    if not isinstance(saved, Mapping):
        raise TypeError(f"{where} must be a dict, but got {typename(saved)}")
    if "params" not in saved:
        raise KeyError(f"{where} has no 'params' entry")
    ids = saved["params"]
    if not isinstance(ids, (list, tuple)):
        raise TypeError(f"{where}: 'params' must be a list of parameter indices, but got {typename(ids)}")
    for j, index in enumerate(ids):
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"{where}: params[{j}] is {index!r}, not a parameter index")
    params = group["params"]
    if len(ids) != len(params):
        raise ValueError(
            "loaded state dict contains a parameter group that doesn't match the size of optimizer's group "
            f"(param group {i}: {len(ids)} saved parameters, {len(params)} in the optimizer)"
        )
    for key in saved:
        if not isinstance(key, str):
            raise TypeError(f"{where}: the key {key!r} is not a string")
    if "param_names" in saved:
        names = saved["param_names"]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"{where}: 'param_names' must be a list of str")
        if len(names) != len(ids):
            raise ValueError(f"{where}: {len(names)} 'param_names' for {len(ids)} parameters")
    filled = dict(saved)
    for key, value in optimizer._defaults_on_load.items():
        filled.setdefault(key, value)
    # torch's __setstate__ adds the implementation flag "differentiable" to every optimizer's defaults
    # (LBFGS has none of its own): a group need not hold implementation flags, which arrayopt ignores.
    missing = [key for key in optimizer.defaults if key not in filled and key not in _IMPLEMENTATION_FLAGS]
    if missing:
        raise ValueError(
            f"{where} has no {', '.join(map(repr, missing))}, which {type(optimizer).__name__} needs: "
            "is this the state dict of another kind of optimizer?"
        )
    if "lr" in filled:
        # A scheduler may leave any finite lr in a group (0.0 at the end of a cosine, -2e-20 from its
        # rounding, a LambdaLR's negative factor) and the optimizer steps with it, as torch's does: the
        # state dict it then gives must load. So the lr must be a finite real number, not a valid
        # constructor argument.
        lr = filled.pop("lr")
        try:
            finite = math.isfinite(number(lr, "lr"))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from None
        if not finite:
            raise ValueError(f"{where}: 'lr' is {lr!r}, which is not finite")
    check_group_values(optimizer, filled, where)
    if filled.get("fused") and "fused" in optimizer.defaults:  # the step refuses these, as torch's does
        for j, p in enumerate(params):
            if get_backend(p.data).is_complex(p.data):
                raise ValueError(
                    f"{where}: fused=True, but parameter {j} ({p._label()}) is complex; "
                    "fused=True takes real floating-point parameters only"
                )
    for j, (index, p) in enumerate(zip(ids, params, strict=True)):
        owners[index] = (p, i, j)


def _check_param_state(
    optimizer: Any, index: Any, owner: tuple[Parameter, int, int], value: Any, groups: Sequence[Any]
) -> None:
    param, g, j = owner
    name = f", {param.name!r}" if param.name is not None else ""
    where = f"loaded state dict: state of parameter {index} (param group {g}, position {j}{name})"
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a dict, but got {typename(value)}")
    spec: Mapping[str, StateKey] | None = optimizer._state_keys
    cls = type(optimizer).__name__
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"{where}: the key {key!r} is not a string")
        kind = spec.get(key) if spec is not None else None
        if spec is not None and kind is None:
            raise ValueError(
                f"{where} has the key {key!r}, which {cls} does not keep (it keeps {', '.join(map(repr, spec))}): "
                "is this the state dict of another kind of optimizer?"
            )
        if key == "step" or (kind is not None and kind.kind == "step"):
            _check_counter(item, f"{where}: {key!r}")
        elif kind is not None and kind.kind == "scalar":
            _check_scalar(item, f"{where}: {key!r}")
        elif kind is not None:
            _check_param_array(item, param, f"{where}: {key!r}", kind)
        else:
            _check_nested(item, param, f"{where}: {key!r}")
    if spec is not None and value:
        for key, kind in spec.items():
            needed = kind.required or (kind.required_if is not None and bool(groups[g].get(kind.required_if)))
            if kind.shape is not None and kind.shape(param.shape) is None:
                needed = False  # not kept for a parameter of this shape
            if needed and key not in value:
                because = f" with {kind.required_if}" if not kind.required else ""
                raise KeyError(f"{where} has no {key!r}, which {cls} needs in a parameter's state{because}")
    check_more = getattr(optimizer, "_check_loaded_state", None)
    if check_more is not None:  # what keys, shapes and dtypes cannot say (LBFGS's flat history)
        check_more(param, value, groups[g], where)


def step_to_float(step: Any) -> float:
    """A loaded ``step`` counter (number or 0-d array) as a Python float."""
    if is_array(step):
        step = get_backend(step).to_numpy(step).reshape(())
    return float(check_step(step))


def check_step(step: Any) -> Any:
    """``step`` itself if it is a finite number >= 0 (not a bool or string), else ValueError."""
    try:
        ok = not isinstance(step, (bool, str, bytes)) and math.isfinite(float(step)) and float(step) >= 0
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int too large for a float
        ok = False
    if not ok:
        raise ValueError(f"invalid step counter in optimizer state: {reprlib.repr(step)}")
    return step


def _check_counter(value: Any, where: str) -> None:
    if is_array(value) and math.prod(value.shape) != 1:
        raise ValueError(f"{where}: invalid step counter in optimizer state: an array of shape {tuple(value.shape)}")
    try:
        step_to_float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_scalar(value: Any, where: str) -> None:
    if is_array(value):
        if math.prod(value.shape) != 1:
            raise ValueError(f"{where}: must be a number or a 1-element array, got an array of shape {value.shape}")
        value = get_backend(value).to_numpy(value).reshape(()).item()
    try:
        ok = not isinstance(value, (bool, str, bytes)) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok:
        raise ValueError(f"{where}: must be a finite number or a 1-element array, got {reprlib.repr(value)}")


def _check_param_array(value: Any, param: Parameter, where: str, kind: StateKey) -> None:
    if value is None:
        if kind.none_ok:
            return
        raise TypeError(f"{where} is None, but an array shaped like the parameter is needed")
    if isinstance(value, SparseGrad):  # e.g. SGD's momentum buffer under sparse gradients
        if tuple(value.shape) != param.shape:
            raise ValueError(f"{where} has shape {tuple(value.shape)}, but the parameter has shape {param.shape}")
        _check_dtype(value.values, param, where, exact_complex=True)
        return
    if not is_array(value):
        raise TypeError(f"{where} must be an array shaped like the parameter, but got {typename(value)}")
    if kind.shape is not None:
        want = kind.shape(param.shape)
        if want is None:
            raise ValueError(f"{where} is not kept for a parameter of shape {param.shape}")
        if tuple(value.shape) != want:
            raise ValueError(
                f"{where} has shape {tuple(value.shape)}, but a parameter of shape {param.shape} needs {want}"
            )
    elif tuple(value.shape) != param.shape:
        raise ValueError(f"{where} has shape {tuple(value.shape)}, but the parameter has shape {param.shape}")
    _check_dtype(value, param, where, exact_complex=True)


def _check_nested(value: Any, param: Parameter, where: str) -> None:
    if is_array(value):
        _check_dtype(value, param, where, exact_complex=False)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_nested(item, param, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_nested(item, param, f"{where}[{i}]")


def _check_dtype(value: Any, param: Parameter, where: str, exact_complex: bool) -> None:
    backend, own = get_backend(value), get_backend(param.data)
    if not backend.xp.isdtype(value.dtype, ("numeric", "bool")):
        raise TypeError(f"{where} has dtype {value.dtype}, which is not a number type")
    if own.is_complex(param.data):
        if exact_complex and _dtype_name(value) != _dtype_name(param.data):
            raise ValueError(
                f"{where} has dtype {_dtype_name(value)}, but the parameter is {_dtype_name(param.data)} "
                "(a complex parameter's state keeps its dtype on load, so it must match)"
            )
    elif backend.is_complex(value):
        raise ValueError(f"{where} is complex ({_dtype_name(value)}), but the parameter is real ({param.dtype})")


def _dtype_name(array: Any) -> str:
    return str(array.dtype).rsplit(".", 1)[-1]


def _ranges(indices: list[Any]) -> str:
    if not indices:
        return "none"
    if indices == list(range(indices[0], indices[0] + len(indices))):
        return f"{indices[0]}..{indices[-1]}"
    return ", ".join(map(str, indices))

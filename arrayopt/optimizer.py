"""The ``Optimizer`` base class, with torch.optim 2.13's public API and semantics.

Differences from torch.optim, all deliberate:

* Parameters are :class:`arrayopt.Parameter` objects, so messages that say "Tensors"
  in torch say "Parameters" here.
* ``load_state_dict`` copies the arrays it loads (torch aliases them when no cast is
  needed), so a loaded optimizer never shares state with the dict it was given.
* A param group given as a dict is validated on a copy and only updated in place once
  everything about it is known to be valid.
* Per-group hyper-parameters (group dicts, ``add_param_group``, loaded state dicts)
  pass the constructor's own checks and must be finite; torch checks only the
  constructor's arguments.
* ``load_state_dict`` refuses, before changing anything, state dicts that torch loads
  but cannot step with (wrong state shapes or keys, another optimizer's state, ...).
"""

import functools
import math
import operator
import reprlib
import warnings
import weakref
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable
from copy import deepcopy
from itertools import chain, repeat
from typing import Any, ClassVar

from arrayopt import _nonfinite
from arrayopt._hooks import RemovableHandle, register
from arrayopt._state_check import StateKey, check_group_values, check_state_dict
from arrayopt._validate import typename as _typename
from arrayopt.backends import Backend, get_backend, is_array
from arrayopt.flat import FlatBuffer
from arrayopt.parameter import Parameter
from arrayopt.sparse import SparseGrad

__all__ = [
    "ElementwiseOptimizer",
    "Optimizer",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
    "required",
]

StateDict = dict[str, Any]


class _RequiredParameter:
    """Singleton marking a hyper-parameter that every param group must set.

    An optimizer whose default for an option is :data:`required` refuses a param
    group without it (torch's ``torch.optim.optimizer.required``).

    Example:
        >>> import numpy as np, arrayopt
        >>> w = arrayopt.Parameter(np.zeros(2))
        >>> arrayopt.Optimizer([w], {"lr": required})
        Traceback (most recent call last):
            ...
        ValueError: parameter group didn't specify a value of required optimization parameter lr
        >>> required
        <required parameter>
    """

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()

_global_step_pre_hooks: "OrderedDict[int, Callable[..., Any]]" = OrderedDict()
_global_step_post_hooks: "OrderedDict[int, Callable[..., Any]]" = OrderedDict()


def register_optimizer_step_pre_hook(hook: Callable[..., Any]) -> RemovableHandle:
    """Register ``hook(optimizer, args, kwargs)`` to run before every optimizer's step.

    It may return None or a new ``(args, kwargs)`` pair (``args[0]`` is the optimizer).
    Global pre-hooks run before the optimizer's own (``register_step_pre_hook``), in
    the order registered, as in torch.

    Args:
        hook: the callable; it receives the optimizer and the ``step`` call's
            positional (without the optimizer) and keyword arguments.

    Returns:
        A handle whose ``remove()`` unregisters the hook.

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=0.1)
        >>> handle = register_optimizer_step_pre_hook(lambda o, args, kwargs: print("before", type(o).__name__))
        >>> opt.step()
        before SGD
        >>> handle.remove()
        >>> opt.step()
    """
    return register(_global_step_pre_hooks, hook)


def register_optimizer_step_post_hook(hook: Callable[..., Any]) -> RemovableHandle:
    """Register ``hook(optimizer, args, kwargs)`` to run after every optimizer's step.

    Its return value is ignored. Global post-hooks run after the optimizer's own
    (``register_step_post_hook``), in the order registered, as in torch.

    Args:
        hook: the callable; it receives the optimizer and the ``step`` call's
            positional (without the optimizer) and keyword arguments.

    Returns:
        A handle whose ``remove()`` unregisters the hook.

    Example:
        >>> import numpy as np, arrayopt
        >>> opt = arrayopt.SGD([arrayopt.Parameter(np.zeros(2))], lr=0.1)
        >>> handle = register_optimizer_step_post_hook(lambda o, args, kwargs: print("after", type(o).__name__))
        >>> opt.step()
        after SGD
        >>> handle.remove()
    """
    return register(_global_step_post_hooks, hook)


def _with_step_hooks(step: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a ``step`` method so the global and per-instance step hooks run around it.

    Order: global pre, instance pre, step, instance post, global post (as torch). A
    ``step`` that calls ``super().step()`` runs the hooks once, not twice.
    """
    if getattr(step, "_arrayopt_hooked", False):
        return step

    @functools.wraps(step)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        self = args[0]
        if self.__dict__.get("_in_step", False):
            return step(*args, **kwargs)
        for pre_hook in chain(_global_step_pre_hooks.values(), self._optimizer_step_pre_hooks.values()):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(
                        f"{step} must return None or a tuple of (new_args, new_kwargs), but got {result}."
                    )
        self.__dict__["_in_step"] = True
        try:
            if self.skip_nonfinite:
                stepped, out = _nonfinite.guarded_step(step, self, args, kwargs)
                if not stepped:
                    return out
            else:
                out = step(*args, **kwargs)
        finally:
            self.__dict__["_in_step"] = False
        for post_hook in chain(self._optimizer_step_post_hooks.values(), _global_step_post_hooks.values()):
            post_hook(self, args, kwargs)
        return out

    wrapper._arrayopt_hooked = True  # type: ignore[attr-defined]
    return wrapper


class Optimizer:
    r"""Base class for all optimizers, with torch.optim's API.

    Args:
        params: an iterable of :class:`~arrayopt.Parameter`, of ``(name, Parameter)``
            pairs, or of dicts (param groups: ``{"params": [...], "lr": ...}``) whose
            missing options are filled from ``defaults``.
        defaults: the default value of every hyper-parameter.

    Attributes:
        defaults: as given.
        param_groups: list of dicts, each with ``"params"`` (a list of Parameters),
            optionally ``"param_names"``, and every hyper-parameter.
        state: ``defaultdict(dict)`` mapping each Parameter to its state.

    Subclasses implement ``step(closure=None)``; step hooks wrap it automatically.

    Non-finite guard (arrayopt only, off by default): with ``skip_nonfinite = True``,
    a ``step`` whose gradients hold a NaN or an infinity is skipped (after the
    closure, if any, has run): parameters, state and step counters stay as they were,
    the step's post-hooks do not run, ``skipped_steps`` grows by one, and the
    closure's value (or None) is returned. This is what loss-scaling optimizers do
    with overflowing steps. The check costs one pass over the gradients. Neither
    attribute is part of ``state_dict``.

    Example:
        >>> import numpy as np
        >>> from arrayopt import Parameter
        >>> class SignDescent(Optimizer):  # theta <- theta - lr * sign(g)
        ...     def __init__(self, params, lr=0.1):
        ...         super().__init__(params, {"lr": lr})
        ...     def step(self, closure=None):
        ...         for group in self.param_groups:
        ...             for p in group["params"]:
        ...                 if p.grad is not None:
        ...                     p.data -= group["lr"] * np.sign(p.grad)
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> w.grad = np.array([0.5, -3.0])
        >>> opt = SignDescent([w], lr=0.5)
        >>> opt.step()
        >>> w.data
        array([ 0.5, -1.5])
        >>> opt.state_dict()
        {'state': {}, 'param_groups': [{'lr': 0.5, 'params': [0]}]}
    """

    #: Group keys filled in when loading state saved by an older version (torch's
    #: ``__setstate__`` defaults, per optimizer).
    _defaults_on_load: ClassVar[dict[str, Any]] = {}

    #: The per-parameter state keys the optimizer keeps, for ``load_state_dict``'s
    #: checks of keys, shapes and dtypes (None: not declared, any key loads, shapes
    #: are checked only by ``step``). Every optimizer should declare them.
    _state_keys: ClassVar[dict[str, StateKey] | None] = None

    #: Skip steps whose gradients are not all finite (see above).
    skip_nonfinite: bool = False
    #: How many steps the non-finite guard skipped.
    skipped_steps: int = 0

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self._init_hooks()
        if isinstance(params, Parameter) or is_array(params):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of "
                "Parameters or dicts, but got " + _typename(params)
            )
        self.state: defaultdict[Any, Any] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        # Check every group before completing any of the caller's dicts; then add them
        # through add_param_group, which subclasses may extend (as in torch). Params
        # given as an iterator are read once, here (torch turns them into a list too).
        for param_group in param_groups:
            if isinstance(param_group, dict) and "params" in param_group:
                params_in = param_group["params"]
                if not isinstance(params_in, (Parameter, set, list, tuple)) and not is_array(params_in):
                    param_group["params"] = list(params_in)
        for param_group in param_groups:
            self.param_groups.append(self._checked_group(param_group, warn=False))
        self._check_param_groups(self.param_groups)
        self.param_groups = []
        for param_group in param_groups:
            self.add_param_group(param_group)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:
            cls.step = _with_step_hooks(cls.__dict__["step"])  # type: ignore[method-assign]

    def _init_hooks(self) -> None:
        self._optimizer_step_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()

    # -- pickling and repr ------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_optimizer_step_pre_hooks" not in self.__dict__:
            self._init_hooks()
        self.defaults.setdefault("differentiable", False)
        for group in self.param_groups:
            for key, value in self._defaults_on_load.items():
                group.setdefault(key, value)

    def __repr__(self) -> str:
        text = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += "\n"
            text += f"Parameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    text += f"    {key}: {group[key]}\n"
        text += ")"
        return text

    # -- hooks ------------------------------------------------------------------------

    def register_step_pre_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """Run ``hook(optimizer, args, kwargs)`` before each ``step``.

        The hook may return None or ``(new_args, new_kwargs)``.
        """
        return register(self._optimizer_step_pre_hooks, hook)

    def register_step_post_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """Run ``hook(optimizer, args, kwargs)`` after each ``step``."""
        return register(self._optimizer_step_post_hooks, hook)

    def register_state_dict_pre_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """Run ``hook(optimizer)`` before ``state_dict`` packs the state."""
        return register(self._optimizer_state_dict_pre_hooks, hook, prepend)

    def register_state_dict_post_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """Run ``hook(optimizer, state_dict)`` on the packed dict; a non-None result replaces it."""
        return register(self._optimizer_state_dict_post_hooks, hook, prepend)

    def register_load_state_dict_pre_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """Run ``hook(optimizer, state_dict)`` on a shallow copy before loading; a non-None result replaces it."""
        return register(self._optimizer_load_state_dict_pre_hooks, hook, prepend)

    def register_load_state_dict_post_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """Run ``hook(optimizer)`` after loading."""
        return register(self._optimizer_load_state_dict_post_hooks, hook, prepend)

    # -- param groups -----------------------------------------------------------------

    def _check_param_groups(self, param_groups: list[dict[str, Any]]) -> None:
        """Refuse the constructor's groups (completed copies) before any is added.

        For checks torch makes on ``self.param_groups`` right after its base constructor;
        here they run before the caller's dicts are completed. Default: none.
        """

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group: a dict with ``"params"`` and optional per-group options.

        Everything is checked on a copy first, the hyper-parameters with the
        constructor's own checks; on success the dict you passed is completed in
        place (``params`` as a list, ``param_names``, defaults) and becomes the
        group, as in torch.
        """
        group = self._checked_group(param_group)
        param_group.update(group)
        self.param_groups.append(param_group)

    def _checked_group(self, param_group: Any, warn: bool = True) -> dict[str, Any]:
        """A completed copy of ``param_group``, checked against the existing groups."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use a "
                "list instead."
            )
        else:
            params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        group["params"] = params
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            group["param_names"] = names
        for param in params:
            if not isinstance(param, Parameter):
                hint = ""
                if isinstance(param, str):  # the names a dict or ParameterDict iterates over
                    hint = (
                        " (a ParameterDict, like a dict, iterates over its names: pass .parameters(), or "
                        ".named_parameters() to keep the names)"
                    )
                raise TypeError(
                    "optimizer can only optimize Parameters, but one of the params is " + _typename(param) + hint
                )
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        check_group_values(self, group, f"param group {len(self.param_groups)}", skip_defaults=True)
        if warn and len(params) != len(set(params)):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; each occurrence is "
                "updated, so a duplicated parameter moves more than once per step (torch.optim plans "
                "to refuse this): list each parameter once",
                stacklevel=3,
            )
        param_set: set[Parameter] = set()
        for existing in self.param_groups:
            param_set.update(existing["params"])
            if ("param_names" in group) != ("param_names" in existing):
                current = "with names" if "param_names" in group else "without names"
                raise ValueError(
                    "all optimizer param groups should be with/without names. "
                    f"cannot add param group {current} to the optimizer"
                )
        if not param_set.isdisjoint(params):
            raise ValueError("some parameters appear in more than one parameter group")
        return group

    # -- gradients and stepping -------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to None (default) or to zeros in place.

        A sparse gradient zeroed in place keeps no entries (as torch's ``zero_``).
        """
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    elif isinstance(p.grad, SparseGrad):
                        p.grad.zero_()
                    else:
                        p.grad[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step and return the closure's value (or None)."""
        raise NotImplementedError

    # -- state dicts ------------------------------------------------------------------

    def state_dict(self) -> StateDict:
        """The optimizer's state in torch's layout.

        ``{"state": {index: {key: value}}, "param_groups": [{..., "params": [index]}]}``
        where parameters are numbered consecutively across groups. State arrays are
        returned by reference, not copied (as torch): deep-copy the dict, or save it,
        before stepping again if you need a snapshot.
        """
        return self._packed_state_dict(self.state)

    def _packed_state_dict(self, state: Any) -> StateDict:
        """``state`` (Parameter -> state) in torch's layout, with the state-dict hooks run."""
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        param_mappings: dict[int, int] = {}
        start_index = 0

        def pack_group(group: dict[str, Any]) -> dict[str, Any]:
            nonlocal start_index
            packed = {k: v for k, v in group.items() if k != "params"}
            param_mappings.update(
                {id(p): i for i, p in enumerate(group["params"], start_index) if id(p) not in param_mappings}
            )
            packed["params"] = [param_mappings[id(p)] for p in group["params"]]
            start_index += len(packed["params"])
            return packed

        param_groups = [pack_group(g) for g in self.param_groups]
        packed_state = {(param_mappings[id(k)] if isinstance(k, Parameter) else k): v for k, v in state.items()}
        state_dict: StateDict = {"state": packed_state, "param_groups": param_groups}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def _pre_load(self, state_dict: Any) -> StateDict:
        """A shallow copy of ``state_dict`` (a dict, or TypeError), through the load pre-hooks."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, but got {_typename(state_dict)}")
        loaded: StateDict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, loaded)
            if result is not None:
                loaded = result
        return loaded

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Load state produced by :meth:`state_dict` (matching parameters by position).

        Saved hyper-parameters replace the current ones. Floating-point state arrays
        are converted to their parameter's dtype, library and device (complex ones
        keep their dtype; ``step`` is kept as saved), always as copies.

        Everything is checked and converted before the optimizer is changed, so an
        error leaves it exactly as it was; the message names the param group, the
        parameter and the key at fault. Besides torch's checks (group count and
        sizes), it checks the layout, that the hyper-parameters are the ones this
        optimizer needs and are valid, and the state: keys, ``step`` counters, array
        shapes and dtypes (see ``arrayopt._state_check``).
        """
        state_dict = self._pre_load(state_dict)
        check_state_dict(self, state_dict)
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        id_map = dict(
            zip(
                chain.from_iterable(g["params"] for g in saved_groups),
                chain.from_iterable(g["params"] for g in groups),
                strict=True,
            )
        )
        state: defaultdict[Any, Any] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                param = id_map[k]
                state[param] = _cast_state(param, v)
            else:
                state[k] = v

        def update_group(group: dict[str, Any], new_group: dict[str, Any]) -> dict[str, Any]:
            new_group["params"] = group["params"]
            if "param_names" in group and "param_names" not in new_group:
                new_group["param_names"] = group["param_names"]
            return new_group

        param_groups = [update_group(g, ng) for g, ng in zip(groups, saved_groups, strict=True)]
        self.__setstate__({"state": state, "param_groups": param_groups})
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)


def _cast_state(param: Parameter, value: Any, key: Any = None) -> Any:
    """A copy of ``value`` with its arrays on ``param``'s library and device.

    Real floating-point parameters also give their dtype to every array except
    ``step`` (torch's policy, pytorch/pytorch#74424).
    """
    if key == "step" and not isinstance(value, (dict, list, tuple)):
        # Counters are host numbers in arrayopt; a 0-d array (e.g. torch's tensor) is read.
        return step_to_float(value) if is_array(value) else _check_step(value)
    if is_array(value) or isinstance(value, SparseGrad):
        backend = get_backend(param.data)
        cast = backend.is_floating(param.data) and not backend.is_complex(param.data)
        if isinstance(value, SparseGrad):  # e.g. SGD's momentum buffer under sparse gradients
            return value._converted(backend, param.data, cast=cast)
        return backend.convert(value, param.data, cast=cast)
    if isinstance(value, dict):
        return {k: _cast_state(param, v, key=k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_state(param, v, key=key) for v in value)
    return deepcopy(value)


# State values that runs of flat Parameters may share: immutable, compared by type and repr.
_SCALAR_TYPES = frozenset({float, int, bool, complex, str, type(None)})
_FRESH = "fresh"  # segment kinds (see ElementwiseOptimizer._segments)
_LAID = "laid"
_PLAIN = "plain"
_MISSING = object()


class _Run:
    """Members ``lo .. hi-1`` of one FlatBuffer, consecutive and in order in one param group."""

    __slots__ = ("buffer", "caches", "hi", "lo", "params")

    def __init__(self, buffer: FlatBuffer, lo: int, first: Parameter) -> None:
        self.buffer = buffer
        self.lo = lo
        self.hi = lo + 1
        self.params = [first]
        #: (lo, hi) of a stretch with a gradient -> its state, known to merge (see _SpanCache)
        self.caches: dict[tuple[int, int], _SpanCache] = {}

    def spans_with_grad(self) -> list[tuple[int, int]]:
        """The maximal stretches ``(lo, hi)`` of members that have a gradient."""
        flags = self.buffer.has_grad
        spans = []
        i, hi = self.lo, self.hi
        while i < hi:
            j = flags.find(1, i, hi)
            if j < 0:
                break
            k = flags.find(0, j, hi)
            if k < 0:
                k = hi
            spans.append((j, k))
            i = k
        return spans


class _FlatState(dict[str, Any]):
    """The state dict of a flat Parameter: a dict that tells its cached stretch when it changes.

    The optimizer creates these for the members of flat buffers (and converts loaded
    ones). Every mutating method first marks the :class:`_SpanCache` holding the dict
    (if any) as stale, so a later step can reuse a stretch's merged state without
    checking every value again. Copies and pickles are plain dicts.
    """

    __slots__ = ("_span",)
    # Weak: the cache holds its dicts, and a cycle would keep their state arrays
    # alive past the optimizer until the garbage collector runs.
    _span: "weakref.ref[_SpanCache] | None"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._changed()
        dict.__init__(self, *args, **kwargs)

    def _changed(self) -> None:
        span = getattr(self, "_span", None)
        self._span = None
        cache = None if span is None else span()
        if cache is not None:
            cache.valid = False

    def __setitem__(self, key: str, value: Any) -> None:
        self._changed()
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: str) -> None:
        self._changed()
        dict.__delitem__(self, key)

    def __ior__(self, other: Any) -> "_FlatState":  # type: ignore[override,misc]
        self._changed()
        return dict.__ior__(self, other)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._changed()
        dict.update(self, *args, **kwargs)

    def setdefault(self, *args: Any) -> Any:
        self._changed()
        return dict.setdefault(self, *args)

    def pop(self, *args: Any) -> Any:
        self._changed()
        return dict.pop(self, *args)

    def popitem(self) -> tuple[str, Any]:
        self._changed()
        return dict.popitem(self)

    def clear(self) -> None:
        self._changed()
        dict.clear(self)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (dict, (dict(self),))


class _StateView:
    """Attribute access to one ``_FlatState`` dict (its ``__dict__``), for the optimizer's own writes.

    ``setattr(view, "step", t)`` stores into the dict through CPython's
    ``PyDict_SetItem``, which does not call ``_FlatState.__setitem__``: the cache
    stays valid, and a pass ``map(setattr, views, ...)`` over the members runs in C at
    about half the cost of calling ``dict.__setitem__`` on each.
    """

    __slots__ = ("__dict__",)


class _StateMap(defaultdict[Any, Any]):
    """``optimizer.state`` of an optimizer with flat runs: a defaultdict that counts its changes.

    ``version`` grows whenever an entry is set, added (also by a lookup of a missing
    key) or removed, so a step knows without a pass over the members that they still
    map to the dicts it cached. It copies and pickles as itself; its repr is a
    defaultdict's.
    """

    __slots__ = ("version",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.version = getattr(self, "version", 0) + 1
        defaultdict.__init__(self, *args, **kwargs)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.version += 1
        defaultdict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        self.version += 1
        defaultdict.__delitem__(self, key)

    def __ior__(self, other: Any) -> "_StateMap":  # type: ignore[misc]
        self.version += 1
        return defaultdict.__ior__(self, other)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.version += 1
        defaultdict.update(self, *args, **kwargs)

    def setdefault(self, *args: Any) -> Any:
        self.version += 1
        return defaultdict.setdefault(self, *args)

    def pop(self, *args: Any) -> Any:
        self.version += 1
        return defaultdict.pop(self, *args)

    def popitem(self) -> tuple[Any, Any]:
        self.version += 1
        return defaultdict.popitem(self)

    def clear(self) -> None:
        self.version += 1
        defaultdict.clear(self)

    def __repr__(self) -> str:
        return repr(defaultdict(self.default_factory, self))


class _SpanCache:
    """What one stretch of members (``params``) needs to step again without ``_merge``.

    ``dicts``: the members' ``_FlatState`` dicts, which ``_merge`` accepted, and
    ``views`` onto them; ``merged``: the stretch's state (flat slices and scalars) as
    the last step left it. Or ``dicts`` None: no member has state. ``valid`` turns
    False when one of the dicts changes (or joins another cache); ``mapping`` and
    ``version`` are the ``optimizer.state`` (and its version) last seen to map the
    members to ``dicts``.
    """

    __slots__ = ("__weakref__", "dicts", "mapping", "merged", "params", "valid", "version", "views")

    def __init__(self, params: list[Parameter], dicts: list[Any] | None, merged: dict[str, Any]) -> None:
        self.params, self.dicts, self.merged = params, dicts, merged
        self.views: list[_StateView] = []
        self.valid = True
        self.mapping: Any = None
        self.version = -1

    def still_mapped(self, mapping: Any) -> bool:
        """Whether ``mapping`` (``optimizer.state``) gives the members ``dicts`` (or no state)."""
        if mapping is self.mapping and type(mapping) is _StateMap and mapping.version == self.version:
            return True
        current = map(mapping.get, self.params)
        if self.dicts is None:
            same = not any(current)
        else:
            same = all(map(operator.is_, current, self.dicts))
        if same:
            self.mapping = mapping
            self.version = mapping.version if type(mapping) is _StateMap else -1
        return same


def _views_write_quietly() -> bool:
    """Whether ``setattr`` on a ``_StateView`` bypasses ``_FlatState.__setitem__`` (CPython does)."""
    probe = _FlatState(step=0.0)
    cache = _SpanCache([], [probe], {})
    probe._span = weakref.ref(cache)
    view = _StateView()
    view.__dict__ = probe
    try:
        view.step = 1.0  # type: ignore[attr-defined]
    except Exception:  # an interpreter that refuses a dict subclass as __dict__
        return False
    return cache.valid and dict.get(probe, "step") == 1.0 and list(probe) == ["step"]


_QUIET_VIEWS = _views_write_quietly()
_span_of = operator.attrgetter("_span")


class _StateLayout:
    """One state entry (``exp_avg``, ...) of every member of a FlatBuffer, in one flat array."""

    __slots__ = ("flat", "views")

    def __init__(self, buffer: FlatBuffer) -> None:
        self.flat = buffer.companion()
        self.views = buffer.member_views(self.flat)


class _RunUpdate:
    """A prepared update of members ``lo .. hi-1`` of a buffer by one kernel call."""

    __slots__ = ("before", "buffer", "cache", "dicts", "hi", "hyper", "lo", "operands", "params", "slices", "state")

    def __init__(
        self,
        buffer: FlatBuffer,
        lo: int,
        hi: int,
        params: list[Parameter],
        dicts: list[dict[str, Any]] | None,
        state: dict[str, Any] | None,
        slices: dict[str, Any],
        operands: tuple[Any, ...],
        hyper: dict[str, Any],
        cache: _SpanCache | None,
    ) -> None:
        self.buffer, self.lo, self.hi, self.params = buffer, lo, hi, params
        self.dicts, self.state, self.slices = dicts, state, slices
        self.before = dict(state) if state is not None else {}
        self.operands, self.hyper, self.cache = operands, hyper, cache


class ElementwiseOptimizer(Optimizer):
    """Base for optimizers whose update is one elementwise rule per parameter.

    A subclass provides four methods:

    * ``_hyper(group) -> dict``: the group's hyper-parameters as Python floats, and the
      flags that select the compiled rule, computed once per group and step;
    * ``_init_state(p, group) -> dict | None``: fresh state for a parameter seen with a
      gradient for the first time (None if the optimizer keeps no state for it);
    * ``_operands(p, group, state) -> tuple``: the arrays the rule reads and writes,
      parameter first (a missing state key raises here);
    * ``_update(backend, hyper, state, operands)``: advance counters, compute the
      per-step scalars and run the rule (``backend`` is the parameter's).

    A parameter whose gradient is a :class:`~arrayopt.SparseGrad` goes through
    ``_sparse_operands`` and ``_sparse_update`` instead, with the same contract
    (``_sparse_operands`` usually coalesces the gradient, so that the work, and any
    error, happens before the first update). By default ``_sparse_operands`` raises torch's
    ``RuntimeError("<Name> does not support sparse gradients")`` (the text is the class
    attribute ``_sparse_error``).

    ``step`` first prepares every parameter that has a gradient (hyper-parameters, new
    state, operands, shape and dtype checks) and only then updates them, so an error
    leaves every parameter and every piece of state as it was.

    **Flat runs.** A subclass whose four methods treat every element alike sets the
    class attribute ``_flat_runs = True``: its state arrays have the parameter's shape
    and are created, read and written elementwise, and its other state values are
    plain Python scalars (``step``). Then, for the Parameters of a
    :class:`~arrayopt.ParameterList` (members of one flat buffer that sit next to each
    other in a param group, all with a gradient and with equal scalar state), the
    methods are called once for the whole stretch with a stand-in Parameter whose
    ``data`` and ``grad`` are the flat slices, so the rule runs once per stretch. The
    state arrays of flat Parameters live in flat arrays laid out like their buffer:
    ``state[p]["exp_avg"]`` is still ``p``'s own array (a view), and ``state_dict`` is
    unchanged. Whatever breaks a stretch (a None grad, another group, a different
    ``step``, a state array that is not the optimizer's view, a duplicate parameter)
    splits it, down to the ordinary per-parameter update, which also serves every
    non-flat Parameter and every optimizer that leaves ``_flat_runs`` False (the
    default, required when the update is not elementwise: per-row means, norms).
    Arrays that are not the optimizer's own (a user's Parameters, arrays assigned into
    ``state``) are never moved.

    Checking that a stretch may still run as one call would cost a pass over every
    member's state each step, so a stretch that did keeps its merged state for the
    next: ``optimizer.state`` is then a ``defaultdict`` subclass and the state of a
    flat Parameter a ``dict`` subclass, which note every change made through their
    methods (``state[p] = ...``, ``del state[p]``, ``state[p]["step"] = ...``,
    ``update``, ``pop``, ...), and a step that finds nothing changed reuses the merged
    state; the optimizer writes each new ``step`` into the members' dicts in one pass
    in C. Changes made by calling ``dict``'s own methods on them
    (``dict.__setitem__(state[p], ...)``) go unnoticed. ``state_dict()`` is unchanged;
    the state dicts copy and pickle as plain dicts.

    Args:
        params: as :class:`Optimizer`'s.
        defaults: as :class:`Optimizer`'s.

    Example:
        >>> import numpy as np
        >>> from arrayopt import Parameter
        >>> def sign_update(xp, param, grad, lr):  # the rule, in the cupy.fuse dialect
        ...     param -= lr * xp.sign(grad)
        >>> class SignSGD(ElementwiseOptimizer):
        ...     def __init__(self, params, lr=0.1):
        ...         super().__init__(params, {"lr": lr})
        ...     def _hyper(self, group):
        ...         return {"lr": float(group["lr"])}
        ...     def _init_state(self, p, group):
        ...         return None
        ...     def _operands(self, p, group, state):
        ...         return (p.data, p.grad)
        ...     def _update(self, backend, hyper, state, operands):
        ...         backend.kernel(sign_update)(*operands, hyper["lr"])
        >>> w = Parameter(np.array([1.0, -2.0, 3.0]))
        >>> w.grad = np.array([0.5, -3.0, 0.0])
        >>> SignSGD([w], lr=0.5).step()
        >>> w.data
        array([ 0.5, -1.5,  3. ])
    """

    _flat_runs: ClassVar[bool] = False
    #: the ``step`` counters in state are Python floats (loaded ones are converted)
    _float_steps: ClassVar[bool] = True
    #: torch's message for a sparse gradient given to an optimizer without a sparse path;
    #: ``{name}`` is the class name.
    _sparse_error: ClassVar[str] = "{name} does not support sparse gradients"

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self._flat_reset()
        super().__init__(params, defaults)
        self._count_state_changes()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._count_state_changes()
        if self._float_steps:
            # Counters are host floats here; a loaded one may be a number or a 0-d array
            # (torch's tensor).
            for group in self.param_groups:
                for p in group["params"]:
                    p_state = self.state.get(p)
                    if p_state and "step" in p_state and not isinstance(p_state["step"], float):
                        p_state["step"] = step_to_float(p_state["step"])
        self._flat_reset()
        if self._flat_runs:
            self._lay_out_state()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Args:
            closure: optional callable that recomputes the loss and sets the
                gradients; its return value is returned.
        """
        loss = None
        if closure is not None:
            loss = closure()
        pending: dict[Parameter, Any] = {}
        updates: list[Any] = []
        flat_runs = self._flat_runs
        if flat_runs and "_flat_plans" not in self.__dict__:  # a subclass that skipped our __init__
            self._flat_reset()
        for group in self.param_groups:
            hyper = None
            plan = self._flat_plan(group) if flat_runs else None
            for item in group["params"] if plan is None else plan:
                if type(item) is _Run:
                    spans = item.spans_with_grad()
                    if spans and hyper is None:
                        hyper = self._hyper(group)
                    for lo, hi in spans:
                        self._prepare_span(item, lo, hi, group, hyper, pending, updates)  # type: ignore[arg-type]
                    continue
                if item.grad is None:
                    continue
                if hyper is None:
                    hyper = self._hyper(group)
                self._prepare_one(item, group, hyper, pending, updates)
        new_states: dict[Parameter, Any] = {}
        for update in updates:
            if type(update) is _RunUpdate:
                self._commit_run(update, new_states)
                continue
            p, backend, hyper, state, operands, sparse = update
            if p in pending:
                new_state = pending.pop(p)
                if new_state is not None:
                    new_states[p] = new_state
            if sparse:
                self._sparse_update(backend, hyper, state, operands)
            else:
                self._update(backend, hyper, state, operands)
        if new_states:
            # In the order of the param groups, as a one-by-one loop would add them
            # (state_dict lists them in this order).
            for group in self.param_groups:
                for p in group["params"]:
                    if p in new_states:
                        self.state[p] = new_states.pop(p)
            self.state.update(new_states)
        return loss

    def _hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        raise NotImplementedError

    def _update(self, backend: Backend, hyper: dict[str, Any], state: Any, operands: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def _sparse_operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        raise RuntimeError(self._sparse_error.format(name=type(self).__name__))

    def _sparse_update(self, backend: Backend, hyper: dict[str, Any], state: Any, operands: tuple[Any, ...]) -> None:
        raise NotImplementedError

    # -- one parameter --------------------------------------------------------------------

    def _prepare_one(
        self,
        p: Parameter,
        group: dict[str, Any],
        hyper: dict[str, Any],
        pending: dict[Parameter, Any],
        updates: list[Any],
    ) -> None:
        state = self.state.get(p) or pending.get(p)
        if not state:
            state = pending[p] = self._init_state(p, group)
        sparse = isinstance(p.grad, SparseGrad)
        operands = self._sparse_operands(p, group, state) if sparse else self._operands(p, group, state)
        backend = get_backend(p.data)
        try:
            backend.check_operands(operands)
        except ValueError as exc:
            raise ValueError(f"{p._label()}: {exc}") from None
        updates.append((p, backend, hyper, state, operands, sparse))

    # -- runs of flat parameters ------------------------------------------------------------

    def _count_state_changes(self) -> None:
        """With flat runs, make a plain ``state`` defaultdict (not yet shared: new or loaded) a ``_StateMap``."""
        if self._flat_runs and type(self.state) is defaultdict:
            self.state = _StateMap(self.state.default_factory, self.state)

    def _flat_reset(self) -> None:
        # (group, its params when planned, plan) per id(group); FlatBuffer -> key -> layout
        self._flat_plans: dict[int, tuple[dict[str, Any], list[Parameter], list[Any] | None]] = {}
        self._flat_layouts: dict[FlatBuffer, dict[str, _StateLayout]] = {}

    def _flat_plan(self, group: dict[str, Any]) -> list[Any] | None:
        """The group's params with each buffer's members merged into runs; None if it has no flat ones.

        A run is a stretch of consecutive members of one buffer that all belong to the
        group, whatever their order in it: updates of different parameters are
        independent, so the order they run in changes nothing. A buffer's runs take the
        place of its first member; parameters listed twice stay apart (each occurrence
        is a step, as in torch).
        """
        params = group["params"]
        cached = self._flat_plans.get(id(group))
        if cached is not None and cached[0] is group and cached[1] == params:
            return cached[2]
        counts: dict[int, int] = {}
        for p in params:
            counts[id(p)] = counts.get(id(p), 0) + 1
        order: list[Any] = []
        members: dict[FlatBuffer, list[tuple[int, Parameter]]] = {}
        for p in params:
            flat = p._flat
            if flat is None or counts[id(p)] > 1:
                order.append(p)
                continue
            entry = members.get(flat[0])
            if entry is None:
                entry = members[flat[0]] = []
                order.append(flat[0])
            entry.append((flat[1], p))
        result: list[Any] | None = None
        if members:
            result = []
            for item in order:
                if type(item) is not FlatBuffer:
                    result.append(item)
                    continue
                run: _Run | None = None
                for index, p in sorted(members[item], key=operator.itemgetter(0)):
                    if run is not None and run.hi == index:
                        run.hi += 1
                        run.params.append(p)
                    else:
                        run = _Run(item, index, p)
                        result.append(run)
        self._flat_plans[id(group)] = (group, list(params), result)
        return result

    def _layout(self, buffer: FlatBuffer, key: str) -> _StateLayout:
        layouts = self._flat_layouts.get(buffer)
        if layouts is None:
            layouts = self._flat_layouts[buffer] = {}
        entry = layouts.get(key)
        if entry is None:
            entry = layouts[key] = _StateLayout(buffer)
        return entry

    def _lay_out_state(self) -> None:
        """Move loaded state arrays of flat Parameters into flat layouts (they are the optimizer's copies).

        Their plain state dicts become ``_FlatState`` dicts, so the stretches they form
        can be cached (nothing else refers to a dict that was just loaded).
        """
        for group in self.param_groups:
            for p in group["params"]:
                flat = p._flat
                state = self.state.get(p)
                if flat is None or not state:
                    continue
                if type(state) is dict:
                    state = self.state[p] = _FlatState(state)
                buffer, index = flat
                for key, value in state.items():
                    if _fits(buffer, value, p.shape):
                        view = self._layout(buffer, key).views[index]
                        if view is not value:
                            view[...] = value
                            state[key] = view

    def _prepare_span(
        self,
        run: _Run,
        lo: int,
        hi: int,
        group: dict[str, Any],
        hyper: dict[str, Any],
        pending: dict[Parameter, Any],
        updates: list[Any],
    ) -> None:
        """Prepare members ``lo .. hi-1`` of ``run`` (all with a gradient), in as few kernel calls as allowed.

        A stretch whose state merged on an earlier step and has not changed since (its
        ``_FlatState`` dicts say so, and ``optimizer.state`` still maps the members to
        them) reuses that merged state instead of checking every value again.
        """
        cache = run.caches.get((lo, hi))
        if cache is not None and cache.valid and cache.still_mapped(self.state):
            if cache.dicts is not None:
                state = dict(cache.merged)  # the rule's _update rebinds scalars in it
                self._prepare_run(run.buffer, lo, hi, cache.params, cache.dicts, state, group, hyper, updates, cache)
                return
            if self._prepare_run(run.buffer, lo, hi, cache.params, None, None, group, hyper, updates):
                return
        params = run.params[lo - run.lo : hi - run.lo]
        states: list[Any] = list(map(self.state.get, params))
        segments = self._segments(run.buffer, lo, hi, states)
        cache = None
        if len(segments) == 1 and segments[0][2] is _FRESH:
            self._cache_span(run, lo, hi, params, None, {})
        elif len(segments) == 1 and segments[0][2] is _LAID and set(map(type, states)) == {_FlatState}:
            cache = self._cache_span(run, lo, hi, params, states, segments[0][3])
        else:
            run.caches.pop((lo, hi), None)
        for a, b, kind, merged in segments:
            members = params[a - lo : b - lo]
            if kind is _PLAIN:
                for p in members:
                    self._prepare_one(p, group, hyper, pending, updates)
            else:
                dicts: list[dict[str, Any]] | None = None if kind is _FRESH else states[a - lo : b - lo]
                if cache is not None:  # the one segment, all of the span
                    dicts = cache.dicts
                if not self._prepare_run(run.buffer, a, b, members, dicts, merged, group, hyper, updates, cache):
                    for p in members:
                        self._prepare_one(p, group, hyper, pending, updates)

    def _cache_span(
        self, run: _Run, lo: int, hi: int, params: list[Parameter], states: list[Any] | None, merged: Any
    ) -> _SpanCache:
        """Remember the merged state of members ``lo .. hi-1``: their ``_FlatState`` dicts, or None for none.

        A dict belongs to one cache at a time: the cache it leaves becomes stale, so
        the optimizer's quiet writes (which skip ``_FlatState``'s notice) only ever
        reach dicts of the valid cache being stepped.
        """
        cache = _SpanCache(params, states, dict(merged))
        if states is not None:
            spans = list(map(_span_of, states))
            for old in dict(zip(map(id, spans), spans, strict=True)).values():  # by id: a dead weakref has no hash
                left = None if old is None else old()
                if left is not None:
                    left.valid = False
            deque(map(setattr, states, repeat("_span"), repeat(weakref.ref(cache))), maxlen=0)
            if _QUIET_VIEWS:
                cache.views = [_StateView() for _ in states]
                deque(map(setattr, cache.views, repeat("__dict__"), states), maxlen=0)
        cache.still_mapped(self.state)
        # Keep the caches of the stretches this step may still meet: valid, and apart.
        for key, known in list(run.caches.items()):
            if not known.valid or (key[0] < hi and lo < key[1]):
                del run.caches[key]
        run.caches[(lo, hi)] = cache
        return cache

    def _segments(
        self, buffer: FlatBuffer, lo: int, hi: int, states: list[Any]
    ) -> list[tuple[int, int, str, dict[str, Any] | None]]:
        """Split members ``lo .. hi-1`` into stretches that one kernel call may update.

        Each is ``(a, b, kind, merged)``: ``_FRESH`` (no state yet), ``_LAID`` (state
        arrays are this optimizer's flat views, equal scalars; ``merged`` is the
        stretch's state with flat slices) or ``_PLAIN`` (update one by one).
        """
        if not any(states):
            return [(lo, hi, _FRESH, None)]
        merged = self._merge(buffer, lo, hi, states)
        if merged is not None:
            return [(lo, hi, _LAID, merged)]
        signatures = [self._signature(buffer, lo + k, s) for k, s in enumerate(states)]
        segments: list[tuple[int, int, str, dict[str, Any] | None]] = []
        start = 0
        for k in range(1, len(states) + 1):
            if k < len(states) and signatures[k] == signatures[start]:
                continue
            a, b, signature = lo + start, lo + k, signatures[start]
            if signature is _FRESH or signature is _PLAIN:
                segments.append((a, b, signature, None))
            else:
                part = self._merge(buffer, a, b, states[start:k])
                segments.append((a, b, _LAID, part) if part is not None else (a, b, _PLAIN, None))
            start = k
        return segments

    def _signature(self, buffer: FlatBuffer, index: int, state: Any) -> Any:
        """What must be equal between neighbours for one kernel call to update both."""
        if not state:
            return _FRESH
        layouts = self._flat_layouts.get(buffer, {})
        parts: list[tuple[Any, ...]] = []
        for key, value in state.items():
            entry = layouts.get(key)
            if entry is not None and value is entry.views[index]:
                parts.append((key,))
            elif type(value) in _SCALAR_TYPES:
                parts.append((key, type(value), repr(value)))
            else:
                return _PLAIN
        return tuple(parts)

    def _merge(self, buffer: FlatBuffer, lo: int, hi: int, states: list[Any]) -> dict[str, Any] | None:
        """The shared state of members ``lo .. hi-1`` as flat slices and scalars, or None if they differ.

        This runs every step over every member, so each check is one pass in C
        (``map``) rather than a Python loop.
        """
        first = states[0]
        if not first:
            return None
        try:
            if set(map(len, states)) != {len(first)}:  # also fails on a missing state (None)
                return None
        except TypeError:
            return None
        layouts = self._flat_layouts.get(buffer, {})
        start, stop = buffer.offsets[lo], buffer.offsets[hi]
        merged: dict[str, Any] = {}
        for key, value in first.items():
            values = map(operator.itemgetter(key), states)
            entry = layouts.get(key)
            try:
                if entry is not None and value is entry.views[lo]:
                    if not all(map(operator.is_, values, entry.views[lo:hi])):
                        return None
                    merged[key] = entry.flat[start:stop]
                elif type(value) in _SCALAR_TYPES:
                    if not all(map(operator.is_, values, repeat(value))):
                        wanted = (type(value), repr(value))
                        if any((type(v), repr(v)) != wanted for v in map(operator.itemgetter(key), states)):
                            return None
                    merged[key] = value
                else:
                    return None
            except KeyError:  # a member without this key
                return None
        return merged

    def _prepare_run(
        self,
        buffer: FlatBuffer,
        lo: int,
        hi: int,
        params: list[Parameter],
        dicts: list[dict[str, Any]] | None,
        merged: dict[str, Any] | None,
        group: dict[str, Any],
        hyper: dict[str, Any],
        updates: list[Any],
        cache: _SpanCache | None = None,
    ) -> bool:
        """Prepare one kernel call for members ``lo .. hi-1``; False if fresh state cannot be laid out flat.

        ``cache``: the members' cached stretch, when ``dicts`` are its dicts.
        """
        start, stop = buffer.offsets[lo], buffer.offsets[hi]
        stand_in = Parameter._unchecked(buffer.data[start:stop], buffer.raw_grad[start:stop])
        slices: dict[str, Any] = {}
        if dicts is None:
            state = self._init_state(stand_in, group)
            if state is not None:
                for value in state.values():
                    if not (type(value) in _SCALAR_TYPES or _fits(buffer, value, (stop - start,))):
                        return False
                for key, value in state.items():
                    if type(value) not in _SCALAR_TYPES:
                        slot = self._layout(buffer, key).flat[start:stop]
                        slot[...] = value  # a slot no state uses yet: harmless if the step fails
                        state[key] = slices[key] = slot
        else:
            state = merged
        operands = self._operands(stand_in, group, state)
        try:
            buffer.backend.check_operands(operands)
        except ValueError as exc:
            raise ValueError(f"{params[0]._label()}: {exc}") from None
        if dicts is None or cache is None or cache.dicts is not dicts:
            cache = None
        updates.append(_RunUpdate(buffer, lo, hi, params, dicts, state, slices, operands, hyper, cache))
        return True

    def _commit_run(self, u: _RunUpdate, new_states: dict[Parameter, Any]) -> None:
        """Run the kernel once, then give each member its share of the new state."""
        self._update(u.buffer.backend, u.hyper, u.state, u.operands)
        state = u.state
        if state is None:  # the optimizer keeps no state for these parameters
            return
        fresh = u.dicts is None
        dicts = [_FlatState() for _ in u.params] if u.dicts is None else u.dicts
        before, cache = u.before, u.cache
        for key, value in state.items():
            if not fresh and before.get(key, _MISSING) is value:
                continue
            scalar = type(value) in _SCALAR_TYPES
            values = repeat(value) if scalar else self._member_values(u, key, value)
            if fresh:  # new dicts: one pass in C
                deque(map(dict.__setitem__, dicts, repeat(key), values), maxlen=0)
                continue
            if scalar and key in before and cache is not None and cache.valid:
                # A new value for a key every dict of the valid cache has: written
                # quietly, so the cache stays valid (and right).
                if cache.views and type(key) is str and not hasattr(_StateView, key):
                    deque(map(setattr, cache.views, repeat(key), values), maxlen=0)
                else:
                    deque(map(dict.__setitem__, dicts, repeat(key), values), maxlen=0)
                continue
            for d, member_value in zip(dicts, values, strict=not scalar):
                d[key] = member_value
        for key in before:
            if key not in state:
                for d in dicts:
                    del d[key]
        if cache is not None and cache.valid:
            cache.merged = dict(state)
        if fresh:
            new_states.update(zip(u.params, dicts, strict=True))

    def _member_values(self, u: _RunUpdate, key: str, value: Any) -> list[Any]:
        """Each member's own array for a state array ``value`` that covers the whole stretch."""
        buffer = u.buffer
        start, stop = buffer.offsets[u.lo], buffer.offsets[u.hi]
        if u.slices.get(key) is value:
            return self._layout(buffer, key).views[u.lo : u.hi]
        if _fits(buffer, value, (stop - start,)):
            entry = self._layout(buffer, key)
            entry.flat[start:stop] = value
            return entry.views[u.lo : u.hi]
        # Not laid out like the parameters (a 0-d array, say): every member gets a copy.
        xp = get_backend(value).xp
        return [xp.asarray(value, copy=True) for _ in u.params]


def _fits(buffer: FlatBuffer, value: Any, shape: tuple[int, ...]) -> bool:
    """Whether ``value`` is an array of ``shape`` with the buffer's library, dtype and device."""
    if not is_array(value) or tuple(value.shape) != shape:
        return False
    backend = get_backend(value)
    return backend is buffer.backend and value.dtype == buffer.dtype and backend.device(value) == buffer._device


def step_to_float(step: Any) -> float:
    """A loaded ``step`` counter (number or 0-d array) as a Python float."""
    if is_array(step):
        step = get_backend(step).to_numpy(step).reshape(())
    return float(_check_step(step))


def _check_step(step: Any) -> Any:
    try:
        ok = not isinstance(step, (bool, str, bytes)) and math.isfinite(float(step)) and float(step) >= 0
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int too large for a float
        ok = False
    if not ok:
        raise ValueError(f"invalid step counter in optimizer state: {reprlib.repr(step)}")
    return step


Optimizer.step = _with_step_hooks(Optimizer.step)  # type: ignore[method-assign]


ParamsT = Iterable[Parameter] | Iterable[dict[str, Any]] | Iterable[tuple[str, Parameter]]

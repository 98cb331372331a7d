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

import gc
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from copy import deepcopy
from dataclasses import dataclass
from itertools import chain
from typing import Any, ClassVar, Generic, TypeVar

from arrayopt import _bundles
from arrayopt._flat_runs import Block, FlatRuns, MemberState, RunUpdate
from arrayopt._hooks import (
    RemovableHandle,
    register,
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
    with_step_hooks,
)
from arrayopt._scalars import scalar_array
from arrayopt._state_check import StateKey, check_group_values, check_state_dict, check_step, step_to_float
from arrayopt._step_checks import check_deferred, checked
from arrayopt._validate import to_float
from arrayopt._validate import typename as _typename
from arrayopt.backends import Backend, get_backend, is_array
from arrayopt.backends.interrupts import deferred_interrupts
from arrayopt.parameter import Parameter
from arrayopt.sparse import SparseGrad

__all__ = [
    "ElementwiseOptimizer",
    "Hyper",
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

    Threads: as in torch, an optimizer and its parameters are used by one thread at a
    time. A ``step`` called while another thread is inside this optimizer's ``step``
    raises RuntimeError (torch would interleave the two and give wrong numbers);
    different optimizers over different parameters may step in different threads at
    once.

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
            cls.step = with_step_hooks(cls.__dict__["step"])  # type: ignore[method-assign]

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
        before stepping again if you need a snapshot. (The entry of a flat Parameter
        whose state its buffer holds is a new dict of the same arrays.)
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
        packed_state = {
            (param_mappings[id(k)] if isinstance(k, Parameter) else k): v.copy() if type(v) is MemberState else v
            for k, v in state.items()
        }
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

    def _snapshot(self) -> Any:
        """What :meth:`_restore` needs to put the optimizer back as it is now, after a ``load_state_dict``.

        ``load_state_dict`` replaces what it changes (``state``, ``param_groups``, the
        flat runs' held state: see ``ElementwiseOptimizer``) rather than writing into
        it, except ``defaults``, so holding the attributes and a copy of ``defaults``
        is a snapshot. Used by :func:`arrayopt.load_into` to roll back.
        """
        return dict(self.__dict__), dict(self.defaults)

    def _restore(self, snapshot: Any) -> None:
        """Put back every attribute as :meth:`_snapshot` found it."""
        attributes, defaults = snapshot
        self.__dict__.clear()
        self.__dict__.update(attributes)
        self.defaults.clear()
        self.defaults.update(defaults)


def _cast_state(param: Parameter, value: Any, key: Any = None) -> Any:
    """A copy of ``value`` with its arrays on ``param``'s library and device.

    Real floating-point parameters also give their dtype to every array except
    ``step`` (torch's policy, pytorch/pytorch#74424).
    """
    if key == "step" and not isinstance(value, (dict, MemberState, list, tuple)):
        # Counters are host numbers in arrayopt; a 0-d array (e.g. torch's tensor) is read.
        return step_to_float(value) if is_array(value) else check_step(value)
    if is_array(value) or isinstance(value, SparseGrad):
        backend = get_backend(param.data)
        cast = backend.is_floating(param.data) and not backend.is_complex(param.data)
        if isinstance(value, SparseGrad):  # e.g. SGD's momentum buffer under sparse gradients
            return value._converted(backend, param.data, cast=cast)
        return backend.convert(value, param.data, cast=cast)
    if isinstance(value, (dict, MemberState)):
        return {k: _cast_state(param, v, key=k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_state(param, v, key=key) for v in value)
    return deepcopy(value)


@dataclass(frozen=True)
class Hyper:
    """A param group's hyper-parameters for one step, as an optimizer's ``_hyper`` makes them.

    Flags are fixed, numbers flow: ``flags`` are the keyword arguments that select the
    compiled rule (``backend.kernel(rule, **hyper.flags)``); a subclass (a frozen
    dataclass) adds the per-step numbers as fields: Python floats, computed with
    torch's expressions once per group and step.

    Args:
        flags: the rule's keyword flags (bools and strings).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class SignHyper(Hyper):
        ...     lr: float
        >>> hyper = SignHyper(flags={"maximize": False}, lr=0.1)
        >>> hyper.flags, hyper.lr
        ({'maximize': False}, 0.1)
    """

    flags: dict[str, Any]


H = TypeVar("H")


class ElementwiseOptimizer(Optimizer, Generic[H]):
    """Base for optimizers whose update is one elementwise rule per parameter: the way to add one.

    The rule is a function at the top of the optimizer's module, written once in the
    ``cupy.fuse`` dialect (``backends.trace``): ``rule(xp, param, grad, *state_arrays,
    *numbers, **flags)``, in place, with its math in the docstring. The class around
    it provides four methods, called by :meth:`step`:

    * ``_hyper(group) -> H``: the group's :class:`Hyper` (its flags and per-step
      numbers), computed once per group and step;
    * ``_init_state(p, group) -> dict | None``: fresh state for a parameter seen with a
      gradient for the first time (None if the optimizer keeps no state for it);
    * ``_operands(p, group, state) -> tuple``: the arrays the rule reads and writes,
      parameter first (a missing state key raises here);
    * ``_update(backend, hyper, state, operands)``: advance counters, compute the
      per-step scalars and run the rule (``backend`` is the parameter's).

    and may set these class attributes:

    * ``_state_keys``: the state it keeps, ``{key: StateKey(kind)}``
      (``arrayopt._state_check.StateKey``), which ``load_state_dict`` checks against
      and converts (a ``"step"`` to a Python float, a ``"scalar"`` number to a 0-d
      float32 array, as torch keeps them);
    * ``_defaults_on_load``: group keys filled in when loading an older state dict;
    * ``_flat_runs = True``: the rule and state are elementwise (see below);
    * ``_bundled = True``: ``_update`` only advances scalar state, passes the operands
      to kernels and may store an operand in the state, and ``_operands`` gives arrays
      at the same positions and the same numbers elsewhere for parameters of one group
      whose states have the same keys and scalars; then ``_update`` runs once for
      many separate Parameters, on :class:`~arrayopt.backends.base.Bundle` operands
      (``arrayopt._bundles``: the numbers of the one-by-one loop, with less Python);
    * ``_float_steps = False``: keep ``step`` counters as saved (SparseAdam's ints);
    * ``_sparse_error``: torch's message for a sparse gradient it does not take.

    A parameter whose gradient is a :class:`~arrayopt.SparseGrad` goes through
    ``_sparse_operands`` and ``_sparse_update`` instead, with the same contract
    (``_sparse_operands`` usually coalesces the gradient, so that the work, and any
    error, happens before the first update). By default ``_sparse_operands`` raises torch's
    ``RuntimeError("<Name> does not support sparse gradients")`` (the text is the class
    attribute ``_sparse_error``).

    ``step`` first prepares every parameter that has a gradient (hyper-parameters, new
    state, operands, shape and dtype checks; parameters, state arrays or member views
    of flat storage made read-only; numbers of the :class:`Hyper` too large for a
    parameter's dtype; operands overlapping in memory without being the same elements)
    and only then updates them, so an error leaves every parameter, every piece of
    state and every counter as it was. A Ctrl-C (KeyboardInterrupt) during the updates
    waits for them to finish (``arrayopt.backends.interrupts``): it never leaves a step
    half done. A gradient or state array that is the parameter's own array (``p.grad =
    p.data``) runs the rule as written, one operation at a time, so each operation sees
    what the ones before it wrote, as torch's in-place operations do
    (:class:`~arrayopt.backends.base.InOrder`).

    **Flat runs.** With ``_flat_runs = True`` (state arrays shaped like the parameter,
    created, read and written elementwise; other state a float ``step`` or None), the
    buffer of a :class:`~arrayopt.ParameterList` holds its members' state, one array
    per key laid out like the buffer, and the methods run once per *run* of members
    (neighbours in the buffer and in a group, with a gradient, the same state keys and
    ``step``) on a stand-in Parameter over the run's flat slices. ``state[p]`` is then
    a mapping of ``p``'s views and ``step``, copied and pickled as a dict; whatever is
    done to it is seen by the next step (a value the buffer cannot hold, such as an
    array of your own, makes the member keep its own state and step alone). Every other
    Parameter, and every optimizer whose update is not elementwise (per-row means,
    norms), is updated one parameter at a time. See ``arrayopt._flat_runs``.

    Args:
        params: as :class:`Optimizer`'s.
        defaults: as :class:`Optimizer`'s.

    Example:
        >>> import numpy as np
        >>> from dataclasses import dataclass
        >>> import arrayopt
        >>> from arrayopt import Parameter
        >>> def sign_update(xp, param, grad, lr, *, maximize):  # the rule, in the cupy.fuse dialect
        ...     param -= lr * (-xp.sign(grad) if maximize else xp.sign(grad))
        >>> @dataclass(frozen=True)
        ... class SignHyper(Hyper):
        ...     lr: float
        >>> class SignSGD(ElementwiseOptimizer[SignHyper]):
        ...     _flat_runs = True  # stateless and elementwise: a ParameterList steps in one call
        ...     def __init__(self, params, lr=0.1, maximize=False):
        ...         super().__init__(params, {"lr": lr, "maximize": maximize})
        ...     def _hyper(self, group):
        ...         return SignHyper(flags={"maximize": bool(group["maximize"])}, lr=float(group["lr"]))
        ...     def _init_state(self, p, group):
        ...         return None
        ...     def _operands(self, p, group, state):
        ...         return (p.data, p.grad)
        ...     def _update(self, backend, hyper, state, operands):
        ...         backend.kernel(sign_update, **hyper.flags)(*operands, hyper.lr)
        >>> w = Parameter(np.array([1.0, -2.0, 3.0]))
        >>> w.grad = np.array([0.5, -3.0, 0.0])
        >>> SignSGD([w], lr=0.5).step()
        >>> w.data
        array([ 0.5, -1.5,  3. ])
        >>> params = arrayopt.ParameterList([np.ones(2), np.zeros(3)])
        >>> params.flat_grad = np.array([1.0, -1.0, 2.0, 0.0, -2.0])
        >>> SignSGD(params, lr=0.5, maximize=True).step()   # one kernel call for both
        >>> params.flat_data
        array([ 1.5,  0.5,  0.5,  0. , -0.5])
    """

    _flat_runs: ClassVar[bool] = False
    #: separate Parameters with equal scalar state update in one ``_update`` call on bundles (``arrayopt._bundles``)
    _bundled: ClassVar[bool] = False
    #: the ``step`` counters in state are Python floats (loaded ones are converted)
    _float_steps: ClassVar[bool] = True
    #: torch's message for a sparse gradient given to an optimizer without a sparse path;
    #: ``{name}`` is the class name.
    _sparse_error: ClassVar[str] = "{name} does not support sparse gradients"

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self._flat = FlatRuns()
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._convert_loaded_state()
        self._flat = FlatRuns()
        if self._flat_runs:
            self._flat.hold(self)

    def _convert_loaded_state(self) -> None:
        """Loaded ``step`` counters become Python floats (unless ``_float_steps`` is False), and numbers
        under ``StateKey("scalar")`` keys 0-d float32 arrays on the parameter's device, as torch keeps them."""
        scalar_keys = [key for key, spec in (self._state_keys or {}).items() if spec.kind == "scalar"]
        for group in self.param_groups:
            for p in group["params"]:
                p_state = self.state.get(p)
                if not p_state:
                    continue
                if self._float_steps and "step" in p_state and not isinstance(p_state["step"], float):
                    p_state["step"] = step_to_float(p_state["step"])
                for key in scalar_keys:
                    if key in p_state and not is_array(p_state[key]):
                        p_state[key] = scalar_array(p.data, to_float(p_state[key]))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step.

        Args:
            closure: optional callable that recomputes the loss and sets the
                gradients; its return value is returned.
        """
        loss = None
        if closure is not None:
            loss = closure()
        # A step makes a few short-lived tuples per parameter and no reference cycles: the
        # garbage collector, which would run during it (once per 700 new objects) and then
        # traverse everything the process holds, waits for its end (as it was before).
        collecting = gc.isenabled()
        if collecting:
            gc.disable()
        try:
            self._prepare_and_update()
        finally:
            if collecting:
                gc.enable()
        return loss

    def _prepare_and_update(self) -> None:
        """The step proper: every update prepared and checked, then all of them made (see :meth:`step`)."""
        pending: dict[Parameter, Any] = {}
        updates: list[Any] = []
        flat = self.__dict__.get("_flat") if self._flat_runs else None
        if flat is None and self._flat_runs:  # a subclass that skipped our __init__
            flat = self._flat = FlatRuns()
        # The checks of separate Parameters that may be bundled are made a param group at a
        # time (see _step_checks.check_deferred); the first refusal is still the first parameter's.
        unchecked: list[int] | None = [] if self._bundled else None
        try:
            for group in self.param_groups:
                hyper = None
                plan = flat.plan(group) if flat is not None else None
                for item in group["params"] if plan is None else plan:
                    if type(item) is Block:
                        for lo, hi in item.ranges_with_grad():
                            if hyper is None:
                                hyper = self._hyper(group)
                            flat.prepare(self, item, lo, hi, group, hyper, pending, updates)  # type: ignore[union-attr]
                        continue
                    if item.grad is None:
                        continue
                    if hyper is None:
                        hyper = self._hyper(group)
                    self._prepare_one(item, group, hyper, pending, updates, unchecked)
                if unchecked:
                    check_deferred(self, updates, unchecked)
        except Exception:
            if unchecked:
                try:
                    check_deferred(self, updates, unchecked)
                except Exception as earlier:  # refused before the parameter that raised
                    raise earlier from None
            raise
        # Everything is checked: now the updates, whole. A Ctrl-C from here on waits for
        # the end of the step (backends/interrupts.py), so it never leaves some
        # parameters, states or counters updated and others not.
        with deferred_interrupts():
            new_states: dict[Parameter, Any] = {}
            bundled = self._bundled
            i, count = 0, len(updates)
            while i < count:
                update = updates[i]
                i += 1
                if type(update) is RunUpdate:
                    flat.commit(self, update, new_states)  # type: ignore[union-attr]
                    continue
                if bundled and i < count:
                    end = _bundles.extent(updates, i - 1)
                    if end > i:  # separate Parameters updated together (see arrayopt._bundles)
                        _bundles.commit(self, updates[i - 1 : end], pending, new_states)
                        i = end
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

    def _hyper(self, group: dict[str, Any]) -> H:
        raise NotImplementedError

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any] | None:
        raise NotImplementedError

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        raise NotImplementedError

    def _update(self, backend: Backend, hyper: H, state: Any, operands: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def _sparse_operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        raise RuntimeError(self._sparse_error.format(name=type(self).__name__))

    def _sparse_update(self, backend: Backend, hyper: H, state: Any, operands: tuple[Any, ...]) -> None:
        raise NotImplementedError

    def _prepare_one(
        self,
        p: Parameter,
        group: dict[str, Any],
        hyper: H,
        pending: dict[Parameter, Any],
        updates: list[Any],
        unchecked: list[int] | None = None,
    ) -> None:
        """Prepare the update of one parameter (with a gradient) on its own.

        With ``unchecked`` (a list), an update a backend may bundle is appended
        unchecked and its index noted there, for ``_step_checks.check_deferred``.
        """
        state = self.state.get(p) or pending.get(p)
        if not state:
            state = pending[p] = self._init_state(p, group)
        sparse = isinstance(p.grad, SparseGrad)
        operands = self._sparse_operands(p, group, state) if sparse else self._operands(p, group, state)
        backend = get_backend(p.data)
        update = (p, backend, hyper, state, operands, sparse)
        if unchecked is not None and not sparse and backend.takes_bundles:
            unchecked.append(len(updates))
            updates.append(update)
            return
        updates.append(checked(self, update))


Optimizer.step = with_step_hooks(Optimizer.step)  # type: ignore[method-assign]


ParamsT = Iterable[Parameter] | Iterable[dict[str, Any]] | Iterable[tuple[str, Parameter]]

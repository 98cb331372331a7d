"""Hooks: the handles torch's ``register_*_hook`` methods return, the global step hooks, and the
wrapper that runs the step hooks around an optimizer's ``step`` (one thread at a time)."""

import functools
import itertools
import weakref
from collections import OrderedDict
from collections.abc import Callable
from itertools import chain
from threading import get_ident
from typing import Any

from arrayopt import _nonfinite

_next_id = itertools.count()


class RemovableHandle:
    """Handle returned by every ``register_*_hook``; ``remove()`` unregisters the hook.

    It holds only a weak reference to the hook table, so it does not keep an
    optimizer alive. It is also a context manager that removes the hook on exit.
    """

    def __init__(self, hooks: "OrderedDict[int, Any]") -> None:
        self.id = next(_next_id)
        self._hooks_ref = weakref.ref(hooks)

    def remove(self) -> None:
        hooks = self._hooks_ref()
        if hooks is not None:
            hooks.pop(self.id, None)

    def __enter__(self) -> "RemovableHandle":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.remove()


def register(hooks: "OrderedDict[int, Any]", hook: Any, prepend: bool = False) -> RemovableHandle:
    """Add ``hook`` to ``hooks`` (first if ``prepend``) and return its handle."""
    if not callable(hook):
        raise TypeError(f"hook must be callable, got {type(hook).__name__}")
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    if prepend:
        hooks.move_to_end(handle.id, last=False)
    return handle


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


def with_step_hooks(step: Callable[..., Any]) -> Callable[..., Any]:
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
            if self.__dict__.get("_stepping", get_ident()) != get_ident():
                raise _concurrent_step(self)
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
        # One thread steps an optimizer at a time (as in torch); a second one is refused
        # rather than let the two interleave their updates. setdefault is atomic.
        me = get_ident()
        if self.__dict__.setdefault("_stepping", me) != me:
            raise _concurrent_step(self)
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
            del self.__dict__["_stepping"]
        for post_hook in chain(self._optimizer_step_post_hooks.values(), _global_step_post_hooks.values()):
            post_hook(self, args, kwargs)
        return out

    wrapper._arrayopt_hooked = True  # type: ignore[attr-defined]
    return wrapper


def _concurrent_step(optimizer: Any) -> RuntimeError:
    return RuntimeError(
        f"{type(optimizer).__name__}.step() was called from two threads at once; an optimizer is "
        "stepped by one thread at a time (use one optimizer per thread, or a lock)"
    )

"""Removable hook handles, as returned by torch's ``register_*_hook`` methods."""

import itertools
import weakref
from collections import OrderedDict
from typing import Any

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

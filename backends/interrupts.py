"""Ctrl-C during an update: held back until the update is whole.

Python runs a signal's handler in the main thread, between two bytecodes, wherever
that thread is: SIGINT's default handler raising KeyboardInterrupt between two
parameters of a step (or between two chunks of one array) would leave some arrays
updated and others not, and a thread pool still writing after the exception reached
the caller. Code that must not be cut in two runs under :class:`deferred_interrupts`:
there a SIGINT is only recorded, and its handler runs (KeyboardInterrupt is raised)
once the block has finished. A KeyboardInterrupt therefore never leaves a step half
done: either it arrives before the step starts changing anything, and nothing has
changed, or the step completes and the KeyboardInterrupt is raised as the step
returns.

Why finish rather than undo: undoing would need a copy of every array the step
writes, taken before writing (twice the memory traffic of the step, and as much
memory again), while holding the signal back costs two ``sigaction`` calls (about 1.5
microseconds) per block, and nothing in a thread other than the main one, where no
handler ever runs; Ctrl-C is answered at the end of the step instead of inside it. Other
signals are not held back.
"""

import importlib
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

__all__ = ["deferred_interrupts"]

# The C module behind ``signal``: its getsignal and signal return the handler as it is,
# without the enum conversion that makes ``signal.signal`` cost several microseconds.
try:
    _raw: Any = importlib.import_module("_signal")
except ImportError:  # pragma: no cover - every CPython has it
    _raw = signal

_SIGINT = int(signal.SIGINT)


class deferred_interrupts:
    """A block during which SIGINT's Python handler waits for the block to finish.

    Entered in the main thread with a Python-level SIGINT handler installed (the
    default one raises KeyboardInterrupt), it puts a recorder in its place; on exit
    it puts the handler back and, if a SIGINT came in the meantime, calls it once
    (so KeyboardInterrupt is raised then). Elsewhere, or nested in another such
    block, it does nothing.

    Example:
        >>> import os, signal
        >>> done = []
        >>> try:
        ...     with deferred_interrupts():
        ...         os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C in the middle of the block
        ...         done.append("the rest of the block")
        ... except KeyboardInterrupt:
        ...     print("KeyboardInterrupt after", done)
        KeyboardInterrupt after ['the rest of the block']
    """

    __slots__ = ("_caught", "_previous")

    def __init__(self) -> None:
        self._previous: Any = None
        self._caught: tuple[int, FrameType | None] | None = None

    def __enter__(self) -> "deferred_interrupts":
        if threading.get_ident() != threading.main_thread().ident:  # (after a fork: the forking thread)
            return self
        handler = _raw.getsignal(_SIGINT)
        # SIG_DFL, SIG_IGN or a handler set from C: nothing runs in Python to interrupt us.
        # Our own recorder: an outer block holds the signal back already.
        if not callable(handler) or isinstance(getattr(handler, "__self__", None), deferred_interrupts):
            return self
        self._previous = handler
        _raw.signal(_SIGINT, self._record)
        return self

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self._caught is None:
            self._caught = (signum, frame)

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        previous = self._previous
        if previous is None:
            return
        self._previous = None
        _raw.signal(_SIGINT, previous)
        caught, self._caught = self._caught, None
        if caught is not None:
            previous(*caught)  # the default handler raises KeyboardInterrupt here

"""numba kernels made off the critical path: one daemon thread imports numba and compiles them.

With numba installed and ``ARRAYOPT_NUMBA`` unset (or ``auto``), the first launch of a
rule does not wait for numba: it runs on NumPy (a ufunc plan, or the rule itself), and
hands the kernel's making (importing numba, tracing, compiling or loading from the
cache) to the thread here. Once the kernel is ready, later launches run it. Every path
gives the same bits, so which one ran is invisible in the results; only the time of
the first steps changes (``script start to end of the first step`` stays what it is
without numba).

The thread is a daemon: a script that ends first does not wait for it (a compilation
cut short leaves no cache entry, or one that the next process rejects and writes
again: see :mod:`arrayopt.backends.jit`). Jobs run one at a time, in order. A job that
raises is reported as a RuntimeWarning and forgotten; the kernels it was making stay
on NumPy. A process forked while a job runs starts its own thread when it submits one.
"""

import os
import threading
import warnings
from collections import deque
from collections.abc import Callable

__all__ = ["NotReady", "submit", "wait"]


class NotReady(Exception):
    """Raised by a compiled kernel that would have to compile first: run the NumPy path this time."""


_lock = threading.Condition()
_jobs: deque[Callable[[], None]] = deque()
_busy = 0  # jobs queued or running
_thread: threading.Thread | None = None


def _forget_in_child() -> None:
    """A forked child has none of its parent's threads: new lock, no jobs, a thread of its own when needed."""
    global _lock, _jobs, _busy, _thread
    _lock, _jobs, _busy, _thread = threading.Condition(), deque(), 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def submit(job: Callable[[], None]) -> None:
    """Run ``job()`` in the background thread (started on first use), after the jobs before it."""
    global _thread, _busy
    with _lock:
        _jobs.append(job)
        _busy += 1
        if _thread is None:
            _thread = threading.Thread(target=_work, name="arrayopt-compile", daemon=True)
            _thread.start()
        _lock.notify()


def wait(timeout: float | None = None) -> bool:
    """Wait until every job submitted so far has run; False if ``timeout`` seconds passed first.

    For tests and benchmarks that want the compiled kernels in place before they
    measure; a program never needs to call it.
    """
    with _lock:
        return _lock.wait_for(lambda: _busy == 0, timeout)


def _work() -> None:
    global _busy
    lock = _lock
    while True:
        with lock:
            while not _jobs:
                lock.wait()
            job = _jobs.popleft()
        try:
            job()
        except Exception as exc:  # never lose the thread; the kernel stays on NumPy
            text = f"arrayopt: a background compilation failed ({type(exc).__name__}: {exc})"
            warnings.warn(text, RuntimeWarning, stacklevel=1)
        finally:
            with lock:
                _busy -= 1
                lock.notify_all()

"""Update rules compiled by numba into one pass over memory (optional, CPU).

Imported by the NumPy backend on the first launch of a kernel, and only when numba is
enabled (see :func:`arrayopt.backends.numpy.set_numba`), so ``import arrayopt`` never
imports numba. A rule is traced (:mod:`arrayopt.backends.trace`) for its flags and
argument kinds, and the trace is printed as the Python source of a loop

.. code-block:: python

    def kernel(a0, a1, a2, a3, h4, h5):
        c4 = T(h4); c5 = T(h5)               # per-step scalars, cast once
        for i in range(a0.shape[0]):
            x0 = a0[i]; x1 = a1[i]; ...       # each operand read once
            t7 = x1 * c4 ...                  # the rule, one element at a time
            a0[i] = t9; a2[i] = t8            # each result written once

which numba compiles with NumPy's error model and without fastmath, so nothing is
reassociated or contracted into fused multiply-adds: every operation rounds as the
NumPy ufunc does, and the compiled and NumPy paths give the same bits (tested).
Arrays of at least :data:`PARALLEL_MIN_ELEMENTS` elements are split into one block
per thread (``numba.prange``) when numba has more than one (``numba.set_num_threads``,
``NUMBA_NUM_THREADS``); one such loop runs at a time in the process, a launch from
another thread meanwhile runs serially (numba's workqueue layer cannot be entered
from two threads). A process forked after its parallel kernels ran cannot use
numba's threads (GNU OpenMP terminates the child), so there every kernel runs
serially: the same bits, on one thread.

The kernel cache (:func:`cache_dir`) is untrusted: a generated module is used only if
the file holds exactly the source it should (it ends with the source's digest, written
last, so a cut file never matches); otherwise it is written again. If numba fails to
read its own cache of a kernel (a damaged index or data file), that cache is emptied
and the kernel compiled again in memory: a step never fails because of the cache.
"""

import contextlib
import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numba
import numpy

from arrayopt.backends.background import NotReady
from arrayopt.backends.base import Bundle
from arrayopt.backends.trace import (
    ARRAY,
    OPERATIONS,
    Program,
    element_code,
    host_code,
    number_literal,
    register_source,
)

__all__ = ["PARALLEL_MIN_ELEMENTS", "JitKernel", "Stopped", "cache_dir"]

#: Arrays of at least this many elements run on numba's threads, when it has several.
#: numba splits the ``prange`` loop into one contiguous block per thread (an explicit
#: loop over chunks inside ``prange`` was measured 5x slower: it was not vectorized).
PARALLEL_MIN_ELEMENTS = 1 << 20

_compile_lock = threading.Lock()
# Held while a parallel loop runs: one at a time in the process (see JitKernel._one_parallel_launch).
_parallel_lock = threading.Lock()
# The process whose numba threads have run a parallel kernel (a child forked from it must not use them).
_parallel_pid: int | None = None


def cache_dir() -> str | None:
    """Where compiled kernels are kept between processes, or None (not kept).

    ``ARRAYOPT_CACHE_DIR`` if set (empty: no cache), else ``arrayopt/numba`` under
    ``XDG_CACHE_HOME`` or ``~/.cache``. Each kernel is a small generated module named
    by the hash of its source, and numba caches its machine code next to it
    (``cache=True``), so a later process loads it instead of compiling it again.
    """
    setting = os.environ.get("ARRAYOPT_CACHE_DIR")
    if setting is not None:
        return setting or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "arrayopt", "numba")


class JitKernel:
    """A traced rule compiled for one real dtype: ``kernel(*args)`` updates in place.

    ``args`` are the rule's positional arguments with every array 1-D and of
    ``dtype`` (complex arrays viewed as interleaved reals). The serial and the
    parallel loop are compiled on first use.

    Off the critical path (:mod:`arrayopt.backends.background`), :meth:`warm`
    compiles a loop for the arguments it is shown, in the background thread, and
    then *freezes* it: :meth:`run_ready` runs frozen loops only, and raises
    :class:`~arrayopt.backends.background.NotReady` (a loop not made yet) or
    TypeError (arguments of a kind not compiled: another layout), before any write,
    where a call would have to compile first. Calling the kernel itself thaws them.
    """

    #: the loops refuse to compile on a call (see :meth:`warm`)
    frozen = False

    def __init__(self, program: Program, dtype: Any, name: str = "rule") -> None:
        self.program = program
        self.dtype = numpy.dtype(dtype)
        self.name = name
        self.source, self.launcher_source = _sources(program, self.dtype, name)
        self._module: ModuleType | None = None
        self._cached = False  # the module is the cache folder's (so numba reads its cache)
        self._serial: Any = None
        self._parallel: Any = None
        namespace: dict[str, Any] = {"_run": self._run}
        exec(compile(self.launcher_source, register_source(self.launcher_source, f"{name}-launch"), "exec"), namespace)
        self._launch: Callable[..., None] = namespace["launch"]
        self._launch_ready = self._launcher(self._pick)
        self.many_source = _many_source(program, name)
        self._launch_many = self._launcher(self._run, self.many_source)
        self._launch_many_ready = self._launcher(self._pick, self.many_source)
        #: kinds of arguments (parallel or not, each array's dtype, contiguity, writability)
        #: a warm-up was asked for, so that each is asked once
        self.warming: set[Any] = set()

    def _launcher(self, pick: Callable[[int], Any], source: str | None = None) -> Callable[..., None]:
        """The launcher (or the one over bundles, from its ``source``) with ``pick(n)`` choosing the loop."""
        source = source or self.launcher_source
        namespace: dict[str, Any] = {"_run": pick, "_jit": sys.modules[__name__], "_Stopped": Stopped}
        exec(compile(source, register_source(source, f"{self.name}-launch"), "exec"), namespace)
        launch: Callable[..., None] = namespace["launch"]
        return launch

    def __call__(self, *args: Any) -> None:
        if self.frozen:
            self._thaw()
        if type(args[0]) is Bundle:  # each member in turn (see _many_source)
            self._launch_many(*args)
            return
        try:
            self._launch(*args)
        except Exception as exc:
            # numba raises what reading a damaged cache raises (EOFError, UnpicklingError,
            # AttributeError, ...) from the call, while it compiles: before the loop writes.
            # (A read-only array to write makes it refuse to compile: not the cache's fault.)
            if not (self._cached and _raised_by_numba(exc)) or self.writes_read_only(args):
                raise
            warnings.warn(
                f"arrayopt: numba could not use its cache of the {self.name} kernel ({type(exc).__name__}: {exc}); "
                "emptied it, compiling the kernel again",
                RuntimeWarning,
                stacklevel=2,
            )
            self._forget_cache()
            self._launch(*args)

    def writes_read_only(self, args: Any) -> bool:
        """Whether an array among ``args`` that the kernel stores into is read-only (numba refuses to compile that)."""
        return any(not args[p].flags.writeable for p in self.program.stores)

    def compile(self, parallel: bool = False) -> Any:
        """The numba dispatcher of the serial or parallel loop."""
        with _compile_lock:
            dispatcher = self._dispatcher(parallel)
            setattr(self, "_parallel" if parallel else "_serial", dispatcher)
        return dispatcher

    def _dispatcher(self, parallel: bool) -> Any:
        if self._module is None:
            self._module, self._cached = _load(self.source, self.name)
        return getattr(self._module, "kernel_parallel" if parallel else "kernel")

    # -- compiled off the critical path ----------------------------------------------

    def wants_parallel(self, n: int) -> bool:
        """Whether ``n`` elements run on numba's threads (from the calling thread's setting)."""
        return n >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1 and _threads_usable()

    def run_ready(self, *args: Any) -> None:
        """Run a frozen loop on ``args``; NotReady or TypeError, before any write, where one would compile.

        With :class:`~arrayopt.backends.base.Bundle` arguments, on each member in turn;
        what a member raises comes as :class:`Stopped`, naming how many ran before it.
        """
        (self._launch_many_ready if type(args[0]) is Bundle else self._launch_ready)(*args)

    def _pick(self, n: int) -> Any:
        dispatcher = self._parallel if self.wants_parallel(n) else self._serial
        if dispatcher is None or not self.frozen:
            raise NotReady(self.name)
        return dispatcher

    def warm(self, args: "list[Any] | tuple[Any, ...]", parallel: bool) -> None:
        """Compile the serial or parallel loop for arguments like ``args`` (run on them), then freeze it.

        Called in the background thread, with small arrays of the layouts and dtypes
        the real ones have (their values are overwritten). A loop is published for
        :meth:`run_ready` only once it is compiled for them; a damaged numba cache is
        emptied and the loop compiled in memory, as :meth:`__call__` does.
        """
        published = self._parallel if parallel else self._serial
        for attempt in (0, 1):
            with _compile_lock:
                dispatcher = published if published is not None else self._dispatcher(parallel)
                cached = self._cached
            if dispatcher.signatures:
                dispatcher.disable_compile(False)
            try:
                self._launcher(functools.partial(_same, dispatcher))(*args)
                break
            except Exception as exc:
                if attempt or not (cached and _raised_by_numba(exc)):
                    raise
                warnings.warn(
                    f"arrayopt: numba could not use its cache of the {self.name} kernel "
                    f"({type(exc).__name__}: {exc}); emptied it, compiling the kernel again",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._forget_cache()
                published = None
            finally:
                if dispatcher.signatures:
                    dispatcher.disable_compile(True)
        with _compile_lock:
            setattr(self, "_parallel" if parallel else "_serial", dispatcher)
            self.frozen = True

    def _thaw(self) -> None:
        """Let the loops compile on a call again (a caller that compiles where it stands)."""
        self.frozen = False
        for dispatcher in (self._serial, self._parallel):
            if dispatcher is not None:
                dispatcher.disable_compile(False)

    def _forget_cache(self) -> None:
        """Empty numba's cache of this kernel (the next process compiles it afresh) and compile it in memory."""
        with _compile_lock:
            for dispatcher in (self._serial, self._parallel):
                # An empty index: the damaged entries are never read again. (A numba without
                # this attribute, or a read-only folder: nothing to empty.)
                with contextlib.suppress(Exception):
                    dispatcher._cache.flush()
            self._module, self._cached = _in_memory(self.source, self.name), False
            self._serial = self._parallel = None
            self.warming.clear()

    def _run(self, n: int) -> Any:
        if n >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1 and _threads_usable():
            if self._parallel is None:
                self.compile(parallel=True)
            return self._one_parallel_launch
        serial = self._serial
        return self.compile() if serial is None else serial

    def _one_parallel_launch(self, *args: Any) -> None:
        """The parallel loop, unless another thread's is running: then the serial one (same bits).

        numba's workqueue threading layer (its fallback where neither TBB nor OpenMP
        is found, e.g. macOS) aborts the process when two threads launch parallel
        loops at once; optimizers stepped in two threads must not do that.
        """
        if not _parallel_lock.acquire(blocking=False):
            serial = self._serial
            (self.compile() if serial is None else serial)(*args)
            return
        try:
            self._parallel(*args)
        finally:
            _parallel_lock.release()


def max_threads() -> int:
    """The most threads numba may run (``NUMBA_NUM_THREADS``), whatever the calling thread's setting."""
    return int(getattr(numba.config, "NUMBA_NUM_THREADS"))  # noqa: B009 - not in numba's stubs


def _many_source(program: Program, name: str) -> str:
    """The launcher over bundles: ``launch(v0, v1, ...)`` with each array argument a sequence of 1-D arrays.

    The host arithmetic runs once; the serial loop is looked up once for every member
    below :data:`PARALLEL_MIN_ELEMENTS` (the ones it always runs). An exception (raised
    before the member it stops at is written) comes as :class:`Stopped`.
    """
    arrays = sorted(set(program.loaded()) | set(program.stores))
    statements, host_values = host_code(program)
    params = ", ".join(f"v{i}" for i in range(len(program.kinds)))
    members = [f"x{p}" for p in arrays]
    call = ", ".join(members + host_values)
    lines = [
        f"# {name}: the launcher over bundles, generated by arrayopt.backends.jit.",
        f"def launch({params}):",
        *[f"    {line}" for line in statements],
        "    serial = None",
        "    count = 0",
        "    big = _jit.PARALLEL_MIN_ELEMENTS",
        "    try:",
        f"        for {', '.join(members)}, in zip({', '.join(f'v{p}' for p in arrays)}):",
        f"            n = {members[0]}.shape[0]",
        "            if n < big:",
        "                if serial is None:",
        "                    serial = _run(n)",
        f"                serial({call})",
        "            else:",
        f"                _run(n)({call})",
        "            count += 1",
        "    except Exception as exc:",
        "        raise _Stopped(count) from exc",
    ]
    return "\n".join(lines) + "\n"


class Stopped(Exception):
    """A launch over bundles stopped at member ``done`` (the ones before it ran); the cause is its exception."""

    def __init__(self, done: int) -> None:
        super().__init__(done)
        self.done = done


def _same(value: Any, n: int) -> Any:
    return value


def _threads_usable() -> bool:
    """Whether this process may run parallel kernels: not if it was forked after its parent ran them."""
    global _parallel_pid
    pid = os.getpid()
    if _parallel_pid is None:
        _parallel_pid = pid
    return _parallel_pid == pid


def _raised_by_numba(exc: BaseException) -> bool:
    return any(
        frame.f_globals.get("__name__", "").startswith("numba.") for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def _load(source: str, name: str) -> tuple[ModuleType, bool]:
    """The generated kernel module, and whether it is the cache folder's (else compiled in memory).

    The cached file must hold exactly the text it should, which ends with the digest
    of the rest: a file cut short, damaged or changed is written again before use.
    """
    digest = hashlib.sha256(f"{numba.__version__}\n{source}".encode()).hexdigest()[:24]
    module_name = f"arrayopt_kernel_{digest}"
    folder = cache_dir()
    if folder is not None:
        path = os.path.join(folder, module_name + ".py")
        text = source.replace("CACHE = False", "CACHE = True", 1)
        text += f"# sha256 of the above: {hashlib.sha256(text.encode()).hexdigest()}\n"
        try:
            if not _holds(path, text):
                os.makedirs(folder, exist_ok=True)
                # Written whole under a temporary name, then renamed: a concurrent
                # process sees either nothing or the complete file.
                handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
                try:
                    with os.fdopen(handle, "w", encoding="utf-8") as f:
                        f.write(text)
                    os.replace(temporary, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(temporary)
                    raise
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                sys.modules.setdefault(module_name, module)
                return module, True
        except Exception:  # a read-only or full disk, no folder numba can cache in: no cache
            pass
    return _in_memory(source, name), False


def _holds(path: str, text: str) -> bool:
    """Whether the file at ``path`` holds exactly ``text`` (False if there is none)."""
    expected = text.encode("utf-8")
    try:
        with open(path, "rb") as f:
            return f.read(len(expected) + 1) == expected
    except FileNotFoundError:
        return False


def _in_memory(source: str, name: str) -> ModuleType:
    digest = hashlib.sha256(f"{numba.__version__}\n{source}".encode()).hexdigest()[:24]
    module = ModuleType(f"arrayopt_kernel_{digest}")
    exec(compile(source, register_source(source, name), "exec"), module.__dict__)
    return module


def _sources(program: Program, dtype: Any, name: str) -> tuple[str, str]:
    """The kernel module's source and the launcher's source."""
    nodes = program.nodes
    arrays = sorted(set(program.loaded()) | set(program.stores))
    hosts = program.host_inputs()
    constants: list[str] = []

    # The launcher: host arithmetic in Python (as on NumPy), then the loop.
    statements, host_values = host_code(program)
    params = ", ".join(f"v{i}" for i in range(len(program.kinds)))
    first = arrays[0] if arrays else next(i for i, k in enumerate(program.kinds) if k == ARRAY)
    call = ", ".join([f"v{p}" for p in arrays] + host_values)
    lines = [f"def launch({params}):", *[f"    {line}" for line in statements], f"    _run(v{first}.shape[0])({call})"]
    launcher = "\n".join(lines) + "\n"

    # The kernel body, one element at a time; literals are module constants of the dtype.
    def constant(index: int, value: Any) -> str:
        constants.append(f"K{index} = T({number_literal(value)})")
        return f"K{index}"

    names, computed = element_code(program, constant)
    body = [f"x{p} = a{p}[i]" for p in program.loaded()]
    for index in computed:
        node = nodes[index]
        body.append(f"t{index} = {OPERATIONS[node.op].python.format(*(names[a] for a in node.args))}")
    body += [f"a{p}[i] = {names[index]}" for p, index in sorted(program.stores.items())]

    signature = ", ".join([f"a{p}" for p in arrays] + [f"h{h}" for h in hosts])
    casts = [f"    c{h} = T(h{h})" for h in hosts]
    options = "cache=CACHE, fastmath=False, error_model='numpy', nogil=True, boundscheck=False"
    text = [
        f"# {name} for {dtype.name}: generated by arrayopt.backends.jit from the traced rule.",
        "# NumPy's error model (x / 0 is inf or nan, as in the ufunc); no fastmath, so nothing",
        "# is reassociated or contracted into fused multiply-adds.",
        "import math",
        "",
        "import numba",
        "import numpy",
        "",
        "CACHE = False",
        f"T = numpy.{dtype.name}",
        "ZERO = T(0)",
        "ONE = T(1)",
        "MINUS_ONE = T(-1)",
        *constants,
        "",
        "",
        f"@numba.njit({options})",
        f"def kernel({signature}):",
        *casts,
        f"    for i in range(a{first}.shape[0]):",
        *[f"        {line}" for line in body],
        "",
        "",
        f"@numba.njit(parallel=True, {options})",
        f"def kernel_parallel({signature}):",
        *casts,
        f"    for i in numba.prange(a{first}.shape[0]):",
        *[f"        {line}" for line in body],
    ]
    return "\n".join(text) + "\n", launcher

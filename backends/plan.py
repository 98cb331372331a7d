"""Update rules as straight-line NumPy ufunc calls over cache-sized chunks (no numba needed).

The pure-NumPy counterpart of :mod:`arrayopt.backends.jit`. A rule traced for its
flags and argument kinds (:mod:`arrayopt.backends.trace`) becomes the Python source of
one function that calls one ufunc per operation, each writing into a preallocated
buffer (``ufunc(..., out=...)``: the same loop and rounding as without ``out``)::

    def body(a0, a1, a2, a3, c5, c6, t0):
        subtract(a1, a2, out=t0)      # g - m
        multiply(t0, c5, out=t0)      # (g - m) * (1 - beta1)
        add(a2, t0, out=a2)           # m + ...: the new m, written in place
        ...

The function runs on slices of :data:`PLAN_CHUNK_BYTES` per operand, so the operands and
the few temporaries stay in the core's cache between the operations; large arrays are
split into one contiguous block per thread (:func:`set_num_threads`), since ufuncs
release the GIL. Every operation is the ufunc the rule itself would call on NumPy, so
the bits are NumPy's (tested against the rule run directly and against numba).

Storage is planned once per program. Each value goes into a buffer nobody needs any
more: the operand it will be stored to when the operand's old value is no longer read,
else a temporary freed by an earlier value's last use, else a new temporary. Adam
needs one temporary; a result meant for an operand is written into it directly.
"""

import contextvars
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy

from arrayopt.backends.interrupts import deferred_interrupts
from arrayopt.backends.trace import (
    BOOL,
    HOST,
    OPERATIONS,
    NotCompilable,
    Program,
    host_code,
    number_literal,
    register_source,
)

__all__ = ["PARALLEL_MIN_ELEMENTS", "PLAN_CHUNK_BYTES", "UfuncPlan", "get_num_threads", "set_num_threads"]

#: Bytes of each operand processed per chunk. With Adam's five operands and one
#: temporary this keeps about 3 MiB in play; measured on the project machines (Zen 3,
#: 512 KiB L2, 32 MiB L3), 128K float32 elements were the fastest of 8K .. 1M.
PLAN_CHUNK_BYTES = 1 << 19

#: Arrays of at least this many elements are split over the threads.
PARALLEL_MIN_ELEMENTS = 1 << 20


class UfuncPlan:
    """A traced rule as ufunc calls for one real dtype: ``plan(*args)`` updates in place.

    ``args`` are the rule's positional arguments with every array 1-D, C-contiguous
    and of ``dtype`` (complex arrays viewed as interleaved reals).
    """

    def __init__(self, program: Program, dtype: Any, name: str = "rule") -> None:
        self.program = program
        self.dtype = numpy.dtype(dtype)
        self.name = name
        self.source, self.value_temps, self.bool_temps = _source(program, name)
        namespace: dict[str, Any] = {op.ufunc: getattr(numpy, op.ufunc) for op in OPERATIONS.values() if op.ufunc}
        namespace.update(copyto=numpy.copyto, T=self.dtype.type, _run=self._run)
        exec(compile(self.source, register_source(self.source, f"plan-{name}"), "exec"), namespace)
        self._body: Callable[..., None] = namespace["body"]
        self._launch: Callable[..., None] = namespace["launch"]

    def __call__(self, *args: Any) -> None:
        self._launch(*args)

    def _run(self, arrays: tuple[Any, ...], scalars: tuple[Any, ...]) -> None:
        n = arrays[0].shape[0]
        threads = get_num_threads()
        chunk = max(1, PLAN_CHUNK_BYTES // self.dtype.itemsize)
        if threads > 1 and n >= PARALLEL_MIN_ELEMENTS and n > chunk:
            # Blocks of whole chunks, one per thread; this thread runs the first.
            per_thread = -(-n // (threads * chunk)) * chunk
            bounds = [(lo, min(lo + per_thread, n)) for lo in range(0, n, per_thread)]
            pool = _pool(len(bounds) - 1)
            # No worker may write after this call has returned or raised: Ctrl-C waits
            # for the blocks (backends/interrupts.py), and every block is waited for
            # even when one fails. Each task runs in a copy of the caller's context, so
            # NumPy's error state (numpy.errstate) applies in the worker threads too.
            futures: list[Future[None]] = []
            with deferred_interrupts():
                try:
                    for lo, hi in bounds[1:]:
                        context = contextvars.copy_context()
                        futures.append(pool.submit(context.run, self._block, arrays, scalars, lo, hi))
                    self._block(arrays, scalars, *bounds[0])
                finally:
                    wait(futures)
            for future in futures:
                future.result()  # a worker's error
            return
        self._block(arrays, scalars, 0, n)

    def _block(self, arrays: tuple[Any, ...], scalars: tuple[Any, ...], lo: int, hi: int) -> None:
        chunk = max(1, PLAN_CHUNK_BYTES // self.dtype.itemsize)
        temps = _temporaries(self.dtype, self.value_temps, self.bool_temps, min(chunk, hi - lo))
        body = self._body
        if hi - lo <= chunk:
            body(*(a[lo:hi] for a in arrays), *scalars, *temps)
            return
        for start in range(lo, hi, chunk):
            stop = min(start + chunk, hi)
            if stop - start == chunk:
                body(*(a[start:stop] for a in arrays), *scalars, *temps)
            else:
                body(*(a[start:stop] for a in arrays), *scalars, *(t[: stop - start] for t in temps))


# -- threads -------------------------------------------------------------------------------

_threads: int | None = None
_pool_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_size = 0
_executor_pid = 0


def get_num_threads() -> int:
    """How many threads the NumPy path splits a large array over.

    Decided on first use: ``ARRAYOPT_NUM_THREADS`` if set, else ``OMP_NUM_THREADS``
    (what the other libraries of the process use), else the CPUs this process may run
    on. :func:`set_num_threads` overrides it. numba-compiled rules use numba's own
    setting (``NUMBA_NUM_THREADS``, ``numba.set_num_threads``).
    """
    global _threads
    if _threads is None:
        for variable in ("ARRAYOPT_NUM_THREADS", "OMP_NUM_THREADS"):
            setting = os.environ.get(variable, "").strip()
            if setting:
                try:
                    value = int(setting.split(",")[0])
                except ValueError:
                    raise ValueError(f"{variable} must be a positive integer, got {setting!r}") from None
                if value < 1:
                    raise ValueError(f"{variable} must be a positive integer, got {setting!r}")
                _threads = value
                break
        else:
            affinity = getattr(os, "sched_getaffinity", None)
            _threads = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    return _threads


def set_num_threads(threads: int) -> int:
    """Split large arrays over ``threads`` threads on the NumPy path; returns the previous setting.

    Raises:
        ValueError: ``threads`` is not a positive integer.
    """
    global _threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    previous = get_num_threads()
    _threads = threads
    return previous


def _pool(workers: int) -> ThreadPoolExecutor:
    global _executor, _executor_size, _executor_pid
    with _pool_lock:
        # A forked child inherits the pool object but not its threads (and could wait
        # forever on a thread it believes idle): it starts its own pool.
        if _executor is None or _executor_size < workers or _executor_pid != os.getpid():
            old = _executor if _executor_pid == os.getpid() else None
            _executor = ThreadPoolExecutor(workers, thread_name_prefix="arrayopt")
            _executor_size, _executor_pid = workers, os.getpid()
            if old is not None:
                old.shutdown(wait=False)
        return _executor


_local = threading.local()


def _temporaries(dtype: Any, values: int, bools: int, size: int) -> list[Any]:
    """Buffers of at least ``size`` elements for one block, kept per thread and reused."""
    pool: dict[Any, list[Any]] | None = getattr(_local, "buffers", None)
    if pool is None:
        pool = _local.buffers = {}
    result: list[Any] = []
    for kind, count in ((dtype, values), (numpy.dtype(numpy.bool_), bools)):
        if not count:
            continue
        buffers = pool.get(kind)
        if buffers is None or len(buffers) < count or buffers[0].shape[0] < size:
            length = max(size, buffers[0].shape[0] if buffers else 0)
            buffers = pool[kind] = [numpy.empty(length, kind) for _ in range(max(count, len(buffers or ())))]
        result.extend(b[:size] for b in buffers[:count])
    return result


# -- code generation --------------------------------------------------------------------------


def _tuple(items: list[str]) -> str:
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _source(program: Program, name: str) -> tuple[str, int, int]:
    """The module source (``launch`` and ``body``), and how many value and boolean temporaries it needs."""
    nodes = program.nodes
    device = [i for i in program.live() if nodes[i].kind != HOST]
    position = {node: k for k, node in enumerate(device)}
    end = len(device)
    arrays = sorted(set(program.loaded()) | set(program.stores))
    original = {nodes[i].value: i for i in device if nodes[i].op == "array"}

    last_use: dict[int, int] = {}
    for k, i in enumerate(device):
        for a in nodes[i].args:
            if nodes[a].kind != HOST:
                last_use[a] = k
    final_of: dict[int, list[int]] = {}
    for p, i in program.stores.items():
        last_use[i] = end
        final_of.setdefault(i, []).append(p)
    final_position = {p: position[i] for p, i in program.stores.items() if nodes[i].op not in ("array", "cast")}

    location: dict[int, str] = {}  # node -> the name holding its value
    constants: list[str] = []
    occupant: dict[str, int | None] = {f"a{p}": None for p in arrays}
    temps: dict[str, list[str]] = {"value": [], "bool": []}
    lines: list[str] = []

    def old_value_read_until(p: int) -> int:
        node = original.get(p)
        return -1 if node is None else last_use.get(node, -1)

    def free(slot: str, k: int, args: tuple[int, ...], exclusive: bool) -> bool:
        holder = occupant[slot]
        if holder is None:
            return True
        # The value there is read last by this very operation: overwrite it in place
        # (a ufunc reads each element before writing it), unless the operation is a
        # two-pass ``where``.
        return not exclusive and holder in args and last_use.get(holder) == k

    for k, i in enumerate(device):
        node = nodes[i]
        if node.op == "array":
            location[i] = f"a{node.value}"
            continue
        if node.op == "cast":
            source = nodes[node.args[0]]
            if source.op == "const":
                location[i] = f"K{i}"
                constants.append(f"K{i} = T({number_literal(source.value)})")
            else:
                location[i] = f"c{node.args[0]}"
            continue
        exclusive = node.op == "where"
        reads_old = {nodes[a].value for a in node.args if nodes[a].op == "array"}
        out = None
        candidates: list[str] = []
        if node.kind != BOOL:
            targets = final_of.get(i, [])
            if not targets:
                # An intermediate may borrow an operand's storage when the operand's old
                # value is no longer read and the value dies before the operand's result
                # is computed (which then overwrites it).
                targets = [p for p, f in final_position.items() if f >= last_use.get(i, end) and f > k]
            for p in targets:
                limit = old_value_read_until(p)
                if limit < k or (limit == k and not (exclusive and p in reads_old)):
                    candidates.append(f"a{p}")
        kind = "bool" if node.kind == BOOL else "value"
        candidates += temps[kind]
        for slot in candidates:
            if free(slot, k, node.args, exclusive):
                out = slot
                break
        if out is None:
            out = f"t{kind[0]}{len(temps[kind])}"
            temps[kind].append(out)
            occupant[out] = None
        names = [location[a] for a in node.args]
        if node.op == "where":
            condition, x, y = names
            lines += [f"copyto({out}, {y})", f"copyto({out}, {x}, where={condition})"]
        else:
            lines.append(f"{OPERATIONS[node.op].ufunc}({', '.join(names)}, out={out})")
        for a in node.args:
            held = location.get(a)
            if held in occupant and occupant[held] == a and last_use.get(a) == k:
                occupant[held] = None
        occupant[out] = i
        location[i] = out

    # Results that are not already where they belong: copies of old values first, so
    # that no operand is overwritten before it is copied.
    copies = []
    for p, i in sorted(program.stores.items()):
        source = nodes[i]
        if source.op == "array" and source.value != p:
            # Old values are copied before computed results land, so only a copy of
            # an old value into an operand whose own old value is copied elsewhere
            # could go wrong. Tracing cannot produce that (after ``a[...] = b`` the
            # name ``a`` means the new value), but a program built by hand could.
            other = program.stores.get(source.value)
            if other is not None and nodes[other].op == "array" and other != i:
                raise NotCompilable("old values of operands copied into each other")
        if location[i] != f"a{p}":
            copies.append((nodes[i].op != "array", f"copyto(a{p}, {location[i]})"))
    lines += [line for _, line in sorted(copies, key=lambda c: c[0])]

    statements, host_values = host_code(program)
    hosts = program.host_inputs()
    params = ", ".join(f"v{i}" for i in range(len(program.kinds)))
    launch = [
        f"def launch({params}):",
        *[f"    {line}" for line in statements],
        f"    _run({_tuple([f'v{p}' for p in arrays])}, {_tuple([f'T({v})' for v in host_values])})",
    ]
    temp_names = temps["value"] + temps["bool"]
    signature = ", ".join([f"a{p}" for p in arrays] + [f"c{h}" for h in hosts] + temp_names)
    text = [
        f"# {name}: generated by arrayopt.backends.plan from the traced rule, one ufunc per operation.",
        *constants,
        "",
        "",
        *launch,
        "",
        "",
        f"def body({signature}):",
        *[f"    {line}" for line in lines or ["pass"]],
    ]
    return "\n".join(text) + "\n", len(temps["value"]), len(temps["bool"])

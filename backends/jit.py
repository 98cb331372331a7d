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
Arrays of at least :data:`PARALLEL_MIN_ELEMENTS` elements are split into chunks of
:data:`PARALLEL_CHUNK` over numba's threads (``numba.set_num_threads``,
``NUMBA_NUM_THREADS``) when more than one is set.
"""

import itertools
import linecache
import math
import threading
from collections.abc import Callable
from typing import Any

import numba
import numpy

from arrayopt.backends.trace import ARRAY, BINARY, COMPARE, HOST, Program

__all__ = ["PARALLEL_CHUNK", "PARALLEL_MIN_ELEMENTS", "JitKernel"]

#: Arrays of at least this many elements run on numba's threads, when it has several.
PARALLEL_MIN_ELEMENTS = 1 << 20
#: Elements per unit of parallel work (prange iterations are split evenly over threads).
PARALLEL_CHUNK = 1 << 16

_counter = itertools.count()
_compile_lock = threading.Lock()


class JitKernel:
    """A traced rule compiled for one real dtype: ``kernel(*args)`` updates in place.

    ``args`` are the rule's positional arguments with every array flattened to 1-D,
    C-contiguous and of ``dtype`` (complex arrays viewed as interleaved reals).
    """

    def __init__(self, program: Program, dtype: Any, name: str = "rule") -> None:
        self.program = program
        self.dtype = numpy.dtype(dtype)
        self.name = name
        self.source, self.launcher_source, self._globals = _sources(program, self.dtype, name)
        self._serial: Any = None
        self._parallel: Any = None
        namespace: dict[str, Any] = {"_run": self._run}
        _exec(self.launcher_source, namespace, f"{name}_launch")
        self._launch: Callable[..., None] = namespace["launch"]

    def __call__(self, *args: Any) -> None:
        self._launch(*args)

    def compile(self, parallel: bool = False) -> Any:
        """The numba dispatcher of the serial or parallel loop (built on first use)."""
        attribute = "_parallel" if parallel else "_serial"
        dispatcher = getattr(self, attribute)
        if dispatcher is None:
            with _compile_lock:
                dispatcher = getattr(self, attribute)
                if dispatcher is None:
                    namespace = dict(self._globals)
                    _exec(self.source, namespace, f"{self.name}_kernel")
                    function = namespace["kernel_parallel" if parallel else "kernel"]
                    # NumPy's error model: x / 0 gives inf or nan, as the ufunc does, not
                    # an exception; no fastmath: nothing reassociated or contracted.
                    dispatcher = numba.njit(
                        parallel=parallel, fastmath=False, error_model="numpy", nogil=True, boundscheck=False
                    )(function)
                    setattr(self, attribute, dispatcher)
        return dispatcher

    def _run(self, n: int) -> Any:
        if n >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1:
            parallel = self._parallel
            return self.compile(parallel=True) if parallel is None else parallel
        serial = self._serial
        return self.compile() if serial is None else serial


def _exec(source: str, namespace: dict[str, Any], name: str) -> None:
    # Register the text under a unique file name, so tracebacks and numba's error
    # messages can show the generated line.
    filename = f"<arrayopt-{name}-{next(_counter)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)


def _sources(program: Program, dtype: Any, name: str) -> tuple[str, str, dict[str, Any]]:
    """The kernel module source, the launcher source, and the kernel's globals."""
    nodes = program.nodes
    live = program.live()
    real = dtype.type
    globals_: dict[str, Any] = {"numpy": numpy, "math": math, "numba": numba, "T": real}
    for label, value in (("ZERO", 0), ("ONE", 1), ("MINUS_ONE", -1)):
        globals_[label] = real(value)
    arrays = sorted(set(program.loaded()) | set(program.stores))
    hosts = program.host_inputs()
    names: dict[int, str] = {}

    def host_expression(index: int) -> str:
        node = nodes[index]
        if node.op == "scalar":
            return f"v{node.value}"
        if node.op == "const":
            return repr(node.value)
        if node.op == "neg":
            return f"(-{host_expression(node.args[0])})"
        a, b = (host_expression(i) for i in node.args)
        return f"({a} {BINARY[node.op]} {b})"

    # The launcher: host arithmetic in Python (as on NumPy), then the loop.
    n_args = len(program.kinds)
    params = ", ".join(f"v{i}" for i in range(n_args))
    lines = [f"def launch({params}):"]
    for h in hosts:
        if nodes[h].op != "scalar":
            lines.append(f"    h{h} = {host_expression(h)}")
    first = arrays[0] if arrays else next(i for i, k in enumerate(program.kinds) if k == ARRAY)
    call = ", ".join(
        [f"v{p}" for p in arrays] + [host_expression(h) if nodes[h].op == "scalar" else f"h{h}" for h in hosts]
    )
    lines.append(f"    _run(v{first}.shape[0])({call})")
    launcher = "\n".join(lines) + "\n"

    # The kernel body, one element at a time.
    body: list[str] = []
    for p in program.loaded():
        body.append(f"x{p} = a{p}[i]")
    for index in live:
        node = nodes[index]
        if node.kind == HOST:
            continue
        if node.op == "array":
            names[index] = f"x{node.value}"
            continue
        if node.op == "cast":
            source = nodes[node.args[0]]
            if source.op == "const":
                names[index] = f"K{index}"
                globals_[f"K{index}"] = real(source.value)
            else:
                names[index] = f"c{node.args[0]}"
            continue
        args = [names[a] for a in node.args]
        names[index] = f"t{index}"
        body.append(f"t{index} = {_expression(node.op, args)}")
    for p, index in sorted(program.stores.items()):
        body.append(f"a{p}[i] = {names[index]}")
    if not program.stores:
        body.append("pass")

    signature = ", ".join([f"a{p}" for p in arrays] + [f"h{h}" for h in hosts])
    casts = [f"    c{h} = T(h{h})" for h in hosts]
    serial = [f"def kernel({signature}):", *casts, f"    for i in range({'a' + str(first)}.shape[0]):"]
    serial += [f"        {line}" for line in body]
    parallel = [
        f"def kernel_parallel({signature}):",
        *casts,
        f"    n = a{first}.shape[0]",
        f"    for chunk in numba.prange((n + {PARALLEL_CHUNK - 1}) // {PARALLEL_CHUNK}):",
        f"        start = chunk * {PARALLEL_CHUNK}",
        f"        stop = min(start + {PARALLEL_CHUNK}, n)",
        "        for i in range(start, stop):",
    ]
    parallel += [f"            {line}" for line in body]
    header = f"# {name}, {dtype.name}: generated by arrayopt.backends.jit from the traced rule\n"
    return header + "\n".join(serial) + "\n\n\n" + "\n".join(parallel) + "\n", launcher, globals_


def _expression(op: str, args: list[str]) -> str:
    """One operation on element values, rounded as NumPy's ufunc rounds it."""
    if op in BINARY:
        a, b = args
        return f"{a} {BINARY[op]} {b}"
    if op in COMPARE:
        a, b = args
        return f"{a} {COMPARE[op]} {b}"
    if op == "neg":
        return f"-{args[0]}"
    if op == "sqrt":
        return f"math.sqrt({args[0]})"
    if op == "abs":
        return f"abs({args[0]})"
    if op == "square":
        return f"{args[0]} * {args[0]}"
    if op == "sign":  # NumPy: sign(-0.0) is +0.0 and sign(nan) is nan
        x = args[0]
        return f"ONE if {x} > ZERO else (MINUS_ONE if {x} < ZERO else (ZERO if {x} == ZERO else {x}))"
    if op == "maximum":  # NumPy: NaN propagates from either side; on a tie, the second
        a, b = args
        return f"{a} if ({a} > {b}) | ({a} != {a}) else {b}"
    if op == "minimum":
        a, b = args
        return f"{a} if ({a} < {b}) | ({a} != {a}) else {b}"
    if op == "where":
        c, a, b = args
        return f"{a} if {c} else {b}"
    raise AssertionError(f"no element expression for {op!r}")

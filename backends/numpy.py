"""NumPy backend: rules compiled by numba when it is installed, else NumPy ufuncs in chunks (and threads)."""

import functools
import importlib.util
import itertools
import math
import operator
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy

from arrayopt.backends import background, pairwise
from arrayopt.backends.base import READ_ONLY_MESSAGE, Backend, Bundle, Kernel, Rule, real_layouts

#: Operands of at least this many bytes run through a ufunc plan (``backends/plan.py``)
#: when numba does not compile the rule. Below it, the rule itself runs on the whole
#: arrays: its temporaries are small enough for malloc's heap, and it costs less
#: Python per operation than a plan's chunk loop.
PLAN_MIN_BYTES = 1 << 17

#: Bytes per operand of each chunk when the rule itself runs on large operands (rules
#: a plan cannot express, or operands it cannot take). Below glibc's mmap threshold
#: (128 KiB), so the temporaries of one chunk are reused from the heap instead of
#: being mapped and faulted in again on every call.
DIRECT_CHUNK_BYTES = 1 << 16

# Whether large arrays go through ufunc plans; tests turn it off to run rules directly.
_ufunc_plans = True


def _apply(rule: Rule, args: "list[Any] | tuple[Any, ...]", flags: dict[str, Any]) -> None:
    # The single place a rule is called on NumPy data; tests wrap it to check that
    # rules stay within the dialect cupy.fuse can compile. args[0] is the parameter.
    rule(numpy, *args, **flags)


class NumPyBackend(Backend):
    """Runs update rules on NumPy arrays.

    With numba (see :func:`set_numba`), contiguous float32 and float64 operands
    (complex ones viewed as interleaved reals, like ``torch.view_as_real``) are updated
    by the rule compiled into one loop (``arrayopt.backends.jit``). Otherwise operands
    of ``PLAN_MIN_BYTES`` and more run through a ufunc plan
    (``arrayopt.backends.plan``): the traced rule as one ufunc call per operation,
    over cache-sized chunks, with results written into their operands and large arrays
    split over threads (``plan.set_num_threads``). Every shipped rule has a plan.
    What a plan cannot take (a rule with an ``exp``, NumPy-scalar arguments, dtypes
    beyond float16/32/64 and their complex forms, non-contiguous operands of more
    than one dimension) runs the rule itself: contiguous operands flattened and
    processed in chunks of ``DIRECT_CHUNK_BYTES`` per operand, non-contiguous ones
    whole, complex ones through their ``.real`` and ``.imag`` views. Small arrays run
    the rule itself too. Python-float scalars are weak under NEP 50, so float32 arrays
    stay float32. Every path gives the same bits.
    """

    name = "numpy"
    # NumPy (2.1 and later; arrayopt needs 2.3) is an array-API namespace itself, with
    # everything arrayopt asks of one; array-api-compat's wrapper of it would cost a
    # script's first step 90 ms to import (it touches every lazy NumPy submodule).
    xp = numpy
    takes_bundles = True
    # Blocks of 8192 small fits keep a block's working set (a 5-parameter, 25-residual
    # fit's Jacobian is 4 MB in float32) in L2/L3 between passes while each NumPy call
    # still has enough elements to hide its Python overhead. Measured on Gpufit's
    # benchmark (benchmarks/batch_fit.py), interleaved: 4096 to 16384 are within 15 %
    # of each other (float32 likes the larger, float64 the smaller); a whole batch of
    # 65536 is 2x slower.
    fit_block = 8192

    def _compile(self, rule: Rule, flags: dict[str, Any]) -> Kernel:
        ndarray = numpy.ndarray
        # (dtype, type of each argument) -> (numba kernel, array positions, complex) or None
        compiled: dict[tuple[Any, ...], Any] = {}
        # the same key -> (ufunc plan, array positions, complex) or None, for the NumPy path
        plans: dict[tuple[Any, ...], Any] = {}

        def run(*args: Any) -> None:
            mode = _mode()
            if type(args[0]) is Bundle:
                _run_bundles(run, compiled, mode, args)
                return
            if mode == "background":
                if _run_compiled(compiled, rule, flags, args):
                    return
            elif mode:
                key, kernel, values = _prepare(compiled, _jit_plan, rule, flags, args)
                if values is not None:
                    try:
                        kernel(*values)
                        return
                    except _jit_errors() as exc:  # raised while compiling, before any write
                        if kernel.writes_read_only(values):
                            # The operands are at fault, not the rule: keep the kernel for later calls.
                            raise ValueError(f"{rule.__name__}: an array it writes is read-only") from None
                        compiled[key] = None
                        warnings.warn(
                            f"arrayopt: numba could not compile {rule.__name__}; using NumPy ({exc})",
                            RuntimeWarning,
                            stacklevel=2,
                        )
            first = args[0]
            if first.nbytes >= PLAN_MIN_BYTES and _ufunc_plans:
                _, ufunc_plan, values = _prepare(plans, _ufunc_plan, rule, flags, args)
                if values is not None:
                    ufunc_plan(*values)
                    return
            if first.nbytes <= DIRECT_CHUNK_BYTES and first.dtype.kind != "c":
                # One chunk and real: any layout works as it is (elementwise rule).
                _apply(rule, args, flags)
                return
            flat, layouts = real_layouts(args, ndarray)
            for values in layouts:
                if flat:
                    _run_chunked(rule, values, [i for i, a in enumerate(values) if isinstance(a, ndarray)], flags)
                else:
                    _apply(rule, values, flags)

        run.compiled = compiled  # type: ignore[attr-defined]  # for tests and benchmarks
        run.plans = plans  # type: ignore[attr-defined]
        return run

    def check_operands(self, operands: "list[Any] | tuple[Any, ...]") -> None:
        # Backend.check_operands, with the usual case (ndarrays and Python numbers) first
        first = operands[0]
        shape, dtype = first.shape, first.dtype
        for a in operands:
            if type(a) is numpy.ndarray:
                if a.shape != shape or a.dtype != dtype:
                    break
            elif type(a) is not float:
                break
        else:
            return
        super().check_operands(operands)

    def in_order(self, rule: Rule, **flags: Any) -> Kernel:
        def run(*args: Any) -> None:
            for values in real_layouts(args, numpy.ndarray)[1]:
                _apply(rule, values, flags)

        return run

    def read_only(self, array: Any) -> bool:
        return isinstance(array, numpy.ndarray) and not array.flags.writeable

    def check_writes(self, operands: "list[Any] | tuple[Any, ...]", state: Any) -> bool:
        # Backend.check_writes for ndarrays, inlined: it runs once per parameter and step.
        ndarray = numpy.ndarray
        if not operands[0].flags.writeable:
            raise ValueError(READ_ONLY_MESSAGE)
        if state:
            for value in state.values():
                if isinstance(value, ndarray) and not value.flags.writeable:
                    return super().check_writes(operands, state)  # raises, naming the key
        owners = set()
        count = 0
        for a in operands:
            if isinstance(a, ndarray):
                base = a.base
                if base is None:
                    owners.add(id(a))
                elif type(base) is ndarray and base.base is None:
                    owners.add(id(base))
                else:  # memory of something else: let the generic test decide
                    return self._same_memory([a for a in operands if isinstance(a, ndarray)])
                count += 1
        return len(owners) != count and self._same_memory([a for a in operands if isinstance(a, ndarray)])

    def check_update(self, operands: "list[Any] | tuple[Any, ...]", state: Any) -> bool:
        # check_operands and check_writes in one pass for the usual case (ndarrays that own
        # their memory or are views of one that does, all distinct, the written ones
        # writeable, the rest Python floats); anything else takes the two checks (which
        # raise, or find operands that must run in order). Once per parameter and step.
        first = operands[0]
        shape, dtype, ndarray = first.shape, first.dtype, numpy.ndarray
        owners = set()
        count = 0
        for a in operands:
            kind = type(a)
            if kind is ndarray:
                if a.shape != shape or a.dtype != dtype:
                    break
                base = a.base
                if base is None:
                    owners.add(id(a))
                elif type(base) is ndarray and base.base is None:
                    owners.add(id(base))
                else:
                    break
                count += 1
            elif kind is not float:
                break
        else:
            if len(owners) == count and first.flags.writeable and _writeable_values(state):
                return False
        self.check_operands(operands)
        return self.check_writes(operands, state)

    def check_updates(self, operands: "Sequence[Sequence[Any]]", states: "Sequence[Any]") -> bool:
        # Many separate Parameters at once, in C loops (map) rather than Python ones: every
        # operand an ndarray of its parameter's shape and dtype or a float, in the same
        # places for all; every array one that owns its memory (no views), none twice in
        # one update; the written ones writeable; the states' other values numbers or
        # None. Else False.
        ndarray = numpy.ndarray
        try:
            columns = list(zip(*operands, strict=True))
        except ValueError:  # operands of different lengths
            return False
        arrays: list[Any] = []
        for column in columns:
            kinds = set(map(type, column))
            if kinds == {ndarray}:
                arrays.append(column)
            elif kinds != {float}:
                return False
        params = columns[0]
        if not arrays or arrays[0] is not params or not all(map(_WRITEABLE, params)):
            return False
        shapes, dtypes = list(map(_SHAPE, params)), list(map(_DTYPE, params))
        for k, column in enumerate(arrays[1:], 1):
            if list(map(_SHAPE, column)) != shapes or list(map(_DTYPE, column)) != dtypes:
                return False
            for other in arrays[:k]:
                if any(map(operator.is_, column, other)):
                    return False
        if not all(map(operator.is_, map(_BASE, itertools.chain.from_iterable(arrays)), itertools.repeat(None))):
            return False  # a view: which memory it shares is for check_writes to say
        kinds = set(map(type, states))
        if kinds == {dict}:
            values = list(itertools.chain.from_iterable(map(dict.values, states)))
            if not set(map(type, values)) <= _STATE_TYPES:
                return False
            return all(map(_WRITEABLE, filter(ndarray.__instancecheck__, values)))
        return kinds == {type(None)}

    def dot(self, a: Any, b: Any) -> Any:
        # Backend.dot's xp.sum(a * b) without array-api-compat's wrapper (a few
        # microseconds a call): the same pairwise sum, so the same bits (tested), and
        # over cache-sized blocks on long vectors (backends/pairwise.py)
        return pairwise.dot(a, b, pairwise.compiled(a.dtype, _mode()))

    def axpy(self, y: Any, alpha: Any, x: Any) -> None:
        pairwise.axpy(y, alpha, x, pairwise.compiled(y.dtype, _mode()))

    def axpy_dot(self, y: Any, alpha: Any, x: Any, z: Any, out: Any = None, scale: Any = None) -> Any:
        return pairwise.axpy_dot(y, alpha, x, z, pairwise.compiled(y.dtype, _mode()), out, scale)

    def scale_dot(self, out: Any, x: Any, c: Any, z: Any) -> Any:
        return pairwise.scale_dot(out, x, c, z, pairwise.compiled(x.dtype, _mode()))

    def max_abs(self, x: Any) -> Any:
        return pairwise.max_abs(x, pairwise.compiled(x.dtype, _mode()))

    def products(self, rows: Any, vectors: Any) -> Any:
        block = self.reduction_block
        assert block is not None
        return pairwise.products(rows, vectors, block, pairwise.compiled(rows.dtype, _mode()))

    def take_entries(self, array: Any, indices: Any) -> Any:
        return array[tuple(indices)]

    def put_entries(self, array: Any, indices: Any, values: Any) -> None:
        array[tuple(indices)] = values

    def add_entries(self, array: Any, indices: Any, values: Any) -> None:
        numpy.add.at(array, tuple(indices), values)

    def parameter_problem(self, array: Any) -> str | None:
        if not isinstance(array, numpy.ndarray):
            return (
                f"a NumPy parameter must be an ndarray, got the scalar {array!r}; NumPy scalars cannot be "
                "updated in place: pass np.asarray(x), a 0-d array"
            )
        if not array.flags.writeable:
            return "the array is read-only"
        return super().parameter_problem(array)

    def round_scalar(self, value: float, dtype: Any) -> float:
        return round_scalar_on_host(value, dtype)

    def to_numpy(self, array: Any) -> Any:
        return array

    def quiet(self) -> Any:
        return numpy.errstate(all="ignore")

    def from_numpy(self, host: Any, like: Any) -> Any:
        return numpy.array(host, copy=True)


def round_scalar_on_host(value: float, dtype: Any) -> float:
    """``value`` rounded to the NumPy ``dtype``, as a Python float (see ``Backend.round_scalar``)."""
    if dtype == numpy.float64:
        return value
    # Out of range gives inf, as a cast into a tensor does; not worth a warning.
    with numpy.errstate(over="ignore"):
        return float(numpy.asarray(value, dtype=dtype))


# -- numba ------------------------------------------------------------------------------

_MISSING = object()
# True (compile on a launch, where it stands), "background" (compile off the critical
# path: backends/background.py), False, or None: not decided yet (ARRAYOPT_NUMBA and
# whether numba is installed are looked at on the first launch, so importing arrayopt
# never imports numba).
_numba: "bool | str | None" = None


def _mode() -> "bool | str":
    """The numba setting: False, True (compile where it stands) or "background" (decided on first use)."""
    if _numba is None:
        numba_enabled()
    return _numba or False


def numba_enabled() -> bool:
    """Whether update rules on NumPy arrays run as numba-compiled loops.

    Decided on first use from the environment variable ``ARRAYOPT_NUMBA``: ``0`` (or
    ``false``, ``no``, ``off``) never uses numba; ``1`` (``true``, ``yes``, ``on``)
    requires it (ImportError if it cannot be imported) and compiles each kernel on the
    launch that first needs it; unset or ``auto`` uses it when it is installed, made
    off the critical path: launches run on NumPy until the kernel is ready
    (:mod:`arrayopt.backends.background`). :func:`set_numba` overrides the choice at
    any time.
    """
    global _numba
    if _numba is None:
        setting = os.environ.get("ARRAYOPT_NUMBA", "auto").strip().lower()
        if setting in ("0", "false", "no", "off"):
            set_numba(False)
        elif setting in ("1", "true", "yes", "on"):
            set_numba(True)
        elif setting in ("", "auto"):
            set_numba("auto")
        else:
            raise ValueError(f"ARRAYOPT_NUMBA must be 0, 1 or auto, got {os.environ['ARRAYOPT_NUMBA']!r}")
    return bool(_numba)


def set_numba(mode: "bool | str") -> bool:
    """Use numba-compiled rules (True), NumPy ufuncs (False), or numba if installed ("auto").

    Returns whether numba is used from now on. Both paths give the same bits. With
    True, numba is imported here and each rule compiled on its first launch for a
    flag set and dtype (that launch waits for it); ImportError when numba cannot be
    imported. With "auto", nothing waits for numba: it is imported and the kernels
    compiled in a background thread, launches running on NumPy until their kernel is
    ready (:mod:`arrayopt.backends.background`).
    """
    global _numba
    if mode not in (True, False, "auto"):
        raise ValueError(f"set_numba expects True, False or 'auto', got {mode!r}")
    if mode is False:
        _numba = False
        return False
    if mode == "auto":
        _numba = "background" if importlib.util.find_spec("numba") is not None else False
        return bool(_numba)
    try:
        import arrayopt.backends.jit  # noqa: F401 - imports numba
    except ImportError as exc:
        _numba = False
        if mode is True:
            raise ImportError(f"numba-compiled rules were asked for, but numba cannot be imported: {exc}") from exc
        return False
    _numba = True
    return True


def set_num_threads(threads: int) -> int:
    """Split large arrays over ``threads`` threads on the NumPy (ufunc) path; returns the previous setting.

    The default is ``ARRAYOPT_NUM_THREADS``, else ``OMP_NUM_THREADS``, else the CPUs
    this process may use (see ``arrayopt.backends.plan``). numba kernels follow
    numba's own setting (``numba.set_num_threads``).

    Raises:
        ValueError: ``threads`` is not a positive integer.
    """
    from arrayopt.backends import plan

    return plan.set_num_threads(threads)


def get_num_threads() -> int:
    """How many threads the NumPy (ufunc) path splits a large array over (see :func:`set_num_threads`)."""
    from arrayopt.backends import plan

    return plan.get_num_threads()


def _jit_errors() -> tuple[type[BaseException], ...]:
    import numba.core.errors

    return (numba.core.errors.NumbaError,)


def _traced(rule: Rule, flags: dict[str, Any], key: tuple[Any, ...], dtypes: tuple[Any, ...]) -> Any:
    """``(program, real dtype, array positions, complex)`` for a dtype and argument types, or None.

    None when the rule cannot be traced exactly (see ``arrayopt.backends.trace``), for
    real dtypes other than ``dtypes``, and for scalar arguments other than Python
    numbers (NumPy scalars are not weak).
    """
    from arrayopt.backends import trace

    dtype, *types = key
    complex_ = dtype.kind == "c"
    real = numpy.dtype(dtype.char.lower()) if complex_ else dtype
    if real not in dtypes:
        return None
    kinds = trace.argument_kinds(types, numpy.ndarray)
    if kinds is None:
        return None
    try:
        program = trace.trace(rule, flags, kinds)
    except trace.NotCompilable:
        return None
    if not program.stores:
        return None
    positions = tuple(i for i, kind in enumerate(kinds) if kind == trace.ARRAY)
    return program, real, positions, complex_


def _ufunc_plan(rule: Rule, flags: dict[str, Any], key: tuple[Any, ...]) -> Any:
    """``(plan, array positions, complex)`` for the chunked ufunc path, or None (see ``_traced``)."""
    from arrayopt.backends import plan, trace

    traced = _traced(rule, flags, key, tuple(map(numpy.dtype, (numpy.float16, numpy.float32, numpy.float64))))
    if traced is None:
        return None
    program, real, positions, complex_ = traced
    try:
        return plan.UfuncPlan(program, real, rule.__name__), positions, complex_
    except trace.NotCompilable:
        return None


def _jit_plan(rule: Rule, flags: dict[str, Any], key: tuple[Any, ...]) -> Any:
    """``(kernel, array positions, complex)`` for numba, or None (see ``_traced``; float32 and float64 only)."""
    from arrayopt.backends import jit

    traced = _traced(rule, flags, key, (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64)))
    if traced is None:
        return None
    program, real, positions, complex_ = traced
    return jit.JitKernel(program, real, rule.__name__), positions, complex_


def _prepare(cache: dict[tuple[Any, ...], Any], make: Any, rule: Rule, flags: dict[str, Any], args: Any) -> Any:
    """``(key, runner, operands)`` from a per-kernel cache of numba kernels or ufunc plans.

    ``make(rule, flags, key)`` builds the ``(runner, array positions, complex)`` entry
    for the arguments' dtype and types, or None; ``operands`` is None when there is no
    runner or the arrays cannot be flattened.
    """
    key = (args[0].dtype, *map(type, args))
    entry = cache.get(key, _MISSING)
    if entry is _MISSING:
        entry = cache[key] = make(rule, flags, key)
    if entry is None:
        return key, None, None
    runner, positions, complex_ = entry
    return key, runner, _flat_operands(args, positions, complex_)


def _flat_operands(args: "tuple[Any, ...] | list[Any]", positions: tuple[int, ...], complex_: bool) -> list[Any] | None:
    """The arguments as numba kernels take them: every array 1-D, complex ones as real pairs.

    1-D real arrays pass as they are, strided or not (numba compiles for their
    layout); others are flattened, which needs C-contiguity (None if one is not).
    """
    values = list(args)
    for i in positions:
        a = args[i]
        if a.ndim != 1 or complex_:
            if not a.flags.c_contiguous:
                return None
            a = a.reshape(-1)
            values[i] = a.view(a.real.dtype) if complex_ else a
    return values


_SHAPE = operator.attrgetter("shape")
_DTYPE = operator.attrgetter("dtype")
_BASE = operator.attrgetter("base")
_NDIM = operator.attrgetter("ndim")
_WRITEABLE = operator.attrgetter("flags.writeable")
# what the state of a bundled update may hold besides arrays
_STATE_TYPES = frozenset({numpy.ndarray, float, int, type(None)})


def _writeable_values(state: Any) -> bool:
    """Whether every value of ``state`` (a dict or None) is a writeable ndarray, a float, an int or None."""
    if state:
        ndarray = numpy.ndarray
        for value in state.values():
            kind = type(value)
            if kind is ndarray:
                if not value.flags.writeable:
                    return False
            elif kind is not float and kind is not int and value is not None:
                return False
    return True


def _run_bundles(run: Kernel, compiled: dict[tuple[Any, ...], Any], mode: "bool | str", args: Any) -> None:
    """``run`` on each member of the bundles in ``args``, in order: a numba kernel takes them all in one call.

    Members it cannot take (a layout it was not compiled for, operands that cannot be
    flattened), and every member while no kernel is ready, go through ``run`` one by
    one, which gives the same bits (and has the kernel made, off the critical path or
    not, as for any launch).
    """
    done = 0
    if mode:
        first = args[0]
        key = (first[0].dtype, *(type(a[0]) if type(a) is Bundle else type(a) for a in args))
        entry = compiled.get(key)
        if type(entry) is tuple:
            kernel, positions, complex_ = entry
            values = args
            if complex_ or set(map(_NDIM, first)) != {1}:  # the operands of a member share its shape
                values = _flat_bundles(args, positions, complex_)
            if values is not None:
                try:
                    (kernel.run_ready if mode == "background" else kernel)(*values)
                    return
                except Exception as exc:  # jit.Stopped: member ``done`` was not touched; it and the rest one by one
                    from arrayopt.backends.jit import Stopped

                    stopped = exc if type(exc) is Stopped else None
                    cause = exc.__cause__ if stopped is not None else exc
                    if not isinstance(cause, (background.NotReady, TypeError, RuntimeError, *_jit_errors())):
                        raise cause or exc from None
                    done = stopped.done if stopped is not None else 0
    for i in range(done, len(args[0])):
        run(*(a[i] if type(a) is Bundle else a for a in args))


def _flat_bundles(args: Any, positions: tuple[int, ...], complex_: bool) -> Any:
    """The bundles with every member as ``_flat_operands`` makes it, or None if one cannot be flattened."""
    members = []
    for i in range(len(args[0])):
        flat = _flat_operands([a[i] if type(a) is Bundle else a for a in args], positions, complex_)
        if flat is None:
            return None
        members.append(flat)
    values = list(args)
    for p in positions:
        values[p] = Bundle([member[p] for member in members])
    return values


class _Pending:
    """In a kernel's cache of compiled loops: being made in the background by process ``pid``."""

    __slots__ = ("pid",)

    def __init__(self) -> None:
        self.pid = os.getpid()


def _run_compiled(compiled: dict[tuple[Any, ...], Any], rule: Rule, flags: dict[str, Any], args: Any) -> bool:
    """Run the numba kernel for ``args`` if it is ready (True); else have it made off the critical path (False).

    The first launch for a key hands the making of its kernel to the background
    thread; until it is ready, and for arguments it was not compiled for (another
    layout, or the parallel loop), the caller runs the NumPy path, which gives the
    same bits.
    """
    key = (args[0].dtype, *map(type, args))
    entry = compiled.get(key, _MISSING)
    if type(entry) is tuple:
        kernel, positions, complex_ = entry
        values = _flat_operands(args, positions, complex_)
        if values is None:
            return False
        try:
            kernel.run_ready(*values)
            return True
        except Exception as exc:  # raised before any write: the loop would have to compile first
            if not isinstance(exc, (background.NotReady, TypeError, RuntimeError, *_jit_errors())):
                raise
            _warm_later(kernel, values)
            return False
    if entry is _MISSING or (type(entry) is _Pending and entry.pid != os.getpid()):
        compiled[key] = _Pending()
        like = [_like(a) for a in args]
        background.submit(functools.partial(_make, compiled, key, rule, flags, like, math.prod(args[0].shape)))
    return False


def _make(
    compiled: dict[tuple[Any, ...], Any], key: tuple[Any, ...], rule: Rule, flags: dict[str, Any], like: Any, n: int
) -> None:
    """In the background: trace and compile the kernel for ``key``, warm it on ``like``, then publish it.

    ``n`` is the size of the launch that asked: from a million elements up, with
    numba threads, the parallel loop is the one warmed.
    """
    global _numba
    entry = None
    try:
        entry = _jit_plan(rule, flags, key)
        if entry is not None:
            from arrayopt.backends import jit

            kernel, positions, complex_ = entry
            values = _flat_operands(like, positions, complex_)
            if values is not None:
                kernel.warm(values, parallel=n >= jit.PARALLEL_MIN_ELEMENTS and jit.max_threads() > 1)
    except ImportError:
        _numba, entry = False, None  # numba is installed but cannot be imported: NumPy from now on
    except Exception as exc:
        entry = None
        if not isinstance(exc, _jit_errors()):
            raise
        warnings.warn(f"arrayopt: numba could not compile {rule.__name__}; using NumPy ({exc})", RuntimeWarning, 1)
    finally:
        compiled[key] = entry


def _warm_later(kernel: Any, values: list[Any]) -> None:
    """Have ``kernel`` compiled, in the background, for arguments like ``values`` (once per kind of arguments)."""
    arrays = [a for a in values if isinstance(a, numpy.ndarray)]
    parallel = kernel.wants_parallel(len(arrays[0]))
    kind = (parallel, tuple((a.dtype, a.flags.c_contiguous, a.flags.writeable) for a in arrays))
    if kind not in kernel.warming:
        kernel.warming.add(kind)
        background.submit(functools.partial(kernel.warm, [_like(a) for a in values], parallel))


def _like(value: Any) -> Any:
    """A small stand-in for an argument: an array of the same dtype, layout and writability, else the value."""
    if not isinstance(value, numpy.ndarray):
        return value
    strided = value.ndim == 1 and not value.flags.c_contiguous
    like = numpy.zeros(4 if strided else 2, value.dtype)[:: 2 if strided else 1]
    if not value.flags.writeable:
        like.flags.writeable = False
    return like


def _run_chunked(rule: Rule, values: list[Any], positions: list[int], flags: dict[str, Any]) -> None:
    first = values[positions[0]]
    n = first.shape[0]
    step = max(1, DIRECT_CHUNK_BYTES // first.itemsize)
    if n <= step:
        _apply(rule, values, flags)
        return
    whole = list(values)
    for start in range(0, n, step):
        stop = start + step
        for i in positions:
            values[i] = whole[i][start:stop]
        _apply(rule, values, flags)

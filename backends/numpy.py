"""NumPy backend: rules compiled by numba when it is installed, else NumPy ufuncs in chunks (and threads)."""

import importlib.util
import os
import warnings
from typing import Any

import array_api_compat.numpy as compat_numpy
import numpy

from arrayopt.backends.base import READ_ONLY_MESSAGE, Backend, Kernel, Rule, real_layouts

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
    xp = compat_numpy
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
            if _numba is True or (_numba is None and numba_enabled()):
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

    def dot(self, a: Any, b: Any) -> Any:
        # Backend.dot's xp.sum(a * b) without array-api-compat's wrapper (a few
        # microseconds a call): the same pairwise sum, so the same bits (tested)
        return numpy.add.reduce(numpy.multiply(a, b))

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
# True, False, or None: not decided yet (ARRAYOPT_NUMBA and whether numba is installed
# are looked at on the first launch, so importing arrayopt never imports numba).
_numba: bool | None = None


def numba_enabled() -> bool:
    """Whether update rules on NumPy arrays run as numba-compiled loops.

    Decided on first use from the environment variable ``ARRAYOPT_NUMBA``: ``0`` (or
    ``false``, ``no``, ``off``) never uses numba; ``1`` (``true``, ``yes``, ``on``)
    requires it (ImportError if it cannot be imported); unset or ``auto`` uses it when
    it is installed. :func:`set_numba` overrides the choice at any time.
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

    Returns whether numba is used from now on. Both paths give the same bits; numba
    is imported here (when asked for) and compiles each rule on its first launch for
    a flag set and dtype. Raises ImportError for True when numba cannot be imported.
    """
    global _numba
    if mode not in (True, False, "auto"):
        raise ValueError(f"set_numba expects True, False or 'auto', got {mode!r}")
    if mode is False:
        _numba = False
        return False
    if mode == "auto" and importlib.util.find_spec("numba") is None:
        _numba = False
        return False
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


def _flat_operands(args: tuple[Any, ...], positions: tuple[int, ...], complex_: bool) -> list[Any] | None:
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

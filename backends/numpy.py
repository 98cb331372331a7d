"""NumPy backend: rules compiled by numba when it is installed, else NumPy ufuncs in chunks (and threads)."""

import importlib.util
import os
import threading
import warnings
from typing import Any

import array_api_compat.numpy as compat_numpy
import numpy

from arrayopt.backends.base import ELEMENTWISE_FUNCTIONS, Backend, Kernel, Rule, real_layouts

# A rule is a chain of ufuncs, each a full pass over its operands. Running the chain
# on slices of about 1 MiB per operand keeps the work in cache.
CHUNK_BYTES = 1 << 20

# Temporaries of 128 KiB and more (glibc's default mmap threshold) are served from
# preallocated scratch buffers instead of malloc: glibc hands such blocks back to the
# kernel when they are freed, and the page faults on the next allocation made Adam's
# chain on 1 MiB chunks 8-10x slower on the project machines (a 16.8M-element Adam
# step took 300-380 ms instead of 50-60 ms). Below that size plain NumPy expressions
# are as fast (measured at 64 KiB) and cost less Python per operation.
SCRATCH_BYTES = 1 << 17


# Whether large arrays go through ufunc plans (``arrayopt.backends.plan``); tests turn
# it off to reach the scratch evaluation, which serves the rules a plan cannot express.
_ufunc_plans = True


def _apply(rule: Rule, args: "list[Any] | tuple[Any, ...]", flags: dict[str, Any]) -> None:
    # The single place a rule is called on NumPy data; tests wrap it to check that
    # rules stay within the dialect cupy.fuse can compile. args[0] is the parameter.
    first = args[0]
    if first.nbytes < SCRATCH_BYTES:
        rule(numpy, *args, **flags)
        return
    scratch = _scratch_for_thread()
    scratch.start(first.dtype, first.shape)
    try:
        rule(scratch.ops, *[_Value(a, scratch) if isinstance(a, numpy.ndarray) else a for a in args], **flags)
    finally:
        scratch.release()


class NumPyBackend(Backend):
    """Runs update rules on NumPy arrays.

    With numba (see :func:`set_numba`), contiguous float32 and float64 operands
    (complex ones viewed as interleaved reals, like ``torch.view_as_real``) are updated
    by the rule compiled into one loop (``arrayopt.backends.jit``). Otherwise operands
    of ``SCRATCH_BYTES`` and more run through a ufunc plan
    (``arrayopt.backends.plan``): the traced rule as one ufunc call per operation,
    over cache-sized chunks, with results written into their operands and large arrays
    split over threads (``plan.set_num_threads``). Rules a plan cannot express (an
    ``exp``, NumPy-scalar arguments, dtypes beyond float16/32/64 and their complex
    forms) run the rule itself: contiguous operands flattened and processed in chunks
    of ``CHUNK_BYTES`` per operand, with large temporaries taken from preallocated
    scratch buffers; non-contiguous operands whole, complex ones through their
    ``.real`` and ``.imag`` views. Small arrays run the rule itself too. Python-float
    scalars are weak under NEP 50, so float32 arrays stay float32. Every path gives
    the same bits.
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
                        compiled[key] = None
                        warnings.warn(
                            f"arrayopt: numba could not compile {rule.__name__}; using NumPy ({exc})",
                            RuntimeWarning,
                            stacklevel=2,
                        )
            first = args[0]
            if first.nbytes >= SCRATCH_BYTES and _ufunc_plans:
                _, ufunc_plan, values = _prepare(plans, _ufunc_plan, rule, flags, args)
                if values is not None:
                    ufunc_plan(*values)
                    return
            if first.nbytes <= CHUNK_BYTES and first.dtype.kind != "c":
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
    kinds = []
    for t in types:
        if issubclass(t, numpy.ndarray):
            kinds.append(trace.ARRAY)
        elif t in (float, int, bool):
            kinds.append(trace.SCALAR)
        else:
            return None
    try:
        program = trace.trace(rule, flags, tuple(kinds))
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
    step = max(1, CHUNK_BYTES // first.itemsize)
    if n <= step:
        _apply(rule, values, flags)
        return
    whole = list(values)
    for start in range(0, n, step):
        stop = start + step
        for i in positions:
            values[i] = whole[i][start:stop]
        _apply(rule, values, flags)


# -- scratch evaluation ---------------------------------------------------------------


class _Scratch:
    """Temporaries for one rule call, taken from buffers kept between calls.

    Every operation of the rule writes into a free buffer (``ufunc(..., out=buffer)``,
    the same loop and the same rounding as without ``out``). A temporary's buffer is
    free again as soon as the temporary is dropped, so a chain like ``a * (b - c)``
    cycles through two or three buffers that stay in cache; whatever is left is freed
    when the call ends. Arithmetic results have the operands' dtype (they all share
    it, and Python scalars are weak); comparisons give booleans.
    """

    def __init__(self) -> None:
        self._free: dict[Any, list[Any]] = {}
        self._taken: dict[int, Any] = {}
        self.dtype: Any = None
        self.shape: Any = None
        self.size = 0
        self.ops = _ScratchOps(self)

    def start(self, dtype: Any, shape: Any) -> None:
        self.dtype, self.shape = dtype, shape
        self.size = 1
        for extent in shape:
            self.size *= extent

    def take(self, dtype: Any) -> tuple[Any, Any]:
        """A free buffer of ``dtype`` (kept for reuse) and its view shaped for this call."""
        free = self._free.get(dtype)
        if free and free[-1].size >= self.size:
            buffer = free.pop()
        else:
            buffer = numpy.empty(max(self.size, CHUNK_BYTES // numpy.dtype(dtype).itemsize), dtype)
        self._taken[id(buffer)] = buffer
        view = buffer[: self.size]
        return buffer, view if len(self.shape) == 1 else view.reshape(self.shape)

    def give_back(self, buffer: Any) -> None:
        if self._taken.pop(id(buffer), None) is not None:
            self._free.setdefault(buffer.dtype, []).append(buffer)

    def release(self) -> None:
        for buffer in list(self._taken.values()):
            self.give_back(buffer)

    def compute(self, ufunc: Any, *args: Any, boolean: bool = False) -> "_Value":
        buffer, out = self.take(numpy.dtype(numpy.bool_) if boolean else self.dtype)
        ufunc(*(_unwrap(a) for a in args), out=out)
        return _Value(out, self, buffer)


_local = threading.local()


def _scratch_for_thread() -> _Scratch:
    scratch = getattr(_local, "scratch", None)
    if scratch is None:
        scratch = _local.scratch = _Scratch()
    return scratch


def _unwrap(x: Any) -> Any:
    return x.array if isinstance(x, _Value) else x


def _binary(ufunc: Any, boolean: bool = False) -> tuple[Any, Any, Any]:
    def forward(self: "_Value", other: Any) -> "_Value":
        return self.scratch.compute(ufunc, self.array, other, boolean=boolean)

    def reverse(self: "_Value", other: Any) -> "_Value":
        return self.scratch.compute(ufunc, other, self.array, boolean=boolean)

    def in_place(self: "_Value", other: Any) -> "_Value":
        ufunc(self.array, _unwrap(other), out=self.array)
        return self

    return forward, reverse, in_place


class _Value:
    """An operand or a temporary inside a scratch evaluation: arithmetic goes through ``out=``.

    It offers what cupy.fuse's proxies offer (operators, in-place operators on arrays,
    ``x[...] = value``), so a rule that runs here also compiles there.
    """

    __slots__ = ("array", "buffer", "scratch")

    def __init__(self, array: Any, scratch: _Scratch, buffer: Any = None) -> None:
        self.array = array
        self.scratch = scratch
        self.buffer = buffer  # the scratch buffer behind a temporary; None for operands

    def __del__(self) -> None:
        if self.buffer is not None:
            self.scratch.give_back(self.buffer)

    __add__, __radd__, __iadd__ = _binary(numpy.add)
    __sub__, __rsub__, __isub__ = _binary(numpy.subtract)
    __mul__, __rmul__, __imul__ = _binary(numpy.multiply)
    __truediv__, __rtruediv__, __itruediv__ = _binary(numpy.divide)
    __pow__ = _binary(numpy.power)[0]
    __lt__ = _binary(numpy.less, boolean=True)[0]
    __le__ = _binary(numpy.less_equal, boolean=True)[0]
    __gt__ = _binary(numpy.greater, boolean=True)[0]
    __ge__ = _binary(numpy.greater_equal, boolean=True)[0]
    __eq__ = _binary(numpy.equal, boolean=True)[0]
    __ne__ = _binary(numpy.not_equal, boolean=True)[0]
    __hash__ = None  # type: ignore[assignment]

    def __neg__(self) -> "_Value":
        return self.scratch.compute(numpy.negative, self.array)

    def __setitem__(self, key: Any, value: Any) -> None:
        numpy.copyto(self.array[key], _unwrap(value))


class _ScratchOps:
    """The namespace a rule sees during scratch evaluation (``ELEMENTWISE_FUNCTIONS``)."""

    def __init__(self, scratch: _Scratch) -> None:
        self._scratch = scratch

    def __getattr__(self, name: str) -> Any:
        if name not in ELEMENTWISE_FUNCTIONS:
            raise AttributeError(f"update rules may only use the elementwise functions {sorted(ELEMENTWISE_FUNCTIONS)}")
        if name == "where":
            return self._where
        ufunc = getattr(numpy, name)
        return lambda *args: self._scratch.compute(ufunc, *args)

    def _where(self, condition: Any, x: Any, y: Any) -> _Value:
        buffer, out = self._scratch.take(self._scratch.dtype)
        numpy.copyto(out, _unwrap(y))
        numpy.copyto(out, _unwrap(x), where=_unwrap(condition))
        return _Value(out, self._scratch, buffer)

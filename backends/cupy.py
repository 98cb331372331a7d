"""CuPy backend: each rule, per flag combination and dtype, is one elementwise GPU kernel.

Imported only when a CuPy array is first seen (``arrayopt.backends.get_backend``).
"""

from typing import Any

import array_api_compat.cupy as compat_cupy
import cupy
import numpy

from arrayopt.backends.base import Backend, Kernel, Rule, real_layouts
from arrayopt.backends.numpy import round_scalar_on_host

_MISSING = object()


class CuPyBackend(Backend):
    """Runs update rules on CuPy arrays as single elementwise GPU kernels.

    A rule is traced once per (flags, dtype, argument kinds) and printed as a
    ``cupy.ElementwiseKernel`` (``arrayopt.backends.cuda_source``) compiled with
    ``--fmad=false``: one pass that reads and writes each operand once and rounds
    every operation as NumPy does, so GPU and CPU give the same bits. A rule the
    tracer refuses (``exp``, ``log``, general powers) goes through ``cupy.fuse``
    instead, which is also one kernel but lets NVRTC contract multiply-adds.

    Contiguous operands are flattened to 1-D and complex ones viewed as interleaved
    reals; non-contiguous complex operands run as their ``.real`` and ``.imag`` views.
    Per-step scalars are Python floats computed on the host, so a launch never waits
    for the device.
    """

    name = "cupy"
    xp = compat_cupy
    reduction_block = None  # the whole axis in one kernel: on a GPU a launch costs more than a pass

    def _compile(self, rule: Rule, flags: dict[str, Any]) -> Kernel:
        ndarray = cupy.ndarray
        fused: Any = None
        # (real dtype, argument types) -> generated launcher, or None (use cupy.fuse)
        compiled: dict[tuple[Any, ...], Any] = {}

        def run(*args: Any) -> None:
            nonlocal fused
            first = args[0]
            real = numpy.dtype(first.real.dtype if first.dtype.kind == "c" else first.dtype)
            key = (real, *map(type, args))
            launch = compiled.get(key, _MISSING)
            if launch is _MISSING:
                launch = compiled[key] = _elementwise_launcher(rule, flags, key)
            for values in real_layouts(args, ndarray)[1]:
                if launch is not None:
                    launch(*values)
                    continue
                if fused is None:
                    fused = _fused(rule, flags)
                fused(*(a if isinstance(a, ndarray) else real.type(a) for a in values))

        run.compiled = compiled  # type: ignore[attr-defined]  # for tests
        return run

    def in_order(self, rule: Rule, **flags: Any) -> Kernel:
        xp = self.xp

        def run(*args: Any) -> None:
            for values in real_layouts(args, cupy.ndarray)[1]:
                rule(xp, *values, **flags)

        return run

    def take_entries(self, array: Any, indices: Any) -> Any:
        return array[tuple(indices)]

    def put_entries(self, array: Any, indices: Any, values: Any) -> None:
        array[tuple(indices)] = values

    def add_entries(self, array: Any, indices: Any, values: Any) -> None:
        # ufunc.at (CuPy 13+); cupyx.scatter_add, its older spelling, warns from CuPy 14 on.
        add_at = getattr(getattr(cupy, "add", None), "at", None)
        if add_at is None:
            import cupyx

            add_at = cupyx.scatter_add
        where = tuple(indices)
        if array.dtype.kind == "c":
            # atomicAdd has no complex type; a complex sum is two independent real sums.
            add_at(array.real, where, values.real)
            add_at(array.imag, where, values.imag)
        else:
            add_at(array, where, values)

    def round_scalar(self, value: float, dtype: Any) -> float:
        return round_scalar_on_host(value, dtype)  # CuPy dtypes are NumPy's: round on the host

    def to_numpy(self, array: Any) -> Any:
        return cupy.asnumpy(array)

    def from_numpy(self, host: Any, like: Any) -> Any:
        with like.device:
            return cupy.array(host, copy=True)


def _fused(rule: Rule, flags: dict[str, Any]) -> Any:
    def body(*args: Any) -> None:
        rule(cupy, *args, **flags)

    body.__name__ = rule.__name__
    return cupy.fuse(kernel_name=f"arrayopt_{rule.__name__}")(body)


def _elementwise_launcher(rule: Rule, flags: dict[str, Any], key: tuple[Any, ...]) -> Any:
    """``launch(*args)`` running the rule as a generated ElementwiseKernel, or None."""
    from arrayopt.backends import cuda_source, trace

    real, *types = key
    kinds = trace.argument_kinds(types, cupy.ndarray)
    if kinds is None:
        return None
    try:
        program = trace.trace(rule, flags, kinds)
        parts = cuda_source.elementwise_parts(program, real)
    except trace.NotCompilable:
        return None
    if not parts.outputs:
        return None
    kernel = cupy.ElementwiseKernel(
        parts.in_params,
        parts.out_params,
        parts.operation,
        f"arrayopt_{rule.__name__}",
        options=cuda_source.NVRTC_OPTIONS,
        no_return=True,
    )
    namespace: dict[str, Any] = {"_kernel": kernel}
    exec(compile(parts.launcher_source, f"<arrayopt-{rule.__name__}-cuda-launch>", "exec"), namespace)
    return namespace["launch"]

"""CuPy backend: each rule, per flag combination, is compiled by ``cupy.fuse``.

Imported only when a CuPy array is first seen (``arrayopt.backends.get_backend``).
"""

from typing import Any

import array_api_compat.cupy as compat_cupy
import cupy
import numpy

from arrayopt.backends.base import Backend, Kernel, Rule, real_layouts
from arrayopt.backends.numpy import round_scalar_on_host


class CuPyBackend(Backend):
    """Runs update rules on CuPy arrays as single fused GPU kernels.

    ``cupy.fuse`` traces the rule once per (flags, dtypes, ndim) and emits one
    elementwise kernel that reads and writes every operand once. Contiguous operands
    are flattened to 1-D (so one kernel serves every shape) and complex ones viewed as
    interleaved reals. Scalars are cast on the host to the operands' real dtype, as
    NumPy does with weak Python floats, so float32 math stays float32 on the device.
    Nothing in a launch waits for the device.
    """

    name = "cupy"
    xp = compat_cupy

    def _compile(self, rule: Rule, flags: dict[str, Any]) -> Kernel:
        def body(*args: Any) -> None:
            rule(cupy, *args, **flags)

        body.__name__ = rule.__name__
        fused = cupy.fuse(kernel_name=f"arrayopt_{rule.__name__}")(body)
        ndarray = cupy.ndarray

        def run(*args: Any) -> None:
            first = args[0]
            real = numpy.dtype(first.real.dtype if first.dtype.kind == "c" else first.dtype).type
            for values in real_layouts(args, ndarray)[1]:
                fused(*(a if isinstance(a, ndarray) else real(a) for a in values))

        return run

    def take_entries(self, array: Any, indices: Any) -> Any:
        return array[tuple(indices)]

    def put_entries(self, array: Any, indices: Any, values: Any) -> None:
        array[tuple(indices)] = values

    def add_entries(self, array: Any, indices: Any, values: Any) -> None:
        import cupyx

        where = tuple(indices)
        if array.dtype.kind == "c":
            # atomicAdd has no complex type; a complex sum is two independent real sums.
            cupyx.scatter_add(array.real, where, values.real)
            cupyx.scatter_add(array.imag, where, values.imag)
        else:
            cupyx.scatter_add(array, where, values)

    def round_scalar(self, value: float, dtype: Any) -> float:
        return round_scalar_on_host(value, dtype)  # CuPy dtypes are NumPy's: round on the host

    def to_numpy(self, array: Any) -> Any:
        return cupy.asnumpy(array)

    def from_numpy(self, host: Any, like: Any) -> Any:
        with like.device:
            return cupy.array(host, copy=True)

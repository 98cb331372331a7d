"""NumPy backend: rules run as plain Python on NumPy ufuncs, in cache-sized chunks."""

from typing import Any

import array_api_compat.numpy as compat_numpy
import numpy

from arrayopt.backends.base import Backend, Kernel, Rule

# A rule is a chain of ufuncs, each a full pass over its operands. Running the chain
# on slices of about 1 MiB per operand keeps the temporaries in cache; on arrays that
# do not fit in cache this is about twice as fast as one chain over whole arrays
# (see the perf baseline in shared/reference, section 3.4).
CHUNK_BYTES = 1 << 20


def _apply(rule: Rule, args: list[Any], flags: dict[str, Any]) -> None:
    # The single place a rule is called on NumPy data; tests wrap it to check that
    # rules stay within the dialect cupy.fuse can compile.
    rule(numpy, *args, **flags)


class NumPyBackend(Backend):
    """Runs update rules on NumPy arrays.

    Contiguous operands are flattened (complex ones viewed as interleaved reals, like
    ``torch.view_as_real``) and processed in chunks of ``CHUNK_BYTES`` per operand.
    Non-contiguous operands are processed whole; complex ones through their ``.real``
    and ``.imag`` views. Python-float scalars are weak under NEP 50, so float32 arrays
    stay float32.
    """

    name = "numpy"
    xp = compat_numpy

    def _compile(self, rule: Rule, flags: dict[str, Any]) -> Kernel:
        ndarray = numpy.ndarray

        def run(*args: Any) -> None:
            positions = [i for i, a in enumerate(args) if isinstance(a, ndarray)]
            arrays = [args[i] for i in positions]
            values = list(args)
            if all(a.flags.c_contiguous for a in arrays):
                for i, a in zip(positions, arrays, strict=True):
                    flat = a.reshape(-1)
                    values[i] = flat.view(flat.real.dtype) if flat.dtype.kind == "c" else flat
                _run_chunked(rule, values, positions, flags)
            elif arrays[0].dtype.kind == "c":
                for part in ("real", "imag"):
                    for i, a in zip(positions, arrays, strict=True):
                        values[i] = getattr(a, part)
                    _apply(rule, values, flags)
            else:
                _apply(rule, values, flags)

        return run

    def parameter_problem(self, array: Any) -> str | None:
        if not isinstance(array, numpy.ndarray):
            return f"a NumPy parameter must be an ndarray, got the scalar {array!r}"
        if not array.flags.writeable:
            return "the array is read-only"
        return super().parameter_problem(array)

    def to_numpy(self, array: Any) -> Any:
        return array

    def from_numpy(self, host: Any, like: Any) -> Any:
        return numpy.array(host, copy=True)


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

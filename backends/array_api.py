"""Any array-API library (array-api-strict in the tests): rules run through its namespace."""

from typing import Any

import numpy

from arrayopt.backends.base import Backend, Kernel, Rule


class ArrayAPIBackend(Backend):
    """Runs each update rule eagerly through a standard array-API namespace.

    Nothing here is specific to a library: the rule's ``xp`` argument is the namespace
    itself, so a rule that passes here uses only the standard. Complex arrays have no
    real view in the standard, so the rule runs on the real parts and then on the
    imaginary parts (copies), and the results are written back into the complex
    arrays. Writing back goes through complex arithmetic, so the sign of a zero real
    part and infinite imaginary parts are not preserved.
    """

    def __init__(self, xp: Any) -> None:
        super().__init__()
        self.xp = xp
        self.name = getattr(xp, "__name__", repr(xp)).rsplit(".", 1)[-1]

    def _compile(self, rule: Rule, flags: dict[str, Any]) -> Kernel:
        xp = self.xp
        is_array = self._is_array

        def run(*args: Any) -> None:
            arrays = [a for a in args if is_array(a)]
            if not self.is_complex(arrays[0]):
                rule(xp, *args, **flags)
                return
            # One copy per array, so that operands that are one array (``p.grad = p.data``)
            # stay one array to the rule.
            first: dict[int, int] = {}
            position = [first.setdefault(id(a), i) if is_array(a) else i for i, a in enumerate(args)]
            reals = [xp.real(a) if is_array(a) and position[i] == i else a for i, a in enumerate(args)]
            imags = [xp.imag(a) if is_array(a) and position[i] == i else a for i, a in enumerate(args)]
            for i, j in enumerate(position):
                reals[i], imags[i] = reals[j], imags[j]
            rule(xp, *reals, **flags)
            rule(xp, *imags, **flags)
            for target, re, im in zip(args, reals, imags, strict=True):
                if is_array(target):
                    dtype = target.dtype
                    target[...] = xp.astype(re, dtype) + xp.astype(im, dtype) * 1j

        return run

    def read_only(self, array: Any) -> bool:
        # The standard has no read-only arrays, but DLPack (zero-copy) carries a read-only
        # flag: a library over NumPy (array-api-strict) reports NumPy's.
        try:
            return not numpy.from_dlpack(array).flags.writeable
        except Exception:  # not on the host, or no DLPack: nothing to tell
            return False

    def any_read_only(self, arrays: "list[Any]") -> bool:
        return any(map(self.read_only, arrays))

    def _same_memory(self, arrays: "list[Any]") -> bool:
        # The standard says nothing of memory: only an array given twice can be seen (and
        # the rule runs as written here anyway; operands that are one array are one array
        # to it, complex ones too).
        return len(set(map(id, arrays))) < len(arrays)

    # The standard has no scatter (no integer-array __setitem__, no add.at): these two
    # copy the whole array to the host, write the entries there with NumPy, and copy it
    # back into the array in place. Correct on any library, O(size) per call.

    def put_entries(self, array: Any, indices: Any, values: Any) -> None:
        host = numpy.array(self.to_numpy(array), copy=True)
        host[tuple(self.to_numpy(indices))] = self.to_numpy(values)
        array[...] = self.from_numpy(host, array)

    def add_entries(self, array: Any, indices: Any, values: Any) -> None:
        host = numpy.array(self.to_numpy(array), copy=True)
        numpy.add.at(host, tuple(self.to_numpy(indices)), self.to_numpy(values))
        array[...] = self.from_numpy(host, array)

    def quiet(self) -> Any:
        # Libraries built on NumPy (array-api-strict among them) warn through NumPy's
        # error state; for any other library this changes nothing.
        return numpy.errstate(all="ignore")

    def _is_array(self, obj: Any) -> bool:
        return hasattr(obj, "__array_namespace__")

    def to_numpy(self, array: Any) -> Any:
        try:
            return numpy.asarray(array)
        except (TypeError, ValueError, RuntimeError):
            return numpy.from_dlpack(array)

    def from_numpy(self, host: Any, like: Any) -> Any:
        return self.xp.asarray(host, device=self.device(like))

"""0-d state arrays whose value the host needs every step (ASGD's ``eta`` and ``mu``, NAdam's ``mu_product``).

torch keeps these per-parameter scalars as 0-d tensors of its default scalar dtype
(float32), reads them with ``.item()`` each step, and writes each new value back into
the tensor, so the float32 rounding feeds into later steps. arrayopt keeps the same 0-d
arrays in ``state`` (``state_dict`` has torch's layout, dtypes and rounding) and a host
copy of every value it writes, so reading one never waits for a device.
"""

from typing import Any

from arrayopt import _validate as v
from arrayopt.backends import get_backend


class ScalarMirror:
    """Host copies of the 0-d state arrays an optimizer writes.

    Entries are keyed by state dict and key and remember the array they describe: an
    array the optimizer did not write itself (loaded by ``load_state_dict``, or put
    in ``state`` by hand) is read from the array once. Writing into one of these
    arrays in place from outside the optimizer is not seen; assign a new array.
    """

    def __init__(self) -> None:
        self._values: dict[tuple[int, str], tuple[Any, float]] = {}

    def read(self, state: dict[str, Any], key: str) -> float:
        """The value of ``state[key]`` (a 0-d array, or a number) as a Python float."""
        array = state[key]
        entry = self._values.get((id(state), key))
        if entry is not None and entry[0] is array:
            return entry[1]
        return v.to_float(array)

    def write(self, state: dict[str, Any], key: str, value: float) -> float:
        """Store ``value`` into the 0-d array ``state[key]`` in place; return it as stored.

        The array keeps its dtype, so the value is rounded to it (float32 until a
        ``load_state_dict`` casts the entry to a float64 parameter's dtype, as torch).
        """
        array = state[key]
        stored = get_backend(array).round_scalar(value, array.dtype)
        array[...] = stored
        self._values[(id(state), key)] = (array, stored)
        return stored

    def clear(self) -> None:
        self._values.clear()


def scalar_array(data: Any, value: float) -> Any:
    """A 0-d float32 array holding ``value`` (torch's default scalar dtype), on the
    library and device of the parameter array ``data``."""
    backend = get_backend(data)
    xp = backend.xp
    return xp.asarray(value, dtype=xp.float32, device=backend.device(data))


def float32(backend: Any, value: float) -> float:
    """``value`` rounded to float32 (torch's default scalar dtype), as a Python float."""
    return float(backend.round_scalar(value, backend.xp.float32))

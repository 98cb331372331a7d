"""The per-step numbers a step checks before it changes anything.

``ElementwiseOptimizer.step`` prepares every update before running any (see
``arrayopt.optimizer``). Besides shapes and dtypes (``Backend.check_operands``) and the
arrays it writes (``Backend.check_writes``: none read-only, none overlapping another
unless it is the same elements), that first phase checks here that the per-step
numbers of each param group (the optimizer's :class:`~arrayopt.optimizer.Hyper`) fit
the parameter's dtype: ``SGD(lr=1e300)`` on float32 would fill the parameter with
infinities (torch raises "value cannot be converted to type float without
overflow"). A refused step leaves every parameter, every piece of state and every
counter as it was.
"""

import numbers
from typing import Any

from arrayopt.backends import Backend
from arrayopt.parameter import Parameter

__all__ = ["refuse_misfit_numbers"]


# the last (hyper, backend, dtype) found to fit: a step checks each group's numbers once per dtype
_fitted: tuple[Any, Any, Any] = (None, None, None)
# (backend, dtype) -> the dtype's largest finite value
_largest: dict[tuple[Any, Any], float] = {}


def refuse_misfit_numbers(optimizer: Any, p: Parameter, hyper: Any, backend: Backend, data: Any) -> None:
    """RuntimeError (torch's type), naming ``p``, if a number of ``hyper`` overflows the dtype of ``data``.

    Every number among the fields of the :class:`~arrayopt.optimizer.Hyper` (the group's
    hyper-parameters as the rule takes them) must be at most the dtype's largest finite
    value in size; the message names the field and the value.
    """
    global _fitted
    dtype = data.dtype
    fitted_hyper, fitted_backend, fitted_dtype = _fitted
    if fitted_hyper is hyper and fitted_backend is backend and fitted_dtype == dtype:
        return
    key = (backend, dtype)  # dtypes of different libraries are not to be compared
    largest = _largest.get(key)
    if largest is None:
        largest = _largest[key] = float(backend.xp.finfo(dtype).max)
    if largest < 1.7976931348623157e308:  # float64: every finite Python float fits
        for name, value in vars(hyper).items():
            kind = type(value)
            if kind is float or kind is int:
                number = value
            elif name == "flags" or kind is bool or not isinstance(value, numbers.Real):
                continue
            else:  # a NumPy scalar (a float32 lr)
                number = float(value)
            if (number > largest or number < -largest) and abs(number) != float("inf"):
                raise RuntimeError(
                    f"{p._label()}: {type(optimizer).__name__}'s {name}={number!r} cannot be converted to the "
                    f"parameter's dtype {dtype} without overflow (its largest finite value is {largest!r})"
                )
    _fitted = (hyper, backend, dtype)

"""What a step checks before it changes anything.

``ElementwiseOptimizer.step`` prepares every update before running any (see
``arrayopt.optimizer``) and checks each here (:func:`checked`, or
:func:`check_deferred` for many separate Parameters at once): shapes and dtypes
(``Backend.check_operands``), the arrays it writes (``Backend.check_writes``: none
read-only, none overlapping another unless it is the same elements), and that the per-step
numbers of each param group (the optimizer's :class:`~arrayopt.optimizer.Hyper`) fit
the parameter's dtype: ``SGD(lr=1e300)`` on float32 would fill the parameter with
infinities (torch raises "value cannot be converted to type float without
overflow"). A refused step leaves every parameter, every piece of state and every
counter as it was.
"""

import dataclasses
import numbers
from typing import Any, cast

from arrayopt.backends import Backend
from arrayopt.backends.base import InOrder
from arrayopt.parameter import Parameter

__all__ = ["check_deferred", "checked", "refuse_misfit_numbers"]


# the last (hyper, dtype) found to fit: a step checks each group's numbers once per dtype
_fitted: tuple[Any, Any] = (None, None)
# id(dtype) -> (dtype, its largest finite value); dtypes are compared by identity (those
# of different libraries are not to be compared, and NumPy's own are one object each)
_largest: dict[int, tuple[Any, float]] = {}


def refuse_misfit_numbers(optimizer: Any, p: Parameter, hyper: Any, backend: Backend, data: Any) -> None:
    """RuntimeError (torch's type), naming ``p``, if a number of ``hyper`` overflows the dtype of ``data``.

    Every number among the fields of the :class:`~arrayopt.optimizer.Hyper` (the group's
    hyper-parameters as the rule takes them) must be at most the dtype's largest finite
    value in size; the message names the field and the value.
    """
    global _fitted
    dtype = data.dtype
    fitted_hyper, fitted_dtype = _fitted
    if fitted_hyper is hyper and fitted_dtype is dtype:
        return
    entry = _largest.get(id(dtype))
    if entry is None or entry[0] is not dtype:
        entry = _largest[id(dtype)] = (dtype, float(backend.xp.finfo(dtype).max))
    largest = entry[1]
    if largest < 1.7976931348623157e308:  # float64: every finite Python float fits
        fields = vars(hyper)
        for name in _numbers_of(type(hyper)):
            number = fields[name]
            if type(number) is not float and not isinstance(number, numbers.Real):  # a subclass's None, say
                continue
            if largest < abs(float(number)) < float("inf"):
                raise RuntimeError(
                    f"{p._label()}: {type(optimizer).__name__}'s {name}={float(number)!r} cannot be converted to the "
                    f"parameter's dtype {dtype} without overflow (its largest finite value is {largest!r})"
                )
    _fitted = (hyper, dtype)


# Hyper subclass -> the names of its fields that hold numbers (declared float or int)
_NUMBERS: dict[type, tuple[str, ...]] = {}


def _numbers_of(kind: type) -> tuple[str, ...]:
    names = _NUMBERS.get(kind)
    if names is None:
        names = _NUMBERS[kind] = tuple(
            f.name for f in dataclasses.fields(kind) if f.type in (float, int, "float", "int")
        )
    return names


def checked(optimizer: Any, update: tuple[Any, ...]) -> tuple[Any, ...]:
    """A prepared update, checked: ValueError naming its parameter; an ``InOrder`` backend if it needs one."""
    p, backend, hyper, state, operands, sparse = update
    try:
        # Shapes and dtypes; read-only arrays are refused; a gradient or state array that is the
        # parameter (``p.grad = p.data``) makes the rule run as written, as torch's operations do.
        in_order = backend.check_update(operands, state)
    except ValueError as exc:
        raise ValueError(f"{p._label()}: {exc}") from None
    refuse_misfit_numbers(optimizer, p, hyper, backend, p.data)
    if in_order:
        return (p, cast(Backend, InOrder(backend)), hyper, state, operands, sparse)
    return update


def check_deferred(optimizer: Any, updates: list[Any], unchecked: list[int]) -> None:
    """Check the updates at the indices in ``unchecked`` (then emptied), in order, as :func:`checked` does.

    Their backend checks them all at once first (:meth:`Backend.check_updates`);
    only if that finds something to look at closer are they checked one by one,
    which raises the first parameter's error or gives it an ``InOrder`` backend.
    """
    indices = unchecked[:]
    unchecked.clear()
    chosen = [updates[i] for i in indices]
    params, backends, hypers, states, operands, _ = zip(*chosen, strict=True)
    backend = backends[0]
    if backends.count(backend) == len(backends) and backend.check_updates(operands, states):
        for p, hyper in zip(params, hypers, strict=True):
            refuse_misfit_numbers(optimizer, p, hyper, backend, p.data)
        return
    for i, update in zip(indices, chosen, strict=True):
        updates[i] = checked(optimizer, update)

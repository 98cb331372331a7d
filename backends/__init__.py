"""Array-library backends: the only part of arrayopt that names NumPy or CuPy.

An optimizer never imports an array library. It asks :func:`get_backend` for the
backend of a parameter's array and gets a :class:`Backend` that knows how to

* allocate state (``backend.xp`` is the library's array-API namespace),
* run an update rule in place (``backend.kernel(rule, **flags)``), and
* move arrays to and from the host (``to_numpy`` / ``from_numpy``).

An *update rule* is a plain Python function ``rule(xp, *arrays_and_scalars,
**flags)`` that writes its results with ``name[...] = expression`` and uses only
arithmetic operators and the elementwise functions ``xp.sqrt``, ``xp.maximum``,
``xp.minimum``, ``xp.abs``, ``xp.sign`` and ``xp.where``. Keyword flags change the
formula (they are fixed when the kernel is built); positional scalars are per-step
Python floats. The same function then runs

* on NumPy, compiled by numba into one loop when numba is installed
  (``backends/jit.py``), else as NumPy ufuncs over cache-sized chunks
  (``backends/numpy.py``); both give the same bits,
* on CuPy, as one generated elementwise GPU kernel (``backends/cupy.py``,
  ``backends/cuda_source.py``), or through ``cupy.fuse`` for rules that cannot be
  traced exactly,
* on any other array-API library, through its namespace (``backends/array_api.py``).

The compiled forms come from one trace of the rule (``backends/trace.py``).

CuPy is imported only when a CuPy array is first seen.
"""

# This folder sits at the repository root but is installed as ``arrayopt.backends``
# (setup.cfg ``package_dir``). A top-level ``import backends`` would load a second,
# unrelated copy of these modules, so refuse it loudly.
if __name__ != "arrayopt.backends":
    raise ImportError(
        f"the 'backends' folder is the package 'arrayopt.backends' and cannot be imported "
        f"as {__name__!r}; install arrayopt (pip install -e .) and use "
        "'import arrayopt.backends'"
    )

import functools
from typing import Any

import array_api_compat

from arrayopt.backends.base import Backend

__all__ = ["Backend", "get_backend", "host_array", "is_array"]

# type(array) -> Backend. Looking the namespace up through array-api-compat costs a
# few microseconds; an optimizer step asks once per parameter.
_BY_TYPE: dict[type, Backend] = {}


def is_array(obj: Any) -> bool:
    """True if ``obj`` is an array of a library arrayopt can work with.

    Args:
        obj: any object.

    Example:
        >>> import numpy as np
        >>> is_array(np.zeros(3)), is_array([0.0, 1.0])
        (True, False)
    """
    return type(obj) in _BY_TYPE or array_api_compat.is_array_api_obj(obj)


def get_backend(array: Any) -> Backend:
    """Return the :class:`Backend` for the library that owns ``array``.

    Args:
        array: a NumPy, CuPy or other array-API array.

    Example:
        >>> import numpy as np
        >>> backend = get_backend(np.zeros(3))
        >>> backend.xp.sqrt(backend.xp.asarray([4.0]))
        array([2.])

    Raises:
        TypeError: if ``array`` is not an array of an array-API compatible library.
    """
    backend = _BY_TYPE.get(type(array))
    if backend is None:
        if array_api_compat.is_numpy_array(array):
            # NumPy is an array-API namespace itself; asking array-api-compat would import
            # its wrapper of NumPy, which touches every lazy NumPy submodule (90 ms).
            backend = _numpy_backend()
        else:
            try:
                xp = array_api_compat.array_namespace(array)
            except TypeError:
                raise TypeError(
                    f"expected an array (NumPy, CuPy or another array-API library), "
                    f"got {type(array).__module__}.{type(array).__qualname__}"
                ) from None
            backend = _backend_for_namespace(xp)
        _BY_TYPE[type(array)] = backend
    return backend


@functools.cache
def _numpy_backend() -> Backend:
    from arrayopt.backends.numpy import NumPyBackend

    return NumPyBackend()


@functools.cache
def _backend_for_namespace(xp: Any) -> Backend:
    if array_api_compat.is_numpy_namespace(xp):
        return _numpy_backend()
    if array_api_compat.is_cupy_namespace(xp):
        from arrayopt.backends.cupy import CuPyBackend  # first CuPy array seen

        return CuPyBackend()
    from arrayopt.backends.array_api import ArrayAPIBackend

    return ArrayAPIBackend(xp)


def host_array(value: Any) -> Any:
    """A NumPy array holding ``value``: a number, a (nested) list or tuple, or an array of any library.

    For data that arrives as plain Python (``minimize``'s ``x0`` given as a list,
    bounds given as pairs): NumPy decides the dtype, as ``numpy.asarray`` does. An
    array of another library is copied to the host.

    Args:
        value: a number, sequence or array.

    Example:
        >>> host_array([1, 2.5])
        array([1. , 2.5])
        >>> get_backend(host_array(3)).name
        'numpy'
    """
    import numpy

    if is_array(value):
        return numpy.asarray(get_backend(value).to_numpy(value))
    return numpy.asarray(value)

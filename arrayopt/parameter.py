"""``Parameter``: an array to optimise and its gradient."""

from typing import Any

from arrayopt._validate import typename as _typename
from arrayopt.backends import Backend, get_backend
from arrayopt.sparse import SparseGrad, as_sparse_grad

__all__ = ["Parameter"]


class Parameter:
    """An array to optimise, with a slot for its gradient.

    ``data`` is a floating-point or complex array of any supported library (NumPy,
    CuPy, or another array-API library); optimizers update it in place, so the array
    object you passed keeps receiving the new values. ``grad`` is None, an array of
    the same shape, dtype, library and device, or a sparse gradient of that shape,
    dtype, library and device: a :class:`~arrayopt.SparseGrad`, or a 2-D SciPy / CuPy
    sparse matrix (stored as a SparseGrad). Assigning anything else raises at once,
    naming the parameter. Parameters are hashed and compared by identity, so they can
    key ``Optimizer.state`` the way tensors do in torch.optim.

    The Parameters of an :class:`arrayopt.ParameterList` or ``ParameterDict`` are
    *flat*: their ``data`` is a view into a buffer the list owns, and assigning
    ``grad`` or ``data`` copies the array into that storage instead of rebinding (see
    :mod:`arrayopt.flat`).

    Args:
        data: the array to optimise (writable, floating-point or complex).
        name: optional name used in error messages and ``repr``.

    Example:
        >>> import numpy as np
        >>> w = Parameter(np.zeros(3), name="w")
        >>> w.grad = np.ones(3)
        >>> w.grad = np.ones(4)
        Traceback (most recent call last):
        ...
        ValueError: Parameter 'w': gradient has shape (4,), but the data has shape (3,)
    """

    __slots__ = ("__weakref__", "_data", "_flat", "_grad", "name")

    def __init__(self, data: Any, name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Parameter name must be a str or None, got {type(name).__name__}")
        self.name = name
        self._grad: Any = None
        self._data: Any = None
        # (FlatBuffer, index) for a member of flat storage; its gradient then lives in
        # the buffer (``_grad`` stays None) and ``_data`` is the buffer's view.
        self._flat: Any = None
        self.data = data

    @classmethod
    def _flat_member(cls, buffer: Any, index: int, name: str | None) -> "Parameter":
        """Member ``index`` of a FlatBuffer (built by ParameterList; nothing to check)."""
        p = cls.__new__(cls)
        p.name = name
        p._grad = None
        p._flat = (buffer, index)
        p._data = buffer.member_data(index)
        return p

    @classmethod
    def _unchecked(cls, data: Any, grad: Any) -> "Parameter":
        """A stand-in over arrays known to fit (the optimizer's view of a run of flat Parameters)."""
        p = cls.__new__(cls)
        p.name = None
        p._flat = None
        p._data = data
        p._grad = grad
        return p

    # -- data -------------------------------------------------------------------------

    @property
    def data(self) -> Any:
        """The parameter's array; optimizers write into it in place."""
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        try:
            backend = get_backend(value)
        except TypeError:
            hint = ""
            if isinstance(value, (int, float, complex, list, tuple)) and not isinstance(value, bool):
                hint = " (make one with your array library's asarray, e.g. np.asarray(x))"
            raise TypeError(f"{self._label()}: data must be an array, got {_typename(value)}{hint}") from None
        if self._flat is not None:
            # Flat storage keeps its layout: the values are copied into the view.
            self._check_match(value, "new data", self._data, "data")
            if value is not self._data:
                self._data[...] = value
            return
        problem = backend.parameter_problem(value)
        if problem is not None:
            raise TypeError(f"{self._label()}: {problem}")
        if self._grad is not None:
            self._check_match(value, "new data", self._grad, "gradient")
        self._data = value

    # -- grad -------------------------------------------------------------------------

    @property
    def grad(self) -> Any:
        """The gradient, an array or a :class:`~arrayopt.SparseGrad`; None (the optimizer skips it) before one is set.

        For a flat Parameter, assigning an array copies it into the parameter's slice
        of the flat gradient buffer, and ``grad`` is then that slice; flat Parameters
        take dense gradients only.
        """
        flat = self._flat
        if flat is None:
            return self._grad
        return flat[0].member_grad(flat[1])

    @grad.setter
    def grad(self, value: Any) -> None:
        if value is not None:
            if not isinstance(value, SparseGrad):
                try:
                    converted = as_sparse_grad(value)
                except (TypeError, ValueError) as exc:
                    raise type(exc)(f"{self._label()}: {exc}") from None
                if converted is not None:
                    value = converted
                else:
                    try:
                        get_backend(value)
                    except TypeError:
                        raise TypeError(
                            f"{self._label()}: gradient must be an array, a SparseGrad or None, got {_typename(value)}"
                        ) from None
            self._check_match(value, "gradient", self._data, "data")
            if self._flat is not None and isinstance(value, SparseGrad):
                raise TypeError(
                    f"{self._label()}: a flat Parameter (in a ParameterList or ParameterDict) takes dense "
                    "gradients only; call .to_dense() on the SparseGrad"
                )
        if self._flat is not None:
            self._flat[0].set_member_grad(self._flat[1], value)
            return
        self._grad = value

    def _check_match(self, new: Any, new_what: str, old: Any, old_what: str) -> None:
        """Raise unless ``new`` and ``old`` can be a parameter's data and gradient."""
        label = self._label()
        new_backend, old_backend = _backend_of(new), _backend_of(old)
        if new_backend is not old_backend:
            raise ValueError(
                f"{label}: {new_what} is a {new_backend.name} array, but the {old_what} is a {old_backend.name} array"
            )
        for attribute, of_new, of_old in (
            ("shape", tuple(new.shape), tuple(old.shape)),
            ("dtype", new.dtype, old.dtype),
            ("device", _device_of(new_backend, new), _device_of(old_backend, old)),
        ):
            if of_new != of_old:
                raise ValueError(
                    f"{label}: {new_what} has {attribute} {of_new}, but the {old_what} has {attribute} {of_old}"
                )

    # -- conveniences -----------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def dtype(self) -> Any:
        return self._data.dtype

    def _label(self) -> str:
        return f"Parameter {self.name!r}" if self.name is not None else "Parameter"

    def __repr__(self) -> str:
        name = f"{self.name!r}, " if self.name is not None else ""
        if self._data is None:
            return f"Parameter({name}uninitialised)"
        backend = get_backend(self._data)
        grad = "None" if self.grad is None else "sparse" if isinstance(self._grad, SparseGrad) else "set"
        flat = ", storage=flat" if self._flat is not None else ""
        return (
            f"Parameter({name}shape={self.shape}, dtype={self._data.dtype}, library={backend.name}, grad={grad}{flat})"
        )

    def __getstate__(self) -> dict[str, Any]:
        if self._flat is not None:
            # The buffer travels whole, so the copy is a view into a copy of it.
            return {"flat": self._flat[0], "index": self._flat[1], "name": self.name}
        return {"data": self._data, "grad": self._grad, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        if "flat" in state:
            self._flat = (state["flat"], state["index"])
            self._data = state["flat"].member_data(state["index"])
            self._grad = None
            return
        self._flat = None
        self._data = state["data"]
        self._grad = state["grad"]


def _backend_of(array: Any) -> Backend:
    return get_backend(array.values if isinstance(array, SparseGrad) else array)


def _device_of(backend: Backend, array: Any) -> Any:
    return backend.device(array.values if isinstance(array, SparseGrad) else array)

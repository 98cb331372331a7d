"""Flat parameter storage: ``ParameterList`` and ``ParameterDict``.

Both take arrays, copy them into one contiguous 1-D buffer per (array library, device,
dtype) and hand out :class:`~arrayopt.Parameter` objects whose ``data`` are views into
that buffer (a slice reshaped to the array's shape). Gradients live the same way, in a
second buffer allocated when the first gradient is set. An elementwise optimizer given
such Parameters keeps their state in flat buffers too and runs its rule once per run
of neighbouring parameters instead of once per parameter, so the Python cost of
a step no longer grows with the number of arrays (see
:class:`arrayopt.optimizer.ElementwiseOptimizer`).

What differs from Parameters made one by one:

* The list owns the storage: the arrays you pass are copied at construction and are
  never touched again. Read and write the values through the Parameters (or
  ``flat_data``).
* ``p.grad = g`` copies ``g`` into the parameter's slice of the gradient buffer, so
  afterwards ``p.grad`` is that slice, not ``g`` (later changes to ``g`` are not seen).
  ``p.grad = None`` marks the gradient absent (the optimizer skips the parameter) and
  leaves the slice's values as they were. A gradient array read from a flat Parameter
  is overwritten by later assignments to that parameter's (or the whole) gradient.
* ``p.data = x`` copies ``x`` into the parameter's slice (same shape, dtype, library
  and device required) instead of rebinding ``p.data``.
* Copying or pickling a lone flat Parameter copies its whole buffer, so the copy is
  still a view into (a copy of) flat storage.

On an array library whose slices are not writable views of the array they come from
(the array API standard leaves this to each library), a ``ParameterList`` holds one
separate array per Parameter instead; ``buffers`` is then empty, ``flat_data`` and
``flat_grad`` return concatenated copies, their setters still write every parameter,
and optimizers step those Parameters one by one.
"""

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

from arrayopt._validate import typename as _typename
from arrayopt.backends import Backend, get_backend
from arrayopt.parameter import Parameter

__all__ = ["FlatBuffer", "ParameterDict", "ParameterList"]

# Arrays allocated beside a buffer (its gradient, optimizer state) start this many
# bytes further into their allocation, times their rank: equal-sized allocations from
# the system land at the same address modulo the page size and page-mapping stride,
# which made single-pass kernels over several of them ~1.4x slower on the project
# machine (shared/reference/perf_baseline.md, section 3.5). A multiple of 64 bytes
# keeps every array cache-line aligned.
_STAGGER_BYTES = 4096 + 64


class FlatBuffer:
    """The contiguous storage of the Parameters of one (library, device, dtype).

    Built by :class:`ParameterList` and :class:`ParameterDict`; users normally reach
    it through their ``flat_data``, ``flat_grad`` and ``buffers``.

    Attributes:
        backend: the :class:`~arrayopt.backends.Backend` of the library.
        data: 1-D array holding every member's values back to back, in order; member
            ``i`` occupies ``data[offsets[i]:offsets[i + 1]]``. Writing into it writes
            the Parameters.
        shapes: each member's shape.
        offsets: element offsets of the members, with the total size last.

    Args:
        backend: the :class:`~arrayopt.backends.Backend` of the arrays.
        arrays: one or more arrays of that library, of one device and dtype; their
            values are copied into ``data``.

    Example:
        >>> import numpy as np
        >>> from arrayopt.backends import get_backend
        >>> arrays = [np.array([1.0, 2.0]), np.array([[3.0], [4.0]])]
        >>> buf = FlatBuffer(get_backend(arrays[0]), arrays)
        >>> buf.data, buf.shapes, buf.offsets
        (array([1., 2., 3., 4.]), ((2,), (2, 1)), (0, 2, 4))
    """

    def __init__(self, backend: Backend, arrays: Sequence[Any]) -> None:
        self.backend = backend
        self.shapes: tuple[tuple[int, ...], ...] = tuple(tuple(a.shape) for a in arrays)
        offsets = [0]
        for shape in self.shapes:
            offsets.append(offsets[-1] + math.prod(shape))
        self.offsets: tuple[int, ...] = tuple(offsets)
        first = arrays[0]
        self._dtype = first.dtype
        self._device = backend.device(first)
        self._companions = 0
        self.data: Any = self._allocate()
        self._views: list[Any] = self.member_views(self.data)
        for view, array in zip(self._views, arrays, strict=True):
            view[...] = array
        self._grad: Any = None
        self._grad_views: list[Any] = []
        #: 1 where member i has a gradient (its ``grad`` is not None), else 0
        self.has_grad = bytearray(len(self.shapes))

    # -- layout -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.shapes)

    @property
    def size(self) -> int:
        """Total number of elements."""
        return self.offsets[-1]

    @property
    def dtype(self) -> Any:
        return self._dtype

    def _allocate(self) -> Any:
        """A zeroed 1-D array the size of ``data``, staggered from the ones made before."""
        xp = self.backend.xp
        pad = (self._companions * _STAGGER_BYTES) // _itemsize(self._dtype)
        self._companions += 1
        whole = xp.zeros((self.size + pad,), dtype=self._dtype, device=self._device)
        return whole[pad:] if pad else whole

    def companion(self) -> Any:
        """A new zeroed array laid out like ``data`` (for gradients and optimizer state)."""
        return self._allocate()

    def member_views(self, flat: Any) -> list[Any]:
        """Each member's view into ``flat`` (an array laid out like ``data``)."""
        reshape = self.backend.xp.reshape
        offsets = self.offsets
        return [reshape(flat[offsets[i] : offsets[i + 1]], shape) for i, shape in enumerate(self.shapes)]

    def member_data(self, i: int) -> Any:
        return self._views[i]

    def data_views(self, lo: int, hi: int) -> list[Any]:
        """The ``data`` of members ``lo .. hi-1`` (the very views their Parameters hold)."""
        return self._views if hi - lo == len(self._views) else self._views[lo:hi]

    # -- gradients --------------------------------------------------------------------

    def member_grad(self, i: int) -> Any:
        """Member ``i``'s gradient view, or None when it has none."""
        return self._grad_views[i] if self.has_grad[i] else None

    def set_member_grad(self, i: int, value: Any) -> None:
        """Copy ``value`` (already checked to fit) into member ``i``'s gradient, or clear it."""
        if value is None:
            self.has_grad[i] = 0
            return
        view = self._grad_storage()[i]
        if value is not view:
            view[...] = value
        self.has_grad[i] = 1

    def _grad_storage(self) -> list[Any]:
        if self._grad is None:
            self._grad = self.companion()
            self._grad_views = self.member_views(self._grad)
        return self._grad_views

    @property
    def raw_grad(self) -> Any:
        """The gradient buffer as it is (None before the first gradient), flags ignored."""
        return self._grad

    @property
    def grad(self) -> Any:
        """The whole gradient as one 1-D array (a view), or None.

        None when no member has a gradient. Raises ValueError when only some have one,
        since the others' entries are stale. Assigning a 1-D array of ``size``
        elements (same library, dtype, device) copies it into the buffer and gives
        every member a gradient; assigning None clears them all.
        """
        count = len(self.shapes) - self.has_grad.count(0)
        if count == 0:
            return None
        if count != len(self.shapes):
            missing = self.has_grad.count(0)
            raise ValueError(
                f"{missing} of the {len(self.shapes)} parameters of this buffer have no gradient, "
                "so the flat gradient is incomplete"
            )
        return self._grad

    @grad.setter
    def grad(self, value: Any) -> None:
        if value is None:
            self.has_grad[:] = bytes(len(self.shapes))
            return
        self.check_flat(value, "flat gradient")
        self._grad_storage()
        if value is not self._grad:
            self._grad[...] = value
        self.has_grad[:] = b"\x01" * len(self.shapes)

    def set_data(self, value: Any) -> None:
        """Copy a 1-D array of ``size`` elements into ``data``."""
        self.check_flat(value, "flat data")
        if value is not self.data:
            self.data[...] = value

    def check_flat(self, value: Any, what: str) -> None:
        """Raise unless ``value`` can be copied into this buffer as it is."""
        try:
            backend = get_backend(value)
        except TypeError:
            raise TypeError(f"{what} must be an array, got {_typename(value)}") from None
        if backend is not self.backend:
            raise ValueError(f"{what} is a {backend.name} array, but the parameters are {self.backend.name} arrays")
        if tuple(value.shape) != (self.size,):
            raise ValueError(
                f"{what} has shape {tuple(value.shape)}, but the parameters have {self.size} elements in all "
                f"(expected shape ({self.size},))"
            )
        if value.dtype != self._dtype:
            raise ValueError(f"{what} has dtype {value.dtype}, but the parameters have dtype {self._dtype}")
        device = backend.device(value)
        if device != self._device:
            raise ValueError(f"{what} is on device {device}, but the parameters are on device {self._device}")

    # -- copying ----------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.data, "grad": self._grad, "shapes": self.shapes, "has_grad": bytes(self.has_grad)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data = state["data"]
        self.backend = get_backend(self.data)
        self.shapes = state["shapes"]
        offsets = [0]
        for shape in self.shapes:
            offsets.append(offsets[-1] + math.prod(shape))
        self.offsets = tuple(offsets)
        self._dtype = self.data.dtype
        self._device = self.backend.device(self.data)
        self._companions = 1
        self._views = self.member_views(self.data)
        self._grad = state["grad"]
        self._grad_views = [] if self._grad is None else self.member_views(self._grad)
        self.has_grad = bytearray(state["has_grad"])

    def __repr__(self) -> str:
        return (
            f"FlatBuffer({len(self.shapes)} parameters, {self.size} elements, library={self.backend.name}, "
            f"dtype={self._dtype}, device={self._device})"
        )


def _itemsize(dtype: Any) -> int:
    size = getattr(dtype, "itemsize", None)
    if isinstance(size, int):
        return size
    import numpy

    try:
        return int(numpy.dtype(str(dtype).rsplit(".", 1)[-1]).itemsize)
    except TypeError:
        return 8


_VIEWS_WORK: dict[tuple[int, str], bool] = {}


def slices_are_views(backend: Backend, like: Any) -> bool:
    """Whether reshaped slices of ``like``'s library write through to their array, both ways.

    NumPy and CuPy guarantee it; for other array-API libraries it is tried once, on a
    small array of ``like``'s dtype and device.
    """
    key = (id(backend), str(like.dtype))
    known = _VIEWS_WORK.get(key)
    if known is not None:
        return known
    xp = backend.xp
    try:
        base = xp.zeros((4,), dtype=like.dtype, device=backend.device(like))
        view = xp.reshape(base[1:3], (2, 1))
        scalar = xp.reshape(base[3:4], ())
        view[...] = xp.ones((2, 1), dtype=like.dtype, device=backend.device(like))
        scalar[...] = xp.ones((), dtype=like.dtype, device=backend.device(like))
        base[1:2] = xp.zeros((1,), dtype=like.dtype, device=backend.device(like))
        seen = backend.to_numpy(base).tolist()
        back = backend.to_numpy(view).reshape(-1).tolist()
        works = bool(seen == [0, 0, 1, 1] and back == [0, 1])
    except Exception:  # any refusal means: no usable views
        works = False
    _VIEWS_WORK[key] = works
    return works


class _FlatStorage:
    """What ParameterList and ParameterDict share: building the buffers and flat access."""

    _params: list[Parameter]
    _buffers: tuple[FlatBuffer, ...]
    _kinds: list[list[int]]  # member positions per (library, device, dtype), in buffer order

    def _build(self, arrays: list[Any], names: list[str | None], labels: list[str]) -> None:
        backends = []
        for array, label in zip(arrays, labels, strict=True):
            try:
                backend = get_backend(array)
            except TypeError:
                raise TypeError(f"{type(self).__name__}: {label} must be an array, got {_typename(array)}") from None
            problem = backend.parameter_problem(array)
            if problem is not None:
                raise TypeError(f"{type(self).__name__}: {label}: {problem}")
            backends.append(backend)
        keys: list[tuple[Backend, Any, Any]] = []
        kinds: list[list[int]] = []
        for position, (array, backend) in enumerate(zip(arrays, backends, strict=True)):
            key = (backend, backend.device(array), array.dtype)
            for k, known in enumerate(keys):
                if known[0] is key[0] and known[1] == key[1] and known[2] == key[2]:
                    kinds[k].append(position)
                    break
            else:
                keys.append(key)
                kinds.append([position])
        params: list[Parameter | None] = [None] * len(arrays)
        buffers = []
        for key, members in zip(keys, kinds, strict=True):
            backend = key[0]
            if slices_are_views(backend, arrays[members[0]]):
                buffer = FlatBuffer(backend, [arrays[i] for i in members])
                buffers.append(buffer)
                for index, position in enumerate(members):
                    params[position] = Parameter._flat_member(buffer, index, names[position])
            else:
                for position in members:
                    copy = backend.xp.asarray(arrays[position], copy=True)
                    params[position] = Parameter(copy, name=names[position])
        self._params = [p for p in params if p is not None]
        self._buffers = tuple(buffers)
        self._kinds = kinds

    # -- parameters -------------------------------------------------------------------

    def parameters(self) -> Iterator[Parameter]:
        """The Parameters, in order (for an optimizer: ``arrayopt.Adam(x.parameters())``)."""
        return iter(self._params)

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """``(name, Parameter)`` pairs, in order; an optimizer given them records ``param_names``."""
        raise NotImplementedError

    @property
    def buffers(self) -> tuple[FlatBuffer, ...]:
        """The flat buffers, one per (library, device, dtype), in order of first appearance."""
        return self._buffers

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every gradient (set_to_none) or set the existing ones to zero."""
        for buffer in self._buffers:
            if set_to_none:
                buffer.grad = None
            elif buffer.has_grad.count(0) == 0:
                buffer.raw_grad[...] = 0
            else:
                for i in range(len(buffer)):
                    if buffer.has_grad[i]:
                        buffer.member_grad(i)[...] = 0
        for p in self._params:
            if p._flat is None and p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad[...] = 0

    # -- the whole vector ---------------------------------------------------------------

    def _single_kind(self, what: str) -> list[int]:
        if len(self._kinds) != 1:
            if not self._kinds:
                raise ValueError(f"{type(self).__name__} holds no arrays, so it has no {what}")
            kinds = ", ".join(
                f"{get_backend(self._params[m[0]].data).name} {self._params[m[0]].dtype}" for m in self._kinds
            )
            raise ValueError(
                f"{type(self).__name__} holds arrays of {len(self._kinds)} kinds ({kinds}), one buffer each; "
                f"use .buffers[i].{'data' if what == 'flat_data' else 'grad'} for each"
            )
        return self._kinds[0]

    @property
    def flat_data(self) -> Any:
        """All values as one 1-D array, the buffer itself (writing into it writes the Parameters).

        Needs a single (library, device, dtype). Assigning a 1-D array of the total
        size copies it in. Where the library has no writable views (see the module
        docstring) the getter returns a concatenated copy.
        """
        members = self._single_kind("flat_data")
        if self._buffers:
            return self._buffers[0].data
        return self._concat([self._params[i].data for i in members])

    @flat_data.setter
    def flat_data(self, value: Any) -> None:
        members = self._single_kind("flat_data")
        if self._buffers:
            self._buffers[0].set_data(value)
            return
        pieces = self._split(value, members, "flat data")
        for i, piece in zip(members, pieces, strict=True):
            self._params[i].data[...] = piece

    @property
    def flat_grad(self) -> Any:
        """All gradients as one 1-D array (a view of the gradient buffer), or None.

        Needs a single (library, device, dtype). None when no parameter has a
        gradient; ValueError when only some do. Assigning a 1-D array of the total
        size (same library, dtype and device) copies it into the gradient buffer in one
        operation and gives every parameter a gradient: the fit for code that computes
        one gradient vector (scipy style). Assigning None clears every gradient.
        """
        members = self._single_kind("flat_grad")
        if self._buffers:
            return self._buffers[0].grad
        grads = [self._params[i].grad for i in members]
        if all(g is None for g in grads):
            return None
        if any(g is None for g in grads):
            raise ValueError("some parameters have no gradient, so the flat gradient is incomplete")
        return self._concat(grads)

    @flat_grad.setter
    def flat_grad(self, value: Any) -> None:
        members = self._single_kind("flat_grad")
        if self._buffers:
            self._buffers[0].grad = value
            return
        if value is None:
            for i in members:
                self._params[i].grad = None
            return
        pieces = self._split(value, members, "flat gradient")
        for i, piece in zip(members, pieces, strict=True):
            self._params[i].grad = piece

    def _concat(self, arrays: list[Any]) -> Any:
        xp = get_backend(arrays[0]).xp
        return xp.concat([xp.reshape(a, (-1,)) for a in arrays])

    def _split(self, value: Any, members: list[int], what: str) -> list[Any]:
        """``value`` cut into copies shaped like the members (checked first, like FlatBuffer.check_flat)."""
        first = self._params[members[0]].data
        backend = get_backend(first)
        try:
            source = get_backend(value)
        except TypeError:
            raise TypeError(f"{what} must be an array, got {_typename(value)}") from None
        total = sum(math.prod(self._params[i].shape) for i in members)
        if source is not backend:
            raise ValueError(f"{what} is a {source.name} array, but the parameters are {backend.name} arrays")
        if tuple(value.shape) != (total,):
            raise ValueError(
                f"{what} has shape {tuple(value.shape)}, but the parameters have {total} elements in all "
                f"(expected shape ({total},))"
            )
        if value.dtype != first.dtype:
            raise ValueError(f"{what} has dtype {value.dtype}, but the parameters have dtype {first.dtype}")
        xp = backend.xp
        pieces, start = [], 0
        for i in members:
            shape = self._params[i].shape
            stop = start + math.prod(shape)
            pieces.append(xp.reshape(xp.asarray(value[start:stop], copy=True), shape))
            start = stop
        return pieces


class ParameterList(_FlatStorage, Sequence[Parameter]):
    """A sequence of Parameters whose arrays live in flat buffers.

    ``ParameterList(arrays)`` copies the arrays into one contiguous buffer per (array
    library, device, dtype), in order, and makes one :class:`~arrayopt.Parameter` per
    array whose ``data`` is a view into its buffer. The list owns that storage: the
    arrays you pass are not used afterwards. Give the list (or ``.parameters()``) to an
    optimizer; an elementwise optimizer then updates each buffer in one pass.

    Args:
        arrays: floating-point or complex arrays of any supported library.
        names: optional names, one per array, used as the Parameters' names (and by
            ``named_parameters``).

    The list cannot be resized or have its items replaced: write new values through
    ``p.data = x`` (a copy into the view) or ``flat_data``. Gradients: ``p.grad = g``
    copies into the flat gradient buffer; ``flat_grad = vector`` sets them all at once.
    See the :mod:`arrayopt.flat` docstring for every difference from separate
    Parameters.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> params = arrayopt.ParameterList([np.zeros((2, 2)), np.ones(3)], names=["w", "b"])
        >>> params.flat_data
        array([0., 0., 0., 0., 1., 1., 1.])
        >>> opt = arrayopt.SGD(params, lr=0.5)
        >>> params.flat_grad = np.arange(7.0)     # one gradient vector for all
        >>> opt.step()
        >>> params[1].data
        array([-1. , -1.5, -2. ])
    """

    def __init__(self, arrays: Iterable[Any], names: Iterable[str] | None = None) -> None:
        arrays = list(arrays)
        if names is None:
            name_list: list[str | None] = [None] * len(arrays)
        else:
            name_list = list(names)
            if len(name_list) != len(arrays):
                raise ValueError(f"ParameterList got {len(arrays)} arrays but {len(name_list)} names")
            for name in name_list:
                if not isinstance(name, str):
                    raise TypeError(f"ParameterList names must be str, got {_typename(name)}")
        self._names = name_list
        self._build(arrays, name_list, [f"item {i}" for i in range(len(arrays))])

    def __len__(self) -> int:
        return len(self._params)

    @overload
    def __getitem__(self, index: int) -> Parameter: ...

    @overload
    def __getitem__(self, index: slice) -> list[Parameter]: ...

    def __getitem__(self, index: int | slice) -> Parameter | list[Parameter]:
        return self._params[index]

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self._params)

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        return ((str(i) if n is None else n, p) for i, (n, p) in enumerate(zip(self._names, self._params, strict=True)))

    def __repr__(self) -> str:
        lines = [f"  ({i}): {p!r}" for i, p in enumerate(self._params)]
        return "ParameterList(\n" + "\n".join(lines) + "\n)" if lines else "ParameterList()"


class ParameterDict(_FlatStorage, Mapping[str, Parameter]):
    """A read-only mapping from names to Parameters whose arrays live in flat buffers.

    ``ParameterDict(mapping)`` copies the arrays, in the mapping's order, into one
    contiguous buffer per (array library, device, dtype); each value is a
    :class:`~arrayopt.Parameter` named by its key, with ``data`` a view into its buffer.
    It behaves as a ``Mapping`` (iteration gives the keys, as for a dict), so give an
    optimizer ``d.parameters()``, ``d.values()`` or ``d.named_parameters()`` (the last
    records the keys as ``param_names``). Flat access and gradients as for
    :class:`ParameterList`.

    Args:
        mapping: a mapping, or an iterable of ``(name, array)`` pairs, with str keys.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> params = arrayopt.ParameterDict({"w": np.ones(2), "b": np.zeros(1)})
        >>> list(params)
        ['w', 'b']
        >>> params["b"]
        Parameter('b', shape=(1,), dtype=float64, library=numpy, grad=None, storage=flat)
    """

    def __init__(self, mapping: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        items = list(mapping.items()) if isinstance(mapping, Mapping) else [tuple(item) for item in mapping]
        keys: list[str] = []
        for item in items:
            if len(item) != 2:
                raise ValueError(f"ParameterDict items must be (name, array) pairs, got {len(item)} elements")
            if not isinstance(item[0], str):
                raise TypeError(f"ParameterDict keys must be str, got {_typename(item[0])}")
            keys.append(item[0])
        if len(set(keys)) != len(keys):
            duplicates = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"ParameterDict got duplicate keys {duplicates}")
        self._build([item[1] for item in items], list(keys), [f"key {k!r}" for k in keys])
        self._index = {k: i for i, k in enumerate(keys)}
        self._keys = keys

    def __getitem__(self, key: str) -> Parameter:
        return self._params[self._index[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        return zip(self._keys, self._params, strict=True)

    def __repr__(self) -> str:
        lines = [f"  ({k}): {p!r}" for k, p in zip(self._keys, self._params, strict=True)]
        return "ParameterDict(\n" + "\n".join(lines) + "\n)" if lines else "ParameterDict()"

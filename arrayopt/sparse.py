"""Sparse gradients: :class:`SparseGrad`, the COO layout of ``torch.sparse_coo_tensor``.

A parameter's ``grad`` may be a :class:`SparseGrad` (or a 2-D SciPy / CuPy sparse
matrix, converted to one on assignment). Optimizers that support sparse gradients
(:class:`~arrayopt.SGD`, :class:`~arrayopt.Adagrad`, :class:`~arrayopt.SparseAdam`)
update only the entries it names; the others raise torch's RuntimeError.

The sparse path of those optimizers runs their ordinary elementwise rule on the
touched entries only (:func:`update_entries`): the entries are gathered into compact
arrays, the compiled rule runs on them, and they are written back.
"""

import operator
from collections.abc import Callable
from typing import Any

from arrayopt._validate import typename as _typename
from arrayopt.backends import Backend, get_backend, is_array
from arrayopt.backends.base import linear_index

__all__ = ["SparseGrad", "as_sparse_grad", "union", "update_entries"]


class SparseGrad:
    r"""A sparse gradient in coordinate (COO) form, as ``torch.sparse_coo_tensor``.

    It stands for the array of shape ``shape`` that is zero except for
    ``values[n]`` added at position ``indices[:, n]`` for every ``n``; when a position
    appears several times its values add up (the gradient is *uncoalesced* until
    :meth:`coalesce` sums them).

    Args:
        indices: integer array of shape ``(sparse_dims, nnz)``: the positions, in the
            first ``sparse_dims`` dimensions of ``shape`` (at least one). Kept as int64.
        values: array of shape ``(nnz, *shape[sparse_dims:])``, of the same library and
            device as ``indices``: one value, or one dense block for the trailing
            dimensions, per position.
        shape: the shape of the gradient (and of its parameter).
        is_coalesced: declare that the positions are already sorted (row-major) and
            distinct, so :meth:`coalesce` has nothing to do. Trusted, as in torch.

    Every position is checked to lie inside ``shape`` (for a CuPy array this reads two
    small reductions back to the host). Arrays are referenced, not copied; optimizers
    never write into them.

    Example:
        >>> import numpy as np
        >>> g = SparseGrad(np.array([[2, 0, 2]]), np.array([1.0, 5.0, 3.0]), (4,))
        >>> g.to_dense()
        array([5., 0., 4., 0.])
        >>> c = g.coalesce()
        >>> c.indices, c.values
        (array([[0, 2]]), array([5., 4.]))
    """

    __slots__ = ("_coalesced", "indices", "shape", "values")

    indices: Any
    values: Any
    shape: tuple[int, ...]

    def __init__(self, indices: Any, values: Any, shape: Any, *, is_coalesced: bool = False) -> None:
        try:
            backend = get_backend(values)
        except TypeError:
            raise TypeError(f"SparseGrad: values must be an array, got {_typename(values)}") from None
        try:
            index_backend = get_backend(indices)
        except TypeError:
            raise TypeError(f"SparseGrad: indices must be an array, got {_typename(indices)}") from None
        if index_backend is not backend:
            raise ValueError(
                f"SparseGrad: indices is a {index_backend.name} array, but values is a {backend.name} array"
            )
        if backend.device(indices) != backend.device(values):
            raise ValueError(
                f"SparseGrad: indices is on device {backend.device(indices)}, "
                f"but values is on device {backend.device(values)}"
            )
        xp = backend.xp
        if not xp.isdtype(indices.dtype, "integral"):
            raise TypeError(f"SparseGrad: indices must be an integer array, got dtype {indices.dtype}")
        shape = _as_shape(shape)
        if len(indices.shape) != 2:
            raise ValueError(
                f"SparseGrad: indices must have shape (sparse_dims, nnz), got shape {tuple(indices.shape)}"
            )
        k, nnz = (int(n) for n in indices.shape)
        if not 1 <= k <= len(shape):
            raise ValueError(
                f"SparseGrad: indices has {k} rows (sparse dimensions), but a gradient of shape {shape} "
                f"takes 1 to {len(shape)}"
            )
        expected = (nnz, *shape[k:])
        if tuple(values.shape) != expected:
            raise ValueError(
                f"SparseGrad: values must have shape (nnz, *shape[{k}:]) = {expected}, got {tuple(values.shape)}"
            )
        if indices.dtype != xp.int64:
            indices = xp.astype(indices, xp.int64)
        if nnz:
            lowest = backend.to_numpy(xp.min(indices, axis=1))
            highest = backend.to_numpy(xp.max(indices, axis=1))
            for d in range(k):
                if lowest[d] < 0 or highest[d] >= shape[d]:
                    raise ValueError(
                        f"SparseGrad: indices[{d}] must lie in [0, {shape[d]}) for shape {shape}, "
                        f"got values from {int(lowest[d])} to {int(highest[d])}"
                    )
        self.indices = indices
        self.values = values
        self.shape = shape
        self._coalesced = bool(is_coalesced) or nnz <= 1

    @classmethod
    def _trusted(cls, indices: Any, values: Any, shape: tuple[int, ...], coalesced: bool) -> "SparseGrad":
        """A SparseGrad from parts known to be valid (made by this module)."""
        self = cls.__new__(cls)
        self.indices = indices
        self.values = values
        self.shape = shape
        self._coalesced = coalesced or int(indices.shape[1]) <= 1
        return self

    # -- description ----------------------------------------------------------------

    @property
    def sparse_dim(self) -> int:
        """How many leading dimensions ``indices`` addresses."""
        return int(self.indices.shape[0])

    @property
    def dense_dim(self) -> int:
        """How many trailing dimensions every value block has."""
        return len(self.shape) - self.sparse_dim

    @property
    def nnz(self) -> int:
        """The number of stored (position, value) pairs, repeated positions included."""
        return int(self.indices.shape[1])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> Any:
        return self.values.dtype

    def is_coalesced(self) -> bool:
        """True when the positions are known to be sorted and distinct."""
        return self._coalesced

    def __repr__(self) -> str:
        backend = get_backend(self.values)
        state = "coalesced" if self._coalesced else "uncoalesced"
        return (
            f"SparseGrad(shape={self.shape}, sparse_dim={self.sparse_dim}, nnz={self.nnz}, "
            f"dtype={self.values.dtype}, library={backend.name}, {state})"
        )

    # -- operations -----------------------------------------------------------------

    def coalesce(self) -> "SparseGrad":
        """The same gradient with sorted, distinct positions (itself if already so).

        As torch: positions are sorted row-major (stably), and the values of a repeated
        position are summed in their original order, the first one copied and the
        others added to it one by one.
        """
        if self._coalesced:
            return self
        backend = get_backend(self.values)
        xp = backend.xp
        rows = linear_index(xp, self.indices, self.shape[: self.sparse_dim])
        order = xp.argsort(rows, stable=True)
        rows = xp.take(rows, order)
        starts = xp.concat([xp.ones(1, dtype=xp.bool, device=backend.device(rows)), rows[1:] != rows[:-1]])
        first = xp.nonzero(starts)[0]
        values = xp.take(self.values, order, axis=0)
        summed = xp.take(values, first, axis=0)
        if int(first.shape[0]) < self.nnz:
            repeats = xp.nonzero(xp.logical_not(starts))[0]
            group = xp.cumulative_sum(xp.astype(starts, xp.int64)) - 1
            backend.add_entries(summed, xp.reshape(xp.take(group, repeats), (1, -1)), xp.take(values, repeats, axis=0))
        indices = xp.take(self.indices, xp.take(order, first), axis=1)
        return SparseGrad._trusted(indices, summed, self.shape, coalesced=True)

    def to_dense(self) -> Any:
        """The dense array this gradient stands for (repeated positions summed)."""
        backend = get_backend(self.values)
        xp = backend.xp
        out = xp.zeros(self.shape, dtype=self.values.dtype, device=backend.device(self.values))
        if self.nnz:
            backend.add_entries(out, self.indices, self.values)
        return out

    def __neg__(self) -> "SparseGrad":
        return SparseGrad._trusted(self.indices, -self.values, self.shape, self._coalesced)

    def zero_(self) -> "SparseGrad":
        """Drop every stored entry, in place (torch's ``zero_`` on a sparse tensor)."""
        self.indices = self.indices[:, :0]
        self.values = self.values[:0, ...]
        self._coalesced = True
        return self

    def _converted(self, backend: Backend, like: Any, cast: bool) -> "SparseGrad":
        """A copy on ``like``'s library and device (values also in its dtype with ``cast``)."""
        indices = backend.convert(self.indices, like, cast=False)
        values = backend.convert(self.values, like, cast=cast)
        return SparseGrad._trusted(indices, values, self.shape, self._coalesced)


def _as_shape(shape: Any) -> tuple[int, ...]:
    try:
        dims = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise TypeError(f"SparseGrad: shape must be a sequence of ints, got {shape!r}") from None
    if any(n < 0 for n in dims):
        raise ValueError(f"SparseGrad: shape must hold non-negative ints, got {shape!r}")
    return dims


def as_sparse_grad(obj: Any) -> "SparseGrad | None":
    """``obj`` as a SparseGrad if it is a SciPy or CuPy sparse matrix/array; else None.

    Recognised by the module of its type, so SciPy is never imported here.
    The matrix (2-D only) becomes a COO gradient with int64 indices of shape
    ``(2, nnz)``, in the matrix's order, not coalesced.

    Args:
        obj: anything; a ``scipy.sparse`` or ``cupyx.scipy.sparse`` matrix or array
            is converted.

    Raises:
        ValueError: a sparse object that is not 2-D.

    Example:
        >>> import numpy as np, scipy.sparse
        >>> g = as_sparse_grad(scipy.sparse.coo_array(np.array([[0.0, 2.0], [3.0, 0.0]])))
        >>> g.indices, g.values, g.shape
        (array([[0, 1],
               [1, 0]]), array([2., 3.]), (2, 2))
        >>> as_sparse_grad(np.zeros(2)) is None
        True
    """
    module = type(obj).__module__ or ""
    if not (module.startswith("scipy.sparse") or module.startswith("cupyx.scipy.sparse")):
        return None
    shape = tuple(obj.shape)
    if len(shape) != 2:
        raise ValueError(f"a sparse gradient from {module} must be 2-D, got shape {shape}")
    coo = obj.tocoo()
    backend = get_backend(coo.data)
    xp = backend.xp
    indices = xp.stack([xp.astype(xp.asarray(coo.row), xp.int64), xp.astype(xp.asarray(coo.col), xp.int64)])
    return SparseGrad(indices, coo.data, shape)


def union(first: SparseGrad, second: SparseGrad) -> tuple[Any, Any, Any]:
    """The positions either gradient names, and each one's values there (zero where absent).

    Returns ``(indices, first_values, second_values)`` with sorted, distinct positions:
    the compact form in which an elementwise rule can combine two sparse arrays.
    Repeated positions are summed (both are coalesced).

    Args:
        first, second: :class:`SparseGrad` of the same shape and library.

    Example:
        >>> import numpy as np
        >>> a = SparseGrad(np.array([[3, 0]]), np.array([1.0, 2.0]), (4,))
        >>> b = SparseGrad(np.array([[1, 3]]), np.array([5.0, 7.0]), (4,))
        >>> union(a, b)
        (array([[0, 1, 3]]), array([2., 0., 1.]), array([0., 5., 7.]))
    """
    xp = get_backend(first.values).xp
    indices = xp.concat([first.indices, second.indices], axis=1)
    shape = first.shape
    # The same positions in the same order, so both coalesce to the same indices.
    padded_first = xp.concat([first.values, xp.zeros_like(second.values)], axis=0)
    padded_second = xp.concat([xp.zeros_like(first.values), second.values], axis=0)
    a = SparseGrad._trusted(indices, padded_first, shape, coalesced=False).coalesce()
    b = SparseGrad._trusted(indices, padded_second, shape, coalesced=False).coalesce()
    return a.indices, a.values, b.values


def update_entries(backend: Backend, run: Callable[..., None], operands: "tuple[Any, ...]", *scalars: Any) -> None:
    """Run an update rule on the entries a sparse gradient touches, and nowhere else.

    ``operands`` are the dense rule's arrays with the gradient a coalesced
    :class:`SparseGrad`: ``(param, grad, *state)``, each state operand an array of the
    parameter's shape or a placeholder. The touched entries of the parameter and of every
    state array are gathered into compact arrays, ``run`` (a compiled rule) updates them
    with the gradient's values, and they are written back: untouched entries are never
    read or written.

    Args:
        backend: the parameter's :class:`~arrayopt.backends.Backend`.
        run: the rule, called as ``run(param, grad, *state, *scalars)`` on the compact
            arrays (placeholders passed through as they are); it updates them in place.
        operands: ``(param, grad, *state)`` as above.
        *scalars: the rule's remaining arguments (per-step Python floats).

    Example:
        >>> import numpy as np
        >>> from arrayopt.backends import get_backend
        >>> def sgd(param, grad, lr):
        ...     param -= lr * grad
        >>> p = np.ones(4)
        >>> g = SparseGrad(np.array([[3, 0]]), np.array([1.0, 2.0]), (4,)).coalesce()
        >>> update_entries(get_backend(p), sgd, (p, g), 0.5)
        >>> p
        array([0. , 1. , 1. , 0.5])
    """
    param, grad, *state = operands
    indices = grad.indices
    targets = [param, *(s for s in state if is_array(s))]
    compact = {id(a): backend.take_entries(a, indices) for a in targets}
    run(
        compact[id(param)],
        grad.values,
        *(compact[id(s)] if is_array(s) else s for s in state),
        *scalars,
    )
    for a in targets:
        backend.put_entries(a, indices, compact[id(a)])

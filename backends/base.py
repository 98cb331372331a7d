"""The interface every backend implements, and what they share."""

import contextlib
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat

_WRITEABLE = operator.attrgetter("flags.writeable")
READ_ONLY_MESSAGE = "the array is read-only, so the optimizer cannot update it"

Rule = Callable[..., None]
Kernel = Callable[..., None]


class Bundle(tuple):  # type: ignore[type-arg]
    """One argument of a rule for several parameters: a kernel given bundles runs the rule for each in turn.

    ``kernel(Bundle(params), Bundle(grads), ..., *scalars)`` is ``kernel(params[i],
    grads[i], ..., *scalars)`` for ``i = 0, 1, ...``, in that order, with the host
    arithmetic on the scalars done once; a backend whose ``takes_bundles`` is True
    accepts them (the NumPy one runs a compiled rule on each member from one Python
    call). Every argument that is a bundle has one member per parameter; the others
    are shared.

    Example:
        >>> import numpy as np
        >>> from arrayopt.backends import get_backend
        >>> def scale(xp, y, a):
        ...     y *= a
        >>> ys = Bundle([np.ones(2), np.ones(3)])
        >>> get_backend(ys[0]).kernel(scale)(ys, 2.0)
        >>> ys
        (array([2., 2.]), array([2., 2., 2.]))
    """

    __slots__ = ()


#: The functions an update rule may call on its namespace argument, besides arithmetic
#: operators: all elementwise, all compiled by ``cupy.fuse``.
ELEMENTWISE_FUNCTIONS = frozenset(
    {"sqrt", "maximum", "minimum", "abs", "absolute", "sign", "where", "exp", "log", "square"}
)


class Backend:
    """How arrayopt talks to one array library.

    Attributes:
        name: short library name (``"numpy"``, ``"cupy"``, or the namespace's name).
        xp: the library's array-API namespace, as array-api-compat's
            ``array_namespace`` gives it (NumPy's is NumPy itself), used to allocate
            state and for non-elementwise work.
        fit_block: how many problems :mod:`arrayopt.batch` fits together by default
            (None: the whole batch).
        reduction_block: how many elements of a long axis a fixed-order reduction
            (:mod:`arrayopt.lbfgsb`'s products with its memory) takes at a time, so that
            its temporaries stay in cache (None: the whole axis at once).
        takes_bundles: whether its kernels take :class:`Bundle` arguments (many
            parameters in one call).

    One instance per library, found with :func:`get_backend`; it takes no arguments.

    Example:
        >>> import numpy as np
        >>> from arrayopt.backends import get_backend
        >>> backend = get_backend(np.zeros(2))
        >>> backend.name
        'numpy'
        >>> def axpy(xp, y, x, a):  # an elementwise rule: y <- y + a x
        ...     y += a * x
        >>> y = np.ones(3)
        >>> backend.kernel(axpy)(y, np.arange(3.0), 2.0)
        >>> y
        array([1., 3., 5.])
    """

    name: str
    xp: Any
    fit_block: int | None = None
    reduction_block: int | None = 8192
    takes_bundles: bool = False

    def __init__(self) -> None:
        self._kernels: dict[tuple[Rule, tuple[tuple[str, Any], ...]], Kernel] = {}
        self._by_call: dict[tuple[Any, ...], Kernel] = {}

    # -- update rules ---------------------------------------------------------------

    def kernel(self, rule: Rule, **flags: Any) -> Kernel:
        """Return ``rule`` specialised to ``flags`` and compiled for this library.

        The result is cached per (rule, flags), so each flag combination is built once
        per process. Call it as ``kernel(*arrays, *scalars)`` with the positional
        arguments of ``rule`` (without its leading namespace argument). Every array
        argument must have the shape and dtype of the parameter (the first argument);
        complex arrays are updated as pairs of reals, like ``torch.view_as_real``
        (see :meth:`check_operands`).
        """
        # Called once per parameter and step: look up the flags in the caller's order
        # first, and sort them (one kernel per flag set) only on a miss.
        fast = (rule, *flags.items())
        compiled = self._by_call.get(fast)
        if compiled is None:
            key = (rule, tuple(sorted(flags.items())))
            compiled = self._kernels.get(key)
            if compiled is None:
                compiled = self._compile(rule, flags)
                self._kernels[key] = compiled
            self._by_call[fast] = compiled
        return compiled

    def _compile(self, rule: Rule, flags: dict[str, Any]) -> Kernel:
        raise NotImplementedError

    def eager(self, rule: Rule, **flags: Any) -> Kernel:
        """``rule`` run as written, through this library's namespace, one operation at a time.

        Unlike :meth:`kernel`, complex arrays stay complex: the rule's arithmetic is
        complex arithmetic (``g * g`` is a complex square, ``xp.sqrt`` a complex root).
        For the few places where torch itself computes in complex numbers rather than on
        ``view_as_real`` pairs (Adagrad's sparse path).
        """
        xp = self.xp

        def run(*args: Any) -> None:
            rule(xp, *args, **flags)

        return run

    def check_operands(self, operands: "list[Any] | tuple[Any, ...]") -> None:
        """Raise ValueError unless every array operand matches the first in shape and dtype.

        Kernels trust their operands (checking on every launch would cost more than the
        launch on small arrays); callers check once, before changing anything.
        """
        first = operands[0]
        for a in operands[1:]:
            if hasattr(a, "shape") and (tuple(a.shape) != tuple(first.shape) or a.dtype != first.dtype):
                raise ValueError(
                    f"optimizer state has shape {tuple(a.shape)} and dtype {a.dtype}, but the "
                    f"parameter has shape {tuple(first.shape)} and dtype {first.dtype}"
                )

    # -- what a step checks before it writes ----------------------------------------------

    #: False; True for the :class:`InOrder` stand-in a step uses for operands that share memory
    in_order_kernels: bool = False

    def read_only(self, array: Any) -> bool:
        """Whether ``array`` may not be written in place (a NumPy array whose ``writeable`` flag is off).

        Libraries without read-only arrays (CuPy), and values that are not arrays, give False.
        """
        flags = getattr(array, "flags", None)
        return flags is not None and not getattr(flags, "writeable", True)

    def any_read_only(self, arrays: "list[Any]") -> bool:
        """Whether any of ``arrays`` (of this library) is read-only (see :meth:`read_only`): one pass in C."""
        flags = getattr(arrays[0], "flags", None) if arrays else None
        if flags is None or not hasattr(flags, "writeable"):  # a library without read-only arrays
            return False
        return not all(map(_WRITEABLE, arrays))

    def check_writes(self, operands: "list[Any] | tuple[Any, ...]", state: Any) -> bool:
        """What an update writes, checked before it writes anything; True if it must run in order.

        Raises ValueError if the parameter (``operands[0]``) or an array of its
        ``state`` (a mapping, or None) is read-only, or if two array operands overlap
        in memory without being the same elements. Returns whether two are the same
        elements (``p.grad = p.data``, a state array that is the parameter: checked
        operands have one shape and dtype); the update then runs its rule as written,
        one operation at a time (:meth:`in_order`), so that each operation sees what the
        ones before it wrote, as in torch's sequence of in-place operations. Operands
        that overlap otherwise (shifted or differently strided views of one array) have
        no such meaning; torch refuses them too ("unsupported operation: some elements
        of the input tensor and the written-to tensor refer to a single memory
        location").

        Cheap in the usual case: arrays whose memory belongs to different arrays
        (``.base``) cannot overlap; only the others are compared.
        """
        read_only = self.read_only
        if read_only(operands[0]):
            raise ValueError(READ_ONLY_MESSAGE)
        if state:
            for key, value in state.items():
                if read_only(value):
                    raise ValueError(f"its optimizer state {key!r} is read-only, so the optimizer cannot update it")
        arrays = [a for a in operands if hasattr(a, "shape")]
        owners = set()
        for a in arrays:
            base = getattr(a, "base", None)
            if base is None:
                owners.add(id(a))
            elif getattr(base, "base", 0) is None:  # an array that owns its memory (views point to it)
                owners.add(id(base))
            else:  # memory of something else (a buffer, a mapped file): compare it
                break
        else:
            if len(owners) == len(arrays):
                return False
        return self._same_memory(arrays)

    def check_update(self, operands: "list[Any] | tuple[Any, ...]", state: Any) -> bool:
        """:meth:`check_operands`, then :meth:`check_writes`: what a step checks of one update; True: in order.

        One call per parameter and step; a backend may do both in one pass where the
        usual case (arrays that own their memory, all writeable) is cheap to recognise.
        """
        self.check_operands(operands)
        return self.check_writes(operands, state)

    def check_updates(self, operands: "Sequence[Sequence[Any]]", states: "Sequence[Any]") -> bool:
        """Whether the updates with these operands and states all pass :meth:`check_update` plainly.

        True: every one would pass and none must run in order. False: nothing is
        known; check them one by one (which raises, naming the first at fault). For a
        backend that checks many updates quicker together than one by one; here
        (no such shortcut) always False.
        """
        return False

    def _same_memory(self, arrays: "list[Any]") -> bool:
        """Whether two of ``arrays`` are the same elements; ValueError if two overlap otherwise."""
        same = False
        for i, a in enumerate(arrays):
            for b in arrays[i + 1 :]:
                if a is b or (_memory(a) == _memory(b) and tuple(a.strides) == tuple(b.strides)):
                    same = True
                elif self._overlap(a, b):
                    raise ValueError(
                        "two arrays of this update overlap in memory without being the same elements "
                        "(shifted or strided views of one array): pass a copy"
                    )
        return same

    def _overlap(self, a: Any, b: Any) -> bool:
        """Whether two arrays share an element (True when that cannot be decided)."""
        may = getattr(self.xp, "may_share_memory", None)
        if may is not None and not may(a, b):
            return False
        exact = getattr(self.xp, "shares_memory", None)
        if exact is None:
            return True
        try:
            # exact (NumPy: exponential only in the number of dimensions; CuPy takes no other bound)
            return bool(exact(a, b))
        except Exception:  # cannot be decided
            return True

    def in_order(self, rule: Rule, **flags: Any) -> Kernel:
        """``rule`` run as written, one whole-array operation at a time (complex operands as real pairs).

        For an update whose operands share memory (:meth:`check_writes`): each
        operation then reads what the ones before it wrote, as torch's sequence of
        in-place operations does. Slower than :meth:`kernel`, which reads every operand
        before writing any. Here (the array-API backend) :meth:`kernel` already runs
        the rule as written.
        """
        return self.kernel(rule, **flags)

    # -- entries selected by a sparse (COO) index ---------------------------------------
    #
    # ``indices`` is an int64 array of shape (k, nnz) naming entries of the first k
    # dimensions of ``array`` (k <= array.ndim); each names a block of shape
    # ``array.shape[k:]``. This is the ``array[indices[0], ..., indices[k-1]]`` of NumPy.

    def take_entries(self, array: Any, indices: Any) -> Any:
        """A new array of shape ``(nnz, *array.shape[k:])``: the blocks ``indices`` names."""
        xp = self.xp
        k = indices.shape[0]
        shape = tuple(array.shape)
        rows = linear_index(xp, indices, shape[:k])
        flat = xp.reshape(array, (math.prod(shape[:k]), *shape[k:]))
        return xp.take(flat, rows, axis=0)

    def put_entries(self, array: Any, indices: Any, values: Any) -> None:
        """``array[indices] = values`` in place; ``indices`` names each block at most once."""
        raise NotImplementedError

    def add_entries(self, array: Any, indices: Any, values: Any) -> None:
        """``array[indices] += values`` in place, a block named twice receiving both values.

        NumPy adds repeated blocks one after another in the order given (``numpy.add.at``);
        CuPy adds them with atomics, in no fixed order.
        """
        raise NotImplementedError

    # -- reductions -----------------------------------------------------------------

    def dot(self, a: Any, b: Any) -> Any:
        r"""The dot product :math:`\sum_i a_i b_i` of two 1-D real arrays, summed in a fixed order.

        The products are formed elementwise (each rounded once, never fused into a
        multiply-add) and summed by the library's own ``sum``, never by BLAS, whose
        result depends on the kernel chosen for the CPU (OpenBLAS's SkylakeX kernel
        rounds otherwise than its Haswell and Zen ones, Prescott and Sandybridge
        otherwise again) and on the thread count. On NumPy and array-api-strict that
        sum is NumPy's pairwise summation, plain C in a fixed order (eight interleaved
        partial sums per block of at most 128 elements, longer runs halved
        recursively), so the same inputs give the same bits on every CPU, BLAS build
        and thread count. On CuPy it is CuPy's device reduction: it stays on the
        device and repeats its bits run to run on one GPU, but not across GPU models,
        and they are not NumPy's.

        Args:
            a, b: 1-D arrays of this library with one real floating dtype and length.

        Returns:
            The sum as a 0-d array or scalar of that dtype, on the arrays' device.

        Example:
            >>> import numpy as np
            >>> from arrayopt.backends import get_backend
            >>> get_backend(np.zeros(1)).dot(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]))
            np.float64(32.0)
        """
        return self.xp.sum(a * b)

    def axpy(self, y: Any, alpha: Any, x: Any) -> None:
        r""":math:`y \leftarrow y + \alpha x` in place, the product rounded before the sum (never a fused multiply-add).

        The bits of ``y += alpha * x``; NumPy runs it over cache-sized blocks, without
        a temporary as long as ``y``. ``y - alpha x`` is ``axpy(y, -alpha, x)``, the
        same bits: negation is exact and IEEE 754 defines ``a - b`` as ``a + (-b)``.

        Args:
            y: a 1-D real array of this library, updated in place.
            alpha: a number or a 0-d array (as in ``alpha * x``).
            x: a 1-D array like ``y``.

        Example:
            >>> import numpy as np
            >>> from arrayopt.backends import get_backend
            >>> y = np.array([1.0, 2.0])
            >>> get_backend(y).axpy(y, 0.5, np.array([2.0, 4.0]))
            >>> y
            array([2., 4.])
        """
        y += alpha * x

    def axpy_dot(self, y: Any, alpha: Any, x: Any, z: Any, out: Any = None, scale: Any = None) -> Any:
        r""":meth:`axpy` then :meth:`dot`: :math:`y + \alpha x` into ``out`` (default ``y``), and :math:`z^\top out`.

        The same bits as the separate operations; NumPy makes one pass over the
        vectors, block by block (the step of L-BFGS's two-loop recursion).

        Args:
            y: a 1-D real array of this library, updated in place unless ``out`` is given.
            alpha: a number or a 0-d array.
            x, z: 1-D arrays like ``y``.
            out: a 1-D array like ``y`` for the result (it may be ``z``: then the
                result's squared norm is returned); default ``y``.
            scale: a number or a 0-d array: the result is then
                :math:`(y + \alpha x)\,\text{scale}`, the sum rounded before the product
                (the middle of the two-loop recursion). Default: none.

        Returns:
            :math:`z^\top out` as :meth:`dot` returns it.

        Example:
            >>> import numpy as np
            >>> from arrayopt.backends import get_backend
            >>> y = np.array([1.0, 2.0])
            >>> get_backend(y).axpy_dot(y, -1.0, np.array([1.0, 1.0]), np.array([3.0, 5.0]))
            np.float64(5.0)
        """
        if out is None and scale is None:
            self.axpy(y, alpha, x)
            return self.dot(z, y)
        target = y if out is None else out
        value = y + alpha * x
        target[...] = value if scale is None else value * scale
        return self.dot(z, target)

    def scale_dot(self, out: Any, x: Any, c: Any, z: Any) -> Any:
        r""":math:`x c` into ``out`` (which may be ``x``), then :math:`z^\top out`.

        The bits of ``out[...] = x * c`` and :meth:`dot`; NumPy makes one pass over the
        vectors, block by block.

        Args:
            out: a 1-D real array of this library for the result.
            x: a 1-D array like ``out``.
            c: a number or a 0-d array (as in ``x * c``).
            z: a 1-D array like ``out``.

        Returns:
            :math:`z^\top out` as :meth:`dot` returns it.

        Example:
            >>> import numpy as np
            >>> from arrayopt.backends import get_backend
            >>> x = np.array([1.0, 2.0])
            >>> get_backend(x).scale_dot(x, x, -2.0, np.array([3.0, 5.0]))
            np.float64(-26.0)
            >>> x
            array([-2., -4.])
        """
        out[...] = x * c
        return self.dot(z, out)

    def products(self, rows: Any, vectors: Any) -> Any:
        r"""``rows @ vectors.T``: each row of ``rows`` (k, n) with each row of ``vectors`` (j, n), in a fixed order.

        Never through BLAS (see :meth:`dot`): over blocks of :attr:`reduction_block`
        columns (the whole row where it is None), the products of a block are rounded
        once and summed by the library's own ``sum`` (NumPy's pairwise summation), and
        the blocks' sums are added in column order. NumPy keeps a block's products in
        cache, and with numba forms them as it sums them, in the same order (the same
        bits).

        Args:
            rows: a 2-D real array of this library, (k, n).
            vectors: a 2-D array of the same dtype, (j, n).

        Returns:
            The (k, j) array of the sums.

        Example:
            >>> import numpy as np
            >>> from arrayopt.backends import get_backend
            >>> rows = np.array([[1.0, 2.0], [3.0, 4.0]])
            >>> get_backend(rows).products(rows, np.array([[1.0, 1.0]]))
            array([[3.],
                   [7.]])
        """
        xp = self.xp
        n = rows.shape[-1]
        block = self.reduction_block or max(n, 1)
        total = None
        for start in range(0, n, block):
            stop = min(start + block, n)  # array-API slices may not run past the end
            r, v = rows[:, start:stop], vectors[:, start:stop]
            partial = xp.sum(r[:, None, :] * v[None, :, :], axis=-1)
            total = partial if total is None else total + partial
        if total is None:  # no columns
            return xp.zeros((rows.shape[0], vectors.shape[0]), dtype=rows.dtype, device=self.device(rows))
        return total

    def max_abs(self, x: Any) -> Any:
        r""":math:`\max_i |x_i|` of a non-empty 1-D real array (NaN if ``x`` holds one): ``max(abs(x))``, exact.

        Args:
            x: a 1-D real array of this library.

        Returns:
            The maximum as ``xp.max`` returns it (a 0-d array or scalar of ``x``'s dtype).

        Example:
            >>> import numpy as np
            >>> from arrayopt.backends import get_backend
            >>> get_backend(np.zeros(1)).max_abs(np.array([1.0, -3.0, 2.0]))
            np.float64(3.0)
        """
        return self.xp.max(self.xp.abs(x))

    # -- arrays ---------------------------------------------------------------------

    def quiet(self) -> "contextlib.AbstractContextManager[Any]":
        """A context in which floating-point overflow, invalid results and division by zero do not warn.

        For solvers that evaluate trial points where some of many problems overflow on
        purpose and handle the resulting inf and NaN per problem (:mod:`arrayopt.batch`).
        NumPy warns by default (and a test suite may turn warnings into errors); other
        libraries do not warn.
        """
        return contextlib.nullcontext()

    def is_floating(self, array: Any) -> bool:
        """True for real floating-point or complex floating-point arrays."""
        return bool(self.xp.isdtype(array.dtype, ("real floating", "complex floating")))

    def is_complex(self, array: Any) -> bool:
        return bool(self.xp.isdtype(array.dtype, "complex floating"))

    def parameter_problem(self, array: Any) -> str | None:
        """Why ``array`` cannot be a parameter's data (None if it can)."""
        if not self.is_floating(array):
            return f"only floating-point and complex arrays can be optimized, got dtype {array.dtype}"
        return None

    def device(self, array: Any) -> Any:
        return array_api_compat.device(array)

    def round_scalar(self, value: float, dtype: Any) -> float:
        """``value`` rounded to ``dtype`` (a floating dtype of this library), as a Python float.

        What an array of ``dtype`` holds after ``array[...] = value``; computed on the
        host, so it never waits for a device. Optimizers use it where torch rounds a
        per-step scalar through a 0-d tensor (ASGD's ``eta``, NAdam's ``mu_product``).
        """
        if dtype == self.xp.float64:
            return value
        return float(self.to_numpy(self.xp.asarray(value, dtype=dtype)).reshape(()))

    def to_numpy(self, array: Any) -> Any:
        """A NumPy array with the values of ``array`` (a copy when it is not on the host)."""
        raise NotImplementedError

    def from_numpy(self, host: Any, like: Any) -> Any:
        """An array of this library holding ``host``, on the device of ``like``."""
        raise NotImplementedError

    def convert(self, value: Any, like: Any, cast: bool) -> Any:
        """``value`` as an array of this library on ``like``'s device, owned by the caller.

        With ``cast`` the result also takes ``like``'s dtype. ``value`` may belong to
        any library arrayopt knows; the result never aliases it.
        """
        from arrayopt.backends import get_backend

        source = get_backend(value)
        if source is self and self.device(value) == self.device(like):
            out = self.xp.asarray(value, copy=True)
        else:
            out = self.from_numpy(source.to_numpy(value), like)
        if cast and out.dtype != like.dtype:
            out = self.xp.astype(out, like.dtype)
        return out

    def __repr__(self) -> str:
        return f"<arrayopt backend {self.name!r}>"


def _memory(array: Any) -> Any:
    """The address of an array's first element (NumPy's or CUDA's array interface)."""
    interface = getattr(array, "__cuda_array_interface__", None) or array.__array_interface__
    return interface["data"][0]


class InOrder:
    """A backend whose kernels run their rule as written (:meth:`Backend.in_order`); the rest is the backend's.

    What a step gives an optimizer's ``_update`` for a parameter whose operands share
    memory, so that the optimizer's own code needs no change.

    Args:
        backend: the parameter's :class:`Backend`.

    Example:
        >>> import numpy as np
        >>> from arrayopt.backends import get_backend
        >>> def decay_then_add(xp, param, grad):   # torch: param.mul_(0.5); param.add_(grad)
        ...     param *= 0.5
        ...     param += grad
        >>> w = np.array([4.0])
        >>> InOrder(get_backend(w)).kernel(decay_then_add)(w, w)   # the gradient is the parameter
        >>> w                                                     # 4 * 0.5 = 2, then 2 + 2
        array([4.])
    """

    in_order_kernels = True
    #: never: a bundle's kernel reads every operand before writing any (see :class:`Bundle`)
    takes_bundles = False

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def kernel(self, rule: Rule, **flags: Any) -> Kernel:
        return self.backend.in_order(rule, **flags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


def linear_index(xp: Any, indices: Any, sizes: "tuple[int, ...]") -> Any:
    """The row-major position of each column of ``indices`` (shape (k, nnz)) in an array of shape ``sizes``."""
    rows = indices[0, :]
    for d in range(1, len(sizes)):
        rows = rows * sizes[d] + indices[d, :]
    return rows


def real_layouts(args: "tuple[Any, ...] | list[Any]", array_type: Any) -> tuple[bool, list[list[Any]]]:
    """The argument lists an elementwise rule runs on, for NumPy-like arrays.

    If every array operand is C-contiguous: one list with each array flattened to 1-D,
    complex ones viewed as interleaved reals (``torch.view_as_real``), and ``True``.
    Otherwise ``False`` and the arguments as they are, or for complex operands two
    lists: their ``.real`` views, then their ``.imag`` views. All are views, so the
    rule's in-place writes land in the operands.
    """
    arrays = [a for a in args if isinstance(a, array_type)]
    if all(a.flags.c_contiguous for a in arrays):
        values = []
        for a in args:
            if isinstance(a, array_type):
                a = a.reshape(-1)
                if a.dtype.kind == "c":
                    a = a.view(a.real.dtype)
            values.append(a)
        return True, [values]
    if arrays[0].dtype.kind == "c":
        return False, [
            [getattr(a, part) if isinstance(a, array_type) else a for a in args] for part in ("real", "imag")
        ]
    return False, [list(args)]

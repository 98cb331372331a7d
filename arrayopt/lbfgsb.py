r"""L-BFGS-B: limited-memory BFGS with bounds (Byrd, Lu, Nocedal and Zhu 1995; Morales and Nocedal 2011).

Minimises :math:`f(x)` over the box :math:`l \le x \le u` (any bound may be infinite).
Each iteration, from the iterate :math:`x_k` with gradient :math:`g_k`:

1. **Generalized Cauchy point** (:func:`cauchy_point`). The quadratic model

   .. math::

       m_k(x) = f_k + g_k^\top (x - x_k) + \tfrac12 (x - x_k)^\top B_k (x - x_k),
       \qquad B_k = \theta I - W M W^\top,

   is minimised along the projected steepest-descent path
   :math:`x(t) = P_{[l,u]}(x_k - t g_k)`, a piecewise linear path whose kinks are the
   *breakpoints* where a variable reaches its bound. :math:`B_k` is the limited-memory
   BFGS matrix in compact form: :math:`W = [Y, \theta S]` holds the last ``maxcor``
   pairs :math:`s_i = x_{i+1} - x_i`, :math:`y_i = g_{i+1} - g_i`, and
   :math:`M = \begin{bmatrix} -D & L^\top \\ L & \theta S^\top S \end{bmatrix}^{-1}`
   with :math:`D` the diagonal and :math:`L` the strictly lower part of
   :math:`S^\top Y`, :math:`\theta = y^\top y / s^\top y` of the newest pair. On each
   segment the model is a parabola in :math:`t` with slope :math:`f'` and curvature
   :math:`f''`; the first segment that holds its minimiser gives the Cauchy point
   :math:`x^c`. The variables at a bound there form the *active set*; the others are
   *free*.

2. **Subspace minimisation** (:func:`subspace_minimization`). Over the free variables
   (:math:`Z` selects them, :math:`A` the active ones), the model's minimiser from
   :math:`x^c` is :math:`\hat d = -\hat B^{-1} \hat r`, with the reduced gradient
   :math:`\hat r = Z^\top (g_k + B_k (x^c - x_k))` and, by the Sherman-Morrison-
   Woodbury formula, :math:`\hat B^{-1} = \frac1\theta I + \frac1{\theta^2} Z^\top W
   K^{-1} W^\top Z`, where the :math:`2m \times 2m` matrix
   :math:`K = \begin{bmatrix} -D - Y^\top Z Z^\top Y/\theta & L_a^\top - R_z^\top \\
   L_a - R_z & \theta S^\top A A^\top S \end{bmatrix}` (:math:`L_a` the strictly
   lower part of :math:`S^\top A A^\top Y`, :math:`R_z` the upper part of
   :math:`S^\top Z Z^\top Y`) is factored as :math:`L E L^\top`. The step
   :math:`x^c + Z \hat d` is projected onto the box (Morales and Nocedal's 2011 fix);
   if the projection hit a bound and the projected point is not a descent direction
   from :math:`x_k`, the step is instead cut back to the box along :math:`\hat d`.

3. **Line search** along :math:`d = \bar x - x_k` (:math:`\bar x` the subspace
   minimiser) with :func:`arrayopt.line_search.more_thuente` (``ftol=1e-3``,
   ``gtol=0.9``, ``xtol=0.1``), never past the box: the largest feasible step is its
   ``stpmax`` (1 on the first iteration of a bounded problem, whose first trial step
   is :math:`\min(1/\|d\|, 1)` unless every variable has both bounds). Every trial
   point is projected onto the box after rounding, so no iterate ever leaves it.

4. **Update**: with :math:`s = x_{k+1} - x_k`, :math:`y = g_{k+1} - g_k`, the pair is
   kept if :math:`s^\top y > \epsilon\, (-g_k^\top s)` (machine epsilon of the dtype),
   the oldest dropped beyond ``maxcor``.

It stops when the largest entry of the projected gradient
:math:`|P_{[l,u]}(x - g) - x|` is at most ``gtol``, when
:math:`(f_k - f_{k+1}) / \max(|f_k|, |f_{k+1}|, 1) \le` ``ftol``, after ``maxiter``
iterations, or after ``maxfun`` evaluations (checked once per iteration, as SciPy
does). A line search that fails (``maxls`` evaluations, or a direction that is not
a descent direction) restores the iterate and restarts with an empty memory; a
failure with an empty memory ends the run (``ABNORMAL``). A trial point where the
objective or its gradient is not finite halves the step (see
:func:`arrayopt.line_search.more_thuente`).

The flow of the algorithm, its tests, the line search and the order of its
evaluations are those of L-BFGS-B 3.0 as SciPy runs it, so on well-conditioned
problems it takes SciPy's steps and evaluation counts. Three things differ by
design: the Cauchy point's breakpoints are processed in batches of array operations
(prefix sums over the sorted breakpoints) instead of one by one; the products of the
memory with the free set are kept as :math:`2m \times 2m` Gram matrices updated with
the variables that enter or leave it (SciPy's ``formk`` does the same with index
lists); and every trial point is clipped to the box.

**Where the numbers live.** Everything of size :math:`n` (the iterate, gradient,
bounds, search directions, the :math:`m \times n` pairs :math:`S` and :math:`Y`)
stays an array of ``x0``'s library on its device. What crosses to the host, each
iteration: the objective value; the reductions :math:`g^\top d`, :math:`d^\top d`,
:math:`y^\top y`, the projected-gradient norm, the largest feasible step, the count
and smallest of the breakpoints; the products :math:`W^\top v` of the memory with
at most six vectors (:math:`2m` numbers each); the :math:`2m \times 2m` Gram
matrices of the variables entering and leaving the free set; and, when the Cauchy
point passes breakpoints, one index and :math:`O(m)` numbers per batch. The small
matrices (:math:`S^\top S`, :math:`S^\top Y`, the Cholesky factor of
:math:`\theta S^\top S + L D^{-1} L^\top`, :math:`M` and the factors of :math:`K`) are
formed and factored on the host in Python floats, and go back to the device as
:math:`2m` coefficients (or :math:`M`, :math:`2m \times 2m`, for the batched
breakpoints).

References:
    R. H. Byrd, P. Lu, J. Nocedal and C. Zhu, "A limited memory algorithm for bound
    constrained optimization", SIAM J. Sci. Comput. 16 (1995), 1190-1208.
    C. Zhu, R. H. Byrd, P. Lu and J. Nocedal, "Algorithm 778: L-BFGS-B", ACM TOMS 23
    (1997), 550-560. J. L. Morales and J. Nocedal, "Remark on Algorithm 778", ACM TOMS
    38 (2011), 7:1-7:4.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from arrayopt.backends import Backend, get_backend, host_array, is_array
from arrayopt.line_search import more_thuente

__all__ = [
    "Box",
    "CauchyPoint",
    "LbfgsInvHessProduct",
    "LbfgsbMemory",
    "cauchy_point",
    "lbfgsb",
    "subspace_minimization",
]


# -- the elementwise rules (one pass each: numba on NumPy, one kernel on CuPy) -------------


def box_projection(xp: Any, out: Any, x: Any, lower: Any, upper: Any) -> None:
    r""":math:`P(x) = \min(\max(x, l), u)`, the projection onto the box.

    Args:
        xp: the array namespace.
        out: where the projection goes.
        x: the point.
        lower: the lower bounds (``-inf`` for none).
        upper: the upper bounds (``+inf`` for none).

    Example:
        >>> import numpy as np
        >>> out = np.empty(3)
        >>> box_projection(np, out, np.array([-2.0, 0.5, 9.0]), np.zeros(3), np.ones(3))
        >>> out
        array([0. , 0.5, 1. ])
    """
    out[...] = xp.minimum(xp.maximum(x, lower), upper)


def box_step(xp: Any, out: Any, x: Any, d: Any, lower: Any, upper: Any, t: float) -> None:
    r""":math:`P(x + t d)`: a trial point of the line search, projected so that rounding never leaves the box.

    Args:
        xp: the array namespace.
        out: where the point goes.
        x: the iterate.
        d: the search direction.
        lower: the lower bounds.
        upper: the upper bounds.
        t: the step (a host float).

    Example:
        >>> import numpy as np
        >>> out = np.empty(2)
        >>> box_step(np, out, np.array([0.5, 0.5]), np.array([1.0, -1.0]), np.zeros(2), np.ones(2), 0.75)
        >>> out
        array([1., 0.])
    """
    out[...] = xp.minimum(xp.maximum(x + t * d, lower), upper)


def projected_gradient(xp: Any, out: Any, x: Any, g: Any, lower: Any, upper: Any) -> None:
    r""":math:`|P(x - g) - x|` entry by entry: the gradient, cut where a bound stops the variable.

    Args:
        xp: the array namespace.
        out: where the magnitudes go.
        x: the point (in the box).
        g: the gradient there.
        lower: the lower bounds.
        upper: the upper bounds.

    Example:
        >>> import numpy as np
        >>> out = np.empty(3)
        >>> projected_gradient(np, out, np.array([0.0, 0.5, 1.0]), np.array([2.0, 2.0, -3.0]), np.zeros(3), np.ones(3))
        >>> out  # at a bound with the gradient pointing out: 0
        array([0. , 0.5, 0. ])
    """
    out[...] = xp.abs(xp.where(g < 0, xp.maximum(x - upper, g), xp.minimum(x - lower, g)))


def step_to_bound(xp: Any, out: Any, x: Any, d: Any, lower: Any, upper: Any) -> None:
    r"""The step :math:`t_i` at which :math:`x_i + t d_i` meets its bound (``inf`` if never; :math:`\le 0` if at once).

    Args:
        xp: the array namespace.
        out: where the steps go.
        x: the point.
        d: the direction.
        lower: the lower bounds.
        upper: the upper bounds.

    Example:
        >>> import numpy as np
        >>> out = np.empty(3)
        >>> step_to_bound(np, out, np.array([0.5, 0.5, 0.5]), np.array([2.0, -0.25, 0.0]), np.zeros(3), np.ones(3))
        >>> out
        array([0.25, 2.  ,  inf])
    """
    distance = xp.where(d < 0, lower - x, upper - x)
    out[...] = xp.where(d == 0, math.inf, distance / xp.where(d == 0, 1.0, d))


def cauchy_breakpoints(xp: Any, d: Any, t: Any, pinned: Any, x: Any, g: Any, lower: Any, upper: Any) -> None:
    r"""The projected steepest-descent direction and each variable's breakpoint along it.

    A variable is *pinned* (``pinned = 1``, ``d = 0``, ``t = inf``) when it is fixed
    (:math:`l = u`) or sits at a bound with :math:`g` pointing out of the box; the
    others move along :math:`d = -g` and reach their bound at
    :math:`t = (x - l)/g` (:math:`g > 0`) or :math:`(u - x)/(-g)` (:math:`g < 0`),
    ``inf`` when there is none (or :math:`g = 0`). This is SciPy's ``cauchy`` set-up.

    Args:
        xp: the array namespace.
        d: where the direction goes.
        t: where the breakpoints go.
        pinned: where 1.0 (pinned) or 0.0 goes.
        x: the point (in the box).
        g: the gradient there.
        lower: the lower bounds.
        upper: the upper bounds.

    Example:
        >>> import numpy as np
        >>> d, t, pinned = np.empty(3), np.empty(3), np.empty(3)
        >>> x, g = np.array([0.0, 0.5, 3.0]), np.array([2.0, -1.0, 1.0])
        >>> lower, upper = np.array([0.0, 0.0, -np.inf]), np.array([1.0, 1.0, np.inf])
        >>> cauchy_breakpoints(np, d, t, pinned, x, g, lower, upper)
        >>> d, t, pinned
        (array([ 0.,  1., -1.]), array([inf, 0.5, inf]), array([1., 0., 0.]))
    """
    at_lower = x - lower <= 0
    at_upper = upper - x <= 0
    zero = x - x  # (x is finite)
    outward = xp.where(at_lower, xp.where(g >= 0, 1.0, zero), xp.where(at_upper, xp.where(g <= 0, 1.0, zero), zero))
    held = xp.where(lower == upper, 1.0, outward)
    pinned[...] = held
    d[...] = xp.where(held > 0, 0.0, -g)
    distance = xp.where(g > 0, x - lower, upper - x)
    moving = xp.where(g == 0, math.inf, distance / xp.where(g == 0, 1.0, xp.abs(g)))
    t[...] = xp.where(held > 0, math.inf, moving)


def split_by_set(xp: Any, zy: Any, zs: Any, ay: Any, as_: Any, y: Any, s: Any, free: Any) -> None:
    r"""A new pair split by the free set: :math:`Z Z^\top y, Z Z^\top s, A A^\top y, A A^\top s`.

    Args:
        xp: the array namespace.
        zy: where :math:`y` on the free variables (0 elsewhere) goes.
        zs: likewise :math:`s`.
        ay: where :math:`y` on the active variables goes.
        as_: likewise :math:`s`.
        y: the gradient change.
        s: the step.
        free: 1.0 on the free variables, 0.0 on the active ones.

    Example:
        >>> import numpy as np
        >>> zy, zs, ay, as_ = (np.empty(2) for _ in range(4))
        >>> split_by_set(np, zy, zs, ay, as_, np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([1.0, 0.0]))
        >>> zy, ay
        (array([1., 0.]), array([0., 2.]))
    """
    zy[...] = xp.where(free > 0, y, 0.0)
    zs[...] = xp.where(free > 0, s, 0.0)
    ay[...] = xp.where(free > 0, 0.0, y)
    as_[...] = xp.where(free > 0, 0.0, s)


# -- reductions (one place, so that a fixed-order reduction can replace them) ---------------


# Never through BLAS (``@``): its kernels round otherwise on other CPUs and thread counts,
# and the same inputs must give the same iterates everywhere (``Backend.dot``, ``Backend.products``).


def _dot(a: Any, b: Any) -> Any:
    """The dot product of two vectors (a 0-d array), summed in a fixed order (``Backend.dot``)."""
    return get_backend(a).dot(a, b)


def _combine_rows(backend: Backend, coefficients: Any, rows: Any) -> Any:
    """``coefficients @ rows``: the rows (k, n) weighted by ``coefficients`` (k,) and added in row order,
    one block of ``backend.reduction_block`` columns at a time."""
    xp = backend.xp
    n = rows.shape[-1]
    block = backend.reduction_block or max(n, 1)
    weights = coefficients[:, None]
    parts = [xp.sum(weights * rows[:, start : min(start + block, n)], axis=0) for start in range(0, n, block)]
    return xp.concat(parts) if parts else xp.zeros((0,), dtype=rows.dtype, device=backend.device(rows))


def _combination(xp: Any, vector: Any, matrix: Any) -> Any:
    """``vector @ matrix`` for ``vector`` (n,) and ``matrix`` (n, k): the products added along the
    first axis in row order (no BLAS)."""
    return xp.sum(vector[:, None] * matrix, axis=0)


def _to_host(backend: Backend, array: Any) -> Any:
    """``array``'s values as Python floats: a float for a 0-d array, else nested lists."""
    values = backend.to_numpy(array)
    return values.tolist() if values.ndim else float(values[()])


# -- small dense linear algebra on the host (Python floats; LINPACK's operation order) ----


def _cholesky(a: list[list[float]]) -> list[list[float]] | None:
    """The upper-triangular ``r`` with ``r^T r = a`` (``a``'s upper triangle read); None unless positive definite."""
    n = len(a)
    r = [[0.0] * n for _ in range(n)]
    for j in range(n):
        s = 0.0
        for k in range(j):
            t = a[k][j] - sum(r[i][k] * r[i][j] for i in range(k))
            t = t / r[k][k]
            r[k][j] = t
            s += t * t
        s = a[j][j] - s
        if not s > 0.0:
            return None
        r[j][j] = math.sqrt(s)
    return r


def _solve_transposed(r: list[list[float]], b: list[float]) -> list[float] | None:
    """``x`` with ``r^T x = b`` for an upper-triangular ``r``; None for a zero diagonal."""
    x: list[float] = []
    for i in range(len(b)):
        if r[i][i] == 0.0:
            return None
        x.append((b[i] - sum(r[k][i] * x[k] for k in range(i))) / r[i][i])
    return x


def _solve(r: list[list[float]], b: list[float]) -> list[float] | None:
    """``x`` with ``r x = b`` for an upper-triangular ``r``; None for a zero diagonal."""
    n = len(b)
    x = [0.0] * n
    for i in range(n - 1, -1, -1):
        if r[i][i] == 0.0:
            return None
        x[i] = (b[i] - sum(r[i][k] * x[k] for k in range(i + 1, n))) / r[i][i]
    return x


def _matvec(a: list[list[float]], v: list[float]) -> list[float]:
    return [sum(aij * vj for aij, vj in zip(row, v, strict=True)) for row in a]


def _vdot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# -- the box -----------------------------------------------------------------------------


class Box:
    r"""Bounds :math:`l \le x \le u` on a flat vector, as arrays on ``x``'s device.

    Infinite entries are absent bounds. The box knows what the algorithm asks of it
    often: which bounds exist, whether any does (``constrained``) and whether every
    variable has both (``boxed``).

    Args:
        lower: the lower bounds, a 1-D array of ``x``'s library, dtype and device
            (``-inf`` where there is none).
        upper: the upper bounds, likewise (``+inf`` where there is none).

    Example:
        >>> import numpy as np
        >>> box = Box(np.array([0.0, -np.inf]), np.array([1.0, np.inf]))
        >>> box.constrained, box.boxed
        (True, False)
        >>> box.project(np.array([2.0, -5.0]))
        array([ 1., -5.])
    """

    def __init__(self, lower: Any, upper: Any) -> None:
        self.backend = get_backend(lower)
        xp = self.backend.xp
        self.lower = lower
        self.upper = upper
        self.has_lower = lower > -xp.inf
        self.has_upper = upper < xp.inf
        self.fixed = lower == upper
        counts = _to_host(
            self.backend,
            xp.stack(
                [
                    xp.sum(xp.astype(self.has_lower | self.has_upper, xp.int64)),
                    xp.sum(xp.astype(self.has_lower & self.has_upper, xp.int64)),
                    xp.sum(xp.astype(self.fixed, xp.int64)),
                ]
            ),
        )
        n = lower.shape[0]
        self.constrained = counts[0] > 0
        self.boxed = counts[1] == n
        self.all_fixed = counts[2] == n

    @classmethod
    def from_bounds(cls, bounds: Any, x: Any) -> "Box":
        """The box that SciPy-style ``bounds`` put on the entries of ``x`` (flattened).

        Args:
            bounds: a sequence of ``(min, max)`` pairs, one per entry of ``x`` (None
                or an infinity for no bound), an array of shape ``(x.size, 2)``, or an
                object with attributes ``lb`` and ``ub`` (like ``scipy.optimize.Bounds``)
                holding numbers or arrays that broadcast to ``x.shape``.
            x: the array the bounds are for (any shape; its library, device and
                dtype are the box's). With a dtype narrower than float64 the bounds
                are rounded inwards, so a value in the box satisfies the bounds as
                given.

        Raises:
            ValueError: for a number of bounds that does not fit ``x``, a NaN bound,
                a lower bound above its upper bound (or +inf, or an upper bound of
                -inf), naming the element.
            TypeError: for a pair that is not two numbers or None.

        Example:
            >>> import numpy as np
            >>> box = Box.from_bounds([(0, None), (None, 2.5)], np.zeros(2, dtype=np.float32))
            >>> box.lower, box.upper
            (array([  0., -inf], dtype=float32), array([inf, 2.5], dtype=float32))
            >>> Box.from_bounds([(1, 0), (0, 1)], np.zeros(2))
            Traceback (most recent call last):
            ...
            ValueError: bounds: element 0 has lower bound 1.0 above its upper bound 0.0 (An upper bound is ...)
        """
        backend = get_backend(x)
        shape = tuple(x.shape)
        size = math.prod(shape)
        lower, upper = _host_bounds(bounds, shape, size)
        hxp = get_backend(lower).xp
        lower = hxp.reshape(lower, (size,))
        upper = hxp.reshape(upper, (size,))

        def element(i: int) -> str:
            if len(shape) <= 1:
                return f"element {i}"
            index = []
            for extent in reversed(shape):
                i, r = divmod(i, extent)
                index.append(r)
            return f"element {tuple(reversed(index))}"

        for name, values in (("lower", lower), ("upper", upper)):
            bad = hxp.isnan(values)
            if bool(hxp.any(bad)):
                raise ValueError(f"bounds: the {name} bound of {element(int(hxp.argmax(bad)))} is NaN")
        inverted = lower > upper
        if bool(hxp.any(inverted)):
            i = int(hxp.argmax(inverted))
            raise ValueError(
                f"bounds: {element(i)} has lower bound {float(lower[i])!r} above its upper bound {float(upper[i])!r}"
                " (An upper bound is less than the corresponding lower bound.)"
            )
        for name, values, infinity in (("lower", lower, hxp.inf), ("upper", upper, -hxp.inf)):
            bad = values == infinity
            if bool(hxp.any(bad)):
                where = element(int(hxp.argmax(bad)))
                raise ValueError(f"bounds: the {name} bound of {where} is {float(infinity)}: no value satisfies it")
        dtype = backend.to_numpy(x[:0] if len(shape) else x).dtype
        if dtype != lower.dtype:
            narrow_lower = hxp.astype(lower, dtype)
            narrow_upper = hxp.astype(upper, dtype)
            # round inwards: the nearest values of the dtype inside the bounds
            inf = hxp.asarray(hxp.inf, dtype=dtype)
            up = hxp.astype(narrow_lower, hxp.float64) < lower
            narrow_lower = hxp.where(up, hxp.nextafter(narrow_lower, inf), narrow_lower)
            down = hxp.astype(narrow_upper, hxp.float64) > upper
            narrow_upper = hxp.where(down, hxp.nextafter(narrow_upper, -inf), narrow_upper)
            empty = narrow_lower > narrow_upper
            if bool(hxp.any(empty)):
                i = int(hxp.argmax(empty))
                raise ValueError(
                    f"bounds: no {dtype} value lies between the lower bound {float(lower[i])!r} and the upper bound "
                    f"{float(upper[i])!r} of {element(i)}"
                )
            lower, upper = narrow_lower, narrow_upper
        flat = backend.xp.reshape(x, (size,))
        return cls(backend.from_numpy(lower, flat), backend.from_numpy(upper, flat))

    def project(self, x: Any) -> Any:
        """``x`` clipped to the box (a new array)."""
        out = self.backend.xp.empty_like(x)
        self.backend.kernel(box_projection)(out, x, self.lower, self.upper)
        return out

    def step(self, x: Any, d: Any, t: float) -> Any:
        """:math:`P(x + t d)` (a new array)."""
        out = self.backend.xp.empty_like(x)
        self.backend.kernel(box_step)(out, x, d, self.lower, self.upper, float(t))
        return out

    def projected_gradient_norm(self, x: Any, g: Any) -> float:
        r"""The largest entry of :math:`|P(x - g) - x|`, the first-order optimality measure."""
        out = self.backend.xp.empty_like(x)
        self.backend.kernel(projected_gradient)(out, x, g, self.lower, self.upper)
        return float(_to_host(self.backend, self.backend.xp.max(out)))

    def max_step(self, x: Any, d: Any) -> float:
        """The largest ``t >= 0`` with ``x + t d`` in the box (0 if ``d`` leaves it at once; at most 1e10)."""
        out = self.backend.xp.empty_like(x)
        self.backend.kernel(step_to_bound)(out, x, d, self.lower, self.upper)
        return min(1e10, max(0.0, float(_to_host(self.backend, self.backend.xp.min(out)))))


def _host_bounds(bounds: Any, shape: tuple[int, ...], size: int) -> tuple[Any, Any]:
    """SciPy's forms of bounds as two float64 NumPy arrays (not yet checked), shaped like ``x`` or flat."""
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        sides = []
        for name, value, default in (("lb", bounds.lb, -math.inf), ("ub", bounds.ub, math.inf)):
            host = host_array(default if value is None else value)
            hxp = get_backend(host).xp
            host = hxp.astype(host, hxp.float64)
            if math.prod(host.shape) == size and len(host.shape) == 1 and len(shape) != 1:
                host = hxp.reshape(host, shape)
            try:
                host = hxp.broadcast_to(host, shape)
            except ValueError:
                raise ValueError(
                    f"bounds: {name} has shape {tuple(host.shape)}, which does not broadcast to x0's shape {shape} "
                    "(The number of bounds is not compatible with the length of `x0`.)"
                ) from None
            sides.append(host)
        return sides[0], sides[1]
    if is_array(bounds):
        host = host_array(bounds)
        hxp = get_backend(host).xp
        if tuple(host.shape) != (size, 2):
            raise ValueError(
                f"bounds: an array of bounds must have shape ({size}, 2) for x0 of shape {shape}, got "
                f"{tuple(host.shape)} (The number of bounds is not compatible with the length of `x0`.)"
            )
        host = hxp.astype(host, hxp.float64)
        return host[:, 0], host[:, 1]
    try:
        pairs = list(bounds)
    except TypeError:
        raise TypeError(
            f"bounds must be a sequence of (min, max) pairs or an object with lb and ub, got {type(bounds).__name__}"
        ) from None
    if len(pairs) != size:
        raise ValueError(
            f"bounds: {len(pairs)} (min, max) pairs for x0 with {size} entries "
            "(The number of bounds is not compatible with the length of `x0`.)"
        )
    lows, highs = [], []
    for i, pair in enumerate(pairs):
        try:
            low, high = pair
            lows.append(-math.inf if low is None else float(low))
            highs.append(math.inf if high is None else float(high))
        except (TypeError, ValueError):
            raise TypeError(f"bounds: element {i} must be a (min, max) pair of numbers or None, got {pair!r}") from None
    return host_array(lows), host_array(highs)


# -- the limited memory --------------------------------------------------------------------


class LbfgsbMemory:
    r"""The last ``m`` correction pairs and the small matrices of the compact representation.

    On the device: ``pairs``, an ``(m, 2, n)`` array holding :math:`(y_j, s_j)` in slot
    :math:`j`, the slots reused in turn (``Y`` and ``S`` are its two ``(m, n)`` views);
    the filled slots read as one contiguous ``(2 filled, n)`` matrix, so each product
    with the memory is one pass over it. On the host (Python floats, indexed by slot): :math:`S^\top S`,
    :math:`S^\top Y`, and the Gram matrices of :math:`[Y; S]` restricted to the free
    and to the active variables, kept up to date as pairs arrive and variables enter
    or leave the free set. From them, in the pairs' chronological order, come the
    Cholesky factor of :math:`T = \theta S^\top S + L D^{-1} L^\top`, the middle
    matrix :math:`M` of :math:`B = \theta I - W M W^\top` with :math:`W = [Y, \theta S]`,
    and the factors of the subspace matrix :math:`K`.

    Args:
        like: a 1-D array whose library, dtype and device the pairs take.
        m: the number of pairs kept (SciPy's ``maxcor``).

    Example:
        >>> import numpy as np
        >>> memory = LbfgsbMemory(np.zeros(3), m=2)
        >>> memory.add(np.array([1.0, 0.0, 0.0]), np.array([2.0, 0.0, 0.0]), dr=2.0, ss_new=1.0, free=None)
        True
        >>> memory.col, memory.theta
        (1, 2.0)
        >>> [[round(v, 12) for v in row] for row in memory.middle_matrix()]  # [[-D, L^T], [L, theta S^T S]]^-1
        [[-0.5, 0.0], [0.0, 0.5]]
    """

    def __init__(self, like: Any, m: int) -> None:
        self.backend = get_backend(like)
        xp = self.backend.xp
        n = like.shape[0]
        self.m = m
        self.pairs = xp.zeros((m, 2, n), dtype=like.dtype, device=self.backend.device(like))
        self.filled = 0  # rows ever written: the products use rows [:filled]
        self.eps = float(xp.finfo(like.dtype).eps)
        # breakpoints the last Cauchy point passed: where the next search starts looking
        # (how far it looks changes its cost, never its result: see cauchy_point)
        self.breakpoints_passed = 0
        self.reset()
        size = 2 * m
        self.gram_free = [[0.0] * size for _ in range(size)]
        self.gram_active = [[0.0] * size for _ in range(size)]
        self.ss = [[0.0] * m for _ in range(m)]
        self.sy = [[0.0] * m for _ in range(m)]

    def reset(self) -> None:
        """Forget every pair (SciPy's restart after a failed line search): theta = 1."""
        self.order: list[int] = []  # slots, oldest pair first
        self.theta = 1.0
        self._t_factor: list[list[float]] | None = None
        self._middle: list[list[float]] | None = None
        self._k_factor: list[list[float]] | None = None
        self.free: Any = None  # the free set the Gram matrices are of (None: every variable)
        self.updates = 0

    @property
    def col(self) -> int:
        """The number of pairs held."""
        return len(self.order)

    @property
    def Y(self) -> Any:
        """The gradient changes, one per slot, as an ``(m, n)`` view."""
        return self.pairs[:, 0, :]

    @property
    def S(self) -> Any:
        """The steps, one per slot, as an ``(m, n)`` view."""
        return self.pairs[:, 1, :]

    def _rows(self) -> Any:
        """The filled slots as one ``(2 filled, n)`` matrix: rows ``y_0, s_0, y_1, s_1, ...``."""
        f = self.filled
        return self.backend.xp.reshape(self.pairs[:f, ...], (2 * f, self.pairs.shape[2]))

    # -- products with the device arrays ---------------------------------------------

    def products(self, vectors: Any) -> tuple[list[list[float]], list[list[float]]]:
        """``Y v`` and ``S v`` for each row ``v`` of ``vectors`` (k, n): two (filled, k) host lists, by slot."""
        values = _to_host(self.backend, self.backend.products(self._rows(), vectors))
        return values[0::2], values[1::2]

    def chronological(self, by_slot_y: list[float], by_slot_s: list[float]) -> list[float]:
        """``W^T v`` in chronological order from ``Y v`` and ``S v`` by slot: ``[Y v; theta S v]``."""
        return [by_slot_y[j] for j in self.order] + [self.theta * by_slot_s[j] for j in self.order]

    def combine(self, coefficients: list[float]) -> Any:
        """``W a`` for a chronological ``a`` of length ``2 col``: ``Y^T a_1 + theta S^T a_2`` (an n-vector)."""
        xp = self.backend.xp
        a = [0.0] * (2 * self.filled)
        col = self.col
        for i, j in enumerate(self.order):
            a[2 * j] = coefficients[i]
            a[2 * j + 1] = self.theta * coefficients[col + i]
        rows = self._rows()
        return _combine_rows(self.backend, xp.asarray(a, dtype=rows.dtype, device=self.backend.device(rows)), rows)

    def gather(self, indices: Any) -> list[list[float]]:
        """The (2m, 2m) Gram matrix of ``[Y; S]``'s columns ``indices``, in the slot layout."""
        xp = self.backend.xp
        rows = xp.take(self._rows(), indices, axis=1)
        gram = _to_host(self.backend, self.backend.products(rows, rows))
        return self._spread(gram)

    def _spread(self, gram: list[list[float]]) -> list[list[float]]:
        """A (2 filled)^2 Gram matrix of interleaved rows laid out as (2m)^2: Y slot j at j, S slot j at m + j."""
        f, m = self.filled, self.m
        where = [k for j in range(f) for k in (j, m + j)]
        out = [[0.0] * (2 * m) for _ in range(2 * m)]
        for a, i in enumerate(where):
            for b, k in enumerate(where):
                out[i][k] = gram[a][b]
        return out

    # -- the pairs ---------------------------------------------------------------------

    def add(self, s: Any, y: Any, dr: float, ss_new: float, free: Any, extra: Any = None) -> Any:
        r"""Keep the pair ``(s, y)``; return True, or the products with ``extra`` when given.

        Args:
            s: the step :math:`s` (an n-vector).
            y: the gradient change :math:`y`.
            dr: :math:`s^\top y` as the line search computed it.
            ss_new: :math:`s^\top s` likewise.
            free: the free set the Gram matrices are of (a boolean n-vector, or None
                for every variable).
            extra: optional (k, n) vectors to multiply by the memory in the same pass
                (the next Cauchy direction); their ``(Y v, S v)`` by slot is returned.

        Returns False, and forgets every pair, when :math:`T` is not positive definite.
        """
        xp = self.backend.xp
        if len(self.order) == self.m:
            slot = self.order.pop(0)
        else:
            slot = min(set(range(self.m)) - set(self.order))
        self.pairs[slot, 0, ...] = y
        self.pairs[slot, 1, ...] = s
        self.filled = max(self.filled, slot + 1)
        self.order.append(slot)
        self.updates += 1
        k = 2 if free is None else 4
        extras = 0 if extra is None else extra.shape[0]
        vectors = xp.empty((k + extras, s.shape[0]), dtype=s.dtype, device=self.backend.device(s))
        if free is None:
            vectors[0, ...] = y
            vectors[1, ...] = s
        else:
            rows = [vectors[i, ...] for i in range(4)]
            self.backend.kernel(split_by_set)(*rows, y, s, xp.astype(free, s.dtype))
        for i in range(extras):
            vectors[k + i, ...] = extra[i, ...]
        py, ps = self.products(vectors)
        m = self.m
        gz, ga = self.gram_free, self.gram_active
        for j in range(self.filled):
            if free is None:
                (yz, sz), (ya, sa) = (py[j][0], py[j][1]), (0.0, 0.0)
                (yzs, szs), (yas, sas) = (ps[j][0], ps[j][1]), (0.0, 0.0)
            else:
                yz, sz, ya, sa = py[j][:4]  # y_j . (Z y), y_j . (Z s), y_j . (A y), y_j . (A s)
                yzs, szs, yas, sas = ps[j][:4]  # the same with s_j
            # rows of the new slot (and, by symmetry, its columns)
            for gram, (yy, ys, sy_, ss_) in ((gz, (yz, sz, yzs, szs)), (ga, (ya, sa, yas, sas))):
                gram[slot][j] = gram[j][slot] = yy
                gram[m + slot][j] = gram[j][m + slot] = ys
                gram[slot][m + j] = gram[m + j][slot] = sy_
                gram[m + slot][m + j] = gram[m + j][m + slot] = ss_
            self.sy[slot][j] = sz + sa  # s_new . y_j
            self.ss[j][slot] = self.ss[slot][j] = szs + sas  # s_j . s_new
        self.sy[slot][slot] = dr
        self.ss[slot][slot] = ss_new
        yy = py[slot][0] + (0.0 if free is None else py[slot][2])
        self.theta = yy / dr
        self.free = free
        if not self._form_t():
            self.reset()
            return False
        if extra is None:
            return True
        return [row[k:] for row in py], [row[k:] for row in ps]

    def update_free_set(self, free: Any) -> bool:
        """Move the Gram matrices to the free set ``free`` (boolean n-vector); True if it changed."""
        xp = self.backend.xp
        old = self.free
        if old is None:
            old = xp.ones_like(free)
        entering = free & ~old
        leaving = old & ~free
        counts = _to_host(
            self.backend, xp.stack([xp.sum(xp.astype(entering, xp.int64)), xp.sum(xp.astype(leaving, xp.int64))])
        )
        self.free = free
        if counts[0] == 0 and counts[1] == 0:
            return False
        self._k_factor = None
        if not self.order:
            return True
        size = 2 * self.m
        for count, mask, sign in ((counts[0], entering, 1.0), (counts[1], leaving, -1.0)):
            if count == 0:
                continue
            (indices,) = xp.nonzero(mask)
            gram = self.gather(indices)
            for i in range(size):
                for k in range(size):
                    self.gram_free[i][k] += sign * gram[i][k]
                    self.gram_active[i][k] -= sign * gram[i][k]
        return True

    # -- the small matrices -----------------------------------------------------------

    def _chrono_sy(self) -> list[list[float]]:
        return [[self.sy[i][j] for j in self.order] for i in self.order]

    def _form_t(self) -> bool:
        r"""Factor :math:`T = \theta S^\top S + L D^{-1} L^\top` (SciPy's ``formt``); False unless positive definite."""
        col, theta = self.col, self.theta
        sy = self._chrono_sy()
        ss = [[self.ss[i][j] for j in self.order] for i in self.order]
        t = [[0.0] * col for _ in range(col)]
        for j in range(col):
            t[0][j] = theta * ss[0][j]
        for i in range(1, col):
            for j in range(i, col):
                k1 = min(i, j)
                t[i][j] = sum(sy[i][k] * sy[j][k] / sy[k][k] for k in range(k1)) + theta * ss[i][j]
        self._t_factor = _cholesky(t)
        self._middle = None
        self._k_factor = None
        return self._t_factor is not None

    def middle_product(self, v: list[float]) -> list[float] | None:
        """``M v`` for a chronological ``v`` of length ``2 col`` (SciPy's ``bmv``); None if singular."""
        col = self.col
        if col == 0:
            return []
        sy = self._chrono_sy()
        assert self._t_factor is not None
        p2 = [v[col]]
        for i in range(1, col):
            p2.append(v[col + i] + sum(sy[i][k] * v[k] / sy[k][k] for k in range(i)))
        solved = _solve_transposed(self._t_factor, p2)
        if solved is None:
            return None
        p1 = [v[i] / math.sqrt(sy[i][i]) for i in range(col)]
        solved2 = _solve(self._t_factor, solved)
        if solved2 is None:
            return None
        p1 = [-p1[i] / math.sqrt(sy[i][i]) for i in range(col)]
        for i in range(col):
            p1[i] += sum(sy[k][i] * solved2[k] / sy[i][i] for k in range(i + 1, col))
        return p1 + solved2

    def middle_matrix(self) -> list[list[float]]:
        """:math:`M` (``2 col`` square, chronological), from :meth:`middle_product` on unit vectors."""
        if self._middle is None:
            size = 2 * self.col
            columns = []
            for i in range(size):
                unit = [0.0] * size
                unit[i] = 1.0
                column = self.middle_product(unit)
                assert column is not None  # T was factored: its diagonal is positive
                columns.append(column)
            self._middle = [[columns[j][i] for j in range(size)] for i in range(size)]
        return self._middle

    def k_factor(self) -> list[list[float]] | None:
        r"""The upper factor of :math:`K = L E L^\top` (SciPy's ``formk``) for the free set; None if singular."""
        if self._k_factor is not None:
            return self._k_factor
        col, theta, m = self.col, self.theta, self.m
        order = self.order
        gz, ga = self.gram_free, self.gram_active
        wn = [[0.0] * (2 * col) for _ in range(2 * col)]
        for iy in range(col):
            a = order[iy]
            for jy in range(iy + 1):
                b = order[jy]
                wn[jy][iy] = gz[a][b] / theta  # Y'ZZ'Y / theta
                wn[col + jy][col + iy] = ga[m + a][m + b] * theta  # theta S'AA'S
            for jy in range(iy):
                wn[jy][col + iy] = -ga[m + a][order[jy]]  # -L_a^T
            for jy in range(iy, col):
                wn[jy][col + iy] = gz[m + a][order[jy]]  # R_z^T
            wn[iy][iy] += self.sy[a][a]
        r11 = _cholesky([row[:col] for row in wn[:col]])
        if r11 is None:
            return None
        upper = [[0.0] * (2 * col) for _ in range(2 * col)]
        for i in range(col):
            upper[i][:col] = r11[i]
        for js in range(col, 2 * col):
            solved = _solve_transposed(r11, [wn[i][js] for i in range(col)])
            if solved is None:
                return None
            for i in range(col):
                upper[i][js] = solved[i]
        lower_block = [[0.0] * col for _ in range(col)]
        for i in range(col):
            for j in range(i, col):
                lower_block[i][j] = wn[col + i][col + j] + sum(
                    upper[k][col + i] * upper[k][col + j] for k in range(col)
                )
        r22 = _cholesky(lower_block)
        if r22 is None:
            return None
        for i in range(col):
            upper[col + i][col:] = r22[i]
        self._k_factor = upper
        return upper

    def free_gram(self) -> list[list[float]]:
        r""":math:`W^\top Z Z^\top W` (``2 col`` square, chronological) with :math:`W = [Y, \theta S]`."""
        m, theta = self.m, self.theta
        where = [(j, 1.0) for j in self.order] + [(m + j, theta) for j in self.order]
        gz = self.gram_free
        return [[gz[a][b] * sa * sb for b, sb in where] for a, sa in where]

    def inverse_hessian(self, shape: tuple[int, ...] | None = None) -> "LbfgsInvHessProduct":
        """The inverse of the limited-memory BFGS matrix as a linear operator (see :class:`LbfgsInvHessProduct`)."""
        if not self.order:
            return LbfgsInvHessProduct(self.pairs[:0, 1, :], self.pairs[:0, 0, :], 1.0)
        # views of the pairs, oldest first: nothing is copied
        s = [self.pairs[j, 1, ...] for j in self.order]
        y = [self.pairs[j, 0, ...] for j in self.order]
        return LbfgsInvHessProduct(s, y, 1.0 / self.theta)


# -- the Cauchy point ------------------------------------------------------------------------


class CauchyPoint(NamedTuple):
    r"""The generalized Cauchy point and what the subspace step needs of it.

    Args:
        x: :math:`x^c` (an n-vector in the box).
        c: :math:`W^\top (x^c - x)`, chronological, length ``2 col`` (host floats).
        free: the variables free at :math:`x^c` (boolean n-vector).
        passed: how many breakpoints the path passed before its minimiser.
        n_free: how many variables are free at :math:`x^c`.
        p: :math:`W^\top Z Z^\top d`, chronological (host floats): the memory's product
            with the direction on the variables free at :math:`x^c`; None if unknown.
        t: the path parameter of :math:`x^c`, so that :math:`Z^\top (x^c - x) = t Z^\top d`.

    Example:
        >>> import numpy as np
        >>> box = Box(np.array([0.0, 0.0]), np.array([1.0, 1.0]))
        >>> memory = LbfgsbMemory(np.zeros(2), m=5)
        >>> x, g = np.array([0.5, 0.5]), np.array([0.2, -4.0])
        >>> point = cauchy_point(x, g, box, memory)
        >>> point.x, point.free, point.passed, point.n_free  # x[1] reaches its bound 1 at t = 1/8
        (array([0.3, 1. ]), array([ True, False]), 1, 1)
    """

    #: the Cauchy point
    x: Any
    #: W^T (x^c - x), chronological (host floats)
    c: list[float]
    #: the free variables at the Cauchy point
    free: Any
    #: the number of breakpoints passed
    passed: int
    #: the number of free variables
    n_free: int
    #: W^T Z Z^T d, chronological (host floats), or None
    p: list[float] | None = None
    #: the path parameter of the Cauchy point
    t: float = 0.0


def cauchy_direction(x: Any, g: Any, box: Box) -> tuple[Any, Any, Any]:
    r"""The projected steepest-descent direction from ``x``, and the breakpoint of each variable.

    A variable moves along :math:`-g_i` unless it is fixed (:math:`l_i = u_i`) or sits
    at a bound with the gradient pointing out of the box (then it is *pinned*).

    Args:
        x: the iterate (n-vector in the box).
        g: the gradient there.
        box: the :class:`Box`.

    Returns:
        ``(d, breakpoints, pinned)``: :math:`d = -g` on the moving variables and 0
        elsewhere; the step :math:`t_i` at which variable :math:`i` reaches its bound
        along :math:`d` (``inf`` where it never does); the boolean mask of the
        variables that cannot move.

    Example:
        >>> import numpy as np
        >>> box = Box(np.array([0.0, 0.0, -np.inf]), np.array([1.0, 1.0, np.inf]))
        >>> cauchy_direction(np.array([0.0, 0.5, 3.0]), np.array([2.0, -1.0, 1.0]), box)
        (array([ 0.,  1., -1.]), array([inf, 0.5, inf]), array([ True, False, False]))
    """
    backend = get_backend(x)
    xp = backend.xp
    d, breakpoints, pinned = xp.empty_like(x), xp.empty_like(x), xp.empty_like(x)
    backend.kernel(cauchy_breakpoints)(d, breakpoints, pinned, x, g, box.lower, box.upper)
    return d, breakpoints, pinned > 0


def _smallest(xp: Any, values: Any, k: int) -> Any:
    """The indices of the ``k`` smallest entries of ``values``, in increasing order of value, ties by index."""
    n = values.shape[0]
    partition = getattr(xp, "argpartition", None)
    if partition is not None and k < n:
        candidates = xp.sort(partition(values, k - 1)[:k])  # in index order, so that ties stay so
        order = xp.argsort(xp.take(values, candidates), stable=True)
        return xp.take(candidates, order)
    return xp.argsort(values, stable=True)[:k]


def cauchy_point(
    x: Any,
    g: Any,
    box: Box,
    memory: LbfgsbMemory,
    direction: tuple[Any, Any, Any] | None = None,
    wd: tuple[list[list[float]], list[list[float]]] | None = None,
) -> CauchyPoint:
    r"""The generalized Cauchy point: the first local minimiser of the model along the projected gradient path.

    With :math:`d = -g` (pinned variables held), :math:`p = W^\top d`,
    :math:`c = W^\top z` for :math:`z = x(t) - x`, the model along segment :math:`j`
    (from breakpoint :math:`t_j`, the first :math:`j` breakpoints passed) has slope and
    curvature

    .. math::

        f'_j = -\|d_j\|^2 + \theta t_j \|d_j\|^2 - c_j^\top M p_j, \qquad
        f''_j = \theta \|d_j\|^2 - p_j^\top M p_j,

    where :math:`d_j` is :math:`d` with the passed variables removed,
    :math:`p_j = p - \sum_{b \le j} d_b w_b` and
    :math:`c_j = \sum_{b \le j} z_b w_b + t_j p_j` (:math:`w_b` the row of :math:`W` of
    the :math:`b`-th breakpoint, :math:`z_b` its distance to the bound). The minimiser
    lies in segment :math:`j` when :math:`-f'_j/f''_j < t_{j+1} - t_j`. These are
    SciPy's ``cauchy`` recurrences written as prefix sums: the breakpoints are sorted
    in batches (the 16 smallest, then 64, ...) and each batch is one set of array
    operations, so a path through many breakpoints costs a few passes, not one
    host round trip per breakpoint.

    Args:
        x: the iterate, in the box.
        g: the gradient there.
        box: the :class:`Box`.
        memory: the :class:`LbfgsbMemory` (its ``theta``, ``M`` and pairs).
        direction: :func:`cauchy_direction`'s result, if already computed.
        wd: ``memory.products`` of the direction ``d``, if already computed.

    Returns:
        A :class:`CauchyPoint`.

    Example:
        >>> import numpy as np
        >>> box = Box(np.array([-1.0]), np.array([1.0]))
        >>> memory = LbfgsbMemory(np.zeros(1), m=5)
        >>> cauchy_point(np.array([0.0]), np.array([0.5]), box, memory).x  # theta = 1: the minimiser -g, inside
        array([-0.5])
    """
    backend = get_backend(x)
    xp = backend.xp
    d, breakpoints, pinned = direction if direction is not None else cauchy_direction(x, g, box)
    theta, col = memory.theta, memory.col
    finite = breakpoints < xp.inf
    wide = xp.float64
    summary = _to_host(
        backend,
        xp.stack(
            [
                xp.astype(_dot(d, d), wide),
                xp.astype(xp.sum(xp.astype(finite, xp.int64)), wide),
                xp.astype(xp.sum(xp.astype(~finite & (d != 0), xp.int64)), wide),
                xp.astype(xp.sum(xp.astype(pinned, xp.int64)), wide),
                xp.astype(xp.min(breakpoints), wide),
            ]
        ),
    )
    d2, nbreak, unbounded_moving, n_pinned, tmin = (
        summary[0],
        int(summary[1]),
        int(summary[2]),
        int(summary[3]),
        summary[4],
    )
    n_free = x.shape[0] - n_pinned
    free_now = ~pinned
    if d2 == 0.0:
        zeros = [0.0] * (2 * col)
        return CauchyPoint(xp.asarray(x, copy=True), zeros, free_now, 0, n_free, zeros, 0.0)
    if col:
        if wd is None:
            wd = memory.products(xp.stack([d]))
        p = memory.chronological([row[0] for row in wd[0]], [row[0] for row in wd[1]])
        mm = memory.middle_matrix()
        mp = _matvec(mm, p)
        pmp = _vdot(p, mp)
    else:
        p, mm, mp, pmp = [], [], [], 0.0
    f1 = -d2
    f2_org = theta * d2
    f2 = f2_org - pmp
    dtm = -f1 / f2
    if nbreak == 0 or dtm < tmin:
        tstar = max(dtm, 0.0)
        return CauchyPoint(box.step(x, d, tstar), [tstar * v for v in p], free_now, 0, n_free, p, tstar)

    bounded = unbounded_moving == 0  # every moving variable has a breakpoint
    floor = memory.eps * f2_org
    # The segments after the k smallest breakpoints, k growing until the minimiser is among
    # them. Each try partitions all the breakpoints, so the first k is twice what the last
    # Cauchy point passed. The result does not depend on k: a segment of length 0 (tied
    # breakpoints) never holds the minimiser, so a tie group is passed whole, and tied
    # breakpoints are taken in index order (_smallest).
    k = max(16, 2 * memory.breakpoints_passed)
    while True:
        k = min(k, nbreak)
        found = _segments(xp, backend, x, d, breakpoints, box, memory, p, mm, d2, f2_org, floor, k, nbreak, bounded)
        if found is not None:
            break
        k *= 4
    j, t_j, dtm, c, p_j = found
    memory.breakpoints_passed = j
    tstar = t_j + max(dtm, 0.0)
    passed = breakpoints <= t_j
    at_bound = xp.where(d > 0, box.upper, box.lower)
    xcp = xp.where(passed, at_bound, box.step(x, d, tstar))
    return CauchyPoint(xcp, c, free_now & ~passed, j, n_free - j, p_j, tstar)


def _segments(
    xp: Any,
    backend: Backend,
    x: Any,
    d: Any,
    breakpoints: Any,
    box: Box,
    memory: LbfgsbMemory,
    p: list[float],
    mm: list[list[float]],
    d2: float,
    f2_org: float,
    floor: float,
    k: int,
    nbreak: int,
    bounded: bool,
) -> tuple[int, float, float, list[float], list[float]] | None:
    """The segment of the path, among those after the ``k`` smallest breakpoints, that holds the minimiser.

    Returns ``(j, t_j, dtm, c, p)``: ``j`` breakpoints passed, the last at ``t_j``,
    the minimiser ``dtm`` past it, :math:`c = W^\top(x^c - x)` and :math:`p = W^\top
    d_j`; or None if the minimiser lies beyond the ``k``-th breakpoint (and more remain).
    """
    theta, col = memory.theta, memory.col
    index = _smallest(xp, breakpoints, min(k + 1, nbreak))
    times = xp.take(breakpoints, index)  # k or k + 1 sorted times
    sel = index[:k]
    t_sel = times[:k]
    if k < nbreak:
        t_next = times[1 : k + 1]
    else:
        t_next = xp.concat([times[1:k], xp.full((1,), xp.inf, dtype=times.dtype, device=backend.device(times))])
    d_b = xp.take(d, sel)
    z_b = xp.take(xp.where(d > 0, box.upper, box.lower) - x, sel)
    d2_j = d2 - xp.cumulative_sum(d_b * d_b)
    if col:
        rows = xp.take(memory._rows(), sel, axis=1)  # (2 filled, k)
        order = memory.order
        pick = xp.asarray([2 * j for j in order] + [2 * j + 1 for j in order], device=backend.device(rows))
        w_b = xp.take(rows, pick, axis=0)  # (2 col, k), chronological, S not yet scaled
        scale = xp.asarray([1.0] * col + [theta] * col, dtype=d.dtype, device=backend.device(rows))
        w_b = w_b * scale[:, None]
        p0 = xp.asarray(p, dtype=d.dtype, device=backend.device(rows))
        p_j = p0[:, None] - xp.cumulative_sum(w_b * d_b, axis=1)
        c_j = xp.cumulative_sum(w_b * z_b, axis=1) + p_j * t_sel
        m_dev = xp.asarray(mm, dtype=d.dtype, device=backend.device(rows))
        mp_j = xp.sum(m_dev[:, :, None] * p_j[None, :, :], axis=1)  # m_dev @ p_j, in a fixed order
        cmp_j = xp.sum(c_j * mp_j, axis=0)
        pmp_j = xp.sum(p_j * mp_j, axis=0)
    else:
        cmp_j = pmp_j = xp.zeros_like(d2_j)
    f1_j = -d2_j + theta * t_sel * d2_j - cmp_j
    f2_j = xp.maximum(theta * d2_j - pmp_j, xp.full_like(d2_j, floor))
    dtm_j = -f1_j / f2_j
    if bounded and k == nbreak:
        # past the last breakpoint nothing moves: the minimiser is there
        last = xp.arange(k, device=backend.device(dtm_j)) == k - 1
        dtm_j = xp.where(last, xp.zeros_like(dtm_j), dtm_j)
    stop = (dtm_j < t_next - t_sel) & (t_next > t_sel)
    first = xp.argmax(xp.astype(stop, xp.int8))
    stopped = xp.take(stop, xp.reshape(first, (1,)))[0]
    head = _to_host(backend, xp.stack([xp.astype(stopped, xp.float64), xp.astype(first, xp.float64)]))
    if head[0] == 0.0:
        if k < nbreak:
            return None
        raise AssertionError("the Cauchy point search ran past its last segment")  # pragma: no cover
    j = int(head[1])
    values = xp.stack([t_sel[j], dtm_j[j]])
    if col:
        c_end = c_j[:, j] + xp.maximum(dtm_j[j], xp.zeros_like(dtm_j[j])) * p_j[:, j]
        values = xp.concat([values, c_end, p_j[:, j]])
    host = _to_host(backend, values)
    size = 2 * col
    return j + 1, host[0], host[1], host[2 : 2 + size], host[2 + size :]


# -- the subspace step ---------------------------------------------------------------------


def subspace_minimization(x: Any, g: Any, point: CauchyPoint, box: Box, memory: LbfgsbMemory) -> Any | None:
    r"""The minimiser of the model over the free variables from the Cauchy point, projected onto the box.

    With :math:`r_0 = -\theta (x^c - x) - g` (SciPy's ``cmprlb``) the reduced gradient
    is :math:`\hat r = Z^\top (r_0 + W M c)` and the step on the free variables is

    .. math::

        \hat d = \tfrac1\theta \hat r + \tfrac1{\theta^2} Z^\top W K^{-1} W^\top Z \hat r

    (SciPy's ``subsm``), computed as one combination of the pairs:
    :math:`\hat d = Z^\top\big(r_0/\theta + W (M c/\theta + v/\theta^2)\big)` with
    :math:`v = K^{-1}\big(W^\top Z r_0 + W^\top Z Z^\top W M c\big)`. The point
    :math:`x^c + Z\hat d` is projected onto the box; if a variable lands on a bound
    and :math:`(P(x^c + Z\hat d) - x)^\top g > 0`, the step is instead the longest
    :math:`\alpha \le 1` along :math:`\hat d` that stays in the box, the variable that
    limits it put exactly on its bound.

    Args:
        x: the iterate.
        g: the gradient there.
        point: the :class:`CauchyPoint`.
        box: the :class:`Box`.
        memory: the :class:`LbfgsbMemory`, with at least one pair.

    Returns:
        The subspace minimiser (an n-vector in the box), or None when :math:`K` is
        singular (the caller then forgets the pairs).

    Example:
        >>> import numpy as np
        >>> box = Box(np.full(2, -np.inf), np.full(2, np.inf))
        >>> memory = LbfgsbMemory(np.zeros(2), m=5)  # one pair of f = x0^2 + 4 x1^2
        >>> _ = memory.add(np.array([1.0, 1.0]), np.array([2.0, 8.0]), dr=10.0, ss_new=2.0, free=None)
        >>> x, g = np.array([1.0, 1.0]), np.array([2.0, 8.0])
        >>> point = CauchyPoint(x, [0.0, 0.0], np.array([True, True]), 0, 2)
        >>> subspace_minimization(x, g, point, box, memory)  # g is along y: the BFGS step is exact here
        array([0., 0.])
    """
    backend = get_backend(x)
    xp = backend.xp
    theta, col = memory.theta, memory.col
    factor = memory.k_factor()
    if factor is None:
        return None
    zero = xp.zeros_like(x)
    r0 = xp.where(point.free, -theta * (point.x - x) - g, zero)
    if point.p is not None:
        # on the free variables x^c - x = t d and g = -d: W^T Z Z^T r0 = (1 - theta t) p, no pass needed
        wr0 = [(1.0 - theta * point.t) * v for v in point.p]
    else:
        py, ps = memory.products(xp.reshape(r0, (1, r0.shape[0])))
        wr0 = memory.chronological([row[0] for row in py], [row[0] for row in ps])
    mc = memory.middle_product(point.c)
    if mc is None:
        return None
    gram = memory.free_gram()
    v = [a + b for a, b in zip(wr0, _matvec(gram, mc), strict=True)]
    solved = _solve_transposed(factor, v)
    if solved is None:
        return None
    solved = [-s if i < col else s for i, s in enumerate(solved)]
    wv = _solve(factor, solved)
    if wv is None:
        return None
    coefficients = [a / theta + b / (theta * theta) for a, b in zip(mc, wv, strict=True)]
    step = xp.where(point.free, r0 / theta + memory.combine(coefficients), zero)
    trial = point.x + step
    projected = box.project(trial)
    hit = point.free & ((box.has_lower & (projected == box.lower)) | (box.has_upper & (projected == box.upper)))
    checks = _to_host(backend, xp.stack([xp.astype(xp.any(hit), x.dtype), _dot(projected - x, g)]))
    if checks[0] == 0.0 or checks[1] <= 0.0:
        return projected
    # the projected point is not a descent direction: back off along the step instead
    toward = xp.where(step < 0, box.lower - point.x, box.upper - point.x)
    safe = xp.where(step == 0, xp.ones_like(step), step)
    ratio = xp.where(point.free & (step != 0), toward / safe, xp.full_like(step, xp.inf))
    ratio = xp.where(ratio < 0, zero, ratio)
    limit = xp.argmin(ratio)
    alpha_host = _to_host(backend, xp.stack([xp.min(ratio), xp.astype(limit, x.dtype)]))
    alpha = min(1.0, alpha_host[0])
    result = point.x + alpha * step
    if alpha < 1.0:
        i = int(alpha_host[1])
        result[i] = xp.where(step[i] > 0, box.upper[i], box.lower[i])
    return box.project(result)


# -- the inverse Hessian as a linear operator -------------------------------------------------


class LbfgsInvHessProduct:
    r"""The limited-memory BFGS inverse Hessian as a linear operator, like SciPy's ``LbfgsInvHessProduct``.

    .. math::

        H = V_k^\top \cdots V_1^\top H_0 V_1 \cdots V_k
            + \sum_i (\text{the same, from pair } i)\; \rho_i s_i s_i^\top,
        \qquad V_i = I - \rho_i y_i s_i^\top,\ \rho_i = 1 / y_i^\top s_i,

    applied by the two-loop recursion (Nocedal and Wright, Algorithm 7.4) with
    :math:`H_0 = \gamma I`. L-BFGS-B's own :math:`\gamma` is :math:`1/\theta =
    s^\top y / y^\top y` of the newest pair, the scaling its model uses; SciPy's
    operator uses :math:`H_0 = I` instead (pass ``h0=1.0`` for that). The arrays stay
    on their device; ``x @ H``, ``H @ x``, ``H.dot(x)``, ``H(x)``, ``H.matvec(x)`` and
    ``H.matmat(X)`` accept a vector ``(n,)``, a column ``(n, 1)`` or a matrix ``(n, k)``.

    Args:
        sk: the steps :math:`s_i`, oldest first: an array ``(k, n)`` or a sequence of
            ``k`` vectors (kept as given, not copied).
        yk: the gradient changes :math:`y_i`, likewise.
        h0: :math:`\gamma` (a float). Default: 1.

    Example:
        >>> import numpy as np
        >>> H = LbfgsInvHessProduct(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0]]))
        >>> H.todense()  # exact along s (H y = s), H0 = I elsewhere
        array([[0.5, 0. ],
               [0. , 1. ]])
        >>> H @ np.array([2.0, 1.0])
        array([1., 1.])
        >>> H.shape, H.dtype
        ((2, 2), dtype('float64'))
    """

    # NumPy arrays on the left of ``@`` defer to __rmatmul__
    __array_ufunc__ = None

    def __init__(self, sk: Any, yk: Any, h0: float = 1.0) -> None:
        arrays = is_array(sk) and is_array(yk)
        steps = [sk[i, ...] for i in range(sk.shape[0])] if is_array(sk) else list(sk)
        changes = [yk[i, ...] for i in range(yk.shape[0])] if is_array(yk) else list(yk)
        shapes = {tuple(v.shape) for v in steps + changes}
        if arrays:
            shapes.add(tuple(sk.shape[1:]))
            shapes.add(tuple(yk.shape[1:]))
        if len(steps) != len(changes) or len(shapes) != 1 or any(len(shape) != 1 for shape in shapes):
            raise ValueError(f"sk and yk must have one shape (n_corrs, n), got {_shape_of(sk)} and {_shape_of(yk)}")
        first = sk if arrays else steps[0]
        self._backend = get_backend(first)
        self._device = self._backend.device(first)
        self._s, self._y = steps, changes
        self.h0 = float(h0)
        self.n_corrs = len(steps)
        (n,) = shapes.pop()
        self.shape = (n, n)
        self.dtype = first.dtype
        #: :math:`1 / y_i^\top s_i` (0-d arrays)
        self.rho = [1.0 / _dot(s, y) for s, y in zip(steps, changes, strict=True)]

    @property
    def sk(self) -> Any:
        """The steps, an array ``(n_corrs, n)`` (stacked on each access)."""
        return self._backend.xp.stack(self._s)

    @property
    def yk(self) -> Any:
        """The gradient changes, an array ``(n_corrs, n)`` (stacked on each access)."""
        return self._backend.xp.stack(self._y)

    def __repr__(self) -> str:
        return f"<{self.shape[0]}x{self.shape[1]} LbfgsInvHessProduct with dtype={self.dtype}>"

    def matmat(self, X: Any) -> Any:
        """``H X`` for ``X`` of shape ``(n, k)``."""
        xp = self._backend.xp
        s, y, rho = self._s, self._y, self.rho
        q = xp.asarray(X, dtype=self.dtype, copy=True)
        alpha = []
        for i in range(self.n_corrs - 1, -1, -1):
            a = rho[i] * _combination(xp, s[i], q)
            alpha.append(a)
            q = q - y[i][:, None] * a[None, :]
        alpha.reverse()
        r = q * self.h0
        for i in range(self.n_corrs):
            beta = rho[i] * _combination(xp, y[i], r)
            r = r + s[i][:, None] * (alpha[i] - beta)[None, :]
        return r

    def matvec(self, x: Any) -> Any:
        """``H x`` for ``x`` of shape ``(n,)`` or ``(n, 1)`` (the result has ``x``'s shape)."""
        xp = self._backend.xp
        shape = tuple(x.shape)
        if shape not in ((self.shape[0],), (self.shape[0], 1)):
            raise ValueError(f"expected a vector of shape ({self.shape[0]},) or ({self.shape[0]}, 1), got {shape}")
        return xp.reshape(self.matmat(xp.reshape(x, (self.shape[0], 1))), shape)

    def dot(self, x: Any) -> Any:
        """``H x`` for a vector or a matrix."""
        if len(x.shape) == 2 and x.shape[1] != 1:
            return self.matmat(x)
        return self.matvec(x)

    __call__ = dot
    __matmul__ = dot

    def __rmatmul__(self, x: Any) -> Any:
        xp = self._backend.xp
        if len(x.shape) == 1:
            return self.matvec(x)
        return xp.matrix_transpose(self.matmat(xp.matrix_transpose(x)))  # H is symmetric

    def rmatvec(self, x: Any) -> Any:
        """``H^T x`` (``H`` is symmetric)."""
        return self.matvec(x)

    @property
    def T(self) -> "LbfgsInvHessProduct":
        """The transpose, ``H`` itself."""
        return self

    def todense(self) -> Any:
        """``H`` as a dense ``(n, n)`` array on the pairs' device."""
        xp = self._backend.xp
        return self.matmat(xp.eye(self.shape[0], dtype=self.dtype, device=self._device))


def _shape_of(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if is_array(value) else (len(value),)


# -- the driver ----------------------------------------------------------------------------------

_MESSAGES = {
    "gtol": "CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL",
    "ftol": "CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH",
    "maxiter": "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT",
    "maxfun": "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT",
    "callback": "STOP: CALLBACK REQUESTED HALT",
    "line search": "ABNORMAL: THE LINE SEARCH FOUND NO ACCEPTABLE STEP",
    "nonfinite": "ABNORMAL: THE OBJECTIVE OR ITS GRADIENT IS NOT FINITE AT X0",
}


def lbfgsb(
    fun_and_grad: Callable[[Any], tuple[float, Any]],
    x0: Any,
    box: Box,
    *,
    maxcor: int = 10,
    ftol: float = 2.2204460492503131e-09,
    gtol: float = 1e-5,
    maxiter: int = 15000,
    maxfun: int = 15000,
    maxls: int = 20,
    callback: Callable[[Any, float], bool] | None = None,
    count: Callable[[], int] | None = None,
) -> dict[str, Any]:
    r"""Run L-BFGS-B from ``x0`` (projected onto ``box``); the engine behind ``minimize(method="l-bfgs-b")``.

    Args:
        fun_and_grad: ``fun_and_grad(x) -> (value, gradient)`` for a flat ``x`` (do not
            modify it): a float and an array shaped like ``x``. Called once per
            distinct point (a point equal to the last one reuses its values).
        x0: the starting point, a 1-D floating-point array.
        box: the bounds, a :class:`Box` on ``x0``'s device and dtype.
        maxcor: pairs kept. Default: 10.
        ftol: relative reduction of ``f`` below which it stops. Default: SciPy's
            ``1e7 * eps``.
        gtol: projected-gradient tolerance. Default: 1e-5.
        maxiter: iterations. Default: 15000.
        maxfun: evaluations, checked after each iteration. Default: 15000.
        maxls: evaluations per line search. Default: 20.
        callback: ``callback(x, f) -> stop`` after each iteration.
        count: the number of evaluations so far, if the caller counts them (finite
            differences add evaluations of their own); default: the calls made here.

    Returns:
        A dict with ``x``, ``fun``, ``jac``, ``nit``, ``nfev`` (calls of
        ``fun_and_grad``), ``status`` (0 converged, 1 ``maxiter`` or ``maxfun``, 2
        otherwise), ``success``, ``message``, ``stop`` (why it stopped:
        ``"gtol"``, ``"ftol"``, ``"maxiter"``, ``"maxfun"``, ``"callback"``,
        ``"line search"``, ``"nonfinite"``) and ``hess_inv``.

    Example:
        >>> import numpy as np
        >>> box = Box(np.array([1.5, -np.inf]), np.array([np.inf, np.inf]))
        >>> result = lbfgsb(lambda x: (float(x @ x), 2 * x), np.array([3.0, 2.0]), box)
        >>> np.round(result["x"], 8) + 0.0, result["message"]
        (array([1.5, 0. ]), 'CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL')
    """
    backend = get_backend(x0)
    xp = backend.xp
    calls = [0]
    last: dict[str, Any] = {}

    def evaluate(point: Any) -> tuple[float, Any]:
        seen = last.get("x")
        if seen is not None and _to_host(backend, xp.astype(xp.all(seen == point), point.dtype)) == 1.0:
            return last["f"], last["g"]
        calls[0] += 1
        f, g = fun_and_grad(point)
        last.update(x=point, f=f, g=g)
        return f, g

    evaluations = count if count is not None else (lambda: calls[0])
    x = box.project(x0)
    f, g = evaluate(x)
    memory = LbfgsbMemory(x, maxcor)
    result: dict[str, Any] = {}

    def finish(stop: str, nit: int) -> dict[str, Any]:
        status = 0 if stop in ("gtol", "ftol") else 1 if stop in ("maxiter", "maxfun") else 2
        result.update(
            x=x,
            fun=f,
            jac=g,
            nit=nit,
            nfev=calls[0],
            status=status,
            success=status == 0,
            message=_MESSAGES[stop],
            stop=stop,
            hess_inv=memory.inverse_hessian(),
        )
        return result

    sbgnrm = box.projected_gradient_norm(x, g)
    if not (math.isfinite(f) and math.isfinite(sbgnrm)):
        return finish("nonfinite", 0)
    if sbgnrm <= gtol:
        return finish("gtol", 0)
    nit = 0
    iteration = 0  # SciPy's iter: counts restarts' failed iterations too
    direction = None
    wd = None
    while True:
        # -- Cauchy point and subspace minimisation ------------------------------------------
        if not box.constrained and memory.col > 0:
            free_all = xp.ones(x.shape, dtype=xp.bool, device=backend.device(x))
            if wd is None:
                wd = memory.products(xp.reshape(-g, (1, x.shape[0])))
            p = memory.chronological([row[0] for row in wd[0]], [row[0] for row in wd[1]])
            point = CauchyPoint(x, [0.0] * (2 * memory.col), free_all, 0, x.shape[0], p, 0.0)
        else:
            point = cauchy_point(x, g, box, memory, direction, wd)
            memory.update_free_set(point.free)
        direction = wd = None
        z = point.x
        if memory.col and point.n_free:
            z = subspace_minimization(x, g, point, box, memory)
            if z is None:
                memory.reset()
                continue

        # -- line search -----------------------------------------------------------------
        d = z - x
        gd0 = _to_host(backend, xp.stack([_dot(g, d), _dot(d, d)]))
        gdold, dtd = gd0
        if box.constrained:
            stpmax = 1.0 if iteration == 0 else max(1.0, box.max_step(x, d))
        else:
            stpmax = 1e10
        if iteration == 0 and not box.boxed:
            stp = min(1.0 / math.sqrt(dtd), stpmax)
        else:
            stp = 1.0
        found = None
        if gdold < 0:

            def phi(t: float, x: Any = x, z: Any = z, d: Any = d) -> tuple[float, float, tuple[Any, Any]]:
                trial = box.project(z) if t == 1.0 else box.step(x, d, t)
                value, grad = evaluate(trial)
                slope = _to_host(backend, _dot(grad, d)) if math.isfinite(value) else math.nan
                return value, slope, (trial, grad)

            found = more_thuente(phi, stp, f, gdold, stpmax=stpmax, max_evals=maxls)
        if found is None or found.status == "failure":
            if memory.col == 0:
                return finish("line search", nit)
            memory.reset()
            continue
        fold, g_old = f, g
        stp = found.t
        x, g = found.payload
        f = found.f
        gd = found.slope
        iteration += 1
        nit += 1
        sbgnrm = box.projected_gradient_norm(x, g)
        stop = callback is not None and callback(x, f)
        if nit >= maxiter:
            return finish("maxiter", nit)
        if evaluations() > maxfun:
            return finish("maxfun", nit)
        if stop:
            return finish("callback", nit)
        if sbgnrm <= gtol:
            return finish("gtol", nit)
        if fold - f <= ftol * max(abs(fold), abs(f), 1.0):
            return finish("ftol", nit)

        # -- the new pair --------------------------------------------------------------------
        if stp == 1.0:
            dr, ddum = gd - gdold, -gdold
        else:
            dr, ddum = (gd - gdold) * stp, -gdold * stp
        if dr <= memory.eps * ddum:
            continue  # skip the update: not enough curvature
        s = d if stp == 1.0 else stp * d
        y = g - g_old
        if box.constrained:
            direction = cauchy_direction(x, g, box)
            extra = xp.reshape(direction[0], (1, x.shape[0]))
        else:
            extra = xp.reshape(-g, (1, x.shape[0]))
        products = memory.add(s, y, dr, stp * stp * dtd, memory.free, extra)
        if products is False:
            direction = None
        elif products is not True:
            wd = products

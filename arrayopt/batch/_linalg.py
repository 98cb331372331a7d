r"""Small dense linear algebra over a stack of problems, written with array operations.

Every function here works on B independent small problems at once. The arrays keep the
problem axis **last** ("structure of arrays"): a stack of B Jacobians of shape (m, n)
is held as ``J[j, i, b]`` (shape (n, m, B)), so ``J[j, ...]`` is column j of every problem,
a contiguous (m, B) block, and each arithmetic operation below is one elementwise pass
over all B problems. No function loops over B in Python and none calls a library's
``linalg``: the loops are over the small dimensions n and m, unrolled in Python, so on
CuPy everything stays on the device and never waits for it, and on NumPy the work is a
few hundred vectorised passes per call (fast once B is in the thousands).

Symmetric n x n matrices are stored packed, lower triangle by rows: entry (i, j) with
j <= i lives at ``tri(i, j) = i (i + 1) / 2 + j`` of an array of shape (n (n + 1) / 2, B).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> J = rng.standard_normal((3, 6, 4))                    # 4 problems, m=6, n=3
>>> A = gram(np, J)                                      # J^T J, packed
>>> r = rng.standard_normal((6, 4))
>>> x, ok = cholesky_solve(np, A, np.zeros((3, 4)), -jt_dot(np, J, r))
>>> dense = np.einsum("jib,kib->bjk", J, J)
>>> expect = np.linalg.solve(dense, -np.einsum("jib,ib->bj", J, r)[..., None])[..., 0]
>>> bool(ok.all()), np.allclose(x.T, expect)
(True, True)
"""

from typing import Any

__all__ = [
    "cholesky",
    "cholesky_solve",
    "gram",
    "jacobi_svd",
    "jt_dot",
    "packed_quadratic",
    "problem_last",
    "r_factor",
    "solve_lower",
    "solve_lower_transposed",
    "tri",
]


def tri(i: int, j: int) -> int:
    """Position of entry (i, j), j <= i, of a packed symmetric matrix.

    Args:
        i: row (0-based).
        j: column, at most ``i``.

    >>> [tri(i, j) for i in range(3) for j in range(i + 1)]
    [0, 1, 2, 3, 4, 5]
    """
    return i * (i + 1) // 2 + j


def problem_last(xp: Any, a: Any, axes: tuple[int, ...]) -> Any:
    """``a`` with its axes permuted to ``axes``, laid out contiguously.

    Returns the permuted view itself when it is already C-contiguous (an array of a
    library that reports ``flags``, e.g. a model that built its Jacobian as the transpose
    of an (n, m, B) array), else a contiguous copy. Libraries without ``flags``
    (array-api-strict) get the view.

    Args:
        xp: the array namespace.
        a: the array.
        axes: the permutation, as for ``permute_dims``.

    >>> import numpy as np
    >>> a = np.arange(6.0).reshape(2, 3)
    >>> problem_last(np, a, (1, 0)).flags.c_contiguous
    True
    """
    view = xp.permute_dims(a, axes)
    flags = getattr(view, "flags", None)
    if flags is None or flags.c_contiguous:
        return view
    out = xp.empty(view.shape, dtype=view.dtype, device=getattr(a, "device", None))
    out[...] = view
    return out


def gram(xp: Any, J: Any, weights: Any = None) -> Any:
    r"""The packed lower triangle of :math:`J^T W J` for each problem.

    .. math:: A_{ij} = \sum_k w_k J_{ki} J_{kj}, \qquad j \le i.

    Args:
        xp: the array namespace.
        J: Jacobians, shape (n, m, B) (column j of every problem is ``J[j, ...]``).
        weights: optional per-residual weights ``w``, shape (m, B); None for W = I.

    Returns:
        shape (n (n + 1) / 2, B).

    >>> import numpy as np
    >>> J = np.array([[[1.0], [2.0]], [[3.0], [4.0]]])    # one problem: columns (1, 2), (3, 4)
    >>> gram(np, J)[:, 0].tolist()
    [5.0, 11.0, 25.0]
    """
    n = J.shape[0]
    entries = []
    for i in range(n):
        left = J[i, ...] if weights is None else J[i, ...] * weights
        for j in range(i + 1):
            entries.append(xp.sum(left * J[j, ...], axis=0))
    return xp.stack(entries)


def jt_dot(xp: Any, J: Any, r: Any) -> Any:
    r""":math:`J^T r` for each problem: shape (n, B) from J (n, m, B) and r (m, B).

    Args:
        xp: the array namespace.
        J: Jacobians, shape (n, m, B).
        r: vectors, shape (m, B).

    >>> import numpy as np
    >>> J = np.array([[[1.0], [2.0]], [[3.0], [4.0]]])
    >>> jt_dot(np, J, np.array([[1.0], [1.0]]))[:, 0].tolist()
    [3.0, 7.0]
    """
    return xp.stack([xp.sum(J[j, ...] * r, axis=0) for j in range(J.shape[0])])


def packed_quadratic(xp: Any, A: Any, s: Any) -> Any:
    r""":math:`s^T A s` per problem, for a packed symmetric A (shape (n(n+1)/2, B)) and s (n, B).

    Args:
        xp: the array namespace.
        A: packed symmetric matrices.
        s: vectors.

    >>> import numpy as np
    >>> A = np.array([[2.0], [1.0], [3.0]])               # [[2, 1], [1, 3]]
    >>> packed_quadratic(np, A, np.array([[1.0], [2.0]])).tolist()
    [18.0]
    """
    n = s.shape[0]
    total = A[0, ...] * s[0, ...] * s[0, ...]
    for i in range(1, n):
        cross = A[tri(i, 0), ...] * s[0, ...]
        for j in range(1, i):
            cross = cross + A[tri(i, j), ...] * s[j, ...]
        total = total + s[i, ...] * (2 * cross + A[tri(i, i), ...] * s[i, ...])
    return total


def cholesky_solve(xp: Any, A: Any, damping: Any, b: Any, free: Any = None) -> tuple[Any, Any]:
    r"""Solve :math:`(A + \operatorname{diag}(\delta)) x = b` per problem by Cholesky.

    With ``free`` (a 0/1 float mask, shape (n, B)), the variables where it is 0 are held
    fixed: their rows and columns of A are replaced by the identity, their right-hand
    side by 0, so their x is exactly 0 and the others solve the reduced system

    .. math:: (A_{FF} + \operatorname{diag}(\delta_F)) x_F = b_F .

    The factorisation :math:`L L^T` is written out entry by entry (Golub and Van Loan,
    *Matrix Computations*, 4th ed., section 4.2) with every entry an array over the
    problems. A problem whose pivot is not positive beyond rounding
    (:math:`\ell_{jj}^2 \le n\,\varepsilon\,(A_{jj} + \delta_j)`) or not finite is
    reported in ``ok`` as False; its x is finite garbage, to be discarded.

    Args:
        xp: the array namespace.
        A: packed symmetric matrices, shape (n (n + 1) / 2, B).
        damping: the diagonal added to A, shape (n, B) (or broadcastable).
        b: right-hand sides, shape (n, B).
        free: None, or the mask of free variables, shape (n, B), 1.0 free and 0.0 fixed.

    Returns:
        ``(x, ok)``: shape (n, B) and a boolean array of shape (B,).

    >>> import numpy as np
    >>> A = np.array([[4.0, 1.0], [2.0, 0.0], [3.0, 1.0]])   # two problems
    >>> x, ok = cholesky_solve(np, A, np.zeros((2, 2)), np.array([[2.0, 1.0], [1.0, 1.0]]))
    >>> x.T.tolist(), ok.tolist()                           # [[4,2],[2,3]] x = (2,1); [[1,0],[0,1]] x = (1,1)
    ([[0.5, 0.0], [1.0, 1.0]], [True, True])
    """
    n = b.shape[0]
    eps = float(xp.finfo(b.dtype).eps)
    ok = None
    L: list[list[Any]] = [[None] * n for _ in range(n)]
    for j in range(n):
        diagonal = A[tri(j, j), ...] + damping[j, ...]
        if free is not None:
            diagonal = diagonal * free[j, ...] + (1 - free[j, ...])
        pivot = diagonal
        for t in range(j):
            pivot = pivot - L[j][t] * L[j][t]
        good = (pivot > (n * eps) * diagonal) & (pivot < float("inf"))
        ok = good if ok is None else ok & good
        root = xp.sqrt(xp.where(good, pivot, 1.0))
        L[j][j] = root
        inverse = 1 / root
        for i in range(j + 1, n):
            entry = A[tri(i, j), ...]
            if free is not None:
                entry = entry * (free[i, ...] * free[j, ...])
            for t in range(j):
                entry = entry - L[i][t] * L[j][t]
            L[i][j] = entry * inverse
    rhs = [b[i, ...] if free is None else b[i, ...] * free[i, ...] for i in range(n)]
    y: list[Any] = []
    for i in range(n):
        value = rhs[i]
        for t in range(i):
            value = value - L[i][t] * y[t]
        y.append(value / L[i][i])
    x: list[Any] = [None] * n
    for i in reversed(range(n)):
        value = y[i]
        for t in range(i + 1, n):
            value = value - L[t][i] * x[t]
        x[i] = value / L[i][i]
    return xp.stack(x), ok


def cholesky(xp: Any, A: Any, tolerance: float = 0.0) -> tuple[Any, Any]:
    r"""The lower Cholesky factor :math:`L` of dense symmetric matrices, :math:`A = L L^T`, per problem.

    Column by column (Golub and Van Loan, *Matrix Computations*, 4th ed., algorithm
    4.2.1, the "gaxpy" form): column j is
    :math:`v = A_{j:,j} - L_{j:,:j} L_{j,:j}^T`, divided by :math:`\sqrt{v_j}`, each step a few
    array operations over the rows and the problems (k steps in all, not the k^3 / 6 of
    :func:`cholesky_solve`'s entry-by-entry loops). Only the lower triangle of A is read. A
    problem whose pivot :math:`v_j` is not above ``tolerance`` times :math:`A_{jj}` (not
    above 0 by default: LINPACK's ``dpofa`` test) or is not finite is reported in ``ok``
    as False; its factor is finite garbage.

    Args:
        xp: the array namespace.
        A: shape (k, k, B), entry (i, j) of every problem in ``A[i, j]``.
        tolerance: the relative pivot threshold.

    Returns:
        ``(L, ok)``: L of shape (k, k, B), zero above the diagonal, and ok of shape (B,).

    >>> import numpy as np
    >>> A = np.array([[[4.0, 1.0], [2.0, 0.0]], [[2.0, 0.0], [5.0, 1.0]]])   # [[4,2],[2,5]] and [[1,0],[0,1]]
    >>> L, ok = cholesky(np, A)
    >>> L[:, :, 0].tolist(), ok.tolist()
    ([[2.0, 0.0], [1.0, 2.0]], [True, True])
    """
    k = A.shape[0]
    L = xp.zeros_like(A)
    ok = None
    for j in range(k):
        column = A[j:, j, ...]
        if j:
            column = column - xp.sum(L[j:, :j, ...] * L[j, :j, ...][None, ...], axis=1)
        pivot = column[0, ...]
        diagonal = A[j, j, ...]
        good = (pivot > (tolerance * diagonal if tolerance else 0.0)) & (pivot < float("inf"))
        ok = good if ok is None else ok & good
        root = xp.sqrt(xp.where(good, pivot, 1.0))
        L[j, j, ...] = root
        if j + 1 < k:
            L[j + 1 :, j, ...] = column[1:, ...] / root[None, ...]
    return L, ok


def _substitute(xp: Any, L: Any, b: Any, transposed: bool) -> Any:
    """Forward (``L x = b``) or, transposed, back (``L^T x = b``) substitution, one array operation per row."""
    k = L.shape[0]
    extra = (None,) * (b.ndim - 2)
    x = xp.zeros_like(b)
    for i in reversed(range(k)) if transposed else range(k):
        value = b[i, ...]
        if transposed and i + 1 < k:  # row i of L^T is column i of L, below the diagonal
            value = value - xp.sum(L[i + 1 :, i, ...][(slice(None), *extra, ...)] * x[i + 1 :, ...], axis=0)
        elif not transposed and i:
            value = value - xp.sum(L[i, :i, ...][(slice(None), *extra, ...)] * x[:i, ...], axis=0)
        x[i, ...] = value / L[i, i, ...]
    return x


def solve_lower(xp: Any, L: Any, b: Any) -> Any:
    r""":math:`L^{-1} b` per problem, for lower-triangular L (k, k, B) and b (k, ..., B).

    Args:
        xp: the array namespace.
        L: lower-triangular matrices (e.g. from :func:`cholesky`).
        b: right-hand sides: a vector (k, B) or several, (k, r, B).

    >>> import numpy as np
    >>> L = np.array([[[2.0], [0.0]], [[1.0], [2.0]]])
    >>> solve_lower(np, L, np.array([[2.0], [5.0]]))[:, 0].tolist()
    [1.0, 2.0]
    """
    return _substitute(xp, L, b, transposed=False)


def solve_lower_transposed(xp: Any, L: Any, b: Any) -> Any:
    r""":math:`L^{-T} b` per problem, for lower-triangular L (k, k, B) and b (k, ..., B).

    Args:
        xp: the array namespace.
        L: lower-triangular matrices.
        b: right-hand sides, as for :func:`solve_lower`.

    >>> import numpy as np
    >>> L = np.array([[[2.0], [0.0]], [[1.0], [2.0]]])
    >>> solve_lower_transposed(np, L, np.array([[5.0], [4.0]]))[:, 0].tolist()   # [[2, 1], [0, 2]] x = (5, 4)
    [1.5, 2.0]
    """
    return _substitute(xp, L, b, transposed=True)


def r_factor(xp: Any, J: Any) -> Any:
    r"""The triangular factor R of a thin QR factorisation :math:`J = Q R`, per problem.

    Modified Gram-Schmidt over the columns (Björck, *Numerical Methods for Least Squares
    Problems*, SIAM, 1996): R is computed as accurately as by Householder
    reflections, so its singular values are those of J to within
    :math:`O(\varepsilon) \lVert J \rVert`, which is all the rank decision of
    :func:`jacobi_svd` needs. A column that is (numerically) zero after the projections
    gives a zero row of R.

    Args:
        xp: the array namespace.
        J: shape (n, m, B), column j of every problem in ``J[j, ...]``.

    Returns:
        R as an array of shape (n, n, B) with ``R[j]`` column j (entries below the
        diagonal are zero).

    >>> import numpy as np
    >>> J = np.array([[[3.0], [4.0]], [[1.0], [0.0]]])   # columns (3, 4) and (1, 0)
    >>> np.round(r_factor(np, J)[:, :, 0].T, 12).tolist()  # rows of R
    [[5.0, 0.6], [0.0, 0.8]]
    """
    n = J.shape[0]
    Q = [J[j, ...] for j in range(n)]
    zero = xp.zeros_like(J[0, 0, ...])
    R: list[list[Any]] = [[zero] * n for _ in range(n)]  # R[column][row]
    for i in range(n):
        norm = xp.sqrt(xp.sum(Q[i] * Q[i], axis=0))
        R[i][i] = norm
        scale = xp.where(norm > 0, 1 / xp.where(norm > 0, norm, 1.0), 0.0)
        Q[i] = Q[i] * scale
        for j in range(i + 1, n):
            r = xp.sum(Q[i] * Q[j], axis=0)
            R[j][i] = r
            Q[j] = Q[j] - Q[i] * r
    return xp.stack([xp.stack(column) for column in R])


def jacobi_svd(xp: Any, W: Any, max_sweeps: int = 40) -> tuple[Any, Any]:
    r"""Singular values and right singular vectors of small square matrices (one-sided Jacobi).

    Plane rotations :math:`V` are applied to the columns of W until every pair is
    orthogonal to working precision, :math:`|w_p^T w_q| \le \varepsilon
    \lVert w_p\rVert \lVert w_q\rVert`; then :math:`W V = U \Sigma` and the singular
    values are the column norms (Hestenes 1958; Demmel and Veselić, SIAM J. Matrix Anal.
    Appl. 13:1204, 1992, who show the method is accurate to high relative precision).
    Each sweep visits the n (n - 1) / 2 pairs in cyclic order; the sweeps stop when no
    problem rotated in the last one (read on the host, once per sweep).

    Args:
        xp: the array namespace.
        W: shape (n, n, B), column j of every problem in ``W[j, ...]`` (e.g. from
            :func:`r_factor`).
        max_sweeps: the most sweeps (each converges quadratically; 5 to 10 are typical).

    Returns:
        ``(s, V)``: the singular values, shape (n, B), unsorted, and V with
        ``V[j]`` the right singular vector of ``s[j, ...]``, shape (n, n, B).

    >>> import numpy as np
    >>> W = np.array([[[2.0], [0.0]], [[1.0], [1.0]]])    # columns (2, 0) and (1, 1)
    >>> s, V = jacobi_svd(np, W)
    >>> np.allclose(np.sort(s[:, 0]), np.sort(np.linalg.svd(W[:, :, 0].T)[1]))
    True
    """
    n = W.shape[0]
    eps = float(xp.finfo(W.dtype).eps)
    cols = [W[j, ...] for j in range(n)]
    one = xp.ones_like(W[0, 0, ...])
    zero = xp.zeros_like(one)
    V = [[one if i == j else zero for i in range(n)] for j in range(n)]  # V[column][row]
    for _ in range(max_sweeps):
        rotated = None
        for p in range(n - 1):
            for q in range(p + 1, n):
                alpha = xp.sum(cols[p] * cols[p], axis=0)
                beta = xp.sum(cols[q] * cols[q], axis=0)
                gamma = xp.sum(cols[p] * cols[q], axis=0)
                turn = xp.abs(gamma) > eps * xp.sqrt(alpha * beta)
                safe = xp.where(turn, gamma, 1.0)
                zeta = xp.where(turn, (beta - alpha) / (2 * safe), 0.0)
                sign = 2 * xp.astype(zeta >= 0, zeta.dtype) - 1
                t = xp.where(turn, sign / (xp.abs(zeta) + xp.hypot(one, zeta)), 0.0)
                c = 1 / xp.sqrt(1 + t * t)
                s = c * t
                cp, cq = cols[p], cols[q]
                cols[p], cols[q] = c * cp - s * cq, s * cp + c * cq
                vp, vq = V[p], V[q]
                V[p] = [c * a - s * b for a, b in zip(vp, vq, strict=True)]
                V[q] = [s * a + c * b for a, b in zip(vp, vq, strict=True)]
                rotated = turn if rotated is None else rotated | turn
        if rotated is None or not bool(xp.any(rotated)):
            break
    singular = xp.stack([xp.sqrt(xp.sum(col * col, axis=0)) for col in cols])
    return singular, xp.stack([xp.stack(v) for v in V])

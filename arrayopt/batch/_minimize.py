r"""Batched L-BFGS-B: :func:`minimize`, SciPy's ``minimize(method="L-BFGS-B")`` for each of B problems.

Each problem minimises its own smooth :math:`f_b(x)` over its own box
:math:`l_b \le x \le u_b` with its own limited memory, line search, counts and stopping
tests: the iteration of L-BFGS-B 3.0 (Byrd, Lu, Nocedal and Zhu 1995; Morales and
Nocedal 2011) as :mod:`arrayopt.lbfgsb` describes it for one problem, with every step
written as array operations over the problem axis. From the iterate :math:`x_k`,
gradient :math:`g_k` and the last ``maxcor`` pairs :math:`s_i = x_{i+1} - x_i`,
:math:`y_i = g_{i+1} - g_i` (model :math:`B = \theta I - W M W^\top`,
:math:`W = [Y, \theta S]`, :math:`M = \begin{bmatrix} -D & L^\top \\ L & \theta S^\top
S\end{bmatrix}^{-1}`):

1. :math:`M` from the Gram matrices :math:`S^\top S`, :math:`S^\top Y`, :math:`Y^\top Y`
   (kept per problem, updated with each new pair) through the Cholesky factor of
   :math:`T = \theta S^\top S + L D^{-1} L^\top` (SciPy's ``formt``);
2. the **generalized Cauchy point** on the projected steepest-descent path
   :math:`P(x - t g)`: each problem's breakpoints are sorted by an array sort along the
   variable axis, and the path is followed through them with SciPy's ``cauchy``
   recurrences (:math:`f'`, :math:`f''`, :math:`p = W^\top d`, :math:`c = W^\top z`),
   one breakpoint per step for all problems at once, each problem frozen at its first
   segment holding the model's minimiser (unbounded problems skip it once they have
   pairs, as SciPy does);
3. **subspace minimisation** over the variables free at the Cauchy point:
   :math:`\hat d = \tfrac1\theta \hat r + \tfrac1{\theta^2} Z^\top W K^{-1} W^\top Z
   \hat r` with the :math:`2m \times 2m` matrix :math:`K = \begin{bmatrix} -D -
   Y^\top Z Z^\top Y/\theta & L_a^\top - R_z^\top \\ L_a - R_z & \theta S^\top A A^\top
   S \end{bmatrix}` solved by block elimination (Cholesky factors of its negated first
   block and of the Schur complement; SciPy's ``formk``/``subsm``), then projected,
   or backtracked when the projection is not a descent direction (Morales and Nocedal);
4. the **line search** along :math:`d = \bar x - x_k` by
   :class:`arrayopt.batch._line_search.MoreThuente` (``dcsrch`` with ``ftol=1e-3``,
   ``gtol=0.9``, ``xtol=0.1``, never past the box), first step
   :math:`\min(1/\|d\|, 1)` on the first iteration unless every variable has both
   bounds, and 1 afterwards;
5. the pair :math:`(s, y)` is kept if :math:`s^\top y > \epsilon\, (-g_k^\top s)`,
   the oldest dropped beyond ``maxcor``.

A problem stops (SciPy's tests and order, after each accepted step) on ``maxiter``,
``maxfun`` (more evaluations than that), ``gtol`` (:math:`\|P(x - g) - x\|_\infty \le`
``gtol``, also tested at the start) or ``ftol`` (:math:`f_k - f_{k+1} \le` ``ftol``
:math:`\max(|f_k|, |f_{k+1}|, 1)`). A failed line search, a direction that is not a
descent direction or a singular :math:`T` or :math:`K` forgets the pairs and restarts
from the projected steepest-descent direction :math:`P(x - g) - x`; a failure without
pairs stops the problem (``Stop.LINE_SEARCH``). A start where the objective or its
gradient is not finite stops it at once (``Stop.NONFINITE``); a trial point where it is
not finite shortens the step (see the line search).

**Rounds.** The problems advance in rounds of one evaluation each: every running
problem either starts an iteration (steps 1-3, and the first trial step) or continues
its line search, then all are evaluated together, once, at their trial points. The only
host read is, once per round, the number still running (and, folded into the same
integer, the number starting an iteration: only those compute a direction); problems
that stopped leave the working set, and with ``pass_indices=True`` are no longer
evaluated. On backends whose arrays live in host memory (NumPy), where reading a number
costs nothing, steps 1-3 run over chunks of problems that fit the CPU's caches, and
each chunk takes shortcuts a device does not: the Cauchy walk ends when every problem
of the chunk has stopped, the memories are cut to the most pairs any problem holds,
and where no problem has an active variable the Gram matrices of the active set are
skipped and :math:`K` is solved through the triangle of :math:`S^\top Y` without being
factored. The iterations are the same; the last bits may differ from a device's.

**Where the numbers differ from SciPy's.** The arithmetic is that of L-BFGS-B in
another order in a few places: :math:`M` is applied through :math:`T^{-1}` by
triangular solves in array form, :math:`K` is solved by block elimination (SciPy factors
it as :math:`L E L^\top`), the Gram matrices restricted to the free variables are the
full ones minus the active variables' part, and sums over the n variables are NumPy's
(or the device's) own reductions, never BLAS. The line search takes the same steps as
SciPy's from the same numbers. So on well-conditioned problems each problem takes
SciPy's iterations to within rounding, and its evaluation counts are SciPy's; on
ill-conditioned ones (Rosenbrock's valley in 20 variables) rounding differences may
grow into different paths to the same minimiser. The search's numbers are kept in the
problems' dtype (SciPy computes in float64 always), and a trial point where the
objective is not finite shortens the step (SciPy hands such values to its search).

References:
    R. H. Byrd, P. Lu, J. Nocedal and C. Zhu, "A limited memory algorithm for bound
    constrained optimization", SIAM J. Sci. Comput. 16 (1995), 1190-1208.
    C. Zhu, R. H. Byrd, P. Lu and J. Nocedal, "Algorithm 778: L-BFGS-B", ACM TOMS 23
    (1997), 550-560. J. L. Morales and J. Nocedal, "Remark on Algorithm 778", ACM TOMS
    38 (2011), 7:1-7:4. J. J. Moré and D. J. Thuente, ACM TOMS 20 (1994), 286-307.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from arrayopt.backends import get_backend
from arrayopt.batch._bounds import Box
from arrayopt.batch._linalg import cholesky, problem_last, solve_lower, solve_lower_transposed
from arrayopt.batch._line_search import MoreThuente
from arrayopt.batch._lm import Evaluator, Outputs, block_spans, check_blocks, check_x0, retire, run_blocks
from arrayopt.batch._result import MinimizeResult, Stop
from arrayopt.lbfgsb import cauchy_breakpoints, projected_gradient, step_to_bound

__all__ = ["minimize"]

_RUNNING = 0  # the stop code of a problem still iterating (never returned)
_BIG = 1e10  # L-BFGS-B's largest step
#: problems per pass of the small dense algebra on backends that fit in blocks (CPU caches)
_CHUNK = 2048
#: SciPy's options for L-BFGS-B and their defaults (ftol is SciPy's 1e7 * machine epsilon)
_DEFAULTS: dict[str, Any] = {
    "maxcor": 10,
    "ftol": 2.2204460492503131e-09,
    "gtol": 1e-5,
    "maxiter": 15000,
    "maxfun": 15000,
    "maxls": 20,
    "eps": 1e-8,
}
#: options SciPy accepts and ignores (deprecated printing)
_IGNORED = ("disp", "iprint")


@dataclasses.dataclass(frozen=True)
class Options:
    """The checked options every problem of one call shares.

    Args:
        maxcor: pairs kept.
        ftol: relative reduction of f below which a problem stops.
        gtol: projected-gradient tolerance.
        maxiter: iterations per problem.
        maxfun: evaluations per problem (checked after each iteration).
        maxls: evaluations per line search.

    >>> Options(10, 1e-9, 1e-5, 100, 100, 20).maxcor
    10
    """

    maxcor: int
    ftol: float
    gtol: float
    maxiter: int
    maxfun: int
    maxls: int


# -- the limited memory of every problem ---------------------------------------------------


def _gram(xp: Any, A: Any, B: Any) -> Any:
    """``A B^T`` over the variable axis: (p, n, k) and (q, n, k) give (p, q, k), summed by the library's own sum."""
    return xp.stack([xp.sum(A[i, ...][None, ...] * B, axis=1) for i in range(A.shape[0])])


def _lower(xp: Any, row: Callable[[int], Any], like: Any) -> Any:
    """A (p, p, k) array zero above the diagonal, row i (entries 0..i) from ``row(i)``; ``like`` is (p, p, k)."""
    out = xp.zeros_like(like)
    for i in range(like.shape[0]):
        out[i, : i + 1, ...] = row(i)
    return out


def _gram_lower(xp: Any, A: Any, B: Any) -> Any:
    """The lower triangle of ``A B^T`` over the variable axis, for (p, n, k) arrays (entries above it 0)."""
    like = xp.zeros((A.shape[0], B.shape[0], A.shape[2]), dtype=A.dtype, device=getattr(A, "device", None))
    return _lower(xp, lambda i: xp.sum(A[i, ...][None, ...] * B[: i + 1, ...], axis=1), like)


def _matvec(xp: Any, A: Any, v: Any) -> Any:
    """``A v`` per problem for (p, q, k) and (q, k)."""
    return xp.sum(A * v[None, ...], axis=1)


def _combine(xp: Any, Y: Any, S: Any, a: Any, b: Any) -> Any:
    """``Y^T a + S^T b`` per problem: the slots (m, n, k) weighted by (m, k) and added, an (n, k) array."""
    return xp.sum(Y * a[:, None, :], axis=0) + xp.sum(S * b[:, None, :], axis=0)


def _products(xp: Any, Y: Any, S: Any, v: Any) -> tuple[Any, Any]:
    """``(Y v, S v)`` per problem: each slot's product with v (n, k), two (m, k) arrays."""
    return xp.sum(Y * v[None, ...], axis=1), xp.sum(S * v[None, ...], axis=1)


def _roll(xp: Any, a: Any, axes: tuple[int, ...]) -> Any:
    """``a`` with its slots moved one place towards the start along ``axes`` (the oldest goes last)."""
    for axis in axes:
        head = xp.take(a, xp.asarray([0], device=getattr(a, "device", None)), axis=axis)
        rest = a[1:, ...] if axis == 0 else a[:, 1:, ...]
        a = xp.concat([rest, head], axis=axis)
    return a


@dataclasses.dataclass(frozen=True)
class Memory:
    r"""The last ``m`` pairs of every problem, oldest first, with their Gram matrices.

    ``S``, ``Y``: (m, n, k), slot i of problem b in ``S[i, :, b]``; slots from ``col``
    on are unused (stale, never read unmasked). ``SS``, ``SY``, ``YY``: (m, m, k) with
    entries :math:`s_i^\top s_j`, :math:`s_i^\top y_j`, :math:`y_i^\top y_j`. ``col``:
    (k,) pairs held; ``theta``: (k,) :math:`y^\top y / s^\top y` of the newest pair (1
    without pairs).

    Args:
        S, Y, SS, SY, YY, col, theta: the fields above.

    >>> import numpy as np
    >>> memory = Memory.empty(np, m=3, n=2, k=4, dtype=np.float64, device=None)
    >>> memory.S.shape, memory.col.tolist()
    ((3, 2, 4), [0, 0, 0, 0])
    """

    S: Any
    Y: Any
    SS: Any
    SY: Any
    YY: Any
    col: Any
    theta: Any

    @classmethod
    def empty(cls, xp: Any, m: int, n: int, k: int, dtype: Any, device: Any) -> "Memory":
        """No pairs for ``k`` problems of ``n`` variables, room for ``m``.

        Args:
            xp: the array namespace.
            m: pairs kept (``maxcor``).
            n: variables.
            k: problems.
            dtype: the floating dtype.
            device: the device of the arrays.
        """

        def zeros(*shape: int) -> Any:
            return xp.zeros(shape, dtype=dtype, device=device)

        return cls(
            zeros(m, n, k),
            zeros(m, n, k),
            zeros(m, m, k),
            zeros(m, m, k),
            zeros(m, m, k),
            xp.zeros((k,), dtype=xp.int64, device=device),
            xp.ones((k,), dtype=dtype, device=device),
        )

    def take(self, xp: Any, keep: Any) -> "Memory":
        """The memories of the problems ``keep`` (integer indices)."""
        return Memory(**{f.name: xp.take(getattr(self, f.name), keep, axis=-1) for f in dataclasses.fields(self)})

    def first(self, count: int) -> "Memory":
        """The memories cut to their ``count`` oldest slots (views): exact when no problem holds more pairs."""
        return dataclasses.replace(
            self,
            S=self.S[:count, ...],
            Y=self.Y[:count, ...],
            SS=self.SS[:count, :count, ...],
            SY=self.SY[:count, :count, ...],
            YY=self.YY[:count, :count, ...],
        )

    def part(self, lo: int, hi: int) -> "Memory":
        """The memories of the problems ``lo:hi`` (views)."""
        return Memory(**{f.name: getattr(self, f.name)[..., lo:hi] for f in dataclasses.fields(self)})

    def reset(self, xp: Any, mask: Any) -> "Memory":
        """Forget every pair where ``mask`` (k,) holds (SciPy's restart): ``col = 0``, ``theta = 1``."""
        return dataclasses.replace(self, col=xp.where(mask, 0, self.col), theta=xp.where(mask, 1.0, self.theta))

    def valid(self, xp: Any) -> Any:
        """(m, k): True for the slots holding pairs."""
        m = self.S.shape[0]
        slots = xp.arange(m, dtype=xp.int64, device=getattr(self.col, "device", None))
        return slots[:, None] < self.col[None, :]

    def add(self, xp: Any, s: Any, y: Any, dr: Any, ss: Any, mask: Any, host: bool = False) -> "Memory":
        r"""Keep the pair ``(s, y)`` (n, k) where ``mask`` holds, dropping the oldest of a full memory.

        As SciPy's ``matupd``: the new slot's :math:`s^\top y` is ``dr`` and its
        :math:`s^\top s` is ``ss``, as the line search computed them; :math:`\theta =
        y^\top y / s^\top y`.

        Args:
            xp: the array namespace.
            s: the steps.
            y: the gradient changes.
            dr: :math:`s^\top y` per problem (k,).
            ss: :math:`s^\top s` per problem (k,).
            mask: (k,) where to add.
            host: the arrays are in host memory: the memories are not shifted when none is full.
        """
        m = self.S.shape[0]
        full = ((self.col == m) & mask)[None, None, :]
        S, Y, SS, SY, YY = self.S, self.Y, self.SS, self.SY, self.YY
        if not host or bool(xp.any(full)):
            S = xp.where(full, _roll(xp, S, (0,)), S)
            Y = xp.where(full, _roll(xp, Y, (0,)), Y)
            SS, SY, YY = (xp.where(full, _roll(xp, a, (0, 1)), a) for a in (SS, SY, YY))
        slots = xp.arange(m, dtype=xp.int64, device=getattr(self.col, "device", None))
        here = (slots[:, None] == xp.minimum(self.col, m - 1)[None, :]) & mask[None, :]  # (m, k): the new slot
        S = xp.where(here[:, None, :], s[None, ...], S)
        Y = xp.where(here[:, None, :], y[None, ...], Y)
        ys, ss_new = _products(xp, Y, S, s)  # y_i . s, s_i . s
        yy, sy = _products(xp, Y, S, y)  # y_i . y, s_i . y
        row, column = here[:, None, :], here[None, :, :]
        SS = xp.where(row, ss_new[None, ...], xp.where(column, ss_new[:, None, :], SS))
        SY = xp.where(row, ys[None, ...], xp.where(column, sy[:, None, :], SY))
        YY = xp.where(row, yy[None, ...], xp.where(column, yy[:, None, :], YY))
        SS = xp.where(row & column, ss, SS)
        SY = xp.where(row & column, dr, SY)
        rr = xp.sum(xp.where(here, yy, 0.0), axis=0)
        col = xp.where(mask, xp.minimum(self.col + 1, m), self.col)
        return Memory(S, Y, SS, SY, YY, col, xp.where(mask, rr / dr, self.theta))

    def middle(self, xp: Any) -> "Middle":
        r"""The middle matrix :math:`M` of the compact form, as the factors SciPy's ``bmv`` applies it with."""
        m = self.S.shape[0]
        device = getattr(self.col, "device", None)
        valid = self.valid(xp)
        pair = valid[:, None, :] & valid[None, :, :]
        slots = xp.arange(m, dtype=xp.int64, device=device)
        identity = xp.astype(
            xp.broadcast_to((slots[:, None] == slots[None, :])[:, :, None], self.SS.shape), self.SS.dtype
        )
        D = xp.where(valid, xp.stack([self.SY[i, i, ...] for i in range(m)]), 1.0)
        L = xp.where((slots[:, None] > slots[None, :])[:, :, None] & pair, self.SY, 0.0)
        LDL = _lower(xp, lambda i: xp.sum(L[i, ...][None, ...] * L[: i + 1, ...] / D[None, ...], axis=1), L)
        J, ok = cholesky(xp, xp.where(pair, LDL + self.theta * self.SS, identity))
        return Middle(D, L, J, xp.concat([valid, valid], axis=0), ok)


@dataclasses.dataclass(frozen=True)
class Middle:
    r""":math:`M = \begin{bmatrix} -D & L^\top \\ L & \theta S^\top S \end{bmatrix}^{-1}` per problem, by its factors.

    :math:`D` (m, k) is the diagonal and :math:`L` (m, m, k) the strictly lower part of
    :math:`S^\top Y`; :math:`J` (m, m, k) the Cholesky factor of
    :math:`T = \theta S^\top S + L D^{-1} L^\top = J J^\top` (SciPy's ``formt``), with
    the unused slots' rows and columns those of the identity; ``valid`` (2m, k) marks the
    slots held in :math:`W = [Y, \theta S]`'s order; ``ok`` (k,) is False where
    :math:`T` is not positive definite.

    Args:
        D, L, J, valid, ok: the fields above.

    >>> import numpy as np
    >>> memory = Memory.empty(np, m=2, n=2, k=1, dtype=np.float64, device=None)
    >>> memory = memory.add(np, np.array([[1.0], [0.0]]), np.array([[2.0], [0.0]]), np.array([2.0]),
    ...                     np.array([1.0]), np.array([True]))
    >>> Mv = memory.middle(np).apply(np, np.array([[1.0], [0.0], [1.0], [0.0]]))  # [[-D, 0], [0, theta S'S]]^-1 v
    >>> np.round(Mv[:, 0], 12).tolist()
    [-0.5, 0.0, 0.5, 0.0]
    """

    D: Any
    L: Any
    J: Any
    valid: Any
    ok: Any

    def apply(self, xp: Any, v: Any) -> Any:
        r""":math:`M v` for v (2m, k) (SciPy's ``bmv``): with :math:`x_2 = T^{-1}(v_2 + L D^{-1} v_1)`,
        :math:`M v = [-D^{-1} v_1 + D^{-1} L^\top x_2;\ x_2]`; zero in the unused slots.

        Args:
            xp: the array namespace.
            v: the vectors, rows ordered as :math:`W = [Y, \theta S]`.
        """
        m = self.D.shape[0]
        v = xp.where(self.valid, v, 0.0)
        v1, v2 = v[:m, ...], v[m:, ...]
        x2 = solve_lower_transposed(xp, self.J, solve_lower(xp, self.J, v2 + _matvec(xp, self.L, v1 / self.D)))
        root = xp.sqrt(self.D)
        x1 = -(v1 / root) / root + xp.sum(self.L * x2[:, None, :], axis=0) / self.D
        return xp.where(self.valid, xp.concat([x1, x2], axis=0), 0.0)


# -- one direction per problem -----------------------------------------------------------------


def _cauchy(xp: Any, x: Any, g: Any, box: Box, memory: Memory, M: "Middle", host: bool) -> tuple[Any, Any, Any]:
    r"""The generalized Cauchy point of every problem: ``(xc, c, free)``.

    SciPy's ``cauchy``: along :math:`d` (:math:`-g` on the variables that can move, see
    :func:`arrayopt.lbfgsb.cauchy_breakpoints`), with :math:`p = W^\top d` and
    :math:`c = W^\top (x(t) - x)`, the model's slope and curvature on the first segment
    are :math:`f' = -d^\top d`, :math:`f'' = \theta d^\top d - p^\top M p`; passing the
    breakpoint of variable b (step :math:`\Delta t` after the previous one, distance
    :math:`z_b` to its bound, row :math:`w_b` of W) updates

    .. math::

        f' \leftarrow f' + \Delta t f'' + d_b^2 - \theta d_b z_b + d_b w_b^\top M c', \quad
        f'' \leftarrow \max(\epsilon \theta d^\top d,\ f'' - \theta d_b^2 + 2 d_b w_b^\top M p
        - d_b^2 w_b^\top M w_b),

    with :math:`c' = c + \Delta t\, p`, then :math:`p \leftarrow p - d_b w_b`. A problem
    stops at the first segment where :math:`-f'/f''` is shorter than the segment (after
    its last breakpoint when every moving variable has one: there nothing moves). The
    breakpoints are sorted per problem along the variable axis; the walk takes n steps
    for all problems, each frozen once it has stopped. With ``host`` (arrays in host
    memory, where reading a flag costs nothing) the walk ends as soon as every problem
    has stopped; on a device it always takes the n steps, without reading anything.
    """
    n = x.shape[0]
    eps = float(xp.finfo(x.dtype).eps)
    theta = memory.theta
    d, t, pinned = xp.empty_like(x), xp.empty_like(x), xp.empty_like(x)
    cauchy_breakpoints(xp, d, t, pinned, x, g, box.lower, box.upper)
    pinned = pinned > 0
    valid = memory.valid(xp)
    both = xp.concat([valid, valid], axis=0)
    yd, sd = _products(xp, memory.Y, memory.S, d)
    p = xp.where(both, xp.concat([yd, theta * sd], axis=0), 0.0)
    d2 = xp.sum(d * d, axis=0)
    f1 = -d2
    f2_org = theta * d2
    f2 = f2_org - xp.sum(p * M.apply(xp, p), axis=0)
    dtm = -f1 / f2
    c = xp.zeros_like(p)
    finite = t < math.inf
    nbreak = xp.sum(xp.astype(finite, xp.int64), axis=0)
    bounded = ~xp.any(~finite & (d != 0), axis=0)
    order = xp.argsort(t, axis=0, stable=True)
    ts = xp.take_along_axis(t, order, axis=0)
    ds = xp.take_along_axis(d, order, axis=0)
    zs = xp.take_along_axis(xp.where(d > 0, box.upper, box.lower) - x, order, axis=0)
    m = memory.S.shape[0]
    floor = eps * f2_org
    tj = xp.zeros_like(d2)
    tsum = xp.zeros_like(d2)
    passed = xp.zeros_like(nbreak)
    searching = d2 > 0
    for j in range(n):
        dt = ts[j, ...] - tj
        searching = searching & ~(dtm < dt)
        if host and not bool(xp.any(searching)):
            break
        dibp, zibp = ds[j, ...], zs[j, ...]
        dibp2 = dibp * dibp
        f1_next = f1 + dt * f2 + dibp2 - theta * dibp * zibp
        f2_next = f2 - theta * dibp2
        c_next = c + dt * p
        variable = xp.broadcast_to(order[j, ...][None, None, :], (m, 1, order.shape[1]))
        yb = xp.take_along_axis(memory.Y, variable, axis=1)[:, 0, :]
        sb = xp.take_along_axis(memory.S, variable, axis=1)[:, 0, :]
        wbp = xp.where(both, xp.concat([yb, theta * sb], axis=0), 0.0)
        v = M.apply(xp, wbp)
        wmc, wmp, wmw = xp.sum(c_next * v, axis=0), xp.sum(p * v, axis=0), xp.sum(wbp * v, axis=0)
        p_next = p - dibp * wbp
        f1_next = f1_next + dibp * wmc
        f2_next = xp.maximum(floor, f2_next + 2.0 * dibp * wmp - dibp2 * wmw)
        dtm_next = xp.where((passed + 1 == nbreak) & bounded, 0.0, -f1_next / f2_next)
        f1, f2, dtm = (xp.where(searching, a, b) for a, b in ((f1_next, f1), (f2_next, f2), (dtm_next, dtm)))
        c, p = xp.where(searching, c_next, c), xp.where(searching, p_next, p)
        tj = xp.where(searching, ts[j, ...], tj)
        tsum = xp.where(searching, tsum + dt, tsum)
        passed = xp.where(searching, passed + 1, passed)
    step = xp.where(d2 > 0, xp.maximum(dtm, 0.0), 0.0)
    crossed = xp.argsort(order, axis=0) < passed[None, :]
    at_bound = xp.where(d > 0, box.upper, box.lower)
    xc = xp.where(crossed, at_bound, box.project(x + (tsum + step) * d))
    c = xp.where(d2 > 0, c + step * p, 0.0)
    return xc, c, ~pinned & ~crossed


def _subspace(
    xp: Any,
    x: Any,
    g: Any,
    xc: Any,
    c: Any,
    free: Any,
    memory: Memory,
    M: "Middle",
    box: "Box | None",
    host: bool = False,
) -> tuple[Any, Any]:
    r"""The subspace minimiser from the Cauchy point, in the box: ``(z, ok)``, ok False where K is singular.

    :math:`\hat r = Z^\top(-\theta (x^c - x) - g + W M c)` (SciPy's ``cmprlb``),
    :math:`v = K^{-1} W^\top Z \hat r` and :math:`\hat d = (\hat r + Y^\top v_1 / \theta +
    S^\top v_2) / \theta` (``subsm``), with :math:`K` solved by block elimination:
    :math:`-K_{11} = L_1 L_1^\top`, :math:`E = L_1^{-1} K_{12}`,
    :math:`K_{22} + E^\top E = L_2 L_2^\top`. Then Morales and Nocedal's projection, or
    the backtrack along :math:`\hat d` when the projected point is not downhill.
    Without bounds (or, with ``host``, where no problem has an active variable: reading
    that costs nothing in host memory) :math:`K = \begin{bmatrix} -P & -R^\top \\ -R & 0
    \end{bmatrix}` with :math:`P = D + Y^\top Y/\theta` and :math:`R` the upper triangle of
    :math:`S^\top Y`, solved without factoring: :math:`v_1 = -R^{-1} w_2`,
    :math:`v_2 = -R^{-T}(w_1 + P v_1)` (SciPy factors this K too; the same solution, other
    rounding).
    """
    n = x.shape[0]
    m = memory.S.shape[0]
    theta = memory.theta
    Y, S = memory.Y, memory.S
    device = getattr(x, "device", None)
    valid = memory.valid(xp)
    pair = valid[:, None, :] & valid[None, :, :]
    slots = xp.arange(m, dtype=xp.int64, device=device)
    eye = (slots[:, None] == slots[None, :])[:, :, None]
    nothing_active = box is None or (host and not bool(xp.any(~free)))  # host backends look
    if nothing_active:
        z_yy, z_sy, a_sy, a_ss = memory.YY, memory.SY, None, None
    else:  # the active variables' part of the Gram matrices, and the free part by difference
        inactive = xp.astype(~free, x.dtype)[None, ...]
        ya, sa = Y * inactive, S * inactive
        a_sy, a_ss = _gram(xp, sa, Y), _gram_lower(xp, sa, S)
        z_yy, z_sy = memory.YY - _gram_lower(xp, ya, Y), memory.SY - a_sy
    D = xp.stack([memory.SY[i, i, ...] for i in range(m)])
    identity = xp.astype(eye, x.dtype)
    minus_k11 = xp.where(pair, z_yy / theta + identity * D[None, ...], identity)

    r = -theta * (xc - x) - g
    if box is not None:  # without bounds c = 0
        mc = M.apply(xp, c)
        r = r + _combine(xp, Y, S, mc[:m, ...], theta * mc[m:, ...])
    r = xp.where(free, r, 0.0)
    wy, ws = _products(xp, Y, S, r)
    w1, w2 = xp.where(valid, wy, 0.0), xp.where(valid, theta * ws, 0.0)
    if nothing_active:
        # K = [[-P, -R^T], [-R, 0]] (P = D + Y'Y / theta, R the upper triangle of S'Y):
        # v1 = -R^-1 w2, v2 = -R^-T (w1 + P v1); R's diagonal is D > 0, nothing can fail
        lower = (slots[:, None] >= slots[None, :])[:, :, None]
        r_t = xp.where(pair, xp.where(lower, xp.permute_dims(z_sy, (1, 0, 2)), 0.0), identity)
        v1 = -solve_lower_transposed(xp, r_t, w2)
        v2 = -solve_lower(xp, r_t, w1 + _matvec(xp, minus_k11, v1))
        ok = xp.ones(theta.shape, dtype=xp.bool, device=device)
    else:
        upper = (slots[:, None] < slots[None, :])[:, :, None]
        assert a_sy is not None and a_ss is not None
        k12 = xp.where(pair, xp.where(upper, xp.permute_dims(a_sy, (1, 0, 2)), -xp.permute_dims(z_sy, (1, 0, 2))), 0.0)
        k22 = xp.where(pair, theta * a_ss, identity)
        L1, ok1 = cholesky(xp, minus_k11)
        E = solve_lower(xp, L1, k12)
        schur = k22 + _lower(xp, lambda i: xp.sum(E[:, i, None, ...] * E[:, : i + 1, ...], axis=0), E)
        L2, ok2 = cholesky(xp, schur)
        y1 = solve_lower(xp, L1, w1)
        v2 = solve_lower_transposed(xp, L2, solve_lower(xp, L2, w2 + xp.sum(E * y1[:, None, :], axis=0)))
        v1 = -solve_lower_transposed(xp, L1, y1 - _matvec(xp, E, v2))
        ok = ok1 & ok2
    v1, v2 = xp.where(valid, v1, 0.0), xp.where(valid, v2, 0.0)
    dhat = xp.where(free, (r + _combine(xp, Y, S, v1 / theta, v2)) * (1 / theta), 0.0)
    z = xc + dhat
    if box is None:
        return z, ok

    projected = box.project(z)
    hit = xp.any(free & ((projected == box.lower) | (projected == box.upper)), axis=0)
    downhill = xp.sum((projected - x) * g, axis=0) <= 0
    toward = xp.where(dhat < 0, box.lower - xc, box.upper - xc)
    moving = free & (dhat != 0)
    ratio = xp.where(moving, toward / xp.where(moving, dhat, 1.0), math.inf)
    ratio = xp.where(ratio < 0, 0.0, ratio)
    alpha = xp.minimum(xp.min(ratio, axis=0), 1.0)
    limit = xp.argmin(ratio, axis=0)
    rows = xp.arange(n, dtype=limit.dtype, device=device)
    stopped = (rows[:, None] == limit[None, :]) & (alpha < 1.0)[None, :]
    back = xp.where(stopped, xp.where(dhat > 0, box.upper, box.lower), xc + alpha * dhat)
    return xp.where(~hit | downhill, projected, box.project(back)), ok


def _direction(xp: Any, x: Any, g: Any, box: "Box | None", memory: Memory, host: bool) -> tuple[Any, Any]:
    """Steps 1-3 for every problem: the subspace minimiser ``z`` (n, k) and ``ok`` (k,) (False: forget the pairs).

    With ``host`` (arrays in host memory, where reading a number costs nothing) the
    memories are cut to the most pairs any of these problems holds, so that early
    iterations work on smaller matrices; on a device the full ``maxcor`` slots are used.
    """
    if host:
        memory = memory.first(max(int(xp.max(memory.col)), 1))
    M = memory.middle(xp)
    ok = M.ok
    pairs = memory.col > 0
    if box is None:
        device = getattr(x, "device", None)
        c = xp.zeros((2 * memory.S.shape[0], x.shape[1]), dtype=x.dtype, device=device)
        free = xp.ones(x.shape, dtype=xp.bool, device=device)
        xc = xp.where(pairs, x, x - g)  # without pairs the Cauchy point is x - g (theta = 1, no breakpoints)
    else:
        xc, c, free = _cauchy(xp, x, g, box, memory, M, host)
        skip = pairs & ~_constrained(xp, box)  # an unbounded problem with pairs goes straight to the subspace step
        xc, c, free = xp.where(skip, x, xc), xp.where(skip, 0.0, c), xp.where(skip, True, free)
    z, solved = _subspace(xp, x, g, xc, c, free, memory, M, box, host)
    use = pairs & xp.any(free, axis=0)
    return xp.where(use, z, xc), ok & (solved | ~use)


def _directions(xp: Any, x: Any, g: Any, box: "Box | None", memory: Memory, chunk: int | None) -> tuple[Any, Any]:
    """:func:`_direction` over chunks of ``chunk`` problems (None: all at once, on a device)."""
    k = x.shape[1]
    host = chunk is not None
    if chunk is None or k <= chunk:
        return _direction(xp, x, g, box, memory, host)
    parts = [
        _direction(
            xp,
            x[:, lo : lo + chunk],
            g[:, lo : lo + chunk],
            None if box is None else box.part(lo, lo + chunk),
            memory.part(lo, lo + chunk),
            host,
        )
        for lo in range(0, k, chunk)
    ]
    return xp.concat([z for z, _ in parts], axis=-1), xp.concat([ok for _, ok in parts], axis=-1)


def _constrained(xp: Any, box: Box) -> Any:
    """(k,) or (1,): whether a problem has any finite bound (SciPy's ``cnstnd``)."""
    return xp.any((box.lower > -math.inf) | (box.upper < math.inf), axis=0)


def _boxed(xp: Any, box: Box) -> Any:
    """(k,) or (1,): whether every variable of a problem has both bounds (SciPy's ``boxed``)."""
    return xp.all((box.lower > -math.inf) & (box.upper < math.inf), axis=0)


def _optimality(xp: Any, x: Any, g: Any, box: "Box | None") -> Any:
    r""":math:`\|P(x - g) - x\|_\infty` per problem (:math:`\|g\|_\infty` without bounds)."""
    if box is None:
        return xp.max(xp.abs(g), axis=0)
    out = xp.empty_like(x)
    projected_gradient(xp, out, x, g, box.lower, box.upper)
    return xp.max(out, axis=0)


# -- calling the user's function ----------------------------------------------------------------


@dataclasses.dataclass
class GradientEvaluator(Evaluator):
    """Calls ``fun`` (and ``jac``) for the running problems: values (k,) and gradients (n, k).

    ``jac`` is True (``fun`` returns ``(f, g)``), a callable returning the gradients, or
    None (forward differences by :meth:`Evaluator.jacobian`, one batched evaluation per
    variable, with the absolute ``step`` when given). Shapes as in :class:`Evaluator`,
    with one value per problem instead of m residuals.

    Args:
        args: :class:`Evaluator`'s fields (``m`` unused; ``step``: L-BFGS-B's ``eps``).

    >>> import numpy as np
    >>> ev = GradientEvaluator(np, lambda x, rows: (np.sum(x * x, axis=1), 2 * x), True, True, None, np.float64, 2, 1)
    >>> f, g = ev.value_and_gradient(np.array([[1.0], [3.0]]), np.array([0]))
    >>> f.tolist(), g[:, 0].tolist()
    ([10.0], [2.0, 6.0])
    """

    def values(self, x: Any, rows: Any, whole: bool = False) -> Any:
        """The values at the points ``x`` (n, k), as a (1, k) array (what the differences take)."""
        k = x.shape[1]
        return self.xp.reshape(self._value(self._call(self.fun, x, rows, whole), rows, whole, k), (1, k))

    def _value(self, out: Any, rows: Any, whole: bool, k: int) -> Any:
        return self._rows(out, rows, whole, "fun", k, ())

    def _gradient(self, out: Any, rows: Any, whole: bool, k: int, name: str) -> Any:
        return problem_last(self.xp, self._rows(out, rows, whole, name, k, (self.n,)), (1, 0))

    def value_and_gradient(self, x: Any, rows: Any, whole: bool = False, box: "Box | None" = None) -> tuple[Any, Any]:
        """The values (k,) and gradients (n, k) at the points ``x`` (n, k) (``box``: where differences stay)."""
        k = x.shape[1]
        out = self._call(self.fun, x, rows, whole)
        if self.jac is True:
            if not isinstance(out, tuple | list) or len(out) != 2:
                raise TypeError(f"with jac=True, fun must return a pair (values, gradients), got {type(out).__name__}")
            return self._value(out[0], rows, whole, k), self._gradient(out[1], rows, whole, k, "fun's gradient")
        f = self._value(out, rows, whole, k)
        if callable(self.jac):
            return f, self._gradient(self._call(self.jac, x, rows, whole), rows, whole, k, "jac")
        return f, self.jacobian(x, rows, self.xp.reshape(f, (1, k)), box, whole)[:, 0, :]


# -- the iteration ----------------------------------------------------------------------------


def solve_block(
    xp: Any,
    evaluator: GradientEvaluator,
    x0: Any,
    rows: Any,
    box: "Box | None",
    options: Options,
    outputs: Outputs,
    whole: bool,
    first: int,
    chunk: int | None,
) -> None:
    """Run L-BFGS-B for the problems ``rows`` from ``x0`` (n, k), in the box, to the end; store the results.

    Args:
        xp: the array namespace.
        evaluator: calls the user's functions.
        x0: starting points, (n, k), inside the box.
        rows: the problems' positions in the batch, (k,).
        box: their bounds, or None.
        options: the shared options.
        outputs: where the block's results go.
        whole: the rows are all B problems in order.
        first: the position of the block's first problem in the batch.
        chunk: problems per pass of the dense algebra (None: all).
    """
    n, k = x0.shape
    total = k
    if k == 0:
        return
    dtype = x0.dtype
    eps = float(xp.finfo(dtype).eps)
    device = getattr(x0, "device", None)
    index = xp.int64
    per_point = 1 if evaluator.jac is not None else n + 1  # forward differences: n more evaluations

    x = x0
    f, g = evaluator.value_and_gradient(x, rows, whole, box)
    ones = xp.ones((k,), dtype=index, device=device)
    nfev, njev, nit = ones * per_point, ones, ones * 0
    running = ones * _RUNNING
    stop = xp.where(xp.isfinite(f) & xp.all(xp.isfinite(g), axis=0), running, int(Stop.NONFINITE))
    stop = xp.where((stop == _RUNNING) & (_optimality(xp, x, g, box) <= options.gtol), int(Stop.GTOL), stop)
    memory = Memory.empty(xp, options.maxcor, n, k, dtype, device)
    need = xp.ones((k,), dtype=xp.bool, device=device)  # starts an iteration this round
    search: MoreThuente | None = None
    z = d = x
    finished: list[tuple[Any, dict[str, Any]]] = []

    while True:
        # -- the one host read: how many problems still run, and how many start an iteration --
        running = stop == _RUNNING
        need = need & running
        counts = int(xp.sum(xp.astype(running, index)) * (k + 1) + xp.sum(xp.astype(need, index)))
        still, starting = divmod(counts, k + 1)
        if still < k:
            fields = {"x": x, "fun": f, "jac": g, "stop": stop, "nfev": nfev, "njev": njev, "nit": nit}
            keep = retire(xp, running, still, rows, first, fields, finished)
            x, g, z, d = (xp.take(a, keep, axis=-1) for a in (x, g, z, d))
            f, nfev, njev, nit, stop, rows, need = (
                xp.take(a, keep, axis=0) for a in (f, nfev, njev, nit, stop, rows, need)
            )
            memory = memory.take(xp, keep)
            if search is not None:
                search = search.take(xp, keep)
            if box is not None:
                box = box.take(xp, keep)
            k = still
            whole = False
        if k == 0:
            outputs.store(first, first + total, finished)
            return

        # -- new iterations: direction (for the problems starting one only), first step -------
        if starting:
            if starting * 4 > k * 3:  # most start: computing for all is cheaper than gathering
                z_new, ok = _directions(xp, x, g, box, memory, chunk)
            else:
                order = xp.argsort(xp.astype(~need, xp.int8), stable=True)
                chosen = order[:starting]
                z_some, ok_some = _directions(
                    xp,
                    xp.take(x, chosen, axis=1),
                    xp.take(g, chosen, axis=1),
                    None if box is None else box.take(xp, chosen),
                    memory.take(xp, chosen),
                    chunk,
                )
                back = xp.argsort(order)  # where each problem went: the others get placeholders
                z_new = xp.take(xp.concat([z_some, xp.take(x, order[starting:], axis=1)], axis=1), back, axis=1)
                ok = xp.take(xp.concat([ok_some, xp.take(need, order[starting:], axis=0)], axis=0), back, axis=0)
            d_new = z_new - x
            gd = xp.sum(g * d_new, axis=0)
            retry = need & (memory.col > 0) & (~ok | ~(gd < 0))
            memory = memory.reset(xp, retry)
            steepest = x - g if box is None else box.project(x - g)  # the direction after forgetting the pairs
            z_new = xp.where(retry, steepest, z_new)
            d_new = z_new - x
            gd = xp.sum(g * d_new, axis=0)
            # no descent even along -g (the projected gradient underflows): stop; evaluated once more, not counted
            stop = xp.where(need & ~(gd < 0), int(Stop.LINE_SEARCH), stop)
            if box is None:
                stpmax = xp.full_like(gd, _BIG)
                first_step = nit == 0
            else:
                reach = xp.empty_like(x)
                step_to_bound(xp, reach, x, d_new, box.lower, box.upper)
                furthest = xp.maximum(xp.minimum(xp.min(reach, axis=0), _BIG), 0.0)
                constrained = _constrained(xp, box)
                stpmax = xp.where(constrained, xp.where(nit == 0, 1.0, xp.maximum(furthest, 1.0)), _BIG)
                first_step = (nit == 0) & ~_boxed(xp, box)
            stp = xp.where(first_step, xp.minimum(1 / xp.sqrt(xp.sum(d_new * d_new, axis=0)), stpmax), 1.0)
            started = MoreThuente.start(xp, stp, f, gd, stpmax)
            search = started if search is None else started.select(xp, need, search)
            z = xp.where(need, z_new, z)
            d = xp.where(need, d_new, d)
        assert search is not None

        # -- evaluate every running problem at its trial step ----------------------------------
        stp = search.stp
        trial = xp.where(stp == 1.0, z, x + stp * d)
        if box is not None:
            trial = box.project(trial)
        f_trial, g_trial = evaluator.value_and_gradient(trial, rows, whole, box)
        live = stop == _RUNNING
        counted = xp.astype(live, index)
        nfev, njev = nfev + per_point * counted, njev + counted
        slope = xp.where(xp.isfinite(f_trial), xp.sum(g_trial * d, axis=0), math.nan)
        gd0 = search.ginit
        search, accept, fail = search.advance(xp, f_trial, slope, options.maxls)
        accept, fail = accept & live, fail & live

        # -- a failed search: forget the pairs and restart, or stop without any ---------------
        stop = xp.where(fail & (memory.col == 0), int(Stop.LINE_SEARCH), stop)
        memory = memory.reset(xp, fail)

        # -- an accepted step: move, test, keep the pair ------------------------------------
        f_old, g_old = f, g
        x = xp.where(accept, trial, x)
        f = xp.where(accept, f_trial, f)
        g = xp.where(accept, g_trial, g)
        nit = nit + xp.astype(accept, index)
        scale = xp.maximum(xp.maximum(xp.abs(f_old), xp.abs(f)), 1.0)
        code = xp.where(f_old - f <= options.ftol * scale, int(Stop.FTOL), stop * 0 + _RUNNING)
        code = xp.where(_optimality(xp, x, g, box) <= options.gtol, int(Stop.GTOL), code)
        code = xp.where(nfev > options.maxfun, int(Stop.MAXFUN), code)
        code = xp.where(nit >= options.maxiter, int(Stop.MAXITER), code)
        stop = xp.where(accept, code, stop)
        unit = stp == 1.0
        dr = xp.where(unit, slope - gd0, (slope - gd0) * stp)
        ddum = xp.where(unit, -gd0, -gd0 * stp)
        dtd = xp.sum(d * d, axis=0)
        keep_pair = accept & (code == _RUNNING) & (dr > eps * ddum)
        s = xp.where(unit, d, stp * d)
        memory = memory.add(xp, s, g - g_old, dr, xp.where(unit, dtd, stp * stp * dtd), keep_pair, chunk is not None)
        need = accept | fail


# -- the public function ---------------------------------------------------------------------


def minimize(
    fun: Callable[..., Any],
    x0: Any,
    jac: "Callable[..., Any] | bool | str | None" = True,
    method: str = "l-bfgs-b",
    bounds: Any = None,
    options: dict[str, Any] | None = None,
    pass_indices: bool = False,
    *,
    block_size: int | None = None,
    workers: int = 1,
) -> MinimizeResult:
    r"""Minimise B independent smooth functions at once, each by L-BFGS-B (SciPy's ``minimize`` per problem).

    Problem b minimises :math:`f_b(x)` over :math:`x \in \mathbb{R}^n` subject to
    :math:`l_b \le x \le u_b` by the limited-memory BFGS method with bounds, with its
    own memory, line search, counts and stopping tests (the module documentation has the
    algorithm and where its arithmetic differs from SciPy's). A problem whose objective
    is not finite at its start, or whose line search fails, stops alone; the others go
    on. Floating-point warnings are silenced during the run (NumPy's ``errstate``):
    trial points where some problems overflow are handled per problem.

    Args:
        fun: the objectives. With ``jac=True`` (the default), ``fun(x)`` gets the
            (B, n) stack and returns ``(f, g)``: the values, shape (B,), and the
            gradients, (B, n). With ``pass_indices=True`` it is called as
            ``fun(x_rows, rows)`` with the (k, n) points of the k problems still running
            and their (k,) positions in the batch, and returns (k,) and (k, n). Do not
            modify ``x``.
        x0: starting points, shape (B, n), of any array library (NumPy, CuPy,
            array-API); its floating dtype is the working precision (integers become
            float64). Points outside the bounds are projected into them, as SciPy does.
        jac: ``True`` if ``fun`` returns the gradients with the values; a callable with
            ``fun``'s signature returning the (B, n) gradients (``fun`` then returns the
            values only); ``"2-point"`` for forward differences with SciPy's relative
            steps :math:`\sqrt{\epsilon}\,\mathrm{sign}(x)\max(1, |x|)`; ``None`` or
            ``False`` for forward differences with the absolute step ``eps`` (option,
            1e-8), as SciPy's L-BFGS-B without ``jac``. Differences cost one batched
            evaluation of ``fun`` per variable, steps turned around at the bounds, and
            are counted in ``nfev``.
        method: ``"l-bfgs-b"`` (also ``"L-BFGS-B"``, ``"lbfgsb"``), or ``"lbfgs"``
            (also ``"L-BFGS"``): the same iteration without bounds (SciPy's L-BFGS-B on
            an unbounded problem; not :class:`arrayopt.LBFGS`'s strong-Wolfe variant),
            which refuses ``bounds``.
        bounds: ``(lb, ub)``, each a number or an array broadcastable to (B, n) (shape
            (n,) for bounds shared by all problems; infinities for none), or a
            ``scipy.optimize.Bounds``; None for no bounds. ``lb == ub`` fixes a variable.
        options: SciPy's L-BFGS-B options: ``maxcor`` (pairs kept, 10), ``ftol``
            (2.2e-9), ``gtol`` (1e-5), ``maxiter`` (15000), ``maxfun`` (15000),
            ``maxls`` (evaluations per line search, 20), ``eps`` (the absolute
            difference step of ``jac=None``, 1e-8); ``disp`` and ``iprint`` are
            accepted and ignored. SciPy's ``finite_diff_rel_step`` and ``callback`` are
            not supported.
        pass_indices: call ``fun`` (and ``jac``) with only the running rows and their
            indices (see ``fun``), so that finished problems cost nothing. Without it
            they get the whole (B, n) stack, in which finished problems keep their last
            points and their outputs are ignored.
        block_size: with ``pass_indices=True``, minimise the batch in blocks of this many
            problems, one after another (or ``workers`` at a time). Default: the
            backend's choice (8192 on NumPy, the whole batch on CuPy and others).
        workers: with ``pass_indices=True``, threads minimising blocks side by side
            (``fun`` is then called from several threads at once).

    Returns:
        MinimizeResult: ``x`` (B, n), ``fun`` (B,), ``jac`` (B, n), ``nit``, ``nfev``,
        ``njev``, ``status`` (SciPy's: 0 converged, 1 ``maxiter``/``maxfun``, 2
        otherwise), ``success``, ``stop`` (a :class:`arrayopt.batch.Stop` code: why),
        each with a leading batch axis, on ``x0``'s device and in its dtype;
        ``message(i)`` is problem i's SciPy message. The 2-D fields are transposed views
        of arrays stored problem axis last. There is no ``hess_inv``.

    Raises:
        TypeError: ``fun`` not callable, ``x0`` not an array, an unknown option, or
            ``fun``/``jac`` returning something that is not an array (or pair).
        ValueError: malformed arguments (named in the message), ``bounds`` with
            ``method="lbfgs"``, or ``fun``/``jac`` returning the wrong shape.

    Example (Rosenbrock's function from four starts, two of them in boxes that bind):

    >>> import numpy as np
    >>> from arrayopt import batch
    >>> def rosen(x):
    ...     a, b = x[:, :-1], x[:, 1:]
    ...     f = np.sum(100.0 * (b - a * a) ** 2 + (1 - a) ** 2, axis=1)
    ...     g = np.zeros_like(x)
    ...     g[:, :-1] = -400 * a * (b - a * a) - 2 * (1 - a)
    ...     g[:, 1:] += 200 * (b - a * a)
    ...     return f, g
    >>> x0 = np.array([[-1.2, 1.0], [2.0, 2.0], [-1.2, 1.0], [0.0, 0.0]])
    >>> upper = np.array([[np.inf, np.inf], [np.inf, np.inf], [0.5, np.inf], [np.inf, 0.25]])
    >>> res = batch.minimize(rosen, x0, bounds=(-np.inf, upper))
    >>> np.round(res.x, 4).tolist()
    [[1.0, 1.0], [1.0, 1.0], [0.5, 0.25], [0.5049, 0.25]]
    >>> res.status.tolist(), res.message(2)
    ([0, 0, 0, 0], 'CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL')
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    xp, x0, dtype = check_x0(x0)
    count, n = x0.shape
    lbfgs = _check_method(method)
    if jac is False:
        jac = None
    if not (jac is None or jac is True or callable(jac) or jac == "2-point"):
        raise ValueError(f"jac must be True, a callable, None, False or '2-point', got {jac!r}")
    chosen = _check_options(options)
    check_blocks(pass_indices, block_size, workers)
    if bounds is not None and lbfgs:
        raise ValueError("method 'lbfgs' takes no bounds: use method='l-bfgs-b'")
    box = None if bounds is None else Box.parse(xp, bounds, n, count, dtype, like=x0)
    if box is not None:
        _refuse_empty(xp, box)
    settings = Options(*(chosen[key] for key in ("maxcor", "ftol", "gtol", "maxiter", "maxfun", "maxls")))

    start = problem_last(xp, xp.astype(x0, dtype), (1, 0))
    if box is not None:
        start = box.project(start)
    stack = None if pass_indices else xp.astype(x0, dtype, copy=True)
    evaluator = GradientEvaluator(
        xp,
        fun,
        None if jac == "2-point" else jac,
        pass_indices,
        stack,
        dtype,
        n,
        count,
        step=chosen["eps"] if jac is None else None,
    )
    outputs = Outputs(xp, x0, count, n, dtype)
    outputs.allocate(
        {name: (n,) for name in ("x", "jac")}
        | {"fun": ()}
        | {name: ((), xp.int64) for name in ("stop", "nfev", "njev", "nit")}
    )
    backend = get_backend(x0)
    chunk = _CHUNK if backend.fit_block else None
    rows = xp.arange(count, dtype=xp.int64, device=getattr(x0, "device", None))

    def block(span: tuple[int, int]) -> None:
        lo, hi = span
        part = rows[lo:hi]
        with backend.quiet():
            solve_block(
                xp,
                evaluator,
                start[:, lo:hi],
                part,
                None if box is None else box.take(xp, part),
                settings,
                outputs,
                whole=(lo, hi) == (0, count),
                first=lo,
                chunk=chunk,
            )

    if count:
        run_blocks(block_spans(x0, pass_indices, block_size, workers), workers, block)
    fields = outputs.fields()
    code = fields["stop"]
    status = xp.where((code == int(Stop.GTOL)) | (code == int(Stop.FTOL)), code * 0, 2)
    status = xp.where((code == int(Stop.MAXITER)) | (code == int(Stop.MAXFUN)), 1, status)
    return MinimizeResult(**fields, status=status, success=status == 0)


def _check_method(method: Any) -> bool:
    """True for ``"lbfgs"``, False for ``"l-bfgs-b"``; ValueError otherwise."""
    key = method.lower().replace("-", "").replace("_", "") if isinstance(method, str) else None
    if key not in ("lbfgsb", "lbfgs"):
        raise ValueError(f"method must be 'l-bfgs-b' or 'lbfgs', got {method!r}")
    return key == "lbfgs"


def _check_options(options: Any) -> dict[str, Any]:
    """SciPy's L-BFGS-B options with the defaults filled in, checked (TypeError for unknown ones)."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    chosen = dict(_DEFAULTS)
    for key, value in options.items():
        if key in _IGNORED:
            continue
        if key not in chosen:
            raise TypeError(f"unknown option {key!r}; valid: {sorted(set(chosen) | set(_IGNORED))}")
        chosen[key] = value
    for key in ("maxcor", "maxls"):
        value = chosen[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    for key in ("maxiter", "maxfun"):
        value = chosen[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    for key in ("ftol", "gtol"):
        value = chosen[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
    value = chosen["eps"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"eps must be a finite number > 0, got {value!r}")
    chosen["ftol"], chosen["gtol"], chosen["eps"] = float(chosen["ftol"]), float(chosen["gtol"]), float(value)
    return chosen


def _refuse_empty(xp: Any, box: Box) -> None:
    """A lower bound of +inf or an upper bound of -inf leaves no feasible point: ValueError."""
    for name, side, infinity in (("lb", box.lower, math.inf), ("ub", box.upper, -math.inf)):
        if bool(xp.any(side == infinity)):
            raise ValueError(f"bounds: {name} contains {infinity}: no value satisfies it")

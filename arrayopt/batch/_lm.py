r"""Batched Levenberg-Marquardt with box constraints: :func:`least_squares`.

Each of B problems minimises its own objective over its own box; they share nothing but
the calls to the user's functions. One iteration, for every problem still running:

1. the gradient :math:`g` and Gauss-Newton matrix :math:`A` at :math:`x` are known (for
   least squares :math:`g = J^T r`, :math:`A = J^T J`); variables at a bound whose
   gradient pushes outward are *binding* and held fixed;
2. the free variables solve the damped normal equations
   :math:`(A_{FF} + \lambda D_F^2) p_F = -g_F` by a batched Cholesky factorisation, and
   the trial point is the projection :math:`x_t = P_{[l,u]}(x + p)` (a projected
   Levenberg-Marquardt step: Kanzow, Yamashita and Fukushima, J. Comput. Appl. Math.
   172:375, 2004; binding sets as in Bertsekas, SIAM J. Control Optim. 20:221, 1982);
3. with :math:`s = x_t - x`, the gain ratio :math:`\rho = (F(x) - F(x_t)) /
   (-g^T s - \tfrac12 s^T A s)` decides (the reduction summed term by term, so that
   float32 does not lose it to cancellation): the step is taken if :math:`\rho > 10^{-4}`,
   and the damping follows Nielsen's rule (Nielsen, IMM-REP-1999-05; Madsen, Nielsen and
   Tingleff, *Methods for Non-Linear Least Squares Problems*, IMM, 2004):
   :math:`\lambda \leftarrow \lambda \max(\tfrac13, 1 - (2\rho - 1)^3)` after a step
   taken, :math:`\lambda \leftarrow \lambda \nu,\ \nu \leftarrow 2 \nu` after one
   refused. :math:`D` is MINPACK's scaling (Moré, LNM 630, 1978): the running maximum of
   the column norms of J (``x_scale="jac"``), or ``1 / x_scale``;
4. SciPy's ``trf`` stopping tests, per problem: ``gtol`` on
   :math:`\lVert g \odot v\rVert_\infty` (v the Coleman-Li vector of the bounds) before
   each step; ``ftol`` (:math:`\Delta F < \mathrm{ftol}\, F` with :math:`\rho > 1/4`) and
   ``xtol`` (:math:`\lVert s\rVert < \mathrm{xtol} (\mathrm{xtol} + \lVert x\rVert)`)
   after each finite trial; ``max_nfev``.

Problems that stop leave the working set (their state is compacted away), so finished
problems cost nothing; the only host read per iteration is the number still running.
"""

import dataclasses
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from arrayopt.backends import get_backend, is_array
from arrayopt.batch._bounds import Box
from arrayopt.batch._linalg import cholesky_solve, gram, jt_dot, packed_quadratic, problem_last, tri
from arrayopt.batch._result import LeastSquaresResult, Status

__all__ = ["least_squares"]

_RUNNING = 100  # status of a problem still iterating (never returned)
_TAU = 1e-3  # initial damping relative to the largest scaled diagonal of A (Madsen et al. 2004)
_ACCEPT = 1e-4  # smallest gain ratio of a step taken (MINPACK's p0001)
_EPS64 = 2.220446049250313e-16  # SciPy checks the tolerances against float64's epsilon
#: batches are split for more workers only into blocks of at least this many problems
#: (smaller blocks cost more in per-call overhead than a second thread gains)
_SMALLEST_SHARED_BLOCK = 2048


# -- objectives: what the evaluated values mean ------------------------------------------


class LeastSquares:
    r"""Least squares: the values are residuals r, :math:`F = \tfrac12 \sum r^2`, :math:`g = J^T r`, :math:`A = J^T J`.

    >>> import numpy as np
    >>> cost, finite = LeastSquares().cost(np, np.array([[3.0], [4.0]]), ())
    >>> cost.tolist(), finite.tolist()
    ([12.5], [True])
    """

    def cost(self, xp: Any, values: Any, data: tuple[Any, ...]) -> tuple[Any, Any]:
        """Cost per problem and whether it is finite, from values of shape (m, B)."""
        cost = 0.5 * xp.sum(values * values, axis=0)
        return cost, xp.isfinite(cost)

    def reduction(self, xp: Any, values: Any, trial: Any, data: tuple[Any, ...]) -> Any:
        r""":math:`F(x) - F(x_t) = \tfrac12 \sum (r - r_t)(r + r_t)`, without the cancellation of two sums."""
        return 0.5 * xp.sum((values - trial) * (values + trial), axis=0)

    def normal(self, xp: Any, values: Any, J: Any, data: tuple[Any, ...]) -> tuple[Any, Any]:
        """The packed Gauss-Newton matrix and the gradient."""
        return gram(xp, J), jt_dot(xp, J, values)

    def fisher_weights(self, xp: Any, values: Any, data: tuple[Any, ...]) -> Any:
        """Per-residual weights of the information matrix :math:`J^T W J` (None: W = I)."""
        return None


class Poisson:
    r"""Poisson maximum likelihood for counts y: the values are the model :math:`f > 0`.

    .. math::
        F = \sum_i f_i - y_i - y_i \log(f_i / y_i), \qquad
        g = J^T (1 - y / f), \qquad A = J^T \operatorname{diag}(y / f^2) J,

    half the Poisson deviance, its gradient, and the Gauss-Newton-like matrix of Laurence
    and Chromy (Nat. Methods 7:338, 2010) that Gpufit's MLE estimator uses (Przybylski et
    al., Sci. Rep. 7:15722, 2017). A term with :math:`y_i = 0` is :math:`f_i`. The cost is
    not finite where a model value is negative, or zero under a positive count, or a count
    is negative or NaN.

    The per-problem data (from :meth:`prepare`) are the counts, the indicator
    :math:`z = [y = 0]` (so that :math:`\log(f + z)` and :math:`y / (f + z)` need no
    branch) and the constant :math:`\sum_i y_i \log y_i - y_i`.

    >>> import numpy as np
    >>> data = Poisson().prepare(np, np.array([[2.0], [0.0]]))
    >>> cost, finite = Poisson().cost(np, np.array([[2.0], [1.0]]), data)
    >>> cost.tolist(), finite.tolist()
    ([1.0], [True])
    """

    def prepare(self, xp: Any, y: Any) -> tuple[Any, Any, Any]:
        """The per-problem data for counts ``y`` of shape (m, B): ``(y, z, constant)``.

        Args:
            xp: the array namespace.
            y: the counts, problem axis last.
        """
        zero = xp.astype(y == 0, y.dtype)
        constant = xp.sum(y * xp.log(y + zero) - y, axis=0)  # NaN for negative or NaN counts
        return y, zero, constant

    def cost(self, xp: Any, values: Any, data: tuple[Any, ...]) -> tuple[Any, Any]:
        """Half the deviance per problem and whether it is finite."""
        y, zero, constant = data
        cost = xp.sum(values - y * xp.log(values + zero), axis=0) + constant
        cost = xp.where(xp.any(values < 0, axis=0), math.nan, cost)
        return cost, xp.isfinite(cost)

    def reduction(self, xp: Any, values: Any, trial: Any, data: tuple[Any, ...]) -> Any:
        r""":math:`F(x) - F(x_t) = \sum (f - f_t) + y \log(1 + (f_t - f)/f)`, term by term (no cancellation of sums)."""
        y, zero, _ = data
        return xp.sum(values - trial + y * xp.log1p((trial - values) / (values + zero)), axis=0)

    def normal(self, xp: Any, values: Any, J: Any, data: tuple[Any, ...]) -> tuple[Any, Any]:
        """The packed matrix :math:`J^T \\operatorname{diag}(y/f^2) J` and the gradient."""
        y, zero, _ = data
        shifted = values + zero
        ratio = y / shifted
        return gram(xp, J, ratio / shifted), jt_dot(xp, J, 1 - ratio)

    def fisher_weights(self, xp: Any, values: Any, data: tuple[Any, ...]) -> Any:
        """:math:`1/f`: the Fisher information of Poisson counts is :math:`J^T \\operatorname{diag}(1/f) J`."""
        return xp.where(values > 0, 1 / xp.where(values > 0, values, 1.0), math.inf)


# -- calling the user's functions --------------------------------------------------------


@dataclasses.dataclass
class Evaluator:
    """Calls ``fun`` (and ``jac``) for the running problems and returns problem-last arrays.

    ``jac`` is a callable, ``None`` (forward differences) or ``True`` (``fun`` returns
    ``(values, jacobian)``). With ``pass_indices`` the functions get ``(x_rows, rows)``;
    otherwise the whole stack ``stack`` (B, n), in which the running rows are overwritten
    before each call and the others keep their last values.

    Args:
        xp: the array namespace.
        fun: the user's function.
        jac: as above.
        pass_indices: as in :func:`least_squares`.
        stack: the (B, n) array passed to ``fun`` without ``pass_indices`` (else None).
        dtype: the working floating dtype.
        n: number of variables.
        count: number of problems B.
        m: residuals per problem (learnt from the first call when None).
        step: None for SciPy's relative difference steps, or an absolute step.

    >>> import numpy as np
    >>> ev = Evaluator(np, lambda x, rows: x * 2.0, None, True, None, np.float64, 2, 1)
    >>> ev.values(np.array([[1.0], [3.0]]), np.array([0])).tolist()
    [[2.0], [6.0]]
    """

    xp: Any
    fun: Callable[..., Any]
    jac: Any
    pass_indices: bool
    stack: Any
    dtype: Any
    n: int
    count: int
    m: int | None = None  # residuals per problem, learnt from the first call
    step: float | None = None  # an absolute difference step (L-BFGS-B's eps) instead of SciPy's relative one

    def __post_init__(self) -> None:
        self.backend = get_backend(self.stack) if self.stack is not None else None

    def _call(self, function: Callable[..., Any], x: Any, rows: Any, whole: bool) -> Any:
        xp = self.xp
        user_x = xp.permute_dims(x, (1, 0))
        if self.pass_indices:
            return function(user_x, rows)
        self.put(x, rows, whole)
        return function(self.stack)

    def put(self, x: Any, rows: Any, whole: bool) -> None:
        """Write the points ``x`` (n, k) into the stack at ``rows`` (nothing with pass_indices)."""
        if self.pass_indices:
            return
        user_x = self.xp.permute_dims(x, (1, 0))
        if whole:
            self.stack[...] = user_x
        else:
            assert self.backend is not None
            self.backend.put_entries(self.stack, self.xp.reshape(rows, (1, -1)), user_x)

    def _rows(self, out: Any, rows: Any, whole: bool, name: str, k: int, tail: tuple[int, ...]) -> Any:
        xp = self.xp
        if not is_array(out):
            raise TypeError(f"{name} must return an array, got {type(out).__name__}")
        expected = k if self.pass_indices else self.count
        if tuple(out.shape) != (expected, *tail):
            want = str((expected, *tail))
            raise ValueError(f"{name} returned an array of shape {tuple(out.shape)}; expected {want}")
        if not self.pass_indices and not whole:
            out = xp.take(out, rows, axis=0)
        if out.dtype != self.dtype:
            out = xp.astype(out, self.dtype)
        return out

    def _values(self, out: Any, rows: Any, whole: bool, k: int) -> Any:
        if self.m is None:
            if not is_array(out) or out.ndim != 2:
                shape = tuple(out.shape) if is_array(out) else type(out).__name__
                raise ValueError(f"fun must return an array of shape (problems, residuals); got {shape}")
            self.m = int(out.shape[1])
        values = self._rows(out, rows, whole, "fun", k, (self.m,))
        return problem_last(self.xp, values, (1, 0))

    def _jacobian(self, out: Any, rows: Any, whole: bool, k: int, name: str) -> Any:
        assert self.m is not None
        J = self._rows(out, rows, whole, name, k, (self.m, self.n))
        return problem_last(self.xp, J, (2, 1, 0))

    def values(self, x: Any, rows: Any, whole: bool = False) -> Any:
        """The values at the points ``x`` (n, k): shape (m, k)."""
        k = x.shape[1]
        out = self._call(self.fun, x, rows, whole)
        if self.jac is True:
            out = _pair(out)[0]
        return self._values(out, rows, whole, k)

    def values_and_jacobian(self, x: Any, rows: Any, whole: bool = False) -> tuple[Any, Any]:
        """Values (m, k) and, when ``fun`` returns it too, the Jacobian (n, m, k); else None."""
        k = x.shape[1]
        out = self._call(self.fun, x, rows, whole)
        if self.jac is not True:
            return self._values(out, rows, whole, k), None
        values, J = _pair(out)
        values = self._values(values, rows, whole, k)
        return values, self._jacobian(J, rows, whole, k, "fun")

    def jacobian(self, x: Any, rows: Any, values: Any, box: "Box | None", whole: bool = False) -> Any:
        """The Jacobian (n, m, k) at ``x`` (n, k): from ``jac``, or by forward differences from ``values``."""
        xp = self.xp
        k = x.shape[1]
        if callable(self.jac):
            return self._jacobian(self._call(self.jac, x, rows, whole), rows, whole, k, "jac")
        if self.jac is True:
            return self.values_and_jacobian(x, rows, whole)[1]
        # forward differences, one batched evaluation per variable (SciPy's '2-point')
        eps = float(xp.finfo(self.dtype).eps)
        columns = []
        for j in range(self.n):
            xj = x[j, ...]
            sign = 2 * xp.astype(xj >= 0, self.dtype) - 1
            h = (eps**0.5) * sign * xp.maximum(xp.abs(xj), 1.0)
            if self.step is not None:  # SciPy's absolute step, relative where it is lost to rounding
                h = xp.where((xj + self.step) - xj != 0, self.step, h)
            if box is not None:
                h = box.difference_step(xp, xj, h, j)
            h = (xj + h) - xj
            shifted = xp.stack([x[i, ...] if i != j else xj + h for i in range(self.n)])
            moved = self.values(shifted, rows, whole)
            safe = xp.where(h != 0, h, 1.0)
            columns.append(xp.where(h != 0, (moved - values) / safe, 0.0))
        self.put(x, rows, whole)
        return xp.stack(columns)


def _pair(out: Any) -> tuple[Any, Any]:
    if not isinstance(out, tuple | list) or len(out) != 2:
        raise TypeError(f"with jac=True, fun must return a pair (values, jacobian), got {type(out).__name__}")
    return out[0], out[1]


# -- outputs ------------------------------------------------------------------------------


class Outputs:
    """The full-size result arrays, problem axis last; each block stores its problems when it ends.

    The arrays are (n, B), (m, B), (n, m, B) and (B,): a block writes its results as
    contiguous runs of the last axis, and :meth:`result` hands out their transposes, the
    (B, n), (B, m), (B, m, n) arrays of :class:`LeastSquaresResult`, without copying.
    Blocks cover disjoint ranges of problems, so worker threads never write the same
    entries. :meth:`ensure` allocates least squares' fields; other solvers name theirs
    with :meth:`allocate`.

    Args:
        xp: the array namespace.
        like: an array on the device the results belong on (x0).
        count: number of problems B.
        n: number of variables.
        dtype: the floating dtype of the results.

    >>> import numpy as np
    >>> out = Outputs(np, np.zeros((3, 2)), 3, 2, np.float64)
    >>> out.ensure(4)
    >>> res = LeastSquaresResult(**out.fields())
    >>> res.fun.shape, res.jac.shape
    ((3, 4), (3, 4, 2))
    """

    def __init__(self, xp: Any, like: Any, count: int, n: int, dtype: Any) -> None:
        self.xp = xp
        self.like = like
        self.count = count
        self.n = n
        self.dtype = dtype
        self.arrays: dict[str, Any] = {}
        self._lock = threading.Lock()

    def ensure(self, m: int) -> None:
        """Allocate least squares' arrays once the number of residuals ``m`` is known."""
        n, index = self.n, self.xp.int64
        self.allocate(
            {
                "x": (n,),
                "cost": (),
                "fun": (m,),
                "jac": (n, m),
                "grad": (n,),
                "optimality": (),
                "active_mask": ((n,), self.xp.int8),
                "status": ((), index),
                "nfev": ((), index),
                "njev": ((), index),
                "nit": ((), index),
            }
        )

    def allocate(self, fields: "Mapping[str, tuple[int, ...] | tuple[tuple[int, ...], Any]]") -> None:
        """Allocate zeroed arrays (once): each field's shape without the batch axis, and its dtype if not the solver's.

        Args:
            fields: name -> shape, or name -> (shape, dtype).
        """
        with self._lock:
            if self.arrays:
                return
            device = getattr(self.like, "device", None)
            for name, spec in fields.items():
                if spec and isinstance(spec[0], tuple):
                    shape, dtype = spec
                else:
                    shape, dtype = spec, self.dtype
                self.arrays[name] = self.xp.zeros((*shape, self.count), dtype=dtype, device=device)

    def store(self, lo: int, hi: int, pieces: "list[tuple[Any, dict[str, Any]]]") -> None:
        """Write the block of problems ``lo:hi`` from the pieces its iteration collected.

        Each piece is ``(positions, fields)``: the problems' positions within the block and
        their results, problem axis last, in the order they finished.
        """
        if not pieces:
            return
        xp = self.xp
        order = xp.argsort(xp.concat([positions for positions, _ in pieces]))
        for name in pieces[0][1]:
            values = xp.concat([fields[name] for _, fields in pieces], axis=-1)
            self.arrays[name][..., lo:hi] = xp.take(values, order, axis=-1)

    def fields(self) -> dict[str, Any]:
        """The arrays, each with the problem axis first (views of the stored arrays)."""
        xp = self.xp
        return {
            name: array if array.ndim == 1 else xp.permute_dims(array, tuple(range(array.ndim - 1, -1, -1)))
            for name, array in self.arrays.items()
        }

    def result(self) -> LeastSquaresResult:
        """The least-squares result (see :meth:`fields`), with ``success``."""
        fields = self.fields()
        return LeastSquaresResult(**fields, success=fields["status"] > 0)


# -- the iteration ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """The numbers every problem of one call shares (tolerances, budget, scaling rule).

    Args:
        ftol: see :func:`least_squares`.
        xtol: see :func:`least_squares`.
        gtol: see :func:`least_squares`.
        max_nfev: see :func:`least_squares`.
        jac_scale: True for ``x_scale="jac"``.

    >>> Settings(1e-8, 1e-8, 1e-8, 500, True).max_nfev
    500
    """

    ftol: float
    xtol: float
    gtol: float
    max_nfev: int
    jac_scale: bool


def solve_block(
    xp: Any,
    evaluator: Evaluator,
    objective: Any,
    x0: Any,
    rows: Any,
    box: "Box | None",
    scale: Any,
    data: tuple[Any, ...],
    settings: Settings,
    outputs: Outputs,
    whole: bool,
    first: int,
) -> None:
    """Run the iteration for the problems ``rows`` (starting at ``x0``, shape (n, k)) to the end.

    ``box``, ``scale`` (the inverse ``x_scale``, (n, k) or (n, 1); unused with
    ``jac_scale``) and ``data`` (per-problem arrays of the objective, (m, k)) belong to
    these problems. ``whole``: the rows are all B problems in order (the stack needs no
    scatter and no gather on the first evaluations).

    Args:
        xp: the array namespace.
        evaluator: calls the user's functions.
        objective: :class:`LeastSquares` or :class:`Poisson`.
        x0: starting points, (n, k), inside the box.
        rows: the problems' positions in the batch, (k,).
        box: their bounds, or None.
        scale: as above.
        data: as above.
        settings: tolerances and budget.
        outputs: where the block's results are stored when it ends.
        whole: as above.
        first: the position of the block's first problem in the batch (``rows`` is
            ``first, first + 1, ...`` on entry).
    """
    dtype = x0.dtype
    info = xp.finfo(dtype)
    eps, tiny = float(info.eps), float(info.smallest_normal)
    lam_cap = float(info.max) ** 0.5
    n = x0.shape[0]
    k = x0.shape[1]
    index = xp.int64

    x = x0
    total = k  # the block is the problems first:first + total, in order
    finished: list[tuple[Any, dict[str, Any]]] = []
    values, J = evaluator.values_and_jacobian(x, rows, whole)
    assert evaluator.m is not None
    outputs.ensure(evaluator.m)
    if k == 0:  # an empty batch: the one call told the number of residuals
        return
    if J is None:
        J = evaluator.jacobian(x, rows, values, box, whole)
    cost, finite = objective.cost(xp, values, data)
    A, g, jac_ok = _normal(xp, objective, values, J, data)
    ones = xp.ones((k,), dtype=index, device=getattr(x0, "device", None))
    nfev, njev, nit = ones, ones, ones * 0
    status = xp.full((k,), _RUNNING, dtype=index, device=getattr(x0, "device", None))
    status = xp.where(jac_ok, status, int(Status.NONFINITE_JACOBIAN))
    status = xp.where(finite, status, int(Status.NONFINITE_RESIDUALS))
    diagonal = xp.stack([A[tri(j, j), ...] for j in range(n)])
    if settings.jac_scale:
        norms = xp.sqrt(diagonal)
        d = xp.where(norms > 0, norms, 1.0)
    else:
        d = scale * xp.ones_like(x)
    largest = xp.max(diagonal / (d * d), axis=0)
    lam = xp.where(largest > 0, _TAU * largest, _TAU)
    floor = xp.maximum(eps * largest, tiny)
    nu = xp.full_like(lam, 2.0)

    while True:
        # gtol before each step (SciPy's trf tests it first, and it overrides ftol/xtol)
        scaled = g if box is None else box.scaled_gradient(x, g)
        optimality = xp.max(xp.abs(scaled), axis=0)
        status = xp.where((status >= int(Status.FTOL)) & (optimality < settings.gtol), int(Status.GTOL), status)
        status = xp.where((status == _RUNNING) & (nfev >= settings.max_nfev), int(Status.MAX_NFEV), status)
        running = status == _RUNNING
        still = int(xp.sum(xp.astype(running, index)))  # the one host read per iteration
        if still < k:
            fields = {
                "x": x,
                "cost": cost,
                "fun": values,
                "jac": J,
                "grad": g,
                "optimality": optimality,
                "status": status,
                "nfev": nfev,
                "njev": njev,
                "nit": nit,
            }
            if box is not None:
                fields["active_mask"] = box.active(xp, x, g)
            keep = retire(xp, running, still, rows, first, fields, finished)
            x, values, J, A, g, d = (xp.take(a, keep, axis=-1) for a in (x, values, J, A, g, d))
            cost, lam, nu, floor, nfev, njev, nit, status, rows = (
                xp.take(a, keep, axis=0) for a in (cost, lam, nu, floor, nfev, njev, nit, status, rows)
            )
            data = tuple(xp.take(a, keep, axis=-1) for a in data)
            if box is not None:
                box = box.take(xp, keep)
            k = still
            whole = False
        if k == 0:
            outputs.store(first, first + total, finished)
            return

        # the damped step on the free variables, projected into the box
        free = None if box is None else xp.astype(~box.binding(x, g), dtype)
        step, ok = cholesky_solve(xp, A, lam * (d * d), -g, free)
        step = xp.where(ok, step, 0.0)
        trial = x + step
        if box is not None:
            trial = box.project(trial)
        s = trial - x
        predicted = -(xp.sum(g * s, axis=0) + 0.5 * packed_quadratic(xp, A, s))
        trial_values, trial_J = evaluator.values_and_jacobian(trial, rows, whole)
        nfev, nit = nfev + 1, nit + 1
        trial_cost, finite = objective.cost(xp, trial_values, data)
        valid = ok & finite
        reduction = xp.where(valid, objective.reduction(xp, values, trial_values, data), 0.0)
        positive = valid & (predicted > 0)
        bounded = xp.minimum(xp.maximum(reduction, -predicted), 2 * predicted)  # ratio within [-1, 2]
        ratio = xp.where(positive, bounded / xp.where(positive, predicted, 1.0), -1.0)
        accept = positive & (ratio > _ACCEPT)

        # SciPy's trf tests after every finite trial
        f_hit = valid & (reduction < settings.ftol * cost) & (ratio > 0.25)
        step_norm = xp.sqrt(xp.sum(s * s, axis=0))
        x_norm = xp.sqrt(xp.sum(x * x, axis=0))
        x_hit = valid & (step_norm < settings.xtol * (settings.xtol + x_norm))
        status = xp.where(x_hit, int(Status.XTOL), status)
        status = xp.where(f_hit, int(Status.FTOL), status)
        status = xp.where(f_hit & x_hit, int(Status.FTOL_XTOL), status)

        # Nielsen's damping update
        cube = (2 * ratio - 1) ** 3
        shrink = xp.maximum(lam * xp.maximum(1 - cube, 1 / 3), floor)
        lam = xp.where(accept, shrink, xp.minimum(lam * nu, lam_cap))
        nu = xp.where(accept, 2.0, xp.minimum(2 * nu, 2.0**30))

        # take the accepted steps
        x = xp.where(accept, trial, x)
        values = xp.where(accept, trial_values, values)
        cost = xp.where(accept, trial_cost, cost)
        evaluator.put(x, rows, whole)
        if trial_J is not None:
            J = xp.where(accept, trial_J, J)
        else:
            J = evaluator.jacobian(x, rows, values, box, whole)
        njev = njev + xp.astype(accept, index)
        A, g, jac_ok = _normal(xp, objective, values, J, data)
        status = xp.where(jac_ok, status, int(Status.NONFINITE_JACOBIAN))
        diagonal = xp.stack([A[tri(j, j), ...] for j in range(n)])
        if settings.jac_scale:
            d = xp.maximum(d, xp.sqrt(diagonal))
        floor = xp.maximum(eps * xp.max(diagonal / (d * d), axis=0), tiny)


def retire(
    xp: Any,
    running: Any,
    still: int,
    rows: Any,
    first: int,
    fields: dict[str, Any],
    finished: "list[tuple[Any, dict[str, Any]]]",
) -> Any:
    """Move the problems that stopped (``running`` False) to ``finished``; return the positions of the others.

    ``fields`` are the results, problem axis last; ``still`` is the number running (read
    on the host); ``finished`` collects ``(positions in the block, fields)`` pieces for
    :meth:`Outputs.store`.
    """
    order = xp.argsort(xp.astype(~running, xp.int8), stable=True)
    done = order[still:]
    finished.append(
        (xp.take(rows, done, axis=0) - first, {key: xp.take(v, done, axis=-1) for key, v in fields.items()})
    )
    return order[:still]


def _normal(xp: Any, objective: Any, values: Any, J: Any, data: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """A and g from the objective, with ok False where they are not finite (A is then 0, g NaN).

    Such problems stop; until they leave the working set their A must not make the
    damping arithmetic warn (inf / inf), and their gradient is reported as NaN.
    """
    A, g = objective.normal(xp, values, J, data)
    ok = xp.all(xp.isfinite(A), axis=0) & xp.all(xp.isfinite(g), axis=0)
    return xp.where(ok, A, 0.0), xp.where(ok, g, math.nan), ok


# -- the public function ---------------------------------------------------------------


def least_squares(
    fun: Callable[..., Any],
    x0: Any,
    jac: "Callable[..., Any] | bool | str | None" = None,
    bounds: Any = (-math.inf, math.inf),
    *,
    ftol: float | None = 1e-8,
    xtol: float | None = 1e-8,
    gtol: float | None = 1e-8,
    max_nfev: int | None = None,
    x_scale: Any = "jac",
    pass_indices: bool = False,
    block_size: int | None = None,
    workers: int = 1,
) -> LeastSquaresResult:
    r"""Solve B independent bound-constrained nonlinear least-squares problems at once.

    Problem b minimises :math:`F_b(x) = \tfrac12 \sum_i r_{bi}(x)^2` subject to
    :math:`l_b \le x \le u_b`, by a projected Levenberg-Marquardt method (the module
    documentation has the algorithm and its references). Each problem has its own
    damping, stopping tests and counts; a NaN, a singular Jacobian or a divergence in one
    problem never changes another's result. Problems that have stopped are not evaluated
    again with ``pass_indices=True``; without it their rows keep their final values.
    Trial points far off may overflow in some problems on purpose: floating-point
    warnings are silenced during the fit (NumPy's ``errstate``), and a trial whose
    residuals are not finite is refused like any step that does not reduce the cost.

    Stopping tests are SciPy's ``trf`` ones, per problem (:class:`Status` lists the
    codes). SciPy's ``method="lm"`` tests the cosine of the angle between residuals and
    Jacobian columns for ``gtol`` instead, and has no bounds; both reach the same
    minimisers to within the tolerances.

    Args:
        fun: the residuals. ``fun(x)`` gets the (B, n) stack and returns (B, m); with
            ``pass_indices=True`` it is called as ``fun(x_rows, rows)`` with the (k, n)
            points of the k problems still running and their (k,) integer positions in
            the batch, and returns (k, m). Do not modify ``x``.
        x0: starting points, shape (B, n), of any array library (NumPy, CuPy,
            array-API); its floating dtype is the working precision (integers become
            float64). Must lie in the bounds.
        jac: the Jacobian: a callable with ``fun``'s signature returning (B, m, n) (or
            (k, m, n)); ``None`` or ``"2-point"`` for forward differences (one batched
            evaluation of ``fun`` per variable, steps as SciPy's, turned around at the
            bounds); ``True`` if ``fun`` returns ``(residuals, jacobian)`` (cheapest when
            they share work). A Jacobian built as the transpose of an (n, m, B) array
            is used without a copy.
        bounds: ``(lb, ub)``, each a number or an array broadcastable to (B, n), or a
            ``scipy.optimize.Bounds``. ``lb == ub`` fixes a variable.
        ftol: stop when the cost falls by less than ``ftol`` times itself on a step
            whose gain ratio exceeds 1/4. None means 0.
        xtol: stop when :math:`\lVert s\rVert < \mathrm{xtol}(\mathrm{xtol} +
            \lVert x\rVert)`. None means 0.
        gtol: stop when :math:`\lVert g \odot v\rVert_\infty < \mathrm{gtol}`, v the
            Coleman-Li scaling of the bounds (1 without bounds). None means 0.
        max_nfev: evaluations of ``fun`` per problem, the first included (default
            ``100 * n``); a problem that spends them stops with status 0. Gpufit's "at
            most 10 iterations" is ``max_nfev=11``.
        x_scale: ``"jac"`` (the default, as SciPy's ``method="lm"`` since 1.16: the
            damping is scaled by the running maximum of the Jacobian's column norms), or
            the characteristic scale of each variable, a positive number or an array
            broadcastable to (B, n).
        pass_indices: call ``fun``/``jac`` with only the running rows and their indices
            (see ``fun``).
        block_size: with ``pass_indices=True``, fit the batch in blocks of this many
            problems, one after another (or ``workers`` at a time), which keeps the
            working set in the CPU's cache. Default: the backend's choice (8192 on NumPy,
            the whole batch on CuPy and others).
        workers: with ``pass_indices=True``, the number of threads fitting blocks side by
            side. ``fun`` and ``jac`` are then called from several threads at once.

    Returns:
        LeastSquaresResult: ``x``, ``cost``, ``fun``, ``jac``, ``grad``, ``optimality``,
        ``active_mask``, ``status``, ``success``, ``nfev``, ``njev``, ``nit``, each with
        a leading batch axis, on ``x0``'s device and in its dtype. The 2-D and 3-D ones
        are transposed views of arrays stored problem axis last (not C-contiguous: take
        a copy where a library needs contiguous memory).

    Raises:
        ValueError: for malformed arguments (named in the message), ``x0`` outside the
            bounds, or ``fun``/``jac`` returning the wrong shape.

    Example (three exponential decays :math:`a e^{-t/\tau}`, one of them with NaN data):

    >>> import numpy as np
    >>> from arrayopt import batch
    >>> t = np.linspace(0.0, 4.0, 9)
    >>> truth = np.array([[2.0, 1.0], [1.0, 0.5], [3.0, 2.0]])
    >>> y = truth[:, :1] * np.exp(-t / truth[:, 1:])
    >>> y[1, 4] = np.nan
    >>> def residuals(p):
    ...     return p[:, :1] * np.exp(-t / p[:, 1:]) - y
    >>> res = batch.least_squares(residuals, np.ones((3, 2)), bounds=(0.1, 10.0))
    >>> np.round(res.x[[0, 2]], 6).tolist()
    [[2.0, 1.0], [3.0, 2.0]]
    >>> res.status.tolist(), res.success.tolist()
    ([1, -3, 1], [True, False, True])
    >>> res.message(1)
    'Residuals are not finite in the initial point.'
    """
    xp, x0, dtype = check_x0(x0)
    n = x0.shape[1]
    settings = check_settings(n, ftol, xtol, gtol, max_nfev, x_scale)
    jac = check_jac(jac)
    return run(
        xp, fun, jac, x0, dtype, bounds, x_scale, settings, LeastSquares(), (), pass_indices, block_size, workers
    )


def check_x0(x0: Any, name: str = "x0") -> tuple[Any, Any, Any]:
    """(namespace, x0 as a (B, n) floating array, dtype), or a clear error."""
    if not is_array(x0):
        raise TypeError(f"{name} must be an array of shape (problems, variables), got {type(x0).__name__}")
    xp = get_backend(x0).xp
    if x0.ndim != 2:
        raise ValueError(f"{name} must have shape (problems, variables); got shape {tuple(x0.shape)}")
    if x0.shape[1] == 0:
        raise ValueError(f"{name} has shape {tuple(x0.shape)}: each problem needs at least one variable")
    if xp.isdtype(x0.dtype, "real floating"):
        dtype = x0.dtype
    elif xp.isdtype(x0.dtype, ("integral", "bool")):
        dtype = xp.float64
    else:
        raise ValueError(f"{name} must be real; got dtype {x0.dtype}")
    return xp, x0, dtype


def check_settings(
    n: int, ftol: float | None, xtol: float | None, gtol: float | None, max_nfev: int | None, x_scale: Any
) -> Settings:
    """The checked tolerances and budget (SciPy's rules and messages where it has them)."""
    tolerances = {}
    for name, value in (("ftol", ftol), ("xtol", xtol), ("gtol", gtol)):
        number = 0.0 if value is None else float(value)
        if not number >= 0.0 or number == math.inf:
            raise ValueError(f"{name} must be None or a finite number >= 0, got {value!r}")
        tolerances[name] = number
    if all(value < _EPS64 for value in tolerances.values()):
        raise ValueError(
            f"At least one of the tolerances must be higher than machine epsilon ({_EPS64:.2e}); "
            f"got ftol={ftol!r}, xtol={xtol!r}, gtol={gtol!r}"
        )
    if max_nfev is None:
        budget = 100 * n
    elif isinstance(max_nfev, bool) or not isinstance(max_nfev, int) or max_nfev < 1:
        raise ValueError(f"max_nfev must be None or a positive integer, got {max_nfev!r}")
    else:
        budget = max_nfev
    jac_scale = isinstance(x_scale, str)
    if jac_scale and x_scale != "jac":
        raise ValueError(f"x_scale must be 'jac' or positive numbers, got {x_scale!r}")
    return Settings(tolerances["ftol"], tolerances["xtol"], tolerances["gtol"], budget, jac_scale)


def check_jac(jac: Any) -> Any:
    """``jac`` as a callable, True or None (forward differences)."""
    if jac is None or jac == "2-point":
        return None
    if jac is True or callable(jac):
        return jac
    raise ValueError(f"jac must be a callable, True, None or '2-point', got {jac!r}")


def _inverse_scale(xp: Any, x_scale: Any, count: int, n: int, dtype: Any, like: Any) -> Any:
    """``1 / x_scale`` as an (n, 1) or (n, B) array, after SciPy's checks."""
    box = Box.parse(xp, (x_scale, x_scale), n, count, dtype, like)
    scale = box.lower if box is not None else None
    if scale is None or not bool(xp.all(xp.isfinite(scale) & (scale > 0))):
        raise ValueError(f"x_scale must be 'jac' or finite positive numbers broadcastable to ({count}, {n})")
    return 1 / scale


def run(
    xp: Any,
    fun: Callable[..., Any],
    jac: Any,
    x0: Any,
    dtype: Any,
    bounds: Any,
    x_scale: Any,
    settings: Settings,
    objective: Any,
    data: tuple[Any, ...],
    pass_indices: bool,
    block_size: int | None,
    workers: int,
) -> LeastSquaresResult:
    """Check the remaining arguments, fit every problem, and assemble the result.

    ``data`` are the objective's per-problem arrays, problem axis last ((m, B) each).
    """
    count, n = x0.shape
    check_blocks(pass_indices, block_size, workers)
    start = problem_last(xp, xp.astype(x0, dtype), (1, 0))
    box = Box.parse(xp, bounds, n, count, dtype, like=x0)
    if box is not None:
        box.check_inside(xp, start)
    scale = None if settings.jac_scale else _inverse_scale(xp, x_scale, count, n, dtype, x0)

    device = getattr(x0, "device", None)
    stack = None if pass_indices else xp.astype(x0, dtype, copy=True)
    evaluator = Evaluator(xp, fun, jac, pass_indices, stack, dtype, n, count)
    outputs = Outputs(xp, x0, count, n, dtype)
    rows = xp.arange(count, dtype=xp.int64, device=device)
    quiet = get_backend(x0).quiet

    def block(span: tuple[int, int]) -> None:
        lo, hi = span
        part = rows[lo:hi]
        with quiet():  # per thread: NumPy's error state is per context
            solve_block(
                xp,
                evaluator,
                objective,
                start[:, lo:hi],
                part,
                None if box is None else box.take(xp, part),
                None if scale is None else scale if scale.shape[1] == 1 else scale[:, lo:hi],
                tuple(a[..., lo:hi] for a in data),
                settings,
                outputs,
                whole=(lo, hi) == (0, count),
                first=lo,
            )

    run_blocks(block_spans(x0, pass_indices, block_size, workers), workers, block)
    return outputs.result()


def check_blocks(pass_indices: bool, block_size: int | None, workers: int) -> None:
    """Refuse malformed ``pass_indices``, ``block_size`` and ``workers`` (blocks need ``pass_indices``)."""
    if not isinstance(pass_indices, bool):
        raise ValueError(f"pass_indices must be True or False, got {pass_indices!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if workers > 1 and not pass_indices:
        raise ValueError(
            f"workers={workers} needs pass_indices=True: without it fun receives the whole stack, "
            "so the problems cannot be split among threads"
        )
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1):
        raise ValueError(f"block_size must be None or a positive integer, got {block_size!r}")
    if block_size is not None and not pass_indices:
        raise ValueError(
            f"block_size={block_size} needs pass_indices=True: without it fun receives the whole stack, "
            "so the problems cannot be fitted in blocks"
        )


def block_spans(x0: Any, pass_indices: bool, block_size: int | None, workers: int) -> list[tuple[int, int]]:
    """The ranges ``(lo, hi)`` of problems fitted together: the whole batch without ``pass_indices``.

    With ``pass_indices``, blocks of ``block_size``, else of the backend's ``fit_block``
    (the whole batch where it has none), evened out so that every worker gets as many.
    """
    count = x0.shape[0]
    if not pass_indices:
        size = max(count, 1)
    elif block_size is not None:
        size = block_size
    else:
        default = get_backend(x0).fit_block or max(count, 1)
        blocks = -(-count // default)
        if count >= workers * _SMALLEST_SHARED_BLOCK:
            blocks = -(-blocks // workers) * workers
        size = max(-(-count // max(blocks, 1)), 1)
    return [(lo, min(lo + size, count)) for lo in range(0, max(count, 1), size)]


def run_blocks(spans: list[tuple[int, int]], workers: int, block: Callable[[tuple[int, int]], None]) -> None:
    """Call ``block`` on every span, one after another or on ``workers`` threads."""
    if workers == 1 or len(spans) == 1:
        for span in spans:
            block(span)
    else:
        import concurrent.futures  # only with workers > 1: ``import arrayopt`` stays light

        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(block, span) for span in spans]:
                future.result()

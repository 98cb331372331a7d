r"""Batched ``curve_fit``: SciPy's ``curve_fit`` for every problem of a stack.

The fit itself is :func:`arrayopt.batch.least_squares` on the weighted residuals
:math:`r = W (f(x, p) - y)` (or Poisson maximum likelihood); what this module adds is the
data handling (``sigma``), the covariance of the parameters as SciPy computes it, and
SciPy's warnings, turned into one warning per call with counts.
"""

import math
import warnings
from collections.abc import Callable
from typing import Any

from arrayopt.backends import get_backend, is_array
from arrayopt.batch._bounds import Box
from arrayopt.batch._linalg import jacobi_svd, problem_last, r_factor
from arrayopt.batch._lm import LeastSquares, Poisson, check_jac, check_settings, check_x0, run
from arrayopt.batch._result import LeastSquaresResult, OptimizeWarning, Status

__all__ = ["covariance", "curve_fit"]

#: problems per pass of the covariance computation (bounds its temporary memory)
_COVARIANCE_CHUNK = 1 << 16


def curve_fit(
    f: Callable[..., Any],
    xdata: Any,
    ydata: Any,
    p0: Any,
    sigma: Any = None,
    absolute_sigma: bool = False,
    bounds: Any = (-math.inf, math.inf),
    jac: Any = None,
    loss: str = "linear",
    full_output: bool = False,
    *,
    pass_indices: bool = False,
    ftol: float | None = 1e-8,
    xtol: float | None = 1e-8,
    gtol: float | None = 1e-8,
    max_nfev: int | None = None,
    x_scale: Any = "jac",
    block_size: int | None = None,
    workers: int = 1,
) -> Any:
    r"""Fit ``f`` to each row of ``ydata``: SciPy's ``curve_fit`` for B problems at once.

    Problem b finds the parameters :math:`p_b` that minimise
    :math:`\sum_i \big((f(x, p_b)_i - y_{bi}) / \sigma_{bi}\big)^2` within the bounds (with
    ``loss="poisson"``: that maximise the Poisson likelihood of the counts
    :math:`y_{bi}`), by :func:`arrayopt.batch.least_squares`.

    ``pcov`` is computed as SciPy computes it, problem by problem, from the Jacobian
    :math:`J` of the weighted residuals at ``popt``: the pseudo-inverse of
    :math:`J^T J` from the singular values of J larger than
    :math:`\varepsilon \max(m, n) s_{\max}` (SciPy's ``trf`` rule); for a problem without
    finite bounds (SciPy's ``lm``) an infinite matrix instead where J is rank-deficient
    by that rule. Unless ``absolute_sigma``, it is scaled by the reduced chi-square
    :math:`\sum r^2 / (m - n)` and infinite where :math:`m \le n`; NaN anywhere makes it
    infinite. With ``loss="poisson"`` it is the inverse Fisher information
    :math:`(J_f^T \operatorname{diag}(1/f) J_f)^{-1}` (the counts' variance is the
    model itself: ``sigma`` and ``absolute_sigma`` do not apply). A variable fixed by
    ``lb == ub`` has zero variance.

    SciPy raises when a fit fails; here the problem reports it (``full_output``) and
    the call warns once (:class:`OptimizeWarning`) with the number of failures, as it
    does for covariances that cannot be estimated.

    Args:
        f: the model, ``f(xdata, p)`` with ``p`` of shape (B, n), returning (B, m);
            with ``pass_indices=True``, ``f(xdata, p_rows, rows)`` for the k problems
            still running, returning (k, m). ``xdata`` is passed through unchanged: shared
            by all problems, or per problem (then index it with ``rows``).
        xdata: the independent variable(s), any object ``f`` understands.
        ydata: the data, shape (B, m).
        p0: starting parameters, shape (B, n), or (n,) for all problems alike. Must lie
            within the bounds.
        sigma: uncertainties of ``ydata``: a number, shape (m,) or (B, m) (standard
            deviations, as SciPy's 1-D ``sigma``), or shape (B, m, m) or (1, m, m)
            (covariance matrices, as SciPy's 2-D ``sigma``). None: all 1.
        absolute_sigma: ``sigma`` is in absolute units (``pcov`` not rescaled by the
            residuals), as in SciPy.
        bounds: as :func:`arrayopt.batch.least_squares`.
        jac: the Jacobian of ``f`` with respect to ``p``: a callable with ``f``'s
            signature returning (B, m, n) (or (k, m, n)); None or ``"2-point"`` for
            forward differences; True if ``f`` returns ``(values, jacobian)``.
        loss: ``"linear"`` (least squares) or ``"poisson"`` (maximum likelihood for
            counts :math:`y \ge 0` with the model :math:`f > 0`; Gpufit's MLE estimator).
            SciPy's robust losses are not available.
        full_output: also return the :class:`LeastSquaresResult` of the fit (``fun`` are
            the weighted residuals, SciPy's ``fvec``; for Poisson, :math:`f - y`).
        pass_indices: see ``f``; finished problems are then not evaluated again.
        ftol: as :func:`arrayopt.batch.least_squares`.
        xtol: as :func:`arrayopt.batch.least_squares`.
        gtol: as :func:`arrayopt.batch.least_squares`.
        max_nfev: as :func:`arrayopt.batch.least_squares`.
        x_scale: as :func:`arrayopt.batch.least_squares`.
        block_size: as :func:`arrayopt.batch.least_squares`.
        workers: as :func:`arrayopt.batch.least_squares`.

    Returns:
        ``(popt, pcov)``: shapes (B, n) and (B, n, n), in the working dtype (that of
        ``p0`` and ``ydata``); with ``full_output``, ``(popt, pcov, result)``.

    Example (Hill curves :math:`y = x^h / (K^h + x^h)` of four samples, and the standard
    errors of K and h):

    >>> import numpy as np
    >>> from arrayopt import batch
    >>> x = np.logspace(-2, 2, 15)
    >>> def hill(x, p):
    ...     K, h = p[:, :1], p[:, 1:]
    ...     return x**h / (K**h + x**h)
    >>> truth = np.array([[0.5, 1.0], [1.0, 2.0], [2.0, 0.7], [5.0, 3.0]])
    >>> noise = 0.002 * np.random.default_rng(1).standard_normal((4, 15))
    >>> popt, pcov = batch.curve_fit(hill, x, hill(x, truth) + noise, [1.0, 1.0], bounds=(0.01, 100.0))
    >>> np.round(popt, 1).tolist()
    [[0.5, 1.0], [1.0, 2.0], [2.0, 0.7], [5.0, 3.0]]
    >>> errors = np.sqrt(np.diagonal(pcov, axis1=1, axis2=2))
    >>> bool((errors < 0.2).all())
    True
    """
    if loss not in ("linear", "poisson"):
        raise ValueError(
            f"loss must be 'linear' or 'poisson', got {loss!r} (SciPy's robust losses are not available here)"
        )
    like = p0 if is_array(p0) else ydata
    if not is_array(like):
        raise TypeError(f"ydata must be an array of shape (problems, points), got {type(ydata).__name__}")
    xp = get_backend(like).xp
    y = ydata if is_array(ydata) else xp.asarray(ydata)
    if y.ndim != 2:
        raise ValueError(f"ydata must have shape (problems, points); got shape {tuple(y.shape)}")
    if get_backend(y) is not get_backend(like):
        y = get_backend(like).convert(y, like, cast=False)
    count, m = y.shape
    y_float = xp.isdtype(y.dtype, "real floating")
    p = p0 if is_array(p0) else xp.asarray(p0, dtype=y.dtype if y_float else None, device=getattr(y, "device", None))
    p = get_backend(like).convert(p, y, cast=False) if get_backend(p) is not get_backend(y) else p
    if p.ndim == 1:
        p = xp.broadcast_to(xp.reshape(p, (1, -1)), (count, p.shape[0]))
    if p.ndim != 2 or p.shape[0] != count:
        raise ValueError(
            f"p0 has shape {tuple(p.shape)}; expected ({count}, n) or (n,) for ydata of shape {(count, m)}"
        )
    _, p, dtype = check_x0(p, "p0")
    if y_float:
        dtype = xp.result_type(dtype, y.dtype)
    y = xp.astype(y, dtype)
    n = p.shape[1]
    settings = check_settings(n, ftol, xtol, gtol, max_nfev, x_scale)
    jac = check_jac(jac)
    poisson = loss == "poisson"
    if poisson and sigma is not None:
        raise ValueError("sigma must be None with loss='poisson': the variance of a count is the model value")
    transform = None if sigma is None else _transform(xp, sigma, count, m, dtype, y)
    model = _Model(xp, f, jac, xdata, y, transform, poisson, pass_indices, m)
    residual_jac = jac if not callable(jac) else model.jacobian
    objective = Poisson() if poisson else LeastSquares()
    with get_backend(p).quiet():  # negative or NaN counts make NaN constants: those problems fail alone
        data = Poisson().prepare(xp, model.y_t) if poisson else ()
    result = run(
        xp, model, residual_jac, p, dtype, bounds, x_scale, settings, objective, data, pass_indices, block_size, workers
    )
    box = Box.parse(xp, bounds, n, count, dtype, like=p)
    with get_backend(p).quiet():
        pcov = covariance(xp, result, box, poisson, absolute_sigma)
    if poisson:
        result["fun"] = result["fun"] - y
    _warn(xp, result, pcov, full_output)
    if full_output:
        return result["x"], pcov, result
    return result["x"], pcov


class _Model:
    """The residual function (and its Jacobian) that :func:`least_squares` sees for a curve fit.

    The arithmetic on the model's values runs with the points first and the problems
    last (``y`` and the weights are kept that way): with a model that returns transposes
    of (m, B) arrays, as the fast ones do, nothing is copied.
    """

    def __init__(
        self,
        xp: Any,
        f: Callable[..., Any],
        jac: Any,
        xdata: Any,
        y: Any,
        transform: "tuple[str, Any] | None",
        poisson: bool,
        pass_indices: bool,
        m: int,
    ) -> None:
        self.xp, self.f, self.jac, self.xdata = xp, f, jac, xdata
        self.poisson, self.pass_indices, self.m = poisson, pass_indices, m
        self.y_t = problem_last(xp, y, (1, 0))  # contiguous: its columns are gathered every call
        self.scale_t = None  # weights 1/sigma, (m, B or 1)
        self.matrix = None  # inverse Cholesky factors of the covariances, (B or 1, m, m)
        if transform is not None and transform[0] == "scale":
            self.scale_t = problem_last(xp, transform[1], (1, 0))
        elif transform is not None:
            self.matrix = transform[1]

    def _call(self, function: Callable[..., Any], p: Any, rows: Any) -> Any:
        return function(self.xdata, p, rows) if self.pass_indices else function(self.xdata, p)

    def _columns(self, array_t: Any, rows: Any) -> Any:
        if rows is None or array_t.shape[1] == 1:
            return array_t
        return self.xp.take(array_t, rows, axis=1)

    def _residuals(self, values: Any, rows: Any) -> Any:
        """W (f - y) for values f of shape (k, m)."""
        xp = self.xp
        r_t = xp.permute_dims(values, (1, 0)) - self._columns(self.y_t, rows)
        if self.scale_t is not None:
            r_t = r_t * self._columns(self.scale_t, rows)
        r = xp.permute_dims(r_t, (1, 0))
        if self.matrix is not None:
            r = xp.matmul(self._rows(self.matrix, rows), r[..., None])[..., 0]
        return r

    def _weigh_jacobian(self, J: Any, rows: Any) -> Any:
        """W J for J of shape (k, m, n)."""
        xp = self.xp
        if self.scale_t is not None:
            J = xp.permute_dims(xp.permute_dims(J, (2, 1, 0)) * self._columns(self.scale_t, rows), (2, 1, 0))
        if self.matrix is not None:
            J = xp.matmul(self._rows(self.matrix, rows), J)
        return J

    def _rows(self, array: Any, rows: Any) -> Any:
        if rows is None or array.shape[0] == 1:
            return array
        return self.xp.take(array, rows, axis=0)

    def _check(self, values: Any, k: int, what: str) -> None:
        if not is_array(values) or values.ndim < 2 or tuple(values.shape[:2]) != (k, self.m):
            shape = tuple(values.shape) if is_array(values) else type(values).__name__
            raise ValueError(f"{what} returned {shape}; expected ({k}, {self.m}, ...) for p of {k} problems")

    def __call__(self, p: Any, rows: Any = None) -> Any:
        out = self._call(self.f, p, rows)
        if self.jac is True:
            values, J = out
        else:
            values, J = out, None
        self._check(values, p.shape[0], "f")
        if not self.poisson:
            values = self._residuals(values, rows)
            if J is not None:
                J = self._weigh_jacobian(J, rows)
        return values if J is None else (values, J)

    def jacobian(self, p: Any, rows: Any = None) -> Any:
        J = self._call(self.jac, p, rows)
        self._check(J, p.shape[0], "jac")
        return J if self.poisson else self._weigh_jacobian(J, rows)


def _transform(xp: Any, sigma: Any, count: int, m: int, dtype: Any, like: Any) -> tuple[str, Any]:
    """``("scale", 1/sigma)`` of shape (B or 1, m), or ``("matrix", L^-1)`` of shape (B or 1, m, m)."""
    if is_array(sigma):
        s = xp.astype(get_backend(like).convert(sigma, like, cast=False), dtype)
    else:
        s = xp.asarray(sigma, dtype=dtype, device=getattr(like, "device", None))
    shape = tuple(s.shape)
    if s.ndim <= 1 or (s.ndim == 2 and shape[0] in (1, count) and shape[1] == m):
        if s.ndim == 1 and shape not in ((m,), (1,)):
            raise ValueError(
                f"sigma has shape {shape}; expected a number, ({m},), ({count}, {m}) or ({count}, {m}, {m})"
            )
        if not bool(xp.all(s > 0)):
            raise ValueError("sigma must be positive")
        scale = xp.reshape(1 / s, (1, -1)) if s.ndim < 2 else 1 / s
        return "scale", xp.broadcast_to(scale, (scale.shape[0], m))
    if s.ndim == 3 and shape[0] in (1, count) and shape[1:] == (m, m):
        linalg = getattr(xp, "linalg", None)
        if linalg is None:
            raise ValueError("a covariance matrix sigma needs the array library's linalg extension")
        try:
            factor = linalg.cholesky(s)
        except Exception as exc:
            raise ValueError("`sigma` must be positive definite.") from exc
        if not bool(xp.all(xp.isfinite(factor))):
            raise ValueError("`sigma` must be positive definite.")
        return "matrix", linalg.inv(factor)
    raise ValueError(
        f"sigma has shape {shape}; expected a number, ({m},), ({count}, {m}) for standard deviations, "
        f"or ({count}, {m}, {m}) / (1, {m}, {m}) for covariance matrices"
    )


def covariance(xp: Any, result: LeastSquaresResult, box: "Box | None", poisson: bool, absolute_sigma: bool) -> Any:
    r"""``pcov`` per problem from a fit's Jacobian, by SciPy's rules (see :func:`curve_fit`).

    The singular values and vectors come from a QR factorisation and one-sided Jacobi
    rotations over the whole batch (:mod:`arrayopt.batch._linalg`), never from a loop over
    problems.

    Args:
        xp: the array namespace.
        result: the fit (``jac``, ``fun``, ``cost``; for Poisson ``fun`` holds the model).
        box: the bounds (None: no problem has any).
        poisson: the fit was Poisson maximum likelihood.
        absolute_sigma: as in :func:`curve_fit`.

    Returns:
        shape (B, n, n).

    >>> import numpy as np
    >>> J = np.array([[[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]])    # one problem, m=3, n=2
    >>> fit = LeastSquaresResult(jac=J, fun=np.zeros((1, 3)), cost=np.zeros(1))
    >>> covariance(np, fit, None, poisson=False, absolute_sigma=True)[0].tolist()
    [[1.0, 0.0], [0.0, 0.25]]
    """
    J_all = result["jac"]
    count, m, n = J_all.shape
    dtype = J_all.dtype
    eps = float(xp.finfo(dtype).eps)
    out = xp.empty((count, n, n), dtype=dtype, device=getattr(J_all, "device", None))
    has_fixed = box is not None and bool(xp.any(box.lower == box.upper))
    for lo in range(0, count, _COVARIANCE_CHUNK):
        hi = min(lo + _COVARIANCE_CHUNK, count)
        J = problem_last(xp, J_all[lo:hi, ...], (2, 1, 0))
        if poisson:
            model = problem_last(xp, result["fun"][lo:hi, ...], (1, 0))
            J = J * xp.sqrt(Poisson().fisher_weights(xp, model, ()))
        bounded = None
        if box is not None:
            part = (
                box.take(xp, xp.arange(lo, hi, device=getattr(J_all, "device", None)))
                if box.lower.shape[1] > 1
                else box
            )
            if has_fixed:  # a fixed variable's column does not count
                J = J * xp.astype(part.lower != part.upper, dtype)[:, None, :]
            finite = (part.lower > -math.inf) | (part.upper < math.inf)
            bounded = xp.any(finite, axis=0)
        s, V = jacobi_svd(xp, r_factor(xp, J))
        largest = xp.max(s, axis=0)
        kept = s > eps * max(m, n) * largest
        inverse = xp.where(kept, 1 / xp.where(kept, s * s, 1.0), 0.0)
        scaled = [inverse * V[:, i, ...] for i in range(n)]  # V[t, i]: entry i of singular vector t
        lower = {(i, j): xp.sum(scaled[i] * V[:, j, ...], axis=0) for i in range(n) for j in range(i + 1)}
        pcov = xp.stack([xp.stack([lower[max(i, j), min(i, j)] for j in range(n)]) for i in range(n)])
        full_rank = xp.all(kept, axis=0)
        bad = ~full_rank if bounded is None else ~full_rank & ~bounded
        if not poisson and not absolute_sigma:
            if m > n:
                pcov = pcov * (2 * result["cost"][lo:hi] / (m - n))
            else:
                bad = xp.ones_like(bad)
        bad = bad | xp.any(xp.isnan(xp.reshape(pcov, (n * n, -1))), axis=0) | ~xp.isfinite(largest)
        pcov = xp.where(bad, math.inf, pcov)
        out[lo:hi, ...] = xp.permute_dims(pcov, (2, 0, 1))
    return out


def _warn(xp: Any, result: LeastSquaresResult, pcov: Any, full_output: bool) -> None:
    """SciPy's warning about covariances, and (without full_output) one about failed fits."""
    count = result["x"].shape[0]
    if count == 0:
        return
    n = pcov.shape[1]
    unknown = int(xp.sum(xp.astype(xp.any(xp.isinf(xp.reshape(pcov, (count, n * n))), axis=1), xp.int64)))
    if unknown:
        warnings.warn(
            f"Covariance of the parameters could not be estimated for {unknown} of {count} problems",
            OptimizeWarning,
            stacklevel=3,
        )
    if not full_output:
        failed = int(xp.sum(xp.astype(~result["success"], xp.int64)))
        if failed:
            codes = sorted({int(c) for c in get_backend(result["status"]).to_numpy(result["status"]) if c <= 0})
            names = ", ".join(Status(c).name for c in codes)
            warnings.warn(
                f"{failed} of {count} fits did not succeed ({names}); pass full_output=True for each problem's status",
                OptimizeWarning,
                stacklevel=3,
            )

"""``minimize``: a scipy.optimize.minimize-style front end to arrayopt's optimizers.

For code written against ``scipy.optimize.minimize(fun, x0, jac=..., method=...,
bounds=...)``: the objective gets an array of ``x0``'s library (NumPy, CuPy, any
array-API library) and the result is an :class:`OptimizeResult` (a dict with
attribute access) with the fields SciPy's has. ``method="L-BFGS-B"`` is
:mod:`arrayopt.lbfgsb`, SciPy's algorithm with its options and messages; gradients
may come from finite differences with SciPy's steps. SciPy itself is not used.
"""

import inspect
import math
from collections.abc import Callable
from typing import Any

from arrayopt.backends import Backend, get_backend, host_array, is_array
from arrayopt.lbfgsb import Box, LbfgsInvHessProduct, lbfgsb
from arrayopt.optimizer import Optimizer
from arrayopt.optimizers.lbfgs import LBFGS, _loss_value
from arrayopt.parameter import Parameter

__all__ = ["OptimizeResult", "minimize"]


class OptimizeResult(dict[str, Any]):
    """The result of :func:`minimize`, shaped like ``scipy.optimize.OptimizeResult``.

    A dict whose keys are also attributes: ``x``, ``fun``, ``jac``, ``nit``, ``nfev``,
    ``njev``, ``success``, ``status`` and ``message``, and ``hess_inv`` for the
    quasi-Newton methods. ``callback`` functions receive one with ``x`` and ``fun`` as
    ``intermediate_result``.

    Args:
        kwargs: the keys and their values (a mapping or key-value pairs may come first,
            positionally, as for ``dict``).

    Example:
        >>> result = OptimizeResult(x=[1.0, 2.0], fun=0.5, success=True)
        >>> result.fun, result["success"]
        (0.5, True)
        >>> result.nit = 3
        >>> sorted(result)
        ['fun', 'nit', 'success', 'x']
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    __setattr__ = dict.__setitem__
    __delattr__ = dict.__delitem__

    def __dir__(self) -> list[str]:
        return list(self.keys())

    def __repr__(self) -> str:
        if not self:
            return f"{type(self).__name__}()"
        width = max(len(key) for key in self) + 1
        lines = []
        for key, value in self.items():
            text = repr(value).replace("\n", "\n" + " " * (width + 2))
            lines.append(f"{key.rjust(width)}: {text}")
        return "\n".join(lines)


#: minimize's options for method "lbfgs" that are not LBFGS's own keyword names
_LBFGS_ALIASES = {"maxiter": "max_iter", "maxfun": "max_eval", "gtol": "tolerance_grad", "maxcor": "history_size"}
#: minimize's defaults for LBFGS where they differ from the class's (SciPy's L-BFGS-B
#: keeps 10 pairs and runs up to 15000 iterations and 15000 evaluations, each budget
#: on its own; a fixed step without a line search is rarely what a minimize() caller wants)
_LBFGS_DEFAULTS = {"max_iter": 15000, "max_eval": 15000, "history_size": 10, "line_search_fn": "strong_wolfe"}
_FIRST_ORDER_DEFAULTS = {"maxiter": 1000, "gtol": 1e-5}
#: method "l-bfgs-b": SciPy's options and defaults (ftol is SciPy's 1e7 * machine epsilon)
_LBFGSB_DEFAULTS: dict[str, Any] = {
    "maxcor": 10,
    "ftol": 2.2204460492503131e-09,
    "gtol": 1e-5,
    "eps": 1e-8,
    "maxfun": 15000,
    "maxiter": 15000,
    "maxls": 20,
    "finite_diff_rel_step": None,
}
#: options SciPy accepts and ignores (deprecated printing)
_IGNORED = ("disp", "iprint")
#: SciPy's finite-difference schemes for ``jac``
_SCHEMES = ("2-point", "3-point")

_CONVERGED_GRADIENT = "Optimization terminated successfully: the largest gradient entry is at most the tolerance."
_MESSAGES = {
    "gradient": (0, _CONVERGED_GRADIENT),
    "initial gradient": (0, _CONVERGED_GRADIENT),
    "step": (0, "Optimization terminated successfully: the step is below tolerance_change."),
    "loss change": (0, "Optimization terminated successfully: the change of the objective is below tolerance_change."),
    "not a descent direction": (
        0,
        "Optimization terminated successfully: the directional derivative is above -tolerance_change.",
    ),
    "max_iter": (1, "Maximum number of iterations has been exceeded."),
    "max_eval": (1, "Maximum number of function evaluations has been exceeded."),
    "callback": (99, "`callback` raised `StopIteration`."),
    "nonfinite": (2, "The objective or its gradient is not finite at x0."),
    "no finite step": (2, "The line search found no point where the objective and its gradient are finite."),
}


def minimize(
    fun: Callable[..., Any],
    x0: Any,
    args: tuple[Any, ...] = (),
    *,
    method: "str | type[Optimizer] | None" = None,
    jac: "bool | str | Callable[..., Any] | None" = None,
    bounds: Any = None,
    tol: float | None = None,
    callback: Callable[..., Any] | None = None,
    options: dict[str, Any] | None = None,
) -> OptimizeResult:
    r"""Minimise ``fun`` from ``x0`` with L-BFGS-B, arrayopt's LBFGS or a first-order optimizer.

    Args:
        fun: the objective, ``fun(x, *args)``. With ``jac=True`` it returns
            ``(value, gradient)``; otherwise the value. The value is a number or a
            1-element array; the gradient an array of ``x``'s library with ``x``'s
            number of entries. ``x`` is a fresh copy each call (``fun`` may modify it).
        x0: the starting point: an array of any shape (NumPy, CuPy or array-API), or
            a number, list or tuple (converted with NumPy; a number becomes shape
            ``(1,)`` as in SciPy). It is not modified. Integers become float64.
        args: extra positional arguments for ``fun`` and ``jac``.
        method: ``"L-BFGS-B"`` (:mod:`arrayopt.lbfgsb`; also ``"lbfgsb"``),
            ``"lbfgs"`` (:class:`arrayopt.LBFGS`; also ``"L-BFGS"``), or the name of
            any other arrayopt optimizer (``"adam"``, ``"sgd"``, ...), case-insensitive,
            or an optimizer class. Default: ``"L-BFGS-B"`` with ``bounds``, else
            ``"lbfgs"``.
        jac: True if ``fun`` returns the gradient too; a callable ``jac(x, *args)``;
            ``"2-point"`` or ``"3-point"`` for finite differences with relative steps
            :math:`h = \epsilon^{1/2}\,\mathrm{sign}(x) \max(1, |x|)` (``"3-point"``:
            :math:`\epsilon^{1/3}`, central where the bounds allow), :math:`\epsilon` the
            dtype's machine epsilon, or ``finite_diff_rel_step`` times
            :math:`\mathrm{sign}(x)|x|`; None (or False) for forward differences with the
            absolute step ``eps`` (option, default 1e-8, for ``"L-BFGS-B"`` and
            ``"lbfgs"``) or :math:`\epsilon^{1/2}` (other methods). Steps that would
            leave the bounds are flipped or shortened as SciPy does; variables fixed by
            their bounds are not differenced (their gradient entry is reported as NaN,
            as SciPy reports it). One evaluation per variable (two for ``"3-point"``).
        bounds: ``(min, max)`` pairs, one per entry of ``x0`` (None or an infinity
            for no bound), or an object with ``lb`` and ``ub`` like
            ``scipy.optimize.Bounds`` (numbers or arrays broadcast to ``x0``'s shape).
            Only ``"L-BFGS-B"`` takes bounds. ``x0`` is projected into the box.
        tol: ``"L-BFGS-B"``: ``ftol`` and ``gtol``; ``"lbfgs"``: ``tolerance_grad`` and
            ``tolerance_change``; first-order methods: ``gtol``. Options given
            explicitly take precedence.
        callback: called after each iteration, as ``callback(intermediate_result)``
            when its only parameter is named ``intermediate_result`` (an
            :class:`OptimizeResult` with ``x`` and ``fun``), else as ``callback(x)``.
            Raising ``StopIteration`` ends the run (``status`` 99), as in SciPy.
        options: for ``"L-BFGS-B"``, SciPy's: ``maxcor`` (10), ``ftol`` (2.2e-9),
            ``gtol`` (1e-5), ``eps`` (1e-8), ``maxfun`` (15000), ``maxiter`` (15000),
            ``maxls`` (20), ``finite_diff_rel_step``; ``disp`` and ``iprint`` are
            accepted and ignored. For ``"lbfgs"``, LBFGS's keyword arguments, with
            SciPy's names accepted too (``maxiter``, ``maxfun``, ``gtol``, ``maxcor``);
            the defaults are LBFGS's except ``line_search_fn="strong_wolfe"``,
            ``max_iter=15000``, ``max_eval=15000`` and ``history_size=10`` (so
            ``maxiter`` alone means that many iterations, as in SciPy). All iterations
            run in one ``LBFGS.step``. For a first-order method, the optimizer's
            keyword arguments plus ``maxiter`` (iteration budget, default 1000) and
            ``gtol`` (stop when the largest gradient entry is at most this, default
            1e-5).

    Returns:
        An :class:`OptimizeResult`: ``x`` (same library, dtype and shape as ``x0``),
        ``fun``, ``jac`` (the gradient at ``x``), ``nit`` (iterations that moved
        ``x``), ``nfev`` (evaluations of ``fun``, finite differences included),
        ``njev`` (gradients), ``success``, ``status`` (0 converged, 1 budget
        exhausted, 2 stopped otherwise (a failed line search, non-finite values), 99
        stopped by the callback), ``message``, and for ``"L-BFGS-B"`` and ``"lbfgs"``
        ``hess_inv``, the inverse-Hessian estimate as an
        :class:`arrayopt.lbfgsb.LbfgsInvHessProduct` (``@``, ``.dot``, ``.todense()``).

    A value or gradient that is not finite at a trial point of a line search makes
    the search shorten its step, as if the value were :math:`+\infty`; when no finite
    step is found the result is the last good point, with ``success=False``. A
    first-order method stops at its last finite iterate.

    Example:
        >>> import numpy as np
        >>> from arrayopt import minimize
        >>> def rosen(x):
        ...     value = np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
        ...     grad = np.zeros_like(x)
        ...     grad[:-1] = -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
        ...     grad[1:] += 200 * (x[1:] - x[:-1] ** 2)
        ...     return value, grad
        >>> result = minimize(rosen, np.array([-1.2, 1.0, -1.2, 1.0]), jac=True)
        >>> result.success, np.round(result.x, 4)
        (True, array([1., 1., 1., 1.]))
        >>> bounded = minimize(rosen, [-1.2, 1.0, -1.2, 1.0], jac=True, bounds=[(None, 0.5)] * 4)
        >>> bounded.message, np.round(bounded.x, 4)
        ('CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL', array([0.5   , 0.2622, 0.078 , 0.0061]))
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    if jac is False:
        jac = None
    if not (jac is None or jac is True or callable(jac) or jac in _SCHEMES):
        raise ValueError(f"jac must be True, a callable, None, '2-point' or '3-point'; got {jac!r}")
    options = dict(options or {})
    if method is None:
        method = "l-bfgs-b" if bounds is not None else "lbfgs"
    x = _start(x0)
    backend = get_backend(x)
    report = _wrap_callback(callback, backend.xp)
    if _is_lbfgsb(method):
        box = Box.from_bounds(bounds, x) if bounds is not None else None
        return _run_lbfgsb(fun, jac, args, x, box, options, tol, report)
    optimizer_cls = _optimizer_class(method)
    if bounds is not None:
        raise ValueError(f"method {optimizer_cls.__name__!r} cannot handle bounds: use method='L-BFGS-B'")
    for key in _IGNORED:
        options.pop(key, None)
    rel_step = options.pop("finite_diff_rel_step", None)
    if issubclass(optimizer_cls, LBFGS):
        abs_step = options.pop("eps", 1e-8)
        objective = _Objective(fun, jac, args, x, abs_step=abs_step, rel_step=rel_step)
        return _run_lbfgs(optimizer_cls, x, objective, options, tol, report)
    objective = _Objective(fun, jac, args, x, rel_step=rel_step)
    return _run_first_order(optimizer_cls, x, objective, options, tol, report)


class _Objective:
    """``fun`` and its gradient at flat points: counted, on fresh copies, by finite differences without ``jac``.

    ``value(flat)`` evaluates ``fun`` once; calling the object gives ``(value,
    flat_gradient)``. Values may be non-finite (the methods decide what to do).
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        jac: Any,
        args: tuple[Any, ...],
        like: Any,
        *,
        box: Box | None = None,
        abs_step: float | None = None,
        rel_step: Any = None,
    ) -> None:
        self.fun, self.jac, self.args = fun, jac, args
        self.shape = tuple(like.shape)
        self.backend: Backend = get_backend(like)
        self.box = box
        self.abs_step = abs_step
        self.rel_step = rel_step
        self.differences = jac is None or isinstance(jac, str)
        self.nfev = 0
        self.njev = 0

    def _point(self, flat: Any) -> Any:
        """The user's view of a flat point: shaped like x0, a fresh copy."""
        xp = self.backend.xp
        return xp.asarray(xp.reshape(flat, self.shape), copy=True)

    def value(self, flat: Any) -> float:
        self.nfev += 1
        out = self.fun(self._point(flat), *self.args)
        if self.jac is True:
            out = _pair(out)[0]
        return _loss_value(out, allow_nan=True)

    def __call__(self, flat: Any) -> tuple[float, Any]:
        xp = self.backend.xp
        if self.jac is True:
            self.nfev += 1
            point = self._point(flat)
            value, grad = _pair(self.fun(point, *self.args))
            value = _loss_value(value, allow_nan=True)
        elif callable(self.jac):
            self.nfev += 1
            point = self._point(flat)
            value = _loss_value(self.fun(point, *self.args), allow_nan=True)
            grad = self.jac(self._point(flat), *self.args)
        else:
            value = self.value(flat)
            self.njev += 1
            return value, self._differences(flat, value)
        self.njev += 1
        grad = _gradient(grad, point)
        return value, xp.reshape(grad, flat.shape)

    def _differences(self, x: Any, f0: float) -> Any:
        """The gradient by SciPy's finite differences (``approx_derivative``'s steps and bound handling)."""
        backend = self.backend
        xp = backend.xp
        n = x.shape[0]
        eps = float(xp.finfo(x.dtype).eps)
        scheme = "3-point" if self.jac == "3-point" else "2-point"
        default = eps ** (0.5 if scheme == "2-point" else 1.0 / 3.0)
        sign = xp.where(x >= 0, xp.ones_like(x), -xp.ones_like(x))
        automatic = default * sign * xp.maximum(xp.ones_like(x), xp.abs(x))
        if self.jac is None and self.abs_step is not None:
            h = xp.full_like(x, self.abs_step)
        elif self.rel_step is not None:
            h = xp.asarray(self.rel_step, dtype=x.dtype) * sign * xp.abs(x)
        else:
            h = automatic
        h = xp.where((x + h) - x == 0, automatic, h)
        one_sided = xp.ones(x.shape, dtype=xp.bool, device=backend.device(x))
        skip = xp.zeros(x.shape, dtype=xp.bool, device=backend.device(x))
        box = self.box
        if box is not None and box.constrained:
            skip = box.fixed
            below, above = x - box.lower, box.upper - x
            if scheme == "2-point":
                violated = ((x + h) < box.lower) | ((x + h) > box.upper)
                fitting = xp.abs(h) <= xp.maximum(below, above)
                h = xp.where(violated & fitting, -h, h)
                h = xp.where(~fitting, xp.where(above >= below, above, -below), h)
            else:
                h = xp.abs(h)
                central = (below >= h) & (above >= h)
                forward = (above >= below) & ~central
                h = xp.where(forward, xp.minimum(h, 0.5 * above), h)
                h = xp.where(~forward & ~central, -xp.minimum(h, 0.5 * below), h)
                nearest = xp.minimum(above, below)
                recentred = ~central & (xp.abs(h) <= nearest)
                h = xp.where(recentred, nearest, h)
                one_sided = ~central & ~recentred
        if scheme == "2-point":
            steps = (x + h) - x
        else:
            steps = xp.where(one_sided, (x + 2 * h) - x, (x + h) - (x - h))
        flags = backend.to_numpy(xp.stack([one_sided, skip])).tolist()
        differences = []
        for i in range(n):
            if flags[1][i]:
                differences.append(0.0)
                continue
            first = xp.asarray(x, copy=True)
            if scheme == "2-point":
                first[i] = x[i] + h[i]
                differences.append(self.value(first) - f0)
            elif flags[0][i]:
                first[i] = x[i] + h[i]
                second = xp.asarray(x, copy=True)
                second[i] = x[i] + 2 * h[i]
                f1, f2 = self.value(first), self.value(second)
                differences.append(-3.0 * f0 + 4 * f1 - f2)
            else:
                first[i] = x[i] - h[i]
                second = xp.asarray(x, copy=True)
                second[i] = x[i] + h[i]
                f1, f2 = self.value(first), self.value(second)
                differences.append(f2 - f1)
        numerators = xp.asarray(differences, dtype=x.dtype, device=backend.device(x))
        return xp.where(skip, xp.zeros_like(x), numerators / xp.where(skip, xp.ones_like(x), steps))


def _pair(out: Any) -> tuple[Any, Any]:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"with jac=True, fun must return (value, gradient), got {type(out).__name__}")
    return out[0], out[1]


def _is_lbfgsb(method: Any) -> bool:
    return isinstance(method, str) and method.lower().replace("-", "").replace("_", "") == "lbfgsb"


def _run_lbfgsb(
    fun: Callable[..., Any],
    jac: Any,
    args: tuple[Any, ...],
    x: Any,
    box: Box | None,
    options: dict[str, Any],
    tol: float | None,
    report: Callable[[Any, float], bool] | None,
) -> OptimizeResult:
    backend = get_backend(x)
    xp = backend.xp
    if backend.is_complex(x):
        raise TypeError(f"method 'L-BFGS-B' needs a real x0, got dtype {x.dtype}")
    chosen = dict(_LBFGSB_DEFAULTS)
    explicit = set()
    for key, value in options.items():
        if key in _IGNORED:
            continue
        if key not in chosen:
            raise TypeError(
                f"unknown option {key!r} for method 'L-BFGS-B'; valid: {sorted(set(chosen) | set(_IGNORED))}"
            )
        chosen[key] = value
        explicit.add(key)
    if tol is not None:
        for key in ("ftol", "gtol"):
            if key not in explicit:
                chosen[key] = tol
    for key in ("maxcor", "maxls"):
        value = chosen[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    for key in ("ftol", "gtol", "eps", "maxfun", "maxiter"):
        value = chosen[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{key} must be a non-negative number, got {value!r}")
    n = math.prod(x.shape)
    flat = xp.reshape(x, (n,))
    if box is None:
        box = Box(xp.full_like(flat, -xp.inf), xp.full_like(flat, xp.inf))
    objective = _Objective(fun, jac, args, x, box=box, abs_step=chosen["eps"], rel_step=chosen["finite_diff_rel_step"])
    if box.all_fixed:
        point = box.lower
        value = objective.value(point)
        return OptimizeResult(
            x=xp.reshape(point, x.shape),
            fun=value,
            nit=0,
            nfev=objective.nfev,
            njev=0,
            status=0,
            success=True,
            message="All independent variables were fixed by bounds.",
        )
    stopped = [False]

    def on_iteration(point: Any, value: float) -> bool:
        assert report is not None
        stopped[0] = report(xp.reshape(point, x.shape), value)
        return stopped[0]

    out = lbfgsb(
        objective,
        flat,
        box,
        maxcor=chosen["maxcor"],
        ftol=chosen["ftol"],
        gtol=chosen["gtol"],
        maxiter=chosen["maxiter"],
        maxfun=chosen["maxfun"],
        maxls=chosen["maxls"],
        callback=on_iteration if report is not None else None,
        count=lambda: objective.nfev,
    )
    grad = out["jac"]
    if objective.differences:
        grad = xp.where(box.fixed, xp.full_like(grad, xp.nan), grad)
    status, message = out["status"], out["message"]
    if stopped[0]:
        status, message = _MESSAGES["callback"]
    result = _result(
        xp.reshape(out["x"], x.shape),
        out["fun"],
        xp.reshape(grad, x.shape),
        out["nit"],
        objective.nfev,
        status,
        message,
        njev=objective.njev,
    )
    result["hess_inv"] = out["hess_inv"]
    return result


def _run_lbfgs(
    optimizer_cls: type[LBFGS],
    x: Any,
    objective: _Objective,
    options: dict[str, Any],
    tol: float | None,
    report: Callable[[Any, float], bool] | None,
) -> OptimizeResult:
    kwargs: dict[str, Any] = {}
    # minimize minimises: LBFGS's maximize (which negates what _last_eval reports) is not an option
    valid = set(inspect.signature(LBFGS).parameters) - {"params", "maximize"}
    for key, value in options.items():
        name = _LBFGS_ALIASES.get(key, key)
        if name not in valid:
            raise TypeError(f"unknown option {key!r} for method 'lbfgs'; valid: {sorted(valid | set(_LBFGS_ALIASES))}")
        if name in kwargs:
            raise TypeError(f"option {name!r} given twice (as {key!r} and under another name)")
        kwargs[name] = value
    if tol is not None:
        kwargs.setdefault("tolerance_grad", tol)
        kwargs.setdefault("tolerance_change", tol)
    for key, value in _LBFGS_DEFAULTS.items():
        kwargs.setdefault(key, value)
    backend = get_backend(x)
    xp = backend.xp
    if objective.differences and backend.is_complex(x):
        raise TypeError(f"finite differences need a real x0, got dtype {x.dtype}; pass jac")
    param = Parameter(x)
    optimizer = optimizer_cls([param], **kwargs)
    nonfinite = {"now": False}

    def evaluate() -> tuple[float, Any]:
        value, grad = objective(xp.reshape(param.data, (-1,)))
        grad = xp.reshape(grad, x.shape)
        if not (math.isfinite(value) and _all_finite(backend, grad)):
            # as if the value were +inf: the strong-Wolfe search then bisects back
            nonfinite["now"] = True
            return math.inf, xp.full_like(grad, xp.nan)
        return value, grad

    start = evaluate()
    if nonfinite["now"]:
        status, message = _MESSAGES["nonfinite"]
        return _result(param.data, start[0], start[1], 0, objective.nfev, status, message, njev=objective.njev)
    pending = [start]
    latest: dict[str, Any] = {}

    def closure() -> float:
        value, grad = pending.pop() if pending else evaluate()
        param.grad = grad
        latest["fun"], latest["jac"] = value, grad
        return value

    def current() -> tuple[float, Any]:
        """The objective and gradient at the current x (evaluated here if LBFGS has not)."""
        last = optimizer._last_eval
        assert last is not None
        loss, flat_grad, fresh = last
        if fresh:
            return loss, _unflatten(param.data, flat_grad)
        if latest.get("source") is not last:
            # without a line search LBFGS moves on its last iteration without evaluating
            closure()
            latest["source"] = last
        return latest["fun"], latest["jac"]

    moves = {"nit": 0}

    def on_iteration() -> bool:
        # after each move of x; an iteration that stops before moving (its direction
        # is not a descent direction) counts in LBFGS's n_iter but not here
        moves["nit"] += 1
        nonfinite["last"] = nonfinite["now"]
        nonfinite["now"] = False
        if report is None:
            return False
        value, _ = current()
        return report(param.data, value)

    optimizer._on_iteration = on_iteration
    optimizer.step(closure)
    value, grad = current()
    reason = optimizer._stop_reason
    if reason in ("step", "loss change") and nonfinite.get("last"):
        reason = "no finite step"
    status, message = _MESSAGES[reason]
    result = _result(param.data, value, grad, moves["nit"], objective.nfev, status, message, njev=objective.njev)
    if not backend.is_complex(x):
        result["hess_inv"] = _lbfgs_inverse_hessian(optimizer, param, backend)
    return result


def _lbfgs_inverse_hessian(optimizer: LBFGS, param: Parameter, backend: Backend) -> LbfgsInvHessProduct:
    """LBFGS's pairs and scaling as an inverse-Hessian operator (torch keeps them in the state)."""
    xp = backend.xp
    state = optimizer.state[param]
    steps, changes = state.get("old_stps") or [], state.get("old_dirs") or []
    n = math.prod(param.data.shape)
    if steps:
        s, y = list(steps), list(changes)
    else:
        s = y = xp.zeros((0, n), dtype=param.data.dtype, device=backend.device(param.data))
    h_diag = state.get("H_diag", 1)
    h0 = float(backend.to_numpy(h_diag)) if is_array(h_diag) else float(h_diag)
    return LbfgsInvHessProduct(s, y, h0)


def _all_finite(backend: Backend, array: Any) -> bool:
    xp = backend.xp
    return bool(backend.to_numpy(xp.all(xp.isfinite(array))))


def _run_first_order(
    optimizer_cls: type[Optimizer],
    x: Any,
    objective: _Objective,
    options: dict[str, Any],
    tol: float | None,
    report: Callable[[Any, float], bool] | None,
) -> OptimizeResult:
    budget = {key: options.pop(key) for key in list(options) if key in _FIRST_ORDER_DEFAULTS}
    if tol is not None:
        budget.setdefault("gtol", tol)
    for key, value in _FIRST_ORDER_DEFAULTS.items():
        budget.setdefault(key, value)
    maxiter, gtol = budget["maxiter"], budget["gtol"]
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 0:
        raise ValueError(f"maxiter must be a non-negative integer, got {maxiter!r}")
    backend = get_backend(x)
    xp = backend.xp
    if objective.differences and backend.is_complex(x):
        raise TypeError(f"finite differences need a real x0, got dtype {x.dtype}; pass jac")
    param = Parameter(x)
    try:
        optimizer = optimizer_cls([param], **options)
    except TypeError as exc:
        raise TypeError(f"{exc} (options for method {optimizer_cls.__name__!r})") from None

    def evaluate() -> tuple[float, Any, float]:
        value, grad = objective(xp.reshape(param.data, (-1,)))
        grad = xp.reshape(grad, x.shape)
        return value, grad, float(backend.to_numpy(xp.max(xp.abs(grad))))

    value, grad, largest = evaluate()
    nit = 0
    status, message = _MESSAGES["max_iter"]
    if not (math.isfinite(value) and math.isfinite(largest)):
        status, message = _MESSAGES["nonfinite"]
        return _result(param.data, value, grad, nit, objective.nfev, status, message, njev=objective.njev)
    while True:
        if largest <= gtol:
            status, message = 0, "Optimization terminated successfully."
            break
        if nit >= maxiter:
            break
        previous = (xp.asarray(param.data, copy=True), value, grad)
        param.grad = grad
        optimizer.step()
        nit += 1
        value, grad, largest = evaluate()
        if not (math.isfinite(value) and math.isfinite(largest)):
            param.data[...] = previous[0]
            value, grad = previous[1], previous[2]
            nit -= 1
            status = 2
            message = (
                f"The objective or its gradient is not finite after iteration {nit + 1}: "
                f"the result is iteration {nit}'s point."
            )
            break
        if report is not None and report(param.data, value):
            status, message = _MESSAGES["callback"]
            break
    return _result(param.data, value, grad, nit, objective.nfev, status, message, njev=objective.njev)


def _result(
    x: Any, value: float, grad: Any, nit: int, nfev: int, status: int, message: str, njev: int | None = None
) -> OptimizeResult:
    return OptimizeResult(
        x=x,
        fun=value,
        jac=grad,
        nit=nit,
        nfev=nfev,
        njev=nfev if njev is None else njev,
        status=status,
        success=status == 0,
        message=message,
    )


def _optimizer_class(method: Any) -> type[Optimizer]:
    if isinstance(method, type) and issubclass(method, Optimizer):
        return method
    if not isinstance(method, str):
        raise TypeError(f"method must be a name or an arrayopt optimizer class, got {method!r}")
    import arrayopt

    key = method.lower().replace("-", "").replace("_", "")
    names = {}
    for name in arrayopt.__all__:
        obj = getattr(arrayopt, name)
        if isinstance(obj, type) and issubclass(obj, Optimizer) and obj is not Optimizer:
            names[name.lower()] = obj
    if key in names:
        return names[key]
    raise ValueError(f"Unknown method {method!r}; choose 'L-BFGS-B' or one of {sorted(names)}")


def _start(x0: Any) -> Any:
    """A private, floating-point copy of ``x0`` (a number, list or tuple through NumPy, at least 1-D)."""
    if not is_array(x0):
        try:
            host = host_array(x0)
        except (TypeError, ValueError):
            host = None
        if host is None or host.dtype.kind not in "biufc":
            raise TypeError(
                f"x0 must be an array (NumPy, CuPy or array-API), a number, or a list or tuple of numbers; "
                f"got {type(x0).__name__}"
            )
        x0 = get_backend(host).xp.reshape(host, (-1,)) if host.ndim == 0 else host
    backend = get_backend(x0)
    xp = backend.xp
    if backend.is_floating(x0):
        return xp.asarray(x0, copy=True)
    if xp.isdtype(x0.dtype, ("integral", "bool")):
        return xp.astype(x0, xp.float64)
    raise TypeError(f"x0 must have a real, complex or integer dtype, got {x0.dtype}")


def _gradient(grad: Any, x: Any) -> Any:
    """``grad`` as an array shaped and typed like ``x`` (a fresh copy, never aliasing it)."""
    backend = get_backend(x)
    if not is_array(grad) or get_backend(grad) is not backend:
        raise TypeError(
            f"the gradient must be a {backend.name} array like x, got {type(grad).__module__}.{type(grad).__name__}"
        )
    xp = backend.xp
    if math.prod(grad.shape) != math.prod(x.shape):
        raise ValueError(f"the gradient has shape {tuple(grad.shape)}, but x has shape {tuple(x.shape)}")
    grad = xp.reshape(grad, x.shape)
    if grad.dtype != x.dtype:
        return xp.astype(grad, x.dtype)
    return xp.asarray(grad, copy=True)


def _unflatten(x: Any, flat: Any) -> Any:
    """LBFGS's flat real gradient vector as an array shaped like ``x`` (complex if ``x`` is)."""
    xp = get_backend(x).xp
    if xp.isdtype(x.dtype, "complex floating"):
        flat = xp.astype(flat[0::2], x.dtype) + xp.astype(flat[1::2], x.dtype) * 1j
    return xp.reshape(flat, x.shape)


def _wrap_callback(callback: Callable[..., Any] | None, xp: Any) -> Callable[[Any, float], bool] | None:
    """``report(x, fun) -> stop?`` calling ``callback`` in SciPy's new or legacy style."""
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    try:
        new_style = set(inspect.signature(callback).parameters) == {"intermediate_result"}
    except (TypeError, ValueError):
        new_style = False

    def report(x: Any, value: float) -> bool:
        snapshot = xp.asarray(x, copy=True)
        try:
            if new_style:
                callback(intermediate_result=OptimizeResult(x=snapshot, fun=value))
            else:
                callback(snapshot)
        except StopIteration:
            return True
        return False

    return report

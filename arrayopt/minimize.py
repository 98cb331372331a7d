"""``minimize``: a scipy.optimize.minimize-style front end to arrayopt's optimizers.

For code written against ``scipy.optimize.minimize(fun, x0, jac=True, method=...)``:
the objective gets an array of ``x0``'s library (NumPy, CuPy, any array-API library)
and the result is an :class:`OptimizeResult` (a dict with attribute access) with the
fields scipy's has. SciPy itself is not used.
"""

import inspect
import math
from collections.abc import Callable
from typing import Any

from arrayopt.backends import get_backend, is_array
from arrayopt.optimizer import Optimizer
from arrayopt.optimizers.lbfgs import LBFGS, _loss_value
from arrayopt.parameter import Parameter

__all__ = ["OptimizeResult", "minimize"]


class OptimizeResult(dict[str, Any]):
    """The result of :func:`minimize`, shaped like ``scipy.optimize.OptimizeResult``.

    A dict whose keys are also attributes: ``x``, ``fun``, ``jac``, ``nit``, ``nfev``,
    ``njev``, ``success``, ``status`` and ``message``. ``callback`` functions receive
    one with ``x`` and ``fun`` as ``intermediate_result``.

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
#: keeps 10 pairs and runs up to 15000 iterations; a fixed step without a line search
#: is rarely what a minimize() caller wants)
_LBFGS_DEFAULTS = {"max_iter": 15000, "history_size": 10, "line_search_fn": "strong_wolfe"}
_FIRST_ORDER_DEFAULTS = {"maxiter": 1000, "gtol": 1e-5}

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
}


def minimize(
    fun: Callable[..., Any],
    x0: Any,
    args: tuple[Any, ...] = (),
    *,
    method: "str | type[Optimizer]" = "lbfgs",
    jac: "bool | Callable[..., Any] | None" = None,
    tol: float | None = None,
    callback: Callable[..., Any] | None = None,
    options: dict[str, Any] | None = None,
) -> OptimizeResult:
    r"""Minimise ``fun`` from ``x0`` with arrayopt's LBFGS or a first-order optimizer.

    Args:
        fun: the objective, ``fun(x, *args)``. With ``jac=True`` it returns
            ``(value, gradient)``; otherwise the value. The value is a number or a
            1-element array; the gradient an array of ``x``'s library with ``x``'s
            number of entries. ``x`` is the optimizer's own array: do not modify it.
        x0: the starting point, an array of any shape (NumPy, CuPy or array-API). It
            is not modified. Integer arrays are converted to float64.
        args: extra positional arguments for ``fun`` and ``jac``.
        method: ``"lbfgs"`` (:class:`arrayopt.LBFGS`; also ``"L-BFGS"``) or the name of
            any other arrayopt optimizer (``"adam"``, ``"sgd"``, ...; case-insensitive),
            or an optimizer class.
        jac: True if ``fun`` returns the gradient too, or a callable ``jac(x, *args)``.
            There is no finite-difference fallback.
        tol: LBFGS: ``tolerance_grad`` and ``tolerance_change``; first-order methods:
            ``gtol``. Options given explicitly take precedence.
        callback: called after each iteration, as ``callback(intermediate_result)``
            when its only parameter is named ``intermediate_result`` (an
            :class:`OptimizeResult` with ``x`` and ``fun``), else as ``callback(x)``.
            Raising ``StopIteration`` ends the run (``status`` 99), as in SciPy.
        options: for ``"lbfgs"``, LBFGS's keyword arguments, with SciPy's names
            accepted too (``maxiter``, ``maxfun``, ``gtol``, ``maxcor``); the defaults
            are LBFGS's except ``line_search_fn="strong_wolfe"``, ``max_iter=15000``
            and ``history_size=10``. All iterations run in one ``LBFGS.step``. For a
            first-order method, the optimizer's keyword arguments plus ``maxiter``
            (iteration budget, default 1000) and ``gtol`` (stop when the largest
            gradient entry is at most this, default 1e-5).

    Returns:
        An :class:`OptimizeResult`: ``x`` (same library, dtype and shape as ``x0``),
        ``fun``, ``jac`` (the gradient at ``x``), ``nit`` (iterations that moved ``x``), ``nfev`` and
        ``njev`` (evaluations), ``success``, ``status`` (0 converged, 1 budget
        exhausted, 99 stopped by the callback) and ``message``.

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
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    if jac is not True and not callable(jac):
        raise ValueError(
            "minimize needs the gradient: pass jac=True (fun returns (value, gradient)) or a callable "
            f"jac(x, *args); got jac={jac!r} (arrayopt has no finite differences)"
        )
    optimizer_cls = _optimizer_class(method)
    options = dict(options or {})
    x = _start(x0)
    backend = get_backend(x)
    xp = backend.xp
    param = Parameter(x)
    report = _wrap_callback(callback, xp)
    counts = {"nfev": 0}

    def evaluate() -> tuple[float, Any]:
        counts["nfev"] += 1
        data = param.data
        if jac is True:
            out = fun(data, *args)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise TypeError(f"with jac=True, fun must return (value, gradient), got {type(out).__name__}")
            value, grad = out
        else:
            value = fun(data, *args)
            grad = jac(data, *args)
        return _loss_value(value), _gradient(grad, data)

    if issubclass(optimizer_cls, LBFGS):
        return _run_lbfgs(optimizer_cls, param, evaluate, options, tol, report, counts)
    return _run_first_order(optimizer_cls, param, evaluate, options, tol, report, counts)


def _run_lbfgs(
    optimizer_cls: type[LBFGS],
    param: Parameter,
    evaluate: Callable[[], tuple[float, Any]],
    options: dict[str, Any],
    tol: float | None,
    report: Callable[[Any, float], bool] | None,
    counts: dict[str, int],
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
    optimizer = optimizer_cls([param], **kwargs)
    latest: dict[str, Any] = {}

    def closure() -> float:
        value, grad = evaluate()
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
        if report is None:
            return False
        value, _ = current()
        return report(param.data, value)

    optimizer._on_iteration = on_iteration
    optimizer.step(closure)
    value, grad = current()
    status, message = _MESSAGES[optimizer._stop_reason]
    return _result(param.data, value, grad, moves["nit"], counts["nfev"], status, message)


def _run_first_order(
    optimizer_cls: type[Optimizer],
    param: Parameter,
    evaluate: Callable[[], tuple[float, Any]],
    options: dict[str, Any],
    tol: float | None,
    report: Callable[[Any, float], bool] | None,
    counts: dict[str, int],
) -> OptimizeResult:
    budget = {key: options.pop(key) for key in list(options) if key in _FIRST_ORDER_DEFAULTS}
    if tol is not None:
        budget.setdefault("gtol", tol)
    for key, value in _FIRST_ORDER_DEFAULTS.items():
        budget.setdefault(key, value)
    maxiter, gtol = budget["maxiter"], budget["gtol"]
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 0:
        raise ValueError(f"maxiter must be a non-negative integer, got {maxiter!r}")
    try:
        optimizer = optimizer_cls([param], **options)
    except TypeError as exc:
        raise TypeError(f"{exc} (options for method {optimizer_cls.__name__!r})") from None
    xp = get_backend(param.data).xp
    value, grad = evaluate()
    nit = 0
    status, message = _MESSAGES["max_iter"]
    while True:
        if float(xp.max(xp.abs(grad))) <= gtol:
            status, message = 0, "Optimization terminated successfully."
            break
        if nit >= maxiter:
            break
        param.grad = grad
        optimizer.step()
        nit += 1
        value, grad = evaluate()
        if report is not None and report(param.data, value):
            status, message = _MESSAGES["callback"]
            break
    return _result(param.data, value, grad, nit, counts["nfev"], status, message)


def _result(x: Any, value: float, grad: Any, nit: int, nfev: int, status: int, message: str) -> OptimizeResult:
    return OptimizeResult(
        x=x,
        fun=value,
        jac=grad,
        nit=nit,
        nfev=nfev,
        njev=nfev,
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
    hint = " (arrayopt's LBFGS has no bounds: use method='lbfgs')" if key == "lbfgsb" else ""
    raise ValueError(f"Unknown method {method!r}{hint}; choose one of {sorted(names)}")


def _start(x0: Any) -> Any:
    """A private, floating-point copy of ``x0``."""
    if not is_array(x0):
        raise TypeError(
            f"x0 must be an array (NumPy, CuPy or array-API), got {type(x0).__name__}; wrap lists with numpy.asarray"
        )
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

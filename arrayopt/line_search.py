r"""The strong-Wolfe line search of torch.optim.LBFGS, as a scalar algorithm.

Along a search direction :math:`d` from a point :math:`x`, the line function is
:math:`\phi(t) = f(x + t d)` with slope :math:`\phi'(t) = \nabla f(x + t d)^\top d`.
Starting from :math:`\phi(0)` and :math:`\phi'(0) < 0`, the search looks for a step
:math:`t` satisfying the strong Wolfe conditions

.. math::

    \phi(t) \le \phi(0) + c_1 t \phi'(0), \qquad |\phi'(t)| \le -c_2 \phi'(0).

It first *brackets* such a step: from the trial step it extrapolates (cubic
interpolation clamped to :math:`[t + 0.01 (t - t_{prev}), 10 t]`) until the
sufficient-decrease condition fails, the function stops decreasing, or the slope turns
non-negative. It then *zooms*: cubic interpolation inside the bracket, moved to 0.1 of
the bracket's width from an end when it lands too close to one twice in a row (or on
it), until the conditions hold, the bracket is narrower than ``tolerance_change`` in
parameter space, or ``max_ls`` evaluations are spent. A bracket whose two ends are the
same step (a step of 0, from ``lr=0``) ends the search there, with ``converged``
False; torch divides by zero in that case (ZeroDivisionError, or NaN steps). This is
torch 2.14's algorithm (unchanged since 2.13)
(``torch/optim/lbfgs.py``, itself after Mark Schmidt's minFunc) with the same
arithmetic in the same order, so from the same numbers it picks the same steps.

:func:`more_thuente` is the other classic: the Moré–Thuente search of MINPACK-2
(``dcsrch``/``dcstep``), which L-BFGS-B uses. It keeps an interval of uncertainty that
contains a step satisfying the same two conditions, chooses trial steps by cubic,
quadratic and secant interpolation safeguarded towards bisection, and never tries a
step outside ``[stpmin, stpmax]``, so that a caller moving inside a box can stop it at
the box's edge.

Everything here is scalars: :func:`strong_wolfe` and :func:`more_thuente` call
``phi(t)`` and never see an array. Python floats in, Python floats out. Any other real scalar type closed under
arithmetic works too and keeps its precision: :class:`arrayopt.LBFGS` passes slopes as
NumPy scalars of its parameters' dtype, so that with float32 parameters the tests and
the interpolation round in float32 exactly where torch computes with float32 0-d
tensors (the loss itself is a Python float in both). Its ``phi`` moves the parameters,
calls the closure and returns the loss, the slope and the flat gradient, an opaque
*payload* that the search hands back with the step it accepts.

Reference:
    Nocedal and Wright, *Numerical Optimization* (2nd ed.), Algorithms 3.5 and 3.6.
    Moré and Thuente, "Line search algorithms with guaranteed sufficient decrease",
    ACM Transactions on Mathematical Software 20 (1994), 286-307.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["LineSearchResult", "MoreThuenteResult", "cubic_interpolate", "more_thuente", "strong_wolfe"]


class LineSearchResult(NamedTuple):
    r"""What :func:`strong_wolfe` found: a named tuple.

    Args:
        t: the accepted step.
        f: :math:`\phi(t)`.
        slope: :math:`\phi'(t)`.
        payload: what ``phi`` returned with them at ``t`` (the caller's for ``t = 0``).
        evals: how many times ``phi`` was called.
        converged: whether the strong Wolfe conditions hold at ``t``.

    Example:
        >>> def phi(t):  # (t - 2)^2 along the line
        ...     return (t - 2.0) ** 2, 2.0 * (t - 2.0)
        >>> strong_wolfe(phi, 1.0, *phi(0.0))
        LineSearchResult(t=1.0, f=1.0, slope=-2.0, payload=None, evals=1, converged=True)
    """

    #: the accepted step
    t: float
    #: phi(t)
    f: float
    #: phi'(t)
    slope: float
    #: the payload ``phi`` returned with (f, slope) at ``t`` (the caller's for t = 0)
    payload: Any
    #: how many times ``phi`` was called
    evals: int
    #: True when the strong Wolfe conditions hold at ``t``; False when the search
    #: stopped on ``max_ls`` or on a bracket narrower than ``tolerance_change``
    converged: bool


def _div(a: float, b: float) -> float:
    """``a / b``, with IEEE's inf or NaN for a zero divisor (torch divides 0-d tensors here).

    A Python number divided by a NumPy scalar is computed as torch computes a number
    divided by a 0-d tensor: the reciprocal of the divisor, times the number (two
    roundings).
    """
    if b == 0:
        if a == 0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    if type(a) in (float, int) and type(b) not in (float, int):
        return (1.0 / b) * a
    return a / b


def _sqrt(x: float) -> float:
    """The correctly rounded square root, in the precision of ``x`` (a NumPy scalar stays one)."""
    root = math.sqrt(x)
    return root if type(x) in (float, int) else type(x)(root)


def cubic_interpolate(
    x1: float, f1: float, g1: float, x2: float, f2: float, g2: float, bounds: tuple[float, float] | None = None
) -> float:
    r"""The minimiser of the cubic through two points with values and slopes, clamped.

    With :math:`d_1 = g_1 + g_2 - 3 (f_1 - f_2) / (x_1 - x_2)` and
    :math:`d_2 = \sqrt{d_1^2 - g_1 g_2}`, the minimiser is (for :math:`x_1 \le x_2`)
    :math:`x_2 - (x_2 - x_1) (g_2 + d_2 - d_1) / (g_2 - g_1 + 2 d_2)`, clamped to
    ``bounds`` (default: the interval between the two points). When
    :math:`d_1^2 < g_1 g_2` the cubic has no minimiser and the midpoint of the bounds
    is returned. This is the interpolation of Nocedal and Wright, *Numerical
    Optimization* (2nd ed., 2006), eq. 3.59, as torch's L-BFGS uses it.

    Args:
        x1, f1, g1: the first point, the function's value and its slope there.
        x2, f2, g2: the second point (``x1 != x2``), value and slope.
        bounds: ``(lo, hi)`` to clamp the result to. Default: the two points' interval.

    Returns:
        The clamped minimiser (a Python float, or a NumPy scalar when the inputs are).

    Example:
        >>> # (x - 2)^2 at 0 and 3: the cubic through them is the parabola itself
        >>> cubic_interpolate(0.0, 4.0, -4.0, 3.0, 1.0, 2.0)
        2.0
        >>> cubic_interpolate(0.0, 4.0, -4.0, 3.0, 1.0, 2.0, bounds=(2.5, 4.0))
        2.5
        >>> cubic_interpolate(0.0, 0.0, 2.0, 1.0, 1.0, 2.0)  # no minimiser: the midpoint
        0.5
    """
    if bounds is not None:
        lo, hi = bounds
    else:
        lo, hi = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - _div(3 * (f1 - f2), x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    if d2_square >= 0:
        d2 = _sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * _div(g2 + d2 - d1, g2 - g1 + 2 * d2)
        else:
            min_pos = x1 - (x1 - x2) * _div(g1 + d2 - d1, g1 - g2 + 2 * d2)
        return min(max(min_pos, lo), hi)
    return (lo + hi) / 2.0


def strong_wolfe(
    phi: Callable[[float], tuple[Any, ...]],
    t: float,
    f: float,
    g: float,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
    d_norm: float = 1.0,
    payload: Any = None,
) -> LineSearchResult:
    r"""Search along a line for a step satisfying the strong Wolfe conditions.

    Args:
        phi: ``phi(t)`` returns ``(phi(t), phi'(t))`` or ``(phi(t), phi'(t), payload)``;
            the payload (anything, e.g. the gradient at ``t``) is returned with the
            step it belongs to.
        t: the first step to try (> 0).
        f: :math:`\phi(0)`.
        g: :math:`\phi'(0)`, negative (a descent direction).
        c1: sufficient-decrease constant. Default: 1e-4.
        c2: curvature constant (:math:`c_1 < c_2 < 1`). Default: 0.9.
        tolerance_change: the zoom stops once the bracket's width times ``d_norm`` is
            below this. Default: 1e-9.
        max_ls: the most evaluations of ``phi`` after the first. Default: 25.
        d_norm: the largest absolute entry of the search direction, so that a bracket
            width times ``d_norm`` is the largest parameter change it spans.
        payload: returned as the payload if the search settles on ``t = 0``.

    Returns:
        A :class:`LineSearchResult`. When ``converged`` is False the step is the best
        one found (the lowest end of the final bracket), possibly 0.

    Raises:
        ValueError: if ``max_ls`` is negative (torch fails with UnboundLocalError).

    Example:
        >>> def phi(t):  # (t - 2)^2 along the line
        ...     return (t - 2.0) ** 2, 2.0 * (t - 2.0)
        >>> strong_wolfe(phi, 1.0, *phi(0.0)).t  # |phi'(1)| = 2 <= 0.9 |phi'(0)|: accepted
        1.0
        >>> result = strong_wolfe(phi, 1.0, *phi(0.0), c2=0.1)  # extrapolates to the minimum
        >>> result.converged, result.t, result.evals
        (True, 2.0, 2)
    """
    if max_ls < 0:
        raise ValueError(f"max_ls must be a non-negative number of evaluations, got {max_ls}")

    def evaluate(step: float) -> tuple[float, float, Any]:
        out = phi(step)
        return out[0], out[1], (out[2] if len(out) > 2 else None)

    f_new, g_new, p_new = evaluate(t)
    evals = 1
    # Bracketing phase. Each list holds the two ends: step, value, slope, payload.
    # t_prev starts as the int 0, as in torch (a step of 0 comes back as that int)
    t_prev: float = 0
    f_prev, g_prev, p_prev = f, g, payload
    done = False
    ls_iter = 0
    steps: list[float] = []
    values: list[float] = []
    slopes: list[float] = []
    payloads: list[Any] = []
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * g) or (ls_iter > 1 and f_new >= f_prev):
            steps, values, slopes, payloads = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [p_prev, p_new]
            break
        if abs(g_new) <= -c2 * g:
            steps, values, slopes, payloads = [t], [f_new], [g_new], [p_new]
            done = True
            break
        if g_new >= 0:
            steps, values, slopes, payloads = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [p_prev, p_new]
            break
        if t == t_prev:
            # A bracket of no width (lr = 0): no cubic through one point. torch divides
            # by zero here (ZeroDivisionError for Python floats); the search stops.
            steps, values, slopes, payloads = [t_prev, t], [f_prev, f_new], [g_prev, g_new], [p_prev, p_new]
            break
        # extrapolate, at least 1% of the last move further and at most 10 times as far
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        previous = t
        t = cubic_interpolate(t_prev, f_prev, g_prev, t, f_new, g_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, p_prev = previous, f_new, g_new, p_new
        f_new, g_new, p_new = evaluate(t)
        evals += 1
        ls_iter += 1

    if ls_iter == max_ls:
        # Out of evaluations while extrapolating: choose between 0 and the last step.
        steps, values, payloads = [0, t], [f, f_new], [payload, p_new]
        slopes = [g, g_new]

    # Zoom phase: shrink the bracket around a step satisfying the conditions.
    insufficient_progress = False
    low, high = (0, 1) if values[0] <= values[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if steps[1] == steps[0] or abs(steps[1] - steps[0]) * d_norm < tolerance_change:
            break  # (a bracket of no width even with tolerance_change=0: nothing left to zoom into)
        t = cubic_interpolate(steps[0], values[0], slopes[0], steps[1], values[1], slopes[1])
        # Too close to an end: accept once, then move to 10% of the width inside.
        top, bottom = max(steps), min(steps)
        eps = 0.1 * (top - bottom)
        if min(top - t, t - bottom) < eps:
            if insufficient_progress or t >= top or t <= bottom:
                t = top - eps if abs(t - top) < abs(t - bottom) else bottom + eps
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False

        f_new, g_new, p_new = evaluate(t)
        evals += 1
        ls_iter += 1

        if f_new > (f + c1 * t * g) or f_new >= values[low]:
            # not enough decrease, or no better than the low end: t becomes the high end
            steps[high], values[high], slopes[high], payloads[high] = t, f_new, g_new, p_new
            low, high = (0, 1) if values[0] <= values[1] else (1, 0)
        else:
            if abs(g_new) <= -c2 * g:
                done = True
            elif g_new * (steps[high] - steps[low]) >= 0:
                # the minimum lies between t and the low end: the low end becomes high
                steps[high], values[high], slopes[high], payloads[high] = (
                    steps[low],
                    values[low],
                    slopes[low],
                    payloads[low],
                )
            steps[low], values[low], slopes[low], payloads[low] = t, f_new, g_new, p_new

    return LineSearchResult(steps[low], values[low], slopes[low], payloads[low], evals, done)


class MoreThuenteResult(NamedTuple):
    r"""What :func:`more_thuente` found: a named tuple.

    Args:
        t: the last step evaluated: the accepted one unless ``status`` is ``"failure"``.
        f: :math:`\phi(t)`.
        slope: :math:`\phi'(t)`.
        payload: what ``phi`` returned with them at ``t``.
        evals: how many times ``phi`` was called.
        status: ``"convergence"`` (both conditions hold at ``t``), ``"warning"`` (the
            search cannot make progress, ``t`` is the best it can do: MINPACK-2's
            warnings) or ``"failure"`` (``max_evals`` spent, or only non-finite values
            met; ``t`` is not to be taken).
        message: MINPACK-2's task text, e.g. ``"CONVERGENCE"`` or
            ``"WARNING: STP = STPMAX"``.

    Example:
        >>> def phi(t):  # (t - 2)^2 along the line
        ...     return (t - 2.0) ** 2, 2.0 * (t - 2.0)
        >>> more_thuente(phi, 1.0, *phi(0.0))
        MoreThuenteResult(t=1.0, f=1.0, slope=-2.0, payload=None, evals=1, status='convergence', message='CONVERGENCE')
    """

    #: the last step evaluated
    t: float
    #: phi(t)
    f: float
    #: phi'(t)
    slope: float
    #: the payload ``phi`` returned with (f, slope) at ``t``
    payload: Any
    #: how many times ``phi`` was called
    evals: int
    #: "convergence", "warning" or "failure"
    status: str
    #: MINPACK-2's task text
    message: str


def _root(x: float) -> float:
    """``sqrt(x)``, NaN for a negative ``x`` (as Fortran's and NumPy's sqrt give)."""
    return math.sqrt(x) if x >= 0 else math.nan


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _cubic(fa: float, fb: float, sta: float, stb: float, da: float, db: float) -> tuple[float, float]:
    """The cubic through two steps' values and slopes: MINPACK-2's ``theta`` and (unsigned) ``gamma``.

    ``theta = 3 (fa - fb) / (stb - sta) + da + db`` and
    ``gamma = s sqrt((theta/s)^2 - (da/s)(db/s))`` with ``s`` the largest magnitude of
    the three, in MINPACK-2's order of operations (NaN when the root is imaginary).
    """
    theta = _div(3.0 * (fa - fb), stb - sta) + da + db
    s = max(abs(theta), abs(da), abs(db))
    ratio = _div(theta, s)  # squared as a product, as Fortran's (theta/s)**2 (Python's ** 2 is pow: not always x*x)
    return theta, s * _root(ratio * ratio - _div(da, s) * _div(db, s))


def _more_thuente_step(
    stx: float,
    fx: float,
    dx: float,
    sty: float,
    fy: float,
    dy: float,
    stp: float,
    fp: float,
    dp: float,
    brackt: bool,
    stpmin: float,
    stpmax: float,
) -> tuple[float, float, float, float, float, float, float, bool]:
    """One safeguarded step of the Moré–Thuente search (MINPACK-2's ``dcstep``).

    ``stx`` is the best step so far (value ``fx``, slope ``dx``), ``sty`` the other end
    of the interval of uncertainty, ``stp`` the step just evaluated. Returns the
    updated ``(stx, fx, dx, sty, fy, dy)``, the next trial step and ``brackt``
    (whether a minimiser is bracketed). Cases, by what was seen at ``stp``:

    1. a higher value: bracketed; the cubic step if it is closer to ``stx`` than the
       quadratic one, else their average;
    2. a lower value, slope of the other sign: bracketed; the cubic or the secant step,
       whichever is farther from ``stp``;
    3. a lower value, same sign, smaller slope: the cubic step where it exists and
       lies beyond ``stp``, else the secant, safeguarded;
    4. a lower value, same sign, slope not smaller: the cubic through ``stp`` and
       ``sty`` when bracketed, else the limit ``stpmax`` or ``stpmin``.

    An end of the interval with a non-finite value (a trial step where the objective
    was not finite) has no cubic: case 4 bisects towards it instead.
    """
    sgnd = math.copysign(1.0, dp) * math.copysign(1.0, dx) if dp != 0 and dx != 0 else 0.0
    if fp > fx:
        theta, gamma = _cubic(fx, fp, stx, stp, dx, dp)
        if stp < stx:
            gamma = -gamma
        p = (gamma - dx) + theta
        q = ((gamma - dx) + gamma) + dp
        r = _div(p, q)
        stpc = stx + r * (stp - stx)
        stpq = stx + (_div(dx, _div(fx - fp, stp - stx) + dx) / 2.0) * (stp - stx)
        stpf = stpc if abs(stpc - stx) <= abs(stpq - stx) else stpc + (stpq - stpc) / 2.0
        brackt = True
    elif sgnd < 0.0:
        theta, gamma = _cubic(fx, fp, stx, stp, dx, dp)
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = ((gamma - dp) + gamma) + dx
        r = _div(p, q)
        stpc = stp + r * (stx - stp)
        stpq = stp + _div(dp, dp - dx) * (stx - stp)
        stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
        brackt = True
    elif abs(dp) < abs(dx):
        theta = _div(3.0 * (fx - fp), stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        # gamma = 0 only where the cubic does not tend to infinity in the step's direction
        ratio = _div(theta, s)
        gamma = s * math.sqrt(max(0.0, ratio * ratio - _div(dx, s) * _div(dp, s)))
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = (gamma + (dx - dp)) + gamma
        r = _div(p, q)
        if r < 0 and gamma != 0:
            stpc = stp + r * (stx - stp)
        elif stp > stx:
            stpc = stpmax
        else:
            stpc = stpmin
        stpq = stp + _div(dp, dp - dx) * (stx - stp)
        if brackt:
            stpf = stpc if abs(stpc - stp) < abs(stpq - stp) else stpq
            if stp > stx:
                stpf = min(stp + 0.66 * (sty - stp), stpf)
            else:
                stpf = max(stp + 0.66 * (sty - stp), stpf)
        else:
            stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
            stpf = min(max(stpf, stpmin), stpmax)
    elif brackt and not _finite(fy, dy):
        stpf = stp + 0.5 * (sty - stp)
    elif brackt:
        theta, gamma = _cubic(fp, fy, stp, sty, dy, dp)
        if stp > sty:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = ((gamma - dp) + gamma) + dy
        r = _div(p, q)
        stpf = stp + r * (sty - stp)
    elif stp > stx:
        stpf = stpmax
    else:
        stpf = stpmin

    # the new interval of uncertainty
    if fp > fx:
        sty, fy, dy = stp, fp, dp
    else:
        if sgnd < 0:
            sty, fy, dy = stx, fx, dx
        stx, fx, dx = stp, fp, dp
    return stx, fx, dx, sty, fy, dy, stpf, brackt


def more_thuente(
    phi: Callable[[float], tuple[Any, ...]],
    t: float,
    f: float,
    g: float,
    *,
    ftol: float = 1e-3,
    gtol: float = 0.9,
    xtol: float = 0.1,
    stpmin: float = 0.0,
    stpmax: float = 1e10,
    max_evals: int = 20,
    payload: Any = None,
) -> MoreThuenteResult:
    r"""The Moré–Thuente line search (MINPACK-2's ``dcsrch``), as L-BFGS-B uses it.

    Looks for a step :math:`t \in [\text{stpmin}, \text{stpmax}]` with

    .. math::

        \phi(t) \le \phi(0) + \text{ftol}\; t \phi'(0), \qquad
        |\phi'(t)| \le \text{gtol}\; |\phi'(0)|.

    While no step has both the sufficient decrease and a non-negative slope, the
    search works on :math:`\psi(t) = \phi(t) - \phi(0) - \text{ftol}\, t\, \phi'(0)`
    (stage 1), then on :math:`\phi` itself. Each trial step comes from
    :func:`_more_thuente_step`; an interval that does not shrink by a factor 0.66 in two
    steps is bisected, and before a minimiser is bracketed the step grows at most to
    :math:`t + 4 (t - t_x)`. The arithmetic follows MINPACK-2 operation for operation,
    so from the same numbers it tries the same steps as SciPy's L-BFGS-B.

    One addition: a trial step where :math:`\phi` or :math:`\phi'` is not finite (NaN
    or infinite) is treated as an infinitely high value: it closes the interval, and
    the next step is halfway back towards the best step so far. Such a step is never
    returned as accepted.

    Args:
        phi: ``phi(t)`` returns ``(phi(t), phi'(t))`` or ``(phi(t), phi'(t), payload)``.
        t: the first step to try, in ``[stpmin, stpmax]``.
        f: :math:`\phi(0)`.
        g: :math:`\phi'(0)`, negative.
        ftol: sufficient-decrease constant. Default: 1e-3 (L-BFGS-B's).
        gtol: curvature constant. Default: 0.9.
        xtol: relative width of the interval below which the search stops with a
            warning. Default: 0.1.
        stpmin: smallest step. Default: 0.
        stpmax: largest step. Default: 1e10.
        max_evals: the most calls of ``phi``. Default: 20.
        payload: returned with a failure (the caller's data at ``t = 0``).

    Returns:
        A :class:`MoreThuenteResult`.

    Raises:
        ValueError: for a negative tolerance, ``stpmin`` above ``stpmax``, ``t``
            outside ``[stpmin, stpmax]``, ``g >= 0`` or ``max_evals < 1``.

    Example:
        >>> import math
        >>> def phi(t):  # a line with its minimum at t = 0.5 ... 1
        ...     return math.exp(-4 * t) + t * t, -4 * math.exp(-4 * t) + 2 * t
        >>> result = more_thuente(phi, 10.0, *phi(0.0), gtol=0.1)
        >>> result.status, round(result.t, 4), result.evals
        ('convergence', 0.4377, 3)
        >>> more_thuente(phi, 0.1, *phi(0.0), gtol=0.1, stpmax=0.1).message  # stopped at the edge
        'WARNING: STP = STPMAX'
    """
    for name, value in (("ftol", ftol), ("gtol", gtol), ("xtol", xtol), ("stpmin", stpmin)):
        if not value >= 0:
            raise ValueError(f"{name} must be non-negative, got {value!r}")
    if not stpmax >= stpmin:
        raise ValueError(f"stpmax ({stpmax!r}) must be at least stpmin ({stpmin!r})")
    if not stpmin <= t <= stpmax:
        raise ValueError(f"the first step t={t!r} lies outside [stpmin, stpmax] = [{stpmin!r}, {stpmax!r}]")
    if not g < 0:
        raise ValueError(f"the slope at 0 must be negative (a descent direction), got g={g!r}")
    if max_evals < 1:
        raise ValueError(f"max_evals must be at least 1, got {max_evals!r}")

    finit, ginit = f, g
    gtest = ftol * ginit
    width = stpmax - stpmin
    width1 = width / 0.5
    brackt = False
    stage = 1
    # (stx, fx, gx): the best step so far; (sty, fy, gy): the other end of the interval
    stx, fx, gx = 0.0, finit, ginit
    sty, fy, gy = 0.0, finit, ginit
    stmin, stmax = 0.0, t + 4.0 * t
    evals = 0
    while True:
        out = phi(t)
        evals += 1
        f, g = out[0], out[1]
        here = out[2] if len(out) > 2 else None
        if not _finite(f, g):
            # as if phi(t) = +inf: the interval closes at t, the next step bisects back
            brackt = True
            sty, fy, gy = t, math.inf, math.nan
            width1 = width
            width = abs(sty - stx)
            stmin, stmax = min(stx, sty), max(stx, sty)
            t = stx + 0.5 * (sty - stx)
            if evals >= max_evals or t == stx or t == sty:
                return MoreThuenteResult(t, f, g, payload, evals, "failure", "FAILURE: NO FINITE VALUE FOUND")
            continue
        ftest = finit + t * gtest
        if stage == 1 and f <= ftest and g >= 0:
            stage = 2
        message = ""
        if brackt and (t <= stmin or t >= stmax):
            message = "WARNING: ROUNDING ERRORS PREVENT PROGRESS"
        if brackt and stmax - stmin <= xtol * stmax:
            message = "WARNING: XTOL TEST SATISFIED"
        if t == stpmax and f <= ftest and g <= gtest:
            message = "WARNING: STP = STPMAX"
        if t == stpmin and (f > ftest or g >= gtest):
            message = "WARNING: STP = STPMIN"
        if f <= ftest and abs(g) <= gtol * -ginit:
            message = "CONVERGENCE"
        if message:
            status = "convergence" if message == "CONVERGENCE" else "warning"
            return MoreThuenteResult(t, f, g, here, evals, status, message)
        if evals >= max_evals:
            return MoreThuenteResult(t, f, g, here, evals, "failure", "FAILURE: MAX_EVALS REACHED")

        if stage == 1 and f <= fx and f > ftest:
            # a lower value without sufficient decrease: step on the modified function psi
            fm = f - t * gtest
            fxm = fx - stx * gtest
            fym = fy - sty * gtest
            gm = g - gtest
            gxm = gx - gtest
            gym = gy - gtest
            stx, fxm, gxm, sty, fym, gym, t, brackt = _more_thuente_step(
                stx, fxm, gxm, sty, fym, gym, t, fm, gm, brackt, stmin, stmax
            )
            fx = fxm + stx * gtest
            fy = fym + sty * gtest
            gx = gxm + gtest
            gy = gym + gtest
        else:
            stx, fx, gx, sty, fy, gy, t, brackt = _more_thuente_step(
                stx, fx, gx, sty, fy, gy, t, f, g, brackt, stmin, stmax
            )

        if brackt:
            # bisect an interval that did not shrink enough in two steps
            if abs(sty - stx) >= 0.66 * width1:
                t = stx + 0.5 * (sty - stx)
            width1 = width
            width = abs(sty - stx)
            stmin, stmax = min(stx, sty), max(stx, sty)
        else:
            stmin = t + 1.1 * (t - stx)
            stmax = t + 4.0 * (t - stx)
        t = min(max(t, stpmin), stpmax)
        if (brackt and (t <= stmin or t >= stmax)) or (brackt and stmax - stmin <= xtol * stmax):
            # no further progress possible: try the best step so far
            t = stx

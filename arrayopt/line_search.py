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
parameter space, or ``max_ls`` evaluations are spent. This is torch 2.14's algorithm (unchanged since 2.13)
(``torch/optim/lbfgs.py``, itself after Mark Schmidt's minFunc) with the same
arithmetic in the same order, so from the same numbers it picks the same steps.

Everything here is scalars: :func:`strong_wolfe` calls ``phi(t)`` and never sees an
array. Python floats in, Python floats out. Any other real scalar type closed under
arithmetic works too and keeps its precision: :class:`arrayopt.LBFGS` passes slopes as
NumPy scalars of its parameters' dtype, so that with float32 parameters the tests and
the interpolation round in float32 exactly where torch computes with float32 0-d
tensors (the loss itself is a Python float in both). Its ``phi`` moves the parameters,
calls the closure and returns the loss, the slope and the flat gradient, an opaque
*payload* that the search hands back with the step it accepts.

Reference:
    Nocedal and Wright, *Numerical Optimization* (2nd ed.), Algorithms 3.5 and 3.6.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["LineSearchResult", "cubic_interpolate", "strong_wolfe"]


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
        if abs(steps[1] - steps[0]) * d_norm < tolerance_change:
            break
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

r"""The Moré–Thuente line search for a stack of problems, one evaluation at a time.

:func:`arrayopt.line_search.more_thuente` is the search as a scalar algorithm: it calls
``phi(t)`` in a loop. A batch cannot loop per problem, so here the same search is a
state (:class:`MoreThuente`, one entry per problem in each array) and a transition
(:meth:`MoreThuente.advance`): the caller evaluates every problem at its trial step
``stp``, hands the values and slopes over, and gets back which problems accept their
step, which fail, and the next trial step of the others. Each problem follows its own
search; none waits for or depends on another.

Along the search direction :math:`d` from :math:`x`, with
:math:`\phi(t) = f(x + t d)` and :math:`\phi'(t) = \nabla f(x + t d)^\top d < 0` at 0,
the search looks for :math:`t \in [t_{\min}, t_{\max}]` with

.. math::

    \phi(t) \le \phi(0) + \mu\, t\, \phi'(0), \qquad |\phi'(t)| \le \eta\, |\phi'(0)|

(:math:`\mu` = ``ftol`` = 1e-3, :math:`\eta` = ``gtol`` = 0.9, L-BFGS-B's values). It
keeps an interval of uncertainty :math:`[t_x, t_y]` (best step so far :math:`t_x`) and
picks each trial step by MINPACK-2's ``dcstep``: a higher value brackets a minimiser
(cubic step, or its average with the quadratic one); a lower value with a slope of the
other sign brackets too (cubic or secant step); a lower value with a smaller slope of
the same sign extrapolates (cubic or secant, safeguarded, at most to 66 % of the way to
:math:`t_y` once bracketed); otherwise the cubic through :math:`t` and :math:`t_y`, or
the limit :math:`t_{\max}` / :math:`t_{\min}`. Until some step has both sufficient
decrease and a non-negative slope, the steps are computed on
:math:`\psi(t) = \phi(t) - \phi(0) - \mu t \phi'(0)`. An interval that does not shrink
by 0.66 in two steps is bisected; before a bracket, a step grows at most to
:math:`t + 4 (t - t_x)`. It stops with success on both conditions ("convergence"), or
when it cannot progress (MINPACK-2's warnings: rounding, ``xtol`` = 0.1 relative width,
:math:`t = t_{\max}` with sufficient decrease and a negative slope, :math:`t = t_{\min}`);
it fails after ``max_evals`` evaluations.

Faithfulness: every case, test and operation is that of :func:`arrayopt.line_search.
more_thuente` (itself MINPACK-2's ``dcsrch``/``dcstep`` operation for operation, as SciPy's
L-BFGS-B runs it), evaluated for all problems with ``where`` instead of ``if``, so from
the same numbers each problem tries the same steps in the same arithmetic
(tests/test_batch_line_search.py checks this step by step against the scalar search).
Like :func:`~arrayopt.line_search.more_thuente`, and unlike SciPy's DCSRCH, a trial step
where :math:`\phi` or :math:`\phi'` is not finite counts as an infinitely high value: it
closes the interval and the next step is halfway back to :math:`t_x`; the search fails
when no finite step remains. The numbers are kept in the problems' dtype (SciPy's
search always runs in float64).

Reference:
    J. J. Moré and D. J. Thuente, "Line search algorithms with guaranteed sufficient
    decrease", ACM TOMS 20 (1994), 286-307.
"""

import dataclasses
import math
from typing import Any

from arrayopt.backends import get_backend

__all__ = ["MoreThuente"]

_STPMIN = 0.0  # the smallest step (L-BFGS-B's)


@dataclasses.dataclass(frozen=True)
class MoreThuente:
    r"""The state of one Moré–Thuente search per problem: every field has shape (k,).

    Fields: the trial step ``stp``; the best step ``stx`` with its value and slope
    ``fx``, ``gx``; the other end ``sty``, ``fy``, ``gy``; the admissible range
    ``[stmin, stmax]`` of the next step; the interval widths ``width`` and ``width1`` of
    the last two steps; ``brackt`` (a minimiser is bracketed) and ``stage1`` (no step
    yet with sufficient decrease and a non-negative slope); ``finit``, ``ginit``:
    :math:`\phi(0)`, :math:`\phi'(0)`; the largest step ``stpmax``; ``evals``, the
    evaluations so far (integers).

    Args:
        stp, stx, fx, gx, sty, fy, gy: the steps with their values and slopes, as above.
        stmin, stmax, width, width1, brackt, stage1: the interval's state, as above.
        finit, ginit, stpmax, evals: the search's constants and its count, as above.

    >>> import numpy as np
    >>> def phi(t):  # (t - 2)^2 and (t - 1/2)^2: two problems
    ...     centre = np.array([2.0, 0.5])
    ...     return (t - centre) ** 2, 2 * (t - centre)
    >>> f0, g0 = phi(np.zeros(2))
    >>> search = MoreThuente.start(np, np.ones(2), f0, g0, np.full(2, 1e10))
    >>> search, accept, fail = search.advance(np, *phi(search.stp))
    >>> accept.tolist(), fail.tolist()  # the first accepts t = 1
    ([True, False], [False, False])
    >>> float(search.stp[1])  # the second tries the minimiser of its (modified) cubic next
    0.4995
    """

    stp: Any
    stx: Any
    fx: Any
    gx: Any
    sty: Any
    fy: Any
    gy: Any
    stmin: Any
    stmax: Any
    width: Any
    width1: Any
    brackt: Any
    stage1: Any
    finit: Any
    ginit: Any
    stpmax: Any
    evals: Any

    @classmethod
    def start(cls, xp: Any, stp: Any, f: Any, g: Any, stpmax: Any) -> "MoreThuente":
        """A search from :math:`\\phi(0) = f`, :math:`\\phi'(0) = g < 0`, first trying ``stp`` in ``[0, stpmax]``.

        Args:
            xp: the array namespace.
            stp: the first trial steps.
            f: the values at step 0.
            g: the slopes at step 0 (negative; a problem whose slope is not is the
                caller's to stop before it searches).
            stpmax: the largest steps.
        """
        zero = xp.zeros_like(stp)
        width = stpmax - _STPMIN
        return cls(
            stp=stp,
            stx=zero,
            fx=f,
            gx=g,
            sty=zero,
            fy=f,
            gy=g,
            stmin=zero,
            stmax=stp + 4.0 * stp,
            width=width,
            width1=width / 0.5,
            brackt=xp.zeros(stp.shape, dtype=xp.bool, device=getattr(stp, "device", None)),
            stage1=xp.ones(stp.shape, dtype=xp.bool, device=getattr(stp, "device", None)),
            finit=f,
            ginit=g,
            stpmax=stpmax,
            evals=xp.zeros(stp.shape, dtype=xp.int64, device=getattr(stp, "device", None)),
        )

    def select(self, xp: Any, mask: Any, other: "MoreThuente") -> "MoreThuente":
        """This state where ``mask`` (k,) holds, ``other``'s elsewhere.

        Args:
            xp: the array namespace.
            mask: boolean, shape (k,).
            other: a state of the same problems.
        """
        return MoreThuente(
            **{f.name: xp.where(mask, getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(self)}
        )

    def take(self, xp: Any, keep: Any) -> "MoreThuente":
        """The states of the problems ``keep`` (integer indices).

        Args:
            xp: the array namespace.
            keep: indices along the problem axis.
        """
        return MoreThuente(**{f.name: xp.take(getattr(self, f.name), keep, axis=0) for f in dataclasses.fields(self)})

    def advance(
        self,
        xp: Any,
        f: Any,
        g: Any,
        max_evals: int = 20,
        *,
        ftol: float = 1e-3,
        gtol: float = 0.9,
        xtol: float = 0.1,
    ) -> tuple["MoreThuente", Any, Any]:
        r"""Take in :math:`\phi(\text{stp})` and :math:`\phi'(\text{stp})`; return ``(state, accept, fail)``.

        ``accept`` (k,): the search ends at ``stp`` (both conditions, or a warning: the
        step is the best it can do); ``fail``: it ends without a step (``max_evals``
        evaluations, or no finite value left to try). Elsewhere the new state's ``stp``
        is the next trial step. The entries of problems that ended are not meaningful.

        Args:
            xp: the array namespace.
            f: the values at the trial steps, shape (k,).
            g: the slopes there.
            max_evals: evaluations a search may take (L-BFGS-B's ``maxls``).
            ftol: the sufficient-decrease constant :math:`\mu` (L-BFGS-B's 1e-3).
            gtol: the curvature constant :math:`\eta` (L-BFGS-B's 0.9).
            xtol: the relative interval width at which the search gives up (0.1).
        """
        with get_backend(f).quiet():  # every case is computed for every problem: some divide by zero
            return self._advance(xp, f, g, max_evals, ftol, gtol, xtol)

    def _advance(
        self, xp: Any, f: Any, g: Any, max_evals: int, ftol: float, gtol: float, xtol: float
    ) -> tuple["MoreThuente", Any, Any]:
        s = self
        stp = s.stp
        evals = s.evals + 1
        finite = xp.isfinite(f) & xp.isfinite(g)

        # -- a non-finite trial: as if phi(stp) = +inf, close the interval and bisect back --
        nf_width = xp.abs(stp - s.stx)
        nf_stp = s.stx + 0.5 * (stp - s.stx)
        nf_fail = (evals >= max_evals) | (nf_stp == s.stx) | (nf_stp == stp)

        # -- a finite trial: the tests of dcsrch --
        gtest = ftol * s.ginit
        ftest = s.finit + stp * gtest
        stage1 = s.stage1 & ~((f <= ftest) & (g >= 0))
        warn = s.brackt & ((stp <= s.stmin) | (stp >= s.stmax))
        warn = warn | (s.brackt & (s.stmax - s.stmin <= xtol * s.stmax))
        warn = warn | ((stp == s.stpmax) & (f <= ftest) & (g <= gtest))
        warn = warn | ((stp == _STPMIN) & ((f > ftest) | (g >= gtest)))
        converge = (f <= ftest) & (xp.abs(g) <= gtol * -s.ginit)
        accept = finite & (warn | converge)
        fail = xp.where(finite, ~accept & (evals >= max_evals), nf_fail)

        # the next step, on psi while in stage 1 with a lower value lacking sufficient decrease
        modified = stage1 & (f <= s.fx) & (f > ftest)
        shift_f = xp.where(modified, gtest, 0.0)
        stx, fx, gx, sty, fy, gy, new, brackt = _dcstep(
            xp,
            s.stx,
            s.fx - s.stx * shift_f,
            s.gx - shift_f,
            s.sty,
            s.fy - s.sty * shift_f,
            s.gy - shift_f,
            stp,
            f - stp * shift_f,
            g - shift_f,
            s.brackt,
            s.stmin,
            s.stmax,
        )
        fx, fy = fx + stx * shift_f, fy + sty * shift_f
        gx, gy = gx + shift_f, gy + shift_f
        # bisect an interval that did not shrink enough; bound the next step
        width = xp.abs(sty - stx)
        new = xp.where(brackt & (width >= 0.66 * s.width1), stx + 0.5 * (sty - stx), new)
        width1 = xp.where(brackt, s.width, s.width1)
        width = xp.where(brackt, width, s.width)
        stmin = xp.where(brackt, xp.minimum(stx, sty), new + 1.1 * (new - stx))
        stmax = xp.where(brackt, xp.maximum(stx, sty), new + 4.0 * (new - stx))
        new = xp.minimum(xp.maximum(new, _STPMIN), s.stpmax)
        stuck = brackt & ((new <= stmin) | (new >= stmax) | (stmax - stmin <= xtol * stmax))
        new = xp.where(stuck, stx, new)

        inf = xp.full_like(f, math.inf)
        nan = xp.full_like(f, math.nan)
        state = MoreThuente(
            stp=xp.where(finite, new, nf_stp),
            stx=xp.where(finite, stx, s.stx),
            fx=xp.where(finite, fx, s.fx),
            gx=xp.where(finite, gx, s.gx),
            sty=xp.where(finite, sty, stp),
            fy=xp.where(finite, fy, inf),
            gy=xp.where(finite, gy, nan),
            stmin=xp.where(finite, stmin, xp.minimum(s.stx, stp)),
            stmax=xp.where(finite, stmax, xp.maximum(s.stx, stp)),
            width=xp.where(finite, width, nf_width),
            width1=xp.where(finite, width1, s.width),
            brackt=xp.where(finite, brackt, True),
            stage1=xp.where(finite, stage1, s.stage1),
            finit=s.finit,
            ginit=s.ginit,
            stpmax=s.stpmax,
            evals=evals,
        )
        return state, accept, fail


def _cubic(xp: Any, fa: Any, fb: Any, sta: Any, stb: Any, da: Any, db: Any) -> tuple[Any, Any]:
    """The cubic through two steps' values and slopes: MINPACK-2's ``theta`` and unsigned ``gamma`` (NaN: imaginary)."""
    theta = 3.0 * (fa - fb) / (stb - sta) + da + db
    s = xp.maximum(xp.maximum(xp.abs(theta), xp.abs(da)), xp.abs(db))
    ratio = theta / s
    return theta, s * xp.sqrt(ratio * ratio - (da / s) * (db / s))


def _dcstep(
    xp: Any,
    stx: Any,
    fx: Any,
    dx: Any,
    sty: Any,
    fy: Any,
    dy: Any,
    stp: Any,
    fp: Any,
    dp: Any,
    brackt: Any,
    stpmin: Any,
    stpmax: Any,
) -> tuple[Any, Any, Any, Any, Any, Any, Any, Any]:
    """MINPACK-2's ``dcstep`` for every problem: the four cases computed and selected (see the module docstring).

    Returns the new ``(stx, fx, dx, sty, fy, dy)``, the next trial step and ``brackt``.
    """
    sgnd = xp.where((dp != 0) & (dx != 0), xp.sign(dp) * xp.sign(dx), 0.0)
    higher = fp > fx
    opposite = ~higher & (sgnd < 0)
    smaller = ~higher & ~opposite & (xp.abs(dp) < xp.abs(dx))

    # cases 1 and 2 share the cubic through (stx, fx, dx) and (stp, fp, dp)
    theta, gamma = _cubic(xp, fx, fp, stx, stp, dx, dp)
    g1 = xp.where(stp < stx, -gamma, gamma)
    r1 = ((g1 - dx) + theta) / (((g1 - dx) + g1) + dp)
    stpc1 = stx + r1 * (stp - stx)
    stpq1 = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx)
    case1 = xp.where(xp.abs(stpc1 - stx) <= xp.abs(stpq1 - stx), stpc1, stpc1 + (stpq1 - stpc1) / 2.0)

    g2 = xp.where(stp > stx, -gamma, gamma)
    r2 = ((g2 - dp) + theta) / (((g2 - dp) + g2) + dx)
    stpc2 = stp + r2 * (stx - stp)
    secant = stp + (dp / (dp - dx)) * (stx - stp)
    case2 = xp.where(xp.abs(stpc2 - stp) > xp.abs(secant - stp), stpc2, secant)

    # case 3: gamma = 0 where the cubic does not tend to infinity in the step's direction
    s3 = xp.maximum(xp.maximum(xp.abs(theta), xp.abs(dx)), xp.abs(dp))
    ratio = theta / s3
    radicand = ratio * ratio - (dx / s3) * (dp / s3)
    gamma3 = s3 * xp.sqrt(xp.where(radicand > 0, radicand, 0.0))  # max(0, .), NaN -> 0 as in the scalar search
    g3 = xp.where(stp > stx, -gamma3, gamma3)
    r3 = ((g3 - dp) + theta) / ((g3 + (dx - dp)) + g3)
    limit = xp.where(stp > stx, stpmax, stpmin)
    stpc3 = xp.where((r3 < 0) & (gamma3 != 0), stp + r3 * (stx - stp), limit)
    closer = xp.where(xp.abs(stpc3 - stp) < xp.abs(secant - stp), stpc3, secant)
    reach = stp + 0.66 * (sty - stp)
    bracketed3 = xp.where(stp > stx, xp.minimum(reach, closer), xp.maximum(reach, closer))
    farther = xp.where(xp.abs(stpc3 - stp) > xp.abs(secant - stp), stpc3, secant)
    case3 = xp.where(brackt, bracketed3, xp.minimum(xp.maximum(farther, stpmin), stpmax))

    # case 4: the cubic through (stp, fp, dp) and (sty, fy, dy) once bracketed
    theta4, gamma4 = _cubic(xp, fp, fy, stp, sty, dy, dp)  # MINPACK-2 adds dy + dp in this order
    g4 = xp.where(stp > sty, -gamma4, gamma4)
    r4 = ((g4 - dp) + theta4) / (((g4 - dp) + g4) + dy)
    usable = xp.isfinite(fy) & xp.isfinite(dy)
    inside = xp.where(usable, stp + r4 * (sty - stp), stp + 0.5 * (sty - stp))
    case4 = xp.where(brackt, inside, limit)

    step = xp.where(higher, case1, xp.where(opposite, case2, xp.where(smaller, case3, case4)))
    brackt = brackt | higher | opposite

    # the new interval of uncertainty
    swap = ~higher & (sgnd < 0)
    new_sty = xp.where(higher, stp, xp.where(swap, stx, sty))
    new_fy = xp.where(higher, fp, xp.where(swap, fx, fy))
    new_dy = xp.where(higher, dp, xp.where(swap, dx, dy))
    new_stx = xp.where(higher, stx, stp)
    new_fx = xp.where(higher, fx, fp)
    new_dx = xp.where(higher, dx, dp)
    return new_stx, new_fx, new_dx, new_sty, new_fy, new_dy, step, brackt

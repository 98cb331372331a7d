"""The batched Moré–Thuente search against the scalar one, problem by problem and step by step.

``arrayopt.batch._line_search.MoreThuente`` is :func:`arrayopt.line_search.more_thuente`
evaluated for a stack of problems with ``where`` in place of ``if``. The reference is the
scalar search itself, run on each line alone: every trial step, the outcome (accepted or
failed), the accepted step and the number of evaluations must be the same, in float64
exactly (the same operations on the same numbers). The lines are the six of Moré and
Thuente's paper (ACM TOMS 20:286, 1994, tables 1-6) from four starting steps each, and
lines built to reach the other exits: a largest step, a region where the function is not
finite, too few evaluations.
"""

import math

import numpy as np
import pytest

from arrayopt.batch._line_search import MoreThuente
from arrayopt.line_search import more_thuente

from batch_problems import to_numpy


def paper_lines():
    """(name, phi, ftol, gtol) for the six test functions of Moré and Thuente (1994)."""

    def phi1(t, b=2.0):
        return -t / (t * t + b), (t * t - b) / (t * t + b) ** 2

    def phi2(t, b=0.004):
        return (t + b) ** 5 - 2 * (t + b) ** 4, (t + b) ** 3 * (5 * (t + b) - 8)

    def phi3(t, b=0.01, el=39):
        if t <= 1 - b:
            f0, g0 = 1 - t, -1.0
        elif t >= 1 + b:
            f0, g0 = t - 1, 1.0
        else:
            f0, g0 = (t - 1) ** 2 / (2 * b) + b / 2, (t - 1) / b
        wave = 2 * (1 - b) / (el * math.pi)
        return f0 + wave * math.sin(el * math.pi * t / 2), g0 + (1 - b) * math.cos(el * math.pi * t / 2)

    def yanai(b1, b2):
        def gamma(b):
            return math.sqrt(1 + b * b) - b

        def phi(t):
            a, c = math.sqrt((1 - t) ** 2 + b2 * b2), math.sqrt(t * t + b1 * b1)
            return gamma(b1) * a + gamma(b2) * c, -gamma(b1) * (1 - t) / a + gamma(b2) * t / c

        return phi

    return [
        ("phi1", phi1, 1e-3, 0.1),
        ("phi2", phi2, 0.1, 0.1),
        ("phi3", phi3, 0.1, 0.1),
        ("phi4", yanai(1e-3, 1e-3), 1e-3, 1e-3),
        ("phi5", yanai(1e-2, 1e-3), 1e-3, 1e-3),
        ("phi6", yanai(1e-3, 1e-2), 1e-3, 1e-3),
    ]


def other_lines():
    """(name, phi, stpmax, max_evals) for the exits the paper's lines do not reach."""

    def descending(t):  # never turns: the search runs to stpmax
        return -t, -1.0

    def cliff(t):  # (t - 2)^2 up to 1.5, not finite beyond: steps are pulled back
        return ((t - 2) ** 2, 2 * (t - 2)) if t < 1.5 else (math.nan, math.nan)

    def nowhere(t):  # not finite anywhere past 0: no step is found
        return (1.0, -1.0) if t == 0 else (math.inf, math.nan)

    def wiggly(t):  # many local minima: runs out of evaluations when they are few
        return -math.sin(30 * t) - 0.5 * t, -30 * math.cos(30 * t) - 0.5

    return [
        ("descending", descending, 5.0, 20),
        ("cliff", cliff, 1e10, 20),
        ("nowhere", nowhere, 1e10, 20),
        ("wiggly", wiggly, 1e10, 1),
        ("tiny stpmax", lambda t: ((t - 3) ** 2, 2 * (t - 3)), 0.5, 20),
    ]


def run_batched(xp, lines, starts, stpmax, max_evals, ftol, gtol):
    """Run the batched search on several lines at once; per line the trial steps and the outcome."""
    k = len(lines)
    f0 = np.array([phi(0.0)[0] for phi in lines])
    g0 = np.array([phi(0.0)[1] for phi in lines])
    state = MoreThuente.start(xp, xp.asarray(np.array(starts)), xp.asarray(f0), xp.asarray(g0), xp.asarray(stpmax))
    trials = [[] for _ in range(k)]
    outcome = [None] * k
    for _ in range(100):
        stp = to_numpy(state.stp)
        values = np.array([lines[b](float(stp[b])) if outcome[b] is None else (0.0, 0.0) for b in range(k)])
        for b in range(k):
            if outcome[b] is None:
                trials[b].append(float(stp[b]))
        state, accept, fail = state.advance(
            xp, xp.asarray(values[:, 0]), xp.asarray(values[:, 1]), max_evals, ftol=ftol, gtol=gtol
        )
        accept, fail = to_numpy(accept), to_numpy(fail)
        for b in range(k):
            if outcome[b] is None and (accept[b] or fail[b]):
                outcome[b] = ("accept" if accept[b] else "fail", trials[b][-1], len(trials[b]))
        if all(o is not None for o in outcome):
            return trials, outcome
    raise AssertionError("the batched search did not end")


def run_scalar(phi, start, stpmax, max_evals, ftol, gtol):
    trials = []

    def recorded(t):
        trials.append(t)
        return phi(t)

    result = more_thuente(recorded, start, *phi(0.0), ftol=ftol, gtol=gtol, stpmax=stpmax, max_evals=max_evals)
    kind = "fail" if result.status == "failure" else "accept"
    return trials, (kind, result.t if kind == "accept" else trials[-1], result.evals)


@pytest.mark.parametrize(("name", "phi", "ftol", "gtol"), paper_lines(), ids=[n for n, *_ in paper_lines()])
def test_the_papers_lines_take_the_scalar_searchs_steps(name, phi, ftol, gtol, xp):
    starts = [1e-3, 1e-1, 1e1, 1e3]
    trials, outcome = run_batched(xp, [phi] * 4, starts, [1e10] * 4, 20, ftol, gtol)
    for b, start in enumerate(starts):
        ref_trials, ref_outcome = run_scalar(phi, start, 1e10, 20, ftol, gtol)
        assert trials[b] == ref_trials, (name, start)
        assert outcome[b] == ref_outcome, (name, start)
        assert outcome[b][0] == "accept"


def test_the_other_exits_match_the_scalar_search(xp):
    lines = other_lines()
    phis = [phi for _, phi, _, _ in lines]
    for max_evals in sorted({m for *_, m in lines}):
        chosen = [i for i, (*_, m) in enumerate(lines) if m == max_evals]
        trials, outcome = run_batched(
            xp, [phis[i] for i in chosen], [1.0] * len(chosen), [lines[i][2] for i in chosen], max_evals, 1e-3, 0.9
        )
        for j, i in enumerate(chosen):
            name, phi, stpmax, _ = lines[i]
            ref_trials, ref_outcome = run_scalar(phi, min(1.0, stpmax), stpmax, max_evals, 1e-3, 0.9)
            if name == "tiny stpmax":
                assert trials[j][0] == 1.0  # started beyond stpmax: the scalar search refuses such a start
                continue
            assert trials[j] == ref_trials, name
            assert outcome[j] == ref_outcome, name


def test_each_exit_is_reached():
    """The lines above reach what they are meant to: stpmax, a finite step after a cliff, failure twice."""
    results = {name: run_scalar(phi, min(1.0, stpmax), stpmax, m, 1e-3, 0.9) for name, phi, stpmax, m in other_lines()}
    assert results["descending"][1] == ("accept", 5.0, results["descending"][1][2])
    assert results["cliff"][1][0] == "accept" and results["cliff"][1][1] < 1.5
    assert results["nowhere"][1][0] == "fail"
    assert results["wiggly"][1] == ("fail", 1.0, 1)


def test_float32_stays_float32(xp):
    phi = paper_lines()[0][1]
    f0, g0 = phi(0.0)
    state = MoreThuente.start(
        xp,
        xp.asarray([1.0, 10.0], dtype=xp.float32),
        xp.asarray([f0, f0], dtype=xp.float32),
        xp.asarray([g0, g0], dtype=xp.float32),
        xp.asarray([1e10, 1e10], dtype=xp.float32),
    )
    stp = to_numpy(state.stp)
    values = np.array([phi(float(t)) for t in stp], dtype=np.float32)
    state, accept, fail = state.advance(xp, xp.asarray(values[:, 0]), xp.asarray(values[:, 1]), ftol=1e-3, gtol=0.1)
    assert to_numpy(accept).dtype == bool and to_numpy(fail).dtype == bool
    for field in ("stp", "stx", "fx", "gx", "sty", "fy", "gy", "stmin", "stmax", "width", "width1"):
        assert getattr(state, field).dtype == xp.float32, field

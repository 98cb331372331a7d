r"""Batched fitting: thousands to millions of small independent fits at once.

Every pixel of a lifetime image, every spot of a localisation movie, every start of a
multi-start search is its own small fit. ``arrayopt.batch`` fits a whole stack of them
with one call: the model is your Python function on the (B, n) stack of parameters, the
linear algebra of all B problems runs as array operations (no loop over problems in
Python), and it runs on NumPy, CuPy (everything on the GPU; one host read per iteration)
and any array-API library, in float32 or float64.

* :func:`least_squares`: bound-constrained nonlinear least squares by a projected
  Levenberg-Marquardt method, SciPy's ``least_squares`` per problem;
* :func:`curve_fit`: SciPy's ``curve_fit`` per problem (``popt``, ``pcov``, ``sigma``,
  ``absolute_sigma``, bounds), plus ``loss="poisson"``, maximum likelihood for counts;
* :func:`minimize`: smooth objectives with their gradients by L-BFGS-B (SciPy's
  ``minimize(method="L-BFGS-B")`` per problem, each with its own box, memory and line
  search);
* :class:`LeastSquaresResult`, :class:`Status`, :class:`MinimizeResult`, :class:`Stop`:
  per-problem results and status codes.

>>> import numpy as np
>>> from arrayopt import batch
>>> x = np.linspace(0.0, 1.0, 20)
>>> slopes = np.array([[1.0], [2.0], [-3.0]])
>>> y = slopes * x + 0.5
>>> popt, pcov = batch.curve_fit(lambda x, p: p[:, :1] * x + p[:, 1:], x, y, np.zeros((3, 2)))
>>> np.round(popt, 8).tolist()
[[1.0, 0.5], [2.0, 0.5], [-3.0, 0.5]]
"""

from arrayopt.batch._curve_fit import curve_fit
from arrayopt.batch._lm import least_squares
from arrayopt.batch._minimize import minimize
from arrayopt.batch._result import LeastSquaresResult, MinimizeResult, OptimizeWarning, Status, Stop

__all__ = [
    "LeastSquaresResult",
    "MinimizeResult",
    "OptimizeWarning",
    "Status",
    "Stop",
    "curve_fit",
    "least_squares",
    "minimize",
]

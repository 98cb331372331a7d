"""Status codes and the result object of the batched solvers."""

import enum
from typing import Any

from arrayopt.backends import get_backend
from arrayopt.lbfgsb import _MESSAGES as _LBFGSB_MESSAGES
from arrayopt.minimize import OptimizeResult

__all__ = ["LeastSquaresResult", "MinimizeResult", "OptimizeWarning", "Status", "Stop"]


class Status(enum.IntEnum):
    """Why one problem of a batch stopped: SciPy's ``least_squares`` codes plus named extras.

    The non-negative codes mean what they mean in ``scipy.optimize.least_squares``;
    ``success`` is ``status > 0`` as there. SciPy has no per-problem failures (it raises
    for the whole call) and uses -1 and -2 for other things, so the extras start at -3.
    ``message`` is the text of each code.

    Args:
        value: the integer code, e.g. ``Status(3)`` (as for any ``IntEnum``).

    >>> Status(3).name, Status.XTOL.message
    ('XTOL', '`xtol` termination condition is satisfied.')
    >>> int(Status.NONFINITE_RESIDUALS)
    -3
    """

    #: the evaluation budget ``max_nfev`` is spent
    MAX_NFEV = 0
    #: ``gtol``: the largest entry of the (bound-scaled) gradient is below ``gtol``
    GTOL = 1
    #: ``ftol``: the cost fell by less than ``ftol`` times itself, on a trustworthy step
    FTOL = 2
    #: ``xtol``: the step is shorter than ``xtol * (xtol + |x|)``
    XTOL = 3
    #: both ``ftol`` and ``xtol``
    FTOL_XTOL = 4
    #: the residuals (or, for Poisson fits, the model) are not usable at the starting point; nothing was done
    NONFINITE_RESIDUALS = -3
    #: the Jacobian is not finite at the point reached (which is returned)
    NONFINITE_JACOBIAN = -4

    @property
    def message(self) -> str:
        """The text of this status (SciPy's words for SciPy's codes)."""
        return _MESSAGES[self]


_MESSAGES = {
    Status.MAX_NFEV: "The maximum number of function evaluations is exceeded.",
    Status.GTOL: "`gtol` termination condition is satisfied.",
    Status.FTOL: "`ftol` termination condition is satisfied.",
    Status.XTOL: "`xtol` termination condition is satisfied.",
    Status.FTOL_XTOL: "Both `ftol` and `xtol` termination conditions are satisfied.",
    Status.NONFINITE_RESIDUALS: "Residuals are not finite in the initial point.",
    Status.NONFINITE_JACOBIAN: "The Jacobian is not finite at the point reached.",
}


class OptimizeWarning(UserWarning):
    """Warned by :func:`arrayopt.batch.curve_fit` where SciPy warns or raises for a single fit.

    SciPy's ``curve_fit`` raises when a fit fails and warns when a covariance cannot be
    estimated; a batch cannot raise for one problem, so it warns once per call with the
    number of problems concerned.

    Args:
        args: the message, as for any warning.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warnings.warn("2 of 10 fits did not converge", OptimizeWarning)
    >>> caught[0].category.__name__
    'OptimizeWarning'
    """


class LeastSquaresResult(OptimizeResult):
    """The result of a batched least-squares solve: SciPy's fields, each with a leading batch axis.

    Keys (also attributes), for B problems of n variables and m residuals:

    * ``x`` (B, n): the solutions; ``cost`` (B,): half the sum of squared residuals
      (for a Poisson fit, half the deviance); ``fun`` (B, m): the residuals at ``x``;
      ``jac`` (B, m, n): the Jacobian at ``x``; ``grad`` (B, n): the gradient of the
      cost at ``x``;
    * ``optimality`` (B,): the largest entry of the gradient scaled as for ``gtol``;
      ``active_mask`` (B, n): -1 where a lower bound binds, 1 an upper bound, else 0;
    * ``status`` (B,): a :class:`Status` code per problem; ``success`` (B,):
      ``status > 0``;
    * ``nfev``, ``njev``, ``nit`` (B,): evaluations of the residuals (not counting those
      of finite differences, as SciPy's ``trf``), of the Jacobian, and iterations (one
      trial step each, taken or not).

    ``message(i)`` gives the text of problem i's status; :class:`Status` maps every code
    to its text.

    Args:
        kwargs: the fields (as for ``dict``).

    >>> import numpy as np
    >>> result = LeastSquaresResult(status=np.array([2, -3]))
    >>> result.message(1)
    'Residuals are not finite in the initial point.'
    """

    def message(self, index: int) -> str:
        """The text of problem ``index``'s status (reads one integer from the device).

        Args:
            index: the problem's position in the batch.
        """
        return Status(_read(self["status"], index)).message


class Stop(enum.IntEnum):
    """Why one problem of :func:`arrayopt.batch.minimize` stopped, with SciPy's L-BFGS-B status and message.

    SciPy's ``minimize(method="L-BFGS-B")`` reports ``status`` 0 (converged: ``gtol`` or
    ``ftol``), 1 (``maxiter`` or ``maxfun`` spent) or 2 (stopped otherwise) and says which
    in its message; a batch keeps the reason per problem as one of these codes, and
    derives ``status`` from it (:attr:`status`). ``message`` is SciPy's text (and
    :func:`arrayopt.minimize`'s for the non-finite start, which SciPy does not test).

    Args:
        value: the integer code, e.g. ``Stop(1)`` (as for any ``IntEnum``).

    >>> Stop(2).name, Stop.FTOL.status, Stop.FTOL.message
    ('FTOL', 0, 'CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH')
    >>> Stop.MAXFUN.status, Stop.LINE_SEARCH.status
    (1, 2)
    """

    #: the largest entry of the projected gradient is at most ``gtol``
    GTOL = 1
    #: the relative reduction of the objective in the last step is at most ``ftol``
    FTOL = 2
    #: ``maxiter`` iterations done
    MAXITER = 3
    #: more than ``maxfun`` evaluations done (checked after each iteration, as SciPy does)
    MAXFUN = 4
    #: the line search found no acceptable step from a steepest-descent direction
    LINE_SEARCH = 5
    #: the objective or its gradient is not finite at the (projected) starting point; nothing was done
    NONFINITE = 6

    @property
    def status(self) -> int:
        """SciPy's ``status`` for this stop: 0 converged, 1 a budget spent, 2 otherwise."""
        return 0 if self in (Stop.GTOL, Stop.FTOL) else 1 if self in (Stop.MAXITER, Stop.MAXFUN) else 2

    @property
    def message(self) -> str:
        """SciPy's message for this stop."""
        return _LBFGSB_MESSAGES[self.name.lower().replace("_", " ")]


class MinimizeResult(OptimizeResult):
    """The result of :func:`arrayopt.batch.minimize`: SciPy's fields, each with a leading batch axis.

    Keys (also attributes), for B problems of n variables:

    * ``x`` (B, n): the solutions; ``fun`` (B,): the objective there; ``jac`` (B, n):
      its gradient;
    * ``stop`` (B,): a :class:`Stop` code per problem; ``status`` (B,): SciPy's status
      (0 converged, 1 ``maxiter`` or ``maxfun``, 2 otherwise), derived from ``stop``;
      ``success`` (B,): ``status == 0``;
    * ``nit`` (B,): iterations (accepted steps); ``nfev`` (B,): evaluations of ``fun``
      (those of finite differences included, as SciPy counts them); ``njev`` (B,):
      gradients.

    ``message(i)`` gives problem i's SciPy message; :class:`Stop` maps every code to its
    text.

    Args:
        kwargs: the fields (as for ``dict``).

    >>> import numpy as np
    >>> result = MinimizeResult(stop=np.array([1, 5]))
    >>> result.message(1)
    'ABNORMAL: THE LINE SEARCH FOUND NO ACCEPTABLE STEP'
    """

    def message(self, index: int) -> str:
        """SciPy's message for problem ``index``'s stop (reads one integer from the device).

        Args:
            index: the problem's position in the batch.
        """
        return Stop(_read(self["stop"], index)).message


def _read(codes: Any, index: int) -> int:
    """Entry ``index`` of an integer array of any library, as a Python int."""
    return int(get_backend(codes).to_numpy(codes[index]).reshape(()))

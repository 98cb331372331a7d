r"""Per-problem boxes :math:`l \le x \le u` for batched solvers.

Shared by every batched method that takes ``bounds`` (the Levenberg-Marquardt of
:func:`arrayopt.batch.least_squares`, the L-BFGS-B of :func:`arrayopt.batch.minimize`):
parsing and checking SciPy's forms of ``bounds``, projection, the set of *binding*
variables (at a bound, with the gradient pushing outward), the Coleman-Li scaling of the
gradient SciPy's ``gtol`` test uses, and one-sided finite-difference steps that stay
inside the box.

Like the rest of :mod:`arrayopt.batch`, arrays keep the problem axis last: ``x`` and the
bounds are (n, B), the bounds possibly (n, 1) when every problem shares them.

>>> import numpy as np
>>> box = Box.parse(np, (0.0, [1.0, 2.0]), n=2, count=3, dtype=np.float64)
>>> box.lower.shape, box.upper[:, 0].tolist()
((2, 1), [1.0, 2.0])
>>> box.project(np.array([[-1.0, 0.5, 3.0], [1.0, 1.0, 1.0]])).tolist()
[[0.0, 0.5, 1.0], [1.0, 1.0, 1.0]]
"""

import math
from collections.abc import Callable
from typing import Any

from arrayopt.backends import get_backend, is_array

__all__ = ["Box"]


class Box:
    """Lower and upper bounds for a stack of problems, with the problem axis last.

    Attributes:
        lower: shape (n, B) or (n, 1); ``-inf`` where a variable has no lower bound.
        upper: the same for the upper bounds.

    Equal bounds fix a variable (unlike SciPy, which asks for ``lb < ub``): its steps
    are projected away.

    Args:
        lower: lower bounds, as the attribute.
        upper: upper bounds, as the attribute.

    >>> import numpy as np
    >>> box = Box(np.zeros((1, 1)), np.ones((1, 1)))
    >>> box.binding(np.array([[0.0, 0.0, 0.5]]), np.array([[1.0, -1.0, 1.0]])).tolist()
    [[True, False, False]]
    """

    def __init__(self, lower: Any, upper: Any) -> None:
        self.lower = lower
        self.upper = upper

    @classmethod
    def parse(cls, xp: Any, bounds: Any, n: int, count: int, dtype: Any, like: Any = None) -> "Box | None":
        """The :class:`Box` of ``bounds`` for ``count`` problems of ``n`` variables, or None if unbounded.

        ``bounds`` is ``(lb, ub)`` or an object with ``lb`` and ``ub`` attributes (a
        ``scipy.optimize.Bounds``); ``lb`` and ``ub`` are each a number or an array
        broadcastable to ``(count, n)`` (shape ``(n,)`` for bounds shared by all
        problems), of any library arrayopt knows. Checked here: NaN and ``lb > ub``
        raise ValueError naming the argument.

        Args:
            xp: the namespace of the problems' arrays.
            bounds: as above.
            n: variables per problem.
            count: number of problems B.
            dtype: the floating dtype the solver works in.
            like: an array on the device the bounds must live on (None: the default).

        >>> import numpy as np
        >>> Box.parse(np, (-np.inf, np.inf), n=3, count=5, dtype=np.float64) is None
        True
        """
        if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
            lb, ub = bounds.lb, bounds.ub
        else:
            try:
                lb, ub = bounds
            except (TypeError, ValueError):
                raise ValueError(f"bounds must be a pair (lb, ub) or a scipy.optimize.Bounds, got {bounds!r}") from None
        lower = _as_bound(xp, lb, "lb", n, count, dtype, like)
        upper = _as_bound(xp, ub, "ub", n, count, dtype, like)
        if bool(xp.any(xp.isnan(lower))) or bool(xp.any(xp.isnan(upper))):
            raise ValueError("bounds: lb and ub must not contain NaN")
        _refuse(
            xp,
            lower > upper,
            lambda v, b: (
                f"bounds: each lower bound must be at most its upper bound; problem {b}, "
                f"variable {v} has lb={_read(lower, v, b)} > ub={_read(upper, v, b)}"
            ),
        )
        if not bool(xp.any(lower > -math.inf)) and not bool(xp.any(upper < math.inf)):
            return None
        return cls(lower, upper)

    def check_inside(self, xp: Any, x: Any, name: str = "x0") -> None:
        """Raise ValueError if some entry of ``x`` (n, B) lies outside the box (NaN entries pass).

        Args:
            xp: the array namespace.
            x: the points.
            name: the argument's name for the message.

        >>> import numpy as np
        >>> Box(np.zeros((1, 1)), np.ones((1, 1))).check_inside(np, np.array([[0.5, 2.0]]))
        Traceback (most recent call last):
        ...
        ValueError: x0 is infeasible: problem 1, variable 0 is 2.0, outside [0.0, 1.0]
        """
        _refuse(
            xp,
            (x < self.lower) | (x > self.upper),
            lambda v, b: (
                f"{name} is infeasible: problem {b}, variable {v} is {_read(x, v, b)}, "
                f"outside [{_read(self.lower, v, b)}, {_read(self.upper, v, b)}]"
            ),
        )

    def take(self, xp: Any, rows: Any) -> "Box":
        """The box of the problems ``rows`` (an integer array), sharing shared bounds.

        Args:
            xp: the array namespace.
            rows: indices along the problem axis.

        >>> import numpy as np
        >>> box = Box(np.array([[0.0, 1.0, 2.0]]), np.full((1, 1), 5.0))
        >>> part = box.take(np, np.array([2, 0]))
        >>> part.lower.tolist(), part.upper.shape
        ([[2.0, 0.0]], (1, 1))
        """
        lower = self.lower if self.lower.shape[1] == 1 else xp.take(self.lower, rows, axis=1)
        upper = self.upper if self.upper.shape[1] == 1 else xp.take(self.upper, rows, axis=1)
        return Box(lower, upper)

    def part(self, lo: int, hi: int) -> "Box":
        """The box of the problems ``lo:hi`` (views; shared bounds stay shared).

        Args:
            lo: the first problem.
            hi: one past the last.

        >>> import numpy as np
        >>> Box(np.array([[0.0, 1.0, 2.0]]), np.full((1, 1), 5.0)).part(1, 3).lower.tolist()
        [[1.0, 2.0]]
        """
        lower = self.lower if self.lower.shape[1] == 1 else self.lower[:, lo:hi]
        upper = self.upper if self.upper.shape[1] == 1 else self.upper[:, lo:hi]
        return Box(lower, upper)

    def project(self, x: Any) -> Any:
        """``x`` clipped into the box (NaN stays NaN).

        Args:
            x: shape (n, B).

        >>> import numpy as np
        >>> Box(np.zeros((1, 1)), np.ones((1, 1))).project(np.array([[-2.0, 0.3, 9.0]])).tolist()
        [[0.0, 0.3, 1.0]]
        """
        xp = get_backend(x).xp
        return xp.minimum(xp.maximum(x, self.lower), self.upper)

    def binding(self, x: Any, g: Any) -> Any:
        """The variables held at a bound: ``x == l`` with ``g > 0``, or ``x == u`` with ``g < 0``.

        ``g`` is the gradient of the objective; a binding variable's descent direction
        points out of the box, so a projected method leaves it where it is (Bertsekas,
        SIAM J. Control Optim. 20:221, 1982).

        Args:
            x: points, shape (n, B).
            g: gradients, shape (n, B).

        >>> import numpy as np
        >>> Box(np.zeros((1, 1)), np.ones((1, 1))).binding(np.array([[1.0, 1.0]]), np.array([[-1.0, 1.0]])).tolist()
        [[True, False]]
        """
        return ((x <= self.lower) & (g > 0)) | ((x >= self.upper) & (g < 0))

    def scaled_gradient(self, x: Any, g: Any) -> Any:
        r"""The gradient scaled by the Coleman-Li vector v, as SciPy's ``trf`` tests ``gtol`` with.

        .. math::
            v_i = \begin{cases} u_i - x_i & g_i < 0,\ u_i < \infty \\
                                x_i - l_i & g_i > 0,\ l_i > -\infty \\
                                1 & \text{otherwise} \end{cases}

        Coleman and Li, SIAM J. Optim. 6:418, 1996; ``scipy.optimize._lsq.common.
        CL_scaling_vector``. Zero for a binding variable, so at a constrained minimum the
        scaled gradient vanishes.

        Args:
            x: points, shape (n, B).
            g: gradients, shape (n, B).

        >>> import numpy as np
        >>> box = Box(np.zeros((1, 1)), np.full((1, 1), np.inf))
        >>> box.scaled_gradient(np.array([[0.5, 0.5]]), np.array([[2.0, -2.0]])).tolist()
        [[1.0, -2.0]]
        """
        xp = get_backend(x).xp
        up = (g < 0) & (self.upper < math.inf)
        down = (g > 0) & (self.lower > -math.inf)
        distance = xp.where(up, self.upper - x, xp.where(down, x - self.lower, 1.0))
        return g * distance

    def active(self, xp: Any, x: Any, g: Any) -> Any:
        """SciPy's ``active_mask``: -1 where a lower bound binds, 1 where an upper bound binds, else 0.

        Args:
            xp: the array namespace.
            x: points, shape (n, B).
            g: gradients, shape (n, B).

        >>> import numpy as np
        >>> box = Box(np.zeros((1, 1)), np.ones((1, 1)))
        >>> box.active(np, np.array([[0.0, 1.0, 0.5]]), np.array([[1.0, -1.0, 1.0]])).tolist()
        [[-1, 1, 0]]
        """
        lower = (x <= self.lower) & (g > 0)
        upper = (x >= self.upper) & (g < 0)
        return xp.astype(upper, xp.int8) - xp.astype(lower, xp.int8)

    def difference_step(self, xp: Any, x: Any, h: Any, variable: int) -> Any:
        """A forward step ``h`` (B,) in ``variable`` turned around, or shortened, to stay in the box.

        As SciPy's ``approx_derivative`` with bounds: the step is reversed when ``x + h``
        would leave the box; when neither direction fits, the longer of the two distances
        to the bounds is used (zero for a fixed variable).

        Args:
            xp: the array namespace.
            x: the variable's values, shape (B,).
            h: proposed steps, shape (B,).
            variable: which variable (row of the bounds).

        >>> import numpy as np
        >>> box = Box(np.zeros((1, 1)), np.ones((1, 1)))
        >>> box.difference_step(np, np.array([0.5, 1.0, 0.0]), np.array([0.1, 0.1, -0.1]), 0).tolist()
        [0.1, -0.1, 0.1]
        """
        lower, upper = self.lower[variable, ...], self.upper[variable, ...]
        forward = x + h
        fits = (forward >= lower) & (forward <= upper)
        backward = x - h
        back_fits = (backward >= lower) & (backward <= upper)
        room_up = upper - x
        room_down = lower - x
        widest = xp.where(room_up >= -room_down, room_up, room_down)
        return xp.where(fits, h, xp.where(back_fits, -h, widest))


def _as_bound(xp: Any, value: Any, name: str, n: int, count: int, dtype: Any, like: Any) -> Any:
    """``value`` as an (n, 1) or (n, count) array of ``dtype`` (problem axis last)."""
    if is_array(value):
        if like is not None:
            value = get_backend(like).convert(value, like, cast=False)
        array = xp.astype(value, dtype)
    else:
        device = None if like is None else getattr(like, "device", None)
        try:
            array = xp.asarray(value, dtype=dtype, device=device)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bounds: {name} must be a number or an array of numbers, got {value!r}") from exc
    if array.ndim > 2:
        raise ValueError(f"bounds: {name} has shape {tuple(array.shape)}; expected at most 2 dimensions ({count}, {n})")
    shape = (1,) * (2 - array.ndim) + tuple(array.shape)
    if shape[0] not in (1, count) or shape[1] not in (1, n):
        raise ValueError(f"bounds: {name} has shape {tuple(array.shape)}, which does not broadcast to ({count}, {n})")
    array = xp.reshape(array, shape)
    rows = count if shape[0] == count and count != 1 else 1
    return xp.permute_dims(xp.broadcast_to(array, (rows, n)), (1, 0))


def _refuse(xp: Any, mask: Any, message: Callable[[int, int], str]) -> None:
    """Raise ValueError(message(variable, problem)) for the first True entry of an (n, B') mask, if any."""
    if not bool(xp.any(mask)):
        return
    flat = xp.reshape(xp.permute_dims(mask, (1, 0)), (-1,))  # problem-major
    index = int(xp.argmax(xp.astype(flat, xp.int8)))
    n = mask.shape[0]
    raise ValueError(message(index % n, index // n))


def _read(array: Any, variable: int, problem: int) -> float:
    column = problem if array.shape[1] > 1 else 0
    return float(array[variable, column])

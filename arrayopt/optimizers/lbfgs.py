r"""L-BFGS (Liu and Nocedal, 1989), torch.optim.LBFGS 2.14's variant, with an optional strong-Wolfe search.

Every parameter is flattened into one vector :math:`x` (complex ones as interleaved
real and imaginary parts, like ``torch.view_as_real``), and so is the gradient
:math:`g`. One ``step(closure)`` runs up to ``max_iter`` iterations of

.. math::

    y &= g - g_{prev}, \quad s = t\,d, \quad
        \text{keep } (y, s, \rho = 1/y^\top s) \text{ and } H_0 = y^\top s / y^\top y
        \text{ if } y^\top s > 10^{-10}
        \quad \text{(at most ``history_size`` pairs, oldest dropped)} \\
    d &= -H g \quad \text{(two-loop recursion over the kept pairs, newest first then oldest first)} \\
    x &\leftarrow x + t\,d

where :math:`t` is ``lr`` (the very first iteration of the optimizer's life uses
steepest descent, :math:`d = -g`, with :math:`t = \min(1, 1/\|g\|_1)\,\gamma`), or the
step chosen by :func:`arrayopt.line_search.strong_wolfe` when
``line_search_fn="strong_wolfe"``. The iterations stop, in this order of tests, when
:math:`g^\top d > -`\ ``tolerance_change`` (before moving), after ``max_iter``
iterations, after ``max_eval`` evaluations of the closure, when
:math:`\max|g| \le` ``tolerance_grad``, when :math:`\max|t d| \le`
``tolerance_change``, or when the loss changed by less than ``tolerance_change``.

With ``maximize=True`` (torch 2.14) the iteration runs on :math:`-f`: the loss and the
flat gradient are negated as they are read from the closure, so every number above
(the stored ``prev_loss`` and ``prev_flat_grad`` included) is that of :math:`-f`;
``step`` still returns the closure's own first value.

The vector work (flattening, dot products, the two-loop recursion, moving the
parameters) is array code through the parameters' namespace, so it runs on NumPy, on
CuPy (on the device) and on any array-API library. Only the scalars the algorithm
branches on cross to the host: the loss, :math:`g^\top d`, :math:`y^\top s` and the
max-norms compared with the tolerances. The curvature scalars (:math:`\rho`,
:math:`H_0` and the two-loop coefficients) stay 0-d arrays, as torch keeps them
0-d tensors.

Every dot product sums the elementwise products in the fixed order of
:meth:`Backend.dot <arrayopt.backends.Backend.dot>`, never by BLAS; most are taken while
one of their vectors is written (:meth:`Backend.axpy_dot
<arrayopt.backends.Backend.axpy_dot>`, :meth:`Backend.scale_dot
<arrayopt.backends.Backend.scale_dot>`: one pass over the vectors on NumPy, the bits of
the operations one after the other). With a closure that is itself deterministic, the
same inputs give the same iterates, bit for bit, on every CPU, BLAS kernel and thread
count (NumPy and array-api-strict); torch and SciPy, whose dot products go to MKL or
OpenBLAS, do not promise that.
"""

import math
import operator
from collections.abc import Callable
from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt.backends import Backend, get_backend, is_array
from arrayopt.line_search import strong_wolfe
from arrayopt.optimizer import Optimizer
from arrayopt.parameter import Parameter

__all__ = ["LBFGS"]


class LBFGS(Optimizer):
    r"""L-BFGS with torch.optim.LBFGS's arguments, state and numbers.

    .. math::

        d_k = -H_k g_k, \qquad x_{k+1} = x_k + t_k d_k

    with :math:`H_k` the limited-memory BFGS inverse-Hessian estimate built from the
    last ``history_size`` pairs of parameter and gradient changes (see the module
    docstring for the whole iteration and its stopping tests).

    Args:
        params: Parameters or ``(name, Parameter)`` pairs, all of one array library,
            device and (real) precision; a single param group only.
        lr: step length :math:`\gamma` (float or 1-element array). Default: 1.
        max_iter: most iterations per ``step``. Default: 20.
        max_eval: most closure evaluations per ``step``. Default: ``max_iter * 5 // 4``.
        tolerance_grad: stop when the largest gradient entry is at most this. Default: 1e-7.
        tolerance_change: stop when the step or the change of the loss is below this.
            Default: 1e-9.
        history_size: number of correction pairs kept. Default: 100.
        line_search_fn: None (fixed step ``lr``) or ``"strong_wolfe"``.
        maximize: maximise the closure's value instead of minimising it (keyword only;
            torch 2.14). Default: False.

    ``step(closure)`` needs a closure that sets every parameter's ``grad`` (None counts
    as zero) and returns the loss as a number or a 1-element array; ``step`` returns
    that original value. The closure is called several times per step.

    A param group with no Parameters at all (``[{"params": []}]``) is accepted, and its
    ``step`` only calls the closure and returns its value (torch 2.14).

    State, all under the first parameter as in torch: ``func_evals`` and ``n_iter``
    (ints, cumulative over steps), ``d`` (last direction), ``t`` (last step length:
    ``lr`` as given, or a 0-d array where torch's is a 0-d tensor), ``old_dirs`` (the
    :math:`y` vectors), ``old_stps`` (the :math:`s` vectors), ``ro`` (0-d arrays),
    ``H_diag`` (the int 1, then a 0-d array), ``prev_flat_grad``, ``prev_loss``
    (float) and ``al`` (the two-loop coefficients, 0-d arrays).

    Differences from torch: with float32 parameters and an array ``lr``, ``lr`` is
    read as a Python float (torch multiplies by the 0-d tensor, in its dtype); a
    closure returning NaN raises ValueError (torch carries on with NaN); the other
    hyper-parameters are checked at construction (torch only checks ``lr``), and a
    ``line_search_fn`` other than ``"strong_wolfe"`` is refused at the start of
    ``step``, before the closure runs (torch raises the same error after evaluating
    it once). Parameters must share one library, device and precision.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([-1.5, 2.0]))
        >>> def closure():  # the Rosenbrock function
        ...     x, y = w.data
        ...     w.grad = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
        ...     return (1 - x) ** 2 + 100 * (y - x * x) ** 2
        >>> opt = arrayopt.LBFGS([w], max_iter=100, line_search_fn="strong_wolfe")
        >>> first_loss = opt.step(closure)
        >>> np.round(w.data, 4)
        array([1., 1.])

    Reference:
        Liu and Nocedal, "On the limited memory BFGS method for large scale
        optimization", Mathematical Programming 45 (1989); Nocedal and Wright,
        *Numerical Optimization*, Algorithm 7.4.
    """

    #: Loaded groups saved by torch 2.13 or earlier have no ``maximize`` (torch reads it
    #: with ``group.get("maximize", False)``).
    _defaults_on_load: ClassVar[dict[str, Any]] = {"maximize": False}

    def __init__(
        self,
        params: Any,
        lr: Any = 1,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
        *,
        maximize: bool = False,
    ) -> None:
        v.check_lr(lr)
        max_iter = _count(max_iter, "max_iter", minimum=0)
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        max_eval = _count(max_eval, "max_eval", minimum=0)
        history_size = _count(history_size, "history_size", minimum=1)
        v.number(tolerance_grad, "tolerance_grad")
        v.number(tolerance_change, "tolerance_change")
        if line_search_fn is not None and not isinstance(line_search_fn, str):
            raise TypeError(f"line_search_fn must be None or 'strong_wolfe', got {line_search_fn!r}")
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_eval,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "history_size": history_size,
            "line_search_fn": line_search_fn,
            "maximize": maximize,
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        if self._params:
            self._check_params()
        # For arrayopt.minimize: called after every iteration (True stops the step),
        # and why the last step stopped.
        self._on_iteration: Callable[[], bool] | None = None
        self._stop_reason = ""
        self._last_eval: tuple[float, Any, bool] | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_on_iteration", None)
        self.__dict__.setdefault("_stop_reason", "")
        self.__dict__.setdefault("_last_eval", None)

    def _check_loaded_state(self, param: Parameter, state: Any, group: Any, where: str) -> None:
        """Refuse a loaded state that ``step`` could not use (called by ``load_state_dict``'s checks).

        The history holds flat vectors over every parameter (complex entries as two
        reals), so their length, not a parameter's shape, is what must match.
        """
        length = sum(math.prod(p.shape) * (2 if get_backend(p.data).is_complex(p.data) else 1) for p in self._params)
        for key in ("func_evals", "n_iter"):
            if key in state:
                count = state[key]
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise ValueError(f"{where}: {key!r} must be an int >= 0, got {count!r}")
        for key in ("d", "prev_flat_grad"):
            if state.get(key) is not None:
                _check_flat(state[key], length, f"{where}: {key!r}")
        for key in ("t", "H_diag", "prev_loss"):
            if state.get(key) is not None:
                _check_number(state[key], f"{where}: {key!r}")
        history = [state.get(key) for key in ("old_dirs", "old_stps", "ro")]
        if any(item is not None for item in history):
            if not all(isinstance(item, list) for item in history):
                raise TypeError(f"{where}: 'old_dirs', 'old_stps' and 'ro' must be lists")
            if len({len(item) for item in history}) != 1:
                raise ValueError(f"{where}: 'old_dirs', 'old_stps' and 'ro' must be as long as each other")
            for key, item in zip(("old_dirs", "old_stps"), history, strict=False):
                for i, vector in enumerate(item):
                    _check_flat(vector, length, f"{where}: {key!r}[{i}]")
            for i, number in enumerate(history[2]):
                _check_number(number, f"{where}: 'ro'[{i}]")
        if "al" in state:
            al = state["al"]
            if not isinstance(al, list) or len(al) < len(history[0] or ()):
                raise ValueError(f"{where}: 'al' must be a list at least as long as 'old_dirs'")
            for i, number in enumerate(al):
                if number is not None:
                    _check_number(number, f"{where}: 'al'[{i}]")
        if state.get("n_iter", 0) > 0:
            kept = ("d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad")
            missing = [key for key in kept if key not in state]
            if missing:
                raise KeyError(f"{where} has n_iter {state['n_iter']} but no {', '.join(map(repr, missing))}")

    @property
    def _params(self) -> list[Parameter]:
        params: list[Parameter] = self.param_groups[0]["params"]
        return params

    # -- flat views of the parameters ------------------------------------------------

    def _check_params(self) -> Backend:
        """The parameters' backend; they must share it, a device and a real precision."""
        first = self._params[0].data
        backend = get_backend(first)
        device, real = backend.device(first), _real_dtype(backend, first)
        numel = 0
        for p in self._params:
            data = p.data
            if get_backend(data) is not backend or backend.device(data) != device:
                raise ValueError(
                    f"LBFGS needs every parameter on one array library and device: {p._label()} is a "
                    f"{get_backend(data).name} array on {get_backend(data).device(data)}, the first is a "
                    f"{backend.name} array on {device}"
                )
            if _real_dtype(backend, data) != real:
                raise ValueError(
                    f"LBFGS needs every parameter in one precision: {p._label()} has dtype {data.dtype}, "
                    f"the first has dtype {first.dtype}"
                )
            numel += math.prod(data.shape)
        if numel == 0:
            raise ValueError("LBFGS needs at least one parameter entry (every parameter is empty)")
        return backend

    def _gather_flat_grad(self, xp: Any) -> Any:
        """A new vector holding every gradient (zeros for None), complex ones as real pairs; negated to maximise."""
        pieces = []
        for p in self._params:
            grad = p.grad
            if grad is None:
                grad = xp.zeros_like(p.data)
            pieces.append(_flat_real(xp, grad))
        flat_grad = xp.concat(pieces)
        if self.param_groups[0].get("maximize", False):
            flat_grad = -flat_grad
        return flat_grad

    def _objective(self, value: Any) -> float:
        """The closure's value as the float the iteration minimises (negated to maximise)."""
        loss = _loss_value(value)
        return -loss if self.param_groups[0].get("maximize", False) else loss

    def _add_grad(self, backend: Backend, step: float, update: Any) -> None:
        """Move every parameter by ``step`` times its slice of the flat vector ``update``."""
        xp = backend.xp
        offset = 0
        for p in self._params:
            data = p.data
            size = math.prod(data.shape)
            if xp.isdtype(data.dtype, "complex floating"):
                real = update[offset : offset + 2 * size : 2]
                imag = update[offset + 1 : offset + 2 * size : 2]
                piece = xp.astype(real, data.dtype) + xp.astype(imag, data.dtype) * 1j
                offset += 2 * size
            else:
                piece = update[offset : offset + size]
                offset += size
            # a NumPy scalar step becomes a Python float: same value, weak in promotion
            backend.axpy(data, float(step), xp.reshape(piece, data.shape))

    def _clone_params(self, xp: Any, into: list[Any] | None = None) -> list[Any]:
        """Copies of the parameters' values: new arrays, or written into ``into`` (copies made before)."""
        if into is None:
            return [xp.asarray(p.data, copy=True) for p in self._params]
        for copy, p in zip(into, self._params, strict=True):
            copy[...] = p.data
        return into

    def _set_params(self, values: list[Any]) -> None:
        for p, value in zip(self._params, values, strict=True):
            p.data[...] = value

    def _line(
        self, closure: Callable[[], Any], backend: Backend, host: Callable[[Any], Any], d: Any, x_init: list[Any]
    ) -> Callable[[float], tuple[float, Any, Any]]:
        """``phi(t)``: loss, slope and flat gradient at the parameters moved by ``t d``.

        Each call moves the parameters, runs the closure and puts them back as they
        were (``x_init``: copied before the search), as torch's ``_directional_evaluate``
        does.
        """
        xp = backend.xp

        def phi(step: float) -> tuple[float, Any, Any]:
            self._add_grad(backend, step, d)
            try:
                value = self._objective(closure())
                grad = self._gather_flat_grad(xp)
            finally:
                self._set_params(x_init)
            return value, host(backend.dot(grad, d)), grad

        return phi

    # -- the step ----------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Run up to ``max_iter`` L-BFGS iterations; return the closure's first value.

        Args:
            closure: recomputes the loss at the current parameters, sets every
                parameter's ``grad``, and returns the loss (a number or a 1-element
                array). Required.
        """
        if closure is None or not callable(closure):
            raise TypeError(
                "LBFGS.step needs a closure: a function that sets the parameters' gradients and returns the loss"
            )
        if len(self.param_groups) != 1:
            raise ValueError(f"LBFGS expects exactly one param_group, but got {len(self.param_groups)}")
        if not self._params:
            # nothing to optimise: the closure still gives the caller a loss (torch 2.14)
            self._stop_reason = "no parameters"
            return closure()
        group = self.param_groups[0]
        lr = v.to_float(group["lr"]) if is_array(group["lr"]) else group["lr"]
        max_iter = group["max_iter"]
        max_eval = group["max_eval"]
        tolerance_grad = group["tolerance_grad"]
        tolerance_change = group["tolerance_change"]
        line_search_fn = group["line_search_fn"]
        history_size = group["history_size"]
        if line_search_fn is not None and line_search_fn != "strong_wolfe":
            raise RuntimeError("only 'strong_wolfe' is supported")
        if line_search_fn is not None and max_eval < 1 and max_iter > 0:  # max_iter 0: no search at all
            raise ValueError(f"max_eval must be at least 1 with line_search_fn='strong_wolfe', got {max_eval}")
        backend = self._check_params()
        xp = backend.xp
        dot = backend.dot  # fixed-order, BLAS-free: the same bits on every CPU and thread count

        def host(x: Any) -> Any:
            # a 0-d result as a host scalar of its own dtype (np.float32 for float32),
            # so that scalar arithmetic rounds as torch's 0-d tensors do
            return backend.to_numpy(x)[()]

        # LBFGS's state is global; torch files it under the first parameter.
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss = closure()
        loss = self._objective(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._gather_flat_grad(xp)
        self._last_eval = (loss, flat_grad, True)
        if host(backend.max_abs(flat_grad)) <= tolerance_grad:
            self._stop_reason = "initial gradient"
            return orig_loss

        d = state.get("d")
        t = state.get("t")
        old_dirs = state.get("old_dirs")
        old_stps = state.get("old_stps")
        ro = state.get("ro")
        H_diag = state.get("H_diag")
        prev_flat_grad = state.get("prev_flat_grad")
        prev_loss = state.get("prev_loss")
        if is_array(t):
            t = host(t)

        x_init: list[Any] | None = None  # the parameters' copy for the line search: made once, rewritten

        self._stop_reason = "max_iter"
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # -- direction --------------------------------------------------------------
            slope = None  # g^T d, when the two-loop recursion gives it
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                # the new pair, each vector with its product taken as it is written:
                # y = g - g_prev (as g + (-1) g_prev: the same bits) with y^T y, then
                # s = d t with y^T s
                y = xp.empty_like(flat_grad)
                yy = backend.axpy_dot(flat_grad, -1.0, prev_flat_grad, y, out=y)
                s = xp.empty_like(d)
                ys = backend.scale_dot(s, d, float(t), y)
                if host(ys) > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(xp.asarray(1.0 / ys))
                    H_diag = xp.asarray(ys / yy)
                num_old = len(old_dirs)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]
                # two-loop recursion: q = -g through the pairs newest first, scale by
                # H_diag, then back oldest first; q and r (the new d) are updated in place,
                # each update fused with the next pair's dot product (backend.axpy_dot:
                # the same bits as the separate operations). q -= al[i] * old_dirs[i] is
                # q + (-al[i]) * old_dirs[i]: the same bits, as negation is exact.
                # The last update of q comes scaled by H_diag (r = q H_diag, in place) and
                # with the first pair's product. q = -g is written as g (-1): the same
                # bits, but for the sign of a NaN, which IEEE 754 leaves open.
                if num_old:
                    q = xp.empty_like(flat_grad)
                    product = backend.scale_dot(q, flat_grad, -1.0, old_stps[num_old - 1])
                    for i in range(num_old - 1, -1, -1):
                        al[i] = xp.asarray(product * ro[i])
                        z = old_stps[i - 1] if i else old_dirs[0]
                        product = backend.axpy_dot(q, -al[i], old_dirs[i], z, scale=None if i else H_diag)
                    d = r = q
                else:
                    d = r = -flat_grad * H_diag
                for i in range(num_old):
                    be_i = product * ro[i]
                    # the last update comes with g^T d, the slope tested below
                    z = old_dirs[i + 1] if i + 1 < num_old else flat_grad
                    product = backend.axpy_dot(r, al[i] - be_i, old_stps[i], z)
                if num_old:
                    slope = product

            # (every flat gradient is a new vector that nothing writes to: kept, not copied)
            prev_flat_grad = flat_grad
            prev_loss = loss

            # -- step length ------------------------------------------------------------
            if state["n_iter"] == 1:
                inverse = host(1.0 / xp.sum(xp.abs(flat_grad)))
                t = min(1.0, inverse) * lr
            else:
                t = lr

            gtd = host(slope if slope is not None else dot(flat_grad, d))
            if gtd > -tolerance_change:
                self._stop_reason = "not a descent direction"
                break

            ls_func_evals = 0
            d_max = None  # max |d|, on the host
            if line_search_fn is not None:
                d_max = host(backend.max_abs(d))
                x_init = self._clone_params(xp, x_init)
                found = strong_wolfe(
                    self._line(closure, backend, host, d, x_init),
                    t,
                    loss,
                    gtd,
                    max_ls=max_eval - current_evals,
                    d_norm=d_max,
                    payload=flat_grad,
                )
                loss, flat_grad, t, ls_func_evals = found.f, found.payload, found.t, found.evals
                self._add_grad(backend, t, d)
                opt_cond = host(backend.max_abs(flat_grad)) <= tolerance_grad
                self._last_eval = (loss, flat_grad, True)
            else:
                self._add_grad(backend, t, d)
                self._last_eval = (loss, flat_grad, False)
                if n_iter != max_iter:
                    # not on the last iteration: its result would be thrown away
                    loss = self._objective(closure())
                    flat_grad = self._gather_flat_grad(xp)
                    opt_cond = host(backend.max_abs(flat_grad)) <= tolerance_grad
                    ls_func_evals = 1
                    self._last_eval = (loss, flat_grad, True)

            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            if self._on_iteration is not None and self._on_iteration():
                self._stop_reason = "callback"
                break

            # -- stopping tests, in torch's order ---------------------------------------
            if n_iter == max_iter:
                self._stop_reason = "max_iter"
                break
            if current_evals >= max_eval:
                self._stop_reason = "max_eval"
                break
            if opt_cond:
                self._stop_reason = "gradient"
                break
            # max |d t| as max |d| |t| rounded once in d's dtype: rounding is monotonic,
            # so the same number (or, for an infinite t, the same outcome of the test)
            if d_max is None:
                d_max = host(backend.max_abs(d))
            if d_max * abs(float(t)) <= tolerance_change:
                self._stop_reason = "step"
                break
            if abs(loss - prev_loss) < tolerance_change:
                self._stop_reason = "loss change"
                break

        state["d"] = d
        # t is a Python number where torch has one (lr), else a 0-d array as torch's tensor
        if t is not None and type(t) not in (int, float):
            t = xp.asarray(float(t), dtype=d.dtype, device=backend.device(d))
        state["t"] = t
        state["old_dirs"] = old_dirs
        state["old_stps"] = old_stps
        state["ro"] = ro
        state["H_diag"] = H_diag
        state["prev_flat_grad"] = prev_flat_grad
        state["prev_loss"] = prev_loss
        return orig_loss


def _check_flat(vector: Any, length: int, where: str) -> None:
    if not is_array(vector):
        raise TypeError(f"{where} must be an array of shape ({length},), but got {type(vector).__name__}")
    if tuple(vector.shape) != (length,):
        raise ValueError(f"{where} has shape {tuple(vector.shape)}, but the parameters make vectors of ({length},)")
    if not get_backend(vector).xp.isdtype(vector.dtype, "real floating"):
        raise TypeError(f"{where} has dtype {vector.dtype}, but LBFGS keeps real floating-point vectors")


def _check_number(value: Any, where: str) -> None:
    if is_array(value):
        if math.prod(value.shape) != 1:
            raise ValueError(f"{where} must be a number or a 1-element array, got an array of shape {value.shape}")
        value = get_backend(value).to_numpy(value).reshape(()).item()
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, (int, float)):
        raise TypeError(f"{where} must be a real number or a 1-element array, got {value!r}")


def _count(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int of at least ``minimum`` (torch documents these as ints)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return number


def _real_dtype(backend: Backend, array: Any) -> Any:
    """The real dtype of ``array``'s entries (float32 for complex64)."""
    if backend.is_complex(array):
        return backend.xp.finfo(array.dtype).dtype
    return array.dtype


def _flat_real(xp: Any, array: Any) -> Any:
    """``array`` as a 1-D real vector; a complex one as (real, imag) pairs, like ``torch.view_as_real``."""
    if xp.isdtype(array.dtype, "complex floating"):
        array = xp.stack([xp.real(array), xp.imag(array)], axis=-1)
    return xp.reshape(array, (-1,))


def _loss_value(value: Any, allow_nan: bool = False) -> float:
    """The closure's loss as a Python float, with a clear error for anything else (NaN too, unless allowed)."""
    if is_array(value):
        size = math.prod(value.shape)
        if size != 1:
            raise ValueError(
                f"the closure must return the loss as a number or a 1-element array, got an array of shape "
                f"{tuple(value.shape)}"
            )
        xp = get_backend(value).xp
        if not xp.isdtype(value.dtype, ("real floating", "integral")):
            raise TypeError(f"the closure must return a real loss, got an array of dtype {value.dtype}")
        value = xp.reshape(value, ())
    elif value is None or isinstance(value, (str, bytes, complex)):
        raise TypeError(f"the closure must return the loss as a number or a 1-element array, got {value!r}")
    try:
        loss = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"the closure must return the loss as a number or a 1-element array, got {type(value).__name__}"
        ) from None
    if math.isnan(loss) and not allow_nan:
        raise ValueError("the closure returned a NaN loss")
    return loss

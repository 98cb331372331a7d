"""Averaged stochastic gradient descent (Polyak and Juditsky, 1992)."""

from dataclasses import dataclass
from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt._scalars import ScalarMirror, float32, scalar_array
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend, is_array
from arrayopt.optimizer import ElementwiseOptimizer, Hyper
from arrayopt.parameter import Parameter

__all__ = ["ASGD", "asgd_update"]


def asgd_update(
    xp: Any,
    param: Any,
    grad: Any,
    ax: Any,
    weight_decay: float,
    decay_factor: float,
    eta: float,
    mu: float,
    *,
    maximize: bool,
    decay: bool,
    average: bool,
) -> None:
    r"""One ASGD step, in place on ``param`` and its running average ``ax``.

    .. math::

        g &\leftarrow \pm g + \lambda\theta \qquad \text{(flag decay)} \\
        \theta &\leftarrow \theta\,(1 - \lambda_\eta \eta_t) - \eta_t\, g \\
        \bar\theta &\leftarrow \begin{cases} \bar\theta + \mu_t(\theta - \bar\theta) & \mu_t \ne 1
            \text{ (flag average)} \\ \theta & \text{otherwise} \end{cases}

    with weight decay :math:`\lambda`, decay term :math:`\lambda_\eta` (``lambd``) and
    the per-step step size :math:`\eta_t` and averaging weight :math:`\mu_t` that the
    previous step stored (see :class:`ASGD`). The host computes ``decay_factor``
    :math:`= 1 - \lambda_\eta\eta_t`. The parameter shrinks even when the gradient is
    zero.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param, grad, ax: arrays of one shape and dtype (the parameter, its gradient and its state);
            ``param`` and the state arrays are updated in place; ``grad`` is only read.
        weight_decay, decay_factor, eta, mu: per-step Python floats, the quantities named in the math
            above, computed by :class:`ASGD` with torch's expressions so they round as torch's do.
        maximize, decay, average: keyword flags that select the formula; they are fixed when the kernel
            is built (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np
        >>> p, g, ax = np.array([1.0, -2.0]), np.array([0.5, -0.25]), np.zeros(2)
        >>> asgd_update(np, p, g, ax, 0.0, 1.0, 0.1, 1.0, maximize=False, decay=False, average=True)
        >>> p, ax  # a plain SGD step with eta = 0.1; with mu = 1 the average is the new point
        (array([ 0.95 , -1.975]), array([ 0.95 , -1.975]))
    """
    g = -grad if maximize else grad
    if decay:
        g = g + weight_decay * param
    param *= decay_factor
    param -= eta * g
    if average:
        ax += mu * (param - ax)
    else:
        ax[...] = param


@dataclass(frozen=True)
class ASGDHyper(Hyper):
    """ASGD's hyper-parameters for one step (``lr_array``: the group's lr if an array; ``eta`` takes its dtype)."""

    lr: float
    lr_array: Any
    lambd: float
    alpha: float
    t0: float
    weight_decay: float


class ASGD(ElementwiseOptimizer[ASGDHyper]):
    r"""Averaged stochastic gradient descent; torch.optim.ASGD.

    The rule is :func:`asgd_update`. After step :math:`t` (with the group's current
    learning rate :math:`\gamma`), the next step's scalars are

    .. math::

        \eta_{t+1} = \frac{\gamma}{(1 + \lambda_\eta \gamma t)^{\alpha}}, \qquad
        \mu_{t+1} = \frac{1}{\max(1,\ t - t_0)},

    starting from :math:`\eta_1 = \gamma`, :math:`\mu_1 = 1`. So ``ax`` copies the
    parameter until step :math:`t_0 + 2`, and then averages the iterates from there on.

    As in torch, ``eta`` and ``mu`` are stored as 0-d float32 arrays (torch's default
    scalar dtype) on the parameter's device, and the next step uses the stored, rounded
    value, for float64 parameters too. A ``load_state_dict`` casts them to a real
    parameter's dtype, as torch does; from then on they keep that precision (except
    that torch still rounds each new ``eta`` and ``mu`` through float32 when ``lr`` is
    a number). The optimizer keeps a host copy of both, so a step never reads them
    back from a device.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
        lr: learning rate :math:`\gamma` (float or 1-element array). Default: 1e-2.
        lambd: decay term :math:`\lambda_\eta`. Default: 1e-4.
        alpha: power :math:`\alpha` in the step-size schedule. Default: 0.75.
        t0: the step after which averaging starts. Default: 1e6.
        weight_decay: L2 penalty :math:`\lambda`. Default: 0.
        foreach: accepted for torch compatibility and stored in the groups; it changes
            nothing.
        maximize: maximise the objective. Default: False.
        differentiable, capturable: must be False (NotImplementedError otherwise).

    State per parameter: ``step`` (a Python float), ``eta``, ``mu`` (0-d arrays) and
    ``ax``, the averaged parameter.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.ASGD([w], lr=0.1, lambd=0.0)
        >>> w.grad = 2 * w.data           # gradient of |w|^2
        >>> opt.step()
        >>> w.data                        # eta was lr rounded to float32, as in torch
        array([ 0.8       , -1.59999999])
        >>> opt.state[w]["eta"]
        array(0.1, dtype=float32)

    Reference:
        Polyak and Juditsky, "Acceleration of stochastic approximation by averaging",
        SIAM Journal on Control and Optimization 30(4), 1992.
    """

    _defaults_on_load: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }

    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": StateKey("step"),
        "eta": StateKey("scalar"),
        "mu": StateKey("scalar"),
        "ax": StateKey(),
    }

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: Any = 0,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        v.check_lr(lr)
        v.check_nonnegative(weight_decay, "weight_decay", f"Invalid weight_decay value: {weight_decay}")
        # torch checks nothing else; these must at least be numbers for the schedule.
        for name, value in (("lambd", lambd), ("alpha", alpha), ("t0", t0)):
            v.number(value, name)
        defaults = {
            "lr": lr,
            "lambd": lambd,
            "alpha": alpha,
            "t0": t0,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        v.check_flag_conflicts(None, foreach, differentiable, capturable)
        self._scalars = ScalarMirror()
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # a loaded number under eta or mu becomes a 0-d array (StateKey("scalar"))
        self._scalars = ScalarMirror()

    def _hyper(self, group: dict[str, Any]) -> ASGDHyper:
        weight_decay = v.to_float(group["weight_decay"])
        return ASGDHyper(
            flags={"maximize": bool(group["maximize"]), "decay": weight_decay != 0},
            lr=v.scalar_like(group["lr"]),  # a float32 lr: eta is computed in float32, as torch's
            lr_array=group["lr"] if is_array(group["lr"]) else None,
            lambd=v.to_float(group["lambd"]),
            alpha=v.to_float(group["alpha"]),
            t0=v.to_float(group["t0"]),
            weight_decay=weight_decay,
        )

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        state = {
            "step": 0.0,
            "eta": scalar_array(p.data, 0.0),
            "mu": scalar_array(p.data, 0.0),
            "ax": get_backend(p.data).xp.zeros_like(p.data),
        }
        self._scalars.write(state, "eta", v.to_float(group["lr"]))  # the lr now, rounded to float32
        self._scalars.write(state, "mu", 1.0)
        return state

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        for key in ("step", "eta", "mu"):  # a loaded state without them: fail now, before any update
            if key not in state:
                raise KeyError(key)
        return (p.data, p.grad, state["ax"])

    def _update(self, backend: Backend, hyper: ASGDHyper, state: Any, operands: tuple[Any, ...]) -> None:
        state["step"] += 1
        t = state["step"]
        lr, lambd = hyper.lr, hyper.lambd
        eta = self._scalars.read(state, "eta")
        mu = self._scalars.read(state, "mu")
        kernel = backend.kernel(asgd_update, average=mu != 1, **hyper.flags)
        kernel(*operands, hyper.weight_decay, 1 - lambd * eta, eta, mu)
        # torch computes both in Python and stores them through a float32 tensor (a
        # tensor lr keeps its own dtype instead); the stored values feed the next step.
        new_eta = lr / ((1 + lambd * lr * t) ** hyper.alpha)
        lr_array = hyper.lr_array
        if lr_array is None:
            new_eta = float32(backend, new_eta)
        else:
            new_eta = get_backend(lr_array).round_scalar(float(new_eta), lr_array.dtype)
        self._scalars.write(state, "eta", new_eta)
        self._scalars.write(state, "mu", float32(backend, 1 / max(1, t - hyper.t0)))

"""NAdam: Adam with Nesterov momentum (Dozat, 2016), optionally with decoupled weight decay."""

from dataclasses import dataclass
from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt._scalars import ScalarMirror, scalar_array
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend
from arrayopt.optimizer import ElementwiseOptimizer
from arrayopt.optimizers.adam import AdamHyper
from arrayopt.parameter import Parameter

__all__ = ["NAdam", "nadam_update"]


def nadam_update(
    xp: Any,
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    weight_decay: float,
    decay_factor: float,
    one_minus_beta1: float,
    one_minus_weight: float,
    beta2: float,
    one_minus_beta2: float,
    bias_correction2: float,
    eps: float,
    grad_coeff: float,
    exp_avg_coeff: float,
    *,
    maximize: bool,
    decay: str,
    lerp_from_end: bool,
) -> None:
    r"""One NAdam step, in place on ``param`` and the moments.

    .. math::

        g &\leftarrow \pm g \\
        \theta &\leftarrow \theta\,(1 - \gamma\lambda) \quad\text{or}\quad
            g \leftarrow g + \lambda\theta
            \qquad \text{(decay = "decoupled" or "l2")} \\
        m &\leftarrow m + (1-\beta_1)(g - m) \\
        v &\leftarrow \beta_2 v + (1-\beta_2)\, g^2 \\
        d &= \sqrt{v / (1-\beta_2^t)} + \epsilon \\
        \theta &\leftarrow \theta + c_g\, g / d + c_m\, m / d

    The host computes the momentum schedule :math:`\mu_t = \beta_1(1 - \tfrac12
    0.96^{t\psi})`, the product :math:`P_t = \prod_{i\le t}\mu_i` and the coefficients
    ``grad_coeff`` :math:`c_g = -\gamma(1-\mu_t)/(1-P_t)` and ``exp_avg_coeff``
    :math:`c_m = -\gamma\mu_{t+1}/(1-P_t\mu_{t+1})`. As in torch, the square root is
    taken after dividing by the bias correction, :math:`\epsilon` is added after it,
    and each term is ``(c * x) / d`` (torch's ``addcdiv``). The first moment is torch's
    ``lerp``: for a weight :math:`w = 1-\beta_1 \ge 0.5` (flag ``lerp_from_end``) it is
    computed as :math:`g - (g - m)(1 - w)` instead (``one_minus_weight``, computed by the
    host as torch does).

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param, grad, exp_avg, exp_avg_sq: arrays of one shape and dtype (the parameter, its gradient and
            its state); ``param`` and the state arrays are updated in place; ``grad`` is only read.
        weight_decay, decay_factor, one_minus_beta1, one_minus_weight, beta2, one_minus_beta2: per-step
            Python floats, the quantities named in the math above.
        bias_correction2, eps, grad_coeff, exp_avg_coeff: more per-step floats; :class:`NAdam` computes
            them all with torch's expressions, so they round as torch's do.
        maximize, decay, lerp_from_end: keyword flags that select the formula; they are fixed when the
            kernel is built (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np, arrayopt
        >>> p = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.NAdam([p], lr=0.1)
        >>> p.grad = np.array([0.5, -0.25])
        >>> opt.step()  # calls the rule with the scalars computed for step 1
        >>> p.data.round(6)
        array([ 0.894355, -1.894355])
    """
    g = -grad if maximize else grad
    if decay == "decoupled":
        param *= decay_factor
    elif decay == "l2":
        g = g + weight_decay * param
    if lerp_from_end:
        exp_avg[...] = g - (g - exp_avg) * one_minus_weight
    else:
        exp_avg += one_minus_beta1 * (g - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += one_minus_beta2 * g * g
    denom = xp.sqrt(exp_avg_sq / bias_correction2) + eps
    param += grad_coeff * g / denom
    param += exp_avg_coeff * exp_avg / denom


@dataclass(frozen=True)
class NAdamHyper(AdamHyper):
    """NAdam's hyper-parameters for one step: Adam's and ``momentum_decay``."""

    momentum_decay: float


class NAdam(ElementwiseOptimizer[NAdamHyper]):
    r"""NAdam (Adam with Nesterov momentum), optionally NAdamW; torch.optim.NAdam.

    The rule is :func:`nadam_update`. The momentum schedule is
    :math:`\mu_t = \beta_1(1 - \tfrac12 0.96^{t\psi})` with momentum decay :math:`\psi`,
    and the state keeps its running product ``mu_product`` :math:`= \prod_{i\le t}\mu_i`.

    As in torch, ``mu_product`` is a 0-d float32 array (torch's default scalar dtype):
    each step multiplies it in place, in float32, and uses the rounded product, for
    float64 parameters too. A ``load_state_dict`` casts it to a real parameter's dtype,
    as torch does, and from then on it is multiplied in that dtype. The optimizer keeps
    a host copy, so a step never reads it back from a device.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
        lr: learning rate :math:`\gamma` (float or 1-element array). Default: 2e-3.
        betas: :math:`(\beta_1, \beta_2)`. Default: (0.9, 0.999).
        eps: :math:`\epsilon` added to the denominator. Default: 1e-8.
        weight_decay: :math:`\lambda`. Default: 0.
        momentum_decay: :math:`\psi`. Default: 4e-3.
        decoupled_weight_decay: shrink :math:`\theta \leftarrow \theta(1-\gamma\lambda)`
            instead of adding :math:`\lambda\theta` to the gradient (NAdamW). Default: False.
        foreach: accepted for torch compatibility and stored in the groups; it changes
            nothing.
        maximize: maximise the objective. Default: False.
        capturable, differentiable: must be False (NotImplementedError otherwise).

    State per parameter: ``step`` (a Python float), ``mu_product`` (a 0-d array),
    ``exp_avg`` and ``exp_avg_sq``.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.NAdam([w], lr=0.1)
        >>> w.grad = 2 * w.data           # gradient of |w|^2
        >>> opt.step()
        >>> np.round(w.data, 4)
        array([ 0.8944, -1.8944])

    Reference:
        Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
    """

    _defaults_on_load: ClassVar[dict[str, Any]] = {
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "decoupled_weight_decay": False,
    }

    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": StateKey("step"),
        "mu_product": StateKey("scalar"),
        "exp_avg": StateKey(),
        "exp_avg_sq": StateKey(),
    }

    def __init__(
        self,
        params: Any,
        lr: Any = 2e-3,
        betas: Any = (0.9, 0.999),
        eps: Any = 1e-8,
        weight_decay: Any = 0,
        momentum_decay: Any = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        v.check_lr(lr)
        v.check_nonnegative(eps, "eps", f"Invalid epsilon value: {eps}")
        v.check_betas(betas)
        v.check_nonnegative(weight_decay, "weight_decay", f"Invalid weight_decay value: {weight_decay}")
        v.check_nonnegative(momentum_decay, "momentum_decay", f"Invalid momentum_decay value: {momentum_decay}")
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
        }
        v.check_flag_conflicts(None, foreach, differentiable, capturable)
        self._scalars = ScalarMirror()
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # a loaded number under mu_product becomes a 0-d array (StateKey("scalar"))
        self._scalars = ScalarMirror()

    def _hyper(self, group: dict[str, Any]) -> NAdamHyper:
        return NAdamHyper.from_group(group, lerp=True, momentum_decay=v.to_float(group["momentum_decay"]))

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        xp = get_backend(p.data).xp
        state = {
            "step": 0.0,
            "mu_product": scalar_array(p.data, 1.0),
            "exp_avg": xp.zeros_like(p.data),
            "exp_avg_sq": xp.zeros_like(p.data),
        }
        self._scalars.write(state, "mu_product", 1.0)
        return state

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        for key in ("step", "mu_product"):  # a loaded state without them: fail now, before any update
            if key not in state:
                raise KeyError(key)
        return (p.data, p.grad, state["exp_avg"], state["exp_avg_sq"])

    def _update(self, backend: Backend, hyper: NAdamHyper, state: Any, operands: tuple[Any, ...]) -> None:
        state["step"] += 1
        t = state["step"]
        lr, beta1, beta2, weight_decay = hyper.lr, hyper.beta1, hyper.beta2, hyper.weight_decay
        psi = hyper.momentum_decay
        # The same Python-float expressions as torch's single-tensor NAdam.
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (t * psi)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * psi)))
        # torch's in-place `mu_product *= mu` first casts mu to the array's dtype.
        stored = state["mu_product"]
        factor = get_backend(stored).round_scalar(mu, stored.dtype)
        mu_product = self._scalars.write(state, "mu_product", self._scalars.read(state, "mu_product") * factor)
        mu_product_next = mu_product * mu_next
        kernel = backend.kernel(nadam_update, **hyper.flags)
        kernel(
            *operands,
            weight_decay,
            float(1 - lr * weight_decay),
            1 - beta1,
            1 - (1 - beta1),
            beta2,
            1 - beta2,
            1 - beta2**t,
            hyper.eps,
            float(-lr * (1.0 - mu) / (1.0 - mu_product)),
            float((-lr * mu_next) / (1.0 - mu_product_next)),
        )

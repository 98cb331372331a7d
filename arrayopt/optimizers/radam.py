"""RAdam: Adam with a rectified adaptive learning rate (Liu et al., 2020)."""

from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend
from arrayopt.optimizer import ElementwiseOptimizer
from arrayopt.optimizers.adam import AdamHyper
from arrayopt.parameter import Parameter

__all__ = ["RAdam", "radam_update"]


def radam_update(
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
    bias_correction1: float,
    lr: float,
    bias_correction2_sqrt: float,
    eps: float,
    rect: float,
    *,
    maximize: bool,
    decay: str,
    lerp_from_end: bool,
    rectified: bool,
) -> None:
    r"""One RAdam step, in place on ``param`` and the moments.

    .. math::

        g &\leftarrow \pm g \\
        \theta &\leftarrow \theta\,(1 - \gamma\lambda) \quad\text{or}\quad
            g \leftarrow g + \lambda\theta
            \qquad \text{(decay = "decoupled" or "l2")} \\
        m &\leftarrow m + (1-\beta_1)(g - m) \\
        v &\leftarrow \beta_2 v + (1-\beta_2)\, g^2 \\
        \hat m &= m / (1-\beta_1^t) \\
        \theta &\leftarrow \begin{cases}
            \theta - \hat m\,\gamma\, \dfrac{\sqrt{1-\beta_2^t}}{\sqrt v + \epsilon}\, r_t
                & \rho_t > 5 \text{ (flag rectified)} \\
            \theta - \hat m\,\gamma & \text{otherwise} \end{cases}

    The host computes :math:`\rho_\infty = 2/(1-\beta_2) - 1`,
    :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)` and the rectification
    ``rect`` :math:`r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}
    {(\rho_\infty-4)(\rho_\infty-2)\rho_t}}` (only defined for :math:`\rho_t > 4`).

    Whether a step is rectified depends on :math:`t` and :math:`\beta_2` only, never on
    the arrays, so it is a flag: the host picks one of two cached kernels each step
    (with the default betas, unrectified for :math:`t \le 5`). Folding the choice into
    the numbers is not possible without changing torch's roundings (no choice of
    scalars makes the rectified expression reduce to :math:`\hat m\gamma` exactly), and
    a ``where`` would compute :math:`\sqrt v` for nothing on the early steps. The
    rectified product is evaluated in torch's order, :math:`((\hat m\gamma)\,a)\,r_t`
    with :math:`a = \frac{1}{\sqrt v+\epsilon}\sqrt{1-\beta_2^t}` (torch divides a
    number by a tensor as a reciprocal, then a product). The first moment is torch's
    ``lerp``, computed as :math:`g - (g-m)(1-w)` for a weight :math:`w = 1-\beta_1 \ge
    0.5` (flag ``lerp_from_end``).

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param, grad, exp_avg, exp_avg_sq: arrays of one shape and dtype (the parameter, its gradient and
            its state); ``param`` and the state arrays are updated in place; ``grad`` is only read.
        weight_decay, decay_factor, one_minus_beta1, one_minus_weight, beta2, one_minus_beta2: per-step
            Python floats, the quantities named in the math above.
        bias_correction1, lr, bias_correction2_sqrt, eps, rect: more per-step floats; :class:`RAdam` computes
            them all with torch's expressions, so they round as torch's do.
        maximize, decay, lerp_from_end, rectified: keyword flags that select the formula; they are fixed
            when the kernel is built (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np, arrayopt
        >>> p = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.RAdam([p], lr=0.1)
        >>> p.grad = np.array([0.5, -0.25])
        >>> opt.step()  # calls the rule with the scalars computed for step 1
        >>> p.data.round(6)
        array([ 0.95 , -1.975])
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
    m_hat = exp_avg / bias_correction1
    if rectified:
        adaptive = 1 / (xp.sqrt(exp_avg_sq) + eps) * bias_correction2_sqrt
        param -= m_hat * lr * adaptive * rect
    else:
        param -= m_hat * lr


class RAdam(ElementwiseOptimizer[AdamHyper]):
    r"""RAdam (rectified Adam), optionally with decoupled weight decay; torch.optim.RAdam.

    The rule is :func:`radam_update`. Until the approximated length of the simple
    moving average :math:`\rho_t` exceeds 5 (step 6 with the default betas), a step is
    plain SGD with bias-corrected momentum; from then on the adaptive step is scaled by
    the rectification term.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
        lr: learning rate :math:`\gamma` (float or 1-element array). Default: 1e-3.
        betas: :math:`(\beta_1, \beta_2)`. Default: (0.9, 0.999).
        eps: :math:`\epsilon` added to the denominator. Default: 1e-8.
        weight_decay: :math:`\lambda`. Default: 0.
        decoupled_weight_decay: shrink :math:`\theta \leftarrow \theta(1-\gamma\lambda)`
            instead of adding :math:`\lambda\theta` to the gradient. Default: False.
        foreach: accepted for torch compatibility and stored in the groups; it changes
            nothing.
        maximize: maximise the objective. Default: False.
        capturable, differentiable: must be False (NotImplementedError otherwise).

    State per parameter: ``step`` (a Python float), ``exp_avg`` and ``exp_avg_sq``.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.RAdam([w], lr=0.1)
        >>> w.grad = 2 * w.data           # gradient of |w|^2
        >>> opt.step()                    # not yet rectified: an SGD step on m / (1 - beta1)
        >>> w.data
        array([ 0.8, -1.6])

    Reference:
        Liu, Jiang, He, Chen, Liu, Gao and Han, "On the Variance of the Adaptive
        Learning Rate and Beyond", ICLR 2020.
    """

    _defaults_on_load: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "decoupled_weight_decay": False,
        "capturable": False,
    }

    _flat_runs = True  # elementwise state and rule: flat Parameters update in one call per run
    _bundled = True  # _update only runs kernels: separate Parameters update in one call
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": StateKey("step"),
        "exp_avg": StateKey(),
        "exp_avg_sq": StateKey(),
    }

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-3,
        betas: Any = (0.9, 0.999),
        eps: Any = 1e-8,
        weight_decay: Any = 0,
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
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "decoupled_weight_decay": decoupled_weight_decay,
            "differentiable": differentiable,
        }
        v.check_flag_conflicts(None, foreach, differentiable, capturable)
        super().__init__(params, defaults)

    def _hyper(self, group: dict[str, Any]) -> AdamHyper:
        return AdamHyper.from_group(group, lerp=True)

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        xp = get_backend(p.data).xp
        return {"step": 0.0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        if "step" not in state:  # a loaded state without it: fail now, before any update
            raise KeyError("step")
        return (p.data, p.grad, state["exp_avg"], state["exp_avg_sq"])

    def _update(self, backend: Backend, hyper: AdamHyper, state: Any, operands: tuple[Any, ...]) -> None:
        state["step"] += 1
        t = state["step"]
        lr, beta1, beta2, weight_decay = hyper.lr, hyper.beta1, hyper.beta2, hyper.weight_decay
        # The same Python-float expressions as torch's single-tensor RAdam.
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * (beta2**t) / bias_correction2
        rectified = rho_t > 5.0
        rect = 1.0
        if rectified:
            rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        kernel = backend.kernel(radam_update, rectified=rectified, **hyper.flags)
        kernel(
            *operands,
            weight_decay,
            float(1 - lr * weight_decay),
            1 - beta1,
            1 - (1 - beta1),
            beta2,
            1 - beta2,
            bias_correction1,
            float(lr),
            bias_correction2**0.5,
            hyper.eps,
            rect,
        )

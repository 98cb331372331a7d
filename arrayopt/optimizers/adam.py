"""Adam (Kingma and Ba, 2015), with AMSGrad (Reddi et al., 2018) and decoupled weight decay."""

from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from arrayopt import _validate as v
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend, is_array
from arrayopt.optimizer import ElementwiseOptimizer, Hyper
from arrayopt.parameter import Parameter

__all__ = ["Adam", "adam_update"]


def adam_update(
    xp: Any,
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    max_exp_avg_sq: Any,
    weight_decay: float,
    decay_factor: float,
    one_minus_beta1: float,
    one_minus_weight: float,
    beta2: float,
    one_minus_beta2: float,
    step_size: float,
    bias_correction2_sqrt: float,
    eps: float,
    *,
    maximize: bool,
    decay: str,
    amsgrad: bool,
    lerp_from_end: bool,
) -> None:
    r"""One Adam step, in place on ``param``, the moments and (AMSGrad) their maximum.

    .. math::

        g &\leftarrow \pm g \\
        \theta &\leftarrow \theta\,(1 - \gamma\lambda) \quad\text{or}\quad
            g \leftarrow g + \lambda\theta
            \qquad \text{(decay = "decoupled" or "l2")} \\
        m &\leftarrow m + (1-\beta_1)(g - m) \\
        v &\leftarrow \beta_2 v + (1-\beta_2)\, g^2 \\
        \hat v &\leftarrow \max(\hat v, v) \quad\text{(amsgrad; else } \hat v = v) \\
        \theta &\leftarrow \theta - \frac{\gamma}{1-\beta_1^t}\,
            \frac{m}{\sqrt{\hat v}/\sqrt{1-\beta_2^t} + \epsilon}

    The host computes ``decay_factor`` :math:`= 1-\gamma\lambda`, ``step_size``
    :math:`= \gamma/(1-\beta_1^t)` and ``bias_correction2_sqrt``
    :math:`= \sqrt{1-\beta_2^t}`. As in torch, :math:`\epsilon` is added after the
    bias-corrected square root, and the first moment is torch's ``lerp`` towards
    :math:`g`: for a weight :math:`w = 1-\beta_1 \ge 0.5` (flag ``lerp_from_end``) it
    is computed as :math:`g - (g - m)(1 - w)` instead (``one_minus_weight``, computed
    by the host as torch does); the two round differently. ``max_exp_avg_sq`` is
    unused (any placeholder) without amsgrad. Updates are written in place
    (``x += ...``, ``x[...] = ...``), in torch's order of roundings.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq: arrays of one shape and dtype (the parameter,
            its gradient and its state); ``param`` and the state arrays are updated in place; ``grad``
            is only read.
        weight_decay, decay_factor, one_minus_beta1, one_minus_weight, beta2, one_minus_beta2: per-step
            Python floats, the quantities named in the math above.
        step_size, bias_correction2_sqrt, eps: more per-step floats; :class:`Adam` computes them all with
            torch's expressions, so they round as torch's do.
        maximize, decay, amsgrad, lerp_from_end: keyword flags that select the formula; they are fixed when
            the kernel is built (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np
        >>> import math
        >>> p, g = np.array([1.0, -2.0]), np.array([0.5, -0.25])
        >>> m, v = np.zeros(2), np.zeros(2)
        >>> lr, beta1, beta2, t = 0.1, 0.9, 0.999, 1
        >>> scalars = (0.0, 1.0, 1 - beta1, beta1, beta2, 1 - beta2, lr / (1 - beta1**t), math.sqrt(1 - beta2**t), 1e-8)
        >>> flags = {"maximize": False, "decay": "none", "amsgrad": False, "lerp_from_end": False}
        >>> adam_update(np, p, g, m, v, None, *scalars, **flags)
        >>> p.round(6)  # the first step moves every entry by about lr, against its gradient
        array([ 0.9, -1.9])
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
    if amsgrad:
        max_exp_avg_sq[...] = xp.maximum(max_exp_avg_sq, exp_avg_sq)
        second = max_exp_avg_sq
    else:
        second = exp_avg_sq
    param -= step_size * (exp_avg / (xp.sqrt(second) / bias_correction2_sqrt + eps))


@dataclass(frozen=True)
class AdamHyper(Hyper):
    """The Adam family's hyper-parameters for one step: ``lr``, the two ``betas``, ``weight_decay``, ``eps``."""

    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    eps: float

    @classmethod
    def from_group(
        cls: type["_Family"], group: dict[str, Any], *, amsgrad: bool = False, lerp: bool = False, **more: Any
    ) -> "_Family":
        """A group's numbers and flags: ``maximize``, ``decay`` (``"none"``, ``"decoupled"`` as AdamW,
        or ``"l2"``), then ``amsgrad`` (Adam's) or ``lerp_from_end`` (NAdam's and RAdam's first moment
        lerps from the far end when ``1 - beta1 >= 0.5``); ``more``: a subclass's fields."""
        beta1, beta2 = (v.to_float(beta) for beta in group["betas"])
        weight_decay = v.to_float(group["weight_decay"])
        if weight_decay == 0:
            decay = "none"
        else:
            decay = "decoupled" if group["decoupled_weight_decay"] else "l2"
        flags: dict[str, Any] = {"maximize": bool(group["maximize"]), "decay": decay}
        if amsgrad:
            flags["amsgrad"] = bool(group["amsgrad"])
        if lerp:
            flags["lerp_from_end"] = abs(1 - beta1) >= 0.5
        eps = v.to_float(group["eps"])
        lr = v.scalar_like(group["lr"])  # a float32 lr: lr-derived numbers are float32, as torch's
        return cls(flags, lr, beta1, beta2, weight_decay, eps, **more)


_Family = TypeVar("_Family", bound=AdamHyper)


class Adam(ElementwiseOptimizer[AdamHyper]):
    r"""Adam, with optional AMSGrad and decoupled weight decay; torch.optim.Adam.

    The rule is :func:`adam_update`.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
        lr: learning rate :math:`\gamma` (float or 1-element array). Default: 1e-3.
        betas: :math:`(\beta_1, \beta_2)`, both floats or both 1-element arrays.
            Default: (0.9, 0.999).
        eps: :math:`\epsilon` added to the denominator. Default: 1e-8.
        weight_decay: :math:`\lambda`. Default: 0.
        amsgrad: use the running maximum of the second moment. Default: False.
        foreach, fused: accepted for torch compatibility and stored in the groups;
            arrayopt has one implementation per backend, so they change nothing.
        maximize: maximise the objective. Default: False.
        capturable, differentiable: must be False (NotImplementedError otherwise).
        decoupled_weight_decay: apply :math:`\theta \leftarrow \theta(1-\gamma\lambda)`
            instead of adding :math:`\lambda\theta` to the gradient (this is AdamW).
            Default: False.

    State per parameter: ``step`` (a Python float), ``exp_avg``, ``exp_avg_sq`` and,
    if amsgrad was on when the state was created, ``max_exp_avg_sq``.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0, -2.0]))
        >>> opt = arrayopt.Adam([w], lr=0.1)
        >>> w.grad = 2 * w.data           # gradient of |w|^2
        >>> opt.step()                    # a first Adam step moves each entry by lr
        >>> np.round(w.data, 6)
        array([ 0.9, -1.9])

    Reference:
        Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
        Reddi, Kale and Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    """

    _flat_runs = True  # elementwise state and rule: flat Parameters update in one call per run
    _bundled = True  # _update only runs kernels: separate Parameters update in one call
    # AdamW inherits this text unchanged, as in torch (the two share Adam's code).
    _sparse_error: ClassVar[str] = "Adam does not support sparse gradients, please consider SparseAdam instead"

    _defaults_on_load: ClassVar[dict[str, Any]] = {
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "decoupled_weight_decay": False,
        "fused": None,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": StateKey("step"),
        "exp_avg": StateKey(),
        "exp_avg_sq": StateKey(),
        "max_exp_avg_sq": StateKey(required=False, required_if="amsgrad"),
    }

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-3,
        betas: Any = (0.9, 0.999),
        eps: Any = 1e-8,
        weight_decay: Any = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        if is_array(lr) and foreach and not capturable:
            raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
        v.check_lr(lr)
        v.check_nonnegative(eps, "eps", f"Invalid epsilon value: {eps}")
        betas = tuple(betas)
        v.check_betas(betas)
        v.check_nonnegative(weight_decay, "weight_decay", f"Invalid weight_decay value: {weight_decay}")
        if not (
            (isinstance(betas[0], float) and isinstance(betas[1], float)) or (is_array(betas[0]) and is_array(betas[1]))
        ):
            raise ValueError("betas must be either both floats or both Tensors")
        for i, beta in enumerate(betas):
            if is_array(beta) and foreach and not capturable:
                raise ValueError(f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True")
        betas = tuple(_squeeze(beta) for beta in betas)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        # Before the params are looked at, so a refused flag leaves the caller's
        # param-group dicts untouched (torch checks these after).
        v.check_flag_conflicts(fused, foreach, differentiable, capturable)
        super().__init__(params, defaults)

    def _hyper(self, group: dict[str, Any]) -> AdamHyper:
        v.check_fused(group)
        return AdamHyper.from_group(group, amsgrad=True, lerp=True)

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        xp = get_backend(p.data).xp
        state = {"step": 0.0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        return state

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        if "step" not in state:  # a loaded state without it: fail now, before any update
            raise KeyError("step")
        maximum = state["max_exp_avg_sq"] if group["amsgrad"] else 0.0
        return (p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], maximum)

    def _update(self, backend: Backend, hyper: AdamHyper, state: Any, operands: tuple[Any, ...]) -> None:
        state["step"] += 1
        t = state["step"]
        lr, beta1, beta2, weight_decay = hyper.lr, hyper.beta1, hyper.beta2, hyper.weight_decay
        kernel = backend.kernel(adam_update, **hyper.flags)
        # The same Python-float expressions as torch's single-tensor Adam, so every
        # scalar is rounded identically.
        kernel(
            *operands,
            weight_decay,
            float(1 - lr * weight_decay),
            1 - beta1,
            1 - (1 - beta1),
            beta2,
            1 - beta2,
            float(lr / (1 - beta1**t)),
            (1 - beta2**t) ** 0.5,
            hyper.eps,
        )


def _squeeze(value: Any) -> Any:
    """torch's ``_to_scalar``: a 1-element array becomes 0-d; numbers pass through."""
    return get_backend(value).xp.reshape(value, ()) if is_array(value) else value

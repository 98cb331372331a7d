"""SparseAdam: Adam restricted to the entries a sparse gradient touches."""

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from arrayopt import _validate as v
from arrayopt._state_check import StateKey
from arrayopt.backends import Backend, get_backend
from arrayopt.optimizer import ElementwiseOptimizer, Hyper
from arrayopt.parameter import Parameter
from arrayopt.sparse import update_entries

__all__ = ["SparseAdam", "sparse_adam_update"]


def sparse_adam_update(
    xp: Any,
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    one_minus_beta1: float,
    one_minus_beta2: float,
    step_size: float,
    eps: float,
    *,
    maximize: bool,
) -> None:
    r"""One SparseAdam step on the touched entries, in place on ``param`` and the moments.

    .. math::

        g &\leftarrow \pm g \\
        m &\leftarrow m + (g - m)(1-\beta_1) \\
        v &\leftarrow v + (g^2 - v)(1-\beta_2) \\
        \theta &\leftarrow \theta - \alpha_t\, \frac{m}{\sqrt{v} + \epsilon},
        \qquad \alpha_t = \gamma\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}

    The host computes ``step_size`` :math:`\alpha_t` with the parameter's step count
    :math:`t`, even for entries touched for the first time. Unlike Adam, :math:`\epsilon`
    is added to the square root of the *uncorrected* second moment (torch's SparseAdam).
    The optimizer calls this rule on the gathered entries only
    (:func:`arrayopt.sparse.update_entries`): untouched entries keep their moments.

    Args:
        xp: the array namespace of the arrays (``backend.xp``).
        param, grad, exp_avg, exp_avg_sq: arrays of one shape and dtype (the parameter, its gradient and
            its state); updated in place (the rows a sparse gradient names, gathered).
        one_minus_beta1, one_minus_beta2, step_size, eps: per-step Python floats, the quantities named
            in the math above, computed by :class:`SparseAdam` with torch's expressions so they round as
            torch's do.
        maximize: keyword flags that select the formula; they are fixed when the kernel is built
            (``backend.kernel(rule, **flags)``).

    Example:
        >>> import numpy as np
        >>> p, g, m, v = np.array([1.0, -2.0]), np.array([0.5, -0.25]), np.zeros(2), np.zeros(2)
        >>> import math
        >>> lr, beta1, beta2, t = 0.1, 0.9, 0.999, 1
        >>> step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        >>> sparse_adam_update(np, p, g, m, v, 1 - beta1, 1 - beta2, step_size, 1e-8, maximize=False)
        >>> p.round(6)  # the first step moves every touched entry by about lr
        array([ 0.9, -1.9])
    """
    g = -grad if maximize else grad
    exp_avg += (g - exp_avg) * one_minus_beta1
    exp_avg_sq += (g * g - exp_avg_sq) * one_minus_beta2
    param -= step_size * (exp_avg / (xp.sqrt(exp_avg_sq) + eps))


@dataclass(frozen=True)
class SparseAdamHyper(Hyper):
    """SparseAdam's hyper-parameters for one step."""

    lr: float
    beta1: float
    beta2: float
    eps: float


class SparseAdam(ElementwiseOptimizer[SparseAdamHyper]):
    r"""Adam for sparse gradients; torch.optim.SparseAdam.

    The rule is :func:`sparse_adam_update`, applied only where the (coalesced) sparse
    gradient has entries: the moments and the parameter elsewhere do not change. Every
    gradient must be a :class:`~arrayopt.SparseGrad` (or a SciPy / CuPy sparse matrix
    assigned to ``grad``); a dense one raises torch's RuntimeError.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts; real
            floating-point only (a complex parameter raises ValueError).
        lr: learning rate :math:`\gamma` (float or 1-element array), > 0. Default: 1e-3.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1). Default: (0.9, 0.999).
        eps: :math:`\epsilon` added to the denominator, > 0. Default: 1e-8.
        maximize: maximise the objective. Default: False.

    State per parameter: ``step`` (a Python int, as in torch: it counts the steps in
    which the parameter had a gradient, even one with no entries), ``exp_avg`` and
    ``exp_avg_sq`` (dense, the parameter's shape).

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.zeros((4, 2)))
        >>> opt = arrayopt.SparseAdam([w], lr=0.1)
        >>> w.grad = arrayopt.SparseGrad(np.array([[1, 3]]), np.ones((2, 2)), (4, 2))
        >>> opt.step()                    # rows 1 and 3 move by lr; rows 0 and 2 stay
        >>> np.round(w.data, 6)
        array([[ 0. ,  0. ],
               [-0.1, -0.1],
               [ 0. ,  0. ],
               [-0.1, -0.1]])

    Reference:
        Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    _float_steps = False  # SparseAdam's step is a Python int, as in torch
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
        maximize: bool = False,
    ) -> None:
        v.require(0.0 < v.number(lr, "lr") < math.inf, f"Invalid learning rate: {lr}")
        v.require(0.0 < v.number(eps, "eps") < math.inf, f"Invalid epsilon value: {eps}")
        v.check_betas(betas)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "maximize": maximize}
        super().__init__(params, defaults)

    def _check_param_groups(self, param_groups: list[dict[str, Any]]) -> None:
        # torch checks after its base constructor; here before the caller's dicts change.
        complex_params = [
            [i, j]
            for i, group in enumerate(param_groups)
            for j, p in enumerate(group["params"])
            if get_backend(p.data).is_complex(p.data)
        ]
        if complex_params:
            raise ValueError(
                f"Complex params at indices {complex_params}: SparseAdam does not support complex parameters"
            )

    def _hyper(self, group: dict[str, Any]) -> SparseAdamHyper:
        beta1, beta2 = (v.to_float(beta) for beta in group["betas"])
        return SparseAdamHyper(
            flags={"maximize": bool(group.get("maximize", False))},
            lr=v.scalar_like(group["lr"]),  # a float32 lr: the step size is a float32 number, as torch's
            beta1=beta1,
            beta2=beta2,
            eps=v.to_float(group["eps"]),
        )

    def _init_state(self, p: Parameter, group: dict[str, Any]) -> dict[str, Any]:
        xp = get_backend(p.data).xp
        return {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}

    def _operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        raise RuntimeError("SparseAdam does not support dense gradients, please consider Adam instead")

    def _sparse_operands(self, p: Parameter, group: dict[str, Any], state: Any) -> tuple[Any, ...]:
        if "step" not in state:  # a loaded state without it: fail now, before any update
            raise KeyError("step")
        return (p.data, p.grad.coalesce(), state["exp_avg"], state["exp_avg_sq"])

    def _sparse_update(self, backend: Backend, hyper: SparseAdamHyper, state: Any, operands: tuple[Any, ...]) -> None:
        state["step"] += 1
        if operands[1].nnz == 0:
            return
        t = state["step"]
        beta1, beta2 = hyper.beta1, hyper.beta2
        # torch's Python-float expressions, so the scalars round identically
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        step_size = float(hyper.lr * math.sqrt(bias_correction2) / bias_correction1)
        kernel = backend.kernel(sparse_adam_update, **hyper.flags)
        update_entries(backend, kernel, operands, 1 - beta1, 1 - beta2, step_size, hyper.eps)

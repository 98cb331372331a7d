"""AdamW: Adam with decoupled weight decay (Loshchilov and Hutter, 2019)."""

from typing import Any

from arrayopt.optimizers.adam import Adam

__all__ = ["AdamW"]


class AdamW(Adam):
    r"""Adam with decoupled weight decay; torch.optim.AdamW.

    Exactly :class:`~arrayopt.Adam` with ``decoupled_weight_decay=True`` (the rule is
    :func:`~arrayopt.optimizers.adam.adam_update`): each step first shrinks the
    parameter, :math:`\theta \leftarrow \theta(1-\gamma\lambda)`, then takes the Adam
    step. Unlike Adam, the default ``weight_decay`` is 1e-2, the constructor has no
    ``decoupled_weight_decay`` argument, and loading a state dict always sets
    ``decoupled_weight_decay`` back to True (as torch).

    Args:
        params: Parameters, ``(name, Parameter)`` pairs, or param-group dicts.
        lr: learning rate. Default: 1e-3.
        betas: :math:`(\beta_1, \beta_2)`. Default: (0.9, 0.999).
        eps: denominator term. Default: 1e-8.
        weight_decay: decoupled decay :math:`\lambda`. Default: 1e-2.
        amsgrad: use the running maximum of the second moment. Default: False.
        maximize, foreach, capturable, differentiable, fused: as for Adam.

    Example:
        >>> import numpy as np
        >>> import arrayopt
        >>> w = arrayopt.Parameter(np.array([1.0]))
        >>> opt = arrayopt.AdamW([w], lr=0.1, weight_decay=0.5)
        >>> w.grad = np.zeros(1)          # no gradient signal: only the decay acts
        >>> opt.step()
        >>> w.data
        array([0.95])

    Reference:
        Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    def __init__(
        self,
        params: Any,
        lr: Any = 1e-3,
        betas: Any = (0.9, 0.999),
        eps: Any = 1e-8,
        weight_decay: Any = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True

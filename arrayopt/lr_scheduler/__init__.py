"""Learning-rate schedulers with torch.optim.lr_scheduler's API (torch 2.14).

``from arrayopt.lr_scheduler import StepLR`` works as ``from torch.optim.lr_scheduler
import StepLR`` does: same classes, arguments, defaults, state_dict contents, errors,
warnings and numbers (the same Python-float expressions, in the same order).

=====================  ==================================  =======================
scheduler              module                              closed form (step(epoch))
=====================  ==================================  =======================
LambdaLR               ``lambda_lr``                       its own formula
MultiplicativeLR       ``lambda_lr``                       --
StepLR                 ``decay``                           yes
MultiStepLR            ``decay``                           yes
ConstantLR             ``decay``                           yes
LinearLR               ``decay``                           yes
ExponentialLR          ``decay``                           yes
PolynomialLR           ``decay``                           yes
CosineAnnealingLR      ``cosine``                          yes
CosineAnnealingWarm…   ``cosine``                          own step(epoch)
CyclicLR, OneCycleLR   ``cyclic``                          formula in last_epoch
SequentialLR,          ``composite``                       no epoch argument
ChainedScheduler
ReduceLROnPlateau      ``plateau``                         metric-driven
=====================  ==================================  =======================

``arrayopt.swa_utils.SWALR`` is a scheduler too.

The training loop steps the optimizer first and the scheduler after it (once per epoch,
or per batch for schedules such as OneCycleLR); the other order skips the first value
of the schedule, and the scheduler warns:

>>> import numpy as np
>>> import arrayopt
>>> w = arrayopt.Parameter(np.zeros(2))
>>> opt = arrayopt.SGD([w], lr=0.1)
>>> scheduler = arrayopt.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
>>> for epoch in range(4):
...     w.grad = np.ones(2)
...     opt.step()          # first the optimizer
...     scheduler.step()    # then the scheduler
>>> scheduler.get_last_lr()
[0.025]
"""

from arrayopt.lr_scheduler.base import EPOCH_DEPRECATION_WARNING as EPOCH_DEPRECATION_WARNING
from arrayopt.lr_scheduler.base import LRScheduler
from arrayopt.lr_scheduler.base import _LRScheduler as _LRScheduler
from arrayopt.lr_scheduler.composite import ChainedScheduler, SequentialLR
from arrayopt.lr_scheduler.cosine import CosineAnnealingLR, CosineAnnealingWarmRestarts
from arrayopt.lr_scheduler.cyclic import CyclicLR, OneCycleLR
from arrayopt.lr_scheduler.decay import ConstantLR, ExponentialLR, LinearLR, MultiStepLR, PolynomialLR, StepLR
from arrayopt.lr_scheduler.lambda_lr import LambdaLR, MultiplicativeLR
from arrayopt.lr_scheduler.plateau import ReduceLROnPlateau

# torch's __all__ (EPOCH_DEPRECATION_WARNING and _LRScheduler are importable, not exported).
__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]

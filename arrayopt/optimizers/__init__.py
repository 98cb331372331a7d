"""The optimizers, one per module; each module starts with its update rule."""

from arrayopt.optimizers.adam import Adam
from arrayopt.optimizers.adamw import AdamW
from arrayopt.optimizers.lbfgs import LBFGS
from arrayopt.optimizers.sgd import SGD

__all__ = ["LBFGS", "SGD", "Adam", "AdamW"]

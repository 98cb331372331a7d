"""The optimizers, one per module; each module starts with its update rule."""

from arrayopt.optimizers.adafactor import Adafactor
from arrayopt.optimizers.adam import Adam
from arrayopt.optimizers.adamw import AdamW
from arrayopt.optimizers.asgd import ASGD
from arrayopt.optimizers.nadam import NAdam
from arrayopt.optimizers.radam import RAdam
from arrayopt.optimizers.sgd import SGD

__all__ = ["ASGD", "SGD", "Adafactor", "Adam", "AdamW", "NAdam", "RAdam"]

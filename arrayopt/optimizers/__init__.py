"""The optimizers, one per module; each module starts with its update rule."""

from arrayopt.optimizers.adadelta import Adadelta
from arrayopt.optimizers.adam import Adam
from arrayopt.optimizers.adamax import Adamax
from arrayopt.optimizers.adamw import AdamW
from arrayopt.optimizers.muon import Muon
from arrayopt.optimizers.rmsprop import RMSprop
from arrayopt.optimizers.rprop import Rprop
from arrayopt.optimizers.sgd import SGD

__all__ = ["SGD", "Adadelta", "Adam", "AdamW", "Adamax", "Muon", "RMSprop", "Rprop"]

"""The optimizers, one per module; each module starts with its update rule."""

from arrayopt.optimizers.adadelta import Adadelta
from arrayopt.optimizers.adafactor import Adafactor
from arrayopt.optimizers.adagrad import Adagrad
from arrayopt.optimizers.adam import Adam
from arrayopt.optimizers.adamax import Adamax
from arrayopt.optimizers.adamw import AdamW
from arrayopt.optimizers.asgd import ASGD
from arrayopt.optimizers.lbfgs import LBFGS
from arrayopt.optimizers.muon import Muon
from arrayopt.optimizers.nadam import NAdam
from arrayopt.optimizers.radam import RAdam
from arrayopt.optimizers.rmsprop import RMSprop
from arrayopt.optimizers.rprop import Rprop
from arrayopt.optimizers.sgd import SGD
from arrayopt.optimizers.sparse_adam import SparseAdam

__all__ = [
    "ASGD",
    "LBFGS",
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Muon",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Rprop",
    "SparseAdam",
]

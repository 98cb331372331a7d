"""The optimizers, one per module; each module starts with its update rule."""

from arrayopt.optimizers.adagrad import Adagrad
from arrayopt.optimizers.adam import Adam
from arrayopt.optimizers.adamw import AdamW
from arrayopt.optimizers.sgd import SGD
from arrayopt.optimizers.sparse_adam import SparseAdam

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "SparseAdam"]

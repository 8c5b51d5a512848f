"""Models: the RBM and the DBN built from it."""

from .dbn import DBN
from .rbm import RBM

__all__ = ["RBM", "DBN"]

"""Models: the RBM, the DBN built from it, and the reference CNN for MNIST."""

from .cnn import ReferenceCNN, reference_cnn
from .dbn import DBN
from .rbm import RBM

__all__ = ["RBM", "DBN", "ReferenceCNN", "reference_cnn"]

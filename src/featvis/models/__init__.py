"""Models: the RBM, the DBN built from it, the convolutional RBM and DBN with probabilistic
max-pooling, and the reference CNN and ViT for MNIST."""

from .conv.cdbn import ConvDBN
from .conv.crbm import ConvRBM
from .cnn import ReferenceCNN, reference_cnn
from .dbn import DBN
from .rbm import RBM
from .vit import ReferenceViT, reference_vit

__all__ = ["RBM", "DBN", "ConvRBM", "ConvDBN", "ReferenceCNN", "reference_cnn",
           "ReferenceViT", "reference_vit"]

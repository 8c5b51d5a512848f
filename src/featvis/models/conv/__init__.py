"""Convolutional RBMs with probabilistic max-pooling and the convolutional DBN stacked from
them (Lee, Grosse, Ranganath & Ng, ICML 2009): the pooling arithmetic, one layer, the stack."""

from .cdbn import ConvDBN
from .crbm import CONV_RECIPE, CONV_RECIPE_GAUSSIAN, ConvRBM, conv_recipe
from .pooling import block_softmax, log_block_softmax, sample_blocks

__all__ = ["ConvRBM", "ConvDBN", "block_softmax", "log_block_softmax", "sample_blocks",
           "conv_recipe", "CONV_RECIPE", "CONV_RECIPE_GAUSSIAN"]

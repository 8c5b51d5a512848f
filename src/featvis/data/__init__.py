"""Data: IDX files and the MNIST splits, checks and batches of input tensors, image folders
and ``.npy`` arrays under pixel and memory budgets (held in memory or read on demand as
datasets, streamed in batches), per-channel normalization, and natural
image patches with their whitening."""

from .idx import MAX_GZIP_RATIO, MAX_IDX_BYTES, read_idx
from .images import (IMAGE_SUFFIXES, MAX_PIXELS, ImageFolder, ImageSource, NpyImages,
                     check_pixels, load_images, open_dataset, open_images)
from .mnist import load_mnist, mnist_info
from .normalization import Normalization, parse_normalize
from .stream import Loading
from .tensors import check_images, check_inputs, iter_batches, picture_shape

__all__ = ["read_idx", "load_mnist", "mnist_info", "check_images", "check_inputs",
           "picture_shape", "iter_batches", "load_images", "open_images", "ImageSource",
           "check_pixels", "parse_normalize", "Normalization", "MAX_IDX_BYTES", "MAX_GZIP_RATIO",
           "MAX_PIXELS", "IMAGE_SUFFIXES", "ImageFolder", "NpyImages", "Loading",
           "open_dataset"]

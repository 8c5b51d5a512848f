"""featvis: see what every unit of a deep network has learned."""

import os as _os

# OpenMP threads that spin while waiting make torch an order of magnitude slower whenever
# another process shares the cores; passive waiting costs little when they are idle. Only
# effective if torch is not imported yet, and never overrides the user's own setting.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__

from .data import load_mnist, read_idx
from .errors import CheckpointError, DataError, FeatvisError
from .methods import (Maximization, RankedFilters, TopExamples, UnitSamples,
                      linear_combination, maximize, ranked_filters, sample_unit, top_examples)
from .models import DBN, RBM
from .train import TrainingRecipe

__all__ = [
    "__version__",
    "read_idx", "load_mnist",
    "FeatvisError", "DataError", "CheckpointError",
    "RBM", "DBN", "TrainingRecipe",
    "top_examples", "TopExamples", "maximize", "Maximization", "sample_unit", "UnitSamples",
    "ranked_filters", "RankedFilters", "linear_combination",
]

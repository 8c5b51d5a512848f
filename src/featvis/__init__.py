"""featvis: see what every unit of a deep network has learned."""

__version__ = "0.1.0"

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

"""featvis: see what every unit of a deep network has learned.

The public names are imported on first use (PEP 562), so ``import featvis`` is cheap, loads
no torch and changes nothing in the environment; the ``featvis`` command sets up torch's
threads itself before loading it (see :mod:`featvis.cli`).
"""

from importlib import import_module

from ._version import __version__

_PUBLIC = {
    "read_idx": "data", "load_mnist": "data", "load_images": "data",
    "Normalization": "data", "ImageFolder": "data", "NpyImages": "data", "Loading": "data",
    "natural_patches": "data.natural", "Patches": "data.natural",
    "ZCA": "data.whitening", "Whitening": "data.whitening",
    "FeatvisError": "errors", "DataError": "errors", "CheckpointError": "errors",
    "RBM": "models", "DBN": "models", "ConvRBM": "models", "ConvDBN": "models",
    "reference_cnn": "models", "reference_vit": "models", "TrainingRecipe": "models.training",
    "load": "models.checkpoint",
    "probe": "seam", "layers": "seam", "LayerInfo": "seam", "directed": "seam",
    "UnsupportedError": "seam", "LayerError": "seam",
    "top_examples": "methods", "TopExamples": "methods", "maximize": "methods",
    "Maximization": "methods", "sample_unit": "methods", "UnitSamples": "methods",
    "ranked_filters": "methods", "RankedFilters": "methods",
    "linear_combination": "methods", "Combination": "methods",
    "deconvnet": "methods", "Projections": "methods", "fit_color_decorrelation": "methods",
    "TopK": "methods.topk", "unit_statistics": "methods", "UnitStatistics": "methods",
    "locality": "figures", "random_locality": "figures", "gabor_fit": "figures",
    "GaborFit": "figures",
    "visualize": "pipeline.visualization",
    "VisualizeSettings": "pipeline.visualization",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'featvis' has no attribute {name!r}")
    value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

"""The seam between models and methods: the :class:`Probe` of a model, what a method may ask
of it, and :func:`probe`, the one place that dispatches on the model's kind (its probes: a
featvis DBN, a ConvDBN, any ``nn.Module``)."""

from .base import SPATIAL, Key, LayerError, LayerInfo, Probe, Scores, UnsupportedError
from .directions import DirectedProbe, directed
from .dispatch import layers, probe
from .module import affine

__all__ = ["Key", "LayerInfo", "Scores", "LayerError", "UnsupportedError", "Probe", "probe",
           "layers", "affine", "SPATIAL", "DirectedProbe", "directed"]

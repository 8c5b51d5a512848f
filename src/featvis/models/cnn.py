"""A reference CNN for MNIST, shipped trained, to show CNNs as Zeiler & Fergus and lucent do.

Two conv-ReLU-max-pool blocks and two linear layers (the LeNet shape), under fixed module
names so that its layer keys never change::

    features.0    Conv2d(1, 16, 5, padding=2)    16 x 28 x 28
    features.1    ReLU
    features.2    MaxPool2d(2)                   16 x 14 x 14
    features.3    Conv2d(16, 32, 5, padding=2)   32 x 14 x 14
    features.4    ReLU
    features.5    MaxPool2d(2)                   32 x 7 x 7
    classifier.0  Flatten                        1568
    classifier.1  Linear(1568, 64)               64
    classifier.2  ReLU
    classifier.3  Linear(64, 10)                 10 logits

Inputs are ``(N, 1, 28, 28)`` MNIST pixels in ``[0, 1]`` (``load_mnist`` images reshaped),
with no further normalisation. The hidden layer has 64 units so that the float32 weights
(114,314 parameters) fit in a file of about 450 kB. :func:`reference_cnn` gives the model with
the weights shipped in the package (``scripts/train_reference.py cnn`` reproduces them).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import is_int
from ..params import check_int
from .classifier import Classifier, shipped

__all__ = ["ReferenceCNN", "reference_cnn", "WEIGHTS"]

WEIGHTS = "reference_cnn.safetensors"   # in featvis/_weights/
MAX_WIDTH = 4096                        # channels or units a config may ask for


class ReferenceCNN(Classifier):
    """The reference CNN (see the module docstring for its layers); ``config`` is
    ``{"channels": [c1, c2], "hidden": h, "classes": k}`` (default 16, 32, 64, 10).
    Training, accuracy and checkpoints: :class:`~featvis.models.classifier.Classifier`."""

    kind = "cnn"
    input_shape = (1, 28, 28)

    def __init__(self, channels: Sequence[int] = (16, 32), hidden: int = 64,
                 classes: int = 10, *, seed: int | None = 0) -> None:
        super().__init__()
        values = list(channels) if isinstance(channels, (list, tuple)) else []
        if len(values) != 2 or not all(is_int(c) and 1 <= c <= MAX_WIDTH for c in values):
            raise ValueError(f"channels must be two integers in 1..{MAX_WIDTH}, "
                             f"got {channels!r}")
        hidden, classes = check_int("hidden", hidden), check_int("classes", classes)
        if max(hidden, classes) > MAX_WIDTH:
            raise ValueError(f"hidden and classes must be at most {MAX_WIDTH}, "
                             f"got {hidden} and {classes}")
        c1, c2 = (int(c) for c in values)
        self.config = {"channels": [c1, c2], "hidden": hidden, "classes": classes}
        # The layers initialise themselves from the global generator: with a seed, that
        # draw is undone here and replaced by reset_parameters(seed).
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            self.features = nn.Sequential(
                nn.Conv2d(1, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(),
                nn.Linear(hidden, classes))
        if seed is not None:
            self.reset_parameters(seed)

    @classmethod
    def config_keys(cls) -> tuple[str, ...]:
        return ("channels", "hidden", "classes")

    def extra_repr(self) -> str:
        c1, c2 = self.config["channels"]
        return f"channels={c1}-{c2}, hidden={self.config['hidden']}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, classes)`` of images ``(N, 1, 28, 28)``."""
        return self.classifier(self.features(x))


def reference_cnn(pretrained: bool = True, *, seed: int = 0,
                  device: str | torch.device = "cpu") -> ReferenceCNN:
    """The reference CNN: with the weights shipped in the package, in eval mode
    (``pretrained=True``), or freshly initialised from ``seed``, in train mode."""
    return shipped(ReferenceCNN, WEIGHTS, "scripts/train_reference.py cnn", pretrained, seed,
                   device)

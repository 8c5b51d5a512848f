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
the weights shipped in the package (``scripts/train_reference_cnn.py`` reproduces them).
"""

from __future__ import annotations

import math
import os
from importlib import resources
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.tensors import check_inputs
from ..devices import check_device
from ..errors import CheckpointError, DataError, is_int
from ..params import check_float, check_int
from .training import batch_order
from .codec import read_model, save_model

__all__ = ["ReferenceCNN", "reference_cnn", "WEIGHTS"]

WEIGHTS = "reference_cnn.safetensors"   # in featvis/_weights/
MAX_WIDTH = 4096                        # channels or units a config may ask for


class ReferenceCNN(nn.Module):
    """The reference CNN (see the module docstring for its layers).

    Attributes:
        config: ``{"channels": [c1, c2], "hidden": h, "classes": k}``, all a checkpoint
            needs to rebuild the model (default 16, 32, 64, 10).
        data_info: description of the training data, saved with the model.
        recipe: how it was trained (optimizer, epochs, ...), saved with the model.
        test_accuracy: per test set ``{"correct", "total", "accuracy"}``, saved with it.
    """

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
        self.data_info: dict = {}
        self.recipe: dict = {}
        self.test_accuracy: dict = {}
        if seed is not None:
            self.reset_parameters(seed)

    @classmethod
    def from_config(cls, config: dict, *, seed: int | None = None) -> "ReferenceCNN":
        """The model a checkpoint's ``config`` describes; ``ValueError`` if it is not one."""
        if not isinstance(config, dict) or set(config) != {"channels", "hidden", "classes"}:
            raise ValueError("config must hold exactly channels, hidden and classes, got "
                             f"{sorted(config) if isinstance(config, dict) else config!r}")
        return cls(config["channels"], config["hidden"], config["classes"], seed=seed)

    def reset_parameters(self, seed: int | None = 0) -> None:
        """PyTorch's default initialisation (uniform in ``±1/sqrt(fan_in)``), drawn from
        ``seed`` without touching the global generator (``None``: from the global one)."""
        layers = [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        if seed is None:
            for layer in layers:
                layer.reset_parameters()
            return
        generator = torch.Generator().manual_seed(check_int("seed", seed, minimum=None))
        with torch.no_grad():
            for layer in layers:
                bound = 1.0 / math.sqrt(layer.weight[0].numel())
                for p in (layer.weight, layer.bias):
                    p.copy_(torch.empty(p.shape, device="cpu").uniform_(-bound, bound,
                                                                    generator=generator))

    def extra_repr(self) -> str:
        c1, c2 = self.config["channels"]
        return f"channels={c1}-{c2}, hidden={self.config['hidden']}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, classes)`` of images ``(N, 1, 28, 28)``."""
        return self.classifier(self.features(x))

    def fit(self, images: torch.Tensor, labels: torch.Tensor, epochs: int = 4,
            batch_size: int = 128, lr: float = 3e-3, *, decay: float = 0.5, seed: int = 0,
            progress: bool = True) -> "ReferenceCNN":
        """Supervised training with Adam on cross-entropy, the learning rate times ``decay``
        after every epoch; epoch ``e`` visits the rows in ``batch_order(n, seed + e)``, so
        the result depends on the seed alone (and the thread count). Records the recipe;
        returns ``self``. ``images`` are ``(N, 1, 28, 28)`` or flat ``(N, 784)`` in [0, 1].
        """
        epochs, batch_size = check_int("epochs", epochs), check_int("batch_size", batch_size)
        lr = check_float("lr", lr)
        decay = check_float("decay", decay, 0.0, 1.0 + 1e-12)
        seed = check_int("seed", seed, minimum=None)
        x, y = self._checked(images, labels)
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.train()
        for epoch in range(epochs):
            for group in optimizer.param_groups:
                group["lr"] = lr * decay ** epoch
            order = batch_order(len(x), seed + epoch, x.device)
            bar = tqdm(range(0, len(x), batch_size), desc=f"epoch {epoch + 1}/{epochs}",
                       unit="batch", disable=not progress, leave=False)
            for start in bar:
                rows = order[start:start + batch_size]
                loss = F.cross_entropy(self(x[rows]), y[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        self.eval()
        self.recipe = {"optimizer": "Adam", "lr": lr, "lr_decay": decay, "epochs": epochs,
                       "batch_size": batch_size, "seed": seed,
                       "batch_order": "featvis.models.training.batch_order(n, seed + epoch)",
                       "threads": torch.get_num_threads(), "torch": torch.__version__}
        return self

    @torch.no_grad()
    def score(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
              ) -> dict:
        """``{"correct", "total", "accuracy"}`` of the model in eval mode (restored after)."""
        x, y = self._checked(images, labels)
        training = self.training
        self.eval()
        correct = sum(int((self(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                      for i in range(0, len(x), batch_size))
        self.train(training)
        return {"correct": correct, "total": len(x), "accuracy": round(correct / len(x), 4)}

    def _checked(self, images: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as ``(N, 1, 28, 28)`` on the model's device, labels ``(N,)`` int64."""
        images = check_inputs(images)
        if images[0].numel() != math.prod(self.input_shape):
            raise DataError(f"images: one input has shape {tuple(images.shape[1:])}, the "
                            f"CNN takes {self.input_shape}")
        if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),) or \
                labels.is_floating_point():
            raise DataError(f"labels: expected {len(images)} integer labels")
        device = next(self.parameters()).device
        return (images.reshape(-1, *self.input_shape).to(device),
                labels.to(device, torch.long))

    def save(self, path: str | os.PathLike) -> None:
        """Write a ``featvis.model/1`` checkpoint atomically 
        (see :mod:`featvis.models.checkpoint`)."""
        save_model(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike,
             device: str | torch.device = "cpu") -> "ReferenceCNN":
        """Read a checkpoint written by :meth:`save`, in eval mode (never unpickles);
        :class:`~featvis.CheckpointError` if the file is not one."""
        return read_model(cls, path, device)


def reference_cnn(pretrained: bool = True, *, seed: int = 0,
                  device: str | torch.device = "cpu") -> ReferenceCNN:
    """The reference CNN: with the weights shipped in the package, in eval mode
    (``pretrained=True``), or freshly initialised from ``seed``, in train mode."""
    if not pretrained:
        return ReferenceCNN(seed=seed).to(check_device(device))
    shipped = resources.files("featvis") / "_weights" / WEIGHTS
    if not shipped.is_file():
        raise CheckpointError(f"featvis/_weights/{WEIGHTS} is missing from this installation "
                              "(reinstall featvis, or run scripts/train_reference_cnn.py)")
    with resources.as_file(shipped) as path:
        return ReferenceCNN.load(path, device)

"""What the reference classifiers share (the CNN and the ViT for MNIST): supervised training
with Adam, accuracy, a ``featvis.model/1`` checkpoint, weights drawn from a seed, and the
copy shipped inside the package."""

from __future__ import annotations

import math
import os
from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.tensors import check_inputs
from ..devices import check_device
from ..errors import CheckpointError, DataError
from ..params import check_float, check_int
from .codec import read_model, save_model
from .training import batch_order

__all__ = ["Classifier", "shipped"]


class Classifier(nn.Module):
    """A reference classifier of ``input_shape`` pictures: a subclass builds its layers from
    its ``config`` (all a checkpoint needs to rebuild it) and names its ``kind``.

    Attributes:
        config: the subclass's constructor arguments, as JSON.
        data_info: description of the training data, saved with the model.
        recipe: how it was trained (optimizer, epochs, ...), saved with the model.
        test_accuracy: per test set ``{"correct", "total", "accuracy"}``, saved with it.
    """

    kind: str
    input_shape: tuple[int, ...]

    def __init__(self) -> None:
        super().__init__()
        self.config: dict = {}
        self.data_info: dict = {}
        self.recipe: dict = {}
        self.test_accuracy: dict = {}

    @classmethod
    def from_config(cls, config: dict, *, seed: int | None = None) -> "Classifier":
        """The model a checkpoint's ``config`` describes; ``ValueError`` if it is not one."""
        keys = cls.config_keys()
        if not isinstance(config, dict) or set(config) != set(keys):
            raise ValueError(f"config must hold exactly {', '.join(keys)}, got "
                             f"{sorted(config) if isinstance(config, dict) else config!r}")
        return cls(**config, seed=seed)

    @classmethod
    def config_keys(cls) -> tuple[str, ...]:
        raise NotImplementedError

    def reset_parameters(self, seed: int | None = 0) -> None:
        """PyTorch's default initialisation of every Linear and Conv (uniform in
        ``±1/sqrt(fan_in)``), drawn from ``seed`` without touching the global generator
        (``None``: from the global one), then :meth:`_reset_others` with the same generator."""
        layers = [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        if seed is None:
            for layer in layers:
                layer.reset_parameters()
            self._reset_others(None)
            return
        generator = torch.Generator().manual_seed(check_int("seed", seed, minimum=None))
        with torch.no_grad():
            for layer in layers:
                bound = 1.0 / math.sqrt(layer.weight[0].numel())
                for p in (layer.weight, layer.bias):
                    p.copy_(torch.empty(p.shape, device="cpu").uniform_(-bound, bound,
                                                                    generator=generator))
            self._reset_others(generator)

    def _reset_others(self, generator: torch.Generator | None) -> None:
        """Draw the parameters that are not a Linear's or Conv's (none by default)."""

    def fit(self, images: torch.Tensor, labels: torch.Tensor, epochs: int = 4,
            batch_size: int = 128, lr: float = 3e-3, *, decay: float = 0.5, seed: int = 0,
            progress: bool = True) -> "Classifier":
        """Supervised training with Adam on cross-entropy, the learning rate times ``decay``
        after every epoch; epoch ``e`` visits the rows in ``batch_order(n, seed + e)``, so
        the result depends on the seed alone (and the thread count). Records the recipe;
        returns ``self``. ``images`` are ``(N, *input_shape)`` or flat, in [0, 1]."""
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
        """Images as ``(N, *input_shape)`` on the model's device, labels ``(N,)`` int64."""
        images = check_inputs(images)
        if images[0].numel() != math.prod(self.input_shape):
            raise DataError(f"images: one input has shape {tuple(images.shape[1:])}, the "
                            f"{self.kind} takes {self.input_shape}")
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
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu"):
        """Read a checkpoint written by :meth:`save`, in eval mode (never unpickles);
        :class:`~featvis.CheckpointError` if the file is not one."""
        return read_model(cls, path, device)


def shipped(cls: type[Classifier], weights: str, script: str, pretrained: bool, seed: int,
            device: str | torch.device) -> Classifier:
    """``cls`` with the weights ``featvis/_weights/{weights}`` shipped in the package, in
    eval mode (``pretrained=True``), or freshly initialised from ``seed``, in train mode;
    ``script`` reproduces the file."""
    if not pretrained:
        return cls(seed=seed).to(check_device(device))
    resource = resources.files("featvis") / "_weights" / weights
    if not resource.is_file():
        raise CheckpointError(f"featvis/_weights/{weights} is missing from this installation "
                              f"(reinstall featvis, or run {script})")
    with resources.as_file(resource) as path:
        return cls.load(path, device)

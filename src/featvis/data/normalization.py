"""Per-channel standardisation a model may expect, applied and undone."""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import DataError
from ..params import check_int


def parse_normalize(text: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Parse a ``--normalize`` value into float32 ``(mean (C,), std (C,))``.

    ``"MEAN,STD"`` applies to every channel; ``"M1,...,MC,S1,...,SC"`` gives each of the
    ``channels`` its own (e.g. ``0.485,0.456,0.406,0.229,0.224,0.225`` for ImageNet RGB).
    """
    channels = check_int("channels", channels)
    source = f"normalize {text!r}"
    try:
        numbers = [float(part) for part in text.split(",")]
    except ValueError:
        raise DataError(f"{source}: not a comma-separated list of numbers") from None
    if len(numbers) == 2:
        return _mean_std([numbers[0]] * channels, [numbers[1]] * channels, source)
    if len(numbers) == 2 * channels:
        return _mean_std(numbers[:channels], numbers[channels:], source)
    expected = ("MEAN,STD" if channels == 1 else
                f"MEAN,STD or {channels} means then {channels} stds ({2 * channels} numbers)")
    raise DataError(f"{source}: expected {expected} for {channels} channel(s), got "
                    f"{len(numbers)} numbers")


def _mean_std(mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor,
              source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as float32 vectors of one length, finite, stds > 0."""
    mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
    std = torch.as_tensor(std, dtype=torch.float32).flatten()
    if mean.numel() == 0 or mean.shape != std.shape:
        raise DataError(f"{source}: {mean.numel()} means for {std.numel()} stds")
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise DataError(f"{source}: means must be finite and stds finite and > 0")
    return mean, std


class Normalization:
    """Per-channel ``(x - mean) / std``, the standardisation many models expect of their
    inputs, and its inverse, to show normalized inputs as pictures.

    Applies to ``(N, C, H, W)`` with C = ``len(mean)``, or to flat ``(N, D)`` for one channel.
    """

    def __init__(self, mean: Sequence[float] | torch.Tensor,
                 std: Sequence[float] | torch.Tensor) -> None:
        self.mean, self.std = _mean_std(mean, std, "normalization")

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std``, per channel."""
        mean, std = self._shaped(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """``x * std + mean``, per channel: the inverse of :meth:`normalize`."""
        mean, std = self._shaped(x)
        return x * std + mean

    def _shaped(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std shaped, typed and placed to broadcast against ``x``."""
        count = self.mean.numel()
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and (
                x.dim() == 4 and x.shape[1] == count or x.dim() == 2 and count == 1)):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"normalization for {count} channel(s) needs floating inputs "
                            f"(N, {count}, H, W){' or (N, D)' if count == 1 else ''}, got "
                            f"{shape}")
        view = (1, count, 1, 1) if x.dim() == 4 else (1, 1)
        return self.mean.to(x).view(view), self.std.to(x).view(view)

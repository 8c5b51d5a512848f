"""Checks and batching of input tensors, and how one input is laid out as a picture."""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Sequence

import torch

from ..errors import DataError


def check_images(images: torch.Tensor, width: int | None = None, *,
                 name: str = "images", unit_range: bool = True) -> torch.Tensor:
    """Validate a batch of flat inputs: 2-D, floating, finite, optionally ``width`` wide and
    in [0, 1]."""
    _check_tensor(images, name)
    if images.dim() != 2:
        raise DataError(f"{name}: expected shape (N, D), got {tuple(images.shape)}")
    if width is not None and images.shape[1] != width:
        raise DataError(f"{name}: width {images.shape[1]} does not match the model's "
                        f"input size {width}")
    return _check_values(images, name, unit_range)


def _check_tensor(values: object, name: str) -> None:
    if not isinstance(values, torch.Tensor):
        raise DataError(f"{name}: expected a torch.Tensor, got {type(values).__name__}")


def _check_values(images: torch.Tensor, name: str, unit_range: bool) -> torch.Tensor:
    """Floating and finite (and in [0, 1] with ``unit_range``), in one pass over the data."""
    if not images.is_floating_point():
        raise DataError(f"{name}: expected floating-point values, got {images.dtype}")
    if images.numel() == 0:
        return images
    # One pass: NaN propagates through min and max, and +-inf is one of them.
    low, high = (v.item() for v in torch.aminmax(images))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise DataError(f"{name}: contains NaN or infinite values")
    if unit_range and not (0 <= low and high <= 1):
        raise DataError(f"{name}: values must lie in [0, 1] (found {low:.3g}..{high:.3g})")
    return images


def picture_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """How one input is laid out as a picture, ``(C, H, W)``: a flat ``(D,)`` input as a
    square when ``D`` is one (MNIST's 784 as 28x28), else as a one-row strip; ``(H, W)`` as
    one channel. Rendering and the image priors of maximization both use it."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        return (1, side, side) if side * side == shape[0] else (1, 1, shape[0])
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return shape
    raise ValueError(f"cannot draw inputs of shape {shape}: expected (D,), (H, W) or (C, H, W)")


def check_inputs(inputs: torch.Tensor, input_shape: tuple[int, ...] | None = None, *,
                 name: str = "images") -> torch.Tensor:
    """Validate a batch of inputs of any shape: a floating, finite tensor ``(N, *shape)``
    whose one input is ``input_shape`` when given."""
    _check_tensor(inputs, name)
    if inputs.dim() < 2:
        raise DataError(f"{name}: expected a batch (N, *input_shape), got shape "
                        f"{tuple(inputs.shape)}")
    if input_shape is not None and tuple(inputs.shape[1:]) != tuple(input_shape):
        raise DataError(f"{name}: one input has shape {tuple(inputs.shape[1:])}, the model "
                        f"takes {tuple(input_shape)}")
    return _check_values(inputs, name, unit_range=False)


def iter_batches(data: torch.Tensor | Iterable[torch.Tensor], batch_size: int
                 ) -> Iterator[torch.Tensor]:
    """Yield ``data`` in batches: slices of a tensor, or the items of an iterable of batches
    (a ``DataLoader`` yielding ``(x, y)`` pairs gives its first element)."""
    if isinstance(data, torch.Tensor):
        for start in range(0, data.shape[0], batch_size):
            yield data[start:start + batch_size]
        return
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


# --- Inputs for any model: image folders and .npy arrays ----------------------------------

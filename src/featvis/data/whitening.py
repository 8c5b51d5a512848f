"""Whitening of natural images: Olshausen & Field's 1/f filter on whole photographs, ZCA on
patches, and the pixel-space views of first-layer filters learned on whitened data.

Natural images have a ~1/f amplitude spectrum, so a model of raw patches spends its units
on the low frequencies. :func:`one_over_f_whiten` flattens the spectrum of a photograph
before patches are cut from it (Olshausen & Field 1997, the preprocessing of Lee, Ekanadham
& Ng 2008); :class:`ZCA` decorrelates patches directly. :class:`Whitening` says which of the
two (or neither) a model's inputs went through, in a form a checkpoint stores without
pickle: a JSON ``config()`` and float32 ``to_tensors()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from ..errors import CheckpointError, DataError
from ..params import check_float


__all__ = ["one_over_f_whiten", "one_over_f_unwhiten", "ZCA", "Whitening", "F0", "KINDS"]

F0 = 0.4                       # 1/f roll-off, cycles per pixel (Olshausen: 0.4 N per picture)
KINDS = ("none", "1/f", "zca")
PATTERN_EPS = 0.03            # regularization of the 1/f inverse in the pattern view
_ROWS = 2**16                  # rows per chunk while accumulating a covariance


# --- The 1/f filter -----------------------------------------------------------------------

def _as_images(image: object, name: str) -> torch.Tensor:
    """``image`` as a float64 tensor ``(..., H, W)``, H, W >= 2, finite."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, torch.Tensor):
        raise DataError(f"{name}: expected a tensor or numpy array, got {type(image).__name__}")
    if not image.is_floating_point() or image.is_complex():
        raise DataError(f"{name}: expected real floating-point values, got {image.dtype}")
    if image.dim() < 2 or min(image.shape[-2:]) < 2:
        raise DataError(f"{name}: expected an image (H, W) or a batch (..., H, W) with H, W "
                        f">= 2, got shape {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise DataError(f"{name}: contains NaN or infinite values")
    return image.detach().to(torch.float64)


def _response(height: int, width: int, f0: float, device: torch.device) -> torch.Tensor:
    """R(f) = |f| exp(-(|f|/f0)^4) on the ``rfft2`` grid of an (H, W) image, float64, with
    |f| in cycles per pixel along each axis (so the filter is isotropic on any image)."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64, device=device)[:, None]
    fx = torch.fft.rfftfreq(width, dtype=torch.float64, device=device)[None, :]
    rho = torch.sqrt(fy * fy + fx * fx)
    return rho * torch.exp(-(rho / f0) ** 4)


def _filter(image: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """``image`` (..., H, W) float64 with its spectrum multiplied by the real, even ``gain``."""
    size = image.shape[-2:]
    return torch.fft.irfft2(torch.fft.rfft2(image) * gain, s=size)


def one_over_f_whiten(image: torch.Tensor | np.ndarray, f0: float = F0, *,
                      normalize: bool = False) -> torch.Tensor:
    """``image`` (H, W) or a batch (..., H, W) whitened by Olshausen & Field's filter,
    float32 of the same shape.

    In the 2-D Fourier domain the image is multiplied by ``R(f) = |f| exp(-(|f|/f0)^4)``:
    ``|f|`` undoes the ~1/f amplitude fall-off of natural images and the exponential rolls
    off the highest frequencies, where noise and aliasing dominate. Frequencies are in cycles
    per pixel, so ``f0=0.4`` is Olshausen's ``f_0 = 0.4 N`` cycles per picture for an N x N
    image (200 cycles for 512 pixels, 0.8 x Nyquist); his filter, in cycles per picture, is
    this one times N. Non-square images get their own frequency grid per axis, so the filter
    is isotropic in pixels. The FFT makes the image periodic: a few pixels along its borders
    see the opposite edge. The mean (DC) is removed. ``normalize=True`` scales each image
    to unit variance (a constant image stays 0).
    """
    f0 = check_float("f0", f0)
    images = _as_images(image, "image")
    out = _filter(images, _response(*images.shape[-2:], f0, images.device))
    if normalize:
        std = out.std(dim=(-2, -1), unbiased=False, keepdim=True)
        out = out / torch.where(std > 0, std, torch.ones_like(std))
    return out.to(torch.float32)


def one_over_f_unwhiten(image: torch.Tensor | np.ndarray, f0: float = F0, *,
                        eps: float = 1e-3) -> torch.Tensor:
    """The regularized inverse of :func:`one_over_f_whiten` (``normalize=False``), float32.

    The spectrum is multiplied by the Wiener-style ``R / (R^2 + (eps Rmax)^2)``, where
    ``Rmax = f0 e^(-1/4) / sqrt(2)`` is the filter's peak: ``1/R`` wherever ``R >> eps
    Rmax``, and 0 instead of infinity where the filter kept nothing. The inverse is therefore
    approximate: the mean (DC, where R = 0) is lost, and so are the frequencies far above
    ``f0`` and those so low that ``R = |f|`` is below about ``eps Rmax``.
    """
    f0 = check_float("f0", f0)
    eps = check_float("eps", eps)
    images = _as_images(image, "image")
    response = _response(*images.shape[-2:], f0, images.device)
    floor = eps * f0 * math.exp(-0.25) / math.sqrt(2.0)
    return _filter(images, response / (response ** 2 + floor ** 2)).to(torch.float32)


# --- ZCA ----------------------------------------------------------------------------------

class ZCA:
    """ZCA whitening of flat patches: ``y = Z (x - mean)`` with ``Z = U diag(1/sqrt(lambda +
    epsilon)) U^T``, where ``U diag(lambda) U^T`` is the patches' covariance.

    Of all whitening matrices Z is the symmetric one, the one that changes the patches least:
    whitened patches still look like (edge-enhanced) patches. ``epsilon`` (in the units of
    the data's variance) keeps the directions of tiny variance, which hold mostly noise, from
    being amplified without bound: the covariance of the whitened data has eigenvalues
    ``lambda / (lambda + epsilon)`` instead of 1.

    Stored as ``mean``, ``eigenvalues`` (lambda) and ``eigenvectors`` (the columns of U),
    float32; Z and its inverse are built from them in float64, so a ZCA saved with
    :meth:`to_tensors` and :meth:`config` and read back with :meth:`from_tensors` is the same
    to the bit.
    """

    def __init__(self, mean: torch.Tensor, eigenvalues: torch.Tensor,
                 eigenvectors: torch.Tensor, epsilon: float) -> None:
        self.epsilon = check_float("epsilon", epsilon)
        mean, eigenvalues, eigenvectors = (
            torch.as_tensor(t).detach().to("cpu", torch.float32).contiguous()
            for t in (mean, eigenvalues, eigenvectors))
        dim = mean.numel()
        if (mean.shape != (dim,) or eigenvalues.shape != (dim,)
                or eigenvectors.shape != (dim, dim) or dim == 0):
            raise DataError(f"ZCA: expected mean (D,), eigenvalues (D,) and eigenvectors "
                            f"(D, D), got {tuple(mean.shape)}, {tuple(eigenvalues.shape)} and "
                            f"{tuple(eigenvectors.shape)}")
        if not all(torch.isfinite(t).all() for t in (mean, eigenvalues, eigenvectors)):
            raise DataError("ZCA: contains NaN or infinite values")
        if (eigenvalues < 0).any():
            raise DataError(f"ZCA: eigenvalues must be >= 0, found {eigenvalues.min().item():g}")
        self.mean, self.eigenvalues, self.eigenvectors = mean, eigenvalues, eigenvectors
        u = eigenvectors.double()
        scale = eigenvalues.double() + self.epsilon
        self.matrix = ((u * scale.rsqrt()) @ u.T).float()          # Z
        self.inverse_matrix = ((u * scale.sqrt()) @ u.T).float()   # Z^-1

    @classmethod
    def fit(cls, patches: torch.Tensor, epsilon: float = 0.1) -> ZCA:
        """The ZCA of ``patches`` (N, D), N >= 2: their mean and the eigen-decomposition of
        their covariance (divided by N), both computed in float64.

        ``epsilon`` is in the units of the patches' variance; 0.1 suits the unit-variance
        patches of :func:`featvis.data.natural.natural_patches`.
        """
        epsilon = check_float("epsilon", epsilon)
        if not isinstance(patches, torch.Tensor):
            raise DataError(f"patches: expected a torch.Tensor, got {type(patches).__name__}")
        if patches.dim() != 2 or patches.shape[0] < 2 or patches.shape[1] < 1:
            raise DataError(f"patches: expected shape (N, D) with N >= 2, got "
                            f"{tuple(patches.shape)}")
        if not patches.is_floating_point():
            raise DataError(f"patches: expected floating-point values, got {patches.dtype}")
        if not torch.isfinite(patches).all():
            raise DataError("patches: contains NaN or infinite values")
        patches = patches.detach().cpu()
        count, dim = patches.shape
        mean = torch.zeros(dim, dtype=torch.float64)
        for start in range(0, count, _ROWS):
            mean += patches[start:start + _ROWS].double().sum(0)
        mean /= count
        covariance = torch.zeros(dim, dim, dtype=torch.float64)
        for start in range(0, count, _ROWS):
            centred = patches[start:start + _ROWS].double() - mean
            covariance += centred.T @ centred
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance / count)
        return cls(mean, eigenvalues.clamp(min=0.0), eigenvectors, epsilon)

    @property
    def dim(self) -> int:
        """D, the length of one flat patch."""
        return self.mean.numel()

    def _check(self, x: torch.Tensor, name: str) -> None:
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() >= 1
                and x.shape[-1] == self.dim):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"{name}: expected floating (..., {self.dim}) values, got {shape}")

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) @ Z.T``: patches (..., D) whitened, in ``x``'s dtype and device."""
        self._check(x, "x")
        return (x - self.mean.to(x)) @ self.matrix.to(x).T

    def inverse_transform(self, y: torch.Tensor) -> torch.Tensor:
        """``y @ Z^-1.T + mean``: whitened patches (..., D) back in pixel space."""
        self._check(y, "y")
        return y @ self.inverse_matrix.to(y).T + self.mean.to(y)

    # The views of first-layer filters W (H, D) learned on whitened patches y = Z (x - mean).
    # Z is symmetric, so Z^T = Z; the transposes below keep the formulas general.

    def learned(self, weight: torch.Tensor) -> torch.Tensor:
        """The filters as learned, rows ``w``: what each unit weighs the *whitened* patch by
        (they look like edges already sharpened by the whitening)."""
        self._check(weight, "weight")
        return weight

    def receptive_field(self, weight: torch.Tensor) -> torch.Tensor:
        """``W @ Z``, rows ``Z^T w``: the pixel-space receptive field, the filter the unit
        applies to the raw patch, since ``w . Z (x - mean) = (Z^T w) . (x - mean)``."""
        self._check(weight, "weight")
        return weight @ self.matrix.to(weight)

    def pattern(self, weight: torch.Tensor) -> torch.Tensor:
        """``W @ Z^-1.T``, rows ``Z^-1 w``: the pixel-space pattern, the patch (minus the
        mean) whose whitened version is ``w`` and the one that drives the unit most for its
        whitened energy. It is the receptive field seen through the data's covariance,
        ``(C + epsilon I) Z^T w``, so it shows what the unit responds to in the photographs
        rather than how it computes it."""
        self._check(weight, "weight")
        return weight @ self.inverse_matrix.to(weight).T

    def config(self) -> dict:
        """The JSON part of a saved ZCA: ``{"epsilon": ...}``."""
        return {"epsilon": self.epsilon}

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The tensor part of a saved ZCA (float32, contiguous, e.g. for safetensors)."""
        return {"mean": self.mean.clone(), "eigenvalues": self.eigenvalues.clone(),
                "eigenvectors": self.eigenvectors.clone()}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], config: Mapping) -> ZCA:
        """A ZCA from :meth:`to_tensors` and :meth:`config`; anything missing or
        inconsistent is a one-line :class:`~featvis.errors.CheckpointError`."""
        missing = [k for k in ("mean", "eigenvalues", "eigenvectors") if k not in tensors]
        if missing:
            raise CheckpointError(f"ZCA: missing tensor {missing[0]!r}")
        if not isinstance(config, Mapping) or "epsilon" not in config:
            raise CheckpointError("ZCA: config lacks 'epsilon'")
        try:
            return cls(tensors["mean"], tensors["eigenvalues"], tensors["eigenvectors"],
                       config["epsilon"])
        except (DataError, ValueError, TypeError) as exc:
            raise CheckpointError(str(exc) if str(exc).startswith("ZCA") else
                                  f"ZCA: {exc}") from None


# --- What a model's inputs went through ---------------------------------------------------

@dataclass(frozen=True, eq=False)
class Whitening:
    """The whitening of a model's inputs: ``kind`` ``"none"``, ``"1/f"`` (whole photographs
    filtered by :func:`one_over_f_whiten` with ``f0`` before patches were cut) or ``"zca"``
    (patches transformed by ``zca``, then multiplied by ``scale``, which brings ZCA's output,
    of variance below 1 by ``epsilon``, back to unit variance). Saved as ``config()`` (JSON)
    and ``to_tensors()``."""

    kind: str = "none"
    f0: float = F0
    zca: ZCA | None = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"whitening kind must be one of {', '.join(KINDS)}, got "
                            f"{self.kind!r}")
        check_float("f0", self.f0)
        check_float("scale", self.scale)
        if (self.kind == "zca") != (self.zca is not None):
            raise DataError("whitening: give a ZCA exactly when kind is 'zca'")

    def config(self) -> dict:
        """``{"kind": ...}`` plus ``"f0"`` for 1/f, ``"epsilon"`` and ``"scale"`` for ZCA."""
        if self.kind == "1/f":
            return {"kind": "1/f", "f0": self.f0}
        if self.kind == "zca":
            return {"kind": "zca", **self.zca.config(), "scale": self.scale}
        return {"kind": "none"}

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The ZCA's tensors named ``zca.*`` (none for the other kinds)."""
        if self.zca is None:
            return {}
        return {f"zca.{name}": t for name, t in self.zca.to_tensors().items()}

    @classmethod
    def from_parts(cls, config: Mapping, tensors: Mapping[str, torch.Tensor]) -> Whitening:
        """A Whitening from :meth:`config` and :meth:`to_tensors` (``tensors`` may hold other
        names too); inconsistencies are one-line CheckpointErrors."""
        kind = config.get("kind") if isinstance(config, Mapping) else None
        if kind not in KINDS:
            raise CheckpointError(f"whitening: unknown kind {kind!r}")
        try:
            if kind == "zca":
                zca = {name[4:]: t for name, t in tensors.items() if name.startswith("zca.")}
                return cls("zca", zca=ZCA.from_tensors(zca, config),
                           scale=config.get("scale", 1.0))
            return cls(kind, f0=config.get("f0", F0)) if kind == "1/f" else cls()
        except (DataError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"whitening: {exc}") from None

    def inputs(self, patches: torch.Tensor) -> torch.Tensor:
        """What a model reads for ``patches`` cut as their recipe says: ZCA-whitened ones
        (1/f whitening was applied to the whole photographs before cutting)."""
        return patches if self.zca is None else self.zca.transform(patches) * self.scale

    def views(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """First-layer filters ``weight`` (H, D) in the three views the figures show:
        ``"learned"`` (the weights, in the whitened space), ``"pattern"`` (the pixel pattern
        whose whitened version is the filter) and ``"receptive_field"`` (the filter the unit
        applies to raw pixels); see :class:`ZCA`. For 1/f the filters are square pictures
        and both pixel views are drawn on a canvas padded by ``side // 4`` on every side,
        since filtering spreads them; the pattern uses the regularized inverse with ``eps =
        PATTERN_EPS``, which keeps the near-Nyquist frequencies the filter nearly removed
        from showing as a checkerboard. Without whitening the learned view is all there
        is."""
        if self.zca is not None:       # inputs y = scale Z (x - mean), see ZCA's views
            return {"learned": self.zca.learned(weight),
                    "pattern": self.zca.pattern(weight) / self.scale,
                    "receptive_field": self.zca.receptive_field(weight) * self.scale}
        if self.kind == "none":
            return {"learned": weight}
        side = math.isqrt(weight.shape[1])
        if side * side != weight.shape[1]:
            raise DataError(f"1/f whitening: filters of {weight.shape[1]} values are not "
                            "square pictures")
        pad = side // 4
        canvas = torch.nn.functional.pad(weight.reshape(-1, side, side), (pad,) * 4)
        return {"learned": weight,
                "pattern": one_over_f_unwhiten(canvas, self.f0, eps=PATTERN_EPS)
                .flatten(1).to(weight),
                "receptive_field": one_over_f_whiten(canvas, self.f0).flatten(1).to(weight)}

"""Natural-image patches, offline: the data of Gaussian-Bernoulli RBMs on whitened patches
(Lee, Ekanadham & Ng 2008).

:func:`natural_patches` reads grey photographs (those bundled with scikit-image, a folder of
the user's PNG/JPEG files, or images in memory), whitens each whole photograph by the 1/f
filter of :func:`featvis.data.whitening.one_over_f_whiten`, cuts square patches at seeded random
positions and normalizes their contrast. Its :class:`Patches` carry a JSON ``recipe``
(sources with the sha256 of their pixels, every setting, the contrast scale) from which
:func:`rebuild` makes the same patches again, to the bit, or says which photograph changed.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from .images import MAX_PIXELS, check_pixels, decode_into, file_mode, list_images, read_header
from ..errors import DataError, FeatvisError
from ..params import check_float, check_int
from .whitening import F0, ZCA, Whitening, one_over_f_whiten


__all__ = ["natural_patches", "rebuild", "training_inputs", "natural_info", "model_inputs",
           "WHITENINGS", "Patches", "MissingDependencyError", "BUNDLED",
           "WHITEN", "MAX_IMAGE_PIXELS", "MAX_PATCH_BYTES", "RECIPE_FORMAT"]

# Photographs and textures of scikit-image's skimage.data that ship inside its wheel (no
# download): natural scenes and surfaces, no drawings, text or microscopy. Colour ones are
# converted to grey as Pillow does (ITU-R 601-2 luma, like the user's photographs).
BUNDLED = ("camera", "grass", "gravel", "brick", "moon", "astronaut", "coffee", "chelsea",
           "rocket")
WHITEN = ("1/f", "none")        # what natural_patches applies to whole photographs
WHITENINGS = ("1/f", "zca", "none")   # what a model's inputs may go through
MAX_IMAGE_PIXELS = MAX_PIXELS  # the default budget of one photograph (max_pixels)
MAX_PATCH_BYTES = 4 * 2**30         # refuse count * size^2 float32 above this
RECIPE_FORMAT = "featvis.patches/1"
_INSTALL = "pip install 'featvis[natural]'"


class MissingDependencyError(FeatvisError, ImportError):
    """An optional dependency that a function needs is not installed; the message names
    the pip command that installs it."""


@dataclass(frozen=True, eq=False)
class Patches:
    """Flat patches ``(count, size * size)`` float32 in random order, and the JSON-ready
    ``recipe`` that :func:`rebuild` makes them again from."""

    patches: torch.Tensor
    recipe: dict

    @property
    def size(self) -> int:
        """The side of one square patch, in pixels."""
        return self.recipe["size"]

    @property
    def whitening(self) -> Whitening:
        """How the photographs were whitened (for a checkpoint's metadata)."""
        if self.recipe["whiten"] == "1/f":
            return Whitening("1/f", f0=self.recipe["f0"])
        return Whitening()


@dataclass(frozen=True)
class _Source:
    """One photograph: its recorded ``name``, where messages place it, its (H, W) and a
    function returning its grey float32 pixels in [0, 1]."""

    name: str
    where: str
    shape: tuple[int, int]
    load: Callable[[], np.ndarray]


def natural_patches(images: str | os.PathLike | Sequence | None = None, size: int = 14,
                    count: int = 20000, seed: int = 0, remove_mean: bool = True,
                    normalize_contrast: bool = True, whiten: str = "1/f", *,
                    f0: float = F0, max_pixels: int = MAX_IMAGE_PIXELS) -> Patches:
    """``count`` grey ``size`` x ``size`` patches of natural photographs, flat and float32.

    ``images`` is ``None`` for the photographs of :data:`BUNDLED` (scikit-image, no
    download; install it with ``pip install 'featvis[natural]'``), a folder of PNG/JPEG
    photographs of any size (read in sorted order, converted to grey, at most
    ``max_pixels`` each, checked from their headers), or a sequence of 2-D float images in
    [0, 1].

    Each photograph is whitened whole by the 1/f filter (``whiten="1/f"``, roll-off ``f0``
    in cycles per pixel; ``"none"`` keeps the pixels), then patches are cut at random
    positions drawn by ``torch.Generator().manual_seed(seed)``, each photograph giving a
    share of ``count`` proportional to its number of patch positions (largest remainders,
    ties to the first). ``remove_mean`` subtracts each patch's mean; ``normalize_contrast``
    multiplies every patch by one scalar, ``recipe["contrast_scale"]``, that brings the
    variance over all pixels of all patches to 1 (one scalar, not one per patch, so that
    relative contrasts survive and a Gaussian RBM with sigma = 1 fits). The rows are then
    shuffled by the same generator, so any prefix mixes every photograph.
    """
    settings = _settings(size, count, seed, remove_mean, normalize_contrast, whiten, f0)
    kind, folder, sources = _sources(images, max_pixels)
    return _build(kind, folder, sources, settings)


def rebuild(recipe: Mapping, images: str | os.PathLike | Sequence | None = None, *,
            max_pixels: int = MAX_IMAGE_PIXELS) -> Patches:
    """The patches of ``recipe`` (a :class:`Patches`' recipe, e.g. read back from JSON),
    identical to the bit on the same software, with the recorded contrast scale.

    ``images`` defaults to the recipe's own source: the bundled photographs or its folder;
    patches of images in memory need them given again. A photograph missing, added or whose
    decoded pixels differ from the recorded sha256 is a one-line :class:`DataError` naming
    the first one.
    """
    if not isinstance(recipe, Mapping) or recipe.get("format") != RECIPE_FORMAT:
        found = recipe.get("format") if isinstance(recipe, Mapping) else type(recipe).__name__
        raise DataError(f"recipe: expected format {RECIPE_FORMAT!r}, got {found!r}")
    missing = [key for key in ("source", "sources", "size", "count", "seed", "remove_mean",
                               "normalize_contrast", "whiten", "f0", "contrast_scale")
               if key not in recipe]
    if missing:
        raise DataError(f"recipe: missing {missing[0]!r}")
    settings = _settings(recipe["size"], recipe["count"], recipe["seed"],
                         recipe["remove_mean"], recipe["normalize_contrast"],
                         recipe["whiten"], recipe["f0"])
    scale = check_float("recipe contrast_scale", recipe["contrast_scale"])
    recorded = recipe["sources"]
    if not (isinstance(recorded, list) and recorded and all(
            isinstance(s, Mapping) and isinstance(s.get("name"), str)
            and isinstance(s.get("sha256"), str) for s in recorded)):
        raise DataError("recipe: 'sources' must be a non-empty list of {name, sha256, shape}")
    if images is None:
        if recipe["source"] == "folder" and isinstance(recipe.get("folder"), str):
            images = recipe["folder"]
        elif recipe["source"] != "bundled":
            raise DataError(f"recipe: its {recipe['source']!r} images are not stored; give "
                            "them again (images=...)")
    kind, folder, sources = _sources(images, max_pixels)
    names = [s.name for s in sources]
    for index, entry in enumerate(recorded):
        if index >= len(names) or names[index] != entry["name"]:
            found = f" (found {names[index]} in its place)" if index < len(names) else ""
            raise DataError(f"{entry['name']}: in the recipe but not among the given "
                            f"photographs{found}")
    if len(names) > len(recorded):
        raise DataError(f"{sources[len(recorded)].where}: not in the recipe")
    expected = {entry["name"]: entry for entry in recorded}
    return _build(kind, folder, sources, settings, expected=expected, scale=scale)


def training_inputs(images: str | os.PathLike | Sequence | None = None, *, size: int = 14,
                    count: int = 20000, seed: int = 0, whiten: str = "1/f",
                    epsilon: float = 0.1, max_pixels: int = MAX_IMAGE_PIXELS
                    ) -> tuple[torch.Tensor, Patches, Whitening]:
    """What a model of natural patches trains on: ``(inputs, patches, whitening)``.

    ``whiten`` is ``"1/f"`` (the whole photographs filtered before cutting, as in Lee,
    Ekanadham & Ng 2008), ``"zca"`` (ZCA with ``epsilon`` fitted on the cut patches, its
    output scaled to unit variance) or ``"none"``; the patches are mean-removed and
    contrast-normalized (see :func:`natural_patches`). Save ``patches.recipe`` and
    ``whitening`` with the model: :func:`model_inputs` rebuilds the same inputs from them.
    """
    if whiten not in WHITENINGS:
        raise ValueError(f"whiten must be one of {', '.join(WHITENINGS)}, got {whiten!r}")
    patches = natural_patches(images, size, count, seed,
                              whiten="1/f" if whiten == "1/f" else "none", max_pixels=max_pixels)
    if whiten != "zca":                 # 1/f was applied to the photographs themselves
        return patches.patches, patches, patches.whitening
    zca = ZCA.fit(patches.patches, epsilon)
    whitened = zca.transform(patches.patches)
    scale = 1 / whitened.std().item()   # back to unit variance, as the recipes expect
    return whitened.mul_(scale), patches, Whitening("zca", zca=zca, scale=scale)


def natural_info(patches: Patches, inputs: torch.Tensor) -> dict:
    """What a model records about its natural-patch training data (saved with the
    checkpoint): the patch recipe that rebuilds them, how many, their fingerprint."""
    from ..io.fingerprint import data_fingerprint

    sources = ", ".join(s["name"] for s in patches.recipe["sources"])
    return {"name": "natural patches", "source": f"{patches.recipe['source']}: {sources}",
            "n_train": len(inputs), "data_sha256": data_fingerprint(inputs),
            "patches": patches.recipe}


def model_inputs(recipe: Mapping, whitening: Whitening,
                 images: str | os.PathLike | Sequence | None = None, *,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """The inputs a model of natural patches was trained on, from its saved recipe and
    whitening (``images``: the photographs again, see :func:`rebuild`)."""
    return whitening.inputs(rebuild(recipe, images, max_pixels=max_pixels).patches)


# --- Settings and sources -----------------------------------------------------------------

def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _settings(size: object, count: object, seed: object, remove_mean: object,
              normalize_contrast: object, whiten: object, f0: object) -> dict:
    """The validated settings, as the recipe records them."""
    size = check_int("size", size, minimum=4)
    count = check_int("count", count)
    seed = check_int("seed", seed, minimum=0)
    if seed >= 2**63:
        raise ValueError(f"seed must be below 2**63, got {seed}")
    if whiten is None:
        whiten = "none"
    if whiten not in WHITEN:
        raise ValueError(f"whiten must be one of {', '.join(map(repr, WHITEN))}, got "
                         f"{whiten!r}")
    if count * size * size * 4 > MAX_PATCH_BYTES:
        raise ValueError(f"count * size^2 float32 = {count * size * size * 4} bytes, above "
                         f"the limit MAX_PATCH_BYTES={MAX_PATCH_BYTES}; ask fewer patches")
    return {"size": size, "count": count, "seed": seed,
            "remove_mean": _flag("remove_mean", remove_mean),
            "normalize_contrast": _flag("normalize_contrast", normalize_contrast),
            "whiten": whiten, "f0": check_float("f0", f0)}


def _sources(images: object, max_pixels: int) -> tuple[str, str | None, list[_Source]]:
    """``(kind, folder, sources)`` of a natural_patches ``images`` argument, each image at
    most ``max_pixels``."""
    max_pixels = check_int("max_pixels", max_pixels)
    if images is None:
        return "bundled", None, _bundled()
    if isinstance(images, (str, os.PathLike)):
        return "folder", os.fspath(images), _folder(Path(images), max_pixels)
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 2:
        images = [images]
    if isinstance(images, (list, tuple)) or (
            isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 3):
        return "arrays", None, _arrays(images, max_pixels)
    raise DataError(f"images: expected None (the bundled photographs), a folder or a list "
                    f"of 2-D images, got {type(images).__name__}")


def _grey(pixels: np.ndarray) -> np.ndarray:
    """uint8 grey (H, W) or RGB (H, W, 3) as float32 grey in [0, 1], the way
    :func:`featvis.data.load_images` decodes a photograph (Pillow's luma, / 255)."""
    if pixels.ndim == 3:
        pixels = np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., :3]), "RGB")
                            .convert("L"))
    return np.divide(pixels, 255.0, dtype=np.float32)


def _bundled() -> list[_Source]:
    """The :data:`BUNDLED` photographs (decoded now: they are small)."""
    try:
        from skimage import data as skdata
    except ImportError:
        raise MissingDependencyError(f"the bundled photographs need scikit-image: "
                                     f"{_INSTALL}") from None
    sources = []
    for name in BUNDLED:
        try:
            pixels = getattr(skdata, name)()
        except Exception as exc:   # a stripped or broken install: one line, not a traceback
            raise MissingDependencyError(f"skimage.data.{name}() failed ({exc}); reinstall "
                                         f"scikit-image: {_INSTALL}") from None
        if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
            raise DataError(f"skimage.data.{name}(): unexpected {pixels.dtype} array of shape "
                            f"{pixels.shape}")
        grey = _grey(pixels)
        sources.append(_Source(name, f"skimage.data.{name}", grey.shape, lambda g=grey: g))
    return sources


def _folder(root: Path, max_pixels: int) -> list[_Source]:
    """The PNG/JPEG photographs of ``root`` (and its subfolders, one level), headers read,
    pixels decoded later, one at a time."""
    if not stat.S_ISDIR(file_mode(root)):
        raise DataError(f"{root}: not a folder of PNG/JPEG photographs")
    paths, _, _ = list_images(root)
    sources = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for path in paths:
            (height, width), _ = read_header(path)
            check_pixels(path, (height, width), max_pixels)
            sources.append(_Source(path.relative_to(root).as_posix(), str(path),
                                   (height, width), lambda p=path, s=(height, width):
                                   _decode(p, s)))
    return sources


def _decode(path: Path, shape: tuple[int, int]) -> np.ndarray:
    out = np.empty((1, *shape), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        decode_into(path, 1, shape, out)
    return out[0]


def _arrays(images: Sequence, max_pixels: int) -> list[_Source]:
    """Images given in memory, named ``image 0``, ``image 1``, ..."""
    if len(images) == 0:
        raise DataError("images: an empty list")
    sources = []
    for index, image in enumerate(images):
        name = f"image {index}"
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu()
            if image.is_floating_point():
                image = image.to(torch.float32).numpy()
        if not (isinstance(image, np.ndarray) and image.dtype.kind == "f"):
            found = getattr(image, "dtype", type(image).__name__)
            raise DataError(f"{name}: expected a 2-D float tensor or array in [0, 1], got "
                            f"{found}")
        if image.ndim != 2:
            raise DataError(f"{name}: expected a 2-D grey image (H, W), got shape "
                            f"{image.shape}")
        check_pixels(name, image.shape, max_pixels)
        with np.errstate(over="ignore"):
            grey = np.ascontiguousarray(image, dtype=np.float32)
        if not np.isfinite(grey).all():
            raise DataError(f"{name}: contains NaN or infinite values")
        if grey.size and not (grey.min() >= 0 and grey.max() <= 1):
            raise DataError(f"{name}: values must lie in [0, 1] (found "
                            f"{grey.min():.3g}..{grey.max():.3g})")
        sources.append(_Source(name, name, grey.shape, lambda g=grey: g))
    return sources


# --- Cutting ------------------------------------------------------------------------------

def _sha256(pixels: np.ndarray) -> str:
    """sha256 of the grey pixels as little-endian float32 bytes, row by row."""
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype="<f4").tobytes()).hexdigest()


def _shares(areas: list[int], count: int) -> list[int]:
    """``count`` split in proportion to ``areas``, exactly: floors, then one more to the
    largest remainders (ties to the first)."""
    total = sum(areas)
    shares = [count * a // total for a in areas]
    order = sorted(range(len(areas)), key=lambda i: (-(count * areas[i] % total), i))
    for i in order[:count - sum(shares)]:
        shares[i] += 1
    return shares


def _build(kind: str, folder: str | None, sources: list[_Source], settings: dict, *,
           expected: Mapping[str, Mapping] | None = None, scale: float | None = None
           ) -> Patches:
    """Cut, whiten and normalize the patches of ``sources``; with ``expected`` (recipe
    entries by name) every photograph is checked against its recorded shape and sha256."""
    size, count = settings["size"], settings["count"]
    for source in sources:
        height, width = source.shape
        if min(height, width) < size:
            raise DataError(f"{source.where}: {height}x{width} pixels, smaller than the "
                            f"{size}x{size} patches")
    areas = [(h - size + 1) * (w - size + 1) for h, w in (s.shape for s in sources)]
    shares = _shares(areas, count)
    generator = torch.Generator().manual_seed(settings["seed"])
    patches = torch.empty(count, size * size, dtype=torch.float32)
    entries, start = [], 0
    for source, share in zip(sources, shares):
        pixels = source.load()
        digest = _sha256(pixels)
        if expected is not None:
            entry = expected[source.name]
            if list(pixels.shape) != list(entry.get("shape", pixels.shape)) \
                    or digest != entry["sha256"]:
                raise DataError(f"{source.where}: differs from the recipe's photograph "
                                f"(sha256 {digest[:12]}... of {pixels.shape[0]}x"
                                f"{pixels.shape[1]} pixels, recorded {entry['sha256'][:12]}...)")
        entries.append({"name": source.name, "shape": list(pixels.shape), "sha256": digest})
        image = torch.from_numpy(pixels)
        if settings["whiten"] == "1/f":
            image = one_over_f_whiten(image, settings["f0"])
        rows = torch.randint(0, image.shape[0] - size + 1, (share,), generator=generator)
        cols = torch.randint(0, image.shape[1] - size + 1, (share,), generator=generator)
        windows = image.unfold(0, size, 1).unfold(1, size, 1)   # a view, nothing copied
        patches[start:start + share] = windows[rows, cols].reshape(share, size * size)
        start += share
        del pixels, image, windows
    patches = patches[torch.randperm(count, generator=generator)]
    if settings["remove_mean"]:
        patches -= patches.mean(dim=1, keepdim=True)
    if settings["normalize_contrast"]:
        if scale is None:
            std = patches.double().std(unbiased=False).item()
            if not std > 0:
                raise DataError("patches: zero variance, nothing to normalize (are the "
                                "photographs constant?)")
            scale = 1.0 / std
        patches = (patches.double() * scale).float()
    else:
        scale = 1.0
    recipe = {"format": RECIPE_FORMAT, "source": kind, **({"folder": folder} if folder else {}),
              "sources": entries, **settings, "contrast_scale": scale}
    return Patches(patches, recipe)

"""Natural-image patches: shapes, determinism, normalization, recipes and refusals, checked
against independent numpy computations where there is one."""

import hashlib
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from featvis.errors import DataError, FeatvisError
from featvis.data.natural import (BUNDLED, MissingDependencyError, Patches, natural_patches,
                             rebuild)


def one_line(exc_info):
    text = str(exc_info.value)
    assert text and "\n" not in text
    return text


def smooth(h, w, seed, rgb=False):
    """A random smooth picture as uint8 pixels (low-pass noise; RGB if asked)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((h, w, 3) if rgb else (h, w))
    kernel = np.ones(5) / 5
    for axis in (0, 1):
        noise = np.apply_along_axis(np.convolve, axis, noise, kernel, mode="same")
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return (noise * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def bundled():
    pytest.importorskip("skimage")
    return natural_patches(count=500, seed=3)


@pytest.fixture
def photos(tmp_path):
    """A folder of three PNG/JPEG photographs of different sizes, one of them RGB."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(smooth(40, 56, 0)).save(folder / "b.png")
    Image.fromarray(smooth(32, 32, 1, rgb=True), "RGB").save(folder / "a.png")
    Image.fromarray(smooth(48, 36, 2)).save(folder / "c.jpg", quality=95)
    return folder


# --- Bundled photographs ------------------------------------------------------------------

def test_bundled_shapes_and_normalization(bundled):
    p = bundled.patches
    assert isinstance(bundled, Patches) and bundled.size == 14
    assert p.shape == (500, 196) and p.dtype == torch.float32
    rows = p.double()
    assert rows.mean(dim=1).abs().max() < 1e-6                     # remove_mean
    assert abs(rows.var(unbiased=False).item() - 1) < 1e-6         # normalize_contrast
    assert [s["name"] for s in bundled.recipe["sources"]] == list(BUNDLED)
    assert bundled.whitening.kind == "1/f"


def test_bundled_recipe_records_the_pixels(bundled):
    from skimage import data as skdata

    camera = np.divide(skdata.camera(), 255.0, dtype=np.float32)   # grey uint8 / 255
    entry = bundled.recipe["sources"][0]
    assert entry == {"name": "camera", "shape": [512, 512],
                     "sha256": hashlib.sha256(camera.tobytes()).hexdigest()}
    astronaut = np.asarray(Image.fromarray(skdata.astronaut()).convert("L")) / np.float32(255)
    entry = bundled.recipe["sources"][BUNDLED.index("astronaut")]
    assert entry["sha256"] == hashlib.sha256(astronaut.astype("<f4").tobytes()).hexdigest()


def test_bundled_deterministic_and_rebuilt(bundled):
    again = natural_patches(count=500, seed=3)
    assert torch.equal(again.patches, bundled.patches) and again.recipe == bundled.recipe
    recipe = json.loads(json.dumps(bundled.recipe))
    assert recipe == bundled.recipe
    assert torch.equal(rebuild(recipe).patches, bundled.patches)
    other = natural_patches(count=500, seed=4)
    assert not torch.equal(other.patches, bundled.patches)


def test_missing_scikit_image(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(MissingDependencyError) as info:
        natural_patches(count=10)
    assert "pip install 'featvis[natural]'" in one_line(info)
    assert isinstance(info.value, FeatvisError) and isinstance(info.value, ImportError)


# --- Images in memory: independent checks of the cutting ----------------------------------

def windows(image, size):
    """Every size x size window of ``image``, flat: (positions, size * size)."""
    view = np.lib.stride_tricks.sliding_window_view(image, (size, size))
    return view.reshape(-1, size * size)


def test_patches_are_windows_of_the_image():
    image = np.random.default_rng(5).random((20, 24)).astype(np.float32)
    result = natural_patches([image], size=4, count=60, whiten="none", remove_mean=False,
                             normalize_contrast=False)
    every = windows(image, 4)
    for row in result.patches.numpy():
        assert (every == row).all(axis=1).any()
    assert result.recipe["contrast_scale"] == 1.0


def test_one_over_f_patches_are_windows_of_the_numpy_whitened_image():
    image = np.random.default_rng(6).random((30, 26))
    h, w = image.shape
    rho = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    whitened = np.real(np.fft.ifft2(np.fft.fft2(image.astype(np.float32))
                                    * rho * np.exp(-(rho / 0.4) ** 4)))
    result = natural_patches([torch.from_numpy(image)], size=5, count=40, remove_mean=False,
                             normalize_contrast=False)
    distance = np.abs(windows(whitened, 5)[None] - result.patches.numpy()[:, None]).max(-1)
    assert distance.min(axis=1).max() < 1e-6


def test_counts_follow_the_usable_area():
    dark = np.full((13, 13), 0.2, np.float32)     # 10 x 10 = 100 positions of 4 x 4
    light = np.full((8, 9), 0.8, np.float32)      # 5 x 6 = 30 positions
    result = natural_patches([dark, light], size=4, count=26, whiten="none",
                             remove_mean=False, normalize_contrast=False)
    means = result.patches.mean(dim=1)
    assert (means < 0.5).sum() == 20 and (means > 0.5).sum() == 6     # 26 * 100/130, 26 * 30/130
    assert not (means[:20] < 0.5).all()                                  # rows are shuffled
    assert [s["name"] for s in result.recipe["sources"]] == ["image 0", "image 1"]


def test_arrays_recipe_needs_the_images_again():
    images = [np.random.default_rng(7).random((16, 16)).astype(np.float32)]
    result = natural_patches(images, size=4, count=30)
    with pytest.raises(DataError, match="give them again") as info:
        rebuild(result.recipe)
    one_line(info)
    assert torch.equal(rebuild(result.recipe, images).patches, result.patches)
    changed = [images[0].copy()]
    changed[0][3, 3] += 0.01
    with pytest.raises(DataError, match="image 0: differs from the recipe") as info:
        rebuild(result.recipe, changed)
    one_line(info)


# --- A folder of the user's photographs ---------------------------------------------------

def test_folder_recipe_round_trip(photos):
    result = natural_patches(photos, size=8, count=200, seed=1)
    assert result.patches.shape == (200, 64)
    recipe = json.loads(json.dumps(result.recipe))
    assert [s["name"] for s in recipe["sources"]] == ["a.png", "b.png", "c.jpg"]
    assert recipe["sources"][1]["shape"] == [40, 56]
    grey = np.divide(np.asarray(Image.open(photos / "b.png")), 255.0, dtype=np.float32)
    assert recipe["sources"][1]["sha256"] == hashlib.sha256(grey.tobytes()).hexdigest()
    assert torch.equal(rebuild(recipe).patches, result.patches)           # its own folder
    assert torch.equal(rebuild(recipe, photos).patches, result.patches)


def test_modified_photograph_is_refused(photos):
    recipe = natural_patches(photos, size=8, count=50).recipe
    pixels = np.asarray(Image.open(photos / "b.png")).copy()
    pixels[10, 10] ^= 1
    Image.fromarray(pixels).save(photos / "b.png")
    with pytest.raises(DataError) as info:
        rebuild(recipe)
    assert "b.png: differs from the recipe" in one_line(info)


def test_missing_or_added_photograph_is_refused(photos):
    recipe = natural_patches(photos, size=8, count=50).recipe
    (photos / "b.png").rename(photos / "d.png")
    with pytest.raises(DataError, match="b.png: in the recipe but not among") as info:
        rebuild(recipe)
    one_line(info)
    (photos / "d.png").rename(photos / "b.png")
    Image.fromarray(smooth(20, 20, 9)).save(photos / "e.png")
    with pytest.raises(DataError, match="e.png: not in the recipe"):
        rebuild(recipe)


def test_bundled_photograph_saved_as_png_has_the_same_hash(tmp_path, bundled):
    from skimage import data as skdata

    Image.fromarray(skdata.camera()).save(tmp_path / "camera.png")
    result = natural_patches(tmp_path, size=8, count=5)
    assert result.recipe["sources"][0]["sha256"] == bundled.recipe["sources"][0]["sha256"]


def test_folder_refusals(tmp_path, photos):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no PNG/JPEG images") as info:
        natural_patches(empty)
    one_line(info)
    with pytest.raises(DataError, match="no such file|cannot read"):
        natural_patches(tmp_path / "nowhere")
    with pytest.raises(DataError, match="not a folder"):
        natural_patches(photos / "a.png")
    with pytest.raises(DataError, match=r"a\.png: 32x32 pixels, smaller than the 33x33") as info:
        natural_patches(photos, size=33)
    one_line(info)
    with pytest.raises(DataError, match=r"b\.png: 40x56 = 2240 pixels, above the limit "
                                        r"max_pixels=1500 per image \(--max-pixels") as info:
        natural_patches(photos, max_pixels=1500)
    one_line(info)
    (photos / "z.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="z.png: not a PNG or JPEG image"):
        natural_patches(photos)


# --- Arguments ----------------------------------------------------------------------------

GOOD = [np.full((16, 16), 0.5, np.float32) + np.eye(16, dtype=np.float32) * 0.1]


@pytest.mark.parametrize("kwargs,error,problem", [
    (dict(size=3), ValueError, "size must be an integer >= 4"),
    (dict(size=4.5), ValueError, "size must be"),
    (dict(count=0), ValueError, "count must be a positive integer"),
    (dict(count=True), ValueError, "count must be"),
    (dict(seed=-1), ValueError, "seed must be"),
    (dict(remove_mean="yes"), ValueError, "remove_mean must be True or False"),
    (dict(normalize_contrast=1), ValueError, "normalize_contrast must be True or False"),
    (dict(whiten="zca"), ValueError, "whiten must be one of"),
    (dict(f0=0), ValueError, "f0 must be"),
    (dict(count=10**9, size=64), ValueError, "MAX_PATCH_BYTES"),
    (dict(images=42), DataError, "images: expected None"),
    (dict(images=[]), DataError, "empty list"),
    (dict(images=[np.zeros(16, np.float32)]), DataError, "2-D grey image"),
    (dict(images=[np.zeros((16, 16), np.uint8)]), DataError, "2-D float"),
    (dict(images=[np.full((16, 16), 2.0)]), DataError, r"in \[0, 1\]"),
    (dict(images=[np.full((16, 16), np.nan)]), DataError, "NaN"),
    (dict(images=[np.zeros((8, 30))], size=9), DataError, "image 0: 8x30 pixels, smaller"),
    (dict(images=[np.zeros((16, 16))]), DataError, "zero variance"),
])
def test_bad_arguments(kwargs, error, problem):
    kwargs = {"images": GOOD, "count": 10, **kwargs}
    with pytest.raises(error, match=problem) as info:
        natural_patches(**kwargs)
    one_line(info)


def test_bad_recipes():
    recipe = natural_patches(GOOD, size=4, count=10).recipe
    with pytest.raises(DataError, match="expected format"):
        rebuild({**recipe, "format": "other/1"})
    with pytest.raises(DataError, match="missing 'seed'"):
        rebuild({k: v for k, v in recipe.items() if k != "seed"}, GOOD)
    with pytest.raises(ValueError, match="size must be"):
        rebuild({**recipe, "size": "14"}, GOOD)
    with pytest.raises(DataError, match="sources"):
        rebuild({**recipe, "sources": []}, GOOD)


def test_a_short_run_on_one_texture_learns_localized_filters():
    """Lee et al. (2008) in miniature: 10,000 1/f-whitened patches of the bundled gravel, a
    Gaussian layer of 64 units trained 5 epochs by the "lee" recipe (about a second on one
    thread): its filters are localized well beyond random filters of their size, which are
    not (locality figure of featvis.figures)."""
    pytest.importorskip("skimage")
    import skimage.data

    from featvis import DBN, TrainingRecipe
    from featvis.figures import locality, random_locality

    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # a shared 2-core machine is much slower on 2 threads
    try:
        gravel = torch.from_numpy(skimage.data.gravel()).float() / 255
        inputs = natural_patches([gravel], count=10_000, seed=0).patches
        recipe = TrainingRecipe.preset("lee", epochs=5)
        dbn = DBN([196, 64], visible="gaussian", sigma=recipe.for_layer(1).sigma, seed=0)
        untrained = dbn.rbms[0].weight.clone()
        dbn.fit(inputs, progress=False, **recipe.to_dict())
    finally:
        torch.set_num_threads(threads)
    baseline = random_locality((64, 14, 14))
    assert locality(dbn.rbms[0].weight) >= baseline + 0.2
    assert locality(untrained) < baseline + 0.2

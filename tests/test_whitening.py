"""The 1/f whitening filter and ZCA, each against an independent numpy computation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as load_tensors, save as save_tensors

from featvis.errors import CheckpointError, DataError
from featvis.data.whitening import ZCA, Whitening, one_over_f_unwhiten, one_over_f_whiten


def correlated(n=4000, d=16, seed=0):
    """Float32 (n, d) Gaussian data with a spread of variances and correlations."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=g) * torch.logspace(0, -2, d)
    return (torch.randn(n, d, generator=g) @ mixing.T + torch.randn(d, generator=g)).float()


def numpy_stats(x):
    """Mean and covariance (divided by N) of ``x``, float64, in numpy."""
    a = x.numpy().astype(np.float64)
    mean = a.mean(axis=0)
    return mean, (a - mean).T @ (a - mean) / len(a)


def one_line(exc_info):
    text = str(exc_info.value)
    assert text and "\n" not in text
    return text


# --- ZCA ----------------------------------------------------------------------------------

@pytest.mark.parametrize("epsilon", [1e-3, 0.1])
def test_zca_whitened_covariance_eigenvalues(epsilon):
    x = correlated()
    zca = ZCA.fit(x, epsilon=epsilon)
    _, cov = numpy_stats(x)
    lam = np.clip(np.linalg.eigh(cov)[0], 0, None)
    y = zca.transform(x).numpy().astype(np.float64)
    whitened = np.linalg.eigvalsh(np.cov(y.T, bias=True))
    np.testing.assert_allclose(np.sort(whitened), np.sort(lam / (lam + epsilon)), atol=1e-4)
    np.testing.assert_allclose(zca.eigenvalues.numpy(), lam, rtol=1e-5, atol=1e-7)


def test_zca_matrices_against_numpy():
    x = correlated(d=12)
    zca = ZCA.fit(x, epsilon=0.05)
    mean, cov = numpy_stats(x)
    regularized = cov + 0.05 * np.eye(12)
    z = zca.matrix.numpy().astype(np.float64)
    np.testing.assert_allclose(zca.mean.numpy(), mean, atol=1e-6)
    np.testing.assert_allclose(z, z.T, atol=1e-6)                      # ZCA is symmetric
    np.testing.assert_allclose(z @ z, np.linalg.inv(regularized), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(z @ zca.inverse_matrix.numpy(), np.eye(12), atol=1e-5)


def test_zca_inverse_transform_restores():
    x = correlated()
    zca = ZCA.fit(x, epsilon=0.01)
    np.testing.assert_allclose(zca.inverse_transform(zca.transform(x)).numpy(), x.numpy(),
                               atol=1e-4, rtol=0)
    # Batched (..., D) and float64 inputs keep their shape and dtype.
    y = zca.transform(x[:6].double().view(2, 3, -1))
    assert y.shape == (2, 3, 16) and y.dtype == torch.float64


def test_receptive_field_and_pattern_identities():
    x = correlated(d=12)
    zca = ZCA.fit(x, epsilon=0.05)
    mean, cov = numpy_stats(x)
    weight = torch.randn(5, 12, generator=torch.Generator().manual_seed(1))
    # The unit's response to the whitened patch is the receptive field applied to the raw one.
    response = (zca.transform(x) @ weight.T).double().numpy()
    field = zca.receptive_field(weight).double().numpy()
    np.testing.assert_allclose((x.double().numpy() - mean) @ field.T, response, atol=1e-3)
    # The pattern is the patch whose whitened version is w ...
    np.testing.assert_allclose(zca.transform(zca.mean + zca.pattern(weight)).numpy(),
                               weight.numpy(), atol=1e-4, rtol=1e-4)
    # ... and the receptive field seen through the regularized covariance.
    np.testing.assert_allclose(zca.pattern(weight).double().numpy(),
                               field @ (cov + 0.05 * np.eye(12)), rtol=1e-4, atol=1e-4)
    assert zca.learned(weight) is weight


def test_zca_saved_and_loaded_is_identical():
    x = correlated()
    zca = ZCA.fit(x, epsilon=0.1)
    loaded = ZCA.from_tensors(load_tensors(save_tensors(zca.to_tensors())), zca.config())
    for name in ("mean", "eigenvalues", "eigenvectors", "matrix", "inverse_matrix"):
        assert torch.equal(getattr(loaded, name), getattr(zca, name)), name
    assert torch.equal(loaded.transform(x), zca.transform(x))
    assert all(t.dtype == torch.float32 for t in zca.to_tensors().values())


def test_zca_from_tensors_refuses_broken():
    tensors = ZCA.fit(correlated(d=4)).to_tensors()
    with pytest.raises(CheckpointError, match="missing tensor 'mean'"):
        ZCA.from_tensors({k: v for k, v in tensors.items() if k != "mean"}, {"epsilon": 0.1})
    with pytest.raises(CheckpointError, match="epsilon"):
        ZCA.from_tensors(tensors, {})
    with pytest.raises(CheckpointError) as info:
        ZCA.from_tensors({**tensors, "eigenvectors": torch.eye(3)}, {"epsilon": 0.1})
    assert one_line(info).startswith("ZCA: expected mean (D,)")
    with pytest.raises(CheckpointError, match=">= 0"):
        ZCA.from_tensors({**tensors, "eigenvalues": -torch.ones(4)}, {"epsilon": 0.1})
    with pytest.raises(CheckpointError, match="epsilon must be"):
        ZCA.from_tensors(tensors, {"epsilon": -1})


@pytest.mark.parametrize("patches,problem", [
    (torch.zeros(10), "expected shape"),
    (torch.zeros(1, 4), "expected shape"),
    (torch.zeros(5, 4, dtype=torch.int64), "floating"),
    (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), "NaN"),
    (np.zeros((5, 4)), "torch.Tensor"),
])
def test_zca_fit_refuses_bad_patches(patches, problem):
    with pytest.raises(DataError, match=problem) as info:
        ZCA.fit(patches)
    one_line(info)


def test_zca_refuses_bad_arguments():
    with pytest.raises(ValueError, match="epsilon"):
        ZCA.fit(correlated(d=4), epsilon=0)
    zca = ZCA.fit(correlated(d=4))
    with pytest.raises(DataError, match=r"\(\.\.\., 4\)"):
        zca.transform(torch.zeros(3, 5))
    with pytest.raises(DataError, match="weight"):
        zca.pattern(torch.zeros(2, 5))


# --- Whitening descriptions ---------------------------------------------------------------

def test_whitening_round_trips():
    zca = ZCA.fit(correlated(d=4), epsilon=0.2)
    for whitening in (Whitening(), Whitening("1/f", f0=0.3), Whitening("zca", zca=zca)):
        tensors = load_tensors(save_tensors(whitening.to_tensors())) if whitening.zca else {}
        back = Whitening.from_parts(whitening.config(), {**tensors, "other": torch.ones(1)})
        assert back.config() == whitening.config() and back.kind == whitening.kind
    assert Whitening("1/f", f0=0.3).config() == {"kind": "1/f", "f0": 0.3}
    assert Whitening("zca", zca=zca).config() == {"kind": "zca", "epsilon": 0.2, "scale": 1.0}
    assert set(Whitening("zca", zca=zca).to_tensors()) == {
        "zca.mean", "zca.eigenvalues", "zca.eigenvectors"}
    weight = torch.randn(3, 4)
    views = Whitening("zca", zca=zca).views(weight)
    assert set(views) == {"learned", "pattern", "receptive_field"}
    assert set(Whitening("1/f").views(torch.randn(3, 16))) == {"learned", "pattern",
                                                               "receptive_field"}
    assert set(Whitening().views(weight)) == {"learned"}


def test_whitening_refuses_inconsistent():
    with pytest.raises(DataError, match="kind must be one of"):
        Whitening("pca")
    with pytest.raises(DataError, match="exactly when"):
        Whitening("zca")
    with pytest.raises(DataError, match="exactly when"):
        Whitening("none", zca=ZCA.fit(correlated(d=4)))
    with pytest.raises(CheckpointError, match="unknown kind"):
        Whitening.from_parts({"kind": "pca"}, {})
    with pytest.raises(CheckpointError, match="missing tensor"):
        Whitening.from_parts({"kind": "zca", "epsilon": 0.1}, {})
    with pytest.raises(CheckpointError, match="f0"):
        Whitening.from_parts({"kind": "1/f", "f0": "x"}, {})


# --- The 1/f filter -----------------------------------------------------------------------

def numpy_whiten(image, f0=0.4):
    """R(f) = |f| exp(-(|f|/f0)^4), |f| in cycles per pixel, applied with numpy's full FFT."""
    h, w = image.shape
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    rho = np.hypot(fy, fx)
    return np.real(np.fft.ifft2(np.fft.fft2(image) * rho * np.exp(-(rho / f0) ** 4)))


@pytest.mark.parametrize("shape", [(37, 50), (64, 64), (48, 31)])
def test_one_over_f_matches_numpy(shape):
    image = np.random.default_rng(0).random(shape)
    out = one_over_f_whiten(torch.from_numpy(image).float())
    assert out.dtype == torch.float32 and out.shape == shape
    np.testing.assert_allclose(out.numpy(), numpy_whiten(image.astype(np.float32)),
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(one_over_f_whiten(image, f0=0.25).numpy(),
                               numpy_whiten(image, 0.25), atol=1e-6, rtol=0)


def test_one_over_f_is_olshausens_filter():
    """Olshausen's make-your-own-images recipe for an N x N image (frequencies in cycles per
    picture, filter centred with fftshift, f_0 = 0.4 N) is N times ours."""
    n = 32
    image = np.random.default_rng(1).random((n, n))
    fx, fy = np.meshgrid(np.arange(-n // 2, n // 2), np.arange(-n // 2, n // 2))
    rho = np.sqrt(fx * fx + fy * fy)
    filt = rho * np.exp(-(rho / (0.4 * n)) ** 4)
    theirs = np.real(np.fft.ifft2(np.fft.fft2(image) * np.fft.fftshift(filt)))
    np.testing.assert_allclose(n * one_over_f_whiten(image).double().numpy(), theirs,
                               atol=1e-5, rtol=0)


def radial_amplitude(image, bands):
    """Mean |FFT| of ``image`` in each radial band [low, high) of cycles per pixel."""
    h, w = image.shape
    rho = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    spectrum = np.abs(np.fft.fft2(image))
    return np.array([spectrum[(rho >= lo) & (rho < hi)].mean() for lo, hi in bands])


def test_whitened_pink_noise_is_flat():
    rng = np.random.default_rng(2)
    n = 256
    rho = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    spectrum = np.fft.fft2(rng.standard_normal((n, n))) / np.where(rho > 0, rho, np.inf)
    pink = np.real(np.fft.ifft2(spectrum))
    bands = [(f, f + 0.025) for f in np.arange(0.025, 0.2, 0.025)]
    before = radial_amplitude(pink, bands)
    after = radial_amplitude(one_over_f_whiten(pink).double().numpy(), bands)
    assert before.max() / before.min() > 4                # 1/f: falls 5-fold over the band
    assert after.max() / after.min() < 1.2                # whitened: flat within 20%


def test_unwhiten_restores_band_limited_image():
    rng = np.random.default_rng(3)
    h, w = 64, 80
    rho = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    band = (rho > 0.05) & (rho < 0.3)
    image = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((h, w))) * band))
    restored = one_over_f_unwhiten(one_over_f_whiten(image), eps=1e-3).double().numpy()
    assert np.abs(restored - image).max() < 1e-3 * np.abs(image).max()
    # Approximate only: the mean (DC) is lost.
    shifted = one_over_f_unwhiten(one_over_f_whiten(image + 5.0)).double().numpy()
    assert abs(shifted.mean()) < 1e-6


def test_one_over_f_batch_and_normalize():
    images = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(4))
    batch = one_over_f_whiten(images, normalize=True)
    for i in range(3):
        one = one_over_f_whiten(images[i], normalize=True)
        np.testing.assert_allclose(batch[i].numpy(), one.numpy(), atol=1e-6)
        assert abs(one.double().var(unbiased=False).item() - 1) < 1e-5
    assert torch.equal(one_over_f_whiten(torch.full((8, 8), 0.5), normalize=True),
                       torch.zeros(8, 8))


@pytest.mark.parametrize("image,problem", [
    (torch.zeros(10), "expected an image"),
    (torch.zeros(1, 10), "expected an image"),
    (torch.zeros(4, 4, dtype=torch.uint8), "floating"),
    (torch.tensor([[0.0, float("inf")], [0.0, 0.0]]), "NaN or infinite"),
    ([[0.0, 1.0], [1.0, 0.0]], "tensor or numpy array"),
])
def test_one_over_f_refuses_bad_images(image, problem):
    with pytest.raises(DataError, match=problem) as info:
        one_over_f_whiten(image)
    one_line(info)


def test_one_over_f_refuses_bad_parameters():
    with pytest.raises(ValueError, match="f0"):
        one_over_f_whiten(torch.zeros(4, 4), f0=0)
    with pytest.raises(ValueError, match="eps"):
        one_over_f_unwhiten(torch.zeros(4, 4), eps=float("nan"))


def test_one_over_f_views_predict_the_response_to_raw_pixels():
    """A unit reading a patch cut from a 1/f-whitened photograph responds to the raw pixels
    through its receptive-field view (drawn on a padded canvas) within a few percent (the
    canvas is periodic, the photograph is not); whitening the pattern view gives back the
    learned filter, less its mean."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(96, 96, generator=generator)
    weight = torch.randn(5, 196, generator=generator)
    views = Whitening("1/f").views(weight)
    patch = one_over_f_whiten(image)[40:54, 40:54]
    response = (weight.view(5, 14, 14) * patch).sum((1, 2))
    field = views["receptive_field"].view(5, 20, 20)
    predicted = (field * (image[37:57, 37:57] - image.mean())).sum((1, 2))
    torch.testing.assert_close(predicted, response, atol=0.05 * response.abs().max().item(),
                               rtol=0)
    back = one_over_f_whiten(views["pattern"].view(5, 20, 20))[:, 3:17, 3:17].flatten(1)
    centred = weight - weight.mean(1, keepdim=True)
    assert F.cosine_similarity(back - back.mean(1, keepdim=True), centred).min() > 0.9


def test_scaled_zca_views_keep_their_identities():
    """Inputs y = s Z (x - mean): a unit's response w . y is its receptive field applied to
    x - mean, and the inputs of mean + pattern are w itself; the scale survives saving."""
    generator = torch.Generator().manual_seed(4)
    patches = torch.randn(400, 16, generator=generator) @ torch.randn(16, 16, generator=generator)
    whitening = Whitening("zca", zca=ZCA.fit(patches, epsilon=0.1), scale=1.7)
    weight = torch.randn(3, 16, generator=generator)
    views = whitening.views(weight)
    torch.testing.assert_close(whitening.inputs(patches) @ weight.T,
                               (patches - whitening.zca.mean) @ views["receptive_field"].T,
                               atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(whitening.inputs(whitening.zca.mean + views["pattern"]), weight,
                               atol=1e-3, rtol=1e-4)
    again = Whitening.from_parts(whitening.config(), whitening.to_tensors())
    assert again.scale == 1.7 and torch.equal(again.inputs(patches), whitening.inputs(patches))

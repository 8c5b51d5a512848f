"""Model and visualization figures against direct formulas and enumerations."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featvis import RBM
from featvis.models.evaluation import (binarize, default_betas, linear_probe, log_likelihood,
                              log_partition_ais, log_partition_exact, method_agreement,
                              pseudo_likelihood, reconstruction_error)
from featvis.io.runfolder import layer_folder

from helpers import binary_states, random_rbm, run_cli


def enumerated_log_z(rbm):
    """log sum over every (v, h) of exp(-E(v, h)), written out."""
    W = rbm.weight.double().numpy()
    b, c = rbm.visible_bias.double().numpy(), rbm.hidden_bias.double().numpy()
    energies = [v @ b + h @ c + h @ W @ v
                for v in binary_states(rbm.n_visible).numpy()
                for h in binary_states(rbm.n_hidden).numpy()]
    top = max(energies)
    return top + math.log(sum(math.exp(x - top) for x in energies))


@pytest.mark.parametrize("shape", [(4, 6), (6, 4)])   # enumerates hidden, then visible side
def test_exact_log_partition_matches_enumeration(shape):
    rbm = random_rbm(*shape, seed=1)
    assert log_partition_exact(rbm) == pytest.approx(enumerated_log_z(rbm), abs=1e-9)


def test_exact_log_partition_refuses_large_layers():
    with pytest.raises(ValueError, match="refusing above 25 units"):
        log_partition_exact(RBM(30, 26))


@pytest.mark.parametrize("seed,scale", [(0, 0.5), (1, 1.0), (2, 1.5)])
def test_ais_is_within_005_nats_of_exact(seed, scale):
    rbm = random_rbm(12, 10, seed=seed, scale=scale)
    exact = log_partition_exact(rbm)
    estimate = log_partition_ais(rbm, n_runs=100, seed=seed)
    assert abs(estimate.log_z - exact) < 0.05
    assert estimate.low < estimate.log_z < estimate.high


def test_ais_with_base_rate_and_short_schedule():
    rbm = random_rbm(12, 10, seed=3, scale=1.0)
    data = (torch.rand(200, 12, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    estimate = log_partition_ais(rbm, n_runs=200, betas=np.linspace(0, 1, 3000),
                                 base_rate_images=data, seed=4)
    assert abs(estimate.log_z - log_partition_exact(rbm)) < 0.05


def test_default_betas():
    expected = np.concatenate([np.arange(500) * 1e-3, 0.5 + np.arange(4000) * 1e-4,
                               0.9 + np.arange(10_001) * 1e-5])
    np.testing.assert_allclose(default_betas(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs,message", [
    (dict(n_runs=1), "n_runs must be an integer >= 2"),
    (dict(betas=[0.0, 0.5, 0.5, 1.0]), "increase strictly"),
    (dict(betas=[0.1, 1.0]), "from 0 to 1"),
    (dict(base_rate_images=torch.zeros(5, 7)), "width 7"),
])
def test_ais_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        log_partition_ais(RBM(12, 3), **kwargs)


def test_log_likelihood_normalizes():
    """With the exact log Z, the probabilities of all 2^D inputs sum to one."""
    rbm = random_rbm(6, 4, seed=5, scale=1.0)
    log_z = log_partition_exact(rbm)
    every = binary_states(6).float()
    total = sum(math.exp(log_likelihood(rbm, v[None], log_z)) for v in every)
    assert total == pytest.approx(1.0, abs=1e-5)


def test_pseudo_likelihood_matches_the_formula_for_a_fixed_flip():
    rbm = random_rbm(5, 3, seed=6, scale=1.0)
    v = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0, 1.0]])
    flip = torch.randint(0, 5, (2,), generator=torch.Generator().manual_seed(9))
    got = pseudo_likelihood(rbm, v, seed=9)
    W = rbm.weight.double().numpy()
    b, c = rbm.visible_bias.double().numpy(), rbm.hidden_bias.double().numpy()
    free = lambda x: -(x @ b) - np.log1p(np.exp(W @ x + c)).sum()       # noqa: E731
    for n in range(2):
        x = v[n].double().numpy()
        y = x.copy()
        y[flip[n]] = 1 - y[flip[n]]
        # D * log p(x_i | x_-i) = D * log sigmoid(F(y) - F(x))
        expected = 5 * math.log(1 / (1 + math.exp(-(free(y) - free(x)))))
        assert got[n].item() == pytest.approx(expected, abs=1e-5)


def test_reconstruction_error_per_layer(small_dbn, mnist_small):
    x = mnist_small[0][:300]
    errors = reconstruction_error(small_dbn, x)
    h = x
    for d, rbm in enumerate(small_dbn.rbms):
        expected = ((rbm.visible_probs(rbm.hidden_probs(h)) - h) ** 2).sum(1).mean().item()
        assert errors[d] == pytest.approx(expected, rel=1e-5)
        h = rbm.hidden_probs(h)


def test_linear_probe_separable_features_reach_100_percent():
    from featvis import DBN

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (300,), generator=g)
    centres = torch.tensor([[0.9, 0.1, 0.1, 0.1], [0.1, 0.9, 0.1, 0.1], [0.1, 0.1, 0.9, 0.9]])
    images = (centres[labels] + 0.05 * torch.rand(300, 4, generator=g)).clamp(0, 1)
    dbn = DBN([4, 3])
    assert linear_probe(dbn, (images[:200], labels[:200]), (images[200:], labels[200:]), 0) == 1.0


def test_linear_probe_on_mnist_features(small_dbn, mnist_small):
    from featvis import load_mnist

    test = load_mnist("test")
    train = (mnist_small[0][:1000], mnist_small[1][:1000])
    test = (test[0][:500], test[1][:500])
    pixels = linear_probe(small_dbn, train, test, 0, max_iter=50)
    layer1 = linear_probe(small_dbn, train, test, 1, max_iter=50)
    assert pixels > 0.8 and layer1 > 0.7     # far above chance (0.1) on 1,000 examples
    with pytest.raises(ValueError, match="labels"):
        linear_probe(small_dbn, (train[0], train[1][:5]), test, 1)


def test_method_agreement_is_centred_cosine():
    a = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
    b = torch.tensor([[2.0, 4.0, 6.5], [5.0, 4.0, 5.0]])
    got = method_agreement({"x": a, "y": b, "z": -a})
    assert set(got) == {"x~y", "x~z", "y~z"}
    ca, cb = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    torch.testing.assert_close(got["x~y"], F.cosine_similarity(ca, cb, dim=1))
    torch.testing.assert_close(got["x~z"], torch.tensor([-1.0, -1.0]))


def test_evaluate_cli_writes_json_and_gallery(tmp_path, capsys, small_dbn, run_dir,
                                              tiny_mnist_dir):
    import shutil

    from featvis import load_mnist

    model = tmp_path / "m.safetensors"
    small_dbn.save(model)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    out = tmp_path / "eval.json"
    code, printed, _ = run_cli(capsys, "evaluate", model, "--data", tiny_mnist_dir,
                               "--ais-runs", 2, "--json", out, "--run", run, "--quiet")
    assert code == 0 and "probe accuracy" in printed and "AIS log Z" in printed
    result = json.loads(out.read_text())
    assert [r["layer"] for r in result["layers"]] == [0, 1, 2, 3]
    assert result["layers"][0]["probe_accuracy"] > 0.6      # 300 training images
    test = load_mnist("test", tiny_mnist_dir)[0]
    assert [r["reconstruction_error"] for r in result["layers"][1:]] == pytest.approx(
        reconstruction_error(small_dbn, test))
    rbm1 = result["rbm1"]
    assert rbm1["log_z_low"] is None or rbm1["log_z_low"] <= rbm1["log_z"]   # None: -inf
    assert rbm1["log_z"] <= rbm1["log_z_high"]
    assert rbm1["test_log_likelihood"] == pytest.approx(
        log_likelihood(small_dbn.rbms[0], binarize(test, 0), rbm1["log_z"]))
    assert rbm1["pseudo_likelihood"] == pytest.approx(
        pseudo_likelihood(small_dbn.rbms[0], binarize(test, 0)).mean().item())
    assert json.loads((run / "evaluation.json").read_text()) == result
    assert "Model figures" in (run / "index.html").read_text()
    assert "Linear-probe test accuracy" in (run / layer_folder(2) / "index.html").read_text()
    code, _, err = run_cli(capsys, "evaluate", model, "--ais-runs", "1", "--quiet")
    assert code == 2 and "AIS needs at least 2 runs" in err

"""Convolutional RBMs with probabilistic max-pooling and the convolutional DBN, checked
against independent computations: brute-force enumeration of block states and hidden
configurations, a dense RBM with the explicit (Toeplitz) weight matrix, explicit loops."""

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from featvis import RBM, DataError
from featvis.figures import locality, random_locality
from featvis.models.conv import ConvDBN, ConvRBM, block_softmax, log_block_softmax, sample_blocks


def random_crbm(channels, filters, size, pool, seed=0, scale=1.0, **kwargs):
    """An untrained ConvRBM with N(0, scale^2) weights and N(0, 1) biases."""
    g = torch.Generator().manual_seed(seed)
    rbm = ConvRBM(channels, filters, size, pool, **kwargs)
    with torch.no_grad():
        rbm.weight.copy_(scale * torch.randn(rbm.weight.shape, generator=g))
        rbm.hidden_bias.copy_(torch.randn(filters, generator=g))
        rbm.visible_bias.copy_(torch.randn(channels, generator=g))
    return rbm


def block_states_by_enumeration(logits, pool):
    """Per block, P(state) for its C^2 detection units and "off", as exp(logit) / Z in float64,
    by plain loops: ``(det (N, K, H, W), pool (N, K, H / C, W / C))``."""
    x = logits.double()
    n, k, h, w = x.shape
    det, pooled = torch.zeros_like(x), torch.zeros(n, k, h // pool, w // pool,
                                                  dtype=torch.float64)
    for i, j, bi, bj in itertools.product(range(n), range(k), range(h // pool), range(w // pool)):
        rows = slice(bi * pool, (bi + 1) * pool)
        cols = slice(bj * pool, (bj + 1) * pool)
        weights = [math.exp(v) for v in x[i, j, rows, cols].flatten().tolist()]
        z = 1.0 + sum(weights)
        det[i, j, rows, cols] = torch.tensor(weights, dtype=torch.float64).view(pool, pool) / z
        pooled[i, j, bi, bj] = sum(weights) / z
    return det, pooled


def dense_weight(weight, height, width):
    """The RBM weight matrix ``(K * Hd * Wd, C * H * W)`` of a convolution, entry by entry."""
    k, c, w, _ = weight.shape
    hd, wd = height - w + 1, width - w + 1
    dense = torch.zeros(k, hd, wd, c, height, width, dtype=weight.dtype)
    for f, i, j, ch, a, b in itertools.product(range(k), range(hd), range(wd), range(c),
                                               range(w), range(w)):
        dense[f, i, j, ch, i + a, j + b] = weight[f, ch, a, b]
    return dense.reshape(k * hd * wd, c * height * width)


def tie(dense_stats, shape, height, width):
    """Sum a dense ``(hidden, visible)`` statistic over the positions that share each filter
    entry: the convolution's statistic ``(K, C, w, w)``."""
    k, c, w, _ = shape
    hd, wd = height - w + 1, width - w + 1
    s = dense_stats.reshape(k, hd, wd, c, height, width)
    out = torch.zeros(shape, dtype=dense_stats.dtype)
    for f, ch, a, b in itertools.product(range(k), range(c), range(w), range(w)):
        out[f, ch, a, b] = sum(s[f, i, j, ch, i + a, j + b] for i in range(hd)
                               for j in range(wd))
    return out


def dense_twin(crbm, height, width):
    """The featvis RBM with ``crbm``'s tied weights and biases (pool 1), in float64."""
    k, c = crbm.filters, crbm.channels
    hd, wd = height - crbm.filter_size + 1, width - crbm.filter_size + 1
    rbm = RBM(c * height * width, k * hd * wd, visible=crbm.visible,
              sigma=crbm.sigma).double()
    with torch.no_grad():
        rbm.weight.copy_(dense_weight(crbm.weight.double(), height, width))
        rbm.hidden_bias.copy_(crbm.hidden_bias.double().repeat_interleave(hd * wd))
        rbm.visible_bias.copy_(crbm.visible_bias.double().repeat_interleave(height * width))
    return rbm


# -- probabilistic max-pooling ---------------------------------------------------------------
@pytest.mark.parametrize("pool", [1, 2, 3])
def test_block_softmax_matches_enumeration(pool):
    g = torch.Generator().manual_seed(pool)
    logits = 3 * torch.randn(2, 3, 2 * pool, 3 * pool, generator=g)
    top_down = torch.randn(2, 3, 2, 3, generator=g)
    det, pooled = block_softmax(logits, pool)
    want_det, want_pool = block_states_by_enumeration(logits, pool)
    torch.testing.assert_close(det.double(), want_det, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pooled.double(), want_pool, atol=1e-6, rtol=1e-5)
    log_det, log_pool = log_block_softmax(logits, pool)
    torch.testing.assert_close(log_det.double(), want_det.log(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(log_pool.double(), want_pool.log(), atol=1e-5, rtol=1e-5)
    # P(pool on) is the block's total, and the top-down input shifts every on state.
    torch.testing.assert_close(pooled, F.avg_pool2d(det, pool, divisor_override=1))
    det, pooled = block_softmax(logits, pool, top_down)
    shifted = logits + top_down.repeat_interleave(pool, 2).repeat_interleave(pool, 3)
    want_det, want_pool = block_states_by_enumeration(shifted, pool)
    torch.testing.assert_close(det.double(), want_det, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pooled.double(), want_pool, atol=1e-6, rtol=1e-5)


def test_block_softmax_is_stable_for_huge_logits():
    # Blocks of 2x2: one dominant unit; 5 among very negative ones; a tie; 2e3 against 1e3.
    logits = torch.tensor([[[[1e3, -1e3, 5.0, -1e3],
                             [-1e3, -1e3, -1e3, -1e3],
                             [1e3, 1e3, 2e3, 1e3],
                             [-1e3, -1e3, 1e3, 1e3]]]])
    det, pooled = block_softmax(logits, 2)
    assert torch.isfinite(det).all() and torch.isfinite(pooled).all()
    torch.testing.assert_close(det[0, 0, :2, :2], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    # 5 against the off state's 0, the others contribute nothing.
    p = 1 / (1 + math.exp(-5.0))
    torch.testing.assert_close(det[0, 0, :2, 2:], torch.tensor([[p, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(det[0, 0, 2:, :2], torch.tensor([[0.5, 0.5], [0.0, 0.0]]))
    torch.testing.assert_close(det[0, 0, 2:, 2:], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    torch.testing.assert_close(pooled, torch.tensor([[[[1.0, p], [1.0, 1.0]]]]))
    pooled_huge = pooled
    det, pooled = block_softmax(torch.full((1, 1, 2, 2), -1e3), 2)
    assert det.abs().max() == 0 and pooled.item() == 0
    # Their logs stay finite where the probabilities are 0: log 4 - 1e3 for the pool unit.
    log_det, log_pool = log_block_softmax(torch.full((1, 1, 2, 2), -1e3), 2)
    torch.testing.assert_close(log_det, torch.full((1, 1, 2, 2), -1e3))
    torch.testing.assert_close(log_pool, torch.full((1, 1, 1, 1), math.log(4) - 1e3))
    log_det, log_pool = log_block_softmax(logits, 2)
    torch.testing.assert_close(log_pool.exp(), pooled_huge)
    assert log_det.isfinite().all()
    # Conditioned on the pool unit, equal logits share the block evenly at any magnitude.
    for value in (-1e3, 1e3):
        det, pooled = block_softmax(torch.full((1, 1, 2, 2), value), 2,
                                    pool_state=torch.ones(1, 1, 1, 1))
        torch.testing.assert_close(det, torch.full((1, 1, 2, 2), 0.25))
        assert pooled.item() == 1


def test_samples_have_at_most_one_unit_per_block_and_follow_the_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 4, 4, generator=g)
    det, pooled = block_softmax(logits, 2)
    n = 20000
    h, p = sample_blocks(det.expand(n, -1, -1, -1), 2, torch.Generator().manual_seed(1))
    per_block = F.avg_pool2d(h, 2, divisor_override=1)
    assert set(h.unique().tolist()) <= {0.0, 1.0} and per_block.max() == 1
    assert torch.equal(p, per_block)                   # pool on iff one unit is
    # Each state's frequency within 4 standard errors of its probability.
    tolerance = 4 * math.sqrt(0.25 / n)
    torch.testing.assert_close(h.mean(0), det[0], atol=tolerance, rtol=0)
    torch.testing.assert_close(p.mean(0), pooled[0], atol=tolerance, rtol=0)
    again, _ = sample_blocks(det.expand(n, -1, -1, -1), 2, torch.Generator().manual_seed(1))
    assert torch.equal(h, again)


def test_sampling_conditioned_on_the_pool_state():
    g = torch.Generator().manual_seed(2)
    n = 20000
    logits = (3 * torch.randn(1, 2, 4, 6, generator=g)).expand(n, -1, -1, -1)
    state = (torch.rand(1, 2, 2, 3, generator=g) < 0.5).float()
    state[:, 0, 0, 0], state[:, 1, 0, 0] = 1.0, 0.0
    state = state.expand(n, -1, -1, -1)
    det, pooled = block_softmax(logits, 2, pool_state=state)
    assert torch.equal(pooled, state)
    h, p = sample_blocks(det, 2, torch.Generator().manual_seed(3), pool_state=state)
    per_block = F.avg_pool2d(h, 2, divisor_override=1)
    assert torch.equal(per_block, state) and torch.equal(p, state)   # off: none; on: one
    # Within a block clamped on, the units follow the softmax of their logits alone.
    block = logits[0, 0, :2, :2].flatten().double()
    want = torch.softmax(block, 0)
    got = h[:, 0, :2, :2].reshape(n, 4).mean(0).double()
    torch.testing.assert_close(got, want, atol=4 * math.sqrt(0.25 / n), rtol=0)


def test_block_softmax_is_differentiable():
    """Maximization differentiates through the pooling: exact gradients, the stabilizing
    shift included."""
    g = torch.Generator().manual_seed(3)
    logits = (2 * torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64)).requires_grad_()
    top_down = torch.randn(1, 2, 2, 2, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, t: block_softmax(x, 2, t), (logits, top_down))


def test_block_softmax_refuses_maps_that_do_not_split_into_blocks():
    with pytest.raises(ValueError, match="do not split into 2x2 blocks"):
        block_softmax(torch.zeros(1, 1, 3, 4), 2)
    with pytest.raises(ValueError, match=r"top_down must have shape \(1, 1, 2, 2\)"):
        block_softmax(torch.zeros(1, 1, 4, 4), 2, top_down=torch.zeros(1, 1, 4, 4))


# -- one layer against a dense RBM and enumeration -------------------------------------------
@pytest.mark.parametrize("visible,sigma", [("binary", 1.0), ("gaussian", 0.7)])
def test_pool_1_statistics_equal_the_dense_rbm(visible, sigma):
    height, width = 6, 5
    crbm = random_crbm(2, 3, 3, 1, seed=4, scale=0.5, visible=visible, sigma=sigma)
    dense = dense_twin(crbm, height, width)
    g = torch.Generator().manual_seed(5)
    v = torch.rand(4, 2, height, width, generator=g)
    flat = v.reshape(4, -1).double()
    # Positive phase: the same detection probabilities and statistics.
    pos = crbm.hidden_probs(v)
    torch.testing.assert_close(pos.reshape(4, -1).double(), dense.hidden_probs(flat),
                               atol=1e-6, rtol=1e-5)
    h = (torch.rand(pos.shape, generator=g) < pos).float()
    recon = crbm.visible_mean(h)
    torch.testing.assert_close(recon.reshape(4, -1).double(),
                               dense.visible_mean(h.reshape(4, -1).double()),
                               atol=1e-5, rtol=1e-5)
    neg = crbm.hidden_probs(recon)
    count = 4 * (height - 2) * (width - 2)              # images x detection positions
    for x, probs in ((v, pos), (recon, neg)):
        stats = crbm.statistics(x, probs)
        dense_x = x.reshape(4, -1).double() / sigma
        dense_h = dense.hidden_probs(x.reshape(4, -1).double())
        want_w = tie(dense_h.t() @ dense_x, crbm.weight.shape, height, width)
        torch.testing.assert_close(stats["weight"].double() * count, want_w, atol=1e-4,
                                   rtol=1e-5)
        torch.testing.assert_close(stats["hidden_bias"].double() * count,
                                   dense_h.reshape(4, 3, -1).sum((0, 2)), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(stats["visible_bias"].double() * count,
                                   (dense_x / sigma).reshape(4, 2, -1).sum((0, 2)),
                                   atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(crbm.free_energy(v).double(), dense.free_energy(flat),
                               atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("visible,sigma", [("binary", 1.0), ("gaussian", 0.8)])
def test_free_energy_matches_enumeration_with_pooling(visible, sigma):
    # 3x4 inputs, 2x2 filters: detection maps of 2x3 cropped to one 2x2 block per filter,
    # so the model sees the top-left 3x3 (the last column must not matter).
    crbm = random_crbm(1, 2, 2, 2, seed=6, visible=visible, sigma=sigma)
    assert crbm.map_shapes(3, 4) == {"visible": (3, 3), "detection": (2, 2), "pool": (1, 1)}
    dense = dense_twin(crbm, 3, 3)
    W, c, b = dense.weight, dense.hidden_bias, dense.visible_bias
    # A filter's block: off, or one of its 4 units on.
    states = [torch.zeros(4, dtype=torch.float64)] + list(torch.eye(4, dtype=torch.float64))
    g = torch.Generator().manual_seed(7)
    v = (torch.rand(5, 1, 3, 4, generator=g) < 0.5).float()
    if visible == "gaussian":
        v = torch.randn(5, 1, 3, 4, generator=g)
    for row in range(5):
        x = v[row, 0, :, :3].flatten().double()
        energies = []
        for first, second in itertools.product(states, states):
            h = torch.cat([first, second])
            if visible == "gaussian":
                e = (x - b).square().sum() / (2 * sigma ** 2) - h @ c - h @ W @ (x / sigma)
            else:
                e = -(x @ b) - h @ c - h @ W @ x
            energies.append(-e)
        want = -torch.logsumexp(torch.stack(energies), 0)
        got = crbm.free_energy(v[row:row + 1])
        assert got.item() == pytest.approx(want.item(), abs=1e-4, rel=1e-5)
    changed = v.clone()
    changed[:, :, :, 3] = 1 - changed[:, :, :, 3]
    torch.testing.assert_close(crbm.free_energy(changed), crbm.free_energy(v))
    torch.testing.assert_close(crbm.pool_probs(changed), crbm.pool_probs(v))


def test_map_shapes_crop_to_whole_blocks():
    crbm = ConvRBM(1, 4, 8, 2)
    assert crbm.map_shapes(28, 28) == {"visible": (27, 27), "detection": (20, 20),
                                       "pool": (10, 10)}
    x = torch.rand(2, 1, 28, 28)
    det, pooled = crbm.probs(x)
    assert det.shape == (2, 4, 20, 20) and pooled.shape == (2, 4, 10, 10)
    with pytest.raises(DataError, match="too small for 8x8 filters and 2x2 pooling"):
        crbm.probs(torch.rand(1, 1, 8, 30))
    with pytest.raises(DataError, match=r"expected inputs \(N, 1, H, W\)"):
        crbm.probs(torch.rand(1, 2, 28, 28))


def test_visible_mean_is_the_transposed_convolution():
    crbm = random_crbm(3, 4, 3, 2, seed=8, visible="gaussian", sigma=0.5)
    h = (torch.rand(2, 4, 4, 6) < 0.2).float()
    want = 0.5 * F.conv_transpose2d(h, crbm.weight) + crbm.visible_bias[:, None, None]
    torch.testing.assert_close(crbm.visible_mean(h), want)
    padded = crbm.visible_mean(h, (8, 9))
    torch.testing.assert_close(padded[:, :, :6, :8], want)
    torch.testing.assert_close(padded[:, :, 6:, :], crbm.visible_bias[:, None, None]
                               .expand(2, 3, 2, 9))


# -- training --------------------------------------------------------------------------------
MNIST_RECIPE = dict(epochs=5, batch_size=100, lr=0.5, sparsity_target=0.01, sparsity_cost=1.0,
                    weight_decay=1e-3, momentum=0.5, final_momentum=0.9, momentum_switch=3)


@pytest.fixture(scope="module")
def mnist_crbm(mnist_small):
    """24 filters of 8x8, pool 2, on 2,000 MNIST digits (about 6 s on one thread)."""
    images = mnist_small[0][:2000].view(-1, 1, 28, 28)
    return ConvRBM(1, 24, 8, 2).fit(images, seed=0, progress=False, **MNIST_RECIPE)


def test_mnist_first_layer_bases_are_local(mnist_crbm):
    errors = [e["error_per_case"] for e in mnist_crbm.history]
    assert len(errors) == 5 and errors[-1] < 0.5 * errors[0]
    assert mnist_crbm.history[-1]["mean_activation"] < 0.03        # sparse
    bases = mnist_crbm.weight[:, 0]
    chance = random_locality(tuple(bases.shape))
    assert locality(bases) >= chance + 0.2
    fresh = ConvRBM(1, 24, 8, 2, seed=0).weight[:, 0]             # untrained: no locality
    assert locality(fresh) < chance + 0.2


def test_fit_is_seeded_and_anneals_sigma():
    g = torch.Generator().manual_seed(9)
    images = torch.randn(60, 2, 9, 9, generator=g)
    kwargs = dict(epochs=3, batch_size=20, lr=0.01, sigma=0.6, sigma_decay=0.5,
                  sigma_floor=0.2, progress=False)
    a = ConvRBM(2, 3, 4, 2, visible="gaussian").fit(images, seed=1, **kwargs)
    b = ConvRBM(2, 3, 4, 2, visible="gaussian", seed=5).fit(images, seed=1, **kwargs)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.visible_bias, b.visible_bias)
    assert [e["sigma"] for e in a.history] == pytest.approx([0.6, 0.3, 0.2])
    assert a.sigma == pytest.approx(0.2)
    with pytest.raises(ValueError, match="persistent CD is not supported"):
        ConvRBM(2, 3, 4, 2).fit(images.sigmoid(), persistent=True, progress=False)
    with pytest.raises(DataError, match=r"values must lie in \[0, 1\]"):
        ConvRBM(2, 3, 4, 2).fit(images, progress=False)


# -- the stack -------------------------------------------------------------------------------
LAYERS = [dict(filters=6, filter_size=5, pool=2), dict(filters=4, filter_size=3, pool=2)]


@pytest.fixture(scope="module")
def small_cdbn(mnist_small):
    return ConvDBN(LAYERS).fit(mnist_small[0][:300], epochs=1, seed=2, progress=False)


def test_greedy_training_and_up_pass(small_cdbn, mnist_small):
    x = mnist_small[0][:300]
    assert small_cdbn.input_shape == (1, 28, 28)
    assert small_cdbn.input_norm == pytest.approx(x.norm(dim=1).mean().item(), rel=1e-5)
    # Layer 2 is a ConvRBM trained on layer 1's pooling probabilities.
    first = ConvRBM(1, 6, 5, 2).fit(x.view(-1, 1, 28, 28), epochs=1, seed=3, progress=False)
    assert torch.equal(first.weight, small_cdbn.rbms[0].weight)
    pooled = small_cdbn.transform(x[:20], 1)
    torch.testing.assert_close(pooled, first.pool_probs(x[:20].view(-1, 1, 28, 28)))
    assert pooled.shape == (20, 6, 12, 12)
    det2 = small_cdbn.detection(x[:20].view(-1, 1, 28, 28), 2)
    assert det2.shape == (20, 4, 10, 10)
    torch.testing.assert_close(small_cdbn(x[:20]), F.avg_pool2d(det2, 2, divisor_override=1))
    assert [len(h) for h in small_cdbn.history] == [1, 1]
    with pytest.raises(ValueError, match=r"depth must be a layer in 1..2"):
        small_cdbn.transform(x[:2], 3)
    # The up-pass is differentiable with respect to the input (activation maximization).
    picture = x[:2].view(-1, 1, 28, 28).clone().requires_grad_()
    small_cdbn.transform(picture, 2)[:, 1].max().backward()
    assert picture.grad is not None and picture.grad.abs().sum() > 0


def test_checkpoint_round_trip(small_cdbn, tmp_path, mnist_small):
    path = tmp_path / "cdbn.safetensors"
    small_cdbn.save(path)
    loaded = ConvDBN.load(path)
    assert loaded.config == small_cdbn.config and loaded.input_shape == (1, 28, 28)
    assert loaded.input_norm == small_cdbn.input_norm
    assert loaded.history == small_cdbn.history
    x = mnist_small[0][:5]
    assert torch.equal(loaded.transform(x, 2), small_cdbn.transform(x, 2))
    rebuilt = ConvDBN.from_config(small_cdbn.config)
    assert [r.weight.shape for r in rebuilt.rbms] == [r.weight.shape for r in small_cdbn.rbms]


@pytest.mark.parametrize("layers,problem", [
    ([], "1 to 16 layers"), ([dict(filters=4, filter_size=3)], "exactly filters"),
    ([dict(filters=0, filter_size=3, pool=2)], "layer 1 filters must be a positive integer"),
    ("abc", "must be a list of dicts")])
def test_layer_specs_are_checked(layers, problem):
    with pytest.raises(ValueError, match=problem):
        ConvDBN(layers)


def test_bases_combine_the_layer_below(small_cdbn):
    assert torch.equal(small_cdbn.bases(1), small_cdbn.rbms[0].weight)
    first, second = small_cdbn.rbms[0].weight, small_cdbn.rbms[1].weight.clamp_min(0)
    # Each positive second-layer weight spreads over its 2x2 block of first-layer positions,
    # where it places a copy of the first-layer basis.
    want = torch.zeros(4, 1, 3 * 2 + 5 - 1, 3 * 2 + 5 - 1)
    for k2, k1, a, b, da, db in itertools.product(range(4), range(6), range(3), range(3),
                                                  range(2), range(2)):
        y, x = 2 * a + da, 2 * b + db
        want[k2, :, y:y + 5, x:x + 5] += second[k2, k1, a, b] / 4 * first[k1]
    torch.testing.assert_close(small_cdbn.bases(2), want, atol=1e-5, rtol=1e-5)


def test_sampling_a_first_layer_unit():
    dbn = ConvDBN([dict(filters=3, filter_size=4, pool=2)], input_shape=(1, 9, 9))
    rbm = dbn.rbms[0]
    with torch.no_grad():
        rbm.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
        rbm.visible_bias.fill_(-0.5)
    # Detection maps 6x6, pool 3x3; the centre block (1, 1) covers detection rows 2-3.
    samples = dbn.sample(1, [2, 0], n_samples=40, seed=1)
    assert samples.shape == (2, 40, 1, 9, 9)
    assert torch.equal(samples, dbn.sample(1, [2, 0], n_samples=40, seed=1))
    for row, unit in enumerate([2, 0]):
        candidates = []
        for dy, dx in itertools.product(range(2), range(2)):
            h = torch.zeros(1, 3, 6, 6)
            h[0, unit, 2 + dy, 2 + dx] = 1
            candidates.append(torch.sigmoid(F.conv_transpose2d(h, rbm.weight) - 0.5))
        candidates = torch.cat(candidates)[:, :, :9, :9]
        # Every sample is one of the four placements of the filter in the centre block.
        match = (samples[row][:, None] - candidates[None]).abs().flatten(2).amax(2) < 1e-5
        assert match.sum(1).eq(1).all() and match.any(0).sum() >= 2
        # Mean field: the clamped block's four units each on with probability 1/4.
        h = torch.zeros(1, 3, 6, 6)
        h[0, unit, 2:4, 2:4] = 0.25
        want = torch.sigmoid(F.conv_transpose2d(h, rbm.weight) - 0.5)
        mean = dbn.sample(1, [unit], n_samples=3, mean_field=True)[0]
        torch.testing.assert_close(mean, want.expand(3, -1, -1, -1))
    with pytest.raises(ValueError, match="units must be a non-empty list of filters in 0..2"):
        dbn.sample(1, [3])


def test_mean_field_sampling_through_two_layers(small_cdbn):
    """The down-pass by hand: the clamped block's units share probability evenly, layer 1's
    blocks get top-down input b2 + W2 (*) h2 on top of their biases, v its visible mean."""
    first, second = small_cdbn.rbms
    got = small_cdbn.sample(2, [1, 3], n_samples=2, mean_field=True)
    assert got.shape == (2, 2, 1, 28, 28) and torch.equal(got[:, 0], got[:, 1])
    for row, unit in enumerate([1, 3]):
        h2 = torch.zeros(1, 4, 10, 10)
        h2[0, unit, 4:6, 4:6] = 0.25                   # centre block (4, 4) of the 5x5 pools
        top = F.conv_transpose2d(h2, second.weight) + second.visible_bias[:, None, None]
        logits = first.hidden_bias[:, None, None].expand(1, 6, 24, 24)
        h1, _ = block_states_by_enumeration(
            logits + top.repeat_interleave(2, 2).repeat_interleave(2, 3), 2)
        v = torch.sigmoid(F.conv_transpose2d(h1.float(), first.weight)
                          + first.visible_bias[:, None, None])
        torch.testing.assert_close(got[row, 0, :, :, :], v[0, :, :28, :28], atol=1e-5,
                                   rtol=1e-4)


def test_contrast_is_the_mean_field_on_minus_off(small_cdbn):
    on, off = (small_cdbn.sample(2, [1, 3], n_samples=1, mean_field=True, unit_on=state)[:, 0]
               for state in (True, False))
    torch.testing.assert_close(small_cdbn.contrast(2, [1, 3]), on - off, atol=1e-6, rtol=1e-4)


def test_contrast_below_a_sparse_gaussian_layer_is_not_lost_to_rounding():
    """First-layer biases of -40: both means are the visible bias plus e^-40 terms, equal in
    float32; the contrast is still the change they carry, as float64 computes it with the
    (cancelling) visible bias left out."""
    dbn = ConvDBN([dict(filters=3, filter_size=3, pool=2), dict(filters=2, filter_size=2,
                                                                  pool=2)],
                  visible="gaussian", sigma=0.5, input_shape=(1, 10, 10), seed=3)
    with torch.no_grad():
        dbn.rbms[0].hidden_bias.fill_(-40.0)
        dbn.rbms[0].visible_bias.fill_(0.1)
        dbn.rbms[1].weight.mul_(100)      # a top-down input of order 1, as a trained layer's
    on, off = (dbn.sample(2, None, 1, mean_field=True, unit_on=state) for state in (True, False))
    assert torch.equal(on, off)                          # the plain difference: exactly 0
    reference = copy.deepcopy(dbn).double()
    with torch.no_grad():
        reference.rbms[0].visible_bias.zero_()
    on, off = (reference.sample(2, None, 1, mean_field=True, unit_on=state)[:, 0]
               for state in (True, False))
    contrast = dbn.contrast(2)
    assert contrast.abs().amax() > 0
    scale = (on - off).abs().amax().item()
    torch.testing.assert_close(contrast.double(), on - off, atol=1e-4 * scale, rtol=0)


def test_a_binary_contrast_stays_finite_for_huge_changes():
    """Weights of -150: sigmoid(y) underflows where e^(y - x) overflows; the contrast is the
    plain difference of the means, as float64 computes it, not NaN."""
    dbn = ConvDBN([dict(filters=2, filter_size=3, pool=2)], input_shape=(1, 8, 8), seed=0)
    with torch.no_grad():
        dbn.rbms[0].weight.fill_(-150.0)
        dbn.rbms[0].visible_bias.fill_(3.0)
    on, off = (copy.deepcopy(dbn).double().sample(1, None, 1, mean_field=True,
                                                   unit_on=state)[:, 0]
               for state in (True, False))
    contrast = dbn.contrast(1)
    assert contrast.isfinite().all()
    torch.testing.assert_close(contrast.double(), on - off, atol=1e-6, rtol=1e-5)


def test_a_given_sigma_replaces_the_default_schedule():
    from featvis.models.conv import conv_recipe

    recipe = conv_recipe("gaussian", sigma=0.2).for_layer(1)
    assert (recipe.sigma, recipe.sigma_decay, recipe.sigma_floor) == (0.2, 1.0, 0.1)
    assert conv_recipe("gaussian").for_layer(1).sigma == 0.63


def test_resume_continues_the_same_run(mnist_small, tmp_path):
    """Stopped after layer 1 and its checkpoint, resumed from the file: the result is the
    uninterrupted run's; another recipe is refused. featvis.load reads the checkpoint."""
    import featvis
    from featvis.models.checkpoint import save_model

    x = mnist_small[0][:200]
    whole = ConvDBN(LAYERS).fit(x, epochs=1, seed=4, progress=False)
    path = tmp_path / "cdbn.safetensors"

    def save_then_stop(model, layer):
        model.save(path)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ConvDBN(LAYERS).fit(x, epochs=1, seed=4, progress=False, on_layer=save_then_stop)
    stopped = featvis.load(path)
    assert type(stopped) is ConvDBN and stopped.trained_layers == 1
    assert stopped.input_shape == (1, 28, 28)
    with pytest.raises(ValueError, match=r"resume: layers 1..1 were trained with another "
                                         r"recipe \(lr 0.5, not 0.1\)"):
        stopped.fit(x, epochs=1, seed=4, lr=0.1, progress=False, resume=True)
    epochs = []
    stopped.fit(x, epochs=1, seed=4, progress=False, resume=True,
                on_epoch=lambda d, entry: epochs.append(d))
    assert epochs == [2] and stopped.trained_layers == 2
    for a, b in zip(stopped.rbms, whole.rbms):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.hidden_bias, b.hidden_bias)
    assert stopped.history == whole.history
    save_model(whole, path)                          # featvis.model/1, kind "cdbn"
    loaded = featvis.load(path)
    assert loaded.config == whole.config and loaded.trained_layers == 2
    assert torch.equal(loaded.transform(x[:5], 2), whole.transform(x[:5], 2))

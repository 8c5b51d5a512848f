"""Every unit's statistics against direct computation over the scores of an explicit
forward pass: top and bottom examples, histogram counts by the reported edges, firing
frequency, mean and standard deviation, band members by their hash, per-class means and
tops; the merge laws on random splits; a streamed dataset gives the tensor's statistics."""

import bisect

import pytest
import torch
from torch import nn

from featvis.methods.statistics import RunningStatistics, band_hash, unit_statistics


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 6)).eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(300, 1, 8, 8, generator=g)
    labels = torch.randint(0, 3, (300,), generator=g)
    with torch.no_grad():
        maps = model()[0](x).flatten(2)                       # (N, 4, 36)
        dense = model()(x)
    conv, flat = maps.max(2)                                  # a channel: max over positions
    where = torch.stack([flat // 6, flat % 6], -1)            # its first maximum's row, column
    return x, labels, {"0": conv, "3": dense}, {"0": where, "3": None}


def _order(values, descending):
    """Indices by value (descending or ascending), ties to the lower index."""
    index = torch.arange(len(values))
    key = sorted(zip(values.tolist(), index.tolist()),
                 key=lambda p: ((-p[0]) if descending else p[0], p[1]))
    return torch.tensor([i for _, i in key])


@pytest.mark.parametrize("layer", ["0", "3"])
def test_every_statistic_against_direct_computation(data, layer):
    x, labels, scores, where = data
    s = scores[layer]
    st = unit_statistics(model(), x, layer, k=5, bins=7, bands=3, per_band=4,
                         threshold=0.1, labels=labels, seed=3, batch_size=64)
    assert st.count == 300 and st.units.tolist() == list(range(s.shape[1]))
    assert (st.top.positions is None) == (where[layer] is None)
    hash_ = band_hash(torch.arange(300), 3).tolist()
    for u in range(s.shape[1]):
        v = s[:, u]
        top = _order(v, descending=True)[:5]
        assert torch.equal(st.top.indices[u], top) and torch.equal(st.top.values[u], v[top])
        if where[layer] is not None:
            assert torch.equal(st.top.positions[u], where[layer][top, u])
        bottom = _order(v, descending=False)[:5]
        assert torch.equal(st.bottom.indices[u], bottom)
        assert torch.equal(st.bottom.values[u], v[bottom])
        assert torch.equal(st.bottom.mean[u], x[bottom].mean(0))
        edges = st.edges[u].tolist()
        assert edges[0] == v.min().item() and edges[-1] == v.max().item()   # the head's range
        counts = [0] * 7
        for value in v.tolist():
            counts[min(bisect.bisect_right(edges, value) - 1, 6)] += 1
        assert st.histogram[u].tolist() == counts and st.below[u] == st.above[u] == 0
        assert st.frequency[u].item() == pytest.approx((v > 0.1).double().mean().item())
        torch.testing.assert_close(st.mean[u], v.double().mean(), rtol=1e-12, atol=0)
        torch.testing.assert_close(st.std[u], v.double().std(unbiased=False), rtol=1e-9,
                                   atol=0)
        lo, hi = edges[0], edges[-1]
        for b in range(3):
            start, stop = lo + (hi - lo) * b / 3, lo + (hi - lo) * (b + 1) / 3
            inside = [i for i, value in enumerate(v.double().tolist())
                      if start <= value < stop or (b == 2 and value == hi)]
            chosen = sorted(inside, key=lambda i: (hash_[i], i))[:4]
            assert st.bands[u, b].tolist() == chosen + [-1] * (4 - len(chosen))
        for c in range(3):
            rows = (labels == c).nonzero()[:, 0]
            torch.testing.assert_close(st.class_mean[u, c], v[rows].double().mean(),
                                       rtol=1e-12, atol=0)
            assert torch.equal(st.class_top[u, c], rows[_order(v[rows], True)[:5]])


def test_a_constant_unit_gets_a_unit_wide_range_and_values_outside_are_counted():
    edges = torch.tensor([[0.0, 1.0, 2.0]])
    state = RunningStatistics(edges, k=1, bands=2, per_band=1)
    state.update(torch.tensor([[-1.0], [0.0], [1.0], [2.0], [3.0]]), torch.arange(5))
    st = state.result(torch.zeros(5, 1))
    assert st.histogram.tolist() == [[1, 2]] and st.below.tolist() == [1]
    assert st.above.tolist() == [1]
    dead = unit_statistics(nn.Sequential(nn.Linear(2, 1)).eval().requires_grad_(False)
                           .apply(lambda m: nn.init.zeros_(m.weight) if hasattr(m, "weight")
                                  else None), torch.rand(10, 2), "0", k=2, bins=4)
    assert dead.edges[0, 0] == dead.edges[0, -1] - 1.0 and dead.histogram.sum() == 10


def _state(x, labels, positions, edges, rows):
    state = RunningStatistics(edges, k=4, bands=3, per_band=3, classes=3, seed=1)
    for chunk in rows.split(37):
        chunk = chunk.sort().values
        state.update(x[chunk], chunk, None, labels[chunk])
    return state


def test_merges_of_random_splits_equal_one_pass(data):
    _, labels, scores, _ = data
    values = scores["3"]
    edges = torch.stack([torch.linspace(-1, 1, 6)] * values.shape[1]).double()
    single = _state(values, labels, None, edges, torch.arange(300))
    for seed in range(3):
        order = torch.randperm(300, generator=torch.Generator().manual_seed(seed))
        parts = [order[:90], order[90:200], order[200:]]
        a, b, c = (_state(values, labels, None, edges, p) for p in parts)
        for merged in (a.merge(b).merge(c), c.merge(a.merge(b)), b.merge(c).merge(a)):
            for name in ("counts", "firing", "band_indices", "class_count"):
                assert torch.equal(getattr(merged, name), getattr(single, name)), name
            for name in ("values", "indices"):
                assert torch.equal(getattr(merged.top, name), getattr(single.top, name))
                assert torch.equal(getattr(merged.bottom, name), getattr(single.bottom, name))
                for m, s in zip(merged.class_top, single.class_top):
                    assert torch.equal(getattr(m, name), getattr(s, name))
            torch.testing.assert_close(merged.mean, single.mean, rtol=1e-9, atol=1e-15)
            torch.testing.assert_close(merged.m2, single.m2, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(merged.class_sum, single.class_sum, rtol=1e-9, atol=0)


def test_the_band_hash_is_a_fixed_function_of_seed_and_index():
    h = band_hash(torch.arange(10_000), 0)
    assert len(set(h.tolist())) == 10_000 and (h >= 0).all()
    assert torch.equal(h[123:130], band_hash(torch.arange(123, 130), 0))
    assert not torch.equal(h, band_hash(torch.arange(10_000), 1))


def test_a_streamed_dataset_gives_the_statistics_of_the_tensor(data):
    x, labels, _, _ = data
    dataset = torch.utils.data.TensorDataset(x, labels)
    a = unit_statistics(model(), dataset, "0", k=3, labels=labels, batch_size=50)
    b = unit_statistics(model(), x, "0", k=3, labels=labels, batch_size=50)
    for name in ("edges", "histogram", "below", "above", "frequency", "mean", "std", "bands",
                 "class_mean", "class_top"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for side in ("top", "bottom"):
        for name in ("values", "indices", "positions", "mean"):
            assert torch.equal(getattr(getattr(a, side), name), getattr(getattr(b, side), name))


def test_the_maximum_falls_in_the_last_band_when_the_edges_round():
    # -10 + (1e-20 - -10) rounds to 0: the last band edge must be 1e-20 itself.
    values = torch.tensor([[1e-20], [-10.0]])
    state = RunningStatistics(torch.stack([values[1, 0], values[0, 0]])[None], k=1,
                              bands=4, per_band=2)
    state.update(values, torch.arange(2))
    st = state.result(torch.zeros(2, 1))
    assert st.bands[0, 3].tolist() == [0, -1] and st.bands[0, 0].tolist() == [1, -1]
    assert st.histogram.tolist() == [[2]]

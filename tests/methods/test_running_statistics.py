"""RunningStatistics, the state behind every unit's statistics: values outside the edges
are counted, the maximum falls in the last band, merges of random splits equal one pass
(counts, tops and bands bit for bit, moments to 1e-9), the band hash is a fixed function,
its tensors round-trip bit for bit and forged ones are refused."""

import pytest
import torch

from featvis.methods.running_statistics import (RunningStatistics, StatisticsPlan,
                                                band_hash)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    values = torch.randn(300, 6, generator=g) * 0.6
    labels = torch.randint(0, 3, (300,), generator=g)
    return values, labels


def test_values_outside_the_edges_are_counted_below_and_above():
    edges = torch.tensor([[0.0, 1.0, 2.0]])
    state = RunningStatistics(edges, k=1, bands=2, per_band=1)
    state.update(torch.tensor([[-1.0], [0.0], [1.0], [2.0], [3.0]]), torch.arange(5))
    st = state.result(torch.zeros(5, 1))
    assert st.histogram.tolist() == [[1, 2]] and st.below.tolist() == [1]
    assert st.above.tolist() == [1]


def _state(x, labels, positions, edges, rows):
    state = RunningStatistics(edges, k=4, bands=3, per_band=3, classes=3, seed=1)
    for chunk in rows.split(37):
        chunk = chunk.sort().values
        state.update(x[chunk], chunk, None, labels[chunk])
    return state


def test_merges_of_random_splits_equal_one_pass(data):
    values, labels = data
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


def test_the_maximum_falls_in_the_last_band_when_the_edges_round():
    # -10 + (1e-20 - -10) rounds to 0: the last band edge must be 1e-20 itself.
    values = torch.tensor([[1e-20], [-10.0]])
    state = RunningStatistics(torch.stack([values[1, 0], values[0, 0]])[None], k=1,
                              bands=4, per_band=2)
    state.update(values, torch.arange(2))
    st = state.result(torch.zeros(2, 1))
    assert st.bands[0, 3].tolist() == [0, -1] and st.bands[0, 0].tolist() == [1, -1]
    assert st.histogram.tolist() == [[2]]


def test_its_tensors_round_trip_bit_for_bit_and_forged_ones_are_refused(data):
    values, labels = data
    edges = torch.stack([torch.linspace(-1, 1, 6)] * values.shape[1]).double()
    state = _state(values, labels, None, edges, torch.arange(300))
    plan = StatisticsPlan(bins=5, bands=3, per_band=3, seed=1)
    tensors = state.tensors()
    back = RunningStatistics.from_tensors(tensors, 4, plan, 3, 0)
    for name, t in back.tensors().items():
        assert torch.equal(t, tensors[name]), name
    forged = {"band_keys": lambda t: t + (torch.arange(t.numel()).view(t.shape) == 0),
              "counts": lambda t: t * 2, "top.values": lambda t: t.flip(1),
              "edges": lambda t: t.flip(1)}
    problems = {"band_keys": "band keys", "counts": "sum to count", "top.values": "order",
                "edges": "increasing"}
    for name, forge in forged.items():
        bad = dict(tensors, **{name: forge(tensors[name])})
        with pytest.raises(ValueError, match=problems[name]):
            RunningStatistics.from_tensors(bad, 4, plan, 3, 0)
    with pytest.raises(ValueError, match="'class2.indices' is unexpected"):
        RunningStatistics.from_tensors(tensors, 4, plan, 2, 0)          # a class too many


def test_what_a_file_claims_is_checked_before_anything_is_allocated(data):
    values, labels = data
    edges = torch.stack([torch.linspace(-1, 1, 6)] * values.shape[1]).double()
    tensors = _state(values, labels, None, edges, torch.arange(300)).tensors()
    huge = StatisticsPlan(bins=5, bands=1000, per_band=1000, seed=1)   # 6 x 1e6 slots
    with pytest.raises(ValueError, match=r"band_keys must be torch.int64 \(6, 1000, 1000\)"):
        RunningStatistics.from_tensors(tensors, 4, huge, 3, 0)
    wrapped = dict(tensors, counts=torch.full_like(tensors["counts"], 2**62))  # sums wrap
    wrapped["count"] = torch.tensor(0)
    with pytest.raises(ValueError, match="sum to count"):
        RunningStatistics.from_tensors(wrapped, 4, StatisticsPlan(5, 3, 3, seed=1), 3, 0)

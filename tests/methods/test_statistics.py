"""unit_statistics against direct computation over the scores of an explicit forward pass:
top and bottom examples (and where their maxima are), histogram counts by the reported
edges, firing frequency, mean and standard deviation, band members by their hash, per-class
means and tops; a streamed dataset gives the tensor's statistics; the statistics method's
pictures and records in a run."""

import bisect
import math

import pytest
import torch
from torch import nn

from featvis.methods.running_statistics import band_hash
from featvis.methods.statistics import unit_statistics


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
        if where[layer] is not None:
            assert torch.equal(st.bottom.positions[u], where[layer][bottom, u])
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


def test_a_constant_unit_gets_a_unit_wide_range():
    dead = unit_statistics(nn.Sequential(nn.Linear(2, 1)).eval().requires_grad_(False)
                           .apply(lambda m: nn.init.zeros_(m.weight) if hasattr(m, "weight")
                                  else None), torch.rand(10, 2), "0", k=2, bins=4)
    assert dead.edges[0, 0] == dead.edges[0, -1] - 1.0 and dead.histogram.sum() == 10


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




def test_a_run_records_and_draws_the_statistics_of_unit_statistics(data, tmp_path):
    import json

    from featvis import VisualizeSettings, visualize

    x, labels, _, _ = data
    settings = VisualizeSettings(methods=("examples", "statistics"), k=4, units=3, bins=8,
                                 bands=3, per_band=2, threshold=0.05, seed=4, figures=False)
    visualize(model(), x, tmp_path / "run", settings, labels=labels, progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for layer in summary["layers"]:
        st = unit_statistics(model(), x, layer["layer"], k=4, bins=8, bands=3, per_band=2,
                             threshold=0.05, seed=4, labels=labels, units=[0, 1, 2])
        assert layer["methods"] == ["examples", "statistics"]
        for j, detail in enumerate(layer["unit_details"]):
            recorded = detail["statistics"]
            assert recorded["histogram"] == st.histogram[j].tolist()
            assert recorded["bands"] == st.bands[j].flip(0).tolist()    # highest band first
            assert recorded["bottom"]["indices"] == st.bottom.indices[j].tolist()
            assert recorded["frequency"] == round(st.frequency[j].item(), 6)
            assert len(recorded["class_mean"]) == 3
            assert {"histogram", "bottom_strip", "bottom_mean", "bands"} <= detail["files"].keys()
        page = (tmp_path / "run" / layer["folder"] / "units" / "0" / "index.html").read_text()
        assert "Unit statistics" in page and "inputs that activate it least" in page


def test_histogram_bars_draw_each_bin_and_mark_the_threshold():
    from featvis.methods.statistics import histogram_bars

    counts = torch.tensor([[0, 1, 3, 7]])
    edges = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    bars = histogram_bars(counts, edges, threshold=1.5, height=8)[0, 0, 1:-1, 1:-1]
    dark = (bars == 0) | torch.isclose(bars, torch.tensor(0.35))   # a bar's (marked) pixels
    heights = dark.sum(0).tolist()
    expected = [math.ceil(math.log1p(c) / math.log1p(7) * 8) for c in (0, 1, 3, 7)]
    assert heights[0] == 0 and heights[3] == 8 and heights[1] == expected[1]
    marked = bars[:, 1]                                    # the bin that holds 1.5
    assert (torch.isclose(marked, torch.tensor(0.35)) | torch.isclose(marked, torch.tensor(0.7))
            ).all()
    assert set(bars[:, 2].tolist()) == {0.0, 1.0}


def test_an_infinite_score_on_the_head_is_refused_before_the_pass():
    from featvis import DataError

    huge = nn.Sequential(nn.Linear(2, 1)).eval().requires_grad_(False)
    huge[0].weight.fill_(3e38)
    with pytest.raises(DataError, match="layer 0: a score is infinite"):
        unit_statistics(huge, torch.ones(20, 2), "0", k=2)

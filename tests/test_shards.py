"""Offline shards: any split of the data into shard files, merged in any order, gives
top_examples bit for bit; a missing, repeated or foreign shard is refused naming the file,
and hostile shard files are refused in one line without unpickling."""

import json
import random
import struct

import pytest
import torch
from safetensors.torch import save_file

from featvis import CheckpointError, DataError, top_examples, unit_statistics
from featvis.methods.running_statistics import StatisticsPlan
from featvis.pipeline.shards import (MAX_SHARD_HEADER, SHARD_FORMAT, load_shard, merge_shards,
                            mine_shard, save_shard, shard_examples, shard_info)

from helpers import random_dbn, read_checkpoint, refuse_unpickling


def models():
    """A 20-12-6 DBN on binary inputs and a ReLU'd conv layer: many exact ties."""
    g = torch.Generator().manual_seed(3)
    dbn = random_dbn([20, 12, 6], seed=5)
    x = (torch.rand(230, 20, generator=g) < 0.3).float()
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU())
    images = torch.randn(120, 1, 7, 7, generator=g).clamp(min=0)
    tokens = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU())   # units last
    sequences = torch.randn(90, 6, 4, generator=g)
    return {"dbn": (dbn, x, [2, 1], {2: [5, 0, 3]}, 32),
            "cnn": (cnn, images, ["1"], None, 16),
            "tokens": (tokens, sequences, ["1", "0"], {"0": [4, 1]}, 16)}


MODELS = models()


def write_shards(tmp_path, name, n, k=5, prefix="s"):
    model, data, layers, units, batch = MODELS[name]
    paths = []
    for i in range(n):
        path = tmp_path / f"{prefix}{i}of{n}.safetensors"
        save_shard(path, mine_shard(model, data, layers, k, units, batch, shard=(i, n)))
        paths.append(path)
    return paths


@pytest.mark.parametrize("name", ["dbn", "cnn", "tokens"])
def test_any_split_merged_in_any_order_is_top_examples(tmp_path, monkeypatch, name):
    refuse_unpickling(monkeypatch)
    model, data, layers, units, batch = MODELS[name]
    expected = top_examples(model, data, layers, k=5, units=units, batch_size=batch)
    rng = random.Random(0)
    for n in (1, 2, 3):
        paths = write_shards(tmp_path, name, n)
        rng.shuffle(paths)
        states, info = merge_shards(paths)
        assert info["shards"] == n and info["settings"]["layers"] == layers
        got = shard_examples(states, info, model, data)
        for key in layers:
            for field in ("values", "indices", "mean", "units", "positions"):
                a, b = getattr(got[key], field), getattr(expected[key], field)
                assert (a is None and b is None) or (a.dtype == b.dtype and torch.equal(a, b))
    if name == "tokens":                        # a feature's token: one position column
        assert expected["1"].positions.shape == (5, 5, 1)


@pytest.mark.parametrize("name", ["cnn", "tokens"])
def test_shards_with_statistics_merge_to_the_statistics_of_one_pass(tmp_path, monkeypatch,
                                                                    name):
    refuse_unpickling(monkeypatch)
    model, data, layers, units, batch = MODELS[name]
    labels = torch.arange(len(data)) % 3
    plan = StatisticsPlan(bins=9, bands=4, per_band=3, threshold=0.2, seed=2)
    key = layers[-1]
    units = None if units is None else {key: units[key]}
    single = unit_statistics(model, data, key, k=4, bins=9, bands=4, per_band=3,
                             threshold=0.2, seed=2, labels=labels, batch_size=batch,
                             units=(units or {}).get(key))
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.safetensors")
        save_shard(paths[-1], mine_shard(model, data, [key], 4, units, batch, shard=(i, 3),
                                         statistics=plan, labels=labels))
    states, info = merge_shards(paths[::-1])
    recorded = info["settings"]["statistics"]
    assert recorded.pop("labels_sha256") and recorded == {**plan.record(), "classes": 3}
    got = shard_examples(states, info, model, data)[key]
    for field in ("edges", "histogram", "below", "above", "frequency", "bands", "class_top",
                  "units"):
        assert torch.equal(getattr(got, field), getattr(single, field)), field
    for side in ("top", "bottom"):
        for field in ("values", "indices", "positions", "mean"):
            a, b = getattr(getattr(got, side), field), getattr(getattr(single, side), field)
            assert (a is None and b is None) or torch.equal(a, b), (side, field)
    for field in ("mean", "std", "class_mean"):
        torch.testing.assert_close(getattr(got, field), getattr(single, field), rtol=1e-9,
                                   atol=1e-12)
    forged = load_shard(paths[0])[0][key]
    forged.band_indices[0, 0, 0] = 1          # not a member the hash would have kept there
    info0 = {k: v for k, v in load_shard(paths[0])[1].items()
             if k not in ("format", "featvis_version", "states")}
    save_shard(tmp_path / "forged.safetensors", {key: forged}, info0)
    with pytest.raises(CheckpointError, match="band keys must be the hashes"):
        load_shard(tmp_path / "forged.safetensors")
    fewer = load_shard(paths[0])[0][key]              # a consistent state of one input less
    fewer.count -= 1
    fewer.counts.scatter_add_(1, fewer.counts.argmax(1, keepdim=True),
                              torch.full((fewer.units, 1), -1))
    fewer.firing.clamp_(max=fewer.count)
    fewer.class_count[fewer.class_count.argmax()] -= 1
    save_shard(tmp_path / "fewer.safetensors", {key: fewer}, info0)
    with pytest.raises(CheckpointError, match="inputs must all be counted"):
        load_shard(tmp_path / "fewer.safetensors")


def test_a_shard_round_trips_and_holds_only_its_batches(tmp_path):
    (path,) = write_shards(tmp_path, "dbn", 3)[1:2]
    states, info = load_shard(path)
    assert info["shard"] == [1, 3] and info["inputs"] == 230
    assert all(((s.indices // 32) % 3 == 1).all() for s in states.values())
    assert json.loads(read_checkpoint(path)[1]["featvis"])["format"] == SHARD_FORMAT


@pytest.mark.parametrize("case,message", [
    ("missing", r"shard 1/3 missing: 2 of 3 files given"),
    ("twice", r"s2of3.safetensors: shard 2/3 is given twice \(also .*s2of3.safetensors\)"),
    ("split", r"t0of2.safetensors: shard 0/2 is of a split in 2, .*s0of3.safetensors of a "
              r"split in 3"),
    ("model", r"x1of3.safetensors: shard of another model \(model_sha256 "),
    ("data", r"x1of3.safetensors: shard of another data \(data_sha256 "),
    ("settings", r"x1of3.safetensors: shard mined with other settings than .*s0of3"),
])
def test_shards_of_different_runs_are_refused_naming_the_file(tmp_path, case, message):
    paths = write_shards(tmp_path, "dbn", 3)
    model, data, layers, units, batch = MODELS["dbn"]
    odd = tmp_path / "x1of3.safetensors"
    if case == "missing":
        given = [paths[0], paths[2]]
    elif case == "twice":
        given = paths + [tmp_path / "copy" / paths[2].name]
        given[-1].parent.mkdir()
        given[-1].write_bytes(paths[2].read_bytes())
    elif case == "split":
        given = [paths[0], *write_shards(tmp_path, "dbn", 2, prefix="t")]
    else:
        other = {"model": (random_dbn([20, 12, 6], seed=6), data, 5),
                 "data": (model, 1 - data, 5), "settings": (model, data, 4)}[case]
        save_shard(odd, mine_shard(other[0], other[1], layers, other[2], units, batch,
                                   shard=(1, 3)))
        given = [paths[0], odd, paths[2]]
    with pytest.raises(CheckpointError, match=message):
        merge_shards(given)


def test_merged_shards_refuse_another_model_or_data(tmp_path):
    model, data, layers, units, batch = MODELS["dbn"]
    states, info = merge_shards(write_shards(tmp_path, "dbn", 2))
    with pytest.raises(DataError, match="another model"):
        shard_examples(states, info, random_dbn([20, 12, 6], seed=9), data)
    with pytest.raises(DataError, match="other data"):
        shard_examples(states, info, model, data[:-1])
    with pytest.raises(ValueError, match="no shard files"):
        merge_shards([])
    with pytest.raises(ValueError, match="below 3"):
        shard_info(model, data, layers, shard=(3, 3))


def rewrite(path, out, meta=None, tensors=None):
    """``path``'s shard with its metadata and tensors changed by ``meta(m)`` /
    ``tensors(t)``, written to ``out``."""
    t, m = read_checkpoint(path)
    m = json.loads(m["featvis"])
    if meta:
        meta(m)
    if tensors:
        tensors(t)
    save_file(t, str(out), metadata={"featvis": json.dumps(m)})
    return out


def _set(path, value):
    def change(m):
        *parents, last = path
        for p in parents:
            m = m[p]
        m[last] = value
    return change


def _swap_first_two(t):
    t["layer1.values"][0, :2] = t["layer1.values"][0, :2].flip(0).clone()
    t["layer1.indices"][0, :2] = t["layer1.indices"][0, :2].flip(0).clone()


HOSTILE = {
    "format": (dict(meta=_set(["format"], "featvis.topk/1")),
               "unsupported shard format 'featvis.topk/1'"),
    "shard": (dict(meta=_set(["shard"], [3, 2])), "shard must be"),
    "fingerprint": (dict(meta=_set(["model_sha256"], "x" * 64)), "model_sha256 must be"),
    "settings": (dict(meta=_set(["settings", "k"], True)), "settings.k must be"),
    "layers": (dict(meta=_set(["settings", "layers"], [1, 1])), "distinct layer keys"),
    "units": (dict(meta=_set(["settings", "units"], [[-1, 2, 3], None])), "settings.units"),
    "count": (dict(meta=_set(["states", 0, "count"], 99)), "count in 0..k"),
    "extra": (dict(tensors=lambda t: t.update(extra=torch.zeros(1))), "'extra' is unexpected"),
    "shape": (dict(tensors=lambda t: t.update({"layer0.values":
                                               t["layer0.values"][:, :2].clone()})),
              "layer0.values must be F32 of shape"),
    "nan": (dict(tensors=lambda t: t["layer1.values"].__setitem__((0, 0), float("nan"))),
            "values contain NaN"),
    "order": (dict(tensors=_swap_first_two), "not in order"),
    "foreign batch": (dict(tensors=lambda t: t["layer1.indices"].__setitem__((0, 0), 0)),
                      "example 0 is not in shard 1/2's batches"),
    "range": (dict(tensors=lambda t: t["layer1.indices"].__setitem__((0, 0), 10**6)),
              "indices must be in 0..229"),
    "positions": (dict(tensors=lambda t: t.update({"layer1.positions": torch.zeros(
        *t["layer1.positions"].shape[:2], 2, dtype=torch.long)})),
        r"layer1.positions must be I64 of shape \(\d+, \d+, 0\)"),
    "position axes": (dict(meta=_set(["states", 1, "position_axes"], 9)),
                      "position_axes must be an integer in 0..8"),
    "deep json": (dict(meta=_set(["settings", "k"], json.loads("[" * 50 + "]" * 50))),
                  "settings.k must be"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_shard_files_are_refused_in_one_line(tmp_path, monkeypatch, case):
    refuse_unpickling(monkeypatch)
    path = write_shards(tmp_path, "dbn", 2)[1]
    changes, message = HOSTILE[case]
    bad = rewrite(path, tmp_path / "bad.safetensors", **changes)
    with pytest.raises(CheckpointError, match=message) as info:
        load_shard(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)


def test_truncated_huge_and_foreign_files_cost_nothing(tmp_path):
    path = write_shards(tmp_path, "dbn", 1)[0]
    data = path.read_bytes()
    cases = {"empty": (b"", "truncated: 0 bytes"),
             "huge": (struct.pack("<Q", 2**62) + data[8:], f"above the {MAX_SHARD_HEADER}"),
             "cut": (data[:len(data) // 2], "truncated"),
             "header": (struct.pack("<Q", 40) + b"{" * 40, "not a readable safetensors"),
             "deep": (None, "nest")}
    for name, (content, message) in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        if content is None:
            save_file({"x": torch.zeros(1)}, str(bad),
                      metadata={"featvis": "[" * 100_000 + "]" * 100_000})
        else:
            bad.write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            load_shard(bad)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="without featvis metadata"):
        load_shard(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="no such shard file"):
        load_shard(tmp_path / "absent.safetensors")

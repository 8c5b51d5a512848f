import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from featvis import DBN, CheckpointError


def test_greedy_training_lowers_error_every_layer(small_dbn):
    assert small_dbn.sizes == [784, 64, 32, 16]
    for rbm in small_dbn.rbms:
        errors = [e["error_per_case"] for e in rbm.history]
        assert len(errors) == 3 and errors[-1] < errors[0]


def test_each_rbm_learns_the_previous_layers_probabilities(mnist_small, small_dbn):
    """The greedy recipe: RBM d is exactly an RBM fitted to layer d-1's probabilities."""
    from featvis import RBM

    x = mnist_small[0]
    features = small_dbn.transform(x, 1)
    alone = RBM(64, 32).fit(features, epochs=3, seed=0 + 2, progress=False)
    assert torch.equal(alone.weight, small_dbn.rbms[1].weight)


def test_transform_shapes_and_ranges(mnist_small, small_dbn):
    x = mnist_small[0][:50]
    for d, size in enumerate([64, 32, 16], start=1):
        h = small_dbn.transform(x, layer=d)
        assert h.shape == (50, size) and 0 <= h.min() and h.max() <= 1
    manual = torch.sigmoid(x @ small_dbn.rbms[0].weight.T + small_dbn.rbms[0].hidden_bias)
    torch.testing.assert_close(small_dbn.transform(x, 1), manual)
    for bad in (0, 4, -1, 1.0, True):
        with pytest.raises(ValueError, match="layer must be a hidden depth in 1..3"):
            small_dbn.transform(x, bad)


def test_input_norm_is_recorded(mnist_small, small_dbn):
    assert small_dbn.input_norm == pytest.approx(mnist_small[0].norm(dim=1).mean().item())
    assert DBN([4, 2]).input_norm is None


def test_save_load_round_trip_is_bit_exact(tmp_path, small_dbn, monkeypatch):
    path = tmp_path / "model.safetensors"
    small_dbn.data_info = {"name": "MNIST"}
    small_dbn.save(path)

    def refuse(*args, **kwargs):
        raise AssertionError("loading a checkpoint must never unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = DBN.load(path)
    assert loaded.sizes == small_dbn.sizes
    for (name, a), (_, b) in zip(small_dbn.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.input_norm == small_dbn.input_norm
    assert loaded.recipe == small_dbn.recipe
    assert [r.history for r in loaded.rbms] == [r.history for r in small_dbn.rbms]
    assert loaded.data_info == {"name": "MNIST"}
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left


def test_save_is_atomic(tmp_path, small_dbn, monkeypatch):
    path = tmp_path / "model.safetensors"
    small_dbn.save(path)
    before = path.read_bytes()
    import featvis.fileio as fileio

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        small_dbn.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_truncated_checkpoint(tmp_path, small_dbn):
    path = tmp_path / "m.safetensors"
    small_dbn.save(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        DBN.load(path)


def test_foreign_checkpoints(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(3)}, plain)
    with pytest.raises(CheckpointError, match="without featvis metadata"):
        DBN.load(plain)
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(3)}, other, metadata={"featvis": json.dumps({"format": "x/9"})})
    with pytest.raises(CheckpointError, match="unsupported checkpoint format"):
        DBN.load(other)
    wrong = tmp_path / "wrong.safetensors"
    meta = {"format": "featvis.dbn/1", "sizes": [4, 2], "recipe": None, "history": [[]],
            "input_norm": None, "data": {}}
    save_file({"x": torch.zeros(3)}, wrong, metadata={"featvis": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="inconsistent checkpoint"):
        DBN.load(wrong)
    pickled = tmp_path / "model.pt"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        DBN.load(pickled)
    huge_header = tmp_path / "huge.safetensors"
    huge_header.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(CheckpointError):
        DBN.load(huge_header)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        DBN.load(tmp_path / "absent.safetensors")


def test_interrupted_training_resumes_to_the_same_model(tmp_path, mnist_small):
    x = mnist_small[0][:500]
    path = tmp_path / "m.safetensors"
    full = DBN([784, 16, 8]).fit(x, epochs=2, progress=False)

    def save_then_stop(dbn, layer):
        dbn.save(path)
        if layer == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        DBN([784, 16, 8]).fit(x, epochs=2, progress=False, on_layer=save_then_stop)
    partial = DBN.load(path)
    assert partial.trained_layers == 1
    partial.fit(x, epochs=2, progress=False, resume=True)
    for a, b in zip(full.state_dict().values(), partial.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="different training recipe"):
        partial.fit(x, epochs=3, progress=False, resume=True)

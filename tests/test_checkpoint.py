"""Checkpoint files (featvis.checkpoint): exact round trips, atomic saves, files that are
truncated, foreign or inconsistent, and the older format."""

import dataclasses
import importlib
import json
import pickle
import pkgutil
import struct
import warnings

import pytest
import torch
from safetensors.torch import save_file

import featvis.models
from featvis import DBN, CheckpointError
from featvis._version import __version__
from featvis.checkpoint import FORMAT, encode_dbn, load_dbn, save_dbn

from helpers import imported_modules, read_checkpoint, refuse_unpickling, stopped_checkpoint


def as_format_1(meta):
    """Checkpoint metadata as featvis 0.1.0 wrote it: format 1, ``cd_steps`` called ``k``."""
    meta["format"] = "featvis.dbn/1"
    meta["recipe"]["k"] = meta["recipe"].pop("cd_steps")
    return meta


def test_save_load_round_trip_is_bit_exact(tmp_path, small_dbn, monkeypatch):
    path = tmp_path / "model.safetensors"
    small_dbn.data_info = {"name": "MNIST"}
    small_dbn.save(path)
    refuse_unpickling(monkeypatch)
    loaded = DBN.load(path)
    assert loaded.sizes == small_dbn.sizes
    for (name, a), (_, b) in zip(small_dbn.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.input_norm == small_dbn.input_norm
    assert loaded.recipe == small_dbn.recipe
    assert [r.history for r in loaded.rbms] == [r.history for r in small_dbn.rbms]
    assert loaded.data_info == {"name": "MNIST"}
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left


def test_checkpoints_are_written_in_format_2(tmp_path, small_dbn):
    path = tmp_path / "m.safetensors"
    small_dbn.save(path)
    meta = json.loads(read_checkpoint(path)[1]["featvis"])
    assert meta["format"] == FORMAT == "featvis.dbn/2" and meta["featvis_version"] == __version__
    assert meta["recipe"] == small_dbn.recipe.to_dict() and "cd_steps" in meta["recipe"]


def test_the_module_functions_are_save_and_load(tmp_path, small_dbn):
    path = tmp_path / "m.safetensors"
    save_dbn(small_dbn, path)
    assert path.read_bytes() == encode_dbn(small_dbn)
    loaded = load_dbn(path)
    assert isinstance(loaded, DBN) and loaded.recipe == small_dbn.recipe


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
    meta = {"format": FORMAT, "sizes": [4, 2], "recipe": None, "history": [[]],
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
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        DBN.load(huge_header)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        DBN.load(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("persistent,edit,problem", [
    (False, lambda t: t.pop("last_epoch.1.weight_inc"), "last_epoch.1.weight_inc is missing"),
    (False, lambda t: t.update({"last_epoch.1.hidden_bias": torch.zeros(3)}), "shape"),
    (False, lambda t: t.update({"last_epoch.1.generator": torch.zeros(3)}), "uint8"),
    (False, lambda t: t.update({"last_epoch.1.bogus": torch.zeros(3)}), "not part of"),
    (False, lambda t: t.update({"last_epoch.1.chain": torch.zeros(4, 8)}), "not part of"),
    (True, lambda t: t.pop("last_epoch.1.chain"), "chain is missing"),
    (True, lambda t: t.update({"last_epoch.1.chain": torch.zeros(4, 3)}), "chain is not"),
    (False, lambda t: t.update({"last_epoch.2.weight": torch.zeros(3)}), "names no hidden"),
    (False, lambda t: t.update({"last_epoch.one.weight": torch.zeros(3)}), "inconsistent"),
])
def test_checkpoint_with_a_bad_record_of_the_last_epoch(tmp_path, mnist_small, persistent,
                                                        edit, problem):
    path = tmp_path / "m.safetensors"
    tensors, metadata = stopped_checkpoint(path, mnist_small[0][:200], [784, 8, 4], epochs=1,
                                           persistent=persistent)
    edit(tensors)
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(CheckpointError, match=problem):
        DBN.load(path)


def test_checkpoints_from_before_the_rbm_m_batches_keep_their_recipe(tmp_path, small_dbn):
    path = tmp_path / "old.safetensors"
    small_dbn.save(path)
    tensors, metadata = read_checkpoint(path)
    meta = as_format_1(json.loads(metadata["featvis"]))
    del meta["recipe"]["reshuffle"], meta["recipe"]["next_layer_data"]
    save_file(tensors, path, metadata={"featvis": json.dumps(meta)})
    recipe = DBN.load(path).recipe
    assert recipe.reshuffle and recipe.next_layer_data == "final"


def test_format_1_checkpoints_still_load(tmp_path, small_dbn):
    """A file as featvis 0.1.0 wrote it loads without a warning (there is nothing for the
    user to change) and is saved again in the current format."""
    path = tmp_path / "old.safetensors"
    small_dbn.save(path)
    tensors, metadata = read_checkpoint(path)
    meta = as_format_1(json.loads(metadata["featvis"]))
    meta["recipe"]["k"] = 3
    save_file(tensors, path, metadata={"featvis": json.dumps(meta)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = DBN.load(path)
    assert loaded.recipe == dataclasses.replace(small_dbn.recipe, cd_steps=3)
    for (name, a), (_, b) in zip(small_dbn.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    loaded.save(path)
    meta = json.loads(read_checkpoint(path)[1]["featvis"])
    assert meta["format"] == FORMAT and meta["recipe"]["cd_steps"] == 3


@pytest.mark.parametrize("edit,problem", [
    (lambda m: [m["recipe"].pop(name) for name in ("reshuffle", "next_layer_data")],
     "recipe lacks reshuffle, next_layer_data"),
    (lambda m: m["recipe"].update(k=m["recipe"].pop("cd_steps")), "recipe lacks cd_steps"),
    (lambda m: m.update(recipe=[1, 2]), "recipe must be an object or null, got [1, 2]"),
])
def test_format_2_recipes_must_be_complete(tmp_path, small_dbn, edit, problem):
    """What fills in old recipes applies to format 1 only."""
    path = tmp_path / "m.safetensors"
    small_dbn.save(path)
    tensors, metadata = read_checkpoint(path)
    meta = json.loads(metadata["featvis"])
    edit(meta)
    save_file(tensors, path, metadata={"featvis": json.dumps(meta)})
    with pytest.raises(CheckpointError) as refused:
        DBN.load(path)
    assert str(refused.value) == f"{path}: inconsistent checkpoint ({problem})"


def test_the_models_do_not_import_the_checkpoint_module():
    """featvis.checkpoint imports the DBN; DBN.save and DBN.load use the format below it."""
    modules = [featvis.models] + [importlib.import_module(f"featvis.models.{info.name}")
                                  for info in pkgutil.iter_modules(featvis.models.__path__)]
    assert len(modules) >= 4
    for module in modules:
        assert "featvis.checkpoint" not in imported_modules(module), module.__name__

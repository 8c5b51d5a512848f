"""Checkpoint files (featvis.models.checkpoint): exact round trips, atomic saves, files that are
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
from featvis.models.checkpoint import FORMAT, encode_dbn, load_dbn, save_dbn

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
    import featvis.io.fileio as fileio

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
    """featvis.models.checkpoint imports the DBN; DBN.save and DBN.load use the format below it."""
    modules = [featvis.models] + [importlib.import_module(f"featvis.models.{info.name}")
                                  for info in pkgutil.iter_modules(featvis.models.__path__)]
    assert len(modules) >= 4
    for module in modules:
        assert "featvis.models.checkpoint" not in imported_modules(module), module.__name__


def gaussian_dbn():
    """A small Gaussian DBN whose sigma was annealed from 0.5."""
    x = torch.randn(100, 6, generator=torch.Generator().manual_seed(0))
    return DBN([6, 4, 3], visible="gaussian", sigma=0.5).fit(
        x, epochs=2, batch_size=50, lr=0.02, sigma_decay=0.5, sigma_floor=0.25, progress=False)


def test_gaussian_round_trip_keeps_the_visible_kind_and_sigma(tmp_path, monkeypatch):
    path = tmp_path / "g.safetensors"
    dbn = gaussian_dbn()
    dbn.save(path)
    tensors, metadata = read_checkpoint(path)
    meta = json.loads(metadata["featvis"])
    assert (meta["visible"], meta["sigma"]) == ("gaussian", 0.5)      # as built
    assert tensors["rbms.0._sigma"].item() == dbn.sigma == 0.25        # as annealed
    refuse_unpickling(monkeypatch)
    loaded = DBN.load(path)
    assert (loaded.visible, loaded.sigma, loaded.rbms[0].initial_sigma) == ("gaussian", 0.25, 0.5)
    assert loaded.rbms[1].visible == "binary" and loaded.recipe == dbn.recipe
    assert loaded.recipe.sigma_decay == 0.5
    for (name, a), (_, b) in zip(dbn.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_checkpoints_from_before_gaussian_units_load_as_binary(tmp_path, small_dbn):
    """No visible kind, no sigma and no sigma fields in the recipe: a binary model."""
    path = tmp_path / "old.safetensors"
    small_dbn.save(path)
    tensors, metadata = read_checkpoint(path)
    meta = json.loads(metadata["featvis"])
    assert (meta["visible"], meta["sigma"]) == ("binary", 1.0)
    for name in ("visible", "sigma"):
        del meta[name]
    for name in ("sigma", "sigma_decay", "sigma_floor"):
        del meta["recipe"][name]
    save_file(tensors, path, metadata={"featvis": json.dumps(meta)})
    loaded = DBN.load(path)
    assert loaded.visible == "binary" and loaded.recipe == small_dbn.recipe
    for (name, a), (_, b) in zip(small_dbn.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("edit,problem", [
    (lambda m, t: m.update(visible="poisson"),
     "inconsistent checkpoint (visible must be 'binary' or 'gaussian', got 'poisson')"),
    (lambda m, t: m.update(visible=["gaussian"]), "visible must be 'binary' or 'gaussian'"),
    (lambda m, t: m.update(sigma="0.5"), "(sigma must be a finite number > 0, got '0.5')"),
    (lambda m, t: m.update(visible="binary"), "unexpected tensor 'rbms.0._sigma'"),
    (lambda m, t: t.pop("rbms.0._sigma"),
     "sizes [6, 4, 3] with Gaussian visible units need rbms.0._sigma, which is missing"),
    (lambda m, t: t.update({"rbms.0._sigma": torch.tensor(-0.5)}),
     "rbms.0._sigma is not a positive standard deviation"),
])
def test_inconsistent_gaussian_metadata_is_refused(tmp_path, edit, problem):
    refuse_edited(tmp_path, gaussian_dbn(), edit, problem)


def refuse_edited(tmp_path, dbn, edit, problem):
    """Save ``dbn``, ``edit(metadata, tensors)`` its file: loading it is refused with one
    line holding ``problem``."""
    path = tmp_path / "edited.safetensors"
    dbn.save(path)
    tensors, metadata = read_checkpoint(path)
    meta = json.loads(metadata["featvis"])
    edit(meta, tensors)
    save_file(tensors, path, metadata={"featvis": json.dumps(meta)})
    with pytest.raises(CheckpointError) as refused:
        DBN.load(path)
    message = str(refused.value)
    assert problem in message and "\n" not in message


def whitened_dbn() -> DBN:
    """A Gaussian DBN with a ZCA whitening fitted on random patches of its input width."""
    from featvis.data.whitening import ZCA, Whitening

    dbn = gaussian_dbn()
    patches = torch.randn(50, dbn.sizes[0], generator=torch.Generator().manual_seed(0))
    dbn.whitening = Whitening("zca", zca=ZCA.fit(patches, epsilon=0.1))
    return dbn


def test_whitening_round_trips_with_the_model(tmp_path):
    from featvis.data.whitening import Whitening

    path = tmp_path / "w.safetensors"
    dbn = whitened_dbn()
    dbn.save(path)
    loaded = DBN.load(path)
    assert loaded.whitening.kind == "zca" and loaded.whitening.zca.epsilon == 0.1
    assert torch.equal(loaded.whitening.zca.matrix, dbn.whitening.zca.matrix)
    dbn.whitening = Whitening("1/f", f0=0.3)
    dbn.save(path)
    assert (DBN.load(path).whitening.kind, DBN.load(path).whitening.f0) == ("1/f", 0.3)
    dbn.whitening = None
    dbn.save(path)
    assert DBN.load(path).whitening is None


@pytest.mark.parametrize("edit,problem", [
    (lambda m, t: t.pop("whitening.zca.eigenvectors"), "whitening.zca.eigenvectors, which is "
                                                       "missing"),
    (lambda m, t: t.update({"whitening.zca.mean": torch.zeros(7)}), "whitening.zca.mean as a "
                                                                    "float tensor of shape (6,)"),
    (lambda m, t: m.update(whitening={"kind": "pca"}), "with a kind of none, 1/f, zca, got "
                                                       "{'kind': 'pca'}"),
    (lambda m, t: m.update(whitening="zca"), "whitening must be null or an object"),
    (lambda m, t: m["whitening"].pop("epsilon"), "config lacks 'epsilon'"),
    (lambda m, t: t.update({"whitening.zca.eigenvalues": -torch.ones(6)}),
     "eigenvalues must be >= 0"),
])
def test_inconsistent_whitening_is_refused(tmp_path, edit, problem):
    refuse_edited(tmp_path, whitened_dbn(), edit, problem)

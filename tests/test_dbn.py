import dataclasses
import json
import pickle
import re
import struct
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import featvis.models.dbn
from featvis import DBN, RBM, CheckpointError, DataError, maximize
from featvis.train import TrainingRecipe, batch_order, fit_rbm

from helpers import read_checkpoint, stopped_checkpoint


def test_greedy_training_lowers_error_every_layer(small_dbn):
    assert small_dbn.sizes == [784, 64, 32, 16]
    for rbm in small_dbn.rbms:
        errors = [e["error_per_case"] for e in rbm.history]
        assert len(errors) == 3 and errors[-1] < errors[0]


def test_last_epoch_hands_over_the_positive_phase_probabilities(mnist_small):
    """rbm.m's batchposhidprobs: the first batch of the last epoch is seen by the weights
    after the other epochs, every row of the hand-over once, in input order."""
    x = mnist_small[0][:500]
    recipe = TrainingRecipe(epochs=3, batch_size=100, seed=4)
    last = fit_rbm(RBM(784, 16, seed=4), x, recipe, keep_last_epoch=True, progress=False)
    shorter = RBM(784, 16).fit(x, epochs=2, batch_size=100, seed=4, progress=False)
    first_batch = torch.randperm(500, generator=torch.Generator().manual_seed(4))[:100]
    assert torch.equal(last.hidden[first_batch], shorter.hidden_probs(x[first_batch]))
    for name, p in shorter.named_parameters():
        assert torch.equal(last.start[name], p)
    # Later batches were seen by weights that had moved on, but by the same RBM.
    assert (last.hidden - shorter.hidden_probs(x)).abs().mean() < 0.05


@pytest.mark.parametrize("next_layer_data", ["last_epoch", "final"])
def test_each_rbm_learns_what_the_previous_one_hands_over(mnist_small, next_layer_data):
    """The greedy recipe: RBM 2 is exactly RBM 1's hand-over fitted on the same batches."""
    x = mnist_small[0][:500]
    dbn = DBN([784, 16, 8]).fit(x, epochs=2, seed=3, next_layer_data=next_layer_data,
                                progress=False)
    recipe = TrainingRecipe(epochs=2, seed=3 + 1, next_layer_data=next_layer_data)
    order = batch_order(500, seed=3)
    first = RBM(784, 16, seed=3 + 1)
    last = fit_rbm(first, x, recipe, order=order, keep_last_epoch=True, progress=False)
    assert torch.equal(first.weight, dbn.rbms[0].weight)
    features = last.hidden if next_layer_data == "last_epoch" else first.hidden_probs(x)
    second = RBM(16, 8, seed=3 + 2)
    fit_rbm(second, features, dataclasses.replace(recipe, seed=3 + 2), order=order,
            progress=False)
    assert torch.equal(second.weight, dbn.rbms[1].weight)


def test_transform_shapes_and_ranges(mnist_small, small_dbn):
    x = mnist_small[0][:50]
    manual = x
    for d, (size, rbm) in enumerate(zip([64, 32, 16], small_dbn.rbms), start=1):
        h = small_dbn.transform(x, layer=d)
        assert h.shape == (50, size) and 0 <= h.min() and h.max() <= 1
        manual = torch.sigmoid(manual @ rbm.weight.T + rbm.hidden_bias)
        torch.testing.assert_close(h, manual)
    for bad in (0, 4, -1, 1.0, True):
        with pytest.raises(ValueError, match="layer must be a hidden depth in 1..3"):
            small_dbn.transform(x, bad)


@pytest.mark.parametrize("sizes", [[784.7, 10.2], ["784", "10"], [784, True], [784, 0], [784],
                                   784, "784", None])
def test_sizes_must_be_integers(sizes):
    got = re.escape(repr(sizes))
    with pytest.raises(ValueError, match=rf"^DBN sizes must be >= 2 positive integers, got {got}$"):
        DBN(sizes)


def test_numpy_integer_sizes_and_seeds():
    dbn = DBN(np.array([6, 4, 3]), seed=np.int64(2))
    assert dbn.sizes == [6, 4, 3] and all(type(s) is int for s in dbn.sizes)
    assert torch.equal(dbn.rbms[1].weight, DBN([6, 4, 3], seed=2).rbms[1].weight)
    with pytest.raises(ValueError, match="^seed must be an integer, got 1.5$"):
        DBN([6, 4], seed=1.5)


@pytest.mark.parametrize("x,problem", [
    (torch.rand(5, 783), "^x: width 783 does not match the model's input size 784$"),
    (torch.zeros(5, 784, dtype=torch.long),
     "^x: expected floating-point values, got torch.int64$"),
    (torch.full((5, 784), float("nan")), "^x: contains NaN or infinite values$"),
    (torch.rand(784), r"^x: expected shape \(N, D\), got \(784,\)$"),
    ([[0.0] * 784], "^x: expected a torch.Tensor, got list$"),
])
def test_transform_checks_its_input(small_dbn, x, problem):
    with pytest.raises(DataError, match=problem):
        small_dbn.transform(x, 1)


def test_transform_takes_any_float_dtype_and_numpy_layers(mnist_small, small_dbn):
    x = mnist_small[0][:20]
    expected = small_dbn.transform(x, 2)
    torch.testing.assert_close(small_dbn.transform(x.double(), np.int64(2)), expected)
    assert small_dbn.transform(x.double(), 2).dtype == torch.float32


def test_inner_loops_do_not_check_their_own_inputs(small_dbn, monkeypatch):
    """Inputs are checked at public entry points only: maximize's steps go through DBN._up."""
    calls = []
    check = featvis.models.dbn.check_images
    monkeypatch.setattr(featvis.models.dbn, "check_images",
                        lambda *a, **kw: calls.append(1) or check(*a, **kw))
    maximize(small_dbn, 3, units=[0], steps=5, restarts=1)
    assert calls == []
    small_dbn.transform(torch.rand(2, 784), 3)
    assert calls == [1]


def test_fit_checks_the_whole_recipe_before_training():
    dbn = DBN([4, 2])
    before = dbn.rbms[0].weight.clone()
    with pytest.raises(ValueError, match=r"^momentum must be a number in \[0, 1\), got 'abc'$"):
        dbn.fit(torch.rand(10, 4), epochs=1, momentum="abc", progress=False)
    assert dbn.trained_layers == 0 and dbn.recipe is None
    assert torch.equal(dbn.rbms[0].weight, before)


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


def test_resume_refuses_or_warns_about_a_record_it_cannot_replay(tmp_path, mnist_small):
    path, x = tmp_path / "m.safetensors", mnist_small[0][:200]
    tensors, metadata = stopped_checkpoint(path, x, [784, 8, 4], epochs=1)
    cuda_state = dict(tensors, **{"last_epoch.1.generator": torch.zeros(16, dtype=torch.uint8)})
    save_file(cuda_state, path, metadata=metadata)
    with pytest.raises(ValueError, match="another kind of device than cpu"):
        DBN.load(path).fit(x, epochs=1, progress=False, resume=True)
    moved = dict(tensors, **{"last_epoch.1.weight": tensors["last_epoch.1.weight"] + 1e-3})
    save_file(moved, path, metadata=metadata)
    with pytest.warns(RuntimeWarning, match="bit for bit"):
        DBN.load(path).fit(x, epochs=1, progress=False, resume=True)


def test_checkpoints_from_before_the_rbm_m_batches_keep_their_recipe(tmp_path, small_dbn):
    path = tmp_path / "old.safetensors"
    small_dbn.save(path)
    tensors, metadata = read_checkpoint(path)
    meta = json.loads(metadata["featvis"])
    del meta["recipe"]["reshuffle"], meta["recipe"]["next_layer_data"]
    save_file(tensors, path, metadata={"featvis": json.dumps(meta)})
    recipe = DBN.load(path).recipe
    assert recipe.reshuffle and recipe.next_layer_data == "final"


@pytest.mark.parametrize("stop_after,recipe", [
    (1, {}), (2, {}), (2, dict(persistent=True)), (2, dict(reshuffle=True)), (2, dict(k=2)),
    (2, dict(next_layer_data="final")),
])
def test_interrupted_training_resumes_to_the_same_model(tmp_path, mnist_small, stop_after,
                                                        recipe):
    """Resuming replays the kept layers' last epochs to rebuild the hand-over exactly."""
    x = mnist_small[0][:500]
    path = tmp_path / "m.safetensors"
    full = DBN([784, 16, 8, 4]).fit(x, epochs=2, progress=False, **recipe)
    assert not full.last_epoch_starts
    stopped_checkpoint(path, x, [784, 16, 8, 4], stop_after, epochs=2, **recipe)
    partial = DBN.load(path)
    assert partial.trained_layers == stop_after
    kept = [] if recipe.get("next_layer_data") == "final" else list(range(1, stop_after + 1))
    assert sorted(partial.last_epoch_starts) == kept
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)   # the replay ends on the saved weights
        partial.fit(x, epochs=2, progress=False, resume=True, **recipe)
    for a, b in zip(full.state_dict().values(), partial.state_dict().values()):
        assert torch.equal(a, b)
    assert not partial.last_epoch_starts
    partial.save(path)
    assert not any(name.startswith("last_epoch") for name in read_checkpoint(path)[0])
    before = {name: t.clone() for name, t in partial.state_dict().items()}
    partial.fit(x, epochs=2, progress=False, resume=True, **recipe)   # complete: a no-op
    assert all(torch.equal(before[name], t) for name, t in partial.state_dict().items())
    with pytest.raises(ValueError, match="different training recipe"):
        partial.fit(x, epochs=3, progress=False, resume=True, **recipe)


def test_resume_needs_the_record_of_the_last_epoch(mnist_small):
    x = mnist_small[0][:300]
    dbn = DBN([784, 8, 4]).fit(x, epochs=1, progress=False)
    dbn.rbms[1].history = []             # as if stopped after layer 1, but without its record
    with pytest.raises(ValueError, match="no record of layer 1's last epoch"):
        dbn.fit(x, epochs=1, progress=False, resume=True)


def test_bad_batch_orders_and_recipes_are_refused():
    x = torch.rand(10, 4)
    for bad in (torch.arange(9), torch.zeros(10, dtype=torch.long), torch.arange(10.0)):
        with pytest.raises(ValueError, match="permutation of the 10 rows"):
            fit_rbm(RBM(4, 2), x, TrainingRecipe(epochs=1), order=bad, progress=False)
    with pytest.raises(ValueError, match="exclude each other"):
        fit_rbm(RBM(4, 2), x, TrainingRecipe(epochs=1, reshuffle=True), order=torch.arange(10),
                progress=False)
    with pytest.raises(ValueError, match="next_layer_data must be one of"):
        DBN([4, 2]).fit(x, next_layer_data="up-pass", progress=False)
    with pytest.raises(TypeError, match="applies to DBN.fit"):
        RBM(4, 2).fit(x, next_layer_data="final", progress=False)

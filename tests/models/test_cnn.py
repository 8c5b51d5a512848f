"""The reference CNN (featvis.reference_cnn), its shipped weights, and featvis.model/1
checkpoints read through featvis.load."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

import featvis
from featvis import DBN, CheckpointError
from featvis.models.checkpoint import MODEL_FORMAT, encode_model, save_model
from featvis.models import ReferenceCNN

from helpers import random_dbn, read_checkpoint, refuse_unpickling

LAYERS = [  # (key, type, output shape), as the module docstring documents them
    ("features.0", "Conv2d", (16, 28, 28)), ("features.1", "ReLU", (16, 28, 28)),
    ("features.2", "MaxPool2d", (16, 14, 14)), ("features.3", "Conv2d", (32, 14, 14)),
    ("features.4", "ReLU", (32, 14, 14)), ("features.5", "MaxPool2d", (32, 7, 7)),
    ("features", "Sequential", (32, 7, 7)), ("classifier.0", "Flatten", (1568,)),
    ("classifier.1", "Linear", (64,)), ("classifier.2", "ReLU", (64,)),
    ("classifier.3", "Linear", (10,)), ("classifier", "Sequential", (10,)),
]


@pytest.fixture(scope="module")
def shipped():
    return featvis.reference_cnn()


@pytest.fixture
def trained_cnn():
    """A fresh CNN with a recorded history, as the training script leaves one."""
    model = ReferenceCNN(seed=3)
    model.data_info = {"name": "MNIST", "n_train": 60000}
    model.recipe = {"optimizer": "Adam", "epochs": 4}
    model.test_accuracy = {"embedded_test": {"correct": 1, "total": 2, "accuracy": 0.5}}
    return model


def test_the_layer_keys_are_as_documented(shipped):
    infos = featvis.layers(shipped, torch.zeros(1, 1, 28, 28))
    assert [(i.name, i.type, i.output_shape) for i in infos] == LAYERS
    assert shipped.config == {"channels": [16, 32], "hidden": 64, "classes": 10}


def test_fresh_weights_come_from_the_seed_alone():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a, b, c = (featvis.reference_cnn(pretrained=False, seed=s) for s in (5, 5, 6))
    assert torch.equal(torch.get_rng_state(), before)   # the global generator is untouched
    assert a.training
    for name, t in a.state_dict().items():
        assert torch.equal(t, b.state_dict()[name]), name
        assert not torch.equal(t, c.state_dict()[name]), name
    bound = 1 / (16 * 25) ** 0.5            # PyTorch's default: uniform in 1/sqrt(fan_in)
    assert a.features[3].weight.abs().max() <= bound


def test_cnn_round_trip_through_featvis_load(tmp_path, trained_cnn, monkeypatch):
    path = tmp_path / "cnn.safetensors"
    save_model(trained_cnn, path)
    assert path.read_bytes() == encode_model(trained_cnn)
    refuse_unpickling(monkeypatch)
    loaded = featvis.load(path)
    assert type(loaded) is ReferenceCNN and not loaded.training
    for name, t in trained_cnn.state_dict().items():
        assert torch.equal(t, loaded.state_dict()[name]), name
    assert (loaded.config, loaded.data_info, loaded.recipe, loaded.test_accuracy) == (
        trained_cnn.config, trained_cnn.data_info, trained_cnn.recipe,
        trained_cnn.test_accuracy)
    meta = json.loads(read_checkpoint(path)[1]["featvis"])
    assert meta["format"] == MODEL_FORMAT == "featvis.model/1" and meta["kind"] == "cnn"
    assert [p.name for p in tmp_path.iterdir()] == ["cnn.safetensors"]   # no temporary left


def test_other_configs_and_half_precision_round_trip(tmp_path):
    model = ReferenceCNN([3, 5], hidden=7, classes=4, seed=1).half()
    model.save(tmp_path / "small.safetensors")
    loaded = ReferenceCNN.load(tmp_path / "small.safetensors")
    assert loaded.config == {"channels": [3, 5], "hidden": 7, "classes": 4}
    assert loaded.features[0].weight.dtype == torch.float32
    assert torch.equal(loaded.features[0].weight, model.features[0].weight.float())


def test_dbn_round_trip_through_featvis_load(tmp_path):
    dbn = random_dbn([12, 6, 3])
    save_model(dbn, tmp_path / "dbn.safetensors")
    loaded = featvis.load(tmp_path / "dbn.safetensors")
    assert type(loaded) is DBN and loaded.sizes == [12, 6, 3]
    for name, t in dbn.state_dict().items():
        assert torch.equal(t, loaded.state_dict()[name]), name


def test_each_loader_names_the_other_kind(tmp_path, trained_cnn):
    cnn, dbn = tmp_path / "cnn.safetensors", tmp_path / "dbn.safetensors"
    trained_cnn.save(cnn)
    random_dbn([12, 6]).save(dbn)
    with pytest.raises(CheckpointError, match=r"a 'cnn' checkpoint \(featvis.model/1\), "
                                              "not a DBN"):
        DBN.load(cnn)
    with pytest.raises(CheckpointError, match=r"a DBN checkpoint \(featvis.dbn/2\), not a "
                                              "'cnn' one"):
        ReferenceCNN.load(dbn)


def test_only_featvis_models_are_saved(tmp_path):
    with pytest.raises(TypeError, match="cannot save a Sequential"):
        save_model(torch.nn.Sequential(torch.nn.Linear(2, 2)), tmp_path / "m.safetensors")


def _rewrite(path, tensors=None, meta=None):
    """Rewrite the checkpoint at ``path`` after ``tensors(dict)`` and ``meta(dict)`` edits."""
    saved, metadata = read_checkpoint(path)
    document = json.loads(metadata["featvis"])
    if tensors is not None:
        tensors(saved)
    if meta is not None:
        meta(document)
    save_file(saved, path, metadata={"featvis": json.dumps(document)})


def _set(name, value):
    def edit(tensors):
        tensors[name] = value(tensors[name])
    return edit


@pytest.mark.parametrize("tensors,meta,problem", [
    (_set("features.0.weight", lambda t: t.index_fill(0, torch.tensor([2]), float("nan"))),
     None, "features.0.weight contains NaN or infinite values"),
    (_set("classifier.3.bias", lambda t: t.fill_(float("inf"))), None,
     "classifier.3.bias contains NaN or infinite values"),
    (_set("classifier.1.weight", lambda t: t.double().fill_(1e300)), None,
     "classifier.1.weight contains NaN or infinite values"),
    (_set("features.3.weight", lambda t: t[:, :8].contiguous()), None,
     "inconsistent checkpoint (the config needs features.3.weight as a float tensor of shape "
     "(32, 16, 5, 5), found F32 (32, 8, 5, 5))"),
    (_set("features.3.bias", lambda t: t.to(torch.int32)), None, "found I32 (32,)"),
    (lambda t: t.pop("classifier.3.bias"), None,
     "inconsistent checkpoint (the config needs classifier.3.bias, which is missing)"),
    (lambda t: t.update(extra=torch.zeros(2)), None,
     "inconsistent checkpoint (unexpected tensor 'extra')"),
    (None, lambda m: m["config"].update(hidden=4096), "as a float tensor of shape (4096, 1568)"),
    (None, lambda m: m["config"].update(channels=[16]), "channels must be two integers"),
    (None, lambda m: m["config"].update(depth=3), "config must hold exactly"),
    (None, lambda m: m.pop("config"), "config must hold exactly"),
    (None, lambda m: m.update(test_accuracy=[1]), "test_accuracy must be an object"),
    (None, lambda m: m.update(kind="transformer"), "unknown model kind 'transformer'"),
    (None, lambda m: m.update(kind=7), "kind must be a string, got 7"),
    (None, lambda m: m.update(format="featvis.model/2"),
     "unsupported checkpoint format 'featvis.model/2'"),
])
def test_bad_cnn_checkpoints_are_refused_in_one_line(tmp_path, trained_cnn, tensors, meta,
                                                     problem):
    path = tmp_path / "cnn.safetensors"
    trained_cnn.save(path)
    _rewrite(path, tensors, meta)
    with pytest.raises(CheckpointError) as refused:
        featvis.load(path)
    message = str(refused.value)
    assert problem in message and message.startswith(f"{path}: ") and "\n" not in message


def test_corrupt_and_foreign_files_are_refused_in_one_line(tmp_path, trained_cnn):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(encode_model(trained_cnn)[:-100])
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(3)}, plain)
    pickled = tmp_path / "model.pt"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    for path, problem in [(truncated, "truncated or corrupt"),
                          (plain, "without featvis metadata"),
                          (pickled, "not a readable safetensors file"),
                          (tmp_path / "absent.safetensors", "no such checkpoint file")]:
        with pytest.raises(CheckpointError, match=problem) as refused:
            featvis.load(path)
        assert "\n" not in str(refused.value)


def test_loading_leaves_the_global_random_state_alone(tmp_path):
    import featvis

    path = tmp_path / "cnn.safetensors"
    save_model(ReferenceCNN(seed=3), path)
    state = torch.random.get_rng_state()
    loaded = featvis.load(path)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(p.device.type == "cpu" and p.dtype == torch.float32
               for p in loaded.parameters())
    torch.testing.assert_close(loaded.state_dict(), ReferenceCNN(seed=3).state_dict())

"""Models that take other than one tensor: ``forward=callable(model, x)`` (``--input-key``
for a dict) against explicit forward passes; factories with arguments (``--model-args``,
JSON); a model that returns a dict works as any other; refusals name the option."""

import json

import pytest
import torch
from torch import nn

from featvis import deconvnet, maximize, probe, top_examples
from featvis.errors import UserCodeError

from helpers import random_dbn, run_cli

# Called as model(x), the dict model indexes a tensor with a string (what these tests refuse).
pytestmark = pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")

FACTORY = '''
import torch
from torch import nn


class DictCNN(nn.Module):
    """Takes {"pixels": x}, returns {"logits", "features"}."""

    def __init__(self, classes=10, width=4):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3)
        self.act = nn.GELU()
        self.head = nn.Linear(width * 6 * 6, classes)

    def forward(self, batch):
        h = self.act(self.conv(batch["pixels"]))
        return {"logits": self.head(h.flatten(1)), "features": h}


def build(classes=10, width=4):
    torch.manual_seed(0)
    return DictCNN(classes, width)
'''


@pytest.fixture
def factory(tmp_path, monkeypatch):
    (tmp_path / "fv_dict_model.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module("fv_dict_model")


def as_dict(model, x):
    return model({"pixels": x})


def test_a_dict_input_model_is_read_through_its_forward(factory):
    model = factory.build(classes=5, width=3).eval()
    x = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    seam = probe(model, (1, 8, 8), forward=as_dict)
    assert [seam.layer(k).units for k in seam.layer_keys()] == [3, 3, 5]
    ex = top_examples(seam, x, "head", k=4)
    with torch.no_grad():
        logits = model.head(model.act(model.conv(x)).flatten(1))
    expected = logits.topk(4, dim=0)
    assert torch.equal(ex.indices, expected.indices.T)
    torch.testing.assert_close(ex.values, expected.values.T)
    # The same model wrapped to take a tensor: the same pictures, bit for bit.
    plain = _Plain(model).eval()
    result = maximize(seam, "head", units=[1], rho=2.0, steps=20, restarts=2)
    assert torch.equal(result.images,
                       maximize(plain, "m.head", units=[1], rho=2.0, steps=20,
                                restarts=2, input_shape=(1, 8, 8)).images)
    projected = deconvnet(seam, x, "act", k=2)                     # through its GELU
    expected = deconvnet(plain, x, "m.act", k=2)
    assert projected.passed == expected.passed == ("gelu",)
    assert torch.equal(projected.projections, expected.projections)
    assert torch.equal(projected.indices, expected.indices)


class _Plain(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m({"pixels": x})


def test_a_forward_that_fails_names_the_option_and_the_kinds_refuse_it(factory):
    with pytest.raises(UserCodeError, match=r"IndexError.*forward=lambda model, x: \.\.\..*"
                                            r"--input-key NAME") as error:
        probe(factory.build(), (1, 8, 8)).layer_keys()
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="^forward: a DBN takes its inputs itself"):
        probe(random_dbn([6, 3]), forward=as_dict)
    seam = probe(factory.build(), (1, 8, 8), forward=as_dict)
    assert probe(seam) is seam and probe(seam, forward=as_dict) is seam
    with pytest.raises(ValueError, match="^forward: give it when the probe is built"):
        probe(seam, forward=lambda model, x: model(x))
    with pytest.raises(TypeError, match="^forward must be a callable"):
        probe(nn.Linear(2, 2), (2,), forward="pixels")


def test_the_cli_takes_factory_arguments_and_an_input_key(tmp_path, capsys, factory):
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 1, 8, 8), np.float32))
    base = ["--model", "fv_dict_model:build", "--input-shape", "1,8,8"]
    code, out, err = run_cli(capsys, "layers", *base, "--model-args", '{"classes": 6}',
                             "--input-key", "pixels")
    assert code == 0, err
    assert [line.split()[:3] for line in out.splitlines()[1:]] == \
        [["conv", "Conv2d", "4"], ["act", "GELU", "4"], ["head", "Linear", "6"]]
    code, _, err = run_cli(capsys, "visualize", *base, "--input-key", "pixels", "--images",
                           tmp_path / "x.npy", "--methods", "examples,deconvnet", "--units",
                           "2", "--k", "2", "--no-figures", "--quiet", "--out", tmp_path / "run")
    assert code == 0, err
    layers = json.loads((tmp_path / "run" / "summary.json").read_text())["layers"]
    assert [layer["layer"] for layer in layers] == ["conv", "head"]
    for argv, message in [
        (["--model-args", '{"classes": 6}'], "IndexError"),                 # no --input-key
        (["--model-args", "[6]", "--input-key", "pixels"], "expected a JSON object"),
        (["--model-args", "{'classes': 6}", "--input-key", "pixels"], "expected a JSON object"),
        (["--model-args", '{"colour": 1}', "--input-key", "pixels"],
         r"build(**{'colour': 1}) raised TypeError"),
    ]:
        code, _, err = run_cli(capsys, "layers", *base, *argv)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)
    code, _, err = run_cli(capsys, "layers", "--model", "cnn", "--model-args", "{}")
    assert code == 2 and "--model-args is for --model package.module:factory" in err

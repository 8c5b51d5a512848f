"""The mining pass in bfloat16 (autocast): the top examples are brute force over the scores
of an explicit bfloat16 forward (ties, which rounding makes common, to the lower index);
float32 stays the default and the only other choice; a run records the precision, and a
shard or mining state of another precision is refused."""

import pytest
import torch
from torch import nn

from featvis import VisualizeSettings, top_examples, unit_statistics, visualize
from featvis.errors import FeatvisError
from featvis.pipeline.distributed import mine_top_examples
from featvis.pipeline.resume import MiningCheckpoint


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5)).eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(2))


def test_bfloat16_mining_is_brute_force_over_the_bfloat16_forward(x):
    model = _model()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        conv = model[0](x).flatten(2).amax(2).float()
        dense = model(x).float()
    assert conv.unique().numel() < conv.numel() * 0.9         # rounding makes ties
    got = top_examples(model, x, ["0", "3"], k=6, batch_size=64, precision="bfloat16")
    for key, scores in (("0", conv), ("3", dense)):
        for u in range(scores.shape[1]):
            order = sorted(range(len(x)), key=lambda i: (-scores[i, u].item(), i))[:6]
            assert got[key].indices[u].tolist() == order
            assert torch.equal(got[key].values[u], scores[order, u])
    full = top_examples(model, x, "3", k=6, batch_size=64)
    assert not torch.equal(full.values, got["3"].values)            # float32 differs
    st = unit_statistics(model, x, "3", k=6, precision="bfloat16", batch_size=64)
    assert torch.equal(st.top.indices, got["3"].indices)
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        top_examples(model, x, "3", precision="float16")


def test_a_run_records_its_precision_and_a_state_of_another_is_refused(x, tmp_path):
    settings = VisualizeSettings(methods=("examples",), k=3, units=2, figures=False,
                                 precision="bfloat16")
    summary = visualize(_model(), x, tmp_path / "run", settings, progress=False)
    assert summary["settings"]["precision"] == "bfloat16"
    with pytest.raises(ValueError, match="precision"):
        VisualizeSettings(precision="half").check(None)
    model, calls = _model(), iter(range(100))

    def kill(module, inputs):                  # Ctrl-C in the fourth batch of 8
        if inputs[0].shape[0] == 8 and next(calls) == 3:
            raise KeyboardInterrupt

    handle = model[0].register_forward_pre_hook(kill)
    with pytest.raises(KeyboardInterrupt):
        mine_top_examples(model, x, ["3"], k=3, batch_size=8,
                          checkpoint=MiningCheckpoint(tmp_path / "m", every=1))
    handle.remove()
    with pytest.raises(FeatvisError, match="another settings"):
        mine_top_examples(model, x, ["3"], k=3, batch_size=8, precision="bfloat16",
                          checkpoint=MiningCheckpoint(tmp_path / "m", resume=True))

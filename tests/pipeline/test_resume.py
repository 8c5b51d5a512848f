"""Resumable mining: a pass interrupted at a random batch and continued with ``resume`` gives
the uninterrupted pass's states bit for bit (one process, a shard, the CLI killed with
SIGKILL); a state of another model, data or settings is refused; a state is only replaced
with --force and only if it is featvis's own; it is removed when the run completes."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from torch import nn

from featvis import VisualizeSettings, visualize
from featvis.errors import FeatvisError
from featvis.methods.running_statistics import StatisticsPlan
from featvis.pipeline.resume import MiningCheckpoint, state_path
from featvis.pipeline.distributed import mine_top_examples
from featvis.pipeline.shards import load_mining_state, save_shard


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.ReLU())


@pytest.fixture
def images():
    return torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(1))


class _Killed(KeyboardInterrupt):
    """The test's kill: raised in the model's forward, as Ctrl-C would be."""


def _kill_at(model, batch, size=8):
    """Make the model's forward raise at its ``batch``-th call (from 0) on a batch of
    ``size`` (the probe's own looks at the model are of other sizes)."""
    calls = iter(range(10**6))

    def hook(module, inputs):
        if inputs[0].shape[0] == size and next(calls) == batch:
            raise _Killed

    return model.register_forward_pre_hook(hook)


def _mine(model, images, checkpoint=None, shard=None):
    return mine_top_examples(model, images, ["0", "4"], k=4, batch_size=8, shard=shard,
                             checkpoint=checkpoint)


def _equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        for name in ("values", "indices", "positions"):
            assert torch.equal(getattr(a[key], name), getattr(b[key], name)), (key, name)


@pytest.mark.parametrize("shard", [None, (1, 3)])
def test_a_pass_killed_at_a_random_batch_resumes_to_the_same_states(images, tmp_path, shard):
    model, out = _cnn(), tmp_path / "run"
    share = shard or (0, 1)
    whole = _mine(model, images, shard=shard)
    batches = len(range(share[0], 12, share[1]))            # 96 inputs: 12 batches of 8
    kill = random.Random(5).randrange(2, batches)
    handle = _kill_at(model, kill)
    with pytest.raises(_Killed):
        _mine(model, images, MiningCheckpoint(out, share, every=1), shard)
    handle.remove()
    state = state_path(out, share)
    saved, info = load_mining_state(state)
    assert info["next"] == (share[0] + kill * share[1]) * 8    # the batch it was killed in
    resumed = MiningCheckpoint(out, share, every=1, resume=True)
    _equal(_mine(model, images, resumed, shard), whole)
    assert state.is_file()                      # kept until the run's output is written
    resumed.remove()
    assert not state.exists()


def test_visualize_resumed_after_a_kill_writes_the_bytes_of_an_uninterrupted_run(images,
                                                                                tmp_path):
    settings = VisualizeSettings(methods=("examples", "statistics"), k=3, units=2,
                                 figures=False)
    big = images.repeat(25, 1, 1, 1) + torch.linspace(0, 0.01, 2400).view(-1, 1, 1, 1)
    visualize(_cnn(), big, tmp_path / "whole", settings, progress=False)
    model = _cnn()
    handle = _kill_at(model, 3, 1000)    # batches of 1,000: 2 of the head (the range), 2 mined
    with pytest.raises(_Killed):
        visualize(model, big, tmp_path / "run", settings, progress=False,
                  checkpoint=MiningCheckpoint(tmp_path / "run", every=1))
    handle.remove()
    assert not (tmp_path / "run").exists() and state_path(tmp_path / "run").is_file()
    visualize(model, big, tmp_path / "run", settings, progress=False,
              checkpoint=MiningCheckpoint(tmp_path / "run", every=1, resume=True))
    assert not state_path(tmp_path / "run").exists()            # removed: the run is written
    files = lambda root: {p.relative_to(root): p.read_bytes()   # noqa: E731
                          for p in root.rglob("*") if p.is_file()}
    assert files(tmp_path / "run") == files(tmp_path / "whole")


def _interrupted(images, out, model=None):
    model = model or _cnn()
    handle = _kill_at(model, 3)
    with pytest.raises(_Killed):
        _mine(model, images, MiningCheckpoint(out, every=1))
    handle.remove()


@pytest.mark.parametrize("change, named", [
    ("model", "another model"), ("data", "another data"), ("k", "another settings"),
    ("labels", "another settings"), ("share", "another share")])
def test_a_state_of_another_model_data_or_settings_is_refused(images, tmp_path, change,
                                                              named):
    plan, labels = StatisticsPlan(bins=4), torch.arange(96) % 2
    model = _cnn()
    handle = _kill_at(model, 12 + 3)              # the head's 12 batches (the range), 3 mined
    with pytest.raises(_Killed):
        mine_top_examples(model, images, ["4"], k=4, batch_size=8, statistics=plan,
                          labels=labels, checkpoint=MiningCheckpoint(tmp_path / "run", every=1))
    handle.remove()
    model, data, k = _cnn(seed=1 if change == "model" else 0), images.clone(), 4
    if change == "data":
        data[-1, 0, 0, 0] += 0.5
    if change == "k":
        k = 5
    if change == "labels":
        labels = labels.flip(0)
    if change == "share":                    # share 0 of 1's state, where 0 of 2's is looked for
        os.rename(state_path(tmp_path / "run"), state_path(tmp_path / "run", (0, 2)))
        with pytest.raises(FeatvisError, match=named):
            mine_top_examples(model, data, ["4"], k=k, batch_size=8, shard=(0, 2),
                              statistics=plan, labels=labels, checkpoint=MiningCheckpoint(
                                  tmp_path / "run", (0, 2), resume=True))
        return
    with pytest.raises(FeatvisError, match=named):
        mine_top_examples(model, data, ["4"], k=k, batch_size=8, statistics=plan,
                          labels=labels,
                          checkpoint=MiningCheckpoint(tmp_path / "run", resume=True))


def test_an_existing_state_needs_resume_or_force_and_only_featvis_own_is_replaced(images,
                                                                                 tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FeatvisError, match="no mining state"):
        MiningCheckpoint(out, resume=True)
    _interrupted(images, out)
    with pytest.raises(FeatvisError, match="--resume continues it, --force starts afresh"):
        MiningCheckpoint(out)
    fresh = MiningCheckpoint(out, every=1, force=True)
    assert not state_path(out).exists()            # featvis's own, given up at once
    _equal(_mine(_cnn(), images, fresh), _mine(_cnn(), images))      # afresh: no restore
    state_path(out).write_bytes(b"a user's file")
    with pytest.raises(FeatvisError, match="does not replace it"):
        MiningCheckpoint(out, force=True)
    assert state_path(out).read_bytes() == b"a user's file"
    os.unlink(state_path(out))
    _interrupted(images, tmp_path / "other")            # a sound state, behind a symlink
    os.symlink(state_path(tmp_path / "other"), state_path(out))
    for resume in (False, True):
        with pytest.raises(FeatvisError, match="symlink"):
            MiningCheckpoint(out, force=True, resume=resume)
    assert state_path(out).is_symlink() and load_mining_state(state_path(tmp_path / "other"))


def test_only_the_very_state_file_featvis_wrote_is_replaced_or_removed(images, tmp_path):
    out, thesis = tmp_path / "run", tmp_path / "thesis.tex"
    thesis.write_text("years of work")
    for swap in ("file", "symlink"):
        checkpoint = MiningCheckpoint(out, every=1)
        _mine(_cnn(), images, checkpoint)                    # saved after every batch
        assert state_path(out).is_file()
        state_path(out).unlink()
        if swap == "file":
            state_path(out).write_text("the user's notes")
        else:
            os.symlink(thesis, state_path(out))
        with pytest.raises(FeatvisError, match="did not write"):
            checkpoint.save({}, 0, last=False)               # the next save: refused
        checkpoint.remove()                                  # the run's end: it stays
        assert os.path.lexists(state_path(out)) and thesis.read_text() == "years of work"
        if swap == "file":
            assert state_path(out).read_text() == "the user's notes"
        state_path(out).unlink()


def test_a_short_pass_writes_no_state_and_a_forged_one_is_refused(images, tmp_path):
    out = tmp_path / "run"
    _mine(_cnn(), images, MiningCheckpoint(out, every=100))          # 12 batches < 100
    assert not state_path(out).exists()
    _interrupted(images, out)
    saved, info = load_mining_state(state_path(out))
    info = {k: v for k, v in info.items() if k not in ("format", "featvis_version", "states")}
    save_shard(state_path(out), saved, info, next_input=20)           # not a batch's start
    with pytest.raises(FeatvisError, match="next must start a batch"):
        _mine(_cnn(), images, MiningCheckpoint(out, resume=True))
    save_shard(state_path(out), saved, info, next_input=8)   # kept entries beyond input 8
    with pytest.raises(FeatvisError, match=r"indices must be in 0\.\.7"):
        _mine(_cnn(), images, MiningCheckpoint(out, resume=True))


SLOW_MODEL = '''
import time
import torch
from torch import nn


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 8)
        self.relu = nn.ReLU()

    def forward(self, x):
        time.sleep(0.25)
        return self.relu(self.fc(x.flatten(1)))


def build():
    return Slow()
'''


def test_the_cli_killed_with_sigkill_resumes_to_the_same_shard_file(tmp_path):
    (tmp_path / "slowmodel.py").write_text(textwrap.dedent(SLOW_MODEL))
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((6500, 1, 4, 4),
                                                                dtype=np.float32))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    command = [sys.executable, "-m", "featvis", "mine", "--model", "slowmodel:build",
               "--images", str(tmp_path / "x.npy"), "--layers", "relu", "--k", "5",
               "--shard", "0/1", "--quiet", "--workers", "0", "--state-every", "1"]

    def run(out, *extra):
        return subprocess.run(command + ["--out", str(tmp_path / out), *extra], env=env,
                              capture_output=True, text=True, timeout=120)

    done = run("whole.safetensors")
    assert done.returncode == 0, done.stderr
    killed = subprocess.Popen(command + ["--out", str(tmp_path / "out.safetensors")], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = state_path(tmp_path / "out.safetensors")
    deadline = time.monotonic() + 60
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random(3).uniform(0, 0.5))
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert state.is_file() and not (tmp_path / "out.safetensors").exists()
    again = run("out.safetensors")
    assert again.returncode == 2 and "--resume continues it" in again.stderr
    resumed = run("out.safetensors", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "out.safetensors").read_bytes() == \
        (tmp_path / "whole.safetensors").read_bytes()
    assert not state.exists()

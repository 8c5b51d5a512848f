"""featvis on several processes: mining on 2 gloo ranks equals one process bit for bit, the
ranks refuse to run on different models, per-unit results reach rank 0 in order, and a rank
that dies, stops on an error or hangs is named in one line by the others, in time."""

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file

from featvis import FeatvisError, top_examples
from featvis.pipeline import distributed as D
from featvis.methods.topk import TopK

# The models and data, built the same way in the test and in every rank.
MODELS = textwrap.dedent('''
    from collections import OrderedDict
    from dataclasses import dataclass, field

    import torch
    from featvis import DBN

    def build():
        """A 64-16-8 DBN on binary inputs, a conv layer on ReLU'd inputs and a ReLU'd linear
        layer on token sequences: many exact ties."""
        g = torch.Generator().manual_seed(0)
        dbn = DBN([64, 16, 8], seed=0)
        x = (torch.rand(300, 64, generator=g) < 0.3).float()
        torch.manual_seed(1)
        cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
        images = torch.randn(200, 1, 8, 8, generator=g).clamp(min=0)
        # A feature over tokens, on the last axis: positions are tokens (one column).
        tokens = torch.nn.Sequential(OrderedDict(mix=torch.nn.Linear(4, 5),
                                                 act=torch.nn.ReLU()))
        sequences = torch.randn(150, 6, 4, generator=g)
        return dbn, x, cnn, images, tokens, sequences

    def unit_results(units):
        """Per-unit tensors of several dtypes and shapes, a function of the unit ids alone."""
        u = torch.tensor(list(units))
        return {"images": torch.stack([torch.randn(2, 3, generator=torch.Generator()
                                                   .manual_seed(int(i))) for i in u])
                if len(u) else torch.empty(0, 2, 3),
                "values": u.double() / 7, "dead": u % 3 == 0, "ids": u * 10}

    @dataclass
    class Result:
        """A method's result: per-unit tensors, a missing one and per-step ones."""
        images: torch.Tensor
        units: torch.Tensor
        saturation: torch.Tensor | None = None
        snapshots: dict = field(default_factory=dict)

    def unit_result(units):
        parts = unit_results(units)
        return Result(parts["images"], parts["ids"], None,
                      {50: parts["values"], 0: parts["values"] * 2})
''')
_NAMES: dict = {}
exec(MODELS, _NAMES)  # noqa: S102
build, unit_results, unit_result = (_NAMES[name] for name in ("build", "unit_results",
                                                                "unit_result"))

WORKER = MODELS + textwrap.dedent('''
    import os, signal, sys, time
    from featvis.pipeline import distributed as D
    from featvis.errors import FeatvisError
    from featvis.io.fingerprint import model_fingerprint
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    mode, out, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    victim = int(sys.argv[4]) if len(sys.argv) > 4 else -1
    started = time.monotonic()
    try:
        with D.from_environment("cpu", timeout=timeout) as ctx:
            dbn, x, cnn, images, tokens, sequences = build()
            D.agree(ctx, model=model_fingerprint(dbn), settings={"k": 5})
            if ctx.rank == victim and mode == "hang":
                time.sleep(60)
            started = time.monotonic()
            states = D.mine_top_examples(dbn, x, [1, 2], k=5, units={2: [6, 1, 3]},
                                         batch_size=32, ctx=ctx)
            states.update(D.mine_top_examples(cnn, images, ["0"], k=4, batch_size=16, ctx=ctx))
            states.update(D.mine_top_examples(tokens, sequences, ["act"], k=4, batch_size=16,
                                              ctx=ctx))
            for key, state in states.items():
                state.save(f"{out}/rank{ctx.rank}_layer{key}.safetensors")
            for n_units, size in ((11, 3), (2, 3)):
                got = D.gather_units(ctx, {i: unit_results(c) for i, c in
                                           D.my_chunks(ctx, n_units, size)}, n_units, size)
                result = D.per_unit(ctx, n_units, unit_result, size)
                if ctx.is_main:
                    got.update({"per_unit.images": result.images, "per_unit.units":
                                result.units, **{f"per_unit.snapshots.{key}": t
                                                 for key, t in result.snapshots.items()}})
                    assert result.saturation is None and list(result.snapshots) == [50, 0]
                    save_file(got, f"{out}/gathered{n_units}.safetensors")
                else:
                    assert got is None and result is None
            other = dbn if ctx.rank == 0 else cnn
            try:
                D.agree(ctx, model=model_fingerprint(other), data="0" * 64)
            except D.RankMismatch as exc:
                print(f"MISMATCH {exc}", flush=True)
            if ctx.rank == victim and mode == "run":         # before the last collective
                os.kill(os.getpid(), signal.SIGKILL)
            D.barrier(ctx)
    except FeatvisError as exc:
        print(f"featvis: error: {exc}", file=sys.stderr)
        print(f"after {time.monotonic() - started:.2f} s", flush=True)
        sys.exit(1 if isinstance(exc, D.PeerFailure) else 2)
''')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path, mode, world=2, timeout=10.0, victim=-1, limit=30):
    """Run the worker on ``world`` gloo ranks; their ``(returncode, stdout, stderr)``. A
    hanging ``victim`` is killed once the others have ended."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   TORCH_CPP_LOG_LEVEL="ERROR")
        procs.append(subprocess.Popen([sys.executable, str(script), mode, str(tmp_path),
                                       str(timeout), str(victim)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = {}
    deadline = time.monotonic() + limit
    order = [r for r in range(world) if r != victim] + ([victim] if victim >= 0 else [])
    for rank in order:
        if mode == "hang" and rank == victim:
            procs[rank].kill()
        try:
            out, err = procs[rank].communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
                q.communicate()
            pytest.fail(f"the ranks did not end within {limit} s")
        results[rank] = (procs[rank].returncode, out, err)
    return [results[r] for r in range(world)]


def assert_identical(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


# -- one process ---------------------------------------------------------------------------
def test_chunks_are_a_fixed_split_shared_round_robin():
    assert D.chunks(600, 256) == [range(0, 256), range(256, 512), range(512, 600)]
    assert D.chunks(0) == [] and D.chunks(3, 5) == [range(0, 3)]
    ctx = D.Context(rank=1, world_size=2)
    assert D.my_chunks(ctx, 600, 256) == [(1, range(256, 512))]
    assert D.share(ctx, "abcde") == [(1, "b"), (3, "d")] and ctx.owns(3)
    with pytest.raises(ValueError, match="size"):
        D.chunks(10, 0)


def test_a_single_process_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with D.from_environment() as ctx:
        assert (ctx.rank, ctx.world_size, ctx.backend, ctx.distributed) == (0, 1, None, False)
        D.agree(ctx, model="a" * 64)                     # nothing to compare with
        D.barrier(ctx)
        got = D.gather_units(ctx, {i: unit_results(c) for i, c in D.my_chunks(ctx, 7, 3)}, 7, 3)
    for name, tensor in unit_results(range(7)).items():
        assert_identical(got[name], tensor)
    result = D.per_unit(ctx, 7, unit_result, size=3)
    whole = unit_result(range(7))
    assert type(result) is type(whole) and result.saturation is None
    assert_identical(result.images, whole.images)
    assert list(result.snapshots) == [50, 0]
    assert_identical(result.snapshots[0], whole.snapshots[0])
    with pytest.raises(TypeError, match="dict of tensors or a dataclass"):
        D.per_unit(ctx, 7, lambda c: [c], size=3)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(FeatvisError, match="RANK='x'"):
        D.from_environment()


def test_gather_units_refuses_the_wrong_chunks():
    ctx = D.Context()
    with pytest.raises(ValueError, match=r"chunks \[0, 1\]"):
        D.gather_units(ctx, {0: unit_results(range(3))}, 5, 3)
    with pytest.raises(ValueError, match="3 rows"):
        D.gather_units(ctx, {0: unit_results(range(2)), 1: unit_results(range(3, 5))}, 5, 3)


@pytest.mark.parametrize("shard", [(0, 1), (1, 3)])
def test_single_process_mining_is_top_examples(shard):
    dbn, x, cnn, images, tokens, sequences = build()
    if shard == (0, 1):
        got = D.top_examples(dbn, x, [2, 1], k=5, units={2: [6, 1, 3]}, batch_size=32)
        expected = top_examples(dbn, x, [2, 1], k=5, units={2: [6, 1, 3]}, batch_size=32)
        for key in expected:
            for name in ("values", "indices", "mean", "units"):
                assert_identical(getattr(got[key], name), getattr(expected[key], name))
    else:          # one shard: only its own batches (16-row batches 1, 4, 7, ...)
        state = D.mine_top_examples(cnn, images, "0", k=4, batch_size=16, shard=shard)["0"]
        assert ((state.indices // 16) % 3 == 1).all() and state.count == 4
    with pytest.raises(ValueError, match="not both"):
        D.mine_top_examples(dbn, x, 1, ctx=D.Context(), shard=(0, 2))
    with pytest.raises(ValueError, match="below 2"):
        D.mine_top_examples(dbn, x, 1, shard=(2, 2))


def test_digest_reads_hex_and_hashes_the_rest():
    assert D.digest("ab" * 32) == bytes.fromhex("ab" * 32)
    assert D.digest({"k": 5, "b": 1}) == D.digest({"b": 1, "k": 5}) != D.digest({"k": 6})
    with pytest.raises(ValueError, match="fingerprint"):
        D.digest(object())


# -- two processes -------------------------------------------------------------------------
def test_two_ranks_mine_what_one_process_mines_and_name_a_killed_one(tmp_path):
    """Both ranks mine, gather and compare models; then rank 1 is killed before the last
    collective, and rank 0 ends with one line naming it, well within the timeout."""
    timeout = 10.0
    results = launch(tmp_path, "run", timeout=timeout, victim=1)
    (code, out, err), (killed, _, _) = results
    assert killed == -9
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0] == ("featvis: error: rank 1 is gone (killed or crashed); rank 0 stops "
                        "during 'finishing'")
    assert float(out.split()[-2]) < timeout
    dbn, x, cnn, images, tokens, sequences = build()
    expected = top_examples(dbn, x, [1, 2], k=5, units={2: [6, 1, 3]}, batch_size=32)
    expected["0"] = top_examples(cnn, images, "0", k=4, batch_size=16)
    expected["act"] = top_examples(tokens, sequences, "act", k=4, batch_size=16)
    assert expected["act"].positions.shape == (5, 4, 1)
    models = {"0": (cnn, images), "act": (tokens, sequences)}
    for rank in range(2):                      # every rank holds the single-pass result
        for key, single in expected.items():
            state = TopK.load(tmp_path / f"rank{rank}_layer{key}.safetensors")
            model, data = models.get(key, (dbn, x))
            got = D.examples_from_states(model, data, {key: state}, {2: [6, 1, 3]} if key == 2
                                         else None)[key]
            for name in ("values", "indices", "mean", "units", "positions"):
                a, b = getattr(got, name), getattr(single, name)
                assert (a is None and b is None) or (a.dtype == b.dtype and torch.equal(a, b))
    for n_units in (11, 2):                    # rank 0 holds every chunk, in unit order
        got = load_file(tmp_path / f"gathered{n_units}.safetensors")
        for name, tensor in unit_results(range(n_units)).items():
            assert_identical(got[name], tensor)
        whole = unit_result(range(n_units))
        assert_identical(got["per_unit.images"], whole.images)
        assert_identical(got["per_unit.units"], whole.units)
        for key, tensor in whole.snapshots.items():
            assert_identical(got[f"per_unit.snapshots.{key}"], tensor)
    assert "MISMATCH rank 1 has another model (model_sha256 " in out   # on rank 0 (and 1)


def test_a_rank_that_hangs_is_named_within_the_timeout(tmp_path):
    timeout = 6.0
    (code, out, err), _ = launch(tmp_path, "hang", timeout=timeout, victim=1, limit=25)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("featvis: error: rank 1 did not reach 'merging top examples' "
                               "within 3.5 s (it is still in 'checking that all ranks "
                               "agree'); rank 0 stops during 'merging top examples'")
    assert float(out.split()[-2]) < timeout


# -- naming the failed rank, from the store ------------------------------------------------
class Peers:
    """Ranks 1 and 2 of a 3-rank run, played on an in-memory store beside rank 0's watch."""

    def __init__(self, beating=(1, 2)):
        import threading

        import torch.distributed as dist

        self.store = dist.HashStore()
        self.watch = D._Watch(0, 3, 4.0, self.store, self.store, ("10.0.0.1", 29500), False)
        self.beating, self.stopped = set(beating), threading.Event()
        self.thread = threading.Thread(target=self.beat, daemon=True)
        self.thread.start()

    def beat(self):
        while not self.stopped.wait(0.05):
            for r in self.beating:
                self.store.add(f"beat/{r}", 1)

    def close(self):
        self.stopped.set()
        self.watch.stop()


@pytest.fixture
def peers():
    made = []

    def make(**kwargs):
        made.append(Peers(**kwargs))
        return made[-1]
    yield make
    for p in made:
        p.close()


def test_a_rank_that_stopped_on_an_error_is_named_at_once(peers):
    p = peers()
    p.store.set("stopped/1", "peer:rank 2 is gone")
    p.store.set("stopped/2", "error:images: NaN in row 7")
    started = time.monotonic()
    assert p.watch.blame("x") == "rank 2 stopped on an error: images: NaN in row 7"
    assert time.monotonic() - started < 0.5


def test_a_silent_heartbeat_is_a_rank_gone_and_a_late_phase_a_rank_stuck(peers):
    p = peers(beating=(1,))
    assert p.watch.blame("x") == "rank 2 is gone (killed or crashed)"
    p.beating.add(2)
    p.watch.enter("mining")
    p.store.add("phase/1", 1)
    assert p.watch.blame("mining") == ("rank 2 did not reach 'mining' within 2 s (it is not "
                                       "yet in any phase)")
    p.store.set("stopped/1", "peer:rank 2 did not answer")    # rank 1 blamed it and left
    p.beating.discard(1)
    assert p.watch.blame("mining") == "rank 2 did not answer"


def test_a_store_that_stopped_answering_is_rank_0_gone():
    class Gone:
        def __getattr__(self, name):
            def fail(*args):
                raise RuntimeError("Connection closed by peer")
            return fail

    watch = D._Watch.__new__(D._Watch)
    watch.__dict__.update(rank=1, world=2, timeout=4.0, store=Gone(), store_gone=False,
                          address=("10.0.0.1", 29500), agent_store=False, phases=[])
    assert watch.blame("x") == ("rank 0 is gone (the rendezvous store it held at "
                                "10.0.0.1:29500 stopped answering)")


def test_torchrun_visualize_writes_the_bytes_of_one_process(tmp_path):
    """'torchrun --nproc_per_node=2 -m featvis visualize --distributed' with every default
    method on a layer of 260 units (two chunks, one per rank): every file rank 0 writes,
    PNGs, summary.json and gallery, equals what one process writes, byte for byte; the
    offline shards of 'featvis mine' merged by 'featvis merge' write the same bytes too."""
    import numpy as np

    from featvis import DBN

    g = torch.Generator().manual_seed(0)
    np.save(tmp_path / "x.npy", (torch.rand(1200, 8, 8, generator=g) * 255).byte().numpy())
    dbn = DBN([64, 260, 4], seed=0)
    dbn.fit((torch.rand(200, 64, generator=g) < 0.3).float(), epochs=1, progress=False)
    dbn.save(tmp_path / "m.safetensors")
    args = [str(tmp_path / "m.safetensors"), "--images", str(tmp_path / "x.npy"), "--quiet",
            "--steps", "3", "--restarts", "2", "--samples", "3", "--top", "3", "--k", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    featvis = [sys.executable, "-m", "featvis"]

    def run(*command):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    run(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={free_port()}", "-m", "featvis", "visualize", *args, "--out",
        str(tmp_path / "two"), "--distributed", "--timeout", "30")
    run(*featvis, "visualize", *args, "--out", str(tmp_path / "one"))
    for i in range(2):
        run(*featvis, "mine", *args[:4], "--k", "3", "--shard", f"{i}/2", "--out",
            str(tmp_path / f"s{i}.safetensors"))
    run(*featvis, "merge", str(tmp_path / "s1.safetensors"), str(tmp_path / "s0.safetensors"),
        "--checkpoint", *args[:-2], "--out", str(tmp_path / "merged"))    # k from the shards
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*")
                   if p.is_file())
    assert len(files) > 260 * 5
    for other in ("two", "merged"):
        assert sorted(p.relative_to(tmp_path / other) for p in
                      (tmp_path / other).rglob("*") if p.is_file()) == files
        for rel in files:
            assert (tmp_path / other / rel).read_bytes() == (tmp_path / "one" / rel).read_bytes(), \
                f"{other}/{rel}"

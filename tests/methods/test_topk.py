"""TopK, the mergeable top-k state: any sharding, batching and merge tree gives the single
pass bit for bit, which a brute-force sort confirms; its files refuse hostile input."""

import json
import math
import random
import struct

import pytest
import torch
from safetensors.torch import save_file

from featvis import CheckpointError, DataError, top_examples
from featvis.methods.topk import FORMAT, MAX_HEADER_BYTES, TopK
from featvis.seam import probe

from helpers import random_dbn, read_checkpoint, refuse_unpickling

POOL = [0.0, 0.5, 1.0, -0.0, math.inf, -math.inf]     # many exact ties; -0.0 == 0.0


def random_data(rng, n, units, axes, pool=POOL):
    """Values ``(n, U)`` drawn from ``pool`` (mostly its first three), distinct global
    indices in random order with gaps, and positions ``(n, U, axes)`` (``None`` for 0)."""
    weights = [10, 10, 10, 1, 1, 1][:len(pool)]
    values = torch.tensor([[rng.choices(pool, weights)[0] for _ in range(units)]
                           for _ in range(n)], dtype=torch.float32).view(n, units)
    indices = torch.tensor(rng.sample(range(3 * n + 5), n) if rng.random() < 0.7
                           else list(range(n)), dtype=torch.long)
    positions = torch.randint(0, 3, (n, units, axes),
                              generator=torch.Generator().manual_seed(rng.randrange(2**31))
                              ) if axes else None
    return values, indices, positions


def feed(state, rng, values, indices, positions):
    """Update ``state`` with the rows in random batch sizes (empty batches included)."""
    start = 0
    while start < len(values) or rng.random() < 0.2:
        stop = min(len(values), start + rng.choice([0, 1, 2, 3, 5, 8, 13, 30]))
        state.update(values[start:stop], indices[start:stop],
                     None if positions is None else positions[start:stop])
        start = stop
        if start >= len(values) and rng.random() < 0.8:
            break
    return state


def brute_force(values, indices, positions, k):
    """Per unit: Python's ``sorted`` over ``(-value, index, *position)``, the first k."""
    out = []
    for u in range(values.shape[1]):
        entries = sorted((-values[n, u].item(), indices[n].item(),
                          *(positions[n, u].tolist() if positions is not None else ()))
                         for n in range(len(values)))[:k]
        out.append(entries)
    return out


def entries(state):
    """The state as the brute force writes it."""
    return [[(-v, i, *p) for v, i, p in zip(vs, ids, ps)]
            for vs, ids, ps in zip(state.values.tolist(), state.indices.tolist(),
                                   state.positions.tolist())]


def assert_identical(a, b):
    """Same entries bit for bit (values compared as raw bits: -0.0 is not 0.0)."""
    assert a.count == b.count and a.values.dtype == b.values.dtype
    bits = {torch.float64: torch.int64, torch.float32: torch.int32}.get(a.values.dtype,
                                                                        torch.int16)
    assert torch.equal(a.values.view(bits), b.values.view(bits))
    assert torch.equal(a.indices, b.indices) and torch.equal(a.positions, b.positions)


@pytest.mark.parametrize("axes", [0, 1, 2, 3])
def test_any_sharding_and_merge_tree_gives_the_single_pass(axes):
    rng = random.Random(1000 + axes)
    for trial in range(150):
        n, units, k = rng.randrange(0, 40), rng.randrange(1, 5), rng.randrange(1, 10)
        values, indices, positions = random_data(rng, n, units, axes)
        single = feed(TopK(units, k, axes), rng, values, indices, positions)
        expected = brute_force(values, indices, positions, k)
        assert entries(single) == expected, trial
        # Random shards (some empty), each fed in random batches, merged in a random tree.
        shard_of = [rng.randrange(rng.randrange(1, 6)) for _ in range(n)]
        states = []
        for s in range(max(shard_of, default=0) + 1 + rng.randrange(2)):
            rows = torch.tensor([j for j in range(n) if shard_of[j] == s], dtype=torch.long)
            states.append(feed(TopK(units, k, axes), rng, values[rows], indices[rows],
                               None if positions is None else positions[rows]))
        while len(states) > 1:
            a = states.pop(rng.randrange(len(states)))
            b = states.pop(rng.randrange(len(states)))
            states.insert(rng.randrange(len(states) + 1), a.merge(b))
        assert_identical(states[0], single)
        assert entries(states[0]) == expected, trial


def test_merge_is_commutative_and_associative_and_leaves_its_inputs():
    rng = random.Random(7)
    parts = [feed(TopK(3, 4, 2), rng, *random_data(rng, 12, 3, 2)) for _ in range(3)]
    # Disjoint indices across parts: offset each part's indices.
    for j, part in enumerate(parts):
        part.indices = part.indices + 100 * j
    a, b, c = parts
    before = a.values.clone(), a.indices.clone()
    assert_identical(a.merge(b), b.merge(a))
    assert_identical(a.merge(b).merge(c), a.merge(b.merge(c)))
    assert torch.equal(a.values, before[0]) and torch.equal(a.indices, before[1])
    assert_identical(a.merge(TopK(3, 4, 2)), a)          # the empty state is neutral


@pytest.mark.parametrize("layer,model,shape", [
    (1, "dbn", (20,)), ("1", "cnn", (1, 9, 9)),
])
def test_sharded_mining_equals_top_examples_bit_for_bit(layer, model, shape):
    g = torch.Generator().manual_seed(3)
    if model == "dbn":
        net = random_dbn([20, 12], seed=5)
        x = (torch.rand(300, 20, generator=g) < 0.3).float()    # binary: many exact ties
    else:
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())   # ties at 0
        x = torch.randn(300, *shape, generator=g)
    expected = top_examples(net, x, layer, k=7, batch_size=64)
    seam = probe(net, shape)
    width = seam.layer(layer).unit_shape[-1] if seam.layer(layer).unit_shape else None
    states = []
    for lo, hi in [(200, 300), (0, 37), (37, 37), (37, 200)]:          # shards, any order
        state = TopK(seam.layer(layer).units, 7, 0 if width is None else 2)
        for start in range(lo, hi, 50):
            stop = min(hi, start + 50)
            scores = seam.scores(x[start:stop], {layer: None})[layer]
            pos = None if width is None else torch.stack(
                [scores.positions // width, scores.positions % width], 2)
            state.update(scores.values, torch.arange(start, stop), pos)
        states.append(state)
    merged = states[2].merge(states[0]).merge(states[3].merge(states[1]))
    got = merged.result(x, activation=lambda v: seam.activation(layer, v))
    for name in ("values", "indices", "mean", "units", "positions"):
        a, b = getattr(got, name), getattr(expected, name)
        assert (a is None and b is None) or (a.dtype == b.dtype and torch.equal(a, b)), name


def test_streamed_and_indexed_top_examples_are_bit_identical():
    net = random_dbn([20, 12], seed=5)
    x = torch.rand(300, 20, generator=torch.Generator().manual_seed(4))
    whole = top_examples(net, x, 1, k=5, batch_size=64)
    streamed = top_examples(net, list(x.split(41)), 1, k=5)
    for name in ("values", "indices", "mean"):
        assert torch.equal(getattr(whole, name), getattr(streamed, name)), name


def test_result_needs_k_examples_and_the_images():
    state = TopK(2, 3)
    state.update(torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([4, 1]))
    with pytest.raises(DataError, match=r"^k=3 is larger than the number of examples seen "
                                        r"\(2\)$"):
        state.result(torch.zeros(5, 2))
    state.update(torch.tensor([[2.0, 2.0]]), torch.tensor([0]))
    images = torch.arange(10.0).view(5, 2)
    ex = state.result(images, units=torch.tensor([7, 9]))
    assert ex.indices.tolist() == [[1, 0, 4], [0, 4, 1]] and ex.positions is None
    assert ex.values.tolist() == [[3.0, 2.0, 1.0], [2.0, 2.0, 0.0]]
    assert torch.equal(ex.mean, images[ex.indices].mean(1)) and ex.units.tolist() == [7, 9]
    with pytest.raises(DataError, match=r"^images holds 4 examples, but example 4 is among"):
        state.result(images[:4])


@pytest.mark.parametrize("call,message", [
    (lambda s: s.update(torch.tensor([[1.0, float("nan")], [0.0, 0.0]]), torch.tensor([0, 1])),
     r"^values contain NaN"),
    (lambda s: s.update(torch.tensor([[float("nan"), 1.0]] + [[9.0, 9.0]] * 5),
                        torch.arange(6)), r"^values contain NaN"),     # NaN below the top 3
    (lambda s: s.update(torch.ones(2, 2), torch.tensor([3, 3])),
     r"^example 3 appears twice in one batch$"),
    (lambda s: s.update(torch.ones(2, 2), torch.tensor([5, -1])), r"^indices must be >= 0"),
    (lambda s: s.update(torch.ones(2, 3), torch.tensor([0, 1])),
     r"^values must be a floating tensor \(B, 2\), got torch.float32 \(2, 3\)$"),
    (lambda s: s.update(torch.ones(2, 2), torch.tensor([0.0, 1.0])),
     r"^indices must be an integer tensor \(2,\)"),
    (lambda s: s.update(torch.ones(2, 2), torch.tensor([0, 1]), torch.zeros(2, 2, 2)),
     r"^positions must be None for dense units \(position_axes=0\)$"),
])
def test_bad_batches_are_refused_with_one_line(call, message):
    with pytest.raises(DataError, match=message) as refused:
        call(TopK(2, 3))
    assert "\n" not in str(refused.value)


def test_an_example_counted_twice_is_refused():
    a, b = TopK(2, 3), TopK(2, 3)
    a.update(torch.tensor([[5.0, 1.0], [0.0, 0.0]]), torch.tensor([10, 11]))
    b.update(torch.tensor([[5.0, 1.0]]), torch.tensor([10]))      # the same example again
    with pytest.raises(DataError, match=r"^example 10 is counted twice for unit 0; each "):
        a.merge(b)
    with pytest.raises(DataError, match=r"^example 11 is counted twice for unit 0"):
        a.update(torch.tensor([[3.0, 3.0]]), torch.tensor([11]))     # a second pass
    mapped = TopK(2, 3, 2)
    with pytest.raises(DataError, match=r"^positions must be an integer tensor \(1, 2, 2\) "
                                        r"for units with 2 position axes"):
        mapped.update(torch.ones(1, 2), torch.tensor([0]))
    with pytest.raises(DataError, match=r"^positions must be >= 0, got -2$"):
        mapped.update(torch.ones(1, 2), torch.tensor([0]), torch.tensor([[[0, -2], [1, 1]]]))


@pytest.mark.parametrize("other,problem", [
    (TopK(2, 4), r"k \(3 and 4\)"), (TopK(3, 3), r"units \(2 and 3\)"),
    (TopK(2, 3, 1), r"position_axes \(0 and 1\)"),
    (TopK(2, 3, dtype=torch.float64), "dtype"),
    (TopK(2, 3, info={"model": "b"}), "info"),
])
def test_only_compatible_states_merge(other, problem):
    with pytest.raises(DataError, match=rf"^cannot merge top-k states with different {problem}"):
        TopK(2, 3, info={} if problem != "info" else {"model": "a"}).merge(other)


# -- files -----------------------------------------------------------------------------------

def sample_state(axes=2, count=4, k=4, dtype=torch.float32):
    rng = random.Random(11)
    values, indices, positions = random_data(rng, count, 3, axes)
    state = TopK(3, k, axes, dtype=dtype,
                 info={"model": "sha256:ab", "settings": {"layer": "conv1", "k": k}})
    return state.update(values, indices, positions) or state


@pytest.mark.parametrize("axes,count,dtype", [
    (2, 4, torch.float32), (0, 4, torch.float32), (0, 2, torch.float64),
    (2, 0, torch.float32), (1, 4, torch.float32), (3, 3, torch.float32)])
def test_save_and_load_round_trip(tmp_path, monkeypatch, axes, count, dtype):
    refuse_unpickling(monkeypatch)
    state = sample_state(axes, count, dtype=dtype)
    state.save(tmp_path / "s.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]   # no temporaries
    back = TopK.load(tmp_path / "s.safetensors")
    assert_identical(back, state)
    assert (back.units, back.k, back.position_axes, back.dtype, back.info) == \
        (state.units, state.k, state.position_axes, state.dtype, state.info)
    fresh = TopK(3, state.k, axes, dtype=dtype, info={"settings": {"k": 4, "layer": "conv1"},
                                                          "model": "sha256:ab"})
    assert_identical(back.merge(fresh), state)               # info compared as JSON
    _, meta = read_checkpoint(tmp_path / "s.safetensors")
    assert json.loads(meta["featvis"])["format"] == FORMAT == "featvis.topk/2"


def test_info_must_be_json_and_small(tmp_path):
    with pytest.raises(ValueError, match="^info must be JSON-ready"):
        TopK(1, 1, info={"x": float("nan")})
    state = TopK(1, 1, info={"x": (1, 2)})          # kept as JSON gives it back
    assert state.info == {"x": [1, 2]}
    state.info["y"] = {1, 2}                              # changed after: refused at save
    with pytest.raises(ValueError, match="^info must be JSON-ready"):
        state.save(tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="^info is too large"):
        TopK(1, 1, info={"x": "a" * MAX_HEADER_BYTES}).save(tmp_path / "b.safetensors")
    assert not list(tmp_path.iterdir())


def rewrite(path, tensors=None, **meta_changes):
    """Rewrite the top-k file at ``path`` with its tensors and metadata changed."""
    saved, header = read_checkpoint(path)
    meta = {**json.loads(header["featvis"]), **meta_changes}
    save_file({**saved, **(tensors or {})}, path, metadata={"featvis": json.dumps(meta)})


def swap_first_two(t):
    t = t.clone()
    t[:, [0, 1]] = t[:, [1, 0]]
    return t


CASES = {
    "format": (lambda p, s: rewrite(p, format="featvis.dbn/2"),
               r"unsupported top-k format 'featvis.dbn/2' \(featvis reads featvis.topk/2\)"),
    "old format": (lambda p, s: rewrite(p, format="featvis.topk/1"),
                   r"unsupported top-k format 'featvis.topk/1'"),
    "count": (lambda p, s: rewrite(p, count=3), r"values must be F16/BF16/F32/F64 of shape "
                                                r"\(3, 3\), found F32 \(3, 4\)"),
    "k below count": (lambda p, s: rewrite(p, k=2), r"count must be an integer in 0..k=2"),
    "huge k": (lambda p, s: rewrite(p, k=10**30), r"k must be an integer in 1.."),
    "units": (lambda p, s: rewrite(p, units=True), r"units must be an integer"),
    "position axes": (lambda p, s: rewrite(p, position_axes=True),
                      r"position_axes must be an integer in 0..8"),
    "many position axes": (lambda p, s: rewrite(p, position_axes=9),
                           r"position_axes must be an integer in 0..8"),
    "info": (lambda p, s: rewrite(p, info=[1]), r"info must be an object"),
    "index dtype": (lambda p, s: rewrite(p, {"indices": s.indices.int()}),
                    r"indices must be I64 of shape \(3, 4\), found I32"),
    "position shape": (lambda p, s: rewrite(p, {"positions": s.positions[:, :, :1]
                                                .contiguous()}), r"positions must be I64"),
    "extra tensor": (lambda p, s: rewrite(p, {"zz": torch.zeros(1)}),
                     r"tensor 'zz' is unexpected"),
    "out of order": (lambda p, s: rewrite(p, {"values": swap_first_two(s.values),
                                              "indices": swap_first_two(s.indices)}),
                     r"the entries of unit 0 are not in order"),
    "tie out of order": (lambda p, s: rewrite(p, {"values": torch.ones(3, 4),
                                                  "indices": torch.tensor([[0, 2, 1, 3]] * 3)}),
                         r"the entries of unit 0 are not in order"),
    "repeat": (lambda p, s: rewrite(p, {"values": torch.tensor([[3.0, 2.0, 1.0, 0.0]] * 3),
                                        "indices": torch.tensor([[5, 2, 5, 1]] * 3)}),
               r"unit 0 holds example 5 twice"),
    "negative index": (lambda p, s: rewrite(p, {"values": torch.ones(3, 4),
                                                "indices": torch.tensor([[-1, 0, 1, 2]] * 3)}),
                       r"indices must be >= 0, found -1"),
    "nan": (lambda p, s: rewrite(p, {"values": torch.full((3, 4), float("nan"))}),
            r"values contain NaN"),
    "position": (lambda p, s: rewrite(p, {"positions": -s.positions - 1}),
                 r"positions must be >= 0"),
}


@pytest.mark.parametrize("case", CASES)
def test_inconsistent_files_are_refused(tmp_path, monkeypatch, case):
    refuse_unpickling(monkeypatch)
    state = sample_state()
    path = tmp_path / "s.safetensors"
    state.save(path)
    edit, problem = CASES[case]
    edit(path, state)
    with pytest.raises(CheckpointError, match=problem) as refused:
        TopK.load(path)
    assert str(refused.value).startswith(str(path)) and "\n" not in str(refused.value)


def test_positions_must_have_one_column_per_position_axis(tmp_path):
    state = sample_state(axes=0)
    state.save(tmp_path / "s.safetensors")
    rewrite(tmp_path / "s.safetensors", {"positions": torch.zeros(3, 4, 2, dtype=torch.long)})
    with pytest.raises(CheckpointError, match=r"positions must be I64 of shape \(3, 4, 0\), "
                                              r"found I64 \(3, 4, 2\)"):
        TopK.load(tmp_path / "s.safetensors")


def test_truncated_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "s.safetensors"
    sample_state().save(path)
    data = path.read_bytes()
    for cut in [0, 5, 8, 20, len(data) // 2, len(data) - 1]:
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as refused:
            TopK.load(path)
        assert str(refused.value).startswith(f"{path}: ") and "\n" not in str(refused.value)
    save_file({"values": torch.zeros(1, 1)}, path)
    with pytest.raises(CheckpointError, match="without featvis metadata"):
        TopK.load(path)
    path.write_bytes(struct.pack("<Q", 40) + b"{" * 40)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        TopK.load(path)
    with pytest.raises(CheckpointError, match="no such top-k file"):
        TopK.load(tmp_path / "missing.safetensors")


def test_huge_claims_cost_nothing(tmp_path):
    """A header claiming 2^62 bytes, and tensors claiming terabytes in a tiny file, are
    refused before anything of that size is read or allocated."""
    path = tmp_path / "s.safetensors"
    sample_state().save(path)
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 2**62) + data[8:])
    with pytest.raises(CheckpointError, match=r"header of 4611686018427387904 bytes claimed"):
        TopK.load(path)
    meta = json.dumps({"format": FORMAT, "units": 10**6, "k": 10**6, "count": 10**6,
                       "spatial": False, "info": {}})
    header = json.dumps({"__metadata__": {"featvis": meta}, **{
        name: {"dtype": dtype, "shape": shape, "data_offsets": [0, 8 * 10**12]}
        for name, dtype, shape in [("values", "F64", [10**6, 10**6]),
                                   ("indices", "I64", [10**6, 10**6]),
                                   ("positions", "I64", [10**6, 10**6, 2])]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        TopK.load(path)

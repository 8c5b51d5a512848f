"""Hostile files: checkpoints and MNIST folders made to cost memory, time or the stack are
refused with one line before they cost anything."""

import gzip
import json
import re
import struct
import time

import pytest
import torch
from safetensors.torch import save_file

from featvis import DBN, CheckpointError
from featvis.models.checkpoint import FORMAT, MAX_SIZES
from featvis.io.safejson import MAX_DEPTH, loads

from helpers import RSS_MARGIN_KIB, measured_cli, read_checkpoint, stopped_checkpoint

def checkpoint_text(meta_text, path):
    """A tiny real 784-8-4 checkpoint at ``path`` whose metadata is ``meta_text``."""
    DBN([784, 8, 4]).save(path)
    tensors, _ = read_checkpoint(path)
    save_file(tensors, path, metadata={"featvis": meta_text})
    return path


def checkpoint_meta(path, **changes):
    """A tiny real 784-8-4 checkpoint at ``path`` with ``changes`` to its metadata."""
    meta = {"format": FORMAT, "sizes": [784, 8, 4], "recipe": None, "history": [[], []],
            "data": {}}
    return checkpoint_text(json.dumps({**meta, **changes}), path)


def deep_json(levels):
    """Checkpoint metadata whose data description nests ``levels`` dicts (depth levels + 1)."""
    meta = {"format": FORMAT, "sizes": [784, 8, 4], "recipe": None, "history": [[], []]}
    return json.dumps(meta)[:-1] + ', "data": ' + '{"a": ' * (levels - 1) + "{}" + "}" * levels


def zero_images_gz(path, members, level):
    """A valid gzip IDX file of zero 28x28 images, just over ``members`` x 16 MiB, written
    cheaply: a member holding the header, then one 16 MiB member compressed once and
    repeated. Returns the payload size the header declares."""
    chunk = 2**24
    n = members * chunk // 784 + 1
    header = struct.pack(">HBB3I", 0, 0x08, 3, n, 28, 28)
    head = gzip.compress(header + bytes(n * 784 - members * chunk), level)
    path.write_bytes(head + gzip.compress(bytes(chunk), level) * members)
    return n * 784


def case_huge_layer(tmp_path):
    path = checkpoint_meta(tmp_path / "m.safetensors", sizes=[784, 10**6, 10, 5],
                           history=[[], [], []])
    return ["visualize", path, "--out", tmp_path / "run"], (
        r"inconsistent checkpoint \(sizes \[784, 1000000, 10, 5\] need rbms.0.weight as a "
        r"float tensor of shape \(1000000, 784\), found F32 \(8, 784\)\)")


def case_many_sizes(tmp_path):
    path = checkpoint_meta(tmp_path / "m.safetensors", sizes=[784] + [1] * 200_000,
                           history=[[]] * 200_000)
    return ["visualize", path, "--out", tmp_path / "run"], (
        rf"inconsistent checkpoint \(sizes must be a list of 2 to {MAX_SIZES} positive "
        r"integers, got \[784, 1, 1, 1, 1, 1, \.\.\.\]\)")


def case_deep_metadata(tmp_path):
    path = checkpoint_text(deep_json(100_000), tmp_path / "m.safetensors")
    return ["visualize", path, "--out", tmp_path / "run"], (
        rf"m.safetensors: featvis metadata: JSON nested deeper than {MAX_DEPTH} levels")


def case_gzip_bomb(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    payload = zero_images_gz(path, 90, level=9)             # 1.5 GB in 1.5 MB
    assert payload > 1000 * path.stat().st_size
    return (["train", "--data", tmp_path, "--sizes", "784,4", "--epochs", "1",
             "--out", tmp_path / "m.safetensors"],
            rf"train-images-idx3-ubyte.gz: header declares \(\d+, 28, 28\) uint8 = {payload} "
            r"bytes, over 1000 times the \d+ bytes of gzip data")


def case_above_max_bytes(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    payload = zero_images_gz(path, 256, level=1)            # 4 GiB in 19 MB
    assert 2**32 < payload < 1000 * path.stat().st_size     # only the limit refuses it
    return (["train", "--data", tmp_path, "--sizes", "784,4", "--epochs", "1",
             "--out", tmp_path / "m.safetensors"],
            r"train-images-idx3-ubyte.gz: header declares \(5478275, 28, 28\) uint8 = "
            r"4294967600 bytes, above the limit max_bytes=4294967296 \(4 GiB\)")


@pytest.mark.parametrize("case", [case_huge_layer, case_many_sizes, case_deep_metadata,
                                  case_gzip_bomb, case_above_max_bytes])
def test_cli_refuses_hostile_files_cheaply(tmp_path, baseline_rss, case):
    argv, problem = case(tmp_path)
    status, err, rss = measured_cli(*argv)
    assert status == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"featvis {argv[0]}: error: ") and re.search(problem, err), err
    assert rss - baseline_rss < RSS_MARGIN_KIB, (
        f"peak RSS {rss} KiB, {(rss - baseline_rss) // 1024} MiB above the baseline")


# -- checkpoints, in process --------------------------------------------------------------

def tiny_checkpoint(path):
    """``(tensors, metadata)`` of a 784-8-4 checkpoint saved at ``path``."""
    DBN([784, 8, 4]).save(path)
    return read_checkpoint(path)


def refused(path):
    with pytest.raises(CheckpointError) as info:
        DBN.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


@pytest.mark.parametrize("name,value", [
    ("rbms.1.weight", float("nan")), ("rbms.0.hidden_bias", float("inf")),
    ("rbms.0.visible_bias", -float("inf")),
])
def test_checkpoint_with_non_finite_parameters(tmp_path, name, value):
    path = tmp_path / "m.safetensors"
    tensors, metadata = tiny_checkpoint(path)
    tensors[name].view(-1)[3] = value
    save_file(tensors, path, metadata=metadata)
    assert refused(path) == f"{path}: {name} contains NaN or infinite values"


def test_checkpoint_with_a_non_finite_record_of_the_last_epoch(tmp_path, mnist_small):
    path = tmp_path / "m.safetensors"
    tensors, metadata = stopped_checkpoint(path, mnist_small[0][:200], [784, 8, 4], epochs=1)
    tensors["last_epoch.1.weight_inc"][0, 0] = float("nan")
    save_file(tensors, path, metadata=metadata)
    assert refused(path) == f"{path}: last_epoch.1.weight_inc contains NaN or infinite values"


@pytest.mark.parametrize("value", [float("inf"), -float("inf"), 0.0, -3.0])
def test_checkpoint_input_norm_is_positive_or_unknown(tmp_path, value):
    path = tmp_path / "m.safetensors"
    tensors, metadata = tiny_checkpoint(path)
    assert DBN.load(path).input_norm is None              # NaN: untrained, norm unknown
    tensors["_input_norm"].fill_(value)
    save_file(tensors, path, metadata=metadata)
    assert refused(path) == (f"{path}: _input_norm is {value}, not a positive norm "
                             "(or NaN for unknown)")
    tensors["_input_norm"].fill_(9.2)
    save_file(tensors, path, metadata=metadata)
    assert DBN.load(path).input_norm == pytest.approx(9.2)


@pytest.mark.parametrize("meta,problem", [
    (dict(sizes=[784, 10**6, 10, 5], history=[[], [], []]),
     "need rbms.0.weight as a float tensor of shape (1000000, 784), found F32 (8, 784)"),
    (dict(sizes=[784, 4, 8]), "need rbms.0.weight as a float tensor of shape (4, 784)"),
    (dict(sizes=[784, 8], history=[[]]), "unexpected tensor 'rbms.1.hidden_bias'"),
    (dict(sizes=[784, 8, 4, 2], history=[[], [], []]), "need rbms.2.weight, which is missing"),
    (dict(sizes=[784] + [1] * 200_000), "sizes must be a list of 2 to 64 positive integers, "
                                        "got [784, 1, 1, 1, 1, 1, ...]"),
    (dict(sizes=[784] * (MAX_SIZES + 1)), "sizes must be a list of 2 to 64"),
    (dict(sizes=[784, 8.0, 4]), "got [784, 8.0, 4]"),
    (dict(sizes=[784, True, 4]), "got [784, True, 4]"),
    (dict(sizes=[784, 0, 4]), "got [784, 0, 4]"),
    (dict(sizes=["784", 8, 4]), "got ['784', 8, 4]"),
    (dict(sizes=[784]), "got [784]"),
    (dict(sizes={"a": 1}), "got {'a': 1}"),
    (dict(sizes=None), "got None"),
    (dict(history=[[]]), "history must hold one list per layer (2), got [[]]"),
    (dict(history=[[], {}]), "history must hold one list per layer (2), got [[], {}]"),
    (dict(history=None), "history must hold one list per layer (2), got None"),
])
def test_checkpoint_metadata_must_match_the_header(tmp_path, meta, problem):
    path = checkpoint_meta(tmp_path / "m.safetensors", **meta)
    message = refused(path)
    assert message.startswith(f"{path}: inconsistent checkpoint (") and problem in message


@pytest.mark.parametrize("edit,problem", [
    (lambda t: t.update({"rbms.1.weight": t["rbms.1.weight"].T.contiguous()}),
     "need rbms.1.weight as a float tensor of shape (4, 8), found F32 (8, 4)"),
    (lambda t: t.update({"rbms.0.weight": t["rbms.0.weight"].to(torch.int32)}),
     "need rbms.0.weight as a float tensor of shape (8, 784), found I32 (8, 784)"),
    (lambda t: t.update({"_input_norm": torch.ones(1)}),
     "need _input_norm as a float tensor of shape (), found F32 (1,)"),
    (lambda t: t.pop("_input_norm"), "need _input_norm, which is missing"),
    (lambda t: t.update({"extra": torch.zeros(2)}), "unexpected tensor 'extra'"),
])
def test_checkpoint_tensors_must_match_the_metadata(tmp_path, edit, problem):
    path = tmp_path / "m.safetensors"
    tensors, metadata = tiny_checkpoint(path)
    edit(tensors)
    save_file(tensors, path, metadata=metadata)
    assert problem in refused(path)


def test_checkpoint_float64_parameters_still_load(tmp_path):
    path = tmp_path / "m.safetensors"
    tensors, metadata = tiny_checkpoint(path)
    save_file({name: t.double() for name, t in tensors.items()}, path, metadata=metadata)
    torch.testing.assert_close(DBN.load(path).rbms[1].weight, tensors["rbms.1.weight"])


@pytest.mark.parametrize("text,problem", [
    (deep_json(100_000), "featvis metadata: JSON nested deeper than 64 levels"),
    (deep_json(MAX_DEPTH), "featvis metadata: JSON nested deeper than 64 levels"),
    ('{"format": "featvis.dbn/1", "sizes": [784, NaN, 4]}',
     "featvis metadata: malformed JSON (NaN is not a JSON number)"),
    ('{"format": "featvis.dbn/1", "sizes": [784, 8, 4', "featvis metadata: malformed JSON ("),
    ('"featvis.dbn/1"', "unsupported checkpoint format 'featvis.dbn/1'"),
    (json.dumps({"format": "x" * 10**6}), "unsupported checkpoint format 'xxxxxxxxxxxx...xxx"),
    (json.dumps({"format": "featvis.dbn/1", "data": "x" * 2**24}),
     "featvis metadata of 16777255 characters, above the 16777216"),
])
def test_checkpoint_metadata_json_is_bounded(tmp_path, text, problem):
    path = checkpoint_text(text, tmp_path / "m.safetensors")
    message = refused(path)
    assert problem in message and len(message) < 200 + len(str(path))


def test_checkpoint_metadata_just_deep_enough_loads(tmp_path):
    path = checkpoint_text(deep_json(MAX_DEPTH - 1), tmp_path / "m.safetensors")
    data = DBN.load(path).data_info
    for _ in range(MAX_DEPTH - 2):
        data = data["a"]
    assert data == {}


# -- safejson -----------------------------------------------------------------------------

def test_safejson_limits_the_depth_without_recursing():
    deepest = []
    for _ in range(MAX_DEPTH - 1):
        deepest = [deepest]
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH, "a.json") == deepest
    start = time.perf_counter()
    for text in ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "[" * 10**6,
                 '{"a": ' * 100_000 + "1" + "}" * 100_000):
        with pytest.raises(ValueError, match=r"^a.json: JSON nested deeper than 64 levels$"):
            loads(text, "a.json")
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize("text,value", [
    ('["' + "[" * 100 + r'\"' + "{" * 100 + '"]', ["[" * 100 + '"' + "{" * 100]),
    (r'["\\", {"k": "]]}}"}, "\\\"[[["]', ["\\", {"k": "]]}}"}, '\\"[[[']),
    ('["' + "\\n" * 10**6 + '"]', ["\n" * 10**6]),
])
def test_safejson_ignores_brackets_inside_strings(text, value):
    assert loads(text, "a.json") == value


def test_safejson_unterminated_string_is_malformed_not_deep():
    with pytest.raises(ValueError, match=r"^a.json: malformed JSON \(Unterminated string"):
        loads('["abc' + "[" * 100, "a.json")


@pytest.mark.parametrize("text,problem", [
    ("[NaN]", "NaN is not a JSON number"), ('{"a": Infinity}', "Infinity is not a JSON number"),
    ("-Infinity", "-Infinity is not a JSON number"), ("[1e400]", "1e400 overflows a float"),
    ("[1,]", "Expecting value"), ("", "Expecting value"), ("1" * 5000, "digits"),
    (b'{"\xff": 1}', "not UTF-8"),
])
def test_safejson_refuses_malformed_and_non_finite(text, problem):
    with pytest.raises(ValueError) as info:
        loads(text, "b.json")
    message = str(info.value)
    assert message.startswith("b.json: malformed JSON (") and problem in message
    assert "\n" not in message


def test_safejson_reads_bytes_and_catches_a_recursion_error(monkeypatch):
    assert loads('{"é": [1, 2.5, null, true]}'.encode(), "c.json") == {"é": [1, 2.5, None, True]}

    def overflow(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(json, "loads", overflow)      # e.g. called with the stack nearly full
    with pytest.raises(ValueError, match=r"^c.json: JSON nested too deeply to parse$"):
        loads("[[1]]", "c.json")

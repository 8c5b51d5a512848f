"""Helpers shared by the tests: small random models, files written by hand, an in-process
CLI runner."""

import ast
import gzip
import importlib.util
import inspect
import itertools
import os
import struct
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from featvis import DBN, RBM
from featvis.cli import main


RSS_MARGIN_KIB = 150 * 1024       # ru_maxrss is in KiB on Linux

# Runs a command and prints its exit status and peak RSS; its stderr passes through.
WRAPPER = ("import resource, subprocess, sys\n"
           "child = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
           "stderr=subprocess.PIPE)\n"
           "sys.stderr.buffer.write(child.stderr)\n"
           "print(child.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def measured_cli(*argv, cwd=None):
    """``(exit status, stderr, peak RSS in KiB)`` of ``featvis *argv`` in a fresh process
    (started in ``cwd``)."""
    command = [sys.executable, "-c", WRAPPER, sys.executable, "-m", "featvis.cli",
               *map(str, argv)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    status, rss = map(int, done.stdout.split())
    return status, done.stderr, rss


HOSTILE = "<script>alert(1)</script>"            # a name that must render as text
HOSTILE_ATTRIBUTE = 'x" onerror="alert(1)'        # ... and one that must not leave its quotes


def random_rbm(n_visible, n_hidden, seed=0, scale=1.0):
    """An untrained RBM with N(0, scale^2) weights and N(0, 1) biases."""
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(n_visible, n_hidden)
    with torch.no_grad():
        rbm.weight.copy_(scale * torch.randn(n_hidden, n_visible, generator=g))
        rbm.visible_bias.copy_(torch.randn(n_visible, generator=g))
        rbm.hidden_bias.copy_(torch.randn(n_hidden, generator=g))
    return rbm


def random_dbn(sizes, seed=0, scale=1.0, input_norm=2.0):
    """An untrained DBN made of :func:`random_rbm` layers."""
    dbn = DBN(sizes)
    for d, rbm in enumerate(dbn.rbms):
        rbm.load_state_dict(random_rbm(rbm.n_visible, rbm.n_hidden, seed + 100 * d,
                                       scale).state_dict())
    dbn.input_norm = input_norm
    return dbn


def run_cli(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``featvis *argv`` run in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:       # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def binary_states(n):
    """All ``2^n`` binary vectors of length ``n`` as a float64 ``(2^n, n)`` tensor."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def write_idx(path, array, code=0x08, *, compress=False, header=None, payload=None):
    """Write ``array`` as an IDX file (or a broken one, with ``header`` / ``payload``)."""
    header = header if header is not None else (
        struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
    if payload is None:
        payload = array.astype(array.dtype.newbyteorder(">")).tobytes()
    data = header + payload
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def read_checkpoint(path):
    """``(tensors, metadata)`` of a safetensors file."""
    with safe_open(str(path), framework="pt") as f:
        return {name: f.get_tensor(name) for name in f.keys()}, f.metadata()


def stopped_checkpoint(path, images, sizes, stop_after=1, device="cpu", **recipe):
    """Train a DBN that saves to ``path`` after each layer and is stopped after layer
    ``stop_after``; returns :func:`read_checkpoint` of what it left."""
    def save_then_stop(dbn, layer):
        dbn.save(path)
        if layer == stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        DBN(sizes).to(device).fit(images, progress=False, on_layer=save_then_stop, **recipe)
    return read_checkpoint(path)


def snapshot(root):
    """Every entry under ``root`` (symlinks not followed): relative path -> bytes of a file,
    ``("link", target)`` of a symlink, ``"dir"`` of a folder; to compare before and after."""
    import os
    from pathlib import Path

    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = "dir"
            else:
                state[rel] = path.read_bytes()
    return state


def imported_modules(module):
    """Absolute names of what ``module``'s source imports, at its top or inside functions
    (``from a import b`` counts ``a`` and ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""),
                                               module.__package__)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def refuse_unpickling(monkeypatch):
    """Make every unpickling entry point fail the test: loading must never unpickle."""
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("loading a checkpoint must never unpickle")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)

"""Small end-to-end runs whose outputs are pinned in ``tests/data/regression``: the
redesign's guarantee that a user sees the same files. Each case trains (or loads) a model
and runs ``featvis visualize`` through the CLI; ``summary.json`` is compared number by number
(to 1e-6) and every PNG byte for byte (by SHA-256).

Regenerate (only when a change of output is intended, and say so in the commit)::

    OMP_NUM_THREADS=1 python tests/regression.py
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

REFERENCE = Path(__file__).parent / "data" / "regression"
_VISUALIZE = ["--units", "3", "--steps", "10", "--restarts", "2", "--samples", "6", "--top",
              "3", "--quiet", "--device", "cpu"]
CASES = {
    "dbn": (["train", "--sizes", "784,24,12", "--epochs", "1", "--quiet"], []),
    "cdbn": (["train", "--model", "cdbn", "--conv-layers", "4x5x2,3x3x2", "--epochs", "1",
              "--quiet"], []),
    "natural": (["train", "--dataset", "natural", "--patch-size", "8", "--patches", "400",
                 "--epochs", "1", "--sizes", "64,12,6", "--quiet"], []),
    "cnn": (None, ["--model", "cnn", "--layers", "features.0,features.3,classifier.1"]),
}


def run_case(name: str, root: Path) -> Path:
    """Train the case's model under ``root`` (if it has one) and visualize it; the run."""
    from featvis.cli import main

    train, extra = CASES[name]
    model = []
    if train is not None:
        path = root / f"{name}.safetensors"
        assert main([*train, "--out", str(path)]) in (0, None)
        model = [str(path)]
    out = root / f"{name}-run"
    assert main(["visualize", *model, *extra, *_VISUALIZE, "--out", str(out)]) in (0, None)
    return out


def fingerprint(run: Path) -> dict:
    """What is pinned of a run: its summary (the model's path dropped) and each PNG's hash."""
    summary = json.loads((run / "summary.json").read_text())
    summary["model"].pop("path", None)
    pngs = {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*.png"))}
    return {"summary": summary, "pngs": pngs}


if __name__ == "__main__":
    import tempfile

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for case in sys.argv[1:] or CASES:
            pinned = fingerprint(run_case(case, Path(tmp)))
            (REFERENCE / f"{case}.json").write_text(json.dumps(pinned, indent=1) + "\n")
            print(case, len(pinned["pngs"]), "pngs")

"""Train a reference classifier (the CNN or the ViT) on full MNIST and write the weights
featvis ships.

Reproduces src/featvis/_weights/reference_{cnn,vit}.safetensors: the 60,000 training images,
Adam, one seed for the initial weights (the model's own generator) and for every epoch's
batch order. Prints the accuracy on the full 10,000-image test set and on the 2,000 test
images embedded in the package, and records both in the checkpoint. Bit-for-bit
reproduction needs the same torch build and thread count (recorded in the file's recipe).

    python scripts/train_reference.py cnn ../shared/data/mnist
    python scripts/train_reference.py vit ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from featvis import load_mnist
from featvis.data import mnist_info
from featvis.models import ReferenceCNN, ReferenceViT
from featvis.models.checkpoint import save_model

WEIGHTS = Path(__file__).resolve().parent.parent / "src/featvis/_weights"
# Each model and the recipe its shipped weights were trained with.
MODELS = {"cnn": (ReferenceCNN, {}, dict(epochs=4, batch_size=128, lr=3e-3, decay=0.5)),
          "vit": (ReferenceViT, {},
                  dict(epochs=8, batch_size=128, lr=2e-3, decay=0.7))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=sorted(MODELS))
    p.add_argument("root", type=Path, help="folder of the four MNIST IDX files")
    p.add_argument("--out", type=Path, default=None,
                   help="checkpoint to write (default: the shipped file)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (part of the result)")
    args = p.parse_args(argv)
    cls, config, recipe = MODELS[args.kind]
    out = args.out or WEIGHTS / f"reference_{args.kind}.safetensors"

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)           # nothing draws from it today; kept for safety
    torch.use_deterministic_algorithms(True)
    x, y = load_mnist("train", args.root)
    model = cls(**config, seed=args.seed)
    began = time.perf_counter()
    model.fit(x, y, seed=args.seed, **recipe)
    seconds = time.perf_counter() - began

    model.data_info = {**mnist_info(args.root, x), "source": "MNIST training files"}
    model.test_accuracy = {"mnist_test": model.score(*load_mnist("test", args.root)),
                           "embedded_test": model.score(*load_mnist("test"))}
    for name, result in model.test_accuracy.items():
        print(f"{name}: {result['correct']}/{result['total']} correct "
              f"({100 * result['accuracy']:.2f}%)")
    print(f"trained in {seconds:.0f} s")
    save_model(model, out)
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

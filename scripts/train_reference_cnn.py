"""Train the reference CNN on full MNIST and write the weights featvis ships.

Reproduces src/featvis/_weights/reference_cnn.safetensors: the 60,000 training images, Adam,
one seed for the initial weights (ReferenceCNN's own generator) and for every epoch's batch
order. Prints the accuracy on the full 10,000-image test set and on the 2,000 test images
embedded in the package, and records both in the checkpoint. Bit-for-bit reproduction needs
the same torch build and thread count (the defaults recorded in the file's recipe).

    python scripts/train_reference_cnn.py ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from featvis import load_mnist
from featvis.models.checkpoint import save_model
from featvis.data import mnist_info
from featvis.models import ReferenceCNN

SHIPPED = Path(__file__).resolve().parent.parent / "src/featvis/_weights/reference_cnn.safetensors"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="folder of the four MNIST IDX files")
    p.add_argument("--out", type=Path, default=SHIPPED, help="checkpoint to write")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--decay", type=float, default=0.5, help="learning rate factor per epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (part of the result)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)           # nothing draws from it today; kept for safety
    torch.use_deterministic_algorithms(True)
    x, y = load_mnist("train", args.root)
    model = ReferenceCNN(seed=args.seed)
    began = time.perf_counter()
    model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
              decay=args.decay, seed=args.seed)
    seconds = time.perf_counter() - began

    model.data_info = {**mnist_info(args.root, x), "source": "MNIST training files"}
    model.test_accuracy = {"mnist_test": model.score(*load_mnist("test", args.root)),
                           "embedded_test": model.score(*load_mnist("test"))}
    for name, result in model.test_accuracy.items():
        print(f"{name}: {result['correct']}/{result['total']} correct "
              f"({100 * result['accuracy']:.2f}%)")
    print(f"trained in {seconds:.0f} s")
    save_model(model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

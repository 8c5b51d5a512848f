"""The reference experiment: DBN 784-1000-500-250 on the full MNIST, rbm.m recipe, seed 0.

Prints, per RBM, the per-case training reconstruction error of every epoch (rbm.m's figure)
and, after training, the mean-field reconstruction error on the test set, next to the
reference figures of DESIGN.md (6.74 / 7.34 / 4.70 and 2.73 / 3.41 / 1.87).

    python benchmarks/reproduce_dbn.py [--data ../shared/data/mnist] [--epochs 10]
                                       [--threads 2] [--out runs/reference.safetensors]
"""

import argparse
import time
from pathlib import Path

import torch

from featvis import DBN, load_mnist

REFERENCE_TRAIN = [6.74, 7.34, 4.70]
REFERENCE_TEST = [2.73, 3.41, 1.87]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/reference.safetensors"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, _ = load_mnist("train", args.data)
    test, _ = load_mnist("test", args.data)
    start = time.perf_counter()
    dbn = DBN([784, 1000, 500, 250])
    dbn.data_info = {"name": "MNIST", "source": str(args.data), "n_train": len(train)}
    dbn.fit(train, epochs=args.epochs, seed=0, progress=False,
            on_epoch=lambda d, e: print(f"layer {d} epoch {e['epoch']:2d}: "
                                        f"{e['error_per_case']:.3f} per case", flush=True),
            on_layer=lambda model, d: model.save(args.out))
    print(f"trained in {time.perf_counter() - start:.0f} s on {args.threads} thread(s)")
    h = test
    print("layer  train error (epoch %d)  reference  ratio   test mean-field  reference"
          % args.epochs)
    for d, rbm in enumerate(dbn.rbms, start=1):
        final = rbm.history[-1]["error_per_case"]
        recon = ((rbm.visible_probs(rbm.hidden_probs(h)) - h) ** 2).sum(1).mean().item()
        print(f"{d:5d}  {final:21.3f}  {REFERENCE_TRAIN[d - 1]:9.2f}  "
              f"{final / REFERENCE_TRAIN[d - 1]:5.3f}   {recon:15.3f}  "
              f"{REFERENCE_TEST[d - 1]:9.2f}")
        h = rbm.hidden_probs(h)


if __name__ == "__main__":
    main()

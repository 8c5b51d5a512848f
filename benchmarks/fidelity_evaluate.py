"""Fidelity of the evaluation figures on the full MNIST.

1. An RBM with 500 hidden units trained with CD-1 (rbm.m recipe) on the full MNIST,
   binarized by sampling once with a fixed seed as in Salakhutdinov & Murray (2008); log Z
   by AIS (100 runs, the default 14,501 betas, base rate from the training data) and the
   average test log-probability. Published: -86.34 nats for CD-25 after long training;
   CD-1 models are known to be much worse (about -125).
2. Linear-probe test accuracy of raw pixels and of the three layers of the reference DBN
   (a checkpoint written by reproduce_dbn.py; trained here if missing).

    python benchmarks/fidelity_evaluate.py [--epochs 10] [--threads 2]
                                           [--dbn runs/reference.safetensors]
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from featvis import DBN, RBM, load_mnist  # noqa: E402
from featvis.models.evaluation import linear_probe, log_likelihood, log_partition_ais  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ais-runs", type=int, default=100)
    parser.add_argument("--dbn", type=Path, default=Path("runs/reference.safetensors"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = load_mnist("train", args.data)
    test = load_mnist("test", args.data)
    g = torch.Generator().manual_seed(0)
    binary_train = torch.rand(train[0].shape, generator=g).lt_(train[0])
    binary_test = torch.rand(test[0].shape, generator=g).lt_(test[0])

    start = time.perf_counter()
    rbm = RBM(784, 500).fit(binary_train, epochs=args.epochs, seed=0, progress=False)
    trained = time.perf_counter()
    estimate = log_partition_ais(rbm, n_runs=args.ais_runs, base_rate_images=binary_train,
                                 seed=0)
    ais = time.perf_counter()
    print(f"RBM 784-500, CD-1, {args.epochs} epochs ({trained - start:.0f} s); "
          f"AIS {args.ais_runs} runs ({ais - trained:.0f} s)")
    print(f"  log Z = {estimate.log_z:.2f}  (3 s.e.: {estimate.low:.2f} .. {estimate.high:.2f})")
    print(f"  average test log-probability {log_likelihood(rbm, binary_test, estimate.log_z):.2f}"
          f" nats  (train {log_likelihood(rbm, binary_train, estimate.log_z):.2f}); "
          "S&M 2008: -86.34 for CD-25, about -125 for CD-1")

    if args.dbn.exists():
        dbn = DBN.load(args.dbn)
    else:
        dbn = DBN([784, 1000, 500, 250]).fit(train[0], epochs=10, seed=0, progress=False)
        dbn.save(args.dbn)
    print(f"linear probes (softmax regression, L-BFGS) on {args.dbn}:")
    for layer in range(dbn.n_layers + 1):
        accuracy = linear_probe(dbn, train, test, layer)
        print(f"  {'pixels' if layer == 0 else f'layer {layer}':8s} test accuracy {accuracy:.2%}")


if __name__ == "__main__":
    main()

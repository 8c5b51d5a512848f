"""Activation maximization against the released lucent (torch-lucent 0.1.8): every channel of
a conv layer, several restarts each, with transforms and a Fourier parameterization.

lucent renders one objective per call (``render_vis`` with ``objectives.channel``), its
``batch`` pictures the restarts; featvis's ``maximize`` renders every channel and restart in
one batch. Both run ``--steps`` steps of Adam on 28 x 28 greyscale pictures of a LeNet-like
CNN's 64-channel layer (lucent: ``param.image(28, channels=1, batch=R, fft=True,
decorrelate=False)``, its standard transforms, no upsampling to 224 and no ImageNet
preprocessing, which a greyscale MNIST model does not take; featvis: ``param="fourier"``,
``transforms="standard"``). Rounds interleave the two; the figure is the median of lucent's
time / featvis's. lucent imports torchvision; see ../shared/peers/README.md::

    PYTHONPATH=../shared/peers/shim:src python benchmarks/bench_lucent.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _timing import seconds, set_threads, spread  # noqa: E402

from lucent.optvis import objectives, param, render, transform  # noqa: E402

from bench_methods import MNIST_NORM, WIDE_CHANNELS, lenet  # noqa: E402
from featvis import maximize  # noqa: E402

LAYER = "3"                       # lenet's second conv layer, WIDE_CHANNELS[1] channels


def with_lucent(cnn, steps: int, restarts: int) -> None:
    for channel in range(WIDE_CHANNELS[1]):
        render.render_vis(
            cnn, objectives.channel(LAYER, channel),
            lambda: param.image(28, channels=1, batch=restarts, fft=True, decorrelate=False),
            transforms=transform.standard_transforms, thresholds=(steps,), preprocess=False,
            fixed_image_size=28, show_image=False, progress=False)


def with_featvis(cnn, steps: int, restarts: int) -> None:
    maximize(cnn, LAYER, steps=steps, restarts=restarts, param="fourier",
             transforms="standard", spatial="mean", rho=MNIST_NORM, bounds=(0.0, 1.0),
             input_shape=(1, 28, 28))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    cnn = lenet(WIDE_CHANNELS)
    runs = {"lucent": lambda: with_lucent(cnn, args.steps, args.restarts),
            "featvis": lambda: with_featvis(cnn, args.steps, args.restarts)}
    for run in runs.values():
        run()                                                   # warm-up
    ratios = []
    for round_ in range(args.rounds):
        order = list(runs) if round_ % 2 == 0 else list(runs)[::-1]
        took = {name: seconds(runs[name]) for name in order}
        ratios.append(took["lucent"] / took["featvis"])
        print(f"round {round_ + 1}: lucent {took['lucent']:.2f} s, featvis "
              f"{took['featvis']:.2f} s, ratio {ratios[-1]:.2f}", flush=True)
    print(f"{WIDE_CHANNELS[1]} channels x {args.restarts} restarts x {args.steps} steps, "
          f"{args.threads} thread(s): lucent / featvis median {statistics.median(ratios):.2f}x "
          f"(min / median / max {spread(ratios)})")


if __name__ == "__main__":
    main()

"""Mining a transformer's MLP neurons against the forward pass alone.

The reference ViT's three MLP layers (``blocks.i.mlp.fc1``, 128 neurons over 17 tokens each)
are mined in one pass over the embedded 10,000 images (each neuron ranked by its maximum
over tokens, its token kept), against the hook-free forward pass of the same model cut at
the deepest mined layer, over the same pre-decoded batches of 1,000 (views of one tensor,
which mining indexes for the examples' means afterwards). The goal (issue 22):
mining at most 1.1x the forward. Rounds interleave the two (the machine's load meets
both alike); the figure is the median over rounds of mining time / forward time.

    python benchmarks/bench_vit.py [--rounds 31] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _timing import seconds, set_threads, spread  # noqa: E402

import torch  # noqa: E402

from featvis import load_mnist, probe, reference_vit, top_examples  # noqa: E402

LAYERS = [f"blocks.{i}.mlp.fc1" for i in range(3)]
BATCH = 1000


def cut_forward(vit, batches: list[torch.Tensor]) -> None:
    """The forward pass up to the last block's fc1, no hooks, every batch."""
    with torch.no_grad():
        for x in batches:
            h = vit.blocks[1](vit.blocks[0](vit.tokens(x)))
            last = vit.blocks[2]
            h = h + last.attn(last.norm1(h))
            last.mlp.fc1(last.norm2(h))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    vit = reference_vit()
    images, _ = load_mnist()
    images = images.view(-1, 1, 28, 28)
    batches = list(images.split(BATCH))          # decoded once: the forward's, as views
    seam = probe(vit, (1, 28, 28))
    seam.layer_keys()                                       # discovery, outside the timing
    mine = lambda: top_examples(seam, images, LAYERS, k=9, batch_size=BATCH)  # noqa: E731
    mine(), cut_forward(vit, batches)                       # warm-up
    ratios, times = [], []
    for round_ in range(args.rounds):
        pair = [("mine", mine), ("forward", lambda: cut_forward(vit, batches))]
        if round_ % 2:
            pair.reverse()
        took = {name: seconds(fn) for name, fn in pair}
        ratios.append(took["mine"] / took["forward"])
        times.append(took)
        print(f"round {round_ + 1}: mining {took['mine']:.3f} s, forward {took['forward']:.3f} s,"
              f" ratio {ratios[-1]:.3f}", flush=True)
    print(f"{len(images)} images, {len(LAYERS)} layers x 128 neurons x 17 tokens, "
          f"{args.threads} thread(s)")
    print(f"mining / cut forward: median {statistics.median(ratios):.3f} "
          f"(min / median / max {spread(ratios)}; goal <= 1.10)")


if __name__ == "__main__":
    main()

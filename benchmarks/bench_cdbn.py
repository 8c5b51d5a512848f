"""Speed of one epoch of a first convolutional RBM layer: featvis's batched CD-1 against the
loops that convolutional DBN code usually runs.

The layer is Lee et al.'s MNIST first layer by default: 40 filters of 10x10 with 2x2
probabilistic max-pooling on 28x28 digits (detection maps 18x18, the model sees 27x27).
Each round, at 1 thread and at 2, times one epoch of CD-1 (batches of 100) by:

* featvis: :meth:`ConvRBM.fit`, batched over images and filters (``F.conv2d``, a matmul and
  ``F.fold`` for the transposed convolution, ``conv2d_weight`` for the weight gradient);
* (a) the structure of the authors' MATLAB code: a loop over images and, inside, over filters,
  each a ``scipy.signal.correlate2d`` / ``convolve2d`` of one map (block softmax and sampling
  vectorised with numpy over the map), one update per image; timed on ``--loop-images``
  images and scaled to the epoch;
* (b) a Python loop over filters with torch's convolutions on one filter at a time (batched
  over the images, featvis's own block softmax); timed on ``--loop-batches`` batches and
  scaled.

The goal is featvis >= 5x the better of (a) and (b) (median over rounds, each ratio taken
within one round). Also reported: the GFLOP/s of featvis's convolutions (five per batch:
two up-passes, the transposed convolution and two weight gradients, each ``2 N K Hd Wd C
w^2`` FLOPs) against plain ``torch.conv2d`` running the up-pass convolution on the same
shapes, and the share of that rate featvis reaches.

    python benchmarks/bench_cdbn.py [--rounds 3] [--images 10000] [--filters 40] [--size 10]
                                    [--pool 2] [--loop-images 20] [--loop-batches 4]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _timing import seconds, set_threads, spread  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy.signal import convolve2d, correlate2d  # noqa: E402

from featvis import load_mnist  # noqa: E402
from featvis.models.conv import ConvRBM, block_softmax, sample_blocks  # noqa: E402

BATCH = 100
RECIPE = dict(lr=0.5, sparsity_target=0.01, sparsity_cost=1.0, weight_decay=1e-3)


def goal(values: list[float], target: float) -> str:
    """The goal on the median of ``values``, and PASS or MISS."""
    met = float(np.median(values)) >= target
    return f"goal >= {target:g}  {'PASS' if met else 'MISS'}"


# -- (a) the authors' structure: per image, per filter, scipy --------------------------------
def numpy_block_softmax(logits: np.ndarray, pool: int) -> np.ndarray:
    """Detection probabilities of one image's ``(K, Hd, Wd)`` logits (vectorised over the map,
    as the authors' code does with reshapes)."""
    k, h, w = logits.shape
    x = logits.reshape(k, h // pool, pool, w // pool, pool)
    shift = np.maximum(x.max(axis=(2, 4), keepdims=True), 0)
    e = np.exp(x - shift)
    total = e.sum(axis=(2, 4), keepdims=True) + np.exp(-shift)
    return (e / total).reshape(k, h, w)


def numpy_sample(probs: np.ndarray, pool: int, rng: np.random.Generator) -> np.ndarray:
    """One multinomial per block of ``(K, Hd, Wd)`` probabilities."""
    k, h, w = probs.shape
    blocks = probs.reshape(k, h // pool, pool, w // pool, pool).transpose(0, 1, 3, 2, 4)
    cum = blocks.reshape(k, h // pool, w // pool, pool * pool).cumsum(-1)
    above = cum > rng.random((k, h // pool, w // pool, 1))
    first = above.copy()
    first[..., 1:] &= ~above[..., :-1]
    out = first.reshape(k, h // pool, w // pool, pool, pool).transpose(0, 1, 3, 2, 4)
    return out.reshape(k, h, w).astype(probs.dtype)


def scipy_epoch(images: np.ndarray, weight: np.ndarray, pool: int, lr: float = 0.1) -> None:
    """CD-1 over ``images (M, H, W)`` one image at a time, one filter at a time (the loops of
    the authors' MATLAB code, ``conv2`` there, scipy here); updates ``weight (K, w, w)``."""
    k, w, _ = weight.shape
    hidden_bias, visible_bias = np.zeros(k, np.float32), np.float32(0)
    rng = np.random.default_rng(0)
    for v in images:
        hd = (v.shape[0] - w + 1) // pool * pool
        wd = (v.shape[1] - w + 1) // pool * pool
        v = v[:hd + w - 1, :wd + w - 1]
        pos = np.stack([correlate2d(v, weight[f], "valid") for f in range(k)])
        pos = numpy_block_softmax(pos + hidden_bias[:, None, None], pool)
        h = numpy_sample(pos, pool, rng)
        recon = sum(convolve2d(h[f], weight[f], "full") for f in range(k)) + visible_bias
        recon = 1 / (1 + np.exp(-recon))
        neg = np.stack([correlate2d(recon, weight[f], "valid") for f in range(k)])
        neg = numpy_block_softmax(neg + hidden_bias[:, None, None], pool)
        count = hd * wd
        for f in range(k):
            weight[f] += lr / count * (correlate2d(v, pos[f], "valid")
                                       - correlate2d(recon, neg[f], "valid"))
        hidden_bias += lr / count * (pos.sum((1, 2)) - neg.sum((1, 2)))
        visible_bias += lr / count * (v.sum() - recon.sum())


# -- (b) a loop over filters with torch ------------------------------------------------------
def filter_loop_step(v: torch.Tensor, rbm: ConvRBM, generator: torch.Generator,
                     lr: float = 0.1) -> None:
    """CD-1 on the batch ``v (B, 1, Hv, Wv)`` with one torch convolution per filter."""
    W, c, b, pool = rbm.weight, rbm.hidden_bias, rbm.visible_bias, rbm.pool
    k = W.shape[0]
    pos = []
    recon = torch.zeros_like(v)
    for f in range(k):
        p, _ = block_softmax(F.conv2d(v, W[f:f + 1], c[f:f + 1]), pool)
        s, _ = sample_blocks(p, pool, generator)
        pos.append(p)
        recon += F.conv_transpose2d(s, W[f:f + 1])
    recon = (recon + b).sigmoid_()
    count = v.shape[0] * pos[0].shape[2] * pos[0].shape[3]
    for f in range(k):
        neg, _ = block_softmax(F.conv2d(recon, W[f:f + 1], c[f:f + 1]), pool)
        grad = (torch.nn.grad.conv2d_weight(v, (1, 1, *W.shape[2:]), pos[f])
                - torch.nn.grad.conv2d_weight(recon, (1, 1, *W.shape[2:]), neg))
        W[f:f + 1] += lr / count * grad
        c[f] += lr / count * (pos[f].sum() - neg.sum())
    b += lr / count * (v.sum() - recon.sum())


# -- one round -------------------------------------------------------------------------------
def conv_flops(n: int, rbm: ConvRBM, height: int, width: int) -> float:
    """FLOPs of one convolution of the up-pass over ``n`` images."""
    hd, wd = rbm.map_shapes(height, width)["detection"]
    return 2.0 * n * rbm.filters * hd * wd * rbm.channels * rbm.filter_size ** 2


def one_round(args: argparse.Namespace, images: torch.Tensor) -> dict[str, float]:
    n = len(images)
    rbm = ConvRBM(1, args.filters, args.size, args.pool)
    fit = seconds(lambda: rbm.fit(images, epochs=1, batch_size=BATCH, progress=False,
                                  **RECIPE))
    # (a) scipy, per image and filter, on a subset.
    subset = images[:args.loop_images, 0].numpy().astype(np.float64)
    weight = (0.01 * np.random.default_rng(0).standard_normal(
        (args.filters, args.size, args.size))).astype(np.float64)
    scipy_s = seconds(lambda: scipy_epoch(subset, weight, args.pool)) * n / len(subset)
    # (b) torch, one filter at a time, on a few batches.
    loop_rbm = ConvRBM(1, args.filters, args.size, args.pool)
    generator = torch.Generator().manual_seed(0)
    batches = [loop_rbm.crop(images[i * BATCH:(i + 1) * BATCH])
               for i in range(args.loop_batches)]
    with torch.no_grad():
        loop_s = seconds(lambda: [filter_loop_step(v, loop_rbm, generator) for v in batches])
    loop_s *= n / (BATCH * args.loop_batches)
    # Plain conv2d on the same shapes: the up-pass convolution of every batch.
    cropped = rbm.crop(images)
    weight_t = rbm.weight.detach().clone()
    with torch.no_grad():
        conv_s = seconds(lambda: [F.conv2d(v, weight_t) for v in cropped.split(BATCH)])
    flops = conv_flops(n, rbm, images.shape[2], images.shape[3])
    return {"fit_s": fit, "scipy_s": scipy_s, "loop_s": loop_s,
            "vs_scipy": scipy_s / fit, "vs_loop": loop_s / fit,
            "vs_best": min(scipy_s, loop_s) / fit,
            "gflops": 5 * flops / fit / 1e9, "conv_gflops": flops / conv_s / 1e9,
            "of_conv": (5 * flops / fit) / (flops / conv_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=10_000,
                        help="MNIST images of the epoch (the embedded set, tiled if more)")
    parser.add_argument("--filters", type=int, default=40)
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--loop-images", type=int, default=20,
                        help="images timed by the scipy loop (scaled to the epoch)")
    parser.add_argument("--loop-batches", type=int, default=4,
                        help="batches of 100 timed by the per-filter torch loop (scaled)")
    args = parser.parse_args()
    pixels = load_mnist("train")[0]
    tiles = -(-args.images // len(pixels))
    images = pixels.repeat(tiles, 1)[:args.images].view(-1, 1, 28, 28).contiguous()
    shapes = ConvRBM(1, args.filters, args.size, args.pool).map_shapes(28, 28)
    print(f"featvis ConvRBM benchmark: {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.rounds} rounds; one epoch of CD-1 on {len(images):,} MNIST images, "
          f"{args.filters} filters {args.size}x{args.size}, pool {args.pool} (detection "
          f"{shapes['detection'][0]}x{shapes['detection'][1]}), batches of {BATCH}")
    for threads in (1, 2):
        set_threads(threads)
        one_round(argparse.Namespace(**{**vars(args), "loop_images": 2, "loop_batches": 1}),
                  images[:BATCH])                                   # warm-up
        results = [one_round(args, images) for _ in range(args.rounds)]
        col = lambda key: [r[key] for r in results]   # noqa: E731
        print(f"\n== {threads} thread(s) (min / median / max over rounds)")
        print(f"  featvis epoch, s                   {spread(col('fit_s'))}")
        print(f"  (a) scipy per image x filter, s    {spread(col('scipy_s'))}"
              f"   (timed on {args.loop_images} images, scaled)")
        print(f"  (b) torch loop over filters, s     {spread(col('loop_s'))}"
              f"   (timed on {args.loop_batches} batches, scaled)")
        print(f"  speed-up vs (a)                    {spread(col('vs_scipy'))}x")
        print(f"  speed-up vs (b)                    {spread(col('vs_loop'))}x")
        print(f"  speed-up vs the better of them     {spread(col('vs_best'))}x   "
              f"{goal(col('vs_best'), 5)}")
        print(f"  featvis convolutions, GFLOP/s      {spread(col('gflops'))}")
        print(f"  plain torch.conv2d, GFLOP/s        {spread(col('conv_gflops'))}")
        print(f"  featvis / plain conv2d rate        {spread(col('of_conv'))}")


if __name__ == "__main__":
    main()

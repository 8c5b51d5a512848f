"""Speed and memory of the batched methods against the way tools usually run them.

Five measurements, each repeated for --rounds rounds, at 1 thread and at 2, with every
ratio taken between runs of the same round (so a busy machine affects both sides alike):

1. maximize: all 250 units of layer 3 of a 784-1000-500-250 DBN, 300 steps, 1 restart, in
   one batch vs one unit at a time (how lucent-style tools render units); the batched run's
   rate against torch's default matmul running the same products (forward plus input
   gradient) and against the fastest float32 GEMM found (torch, oneDNN, numpy/OpenBLAS).
   With --restarts R > 1, also against a loop over units x restarts.
2. top_examples: stream 60,000 inputs for all 1,750 units vs materializing the full
   activation matrix and calling topk; time, and extra peak memory (RSS, measured once
   per variant in a fresh process).
3. sample_unit one-hot: 500 units of layer 2, 100 samples each, vs the time of its matrix
   products alone.
4. A LeNet-like CNN: top_examples of every channel of its two conv layers vs the bare
   forward up to the deeper one on the same batches; maximize of all channels of its second
   conv layer in one batch vs one channel at a time, with 1 and 4 restarts.
5. The same CNN with a 64-channel second conv layer: maximize of its 64 channels x 4
   restarts with the standard transforms in one batch vs a lucent-style loop (per channel:
   hooks on every module, the whole forward pass, lucent's transforms one op at a time, Adam
   on the 4 pictures clamped to the box; the goal's peer), and vs featvis itself one channel per call (the stricter peer);
   deconvnet projections of its 64 channels' top 9 of 1,000 inputs, batched vs one example at
   a time. Mining runs at the same batch size, so it is timed alone and subtracted from both.

Without the full MNIST in --data, the embedded 10,000 images are tiled to --rows (and the
header says so). --only runs the DBN cases (1-3), the CNN case (4) or the 64-channel case (5)
alone.

    python benchmarks/bench_methods.py [--rounds 3] [--rows 60000] [--steps 300]
                                       [--only {dbn,cnn,cnn64}]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _timing import extra_peak, seconds, set_threads, spread  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from featvis import DBN, deconvnet, load_mnist, maximize, sample_unit, top_examples  # noqa: E402

SIZES = [784, 1000, 500, 250]
MNIST_NORM = 9.215               # mean L2 norm of an MNIST image: maximization's radius
CNN_LAYERS = ["0", "3"]          # lenet()'s Conv2d layers (16, 32 channels), by index
CNN_STEPS = 50
CNN_RESTARTS = (1, 4)
WIDE_CHANNELS = (16, 64)         # the 64-channel case's conv layers
WIDE_STEPS = 20
WIDE_RESTARTS = 4
DECONV_ROWS = 1000               # inputs mined for the deconvnet projections
DECONV_BATCH = 64                # deconvnet's default batch size


def reference_dbn() -> DBN:
    """A DBN of the reference shape; random weights cost the same as trained ones."""
    dbn = DBN(SIZES, seed=0)
    dbn.input_norm = MNIST_NORM
    return dbn


def lenet(channels: tuple[int, int] = (16, 32)) -> nn.Sequential:
    """A LeNet-like CNN for 28x28 inputs with ``channels`` in its conv layers "0" and "3",
    seeded, untrained (it costs the same), in eval mode."""
    torch.manual_seed(0)
    first, second = channels
    return nn.Sequential(
        nn.Conv2d(1, first, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(first, second, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * second, 128), nn.ReLU(), nn.Linear(128, 10)).eval()


def gemm_rates(m: int, k: int, n: int, repeat: int = 20) -> dict[str, float]:
    """GFLOP/s of an (m, k) x (k, n) float32 product by torch, oneDNN and numpy."""
    a, b = torch.rand(m, k), torch.rand(k, n)
    flops = 2.0 * m * k * n * repeat
    rates = {"torch": flops / seconds(lambda: [a @ b for _ in range(repeat)]) / 1e9}
    am, bt = a.to_mkldnn(), b.t().contiguous().to_mkldnn()
    rates["onednn"] = flops / seconds(
        lambda: [torch._C._nn.mkldnn_linear(am, bt, None) for _ in range(repeat)]) / 1e9
    an, bn = a.numpy(), b.numpy()
    rates["numpy"] = flops / seconds(lambda: [an @ bn for _ in range(repeat)]) / 1e9
    return rates


def bench_maximize(dbn: DBN, steps: int, restarts: int, loop_units: int) -> dict[str, float]:
    units = dbn.sizes[3]
    batched = seconds(lambda: maximize(dbn, 3, steps=steps, restarts=restarts))
    # The unit-by-unit loop is timed on a subset and scaled: same per-unit work.
    looped = seconds(lambda: [maximize(dbn, 3, units=[u], steps=steps, restarts=restarts)
                              for u in range(loop_units)]) * units / loop_units
    out = {"batched_s": batched, "ratio_units": looped / batched}
    if restarts > 1:
        one = seconds(lambda: [maximize(dbn, 3, units=[u], steps=steps, restarts=1, seed=r)
                               for u in range(loop_units // restarts or 1)
                               for r in range(restarts)])
        out["ratio_units_x_restarts"] = one * units / (loop_units // restarts or 1) / batched
    # The products one step must do for B rows: forward through W1 and W2, input gradient
    # back through them (the last layer is a row-wise dot product, negligible).
    rows = units * restarts
    x, h1, g2, g1 = torch.rand(rows, 784), torch.rand(rows, 1000), torch.rand(rows, 500), \
        torch.rand(rows, 1000)
    W1, W2 = dbn.rbms[0].weight, dbn.rbms[1].weight
    matmul = seconds(lambda: [(x @ W1.t(), h1 @ W2.t(), g2 @ W2, g1 @ W1)
                              for _ in range(steps)])
    flops = 4.0 * rows * (784 * 1000 + 1000 * 500) * steps
    out["gflops"] = flops / batched / 1e9
    out["of_torch_matmul"] = matmul / batched
    return out


def mine(variant: str, dbn: DBN, images: torch.Tensor) -> None:
    """Top-9 inputs of all 1,750 units: streamed by featvis, or via the full matrix."""
    if variant == "stream":
        top_examples(dbn, images, [1, 2, 3], k=9, batch_size=1000)
        return
    with torch.no_grad():
        h1 = dbn.rbms[0].hidden_probs(images)
        h2 = dbn.rbms[1].hidden_probs(h1)
        h3 = dbn.rbms[2].hidden_probs(h2)
        torch.cat([h1, h2, h3], 1).topk(9, dim=0)                    # (N, 1750)


def extra_memory(variant: str, rows: int, data: str) -> float:
    """Extra peak RSS (MB) of one mining run, in a fresh process whose large blocks are
    always mmapped, so that freed tensors leave the resident set (glibc would otherwise
    reuse memory of earlier runs and hide the peak)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, __file__, "--memory-probe", variant,
                          "--rows", str(rows), "--data", data],
                         env=env, capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


def bench_examples(dbn: DBN, images: torch.Tensor) -> dict[str, float]:
    t_stream = seconds(lambda: mine("stream", dbn, images))
    t_full = seconds(lambda: mine("full", dbn, images))
    return {"stream_s": t_stream, "full_s": t_full, "time_ratio": t_stream / t_full}


def bench_sampling(dbn: DBN, samples: int) -> dict[str, float]:
    total = seconds(lambda: sample_unit(dbn, 2, n_samples=samples, seed=0))
    h1 = (torch.rand(500 * samples, 1000) < 0.5).float()
    W1 = dbn.rbms[0].weight
    products = seconds(lambda: h1 @ W1)
    return {"total_s": total, "products_s": products, "ratio": total / products}


def bench_cnn(cnn: nn.Sequential, images: torch.Tensor) -> dict[str, float]:
    """Time ratios of the CNN case: mining (featvis / bare forward) and maximization (loop
    over channels / one batch) per number of restarts."""
    deeper = CNN_LAYERS[-1]
    prefix = cnn[:int(deeper) + 1]

    def forward() -> None:
        with torch.no_grad():
            for batch in images.split(1000):
                prefix(batch)

    mined = seconds(lambda: top_examples(cnn, images, CNN_LAYERS, k=9, batch_size=1000))
    out = {"mining": mined / seconds(forward)}
    for restarts in CNN_RESTARTS:
        options = dict(rho=MNIST_NORM, steps=CNN_STEPS, restarts=restarts,
                       input_shape=images.shape[1:])
        batched = seconds(lambda: maximize(cnn, deeper, **options))
        looped = seconds(lambda: [maximize(cnn, deeper, units=[c], **options)
                                  for c in range(cnn[int(deeper)].out_channels)])
        out[f"max{restarts}"] = looped / batched
    return out


def lucent_transforms(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Lucent's standard transforms scaled to 28 x 28, one op each and one draw per batch as
    lucent does: pad 4, a random crop of 4 (its jitter), bilinear rescaling by 0.95-1.05,
    rotation by -5..5 degrees on an affine grid, a random crop of 2; then the centre crop
    the model's Linear layer needs."""
    def draw(n: int) -> int:
        return int(torch.randint(n, (), generator=generator))

    def crop(image: torch.Tensor, d: int) -> torch.Tensor:
        top, left = draw(d), draw(d)
        return image[..., top:top + image.shape[-2] - d, left:left + image.shape[-1] - d]

    size = x.shape[-1]
    image = crop(F.pad(x, (4, 4, 4, 4)), 4)
    scale = 0.95 + 0.01 * draw(11)
    image = F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=True)
    angle = math.radians(draw(11) - 5)
    theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0],
                          [math.sin(angle), math.cos(angle), 0.0]]).expand(len(image), 2, 3)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    image = crop(F.grid_sample(image, grid, align_corners=False), 2)
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    return image[..., top:top + size, left:left + size]


def lucent_style(cnn: nn.Sequential, layer: str, channel: int, steps: int, restarts: int
                 ) -> torch.Tensor:
    """One channel rendered the way lucent's ``render_vis`` does: forward hooks on every
    module (its ``hook_model``), the whole model run every step, the channel's mean as the
    objective, Adam on ``restarts`` pictures kept in the box [0, 1], lucent's transforms
    (``lucent_transforms``)."""
    captured = {}
    hooks = [module.register_forward_hook(
        lambda m, i, out, name=name: captured.__setitem__(name, out))
        for name, module in cnn.named_modules()]
    try:
        generator = torch.Generator().manual_seed(channel)
        x = torch.rand(restarts, 1, 28, 28, generator=generator)
        x.requires_grad_(True)
        adam = torch.optim.Adam([x], lr=0.05)
        for _ in range(steps):
            cnn(lucent_transforms(x, generator))
            loss = -captured[layer][:, channel].mean()
            adam.zero_grad()
            loss.backward()
            adam.step()
            with torch.no_grad():
                x.clamp_(0, 1)
    finally:
        for hook in hooks:
            hook.remove()
    return x.detach()


def bench_wide(cnn: nn.Sequential, images: torch.Tensor) -> dict[str, float]:
    """Time ratios of the 64-channel case, one example (channel) at a time / batched:
    maximization with transforms against a lucent-style loop and against featvis per
    channel, and deconvnet's projections (its time less mining's)."""
    # The peer's objective: the channel's plain mean (lucent's "channel" objective).
    options = dict(rho=MNIST_NORM, bounds=(0.0, 1.0), steps=WIDE_STEPS, restarts=WIDE_RESTARTS,
                   transforms="standard", input_shape=images.shape[1:], spatial="mean")
    batched = seconds(lambda: maximize(cnn, "3", **options))
    lucent = seconds(lambda: [lucent_style(cnn, "3", c, WIDE_STEPS, WIDE_RESTARTS)
                              for c in range(WIDE_CHANNELS[1])])
    looped = seconds(lambda: [maximize(cnn, "3", units=[c], **options)
                              for c in range(WIDE_CHANNELS[1])])

    def projection(batch_size: int) -> float:
        return (seconds(lambda: deconvnet(cnn, images, "3", k=9, batch_size=batch_size))
                - seconds(lambda: top_examples(cnn, images, "3", k=9, batch_size=batch_size)))

    return {"max": lucent / batched, "max_featvis": looped / batched,
            "deconv": projection(1) / projection(DECONV_BATCH)}


def goal(values: list[float], target: float, at_least: bool) -> str:
    """The goal on the median of ``values``, and PASS or MISS."""
    median = float(np.median(values))
    met = median >= target if at_least else median <= target
    return f"goal {'>=' if at_least else '<='} {target:g}  {'PASS' if met else 'MISS'}"


def load_images(data: str, rows: int) -> tuple[torch.Tensor, str]:
    """``rows`` MNIST training images, and where they come from: the full set in ``data`` or,
    if that folder is missing, the embedded subset; tiled if there are fewer than ``rows``."""
    found = os.path.isdir(data)
    images = load_mnist("train", data if found else None)[0]
    source = f"MNIST from {data}" if found else \
        f"{data} missing: the embedded {len(images):,} images"
    tiles = -(-rows // len(images))
    if tiles > 1:
        images, source = images.repeat(tiles, 1), f"{source}, tiled {tiles} times"
    return images[:rows], source


def report_dbn(args: argparse.Namespace, dbn: DBN, images: torch.Tensor,
               memory: dict[str, float]) -> None:
    """Cases 1-3 at the current thread count."""
    rate = gemm_rates(250, 784, 1000)
    print("GEMM 250x784x1000 GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rate.items()))
    results = {"max1": [], "max9": [], "ex": [], "smp": []}
    for _ in range(args.rounds):
        results["max1"].append(bench_maximize(dbn, args.steps, 1, args.loop_units))
        results["max9"].append(bench_maximize(dbn, args.steps, args.restarts,
                                              args.loop_units))
        results["ex"].append(bench_examples(dbn, images))
        results["smp"].append(bench_sampling(dbn, 100))
    best_gemm = max(rate.values())
    col = lambda name, key: [r[key] for r in results[name]]   # noqa: E731
    print("maximize, 250 units, 1 restart (min / median / max over rounds)")
    print(f"  batched vs one unit at a time     {spread(col('max1', 'ratio_units'))}x"
          "   goal >= 7x")
    print(f"  of torch matmul, same products    {spread(col('max1', 'of_torch_matmul'))}"
          "    goal >= 0.80")
    print(f"  GFLOP/s, of fastest GEMM ({best_gemm:.0f})  "
          f"{spread(col('max1', 'gflops'))}  = "
          f"{np.median(col('max1', 'gflops')) / best_gemm:.2f} of the limit")
    print(f"maximize, {args.restarts} restarts")
    print(f"  batched vs loop over units        {spread(col('max9', 'ratio_units'))}x")
    print(f"  batched vs loop units x restarts  "
          f"{spread(col('max9', 'ratio_units_x_restarts'))}x")
    print("top_examples, 1750 units, streaming vs full matrix + topk")
    print(f"  time ratio                        {spread(col('ex', 'time_ratio'))}"
          "    goal <= 1.0")
    print(f"  extra peak memory ratio            {memory['stream'] / memory['full']:6.3f}"
          f"             goal <= 0.10  (stream {memory['stream']:.0f} MB, "
          f"full {memory['full']:.0f} MB; fresh processes)")
    print("sample_unit one-hot, 500 units x 100 samples")
    print(f"  time / its matrix products        {spread(col('smp', 'ratio'))}"
          "    goal <= 2.0")


def report_cnn(args: argparse.Namespace, cnn: nn.Sequential, images: torch.Tensor) -> None:
    """Case 4 at the current thread count."""
    results = [bench_cnn(cnn, images) for _ in range(args.rounds)]
    col = lambda key: [r[key] for r in results]   # noqa: E731
    print("LeNet-like CNN (min / median / max over rounds)")
    print(f"  top_examples 16+32 channels / forward to layer 3  {spread(col('mining'))}"
          f"    {goal(col('mining'), 1.3, False)}")
    for restarts in CNN_RESTARTS:
        print(f"  maximize 32 channels x {restarts} restart(s), {CNN_STEPS} steps, "
              f"loop / batched {spread(col(f'max{restarts}'))}x   "
              f"{goal(col(f'max{restarts}'), 5, True)}")


def report_wide(args: argparse.Namespace, cnn: nn.Sequential, images: torch.Tensor) -> None:
    """Case 5 at the current thread count, after a warm-up of deconvnet's first call."""
    deconvnet(cnn, images[:DECONV_BATCH], "3", k=9)
    results = [bench_wide(cnn, images) for _ in range(args.rounds)]
    col = lambda key: [r[key] for r in results]   # noqa: E731
    print(f"LeNet-like CNN, {WIDE_CHANNELS[1]}-channel layer 3 (min / median / max over rounds)")
    print(f"  maximize {WIDE_CHANNELS[1]} channels x {WIDE_RESTARTS} restarts, transforms, "
          f"{WIDE_STEPS} steps, lucent-style loop / batched  {spread(col('max'))}x   "
          f"{goal(col('max'), 5, True)}")
    print(f"  the same, featvis one channel per call / batched  {spread(col('max_featvis'))}x")
    print(f"  deconvnet projections {WIDE_CHANNELS[1]} channels x 9 of {len(images):,}, "
          f"one at a time / batched {DECONV_BATCH}  {spread(col('deconv'))}x   "
          f"{goal(col('deconv'), 5, True)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--restarts", type=int, default=9)
    parser.add_argument("--loop-units", type=int, default=25,
                        help="units timed one at a time (scaled to 250)")
    parser.add_argument("--data", default="../shared/data/mnist")
    parser.add_argument("--only", choices=["dbn", "cnn", "cnn64"],
                        help="run these cases alone")
    parser.add_argument("--memory-probe", choices=["stream", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    dbn = reference_dbn()
    images, source = load_images(args.data, args.rows)
    if args.memory_probe:
        set_threads(1)
        mine(args.memory_probe, dbn, images[:2000])      # warm-up: lazy buffers of MKL, torch
        print(extra_peak(lambda: mine(args.memory_probe, dbn, images))[1] / 2**20)
        return
    runs = lambda case: args.only in (None, case)   # noqa: E731
    memory = {v: extra_memory(v, args.rows, args.data) for v in ("stream", "full")} \
        if runs("dbn") else {}
    cnn, wide = lenet(), lenet(WIDE_CHANNELS)
    pictures = images.view(-1, 1, 28, 28)
    print(f"featvis methods benchmark: {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.rounds} rounds, {len(images)} inputs ({source})")
    for threads in (1, 2):
        set_threads(threads)
        print(f"\n== {threads} thread(s)")
        if runs("dbn"):
            report_dbn(args, dbn, images, memory)
        if runs("cnn"):
            report_cnn(args, cnn, pictures)
        if runs("cnn64"):
            report_wide(args, wide, pictures[:DECONV_ROWS])


if __name__ == "__main__":
    main()

"""Mining throughput against the physical limit: the model's own hook-free forward pass over
the same ``DataLoader``.

Two models: the reference CNN (``featvis.reference_cnn``, 28 x 28 grey MNIST digits) and a
ResNet-18-sized plain-torch model (11.2 M parameters, BasicBlocks 64-128-256-512) on 64 x 64
RGB inputs. Each reads a ``featvis.NpyImages`` dataset of generated images through a
``DataLoader`` with 2 decoding workers, in batches of 250 (the CNN) or 100 (the ResNet). The
forward pass is ``model(x)`` under ``no_grad`` for every loader batch; mining is
``featvis.top_examples`` of every Conv2d and Linear layer (the default layers: 4 for the
CNN, 21 for the ResNet), k = 9, over the same dataset and loader settings, which also hooks
every layer, reduces each channel to its maximum and keeps the running top-k. The goal
(issue 23): mining throughput at least 0.9x the forward's, i.e. time(forward) /
time(mining) >= 0.9. Rounds interleave the two (the machine's load meets both alike); the
figure is the median ratio over rounds. ``--statistics`` also times
``featvis.unit_statistics`` of one layer (every unit's histogram, bands and bottom-k).

    python benchmarks/bench_mining.py [--rounds 7] [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from _timing import seconds, set_threads, spread  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from featvis import Loading, NpyImages, reference_cnn, top_examples, unit_statistics  # noqa: E402


class Block(nn.Module):
    """A ResNet BasicBlock: two 3 x 3 convolutions, batch norms, a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.short(x))


def resnet18(classes: int = 200) -> nn.Module:
    """ResNet-18 for 64 x 64 inputs (Tiny-ImageNet style: a 3 x 3 stem, no max pool)."""
    torch.manual_seed(0)
    layers, cin = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*layers).eval()


def dataset(folder: str, name: str, shape: tuple[int, ...], n: int) -> NpyImages:
    """``n`` generated uint8 images of ``shape`` as a .npy file, read as a dataset."""
    path = os.path.join(folder, f"{name}.npy")
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 256, (n, *shape), dtype=np.uint8))
    return NpyImages(path)


def forward(model: nn.Module, data: NpyImages, batch: int, workers: int,
            device: torch.device) -> None:
    """The model's own forward over the dataset, read by a DataLoader as mining reads it."""
    loader = DataLoader(data, batch_size=batch, num_workers=workers,
                        pin_memory=device.type == "cuda")
    with torch.no_grad():
        for x, _ in loader:
            model(x.to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize()


def mining(model: nn.Module, data: NpyImages, batch: int, workers: int) -> None:
    top_examples(model, data, _layers(model), k=9, batch_size=batch,
                 loading=Loading(workers=workers))


def _layers(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--statistics", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        cases = {"reference CNN, 28x28 grey": (reference_cnn().to(device),
                                               dataset(folder, "digits", (1, 28, 28), 10_000),
                                               250),
                 "ResNet-18, 64x64 RGB": (resnet18().to(device),
                                          dataset(folder, "rgb", (3, 64, 64), 600), 100)}
        for name, (model, data, batch) in cases.items():
            forward(model, data, batch, args.workers, device)           # warm up both
            mining(model, data, batch, args.workers)
            ratios, times = [], []
            for _ in range(args.rounds):
                f = seconds(lambda: forward(model, data, batch, args.workers, device))
                m = seconds(lambda: mining(model, data, batch, args.workers))
                ratios.append(f / m)
                times.append((f, m))
            fwd = statistics.median(t[0] for t in times)
            mine = statistics.median(t[1] for t in times)
            print(f"{name}: {len(_layers(model))} layers, {len(data)} inputs, "
                  f"{args.rounds} rounds, {args.threads} threads, {args.workers} workers, "
                  f"{device}")
            print(f"  forward {len(data) / fwd:8.0f} inputs/s, mining {len(data) / mine:8.0f} "
                  f"inputs/s; throughput ratio mining/forward (min / median / max): "
                  f"{spread(ratios)}")
            if args.statistics:
                layer = _layers(model)[-2]
                s = statistics.median(seconds(lambda: unit_statistics(
                    model, data, layer, batch_size=batch, loading=Loading(args.workers)))
                    for _ in range(3))
                print(f"  unit_statistics of {layer}: {len(data) / s:8.0f} inputs/s "
                      "(a head pass for the range, then the pass)")


if __name__ == "__main__":
    main()

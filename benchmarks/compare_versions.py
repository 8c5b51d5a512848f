"""Speed of this featvis against another checkout of it (the code before a redesign), on the
public API both share: ``visualize`` of a DBN and of a CNN (the methods both have), and the
methods one by one.

Each round runs every workload in a fresh process of each version, in alternating order
(old, new, new, old, ...), so both meet the same load on a shared machine. A process times each
workload ``--repeats`` times after a warm-up call (each sample as many calls as last about
0.2 s, so a millisecond call is not timer noise) and keeps the median, so one slow call (a
page fault, a neighbour's burst) does not decide a round; the figure is the median over rounds
of old time / new time (1.0: the same speed; above 1: the new code is faster). Run from the repository root::

    git worktree add /tmp/featvis-old <commit>
    python benchmarks/compare_versions.py --old /tmp/featvis-old --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKLOADS = ("visualize_dbn", "visualize_cnn", "top_examples", "maximize", "sample_unit",
             "deconvnet", "linear_combination")

# One process: build the models from fixed seeds, time each workload REPEATS times after a
# warm-up call, print {workload: median seconds per call} as JSON.
_RUN = r'''
import json, statistics, sys, tempfile, time
import torch
torch.set_num_threads(1)
import featvis
from featvis import DBN, load_mnist, reference_cnn

x, labels = load_mnist()
x = x[:2000]
torch.manual_seed(0)
dbn = DBN([784, 64, 32]).fit(x[:1000], epochs=1, seed=0, progress=False)
cnn = reference_cnn()
images = x.reshape(-1, 1, 28, 28)
settings = featvis.VisualizeSettings(       # the methods both versions have
    units=6, steps=30, restarts=2, samples=10, top=4,
    methods=("examples", "maximize", "sampling", "filters", "filter_views", "deconvnet",
             "combination"))
clock = getattr(time, sys.argv[2])
out = tempfile.mkdtemp()
work = {
    "visualize_dbn": lambda: featvis.visualize(dbn, x, out + "/dbn", settings, progress=False,
                                               force=True, gallery=False),
    "visualize_cnn": lambda: featvis.visualize(cnn, images, out + "/cnn", settings,
                                               progress=False, force=True, gallery=False),
    "top_examples": lambda: featvis.top_examples(cnn, images, ["features.0", "features.3"], k=9),
    "maximize": lambda: featvis.maximize(dbn, 2, units=range(32), steps=100, restarts=3,
                                         rho=dbn.input_norm, bounds=(0.0, 1.0)),
    "sample_unit": lambda: featvis.sample_unit(dbn, 2, n_samples=50),
    "deconvnet": lambda: featvis.deconvnet(cnn, images[:500], "features.3", units=range(8), k=4),
    "linear_combination": lambda: featvis.linear_combination(dbn, 2, top=10),
}
repeats = int(sys.argv[1])
times = {}
for name in sys.argv[3:]:
    start = clock()
    work[name]()                                  # warm-up: caches, lazy imports
    # A timed sample is enough calls to last ~0.2 s, so a millisecond call is not timer noise.
    calls = max(1, round(0.2 / max(clock() - start, 1e-6)))
    samples = []
    for _ in range(repeats):
        start = clock()
        for _ in range(calls):
            work[name]()
        samples.append((clock() - start) / calls)
    times[name] = statistics.median(samples)
print(json.dumps(times))
'''


def _times(src: Path, workloads: list[str], repeats: int, clock: str) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _RUN, str(repeats), clock, *workloads],
                          env=env,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the other checkout's root")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout measured against it (default: this one; name a "
                             "worktree of a commit to keep editing this one meanwhile)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per process")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--clock", choices=("perf_counter", "process_time"),
                        default="perf_counter",
                        help="wall time, or the process's CPU time (what a neighbour's load "
                             "on a shared machine moves least, with one thread)")
    args = parser.parse_args()
    workloads = args.workloads.split(",")
    new_src = args.new / "src"
    ratios: dict[str, list[float]] = {w: [] for w in workloads}
    for round_ in range(args.rounds):
        order = [("old", args.old / "src"), ("new", new_src)]
        if round_ % 2:
            order.reverse()
        measured = {label: _times(src, workloads, args.repeats, args.clock)
                    for label, src in order}
        for w in workloads:
            ratios[w].append(measured["old"][w] / measured["new"][w])
        print(f"round {round_ + 1}: " + ", ".join(f"{w} {ratios[w][-1]:.3f}" for w in workloads),
              flush=True)
    print("new speed / old speed (median over rounds, min..max):")
    for w in workloads:
        print(f"  {w:20s} {statistics.median(ratios[w]):6.3f}  "
              f"({min(ratios[w]):.3f}..{max(ratios[w]):.3f})")


if __name__ == "__main__":
    main()

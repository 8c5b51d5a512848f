"""Speed of dataset-example mining on several processes (torch.distributed, gloo, CPU).

Mining every unit of a 784-1000-500-250 DBN (random weights, ``DBN(SIZES, seed=0)``) over
--rows MNIST inputs, and every channel of the two conv layers of bench_methods' LeNet-like
CNN over --cnn-rows, three ways, each in fresh processes started for the round:

* 1 process x 1 thread (the baseline),
* 2 processes x 1 thread each (``featvis.pipeline.distributed.mine_top_examples`` on a gloo group of
  2; batch ``b`` on rank ``b % 2``, the states exchanged and merged on both ranks),
* 1 process x 2 threads (the other way to use two cores),
* 2 processes mining one offline shard each, with no process group and no exchange: the
  speed-up the machine allows two processes at that moment (on shared cores, other load
  shows here), so that featvis's own cost of distributing is the ratio of the two.

The time is the mining alone, measured in the processes from after their warm-up to the
merged result (for 2 processes, the slower rank's), so process start and data loading are
left out; ratios are taken between the variants of the same round (a busy machine affects
them alike), min / median / max over --rounds. Also reported: the bytes each rank put into
the exchange and received, and whether the 2-process result is the 1-process result bit for
bit. Without the full MNIST in --data, the embedded 10,000 images are tiled to --rows.

    python benchmarks/bench_distributed.py [--rounds 3] [--rows 60000] [--cnn-rows 20000]
                                           [--only {dbn,cnn}]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _timing import set_threads, spread  # noqa: E402

import torch  # noqa: E402

from bench_methods import CNN_LAYERS, goal, lenet, load_images, reference_dbn  # noqa: E402
from featvis.pipeline import distributed  # noqa: E402
from featvis.seam import probe  # noqa: E402

# processes, threads each, a process group: "shards" is 2 processes mining a shard each, with
# no group and no exchange: what the machine allows two processes at that moment.
VARIANTS = {"1x1": (1, 1, False), "2x1": (2, 1, True), "1x2": (1, 2, False),
            "shards": (2, 1, False)}
GOAL = 1.6                                                  # 2 processes over 1, median
WARMUP_ROWS = 2000


def case_inputs(case: str, args: argparse.Namespace):
    """``(model, inputs, layers, source)`` of a case."""
    images, source = load_images(args.data, args.rows if case == "dbn" else args.cnn_rows)
    if case == "dbn":
        return reference_dbn(), images, [1, 2, 3], source
    return lenet(), images.view(-1, 1, 28, 28), CNN_LAYERS, source


def worker(args: argparse.Namespace) -> None:
    """One process of a variant: warm up, mine, print one JSON line."""
    processes, threads, group = VARIANTS[args.variant]
    set_threads(threads)
    model, inputs, layers, _ = case_inputs(args.case, args)
    with distributed.from_environment("cpu") as ctx:
        distributed.mine_top_examples(model, inputs[:WARMUP_ROWS], layers)  # lazy buffers
        distributed.barrier(ctx, "starting")
        start = time.perf_counter()
        if group or processes == 1:
            states = distributed.mine_top_examples(model, inputs, layers, ctx=ctx)
        else:
            shard = (int(os.environ["BENCH_SHARD"]), processes)
            states = distributed.mine_top_examples(model, inputs, layers, shard=shard)
        elapsed = time.perf_counter() - start
        digest = hashlib.sha256()
        for state in states.values():
            for t in (state.values, state.indices, state.positions):
                digest.update(t.contiguous().view(-1).view(torch.uint8).numpy())
        print(json.dumps({"seconds": elapsed, "sent": ctx.traffic["sent"],
                          "received": ctx.traffic["received"], "sha256": digest.hexdigest()}),
              flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(case: str, variant: str, args: argparse.Namespace) -> dict:
    """Run one variant in fresh processes; the slowest rank's seconds, rank 0's traffic and
    result digest."""
    processes, _, group = VARIANTS[variant]
    command = [sys.executable, __file__, "--worker", case, variant, "--rows", str(args.rows),
               "--cnn-rows", str(args.cnn_rows), "--data", args.data]
    port, procs = free_port(), []
    for rank in range(processes):
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", TORCH_CPP_LOG_LEVEL="ERROR")
        env.pop("OMP_NUM_THREADS", None)
        if processes > 1 and not group:
            env.update(BENCH_SHARD=str(rank))
            env.pop("WORLD_SIZE", None)
        elif processes > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(processes),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        else:
            env.pop("WORLD_SIZE", None)
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True))
    reports = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            sys.exit(f"bench_distributed: {case} {variant} failed (exit {p.returncode})")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return {"seconds": max(r["seconds"] for r in reports), "sent": reports[0]["sent"],
            "received": reports[0]["received"], "sha256": reports[0]["sha256"],
            "same_on_all_ranks": len({r["sha256"] for r in reports}) == 1}


def report(case: str, args: argparse.Namespace) -> None:
    model, inputs, layers, source = case_inputs(case, args)
    units = sum(probe(model, inputs.shape[1:]).layer(key).units for key in layers)
    title = (f"DBN 784-1000-500-250, all {units} units" if case == "dbn" else
             f"LeNet-like CNN, conv layers {', '.join(layers)}: all {units} channels")
    print(f"\n== {title}, {len(inputs):,} inputs ({source})")
    rounds = [{v: launch(case, v, args) for v in VARIANTS} for _ in range(args.rounds)]
    col = lambda v: [r[v]["seconds"] for r in rounds]   # noqa: E731
    names = {"1x1": "1 process x 1 thread      ", "2x1": "2 processes x 1 thread    ",
             "1x2": "1 process x 2 threads     ", "shards": "2 shards, no group (peer) "}
    for v in VARIANTS:
        print(f"  {names[v]}  mining s {spread(col(v))}")
    ratio = lambda a, b: [r[a]["seconds"] / r[b]["seconds"] for r in rounds]  # noqa: E731
    two = ratio("1x1", "2x1")
    print(f"  speed-up, 2 processes x 1 thread    {spread(two)}x   {goal(two, GOAL, True)}")
    print(f"  speed-up, 1 process x 2 threads     {spread(ratio('1x1', '1x2'))}x")
    print(f"  speed-up, 2 shards without a group  {spread(ratio('1x1', 'shards'))}x   "
          "(what the machine allowed)")
    print(f"  2 processes, group / no group       {spread(ratio('shards', '2x1'))}    "
          f"(1.0: distributing costs nothing)")
    exact = all(r["2x1"]["sha256"] == r["1x1"]["sha256"] and r["2x1"]["same_on_all_ranks"]
                for r in rounds)
    last = rounds[-1]["2x1"]
    print(f"  exchanged per rank: {last['sent']:,} bytes sent, {last['received']:,} received "
          f"(its merged top-k states)")
    print(f"  2-process result equals the 1-process result bit for bit on every rank: "
          f"{'PASS' if exact else 'MISS'}")
    same = all(r["1x2"]["sha256"] == r["1x1"]["sha256"] for r in rounds)
    print(f"  (1 process x 2 threads gives {'the same bits' if same else 'other bits'}: float "
          "rounding may depend on the threads per process, not on the processes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--cnn-rows", type=int, default=20_000)
    parser.add_argument("--data", default="../shared/data/mnist")
    parser.add_argument("--only", choices=["dbn", "cnn"], help="run this case alone")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "VARIANT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.case, args.variant = args.worker
        worker(args)
        return
    print(f"featvis distributed mining benchmark: {os.cpu_count()} cores, torch "
          f"{torch.__version__}, gloo, {args.rounds} rounds")
    for case in ("dbn", "cnn"):
        if args.only in (None, case):
            report(case, args)


if __name__ == "__main__":
    main()

"""Training speed: one epoch of featvis CD-1 against scikit-learn, and against the GEMM limit.

Trains an RBM 784x1000 for one epoch on MNIST (batch 100, then batch 1000) with featvis and
with scikit-learn's BernoulliRBM (n_iter=1, learning_rate=0.1, random_state=0, same batch
size), on float64 input (sklearn's default) and on float32 input (which sklearn keeps), so
the peer gets its best. The contenders run alternately in the same process, round after
round, and the tables give min / median / max over the rounds of each round's ratio of
samples/s: on a shared, sometimes busy machine those ratios mean more than absolute rates.

featvis's achieved rate counts 10*B*V*H FLOPs per batch of B rows (five GEMMs of CD-1) and
is compared with the "machine limit": the fastest float32 GEMM (B,784)x(784,1000) timed in
the same round, among torch's default matmul (torch.mm, MKL), oneDNN (mkldnn_linear) and
numpy's matmul (OpenBLAS). Everything is measured at 1 thread and at 2 threads (torch and,
through threadpoolctl, OpenBLAS and OpenMP). OpenBLAS picks its fastest kernels only without
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, so the script re-executes itself without them.

    python benchmarks/bench_train.py [--data ../shared/data/mnist] [--rows 60000]
                                     [--rounds 3] [--threads 1 2] [--batch-sizes 100 1000]

Needs the bench extra (scikit-learn, threadpoolctl): pip install -e '.[bench]'.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as featvis itself, before torch loads
_BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(name in os.environ for name in _BLAS_OVERRIDES):  # before numpy loads OpenBLAS
    print(f"re-executing without {', '.join(n for n in _BLAS_OVERRIDES if n in os.environ)}",
          file=sys.stderr, flush=True)
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              {k: v for k, v in os.environ.items() if k not in _BLAS_OVERRIDES})

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
import threadpoolctl  # noqa: E402
import torch  # noqa: E402
from sklearn.neural_network import BernoulliRBM  # noqa: E402

from featvis import RBM, load_mnist  # noqa: E402

N_VISIBLE, N_HIDDEN = 784, 1000
CONTENDERS = ("featvis", "sklearn float64", "sklearn float32")
GOAL_BATCH = 100
GOALS = {"featvis / sklearn float64": 2.0, "featvis / sklearn float32": 1.2,
         "featvis / limit": 0.70}  # medians over the rounds, at GOAL_BATCH


# -- contenders: each returns the seconds of one epoch on ``rows`` -------------------------
def time_featvis(x: torch.Tensor, batch: int) -> float:
    rbm = RBM(N_VISIBLE, N_HIDDEN)
    start = time.perf_counter()
    rbm.fit(x, epochs=1, batch_size=batch, progress=False, seed=0)
    return time.perf_counter() - start


def time_sklearn(x: np.ndarray, batch: int) -> float:
    rbm = BernoulliRBM(n_components=N_HIDDEN, batch_size=batch, n_iter=1,
                       learning_rate=0.1, random_state=0)
    start = time.perf_counter()
    rbm.fit(x)
    return time.perf_counter() - start


# -- GEMM limit: seconds of one float32 (B,784)x(784,1000) product, best of several ---------
def best_call_seconds(call, repeats: int = 5, chunk_seconds: float = 0.1) -> float:
    call()
    start = time.perf_counter()
    call()
    calls = max(1, round(chunk_seconds / (time.perf_counter() - start)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def gemm_seconds(x: torch.Tensor) -> dict[str, float]:
    """Per implementation, the best seconds of ``x @ W.T`` with W (1000, 784) as in RBM."""
    weight = torch.randn(N_HIDDEN, N_VISIBLE, generator=torch.Generator().manual_seed(0))
    out = x.new_empty(x.shape[0], N_HIDDEN)
    x_dnn, weight_dnn = x.to_mkldnn(), weight.to_mkldnn()
    x_np, weight_np, out_np = x.numpy(), weight.numpy(), out.numpy().copy()
    return {
        "torch.mm (MKL)": best_call_seconds(lambda: torch.mm(x, weight.t(), out=out)),
        "oneDNN": best_call_seconds(lambda: torch._C._nn.mkldnn_linear(x_dnn, weight_dnn, None)),
        "numpy (OpenBLAS)": best_call_seconds(lambda: np.matmul(x_np, weight_np.T, out=out_np)),
    }


# -- one configuration (threads, batch): rounds, then a table ------------------------------
def run_rounds(x: torch.Tensor, batch: int, rounds: int) -> list[dict[str, float]]:
    """Per round: seconds of each contender's epoch and of each GEMM, run back to back."""
    inputs = dict(zip(CONTENDERS, (x, x.numpy().astype(np.float64), x.numpy())))
    timers = dict(zip(CONTENDERS, (time_featvis, time_sklearn, time_sklearn)))
    for name, timer in timers.items():  # warm-up: thread pools, allocators, lazy init
        timer(inputs[name][:2 * batch], batch)
    results = []
    for _ in range(rounds):
        seconds = {name: timer(inputs[name], batch) for name, timer in timers.items()}
        seconds.update(gemm_seconds(x[:batch].contiguous()))
        results.append(seconds)
    return results


FORMATS = {"samples/s": "{:9.0f}", "GFLOP/s": "{:9.1f}", "ratio": "{:8.2f}x", "share": "{:8.0%} "}


def print_table(results: list[dict[str, float]], rows: int, batch: int, threads: int) -> None:
    """min / median / max over the rounds of rates and per-round ratios, goals at batch 100."""
    gemm_flops = 2 * batch * N_VISIBLE * N_HIDDEN
    gemms = [name for name in results[0] if name not in CONTENDERS]
    featvis = [10 * rows * N_VISIBLE * N_HIDDEN / r["featvis"] / 1e9 for r in results]
    gemm = {g: [gemm_flops / r[g] / 1e9 for r in results] for g in gemms}
    limit = [max(rates) for rates in zip(*gemm.values())]
    lines = [(f"{name} samples/s", "samples/s", [rows / r[name] for r in results])
             for name in CONTENDERS]
    lines += [(f"featvis / {peer}", "ratio", [r[peer] / r["featvis"] for r in results])
              for peer in CONTENDERS[1:]]
    lines.append(("featvis GFLOP/s", "GFLOP/s", featvis))
    lines += [(f"GEMM {g} GFLOP/s", "GFLOP/s", rates) for g, rates in gemm.items()]
    lines.append(("limit (best GEMM) GFLOP/s", "GFLOP/s", limit))
    lines.append(("featvis / limit", "share", [f / m for f, m in zip(featvis, limit)]))
    lines.append(("featvis / torch.mm", "share",
                  [f / m for f, m in zip(featvis, gemm["torch.mm (MKL)"])]))
    print(f"\nthreads {threads}, batch {batch} ({rows} rows, {len(results)} rounds)")
    print(f"  {'':<32}{'min':>9} {'median':>9} {'max':>9}")
    for label, kind, values in lines:
        cells = " ".join(FORMATS[kind].format(v) for v in
                         (min(values), statistics.median(values), max(values)))
        goal = ""
        if batch == GOAL_BATCH and label in GOALS:
            met = statistics.median(values) >= GOALS[label]
            goal = f"  goal >= {FORMATS[kind].format(GOALS[label]).strip()}: " \
                   f"{'met' if met else 'MISSED'}"
        print(f"  {label:<32}{cells}{goal}")


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines
                 if line.startswith("model name")), "unknown CPU")


def describe_machine() -> str:
    blas = sorted({f"{i['internal_api']} {i['version']} {i.get('architecture', '')}".strip()
                   for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"})
    return (f"{cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n"
            f"torch {torch.__version__} (MKL, oneDNN), numpy {np.__version__}, "
            f"scikit-learn {sklearn.__version__}, {'; '.join(blas)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/mnist"))
    parser.add_argument("--rows", type=int, default=60000, help="MNIST rows to train on")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args()
    x = load_mnist("train", args.data)[0][:args.rows].contiguous()
    print(f"one epoch of CD-1, RBM {N_VISIBLE}x{N_HIDDEN}: featvis vs sklearn BernoulliRBM")
    print(describe_machine())
    print(f"goals at batch {GOAL_BATCH}: featvis >= {GOALS['featvis / sklearn float64']}x "
          f"sklearn float64 and >= {GOALS['featvis / sklearn float32']}x sklearn float32 "
          f"samples/s, at >= {GOALS['featvis / limit']:.0%} of the limit (the round's best "
          f"float32 GEMM)")
    start = time.perf_counter()
    for threads in args.threads:
        with threadpoolctl.threadpool_limits(limits=threads):
            torch.set_num_threads(threads)
            for batch in args.batch_sizes:
                config_start = time.perf_counter()
                results = run_rounds(x, batch, args.rounds)
                print_table(results, len(x), batch, threads)
                print(f"  ({time.perf_counter() - config_start:.0f} s)", flush=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

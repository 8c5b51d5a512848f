"""Shared helpers of the benchmark scripts: thread settings, timers, peak-memory probes."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402  (after the OpenMP setting)


def set_threads(n: int) -> None:
    """Run torch (and, if present, numpy's BLAS) on ``n`` threads."""
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def spread(values: list[float]) -> str:
    """``min / median / max`` of a list of ratios."""
    return (f"{min(values):6.2f} / {statistics.median(values):6.2f} / {max(values):6.2f}")


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Reset the kernel's high-water mark (VmHWM) of this process (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_bytes() -> int:
    """Peak resident set size since the last :func:`reset_peak_rss`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def extra_peak(fn: Callable[[], object]) -> tuple[float, int]:
    """``(seconds, bytes)``: wall time of ``fn`` and its peak memory above the current RSS."""
    import gc

    gc.collect()
    reset_peak_rss()
    base = rss_bytes()
    elapsed = seconds(fn)
    return elapsed, peak_rss_bytes() - base

"""Knowing the CPU: its name, how fast it multiplies matrices, and how many
threads to train with.

Why thread choice matters: PyTorch starts as many intra-op threads as there
are cores. For a big model that is right. For the small models of this
course (d_model 64-128, batches of a few thousand tokens) each operation is
short, and splitting it across threads costs more in start-up and
synchronisation than it saves; on a 2-core machine that also runs other
work, two threads can make a step several times *slower* than one. There is
no rule that holds on every machine, so :func:`fastest_thread_count`
measures: it times a few steps with each candidate count and keeps the
fastest.

:func:`matmul_peak` is the yardstick for efficiency: the FLOP/s of a large
float32 matrix product at a given thread count, the most a training step
made of matrix products could reach.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

__all__ = [
    "cpu_model",
    "available_cores",
    "thread_candidates",
    "threads",
    "matmul_peak",
    "ThreadChoice",
    "fastest_thread_count",
]


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC 7B13", "Apple M2", ...), from
    /proc/cpuinfo on Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers
    often restrict)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_candidates(limit: int | None = None) -> list[int]:
    """Thread counts worth trying: 1, 2, 4, ... up to ``limit`` (default:
    the current ``torch.get_num_threads()``), and ``limit`` itself. A user
    who lowered the thread count (``torch.set_num_threads(1)``,
    ``OMP_NUM_THREADS=1``) gets only counts up to theirs."""
    limit = torch.get_num_threads() if limit is None else limit
    counts, n = [], 1
    while n < limit:
        counts.append(n)
        n *= 2
    return counts + [max(limit, 1)]


@contextmanager
def threads(n: int):
    """Run a block with ``n`` intra-op threads, then restore the previous
    count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def matmul_peak(
    num_threads: int,
    size: int = 1024,
    seconds: float = 0.5,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Measured FLOP/s of a float32 (size x size) @ (size x size) product
    with ``num_threads``.

    The best of repeated products over about ``seconds`` (the best, because
    other processes can only slow a run down). One product counts 2 * size^3
    FLOPs. ``clock`` measures each product: the wall clock by default;
    ``time.process_time`` gives FLOPs per CPU-second of this process (all
    its threads together), which other work on the machine disturbs less.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    with threads(num_threads):
        a @ b  # warm-up: thread pool, caches
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline or best == float("inf"):
            start = clock()
            a @ b
            elapsed = clock() - start
            if elapsed > 0:
                best = min(best, elapsed)
    return 2 * size**3 / best


@dataclass
class ThreadChoice:
    """What :func:`fastest_thread_count` measured: seconds per step for each
    count tried."""

    threads: int
    seconds: dict[int, float] = field(default_factory=dict)
    cpu: str = field(default_factory=cpu_model)

    def __str__(self) -> str:
        times = ", ".join(
            f"{n}: {1e3 * s:.1f} ms" for n, s in self.seconds.items()
        )
        return f"{self.threads} thread(s) on {self.cpu} (per step: {times})"


def fastest_thread_count(
    step: Callable[[], object],
    candidates: Sequence[int] | None = None,
    repeats: int = 3,
) -> ThreadChoice:
    """Time ``step()`` with each thread count and return the fastest (the
    count stays unchanged).

    Each candidate gets one warm-up call, then up to ``repeats`` timed
    calls, of which the fastest counts. A candidate whose warm-up or first
    timed call is already 3 times slower than the best so far is dropped at
    once, so a bad choice costs little.

    Args:
        step: one unit of work (one training step on a copy of the model).
        candidates: thread counts to try; default :func:`thread_candidates`.
    """
    candidates = (
        list(candidates) if candidates is not None else thread_candidates()
    )
    seconds: dict[int, float] = {}
    for n in candidates:
        with threads(n):
            start = time.perf_counter()
            step()
            warm_up = time.perf_counter() - start
            best = float("inf")
            if seconds and warm_up > 3 * min(seconds.values()):
                best = warm_up  # hopeless: no need to time it again
            for _ in range(repeats if best == float("inf") else 0):
                start = time.perf_counter()
                step()
                best = min(best, time.perf_counter() - start)
                if seconds and best > 3 * min(seconds.values()):
                    break
        seconds[n] = best
    return ThreadChoice(min(seconds, key=seconds.get), seconds)

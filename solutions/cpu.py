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

:func:`fast_cpu_dropout` makes dropout cheaper: PyTorch's CPU dropout draws
its random numbers one element at a time on most CPUs, which costs a
quarter of a small model's training step on two threads.
"""

from __future__ import annotations

import math
import os
import platform
import threading
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
    "dropout_mask",
    "fast_dropout",
    "fast_cpu_dropout",
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


# --------------------------------------------------------------------------
# Dropout masks drawn 16 bits at a time
# --------------------------------------------------------------------------

# A keep/drop decision compares 16 random bits with a threshold, so the keep
# probability is a multiple of 2^-16 (within 2^-17 of 1 - p).
_LEVELS = 1 << 16


def _random_decisions(
    shape: Sequence[int], keep_levels: int
) -> tuple[torch.Tensor, int]:
    """Uniform 16-bit numbers (int16, ``shape``) and the threshold below
    which an element is kept with probability ``keep_levels / 2**16``."""
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64)
    words.random_(-(2**63), None)  # all 64 bits random
    # four uniform 16-bit numbers per word, in [-2^15, 2^15)
    decisions = words.view(torch.int16)[:numel].view(tuple(shape))
    return decisions, keep_levels - _LEVELS // 2


def _keep_levels(p: float) -> int:
    if not 0.0 <= p <= 1.0:
        raise ValueError(
            f"dropout probability has to be between 0 and 1, but got {p}"
        )
    return round((1.0 - p) * _LEVELS)


def dropout_mask(
    shape: Sequence[int], p: float
) -> tuple[torch.Tensor, float]:
    """A CPU dropout mask (bool, ``shape``, True = keep) and the factor that
    makes dropout unbiased.

    PyTorch's CPU dropout draws 53 random bits per element, one element
    after another, unless MKL may draw them in parallel (Intel CPUs only):
    about 5 ns per element on other CPUs, with 1 thread or 2. Here each
    64-bit random integer from the same generator gives four 16-bit
    decisions: about 1 ns per element.

    The keep probability is ``q = round((1 - p) * 2**16) / 2**16`` and the
    factor ``1 / q``, so that ``mask * factor`` has mean exactly 1.
    """
    keep_levels = _keep_levels(p)
    if keep_levels == 0:
        return torch.zeros(tuple(shape), dtype=torch.bool), 0.0
    if keep_levels == _LEVELS:  # (the threshold would not fit in int16)
        return torch.ones(tuple(shape), dtype=torch.bool), 1.0
    decisions, threshold = _random_decisions(shape, keep_levels)
    return decisions < threshold, _LEVELS / keep_levels


def fast_dropout(
    input: torch.Tensor, p: float = 0.5, train: bool = True
) -> torch.Tensor:
    """Dropout of a CPU tensor with the mask of :func:`dropout_mask`: zeroes
    each element with probability ``p`` (within 2^-17) and scales the rest
    so that the mean is unchanged; the gradient flows through the kept
    elements with the same factor. Same arguments as ``torch.dropout``."""
    keep_levels = _keep_levels(p)
    if not train or keep_levels == _LEVELS or input.numel() == 0:
        return input  # (as torch.dropout for p = 0)
    if keep_levels == 0:
        return input * 0.0
    decisions, threshold = _random_decisions(input.shape, keep_levels)
    factor = _LEVELS / keep_levels
    if input.dtype in (torch.float32, torch.float64):
        # The mask in the input's dtype, scaled: products of one dtype are
        # about twice as fast as a float times a bool.
        scaled = torch.empty(input.shape, dtype=input.dtype)
        torch.lt(decisions, threshold, out=scaled)
        return input * scaled.mul_(factor)
    # bfloat16 and float16 would round the factor: scale in float32
    return input.mul(decisions < threshold).mul_(factor)


_fast_dropout_users = 0  # blocks entered and not yet left, in all threads
_fast_dropout_library: torch.library.Library | None = None
_fast_dropout_lock = threading.Lock()


@contextmanager
def fast_cpu_dropout():
    """Within this block, dropout of CPU tensors (``F.dropout``, which
    ``nn.Dropout`` calls, and dropout inside attention) uses
    :func:`fast_dropout`: the model's code stays as written.

    It registers :func:`fast_dropout` as the CPU autograd kernel of
    ``aten::dropout`` and removes it when the last open block ends. The
    registration is process-wide: while any thread is inside a block, CPU
    dropout in every thread uses these masks.
    """
    global _fast_dropout_users, _fast_dropout_library
    with _fast_dropout_lock:
        if _fast_dropout_users == 0:
            _fast_dropout_library = torch.library.Library("aten", "IMPL")
            _fast_dropout_library.impl("dropout", fast_dropout, "AutogradCPU")
        _fast_dropout_users += 1
    try:
        yield
    finally:
        with _fast_dropout_lock:
            _fast_dropout_users -= 1
            if _fast_dropout_users == 0:
                # (what torch.library's own scoped libraries do on exit)
                _fast_dropout_library._destroy()
                _fast_dropout_library = None

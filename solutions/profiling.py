"""``torch.profiler`` for one training step, quietly (for the book's
pages)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from torch.profiler import ProfilerActivity, profile

__all__ = ["profile_step", "native_stderr_silenced"]


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what C++ code writes to the process's stderr (file descriptor 2)
    to /dev/null: this PyTorch build's profiler logs "profiler_start/stop"
    lines there, and a notebook shows them as output."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def profile_step(step: Callable[[], object], cuda: bool = False) -> profile:
    """Profile one call of ``step`` (run it once before, to warm up);
    returns the profiler, whose ``key_averages()`` table says where the time
    went."""
    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if cuda else []
    )
    with native_stderr_silenced(), profile(activities=activities) as prof:
        step()
    return prof

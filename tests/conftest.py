"""Shared fixtures for the test suite."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture
def randomize():
    """A function that overwrites every parameter of a module with seeded random values, so that
    weight-copying bugs (a transposed matrix, a missing bias, a layer norm left at weight 1 and
    bias 0) cannot hide behind default initialisations. Layer-norm weights stay near 1."""

    def _randomize(module: nn.Module, seed: int = 0, scale: float = 0.3) -> nn.Module:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in module.named_parameters():
                noise = torch.randn(p.shape, generator=gen) * scale
                is_norm_weight = "norm" in name and name.endswith("weight")
                p.copy_(noise + 1.0 if is_norm_weight else noise)
        return module

    return _randomize


@pytest.fixture(autouse=True)
def single_thread():
    """Every test runs with one intra-op thread. On the small tensors of the tests, thread
    start-up and contention cost more than they save (5-10x slower on a busy 2-core machine).
    (`make test` also sets OMP_NUM_THREADS=1 for the processes the tests start.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def released_course(tmp_path_factory):
    """A course directory where nbgrader has released every assignment (about 30 s), made once
    per session. Read it, or copy it before writing into it."""
    from coursetools import course

    root = tmp_path_factory.mktemp("released_course")
    course.release(root)
    return root

"""Data-parallel training (solutions/distributed.py, scripts/train_distributed.py) on the CPU
with gloo: DDP and FSDP2 under torchrun give the parameters of one process training on the
whole batch; a checkpoint written by 2 processes resumes in 1; the multi-machine recipe (two
torchrun agents meeting at a rendezvous endpoint) works over the loopback interface."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from solutions.data import Batch
from solutions.distributed import DistributedInfo, local_rows

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "train_distributed.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# A small run: 6 steps of a global batch of 16 dates, no dropout, plain SGD (see --optimizer).
RUN = ["--steps", "6", "--batch-size", "16", "--dropout", "0", "--optimizer", "sgd",
       "--d-model", "32", "--warmup", "4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run(cmd: list[str], timeout: float = 120) -> None:
    done = subprocess.run(cmd, env=env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    """One process (no torchrun), the whole batch each step."""
    out = tmp_path_factory.mktemp("single") / "params.pt"
    run([sys.executable, str(SCRIPT), "--strategy", "none", *RUN, "--params-out", str(out)])
    return torch.load(out)


def test_local_rows_split_the_global_batch():
    src = torch.arange(10).view(5, 2) + 3
    tgt = torch.arange(15).view(5, 3) + 3
    tgt[4, 2] = 0
    batch = Batch(src, tgt, tgt, int((tgt != 0).sum()))
    parts = [local_rows(batch, r, 2) for r in range(2)]
    assert torch.equal(torch.cat([p.src for p in parts]), src)
    assert sum(p.num_tokens for p in parts) == batch.num_tokens
    with pytest.raises(ValueError):
        local_rows(batch, 0, 6)
    assert DistributedInfo(0, 2, 0, torch.device("cpu")).is_main


@pytest.mark.slow
def test_ddp_standalone_two_processes_equal_one(single, tmp_path):
    out = tmp_path / "ddp.pt"
    run([*TORCHRUN, "--standalone", "--nproc-per-node=2", str(SCRIPT), "--strategy", "ddp",
         *RUN, "--params-out", str(out)])
    assert max_difference(torch.load(out), single) < 1e-6


@pytest.mark.slow
def test_fsdp_on_two_nodes_equals_one_process_and_resumes_in_one(single, tmp_path):
    """Two torchrun agents (node ranks 0 and 1) meet at a c10d rendezvous on localhost, as two
    machines would; FSDP2 shards the model over them and saves a checkpoint after step 3 that
    a single process then resumes (a change of world size)."""
    port = free_port()
    out, checkpoint = tmp_path / "fsdp.pt", tmp_path / "checkpoint"
    agents = [subprocess.Popen(
        [*TORCHRUN, "--nnodes=2", f"--node-rank={rank}", "--nproc-per-node=1",
         "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--local-addr=127.0.0.1",
         str(SCRIPT), "--strategy", "fsdp", *RUN, "--params-out", str(out),
         "--save", str(checkpoint), "--save-at", "3"],
        env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)]
    for agent in agents:
        output, _ = agent.communicate(timeout=150)
        assert agent.returncode == 0, output[-3000:]
    assert max_difference(torch.load(out), single) < 1e-6

    resumed = tmp_path / "resumed.pt"
    run([sys.executable, str(SCRIPT), "--strategy", "none", *RUN, "--resume", str(checkpoint),
         "--params-out", str(resumed)])
    assert max_difference(torch.load(resumed), single) < 1e-6

"""Training on several processes with PyTorch's own engine: ``torchrun``,
DDP, FSDP2 and distributed checkpoints.

The recipe (data parallelism):

* ``torchrun --nproc-per-node=N script.py`` starts N copies of the script
  and gives each its ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and a meeting
  point (``MASTER_ADDR``/``PORT`` or a rendezvous endpoint).
  :func:`init_distributed` reads them and joins the process group: NCCL
  between GPUs, gloo between CPU processes.
* Every process builds the **same global batch** (same data, same seed) and
  works on its slice of the rows (:func:`local_rows`). The global batch, the
  number of steps and so the learning-rate schedule do not depend on the
  number of processes.
* **DDP** (``DistributedDataParallel``) keeps a full copy of the model on
  every process and averages the gradients (all-reduce) during backward.
  **FSDP2** (``fully_shard``) keeps only a 1/N shard of every parameter,
  gradient and optimiser state on each process, gathers a layer's parameters
  just before it runs, and reduce-scatters the gradients.
* Both average gradients over processes. To equal one process's step on the
  whole batch, each process's loss is
  (sum of its token losses) / (real tokens in the global batch) * N
  (:func:`distributed_train_step`).
* ``torch.distributed.checkpoint`` (DCP) saves each process's shards in
  parallel and loads them into any number of processes: train on 2, resume
  on 1 or 8.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_state_dict,
    set_state_dict,
)

from .data import PAD, Batch
from .training import label_smoothed_cross_entropy

__all__ = [
    "DistributedInfo",
    "init_distributed",
    "wrap_model",
    "local_rows",
    "distributed_train_step",
    "average_gradients",
    "save_distributed_checkpoint",
    "load_distributed_checkpoint",
    "full_state_dict",
]


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process stands: its rank among ``world_size`` processes
    and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints and writes small files."""
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistributedInfo:
    """Join the process group that ``torchrun`` (or a test) describes in the
    environment.

    Without ``WORLD_SIZE`` in the environment (a plain ``python script.py``)
    there is no group: one process, rank 0. The backend is NCCL when CUDA is
    available, otherwise gloo; each process uses GPU number ``LOCAL_RANK``
    (one GPU per process).
    """
    if "WORLD_SIZE" not in os.environ:
        device = torch.device(
            "cuda" if torch.cuda.is_available() else "cpu"
        )
        return DistributedInfo(0, 1, 0, device)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available() and backend != "gloo"
    if cuda:
        torch.cuda.set_device(local_rank)
    device = (
        torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    )
    if not dist.is_initialized():
        dist.init_process_group(
            backend or ("nccl" if cuda else "gloo"),
            device_id=device if cuda else None,
        )
    return DistributedInfo(
        dist.get_rank(), dist.get_world_size(), local_rank, device
    )


def wrap_model(
    model: nn.Module, strategy: str, info: DistributedInfo
) -> nn.Module:
    """Prepare a Transformer for data-parallel training.

    ``"ddp"``: a ``DistributedDataParallel`` wrapper (call it, train it; the
    plain model is ``.module``). ``"fsdp"``: ``fully_shard`` on every
    encoder and decoder layer, then on the whole model (embeddings and
    output layer), in place; parameters become DTensors. ``"none"``: the
    model as it is (one process).
    """
    model = model.to(info.device)
    if strategy == "none" or info.world_size == 1 and strategy == "ddp":
        return model
    if strategy == "ddp":
        device_ids = (
            [info.device.index] if info.device.type == "cuda" else None
        )
        return nn.parallel.DistributedDataParallel(
            model, device_ids=device_ids
        )
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in [*model.encoder.layers, *model.decoder.layers]:
            fully_shard(
                layer
            )  # one all-gather per layer: only one layer is whole at a time
        fully_shard(model)
        return model
    raise ValueError(
        f"strategy must be 'ddp', 'fsdp' or 'none', got {strategy!r}"
    )


def local_rows(batch: Batch, rank: int, world_size: int) -> Batch:
    """This process's share of a global batch: rows ``rank::world_size``
    would interleave; we take a contiguous block (``tensor_split``), the
    same padded lengths on every process."""
    if batch.src.shape[0] < world_size:
        raise ValueError(
            f"a batch of {batch.src.shape[0]} rows for {world_size} processes"
        )
    src, tgt_in, tgt_out = (
        t.tensor_split(world_size)[rank]
        for t in (batch.src, batch.tgt_in, batch.tgt_out)
    )
    return Batch(src, tgt_in, tgt_out, int((tgt_out != PAD).sum()))


def distributed_train_step(
    model: nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    info: DistributedInfo,
    scheduler=None,
    smoothing: float = 0.1,
    grad_clip: float | None = 1.0,
) -> float:
    """One optimiser step on the **global** ``batch``, each process doing
    its rows.

    Gives the same update as :func:`~solutions.training.train_step` on the
    whole batch in one process (up to float rounding). Returns the global
    batch's loss (mean over real tokens).
    """
    model.train()
    local = local_rows(batch, info.rank, info.world_size).to(info.device)
    global_tokens = max(batch.num_tokens, 1)
    logits = model(local.src, local.tgt_in)  # (B / N, T, V)
    local_sum = (
        label_smoothed_cross_entropy(logits, local.tgt_out, smoothing)
        * local.num_tokens
    )
    # DDP and FSDP average the gradients over the N processes: scale by N to
    # get their sum.
    loss = local_sum * (info.world_size / global_tokens)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(
            model.parameters(), grad_clip
        )  # DTensor-aware under FSDP
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    reported = local_sum.detach() / global_tokens
    if info.world_size > 1:
        dist.all_reduce(reported)  # the sum over processes: the global mean
    return reported.item()


def average_gradients(model: nn.Module) -> None:
    """What DDP does during backward, by hand: replace every parameter's
    gradient by its mean over the processes of the default group (all-reduce
    a sum, divide by the world size). Parameters without a gradient are
    skipped; every process must call this.
    """
    # (as at the top of this module: the exercise's cell)
    import torch.distributed as dist

    world_size = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(
                p.grad, op=dist.ReduceOp.SUM
            )  # gloo has no AVG: sum, then divide
            p.grad /= world_size


def _plain(model: nn.Module) -> nn.Module:
    return (
        model.module
        if isinstance(model, nn.parallel.DistributedDataParallel)
        else model
    )


def save_distributed_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    step: int = 0,
) -> None:
    """Save model, optimiser, schedule and step with
    ``torch.distributed.checkpoint``: every process writes its own shards
    into the folder ``path`` (all processes must call it)."""
    model_state, optim_state = get_state_dict(_plain(model), optimizer)
    state = {
        "model": model_state,
        "optimizer": optim_state,
        "step": step,
        "scheduler": scheduler.state_dict()
        if scheduler is not None
        else {},
    }
    dcp.save(state, checkpoint_id=str(path))


def load_distributed_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler=None,
) -> int:
    """Load :func:`save_distributed_checkpoint`'s folder into a model
    wrapped for any number of processes (DCP reshards on load); returns the
    step to continue from."""
    model_state, optim_state = get_state_dict(_plain(model), optimizer)
    state = {
        "model": model_state,
        "optimizer": optim_state,
        "step": 0,
        "scheduler": scheduler.state_dict()
        if scheduler is not None
        else {},
    }
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(
        _plain(model),
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
    )
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's parameters as ordinary CPU tensors, on every
    process (gathers FSDP shards; all processes must call it)."""
    state = {}
    for name, tensor in _plain(model).state_dict().items():
        if hasattr(tensor, "full_tensor"):  # a DTensor shard
            tensor = tensor.full_tensor()
        state[name] = tensor.detach().cpu().clone()
    return state

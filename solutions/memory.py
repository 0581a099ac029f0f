"""Fitting a step in memory: activation checkpointing, gradient
accumulation, peak memory.

* **Activation checkpointing** keeps only each layer's input during the
  forward pass and runs the layer's forward again during backward to get the
  activations it needs. The gradients are the same (the same operations on
  the same numbers); the price is about one more forward (the step costs ~4
  forwards instead of 3) for activation memory of one layer instead of all.
  Dropout is replayed with the same random numbers (``preserve_rng_state``).
* **Gradient accumulation** splits a batch that does not fit into
  micro-batches, runs backward on each, and steps once: the gradients add up
  in ``.grad``. To equal the big batch's gradient, each micro-batch's loss
  is its *sum* over real tokens divided by the *whole* batch's number of
  real tokens (a mean per micro-batch, averaged, would weight short
  micro-batches too much).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .data import PAD, Batch
from .training import label_smoothed_cross_entropy

__all__ = [
    "use_activation_checkpointing",
    "split_batch",
    "accumulated_gradients_step",
    "SavedActivations",
    "cuda_peak_bytes",
]


class _Checkpointed(nn.Module):
    """Wraps a layer so that its forward is recomputed in backward (training
    only)."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *args, **kwargs):
        if not (self.training and torch.is_grad_enabled()):
            return self.layer(*args, **kwargs)
        # use_reentrant=False: the recommended implementation (works with
        # keyword arguments, inputs that do not require grad, and
        # torch.compile).
        return checkpoint(self.layer, *args, use_reentrant=False, **kwargs)


def use_activation_checkpointing(
    model: nn.Module, enable: bool = True
) -> nn.Module:
    """Checkpoint every encoder and decoder layer of a Transformer, in
    place.

    Parameter names change (``encoder.layers.0.layer.self_attn...``); call
    with ``enable=False`` to unwrap before saving a state dict that others
    will load.
    """
    for stack in (model.encoder, model.decoder):
        layers = [
            layer.layer if isinstance(layer, _Checkpointed) else layer
            for layer in stack.layers
        ]
        stack.layers = nn.ModuleList(
            _Checkpointed(layer) if enable else layer for layer in layers
        )
    return model


def split_batch(batch: Batch, micro_batches: int) -> list[Batch]:
    """Split a batch's rows into ``micro_batches`` nearly equal batches
    (same padded lengths)."""
    if not 1 <= micro_batches <= batch.src.shape[0]:
        raise ValueError(
            f"cannot split {batch.src.shape[0]} rows into {micro_batches}"
        )
    parts = zip(
        *(
            t.tensor_split(micro_batches)
            for t in (batch.src, batch.tgt_in, batch.tgt_out)
        )
    )
    return [
        Batch(src, tgt_in, tgt_out, int((tgt_out != PAD).sum()))
        for src, tgt_in, tgt_out in parts
    ]


def accumulated_gradients_step(
    model: nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    micro_batches: int,
    scheduler=None,
    smoothing: float = 0.1,
    grad_clip: float | None = 1.0,
    forward=None,
) -> float:
    """One optimiser step on ``batch`` in ``micro_batches`` forward/backward
    passes.

    The gradient equals that of :func:`~solutions.training.train_step` on
    the whole batch: each micro-batch contributes
    (sum of its token losses) / (real tokens in the whole batch). Returns
    the whole batch's loss (mean over its real tokens), as a float.
    """
    model.train()
    total_tokens = max(int((batch.tgt_out != PAD).sum()), 1)
    optimizer.zero_grad(
        set_to_none=True
    )  # once: the micro-batches' gradients add up
    loss_sum = 0.0
    for micro in split_batch(batch, micro_batches):
        logits = (forward or model)(
            micro.src, micro.tgt_in
        )  # (B / micro_batches, T, V)
        tokens = int((micro.tgt_out != PAD).sum())
        mean = label_smoothed_cross_entropy(
            logits, micro.tgt_out, smoothing
        )
        loss = mean * (
            tokens / total_tokens
        )  # its tokens' share of the whole batch's mean
        loss.backward()  # adds into .grad
        loss_sum += loss.item()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss_sum


class SavedActivations:
    """Bytes of the tensors autograd keeps for backward while the block
    runs: the activation memory that activation checkpointing trades for
    recomputation. Measured exactly on any device with
    ``saved_tensors_hooks`` (each storage counted once).

    >>> with SavedActivations() as saved:        # doctest: +SKIP
    ...     loss = model(src, tgt_in).sum()
    >>> saved.bytes                              # doctest: +SKIP
    """

    def __enter__(self) -> SavedActivations:
        self._storages: dict[int, int] = {}

        def pack(tensor: Tensor) -> Tensor:
            storage = tensor.untyped_storage()
            self._storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        self._hooks = torch.autograd.graph.saved_tensors_hooks(
            pack, lambda tensor: tensor
        )
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return sum(self._storages.values())


def cuda_peak_bytes(fn, device: str | torch.device = "cuda") -> int:
    """Peak bytes CUDA's caching allocator held while ``fn()`` ran, above
    what it held before."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base

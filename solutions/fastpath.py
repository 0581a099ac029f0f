"""The fast path's switches that are not one line of the training loop:
batches sized by tokens, lengths rounded up to a few buckets (few shapes for
``torch.compile`` and cuDNN), and the global switches for TF32 and PyTorch's
attention kernels.

Shapes: ``B`` sequences per batch, ``S``/``T`` padded source/target lengths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .data import PAD, Batch, Pair, _generator, make_batch

__all__ = [
    "batches_by_tokens",
    "pad_to_bucket",
    "set_tf32",
    "avoid_cudnn_attention",
]


def batches_by_tokens(
    pairs: Sequence[Pair],
    max_tokens: int,
    shuffle: bool = True,
    seed: int = 0,
    pool_size: int = 10_000,
) -> list[Batch]:
    """Batches of similar lengths holding at most ``max_tokens`` padded
    positions each.

    A batch of B pairs padded to source length S and target length T costs
    about B * (S + T) positions; a fixed B makes batches of long sentences
    several times dearer (in time and memory) than batches of short ones.
    Fixing the tokens instead (the paper: about 25,000 source and 25,000
    target tokens per batch) keeps every step's work and memory about the
    same. Pairs are shuffled, sorted by length in pools, cut greedily, and
    the batches shuffled, as in :func:`~solutions.data.batches_by_length`.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    g = _generator(seed)
    order = (
        torch.randperm(len(pairs), generator=g).tolist()
        if shuffle
        else range(len(pairs))
    )
    items = [pairs[i] for i in order]
    batches: list[Batch] = []
    for start in range(0, len(items), pool_size):
        pool = sorted(
            items[start : start + pool_size],
            key=lambda p: (len(p[0]), len(p[1])),
        )
        current: list[Pair] = []
        longest_src = longest_tgt = 0
        for pair in pool:
            src_len, tgt_len = (
                max(longest_src, len(pair[0])),
                max(longest_tgt, len(pair[1])),
            )
            if (
                current
                and (len(current) + 1) * (src_len + tgt_len - 1)
                > max_tokens
            ):
                batches.append(make_batch(current))
                current, src_len, tgt_len = [], len(pair[0]), len(pair[1])
            current.append(pair)
            longest_src, longest_tgt = src_len, tgt_len
        if current:
            batches.append(make_batch(current))
    if shuffle:
        batches = [
            batches[i]
            for i in torch.randperm(len(batches), generator=g).tolist()
        ]
    return batches


def pad_to_bucket(batch: Batch, multiple: int = 8) -> Batch:
    """Pad ``src`` and the targets with PAD up to a multiple of ``multiple``
    positions.

    The model's output on real tokens does not change (padding is masked),
    but the number of distinct shapes drops from one per length to one per
    bucket: ``torch.compile`` compiles once per shape unless told
    ``dynamic=True``, and cuDNN's attention builds a plan per shape.
    """

    def pad(t: torch.Tensor) -> torch.Tensor:
        extra = -t.shape[1] % multiple
        return (
            torch.nn.functional.pad(t, (0, extra), value=PAD)
            if extra
            else t
        )

    return Batch(
        pad(batch.src),
        pad(batch.tgt_in),
        pad(batch.tgt_out),
        batch.num_tokens,
    )


def set_tf32(enable: bool = True) -> None:
    """Float32 matrix products on tensor cores with TF32 inputs (10-bit
    mantissa) on NVIDIA GPUs from Ampere on: about 8x the float32 peak, at
    about 1e-3 relative error per product. No effect on a CPU."""
    torch.backends.cuda.matmul.allow_tf32 = enable
    torch.backends.cudnn.allow_tf32 = enable


def avoid_cudnn_attention(avoid: bool = True) -> None:
    """Keep ``F.scaled_dot_product_attention`` off the cuDNN kernel
    (FlashAttention and the memory-efficient kernels remain). cuDNN builds
    an execution plan for every new shape, so with batches of many lengths
    it spends more time planning than computing."""
    if torch.backends.cuda.is_built():
        torch.backends.cuda.enable_cudnn_sdp(not avoid)

"""Counting the arithmetic of a training step, and how much of the machine
it uses (MFU).

A matrix product of an (M, K) matrix by a (K, N) matrix costs
``2 * M * K * N`` floating-point operations (one multiply and one add per
term). Almost all of a Transformer's arithmetic is such products, so the
cost of a step follows from the configuration and the batch's shape:

* forward: every projection, feed-forward layer, attention score matrix
  (Q Kᵀ), weighted sum (weights · V) and the output layer;
* backward: twice the forward, because each product ``Y = X W`` needs two
  products of the same size in backward, ``dX = dY Wᵀ`` and ``dW = Xᵀ dY``.

So a training step costs 3 forwards. Layer norms, softmax, dropout, the
embedding lookup and the optimiser are left out: they are a few operations
per number, not per product term, and the convention of MFU
(PaLM, appendix B) counts matrix products only. This is also what
``torch.utils.flop_counter.FlopCounterMode`` counts, which the tests use as
the oracle.

Model FLOP utilisation (MFU) = achieved FLOP/s / the device's peak FLOP/s
for the dtype. The peaks below are NVIDIA's datasheet numbers for dense
arithmetic (no 2:4 sparsity); a CPU's peak is measured here with one large
matrix product (:func:`measured_matmul_peak`).

Shapes: ``B`` sequences per batch, ``S`` source length, ``T`` target length
(padded lengths: the hardware computes on padding too).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

__all__ = [
    "ModelShape",
    "forward_flops",
    "training_flops",
    "training_flops_per_token",
    "PEAK_TFLOPS",
    "PEAK_SOURCES",
    "peak_flops",
    "measured_matmul_peak",
    "mfu",
]


@dataclass(frozen=True)
class ModelShape:
    """The sizes that set a Transformer's arithmetic (the keyword arguments
    of :class:`~solutions.model.Transformer` that matter; the defaults are
    the paper's base)."""

    tgt_vocab_size: int
    d_model: int = 512
    d_ff: int = 2048
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6

    @classmethod
    def of(cls, model) -> ModelShape:
        """The shape of a built :class:`~solutions.model.Transformer`."""
        encoder_layer = (model.encoder.layers or model.decoder.layers)[0]
        return cls(
            tgt_vocab_size=model.generator.out_features,
            d_model=model.d_model,
            d_ff=encoder_layer.feed_forward.linear1.out_features,
            num_encoder_layers=len(model.encoder.layers),
            num_decoder_layers=len(model.decoder.layers),
        )


def forward_flops(
    shape: ModelShape, batch: int, src_len: int, tgt_len: int
) -> int:
    """Matrix-product FLOPs of one forward pass on a (B, S) source and
    (B, T) target batch.

    Per encoder layer and source token: 4 projections (Q, K, V, out) of
    D x D and the feed-forward's two D x F products. Per decoder layer and
    target token: the same for self-attention, Q and out of cross-attention,
    and the feed-forward; cross-attention's K and V project the S memory
    tokens. Attention itself: Q Kᵀ and weights · V cost
    2 * D * (queries) * (keys) each, summed over the heads (the heads
    split D). Then the output layer D x V.
    """
    d, f, v = shape.d_model, shape.d_ff, shape.tgt_vocab_size
    matmul = 2  # FLOPs per multiply-add
    projection = matmul * d * d
    feed_forward = matmul * 2 * d * f
    attention = (
        2 * matmul * d
    )  # Q Kᵀ plus weights · V, per (query, key) pair

    encoder = (
        batch * src_len * (4 * projection + feed_forward)
        + batch * src_len * src_len * attention
    )
    decoder = (
        batch
        * tgt_len
        * (6 * projection + feed_forward)  # self: 4, cross: Q and out
        + batch
        * src_len
        * 2
        * projection  # cross-attention's K and V of the memory
        + batch
        * tgt_len
        * tgt_len
        * attention  # causal, but computed in full
        + batch * tgt_len * src_len * attention
    )
    output = batch * tgt_len * matmul * d * v
    return (
        shape.num_encoder_layers * encoder
        + shape.num_decoder_layers * decoder
        + output
    )


def training_flops(
    shape: ModelShape, batch: int, src_len: int, tgt_len: int
) -> int:
    """FLOPs of one training step (forward + backward = 3 forwards; the
    optimiser is free)."""
    return 3 * forward_flops(shape, batch, src_len, tgt_len)


def training_flops_per_token(
    shape: ModelShape, src_len: int, tgt_len: int
) -> float:
    """Training FLOPs per target token for sequences of these lengths.

    Throughputs in this course count target tokens, so
    MFU = tokens/s * this / peak. For a model whose attention is a small
    part, this is close to ``6 * N`` with N the parameters that multiply
    (the 6N rule of Kaplan et al., 2020), spread over S + T tokens.
    """
    return training_flops(shape, 1, src_len, tgt_len) / tgt_len


# --- peaks -----------------------------------------------------------------

#: Dense peak TFLOP/s per GPU by dtype (no 2:4 sparsity: the datasheets
#: print the sparse figure, twice these, for tensor cores). "tf32" is
#: float32 matmuls on tensor cores
#: (``torch.backends.cuda.matmul.allow_tf32``); "fp32" is plain float32.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100 SXM": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L4": {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3},
}

PEAK_SOURCES: dict[str, str] = {
    "H100 SXM": "NVIDIA H100 Tensor Core GPU datasheet (SXM column; sparse figures halved)",
    "H100 PCIe": "NVIDIA H100 Tensor Core GPU datasheet (PCIe column; sparse figures halved)",
    "H200": "NVIDIA H200 Tensor Core GPU datasheet (SXM; same tensor cores as H100 SXM)",
    "A100": "NVIDIA A100 Tensor Core GPU datasheet (SXM and PCIe share the peaks)",
    "L4": "NVIDIA L4 Tensor Core GPU datasheet (sparse figures halved)",
    "CPU": "measured: one large float32 matmul on this machine (measured_matmul_peak)",
}


def _table_key(device_name: str) -> str | None:
    """'NVIDIA H100 80GB HBM3' -> 'H100 SXM'; None for a device the table
    does not know."""
    name = device_name.upper()
    if "H100" in name:
        return "H100 PCIe" if "PCIE" in name else "H100 SXM"
    for key in ("H200", "A100", "L4"):
        if key in name:
            return key
    return None


def peak_flops(device_name: str, dtype: str) -> float | None:
    """The table's dense peak in FLOP/s for a CUDA device name and 'bf16',
    'tf32' or 'fp32' (None when the device is not in the table)."""
    key = _table_key(device_name)
    return PEAK_TFLOPS[key][dtype] * 1e12 if key is not None else None


def measured_matmul_peak(
    size: int = 1024,
    repeats: int = 5,
    dtype=torch.float32,
    device: str = "cpu",
) -> float:
    """FLOP/s of the best of ``repeats`` (size x size) @ (size x size)
    products: a practical peak for a CPU, where no datasheet number fits the
    threads PyTorch uses.
    """
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b  # warm-up (thread pool, caches)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def mfu(
    flops_per_step: float, seconds_per_step: float, peak: float
) -> float:
    """Model FLOP utilisation: achieved FLOP/s as a fraction of ``peak``
    FLOP/s."""
    return flops_per_step / seconds_per_step / peak

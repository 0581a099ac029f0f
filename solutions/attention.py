"""Scaled dot-product attention and multi-head attention.

Shapes use these letters throughout the package:

    B  batch size          H  number of heads
    Q  number of queries   K  number of keys (= number of values)
    D  model width         Dh width of one head (D // H)

Mask convention (one convention everywhere in this package): a mask is a
**boolean** tensor, **True where attention is allowed**, broadcastable to
(B, H, Q, K). This is the convention of
``torch.nn.functional.scaled_dot_product_attention``.
(``nn.MultiheadAttention`` and ``nn.Transformer*`` use the opposite one for
boolean masks: True there means "not allowed".) A query that may attend to
no key at all gets an output of zeros, never NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "softmax",
    "scaled_dot_product_attention",
    "fused_attention",
    "attention_few_keys",
    "padding_mask",
    "causal_mask",
    "target_mask",
    "split_heads",
    "merge_heads",
    "check_mask",
    "MultiHeadAttention",
    "KVCache",
]


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Numerically stable softmax along ``dim``.

    Subtracting the maximum before exponentiating changes nothing
    mathematically (softmax(x) = softmax(x - c)) but keeps ``exp`` from
    overflowing for large logits. Entries equal to ``-inf`` get probability
    0; a slice that is all ``-inf`` gets all zeros (``torch.softmax`` would
    give NaN there).

    Args:
        x: logits, any shape.
        dim: the axis that sums to one.
    Returns:
        probabilities, same shape as ``x``.
    """
    x_max = x.amax(dim=dim, keepdim=True)
    # An all -inf slice has max -inf, and -inf - (-inf) is NaN: shift such
    # slices by 0 instead.
    x_max = torch.where(
        torch.isfinite(x_max), x_max, torch.zeros_like(x_max)
    )
    exp = torch.exp(x - x_max)
    total = exp.sum(dim=dim, keepdim=True)
    return exp / torch.where(total > 0, total, torch.ones_like(total))


def check_mask(
    mask: Tensor | None,
    q_len: int,
    k_len: int,
    batch: int | None = None,
    heads: int | None = None,
) -> None:
    """Raise a clear error unless ``mask`` is None or a boolean tensor
    broadcastable to (batch, heads, q_len, k_len). ``batch`` and ``heads``
    are checked only when given."""
    if mask is None:
        return
    if not isinstance(mask, Tensor):
        raise TypeError(
            "mask must be a torch.Tensor or None, got "
            f"{type(mask).__name__}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(
            "mask must be a boolean tensor (True = may attend), got dtype "
            f"{mask.dtype}"
        )
    if mask.dim() > 4:
        raise ValueError(
            "mask must have at most 4 dimensions, got shape "
            f"{tuple(mask.shape)}"
        )
    shape = (1,) * (4 - mask.dim()) + tuple(mask.shape)
    wanted = (
        batch if batch is not None else shape[0],
        heads if heads is not None else shape[1],
        q_len,
        k_len,
    )
    for got, want in zip(shape, wanted):
        if got not in (1, want):
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to "
                f"(batch={wanted[0]}, heads={wanted[1]}, queries={q_len}, "
                f"keys={k_len})"
            )


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V, written out step
    by step.

    Args:
        q: queries (..., Q, Dk)
        k: keys    (..., K, Dk)
        v: values  (..., K, Dv)
        mask: boolean, True = may attend, broadcastable to (..., Q, K).
        dropout_p: dropout on the attention weights (training only).
    Returns:
        output (..., Q, Dv) and attention weights (..., Q, K); each row of
        the weights sums to 1, or is all zeros for a query that may attend
        to no key. With dropout, the weights returned are those after
        dropout, the ones the output is computed from.
    """
    check_mask(mask, q.shape[-2], k.shape[-2])
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Q, K)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


def attention_few_keys(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """The output of :func:`fused_attention`, computed with matrix products
    and ``torch.softmax``: faster on the CPU when there are few keys.

    For sequences of 10-30 tokens (the course's CPU tasks), PyTorch's fused
    CPU kernel is slow: on the copy model's 11 tokens a forward and backward
    pass runs at about 5 GFLOP/s, against about 100 for a large matrix
    product on the same core. Plain ``softmax`` is slow there too, along a
    row of about 11 keys: some 13 ns per entry, against under 1 ns along a
    long dimension. With up to 16 keys the scores are therefore laid out
    keys-first, (..., K, Q), so that softmax runs across queries as well.
    On the course's shapes a forward and backward pass then takes 0.37-0.85
    of the fused kernel's time (``scripts/bench_cpu.py`` measures it).
    Masked scores get the lowest finite float instead of ``-inf``, and
    queries with no allowed key get zeros, so no NaN can appear.

    Shapes as in :func:`scaled_dot_product_attention`; returns the output.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    lowest = torch.finfo(q.dtype).min
    if mask is not None and mask.dim() < 2:  # (K,) or a scalar: as (1, K)
        mask = mask.view((1,) * (2 - mask.dim()) + tuple(mask.shape))
    if k.shape[-2] <= 16:
        scores = (k * scale) @ q.transpose(-2, -1)  # (..., K, Q)
        if mask is not None:
            scores = scores.masked_fill(~mask.transpose(-2, -1), lowest)
        weights = scores.softmax(dim=-2).transpose(-2, -1)  # (..., Q, K)
    else:
        scores = (q * scale) @ k.transpose(-2, -1)  # (..., Q, K)
        if mask is not None:
            scores = scores.masked_fill(~mask, lowest)
        weights = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    out = weights @ v
    if mask is not None:
        allowed = mask.any(dim=-1, keepdim=True)
        # (a pass over the output, forward and backward, that padding masks
        # never need: there every query may attend to some key)
        if torch.compiler.is_compiling() or not allowed.all():
            out = out.masked_fill(~allowed, 0.0)
    return out


def fused_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """The same computation as :func:`scaled_dot_product_attention` through
    PyTorch's fused kernel (FlashAttention / memory-efficient / C++ math),
    without materialising the weights; on the CPU with at most 32 keys,
    through :func:`attention_few_keys`, which is faster there.

    Shapes as in :func:`scaled_dot_product_attention`; returns only the
    output.
    """
    batch, heads = q.shape[:2] if q.dim() == 4 else (None, None)
    check_mask(mask, q.shape[-2], k.shape[-2], batch, heads)
    if q.device.type == "cpu" and k.shape[-2] <= 32:
        return attention_few_keys(q, k, v, mask, dropout_p)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p
    )
    if mask is not None and out.device.type != "cpu":
        # Some GPU kernels (cuDNN's) return garbage for a query with no
        # allowed key; our convention is a zero output. PyTorch's CPU
        # kernels already give zeros (since 2.5; tests/test_attention.py
        # checks it), so we skip this extra pass there.
        out = out.masked_fill(~mask.any(dim=-1, keepdim=True), 0.0)
    return out


def padding_mask(tokens: Tensor, pad_id: int = 0) -> Tensor:
    """Mask that hides padding keys.

    Args:
        tokens: token ids (B, K).
        pad_id: the id used for padding.
    Returns:
        boolean mask (B, 1, 1, K): True where the key is a real token.
    """
    if tokens.dim() != 2:
        raise ValueError(
            "tokens must have shape (batch, length), got "
            f"{tuple(tokens.shape)}"
        )
    return (tokens != pad_id)[:, None, None, :]


def causal_mask(
    length: int, device: torch.device | str | None = None
) -> Tensor:
    """Mask that lets position i attend to positions 0..i only.

    Returns:
        boolean mask (length, length), True on and below the diagonal.
    """
    return torch.ones(
        length, length, dtype=torch.bool, device=device
    ).tril()


def target_mask(tokens: Tensor, pad_id: int = 0) -> Tensor:
    """The decoder's self-attention mask: causal, and hiding padding keys.

    Args:
        tokens: target ids (B, T).
    Returns:
        boolean mask (B, 1, T, T): True where query i may attend to key j,
        that is j <= i and token j is not padding.
    """
    return padding_mask(tokens, pad_id) & causal_mask(
        tokens.shape[1], tokens.device
    )


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, L, D) -> (B, H, L, D // H): give every head its own slice of the
    features."""
    batch, length, d_model = x.shape
    return x.view(batch, length, num_heads, d_model // num_heads).transpose(
        1, 2
    )


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, L, Dh) -> (B, L, H * Dh): the inverse of
    :func:`split_heads`."""
    batch, heads, length, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * d_head)


class KVCache:
    """Keys and values of one attention layer, kept between decoding steps.

    For self-attention in the decoder, each step appends the new token's key
    and value; for cross-attention the keys and values come from the
    encoder's memory and are computed once. Tensors are stored split into
    heads: (B, H, L, Dh).
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add new keys/values (B, H, new, Dh); return all of them so far
        (B, H, L, Dh)."""
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=-2)
            self.v = torch.cat([self.v, v], dim=-2)
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        """Keep the batch rows given by ``index`` (B',): used by beam
        search."""
        if self.k is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)


class MultiHeadAttention(nn.Module):
    """Multi-head attention: h attention heads, each on its own learned
    projection.

        MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W_O,
        head_i = Attention(Q W_Q_i, K W_K_i, V W_V_i)

    Args:
        d_model: model width D.
        num_heads: number of heads H; must divide D.
        dropout: dropout on the attention weights.
        bias: whether the four projections have biases.

    The attribute ``keep_weights`` (False by default) makes ``forward``
    compute attention the explicit way and keep the weights (B, H, Q, K) in
    ``last_weights`` for plotting; otherwise PyTorch's fused kernel is used
    and ``last_weights`` is None.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__()
        if num_heads <= 0 or d_model % num_heads != 0:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by num_heads "
                f"({num_heads})"
            )
        self.d_model = d_model
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.keep_weights = False
        self.last_weights: Tensor | None = None

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        static_kv: bool = False,
    ) -> Tensor:
        """
        Args:
            query: (B, Q, D)
            key:   (B, K, D)
            value: (B, K, D)
            mask: boolean, True = may attend, broadcastable to
                (B, H, Q, K_total) where K_total counts cached keys too.
            cache: keys/values of earlier decoding steps (decoding only).
                With ``static_kv=False`` (self-attention) the new
                keys/values are appended; with ``static_kv=True``
                (cross-attention) they are computed on the first call and
                reused afterwards.
        Returns:
            (B, Q, D)
        """
        if query.dim() != 3 or query.shape[-1] != self.d_model:
            raise ValueError(
                f"query must have shape (batch, length, {self.d_model}), "
                f"got {tuple(query.shape)}"
            )
        if query.shape[0] == 0:
            raise ValueError("empty batch: query has batch size 0")
        q = split_heads(self.q_proj(query), self.num_heads)
        if cache is not None and static_kv and cache.k is not None:
            k, v = cache.k, cache.v
        else:
            k = split_heads(self.k_proj(key), self.num_heads)
            v = split_heads(self.v_proj(value), self.num_heads)
            if cache is not None:
                k, v = cache.append(k, v)
        check_mask(mask, q.shape[-2], k.shape[-2], batch=q.shape[0])
        dropout_p = self.dropout if self.training else 0.0
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(
                q, k, v, mask, dropout_p
            )
        else:
            out, self.last_weights = (
                fused_attention(q, k, v, mask, dropout_p),
                None,
            )
        return self.out_proj(merge_heads(out))

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Build ours holding the same weights as ``mha`` (which must have
        ``kdim == vdim == embed_dim``). ``nn.MultiheadAttention`` stacks
        W_Q, W_K, W_V in ``in_proj_weight``."""
        if not mha._qkv_same_embed_dim:
            raise ValueError("from_torch needs kdim == vdim == embed_dim")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError(
                "from_torch does not support add_bias_kv or add_zero_attn"
            )
        bias = mha.in_proj_bias is not None
        ours = cls(
            mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=bias
        )
        ours.to(
            device=mha.in_proj_weight.device, dtype=mha.in_proj_weight.dtype
        )
        with torch.no_grad():
            for proj, w in zip(
                (ours.q_proj, ours.k_proj, ours.v_proj),
                mha.in_proj_weight.chunk(3),
            ):
                proj.weight.copy_(w)
            ours.out_proj.weight.copy_(mha.out_proj.weight)
            if bias:
                for proj, b in zip(
                    (ours.q_proj, ours.k_proj, ours.v_proj),
                    mha.in_proj_bias.chunk(3),
                ):
                    proj.bias.copy_(b)
                ours.out_proj.bias.copy_(mha.out_proj.bias)
        return ours

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, num_heads={self.num_heads}, "
                f"dropout={self.dropout}")

"""The modern decoder-only Transformer (Llama, Qwen, OLMo, nanochat): what
changed since 2017.

Four changes to the block of the paper, each a small module here:

* **RMSNorm** instead of LayerNorm: no mean subtraction, no bias; one gain
  vector.
* **SwiGLU** feed-forward instead of ReLU: W2(SiLU(W1 x) * W3 x), a gated
  unit.
* **Rotary position embeddings (RoPE)** instead of added sinusoids: queries
  and keys are rotated by an angle proportional to their position, so that
  their dot product depends only on the *relative* position.
* **Grouped-query attention (GQA)**: several query heads share one key/value
  head, which shrinks the key/value cache by ``n_heads / n_kv_heads``.

All linear maps are bias-free with weights stored (d_out, d_in), as
``nn.Linear`` does. The block is pre-norm: ``x + attn(norm(x))``, then
``x + ffn(norm(x))``.

Shapes: ``B`` batch, ``T`` new positions, ``S`` key positions (cache
included), ``D`` width, ``H`` query heads, ``G`` key/value heads,
``Dh = D / H`` head width, ``V`` vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import KVCache
from .layers import sinusoidal_encoding
from .lm import sample_next_token

__all__ = [
    "rms_norm",
    "RMSNorm",
    "silu",
    "swiglu",
    "SwiGLU",
    "ReLUFeedForward",
    "rope_angles",
    "apply_rope",
    "apply_rope_halves",
    "interleaved_to_halves",
    "halves_to_interleaved",
    "grouped_query_attention",
    "CausalSelfAttention",
    "ModernConfig",
    "ModernBlock",
    "ModernLM",
]


# --- normalisation --------------------------------------------------------


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    """RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight.

    x (..., D), weight (D,) -> (..., D) in x's dtype. Low-precision inputs
    (float16, bfloat16) are normalised in float32 and cast back: the mean of
    squares overflows or loses precision in 16 bits.
    """
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (normed * weight.float()).to(x.dtype)


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich 2019) with a learned
    gain (D,)."""

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)"""
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


# --- feed-forward ---------------------------------------------------------


def silu(x: Tensor) -> Tensor:
    """SiLU (a.k.a. swish): x * sigmoid(x), elementwise."""
    return x * torch.sigmoid(x)


def swiglu(x: Tensor, w1: Tensor, w2: Tensor, w3: Tensor) -> Tensor:
    """The SwiGLU feed-forward W2(SiLU(W1 x) * W3 x) (Shazeer 2020).

    x (..., D); w1 and w3 (F, D) and w2 (D, F), stored (d_out, d_in) as
    ``nn.Linear`` does. Returns (..., D).
    """
    gate = silu(x @ w1.T)  # (..., F)
    return (gate * (x @ w3.T)) @ w2.T  # (..., D)


class SwiGLU(nn.Module):
    """SwiGLU feed-forward with bias-free weights w1, w3 (d_ff, D) and w2
    (D, d_ff).

    With three matrices instead of two, d_ff = 8/3 D gives the parameter
    count of a ReLU network with d_ff = 4 D (Llama rounds it up to a
    multiple of 64; we use multiples of 8).
    """

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)"""
        return swiglu(x, self.w1.weight, self.w2.weight, self.w3.weight)


class ReLUFeedForward(nn.Module):
    """The paper's feed-forward W2 ReLU(W1 x), bias-free (the ablation's
    baseline)."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)"""
        return self.w2(F.relu(self.w1(x)))


def default_d_ff(d_model: int, ffn: str) -> int:
    """4 D for ReLU; for SwiGLU 8/3 D rounded up to a multiple of 8 (same
    parameter count)."""
    if ffn == "relu":
        return 4 * d_model
    return 8 * math.ceil(8 * d_model / 3 / 8)


# --- rotary position embeddings -------------------------------------------


def rope_angles(
    positions: Tensor, head_dim: int, theta: float = 10000.0
) -> Tensor:
    """Rotation angles position * theta^(-2i/d) for i = 0 .. d/2 - 1, in
    float32.

    positions (...,) integer -> angles (..., d/2).
    """
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head width, got {head_dim}")
    inv_freq = theta ** (
        -torch.arange(
            0, head_dim, 2, dtype=torch.float32, device=positions.device
        )
        / head_dim
    )  # (d/2,)
    return positions.float()[..., None] * inv_freq  # (..., d/2)


def apply_rope(
    x: Tensor, positions: Tensor, theta: float = 10000.0
) -> Tensor:
    """Rotary position embedding (RoFormer, Su et al. 2021),
    interleaved-pairs layout.

    Each consecutive pair of features (x[2i], x[2i+1]) of the vector at
    position p is rotated by the angle p * theta^(-2i/d):

        out[2i]   = x[2i] cos - x[2i+1] sin
        out[2i+1] = x[2i] sin + x[2i+1] cos

    x (..., T, d); positions (T,) or any shape that broadcasts to
    x.shape[:-1], e.g. (B, 1, T) for x of shape (B, H, T, d). Computed in
    float32, returned in x's dtype.
    """
    angles = rope_angles(positions, x.shape[-1], theta)  # (..., T, d/2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., T, d/2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack(
        [even * cos - odd * sin, even * sin + odd * cos], dim=-1
    )
    return rotated.flatten(-2).to(x.dtype)


def apply_rope_halves(
    x: Tensor, positions: Tensor, theta: float = 10000.0
) -> Tensor:
    """RoPE in the "halves" layout (GPT-NeoX, Hugging Face Llama): feature i
    is paired with feature i + d/2, not with its neighbour. Same shapes as
    :func:`apply_rope`."""
    angles = rope_angles(positions, x.shape[-1], theta)
    cos, sin = torch.cos(angles), torch.sin(angles)
    first, second = x.float().chunk(2, dim=-1)  # (..., d/2) each
    return torch.cat(
        [first * cos - second * sin, first * sin + second * cos], dim=-1
    ).to(x.dtype)


def interleaved_to_halves(x: Tensor) -> Tensor:
    """Reorder the last axis from pairs (0,1), (2,3), ... to halves
    [0, 2, 4, ..., 1, 3, 5, ...].

    ``apply_rope_halves(interleaved_to_halves(x)) ==
    interleaved_to_halves(apply_rope(x))``: permuting the rows of W_q and
    W_k this way converts a checkpoint between the layouts (scores are
    unchanged because q and k are permuted alike).
    """
    return torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)


def halves_to_interleaved(x: Tensor) -> Tensor:
    """The inverse of :func:`interleaved_to_halves`."""
    first, second = x.chunk(2, dim=-1)
    return torch.stack([first, second], dim=-1).flatten(-2)


# --- attention ------------------------------------------------------------


def grouped_query_attention(
    q: Tensor, k: Tensor, v: Tensor, causal: bool = True
) -> Tensor:
    """Causal attention where groups of query heads share a key/value head.

    q (B, H, T, Dh); k, v (B, G, S, Dh) with G dividing H and S >= T. Query
    head h uses key/value head h // (H / G). The T queries are the *last* T
    of the S positions (the first S - T come from a cache), so query t may
    attend to keys 0 .. S - T + t; with ``causal=False`` every query attends
    to all S keys. Returns (B, H, T, Dh). With G == H this is ordinary
    multi-head attention.
    """
    heads, kv_heads = q.shape[-3], k.shape[-3]
    if heads % kv_heads:
        raise ValueError(
            f"{kv_heads} key/value heads do not divide {heads} query heads"
        )
    group = heads // kv_heads
    k = k.repeat_interleave(group, dim=-3)  # (B, H, S, Dh)
    v = v.repeat_interleave(group, dim=-3)
    scores = (
        q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    )  # (B, H, T, S)
    if causal:
        t, s = q.shape[-2], k.shape[-2]
        allowed = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(
            diagonal=s - t
        )
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class CausalSelfAttention(nn.Module):
    """Causal self-attention with RoPE on queries and keys and
    ``n_kv_heads`` key/value heads.

    Projections are bias-free: W_q (H*Dh, D), W_k and W_v (G*Dh, D), W_o
    (D, H*Dh). The cache (a :class:`KVCache`) stores keys and values as
    (B, G, S, Dh): G / H of the size that multi-head attention needs.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        rope: bool = True,
        rope_theta: float = 10000.0,
    ):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(
                f"need n_heads | d_model and n_kv_heads | n_heads, got "
                f"d_model={d_model}, n_heads={n_heads}, "
                f"n_kv_heads={n_kv_heads}"
            )
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = d_model // n_heads
        self.rope, self.rope_theta = rope, rope_theta
        self.q_proj = nn.Linear(
            d_model, n_heads * self.head_dim, bias=False
        )
        self.k_proj = nn.Linear(
            d_model, n_kv_heads * self.head_dim, bias=False
        )
        self.v_proj = nn.Linear(
            d_model, n_kv_heads * self.head_dim, bias=False
        )
        self.o_proj = nn.Linear(
            n_heads * self.head_dim, d_model, bias=False
        )

    def forward(
        self,
        x: Tensor,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """x (B, T, D) -> (B, T, D).

        ``positions`` (T,) or (B, T): the tokens' positions (default: after
        the cache's ``len(cache)`` positions, i.e. 0 .. T - 1 without a
        cache).
        """
        b, t, _ = x.shape
        q = (
            self.q_proj(x)
            .view(b, t, self.n_heads, self.head_dim)
            .transpose(1, 2)
        )
        k = (
            self.k_proj(x)
            .view(b, t, self.n_kv_heads, self.head_dim)
            .transpose(1, 2)
        )
        v = (
            self.v_proj(x)
            .view(b, t, self.n_kv_heads, self.head_dim)
            .transpose(1, 2)
        )
        if self.rope:
            if positions is None:
                start = len(cache) if cache is not None else 0
                positions = torch.arange(start, start + t, device=x.device)
            pos = (
                positions if positions.dim() == 1 else positions[:, None, :]
            )  # (B, 1, T)
            q = apply_rope(q, pos, self.rope_theta)
            k = apply_rope(k, pos, self.rope_theta)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, G, S, Dh)
        out = grouped_query_attention(q, k, v)  # (B, H, T, Dh)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


# --- the block and the model ----------------------------------------------


@dataclass
class ModernConfig:
    """Sizes and choices of :class:`ModernLM`. The defaults are the modern
    recipe; the other values of ``norm``, ``ffn`` and ``positions`` give the
    2017 choices for ablations."""

    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: = n_heads (multi-head attention)
    d_ff: int | None = None  # None: default_d_ff(d_model, ffn)
    # only limits sinusoidal positions; RoPE has no table
    max_len: int = 256
    rope_theta: float = 10000.0
    norm: str = "rms"  # "rms" or "layer"
    ffn: str = "swiglu"  # "swiglu" or "relu"
    positions: str = "rope"  # "rope" or "sinusoidal"
    tie_embeddings: bool = False
    eps: float = 1e-5


def make_norm(config: ModernConfig) -> nn.Module:
    if config.norm == "rms":
        return RMSNorm(config.d_model, config.eps)
    if config.norm == "layer":
        return nn.LayerNorm(config.d_model, eps=config.eps, bias=False)
    raise ValueError(f"norm must be 'rms' or 'layer', got {config.norm!r}")


class ModernBlock(nn.Module):
    """Pre-norm decoder block: x + attn(norm1(x)), then + ffn(norm2(x))."""

    def __init__(self, config: ModernConfig):
        super().__init__()
        d_ff = config.d_ff or default_d_ff(config.d_model, config.ffn)
        self.norm1 = make_norm(config)
        self.attn = CausalSelfAttention(
            config.d_model,
            config.n_heads,
            config.n_kv_heads,
            rope=config.positions == "rope",
            rope_theta=config.rope_theta,
        )
        self.norm2 = make_norm(config)
        if config.ffn == "swiglu":
            self.ffn = SwiGLU(config.d_model, d_ff)
        elif config.ffn == "relu":
            self.ffn = ReLUFeedForward(config.d_model, d_ff)
        else:
            raise ValueError(
                f"ffn must be 'swiglu' or 'relu', got {config.ffn!r}"
            )

    def forward(
        self,
        x: Tensor,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """(B, T, D) -> (B, T, D)"""
        x = x + self.attn(self.norm1(x), positions, cache)
        return x + self.ffn(self.norm2(x))


class ModernLM(nn.Module):
    """Decoder-only LM: embedding -> blocks -> final norm -> output
    projection (optionally tied).

    ``forward(idx (B, T), cache=None) -> logits (B, T, V)``. With a cache (a
    list of one :class:`KVCache` per block, from :meth:`new_cache`) the
    tokens continue the cached ones.
    """

    def __init__(self, config: ModernConfig):
        super().__init__()
        if config.positions not in ("rope", "sinusoidal"):
            raise ValueError(
                "positions must be 'rope' or 'sinusoidal', "
                f"got {config.positions!r}"
            )
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(
            ModernBlock(config) for _ in range(config.n_layers)
        )
        self.norm = make_norm(config)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.positions == "sinusoidal":
            self.register_buffer(
                "pe",
                sinusoidal_encoding(config.max_len, config.d_model),
                persistent=False,
            )
        # Unit-size embeddings; an untied head starts with unit-size logits.
        # Tied, the shared matrix gets entries of size 1/sqrt(D), which
        # gives unit-size logits too.
        if config.tie_embeddings:
            nn.init.normal_(self.embed.weight, std=config.d_model**-0.5)
            self.head.weight = self.embed.weight
        else:
            nn.init.normal_(self.embed.weight, std=1.0)
            nn.init.normal_(self.head.weight, std=config.d_model**-0.5)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def new_cache(self) -> list[KVCache]:
        """An empty key/value cache, one per block."""
        return [KVCache() for _ in self.blocks]

    def forward(
        self, idx: Tensor, cache: list[KVCache] | None = None
    ) -> Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V)."""
        start = len(cache[0]) if cache is not None else 0
        t = idx.shape[-1]
        positions = torch.arange(start, start + t, device=idx.device)
        x = self.embed(idx)  # (B, T, D)
        if self.config.positions == "sinusoidal":
            if start + t > self.config.max_len:
                raise ValueError(
                    f"position {start + t - 1} >= "
                    f"max_len={self.config.max_len}"
                )
            x = x + self.pe[start : start + t]
        for i, block in enumerate(self.blocks):
            x = block(x, positions, None if cache is None else cache[i])
        return self.head(self.norm(x))

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Continue each row of ``idx`` (B, T) by ``max_new_tokens`` sampled
        tokens.

        With ``use_cache`` the prompt is run once and then one token per
        step, reusing the cached keys and values; without, every step
        re-runs the whole sequence. Both give the same tokens. Returns
        (B, T + max_new_tokens).
        """
        was_training = self.training
        self.eval()
        cache = self.new_cache() if use_cache else None
        new = idx
        for _ in range(max_new_tokens):
            step_input = new if use_cache else idx
            logits = self(step_input, cache)[:, -1, :]  # (B, V)
            next_id = sample_next_token(logits, temperature, top_k, generator)
            idx = torch.cat([idx, next_id[:, None]], dim=1)
            new = next_id[:, None]
        self.train(was_training)
        return idx

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def to_dict(self) -> dict:
        return asdict(self.config)

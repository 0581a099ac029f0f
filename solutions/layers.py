"""The building blocks around attention: embeddings, positions,
feed-forward, encoder and decoder layers and their stacks.

Everything is batch-first: activations are (B, L, D). Masks follow the
package's convention (boolean, True = may attend; see
:mod:`solutions.attention`).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import KVCache, MultiHeadAttention

__all__ = [
    "TokenEmbedding",
    "sinusoidal_encoding",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEncoding",
    "PositionwiseFeedForward",
    "EncoderLayer",
    "Encoder",
    "DecoderLayer",
    "Decoder",
]

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


def check_token_ids(tokens: Tensor, vocab_size: int) -> None:
    """Raise a clear error for token ids that an embedding of ``vocab_size``
    rows cannot look up."""
    if not isinstance(tokens, Tensor) or tokens.dtype not in (
        torch.int64,
        torch.int32,
    ):
        raise TypeError(
            "token ids must be an integer tensor, got "
            f"{getattr(tokens, 'dtype', type(tokens))}"
        )
    if tokens.dim() != 2:
        raise ValueError(
            "token ids must have shape (batch, length), got "
            f"{tuple(tokens.shape)}"
        )
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(
            f"empty batch: token ids have shape {tuple(tokens.shape)}"
        )
    if torch.compiler.is_compiling():
        return
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"token ids must lie in [0, {vocab_size}), got values from "
            f"{low} to {high}"
        )


class TokenEmbedding(nn.Module):
    """Token ids (B, L) -> vectors (B, L, D), multiplied by sqrt(D) as in
    the paper (section 3.4), so that they are not drowned by the positional
    encoding, whose entries lie in [-1, 1]."""

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)

    @property
    def weight(self) -> nn.Parameter:
        return self.embedding.weight

    def forward(self, tokens: Tensor) -> Tensor:
        """token ids (B, L) -> embeddings (B, L, D), scaled by sqrt(D)."""
        check_token_ids(tokens, self.vocab_size)
        return self.embedding(tokens) * math.sqrt(self.d_model)


def sinusoidal_encoding(max_len: int, d_model: int) -> Tensor:
    """The paper's fixed positional encodings (section 3.5), shape
    (max_len, d_model):

        PE[pos, 2i]   = sin(pos / 10000^(2i / d_model))
        PE[pos, 2i+1] = cos(pos / 10000^(2i / d_model))
    """
    position = torch.arange(max_len, dtype=torch.float32)[:, None]  # (L, 1)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32)
        * (-math.log(10000.0) / d_model)
    )
    angles = position * inv_freq  # (L, ceil(D / 2))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return pe


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal encoding to (B, L, D) embeddings.
    ``offset`` is the position of the first row (used when decoding one
    token at a time)."""

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        self.max_len = max_len
        self.register_buffer(
            "pe", sinusoidal_encoding(max_len, d_model), persistent=False
        )

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x (B, L, D) -> x + PE[offset : offset + L], (B, L, D)."""
        length = x.shape[1]
        if offset + length > self.max_len:
            raise ValueError(
                f"sequence of length {offset + length} exceeds "
                f"max_len={self.max_len}"
            )
        return x + self.pe[offset : offset + length].to(x.dtype)


class LearnedPositionalEncoding(nn.Module):
    """Adds a learned vector per position (as in BERT and GPT) to (B, L, D)
    embeddings."""

    def __init__(self, d_model: int, max_len: int = 512):
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x (B, L, D) -> x + P[offset : offset + L], (B, L, D), P
        learned."""
        length = x.shape[1]
        if offset + length > self.max_len:
            raise ValueError(
                f"sequence of length {offset + length} exceeds "
                f"max_len={self.max_len}"
            )
        positions = torch.arange(offset, offset + length, device=x.device)
        return x + self.embedding(positions)


class PositionwiseFeedForward(nn.Module):
    """FFN(x) = dropout(activation(x W1 + b1)) W2 + b2, applied to every
    position alone. The inner dropout is not in the paper (as in PyTorch's
    nn.TransformerEncoderLayer); it does nothing in eval() mode.

    (B, L, D) -> (B, L, D), through a hidden width d_ff (2048 for D = 512 in
    the paper).
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        bias: bool = True,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got "
                f"{activation!r}"
            )
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, L, D)"""
        return self.linear2(
            self.dropout(ACTIVATIONS[self.activation](self.linear1(x)))
        )


class Sublayer(nn.Module):
    """A residual connection around ``fn`` with layer norm, in one of two
    arrangements:

    post-norm (the paper):  x = LayerNorm(x + Dropout(fn(x)))
    pre-norm  (GPT-2 on):   x = x + Dropout(fn(LayerNorm(x)))

    Pre-norm keeps an identity path from the input to the output of the
    whole stack, which is why deep pre-norm models train without a
    learning-rate warm-up as delicate as the paper's.
    """

    def __init__(
        self,
        d_model: int,
        dropout: float,
        norm_first: bool,
        eps: float = 1e-5,
        bias: bool = True,
    ):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: Tensor, fn) -> Tensor:
        """x (B, L, D); fn maps (B, L, D) -> (B, L, D). Returns
        (B, L, D)."""
        if self.norm_first:
            return x + self.dropout(fn(self.norm(x)))
        return self.norm(x + self.dropout(fn(x)))


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each wrapped in a residual
    sublayer.

    Args:
        d_model, num_heads, d_ff: widths; dropout: on attention weights and
            sublayer outputs;
        activation: "relu" or "gelu"; norm_first: pre-norm instead of the
            paper's post-norm;
        bias: biases in linear layers and layer norms; layer_norm_eps: as in
            PyTorch.
    """

    def __init__(
        self,
        d_model: int = 512,
        num_heads: int = 8,
        d_ff: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        norm_first: bool = False,
        bias: bool = True,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.self_attn = MultiHeadAttention(
            d_model, num_heads, dropout, bias=bias
        )
        self.feed_forward = PositionwiseFeedForward(
            d_model, d_ff, dropout, activation, bias
        )
        self.attn_block = Sublayer(
            d_model, dropout, norm_first, layer_norm_eps, bias
        )
        self.ff_block = Sublayer(
            d_model, dropout, norm_first, layer_norm_eps, bias
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B, S, D); mask: True = may attend, broadcastable to
        (B, H, S, S). -> (B, S, D)"""
        x = self.attn_block(x, lambda y: self.self_attn(y, y, y, mask))
        return self.ff_block(x, self.feed_forward)

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> EncoderLayer:
        """Ours with the weights of a ``batch_first=True``
        ``nn.TransformerEncoderLayer``."""
        ours = cls(**_torch_layer_config(layer))
        ours.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        _copy_feed_forward(ours.feed_forward, layer)
        _copy_norm(ours.attn_block.norm, layer.norm1)
        _copy_norm(ours.ff_block.norm, layer.norm2)
        return ours.to(layer.linear1.weight.device)


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder's memory,
    then feed-forward.

    Arguments as for :class:`EncoderLayer`.
    """

    def __init__(
        self,
        d_model: int = 512,
        num_heads: int = 8,
        d_ff: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        norm_first: bool = False,
        bias: bool = True,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.self_attn = MultiHeadAttention(
            d_model, num_heads, dropout, bias=bias
        )
        self.cross_attn = MultiHeadAttention(
            d_model, num_heads, dropout, bias=bias
        )
        self.feed_forward = PositionwiseFeedForward(
            d_model, d_ff, dropout, activation, bias
        )
        self.self_attn_block = Sublayer(
            d_model, dropout, norm_first, layer_norm_eps, bias
        )
        self.cross_attn_block = Sublayer(
            d_model, dropout, norm_first, layer_norm_eps, bias
        )
        self.ff_block = Sublayer(
            d_model, dropout, norm_first, layer_norm_eps, bias
        )

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: tuple[KVCache, KVCache] | None = None,
    ) -> Tensor:
        """
        Args:
            x: (B, T, D) decoder input; memory: (B, S, D) encoder output.
            self_mask: True = may attend, broadcastable to (B, H, T, T)
                (usually causal & padding).
            memory_mask: True = may attend, broadcastable to (B, H, T, S)
                (source padding).
            cache: (self-attention cache, cross-attention cache) for
                step-by-step decoding.
        Returns:
            (B, T, D)
        """
        self_cache, cross_cache = (
            cache if cache is not None else (None, None)
        )
        x = self.self_attn_block(
            x,
            lambda y: self.self_attn(y, y, y, self_mask, cache=self_cache),
        )
        x = self.cross_attn_block(
            x,
            lambda y: self.cross_attn(
                y,
                memory,
                memory,
                memory_mask,
                cache=cross_cache,
                static_kv=True,
            ),
        )
        return self.ff_block(x, self.feed_forward)

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> DecoderLayer:
        """Ours with the weights of a ``batch_first=True``
        ``nn.TransformerDecoderLayer``."""
        ours = cls(**_torch_layer_config(layer))
        ours.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        ours.cross_attn = MultiHeadAttention.from_torch(
            layer.multihead_attn
        )
        _copy_feed_forward(ours.feed_forward, layer)
        _copy_norm(ours.self_attn_block.norm, layer.norm1)
        _copy_norm(ours.cross_attn_block.norm, layer.norm2)
        _copy_norm(ours.ff_block.norm, layer.norm3)
        return ours.to(layer.linear1.weight.device)


class Encoder(nn.Module):
    """A stack of ``num_layers`` copies of ``layer``, with an optional final
    layer norm (needed with pre-norm layers, whose output is otherwise never
    normalised)."""

    def __init__(
        self, layer: EncoderLayer, num_layers: int, final_norm: bool = False
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            copy.deepcopy(layer) for _ in range(num_layers)
        )
        d_model = layer.self_attn.d_model
        self.norm = nn.LayerNorm(d_model) if final_norm else None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B, S, D); mask broadcastable to (B, H, S, S). -> (B, S, D)"""
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x) if self.norm is not None else x

    @classmethod
    def from_torch(cls, encoder: nn.TransformerEncoder) -> Encoder:
        layers = [
            EncoderLayer.from_torch(layer) for layer in encoder.layers
        ]
        ours = cls(
            layers[0], len(layers), final_norm=encoder.norm is not None
        )
        ours.layers = nn.ModuleList(layers)
        if encoder.norm is not None:
            ours.norm = _copy_norm(nn.LayerNorm(1), encoder.norm)
        return ours


class Decoder(nn.Module):
    """A stack of ``num_layers`` copies of ``layer``, with an optional final
    layer norm."""

    def __init__(
        self, layer: DecoderLayer, num_layers: int, final_norm: bool = False
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            copy.deepcopy(layer) for _ in range(num_layers)
        )
        d_model = layer.self_attn.d_model
        self.norm = nn.LayerNorm(d_model) if final_norm else None

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: list[tuple[KVCache, KVCache]] | None = None,
    ) -> Tensor:
        """x: (B, T, D); memory: (B, S, D); masks as in
        :class:`DecoderLayer`; cache: one (self, cross) pair per layer.
        -> (B, T, D)"""
        for i, layer in enumerate(self.layers):
            x = layer(
                x,
                memory,
                self_mask,
                memory_mask,
                cache[i] if cache is not None else None,
            )
        return self.norm(x) if self.norm is not None else x

    @classmethod
    def from_torch(cls, decoder: nn.TransformerDecoder) -> Decoder:
        layers = [
            DecoderLayer.from_torch(layer) for layer in decoder.layers
        ]
        ours = cls(
            layers[0], len(layers), final_norm=decoder.norm is not None
        )
        ours.layers = nn.ModuleList(layers)
        if decoder.norm is not None:
            ours.norm = _copy_norm(nn.LayerNorm(1), decoder.norm)
        return ours


# --- copying weights from PyTorch's modules -------------------------------


def _torch_layer_config(layer: nn.Module) -> dict:
    if not layer.self_attn.batch_first:
        raise ValueError(
            "from_torch needs a layer built with batch_first=True"
        )
    activation = layer.activation
    if activation in (F.relu,) or isinstance(activation, nn.ReLU):
        name = "relu"
    elif activation in (F.gelu,) or isinstance(activation, nn.GELU):
        name = "gelu"
    else:
        raise ValueError(f"unsupported activation {activation!r}")
    return dict(
        d_model=layer.self_attn.embed_dim,
        num_heads=layer.self_attn.num_heads,
        d_ff=layer.linear1.out_features,
        dropout=layer.dropout.p,
        activation=name,
        norm_first=layer.norm_first,
        bias=layer.linear1.bias is not None,
        layer_norm_eps=layer.norm1.eps,
    )


def _copy_feed_forward(
    ours: PositionwiseFeedForward, layer: nn.Module
) -> None:
    ours.linear1.load_state_dict(layer.linear1.state_dict())
    ours.linear2.load_state_dict(layer.linear2.state_dict())


def _copy_norm(ours: nn.LayerNorm, theirs: nn.LayerNorm) -> nn.LayerNorm:
    ours.normalized_shape = theirs.normalized_shape
    ours.eps = theirs.eps
    ours.weight = nn.Parameter(theirs.weight.detach().clone())
    ours.bias = (
        None
        if theirs.bias is None
        else nn.Parameter(theirs.bias.detach().clone())
    )
    return ours

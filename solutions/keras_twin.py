"""The book's Transformer written again in Keras 3, layer for layer, with
weight transfer to and from the PyTorch modules of this package.

Keras 3 runs one layer code on several backends (PyTorch, TensorFlow, JAX).
Everything here is written with ``keras.ops`` and Keras layers only, so it
runs on any of them; with ``KERAS_BACKEND=torch`` every layer is also a
``torch.nn.Module`` and the PyTorch modules of this package can check it in
the same process. This module sets ``KERAS_BACKEND=torch`` when the variable
is unset (Keras alone would default to TensorFlow); import it before
``keras``, or set the variable yourself. ``import solutions`` does not
import this module: Keras is needed only when you ask for it
(``from solutions import keras_twin``).

Same shapes as the package (batch first: activations (B, L, D)) and the same
mask convention: a boolean mask, **True where attention is allowed**,
broadcastable to (B, H, Q, K).

What maps to what (PyTorch -> Keras):

    nn.Linear(d_in, d_out): weight (d_out, d_in)  ->  layers.Dense(d_out): kernel (d_in, d_out)
    nn.LayerNorm(d, eps=1e-5): weight, bias       ->  layers.LayerNormalization(epsilon=1e-5):
                                                      gamma, beta (Keras's default eps is 1e-3)
    nn.Embedding(V, D): weight (V, D)             ->  layers.Embedding(V, D): embeddings (V, D)
    F.gelu (exact, erf)                           ->  ops.gelu(x, approximate=False)
    x @ y, x.transpose(-2, -1), masked_fill       ->  ops.matmul, ops.swapaxes, ops.where
    module.train() / module.eval()                ->  the ``training`` argument of a call

Weights move both ways through NumPy (:func:`copy_torch_to_keras`,
:func:`copy_keras_to_torch`), so the transfer works whatever the backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

os.environ.setdefault("KERAS_BACKEND", "torch")

# noqa: E402  (the backend must be chosen before Keras is imported)
import keras
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

from .data import BOS, EOS, PAD  # noqa: E402

__all__ = [
    "softmax",
    "scaled_dot_product_attention",
    "MultiHeadAttention",
    "sinusoidal_encoding",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "PositionwiseFeedForward",
    "Sublayer",
    "EncoderLayer",
    "DecoderLayer",
    "Transformer",
    "padding_mask",
    "target_mask",
    "to_numpy",
    "copy_torch_to_keras",
    "copy_keras_to_torch",
    "to_keras_multi_head_attention",
    "transformer_from_torch",
    "greedy_decode",
    "exact_match",
    "seq2seq_arrays",
    "NoamSchedule",
]


def to_numpy(x) -> np.ndarray:
    """A backend tensor or Keras variable -> NumPy array
    (``keras.ops.convert_to_numpy``, which on the PyTorch backend calls
    ``np.array(tensor)`` and makes NumPy 2 warn about ``copy=``)."""
    if keras.backend.backend() == "torch":
        import torch

        value = x.value if isinstance(x, keras.Variable) else x
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
    return ops.convert_to_numpy(x)


# --- attention ------------------------------------------------------------


def softmax(x, axis: int = -1):
    """Numerically stable softmax; a slice that is all ``-inf`` gets all
    zeros, not NaN (``keras.ops.softmax`` gives NaN there, like
    ``torch.softmax``)."""
    x = ops.convert_to_tensor(x)
    x_max = ops.max(x, axis=axis, keepdims=True)
    x_max = ops.where(ops.isfinite(x_max), x_max, ops.zeros_like(x_max))
    exp = ops.exp(x - x_max)
    total = ops.sum(exp, axis=axis, keepdims=True)
    return exp / ops.where(total > 0, total, ops.ones_like(total))


def scaled_dot_product_attention(q, k, v, mask=None, dropout=None):
    """softmax(Q K^T / sqrt(d_k)) V with ``keras.ops``.

    Args:
        q: (..., Q, Dk); k: (..., K, Dk); v: (..., K, Dv).
        mask: boolean, True = may attend, broadcastable to (..., Q, K).
        dropout: a callable applied to the attention weights (a
            ``layers.Dropout``), or None.
    Returns:
        output (..., Q, Dv) and weights (..., Q, K); a query with no allowed
        key gets zeros.
    """
    scores = ops.matmul(q, ops.swapaxes(k, -2, -1)) / math.sqrt(
        q.shape[-1]
    )  # (..., Q, K)
    if mask is not None:
        scores = ops.where(mask, scores, float("-inf"))
    weights = softmax(scores, axis=-1)
    if dropout is not None:
        weights = dropout(weights)
    return ops.matmul(weights, v), weights


class MultiHeadAttention(layers.Layer):
    """Multi-head attention with four ``Dense`` projections, as
    ``solutions.MultiHeadAttention``.

    Call: ``(query (B, Q, D), key (B, K, D), value (B, K, D),
    attention_mask) -> (B, Q, D)``; the argument order is PyTorch's
    (``keras.layers.MultiHeadAttention`` takes query, *value*, key). Keras
    reserves the argument name ``mask`` for its implicit masks
    (``mask_zero``, ``compute_mask``), so the mask is called
    ``attention_mask`` here, as in Keras's own layer. The attention weights
    of the last call are kept in ``last_weights`` (B, H, Q, K).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_heads <= 0 or d_model % num_heads != 0:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by num_heads ({num_heads})"
            )
        self.d_model, self.num_heads = d_model, num_heads
        self.q_proj = layers.Dense(d_model, use_bias=bias)
        self.k_proj = layers.Dense(d_model, use_bias=bias)
        self.v_proj = layers.Dense(d_model, use_bias=bias)
        self.out_proj = layers.Dense(d_model, use_bias=bias)
        self.attn_dropout = layers.Dropout(dropout)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            proj.build(
                (None, d_model)
            )  # create the weights now, not at the first call
        self.built = True
        self.last_weights = None

    def split_heads(self, x):
        """(B, L, D) -> (B, H, L, D // H)"""
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(
            x,
            (batch, length, self.num_heads, self.d_model // self.num_heads),
        )
        return ops.transpose(x, (0, 2, 1, 3))

    def merge_heads(self, x):
        """(B, H, L, Dh) -> (B, L, H * Dh)"""
        batch, length = ops.shape(x)[0], ops.shape(x)[2]
        return ops.reshape(
            ops.transpose(x, (0, 2, 1, 3)), (batch, length, self.d_model)
        )

    def call(self, query, key, value, attention_mask=None):
        q = self.split_heads(self.q_proj(query))
        k = self.split_heads(self.k_proj(key))
        v = self.split_heads(self.v_proj(value))
        out, self.last_weights = scaled_dot_product_attention(
            q, k, v, attention_mask, self.attn_dropout
        )
        return self.out_proj(self.merge_heads(out))


# --- embeddings and positions ---------------------------------------------


def sinusoidal_encoding(max_len: int, d_model: int):
    """The paper's fixed positional encodings, (max_len, d_model), with
    ``keras.ops``:

        PE[pos, 2i]   = sin(pos / 10000^(2i / d_model))
        PE[pos, 2i+1] = cos(same angle)
    """
    position = ops.arange(max_len, dtype="float32")[:, None]  # (L, 1)
    inv_freq = ops.exp(
        ops.arange(0, d_model, 2, dtype="float32")
        * (-math.log(10000.0) / d_model)
    )
    angles = position * inv_freq  # (L, ceil(D / 2))
    # Interleave: stack sin and cos on a new last axis, then flatten (sin0,
    # cos0, sin1, ...); for an odd D the last cosine is cut off. (Keras
    # tensors have no item assignment.)
    pe = ops.stack(
        [ops.sin(angles), ops.cos(angles)], axis=-1
    )  # (L, ceil(D / 2), 2)
    return ops.reshape(pe, (max_len, -1))[:, :d_model]


class SinusoidalPositionalEncoding(layers.Layer):
    """Adds the fixed encoding to (B, L, D) embeddings;
    ``offset`` = position of the first row."""

    def __init__(self, d_model: int, max_len: int = 5000, **kwargs):
        super().__init__(**kwargs)
        self.max_len = max_len
        self.pe = sinusoidal_encoding(
            max_len, d_model
        )  # a constant tensor, not a weight
        self.built = True

    def call(self, x, offset: int = 0):
        length = ops.shape(x)[1]
        if isinstance(length, int) and offset + length > self.max_len:
            raise ValueError(
                f"sequence of length {offset + length} exceeds max_len={self.max_len}"
            )
        return x + ops.cast(self.pe[offset : offset + length], x.dtype)


class TokenEmbedding(layers.Layer):
    """Token ids (B, L) -> vectors (B, L, D), times sqrt(D). Initialised
    like the package's Transformer (Xavier-uniform; Keras's default for
    ``Embedding`` is uniform in +-0.05)."""

    def __init__(self, vocab_size: int, d_model: int, **kwargs):
        super().__init__(**kwargs)
        self.d_model = d_model
        self.embedding = layers.Embedding(
            vocab_size, d_model, embeddings_initializer="glorot_uniform"
        )
        self.embedding.build((None,))
        self.built = True

    def call(self, tokens):
        return self.embedding(tokens) * math.sqrt(self.d_model)


# --- feed-forward, sublayers, encoder and decoder layers ------------------

ACTIVATIONS = {
    "relu": ops.relu,
    # PyTorch's F.gelu is the exact (erf) GELU; Keras's default is the tanh
    # approximation.
    "gelu": lambda x: ops.gelu(x, approximate=False),
}


class PositionwiseFeedForward(layers.Layer):
    """FFN(x) = activation(x W1 + b1) W2 + b2 on every position: (B, L, D)
    -> (B, L, D)."""

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        self.linear1 = layers.Dense(d_ff, use_bias=bias)
        self.linear2 = layers.Dense(d_model, use_bias=bias)
        self.dropout = layers.Dropout(dropout)
        self.activation = activation
        self.linear1.build((None, d_model))
        self.linear2.build((None, d_ff))
        self.built = True

    def call(self, x):
        return self.linear2(
            self.dropout(ACTIVATIONS[self.activation](self.linear1(x)))
        )


class Sublayer(layers.Layer):
    """Residual connection and layer norm around ``fn``: post-norm
    (the paper) ``LayerNorm(x + Dropout(fn(x)))`` or pre-norm
    ``x + Dropout(fn(LayerNorm(x)))``."""

    def __init__(
        self,
        d_model: int,
        dropout: float,
        norm_first: bool,
        eps: float = 1e-5,
        bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.norm = layers.LayerNormalization(epsilon=eps, center=bias)
        self.norm.build((None, d_model))
        self.dropout = layers.Dropout(dropout)
        self.norm_first = norm_first
        self.built = True

    def call(self, x, fn):
        if self.norm_first:
            return x + self.dropout(fn(self.norm(x)))
        return self.norm(x + self.dropout(fn(x)))


class EncoderLayer(layers.Layer):
    """Self-attention then feed-forward, each in a residual sublayer:
    (B, S, D) -> (B, S, D). Arguments as ``solutions.EncoderLayer``."""

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
        **kwargs,
    ):
        super().__init__(**kwargs)
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
        self.built = True

    def call(self, x, attention_mask=None):
        x = self.attn_block(
            x,
            fn=lambda y: self.self_attn(
                y, y, y, attention_mask=attention_mask
            ),
        )
        return self.ff_block(x, fn=self.feed_forward)


class DecoderLayer(layers.Layer):
    """Masked self-attention, cross-attention over the memory (B, S, D),
    then feed-forward: (B, T, D) -> (B, T, D). Arguments as
    ``solutions.DecoderLayer``."""

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
        **kwargs,
    ):
        super().__init__(**kwargs)
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
        self.built = True

    def call(self, x, memory, self_mask=None, memory_mask=None):
        x = self.self_attn_block(
            x,
            fn=lambda y: self.self_attn(y, y, y, attention_mask=self_mask),
        )
        x = self.cross_attn_block(
            x,
            fn=lambda y: self.cross_attn(
                y, memory, memory, attention_mask=memory_mask
            ),
        )
        return self.ff_block(x, fn=self.feed_forward)


# --- the whole model ------------------------------------------------------


def padding_mask(tokens, pad_id: int = PAD):
    """(B, K) ids -> (B, 1, 1, K): True where the key is a real token."""
    return ops.not_equal(ops.convert_to_tensor(tokens), pad_id)[
        :, None, None, :
    ]


def target_mask(tokens, pad_id: int = PAD):
    """(B, T) ids -> (B, 1, T, T): causal (key j <= query i) and hiding
    padding keys."""
    positions = ops.arange(ops.shape(tokens)[1])
    causal = (
        positions[:, None] >= positions[None, :]
    )  # (T, T), True on and below the diagonal
    return ops.logical_and(padding_mask(tokens, pad_id), causal)


class Transformer(keras.Model):
    """The encoder-decoder Transformer as a ``keras.Model``:
    ``model((src, tgt_in))`` gives logits (B, T, V_tgt), so
    ``model.fit((src, tgt_in), tgt_out)`` trains it.

    Arguments as ``solutions.Transformer`` (sinusoidal positions, untied
    embeddings).
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int = 512,
        num_heads: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        d_ff: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        norm_first: bool = False,
        final_norm: bool | None = None,
        max_len: int = 5000,
        pad_id: int = PAD,
        **kwargs,
    ):
        super().__init__(**kwargs)
        final_norm = norm_first if final_norm is None else final_norm
        self.pad_id, self.d_model = pad_id, d_model
        self.src_embed = TokenEmbedding(src_vocab_size, d_model)
        self.tgt_embed = TokenEmbedding(tgt_vocab_size, d_model)
        self.src_pos = SinusoidalPositionalEncoding(d_model, max_len)
        self.tgt_pos = SinusoidalPositionalEncoding(d_model, max_len)
        self.embed_dropout = layers.Dropout(dropout)
        layer_args = dict(
            d_model=d_model,
            num_heads=num_heads,
            d_ff=d_ff,
            dropout=dropout,
            activation=activation,
            norm_first=norm_first,
        )
        self.encoder_layers = [
            EncoderLayer(**layer_args) for _ in range(num_encoder_layers)
        ]
        self.decoder_layers = [
            DecoderLayer(**layer_args) for _ in range(num_decoder_layers)
        ]
        self.encoder_norm = self.decoder_norm = None
        if final_norm:
            self.encoder_norm = layers.LayerNormalization(epsilon=1e-5)
            self.decoder_norm = layers.LayerNormalization(epsilon=1e-5)
            self.encoder_norm.build((None, d_model))
            self.decoder_norm.build((None, d_model))
        self.generator = layers.Dense(tgt_vocab_size)
        self.generator.build((None, d_model))
        self.built = True

    def encode(self, src, src_mask=None):
        """(B, S) source ids -> memory (B, S, D)."""
        if src_mask is None:
            src_mask = padding_mask(src, self.pad_id)
        x = self.embed_dropout(self.src_pos(self.src_embed(src)))
        for layer in self.encoder_layers:
            x = layer(x, attention_mask=src_mask)
        return self.encoder_norm(x) if self.encoder_norm is not None else x

    def decode(self, tgt, memory, memory_mask=None, tgt_mask=None):
        """Target ids (B, T) and memory (B, S, D) -> logits
        (B, T, V_tgt)."""
        if tgt_mask is None:
            tgt_mask = target_mask(tgt, self.pad_id)
        x = self.embed_dropout(self.tgt_pos(self.tgt_embed(tgt)))
        for layer in self.decoder_layers:
            x = layer(
                x, memory, self_mask=tgt_mask, memory_mask=memory_mask
            )
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        return self.generator(x)

    def call(self, inputs):
        """inputs = (src (B, S), tgt (B, T)) -> logits (B, T, V_tgt)."""
        src, tgt = inputs
        src_mask = padding_mask(src, self.pad_id)
        return self.decode(tgt, self.encode(src, src_mask), src_mask)


# --- weight transfer ------------------------------------------------------
#
# One walk over both models pairs every Keras variable with the PyTorch
# tensor that holds the same numbers, and says whether the matrix must be
# transposed (Dense kernels are (d_in, d_out), nn.Linear weights are
# (d_out, d_in)). Both directions use the same pairs.


def _weight_pairs(
    keras_layer, torch_module
) -> Iterator[tuple[keras.Variable, object, bool]]:
    """Yield (Keras variable, torch tensor, transpose?) for every weight of
    the pair."""
    from torch import nn

    from . import attention as pt_attention
    from . import layers as pt_layers
    from . import model as pt_model

    def pair(a, b):
        yield from _weight_pairs(a, b)

    kind = (type(keras_layer).__name__, type(torch_module).__name__)
    if isinstance(torch_module, nn.Linear) and isinstance(
        keras_layer, layers.Dense
    ):
        yield keras_layer.kernel, torch_module.weight, True
        if torch_module.bias is not None:
            yield keras_layer.bias, torch_module.bias, False
    elif isinstance(torch_module, nn.LayerNorm) and isinstance(
        keras_layer, layers.LayerNormalization
    ):
        yield keras_layer.gamma, torch_module.weight, False
        if torch_module.bias is not None:
            yield keras_layer.beta, torch_module.bias, False
    elif isinstance(torch_module, nn.Embedding) and isinstance(
        keras_layer, layers.Embedding
    ):
        yield keras_layer.embeddings, torch_module.weight, False
    elif isinstance(
        torch_module, pt_attention.MultiHeadAttention
    ) and isinstance(keras_layer, MultiHeadAttention):
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            yield from pair(
                getattr(keras_layer, name), getattr(torch_module, name)
            )
    elif isinstance(
        torch_module, pt_layers.PositionwiseFeedForward
    ) and isinstance(keras_layer, PositionwiseFeedForward):
        yield from pair(keras_layer.linear1, torch_module.linear1)
        yield from pair(keras_layer.linear2, torch_module.linear2)
    elif isinstance(torch_module, pt_layers.Sublayer) and isinstance(
        keras_layer, Sublayer
    ):
        yield from pair(keras_layer.norm, torch_module.norm)
    elif isinstance(torch_module, pt_layers.EncoderLayer) and isinstance(
        keras_layer, EncoderLayer
    ):
        for name in ("self_attn", "feed_forward", "attn_block", "ff_block"):
            yield from pair(
                getattr(keras_layer, name), getattr(torch_module, name)
            )
    elif isinstance(torch_module, pt_layers.DecoderLayer) and isinstance(
        keras_layer, DecoderLayer
    ):
        for name in (
            "self_attn",
            "cross_attn",
            "feed_forward",
            "self_attn_block",
            "cross_attn_block",
            "ff_block",
        ):
            yield from pair(
                getattr(keras_layer, name), getattr(torch_module, name)
            )
    elif isinstance(torch_module, pt_layers.TokenEmbedding) and isinstance(
        keras_layer, TokenEmbedding
    ):
        yield from pair(keras_layer.embedding, torch_module.embedding)
    elif isinstance(torch_module, pt_model.Transformer) and isinstance(
        keras_layer, Transformer
    ):
        if not isinstance(
            torch_module.src_pos, pt_layers.SinusoidalPositionalEncoding
        ):
            raise ValueError("the Keras twin has sinusoidal positions only")
        torch_norms = (torch_module.encoder.norm, torch_module.decoder.norm)
        if (torch_norms[0] is None) != (keras_layer.encoder_norm is None):
            raise ValueError("final_norm differs between the two models")
        for name in ("src_embed", "tgt_embed", "generator"):
            yield from pair(
                getattr(keras_layer, name), getattr(torch_module, name)
            )
        for stack_k, stack_t in (
            (keras_layer.encoder_layers, torch_module.encoder.layers),
            (keras_layer.decoder_layers, torch_module.decoder.layers),
        ):
            if len(stack_k) != len(stack_t):
                raise ValueError(
                    f"{len(stack_k)} Keras layers but {len(stack_t)} PyTorch layers"
                )
            for layer_k, layer_t in zip(stack_k, stack_t):
                yield from pair(layer_k, layer_t)
        if torch_norms[0] is not None:
            yield from pair(keras_layer.encoder_norm, torch_norms[0])
            yield from pair(keras_layer.decoder_norm, torch_norms[1])
    else:
        raise TypeError(
            f"no weight mapping between Keras {kind[0]} and PyTorch {kind[1]}"
        )


def copy_torch_to_keras(torch_module, keras_layer):
    """Load the PyTorch module's weights into its Keras twin (in place);
    returns the twin."""
    for variable, tensor, transpose in _weight_pairs(
        keras_layer, torch_module
    ):
        value = tensor.detach().cpu().numpy()
        value = value.T if transpose else value
        if tuple(variable.shape) != value.shape:
            raise ValueError(
                f"shape mismatch: Keras {variable.path} {tuple(variable.shape)}, "
                f"PyTorch {value.shape}"
            )
        variable.assign(value)
    return keras_layer


def copy_keras_to_torch(keras_layer, torch_module):
    """Load the Keras layer's weights into its PyTorch twin (in place);
    returns the module."""
    import torch

    tied = getattr(getattr(torch_module, "generator", None), "weight", None)
    if tied is not None and tied is torch_module.tgt_embed.embedding.weight:
        raise ValueError(
            "the PyTorch model ties its embeddings; the Keras twin does not"
        )
    with torch.no_grad():
        for variable, tensor, transpose in _weight_pairs(
            keras_layer, torch_module
        ):
            value = to_numpy(variable)
            value = value.T if transpose else value
            if tuple(tensor.shape) != value.shape:
                raise ValueError(
                    f"shape mismatch: Keras {variable.path} {value.shape}, "
                    f"PyTorch {tuple(tensor.shape)}"
                )
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return torch_module


def to_keras_multi_head_attention(
    mha: MultiHeadAttention,
) -> layers.MultiHeadAttention:
    """Keras's own ``layers.MultiHeadAttention`` holding the weights of our
    Keras layer ``mha``.

    Keras's layer keeps one kernel per projection with the heads as an axis:
    query/key/value kernels (D, H, Dh) and biases (H, Dh), the output kernel
    (H, Dh, D). Our (D, D) kernels are the same numbers, with the output
    axis split into (H, Dh) as ``split_heads`` does.
    """
    heads, d_model = mha.num_heads, mha.d_model
    d_head = d_model // heads
    theirs = layers.MultiHeadAttention(
        num_heads=heads, key_dim=d_head, use_bias=mha.q_proj.use_bias
    )
    theirs.build(
        query_shape=(None, None, d_model), value_shape=(None, None, d_model)
    )
    for ours, dense in (
        (mha.q_proj, theirs.query_dense),
        (mha.k_proj, theirs.key_dense),
        (mha.v_proj, theirs.value_dense),
    ):
        dense.kernel.assign(
            ops.reshape(ours.kernel, (d_model, heads, d_head))
        )
        if ours.use_bias:
            dense.bias.assign(ops.reshape(ours.bias, (heads, d_head)))
    theirs.output_dense.kernel.assign(
        ops.reshape(mha.out_proj.kernel, (heads, d_head, d_model))
    )
    if mha.out_proj.use_bias:
        theirs.output_dense.bias.assign(mha.out_proj.bias)
    return theirs


def transformer_from_torch(model) -> Transformer:
    """A Keras :class:`Transformer` with the configuration and weights of a
    ``solutions.Transformer``."""
    layer = model.encoder.layers[0]
    twin = Transformer(
        src_vocab_size=model.src_embed.vocab_size,
        tgt_vocab_size=model.generator.out_features,
        d_model=model.d_model,
        num_heads=layer.self_attn.num_heads,
        num_encoder_layers=len(model.encoder.layers),
        num_decoder_layers=len(model.decoder.layers),
        d_ff=layer.feed_forward.linear1.out_features,
        dropout=layer.self_attn.dropout,
        activation=layer.feed_forward.activation,
        norm_first=layer.attn_block.norm_first,
        final_norm=model.encoder.norm is not None,
        max_len=model.src_pos.max_len,
        pad_id=model.pad_id,
    )
    return copy_torch_to_keras(model, twin)


# --- data, training and evaluation ----------------------------------------


def seq2seq_arrays(
    pairs: Sequence, pad_id: int = PAD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(src, tgt) pairs of 1-D id tensors (``solutions.data``'s tasks) ->
    NumPy arrays src (N, S), tgt_in (N, T) = tgt[:-1],
    tgt_out (N, T) = tgt[1:], padded with ``pad_id``."""
    from .data import pad_sequences

    src = pad_sequences([s for s, _ in pairs], pad_id).numpy()
    tgt = pad_sequences([t for _, t in pairs], pad_id).numpy()
    return src, tgt[:, :-1], tgt[:, 1:]


class NoamSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The paper's learning rate, ``solutions.noam_lr``: optimiser step
    k = 1, 2, ... gets factor * d_model^-0.5 * min(k^-0.5, k * warmup^-1.5).
    (Keras counts steps from 0.)"""

    def __init__(
        self, d_model: int, warmup_steps: int = 4000, factor: float = 1.0
    ):
        self.d_model, self.warmup_steps, self.factor = (
            d_model,
            warmup_steps,
            factor,
        )

    def __call__(self, step):
        k = ops.cast(step, "float32") + 1.0
        return (
            self.factor
            * self.d_model**-0.5
            * ops.minimum(ops.rsqrt(k), k * self.warmup_steps**-1.5)
        )

    def get_config(self) -> dict:
        return {
            "d_model": self.d_model,
            "warmup_steps": self.warmup_steps,
            "factor": self.factor,
        }


def greedy_decode(
    model: Transformer,
    src,
    max_len: int,
    bos_id: int = BOS,
    eos_id: int = EOS,
) -> np.ndarray:
    """The most likely token at every step, re-decoding the whole prefix (no
    key/value cache).

    src (B, S) ids -> (B, 1 + n) NumPy ids starting with BOS, n <= max_len;
    after a sequence's EOS comes padding. PAD and BOS are never chosen (as
    in ``solutions.greedy_decode``).
    """
    src = ops.convert_to_tensor(np.asarray(src), dtype="int32")
    src_mask = padding_mask(src, model.pad_id)
    memory = model.encode(src, src_mask)
    out = ops.full((ops.shape(src)[0], 1), bos_id, dtype="int32")
    finished = ops.zeros((ops.shape(src)[0],), dtype="bool")
    vocab = ops.arange(model.generator.units)
    never = ops.logical_or(vocab == model.pad_id, vocab == bos_id)  # (V,)
    for _ in range(max_len):
        logits = model.decode(out, memory, src_mask)[:, -1]  # (B, V)
        logits = ops.where(never, float("-inf"), logits)
        next_token = ops.cast(ops.argmax(logits, axis=-1), "int32")
        next_token = ops.where(finished, model.pad_id, next_token)
        out = ops.concatenate([out, next_token[:, None]], axis=1)
        finished = ops.logical_or(finished, next_token == eos_id)
        if bool(to_numpy(ops.all(finished))):
            break
    return to_numpy(out)


def _until_eos(ids: Sequence[int]) -> list[int]:
    ids = list(ids)
    return ids[: ids.index(EOS) + 1] if EOS in ids else ids


def exact_match(
    model: Transformer, pairs: Sequence, max_len: int, batch_size: int = 500
) -> float:
    """Fraction of (src, tgt) pairs whose greedy output equals the target up
    to its first EOS."""
    correct = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        src, _, tgt_out = seq2seq_arrays(chunk, model.pad_id)
        out = greedy_decode(model, src, max_len)
        correct += sum(
            _until_eos(pred[1:]) == _until_eos(target)
            for pred, target in zip(out.tolist(), tgt_out.tolist())
        )
    return correct / len(pairs)

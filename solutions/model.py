"""The encoder-decoder Transformer of "Attention Is All You Need"
(Vaswani et al., 2017)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import (
    KVCache,
    MultiHeadAttention,
    padding_mask,
    target_mask,
)
from .layers import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)

__all__ = ["Transformer"]


class Transformer(nn.Module):
    """Encoder-decoder Transformer. The defaults are the paper's base model
    (table 3).

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes.
        d_model: model width (512); num_heads: 8;
            num_encoder_layers, num_decoder_layers: 6;
        d_ff: feed-forward width (2048); dropout: 0.1 (residual, embedding
            and attention).
        activation: "relu" (paper) or "gelu".
        norm_first: pre-norm layers instead of the paper's post-norm.
        final_norm: layer norm after each stack; default: only with pre-norm
            (as nn.Transformer does for both, pass True to match it).
        positional: "sinusoidal" (paper) or "learned".
        max_len: longest sequence the positional encoding covers.
        tie_embeddings: share the target embedding matrix with the output
            projection (paper 3.4).
        share_embeddings: also share it with the source embedding (needs one
            vocabulary for both sides, as the paper's shared byte-pair
            vocabulary).
        pad_id: the padding token id, used to build the padding masks.
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
        positional: str = "sinusoidal",
        max_len: int = 5000,
        tie_embeddings: bool = False,
        share_embeddings: bool = False,
        pad_id: int = 0,
    ):
        super().__init__()
        if min(src_vocab_size, tgt_vocab_size) <= 0:
            raise ValueError("vocabulary sizes must be positive")
        if positional not in ("sinusoidal", "learned"):
            raise ValueError(
                "positional must be 'sinusoidal' or 'learned', got "
                f"{positional!r}"
            )
        final_norm = norm_first if final_norm is None else final_norm
        self.pad_id = pad_id
        self.d_model = d_model
        self.src_embed = TokenEmbedding(src_vocab_size, d_model)
        self.tgt_embed = TokenEmbedding(tgt_vocab_size, d_model)
        position_cls = (
            SinusoidalPositionalEncoding
            if positional == "sinusoidal"
            else LearnedPositionalEncoding
        )
        self.src_pos = position_cls(d_model, max_len)
        self.tgt_pos = position_cls(d_model, max_len)
        self.embed_dropout = nn.Dropout(dropout)
        layer_args = dict(
            d_model=d_model,
            num_heads=num_heads,
            d_ff=d_ff,
            dropout=dropout,
            activation=activation,
            norm_first=norm_first,
        )
        self.encoder = Encoder(
            EncoderLayer(**layer_args), num_encoder_layers, final_norm
        )
        self.decoder = Decoder(
            DecoderLayer(**layer_args), num_decoder_layers, final_norm
        )
        self.generator = nn.Linear(d_model, tgt_vocab_size)
        self._reset_parameters()
        if tie_embeddings:
            # With the sqrt(d_model) scale on the embedding, N(0, 1/d_model)
            # entries give unit-size embeddings and unit-size logits.
            nn.init.normal_(
                self.tgt_embed.embedding.weight, std=d_model**-0.5
            )
            self.generator.weight = self.tgt_embed.embedding.weight
        if share_embeddings:
            if src_vocab_size != tgt_vocab_size:
                raise ValueError(
                    "share_embeddings needs src_vocab_size == "
                    "tgt_vocab_size"
                )
            self.src_embed.embedding.weight = (
                self.tgt_embed.embedding.weight
            )

    def _reset_parameters(self) -> None:
        """Xavier-uniform initialisation of every matrix, as nn.Transformer
        does."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    # --- masks
    # ----------------------------------------------------------------------

    def src_mask(self, src: Tensor) -> Tensor:
        """(B, S) token ids -> (B, 1, 1, S): True for real (non-pad) source
        tokens."""
        return padding_mask(src, self.pad_id)

    def tgt_mask(self, tgt: Tensor) -> Tensor:
        """(B, T) token ids -> (B, 1, T, T): causal and hiding target
        padding."""
        return target_mask(tgt, self.pad_id)

    # --- the two halves
    # ------------------------------------------------------------------

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """(B, S) source ids -> memory (B, S, D)."""
        if src_mask is None:
            src_mask = self.src_mask(src)
        x = self.embed_dropout(self.src_pos(self.src_embed(src)))
        return self.encoder(x, src_mask)

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        cache: list[tuple[KVCache, KVCache]] | None = None,
    ) -> Tensor:
        """Target ids (B, T) and memory (B, S, D) -> logits (B, T, V_tgt).

        With a ``cache`` (from :meth:`new_cache`), ``tgt`` holds only the
        new tokens: earlier positions' keys and values come from the cache,
        and no causal mask is needed because the new token may look at
        everything before it.
        """
        offset = len(cache[0][0]) if cache is not None else 0
        if tgt_mask is None and cache is None:
            tgt_mask = self.tgt_mask(tgt)
        x = self.embed_dropout(
            self.tgt_pos(self.tgt_embed(tgt), offset=offset)
        )
        x = self.decoder(x, memory, tgt_mask, memory_mask, cache)
        return self.generator(x)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Source ids (B, S), target input ids (B, T) -> logits
        (B, T, V_tgt).

        Padding masks come from ``pad_id``; the target is masked causally
        (teacher forcing).
        """
        src_mask = self.src_mask(src)
        memory = self.encode(src, src_mask)
        return self.decode(tgt, memory, src_mask)

    # --- helpers
    # ----------------------------------------------------------------------

    def new_cache(self) -> list[tuple[KVCache, KVCache]]:
        """An empty key/value cache: a (self-attention, cross-attention)
        pair per decoder layer."""
        return [(KVCache(), KVCache()) for _ in self.decoder.layers]

    def keep_attention_weights(self, keep: bool = True) -> None:
        """Make every attention layer keep its last weights
        (``.last_weights``) for plotting."""
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.keep_weights = keep

    def num_parameters(self) -> int:
        """Number of distinct trainable parameters (tied matrices counted
        once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def device(self) -> torch.device:
        return self.generator.weight.device

"""Reference implementation of the Transformer (Vaswani et al., 2017) for
the course "Transformers, step by step". Everything a chapter builds is
importable from here::

    from solutions import MultiHeadAttention, Transformer, greedy_decode

Mask convention everywhere: a boolean tensor, True where attention is
allowed.
"""

from .attention import (
    KVCache,
    MultiHeadAttention,
    attention_few_keys,
    causal_mask,
    fused_attention,
    merge_heads,
    padding_mask,
    scaled_dot_product_attention,
    softmax,
    split_heads,
    target_mask,
)
from .bpe import BPETokenizer
from .decoding import beam_search, beam_step, greedy_decode, length_penalty
from .layers import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    LearnedPositionalEncoding,
    PositionwiseFeedForward,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    sinusoidal_encoding,
)
from .lm import LanguageModel, sample_next_token
from .model import Transformer
from .modern import ModernConfig, ModernLM
from .training import (
    LabelSmoothingLoss,
    TrainConfig,
    Trainer,
    exact_match,
    label_smoothed_cross_entropy,
    make_optimizer,
    noam_lr,
    pick_device,
    train_step,
    warmup_inverse_sqrt_schedule,
)

__all__ = [
    "KVCache",
    "MultiHeadAttention",
    "causal_mask",
    "attention_few_keys",
    "fused_attention",
    "merge_heads",
    "padding_mask",
    "scaled_dot_product_attention",
    "softmax",
    "split_heads",
    "target_mask",
    "beam_step",
    "beam_search",
    "greedy_decode",
    "length_penalty",
    "Decoder",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "LearnedPositionalEncoding",
    "PositionwiseFeedForward",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "sinusoidal_encoding",
    "Transformer",
    "ModernConfig",
    "ModernLM",
    "BPETokenizer",
    "LanguageModel",
    "sample_next_token",
    "LabelSmoothingLoss",
    "TrainConfig",
    "Trainer",
    "exact_match",
    "label_smoothed_cross_entropy",
    "make_optimizer",
    "noam_lr",
    "pick_device",
    "train_step",
    "warmup_inverse_sqrt_schedule",
]

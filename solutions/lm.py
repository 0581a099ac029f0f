"""A decoder-only (GPT-style) language model built from the package's
encoder layers.

A GPT block is an encoder layer whose self-attention is causal: there is no
encoder, so no cross-attention, and position i may only look at positions
0..i. The model is

    token embedding + learned positions
    -> N pre-norm layers (causal mask) -> LayerNorm
    -> output head that shares its matrix with the token embedding

and it is trained to predict every next token of a text at once: the target
is the input shifted left by one.

Shapes: ``B`` batch, ``T`` positions (at most ``max_len``), ``V``
vocabulary, ``D`` width.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import KVCache, causal_mask
from .layers import (
    Encoder,
    EncoderLayer,
    LearnedPositionalEncoding,
    TokenEmbedding,
)

__all__ = [
    "LanguageModel",
    "sample_next_token",
    "lm_loss",
    "random_windows",
    "cosine_lr",
    "train_language_model",
    "save_language_model",
    "load_language_model",
]


class LanguageModel(nn.Module):
    """A decoder-only Transformer:
    ``forward(idx (B, T)) -> next-token logits (B, T, V)``.

    Args:
        vocab_size: number of token ids V.
        d_model, num_heads, num_layers, d_ff: sizes of the stack of layers.
        dropout: on the embeddings, the attention weights and the sublayer
            outputs.
        max_len: longest context (learned positions exist for
            0 .. max_len - 1).
        norm_first: pre-norm layers (GPT-2 and later) instead of the paper's
            post-norm.
        activation: of the feed-forward layers, "gelu" (GPT) or "relu"
            (the paper).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 128,
        num_heads: int = 4,
        num_layers: int = 4,
        d_ff: int = 512,
        dropout: float = 0.1,
        max_len: int = 256,
        norm_first: bool = True,
        activation: str = "gelu",
    ):
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(
                f"vocab_size must be positive, got {vocab_size}"
            )
        self.config = dict(
            vocab_size=vocab_size,
            d_model=d_model,
            num_heads=num_heads,
            num_layers=num_layers,
            d_ff=d_ff,
            dropout=dropout,
            max_len=max_len,
            norm_first=norm_first,
            activation=activation,
        )
        self.max_len = max_len
        # multiplies by sqrt(d_model)
        self.embed = TokenEmbedding(vocab_size, d_model)
        self.pos = LearnedPositionalEncoding(d_model, max_len)
        self.dropout = nn.Dropout(dropout)
        layer = EncoderLayer(
            d_model, num_heads, d_ff, dropout, activation, norm_first
        )
        # final_norm: a pre-norm stack's output is never normalised
        # otherwise.
        self.layers = Encoder(layer, num_layers, final_norm=True)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        # Tied embeddings: N(0, 1/D) entries give unit-size embeddings
        # (after the sqrt(D) scale) and unit-size logits.
        nn.init.normal_(self.embed.embedding.weight, std=d_model**-0.5)
        self.head.weight = self.embed.embedding.weight

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def new_cache(self) -> list[KVCache]:
        """An empty key/value cache: one :class:`KVCache` per layer, for
        :meth:`forward`."""
        return [KVCache() for _ in self.layers.layers]

    def forward(
        self, idx: Tensor, cache: list[KVCache] | None = None
    ) -> Tensor:
        """Token ids (B, T) -> logits (B, T, V); row t predicts the token
        after token t from tokens 0..t.

        With a ``cache`` (from :meth:`new_cache`), ``idx`` holds only the
        new tokens: they take the positions after the ``len(cache[0])``
        cached ones and attend to the cached keys and values as well as to
        each other; the cache grows by T.
        """
        offset = len(cache[0]) if cache else 0
        length = idx.shape[-1]
        if offset + length > self.max_len:
            raise ValueError(
                f"sequence of length {offset + length} exceeds "
                f"max_len={self.max_len}"
            )
        x = self.dropout(self.pos(self.embed(idx), offset))  # (B, T, D)
        # Query t (position offset + t) may attend to keys 0 .. offset + t.
        mask = causal_mask(offset + length, idx.device)[
            offset:
        ]  # (T, offset + T)
        if cache is None:
            x = self.layers(x, mask)  # (B, T, D), causal self-attention
        else:
            for layer, layer_cache in zip(self.layers.layers, cache):
                # EncoderLayer.forward, with this layer's cache given to its
                # self-attention.
                x = layer.attn_block(
                    x,
                    lambda y, a=layer.self_attn, c=layer_cache: a(
                        y, y, y, mask, cache=c
                    ),
                )
                x = layer.ff_block(x, layer.feed_forward)
            if self.layers.norm is not None:
                x = self.layers.norm(x)
        return self.head(x)  # (B, T, V)

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

        Each new token is drawn with :func:`sample_next_token`
        (``temperature=0``: greedy) from the logits of the last position.
        With ``use_cache`` the prompt is run once and every later step feeds
        only the newest token, whose keys and values join the cache; without
        it (or when the text would outgrow ``max_len``) every step re-reads
        the last ``max_len`` tokens. Runs in eval mode (no dropout), then
        restores the model's mode. Returns (B, T + max_new_tokens).
        """
        was_training = self.training
        self.eval()
        fits = idx.shape[1] + max_new_tokens - 1 <= self.max_len
        cache = self.new_cache() if use_cache and fits else None
        step_input = idx  # (B, T) at first, then (B, 1)
        for _ in range(max_new_tokens):
            if cache is None:
                logits = self(idx[:, -self.max_len :])[:, -1, :]  # (B, V)
            else:
                logits = self(step_input, cache)[:, -1, :]  # (B, V)
            next_id = sample_next_token(
                logits, temperature, top_k, generator
            )  # (B,)
            idx = torch.cat([idx, next_id[:, None]], dim=1)
            step_input = next_id[:, None]
        self.train(was_training)
        return idx


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one token per row from next-token logits (B, V); returns ids
    (B,).

    * ``temperature`` divides the logits before the softmax: below 1
      sharpens the distribution, above 1 flattens it; 0 means greedy (the
      argmax).
    * ``top_k`` keeps only the k largest logits of each row (None: all of
      them).
    * ``generator`` makes the draw reproducible.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def lm_loss(model: nn.Module, idx: Tensor) -> Tensor:
    """Next-token cross-entropy of ``model`` on windows ``idx`` (B, T + 1):
    the input is ``idx[:, :-1]``, the target ``idx[:, 1:]`` (every position
    predicts the following token)."""
    inputs, targets = idx[:, :-1], idx[:, 1:]
    logits = model(inputs)  # (B, T, V)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1)
    )


def random_windows(
    data: Tensor,
    batch_size: int,
    length: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``batch_size`` windows of ``length + 1`` consecutive tokens from the
    1-D tensor ``data``, starting at random places:
    (batch_size, length + 1), ready for :func:`lm_loss`."""
    if data.dim() != 1 or len(data) < length + 2:
        raise ValueError(
            f"data must be 1-D with more than {length + 1} tokens"
        )
    starts = torch.randint(
        len(data) - length - 1, (batch_size,), generator=generator
    )
    offsets = torch.arange(length + 1)
    return data[starts[:, None] + offsets]


def cosine_lr(
    step: int,
    total_steps: int,
    peak_lr: float,
    warmup_steps: int = 100,
    min_ratio: float = 0.1,
) -> float:
    """Linear warm-up to ``peak_lr`` over ``warmup_steps``, then cosine
    decay to ``min_ratio * peak_lr`` at ``total_steps`` (``step`` counts
    from 0)."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(
        1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)
    )
    return peak_lr * (
        min_ratio
        + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


def train_language_model(
    model: LanguageModel,
    data: Tensor,
    steps: int,
    batch_size: int = 32,
    length: int = 128,
    lr: float = 3e-3,
    warmup_steps: int = 100,
    weight_decay: float = 0.1,
    grad_clip: float = 1.0,
    seed: int = 0,
    log_every: int = 50,
    evaluate: Callable[[LanguageModel], float] | None = None,
    log: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``model`` on random windows of the 1-D token tensor ``data``
    (on the model's device) with AdamW and :func:`cosine_lr`.

    Returns a history with one entry every ``log_every`` steps: ``{"step",
    "loss" (mean training loss over those steps), "lr", "seconds"}``, plus
    ``"val_loss"`` when an ``evaluate(model) -> float`` function is given.
    ``log`` is called with each entry.
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    # batches are cut on the CPU, then moved to the model's device
    data = data.cpu()
    # Weight decay on matrices only, not on biases, layer norms or position
    # vectors.
    decay = [
        p
        for n, p in model.named_parameters()
        if p.dim() >= 2 and not n.startswith("pos")
    ]
    no_decay = [
        p
        for n, p in model.named_parameters()
        if p.dim() < 2 or n.startswith("pos")
    ]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.99),
    )
    history: list[dict] = []
    start, running, count = time.perf_counter(), 0.0, 0
    model.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup_steps)
        batch = random_windows(data, batch_size, length, gen)
        loss = lm_loss(model, batch.to(model.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        running, count = running + loss.item(), count + 1
        if (step + 1) % log_every == 0 or step + 1 == steps:
            entry = {
                "step": step + 1,
                "loss": running / count,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
            }
            if evaluate is not None:
                entry["val_loss"] = evaluate(model)
                model.train()
            history.append(entry)
            if log is not None:
                log(entry)
            running, count = 0.0, 0
    model.eval()
    return history


def save_language_model(
    model: LanguageModel, path: str | Path, half: bool = True, **extra
) -> None:
    """Save the model's config and weights (float16 when ``half``), plus
    ``extra`` values (e.g. the tokenizer's alphabet), for
    :func:`load_language_model`."""
    state = {
        k: v.half() if half and v.is_floating_point() else v
        # tied: stored once
        for k, v in model.state_dict().items()
        if k != "head.weight"
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"config": dict(model.config), "state_dict": state, "extra": extra},
        path,
    )


def load_language_model(
    path: str | Path, device: str | torch.device | None = None
) -> LanguageModel:
    """Rebuild a model saved by :func:`save_language_model` (float32, eval
    mode); the saved ``extra`` values are in ``model.extra``."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = LanguageModel(**saved["config"])
    state = {
        k: v.float() if v.is_floating_point() else v
        for k, v in saved["state_dict"].items()
    }
    state["head.weight"] = state["embed.embedding.weight"]
    model.load_state_dict(state)
    model.extra = saved.get("extra", {})
    return model.to(device if device is not None else "cpu").eval()

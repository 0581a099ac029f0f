"""Turning a trained model into output sequences: greedy decoding and beam
search.

Both decode one token at a time. With ``use_cache=True`` (the default) the
decoder keeps the keys and values of earlier steps
(:class:`~solutions.attention.KVCache`), so each step costs one token's
worth of work instead of re-running the whole prefix; the cross-attention
keys and values of the encoder's memory are computed once. Cached and
uncached decoding return exactly the same tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .data import BOS, EOS, PAD
from .model import Transformer

__all__ = ["greedy_decode", "beam_search", "beam_step", "length_penalty"]


class _Stepper:
    """Feeds a growing target prefix to the decoder and returns the
    next-token log-probs."""

    def __init__(
        self,
        model: Transformer,
        memory: Tensor,
        memory_mask: Tensor,
        use_cache: bool,
        never: tuple[int, ...],
    ):
        self.model, self.memory, self.memory_mask = (
            model,
            memory,
            memory_mask,
        )
        self.cache = model.new_cache() if use_cache else None
        self.never = list(never)

    def __call__(self, prefix: Tensor) -> Tensor:
        """prefix (N, t) -> log-probabilities of token t+1, (N, V)."""
        if self.cache is not None:
            logits = self.model.decode(
                prefix[:, -1:],
                self.memory,
                self.memory_mask,
                cache=self.cache,
            )
        else:
            logits = self.model.decode(
                prefix, self.memory, self.memory_mask
            )
        log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1)
        # Padding and BOS are never outputs (a padding token inside the
        # prefix would also be masked out as a key, and decoding would
        # depend on whether the cache is used).
        log_probs[:, self.never] = float("-inf")
        return log_probs

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` of the batch (beam search's survivors)."""
        self.memory = self.memory.index_select(0, index)
        self.memory_mask = self.memory_mask.index_select(0, index)
        if self.cache is not None:
            for self_cache, cross_cache in self.cache:
                self_cache.reorder(index)
                cross_cache.reorder(index)


@torch.no_grad()
def greedy_decode(
    model: Transformer,
    src: Tensor,
    max_len: int,
    bos_id: int = BOS,
    eos_id: int = EOS,
    use_cache: bool = True,
) -> Tensor:
    """Pick the most likely token at every step.

    Args:
        src: source ids (B, S).
        max_len: most tokens to generate after BOS.
    Returns:
        (B, 1 + n) ids starting with BOS, n <= max_len; after a sequence's
        EOS comes padding.
    """
    model.eval()
    src_mask = model.src_mask(src)
    step = _Stepper(model, model.encode(src, src_mask), src_mask, use_cache,
                    never=(model.pad_id, bos_id))
    out = torch.full(
        (src.shape[0], 1), bos_id, dtype=torch.long, device=src.device
    )
    finished = torch.zeros(
        src.shape[0], dtype=torch.bool, device=src.device
    )
    for _ in range(max_len):
        next_token = step(out).argmax(dim=-1)
        next_token = next_token.masked_fill(finished, model.pad_id)
        out = torch.cat([out, next_token[:, None]], dim=1)
        finished |= next_token == eos_id
        if finished.all():
            break
    return out


def length_penalty(length: Tensor, alpha: float) -> Tensor:
    """GNMT's length normalisation ((5 + length) / 6) ** alpha
    (Wu et al., 2016); alpha = 0 turns it off, larger alpha favours longer
    outputs."""
    return ((5.0 + length.float()) / 6.0) ** alpha


def beam_step(scores: Tensor, log_probs: Tensor, finished: Tensor,
              pad_id: int = PAD) -> tuple[Tensor, Tensor, Tensor]:
    """One step of beam search: extend every hypothesis by every token, keep
    the best k.

    Args:
        scores: (B, k) total log-probability of each live hypothesis (-inf
            for unused beams).
        log_probs: (B * k, V) log-probabilities of the next token; row
            b * k + j belongs to hypothesis j of example b.
        finished: (B * k,) True for hypotheses that already produced EOS;
            they may only be extended by ``pad_id``, at no cost.
    Returns:
        new scores (B, k), sorted from best to worst;
        rows (B * k,): for each new hypothesis, the row (b * k + j) of the
            one it extends;
        tokens (B * k,): the token it was extended by.
    """
    batch, k = scores.shape
    vocab = log_probs.shape[-1]
    pad_only = torch.full_like(log_probs, float("-inf"))
    pad_only[:, pad_id] = 0.0
    log_probs = torch.where(finished[:, None], pad_only, log_probs)
    # (B, k, V)
    candidates = scores[:, :, None] + log_probs.view(batch, k, vocab)
    # (B, k) each
    scores, flat = candidates.view(batch, k * vocab).topk(k, dim=-1)
    beam, token = flat // vocab, flat % vocab
    rows = torch.arange(batch, device=scores.device)[:, None] * k + beam
    return scores, rows.view(-1), token.view(-1)


@torch.no_grad()
def beam_search(
    model: Transformer,
    src: Tensor,
    max_len: int,
    beam_size: int = 4,
    alpha: float = 0.6,
    bos_id: int = BOS,
    eos_id: int = EOS,
    use_cache: bool = True,
) -> Tensor:
    """Keep the ``beam_size`` most likely prefixes at every step; return the
    best finished one.

    Hypotheses are ranked by total log-probability while searching, and the
    finished ones by log-probability / length_penalty(length, alpha) at the
    end. A finished hypothesis stays in its beam, extended by padding at no
    cost.

    Args:
        src: source ids (B, S); max_len: most tokens to generate after BOS.
    Returns:
        (B, 1 + n) ids starting with BOS, padded after EOS. With beam_size=1
        this is greedy.
    """
    model.eval()
    batch, k = src.shape[0], beam_size
    device = src.device
    src_mask = model.src_mask(src)
    memory = model.encode(src, src_mask)
    # Every source row is repeated k times: row b * k + j is beam j of
    # example b.
    step = _Stepper(
        model,
        memory.repeat_interleave(k, 0),
        src_mask.repeat_interleave(k, 0),
        use_cache,
        never=(model.pad_id, bos_id),
    )
    tokens = torch.full(
        (batch * k, 1), bos_id, dtype=torch.long, device=device
    )
    # Only beam 0 is alive at first, so the first step does not pick the
    # same token k times.
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, dtype=torch.long, device=device)
    for _ in range(max_len):
        scores, rows, token = beam_step(
            scores, step(tokens), finished, model.pad_id
        )
        tokens = torch.cat([tokens[rows], token[:, None]], dim=1)
        lengths = lengths[rows] + (~finished[rows]).long()
        finished = finished[rows] | (token == eos_id)
        step.reorder(rows)
        if finished.all():
            break
    normalised = scores / length_penalty(lengths.view(batch, k), alpha)
    # Prefer finished hypotheses; among them, the best normalised score.
    normalised = normalised.masked_fill(
        ~finished.view(batch, k), float("-inf")
    )
    best = torch.where(
        finished.view(batch, k).any(-1),
        normalised.argmax(-1),
        scores.argmax(-1),
    )
    return tokens.view(batch, k, -1)[
        torch.arange(batch, device=device), best
    ]

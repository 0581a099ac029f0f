"""Greedy decoding and beam search: cached == uncached, beam 1 == greedy, scores are what the
model says, the length penalty formula."""

from __future__ import annotations

import pytest
import torch

import solutions.decoding as decoding
from solutions import Transformer, beam_search, greedy_decode, length_penalty
from solutions.data import BOS, EOS, PAD

V = 12


def random_model(seed, eos_bias=1.0, **kwargs):
    """A small untrained model; a bias towards EOS makes sequences end at varied lengths."""
    torch.manual_seed(seed)
    args = dict(src_vocab_size=V, tgt_vocab_size=V, d_model=16, num_heads=[1, 2, 4][seed % 3],
                num_encoder_layers=1 + seed % 2, num_decoder_layers=1 + (seed // 2) % 2,
                d_ff=32, dropout=0.1, norm_first=seed % 2 == 0, max_len=40)
    model = Transformer(**(args | kwargs)).eval()
    with torch.no_grad():
        model.generator.bias[EOS] += eos_bias
    return model


def random_src(seed, batch=3, length=6):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(3, V, (batch, length), generator=gen)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    return src.masked_fill(torch.arange(length)[None, :] >= lengths[:, None], PAD)


def sequence_log_prob(model, src, hyp):
    """Total log-probability the model gives the tokens of ``hyp`` (B, 1 + n) after BOS, up to
    and including EOS, by one teacher-forced forward pass."""
    with torch.no_grad():
        log_probs = torch.log_softmax(model(src, hyp[:, :-1]).float(), dim=-1)
    picked = log_probs.gather(-1, hyp[:, 1:, None])[..., 0]  # (B, n)
    return picked.masked_fill(hyp[:, 1:] == PAD, 0.0).sum(-1)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_cached_equals_uncached(seed):
    model, src = random_model(seed), random_src(seed)
    cached = greedy_decode(model, src, max_len=10, use_cache=True)
    uncached = greedy_decode(model, src, max_len=10, use_cache=False)
    assert torch.equal(cached, uncached)
    assert (cached[:, 0] == BOS).all()
    assert not model.training


@pytest.mark.parametrize("seed", range(4))
def test_greedy_pads_after_eos(seed):
    out = greedy_decode(random_model(seed, eos_bias=2.0), random_src(seed), max_len=12)
    for row in out.tolist():
        if EOS in row:
            assert all(t == PAD for t in row[row.index(EOS) + 1:])
        assert BOS not in row[1:]
        assert PAD not in row[1: row.index(EOS) if EOS in row else None]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("beam_size", [2, 3])
def test_beam_search_cached_equals_uncached(seed, beam_size):
    model, src = random_model(seed), random_src(seed)
    cached = beam_search(model, src, max_len=8, beam_size=beam_size, use_cache=True)
    uncached = beam_search(model, src, max_len=8, beam_size=beam_size, use_cache=False)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("seed", range(5))
def test_beam_size_one_is_greedy(seed):
    model, src = random_model(seed), random_src(seed)
    greedy = greedy_decode(model, src, max_len=9)
    for alpha in (0.0, 0.6):
        assert torch.equal(beam_search(model, src, max_len=9, beam_size=1, alpha=alpha), greedy)


@pytest.mark.parametrize("seed", range(5))
def test_beam_search_returns_best_finished_hypothesis(seed, monkeypatch):
    """With alpha = 0, the returned hypothesis' log-probability (recomputed with a
    teacher-forced forward pass) equals the best score among the finished beams.

    (Beam search need not beat greedy decoding: it prunes. So we do not assert that.) We record
    every step of the search through ``beam_step`` to rebuild all final beams and scores."""
    steps = []

    def recording_beam_step(*args, **kwargs):
        result = real_beam_step(*args, **kwargs)
        steps.append(result)
        return result

    real_beam_step = decoding.beam_step
    monkeypatch.setattr(decoding, "beam_step", recording_beam_step)
    model, src, k = random_model(seed, eos_bias=1.5), random_src(seed), 3
    out = beam_search(model, src, max_len=10, beam_size=k, alpha=0.0)

    beams = torch.full((src.shape[0] * k, 1), BOS)
    for _, rows, tokens in steps:
        beams = torch.cat([beams[rows], tokens[:, None]], dim=1)
    final_scores = steps[-1][0]  # (B, k)
    finished = (beams == EOS).any(-1).view(-1, k)
    done = finished.any(-1)  # examples with a finished beam (the others return the best live one)
    assert done.any(), "pick a seed where some example finishes"

    best_finished = final_scores.masked_fill(~finished, float("-inf")).max(-1).values
    recomputed = sequence_log_prob(model, src, out)
    torch.testing.assert_close(recomputed[done], best_finished[done], atol=1e-4, rtol=1e-4)
    assert (out[done] == EOS).any(-1).all()
    # And each beam's score is its log-probability under the model.
    torch.testing.assert_close(
        sequence_log_prob(model, src.repeat_interleave(k, 0), beams).view(-1, k),
        final_scores, atol=1e-4, rtol=1e-4)


def test_length_penalty_formula():
    lengths = torch.tensor([1, 2, 7, 30])
    assert torch.equal(length_penalty(lengths, 0.0), torch.ones(4))
    torch.testing.assert_close(length_penalty(lengths, 0.6), ((5 + lengths.float()) / 6) ** 0.6)
    assert length_penalty(torch.tensor([1]), 0.9).item() == pytest.approx(1.0)
    assert (length_penalty(lengths, 1.0).diff() > 0).all()


def test_decoding_rejects_bad_sources():
    model = random_model(0)
    with pytest.raises(ValueError, match="empty batch"):
        greedy_decode(model, torch.zeros(0, 4, dtype=torch.long), max_len=3)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 12\)"):
        beam_search(model, torch.tensor([[3, 12]]), max_len=3)
    with pytest.raises(ValueError, match="exceeds max_len"):
        greedy_decode(model, torch.full((1, 41), 5), max_len=3)

"""The decoder-only language model: shapes, causality, sampling, training, saving."""

from __future__ import annotations

import time

import pytest
import torch

from solutions.data import CharTokenizer
from solutions.lm import (
    LanguageModel,
    cosine_lr,
    lm_loss,
    load_language_model,
    random_windows,
    sample_next_token,
    save_language_model,
    train_language_model,
)

V = 11


def tiny(seed=0, **kwargs):
    torch.manual_seed(seed)
    args = dict(vocab_size=V, d_model=16, num_heads=2, num_layers=2, d_ff=32, dropout=0.0,
                max_len=20)
    return LanguageModel(**(args | kwargs)).eval()


def test_shapes_and_tied_head():
    model = tiny()
    idx = torch.randint(V, (3, 7))
    assert model(idx).shape == (3, 7, V)
    assert model.head.weight is model.embed.embedding.weight
    assert model.layers.norm is not None  # final LayerNorm of the pre-norm stack
    assert all(layer.attn_block.norm_first for layer in model.layers.layers)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 21, dtype=torch.long))


@pytest.mark.parametrize("norm_first", [True, False])
def test_causal(norm_first):
    model = tiny(norm_first=norm_first)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(V, (2, 12), generator=gen)
    changed = idx.clone()
    changed[:, 6:] = torch.randint(V, (2, 6), generator=gen)
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_top_k_1_and_temperature_0_are_greedy():
    logits = torch.randn(5, V, generator=torch.Generator().manual_seed(0))
    greedy = logits.argmax(-1)
    assert torch.equal(sample_next_token(logits, temperature=0), greedy)
    assert torch.equal(sample_next_token(logits, 1.0, top_k=1), greedy)
    assert torch.equal(sample_next_token(logits, 1e-4), greedy)
    model = tiny()
    prompt = torch.randint(V, (2, 3))
    assert torch.equal(model.generate(prompt, 8, temperature=0),
                       model.generate(prompt, 8, temperature=1.0, top_k=1))


def test_top_k_only_picks_among_k_largest():
    logits = torch.randn(1, V, generator=torch.Generator().manual_seed(1)).expand(2000, V)
    picks = sample_next_token(logits, 1.0, top_k=3, generator=torch.Generator().manual_seed(0))
    assert set(picks.tolist()) == set(logits[0].topk(3).indices.tolist())


def test_high_temperature_flattens():
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0]]).expand(4000, 4)
    gen = torch.Generator().manual_seed(0)
    cold = (sample_next_token(logits, 0.5, generator=gen) == 0).float().mean()
    hot = (sample_next_token(logits, 5.0, generator=gen) == 0).float().mean()
    assert cold > 0.99 and 0.3 < hot < 0.6


def test_sampling_is_deterministic_with_a_generator():
    model = tiny()
    prompt = torch.randint(V, (2, 3))
    runs = [model.generate(prompt, 10, temperature=1.0, top_k=5,
                           generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert runs[0].shape == (2, 13) and torch.equal(runs[0][:, :3], prompt)


def test_generate_beyond_max_len_crops_the_context():
    model = tiny(max_len=8)
    out = model.generate(torch.zeros(1, 5, dtype=torch.long), 10, temperature=0)
    assert out.shape == (1, 15)


def test_invalid_sampling_arguments():
    with pytest.raises(ValueError):
        sample_next_token(torch.zeros(1, V), temperature=-1)
    with pytest.raises(ValueError):
        sample_next_token(torch.zeros(1, V), top_k=0)


def test_windows_and_schedule():
    data = torch.arange(100)
    windows = random_windows(data, 4, 9, torch.Generator().manual_seed(0))
    assert windows.shape == (4, 10)
    assert torch.equal(windows[:, 1:] - windows[:, :-1], torch.ones(4, 9, dtype=torch.long))
    assert cosine_lr(0, 1000, 1.0, warmup_steps=10) == pytest.approx(0.1)
    assert cosine_lr(9, 1000, 1.0, warmup_steps=10) == pytest.approx(1.0)
    assert cosine_lr(1000, 1000, 1.0, warmup_steps=10, min_ratio=0.1) == pytest.approx(0.1)


def test_tiny_model_overfits_a_short_string():
    text = "to be, or not to be, that is the question. " * 4
    tok = CharTokenizer("".join(sorted(set(text))))
    data = torch.tensor(tok.encode(text))
    torch.manual_seed(0)
    model = LanguageModel(tok.vocab_size, d_model=32, num_heads=2, num_layers=2, d_ff=64,
                          dropout=0.0, max_len=32)
    start = time.perf_counter()
    before = lm_loss(model, random_windows(data, 16, 24, torch.Generator().manual_seed(1)))
    history = train_language_model(model, data, steps=100, batch_size=16, length=24, lr=1e-2,
                                   warmup_steps=10, weight_decay=0.0, log_every=100)
    after = lm_loss(model, random_windows(data, 16, 24, torch.Generator().manual_seed(1)))
    assert time.perf_counter() - start < 15
    assert before.item() > 2.5 and after.item() < 0.3, (before.item(), after.item())
    assert history[-1]["step"] == 100
    prompt = torch.tensor([tok.encode("to be, or ")])
    assert tok.decode(model.generate(prompt, 12, temperature=0)[0]).startswith("to be, or not to be")


def test_save_and_load(tmp_path):
    model = tiny()
    path = tmp_path / "lm.pt"
    save_language_model(model, path, alphabet="abc")
    loaded = load_language_model(path)
    assert loaded.extra == {"alphabet": "abc"}
    assert loaded.head.weight is loaded.embed.embedding.weight
    idx = torch.randint(V, (2, 6))
    torch.testing.assert_close(loaded(idx), model(idx), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("split", [1, 3, 5])
def test_forward_with_a_cache_equals_forward_on_the_whole_text(split):
    torch.manual_seed(split)
    model = LanguageModel(13, d_model=16, num_heads=2, num_layers=2, d_ff=32, max_len=12).eval()
    idx = torch.randint(0, 13, (2, 6))
    cache = model.new_cache()
    pieces = [model(idx[:, :split], cache), model(idx[:, split:], cache)]
    assert len(cache[0]) == 6
    torch.testing.assert_close(torch.cat(pieces, 1), model(idx), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature,top_k", [(0.0, None), (1.0, None), (0.7, 3)])
def test_cached_generation_equals_uncached(temperature, top_k):
    torch.manual_seed(0)
    model = LanguageModel(13, d_model=16, num_heads=2, num_layers=2, d_ff=32, max_len=20)
    idx = torch.randint(0, 13, (3, 4))
    runs = [model.generate(idx, 9, temperature, top_k, torch.Generator().manual_seed(5),
                           use_cache=use_cache) for use_cache in (True, False)]
    assert torch.equal(*runs)
    assert model.training  # the mode is restored


def test_generation_past_max_len_falls_back_to_a_sliding_window():
    model = LanguageModel(13, d_model=16, num_heads=2, num_layers=1, d_ff=32, max_len=6).eval()
    out = model.generate(torch.zeros(1, 4, dtype=torch.long), 8, temperature=0)
    assert out.shape == (1, 12)

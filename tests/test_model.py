"""The whole Transformer: shapes, weight sharing, parameter count, causality, gradients, errors."""

from __future__ import annotations

import pytest
import torch

from solutions import Transformer

PAD = 0


def small_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    args = dict(src_vocab_size=13, tgt_vocab_size=11, d_model=16, num_heads=4,
                num_encoder_layers=2, num_decoder_layers=2, d_ff=32, dropout=0.0, max_len=32)
    return Transformer(**(args | kwargs))


def random_batch(gen, batch, length, vocab, pad_tail=True):
    """Random ids in [3, vocab) with a random amount of padding at the end of each row."""
    tokens = torch.randint(3, vocab, (batch, length), generator=gen)
    if pad_tail:
        lengths = torch.randint(1, length + 1, (batch,), generator=gen)
        tokens = tokens.masked_fill(torch.arange(length)[None, :] >= lengths[:, None], PAD)
    return tokens


@pytest.mark.parametrize("seed", range(4))
def test_forward_shape(seed):
    gen = torch.Generator().manual_seed(seed)
    model = small_model(seed, norm_first=seed % 2 == 1, positional=["sinusoidal", "learned"][seed // 2])
    src = random_batch(gen, 3, 7, 13)
    tgt = random_batch(gen, 3, 5, 11)
    logits = model(src, tgt)
    assert logits.shape == (3, 5, 11)
    assert torch.isfinite(logits).all()


def test_tied_and_shared_embeddings_share_storage():
    model = small_model(src_vocab_size=11, tie_embeddings=True, share_embeddings=True)
    src, tgt, out = model.src_embed.weight, model.tgt_embed.weight, model.generator.weight
    assert src is tgt is out
    assert src.data_ptr() == tgt.data_ptr() == out.data_ptr()
    untied = small_model(src_vocab_size=11)
    assert model.num_parameters() == untied.num_parameters() - 2 * 11 * 16
    with pytest.raises(ValueError, match="share_embeddings"):
        small_model(src_vocab_size=13, share_embeddings=True)


def test_base_model_parameter_count():
    """The paper's base model (table 3): d_model 512, 6 + 6 layers, d_ff 2048, 8 heads, a shared
    source/target vocabulary of 37000 byte-pair tokens, all three embedding matrices tied."""
    V, D, F, N = 37000, 512, 2048, 6
    linear = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731  weight + bias
    attention = 4 * linear(D, D)  # W_Q, W_K, W_V, W_O
    feed_forward = linear(D, F) + linear(F, D)
    layer_norm = 2 * D
    encoder_layer = attention + feed_forward + 2 * layer_norm
    decoder_layer = 2 * attention + feed_forward + 3 * layer_norm
    embeddings = V * D  # one matrix: source, target and output projection
    output_bias = V  # the output projection keeps its own bias
    expected = embeddings + N * encoder_layer + N * decoder_layer + output_bias

    with torch.device("meta"):  # shapes only: no memory, no time spent initialising
        model = Transformer(V, V, d_model=D, num_heads=8, num_encoder_layers=N,
                            num_decoder_layers=N, d_ff=F, tie_embeddings=True,
                            share_embeddings=True)
    count = model.num_parameters()
    print(f"base model: {count:,} parameters (formula {expected:,}; the paper reports ~65M)")
    assert count == expected
    assert 60e6 < count < 66e6  # the paper: "65M" (table 3), ours is 63.1M


def test_decoder_is_causal():
    """Changing later target tokens leaves the logits at earlier positions unchanged."""
    gen = torch.Generator().manual_seed(0)
    model = small_model().eval()
    src = random_batch(gen, 2, 6, 13)
    tgt = random_batch(gen, 2, 6, 11, pad_tail=False)
    changed = tgt.clone()
    changed[:, 3:] = random_batch(gen, 2, 3, 11, pad_tail=False)
    torch.testing.assert_close(model(src, changed)[:, :3], model(src, tgt)[:, :3],
                               atol=1e-5, rtol=1e-5)


def test_masked_source_positions_never_matter():
    """Memory vectors at padded source positions do not reach the decoder."""
    gen = torch.Generator().manual_seed(1)
    model = small_model().eval()
    src = random_batch(gen, 3, 6, 13)
    src[:, 0] = 5  # at least one real token per row
    tgt = random_batch(gen, 3, 4, 11, pad_tail=False)
    src_mask = model.src_mask(src)
    memory = model.encode(src, src_mask)
    garbage = torch.where(src_mask[:, 0, 0, :, None], memory, torch.randn(memory.shape) * 100)
    torch.testing.assert_close(model.decode(tgt, garbage, src_mask),
                               model.decode(tgt, memory, src_mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_gradients_reach_every_parameter(norm_first):
    gen = torch.Generator().manual_seed(2)
    model = small_model(norm_first=norm_first, positional="learned", dropout=0.1).train()
    src = random_batch(gen, 4, 7, 13)
    tgt = random_batch(gen, 4, 6, 11)
    tgt[:, :6] = torch.randint(3, 11, (4, 6), generator=gen)  # every position real
    logits = model(src, tgt[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), tgt[:, 1:].reshape(-1))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


# --- clear errors ----------------------------------------------------------------------------


def test_bad_token_ids_are_rejected():
    model = small_model()
    tgt = torch.tensor([[1, 5, 6]])
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 13\)"):
        model(torch.tensor([[3, -1, 4]]), tgt)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 13\)"):
        model(torch.tensor([[3, 13, 4]]), tgt)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 11\)"):
        model(torch.tensor([[3, 4]]), torch.tensor([[1, 11]]))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.tensor([[3.0, 4.0]]), tgt)


def test_empty_batch_is_rejected():
    model = small_model()
    with pytest.raises(ValueError, match="empty batch"):
        model(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long))


def test_sequence_longer_than_max_len_is_rejected():
    model = small_model(max_len=8)
    with pytest.raises(ValueError, match="exceeds max_len=8"):
        model(torch.full((1, 9), 5), torch.full((1, 3), 5))
    with pytest.raises(ValueError, match="exceeds max_len=8"):
        model(torch.full((1, 3), 5), torch.full((1, 9), 5))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        small_model(d_model=18)
    with pytest.raises(ValueError, match="positional"):
        small_model(positional="rotary")


def test_explicit_wrong_mask_is_rejected():
    model = small_model()
    src = torch.full((2, 4), 5)
    with pytest.raises(ValueError, match="does not broadcast"):
        model.encode(src, torch.ones(2, 1, 1, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        model.encode(src, torch.ones(2, 1, 1, 4))

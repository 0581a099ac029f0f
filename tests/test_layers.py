"""Encoder and decoder layers and stacks, checked against nn.TransformerEncoder/Decoder(Layer).

How we compare with PyTorch: in eval mode *with grad disabled*, nn.TransformerEncoderLayer may
take its "fast path" (a fused C++ kernel; nested tensors in nn.TransformerEncoder), which is
allowed to leave garbage or zeros at padded query positions. We therefore run PyTorch's modules
with grad mode on (their parameters require grad, which disables the fast path) and compare
every position; one extra test uses the fast path and compares only real (non-padded) queries.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from solutions import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    PositionwiseFeedForward,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)

ATOL = RTOL = 1e-5


def close(a, b):
    torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


def config(seed):
    """A small random layer configuration, varied by seed."""
    heads = [1, 2, 4][seed % 3]
    return dict(
        d_model=heads * [4, 8][seed % 2],
        nhead=heads,
        dim_feedforward=[8, 16, 24][(seed // 2) % 3],
        dropout=0.0,
        activation=["relu", "gelu"][(seed // 3) % 2],
        norm_first=(seed // 2) % 2 == 1,
        bias=seed % 5 != 0,
        batch_first=True,
    )


def masks(gen, batch, q_len, k_len, causal=False):
    """(PyTorch's key padding mask, PyTorch's attn mask, our mask). PyTorch: True = NOT allowed;
    ours: True = may attend. Key 0 is never masked, so no query is left without keys."""
    key_padding = torch.rand(batch, k_len, generator=gen) < 0.4
    key_padding[:, 0] = False
    if causal:
        attn = torch.ones(q_len, k_len, dtype=torch.bool).triu(1)
    else:
        attn = torch.rand(q_len, k_len, generator=gen) < 0.3
        attn[:, 0] = False
    return key_padding, attn, ~key_padding[:, None, None, :] & ~attn


SEEDS = range(12)


@pytest.mark.parametrize("seed", SEEDS)
def test_encoder_layer_from_torch(seed, randomize):
    gen = torch.Generator().manual_seed(seed)
    cfg = config(seed)
    theirs = randomize(nn.TransformerEncoderLayer(**cfg), seed).eval()
    ours = EncoderLayer.from_torch(theirs).eval()
    batch, length = 1 + seed % 3, 1 + seed % 6
    x = torch.randn(batch, length, cfg["d_model"], generator=gen)
    key_padding, attn, mask = masks(gen, batch, length, length)
    expected = theirs(x, src_mask=attn, src_key_padding_mask=key_padding)  # grad on: slow path
    close(ours(x, mask), expected)


@pytest.mark.parametrize("seed", range(4))
def test_encoder_layer_matches_torch_fast_path_on_real_tokens(seed, randomize):
    """no_grad + eval: PyTorch's fast path. Compare only non-padded query positions."""
    gen = torch.Generator().manual_seed(seed)
    cfg = config(seed) | {"bias": True}
    theirs = randomize(nn.TransformerEncoderLayer(**cfg), seed).eval()
    ours = EncoderLayer.from_torch(theirs).eval()
    x = torch.randn(3, 6, cfg["d_model"], generator=gen)
    key_padding, _, mask = masks(gen, 3, 6, 6)
    with torch.no_grad():
        expected = theirs(x, src_key_padding_mask=key_padding)
        got = ours(x, ~key_padding[:, None, None, :])
    close(got[~key_padding], expected[~key_padding])


@pytest.mark.parametrize("seed", SEEDS)
def test_decoder_layer_from_torch(seed, randomize):
    gen = torch.Generator().manual_seed(seed)
    cfg = config(seed)
    theirs = randomize(nn.TransformerDecoderLayer(**cfg), seed).eval()
    ours = DecoderLayer.from_torch(theirs).eval()
    batch, t_len, s_len = 1 + seed % 3, 1 + seed % 5, 1 + (seed * 5) % 7
    x = torch.randn(batch, t_len, cfg["d_model"], generator=gen)
    memory = torch.randn(batch, s_len, cfg["d_model"], generator=gen)
    t_pad, t_attn, self_mask = masks(gen, batch, t_len, t_len, causal=True)
    m_pad, m_attn, memory_mask = masks(gen, batch, t_len, s_len)
    expected = theirs(x, memory, tgt_mask=t_attn, memory_mask=m_attn,
                      tgt_key_padding_mask=t_pad, memory_key_padding_mask=m_pad)
    close(ours(x, memory, self_mask, memory_mask), expected)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("final_norm", [False, True])
def test_encoder_and_decoder_stacks_from_torch(seed, final_norm, randomize):
    gen = torch.Generator().manual_seed(seed)
    cfg = config(seed)
    d_model, num_layers = cfg["d_model"], 1 + seed % 3
    norm = (lambda: nn.LayerNorm(d_model, bias=cfg["bias"])) if final_norm else (lambda: None)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**cfg), num_layers, norm=norm(),
                                    enable_nested_tensor=False)
    decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**cfg), num_layers, norm=norm())
    # Different random weights in every layer (the stacks start as copies of one layer).
    randomize(encoder, seed).eval()
    randomize(decoder, seed + 100).eval()
    ours_encoder = Encoder.from_torch(encoder).eval()
    ours_decoder = Decoder.from_torch(decoder).eval()
    assert (ours_encoder.norm is None) == (not final_norm)

    batch, s_len, t_len = 1 + seed % 3, 2 + seed % 5, 1 + seed % 4
    src = torch.randn(batch, s_len, d_model, generator=gen)
    tgt = torch.randn(batch, t_len, d_model, generator=gen)
    s_pad, _, src_mask = masks(gen, batch, s_len, s_len)
    src_mask = ~s_pad[:, None, None, :]
    t_pad, causal, tgt_mask = masks(gen, batch, t_len, t_len, causal=True)

    memory = encoder(src, src_key_padding_mask=s_pad)  # grad on: no fast path
    close(ours_encoder(src, src_mask), memory)
    expected = decoder(tgt, memory, tgt_mask=causal, tgt_key_padding_mask=t_pad,
                       memory_key_padding_mask=s_pad)
    close(ours_decoder(tgt, memory, tgt_mask, src_mask), expected)


def test_from_torch_needs_batch_first():
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=False)
    with pytest.raises(ValueError, match="batch_first"):
        EncoderLayer.from_torch(layer)


# --- masks: what is hidden never matters ----------------------------------------------------


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_is_causal_and_ignores_masked_memory(norm_first):
    torch.manual_seed(0)
    layer = DecoderLayer(16, 4, 32, dropout=0.0, norm_first=norm_first).eval()
    x, memory = torch.randn(2, 6, 16), torch.randn(2, 5, 16)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    memory_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 1, 0]], dtype=torch.bool)[:, None, None]
    out = layer(x, memory, causal, memory_mask)

    later = x.clone()
    later[:, 3:] = torch.randn(2, 3, 16) * 10
    close(layer(later, memory, causal, memory_mask)[:, :3], out[:, :3])

    hidden = torch.where(memory_mask[:, 0, 0, :, None], memory, torch.randn(2, 5, 16) * 10)
    close(layer(x, hidden, causal, memory_mask), out)


def test_encoder_ignores_padded_keys():
    torch.manual_seed(0)
    encoder = Encoder(EncoderLayer(16, 4, 32, dropout=0.0), 2).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)[:, None, None]
    changed = torch.where(mask[:, 0, 0, :, None], x, torch.randn(2, 5, 16) * 10)
    real = mask[:, 0, 0]
    close(encoder(changed, mask)[real], encoder(x, mask)[real])


# --- smaller pieces --------------------------------------------------------------------------


def test_sinusoidal_encoding_formula():
    pe = sinusoidal_encoding(50, 8)
    pos, i = 17, 3  # dimension 2i = 6 and 2i + 1 = 7
    angle = torch.tensor(pos / 10000 ** (2 * i / 8))
    close(pe[pos, 2 * i], torch.sin(angle))
    close(pe[pos, 2 * i + 1], torch.cos(angle))
    assert sinusoidal_encoding(4, 5).shape == (4, 5)  # odd widths work


def test_positional_encoding_offset_and_max_len():
    enc = SinusoidalPositionalEncoding(8, max_len=10)
    x = torch.zeros(1, 10, 8)
    close(enc(x[:, 4:6], offset=4), enc(x)[:, 4:6])
    with pytest.raises(ValueError, match="max_len"):
        enc(torch.zeros(1, 11, 8))


def test_feed_forward_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        PositionwiseFeedForward(8, 16, activation="swish")

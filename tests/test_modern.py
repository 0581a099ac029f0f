"""The modern decoder (solutions/modern.py) against PyTorch's own functions and its defining
properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from solutions.attention import KVCache
from solutions.modern import (
    CausalSelfAttention,
    ModernConfig,
    ModernLM,
    RMSNorm,
    SwiGLU,
    apply_rope,
    apply_rope_halves,
    grouped_query_attention,
    halves_to_interleaved,
    interleaved_to_halves,
    rms_norm,
    silu,
    swiglu,
)

ATOL = 1e-6


def test_rms_norm_equals_torch():
    torch.manual_seed(0)
    x, w = torch.randn(4, 7, 32), torch.randn(32)
    torch.testing.assert_close(rms_norm(x, w, 1e-5), F.rms_norm(x, (32,), w, 1e-5),
                               atol=ATOL, rtol=0)
    norm = RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(w)
    reference = torch.nn.RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        reference.weight.copy_(w)
    torch.testing.assert_close(norm(x), reference(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rms_norm_low_precision_computes_in_float32(dtype):
    torch.manual_seed(0)
    x = (torch.randn(3, 64) * 300).to(dtype)  # x^2 overflows float16 (max 65504)
    w = torch.randn(64).to(dtype)
    got = rms_norm(x, w)
    assert got.dtype == dtype and torch.isfinite(got).all()
    expected = F.rms_norm(x.float(), (64,), w.float(), 1e-5).to(dtype)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


def test_silu_and_swiglu_equal_torch():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(silu(x), F.silu(x), atol=ATOL, rtol=0)
    ffn = SwiGLU(16, 40)
    assert ffn.w1.weight.shape == (40, 16) and ffn.w2.weight.shape == (16, 40)
    expected = ffn.w2(F.silu(ffn.w1(x)) * ffn.w3(x))
    torch.testing.assert_close(ffn(x), expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(swiglu(x, ffn.w1.weight, ffn.w2.weight, ffn.w3.weight), expected,
                               atol=ATOL, rtol=0)


def rope_complex(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE as RoFormer writes it: pair (x_2i, x_2i+1) is the complex number x_2i + i x_2i+1,
    multiplied by e^(i * position * theta^(-2i/d)). In float64."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions.double()[..., None] * freqs
    z = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(angles), angles)).flatten(-2)


@pytest.mark.parametrize("theta", [10000.0, 500000.0, 10.0])
def test_rope_equals_complex_rotation(theta):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 16)
    positions = torch.arange(9) + 5
    expected = rope_complex(x, positions, theta).float()
    torch.testing.assert_close(apply_rope(x, positions, theta), expected, atol=1e-5, rtol=0)


def test_rope_score_depends_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(32), torch.randn(32)

    def score(m, n):
        return apply_rope(q[None], torch.tensor([m]))[0] @ apply_rope(k[None], torch.tensor([n]))[0]

    for m, n, shift in [(3, 1, 10), (0, 7, 100), (50, 50, 3)]:
        torch.testing.assert_close(score(m, n), score(m + shift, n + shift), atol=1e-4, rtol=0)
    assert not torch.allclose(score(3, 1), score(1, 3))  # but it does depend on m - n


def test_rope_position_zero_is_identity_and_norm_is_kept():
    x = torch.randn(4, 8)
    torch.testing.assert_close(apply_rope(x, torch.zeros(4, dtype=torch.long)), x)
    y = apply_rope(x, torch.arange(4) * 7)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=0)


def test_rope_batched_positions_broadcast_over_heads():
    x = torch.randn(2, 3, 5, 8)
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    got = apply_rope(x, positions[:, None, :])
    for b in range(2):
        torch.testing.assert_close(got[b], apply_rope(x[b], positions[b]))


def test_rope_halves_layout_converts_by_permutation():
    torch.manual_seed(0)
    x, positions = torch.randn(2, 6, 16), torch.arange(6)
    torch.testing.assert_close(apply_rope_halves(interleaved_to_halves(x), positions),
                               interleaved_to_halves(apply_rope(x, positions)))
    torch.testing.assert_close(halves_to_interleaved(interleaved_to_halves(x)), x)
    assert not torch.allclose(apply_rope_halves(x, positions), apply_rope(x, positions))


@pytest.mark.parametrize("heads,kv_heads,t,s", [(4, 4, 6, 6), (8, 2, 5, 5), (6, 3, 2, 7),
                                                (4, 1, 1, 9)])
def test_grouped_query_attention_equals_torch_sdpa(heads, kv_heads, t, s):
    torch.manual_seed(0)
    q = torch.randn(2, heads, t, 8)
    k, v = torch.randn(2, kv_heads, s, 8), torch.randn(2, kv_heads, s, 8)
    allowed = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)
    torch.testing.assert_close(grouped_query_attention(q, k, v), expected, atol=ATOL, rtol=0)


def test_attention_without_rope_equals_torch_multihead_attention():
    torch.manual_seed(0)
    d, heads = 32, 4
    ours = CausalSelfAttention(d, heads, rope=False)
    torch_mha = torch.nn.MultiheadAttention(d, heads, bias=False, batch_first=True)
    with torch.no_grad():
        torch_mha.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight,
                                                  ours.v_proj.weight]))
        torch_mha.out_proj.weight.copy_(ours.o_proj.weight)
    x = torch.randn(2, 7, d)
    blocked = torch.ones(7, 7, dtype=torch.bool).triu(1)  # nn.MultiheadAttention: True = blocked
    expected, _ = torch_mha(x, x, x, attn_mask=blocked, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=ATOL, rtol=0)


def test_gqa_with_one_group_per_head_is_multihead_and_cache_shrinks():
    torch.manual_seed(0)
    mha = CausalSelfAttention(32, 8, n_kv_heads=8)
    gqa = CausalSelfAttention(32, 8, n_kv_heads=2)
    x = torch.randn(2, 5, 32)
    # Sharing: GQA equals MHA whose key/value heads are copies of the shared ones.
    with torch.no_grad():
        mha.q_proj.weight.copy_(gqa.q_proj.weight)
        mha.o_proj.weight.copy_(gqa.o_proj.weight)
        for proj in ("k_proj", "v_proj"):
            shared = getattr(gqa, proj).weight.view(2, 4, 32)  # (G, Dh, D)
            getattr(mha, proj).weight.copy_(shared.repeat_interleave(4, dim=0).reshape(32, 32))
    torch.testing.assert_close(gqa(x), mha(x), atol=ATOL, rtol=0)
    caches = KVCache(), KVCache()
    mha(x, cache=caches[0])
    gqa(x, cache=caches[1])
    assert caches[0].k.numel() == 4 * caches[1].k.numel()


def test_lm_cache_gives_the_same_logits_and_tokens():
    torch.manual_seed(0)
    for config in (ModernConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2),
                   ModernConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4,
                                positions="sinusoidal", norm="layer", ffn="relu",
                                tie_embeddings=True)):
        model = ModernLM(config).eval()
        idx = torch.randint(0, 40, (2, 9))
        cache = model.new_cache()
        pieces = [model(idx[:, :5], cache), model(idx[:, 5:6], cache), model(idx[:, 6:], cache)]
        torch.testing.assert_close(torch.cat(pieces, 1), model(idx), atol=1e-5, rtol=0)
        a = model.generate(idx, 6, temperature=0)
        b = model.generate(idx, 6, temperature=0, use_cache=False)
        assert torch.equal(a, b)


def test_lm_is_causal_and_tied_embeddings_share_the_matrix():
    torch.manual_seed(0)
    model = ModernLM(ModernConfig(vocab_size=30, d_model=16, n_layers=2, n_heads=2,
                                  tie_embeddings=True)).eval()
    assert model.head.weight is model.embed.weight
    idx = torch.randint(0, 30, (1, 8))
    changed = idx.clone()
    changed[0, 5] = (idx[0, 5] + 1) % 30
    torch.testing.assert_close(model(idx)[:, :5], model(changed)[:, :5])
    assert not torch.allclose(model(idx)[:, 5:], model(changed)[:, 5:])


def test_bias_free_linears_stored_out_by_in():
    model = ModernLM(ModernConfig(vocab_size=30, d_model=16, n_layers=1, n_heads=4,
                                  n_kv_heads=2, d_ff=24))
    block = model.blocks[0]
    assert block.attn.q_proj.weight.shape == (16, 16)
    assert block.attn.k_proj.weight.shape == (8, 16)
    assert block.ffn.w1.weight.shape == (24, 16) and block.ffn.w2.weight.shape == (16, 24)
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())


@pytest.mark.parametrize("tie", [True, False])
def test_initial_loss_is_near_uniform(tie):
    torch.manual_seed(0)
    model = ModernLM(ModernConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4,
                                  tie_embeddings=tie))
    idx = torch.randint(0, 512, (4, 33))
    loss = F.cross_entropy(model(idx[:, :-1]).reshape(-1, 512), idx[:, 1:].reshape(-1))
    assert abs(loss.item() - math.log(512)) < 1.0  # unit-size logits at the start

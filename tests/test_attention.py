"""Attention: softmax, scaled dot-product attention (explicit and fused), multi-head attention,
checked against PyTorch's own implementations on many random shapes and masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from solutions import (
    MultiHeadAttention,
    attention_few_keys,
    causal_mask,
    fused_attention,
    merge_heads,
    padding_mask,
    scaled_dot_product_attention,
    softmax,
    split_heads,
)

ATOL = RTOL = 1e-5
SETTINGS = settings(max_examples=30, deadline=None)


def close(a, b, atol=ATOL, rtol=RTOL):
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def random_mask(gen, shape, p_keep=0.6):
    """Boolean mask, True = may attend, about ``p_keep`` of it True."""
    return torch.rand(shape, generator=gen) < p_keep


# --- softmax ---------------------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 6), cols=st.integers(1, 9),
       scale=st.sampled_from([1.0, 30.0, 1e4]))
def test_softmax_matches_torch(seed, rows, cols, scale):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=gen) * scale
    # Some -inf entries, but every row keeps at least one finite logit.
    holes = torch.rand(rows, cols, generator=gen) < 0.3
    holes[:, torch.randint(cols, (1,), generator=gen)] = False
    x = x.masked_fill(holes, float("-inf"))
    close(softmax(x, dim=-1), torch.softmax(x, dim=-1))
    close(softmax(x.T, dim=0), torch.softmax(x.T, dim=0))


def test_softmax_extreme_logits():
    x = torch.tensor([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4], [-1e4, -1e4, -1e4]])
    close(softmax(x), torch.softmax(x, dim=-1))
    assert torch.isfinite(softmax(x)).all()


def test_softmax_all_masked_row_is_zero():
    x = torch.tensor([[float("-inf")] * 4, [0.0, float("-inf"), 1.0, 2.0]])
    out = softmax(x)
    assert not out.isnan().any()
    assert torch.equal(out[0], torch.zeros(4))
    close(out[1], torch.softmax(x[1], dim=-1))


# --- scaled dot-product attention -----------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3), heads=st.integers(1, 4),
       q_len=st.integers(1, 7), k_len=st.integers(1, 7), d=st.sampled_from([1, 4, 8]),
       mask_kind=st.sampled_from(["none", "full", "padding", "causal", "broadcast"]))
def test_attention_explicit_equals_torch_and_fused(seed, batch, heads, q_len, k_len, d, mask_kind):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, d, generator=gen)
    k = torch.randn(batch, heads, k_len, d, generator=gen)
    v = torch.randn(batch, heads, k_len, d, generator=gen)
    mask = {
        "none": None,
        "full": random_mask(gen, (batch, heads, q_len, k_len)),
        "padding": random_mask(gen, (batch, 1, 1, k_len)),
        "causal": torch.ones(q_len, k_len, dtype=torch.bool).tril(),
        "broadcast": random_mask(gen, (q_len, k_len)),
    }[mask_kind]
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    fused = fused_attention(q, k, v, mask)
    assert not out.isnan().any() and not weights.isnan().any() and not fused.isnan().any()
    close(out, fused)

    # Queries that may attend to no key get zeros; the others a distribution over keys.
    allowed = torch.ones(batch, heads, q_len, k_len, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask
    dead = ~allowed.any(-1)  # (B, H, Q)
    assert torch.equal(out[dead], torch.zeros_like(out[dead]))
    assert torch.equal(weights[dead], torch.zeros_like(weights[dead]))
    close(weights.sum(-1)[~dead], torch.ones_like(weights.sum(-1)[~dead]))
    assert (weights[~allowed] == 0).all()

    # PyTorch's fused function takes the same convention (True = may attend).
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    close(out[~dead], reference[~dead])


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), q_len=st.integers(1, 6), k_len=st.integers(2, 6))
def test_masked_keys_never_matter(seed, q_len, k_len):
    """Changing keys and values where the mask says "no" changes no output."""
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, n, 4, generator=gen) for n in (q_len, k_len, k_len))
    mask = random_mask(gen, (2, 1, 1, k_len))  # hides the same keys from every query
    hidden = ~mask.expand(2, 3, 1, k_len)[:, :, 0, :, None]  # (B, H, K, 1)
    k2 = torch.where(hidden, torch.randn(k.shape, generator=gen) * 100, k)
    v2 = torch.where(hidden, torch.randn(v.shape, generator=gen) * 100, v)
    for attend in (lambda *a: scaled_dot_product_attention(*a)[0], fused_attention):
        close(attend(q, k, v, mask), attend(q, k2, v2, mask))


def test_fully_masked_rows_have_finite_gradients():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 4, 8, generator=gen, requires_grad=True) for _ in range(3))
    mask = random_mask(gen, (2, 2, 4, 4))
    mask[0, 1, 2] = False
    for attend in (lambda *a: scaled_dot_product_attention(*a)[0], fused_attention):
        attend(q, k, v, mask).sum().backward()
        for t in (q, k, v):
            assert torch.isfinite(t.grad).all()
            t.grad = None


@pytest.mark.parametrize("k_len", [1, 5, 11, 16, 17, 31, 32, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_paths_match_torch_in_values_and_gradients(k_len, dtype):
    """fused_attention takes attention_few_keys on the CPU up to 32 keys (keys-first scores
    up to 16) and PyTorch's kernel beyond: both give PyTorch's outputs and gradients, and
    zeros with zero gradients for queries that may attend to no key."""
    gen = torch.Generator().manual_seed(k_len)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for q_len in (1, 7, k_len):
        q = torch.randn(3, 2, q_len, 8, generator=gen, dtype=dtype)
        k, v = (torch.randn(3, 2, k_len, 8, generator=gen, dtype=dtype) for _ in range(2))
        mask = random_mask(gen, (3, 1, q_len, k_len), p_keep=0.8)
        mask[0, 0, 0] = False  # a query with no key
        grad_out = torch.randn(3, 2, q_len, 8, generator=gen, dtype=dtype)
        results = []
        for attend in (F.scaled_dot_product_attention, fused_attention, attention_few_keys):
            leaves = [t.clone().requires_grad_() for t in (q, k, v)]
            out = attend(*leaves, mask)
            if attend is F.scaled_dot_product_attention:  # its convention differs there
                out = out.masked_fill(~mask.any(-1, keepdim=True), 0.0)
            out.backward(grad_out)
            results.append((out, *(t.grad for t in leaves)))
        for got in results[1:]:
            for a, b in zip(got, results[0]):
                close(a, b, atol=tol, rtol=tol)
        assert torch.equal(results[2][0][0, :, 0], torch.zeros(2, 8, dtype=dtype))


@pytest.mark.parametrize("k_len", [4, 20])
def test_attention_few_keys_takes_masks_of_every_rank(k_len):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, n, 4, generator=gen) for n in (6, k_len, k_len))
    keep = random_mask(gen, (k_len,))
    keep[0] = True
    for mask in (keep, keep[None], keep[None, None], keep[None, None, None],
                 torch.tensor(True)):
        expected, _ = scaled_dot_product_attention(q, k, v, mask)
        close(attention_few_keys(q, k, v, mask), expected)


def test_attention_few_keys_drops_weights_without_bias():
    """With dropout, each output is the no-dropout output in expectation, and it differs
    from run to run."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 4, generator=gen) for _ in range(3))
    mask = torch.ones(5, 5, dtype=torch.bool).tril()
    plain = attention_few_keys(q, k, v, mask)
    torch.manual_seed(0)
    runs = torch.stack([attention_few_keys(q, k, v, mask, dropout_p=0.3) for _ in range(4000)])
    assert not torch.equal(runs[0], runs[1])
    close(runs.mean(0), plain, atol=0.05, rtol=0)


def test_masks_and_head_helpers():
    tokens = torch.tensor([[5, 6, 0], [7, 0, 0]])
    assert padding_mask(tokens).shape == (2, 1, 1, 3)
    assert padding_mask(tokens)[1, 0, 0].tolist() == [True, False, False]
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]).bool())
    x = torch.randn(2, 5, 12)
    assert split_heads(x, 3).shape == (2, 3, 5, 4)
    assert torch.equal(merge_heads(split_heads(x, 3)), x)


# --- multi-head attention against nn.MultiheadAttention -------------------------------------


def torch_masks(gen, batch, heads, q_len, k_len, kind):
    """Random masks in PyTorch's convention (True = NOT allowed) and the same in ours.

    Key 0 is always allowed, so that no query is fully masked: PyTorch's need_weights path
    would return NaN rows there (ours returns zeros; tested above)."""
    key_padding = torch.rand(batch, k_len, generator=gen) < 0.4  # True = pad
    key_padding[:, 0] = False
    if kind == "2d":
        attn = torch.rand(q_len, k_len, generator=gen) < 0.4
        attn[:, 0] = False
        ours_attn = ~attn
    elif kind == "3d":
        attn = torch.rand(batch * heads, q_len, k_len, generator=gen) < 0.4
        attn[:, :, 0] = False
        ours_attn = ~attn.view(batch, heads, q_len, k_len)
    else:
        attn, ours_attn = None, True
    ours = ~key_padding[:, None, None, :] & ours_attn
    return key_padding, attn, ours


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("cross", [False, True])
def test_mha_from_torch_matches(seed, cross):
    gen = torch.Generator().manual_seed(seed)
    heads = [1, 2, 4][seed % 3]
    d_model = heads * [2, 4, 8][seed % 3]
    batch, q_len = 1 + seed % 3, 1 + seed % 5
    k_len = 1 + (seed * 7) % 6 if cross else q_len
    bias = seed % 2 == 0
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(d_model, heads, bias=bias, batch_first=True).eval()
    if bias:  # nn.MultiheadAttention starts with zero biases: make them matter
        with torch.no_grad():
            theirs.in_proj_bias.normal_()
            theirs.out_proj.bias.normal_()
    ours = MultiHeadAttention.from_torch(theirs).eval()
    query = torch.randn(batch, q_len, d_model, generator=gen)
    key = torch.randn(batch, k_len, d_model, generator=gen) if cross else query
    value = torch.randn(batch, k_len, d_model, generator=gen) if cross else query
    kind = ["none", "2d", "3d"][seed % 3]
    key_padding, attn, mask = torch_masks(gen, batch, heads, q_len, k_len, kind)

    # Grad mode stays on (parameters require grad), so PyTorch takes its ordinary path.
    expected, expected_weights = theirs(query, key, value, key_padding_mask=key_padding,
                                       attn_mask=attn, need_weights=True,
                                       average_attn_weights=False)
    close(ours(query, key, value, mask), expected)  # fused path
    assert ours.last_weights is None
    ours.keep_weights = True
    close(ours(query, key, value, mask), expected)  # explicit path
    close(ours.last_weights, expected_weights)
    _, averaged = theirs(query, key, value, key_padding_mask=key_padding, attn_mask=attn)
    close(ours.last_weights.mean(dim=1), averaged)


@pytest.mark.parametrize("keep_weights", [False, True])
def test_mha_masked_key_positions_never_matter(keep_weights):
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    mha.keep_weights = keep_weights
    query, memory = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    mask = torch.rand(3, 1, 1, 7) < 0.6
    changed = torch.where(mask[:, 0, 0, :, None], memory, torch.randn(3, 7, 16) * 50)
    close(mha(query, memory, memory, mask), mha(query, changed, changed, mask))


def test_mha_causal_self_attention_ignores_the_future():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 6, 16)
    y = x.clone()
    y[:, 4:] = torch.randn(2, 2, 16)
    mask = causal_mask(6)
    close(mha(x, x, x, mask)[:, :4], mha(y, y, y, mask)[:, :4])


# --- clear errors ----------------------------------------------------------------------------


def test_d_model_must_divide_into_heads():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MultiHeadAttention(10, 3)


@pytest.mark.parametrize("attend", [scaled_dot_product_attention, fused_attention])
def test_bad_masks_are_rejected(attend):
    q = k = v = torch.randn(2, 2, 3, 4)
    with pytest.raises(ValueError, match="does not broadcast"):
        attend(q, k, v, torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        attend(q, k, v, torch.ones(3, 3))
    with pytest.raises(TypeError, match="boolean"):
        attend(q, k, v, torch.ones(3, 3, dtype=torch.long))


def test_mha_rejects_bad_inputs():
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="does not broadcast"):
        mha(x, x, x, torch.ones(3, 1, 1, 3, dtype=torch.bool))  # batch 3 vs 2
    with pytest.raises(ValueError, match=r"heads=2"):
        mha(x, x, x, torch.ones(2, 3, 3, 3, dtype=torch.bool))  # 3 heads vs 2
    with pytest.raises(ValueError, match="at most 4 dimensions"):
        mha(x, x, x, torch.ones(1, 2, 1, 3, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        mha(x, x, x, torch.ones(3, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="empty batch"):
        mha(x[:0], x[:0], x[:0])
    with pytest.raises(ValueError, match="query must have shape"):
        mha(x[..., :4], x, x)


def test_mha_from_torch_rejects_unsupported_options():
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.raises(ValueError, match="kdim == vdim"):
        MultiHeadAttention.from_torch(nn.MultiheadAttention(8, 2, kdim=4, vdim=4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fused_attention_on_gpu_zeroes_fully_masked_queries(dtype):
    """Some GPU kernels (cuDNN) return garbage for queries with no allowed key."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 64, generator=gen) for _ in range(3))
    mask = random_mask(gen, (2, 1, 16, 16))
    mask[0, 0, 3] = False
    mask[1, 0, 2:5] = False
    expected, _ = scaled_dot_product_attention(q, k, v, mask)
    got = fused_attention(*(t.cuda().to(dtype) for t in (q, k, v)), mask.cuda())
    dead = ~mask.any(-1)[:, :, :, None].expand(2, 4, 16, 64)
    assert (got.cpu()[dead] == 0).all()
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got.float().cpu(), expected, atol=tol, rtol=tol)

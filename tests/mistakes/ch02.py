"""Common mistakes and honest variants for chapter 2 (multi-head attention)."""

from . import Mistake, Variant

MHA_INIT = '''
class MultiHeadAttention(nn.Module):
    """multi-head attention"""

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if num_heads <= 0 or d_model % num_heads != 0:
            raise ValueError("d_model must be divisible by num_heads")
        self.d_model = d_model
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.keep_weights = False
        self.last_weights = None
'''


def mha(body: str) -> str:
    """The class cell with ``body`` as forward's body (8-space indent)."""
    return MHA_INIT + '''
    def forward(self, query, key, value, mask=None, cache=None, static_kv=False):
        """forward"""
''' + body


MISTAKES = [
    Mistake("split_heads", "view straight to (B, H, L, Dh), no transpose", '''
def split_heads(x, num_heads):
    """split"""
    batch, length, d_model = x.shape
    return x.view(batch, num_heads, length, d_model // num_heads)
''', "straight to (B, H, L, D/H)"),
    Mistake("split_heads", "every H-th feature to a head", '''
def split_heads(x, num_heads):
    """split"""
    batch, length, d_model = x.shape
    return x.view(batch, length, d_model // num_heads, num_heads).permute(0, 3, 1, 2)
''', "contiguous features"),
    Mistake("split_heads", "no transpose (B, L, H, Dh)", '''
def split_heads(x, num_heads):
    """split"""
    batch, length, d_model = x.shape
    return x.view(batch, length, num_heads, d_model // num_heads)
''', "head axis must come before"),
    Mistake("merge_heads", "reshape without transpose (heads merged in the wrong order)", '''
def merge_heads(x):
    """merge"""
    batch, heads, length, d_head = x.shape
    return x.reshape(batch, length, heads * d_head)
''', "wrong order"),
    Mistake("merge_heads", "features interleaved across heads", '''
def merge_heads(x):
    """merge"""
    batch, heads, length, d_head = x.shape
    return x.permute(0, 2, 3, 1).reshape(batch, length, heads * d_head)
''', "interleaved"),
    Mistake("MultiHeadAttention.forward", "heads merged in the wrong order", mha('''
        b, q_len, _ = query.shape
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask)
        else:
            out, self.last_weights = fused_attention(q, k, v, mask), None
        return self.out_proj(out.reshape(b, q_len, self.d_model))
'''), "wrong order"),
    Mistake("MultiHeadAttention.forward", "no output projection", mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask)
        else:
            out, self.last_weights = fused_attention(q, k, v, mask), None
        return merge_heads(out)
'''), "output projection is missing"),
    Mistake("MultiHeadAttention.forward", "mask not passed on", mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v)
        else:
            out, self.last_weights = fused_attention(q, k, v), None
        return self.out_proj(merge_heads(out))
'''), "mask was not passed"),
    Mistake("MultiHeadAttention.forward", "keep_weights ignored (always fused)", mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        self.last_weights = None
        return self.out_proj(merge_heads(fused_attention(q, k, v, mask)))
'''), "self.last_weights"),
    Mistake("MultiHeadAttention.forward", "scaled by sqrt(d_model), not sqrt(d_head)", mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_model)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = softmax(scores, dim=-1)
        self.last_weights = weights if self.keep_weights else None
        return self.out_proj(merge_heads(weights @ v))
'''), "one head's width"),
    Mistake("MultiHeadAttention.forward", "values projected from the key", mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(key), self.num_heads)
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask)
        else:
            out, self.last_weights = fused_attention(q, k, v, mask), None
        return self.out_proj(merge_heads(out))
'''), "projected from `value`"),
]

VARIANTS = [
    Variant("split_heads", "torch.chunk and torch.stack", '''
def split_heads(x, num_heads):
    """split with chunk"""
    return torch.stack(torch.chunk(x, num_heads, dim=-1), dim=1)
'''),
    Variant("split_heads", "einops-style rearrange by hand, float64 inside", '''
def split_heads(x, num_heads):
    """split"""
    b, n, d = x.shape
    y = x.double().reshape(b, n, num_heads, d // num_heads).permute(0, 2, 1, 3).contiguous()
    return y.to(x.dtype)
'''),
    Variant("merge_heads", "unbind and cat, with a warning", '''
import warnings
def merge_heads(x):
    """merge"""
    warnings.warn("merging heads")
    return torch.cat(x.unbind(dim=1), dim=-1)
'''),
    Variant("merge_heads", "einsum with an identity", '''
def merge_heads(x):
    """merge"""
    b, h, n, d = x.shape
    return torch.einsum("bhnd->bnhd", x).flatten(2)
'''),
    Variant("MultiHeadAttention.forward", "explicit loop over heads, einsum, float64, a warning",
            mha('''
        import warnings
        warnings.warn("a loop over heads is slow")
        b, q_len, _ = query.shape
        k_len = key.shape[1]
        d_head = self.d_model // self.num_heads
        q_all, k_all, v_all = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        outs, weights = [], []
        for h in range(self.num_heads):
            part = slice(h * d_head, (h + 1) * d_head)
            q, k, v = (t[..., part].double() for t in (q_all, k_all, v_all))
            scores = torch.einsum("bqd,bkd->bqk", q, k) / math.sqrt(d_head)
            if mask is not None:
                allowed = mask.broadcast_to(b, self.num_heads, q_len, k_len)[:, h]
                scores = scores.masked_fill(~allowed, float("-inf"))
            w = torch.softmax(scores, dim=-1).nan_to_num(0.0)
            weights.append(w)
            dropped = F.dropout(w, self.dropout, training=self.training)
            outs.append(torch.einsum("bqk,bkd->bqd", dropped, v))
        self.last_weights = torch.stack(weights, dim=1).float() if self.keep_weights else None
        return self.out_proj(torch.cat(outs, dim=-1).float())
''')),
    Variant("MultiHeadAttention.forward", "the reference way, through the helpers", mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        if cache is not None:
            k, v = cache.append(k, v)
        p = self.dropout if self.training else 0.0
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask, p)
        else:
            out = fused_attention(q, k, v, mask, dropout_p=p)
            self.last_weights = None
        return self.out_proj(merge_heads(out))
''')),
    Variant("MultiHeadAttention.forward", "nn.functional dropout by hand on the fused path", mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        if self.keep_weights or self.training:
            out, weights = scaled_dot_product_attention(
                q, k, v, mask, dropout_p=self.dropout if self.training else 0.0)
            self.last_weights = weights if self.keep_weights else None
        else:
            out, self.last_weights = fused_attention(q, k, v, mask), None
        return self.out_proj(merge_heads(out))
''')),
]

# Dropout, stale state and forbidden calls (issue 8).
MISTAKES += [
    Mistake("MultiHeadAttention.forward", "dropout ignored (never passed to the attention)",
            mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask)
        else:
            out, self.last_weights = fused_attention(q, k, v, mask), None
        return self.out_proj(merge_heads(out))
'''), "in training mode, drop attention weights"),
    Mistake("MultiHeadAttention.forward", "dropout only on the fused path", mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        p = self.dropout if self.training else 0.0
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask)
        else:
            out, self.last_weights = fused_attention(q, k, v, mask, p), None
        return self.out_proj(merge_heads(out))
'''), "on either path"),
    Mistake("MultiHeadAttention.forward", "dropout applied in eval mode too", mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask, self.dropout)
        else:
            out, self.last_weights = fused_attention(q, k, v, mask, self.dropout), None
        return self.out_proj(merge_heads(out))
'''), "dropout is for training only"),
    Mistake("MultiHeadAttention.forward", "last_weights left from an earlier call", mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        p = self.dropout if self.training else 0.0
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask, p)
        else:
            out = fused_attention(q, k, v, mask, p)
        return self.out_proj(merge_heads(out))
'''), "last_weights to None"),
    Mistake("MultiHeadAttention.forward", "PyTorch's nn.MultiheadAttention, aliased", mha('''
        MHA = getattr(nn, "Multihead" + "Attention")
        b, q_len, d = query.shape
        torch_mha = MHA(d, self.num_heads, bias=self.q_proj.bias is not None,
                        batch_first=True)
        with torch.no_grad():
            torch_mha.in_proj_weight.copy_(torch.cat(
                [self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
            torch_mha.out_proj.weight.copy_(self.out_proj.weight)
            if self.q_proj.bias is not None:
                torch_mha.in_proj_bias.copy_(torch.cat(
                    [self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]))
                torch_mha.out_proj.bias.copy_(self.out_proj.bias)
        torch_mha.train(self.training)
        torch_mha.dropout = self.dropout
        allowed = None if mask is None else ~mask.broadcast_to(
            b, self.num_heads, q_len, key.shape[1]).reshape(-1, q_len, key.shape[1])
        out, weights = torch_mha(query, key, value, attn_mask=allowed,
                                 average_attn_weights=False)
        self.last_weights = weights if self.keep_weights else None
        return out
'''), "torch.nn.MultiheadAttention"),
    Mistake("MultiHeadAttention.forward", "F.multi_head_attention_forward under another name",
            mha('''
        mha_fn = F.multi_head_attention_forward
        b, q_len, d = query.shape
        out, weights = mha_fn(
            query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1), d,
            self.num_heads,
            torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]),
            None if self.q_proj.bias is None else torch.cat(
                [self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            None, None, False, self.dropout, self.out_proj.weight, self.out_proj.bias,
            training=self.training, need_weights=True, average_attn_weights=False,
            attn_mask=None if mask is None else ~mask.broadcast_to(
                b, self.num_heads, q_len, key.shape[1]).reshape(-1, q_len, key.shape[1]))
        self.last_weights = weights if self.keep_weights else None
        return out.transpose(0, 1)
'''), "multi_head_attention_forward"),
]

# Gap hunt: dropout with 0 < p < 1 on the right tensor, gradients, visible ranks and dtypes.
HEADS = '''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
'''

MISTAKES += [
    Mistake("split_heads", "detached (no gradient)", '''
def split_heads(x, num_heads):
    """split"""
    b, l, d = x.shape
    return x.detach().view(b, l, num_heads, d // num_heads).transpose(1, 2)
''', "no gradient flows back"),
    Mistake("split_heads", "head width hard-coded to 4", '''
def split_heads(x, num_heads):
    """split"""
    b, l, d = x.shape
    return x.view(b, l, -1, 4).transpose(1, 2)
''', None),
    Mistake("split_heads", "a float32 buffer filled head by head", '''
def split_heads(x, num_heads):
    """split"""
    b, l, d = x.shape
    dh = d // num_heads
    out = torch.empty(b, num_heads, l, dh)
    for h in range(num_heads):
        out[:, h] = x[:, :, h * dh:(h + 1) * dh]
    return out
''', "dtype"),
    Mistake("merge_heads", "through NumPy", '''
import numpy as np
def merge_heads(x):
    """merge"""
    b, h, l, dh = x.shape
    return torch.from_numpy(np.ascontiguousarray(
        x.numpy().transpose(0, 2, 1, 3).reshape(b, l, h * dh)))
''', "NumPy"),
    Mistake("merge_heads", "a float32 buffer", '''
def merge_heads(x):
    """merge"""
    b, h, l, dh = x.shape
    out = torch.zeros(b, l, h * dh)
    for i in range(h):
        out[:, :, i * dh:(i + 1) * dh] = x[:, i]
    return out
''', "dtype"),
    Mistake("MultiHeadAttention.forward", "dropout on the attention output", mha(HEADS + '''
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask)
        else:
            out, self.last_weights = fused_attention(q, k, v, mask), None
        out = F.dropout(out, self.dropout, training=self.training)
        return self.out_proj(merge_heads(out))
'''), "not on the values"),
    Mistake("MultiHeadAttention.forward", "dropout on the projected values", mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(F.dropout(self.v_proj(value), self.dropout, self.training),
                        self.num_heads)
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask)
        else:
            out, self.last_weights = fused_attention(q, k, v, mask), None
        return self.out_proj(merge_heads(out))
'''), "not on the values"),
    Mistake("MultiHeadAttention.forward", "keep path drops weights in eval mode too",
            mha(HEADS + '''
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask, self.dropout)
        else:
            p = self.dropout if self.training else 0.0
            out, self.last_weights = fused_attention(q, k, v, mask, p), None
        return self.out_proj(merge_heads(out))
'''), "training only"),
    Mistake("MultiHeadAttention.forward", "a mask used only when 4-D", mha(HEADS + '''
        if mask is not None and mask.dim() != 4:
            mask = None
        p = self.dropout if self.training else 0.0
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask, p)
        else:
            out, self.last_weights = fused_attention(q, k, v, mask, p), None
        return self.out_proj(merge_heads(out))
'''), None),
    Mistake("MultiHeadAttention.forward", "two heads hard-coded", mha('''
        q = split_heads(self.q_proj(query), 2)
        k = split_heads(self.k_proj(key), 2)
        v = split_heads(self.v_proj(value), 2)
        p = self.dropout if self.training else 0.0
        if self.keep_weights:
            out, self.last_weights = scaled_dot_product_attention(q, k, v, mask, p)
        else:
            out, self.last_weights = fused_attention(q, k, v, mask, p), None
        return self.out_proj(merge_heads(out))
'''), None),
    Mistake("MultiHeadAttention.forward", "forward with gradient tracking off", mha('''
        with torch.no_grad():
            q = split_heads(self.q_proj(query), self.num_heads)
            k = split_heads(self.k_proj(key), self.num_heads)
            v = split_heads(self.v_proj(value), self.num_heads)
            p = self.dropout if self.training else 0.0
            if self.keep_weights:
                out, self.last_weights = scaled_dot_product_attention(q, k, v, mask, p)
            else:
                out, self.last_weights = fused_attention(q, k, v, mask, p), None
            return self.out_proj(merge_heads(out))
'''), "no gradient flows back"),
]

VARIANTS += [
    Variant("MultiHeadAttention.forward", "explicit attention with torch.softmax, weights kept "
            "before dropout", mha('''
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        self.last_weights = w if self.keep_weights else None
        w = F.dropout(w, self.dropout, training=self.training)
        return self.out_proj(merge_heads(w @ v))
''')),
    Variant("MultiHeadAttention.forward", "training flag of a submodule, no_grad for a copy of "
            "the weights only", mha(HEADS + '''
        p = self.dropout if self.q_proj.training else 0.0
        if self.keep_weights:
            out, w = scaled_dot_product_attention(q, k, v, mask, p)
            with torch.no_grad():
                self.last_weights = w.clone()
        else:
            out = fused_attention(q, k, v, mask, dropout_p=p)
            self.last_weights = None
        return self.out_proj(merge_heads(out))
''')),
]

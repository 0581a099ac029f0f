"""Common mistakes and honest variants for chapter 1 (attention)."""

from . import Mistake, Variant

MISTAKES = [
    Mistake("softmax", "no max subtraction (overflows for large logits)", '''
def softmax(x, dim=-1):
    """softmax"""
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)
''', "subtract the maximum"),
    Mistake("softmax", "softmax over a fixed axis", '''
def softmax(x, dim=-1):
    """softmax"""
    x = x - x.amax(dim=0, keepdim=True)
    e = torch.exp(x)
    return e / e.sum(dim=0, keepdim=True)
''', "you normalised over dim"),
    Mistake("scaled_dot_product_attention", "no scaling by sqrt(d_k)", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """attention"""
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    return weights @ v, weights
''', "sqrt(d_k)"),
    Mistake("scaled_dot_product_attention", "softmax over the query axis", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """attention"""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-2)
    return weights @ v, weights
''', "wrong axis"),
    Mistake("scaled_dot_product_attention", "inverted mask", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """attention"""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    return weights @ v, weights
''', "inverted"),
    Mistake("scaled_dot_product_attention", "no transpose of the keys (only square shapes work)", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """attention"""
    scores = q @ k / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    return weights @ v, weights
''', None),
    Mistake("padding_mask", "inverted mask", '''
def padding_mask(tokens, pad_id=0):
    """mask"""
    return (tokens == pad_id)[:, None, None, :]
''', "inverted"),
]

VARIANTS = [
    Variant("softmax", "logsumexp", '''
def softmax(x, dim=-1):
    """softmax via logsumexp"""
    lse = torch.logsumexp(x, dim=dim, keepdim=True)
    return torch.exp(x - lse).nan_to_num(0.0)
'''),
    Variant("scaled_dot_product_attention", "einsum, float64 inside", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """attention with einsum"""
    scores = torch.einsum("...qd,...kd->...qk", q.double(), k.double()) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), float("-inf"))
    weights = softmax(scores, dim=-1)
    out = torch.einsum("...qk,...kd->...qd", weights, v.double())
    return out.to(q.dtype), weights.to(q.dtype)
'''),
    Variant("padding_mask", "unsqueeze and a warning", '''
import warnings
def padding_mask(tokens, pad_id=0):
    """mask"""
    warnings.warn("this implementation is fine but chatty")
    return tokens.ne(pad_id).unsqueeze(1).unsqueeze(2)
'''),
]

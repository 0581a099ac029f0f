"""Common mistakes and honest variants for chapter 1 (attention)."""

from . import Mistake, Variant

MISTAKES = [
    Mistake("softmax", "no max subtraction (overflows for large logits)", '''
def softmax(x, dim=-1):
    """softmax"""
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)
''', "no exponent is positive"),
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
    Mistake("softmax", "torch.softmax with NaN cleaned up (a forbidden call)", '''
def softmax(x, dim=-1):
    """softmax"""
    return torch.softmax(x, dim).nan_to_num(0.0)
''', "torch.softmax"),
    Mistake("softmax", "an aliased forbidden call", '''
_sm = getattr(torch.nn.functional, "soft" + "max")
def softmax(x, dim=-1):
    """softmax"""
    return _sm(x, dim=dim).nan_to_num(0.0)
''', "torch.nn.functional.softmax"),
    Mistake("softmax", "log_softmax then exp (a forbidden call)", '''
def softmax(x, dim=-1):
    """softmax"""
    return x.log_softmax(dim).exp().nan_to_num(0.0)
''', "log_softmax"),
    Mistake("softmax", "NaN for a row of only -inf", '''
def softmax(x, dim=-1):
    """softmax"""
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)
''', "an all -inf row"),
    Mistake("softmax", "float32 whatever the input's dtype", '''
def softmax(x, dim=-1):
    """softmax"""
    x = x.float()
    m = x.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(x - m)
    s = e.sum(dim=dim, keepdim=True)
    return e / torch.where(s > 0, s, torch.ones_like(s))
''', "dtype"),
    Mistake("softmax", "modifies its input in place", '''
def softmax(x, dim=-1):
    """softmax"""
    m = x.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    x -= m
    e = torch.exp(x)
    s = e.sum(dim=dim, keepdim=True)
    return e / torch.where(s > 0, s, torch.ones_like(s))
''', "in place"),
    Mistake("scaled_dot_product_attention", "NaN for a query with no allowed key", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """attention"""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    e = torch.exp(scores - scores.amax(-1, keepdim=True))
    weights = e / e.sum(-1, keepdim=True)
    weights = F.dropout(weights, dropout_p)
    return weights @ v, weights
''', "no allowed key"),
    Mistake("scaled_dot_product_attention", "ignores dropout_p", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """attention"""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    return weights @ v, weights
''', "dropout_p"),
    Mistake("scaled_dot_product_attention", "returns only the output", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """attention"""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.dropout(softmax(scores, dim=-1), dropout_p)
    return weights @ v
''', "must return a pair (output, weights)"),
    Mistake("scaled_dot_product_attention", "PyTorch's fused attention (a forbidden call)", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """attention"""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.dropout(softmax(scores, dim=-1), dropout_p)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return out.nan_to_num(0.0), weights
''', "scaled_dot_product_attention, which"),
    Mistake("padding_mask", "ignores pad_id", '''
def padding_mask(tokens, pad_id=0):
    """mask"""
    return (tokens != 0)[:, None, None, :]
''', "pad_id"),
    Mistake("padding_mask", "built on the CPU whatever the tokens' device", '''
def padding_mask(tokens, pad_id=0):
    """mask"""
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    mask[:] = (tokens != pad_id).cpu() if tokens.device.type != "meta" else True
    return mask[:, None, None, :]
''', "device"),
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
    weights = F.dropout(softmax(scores, dim=-1), p=dropout_p)
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

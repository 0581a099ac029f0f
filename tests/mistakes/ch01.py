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

# Gap hunt (dropout with 0 < p < 1, gradients, visible ranks and paddings).
ATTENTION_HEAD = '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """attention"""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)
'''

MISTAKES += [
    Mistake("softmax", "computed in float32 and cast back", '''
def softmax(x, dim=-1):
    """softmax"""
    y = x.float()
    m = y.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(y - m)
    s = e.sum(dim=dim, keepdim=True)
    return (e / torch.where(s > 0, s, torch.ones_like(s))).to(x.dtype)
''', "float64's precision"),
    Mistake("softmax", "an all -inf slice handled along the last axis only", '''
def softmax(x, dim=-1):
    """softmax"""
    dead = torch.isinf(x).all(dim=-1, keepdim=True)
    x = torch.where(dead, torch.zeros_like(x), x)
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return torch.where(dead, torch.zeros_like(x), e / e.sum(dim=dim, keepdim=True))
''', None),
    Mistake("scaled_dot_product_attention", "dropout without the 1/(1-p) rescaling",
            ATTENTION_HEAD + '''
    if dropout_p > 0.0:
        weights = weights * (torch.rand_like(weights) >= dropout_p)
    return weights @ v, weights
''', "1 / (1 - p)"),
    Mistake("scaled_dot_product_attention", "one dropout mask shared by the batch and heads",
            ATTENTION_HEAD + '''
    if dropout_p > 0.0:
        keep = torch.rand(weights.shape[-2:]) >= dropout_p
        weights = weights * keep / (1.0 - dropout_p) if dropout_p < 1.0 else weights * 0.0
    return weights @ v, weights
''', "draws its own dropout mask"),
    Mistake("scaled_dot_product_attention", "whole query rows dropped", ATTENTION_HEAD + '''
    if dropout_p > 0.0:
        keep = torch.rand(weights.shape[:-1] + (1,)) >= dropout_p
        weights = weights * keep / (1.0 - dropout_p) if dropout_p < 1.0 else weights * 0.0
    return weights @ v, weights
''', "single weights"),
    Mistake("scaled_dot_product_attention", "returns the weights before dropout",
            ATTENTION_HEAD + '''
    return F.dropout(weights, p=dropout_p) @ v, weights
''', "yours are the weights without dropout"),
    Mistake("scaled_dot_product_attention", "a mask used only when 4-D", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    """attention"""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None and mask.dim() == 4:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.dropout(softmax(scores, dim=-1), p=dropout_p)
    return weights @ v, weights
''', "mask was not applied"),
    Mistake("padding_mask", "ids above pad_id taken as real", '''
def padding_mask(tokens, pad_id=0):
    """mask"""
    return (tokens > pad_id)[:, None, None, :]
''', "smaller ones too"),
    Mistake("padding_mask", "mask from sequence lengths (padding assumed at the end)", '''
def padding_mask(tokens, pad_id=0):
    """mask"""
    lengths = (tokens != pad_id).sum(dim=1, keepdim=True)
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    return (positions < lengths)[:, None, None, :]
''', "not always a tail"),
    Mistake("padding_mask", "checks the ids' values in Python (cannot run on a GPU stand-in)",
            '''
def padding_mask(tokens, pad_id=0):
    """mask"""
    if (tokens < 0).any():
        raise ValueError("token ids must be non-negative")
    return (tokens != pad_id)[:, None, None, :]
''', "meta device"),
]

VARIANTS += [
    Variant("scaled_dot_product_attention", "hand-written inverted dropout, p = 1 guarded",
            ATTENTION_HEAD + '''
    if dropout_p >= 1.0:
        weights = torch.zeros_like(weights)
    elif dropout_p > 0.0:
        weights = weights * (torch.rand_like(weights) >= dropout_p) / (1.0 - dropout_p)
    return weights @ v, weights
'''),
    Variant("scaled_dot_product_attention", "dropout with a Bernoulli draw, nn.Dropout module",
            ATTENTION_HEAD + '''
    if dropout_p > 0.0:
        keep = torch.bernoulli(torch.full_like(weights, 1.0 - dropout_p))
        weights = nn.Dropout(dropout_p)(weights) if dropout_p < 0.3 else (
            weights * keep / max(1.0 - dropout_p, 1e-12))
    return torch.matmul(weights, v), weights
'''),
    Variant("padding_mask", "the pad id as a tensor on the tokens' device", '''
def padding_mask(tokens, pad_id=0):
    """mask"""
    pad = torch.as_tensor(pad_id, device=tokens.device, dtype=tokens.dtype)
    return torch.ne(tokens, pad).view(tokens.shape[0], 1, 1, tokens.shape[1])
'''),
]

"""Common mistakes and honest variants for chapter 11 (the modern Transformer)."""

from . import Mistake, Variant

MISTAKES = [
    Mistake("rms_norm", "eps outside the square root", '''
def rms_norm(x, weight, eps=1e-5):
    """rms"""
    x32 = x.float()
    return (x32 / (x32.pow(2).mean(-1, keepdim=True).sqrt() + eps) * weight.float()).to(x.dtype)
''', "inside the square root"),
    Mistake("rms_norm", "LayerNorm (subtracts the mean)", '''
def rms_norm(x, weight, eps=1e-5):
    """rms"""
    x32 = x.float()
    x32 = x32 - x32.mean(-1, keepdim=True)
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)
''', "LayerNorm"),
    Mistake("rms_norm", "computed in the input's dtype (float16 overflows)", '''
def rms_norm(x, weight, eps=1e-5):
    """rms"""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight
''', "overflowed"),
    Mistake("rms_norm", "returns float32 for float16 input", '''
def rms_norm(x, weight, eps=1e-5):
    """rms"""
    x32 = x.float()
    return x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
''', "dtype"),
    Mistake("swiglu", "gate on W3 instead of W1", '''
def swiglu(x, w1, w2, w3):
    """swiglu"""
    return (silu(x @ w3.T) * (x @ w1.T)) @ w2.T
''', "SiLU gates W1 x"),
    Mistake("swiglu", "sigmoid instead of SiLU", '''
def swiglu(x, w1, w2, w3):
    """swiglu"""
    return (torch.sigmoid(x @ w1.T) * (x @ w3.T)) @ w2.T
''', "z * sigmoid(z)"),
    Mistake("swiglu", "weights used as (d_in, d_out)", '''
def swiglu(x, w1, w2, w3):
    """swiglu"""
    return (silu(x @ w1) * (x @ w3)) @ w2
''', "(d_out, d_in)"),
    Mistake("rope_angles", "exponent -i/d instead of -2i/d", '''
def rope_angles(positions, head_dim, theta=10000.0):
    """angles"""
    i = torch.arange(head_dim // 2, dtype=torch.float32)
    return positions.float()[..., None] * theta ** (-i / head_dim)
''', "-2i/d"),
    Mistake("rope_angles", "one angle per feature, not per pair", '''
def rope_angles(positions, head_dim, theta=10000.0):
    """angles"""
    i = torch.arange(head_dim, dtype=torch.float32) // 2 * 2
    return positions.float()[..., None] * theta ** (-i / head_dim)
''', "d/2 entries"),
    Mistake("apply_rope", "halves layout (pairs i and i + d/2)", '''
def apply_rope(x, positions, theta=10000.0):
    """rope"""
    angles = rope_angles(positions, x.shape[-1], theta)
    cos, sin = torch.cos(angles), torch.sin(angles)
    a, b = x.float().chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1).to(x.dtype)
''', "halves"),
    Mistake("apply_rope", "rotation in the wrong direction", '''
def apply_rope(x, positions, theta=10000.0):
    """rope"""
    angles = rope_angles(positions, x.shape[-1], theta)
    cos, sin = torch.cos(angles), torch.sin(angles)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos + odd * sin, -even * sin + odd * cos], dim=-1).flatten(-2)
''', "wrong way"),
    Mistake("grouped_query_attention", "repeat instead of repeat_interleave", '''
def grouped_query_attention(q, k, v, causal=True):
    """gqa"""
    group = q.shape[-3] // k.shape[-3]
    k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    t, s = q.shape[-2], k.shape[-2]
    allowed = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
''', "consecutive query heads share"),
    Mistake("grouped_query_attention", "causal mask from the top-left corner with a cache", '''
def grouped_query_attention(q, k, v, causal=True):
    """gqa"""
    group = q.shape[-3] // k.shape[-3]
    k, v = k.repeat_interleave(group, -3), v.repeat_interleave(group, -3)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    allowed = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
''', "last T of the S positions"),
    Mistake("grouped_query_attention", "no causal mask", '''
def grouped_query_attention(q, k, v, causal=True):
    """gqa"""
    group = q.shape[-3] // k.shape[-3]
    k, v = k.repeat_interleave(group, -3), v.repeat_interleave(group, -3)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v
''', "causal"),
    Mistake("merge_pair", "overlapping merges", '''
def merge_pair(ids, pair, new_id):
    """merge"""
    out = []
    for i, token in enumerate(ids):
        if i + 1 < len(ids) and (token, ids[i + 1]) == tuple(pair):
            out.append(new_id)
        elif i > 0 and (ids[i - 1], token) == tuple(pair):
            continue
        else:
            out.append(token)
    return out
''', "overlap"),
    Mistake("merge_pair", "only the first occurrence", '''
def merge_pair(ids, pair, new_id):
    """merge"""
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new_id] + ids[i + 2:]
    return list(ids)
''', "every occurrence"),
    Mistake("cross_entropy", "no max subtraction (overflows)", '''
def cross_entropy(logits, targets):
    """ce"""
    logits = logits.float()
    log_z = torch.log(torch.exp(logits).sum(-1))
    return (log_z - logits.gather(-1, targets[..., None]).squeeze(-1)).mean()
''', "overflowed"),
    Mistake("cross_entropy", "sum instead of mean", '''
def cross_entropy(logits, targets):
    """ce"""
    logits = logits.float()
    top = logits.amax(-1, keepdim=True)
    log_z = top.squeeze(-1) + torch.log(torch.exp(logits - top).sum(-1))
    return (log_z - logits.gather(-1, targets[..., None]).squeeze(-1)).sum()
''', "mean"),
    Mistake("adamw_step", "L2 regularisation (Adam) instead of decoupled decay", '''
@torch.no_grad()
def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.01):
    """adam + L2"""
    grad = grad + weight_decay * param
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    m_hat = exp_avg / (1 - beta1 ** step)
    v_hat = exp_avg_sq / (1 - beta2 ** step)
    param.sub_(lr * m_hat / (v_hat.sqrt() + eps))
''', "decouples"),
    Mistake("adamw_step", "no bias correction", '''
@torch.no_grad()
def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.01):
    """no bias correction"""
    param.mul_(1 - lr * weight_decay)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    param.sub_(lr * exp_avg / (exp_avg_sq.sqrt() + eps))
''', "bias correction"),
    Mistake("adamw_step", "rebinds param instead of updating it in place", '''
@torch.no_grad()
def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.01):
    """out of place"""
    param = param * (1 - lr * weight_decay)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    m_hat = exp_avg / (1 - beta1 ** step)
    v_hat = exp_avg_sq / (1 - beta2 ** step)
    param = param - lr * m_hat / (v_hat.sqrt() + eps)
''', "in place"),
    Mistake("cosine_schedule", "cosine keeps going after cosine_iters", '''
def cosine_schedule(it, max_lr, min_lr, warmup_iters, cosine_iters):
    """cosine"""
    if it < warmup_iters:
        return max_lr * it / warmup_iters
    progress = (it - warmup_iters) / (cosine_iters - warmup_iters)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)
''', "stays at min_lr"),
    Mistake("cosine_schedule", "warm-up starts at max_lr / warmup_iters", '''
def cosine_schedule(it, max_lr, min_lr, warmup_iters, cosine_iters):
    """cosine"""
    if it < warmup_iters:
        return max_lr * (it + 1) / warmup_iters
    if it > cosine_iters:
        return min_lr
    progress = (it - warmup_iters) / (cosine_iters - warmup_iters)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)
''', "starts at 0"),
    Mistake("cosine_schedule", "decays to 0 instead of min_lr", '''
def cosine_schedule(it, max_lr, min_lr, warmup_iters, cosine_iters):
    """cosine"""
    if it < warmup_iters:
        return max_lr * it / warmup_iters
    if it > cosine_iters:
        return min_lr
    progress = (it - warmup_iters) / (cosine_iters - warmup_iters)
    return 0.5 * (1 + math.cos(math.pi * progress)) * max_lr
''', "from max_lr to min_lr"),
]

VARIANTS = [
    Variant("rms_norm", "float64 inside, rsqrt via pow", '''
def rms_norm(x, weight, eps=1e-5):
    """rms in float64"""
    x64 = x.double()
    scale = (x64 * x64).mean(dim=-1, keepdim=True).add(eps).pow(-0.5)
    return (x64 * scale * weight.double()).to(x.dtype)
'''),
    Variant("swiglu", "F.linear and F.silu", '''
def swiglu(x, w1, w2, w3):
    """swiglu with F.linear"""
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)
'''),
    Variant("apply_rope", "complex numbers", '''
def apply_rope(x, positions, theta=10000.0):
    """rope with complex numbers"""
    angles = rope_angles(positions, x.shape[-1], theta)
    z = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
    out = torch.view_as_real(z * torch.polar(torch.ones_like(angles), angles))
    return out.flatten(-2).to(x.dtype)
'''),
    Variant("grouped_query_attention", "einsum over groups, no copies of k and v", '''
def grouped_query_attention(q, k, v, causal=True):
    """gqa with a group axis"""
    b, h, t, d = q.shape
    g, s = k.shape[1], k.shape[2]
    qg = q.view(b, g, h // g, t, d)
    scores = torch.einsum("bgqtd,bgsd->bgqts", qg, k) / d ** 0.5
    if causal:
        allowed = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
        scores = scores.masked_fill(~allowed, float("-inf"))
    out = torch.einsum("bgqts,bgsd->bgqtd", scores.softmax(-1), v)
    return out.reshape(b, h, t, d)
'''),
    Variant("merge_pair", "tuple output", '''
def merge_pair(ids, pair, new_id):
    """merge returning a tuple"""
    out, i = [], 0
    while i < len(ids):
        if ids[i:i + 2] == list(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return tuple(out)
'''),
    Variant("cross_entropy", "one-hot dot product", '''
def cross_entropy(logits, targets):
    """ce with one-hot"""
    logits = logits.float()
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    log_probs = shifted - shifted.exp().sum(-1, keepdim=True).log()
    one_hot = F.one_hot(targets, logits.shape[-1]).float()
    return -(one_hot * log_probs).sum(-1).mean()
'''),
    Variant("adamw_step", "textbook m_hat / v_hat", '''
@torch.no_grad()
def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.01):
    """textbook"""
    param.mul_(1 - lr * weight_decay)
    exp_avg.mul_(beta1).add_((1 - beta1) * grad)
    exp_avg_sq.mul_(beta2).add_((1 - beta2) * grad * grad)
    m_hat = exp_avg / (1 - beta1 ** step)
    v_hat = exp_avg_sq / (1 - beta2 ** step)
    param.sub_(lr * m_hat / (v_hat.sqrt() + eps))
'''),
    Variant("cosine_schedule", "min/max clamping", '''
def cosine_schedule(it, max_lr, min_lr, warmup_iters, cosine_iters):
    """cosine"""
    if it < warmup_iters:
        return it / warmup_iters * max_lr
    progress = min(1.0, (it - warmup_iters) / (cosine_iters - warmup_iters))
    return min_lr + (max_lr - min_lr) * (1 + math.cos(math.pi * progress)) / 2
'''),
]


# Found by a gap hunt (2026-12-02): each passed the checks before they were tightened.
MISTAKES += [
    Mistake('apply_rope', 'never casts back to x.dtype (float16 in, float32 out)', '''
def apply_rope(x, positions, theta=10000.0):
    """rope"""
    angles = rope_angles(positions, x.shape[-1], theta)
    cos, sin = torch.cos(angles), torch.sin(angles)
    pairs = x.float().unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)
''', None),
    Mistake('grouped_query_attention', 'ignores causal=False (always masks)', '''
def grouped_query_attention(q, k, v, causal=True):
    """gqa"""
    group = q.shape[-3] // k.shape[-3]
    k, v = k.repeat_interleave(group, -3), v.repeat_interleave(group, -3)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    t, s = q.shape[-2], k.shape[-2]
    allowed = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t)
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v
''', 'with causal=False nothing is masked'),
    Mistake('merge_pair', 'string replace on the decimal ids (breaks on multi-digit ids)', '''
def merge_pair(ids, pair, new_id):
    """merge"""
    text = " ".join(map(str, ids)).replace(f"{pair[0]} {pair[1]}", str(new_id))
    return [int(t) for t in text.split()]
''', None),
    Mistake('merge_pair', "merges in place and returns the caller's list", '''
def merge_pair(ids, pair, new_id):
    """merge"""
    i = 0
    while i < len(ids) - 1:
        if ids[i] == pair[0] and ids[i + 1] == pair[1]:
            ids[i:i + 2] = [new_id]
        i += 1
    return ids
''', 'changed the list `ids`'),
    Mistake('cross_entropy', 'stable softmax then log (underflows to log 0)', '''
def cross_entropy(logits, targets):
    """ce"""
    logits = logits.float()
    e = torch.exp(logits - logits.amax(-1, keepdim=True))
    p = e / e.sum(-1, keepdim=True)
    return -torch.log(p.gather(-1, targets[..., None]).squeeze(-1) + 1e-12).mean()
''', None),
    Mistake('cross_entropy', 'softmax then log, no epsilon (log 0 = -inf)', '''
def cross_entropy(logits, targets):
    """ce"""
    logits = logits.float()
    e = torch.exp(logits - logits.amax(-1, keepdim=True))
    p = e / e.sum(-1, keepdim=True)
    return -torch.log(p.gather(-1, targets[..., None]).squeeze(-1)).mean()
''', 'underflowed to 0'),
    Mistake('cross_entropy', 'no float32 upcast (float16 logits give a float16 loss)', '''
def cross_entropy(logits, targets):
    """ce"""
    top = logits.amax(-1, keepdim=True)
    log_z = top.squeeze(-1) + torch.log(torch.exp(logits - top).sum(-1))
    return (log_z - logits.gather(-1, targets[..., None]).squeeze(-1)).mean()
''', 'compute in float32'),
    Mistake('adamw_step', 'eps inside the square root', '''
@torch.no_grad()
def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.01):
    """eps inside"""
    param.mul_(1 - lr * weight_decay)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    m_hat = exp_avg / (1 - beta1 ** step)
    v_hat = exp_avg_sq / (1 - beta2 ** step)
    param.sub_(lr * m_hat / torch.sqrt(v_hat + eps))
''', 'not under the root'),
    Mistake('adamw_step', 'eps outside the division (m / sqrt(v) + eps)', '''
@torch.no_grad()
def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.01):
    """adamw"""
    param.mul_(1 - lr * weight_decay)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    m_hat = exp_avg / (1 - beta1 ** step)
    v_hat = exp_avg_sq / (1 - beta2 ** step)

    param.sub_(lr * (m_hat / v_hat.sqrt() + eps))
''', None),
    Mistake('adamw_step', 'no eps at all', '''
@torch.no_grad()
def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.01):
    """adamw"""
    param.mul_(1 - lr * weight_decay)
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    m_hat = exp_avg / (1 - beta1 ** step)
    v_hat = exp_avg_sq / (1 - beta2 ** step)

    param.sub_(lr * m_hat / v_hat.sqrt())
''', '0 / 0'),
    Mistake('adamw_step', 'weight decay applied after the Adam update (decays the new param)', '''
@torch.no_grad()
def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.01):
    """decay last"""
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    m_hat = exp_avg / (1 - beta1 ** step)
    v_hat = exp_avg_sq / (1 - beta2 ** step)
    param.sub_(lr * m_hat / (v_hat.sqrt() + eps))
    param.mul_(1 - lr * weight_decay)
''', 'decaying the updated parameter'),
]

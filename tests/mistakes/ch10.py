"""Common mistakes and honest variants for chapter 10 (FLOPs, accumulation, all-reduce)."""

from . import Mistake, Variant

FLOPS_HEAD = '''
def forward_flops(shape, batch, src_len, tgt_len):
    """flops"""
    d, f, v = shape.d_model, shape.d_ff, shape.tgt_vocab_size
'''

FLOPS_RIGHT = '''
    enc = batch * src_len * (8 * d * d + 4 * d * f) + 4 * d * batch * src_len * src_len
    dec = (batch * tgt_len * (12 * d * d + 4 * d * f) + batch * src_len * 4 * d * d
           + 4 * d * batch * tgt_len * (tgt_len + src_len))
    out = 2 * batch * tgt_len * d * v
'''

ACC_HEAD = '''
def accumulated_gradients_step(model, batch, optimizer, micro_batches, scheduler=None,
                               smoothing=0.1, grad_clip=1.0, forward=None):
    """accumulate"""
    model.train()
    total = max(int((batch.tgt_out != PAD).sum()), 1)
'''

ACC_TAIL = '''
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss_sum
'''

AVG_HEAD = '''
def average_gradients(model):
    """average"""
    import torch.distributed as dist
'''

MISTAKES = [
    Mistake("forward_flops", "one FLOP per multiply-add", FLOPS_HEAD + FLOPS_RIGHT + '''
    return (shape.num_encoder_layers * enc + shape.num_decoder_layers * dec + out) // 2
''', "a multiply-add is 2 FLOPs"),
    Mistake("forward_flops", "training FLOPs (3 forwards) instead of the forward", FLOPS_HEAD
            + FLOPS_RIGHT + '''
    return 3 * (shape.num_encoder_layers * enc + shape.num_decoder_layers * dec + out)
''', "forward pass only"),
    Mistake("forward_flops", "cross-attention K and V counted over target tokens", FLOPS_HEAD
            + FLOPS_RIGHT + '''
    dec = dec - batch * src_len * 4 * d * d + batch * tgt_len * 4 * d * d
    return shape.num_encoder_layers * enc + shape.num_decoder_layers * dec + out
''', None),
    Mistake("forward_flops", "attention matrices left out", FLOPS_HEAD + '''
    enc = batch * src_len * (8 * d * d + 4 * d * f)
    dec = batch * tgt_len * (12 * d * d + 4 * d * f) + batch * src_len * 4 * d * d
    out = 2 * batch * tgt_len * d * v
    return shape.num_encoder_layers * enc + shape.num_decoder_layers * dec + out
''', None),
    Mistake("accumulated_gradients_step", "mean of the micro-batches' means", ACC_HEAD + '''
    optimizer.zero_grad()
    loss_sum = 0.0
    for micro in split_batch(batch, micro_batches):
        logits = model(micro.src, micro.tgt_in)
        loss = label_smoothed_cross_entropy(logits, micro.tgt_out, smoothing) / micro_batches
        loss.backward()
        loss_sum += loss.item()
''' + ACC_TAIL, "weights a micro-batch"),
    Mistake("accumulated_gradients_step", "losses not scaled: the step is too big", ACC_HEAD + '''
    optimizer.zero_grad()
    loss_sum = 0.0
    for micro in split_batch(batch, micro_batches):
        logits = model(micro.src, micro.tgt_in)
        loss = label_smoothed_cross_entropy(logits, micro.tgt_out, smoothing)
        loss.backward()
        loss_sum += loss.item() / micro_batches
''' + ACC_TAIL, "micro_batches times too big"),
    Mistake("accumulated_gradients_step", "zero_grad inside the loop", ACC_HEAD + '''
    loss_sum = 0.0
    for micro in split_batch(batch, micro_batches):
        optimizer.zero_grad()
        logits = model(micro.src, micro.tgt_in)
        tokens = int((micro.tgt_out != PAD).sum())
        loss = label_smoothed_cross_entropy(logits, micro.tgt_out, smoothing) * tokens / total
        loss.backward()
        loss_sum += loss.item()
''' + ACC_TAIL, None),
    Mistake("average_gradients", "sum without dividing", AVG_HEAD + '''
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
''', "divide by the world size"),
    Mistake("average_gradients", "divided by 2 whatever the world size", AVG_HEAD + '''
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= 2
''', "not by 2"),
    Mistake("average_gradients", "gradients created for parameters that had none", AVG_HEAD + '''
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= dist.get_world_size()
''', "skip parameters whose .grad is None"),
]

VARIANTS = [
    Variant("forward_flops", "per-product bookkeeping", '''
def forward_flops(shape, batch, src_len, tgt_len):
    """flops"""
    def mm(m, k, n):
        return 2 * m * k * n

    d = shape.d_model
    s_tokens, t_tokens = batch * src_len, batch * tgt_len
    total = 0
    for _ in range(shape.num_encoder_layers):
        total += 4 * mm(s_tokens, d, d) + mm(s_tokens, d, shape.d_ff) + mm(s_tokens, shape.d_ff, d)
        total += 2 * batch * mm(src_len, d, src_len)
    for _ in range(shape.num_decoder_layers):
        total += 4 * mm(t_tokens, d, d) + 2 * batch * mm(tgt_len, d, tgt_len)
        total += 2 * mm(t_tokens, d, d) + 2 * mm(s_tokens, d, d)
        total += 2 * batch * mm(tgt_len, d, src_len)
        total += mm(t_tokens, d, shape.d_ff) + mm(t_tokens, shape.d_ff, d)
    return int(total + mm(t_tokens, d, shape.tgt_vocab_size))
'''),
    Variant("accumulated_gradients_step", "sum of token losses divided once", ACC_HEAD + '''
    for p in model.parameters():
        p.grad = None
    loss_sum = 0.0
    for micro in split_batch(batch, micro_batches):
        logits = (forward or model)(micro.src, micro.tgt_in)
        n = (micro.tgt_out != PAD).sum()
        loss = label_smoothed_cross_entropy(logits, micro.tgt_out, smoothing) * n / total
        loss.backward()
        loss_sum += float(loss)
''' + ACC_TAIL),
    Variant("average_gradients", "flattened into one all_reduce", AVG_HEAD + '''
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
'''),
]


# Found by a gap hunt (2026-12-02): each passed the checks before they were tightened.
MISTAKES += [
    Mistake('accumulated_gradients_step', 'returns the loss as a tensor', '''
def accumulated_gradients_step(model, batch, optimizer, micro_batches, scheduler=None,
                               smoothing=0.1, grad_clip=1.0, forward=None):
    """accumulate"""
    model.train()
    total = max(int((batch.tgt_out != PAD).sum()), 1)
    optimizer.zero_grad()
    loss_sum = 0.0
    last = None
    for micro in split_batch(batch, micro_batches):
        logits = (forward or model)(micro.src, micro.tgt_in)
        n = int((micro.tgt_out != PAD).sum())
        loss = label_smoothed_cross_entropy(logits, micro.tgt_out, smoothing) * (n / total)
        loss.backward()
        loss_sum += loss.item()
        last = loss
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return torch.tensor(loss_sum)
''', 'as a Python float'),
    Mistake('accumulated_gradients_step', 'smoothing argument not passed on (default 0.1 used)', '''
def accumulated_gradients_step(model, batch, optimizer, micro_batches, scheduler=None,
                               smoothing=0.1, grad_clip=1.0, forward=None):
    """accumulate"""
    model.train()
    total = max(int((batch.tgt_out != PAD).sum()), 1)

    optimizer.zero_grad()
    loss_sum = 0.0
    for micro in split_batch(batch, micro_batches):
        logits = (forward or model)(micro.src, micro.tgt_in)
        n = int((micro.tgt_out != PAD).sum())
        loss = label_smoothed_cross_entropy(logits, micro.tgt_out) * n / total
        loss.backward()
        loss_sum += loss.item()

    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss_sum
''', None),
]

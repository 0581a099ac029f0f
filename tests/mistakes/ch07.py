"""Common mistakes and honest variants for chapter 7 (training)."""

from . import Mistake, Variant

LOSS_HEAD = '''
def label_smoothed_cross_entropy(logits, target, smoothing=0.1, ignore_index=PAD):
    """label smoothing"""
    vocab = logits.shape[-1]
    logits = logits.reshape(-1, vocab).float()
    target = target.reshape(-1)
    keep = target != ignore_index
    log_probs = F.log_softmax(logits, dim=-1)
'''

STEP_HEAD = '''
def train_step(model, batch, optimizer, scheduler=None, smoothing=0.1, grad_clip=1.0,
               amp=False, forward=None):
    """one step"""
    model.train()
    with torch.autocast(batch.src.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = (forward or model)(batch.src, batch.tgt_in)
    loss = label_smoothed_cross_entropy(logits, batch.tgt_out, smoothing)
'''

STEP_TAIL = '''
    optimizer.zero_grad()
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()
'''

MISTAKES = [
    Mistake("label_smoothed_cross_entropy", "label smoothing applied to padding", LOSS_HEAD + '''
    nll = -log_probs.gather(1, target[:, None]).squeeze(1)
    per_token = (1 - smoothing) * nll - smoothing * log_probs.mean(dim=-1)
    return per_token.mean()
''', "padding positions are averaged in"),
    Mistake("label_smoothed_cross_entropy", "eps / (V - 1) on the wrong classes only", LOSS_HEAD + '''
    nll = -log_probs.gather(1, target.masked_fill(~keep, 0)[:, None]).squeeze(1)
    others = (log_probs.sum(-1) + nll) / (vocab - 1)
    per_token = (1 - smoothing) * nll - smoothing * others
    return per_token[keep].mean()
''', "eps / V"),
    Mistake("label_smoothed_cross_entropy", "divided by all positions", LOSS_HEAD + '''
    nll = -log_probs.gather(1, target.masked_fill(~keep, 0)[:, None]).squeeze(1)
    per_token = (1 - smoothing) * nll - smoothing * log_probs.mean(dim=-1)
    return per_token.masked_fill(~keep, 0).sum() / target.numel()
''', "not by all positions"),
    Mistake("noam_lr", "max instead of min", '''
def noam_lr(step, d_model, warmup_steps=4000, factor=1.0):
    """schedule"""
    return factor * d_model ** -0.5 * max(step ** -0.5, step * warmup_steps ** -1.5)
''', "min, not max"),
    Mistake("noam_lr", "warm-up exponent -0.5", '''
def noam_lr(step, d_model, warmup_steps=4000, factor=1.0):
    """schedule"""
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -0.5)
''', "warmup_steps ** -1.5"),
    Mistake("train_step", "no zero_grad: gradients pile up", STEP_HEAD + '''
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()
''', "zero the gradients"),
    Mistake("train_step", "scheduler never stepped", STEP_HEAD + '''
    optimizer.zero_grad()
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()
''', "step the scheduler"),
    Mistake("train_step", "clipping after the optimiser step", STEP_HEAD + '''
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scheduler is not None:
        scheduler.step()
    return loss.item()
''', None),
]

VARIANTS = [
    Variant("label_smoothed_cross_entropy", "one-hot target built with F.one_hot", '''
import warnings
def label_smoothed_cross_entropy(logits, target, smoothing=0.1, ignore_index=PAD):
    """label smoothing"""
    warnings.warn("using F.one_hot")
    vocab = logits.shape[-1]
    log_probs = torch.log_softmax(logits.reshape(-1, vocab).double(), dim=-1)
    target = target.reshape(-1)
    keep = target != ignore_index
    q = (1 - smoothing) * F.one_hot(target.clamp(min=0), vocab).double() + smoothing / vocab
    loss = -(q * log_probs).sum(-1)
    return (loss[keep].sum() / keep.sum().clamp(min=1)).float()
'''),
    Variant("noam_lr", "written with if/else and math", '''
def noam_lr(step, d_model, warmup_steps=4000, factor=1.0):
    """schedule"""
    if step <= 0:
        raise ValueError("no step 0")
    if step < warmup_steps:
        rate = step / warmup_steps ** 1.5
    else:
        rate = 1 / math.sqrt(step)
    return factor * rate / math.sqrt(d_model)
'''),
    Variant("train_step", "zero_grad at the end, explicit clipping", '''
def train_step(model, batch, optimizer, scheduler=None, smoothing=0.1, grad_clip=1.0,
               amp=False, forward=None):
    """one step"""
    model.train()
    for p in model.parameters():
        p.grad = None
    with torch.autocast(batch.src.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = (forward or model)(batch.src, batch.tgt_in)
    loss = label_smoothed_cross_entropy(logits, batch.tgt_out, smoothing)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), max_norm=grad_clip)
    optimizer.step()
    if scheduler:
        scheduler.step()
    return float(loss)
'''),
]

# Forbidden smoothing, empty batches, low precision, training mode (issue 8).
MISTAKES += [
    Mistake("label_smoothed_cross_entropy", "F.cross_entropy with label_smoothing", '''
def label_smoothed_cross_entropy(logits, target, smoothing=0.1, ignore_index=PAD):
    """label smoothing"""
    vocab = logits.shape[-1]
    loss = F.cross_entropy(logits.reshape(-1, vocab).float(), target.reshape(-1),
                           ignore_index=ignore_index, label_smoothing=smoothing)
    return loss.nan_to_num(0.0)
''', "label_smoothing"),
    Mistake("label_smoothed_cross_entropy", "nn.CrossEntropyLoss with smoothing, aliased", '''
from torch.nn import CrossEntropyLoss as Loss
def label_smoothed_cross_entropy(logits, target, smoothing=0.1, ignore_index=PAD):
    """label smoothing"""
    vocab = logits.shape[-1]
    loss = Loss(ignore_index=ignore_index, label_smoothing=smoothing)
    return loss(logits.reshape(-1, vocab).float(), target.reshape(-1)).nan_to_num(0.0)
''', "label_smoothing"),
    Mistake("label_smoothed_cross_entropy", "NaN for a batch of only padding", LOSS_HEAD + '''
    nll = -log_probs.gather(1, target.masked_fill(~keep, 0)[:, None]).squeeze(1)
    per_token = (1 - smoothing) * nll - smoothing * log_probs.mean(dim=-1)
    return per_token.masked_fill(~keep, 0).sum() / keep.sum()
''', "0 / 0 is NaN"),
    Mistake("label_smoothed_cross_entropy", "bfloat16 logits give a bfloat16 loss", '''
def label_smoothed_cross_entropy(logits, target, smoothing=0.1, ignore_index=PAD):
    """label smoothing"""
    vocab = logits.shape[-1]
    logits = logits.reshape(-1, vocab)
    target = target.reshape(-1)
    keep = target != ignore_index
    log_probs = F.log_softmax(logits, dim=-1)
    nll = -log_probs.gather(1, target.masked_fill(~keep, 0)[:, None]).squeeze(1)
    per_token = (1 - smoothing) * nll - smoothing * log_probs.mean(dim=-1)
    return per_token.masked_fill(~keep, 0).sum() / keep.sum().clamp(min=1)
''', "in float32"),
    Mistake("train_step", "never puts the model in training mode", '''
def train_step(model, batch, optimizer, scheduler=None, smoothing=0.1, grad_clip=1.0,
               amp=False, forward=None):
    """one step"""
    with torch.autocast(batch.src.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = (forward or model)(batch.src, batch.tgt_in)
    loss = label_smoothed_cross_entropy(logits, batch.tgt_out, smoothing)
    optimizer.zero_grad()
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()
''', "training mode"),
]

VARIANTS += [
    Variant("label_smoothed_cross_entropy", "F.cross_entropy without smoothing, plus the mean",
            '''
def label_smoothed_cross_entropy(logits, target, smoothing=0.1, ignore_index=PAD):
    """label smoothing from PyTorch's plain cross-entropy"""
    vocab = logits.shape[-1]
    logits = logits.reshape(-1, vocab).float()
    target = target.reshape(-1)
    keep = target != ignore_index
    if not bool(keep.any()):
        return logits.sum() * 0.0
    nll = F.cross_entropy(logits[keep], target[keep], label_smoothing=0.0)
    uniform = -F.log_softmax(logits[keep], dim=-1).mean()
    return (1 - smoothing) * nll + smoothing * uniform
'''),
    Variant("train_step", "model.train(True) and zero_grad(set_to_none=False)", '''
def train_step(model, batch, optimizer, scheduler=None, smoothing=0.1, grad_clip=1.0,
               amp=False, forward=None):
    """one step"""
    model.train(True)
    optimizer.zero_grad(set_to_none=False)
    with torch.autocast(batch.src.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = (forward or model)(batch.src, batch.tgt_in)
    loss = label_smoothed_cross_entropy(logits, batch.tgt_out, smoothing)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()
'''),
]

# Return types, step 0, the `forward` and `amp` arguments, Batch.to (gap hunt of chapters 5-8).
MISTAKES += [
    Mistake("noam_lr", "returns a 0-dim tensor", '''
def noam_lr(step, d_model, warmup_steps=4000, factor=1.0):
    """schedule"""
    if step < 1:
        raise ValueError("step counts from 1")
    s = torch.tensor(float(step), dtype=torch.float64)
    return factor * d_model ** -0.5 * torch.minimum(s ** -0.5, s * warmup_steps ** -1.5)
''', "must be a Python float"),
    Mistake("noam_lr", "step 0 not rejected", '''
def noam_lr(step, d_model, warmup_steps=4000, factor=1.0):
    """schedule"""
    if step < warmup_steps:
        return factor * d_model ** -0.5 * step * warmup_steps ** -1.5
    return factor * d_model ** -0.5 * step ** -0.5
''', "reject step 0 with a ValueError"),
    Mistake("train_step", "returns the loss tensor", STEP_HEAD + STEP_TAIL.replace(
        "return loss.item()", "return loss.detach()"), "must be a Python float"),
    Mistake("train_step", "`forward` ignored", STEP_HEAD.replace(
        "(forward or model)(", "model(") + STEP_TAIL, "when `forward` is given"),
    Mistake("train_step", "`amp` ignored", STEP_HEAD.replace(
        "    with torch.autocast(batch.src.device.type, dtype=torch.bfloat16, enabled=amp):\n"
        "        logits", "    logits") + STEP_TAIL, "autocast to bfloat16"),
]

VARIANTS += [
    Variant("train_step", "Batch.to the model's device; loss inside autocast when amp", '''
import contextlib
def train_step(model, batch, optimizer, scheduler=None, smoothing=0.1, grad_clip=1.0,
               amp=False, forward=None):
    """one step"""
    batch = batch.to(next(model.parameters()).device)
    model.train()
    fn = model if forward is None else forward
    autocast = (torch.autocast(batch.src.device.type, dtype=torch.bfloat16) if amp
                else contextlib.nullcontext())
    with autocast:
        loss = label_smoothed_cross_entropy(fn(batch.src, batch.tgt_in), batch.tgt_out,
                                            smoothing=smoothing)
    model.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()
'''),
]

"""Checkers for chapter 7: the label-smoothed loss, the warm-up schedule, one training step."""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core import Checker, close_to, randint, randn, register


def oracle_smoothed_loss(logits: Tensor, target: Tensor, smoothing: float = 0.1,
                         ignore_index: int = 0) -> Tensor:
    vocab = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, vocab).float(), target.reshape(-1),
                           ignore_index=ignore_index, label_smoothing=smoothing)


def padded_targets(gen: torch.Generator, shape: tuple[int, ...], vocab: int, pad: int) -> Tensor:
    """Random labels in [0, vocab) that are never ``pad`` except in padded tails, with at least
    one real label per row."""
    target = torch.randint(0, vocab - 1, shape, generator=gen)
    target[target >= pad] += 1
    rows = target.view(-1, shape[-1])
    for row in rows:
        n = randint(gen, 0, shape[-1])
        if n:
            row[-n:] = pad
    return target


@register
class LabelSmoothingChecker(Checker):
    name = "label_smoothed_cross_entropy"

    def cases(self, gen, hidden):
        cases = [
            {"logits": randn(gen, 6, 5), "target": padded_targets(gen, (6,), 5, 0),
             "smoothing": 0.1, "ignore_index": 0},
            {"logits": randn(gen, 2, 4, 7, scale=2.0), "target": padded_targets(gen, (2, 4), 7, 0),
             "smoothing": 0.2, "ignore_index": 0},
        ]
        if hidden:
            cases += [
                {"logits": randn(gen, 3, 5, 11), "target": padded_targets(gen, (3, 5), 11, 0),
                 "smoothing": 0.0, "ignore_index": 0},
                {"logits": randn(gen, 4, 6, 9, scale=5.0),
                 "target": padded_targets(gen, (4, 6), 9, 3), "smoothing": 0.1,
                 "ignore_index": 3},
                {"logits": randn(gen, 40, 30), "target": padded_targets(gen, (40,), 30, 0),
                 "smoothing": 0.3, "ignore_index": 0},
            ]
        return cases

    def run(self, obj, case):
        loss = obj(case["logits"].clone(), case["target"].clone(), smoothing=case["smoothing"],
                   ignore_index=case["ignore_index"])
        return {"loss": loss}

    def expected(self, case):
        return {"loss": oracle_smoothed_loss(case["logits"], case["target"], case["smoothing"],
                                             case["ignore_index"])}

    def hint(self, case, got):
        loss = got.get("loss")
        logits, target = case["logits"], case["target"]
        eps, pad = case["smoothing"], case["ignore_index"]
        vocab = logits.shape[-1]
        flat, labels = logits.reshape(-1, vocab).float(), target.reshape(-1)
        log_probs = F.log_softmax(flat, -1)
        keep = labels != pad
        nll = -log_probs.gather(1, labels[:, None]).squeeze(1)
        smooth = -log_probs.mean(-1)
        per_token = (1 - eps) * nll + eps * smooth
        if close_to(loss, per_token.mean()):
            return "padding positions are averaged in: ignore them (mask, then divide by the " \
                   "number of real tokens)."
        if close_to(loss, per_token.masked_fill(~keep, 0).sum() / labels.numel()):
            return "divide by the number of real (non-padding) tokens, not by all positions."
        if close_to(loss, ((1 - eps) * nll + eps * smooth).masked_fill(~keep, 0).sum()):
            return "return the mean over real tokens, not the sum."
        off = (log_probs.sum(-1) - log_probs.gather(1, labels[:, None]).squeeze(1)) / (vocab - 1)
        other = (1 - eps) * nll - eps * off
        if close_to(loss, other[keep].mean()):
            return "this course (like PyTorch) spreads eps over all V classes: eps / V, " \
                   "the right class included, not eps / (V - 1)."
        if eps and close_to(loss, nll[keep].mean()):
            return "the smoothing is missing: the target is (1 - eps) one-hot + eps / V."
        return None

    @property
    def oracle(self):
        return oracle_smoothed_loss


def oracle_noam(step: int, d_model: int, warmup_steps: int = 4000, factor: float = 1.0) -> float:
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)


def as_number_tensor(values: list) -> Tensor | list:
    """Numbers -> a float64 tensor; anything else is returned as is (and fails the check)."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return torch.tensor([float(v) for v in values], dtype=torch.float64)
    if all(isinstance(v, Tensor) and v.numel() == 1 for v in values):
        return torch.tensor([float(v) for v in values], dtype=torch.float64)
    return values


@register
class NoamChecker(Checker):
    name = "noam_lr"
    rtol = 1e-9
    atol = 1e-12

    def cases(self, gen, hidden):
        def steps(warmup):
            return torch.tensor([1, 2, warmup // 2, warmup - 1, warmup, warmup + 1, 2 * warmup,
                                 10 * warmup], dtype=torch.int64)

        cases = [{"steps": steps(4000), "d_model": 512, "warmup": 4000, "factor": 1.0}]
        if hidden:
            warmup = randint(gen, 10, 500)
            cases += [
                {"steps": steps(100), "d_model": 64, "warmup": 100, "factor": 2.0},
                {"steps": steps(warmup), "d_model": randint(gen, 16, 256), "warmup": warmup,
                 "factor": 0.5},
            ]
        return cases

    def describe(self, case):
        return (f"d_model={case['d_model']}, warmup_steps={case['warmup']}, "
                f"factor={case['factor']}, steps {case['steps'].tolist()}")

    def run(self, obj, case):
        values = [obj(int(step), case["d_model"], warmup_steps=case["warmup"],
                      factor=case["factor"]) for step in case["steps"]]
        return {"lr": as_number_tensor(values)}

    def expected(self, case):
        step = case["steps"].double()
        lr = case["factor"] * case["d_model"] ** -0.5 * torch.minimum(
            step ** -0.5, step * case["warmup"] ** -1.5)
        return {"lr": lr}

    def hint(self, case, got):
        lr = got.get("lr")
        step, d, w, f = case["steps"].double(), case["d_model"], case["warmup"], case["factor"]
        if close_to(lr, f * d ** -0.5 * torch.maximum(step ** -0.5, step * w ** -1.5), 1e-12):
            return "min, not max: the rate is the smaller of the warm-up line and the decay."
        if close_to(lr, f * torch.minimum(step ** -0.5, step * w ** -1.5), 1e-12):
            return "scale by d_model ** -0.5."
        if close_to(lr, f * d ** -0.5 * torch.minimum(step ** -0.5, step * w ** -0.5), 1e-12):
            return "the warm-up line is step * warmup_steps ** -1.5 (it meets the decay at " \
                   "step == warmup_steps)."
        return None

    @property
    def oracle(self):
        return oracle_noam


class ToyModel(nn.Module):
    """A tiny stand-in for the Transformer: model(src, tgt_in) -> logits (B, T, V)."""

    def __init__(self, vocab: int, width: int):
        super().__init__()
        self.src_embed = nn.Embedding(vocab, width)
        self.tgt_embed = nn.Embedding(vocab, width)
        self.out = nn.Linear(width, vocab)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        context = self.src_embed(src).mean(dim=1, keepdim=True)
        return self.out(torch.tanh(self.tgt_embed(tgt_in) + context))


def oracle_train_step(model, batch, optimizer, scheduler=None, smoothing=0.1, grad_clip=1.0,
                      amp=False, forward=None) -> float:
    model.train()
    with torch.autocast(batch.src.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = (forward or model)(batch.src, batch.tgt_in)
    loss = oracle_smoothed_loss(logits, batch.tgt_out, smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()


def _batch(case: dict, i: int):
    src, tgt_in, tgt_out = case[f"src{i}"], case[f"tgt_in{i}"], case[f"tgt_out{i}"]
    return types.SimpleNamespace(src=src, tgt_in=tgt_in, tgt_out=tgt_out,
                                 num_tokens=int((tgt_out != 0).sum()))


@register
class TrainStepChecker(Checker):
    name = "train_step"
    uses = ("label_smoothed_cross_entropy",)

    def cases(self, gen, hidden):
        def case(vocab, width, batch, length, smoothing, clip, scheduler, lr):
            model = {f"w.{k}": randn(gen, *v.shape, scale=0.5)
                     for k, v in ToyModel(vocab, width).state_dict().items()}
            c = {**model, "vocab": vocab, "width": width, "smoothing": smoothing,
                 "clip": clip, "scheduler": scheduler, "lr": lr}
            for i in (1, 2):  # two steps: gradients must not pile up from one to the next
                c[f"src{i}"] = torch.randint(1, vocab, (batch, length), generator=gen)
                target = torch.randint(1, vocab, (batch, length + 1), generator=gen)
                target[0, -2:] = 0
                c[f"tgt_in{i}"], c[f"tgt_out{i}"] = target[:, :-1], target[:, 1:]
            return c

        cases = [case(7, 8, 3, 4, 0.1, 1.0, True, 0.01)]
        if hidden:
            cases += [case(11, 16, 4, 6, 0.0, 0.05, True, 0.05),
                      case(9, 8, 2, 5, 0.2, -1.0, False, 0.02)]
        return cases

    def describe(self, case):
        clip = "no clipping" if case["clip"] < 0 else f"grad_clip={case['clip']}"
        return (f"two steps on a toy model (vocab {case['vocab']}), smoothing="
                f"{case['smoothing']}, {clip}, scheduler={'yes' if case['scheduler'] else 'no'}")

    def _run(self, step, case):
        model = ToyModel(case["vocab"], case["width"])
        model.load_state_dict({k[2:]: v for k, v in case.items() if k.startswith("w.")})
        optimizer = torch.optim.Adam(model.parameters(), lr=case["lr"], betas=(0.9, 0.98),
                                     eps=1e-9)
        scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 / (i + 1))
                     if case["scheduler"] else None)
        clip = None if case["clip"] < 0 else case["clip"]
        losses = [step(model, _batch(case, i), optimizer, scheduler,
                       smoothing=case["smoothing"], grad_clip=clip) for i in (1, 2)]
        return {"losses": as_number_tensor(losses),
                "out.weight": model.out.weight.detach().clone(),
                "tgt_embed.weight": model.tgt_embed.weight.detach().clone(),
                "lr": torch.tensor(optimizer.param_groups[0]["lr"], dtype=torch.float64)}

    def run(self, obj, case):
        return self._run(obj, case)

    def expected(self, case):
        return self._run(oracle_train_step, case)

    def hint(self, case, got):
        def accumulate(model, batch, optimizer, scheduler=None, smoothing=0.1, grad_clip=1.0):
            logits = model(batch.src, batch.tgt_in)
            loss = oracle_smoothed_loss(logits, batch.tgt_out, smoothing)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            return loss.item()

        if close_to(got.get("out.weight"), self._run(accumulate, case)["out.weight"], 1e-6):
            return "zero the gradients before backward (optimizer.zero_grad()): otherwise the " \
                   "second step adds up the gradients of both batches."
        lr = got.get("lr")
        if case["scheduler"] and isinstance(lr, Tensor) and float(lr) == case["lr"]:
            return "call scheduler.step() after optimizer.step()."
        losses = got.get("losses")
        if not isinstance(losses, Tensor):
            return "return the loss as a Python float (loss.item())."
        return None

    @property
    def oracle(self):
        return oracle_train_step

"""Training pieces written out: the loss, gradient clipping, AdamW, the
cosine schedule, batches of a token array, checkpoints, and a training loop
for :class:`~solutions.modern.ModernLM`.

Each piece equals PyTorch's own (``F.cross_entropy``, ``clip_grad_norm_``,
``torch.optim.AdamW``) and the tests check that.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "cross_entropy",
    "clip_grad_norm",
    "adamw_step",
    "AdamW",
    "cosine_schedule",
    "get_batch",
    "save_checkpoint",
    "load_checkpoint",
    "train_lm",
    "bits_per_byte",
]


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits`` (..., V) against class ids
    ``targets`` (...).

    log softmax(z)_y = z_y - logsumexp(z), and logsumexp is computed stably
    as max + log(sum(exp(z - max))): no exp of a large number ever
    overflows. Computed in float32.
    """
    logits = logits.float()
    top = logits.amax(dim=-1, keepdim=True)  # (..., 1)
    log_normaliser = top.squeeze(-1) + torch.log(
        torch.exp(logits - top).sum(dim=-1)
    )  # (...)
    correct = logits.gather(-1, targets[..., None]).squeeze(-1)  # (...)
    return (log_normaliser - correct).mean()


@torch.no_grad()
def clip_grad_norm(
    parameters: Iterable[nn.Parameter], max_norm: float, eps: float = 1e-6
) -> Tensor:
    """Scale all gradients together so that their global L2 norm is at most
    ``max_norm``.

    The norm is that of all gradients concatenated into one vector.
    Gradients are multiplied by min(1, max_norm / (norm + eps)) in place.
    Returns the norm before clipping.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g) for g in grads])
    )
    scale = torch.clamp(max_norm / (total + eps), max=1.0)
    for g in grads:
        g.mul_(scale)
    return total


@torch.no_grad()
def adamw_step(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
) -> None:
    """One AdamW update of ``param`` in place (Loshchilov & Hutter 2019,
    algorithm 2).

    ``exp_avg`` (m) and ``exp_avg_sq`` (v) are updated in place too;
    ``step`` counts from 1.

        param <- param - lr * weight_decay * param  (decoupled weight decay)
        m <- beta1 m + (1 - beta1) g;   v <- beta2 v + (1 - beta2) g^2
        param <- param - lr / (1 - beta1^t) * m
                 / (sqrt(v / (1 - beta2^t)) + eps)
    """
    param.mul_(1 - lr * weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


class AdamW(torch.optim.Optimizer):
    """AdamW built on :func:`adamw_step`; the same hyper-parameters as
    ``torch.optim.AdamW``."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        if (
            lr < 0
            or eps < 0
            or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1)
        ):
            raise ValueError(
                f"invalid AdamW settings lr={lr}, betas={betas}, eps={eps}"
            )
        super().__init__(
            params,
            dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay),
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                adamw_step(
                    p,
                    p.grad,
                    state["exp_avg"],
                    state["exp_avg_sq"],
                    state["step"],
                    group["lr"],
                    beta1,
                    beta2,
                    group["eps"],
                    group["weight_decay"],
                )
        return loss


def cosine_schedule(
    it: int,
    max_lr: float,
    min_lr: float,
    warmup_iters: int,
    cosine_iters: int,
) -> float:
    """Learning rate at iteration ``it`` (from 0): linear warm-up from 0 to
    ``max_lr`` over ``warmup_iters``, cosine decay to ``min_lr`` at
    ``cosine_iters``, then ``min_lr``."""
    if it < warmup_iters:
        return max_lr * it / warmup_iters
    if it <= cosine_iters:
        progress = (it - warmup_iters) / max(1, cosine_iters - warmup_iters)
        return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (
            max_lr - min_lr
        )
    return min_lr


def get_batch(
    data: np.ndarray | Tensor,
    batch_size: int,
    context_length: int,
    device: str | torch.device = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows of a 1-D token array: inputs (B, T) and
    next-token targets (B, T), the inputs shifted left by one. Works on a
    NumPy ``memmap`` too (only the windows are read)."""
    n = len(data)
    if n <= context_length:
        raise ValueError(f"need more than {context_length} tokens, got {n}")
    starts = torch.randint(
        n - context_length, (batch_size,), generator=generator
    )
    index = starts[:, None] + torch.arange(context_length + 1)  # (B, T + 1)
    windows = (
        torch.from_numpy(data[index.numpy()])
        if isinstance(data, np.ndarray)
        else data[index]
    )
    windows = windows.long().to(device)
    return windows[:, :-1], windows[:, 1:]


def save_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    path: str | Path,
) -> None:
    """Save the model's and the optimizer's state and the iteration
    number."""
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "iteration": iteration,
        },
        path,
    )


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> int:
    """Restore what :func:`save_checkpoint` saved into ``model`` and
    ``optimizer``; return the iteration number."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return saved["iteration"]


def train_lm(
    model: nn.Module,
    data: Tensor,
    steps: int,
    batch_size: int = 16,
    length: int = 128,
    max_lr: float = 3e-3,
    min_lr: float | None = None,
    warmup: int = 100,
    weight_decay: float = 0.1,
    grad_clip: float = 1.0,
    seed: int = 0,
    log_every: int = 50,
    evaluate: Callable[[nn.Module], float] | None = None,
    log: Callable[[dict], None] | None = None,
    time_budget: float | None = None,
) -> list[dict]:
    """Train a next-token model on random windows of ``data`` (1-D) with the
    pieces above: :func:`get_batch`, :func:`cross_entropy`,
    :func:`clip_grad_norm`, :class:`AdamW` (decay on matrices only) and
    :func:`cosine_schedule` (down to ``min_lr``, default max_lr / 10).

    Returns one history entry every ``log_every`` steps: ``step``, ``loss``
    (mean training loss since the last entry), ``lr``, ``seconds``, and
    ``val_loss`` if ``evaluate`` is given. ``time_budget`` (seconds) stops
    early; the schedule still assumes ``steps``.
    """
    gen = torch.Generator().manual_seed(seed)
    min_lr = max_lr / 10 if min_lr is None else min_lr
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=max_lr,
        betas=(0.9, 0.95),
    )
    history: list[dict] = []
    start, running, count = time.perf_counter(), 0.0, 0
    model.train()
    for step in range(steps):
        lr = cosine_schedule(step + 1, max_lr, min_lr, warmup, steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(
            data,
            batch_size,
            length,
            model.device if hasattr(model, "device") else "cpu",
            gen,
        )
        loss = cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(model.parameters(), grad_clip)
        optimizer.step()
        running, count = running + loss.item(), count + 1
        out_of_time = (
            time_budget is not None
            and time.perf_counter() - start > time_budget
        )
        if (step + 1) % log_every == 0 or step + 1 == steps or out_of_time:
            entry = {
                "step": step + 1,
                "loss": running / count,
                "lr": lr,
                "seconds": time.perf_counter() - start,
            }
            if evaluate is not None:
                entry["val_loss"] = evaluate(model)
                model.train()
            history.append(entry)
            if log is not None:
                log(entry)
            running, count = 0.0, 0
        if out_of_time:
            break
    model.eval()
    return history


@torch.no_grad()
def bits_per_byte(
    model: nn.Module,
    ids: Tensor,
    token_bytes: Tensor,
    window: int,
    batch_size: int = 32,
) -> float:
    """Bits per byte of text: the model's total next-token loss on ``ids``
    (1-D), in bits, divided by the UTF-8 bytes of the tokens it predicted. A
    tokenizer-independent measure: a character model and a BPE model of the
    same text compare directly.

    ``token_bytes`` (V,) is each token's length in bytes. The text is cut
    into consecutive windows of ``window`` + 1 tokens that overlap by one,
    so every token but the first is predicted once.
    """
    model.eval()
    starts = range(0, len(ids) - 1, window)
    windows = [ids[s : s + window + 1] for s in starts]
    windows = [
        w for w in windows if len(w) == window + 1
    ]  # drop a short last window
    nats, nbytes = 0.0, 0
    for i in range(0, len(windows), batch_size):
        batch = torch.stack(windows[i : i + batch_size]).to(model.device)
        logits = model(batch[:, :-1]).float()
        nats += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            batch[:, 1:].reshape(-1),
            reduction="sum",
        ).item()
        nbytes += int(token_bytes.to(batch.device)[batch[:, 1:]].sum())
    return nats / math.log(2) / nbytes

"""Training pieces (solutions/optim.py) against PyTorch's loss, clipping and AdamW."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from solutions.optim import (
    AdamW,
    adamw_step,
    bits_per_byte,
    clip_grad_norm,
    cosine_schedule,
    cross_entropy,
    get_batch,
    load_checkpoint,
    save_checkpoint,
)

ATOL = 1e-6


def test_cross_entropy_equals_torch_and_is_stable():
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 6, 11), torch.randint(0, 11, (4, 6))
    torch.testing.assert_close(cross_entropy(logits, targets),
                               F.cross_entropy(logits.view(-1, 11), targets.view(-1)),
                               atol=ATOL, rtol=0)
    huge = torch.randn(5, 7) * 1e4
    labels = torch.randint(0, 7, (5,))
    got = cross_entropy(huge, labels)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, F.cross_entropy(huge, labels), atol=0, rtol=1e-6)


@pytest.mark.parametrize("max_norm", [0.01, 1.0, 1e6])
def test_clip_grad_norm_equals_torch(max_norm):
    torch.manual_seed(0)
    a, b = nn.Linear(5, 4), nn.Linear(4, 3)
    x = torch.randn(8, 5)
    b(a(x)).pow(2).sum().backward()
    grads = [p.grad.clone() for p in (*a.parameters(), *b.parameters())]
    params = [*a.parameters(), *b.parameters()]
    norm = clip_grad_norm(params, max_norm)
    ours = [p.grad.clone() for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    expected_norm = nn.utils.clip_grad_norm_(params, max_norm)
    torch.testing.assert_close(norm, expected_norm, atol=ATOL, rtol=0)
    for mine, theirs in zip(ours, (p.grad for p in params)):
        torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)


def test_adamw_equals_torch_step_by_step():
    torch.manual_seed(0)
    ours, theirs = nn.Linear(6, 4), nn.Linear(6, 4)
    theirs.load_state_dict(ours.state_dict())
    settings = dict(lr=0.01, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt_ours, opt_theirs = AdamW(ours.parameters(), **settings), \
        torch.optim.AdamW(theirs.parameters(), **settings)
    for step in range(10):
        x = torch.randn(8, 6)
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        for p, q in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(p, q, atol=ATOL, rtol=0, msg=f"step {step + 1}")


def test_adamw_step_function_matches_one_torch_step():
    torch.manual_seed(0)
    param, grad = torch.randn(5), torch.randn(5)
    m, v = torch.randn(5) * 0.1, torch.rand(5) * 0.01
    reference = param.clone().requires_grad_()
    opt = torch.optim.AdamW([reference], lr=0.05, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.3)
    reference.grad = grad.clone()
    opt.step()  # step 1 from zero moments: set our moments to zero too
    m.zero_()
    v.zero_()
    adamw_step(param, grad, m, v, step=1, lr=0.05, beta1=0.8, beta2=0.9, eps=1e-6,
               weight_decay=0.3)
    torch.testing.assert_close(param, reference.detach(), atol=ATOL, rtol=0)
    torch.testing.assert_close(m, opt.state[reference]["exp_avg"], atol=ATOL, rtol=0)


def test_cosine_schedule_shape():
    lr = [cosine_schedule(t, 1.0, 0.1, 10, 110) for t in range(130)]
    assert lr[0] == 0.0 and lr[5] == pytest.approx(0.5) and lr[10] == pytest.approx(1.0)
    assert lr[60] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 2)))
    assert lr[110] == pytest.approx(0.1) and lr[129] == 0.1
    assert all(a >= b for a, b in zip(lr[10:111], lr[11:111]))


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_get_batch_windows_and_shifted_targets(kind):
    data = np.arange(1000) if kind == "numpy" else torch.arange(1000)
    x, y = get_batch(data, 16, 8, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (16, 8) and x.dtype == torch.long
    assert torch.equal(y, x + 1)  # consecutive tokens, targets one step ahead
    assert torch.equal(x[:, 1:], x[:, :-1] + 1)
    assert len(set(x[:, 0].tolist())) > 1  # random starts


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_checkpoint(model, opt, 7, tmp_path / "ckpt.pt")
    other = nn.Linear(3, 2)
    other_opt = AdamW(other.parameters(), lr=0.5)
    assert load_checkpoint(tmp_path / "ckpt.pt", other, other_opt) == 7
    torch.testing.assert_close(other.weight, model.weight)
    assert other_opt.param_groups[0]["lr"] == 0.1
    torch.testing.assert_close(other_opt.state[other.weight]["exp_avg"],
                               opt.state[model.weight]["exp_avg"])


def test_bits_per_byte_of_a_uniform_model():
    class Uniform(nn.Module):
        device = torch.device("cpu")

        def forward(self, idx):
            return torch.zeros(*idx.shape, 8)

    ids = torch.randint(0, 8, (101,), generator=torch.Generator().manual_seed(0))
    token_bytes = torch.tensor([1, 2, 3, 1, 2, 3, 1, 2])
    predicted = ids[1:]  # windows of 10 + 1 overlapping by one: every token but the first
    expected = 100 * math.log2(8) / token_bytes[predicted].sum().item()
    assert bits_per_byte(Uniform(), ids, token_bytes, window=10) == pytest.approx(expected)


def test_train_lm_learns_a_cyclic_sequence():
    from solutions.modern import ModernConfig, ModernLM
    from solutions.optim import train_lm

    torch.manual_seed(0)
    model = ModernLM(ModernConfig(vocab_size=16, d_model=32, n_layers=1, n_heads=2,
                                  n_kv_heads=1))
    data = torch.arange(2000) % 16  # the next token is always (token + 1) % 16
    initial = cross_entropy(model(data[None, :16]), data[None, 1:17]).item()
    history = train_lm(model, data, steps=40, batch_size=8, length=16, max_lr=1e-2, warmup=5,
                       log_every=20)
    assert [h["step"] for h in history] == [20, 40]
    assert initial > 2.0 and history[-1]["loss"] < 0.1

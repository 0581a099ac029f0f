"""Tests for solutions/training.py: loss, schedule, resumable training, a tiny model learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from solutions.data import PAD, copy_task
from solutions.model import Transformer
from solutions.training import (
    LabelSmoothingLoss,
    TrainConfig,
    Trainer,
    exact_match,
    label_smoothed_cross_entropy,
    load_model,
    make_optimizer,
    noam_lr,
    pick_device,
    save_model,
    warmup_inverse_sqrt_schedule,
)


def tiny_model(dropout: float = 0.0, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(11, 11, d_model=32, num_heads=4, num_encoder_layers=1,
                       num_decoder_layers=1, d_ff=64, dropout=dropout, max_len=32)


# --- label smoothing -------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_pytorch(eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, 13, generator=g) * 3  # (B, T, V)
    target = torch.randint(1, 13, (4, 7), generator=g)
    target[0, 4:] = PAD
    target[2, 1:] = PAD
    ours = label_smoothed_cross_entropy(logits, target, smoothing=eps)
    theirs = F.cross_entropy(logits.view(-1, 13), target.view(-1), ignore_index=PAD,
                             label_smoothing=eps)
    torch.testing.assert_close(ours, theirs)
    # flattened input and the module form give the same
    torch.testing.assert_close(label_smoothed_cross_entropy(logits.view(-1, 13), target.view(-1),
                                                            eps), theirs)
    torch.testing.assert_close(LabelSmoothingLoss(eps)(logits, target), theirs)


def test_padding_gets_no_gradient():
    logits = torch.randn(3, 5, 9, requires_grad=True)
    target = torch.randint(1, 9, (3, 5))
    target[1, 2:] = PAD
    label_smoothed_cross_entropy(logits, target, smoothing=0.1).backward()
    pad = target == PAD
    assert torch.all(logits.grad[pad] == 0)
    assert torch.all(logits.grad[~pad].abs().sum(-1) > 0)


def test_padding_changes_nothing():
    """Changing the logits at padded positions leaves the loss unchanged."""
    logits = torch.randn(2, 6, 9)
    target = torch.randint(1, 9, (2, 6))
    target[0, 3:] = PAD
    other = logits.clone()
    other[0, 3:] = 100 * torch.randn(3, 9)
    assert label_smoothed_cross_entropy(logits, target) == label_smoothed_cross_entropy(other, target)


# --- schedule --------------------------------------------------------------------------------


def test_noam_formula_and_peak():
    d, warmup = 512, 4000
    for step in (1, 10, 100, 3999, 4000, 4001, 10_000, 100_000):
        expected = d**-0.5 * min(step**-0.5, step * warmup**-1.5)
        assert noam_lr(step, d, warmup) == pytest.approx(expected, rel=1e-12)
    assert noam_lr(100, d, warmup, factor=2.0) == pytest.approx(2 * noam_lr(100, d, warmup))
    lrs = [noam_lr(s, d, warmup) for s in range(1, 20_000)]
    assert max(range(len(lrs)), key=lrs.__getitem__) + 1 == warmup
    assert noam_lr(warmup, d, warmup) == pytest.approx((d * warmup) ** -0.5)
    with pytest.raises(ValueError):
        noam_lr(0, d, warmup)


def test_scheduler_sets_optimizer_lr():
    model = torch.nn.Linear(3, 3)
    optimizer = make_optimizer(model)
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-9
    scheduler = warmup_inverse_sqrt_schedule(optimizer, d_model=64, warmup_steps=10, factor=2.0)
    for step in range(1, 30):  # the lr used by optimiser step ``step``
        assert optimizer.param_groups[0]["lr"] == pytest.approx(noam_lr(step, 64, 10, 2.0))
        model(torch.randn(2, 3)).sum().backward()
        optimizer.step()
        scheduler.step()


# --- the loop --------------------------------------------------------------------------------


def test_pick_device_is_cpu_here():
    expected = "cuda" if torch.cuda.is_available() else None
    device = pick_device()
    assert isinstance(device, torch.device)
    if expected:
        assert device.type == expected
    elif not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        assert device.type == "cpu"


def test_resume_gives_the_same_losses(tmp_path):
    """N steps straight == k steps, save, new model and trainer, resume, N - k steps."""
    pairs = copy_task(200, seed=0)  # 4 batches of 64 per epoch: crosses epoch boundaries
    config = TrainConfig(steps=14, batch_size=64, warmup_steps=5, log_every=1, seed=3,
                         device="cpu", progress=False)
    straight = Trainer(tiny_model(dropout=0.1), pairs, config).train()

    first = Trainer(tiny_model(dropout=0.1), pairs, config)
    first.train(steps=6)
    first.save(tmp_path / "ckpt.pt")
    torch.manual_seed(12345)  # disturb every random state: resume must restore them
    torch.rand(100)
    resumed = Trainer(tiny_model(dropout=0.1, seed=99), pairs, config).resume(tmp_path / "ckpt.pt")
    assert resumed.step == 6
    history = resumed.train()

    assert [h["step"] for h in history] == list(range(1, 15))
    assert [h["loss"] for h in history] == [h["loss"] for h in straight]  # bitwise
    assert [h["lr"] for h in history] == [h["lr"] for h in straight]


def test_tiny_model_learns_copy():
    pairs = copy_task(2000, seed=0)
    model = tiny_model()
    config = TrainConfig(steps=60, batch_size=32, warmup_steps=20, log_every=10, smoothing=0.0,
                         device="cpu", progress=False)
    history = Trainer(model, pairs, config).train()
    assert len(history) == 6
    # Guessing among the 8 symbols costs ln 8 = 2.08 nats; the model must beat that clearly.
    assert history[-1]["loss"] < 0.85 * history[0]["loss"]
    assert history[-1]["loss"] < math.log(8) - 0.2
    assert all(h["tokens_per_s"] > 0 and h["lr"] > 0 for h in history)
    score = exact_match(model, pairs[:50], max_len=11)
    assert 0.0 <= score <= 1.0


def test_bf16_autocast_on_cpu():
    pairs = copy_task(64, seed=0)
    config = TrainConfig(steps=3, batch_size=32, warmup_steps=2, log_every=1, amp=True,
                         device="cpu", progress=False)
    history = Trainer(tiny_model(), pairs, config).train()
    assert len(history) == 3 and all(math.isfinite(h["loss"]) for h in history)


def test_epochs_instead_of_steps():
    pairs = copy_task(100, seed=0)
    config = TrainConfig(steps=None, epochs=2, batch_size=32, log_every=1, device="cpu",
                         progress=False)
    trainer = Trainer(tiny_model(), pairs, config)
    assert trainer.total_steps == 8  # 4 batches (32, 32, 32, 4) per epoch
    assert len(trainer.train()) == 8 and trainer.epoch == 1


# --- evaluation and model files --------------------------------------------------------------


def test_exact_match_compares_up_to_eos():
    pairs = copy_task(5, seed=1)

    def perfect(model, src, max_len):  # BOS, the copy, EOS, then padding
        out = torch.zeros(src.shape[0], max_len + 3, dtype=torch.long)
        out[:, 0] = 1
        out[:, 1 : 1 + src.shape[1]] = src
        out[:, 1 + src.shape[1]] = 2
        return out

    def no_eos(model, src, max_len):
        return perfect(model, src, max_len)[:, : 1 + src.shape[1]]

    model = tiny_model()
    assert exact_match(model, pairs, 11, batch_size=2, decode=perfect) == 1.0
    assert exact_match(model, pairs, 11, decode=no_eos) == 0.0


def test_save_and_load_model(tmp_path):
    config = dict(src_vocab_size=11, tgt_vocab_size=11, d_model=32, num_heads=4,
                  num_encoder_layers=1, num_decoder_layers=1, d_ff=64, dropout=0.0, max_len=32)
    torch.manual_seed(0)
    model = Transformer(**config).eval()
    save_model(model, config, tmp_path / "m.pt", half=True, note="hi")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.extra == {"note": "hi"} and not loaded.training
    src, tgt = torch.randint(3, 11, (2, 5)), torch.randint(3, 11, (2, 4))
    torch.testing.assert_close(loaded(src, tgt), model(src, tgt), atol=2e-2, rtol=2e-2)

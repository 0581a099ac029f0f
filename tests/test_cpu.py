"""solutions.cpu (thread choice, matmul peak) and how the Trainer uses it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

from solutions import training
from solutions.cpu import (
    ThreadChoice,
    cpu_model,
    fastest_thread_count,
    matmul_peak,
    thread_candidates,
    threads,
)
from solutions.data import BOS, EOS, copy_task
from solutions.model import Transformer
from solutions.training import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


@pytest.mark.parametrize("limit, expected", [(1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]),
                                             (8, [1, 2, 4, 8])])
def test_thread_candidates(limit, expected):
    assert thread_candidates(limit) == expected


def test_thread_candidates_follow_the_users_setting():
    with threads(1):
        assert thread_candidates() == [1]
    with threads(2):
        assert thread_candidates() == [1, 2]


def test_threads_context_restores_the_count():
    before = torch.get_num_threads()
    with threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_fastest_thread_count_picks_the_fastest_and_restores():
    # A step that is slow with 1 thread and fast with 2: the choice must follow the timings.
    def step():
        time.sleep(0.03 if torch.get_num_threads() == 1 else 0.001)

    before = torch.get_num_threads()
    choice = fastest_thread_count(step, candidates=[1, 2])
    assert choice.threads == 2
    assert set(choice.seconds) == {1, 2} and choice.seconds[1] > choice.seconds[2]
    assert torch.get_num_threads() == before
    assert "2 thread(s)" in str(choice) and cpu_model() in str(choice)

    calls = {1: 0, 2: 0}

    def slow_with_two():
        calls[torch.get_num_threads()] += 1
        time.sleep(0.05 if torch.get_num_threads() == 2 else 0.001)

    assert fastest_thread_count(slow_with_two, candidates=[1, 2], repeats=3).threads == 1
    assert calls == {1: 4, 2: 1}  # warm-up + 3 timed; a hopeless warm-up is not timed again


def test_cpu_model_and_peak():
    assert cpu_model().strip()
    peak = matmul_peak(1, size=256, seconds=0.05)
    # 2 * 256^3 FLOPs cannot take less than a microsecond, nor more than a few seconds.
    assert 1e7 < peak < 2 * 256**3 / 1e-6
    cpu_peak = matmul_peak(1, size=256, seconds=0.05, clock=time.process_time)
    assert 1e7 < cpu_peak < 2 * 256**3 / 1e-6


def _tiny_trainer(dropout: float = 0.3, **overrides) -> Trainer:
    pairs = copy_task(64, vocab_size=11, length=6, seed=1)
    torch.manual_seed(0)
    model = Transformer(11, 11, d_model=32, num_heads=2, num_encoder_layers=1,
                        num_decoder_layers=1, d_ff=64, dropout=dropout, max_len=16)
    config = TrainConfig(**{"steps": 6, "batch_size": 16, "warmup_steps": 3, "log_every": 1,
                            "seed": 0, "device": "cpu", "progress": False, **overrides})
    return Trainer(model, pairs, config)


def test_trainer_thread_choice_changes_nothing_but_the_thread_count(monkeypatch):
    monkeypatch.setattr(training, "_THREAD_CHOICES", {})
    torch.set_num_threads(2)  # the autouse fixture restores the count afterwards
    auto = _tiny_trainer()  # threads=None: measure 1 and 2 on a copy, keep the fastest
    auto_losses = [h["loss"] for h in auto.train()]
    assert isinstance(auto.thread_choice, ThreadChoice)
    assert set(auto.thread_choice.seconds) == {1, 2}
    assert torch.get_num_threads() == auto.thread_choice.threads

    fixed = _tiny_trainer(threads=auto.thread_choice.threads)
    fixed_losses = [h["loss"] for h in fixed.train()]
    assert fixed.thread_choice is None
    # Bit for bit: the measurement ran on a copy and gave back the random state (dropout).
    assert auto_losses == fixed_losses
    a, b = auto.model.state_dict(), fixed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_trainer_sets_the_configured_thread_count():
    trainer = _tiny_trainer(threads=1, steps=1)
    torch.set_num_threads(2)
    trainer.train()
    assert torch.get_num_threads() == 1


@pytest.mark.slow
def test_compiled_training_on_cpu_matches_eager():
    """TrainConfig(compile=True) on the CPU (Inductor's C++ kernels) computes the same loss and
    gradients as eager PyTorch, up to float32 rounding (fused kernels add in another order).
    One step only: Adam's first update is about lr * sign(grad), so later weights would
    magnify rounding differences of gradients near zero."""
    eager = _tiny_trainer(dropout=0.0, threads=1, steps=1)
    compiled = _tiny_trainer(dropout=0.0, threads=1, steps=1, compile=True)
    [eager_loss], [compiled_loss] = ([h["loss"] for h in t.train()] for t in (eager, compiled))
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    for (name, p), q in zip(eager.model.named_parameters(), compiled.model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_copy_training_pairs():
    from train_copy import LENGTH, VOCAB, sequence_ids, training_pairs

    pairs = training_pairs(200, seed=0, repeat_share=0.5)
    assert len(pairs) == 200
    for src, tgt in pairs:
        assert src.shape == (LENGTH,) and src.min() >= 3 and src.max() < VOCAB
        assert tgt.tolist() == [BOS, *src.tolist(), EOS]
    distinct = [len(set(src.tolist())) for src, _ in pairs]
    assert max(distinct[:100]) <= 3  # the repeat share: 1 to 3 symbols each
    assert {1, 2, 3} <= set(distinct[:100])
    assert sum(d > 3 for d in distinct[100:]) > 90  # the rest: uniformly random
    plain = copy_task(200, VOCAB, LENGTH, seed=0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(pairs[100:], plain[100:]))
    ids = sequence_ids(pairs)
    assert len(set(ids.tolist())) == len({tuple(s.tolist()) for s, _ in pairs})

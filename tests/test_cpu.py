"""solutions.cpu (thread choice, matmul peak, fast dropout) and how the Trainer uses it."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from solutions import training
from solutions.attention import MultiHeadAttention
from solutions.cpu import (
    ThreadChoice,
    cpu_model,
    dropout_mask,
    fast_cpu_dropout,
    fast_dropout,
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


# --- dropout masks from 16-bit random numbers


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_dropout_mask_drops_each_element_with_probability_p(p):
    torch.manual_seed(0)
    n = 400_000
    keep, factor = dropout_mask((n,), p)
    assert keep.dtype == torch.bool and keep.shape == (n,)
    # each of the four 16-bit numbers a 64-bit word gives is uniform: the keep rate at
    # every position modulo 4 is 1 - p (within 5 standard deviations)
    sd = (p * (1 - p) / (n / 4)) ** 0.5
    for position in range(4):
        rate = keep[position::4].double().mean().item()
        assert abs(rate - (1 - p)) < 5 * sd + 2**-17, (position, rate)
    # the factor makes the mask's mean exactly 1 for the keep probability drawn with
    keep_levels = round((1 - p) * 2**16)
    assert factor == 2**16 / keep_levels
    # neighbours are independent: both kept about (1 - p)^2 of the time
    both = (keep[:-1] & keep[1:]).double().mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * ((1 - p) ** 2 / n) ** 0.5 + 2**-16


def test_dropout_mask_edges_and_reproducibility():
    assert dropout_mask((3, 5), 0.0)[0].all()
    keep, factor = dropout_mask((3, 5), 1.0)
    assert not keep.any() and factor == 0.0
    assert dropout_mask((0, 4), 0.5)[0].shape == (0, 4)
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout_mask((2,), 1.5)
    torch.manual_seed(3)
    first = dropout_mask((7, 9), 0.5)[0]
    torch.manual_seed(3)
    assert torch.equal(dropout_mask((7, 9), 0.5)[0], first)  # drawn from torch's generator


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fast_dropout_values_and_gradient(dtype, transposed):
    x = torch.randn(64, 33, dtype=dtype)
    x = (x.t().contiguous().t() if transposed else x).requires_grad_()
    torch.manual_seed(1)
    keep, factor = dropout_mask(x.shape, 0.25)
    torch.manual_seed(1)
    y = fast_dropout(x, 0.25)
    assert y.dtype == dtype
    torch.testing.assert_close(y, torch.where(keep, x * factor, 0.0).to(dtype), rtol=0, atol=0)
    grad = torch.randn_like(x)
    y.backward(grad)
    torch.testing.assert_close(x.grad, torch.where(keep, grad * factor, 0.0).to(dtype))
    assert fast_dropout(x, 0.25, train=False) is x
    assert fast_dropout(x, 0.0) is x
    x.grad = None
    dropped = fast_dropout(x, 1.0)
    dropped.backward(grad)
    assert not dropped.any() and not x.grad.any()
    empty = torch.empty(0, 3)
    assert fast_dropout(empty, 0.5) is empty


def test_fast_dropout_is_unbiased():
    torch.manual_seed(0)
    out = fast_dropout(torch.ones(1_000_000), 0.1)
    assert abs(out.double().mean().item() - 1.0) < 5 * (0.1 / 0.9 / 1e6) ** 0.5


def test_fast_cpu_dropout_replaces_dropout_only_inside_the_block():
    x = torch.randn(32, 16)
    module = torch.nn.Dropout(0.3)
    attention = MultiHeadAttention(16, num_heads=2, dropout=0.3)

    def outputs():
        torch.manual_seed(5)
        a = module(x)
        torch.manual_seed(5)
        b = F.dropout(x, 0.3)
        torch.manual_seed(5)
        c = attention(x[None], x[None], x[None])
        return a, b, c

    torch.manual_seed(5)
    expected = fast_dropout(x, 0.3)
    with fast_cpu_dropout():
        with fast_cpu_dropout():  # nested blocks keep it until the outermost ends
            inner = outputs()
        fast = outputs()
    for out in (inner[0], inner[1], fast[0], fast[1]):
        assert torch.equal(out, expected)
    assert torch.equal(fast[2], inner[2])
    native = outputs()  # PyTorch's own again: other masks
    assert not torch.equal(native[0], expected) and not torch.equal(native[1], expected)
    assert not torch.equal(native[2], fast[2])  # the attention weights' dropout too
    with pytest.raises(RuntimeError), fast_cpu_dropout():
        raise RuntimeError
    assert torch.equal(outputs()[0], native[0])  # removed after an exception as well


def test_trainer_uses_fast_dropout_on_the_cpu():
    """The Trainer's steps are train_step's inside fast_cpu_dropout (TrainConfig.fast_dropout,
    on by default), or PyTorch's dropout when it is off; nothing else changes."""
    def losses(**overrides):
        return [h["loss"] for h in _tiny_trainer(threads=1, steps=3, log_every=1,
                                                 **overrides).train()]

    def manual(fast: bool):
        trainer = _tiny_trainer(threads=1, steps=3, fast_dropout=False)
        torch.set_num_threads(1)
        out = []
        for _ in range(3):
            with fast_cpu_dropout() if fast else contextlib.nullcontext():
                out.append(trainer.train_step(trainer._next_batch()))
        return out

    assert losses() == manual(fast=True)
    assert losses(fast_dropout=False) == manual(fast=False)
    assert losses() != losses(fast_dropout=False)
    assert losses(dropout=0.0) == losses(dropout=0.0, fast_dropout=False)


def test_bench_cpu_measures_what_its_tables_print():
    """scripts/bench_cpu.py's three measurements, on the smallest settings: the figures are
    consistent with each other (FLOP/s = FLOPs / time, share = FLOP/s / peak)."""
    import bench_cpu

    row = bench_cpu.measure("copy", threads=1, steps=2, repeats=1, dropout=0.1)
    assert row["gflop_per_step"] > 0.1  # a copy-model step is about 0.7 GFLOP
    assert row["gflops"] == pytest.approx(row["gflop_per_step"] * 1e3 / row["ms_per_step"])
    assert row["share_of_peak"] == pytest.approx(row["gflops"] / row["peak_gflops"])
    assert 0 < row["share_of_peak"] < 1 and row["ratio"] > 0
    for timing in (bench_cpu.attention_ratio((2, 2, 5, 7, 4), 1, repeats=2),
                   bench_cpu.dropout_ratio((3, 5, 8), 1, repeats=2)):
        assert all(0 < ms < 1e3 for ms in timing)


@pytest.mark.parametrize("setting", ["Inductor", "Inductor, cpp.simdlen=1"])
def test_bench_cpu_compiles_the_relu_mask_under_each_setting(setting):
    """``--compile``'s mask timing compiles under the setting it names (a config patch that
    named no real option would raise) and leaves Inductor's configuration as it found it."""
    import bench_cpu
    import torch._inductor.config as inductor

    before = inductor.cpp.simdlen
    timing = bench_cpu.relu_mask_ratio(bench_cpu.INDUCTOR_SETTINGS[setting], 1, repeats=2,
                                       shape=(4, 16))
    assert all(0 < ms < 1e3 for ms in timing)
    assert inductor.cpp.simdlen == before


def test_fast_cpu_dropout_blocks_in_several_threads():
    """Blocks entered and left from several threads at once: the registration stays while any
    block is open and is gone once all have ended."""
    import threading

    import solutions.cpu as cpu

    x = torch.randn(64)
    errors = []

    def worker():
        try:
            for _ in range(200):
                with fast_cpu_dropout():
                    assert cpu._fast_dropout_library is not None
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    assert cpu._fast_dropout_users == 0 and cpu._fast_dropout_library is None
    torch.manual_seed(2)
    native = F.dropout(x, 0.5)
    torch.manual_seed(2)
    assert not torch.equal(native, fast_dropout(x, 0.5))  # PyTorch's own masks again

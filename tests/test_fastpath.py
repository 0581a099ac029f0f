"""The fast path's switches of the Trainer on the CPU: each gives the results it should
(equal where the arithmetic is the same, close where it is rounded differently)."""

from __future__ import annotations

import pytest
import torch

from solutions import Transformer
from solutions.data import PAD, date_task, date_tokenizers, encode_date_pairs
from solutions.fastpath import batches_by_tokens, pad_to_bucket
from solutions.training import TrainConfig, Trainer, label_smoothed_cross_entropy

SRC, TGT = date_tokenizers()
PAIRS = encode_date_pairs(date_task(96, seed=0), SRC, TGT)
VOCAB = (SRC.vocab_size, TGT.vocab_size)


def trained(steps=4, **switches) -> tuple[list[float], dict]:
    torch.manual_seed(0)
    model = Transformer(*VOCAB, d_model=16, num_heads=2, num_encoder_layers=1,
                        num_decoder_layers=1, d_ff=32, dropout=0.0, max_len=64)
    # One thread, whatever the count when the (module-scoped) fixture runs: sums split over
    # two threads may round differently, and the comparisons below are bit for bit.
    config = TrainConfig(**{"steps": steps, "batch_size": 16, "warmup_steps": 2, "log_every": 1,
                            "device": "cpu", "progress": False, "threads": 1, **switches})
    trainer = Trainer(model, PAIRS, config)
    losses = [h["loss"] for h in trainer.train()]
    state = {k.replace(".layer.", "."): v for k, v in trainer.model.state_dict().items()}
    return losses, state


@pytest.fixture(scope="module")
def plain():
    return trained()


def assert_same(a, b, atol):
    """Same losses and weights, except the key projections' biases: their gradient is 0 in
    exact arithmetic (softmax ignores a shift shared by all keys), so what Adam sees there is
    rounding noise, and Adam's step lr * m / sqrt(v) turns noise into full-size steps whose sign
    depends on how the sums were rounded. Those weights only have to stay within the steps
    Adam can take (at most about lr each)."""
    assert a[1].keys() == b[1].keys()
    assert a[0] == pytest.approx(b[0], abs=atol)
    for k in a[1]:
        if k.endswith("k_proj.bias"):
            assert (a[1][k] - b[1][k]).abs().max() <= 2 * 4 * 0.09 + atol  # 4 steps, lr <= 0.09
            continue
        torch.testing.assert_close(a[1][k], b[1][k], atol=atol, rtol=0, msg=k)


def test_fused_adam_equals_adam(plain):
    """Fused Adam, the Trainer's default on the CPU, makes the same update as Adam's loop of
    small kernels, computed in another order: weights within 1e-4 of a step (lr ~0.09)."""
    assert_same(trained(fused_adam=False), plain, atol=1e-5)


@pytest.mark.parametrize("switch, fused", [(None, True), (True, True), (False, False)])
def test_trainer_fuses_adam_on_the_cpu_by_default(switch, fused):
    model = Transformer(*VOCAB, d_model=16, num_heads=2, num_encoder_layers=1,
                        num_decoder_layers=1, d_ff=32, max_len=64)
    config = TrainConfig(steps=1, device="cpu", progress=False, fused_adam=switch)
    assert bool(Trainer(model, PAIRS, config).optimizer.defaults["fused"]) is fused


def test_tf32_changes_nothing_on_cpu(plain):
    try:
        assert_same(trained(tf32=True), plain, atol=0)
    finally:
        from solutions.fastpath import set_tf32
        set_tf32(False)


def test_activation_checkpointing_in_the_trainer_equals_plain(plain):
    assert_same(trained(activation_checkpointing=True), plain, atol=1e-6)


def test_buckets_change_shapes_not_results(plain):
    """Padding to a multiple of 8 only adds masked positions: same losses and weights up to
    float rounding (sums over more, zero, terms)."""
    assert_same(trained(bucket=8), plain, atol=1e-5)


def test_bf16_autocast_is_close_not_equal(plain):
    losses, _ = trained(amp=True)
    assert losses == pytest.approx(plain[0], rel=0.05)
    assert losses != plain[0]


def test_pad_to_bucket_keeps_the_model_output():
    torch.manual_seed(0)
    model = Transformer(*VOCAB, d_model=16, num_heads=2, num_encoder_layers=1,
                        num_decoder_layers=1, d_ff=32, dropout=0.0).eval()
    batch = batches_by_tokens(PAIRS, 200, seed=1)[0]
    padded = pad_to_bucket(batch, 8)
    assert padded.src.shape[1] % 8 == 0 and padded.tgt_in.shape[1] % 8 == 0
    t = batch.tgt_in.shape[1]
    out, out_padded = model(batch.src, batch.tgt_in), model(padded.src, padded.tgt_in)[:, :t]
    torch.testing.assert_close(out_padded, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(label_smoothed_cross_entropy(out, batch.tgt_out),
                               label_smoothed_cross_entropy(
                                   model(padded.src, padded.tgt_in), padded.tgt_out))


def test_batches_by_tokens_bounds_the_work_and_keeps_every_pair():
    batches = batches_by_tokens(PAIRS, 600, seed=0)
    for b in batches:
        assert b.src.numel() + b.tgt_in.numel() <= 600 or b.src.shape[0] == 1
    assert sum(b.src.shape[0] for b in batches) == len(PAIRS)
    assert sum(b.num_tokens for b in batches) == sum(len(t) - 1 for _, t in PAIRS)
    sizes = {b.src.shape[0] for b in batches}
    assert len(sizes) > 1  # shorter sequences, more of them
    trained_tokens = trained(steps=2, batch_tokens=600)
    assert len(trained_tokens[0]) == 2
    assert (batches[0].tgt_out != PAD).sum() == batches[0].num_tokens


@pytest.mark.slow
def test_compiled_model_with_dynamic_shapes_gives_eager_gradients():
    """torch.compile's graph capture (dynamo + AOT autograd; the aot_eager backend skips only
    the code generation, which is slow on a CPU) with dynamic shapes: batches of two lengths,
    one graph, the eager gradients."""
    import torch._dynamo

    torch.manual_seed(0)
    model = Transformer(*VOCAB, d_model=16, num_heads=2, num_encoder_layers=1,
                        num_decoder_layers=1, d_ff=32, dropout=0.0)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", dynamic=True)
    for batch in batches_by_tokens(PAIRS, 400, seed=3)[:2]:
        grads = []
        for forward in (model, compiled):
            model.zero_grad()
            label_smoothed_cross_entropy(forward(batch.src, batch.tgt_in), batch.tgt_out).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for eager, traced in zip(*grads):
            torch.testing.assert_close(traced, eager, atol=1e-6, rtol=1e-5)

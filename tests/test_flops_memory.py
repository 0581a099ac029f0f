"""FLOP counting against torch.utils.flop_counter.FlopCounterMode on real training steps, and
the memory tools (activation checkpointing, gradient accumulation) against the plain step."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from solutions import Transformer
from solutions.data import PAD, Batch
from solutions.flops import (
    PEAK_SOURCES,
    PEAK_TFLOPS,
    ModelShape,
    forward_flops,
    measured_matmul_peak,
    mfu,
    peak_flops,
    training_flops,
    training_flops_per_token,
)
from solutions.memory import (
    SavedActivations,
    accumulated_gradients_step,
    split_batch,
    use_activation_checkpointing,
)
from solutions.training import label_smoothed_cross_entropy, train_step

CONFIGS = [  # (model kwargs, batch, src_len, tgt_len)
    (dict(d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=64), 3, 7, 5),
    (dict(d_model=48, num_heads=6, num_encoder_layers=1, num_decoder_layers=3, d_ff=40), 2, 4, 9),
    (dict(d_model=16, num_heads=2, num_encoder_layers=3, num_decoder_layers=1, d_ff=128,
          norm_first=True, tie_embeddings=True), 5, 11, 3),
]


def random_batch(gen, batch, src_len, tgt_len, vocab=13) -> Batch:
    src = torch.randint(1, vocab, (batch, src_len), generator=gen)
    tgt = torch.randint(1, vocab, (batch, tgt_len + 1), generator=gen)
    src[0, -2:] = PAD
    tgt[-1, -3:] = PAD
    return Batch(src, tgt[:, :-1], tgt[:, 1:], int((tgt[:, 1:] != PAD).sum()))


@pytest.mark.parametrize("kwargs,batch,src_len,tgt_len", CONFIGS)
def test_training_flops_match_flop_counter(kwargs, batch, src_len, tgt_len):
    model = Transformer(13, 13, dropout=0.1, **kwargs)
    model.keep_attention_weights(True)  # explicit matmuls (the CPU's fused kernel has no count)
    data = random_batch(torch.Generator().manual_seed(0), batch, src_len, tgt_len)
    optimizer = torch.optim.Adam(model.parameters())
    counter = FlopCounterMode(display=False)
    with counter:
        train_step(model, data, optimizer)
    shape = ModelShape.of(model)
    assert counter.get_total_flops() == training_flops(shape, batch, src_len, tgt_len)
    assert training_flops(shape, batch, src_len, tgt_len) == 3 * forward_flops(
        shape, batch, src_len, tgt_len)


def test_flops_per_token_is_near_six_n_for_the_base_model():
    """Short sequences: attention is small, and the 6N rule (N = parameters that multiply,
    counted over source and target tokens) is close."""
    shape = ModelShape(tgt_vocab_size=37000)
    model = Transformer(37000, 37000)
    layers = [p.numel() for n, p in model.named_parameters()
              if p.dim() == 2 and "embed" not in n]
    encoder = sum(p.numel() for p in model.encoder.parameters() if p.dim() == 2)
    decoder = sum(layers) - encoder  # decoder matrices and the output layer
    cross_kv = 2 * 512 * 512 * 6  # decoder matrices that act on source tokens
    s = t = 8
    six_n = 6 * (encoder * s + (decoder - cross_kv) * t + cross_kv * s) / t
    assert training_flops_per_token(shape, s, t) == pytest.approx(six_n, rel=0.01)
    assert training_flops_per_token(shape, s, t) > six_n  # plus attention


def test_peak_table_and_mfu():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989.4e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756.0e12
    assert peak_flops("NVIDIA A100-SXM4-40GB", "tf32") == 156e12
    assert peak_flops("NVIDIA L4", "fp32") == 30.3e12
    assert peak_flops("NVIDIA H200", "bf16") == 989.4e12
    assert peak_flops("Tesla T4", "fp32") is None
    assert set(PEAK_TFLOPS) | {"CPU"} == set(PEAK_SOURCES)
    assert mfu(2e12, 0.5, 8e12) == pytest.approx(0.5)
    cpu_peak = measured_matmul_peak(size=256, repeats=2)
    assert 1e8 < cpu_peak < 1e14


def tiny_model(dropout=0.0, dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    model = Transformer(13, 13, d_model=16, num_heads=2, num_encoder_layers=2,
                        num_decoder_layers=2, d_ff=32, dropout=dropout, **kwargs)
    return model.to(dtype)


def gradients(model, batch, loss_fn=label_smoothed_cross_entropy):
    model.zero_grad()
    loss_fn(model(batch.src, batch.tgt_in), batch.tgt_out).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_activation_checkpointing_gives_the_same_gradients(dropout):
    data = random_batch(torch.Generator().manual_seed(1), 4, 6, 5)
    plain = tiny_model(dropout)
    torch.manual_seed(7)
    expected = gradients(plain, data)
    checkpointed = use_activation_checkpointing(tiny_model(dropout))
    torch.manual_seed(7)  # the same dropout masks; recomputation replays them
    got = gradients(checkpointed, data)
    assert {n.replace(".layer.", ".") for n in got} == set(expected)
    for name, grad in got.items():
        torch.testing.assert_close(grad, expected[name.replace(".layer.", ".")],
                                   rtol=1e-12, atol=1e-12)
    use_activation_checkpointing(checkpointed, enable=False)
    assert set(checkpointed.state_dict()) == set(plain.state_dict())


def test_activation_checkpointing_saves_activation_memory():
    data = random_batch(torch.Generator().manual_seed(1), 8, 12, 12)
    model = tiny_model(dtype=torch.float32)
    measured = []
    for enable in (False, True):
        use_activation_checkpointing(model, enable)
        with SavedActivations() as saved:
            model(data.src, data.tgt_in).sum()
        measured.append(saved.bytes)
    assert measured[1] < measured[0] / 3


@pytest.mark.parametrize("micro_batches", [2, 3, 5])
def test_gradient_accumulation_equals_the_big_batch_step(micro_batches):
    data = random_batch(torch.Generator().manual_seed(2), 5, 6, 7)
    data.tgt_out[0, 1:] = PAD  # micro-batches with very different numbers of real tokens
    big, accumulated = tiny_model(), tiny_model()
    # SGD: Adam divides by sqrt(v), which blows rounding noise on the key biases' gradients
    # (exactly 0 in exact arithmetic: softmax ignores a shift shared by all keys) up to lr.
    opt_big = torch.optim.SGD(big.parameters(), lr=0.1, momentum=0.9)
    opt_acc = torch.optim.SGD(accumulated.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        loss_big = train_step(big, data, opt_big, grad_clip=0.5)
        loss_acc = accumulated_gradients_step(accumulated, data, opt_acc, micro_batches,
                                              grad_clip=0.5)
        assert loss_acc == pytest.approx(loss_big, rel=1e-12)
    for (name, p), q in zip(big.named_parameters(), accumulated.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-12, atol=1e-13, msg=name)
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-13, msg=name)


def test_split_batch_keeps_every_row():
    data = random_batch(torch.Generator().manual_seed(3), 5, 4, 4)
    parts = split_batch(data, 2)
    assert [p.src.shape[0] for p in parts] == [3, 2]
    assert sum(p.num_tokens for p in parts) == data.num_tokens
    with pytest.raises(ValueError):
        split_batch(data, 6)
    assert copy.copy(parts[0]).src is parts[0].src

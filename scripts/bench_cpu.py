"""How close CPU training comes to the machine's own limit, and what the Trainer costs.

For each task (the copy and date models with the sizes and batches of ``train_copy.py`` and
``train_dates.py``) and each thread count, in one run:

* **% of peak**: training FLOP/s of the ``Trainer`` (FLOPs of the very same steps counted with
  ``torch.utils.flop_counter.FlopCounterMode``) against the machine's measured float32 matmul
  peak with the same number of threads (:func:`solutions.cpu.matmul_peak`); once by the wall
  clock, once per CPU-second of the process (fairer when other work shares the cores);
* **Trainer / plain**: wall time of ``Trainer.train`` against a minimal plain-PyTorch loop
  (``nn.Embedding`` + ``nn.Transformer`` + ``nn.Linear``, ``F.cross_entropy``, Adam, the same
  warm-up schedule and clipping) on the same sizes, batches and number of steps; below 1.0
  means the Trainer is faster. Both sides pay for cutting the data into batches. The plain
  loop uses PyTorch's dropout and Adam as they come; the Trainer, on a CPU, draws dropout
  masks 16 bits at a time (``solutions.cpu.fast_cpu_dropout``) and fuses Adam's update.

A second table times attention alone, forward and backward, on the shapes these tasks meet
(the copy model's 11 tokens, the date model's sources of 13-31 characters and targets of 11):
the package's ``fused_attention`` (explicit for at most 32 keys on the CPU) against PyTorch's
``F.scaled_dot_product_attention`` on the same inputs and padding mask. A third times dropout
alone, forward and backward, on the activations and attention weights of the same models: the
Trainer's masks (``solutions.cpu.fast_dropout``) against ``F.dropout``. With ``--compile``, a
fourth compares ``torch.compile`` (Inductor) with eager PyTorch on the copy model: one training
step of the ``Trainer`` with and without ``compile=True``, and ``x <= 0`` alone (the boolean
mask a ReLU keeps for its backward pass), with Inductor's defaults and with ``cpp.simdlen=1``
(C++ loops without explicit vector types, left to the compiler).

Timed runs alternate (Trainer, plain, Trainer, plain, ...) and the fastest of each counts, so
that other work on the machine disturbs both sides alike. ``uptime`` is printed beside the table.

    python scripts/bench_cpu.py                        # threads 1 and 2, both tasks
    python scripts/bench_cpu.py --threads 1 --steps 10
    python scripts/bench_cpu.py --threads 2 --tasks copy --batch-size 512
    python scripts/bench_cpu.py --threads 2 --tasks copy --compile
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from solutions.attention import fused_attention
from solutions.cpu import available_cores, cpu_model, fast_dropout, matmul_peak
from solutions.data import (
    PAD,
    batches_by_length,
    copy_task,
    date_task,
    date_tokenizers,
    encode_date_pairs,
)
from solutions.model import Transformer
from solutions.training import TrainConfig, Trainer, noam_lr

# name: (model sizes, batch size, warm-up steps, label smoothing), as in the training scripts
TASKS = {
    "copy": (dict(d_model=64, num_heads=4, layers=1, d_ff=128), 128, 100, 0.0),
    "dates": (dict(d_model=128, num_heads=4, layers=2, d_ff=256), 128, 300, 0.1),
}


def task_data(task: str, n: int) -> tuple[list, int, int]:
    """``n`` training pairs of ``task`` and its source and target vocabulary sizes."""
    if task == "copy":
        return copy_task(n, vocab_size=11, length=10, seed=0), 11, 11
    src_tok, tgt_tok = date_tokenizers()
    pairs = encode_date_pairs(date_task(n, seed=0), src_tok, tgt_tok)
    return pairs, src_tok.vocab_size, tgt_tok.vocab_size


class PlainTransformer(nn.Module):
    """The same model from stock PyTorch modules: embeddings scaled by sqrt(d_model) plus
    sinusoidal positions, ``nn.Transformer`` (post-norm; it adds a final layer norm to each
    stack, which ours leaves out), and a linear output layer."""

    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int, num_heads: int,
                 layers: int, d_ff: int, dropout: float, max_len: int = 64):
        super().__init__()
        self.d_model = d_model
        self.src_embed = nn.Embedding(src_vocab, d_model)
        self.tgt_embed = nn.Embedding(tgt_vocab, d_model)
        position = torch.arange(max_len)[:, None]
        freq = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(position * freq), torch.cos(position * freq)
        self.register_buffer("pe", pe)
        self.dropout = nn.Dropout(dropout)
        self.transformer = nn.Transformer(d_model, num_heads, layers, layers, d_ff, dropout,
                                          batch_first=True)
        self.generator = nn.Linear(d_model, tgt_vocab)

    def embed(self, embedding: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(embedding(ids) * self.d_model**0.5 + self.pe[: ids.shape[1]])

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        causal = torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool).triu(1)  # True = hide
        src_pad, tgt_pad = src == PAD, tgt == PAD
        out = self.transformer(self.embed(self.src_embed, src), self.embed(self.tgt_embed, tgt),
                               tgt_mask=causal, src_key_padding_mask=src_pad,
                               tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad)
        return self.generator(out)


def plain_loop(model: PlainTransformer, pairs: list, batch_size: int, warmup: int,
               smoothing: float) -> None:
    """The minimal training loop: batches, forward, loss, backward, clip, Adam, schedule."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: noam_lr(i + 1, model.d_model, warmup))
    model.train()
    for batch in batches_by_length(pairs, batch_size, shuffle=True, seed=0):
        logits = model(batch.src, batch.tgt_in)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(),
                               ignore_index=PAD, label_smoothing=smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        loss.item()


def measure(task: str, threads: int, steps: int, repeats: int, dropout: float,
            batch_size: int | None = None) -> dict:
    """One row of the first table; ``batch_size`` (sentences per step) replaces the training
    script's."""
    sizes, script_batch_size, warmup, smoothing = TASKS[task]
    batch_size = batch_size or script_batch_size
    pairs, src_vocab, tgt_vocab = task_data(task, steps * batch_size)
    warm_pairs = pairs[: 2 * batch_size]

    def ours() -> Transformer:
        torch.manual_seed(0)
        model = Transformer(src_vocab, tgt_vocab, d_model=sizes["d_model"],
                            num_heads=sizes["num_heads"], num_encoder_layers=sizes["layers"],
                            num_decoder_layers=sizes["layers"], d_ff=sizes["d_ff"],
                            dropout=dropout, max_len=64)
        return model

    def trainer(data: list) -> Trainer:
        config = TrainConfig(steps=len(data) // batch_size, batch_size=batch_size,
                             warmup_steps=warmup, smoothing=smoothing, threads=threads,
                             device="cpu", progress=False, log_every=10**9)
        return Trainer(ours(), data, config)

    def plain() -> PlainTransformer:
        torch.manual_seed(0)
        return PlainTransformer(src_vocab, tgt_vocab, dropout=dropout, **sizes)

    torch.set_num_threads(threads)
    # The peak is measured before and after the timed runs and the higher one counts: a peak
    # measured while the host is busy would be too low and flatter the ratio.
    peaks = [(matmul_peak(threads), matmul_peak(threads, clock=time.process_time))]
    trainer(warm_pairs).train()  # warm-up: thread pool, allocator
    plain_loop(plain(), warm_pairs, batch_size, warmup, smoothing)
    ours_s, plain_s, ours_cpu_s = [], [], []
    for _ in range(repeats):
        run = trainer(pairs)
        start, cpu_start = time.perf_counter(), time.process_time()
        run.train()
        ours_s.append(time.perf_counter() - start)
        ours_cpu_s.append(time.process_time() - cpu_start)
        model = plain()
        start = time.perf_counter()
        plain_loop(model, pairs, batch_size, warmup, smoothing)
        plain_s.append(time.perf_counter() - start)
    with FlopCounterMode(display=False) as counter:  # the FLOPs of the same steps
        trainer(pairs).train()
    flops = counter.get_total_flops()
    peaks.append((matmul_peak(threads), matmul_peak(threads, clock=time.process_time)))
    peak, cpu_peak = (max(column) for column in zip(*peaks))
    ours_best, plain_best = min(ours_s), min(plain_s)
    return {"task": task, "threads": threads, "ms_per_step": 1e3 * ours_best / steps,
            "plain_ms_per_step": 1e3 * plain_best / steps, "ratio": ours_best / plain_best,
            "gflop_per_step": flops / steps / 1e9, "gflops": flops / ours_best / 1e9,
            "peak_gflops": peak / 1e9, "share_of_peak": flops / ours_best / peak,
            "share_of_cpu_peak": flops / min(ours_cpu_s) / cpu_peak}


def fastest_ms(runs: list, repeats: int) -> list[float]:
    """Milliseconds of each callable in ``runs``: one warm-up each, then ``repeats`` rounds
    that call them in turn (so that other work on the machine disturbs all alike); the
    fastest round of each counts."""
    for run in runs:
        run()
    times = [[] for _ in runs]
    for _ in range(repeats):
        for run, spent in zip(runs, times):
            start = time.perf_counter()
            run()
            spent.append(time.perf_counter() - start)
    return [1e3 * min(spent) for spent in times]


#: (batch, heads, queries, keys, head width) of the attentions in the two tasks' models
ATTENTION_SHAPES = {
    "copy, every attention": (128, 4, 11, 11, 16),
    "dates, short source": (128, 4, 13, 13, 32),
    "dates, long source": (128, 4, 31, 31, 32),
    "dates, cross (11 on 31)": (128, 4, 11, 31, 32),
    "48 keys (PyTorch's kernel)": (128, 4, 48, 48, 32),
}


def attention_ratio(shape: tuple, threads: int, repeats: int = 20) -> list[float]:
    """Milliseconds of a forward and backward pass of ``fused_attention`` and of
    ``F.scaled_dot_product_attention`` on the same inputs (fastest of ``repeats``,
    alternating)."""
    batch, heads, queries, keys, width = shape
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(batch, heads, queries, width, generator=gen, requires_grad=True)
    k, v = (torch.randn(batch, heads, keys, width, generator=gen, requires_grad=True)
            for _ in range(2))
    mask = torch.ones(batch, 1, 1, keys, dtype=torch.bool)
    mask[: batch // 2, ..., keys - keys // 4:] = False  # half the batch is padded
    grad = torch.randn(batch, heads, queries, width, generator=gen)

    def torch_sdpa(q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    torch.set_num_threads(threads)
    return fastest_ms([lambda attend=attend: attend(q, k, v, mask).backward(grad)
                       for attend in (fused_attention, torch_sdpa)], repeats)


#: shapes dropout meets in the two tasks' models: activations and attention weights
DROPOUT_SHAPES = {
    "copy, activations": (128, 11, 64),
    "copy, attention weights": (128, 4, 11, 11),
    "dates, activations": (128, 31, 128),
    "dates, attention weights": (128, 4, 31, 31),
}


def dropout_ratio(shape: tuple, threads: int, repeats: int = 20) -> list[float]:
    """Milliseconds of a forward and backward pass of dropout (p = 0.1) with the Trainer's
    masks (:func:`solutions.cpu.fast_dropout`) and with ``F.dropout`` (fastest of ``repeats``,
    alternating)."""
    x = torch.randn(shape, requires_grad=True)
    grad = torch.randn(shape)
    torch.set_num_threads(threads)
    return fastest_ms([lambda dropout=dropout: dropout(x, 0.1).backward(grad)
                       for dropout in (fast_dropout, F.dropout)], repeats)


#: Inductor settings compared by ``--compile``: its defaults, and C++ without explicit vectors
INDUCTOR_SETTINGS = {"Inductor": {}, "Inductor, cpp.simdlen=1": {"cpp.simdlen": 1}}


def relu_mask_ratio(settings: dict, threads: int, repeats: int = 20,
                    shape: tuple = (128, 10, 128)) -> list[float]:
    """Milliseconds of ``x <= 0`` (the boolean mask a ReLU keeps for its backward pass, here on
    the copy model's feed-forward activations) compiled by Inductor with ``settings`` and run
    eagerly (fastest of ``repeats``, alternating)."""
    x = torch.randn(shape)

    def relu_mask(x):
        return x <= 0

    torch.set_num_threads(threads)
    torch._dynamo.reset()
    with torch._inductor.config.patch(settings):
        compiled = torch.compile(relu_mask)
        compiled(x)  # compiles under the settings
    return fastest_ms([lambda: compiled(x), lambda: relu_mask(x)], repeats)


def compiled_step_ratio(settings: dict, threads: int, steps: int, repeats: int,
                        dropout: float) -> list[float]:
    """Milliseconds per training step of the copy model by the ``Trainer`` with
    ``compile=True`` (Inductor with ``settings``) and without (fastest of ``repeats`` runs of
    ``steps`` steps, alternating)."""
    sizes, batch_size, warmup, smoothing = TASKS["copy"]
    pairs, src_vocab, tgt_vocab = task_data("copy", steps * batch_size)
    torch.manual_seed(0)
    model = Transformer(src_vocab, tgt_vocab, d_model=sizes["d_model"],
                        num_heads=sizes["num_heads"], num_encoder_layers=sizes["layers"],
                        num_decoder_layers=sizes["layers"], d_ff=sizes["d_ff"],
                        dropout=dropout, max_len=64)

    def run(compile: bool) -> None:
        config = TrainConfig(steps=steps, batch_size=batch_size, warmup_steps=warmup,
                             smoothing=smoothing, threads=threads, device="cpu",
                             progress=False, log_every=10**9, compile=compile)
        Trainer(model, pairs, config).train()

    torch._dynamo.reset()
    with torch._inductor.config.patch(settings):
        run(True)  # compiles under the settings; later runs reuse the compiled graphs
    ms = fastest_ms([lambda: run(True), lambda: run(False)], repeats)
    return [t / steps for t in ms]


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--steps", type=int, default=10, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side")
    parser.add_argument("--dropout", type=float, default=0.1, help="as the training scripts")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="sentences per step for both tasks (default: as the training "
                        "scripts, 128)")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile (Inductor) against eager on the copy "
                        "model (compiling takes a minute or more)")
    args = parser.parse_args()
    batches = (f"{args.batch_size} sentences per step" if args.batch_size
               else "batches as the training scripts")
    print(f"CPU: {cpu_model()}, {available_cores()} cores, torch {torch.__version__}; "
          f"{batches}; {load()}")
    header = (f"{'task':>6} {'threads':>7} {'ms/step':>8} {'plain':>8} {'Trainer/plain':>13} "
              f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'peak':>7} {'% of peak':>9} "
              f"{'% of peak per CPU-s':>19}")
    print(header)
    for threads in args.threads:
        for task in args.tasks:
            r = measure(task, threads, args.steps, args.repeats, args.dropout,
                        args.batch_size)
            print(f"{r['task']:>6} {r['threads']:>7} {r['ms_per_step']:>8.1f} "
                  f"{r['plain_ms_per_step']:>8.1f} {r['ratio']:>13.3f} "
                  f"{r['gflop_per_step']:>10.3f} {r['gflops']:>8.1f} {r['peak_gflops']:>7.1f} "
                  f"{100 * r['share_of_peak']:>8.1f}% {100 * r['share_of_cpu_peak']:>18.1f}%",
                  flush=True)
    for title, shapes, timed in [("attention", ATTENTION_SHAPES, attention_ratio),
                                 ("dropout", DROPOUT_SHAPES, dropout_ratio)]:
        print(f"\n{title + ', forward + backward':>28} {'threads':>7} {'ours ms':>8} "
              f"{'PyTorch ms':>10} {'ours/PyTorch':>12}")
        for threads in args.threads:
            for name, shape in shapes.items():
                ours, theirs = timed(shape, threads)
                print(f"{name:>28} {threads:>7} {ours:>8.2f} {theirs:>10.2f} "
                      f"{ours / theirs:>12.3f}", flush=True)
    if args.compile:
        print(f"\n{'torch.compile, copy model':>28} {'measure':>12} {'threads':>7} "
              f"{'compiled ms':>11} {'eager ms':>8} {'compiled/eager':>14}")
        for threads in args.threads:
            for name, settings in INDUCTOR_SETTINGS.items():
                for what, (compiled, eager) in [
                    ("x <= 0", relu_mask_ratio(settings, threads)),
                    ("step", compiled_step_ratio(settings, threads, args.steps, args.repeats,
                                                 args.dropout)),
                ]:
                    print(f"{name:>28} {what:>12} {threads:>7} {compiled:>11.2f} "
                          f"{eager:>8.2f} {compiled / eager:>14.3f}", flush=True)
    print(f"({load()}; ms/step: the fastest of {args.repeats} runs of {args.steps} steps; "
          f"peak: float32 1024x1024 matmul with as many threads, the higher of before and "
          f"after the runs; per CPU-s: FLOPs per CPU-second of this process, training against "
          f"the matmul, which other work on the machine disturbs less than the wall clock; "
          f"FLOPs: FlopCounterMode, which counts matrix products and attention, except inside "
          f"PyTorch's fused CPU attention kernel, which it counts as 0)")


if __name__ == "__main__":
    main()

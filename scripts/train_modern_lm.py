"""Retrain chapter 8's Shakespeare language model with a BPE tokenizer and the modern block
(RMSNorm, RoPE, SwiGLU, grouped-query attention), and compare it with chapter 8's
character-level model in bits per byte on the same validation text.

    nice -n 5 python scripts/train_modern_lm.py                      # BPE, about 5 min on CPU
    nice -n 5 python scripts/train_modern_lm.py --tokenizer char     # the modern block on chars

Same recipe as scripts/train_lm.py (1500 steps of 16 windows of 128 tokens, peak lr 3e-3,
warm-up 100, the last 10% of the text for validation). Writes book/data/bpe_shakespeare.json
(the tokenizer, trained on the training 90% only) and book/data/modern_lm_<tokenizer>.json
(curve, sizes, bits per byte of this model and of book/data/shakespeare_lm.pt).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from solutions.bpe import BPETokenizer
from solutions.corpus import shakespeare_text
from solutions.data import CharTokenizer
from solutions.lm import load_language_model
from solutions.modern import ModernConfig, ModernLM
from solutions.optim import bits_per_byte, cross_entropy, get_batch, train_lm

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "book" / "data"
SPECIAL = "<|endoftext|>"
VAL_CHARS = 100_000  # bits per byte are measured on the first 100k characters of validation


def split_text() -> tuple[str, str]:
    text = shakespeare_text()
    split = int(0.9 * len(text))
    return text[:split], text[split:]


def bpe_tokenizer(vocab_size: int, train_text: str) -> BPETokenizer:
    """The cached tokenizer in book/data, or train and save one."""
    path = DATA / "bpe_shakespeare.json"
    if path.exists():
        tok = BPETokenizer.load(path)
        if tok.vocab_size == vocab_size:
            return tok
    start = time.perf_counter()
    tok = BPETokenizer.train(train_text, vocab_size, [SPECIAL])
    print(f"trained BPE ({vocab_size}) in {time.perf_counter() - start:.1f} s")
    tok.save(path)
    return tok


def char_bpb(val_text: str) -> float:
    """Bits per byte of chapter 8's character model (book/data/shakespeare_lm.pt)."""
    model = load_language_model(DATA / "shakespeare_lm.pt")
    tokenizer = CharTokenizer(model.extra["alphabet"])  # ids 0, 1, 2 are PAD, BOS, EOS
    ids = torch.tensor(tokenizer.encode(val_text))
    token_bytes = torch.tensor([len(tokenizer.itos.get(i, "").encode())
                                for i in range(tokenizer.vocab_size)])
    return bits_per_byte(model, ids, token_bytes, model.max_len)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tokenizer", choices=["bpe", "char"], default="bpe")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rescore-char", action="store_true",
                   help="only recompute chapter 8's model's bits per byte in the saved JSON")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    train_text, val_text = split_text()
    val_text = val_text[:VAL_CHARS]
    if args.rescore_char:
        out_path = DATA / "modern_lm_bpe.json"
        result = json.loads(out_path.read_text())
        result["char_model_bits_per_byte"] = char_bpb(val_text)
        out_path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"chapter 8's char model: {result['char_model_bits_per_byte']:.3f} bits per byte")
        return
    if args.tokenizer == "bpe":
        tok = bpe_tokenizer(args.vocab_size, train_text)
        encode, vocab = tok.encode, tok.vocab_size
        token_bytes = torch.tensor([len(tok.vocab[i]) for i in range(vocab)])
    else:
        alphabet = "".join(sorted(set(train_text + val_text)))
        index = {c: i for i, c in enumerate(alphabet)}
        encode, vocab = (lambda s: [index[c] for c in s]), len(alphabet)
        token_bytes = torch.tensor([len(c.encode()) for c in alphabet])
    start = time.perf_counter()
    train_ids = torch.tensor(encode(train_text))
    val_ids = torch.tensor(encode(val_text))
    print(f"encoded in {time.perf_counter() - start:.1f} s: {len(train_text):,} characters -> "
          f"{len(train_ids):,} tokens ({len(train_text) / len(train_ids):.2f} characters/token)")

    torch.manual_seed(args.seed)
    config = ModernConfig(vocab_size=vocab, d_model=args.d_model, n_layers=args.layers,
                          n_heads=args.heads, n_kv_heads=args.kv_heads, tie_embeddings=True)
    model = ModernLM(config)
    print(f"{model.num_parameters():,} parameters")
    eval_x, eval_y = get_batch(val_ids, 64, args.length,
                               generator=torch.Generator().manual_seed(1234))

    @torch.no_grad()
    def evaluate(m: ModernLM) -> float:
        m.eval()
        return cross_entropy(m(eval_x), eval_y).item()

    def log(entry: dict) -> None:
        print(f"step {entry['step']:5d}  train {entry['loss']:.3f}  val {entry['val_loss']:.3f}  "
              f"{entry['seconds']:6.1f} s", flush=True)

    history = train_lm(model, train_ids, args.steps, args.batch_size, args.length, args.lr,
                       warmup=args.warmup, seed=args.seed, log_every=100, evaluate=evaluate,
                       log=log)
    seconds = history[-1]["seconds"]
    bpb = bits_per_byte(model, val_ids, token_bytes, args.length)
    result = {
        "command": f"nice -n 5 python scripts/train_modern_lm.py --tokenizer {args.tokenizer}",
        "args": vars(args), "config": model.to_dict(), "parameters": model.num_parameters(),
        "train_seconds": round(seconds, 1), "load_average": os.getloadavg(),
        "chars_per_token": len(train_text) / len(train_ids),
        "history": history, "bits_per_byte": bpb, "val_chars": len(val_text),
    }
    if args.tokenizer == "bpe":
        result["char_model_bits_per_byte"] = char_bpb(val_text)
        prompt = torch.tensor([tok.encode("ROMEO:\n")])
        out = model.generate(prompt, 120, temperature=0.8,
                             generator=torch.Generator().manual_seed(0))
        result["sample"] = tok.decode(out[0].tolist())
        print(result["sample"])
    print(f"bits per byte: {bpb:.3f}" + (f" (chapter 8's char model: "
          f"{result['char_model_bits_per_byte']:.3f})" if "char_model_bits_per_byte" in result
          else ""))
    out_path = DATA / f"modern_lm_{args.tokenizer}.json"
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()

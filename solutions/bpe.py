"""A byte-level BPE tokenizer (as in GPT-2), trained from scratch.

Training starts from the 256 single bytes and repeatedly merges the most
frequent adjacent pair of tokens into a new token, until the vocabulary has
``vocab_size`` entries:

1. The text is cut at special tokens (e.g. ``<|endoftext|>``), which are
   never split or merged.
2. Each piece is split into *pre-tokens* with GPT-2's regular expression
   (words with their leading space, numbers, punctuation runs, whitespace):
   merges never cross a pre-token.
3. Identical pre-tokens are counted once (a few MB of text has only tens of
   thousands of distinct ones), and the counts of adjacent pairs are kept up
   to date incrementally: a merge only touches the pre-tokens that contain
   the merged pair.
4. Ties between equally frequent pairs go to the lexicographically greater
   pair of byte strings (the rule of Stanford CS336's assignment 1).

Encoding applies the merges in the order they were learned, inside each
pre-token.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import regex

__all__ = [
    "GPT2_PATTERN",
    "merge_pair",
    "pretokenize",
    "train_bpe",
    "BPETokenizer",
]

#: GPT-2's pre-tokenisation pattern (needs the ``regex`` package for \p{L}
#: and \p{N}).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_PRETOKEN = regex.compile(GPT2_PATTERN)


def merge_pair(
    ids: list[int], pair: tuple[int, int], new_id: int
) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids``, left to right and
    without overlaps, by ``new_id``, in a new list (``ids`` is left as it
    was): merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _special_splitter(
    special_tokens: Iterable[str],
) -> regex.Pattern | None:
    # Longest first, so that a special token that contains another one wins.
    specials = sorted(special_tokens, key=len, reverse=True)
    return (
        regex.compile(
            "(" + "|".join(regex.escape(s) for s in specials) + ")"
        )
        if specials
        else None
    )


def pretokenize(
    text: str, special_tokens: Iterable[str] = ()
) -> Counter[str]:
    """Counts of the pre-tokens of ``text``; special tokens are cut out and
    not counted."""
    splitter = _special_splitter(special_tokens)
    pieces = (
        splitter.split(text)[::2] if splitter else [text]
    )  # drop the specials themselves
    counts: Counter[str] = Counter()
    for piece in pieces:
        counts.update(_PRETOKEN.findall(piece))
    return counts


def train_bpe(
    text: str, vocab_size: int, special_tokens: Iterable[str] = ()
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Learn a byte-level BPE vocabulary of ``vocab_size`` entries from
    ``text``.

    Returns ``vocab`` (id -> bytes: 0..255 are the bytes, then one id per
    merge, then the special tokens) and ``merges``, the merged pairs of byte
    strings in order.
    """
    special_tokens = list(dict.fromkeys(special_tokens))
    num_merges = vocab_size - 256 - len(special_tokens)
    if num_merges < 0:
        raise ValueError(
            f"vocab_size {vocab_size} < 256 bytes + "
            f"{len(special_tokens)} specials"
        )
    vocab = {i: bytes([i]) for i in range(256)}
    counts = pretokenize(text, special_tokens)
    words = [
        list(word.encode("utf-8")) for word in counts
    ]  # distinct pre-tokens as ids
    freqs = list(counts.values())

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(
        set
    )  # pair -> words that have it
    for w, (ids, freq) in enumerate(zip(words, freqs)):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += freq
            where[pair].add(w)

    merges: list[tuple[bytes, bytes]] = []
    for _ in range(num_merges):
        if not pair_counts:
            # every pre-token is a single token: nothing left to merge
            break
        top = max(pair_counts.values())
        best = max(
            (p for p, c in pair_counts.items() if c == top),
            key=lambda p: (vocab[p[0]], vocab[p[1]]),
        )
        new_id = len(vocab)
        vocab[new_id] = vocab[best[0]] + vocab[best[1]]
        merges.append((vocab[best[0]], vocab[best[1]]))
        for w in where.pop(best):
            old = words[w]
            new = merge_pair(old, best, new_id)
            if len(new) == len(old):
                # a stale entry: an earlier merge took the pair out of this
                # word
                continue
            freq = freqs[w]
            for pair in zip(
                old, old[1:]
            ):  # take the word's old pairs out ...
                pair_counts[pair] -= freq
                if not pair_counts[pair]:
                    del pair_counts[pair]
            for pair in zip(new, new[1:]):  # ... and its new pairs in
                pair_counts[pair] += freq
                if (
                    new_id in pair
                ):  # the other pairs were in the old word: w is listed
                    where[pair].add(w)
            words[w] = new
        pair_counts.pop(best, None)
    for token in special_tokens:
        vocab[len(vocab)] = token.encode("utf-8")
    return vocab, merges


class BPETokenizer:
    """Encode text to ids and back with a trained vocabulary and merge list.

    Args:
        vocab: id -> bytes.
        merges: merged pairs of byte strings, in the order they were
            learned.
        special_tokens: strings that always become their own single id
            (added to the vocabulary if missing).
    """

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[bytes, bytes]],
        special_tokens: Iterable[str] | None = None,
    ):
        self.vocab = dict(vocab)
        self.merges = list(merges)
        self.special_tokens = list(dict.fromkeys(special_tokens or ()))
        self.id_of = {
            b: i for i, b in sorted(self.vocab.items(), reverse=True)
        }  # first wins
        for token in self.special_tokens:
            if token.encode("utf-8") not in self.id_of:
                self.vocab[len(self.vocab)] = token.encode("utf-8")
                self.id_of[token.encode("utf-8")] = len(self.vocab) - 1
        self.special_ids = {
            s: self.id_of[s.encode("utf-8")] for s in self.special_tokens
        }
        # (left id, right id) -> (rank, merged id): the lower the rank, the
        # earlier it applies.
        self.ranks = {
            (self.id_of[a], self.id_of[b]): (rank, self.id_of[a + b])
            for rank, (a, b) in enumerate(self.merges)
        }
        self._splitter = _special_splitter(self.special_tokens)
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(
        cls, text: str, vocab_size: int, special_tokens: Iterable[str] = ()
    ) -> BPETokenizer:
        """Train on ``text`` with :func:`train_bpe`."""
        special_tokens = list(special_tokens)
        return cls(
            *train_bpe(text, vocab_size, special_tokens), special_tokens
        )

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _encode_pretoken(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is None:
            ids = list(word.encode("utf-8"))
            while len(ids) >= 2:
                # The pair that was merged earliest in training goes first.
                pair = min(
                    zip(ids, ids[1:]),
                    key=lambda p: self.ranks.get(p, (1 << 62,))[0],
                )
                if pair not in self.ranks:
                    break
                ids = merge_pair(ids, pair, self.ranks[pair][1])
            self._cache[word] = ids
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        out: list[int] = []
        for word in _PRETOKEN.findall(text):
            out.extend(self._encode_pretoken(word))
        return out

    def encode(self, text: str) -> list[int]:
        """Text -> token ids. Special tokens become their own id and are
        never split."""
        if self._splitter is None:
            return self._encode_ordinary(text)
        out: list[int] = []
        for i, piece in enumerate(self._splitter.split(text)):
            if (
                i % 2
            ):  # odd pieces are the special tokens matched by the splitter
                out.append(self.special_ids[piece])
            elif piece:
                out.extend(self._encode_ordinary(piece))
        return out

    def encode_iterable(self, chunks: Iterable[str]) -> Iterator[int]:
        """Encode a stream of strings (e.g. the lines of a large file)
        lazily, with the same ids as ``encode("".join(chunks))``.

        Text is held back until it can no longer change: the end of the
        buffer that could begin a special token, and the last pre-tokens (a
        pre-token's extent can depend on up to 3 following characters, e.g.
        ``'l`` vs ``'ll``).
        """
        buffer = ""
        for chunk in chunks:
            buffer += chunk
            hold = self._partial_special(buffer)
            ready, tail = (
                buffer[: len(buffer) - hold],
                buffer[len(buffer) - hold :],
            )
            pieces = (
                self._splitter.split(ready) if self._splitter else [ready]
            )
            # Everything up to the last special token is final.
            for i, piece in enumerate(pieces[:-1]):
                if i % 2:
                    yield self.special_ids[piece]
                else:
                    yield from self._encode_ordinary(piece)
            last = pieces[-1]
            matches = list(_PRETOKEN.finditer(last))
            cut = len(last)
            for m in reversed(matches):
                if m is matches[-1] or m.end() > len(last) - 4:
                    cut = m.start()  # may still change: keep it
                else:
                    break
            for m in matches:
                if m.end() > cut:
                    break
                yield from self._encode_pretoken(m.group())
            buffer = last[cut:] + tail
        yield from self.encode(buffer)

    def _partial_special(self, text: str) -> int:
        """Length of the longest end of ``text`` that is a proper prefix of
        a special token."""
        best = 0
        for token in self.special_tokens:
            for n in range(min(len(token) - 1, len(text)), best, -1):
                if text.endswith(token[:n]):
                    best = n
                    break
        return best

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text. Byte sequences that are not valid UTF-8 (a
        multi-byte character cut between tokens) become U+FFFD."""
        return b"".join(self.vocab[int(i)] for i in ids).decode(
            "utf-8", errors="replace"
        )

    def to_dict(self) -> dict:
        """The vocabulary, merges and special tokens as plain JSON values
        (bytes in hex); :meth:`from_dict` reads them back."""
        return {
            "vocab": {str(i): b.hex() for i, b in self.vocab.items()},
            "merges": [[a.hex(), b.hex()] for a, b in self.merges],
            "special_tokens": self.special_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict) -> BPETokenizer:
        """The tokenizer :meth:`to_dict` described."""
        vocab = {int(i): bytes.fromhex(h) for i, h in data["vocab"].items()}
        merges = [
            (bytes.fromhex(a), bytes.fromhex(b)) for a, b in data["merges"]
        ]
        return cls(vocab, merges, data["special_tokens"])

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON."""
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read a tokenizer written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def mergeable_ranks(self) -> dict[bytes, int]:
        """Bytes -> id of every ordinary token: what ``tiktoken.Encoding``
        calls ``mergeable_ranks`` (there, the id is also the merge
        priority)."""
        specials = set(self.special_ids.values())
        return {b: i for i, b in self.vocab.items() if i not in specials}

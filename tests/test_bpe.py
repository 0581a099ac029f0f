"""The byte-level BPE tokenizer (solutions/bpe.py): a slow textbook trainer as the reference for
the fast one, round trips on arbitrary Unicode, and tiktoken given our own merge ranks."""

from __future__ import annotations

import functools
from collections import Counter

import regex
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from solutions.bpe import GPT2_PATTERN, BPETokenizer, merge_pair, train_bpe
from solutions.corpus import shakespeare_text

SPECIAL = "<|endoftext|>"


def slow_train_bpe(text: str, vocab_size: int, special_tokens=()):
    """The definition, recounting every pair of every pre-token after each merge."""
    pieces = regex.split("|".join(regex.escape(s) for s in special_tokens), text) \
        if special_tokens else [text]
    words = Counter(tuple(bytes([b]) for b in w.encode())
                    for p in pieces for w in regex.findall(GPT2_PATTERN, p))
    merges = []
    while 256 + len(merges) + len(special_tokens) < vocab_size:
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))  # ties: lexicographically greater
        merges.append(best)
        new_words = Counter()
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += n
        words = new_words
    return merges


@functools.cache
def sample_text() -> str:
    return shakespeare_text(60_000)


@functools.cache
def trained() -> BPETokenizer:
    text = sample_text()
    half = len(text) // 2
    return BPETokenizer.train(text[:half] + SPECIAL + text[half:], 400, [SPECIAL])


def test_merge_pair():
    assert merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]
    assert merge_pair([5, 1, 2, 1, 2, 2], (1, 2), 7) == [5, 7, 7, 2]
    assert merge_pair([1], (1, 2), 7) == [1]


def test_fast_training_equals_the_definition():
    text = sample_text()[:20_000] + SPECIAL + "héllo wörld, ça va? 123 4567 naïve " * 5
    vocab, merges = train_bpe(text, 350, [SPECIAL])
    assert merges == slow_train_bpe(text, 350, [SPECIAL])
    assert len(vocab) == 350 and vocab[349] == SPECIAL.encode()
    assert all(vocab[256 + i] == a + b for i, (a, b) in enumerate(merges))


def test_ties_go_to_the_lexicographically_greater_pair():
    # "ab" and "cd" each appear twice: the greater pair (c, d) is merged first.
    _, merges = train_bpe("ab cd ab cd", 258)
    assert merges[0] == (b"c", b"d")


def test_special_tokens_are_never_split_or_merged():
    tok = trained()
    special_id = tok.special_ids[SPECIAL]
    assert all(SPECIAL.encode() not in tok.vocab[i] or i == special_id for i in tok.vocab)
    ids = tok.encode(f"ROMEO:{SPECIAL}{SPECIAL}Hi")
    assert ids.count(special_id) == 2
    assert tok.decode(ids) == f"ROMEO:{SPECIAL}{SPECIAL}Hi"
    overlapping = BPETokenizer(tok.vocab, tok.merges, [SPECIAL, SPECIAL + SPECIAL])
    assert overlapping.encode(SPECIAL * 2) == [overlapping.special_ids[SPECIAL * 2]]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_round_trip_on_arbitrary_unicode(text):
    tok = trained()
    assert tok.decode(tok.encode(text)) == text


def tiktoken_encoding(tok: BPETokenizer) -> tiktoken.Encoding:
    return tiktoken.Encoding(name="ours", pat_str=GPT2_PATTERN,
                             mergeable_ranks=tok.mergeable_ranks(),
                             special_tokens=tok.special_ids)


def test_agrees_with_tiktoken_given_our_ranks():
    tok = trained()
    enc = tiktoken_encoding(tok)
    text = shakespeare_text(120_000)[60_000:] + f" {SPECIAL} naïve café 日本語 🙂 it's 1234"
    assert tok.encode(text) == enc.encode(text, allowed_special="all")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(list("ab c'l\n\t1é🙂") + [SPECIAL, "<|end"]), max_size=40))
def test_agrees_with_tiktoken_on_random_text(pieces):
    tok = trained()
    text = "".join(pieces)
    assert tok.encode(text) == tiktoken_encoding(tok).encode(text, allowed_special="all")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(list("ab c'ls\n 1") + ["<|", SPECIAL]), max_size=50),
       st.lists(st.integers(0, 80), max_size=8))
def test_encode_iterable_equals_encode_for_any_chunking(pieces, cuts):
    tok = trained()
    text = "".join(pieces)
    cuts = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    assert list(tok.encode_iterable(chunks)) == tok.encode(text)


def test_encode_iterable_on_lines_of_a_file(tmp_path):
    tok = trained()
    path = tmp_path / "text.txt"
    text = shakespeare_text(30_000)
    path.write_text(text)
    with open(path) as f:
        assert list(tok.encode_iterable(f)) == tok.encode(text)


def test_save_and_load(tmp_path):
    tok = trained()
    tok.save(tmp_path / "bpe.json")
    loaded = BPETokenizer.load(tmp_path / "bpe.json")
    assert loaded.vocab == tok.vocab and loaded.merges == tok.merges
    assert loaded.special_tokens == [SPECIAL]
    text = sample_text()[:2000] + SPECIAL
    assert loaded.encode(text) == tok.encode(text)

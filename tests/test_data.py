"""Tests for solutions/data.py: determinism, tokenizers, the date task and batching."""

from __future__ import annotations

import datetime as dt
import random
import re

import pytest
import torch

from solutions.data import (
    BOS,
    DATE_FORMATS,
    DATE_SOURCE_ALPHABET,
    DATE_TARGET_ALPHABET,
    EOS,
    FIRST_DATE,
    LAST_DATE,
    PAD,
    Batch,
    CharTokenizer,
    batches_by_length,
    copy_task,
    date_split,
    date_task,
    date_tokenizers,
    encode_date_pairs,
    make_batch,
    pad_sequences,
    padding_fraction,
    reversal_task,
)


def same_pairs(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(s1, s2) and torch.equal(t1, t2) for (s1, t1), (s2, t2) in zip(a, b)
    )


# --- special ids and tokenizer -----------------------------------------------------------------


def test_special_ids():
    assert (PAD, BOS, EOS) == (0, 1, 2)


def test_tokenizer_ids_and_round_trip():
    tok = CharTokenizer("abc ")
    assert tok.vocab_size == 7
    assert tok.encode("ab c") == [3, 4, 6, 5]
    ids = tok.encode("cab", add_bos=True, add_eos=True)
    assert ids == [BOS, 5, 3, 4, EOS]
    assert tok.decode(ids) == "cab"
    assert tok.decode(torch.tensor(ids + [PAD, PAD])) == "cab"
    assert tok.decode([BOS, 3, EOS, 4, 5]) == "a"  # stops at the first EOS
    assert tok.decode([3, PAD, 4]) == "ab"  # PAD skipped
    assert "vocab_size=7" in repr(tok)


def test_tokenizer_round_trip_on_dates():
    src_tok, tgt_tok = date_tokenizers()
    assert src_tok.vocab_size == 3 + len(DATE_SOURCE_ALPHABET)
    assert tgt_tok.vocab_size == 3 + len(DATE_TARGET_ALPHABET)
    for src, tgt in date_task(500, seed=3):
        assert src_tok.decode(src_tok.encode(src, add_eos=True)) == src
        assert tgt_tok.decode(tgt_tok.encode(tgt, add_bos=True, add_eos=True)) == tgt


def test_tokenizer_errors():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("abz")
    with pytest.raises(ValueError):
        tok.decode([99])
    with pytest.raises(ValueError):
        CharTokenizer("aba")


# --- copy and reversal ------------------------------------------------------------------------


@pytest.mark.parametrize("task", [copy_task, reversal_task])
def test_symbol_tasks_deterministic_per_seed(task):
    assert same_pairs(task(50, seed=7), task(50, seed=7))
    assert not same_pairs(task(50, seed=7), task(50, seed=8))


def test_copy_task_values():
    pairs = copy_task(200, vocab_size=11, length=10, seed=0)
    assert len(pairs) == 200
    for src, tgt in pairs:
        assert src.dtype == tgt.dtype == torch.long
        assert src.shape == (10,) and tgt.shape == (12,)
        assert tgt[0] == BOS and tgt[-1] == EOS
        assert torch.equal(tgt[1:-1], src)
    symbols = torch.cat([s for s, _ in pairs])
    assert set(symbols.tolist()) == set(range(3, 11))  # every ordinary symbol, no special one


def test_reversal_task_values():
    for (src, tgt), (csrc, _) in zip(
        reversal_task(50, length=7, seed=1), copy_task(50, length=7, seed=1)
    ):
        assert torch.equal(src, csrc)  # same sources as the copy task for the same seed
        assert tgt.tolist() == [BOS, *reversed(src.tolist()), EOS]


# --- date task --------------------------------------------------------------------------------

MONTH_PREFIXES = [
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
]
WEEKDAY_PREFIXES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def parse_source(text: str) -> tuple[dt.date, int | None]:
    """An independent parser for the date sources: (date, weekday index or None)."""
    tokens = re.findall(r"\d+|[a-z]+", text.lower())
    numbers = [t for t in tokens if t.isdigit()]
    words = [t for t in tokens if t.isalpha()]
    months = [MONTH_PREFIXES.index(w[:3]) + 1 for w in words if w[:3] in MONTH_PREFIXES]
    weekdays = [WEEKDAY_PREFIXES.index(w[:3]) for w in words if w[:3] in WEEKDAY_PREFIXES]
    assert len(months) <= 1 and len(weekdays) <= 1, text
    year = [n for n in numbers if len(n) == 4]
    assert len(year) == 1, text
    numbers.remove(year[0])
    if months:  # month by name: the one remaining number is the day
        (day,) = numbers
        month = months[0]
    else:  # numeric formats are always year, month, day
        assert tokens.index(year[0]) == 0, text
        month, day = numbers
    date = dt.date(int(year[0]), int(month), int(day))
    return date, (weekdays[0] if weekdays else None)


def test_date_task_deterministic_per_seed():
    assert date_task(200, seed=5) == date_task(200, seed=5)
    assert date_task(200, seed=5) != date_task(200, seed=6)
    assert date_task(200, seed=5, split="test") != date_task(200, seed=5)


def test_date_targets_match_sources_and_weekdays():
    pairs = date_task(3000, seed=11) + date_task(1000, seed=11, split="test")
    with_weekday = 0
    for src, tgt in pairs:
        assert set(src) <= set(DATE_SOURCE_ALPHABET) and set(tgt) <= set(DATE_TARGET_ALPHABET)
        date, weekday = parse_source(src)
        assert tgt == date.isoformat(), (src, tgt)
        assert FIRST_DATE <= date <= LAST_DATE
        if weekday is not None:
            with_weekday += 1
            assert weekday == date.weekday(), (src, tgt)
    assert with_weekday > 100


def test_weekday_formats_parse_back_with_datetime():
    """strptime re-checks the weekday (%A / %a) against the date for the title-case formats."""
    checks = {
        "weekday_d_month_yyyy": "%A, %d %B %Y",
        "wkd_d_month_yyyy": "%a %d %B %Y",
    }
    for src, tgt in date_task(300, seed=2, formats=list(checks)):
        name = "weekday_d_month_yyyy" if "," in src else "wkd_d_month_yyyy"
        parsed = dt.datetime.strptime(src, checks[name]).date()
        assert parsed.isoformat() == tgt
        assert parsed.strftime("%A")[:3] == src[:3]


def test_every_format_appears_and_regenerates_the_source():
    assert len(DATE_FORMATS) >= 12
    used = set()
    for src, tgt in date_task(2000, seed=0):
        date = dt.date.fromisoformat(tgt)
        matches = {name for name, fmt in DATE_FORMATS.items() if fmt(date) == src}
        assert matches, src  # the source is exactly one of the formats applied to the target date
        used |= matches
    assert used == set(DATE_FORMATS)
    # upper, lower and title case all occur
    sources = [s for s, _ in date_task(2000, seed=0)]
    assert any(s.isupper() for s in sources) and any(s.islower() for s in sources)
    assert any("March" in s for s in sources) and any(
        re.search(r"\d(st|nd|rd|th)\b", s) for s in sources
    )


def test_formats_restriction():
    pairs = date_task(100, seed=0, formats=["yyyy_mm_dd_slashes"])
    assert all(re.fullmatch(r"\d{4}/\d\d/\d\d", s) and s.replace("/", "-") == t for s, t in pairs)
    with pytest.raises(ValueError):
        date_task(10, formats=["nope"])
    with pytest.raises(ValueError):
        date_task(10, split="valid")


def test_train_test_disjoint_by_date():
    train = {t for _, t in date_task(20_000, seed=0, split="train")}
    test = {t for _, t in date_task(20_000, seed=1, split="test")}
    assert train.isdisjoint(test)
    assert all(date_split(dt.date.fromisoformat(t)) == "test" for t in test)
    # about 10% of all calendar dates are held out
    rng = random.Random(0)
    days = [FIRST_DATE + dt.timedelta(days=rng.randrange(73_049)) for _ in range(5000)]
    share = sum(date_split(d) == "test" for d in days) / len(days)
    assert 0.08 < share < 0.12
    # dates are spread over the whole range
    years = {int(t[:4]) for t in train}
    assert min(years) == 1900 and max(years) == 2099


def test_encode_date_pairs():
    src_tok, tgt_tok = date_tokenizers()
    pairs = date_task(20, seed=4)
    for (src_text, tgt_text), (src, tgt) in zip(pairs, encode_date_pairs(pairs, src_tok, tgt_tok)):
        assert src.dtype == tgt.dtype == torch.long
        assert len(src) == len(src_text) and BOS not in src and EOS not in src
        assert tgt[0] == BOS and tgt[-1] == EOS and len(tgt) == 12
        assert src_tok.decode(src) == src_text and tgt_tok.decode(tgt) == tgt_text


# --- batching ---------------------------------------------------------------------------------


def test_pad_sequences():
    out = pad_sequences([torch.tensor([5, 6, 7]), torch.tensor([8]), torch.tensor([9, 10])])
    assert out.dtype == torch.long
    assert out.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert pad_sequences([torch.tensor([4])], pad_id=-1).tolist() == [[4]]
    assert pad_sequences([torch.tensor([4, 5]), torch.tensor([3])], pad_id=-1).tolist() == [
        [4, 5],
        [3, -1],
    ]


def test_make_batch_shift_and_num_tokens():
    pairs = [
        (torch.tensor([3, 4, 5]), torch.tensor([BOS, 6, 7, 8, EOS])),
        (torch.tensor([9]), torch.tensor([BOS, 6, EOS])),
    ]
    b = make_batch(pairs)
    assert b.src.tolist() == [[3, 4, 5], [9, PAD, PAD]]
    assert b.tgt_in.tolist() == [[BOS, 6, 7, 8], [BOS, 6, EOS, PAD]]
    assert b.tgt_out.tolist() == [[6, 7, 8, EOS], [6, EOS, PAD, PAD]]
    assert b.num_tokens == 6
    moved = b.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.tgt_out, b.tgt_out)
    assert moved.num_tokens == b.num_tokens


def test_batches_by_length_cover_everything_and_are_deterministic():
    src_tok, tgt_tok = date_tokenizers()
    pairs = encode_date_pairs(date_task(1000, seed=0), src_tok, tgt_tok)
    batches = batches_by_length(pairs, batch_size=32, seed=3)
    assert len(batches) == 32  # 31 full batches and one of 8
    assert sorted(b.src.shape[0] for b in batches)[0] == 1000 - 31 * 32
    assert sum(b.num_tokens for b in batches) == sum(len(t) - 1 for _, t in pairs)
    # every source appears exactly once
    got = sorted(src_tok.decode(row) for b in batches for row in b.src)
    assert got == sorted(src_tok.decode(s) for s, _ in pairs)
    again = batches_by_length(pairs, batch_size=32, seed=3)
    assert all(
        torch.equal(a.src, b.src) and torch.equal(a.tgt_in, b.tgt_in)
        for a, b in zip(batches, again)
    )
    other = batches_by_length(pairs, batch_size=32, seed=4)
    assert any(not torch.equal(a.src, b.src) for a, b in zip(batches, other))


def test_batching_by_length_reduces_padding():
    src_tok, tgt_tok = date_tokenizers()
    pairs = encode_date_pairs(date_task(4000, seed=0), src_tok, tgt_tok)
    by_length = batches_by_length(pairs, batch_size=64, seed=0)
    shuffled = pairs[:]
    random.Random(0).shuffle(shuffled)
    at_random = [make_batch(shuffled[i : i + 64]) for i in range(0, len(shuffled), 64)]
    assert padding_fraction(at_random) > 0.2
    assert padding_fraction(by_length) < padding_fraction(at_random) / 5
    # copy-task sequences all have the same length: no padding at all
    assert padding_fraction(batches_by_length(copy_task(100), batch_size=16)) == 0.0

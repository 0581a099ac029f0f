"""Toy data for the course: tokenizers, tasks and length-aware batching.

Nothing here is downloaded. Every data set is generated from a seed, so the
same seed gives the same examples on every machine, and a test can check the
data the model was trained on.

Three sequence-to-sequence tasks of increasing difficulty:

* **Copy** (the toy task of The Annotated Transformer): the source is
  ``length`` random symbols, the target is the same symbols. A Transformer
  that learns it has learned to attend to the right source position, which
  makes it the first thing to try on a new implementation.
* **Reversal**: the target is the source backwards. Same vocabulary, but the
  alignment between source and target positions is no longer the identity.
* **Date normalisation**: a small "translation" task with real text. The
  source is a date written by a human in one of many formats, the target its
  ISO 8601 form::

      "Tuesday, 3 March 1998"   ->  "1998-03-03"
      "the 21st of july 1969"   ->  "1969-07-21"
      "04-JUL-2076"             ->  "2076-07-04"

  Train and test are split by the calendar date itself (a hash of its ISO
  string), so a date used for testing never appears in training, whatever
  the seeds.

All tasks share the special token ids ``PAD = 0``, ``BOS = 1`` (beginning of
sequence) and ``EOS = 2`` (end of sequence). Targets are always
``BOS ... EOS``; sources have neither.

Shapes use ``B`` for the batch size, ``S`` for the (padded) source length
and ``T`` for the (padded) target length minus one, i.e. the number of
decoder positions.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# padding: fills sequences up to the length of the longest one in a batch
PAD = 0
BOS = 1  # beginning of sequence: the first decoder input
# end of sequence: the model must learn to emit it to stop generating
EOS = 2
NUM_SPECIAL = 3  # ordinary symbols start at id 3

Pair = tuple[torch.Tensor, torch.Tensor]  # (src, tgt), two 1-D LongTensors


def _generator(seed: int) -> torch.Generator:
    """A CPU random generator: the same seed gives the same numbers on every
    machine."""
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------


class CharTokenizer:
    """Maps text to integer ids one character at a time.

    Ids 0, 1, 2 are PAD, BOS, EOS; the characters of ``alphabet`` get ids 3,
    4, 5, ... in order.

    >>> tok = CharTokenizer("abc")
    >>> tok.encode("cab", add_bos=True, add_eos=True)
    [1, 5, 3, 4, 2]
    >>> tok.decode([1, 5, 3, 4, 2, 0, 0])
    'cab'
    """

    def __init__(self, alphabet: str) -> None:
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(
                f"alphabet has repeated characters: {alphabet!r}"
            )
        self.alphabet = alphabet
        # string -> id
        self.stoi = {ch: i + NUM_SPECIAL for i, ch in enumerate(alphabet)}
        self.itos = {i: ch for ch, i in self.stoi.items()}  # id -> string

    @property
    def vocab_size(self) -> int:
        """Number of ids, special ones included: the size of the embedding
        table."""
        return NUM_SPECIAL + len(self.alphabet)

    def encode(
        self, text: str, add_bos: bool = False, add_eos: bool = False
    ) -> list[int]:
        """Text of ``n`` characters -> list of ``n`` ids (``+1`` for BOS,
        ``+1`` for EOS)."""
        ids = []
        for ch in text:
            if ch not in self.stoi:
                raise ValueError(
                    f"character {ch!r} is not in the alphabet "
                    f"{self.alphabet!r}"
                )
            ids.append(self.stoi[ch])
        return [BOS] * add_bos + ids + [EOS] * add_eos

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Ids (a list or a 1-D tensor) -> text. Skips PAD and BOS, stops at
        the first EOS."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(
                    "decode expects a 1-D tensor, got shape "
                    f"{tuple(ids.shape)}"
                )
            ids = ids.tolist()
        chars = []
        for i in ids:
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            if i not in self.itos:
                raise ValueError(
                    f"id {i} is outside the vocabulary (size "
                    f"{self.vocab_size})"
                )
            chars.append(self.itos[i])
        return "".join(chars)

    def __repr__(self) -> str:
        return (
            f"CharTokenizer(vocab_size={self.vocab_size}, "
            f"alphabet={self.alphabet!r})"
        )


# --------------------------------------------------------------------------
# Copy and reversal
# --------------------------------------------------------------------------


def _symbol_task(
    num_examples: int,
    vocab_size: int,
    length: int,
    seed: int,
    reverse: bool,
) -> list[Pair]:
    if vocab_size <= NUM_SPECIAL:
        raise ValueError(
            f"vocab_size must be > {NUM_SPECIAL} (ids 0..2 are special)"
        )
    g = _generator(seed)
    # (num_examples, length) symbols drawn uniformly from the ordinary ids
    # 3..vocab_size-1
    srcs = torch.randint(
        NUM_SPECIAL, vocab_size, (num_examples, length), generator=g
    )
    body = srcs.flip(1) if reverse else srcs
    bos = torch.full((num_examples, 1), BOS)
    eos = torch.full((num_examples, 1), EOS)
    tgts = torch.cat([bos, body, eos], dim=1)  # (num_examples, length + 2)
    return list(zip(srcs.unbind(0), tgts.unbind(0)))


def copy_task(
    num_examples: int, vocab_size: int = 11, length: int = 10, seed: int = 0
) -> list[Pair]:
    """Random symbol sequences to be copied.

    Returns ``num_examples`` pairs ``(src, tgt)`` of 1-D LongTensors:
    ``src`` has shape ``(length,)`` with ids drawn uniformly from
    ``3..vocab_size-1``; ``tgt`` has shape ``(length + 2,)`` and is
    ``[BOS, *src, EOS]``.
    """
    return _symbol_task(
        num_examples, vocab_size, length, seed, reverse=False
    )


def reversal_task(
    num_examples: int, vocab_size: int = 11, length: int = 10, seed: int = 0
) -> list[Pair]:
    """Like :func:`copy_task`, but ``tgt`` is
    ``[BOS, *reversed(src), EOS]``."""
    return _symbol_task(
        num_examples, vocab_size, length, seed, reverse=True
    )


# --------------------------------------------------------------------------
# Date normalisation
# --------------------------------------------------------------------------

FIRST_DATE = dt.date(1900, 1, 1)
LAST_DATE = dt.date(2099, 12, 31)
# about this share of calendar dates is held out for testing
TEST_FRACTION = 0.1

# Written out rather than taken from strftime, whose names depend on the
# machine's locale.
MONTHS = ("January", "February", "March", "April", "May", "June", "July",
          "August", "September", "October", "November",
          "December")  # fmt: skip
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
            "Saturday", "Sunday")  # fmt: skip

DATE_SOURCE_ALPHABET = (
    " ,-./0123456789" + string.ascii_lowercase + string.ascii_uppercase
)
DATE_TARGET_ALPHABET = "-0123456789"


def ordinal(n: int) -> str:
    """1 -> '1st', 2 -> '2nd', 3 -> '3rd', 4 -> '4th', 11 -> '11th',
    22 -> '22nd', ..."""
    if 11 <= n % 100 <= 13:
        return f"{n}th"
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _parts(d: dt.date) -> dict[str, str]:
    """The pieces that the formats below are assembled from, for one
    date."""
    month, weekday = MONTHS[d.month - 1], WEEKDAYS[d.weekday()]
    return {
        "Weekday": weekday,  # Tuesday
        "Wkd": weekday[:3],  # Tue
        "Month": month,  # March
        "Mon": month[:3],  # Mar
        "d": str(d.day),  # 3
        "dd": f"{d.day:02d}",  # 03
        "mm": f"{d.month:02d}",  # 03
        "nth": ordinal(d.day),  # 3rd
        "yyyy": f"{d.year:04d}",  # 1998
    }


def _fmt(template: str, case: str = "title") -> Callable[[dt.date], str]:
    """A formatter: fills ``template`` with the parts of a date, then
    applies ``case``."""
    change_case = {"title": str, "upper": str.upper, "lower": str.lower}[
        case
    ]
    return lambda d: change_case(template.format(**_parts(d)))


# Every format names the month (by name, or numerically after a 4-digit
# year: year/month/day), so no string is ambiguous the way 03/04/1998 is.
# Examples are for 1998-03-03, a Tuesday.
DATE_FORMATS: dict[str, Callable[[dt.date], str]] = {
    # Tuesday, 3 March 1998
    "weekday_d_month_yyyy": _fmt("{Weekday}, {d} {Month} {yyyy}"),
    # Tue 3 March 1998
    "wkd_d_month_yyyy": _fmt("{Wkd} {d} {Month} {yyyy}"),
    # Tuesday, March 3rd, 1998
    "weekday_month_nth_yyyy": _fmt("{Weekday}, {Month} {nth}, {yyyy}"),
    "d_month_yyyy": _fmt("{d} {Month} {yyyy}"),  # 3 March 1998
    "d_mon_yyyy": _fmt("{d} {Mon} {yyyy}"),  # 3 Mar 1998
    "month_d_yyyy": _fmt("{Month} {d}, {yyyy}"),  # March 3, 1998
    "mon_d_yyyy": _fmt("{Mon} {d}, {yyyy}"),  # Mar 3, 1998
    "nth_month_yyyy": _fmt("{nth} {Month} {yyyy}"),  # 3rd March 1998
    # the 3rd of March 1998
    "the_nth_of_month_yyyy": _fmt("the {nth} of {Month} {yyyy}"),
    "dd_mon_yyyy_dashes": _fmt("{dd}-{Mon}-{yyyy}"),  # 03-Mar-1998
    "yyyy_mm_dd_slashes": _fmt("{yyyy}/{mm}/{dd}"),  # 1998/03/03
    "yyyy_mm_dd_dots": _fmt("{yyyy}.{mm}.{dd}"),  # 1998.03.03
    # 3 MARCH 1998
    "upper_d_month_yyyy": _fmt("{d} {Month} {yyyy}", "upper"),
    # TUE 3 MAR 1998
    "upper_wkd_d_mon_yyyy": _fmt("{Wkd} {d} {Mon} {yyyy}", "upper"),
    # 03-MAR-1998
    "upper_dd_mon_yyyy_dashes": _fmt("{dd}-{Mon}-{yyyy}", "upper"),
    # 3 march 1998
    "lower_d_month_yyyy": _fmt("{d} {Month} {yyyy}", "lower"),
    # march 3rd, 1998
    "lower_month_nth_yyyy": _fmt("{Month} {nth}, {yyyy}", "lower"),
    "lower_weekday_month_d_yyyy": _fmt(
        "{Weekday}, {Month} {d}, {yyyy}", "lower"
    ),
    # tuesday, march 3, 1998
}


def date_split(d: dt.date) -> str:
    """'test' for about 10% of calendar dates, 'train' for the rest; fixed
    forever.

    The split depends only on the date (a SHA-256 hash of its ISO string),
    not on any seed, so a held-out date can never leak into a training set.
    """
    digest = hashlib.sha256(d.isoformat().encode("ascii")).digest()
    # uniform in [0, 1)
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if fraction < TEST_FRACTION else "train"


@functools.lru_cache(maxsize=2)
def _split_ordinals(split: str) -> tuple[int, ...]:
    """The day numbers (``date.toordinal()``) of every date in the range
    that is in ``split``."""
    days = range(FIRST_DATE.toordinal(), LAST_DATE.toordinal() + 1)
    return tuple(
        n for n in days if date_split(dt.date.fromordinal(n)) == split
    )


def date_task(
    num_examples: int,
    seed: int = 0,
    split: str = "train",
    formats: Sequence[str] | None = None,
) -> list[tuple[str, str]]:
    """Pairs ``(source_text, target_text)`` such as
    ``("Tuesday, 3 March 1998", "1998-03-03")``.

    Dates are drawn uniformly from the dates of ``split`` ("train" or
    "test") between 1900-01-01 and 2099-12-31; each is written in a format
    drawn uniformly from ``formats`` (default: all of ``DATE_FORMATS``).
    Restricting ``formats`` makes it possible to test whether a model
    generalises to formats it was not trained on.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    names = list(DATE_FORMATS) if formats is None else list(formats)
    unknown = [name for name in names if name not in DATE_FORMATS]
    if not names or unknown:
        raise ValueError(
            f"unknown or no formats {unknown}; choose from "
            f"{list(DATE_FORMATS)}"
        )
    days = _split_ordinals(split)
    g = _generator(seed)
    day_idx = torch.randint(
        len(days), (num_examples,), generator=g
    ).tolist()
    fmt_idx = torch.randint(
        len(names), (num_examples,), generator=g
    ).tolist()
    pairs = []
    for i, f in zip(day_idx, fmt_idx):
        d = dt.date.fromordinal(days[i])
        pairs.append((DATE_FORMATS[names[f]](d), d.isoformat()))
    return pairs


def date_tokenizers() -> tuple[CharTokenizer, CharTokenizer]:
    """``(src_tok, tgt_tok)`` for the date task (vocabulary sizes 70 and
    14)."""
    return CharTokenizer(DATE_SOURCE_ALPHABET), CharTokenizer(
        DATE_TARGET_ALPHABET
    )


def encode_date_pairs(
    pairs: Sequence[tuple[str, str]],
    src_tok: CharTokenizer,
    tgt_tok: CharTokenizer,
) -> list[Pair]:
    """Text pairs -> id pairs ``(src, tgt)`` of 1-D LongTensors.

    ``src`` has one id per character and no BOS/EOS: the encoder sees the
    whole source at once, and padding is masked, so it needs no markers.
    ``tgt`` is ``[BOS, *chars, EOS]`` (12 ids for an ISO date): BOS starts
    generation and EOS tells the decoder when to stop.
    """
    return [
        (
            torch.tensor(src_tok.encode(src), dtype=torch.long),
            torch.tensor(
                tgt_tok.encode(tgt, add_bos=True, add_eos=True),
                dtype=torch.long,
            ),
        )
        for src, tgt in pairs
    ]


# --------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------


def pad_sequences(
    seqs: Sequence[torch.Tensor], pad_id: int = PAD
) -> torch.Tensor:
    """Stack ``B`` 1-D sequences of different lengths into a LongTensor of
    shape ``(B, max_len)``.

    Shorter sequences are filled on the right with ``pad_id``.
    """
    if len(seqs) == 0:
        raise ValueError("pad_sequences needs at least one sequence")
    seqs = [
        s
        if isinstance(s, torch.Tensor) and s.dtype == torch.long
        else torch.as_tensor(s, dtype=torch.long)
        for s in seqs
    ]
    lengths = torch.tensor([s.numel() for s in seqs])  # (B,)
    out = torch.full(
        (len(seqs), int(lengths.max())), pad_id, dtype=torch.long
    )
    # One copy of all tokens into the (B, max_len) positions before each
    # row's length (row by row in order), instead of one small copy per
    # sequence.
    out[torch.arange(out.shape[1]) < lengths[:, None]] = torch.cat(seqs)
    return out


@dataclass
class Batch:
    """A padded batch for teacher forcing.

    For a target ``[BOS, a, b, c, EOS]`` the decoder reads
    ``tgt_in = [BOS, a, b, c]`` and must predict
    ``tgt_out = [a, b, c, EOS]``: at every position, the next token.

    Attributes:
        src: ``(B, S)`` source ids, right-padded with PAD.
        tgt_in: ``(B, T)`` decoder inputs: the padded target without its
            last position.
        tgt_out: ``(B, T)`` decoder labels: the padded target without its
            first position (BOS).
        num_tokens: number of non-PAD entries of ``tgt_out``, the tokens the
            loss is averaged over.
    """

    src: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    num_tokens: int

    def to(self, device: torch.device | str) -> Batch:
        """A copy of the batch with its tensors on ``device``."""
        return Batch(
            self.src.to(device),
            self.tgt_in.to(device),
            self.tgt_out.to(device),
            self.num_tokens,
        )


def make_batch(pairs: Sequence[Pair]) -> Batch:
    """``B`` pairs ``(src, tgt)`` of 1-D LongTensors -> one padded
    :class:`Batch`."""
    src = pad_sequences([s for s, _ in pairs])  # (B, S)
    tgt = pad_sequences([t for _, t in pairs])  # (B, T + 1)
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]  # (B, T) each
    return Batch(
        src, tgt_in, tgt_out, num_tokens=int((tgt_out != PAD).sum())
    )


def batches_by_length(
    pairs: Sequence[Pair],
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    pool_batches: int = 50,
) -> list[Batch]:
    """Split ``pairs`` into batches of ``batch_size`` (the last may be
    smaller) of similar lengths.

    Why: every sequence in a batch is padded to the longest one, and the
    model computes on the padding just like on real tokens (attention even
    costs ``O(S^2)``). Putting a 10-character source next to a 35-character
    one wastes 25 positions of compute. Sorting by length before cutting
    batches keeps the padding, and the wasted compute, small.

    How: the pairs are shuffled, cut into pools of
    ``pool_batches * batch_size`` pairs, each pool is sorted by (source
    length, target length) and cut into batches, and finally the order of
    all batches is shuffled. Pools keep some randomness in which examples
    share a batch, and the final shuffle stops the model from seeing all
    short sequences first. With ``shuffle=False`` the input order is kept:
    pools are consecutive, batches stay in pool order. The result depends
    only on ``pairs``, ``batch_size``, ``pool_batches`` and ``seed``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    g = _generator(seed)
    order = (
        torch.randperm(len(pairs), generator=g).tolist()
        if shuffle
        else range(len(pairs))
    )
    items = [pairs[i] for i in order]
    pool_size = pool_batches * batch_size
    batches = []
    for start in range(0, len(items), pool_size):
        pool = sorted(
            items[start : start + pool_size],
            key=lambda p: (p[0].numel(), p[1].numel()),
        )
        for b in range(0, len(pool), batch_size):
            batches.append(make_batch(pool[b : b + batch_size]))
    if shuffle:
        batches = [
            batches[i]
            for i in torch.randperm(len(batches), generator=g).tolist()
        ]
    return batches


def padding_fraction(batches: Sequence[Batch]) -> float:
    """Share of PAD positions among all positions of ``src`` and
    ``tgt_out``, over all batches.

    0.0 means no compute is wasted on padding; 0.5 means half of it is.
    """
    pads = sum(
        int((b.src == PAD).sum()) + int((b.tgt_out == PAD).sum())
        for b in batches
    )
    total = sum(b.src.numel() + b.tgt_out.numel() for b in batches)
    return pads / total if total else 0.0

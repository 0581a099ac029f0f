"""Translation between real languages, generated offline: numbers and dates
in four languages.

No corpus can be downloaded here, but two well-kept packages write real
language:

* ``num2words`` writes numbers as words: cardinals, ordinals and amounts of
  money::

      97   en "ninety-seven"      fr "quatre-vingt-dix-sept"
           de "siebenundneunzig"  es "noventa y siete"

  German says the units before the tens ("sieben-und-neunzig",
  seven-and-ninety), so translating it from English needs reordering, not
  just a word-for-word lookup.
* ``babel`` (the Unicode CLDR data) writes full dates in each locale's own
  format::

      1998-03-03   en "Tuesday, March 3, 1998"   fr "mardi 3 mars 1998"
                   de "Dienstag, 3. März 1998"   es "martes, 3 de marzo de 1998"

An example is one *value* (a number, an amount, a date) written in two
languages. Train and test are split by value, with a hash that does not
depend on any seed, so a value held out for testing never occurs in
training, in any language or direction.

One model translates every direction: source and target share one subword
vocabulary (a byte-level BPE learnt from training phrases of all four
languages), and the source starts with a token naming the target language
(``<2de>`` = "to German"), the trick of Google's multilingual NMT (Johnson
et al., 2017). The source language is not named; the model recognises it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Sequence
from decimal import Decimal
from typing import NamedTuple

import torch
from babel.dates import format_date
from num2words import num2words

from .bpe import BPETokenizer
from .data import BOS, EOS, NUM_SPECIAL, PAD, Pair

LANGUAGES = ("en", "fr", "de", "es")
KINDS = ("cardinal", "ordinal", "currency", "date")
# about this share of the values of each kind is held out for testing
TEST_FRACTION = 0.1

# The values of each kind. Currency amounts are in cents: 101 is 1.01 euros;
# whole-euro amounts are left out because num2words writes them as
# "ninety-seven euro, zero cents".
FIRST_DATE, LAST_DATE = dt.date(1900, 1, 1), dt.date(2099, 12, 31)
VALUE_RANGES = {
    "cardinal": range(0, 1_000),
    "ordinal": range(1, 1_000),
    "currency": [
        cents for cents in range(101, 10_000) if cents % 100
    ],  # 1.01 .. 99.99 euros
    "date": range(
        FIRST_DATE.toordinal(), LAST_DATE.toordinal() + 1
    ),  # date.toordinal()
}

def phrase(kind: str, value: int, lang: str) -> str:
    """The value written in a language: ``phrase("cardinal", 97, "de") ==
    "siebenundneunzig"``.

    ``value`` is an integer for every kind: a number, an amount in cents, or
    a date's ``toordinal()``.
    """
    return _phrase(kind, int(value), lang)


@functools.cache
def _phrase(kind: str, value: int, lang: str) -> str:
    if lang not in LANGUAGES:
        raise ValueError(
            f"unknown language {lang!r}; choose from {LANGUAGES}"
        )
    if kind == "cardinal":
        return num2words(value, lang=lang)
    if kind == "ordinal":
        return num2words(value, lang=lang, to="ordinal")
    if kind == "currency":
        return num2words(
            Decimal(value) / 100, lang=lang, to="currency", currency="EUR"
        )
    if kind == "date":
        return format_date(
            dt.date.fromordinal(value), format="full", locale=lang
        )
    raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")


def value_split(kind: str, value: int) -> str:
    """'test' for about 10% of the values of each kind, 'train' for the
    rest; fixed forever.

    A SHA-256 hash of ``"kind:value"`` decides, so the split depends on no
    seed and no language: a held-out value is held out in every direction.
    """
    digest = hashlib.sha256(f"{kind}:{int(value)}".encode("ascii")).digest()
    fraction = (
        int.from_bytes(digest[:8], "big") / 2**64
    )  # uniform in [0, 1)
    return "test" if fraction < TEST_FRACTION else "train"


@functools.cache
def split_values(kind: str, split: str) -> tuple[int, ...]:
    """All values of ``kind`` in ``split`` ("train" or "test"), in
    increasing order."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return tuple(
        v for v in VALUE_RANGES[kind] if value_split(kind, v) == split
    )


def directions(
    languages: Sequence[str] = LANGUAGES,
) -> list[tuple[str, str]]:
    """Every ordered pair of different languages: 4 languages give 12
    directions."""
    return [(a, b) for a in languages for b in languages if a != b]


class Example(NamedTuple):
    """One parallel pair: ``value`` of ``kind`` written in ``src_lang``
    (``src``) and ``tgt_lang`` (``tgt``)."""

    src_lang: str
    tgt_lang: str
    kind: str
    value: int
    src: str
    tgt: str


def _example(
    src_lang: str, tgt_lang: str, kind: str, value: int
) -> Example:
    return Example(
        src_lang,
        tgt_lang,
        kind,
        value,
        phrase(kind, value, src_lang),
        phrase(kind, value, tgt_lang),
    )


def translation_task(
    num_examples: int,
    seed: int = 0,
    split: str = "train",
    languages: Sequence[str] = LANGUAGES,
    kinds: Sequence[str] = KINDS,
) -> list[Example]:
    """``num_examples`` random examples: direction, kind and value drawn
    uniformly (the value from the values of ``split``). The same arguments
    give the same examples on every machine."""
    pairs, kinds = directions(languages), list(kinds)
    values = {kind: split_values(kind, split) for kind in kinds}
    g = torch.Generator().manual_seed(seed)
    pair_idx = torch.randint(
        len(pairs), (num_examples,), generator=g
    ).tolist()
    kind_idx = torch.randint(
        len(kinds), (num_examples,), generator=g
    ).tolist()
    fractions = torch.rand(
        num_examples, generator=g, dtype=torch.float64
    ).tolist()
    examples = []
    for p, k, f in zip(pair_idx, kind_idx, fractions):
        kind = kinds[k]
        value = values[kind][int(f * len(values[kind]))]
        examples.append(_example(*pairs[p], kind, value))
    return examples


def translation_test_set(
    per_direction_and_kind: int,
    seed: int = 1,
    languages: Sequence[str] = LANGUAGES,
    kinds: Sequence[str] = KINDS,
) -> list[Example]:
    """A balanced held-out set: for every direction and kind,
    ``per_direction_and_kind`` distinct test values (the same values in
    every direction, so directions compare fairly)."""
    g = torch.Generator().manual_seed(seed)
    chosen = {}
    for kind in kinds:
        values = split_values(kind, "test")
        if per_direction_and_kind > len(values):
            raise ValueError(
                f"only {len(values)} test values of kind {kind!r}"
            )
        picks = torch.randperm(len(values), generator=g)[
            :per_direction_and_kind
        ]
        chosen[kind] = [values[i] for i in sorted(picks.tolist())]
    return [
        _example(a, b, kind, value)
        for a, b in directions(languages)
        for kind in kinds
        for value in chosen[kind]
    ]


class TranslationTokenizer:
    """One subword vocabulary for every language, plus a target-language
    token per language.

    The subwords are a byte-level BPE (:class:`solutions.bpe.BPETokenizer`)
    trained on the phrases of training examples only, in all four languages
    at once, so frequent pieces get one token each whatever their language:
    ``" hundred"``, ``"quatre"``, ``"sieben"``, ``"undneunzig"``. A phrase is
    3 to 10 tokens instead of 10 to 40 characters.

    Ids: 0, 1, 2 are PAD, BOS, EOS; 3 .. 3 + L - 1 are the language tokens,
    written ``<2en>``, ``<2fr>``, ... ("to English", "to French"); then the
    BPE's tokens, shifted by ``3 + L``. The source is ``[<2xx>, *subwords]``,
    the target ``[BOS, *subwords, EOS]``, both in the same vocabulary, so the
    model can share one embedding matrix between encoder, decoder and output
    layer.

    >>> tok = TranslationTokenizer.train()
    >>> tok.pieces(tok.encode_source("ninety-seven", "de"))
    ['<2de>', 'ninety', '-', 'seven']
    >>> tok.decode(tok.encode("siebenundneunzig", add_bos=True, add_eos=True))
    'siebenundneunzig'
    """

    def __init__(
        self, bpe: BPETokenizer, languages: Sequence[str] = LANGUAGES
    ) -> None:
        self.bpe = bpe
        self.languages = tuple(languages)
        self.lang_ids = {
            lang: NUM_SPECIAL + i for i, lang in enumerate(self.languages)
        }
        self.offset = NUM_SPECIAL + len(self.languages)  # of the BPE ids

    @classmethod
    def train(
        cls,
        vocab_size: int = 1000,
        num_examples: int = 20_000,
        languages: Sequence[str] = LANGUAGES,
    ) -> TranslationTokenizer:
        """Learn ``vocab_size - 3 - len(languages)`` BPE tokens (256 bytes
        and the merges) from the source and target phrases of
        ``num_examples`` training examples (``seed=0``). Held-out values
        never take part, so they are cut into pieces learned elsewhere.
        """
        examples = translation_task(
            num_examples, seed=0, languages=languages
        )
        text = "\n".join(p for ex in examples for p in (ex.src, ex.tgt))
        bpe = BPETokenizer.train(
            text, vocab_size - NUM_SPECIAL - len(languages)
        )
        return cls(bpe, languages)

    @property
    def vocab_size(self) -> int:
        return self.offset + self.bpe.vocab_size

    def encode(
        self, text: str, add_bos: bool = False, add_eos: bool = False
    ) -> list[int]:
        """Text -> subword ids (``+1`` for BOS, ``+1`` for EOS)."""
        ids = [i + self.offset for i in self.bpe.encode(text)]
        return [BOS] * add_bos + ids + [EOS] * add_eos

    def encode_source(self, text: str, tgt_lang: str) -> list[int]:
        """Source text -> ``[<2tgt_lang>, *subword ids]`` (no BOS/EOS: the
        encoder sees all)."""
        return [self.lang_ids[tgt_lang]] + self.encode(text)

    def pieces(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """The text of each id, one string per token (for plots and
        printing); special ids as ``<pad>``, ``<bos>``, ``<eos>``,
        ``<2xx>``."""
        names = {PAD: "<pad>", BOS: "<bos>", EOS: "<eos>"}
        names |= {i: f"<2{lang}>" for lang, i in self.lang_ids.items()}
        return [
            names[i] if i in names
            else self.bpe.vocab[i - self.offset].decode("utf-8", "replace")
            for i in torch.as_tensor(ids).tolist()
        ]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Ids (a list or a 1-D tensor) -> text. Skips PAD, BOS and language
        tokens, stops at the first EOS."""
        out = []
        for i in torch.as_tensor(ids).tolist():
            if not 0 <= i < self.vocab_size:
                raise ValueError(
                    f"id {i} is outside the vocabulary "
                    f"(size {self.vocab_size})"
                )
            if i == EOS:
                break
            if i >= self.offset:
                out.append(i - self.offset)
        return self.bpe.decode(out)

    def to_dict(self) -> dict:
        """Plain Python values that :meth:`from_dict` rebuilds this
        tokenizer from (saved with the model)."""
        return {"languages": list(self.languages), "bpe": self.bpe.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> TranslationTokenizer:
        """The tokenizer :meth:`to_dict` described."""
        return cls(BPETokenizer.from_dict(data["bpe"]), data["languages"])

    def __repr__(self) -> str:
        return (
            f"TranslationTokenizer(vocab_size={self.vocab_size}, "
            f"languages={self.languages})"
        )


def encode_examples(
    examples: Sequence[Example], tok: TranslationTokenizer
) -> list[Pair]:
    """Examples -> id pairs ``(src, tgt)``: src ``(1 + len(src),)`` starting
    with the target-language token, tgt ``(len(tgt) + 2,)`` =
    ``[BOS, *chars, EOS]``.
    """
    return [
        (
            torch.tensor(
                tok.encode_source(ex.src, ex.tgt_lang), dtype=torch.long
            ),
            torch.tensor(
                tok.encode(ex.tgt, add_bos=True, add_eos=True),
                dtype=torch.long,
            ),
        )
        for ex in examples
    ]

"""Checkers for chapter 3: TokenEmbedding.forward, sinusoidal_encoding,
SinusoidalPositionalEncoding.forward."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .ch02 import load, quiet
from .core import Checker, randn, register


def sinusoids(max_len: int, d_model: int, *, swap: bool = False, halves: bool = False,
              per_column: bool = False) -> Tensor:
    """The paper's table straight from its definition, computed in float64:

        PE[pos, 2i] = sin(pos / 10000^(2i / d_model)),  PE[pos, 2i+1] = cos(same angle).

    The keywords give the usual mistakes (for hints): sin and cos swapped, all sines then all
    cosines, or an exponent from each column's own index (j / d_model instead of 2i / d_model).
    """
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]
    column = torch.arange(d_model)
    pair = column if per_column else column - column % 2   # 2i for both columns of pair i
    angle = pos / torch.pow(10000.0, pair.double() / d_model)
    even = column % 2 == 0
    if halves:
        half = d_model // 2
        angle = pos / torch.pow(10000.0, 2 * (column % half).double() / d_model)
        even = column < half
    table = torch.where(even, torch.sin(angle), torch.cos(angle))
    if swap:
        table = torch.where(even, torch.cos(angle), torch.sin(angle))
    return table.float()


EMBED = "look the tokens up and scale by sqrt(d_model)"


@register
class TokenEmbeddingChecker(Checker):
    name = "TokenEmbedding.forward"

    def cases(self, gen, hidden):
        shapes = [(11, 8, 2, 5), (7, 4, 1, 6)]
        if hidden:
            shapes += [(50, 64, 3, 1), (5, 9, 2, 7), (2, 16, 4, 3)]
        cases = []
        for vocab, d_model, batch, length in shapes:
            tokens = torch.randint(0, vocab, (batch, length), generator=gen)
            cases.append({"requirement": EMBED, "tokens": tokens, "vocab_size": vocab,
                          "d_model": d_model, "w.embedding.weight": randn(gen, vocab, d_model)})
        return cases

    def run(self, obj, case):
        with quiet():
            module = load(obj(case["vocab_size"], case["d_model"]), case)
            return {"output": module(case["tokens"])}

    def expected(self, case):
        table = case["w.embedding.weight"]
        return {"output": F.embedding(case["tokens"], table) * math.sqrt(case["d_model"])}

    def mistakes(self, case):
        looked_up = F.embedding(case["tokens"], case["w.embedding.weight"])
        d = case["d_model"]
        return [
            ("scale the embeddings by sqrt(d_model) (section 3.4 of the paper).",
             {"output": looked_up}),
            ("scale by the square root of d_model, not by d_model.", {"output": looked_up * d}),
            ("multiply by sqrt(d_model); do not divide.", {"output": looked_up / math.sqrt(d)}),
        ]

    @property
    def oracle(self):
        return lambda self, tokens: (F.embedding(tokens, self.embedding.weight)
                                     * math.sqrt(self.d_model))


SIN_VALUES, SIN_ODD = ("sines in even columns, cosines in odd ones, wavelengths 2π … 10000·2π, "
                       "float32", "any d_model, odd too (the last column is a sine)")


@register
class SinusoidalEncodingChecker(Checker):
    name = "sinusoidal_encoding"
    # float32 angles pos / 10000^(2i/d) carry a relative rounding error of ~1e-7 whichever way
    # they are computed (exp/log, pow, a float64 table cast down), i.e. ~2e-5 absolute at
    # position 200, the largest tested; every usual mistake is off by O(1).
    atol = 1e-4

    def cases(self, gen, hidden):
        cases = [{"requirement": SIN_VALUES, "max_len": 10, "d_model": 8},
                 {"requirement": SIN_VALUES, "max_len": 50, "d_model": 16},
                 {"requirement": SIN_ODD, "max_len": 6, "d_model": 5}]
        if hidden:
            cases += [{"requirement": SIN_VALUES, "max_len": 1, "d_model": 4},
                      {"requirement": SIN_VALUES, "max_len": 200, "d_model": 64},
                      {"requirement": SIN_VALUES, "max_len": 7, "d_model": 2},
                      {"requirement": SIN_VALUES, "max_len": 30, "d_model": 6},
                      {"requirement": SIN_ODD, "max_len": 20, "d_model": 1},
                      {"requirement": SIN_ODD, "max_len": 40, "d_model": 13}]
        return cases

    def run(self, obj, case):
        return {"pe": obj(case["max_len"], case["d_model"])}

    def expected(self, case):
        return {"pe": sinusoids(case["max_len"], case["d_model"])}

    def mistakes(self, case):
        args = (case["max_len"], case["d_model"])
        return [
            ("sin and cos are swapped: sines go in the even columns (0, 2, 4, ...), cosines in "
             "the odd ones.", {"pe": sinusoids(*args, swap=True)}),
            ("sines and cosines must be interleaved: column 2i holds sin and column 2i+1 cos of "
             "the same angle, not all sines first and then all cosines.",
             {"pe": sinusoids(*args, halves=True)}),
            ("columns 2i and 2i+1 share one frequency, 1 / 10000^(2i / d_model): the exponent "
             "uses the even column's index for both.", {"pe": sinusoids(*args, per_column=True)}),
        ]

    def symptom(self, case, got):
        pe = got.get("pe")
        if isinstance(pe, Tensor) and pe.is_floating_point() and pe.dtype != torch.float32:
            return "return a float32 table (the default dtype), as the model's weights are."
        if (isinstance(pe, Tensor) and case["d_model"] % 2 and pe.dim() == 2
                and pe.shape[1] == case["d_model"] + 1):
            return ("with an odd d_model there is one more sine column than cosine columns: "
                    "the table keeps d_model columns.")
        return None

    @property
    def oracle(self):
        return sinusoids


POS_ADD, POS_OFFSET, POS_DTYPE = ("x plus the encodings of positions 0 … L − 1",
                                  "from position offset when one is given",
                                  "keeps x's dtype (bfloat16 in, bfloat16 out)")


@register
class SinusoidalPositionalEncodingChecker(Checker):
    name = "SinusoidalPositionalEncoding.forward"
    uses = ("sinusoidal_encoding",)

    def cases(self, gen, hidden):
        # (requirement, batch, length, d_model, max_len, offset, dtype)
        f32, bf16 = torch.float32, torch.bfloat16
        shapes = [(POS_ADD, 2, 5, 8, 20, 0, f32), (POS_OFFSET, 1, 3, 8, 20, 6, f32),
                  (POS_DTYPE, 2, 4, 8, 10, 0, bf16)]
        if hidden:
            shapes += [(POS_ADD, 2, 4, 6, 4, 0, f32), (POS_OFFSET, 2, 3, 16, 20, 17, f32),
                       (POS_OFFSET, 3, 1, 4, 50, 49, f32),
                       (POS_OFFSET, 1, 7, 64, 5000, 4990, f32),
                       (POS_DTYPE, 3, 2, 16, 30, 5, bf16)]
        cases = []
        for requirement, batch, length, d_model, max_len, offset, dtype in shapes:
            cases.append({"requirement": requirement,
                          "x": randn(gen, batch, length, d_model).to(dtype), "d_model": d_model,
                          "max_len": max_len, "offset": offset})
        return cases

    def run(self, obj, case):
        with quiet():
            module = obj(case["d_model"], max_len=case["max_len"]).eval()
            if case["offset"] == 0:  # the default
                return {"output": module(case["x"])}
            return {"output": module(case["x"], offset=case["offset"])}

    def expected(self, case):
        x, offset = case["x"], case["offset"]
        table = sinusoids(case["max_len"], case["d_model"])
        return {"output": x + table[offset:offset + x.shape[1]].to(x.dtype)}

    def mistakes(self, case):
        x, offset = case["x"], case["offset"]
        table = sinusoids(case["max_len"], case["d_model"]).to(x.dtype)
        length = x.shape[1]
        found = [
            ("add the encodings to x; do not replace x by them.",
             {"output": table[offset:offset + length].expand_as(x)}),
            ("each position gets its own row of the table: slice L rows, not one.",
             {"output": x + table[offset]}),
        ]
        if offset:
            found.insert(0, ("offset ignored: add the encodings of positions offset … "
                             "offset + L − 1.", {"output": x + table[:length]}))
        return found

    def symptom(self, case, got):
        out, x = got.get("output"), case["x"]
        if isinstance(out, Tensor) and out.is_floating_point() and out.dtype != x.dtype:
            return ("the table is float32: bring it to x's dtype before adding, so that the "
                    "output keeps the input's dtype.")
        return None

    @property
    def oracle(self):
        def forward(self, x: Tensor, offset: int = 0) -> Tensor:
            return x + self.pe[offset:offset + x.shape[1]].to(x.dtype)
        return forward

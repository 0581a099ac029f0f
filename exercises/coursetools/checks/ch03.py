"""Checkers for chapter 3: TokenEmbedding.forward, sinusoidal_encoding,
SinusoidalPositionalEncoding.forward."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .ch02 import load, quiet
from .core import Checker, Missing, randn, register

# --- gradients and dropout seen from outside (helpers of run(), shared with chapter 4) ----------


def backward_from(forward, weight: Tensor, leaves: dict[str, Tensor]):
    """Call ``forward()`` (the student's code) once more, backpropagate (output · weight).sum()
    and return (output, {name: gradient of leaves[name]}); a gradient that cannot come back is
    Missing, saying why. Computes no answer: it only reads what the student's graph gives."""
    try:
        with torch.enable_grad():
            out = forward()
    except Exception as error:  # the first call's result is checked anyway
        why = f"calling forward again for gradients raised {type(error).__name__}: {error}"
        return Missing(why), {name: Missing(why) for name in leaves}
    cut = ("no gradient came back: the output is cut off from autograd's graph (torch.no_grad, "
           ".detach(), .data or NumPy inside forward?)")
    if not isinstance(out, Tensor) or tuple(out.shape) != tuple(weight.shape):
        why = "no gradient computed: the output is not a tensor of the right shape"
        return out, {name: Missing(why) for name in leaves}
    if not out.requires_grad:
        return out, {name: Missing(cut if i == 0 else "no gradient either")
                     for i, name in enumerate(leaves)}
    with torch.enable_grad():
        (out * weight.to(out.dtype)).sum().backward()
    grads = {}
    for name, leaf in leaves.items():
        grads[name] = (leaf.grad.detach().clone() if leaf.grad is not None else Missing(
            f"no gradient reached {name.removesuffix('.grad')}: the output does not depend on "
            "it through autograd's graph (cut by .detach(), .data, torch.no_grad or NumPy?)"))
    return out.detach(), grads


#: What a case that watches dropout gets back (see dropout_seen).
RATIOS, DROPPED = "training-to-eval ratios", "fraction dropped"


def dropout_seen(eval_out, train_out, base=None) -> dict:
    """What dropout did, read by comparing a training-mode output with the eval-mode one (less
    ``base`` from both, e.g. a residual input): the distinct ratios train / eval over the
    entries that are clearly non-zero in eval mode, rounded to 3 decimals, and the fraction of
    those entries that training zeroed, to the nearest quarter. Computes no answer."""
    for out in (eval_out, train_out):
        if not isinstance(out, Tensor) or not out.is_floating_point() or (
                base is not None and tuple(out.shape) != tuple(base.shape)):
            why = "the output is not a floating-point tensor of the input's shape"
            return dict.fromkeys((RATIOS, DROPPED), Missing(why))
    if eval_out.shape != train_out.shape:
        why = "training and eval mode gave outputs of different shapes"
        return dict.fromkeys((RATIOS, DROPPED), Missing(why))
    before, after = eval_out.detach().double(), train_out.detach().double()
    if base is not None:
        before, after = before - base.double(), after - base.double()
    seen = before.abs() > 0.05
    if not bool(seen.any()):
        why = "in eval mode the output (less the input) is all about zero: nothing to compare"
        return dict.fromkeys((RATIOS, DROPPED), Missing(why))
    ratios = (after[seen] / before[seen]).round(decimals=3)
    dropped = float((ratios == 0).double().mean())
    return {RATIOS: torch.unique(ratios), DROPPED: round(dropped * 4) / 4}


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


def expected_gradients(forward, weight: Tensor, leaves: dict[str, Tensor]) -> dict[str, Tensor]:
    """The gradients of (forward(*leaves) · weight).sum() with respect to ``leaves`` (name ->
    a tensor of the case, copied here, never changed), by autograd through PyTorch's own
    functions."""
    copies = {name: t.detach().clone().requires_grad_(True) for name, t in leaves.items()}
    with torch.enable_grad():
        (forward(*copies.values()) * weight).sum().backward()
    return {name: t.grad for name, t in copies.items()}


def dropout_expected(p: float) -> dict:
    """What PyTorch's dropout does with probability p, as :func:`dropout_seen` reads it: each
    entry zeroed or scaled by 1 / (1 - p), a fraction p of them zeroed."""
    ratios = torch.tensor([0.0, 1.0 / (1.0 - p)], dtype=torch.float64).round(decimals=3)
    return {RATIOS: ratios, DROPPED: round(p * 4) / 4}


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
                          "d_model": d_model, "w.embedding.weight": randn(gen, vocab, d_model),
                          "w.grad_out": randn(gen, batch, length, d_model)})
        return cases

    def run(self, obj, case):
        # Called twice: forward must leave the module as it found it. The second call also
        # backpropagates (output · a fixed random tensor).sum() into the table.
        with quiet():
            module = load(obj(case["vocab_size"], case["d_model"]), case, skip=("grad_out",))
            out = module(case["tokens"])
            again, grads = backward_from(lambda: module(case["tokens"]), case["w.grad_out"],
                                         {"embedding.weight.grad": module.embedding.weight})
            return {"output": out, "output of a second call": again} | grads

    def expected(self, case):
        table = case["w.embedding.weight"]
        scale = math.sqrt(case["d_model"])
        out = F.embedding(case["tokens"], table) * scale
        return {"output": out, "output of a second call": out} | expected_gradients(
            lambda weight: F.embedding(case["tokens"], weight) * scale,
            case["w.grad_out"], {"embedding.weight.grad": table})

    def mistakes(self, case):
        looked_up = F.embedding(case["tokens"], case["w.embedding.weight"])
        d = case["d_model"]
        return [
            ("scale the embeddings by sqrt(d_model) (section 3.4 of the paper).",
             {"output": looked_up}),
            ("scale by the square root of d_model, not by d_model.", {"output": looked_up * d}),
            ("multiply by sqrt(d_model); do not divide.", {"output": looked_up / math.sqrt(d)}),
            ("the first call was right, the second was scaled once more: forward must not "
             "change the module's weights (scale the looked-up vectors, not the table).",
             {"output of a second call": looked_up * d}),
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
        found = [
            ("sin and cos are swapped: sines go in the even columns (0, 2, 4, ...), cosines in "
             "the odd ones.", {"pe": sinusoids(*args, swap=True)}),
            ("columns 2i and 2i+1 share one frequency, 1 / 10000^(2i / d_model): the exponent "
             "uses the even column's index for both.", {"pe": sinusoids(*args, per_column=True)}),
        ]
        if case["d_model"] > 1:  # (one column has no halves)
            found.insert(1, (
                "sines and cosines must be interleaved: column 2i holds sin and column 2i+1 cos "
                "of the same angle, not all sines first and then all cosines.",
                {"pe": sinusoids(*args, halves=True)}))
        return found

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
                                  "keeps x's dtype (bfloat16 in, bfloat16 out; float16 too)")


@register
class SinusoidalPositionalEncodingChecker(Checker):
    name = "SinusoidalPositionalEncoding.forward"
    uses = ("sinusoidal_encoding",)

    def cases(self, gen, hidden):
        # (requirement, batch, length, d_model, max_len, offset, dtype)
        f32, bf16, f16 = torch.float32, torch.bfloat16, torch.float16
        shapes = [(POS_ADD, 2, 5, 8, 20, 0, f32), (POS_OFFSET, 1, 3, 8, 9, 6, f32),
                  (POS_DTYPE, 2, 4, 8, 10, 0, bf16), (POS_DTYPE, 1, 3, 6, 8, 2, f16)]
        if hidden:
            shapes += [(POS_ADD, 2, 4, 6, 4, 0, f32), (POS_OFFSET, 2, 3, 16, 20, 17, f32),
                       (POS_OFFSET, 3, 1, 4, 50, 49, f32),
                       (POS_OFFSET, 1, 7, 64, 5000, 4990, f32),
                       (POS_DTYPE, 3, 2, 16, 30, 5, bf16), (POS_DTYPE, 2, 5, 16, 8, 0, f16)]
        cases = []
        for requirement, batch, length, d_model, max_len, offset, dtype in shapes:
            case = {"requirement": requirement,
                    "x": randn(gen, batch, length, d_model).to(dtype), "d_model": d_model,
                    "max_len": max_len, "offset": offset}
            if requirement == POS_ADD:  # gradients too: x's reaches the input unchanged
                case["w.grad_out"] = randn(gen, batch, length, d_model)
            cases.append(case)
        return cases

    def run(self, obj, case):
        with quiet():
            module = obj(case["d_model"], max_len=case["max_len"]).eval()
            if case["offset"] == 0:  # the default
                got = {"output": module(case["x"])}
            else:
                got = {"output": module(case["x"], offset=case["offset"])}
            if "w.grad_out" in case:
                x = case["x"].detach().clone().requires_grad_(True)
                got |= backward_from(lambda: module(x), case["w.grad_out"], {"x.grad": x})[1]
            return got

    def expected(self, case):
        x, offset = case["x"], case["offset"]
        table = sinusoids(case["max_len"], case["d_model"])
        rows = table[offset:offset + x.shape[1]].to(x.dtype)
        found = {"output": x + rows}
        if "w.grad_out" in case:
            found |= expected_gradients(lambda x: x + rows, case["w.grad_out"], {"x.grad": x})
        return found

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

"""Checkers for chapter 1: softmax, scaled dot-product attention, padding mask."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .core import (
    Checker,
    close_to,
    randn,
    random_mask,
    random_tokens,
    register,
    unpack_pair,
)


def oracle_softmax(x: Tensor, dim: int = -1) -> Tensor:
    return torch.softmax(x, dim=dim).nan_to_num(0.0)


def oracle_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                     dropout_p: float = 0.0) -> tuple[Tensor, Tensor]:
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    output = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if mask is not None:
        output = output.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return output, weights


@register
class SoftmaxChecker(Checker):
    name = "softmax"

    def cases(self, gen, hidden):
        cases = [
            {"x": randn(gen, 2, 5), "dim": -1},
            {"x": randn(gen, 3, 4, 6, scale=3.0), "dim": -1},
            {"x": randn(gen, 4, 3), "dim": 0},
            {"x": randn(gen, 2, 3) * 1e4, "dim": -1},  # overflow unless the max is subtracted
        ]
        if hidden:
            with_inf = randn(gen, 3, 7)
            with_inf[0, :3] = float("-inf")
            all_inf = randn(gen, 2, 4)
            all_inf[1] = float("-inf")
            cases += [
                {"x": randn(gen, 2, 3, 4, 5), "dim": 1},
                {"x": -randn(gen, 5, 6).abs() * 1e4, "dim": -1},
                {"x": with_inf, "dim": -1},
                {"x": all_inf, "dim": -1},
                {"x": randn(gen, 3, 5).double(), "dim": -1},
            ]
        return cases

    def run(self, obj, case):
        return {"output": obj(case["x"].clone(), dim=case["dim"])}

    def expected(self, case):
        return {"output": oracle_softmax(case["x"], dim=case["dim"])}

    def hint(self, case, got):
        out = got.get("output")
        x, dim = case["x"], case["dim"]
        if isinstance(out, Tensor) and not bool(torch.isfinite(out).all()) and \
                bool(torch.isfinite(x).all()):
            return ("exp() overflowed: subtract the maximum along `dim` before exponentiating "
                    "(softmax(x) = softmax(x - max)).")
        for other in range(x.dim()):
            if other % x.dim() != dim % x.dim() and close_to(out, oracle_softmax(x, other)):
                return f"you normalised over dim {other}, not over dim={dim}."
        if not bool(torch.isfinite(x).all()):
            return ("-inf logits must get probability 0, and a row that is all -inf must "
                    "give zeros, not NaN (guard the max and the division).")
        return None

    @property
    def oracle(self):
        return oracle_softmax


@register
class AttentionChecker(Checker):
    name = "scaled_dot_product_attention"
    uses = ("softmax",)

    def cases(self, gen, hidden):
        cases = [
            {"q": randn(gen, 2, 3, 4), "k": randn(gen, 2, 5, 4), "v": randn(gen, 2, 5, 6)},
            {"q": randn(gen, 2, 2, 4, 8), "k": randn(gen, 2, 2, 4, 8),
             "v": randn(gen, 2, 2, 4, 8), "mask": random_mask(gen, (2, 1, 4, 4))},
        ]
        if hidden:
            full = random_mask(gen, (1, 1, 6, 3))
            full[0, 0, 2] = False  # query 2 may attend to nothing: its output must be zeros
            cases += [
                {"q": randn(gen, 3, 1, 16), "k": randn(gen, 3, 7, 16), "v": randn(gen, 3, 7, 2)},
                {"q": randn(gen, 1, 4, 6, 32, scale=2.0), "k": randn(gen, 1, 4, 3, 32),
                 "v": randn(gen, 1, 4, 3, 5), "mask": full},
                {"q": randn(gen, 2, 3, 5, 4), "k": randn(gen, 2, 3, 5, 4),
                 "v": randn(gen, 2, 3, 5, 4), "mask": torch.ones(5, 5, dtype=torch.bool).tril()},
            ]
        return cases

    def run(self, obj, case):
        return unpack_pair(obj(case["q"], case["k"], case["v"], mask=case.get("mask")),
                           "output", "weights")

    def expected(self, case):
        output, weights = oracle_attention(case["q"], case["k"], case["v"], case.get("mask"))
        return {"output": output, "weights": weights}

    def hint(self, case, got):
        q, k, v, mask = case["q"], case["k"], case["v"], case.get("mask")
        weights = got.get("weights")
        scores = q @ k.transpose(-2, -1)
        unscaled = torch.softmax(scores if mask is None else scores.masked_fill(~mask, -1e30), -1)
        if close_to(weights, unscaled):
            return "divide the scores by sqrt(d_k), the width of a query/key vector."
        if mask is not None:
            _, flipped = oracle_attention(q, k, v, ~mask)
            if close_to(weights, flipped):
                return "the mask is inverted: True means 'may attend' in this course."
        scaled = scores / math.sqrt(q.shape[-1])
        if mask is None and close_to(weights, torch.softmax(scaled, dim=-2)):
            return "softmax over the wrong axis: each query's weights over the keys sum to 1."
        if isinstance(weights, Tensor) and bool(torch.isnan(weights).any()):
            return "a query with no allowed key must get zero weights and output, not NaN."
        return None

    @property
    def oracle(self):
        return oracle_attention


@register
class PaddingMaskChecker(Checker):
    name = "padding_mask"

    def cases(self, gen, hidden):
        cases = [{"tokens": random_tokens(gen, 3, 6, 0), "pad_id": 0}]
        if hidden:
            cases += [{"tokens": random_tokens(gen, 1, 1, 0), "pad_id": 0},
                      {"tokens": random_tokens(gen, 4, 9, 7), "pad_id": 7}]
        return cases

    def run(self, obj, case):
        return {"mask": obj(case["tokens"], pad_id=case["pad_id"])}

    def expected(self, case):
        return {"mask": (case["tokens"] != case["pad_id"])[:, None, None, :]}

    def hint(self, case, got):
        mask = got.get("mask")
        exp = self.expected(case)["mask"]
        if isinstance(mask, Tensor) and mask.shape == exp.shape and bool((mask == ~exp).all()):
            return "the mask is inverted: True marks real tokens (keys that may be attended)."
        if isinstance(mask, Tensor) and mask.dim() != 4:
            return ("return shape (batch, 1, 1, length) so that the mask broadcasts over heads "
                    "and queries.")
        return None

    @property
    def oracle(self):
        return lambda tokens, pad_id=0: (tokens != pad_id)[:, None, None, :]

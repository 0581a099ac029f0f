"""Checkers for chapter 1: softmax, scaled dot-product attention, padding mask."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .core import Checker, randn, random_mask, random_tokens, register, unpack_pair


def oracle_softmax(x: Tensor, dim: int = -1) -> Tensor:
    return torch.softmax(x, dim=dim).nan_to_num(0.0)


def oracle_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                     dropout_p: float = 0.0) -> tuple[Tensor, Tensor]:
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
        return weights @ v, weights
    output = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if mask is not None:
        output = output.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return output, weights


SOFTMAX_CALLS = ("torch.softmax", "torch.Tensor.softmax", "torch.nn.functional.softmax",
                 "torch.special.softmax", "torch._softmax", "torch.nn.Softmax",
                 "torch.log_softmax", "torch.Tensor.log_softmax",
                 "torch.nn.functional.log_softmax", "torch.special.log_softmax",
                 "torch._log_softmax", "torch.nn.LogSoftmax")

#: The requirements of the softmax exercise, as its text states them.
VALUES, LARGE, INF, DTYPE = ("values along any dim", "no overflow for logits of ±10,000",
                             "-inf gets probability 0, and an all -inf row gives zeros",
                             "keeps the input's dtype")


@register
class SoftmaxChecker(Checker):
    name = "softmax"
    forbidden = SOFTMAX_CALLS
    forbidden_text = "PyTorch's softmax in any form (`torch.softmax`, `F.softmax`, " \
        "`Tensor.softmax`, `nn.Softmax`, and the log-softmax ones)"

    def cases(self, gen, hidden):
        def with_inf(*shape, rows_all_inf=1):
            x = randn(gen, *shape)
            x[0, : shape[-1] // 2] = float("-inf")
            x[-rows_all_inf:] = float("-inf")
            return x

        cases = [
            {"requirement": VALUES, "x": randn(gen, 2, 5), "dim": -1},
            {"requirement": VALUES, "x": randn(gen, 4, 3), "dim": 0},
            {"requirement": LARGE, "x": randn(gen, 2, 3) * 1e4, "dim": -1},
            {"requirement": INF, "x": with_inf(3, 4), "dim": -1},
            {"requirement": DTYPE, "x": randn(gen, 2, 4).double(), "dim": -1},
        ]
        if hidden:
            cases += [
                {"requirement": VALUES, "x": randn(gen, 3, 4, 6, scale=3.0), "dim": -1},
                {"requirement": VALUES, "x": randn(gen, 2, 3, 4, 5), "dim": 1},
                {"requirement": LARGE, "x": -randn(gen, 5, 6).abs() * 1e4, "dim": -1},
                {"requirement": INF, "x": with_inf(4, 7, rows_all_inf=2), "dim": -1},
                {"requirement": INF, "x": with_inf(2, 5).transpose(0, 1).contiguous(),
                 "dim": 0},
                {"requirement": DTYPE, "x": randn(gen, 3, 5).double(), "dim": 0},
            ]
        return cases

    def run(self, obj, case):
        return {"output": obj(case["x"], dim=case["dim"])}

    def expected(self, case):
        return {"output": oracle_softmax(case["x"], dim=case["dim"])}

    def mistakes(self, case):
        x, dim = case["x"], case["dim"]
        found = [(f"you normalised over dim {other}, not over dim={dim}.",
                  {"output": oracle_softmax(x, other)})
                 for other in range(x.dim()) if other % x.dim() != dim % x.dim()]
        if not bool(torch.isfinite(x).all()):
            found.append(("a row of only -inf must give zeros, not NaN: think about what "
                          "the maximum of such a row is, and what dividing by its sum does.",
                          {"output": torch.softmax(x, dim=dim)}))
        return found

    def symptom(self, case, got):
        out, x = got.get("output"), case["x"]
        if isinstance(out, Tensor) and out.dtype == x.dtype and not bool(
                torch.isfinite(out).all()) and bool(torch.isfinite(x).all()):
            return ("exp() overflowed: softmax(x) = softmax(x - c) for any constant c along "
                    "`dim`; pick c so that no exponent is positive.")
        if isinstance(out, Tensor) and out.dtype != x.dtype:
            return "build the result from `x` itself so that it keeps x's dtype."
        return None

    @property
    def oracle(self):
        return oracle_softmax


ATT_VALUES, ATT_MASK, ATT_EMPTY, ATT_DROPOUT = (
    "values (scaled by sqrt(d_k), weights over the keys)", "False in the mask hides a key",
    "a query with no allowed key gets zero weights and output",
    "dropout_p drops attention weights")


@register
class AttentionChecker(Checker):
    name = "scaled_dot_product_attention"
    uses = ("softmax",)
    forbidden = SOFTMAX_CALLS + (
        "torch.nn.functional.scaled_dot_product_attention", "torch.nn.MultiheadAttention",
        "torch.nn.functional.multi_head_attention_forward")
    forbidden_text = "PyTorch's attention (`F.scaled_dot_product_attention`, " \
        "`nn.MultiheadAttention`) and its softmax in any form: use your own `softmax`"

    def cases(self, gen, hidden):
        def empty_row(shape, row):
            mask = random_mask(gen, shape)
            mask[..., row, :] = False  # this query may attend to nothing: zeros, not NaN
            return mask

        cases = [
            {"requirement": ATT_VALUES, "q": randn(gen, 2, 3, 4), "k": randn(gen, 2, 5, 4),
             "v": randn(gen, 2, 5, 6)},
            {"requirement": ATT_MASK, "q": randn(gen, 2, 2, 4, 8), "k": randn(gen, 2, 2, 4, 8),
             "v": randn(gen, 2, 2, 4, 8), "mask": random_mask(gen, (2, 1, 4, 4))},
            {"requirement": ATT_EMPTY, "q": randn(gen, 1, 2, 3, 4), "k": randn(gen, 1, 2, 5, 4),
             "v": randn(gen, 1, 2, 5, 3), "mask": empty_row((1, 1, 3, 5), 1)},
            {"requirement": ATT_DROPOUT, "q": randn(gen, 2, 3, 4), "k": randn(gen, 2, 3, 4),
             "v": randn(gen, 2, 3, 4), "dropout_p": 1.0},
        ]
        if hidden:
            cases += [
                {"requirement": ATT_VALUES, "q": randn(gen, 3, 1, 16),
                 "k": randn(gen, 3, 7, 16), "v": randn(gen, 3, 7, 2)},
                {"requirement": ATT_MASK, "q": randn(gen, 2, 3, 5, 4),
                 "k": randn(gen, 2, 3, 5, 4), "v": randn(gen, 2, 3, 5, 4),
                 "mask": torch.ones(5, 5, dtype=torch.bool).tril()},
                {"requirement": ATT_EMPTY, "q": randn(gen, 1, 4, 6, 32, scale=2.0),
                 "k": randn(gen, 1, 4, 3, 32), "v": randn(gen, 1, 4, 3, 5),
                 "mask": empty_row((1, 1, 6, 3), 2)},
                {"requirement": ATT_DROPOUT, "q": randn(gen, 1, 2, 5, 8),
                 "k": randn(gen, 1, 2, 6, 8), "v": randn(gen, 1, 2, 6, 3),
                 "mask": random_mask(gen, (1, 1, 5, 6)), "dropout_p": 1.0},
            ]
        return cases

    def run(self, obj, case):
        kwargs = {"mask": case.get("mask")}
        if "dropout_p" in case:
            kwargs["dropout_p"] = case["dropout_p"]
        return unpack_pair(obj(case["q"], case["k"], case["v"], **kwargs), "output", "weights")

    def expected(self, case):
        output, weights = oracle_attention(case["q"], case["k"], case["v"], case.get("mask"),
                                           case.get("dropout_p", 0.0))
        return {"output": output, "weights": weights}

    def mistakes(self, case):
        q, k, v, mask = case["q"], case["k"], case["v"], case.get("mask")
        if case.get("dropout_p"):
            output, weights = oracle_attention(q, k, v, mask)
            return [("dropout_p must drop attention weights (with p = 1 every weight is "
                     "dropped, so the output is all zeros).",
                     {"output": output, "weights": weights})]
        scores = q @ k.transpose(-2, -1)
        masked = scores if mask is None else scores.masked_fill(~mask, float("-inf"))
        unscaled = torch.softmax(masked, -1).nan_to_num(0.0)
        found = [("divide the scores by sqrt(d_k), the width of a query/key vector.",
                  {"weights": unscaled})]
        if mask is not None:
            found.append(("the mask is inverted: True means 'may attend' in this course.",
                          {"weights": oracle_attention(q, k, v, ~mask)[1]}))
        if mask is None:
            found.append(("softmax over the wrong axis: each query's weights over the keys "
                          "sum to 1.", {"weights": torch.softmax(
                              scores / math.sqrt(q.shape[-1]), dim=-2)}))
        return found

    def symptom(self, case, got):
        weights = got.get("weights")
        if isinstance(weights, Tensor) and bool(torch.isnan(weights).any()):
            return ("a query with no allowed key must get zero weights and output, not NaN: "
                    "your softmax already handles a row of only -inf.")
        return None

    @property
    def oracle(self):
        return oracle_attention


PAD_VALUES, PAD_ID, PAD_DEVICE = ("True for real tokens, shape (B, 1, 1, L)",
                                  "any pad_id, not only 0", "on the tokens' device")


@register
class PaddingMaskChecker(Checker):
    name = "padding_mask"

    def cases(self, gen, hidden):
        cases = [{"requirement": PAD_VALUES, "tokens": random_tokens(gen, 3, 6, 0), "pad_id": 0},
                 {"requirement": PAD_ID, "tokens": random_tokens(gen, 2, 5, 3), "pad_id": 3},
                 {"requirement": PAD_DEVICE, "tokens": torch.zeros(2, 4, dtype=torch.long,
                                                                   device="meta"), "pad_id": 0}]
        if hidden:
            cases += [{"requirement": PAD_VALUES, "tokens": random_tokens(gen, 1, 1, 0),
                       "pad_id": 0},
                      {"requirement": PAD_ID, "tokens": random_tokens(gen, 4, 9, 7), "pad_id": 7},
                      {"requirement": PAD_DEVICE, "tokens": torch.zeros(
                          3, 2, dtype=torch.long, device="meta"), "pad_id": 5}]
        return cases

    def run(self, obj, case):
        return {"mask": obj(case["tokens"], pad_id=case["pad_id"])}

    def expected(self, case):
        return {"mask": (case["tokens"] != case["pad_id"])[:, None, None, :]}

    def mistakes(self, case):
        tokens, pad_id = case["tokens"], case["pad_id"]
        if tokens.device.type == "meta":
            return []
        found = [("the mask is inverted: True marks real tokens (keys that may be attended).",
                  {"mask": (tokens == pad_id)[:, None, None, :]})]
        if pad_id != 0:
            found.append(("use the `pad_id` you are given: padding is not always id 0.",
                          {"mask": (tokens != 0)[:, None, None, :]}))
        return found

    def symptom(self, case, got):
        mask = got.get("mask")
        if isinstance(mask, Tensor) and mask.dim() != 4:
            return ("the mask must broadcast over heads and queries: give it the shape "
                    "(batch, 1, 1, length).")
        if isinstance(mask, Tensor) and mask.device.type != case["tokens"].device.type:
            return ("build the mask from the tokens (or on `tokens.device`): a tensor made "
                    "from scratch lands on the CPU whatever the inputs' device.")
        return None

    @property
    def oracle(self):
        return lambda tokens, pad_id=0: (tokens != pad_id)[:, None, None, :]

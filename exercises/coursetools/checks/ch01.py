"""Checkers for chapter 1: softmax, scaled dot-product attention, padding mask."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .core import (
    Checker,
    Missing,
    distinct,
    randn,
    random_mask,
    random_tokens,
    register,
    unpack_pair,
)

# --- gradients: a case with a "_grad" entry (the output's cotangent) also backpropagates -------


def gradients(output: Any, inputs: dict[str, Tensor], cotangent: Tensor) -> dict[str, Any]:
    """The gradients of ``(output * cotangent).sum()`` with respect to ``inputs``, as
    "grad <name>" entries, or for each the reason none came back. (Copied into student
    notebooks: it only backpropagates through the student's own output.)"""
    keys = [f"grad {name}" for name in inputs]
    reason = None
    if not isinstance(output, Tensor) or tuple(output.shape) != tuple(cotangent.shape):
        reason = "not checked: the output itself is wrong"
    elif not output.requires_grad:
        reason = ("no gradient flows back through your output: it is cut off from autograd "
                  "(computed with gradient tracking off, detached, or made through NumPy), so "
                  "nothing before it could learn")
    else:
        try:
            grads = torch.autograd.grad(output, list(inputs.values()),
                                        cotangent.to(output.dtype), allow_unused=True)
        except RuntimeError as error:
            text = str(error).split(" Hint:")[0].strip()
            reason = f"backpropagating through your output failed: {text}"
            if "inplace" in text:
                reason += (" (an in-place operation overwrote a tensor that autograd keeps "
                           "for the backward pass)")
    if reason is not None:
        return {key: Missing(reason if i == 0 else "no gradient either")
                for i, key in enumerate(keys)}
    return {key: grad if grad is not None else Missing(
        f"no gradient reaches `{name}`: the output does not depend on it through autograd")
        for key, name, grad in zip(keys, inputs, grads)}


def tracked_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on inputs that require grad; a Missing that says why if the
    code turned them into NumPy arrays (PyTorch refuses, and its message suggests a detach,
    which would cut the gradients off). (Copied into student notebooks.)"""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as error:
        if "numpy" not in str(error) or "requires grad" not in str(error):
            raise
        return Missing("your code goes through NumPy, where no gradient can follow "
                       f"({error}); detaching first would not help: gradients must flow "
                       "back to the inputs, so keep to torch operations")


def reference_gradients(fn, case: dict, names: tuple[str, ...], **kwargs: Any
                        ) -> dict[str, Any]:
    """The output of ``fn`` on the case's inputs ``names`` and its gradients (as
    :func:`gradients` names them), by autograd through PyTorch's functions."""
    inputs = {name: case[name].clone().requires_grad_(True) for name in names}
    output = fn(*inputs.values(), **kwargs)
    output = output[0] if isinstance(output, tuple) else output
    grads = torch.autograd.grad(output, list(inputs.values()), case["_grad"])
    return {"output": output.detach()} | {f"grad {name}": grad
                                          for name, grad in zip(names, grads)}


# --- dropout: a case with a "_seed" entry compares a run with dropout to one without ----------

#: What a run with dropout is judged on: plain values that any correct dropout gives, whatever
#: random numbers it draws (never a right answer's values).
D_RATIOS, D_SHARED, D_MIXED, D_SHARE = (
    "weights with dropout ÷ the same weights without (distinct values)",
    "two batch elements or heads dropped exactly the same weights",
    "some query has some weights dropped and others kept",
    "share of the weights dropped within 0.2 of the dropout probability")


def dropout_report(dropped: Tensor, full: Tensor, p: float) -> dict[str, Any]:
    """What dropout did to attention weights (..., Q, K): ``dropped`` with dropout, ``full``
    the same weights without. (Copied into student notebooks: it reads the student's
    outputs only.)"""
    dropped, full = dropped.detach().double(), full.detach().double()
    live = full > 1e-6  # the weights dropout may act on (not masked, not vanishing)
    ratios = sorted({round(float(r), 3) for r in (dropped[live] / full[live]).tolist()})
    gone = live & (dropped == 0)
    patterns = gone.reshape(-1, gone.shape[-2] * gone.shape[-1])
    shared = any(torch.equal(patterns[i], patterns[j])
                 for i in range(len(patterns)) for j in range(i))
    kept = live & ~gone
    rows = live.sum(-1) >= 2
    mixed = bool((gone.any(-1) & kept.any(-1))[rows].any())
    share = float(gone.sum()) / max(int(live.sum()), 1)
    shown = [f"{r:g}" for r in ratios] if len(ratios) <= 4 else [
        *(f"{r:g}" for r in ratios[:3]), "..."]
    return {D_RATIOS: ", ".join(shown),  # a str: the grader carries strings, not tuples
            D_SHARED: shared, D_MIXED: mixed, D_SHARE: abs(share - p) <= 0.2}


def dropout_mistakes(p: float) -> list[tuple[str, dict[str, Any]]]:
    """The usual ways of getting dropout wrong, as what :func:`dropout_report` then shows."""
    return [
        ("a kept weight must be scaled by 1 / (1 - p) so that every weight keeps its expected "
         "value; yours are left as they were.", {D_RATIOS: "0, 1"}),
        ("every batch element and head draws its own dropout mask: yours drop the same "
         "weights in several of them.", {D_SHARED: True}),
        ("dropout drops single weights, each on its own: yours drops a query's weights all "
         "together or not at all.", {D_MIXED: False}),
        (f"dropout_p (here {p}) is the probability of dropping a weight, not of keeping it.",
         {D_SHARE: False}),
    ]


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
VALUES, LARGE, INF, DTYPE = ("values along any dim",
                             "no overflow for logits of ±10,000",
                             "-inf gets probability 0, and an all -inf row gives zeros",
                             "keeps the input's dtype (and its precision)")


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
            {"requirement": VALUES, "x": randn(gen, 2, 3, 4), "dim": 1},
            {"requirement": LARGE, "x": randn(gen, 2, 3) * 1e4, "dim": -1},
            {"requirement": INF, "x": with_inf(3, 4), "dim": -1},
            {"requirement": INF, "x": with_inf(2, 5).transpose(0, 1).contiguous(), "dim": 0},
            {"requirement": DTYPE, "x": randn(gen, 2, 4).double(), "dim": -1},
            # float64 logits near 100,000: float32 arithmetic would round them by ~4e-3
            {"requirement": DTYPE, "x": randn(gen, 2, 4).double() + 1e5, "dim": -1},
        ]
        if hidden:
            cases += [
                {"requirement": VALUES, "x": randn(gen, 3, 4, 6, scale=3.0), "dim": -1},
                {"requirement": VALUES, "x": randn(gen, 2, 3, 4, 5), "dim": 1},
                {"requirement": LARGE, "x": -randn(gen, 5, 6).abs() * 1e4, "dim": -1},
                {"requirement": INF, "x": with_inf(4, 7, rows_all_inf=2), "dim": -1},
                {"requirement": INF, "x": with_inf(3, 6, rows_all_inf=2).transpose(0, 1)
                 .reshape(2, 3, 3).contiguous(), "dim": 1},
                {"requirement": DTYPE, "x": randn(gen, 3, 5).double(), "dim": 0},
                {"requirement": DTYPE, "x": -2.0 * randn(gen, 3, 5).double() - 1e5, "dim": 0},
            ]
        return cases

    def run(self, obj, case):
        if "_grad" not in case:
            return {"output": obj(case["x"], dim=case["dim"])}
        x = case["x"].detach().clone().requires_grad_(True)
        output = tracked_call(obj, x.clone(), dim=case["dim"])
        return {"output": output} | gradients(output, {"x": x}, case["_grad"])

    def expected(self, case):
        if "_grad" in case:
            return reference_gradients(oracle_softmax, case, ("x",), dim=case["dim"])
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
        if x.dtype == torch.float64:
            found.append(("compute in x's own dtype: float32 arithmetic loses float64's "
                          "precision.", {"output": oracle_softmax(x.float(), dim).double()}))
        return distinct(self, case, found)

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
    "values (scaled by sqrt(d_k), weights over the keys)",
    "False in the mask hides a key",
    "a query with no allowed key gets zero weights and output",
    "dropout_p drops attention weights (the weights returned are those after dropout)")
#: What a run with dropout is judged on, besides :func:`dropout_report`.
ATT_FROM_DROPPED = "the output is the returned weights times v"


def attention_dropout_run(obj: Any, case: dict[str, Any]) -> dict[str, Any]:
    """Call the student's attention without dropout, then with it (seeded); describe what
    dropout did (:func:`dropout_report`). (Copied into student notebooks.)"""
    q, k, v, mask, p = case["q"], case["k"], case["v"], case.get("mask"), case["dropout_p"]
    full = unpack_pair(obj(q, k, v, mask=mask, dropout_p=0.0), "output", "weights")["weights"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case["_seed"])
        got = unpack_pair(obj(q, k, v, mask=mask, dropout_p=p), "output", "weights")
    output, weights = got["output"], got["weights"]
    shape = (*q.shape[:-1], k.shape[-2])
    if not all(isinstance(t, Tensor) and tuple(t.shape) == shape for t in (full, weights)) \
            or not isinstance(output, Tensor):
        reason = (f"not checked: your function must return (output, weights), the weights of "
                  f"shape {shape}")
        return {key: Missing(reason) for key in (D_RATIOS, D_SHARED, D_MIXED, D_SHARE,
                                                 ATT_FROM_DROPPED)}
    from_dropped = tuple(output.shape) == (*shape[:-1], v.shape[-1]) and bool(torch.allclose(
        output.detach().double(), weights.detach().double() @ v.double(), atol=1e-5,
        rtol=1e-4))
    return dropout_report(weights, full, p) | {ATT_FROM_DROPPED: from_dropped}


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
            {"requirement": ATT_MASK, "q": randn(gen, 1, 2, 4, 4), "k": randn(gen, 1, 2, 4, 4),
             "v": randn(gen, 1, 2, 4, 3), "mask": torch.ones(4, 4, dtype=torch.bool).tril()},
            {"requirement": ATT_EMPTY, "q": randn(gen, 1, 2, 3, 4), "k": randn(gen, 1, 2, 5, 4),
             "v": randn(gen, 1, 2, 5, 3), "mask": empty_row((1, 1, 3, 5), 1)},
            {"requirement": ATT_DROPOUT, "q": randn(gen, 2, 3, 4), "k": randn(gen, 2, 3, 4),
             "v": randn(gen, 2, 3, 4), "dropout_p": 1.0},
            {"requirement": ATT_DROPOUT, "q": randn(gen, 2, 2, 6, 4),
             "k": randn(gen, 2, 2, 6, 4), "v": randn(gen, 2, 2, 6, 3), "dropout_p": 0.25,
             "_seed": 11},
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
                {"requirement": ATT_DROPOUT, "q": randn(gen, 2, 3, 7, 8),
                 "k": randn(gen, 2, 3, 7, 8), "v": randn(gen, 2, 3, 7, 4),
                 "mask": torch.ones(7, 7, dtype=torch.bool).tril(), "dropout_p": 0.5,
                 "_seed": 5},
            ]
        return cases

    def run(self, obj, case):
        if "_seed" in case:
            return attention_dropout_run(obj, case)
        kwargs = {"mask": case.get("mask")}
        if "dropout_p" in case:
            kwargs["dropout_p"] = case["dropout_p"]
        if "_grad" not in case:
            return unpack_pair(obj(case["q"], case["k"], case["v"], **kwargs), "output",
                               "weights")
        inputs = {name: case[name].detach().clone().requires_grad_(True)
                  for name in ("q", "k", "v")}
        result = tracked_call(obj, *(t.clone() for t in inputs.values()), **kwargs)
        got = {"output": result, "weights": result} if isinstance(result, Missing) else \
            unpack_pair(result, "output", "weights")
        return got | gradients(got["output"], inputs, case["_grad"])

    def expected(self, case):
        q, k, v, mask = case["q"], case["k"], case["v"], case.get("mask")
        if "_seed" in case:
            p = case["dropout_p"]
            full = oracle_attention(q, k, v, mask)[1]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(case["_seed"])
                output, weights = oracle_attention(q, k, v, mask, p)
            return dropout_report(weights, full, p) | {ATT_FROM_DROPPED: bool(torch.allclose(
                output.double(), weights.double() @ v.double(), atol=1e-5, rtol=1e-4))}
        if "_grad" in case:
            found = reference_gradients(oracle_attention, case, ("q", "k", "v"), mask=mask)
            return found | {"weights": oracle_attention(q, k, v, mask)[1]}
        output, weights = oracle_attention(q, k, v, mask, case.get("dropout_p", 0.0))
        return {"output": output, "weights": weights}

    def mistakes(self, case):
        q, k, v, mask = case["q"], case["k"], case["v"], case.get("mask")
        if "_seed" in case:
            return distinct(self, case, [
                ("dropout acts on the attention weights, and the weights returned are those "
                 "after dropout, the very ones the output is computed from; yours are the "
                 "weights without dropout.", {D_RATIOS: "1", ATT_FROM_DROPPED: False}),
                *dropout_mistakes(case["dropout_p"])])
        if case.get("dropout_p"):
            output, weights = oracle_attention(q, k, v, mask)
            return [("dropout_p must drop attention weights (with p = 1 every weight is "
                     "dropped, so the output is all zeros).",
                     {"output": output, "weights": weights}),
                    ("the weights returned are those after dropout, the very ones the output "
                     "is computed from (with p = 1 all zeros); yours are the weights without "
                     "dropout.", {"weights": weights})]
        scores = q @ k.transpose(-2, -1)
        masked = scores if mask is None else scores.masked_fill(~mask, float("-inf"))
        unscaled = torch.softmax(masked, -1).nan_to_num(0.0)
        found = [("divide the scores by sqrt(d_k), the width of a query/key vector.",
                  {"weights": unscaled})]
        if mask is not None:
            found.append(("the mask is inverted: True means 'may attend' in this course.",
                          {"weights": oracle_attention(q, k, v, ~mask)[1]}))
            found.append(("the mask was not applied: a mask of any rank that broadcasts to "
                          "(..., Q, K) hides the keys where it is False.",
                          {"weights": oracle_attention(q, k, v)[1]}))
        if mask is None:
            found.append(("softmax over the wrong axis: each query's weights over the keys "
                          "sum to 1.", {"weights": torch.softmax(
                              scores / math.sqrt(q.shape[-1]), dim=-2)}))
        return distinct(self, case, found)

    def symptom(self, case, got):
        weights = got.get("weights")
        if isinstance(weights, Tensor) and bool(torch.isnan(weights).any()):
            mask = case.get("mask")
            if mask is not None and not bool(mask.any(-1).all()):
                return ("a query with no allowed key must get zero weights and output, not "
                        "NaN: your softmax already handles a row of only -inf.")
            if case.get("dropout_p", 0.0) >= 1.0:
                return ("with dropout_p = 1 every weight is dropped: the weights and the "
                        "output are all zeros, not NaN (mind a division by 1 - p, which is 0 "
                        "there).")
        return None

    @property
    def oracle(self):
        return oracle_attention


PAD_VALUES, PAD_ID, PAD_DEVICE = ("True for real tokens, shape (B, 1, 1, L)",
                                  "any pad_id, not only 0", "on the tokens' device")


def left_padded(gen: torch.Generator, batch: int, length: int, pad_id: int) -> Tensor:
    """Token ids padded at the start (as ``random_tokens`` pads the end), with one more pad
    inside the first row: padding is not always a tail."""
    tokens = random_tokens(gen, batch, length, pad_id).flip(-1)
    tokens[0, length // 2] = pad_id
    return tokens


@register
class PaddingMaskChecker(Checker):
    name = "padding_mask"

    def cases(self, gen, hidden):
        cases = [{"requirement": PAD_VALUES, "tokens": random_tokens(gen, 3, 6, 0), "pad_id": 0},
                 {"requirement": PAD_VALUES, "tokens": torch.tensor([[0, 0, 4, 2, 9],
                                                                     [5, 0, 3, 0, 0]]),
                  "pad_id": 0},
                 {"requirement": PAD_ID, "tokens": torch.tensor([[3, 3, 5, 1, 7, 3],
                                                                 [2, 3, 9, 0, 3, 3]]),
                  "pad_id": 3},
                 {"requirement": PAD_DEVICE, "tokens": torch.zeros(2, 4, dtype=torch.long,
                                                                   device="meta"), "pad_id": 0}]
        if hidden:
            cases += [{"requirement": PAD_VALUES, "tokens": random_tokens(gen, 1, 1, 0),
                       "pad_id": 0},
                      {"requirement": PAD_VALUES, "tokens": left_padded(gen, 3, 7, 0),
                       "pad_id": 0},
                      {"requirement": PAD_ID, "tokens": random_tokens(gen, 4, 9, 7), "pad_id": 7},
                      {"requirement": PAD_ID, "tokens": left_padded(gen, 3, 8, 5), "pad_id": 5},
                      {"requirement": PAD_DEVICE, "tokens": torch.zeros(
                          3, 2, dtype=torch.long, device="meta"), "pad_id": 5}]
        return cases

    def run(self, obj, case):
        tokens = case["tokens"]
        try:
            return {"mask": obj(tokens, pad_id=case["pad_id"])}
        except (RuntimeError, NotImplementedError) as error:
            if tokens.device.type != "meta" or "meta" not in str(error):
                raise
            return {"mask": Missing(
                f"your code reads the tokens' values in Python ({type(error).__name__}: "
                f"{error}). This case stands in for a GPU with PyTorch's meta device, whose "
                "tensors have a shape, a dtype and a device but no values, so a Python check "
                "on the values (an `if` on a tensor, `.item()`, `.tolist()`) cannot run there; "
                "a mask built with tensor operations alone runs on any device.")}

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
        found.append(("a real token may have any id other than pad_id, smaller ones too.",
                      {"mask": (tokens > pad_id)[:, None, None, :]}))
        tail = ("padding is not always a tail: it may come first, or sit between real "
                "tokens; test every token.")
        lengths = (tokens != pad_id).sum(-1, keepdim=True)
        found += [(tail, {"mask": (torch.arange(tokens.shape[-1]) < lengths)[:, None, None, :]}),
                  (tail, {"mask": (tokens != pad_id).long().cumprod(-1).bool()
                          [:, None, None, :]})]
        return distinct(self, case, found)

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

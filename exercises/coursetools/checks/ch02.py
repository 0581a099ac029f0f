"""Checkers for chapter 2: split_heads, merge_heads, MultiHeadAttention.forward.

Also the helpers that the class checkers of later chapters share: drawing a module's weights
into a case (keys "w.<state-dict name>", which ``describe`` skips) and loading them into the
student's module and into PyTorch's.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ch01 import (
    D_MIXED,
    D_RATIOS,
    D_SHARE,
    D_SHARED,
    distinct,
    dropout_mistakes,
    dropout_report,
    gradients,
    reference_gradients,
    tracked_call,
)
from .core import Checker, Missing, randint, randn, random_mask, register

# --- weights in cases, shared with the later chapters' checkers -----------------------------------


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Leave the global random state as it was (building a module draws random numbers; a
    check must not change what the student's next ``torch.randn`` gives) and keep PyTorch's
    warnings off stderr."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def linear_weights(gen: torch.Generator, name: str, d_in: int, d_out: int, bias: bool
                   ) -> dict[str, Tensor]:
    """Weights of an ``nn.Linear`` called ``name``, as case entries."""
    weights = {f"w.{name}.weight": randn(gen, d_out, d_in, scale=1 / math.sqrt(d_in))}
    if bias:
        weights[f"w.{name}.bias"] = randn(gen, d_out, scale=0.2)
    return weights


def norm_weights(gen: torch.Generator, name: str, d: int, bias: bool) -> dict[str, Tensor]:
    """Weights of an ``nn.LayerNorm`` called ``name`` (not the identity, so it shows)."""
    weights = {f"w.{name}.weight": 1.0 + randn(gen, d, scale=0.2)}
    if bias:
        weights[f"w.{name}.bias"] = randn(gen, d, scale=0.2)
    return weights


def mha_weights(gen: torch.Generator, name: str, d_model: int, bias: bool) -> dict[str, Tensor]:
    """Weights of a MultiHeadAttention called ``name``: q/k/v/out projections."""
    weights: dict[str, Tensor] = {}
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        weights |= linear_weights(gen, f"{name}.{proj}", d_model, d_model, bias)
    return weights


def state(case: dict[str, Any], prefix: str = "") -> dict[str, Tensor]:
    """The case's weights whose name starts with ``prefix``, with the prefix removed."""
    start = "w." + prefix
    return {key[len(start):]: value for key, value in case.items() if key.startswith(start)}


def load(module: nn.Module, case: dict[str, Any], prefix: str = "", skip: tuple[str, ...] = ()
         ) -> nn.Module:
    """Load the case's weights (but those whose names start with one in ``skip``) into the
    student's module (the names of its provided ``__init__``); return it in eval mode."""
    weights = {key: value for key, value in state(case, prefix).items()
               if not key.startswith(skip)}
    module.load_state_dict(weights, strict=True)
    return module.eval()


def torch_mha(weights: dict[str, Tensor], d_model: int, num_heads: int) -> nn.MultiheadAttention:
    """``nn.MultiheadAttention`` holding ``weights`` (names as in our q/k/v/out projections);
    PyTorch stacks W_Q, W_K, W_V in one ``in_proj_weight``."""
    bias = "q_proj.bias" in weights
    with quiet():
        mha = nn.MultiheadAttention(d_model, num_heads, bias=bias, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([weights[f"{p}_proj.weight"] for p in "qkv"]))
        mha.out_proj.weight.copy_(weights["out_proj.weight"])
        if bias:
            mha.in_proj_bias.copy_(torch.cat([weights[f"{p}_proj.bias"] for p in "qkv"]))
            mha.out_proj.bias.copy_(weights["out_proj.bias"])
    return mha.eval()


def torch_mask(mask: Tensor | None, batch: int, heads: int, q_len: int, k_len: int
               ) -> Tensor | None:
    """Our mask (True = may attend, broadcastable to (B, H, Q, K)) in the form PyTorch's
    modules take: (B·H, Q, K), True = may NOT attend."""
    if mask is None:
        return None
    return ~mask.broadcast_to(batch, heads, q_len, k_len).reshape(batch * heads, q_len, k_len)


# --- oracles --------------------------------------------------------------------------------------


def oracle_split_heads(x: Tensor, num_heads: int) -> Tensor:
    return x.unflatten(-1, (num_heads, -1)).permute(0, 2, 1, 3)


def oracle_merge_heads(x: Tensor) -> Tensor:
    return x.permute(0, 2, 1, 3).flatten(2)


def oracle_mha_forward(self, query: Tensor, key: Tensor, value: Tensor,
                       mask: Tensor | None = None, cache=None, static_kv: bool = False) -> Tensor:
    """MultiHeadAttention.forward through F.scaled_dot_product_attention, using ``self``'s
    projections (with the key/value cache, for decoding)."""
    q = oracle_split_heads(F.linear(query, self.q_proj.weight, self.q_proj.bias), self.num_heads)
    if cache is not None and static_kv and cache.k is not None:
        k, v = cache.k, cache.v
    else:
        k = oracle_split_heads(F.linear(key, self.k_proj.weight, self.k_proj.bias),
                               self.num_heads)
        v = oracle_split_heads(F.linear(value, self.v_proj.weight, self.v_proj.bias),
                               self.num_heads)
        if cache is not None:
            k, v = cache.append(k, v)
    p = self.dropout if self.training else 0.0
    if getattr(self, "keep_weights", False):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        self.last_weights = weights
        out = F.dropout(weights, p, training=p > 0) @ v
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        if mask is not None:
            out = out.masked_fill(~mask.any(-1, keepdim=True), 0.0)
        self.last_weights = None
    return F.linear(oracle_merge_heads(out), self.out_proj.weight, self.out_proj.bias)


# --- split_heads / merge_heads --------------------------------------------------------------------

SPLIT = ("(B, L, D) → (B, H, L, D/H), head h gets the contiguous features h·D/H … (h+1)·D/H − 1, "
         "gradients flow back to x")


@register
class SplitHeadsChecker(Checker):
    name = "split_heads"

    def cases(self, gen, hidden):
        cases = [{"requirement": SPLIT, "x": randn(gen, 2, 3, 8), "num_heads": 2},
                 {"requirement": SPLIT, "x": randn(gen, 1, 4, 9).double(), "num_heads": 3},
                 {"requirement": SPLIT, "x": randn(gen, 2, 4, 6), "num_heads": 3,
                  "_grad": randn(gen, 2, 3, 4, 2)}]
        if hidden:
            cases += [{"requirement": SPLIT, "x": randn(gen, 3, 1, 16), "num_heads": 4},
                      {"requirement": SPLIT, "x": randn(gen, 2, 5, 6), "num_heads": 1},
                      {"requirement": SPLIT, "x": randn(gen, 2, 7, 64), "num_heads": 8},
                      {"requirement": SPLIT, "x": randn(gen, 1, 2, 8).double(), "num_heads": 8},
                      {"requirement": SPLIT, "x": randn(gen, 1, 5, 10).double(), "num_heads": 2,
                       "_grad": randn(gen, 1, 2, 5, 5).double()}]
        return cases

    def run(self, obj, case):
        if "_grad" not in case:
            return {"output": obj(case["x"], case["num_heads"])}
        x = case["x"].detach().clone().requires_grad_(True)
        output = tracked_call(obj, x.clone(), case["num_heads"])
        return {"output": output} | gradients(output, {"x": x}, case["_grad"])

    def expected(self, case):
        if "_grad" in case:
            return reference_gradients(oracle_split_heads, case, ("x",),
                                       num_heads=case["num_heads"])
        # Head h is the slice of features h*Dh ... (h+1)*Dh - 1, for every position.
        x, heads = case["x"], case["num_heads"]
        d_head = x.shape[-1] // heads
        return {"output": torch.stack([x[:, :, h * d_head:(h + 1) * d_head]
                                       for h in range(heads)], dim=1)}

    def mistakes(self, case):
        x, heads = case["x"], case["num_heads"]
        b, length, d = x.shape
        return distinct(self, case, [
            ("you reshaped (B, L, D) straight to (B, H, L, D/H), which mixes positions into "
             "heads: split the feature axis into (H, D/H) first, then move the head axis.",
             {"output": x.reshape(b, heads, length, d // heads)}),
            ("head h must get the contiguous features h·D/H … (h+1)·D/H − 1, not every H-th "
             "feature: the head axis comes before the within-head axis when you split D.",
             {"output": x.reshape(b, length, d // heads, heads).permute(0, 3, 1, 2)}),
        ])

    def symptom(self, case, got):
        out, x, heads = got.get("output"), case["x"], case["num_heads"]
        b, length, d = x.shape
        if isinstance(out, Tensor) and tuple(out.shape) == (b, length, heads, d // heads) \
                and length != heads:
            return ("the head axis must come before the positions: (B, H, L, D/H), so that "
                    "attention runs over the positions of each head.")
        return None

    @property
    def oracle(self):
        return oracle_split_heads


MERGE = ("the inverse of split_heads: (B, H, L, Dh) → (B, L, H·Dh), head 0's features first, "
         "gradients flow back to x")


@register
class MergeHeadsChecker(Checker):
    name = "merge_heads"

    def cases(self, gen, hidden):
        cases = [{"requirement": MERGE, "x": randn(gen, 2, 2, 3, 4)},
                 {"requirement": MERGE, "x": randn(gen, 1, 3, 5, 2)},
                 {"requirement": MERGE, "x": randn(gen, 1, 2, 3, 3).double()},
                 {"requirement": MERGE, "x": randn(gen, 2, 3, 2, 2),
                  "_grad": randn(gen, 2, 2, 6)}]
        if hidden:
            cases += [{"requirement": MERGE, "x": randn(gen, 3, 4, 1, 8)},
                      {"requirement": MERGE, "x": randn(gen, 2, 1, 6, 5)},
                      {"requirement": MERGE, "x": randn(gen, 2, 8, 7, 8)},
                      {"requirement": MERGE, "x": randn(gen, 1, 2, 3, 4).double()},
                      {"requirement": MERGE, "x": randn(gen, 1, 4, 3, 5).double(),
                       "_grad": randn(gen, 1, 3, 20).double()}]
        return cases

    def run(self, obj, case):
        if "_grad" not in case:
            return {"output": obj(case["x"])}
        x = case["x"].detach().clone().requires_grad_(True)
        output = tracked_call(obj, x.clone())
        return {"output": output} | gradients(output, {"x": x}, case["_grad"])

    def expected(self, case):
        if "_grad" in case:
            return reference_gradients(oracle_merge_heads, case, ("x",))
        # Position l's vector is head 0's features, then head 1's, ... (concatenation).
        x = case["x"]
        return {"output": torch.cat([x[:, h] for h in range(x.shape[1])], dim=-1)}

    def mistakes(self, case):
        x = case["x"]
        b, heads, length, d_head = x.shape
        return distinct(self, case, [
            ("heads merged in the wrong order: reshaping (B, H, L, Dh) straight to "
             "(B, L, H·Dh) mixes positions; bring the positions next to the batch axis first.",
             {"output": x.reshape(b, length, heads * d_head)}),
            ("the features are interleaved across heads: position l's vector is head 0's Dh "
             "features, then head 1's, ... (the inverse of split_heads).",
             {"output": x.permute(0, 2, 3, 1).reshape(b, length, heads * d_head)}),
        ])

    @property
    def oracle(self):
        return oracle_merge_heads


# --- MultiHeadAttention.forward -------------------------------------------------------------------

#: The requirements of MultiHeadAttention.forward, as its text states them.
MHA_VALUES, MHA_MASK, MHA_KEEP, MHA_STALE, MHA_DROPOUT = (
    "project, split into heads, attend, merge, project out; gradients reach the inputs and "
    "the weights",
    "the mask is passed on to the attention",
    "keep_weights: the weights (B, H, Q, K) are kept in last_weights",
    "without keep_weights, last_weights is None (nothing left from an earlier call)",
    "dropout on the attention weights in training mode only")


def mha_case(gen: torch.Generator, batch: int, q_len: int, k_len: int, d_model: int,
             num_heads: int, bias: bool, keep_weights: bool, mask: str = "none",
             requirement: str = MHA_VALUES, dropout: float = 0.0, train: bool = False,
             calls: str = "once") -> dict:
    """One case; ``k_len=0`` means self-attention (key and value are the query); ``mask`` is
    none, random, padding, causal or dead_row (one query may attend to no key); ``calls``
    "kept, then not" runs the module once with keep_weights, then once without."""
    query = randn(gen, batch, q_len, d_model)
    if k_len:
        key, value = randn(gen, batch, k_len, d_model), randn(gen, batch, k_len, d_model)
    else:
        key, value, k_len = query.clone(), query.clone(), q_len
    case: dict[str, Any] = {"requirement": requirement, "query": query, "key": key,
                            "value": value}
    if mask == "random":
        case["mask"] = random_mask(gen, (batch, 1, q_len, k_len))
    elif mask == "padding":
        case["mask"] = random_mask(gen, (batch, 1, 1, k_len), p_allowed=0.6)
    elif mask == "causal":
        case["mask"] = torch.ones(q_len, k_len, dtype=torch.bool).tril()
    elif mask == "dead_row":  # one query may attend to no key: its attention output is zeros
        dead = random_mask(gen, (batch, 1, q_len, k_len))
        dead[0, 0, randint(gen, 0, q_len)] = False
        case["mask"] = dead
    case |= {"d_model": d_model, "num_heads": num_heads, "bias": bias,
             "keep_weights": keep_weights, "dropout": dropout, "train": train}
    if calls != "once":
        case["calls"] = calls
    return case | mha_weights(gen, "attn", d_model, bias)


#: What a run with dropout is judged on, besides :func:`ch01.dropout_report`.
MHA_FROM_DROPPED = "each head's output is its dropped weights times its values"
#: What an eval-mode run with dropout > 0 is judged on, besides its output.
MHA_SAME = "the same output on a second call (eval mode)"
#: The gradients of a module's weights, flattened one after the other in name order.
MHA_GRAD_WEIGHTS = "grad of the weights (all, by name)"


def dropout_probe(gen: torch.Generator, batch: int, q_len: int, k_len: int, d_model: int,
                  num_heads: int, dropout: float, keep_weights: bool, mask: str = "none",
                  seed: int = 0) -> dict:
    """A training-mode case whose output shows each head's attention weights: the values
    projected (identity) give every head a row [1, one-hot(key j)], so a head's output is
    [sum of its weights, its weights]; the output projection (a permutation) lays out
    weight (h, j) at column h·K + j and head h's sum at column H·K + h. Run with dropout and
    without, it tells dropout on the weights from dropout anywhere else."""
    case = mha_case(gen, batch, q_len, k_len, d_model, num_heads, bias=False,
                    keep_weights=keep_weights, mask=mask, requirement=MHA_DROPOUT,
                    dropout=dropout, train=True)
    d_head = d_model // num_heads
    assert k_len + 1 <= d_head, "each head needs a feature for its sum and one per key"
    value = torch.zeros(batch, k_len, d_model)
    permutation = torch.zeros(d_model, d_model, dtype=torch.float64)
    free = list(range(num_heads * (k_len + 1), d_model))
    for h in range(num_heads):
        value[:, :, h * d_head] = 1.0
        permutation[num_heads * k_len + h, h * d_head] = 1.0
        for j in range(k_len):
            value[:, j, h * d_head + 1 + j] = 1.0
            permutation[h * k_len + j, h * d_head + 1 + j] = 1.0
        for f in range(h * d_head + k_len + 1, (h + 1) * d_head):
            permutation[free.pop(0), f] = 1.0
    # float64 so that the notebooks carry these exact matrices (float32 weights travel as
    # random ones of the same spread); loading them into the module makes them float32.
    case["value"] = value
    case["w.attn.v_proj.weight"] = torch.eye(d_model, dtype=torch.float64)
    case["w.attn.out_proj.weight"] = permutation
    case["_seed"] = seed
    return case


def head_weights(output: Any, case: dict) -> tuple[Tensor, Tensor] | None:
    """From the output of a :func:`dropout_probe` case: each head's weights laid out
    (B, Q, H, K) and their sums (B, Q, H); None if the output is not (B, Q, D)."""
    heads, k_len = case["num_heads"], case["key"].shape[1]
    shape = (*case["query"].shape[:2], case["d_model"])
    if not isinstance(output, Tensor) or tuple(output.shape) != shape:
        return None
    output = output.detach().double()
    weights = output[..., :heads * k_len].unflatten(-1, (heads, k_len))
    return weights, output[..., heads * k_len:heads * (k_len + 1)]


def mha_dropout_run(module: nn.Module, case: dict) -> dict[str, Any]:
    """Run a :func:`dropout_probe` case in eval mode, then in training mode (seeded); describe
    what dropout did (:func:`ch01.dropout_report`). (Copied into student notebooks.)"""
    args = (case["query"], case["key"], case["value"])
    full = head_weights(module.eval()(*args, mask=case.get("mask"), cache=None), case)
    module.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case["_seed"])
        dropped = head_weights(module(*args, mask=case.get("mask"), cache=None), case)
    if full is None or dropped is None:
        reason = "not checked: forward must return a tensor of the query's shape"
        return {key: Missing(reason) for key in (D_RATIOS, D_SHARED, D_MIXED, D_SHARE,
                                                 MHA_FROM_DROPPED)}
    from_dropped = bool(torch.allclose(dropped[1], dropped[0].sum(-1), atol=1e-5, rtol=1e-4))
    return dropout_report(dropped[0].transpose(1, 2), full[0].transpose(1, 2),
                          case["dropout"]) | {MHA_FROM_DROPPED: from_dropped}


def mha_by_hand(case: dict, *, split: str = "heads", merge: str = "heads", out_proj: bool = True,
                use_mask: bool = True, scale: float | None = None, values: str = "value",
                drop: bool = False) -> tuple[Tensor, Tensor]:
    """Multi-head attention written out, right or with one of the usual mistakes (for hints):
    split/merge "heads" (right) or "plain" (a reshape without transposing); ``values`` names
    the input the values are projected from; ``drop`` drops every attention weight (p = 1)."""
    w, heads = state(case, "attn."), case["num_heads"]
    query, key, value = case["query"], case["key"], case[values]
    mask = case.get("mask") if use_mask else None
    b, q_len, d = query.shape

    def project(x: Tensor, name: str) -> Tensor:
        y = F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))
        if split == "plain":
            return y.reshape(b, heads, x.shape[1], d // heads)
        return oracle_split_heads(y, heads)

    q, k, v = project(query, "q_proj"), project(key, "k_proj"), project(value, "v_proj")
    scores = q @ k.transpose(-2, -1) / (scale or math.sqrt(d // heads))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    out = (weights * 0.0 if drop else weights) @ v
    out = out.reshape(b, q_len, d) if merge == "plain" else oracle_merge_heads(out)
    if out_proj:
        out = F.linear(out, w["out_proj.weight"], w.get("out_proj.bias"))
    return out, weights


def weights_left(value: Any) -> Any:
    """What ``last_weights`` holds, as a plain description (None, or what else is there)."""
    if value is None:
        return "None"
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


@register
class MultiHeadAttentionChecker(Checker):
    name = "MultiHeadAttention.forward"
    uses = ("split_heads", "merge_heads", "scaled_dot_product_attention")
    forbidden = ("torch.nn.MultiheadAttention", "torch.nn.functional.multi_head_attention_forward")

    def cases(self, gen, hidden):
        cases = [
            mha_case(gen, 2, 4, 0, 8, 2, bias=True, keep_weights=False),
            mha_case(gen, 2, 3, 5, 8, 2, bias=True, keep_weights=False, mask="padding",
                     requirement=MHA_MASK),
            mha_case(gen, 2, 4, 0, 12, 3, bias=False, keep_weights=False, mask="causal",
                     requirement=MHA_MASK),
            mha_case(gen, 2, 3, 5, 8, 2, bias=True, keep_weights=True, mask="random",
                     requirement=MHA_KEEP),
            mha_case(gen, 2, 3, 0, 8, 2, bias=True, keep_weights=False,
                     requirement=MHA_STALE, calls="kept, then not"),
            mha_case(gen, 2, 3, 4, 8, 2, bias=True, keep_weights=False, requirement=MHA_DROPOUT,
                     dropout=1.0, train=True),
            mha_case(gen, 2, 3, 4, 8, 2, bias=True, keep_weights=True, requirement=MHA_DROPOUT,
                     dropout=1.0, train=True),
            mha_case(gen, 2, 3, 0, 8, 2, bias=True, keep_weights=False, requirement=MHA_DROPOUT,
                     dropout=1.0, train=False),
            mha_case(gen, 2, 3, 4, 8, 2, bias=True, keep_weights=True, requirement=MHA_DROPOUT,
                     dropout=0.5, train=False),
            dropout_probe(gen, 2, 6, 5, 16, 2, 0.25, keep_weights=False, seed=3),
            dropout_probe(gen, 2, 6, 5, 16, 2, 0.25, keep_weights=True, seed=4),
            mha_case(gen, 2, 3, 0, 8, 4, bias=True, keep_weights=False) | {
                "_grad": randn(gen, 2, 3, 8)},
        ]
        if hidden:
            cases += [
                mha_case(gen, 2, 4, 0, 12, 3, bias=False, keep_weights=False),
                mha_case(gen, 1, 1, 7, 16, 1, bias=False, keep_weights=False),
                mha_case(gen, 2, 4, 0, 12, 3, bias=False, keep_weights=False, mask="causal",
                         requirement=MHA_MASK),
                mha_case(gen, 2, 3, 4, 16, 4, bias=True, keep_weights=False, mask="dead_row",
                         requirement=MHA_MASK),
                mha_case(gen, 2, 6, 0, 16, 16, bias=True, keep_weights=False, mask="padding",
                         requirement=MHA_MASK),
                mha_case(gen, 2, 5, 0, 64, 8, bias=True, keep_weights=True, mask="causal",
                         requirement=MHA_KEEP),
                mha_case(gen, 2, 3, 4, 64, 8, bias=False, keep_weights=True, mask="dead_row",
                         requirement=MHA_KEEP),
                mha_case(gen, 3, 1, 1, 16, 2, bias=True, keep_weights=True, mask="padding",
                         requirement=MHA_KEEP),
                mha_case(gen, 3, 2, 5, 16, 4, bias=False, keep_weights=False, mask="padding",
                         requirement=MHA_STALE, calls="kept, then not"),
                mha_case(gen, 3, 4, 2, 16, 4, bias=True, keep_weights=False, mask="causal",
                         requirement=MHA_DROPOUT, dropout=1.0, train=True),
                mha_case(gen, 1, 5, 0, 16, 2, bias=False, keep_weights=True, mask="random",
                         requirement=MHA_DROPOUT, dropout=1.0, train=True),
                mha_case(gen, 2, 2, 6, 16, 4, bias=True, keep_weights=True, mask="padding",
                         requirement=MHA_DROPOUT, dropout=0.5, train=False),
                mha_case(gen, 2, 5, 0, 12, 3, bias=False, keep_weights=False, mask="causal",
                         requirement=MHA_DROPOUT, dropout=0.3, train=False),
                dropout_probe(gen, 2, 7, 7, 32, 4, 0.5, keep_weights=False, mask="causal",
                              seed=8),
                dropout_probe(gen, 3, 4, 6, 24, 3, 0.3, keep_weights=True, seed=9),
                mha_case(gen, 2, 3, 5, 12, 3, bias=False, keep_weights=False, mask="padding")
                | {"_grad": randn(gen, 2, 3, 12)},
            ]
        return cases

    def run(self, obj, case):
        mask = case.get("mask")
        with quiet():
            module = obj(case["d_model"], case["num_heads"], dropout=case["dropout"],
                         bias=case["bias"])
            load(module, case, "attn.").train(case["train"])
            module.keep_weights = case["keep_weights"]
            if "_seed" in case:
                return mha_dropout_run(module, case)
            if "_grad" in case:
                inputs = {name: case[name].detach().clone().requires_grad_(True)
                          for name in ("query", "key", "value")}
                output = tracked_call(module, *(t.clone() for t in inputs.values()),
                                      mask=mask, cache=None)
                params = dict(sorted(module.named_parameters()))
                grads = gradients(output, inputs | params, case["_grad"])
                per_weight = [grads.pop(f"grad {name}") for name in params]
                missing = [g for g in per_weight if not isinstance(g, Tensor)]
                grads[MHA_GRAD_WEIGHTS] = missing[0] if missing else torch.cat(
                    [g.flatten() for g in per_weight])
                return {"output": output} | grads
            if case.get("calls") == "kept, then not":
                module.keep_weights = True
                module(case["query"], case["key"], case["value"], mask=mask, cache=None)
            module.keep_weights = case["keep_weights"]
            output = module(case["query"], case["key"], case["value"], mask=mask, cache=None)
            twice = bool(case["dropout"]) and not case["train"]  # eval mode: no randomness
            again = module(case["query"], case["key"], case["value"], mask=mask,
                           cache=None) if twice else None
        got = {"output": output}
        if twice:
            got[MHA_SAME] = isinstance(output, Tensor) and isinstance(again, Tensor) and \
                torch.equal(output, again)
        if case["keep_weights"] and not case["train"]:
            weights = module.last_weights
            got["last_weights"] = weights if weights is not None else Missing(
                "self.last_weights is None: with keep_weights set, forward keeps the "
                "attention weights there")
        if case.get("calls"):
            got["last_weights"] = weights_left(module.last_weights)
        return got

    def expected(self, case):
        if "_seed" in case:
            return self.expected_dropout(case)
        if "_grad" in case:
            return self.expected_gradients(case)
        query, key, value, mask = case["query"], case["key"], case["value"], case.get("mask")
        d_model, heads = case["d_model"], case["num_heads"]
        (b, q_len, _), k_len = query.shape, key.shape[1]
        mha = torch_mha(state(case, "attn."), d_model, heads)
        with quiet():
            output, weights = mha(query, key, value,
                                  attn_mask=torch_mask(mask, b, heads, q_len, k_len),
                                  need_weights=True, average_attn_weights=False)
        output, weights = output.detach(), weights.detach()
        bias = mha.out_proj.bias.detach() if case["bias"] else torch.zeros(d_model)
        if mask is not None:
            # A query that may attend to no key gets a zero attention output here (PyTorch
            # gives NaN): after the output projection that is the projection's bias.
            dead = ~mask.broadcast_to(b, 1, q_len, k_len).any(-1)[:, 0, :, None]  # (B, Q, 1)
            output = torch.where(dead, bias, output)
            weights = weights.nan_to_num(0.0)
        if case["train"] and case["dropout"] == 1.0:
            # Every attention weight dropped: the attention output is zeros, the output the
            # projection's bias.
            output = bias.expand_as(output).clone()
        result = {"output": output}
        if case["keep_weights"] and not case["train"]:
            result["last_weights"] = weights
        if case.get("calls"):
            result["last_weights"] = "None"
        if case["dropout"] and not case["train"]:
            result[MHA_SAME] = True
        return result

    def expected_dropout(self, case):
        """What dropout on the attention weights does to a :func:`dropout_probe` case, through
        PyTorch's own multi-head attention (dropout on the weights, in training mode)."""
        query, key, value, mask = case["query"], case["key"], case["value"], case.get("mask")
        (b, q_len, _), k_len, heads = query.shape, key.shape[1], case["num_heads"]
        mha = torch_mha(state(case, "attn."), case["d_model"], heads)
        mha.dropout = case["dropout"]
        attn_mask = torch_mask(mask, b, heads, q_len, k_len)
        with quiet(), torch.no_grad():
            full = head_weights(mha(query, key, value, attn_mask=attn_mask,
                                    need_weights=False)[0], case)
            mha.train()
            torch.manual_seed(case["_seed"])
            dropped = head_weights(mha(query, key, value, attn_mask=attn_mask,
                                       need_weights=False)[0], case)
        from_dropped = bool(torch.allclose(dropped[1], dropped[0].sum(-1), atol=1e-5,
                                           rtol=1e-4))
        return dropout_report(dropped[0].transpose(1, 2), full[0].transpose(1, 2),
                              case["dropout"]) | {MHA_FROM_DROPPED: from_dropped}

    def expected_gradients(self, case):
        """The output and gradients of a "_grad" case, by autograd through F.linear and
        F.scaled_dot_product_attention."""
        weights = {name: w.clone().requires_grad_(True)
                   for name, w in sorted(state(case, "attn.").items())}
        heads, mask = case["num_heads"], case.get("mask")

        def forward(query, key, value, *flat):
            w = dict(zip(weights, flat))

            def proj(x, name):
                return F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))

            q, k, v = (oracle_split_heads(proj(x, name), heads) for x, name in
                       ((query, "q_proj"), (key, "k_proj"), (value, "v_proj")))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return proj(oracle_merge_heads(out), "out_proj")

        names = ("query", "key", "value")
        inputs = [case[name].clone().requires_grad_(True) for name in names]
        output = forward(*inputs, *weights.values())
        grads = torch.autograd.grad(output, [*inputs, *weights.values()], case["_grad"])
        return {"output": output.detach()} | {
            f"grad {name}": grad for name, grad in zip(names, grads)} | {
            MHA_GRAD_WEIGHTS: torch.cat([g.flatten() for g in grads[len(names):]])}

    def mistakes(self, case):
        d_model = case["d_model"]
        if case.get("calls"):
            return []  # read from the answer (symptom)
        if "_seed" in case:
            return distinct(self, case, [
                ("dropout acts on each head's attention weights, not on the values, the "
                 "heads' outputs or the merged output: with dropout, a head's output must stay "
                 "its (dropped) weights times its values.", {MHA_FROM_DROPPED: False}),
                *dropout_mistakes(case["dropout"])])
        if case["dropout"] and not case["train"] and case["dropout"] < 1.0:
            return [("dropout is for training only: in eval mode (self.training False) the "
                     "attention uses no dropout, so two calls give the same output.",
                     {MHA_SAME: False})]
        if case["dropout"]:
            if case["train"]:
                return [("in training mode, drop attention weights with probability "
                         "self.dropout (here 1: every weight is dropped), on either path.",
                         {"output": mha_by_hand(case)[0]})]
            return [("dropout is for training only: in eval mode (self.training False) the "
                     "attention uses no dropout.", {"output": mha_by_hand(case, drop=True)[0]})]
        variants = [
            ({"merge": "plain"}, "heads merged in the wrong order: (B, H, Q, Dh) must become "
             "(B, Q, H, Dh) before the heads are joined; merge_heads does that."),
            ({"split": "plain", "merge": "plain"}, "the heads were split (and merged) with a "
             "plain reshape, which mixes positions into heads: use split_heads and merge_heads."),
            ({"out_proj": False}, "the output projection is missing: the merged heads go "
             "through self.out_proj."),
            ({"use_mask": False}, "the mask was not passed on to the attention."),
            ({"scale": math.sqrt(d_model)}, "scale the scores by the square root of one "
             "head's width, d_model / num_heads, not of d_model."),
            ({"values": "key"}, "the values are projected from `value`, not from `key`."),
        ]
        found = []
        for variant, message in variants:
            if variant.get("use_mask") is False and "mask" not in case:
                continue
            if "values" in variant and torch.equal(case["key"], case["value"]):
                continue
            found.append((message, {"output": mha_by_hand(case, **variant)[0]}))
        return distinct(self, case, found)

    def symptom(self, case, got):
        left = got.get("last_weights")
        if case.get("calls") and isinstance(left, str) and left != "None":
            return ("without keep_weights, set last_weights to None: weights left from an "
                    "earlier call would be taken for this call's.")
        if case["keep_weights"] and isinstance(left, Missing):
            return ("with keep_weights set, attend the explicit way (the attention function "
                    "that returns its weights) and keep the weights (B, H, Q, K).")
        return None

    @property
    def oracle(self):
        return oracle_mha_forward

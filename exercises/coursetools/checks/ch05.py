"""Checkers for chapter 5: the causal and target masks, the decoder layer and the decoder stack.

The oracle for the layers is ``nn.TransformerDecoderLayer`` / ``nn.TransformerDecoder`` holding
the case's weights (PyTorch's boolean masks mean True = *not* allowed, hence the ``~``). The
step-by-step (key/value cache) path is checked against the full causal forward pass.

The functional helpers at the top (``decoder_layer_fn``...) compute a layer from its weights
with plain PyTorch ops; they are the oracles used while other exercises are checked, and the
"what if" variants behind the hints. Chapter 6 builds on them.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ch04 import TRANSFORMER_MODULES
from .core import Checker, Missing, namespace_of, randint, randn, random_mask, register

# --- weights, as the course's modules name them ------------------------------------------------


def linear_weights(gen: torch.Generator, name: str, d_in: int, d_out: int,
                   bias: bool = True) -> dict[str, Tensor]:
    w = {f"w.{name}.weight": randn(gen, d_out, d_in, scale=d_in**-0.5)}
    if bias:
        w[f"w.{name}.bias"] = randn(gen, d_out, scale=0.1)
    return w


def norm_weights(gen: torch.Generator, name: str, d: int, bias: bool = True) -> dict[str, Tensor]:
    w = {f"w.{name}.weight": 1.0 + randn(gen, d, scale=0.1)}
    if bias:
        w[f"w.{name}.bias"] = randn(gen, d, scale=0.1)
    return w


def attention_weights(gen, name, d, bias=True):
    w = {}
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        w.update(linear_weights(gen, f"{name}.{proj}", d, d, bias))
    return w


def layer_weights(gen: torch.Generator, prefix: str, d: int, d_ff: int, bias: bool = True,
                  cross: bool = True) -> dict[str, Tensor]:
    """The parameters of a DecoderLayer (``cross=True``) or an EncoderLayer, under ``prefix``."""
    w = attention_weights(gen, prefix + "self_attn", d, bias)
    if cross:
        w.update(attention_weights(gen, prefix + "cross_attn", d, bias))
    w.update(linear_weights(gen, prefix + "feed_forward.linear1", d, d_ff, bias))
    w.update(linear_weights(gen, prefix + "feed_forward.linear2", d_ff, d, bias))
    blocks = ("self_attn_block", "cross_attn_block", "ff_block") if cross else (
        "attn_block", "ff_block")
    for block in blocks:
        w.update(norm_weights(gen, f"{prefix}{block}.norm", d, bias))
    return w


def weights_of(case: dict[str, Any], prefix: str = "") -> dict[str, Tensor]:
    """The case's weights under ``prefix``, named as in the module's state_dict."""
    start = len("w." + prefix)
    return {k[start:]: v for k, v in case.items() if k.startswith("w." + prefix)}


# --- PyTorch's own layers with those weights ---------------------------------------------------


def torch_layer_state(w: dict[str, Tensor], cross: bool = True) -> dict[str, Tensor]:
    """Our layer's weights renamed for nn.TransformerDecoderLayer (or EncoderLayer), which
    stacks W_Q, W_K, W_V into one ``in_proj_weight``."""
    state = {}
    pairs = [("self_attn", "self_attn")] + ([("cross_attn", "multihead_attn")] if cross else [])
    for ours, theirs in pairs:
        state[f"{theirs}.in_proj_weight"] = torch.cat(
            [w[f"{ours}.{p}_proj.weight"] for p in "qkv"])
        if f"{ours}.q_proj.bias" in w:
            state[f"{theirs}.in_proj_bias"] = torch.cat([w[f"{ours}.{p}_proj.bias"] for p in "qkv"])
        for kind in ("weight", "bias"):
            if f"{ours}.out_proj.{kind}" in w:
                state[f"{theirs}.out_proj.{kind}"] = w[f"{ours}.out_proj.{kind}"]
    blocks = ("self_attn_block", "cross_attn_block", "ff_block") if cross else (
        "attn_block", "ff_block")
    names = {"feed_forward.linear1": "linear1", "feed_forward.linear2": "linear2"}
    names.update({f"{block}.norm": f"norm{i}" for i, block in enumerate(blocks, 1)})
    for ours, theirs in names.items():
        for kind in ("weight", "bias"):
            if f"{ours}.{kind}" in w:
                state[f"{theirs}.{kind}"] = w[f"{ours}.{kind}"]
    return state


def torch_layer(cfg: dict[str, Any], w: dict[str, Tensor], cross: bool = True) -> nn.Module:
    """nn.TransformerDecoderLayer (or EncoderLayer) holding weights ``w``. It is left in
    training mode (with dropout 0) so that PyTorch never takes its fused fast path."""
    cls = nn.TransformerDecoderLayer if cross else nn.TransformerEncoderLayer
    layer = cls(cfg["d_model"], cfg["num_heads"], cfg["d_ff"], dropout=0.0,
                activation=cfg.get("activation", "relu"), batch_first=True,
                norm_first=cfg.get("norm_first", False), bias=cfg.get("bias", True))
    layer.load_state_dict(torch_layer_state(w, cross))
    return layer


def torch_mask(mask: Tensor | None, batch: int, heads: int, q_len: int, k_len: int
               ) -> Tensor | None:
    """Our mask (True = may attend, broadcastable to (B, H, Q, K)) as PyTorch's boolean
    attn_mask (B * H, Q, K), True = NOT allowed."""
    if mask is None:
        return None
    return ~mask.expand(batch, heads, q_len, k_len).reshape(batch * heads, q_len, k_len)


def torch_decoder_stack(layers: list[nn.Module], x: Tensor, memory: Tensor, heads: int,
                        self_mask: Tensor | None, memory_mask: Tensor | None) -> list[Tensor]:
    """Run PyTorch decoder layers one after the other; return every layer's output."""
    b, t, s = x.shape[0], x.shape[1], memory.shape[1]
    tgt, mem = torch_mask(self_mask, b, heads, t, t), torch_mask(memory_mask, b, heads, t, s)
    outputs = []
    with torch.no_grad():
        for layer in layers:
            x = layer(x, memory, tgt_mask=tgt, memory_mask=mem)
            outputs.append(x)
    return outputs


# --- the same computations written out, from a weight dict --------------------------------------


def attend(w: dict[str, Tensor], name: str, heads: int, query: Tensor, kv: Tensor,
           mask: Tensor | None, cache: Any = None, static_kv: bool = False) -> Tensor:
    """Multi-head attention from the weights under ``name`` (q_proj, k_proj, v_proj, out_proj);
    ``cache`` is anything with ``k``, ``v`` and ``append(k, v)`` (the notebook's KVCache)."""
    def proj(p: str, t: Tensor) -> Tensor:
        return F.linear(t, w[f"{name}.{p}.weight"], w.get(f"{name}.{p}.bias"))

    def split(t: Tensor) -> Tensor:
        return t.unflatten(-1, (heads, t.shape[-1] // heads)).transpose(1, 2)

    q = split(proj("q_proj", query))
    if cache is not None and static_kv and cache.k is not None:
        k, v = cache.k, cache.v
    else:
        k, v = split(proj("k_proj", kv)), split(proj("v_proj", kv))
        if cache is not None:
            k, v = cache.append(k, v)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if mask is not None:
        out = out.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return proj("out_proj", out.transpose(1, 2).flatten(2))


def residual(w: dict[str, Tensor], block: str, cfg: dict[str, Any], x: Tensor, fn,
             mode: str = "normal") -> Tensor:
    """The residual sublayer around ``fn``; ``mode`` "skip" leaves x unchanged, "bare" is fn
    alone (no residual, no norm): two mistakes the hints recognise."""
    if mode == "skip":
        return x
    if mode == "bare":
        return fn(x)
    weight, bias = w[f"{block}.norm.weight"], w.get(f"{block}.norm.bias")

    def norm(t: Tensor) -> Tensor:
        return F.layer_norm(t, weight.shape, weight, bias, cfg.get("eps", 1e-5))

    return x + fn(norm(x)) if cfg.get("norm_first", False) else norm(x + fn(x))


def feed_forward(w: dict[str, Tensor], cfg: dict[str, Any], x: Tensor) -> Tensor:
    act = F.gelu if cfg.get("activation", "relu") == "gelu" else F.relu
    hidden = act(F.linear(x, w["feed_forward.linear1.weight"], w.get("feed_forward.linear1.bias")))
    return F.linear(hidden, w["feed_forward.linear2.weight"], w.get("feed_forward.linear2.bias"))


def decoder_layer_fn(w: dict[str, Tensor], cfg: dict[str, Any], x: Tensor, memory: Tensor,
                     self_mask: Tensor | None = None, memory_mask: Tensor | None = None,
                     cache: Any = None, cross_kv: str = "memory", swap_masks: bool = False,
                     modes: tuple[str, str, str] = ("normal",) * 3,
                     cross_first: bool = False) -> Tensor:
    """A decoder layer from its weights; the keyword arguments after ``cache`` make the wrong
    versions the hints look for."""
    heads = cfg["num_heads"]
    if swap_masks:
        self_mask, memory_mask = memory_mask, self_mask
    self_cache, cross_cache = cache if cache is not None else (None, None)

    def self_block(x: Tensor) -> Tensor:
        return residual(w, "self_attn_block", cfg, x,
                        lambda y: attend(w, "self_attn", heads, y, y, self_mask, self_cache),
                        modes[0])

    def cross_block(x: Tensor) -> Tensor:
        return residual(w, "cross_attn_block", cfg, x,
                        lambda y: attend(w, "cross_attn", heads, y,
                                         memory if cross_kv == "memory" else y,
                                         memory_mask, cross_cache, static_kv=True), modes[1])

    x = self_block(cross_block(x)) if cross_first else cross_block(self_block(x))
    return residual(w, "ff_block", cfg, x, lambda y: feed_forward(w, cfg, y), modes[2])


def encoder_layer_fn(w: dict[str, Tensor], cfg: dict[str, Any], x: Tensor,
                     mask: Tensor | None = None) -> Tensor:
    x = residual(w, "attn_block", cfg, x,
                 lambda y: attend(w, "self_attn", cfg["num_heads"], y, y, mask))
    return residual(w, "ff_block", cfg, x, lambda y: feed_forward(w, cfg, y))


def layer_config(layer: nn.Module) -> dict[str, Any]:
    """The settings of one of the notebook's decoder (or encoder) layers, read off the module."""
    block = layer.ff_block
    return {"num_heads": layer.self_attn.num_heads, "norm_first": block.norm_first,
            "activation": layer.feed_forward.activation, "eps": block.norm.eps}


def oracle_decoder_layer(self, x: Tensor, memory: Tensor, self_mask: Tensor | None = None,
                         memory_mask: Tensor | None = None, cache=None) -> Tensor:
    """DecoderLayer.forward written with PyTorch ops on the layer's own weights."""
    return decoder_layer_fn(dict(self.named_parameters()), layer_config(self), x, memory,
                            self_mask, memory_mask, cache)


def oracle_decoder(self, x: Tensor, memory: Tensor, self_mask: Tensor | None = None,
                   memory_mask: Tensor | None = None, cache=None) -> Tensor:
    """Decoder.forward written with PyTorch ops on the stack's own weights."""
    for i, layer in enumerate(self.layers):
        x = oracle_decoder_layer(layer, x, memory, self_mask, memory_mask,
                                 cache[i] if cache is not None else None)
    if self.norm is not None:
        x = F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias,
                         self.norm.eps)
    return x


# --- cases ---------------------------------------------------------------------------------------


def lengths_mask(gen: torch.Generator, batch: int, length: int, padded_row: int = 0) -> Tensor:
    """(B, L) True for real tokens: each row has a random length >= 1, and row ``padded_row``
    (if any) has padding for sure (when L > 1)."""
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    if padded_row is not None and length > 1:
        lengths[padded_row] = randint(gen, 1, length)
    return torch.arange(length)[None, :] < lengths[:, None]


def tril(length: int) -> Tensor:
    return torch.tril(torch.ones(length, length)).bool()


LAYER_CFG = ("d_model", "num_heads", "d_ff", "activation", "norm_first", "bias")


def layer_case(gen: torch.Generator, *, batch: int, t: int, s: int, d: int = 16, heads: int = 2,
               d_ff: int = 32, activation: str = "relu", norm_first: bool = False,
               bias: bool = True, self_mask: str = "causal", memory_mask: bool = True,
               mode: str = "full", layers: int | None = None, final_norm: bool = False
               ) -> dict[str, Any]:
    """One case for DecoderLayer.forward (``layers=None``) or Decoder.forward."""
    case: dict[str, Any] = {"mode": mode, "x": randn(gen, batch, t, d),
                            "memory": randn(gen, batch, s, d)}
    if self_mask == "causal":
        case["self_mask"] = tril(t)
    elif self_mask == "target":
        case["self_mask"] = lengths_mask(gen, batch, t)[:, None, None, :] & tril(t)
    elif self_mask == "random":
        case["self_mask"] = random_mask(gen, (batch, 1, t, t))
    if memory_mask:
        case["memory_mask"] = lengths_mask(gen, batch, s)[:, None, None, :]
    case.update(d_model=d, num_heads=heads, d_ff=d_ff, activation=activation,
                norm_first=norm_first, bias=bias)
    if layers is None:
        case.update(layer_weights(gen, "", d, d_ff, bias))
    else:
        case.update(num_layers=layers, final_norm=final_norm)
        for i in range(layers):
            case.update(layer_weights(gen, f"layers.{i}.", d, d_ff, bias))
        if final_norm:
            case.update(norm_weights(gen, "norm", d))
    return case


def step_by_step(module: nn.Module, case: dict[str, Any], cache: Any) -> Tensor:
    """Feed the decoder input one position at a time through ``module`` with ``cache``."""
    x = case["x"]
    steps = [module(x[:, t:t + 1], case["memory"], self_mask=None,
                    memory_mask=case.get("memory_mask"), cache=cache)
             for t in range(x.shape[1])]
    return torch.cat(steps, dim=1)


#: what each sublayer adds in a dropout case (the bias of its last linear, in every feature)
DROPOUT_ADDS = {"self_attn.out_proj.bias": 1.0, "cross_attn.out_proj.bias": 2.0,
                "feed_forward.linear2.bias": 4.0}
SUBLAYERS = ("self-attention", "cross-attention", "feed-forward")


def dropout_case(gen: torch.Generator, *, batch: int, t: int, s: int, d: int, p: float,
                 heads: int = 2) -> dict[str, Any]:
    """A DecoderLayer case in training mode with dropout ``p``: every weight 0 but the biases of
    the sublayers' last linears (DROPOUT_ADDS) and the norms' scales (1), so that each sublayer
    gives the same constant whatever its input and its inner (attention, feed-forward) dropout;
    pre-norm, so that the output minus the input is the sum of the three sublayers' outputs
    after their residual dropout: each either dropped (0) or kept and scaled by 1 / (1 - p)."""
    case = layer_case(gen, batch=batch, t=t, s=s, d=d, heads=heads, d_ff=2 * d,
                      norm_first=True, self_mask="target", mode="train")
    for key, value in case.items():
        if key.startswith("w."):
            case[key] = torch.ones_like(value) if key.endswith("norm.weight") else \
                torch.zeros_like(value)
    for name, value in DROPOUT_ADDS.items():
        case[f"w.{name}"] = torch.full((d,), value)
    case["dropout"] = p
    return case


def dropout_sums(case: dict[str, Any], rule: tuple[str, str, str] = ("once",) * 3) -> Tensor:
    """The distinct values of output - input in a dropout case, rounded to 3 decimals: each
    sublayer adds 0 or c / (1 - p) ("once", its dropout), c ("none": no dropout) or 0 or
    c / (1 - p)^2 ("twice": dropped twice)."""
    keep = 1.0 - case["dropout"]
    sums = {0.0}
    for how, name in zip(rule, DROPOUT_ADDS):
        c = float(case[f"w.{name}"][0])
        added = {"once": (0.0, c / keep), "none": (c,), "twice": (0.0, c / keep**2)}[how]
        sums = {total + a for total in sums for a in added}
    return torch.tensor(sorted(sums)).round(decimals=3)


def _kv_cache_class(obj: Any) -> type:
    ns = namespace_of(obj) or {}
    if "KVCache" not in ns:
        raise NameError("KVCache is not defined: run the provided code cell first")
    return ns["KVCache"]


# --- the checkers -----------------------------------------------------------------------------


CM_VALUES, CM_DEVICE = ("True on and below the diagonal, a boolean (L, L) mask",
                        "built on `device` when one is given")


@register
class CausalMaskChecker(Checker):
    name = "causal_mask"

    def cases(self, gen, hidden):
        cases = [{"requirement": CM_VALUES, "length": 4}, {"requirement": CM_VALUES, "length": 7},
                 {"requirement": CM_VALUES, "length": 11},
                 {"requirement": CM_DEVICE, "length": 3, "device": "meta"}]
        if hidden:
            cases += [{"requirement": CM_VALUES, "length": 1},
                      {"requirement": CM_VALUES, "length": 2},
                      {"requirement": CM_VALUES, "length": randint(gen, 10, 20)},
                      {"requirement": CM_DEVICE, "length": randint(gen, 5, 9), "device": "meta"}]
        return cases

    def run(self, obj, case):
        if "device" in case:
            return {"mask": obj(case["length"], device=case["device"])}
        return {"mask": obj(case["length"])}

    def expected(self, case):
        # Query i (row) may see key j (column) when j <= i: the lower triangle, diagonal included.
        n = case["length"]
        return {"mask": torch.tril(torch.ones(n, n, device=case.get("device"))).bool()}

    def mistakes(self, case):
        if "device" in case:
            return []
        ones = torch.ones(case["length"], case["length"])
        inverted = ("the mask is inverted or transposed: True (allowed) must be on and below "
                    "the diagonal (row = query, column = key).")
        return [
            ("off by one: the diagonal must be True (position i may attend to itself).",
             {"mask": torch.tril(ones, -1).bool()}),
            ("off by one: position i may not see position i + 1.",
             {"mask": torch.tril(ones, 1).bool()}),
            (inverted, {"mask": torch.triu(ones).bool()}),
            (inverted, {"mask": ~torch.tril(ones).bool()}),
            (inverted, {"mask": torch.triu(ones, 1).bool()}),
        ]

    def symptom(self, case, got):
        mask = got.get("mask")
        if isinstance(mask, Tensor) and mask.dtype != torch.bool:
            return "return a boolean mask (dtype torch.bool)."
        if isinstance(mask, Tensor) and "device" in case and mask.device.type != case["device"]:
            return ("create the mask on the `device` you are given: a tensor made from "
                    "scratch lands on the CPU unless told otherwise.")
        return None

    @property
    def oracle(self):
        def causal_mask(length, device=None):
            return torch.tril(torch.ones(length, length, device=device)).bool()
        return causal_mask


TM_VALUES, TM_DEVICE = ("causal AND hiding padding keys (any pad_id), shape (B, 1, T, T)",
                        "on the tokens' device")


@register
class TargetMaskChecker(Checker):
    name = "target_mask"
    uses = ("causal_mask",)

    def cases(self, gen, hidden):
        def tokens(batch, length, pad_id):
            """Ids other than pad_id, some below it (the first token of row 0 surely, as it
            is always real), padded at the end of random lengths."""
            real = lengths_mask(gen, batch, length)
            ids = torch.randint(0, pad_id + 9, (batch, length), generator=gen)
            ids[ids >= pad_id] += 1
            if pad_id > 0:
                ids[0, 0] = pad_id - 1
            return ids.masked_fill(~real, pad_id)

        def meta(batch, length):
            return torch.zeros(batch, length, dtype=torch.long, device="meta")

        cases = [{"requirement": TM_VALUES, "tokens": tokens(3, 5, 0), "pad_id": 0},
                 {"requirement": TM_VALUES, "tokens": tokens(2, 4, 3), "pad_id": 3},
                 {"requirement": TM_VALUES, "tokens": tokens(1, 4, 2), "pad_id": 2},
                 {"requirement": TM_DEVICE, "tokens": meta(2, 3), "pad_id": 0}]
        if hidden:
            cases += [{"requirement": TM_VALUES, "tokens": tokens(1, 1, 0), "pad_id": 0},
                      {"requirement": TM_VALUES, "tokens": tokens(4, 8, 3), "pad_id": 3},
                      {"requirement": TM_VALUES, "tokens": tokens(1, 6, 5), "pad_id": 5},
                      {"requirement": TM_VALUES, "tokens": torch.arange(3, 9).view(2, 3),
                       "pad_id": 0},
                      {"requirement": TM_DEVICE, "tokens": meta(3, 6), "pad_id": 2}]
        return cases

    def run(self, obj, case):
        return {"mask": obj(case["tokens"], pad_id=case["pad_id"])}

    def expected(self, case):
        tokens = case["tokens"]
        t = tokens.shape[1]
        key_is_real = (tokens != case["pad_id"]).view(tokens.shape[0], 1, 1, t)
        causal = torch.tril(torch.ones(t, t, device=tokens.device)).bool()
        return {"mask": torch.logical_and(key_is_real, causal)}

    def mistakes(self, case):
        tokens, pad = case["tokens"], case["pad_id"]
        if tokens.device.type == "meta":
            return []
        t = tokens.shape[1]
        real = tokens != pad
        found = [
            ("the padding part is missing: also hide keys that are padding (pad_id).",
             {"mask": tril(t).expand(tokens.shape[0], 1, t, t)}),
            ("the causal part is missing: combine the padding mask with a causal one.",
             {"mask": real[:, None, None, :].expand(-1, 1, t, t)}),
            ("padding must hide keys (the last axis), not queries: the padding part has the "
             "shape (B, 1, 1, T).", {"mask": real[:, None, :, None] & tril(t)}),
            ("combine the two masks with AND: allowed only if both allow it.",
             {"mask": real[:, None, None, :] | tril(t)}),
        ]
        if pad != 0:
            found.append(("use the pad_id you are given: padding is not always id 0.",
                          {"mask": (tokens != 0)[:, None, None, :] & tril(t)}))
        if bool((tokens < pad).any()):
            found.append(("padding is the id pad_id exactly: a real token's id may be smaller "
                          "than pad_id.", {"mask": (tokens > pad)[:, None, None, :] & tril(t)}))
        return found

    def symptom(self, case, got):
        mask, tokens = got.get("mask"), case["tokens"]
        t = tokens.shape[1]
        if isinstance(mask, Tensor) and mask.dim() == 4 and t > 1 and mask.shape[2] == 1:
            return ("the causal part is missing: each query row needs its own keys, combine "
                    "the padding mask with a causal one.")
        if isinstance(mask, Tensor) and mask.dim() != 4:
            return ("return shape (batch, 1, T, T): a padding mask (batch, 1, 1, T) combined "
                    "with a causal (T, T) one broadcasts to it.")
        if isinstance(mask, Tensor) and mask.device.type != tokens.device.type:
            return ("build the mask on the tokens' device: a tensor made from scratch lands on "
                    "the CPU unless told otherwise.")
        return None

    @property
    def oracle(self):
        def target_mask(tokens, pad_id=0):
            t = tokens.shape[1]
            causal = torch.tril(torch.ones(t, t, device=tokens.device)).bool()
            return (tokens != pad_id)[:, None, None, :] & causal
        return target_mask


DL_VALUES, DL_MASKS, DL_CACHE = (
    "self-attention, cross-attention over memory, feed-forward, each in its sublayer (whose "
    "dropout acts in training mode only)",
    "self_mask reaches the self-attention, memory_mask the cross-attention",
    "step by step with the cache, the same as the full pass (self-attention appends, "
    "cross-attention computes the memory's keys once)")


@register
class DecoderLayerChecker(Checker):
    name = "DecoderLayer.forward"
    forbidden = TRANSFORMER_MODULES

    def cases(self, gen, hidden):
        cases = [
            {"requirement": DL_VALUES} | layer_case(gen, batch=1, t=4, s=5, d=8, d_ff=16,
                                                    self_mask="none", memory_mask=False),
            {"requirement": DL_MASKS} | layer_case(gen, batch=2, t=5, s=5, d=8, d_ff=16,
                                                   self_mask="target"),
            {"requirement": DL_CACHE} | layer_case(gen, batch=2, t=4, s=6, d=8, d_ff=16,
                                                   heads=2, norm_first=True,
                                                   activation="gelu", mode="cached"),
            # Built with dropout, used in eval mode: the same output as without dropout.
            {"requirement": DL_VALUES, "dropout": 0.4} | layer_case(
                gen, batch=2, t=3, s=4, d=8, d_ff=16, self_mask="target", mode="eval"),
            # In training mode each sublayer's output goes through its dropout (p = 0.5).
            {"requirement": DL_VALUES} | dropout_case(gen, batch=2, t=4, s=3, d=16, p=0.5),
        ]
        if hidden:
            cases += [
                {"requirement": DL_VALUES} | layer_case(gen, batch=3, t=6, s=3, d=24, heads=3,
                                                        bias=False, self_mask="none",
                                                        memory_mask=False),
                {"requirement": DL_VALUES} | layer_case(gen, batch=1, t=1, s=7,
                                                        norm_first=True, self_mask="none",
                                                        memory_mask=False),
                {"requirement": DL_MASKS} | layer_case(gen, batch=2, t=4, s=4, heads=4,
                                                       self_mask="random", activation="gelu"),
                {"requirement": DL_MASKS} | layer_case(gen, batch=2, t=3, s=6, norm_first=True),
                {"requirement": DL_CACHE} | layer_case(gen, batch=3, t=5, s=4, mode="cached"),
                {"requirement": DL_VALUES, "dropout": 0.7} | layer_case(
                    gen, batch=3, t=5, s=2, heads=4, activation="gelu", mode="eval"),
                {"requirement": DL_VALUES} | dropout_case(gen, batch=3, t=8, s=5, d=32, p=0.25,
                                                          heads=4),
            ]
        return cases

    def run(self, obj, case):
        layer = obj(**{k: case[k] for k in LAYER_CFG}, dropout=case.get("dropout", 0.0))
        layer.load_state_dict(weights_of(case))
        layer.train(case["mode"] == "train")
        with torch.no_grad():
            if case["mode"] == "train":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    out = layer(case["x"], case["memory"], self_mask=case.get("self_mask"),
                                memory_mask=case.get("memory_mask"))
                if not isinstance(out, Tensor) or out.shape != case["x"].shape:
                    return {"added": Missing("the output does not have the input's shape")}
                # What the sublayers added to the input, each distinct value once.
                return {"added": torch.unique((out - case["x"]).round(decimals=3))}
            if case["mode"] == "cached":
                kv_cache = _kv_cache_class(obj)
                cache = (kv_cache(), kv_cache())
                out = step_by_step(layer, case, cache)
                return {"output": out, "self_cache_len": torch.tensor(len(cache[0])),
                        "cross_cache_len": torch.tensor(len(cache[1]))}
            return {"output": layer(case["x"], case["memory"], self_mask=case.get("self_mask"),
                                    memory_mask=case.get("memory_mask"))}

    def expected(self, case):
        if case["mode"] == "train":
            return {"added": dropout_sums(case)}
        layer = torch_layer(case, weights_of(case))
        # Step by step with a cache must give what the full pass gives with a causal mask.
        self_mask = tril(case["x"].shape[1]) if case["mode"] == "cached" else case.get("self_mask")
        out = torch_decoder_stack([layer], case["x"], case["memory"], case["num_heads"],
                                  self_mask, case.get("memory_mask"))[-1]
        result = {"output": out}
        if case["mode"] == "cached":
            result["self_cache_len"] = torch.tensor(case["x"].shape[1])
            result["cross_cache_len"] = torch.tensor(case["memory"].shape[1])
        return result

    def mistakes(self, case):
        if case["mode"] == "train":
            return self._dropout_mistakes(case)
        w = weights_of(case)
        cfg = {k: case[k] for k in LAYER_CFG}
        self_mask = tril(case["x"].shape[1]) if case["mode"] == "cached" else case.get("self_mask")
        memory_mask = case.get("memory_mask")

        def variant(**kw):
            try:
                return decoder_layer_fn(w, cfg, case["x"], case["memory"], self_mask,
                                        memory_mask, **kw)
            except RuntimeError:
                return None

        found = [
            ("the cross-attention's keys and values come from the encoder's `memory`, not "
             "from the decoder's own states.", variant(cross_kv="x")),
            ("the self-attention comes first, then the cross-attention, then the "
             "feed-forward.", variant(cross_first=True)),
        ]
        if self_mask is not None and memory_mask is not None:
            found.append(("the masks are swapped: self_mask belongs to the self-attention, "
                          "memory_mask to the cross-attention.", variant(swap_masks=True)))
        names = ("self-attention", "cross-attention", "feed-forward")
        for i, name in enumerate(names):
            modes = ["normal"] * 3
            modes[i] = "bare"
            found.append((f"the {name} has no residual connection and norm: wrap it in its "
                          "sublayer block.", variant(modes=tuple(modes))))
            modes[i] = "skip"
            found.append((f"the {name} sublayer's result is lost: each sublayer's output is "
                          "the next one's input.", variant(modes=tuple(modes))))
        if self_mask is not None or memory_mask is not None:
            found.append(("pass the masks on to the attention layers (self_mask, memory_mask).",
                          decoder_layer_fn(w, cfg, case["x"], case["memory"])))
        return [(hint, {"output": out}) for hint, out in found if out is not None]

    def _dropout_mistakes(self, case):
        found = [("in training mode each sublayer's output goes through its dropout before "
                  "the residual sum (the Sublayer blocks do that): here nothing is dropped.",
                  dropout_sums(case, ("none",) * 3))]
        for rule in itertools.product(("once", "none", "twice"), repeat=3):
            if rule in (("once",) * 3, ("none",) * 3):
                continue
            parts = []
            undropped = " and the ".join(n for n, how in zip(SUBLAYERS, rule) if how == "none")
            if undropped:
                parts.append(f"in training mode the output of the {undropped} goes through "
                             "its sublayer's dropout too")
            twice = " and the ".join(n for n, how in zip(SUBLAYERS, rule) if how == "twice")
            if twice:
                parts.append(f"the output of the {twice} is dropped twice: its sublayer "
                             "block already applies the dropout")
            hint = "; ".join(parts) + "."
            found.append((hint, dropout_sums(case, rule)))
        return [(hint, {"added": added}) for hint, added in found]

    def symptom(self, case, got):
        if case["mode"] == "eval":
            return ("in eval mode dropout does nothing: this layer, built with dropout > 0, "
                    "must give the same output as without dropout (an nn.Dropout module "
                    "knows the mode; F.dropout must be told).")
        if case["mode"] == "train":
            return ("`added` lists the distinct values of output - input. In this case each "
                    "sublayer gives a constant (1, 2 and 4); in training mode its dropout "
                    "drops it (0) or keeps it scaled by 1 / (1 - p), and pre-norm adds the "
                    "three to the input.")
        if case["mode"] != "cached":
            return None
        t, s = case["x"].shape[1], case["memory"].shape[1]
        self_len, cross_len = got.get("self_cache_len"), got.get("cross_cache_len")
        if isinstance(self_len, Tensor) and int(self_len) != t:
            return ("step by step, the self-attention gets the first cache of the pair: each "
                    "step appends one key/value to it.")
        if isinstance(cross_len, Tensor) and int(cross_len) != s:
            return ("the cross-attention gets the second cache of the pair, marked static, so "
                    "that the memory's keys/values are computed once.")
        return None

    @property
    def oracle(self):
        return oracle_decoder_layer


DEC_ORDER, DEC_CACHE = ("every layer in order, then the final norm when there is one",
                        "with a cache, layer i gets the i-th cache pair")


@register
class DecoderChecker(Checker):
    name = "Decoder.forward"
    uses = ("DecoderLayer.forward",)
    forbidden = TRANSFORMER_MODULES

    def cases(self, gen, hidden):
        cases = [
            {"requirement": DEC_ORDER} | layer_case(gen, batch=2, t=5, s=4, d=8, d_ff=16,
                                                    layers=3, final_norm=True,
                                                    self_mask="target"),
            {"requirement": DEC_CACHE} | layer_case(gen, batch=2, t=4, s=5, d=8, d_ff=16,
                                                    layers=2, final_norm=True, norm_first=True,
                                                    mode="cached"),
        ]
        if hidden:
            cases += [
                {"requirement": DEC_ORDER} | layer_case(gen, batch=3, t=3, s=6, layers=1,
                                                        final_norm=False),
                {"requirement": DEC_ORDER} | layer_case(
                    gen, batch=1, t=6, s=3, layers=3, heads=4, final_norm=False,
                    self_mask="none", memory_mask=False, activation="gelu"),
                {"requirement": DEC_CACHE} | layer_case(gen, batch=3, t=5, s=4, layers=3,
                                                        final_norm=True, mode="cached"),
            ]
        return cases

    def run(self, obj, case):
        ns = namespace_of(obj) or {}
        if "DecoderLayer" not in ns:
            raise NameError("DecoderLayer is not defined: run the cells above first")
        layer = ns["DecoderLayer"](**{k: case[k] for k in LAYER_CFG}, dropout=0.0)
        decoder = obj(layer, case["num_layers"], final_norm=case["final_norm"])
        decoder.load_state_dict(weights_of(case))
        decoder.eval()
        with torch.no_grad():
            if case["mode"] == "cached":
                kv_cache = _kv_cache_class(obj)
                cache = [(kv_cache(), kv_cache()) for _ in range(case["num_layers"])]
                out = step_by_step(decoder, case, cache)
                lengths = torch.tensor([[len(a), len(b)] for a, b in cache])
                return {"output": out, "cache_lengths": lengths}
            return {"output": decoder(case["x"], case["memory"], self_mask=case.get("self_mask"),
                                      memory_mask=case.get("memory_mask"))}

    def _torch_outputs(self, case):
        """Every PyTorch layer's output, and the stack's output through nn.TransformerDecoder."""
        n = case["num_layers"]
        layers = [torch_layer(case, weights_of(case, f"layers.{i}.")) for i in range(n)]
        norm = nn.LayerNorm(case["d_model"]) if case["final_norm"] else None
        if norm is not None:
            norm.load_state_dict(weights_of(case, "norm."))
        stack = nn.TransformerDecoder(layers[0], n, norm=norm)
        stack.layers = nn.ModuleList(layers)
        t, s = case["x"].shape[1], case["memory"].shape[1]
        b, h = case["x"].shape[0], case["num_heads"]
        self_mask = tril(t) if case["mode"] == "cached" else case.get("self_mask")
        with torch.no_grad():
            out = stack(case["x"], case["memory"], tgt_mask=torch_mask(self_mask, b, h, t, t),
                        memory_mask=torch_mask(case.get("memory_mask"), b, h, t, s))
        return layers, norm, self_mask, out

    def expected(self, case):
        *_, out = self._torch_outputs(case)
        result = {"output": out}
        if case["mode"] == "cached":
            t, s = case["x"].shape[1], case["memory"].shape[1]
            result["cache_lengths"] = torch.tensor([[t, s]] * case["num_layers"])
        return result

    def mistakes(self, case):
        layers, norm, self_mask, _ = self._torch_outputs(case)
        h = case["num_heads"]
        x, memory, memory_mask = case["x"], case["memory"], case.get("memory_mask")
        if case["mode"] == "cached":
            return []  # read from the cache lengths (symptom)
        chained = torch_decoder_stack(layers, x, memory, h, self_mask, memory_mask)
        found = []
        if norm is not None:
            found.append(("the final norm is missing: when the decoder has one (self.norm), "
                          "it comes after the last layer.", chained[-1]))
            every = x
            with torch.no_grad():
                for layer in layers:
                    every = norm(torch_decoder_stack([layer], every, memory, h, self_mask,
                                                     memory_mask)[-1])
            found.append(("the final norm comes once, after the last layer, not after every "
                          "layer.", every))
        if len(layers) > 1:
            backwards = torch_decoder_stack(layers[::-1], x, memory, h, self_mask, memory_mask)
            with torch.no_grad():
                last = norm(backwards[-1]) if norm is not None else backwards[-1]
            found.append(("the layers run in the order of self.layers, the first one first.",
                          last))
        separate = [torch_decoder_stack([layer], x, memory, h, self_mask, memory_mask)[-1]
                    for layer in layers]
        first_only = torch_decoder_stack([layers[0]] * len(layers), x, memory, h, self_mask,
                                         memory_mask)[-1]
        with torch.no_grad():
            candidates = separate + [first_only] + chained[:-1]
            if norm is not None:
                candidates += [norm(c) for c in candidates]
        if len(layers) > 1:
            found += [("run every layer of self.layers in order, each on the previous layer's "
                       "output.", c) for c in candidates]
        return [(hint, {"output": out.detach()}) for hint, out in found]

    def symptom(self, case, got):
        lengths = got.get("cache_lengths")
        if case["mode"] != "cached" or not isinstance(lengths, Tensor):
            return None
        if lengths.shape == (case["num_layers"], 2) and not bool(lengths.any()):
            return "pass each layer its own cache pair from the list."
        if lengths.shape == (case["num_layers"], 2) and bool((lengths[:, 0] > 0).any()) and (
                int(lengths[:, 0].max()) != case["x"].shape[1]
                or bool((lengths[:, 0] == 0).any())):
            return "give layer i its own cache pair, the i-th of the list (not one pair to all)."
        return None

    @property
    def oracle(self):
        return oracle_decoder

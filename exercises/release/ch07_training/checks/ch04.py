"""Checkers for chapter 4: PositionwiseFeedForward.forward, Sublayer.forward,
EncoderLayer.forward, Encoder.forward."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ch02 import (
    linear_weights,
    load,
    mha_weights,
    norm_weights,
    oracle_merge_heads,
    oracle_mha_forward,
    oracle_split_heads,
    quiet,
    state,
    torch_mask,
)
from .core import Checker, close_to, namespace_of, randn, random_mask, register

ACTIVATION = {"relu": F.relu, "gelu": F.gelu}


# --- oracles: the methods written with PyTorch's functions, on self's weights ---------------------


def oracle_feed_forward(self, x: Tensor) -> Tensor:
    hidden = ACTIVATION[self.activation](F.linear(x, self.linear1.weight, self.linear1.bias))
    hidden = F.dropout(hidden, self.dropout.p, training=self.training)
    return F.linear(hidden, self.linear2.weight, self.linear2.bias)


def oracle_sublayer(self, x: Tensor, fn) -> Tensor:
    norm = self.norm

    def layer_norm(t: Tensor) -> Tensor:
        return F.layer_norm(t, norm.normalized_shape, norm.weight, norm.bias, norm.eps)

    def dropout(t: Tensor) -> Tensor:
        return F.dropout(t, self.dropout.p, training=self.training)

    if self.norm_first:
        return x + dropout(fn(layer_norm(x)))
    return layer_norm(x + dropout(fn(x)))


def oracle_encoder_layer(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
    x = oracle_sublayer(self.attn_block, x,
                        lambda y: oracle_mha_forward(self.self_attn, y, y, y, mask))
    return oracle_sublayer(self.ff_block, x, lambda y: oracle_feed_forward(self.feed_forward, y))


# --- the layer written out, right or with a usual mistake (for hints) -----------------------------


def attend(w: dict[str, Tensor], heads: int, x: Tensor, mask: Tensor | None) -> Tensor:
    """Self-attention over x with the projections in ``w`` (zeros for a query with no key)."""
    q, k, v = (oracle_split_heads(F.linear(x, w[f"{p}_proj.weight"], w.get(f"{p}_proj.bias")),
                                  heads) for p in "qkv")
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if mask is not None:
        out = out.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return F.linear(oracle_merge_heads(out), w["out_proj.weight"], w.get("out_proj.bias"))


def layer_by_hand(w: dict[str, Tensor], cfg: dict[str, Any], x: Tensor, mask: Tensor | None, *,
                  norm_first: bool | None = None, residual: bool = True, use_mask: bool = True,
                  ff_first: bool = False, shared_norm: bool = False, attn_on_x: bool = False,
                  skip_ff: bool = False, activation: str | None = None) -> Tensor:
    """An encoder layer (weights ``w`` named as in EncoderLayer's state dict)."""
    norm_first = cfg["norm_first"] if norm_first is None else norm_first
    act = ACTIVATION[activation or cfg["activation"]]

    def norm(t: Tensor, block: str) -> Tensor:
        block = "attn_block" if shared_norm else block
        return F.layer_norm(t, t.shape[-1:], w[f"{block}.norm.weight"],
                            w.get(f"{block}.norm.bias"), cfg["eps"])

    def attn(y: Tensor, t: Tensor) -> Tensor:
        attn_w = {k[len("self_attn."):]: v for k, v in w.items() if k.startswith("self_attn.")}
        return attend(attn_w, cfg["num_heads"], t if attn_on_x else y,
                      mask if use_mask else None)

    def ff(y: Tensor, t: Tensor) -> Tensor:
        hidden = act(F.linear(y, w["feed_forward.linear1.weight"],
                              w.get("feed_forward.linear1.bias")))
        return F.linear(hidden, w["feed_forward.linear2.weight"],
                        w.get("feed_forward.linear2.bias"))

    def sublayer(t: Tensor, fn, block: str) -> Tensor:
        skip = t if residual else 0.0
        if norm_first:
            return skip + fn(norm(t, block), t)
        return norm(skip + fn(t, t), block)

    steps = [(attn, "attn_block"), (ff, "ff_block")]
    if ff_first:
        steps.reverse()
    if skip_ff:
        steps = steps[:1]
    for fn, block in steps:
        x = sublayer(x, fn, block)
    return x


def layer_weights(gen: torch.Generator, prefix: str, cfg: dict[str, Any]) -> dict[str, Tensor]:
    d, bias = cfg["d_model"], cfg["bias"]
    return (mha_weights(gen, f"{prefix}self_attn", d, bias)
            | linear_weights(gen, f"{prefix}feed_forward.linear1", d, cfg["d_ff"], bias)
            | linear_weights(gen, f"{prefix}feed_forward.linear2", cfg["d_ff"], d, bias)
            | norm_weights(gen, f"{prefix}attn_block.norm", d, bias)
            | norm_weights(gen, f"{prefix}ff_block.norm", d, bias))


def torch_layer_state(w: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our EncoderLayer's weights under nn.TransformerEncoderLayer's names."""
    names = {"self_attn.out_proj": "self_attn.out_proj", "feed_forward.linear1": "linear1",
             "feed_forward.linear2": "linear2", "attn_block.norm": "norm1",
             "ff_block.norm": "norm2"}
    out = {}
    for kind in ("weight", "bias"):
        if f"self_attn.q_proj.{kind}" in w:
            out[f"self_attn.in_proj_{kind}"] = torch.cat(
                [w[f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
        for ours, theirs in names.items():
            if f"{ours}.{kind}" in w:
                out[f"{theirs}.{kind}"] = w[f"{ours}.{kind}"]
    return out


def torch_layer(cfg: dict[str, Any]) -> nn.TransformerEncoderLayer:
    with quiet():
        return nn.TransformerEncoderLayer(
            cfg["d_model"], cfg["num_heads"], cfg["d_ff"], dropout=0.0,
            activation=cfg["activation"], layer_norm_eps=cfg["eps"], batch_first=True,
            norm_first=cfg["norm_first"], bias=cfg["bias"])


CONFIG = ("d_model", "num_heads", "d_ff", "activation", "norm_first", "bias", "eps")


def layer_case(gen: torch.Generator, batch: int, length: int, d_model: int, num_heads: int,
               d_ff: int, activation: str = "relu", norm_first: bool = False, bias: bool = True,
               eps: float = 1e-5, mask: str = "none") -> dict[str, Any]:
    """Input, mask (none, padding, random or causal; no query loses every key) and config."""
    case: dict[str, Any] = {"x": randn(gen, batch, length, d_model)}
    if mask == "padding":
        case["mask"] = random_mask(gen, (batch, 1, 1, length), p_allowed=0.6)
    elif mask == "random":
        case["mask"] = random_mask(gen, (batch, 1, length, length))
    elif mask == "causal":
        case["mask"] = torch.ones(length, length, dtype=torch.bool).tril()
    return case | {"d_model": d_model, "num_heads": num_heads, "d_ff": d_ff,
                   "activation": activation, "norm_first": norm_first, "bias": bias, "eps": eps}


def new_layer(cls: type, case: dict[str, Any]) -> nn.Module:
    return cls(case["d_model"], case["num_heads"], case["d_ff"], dropout=0.0,
               activation=case["activation"], norm_first=case["norm_first"], bias=case["bias"],
               layer_norm_eps=case["eps"])


def call(module: nn.Module, case: dict[str, Any]) -> Tensor:
    if "mask" in case:
        return module(case["x"].clone(), case["mask"])
    return module(case["x"].clone())


def mask_for_torch(case: dict[str, Any]) -> Tensor | None:
    b, length, _ = case["x"].shape
    return torch_mask(case.get("mask"), b, case["num_heads"], length, length)


# --- PositionwiseFeedForward.forward --------------------------------------------------------------


@register
class FeedForwardChecker(Checker):
    name = "PositionwiseFeedForward.forward"

    def cases(self, gen, hidden):
        # (batch, length, d_model, d_ff, activation, bias)
        shapes = [(2, 3, 8, 16, "relu", True), (2, 4, 8, 12, "gelu", True)]
        if hidden:
            shapes += [(3, 1, 16, 32, "gelu", False), (1, 5, 64, 128, "relu", False),
                       (2, 2, 4, 4, "gelu", True)]
        cases = []
        for batch, length, d_model, d_ff, activation, bias in shapes:
            cases.append({"x": randn(gen, batch, length, d_model), "d_model": d_model,
                          "d_ff": d_ff, "activation": activation, "bias": bias}
                         | linear_weights(gen, "linear1", d_model, d_ff, bias)
                         | linear_weights(gen, "linear2", d_ff, d_model, bias))
        return cases

    def run(self, obj, case):
        with quiet():
            module = load(obj(case["d_model"], case["d_ff"], 0.0, case["activation"],
                              case["bias"]), case)
            return {"output": module(case["x"].clone())}

    def _by_hand(self, case, activation=None, after=False, act_at_all=True):
        w = state(case)
        act = ACTIVATION[activation or case["activation"]] if act_at_all else (lambda t: t)
        out = F.linear(act(F.linear(case["x"], w["linear1.weight"], w.get("linear1.bias"))),
                       w["linear2.weight"], w.get("linear2.bias"))
        return act(out) if after else out

    def expected(self, case):
        return {"output": self._by_hand(case)}

    def hint(self, case, got):
        out = got.get("output")
        for other in ACTIVATION:
            if other != case["activation"] and close_to(out, self._by_hand(case, other)):
                return (f"activation ignored: this layer's activation is "
                        f"{case['activation']!r} (self.activation); look it up in ACTIVATIONS.")
        if close_to(out, self._by_hand(case, act_at_all=False)):
            return "apply the activation between the two linear layers."
        if close_to(out, self._by_hand(case, after=True)):
            return "the activation goes between the two linear layers only, not after the second."
        return None

    @property
    def oracle(self):
        return oracle_feed_forward


# --- Sublayer.forward -----------------------------------------------------------------------------


@register
class SublayerChecker(Checker):
    name = "Sublayer.forward"

    def cases(self, gen, hidden):
        # (batch, length, d_model, norm_first, bias, eps)
        shapes = [(2, 3, 8, False, True, 1e-5), (2, 3, 8, True, True, 1e-5)]
        if hidden:
            shapes += [(3, 1, 16, True, False, 1e-5), (1, 4, 64, False, True, 1e-3),
                       (2, 5, 4, True, True, 1e-2), (2, 2, 6, False, False, 1e-5)]
        cases = []
        for batch, length, d_model, norm_first, bias, eps in shapes:
            cases.append({"x": randn(gen, batch, length, d_model, scale=2.0) + 1.0,
                          "d_model": d_model, "norm_first": norm_first, "bias": bias,
                          "eps": eps, "fn": "tanh(y @ W)",
                          "w.fn": randn(gen, d_model, d_model, scale=d_model ** -0.5)}
                         | norm_weights(gen, "norm", d_model, bias))
        return cases

    def run(self, obj, case):
        fn_weight = case["w.fn"]
        with quiet():
            module = load(obj(case["d_model"], 0.0, case["norm_first"], case["eps"],
                              case["bias"]), case, skip=("fn",))
            return {"output": module(case["x"].clone(), lambda y: torch.tanh(y @ fn_weight))}

    def _by_hand(self, case, norm_first=None, residual=True, norm=True, residual_normed=False):
        x, w = case["x"], state(case)

        def fn(y):
            return torch.tanh(y @ w["fn"])

        def layer_norm(t):
            if not norm:
                return t
            return F.layer_norm(t, (case["d_model"],), w["norm.weight"], w.get("norm.bias"),
                                case["eps"])

        if case["norm_first"] if norm_first is None else norm_first:
            skip = layer_norm(x) if residual_normed else x
            return (skip if residual else 0.0) + fn(layer_norm(x))
        return layer_norm((x if residual else 0.0) + fn(x))

    def expected(self, case):
        # post-norm: LayerNorm(x + fn(x));  pre-norm: x + fn(LayerNorm(x)).
        return {"output": self._by_hand(case)}

    def hint(self, case, got):
        out = got.get("output")
        if close_to(out, self._by_hand(case, residual=False)):
            return "missing residual: add the sublayer's input x to fn's output."
        if close_to(out, self._by_hand(case, norm_first=not case["norm_first"])):
            return (f"norm_first={case['norm_first']} ignored: post-norm (False) is "
                    "norm(x + fn(x)), pre-norm (True) is x + fn(norm(x)); read self.norm_first.")
        if close_to(out, self._by_hand(case, residual_normed=True)):
            return "pre-norm: the residual adds the original x, not the normalised one."
        if close_to(out, self._by_hand(case, norm=False)):
            return "the layer norm (self.norm) is missing."
        return None

    @property
    def oracle(self):
        return oracle_sublayer


# --- EncoderLayer.forward -------------------------------------------------------------------------


@register
class EncoderLayerChecker(Checker):
    name = "EncoderLayer.forward"
    uses = ("PositionwiseFeedForward.forward", "Sublayer.forward")

    def cases(self, gen, hidden):
        specs = [dict(batch=2, length=4, d_model=8, num_heads=2, d_ff=16),
                 dict(batch=2, length=5, d_model=8, num_heads=2, d_ff=16, activation="gelu",
                      norm_first=True, mask="padding")]
        if hidden:
            specs += [dict(batch=2, length=4, d_model=8, num_heads=2, d_ff=16, bias=False,
                           mask="random"),
                      dict(batch=2, length=5, d_model=16, num_heads=4, d_ff=32,
                           activation="gelu", norm_first=True, mask="causal"),
                      dict(batch=3, length=1, d_model=8, num_heads=2, d_ff=8, norm_first=True),
                      dict(batch=2, length=6, d_model=64, num_heads=8, d_ff=128,
                           mask="padding", eps=1e-3)]
        cases = []
        for spec in specs:
            case = layer_case(gen, **spec)
            cases.append(case | layer_weights(gen, "", case))
        return cases

    def run(self, obj, case):
        with quiet():
            return {"output": call(load(new_layer(obj, case), case), case)}

    def expected(self, case):
        layer = torch_layer(case)
        layer.load_state_dict(torch_layer_state(state(case)), strict=True)
        with quiet():
            return {"output": layer.eval()(case["x"], src_mask=mask_for_torch(case)).detach()}

    def hint(self, case, got):
        out, w = got.get("output"), state(case)
        mistakes = [
            ({"use_mask": False}, "pass the mask to self-attention: "
             "self.self_attn(y, y, y, mask)."),
            ({"ff_first": True}, "self-attention comes first, then the feed-forward network."),
            ({"skip_ff": True}, "the feed-forward sublayer is missing (self.ff_block with "
             "self.feed_forward)."),
            ({"shared_norm": True}, "each sublayer has its own layer norm: attn_block around the "
             "attention, ff_block around the feed-forward network."),
            ({"attn_on_x": True}, "inside a sublayer, attend over the input the sublayer hands "
             "to fn (lambda y: self.self_attn(y, y, y, mask)), not over x."),
            ({"residual": False}, "missing residual: use the sublayers (self.attn_block, "
             "self.ff_block), which add their input back."),
            ({"norm_first": not case["norm_first"]}, f"norm_first={case['norm_first']} "
             "ignored: let the sublayers (self.attn_block, self.ff_block) arrange the norm."),
        ]
        for mistake, message in mistakes:
            if "use_mask" in mistake and "mask" not in case:
                continue
            if close_to(out, layer_by_hand(w, case, case["x"], case.get("mask"), **mistake)):
                return message
        return None

    @property
    def oracle(self):
        return oracle_encoder_layer


# --- Encoder.forward ------------------------------------------------------------------------------


@register
class EncoderChecker(Checker):
    name = "Encoder.forward"
    uses = ("EncoderLayer.forward",)

    def cases(self, gen, hidden):
        specs = [dict(num_layers=2, final_norm=False),
                 dict(num_layers=2, final_norm=True, norm_first=True, mask="padding")]
        if hidden:
            specs += [dict(num_layers=3, final_norm=True, activation="gelu", mask="random"),
                      dict(num_layers=1, final_norm=False, norm_first=True, length=1),
                      dict(num_layers=2, final_norm=True, norm_first=True, bias=False,
                           mask="causal", d_model=16, num_heads=4)]
        cases = []
        for spec in specs:
            spec = dict(batch=2, length=4, d_model=8, num_heads=2, d_ff=16) | spec
            layers, final = spec.pop("num_layers"), spec.pop("final_norm")
            case = layer_case(gen, **spec) | {"num_layers": layers, "final_norm": final}
            for i in range(layers):
                case |= layer_weights(gen, f"layers.{i}.", case)
            if final:  # Encoder's final norm is a plain nn.LayerNorm(d_model), with a bias
                case |= norm_weights(gen, "norm", case["d_model"], True)
            cases.append(case)
        return cases

    def run(self, obj, case):
        layer_cls = namespace_of(obj)["EncoderLayer"]
        with quiet():
            encoder = obj(new_layer(layer_cls, case), case["num_layers"],
                          final_norm=case["final_norm"])
            return {"output": call(load(encoder, case), case)}

    def expected(self, case):
        w = state(case)
        norm = None
        if case["final_norm"]:
            with quiet():
                norm = nn.LayerNorm(case["d_model"])
            norm.load_state_dict(state(case, "norm."))
        with quiet():
            encoder = nn.TransformerEncoder(torch_layer(case), case["num_layers"], norm=norm,
                                            enable_nested_tensor=False)
        weights = {}
        for i in range(case["num_layers"]):
            layer = {k[len(f"layers.{i}."):]: v for k, v in w.items()
                     if k.startswith(f"layers.{i}.")}
            weights |= {f"layers.{i}.{k}": v for k, v in torch_layer_state(layer).items()}
        weights |= {f"norm.{k}": v for k, v in state(case, "norm.").items()}
        encoder.load_state_dict(weights, strict=True)
        with quiet():
            return {"output": encoder.eval()(case["x"], mask=mask_for_torch(case)).detach()}

    def _by_hand(self, case, order=None, final_norm=None, use_mask=True, norm_each=False):
        w, x = state(case), case["x"]
        mask = case.get("mask") if use_mask else None
        final_norm = case["final_norm"] if final_norm is None else final_norm

        def norm(t):
            return F.layer_norm(t, t.shape[-1:], w["norm.weight"], w["norm.bias"])

        for i in order if order is not None else range(case["num_layers"]):
            x = layer_by_hand(state(case, f"layers.{i}."), case, x, mask)
            if norm_each and case["final_norm"]:
                x = norm(x)
        return norm(x) if final_norm and not norm_each else x

    def hint(self, case, got):
        out, layers = got.get("output"), case["num_layers"]
        if case["final_norm"] and close_to(out, self._by_hand(case, final_norm=False)):
            return "the final norm is missing: apply self.norm after the last layer if it is set."
        if "mask" in case and close_to(out, self._by_hand(case, use_mask=False)):
            return "pass the mask to every layer: layer(x, mask)."
        if case["final_norm"] and layers > 1 and close_to(out, self._by_hand(case, norm_each=True)):
            return "the final norm comes once, after the last layer, not after every layer."
        for order in ([0] * layers, [layers - 1], [0], list(range(layers))[::-1]):
            if order != list(range(layers)) and close_to(out, self._by_hand(case, order=order)):
                return "run every layer of self.layers once, in order (each has its own weights)."
        return None

    @property
    def oracle(self):
        def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
            for layer in self.layers:
                x = oracle_encoder_layer(layer, x, mask)
            if self.norm is None:
                return x
            return F.layer_norm(x, self.norm.normalized_shape, self.norm.weight, self.norm.bias,
                                self.norm.eps)
        return forward

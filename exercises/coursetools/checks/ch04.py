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
from .ch03 import (
    DROPPED,
    RATIOS,
    backward_from,
    dropout_expected,
    dropout_seen,
    expected_gradients,
)
from .core import Checker, namespace_of, randn, random_mask, register

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
        if length > 1 and bool(case["mask"].all()):  # some padding, so that the mask shows
            case["mask"][-1, ..., -1] = False
    elif mask == "random":
        case["mask"] = random_mask(gen, (batch, 1, length, length))
    elif mask == "causal":
        case["mask"] = torch.ones(length, length, dtype=torch.bool).tril()
    return case | {"d_model": d_model, "num_heads": num_heads, "d_ff": d_ff,
                   "activation": activation, "norm_first": norm_first, "bias": bias, "eps": eps}


def new_layer(cls: type, case: dict[str, Any]) -> nn.Module:
    return cls(case["d_model"], case["num_heads"], case["d_ff"], dropout=case.get("dropout", 0.0),
               activation=case["activation"], norm_first=case["norm_first"], bias=case["bias"],
               layer_norm_eps=case["eps"])


def call(module: nn.Module, case: dict[str, Any]) -> Tensor:
    if "mask" in case:
        return module(case["x"], case["mask"])
    return module(case["x"])


def mask_for_torch(case: dict[str, Any]) -> Tensor | None:
    b, length, _ = case["x"].shape
    return torch_mask(case.get("mask"), b, case["num_heads"], length, length)


# --- PositionwiseFeedForward.forward --------------------------------------------------------------

FF_VALUES, FF_DROPOUT = ("linear → the layer's activation → linear",
                         "dropout between the activation and the second linear, in training "
                         "mode only")

#: How a case that watches dropout runs the module (the key says so in the case's description).
SEEN = "eval, then train (seeded)"


def seen_input(gen: torch.Generator, batch: int, length: int, d: int, scale: float = 1.0
               ) -> Tensor:
    """An input for a case that watches dropout: 16 random positions repeated (dropout draws
    its mask per entry all the same; the repeats keep the student's notebook small)."""
    block = randn(gen, 1, 16, d, scale=scale)
    return block.repeat(batch, -(-length // 16), 1)[:, :length].contiguous()


def observed_dropout_hints(case: dict[str, Any], where: str) -> list[tuple[str, dict]]:
    """Known mistakes on a case that watches dropout with probability p (see dropout_seen)."""
    p = case["dropout"]
    scale = 1.0 / (1.0 - p)
    found = [
        (f"in training mode {where} must go through dropout: compared with eval mode, nothing "
         "was dropped.", {RATIOS: torch.tensor([1.0], dtype=torch.float64)}),
        (f"in training mode the kept entries are scaled by 1 / (1 − p) = {scale:.3g} "
         "(inverted dropout), so that on average they equal eval mode's, which drops nothing.",
         {RATIOS: torch.tensor([0.0, 1.0], dtype=torch.float64)}),
    ]
    twice = (f"dropout is applied twice to {where}: compared with eval mode, entries are "
             f"dropped or scaled by 1 / (1 − p)² = {scale * scale:.3g}.")
    found += [(twice, {RATIOS: torch.tensor(values, dtype=torch.float64).round(decimals=3)})
              for values in ([0.0, scale * scale], [0.0, scale, scale * scale])]
    found += [
        (f"dropout with probability {1 - p:g} instead of p = {p:g}: p is the probability of "
         "dropping an entry, not of keeping it.", {DROPPED: round((1 - p) * 4) / 4}),
    ]
    return [(hint, outputs) for hint, outputs in found
            if DROPPED not in outputs or p != 0.5]


def dropout_symptom(got: dict[str, Any], where: str) -> str | None:
    """A hint read from what dropout_seen saw: factors other than 0 and one scale."""
    ratios = got.get(RATIOS)
    if isinstance(ratios, Tensor) and ratios.dim() == 1 and len(ratios) > 3:
        return (f"compared with eval mode, each entry of {where} should be either dropped (0) "
                "or scaled by one factor, 1 / (1 − p); yours changed by many factors, so the "
                "dropout acts somewhere else.")
    return None


@register
class FeedForwardChecker(Checker):
    name = "PositionwiseFeedForward.forward"

    def cases(self, gen, hidden):
        # (requirement, batch, length, d_model, d_ff, activation, bias, dropout, train)
        shapes = [(FF_VALUES, 2, 3, 8, 16, "relu", True, 0.0, False),
                  (FF_VALUES, 3, 2, 8, 12, "gelu", True, 0.0, False),
                  (FF_DROPOUT, 2, 3, 8, 16, "relu", True, 1.0, True),
                  (FF_DROPOUT, 2, 3, 8, 16, "gelu", True, 1.0, False),
                  (FF_DROPOUT, 4, 32, 3, 3, "gelu", True, 0.25, True)]
        if hidden:
            shapes += [(FF_VALUES, 3, 1, 16, 32, "gelu", False, 0.0, False),
                       (FF_VALUES, 1, 5, 64, 128, "relu", False, 0.0, False),
                       (FF_VALUES, 2, 2, 4, 4, "gelu", True, 0.0, False),
                       (FF_DROPOUT, 3, 2, 16, 8, "gelu", True, 1.0, True),
                       (FF_DROPOUT, 1, 4, 16, 32, "relu", False, 0.3, False),
                       (FF_DROPOUT, 8, 32, 3, 3, "gelu", False, 0.5, True),
                       (FF_DROPOUT, 4, 48, 3, 3, "relu", True, 0.25, True)]
        cases = []
        for requirement, batch, length, d_model, d_ff, activation, bias, p, train in shapes:
            seen = train and 0.0 < p < 1.0
            case = {"requirement": requirement, "x": seen_input(gen, batch, length, d_model)
                    if seen else randn(gen, batch, length, d_model),
                    "d_model": d_model, "d_ff": d_ff, "activation": activation,
                    "bias": bias, "dropout": p, "train": train}
            case |= linear_weights(gen, "linear1", d_model, d_ff, bias)
            if seen:
                # Dropout watched from outside: the second linear layer is the identity, so
                # the output shows the hidden activations as dropout leaves them.
                case["runs"] = SEEN
                case["w.linear2.weight"] = torch.eye(d_model)
                if bias:
                    case["w.linear2.bias"] = torch.zeros(d_model)
            else:
                case |= linear_weights(gen, "linear2", d_ff, d_model, bias)
            if requirement == FF_VALUES:  # gradients too
                case["w.grad_out"] = randn(gen, batch, length, d_model)
            cases.append(case)
        return cases

    def run(self, obj, case):
        with quiet():
            module = load(obj(case["d_model"], case["d_ff"], case["dropout"], case["activation"],
                              case["bias"]), case, skip=("grad_out",)).train(case["train"])
            if "runs" in case:
                before = module.eval()(case["x"])
                torch.manual_seed(0)
                return dropout_seen(before, module.train()(case["x"]))
            got = {"output": module(case["x"])}
            if "w.grad_out" in case:
                x = case["x"].detach().clone().requires_grad_(True)
                kind = "bias" if case["bias"] else "weight"
                got |= backward_from(lambda: module(x), case["w.grad_out"], {
                    "x.grad": x, f"linear1.{kind}.grad": getattr(module.linear1, kind)})[1]
            return got

    def _by_hand(self, case, activation=None, after=False, act_at_all=True, drop=None):
        """The layer written out; ``drop`` zeroes the activations at one place ("input",
        "hidden": the right one, "output"), as dropout with p = 1 does."""
        w = state(case)
        act = ACTIVATION[activation or case["activation"]] if act_at_all else (lambda t: t)
        x = case["x"] * 0.0 if drop == "input" else case["x"]
        hidden = act(F.linear(x, w["linear1.weight"], w.get("linear1.bias")))
        if drop == "hidden":
            hidden = hidden * 0.0
        out = F.linear(hidden, w["linear2.weight"], w.get("linear2.bias"))
        out = act(out) if after else out
        return out * 0.0 if drop == "output" else out

    def expected(self, case):
        if "runs" in case:
            return dropout_expected(case["dropout"])
        dropped = case["train"] and case["dropout"] == 1.0
        found = {"output": self._by_hand(case, drop="hidden" if dropped else None)}
        if "w.grad_out" in case:
            w, act = state(case), ACTIVATION[case["activation"]]
            kind = "bias" if case["bias"] else "weight"

            def forward(x, leaf):
                w1, b1 = (w["linear1.weight"], leaf) if case["bias"] else (leaf, None)
                return F.linear(act(F.linear(x, w1, b1)), w["linear2.weight"],
                                w.get("linear2.bias"))

            found |= expected_gradients(forward, case["w.grad_out"], {
                "x.grad": case["x"], f"linear1.{kind}.grad": w[f"linear1.{kind}"]})
        return found

    def mistakes(self, case):
        if "runs" in case:
            return observed_dropout_hints(case, "the hidden activations")
        if case["dropout"] and case["train"]:
            return [
                ("in training mode the hidden activations go through self.dropout (here "
                 "p = 1: all dropped, leaving the second layer's bias).",
                 {"output": self._by_hand(case)}),
                ("dropout goes on the hidden activations, between the activation and the "
                 "second linear layer, not on the output.",
                 {"output": self._by_hand(case, drop="output")}),
                ("dropout goes on the hidden activations, not on the input.",
                 {"output": self._by_hand(case, drop="input")}),
            ]
        if case["dropout"]:
            return [("dropout is for training only: in eval mode the layer drops nothing "
                     "(an nn.Dropout module knows the mode; F.dropout needs to be told).",
                     {"output": self._by_hand(case, drop="hidden")})]
        found = [(f"activation ignored: this layer's activation is {case['activation']!r} "
                  "(self.activation); look it up in ACTIVATIONS.",
                  {"output": self._by_hand(case, other)})
                 for other in ACTIVATION if other != case["activation"]]
        found += [
            ("apply the activation between the two linear layers.",
             {"output": self._by_hand(case, act_at_all=False)}),
            ("the activation goes between the two linear layers only, not after the second.",
             {"output": self._by_hand(case, after=True)}),
        ]
        return found

    def symptom(self, case, got):
        if "runs" in case:
            return dropout_symptom(got, "the hidden activations (right after the activation)")
        return None

    @property
    def oracle(self):
        return oracle_feed_forward


# --- Sublayer.forward -----------------------------------------------------------------------------

SUB_POST, SUB_PRE, SUB_DROPOUT = (
    "post-norm (norm_first=False): the norm of x plus fn's output",
    "pre-norm (norm_first=True): x plus fn of the normalised x",
    "dropout on fn's output before it is added, in training mode only")


def sublayer_fn(case: dict[str, Any]):
    """The case's sublayer function fn(y) = tanh(y W + c) (fn(0) is not 0, so that dropping its
    input shows)."""
    weight, bias = case["w.fn"], case["w.fn_bias"]
    return lambda y: torch.tanh(y @ weight + bias)


@register
class SublayerChecker(Checker):
    name = "Sublayer.forward"

    def cases(self, gen, hidden):
        # (requirement, batch, length, d_model, norm_first, bias, eps, dropout, train)
        shapes = [(SUB_POST, 2, 3, 8, False, True, 1e-2, 0.0, False),
                  (SUB_PRE, 2, 3, 8, True, False, 1e-2, 0.0, False),
                  (SUB_DROPOUT, 2, 3, 8, False, True, 1e-5, 1.0, True),
                  (SUB_DROPOUT, 2, 3, 8, True, True, 1e-5, 1.0, True),
                  (SUB_DROPOUT, 2, 3, 8, False, True, 1e-5, 1.0, False),
                  (SUB_DROPOUT, 1, 3, 8, True, True, 1e-5, 0.5, False),
                  (SUB_DROPOUT, 4, 12, 8, True, True, 1e-5, 0.25, True)]
        if hidden:
            shapes += [(SUB_PRE, 3, 1, 16, True, False, 1e-5, 0.0, False),
                       (SUB_POST, 1, 4, 64, False, True, 1e-3, 0.0, False),
                       (SUB_PRE, 2, 5, 4, True, True, 1e-2, 0.0, False),
                       (SUB_POST, 2, 2, 6, False, False, 1e-5, 0.0, False),
                       (SUB_DROPOUT, 3, 2, 16, True, False, 1e-5, 1.0, True),
                       (SUB_DROPOUT, 1, 5, 16, False, False, 1e-3, 1.0, True),
                       (SUB_DROPOUT, 2, 4, 16, True, True, 1e-5, 0.5, False),
                       (SUB_DROPOUT, 2, 32, 8, True, False, 1e-3, 0.5, True)]
        cases = []
        for requirement, batch, length, d_model, norm_first, bias, eps, p, train in shapes:
            seen = train and 0.0 < p < 1.0
            case = {"requirement": requirement,
                    "x": (seen_input(gen, batch, length, d_model, scale=2.0) if seen
                          else randn(gen, batch, length, d_model, scale=2.0)) + 1.0,
                    "d_model": d_model, "norm_first": norm_first, "bias": bias,
                    "eps": eps, "dropout": p, "train": train, "fn": "tanh(y @ W + c)",
                    "w.fn": randn(gen, d_model, d_model, scale=d_model ** -0.5),
                    "w.fn_bias": randn(gen, d_model, scale=0.5)}
            if seen:  # pre-norm: x + dropout(fn(...)), dropout seen
                case["runs"] = SEEN
            if requirement in (SUB_POST, SUB_PRE):  # gradients too
                case["w.grad_out"] = randn(gen, batch, length, d_model)
            cases.append(case | norm_weights(gen, "norm", d_model, bias))
        return cases

    def run(self, obj, case):
        with quiet():
            module = load(obj(case["d_model"], case["dropout"], case["norm_first"], case["eps"],
                              case["bias"]), case, skip=("fn", "grad_out")).train(case["train"])
            fn = sublayer_fn(case)
            if "runs" in case:
                before = module.eval()(case["x"], fn)
                torch.manual_seed(0)
                return dropout_seen(before, module.train()(case["x"], fn), base=case["x"])
            got = {"output": module(case["x"], fn)}
            if "w.grad_out" in case:
                x = case["x"].detach().clone().requires_grad_(True)
                got |= backward_from(lambda: module(x, fn), case["w.grad_out"],
                                     {"x.grad": x, "norm.weight.grad": module.norm.weight})[1]
            return got

    def _by_hand(self, case, norm_first=None, residual=True, norm=True, residual_normed=False,
                 drop=None):
        """The sublayer written out; ``drop`` zeroes one tensor ("output": fn's output, the
        right place; "input": fn's input; "sum": the residual sum), as dropout with p = 1."""
        x, w = case["x"], state(case)
        fn = sublayer_fn(case)

        def layer_norm(t):
            if not norm:
                return t
            return F.layer_norm(t, (case["d_model"],), w["norm.weight"], w.get("norm.bias"),
                                case["eps"])

        def zero(t, place):
            return t * 0.0 if drop == place else t

        if case["norm_first"] if norm_first is None else norm_first:
            skip = layer_norm(x) if residual_normed else x
            return zero((skip if residual else 0.0)
                        + zero(fn(zero(layer_norm(x), "input")), "output"), "sum")
        return layer_norm(zero((x if residual else 0.0)
                               + zero(fn(zero(x, "input")), "output"), "sum"))

    def expected(self, case):
        # post-norm: LayerNorm(x + dropout(fn(x)));  pre-norm: x + dropout(fn(LayerNorm(x))).
        if "runs" in case:
            return dropout_expected(case["dropout"])
        dropped = case["train"] and case["dropout"] == 1.0
        found = {"output": self._by_hand(case, drop="output" if dropped else None)}
        if "w.grad_out" in case:
            fn, bias = sublayer_fn(case), case.get("w.norm.bias")
            size, eps = (case["d_model"],), case["eps"]

            def forward(x, weight):
                if case["norm_first"]:
                    return x + fn(F.layer_norm(x, size, weight, bias, eps))
                return F.layer_norm(x + fn(x), size, weight, bias, eps)

            found |= expected_gradients(forward, case["w.grad_out"], {
                "x.grad": case["x"], "norm.weight.grad": case["w.norm.weight"]})
        return found

    def mistakes(self, case):
        if "runs" in case:
            return observed_dropout_hints(case, "fn's output")
        if case["dropout"] and case["train"]:
            return [
                ("in training mode, fn's output goes through self.dropout before it is added "
                 "(here p = 1: all of it is dropped).", {"output": self._by_hand(case)}),
                ("dropout goes on fn's output only, not on the residual sum: the residual path "
                 "must stay whole.", {"output": self._by_hand(case, drop="sum")}),
                ("dropout goes on fn's output, not on its input.",
                 {"output": self._by_hand(case, drop="input")}),
            ]
        if case["dropout"]:
            return [("dropout is for training only: in eval mode the sublayer drops nothing.",
                     {"output": self._by_hand(case, drop="output")})]
        return [
            ("missing residual: add the sublayer's input x to fn's output.",
             {"output": self._by_hand(case, residual=False)}),
            (f"norm_first={case['norm_first']} ignored: post-norm (False) normalises the sum "
             "x + fn(x), pre-norm (True) feeds fn the normalised x; read self.norm_first.",
             {"output": self._by_hand(case, norm_first=not case["norm_first"])}),
            ("the layer norm (self.norm) is missing.", {"output": self._by_hand(case, norm=False)}),
        ] + ([("pre-norm: the residual adds the original x, not the normalised one.",
               {"output": self._by_hand(case, residual_normed=True)})]
             if case["norm_first"] else []) + (
            [(f"the layer norm's epsilon is self.norm's own (here eps={case['eps']:g}), not the "
              "default 1e-5.", {"output": self._by_hand(case | {"eps": 1e-5})})]
            if case["eps"] != 1e-5 else [])

    def symptom(self, case, got):
        if "runs" in case:
            return dropout_symptom(got, "fn's output (x + dropout(fn(...)) in pre-norm)")
        return None

    @property
    def oracle(self):
        return oracle_sublayer


# --- EncoderLayer.forward -------------------------------------------------------------------------

#: PyTorch's own layers and stacks, which the layer exercises ask you to build.
TRANSFORMER_MODULES = ("torch.nn.TransformerEncoderLayer", "torch.nn.TransformerDecoderLayer",
                       "torch.nn.TransformerEncoder", "torch.nn.TransformerDecoder",
                       "torch.nn.Transformer", "torch._transformer_encoder_layer_fwd")

EL_POST, EL_PRE, EL_MASK, EL_DROPOUT = (
    "self-attention sublayer, then feed-forward sublayer (post-norm)",
    "the same with pre-norm sublayers (norm_first)",
    "the mask reaches the self-attention",
    "in training mode, each sublayer's output is dropped out once (by its block)")


def layer_gradients(layer: nn.Module, case: dict[str, Any]) -> dict[str, Any]:
    """Gradients of (layer(x) · the case's fixed random tensor).sum() through the student's
    layer (ours or PyTorch's names)."""
    x = case["x"].detach().clone().requires_grad_(True)
    kind = "bias" if case["bias"] else "weight"
    params = {"x.grad": x,
              f"self_attn.q_proj.{kind}.grad": getattr(layer.self_attn.q_proj, kind),
              f"feed_forward.linear1.{kind}.grad": getattr(layer.feed_forward.linear1, kind)}
    return backward_from(lambda: call(layer, case | {"x": x}), case["w.grad_out"], params)[1]


@register
class EncoderLayerChecker(Checker):
    name = "EncoderLayer.forward"
    uses = ("PositionwiseFeedForward.forward", "Sublayer.forward")
    forbidden = TRANSFORMER_MODULES

    def cases(self, gen, hidden):
        base = dict(batch=2, length=4, d_model=8, num_heads=2, d_ff=16)
        seen = dict(batch=4, length=12, d_model=8, num_heads=2, d_ff=16, norm_first=True)
        specs = [(EL_POST, base),
                 (EL_PRE, base | dict(activation="gelu", norm_first=True)),
                 (EL_MASK, base | dict(length=5, mask="padding")),
                 (EL_MASK, base | dict(batch=1, mask="causal")),
                 (EL_DROPOUT, seen | dict(dropout=0.25))]
        if hidden:
            specs += [(EL_MASK, base | dict(bias=False, mask="random")),
                      (EL_MASK, dict(batch=2, length=5, d_model=16, num_heads=4, d_ff=32,
                                     activation="gelu", norm_first=True, mask="causal")),
                      (EL_PRE, dict(batch=3, length=1, d_model=8, num_heads=2, d_ff=8,
                                    norm_first=True)),
                      (EL_POST, dict(batch=2, length=6, d_model=64, num_heads=8, d_ff=128,
                                     eps=1e-3)),
                      (EL_MASK, base | dict(length=6, mask="padding", norm_first=True)),
                      (EL_DROPOUT, seen | dict(batch=3, length=16, d_model=16, num_heads=4,
                                               d_ff=32, activation="gelu", dropout=0.5))]
        cases = []
        for requirement, spec in specs:
            spec = dict(spec)
            p = spec.pop("dropout", 0.0)
            case = {"requirement": requirement} | layer_case(gen, **spec)
            case |= layer_weights(gen, "", case)
            if p:
                case |= (self._seen_weights(gen, case["d_model"], case["d_ff"])
                         | {"dropout": p, "runs": SEEN})
                case["x"] = seen_input(gen, *case["x"].shape)
            if requirement in (EL_POST, EL_PRE):  # gradients too
                case["w.grad_out"] = randn(gen, *case["x"].shape)
            cases.append(case)
        return cases

    @staticmethod
    def _seen_weights(gen: torch.Generator, d: int, d_ff: int) -> dict[str, Tensor]:
        """Weights under which a pre-norm layer's output less its input shows the dropout of
        both sublayers: the values are zero, so attention gives out_proj's bias whatever the
        attention weights (and their dropout); the second linear layer is zero, so the
        feed-forward network gives its bias; the first half of the features carries the
        attention's bias, the second half the feed-forward's."""
        half = torch.arange(d) < d // 2
        far = randn(gen, d, scale=0.5)
        far = far.sign() * (0.3 + far.abs())  # no entry close to 0
        return {"w.self_attn.v_proj.weight": torch.zeros(d, d),
                "w.self_attn.v_proj.bias": torch.zeros(d),
                "w.self_attn.out_proj.bias": torch.where(half, far, 0.0),
                "w.feed_forward.linear2.weight": torch.zeros(d, d_ff),
                "w.feed_forward.linear2.bias": torch.where(half, 0.0, far)}

    def run(self, obj, case):
        with quiet():
            layer = load(new_layer(obj, case), case, skip=("grad_out",))
            if "runs" in case:
                before = call(layer.eval(), case)
                torch.manual_seed(0)
                return dropout_seen(before, call(layer.train(), case), base=case["x"])
            got = {"output": call(layer, case)}
            if "w.grad_out" in case:
                got |= layer_gradients(layer, case)
            return got

    def expected(self, case):
        if "runs" in case:
            return dropout_expected(case["dropout"])
        layer = torch_layer(case)
        layer.load_state_dict(torch_layer_state(state(case)), strict=True)
        with quiet():
            found = {"output": layer.eval()(case["x"], src_mask=mask_for_torch(case)).detach()}
        if "w.grad_out" in case:
            x = case["x"].clone().requires_grad_(True)
            with quiet(), torch.enable_grad():
                out = layer.eval()(x, src_mask=mask_for_torch(case))
                (out * case["w.grad_out"]).sum().backward()
            d, kind = case["d_model"], "bias" if case["bias"] else "weight"
            found |= {"x.grad": x.grad,
                      f"self_attn.q_proj.{kind}.grad":
                          getattr(layer.self_attn, f"in_proj_{kind}").grad[:d],
                      f"feed_forward.linear1.{kind}.grad": getattr(layer.linear1, kind).grad}
        return found

    def mistakes(self, case):
        if "runs" in case:
            return observed_dropout_hints(case, "each sublayer's output")
        w = state(case)
        variants = [
            ({"use_mask": False}, "the mask never reaches the self-attention: without it "
             "every position sees the padding."),
            ({"ff_first": True}, "self-attention comes first, then the feed-forward network."),
            ({"skip_ff": True}, "the feed-forward sublayer is missing."),
            ({"shared_norm": True}, "each sublayer has its own layer norm: one block around "
             "the attention, another around the feed-forward network."),
            ({"attn_on_x": True}, "inside a sublayer, attend over the input the sublayer hands "
             "to fn (in pre-norm, the normalised x), not over the layer's x."),
            ({"residual": False}, "missing residual: the sublayer blocks add their input back; "
             "let them do the work."),
            ({"norm_first": not case["norm_first"]}, f"norm_first={case['norm_first']} "
             "ignored: let the sublayer blocks arrange the norm."),
        ]
        # (Without a mask, and in post-norm, some of them give the right answer.)
        return [(message, {"output": layer_by_hand(w, case, case["x"], case.get("mask"),
                                                   **mistake)})
                for mistake, message in variants
                if ("use_mask" not in mistake or "mask" in case)
                and ("attn_on_x" not in mistake or case["norm_first"])]

    def symptom(self, case, got):
        if "runs" in case:
            return dropout_symptom(got, "each sublayer's output")
        return None

    @property
    def oracle(self):
        return oracle_encoder_layer


# --- Encoder.forward ------------------------------------------------------------------------------


ENC_ORDER, ENC_NORM, ENC_MASK = ("every layer once, in order", "the final norm when there is one",
                                "the mask reaches every layer")


@register
class EncoderChecker(Checker):
    name = "Encoder.forward"
    uses = ("EncoderLayer.forward",)
    forbidden = TRANSFORMER_MODULES

    def cases(self, gen, hidden):
        # Each requirement's cases exercise it alone: the mask cases have two layers and no
        # final norm, the final-norm cases no mask, and the layer count varies in the order's.
        specs = [(ENC_ORDER, dict(num_layers=3, final_norm=False)),
                 (ENC_NORM, dict(num_layers=2, final_norm=True, length=3)),
                 (ENC_MASK, dict(num_layers=2, final_norm=False, mask="padding"))]
        if hidden:
            specs += [(ENC_NORM, dict(num_layers=2, final_norm=True, norm_first=True)),
                      (ENC_MASK, dict(num_layers=2, final_norm=False, activation="gelu",
                                      mask="random")),
                      (ENC_ORDER, dict(num_layers=1, final_norm=False, norm_first=True,
                                       length=1)),
                      (ENC_ORDER, dict(num_layers=4, final_norm=False, d_model=16,
                                       num_heads=4)),
                      (ENC_ORDER, dict(num_layers=2, final_norm=False, activation="gelu",
                                       norm_first=True)),
                      (ENC_NORM, dict(num_layers=2, final_norm=True, norm_first=True,
                                      bias=False, d_model=16, num_heads=4)),
                      (ENC_NORM, dict(num_layers=2, final_norm=True, activation="gelu",
                                      length=6))]
        cases = []
        for requirement, spec in specs:
            spec = dict(batch=2, length=4, d_model=8, num_heads=2, d_ff=16) | spec
            layers, final = spec.pop("num_layers"), spec.pop("final_norm")
            case = ({"requirement": requirement} | layer_case(gen, **spec)
                    | {"num_layers": layers, "final_norm": final})
            for i in range(layers):
                case |= layer_weights(gen, f"layers.{i}.", case)
            if final:  # Encoder's final norm is a plain nn.LayerNorm(d_model), with a bias
                case |= norm_weights(gen, "norm", case["d_model"], True)
            if requirement == ENC_ORDER:  # gradients too
                case["w.grad_out"] = randn(gen, *case["x"].shape)
            cases.append(case)
        return cases

    def run(self, obj, case):
        layer_cls = namespace_of(obj)["EncoderLayer"]
        with quiet():
            encoder = load(obj(new_layer(layer_cls, case), case["num_layers"],
                               final_norm=case["final_norm"]), case, skip=("grad_out",))
            got = {"output": call(encoder, case)}
            if "w.grad_out" in case:
                x = case["x"].detach().clone().requires_grad_(True)
                kind = "bias" if case["bias"] else "weight"
                first = getattr(encoder.layers[0].feed_forward.linear1, kind)
                got |= backward_from(lambda: call(encoder, case | {"x": x}), case["w.grad_out"],
                                     {"x.grad": x,
                                      f"layers.0.feed_forward.linear1.{kind}.grad": first})[1]
            return got

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
            found = {"output": encoder.eval()(case["x"], mask=mask_for_torch(case)).detach()}
        if "w.grad_out" in case:
            x = case["x"].clone().requires_grad_(True)
            with quiet(), torch.enable_grad():
                out = encoder.eval()(x, mask=mask_for_torch(case))
                (out * case["w.grad_out"]).sum().backward()
            kind = "bias" if case["bias"] else "weight"
            found |= {"x.grad": x.grad, f"layers.0.feed_forward.linear1.{kind}.grad":
                      getattr(encoder.layers[0].linear1, kind).grad}
        return found

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

    def mistakes(self, case):
        layers = case["num_layers"]
        found = []
        if case["final_norm"]:
            found.append(("the final norm is missing: when the encoder has one (self.norm), "
                          "it comes after the last layer.",
                          {"output": self._by_hand(case, final_norm=False)}))
            if layers > 1:
                found.append(("the final norm comes once, after the last layer, not after "
                              "every layer.", {"output": self._by_hand(case, norm_each=True)}))
        if "mask" in case:
            found.append(("pass the mask to every layer.",
                          {"output": self._by_hand(case, use_mask=False)}))
        for order in ([0] * layers, [layers - 1], [0], [0, 1][:layers],
                      list(range(layers))[::-1]):
            if order != list(range(layers)):
                found.append(("run every layer of self.layers once, in order (each has its "
                              "own weights).", {"output": self._by_hand(case, order=order)}))
        return found

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

"""Checkers for chapter 6: the Transformer's encode / decode / forward, greedy decoding, the
length penalty and one step of beam search.

The oracle model is PyTorch's: ``nn.TransformerEncoder`` / ``nn.TransformerDecoder`` holding
the case's weights, embeddings looked up with ``F.embedding`` and scaled by sqrt(d_model), the
sinusoidal table computed from its formula, and a final linear layer. Greedy decoding is checked
against the plain loop that re-runs the whole prefix at every step (no cache); beam search's
step against a brute-force ranking of every (hypothesis, token) candidate.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ch05 import (
    decoder_layer_fn,
    encoder_layer_fn,
    layer_config,
    layer_weights,
    lengths_mask,
    linear_weights,
    norm_weights,
    torch_layer,
    torch_mask,
    tril,
    weights_of,
)
from .core import Checker, close_to, namespace_of, randn, random_mask, register

BOS, EOS = 1, 2  # the course's special ids (PAD is the model's pad_id, 0 unless a case says)

MODEL_CFG = ("src_vocab", "tgt_vocab", "d_model", "num_heads", "enc_layers", "dec_layers", "d_ff",
             "activation", "norm_first", "final_norm", "positional", "max_positions", "pad_id")


# --- cases ---------------------------------------------------------------------------------------


def model_case(gen: torch.Generator, *, vocab: int = 12, d: int = 16, heads: int = 2,
               enc_layers: int = 1, dec_layers: int = 1, d_ff: int = 32,
               activation: str = "relu", norm_first: bool = False, final_norm: bool = False,
               positional: str = "sinusoidal", pad_id: int = 0, max_len: int = 32,
               bias_boost: dict[int, float] | None = None) -> dict[str, Any]:
    """A small model's settings and weights (named as in the notebook's Transformer)."""
    case: dict[str, Any] = dict(src_vocab=vocab, tgt_vocab=vocab, d_model=d, num_heads=heads,
                                enc_layers=enc_layers, dec_layers=dec_layers, d_ff=d_ff,
                                activation=activation, norm_first=norm_first,
                                final_norm=final_norm, positional=positional,
                                max_positions=max_len, pad_id=pad_id)
    for side in ("src", "tgt"):
        case[f"w.{side}_embed.embedding.weight"] = randn(gen, vocab, d, scale=d**-0.5)
        if positional == "learned":
            case[f"w.{side}_pos.embedding.weight"] = randn(gen, max_len, d, scale=0.5)
    for stack, n, cross in (("encoder", enc_layers, False), ("decoder", dec_layers, True)):
        for i in range(n):
            case.update(layer_weights(gen, f"{stack}.layers.{i}.", d, d_ff, cross=cross))
        if final_norm:
            case.update(norm_weights(gen, f"{stack}.norm", d))
    case.update(linear_weights(gen, "generator", d, vocab))
    for token, boost in (bias_boost or {}).items():
        case["w.generator.bias"][token] += boost
    return case


def tokens_with_padding(gen: torch.Generator, batch: int, length: int, vocab: int,
                        pad_id: int) -> Tensor:
    """Ids in [0, vocab) other than pad_id, padded at the end of random lengths (row 0 surely
    padded when length > 1)."""
    ids = torch.randint(0, vocab - 1, (batch, length), generator=gen)
    ids[ids >= pad_id] += 1
    return ids.masked_fill(~lengths_mask(gen, batch, length), pad_id)


def build_model(cls: type, case: dict[str, Any]) -> nn.Module:
    """The notebook's Transformer with the case's settings and weights, in eval mode."""
    model = cls(case["src_vocab"], case["tgt_vocab"], d_model=case["d_model"],
                num_heads=case["num_heads"], num_encoder_layers=case["enc_layers"],
                num_decoder_layers=case["dec_layers"], d_ff=case["d_ff"], dropout=0.0,
                activation=case["activation"], norm_first=case["norm_first"],
                final_norm=case["final_norm"], positional=case["positional"],
                max_len=case["max_positions"], pad_id=case["pad_id"])
    model.load_state_dict(weights_of(case))
    return model.eval()


def _notebook(obj: Any, name: str) -> Any:
    ns = namespace_of(obj) or {}
    if name not in ns:
        raise NameError(f"{name} is not defined: run the cells above first")
    return ns[name]


# --- the oracle model, from PyTorch's modules ------------------------------------------------------


def sinusoid_table(length: int, d: int) -> Tensor:
    """PE[pos, i] = sin(pos / 10000^(i / d)) for even i, cos(pos / 10000^((i - 1) / d)) for odd."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    i = torch.arange(d)[None, :]
    angle = pos * torch.pow(10000.0, -(i - i % 2).float() / d)
    return torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))


class TorchTransformer:
    """The case's model made of nn.TransformerEncoder / nn.TransformerDecoder."""

    def __init__(self, case: dict[str, Any]):
        self.case = case
        d = case["d_model"]
        self.stacks = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, n, cross in (("encoder", case["enc_layers"], False),
                                   ("decoder", case["dec_layers"], True)):
                layers = [torch_layer(case, weights_of(case, f"{name}.layers.{i}."), cross)
                          for i in range(n)]
                norm = None
                if case["final_norm"]:
                    norm = nn.LayerNorm(d)
                    norm.load_state_dict(weights_of(case, f"{name}.norm."))
                if cross:
                    stack = nn.TransformerDecoder(layers[0], n, norm=norm)
                else:
                    stack = nn.TransformerEncoder(layers[0], n, norm=norm,
                                                  enable_nested_tensor=False)
                stack.layers = nn.ModuleList(layers)
                self.stacks[name] = stack
        self.generator = nn.Linear(d, case["tgt_vocab"])
        self.generator.load_state_dict(weights_of(case, "generator."))

    def embed(self, side: str, ids: Tensor, offset: int = 0, scale: bool = True,
              positions: str = "normal") -> Tensor:
        d = self.case["d_model"]
        x = F.embedding(ids, self.case[f"w.{side}_embed.embedding.weight"])
        if scale:
            x = x * math.sqrt(d)
        length = ids.shape[1]
        if positions == "first":  # every position gets position 0's encoding
            offset, length = 0, 1
        if positions != "none":
            if self.case["positional"] == "learned":
                pe = self.case[f"w.{side}_pos.embedding.weight"][offset:offset + length]
            else:
                pe = sinusoid_table(offset + length, d)[offset:]
            x = x + pe
        return x

    def encode(self, src: Tensor, src_mask: Tensor | None, **embed_kw) -> Tensor:
        x = self.embed("src", src, **embed_kw)
        b, s = src.shape
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.stacks["encoder"](
                x, mask=torch_mask(src_mask, b, self.case["num_heads"], s, s))

    def decode(self, tgt: Tensor, memory: Tensor, memory_mask: Tensor | None,
               tgt_mask: Tensor | None, generator: bool = True, **embed_kw) -> Tensor:
        x = self.embed("tgt", tgt, **embed_kw)
        b, t, s, h = tgt.shape[0], tgt.shape[1], memory.shape[1], self.case["num_heads"]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = self.stacks["decoder"](x, memory, tgt_mask=torch_mask(tgt_mask, b, h, t, t),
                                       memory_mask=torch_mask(memory_mask, b, h, t, s))
            return self.generator(x) if generator else x

    def target_mask(self, tgt: Tensor) -> Tensor:
        return (tgt != self.case["pad_id"])[:, None, None, :] & tril(tgt.shape[1])

    def source_mask(self, src: Tensor) -> Tensor:
        return (src != self.case["pad_id"])[:, None, None, :]


# --- oracles: the Transformer's methods written with PyTorch ops on the model's weights ----------


def _embed(model: nn.Module, side: str, ids: Tensor, offset: int) -> Tensor:
    x = F.embedding(ids, getattr(model, f"{side}_embed").embedding.weight)
    x = x * math.sqrt(model.d_model)
    pos = getattr(model, f"{side}_pos")
    length = ids.shape[1]
    if isinstance(getattr(pos, "embedding", None), nn.Embedding):
        return x + pos.embedding.weight[offset:offset + length]
    return x + sinusoid_table(offset + length, model.d_model)[offset:].to(x)


def _final_norm(norm: nn.Module | None, x: Tensor) -> Tensor:
    if norm is None:
        return x
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def oracle_encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
    if src_mask is None:
        src_mask = (src != self.pad_id)[:, None, None, :]
    x = _embed(self, "src", src, 0)
    for layer in self.encoder.layers:
        x = encoder_layer_fn(dict(layer.named_parameters()), layer_config(layer), x, src_mask)
    return _final_norm(self.encoder.norm, x)


def oracle_decode(self, tgt: Tensor, memory: Tensor, memory_mask: Tensor | None = None,
                  tgt_mask: Tensor | None = None, cache=None) -> Tensor:
    offset = len(cache[0][0]) if cache is not None else 0
    if tgt_mask is None and cache is None:
        t = tgt.shape[1]
        causal = torch.tril(torch.ones(t, t, device=tgt.device)).bool()
        tgt_mask = (tgt != self.pad_id)[:, None, None, :] & causal
    x = _embed(self, "tgt", tgt, offset)
    for i, layer in enumerate(self.decoder.layers):
        x = decoder_layer_fn(dict(layer.named_parameters()), layer_config(layer), x, memory,
                             tgt_mask, memory_mask, cache[i] if cache is not None else None)
    x = _final_norm(self.decoder.norm, x)
    return F.linear(x, self.generator.weight, self.generator.bias)


def oracle_forward(self, src: Tensor, tgt: Tensor) -> Tensor:
    src_mask = (src != self.pad_id)[:, None, None, :]
    return oracle_decode(self, tgt, oracle_encode(self, src, src_mask), src_mask)


# --- the Transformer's methods ----------------------------------------------------------------------


@register
class EncodeChecker(Checker):
    name = "Transformer.encode"

    def cases(self, gen, hidden):
        cases = [
            {**model_case(gen), "src": tokens_with_padding(gen, 2, 6, 12, 0)},
            {**model_case(gen, enc_layers=2, norm_first=True, final_norm=True,
                          positional="learned"),
             "src": tokens_with_padding(gen, 3, 5, 12, 0),
             "src_mask": random_mask(gen, (3, 1, 1, 5), p_allowed=0.6)},
        ]
        if hidden:
            cases += [
                {**model_case(gen, pad_id=3, activation="gelu"),
                 "src": tokens_with_padding(gen, 3, 7, 12, 3)},
                {**model_case(gen, final_norm=True), "src": tokens_with_padding(gen, 1, 1, 12, 0)},
                {**model_case(gen, d=32, heads=4, enc_layers=2, vocab=15),
                 "src": tokens_with_padding(gen, 2, 12, 15, 0)},
            ]
        return cases

    def run(self, obj, case):
        model = build_model(obj, case)
        with torch.no_grad():
            if "src_mask" in case:
                return {"memory": model.encode(case["src"], case["src_mask"])}
            return {"memory": model.encode(case["src"])}

    def _mask(self, case, ref):
        return case["src_mask"] if "src_mask" in case else ref.source_mask(case["src"])

    def expected(self, case):
        ref = TorchTransformer(case)
        return {"memory": ref.encode(case["src"], self._mask(case, ref))}

    def hint(self, case, got):
        ref, out, src = TorchTransformer(case), got.get("memory"), case["src"]
        mask = self._mask(case, ref)
        if close_to(out, ref.encode(src, mask, scale=False)):
            return ("the embeddings are not scaled by sqrt(d_model): use self.src_embed(src), "
                    "which scales them.")
        if close_to(out, ref.encode(src, mask, positions="none")):
            return "add the positional encoding: self.src_pos(self.src_embed(src))."
        if close_to(out, ref.encode(src, None)):
            return "the encoder needs the source padding mask (self.src_mask(src) by default)."
        if "src_mask" in case and close_to(out, ref.encode(src, ref.source_mask(src))):
            return "use the src_mask argument when it is given (build one only when it is None)."
        return None

    @property
    def oracle(self):
        return oracle_encode


@register
class DecodeChecker(Checker):
    name = "Transformer.decode"

    def _case(self, gen, mode, batch, t, s, **cfg):
        case = model_case(gen, **cfg)
        vocab, pad = case["tgt_vocab"], case["pad_id"]
        case.update(mode=mode, memory=randn(gen, batch, s, case["d_model"]),
                    memory_mask=lengths_mask(gen, batch, s)[:, None, None, :])
        if mode == "cached":  # step by step: no padding inside the target
            ids = torch.randint(0, vocab - 1, (batch, t), generator=gen)
            case["tgt"] = ids + (ids >= pad).long()
        else:
            case["tgt"] = tokens_with_padding(gen, batch, t, vocab, pad)
        if mode == "explicit":
            case["tgt_mask"] = random_mask(gen, (batch, 1, t, t))
        return case

    def cases(self, gen, hidden):
        cases = [
            self._case(gen, "full", 2, 5, 4),
            self._case(gen, "cached", 2, 5, 6, norm_first=True, final_norm=True),
        ]
        if hidden:
            no_memory_mask = self._case(gen, "full", 3, 4, 4, positional="learned", pad_id=3)
            del no_memory_mask["memory_mask"]
            cases += [
                self._case(gen, "explicit", 2, 4, 3, dec_layers=2, activation="gelu"),
                no_memory_mask,
                self._case(gen, "cached", 3, 6, 3, positional="learned", dec_layers=2),
                self._case(gen, "full", 1, 1, 5, d=32, heads=4),
            ]
        return cases

    def run(self, obj, case):
        model = build_model(obj, case)
        tgt, memory, memory_mask = case["tgt"], case["memory"], case.get("memory_mask")
        with torch.no_grad():
            if case["mode"] == "cached":
                cache = model.new_cache()
                steps = [model.decode(tgt[:, t:t + 1], memory, memory_mask, cache=cache)
                         for t in range(tgt.shape[1])]
                return {"logits": torch.cat(steps, dim=1)}
            return {"logits": model.decode(tgt, memory, memory_mask,
                                           tgt_mask=case.get("tgt_mask"))}

    def _tgt_mask(self, case, ref):
        if case["mode"] == "cached":
            return tril(case["tgt"].shape[1])
        if case["mode"] == "explicit":
            return case["tgt_mask"]
        return ref.target_mask(case["tgt"])

    def expected(self, case):
        ref = TorchTransformer(case)
        return {"logits": ref.decode(case["tgt"], case["memory"], case.get("memory_mask"),
                                     self._tgt_mask(case, ref))}

    def hint(self, case, got):
        ref, out = TorchTransformer(case), got.get("logits")
        tgt, memory, memory_mask = case["tgt"], case["memory"], case.get("memory_mask")
        tgt_mask = self._tgt_mask(case, ref)

        def like(memory_mask=memory_mask, tgt_mask=tgt_mask, **kw):
            return close_to(out, ref.decode(tgt, memory, memory_mask, tgt_mask, **kw))

        if isinstance(out, Tensor) and out.shape[-1] == case["d_model"] != case["tgt_vocab"]:
            return "project the decoder's output to the vocabulary with self.generator."
        if case["mode"] == "cached" and like(positions="first"):
            return ("with a cache, the new tokens' positions start at offset = len(cache[0][0]) "
                    "(the number of positions already decoded): pass offset to self.tgt_pos.")
        if like(scale=False):
            return ("the embeddings are not scaled by sqrt(d_model): use self.tgt_embed(tgt), "
                    "which scales them.")
        if like(positions="none"):
            return "add the positional encoding: self.tgt_pos(self.tgt_embed(tgt), offset=...)."
        if memory_mask is not None and like(memory_mask=None):
            return "pass memory_mask on to the decoder (it hides the source's padding)."
        if case["mode"] == "full":
            if like(tgt_mask=None):
                return ("without a cache and without a given mask, the decoder needs "
                        "self.tgt_mask(tgt): causal, and hiding target padding.")
            if like(tgt_mask=tril(tgt.shape[1])):
                return "the target mask must also hide padding: use self.tgt_mask(tgt)."
        if case["mode"] == "explicit" and like(tgt_mask=ref.target_mask(tgt)):
            return "use the tgt_mask argument when it is given (build one only when it is None)."
        return None

    @property
    def oracle(self):
        return oracle_decode


@register
class ForwardChecker(Checker):
    name = "Transformer.forward"
    uses = ("Transformer.encode", "Transformer.decode")

    def cases(self, gen, hidden):
        cases = [{**model_case(gen), "src": tokens_with_padding(gen, 2, 6, 12, 0),
                  "tgt": tokens_with_padding(gen, 2, 5, 12, 0)}]
        if hidden:
            cases += [
                {**model_case(gen, enc_layers=2, dec_layers=2, norm_first=True,
                              positional="learned", pad_id=5),
                 "src": tokens_with_padding(gen, 3, 4, 12, 5),
                 "tgt": tokens_with_padding(gen, 3, 7, 12, 5)},
                {**model_case(gen, final_norm=True), "src": tokens_with_padding(gen, 1, 3, 12, 0),
                 "tgt": tokens_with_padding(gen, 1, 1, 12, 0)},
            ]
        return cases

    def run(self, obj, case):
        model = build_model(obj, case)
        with torch.no_grad():
            return {"logits": model(case["src"], case["tgt"])}

    def expected(self, case):
        ref = TorchTransformer(case)
        src_mask = ref.source_mask(case["src"])
        memory = ref.encode(case["src"], src_mask)
        return {"logits": ref.decode(case["tgt"], memory, src_mask, ref.target_mask(case["tgt"]))}

    def hint(self, case, got):
        ref, out = TorchTransformer(case), got.get("logits")
        src, tgt = case["src"], case["tgt"]
        src_mask = ref.source_mask(src)
        memory = ref.encode(src, src_mask)
        if close_to(out, ref.decode(tgt, memory, None, ref.target_mask(tgt))):
            return ("pass the source padding mask to decode as memory_mask, so that the "
                    "cross-attention ignores the source's padding.")
        if close_to(out, ref.decode(tgt, ref.encode(src, None), src_mask, ref.target_mask(tgt))):
            return "encode the source with its padding mask: self.encode(src, self.src_mask(src))."
        if close_to(out, ref.decode(tgt, memory, src_mask, tril(tgt.shape[1]))):
            return "the target mask must hide target padding too: let decode build tgt_mask."
        return None

    @property
    def oracle(self):
        return oracle_forward


# --- decoding ----------------------------------------------------------------------------------------


def reference_greedy(case: dict[str, Any], last: bool = True) -> Tensor:
    """Greedy decoding the plain way: re-run the whole prefix through the PyTorch model at every
    step; PAD and BOS are never chosen; after EOS comes PAD; stop when every row has ended.
    ``last=False`` reads the first position's logits (a mistake the hints recognise)."""
    ref = TorchTransformer(case)
    pad, bos, eos = case["pad_id"], case["bos_id"], case["eos_id"]
    src = case["src"]
    src_mask = ref.source_mask(src)
    memory = ref.encode(src, src_mask)
    out = torch.full((src.shape[0], 1), bos)
    done = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(case["max_len"]):
        logits = ref.decode(out, memory, src_mask, ref.target_mask(out))[:, -1 if last else 0]
        log_probs = F.log_softmax(logits, dim=-1)
        log_probs[:, [pad, bos]] = float("-inf")
        best = log_probs.argmax(dim=-1)
        best = torch.where(done, torch.full_like(best, pad), best)
        out = torch.cat([out, best[:, None]], dim=1)
        done = done | (best == eos)
        if bool(done.all()):
            break
    return out


@register
class GreedyChecker(Checker):
    name = "greedy_decode"
    uses = ("Transformer.encode", "Transformer.decode")

    def _case(self, gen, batch, s, max_len, use_cache=True, eos_id=EOS, boost=None,
              want=None, **cfg):
        """A greedy-decoding case; ``want`` redraws the weights (up to 30 times, from ``gen``)
        until some rows end before others ("mixed": padding after EOS) or all rows end before
        max_len, not all at once ("all_end": stopping early)."""
        boost = {eos_id: 1.5 if want == "all_end" else 1.0} if boost is None else boost
        for _ in range(30):
            case = model_case(gen, bias_boost=boost, **cfg)
            case.update(src=tokens_with_padding(gen, batch, s, case["src_vocab"], case["pad_id"]),
                        max_len=max_len, use_cache=use_cache, bos_id=BOS, eos_id=eos_id)
            if want is None:
                break
            out = reference_greedy(case)
            ended = (out == eos_id).any(dim=1)
            ends = {int((row == eos_id).nonzero()[0]) for row in out[ended]}
            if want == "mixed" and bool(ended.any()) and (len(ends) > 1 or not ended.all()):
                break
            if want == "all_end" and bool(ended.all()) and max(ends) > 1:
                break
        return case

    def cases(self, gen, hidden):
        cases = [
            self._case(gen, 3, 5, 8, want="all_end"),
            self._case(gen, 2, 4, 6, use_cache=False, want="mixed"),
            # PAD and BOS get the highest bias: they must still never be chosen.
            self._case(gen, 2, 5, 5, boost={0: 3.0, BOS: 3.0}),
        ]
        if hidden:
            cases += [
                self._case(gen, 4, 6, 10, norm_first=True, final_norm=True, dec_layers=2,
                           want="mixed"),
                self._case(gen, 1, 3, 1),
                self._case(gen, 3, 4, 7, use_cache=False, positional="learned", eos_id=3,
                           want="all_end"),
                self._case(gen, 2, 5, 6, boost={EOS: 8.0}),
            ]
        return cases

    def run(self, obj, case):
        model = build_model(_notebook(obj, "Transformer"), case)
        out = obj(model, case["src"], case["max_len"], bos_id=case["bos_id"],
                  eos_id=case["eos_id"], use_cache=case["use_cache"])
        return {"tokens": out}

    def expected(self, case):
        return {"tokens": reference_greedy(case)}

    def hint(self, case, got):
        out = got.get("tokens")
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[1] == 0:
            return "return the ids as one (batch, 1 + n) tensor."
        exp = reference_greedy(case)
        pad, bos, eos = case["pad_id"], case["bos_id"], case["eos_id"]
        if not bool((out[:, 0] == bos).all()):
            return "every output starts with bos_id (the decoder's first input)."
        first = reference_greedy(case, last=False)
        if out.shape == first.shape and bool((out == first).all()):
            return ("take the next token from the logits of the LAST position (logits[:, -1]), "
                    "not the first.")
        ended = (out == eos).long().cumsum(dim=1) - (out == eos).long() > 0  # strictly after EOS
        if bool((out[ended] != pad).any()):
            return "after a sequence's EOS, append pad_id, not more tokens."
        body = out[:, 1:]
        if bool((body == bos).any()) or bool(((body == pad) & ~ended[:, 1:]).any()):
            return ("PAD and BOS are never outputs: give them log-probability -inf before the "
                    "argmax (_Stepper does that).")
        width = exp.shape[1]
        if out.shape[1] > width and bool((out[:, :width] == exp).all()):
            return "stop as soon as every sequence has produced EOS."
        if out.shape[1] < width:
            return "generate up to max_len tokens after BOS (stop early only when all have ended)."
        return None

    @property
    def oracle(self):
        @torch.no_grad()
        def greedy_decode(model, src, max_len, bos_id=BOS, eos_id=EOS, use_cache=True):
            model.eval()
            pad = model.pad_id
            src_mask = (src != pad)[:, None, None, :]
            memory = oracle_encode(model, src, src_mask)
            out = torch.full((src.shape[0], 1), bos_id, device=src.device)
            done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
            for _ in range(max_len):
                log_probs = F.log_softmax(oracle_decode(model, out, memory, src_mask)[:, -1], -1)
                log_probs[:, [pad, bos_id]] = float("-inf")
                best = log_probs.argmax(-1).masked_fill(done, pad)
                out = torch.cat([out, best[:, None]], dim=1)
                done |= best == eos_id
                if bool(done.all()):
                    break
            return out
        return greedy_decode


@register
class LengthPenaltyChecker(Checker):
    name = "length_penalty"

    def cases(self, gen, hidden):
        cases = [
            {"length": torch.tensor([1, 2, 5, 10]), "alpha": 0.6},
            {"length": torch.randint(1, 30, (2, 3), generator=gen), "alpha": 1.0},
        ]
        if hidden:
            cases += [
                {"length": torch.randint(1, 50, (3, 4), generator=gen), "alpha": 0.0},
                {"length": torch.tensor([7]), "alpha": 2.0},
                {"length": torch.randint(1, 100, (5,), generator=gen), "alpha": 1.3},
            ]
        return cases

    def run(self, obj, case):
        return {"penalty": obj(case["length"].clone(), case["alpha"])}

    def expected(self, case):
        # (5 + L) / 6 = 1 + (L - 1) / 6, raised to alpha through exp and log.
        growth = torch.log1p((case["length"].double() - 1.0) / 6.0)
        return {"penalty": torch.exp(case["alpha"] * growth).float()}

    def hint(self, case, got):
        out, length, alpha = got.get("penalty"), case["length"].double(), case["alpha"]
        if isinstance(out, Tensor) and out.is_floating_point() and out.dtype != torch.float32:
            return "return a float32 tensor (length.float())."
        if close_to(out, length**alpha):
            return "GNMT's penalty is ((5 + length) / 6) ** alpha, not length ** alpha."
        if close_to(out, (5 + length) ** alpha / 6):
            return "divide (5 + length) by 6 before raising to the power alpha."
        if close_to(out, torch.div(5 + length, 6, rounding_mode="floor") ** alpha):
            return "(5 + length) / 6 must be a true division: convert length to float."
        return None

    @property
    def oracle(self):
        return lambda length, alpha: ((5.0 + length.float()) / 6.0) ** alpha


def reference_beam_step(scores: Tensor, log_probs: Tensor, finished: Tensor, pad_id: int,
                        finished_rule: str = "pad_free") -> tuple[Tensor, Tensor, Tensor]:
    """Rank every (hypothesis, token) candidate of each example explicitly and keep the best k.
    ``finished_rule`` other than "pad_free" gives the mistakes the hints recognise."""
    batch, k = scores.shape
    vocab = log_probs.shape[-1]
    new_scores, rows, tokens = [], [], []
    for b in range(batch):
        candidates = []
        for j in range(k):
            row = b * k + j
            for token in range(vocab):
                cost = float(log_probs[row, token])
                if bool(finished[row]) and finished_rule != "ignore":
                    if token != pad_id:
                        cost = float("-inf")
                    elif finished_rule == "pad_free":
                        cost = 0.0
                candidates.append((float(scores[b, j]) + cost, row, token))
        candidates.sort(key=lambda c: c[0], reverse=True)
        for score, row, token in candidates[:k]:
            new_scores.append(score)
            rows.append(row)
            tokens.append(token)
    return (torch.tensor(new_scores, dtype=scores.dtype).view(batch, k), torch.tensor(rows),
            torch.tensor(tokens))


@register
class BeamStepChecker(Checker):
    name = "beam_step"

    def _case(self, gen, batch, k, vocab, pad_id=0, first=False, p_finished=0.3):
        scores = -(torch.rand(batch, k, generator=gen) * 6).sort(dim=-1).values
        if first:  # the first step: only beam 0 is alive
            scores[:, 1:] = float("-inf")
        log_probs = F.log_softmax(randn(gen, batch * k, vocab, scale=2.0), dim=-1)
        log_probs[:, [pad_id, BOS]] = float("-inf")  # as _Stepper gives them
        finished = torch.rand(batch * k, generator=gen) < p_finished
        if first:
            finished[:] = False
        return {"scores": scores, "log_probs": log_probs, "finished": finished, "pad_id": pad_id}

    def cases(self, gen, hidden):
        cases = [
            self._case(gen, 2, 3, 6, p_finished=0.5),
            self._case(gen, 2, 2, 5, first=True),
        ]
        if hidden:
            cases += [
                self._case(gen, 1, 1, 7),
                self._case(gen, 3, 4, 8, pad_id=3, p_finished=0.4),
                self._case(gen, 4, 3, 6, p_finished=0.0),
                self._case(gen, 2, 4, 9, first=True),
            ]
        return cases

    def run(self, obj, case):
        result = obj(case["scores"].clone(), case["log_probs"].clone(), case["finished"].clone(),
                     pad_id=case["pad_id"])
        if isinstance(result, tuple) and len(result) == 3:
            return dict(zip(("scores", "rows", "tokens"), result))
        return {"scores": "not returned (beam_step must return (scores, rows, tokens))"}

    def expected(self, case):
        scores, rows, tokens = reference_beam_step(case["scores"], case["log_probs"],
                                                   case["finished"], case["pad_id"])
        return {"scores": scores, "rows": rows, "tokens": tokens}

    def hint(self, case, got):
        exp = self.expected(case)
        k = case["scores"].shape[1]
        rows = got.get("rows")
        if isinstance(rows, Tensor) and rows.shape == exp["rows"].shape and \
                not bool((rows == exp["rows"]).all()) and bool((rows == exp["rows"] % k).all()):
            return ("rows index the (B * k) hypotheses: row = b * k + j, so add the batch "
                    "offset b * k to the beam index j.")
        for rule in ("ignore", "pad_cost"):
            wrong, _, _ = reference_beam_step(case["scores"], case["log_probs"],
                                              case["finished"], case["pad_id"], rule)
            if bool(case["finished"].any()) and close_to(got.get("scores"), wrong):
                return ("a finished hypothesis may only be extended by pad_id, at no cost "
                        "(log-prob 0 for pad_id, -inf for every other token).")
        if close_to(got.get("scores"), exp["scores"]):
            return ("the scores are right but not the rows/tokens: a flat index f into the "
                    "(k * V) candidates of an example is beam f // V and token f % V.")
        return None

    @property
    def oracle(self):
        def beam_step(scores, log_probs, finished, pad_id=0):
            batch, k = scores.shape
            vocab = log_probs.shape[-1]
            only_pad = torch.full_like(log_probs, float("-inf"))
            only_pad[:, pad_id] = 0.0
            cost = torch.where(finished[:, None], only_pad, log_probs)
            total = (scores.reshape(-1, 1) + cost).view(batch, k * vocab)
            best, flat = torch.topk(total, k, dim=-1)
            rows = flat.div(vocab, rounding_mode="floor") + k * torch.arange(batch)[:, None]
            return best, rows.reshape(-1), (flat % vocab).reshape(-1)
        return beam_step

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

from .ch04 import TRANSFORMER_MODULES
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
from .core import (
    Checker,
    Missing,
    distinct,
    namespace_of,
    randn,
    random_mask,
    register,
)

# The course's special ids; the cases also use others (the model's pad_id, bos_id, eos_id).
PAD, BOS, EOS = 0, 1, 2


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
    """The notebook's Transformer with the case's settings and weights, in eval mode (in
    training mode if the case says ``train``), with the case's dropout (0 unless it says)."""
    model = cls(case["src_vocab"], case["tgt_vocab"], d_model=case["d_model"],
                num_heads=case["num_heads"], num_encoder_layers=case["enc_layers"],
                num_decoder_layers=case["dec_layers"], d_ff=case["d_ff"],
                dropout=case.get("dropout", 0.0),
                activation=case["activation"], norm_first=case["norm_first"],
                final_norm=case["final_norm"], positional=case["positional"],
                max_len=case["max_positions"], pad_id=case["pad_id"])
    model.load_state_dict(weights_of(case))
    return model.train(case.get("train", False))


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


def all_dropped(case: dict[str, Any], stack: str, x: Tensor) -> Tensor:
    """The encoder's or decoder's output on ``x`` in training mode with dropout p = 1: every
    sublayer's contribution is dropped, so a post-norm layer only normalises (each block's norm
    in turn) and a pre-norm layer passes x through; then the final norm if there is one."""
    w, d = weights_of(case, stack + "."), case["d_model"]
    blocks = (("self_attn_block", "cross_attn_block", "ff_block") if stack == "decoder"
              else ("attn_block", "ff_block"))
    for i in range(case["dec_layers" if stack == "decoder" else "enc_layers"]):
        if not case["norm_first"]:
            for block in blocks:
                name = f"layers.{i}.{block}.norm"
                x = F.layer_norm(x, (d,), w[f"{name}.weight"], w.get(f"{name}.bias"))
    if case["final_norm"]:
        x = F.layer_norm(x, (d,), w["norm.weight"], w.get("norm.bias"))
    return x


def positions_only(ref: TorchTransformer, side: str, ids: Tensor, offset: int = 0) -> Tensor:
    """The positional encodings alone (what is left when dropout drops the embeddings before
    the positions are added)."""
    return ref.embed(side, ids, offset) - ref.embed(side, ids, offset, positions="none")


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


def _embed_dropout(model: nn.Module, x: Tensor) -> Tensor:
    dropout = getattr(model, "embed_dropout", None)
    p = dropout.p if isinstance(dropout, nn.Dropout) else 0.0
    return F.dropout(x, p, training=model.training)


def oracle_encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
    if src_mask is None:
        src_mask = (src != self.pad_id)[:, None, None, :]
    x = _embed_dropout(self, _embed(self, "src", src, 0))
    if self.training:  # the provided encoder, with its dropout
        return self.encoder(x, src_mask)
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
    x = _embed_dropout(self, _embed(self, "tgt", tgt, offset))
    if self.training:  # the provided decoder, with its dropout
        x = self.decoder(x, memory, tgt_mask, memory_mask, cache)
        return F.linear(x, self.generator.weight, self.generator.bias)
    for i, layer in enumerate(self.decoder.layers):
        x = decoder_layer_fn(dict(layer.named_parameters()), layer_config(layer), x, memory,
                             tgt_mask, memory_mask, cache[i] if cache is not None else None)
    x = _final_norm(self.decoder.norm, x)
    return F.linear(x, self.generator.weight, self.generator.bias)


def oracle_forward(self, src: Tensor, tgt: Tensor) -> Tensor:
    src_mask = (src != self.pad_id)[:, None, None, :]
    return oracle_decode(self, tgt, oracle_encode(self, src, src_mask), src_mask)


# --- the Transformer's methods ----------------------------------------------------------------------


EN_VALUES, EN_MASK, EN_DROPOUT = (
    "embed (scaled by sqrt(d_model)), add positions, encode with the source padding mask",
    "a given src_mask is used",
    "dropout on the embeddings plus positions, in training mode only")

#: PyTorch's layers and stacks, which the model is built without.
TRANSFORMER_CALLS = TRANSFORMER_MODULES


@register
class EncodeChecker(Checker):
    name = "Transformer.encode"
    forbidden = TRANSFORMER_CALLS

    def cases(self, gen, hidden):
        src = tokens_with_padding(gen, 2, 6, 12, 3)
        src[0, 0] = 0  # a real token: the padding is id 3 here
        cases = [
            {"requirement": EN_VALUES, **model_case(gen, pad_id=3), "src": src},
            {"requirement": EN_MASK, **model_case(gen, enc_layers=2, norm_first=True,
                                                  final_norm=True, positional="learned"),
             "src": tokens_with_padding(gen, 3, 5, 12, 0),
             "src_mask": random_mask(gen, (3, 1, 1, 5), p_allowed=0.6)},
            {"requirement": EN_DROPOUT, **model_case(gen), "dropout": 1.0, "train": True,
             "src": tokens_with_padding(gen, 2, 5, 12, 0)},
            {"requirement": EN_DROPOUT, **model_case(gen), "dropout": 1.0, "train": False,
             "src": tokens_with_padding(gen, 2, 5, 12, 0)},
        ]
        if hidden:
            cases += [
                {"requirement": EN_VALUES, **model_case(gen, pad_id=3, activation="gelu"),
                 "src": tokens_with_padding(gen, 3, 7, 12, 3)},
                {"requirement": EN_VALUES, **model_case(gen, final_norm=True),
                 "src": tokens_with_padding(gen, 1, 1, 12, 0)},
                {"requirement": EN_VALUES, **model_case(gen, d=32, heads=4, enc_layers=2,
                                                        vocab=15),
                 "src": tokens_with_padding(gen, 2, 12, 15, 0)},
                {"requirement": EN_MASK, **model_case(gen, pad_id=2),
                 "src": tokens_with_padding(gen, 2, 6, 12, 2),
                 "src_mask": random_mask(gen, (2, 1, 1, 6), p_allowed=0.5)},
                {"requirement": EN_DROPOUT, **model_case(gen, enc_layers=2, final_norm=True),
                 "dropout": 1.0, "train": True, "src": tokens_with_padding(gen, 3, 4, 12, 0)},
                {"requirement": EN_DROPOUT, **model_case(gen, positional="learned"),
                 "dropout": 0.7, "train": False, "src": tokens_with_padding(gen, 2, 3, 12, 0)},
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
        ref, src = TorchTransformer(case), case["src"]
        if case.get("train") and case.get("dropout") == 1.0:
            return {"memory": all_dropped(case, "encoder", ref.embed("src", src) * 0.0)}
        return {"memory": ref.encode(src, self._mask(case, ref))}

    def mistakes(self, case):
        ref, src = TorchTransformer(case), case["src"]
        mask = self._mask(case, ref)
        if case.get("dropout"):
            if case.get("train"):
                return [
                    ("in training mode the embeddings (with their positions) go through the "
                     "model's embedding dropout (here p = 1: all dropped) before the encoder.",
                     {"memory": all_dropped(case, "encoder", ref.embed("src", src))}),
                    ("dropout comes after the positions are added, not between the embedding "
                     "and the positions.",
                     {"memory": all_dropped(case, "encoder", positions_only(ref, "src", src))}),
                ]
            return []
        found = [
            ("the embeddings are not scaled by sqrt(d_model): the model's token embedding "
             "module does that.", {"memory": ref.encode(src, mask, scale=False)}),
            ("add the positional encoding (the model's src_pos) to the embeddings.",
             {"memory": ref.encode(src, mask, positions="none")}),
            ("the encoder needs the source padding mask (the model's src_mask(src) when none "
             "is given).", {"memory": ref.encode(src, None)}),
        ]
        if case["pad_id"] != PAD and "src_mask" not in case:
            found.append(("padding is the model's pad_id, not always id 0.",
                          {"memory": ref.encode(src, (src != PAD)[:, None, None, :])}))
        if "src_mask" in case:
            found.append(("use the src_mask argument when it is given (build one only when it "
                          "is None).", {"memory": ref.encode(src, ref.source_mask(src))}))
        return found

    def symptom(self, case, got):
        if case.get("dropout") and not case.get("train"):
            return ("dropout is for training only: in eval mode the embeddings are not "
                    "dropped (the model's nn.Dropout module knows the mode).")
        return None

    @property
    def oracle(self):
        return oracle_encode


DE_VALUES, DE_CACHE, DE_GIVEN, DE_DROPOUT = (
    "embed, add positions, decode with the target mask (causal, hiding padding), project to "
    "the vocabulary",
    "with a cache, positions start at the number already decoded",
    "a given tgt_mask is used",
    "dropout on the embeddings plus positions, in training mode only")


@register
class DecodeChecker(Checker):
    name = "Transformer.decode"
    forbidden = TRANSFORMER_CALLS

    def _case(self, gen, requirement, mode, batch, t, s, dropout=None, train=False, **cfg):
        case = {"requirement": requirement} | model_case(gen, **cfg)
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
        if dropout is not None:
            case.update(dropout=dropout, train=train)
        return case

    def cases(self, gen, hidden):
        cases = [
            self._case(gen, DE_VALUES, "full", 2, 5, 4),
            self._case(gen, DE_CACHE, "cached", 2, 5, 6, norm_first=True,
                       final_norm=True),
            self._case(gen, DE_GIVEN, "explicit", 2, 4, 3),
            self._case(gen, DE_DROPOUT, "full", 2, 4, 3, dropout=1.0, train=True),
            self._case(gen, DE_DROPOUT, "full", 2, 4, 3, dropout=1.0, train=False),
        ]
        if hidden:
            no_memory_mask = self._case(gen, DE_VALUES, "full", 3, 4, 4, positional="learned",
                                        pad_id=3)
            del no_memory_mask["memory_mask"]
            cases += [
                self._case(gen, DE_GIVEN, "explicit", 2, 4, 3, dec_layers=2,
                           activation="gelu"),
                no_memory_mask,
                self._case(gen, DE_CACHE, "cached", 3, 6, 3, positional="learned",
                           dec_layers=2),
                self._case(gen, DE_VALUES, "full", 1, 1, 5, d=32, heads=4),
                self._case(gen, DE_DROPOUT, "full", 3, 5, 2, dec_layers=2, final_norm=True,
                           dropout=1.0, train=True),
                self._case(gen, DE_DROPOUT, "full", 2, 3, 4, positional="learned",
                           dropout=0.6, train=False),
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

    def _dropped(self, case, x):
        """Logits in training mode with dropout 1, from the decoder's input ``x``."""
        w = weights_of(case, "generator.")
        return F.linear(all_dropped(case, "decoder", x), w["weight"], w["bias"])

    def expected(self, case):
        ref = TorchTransformer(case)
        if case.get("train") and case.get("dropout") == 1.0:
            return {"logits": self._dropped(case, ref.embed("tgt", case["tgt"]) * 0.0)}
        return {"logits": ref.decode(case["tgt"], case["memory"], case.get("memory_mask"),
                                     self._tgt_mask(case, ref))}

    def mistakes(self, case):
        ref = TorchTransformer(case)
        tgt, memory, memory_mask = case["tgt"], case["memory"], case.get("memory_mask")
        tgt_mask = self._tgt_mask(case, ref)
        if case.get("dropout"):
            if case.get("train"):
                return [
                    ("in training mode the embeddings (with their positions) go through the "
                     "model's embedding dropout (here p = 1: all dropped) before the decoder.",
                     {"logits": self._dropped(case, ref.embed("tgt", tgt))}),
                    ("dropout comes after the positions are added, not between the embedding "
                     "and the positions.",
                     {"logits": self._dropped(case, positions_only(ref, "tgt", tgt))}),
                ]
            return []

        def like(hint, memory_mask=memory_mask, tgt_mask=tgt_mask, **kw):
            return (hint, {"logits": ref.decode(tgt, memory, memory_mask, tgt_mask, **kw)})

        found = [
            like("the embeddings are not scaled by sqrt(d_model): the model's token embedding "
                 "module does that.", scale=False),
            like("add the positional encoding (the model's tgt_pos) to the embeddings.",
                 positions="none"),
        ]
        if case["mode"] == "cached":
            found.insert(0, like("with a cache, the new tokens' positions start at the number "
                                 "of positions already in the cache, not at 0: pass that "
                                 "offset to the positional encoding.", positions="first"))
        if memory_mask is not None:
            found.append(like("pass memory_mask on to the decoder (it hides the source's "
                              "padding).", memory_mask=None))
        if case["mode"] == "full":
            found.append(like("without a cache and without a given mask, the decoder needs "
                              "the model's target mask: causal, and hiding target padding.",
                              tgt_mask=None))
            found.append(like("the target mask must also hide padding: the model's tgt_mask "
                              "does both.", tgt_mask=tril(tgt.shape[1])))
        if case["mode"] == "explicit":
            found.append(like("use the tgt_mask argument when it is given (build one only "
                              "when it is None).", tgt_mask=ref.target_mask(tgt)))
        return found

    def symptom(self, case, got):
        out = got.get("logits")
        if isinstance(out, Tensor) and out.shape[-1] == case["d_model"] != case["tgt_vocab"]:
            return ("project the decoder's output to the vocabulary with the model's output "
                    "layer (self.generator).")
        if case.get("dropout") and not case.get("train"):
            return ("dropout is for training only: in eval mode the embeddings are not "
                    "dropped (the model's nn.Dropout module knows the mode).")
        return None

    @property
    def oracle(self):
        return oracle_decode


FW_VALUES = ("encode the source with its padding mask, decode the whole target with it as the "
             "memory mask")


@register
class ForwardChecker(Checker):
    name = "Transformer.forward"
    uses = ("Transformer.encode", "Transformer.decode")
    forbidden = TRANSFORMER_CALLS

    def cases(self, gen, hidden):
        cases = [{"requirement": FW_VALUES, **model_case(gen),
                  "src": tokens_with_padding(gen, 2, 6, 12, 0),
                  "tgt": tokens_with_padding(gen, 2, 5, 12, 0)}]
        if hidden:
            cases += [
                {"requirement": FW_VALUES,
                 **model_case(gen, enc_layers=2, dec_layers=2, norm_first=True,
                              positional="learned", pad_id=5),
                 "src": tokens_with_padding(gen, 3, 4, 12, 5),
                 "tgt": tokens_with_padding(gen, 3, 7, 12, 5)},
                {"requirement": FW_VALUES, **model_case(gen, final_norm=True),
                 "src": tokens_with_padding(gen, 1, 3, 12, 0),
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

    def mistakes(self, case):
        ref = TorchTransformer(case)
        src, tgt = case["src"], case["tgt"]
        src_mask = ref.source_mask(src)
        memory = ref.encode(src, src_mask)
        return [
            ("pass the source padding mask to decode as the memory mask, so that the "
             "cross-attention ignores the source's padding.",
             {"logits": ref.decode(tgt, memory, None, ref.target_mask(tgt))}),
            ("encode the source with its padding mask.",
             {"logits": ref.decode(tgt, ref.encode(src, None), src_mask, ref.target_mask(tgt))}),
            ("the target mask must hide target padding too: let decode build it.",
             {"logits": ref.decode(tgt, memory, src_mask, tril(tgt.shape[1]))}),
            ("the memory is the encoder's output once: encode already runs the encoder.",
             {"logits": ref.decode(tgt, ref.stacks["encoder"](memory, mask=torch_mask(
                 src_mask, src.shape[0], case["num_heads"], src.shape[1], src.shape[1])),
                 src_mask, ref.target_mask(tgt))}),
        ]

    @property
    def oracle(self):
        return oracle_forward


# --- decoding ----------------------------------------------------------------------------------------


def reference_greedy(case: dict[str, Any], last: bool = True, **wrong: Any) -> Tensor:
    """Greedy decoding the plain way: re-run the whole prefix through the PyTorch model at every
    step; PAD and BOS are never chosen; after EOS comes PAD; stop when every row has ended.
    The mistakes the hints recognise: ``last=False`` reads the first position's logits;
    ``wrong`` may say which id starts (``bos``), ends (``eos``), follows the end (``fill``)
    and is never chosen (``never``), and drop the source mask from the encoder
    (``encode_mask=False``) or the decoder (``memory_mask=False``)."""
    ref = TorchTransformer(case)
    pad, bos, eos = case["pad_id"], case["bos_id"], case["eos_id"]
    start, end, fill = wrong.get("bos", bos), wrong.get("eos", eos), wrong.get("fill", pad)
    never = list(wrong.get("never", (pad, bos)))
    src = case["src"]
    src_mask = ref.source_mask(src)
    memory = ref.encode(src, src_mask if wrong.get("encode_mask", True) else None)
    memory_mask = src_mask if wrong.get("memory_mask", True) else None
    out = torch.full((src.shape[0], 1), start)
    done = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(case["max_len"]):
        logits = ref.decode(out, memory, memory_mask, ref.target_mask(out))[:, -1 if last else 0]
        log_probs = F.log_softmax(logits, dim=-1)
        log_probs[:, never] = float("-inf")
        best = log_probs.argmax(dim=-1)
        best = torch.where(done, torch.full_like(best, fill), best)
        out = torch.cat([out, best[:, None]], dim=1)
        done = done | (best == end)
        if bool(done.all()):
            break
    return out


GR_STOP, GR_PAD, GR_NEVER, GR_EVAL = (
    "BOS, then the most likely token; stop as soon as every sequence has produced EOS",
    "after a sequence's EOS comes PAD, up to max_len tokens",
    "PAD and BOS are never chosen",
    "the model runs in eval mode (no dropout), whatever mode it was given in")


def dropped_greedy(case: dict[str, Any]) -> Tensor:
    """What greedy decoding gives if the model stays in training mode with dropout p = 1:
    every position's logits are the same, so is every token."""
    w = weights_of(case, "generator.")
    x = torch.zeros(1, 1, case["d_model"])
    logits = F.linear(all_dropped(case, "decoder", x), w["weight"], w["bias"])[0, 0]
    logits[[case["pad_id"], case["bos_id"]]] = float("-inf")
    best = int(logits.argmax())
    n = 1 if best == case["eos_id"] else case["max_len"]
    row = torch.tensor([case["bos_id"]] + [best] * n)
    return row.expand(case["src"].shape[0], -1).clone()


@register
class GreedyChecker(Checker):
    name = "greedy_decode"
    uses = ("Transformer.encode", "Transformer.decode")

    def _case(self, gen, requirement, batch, s, max_len, use_cache=True, bos_id=BOS,
              eos_id=EOS, boost=None, want=None, train=False, **cfg):
        """A greedy-decoding case; ``want`` redraws the weights (up to 30 times, from ``gen``)
        until some rows end before others ("mixed": padding after EOS) or all rows end before
        max_len, not all at once ("all_end": stopping early). ``train`` hands the model over
        in training mode with dropout 1."""
        boost = {eos_id: 1.5 if want == "all_end" else 1.0} if boost is None else boost
        for _ in range(30):
            case = {"requirement": requirement} | model_case(gen, bias_boost=boost, **cfg)
            case.update(src=tokens_with_padding(gen, batch, s, case["src_vocab"], case["pad_id"]),
                        max_len=max_len, use_cache=use_cache, bos_id=bos_id, eos_id=eos_id)
            if train:
                case.update(dropout=1.0, train=True)
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
            # Special ids other than the course's PAD, BOS, EOS: the ones given count.
            self._case(gen, GR_STOP, 3, 5, 8, bos_id=4, eos_id=5, want="all_end"),
            self._case(gen, GR_PAD, 2, 4, 6, use_cache=False, pad_id=3, want="mixed"),
            # PAD and BOS get the highest bias: they must still never be chosen.
            self._case(gen, GR_NEVER, 2, 5, 5, pad_id=3, bos_id=4, boost={3: 3.0, 4: 3.0}),
            # Pre-norm, no final norm: with every activation dropped the logits are the
            # output bias (carried as is), whose best token is 4, never EOS.
            self._case(gen, GR_EVAL, 2, 4, 5, norm_first=True, final_norm=False,
                       boost={4: 0.8, EOS: 0.3}, train=True),
        ]
        if hidden:
            cases += [
                self._case(gen, GR_PAD, 4, 6, 10, norm_first=True, final_norm=True,
                           dec_layers=2, want="mixed"),
                self._case(gen, GR_STOP, 1, 3, 1),
                self._case(gen, GR_STOP, 3, 4, 7, use_cache=False, positional="learned",
                           eos_id=3, want="all_end"),
                self._case(gen, GR_STOP, 2, 5, 6, boost={EOS: 8.0}),
                self._case(gen, GR_NEVER, 3, 4, 6, boost={0: 4.0, BOS: 2.0}, use_cache=False),
                self._case(gen, GR_PAD, 3, 5, 8, pad_id=5, bos_id=7, eos_id=9, want="mixed"),
                self._case(gen, GR_NEVER, 2, 4, 5, pad_id=6, bos_id=8, boost={6: 3.0, 8: 3.0}),
                self._case(gen, GR_EVAL, 3, 5, 7, use_cache=False, norm_first=True,
                           final_norm=False, boost={5: 0.8, EOS: 0.3}, train=True),
            ]
        return cases

    def run(self, obj, case):
        model = build_model(_notebook(obj, "Transformer"), case)
        out = obj(model, case["src"], case["max_len"], bos_id=case["bos_id"],
                  eos_id=case["eos_id"], use_cache=case["use_cache"])
        return {"tokens": out}

    def expected(self, case):
        return {"tokens": reference_greedy(case)}

    def mistakes(self, case):
        if case.get("train"):
            return [("decode with the model in eval mode: it may come from training, and its "
                     "dropout must be off while it generates.",
                     {"tokens": dropped_greedy(case)})]
        pad, bos, eos = case["pad_id"], case["bos_id"], case["eos_id"]
        wrong: list[tuple[str, dict[str, Any]]] = [
            ("take the next token from the logits of the LAST position, not the first.",
             {"last": False}),
            ("the decoder needs the source padding mask as its memory mask, so that the "
             "cross-attention ignores the source's padding.", {"memory_mask": False}),
            ("encode the source with its padding mask.", {"encode_mask": False}),
        ]
        if eos != EOS:
            wrong.append(("a sequence ends at the eos_id you are given, which is not always "
                          "the course's EOS.", {"eos": EOS}))
        if bos != BOS:
            wrong += [("the output starts with the bos_id you are given, not always the "
                       "course's BOS.", {"bos": BOS}),
                      ("bos_id is never chosen: the one you are given, not always the course's "
                       "BOS.", {"never": (pad, BOS)}),
                      ("use the bos_id you are given (not always the course's BOS): the output "
                       "starts with it, and it is never chosen.",
                       {"bos": BOS, "never": (pad, BOS)})]
        if pad != PAD:
            wrong += [("after a sequence's EOS comes the model's pad_id, not always the "
                       "course's PAD.", {"fill": PAD}),
                      ("pad_id is never chosen: the model's, not always the course's PAD.",
                       {"never": (PAD, bos)}),
                      ("use the model's pad_id (not always the course's PAD): it comes after a "
                       "sequence's EOS, and it is never chosen.",
                       {"fill": PAD, "never": (PAD, bos)})]
        return distinct(self, case, [(hint, {"tokens": reference_greedy(case, **kw)})
                                     for hint, kw in wrong])

    def symptom(self, case, got):
        out = got.get("tokens")
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[1] == 0:
            return "return the ids as one (batch, 1 + n) tensor."
        pad, bos, eos = case["pad_id"], case["bos_id"], case["eos_id"]
        if not bool((out[:, 0] == bos).all()):
            return "every output starts with bos_id (the decoder's first input)."
        ended = (out == eos).long().cumsum(dim=1) - (out == eos).long() > 0  # strictly after EOS
        if bool((out[ended] != pad).any()):
            return "after a sequence's EOS, append pad_id, not more tokens."
        body = out[:, 1:]
        if bool((body == bos).any()) or bool(((body == pad) & ~ended[:, 1:]).any()):
            return ("PAD and BOS are never outputs: give them log-probability -inf before the "
                    "argmax (_Stepper does that).")
        finished = (out == eos).any(dim=1)
        if bool(finished.all()) and bool((out[:, -1] == pad).all()):
            return "stop as soon as every sequence has produced EOS."
        if out.shape[1] < case["max_len"] + 1 and not bool(finished.all()):
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


LP = "((5 + length) / 6) ** alpha, as a float32 tensor"


@register
class LengthPenaltyChecker(Checker):
    name = "length_penalty"

    def cases(self, gen, hidden):
        cases = [
            {"requirement": LP, "length": torch.tensor([1, 2, 5, 10]), "alpha": 0.6},
            {"requirement": LP, "length": torch.randint(1, 30, (2, 3), generator=gen),
             "alpha": 1.0},
            {"requirement": LP, "length": torch.randint(1, 30, (2, 2), generator=gen),
             "alpha": 0.0},
            {"requirement": LP, "length": torch.tensor([4]), "alpha": 0.8},
        ]
        if hidden:
            cases += [
                {"requirement": LP, "length": torch.randint(1, 50, (3, 4), generator=gen),
                 "alpha": 0.0},
                {"requirement": LP, "length": torch.tensor([7]), "alpha": 2.0},
                {"requirement": LP, "length": torch.randint(1, 100, (5,), generator=gen),
                 "alpha": 1.3},
            ]
        return cases

    def run(self, obj, case):
        return {"penalty": obj(case["length"], case["alpha"])}

    def expected(self, case):
        # (5 + L) / 6 = 1 + (L - 1) / 6, raised to alpha through exp and log.
        growth = torch.log1p((case["length"].double() - 1.0) / 6.0)
        return {"penalty": torch.exp(case["alpha"] * growth).float()}

    def mistakes(self, case):
        length, alpha = case["length"].double(), case["alpha"]
        return distinct(self, case, [
            ("GNMT's penalty is ((5 + length) / 6) ** alpha, not length ** alpha.",
             {"penalty": (length ** alpha).float()}),
            ("divide (5 + length) by 6 before raising to the power alpha.",
             {"penalty": ((5 + length) ** alpha / 6).float()}),
            ("(5 + length) / 6 must be a true division, not an integer one.",
             {"penalty": (torch.div(5 + length, 6, rounding_mode="floor") ** alpha).float()}),
        ])

    def symptom(self, case, got):
        out = got.get("penalty")
        if isinstance(out, Tensor) and out.dtype != torch.float32:
            return "return a float32 tensor, whatever the lengths' integer dtype (and alpha)."
        if not isinstance(out, Tensor):
            return ("return a tensor of the lengths' shape, even when it holds one length "
                    "(not a Python number).")
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


BS_VALUES, BS_FINISHED = (
    "the k best (hypothesis, token) extensions of each example, best first, with their rows "
    "and tokens",
    "finished hypotheses are extended only by pad_id, at no cost")


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
            {"requirement": BS_VALUES} | self._case(gen, 2, 2, 5, first=True),
            {"requirement": BS_VALUES} | self._case(gen, 2, 3, 6, p_finished=0.0),
            {"requirement": BS_FINISHED} | self._case(gen, 2, 3, 6, p_finished=0.5),
            {"requirement": BS_FINISHED} | self._case(gen, 2, 2, 6, pad_id=3, p_finished=0.5),
        ]
        if hidden:
            cases += [
                {"requirement": BS_VALUES} | self._case(gen, 1, 1, 7, p_finished=0.0),
                {"requirement": BS_VALUES} | self._case(gen, 4, 3, 6, p_finished=0.0),
                {"requirement": BS_VALUES} | self._case(gen, 2, 4, 9, first=True),
                {"requirement": BS_FINISHED} | self._case(gen, 3, 4, 8, pad_id=3,
                                                          p_finished=0.4),
                {"requirement": BS_FINISHED} | self._case(gen, 2, 2, 7, p_finished=0.6),
            ]
        return cases

    def run(self, obj, case):
        result = obj(case["scores"], case["log_probs"], case["finished"], pad_id=case["pad_id"])
        if isinstance(result, tuple) and len(result) == 3:
            return dict(zip(("scores", "rows", "tokens"), result))
        what = (f"a tuple of {len(result)}" if isinstance(result, tuple)
                else f"a single {type(result).__name__}")
        missing = Missing(f"beam_step must return (scores, rows, tokens); it returned {what}")
        return {"scores": missing, "rows": missing, "tokens": missing}

    def expected(self, case):
        scores, rows, tokens = reference_beam_step(case["scores"], case["log_probs"],
                                                   case["finished"], case["pad_id"])
        return {"scores": scores, "rows": rows, "tokens": tokens}

    def mistakes(self, case):
        exp = self.expected(case)
        k = case["scores"].shape[1]
        found = []
        if bool((exp["rows"] != exp["rows"] % k).any()):
            found.append(("rows index the (B * k) hypotheses: row = b * k + j, so add the "
                          "batch offset b * k to the beam index j.",
                          {"rows": exp["rows"] % k}))
        if bool(case["finished"].any()):
            for rule in ("ignore", "pad_cost"):
                wrong, _, _ = reference_beam_step(case["scores"], case["log_probs"],
                                                  case["finished"], case["pad_id"], rule)
                if not torch.equal(wrong, exp["scores"]):
                    found.append(("a finished hypothesis may only be extended by pad_id, at no "
                                  "cost (log-prob 0 for pad_id, -inf for every other token).",
                                  {"scores": wrong}))
            if case["pad_id"] != PAD:
                _, _, wrong = reference_beam_step(case["scores"], case["log_probs"],
                                                  case["finished"], PAD)
                if not torch.equal(wrong, exp["tokens"]):
                    found.insert(0, ("extend finished hypotheses with the pad_id you are given, "
                                     "not always the course's PAD.", {"tokens": wrong}))
        return found

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

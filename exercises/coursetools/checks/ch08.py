"""Checkers for chapter 8: a decoder-only language model (sampling, the causal forward pass
with a key/value cache, cached generation, the shifted loss)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ch02 import linear_weights, load, mha_weights, norm_weights, quiet
from .ch04 import torch_layer, torch_layer_state
from .core import Checker, namespace_of, randn, register

# --- sample_next_token -----------------------------------------------------------------------------

#: Draws per row when the check measures a sampling distribution: frequencies are then within
#: about 0.005 of the probabilities (one standard deviation), far inside the tolerance.
DRAWS = 8000

S_GREEDY, S_TEMPERATURE, S_TOP_K, S_GENERATOR = (
    "temperature 0 picks the largest logit", "samples follow softmax(logits / temperature)",
    "top_k keeps only the k largest logits", "draws come from the generator it is given")


def sampling_distribution(logits: Tensor, temperature: float, top_k: int | None) -> Tensor:
    scaled = logits.double() / temperature
    if top_k is not None:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return torch.softmax(scaled, dim=-1)


@register
class SampleNextTokenChecker(Checker):
    name = "sample_next_token"
    atol = 0.03  # frequencies of DRAWS samples against probabilities
    rtol = 0.0

    def cases(self, gen, hidden):
        cases = [
            {"requirement": S_GREEDY, "logits": randn(gen, 3, 7, scale=2.0),
             "temperature": 0.0, "top_k": 0},
            {"requirement": S_TEMPERATURE, "logits": randn(gen, 2, 5), "temperature": 0.5,
             "top_k": 0},
            {"requirement": S_TEMPERATURE, "logits": randn(gen, 1, 5), "temperature": 2.0,
             "top_k": 0},
            {"requirement": S_TOP_K, "logits": randn(gen, 2, 6), "temperature": 1.0,
             "top_k": 2},
            {"requirement": S_GENERATOR, "logits": randn(gen, 4, 9), "temperature": 1.0,
             "top_k": 0},
        ]
        if hidden:
            cases += [
                {"requirement": S_GREEDY, "logits": randn(gen, 5, 11, scale=3.0),
                 "temperature": 0.0, "top_k": 3},
                {"requirement": S_TEMPERATURE, "logits": randn(gen, 3, 4), "temperature": 0.8,
                 "top_k": 0},
                {"requirement": S_TOP_K, "logits": randn(gen, 1, 7), "temperature": 1.2,
                 "top_k": 2},
                {"requirement": S_TOP_K, "logits": randn(gen, 3, 8), "temperature": 0.7,
                 "top_k": 3},
                {"requirement": S_GENERATOR, "logits": randn(gen, 2, 6), "temperature": 1.5,
                 "top_k": 4},
            ]
        return cases

    def run(self, obj, case):
        logits, temperature = case["logits"], case["temperature"]
        top_k = case["top_k"] or None
        with torch.random.fork_rng(devices=[]):
            if case["requirement"] in (S_GREEDY,):
                return {"ids": obj(logits, temperature, top_k)}
            if case["requirement"] == S_GENERATOR:
                draws = [obj(logits, temperature, top_k, torch.Generator().manual_seed(seed))
                         for seed in (3, 3, 4, 4)]
                torch.manual_seed(5)  # the global generator must not decide anything
                again = obj(logits, temperature, top_k, torch.Generator().manual_seed(3))
                same = all(isinstance(d, Tensor) and d.shape == draws[0].shape for d in draws)
                return {"same seed, same draws": bool(
                    same and torch.equal(draws[0], draws[1]) and torch.equal(draws[2], draws[3])
                    and isinstance(again, Tensor) and torch.equal(again, draws[0]))}
            rows = logits.repeat_interleave(DRAWS, dim=0)  # (B * DRAWS, V)
            ids = obj(rows, temperature, top_k, torch.Generator().manual_seed(0))
            once = obj(logits, temperature, top_k, torch.Generator().manual_seed(1))
        shape = (f"shape {tuple(once.shape)}" if isinstance(once, Tensor)
                 else type(once).__name__)
        if not isinstance(ids, Tensor) or ids.shape != (rows.shape[0],):
            return {"frequencies": ids, f"ids for {logits.shape[0]} row(s)": shape}
        counts = F.one_hot(ids.long().clamp(0, logits.shape[-1] - 1), logits.shape[-1])
        return {"frequencies": counts.double().view(logits.shape[0], DRAWS, -1).mean(1),
                f"ids for {logits.shape[0]} row(s)": shape}

    def expected(self, case):
        logits, temperature = case["logits"], case["temperature"]
        top_k = case["top_k"] or None
        if case["requirement"] == S_GREEDY:
            return {"ids": logits.argmax(dim=-1)}
        if case["requirement"] == S_GENERATOR:
            return {"same seed, same draws": True}
        return {"frequencies": sampling_distribution(logits, temperature, top_k),
                f"ids for {logits.shape[0]} row(s)": f"shape ({logits.shape[0]},)"}

    def mistakes(self, case):
        logits, temperature = case["logits"], case["temperature"]
        top_k = case["top_k"] or None
        if case["requirement"] in (S_TEMPERATURE, S_TOP_K):
            found = [("divide the logits by the temperature before the softmax.",
                      {"frequencies": sampling_distribution(logits, 1.0, top_k)}),
                     ("the temperature divides the logits (it does not multiply them).",
                      {"frequencies": sampling_distribution(logits, 1 / temperature, top_k)})]
            if top_k is not None:
                found.append(("keep only the k largest logits of each row before sampling.",
                              {"frequencies": sampling_distribution(logits, temperature, None)}))
            return found
        return []

    @property
    def oracle(self):
        return oracle_sample

    def symptom(self, case, got):
        if case["requirement"] == S_GENERATOR and got.get("same seed, same draws") is False:
            return ("draw with the `generator` argument (torch.multinomial takes one), so that "
                    "the same seed gives the same tokens.")
        ids = got.get("ids")
        rows = case["logits"].shape[0]
        shape = got.get(f"ids for {rows} row(s)")
        if (isinstance(ids, Tensor) and ids.dim() != 1) or (
                isinstance(shape, str) and shape != f"shape ({rows},)"):
            return "return one token id per row: shape (B,), also when B is 1."
        return None


# --- the language model -------------------------------------------------------------------------------

LM_CONFIG = ("vocab_size", "d_model", "num_heads", "num_layers", "d_ff", "dropout", "max_len")


def lm_case(gen: torch.Generator, *, batch: int = 2, length: int = 5, vocab: int = 11,
            d: int = 8, heads: int = 2, layers: int = 2, d_ff: int = 16, dropout: float = 0.0,
            max_len: int = 16) -> dict[str, Any]:
    """A small LanguageModel's configuration and weights (pre-norm, GELU, tied head), and
    token ids."""
    case: dict[str, Any] = {"vocab_size": vocab, "d_model": d, "num_heads": heads,
                            "num_layers": layers, "d_ff": d_ff, "dropout": dropout,
                            "max_len": max_len}
    case["idx"] = torch.randint(0, vocab, (batch, length), generator=gen)
    case["w.embed.embedding.weight"] = randn(gen, vocab, d, scale=d ** -0.5)
    case["w.pos.embedding.weight"] = randn(gen, max_len, d, scale=0.5)
    for i in range(layers):
        prefix = f"layers.layers.{i}."
        case |= (mha_weights(gen, f"{prefix}self_attn", d, True)
                 | linear_weights(gen, f"{prefix}feed_forward.linear1", d, d_ff, True)
                 | linear_weights(gen, f"{prefix}feed_forward.linear2", d_ff, d, True)
                 | norm_weights(gen, f"{prefix}attn_block.norm", d, True)
                 | norm_weights(gen, f"{prefix}ff_block.norm", d, True))
    case |= norm_weights(gen, "layers.norm", d, True)
    return case


def new_model(cls: type, case: dict[str, Any]) -> nn.Module:
    """The student's LanguageModel with the case's weights (its head shares the embedding's
    matrix), in eval mode."""
    with quiet():
        model = cls(**{key: case[key] for key in LM_CONFIG})
    weights = dict(case)
    weights["w.head.weight"] = case["w.embed.embedding.weight"]
    return load(model, weights)


def lm_logits(case: dict[str, Any], idx: Tensor) -> Tensor:
    """The model's logits (B, T, V), from PyTorch's own pre-norm encoder layers."""
    d, w = case["d_model"], {k[2:]: v for k, v in case.items() if k.startswith("w.")}
    cfg = {"d_model": d, "num_heads": case["num_heads"], "d_ff": case["d_ff"],
           "activation": "gelu", "norm_first": True, "bias": True, "eps": 1e-5}
    x = F.embedding(idx, w["embed.embedding.weight"]) * d ** 0.5
    x = x + w["pos.embedding.weight"][: idx.shape[1]]
    causal = nn.Transformer.generate_square_subsequent_mask(idx.shape[1])
    for i in range(case["num_layers"]):
        layer = torch_layer(cfg)
        prefix = f"layers.layers.{i}."
        layer.load_state_dict(torch_layer_state(
            {k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)}))
        with quiet():
            x = layer.eval()(x, src_mask=causal, is_causal=True)
    x = F.layer_norm(x, (d,), w["layers.norm.weight"], w["layers.norm.bias"])
    return (x @ w["embed.embedding.weight"].T).detach()


def oracle_lm_forward(self, idx: Tensor, cache: list | None = None) -> Tensor:
    """LanguageModel.forward from PyTorch's layers, for checking generate on its own. With a
    cache it recomputes the whole text (kept beside the first layer's cache) and grows every
    layer's cache by the new tokens, as the real one does."""
    self.embed(idx)  # what the model is fed shows to hooks, as in the real forward
    case = {key: self.config[key] for key in LM_CONFIG}
    case |= {f"w.{k}": v.detach() for k, v in self.state_dict().items()}
    text = idx
    if cache:
        text = idx if len(cache[0]) == 0 else torch.cat([cache[0].oracle_text, idx], dim=1)
        for layer_cache in cache:
            layer_cache.append(idx.new_zeros(idx.shape[0], 1, idx.shape[1], 1).float(),
                               idx.new_zeros(idx.shape[0], 1, idx.shape[1], 1).float())
        cache[0].oracle_text = text
    logits = lm_logits(case, text)[:, -idx.shape[1]:]
    if self.training and self.config["dropout"] > 0:  # a model left in training mode shows it
        logits = F.dropout(logits, self.config["dropout"])
    return logits


def oracle_sample(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = sampling_distribution(logits, temperature, top_k)
    return torch.multinomial(probs.float(), 1, generator=generator).squeeze(-1)


F_VALUES, F_CACHE, F_DROPOUT = (
    "values: embeddings, positions, causal layers, final norm, tied head",
    "with a cache, new tokens continue at the cached positions",
    "dropout on the embeddings in training, none in eval mode")


@register
class LMForwardChecker(Checker):
    name = "LanguageModel.forward"
    forbidden = ("torch.nn.TransformerEncoderLayer", "torch.nn.TransformerEncoder",
                 "torch.nn.Transformer", "torch._transformer_encoder_layer_fwd")

    def cases(self, gen, hidden):
        cases = [lm_case(gen) | {"requirement": F_VALUES},
                 lm_case(gen, length=6) | {"requirement": F_CACHE, "split": 2},
                 lm_case(gen, dropout=1.0, layers=1) | {"requirement": F_DROPOUT,
                                                        "mode": "train"},
                 lm_case(gen, dropout=0.5, layers=1) | {"requirement": F_DROPOUT,
                                                        "mode": "eval"}]
        if hidden:
            cases += [lm_case(gen, batch=3, length=7, d=12, heads=3, layers=1)
                      | {"requirement": F_VALUES},
                      lm_case(gen, batch=1, length=8, layers=1) | {"requirement": F_CACHE,
                                                                    "split": 5},
                      lm_case(gen, length=4, dropout=1.0) | {"requirement": F_DROPOUT,
                                                             "mode": "train"},
                      lm_case(gen, batch=3, length=6, dropout=0.3) | {"requirement": F_DROPOUT,
                                                                      "mode": "eval"}]
        return cases

    def run(self, obj, case):
        model = new_model(obj, case)
        idx = case["idx"]
        if case["requirement"] == F_DROPOUT:
            return {"logits": model.train(case["mode"] == "train")(idx)}
        if case["requirement"] == F_CACHE:
            cache = model.new_cache()
            first = model(idx[:, : case["split"]], cache)
            second = model(idx[:, case["split"]:], cache)
            if not (isinstance(first, Tensor) and isinstance(second, Tensor)):
                return {"logits": first}
            return {"logits": torch.cat([first, second], dim=1)}
        return {"logits": model(idx)}

    def expected(self, case):
        if case["requirement"] == F_DROPOUT and case["mode"] == "train":
            # Every dropped activation is zero: the embeddings, every sublayer's output, so
            # the stream stays zero and the logits are those of the final norm's bias.
            bias = case["w.layers.norm.bias"].expand(*case["idx"].shape, -1)
            return {"logits": bias @ case["w.embed.embedding.weight"].T}
        return {"logits": lm_logits(case, case["idx"])}

    advice = {
        F_CACHE: "tokens after the cache take the positions that follow the cached ones (the "
                 "offset is the cache's length), and the mask must let them see the cached "
                 "keys: query t may attend to keys 0 .. offset + t.",
        F_DROPOUT: "apply dropout to the sum of token embeddings and positions (in training "
                   "with p = 1 every entry of it is dropped, and so is every sublayer's "
                   "output).",
    }

    @property
    def oracle(self):
        return oracle_lm_forward

    def symptom(self, case, got):
        logits = got.get("logits")
        if isinstance(logits, Tensor) and logits.shape[:2] != case["idx"].shape:
            return "return logits for every position: shape (B, T, V)."
        if case.get("mode") == "eval":
            return ("in eval mode dropout does nothing: the embeddings' dropout must follow "
                    "the model's mode, as a dropout module does.")
        return None


G_VALUES, G_MODE, G_CACHE, G_SAMPLING = (
    "greedy continuation, token by token",
    "runs in eval mode, then restores the mode it was in",
    "with use_cache the prompt once, then only the newest token; without it, or past max_len, "
    "every step re-reads the last max_len tokens",
    "each token drawn by sample_next_token, given the last position's logits, temperature, "
    "top_k and the generator")
GIVEN = "the one generate was given"
LAST_LOGITS = "the model's, at the last position"


def cached_length(cache: Any) -> int:
    """How many positions a cache (one KVCache per layer) holds; 0 for none."""
    try:
        return len(cache[0]) if cache else 0
    except Exception:  # noqa: BLE001  (a cache of the student's own making)
        return 0


def sampler_call(logits: Tensor, temperature: Any, top_k: Any, generator: Any, given: Any,
                 last: Any) -> str:
    """What generate handed its sampler, in words."""
    which = (GIVEN if generator is given else "None" if generator is None
             else "another generator")
    same = (isinstance(last, Tensor) and last.dim() == 3 and isinstance(logits, Tensor)
            and last[:, -1].shape == logits.shape
            and bool(torch.allclose(last[:, -1].float(), logits.float(), atol=1e-6)))
    return (f"temperature={temperature!r}, top_k={top_k!r}, generator: {which}, logits: "
            f"{LAST_LOGITS if same else 'not the model output at the last position, as is'}")


@register
class LMGenerateChecker(Checker):
    name = "LanguageModel.generate"
    uses = ("LanguageModel.forward", "sample_next_token")

    def cases(self, gen, hidden):
        def case(requirement, **kwargs):
            extra = {"mode": kwargs.pop("mode", "eval"), "new": kwargs.pop("new", 6),
                     "temperature": kwargs.pop("temperature", 0.0),
                     "top_k": kwargs.pop("top_k", 0),
                     "use_cache": kwargs.pop("use_cache", True)}
            return lm_case(gen, **kwargs) | {"requirement": requirement} | extra

        cases = [case(G_VALUES, length=3),
                 case(G_MODE, length=2, dropout=0.5, mode="train"),
                 case(G_MODE, length=2, dropout=0.5, mode="eval", new=3),
                 case(G_CACHE, length=4, new=5),
                 case(G_CACHE, length=3, new=4, use_cache=False),
                 case(G_CACHE, length=4, new=5, max_len=6),
                 case(G_SAMPLING, length=2, new=4, temperature=0.7, top_k=3)]
        if hidden:
            cases += [case(G_VALUES, batch=3, length=1, new=9, layers=1),
                      case(G_MODE, length=3, dropout=0.3, layers=1, mode="train"),
                      case(G_MODE, batch=3, length=2, dropout=0.3, mode="eval"),
                      case(G_CACHE, batch=1, length=2, new=8),
                      case(G_CACHE, batch=3, length=2, new=5, layers=1, use_cache=False),
                      case(G_CACHE, length=2, new=7, max_len=5, use_cache=False),
                      case(G_CACHE, batch=1, length=5, new=6, max_len=7, layers=1),
                      case(G_SAMPLING, length=3, new=5, temperature=1.5, top_k=2, layers=1)]
        return cases

    def run(self, obj, case):
        model = new_model(obj, case)
        model.train(case["mode"] == "train")
        max_len, prompt = case["max_len"], case["idx"]
        inputs: list[tuple[int, int, bool]] = []  # (new tokens, positions, cached) per call
        last: list[Any] = [None]
        forward = model.forward

        def watched_forward(idx, cache=None):
            offset = cached_length(cache)
            inputs.append((int(idx.shape[-1]), offset + int(idx.shape[-1]), bool(cache)))
            if offset + idx.shape[-1] > max_len:
                raise ValueError(
                    f"generate gave the model {offset + idx.shape[-1]} positions to read "
                    f"(cached and new), more than its max_len ({max_len}): once the text "
                    "outgrows max_len, the model can only re-read the last max_len tokens.")
            last[0] = forward(idx) if cache is None else forward(idx, cache)
            return last[0]

        given = torch.Generator().manual_seed(0)
        calls: list[str] = []
        draws: list[Any] = []
        namespace = namespace_of(obj) or {}
        sampler = namespace.get("sample_next_token")

        def watched_sampler(logits, temperature=1.0, top_k=None, generator=None):
            calls.append(sampler_call(logits, temperature, top_k, generator, given, last[0]))
            draws.append(sampler(logits, temperature, top_k, generator))
            return draws[-1]

        model.forward = watched_forward
        if sampler is not None:
            namespace["sample_next_token"] = watched_sampler
        try:
            with torch.random.fork_rng(devices=[]):
                out = model.generate(prompt, case["new"], temperature=case["temperature"],
                                     top_k=case["top_k"] or None, generator=given,
                                     use_cache=case["use_cache"])
        finally:
            del model.forward
            if sampler is not None:
                namespace["sample_next_token"] = sampler
        got: dict[str, Any] = {}
        if case["requirement"] == G_SAMPLING:
            kinds = list(dict.fromkeys(calls))
            got["sampler calls"] = (f"{len(calls)}: " + " | ".join(kinds) if calls
                                    else "none (sample_next_token was never called)")
            rows = prompt.shape[0]
            fits = (isinstance(out, Tensor) and out.shape == (rows, prompt.shape[1] + len(draws))
                    and all(isinstance(d, Tensor) and d.shape == (rows,) for d in draws))
            got["tokens"] = ("the prompt, then the sampler's draws" if fits and torch.equal(
                out, torch.cat([prompt, *(d[:, None] for d in draws)], dim=1))
                else "not the prompt followed by the sampler's draws")
            return got
        got["tokens"] = out
        if case["requirement"] == G_MODE:
            got["training afterwards"] = model.training
        if case["requirement"] == G_CACHE:
            if not case["use_cache"]:
                got["calls with a cache"] = sum(cached for _, _, cached in inputs)
            elif prompt.shape[1] + case["new"] - 1 <= max_len:
                got["longest input after the first step"] = max(
                    (n for n, _, _ in inputs[1:]), default=0)
            if prompt.shape[1] + case["new"] - 1 > max_len:
                got["most positions read at once"] = max((p for _, p, _ in inputs), default=0)
        return got

    def expected(self, case):
        idx = case["idx"]
        max_len = case["max_len"]
        if case["requirement"] == G_SAMPLING:
            return {"sampler calls": f"{case['new']}: temperature={case['temperature']!r}, "
                                     f"top_k={case['top_k']!r}, generator: {GIVEN}, logits: "
                                     f"{LAST_LOGITS}",
                    "tokens": "the prompt, then the sampler's draws"}
        for _ in range(case["new"]):
            next_id = lm_logits(case, idx[:, -max_len:])[:, -1].argmax(-1)
            idx = torch.cat([idx, next_id[:, None]], dim=1)
        expected: dict[str, Any] = {"tokens": idx}
        if case["requirement"] == G_MODE:
            expected["training afterwards"] = case["mode"] == "train"
        if case["requirement"] == G_CACHE:
            if not case["use_cache"]:
                expected["calls with a cache"] = 0
            elif case["idx"].shape[1] + case["new"] - 1 <= max_len:
                expected["longest input after the first step"] = 1
            if case["idx"].shape[1] + case["new"] - 1 > max_len:
                expected["most positions read at once"] = max_len
        return expected

    def symptom(self, case, got):
        afterwards = got.get("training afterwards")
        if isinstance(afterwards, bool) and afterwards != (case["mode"] == "train"):
            return (f"the model came in {case['mode']} mode: put it back in the mode it was "
                    "in (remember `self.training`).")
        longest = got.get("longest input after the first step")
        if isinstance(longest, int) and longest > 1:
            return ("with the cache, the model has already seen every earlier token: feed it "
                    "only the token it just produced.")
        if isinstance(got.get("calls with a cache"), int) and got["calls with a cache"] > 0:
            return "with use_cache=False, re-read the text at every step, without a cache."
        most = got.get("most positions read at once")
        if isinstance(most, int) and most < case["max_len"]:
            return (f"past max_len, each step re-reads the last max_len = {case['max_len']} "
                    "tokens: all the model can take, not fewer.")
        calls = got.get("sampler calls")
        if isinstance(calls, str) and case["requirement"] == G_SAMPLING:
            return ("draw every token with sample_next_token, handing it the model's logits "
                    "at the last position unchanged, and the temperature, top_k and generator "
                    "generate was given.")
        if case["requirement"] == G_MODE:
            return "generate without dropout: switch the model to eval mode while sampling."
        return None


# --- lm_loss -------------------------------------------------------------------------------------


class ToyLM(nn.Module):
    """A stand-in model for the loss exercise: logits = embedding(idx) @ out^T. Like the real
    model it reads at most ``max_len`` tokens (the windows' T)."""

    def __init__(self, embed: Tensor, out: Tensor, dtype: torch.dtype = torch.float32,
                 max_len: int = 1 << 30):
        super().__init__()
        self.embed, self.out, self.dtype, self.max_len = embed, out, dtype, max_len

    def forward(self, idx: Tensor) -> Tensor:
        if idx.shape[-1] > self.max_len:
            raise ValueError(f"the model reads at most max_len = {self.max_len} tokens (the "
                             f"windows are T + 1 = {self.max_len + 1} long); it was given "
                             f"{idx.shape[-1]}")
        return (F.embedding(idx, self.embed) @ self.out.T).to(self.dtype)


L_SHIFT, L_MEAN, L_DTYPE = ("inputs idx[:, :-1], targets idx[:, 1:]",
                            "the mean over every predicted position",
                            "a float32 loss from low-precision logits")


@register
class LMLossChecker(Checker):
    name = "lm_loss"

    def cases(self, gen, hidden):
        def case(requirement, batch, length, vocab=9, d=6, dtype="float32"):
            return {"requirement": requirement,
                    "idx": torch.randint(0, vocab, (batch, length + 1), generator=gen),
                    "w.embed": randn(gen, vocab, d), "w.out": randn(gen, vocab, d),
                    "dtype": dtype, "vocab": vocab, "max_len": length}

        cases = [case(L_SHIFT, 2, 5, vocab=7), case(L_MEAN, 3, 1),
                 case(L_DTYPE, 2, 4, vocab=5, dtype="bfloat16")]
        if hidden:
            cases += [case(L_SHIFT, 4, 7, vocab=13), case(L_MEAN, 1, 6, vocab=6),
                      case(L_DTYPE, 3, 3, vocab=11, dtype="bfloat16")]
        return cases

    def run(self, obj, case):
        model = ToyLM(case["w.embed"], case["w.out"], getattr(torch, case["dtype"]),
                      case["max_len"])
        return {"loss": obj(model, case["idx"])}

    def _loss(self, case, logits_of, targets_of):
        model = ToyLM(case["w.embed"], case["w.out"], getattr(torch, case["dtype"]))
        logits = logits_of(model, case["idx"])
        targets = targets_of(case["idx"])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))

    def expected(self, case):
        return {"loss": self._loss(case, lambda m, idx: m(idx[:, :-1]), lambda idx: idx[:, 1:])}

    def mistakes(self, case):
        found = [("the target of position t is the token after it: targets are the inputs "
                  "shifted left by one.",
                  {"loss": self._loss(case, lambda m, idx: m(idx[:, :-1]),
                                      lambda idx: idx[:, :-1])}),
                 ("the model reads every token but the last; the targets are every token but "
                  "the first.", {"loss": self._loss(case, lambda m, idx: m(idx[:, 1:]),
                                                    lambda idx: idx[:, :-1])})]
        return found

    def symptom(self, case, got):
        loss = got.get("loss")
        if isinstance(loss, Tensor) and loss.dim() != 0:
            return "average over every position: the loss is one number (a 0-dim tensor)."
        if isinstance(loss, Tensor) and loss.dtype != torch.float32:
            return ("compute the cross-entropy in float32: low-precision logits make a "
                    "low-precision (and less accurate) loss.")
        return None

"""Checkers for chapter 11, the modern Transformer: RMSNorm, SwiGLU, RoPE, grouped-query
attention, one BPE merge, cross-entropy, AdamW and the cosine schedule.

Every case names the requirement of the exercise it checks (``"requirement"``); the visible
cases cover every requirement and the hidden ones check the same requirements again on other
shapes and seeds. ``forbidden`` lists the PyTorch calls that would do the exercise for you.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .core import Checker, ModifiedInput, distinct, randint, randn, register

# --- RMSNorm --------------------------------------------------------------------------------


def oracle_rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).to(x.dtype)


@register
class RMSNormChecker(Checker):
    name = "rms_norm"
    forbidden = ("torch.nn.functional.rms_norm", "torch.rms_norm", "torch.nn.RMSNorm")
    rtol = 2e-3  # a float16 result may be one unit in the last place (5e-4) away

    def cases(self, gen, hidden):
        def case(requirement, shape, eps=1e-5, dtype=torch.float32, scale=1.0):
            d = shape[-1]
            return {"requirement": requirement, "x": randn(gen, *shape, scale=scale).to(dtype),
                    "weight": randn(gen, d).to(dtype), "eps": eps}

        cases = [
            case("values", (2, 3, 8)),
            case("eps", (4, 6), eps=0.5, scale=0.3),
            case("float16 input: computed in float32, returned as float16", (3, 16),
                 dtype=torch.float16, scale=300.0),
        ]
        if hidden:
            cases += [
                case("values", (2, 2, 5, 32), scale=5.0),
                case("eps", (3, 7), eps=1e-2, scale=0.05),
                case("float16 input: computed in float32, returned as float16", (2, 4, 64),
                     dtype=torch.float16, scale=1000.0),
            ]
        return cases

    def run(self, obj, case):
        return {"output": obj(case["x"].clone(), case["weight"].clone(), eps=case["eps"])}

    def expected(self, case):
        return {"output": oracle_rms_norm(case["x"], case["weight"], case["eps"])}

    def mistakes(self, case):
        x, w, eps = case["x"].double(), case["weight"].double(), case["eps"]
        mean_square = (x * x).mean(-1, keepdim=True)
        found = [
            ("eps keeps the root away from zero: it belongs inside the square root, added to "
             "the mean of the squares, not added after the root.",
             {"output": x / (mean_square.sqrt() + eps) * w}),
            ("this is LayerNorm: RMSNorm does not subtract the mean.",
             {"output": F.layer_norm(x, (x.shape[-1],), w, eps=eps)}),
            ("the mean of the squares, not their sum: the scale must not grow with the "
             "number of features.",
             {"output": x / torch.sqrt((x * x).sum(-1, keepdim=True) + eps) * w}),
            ("the normalised x is then scaled feature by feature by the gain `weight`.",
             {"output": x / torch.sqrt(mean_square + eps)}),
        ]
        if eps > 0.01:  # with a tiny eps, leaving it out is within tolerance
            found.append(("eps keeps the root away from zero: it belongs inside the square "
                          "root, added to the mean of the squares.",
                          {"output": x / mean_square.sqrt() * w}))
        low = case["x"]
        if low.dtype != torch.float32:
            found.append(("x ** 2 overflowed in 16 bits: do the arithmetic in float32 and "
                          "come back to x's dtype only at the end.",
                          {"output": low * torch.rsqrt(low.pow(2).mean(-1, keepdim=True) + eps)
                           * case["weight"]}))
        return distinct(self, case, found)

    def symptom(self, case, got):
        out, x = got.get("output"), case["x"]
        if not isinstance(out, Tensor):
            return None
        if out.dtype != x.dtype:
            return ("the result must keep the input's dtype: float32 is only for the "
                    "arithmetic inside.")
        if x.dtype != torch.float32 and (not bool(torch.isfinite(out).all()) or bool(
                ((out == 0).all(-1) & (x != 0).any(-1)).any())):
            return ("x ** 2 overflowed in 16 bits: do the arithmetic in float32 and come back "
                    "to x's dtype only at the end.")
        return None

    @property
    def oracle(self):
        return oracle_rms_norm


# --- SwiGLU -----------------------------------------------------------------------------------


def oracle_swiglu(x: Tensor, w1: Tensor, w2: Tensor, w3: Tensor) -> Tensor:
    return F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)


@register
class SwiGLUChecker(Checker):
    name = "swiglu"
    forbidden = ()

    def cases(self, gen, hidden):
        def case(requirement, lead, d, d_ff):
            return {"requirement": requirement, "x": randn(gen, *lead, d),
                    "w1": randn(gen, d_ff, d, scale=d**-0.5),
                    "w2": randn(gen, d, d_ff, scale=d_ff**-0.5),
                    "w3": randn(gen, d_ff, d, scale=d**-0.5)}

        cases = [
            case("values", (3,), 4, 4),
            case("weights stored (d_out, d_in), d_ff != d_model", (2, 5), 6, 16),
            case("any leading axes", (2, 3, 4), 8, 12),
        ]
        if hidden:
            cases += [
                case("values", (7,), 16, 16),
                case("weights stored (d_out, d_in), d_ff != d_model", (3, 2), 12, 32),
                case("any leading axes", (1, 2, 3, 2), 4, 10),
            ]
        return cases

    def run(self, obj, case):
        return {"output": obj(case["x"].clone(), case["w1"], case["w2"], case["w3"])}

    def expected(self, case):
        return {"output": oracle_swiglu(case["x"], case["w1"], case["w2"], case["w3"])}

    def mistakes(self, case):
        x, w1, w2, w3 = case["x"], case["w1"], case["w2"], case["w3"]
        found = [
            ("SiLU gates W1 x, not W3 x: the two projections play different parts, one "
             "passes through SiLU and the other is scaled by it.",
             {"output": F.linear(F.silu(F.linear(x, w3)) * F.linear(x, w1), w2)}),
            ("SiLU(z) = z * sigmoid(z), not sigmoid(z).",
             {"output": F.linear(torch.sigmoid(F.linear(x, w1)) * F.linear(x, w3), w2)}),
            ("the gate is SiLU (z * sigmoid(z)), not ReLU.",
             {"output": F.linear(F.relu(F.linear(x, w1)) * F.linear(x, w3), w2)}),
            ("the gated product goes through W2 back to d_model.",
             {"output": F.silu(F.linear(x, w1)) * F.linear(x, w3)}),
        ]
        if w1.shape[0] == w1.shape[1]:
            found.append(("weights are stored (d_out, d_in), as in nn.Linear: x meets each "
                          "matrix along its input axis.",
                          {"output": (F.silu(x @ w1) * (x @ w3)) @ w2}))
        return distinct(self, case, found)

    @property
    def oracle(self):
        return oracle_swiglu


# --- RoPE -------------------------------------------------------------------------------------


def oracle_rope_angles(positions: Tensor, head_dim: int, theta: float = 10000.0) -> Tensor:
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    return (positions.double()[..., None] * inv_freq).float()


def oracle_apply_rope(x: Tensor, positions: Tensor, theta: float = 10000.0) -> Tensor:
    """RoFormer's definition: pair (x_2i, x_2i+1) as a complex number, times e^(i angle)."""
    angles = oracle_rope_angles(positions, x.shape[-1], theta).double()
    z = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    rotated = z * torch.polar(torch.ones_like(angles), angles)
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)


@register
class RopeAnglesChecker(Checker):
    name = "rope_angles"
    forbidden = ()

    def cases(self, gen, hidden):
        cases = [
            {"requirement": "values", "positions": torch.arange(5), "head_dim": 8,
             "theta": 10000.0},
            {"requirement": "positions offset", "positions": torch.arange(3) + 17,
             "head_dim": 4, "theta": 10000.0},
            {"requirement": "theta", "positions": torch.arange(4), "head_dim": 6,
             "theta": 500000.0},
            {"requirement": "batched positions", "positions": torch.tensor([[0, 1, 2],
                                                                            [5, 6, 7]]),
             "head_dim": 4, "theta": 10000.0},
        ]
        if hidden:
            cases += [
                {"requirement": "values", "positions": torch.arange(9), "head_dim": 32,
                 "theta": 10000.0},
                {"requirement": "positions offset",
                 "positions": torch.arange(4) + randint(gen, 50, 500), "head_dim": 16,
                 "theta": 10000.0},
                {"requirement": "theta", "positions": torch.arange(3) + 2, "head_dim": 8,
                 "theta": 10.0},
                {"requirement": "batched positions",
                 "positions": torch.randint(0, 100, (2, 1, 4), generator=gen), "head_dim": 8,
                 "theta": 10000.0},
            ]
        return cases

    def run(self, obj, case):
        return {"angles": obj(case["positions"].clone(), case["head_dim"], theta=case["theta"])}

    def expected(self, case):
        return {"angles": oracle_rope_angles(case["positions"], case["head_dim"], case["theta"])}

    def mistakes(self, case):
        pos, d, theta = case["positions"].double(), case["head_dim"], case["theta"]
        i = torch.arange(d // 2, dtype=torch.float64)
        return distinct(self, case, [
            ("pair i turns at theta ** (-2i/d): the exponent steps by 2/d from one pair to "
             "the next, not by 1/d.", {"angles": pos[..., None] * theta ** (-i / d)}),
            ("the exponent is negative, so that the frequencies decrease from the first pair "
             "to the last.", {"angles": pos[..., None] * theta ** (2 * i / d)}),
        ])

    def symptom(self, case, got):
        angles = got.get("angles")
        if isinstance(angles, Tensor) and angles.shape[-1] == case["head_dim"]:
            return "one angle per pair of features: the last axis has d/2 entries."
        return None

    @property
    def oracle(self):
        return oracle_rope_angles


@register
class ApplyRopeChecker(Checker):
    name = "apply_rope"
    uses = ("rope_angles",)
    forbidden = ()

    def cases(self, gen, hidden):
        cases = [
            {"requirement": "values", "x": randn(gen, 5, 8), "positions": torch.arange(5),
             "theta": 10000.0},
            {"requirement": "positions offset", "x": randn(gen, 2, 3, 4, 8),
             "positions": torch.arange(4) + 9, "theta": 10000.0},
            {"requirement": "theta", "x": randn(gen, 3, 6), "positions": torch.arange(3),
             "theta": 10.0},
            {"requirement": "batched positions", "x": randn(gen, 2, 2, 3, 4),
             "positions": torch.tensor([[[0, 1, 2]], [[7, 8, 9]]]), "theta": 10000.0},
            {"requirement": "float16 input: computed in float32, returned as float16",
             "x": randn(gen, 2, 3, 8).half(), "positions": torch.arange(3) + 40,
             "theta": 10000.0},
        ]
        if hidden:
            cases += [
                {"requirement": "float16 input: computed in float32, returned as float16",
                 "x": randn(gen, 2, 2, 5, 16, scale=4.0).half(),
                 "positions": torch.arange(5) + randint(gen, 100, 1000), "theta": 10000.0},
                {"requirement": "values", "x": randn(gen, 2, 4, 7, 32),
                 "positions": torch.arange(7), "theta": 10000.0},
                {"requirement": "positions offset", "x": randn(gen, 3, 16),
                 "positions": torch.arange(3) + randint(gen, 100, 1000), "theta": 10000.0},
                {"requirement": "theta", "x": randn(gen, 1, 5, 16), "positions": torch.arange(5),
                 "theta": 500000.0},
                {"requirement": "batched positions", "x": randn(gen, 3, 4, 2, 8),
                 "positions": torch.randint(0, 50, (3, 1, 2), generator=gen),
                 "theta": 10000.0},
            ]
        return cases

    def run(self, obj, case):
        return {"output": obj(case["x"].clone(), case["positions"].clone(), theta=case["theta"])}

    def expected(self, case):
        return {"output": oracle_apply_rope(case["x"], case["positions"], case["theta"])}

    def mistakes(self, case):
        x, pos, theta = case["x"], case["positions"], case["theta"]
        # The halves layout rotates (x[i], x[i + d/2]): interleave, rotate, and split back.
        interleaved = torch.stack(x.chunk(2, dim=-1), dim=-1).flatten(-2)
        rotated = oracle_apply_rope(interleaved, pos, theta)
        return distinct(self, case, [
            ("you paired feature i with feature i + d/2 (the 'halves' layout): this "
             "exercise pairs neighbours (x[2i], x[2i+1]), as in the RoFormer paper.",
             {"output": torch.cat([rotated[..., 0::2], rotated[..., 1::2]], dim=-1)}),
            ("the rotation goes the wrong way: a positive angle turns each pair counter-"
             "clockwise, as multiplying x[2i] + i x[2i+1] by e^(i angle) does.",
             {"output": oracle_apply_rope(x, -pos, theta)}),
            ("nothing was rotated: every pair turns by its angle from `rope_angles`.",
             {"output": x.clone()}),
        ])


# --- grouped-query attention ----------------------------------------------------------------------


def oracle_gqa(q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
    t, s = q.shape[-2], k.shape[-2]
    mask = torch.ones(t, s, dtype=torch.bool).tril(diagonal=s - t) if causal else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


@register
class GroupedQueryAttentionChecker(Checker):
    name = "grouped_query_attention"
    forbidden = ("torch.nn.functional.scaled_dot_product_attention",
                 "torch.nn.MultiheadAttention")

    def cases(self, gen, hidden):
        def case(requirement, b, h, g, t, s, dh):
            return {"requirement": requirement, "q": randn(gen, b, h, t, dh),
                    "k": randn(gen, b, g, s, dh), "v": randn(gen, b, g, s, dh)}

        cases = [
            case("multi-head when n_kv_heads == n_heads", 2, 2, 2, 4, 4, 8),
            case("groups of query heads share a key/value head", 1, 4, 2, 3, 3, 4),
            case("one key/value head (multi-query)", 2, 3, 1, 3, 3, 4),
            case("queries after a cache (S > T)", 1, 4, 2, 2, 5, 4),
            {**case("causal=False: every query sees every key", 1, 4, 2, 3, 5, 4),
             "causal": False},
        ]
        if hidden:
            cases += [
                {**case("causal=False: every query sees every key", 2, 6, 2, 4, 4, 8),
                 "causal": False},
                case("multi-head when n_kv_heads == n_heads", 1, 4, 4, 6, 6, 16),
                case("groups of query heads share a key/value head", 2, 8, 2, 5, 5, 8),
                case("one key/value head (multi-query)", 1, 4, 1, 2, 2, 8),
                case("queries after a cache (S > T)", 2, 6, 3, 1, 7, 8),
                case("queries after a cache (S > T)", 1, 8, 4, 3, 9, 4),
            ]
        return cases

    def run(self, obj, case):
        q, k, v = case["q"].clone(), case["k"].clone(), case["v"].clone()
        if "causal" in case:
            return {"output": obj(q, k, v, causal=case["causal"])}
        return {"output": obj(q, k, v)}  # causal by default

    def expected(self, case):
        return {"output": oracle_gqa(case["q"], case["k"], case["v"],
                                     causal=case.get("causal", True))}

    def mistakes(self, case):
        q, k, v = case["q"], case["k"], case["v"]
        h, g = q.shape[1], k.shape[1]
        t, s = q.shape[-2], k.shape[-2]
        causal = case.get("causal", True)
        k_exp, v_exp = k.repeat_interleave(h // g, 1), v.repeat_interleave(h // g, 1)
        found = [
            ("the attention must be causal: a query may not see the keys after its own "
             "position.", {"output": F.scaled_dot_product_attention(q, k_exp, v_exp)}),
            ("divide the scores by sqrt(head width) before the softmax.",
             {"output": oracle_gqa(q * math.sqrt(q.shape[-1]), k, v, causal=causal)}),
        ]
        if not causal:
            found = [("with causal=False nothing is masked: every query sees every key.",
                      {"output": oracle_gqa(q, k, v, causal=True)})] + found[1:]
        if 1 < g < h:
            found.append(("consecutive query heads share a key/value head (with 2 per group, "
                          "heads 0 and 1 use key/value head 0): your copies of the key/value "
                          "heads come in the wrong order.",
                          {"output": oracle_gqa(q, k.repeat(1, h // g, 1, 1),
                                                v.repeat(1, h // g, 1, 1), causal=causal)}))
        if s > t and causal:
            top_left = torch.ones(t, s, dtype=torch.bool).tril()
            found.append(("the T queries are the last T of the S positions: query t sits at "
                          "position S - T + t and may see every key up to there.",
                          {"output": F.scaled_dot_product_attention(q, k_exp, v_exp,
                                                                    attn_mask=top_left)}))
        return distinct(self, case, found)

    @property
    def oracle(self):
        return oracle_gqa


# --- BPE: one merge -------------------------------------------------------------------------------


def oracle_merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i = [], 0
    while i < len(ids):
        if tuple(ids[i:i + 2]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def as_id_tensor(value) -> Tensor | object:
    """A list or tuple of Python ints -> an int64 tensor; anything else as is (it fails)."""
    if isinstance(value, list | tuple) and all(isinstance(i, int) and not isinstance(i, bool)
                                               for i in value):
        return torch.tensor(list(value), dtype=torch.int64)
    return value


@register
class MergePairChecker(Checker):
    name = "merge_pair"
    forbidden = ()

    def cases(self, gen, hidden):
        def case(requirement, ids, pair, new_id):
            return {"requirement": requirement, "ids": torch.tensor(ids, dtype=torch.int64),
                    "first": pair[0], "second": pair[1], "new_id": new_id}

        cases = [
            case("every occurrence", [5, 1, 2, 7, 1, 2], (1, 2), 256),
            case("left to right, no overlaps", [1, 1, 1], (1, 1), 300),
            case("pair at the end and no occurrence", [3, 4, 9, 9], (9, 9), 257),
            case("pair at the end and no occurrence", [3, 4, 3], (4, 4), 258),
            case("order matters: (a, b) is not (b, a)", [2, 1, 2, 1], (1, 2), 259),
            case("every occurrence", [12, 3, 2, 3, 5, 23], (2, 3), 260),
        ]
        if hidden:
            ids = torch.randint(0, 4, (40,), generator=gen).tolist()
            cases += [
                case("every occurrence", ids, (ids[0], ids[1]), 400),
                case("left to right, no overlaps", [7, 7, 7, 7, 7], (7, 7), 260),
                case("pair at the end and no occurrence", [], (1, 2), 261),
                case("pair at the end and no occurrence", [8], (8, 8), 262),
                case("order matters: (a, b) is not (b, a)", [3, 5, 5, 3, 3, 5], (5, 3), 263),
                case("every occurrence", [1, 11, 1, 1, 111, 1, 1], (1, 1), 264),
            ]
        return cases

    def describe(self, case):
        return (f"ids={case['ids'].tolist()}, pair=({case['first']}, {case['second']}), "
                f"new_id={case['new_id']}")

    def run(self, obj, case):
        ids = case["ids"].tolist()
        result = obj(ids, (case["first"], case["second"]), case["new_id"])
        if ids != case["ids"].tolist():
            raise ModifiedInput("your code changed the list `ids` it was given; the caller "
                                "still needs it. Build and return a new list.")
        return {"ids": as_id_tensor(result)}

    def expected(self, case):
        return {"ids": torch.tensor(oracle_merge_pair(case["ids"].tolist(),
                                                      (case["first"], case["second"]),
                                                      case["new_id"]), dtype=torch.int64)}

    def mistakes(self, case):
        ids, pair, new_id = case["ids"].tolist(), (case["first"], case["second"]), case["new_id"]

        def merged(matches, overlapping=False, first_only=False):
            out, i, done = [], 0, False
            while i < len(ids):
                if not done and i + 1 < len(ids) and matches(ids[i], ids[i + 1]):
                    out.append(new_id)
                    done = first_only
                    if overlapping and i + 2 < len(ids) and matches(ids[i + 1], ids[i + 2]):
                        i += 1  # the second id starts another occurrence
                    else:
                        i += 2
                else:
                    out.append(ids[i])
                    i += 1
            return torch.tensor(out, dtype=torch.int64)

        def same(a, b):
            return (a, b) == pair

        found = [
            ("occurrences must not overlap: once two ids are merged, the scan goes on after "
             "both ([1, 1, 1] -> [new, 1]).", {"ids": merged(same, overlapping=True)}),
            ("replace every occurrence of the pair, not only the first.",
             {"ids": merged(same, first_only=True)}),
        ]
        if pair[0] != pair[1]:
            found.append(("the pair is ordered: (a, b) is not (b, a).",
                          {"ids": merged(lambda a, b: {a, b} == set(pair))}))
        return distinct(self, case, found)

    def symptom(self, case, got):
        out = got.get("ids")
        if not isinstance(out, Tensor):
            return "return a list of ints."
        ids = case["ids"].tolist()
        occurs = any((a, b) == (case["first"], case["second"]) for a, b in zip(ids, ids[1:]))
        if occurs and out.numel() == len(ids):
            return "each occurrence of the pair (two ids) becomes one new id."
        return None

    @property
    def oracle(self):
        return oracle_merge_pair


# --- cross-entropy --------------------------------------------------------------------------------


@register
class CrossEntropyChecker(Checker):
    name = "cross_entropy"
    forbidden = ("torch.nn.functional.cross_entropy", "torch.nn.CrossEntropyLoss",
                 "torch.nn.functional.nll_loss", "torch.nn.functional.log_softmax",
                 "torch.log_softmax", "torch.logsumexp")

    def cases(self, gen, hidden):
        def case(requirement, shape, scale=1.0, dtype=torch.float32):
            v = shape[-1]
            logits = randn(gen, *shape, scale=scale)
            targets = torch.randint(0, v, shape[:-1], generator=gen)
            if scale > 100:  # far below its row's max, a target's probability underflows
                rows, flat = logits.reshape(-1, v), targets.view(-1)
                flat[0], flat[1] = rows[0].argmin(), rows[1].argmax()
            return {"requirement": requirement, "logits": logits.to(dtype), "targets": targets}

        cases = [
            case("values", (6, 5)),
            case("any leading axes (batch, time, V)", (2, 4, 7)),
            case("large logits: no overflow", (3, 6), scale=1e4),
            case("float16 logits: computed in float32", (4, 8), scale=3.0,
                 dtype=torch.float16),
        ]
        if hidden:
            cases += [
                case("values", (40, 30), scale=3.0),
                case("any leading axes (batch, time, V)", (2, 3, 2, 11)),
                case("large logits: no overflow", (4, 5, 9), scale=3e4),
                case("float16 logits: computed in float32", (2, 3, 50), scale=8.0,
                     dtype=torch.float16),
            ]
        return cases

    def run(self, obj, case):
        return {"loss": obj(case["logits"].clone(), case["targets"].clone())}

    def expected(self, case):
        logits = case["logits"].float()
        return {"loss": F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                        case["targets"].reshape(-1))}

    def mistakes(self, case):
        logits, targets = case["logits"], case["targets"]
        per = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                              targets.reshape(-1), reduction="none")
        return distinct(self, case, [
            ("return the mean over positions, not the sum.", {"loss": per.sum()}),
            ("the loss is minus the log-probability of the target: check the sign.",
             {"loss": -per.mean()})])

    def symptom(self, case, got):
        loss = got.get("loss")
        if not isinstance(loss, Tensor):
            return None
        if loss.dim() > 0:
            return "return one number: the mean over all positions."
        if loss.dtype != torch.float32:
            return "compute in float32 (and return float32) whatever the logits' dtype."
        if not bool(torch.isfinite(loss).all()):
            return ("the loss is not finite: exp() of a large logit overflowed, or the "
                    "probability of a target far below its row's max underflowed to 0, whose "
                    "log is -inf. Stay in log space: z_y - logsumexp(z), with the row's max "
                    "taken out of every exponent.")
        return None


# --- AdamW ----------------------------------------------------------------------------------------


def oracle_adamw(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """One step of torch.optim.AdamW from the given state; returns (param, m, v)."""
    p = param.clone().requires_grad_()
    opt = torch.optim.AdamW([p], lr=lr, betas=(beta1, beta2), eps=eps,
                            weight_decay=weight_decay)
    opt.state[p] = {"step": torch.tensor(float(step - 1)), "exp_avg": exp_avg.clone(),
                    "exp_avg_sq": exp_avg_sq.clone()}
    p.grad = grad.clone()
    opt.step()
    return p.detach(), opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]


def adam_variant(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
                 correct=True, decoupled=True, t_offset=0, eps_under_root=False):
    """The parameter after one step of a known mistake: no bias correction, weight decay
    added to the gradient (Adam + L2), the step number off by ``t_offset``, or eps added
    under the square root."""
    grad = grad if decoupled else grad + weight_decay * param
    m = beta1 * exp_avg + (1 - beta1) * grad
    v = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    t = step + t_offset
    if correct:
        m, v = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
    shrunk = param * (1 - lr * weight_decay) if decoupled else param
    if eps_under_root:
        return shrunk - lr * m / (v + eps).sqrt()
    return shrunk - lr * m / (v.sqrt() + eps)

@register
class AdamWStepChecker(Checker):
    name = "adamw_step"
    forbidden = ("torch.optim.AdamW", "torch.optim.Adam", "torch.optim.adamw",
                 "torch.optim._functional")

    def cases(self, gen, hidden):
        def case(requirement, shape, step, wd, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8,
                 grad_scale=1.0):
            first = step == 1
            grad = randn(gen, *shape, scale=grad_scale)
            if grad_scale < 1:  # tiny gradients, one of them exactly 0
                grad.view(-1)[0] = 0.0
            return {"requirement": requirement, "param": randn(gen, *shape),
                    "grad": grad,
                    "exp_avg": torch.zeros(shape) if first else randn(gen, *shape, scale=0.1),
                    "exp_avg_sq": torch.zeros(shape) if first
                    else torch.rand(*shape, generator=gen) * 0.01,
                    "step": step, "lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps,
                    "weight_decay": wd}

        cases = [
            case("first step (t = 1) from zero moments", (4,), 1, 0.0),
            case("bias correction at a later step", (3, 2), 5, 0.0, beta1=0.8, beta2=0.95),
            case("decoupled weight decay", (5,), 3, 0.5, lr=0.1),
            case("eps added to the root (tiny and zero gradients)", (6,), 1, 0.0, eps=1e-6,
                 grad_scale=1e-6),
        ]
        if hidden:
            cases += [
                case("eps added to the root (tiny and zero gradients)", (2, 4), 1, 0.01,
                     lr=0.05, eps=1e-8, grad_scale=1e-8),
                case("first step (t = 1) from zero moments", (2, 3), 1, 0.01, lr=0.1),
                case("bias correction at a later step", (6,), 100, 0.0, eps=1e-6),
                case("decoupled weight decay", (3, 3), 2, 0.3, lr=0.2, beta2=0.9),
            ]
        return cases

    def describe(self, case):
        return (f"param {tuple(case['param'].shape)}, step={case['step']}, lr={case['lr']}, "
                f"betas=({case['beta1']}, {case['beta2']}), eps={case['eps']}, "
                f"weight_decay={case['weight_decay']}")

    def run(self, obj, case):
        param, m, v = case["param"].clone(), case["exp_avg"].clone(), case["exp_avg_sq"].clone()
        obj(param, case["grad"].clone(), m, v, case["step"], case["lr"], case["beta1"],
            case["beta2"], case["eps"], case["weight_decay"])
        return {"param": param, "exp_avg": m, "exp_avg_sq": v}

    def expected(self, case):
        param, m, v = oracle_adamw(case["param"], case["grad"], case["exp_avg"],
                                   case["exp_avg_sq"], case["step"], case["lr"], case["beta1"],
                                   case["beta2"], case["eps"], case["weight_decay"])
        return {"param": param, "exp_avg": m, "exp_avg_sq": v}

    def mistakes(self, case):
        args = [case[k] for k in ("param", "grad", "exp_avg", "exp_avg_sq", "step", "lr",
                                  "beta1", "beta2", "eps", "weight_decay")]
        found = [("bias correction: the moments start at zero, so in the first steps they "
                  "are too small; correct each by how much weight its running average has "
                  "gathered after t steps.",
                  {"param": adam_variant(*args, correct=False)})]
        if case["weight_decay"]:
            found.append(("AdamW decouples the weight decay: it shrinks the parameter itself, "
                          "outside the moments, instead of adding weight_decay * param to the "
                          "gradient (that is Adam + L2).",
                          {"param": adam_variant(*args, decoupled=False)}))
        found.append(("`step` is already this step's number t (1 at the first step): the bias "
                      "correction uses it as it is.",
                      {"param": adam_variant(*args, t_offset=1)}))
        if case["step"] > 1:
            found.append(("`step` is already this step's number t (1 at the first step): the "
                          "bias correction uses it as it is.",
                          {"param": adam_variant(*args, t_offset=-1)}))
        if case["weight_decay"]:
            adam = adam_variant(*args[:-1], 0.0)
            found.append(("the decay shrinks the parameter as it was before this step "
                          "(param - lr * weight_decay * param), then the Adam update is "
                          "subtracted: decaying the updated parameter is a different step.",
                          {"param": adam * (1 - case["lr"] * case["weight_decay"])}))
        found.append(("eps is added to the square root of the corrected v, not under the "
                      "root: with tiny gradients the two differ a lot.",
                      {"param": adam_variant(*args, eps_under_root=True)}))
        return distinct(self, case, found)

    def symptom(self, case, got):
        param = got.get("param")
        if isinstance(param, Tensor) and not bool(torch.isfinite(param).all()):
            return ("a zero gradient gives m = v = 0 and the update 0 / 0: eps, added to the "
                    "square root of the corrected v, keeps the denominator above zero.")
        if isinstance(param, Tensor) and torch.equal(param, case["param"]):
            return ("update `param` in place: the model holds that tensor, and a new tensor "
                    "bound to the name `param` is lost when the function returns.")
        m, v = got.get("exp_avg"), got.get("exp_avg_sq")
        if (isinstance(m, Tensor) and torch.equal(m, case["exp_avg"])) or (
                isinstance(v, Tensor) and torch.equal(v, case["exp_avg_sq"])):
            return ("update exp_avg and exp_avg_sq in place: they are the optimiser's state, "
                    "read again at the next step.")
        return None

    @property
    def oracle(self):
        return oracle_adamw


# --- cosine schedule ------------------------------------------------------------------------------


@register
class CosineScheduleChecker(Checker):
    name = "cosine_schedule"
    forbidden = ("torch.optim.lr_scheduler",)
    atol = 1e-12
    rtol = 1e-9

    def cases(self, gen, hidden):
        def case(requirement, its, max_lr, min_lr, warmup, cosine):
            return {"requirement": requirement, "its": torch.tensor(its, dtype=torch.int64),
                    "max_lr": max_lr, "min_lr": min_lr, "warmup": warmup, "cosine": cosine}

        cases = [
            case("linear warm-up from 0", [0, 1, 5, 9], 1.0, 0.1, 10, 100),
            case("cosine decay to min_lr", [10, 30, 55, 99, 100], 1.0, 0.1, 10, 100),
            case("constant min_lr after the cycle", [101, 150, 1000], 1.0, 0.1, 10, 100),
        ]
        if hidden:
            w = randint(gen, 5, 50)
            c = w + randint(gen, 20, 200)
            cases += [
                case("linear warm-up from 0", [0, w // 2, w - 1], 3e-3, 3e-4, w, c),
                case("cosine decay to min_lr", [w, (w + c) // 2, c - 1, c], 3e-3, 3e-4, w, c),
                case("constant min_lr after the cycle", [c + 1, 3 * c], 3e-3, 3e-4, w, c),
            ]
        return cases

    def describe(self, case):
        return (f"max_lr={case['max_lr']}, min_lr={case['min_lr']}, warmup_iters="
                f"{case['warmup']}, cosine_iters={case['cosine']}, it in {case['its'].tolist()}")

    def run(self, obj, case):
        values = [obj(int(it), case["max_lr"], case["min_lr"], case["warmup"], case["cosine"])
                  for it in case["its"]]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return {"lr": torch.tensor([float(v) for v in values], dtype=torch.float64)}
        return {"lr": values}

    def expected(self, case):
        it = case["its"].double()
        hi, lo, w, c = case["max_lr"], case["min_lr"], case["warmup"], case["cosine"]
        progress = ((it - w) / (c - w)).clamp(0, 1)
        cosine = lo + 0.5 * (1 + torch.cos(math.pi * progress)) * (hi - lo)
        lr = torch.where(it < w, hi * it / w, torch.where(it <= c, cosine,
                                                          torch.full_like(it, lo)))
        return {"lr": lr}

    def mistakes(self, case):
        it = case["its"].double()
        hi, lo, w, c = case["max_lr"], case["min_lr"], case["warmup"], case["cosine"]
        right = self.expected(case)["lr"]
        progress = (it - w) / (c - w)
        return distinct(self, case, [
            ("the warm-up starts at 0 for it = 0 and climbs in a straight line, reaching "
             "max_lr at it = warmup_iters.",
             {"lr": torch.where(it < w, hi * (it + 1) / w, right)}),
            ("after cosine_iters the rate stays at min_lr (the cosine must not rise again).",
             {"lr": torch.where(it < w, hi * it / w,
                                lo + 0.5 * (1 + torch.cos(math.pi * progress)) * (hi - lo))}),
            ("decay from max_lr to min_lr: the half cosine spans the gap between the two "
             "rates, not the way down to 0.",
             {"lr": torch.where(it < w, hi * it / w, torch.where(
                 it <= c, 0.5 * (1 + torch.cos(math.pi * progress.clamp(0, 1))) * hi,
                 torch.full_like(it, lo)))}),
        ])

    def symptom(self, case, got):
        if not isinstance(got.get("lr"), Tensor):
            return "return the rate as a plain Python float."
        return None

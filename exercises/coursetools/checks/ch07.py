"""Checkers for chapter 7: the label-smoothed loss, the warm-up schedule, one training step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core import Checker, Missing, randint, randn, register


def oracle_smoothed_loss(logits: Tensor, target: Tensor, smoothing: float = 0.1,
                         ignore_index: int = 0) -> Tensor:
    vocab = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, vocab).float(), target.reshape(-1),
                           ignore_index=ignore_index, label_smoothing=smoothing)


def padded_targets(gen: torch.Generator, shape: tuple[int, ...], vocab: int, pad: int) -> Tensor:
    """Random labels in [0, vocab) that are never ``pad`` except in padded tails, with at least
    one real label per row."""
    target = torch.randint(0, vocab - 1, shape, generator=gen)
    target[target >= pad] += 1
    rows = target.view(-1, shape[-1])
    for row in rows:
        n = randint(gen, 0, shape[-1])
        if n:
            row[-n:] = pad
    return target


LS_VALUES, LS_PAD, LS_EMPTY, LS_DTYPE = (
    "cross-entropy against (1 − ε)·one_hot + ε/V, averaged over the real tokens",
    "padding (ignore_index, any id) counts for nothing",
    "a batch of only padding gives 0, not NaN",
    "a float32 loss for bfloat16 logits")


@register
class LabelSmoothingChecker(Checker):
    name = "label_smoothed_cross_entropy"
    forbidden = ("torch.nn.functional.cross_entropy(label_smoothing)",)

    def cases(self, gen, hidden):
        def only_padding(shape, pad):
            return torch.full(shape, pad, dtype=torch.long)

        cases = [
            {"requirement": LS_VALUES, "logits": randn(gen, 6, 5),
             "target": padded_targets(gen, (6,), 5, 0), "smoothing": 0.1, "ignore_index": 0},
            {"requirement": LS_PAD, "logits": randn(gen, 2, 4, 7, scale=2.0),
             "target": padded_targets(gen, (2, 4), 7, 3), "smoothing": 0.2, "ignore_index": 3},
            {"requirement": LS_EMPTY, "logits": randn(gen, 2, 3, 5),
             "target": only_padding((2, 3), 0), "smoothing": 0.1, "ignore_index": 0},
            {"requirement": LS_DTYPE, "logits": randn(gen, 2, 4, 6).to(torch.bfloat16),
             "target": padded_targets(gen, (2, 4), 6, 0), "smoothing": 0.1, "ignore_index": 0},
        ]
        if hidden:
            cases += [
                {"requirement": LS_VALUES, "logits": randn(gen, 3, 5, 11),
                 "target": padded_targets(gen, (3, 5), 11, 0), "smoothing": 0.0,
                 "ignore_index": 0},
                {"requirement": LS_VALUES, "logits": randn(gen, 40, 30),
                 "target": padded_targets(gen, (40,), 30, 0), "smoothing": 0.3,
                 "ignore_index": 0},
                {"requirement": LS_PAD, "logits": randn(gen, 4, 6, 9, scale=5.0),
                 "target": padded_targets(gen, (4, 6), 9, 3), "smoothing": 0.1,
                 "ignore_index": 3},
                {"requirement": LS_EMPTY, "logits": randn(gen, 7, 4),
                 "target": only_padding((7,), 2), "smoothing": 0.2, "ignore_index": 2},
                {"requirement": LS_DTYPE, "logits": randn(gen, 3, 5, 8, scale=3.0).to(
                    torch.bfloat16), "target": padded_targets(gen, (3, 5), 8, 0),
                 "smoothing": 0.2, "ignore_index": 0},
            ]
        return cases

    def run(self, obj, case):
        loss = obj(case["logits"], case["target"], smoothing=case["smoothing"],
                   ignore_index=case["ignore_index"])
        return {"loss": loss}

    def expected(self, case):
        if bool((case["target"] == case["ignore_index"]).all()):
            return {"loss": torch.tensor(0.0)}
        return {"loss": oracle_smoothed_loss(case["logits"], case["target"], case["smoothing"],
                                             case["ignore_index"])}

    def mistakes(self, case):
        logits, target = case["logits"], case["target"]
        eps, pad = case["smoothing"], case["ignore_index"]
        vocab = logits.shape[-1]
        flat, labels = logits.reshape(-1, vocab).float(), target.reshape(-1)
        log_probs = F.log_softmax(flat, -1)
        keep = labels != pad
        safe = labels.masked_fill(~keep, 0)
        nll = -log_probs.gather(1, safe[:, None]).squeeze(1)
        smooth = -log_probs.mean(-1)
        per_token = (1 - eps) * nll + eps * smooth
        if not bool(keep.any()):
            return []  # read from the answer (symptom)
        found = [
            ("padding positions are averaged in: leave them out, and divide by the number of "
             "real tokens.", {"loss": per_token.mean()}),
            ("divide by the number of real (non-padding) tokens, not by all positions.",
             {"loss": per_token.masked_fill(~keep, 0).sum() / labels.numel()}),
            ("return the mean over real tokens, not the sum.",
             {"loss": per_token.masked_fill(~keep, 0).sum()}),
        ]
        off = (log_probs.sum(-1) + nll) / (vocab - 1)  # mean log-prob of the wrong classes
        other = (1 - eps) * nll - eps * off
        found.append(("this course (like PyTorch) spreads eps over all V classes: eps / V, "
                      "the right class included, not eps / (V - 1).",
                      {"loss": other[keep].mean()}))
        if eps:
            found.append(("the smoothing is missing: the target is (1 - eps) one-hot + eps / V.",
                          {"loss": nll[keep].mean()}))
        if pad != 0:
            keep0 = labels != 0
            per0 = (1 - eps) * -log_probs.gather(1, labels[:, None]).squeeze(1) + eps * smooth
            found.append(("use the ignore_index you are given: padding is not always id 0.",
                          {"loss": per0[keep0].mean()}))
        return found

    def symptom(self, case, got):
        loss = got.get("loss")
        if not isinstance(loss, Tensor):
            return None
        if loss.is_floating_point() and loss.dtype != torch.float32:
            return ("compute the loss in float32 whatever the logits' dtype: bfloat16 keeps "
                    "only 8 bits of mantissa, too few for a sum of log-probabilities.")
        if bool(torch.isnan(loss).any()) and bool((case["target"] == case["ignore_index"]).all()):
            return ("with no real token the count is 0 and 0 / 0 is NaN: count at least one "
                    "token, so that such a batch gives 0.")
        return None

    @property
    def oracle(self):
        return oracle_smoothed_loss


def oracle_noam(step: int, d_model: int, warmup_steps: int = 4000, factor: float = 1.0) -> float:
    if step < 1:
        raise ValueError(f"step is counted from 1, got {step}")
    return factor * d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)


def as_float(value: object, what: str) -> Tensor | Missing:
    """A returned Python float -> a float64 0-dim tensor (to compare); anything else, Missing."""
    if isinstance(value, float):
        return torch.tensor(value, dtype=torch.float64)
    shape = f" of shape {tuple(value.shape)}" if isinstance(value, Tensor) else ""
    return Missing(f"{what} must be a Python float; your function returned "
                   f"{type(value).__name__}{shape} (`.item()` or `float()` turns a 0-dim tensor "
                   "into one)")


NOAM = ("d_model^−0.5 · factor · min(step^−0.5, step · warmup_steps^−1.5), a Python float; "
        "step 0: ValueError")
NOAM_ZERO = "raises ValueError"


@register
class NoamChecker(Checker):
    name = "noam_lr"
    rtol = 1e-9
    atol = 1e-12

    def cases(self, gen, hidden):
        def schedule(d_model, warmup, factor, steps):
            return [{"requirement": NOAM, "step": step, "d_model": d_model,
                     "warmup_steps": warmup, "factor": factor} for step in steps]

        cases = [*schedule(64, 100, 2.0, (1, 50, 99, 100, 101, 400)),
                 *schedule(512, 4000, 1.0, (0, 1, 2000, 4000, 16000))]
        if hidden:
            warmup = randint(gen, 10, 500)
            cases += [*schedule(randint(gen, 16, 256), warmup, 0.5,
                                (0, 1, 2, warmup // 2, warmup - 1, warmup, warmup + 1,
                                 2 * warmup, 10 * warmup)),
                      *schedule(32, 8, 1.5, (1, 7, 8, 9, 80))]
        return cases

    def run(self, obj, case):
        args = (case["step"], case["d_model"])
        kwargs = {"warmup_steps": case["warmup_steps"], "factor": case["factor"]}
        if case["step"] == 0:
            try:
                value = obj(*args, **kwargs)
            except ValueError:
                return {"step 0": NOAM_ZERO}
            except Exception as error:  # noqa: BLE001  (say what happened instead)
                return {"step 0": f"raises {type(error).__name__}"}
            return {"step 0": f"returns {value!r}"}
        return {"lr": as_float(obj(*args, **kwargs), "the learning rate")}

    def expected(self, case):
        if case["step"] == 0:
            return {"step 0": NOAM_ZERO}
        return {"lr": torch.tensor(oracle_noam(**{k: case[k] for k in (
            "step", "d_model", "warmup_steps", "factor")}), dtype=torch.float64)}

    def mistakes(self, case):
        if case["step"] == 0:
            return []
        step, d, w, f = (float(case["step"]), case["d_model"], case["warmup_steps"],
                         case["factor"])
        right = f * d ** -0.5 * min(step ** -0.5, step * w ** -1.5)
        found = [
            ("min, not max: the rate is the smaller of the warm-up line and the decay.",
             f * d ** -0.5 * max(step ** -0.5, step * w ** -1.5)),
            ("scale by d_model ** -0.5.", f * min(step ** -0.5, step * w ** -1.5)),
            ("the warm-up line is step * warmup_steps ** -1.5 (it meets the decay at "
             "step == warmup_steps).", f * d ** -0.5 * min(step ** -0.5, step * w ** -0.5)),
        ]
        # Hints are matched within 1e-4: a mistake that gives nearly the right rate at this
        # step cannot be told from another wrong answer there.
        return [(hint, {"lr": torch.tensor(lr, dtype=torch.float64)}) for hint, lr in found
                if abs(lr - right) > 3e-4]

    def symptom(self, case, got):
        answer = got.get("step 0")
        if isinstance(answer, str) and answer != NOAM_ZERO:
            return ("steps are counted from 1, and step^−0.5 has no value at 0: reject "
                    "step 0 with a ValueError.")
        return None

    @property
    def oracle(self):
        return oracle_noam


class ToyModel(nn.Module):
    """A tiny stand-in for the Transformer: model(src, tgt_in) -> logits (B, T, V)."""

    def __init__(self, vocab: int, width: int, dropout: float = 0.0):
        super().__init__()
        self.src_embed = nn.Embedding(vocab, width)
        self.tgt_embed = nn.Embedding(vocab, width)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, vocab)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        context = self.src_embed(src).mean(dim=1, keepdim=True)
        return self.out(self.dropout(torch.tanh(self.tgt_embed(tgt_in) + context)))


@dataclass
class ToyBatch:
    """The course's ``Batch`` (solutions.data), same fields and ``to``."""

    src: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    num_tokens: int

    def to(self, device) -> ToyBatch:
        return ToyBatch(self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device),
                        self.num_tokens)


def train_step_variant(train_mode: bool = True, zero_grad: bool = True):
    """The right ``train_step`` (the defaults), or one with a known mistake: the model left in
    the mode it came in, or the gradients never zeroed."""

    def train_step(model, batch, optimizer, scheduler=None, smoothing=0.1, grad_clip=1.0,
                   amp=False, forward=None) -> float:
        if train_mode:
            model.train()
        with torch.autocast(batch.src.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = (forward or model)(batch.src, batch.tgt_in)
        loss = oracle_smoothed_loss(logits, batch.tgt_out, smoothing)
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return loss.item()

    return train_step


oracle_train_step = train_step_variant()


def _batch(case: dict, i: int) -> ToyBatch:
    """Step ``i``'s batch of a case (its tensors under ``src{i}``... or ``_src{i}``...)."""
    src, tgt_in, tgt_out = (case[f"{key}{i}"] if f"{key}{i}" in case else case[f"_{key}{i}"]
                            for key in ("src", "tgt_in", "tgt_out"))
    return ToyBatch(src, tgt_in, tgt_out, num_tokens=int((tgt_out != 0).sum()))


def halved(model):
    """What a case's ``forward`` is: a callable other than the model (as a compiled model is),
    here giving half its logits, so that the check sees which one the step called."""
    def forward(src, tgt_in):
        return model(src, tgt_in) / 2
    return forward


TS_VALUES, TS_TRAIN, TS_OPTIONS = (
    "forward, loss, fresh gradients, clipping, optimiser step, then the scheduler; the loss "
    "as a Python float",
    "the model in training mode (dropout on), whatever mode it was in",
    "the logits from `forward` when it is given, under bfloat16 autocast when `amp` is set")
FORWARD_TEXT = "a callable other than the model: half its logits"


@register
class TrainStepChecker(Checker):
    name = "train_step"
    uses = ("label_smoothed_cross_entropy",)

    def cases(self, gen, hidden):
        def case(requirement, vocab, width, batch, length, smoothing, clip, scheduler, lr,
                 dropout=0.0, forward=False, amp=False):
            model = {f"w.{k}": randn(gen, *v.shape, scale=0.5)
                     for k, v in ToyModel(vocab, width).state_dict().items()}
            c = {"requirement": requirement,
                 "model": (f"toy, vocab {vocab}, handed over in eval mode, dropout {dropout}"
                           if dropout else f"toy, vocab {vocab}, in training mode"),
                 "batches": f"two steps, each on {batch} rows of {length} tokens",
                 "smoothing": smoothing, "grad_clip": "None" if clip is None else clip,
                 "scheduler": scheduler, "lr": lr,
                 "forward": FORWARD_TEXT if forward else "None", "amp": amp,
                 **model, "_vocab": vocab, "_width": width, "_dropout": dropout}
            for i in (1, 2):  # two steps: gradients must not pile up from one to the next
                c[f"_src{i}"] = torch.randint(1, vocab, (batch, length), generator=gen)
                target = torch.randint(1, vocab, (batch, length + 1), generator=gen)
                target[0, -2:] = 0
                c[f"_tgt_in{i}"], c[f"_tgt_out{i}"] = target[:, :-1], target[:, 1:]
            return c

        cases = [case(TS_VALUES, 7, 8, 3, 4, 0.1, 1.0, True, 0.01),
                 case(TS_VALUES, 9, 8, 2, 5, 0.2, 0.05, False, 0.02),
                 case(TS_TRAIN, 7, 8, 3, 4, 0.1, 1.0, False, 0.01, dropout=0.5),
                 case(TS_OPTIONS, 7, 8, 3, 4, 0.1, 1.0, True, 0.01, forward=True),
                 case(TS_OPTIONS, 9, 8, 2, 5, 0.0, None, False, 0.02, amp=True)]
        if hidden:
            cases += [case(TS_VALUES, 11, 16, 4, 6, 0.0, 0.05, True, 0.05),
                      case(TS_VALUES, 9, 8, 2, 5, 0.2, None, False, 0.02),
                      case(TS_TRAIN, 9, 16, 2, 5, 0.2, None, True, 0.02, dropout=0.3),
                      case(TS_OPTIONS, 11, 16, 4, 6, 0.2, 0.05, False, 0.05, forward=True),
                      case(TS_OPTIONS, 7, 8, 3, 4, 0.1, 1.0, True, 0.01, forward=True,
                           amp=True)]
        return cases

    def _run(self, step, case):
        model = ToyModel(case["_vocab"], case["_width"], case["_dropout"])
        model.load_state_dict({k[2:]: v for k, v in case.items() if k.startswith("w.")})
        model.train(not case["_dropout"])  # with dropout, hand the model over in eval mode
        optimizer = torch.optim.Adam(model.parameters(), lr=case["lr"], betas=(0.9, 0.98),
                                     eps=1e-9)
        scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 / (i + 1))
                     if case["scheduler"] else None)
        clip = None if case["grad_clip"] == "None" else case["grad_clip"]
        options = {"amp": case["amp"]} if case["amp"] else {}
        if case["forward"] != "None":
            options["forward"] = halved(model)
        dtypes: list[torch.dtype] = []
        hook = model.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1234)  # the same dropout masks for the answer and the oracle
                losses = [step(model, _batch(case, i), optimizer, scheduler,
                               smoothing=case["smoothing"], grad_clip=clip, **options)
                          for i in (1, 2)]
        finally:
            hook.remove()
        floats = [as_float(loss, "the loss") for loss in losses]
        missing = next((f for f in floats if isinstance(f, Missing)), None)
        got = {"losses": missing or torch.stack(floats),
               "out.weight": model.out.weight.detach().clone(),
               "tgt_embed.weight": model.tgt_embed.weight.detach().clone(),
               "lr": torch.tensor(optimizer.param_groups[0]["lr"], dtype=torch.float64)}
        if case["requirement"] == TS_OPTIONS:
            got["logits dtype"] = (", ".join(sorted({str(d) for d in dtypes}))
                                   or "the model was never called")
        return got

    def run(self, obj, case):
        return self._run(obj, case)

    def expected(self, case):
        return self._run(oracle_train_step, case)

    def mistakes(self, case):
        def model_only(model, batch, optimizer, scheduler=None, smoothing=0.1, grad_clip=1.0,
                       amp=False, forward=None):
            return oracle_train_step(model, batch, optimizer, scheduler, smoothing, grad_clip,
                                     amp)

        if case["_dropout"]:
            wrong = self._run(train_step_variant(train_mode=False), case)
            return [("put the model in training mode first: it may come from an evaluation, "
                     "in eval mode, and then its dropout would stay off.",
                     {"out.weight": wrong["out.weight"]})]
        found = [("zero the gradients before backward: otherwise the second step adds up the "
                  "gradients of both batches.",
                  {"out.weight": self._run(train_step_variant(zero_grad=False),
                                           case)["out.weight"]})]
        if case["forward"] != "None":
            found.append(("when `forward` is given, the logits come from it, not from "
                          "`model` (it stands for a compiled copy of the model; the "
                          "parameters are still the model's).",
                          {"losses": self._run(model_only, case)["losses"]}))
        return found

    def symptom(self, case, got):
        lr = got.get("lr")
        if case["scheduler"] and isinstance(lr, Tensor) and float(lr) == case["lr"]:
            return "step the scheduler once per step, after the optimiser."
        dtype = got.get("logits dtype")
        if case["amp"] and isinstance(dtype, str) and dtype != "torch.bfloat16":
            return ("with `amp=True` the forward pass runs under autocast to bfloat16 on the "
                    "batch's device (here the CPU): the logits come out in bfloat16.")
        if not case["amp"] and isinstance(dtype, str) and "bfloat16" in dtype:
            return "autocast only when `amp` is set: with `amp=False` the logits stay float32."
        return None

    @property
    def oracle(self):
        return oracle_train_step

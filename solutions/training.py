"""Training the Transformer: the loss, the learning-rate schedule, a small
training loop with checkpoints that resume exactly, and an exact-match
metric.

The recipe is the paper's (section 5):

* **Label smoothing** (eps = 0.1): the target distribution puts 1 - eps on
  the right token and spreads eps uniformly over the vocabulary, so the
  model is never pushed towards infinite confidence.
* **Adam** with beta1 = 0.9, beta2 = 0.98, eps = 1e-9.
* **Warm-up then inverse square root decay** of the learning rate
  (formula 3)::

      lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)

On top of that the loop does what any modern loop does: gradient clipping,
optional bf16 autocast and ``torch.compile``, a progress bar, and a history
of (step, loss, lr, tokens/s) for learning curves. On a CPU the
:class:`Trainer` picks its thread count by timing, and draws dropout masks
with :func:`~solutions.cpu.fast_cpu_dropout`.

Shapes: ``B`` batch, ``T`` target positions, ``V`` target vocabulary, ``N``
flattened tokens.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cpu import (
    ThreadChoice,
    fast_cpu_dropout,
    fastest_thread_count,
    thread_candidates,
)
from .data import EOS, PAD, Batch, Pair, batches_by_length, pad_sequences
from .decoding import greedy_decode
from .model import Transformer

__all__ = [
    "label_smoothed_cross_entropy",
    "LabelSmoothingLoss",
    "train_step",
    "noam_lr",
    "warmup_inverse_sqrt_schedule",
    "make_optimizer",
    "pick_device",
    "TrainConfig",
    "Trainer",
    "train",
    "exact_match",
    "save_model",
    "load_model",
]


# --------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------


def label_smoothed_cross_entropy(
    logits: Tensor,
    target: Tensor,
    smoothing: float = 0.1,
    ignore_index: int = PAD,
) -> Tensor:
    """Cross-entropy against a label-smoothed target, averaged over the
    non-padding tokens.

    The smoothed target distribution of a token whose label is ``y`` is::

        q = (1 - eps) * one_hot(y) + eps / V      (V = vocabulary size)

    and the loss is -sum_v q_v log p_v. This is exactly PyTorch's
    ``F.cross_entropy(logits, target, ignore_index=...,
    label_smoothing=eps)``.

    Args:
        logits: (N, V) or (B, T, V) unnormalised scores.
        target: (N,) or (B, T) token ids; positions equal to
            ``ignore_index`` count for nothing.
        smoothing: eps in [0, 1); 0 gives the ordinary cross-entropy.
        ignore_index: the id whose positions are skipped (padding).
    Returns:
        scalar: mean loss over the positions that are not ``ignore_index``
        (0 if there are none).
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    vocab = logits.shape[-1]
    logits = logits.reshape(-1, vocab)  # (N, V)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = (
            logits.float()
        )  # float32 even under bf16 autocast (float64 stays float64)
    target = target.reshape(-1)  # (N,)
    keep = target != ignore_index  # (N,) True for real tokens
    log_probs = F.log_softmax(logits, dim=-1)  # (N, V)

    # The smoothed target distribution q, one row per token: eps / V
    # everywhere ...
    q = torch.full_like(log_probs, smoothing / vocab)
    # ... plus 1 - eps on the right label (padding rows get a dummy label 0;
    # they are dropped).
    label = target.masked_fill(~keep, 0)[:, None]  # (N, 1)
    q.scatter_add_(
        1, label, torch.full_like(label, 1.0 - smoothing, dtype=q.dtype)
    )

    per_token = -(q * log_probs).sum(dim=-1)  # (N,)
    # padding contributes nothing, not even grads
    per_token = per_token.masked_fill(~keep, 0.0)
    return per_token.sum() / keep.sum().clamp(min=1)


class LabelSmoothingLoss(nn.Module):
    """Module form of :func:`label_smoothed_cross_entropy`:
    ``loss(logits, target) -> scalar``."""

    def __init__(self, smoothing: float = 0.1, ignore_index: int = PAD):
        super().__init__()
        self.smoothing = smoothing
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return label_smoothed_cross_entropy(
            logits, target, self.smoothing, self.ignore_index
        )

    def extra_repr(self) -> str:
        return (
            f"smoothing={self.smoothing}, ignore_index={self.ignore_index}"
        )


# --------------------------------------------------------------------------
# One training step
# --------------------------------------------------------------------------


def train_step(
    model: nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    smoothing: float = 0.1,
    grad_clip: float | None = 1.0,
    amp: bool = False,
    forward=None,
) -> float:
    """One optimiser step of teacher-forced training on ``batch``.

    Forward ``model(batch.src, batch.tgt_in)`` -> logits (B, T, V),
    label-smoothed loss against ``batch.tgt_out`` (padding ignored), fresh
    gradients, gradient-norm clipping to ``grad_clip`` (None: no clipping),
    optimiser step, then one step of the learning-rate ``scheduler`` if
    there is one. ``amp`` runs the forward pass under bfloat16 autocast;
    ``forward`` is the callable to use instead of ``model`` (a
    ``torch.compile``-d model).

    Returns:
        the loss before the step, as a Python float.
    """
    model.train()
    with torch.autocast(
        batch.src.device.type, dtype=torch.bfloat16, enabled=amp
    ):
        logits = (model if forward is None else forward)(
            batch.src, batch.tgt_in
        )  # (B, T, V)
    loss = label_smoothed_cross_entropy(logits, batch.tgt_out, smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()


# --------------------------------------------------------------------------
# Optimiser and learning-rate schedule
# --------------------------------------------------------------------------


def noam_lr(
    step: int, d_model: int, warmup_steps: int = 4000, factor: float = 1.0
) -> float:
    """The paper's learning rate at optimiser step ``step``
    (counted from 1), formula 3:

        factor * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)

    It grows linearly for ``warmup_steps`` steps, peaks at
    ``step == warmup_steps`` with
    ``factor * (d_model * warmup_steps)^-0.5``, then decays like
    1 / sqrt(step). Returns a Python float; a step below 1 raises
    ``ValueError``.
    """
    if step < 1:
        raise ValueError(f"step is counted from 1, got {step}")
    return (
        factor * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)
    )


class _NoamLambda:
    """``step_index -> noam_lr(step_index + 1, ...)`` as a picklable object
    for LambdaLR."""

    def __init__(self, d_model: int, warmup_steps: int, factor: float):
        self.d_model, self.warmup_steps, self.factor = (
            d_model,
            warmup_steps,
            factor,
        )

    def __call__(self, step_index: int) -> float:
        # LambdaLR counts from 0 (before the first optimizer.step()); the
        # paper counts from 1.
        return noam_lr(
            step_index + 1, self.d_model, self.warmup_steps, self.factor
        )


def warmup_inverse_sqrt_schedule(
    optimizer: torch.optim.Optimizer,
    d_model: int,
    warmup_steps: int = 4000,
    factor: float = 1.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler that sets the lr of optimiser step k (k = 1, 2, ...) to
    ``noam_lr(k, ...)``.

    The optimiser's base lr must be 1.0 (what :func:`make_optimizer` uses):
    LambdaLR multiplies the base lr by the function's value. Call
    ``scheduler.step()`` after each ``optimizer.step()``.
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, _NoamLambda(d_model, warmup_steps, factor)
    )


def make_optimizer(
    model: nn.Module,
    lr: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-9,
    weight_decay: float = 0.0,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """Adam with the paper's betas and eps (AdamW, decoupled decay, when
    ``weight_decay > 0``).

    ``lr`` is 1.0 because the schedule supplies the actual learning rate.
    ``fused=True``: one kernel updates every parameter (instead of a loop of
    small ones), same results.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if weight_decay > 0:
        return torch.optim.AdamW(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            fused=fused,
        )
    return torch.optim.Adam(
        params, lr=lr, betas=betas, eps=eps, fused=fused
    )


def pick_device() -> torch.device:
    """The best device available: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if (
        getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    ):
        return torch.device("mps")
    return torch.device("cpu")


# --------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything the training loop needs besides the model and the data.

    Training length: ``steps`` optimiser steps, or, if ``steps`` is None,
    ``epochs`` passes over the data.
    """

    # optimiser steps in total (None: use ``epochs``)
    steps: int | None = 1000
    epochs: int | None = None  # passes over the data when ``steps`` is None
    batch_size: int = 64  # pairs per batch
    warmup_steps: int = 400  # steps of linear warm-up (the paper: 4000)
    lr_factor: float = 1.0  # multiplies the paper's learning rate
    smoothing: float = 0.1  # label smoothing eps
    # max global gradient norm (None: no clipping)
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0  # > 0 switches Adam to AdamW
    amp: bool = False  # bf16 autocast (CUDA or CPU)
    # torch.compile the model: slow to start, and on a small CPU often slower per
    # step too (scripts/bench_cpu.py --compile measures it)
    compile: bool = False

    # The fast path's other switches (chapter 10):
    # torch.compile(dynamic=...): True, one graph for all lengths
    compile_dynamic: bool | None = None
    # pad lengths up to a multiple of this (few shapes to compile)
    bucket: int | None = None
    # batches of at most this many padded tokens (not batch_size)
    batch_tokens: int | None = None
    # TF32 tensor-core matmuls for float32 (CUDA; no effect on a CPU)
    tf32: bool = False
    # Adam's update in one fused kernel; None: where PyTorch has one (CPU,
    # CUDA), same results as the loop of small kernels up to rounding
    fused_adam: bool | None = None
    # keep SDPA off cuDNN (a new plan for every shape)
    avoid_cudnn_attention: bool = False
    # recompute each layer in backward: less memory
    activation_checkpointing: bool = False
    seed: int = 0  # seeds torch and random; epoch e's batches use seed + e
    # one history entry per this many steps (mean loss over them)
    log_every: int = 10
    checkpoint_path: str | None = None  # where to save checkpoints
    # save every this many steps (None: only when asked)
    checkpoint_every: int | None = None
    device: str | None = None  # None: pick_device()
    # CPU threads; None: time each candidate count, keep the fastest
    threads: int | None = None
    # CPU: dropout masks from 16-bit random numbers (solutions.cpu.
    # fast_cpu_dropout), several times faster than PyTorch's own on CPUs
    # other than Intel's
    fast_dropout: bool = True
    # progress bar; None: only when stderr is a terminal
    progress: bool | None = None


class Trainer:
    """Trains a :class:`~solutions.model.Transformer` on a list of
    (src, tgt) id pairs.

    >>> trainer = Trainer(model, pairs, TrainConfig(steps=500))   # doctest: +SKIP
    >>> history = trainer.train()                                  # doctest: +SKIP
    >>> trainer.save("ckpt.pt")                                    # doctest: +SKIP

    One step: batch -> logits = model(src, tgt_in) (B, T, V) ->
    label-smoothed loss against tgt_out (B, T) -> backward -> clip gradients
    -> optimiser step -> schedule step.

    Epoch ``e`` cuts the data into batches with
    ``batches_by_length(pairs, batch_size, shuffle=True, seed=seed + e)``. A
    checkpoint stores the model, optimiser, schedule, the position (step,
    epoch, batch within the epoch), the history and every random state, so
    that ``Trainer(new_model, pairs, config).resume(path)`` continues
    exactly where training stopped.
    """

    def __init__(
        self,
        model: Transformer,
        pairs: Sequence[Pair],
        config: TrainConfig | None = None,
    ):
        self.config = config = (
            config if config is not None else TrainConfig()
        )
        if config.steps is None and config.epochs is None:
            raise ValueError("set TrainConfig.steps or TrainConfig.epochs")
        if len(pairs) == 0:
            raise ValueError("no training pairs")
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.device = (
            torch.device(config.device) if config.device else pick_device()
        )
        self.model = model.to(self.device)
        self.pairs = pairs
        self._fast_path(config)
        fused = config.fused_adam
        if fused is None:
            fused = self.device.type in ("cpu", "cuda")
        self.optimizer = make_optimizer(
            model, weight_decay=config.weight_decay, fused=fused or None
        )
        self.scheduler = warmup_inverse_sqrt_schedule(
            self.optimizer,
            model.d_model,
            config.warmup_steps,
            config.lr_factor,
        )
        # torch.compile returns a wrapper sharing the parameters;
        # checkpoints save ``model``.
        self.forward = (
            torch.compile(model, dynamic=config.compile_dynamic)
            if config.compile
            else model
        )
        self.step = 0  # optimiser steps taken
        self.epoch = 0  # current pass over the data
        self.batch_index = 0  # next batch of the current epoch
        self.history: list[dict] = []
        self._window = {
            "loss": 0.0,
            "steps": 0,
            "tokens": 0,
            "seconds": 0.0,
        }
        # the current epoch's batches
        self._batches: list[Batch] | None = None
        # set by the first train() on a CPU
        self.thread_choice: ThreadChoice | None = None

    def _fast_path(self, config: TrainConfig) -> None:
        """Apply the switches that act on the model or globally (see
        chapter 10)."""
        from .fastpath import avoid_cudnn_attention, set_tf32
        from .memory import use_activation_checkpointing

        if config.tf32:
            set_tf32(True)
        if config.avoid_cudnn_attention:
            avoid_cudnn_attention(True)
        if config.activation_checkpointing:
            use_activation_checkpointing(self.model)

    @property
    def total_steps(self) -> int:
        """Optimiser steps the whole run takes."""
        if self.config.steps is not None:
            return self.config.steps
        return self.config.epochs * len(self._epoch_batches())

    def _epoch_batches(self) -> list[Batch]:
        if self._batches is None:
            seed = self.config.seed + self.epoch
            if self.config.batch_tokens:
                from .fastpath import batches_by_tokens

                self._batches = batches_by_tokens(
                    self.pairs,
                    self.config.batch_tokens,
                    shuffle=True,
                    seed=seed,
                )
            else:
                self._batches = batches_by_length(
                    self.pairs,
                    self.config.batch_size,
                    shuffle=True,
                    seed=seed,
                )
        return self._batches

    def _next_batch(self) -> Batch:
        batches = self._epoch_batches()
        # epoch finished: start the next one
        if self.batch_index == len(batches):
            self.epoch, self.batch_index, self._batches = (
                self.epoch + 1,
                0,
                None,
            )
            batches = self._epoch_batches()
        batch = batches[self.batch_index]
        self.batch_index += 1
        if self.config.bucket:
            from .fastpath import pad_to_bucket

            batch = pad_to_bucket(batch, self.config.bucket)
        return batch.to(self.device)

    def train_step(self, batch: Batch) -> float:
        """One optimiser step on ``batch``; returns the loss (a float)."""
        with self._dropout():
            loss = train_step(
                self.model,
                batch,
                self.optimizer,
                self.scheduler,
                smoothing=self.config.smoothing,
                grad_clip=self.config.grad_clip,
                amp=self.config.amp,
                forward=self.forward,
            )
        self.step += 1
        return loss

    def _dropout(self):
        """The context for a step's dropout: the fast CPU masks, or
        PyTorch's own."""
        fast = (
            self.config.fast_dropout
            and self.device.type == "cpu"
            and not self.config.compile  # compiled code has its own
        )
        return fast_cpu_dropout() if fast else contextlib.nullcontext()

    def train(self, steps: int | None = None) -> list[dict]:
        """Train ``steps`` more steps (default: until ``total_steps``);
        return the history.

        The history has one entry per ``log_every`` steps: ``{"step", "loss"
        (mean over those steps), "lr" (of the last one), "tokens_per_s"}``.
        """
        cfg = self.config
        end = (
            self.total_steps
            if steps is None
            else min(self.step + steps, self.total_steps)
        )
        show = (
            cfg.progress
            if cfg.progress is not None
            else sys.stderr.isatty()
        )
        bar = _progress_bar(
            total=self.total_steps, initial=self.step, disable=not show
        )
        window = self._window
        if self.step < end and self.device.type == "cpu":
            self._set_threads()
        while self.step < end:
            # the lr this step uses
            lr = self.optimizer.param_groups[0]["lr"]
            start = time.perf_counter()
            batch = self._next_batch()
            loss = self.train_step(batch)
            window["seconds"] += time.perf_counter() - start
            window["loss"] += loss
            window["steps"] += 1
            window["tokens"] += batch.num_tokens
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss} at step {self.step}"
                )
            if window["steps"] == cfg.log_every or self.step == end:
                self.history.append(
                    {
                        "step": self.step,
                        "loss": window["loss"] / window["steps"],
                        "lr": lr,
                        "tokens_per_s": window["tokens"]
                        / max(window["seconds"], 1e-9),
                    }
                )
                window.update(loss=0.0, steps=0, tokens=0, seconds=0.0)
                bar.set_postfix(
                    loss=f"{self.history[-1]['loss']:.3f}", lr=f"{lr:.2e}"
                )
            bar.update(1)
            if (
                cfg.checkpoint_every
                and cfg.checkpoint_path
                and self.step % cfg.checkpoint_every == 0
            ):
                self.save(cfg.checkpoint_path)
        bar.close()
        return self.history

    def _set_threads(self) -> None:
        """Set the CPU thread count: ``config.threads``, or the fastest for
        this model and batch size, measured once per process on a throw-away
        copy of the model (so training itself, its random numbers included,
        is exactly as without the measurement).
        """
        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)
            return
        if self.thread_choice is None:
            candidates = thread_candidates()
            if (
                len(candidates) == 1
            ):  # one thread allowed: nothing to choose
                return
            batch = self._epoch_batches()[0].to(self.device)
            key = (
                tuple(p.shape for p in self.model.parameters()),
                tuple(batch.src.shape),
                tuple(batch.tgt_in.shape),
                self.config.amp,
                tuple(candidates),
            )
            if key not in _THREAD_CHOICES:
                _THREAD_CHOICES[key] = self._time_thread_counts(
                    batch, candidates
                )
                print(f"Trainer: {_THREAD_CHOICES[key]}", flush=True)
            self.thread_choice = _THREAD_CHOICES[key]
        torch.set_num_threads(self.thread_choice.threads)

    def _time_thread_counts(
        self, batch: Batch, candidates: list[int]
    ) -> ThreadChoice:
        model = copy.deepcopy(self.model)
        optimizer = make_optimizer(
            model, lr=0.0
        )  # lr 0: the same work, weights stay finite
        rng = torch.get_rng_state()
        try:

            def step() -> None:
                with self._dropout():
                    train_step(
                        model,
                        batch,
                        optimizer,
                        smoothing=self.config.smoothing,
                        grad_clip=self.config.grad_clip,
                        amp=self.config.amp,
                    )

            return fastest_thread_count(step, candidates)
        finally:
            torch.set_rng_state(rng)

    # --- checkpoints
    # ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue training bit for bit."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "history": self.history,
            "window": dict(self._window),
            "config": dataclasses.asdict(self.config),
            "rng": {
                "torch": torch.get_rng_state(),  # dropout on the CPU
                "cuda": torch.cuda.get_rng_state_all()
                if torch.cuda.is_available()
                else [],
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_index, self._batches = state["batch_index"], None
        self.history = list(state["history"])
        self._window = dict(state["window"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        random.setstate(rng["python"])

    def save(self, path: str | Path) -> None:
        """Write a checkpoint to ``path`` (see :meth:`state_dict`)."""
        save_checkpoint(self, path)

    def resume(self, path: str | Path) -> Trainer:
        """Load a checkpoint written by :meth:`save`; returns ``self``."""
        load_checkpoint(self, path)
        return self


# Thread counts measured so far in this process, by (parameter shapes, batch
# shapes, amp, candidate counts).
_THREAD_CHOICES: dict[tuple, ThreadChoice] = {}


def save_checkpoint(trainer: Trainer, path: str | Path) -> None:
    """Save a :class:`Trainer`'s full state (model, optimiser, schedule,
    position, RNGs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(trainer.state_dict(), path)


def load_checkpoint(trainer: Trainer, path: str | Path) -> None:
    """Restore a :class:`Trainer` from :func:`save_checkpoint`'s file."""
    # weights_only=False: the file holds Python's random state (tuples), and
    # it is our own file.
    state = torch.load(path, map_location="cpu", weights_only=False)
    trainer.load_state_dict(state)


def train(
    model: Transformer,
    pairs: Sequence[Pair],
    config: TrainConfig | None = None,
    **overrides,
) -> list[dict]:
    """Train ``model`` on ``pairs`` in one call; returns the history.

    Keyword arguments override fields of ``config``:
    ``train(model, pairs, steps=300)``.
    """
    config = dataclasses.replace(
        config if config is not None else TrainConfig(), **overrides
    )
    return Trainer(model, pairs, config).train()


def _progress_bar(total: int, initial: int, disable: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=disable,
        desc="training",
        unit="step",
        dynamic_ncols=True,
    )


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------


def _until_eos(ids: list[int]) -> list[int]:
    """Ids up to and including the first EOS (all of them if there is
    none)."""
    return ids[: ids.index(EOS) + 1] if EOS in ids else ids


@torch.no_grad()
def exact_match(
    model: Transformer,
    pairs: Sequence[Pair],
    max_len: int,
    batch_size: int = 500,
    decode: Callable[[Transformer, Tensor, int], Tensor] = greedy_decode,
) -> float:
    """Fraction of pairs whose decoded output is exactly the target.

    ``decode(model, src (B, S), max_len) -> (B, 1 + n)`` ids starting with
    BOS (greedy decoding by default; pass
    ``functools.partial(beam_search, beam_size=4)`` for beam search). Output
    and target are compared up to and including their first EOS: an output
    that never ends is wrong.
    """
    if len(pairs) == 0:
        raise ValueError("no pairs to evaluate")
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        # (B, S)
        src = pad_sequences([s for s, _ in chunk]).to(model.device)
        out = decode(model, src, max_len).tolist()  # B lists of 1 + n ids
        for pred, (_, tgt) in zip(out, chunk):
            correct += _until_eos(pred[1:]) == _until_eos(tgt.tolist()[1:])
    model.train(was_training)
    return correct / len(pairs)


# --------------------------------------------------------------------------
# Small model files for the book
# --------------------------------------------------------------------------


def save_model(
    model: Transformer,
    config: dict,
    path: str | Path,
    half: bool = True,
    **extra,
) -> None:
    """Save a model for inference: the keyword arguments that built it and
    its weights.

    Args:
        config: the keyword arguments of ``Transformer(...)`` that built
            ``model``.
        half: store floating-point weights as float16 (half the size; plenty
            for inference).
        extra: anything else worth keeping (plain Python values), returned
            by :func:`load_model` under ``model.extra``.
    """
    state = {
        k: v.half() if half and v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"config": dict(config), "state_dict": state, "extra": extra}, path
    )


def load_model(
    path: str | Path, device: str | torch.device | None = None
) -> Transformer:
    """Rebuild the model saved by :func:`save_model` (float32, eval mode).

    Whatever :func:`save_model` got as ``extra`` is in the returned model's
    ``.extra`` dict.
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = Transformer(**saved["config"])
    model.load_state_dict(
        {
            k: v.float() if v.is_floating_point() else v
            for k, v in saved["state_dict"].items()
        }
    )
    model.extra = saved.get("extra", {})
    return model.to(device if device is not None else "cpu").eval()

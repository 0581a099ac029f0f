"""What each assignment asks for: which package functions become exercises, in the order the
chapter builds them, and what code is provided. The notebooks are generated from this list and
the package (see :mod:`coursetools.build`); the checkers live in :mod:`coursetools.checks`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Exercise:
    """One graded function or method: ``target`` is 'module:function' or 'module:Class.method';
    ``intro`` says what to build and its rules (the teaching around it is in
    :mod:`coursetools.content`)."""

    target: str
    points: int
    intro: str

    @property
    def name(self) -> str:
        """The checker's name: 'softmax' or 'MultiHeadAttention.forward'."""
        return self.target.partition(":")[2]

    @property
    def owner(self) -> str | None:
        return self.name.split(".")[0] if "." in self.name else None

    @property
    def method(self) -> str | None:
        return self.name.split(".")[1] if "." in self.name else None

    @property
    def owner_target(self) -> str:
        return self.target.rsplit(".", 1)[0] if self.method else self.target

    @property
    def owner_id(self) -> str:
        return re.sub(r"\W", "_", self.owner or self.name)

    @property
    def grade_id(self) -> str:
        return re.sub(r"\W", "_", self.name)

    @property
    def title(self) -> str:
        return f"Exercise: `{self.name}`"


@dataclass(frozen=True)
class Provided:
    """Code the notebook defines for the student (a function, class or constant)."""

    target: str


@dataclass(frozen=True)
class Assignment:
    name: str
    title: str
    chapter: str
    intro: str
    items: list = field(default_factory=list)
    outro: str = ""


#: Where the book is published, for the notebooks' links to its sections. Relative to a
#: notebook in exercises/release/<assignment>/ when the book was built in the repository
#: (`make book`); a course that publishes the book sets its address here and rebuilds.
BOOK_URL = "../../_build/html/"

SETUP_CODE = """\
#@title Setup: run this cell first (imports, and the checks of this notebook)
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

torch.manual_seed(0)
"""

STUDENT_INSTRUCTIONS = """\
**How to work.** You need Python with `torch` and `numpy` (and Jupyter, VS Code or Google
Colab); this notebook needs no other file. Work on a copy of it. Run the cells from the top:
the setup cell first. In each exercise cell, replace `raise NotImplementedError()` with your
code, keeping the function's name and signature; run the test cell below it. A failing test
says what is wrong: the case, expected against received, the largest error, and a hint at the
idea you may have missed. Try things in the scratch cell under each test. When every test
passes, press **Validate** (if your Jupyter has nbgrader), save, and hand in the `.ipynb` file
(or submit it with `nbgrader submit` if your course uses nbgrader's exchange).

**What is graded.** Each exercise is graded on the requirements its text states; the visible
test checks every one of them. When your notebook is graded, hidden cases re-check the same
requirements with other shapes and values, each exercise on its own (an earlier exercise that
it calls is replaced by a correct version, so one mistake costs points in one place only), and
each requirement is worth an equal share of the exercise's points. Calls that an exercise says
not to use cost that exercise its points.

**Mask convention**: a mask is a boolean tensor, **True where attention is allowed**, as in
`torch.nn.functional.scaled_dot_product_attention`.
"""

A = "solutions.attention:"
L = "solutions.layers:"
M = "solutions.model:"
D = "solutions.decoding:"

#: Chapters 1 and 2's code, provided from chapter 4 on.
MULTI_HEAD_ATTENTION = [Provided(A + name) for name in (
    "check_mask", "softmax", "scaled_dot_product_attention", "attention_few_keys",
    "fused_attention", "split_heads",
    "merge_heads", "KVCache", "MultiHeadAttention")]

ASSIGNMENTS: list[Assignment] = [
    Assignment(
        name="ch01_attention",
        title="Chapter 1 exercises: attention",
        chapter="book/ch01_attention",
        intro="Build scaled dot-product attention from its parts: a numerically stable "
              "softmax, the attention itself, and the padding mask.",
        items=[
            Provided(A + "check_mask"),
            Exercise(A + "softmax", 2,
                     "Write a softmax that does not overflow for logits of ±10,000 and gives "
                     "probability 0 to `-inf` logits (a row of only `-inf` gives zeros, not "
                     "NaN). Do not call `torch.softmax`."),
            Exercise(A + "scaled_dot_product_attention", 3,
                     "Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V. Mask the scores with `-inf` "
                     "where the mask is False, use your `softmax`, and return both the output "
                     "and the weights."),
            Exercise(A + "padding_mask", 1,
                     "Build the mask that hides padding keys, shaped to broadcast over heads "
                     "and queries."),
        ],
    ),
    Assignment(
        name="ch02_multihead",
        title="Chapter 2 exercises: multi-head attention",
        chapter="book/ch02_multihead",
        intro="Split the model width into heads, attend in every head at once, and merge "
              "the heads back.",
        items=[
            Provided(A + "check_mask"),
            Provided(A + "softmax"),
            Provided(A + "scaled_dot_product_attention"),
            Provided(A + "attention_few_keys"),
            Provided(A + "fused_attention"),
            Provided(A + "KVCache"),
            Exercise(A + "split_heads", 1,
                     "(B, L, D) → (B, H, L, D/H): head h gets features h·D/H to (h+1)·D/H − 1."),
            Exercise(A + "merge_heads", 1,
                     "The inverse of `split_heads`: (B, H, L, Dh) → (B, L, H·Dh)."),
            Exercise(A + "MultiHeadAttention.forward", 3,
                     "Project, split into heads, attend (explicitly when `keep_weights` is set, "
                     "keeping the weights in `last_weights`; otherwise with `fused_attention`, "
                     "setting `last_weights` to None), merge the heads and project out. In "
                     "training mode the attention drops weights with probability "
                     "`self.dropout`; in eval mode it uses no dropout. Do not use "
                     "`nn.MultiheadAttention`. The key/value cache is used only when "
                     "decoding; the test passes `cache=None`."),
        ],
    ),
    Assignment(
        name="ch03_embeddings",
        title="Chapter 3 exercises: embeddings and positions",
        chapter="book/ch03_embeddings",
        intro="Turn token ids into vectors and tell the model where each token is.",
        items=[
            Provided(L + "check_token_ids"),
            Exercise(L + "TokenEmbedding.forward", 1,
                     "Look the tokens up and scale by √d_model."),
            Exercise(L + "sinusoidal_encoding", 2,
                     "The paper's sinusoidal table: sines in even columns, cosines in odd "
                     "columns, wavelengths from 2π to 10000·2π, as a float32 table, for any "
                     "`d_model`, even or odd (an odd width ends with a sine column)."),
            Exercise(L + "SinusoidalPositionalEncoding.forward", 1,
                     "Add the encodings of positions `offset` to `offset + L − 1`, keeping x's "
                     "dtype (a bfloat16 input gives a bfloat16 output)."),
        ],
    ),
    Assignment(
        name="ch04_encoder",
        title="Chapter 4 exercises: the encoder",
        chapter="book/ch04_encoder",
        intro="Assemble the encoder: feed-forward network, residual connections with layer "
              "norm (post-norm and pre-norm), the encoder layer and the stack.",
        items=[
            *MULTI_HEAD_ATTENTION,
            Provided(L + "ACTIVATIONS"),
            Exercise(L + "PositionwiseFeedForward.forward", 1,
                     "linear → activation → dropout → linear (dropout only in training mode)."),
            Exercise(L + "Sublayer.forward", 2,
                     "A residual connection with layer norm, post-norm (the paper) or pre-norm "
                     "depending on `norm_first`, with dropout on the sublayer's output "
                     "before it is added (in training mode only)."),
            Exercise(L + "EncoderLayer.forward", 2,
                     "Self-attention sublayer, then feed-forward sublayer. Do not use PyTorch's "
                     "`nn.Transformer*` layers."),
            Exercise(L + "Encoder.forward", 1,
                     "Run the layers in order, then the final norm if there is one. Do not use "
                     "PyTorch's `nn.Transformer*` modules."),
        ],
    ),
    Assignment(
        name="ch05_decoder",
        title="Chapter 5 exercises: the decoder",
        chapter="book/ch05_decoder",
        intro="Masks that hide the future, cross-attention over the encoder's output, and "
              "the decoder stack.",
        items=[
            *MULTI_HEAD_ATTENTION,
            Provided(A + "padding_mask"),
            Provided(L + "ACTIVATIONS"),
            Provided(L + "PositionwiseFeedForward"),
            Provided(L + "Sublayer"),
            Exercise(A + "causal_mask", 1,
                     "Position i may attend to positions 0 … i (True on and below the diagonal), "
                     "built on `device` when one is given."),
            Exercise(A + "target_mask", 1,
                     "The decoder's self-attention mask: causal AND hiding padding keys, on the "
                     "tokens' device."),
            Exercise(L + "DecoderLayer.forward", 3,
                     "Masked self-attention, cross-attention over `memory`, feed-forward; each "
                     "in a residual sublayer. Pass `cache` pieces on to the attention layers "
                     "(self-attention appends, cross-attention uses `static_kv=True`). Do not use "
                     "PyTorch's `nn.Transformer*` layers."),
            Exercise(L + "Decoder.forward", 1,
                     "Run the layers (with layer i's cache pair when a cache is given), then the "
                     "final norm if there is one. Do not use PyTorch's `nn.Transformer*` "
                     "modules."),
        ],
    ),
    Assignment(
        name="ch06_model",
        title="Chapter 6 exercises: the full model",
        chapter="book/ch06_model",
        intro="Put the encoder and the decoder together into the Transformer, then turn a model "
              "into output sequences: greedy decoding and the pieces of beam search.",
        items=[
            Provided("solutions.data:PAD"),
            Provided("solutions.data:BOS"),
            Provided("solutions.data:EOS"),
            Provided(A + "check_mask"),
            Provided(A + "softmax"),
            Provided(A + "scaled_dot_product_attention"),
            Provided(A + "attention_few_keys"),
            Provided(A + "fused_attention"),
            Provided(A + "padding_mask"),
            Provided(A + "causal_mask"),
            Provided(A + "target_mask"),
            Provided(A + "split_heads"),
            Provided(A + "merge_heads"),
            Provided(A + "KVCache"),
            Provided(A + "MultiHeadAttention"),
            Provided(L + "ACTIVATIONS"),
            Provided(L + "check_token_ids"),
            Provided(L + "TokenEmbedding"),
            Provided(L + "sinusoidal_encoding"),
            Provided(L + "SinusoidalPositionalEncoding"),
            Provided(L + "LearnedPositionalEncoding"),
            Provided(L + "PositionwiseFeedForward"),
            Provided(L + "Sublayer"),
            Provided(L + "EncoderLayer"),
            Provided(L + "Encoder"),
            Provided(L + "DecoderLayer"),
            Provided(L + "Decoder"),
            Exercise(M + "Transformer.encode", 2,
                     "Source ids → memory: embed (scaled by √d_model), add the positional "
                     "encoding, dropout, then the encoder with the source padding mask "
                     "(`self.src_mask(src)` unless a mask is given). Dropout acts in training mode "
                     "only. Do not use PyTorch's `nn.Transformer*` modules."),
            Exercise(M + "Transformer.decode", 2,
                     "Target ids → logits: embed, add positions starting at `offset` (the "
                     "number of positions already in the cache, 0 without one), dropout, the "
                     "decoder (with `self.tgt_mask(tgt)` when neither a mask nor a cache is "
                     "given), then the output projection `self.generator`. Dropout acts in "
                     "training mode only. Do not use PyTorch's `nn.Transformer*` modules."),
            Exercise(M + "Transformer.forward", 1,
                     "Teacher forcing: encode the source, then decode the whole target with the "
                     "source padding mask as the memory mask. Do not use PyTorch's "
                     "`nn.Transformer*` modules."),
            Provided(D + "_Stepper"),
            Exercise(D + "greedy_decode", 3,
                     "Start every sequence with BOS and append the most likely next token, "
                     "`max_len` times at most (`_Stepper` gives the next token's log-probs, with "
                     "PAD and BOS forbidden). After a sequence's EOS append PAD; stop as soon as "
                     "every sequence has produced EOS. Decode with the model in eval mode (no "
                     "dropout), whatever mode it was given in."),
            Exercise(D + "length_penalty", 1,
                     "GNMT's length penalty ((5 + length) / 6) ** alpha, as a float tensor."),
            Exercise(D + "beam_step", 3,
                     "Score every (hypothesis, token) extension, keep the k best of each "
                     "example (sorted, best first), and say which row and token each came from. "
                     "Finished hypotheses may only be extended by `pad_id`, at no cost."),
        ],
    ),
    Assignment(
        name="ch07_training",
        title="Chapter 7 exercises: training",
        chapter="book/ch07_training",
        intro="The pieces of the training loop: the label-smoothed loss, the paper's warm-up "
              "schedule, and one optimiser step.",
        items=[
            Provided("solutions.data:PAD"),
            Provided("solutions.data:Batch"),
            Exercise("solutions.training:label_smoothed_cross_entropy", 3,
                     "Cross-entropy against the smoothed target (1 − ε)·one_hot + ε/V, averaged "
                     "over the tokens that are not padding. Padding positions count for nothing "
                     "at all: not in the sum, not in the count, and they get no smoothing; a batch of only padding gives 0, not NaN. The loss is "
                     "float32 even for bfloat16 logits. Do not use PyTorch's `label_smoothing`."),
            Exercise("solutions.training:noam_lr", 2,
                     "The paper's formula 3: a linear warm-up for `warmup_steps` steps, then a "
                     "decay like 1/√step, scaled by d_model^−0.5 and `factor`."),
            Exercise("solutions.training:train_step", 3,
                     "One optimiser step, with the model in training mode: forward, "
                     "label-smoothed loss, fresh gradients, "
                     "clip the gradient norm, step the optimiser, then the scheduler. Return "
                     "the loss as a Python float."),
        ],
    ),
    Assignment(
        name="ch08_lm",
        title="Chapter 8 exercises: a decoder-only language model",
        chapter="book/ch08_beyond",
        intro="Turn the encoder stack into a GPT-style language model: sample the next token, "
              "run the causal model with a key/value cache, generate text with it, and train "
              "it with the shifted next-token loss.",
        items=[
            *MULTI_HEAD_ATTENTION,
            Provided(A + "causal_mask"),
            Provided(L + "ACTIVATIONS"),
            Provided(L + "check_token_ids"),
            Provided(L + "TokenEmbedding"),
            Provided(L + "LearnedPositionalEncoding"),
            Provided(L + "PositionwiseFeedForward"),
            Provided(L + "Sublayer"),
            Provided(L + "EncoderLayer"),
            Provided(L + "Encoder"),
            Exercise("solutions.lm:sample_next_token", 3,
                     "Pick one token per row of next-token logits (B, V): `temperature=0` "
                     "means greedy (the largest logit); otherwise divide the logits by the "
                     "temperature, keep only the `top_k` largest of each row when `top_k` is "
                     "given, and draw from the softmax with the `generator` you are given "
                     "(so that a seed reproduces the draws)."),
            Exercise("solutions.lm:LanguageModel.forward", 3,
                     "Token ids (B, T) → logits (B, T, V): embed (the provided `TokenEmbedding` "
                     "scales by √d_model), add learned positions, dropout, the causal layers, "
                     "the final norm, the tied output head. With a `cache` (one `KVCache` per "
                     "layer), `idx` holds only new tokens: they take the positions after the "
                     "cached ones and attend to the cached keys too (run each layer's two "
                     "sublayers yourself, giving its self-attention the layer's cache)."),
            Exercise("solutions.lm:LanguageModel.generate", 3,
                     "Append `max_new_tokens` tokens to each row, each drawn with "
                     "`sample_next_token` from the last position's logits. Sample in eval "
                     "mode and restore the model's mode afterwards. With `use_cache`, run the "
                     "prompt once, then feed only the newest token at each step; when the text "
                     "would outgrow `max_len`, fall back to re-reading the last `max_len` "
                     "tokens."),
            Exercise("solutions.lm:lm_loss", 2,
                     "The next-token cross-entropy of `model` on windows `idx` (B, T + 1): the "
                     "model reads `idx[:, :-1]`, position t is scored on token t + 1, averaged "
                     "over every position, computed in float32 whatever the logits' dtype."),
        ],
    ),
    Assignment(
        name="ch10_scaling",
        title="Chapter 10 exercises: training fast and on many GPUs",
        chapter="book/ch10_scaling",
        intro="Count the arithmetic of a forward pass, fit a big batch through small ones, and "
              "do by hand what DDP does: average the gradients of all processes.",
        items=[
            Provided("solutions.data:PAD"),
            Provided("solutions.data:Batch"),
            Provided("solutions.training:label_smoothed_cross_entropy"),
            Provided("solutions.flops:ModelShape"),
            Provided("solutions.memory:split_batch"),
            Exercise("solutions.flops:forward_flops", 3,
                     "The matrix-product FLOPs of one forward pass of the encoder-decoder "
                     "(2 FLOPs per multiply-add): the projections, the feed-forward layers, "
                     "attention scores and weighted sums, and the output layer, for a padded "
                     "batch of `batch` sources of `src_len` and targets of `tgt_len` tokens. "
                     "Return a Python int; do not use `FlopCounterMode` (the test does)."),
            Exercise("solutions.memory:accumulated_gradients_step", 3,
                     "One optimiser step on `batch` in `micro_batches` forward/backward passes "
                     "(`split_batch`), with the same gradient as the whole batch at once: each "
                     "micro-batch's loss weighted by its share of the batch's real tokens. "
                     "Clip, step the optimiser once, then the scheduler; return the batch's "
                     "loss as a float."),
            Exercise("solutions.distributed:average_gradients", 2,
                     "Replace every parameter's gradient by its mean over the processes, with "
                     "`torch.distributed.all_reduce` (a sum) and `dist.get_world_size()` "
                     "(`import torch.distributed as dist` first, in the function); "
                     "skip parameters without a gradient. Not DDP: by hand. The test runs "
                     "your function in 2, 3 and 4 ranks of a process group whose processes "
                     "are threads."),
        ],
    ),
    Assignment(
        name="ch11_modern",
        title="Chapter 11 exercises: the modern Transformer",
        chapter="book/ch11_modern",
        intro="The pieces that changed since 2017: RMSNorm, the SwiGLU feed-forward, rotary "
              "position embeddings, grouped-query attention, one merge of a BPE tokenizer, "
              "and the training loop's cross-entropy, AdamW step and cosine schedule.",
        items=[
            Exercise("solutions.modern:rms_norm", 2,
                     "x / √(mean(x²) + eps) · weight over the last axis. Compute in float32 and "
                     "return the input's dtype (float16 squares overflow). Do not call "
                     "`F.rms_norm`."),
            Provided("solutions.modern:silu"),
            Exercise("solutions.modern:swiglu", 2,
                     "W2(SiLU(W1 x) ⊙ W3 x), with weights stored (d_out, d_in) as in "
                     "`nn.Linear` (so x @ w1.T), for inputs with any leading axes."),
            Exercise("solutions.modern:rope_angles", 1,
                     "The angle of pair i at position p: p · theta^(−2i/d), i = 0 … d/2 − 1, for "
                     "positions of any shape; float32, shape (..., d/2)."),
            Exercise("solutions.modern:apply_rope", 2,
                     "Rotate each consecutive pair (x[2i], x[2i+1]) by its angle from "
                     "`rope_angles`: out[2i] = x[2i] cos − x[2i+1] sin, out[2i+1] = x[2i] sin + "
                     "x[2i+1] cos. Positions broadcast against x.shape[:-1]."),
            Exercise("solutions.modern:grouped_query_attention", 3,
                     "Causal attention where n_heads / n_kv_heads query heads share each "
                     "key/value head (query head h uses key/value head h // group). The T "
                     "queries are the last T of the S key positions. Do not call "
                     "`F.scaled_dot_product_attention`."),
            Exercise("solutions.bpe:merge_pair", 1,
                     "One BPE merge: replace every occurrence of `pair` in `ids`, left to right "
                     "and without overlaps, by `new_id`."),
            Exercise("solutions.optim:cross_entropy", 2,
                     "Mean cross-entropy from logits (..., V), stable for logits of ±10,000 "
                     "(log-sum-exp with the maximum subtracted). Do not call `F.cross_entropy`, "
                     "`log_softmax` or `logsumexp`."),
            Exercise("solutions.optim:adamw_step", 3,
                     "One AdamW update, in place on `param`, `exp_avg` and `exp_avg_sq`: "
                     "decoupled weight decay, moment updates, bias correction with the step "
                     "number t (from 1)."),
            Exercise("solutions.optim:cosine_schedule", 2,
                     "Linear warm-up from 0 to `max_lr` over `warmup_iters`, cosine decay to "
                     "`min_lr` at `cosine_iters`, then `min_lr`."),
        ],
    ),
]

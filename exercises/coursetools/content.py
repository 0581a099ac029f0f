"""What each exercise's notebook section teaches besides its rules (which are in
:mod:`coursetools.spec`): why it matters, where the book explains it, the shapes, a worked
example, and hints.

``TEACHING`` maps an exercise's name to its :class:`Teaching`. The example's last line is an
expression: the notebook shows the code with the value the reference solution gives,
computed when the notebook is generated, so it can never disagree with the package.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Teaching:
    """``why``: why it matters (a few sentences). ``section``: the anchor (id) of the book's
    section that explains it, on the chapter's page. ``shapes``: inputs and outputs with the
    book's letters. ``example``: a few lines of code ending with an expression. ``hints``:
    unfolded one at a time, from the idea towards the method, never the line to write."""

    why: str = ""
    section: str = ""
    shapes: str = ""
    example: str = ""
    hints: tuple[str, ...] = ()


TEACHING: dict[str, Teaching] = {
    "softmax": Teaching(
        why="Every attention weight in the Transformer comes out of a softmax. Written "
            "naively it overflows for large scores and turns a fully masked row into NaN, "
            "which then spreads through every later layer.",
        section="from-scores-to-weights-a-softmax-that-does-not-overflow",
        shapes="`x`: any shape; the result has the same shape and dtype, and sums to 1 "
               "along `dim` (or is all zeros where `x` is all `-inf`).",
        example="""
x = torch.tensor([[1.0, 2.0, 3.0], [1000.0, 1000.0, float("-inf")]])
softmax(x, dim=-1)
""",
        hints=("softmax(x) equals softmax(x - c) for any constant c along `dim`. Which c "
               "keeps every exponent at or below zero?",
               "A row of only `-inf` has maximum `-inf`, and `-inf - (-inf)` is NaN. Shift "
               "such rows by something finite instead, and do not divide by a zero sum.",
               "`amax`, `torch.where`, `torch.isfinite` and `exp` are all you need."),
    ),
    "scaled_dot_product_attention": Teaching(
        why="This is the one operation every attention layer of the Transformer performs: each "
            "query scores every key by a dot product, the softmax turns the scores into weights, "
            "and the output is the weighted average of the values. Dividing by √d_k keeps the "
            "scores' spread independent of the width, so the softmax does not saturate and its "
            "gradients do not vanish.",
        section="attention-in-pytorch",
        shapes="`q`: (..., Q, Dk), `k`: (..., K, Dk), `v`: (..., K, Dv), where `...` is (B,) "
               "or (B, H); `mask`: boolean, broadcastable to (..., Q, K). Returns the output "
               "(..., Q, Dv) and the weights (..., Q, K).",
        example="""
q, k = torch.randn(1, 2, 4), torch.randn(1, 3, 4)  # B=1, Q=2, K=3, Dk=4
v = torch.eye(3)[None]  # value j is the j-th unit vector, so output row = weight row
mask = torch.tensor([[[True, True, False]]])  # key 2 is hidden from every query
out, weights = scaled_dot_product_attention(q, k, v, mask)
weights.round(decimals=3), weights.sum(dim=-1)
""",
        hints=("Four steps: scores, mask, weights, weighted sum. Which axis of the scores "
               "indexes the keys, the one each query's weights must sum over?",
               "Transpose only the last two axes of `k`: then `@` multiplies (Q, Dk) by "
               "(Dk, K) for any leading batch (and head) axes. Scale by the square root of "
               "the last size of `q`.",
               "Blocked scores become `-inf` (`masked_fill` with the negated mask) before "
               "your `softmax`; the `-inf` then gives weight exactly 0."),
    ),
    "padding_mask": Teaching(
        why="Sentences of a batch have different lengths, so the short ones are filled with a "
            "padding id. Padding is not text: no query may attend to it, or the output would "
            "depend on how much padding the batch happened to need.",
        section="masking",
        shapes="`tokens`: (B, K) integer ids. Returns a boolean (B, 1, 1, K), True for real "
               "tokens; the two 1s broadcast over the heads H and the queries Q.",
        example="""
tokens = torch.tensor([[5, 7, 9], [4, 8, 0]])  # 0 is padding
mask = padding_mask(tokens)
mask.shape, mask[1, 0, 0]
""",
        hints=("A key is allowed exactly when its token is not `pad_id`: one comparison "
               "gives (B, K).",
               "Then add the two axes the attention scores have in between: indexing with "
               "`None` (or `unsqueeze`) inserts an axis of size 1 where you put it."),
    ),
    "split_heads": Teaching(
        why="Multi-head attention runs H attentions side by side, each on its own D/H-wide "
            "slice of the projected features. Splitting is only a reshape and a transpose: no "
            "new parameters, and one batched matrix product then serves every head.",
        section="splitting-and-merging-heads",
        shapes="`x`: (B, L, D) with D divisible by H. Returns (B, H, L, Dh), Dh = D/H.",
        example="""
x = torch.arange(2 * 3 * 8.0).view(2, 3, 8)  # B=2, L=3, D=8
heads = split_heads(x, num_heads=2)
heads.shape, heads[0, 1, 0]  # head 1 at position 0: features 4..7
""",
        hints=("First cut the feature axis into (H, Dh) with `view`: consecutive features "
               "go to the same head.",
               "Attention wants (…, L, Dh) at the end, so the head axis must come before "
               "the length axis: swap those two axes with `transpose`."),
    ),
    "merge_heads": Teaching(
        why="After attention each head holds its own Dh features per position; the output "
            "projection needs them side by side again, as one D-wide vector per position. "
            "Merging in the wrong order mixes positions together without any error message.",
        section="splitting-and-merging-heads",
        shapes="`x`: (B, H, L, Dh). Returns (B, L, H·Dh).",
        example="""
x = torch.randn(2, 3, 8)
heads = split_heads(x, num_heads=4)  # (2, 4, 3, 2)
merge_heads(heads).shape, torch.equal(merge_heads(heads), x)
""",
        hints=("Undo the steps of `split_heads` in reverse order: first put the length axis "
               "back before the head axis.",
               "After a `transpose` the tensor is no longer contiguous, so `view` refuses; "
               "`reshape` (or `.contiguous().view`) joins the last two axes."),
    ),
    "MultiHeadAttention.forward": Teaching(
        why="This layer is the Transformer's only way to move information between positions. "
            "Each head projects the input into its own queries, keys and values, so different "
            "heads can look for different relations (the previous word, the matching bracket); "
            "the output projection mixes what the heads found.",
        section="the-forward-pass",
        shapes="`query`: (B, Q, D); `key`, `value`: (B, K, D); `mask`: broadcastable to "
               "(B, H, Q, K). Returns (B, Q, D); with `keep_weights`, `last_weights` is "
               "(B, H, Q, K).",
        example="""
mha = MultiHeadAttention(d_model=8, num_heads=2)
mha.keep_weights = True
x = torch.randn(1, 3, 8)
mask = torch.tensor([[[[True, True, False]]]])  # the third token is padding
with torch.no_grad():
    out = mha(x, x, x, mask)
# each head's weights for query 0: the padding key gets 0
out.shape, mha.last_weights.shape, mha.last_weights[0, :, 0].round(decimals=2)
""",
        hints=("Project first (`q_proj`, `k_proj`, `v_proj` on the full width D), then split "
               "each into `num_heads` heads. The attention is chapter 1's, with one more "
               "leading axis.",
               "The provided `scaled_dot_product_attention` and `fused_attention` accept "
               "(B, H, L, Dh) directly; pass the dropout probability only in training mode "
               "(`self.training`).",
               "Merge the heads before `out_proj`. With a cache, keys and values come from "
               "`cache.append` (or from the cache itself when `static_kv` and it is full)."),
    ),
    "TokenEmbedding.forward": Teaching(
        why="The embedding is the model's first layer: a learned table with one D-wide row "
            "per token id. The paper multiplies it by √D so that the embeddings, initialised "
            "small, are not drowned by the positional encoding, whose entries lie in [-1, 1].",
        section="token-embeddings-a-lookup-table",
        shapes="`tokens`: (B, L) integer ids in [0, V). Returns (B, L, D).",
        example="""
emb = TokenEmbedding(vocab_size=10, d_model=16)
out = emb(torch.tensor([[1, 2, 3]]))
scale = (out[0, 0].norm() / emb.weight[1].norm()).item()
# token 1's row of the table, scaled by sqrt(16) = 4
out.shape, scale
""",
        hints=("`self.embedding` (an `nn.Embedding`) already does the lookup: calling it on "
               "the ids gives (B, L, D).",
               "Check the ids first with the provided `check_token_ids`, and multiply by the "
               "square root of `self.d_model`."),
    ),
    "sinusoidal_encoding": Teaching(
        why="Attention treats its input as a set: shuffle the tokens and the outputs shuffle "
            "the same way. The sinusoidal table gives each position a distinct fingerprint, "
            "and because sin and cos of a shifted angle are a rotation of the unshifted ones, "
            "a fixed offset between positions is a linear map the model can learn.",
        section="sinusoidal-positional-encodings",
        shapes="`max_len` L and `d_model` D are integers. Returns a float32 (L, D): row `pos` "
               "is the encoding of position `pos`.",
        example="""
pe = sinusoidal_encoding(max_len=50, d_model=8)
# position 0 is sin 0 = 0, cos 0 = 1; along a row the frequency falls
pe.shape, pe[0], pe[1].round(decimals=3)
""",
        hints=("Columns 2i and 2i + 1 share one frequency, 1 / 10000^(2i/D). Build the "
               "angles as an outer product: positions (L, 1) times frequencies (D/2,).",
               "Write the sines into the even columns and the cosines into the odd ones "
               "(slices `0::2` and `1::2`). `exp` of a multiple of `log(10000)` avoids a "
               "large power."),
    ),
    "SinusoidalPositionalEncoding.forward": Teaching(
        why="The encoding is added, not concatenated, to the token embeddings, so the width "
            "stays D. The `offset` matters when decoding one token at a time with a cache: the "
            "new token is at position `offset`, not at position 0.",
        section="sinusoidal-positional-encodings",
        shapes="`x`: (B, L, D); `offset`: an int. Returns (B, L, D) = `x` plus rows "
               "`offset` … `offset + L − 1` of the table.",
        example="""
pos = SinusoidalPositionalEncoding(d_model=8, max_len=50)
out = pos(torch.zeros(1, 3, 8), offset=2)
out.shape, torch.equal(out[0], pos.pe[2:5])
""",
        hints=("The table is already computed in the buffer `self.pe` (max_len, D): slice "
               "the rows you need; broadcasting adds them to every example of the batch.",
               "Refuse positions past `self.max_len` with a `ValueError`, and give the "
               "table the dtype of `x` before adding."),
    ),
    "PositionwiseFeedForward.forward": Teaching(
        why="Attention mixes information across positions; the feed-forward network then "
            "processes each position on its own, through a wider hidden layer (4·D in the "
            "paper). It holds about two thirds of an encoder layer's parameters.",
        section="the-position-wise-feed-forward-network",
        shapes="`x`: (B, L, D). Returns (B, L, D), through a hidden width d_ff.",
        example="""
ffn = PositionwiseFeedForward(d_model=8, d_ff=32)
x = torch.randn(2, 5, 8)
out = ffn(x)
alone = ffn(x[1, 3])  # position 3 of example 1 on its own
same = torch.allclose(alone, out[1, 3], atol=1e-6)
# the same vector: the network never mixes positions
out.shape, same
""",
        hints=("`nn.Linear` acts on the last axis only, so the batch and length axes need "
               "no reshaping.",
               "The activation is looked up by name in the provided `ACTIVATIONS` "
               "(`self.activation`); dropout goes on the hidden layer, after the "
               "activation."),
    ),
    "Sublayer.forward": Teaching(
        why="Every attention and feed-forward block of the Transformer sits inside a residual "
            "connection with layer norm. The paper normalises after the addition (post-norm); "
            "GPT-2 and later normalise the block's input instead (pre-norm), which keeps an "
            "identity path through the whole stack and trains deep models more stably.",
        section="post-norm-and-pre-norm-the-sublayer-wrapper",
        shapes="`x`: (B, L, D); `fn`: a function from (B, L, D) to (B, L, D). Returns "
               "(B, L, D).",
        example="""
x = torch.randn(1, 4, 8) * 3 + 1
post = Sublayer(8, dropout=0.0, norm_first=False)
pre = Sublayer(8, dropout=0.0, norm_first=True)
nothing = torch.zeros_like  # a block that adds nothing
with torch.no_grad():
    spread = post(x, nothing).std(dim=-1, correction=0).round(decimals=3)
    untouched = torch.equal(pre(x, nothing), x)
# post-norm normalises every position; pre-norm passes x through unchanged
spread, untouched
""",
        hints=("Write both formulas from the class docstring; `self.norm_first` chooses "
               "between them.",
               "In both, dropout acts on `fn`'s output, before it is added to `x`. The "
               "difference is where `self.norm` goes: on the input of `fn`, or on the sum."),
    ),
    "EncoderLayer.forward": Teaching(
        why="One encoder layer is the paper's repeated unit: self-attention lets every source "
            "position gather information from the others, the feed-forward network then "
            "transforms each position. Six of them stacked make the encoder.",
        section="the-encoder-layer-and-the-stack",
        shapes="`x`: (B, S, D); `mask`: broadcastable to (B, H, S, S), usually the padding "
               "mask (B, 1, 1, S). Returns (B, S, D).",
        example="""
from solutions.attention import padding_mask
layer = EncoderLayer(d_model=8, num_heads=2, d_ff=16, dropout=0.0)
mask = padding_mask(torch.tensor([[1, 2, 3, 4], [1, 2, 0, 0]]))
x = torch.randn(2, 4, 8)
out = layer(x, mask)
x2 = x.clone()
x2[1, 3] = 100.0  # change a padding position of example 1
same = torch.allclose(layer(x2, mask)[1, :2], out[1, :2])
# the real positions of example 1 do not see it
out.shape, same
""",
        hints=("`self.attn_block` and `self.ff_block` are `Sublayer`s: call each with `x` "
               "and the function it wraps.",
               "Self-attention means query, key and value are all the sublayer's input; a "
               "`lambda` of one argument can pass it three times, with the mask."),
    ),
    "Encoder.forward": Teaching(
        why="The encoder is N identical layers applied in turn, each refining the previous "
            "one's representation of the source. A pre-norm stack needs a final layer norm, "
            "because otherwise its output is never normalised.",
        section="the-encoder-layer-and-the-stack",
        shapes="`x`: (B, S, D); `mask`: broadcastable to (B, H, S, S). Returns (B, S, D).",
        example="""
layer = EncoderLayer(d_model=8, num_heads=2, d_ff=16, dropout=0.0, norm_first=True)
encoder = Encoder(layer, num_layers=3, final_norm=True)
with torch.no_grad():
    out = encoder(torch.randn(2, 4, 8))
# the final norm leaves every position with mean 0 and spread 1
len(encoder.layers), out.shape, out.std(dim=-1, correction=0).mean().round(decimals=3)
""",
        hints=("Every layer gets the same mask; each gets the previous layer's output.",
               "`self.norm` is `None` when there is no final norm."),
    ),
    "causal_mask": Teaching(
        why="The decoder is trained on whole target sentences at once (teacher forcing), but "
            "position i must predict token i + 1 without seeing it. The causal mask hides "
            "every later position, so the parallel training computes exactly what one-by-one "
            "generation will.",
        section="the-causal-mask",
        shapes="`length` T is an integer. Returns a boolean (T, T): row i (query) is True in "
               "columns 0 … i (keys).",
        example="""
causal_mask(4).int()
""",
        hints=("Query i may see key j exactly when j ≤ i: the lower triangle, diagonal "
               "included.",
               "`torch.tril` keeps the lower triangle of a matrix; start from a boolean "
               "matrix of ones on the requested `device`."),
    ),
    "target_mask": Teaching(
        why="The decoder's self-attention needs both rules at once: no looking ahead, and no "
            "attending to padding at the end of shorter targets. Broadcasting combines the two "
            "masks into one per example.",
        section="causal-and-padding-together-target-mask",
        shapes="`tokens`: (B, T) ids. Returns a boolean (B, 1, T, T): query i may attend to "
               "key j when j ≤ i and token j is not padding.",
        example="""
tokens = torch.tensor([[7, 8, 9, 0]])  # the last token is padding
target_mask(tokens).shape, target_mask(tokens)[0, 0].int()
""",
        hints=("You already have both pieces: `padding_mask` (B, 1, 1, T) and "
               "`causal_mask` (T, T).",
               "Broadcasting lines the shapes up from the right: a logical AND of the two "
               "gives (B, 1, T, T). Build the causal part on the tokens' device."),
    ),
    "DecoderLayer.forward": Teaching(
        why="The decoder layer adds a middle sublayer to the encoder's two: cross-attention, "
            "whose queries come from the target and whose keys and values come from the "
            "encoder's output. This is where the translation looks at the source sentence.",
        section="the-decoder-layer-and-the-stack",
        shapes="`x`: (B, T, D); `memory`: (B, S, D); `self_mask`: broadcastable to "
               "(B, H, T, T); `memory_mask`: broadcastable to (B, H, T, S). Returns (B, T, D).",
        example="""
from solutions.attention import causal_mask
layer = DecoderLayer(d_model=8, num_heads=2, d_ff=16, dropout=0.0)
x, memory = torch.randn(1, 5, 8), torch.randn(1, 3, 8)
out = layer(x, memory, self_mask=causal_mask(5))
x2 = x.clone()
x2[0, 4] = 100.0  # change the last target position
same = torch.allclose(layer(x2, memory, self_mask=causal_mask(5))[0, :4], out[0, :4])
# the earlier positions do not move: the future cannot leak
out.shape, same
""",
        hints=("Three `Sublayer` calls in order: `self_attn_block`, `cross_attn_block`, "
               "`ff_block`.",
               "In cross-attention the query is the sublayer's input, while key and value "
               "are both `memory`; its mask is `memory_mask`.",
               "`cache` is either None or a pair (self-attention cache, cross-attention "
               "cache): unpack it into two, each possibly None."),
    ),
    "Decoder.forward": Teaching(
        why="The decoder stack runs its layers in order, each attending to the same encoder "
            "memory. During generation each layer keeps its own key/value cache, so that a "
            "new token costs one position's work instead of re-running the whole prefix.",
        section="the-decoder-layer-and-the-stack",
        shapes="`x`: (B, T, D); `memory`: (B, S, D); masks as in `DecoderLayer`; `cache`: "
               "None or one (self, cross) pair of `KVCache` per layer. Returns (B, T, D).",
        example="""
from solutions.attention import causal_mask
decoder = Decoder(DecoderLayer(d_model=8, num_heads=2, d_ff=16, dropout=0.0), num_layers=2)
x, memory = torch.randn(1, 4, 8), torch.randn(1, 3, 8)
full = decoder(x, memory, self_mask=causal_mask(4))
cache = [(KVCache(), KVCache()) for _ in decoder.layers]
one_at_a_time = [decoder(x[:, t : t + 1], memory, cache=cache) for t in range(4)]
same = torch.allclose(torch.cat(one_at_a_time, dim=1), full, atol=1e-6)
# one position at a time with the cache gives what the whole sequence gives
full.shape, same
""",
        hints=("Layer i receives `cache[i]` when there is a cache and `None` when there is "
               "not; `enumerate` gives you i.",
               "After the loop, apply `self.norm` if it is not `None`."),
    ),
    "Transformer.encode": Teaching(
        why="The encoder half of the model turns source ids into the memory: one D-wide "
            "vector per source position, computed once per sentence and read by every "
            "decoder layer's cross-attention at every decoding step.",
        section="assembling-the-transformer",
        shapes="`src`: (B, S) ids; `src_mask`: broadcastable to (B, H, S, S), by default "
               "(B, 1, 1, S). Returns the memory (B, S, D).",
        example="""
model = Transformer(20, 20, d_model=16, num_heads=2, num_encoder_layers=2,
                    num_decoder_layers=2, d_ff=32, dropout=0.0)
src = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])  # 0 is padding
model.encode(src).shape, model.src_mask(src)[:, 0, 0]
""",
        hints=("Follow figure 1 of the paper from the bottom: `self.src_embed`, then "
               "`self.src_pos`, then `self.embed_dropout`.",
               "Build the default mask with `self.src_mask(src)` only when none is given, "
               "and pass it to `self.encoder`."),
    ),
    "Transformer.decode": Teaching(
        why="The decoder half turns target ids and the memory into one score per vocabulary "
            "token at every target position. With a cache it is called on the newest token "
            "only, which must then get its true position, not position 0.",
        section="assembling-the-transformer",
        shapes="`tgt`: (B, T) ids; `memory`: (B, S, D); `memory_mask`: broadcastable to "
               "(B, H, T, S); `cache`: None or one pair of `KVCache` per decoder layer. "
               "Returns logits (B, T, V).",
        example="""
model = Transformer(20, 20, d_model=16, num_heads=2, num_encoder_layers=2,
                    num_decoder_layers=2, d_ff=32, dropout=0.0)
memory = model.encode(torch.tensor([[5, 6, 7]]))
tgt = torch.tensor([[1, 9, 4]])
logits = model.decode(tgt, memory)
cache = model.new_cache()
steps = [model.decode(tgt[:, t : t + 1], memory, cache=cache) for t in range(3)]
same = torch.allclose(steps[-1][0, -1], logits[0, -1], atol=1e-5)
# the third token fed alone (at offset 2) gets the logits it gets in the whole sequence
logits.shape, len(cache[0][0]), same
""",
        hints=("The offset is the number of positions the cache already holds: the length "
               "of the first layer's self-attention cache (0 without a cache).",
               "Without a cache and without a given mask, use `self.tgt_mask(tgt)`. With a "
               "cache no causal mask is needed: the new token may see everything before it.",
               "Embed, add positions from the offset, dropout, `self.decoder`, then "
               "`self.generator`."),
    ),
    "Transformer.forward": Teaching(
        why="Training reads the whole target at once (teacher forcing): the decoder gets the "
            "true previous tokens at every position, and the causal mask keeps each position "
            "from seeing the one it must predict. One forward pass trains all T positions.",
        section="teacher-forcing-forward-src-tgt",
        shapes="`src`: (B, S) ids; `tgt`: (B, T) decoder input ids. Returns logits (B, T, V).",
        example="""
model = Transformer(20, 20, d_model=16, num_heads=2, num_encoder_layers=2,
                    num_decoder_layers=2, d_ff=32, dropout=0.0)
src = torch.tensor([[5, 6, 7, 0]])
tgt_in = torch.tensor([[1, 9, 4]])  # BOS, then the target shifted right
logits = model(src, tgt_in)
# one prediction per target position (untrained, so arbitrary)
logits.shape, logits[0].argmax(dim=-1)
""",
        hints=("Compute the source padding mask once: the encoder needs it, and so does the "
               "decoder's cross-attention (as `memory_mask`).",
               "`encode`, then `decode`; the target mask is built inside `decode`."),
    ),
    "greedy_decode": Teaching(
        why="At inference there is no target to read: the model must feed its own outputs "
            "back in, one token at a time. Greedy decoding takes the most likely token at "
            "each step; it is the simplest decoder and the baseline beam search improves on.",
        section="greedy-decoding",
        shapes="`src`: (B, S) ids. Returns (B, 1 + n) ids, n ≤ `max_len`: BOS, the tokens, "
               "then padding after each sequence's EOS.",
        example="""
model = Transformer(20, 20, d_model=16, num_heads=2, num_encoder_layers=1,
                    num_decoder_layers=1, d_ff=32, dropout=0.0)
src = torch.tensor([[5, 6, 7], [8, 9, 10]])
# untrained, so the tokens are arbitrary, but the rules show: BOS (1) first,
# PAD (0) after a row's EOS (2), and no step after every row has ended
greedy_decode(model, src, max_len=5)
""",
        hints=("Encode once. `_Stepper(model, memory, src_mask, use_cache, never=...)` then "
               "maps the prefix so far (B, t) to next-token log-probs (B, V).",
               "Keep a boolean `finished` per sequence: a finished sequence gets `pad_id` "
               "instead of its argmax, and the loop ends when all are finished.",
               "Grow the output with `torch.cat` along the length axis, starting from a "
               "(B, 1) column of `bos_id`; decode in eval mode."),
    ),
    "length_penalty": Teaching(
        why="A hypothesis's score is a sum of log-probabilities, each negative, so longer "
            "outputs always score lower and beam search would prefer translations that stop "
            "too early. Dividing by this penalty (Wu et al., 2016, used with α = 0.6 in the "
            "paper) evens that out.",
        section="the-length-penalty",
        shapes="`length`: an integer tensor of any shape; `alpha`: a float. Returns a float "
               "tensor of the same shape.",
        example="""
lengths = torch.tensor([1, 6, 12, 24])
length_penalty(lengths, alpha=0.6).round(decimals=3), length_penalty(lengths, alpha=0.0)
""",
        hints=("It is one formula, elementwise; the only trap is the dtype.",
               "Integer tensors stay integers under some operations: convert the lengths "
               "to float first."),
    ),
    "beam_step": Teaching(
        why="Beam search keeps the k best partial outputs instead of one, so a choice that "
            "looks worse now can still win later. This step is its heart: extend all k "
            "hypotheses by every token, then keep the k best of the k·V candidates of each "
            "example.",
        section="beam-search",
        shapes="`scores`: (B, k); `log_probs`: (B·k, V), row b·k + j is hypothesis j of "
               "example b; `finished`: (B·k,) boolean. Returns scores (B, k) sorted best "
               "first, rows (B·k,) and tokens (B·k,).",
        example="""
scores = torch.tensor([[-1.0, -2.0]])  # B=1 example, k=2 hypotheses
log_probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]]).log()  # V=3
new_scores, rows, tokens = beam_step(scores, log_probs, torch.tensor([False, False]))
new_scores.round(decimals=3), rows, tokens
""",
        hints=("Add each hypothesis's score to each of its V next-token log-probs: a "
               "(B, k, V) tensor of candidates.",
               "Flatten each example's candidates to k·V and take `topk` (sorted). A flat "
               "index says both which hypothesis (integer division by V) and which token "
               "(remainder).",
               "For finished rows, replace the log-probs by `-inf` everywhere except 0 at "
               "`pad_id` (`torch.where`), before scoring."),
    ),
    "label_smoothed_cross_entropy": Teaching(
        why="The paper trains with label smoothing ε = 0.1: the target puts 1 − ε on the "
            "right token and spreads ε over the whole vocabulary. The model learns to be less "
            "sure, which hurts perplexity but improves accuracy and BLEU. Padding positions "
            "must not count, or the loss would depend on how the batch was padded.",
        section="the-loss-label-smoothing",
        shapes="`logits`: (N, V) or (B, T, V); `target`: (N,) or (B, T) ids. Returns a scalar.",
        example="""
logits = torch.randn(2, 3, 5)  # B=2, T=3, V=5
target = torch.tensor([[1, 2, 3], [4, PAD, PAD]])
ours = label_smoothed_cross_entropy(logits, target, smoothing=0.1)
oracle = F.cross_entropy(logits.view(-1, 5), target.view(-1), ignore_index=PAD,
                         label_smoothing=0.1)
ours, torch.allclose(ours, oracle)
""",
        hints=("Flatten to (N, V) and (N,), and work with `log_softmax` in float32.",
               "Build the smoothed target q as a full (N, V) tensor: ε/V everywhere, plus "
               "1 − ε at each row's label (`scatter_add_`, or a one-hot). The loss of a "
               "row is −Σ q · log p.",
               "Zero the padding rows and divide by the number of real tokens, not by N "
               "(and never by 0)."),
    ),
    "noam_lr": Teaching(
        why="Adam on a freshly initialised post-norm Transformer diverges if the learning "
            "rate starts high. The paper's schedule grows it linearly during a warm-up, then "
            "decays it like 1/√step; the factor d_model^−0.5 makes wider models take smaller "
            "steps.",
        section="the-learning-rate-warm-up-then-decay",
        shapes="`step` (counted from 1), `d_model`, `warmup_steps`: integers; `factor`: a "
               "float. Returns a Python float.",
        example="""
steps = [1, 1000, 4000, 16000]
# up linearly until step 4000, then 4 times the steps gives half the rate
[f"{noam_lr(step, d_model=512, warmup_steps=4000):.2e}" for step in steps]
""",
        hints=("Both branches are in one `min`: step^−0.5 (the decay) and "
               "step · warmup^−1.5 (the warm-up); they meet at step = warmup.",
               "Step 0 does not exist in this formula (0^−0.5 is infinite): reject it with a "
               "`ValueError`."),
    ),
    "train_step": Teaching(
        why="Every model in the course learns through this loop body. The order matters: "
            "stale gradients from the previous step must be cleared before `backward`, "
            "clipping must happen after `backward` and before the optimiser step, and the "
            "schedule advances once per optimiser step.",
        section="one-training-step",
        shapes="`batch.src`: (B, S); `batch.tgt_in`, `batch.tgt_out`: (B, T). The model "
               "gives logits (B, T, V). Returns the loss as a Python float.",
        example="""
from solutions.data import BOS
model = Transformer(12, 12, d_model=16, num_heads=2, num_encoder_layers=1,
                    num_decoder_layers=1, d_ff=32, dropout=0.0)
src = torch.tensor([[5, 6, 7]])
tgt = torch.tensor([[BOS, 5, 6, 7, EOS]])
batch = Batch(src, tgt[:, :-1], tgt[:, 1:], num_tokens=4)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
losses = [train_step(model, batch, optimizer) for _ in range(20)]
# twenty steps on one sentence: the model memorises it
round(losses[0], 3), round(losses[-1], 3)
""",
        hints=("Put the model in training mode; the logits come from "
               "`model(batch.src, batch.tgt_in)` (or `forward` when given), under "
               "`torch.autocast` only when `amp` is set.",
               "The loss is your `label_smoothed_cross_entropy` against `batch.tgt_out`.",
               "`optimizer.zero_grad`, `backward`, `nn.utils.clip_grad_norm_` (when "
               "`grad_clip` is not None), `optimizer.step`, then `scheduler.step`; `item()` "
               "gives the float."),
    ),
    "sample_next_token": Teaching(
        why="A language model gives a distribution over the next token; how we pick from it "
            "shapes the text. Greedy picking repeats itself, pure sampling wanders into "
            "unlikely tokens; temperature and top-k trade between the two.",
        section="sampling-temperature-and-top-k",
        shapes="`logits`: (B, V). Returns ids (B,), one per row.",
        example="""
logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
gen = torch.Generator().manual_seed(0)
greedy = sample_next_token(logits, temperature=0)
draws = sample_next_token(logits.expand(1000, 4), temperature=1.0, top_k=2, generator=gen)
# greedy picks token 0; with top_k=2, tokens 2 and 3 are never drawn
greedy, torch.bincount(draws, minlength=4)
""",
        hints=("Temperature 0 is a special case (the argmax); otherwise divide the logits "
               "by the temperature.",
               "For top-k, find each row's k-th largest logit (`topk`) and set every smaller "
               "logit to `-inf`: the softmax gives them probability 0.",
               "`torch.multinomial` draws from probabilities and accepts the `generator`."),
    ),
    "LanguageModel.forward": Teaching(
        why="A GPT-style model is the Transformer's encoder stack with a causal mask: "
            "every position predicts the next token from the ones before it, so one forward "
            "pass trains T predictions. With a cache, generation reuses the keys and values "
            "of earlier positions instead of recomputing them.",
        section="the-model",
        shapes="`idx`: (B, T) ids; `cache`: None or one `KVCache` per layer, holding P "
               "earlier positions. Returns logits (B, T, V); the mask is (T, P + T).",
        example="""
lm = LanguageModel(vocab_size=20, d_model=16, num_heads=2, num_layers=2, d_ff=32,
                   dropout=0.0, max_len=16)
idx = torch.tensor([[3, 1, 4, 1, 5]])
logits = lm(idx)
cache = lm.new_cache()
_ = lm(idx[:, :3], cache)  # the prompt fills the cache with 3 positions
rest = lm(idx[:, 3:], cache)  # the next two tokens see the cached ones
same = torch.allclose(rest, logits[:, 3:], atol=1e-5)
logits.shape, len(cache[0]), same
""",
        hints=("The new tokens start at position P = the cache's length (0 without one): "
               "`self.pos` takes that offset.",
               "Query t sits at position P + t and may see keys 0 … P + t: that is rows "
               "P onwards of a causal mask of size P + T.",
               "Without a cache, `self.layers` does it all. With one, loop over "
               "`self.layers.layers` and call each layer's `attn_block` and `ff_block` "
               "yourself, then `self.layers.norm`, then `self.head`."),
    ),
    "LanguageModel.generate": Teaching(
        why="Generation is the language model's reason to exist: it extends a prompt one "
            "sampled token at a time, feeding each back in. The cache makes each step cost "
            "one token instead of the whole text, and must give the same tokens as re-reading "
            "everything.",
        section="sampling-temperature-and-top-k",
        shapes="`idx`: (B, T) prompt ids. Returns (B, T + `max_new_tokens`), the prompt "
               "first.",
        example="""
lm = LanguageModel(vocab_size=20, d_model=16, num_heads=2, num_layers=2, d_ff=32,
                   dropout=0.0, max_len=16)
prompt = torch.tensor([[3, 1, 4]])
cached = lm.generate(prompt, max_new_tokens=5, temperature=0)
reread = lm.generate(prompt, max_new_tokens=5, temperature=0, use_cache=False)
# the cache changes the cost, not the tokens; the model is back in training mode
cached, torch.equal(cached, reread), lm.training
""",
        hints=("Remember `self.training`, switch to `eval()`, and restore the mode at the "
               "end.",
               "Each step: logits of the last position (B, V), `sample_next_token`, then "
               "append the new column to `idx`.",
               "With a cache, the first call reads the whole prompt and later calls only the "
               "newest token. The last token generated is never fed back, so the cache fits "
               "when T + max_new_tokens − 1 ≤ `max_len`; otherwise re-read the last "
               "`max_len` tokens at every step."),
    ),
    "lm_loss": Teaching(
        why="Language modelling is self-supervised: the target is the input shifted by one, "
            "so every position of every window is a training example. Averaged in float32, "
            "the loss stays accurate when the model runs in bfloat16.",
        section="the-model",
        shapes="`idx`: (B, T + 1) ids. The model maps (B, T) to logits (B, T, V). Returns a "
               "scalar.",
        example="""
V = 20
def count_up(x):  # a "model" sure that token x is followed by token x + 1
    return 30.0 * F.one_hot((x + 1) % V, V).float()
def uniform(x):  # a model that knows nothing: equal logits
    return torch.zeros(*x.shape, V)
idx = torch.arange(9).repeat(2, 1)  # B=2 windows of T + 1 = 9 tokens counting up
losses = [lm_loss(count_up, idx).item(), lm_loss(uniform, idx).item(), math.log(V)]
# scored on the next token, count_up is right everywhere; uniform costs ln V
[round(loss, 4) for loss in losses]
""",
        hints=("Inputs are all but the last token of each window, targets all but the "
               "first.",
               "`F.cross_entropy` wants (N, V) logits and (N,) targets: flatten both, and "
               "convert the logits to float32."),
    ),
    "forward_flops": Teaching(
        why="What a run costs, and how much of the machine it uses (MFU), both start from the "
            "FLOPs of a step. Almost all of them are matrix products, and an (M × K) by (K × N) "
            "product costs 2MKN, so the count follows from the configuration and the padded "
            "batch shape alone, before anything runs. Backward costs two forwards, so a "
            "training step is three.",
        section="counting-flops",
        shapes="`shape`: a `ModelShape` (width D = `d_model`, F = `d_ff`, vocabulary V = "
               "`tgt_vocab_size`, the numbers of layers); `batch` B, `src_len` S, `tgt_len` T: "
               "padded sizes. Returns a Python int.",
        example="""
base = ModelShape(tgt_vocab_size=37000)  # the paper's base: D=512, F=2048, 6 + 6 layers
one = forward_flops(base, batch=1, src_len=25, tgt_len=25)
two = forward_flops(base, batch=2, src_len=25, tgt_len=25)
longer = forward_flops(base, batch=1, src_len=100, tgt_len=100)
# exactly linear in B; 4 times the lengths costs more than 4 times: attention is quadratic
f"{one:,}", two == 2 * one, round(longer / one, 2)
""",
        hints=("Count per token first. An encoder layer does, for each source token, four "
               "D × D projections and the feed-forward's D → F → D; a decoder layer does, for "
               "each target token, six projections (self-attention's four, cross-attention's "
               "query and output) and its feed-forward.",
               "Cross-attention's keys and values project the S source tokens, not the T "
               "target ones. Scores and weighted sum cost 2·D per (query, key) pair each, "
               "summed over the heads, and the causal mask saves nothing: all T × T scores "
               "are computed.",
               "Add the output layer (D × V per target token), multiply by B and the numbers "
               "of layers, and stay in integers."),
    ),
    "accumulated_gradients_step": Teaching(
        why="When the batch a schedule was tuned for does not fit in memory, split it into "
            "micro-batches: each runs forward and backward, the gradients add up in `.grad`, "
            "and the optimiser steps once. The step equals the big batch's only if each "
            "micro-batch's mean loss counts for its share of the batch's real tokens; "
            "averaging the micro-batch means would overweight those with little text.",
        section="memory",
        shapes="`batch.src`: (B, S); `batch.tgt_in`, `batch.tgt_out`: (B, T); "
               "`micro_batches` M ≤ B: `split_batch` gives M batches of about B/M rows with "
               "the same padded lengths. The model gives logits (B/M, T, V). Returns the "
               "whole batch's loss (mean over its real tokens) as a float.",
        example="""
from solutions.model import Transformer
from solutions.training import train_step
models = []
for _ in range(2):
    torch.manual_seed(1)  # two identical models
    models.append(Transformer(12, 12, d_model=16, num_heads=2, num_encoder_layers=1,
                              num_decoder_layers=1, d_ff=32, dropout=0.0).double())
src = torch.randint(3, 12, (4, 5))
tgt = torch.tensor([[1, 5, 6, 7, 8, 2], [1, 9, 2, PAD, PAD, PAD],
                    [1, 4, 2, PAD, PAD, PAD], [1, 3, 2, PAD, PAD, PAD]])
batch = Batch(src, tgt[:, :-1], tgt[:, 1:], num_tokens=11)  # micro-batches: 7 and 4 tokens
sgd = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
whole = train_step(models[0], batch, sgd[0])
pieces = accumulated_gradients_step(models[1], batch, sgd[1], micro_batches=2)
same = all(torch.allclose(p, q) for p, q in zip(models[0].parameters(), models[1].parameters()))
round(whole, 8), round(pieces, 8), same
""",
        hints=("Zero the gradients once, before the loop: `backward` adds into `.grad`, so "
               "the micro-batches' gradients sum up by themselves.",
               "The batch's loss is the sum over its N real tokens divided by N. A "
               "micro-batch's mean is its own sum divided by its own n, so weight it by "
               "n / N before `backward` (real tokens are those of `tgt_out` that are not "
               "`PAD`).",
               "After the loop, as in `train_step`: clip, one `optimizer.step()`, then the "
               "scheduler. The weighted micro-batch losses add up to the batch's loss."),
    ),
    "average_gradients": Teaching(
        why="Data parallelism gives every process a copy of the model and a slice of the "
            "batch, so after backward each holds only its own slice's gradient. Replacing "
            "each gradient by its mean over the processes (an all-reduce) gives every copy "
            "the whole batch's gradient, so all copies take the same step and stay "
            "identical. DDP does exactly this, overlapped with backward; here it is by hand.",
        section="many-gpus-ddp-and-fsdp-with-torchrun",
        shapes="`model`: the same `nn.Module` on every process; each `.grad`, when not None, "
               "has its parameter's shape. Returns None: the gradients are replaced in place, "
               "with the same values on every rank.",
        example="""
# no process group here: 3 "processes" simulated one after another
layer = torch.nn.Linear(3, 1, bias=False)
x, y = torch.randn(6, 3), torch.randn(6, 1)
def gradient(rows):  # what one process computes: mean loss on its rows, backward
    layer.zero_grad()
    (layer(x[rows]) - y[rows]).pow(2).mean().backward()
    return layer.weight.grad.clone()
local = [gradient(slice(2 * r, 2 * r + 2)) for r in range(3)]  # 2 rows per rank
mean = torch.stack(local).sum(dim=0) / 3  # all_reduce's SUM, then divide by world size
# every rank ends with the gradient of the whole batch of 6 rows
torch.allclose(mean, gradient(slice(0, 6)))
""",
        hints=("Every process must make the same collective calls in the same order, or they "
               "wait for each other forever: go through `model.parameters()` in order on "
               "every rank.",
               "`dist.all_reduce` replaces a tensor, in place on every rank, by its sum over "
               "the ranks (gloo has no average); divide by `dist.get_world_size()` after it.",
               "A parameter whose `.grad` is None has nothing to send: skip it. Since the "
               "model is the same everywhere, every rank skips the same ones."),
    ),
    "rms_norm": Teaching(
        why="Llama, Qwen and OLMo normalise with RMSNorm instead of LayerNorm: divide each "
            "vector by its root mean square and scale by a learned gain, with no mean "
            "subtraction and no bias. One reduction instead of two, for the same quality. In "
            "float16, squares of activations above 256 overflow to `inf` and silently turn "
            "the vector into zeros, so the arithmetic must run in float32.",
        section="rmsnorm",
        shapes="`x`: (..., D), any float dtype; `weight` g: (D,). Returns (..., D) in `x`'s "
               "dtype; before the gain, each vector's root mean square is 1.",
        example="""
x = torch.tensor([[3.0, 4.0], [300.0, 400.0]]).half()  # 400² = 160,000 > float16's max
out = rms_norm(x, torch.ones(2, dtype=torch.half))
# both rows keep their direction and get root mean square 1: no overflow, no zeros
out, out.dtype
""",
        hints=("Convert `x` and the weight to float32 first, and the result back to "
               "`x.dtype` at the end.",
               "The mean of the squares runs over the last axis only; keep that axis "
               "(`keepdim=True`) so that the division broadcasts over D. `eps` goes inside "
               "the square root (`torch.rsqrt` is 1/√).",
               "Multiply by the gain last."),
    ),
    "swiglu": Teaching(
        why="The paper's feed-forward is W2 ReLU(W1 x). SwiGLU adds a second projection "
            "W3 x that multiplies the activation elementwise, a gate the network learns, and "
            "uses the smooth SiLU z·σ(z) instead of ReLU; Shazeer (2020) found it the best "
            "of the gated variants. With three matrices instead of two, d_ff = 8/3·D keeps "
            "the parameter count of a ReLU network with 4·D.",
        section="swiglu-feed-forward",
        shapes="`x`: (..., D); `w1`, `w3`: (F, D); `w2`: (D, F), each stored (d_out, d_in) "
               "as in `nn.Linear`. Returns (..., D).",
        example="""
lin1, lin3 = nn.Linear(4, 6, bias=False), nn.Linear(4, 6, bias=False)  # D=4, F=6
lin2 = nn.Linear(6, 4, bias=False)
x = torch.randn(2, 3, 4)
out = swiglu(x, lin1.weight, lin2.weight, lin3.weight)
same = torch.allclose(out, lin2(F.silu(lin1(x)) * lin3(x)), atol=1e-6)
closed = swiglu(x, lin1.weight, lin2.weight, torch.zeros(6, 4))
# a gate of zeros closes every hidden unit, whatever SiLU(W1 x) says
out.shape, same, torch.equal(closed, torch.zeros(2, 3, 4))
""",
        hints=("Two branches of width F, the gate SiLU(W1 x) and the linear W3 x, multiplied "
               "elementwise, then W2 brings the product back to width D.",
               "A weight stored (d_out, d_in) maps a row vector by the product with its "
               "transpose; `@` handles any leading axes, so no reshaping is needed.",
               "`silu` is provided."),
    ),
    "rope_angles": Teaching(
        why="RoPE turns pair i of a query or key at position p by the angle p·θ_i, with "
            "θ_i = θ^(−2i/d): the first pairs turn fast, the last very slowly, the same "
            "frequencies as chapter 3's sinusoidal table. Computing them in float32 matters: "
            "bfloat16 cannot even represent positions above 256 exactly.",
        section="rotary-position-embeddings",
        shapes="`positions`: integers of any shape (...); `head_dim` d: even. Returns float32 "
               "(..., d/2): entry i is position · θ^(−2i/d).",
        example="""
angles = rope_angles(torch.arange(4), head_dim=8)
# pair 0 turns by 1 radian per position, pair 3 by 0.001; row p is p times row 1
angles.shape, [round(a, 4) for a in angles[1].tolist()], torch.allclose(angles[3], 3 * angles[1])
""",
        hints=("First the d/2 frequencies θ^(−2i/d), one per pair: the exponents use the even "
               "numbers 0, 2, …, d − 2.",
               "Then an outer product with the positions: give the (float) positions a last "
               "axis of size 1 so that they broadcast against the (d/2,) frequencies, for "
               "positions of any shape.",
               "Build the frequencies in float32, on the positions' device."),
    ),
    "apply_rope": Teaching(
        why="Instead of adding a position vector to the embeddings, RoPE rotates each query "
            "and key: pair i of the vector at position m turns by m·θ_i. Rotations compose, "
            "so the score of a query at m and a key at n depends on the positions only "
            "through m − n: what the model learns about \"three tokens back\" holds at every "
            "position. Rotations keep lengths, so nothing else changes.",
        section="rotary-position-embeddings",
        shapes="`x`: (..., T, d), e.g. (B, H, T, Dh); `positions`: broadcastable to "
               "`x.shape[:-1]`, e.g. (T,) or (B, 1, T). Returns `x`'s shape and dtype.",
        example="""
q, k = torch.randn(1, 8), torch.randn(1, 8)
def score(m, n):  # q at position m, k at position n
    return (apply_rope(q, torch.tensor([m])) @ apply_rope(k, torch.tensor([n])).T).item()
# the same offset m - n = 3 at three places gives the same score; offset 2 another
[round(score(m, m - 3), 3) for m in (3, 10, 100)], round(score(3, 1), 3)
""",
        hints=("View the last axis as d/2 pairs (`unflatten` it to (d/2, 2)): the even and "
               "the odd member of every pair become two tensors shaped like the angles.",
               "`rope_angles(positions, d)` is (..., T, d/2) and broadcasts against them; "
               "write the two formulas with its cos and sin.",
               "Interleave the two results back (stack on a new last axis, then flatten the "
               "last two). Compute in float32 and return `x.dtype`."),
    ),
    "grouped_query_attention": Teaching(
        why="While generating, every layer keeps the keys and values of every past token, and "
            "for large models that cache, not the weights, limits how many sequences fit in "
            "memory. Grouped-query attention keeps only G key/value heads, each shared by "
            "H/G query heads, which shrinks the cache H/G times; G = H is multi-head "
            "attention, G = 1 multi-query attention.",
        section="grouped-query-attention",
        shapes="`q`: (B, H, T, Dh); `k`, `v`: (B, G, S, Dh), G dividing H and S ≥ T. Returns "
               "(B, H, T, Dh). Query t is position S − T + t and sees keys 0 … S − T + t.",
        example="""
q = torch.randn(1, 4, 2, 8)  # H=4 query heads, T=2 new positions
k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)  # G=2 key/value heads, S=5
out = grouped_query_attention(q, k, v)
allowed = torch.ones(2, 5, dtype=torch.bool).tril(diagonal=5 - 2)
oracle = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)
# the 2 queries are the last 2 of 5 positions: each sees the cache and itself
out.shape, torch.allclose(out, oracle, atol=1e-6), allowed.int()
""",
        hints=("Query head h uses key/value head h // (H/G): repeat each key/value head H/G "
               "times in a row along the head axis so they line up with the query heads "
               "(`repeat_interleave`; `repeat` would cycle through the groups instead).",
               "Scores and weighted sum as in chapter 1, scaled by √Dh. The mask is (T, S): "
               "a lower triangle shifted right by S − T (`tril` takes a diagonal offset).",
               "Blocked scores become `-inf` before the softmax."),
    ),
    "merge_pair": Teaching(
        why="Byte-level BPE learns its vocabulary by repeatedly merging the most frequent "
            "adjacent pair of tokens into a new token, and encodes text by replaying the "
            "learned merges in order; each merge is this function. Scanning left to right "
            "without overlaps makes the result well defined: in [a, a, a] the pair (a, a) is "
            "merged once, at the start.",
        section="a-byte-level-bpe-tokenizer",
        shapes="`ids`: a list of n ints; `pair`: two ids; `new_id`: an int. Returns a new list "
               "of at most n ints.",
        example="""
ids = list("banana".encode())  # the bytes of b, a, n, a, n, a
an = merge_pair(ids, (97, 110), 256)  # "a" then "n" becomes token 256
ids, an, merge_pair(an, (256, 256), 257), merge_pair([1, 1, 1], (1, 1), 9)
""",
        hints=("Walk through the list with an index you advance yourself: a `for` loop "
               "cannot skip the second member of a merged pair.",
               "At each index: if this id and the next form `pair`, emit `new_id` and move "
               "two ahead; otherwise copy the id and move one ahead. The last id has no next "
               "one."),
    ),
    "cross_entropy": Teaching(
        why="Every language model trains on this loss: minus the log-probability the model "
            "gives the right next token, averaged. Written as the log of a softmax it breaks "
            "for large logits: exp(1000) is `inf` in float32, and inf/inf is NaN. Since "
            "log Σ exp(z) = max + log Σ exp(z − max), subtracting each row's maximum keeps "
            "every exponent at most 0 and changes nothing.",
        section="training-written-out",
        shapes="`logits`: (..., V); `targets`: (...) integer ids in [0, V). Returns a float32 "
               "scalar, the mean over all positions.",
        example="""
logits = torch.tensor([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
targets = torch.tensor([0, 2])
p = torch.exp(logits) / torch.exp(logits).sum(dim=-1, keepdim=True)
naive = -torch.log(p[[0, 1], targets])
# sure and right costs 0, a uniform guess ln 3 = 1.0986; the naive formula gives NaN
cross_entropy(logits, targets), naive
""",
        hints=("log softmax(z)_y = z_y − log Σ_j exp(z_j): compute the log of the normaliser "
               "once per position, then subtract it from the target's logit.",
               "Subtract each row's maximum (`amax` with `keepdim=True`) before `exp`, and "
               "add it back after the `log`.",
               "`gather` along the last axis picks each position's target logit; work in "
               "float32 and return the mean."),
    ),
    "adamw_step": Teaching(
        why="Adam divides each parameter's step by a running estimate of its gradient's size, "
            "so every parameter moves by about the learning rate. Weight decay added to the "
            "gradient (L2) would be divided too, weakening it where gradients are large; "
            "AdamW shrinks the weights directly, θ ← θ − ηλθ, decoupled from the gradient. "
            "Bias correction undoes the moments' start at zero, which skews the first steps.",
        section="training-written-out",
        shapes="`param`, `grad`, `exp_avg` m, `exp_avg_sq` v: tensors of one shape; `step` "
               "t ≥ 1; the rest floats. Returns None: `param`, m and v change in place.",
        example="""
param = torch.ones(3)
grad = torch.tensor([1e-3, 1.0, -100.0])  # gradients of very different sizes
adamw_step(param, grad, torch.zeros(3), torch.zeros(3), step=1, lr=0.1, weight_decay=0.0)
decayed = torch.tensor([2.0])  # a zero gradient: only the decay acts, 2 · (1 - lr·λ)
adamw_step(decayed, torch.zeros(1), torch.zeros(1), torch.zeros(1), step=1, lr=0.1,
           weight_decay=0.1)
# the first step moves each weight by lr against its gradient, whatever the gradient's size
param.round(decimals=4), decayed.round(decimals=4)
""",
        hints=("Three stages in order: decay the weights (a factor 1 − lr·λ), update the two "
               "moments from `grad`, then take the step.",
               "m ← β1 m + (1 − β1) g and v ← β2 v + (1 − β2) g², in place (`mul_`, "
               "`add_`, `addcmul_`, `lerp_`): the caller keeps these tensors between steps.",
               "Divide m by 1 − β1^t and v by 1 − β2^t; `eps` is added after the square "
               "root of the corrected v."),
    ),
    "cosine_schedule": Teaching(
        why="Modern runs warm the learning rate up linearly from 0, because large steps from "
            "a random start with Adam's still noisy moment estimates can diverge, then decay "
            "it along half a cosine to a floor. The rate falls slowly at first, fastest in "
            "the middle, gently into the minimum, and then stays there.",
        section="training-written-out",
        shapes="`it`: the iteration, from 0; `max_lr`, `min_lr`: floats; `warmup_iters` ≤ "
               "`cosine_iters`: ints. Returns a Python float.",
        example="""
its = [0, 50, 100, 550, 1000, 1500]
# up to 3e-3 at 100, halfway down at 550, the minimum from 1000 on
[f"{cosine_schedule(it, 3e-3, 3e-4, 100, 1000):.2e}" for it in its]
""",
        hints=("Three regimes of `it`: before `warmup_iters`, up to `cosine_iters`, after.",
               "Warm-up is a straight line from 0 at it = 0 to `max_lr` at `warmup_iters`. "
               "For the decay, let p run from 0 to 1 between the two: (1 + cos πp)/2 then "
               "falls from 1 to 0; scale it into [min_lr, max_lr].",
               "Do not divide by zero when `cosine_iters` equals `warmup_iters`."),
    ),
}

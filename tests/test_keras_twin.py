"""The Keras 3 twin (solutions/keras_twin.py) against the package's PyTorch modules, and its
multi-head attention against keras.layers.MultiHeadAttention.

The backend is PyTorch unless KERAS_BACKEND says otherwise (`make test-keras-tf` runs this file
with KERAS_BACKEND=tensorflow in a separate environment). The Keras side only ever sees NumPy
arrays, so the same tests run on every backend; the PyTorch side is the oracle.
"""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import solutions  # noqa: E402
from solutions import keras_twin as kt  # noqa: E402
from solutions.data import copy_task, make_batch  # noqa: E402

ATOL = RTOL = 1e-5
# The `randomize` fixture is a pure function (seeded), so sharing it across examples is safe.
SHARED_FIXTURE = [HealthCheck.function_scoped_fixture]
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=SHARED_FIXTURE)
FEW = settings(max_examples=8, deadline=None,  # whole layers and models: slower to build
               suppress_health_check=SHARED_FIXTURE)


def close(keras_out, torch_out):
    """Compare a Keras output (any backend) with a PyTorch tensor within 1e-5."""
    torch.testing.assert_close(torch.from_numpy(np.asarray(kt.to_numpy(keras_out))),
                               torch_out.detach(), atol=ATOL, rtol=RTOL)


def randomize_keras(layer, seed: int, scale: float = 0.3):
    """Overwrite every Keras weight with seeded noise (layer-norm gains near 1), so that the
    Keras-to-PyTorch direction is tested with weights no initialiser would produce."""
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        noise = rng.standard_normal(tuple(v.shape)).astype("float32") * scale
        v.assign(noise + 1.0 if v.path.endswith("gamma") else noise)
    return layer


def random_mask(gen, shape, p_keep=0.6):
    return torch.rand(shape, generator=gen) < p_keep


def np_(t: torch.Tensor | None):
    return None if t is None else t.numpy()


# --- packaging ---------------------------------------------------------------------------------


def test_import_solutions_does_not_import_keras():
    code = "import sys, solutions; assert 'keras' not in sys.modules, 'keras was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not hasattr(solutions, "keras_twin") or "keras_twin" not in solutions.__all__


def test_keras_runs_on_the_backend_asked_for():
    assert keras.backend.backend() == os.environ["KERAS_BACKEND"]


# --- functions ---------------------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(1, 5), cols=st.integers(1, 8))
def test_softmax_matches_package_with_masked_rows(seed, rows, cols):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=gen) * 5
    x = x.masked_fill(~random_mask(gen, (rows, cols), 0.5), float("-inf"))  # some rows all -inf
    close(kt.softmax(np_(x)), solutions.softmax(x))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3), heads=st.integers(1, 3),
       q_len=st.integers(1, 6), k_len=st.integers(1, 6), d=st.sampled_from([1, 4, 8]),
       mask_kind=st.sampled_from(["none", "full", "padding", "broadcast"]))
def test_scaled_dot_product_attention_matches_package(seed, batch, heads, q_len, k_len, d,
                                                      mask_kind):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, n, d, generator=gen) for n in (q_len, k_len, k_len))
    mask = {"none": None, "full": random_mask(gen, (batch, heads, q_len, k_len)),
            "padding": random_mask(gen, (batch, 1, 1, k_len)),
            "broadcast": random_mask(gen, (q_len, k_len))}[mask_kind]
    out, weights = kt.scaled_dot_product_attention(np_(q), np_(k), np_(v), np_(mask))
    ref_out, ref_weights = solutions.scaled_dot_product_attention(q, k, v, mask)
    close(out, ref_out)  # queries with no allowed key: zeros on both sides, never NaN
    close(weights, ref_weights)


@SETTINGS
@given(max_len=st.integers(1, 60), d_model=st.integers(1, 33), offset=st.integers(0, 5))
def test_sinusoidal_encoding_matches_package(max_len, d_model, offset):
    close(kt.sinusoidal_encoding(max_len, d_model), solutions.sinusoidal_encoding(max_len, d_model))
    x = torch.randn(2, max_len, d_model)
    ours = solutions.SinusoidalPositionalEncoding(d_model, max_len + offset)
    twin = kt.SinusoidalPositionalEncoding(d_model, max_len + offset)
    close(twin(np_(x), offset=offset), ours(x, offset=offset))


def test_masks_match_package():
    tokens = torch.tensor([[5, 6, 0, 0], [7, 0, 8, 9]])
    close(kt.padding_mask(np_(tokens)), solutions.padding_mask(tokens))
    close(kt.target_mask(np_(tokens)), solutions.target_mask(tokens))


def test_noam_schedule_matches_package():
    schedule = kt.NoamSchedule(d_model=64, warmup_steps=100, factor=2.0)
    for keras_step in (0, 1, 50, 99, 100, 599):  # Keras counts from 0, noam_lr from 1
        got = float(kt.to_numpy(schedule(keras_step)))
        assert got == pytest.approx(solutions.noam_lr(keras_step + 1, 64, 100, 2.0), rel=1e-6)


def test_seq2seq_arrays_match_make_batch():
    pairs = copy_task(5, seed=3)
    pairs[1] = (pairs[1][0][:4], torch.cat([pairs[1][1][:5], pairs[1][1][-1:]]))  # a short one
    src, tgt_in, tgt_out = kt.seq2seq_arrays(pairs)
    batch = make_batch(pairs)
    for array, tensor in ((src, batch.src), (tgt_in, batch.tgt_in), (tgt_out, batch.tgt_out)):
        assert isinstance(array, np.ndarray)
        np.testing.assert_array_equal(array, tensor.numpy())


# --- multi-head attention ----------------------------------------------------------------------


def mha_case(seed: int):
    gen = torch.Generator().manual_seed(seed)
    heads = [1, 2, 4][seed % 3]
    d_model = heads * [2, 4, 8][(seed // 3) % 3]
    batch, q_len, k_len = (int(n) for n in torch.randint(1, 6, (3,), generator=gen))
    query = torch.randn(batch, q_len, d_model, generator=gen)
    memory = torch.randn(batch, k_len, d_model, generator=gen)
    shape = [(batch, heads, q_len, k_len), (batch, 1, 1, k_len), (q_len, k_len)][seed % 3]
    mask = None if seed % 7 == 0 else random_mask(gen, shape)
    return heads, d_model, query, memory, mask


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), bias=st.booleans())
def test_multi_head_attention_torch_to_keras(seed, bias, randomize):
    heads, d_model, query, memory, mask = mha_case(seed)
    ours = randomize(solutions.MultiHeadAttention(d_model, heads, bias=bias), seed).eval()
    twin = kt.copy_torch_to_keras(ours, kt.MultiHeadAttention(d_model, heads, bias=bias))
    close(twin(np_(query), np_(memory), np_(memory), attention_mask=np_(mask)),
          ours(query, memory, memory, mask))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), bias=st.booleans())
def test_multi_head_attention_keras_to_torch(seed, bias):
    heads, d_model, query, memory, mask = mha_case(seed)
    twin = randomize_keras(kt.MultiHeadAttention(d_model, heads, bias=bias), seed)
    ours = kt.copy_keras_to_torch(twin, solutions.MultiHeadAttention(d_model, heads, bias=bias))
    close(twin(np_(query), np_(memory), np_(memory), attention_mask=np_(mask)),
          ours.eval()(query, memory, memory, mask))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), bias=st.booleans(), dead_rows=st.booleans())
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")  # Keras, with one key
def test_multi_head_attention_matches_keras_own_layer(seed, bias, dead_rows):
    """keras.layers.MultiHeadAttention as a second oracle. Its mask is (B, Q, K) with
    True = may attend, like ours; its call order is (query, value, key)."""
    heads, d_model, query, memory, _ = mha_case(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    mask = random_mask(gen, (query.shape[0], query.shape[1], memory.shape[1]))
    if not dead_rows:
        mask[..., 0] = True  # every query may attend to at least one key
    twin = randomize_keras(kt.MultiHeadAttention(d_model, heads, bias=bias), seed)
    theirs = kt.to_keras_multi_head_attention(twin)
    value = memory.flip(1)  # different keys and values, so that swapping them shows
    # Keras's mask is (B, Q, K); ours broadcasts to (B, H, Q, K), so it gets a heads axis.
    ours = twin(np_(query), np_(memory), np_(value), attention_mask=np_(mask[:, None]))
    # Asking for the scores makes Keras take its explicit path, which gives a query with no
    # allowed key zero weights, as ours does.
    out, scores = theirs(np_(query), np_(value), key=np_(memory), attention_mask=np_(mask),
                         return_attention_scores=True)
    close(ours, torch.from_numpy(kt.to_numpy(out)))
    close(twin.last_weights, torch.from_numpy(kt.to_numpy(scores)))
    if not dead_rows:  # the fused path (backend's dot_product_attention) on live rows
        fused = theirs(np_(query), np_(value), key=np_(memory), attention_mask=np_(mask))
        close(ours, torch.from_numpy(kt.to_numpy(fused)))


# --- encoder and decoder layers ----------------------------------------------------------------


def layer_config(seed: int) -> dict:
    heads = [1, 2, 4][seed % 3]
    return dict(d_model=heads * [4, 8][seed % 2], num_heads=heads, d_ff=[8, 16, 24][seed % 3],
                dropout=0.0, activation=["relu", "gelu"][(seed // 3) % 2],
                norm_first=(seed // 2) % 2 == 1, bias=seed % 5 != 0,
                layer_norm_eps=[1e-5, 1e-6][(seed // 7) % 2])


@FEW
@given(seed=st.integers(0, 2**31 - 1), to_keras=st.booleans())
def test_encoder_layer_both_ways(seed, to_keras, randomize):
    cfg = layer_config(seed)
    gen = torch.Generator().manual_seed(seed)
    batch, length = (int(n) for n in torch.randint(1, 6, (2,), generator=gen))
    x = torch.randn(batch, length, cfg["d_model"], generator=gen)
    mask = random_mask(gen, (batch, 1, 1, length))
    ours = solutions.EncoderLayer(**cfg)
    twin = kt.EncoderLayer(**cfg)
    if to_keras:
        kt.copy_torch_to_keras(randomize(ours, seed), twin)
    else:
        kt.copy_keras_to_torch(randomize_keras(twin, seed), ours)
    close(twin(np_(x), attention_mask=np_(mask)), ours.eval()(x, mask))


@FEW
@given(seed=st.integers(0, 2**31 - 1), to_keras=st.booleans())
def test_decoder_layer_both_ways(seed, to_keras, randomize):
    cfg = layer_config(seed)
    gen = torch.Generator().manual_seed(seed)
    batch, t_len, s_len = (int(n) for n in torch.randint(1, 6, (3,), generator=gen))
    x = torch.randn(batch, t_len, cfg["d_model"], generator=gen)
    memory = torch.randn(batch, s_len, cfg["d_model"], generator=gen)
    tokens = torch.randint(0, 3, (batch, t_len), generator=gen)  # some 0 = padding
    self_mask = solutions.target_mask(tokens)
    memory_mask = random_mask(gen, (batch, 1, 1, s_len))
    ours = solutions.DecoderLayer(**cfg)
    twin = kt.DecoderLayer(**cfg)
    if to_keras:
        kt.copy_torch_to_keras(randomize(ours, seed), twin)
    else:
        kt.copy_keras_to_torch(randomize_keras(twin, seed), ours)
    close(twin(np_(x), np_(memory), self_mask=np_(self_mask), memory_mask=np_(memory_mask)),
          ours.eval()(x, memory, self_mask, memory_mask))


# --- the whole model ---------------------------------------------------------------------------


def model_config(seed: int) -> dict:
    heads = [1, 2, 4][seed % 3]
    norm_first = (seed // 2) % 2 == 1
    return dict(src_vocab_size=7 + seed % 5, tgt_vocab_size=6 + seed % 4,
                d_model=heads * [4, 8][seed % 2], num_heads=heads,
                num_encoder_layers=1 + seed % 2, num_decoder_layers=1 + (seed // 2) % 2,
                d_ff=[8, 16][seed % 2], dropout=0.0, activation=["relu", "gelu"][(seed // 3) % 2],
                norm_first=norm_first, final_norm=norm_first or seed % 3 == 0, max_len=32)


def padded_ids(gen, batch, length, vocab):
    ids = torch.randint(3, vocab, (batch, length), generator=gen)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    return ids.masked_fill(torch.arange(length) >= lengths[:, None], 0)


@FEW
@given(seed=st.integers(0, 2**31 - 1), to_keras=st.booleans())
def test_transformer_both_ways(seed, to_keras, randomize):
    cfg = model_config(seed)
    gen = torch.Generator().manual_seed(seed)
    batch, s_len, t_len = (int(n) for n in torch.randint(1, 7, (3,), generator=gen))
    src = padded_ids(gen, batch, s_len, cfg["src_vocab_size"])
    tgt = padded_ids(gen, batch, t_len, cfg["tgt_vocab_size"])
    ours = solutions.Transformer(**cfg)
    if to_keras:
        twin = kt.transformer_from_torch(randomize(ours, seed))
    else:
        twin = randomize_keras(kt.Transformer(**cfg), seed)
        kt.copy_keras_to_torch(twin, ours)
    ours.eval()
    close(twin((np_(src), np_(tgt))), ours(src, tgt))
    close(twin.encode(np_(src)), ours.encode(src))


def test_greedy_decode_matches_package(randomize):
    cfg = model_config(4)
    ours = randomize(solutions.Transformer(**cfg), 4).eval()
    twin = kt.transformer_from_torch(ours)
    src = padded_ids(torch.Generator().manual_seed(0), 6, 5, cfg["src_vocab_size"])
    expected = solutions.greedy_decode(ours, src, max_len=7).numpy()
    np.testing.assert_array_equal(kt.greedy_decode(twin, np_(src), max_len=7), expected)
    # Targets = the decoded outputs, then one of them changed: 5 of 6 exact matches.
    pairs = [(s[s != 0], torch.from_numpy(e)) for s, e in zip(src, expected)]
    pairs[2] = (pairs[2][0], torch.cat([pairs[2][1][:1], 3 + (pairs[2][1][1:2] - 2) % 3,
                                        pairs[2][1][2:]]))
    assert kt.exact_match(twin, pairs, max_len=7) == pytest.approx(5 / 6)
    assert solutions.exact_match(ours, pairs, max_len=7) == pytest.approx(5 / 6)


def test_transfer_refuses_what_it_cannot_map():
    with pytest.raises(TypeError, match="no weight mapping"):
        kt.copy_torch_to_keras(solutions.EncoderLayer(8, 2, 16), kt.DecoderLayer(8, 2, 16))
    with pytest.raises(ValueError, match="shape mismatch"):
        kt.copy_torch_to_keras(solutions.EncoderLayer(8, 2, 16), kt.EncoderLayer(8, 2, 24))
    tied = solutions.Transformer(9, 9, 8, 2, 1, 1, 16, tie_embeddings=True)
    with pytest.raises(ValueError, match="ties"):
        kt.copy_keras_to_torch(kt.Transformer(9, 9, 8, 2, 1, 1, 16), tied)
    with pytest.raises(ValueError, match="max_len"):
        kt.SinusoidalPositionalEncoding(8, max_len=4)(np.zeros((1, 5, 8), "float32"))
    learned = solutions.Transformer(9, 9, 8, 2, 1, 1, 16, positional="learned")
    with pytest.raises(ValueError, match="sinusoidal"):
        kt.transformer_from_torch(learned)


# --- training ----------------------------------------------------------------------------------


# Keras's convert_to_numpy calls np.array(torch_tensor) on the loss, which NumPy 2 warns about.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't:DeprecationWarning")
def test_one_training_step_matches_pytorch(randomize):
    """The same SGD step in both frameworks (dropout off) gives the same weights: gradients,
    loss reduction and the Dense kernel layout all agree."""
    cfg = model_config(5)
    ours = randomize(solutions.Transformer(**cfg), 5)
    twin = kt.transformer_from_torch(ours)
    gen = torch.Generator().manual_seed(1)
    src = padded_ids(gen, 4, 5, cfg["src_vocab_size"])
    tgt = padded_ids(gen, 4, 6, cfg["tgt_vocab_size"])
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]

    twin.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                 jit_compile=False)
    keras_loss = twin.train_on_batch((np_(src), np_(tgt_in)), np_(tgt_out))

    optimizer = torch.optim.SGD(ours.parameters(), lr=0.1)
    logits = ours.train()(src, tgt_in)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt_out.flatten())
    loss.backward()
    optimizer.step()
    assert float(np.asarray(keras_loss)) == pytest.approx(loss.item(), rel=1e-5)
    after = solutions.Transformer(**cfg)
    kt.copy_keras_to_torch(twin, after)
    for (name, p), q in zip(ours.named_parameters(), after.parameters()):
        torch.testing.assert_close(q, p.detach(), atol=ATOL, rtol=RTOL, msg=name)


def test_dropout_follows_the_training_flag():
    twin = kt.Transformer(9, 9, 8, 2, 1, 1, 16, dropout=0.5)
    src, tgt = np.full((2, 4), 5), np.full((2, 3), 6)
    a, b = twin((src, tgt), training=True), twin((src, tgt), training=True)
    assert not np.allclose(kt.to_numpy(a), kt.to_numpy(b))
    np.testing.assert_array_equal(kt.to_numpy(twin((src, tgt))), kt.to_numpy(twin((src, tgt))))

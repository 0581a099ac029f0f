"""The ONNX export of the date model (book/_static/date/, made by scripts/export_date_onnx.py)
decodes held-out dates exactly as the PyTorch model does, run by onnxruntime."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from solutions.data import date_task, date_tokenizers, pad_sequences
from solutions.decoding import greedy_decode
from solutions.training import load_model

ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "book" / "_static" / "date"


def _export_script():
    spec = importlib.util.spec_from_file_location("export_date_onnx",
                                                  ROOT / "scripts" / "export_date_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_onnx_greedy_equals_pytorch_on_held_out_dates():
    script = _export_script()
    model = load_model(ROOT / "book" / "data" / "date_model.pt").float().eval()
    src_tok, tgt_tok = date_tokenizers()
    texts = [t for t, _ in date_task(60, seed=5, split="test")]
    src = pad_sequences([torch.tensor(src_tok.encode(t)) for t in texts])
    expected = [tgt_tok.decode(o) for o in greedy_decode(model, src, script.MAX_LEN)]
    session = ort.InferenceSession(str(STATIC / "date_model.onnx"))
    got = [tgt_tok.decode(script.onnx_greedy(session, src_tok.encode(t))) for t in texts]
    assert got == expected


def test_attention_output_is_the_last_rows_of_the_cross_attention():
    """The map the page draws: each layer's cross-attention weights of the last position."""
    model = load_model(ROOT / "book" / "data" / "date_model.pt").float().eval()
    src_tok, _ = date_tokenizers()
    src = torch.tensor([src_tok.encode("Tuesday, 3 March 1998")])
    prefix = torch.tensor([[1, 4, 12, 12]])
    session = ort.InferenceSession(str(STATIC / "date_model.onnx"))
    log_probs, weights = session.run(None, {"src": src.numpy(), "prefix": prefix.numpy()})
    model.keep_attention_weights(True)
    with torch.no_grad():
        logits = model(src, prefix)
    expected = torch.stack([layer.cross_attn.last_weights[:, :, -1]
                            for layer in model.decoder.layers], dim=1)
    np.testing.assert_allclose(weights, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert log_probs.argmax() == logits[0, -1, 2:].argmax() + 2  # PAD, BOS excluded


def test_metadata_matches_the_tokenizers():
    meta = json.loads((STATIC / "date_model.json").read_text())
    src_tok, tgt_tok = date_tokenizers()
    assert meta["source_alphabet"] == src_tok.alphabet
    assert meta["target_alphabet"] == tgt_tok.alphabet

"""Export the trained date model (book/data/date_model.pt) to ONNX for the in-page demo of
chapter 7, and check it against PyTorch with onnxruntime: the same greedy output on held-out
dates.

Writes book/_static/date/date_model.onnx (one decoding step: source ids and the target prefix
in, next-token log-probabilities and the last query's cross-attention weights out) and
book/_static/date/date_model.json (alphabets, special ids, the longest output).

    python scripts/export_date_onnx.py

Exits with status 1 if any held-out date decodes differently.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from solutions.data import (
    BOS,
    EOS,
    PAD,
    date_task,
    date_tokenizers,
    pad_sequences,
)
from solutions.decoding import greedy_decode
from solutions.training import load_model

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "book" / "_static" / "date"
MAX_LEN = 12  # "YYYY-MM-DD" is 10 characters, then EOS


class DecodingStep(nn.Module):
    """One greedy step, without a cache: (src (1, S), prefix (1, T)) ->
    log-probabilities of token T+1 (1, V) with PAD and BOS excluded, and the
    cross-attention weights of the last position, (1, layers, H, S)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        model.keep_attention_weights(True)  # the explicit path keeps weights

    def forward(self, src: Tensor, prefix: Tensor) -> tuple[Tensor, Tensor]:
        src_mask = self.model.src_mask(src)
        memory = self.model.encode(src, src_mask)
        logits = self.model.decode(prefix, memory, src_mask)[:, -1]
        log_probs = torch.log_softmax(logits, dim=-1)
        never = torch.zeros_like(log_probs, dtype=torch.bool)
        never[:, PAD] = True
        never[:, BOS] = True
        log_probs = log_probs.masked_fill(never, float("-inf"))
        weights = torch.stack(
            [layer.cross_attn.last_weights[:, :, -1, :]
             for layer in self.model.decoder.layers],
            dim=1,
        )
        return log_probs, weights


def export(model: nn.Module, path: Path) -> None:
    step = DecodingStep(model).eval()
    src = torch.tensor([[10, 11, 12, 13, 14]])
    prefix = torch.tensor([[BOS, 4, 5]])
    torch.onnx.export(
        step,
        (src, prefix),
        str(path),
        input_names=["src", "prefix"],
        output_names=["log_probs", "cross_attention"],
        dynamic_axes={
            "src": {1: "S"},
            "prefix": {1: "T"},
            "cross_attention": {3: "S"},
        },
        opset_version=17,
        dynamo=False,
    )


def onnx_greedy(session, src_ids: list[int]) -> list[int]:
    """Greedy decoding with the exported step, as the page does it."""
    src = np.array([src_ids], dtype=np.int64)
    out = [BOS]
    for _ in range(MAX_LEN):
        log_probs, _ = session.run(
            None, {"src": src, "prefix": np.array([out], dtype=np.int64)}
        )
        out.append(int(log_probs[0].argmax()))
        if out[-1] == EOS:
            break
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "book/data/date_model.pt"))
    parser.add_argument("--check", type=int, default=500,
                        help="held-out dates to compare with PyTorch")
    args = parser.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(1)
    model = load_model(args.model).float().eval()
    src_tok, tgt_tok = date_tokenizers()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    onnx_path = OUT_DIR / "date_model.onnx"
    export(model, onnx_path)
    meta = {
        "source_alphabet": src_tok.alphabet,
        "target_alphabet": tgt_tok.alphabet,
        "pad": PAD, "bos": BOS, "eos": EOS, "max_len": MAX_LEN,
        "layers": len(model.decoder.layers),
        "heads": model.decoder.layers[0].cross_attn.num_heads,
    }
    (OUT_DIR / "date_model.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB)")

    model.keep_attention_weights(False)
    texts = [t for t, _ in date_task(args.check, seed=7, split="test")]
    src = pad_sequences([torch.tensor(src_tok.encode(t)) for t in texts])
    expected = [tgt_tok.decode(o) for o in greedy_decode(model, src, MAX_LEN)]
    session = ort.InferenceSession(str(onnx_path))
    start = time.perf_counter()
    got = [tgt_tok.decode(onnx_greedy(session, src_tok.encode(t))) for t in texts]
    seconds = time.perf_counter() - start
    same = sum(g == e for g, e in zip(got, expected))
    print(f"onnxruntime vs PyTorch, greedy, {len(texts)} held-out dates: "
          f"{same} identical ({seconds / len(texts) * 1e3:.1f} ms per date)")
    return 0 if same == len(texts) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Time our encoder-decoder stacks against ``nn.Transformer`` (forward + backward).

Both sides get the same configuration (batch_first=True, post-norm, final layer norms), the same
weights (ours is built with ``Encoder.from_torch`` / ``Decoder.from_torch``), the same float
inputs (B, S, D) and (B, T, D) and the same causal and padding masks. Embeddings are left out:
``nn.Transformer`` has none. One step is forward, ``loss = out.sum()`` and backward. Steps are
interleaved (ours, PyTorch, ours, PyTorch, ...) after a warm-up, and we report the medians.

    python scripts/benchmark.py                 # CPU, a few configurations
    python scripts/benchmark.py --device cuda   # on a GPU, if there is one
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from torch import Tensor, nn

from solutions import Decoder, Encoder

CONFIGS = [
    # (name, d_model, heads, d_ff, layers, batch, src_len, tgt_len)
    ("small", 128, 4, 512, 2, 64, 32, 32),
    ("base-width", 512, 8, 2048, 2, 16, 64, 64),
]


def make_inputs(batch: int, src_len: int, tgt_len: int, d_model: int, device: str,
                generator: torch.Generator):
    """Random activations, random source/target padding (each row keeps >= 1 token)."""
    src = torch.randn(batch, src_len, d_model, generator=generator).to(device)
    tgt = torch.randn(batch, tgt_len, d_model, generator=generator).to(device)
    src_lengths = torch.randint(1, src_len + 1, (batch,), generator=generator).to(device)
    tgt_lengths = torch.randint(1, tgt_len + 1, (batch,), generator=generator).to(device)
    src_pad = torch.arange(src_len, device=device)[None, :] >= src_lengths[:, None]  # True = pad
    tgt_pad = torch.arange(tgt_len, device=device)[None, :] >= tgt_lengths[:, None]
    return src, tgt, src_pad, tgt_pad


class Ours(nn.Module):
    """Our Encoder and Decoder holding the weights of ``reference``."""

    def __init__(self, reference: nn.Transformer):
        super().__init__()
        self.encoder = Encoder.from_torch(reference.encoder)
        self.decoder = Decoder.from_torch(reference.decoder)

    def forward(self, src: Tensor, tgt: Tensor, src_pad: Tensor, tgt_pad: Tensor) -> Tensor:
        # Our convention: True = may attend.
        src_mask = ~src_pad[:, None, None, :]  # (B, 1, 1, S)
        causal = torch.ones(tgt.shape[1], tgt.shape[1], dtype=torch.bool, device=tgt.device).tril()
        tgt_mask = ~tgt_pad[:, None, None, :] & causal  # (B, 1, T, T)
        memory = self.encoder(src, src_mask)
        return self.decoder(tgt, memory, tgt_mask, src_mask)


class Theirs(nn.Module):
    def __init__(self, reference: nn.Transformer):
        super().__init__()
        self.model = reference

    def forward(self, src: Tensor, tgt: Tensor, src_pad: Tensor, tgt_pad: Tensor) -> Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(
            tgt.shape[1], device=tgt.device, dtype=torch.bool
        )  # True = not allowed
        return self.model(src, tgt, tgt_mask=causal, src_key_padding_mask=src_pad,
                          tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad,
                          tgt_is_causal=True)


def step(model: nn.Module, inputs, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.zero_grad(set_to_none=True)
    loss = model(*inputs).sum()
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(config, device: str, dropout: float, warmup: int, repeats: int) -> dict:
    name, d_model, heads, d_ff, layers, batch, src_len, tgt_len = config
    torch.manual_seed(0)
    reference = nn.Transformer(d_model, heads, layers, layers, d_ff, dropout=dropout,
                               batch_first=True, norm_first=False).to(device)
    theirs = Theirs(reference)
    ours = Ours(reference).to(device)
    inputs = make_inputs(batch, src_len, tgt_len, d_model, device, torch.Generator().manual_seed(1))

    # Same outputs before timing (eval mode: no dropout). PyTorch's eval fast path may zero the
    # outputs at padded query positions, so compare only real (non-padded) target positions.
    ours.eval()
    theirs.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nested tensors.*")  # PyTorch's fast path
        a, b = ours(*inputs), theirs(*inputs)
    real = ~inputs[3]
    max_diff = (a - b)[real].abs().max().item()
    tolerance = 1e-4 if device == "cpu" else 1e-2  # TF32 / fused kernels on GPUs
    if max_diff > tolerance:
        raise SystemExit(f"{name}: outputs differ by {max_diff:.2e}; not timing")
    ours.train()
    theirs.train()

    times = {"ours": [], "torch": []}
    for i in range(warmup + repeats):
        for key, model in (("ours", ours), ("torch", theirs)):
            t = step(model, inputs, device)
            if i >= warmup:
                times[key].append(t)
    ours_ms = statistics.median(times["ours"]) * 1e3
    torch_ms = statistics.median(times["torch"]) * 1e3
    return dict(name=name, shape=f"D={d_model} H={heads} L={layers}+{layers} B={batch} "
                f"S={src_len} T={tgt_len}", ours=ours_ms, torch=torch_ms,
                ratio=ours_ms / torch_ms, diff=max_diff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="dropout for both models (they are timed in train mode)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per model (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"dropout {args.dropout}, train mode, forward+backward, median of {args.repeats} "
          f"interleaved steps after {args.warmup} warm-up")
    header = f"{'config':<11} {'shape':<42} {'ours ms':>9} {'torch ms':>9} {'ours/torch':>10} {'max|diff|':>10}"
    print(header)
    print("-" * len(header))
    for config in CONFIGS:
        r = run(config, args.device, args.dropout, args.warmup, args.repeats)
        print(f"{r['name']:<11} {r['shape']:<42} {r['ours']:>9.2f} {r['torch']:>9.2f} "
              f"{r['ratio']:>10.3f} {r['diff']:>10.1e}")


if __name__ == "__main__":
    main()

"""Training throughput of the package's Transformer on this machine, for chapters 7 and 10.

    python scripts/throughput.py --device cuda --out book/data/throughput_cuda.json
    python scripts/throughput.py --device cpu  --out book/data/throughput_cpu.json
    python scripts/throughput.py --model base --device cuda --out book/data/throughput_base_cuda.json

``--model``: ``wide`` (256 wide, 4+4 layers: chapter 7's table), ``date`` (chapter 7's date
model) or ``base`` (the paper's base model, 512 wide, 6+6 layers, on the date data). Each row
also gives MFU (the step's matmul FLOPs from :mod:`solutions.flops` over the device's peak for
the dtype: the datasheet table on a GPU, a measured matmul on a CPU) and peak memory (CUDA's
allocator peak; on a CPU, the activations kept for backward). The JSON records the device, the
torch version, the command and the date.

One training step = forward, label-smoothed loss, backward, Adam step, on batches of the date
task. Each configuration (float32 or bfloat16 autocast; PyTorch's fused attention or the
explicit matmul-softmax-matmul path that keeps the weights; eager or torch.compile) is timed in
the same run, after warm-up steps, with the device synchronised; the table gives target tokens
per second and the speed-up over float32 eager with explicit attention. Results are written
after every configuration, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

from solutions import Transformer
from solutions.data import batches_by_length, date_task, date_tokenizers, encode_date_pairs
from solutions.flops import ModelShape, measured_matmul_peak, peak_flops, training_flops
from solutions.memory import SavedActivations, cuda_peak_bytes
from solutions.training import label_smoothed_cross_entropy

MODELS = {
    "wide": dict(d_model=256, num_heads=8, num_encoder_layers=4, num_decoder_layers=4, d_ff=1024),
    "date": dict(d_model=128, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, d_ff=256),
    "base": dict(d_model=512, num_heads=8, num_encoder_layers=6, num_decoder_layers=6, d_ff=2048),
}
MODEL = "wide"


def make_model(src_vocab: int, tgt_vocab: int, device: str) -> Transformer:
    torch.manual_seed(0)
    return Transformer(src_vocab, tgt_vocab, **MODELS[MODEL], dropout=0.1, max_len=64).to(device)


def measure(device: str, dtype: str, attention: str, compiled: bool, batches, vocab,
            steps: int, warmup: int) -> dict:
    model = make_model(*vocab, device)
    model.keep_attention_weights(attention == "explicit")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    forward = torch.compile(model) if compiled else model
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16,
                              enabled=dtype == "bfloat16")

    def step(batch) -> None:
        with autocast:
            logits = forward(batch.src, batch.tgt_in)
            loss = label_smoothed_cross_entropy(logits.float(), batch.tgt_out, 0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    start = time.perf_counter()
    for i in range(warmup):
        step(batches[i % len(batches)])
    sync()
    warmup_s = time.perf_counter() - start
    tokens = flops = 0
    shape = ModelShape.of(model)
    start = time.perf_counter()
    for i in range(steps):
        batch = batches[(warmup + i) % len(batches)]
        step(batch)
        tokens += batch.num_tokens
        flops += training_flops(shape, *batch.src.shape, batch.tgt_in.shape[1])
    sync()
    elapsed = time.perf_counter() - start
    batch = batches[0]
    if device == "cuda":
        memory = cuda_peak_bytes(lambda: step(batch))
    else:  # the activations one step keeps for backward
        with SavedActivations() as saved, autocast:
            forward(batch.src, batch.tgt_in).float().sum()
        memory = saved.bytes
    return {"dtype": dtype, "attention": attention, "compile": compiled,
            "tokens_per_s": tokens / elapsed, "ms_per_step": 1000 * elapsed / steps,
            "flops_per_s": flops / elapsed, "peak_memory_bytes": memory,
            "warmup_s": warmup_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", choices=sorted(MODELS), default="wide")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--only", default=None, help="e.g. bfloat16:fused: just that config")
    parser.add_argument("--no-cudnn-attention", action="store_true",
                        help="keep PyTorch's cuDNN attention kernel out (it rebuilds its plan for "
                             "every new sequence length, which batching by length produces)")
    args = parser.parse_args()
    global MODEL
    MODEL = args.model
    cuda = args.device == "cuda"
    if args.no_cudnn_attention:
        torch.backends.cuda.enable_cudnn_sdp(False)
    steps = args.steps or (30 if cuda else 5)
    batch_size = args.batch_size or (512 if cuda else 64)
    src_tok, tgt_tok = date_tokenizers()
    pairs = encode_date_pairs(date_task(batch_size * (steps + 8), seed=0), src_tok, tgt_tok)
    batches = [b.to(args.device) for b in batches_by_length(pairs, batch_size, seed=0)]
    configs = [("float32", "explicit", False), ("float32", "fused", False),
               ("bfloat16", "explicit", False), ("bfloat16", "fused", False)]
    if not args.no_compile:
        configs.append(("bfloat16", "fused", True))
    if args.only:
        configs = [c for c in configs if f"{c[0]}:{c[1]}" == args.only and not c[2]]
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or "CPU"
    cpu_peak = None if cuda else measured_matmul_peak()
    result = {"device": device_name, "torch": torch.__version__, "batch_size": batch_size,
              "model": args.model, "model_config": MODELS[args.model],
              "command": " ".join(["python", *sys.argv]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "cpu_matmul_peak_flops": cpu_peak,
              "cudnn_attention": not args.no_cudnn_attention,
              "steps": steps, "threads": torch.get_num_threads(), "rows": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for dtype, attention, compiled in configs:
        row = measure(args.device, dtype, attention, compiled, batches,
                      (src_tok.vocab_size, tgt_tok.vocab_size), steps, warmup=3)
        peak = (peak_flops(device_name, {"float32": "fp32", "bfloat16": "bf16"}[dtype])
                if cuda else cpu_peak)
        row["peak_flops"] = peak
        row["mfu"] = row["flops_per_s"] / peak if peak else None
        result["rows"].append(row)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"{dtype:>9} {attention:>9} compile={compiled!s:<5} "
              f"{row['tokens_per_s']:>12,.0f} tokens/s {row['ms_per_step']:8.1f} ms/step "
              f"MFU {100 * row['mfu'] if row['mfu'] else float('nan'):5.1f}% "
              f"memory {row['peak_memory_bytes'] / 2**20:8.1f} MiB "
              f"(warm-up {row['warmup_s']:.1f} s)", flush=True)


if __name__ == "__main__":
    main()

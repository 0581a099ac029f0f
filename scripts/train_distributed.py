"""Data-parallel training of the date model with torchrun: DDP or FSDP2, on CPUs or GPUs.

One process (no torchrun)::

    python scripts/train_distributed.py --steps 200

Two processes on this machine (gloo on CPUs, NCCL on GPUs)::

    torchrun --standalone --nproc-per-node=2 scripts/train_distributed.py --strategy ddp

Two machines (run one line on each; HOST:PORT is the first machine's address)::

    torchrun --nnodes=2 --node-rank=0 --nproc-per-node=8 --rdzv-backend=c10d \\
        --rdzv-endpoint=HOST:PORT scripts/train_distributed.py --strategy fsdp
    torchrun --nnodes=2 --node-rank=1 --nproc-per-node=8 --rdzv-backend=c10d \\
        --rdzv-endpoint=HOST:PORT scripts/train_distributed.py --strategy fsdp

``--batch-size`` is the global batch: whatever the number of processes, step k trains on the
same rows with the same learning rate, so the result does not depend on the launch (up to
float rounding). ``--save DIR --save-at K`` writes a distributed checkpoint after step K;
``--resume DIR`` continues from one, with any number of processes.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from solutions.data import batches_by_length, date_task, date_tokenizers, encode_date_pairs
from solutions.distributed import (
    DistributedInfo,
    distributed_train_step,
    full_state_dict,
    init_distributed,
    load_distributed_checkpoint,
    save_distributed_checkpoint,
    wrap_model,
)
from solutions.model import Transformer
from solutions.training import exact_match, make_optimizer, warmup_inverse_sqrt_schedule


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", choices=("ddp", "fsdp", "none"), default="ddp")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch (pairs)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                        help="sgd: for exact comparisons (Adam's first update is lr * sign(g), "
                             "so float rounding on a gradient that should be 0 flips it)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--save", type=Path, default=None, help="checkpoint folder to write")
    parser.add_argument("--save-at", type=int, default=None, help="after this step (default: end)")
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint folder to load")
    parser.add_argument("--params-out", type=Path, default=None,
                        help="rank 0 writes the final parameters here (torch.save)")
    parser.add_argument("--report", type=Path, default=None, help="rank 0 writes a JSON summary")
    parser.add_argument("--eval", type=int, default=0, help="held-out dates to score at the end")
    return parser.parse_args(argv)


def global_batches(args: argparse.Namespace):
    """The same list of global batches in every process: step k uses batch k."""
    src_tok, tgt_tok = date_tokenizers()
    pairs = encode_date_pairs(date_task(args.steps * args.batch_size, seed=args.seed), src_tok,
                              tgt_tok)
    batches = batches_by_length(pairs, args.batch_size, shuffle=True, seed=args.seed)
    return [batches[k % len(batches)] for k in range(args.steps)], (src_tok, tgt_tok)


def build_model(args: argparse.Namespace, vocab: tuple[int, int]) -> Transformer:
    torch.manual_seed(args.seed)  # the same initial weights in every process
    return Transformer(*vocab, d_model=args.d_model, num_heads=4,
                       num_encoder_layers=args.layers, num_decoder_layers=args.layers,
                       d_ff=2 * args.d_model, dropout=args.dropout, max_len=64)


def train(args: argparse.Namespace, info: DistributedInfo) -> tuple[torch.nn.Module, dict]:
    """Train (or resume) as ``args`` says; returns the wrapped model and a summary."""
    torch.set_num_threads(args.threads)
    batches, (src_tok, tgt_tok) = global_batches(args)
    model = wrap_model(build_model(args, (src_tok.vocab_size, tgt_tok.vocab_size)),
                       args.strategy, info)
    optimizer = (make_optimizer(model) if args.optimizer == "adam"
                 else torch.optim.SGD(model.parameters(), lr=1.0))  # lr: the schedule's
    scheduler = warmup_inverse_sqrt_schedule(optimizer, args.d_model, args.warmup)
    step = 0
    if args.resume is not None:
        step = load_distributed_checkpoint(args.resume, model, optimizer, scheduler)
    torch.manual_seed(args.seed + 1000 * info.rank + step)  # dropout differs between processes
    losses = []
    start = time.perf_counter()
    while step < args.steps:
        losses.append(distributed_train_step(model, batches[step], optimizer, info, scheduler))
        step += 1
        if args.save is not None and step == (args.save_at or args.steps):
            save_distributed_checkpoint(args.save, model, optimizer, scheduler, step)
    seconds = time.perf_counter() - start
    summary = {"world_size": info.world_size, "strategy": args.strategy, "steps": step,
               "losses": losses, "train_seconds": seconds,
               "global_batch": args.batch_size, "device": str(info.device)}
    return model, summary


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Our model returns the output layer's result, a view; we never modify it in place.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view")
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    info = init_distributed()
    model, summary = train(args, info)
    state = full_state_dict(model)  # a collective under FSDP: every process takes part
    # DDP's reducer and FSDP's state hold the process group: free them while the group exists
    # (freed only at exit, after destroy_process_group, they hung a process about 1 run in 10).
    del model
    gc.collect()
    if info.is_main:
        if args.eval:
            src_tok, tgt_tok = date_tokenizers()
            plain = build_model(args, (src_tok.vocab_size, tgt_tok.vocab_size))
            plain.load_state_dict(state)
            test = encode_date_pairs(date_task(args.eval, seed=args.seed + 1, split="test"),
                                     src_tok, tgt_tok)
            summary["test_exact_match"] = exact_match(plain, test, max_len=12)
        if args.params_out is not None:
            torch.save(state, args.params_out)
        if args.report is not None:
            args.report.write_text(json.dumps(summary, indent=1) + "\n")
        losses = summary["losses"]
        if losses:
            print(f"{summary['world_size']} process(es), {args.strategy}: steps {summary['steps']}"
                  f", loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
                  f"{summary['train_seconds']:.1f} s"
                  + (f", exact match {summary['test_exact_match']:.3f}"
                     if "test_exact_match" in summary else ""), flush=True)
    if dist.is_initialized():
        dist.barrier()  # the main process has evaluated and saved
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

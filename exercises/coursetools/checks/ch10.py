"""Checkers for chapter 10: counting a forward pass's FLOPs, a gradient-accumulation step,
and averaging gradients across processes by hand.

Oracles: ``torch.utils.flop_counter.FlopCounterMode`` counting ``nn.Transformer`` (with the
math attention kernel, whose matrix products it sees); PyTorch's own big-batch step; the mean
of the processes' gradients. The all-reduce exercise runs its processes as threads of one
process (PyTorch's threaded process group, the one its own distributed tests use): the
grader's sandbox has no network, not even loopback, so gloo could not connect processes there.
"""

from __future__ import annotations

import threading
import types
import warnings

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .ch07 import ToyModel, _batch, oracle_smoothed_loss, oracle_train_step
from .core import Checker, Missing, close_to, randint, randn, register

# --- forward_flops -------------------------------------------------------------------------------


def flop_counter_forward(case: dict) -> int:
    """FLOPs of nn.Transformer + an output layer on random inputs, counted by PyTorch."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    d, heads = case["d_model"], case["heads"]
    with warnings.catch_warnings():  # "enable_nested_tensor is True, but ..."
        warnings.simplefilter("ignore")
        transformer = nn.Transformer(d, heads, case["num_encoder_layers"],
                                     case["num_decoder_layers"], case["d_ff"], dropout=0.0,
                                     batch_first=True)
    head = nn.Linear(d, case["tgt_vocab_size"])
    src = torch.zeros(case["batch"], case["src_len"], d)
    tgt = torch.zeros(case["batch"], case["tgt_len"], d)
    causal = torch.ones(case["tgt_len"], case["tgt_len"], dtype=torch.bool).triu(1)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, sdpa_kernel(SDPBackend.MATH):
        head(transformer(src, tgt, tgt_mask=causal))
    return counter.get_total_flops()


def as_count(value) -> object:
    """An int (or a whole float, or a one-element tensor) as an int64 tensor; other numbers as
    float64 (which then fails the dtype check with a clear message)."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return torch.tensor(value, dtype=torch.int64)
    if isinstance(value, float):
        return (torch.tensor(int(value), dtype=torch.int64) if value.is_integer()
                else torch.tensor(value, dtype=torch.float64))
    return value


SHAPE_KEYS = ("tgt_vocab_size", "d_model", "d_ff", "num_encoder_layers", "num_decoder_layers")


@register
class ForwardFlopsChecker(Checker):
    name = "forward_flops"
    forbidden = ("torch.utils.flop_counter.FlopCounterMode",)

    def cases(self, gen, hidden):
        def case(requirement, vocab, d, heads, ff, enc, dec, batch, s, t):
            return {"requirement": requirement, "tgt_vocab_size": vocab, "d_model": d,
                    "heads": heads, "d_ff": ff, "num_encoder_layers": enc,
                    "num_decoder_layers": dec, "batch": batch, "src_len": s, "tgt_len": t}

        cases = [
            case("projections and feed-forward of both stacks", 11, 8, 2, 16, 1, 1, 1, 1, 1),
            case("attention scores and weighted sums grow with lengths squared",
                 11, 8, 2, 16, 1, 1, 2, 6, 4),
            case("cross-attention: K and V over source tokens, Q over target tokens",
                 7, 16, 4, 24, 2, 3, 3, 9, 2),
            case("the output layer and every layer of each stack", 50, 12, 3, 20, 3, 1, 2, 3, 5),
        ]
        if hidden:
            cases += [
                case("projections and feed-forward of both stacks", randint(gen, 5, 40),
                     16, 4, randint(gen, 8, 64), randint(gen, 1, 4), randint(gen, 1, 4),
                     randint(gen, 1, 4), randint(gen, 1, 12), randint(gen, 1, 12)),
                case("cross-attention: K and V over source tokens, Q over target tokens",
                     9, 24, 2, 32, 1, 2, 2, randint(gen, 10, 20), randint(gen, 1, 4)),
                case("the output layer and every layer of each stack", 97, 8, 1, 8, 1, 4, 1,
                     5, 7),
            ]
        return cases

    def describe(self, case):
        return (f"d_model={case['d_model']}, d_ff={case['d_ff']}, "
                f"{case['num_encoder_layers']}+{case['num_decoder_layers']} layers, "
                f"vocab {case['tgt_vocab_size']}, batch {case['batch']}, "
                f"S={case['src_len']}, T={case['tgt_len']} [{case['requirement']}]")

    def run(self, obj, case):
        shape = types.SimpleNamespace(**{k: case[k] for k in SHAPE_KEYS})
        return {"flops": as_count(obj(shape, case["batch"], case["src_len"], case["tgt_len"]))}

    def expected(self, case):
        return {"flops": torch.tensor(flop_counter_forward(case), dtype=torch.int64)}

    def mistakes(self, case):
        exp = flop_counter_forward(case)
        return [("this is the forward pass only: do not multiply by 3 (that is training).",
                 {"flops": torch.tensor(3 * exp, dtype=torch.int64)}),
                ("a multiply-add is 2 FLOPs: an (M, K) @ (K, N) product costs 2·M·K·N.",
                 {"flops": torch.tensor(exp // 2, dtype=torch.int64)})]

    def symptom(self, case, got):
        if not isinstance(got.get("flops"), Tensor):
            return "return the count as a Python int."
        return None

    @property
    def oracle(self):
        def forward_flops(shape, batch, src_len, tgt_len):
            case = {k: getattr(shape, k) for k in SHAPE_KEYS}
            return flop_counter_forward({**case, "heads": 1, "batch": batch,
                                         "src_len": src_len, "tgt_len": tgt_len})
        return forward_flops


# --- accumulated_gradients_step -------------------------------------------------------------------


def split_rows(batch, micro_batches: int) -> list:
    parts = zip(*(t.tensor_split(micro_batches) for t in (batch.src, batch.tgt_in,
                                                         batch.tgt_out)))
    return [types.SimpleNamespace(src=s, tgt_in=i, tgt_out=o, num_tokens=int((o != 0).sum()))
            for s, i, o in parts]


@register
class AccumulationChecker(Checker):
    name = "accumulated_gradients_step"
    uses = ("label_smoothed_cross_entropy",)
    forbidden = ()
    atol = 1e-6  # float32: the sum over micro-batches rounds differently from the big batch
    rtol = 1e-5

    def cases(self, gen, hidden):
        def case(requirement, batch, micro, length, clip, scheduler, uneven, smoothing=0.1):
            vocab, width = 9, 8
            model = {f"w.{k}": randn(gen, *v.shape, scale=0.5)
                     for k, v in ToyModel(vocab, width).state_dict().items()}
            c = {"requirement": requirement, **model, "vocab": vocab, "width": width,
                 "micro": micro, "clip": clip, "scheduler": scheduler, "lr": 0.1,
                 "smoothing": smoothing}
            for i in (1, 2):  # two steps: gradients must not pile up from one to the next
                c[f"src{i}"] = torch.randint(1, vocab, (batch, length), generator=gen)
                target = torch.randint(1, vocab, (batch, length + 1), generator=gen)
                if uneven:  # the first rows almost all padding: micro-batches of unequal weight
                    target[: batch // 2, 2:] = 0
                c[f"tgt_in{i}"], c[f"tgt_out{i}"] = target[:, :-1], target[:, 1:]
            return c

        cases = [
            case("equals the big-batch step", 4, 2, 5, -1.0, False, False),
            case("equals the big-batch step", 4, 2, 3, -1.0, False, False, smoothing=0.0),
            case("micro-batches weighted by their real tokens", 6, 3, 5, -1.0, False, True),
            case("one optimiser step, clipping the summed gradient, then the scheduler",
                 5, 2, 4, 0.05, True, True),
        ]
        if hidden:
            cases += [
                case("equals the big-batch step", 7, 7, 3, -1.0, True, False),
                case("micro-batches weighted by their real tokens", 6, 2, 4, -1.0, False, True,
                     smoothing=0.3),
                case("micro-batches weighted by their real tokens", 8, 4, 6, -1.0, False, True),
                case("one optimiser step, clipping the summed gradient, then the scheduler",
                     9, 2, 5, 0.02, True, True),
            ]
        return cases

    def describe(self, case):
        clip = "no clipping" if case["clip"] < 0 else f"grad_clip={case['clip']}"
        return (f"two steps on a toy model, batch of {case['src1'].shape[0]} in "
                f"{case['micro']} micro-batches, smoothing={case['smoothing']}, {clip}, "
                f"scheduler={'yes' if case['scheduler'] else 'no'} [{case['requirement']}]")

    def _run(self, step, case, micro: bool):
        model = ToyModel(case["vocab"], case["width"])
        model.load_state_dict({k[2:]: v for k, v in case.items() if k.startswith("w.")})
        optimizer = torch.optim.SGD(model.parameters(), lr=case["lr"], momentum=0.9)
        scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 / (i + 1))
                     if case["scheduler"] else None)
        clip = None if case["clip"] < 0 else case["clip"]
        extra = (case["micro"],) if micro else ()
        losses = [step(model, _batch(case, i), optimizer, *extra, scheduler=scheduler,
                       smoothing=case["smoothing"], grad_clip=clip) for i in (1, 2)]
        floats = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in losses)
        returned = ", ".join(sorted({type(v).__name__ for v in losses}))
        grad = model.out.weight.grad
        return {"losses": torch.tensor([float(v) for v in losses], dtype=torch.float64)
                if floats else Missing("return the whole batch's loss as a Python float "
                                       f"(your function returned {returned})"),
                "out.weight": model.out.weight.detach().clone(),
                "tgt_embed.weight": model.tgt_embed.weight.detach().clone(),
                "out.weight.grad": grad.detach().clone() if grad is not None
                else Missing("no gradient after the step: the step leaves the whole batch's "
                             "gradient in .grad, as train_step does"),
                "lr": torch.tensor(optimizer.param_groups[0]["lr"], dtype=torch.float64)}

    def run(self, obj, case):
        return self._run(obj, case, micro=True)

    def expected(self, case):
        return self._run(oracle_train_step, case, micro=False)

    def mistakes(self, case):
        def mean_of_means(model, batch, optimizer, micro_batches, scheduler=None, smoothing=0.1,
                          grad_clip=1.0):
            optimizer.zero_grad()
            total = 0.0
            for part in split_rows(batch, micro_batches):
                loss = oracle_smoothed_loss(model(part.src, part.tgt_in), part.tgt_out,
                                            smoothing) / micro_batches
                loss.backward()
                total += loss.item()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            return total

        def summed_means(model, batch, optimizer, micro_batches, scheduler=None, smoothing=0.1,
                         grad_clip=1.0):
            optimizer.zero_grad()
            for part in split_rows(batch, micro_batches):
                oracle_smoothed_loss(model(part.src, part.tgt_in), part.tgt_out,
                                     smoothing).backward()
            optimizer.step()
            return 0.0

        found = []
        if case["clip"] < 0 and not case["scheduler"]:
            found.append(("each micro-batch's gradient is added into .grad: scale its loss by "
                          "its share of the batch, or the step is micro_batches times too big.",
                          {"out.weight": self._run(summed_means, case, True)["out.weight"]}))
        found.append(("a plain average of the micro-batches' mean losses weights a micro-batch "
                      "with few real tokens too much: weight each by its real tokens / the "
                      "whole batch's real tokens.",
                      {"out.weight": self._run(mean_of_means, case, True)["out.weight"]}))
        right = self.expected(case)["out.weight"]  # a mistake that changes nothing here
        return [(hint, outputs) for hint, outputs in found  # must not name another fault
                if not close_to(outputs["out.weight"], right, self.atol)]

    @property
    def oracle(self):
        def accumulated_gradients_step(model, batch, optimizer, micro_batches, scheduler=None,
                                       smoothing=0.1, grad_clip=1.0, forward=None):
            return oracle_train_step(model, batch, optimizer, scheduler, smoothing, grad_clip,
                                     forward=forward)
        return accumulated_gradients_step


# --- average_gradients ----------------------------------------------------------------------------


def in_threaded_world(world_size: int, fn, timeout: float = 30.0) -> list:
    """Run ``fn(rank)`` in ``world_size`` threads, each a rank of a process group (PyTorch's
    threaded backend: collectives are real, the processes are threads); returns the results."""
    from torch.testing._internal.distributed.multi_threaded_pg import (
        ProcessLocalGroup,
        _install_threaded_pg,
        _uninstall_threaded_pg,
    )

    ProcessLocalGroup.reset()  # a crash in an earlier run leaves its termination event set
    torch._C._distributed_c10d._set_thread_isolation_mode(True)
    _install_threaded_pg()
    store = dist.HashStore()
    results: list = [None] * world_size
    errors: list[BaseException] = []

    def worker(rank: int) -> None:
        dist.init_process_group(backend="threaded", rank=rank, world_size=world_size,
                                store=store)
        try:
            results[rank] = fn(rank)
        except BaseException as error:  # noqa: BLE001 - reported below, from the main thread
            errors.append(error)
            ProcessLocalGroup.exception_handle(error)  # wake the other ranks up
        finally:
            dist.destroy_process_group()

    threads = [threading.Thread(target=worker, args=(rank,), daemon=True)
               for rank in range(world_size)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout)
        if any(thread.is_alive() for thread in threads):
            raise TimeoutError(f"the {world_size} ranks did not finish within {timeout:.0f} s: "
                               "does every rank make the same collective calls?")
    finally:
        _uninstall_threaded_pg()
        torch._C._distributed_c10d._set_thread_isolation_mode(False)
    if errors:
        raise errors[0]
    return results


class TwoLayers(nn.Module):
    def __init__(self, width: int, frozen: bool):
        super().__init__()
        self.first = nn.Linear(width, width)
        self.second = nn.Linear(width, 3, bias=False)
        self.unused = nn.Parameter(torch.zeros(2))  # never gets a gradient
        if frozen:
            self.first.bias.requires_grad_(False)


@register
class AverageGradientsChecker(Checker):
    name = "average_gradients"
    forbidden = ("torch.nn.parallel.DistributedDataParallel",
                 "torch.distributed.fsdp.fully_shard", "torch.distributed.ReduceOp.AVG")

    def cases(self, gen, hidden):
        def case(requirement, world, width, frozen):
            c = {"requirement": requirement, "world": world, "width": width, "frozen": frozen}
            for rank in range(world):  # each rank's gradients
                c[f"g{rank}.first.weight"] = randn(gen, width, width)
                c[f"g{rank}.first.bias"] = randn(gen, width)
                c[f"g{rank}.second.weight"] = randn(gen, 3, width)
            return c

        cases = [
            case("every rank ends with the mean of the ranks' gradients", 2, 3, False),
            case("divides by the world size, whatever it is", 3, 2, False),
            case("parameters without a gradient are left alone", 2, 4, True),
        ]
        if hidden:
            cases += [
                case("every rank ends with the mean of the ranks' gradients", 2,
                     randint(gen, 2, 6), False),
                case("divides by the world size, whatever it is", 4, 3, False),
                case("parameters without a gradient are left alone", 3, 2, True),
            ]
        return cases

    def describe(self, case):
        frozen = ", some parameters without gradients" if case["frozen"] else ""
        return f"{case['world']} ranks, width {case['width']}{frozen} [{case['requirement']}]"

    def _model(self, case, rank):
        model = TwoLayers(case["width"], case["frozen"])
        for name, p in model.named_parameters():
            key = f"g{rank}.{name}"
            if key in case and p.requires_grad:
                p.grad = case[key].clone()
        return model

    def run(self, obj, case):
        def on_rank(rank):
            model = self._model(case, rank)
            obj(model)
            return {name: p.grad for name, p in model.named_parameters()}

        got = {}
        for rank, grads in enumerate(in_threaded_world(case["world"], on_rank)):
            for name, grad in grads.items():
                if self._has_grad(case, name):
                    got[f"rank{rank}.{name}"] = grad if grad is not None else "no gradient"
                else:
                    got[f"rank{rank}.{name} has a gradient"] = torch.tensor(grad is not None)
        return got

    @staticmethod
    def _has_grad(case, name):
        return name in ("first.weight", "second.weight") or name == "first.bias" and not (
            case["frozen"])

    def expected(self, case):
        out = {}
        for name in ("first.weight", "first.bias", "second.weight", "unused"):
            for rank in range(case["world"]):
                if self._has_grad(case, name):
                    out[f"rank{rank}.{name}"] = torch.stack(
                        [case[f"g{r}.{name}"] for r in range(case["world"])]).mean(0)
                else:
                    out[f"rank{rank}.{name} has a gradient"] = torch.tensor(False)
        return out

    def mistakes(self, case):
        name = "second.weight"
        total = torch.stack([case[f"g{r}.{name}"] for r in range(case["world"])]).sum(0)
        found = [("all_reduce sums (ReduceOp.SUM): divide by the world size.",
                  {f"rank0.{name}": total})]
        if case["world"] != 2:
            found.append(("divide by the number of processes in the group, not by 2.",
                          {f"rank0.{name}": total / 2}))
        return found

    def symptom(self, case, got):
        if any(k.endswith("has a gradient") and isinstance(v, Tensor) and bool(v)
               for k, v in got.items()):
            return "skip parameters whose .grad is None (do not create gradients)."
        return None

    @property
    def oracle(self):
        def average_gradients(model):
            world_size = dist.get_world_size()
            for p in model.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world_size
        return average_gradients

"""The sandbox side of grading: call the student's code on cases, save plain arrays.

This module runs *inside* the sandbox, after the student's cells, in the student's namespace.
It decides nothing: it loads the cases the judge wrote (``cases/<n>.npz`` + ``cases.json``),
runs ``Checker.run`` on each (with the other exercises swapped for PyTorch oracles), and saves
what came back as numpy arrays (``out/<n>.npz``, written with ``allow_pickle=False``) plus a
JSON note per output saying what it was. The judge (:mod:`coursetools.grading`), a process that
never runs student code, compares those arrays with PyTorch's answers.

Serialising values without pickle is shared by both sides: :func:`save_values` and
:func:`load_values`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Taken before any student code can replace them (the harness module is imported first).
_Tensor = torch.Tensor
_type = type
_isinstance = isinstance
_savez = np.savez
_asarray = np.asarray

NUMPY_DTYPES = {
    torch.bool: "bool", torch.int64: "int64", torch.int32: "int32", torch.float32: "float32",
    torch.float64: "float64", torch.float16: "float16", torch.uint8: "uint8",
    torch.int16: "int16", torch.int8: "int8",
}
TORCH_DTYPES = {name: dtype for dtype, name in NUMPY_DTYPES.items()} | {
    "bfloat16": torch.bfloat16}

#: Largest total (uncompressed) size of one saved npz that :func:`load_values` will read. The
#: harness writes uncompressed npz files under the sandbox's file size limit (64 MiB by
#: default); a far bigger declared size is a forged file (e.g. a compressed "zip bomb" written
#: by student code), which would otherwise be inflated in the judge's unsandboxed memory.
MAX_LOAD_BYTES = 256 << 20


def save_values(values: dict[str, Any], stem: Path) -> None:
    """Save a dict of tensors / scalars / strings as ``stem.npz`` + ``stem.json``.

    Tensors keep their exact torch dtype (bfloat16 travels as float32, exactly). Anything else
    is recorded by its type's name only, so that the judge can say what came back.
    """
    arrays: dict[str, np.ndarray] = {}
    notes: dict[str, dict] = {}
    for i, (key, value) in enumerate(values.items()):
        slot = f"a{i}"
        if _type(value) is _Tensor or _type(value) is torch.nn.Parameter:
            tensor = value.detach().cpu()
            dtype = str(tensor.dtype).replace("torch.", "")
            if tensor.dtype == torch.bfloat16:
                tensor = tensor.float()
            if tensor.dtype not in NUMPY_DTYPES:
                notes[key] = {"kind": "other", "type": f"tensor of dtype {dtype}"}
                continue
            arrays[slot] = tensor.resolve_conj().resolve_neg().contiguous().numpy()
            notes[key] = {"kind": "tensor", "slot": slot, "dtype": dtype}
        elif _isinstance(value, bool | int | float | str) and _type(value) in (bool, int, float, str):
            arrays[slot] = _asarray(value)
            notes[key] = {"kind": _type(value).__name__, "slot": slot}
        else:
            notes[key] = {"kind": "other", "type": _type(value).__name__}
    with open(f"{stem}.npz", "wb") as f:
        _savez(f, **arrays)
    Path(f"{stem}.json").write_text(json.dumps(notes))


class Foreign:
    """Stands for a returned value that was not a tensor (only its type name travels)."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name}>"


def load_values(stem: Path) -> dict[str, Any]:
    """Inverse of :func:`save_values` (never unpickles anything)."""
    notes = json.loads(Path(f"{stem}.json").read_text())
    values: dict[str, Any] = {}
    with np.load(f"{stem}.npz", allow_pickle=False) as arrays:
        if sum(info.file_size for info in arrays.zip.infolist()) > MAX_LOAD_BYTES:
            raise ValueError(f"saved values over {MAX_LOAD_BYTES >> 20} MiB")
        for key, note in notes.items():
            kind = note["kind"]
            if kind == "tensor":
                tensor = torch.from_numpy(arrays[note["slot"]].copy())
                values[key] = tensor.to(TORCH_DTYPES[note["dtype"]])
            elif kind in ("bool", "int", "float", "str"):
                values[key] = {"bool": bool, "int": int, "float": float, "str": str}[kind](
                    arrays[note["slot"]].item())
            else:
                values[key] = Foreign(note["type"])
    return values


def run_exercises(namespace: dict, workdir: str, only: list[int] | None = None,
                  core=None) -> None:
    """Run every exercise listed in ``workdir/cases.json`` against the student's namespace.

    For exercise n and case c, the outputs go to ``workdir/out/n_c.npz`` + ``.json``, or a
    crash's type and message to ``workdir/out/n_c.error``. Empty marker files ``n.started`` and
    ``n.done`` let the judge tell which exercise was running if the sandbox had to be killed.
    ``core`` is the grader's private copy of ``checks.core`` (defaults to the importable one).
    """
    if core is None:
        from checks import core
    work = Path(workdir)
    manifest = json.loads((work / "cases.json").read_text())
    out = work / "out"
    out.mkdir(exist_ok=True)
    for n, entry in enumerate(manifest["exercises"]):
        if only is not None and n not in only:
            continue
        name = entry["name"]
        (out / f"{n}.started").touch()
        obj = namespace.get(name.split(".")[0])
        checker = core.CHECKERS[name]
        for c in range(entry["cases"]):
            case = load_values(work / "cases" / f"{n}_{c}")
            target = out / f"{n}_{c}"
            try:
                if obj is None:
                    raise NameError(f"{name.split('.')[0]} is not defined")
                with core.isolated(checker.uses, core.namespace_of(obj)):
                    got = core.run_case(checker, obj, case)
                if not _isinstance(got, dict):
                    raise TypeError("no outputs")
                save_values(got, target)
            except Exception as error:  # the student's code may raise anything
                message = f"{_type(error).__name__}: {error}"[:2000]
                Path(str(target) + ".error").write_text(message)
        (out / f"{n}.done").touch()

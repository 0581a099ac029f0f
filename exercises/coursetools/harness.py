"""The sandbox side of grading: call the student's code on cases, save plain arrays.

This module runs *inside* the sandbox, after the student's cells, in the student's process. It
decides nothing and nothing it writes is believed: it loads the cases the judge wrote
(``cases/<n>_<c>.npz``), runs ``Checker.run`` of the grader's payload package (which holds no
reference of the exercises being graded: :mod:`coursetools.payload`) on each, and saves what
came back as numpy arrays (``out/<n>_<c>.npz``, written without pickle). The judge
(:mod:`coursetools.grading`) reads the arrays themselves: their dtype and shape, never a label.

One value per npz member, named ``<kind>.<key>``:

* ``t.<key>``: a tensor as a numpy array of the same dtype;
* ``b.<key>``: a bfloat16 tensor as its raw 16-bit patterns (``uint16``; numpy has no bfloat16);
* ``m.<key>`` + ``md.<key>``: a tensor on the ``meta`` device (shapes only): its shape as an
  ``int64`` array and a 0-d array of its dtype;
* ``v.<key>``: a Python ``bool``/``int``/``float``/``str`` as a 0-d array;
* ``o.<key>``: anything else, as a 0-d ``int8`` code of its kind (:data:`OTHER_KINDS`).

Whatever these names claim, the worst a forged file can do is stand for a value the student's
code could have returned itself. A crash writes ``<n>_<c>.error`` holding one of a few fixed
words (:func:`error_code`), never the exception's text: the judge turns it into its own words.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Taken before any student code can replace them (the harness module is imported first).
_Tensor = torch.Tensor
_Parameter = torch.nn.Parameter
_type = type
_isinstance = isinstance
_asarray = np.asarray
_zeros = np.zeros
_savez = np.savez
_numpy = torch.Tensor.numpy

NUMPY_DTYPES = {
    torch.bool: np.bool_, torch.int64: np.int64, torch.int32: np.int32,
    torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16,
    torch.uint8: np.uint8, torch.int16: np.int16, torch.int8: np.int8,
}
TORCH_DTYPES = {np.dtype(v): k for k, v in NUMPY_DTYPES.items()}
#: What a non-tensor value was, in the judge's words.
OTHER_KINDS = {0: "another kind of object", 1: "a str", 2: "None", 3: "a tuple", 4: "a list",
               5: "a dict", 6: "a tensor of an unsupported dtype", 7: "a tensor subclass"}
#: Builtin exceptions whose *name* the judge may repeat (a student's class name could carry
#: anything, so other names become "an exception").
KNOWN_ERRORS = ("TypeError", "ValueError", "RuntimeError", "IndexError", "KeyError",
                "NameError", "AttributeError", "ZeroDivisionError", "AssertionError",
                "NotImplementedError", "RecursionError", "MemoryError", "OverflowError",
                "UnboundLocalError", "ImportError", "ModuleNotFoundError", "StopIteration")


def _other_code(value: Any) -> int:
    t = _type(value)
    if _isinstance(value, _Tensor):
        return 7
    return {str: 1, type(None): 2, tuple: 3, list: 4, dict: 5}.get(t, 0)


def save_values(values: dict[str, Any], path: Path | str) -> None:
    """Save a dict of tensors / scalars / strings as one npz file (no pickle)."""
    arrays: dict[str, np.ndarray] = {}
    for key, value in values.items():
        key = str(key)
        if (_type(value) is _Tensor or _type(value) is _Parameter) and value.is_meta:
            if value.dtype in NUMPY_DTYPES:
                arrays[f"m.{key}"] = _asarray(tuple(value.shape), dtype=np.int64)
                arrays[f"md.{key}"] = _zeros((), dtype=NUMPY_DTYPES[value.dtype])
            else:
                arrays[f"o.{key}"] = _asarray(6, dtype=np.int8)
        elif _type(value) is _Tensor or _type(value) is _Parameter:
            tensor = value.detach().cpu().resolve_conj().resolve_neg().contiguous()
            if tensor.dtype == torch.bfloat16:
                arrays[f"b.{key}"] = _numpy(tensor.view(torch.int16)).view(np.uint16)
            elif tensor.dtype in NUMPY_DTYPES:
                arrays[f"t.{key}"] = _numpy(tensor)
            else:
                arrays[f"o.{key}"] = _asarray(6, dtype=np.int8)
        elif _type(value) in (bool, int, float, str):
            arrays[f"v.{key}"] = _asarray(value)
        else:
            arrays[f"o.{key}"] = _asarray(_other_code(value), dtype=np.int8)
    with open(path, "wb") as f:
        _savez(f, **arrays)


def read_values(path: Path | str) -> dict[str, Any]:
    """Inverse of :func:`save_values` for trusted files (the cases the judge wrote)."""
    values: dict[str, Any] = {}
    with np.load(path, allow_pickle=False) as arrays:
        for member in arrays.files:
            kind, key = member.split(".", 1)
            array = arrays[member]
            if kind == "m":
                dtype = TORCH_DTYPES[arrays[f"md.{key}"].dtype]
                values[key] = torch.empty(tuple(int(n) for n in array), dtype=dtype,
                                          device="meta")
            elif kind == "t":
                values[key] = torch.from_numpy(array.copy())
            elif kind == "b":
                values[key] = torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
            elif kind == "v":
                values[key] = array.item()
    return values


class NotTensor:
    """A returned value that was not a tensor: only its kind, in the judge's words."""

    def __init__(self, words: str):
        self.words = words

    def __repr__(self) -> str:
        return f"<{self.words}>"


class Header:
    """Shape and dtype of a saved tensor, read from its npy header (data not loaded)."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype | None, numpy_dtype: str):
        self.shape, self.dtype, self.numpy_dtype = shape, dtype, numpy_dtype


def _read_member(archive: zipfile.ZipFile, member: str, max_bytes: int,
                 want_shape: tuple[int, ...] | None) -> Any:
    """One member of an untrusted npz: a Header when its shape is not ``want_shape`` (the
    data is never read), else the tensor; at most ``max_bytes`` of data are read."""
    kind = member.split(".", 1)[0]
    info = archive.getinfo(member)
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=1024)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=1024)
        else:
            raise ValueError("not an npy array")
        if dtype.hasobject or dtype.fields is not None or fortran:
            raise ValueError("not a plain array")
        shape = tuple(int(s) for s in shape)
        if kind == "o":
            code = int(np.frombuffer(f.read(1), dtype=np.int8)[0]) if dtype == np.int8 else 0
            return NotTensor(OTHER_KINDS.get(code, OTHER_KINDS[0]))
        if kind == "v":
            words = {"b": "a bool", "i": "an int", "f": "a float", "U": "a str"}
            return NotTensor(words.get(dtype.kind, OTHER_KINDS[0]))
        if kind == "b":
            torch_dtype = torch.bfloat16 if dtype == np.uint16 else None
        else:
            torch_dtype = TORCH_DTYPES.get(dtype.newbyteorder("=") if dtype.byteorder != "|"
                                           else dtype)
        if shape != want_shape or torch_dtype is None:
            return Header(shape, torch_dtype, str(dtype))
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if size > max_bytes:
            raise ValueError("saved values too large")
        data = f.read(size)
        if len(data) != size:
            raise ValueError("truncated array")
        array = np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
        if kind == "b":
            return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
        return torch.from_numpy(array.copy())


def _meta_member(archive: zipfile.ZipFile, key: str, names: set[str]) -> Any:
    """A meta tensor from its shape and dtype members (both tiny), or a Header if malformed."""
    if f"md.{key}.npy" not in names:
        return NotTensor(OTHER_KINDS[0])
    shape = _small_array(archive, f"m.{key}.npy", 64 * 8)
    kind = _small_array(archive, f"md.{key}.npy", 64)
    dtype = TORCH_DTYPES.get(kind.dtype) if kind is not None else None
    if shape is None or shape.dtype != np.int64 or shape.ndim != 1 or dtype is None:
        return NotTensor(OTHER_KINDS[0])
    if (shape < 0).any():
        return NotTensor(OTHER_KINDS[0])
    return torch.empty(tuple(int(n) for n in shape), dtype=dtype, device="meta")


def _small_array(archive: zipfile.ZipFile, member: str, max_bytes: int) -> np.ndarray | None:
    info = archive.getinfo(member)
    if info.file_size > max_bytes + 256:
        return None
    with archive.open(info) as f:
        data = f.read(max_bytes + 257)
    import io

    array = np.load(io.BytesIO(data), allow_pickle=False)
    return array if isinstance(array, np.ndarray) and not array.dtype.hasobject else None


def _plain_value(archive: zipfile.ZipFile, member: str) -> Any:
    """A saved Python scalar or string (at most 64 KiB), as the judge's own Python value."""
    array = _small_array(archive, member, 1 << 16)
    if array is None or array.ndim != 0:
        return NotTensor(OTHER_KINDS[0])
    if array.dtype.kind == "b":
        return bool(array)
    if array.dtype.kind == "i":
        return int(array)
    if array.dtype.kind == "f":
        return float(array)
    if array.dtype.kind == "U":
        return str(array)
    return NotTensor(OTHER_KINDS[0])


def load_outputs(path: Any, expected: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """Read an untrusted output file for the keys the judge expects, and only those, with
    their data only when the shape is the expected one: the judge's memory is bounded by the
    size of the right answer, whatever the file claims."""
    values: dict[str, Any] = {}
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist()[:256])
        members = {}
        for name in names:
            if "." in name and name.endswith(".npy"):
                kind, key = name[:-4].split(".", 1)
                if kind in ("t", "b", "v", "o", "m"):
                    members[key] = name
        for key, exp in expected.items():
            if key not in members:
                continue
            member = members[key]
            if member.startswith("m."):
                values[key] = _meta_member(archive, key, names)
            elif isinstance(exp, torch.Tensor):
                values[key] = _read_member(archive, member, max_bytes, tuple(exp.shape))
            elif member.startswith("v."):
                values[key] = _plain_value(archive, member)
            else:
                values[key] = _read_member(archive, member, 0, None)
    return values


def error_code(error: BaseException, core: Any = None) -> str:
    """What the judge may know of a crash: fixed words, never the exception's text."""
    forbidden = getattr(core, "ForbiddenCall", None) if core is not None else None
    modified = getattr(core, "ModifiedInput", None) if core is not None else None
    if forbidden is not None and _isinstance(error, forbidden):
        return "forbidden " + " ".join(str(a) for a in error.args)[:1000]
    if modified is not None and _isinstance(error, modified):
        return "modified input"
    if _isinstance(error, NotImplementedError):
        return "not implemented"
    if _isinstance(error, MemoryError) or (_isinstance(error, RuntimeError) and any(
            text in str(error) for text in ("can't allocate memory", "Cannot allocate memory",
                                            "not enough memory"))):
        return "out of memory"
    name = _type(error).__name__
    return "raised " + (name if name in KNOWN_ERRORS else "an exception")


def run_exercises(namespace: dict, workdir: str, package: str = "_grader_checks",
                  report: Any = None) -> None:
    """Run every exercise listed in ``workdir/cases.json`` against the student's namespace.

    For exercise n and case c, the outputs go to ``workdir/out/n_c.npz``, or a crash's code
    (:func:`error_code`) to ``workdir/out/n_c.error``. Empty marker files ``n.started`` and
    ``n.done`` let the judge tell which exercise was running if the sandbox had to be killed;
    ``report("exercise_start", n=n)`` restarts the sandbox's per-exercise clock.
    """
    import importlib

    core = importlib.import_module(f"{package}.core")
    importlib.import_module(package)  # registers the checkers of the payload
    work = Path(workdir)
    manifest = json.loads((work / "cases.json").read_text())
    out = work / "out"
    out.mkdir(exist_ok=True)
    for entry in manifest["exercises"]:
        n, name = entry["index"], entry["name"]
        if report is not None:
            report("exercise_start", n=n)
        (out / f"{n}.started").touch()
        obj = namespace.get(name.split(".")[0])
        checker = core.CHECKERS[name]
        for c in range(entry["cases"]):
            case = read_values(work / "cases" / f"{n}_{c}.npz")
            target = out / f"{n}_{c}"
            try:
                if obj is None:
                    raise NameError(name.split(".")[0])
                # The namespace the object was defined in (None for a callable instance: then
                # the notebook's own).
                home = core.namespace_of(obj) or namespace
                with core.isolated(checker.uses, home):
                    if hasattr(core, "trusted_files"):  # calls made by provided code are fine
                        trusted = core.trusted_files(home, manifest.get("provided", []))
                        got = core.run_case(checker, obj, case, trusted)
                    else:
                        got = core.run_case(checker, obj, case)
                if not _isinstance(got, dict):
                    raise TypeError("no outputs")
                save_values(got, f"{target}.npz")
            except BaseException as error:  # the student's code may raise anything
                Path(f"{target}.error").write_text(error_code(error, core))
        (out / f"{n}.done").touch()

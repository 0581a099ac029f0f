"""What a check does with an answer once it has one: compare it, describe it, say what is wrong,
and watch for calls the exercise forbids. It imports nothing but ``torch`` and the standard
library, because this file is also copied, word for word, into every student notebook (see
:mod:`coursetools.student`), where the course's package is not installed.

Everything here is about *reporting*; nothing here knows a right answer.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

#: Lines of a message are wrapped to this width: nbgrader's command-line Validate cuts longer
#: lines, and a notebook shows them without a scroll bar.
WIDTH = 84

#: The requirement of a case that names none.
DEFAULT_REQUIREMENT = "values"


class CheckFailed(AssertionError):
    """A check's verdict on a wrong answer. In Jupyter it is shown as its message alone,
    without a traceback through the course's files (IPython calls ``_render_traceback_``)."""

    def __init__(self, message: str):
        super().__init__(wrap(message, first=WIDTH - len("CheckFailed: ")))

    def _render_traceback_(self) -> list[str]:
        lines = str(self).splitlines() or [""]
        return [f"\x1b[0;31mCheckFailed\x1b[0m: {lines[0]}", *lines[1:]]


class ForbiddenCall(CheckFailed):
    """The answer called something the exercise asks you to write yourself."""


class ModifiedInput(CheckFailed):
    """The answer changed a tensor it was given."""


def _same(before: Tensor, after: Any) -> bool:
    """Whether an input tensor is unchanged (NaN equals NaN; meta tensors carry no values)."""
    if not isinstance(after, Tensor) or after.shape != before.shape:
        return False
    if before.device.type == "meta":
        return True
    equal = after == before
    if before.is_floating_point():
        equal = equal | (torch.isnan(after) & torch.isnan(before))
    return bool(equal.all())


def wrap(message: str, width: int = WIDTH, first: int | None = None) -> str:
    """Wrap each line of ``message`` to ``width`` characters (the very first to ``first``),
    keeping its indentation."""
    out: list[str] = []
    for line in str(message).splitlines() or [""]:
        indent = line[: len(line) - len(line.lstrip())]
        limit = first if first is not None and not out else width
        head = textwrap.wrap(line, limit, subsequent_indent=indent + "  ",
                             break_on_hyphens=False) or [""]
        rest = " ".join(part.strip() for part in head[1:])
        out.append(head[0])
        if rest:
            out.extend(textwrap.wrap(rest, width, initial_indent=indent + "  ",
                                     subsequent_indent=indent + "  ", break_on_hyphens=False))
    return "\n".join(out)


# --- describing and comparing ---------------------------------------------------------------------


def describe_tensor(t: Tensor) -> str:
    text = f"shape {tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"
    if t.device.type != "cpu":
        text += f" on {t.device.type}"
    if t.dtype == torch.bool and t.device.type != "meta" and t.numel() and not bool(t.all()):
        text += f" ({int((~t).sum())} False)"
    return text


def describe_case(case: dict[str, Any]) -> str:
    """A short description of a case's inputs (weights ``w.*`` and labels are left out)."""
    parts = []
    for key, value in case.items():
        if key.startswith(("w.", "_")) or key == "requirement":
            continue
        if isinstance(value, Tensor):
            parts.append(f"{key}: {describe_tensor(value)}")
        else:
            parts.append(f"{key}={value!r}")
    return ", ".join(parts)


def requirement_of(case: dict[str, Any]) -> str:
    return str(case.get("requirement", DEFAULT_REQUIREMENT))


def _type_name(value: Any) -> str:
    return type(value).__name__


def compare(got: Any, expected: Any, what: str, atol: float, rtol: float) -> str | None:
    """None if ``got`` equals ``expected`` (a tensor within tolerance, or a plain value), else
    a sentence saying how it differs."""
    if isinstance(got, Missing):
        return f"{what}: {got.reason}"
    if not isinstance(expected, Tensor):
        if type(got) is not type(expected) or got != expected:
            return f"{what}: expected {expected!r}, got {got!r}"
        return None
    if not isinstance(got, Tensor):
        return f"{what}: expected a torch.Tensor, got {_type_name(got)}"
    if type(got) is not Tensor and not isinstance(got, nn.Parameter):
        return f"{what}: expected a plain torch.Tensor, got the subclass {_type_name(got)}"
    if tuple(got.shape) != tuple(expected.shape):
        return f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    if got.dtype != expected.dtype:
        return f"{what}: expected dtype {expected.dtype}, got {got.dtype}"
    if got.device.type != expected.device.type:
        return (f"{what}: expected a tensor on the {expected.device.type} device (where the "
                f"inputs are), got one on {got.device.type}")
    if expected.device.type == "meta":  # shapes, dtypes and devices only
        return None
    got = got.detach()
    if expected.dtype in (torch.bfloat16, torch.float16):  # 8 or 11 bits of mantissa
        atol, rtol = max(atol, 1e-2), max(rtol, 1e-2)
    if expected.dtype == torch.bool or not expected.is_floating_point():
        wrong = got != expected
        if bool(wrong.any()):
            first = tuple(int(i) for i in wrong.nonzero()[0])
            return (f"{what}: {int(wrong.sum())} of {wrong.numel()} entries differ, first at "
                    f"index {first}: expected {expected[first].item()}, got {got[first].item()}")
        return None
    expected64, got64 = expected.double(), got.double()
    bad_nan = torch.isnan(got64) & ~torch.isnan(expected64)
    if bool(bad_nan.any()):
        first = tuple(int(i) for i in bad_nan.nonzero()[0])
        return f"{what}: NaN at index {first} ({int(bad_nan.sum())} NaN entries in all)"
    if not torch.allclose(got64, expected64, atol=atol, rtol=rtol, equal_nan=True):
        err = (got64 - expected64).abs().nan_to_num(float("inf"))
        first = tuple(int(i) for i in torch.nonzero(err == err.max())[0])
        return (f"{what}: largest error {err.max().item():.3g} at index {first} "
                f"(expected {expected64[first].item():.6g}, got {got64[first].item():.6g}; "
                f"tolerance atol={atol:g}, rtol={rtol:g})")
    return None


def compare_outputs(got: dict[str, Any], expected: dict[str, Any], atol: float, rtol: float
                    ) -> list[str]:
    problems = []
    for key, exp in expected.items():
        problem = compare(got.get(key, Missing(f"no value for {key!r} came back")), exp, key,
                          atol, rtol)
        if problem:
            problems.append(problem)
    return problems


def close_to(got: Any, expected: Any, atol: float = 1e-4) -> bool:
    """Whether a (possibly malformed) answer is close to ``expected``: used to recognise a
    known mistake."""
    if not isinstance(expected, Tensor):
        return type(got) is type(expected) and got == expected
    return (isinstance(got, Tensor) and got.shape == expected.shape
            and got.device.type == expected.device.type
            and (expected.device.type == "meta" or bool(torch.allclose(
                got.detach().double(), expected.double(), atol=atol, equal_nan=True))))


def matches(got: dict[str, Any], outputs: dict[str, Any], atol: float = 1e-4) -> bool:
    """Whether every output of a known mistake is what came back."""
    return bool(outputs) and all(close_to(got.get(key), value, max(atol, 1e-4))
                                 for key, value in outputs.items())


class Missing:
    """Stands for an output the answer did not give (says why in messages)."""

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"<missing: {self.reason}>"


def unpack_pair(result: Any, first: str, second: str) -> dict[str, Any]:
    """Turn a returned ``(a, b)`` tuple into ``{first: a, second: b}``, or say what came back."""
    if isinstance(result, tuple) and len(result) == 2:
        return {first: result[0], second: result[1]}
    what = (f"a tuple of {len(result)}" if isinstance(result, tuple)
            else f"a single {_type_name(result)}")
    reason = f"the function must return a pair ({first}, {second}); it returned {what}"
    return {first: Missing(reason), second: Missing(reason)}


def failure_message(name: str, number: int, total: int, case: dict[str, Any],
                    problems: list[str], hint: str | None) -> str:
    head = f"{name}, case {number} of {total}"
    requirement = requirement_of(case)
    if requirement != DEFAULT_REQUIREMENT:
        head += f" [{requirement}]"
    message = f"{head}\n  inputs: {describe_case(case)}\n  " + "\n  ".join(problems)
    if hint:
        message += f"\n  Hint: {hint}"
    return message


# --- watching for forbidden calls -----------------------------------------------------------------

#: Frames of these modules are library code: a forbidden call made by them is attributed to
#: the code that called the library.
LIBRARY_PREFIXES = ("torch", "numpy", "contextlib", "functools", "typing")


def resolve(name: str) -> Any:
    """'torch.nn.functional.softmax' -> the object (None if this torch has no such thing)."""
    name = name.partition("(")[0]
    module_name, attr = name, []
    while module_name:
        try:
            obj = importlib.import_module(module_name)
            break
        except ImportError:
            module_name, _, last = module_name.rpartition(".")
            attr.insert(0, last)
    else:
        return None
    for part in attr:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _keyword_rule(name: str) -> tuple[str, str | None]:
    """'torch.nn.functional.cross_entropy(label_smoothing)' -> (function, keyword)."""
    base, _, rest = name.partition("(")
    return base, (rest.rstrip(")") or None)


class Watch(TorchFunctionMode):
    """Records calls of forbidden PyTorch functions and modules made by the student's code
    while it runs. It sees the call whatever name the code used for it (an alias, ``getattr``,
    a method of the tensor), because PyTorch itself reports every function call to the active
    mode; modules are seen through a global forward hook."""

    def __init__(self, forbidden: tuple[str, ...], trusted_files: set[str]):
        super().__init__()
        self.functions: dict[Any, tuple[str, str | None]] = {}
        self.modules: list[tuple[type, str]] = []
        for name in forbidden:
            base, keyword = _keyword_rule(name)
            obj = resolve(base)
            if obj is None:
                continue
            if isinstance(obj, type) and issubclass(obj, nn.Module):
                self.modules.append((obj, name))
            else:
                self.functions[obj] = (name, keyword)
        self.trusted_files = trusted_files
        self.hits: list[str] = []
        self._hook = None

    def _student_called(self) -> bool:
        """Whether the nearest caller outside library code is the student's (not provided
        code, not the checks)."""
        frame = sys._getframe(2)
        while frame is not None:
            module = frame.f_globals.get("__name__", "") or ""
            if frame.f_code.co_filename == __file__ or module.split(".")[0] in LIBRARY_PREFIXES:
                frame = frame.f_back
                continue
            return frame.f_code.co_filename not in self.trusted_files and not module.startswith(
                ("checks", "coursetools", "course_checks", "_grader"))
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = self.functions.get(func)
        if rule is not None:
            name, keyword = rule
            if (keyword is None or kwargs.get(keyword)) and self._student_called():
                self.hits.append(name)
        return func(*args, **kwargs)

    def _pre_hook(self, module, args):
        for cls, name in self.modules:
            if isinstance(module, cls) and self._student_called():
                self.hits.append(name)

    def __enter__(self):
        if self.modules:
            self._hook = nn.modules.module.register_module_forward_pre_hook(self._pre_hook)
        return super().__enter__()

    def __exit__(self, *exc):
        if self._hook is not None:
            self._hook.remove()
        return super().__exit__(*exc)


def code_files(objects: list[Any]) -> set[str]:
    """The files (notebook cells) in which these functions and classes were defined."""
    files = set()
    for obj in objects:
        members = vars(obj).values() if isinstance(obj, type) else [obj]
        for member in members:
            member = getattr(member, "__func__", member)
            code = getattr(getattr(member, "__wrapped__", member), "__code__", None)
            if code is not None:
                files.add(code.co_filename)
    return files


def run_watched(run: Callable[[Any, dict], dict], obj: Any, case: dict[str, Any],
                forbidden: tuple[str, ...] = (), trusted_files: set[str] | None = None
                ) -> dict[str, Any]:
    """Run the student's code on one case: warnings and stderr silenced (nbgrader scores a test
    cell zero if it writes to stderr, and a library warning is no mistake), forbidden calls
    watched. Raises :class:`ForbiddenCall` if the code used one."""
    watch = Watch(tuple(forbidden), trusted_files or set()) if forbidden else None
    inputs = {key: value.clone() for key, value in case.items()
              if isinstance(value, Tensor) and not key.startswith("w.")}
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if watch is None:
            got = run(obj, case)
        else:
            with watch:
                got = run(obj, case)
    for key, before in inputs.items():
        if not _same(before, case[key]):
            raise ModifiedInput(
                f"your code changed its input `{key}` in place; the caller still needs it. "
                "Work on new tensors (out-of-place operations) instead.")
    if watch is not None and watch.hits:
        used = ", ".join(dict.fromkeys(watch.hits))
        raise ForbiddenCall(
            f"your code calls {used}, which this exercise asks you to build yourself. "
            "Write it from tensor operations (the exercise's text says which ones are fine); "
            "this answer scores no points while it calls it.")
    return got


def namespace_of(obj: Any) -> dict[str, Any] | None:
    """The global namespace the student's object was defined in (the notebook's)."""
    fn = obj
    if isinstance(obj, type):
        fn = next((v for v in vars(obj).values() if callable(v) and hasattr(v, "__globals__")),
                  None)
    fn = getattr(fn, "__wrapped__", fn)  # through decorators such as @torch.no_grad()
    return getattr(fn, "__globals__", None)


@contextlib.contextmanager
def no_grad_leak() -> Iterator[None]:
    """Keep the global random state as it was around a check."""
    with torch.random.fork_rng(devices=[]):
        yield


# --- the student's side: frozen visible cases -----------------------------------------------------


def portable_weights(seed: int, shape: tuple[int, ...], mean: float, std: float) -> Tensor:
    """Pseudo-random float32 weights (uniform, with this mean and standard deviation) that come
    out bit for bit the same on every machine and PyTorch version: integer hashing, then exact
    float64 arithmetic. Notebooks regenerate their cases' weights from a seed instead of
    carrying them."""
    numel = 1
    for size in shape:
        numel *= size
    h = (torch.arange(numel, dtype=torch.int64) * 2654435761 + seed * 40503 + 12345) % (1 << 32)
    for multiplier in (1274126177, 2246822519 % (1 << 31)):
        h = ((h ^ (h >> 15)) * multiplier) % (1 << 32)
    uniform = h.double() / float(1 << 32) * 2.0 - 1.0  # in [-1, 1)
    return (uniform * (3.0 ** 0.5 * std) + mean).float().reshape(shape)


def _regenerate(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__portable__"}:
            return portable_weights(*value["__portable__"])
        return {key: _regenerate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_regenerate(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_regenerate(item) for item in value)
    return value


def unpack_data(packed: str) -> Any:
    """The frozen cases of a notebook (tensors and plain values only: no code is unpickled)."""
    import base64
    import zlib

    raw = torch.load(io.BytesIO(zlib.decompress(base64.b64decode(packed))), weights_only=True)
    return _regenerate(raw)


def _clone(value: Any) -> Any:
    return value.clone() if isinstance(value, Tensor) else value


def first_failure(name: str, obj: Any, callers: dict, data: dict) -> str | None:
    """None if ``obj`` passes every visible case of ``name``, else the message."""
    entry = data["exercises"][name]
    caller = callers[name]
    namespace = namespace_of(obj) or {}
    trusted = code_files([namespace[p] for p in data["provided"] if p in namespace])
    cases = entry["cases"]
    for number, (case, expected, mistakes) in enumerate(
            zip(cases, entry["expected"], entry["mistakes"]), 1):
        case = {key: _clone(value) for key, value in case.items()}
        try:
            with no_grad_leak():
                got = run_watched(caller.run, obj, case, tuple(entry["forbidden"]), trusted)
        except NotImplementedError:
            return (f"{name} is not implemented yet: replace `raise NotImplementedError()` "
                    "with your code.")
        except CheckFailed as error:
            return f"{name}, case {number} of {len(cases)}: {error}"
        except Exception as error:  # the student's code crashed: say how
            problem = f"your code raised {type(error).__name__}: {error}"
            return failure_message(name, number, len(cases), case, [problem], None)
        problems = compare_outputs(got, expected, caller.atol, caller.rtol)
        if problems:
            hint = next((h for h, outputs in mistakes if matches(got, outputs, caller.atol)),
                        None)
            if hint is None and hasattr(caller, "symptom"):
                try:
                    hint = caller.symptom(case, got)
                except Exception:  # a hint must never hide the verdict
                    hint = None
            if hint is None:
                hint = entry.get("advice", {}).get(requirement_of(case))
            return failure_message(name, number, len(cases), case, problems, hint)
    return None


def student_check(name: str, obj: Any, callers: dict, data: dict, depth: int = 0) -> None:
    """The visible check of exercise ``name``: raise :class:`CheckFailed` on the first wrong
    case, or print what passed."""
    if name not in data["exercises"]:
        raise KeyError(f"this notebook has no exercise {name!r}: "
                       f"{', '.join(data['exercises'])}")
    namespace = namespace_of(obj) or {}
    for used in data["exercises"][name]["uses"]:
        if used not in data["exercises"]:
            continue  # provided code, not an exercise of this notebook
        other = namespace.get(used.split(".")[0])
        problem = ("it is not defined" if other is None
                   else first_failure(used, other, callers, data))
        if problem is not None:
            first_line = problem.splitlines()[0]
            raise CheckFailed(
                f"{name} calls your {used}, which does not pass its own check yet "
                f"({first_line}). Make {used} pass first: this check would only repeat its "
                "mistake. (When graded, each exercise is checked on its own.)")
    problem = first_failure(name, obj, callers, data)
    if problem is not None:
        raise CheckFailed(problem)
    entry = data["exercises"][name]
    requirements = list(dict.fromkeys(str(c.get("requirement", DEFAULT_REQUIREMENT))
                                      for c in entry["cases"]))
    print(wrap(f"{name}: all {len(entry['cases'])} visible cases pass "
               f"(checked: {'; '.join(requirements)}). Hidden cases re-check the same "
               "requirements with other shapes and values when your notebook is graded."))

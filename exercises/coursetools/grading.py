"""The judge: grade one submission's code without trusting anything it does.

1. Cases are drawn from a secret seed (per course, student, assignment and exercise), so no
   student has seen the inputs, and re-grading draws the same ones. The seed never enters the
   sandbox; the cases do, as plain arrays.
2. The exercises are split into groups (:func:`coursetools.payload.plan_groups`); each group
   runs in its own sandbox (:mod:`coursetools.sandbox`): the student's cells, then the harness
   (:mod:`coursetools.harness`), which calls the student's functions on the cases with the
   group's payload package: the code that calls them and the PyTorch stand-ins of the *other*
   exercises they use, never the reference of an exercise being graded.
3. Back in this process, which never runs student code, each output file is read as data only
   (shape and dtype from the arrays themselves, the data only when the shape is right, so the
   judge's memory is bounded by the size of the right answer) and compared with PyTorch's
   answer (``Checker.expected``). Messages are the judge's own words: nothing written by
   student code reaches a verdict, and on hidden cases only the kind of case (its
   ``requirement``) and the kind of problem are told, never the values.

Partial credit: an exercise's cases carry a ``requirement`` (a short label, "values" when
absent); its score is the fraction of requirements whose cases all pass.

A cell or an exercise that breaks a limit (time, memory, processes, files) or kills the runner
is skipped and its group re-run without it, from a clean work directory, so the rest keeps its
points; each group has its own wall-clock budget (``limits.total_timeout_s``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .checks.core import CHECKERS, compare
from .harness import Header, NotTensor, load_outputs, save_values
from .payload import PACKAGE, package_for, plan_groups
from .sandbox import SandboxLimits, SandboxRun, run_sandboxed

HERE = Path(__file__).resolve().parent
HARNESS_FILE = HERE / "harness.py"

# Runs before any student code: only the harness module (numpy, torch). The payload package is
# imported by the harness after the cells ran.
HARNESS_SOURCE = """
from harness import run_exercises as _run_exercises

def harness(ns):
    _run_exercises(ns, OUTPUT_DIR, {package!r}, REPORT)
"""

SOLUTIONS_IMPORT = re.compile(r"^\s*(from\s+solutions\b|import\s+solutions\b)|__import__\(\s*['\"]"
                              r"solutions|import_module\(\s*['\"]solutions", re.MULTILINE)

#: Largest output file the judge opens, beyond the size of the right answer.
OUTPUT_SLACK_BYTES = 1 << 20
#: Largest `.error` file read (a few fixed words, or a forbidden call's names).
MAX_ERROR_BYTES = 2000
#: Start-up timeouts (a machine too busy to import torch in time) are retried this often.
STARTUP_RETRIES = 1


def clean_text(text: object, limit: int = 2000) -> str:
    """Any text made safe to write anywhere: valid UTF-8 (lone surrogates and undecodable
    bytes replaced), at most ``limit`` characters."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text).encode("utf-8", "replace").decode("utf-8", "replace")
    return text[:limit]


@dataclass
class ExerciseVerdict:
    name: str
    passed: bool
    message: str
    cases: int = 0
    score: float = 0.0                     # fraction of the exercise's points, 0 to 1
    requirements: dict[str, bool] = field(default_factory=dict)


@dataclass
class SubmissionVerdict:
    exercises: dict[str, ExerciseVerdict]
    reasons: list[str] = field(default_factory=list)   # limits broken, cells skipped
    flags: list[str] = field(default_factory=list)     # suspected tampering, for a human
    wall_s: float = 0.0
    runs: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SubmissionVerdict:
        data = dict(data)
        exercises = {k: ExerciseVerdict(**v) for k, v in data.pop("exercises").items()}
        return cls(exercises=exercises, **data)


def case_seed(secret: bytes, *parts: str) -> int:
    """A 63-bit seed from the course secret and the names: same inputs, same cases."""
    digest = hmac.new(secret, "/".join(parts).encode("utf-8", "surrogateescape"),
                      hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def draw_cases(name: str, secret: bytes, context: str) -> tuple[list[dict], int]:
    """An exercise's cases (visible kinds first, then hidden ones) and how many are visible."""
    checker = CHECKERS[name]
    seed = case_seed(secret, context, name)
    cases = checker.cases(torch.Generator().manual_seed(seed), hidden=True)
    visible = len(checker.cases(torch.Generator().manual_seed(seed), hidden=False))
    return cases, visible


def requirement(case: dict) -> str:
    label = case.get("requirement", "values")
    return label if isinstance(label, str) and label else "values"


def provided_names(names: list[str]) -> list[str]:
    """The names of the code an assignment provides (its calls are not the student's)."""
    from .spec import ASSIGNMENTS, Provided

    for assignment in ASSIGNMENTS:
        if any(getattr(item, "name", None) in names for item in assignment.items):
            return [item.target.rpartition(":")[2].split(".")[0] for item in assignment.items
                    if isinstance(item, Provided)]
    return []


def write_cases(work: Path, group: list[int], names: list[str], all_cases: list[list[dict]]
                ) -> None:
    """Write the cases of the exercises ``group`` (indices into ``names``) into a work dir."""
    (work / "cases").mkdir(parents=True)
    (work / "out").mkdir()
    for n in group:
        for c, case in enumerate(all_cases[n]):
            save_values(case, work / "cases" / f"{n}_{c}.npz")
    manifest = {"exercises": [{"index": n, "name": names[n], "cases": len(all_cases[n])}
                              for n in group], "provided": provided_names(names)}
    (work / "cases.json").write_text(json.dumps(manifest))


def _open_plain(path: Path, max_bytes: int) -> int | None:
    """A descriptor on ``path`` if it is a plain file no bigger than ``max_bytes`` (links are
    never followed), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
        os.close(fd)
        return None
    return fd


def _hidden_words(problem: str, expected: object) -> str:
    """A comparison problem on a hidden case, without the case's values."""
    key = problem.split(":", 1)[0]
    if "NaN at index" in problem:
        return f"{key}: NaN where a number is expected"
    if not isinstance(expected, torch.Tensor) and "expected a" not in problem:
        return f"{key}: wrong value"
    if "entries differ" in problem or "error" in problem:
        return f"{key}: wrong values"
    return problem  # shape, dtype, device and type problems say nothing of the values


def _output_problems(checker, got: dict, expected: dict) -> list[str]:
    problems = []
    for key, exp in expected.items():
        value = got.get(key)
        if value is None:
            problems.append(f"{key}: not returned")
        elif isinstance(value, NotTensor):
            want = "a torch.Tensor" if isinstance(exp, torch.Tensor) else \
                f"a {type(exp).__name__}"
            problems.append(f"{key}: expected {want}, got {value.words}")
        elif isinstance(value, Header):
            if not isinstance(exp, torch.Tensor):
                problems.append(f"{key}: expected a {type(exp).__name__}, got a tensor")
            elif value.shape != tuple(exp.shape):
                problems.append(f"{key}: expected shape {tuple(exp.shape)}, got {value.shape}")
            else:
                problems.append(f"{key}: expected dtype {exp.dtype}, got {value.numpy_dtype}")
        else:
            problem = compare(value, exp, key, checker.atol, checker.rtol)
            if problem:
                problems.append(problem)
    return problems


#: Checker.expected and Checker.hint may use process-wide state: the global random generator,
#: seeded so that the reference draws the same dropout masks as the student's code did, and
#: PyTorch's switches of attention backends (``sdpa_kernel``). ``course.grade`` judges
#: submissions in threads, and two references interleaving there got wrong answers (a correct
#: forward_flops lost a requirement), so references run one at a time.
REFERENCE_LOCK = threading.RLock()


def reference(checker, case: dict) -> dict:
    """``checker.expected(case)``, one reference at a time in this process."""
    with REFERENCE_LOCK:
        return checker.expected(case)


def judge_case(name: str, n: int, c: int, case: dict, visible: bool, out: Path
               ) -> tuple[str | None, str | None]:
    """(problem, whole_exercise_problem) for case ``c`` of exercise ``n``; both None if right.
    A whole-exercise problem (not implemented, a forbidden call) costs the exercise."""
    checker = CHECKERS[name]
    where = (f"{name}, case {c + 1} ({checker.describe(case)})" if visible
             else f"{name}, hidden case {c + 1} ({requirement(case)})")
    fd = _open_plain(out / f"{n}_{c}.error", MAX_ERROR_BYTES)
    if fd is not None:
        with os.fdopen(fd, "rb") as f:
            code = f.read(MAX_ERROR_BYTES).decode("ascii", "replace")
        if code == "not implemented":  # the exercise's stub, unless some case ran
            return f"{where}: your code raised a NotImplementedError", "not implemented"
        if code.startswith("forbidden "):
            said = code.removeprefix("forbidden ")
            calls = [rule for rule in getattr(checker, "forbidden", ()) or ()
                     if rule.split("(")[0].strip() in said]
            return None, (f"{name} calls {', '.join(calls) or 'a function'}, which this "
                          "exercise asks you to build yourself: it scores no points while it "
                          "calls it.")
        if code == "out of memory":
            return f"{where}: your code ran out of memory (the memory limit)", None
        if code == "modified input":
            return f"{where}: your code changed one of its inputs in place", None
        words = code.removeprefix("raised ") if code.startswith("raised ") else "an exception"
        words = words if re.fullmatch(r"[A-Za-z]+", words) else "an exception"
        article = "" if words == "an exception" else "a "
        return f"{where}: your code raised {article}{words}", None
    expected = reference(checker, case)
    limit = sum(t.numel() * t.element_size() for t in expected.values()
                if isinstance(t, torch.Tensor) and not t.is_meta) + OUTPUT_SLACK_BYTES
    fd = _open_plain(out / f"{n}_{c}.npz", 8 * limit)
    if fd is None:
        return f"{where}: produced no output", None
    try:
        with os.fdopen(fd, "rb") as f:
            got = load_outputs(f, expected, limit)
    except Exception:  # a malformed file is the submission's fault
        return f"{where}: unreadable output", None
    problems = _output_problems(checker, got, expected)
    if not problems:
        return None, None
    if not visible:
        problems = [_hidden_words(p, expected.get(p.split(":", 1)[0])) for p in problems]
    message = f"{where}:\n  " + "\n  ".join(problems)
    try:
        with REFERENCE_LOCK:
            hint = checker.hint(case, got) if not any(isinstance(v, NotTensor | Header)
                                                       for v in got.values()) else None
    except Exception:
        hint = None
    if hint:
        message += f"\n  Hint: {hint}"
    return message, None


def judge_exercise(name: str, n: int, cases: list[dict], visible: int, out: Path
                   ) -> ExerciseVerdict:
    """Compare the saved outputs of exercise ``n`` with PyTorch's answers, case by case."""
    labels = list(dict.fromkeys(requirement(case) for case in cases))
    failed: dict[str, str] = {}
    passed_cases = 0
    stubbed = 0
    for c, case in enumerate(cases):
        problem, fatal = judge_case(name, n, c, case, c < visible, out)
        if fatal == "not implemented":
            stubbed += 1
        elif fatal:
            return ExerciseVerdict(name, False, fatal, 0, 0.0, {label: False for label in labels})
        if problem is None:
            passed_cases += 1
        else:
            failed.setdefault(requirement(case), problem)
    if cases and stubbed == len(cases):
        return ExerciseVerdict(name, False, f"{name} is not implemented.", 0, 0.0,
                               {label: False for label in labels})
    requirements = {label: label not in failed for label in labels}
    score = sum(requirements.values()) / len(labels) if labels else 0.0
    if not failed:
        return ExerciseVerdict(name, True, f"{name}: all {len(cases)} cases passed.",
                               passed_cases, 1.0, requirements)
    message = "\n".join(failed.values())
    if 0 < score < 1:
        ok = [label for label, good in requirements.items() if good]
        message = (f"{name}: {sum(requirements.values())} of {len(labels)} requirements met "
                   f"(passed: {', '.join(ok)}; failed: {', '.join(failed)}).\n" + message)
    return ExerciseVerdict(name, False, message, passed_cases, score, requirements)


def _keep_plain_files(out: Path) -> None:
    """Delete from ``out`` everything that is not a plain file, once the sandbox is gone (the
    judge also opens every file with O_NOFOLLOW: this is belt and braces)."""
    try:
        mode = os.lstat(out).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISDIR(mode):  # `out` itself replaced by a link
        os.unlink(out)
        mode = None
    if mode is None:
        out.mkdir()
        return
    for entry in os.scandir(out):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        elif not entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)


def _is_marker(out: Path, name: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(out / name).st_mode)
    except OSError:
        return False


def _culprit(run: SandboxRun, out: Path, pending: list[int]) -> tuple[str, int] | None:
    """What the run was doing when it broke: ("cell", k) or ("exercise", n). Cells run before
    the harness: a cell that did not end (or left the work directory over its limits) is the
    culprit; else the exercise started and not done."""
    for cell in run.cells:
        if cell.status in ("timeout", "died", "started"):
            return ("cell", cell.index)
    started = [n for n in pending if _is_marker(out, f"{n}.started")
               and not _is_marker(out, f"{n}.done")]
    if started:
        return ("exercise", started[0])
    return None


def _grade_group(cells: list[str], names: list[str], group: list[int],
                 all_cases: list[list[dict]], visible: list[int], limits: SandboxLimits,
                 verdict: SubmissionVerdict, tmp: Path, max_runs: int) -> None:
    """Grade the exercises ``group`` in sandboxes of their own; fill ``verdict``."""
    start = time.monotonic()
    payload = package_for([names[n] for n in group])
    try:
        pending = list(group)
        skipped_cells: set[int] = set()
        runs = startup_retries = 0
        while pending and runs < max_runs:
            left = limits.total_timeout_s - (time.monotonic() - start)
            if left < 3:
                verdict.reasons.append(f"total time limit {limits.total_timeout_s:g} s reached")
                break
            run_limits = SandboxLimits(**{**asdict(limits), "total_timeout_s": left})
            code = [("pass  # skipped by the grader" if k in skipped_cells else source)
                    for k, source in enumerate(cells)]
            work = tmp / f"run{verdict.runs}"  # a clean work directory for every run
            write_cases(work, pending, names, all_cases)
            run = run_sandboxed(code, HARNESS_SOURCE.format(package=PACKAGE), work,
                                readonly={PACKAGE: payload / PACKAGE, "harness.py": HARNESS_FILE},
                                limits=run_limits)
            verdict.runs += 1
            if run.status == "error":
                raise RuntimeError(f"the sandbox could not run: {run.reason}")
            if (run.status == "timeout" and "while starting" in (run.reason or "")
                    and startup_retries < STARTUP_RETRIES):
                startup_retries += 1  # the machine was busy: not the student's fault
                shutil.rmtree(work, ignore_errors=True)
                continue
            runs += 1
            out = work / "out"
            _keep_plain_files(out)  # before reading anything the sandbox could have written
            for n in list(pending):
                if _is_marker(out, f"{n}.done"):
                    verdict.exercises[names[n]] = judge_exercise(
                        names[n], n, all_cases[n], visible[n], out)
                    pending.remove(n)
            if run.status == "ok" and run.reason:
                # A limit broken inside a cell that the run survived (MemoryError, process
                # limit, sys.exit): the grade stands, but the report must still say so.
                if run.reason not in verdict.reasons:
                    verdict.reasons.append(run.reason)
            culprit = _culprit(run, out, pending) if run.status != "ok" else None
            shutil.rmtree(work, ignore_errors=True)
            if run.status == "ok" or not pending:
                break
            reason = run.reason or run.status
            if culprit is None:
                verdict.reasons.append(f"{reason}; grading stopped")
                break
            kind, index = culprit
            if kind == "exercise":
                name = names[index]
                verdict.exercises[name] = ExerciseVerdict(
                    name, False, f"{name}: {reason}")
                verdict.reasons.append(f"{name}: {reason}")
                pending.remove(index)
            else:
                verdict.reasons.append(f"{reason}; cell {index} was skipped and the rest re-run")
                skipped_cells.add(index)
        for n in pending:
            verdict.exercises[names[n]] = ExerciseVerdict(
                names[n], False,
                f"{names[n]}: not graded ({'; '.join(verdict.reasons) or 'the run stopped'})")
    finally:
        shutil.rmtree(payload, ignore_errors=True)


def grade_code(cells: list[str], names: list[str], secret: bytes, context: str,
               limits: SandboxLimits | None = None, max_runs: int = 5) -> SubmissionVerdict:
    """Grade exercises ``names`` of a submission whose code cells are ``cells``."""
    limits = limits or SandboxLimits()
    start = time.monotonic()
    verdict = SubmissionVerdict(exercises={})
    cells = [clean_text(source, 1 << 20) for source in cells]
    for k, source in enumerate(cells):
        if SOLUTIONS_IMPORT.search(source):
            verdict.flags.append(f"cell {k} imports the reference package `solutions`")
    drawn = [draw_cases(name, secret, context) for name in names]
    all_cases = [cases for cases, _ in drawn]
    visible = [count for _, count in drawn]
    tmp = Path(tempfile.mkdtemp(prefix="coursetools-grade-"))
    try:
        for group in plan_groups(names):
            _grade_group(cells, names, group, all_cases, visible, limits, verdict, tmp,
                         max_runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    verdict.wall_s = round(time.monotonic() - start, 2)
    importing = [source for source in cells if SOLUTIONS_IMPORT.search(source)]
    for name in names:
        if any(_defines(source, name.split(".")[0]) for source in importing):
            verdict.exercises[name] = ExerciseVerdict(
                name, False, f"{name}: the cell that defines it imports the reference package "
                "`solutions`, which is not allowed.")
    verdict.reasons = [clean_text(r) for r in dict.fromkeys(verdict.reasons)]
    verdict.flags = [clean_text(f) for f in verdict.flags]
    verdict.exercises = {name: verdict.exercises[name] for name in names}
    return verdict


def _defines(source: str, owner: str) -> bool:
    """Whether a cell defines, assigns or imports the name ``owner``."""
    name = re.escape(owner)
    return bool(re.search(rf"^\s*(def|class)\s+{name}\b|^\s*{name}\s*=|^\s*(from|import)\b.*\b{name}\b",
                          source, re.MULTILINE))

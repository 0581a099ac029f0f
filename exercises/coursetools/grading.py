"""The judge: grade one submission's code without trusting anything it does.

1. Cases are drawn from a secret seed (per course, student, assignment and exercise), so no
   student has seen the inputs, and re-grading draws the same ones.
2. The student's cells run in the sandbox (:mod:`coursetools.sandbox`), then the harness
   (:mod:`coursetools.harness`) calls the student's functions on the cases and saves the raw
   outputs as arrays, without pickle.
3. Back in this process, which never ran student code, every output is checked for exact type,
   dtype and shape and compared with PyTorch's answer (``Checker.expected``).

A cell or an exercise that breaks a limit (time, memory, processes) or kills the runner is
skipped and the run is retried without it, so the rest keeps its points; the whole submission
never takes more than ``limits.total_timeout_s`` of wall-clock time.
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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .checks.core import CHECKERS, compare_outputs
from .harness import Foreign, load_values, save_values
from .sandbox import SandboxLimits, SandboxRun, run_sandboxed

HERE = Path(__file__).resolve().parent
CHECKS_DIR = HERE / "checks"
HARNESS_FILE = HERE / "harness.py"

# Runs before any student code: a private copy of the checkers (not the `checks` module the
# student can reach through sys.modules), and the harness's own references.
HARNESS_SOURCE = """
import importlib.util, sys
from harness import run_exercises as _run_exercises
_spec = importlib.util.spec_from_file_location(
    "_grader_checks", "/sandbox/lib/checks/__init__.py",
    submodule_search_locations=["/sandbox/lib/checks"])
_checks = importlib.util.module_from_spec(_spec)
sys.modules["_grader_checks"] = _checks
_spec.loader.exec_module(_checks)
_core = sys.modules["_grader_checks.core"]
for _name in [n for n in sys.modules if n.startswith("_grader_checks")]:
    del sys.modules[_name]
ONLY = {only!r}

def harness(ns):
    _run_exercises(ns, OUTPUT_DIR, only=ONLY, core=_core)
"""

SOLUTIONS_IMPORT = re.compile(r"^\s*(from\s+solutions\b|import\s+solutions\b)|__import__\(\s*['\"]"
                              r"solutions|import_module\(\s*['\"]solutions", re.MULTILINE)


@dataclass
class ExerciseVerdict:
    name: str
    passed: bool
    message: str
    cases: int = 0


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
        exercises = {k: ExerciseVerdict(**v) for k, v in data.pop("exercises").items()}
        return cls(exercises=exercises, **data)


def case_seed(secret: bytes, *parts: str) -> int:
    """A 63-bit seed from the course secret and the names: same inputs, same cases."""
    digest = hmac.new(secret, "/".join(parts).encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def write_cases(work: Path, names: list[str], secret: bytes, context: str) -> list[list[dict]]:
    """Draw each exercise's cases (visible and hidden kinds, from the secret seed) into
    ``work/cases``; return them for the judge."""
    (work / "cases").mkdir(parents=True, exist_ok=True)
    all_cases = []
    for n, name in enumerate(names):
        gen = torch.Generator().manual_seed(case_seed(secret, context, name))
        cases = CHECKERS[name].cases(gen, hidden=True)
        for c, case in enumerate(cases):
            save_values(case, work / "cases" / f"{n}_{c}")
        all_cases.append(cases)
    manifest = {"exercises": [{"name": name, "cases": len(cases)}
                              for name, cases in zip(names, all_cases)]}
    (work / "cases.json").write_text(json.dumps(manifest))
    return all_cases


def judge_exercise(name: str, n: int, cases: list[dict], out: Path) -> ExerciseVerdict:
    """Compare the saved outputs of exercise ``n`` with PyTorch's answers."""
    checker = CHECKERS[name]
    for c, case in enumerate(cases):
        where = f"{name}, hidden case {c + 1} of {len(cases)} ({checker.describe(case)})"
        stem = out / f"{n}_{c}"
        error_file = Path(str(stem) + ".error")
        if error_file.exists():
            with open(error_file, "rb") as f:  # a plain file (see _keep_plain_files)
                message = f.read(4000).decode(errors="replace")[:1000]
            if "NotImplementedError" in message:
                return ExerciseVerdict(name, False, f"{name} is not implemented.", c)
            return ExerciseVerdict(name, False, f"{where}: your code raised {message}", c)
        if not (Path(f"{stem}.npz").exists() and Path(f"{stem}.json").exists()):
            return ExerciseVerdict(name, False, f"{where}: produced no output", c)
        try:
            got = load_values(stem)
        except Exception as error:  # a malformed file is the submission's fault
            return ExerciseVerdict(name, False, f"{where}: unreadable output ({error})", c)
        expected = checker.expected(case)
        problems = []
        for key, value in got.items():
            if isinstance(value, Foreign) and key in expected:
                problems.append(f"{key}: expected a torch.Tensor, got {value.type_name}")
        problems += [p for p in compare_outputs(checker, got, expected)
                     if not any(p.startswith(f"{k}:") for k, v in got.items()
                                if isinstance(v, Foreign))]
        if problems:
            message = f"{where}:\n  " + "\n  ".join(problems)
            try:
                hint = checker.hint(case, got)
            except Exception:
                hint = None
            if hint:
                message += f"\n  Hint: {hint}"
            return ExerciseVerdict(name, False, message, c)
    return ExerciseVerdict(name, True, f"{name}: all {len(cases)} hidden cases passed.",
                           len(cases))


def _keep_plain_files(out: Path) -> None:
    """Delete from ``out`` everything that is not a plain file, once the sandbox is gone.

    Student code can write anything into the work directory, and this process (the grader,
    often root) reads ``out/`` *outside* the sandbox. Without this, a symlink such as
    ``out/0_0.error -> /proc/self/cwd/gradebook.db`` or ``-> /etc/shadow`` made the judge read
    a host file and quote it in the verdict (so in the student's feedback), and a FIFO or a
    link to /dev/zero made it hang or exhaust memory. Nothing runs in the sandbox any more when
    this is called (run_sandboxed has reaped its PID namespace), so nothing can race it.
    """
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


def _culprit(run: SandboxRun, out: Path, pending: list[int]) -> tuple[str, int] | None:
    """What the run was doing when it broke: ("cell", k) or ("exercise", n)."""
    started = [n for n in pending if (out / f"{n}.started").exists()
               and not (out / f"{n}.done").exists()]
    if started:
        return ("exercise", started[0])
    for cell in run.cells:
        if cell.status in ("timeout", "died", "started"):
            return ("cell", cell.index)
    return None


def grade_code(cells: list[str], names: list[str], secret: bytes, context: str,
               limits: SandboxLimits | None = None, max_runs: int = 5) -> SubmissionVerdict:
    """Grade exercises ``names`` of a submission whose code cells are ``cells``."""
    limits = limits or SandboxLimits()
    start = time.monotonic()
    verdict = SubmissionVerdict(exercises={})
    for k, source in enumerate(cells):
        if SOLUTIONS_IMPORT.search(source):
            verdict.flags.append(f"cell {k} imports the reference package `solutions`")
    tmp = Path(tempfile.mkdtemp(prefix="coursetools-grade-"))
    try:
        work = tmp / "work"
        all_cases = write_cases(work, names, secret, context)
        out = work / "out"
        out.mkdir()
        pending = list(range(len(names)))
        skipped_cells: set[int] = set()
        while pending and verdict.runs < max_runs:
            left = limits.total_timeout_s - (time.monotonic() - start)
            if left < 3:
                verdict.reasons.append("total time limit "
                                       f"{limits.total_timeout_s:g} s reached")
                break
            run_limits = SandboxLimits(**{**asdict(limits), "total_timeout_s": left})
            code = [("pass  # skipped by the grader" if k in skipped_cells else source)
                    for k, source in enumerate(cells)]
            run = run_sandboxed(code, HARNESS_SOURCE.format(only=pending), work,
                                readonly={"checks": CHECKS_DIR, "harness.py": HARNESS_FILE},
                                limits=run_limits)
            verdict.runs += 1
            if run.status == "error":
                raise RuntimeError(f"the sandbox could not run: {run.reason}")
            _keep_plain_files(out)  # before reading anything the sandbox could have written
            for n in list(pending):
                if (out / f"{n}.done").exists():
                    verdict.exercises[names[n]] = judge_exercise(names[n], n, all_cases[n], out)
                    pending.remove(n)
            if run.status == "ok" and run.reason:
                # A limit broken inside a cell that the run survived (MemoryError, process
                # limit, sys.exit): the grade stands, but the report must still say so.
                verdict.reasons.append(run.reason)
            if run.status == "ok" or not pending:
                break
            culprit = _culprit(run, out, pending)
            reason = run.reason or run.status
            if culprit is None:
                verdict.reasons.append(f"{reason}; grading stopped")
                break
            kind, index = culprit
            if kind == "exercise":
                name = names[index]
                verdict.exercises[name] = ExerciseVerdict(
                    name, False, f"{name}: {reason.replace('in the harness', 'while testing')}")
                verdict.reasons.append(f"{name}: {reason}")
                pending.remove(index)
            else:
                verdict.reasons.append(f"{reason}; cell {index} was skipped and the rest re-run")
                skipped_cells.add(index)
        for n in pending:
            verdict.exercises[names[n]] = ExerciseVerdict(
                names[n], False, f"{names[n]}: not graded ({'; '.join(verdict.reasons) or 'the run stopped'})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    verdict.wall_s = round(time.monotonic() - start, 2)
    importing = [source for source in cells if SOLUTIONS_IMPORT.search(source)]
    for name in names:
        if any(_defines(source, name.split(".")[0]) for source in importing):
            verdict.exercises[name] = ExerciseVerdict(
                name, False, f"{name}: the cell that defines it imports the reference package "
                "`solutions`, which is not allowed.")
    return verdict


def _defines(source: str, owner: str) -> bool:
    """Whether a cell defines, assigns or imports the name ``owner``."""
    name = re.escape(owner)
    return bool(re.search(rf"^\s*(def|class)\s+{name}\b|^\s*{name}\s*=|^\s*(from|import)\b.*\b{name}\b",
                          source, re.MULTILINE))

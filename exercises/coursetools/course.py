"""The instructor's workflow: release assignments, autograde a class, export grades.

    python -m coursetools release            # exercises/release/<assignment>/ for every assignment
    python -m coursetools grade              # autograde exercises/submitted/, write grades + feedback

Grading a class:

1. every submission is checked before anything runs: a missing or unreadable notebook is
   reported with a reason and scores zero; edited or deleted test cells are flagged (nbgrader
   restores them from the source, so they cannot change a grade);
2. the submissions' code is graded in the sandbox, two at a time (:mod:`coursetools.grading`);
3. nbgrader's ``autograde`` records those verdicts in the gradebook (``gradebook.db``), one
   submission at a time, and ``generate_feedback`` writes ``feedback/<student>/<assignment>/``;
4. ``grades.csv`` lists every student and assignment with the score, the points per exercise,
   the reasons (limits broken, malformed notebooks) and the flags for a human to look at.
"""

from __future__ import annotations

import copy
import csv
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .build import SOURCE_DIR, stale_files
from .grading import clean_text
from .nbgrader_setup import configure
from .spec import ASSIGNMENTS
from .verdicts import grade_notebook, is_test_cell, report_path

EXERCISES_DIR = SOURCE_DIR.parent

#: Seconds spent in each phase of the last :func:`grade` (for scripts/bench_grading.py).
LAST_TIMINGS: dict[str, float] = {}
#: Where the grader puts the checked copies of the submissions that nbgrader reads (nbgrader's
#: ``submitted_directory`` while grading): the students' own folders are never handed to it.
STAGED = ".staged"
#: Largest submitted notebook read.
MAX_NOTEBOOK_BYTES = 20 << 20


def nbgrader_api(root: Path):
    """nbgrader's Python API on the course directory ``root``, with the course's settings."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    # nbgrader runs the `alembic` command of its own environment: make sure it is on PATH even
    # when the venv is not activated (`.venv/bin/python -m coursetools ...`).
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    config = Config()
    configure(config, root)
    config.CourseDirectory.submitted_directory = STAGED
    coursedir = CourseDirectory(config=config)
    api = NbGraderAPI(coursedir=coursedir, config=config)
    api.log.setLevel(logging.ERROR)
    # nbgrader 0.9 with SQLAlchemy 2 warns about its own session use on every submission.
    warnings.filterwarnings("ignore", module="nbgrader")
    warnings.filterwarnings("ignore", message=".*not in session.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    return api


def _copy_sources(root: Path) -> None:
    """A course directory other than exercises/ gets the generated sources copied in."""
    if root.resolve() == EXERCISES_DIR.resolve():
        return
    target = root / "source"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(SOURCE_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))


def _assignment_order(name: str) -> int:
    return [a.name for a in ASSIGNMENTS].index(name)


def release(root: Path = EXERCISES_DIR, assignments: list[str] | None = None,
            due: datetime.datetime | None = None, force: bool = False) -> list[str]:
    """Generate the student version of assignments into ``root/release``.

    Policy (README, book/instructors.md): the provided code of chapter N's notebook is the
    reference solution of the chapters before it. The committed ``exercises/release/`` is the
    self-study edition (every chapter at once). In a graded course (any other ``root``),
    chapters are released one at a time, each after the deadline of every earlier chapter
    already released there: releasing one whose earlier chapter has no past due date is
    refused unless ``force``. ``due`` records the assignment's due date in the gradebook.
    """
    import torch

    threads = torch.get_num_threads()
    # The generated notebooks embed values computed with PyTorch's default thread count (their
    # last digits differ with one thread): compare under the same setting.
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        stale = stale_files()
    finally:
        torch.set_num_threads(threads)
    if stale:
        raise SystemExit(f"exercises/source is stale ({len(stale)} files): run "
                         "`python -m coursetools build` first")
    root = Path(root)
    course_mode = root.resolve() != EXERCISES_DIR.resolve()
    _copy_sources(root)
    api = nbgrader_api(root)
    wanted = assignments or [a.name for a in ASSIGNMENTS]
    if course_mode and not force:
        _check_release_order(api, wanted)
    done = []
    for assignment in wanted:
        result = api.generate_assignment(assignment, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader could not release {assignment}:\n{result['log']}")
        for cache in (root / "release" / assignment).rglob("__pycache__"):
            shutil.rmtree(cache)
        if due is not None:
            with api.gradebook as gb:
                gb.update_or_create_assignment(assignment, duedate=due)
        done.append(assignment)
    return done


def _check_release_order(api, wanted: list[str]) -> None:
    """Refuse to hand out a chapter while an earlier one, whose reference it carries, is open."""
    from nbgrader.api import MissingEntry

    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    with api.gradebook as gb:
        for assignment in wanted:
            for earlier in ASSIGNMENTS[:_assignment_order(assignment)]:
                if earlier.name in wanted:
                    continue
                try:
                    record = gb.find_assignment(earlier.name)
                except MissingEntry:
                    continue  # never released in this course
                if record.duedate is None or record.duedate > now:
                    raise SystemExit(
                        f"{assignment}'s provided code is the reference solution of "
                        f"{earlier.name}, which is still open (due date: "
                        f"{record.duedate or 'none set'}). Release {assignment} after that "
                        "deadline, set one with `release ... --due`, or pass --force.")


@dataclass
class SubmissionRow:
    student: str
    assignment: str
    score: float = 0.0
    max_score: float = 0.0
    status: str = "graded"
    exercises: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    graded_as: str = ""   # the id nbgrader knows the student by (see safe_id)


def _source_notebook(root: Path, assignment: str) -> nbformat.NotebookNode:
    return nbformat.read(root / "source" / assignment / f"{assignment}.ipynb", as_version=4)


def safe_id(folder: str) -> str:
    """The id a student folder is graded under: its name when it is plain ASCII (letters,
    digits, ``_``, ``-``, not starting with a dot), else ``student-<hash of its bytes>``.
    nbgrader globs student ids (``[``, ``]``), hides dot-folders and fails on names that are
    not UTF-8 (a Latin-1 name from an old archive): none of those reach it."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", folder):
        return folder
    digest = hashlib.sha256(os.fsencode(folder)).hexdigest()[:12]
    return f"student-{digest}"


def display_name(folder: str) -> str:
    """A folder name as text for reports: undecodable bytes shown as ``\\xNN``."""
    return clean_text(os.fsencode(folder).decode("utf-8", "backslashreplace"), 200)


def _lstat_kind(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "missing"
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def _read_plain(path: Path, max_bytes: int) -> bytes:
    """The bytes of a plain file, never following a link (O_NOFOLLOW on the file, lstat'ed
    folders above it by the caller)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a plain file")
        if info.st_size > max_bytes:
            raise ValueError(f"larger than {max_bytes >> 20} MiB")
        return f.read(max_bytes + 1)[:max_bytes]


def discover(root: Path, wanted: set[str]) -> list[tuple[str, str]]:
    """(student folder, assignment) pairs under ``root/submitted``, folder names as the file
    system gives them (undecodable bytes kept via surrogateescape)."""
    pairs = []
    submitted = Path(root) / "submitted"
    if _lstat_kind(submitted) != "dir":
        return pairs
    for student in os.scandir(submitted):
        for assignment in wanted:
            if _lstat_kind(Path(student.path) / assignment) != "missing":
                pairs.append((student.name, assignment))
    return sorted(pairs, key=lambda p: (os.fsencode(p[0]), p[1]))


def _cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    if isinstance(source, list):
        source = "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


#: The nbgrader metadata that decides grading (a change to any is restored and flagged).
GRADE_KEYS = ("grade", "solution", "locked", "points", "grade_id", "task")


def repair_notebook(data: object, source_nb: nbformat.NotebookNode
                    ) -> tuple[nbformat.NotebookNode | None, list[str]]:
    """A submission rebuilt on the source's structure: every grade cell's metadata (and every
    locked cell whole) restored from the source, foreign and duplicated grade cells made plain,
    deleted locked cells put back in place. Returns (notebook or None, flags for a human)."""
    flags: list[str] = []
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        return None, ["not a notebook (no list of cells)"]
    source_cells = {c.metadata["nbgrader"]["grade_id"]: c for c in source_nb.cells
                    if "nbgrader" in c.metadata}
    order = list(source_cells)
    cells: list[nbformat.NotebookNode] = []
    seen: set[str] = set()
    for k, raw in enumerate(data["cells"]):
        if not isinstance(raw, dict) or raw.get("cell_type") not in ("code", "markdown", "raw"):
            flags.append(f"cell {k} is not a notebook cell (dropped)")
            continue
        metadata = raw.get("metadata")
        if not isinstance(metadata, dict):
            flags.append(f"cell {k}: metadata is not a mapping (cleared)")
            metadata = {}
        metadata = copy.deepcopy(metadata)
        meta = metadata.pop("nbgrader", None)
        text = clean_text(_cell_source(raw), 1 << 20)
        kind = raw["cell_type"]
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        if meta is not None and not isinstance(meta, dict):
            flags.append(f"cell {k}: nbgrader metadata is not a mapping (ignored)")
        original = source_cells.get(grade_id) if isinstance(grade_id, str) else None
        if isinstance(meta, dict) and original is None:
            flags.append(f"cell with unknown grade_id {clean_text(grade_id, 60)!r} "
                         "(forged or renamed) ignored")
        elif original is not None and grade_id in seen:
            flags.append(f"cell {grade_id} appears twice (the copy is graded as plain code)")
            original = None
        if original is None:
            cell = (nbformat.v4.new_code_cell(text) if kind == "code" else
                    nbformat.v4.new_markdown_cell(text) if kind == "markdown" else
                    nbformat.v4.new_raw_cell(text))
            cell.metadata.update({key: value for key, value in metadata.items()
                                  if isinstance(key, str)})
            cells.append(cell)
            continue
        seen.add(grade_id)
        locked = original.metadata.nbgrader.get("locked") or is_test_cell(original)
        cell = copy.deepcopy(original)
        if locked:
            if _visible(text) != _visible(original.source) or kind != original.cell_type:
                what = "test cell" if is_test_cell(original) else "locked cell"
                flags.append(f"{what} {grade_id} was edited (restored before grading)")
        else:
            cell.source = text
            if any(meta.get(key) != original.metadata.nbgrader.get(key) for key in GRADE_KEYS):
                flags.append(f"metadata of {grade_id} was changed (restored)")
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    # Locked cells the student deleted come back where they were.
    for grade_id in order:
        original = source_cells[grade_id]
        locked = original.metadata.nbgrader.get("locked") or is_test_cell(original)
        if grade_id in seen or not locked:
            continue
        if is_test_cell(original):
            flags.append(f"test cell {grade_id} was deleted (restored before grading)")
        before = order[:order.index(grade_id)]
        at = 0
        for position, cell in enumerate(cells):
            if cell.metadata.get("nbgrader", {}).get("grade_id") in before:
                at = position + 1
        restored = copy.deepcopy(original)
        if restored.cell_type == "code":
            restored.outputs, restored.execution_count = [], None
        cells.insert(at, restored)
        seen.add(grade_id)
    nb = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(source_nb.metadata))
    nb = nbformat.from_dict(json.loads(nbformat.writes(nb)))
    nbformat.validate(nb)
    return nb, flags


def stage(root: Path, student: str, assignment: str) -> tuple[nbformat.NotebookNode | None,
                                                                 SubmissionRow]:
    """Check one submission and write the copy nbgrader will grade into ``root/.staged``:
    nothing is followed through a link, nothing but the notebook (rebuilt by
    :func:`repair_notebook`) and a valid ``timestamp.txt`` is copied."""
    root = Path(root)
    row = SubmissionRow(display_name(student), assignment, graded_as=safe_id(student))
    folder = root / "submitted" / student / assignment
    path = folder / f"{assignment}.ipynb"
    kinds = {"student folder": _lstat_kind(root / "submitted" / student),
             "assignment folder": _lstat_kind(folder), "notebook": _lstat_kind(path)}
    for what, kind in kinds.items():
        if kind == "link":
            row.status = "refused"
            row.reasons.append(f"the {what} is a symbolic link: not followed, nothing graded")
            row.flags.append(f"symbolic link as {what}")
            return None, row
    if kinds["notebook"] != "file":
        row.status = "missing notebook"
        row.reasons.append(f"no {assignment}.ipynb in the submission")
        return None, row
    extra = [entry.name for entry in os.scandir(folder)
             if entry.name != f"{assignment}.ipynb" and entry.is_symlink()]
    if extra:
        row.flags.append(f"{len(extra)} symbolic link(s) in the submission (never copied)")
    try:
        data = json.loads(_read_plain(path, MAX_NOTEBOOK_BYTES).decode("utf-8", "replace"))
        nb, flags = repair_notebook(data, _source_notebook(root, assignment))
    except Exception as error:  # not JSON, not a notebook
        nb, flags = None, [f"{type(error).__name__}"]
    row.flags += flags
    if nb is None:
        row.status = "malformed notebook"
        row.reasons.append(f"{assignment}.ipynb is not a valid notebook ({flags[-1]}); "
                           "flagged for a human")
        return None, row
    target = root / STAGED / row.graded_as / assignment
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    nbformat.write(nb, target / f"{assignment}.ipynb")
    # Grade what nbgrader will read from the staged file (cell sources joined into strings), so
    # that its autograde pass finds the verdicts computed ahead in the cache.
    nb = nbformat.read(target / f"{assignment}.ipynb", as_version=4)
    if _lstat_kind(folder / "timestamp.txt") == "file":
        try:
            from dateutil.parser import parse

            text = _read_plain(folder / "timestamp.txt", 200).decode("ascii").strip()
            parse(text)
            (target / "timestamp.txt").write_text(text)
        except Exception:
            row.flags.append("timestamp.txt unreadable (ignored)")
    return nb, row


def _visible(source: str) -> str:
    """A test cell as students see it: the release drops the hidden-tests block."""
    return source.split("### BEGIN HIDDEN TESTS")[0].strip()


def _ensure_in_gradebook(root: Path, api, assignment: str) -> None:
    """An assignment the gradebook does not know yet (a fresh clone: release/ is committed,
    gradebook.db is not) is released first, which records its cells."""
    from nbgrader.api import MissingEntry

    with api.gradebook as gb:
        try:
            gb.find_assignment(assignment)
            return
        except MissingEntry:
            pass
    release(root, [assignment], force=True)


def grade(root: Path = EXERCISES_DIR, jobs: int = 2, assignments: list[str] | None = None,
          csv_path: Path | None = None) -> list[SubmissionRow]:
    """Autograde every submission under ``root/submitted``; write grades and feedback. No
    submission can stop the batch: whatever goes wrong with one is its row's status."""
    root = Path(root)
    _copy_sources(root)
    api = nbgrader_api(root)
    wanted = set(assignments or [a.name for a in ASSIGNMENTS])
    for assignment in sorted(wanted):
        _ensure_in_gradebook(root, api, assignment)
    if (root / STAGED).exists():
        shutil.rmtree(root / STAGED)
    pairs = discover(root, wanted)

    clock = time.monotonic()
    checked: dict[tuple[str, str], tuple[nbformat.NotebookNode | None, SubmissionRow]] = {}
    for pair in pairs:
        try:
            checked[pair] = stage(root, *pair)
        except Exception as error:
            row = SubmissionRow(display_name(pair[0]), pair[1], status="grader error",
                                graded_as=safe_id(pair[0]))
            row.reasons.append(f"the submission could not be read ({type(error).__name__})")
            checked[pair] = (None, row)

    def ahead(pair):  # fill the verdict cache in parallel: nbgrader's pass is sequential
        nb, row = checked[pair]
        if nb is None:
            return
        try:
            grade_notebook(nb, root, pair[1], row.graded_as, pair[1])
        except Exception as error:
            row.status = "grader error"
            row.reasons.append(f"grading failed ({type(error).__name__}: "
                               f"{clean_text(error, 200)})")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(ahead, pairs))
    LAST_TIMINGS["sandboxed verdicts"] = time.monotonic() - clock

    # nbgrader's pass, one assignment at a time over all its students (one converter each:
    # much cheaper than one call per student); if it fails, one student at a time.
    log = {}
    for assignment in sorted({a for _, a in pairs}):
        staged = [row.graded_as for (_, a), (nb, row) in checked.items()
                  if a == assignment and nb is not None and row.status == "graded"]
        if not staged:
            continue
        clock = time.monotonic()
        try:
            log[assignment] = api.autograde(assignment, "*", force=True, create=True)
        except Exception as error:
            log[assignment] = {"error": f"{type(error).__name__}"}
        if not log[assignment].get("success", False):
            for student in staged:
                try:
                    api.autograde(assignment, student, force=True, create=True)
                except Exception:
                    pass
        LAST_TIMINGS["nbgrader autograde"] = time.monotonic() - clock
        clock = time.monotonic()
        try:
            api.generate_feedback(assignment, None, force=True)
        except Exception as error:
            log[assignment]["feedback"] = type(error).__name__
        LAST_TIMINGS["nbgrader feedback"] = time.monotonic() - clock
    rows = []
    for student, assignment in pairs:
        nb, row = checked[(student, assignment)]
        if nb is not None and row.status == "graded":
            _read_report(root, row)
            autograded = root / "autograded" / row.graded_as / assignment / f"{assignment}.ipynb"
            if not autograded.exists():
                row.status = "grader error"
                row.reasons.append("nbgrader could not autograde this submission: "
                                   f"{clean_text(log.get(assignment, {}).get('error', ''))[-300:]}")
            _move_feedback(root, student, row)
        try:
            _read_scores(api, row)
        except Exception as error:
            row.reasons.append(f"scores unreadable ({type(error).__name__})")
        rows.append(row)
    write_csv(rows, csv_path or root / "grades.csv")
    write_canvas_csv(rows, (csv_path or root / "grades.csv").with_name("grades_canvas.csv"))
    return rows


def _move_feedback(root: Path, student: str, row: SubmissionRow) -> None:
    """Feedback holds the HTML report only (nbgrader also copies the assignment's other files,
    course files included), under the student's own folder name."""
    made = root / "feedback" / row.graded_as / row.assignment
    if not made.exists():
        return
    for entry in os.scandir(made):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        elif not (entry.is_file(follow_symlinks=False) and entry.name.endswith(".html")):
            os.unlink(entry.path)
    if row.graded_as == student:
        return
    target = Path(os.fsdecode(os.path.join(os.fsencode(root / "feedback"), os.fsencode(student),
                                           os.fsencode(row.assignment))))
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(made, target)
    if not any(made.parent.iterdir()):
        made.parent.rmdir()


def _read_report(root: Path, row: SubmissionRow) -> None:
    report = report_path(root, row.graded_as, row.assignment)
    if report.exists():
        for verdict in json.loads(report.read_text()).values():
            row.reasons += verdict["reasons"]
            row.flags += verdict["flags"]
            for result in verdict["exercises"].values():
                if 0 < result.get("score", 0) < 1:
                    failed = [k for k, ok in result.get("requirements", {}).items() if not ok]
                    row.reasons.append(f"{result['name']}: partial credit "
                                       f"({result['score']:.0%}; failed: {', '.join(failed)})")


def _read_scores(api, row: SubmissionRow) -> None:
    """Scores as the gradebook holds them (zero where nothing was recorded)."""
    from nbgrader.api import MissingEntry

    with api.gradebook as gb:
        assignment = gb.find_assignment(row.assignment)
        row.max_score = assignment.max_score
        if row.status != "graded":
            return
        try:
            submission = gb.find_submission(row.assignment, row.graded_as)
        except MissingEntry:
            return
        row.score = submission.score
        for notebook in submission.notebooks:
            for g in notebook.grades:
                if g.cell_type == "code" and not g.name.startswith("test_"):
                    continue
                row.exercises[g.name.removeprefix("test_")] = g.score


def write_csv(rows: list[SubmissionRow], path: Path) -> None:
    exercise_columns = sorted({name for row in rows for name in row.exercises})
    with open(path, "w", newline="", encoding="utf-8", errors="replace") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "assignment", "score", "max_score", "status",
                         *exercise_columns, "reasons", "flags", "graded_as"])
        for row in rows:
            writer.writerow([clean_text(row.student), row.assignment, f"{row.score:g}",
                             f"{row.max_score:g}", row.status,
                             *(f"{row.exercises[c]:g}" if c in row.exercises else ""
                               for c in exercise_columns),
                             clean_text(" | ".join(row.reasons), 20000),
                             clean_text(" | ".join(row.flags), 20000), row.graded_as])


#: Canvas's gradebook import format: these columns, then one column per assignment.
CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def write_canvas_csv(rows: list[SubmissionRow], path: Path) -> None:
    """A gradebook Canvas imports (Grades > Import): one row per student, one column per
    assignment, a "Points Possible" row first. Students are matched on ``SIS Login ID``: use
    the students' Canvas login ids as their folder names under ``submitted/``."""
    assignments = sorted({row.assignment for row in rows}, key=_assignment_order)
    students = list(dict.fromkeys(row.student for row in rows))
    score = {(row.student, row.assignment): row.score for row in rows}
    maximum = {row.assignment: row.max_score for row in rows}
    with open(path, "w", newline="", encoding="utf-8", errors="replace") as f:
        writer = csv.writer(f)
        writer.writerow(CANVAS_COLUMNS + assignments)
        writer.writerow(["Points Possible", "", "", "", ""]
                        + [f"{maximum[a]:g}" for a in assignments])
        for student in students:
            writer.writerow([clean_text(student), "", "", clean_text(student), ""]
                            + [f"{score[(student, a)]:g}" if (student, a) in score else ""
                               for a in assignments])

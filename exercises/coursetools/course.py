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

import csv
import json
import logging
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .build import SOURCE_DIR, stale_files
from .nbgrader_setup import configure
from .spec import ASSIGNMENTS
from .verdicts import drop_foreign_grade_cells, grade_notebook, is_test_cell, report_path

EXERCISES_DIR = SOURCE_DIR.parent

#: Seconds spent in each phase of the last :func:`grade` (for scripts/bench_grading.py).
LAST_TIMINGS: dict[str, float] = {}


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


def release(root: Path = EXERCISES_DIR, assignments: list[str] | None = None) -> list[str]:
    """Generate the student version of every assignment into ``root/release``."""
    stale = stale_files()
    if stale:
        raise SystemExit(f"exercises/source is stale ({len(stale)} files): run "
                         "`python -m coursetools build` first")
    _copy_sources(root)
    api = nbgrader_api(root)
    done = []
    for assignment in assignments or [a.name for a in ASSIGNMENTS]:
        result = api.generate_assignment(assignment, force=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader could not release {assignment}:\n{result['log']}")
        for cache in (root / "release" / assignment).rglob("__pycache__"):
            shutil.rmtree(cache)
        done.append(assignment)
    return done


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


def _source_notebook(root: Path, assignment: str) -> nbformat.NotebookNode:
    return nbformat.read(root / "source" / assignment / f"{assignment}.ipynb", as_version=4)


def precheck(root: Path, student: str, assignment: str) -> tuple[nbformat.NotebookNode | None,
                                                                  SubmissionRow]:
    """Read a submission; say what is wrong with it; rebuild its locked cells from the source
    (as nbgrader will) so its code can be graded ahead of nbgrader's own pass."""
    row = SubmissionRow(student, assignment)
    path = root / "submitted" / student / assignment / f"{assignment}.ipynb"
    if not path.exists():
        row.status = "missing notebook"
        row.reasons.append(f"no {assignment}.ipynb in the submission")
        return None, row
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # old notebooks without cell ids are still fine
            nb = nbformat.read(path, as_version=4)
            nbformat.validate(nb)
    except Exception as error:  # not JSON, not a notebook
        row.status = "malformed notebook"
        row.reasons.append(f"{assignment}.ipynb is not a valid notebook: "
                           f"{type(error).__name__}: {str(error)[:200]}")
        return None, row
    source = {c.metadata.get("nbgrader", {}).get("grade_id"): c
              for c in _source_notebook(root, assignment).cells if "nbgrader" in c.metadata}
    for grade_id in drop_foreign_grade_cells(nb, set(source)):
        row.flags.append(f"cell with unknown grade_id {grade_id!r} (forged or renamed) ignored")
    seen = set()
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        original = source.get(grade_id)
        if original is None:
            continue
        seen.add(grade_id)
        locked = original.metadata.nbgrader.get("locked") or is_test_cell(original)
        if locked and _visible(cell.source) != _visible(original.source):
            if is_test_cell(original):
                row.flags.append(f"test cell {grade_id} was edited (restored before grading)")
            cell.source = original.source
    for grade_id, original in source.items():
        if is_test_cell(original) and grade_id not in seen:
            row.flags.append(f"test cell {grade_id} was deleted (restored before grading)")
    return nb, row


def _visible(source: str) -> str:
    """A test cell as students see it: the release drops the hidden-tests block."""
    return source.split("### BEGIN HIDDEN TESTS")[0].strip()


def grade(root: Path = EXERCISES_DIR, jobs: int = 2, assignments: list[str] | None = None,
          csv_path: Path | None = None) -> list[SubmissionRow]:
    """Autograde every submission under ``root/submitted``; write grades and feedback."""
    root = Path(root)
    _copy_sources(root)
    api = nbgrader_api(root)
    wanted = set(assignments or [a.name for a in ASSIGNMENTS])
    for assignment in sorted(wanted):
        if not (root / "release" / assignment).exists():
            release(root, [assignment])  # also records the assignment in the gradebook
    pairs = sorted((d.parent.name, d.name) for d in (root / "submitted").glob("*/*")
                   if d.is_dir() and d.name in wanted)

    clock = time.monotonic()
    checked = {pair: precheck(root, *pair) for pair in pairs}

    def ahead(pair):  # fill the verdict cache in parallel: nbgrader's pass is sequential
        nb, _ = checked[pair]
        if nb is not None:
            grade_notebook(nb, root, pair[1], pair[0], pair[1])

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(ahead, pairs))
    LAST_TIMINGS["sandboxed verdicts"] = time.monotonic() - clock

    # nbgrader's pass, one assignment at a time over all its students (one converter each:
    # much cheaper than one call per student). A submission nbgrader cannot read fails alone.
    log = {}
    for assignment in sorted({a for _, a in pairs}):
        clock = time.monotonic()
        log[assignment] = api.autograde(assignment, "*", force=True, create=True)
        LAST_TIMINGS["nbgrader autograde"] = time.monotonic() - clock
        clock = time.monotonic()
        api.generate_feedback(assignment, None, force=True)
        LAST_TIMINGS["nbgrader feedback"] = time.monotonic() - clock
    rows = []
    for student, assignment in pairs:
        nb, row = checked[(student, assignment)]
        if nb is not None:
            _read_report(root, row)
            if not (root / "autograded" / student / assignment / f"{assignment}.ipynb").exists():
                row.status = "grader error"
                row.reasons.append("nbgrader could not autograde this submission: "
                                   f"{log[assignment].get('error', '')[-300:]}")
        _read_scores(api, row)
        rows.append(row)
    write_csv(rows, csv_path or root / "grades.csv")
    return rows


def _read_report(root: Path, row: SubmissionRow) -> None:
    report = report_path(root, row.student, row.assignment)
    if report.exists():
        for verdict in json.loads(report.read_text()).values():
            row.reasons += verdict["reasons"]
            row.flags += verdict["flags"]


def _read_scores(api, row: SubmissionRow) -> None:
    """Scores as the gradebook holds them (zero where nothing was recorded)."""
    from nbgrader.api import MissingEntry

    with api.gradebook as gb:
        assignment = gb.find_assignment(row.assignment)
        row.max_score = assignment.max_score
        try:
            submission = gb.find_submission(row.assignment, row.student)
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
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "assignment", "score", "max_score", "status",
                         *exercise_columns, "reasons", "flags"])
        for row in rows:
            writer.writerow([row.student, row.assignment, f"{row.score:g}", f"{row.max_score:g}",
                             row.status,
                             *(f"{row.exercises[c]:g}" if c in row.exercises else ""
                               for c in exercise_columns),
                             " | ".join(row.reasons), " | ".join(row.flags)])

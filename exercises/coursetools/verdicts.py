"""nbgrader preprocessors that put the sandboxed verdicts into the gradebook.

``SandboxedVerdicts`` takes the place of nbgrader's ``Execute`` in ``Autograde``. It receives
the sanitised submission (locked cells already restored from the source by nbgrader's
``OverwriteCells``), grades its code with :func:`coursetools.grading.grade_code`, and writes
each test cell's verdict as that cell's output: a pass is a line of text, a failure an error
output. nbgrader's own ``SaveAutoGrades`` then scores the cells as usual (an error output scores
zero), so the gradebook, the exports and the feedback are nbgrader's, and the scores are ours.

``StripFeedback`` removes tracebacks and anything that could quote hidden tests from the
feedback notebooks.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

from nbformat import NotebookNode
from nbformat.v4 import new_output
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Unicode

from .grading import SubmissionVerdict, grade_code
from .spec import ASSIGNMENTS


def report_path(root: Path, student: str, assignment: str) -> Path:
    """Where the grader's report on a submission goes (for the instructor, not the student:
    it is outside autograded/ and feedback/)."""
    return Path(root) / "reports" / student / f"{assignment}.json"


def exercise_names_by_test_cell(assignment: str) -> dict[str, str]:
    """grade_id of each test cell -> the exercise it checks."""
    for a in ASSIGNMENTS:
        if a.name == assignment:
            return {f"test_{item.grade_id}": item.name for item in a.items
                    if hasattr(item, "grade_id")}
    raise KeyError(f"unknown assignment {assignment!r}")


def is_test_cell(cell: NotebookNode) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and meta.get("grade") and not meta.get("solution")


def code_to_run(nb: NotebookNode) -> list[str]:
    """The code cells that run in the sandbox: everything but the test cells."""
    return [cell.source for cell in nb.cells if cell.cell_type == "code" and not is_test_cell(cell)]


def course_secret(root: Path) -> bytes:
    """The course's grading secret (created on first use; keep it out of students' reach)."""
    path = Path(root) / ".grading_secret"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


#: Part of every cache key: a verdict made by another version of the grader is not reused.
GRADER_VERSION = "3"


def cache_key(cells: list[str], names: list[str], context: str) -> str:
    return hashlib.sha256(json.dumps([GRADER_VERSION, cells, names, context]).encode()
                          ).hexdigest()


class VerdictCache:
    """Verdicts computed ahead (in parallel) by ``coursetools grade``, keyed by what was graded,
    so that nbgrader's sequential autograde finds them instead of running the code again."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> SubmissionVerdict | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            return SubmissionVerdict.from_json(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError):
            return None

    def put(self, key: str, verdict: SubmissionVerdict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path(key).write_text(json.dumps(verdict.to_json()))


def grade_notebook(nb: NotebookNode, root: Path, assignment: str, student: str,
                   notebook: str) -> SubmissionVerdict:
    """Grade a (sanitised) submission, using the verdict cache when it has this exact code."""
    # Every exercise of the assignment is graded, whatever test cells the submission kept:
    # nbgrader puts deleted test cells back before scoring.
    names = list(exercise_names_by_test_cell(assignment).values())
    cells = code_to_run(nb)
    context = f"{student}/{assignment}/{notebook}"
    key = cache_key(cells, names, context)
    cache = VerdictCache(Path(root) / ".verdict_cache")
    verdict = cache.get(key)
    if verdict is None:
        verdict = grade_code(cells, names, course_secret(root), context)
        cache.put(key, verdict)
    return verdict


class SandboxedVerdicts(NbGraderPreprocessor):
    """Autograde step: sandboxed run + verdicts decided outside, written as test outputs."""

    course_root = Unicode("", help="Course directory (defaults to CourseDirectory.root)."
                          ).tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        info = resources["nbgrader"]
        root = Path(self.course_root or self.config.CourseDirectory.root or ".")
        assignment, student, notebook = info["assignment"], info["student"], info["notebook"]
        verdict = grade_notebook(nb, root, assignment, student, notebook)
        by_cell = exercise_names_by_test_cell(assignment)
        for cell in nb.cells:
            if not is_test_cell(cell):
                continue
            name = by_cell.get(cell.metadata.nbgrader.get("grade_id"))
            result = verdict.exercises.get(name) if name else None
            if result is not None and result.passed:
                cell.outputs = [new_output("stream", name="stdout", text=result.message + "\n")]
            elif result is not None and 0 < result.score < 1:
                # nbgrader's partial credit: a test cell whose result is a number scores it.
                points = float(cell.metadata.nbgrader.get("points", 0))
                cell.outputs = [
                    new_output("stream", name="stdout", text=result.message + "\n"),
                    new_output("execute_result", data={"text/plain": f"{points * result.score:g}"},
                               execution_count=None)]
            else:
                message = result.message if result else "this test cell is not recognised"
                cell.outputs = [new_output("error", ename="CheckFailed", evalue=message,
                                           traceback=[f"CheckFailed: {message}"])]
            cell.execution_count = None
        report_file = report_path(root, student, assignment)
        report_file.parent.mkdir(parents=True, exist_ok=True)
        reports = {}
        if report_file.exists():
            reports = json.loads(report_file.read_text())
        reports[notebook] = verdict.to_json()
        report_file.write_text(json.dumps(reports, indent=1))  # ASCII: escapes everything
        return nb, resources


def drop_foreign_grade_cells(nb: NotebookNode, known_ids: set[str]) -> list[str]:
    """Turn cells whose nbgrader ``grade_id`` the source does not have (a forged test cell, a
    renamed one) into plain cells; return their ids. nbgrader would otherwise fail on the
    whole notebook; the source's own cells come back through nbgrader's OverwriteCells."""
    dropped = []
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if "nbgrader" in cell.metadata and grade_id not in known_ids:
            del cell.metadata["nbgrader"]
            dropped.append(str(grade_id))
    return dropped


class DropForeignGradeCells(NbGraderPreprocessor):
    """First sanitising step of autograde: see :func:`drop_foreign_grade_cells`."""

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        from nbgrader.api import Gradebook

        info = resources["nbgrader"]
        with Gradebook(info["db_url"]) as gb:
            source = gb.find_notebook(info["notebook"], info["assignment"])
            known = {cell.name for cell in source.source_cells}
        drop_foreign_grade_cells(nb, known)
        return nb, resources


class StripFeedback(NbGraderPreprocessor):
    """Feedback step: keep verdict messages, drop tracebacks and hidden-test remnants."""

    def preprocess_cell(self, cell: NotebookNode, resources: dict, index: int):
        if cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if output.output_type == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
            if "BEGIN HIDDEN TESTS" in cell.source:
                cell.source = cell.source.split("### BEGIN HIDDEN TESTS")[0].rstrip()
        return cell, resources

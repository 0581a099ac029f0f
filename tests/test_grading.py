"""The instructor's round trip with real nbgrader and real sandboxed runs: release, submit,
autograde, feedback, export, on a generated class:

* a blank submission scores zero, a correct one full marks;
* every common mistake of tests/mistakes/ loses the points of its exercise and only those;
* every honest variant (einsum, loops, float64 inside, a warning) gets full marks;
* malformed submissions (not JSON, no notebook, edited/deleted test cells, an exception in
  every cell) are reported with a reason and the batch carries on;
* feedback shows no hidden tests, no tracebacks and no solution code;
* grading again gives the same grades.
"""

from __future__ import annotations

import csv
import importlib
import json
import pkgutil
import shutil
import threading
from pathlib import Path

import pytest
import torch

from coursetools import course, grading
from coursetools.checks.core import CHECKERS
from coursetools.spec import ASSIGNMENTS, Exercise

import mistakes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "exercises" / "source"
RELEASE = ROOT / "exercises" / "release"

EXERCISE = {i.name: (a, i) for a in ASSIGNMENTS for i in a.items if isinstance(i, Exercise)}
MISTAKES = [m for mod in pkgutil.iter_modules(mistakes.__path__)
            for m in importlib.import_module(f"mistakes.{mod.name}").MISTAKES]
VARIANTS = [v for mod in pkgutil.iter_modules(mistakes.__path__)
            for v in importlib.import_module(f"mistakes.{mod.name}").VARIANTS]
MAX = {a.name: sum(i.points for i in a.items if isinstance(i, Exercise)) for a in ASSIGNMENTS}


def completed(assignment: str, replace: dict[str, str] | None = None) -> dict:
    """The release notebook with every answer cell filled in from the instructor's source, as
    a student who solved everything would submit it; ``replace`` swaps some answer cells."""
    nb = json.loads((RELEASE / assignment / f"{assignment}.ipynb").read_text())
    answers = {c["id"]: c["source"] for c in
               json.loads((SOURCE / assignment / f"{assignment}.ipynb").read_text())["cells"]}
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("solution"):
            cell["source"] = (replace or {}).get(cell["id"], answers[cell["id"]])
    return nb


def submit(root: Path, student: str, assignment: str, nb: dict | str | None) -> None:
    folder = root / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    if nb is None:
        return
    text = nb if isinstance(nb, str) else json.dumps(nb)
    (folder / f"{assignment}.ipynb").write_text(text)


def _one_per_exercise(items):
    """The first of each exercise's entries. Every mistake and variant is checked in-process
    against both checks (the student's and the grader's) by test_checks.py; the round trip
    checks, for one of each per exercise, that the sandboxed judge and nbgrader agree."""
    seen, chosen = set(), []
    for item in items:
        if item.exercise not in seen:
            seen.add(item.exercise)
            chosen.append(item)
    return chosen


def _mistake_students():
    return {f"mistake{i:03d}": m for i, m in enumerate(_one_per_exercise(MISTAKES))}


def _variant_students():
    return {f"variant{i:03d}": v for i, v in enumerate(_one_per_exercise(VARIANTS))}


@pytest.fixture(scope="module")
def graded(tmp_path_factory, released_course):
    root = tmp_path_factory.mktemp("graded") / "course"
    shutil.copytree(released_course, root)
    for a in ASSIGNMENTS:
        submit(root, "blank", a.name, json.loads(
            (RELEASE / a.name / f"{a.name}.ipynb").read_text()))
        submit(root, "correct", a.name, completed(a.name))
    for student, m in _mistake_students().items():
        assignment, exercise = EXERCISE[m.exercise]
        submit(root, student, assignment.name,
               completed(assignment.name, {exercise.owner_id: m.cell}))
    for student, v in _variant_students().items():
        assignment, exercise = EXERCISE[v.exercise]
        submit(root, student, assignment.name,
               completed(assignment.name, {exercise.owner_id: v.cell}))
    # Malformed submissions, all on chapter 1.
    a1 = "ch01_attention"
    submit(root, "notjson", a1, "{ this is not a notebook")
    submit(root, "nonotebook", a1, None)
    tampered = completed(a1)
    tampered["cells"] = [c for c in tampered["cells"] if c["id"] != "test_softmax"]
    for c in tampered["cells"]:
        if c["id"] == "test_padding_mask":
            c["source"] = "print('all tests passed')"
    submit(root, "tampered", a1, tampered)
    crashing = completed(a1)
    for c in crashing["cells"]:
        if c["cell_type"] == "code":
            c["source"] = "raise RuntimeError('boom')"
    submit(root, "crashing", a1, crashing)
    rows = course.grade(root, jobs=2)
    return root, {(r.student, r.assignment): r for r in rows}


@pytest.mark.parametrize("name", ["train_step", "forward_flops"])
def test_references_computed_in_parallel_threads_agree(name):
    """course.grade judges submissions in threads, and these references use process-wide
    state (train_step seeds the global generator for its dropout masks, forward_flops picks
    the attention backend). Computed concurrently (without the judge's lock about 1 in 4 of
    train_step's disagreed), every reference must equal the one computed alone."""
    checker = CHECKERS[name]
    cases = checker.cases(torch.Generator().manual_seed(0), hidden=True)
    alone = [checker.expected(case) for case in cases]
    wrong = []

    def judge():
        for _ in range(4):
            for case, want in zip(cases, alone):
                got = grading.reference(checker, case)
                wrong.extend(key for key, value in want.items()
                             if isinstance(value, torch.Tensor)
                             and not torch.equal(value, got[key]))

    workers = [threading.Thread(target=judge) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not wrong, wrong


def test_blank_scores_zero_and_correct_full_marks(graded):
    _, rows = graded
    for a in ASSIGNMENTS:
        assert rows[("blank", a.name)].score == 0, rows[("blank", a.name)]
        correct = rows[("correct", a.name)]
        assert correct.score == MAX[a.name] == correct.max_score, correct


@pytest.mark.parametrize("student", list(_mistake_students()))
def test_each_mistake_loses_points_on_its_exercise_only(graded, student):
    _, rows = graded
    mistake = _mistake_students()[student]
    assignment, exercise = EXERCISE[mistake.exercise]
    row = rows[(student, assignment.name)]
    # Partial credit: the requirements the mistake breaks cost their share, never more.
    got = row.exercises[exercise.grade_id]
    assert got < exercise.points, (mistake.description, row)
    others = {k: v for k, v in row.exercises.items() if k != exercise.grade_id}
    full = {i.grade_id: i.points for i in assignment.items
            if isinstance(i, Exercise) and i.grade_id != exercise.grade_id}
    assert others == full, (mistake.description, row.exercises)
    assert row.score == pytest.approx(MAX[assignment.name] - exercise.points + got)
    if got > 0:
        assert any(f"{exercise.name}: partial credit" in r for r in row.reasons), row


@pytest.mark.parametrize("student", list(_variant_students()))
def test_honest_variants_get_full_marks(graded, student):
    _, rows = graded
    variant = _variant_students()[student]
    assignment, _ = EXERCISE[variant.exercise]
    row = rows[(student, assignment.name)]
    assert row.score == MAX[assignment.name], (variant.description, row)


def test_malformed_submissions_are_reported_and_the_batch_carries_on(graded):
    _, rows = graded
    a1 = "ch01_attention"
    assert rows[("notjson", a1)].status == "malformed notebook"
    assert "not a valid notebook" in rows[("notjson", a1)].reasons[0]
    assert rows[("nonotebook", a1)].status == "missing notebook"
    assert rows[("notjson", a1)].score == rows[("nonotebook", a1)].score == 0
    tampered = rows[("tampered", a1)]
    assert tampered.score == MAX[a1]  # the edits changed nothing: the answers are right
    assert any("test_softmax was deleted" in f for f in tampered.flags)
    assert any("test_padding_mask was edited" in f for f in tampered.flags)
    crashing = rows[("crashing", a1)]
    assert crashing.status == "graded" and crashing.score == 0


def test_grades_csv_lists_every_submission(graded):
    root, rows = graded
    with open(root / "grades.csv") as f:
        table = list(csv.DictReader(f))
    assert {(r["student"], r["assignment"]) for r in table} == set(rows)
    assert {"student", "assignment", "score", "max_score", "reasons", "flags"} <= set(table[0])


def _solution_lines(assignment: str) -> set[str]:
    """Distinctive lines of the instructor's answers (inside the solution markers)."""
    nb = json.loads((SOURCE / assignment / f"{assignment}.ipynb").read_text())
    lines = set()
    for cell in nb["cells"]:
        inside = False
        for line in "".join(cell["source"]).splitlines():
            if "### BEGIN SOLUTION" in line:
                inside = True
            elif "### END SOLUTION" in line:
                inside = False
            elif inside and len(line.strip()) > 25:
                lines.add(line.strip())
    # A line the students' own notebook already shows (e.g. an import the prompt names) is
    # not a solution.
    released = (RELEASE / assignment / f"{assignment}.ipynb").read_text()
    return {line for line in lines if json.dumps(line)[1:-1] not in released}


def test_feedback_hides_hidden_tests_tracebacks_and_solutions(graded):
    import html

    root, _ = graded
    for a in ASSIGNMENTS:
        for student in ("blank", "correct"):
            page = root / "feedback" / student / a.name / f"{a.name}.html"
            text = html.unescape(page.read_text())
            assert "BEGIN HIDDEN TESTS" not in text and "hidden=True" not in text, page
            assert "Traceback (most recent call last)" not in text, page
        blank = html.unescape((root / "feedback" / "blank" / a.name / f"{a.name}.html")
                              .read_text())
        leaked = [line for line in _solution_lines(a.name) if line in blank]
        assert not leaked, f"{a.name} feedback shows solution code: {leaked[:3]}"
        assert "not implemented" in blank


def test_feedback_says_what_is_wrong(graded):
    import html

    root, rows = graded
    student = next(s for s, m in _mistake_students().items()
                   if m.exercise == "scaled_dot_product_attention" and m.hint == "sqrt(d_k)")
    page = root / "feedback" / student / "ch01_attention" / "ch01_attention.html"
    text = html.unescape(page.read_text())
    assert "largest error" in text and "sqrt(d_k)" in text


def test_each_submission_runs_in_the_sandbox_once(graded):
    """nbgrader's sequential pass must find the verdicts computed ahead in parallel: one cache
    entry per graded submission (two would mean its code ran twice, the second time alone)."""
    root, rows = graded
    ran = [row for row in rows.values() if row.status == "graded"]
    assert len(ran) > 100
    assert len(list((root / ".verdict_cache").glob("*.json"))) == len(ran)


def test_grading_again_gives_the_same_grades(graded):
    root, rows = graded
    shutil.rmtree(root / ".verdict_cache")
    again = course.grade(root, jobs=2, assignments=["ch01_attention"])
    for row in again:
        first = rows[(row.student, row.assignment)]
        assert (row.score, row.exercises, row.status) == (first.score, first.exercises,
                                                          first.status), row.student


def test_grade_on_a_fresh_clone_needs_no_release(tmp_path):
    """A course directory whose gradebook has never seen the assignment (a fresh clone:
    release/ is committed, gradebook.db is not) is graded without a separate `release`."""
    a1 = "ch01_attention"
    submit(tmp_path, "alice", a1, completed(a1))
    rows = course.grade(tmp_path, jobs=1, assignments=[a1])
    assert [(r.student, r.score, r.status) for r in rows] == [("alice", MAX[a1], "graded")]


def test_release_waits_for_the_earlier_deadlines(tmp_path):
    """In a course, chapter 2 (which provides chapter 1's reference) is not released while
    chapter 1 is still open, unless forced."""
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    course.release(tmp_path, ["ch01_attention"], due=now + datetime.timedelta(days=7))
    with pytest.raises(SystemExit, match="still open"):
        course.release(tmp_path, ["ch02_multihead"])
    past = now - datetime.timedelta(days=1)
    assert course.release(tmp_path, ["ch02_multihead"], due=past, force=True) == [
        "ch02_multihead"]
    with pytest.raises(SystemExit, match="ch01_attention"):
        course.release(tmp_path, ["ch03_embeddings"])
    course.release(tmp_path, ["ch01_attention"], due=past)
    assert course.release(tmp_path, ["ch03_embeddings"]) == ["ch03_embeddings"]


def test_partial_credit_is_what_nbgrader_scores(tmp_path, monkeypatch):
    """SandboxedVerdicts writes a partial score as the test cell's result (nbgrader's partial
    credit) next to a line that says why; nbgrader's own scoring reads it."""
    import nbformat
    from nbgrader.utils import determine_grade

    from coursetools import verdicts
    from coursetools.grading import ExerciseVerdict, SubmissionVerdict

    a1 = "ch01_attention"
    nb = nbformat.reads(json.dumps(completed(a1)), as_version=4)
    partial = ExerciseVerdict("scaled_dot_product_attention", False,
                              "3 of 4 requirements met (failed: dropout)", 5, 0.75,
                              {"values": True, "dropout": False})
    verdict = SubmissionVerdict({"softmax": ExerciseVerdict("softmax", True, "ok", 4, 1.0),
                                 "scaled_dot_product_attention": partial,
                                 "padding_mask": ExerciseVerdict("padding_mask", False, "no")})
    monkeypatch.setattr(verdicts, "grade_notebook", lambda *args: verdict)
    step = verdicts.SandboxedVerdicts(course_root=str(tmp_path))
    nb, _ = step.preprocess(nb, {"nbgrader": {"assignment": a1, "student": "s",
                                              "notebook": a1}})
    grades = {c.metadata.nbgrader["grade_id"]: determine_grade(c)[0] for c in nb.cells
              if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"}
    points = {i.grade_id: i.points for a in ASSIGNMENTS if a.name == a1 for i in a.items
              if isinstance(i, Exercise)}
    assert grades["test_softmax"] == points["softmax"]
    assert grades["test_scaled_dot_product_attention"] == pytest.approx(
        0.75 * points["scaled_dot_product_attention"])
    assert grades["test_padding_mask"] == 0
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id")
                == "test_scaled_dot_product_attention")
    assert "failed: dropout" in cell.outputs[0]["text"]

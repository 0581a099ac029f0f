"""The checkers (exercises/coursetools/checks) against the reference solutions, blank stubs,
honest variants and common mistakes, run in-process on the generated source notebooks.

Two checks exist for every exercise and both are tested here:

* the student's, packed into the notebook (visible cases frozen with their answers);
* the grader's, :func:`coursetools.checks.core.check` with ``hidden=True`` (other shapes and
  values, each exercise isolated from the others by PyTorch stand-ins).

"Validate tells the truth": every common mistake must fail the student's visible check, not
only the grader's hidden one.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import pytest
import torch

from coursetools import student
from coursetools.checks import CHECKERS
from coursetools.checks.core import check as grader_check
from coursetools.checks.runtime import resolve
from coursetools.spec import ASSIGNMENTS, Exercise, Provided

import mistakes
from notebook_ns import namespace, released_cell

EXERCISES = [(a.name, item) for a in ASSIGNMENTS for item in a.items if isinstance(item, Exercise)]
ASSIGNMENT_OF = {ex.name: (name, ex) for name, ex in EXERCISES}
PROVIDED = {a.name: [i.target.partition(":")[2] for i in a.items if isinstance(i, Provided)]
            for a in ASSIGNMENTS}
MISTAKES = [m for mod in pkgutil.iter_modules(mistakes.__path__)
            for m in importlib.import_module(f"mistakes.{mod.name}").MISTAKES]
VARIANTS = [v for mod in pkgutil.iter_modules(mistakes.__path__)
            for v in importlib.import_module(f"mistakes.{mod.name}").VARIANTS]


def _object(ns: dict, exercise_name: str):
    return ns[exercise_name.split(".")[0]]


def _hidden(assignment: str, ns: dict, name: str) -> None:
    grader_check(name, _object(ns, name), hidden=True, seed=12345, quiet=True,
                 provided=PROVIDED[assignment])


@pytest.mark.parametrize("assignment,exercise", EXERCISES, ids=[e.name for _, e in EXERCISES])
def test_reference_solution_passes_visible_and_hidden(assignment, exercise, capsys):
    ns = namespace(assignment)
    ns["check"](exercise.name, _object(ns, exercise.name))  # raises CheckFailed when wrong
    assert "visible cases pass" in capsys.readouterr().out
    _hidden(assignment, ns, exercise.name)


@pytest.mark.parametrize("assignment,exercise", EXERCISES, ids=[e.name for _, e in EXERCISES])
def test_blank_stub_fails_with_not_implemented(assignment, exercise):
    blank = released_cell(assignment, exercise.owner_id)  # what nbgrader gives students
    ns = namespace(assignment, {exercise.owner_id: blank})
    with pytest.raises(AssertionError, match="not implemented yet"):
        ns["check"](exercise.name, _object(ns, exercise.name))


@pytest.mark.parametrize("mistake", MISTAKES, ids=[f"{m.exercise}:{m.description}" for m in MISTAKES])
def test_common_mistake_fails_the_visible_check_with_its_hint(mistake):
    """The measure of "Validate tells the truth": what the grade catches, the student's own
    visible check catches first, with the hint."""
    assignment, exercise = ASSIGNMENT_OF[mistake.exercise]
    ns = namespace(assignment, {exercise.owner_id: mistake.cell})
    with pytest.raises(AssertionError) as failure:
        ns["check"](mistake.exercise, _object(ns, mistake.exercise))
    if mistake.hint:  # messages are wrapped for the notebook: compare words
        assert " ".join(mistake.hint.split()) in " ".join(str(failure.value).split())
    with pytest.raises(AssertionError):  # and the grade takes the points
        _hidden(assignment, ns, mistake.exercise)


@pytest.mark.parametrize("variant", VARIANTS, ids=[f"{v.exercise}:{v.description}" for v in VARIANTS])
def test_honest_variant_passes(variant):
    assignment, exercise = ASSIGNMENT_OF[variant.exercise]
    ns = namespace(assignment, {exercise.owner_id: variant.cell})
    ns["check"](variant.exercise, _object(ns, variant.exercise))
    _hidden(assignment, ns, variant.exercise)


def test_every_exercise_has_a_checker():
    assert {e.name for _, e in EXERCISES} <= set(CHECKERS)


def test_every_assignment_has_mistakes_and_variants():
    covered = {m.exercise for m in MISTAKES} | {v.exercise for v in VARIANTS}
    for assignment in ASSIGNMENTS:
        names = {i.name for i in assignment.items if isinstance(i, Exercise)}
        assert names & covered, f"{assignment.name} has no mistakes or variants"


@pytest.mark.parametrize("name", sorted({e.name for _, e in EXERCISES}))
def test_visible_cases_cover_every_requirement(name):
    """Hidden cases re-check what the visible ones check, nothing new."""
    checker = CHECKERS[name]
    visible = set(checker.requirements())
    hidden = {c.get("requirement", "values")
              for c in checker.cases(torch.Generator().manual_seed(7), hidden=True)}
    assert hidden <= visible, f"hidden-only requirements: {hidden - visible}"


@pytest.mark.parametrize("name", sorted({e.name for _, e in EXERCISES}))
def test_forbidden_calls_exist_in_this_torch(name):
    for call in CHECKERS[name].forbidden:
        assert resolve(call) is not None, call


# --- what students receive -------------------------------------------------------------------------


def _bundle(assignment) -> types.ModuleType:
    module = types.ModuleType("course_checks")
    module.__file__ = "<course checks>"
    exec(compile(student.bundle_source(assignment), module.__file__, "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=[a.name for a in ASSIGNMENTS])
def test_no_code_in_a_notebook_answers_its_exercises(assignment):
    """The student's copy of the checks holds no oracle: not one of its functions or classes
    (or their methods), put in place of an exercise, passes that exercise's visible check."""
    bundle = _bundle(assignment)
    candidates = []
    for value in vars(bundle).values():
        if inspect.isfunction(value) and value.__module__ == bundle.__name__:
            candidates.append(value)
        elif inspect.isclass(value) and value.__module__ == bundle.__name__:
            candidates.append(value)
            candidates += [m for m in vars(value).values() if inspect.isfunction(m)]
    assert candidates
    exercises = [i for i in assignment.items if isinstance(i, Exercise)]
    for exercise in exercises:
        for candidate in candidates:
            ns = namespace(assignment.name)
            if exercise.method:
                if not inspect.isfunction(candidate):
                    continue
                setattr(ns[exercise.owner], exercise.method, candidate)
            else:
                ns[exercise.name] = candidate
            with pytest.raises(AssertionError):
                ns["check"](exercise.name, ns[exercise.name.split(".")[0]])


@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=[a.name for a in ASSIGNMENTS])
def test_notebook_checks_hold_no_hidden_cases_and_stay_small(assignment):
    source = student.bundle_source(assignment)
    for word in ("hidden=True", "def oracle", "def expected", "def mistakes", "secret"):
        assert word not in source, word
    data = _bundle(assignment).DATA
    for name, entry in data["exercises"].items():
        visible = CHECKERS[name].cases(torch.Generator().manual_seed(0), hidden=False)
        assert len(entry["cases"]) == len(visible)
    assert len(student.setup_cell_code(assignment, "")) < 100_000


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_expected_outputs_are_values_the_grader_can_carry(name):
    """At grading, a student's outputs leave the sandbox as tensors or plain bool, int, float
    and str (``harness.save_values``); a tuple or list arrives as its kind only, so no answer
    could ever match an expected output of that type."""
    checker = CHECKERS[name]
    for hidden in (False, True):
        for case in checker.cases(torch.Generator().manual_seed(12345), hidden):
            for key, value in checker.expected(case).items():
                assert isinstance(value, torch.Tensor | bool | int | float | str), (key, value)

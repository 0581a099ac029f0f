"""The checkers (exercises/coursetools/checks) against the reference solutions, blank stubs,
honest variants and common mistakes, run in-process on the generated source notebooks."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

from coursetools.spec import ASSIGNMENTS, Exercise

import mistakes
from notebook_ns import namespace, released_cell

EXERCISES = [(a.name, item) for a in ASSIGNMENTS for item in a.items if isinstance(item, Exercise)]
ASSIGNMENT_OF = {ex.name: (name, ex) for name, ex in EXERCISES}
MISTAKES = [m for mod in pkgutil.iter_modules(mistakes.__path__)
            for m in importlib.import_module(f"mistakes.{mod.name}").MISTAKES]
VARIANTS = [v for mod in pkgutil.iter_modules(mistakes.__path__)
            for v in importlib.import_module(f"mistakes.{mod.name}").VARIANTS]


def _checks(assignment):
    ns = namespace(assignment)
    return ns, ns["check"]


@pytest.mark.parametrize("assignment,exercise", EXERCISES, ids=[e.name for _, e in EXERCISES])
def test_reference_solution_passes_visible_and_hidden(assignment, exercise):
    ns, check = _checks(assignment)
    obj = ns[exercise.name.split(".")[0]]
    check(exercise.name, obj, quiet=True)  # raises CheckFailed on a wrong answer
    check(exercise.name, obj, hidden=True, seed=12345, quiet=True)


@pytest.mark.parametrize("assignment,exercise", EXERCISES, ids=[e.name for _, e in EXERCISES])
def test_blank_stub_fails_with_not_implemented(assignment, exercise):
    blank = released_cell(assignment, exercise.owner_id)  # what nbgrader gives students
    ns = namespace(assignment, {exercise.owner_id: blank})
    with pytest.raises(AssertionError, match="not implemented yet"):
        ns["check"](exercise.name, ns[exercise.name.split(".")[0]], quiet=True)


@pytest.mark.parametrize("mistake", MISTAKES, ids=[f"{m.exercise}:{m.description}" for m in MISTAKES])
def test_common_mistake_fails_with_hint(mistake):
    assignment, exercise = ASSIGNMENT_OF[mistake.exercise]
    ns = namespace(assignment, {exercise.owner_id: mistake.cell})
    obj = ns[mistake.exercise.split(".")[0]]
    with pytest.raises(AssertionError) as failure:
        ns["check"](mistake.exercise, obj, quiet=True)
        ns["check"](mistake.exercise, obj, hidden=True, seed=12345, quiet=True)
    if mistake.hint:
        assert mistake.hint in str(failure.value)


@pytest.mark.parametrize("variant", VARIANTS, ids=[f"{v.exercise}:{v.description}" for v in VARIANTS])
def test_honest_variant_passes(variant):
    assignment, exercise = ASSIGNMENT_OF[variant.exercise]
    ns = namespace(assignment, {exercise.owner_id: variant.cell})
    obj = ns[variant.exercise.split(".")[0]]
    ns["check"](variant.exercise, obj, quiet=True)
    ns["check"](variant.exercise, obj, hidden=True, seed=12345, quiet=True)


def test_every_exercise_has_a_checker():
    from coursetools.checks import CHECKERS

    assert {e.name for _, e in EXERCISES} <= set(CHECKERS)


def test_every_assignment_has_mistakes_and_variants():
    covered = {m.exercise for m in MISTAKES} | {v.exercise for v in VARIANTS}
    for assignment in ASSIGNMENTS:
        names = {i.name for i in assignment.items if isinstance(i, Exercise)}
        assert names & covered, f"{assignment.name} has no mistakes or variants"

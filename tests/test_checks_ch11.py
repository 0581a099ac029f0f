"""Chapter 11's checkers against the reference solutions, honest variants and common mistakes.

Unlike test_checks.py this runs the code straight from the package (the cells a notebook would
get: the setup, the provided code and the solutions, in the spec's order) and checks it with
the grader's check (:func:`coursetools.checks.check`: the checkers' own mistakes, symptoms and
advice), so it does not need the generated notebooks. Also checks the two conventions of chapter 11's checkers: every case
names its requirement, the visible cases cover them all, and the reference solutions use none
of the ``forbidden`` calls.
"""

from __future__ import annotations

import itertools
import sys
import types

import pytest
import torch

from coursetools.build import object_source
from coursetools.checks import CHECKERS, check
from coursetools.spec import ASSIGNMENTS, SETUP_CODE, Exercise

from mistakes.ch11 import MISTAKES, VARIANTS

ASSIGNMENT = next(a for a in ASSIGNMENTS if a.name == "ch11_modern")
EXERCISES = [i for i in ASSIGNMENT.items if isinstance(i, Exercise)]
BY_NAME = {e.name: e for e in EXERCISES}
_counter = itertools.count()


def cells() -> list[tuple[str, str]]:
    """(cell id, code) in the notebook's order, solutions included."""
    out, seen = [("setup", SETUP_CODE)], set()
    for item in ASSIGNMENT.items:
        target = item.owner_target if isinstance(item, Exercise) else item.target
        cell_id = item.owner_id if isinstance(item, Exercise) else target.partition(":")[2]
        if cell_id not in seen:
            seen.add(cell_id)
            out.append((cell_id, object_source(target)))
    return out


def namespace(replace: dict[str, str] | None = None) -> dict:
    module = types.ModuleType(f"notebook_ch11_{next(_counter)}")
    sys.modules[module.__name__] = module
    ns = module.__dict__
    for cell_id, code in cells():
        exec(compile((replace or {}).get(cell_id, code), f"<ch11:{cell_id}>", "exec"), ns)
    ns["check"] = check  # the grader's check (the notebook's own is tested in test_checks.py)
    return ns


@pytest.mark.parametrize("exercise", EXERCISES, ids=[e.name for e in EXERCISES])
def test_reference_solution_passes_visible_and_hidden(exercise):
    ns = namespace()
    ns["check"](exercise.name, ns[exercise.name], quiet=True)
    ns["check"](exercise.name, ns[exercise.name], hidden=True, seed=12345, quiet=True)


@pytest.mark.parametrize("mistake", MISTAKES, ids=[f"{m.exercise}:{m.description}" for m in MISTAKES])
def test_common_mistake_fails_with_hint(mistake):
    ns = namespace({BY_NAME[mistake.exercise].owner_id: mistake.cell})
    with pytest.raises(AssertionError) as failure:
        ns["check"](mistake.exercise, ns[mistake.exercise], quiet=True)
        ns["check"](mistake.exercise, ns[mistake.exercise], hidden=True, seed=12345, quiet=True)
    if mistake.hint:  # messages are wrapped for the notebook: compare words
        assert " ".join(mistake.hint.split()) in " ".join(str(failure.value).split())


@pytest.mark.parametrize("variant", VARIANTS, ids=[f"{v.exercise}:{v.description}" for v in VARIANTS])
def test_honest_variant_passes(variant):
    ns = namespace({BY_NAME[variant.exercise].owner_id: variant.cell})
    ns["check"](variant.exercise, ns[variant.exercise], quiet=True)
    ns["check"](variant.exercise, ns[variant.exercise], hidden=True, seed=12345, quiet=True)


def test_blank_exercise_says_not_implemented():
    for exercise in EXERCISES:
        source = object_source(exercise.owner_target)
        header = source[:source.index('"""', source.index('"""') + 3) + 3]  # def + docstring
        ns = namespace({exercise.owner_id: header + "\n    raise NotImplementedError()\n"})
        with pytest.raises(AssertionError, match="not implemented yet"):
            ns["check"](exercise.name, ns[exercise.name], quiet=True)


@pytest.mark.parametrize("exercise", EXERCISES, ids=[e.name for e in EXERCISES])
def test_cases_name_requirements_and_visible_ones_cover_them(exercise):
    checker = CHECKERS[exercise.name]
    visible = checker.cases(torch.Generator().manual_seed(0), hidden=False)
    everything = checker.cases(torch.Generator().manual_seed(0), hidden=True)
    assert all(isinstance(c.get("requirement"), str) and c["requirement"] for c in everything)
    assert {c["requirement"] for c in everything} == {c["requirement"] for c in visible}
    assert len(everything) > len(visible)


@pytest.mark.parametrize("exercise", EXERCISES, ids=[e.name for e in EXERCISES])
def test_reference_solution_uses_no_forbidden_call(exercise):
    checker = CHECKERS[exercise.name]
    assert isinstance(checker.forbidden, tuple)
    source = object_source(exercise.owner_target)
    for name in checker.forbidden:
        for spelling in {name, name.replace("torch.nn.functional.", "F."),
                         name.replace("torch.nn.", "nn.")}:
            assert spelling not in source, f"{exercise.name} uses {spelling}"

"""Chapter 10's checkers on the reference solutions, honest variants and common mistakes,
in a namespace built like the exercise notebook's (setup code + provided code + one cell).

(test_checks.py runs the same mistakes on the generated notebook once it is regenerated.)"""

from __future__ import annotations

import itertools
import sys
import types

import pytest

from coursetools.build import exercise_source, object_source
from coursetools.checks import check
from coursetools.spec import ASSIGNMENTS, SETUP_CODE, Exercise, Provided

import mistakes.ch10 as ch10

ASSIGNMENT = next(a for a in ASSIGNMENTS if a.name == "ch10_scaling")
EXERCISES = [i for i in ASSIGNMENT.items if isinstance(i, Exercise)]
_counter = itertools.count()


def namespace(replace: dict[str, str] | None = None) -> dict:
    # A real module, as a notebook's __main__ (dataclasses look their module up).
    module = types.ModuleType(f"notebook_ch10_{next(_counter)}")
    sys.modules[module.__name__] = module
    ns: dict = module.__dict__
    exec(SETUP_CODE.replace("from checks import check", ""), ns)
    for item in ASSIGNMENT.items:
        if isinstance(item, Provided):
            exec(object_source(item.target), ns)
    for exercise in EXERCISES:
        source = (replace or {}).get(exercise.name) or exercise_source(exercise.target, [])
        exec(source, ns)
    return ns


@pytest.mark.parametrize("exercise", EXERCISES, ids=[e.name for e in EXERCISES])
def test_reference_passes(exercise):
    obj = namespace()[exercise.name]
    check(exercise.name, obj, quiet=True)
    check(exercise.name, obj, hidden=True, seed=12345, quiet=True)


@pytest.mark.parametrize("mistake", ch10.MISTAKES, ids=[m.description for m in ch10.MISTAKES])
def test_mistake_fails(mistake):
    obj = namespace({mistake.exercise: mistake.cell})[mistake.exercise]
    with pytest.raises(AssertionError) as failure:
        check(mistake.exercise, obj, quiet=True)
        check(mistake.exercise, obj, hidden=True, seed=12345, quiet=True)
    if mistake.hint:
        assert mistake.hint in str(failure.value)


@pytest.mark.parametrize("variant", ch10.VARIANTS, ids=[v.description for v in ch10.VARIANTS])
def test_variant_passes(variant):
    obj = namespace({variant.exercise: variant.cell})[variant.exercise]
    check(variant.exercise, obj, quiet=True)
    check(variant.exercise, obj, hidden=True, seed=12345, quiet=True)


def test_every_case_states_its_requirement():
    import torch

    from coursetools.checks import CHECKERS

    for exercise in EXERCISES:
        checker = CHECKERS[exercise.name]
        visible = checker.cases(torch.Generator().manual_seed(0), hidden=False)
        hidden = checker.cases(torch.Generator().manual_seed(0), hidden=True)
        assert all(c.get("requirement") for c in hidden)
        assert {c["requirement"] for c in hidden} == {c["requirement"] for c in visible}
        assert isinstance(checker.forbidden, tuple)

"""The exercise notebooks: generated from the package, released by nbgrader, validated in a
real kernel. (The checkers' logic is tested quickly in test_checks.py; grading in
test_grading.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from coursetools import build
from coursetools.spec import ASSIGNMENTS, Exercise

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "exercises" / "release"
NAMES = [a.name for a in ASSIGNMENTS]


def test_source_notebooks_are_generated_from_the_package():
    """Solutions exist once: a change in solutions/ (or the checkers) that was not carried into
    exercises/source fails here. Fix: `python -m coursetools build`."""
    assert build.stale_files() == []


def test_at_least_25_graded_functions_in_chapter_order():
    exercises = [i for a in ASSIGNMENTS for i in a.items if isinstance(i, Exercise)]
    assert len(exercises) >= 25
    assert NAMES == sorted(NAMES)


@pytest.fixture(scope="module")
def fresh_release(released_course):
    return released_course / "release"


@pytest.mark.slow
def test_committed_release_is_up_to_date(fresh_release):
    """exercises/release/ is committed so that students find it on clone; it must be exactly
    what `python -m coursetools release` makes now."""
    made = {p.relative_to(fresh_release): p for p in fresh_release.rglob("*") if p.is_file()}
    committed = {p.relative_to(RELEASE): p for p in RELEASE.rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
    assert sorted(made) == sorted(committed), "run `python -m coursetools release`"
    for rel, path in made.items():
        assert path.read_bytes() == committed[rel].read_bytes(), f"{rel} is stale"


def test_release_holds_no_solutions_or_hidden_tests():
    for path in RELEASE.rglob("*.ipynb"):
        text = path.read_text()
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, path
        assert "raise NotImplementedError()" in text


def _validator(invert: bool):
    from nbgrader.validator import Validator
    from traitlets.config import Config

    config = Config()
    config.Validator.invert = invert
    config.Execute.timeout = 120
    return Validator(config=config)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_source_passes_and_blank_release_fails_every_test(name):
    """nbgrader's Validate button on the instructor's version (every test passes) and on the
    blank student version with --invert (every test fails), in a real kernel."""
    source = build.SOURCE_DIR / name / f"{name}.ipynb"
    start = time.monotonic()
    passed = _validator(invert=False).validate(str(source))
    elapsed = time.monotonic() - start
    assert not passed.get("failed") and not passed.get("changed"), passed
    assert elapsed < 60, f"the whole notebook took {elapsed:.0f} s (budget 60 s)"
    blank = _validator(invert=True).validate(str(RELEASE / name / f"{name}.ipynb"))
    assert not blank.get("passed"), f"blank release passes some tests: {blank.get('passed')}"

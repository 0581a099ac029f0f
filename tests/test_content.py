"""The teaching around every exercise (coursetools.content): complete, linked to a real section
of its chapter's page, and with an example that runs against the reference package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from docutils.nodes import make_id

from coursetools import build
from coursetools.content import TEACHING
from coursetools.spec import ASSIGNMENTS, Exercise

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = [(assignment, item) for assignment in ASSIGNMENTS for item in assignment.items
             if isinstance(item, Exercise)]
IDS = [exercise.name for _, exercise in EXERCISES]


def section_ids(chapter: str) -> set[str]:
    """The ids Jupyter Book gives the headings of ``chapter`` (e.g. 'book/ch01_attention'):
    docutils' ``make_id`` of the heading text. Lines inside fenced blocks (code cells, whose
    comments start with '#') are not headings."""
    ids, fence = set(), None
    for line in (ROOT / f"{chapter}.md").read_text().splitlines():
        opening = re.match(r"\s*(`{3,}|~{3,})", line)
        if opening:
            marker = opening.group(1)
            if fence is None:
                fence = marker
            elif marker.startswith(fence) and not line.strip()[len(marker):].strip():
                fence = None
            continue
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if fence is None and heading:
            ids.add(make_id(heading.group(1)))
    return ids


def test_section_ids_are_those_jupyter_book_makes():
    """The slug rule on headings with math, code and punctuation (ids from a built page)."""
    ids = section_ids("book/ch01_attention")
    assert {"from-scores-to-weights-a-softmax-that-does-not-overflow",
            "why-divide-by-sqrt-d-k", "masking"} <= ids
    assert "the-second-sentence-has-2-real-tokens-and-2-pads" not in ids  # a code comment
    assert "post-norm-and-pre-norm-the-sublayer-wrapper" in section_ids("book/ch04_encoder")
    assert "pytorch-s-two-opposite-mask-conventions" in section_ids("book/ch05_decoder")


def test_every_exercise_has_its_teaching():
    missing = [name for name in IDS if name not in TEACHING]
    assert missing == []
    assert sorted(TEACHING) == sorted(IDS), "teaching for an exercise that does not exist"


@pytest.mark.parametrize(("assignment", "exercise"), EXERCISES, ids=IDS)
def test_teaching_is_complete_and_links_to_its_chapter(assignment, exercise):
    teaching = TEACHING[exercise.name]
    for field in ("why", "section", "shapes", "example"):
        assert getattr(teaching, field).strip(), f"{exercise.name}: empty {field}"
    assert len(teaching.hints) >= 2 and all(hint.strip() for hint in teaching.hints)
    assert teaching.section in section_ids(assignment.chapter), (
        f"{exercise.name}: no heading of {assignment.chapter}.md has the id {teaching.section!r}")


@pytest.mark.parametrize(("assignment", "exercise"), EXERCISES, ids=IDS)
def test_example_runs_against_the_reference(assignment, exercise):
    shown = build.run_example(exercise, TEACHING[exercise.name].example)
    assert ">>> " in shown
    value = shown.rsplit("\n", 1)[-1]
    assert value.strip() and len(shown.splitlines()) <= 20, f"{exercise.name}: output too long"

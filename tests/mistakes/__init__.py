"""Common mistakes, one module per chapter: ``MISTAKES`` maps an exercise to wrong answers.

Each wrong answer is ``Mistake(description, cell_source, hint)``: the code a student might put
in the exercise's cell, and a fragment of the hint the checker should give (or None when any
failure will do). The same mistakes drive the quick checker tests (test_checks.py) and the
grading round trip (test_grading.py), where each must lose points on its exercise only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mistake:
    exercise: str      # the checker name, e.g. "scaled_dot_product_attention"
    description: str   # e.g. "no scaling by sqrt(d_k)"
    cell: str          # the whole cell's replacement source
    hint: str | None   # a fragment the failure message must contain


@dataclass(frozen=True)
class Variant:
    """A correct answer written differently (einsum, loops...): must get full marks."""

    exercise: str
    description: str
    cell: str

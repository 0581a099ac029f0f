"""What each exercise's notebook section teaches besides its rules (which are in
:mod:`coursetools.spec`): why it matters, where the book explains it, the shapes, a worked
example, and hints.

``TEACHING`` maps an exercise's name to its :class:`Teaching`. The example's last line is an
expression: the notebook shows the code with the value the reference solution gives,
computed when the notebook is generated, so it can never disagree with the package.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Teaching:
    """``why``: why it matters (a few sentences). ``section``: the anchor (id) of the book's
    section that explains it, on the chapter's page. ``shapes``: inputs and outputs with the
    book's letters. ``example``: a few lines of code ending with an expression. ``hints``:
    unfolded one at a time, from the idea towards the method, never the line to write."""

    why: str = ""
    section: str = ""
    shapes: str = ""
    example: str = ""
    hints: tuple[str, ...] = ()


TEACHING: dict[str, Teaching] = {
    "softmax": Teaching(
        why="Every attention weight in the Transformer comes out of a softmax. Written "
            "naively it overflows for large scores and turns a fully masked row into NaN, "
            "which then spreads through every later layer.",
        section="from-scores-to-weights-a-softmax-that-does-not-overflow",
        shapes="`x`: any shape; the result has the same shape and dtype, and sums to 1 "
               "along `dim` (or is all zeros where `x` is all `-inf`).",
        example="""
x = torch.tensor([[1.0, 2.0, 3.0], [1000.0, 1000.0, float("-inf")]])
softmax(x, dim=-1)
""",
        hints=("softmax(x) equals softmax(x - c) for any constant c along `dim`. Which c "
               "keeps every exponent at or below zero?",
               "A row of only `-inf` has maximum `-inf`, and `-inf - (-inf)` is NaN. Shift "
               "such rows by something finite instead, and do not divide by a zero sum.",
               "`amax`, `torch.where`, `torch.isfinite` and `exp` are all you need."),
    ),
}

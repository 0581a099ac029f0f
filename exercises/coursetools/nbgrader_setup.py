"""The course's nbgrader settings, in one function so that the CLI and tests share them."""

from __future__ import annotations

from pathlib import Path

COURSE_ID = "transformers-step-by-step"


def configure(c, root: str | Path) -> None:
    """Fill the traitlets config ``c`` for the course directory ``root``."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties,
        CheckCellMetadata,
        ClearHiddenTests,
        GetGrades,
        IgnorePattern,
        LimitOutput,
        SaveAutoGrades,
    )

    from .verdicts import SandboxedVerdicts, StripFeedback

    c.CourseDirectory.root = str(root)
    c.CourseDirectory.course_id = COURSE_ID
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
    # Autograde: the sandboxed verdicts take the place of nbgrader's in-kernel Execute.
    c.Autograde.autograde_preprocessors = [
        SandboxedVerdicts,
        IgnorePattern,
        ClearMetadataPreprocessor,
        LimitOutput,
        SaveAutoGrades,
        AssignLatePenalties,
        CheckCellMetadata,
    ]
    # A deleted test cell comes back (and is graded); the report flags the deletion.
    c.OverwriteCells.add_missing_cells = True
    # Feedback: no hidden tests, no tracebacks.
    c.GenerateFeedback.preprocessors = [GetGrades, CSSHTMLHeaderPreprocessor, ClearHiddenTests,
                                        StripFeedback]
    c.ClearHiddenTests.enabled = True
    c.StripFeedback.enabled = True

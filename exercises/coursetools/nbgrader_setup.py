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
        ClearOutput,
        DeduplicateIds,
        GetGrades,
        IgnorePattern,
        LimitOutput,
        OverwriteCells,
        OverwriteKernelspec,
        SaveAutoGrades,
    )

    from .verdicts import DropForeignGradeCells, SandboxedVerdicts, StripFeedback

    c.CourseDirectory.root = str(root)
    c.CourseDirectory.course_id = COURSE_ID
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
    # Autograde, sanitising: forged or renamed grade cells become plain cells first (nbgrader
    # would fail on the whole notebook), then nbgrader's own steps restore the source's cells.
    c.Autograde.sanitize_preprocessors = [
        DropForeignGradeCells,
        ClearOutput,
        DeduplicateIds,
        OverwriteKernelspec,
        OverwriteCells,
        CheckCellMetadata,
    ]
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

"""Run a generated exercise notebook's code in-process, for fast tests of the checkers.

``namespace(assignment, replace={...})`` executes the source notebook's setup, provided and
solution cells (not the test cells) in a fresh namespace, with some solution cells replaced by
other code: a student's correct-but-different answer, or a common mistake. The setup cell
defines ``check``: the student's check, unpacked from the notebook itself. The real-kernel,
real-nbgrader round trip lives in test_grading.py; this is the quick path.
"""

from __future__ import annotations

import itertools
import json
import sys
import types
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "exercises" / "source"
RELEASE = ROOT / "exercises" / "release"


_counter = itertools.count()


@cache
def _cells(assignment: str) -> tuple[tuple[str, str, dict], ...]:
    nb = json.loads((SOURCE / assignment / f"{assignment}.ipynb").read_text())
    return tuple((c["id"], "".join(c["source"]), c["metadata"].get("nbgrader", {}))
                 for c in nb["cells"] if c["cell_type"] == "code")


def released_cell(assignment: str, cell_id: str) -> str:
    """A cell as the students get it (from exercises/release/, made by nbgrader)."""
    nb = json.loads((RELEASE / assignment / f"{assignment}.ipynb").read_text())
    return next("".join(c["source"]) for c in nb["cells"] if c["id"] == cell_id)


def namespace(assignment: str, replace: dict[str, str] | None = None) -> dict:
    """Execute the notebook's non-test cells; ``replace`` maps cell ids to other code."""
    replace = replace or {}
    unknown = set(replace) - {cell_id for cell_id, _, _ in _cells(assignment)}
    if unknown:
        raise KeyError(f"{assignment} has no cells {sorted(unknown)}")
    # A real module, registered like a notebook's __main__ (dataclasses look the class's module
    # up in sys.modules).
    module = types.ModuleType(f"notebook_{assignment}_{next(_counter)}")
    sys.modules[module.__name__] = module
    ns: dict = module.__dict__
    for cell_id, source, meta in _cells(assignment):
        if meta.get("grade") and not meta.get("solution"):
            continue  # test cells
        code = replace.get(cell_id, source)
        # `from __future__` must be first in a compiled unit, as in the notebook's first cell.
        exec(compile(code, f"<{assignment}:{cell_id}>", "exec"), ns)
    return ns

"""Generate the nbgrader source notebooks from the reference package.

The solutions exist once, in ``solutions/``. For every exercise named in
:mod:`coursetools.spec`, this module takes the function's (or method's) source with
``inspect``, keeps its signature and docstring, and wraps its body in nbgrader's
``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers; nbgrader's release step then replaces the
body with ``raise NotImplementedError()``. Code a chapter needs but does not ask for is copied
as "provided" cells. ``tests/test_exercises.py`` regenerates everything in memory and fails the
moment a committed notebook differs from what the package says.

    python -m coursetools build      # writes exercises/source/<assignment>/
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import textwrap
from pathlib import Path

import nbformat
import torch

from . import student
from .checks import CHECKERS
from .spec import (
    ASSIGNMENTS,
    BOOK_URL,
    SETUP_CODE,
    STUDENT_INSTRUCTIONS,
    Assignment,
    Exercise,
    Provided,
)

EXERCISES_DIR = Path(__file__).resolve().parent.parent
SOURCE_DIR = EXERCISES_DIR / "source"

#: Methods the package's classes have for the book and the tests (loading PyTorch's modules'
#: weights) that no exercise needs: notebooks leave them out, with the helpers they call.
NOT_IN_NOTEBOOKS = ("from_torch",)


# --- taking code out of the package ---------------------------------------------------------------


def _resolve(target: str):
    """'solutions.attention:MultiHeadAttention.forward' -> (module, ['MultiHeadAttention', 'forward'])."""
    module_name, _, qualname = target.partition(":")
    return importlib.import_module(module_name), qualname.split(".")


def object_source(target: str) -> str:
    """Source of a function, class or module-level assignment, dedented."""
    module, parts = _resolve(target)
    obj = getattr(module, parts[0])
    if inspect.isclass(obj):
        return _without_methods(textwrap.dedent(inspect.getsource(obj)).rstrip() + "\n")
    if inspect.isfunction(obj):
        return textwrap.dedent(inspect.getsource(obj)).rstrip() + "\n"
    # A constant: find its assignment in the module's source.
    tree = ast.parse(inspect.getsource(module))
    lines = inspect.getsource(module).splitlines()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == parts[0] for t in targets):
            return "\n".join(lines[node.lineno - 1 : node.end_lineno]) + "\n"
    raise LookupError(f"cannot find {target}")


def _without_methods(source: str, names: tuple[str, ...] = NOT_IN_NOTEBOOKS) -> str:
    """A class's source without the methods called ``names`` (decorators included)."""
    top = ast.parse(source).body[0]
    lines = source.splitlines()
    for node in reversed(top.body):
        if isinstance(node, ast.FunctionDef) and node.name in names:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            end = node.end_lineno
            while start > 0 and not lines[start - 1].strip():
                start -= 1
            del lines[start:end]
    return "\n".join(lines) + "\n"


def _body_region(func: ast.FunctionDef) -> tuple[int, int]:
    """0-based line range [start, end) of a function's body after its docstring."""
    body = func.body
    first = body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        raise ValueError(f"exercise {func.name} needs a docstring (students start from it)")
    if len(body) < 2:
        raise ValueError(f"exercise {func.name} has no body after its docstring")
    return first.end_lineno, func.end_lineno


def exercise_source(target_class_or_function: str, methods: list[str]) -> str:
    """Source with the bodies of the exercise parts wrapped in nbgrader's solution markers.

    ``methods`` is empty for a function exercise, or the names of the class's methods that are
    exercises.
    """
    source = object_source(target_class_or_function)
    tree = ast.parse(source)
    top = tree.body[0]
    funcs = [top] if not methods else [
        node for node in top.body if isinstance(node, ast.FunctionDef) and node.name in methods]
    missing = set(methods) - {f.name for f in funcs}
    if missing:
        raise LookupError(f"{target_class_or_function} has no method(s) {sorted(missing)}")
    lines = source.splitlines()
    for func in sorted(funcs, key=lambda f: f.lineno, reverse=True):
        start, end = _body_region(func)
        indent = " " * func.body[1].col_offset
        lines[start:end] = ([f"{indent}### BEGIN SOLUTION"] + lines[start:end]
                            + [f"{indent}### END SOLUTION"])
    return "\n".join(lines) + "\n"


# --- notebook assembly -----------------------------------------------------------------------------


def _meta(grade_id: str, *, solution=False, grade=False, locked=False, points=None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def _markdown(cell_id: str, text: str, locked: bool = True):
    cell = nbformat.v4.new_markdown_cell(text.strip(), id=cell_id)
    if locked:
        cell.metadata.update(_meta(cell_id, locked=True))
    return cell


def _code(cell_id: str, source: str, **meta):
    cell = nbformat.v4.new_code_cell(source.rstrip("\n"), id=cell_id)
    cell.metadata.update(_meta(cell_id, **meta))
    return cell


def test_cell_source(exercise: Exercise) -> str:
    """The graded test cell: the visible checks. (Hidden cases are drawn at grading, from a
    secret, by the sandboxed grader: they are not in any notebook.)"""
    obj = exercise.name.split(".")[0]
    return (f"# Test: {_points(exercise.points)}. Run it; it says what is wrong, if anything.\n"
            f'check("{exercise.name}", {obj})')


def _points(points: int) -> str:
    return f"{points} point{'s' if points != 1 else ''}"


def _group(items: list) -> list[list]:
    """Consecutive exercises on methods of the same class share one code cell."""
    groups: list[list] = []
    for item in items:
        if (isinstance(item, Exercise) and groups and isinstance(groups[-1][0], Exercise)
                and item.owner and item.owner == groups[-1][0].owner):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def run_example(exercise: Exercise) -> str:
    """The worked example's code, and what the reference prints for its last line."""
    module, _ = _resolve(exercise.target)
    namespace = dict(vars(module))
    code = textwrap.dedent(exercise.example).strip()
    tree = ast.parse(code)
    *body, last = tree.body
    if not isinstance(last, ast.Expr):
        raise ValueError(f"the example of {exercise.name} must end with an expression")
    torch.manual_seed(0)
    exec(compile(ast.Module(body=body, type_ignores=[]), "<example>", "exec"), namespace)
    value = eval(compile(ast.Expression(last.value), "<example>", "eval"), namespace)
    shown = "\n".join(f">>> {line}" if i == 0 else f"... {line}"
                      for i, line in enumerate(ast.unparse(last).splitlines()))
    return f"{code.rsplit(chr(10), len(ast.unparse(last).splitlines()))[0]}\n{shown}\n{value!r}" \
        if body else f"{shown}\n{value!r}"


def book_link(assignment: Assignment, exercise: Exercise | None = None) -> str:
    page = f"{BOOK_URL}{assignment.chapter}.html"
    return f"{page}#{exercise.section}" if exercise is not None and exercise.section else page


def _hints(hints: tuple[str, ...]) -> str:
    """Hints that unfold one at a time: hint n+1 sits inside hint n."""
    text = ""
    for number, hint in reversed(list(enumerate(hints, 1))):
        text = (f"<details><summary>Hint {number}</summary>\n\n{hint.strip()}\n\n"
                f"{text}</details>\n")
    return text


def exercise_markdown(assignment: Assignment, number: str, exercise: Exercise) -> str:
    checker = CHECKERS[exercise.name]
    parts = [f"## Exercise {number}: `{exercise.name}` ({_points(exercise.points)})",
             exercise.intro.strip()]
    if exercise.why:
        parts.append(f"**Why it matters.** {exercise.why.strip()}")
    if exercise.section:
        parts.append(f"**In the book:** [{assignment.chapter.split('/')[-1]}, "
                     f"section `{exercise.section}`]({book_link(assignment, exercise)}).")
    if exercise.shapes:
        parts.append(f"**Shapes.** {exercise.shapes.strip()}")
    if checker.forbidden:
        names = ", ".join(f"`{name}`" for name in checker.forbidden)
        parts.append(f"**Not allowed here** (the point is to build it): {names}.")
    requirements = "; ".join(checker.requirements())
    parts.append(f"**What the test checks** (each an equal share of the points): "
                 f"{requirements}.")
    if exercise.example:
        parts.append("**Example** (what the reference gives):\n\n```python\n"
                     f"{run_example(exercise)}\n```")
    if exercise.hints:
        parts.append(_hints(exercise.hints))
    return "\n\n".join(parts)


SCRATCH = "# Scratch space: try your code here (this cell is not graded).\n"


def build_notebook(assignment: Assignment) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                       "name": "python3"},
        "language_info": {"name": "python"},
    }
    exercises = [item for item in assignment.items if isinstance(item, Exercise)]
    chapter = int(assignment.name[2:4])
    numbers = {ex.name: f"{chapter}.{i}" for i, ex in enumerate(exercises, 1)}
    table = "\n".join(f"| {numbers[ex.name]} | `{ex.name}` | {ex.points} |" for ex in exercises)
    total = sum(ex.points for ex in exercises)
    setup = _code("setup", student.setup_cell_code(assignment, SETUP_CODE), locked=True)
    setup.metadata["jupyter"] = {"source_hidden": True}
    setup.metadata["cellView"] = "form"  # Google Colab shows the title, not the code
    cells = [
        _markdown("intro", f"# {assignment.title}\n\n{assignment.intro.strip()} The book "
                  f"explains each step: [{assignment.chapter.split('/')[-1]}]"
                  f"({book_link(assignment)}).\n\n| Exercise | What | Points |\n"
                  f"| --- | --- | --- |\n{table}\n| | **Total** | **{total}** |\n\n"
                  f"{STUDENT_INSTRUCTIONS.strip()}"),
        setup,
    ]
    provided = [item for item in assignment.items if isinstance(item, Provided)]
    if provided:
        cells.append(_markdown("provided_intro", (
            "## Provided code\n\nRun this cell: it defines what this notebook builds on "
            "(the course's code for the earlier chapters' steps). You do not need to change "
            "it.")))
        provided_cell = _code("provided", "\n\n".join(
            object_source(item.target).rstrip() for item in provided), locked=True)
        provided_cell.metadata["jupyter"] = {"source_hidden": True}
        cells.append(provided_cell)
    for group in _group(exercises):
        first = group[0]
        for exercise in group:
            cells.append(_markdown(f"md_{exercise.grade_id}",
                                   exercise_markdown(assignment, numbers[exercise.name],
                                                     exercise)))
        methods = [e.method for e in group if e.method]
        cells.append(_code(first.owner_id, exercise_source(first.owner_target, methods),
                           solution=True))
        for exercise in group:
            cells.append(_code(f"test_{exercise.grade_id}", test_cell_source(exercise),
                               grade=True, locked=True, points=exercise.points))
        cells.append(nbformat.v4.new_code_cell(SCRATCH, id=f"scratch_{first.owner_id}"))
    if assignment.outro:
        cells.append(_markdown("outro", assignment.outro))
    nb.cells = cells
    return nb


def notebook_text(nb: nbformat.NotebookNode) -> str:
    """Deterministic JSON for the committed file."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files() -> dict[Path, str]:
    """Every generated file and its content."""
    files: dict[Path, str] = {}
    for assignment in ASSIGNMENTS:
        folder = SOURCE_DIR / assignment.name
        files[folder / f"{assignment.name}.ipynb"] = notebook_text(build_notebook(assignment))
    return files


def stale_files() -> list[Path]:
    """Generated files that are missing, differ, or should not be there."""
    expected = expected_files()
    stale = [path for path, text in expected.items()
             if not path.exists() or path.read_text() != text]
    present = {p for p in SOURCE_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts
               and ".ipynb_checkpoints" not in p.parts}
    return stale + sorted(present - set(expected))


def build() -> list[Path]:
    """Write the source notebooks; return the paths that changed."""
    changed = []
    expected = expected_files()
    for path in stale_files():
        if path not in expected:
            path.unlink()
            changed.append(path)
    for path, text in expected.items():
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(path)
    return changed

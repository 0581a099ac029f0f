"""Sphinx extension: the book's exercises, in two editions from one source.

* ``{exercises} <assignment>``: a chapter's exercise section, made from the course's spec
  (:mod:`coursetools.spec`): download links (the notebook, which needs no other file, and a
  zip of its folder), what each exercise asks, its points, the code the notebook provides.
* ``literalinclude`` of package code that holds an exercise's solution (a function, a method,
  or a class with such methods) is shown according to the edition:

  - **self-study** (default): the prompt first ("exercise 1.2 asks you to write this: try it
    first"), then the reference code folded;
  - **course** (``BOOK_EDITION=course``, for instructors running the course): the prompt, then
    the signature and docstring with the body left out. No solution body appears anywhere in
    this edition (``tests/test_book.py`` searches the built HTML for every one).

Everything else that ``literalinclude`` shows is left as it is.
"""

from __future__ import annotations

import ast
import os
import textwrap
import zipfile
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from sphinx.addnodes import download_reference
from sphinx.directives.code import LiteralInclude

from coursetools.build import RELEASE_DIR, exercise_numbers
from coursetools.spec import ASSIGNMENTS, Exercise, Provided

EDITIONS = ("self-study", "course")


def edition() -> str:
    value = os.environ.get("BOOK_EDITION", "self-study")
    if value not in EDITIONS:
        raise ValueError(f"BOOK_EDITION must be one of {EDITIONS}, got {value!r}")
    return value


def _exercises_by_target() -> dict[str, tuple[str, Exercise]]:
    """'solutions.attention:softmax' -> (its number '1.1', the exercise)."""
    found = {}
    for assignment in ASSIGNMENTS:
        numbers = exercise_numbers(assignment)
        for item in assignment.items:
            if isinstance(item, Exercise):
                found[item.target] = (numbers[item.name], item)
    return found


EXERCISES = _exercises_by_target()


#: Modules that write the same code again in another framework (the appendix's Keras twin):
#: their functions and classes show the solution of the exercise of the same name.
TWINS = ("solutions.keras_twin",)


def exercises_in(module: str, pyobject: str) -> list[tuple[str, Exercise]]:
    """The exercises whose solution a listing of ``module:pyobject`` shows."""
    if module in TWINS:
        if pyobject.endswith(".call"):  # a Keras layer's forward
            pyobject = pyobject[: -len("call")] + "forward"
        return [value for key, value in EXERCISES.items()
                if key.partition(":")[2] == pyobject
                or key.partition(":")[2].startswith(pyobject + ".")]
    target = f"{module}:{pyobject}"
    return [value for key, value in EXERCISES.items()
            if key == target or key.startswith(target + ".")]


def strip_bodies(code: str, names: set[str]) -> str:
    """``code`` with the bodies (after the docstring) of the functions called ``names``
    replaced by a pointer to the exercise."""
    lines = textwrap.dedent(code).splitlines()
    tree = ast.parse("\n".join(lines))
    cuts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in names:
            body = node.body
            has_doc = (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                       and isinstance(body[0].value.value, str))
            first = body[1] if has_doc and len(body) > 1 else body[0]
            start = (body[0].end_lineno if has_doc else first.lineno - 1)
            indent = " " * first.col_offset
            cuts.append((start, node.end_lineno, indent))
    for start, end, indent in sorted(cuts, reverse=True):
        lines[start:end] = [f"{indent}...  # an exercise: write it in the chapter's notebook"]
    return "\n".join(lines) + "\n"


def _inline(text: str) -> list[nodes.Node]:
    """Plain text whose `backticked` parts become inline code, as in the book's Markdown."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: keep the text as it is
        return [nodes.Text(text)]
    return [nodes.literal(text=part) if k % 2 else nodes.Text(part)
            for k, part in enumerate(parts) if part]


def _prompt(found: list[tuple[str, Exercise]], folded: bool) -> nodes.Node:
    paragraph = nodes.paragraph()
    paragraph += nodes.Text("This code is ")
    for k, (number, ex) in enumerate(found):
        if k:
            paragraph += nodes.Text(", ")
        paragraph += nodes.Text(f"exercise {number} (")
        paragraph += nodes.literal(text=ex.name)
        paragraph += nodes.Text(")")
    paragraph += nodes.Text(
        " of this chapter's notebook (see Exercises below). "
        + ("Try writing it yourself first; the reference solution is folded below."
           if folded else "In this edition of the book its body is left for you to write."))
    note = nodes.admonition(classes=["exercise-prompt", "tip"])
    note += nodes.title(text="Your turn")
    note += paragraph
    return note


class ExerciseAwareLiteralInclude(LiteralInclude):
    """``literalinclude`` that folds (self-study) or leaves out (course) exercise solutions."""

    def run(self):
        pyobject = self.options.get("pyobject")
        filename = self.arguments[0]
        if not pyobject or "solutions/" not in filename or not filename.endswith(".py"):
            return super().run()
        module = "solutions." + Path(filename).stem
        found = exercises_in(module, pyobject)
        if not found or (module in TWINS and edition() != "course"):
            return super().run()  # the self-study edition shows a twin as it is
        if edition() == "course":
            listing = super().run()
            literal = next(node for node in listing[0].traverse(nodes.literal_block)) \
                if not isinstance(listing[0], nodes.literal_block) else listing[0]
            names = {ex.method or ex.name for _, ex in found}
            if module in TWINS and "forward" in names:
                names.add("call")  # a Keras layer's forward
            code = strip_bodies(literal.astext(), names)
            stub = nodes.literal_block(code, code, language="python")
            return [_prompt(found, folded=False), stub]
        numbers = ", ".join(number for number, _ in found)
        opening = nodes.raw("", f'<details class="solution-fold"><summary>Reference '
                            f"solution of exercise {numbers} (show)</summary>", format="html")
        closing = nodes.raw("", "</details>", format="html")
        return [_prompt(found, folded=True), opening, *super().run(), closing]


class ExercisesDirective(Directive):
    """The exercise section of a chapter: ``{exercises} ch01_attention``."""

    required_arguments = 1
    option_spec = {"intro": directives.unchanged}

    def run(self):
        name = self.arguments[0]
        assignment = next((a for a in ASSIGNMENTS if a.name == name), None)
        if assignment is None:
            raise self.error(f"no assignment {name!r}")
        env = self.state.document.settings.env
        page_dir = Path(env.doc2path(env.docname)).parent
        notebook = RELEASE_DIR / name / f"{name}.ipynb"
        section = []
        links = nodes.paragraph()
        links += download_reference(
            "", "", nodes.literal(text=f"{name}.ipynb"), refdoc=env.docname,
            reftarget=os.path.relpath(notebook, page_dir), refexplicit=True)
        links += _inline(" (the notebook: it needs nothing but itself and "
                         "`pip install torch numpy`; it runs in JupyterLab, VS Code and "
                         "Google Colab), or ")
        links += nodes.reference("", f"{name}.zip", refuri=f"../exercises/{name}.zip",
                                 internal=False)
        links += nodes.Text(" (the same in a folder). In the repository it is "
                            f"exercises/release/{name}/.")
        section.append(links)
        numbers = exercise_numbers(assignment)
        items = nodes.enumerated_list()
        for item in assignment.items:
            if isinstance(item, Exercise):
                entry = nodes.list_item()
                paragraph = nodes.paragraph()
                paragraph += nodes.strong(text=f"{numbers[item.name]} ")
                paragraph += nodes.literal(text=item.name)
                points = f"{item.points} point{'s' if item.points != 1 else ''}"
                paragraph += _inline(f" ({points}): {item.intro}")
                entry += paragraph
                items += entry
        intro = nodes.paragraph()
        intro += nodes.Text("It asks you to write:")
        section += [intro, items]
        provided = [item.target.partition(":")[2] for item in assignment.items
                    if isinstance(item, Provided)]
        if provided:
            paragraph = nodes.paragraph()
            paragraph += nodes.Text("Provided in the notebook (the course's code for earlier "
                                    "steps): ")
            for i, target in enumerate(provided):
                paragraph += nodes.literal(text=target)
                paragraph += nodes.Text(", " if i + 1 < len(provided) else ".")
            section.append(paragraph)
        how = nodes.paragraph()
        how += nodes.Text("Each exercise has a test that runs its visible cases and says what "
                          "is wrong; every requirement the text states is checked there, and "
                          "hidden cases at grading re-check the same requirements with other "
                          "shapes and values.")
        section.append(how)
        return section


def write_zips(app) -> None:
    """A zip of each assignment's release folder, served beside the book."""
    if app.builder.format != "html":
        return
    out = Path(app.outdir) / "exercises"
    out.mkdir(parents=True, exist_ok=True)
    for assignment in ASSIGNMENTS:
        folder = RELEASE_DIR / assignment.name
        if not folder.is_dir():
            continue
        target = out / f"{assignment.name}.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    info = zipfile.ZipInfo(str(path.relative_to(folder.parent)),
                                           date_time=(2020, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, path.read_bytes())


def setup(app):
    edition()  # fail early on a wrong value
    app.add_directive("literalinclude", ExerciseAwareLiteralInclude, override=True)
    app.add_directive("exercises", ExercisesDirective)
    app.connect("builder-inited", write_zips)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}

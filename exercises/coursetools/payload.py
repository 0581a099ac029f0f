"""What the grader hands the student's process: only the code needed to run the student's
functions, and never the reference of an exercise being graded.

The checkers (:mod:`coursetools.checks`) hold, side by side, the code that *calls* the
student's object on a case (``Checker.run``), the PyTorch stand-ins of each exercise
(``Checker.oracle``, swapped in for the exercises a graded one calls) and the references
(``Checker.expected``, ``Checker.hint``). Loading that package into the student's process
would put every exercise's reference within reach of student code (``gc``, ``__globals__``,
reading the file). So the grader never does: for a *group* of exercises it cuts, from the
checkers' source, the smallest package that keeps

* ``run`` of each graded exercise (and what it calls),
* ``oracle`` of every exercise they use (``Checker.uses``), which is never one of the group,

and nothing else (:func:`build_payload`). The framework modules (``core``, ``runtime``: running,
watching and comparing, no exercise's answer) go whole. The cut works on the syntax tree: a top-level
definition is kept only when a kept definition names it, a checker class keeps only the methods
reached from its roots, ``expected``/``hint`` never. :func:`plan_groups` splits an assignment
into groups whose payloads hold no reference of their own members (checked on the payload
itself, by :func:`leaks`); each group runs in its own sandbox.
"""

from __future__ import annotations

import ast
import functools
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .checks.core import CHECKERS

CHECKS_DIR = Path(__file__).resolve().parent / "checks"
#: Module names under "_grader" are the course's own for the forbidden-call watch (runtime.Watch).
PACKAGE = "_grader_checks"
#: Methods of a checker that compute or describe the right answer: never sent.
REFERENCE_METHODS = ("expected", "hint", "oracle")


@dataclass
class _Module:
    name: str
    tree: ast.Module
    defs: dict[str, ast.stmt] = field(default_factory=dict)      # top-level name -> statement
    imported: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (module, name)


@functools.lru_cache(maxsize=1)
def _modules() -> dict[str, _Module]:
    """The checkers' modules, parsed once (statements are told apart by identity)."""
    modules = {}
    for path in sorted(CHECKS_DIR.glob("ch[0-9][0-9].py")):
        module = _Module(path.stem, ast.parse(path.read_text()))
        for stmt in module.tree.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                module.defs[stmt.name] = stmt
            elif isinstance(stmt, ast.Assign | ast.AnnAssign):
                for target in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]):
                    for node in ast.walk(target):
                        if isinstance(node, ast.Name):
                            module.defs[node.id] = stmt
            elif isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and re.fullmatch(
                    r"ch\d\d", stmt.module or ""):
                for alias in stmt.names:
                    module.imported[alias.asname or alias.name] = (stmt.module, alias.name)
        modules[module.name] = module
    return modules


def _checker_class(modules: dict[str, _Module], name: str) -> tuple[str, str]:
    cls = type(CHECKERS[name])
    module = modules[cls.__module__.rsplit(".", 1)[-1]]
    return module.name, cls.__name__


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _self_attributes(node: ast.AST) -> set[str]:
    return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id in ("self", "cls", "type")}


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    return {s.name: s for s in cls.body if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)}


def _is_checker(cls: ast.ClassDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "register" for d in cls.decorator_list)


@dataclass
class Payload:
    """The kept part of each module: whole statements, and checker classes' kept methods."""

    statements: dict[str, set[int]]              # module -> ids of kept top-level statements
    methods: dict[tuple[str, str], set[str]]     # (module, checker class) -> kept methods
    sources: dict[str, str]                      # module -> emitted source


def _closure(modules: dict[str, _Module], roots: list[tuple[str, str, str]]) -> Payload:
    """Keep ``roots`` ((module, checker class, method)) and what they name, transitively."""
    kept: dict[str, set[int]] = {m: set() for m in modules}
    methods: dict[tuple[str, str], set[str]] = {}
    todo: list[tuple[str, ast.AST]] = []

    def keep_name(module: str, name: str) -> None:
        mod = modules[module]
        if name in mod.imported:
            keep_name(*mod.imported[name])
            return
        stmt = mod.defs.get(name)
        if stmt is None or id(stmt) in kept[module]:
            return
        kept[module].add(id(stmt))
        if isinstance(stmt, ast.ClassDef) and _is_checker(stmt):
            methods.setdefault((module, stmt.name), set())
            todo.append((module, ast.Module([s for s in stmt.body if not isinstance(
                s, ast.FunctionDef | ast.AsyncFunctionDef)] + stmt.decorator_list + stmt.bases,
                [])))
        else:
            todo.append((module, stmt))

    def keep_method(module: str, cls_name: str, method: str) -> None:
        keep_name(module, cls_name)
        done = methods.setdefault((module, cls_name), set())
        found = _methods(modules[module].defs[cls_name]).get(method)
        if found is None or method in done:
            return
        done.add(method)
        todo.append((module, found))
        for attr in _self_attributes(found):
            if attr in _methods(modules[module].defs[cls_name]) and attr not in REFERENCE_METHODS:
                keep_method(module, cls_name, attr)

    for module, cls_name, method in roots:
        keep_method(module, cls_name, method)
    while todo:
        module, node = todo.pop()
        for name in _names(node):
            keep_name(module, name)
    return Payload(kept, methods, {})


def _emit(modules: dict[str, _Module], payload: Payload) -> None:
    for name, mod in modules.items():
        body = []
        for stmt in mod.tree.body:
            if isinstance(stmt, ast.Import) or (isinstance(stmt, ast.ImportFrom) and (
                    stmt.level == 0 or stmt.module not in modules)):
                body.append(stmt)
            elif isinstance(stmt, ast.ImportFrom):  # another chapter: only the kept names
                names = [a for a in stmt.names if id(modules[stmt.module].defs.get(a.name))
                         in payload.statements[stmt.module]]
                if names:
                    body.append(ast.ImportFrom(stmt.module, names, 1))
            elif id(stmt) in payload.statements[name]:
                if isinstance(stmt, ast.ClassDef) and (name, stmt.name) in payload.methods:
                    keep = payload.methods[(name, stmt.name)]
                    stmt = ast.ClassDef(
                        name=stmt.name, bases=stmt.bases, keywords=stmt.keywords,
                        body=[s for s in stmt.body if not isinstance(
                            s, ast.FunctionDef | ast.AsyncFunctionDef) or s.name in keep]
                        or [ast.Pass()], decorator_list=stmt.decorator_list)
                body.append(stmt)
        payload.sources[name] = ast.unparse(ast.fix_missing_locations(ast.Module(body, [])))


#: Python 3.11's ast module is not safe to use from several threads at once (measured:
#: "SystemError: AST constructor recursion depth mismatch" with two grading threads).
_AST_LOCK = threading.RLock()


def build_payload(graded: list[str]) -> Payload:
    """The package source that lets the student's process run the exercises ``graded``."""
    with _AST_LOCK:
        return _build_payload(tuple(graded))


@functools.lru_cache(maxsize=64)
def _build_payload(graded: tuple[str, ...]) -> Payload:
    modules = _modules()
    roots = []
    for name in graded:
        roots.append((*_checker_class(modules, name), "run"))
        for used in CHECKERS[name].uses:
            roots.append((*_checker_class(modules, used), "oracle"))
    payload = _closure(modules, roots)
    _emit(modules, payload)
    return payload


def _reference_statements(modules: dict[str, _Module], name: str) -> dict[str, set[int]]:
    """The top-level definitions an exercise's stand-in and reference need (transitively),
    except those it is graded with anyway: what its own ``run`` needs (shared helpers: weights
    loading, masks) and the stand-ins of the exercises it uses."""
    module, cls_name = _checker_class(modules, name)
    reference = _closure(modules, [(module, cls_name, m) for m in ("oracle", "expected")])
    running = _closure(modules, [(module, cls_name, "run")] + [
        (*_checker_class(modules, used), "oracle") for used in CHECKERS[name].uses])
    found = {}
    for mod, ids in reference.statements.items():
        found[mod] = {i for i in ids - running.statements[mod]
                      if not any(id(s) == i and isinstance(s, ast.ClassDef) and _is_checker(s)
                                 for s in modules[mod].tree.body)}
    return found


def leaks(graded: list[str], payload: Payload | None = None) -> list[str]:
    """What of the graded exercises' references the payload would hold (should be nothing)."""
    with _AST_LOCK:
        return _leaks(list(graded), payload)


def _leaks(graded: list[str], payload: Payload | None = None) -> list[str]:
    modules = _modules()
    payload = payload or build_payload(graded)
    found = []
    for name in graded:
        module, cls_name = _checker_class(modules, name)
        if any(name in CHECKERS[other].uses for other in graded):
            found.append(f"{name}: its stand-in is sent for another exercise of the group")
        kept = payload.methods.get((module, cls_name), set())
        found += [f"{name}: method {m}" for m in REFERENCE_METHODS if m in kept]
        for mod, ids in _reference_statements(modules, name).items():
            for stmt in modules[mod].tree.body:
                if id(stmt) in ids and id(stmt) in payload.statements[mod]:
                    found.append(f"{name}: {mod}.{getattr(stmt, 'name', 'an assignment')}")
    return found


def plan_groups(names: list[str]) -> list[list[int]]:
    """Split exercises (indices into ``names``) into groups that can share one process: no
    member's reference in the group's payload. First fit, in notebook order."""
    return [list(group) for group in _plan_groups(tuple(names))]


@functools.lru_cache(maxsize=64)
def _plan_groups(names: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    groups: list[list[int]] = []
    for n, name in enumerate(names):
        for group in groups:
            if not leaks([names[i] for i in group] + [name]):
                group.append(n)
                break
        else:
            if leaks([name]):
                raise RuntimeError(f"{name} cannot be graded without its reference: "
                                   f"{leaks([name])}")
            groups.append([n])
    return tuple(tuple(group) for group in groups)


def write_package(payload: Payload, folder: Path) -> Path:
    """Write the payload as the package ``folder/grader_checks``; return the package folder."""
    package = Path(folder) / PACKAGE
    package.mkdir(parents=True)
    for path in CHECKS_DIR.glob("*.py"):  # the framework (core, runtime), whole
        if path.stem != "__init__" and not re.fullmatch(r"ch\d\d", path.stem):
            shutil.copy(path, package / path.name)
    imports = []
    for name, source in payload.sources.items():
        (package / f"{name}.py").write_text(source + "\n")
        imports.append(f"from . import {name}  # noqa: F401")
    (package / "__init__.py").write_text("\n".join(imports) + "\n")
    return package


def package_for(graded: list[str]) -> Path:
    """A temporary folder holding the payload package for ``graded`` (caller removes it)."""
    folder = Path(tempfile.mkdtemp(prefix="coursetools-payload-"))
    write_package(build_payload(graded), folder)
    return folder

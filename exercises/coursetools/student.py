"""The checks a student's notebook carries: visible cases frozen with their answers, and no
code that could compute an answer.

A released notebook must run with nothing but itself and ``pip install torch numpy`` (plain
Jupyter, VS Code, Google Colab), so its checks travel inside it: the notebook's setup cell
unpacks a small module, ``course_checks``, made here from the one source of the checkers
(:mod:`coursetools.checks`). That module holds

* :mod:`coursetools.checks.runtime`, word for word: comparing, messages, the watch on
  forbidden calls;
* for each exercise of the assignment, the checker's ``run`` (how to call the student's code)
  and ``symptom`` (hints read from the answer alone), with the helpers they need, copied from
  the checkers' source: code that calls the student's code, never code that answers;
* the visible cases, drawn once here, with the right outputs and the outputs of known mistakes
  on them, as data.

It holds no oracle, no hidden case, no seed for them: the hidden cases are drawn from a secret
at grading (:mod:`coursetools.grading`). ``tests/test_student_checks.py`` runs every function
and class of every bundle as an answer to every exercise and fails if one passes.
"""

from __future__ import annotations

import ast
import base64
import builtins
import importlib
import inspect
import io
import textwrap
import types
import zlib
from typing import Any

import torch

from .checks import CHECKERS, runtime
from .checks.core import Checker
from .spec import Assignment, Exercise, Provided

RUNTIME_NAMES = set(vars(runtime))
CHECKERS_PACKAGE = runtime.__name__.rsplit(".", 1)[0]  # "coursetools.checks"
MAX_DEPTH = 3  # a used exercise's own uses are pre-checked this deep


# --- copying the code that calls the student's code ----------------------------------------------


def _free_names(node: ast.AST) -> set[str]:
    """Names a function or class reads from its module."""
    bound = {a.arg for a in ast.walk(node) if isinstance(a, ast.arg)}
    bound |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
              and isinstance(n.ctx, ast.Store)}
    loaded = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
              and isinstance(n.ctx, ast.Load)}
    return loaded - bound - set(dir(builtins))


class _Collector:
    """Gathers module-level helpers (functions, classes, constants) that copied code needs,
    each under a name unique to its module, and the imports they rely on."""

    def __init__(self):
        self.imports: dict[str, str] = {}  # local name -> import statement
        self.defs: dict[tuple[str, str], str] = {}  # (module, name) -> source, renamed
        self.order: list[tuple[str, str]] = []

    @staticmethod
    def mangle(module: str, name: str) -> str:
        return f"_{module.rsplit('.', 1)[-1]}__{name}"

    def rename_map(self, module: types.ModuleType, node: ast.AST) -> dict[str, str]:
        """Resolve the free names of ``node`` in ``module``; gather what they need."""
        renames = {}
        for name in sorted(_free_names(node)):
            if name not in vars(module):
                continue
            value = vars(module)[name]
            if isinstance(value, types.ModuleType):
                self.imports[name] = (f"import {value.__name__} as {name}"
                                      if value.__name__ != name else f"import {name}")
                continue
            home = getattr(value, "__module__", None)
            if name in RUNTIME_NAMES and home == runtime.__name__:
                continue  # the runtime is copied whole
            if home and not home.startswith(CHECKERS_PACKAGE) and (
                    inspect.isfunction(value) or inspect.isclass(value)):
                self.imports[name] = f"from {home} import {value.__name__} as {name}"
                continue
            if home and home.startswith(CHECKERS_PACKAGE):
                module_of = importlib.import_module(home)
                self.add(module_of, value.__name__)
                renames[name] = self.mangle(home, value.__name__)
            else:  # a constant of the checkers' module
                self.add_constant(module, name)
                renames[name] = self.mangle(module.__name__, name)
        return renames

    def add(self, module: types.ModuleType, name: str) -> None:
        key = (module.__name__, name)
        if key in self.defs:
            return
        if name.startswith(("oracle", "reference", "torch_", "_torch")):
            raise ValueError(f"{module.__name__}.{name} looks like an answer: students must "
                             "not receive it (rename it if it only calls the student's code)")
        self.defs[key] = ""  # reserve (recursion)
        node = ast.parse(textwrap.dedent(inspect.getsource(getattr(module, name)))).body[0]
        renames = self.rename_map(module, node) | {name: self.mangle(module.__name__, name)}
        self.defs[key] = _renamed(node, renames)
        self.order.append(key)

    def add_constant(self, module: types.ModuleType, name: str) -> None:
        key = (module.__name__, name)
        if key in self.defs:
            return
        value = getattr(module, name)
        if not isinstance(value, int | float | str | bool | tuple | frozenset | type(None)):
            raise ValueError(f"{module.__name__}.{name}: only plain constants can be copied")
        self.defs[key] = f"{self.mangle(module.__name__, name)} = {value!r}"
        self.order.append(key)

    def source(self) -> str:
        imports = "\n".join(sorted(set(self.imports.values())))
        return imports + "\n\n\n" + "\n\n\n".join(self.defs[key] for key in self.order)


def _renamed(node: ast.AST, renames: dict[str, str]) -> str:
    class Rename(ast.NodeTransformer):
        def visit_Name(self, n):
            if n.id in renames:
                n.id = renames[n.id]
            return n

        def visit_FunctionDef(self, n):
            if n.name in renames and n is node:
                n.name = renames[n.name]
            self.generic_visit(n)
            return n

        visit_ClassDef = visit_FunctionDef

    return ast.unparse(Rename().visit(node))


#: What a student's copy of a checker keeps: how to call the code, and hints from the answer.
KEPT_METHODS = ("run", "symptom")


def _caller_class(checker: Checker, collector: _Collector) -> str:
    """Source of a small class with the checker's ``run`` and ``symptom`` (and the methods
    they call on ``self``), its tolerances, and nothing that answers."""
    cls = type(checker)
    module = importlib.import_module(cls.__module__)
    methods: dict[str, ast.FunctionDef] = {}
    todo = [name for name in KEPT_METHODS if _defined(cls, name)]
    while todo:
        name = todo.pop()
        if name in methods:
            continue
        owner = next(k for k in cls.__mro__ if name in vars(k))
        node = ast.parse(textwrap.dedent(inspect.getsource(vars(owner)[name]))).body[0]
        methods[name] = node
        for sub in ast.walk(node):
            if (isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name)
                    and sub.value.id == "self" and _defined(cls, sub.attr)
                    and callable(getattr(cls, sub.attr))):
                if sub.attr in ("expected", "mistakes", "hint", "oracle", "cases"):
                    raise ValueError(f"{cls.__name__}.{name} calls self.{sub.attr}: "
                                     "students must not receive it")
                todo.append(sub.attr)
    parts = [f"class {collector.mangle(cls.__module__, cls.__name__)}:",
             f"    name = {checker.name!r}", f"    atol = {checker.atol!r}",
             f"    rtol = {checker.rtol!r}"]
    for node in methods.values():
        node.decorator_list = []
        renames = collector.rename_map(module, node)
        parts.append(textwrap.indent(_renamed(node, renames), "    "))
    return "\n\n".join(parts)


def _defined(cls: type, name: str) -> bool:
    """Whether ``cls`` (not the base ``Checker``) defines ``name``."""
    return any(name in vars(k) for k in cls.__mro__ if k is not Checker and k is not object)


# --- the frozen cases -----------------------------------------------------------------------------


#: Weights with at least this many entries travel as a seed (see runtime.portable_weights).
PORTABLE_MIN = 16


def _portable(cases: list[dict[str, Any]], name: str) -> tuple[list[dict], list[dict]]:
    """The cases with their larger weights replaced by portable ones of the same shape, mean
    and spread (the cases to compute answers on, and the same as packed)."""
    real, packed = [], []
    for number, case in enumerate(cases):
        real.append(dict(case))
        packed.append(dict(case))
        for key, value in case.items():
            if (key.startswith("w.") and isinstance(value, torch.Tensor)
                    and value.dtype == torch.float32 and value.numel() >= PORTABLE_MIN):
                seed = zlib.crc32(f"{name}/{number}/{key}".encode())
                spec = (seed, tuple(value.shape), round(float(value.mean()), 4),
                        round(float(value.std()), 4))
                real[-1][key] = runtime.portable_weights(*spec)
                packed[-1][key] = {"__portable__": spec}
    return real, packed


def _frozen(checker: Checker) -> dict[str, Any]:
    cases, packed = _portable(checker.cases(torch.Generator().manual_seed(0), hidden=False),
                              checker.name)
    return {
        "cases": packed,
        "expected": [checker.expected(case) for case in cases],
        "mistakes": [[(hint, outputs) for hint, outputs in checker.mistakes(case)]
                     for case in cases],
        "uses": list(checker.uses),
        "advice": dict(checker.advice),
        "forbidden": list(checker.forbidden),
    }


def _pack(value: Any) -> str:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return base64.b64encode(zlib.compress(buffer.getvalue(), 9)).decode()


def bundle_source(assignment: Assignment) -> str:
    """The ``course_checks`` module of one assignment's notebook."""
    exercises = [item for item in assignment.items if isinstance(item, Exercise)]
    provided = [item.target.partition(":")[2] for item in assignment.items
                if isinstance(item, Provided)]
    collector = _Collector()
    callers = {ex.name: _caller_class(CHECKERS[ex.name], collector) for ex in exercises}
    names = {ex.name: collector.mangle(type(CHECKERS[ex.name]).__module__,
                                       type(CHECKERS[ex.name]).__name__) for ex in exercises}
    data = {"exercises": {ex.name: _frozen(CHECKERS[ex.name]) for ex in exercises},
            "provided": provided, "assignment": assignment.name}
    runtime_source = inspect.getsource(runtime)
    return "\n".join([
        f'"""Checks of {assignment.name}: visible cases only (generated; do not edit)."""',
        runtime_source.split('"""', 2)[2].lstrip(),
        "# --- how each exercise's code is called " + "-" * 50,
        collector.source(),
        "\n\n".join(callers.values()),
        "CALLERS = {" + ", ".join(f"{k!r}: {v}()" for k, v in names.items()) + "}",
        f"DATA = unpack_data({_pack(data)!r})",
        "",
        "def check(name, obj):",
        '    """Check your `obj` for exercise `name` on the visible cases."""',
        "    student_check(name, obj, CALLERS, DATA)",
        "",
    ])


def setup_cell_code(assignment: Assignment, imports: str) -> str:
    """The notebook's setup cell: the usual imports, then the packed checks."""
    packed = base64.b64encode(zlib.compress(bundle_source(assignment).encode(), 9)).decode()
    lines = textwrap.wrap(packed, 100)
    return (
        f"{imports.rstrip()}\n\n"
        "# The checks of this notebook (visible cases, packed so that the notebook needs no\n"
        "# other file; generated from the course's checkers). They define `check`.\n"
        "import base64 as _b64, sys as _sys, types as _types, zlib as _zlib\n"
        '_checks = _types.ModuleType("course_checks")\n'
        '_checks.__file__ = "<course checks>"\n'
        "_sys.modules[_checks.__name__] = _checks\n"
        "exec(compile(_zlib.decompress(_b64.b64decode(\n"
        + "\n".join(f'    "{line}"' for line in lines)
        + '\n)), _checks.__file__, "exec"), _checks.__dict__)\n'
        "from course_checks import check  # noqa: E402\n"
    )

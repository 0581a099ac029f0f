"""What the grader hands a student's process holds no reference of the exercises it grades.

For every group of every assignment (as ``coursetools.payload.plan_groups`` splits them), the
package cut from the checkers must import on its own, run the graded exercises, stand in for
the exercises they use, and contain nothing that computes a graded exercise's answer.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from coursetools import payload
from coursetools.spec import ASSIGNMENTS, Exercise

GROUPS = [(a.name, [names[i] for i in group])
          for a in ASSIGNMENTS
          for names in [[i.name for i in a.items if isinstance(i, Exercise)]]
          for group in payload.plan_groups(names)]


@pytest.mark.parametrize("assignment, graded", GROUPS,
                         ids=[f"{a}:{'+'.join(g)}" for a, g in GROUPS])
def test_payload_holds_no_reference_of_its_exercises(assignment, graded):
    from coursetools.checks.core import CHECKERS

    assert payload.leaks(graded) == []
    text = "\n".join(payload.build_payload(graded).sources.values())
    for name in graded:
        try:
            fn = getattr(CHECKERS[name].oracle, "__name__", "<lambda>")
        except NotImplementedError:  # an exercise nothing else calls has no stand-in
            continue
        if fn != "<lambda>":
            assert f"def {fn}(" not in text, (name, fn)


def test_payloads_import_alone_without_references(tmp_path):
    """Each group's package imports on its own (in a fresh interpreter, as in the sandbox)
    and registers runnable checkers without ``expected``/``hint``/``oracle`` of its own
    exercises, and with the stand-ins of the exercises they use."""
    from coursetools.checks.core import CHECKERS

    jobs = []
    for k, (_, graded) in enumerate(GROUPS):
        folder = tmp_path / str(k)
        payload.write_package(payload.build_payload(graded), folder)
        uses = sorted({u for g in graded for u in CHECKERS[g].uses})
        jobs.append((str(folder), graded, uses))
    probe = f"""
import sys
for folder, graded, uses in {jobs!r}:
    for module in [m for m in sys.modules if m.startswith({payload.PACKAGE!r})]:
        del sys.modules[module]
    sys.path.insert(0, folder)
    import {payload.PACKAGE}
    from {payload.PACKAGE}.core import CHECKERS, Checker
    for name in graded:
        c = CHECKERS[name]
        assert type(c).run is not Checker.run, name
        for method in ("expected", "hint", "oracle"):
            assert getattr(type(c), method) is getattr(Checker, method), (name, method)
    for name in uses:
        assert callable(CHECKERS[name].oracle), name
    sys.path.remove(folder)
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_exercise_is_graded_in_some_group():
    for a in ASSIGNMENTS:
        names = [i.name for i in a.items if isinstance(i, Exercise)]
        groups = payload.plan_groups(names)
        assert sorted(i for g in groups for i in g) == list(range(len(names))), a.name


def test_the_checks_package_is_not_importable_by_students():
    """The grader binds no `checks` folder into the sandbox: a student's `import checks`
    finds nothing (the payload is the only checker code there)."""
    from coursetools import grading

    assert "checks" not in grading.HARNESS_SOURCE
    assert Path(grading.HARNESS_FILE).name == "harness.py"
    importlib.import_module("coursetools.harness")

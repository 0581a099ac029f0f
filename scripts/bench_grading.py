"""Grading throughput: autograde a generated class of N submissions of one assignment with the
instructor's command, and print submissions per minute and per-submission wall time.

    python scripts/bench_grading.py                 # 100 submissions of ch01_attention, 2 jobs
    python scripts/bench_grading.py --n 20 --assignment ch02_multihead

The class mixes correct submissions, blank ones and common mistakes (tests/mistakes/). The
timings are whole-run wall-clock seconds on this machine, phase by phase: the sandboxed
verdicts (parallel), then nbgrader's autograde and feedback (sequential).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the generated class reuses the tests' mistakes

from coursetools import course  # noqa: E402
from coursetools.spec import ASSIGNMENTS, Exercise  # noqa: E402


def make_class(root: Path, assignment: str, n: int) -> None:
    import importlib
    import pkgutil

    import mistakes

    release = json.loads((root / "release" / assignment / f"{assignment}.ipynb").read_text())
    source = json.loads((ROOT / "exercises" / "source" / assignment / f"{assignment}.ipynb")
                        .read_text())
    answers = {c["id"]: c["source"] for c in source["cells"]}
    spec = next(a for a in ASSIGNMENTS if a.name == assignment)
    owner = {i.name: i.owner_id for i in spec.items if isinstance(i, Exercise)}
    wrong = [m for mod in pkgutil.iter_modules(mistakes.__path__)
             for m in importlib.import_module(f"mistakes.{mod.name}").MISTAKES
             if m.exercise in owner]
    for k in range(n):
        nb = json.loads(json.dumps(release))
        kind = "blank" if k % 5 == 4 else ("mistake" if k % 5 == 3 and wrong else "correct")
        for cell in nb["cells"]:
            if cell["metadata"].get("nbgrader", {}).get("solution") and kind != "blank":
                cell["source"] = answers[cell["id"]]
        if kind == "mistake":
            m = wrong[k % len(wrong)]
            for cell in nb["cells"]:
                if cell["id"] == owner[m.exercise]:
                    cell["source"] = m.cell
        folder = root / "submitted" / f"student{k:03d}" / assignment
        folder.mkdir(parents=True)
        (folder / f"{assignment}.ipynb").write_text(json.dumps(nb))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--assignment", default="ch01_attention")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        course.release(root, [args.assignment])
        make_class(root, args.assignment, args.n)
        start = time.monotonic()
        rows = course.grade(root, jobs=args.jobs, assignments=[args.assignment])
        total = time.monotonic() - start
        sandbox = [json.loads(p.read_text())[args.assignment]["wall_s"]
                   for p in (root / "reports").glob(f"*/{args.assignment}.json")]
    scores = [r.score for r in rows]
    for phase, seconds in course.LAST_TIMINGS.items():
        print(f"{'  ' + phase + ' (s)':<34}{seconds:.1f}")
    print(f"{'submissions':<34}{len(rows)}")
    print(f"{'jobs':<34}{args.jobs}")
    print(f"{'total wall time (s)':<34}{total:.1f}")
    print(f"{'submissions per minute':<34}{60 * len(rows) / total:.1f}")
    print(f"{'wall time per submission (s)':<34}{total / len(rows):.2f}")
    print(f"{'sandboxed run per submission (s)':<34}median {statistics.median(sandbox):.2f}, "
          f"max {max(sandbox):.2f}")
    print(f"{'scores (min / median / max)':<34}{min(scores):g} / {statistics.median(scores):g} "
          f"/ {max(scores):g}")


if __name__ == "__main__":
    main()

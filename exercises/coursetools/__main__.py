"""Instructor commands: ``python -m coursetools <command>`` (see ``--help``)."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from . import build, course


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursetools", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="generate exercises/source/ from the solutions package")
    rel = sub.add_parser("release", help="generate the student version of assignments")
    rel.add_argument("assignments", nargs="*", help="only these (default: all)")
    rel.add_argument("--course", type=Path, default=course.EXERCISES_DIR,
                     help="course directory (default: exercises/, the self-study edition)")
    rel.add_argument("--due", type=datetime.datetime.fromisoformat, default=None,
                     help="due date recorded in the gradebook (UTC, e.g. 2026-03-01T23:59)")
    rel.add_argument("--force", action="store_true",
                     help="release even while an earlier chapter, whose reference this one "
                          "provides, is still open")
    grd = sub.add_parser("grade", help="autograde every submission in <course>/submitted/")
    grd.add_argument("assignments", nargs="*", help="only these (default: all)")
    grd.add_argument("--course", type=Path, default=course.EXERCISES_DIR,
                     help="course directory (default: exercises/)")
    grd.add_argument("--jobs", type=int, default=2, help="submissions graded at once")
    args = parser.parse_args(argv)
    if args.command == "build":
        changed = build.build()
        for path in changed:
            print(f"wrote {path}")
        print(f"{len(changed)} file(s) changed")
    elif args.command == "release":
        for name in course.release(args.course, args.assignments or None, args.due,
                                   args.force):
            print(f"released {args.course / 'release' / name}")
    elif args.command == "grade":
        rows = course.grade(args.course, args.jobs, args.assignments or None)
        for row in rows:
            extra = f"  [{'; '.join(row.reasons + row.flags)}]" if row.reasons or row.flags else ""
            print(f"{row.student:>16} {row.assignment:<18} {row.score:5g} / {row.max_score:g}"
                  f"  {row.status}{extra}")
        print(f"grades: {args.course / 'grades.csv'} (Canvas import: grades_canvas.csv); "
              f"feedback: {args.course / 'feedback'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

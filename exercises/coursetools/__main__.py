"""Instructor commands: ``python -m coursetools <command>`` (see ``--help``)."""

from __future__ import annotations

import argparse
import sys

from . import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursetools", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="generate exercises/source/ from the solutions package")
    args = parser.parse_args(argv)
    if args.command == "build":
        changed = build.build()
        for path in changed:
            print(f"wrote {path}")
        print(f"{len(changed)} file(s) changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

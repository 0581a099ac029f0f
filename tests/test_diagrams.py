"""The book's diagrams (book/diagrams/): the committed SVG files are what the drawing code draws,
each is used by a chapter, and each is narrow enough, with text large enough, for a phone."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIAGRAMS = ROOT / "book" / "diagrams"


def _draw_module():
    spec = importlib.util.spec_from_file_location("book_diagrams_draw", DIAGRAMS / "draw.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_svgs_are_fresh():
    drawn = _draw_module().render()
    committed = {p.name: p.read_text(encoding="utf-8") for p in (DIAGRAMS / "svg").glob("*.svg")}
    assert sorted(committed) == sorted(drawn), "run `python book/diagrams/draw.py`"
    stale = [name for name, text in drawn.items() if committed[name] != text]
    assert not stale, f"stale diagrams {stale}: run `python book/diagrams/draw.py`"


def test_every_diagram_is_in_a_chapter():
    chapters = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "book").glob("*.md"))
    unused = [p.name for p in (DIAGRAMS / "svg").glob("*.svg")
              if f"diagrams/svg/{p.name}" not in chapters]
    assert not unused, f"diagrams no chapter shows: {unused}"


def test_text_is_legible_on_a_phone():
    """Shown at a 350 px column (a 390 px phone), the smallest text is at least 10 px."""
    for path in sorted((DIAGRAMS / "svg").glob("*.svg")):
        root = ET.parse(path).getroot()
        width = float(root.get("viewBox").split()[2])
        sizes = [float(t.get("font-size")) for t in root.iter("{http://www.w3.org/2000/svg}text")]
        assert sizes, f"{path.name}: no text"
        shown = min(sizes) * min(1.0, 350 / width)
        assert shown >= 10, f"{path.name}: smallest text {shown:.1f} px on a phone"

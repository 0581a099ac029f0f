"""A very small SVG writer for the book's diagrams: boxes, text, arrows, grids.

One style for every diagram: the palette below, one font, text at least MIN_FONT user units.
The diagrams are at most MAX_WIDTH units wide, so on a 390 px phone (a text column of about
350 px) the smallest text is displayed at 16 * 350 / 540 = 10.4 px or more. The background is
transparent; the book's CSS turns them to dark colours in the theme's dark mode.
"""

from __future__ import annotations

from html import escape

MAX_WIDTH = 540
MIN_FONT = 16
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
INK = "#222222"
MUTED = "#555555"

# One colour per kind of block, the same in every diagram (light fills, dark ink).
FILL = {
    "attention": "#fcd9a8",  # orange: attention (self, masked, cross)
    "ffn": "#bfe0f5",  # blue: feed-forward network
    "norm": "#f3ec9c",  # yellow: add & norm, LayerNorm
    "embed": "#f5c4d4",  # pink: embeddings, positional encodings
    "linear": "#d9d0f2",  # purple: linear layers, projections
    "softmax": "#c8ecd3",  # green: softmax, probabilities
    "data": "#eeeeee",  # grey: tensors
    "stack": "none",
}
# Heads, mask cells, beams: a colour-blind-safe sequence (Okabe-Ito).
SERIES = ["#e69f00", "#56b4e9", "#009e73", "#cc79a7", "#0072b2", "#d55e00"]
ALLOWED = "#7fc8a9"
BLOCKED = "#ffffff"


class Svg:
    """Collects SVG elements; `str(svg)` is the document."""

    def __init__(self, width: int, height: int, title: str):
        assert width <= MAX_WIDTH, f"{title}: {width} units is wider than {MAX_WIDTH}"
        self.width, self.height, self.title = width, height, title
        self.parts: list[str] = []

    # -- primitives -------------------------------------------------------------------------

    def text(self, x, y, s, size=MIN_FONT, anchor="middle", weight="normal", fill=INK,
             italic=False):
        assert size >= MIN_FONT, f"{s!r}: font {size} < {MIN_FONT}"
        style = ' font-style="italic"' if italic else ""
        self.parts.append(
            f'<text x="{x:g}" y="{y:g}" font-size="{size:g}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}" dominant-baseline="central"{style}>'
            f"{escape(s)}</text>"
        )

    def rect(self, x, y, w, h, fill="none", stroke=INK, rx=6, dash=False, width=1.5):
        d = ' stroke-dasharray="6 4"' if dash else ""
        self.parts.append(
            f'<rect x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}" rx="{rx:g}" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{width:g}"{d}/>'
        )

    def box(self, x, y, w, h, label, kind="data", size=MIN_FONT, sub=None, weight="normal"):
        """A filled block centred on its label; `sub` is a second, smaller line (a shape)."""
        self.rect(x, y, w, h, fill=FILL[kind])
        if sub is None:
            self.text(x + w / 2, y + h / 2, label, size=size, weight=weight)
        else:
            self.text(x + w / 2, y + h / 2 - 10, label, size=size, weight=weight)
            self.text(x + w / 2, y + h / 2 + 10, sub, size=MIN_FONT, fill=MUTED)

    def line(self, points, arrow=True, color=INK, dash=False, width=1.6):
        pts = " ".join(f"{x:g},{y:g}" for x, y in points)
        head = ' marker-end="url(#arrow)"' if arrow else ""
        d = ' stroke-dasharray="5 4"' if dash else ""
        self.parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{width:g}"'
            f'{head}{d}/>'
        )

    def arrow(self, x1, y1, x2, y2, **kw):
        self.line([(x1, y1), (x2, y2)], **kw)

    def circle(self, x, y, r, label="+", fill="#ffffff"):
        self.parts.append(
            f'<circle cx="{x:g}" cy="{y:g}" r="{r:g}" fill="{fill}" stroke="{INK}" '
            f'stroke-width="1.5"/>'
        )
        self.text(x, y, label, size=MIN_FONT + 2, weight="bold")

    def grid(self, x, y, rows, cols, cell, colour_of, stroke=INK):
        """A rows x cols grid of cells; colour_of(i, j) gives each cell's fill."""
        for i in range(rows):
            for j in range(cols):
                self.parts.append(
                    f'<rect x="{x + j * cell:g}" y="{y + i * cell:g}" width="{cell:g}" '
                    f'height="{cell:g}" fill="{colour_of(i, j)}" stroke="{stroke}" '
                    f'stroke-width="1"/>'
                )

    # -- document ---------------------------------------------------------------------------

    def __str__(self) -> str:
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width} {self.height}" '
            f'width="{self.width}" height="{self.height}" font-family="{FONT}" '
            f'role="img" aria-label="{escape(self.title)}">\n'
            f"<title>{escape(self.title)}</title>\n"
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{INK}"/></marker></defs>\n'
        )
        return head + "\n".join(self.parts) + "\n</svg>\n"

"""The book's diagrams, drawn by code: `python book/diagrams/draw.py` writes book/diagrams/svg/.

Each function returns one `Svg`; DIAGRAMS maps file names to them. The SVG files are committed
and tests/test_diagrams.py fails when they differ from what this module draws.
Shape letters as in the text: B batch, L length, S source length, T target length, D model
width, H heads, Dh = D / H head width, V vocabulary, Q and K query and key counts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from svg import ALLOWED, BLOCKED, FILL, INK, MUTED, SERIES, Svg  # noqa: E402

OUT = Path(__file__).resolve().parent / "svg"


# ------------------------------------------------------------------------------------------
# Chapter 1: scaled dot-product attention


def attention() -> Svg:
    s = Svg(540, 520, "Scaled dot-product attention")
    s.box(20, 10, 150, 54, "Q", "data", weight="bold", sub="(B, H, Q, d_k)")
    s.box(195, 10, 150, 54, "K", "data", weight="bold", sub="(B, H, K, d_k)")
    s.box(380, 10, 150, 54, "V", "data", weight="bold", sub="(B, H, K, d_v)")
    x, w = 20, 325
    s.arrow(95, 64, 95, 92)
    s.arrow(270, 64, 270, 92)
    s.box(x, 94, w, 54, "MatMul  Q Kᵀ", "linear", sub="scores (B, H, Q, K)")
    s.arrow(182, 148, 182, 172)
    s.box(x, 174, w, 40, "÷ √d_k", "linear")
    s.arrow(182, 214, 182, 238)
    s.rect(x, 240, w, 54, fill=FILL["data"], dash=True)
    s.text(182, 258, "mask: −∞ where False")
    s.text(182, 280, "(optional)", fill=MUTED)
    s.arrow(182, 294, 182, 318)
    s.box(x, 320, w, 54, "softmax over the keys", "softmax", sub="weights (B, H, Q, K)")
    s.arrow(182, 374, 182, 398)
    s.box(x, 400, 510, 44, "MatMul  weights · V", "linear")
    s.arrow(505, 64, 505, 398)
    s.arrow(182, 444, 182, 468)
    s.box(x, 470, w, 44, "output (B, H, Q, d_v)", "data")
    # A picture of the weights: one row per query, each row sums to 1.
    rows = [[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.1, 0.1, 0.2, 0.6]]
    shade = ["#f4fbf6", "#c8ecd3", "#7fc8a9", "#2f8f6a"]

    def colour(i, j):
        return shade[min(3, int(rows[i][j] * 5))]

    s.text(440, 150, "weights", weight="bold")
    s.text(440, 172, "keys →", fill=MUTED)
    s.grid(392, 186, 3, 4, 24, colour)
    s.text(440, 274, "each row", fill=MUTED)
    s.text(440, 294, "sums to 1", fill=MUTED)
    return s


# ------------------------------------------------------------------------------------------
# Chapter 2: multi-head attention, split and merge


def _bar(s: Svg, x, y, n, w, h, labels=None):
    """A vector drawn as n coloured segments of width w (one per head)."""
    for i in range(n):
        s.rect(x + i * w, y, w, h, fill=SERIES[i], rx=0, width=1)
        if labels:
            s.text(x + i * w + w / 2, y + h / 2, labels[i], fill="#000000")


def _stack(s: Svg, x, y, n, w, h, gap=4):
    for i in range(n):
        s.rect(x, y + i * (h + gap), w, h, fill=SERIES[i], rx=0, width=1)


def multihead() -> Svg:
    s = Svg(540, 700, "Multi-head attention: split into heads, attend, merge")
    s.box(160, 10, 220, 50, "x", "data", weight="bold", sub="(B, L, D)")
    for i, name in enumerate(["W_Q", "W_K", "W_V"]):
        x = 20 + i * 175
        s.line([(270, 60), (270, 72), (x + 75, 72), (x + 75, 92)])
        s.box(x, 94, 150, 50, name, "linear", sub="(B, L, D)")
    s.arrow(270, 144, 270, 170)
    # Split: one position's D numbers become H rows of Dh.
    s.text(20, 186, "split", anchor="start", weight="bold")
    s.text(270, 186, "D = H · Dh", fill=MUTED)
    _bar(s, 40, 206, 4, 52, 28, ["Dh"] * 4)
    s.arrow(262, 220, 322, 220)
    _stack(s, 336, 196, 4, 52, 20, gap=3)
    for i in range(4):
        s.text(400, 206 + i * 23, f"head {i + 1}", anchor="start")
    s.text(270, 312, "view (B, L, H, Dh)", fill=MUTED)
    s.text(270, 334, "transpose → (B, H, L, Dh)", fill=MUTED)
    s.arrow(270, 348, 270, 370)
    # Attention in every head at once.
    for i in range(4):
        x = 22 + i * 128
        s.rect(x, 372, 116, 50, fill=FILL["attention"])
        s.rect(x, 372, 116, 8, fill=SERIES[i], rx=2, width=1)
        s.text(x + 58, 392, "Attention")
        s.text(x + 58, 410, f"head {i + 1}", fill=MUTED)
    s.text(270, 444, "all heads in one batched call: (B, H, L, Dh)", fill=MUTED)
    s.arrow(270, 458, 270, 480)
    # Merge: the H rows of each position are concatenated again.
    s.text(20, 496, "merge", anchor="start", weight="bold")
    _stack(s, 110, 482, 4, 52, 20, gap=3)
    s.arrow(172, 526, 226, 526)
    _bar(s, 240, 512, 4, 52, 28, ["Dh"] * 4)
    s.text(270, 590, "transpose (B, L, H, Dh) → reshape (B, L, D)", fill=MUTED)
    s.arrow(270, 604, 270, 626)
    s.box(160, 628, 220, 50, "W_O", "linear", sub="output (B, L, D)")
    return s


# ------------------------------------------------------------------------------------------
# Chapters 4 and 5: encoder and decoder layers, post-norm and pre-norm


def _layer_column(s: Svg, x0, y_bottom, sublayers, pre_norm, box_w=160, lane=28,
                  box_h=40, memory_from=None, lane_right=False):
    """Draw one layer bottom to top; return (centre x, top y, {sublayer: box centre y}).

    sublayers: list of (label, kind). memory_from: a label drawn at the right of a box whose
    label starts with "Cross", with an arrow into it (K and V come from the encoder).
    """
    cx = x0 + lane + box_w / 2 if not lane_right else x0 + box_w / 2
    lane_x = x0 + 8 if not lane_right else x0 + box_w + 20
    y = y_bottom
    centres = {}
    for label, kind in sublayers:
        branch = y
        s.parts.append(f'<circle cx="{cx:g}" cy="{branch:g}" r="3.5" fill="{INK}"/>')
        y -= 14
        if pre_norm:
            s.arrow(cx, branch, cx, y - 2)
            y -= 34
            s.box(cx - box_w / 2, y, box_w, 34, "LayerNorm", "norm")
            y -= 14
            s.arrow(cx, y + 14, cx, y + 2)
        top = y - box_h
        if not pre_norm:
            s.arrow(cx, branch, cx, y + 2)
        s.box(cx - box_w / 2, top, box_w, box_h, label, kind)
        centres[label] = top + box_h / 2
        if memory_from and label.startswith("Cross"):
            mx = cx + box_w / 2
            s.arrow(mx + 46, top + box_h / 2, mx + 2, top + box_h / 2)
            s.text(mx + 32, top + box_h / 2 - 28, memory_from, fill=MUTED)
        plus = top - 34
        s.arrow(cx, top, cx, plus + 14)
        s.circle(cx, plus, 12)
        s.line([(cx, branch), (lane_x, branch), (lane_x, plus), (cx + (-12 if not lane_right
                else 12), plus)])
        y = plus - 12
        if not pre_norm:
            s.arrow(cx, y, cx, y - 12)
            y -= 46
            s.box(cx - box_w / 2, y, box_w, 34, "LayerNorm", "norm")
        y -= 14
    return cx, y, centres


def _layers(title, sublayers, memory=None) -> Svg:
    n = len(sublayers)
    height = 120 + n * 150
    s = Svg(540, height, title)
    for col, pre in enumerate([False, True]):
        x0 = 10 + col * 270
        cx = x0 + 28 + 80
        s.text(cx, 16, "Post-norm (paper)" if not pre else "Pre-norm", weight="bold")
        y_bottom = height - 44
        s.text(cx, height - 16, "x (B, L, D)")
        s.arrow(cx, height - 30, cx, y_bottom + 4)
        _, top, _ = _layer_column(s, x0, y_bottom, sublayers, pre, memory_from=memory)
        s.arrow(cx, top + 12, cx, 44)
        s.text(cx, 34, "(B, L, D)", fill=MUTED)
    return s


def encoder_layer() -> Svg:
    return _layers("Encoder layer, post-norm and pre-norm",
                   [("Self-attention", "attention"), ("Feed-forward", "ffn")])


def decoder_layer() -> Svg:
    return _layers("Decoder layer, post-norm and pre-norm",
                   [("Masked self-attn", "attention"), ("Cross-attn", "attention"),
                    ("Feed-forward", "ffn")], memory="memory")


# ------------------------------------------------------------------------------------------
# Chapter 6: the whole model (our drawing of the paper's figure 1)


def transformer() -> Svg:
    s = Svg(540, 880, "The Transformer: encoder (left) and decoder (right)")
    # Encoder, left.
    ex = 14
    ecx = ex + 28 + 80
    s.text(ecx, 862, "source ids (B, S)")
    s.arrow(ecx, 848, ecx, 822)
    s.box(ecx - 80, 784, 160, 36, "Embedding ·√D", "embed")
    s.arrow(ecx, 784, ecx, 762)
    s.box(ecx - 80, 726, 160, 34, "+ positions", "embed")
    s.arrow(ecx, 726, ecx, 700)
    _, etop, _ = _layer_column(s, ex, 690, [("Self-attention", "attention"),
                                           ("Feed-forward", "ffn")], False)
    s.rect(ex + 2, etop + 6, 250, 690 - etop + 4, dash=True, rx=10)
    s.text(ex + 250 - 4, etop + 24, "N ×", anchor="end", weight="bold")
    s.arrow(ecx, etop + 6, ecx, etop - 20)
    s.text(ecx, etop - 34, "memory (B, S, D)", weight="bold")
    # Decoder, right (residual lane on the right).
    dx = 290
    dcx = dx + 80
    s.text(dcx, 862, "target in (B, T)")
    s.arrow(dcx, 848, dcx, 822)
    s.box(dcx - 80, 784, 160, 36, "Embedding ·√D", "embed")
    s.arrow(dcx, 784, dcx, 762)
    s.box(dcx - 80, 726, 160, 34, "+ positions", "embed")
    s.arrow(dcx, 726, dcx, 700)
    _, dtop, centres = _layer_column(
        s, dx, 690, [("Masked self-attn", "attention"), ("Cross-attn", "attention"),
                     ("Feed-forward", "ffn")], False, lane_right=True)
    s.rect(dx - 6, dtop + 6, 246, 690 - dtop + 4, dash=True, rx=10)
    s.text(dx - 12, dtop + 24, "N ×", anchor="end", weight="bold")
    # Memory into every decoder layer's cross-attention (keys and values).
    cy = centres["Cross-attn"]
    s.line([(ecx, etop - 48), (ecx, etop - 60), (270, etop - 60), (270, cy), (dcx - 82, cy)])
    s.text(270 - 6, cy + 20, "K, V", anchor="end", fill=MUTED)
    s.arrow(dcx, dtop + 6, dcx, dtop - 16)
    s.box(dcx - 80, dtop - 54, 160, 36, "Linear", "linear")
    s.arrow(dcx, dtop - 54, dcx, dtop - 76)
    s.box(dcx - 80, dtop - 114, 160, 36, "softmax", "softmax")
    s.arrow(dcx, dtop - 114, dcx, dtop - 136)
    s.text(dcx, dtop - 150, "probabilities (B, T, V)", weight="bold")
    return s


# ------------------------------------------------------------------------------------------
# Chapter 5: masks and cross-attention


def masks() -> Svg:
    s = Svg(540, 330, "The three masks: padding, causal, target")
    cell, n = 26, 5
    pad_from = 3  # keys 3 and 4 are padding
    panels = [
        ("padding", "(B, 1, 1, S)", lambda i, j: j < pad_from),
        ("causal", "(T, T)", lambda i, j: j <= i),
        ("target", "(B, 1, T, T)", lambda i, j: j <= i and j < pad_from),
    ]
    x0, gap = 40, 50
    for p, (name, shape, allowed) in enumerate(panels):
        x = x0 + p * (n * cell + gap)
        s.text(x + n * cell / 2, 16, name, weight="bold")
        s.text(x + n * cell / 2, 38, shape, fill=MUTED)
        for j in range(n):
            s.text(x + j * cell + cell / 2, 62, str(j), fill=MUTED)
        s.grid(x, 76, n, n, cell, lambda i, j, a=allowed: ALLOWED if a(i, j) else BLOCKED)
        if p == 0:
            for i in range(n):
                s.text(x - 14, 76 + i * cell + cell / 2, str(i), fill=MUTED)
        if p < 2:
            s.text(x + n * cell + gap / 2, 76 + n * cell / 2, "and" if p == 0 else "=",
                   weight="bold")
    s.text(20, 232, "rows: queries, columns: keys; keys 3 and 4 are padding.",
           anchor="start", fill=MUTED)
    s.rect(20, 258, 22, 22, fill=ALLOWED, rx=0, width=1)
    s.text(50, 269, "True: may attend", anchor="start")
    s.rect(260, 258, 22, 22, fill=BLOCKED, rx=0, width=1)
    s.text(290, 269, "False: blocked", anchor="start")
    s.text(20, 308, "Broadcasting stretches the size-1 axes.", anchor="start", fill=MUTED)
    return s


def cross_attention() -> Svg:
    s = Svg(540, 330, "Cross-attention: decoder queries, encoder keys and values")
    tgt = ["y₁", "y₂", "y₃", "y₄"]
    src = ["x₁", "x₂", "x₃", "x₄", "x₅"]
    weights = [[0.8, 0.15, 0.05, 0, 0], [0.1, 0.7, 0.2, 0, 0], [0, 0.1, 0.3, 0.6, 0],
               [0, 0, 0.1, 0.2, 0.7]]
    s.text(10, 20, "decoder: queries (B, T, D)", anchor="start", weight="bold")
    tx = [50 + i * 70 for i in range(4)]
    sx = [20 + i * 70 for i in range(5)]
    for x, t in zip(tx, tgt):
        s.box(x, 40, 52, 36, t, "attention")
    for x, t in zip(sx, src):
        s.box(x, 226, 52, 36, t, "data")
    for i, row in enumerate(weights):
        for j, w in enumerate(row):
            if w:
                s.line([(tx[i] + 26, 76), (sx[j] + 26, 226)], arrow=False,
                       color=SERIES[i], width=0.6 + 7 * w)
    s.text(10, 286, "encoder memory: keys, values (B, S, D)", anchor="start", weight="bold")
    s.text(10, 312, "(illustrative weights: line width)", anchor="start", fill=MUTED)
    # The same weights as a T x S map, as the book's heatmaps show them.
    shade = ["#ffffff", "#c8ecd3", "#7fc8a9", "#2f8f6a"]
    gx, gy, c = 400, 112, 24
    s.grid(gx, gy, 4, 5, c, lambda i, j: shade[min(3, int(weights[i][j] * 4.5 + 0.5))])
    s.text(gx + 60, 90, "(B, H, T, S)", fill=MUTED)
    for i, t in enumerate(tgt):
        s.text(gx - 12, gy + i * c + c / 2, t, fill=MUTED)
    for j, t in enumerate(src):
        s.text(gx + j * c + c / 2, gy + 4 * c + 14, t, fill=MUTED)
    return s


# ------------------------------------------------------------------------------------------
# Chapter 6: the key/value cache and a beam search step


def kv_cache() -> Svg:
    s = Svg(540, 360, "The key/value cache across decoding steps")
    s.text(45, 16, "step", weight="bold")
    s.text(120, 16, "input", weight="bold")
    s.text(270, 16, "K cache", weight="bold")
    s.text(440, 16, "V cache", weight="bold")
    tokens = ["BOS", "y₁", "y₂", "y₃"]
    c = 34
    for t in range(4):
        y = 40 + t * 58
        s.text(45, y + c / 2, str(t + 1))
        s.box(92, y, 56, c, tokens[t], "embed")
        s.arrow(148, y + c / 2, 196, y + c / 2)
        for j in range(t + 1):
            new = j == t
            fill = FILL["attention"] if new else FILL["data"]
            s.rect(200 + j * c, y, c, c, fill=fill, rx=0, width=1)
            s.text(200 + j * c + c / 2, y + c / 2, f"k{j + 1}")
            s.rect(370 + j * c, y, c, c, fill=fill, rx=0, width=1)
            s.text(370 + j * c + c / 2, y + c / 2, f"v{j + 1}")
    s.text(20, 290, "Each step computes q, k, v for the new token only,", anchor="start",
           fill=MUTED)
    s.text(20, 312, "appends k, v (orange), attends over all: (B, H, t, Dh).",
           anchor="start", fill=MUTED)
    s.text(20, 334, "Cross-attention K, V: from memory, computed once.", anchor="start",
           fill=MUTED)
    return s


def beam_step() -> Svg:
    s = Svg(540, 400, "One step of beam search, beam size k = 2")
    s.text(80, 16, "beam (k = 2)", weight="bold")
    s.text(290, 16, "k · V candidates", weight="bold")
    s.text(472, 16, "kept", weight="bold")
    hyps = [("BOS a", "−0.4", 90), ("BOS EOS", "−0.9", 280)]
    for label, score, y in hyps:
        s.box(10, y - 24, 140, 48, label, "data", sub=score)
    cands = [  # (from hypothesis, token added, score, kept)
        (0, "+ a", "−0.4 −1.2 = −1.6", False),
        (0, "+ b", "−0.4 −0.3 = −0.7", True),
        (0, "+ EOS", "−0.4 −0.8 = −1.2", False),
        (1, "+ PAD", "−0.9 + 0 = −0.9", True),
    ]
    ys = [50, 110, 170, 280]
    for (h, text, score, kept), y in zip(cands, ys):
        s.line([(150, hyps[h][2]), (200, y)], arrow=True, color=INK if kept else MUTED,
               dash=not kept)
        s.rect(202, y - 24, 180, 48, fill=FILL["softmax"] if kept else "none",
               dash=not kept, width=2.5 if kept else 1.5)
        s.text(292, y - 10, text, weight="bold" if kept else "normal")
        s.text(292, y + 11, score, fill=MUTED)
        if kept:
            s.arrow(382, y, 406, y)
    s.box(408, 86, 128, 48, "BOS a b", "softmax", sub="−0.7")
    s.box(408, 256, 128, 48, "BOS EOS PAD", "softmax", sub="−0.9")
    s.text(20, 336, "Scores add log-probabilities; topk keeps the k best.", anchor="start",
           fill=MUTED)
    s.text(20, 358, "A finished beam may only add PAD, at no cost.", anchor="start",
           fill=MUTED)
    s.text(20, 380, "At the end: finished beams, ranked with the length penalty.",
           anchor="start", fill=MUTED)
    return s


DIAGRAMS = {
    "attention": attention,
    "multihead": multihead,
    "encoder_layer": encoder_layer,
    "decoder_layer": decoder_layer,
    "masks": masks,
    "cross_attention": cross_attention,
    "transformer": transformer,
    "kv_cache": kv_cache,
    "beam_step": beam_step,
}


def render() -> dict[str, str]:
    """File name -> SVG text of every diagram."""
    return {f"{name}.svg": str(fn()) for name, fn in DIAGRAMS.items()}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print("wrote", OUT / name)


if __name__ == "__main__":
    main()

"""Building blocks for the hostile-submission corpus (tests/test_hostile.py).

A submission is the chapter 1 source notebook's code with some cells replaced or added:
``code_cells(replace={cell_id: code}, after={cell_id: [code, ...]})`` gives the code cells the
grader runs (test cells left out, as the grader leaves them out), and ``notebook(...)`` gives a
whole student notebook (for the nbgrader round trip) built from the *released* notebook.

``CORRECT``/``WRONG``/``STUB`` hold one honest answer, one wrong answer and the unanswered stub
for each exercise; ``HONEST`` lists correct answers written differently (each must score full
marks); ``POINTS`` is each exercise's weight in the notebook.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "ch01_attention"
SOURCE_NB = ROOT / "exercises" / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
NAMES = ["softmax", "scaled_dot_product_attention", "padding_mask"]
SM, ATT, PAD = NAMES


def _source_cells() -> list[dict]:
    return [c for c in json.loads(SOURCE_NB.read_text())["cells"] if c["cell_type"] == "code"]


def _is_test(meta: dict) -> bool:
    return bool(meta.get("grade")) and not meta.get("solution")


POINTS = {c["metadata"]["nbgrader"]["grade_id"].removeprefix("test_"):
          c["metadata"]["nbgrader"]["points"]
          for c in _source_cells() if _is_test(c["metadata"].get("nbgrader", {}))}
FULL = {name: POINTS[name] for name in NAMES}

CORRECT = {c["id"]: "".join(c["source"]) for c in _source_cells() if c["id"] in NAMES}

STUB = {name: CORRECT[name].split("### BEGIN SOLUTION")[0]
        + "    # YOUR CODE HERE\n    raise NotImplementedError()\n" for name in NAMES}

WRONG = {
    # wrong on every requirement: normalises over every entry (not along dim), overflows on
    # logits of 1e4 (NaN), forgets a float64 input's dtype
    SM: '''
def softmax(x, dim=-1):
    e = torch.exp(x.float())
    return e / e.sum()
''',
    # no 1/sqrt(d_k)
    ATT: '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    return weights @ v, weights
''',
    # wrong on every requirement: inverted, and built on the CPU whatever the tokens' device
    PAD: '''
def padding_mask(tokens, pad_id=0):
    return (tokens.cpu() == pad_id)[:, None, None, :]
''',
}

#: Right on the visible cases, wrong on a hidden one (a query that may attend to nothing gets
#: NaN from torch.softmax): for attacks that try to shrink the set of cases.
VISIBLE_ONLY_ATTENTION = '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights
'''

#: True when the grader (not the student's own test cell) is calling: the harness is on the
#: stack. Attacks use it to misbehave only while being graded.
GRADED = '''
import sys as _sys
def _graded():
    f = _sys._getframe(1)
    while f is not None:
        if f.f_code.co_filename.endswith("harness.py"):
            return True
        f = f.f_back
    return False
'''


def code_cells(replace: dict[str, str] | None = None,
               after: dict[str, list[str]] | None = None) -> list[str]:
    """The code the grader runs for a submission: setup, provided and answer cells (``replace``
    swaps an answer cell's code; ``after`` adds cells after the cell with that id; "" = at the
    end), never the test cells."""
    replace, after = replace or {}, after or {}
    cells = []
    for c in _source_cells():
        if _is_test(c["metadata"].get("nbgrader", {})):
            continue
        cells.append(replace.get(c["id"], "".join(c["source"])))
        cells += after.get(c["id"], [])
    return cells + after.get("", [])


def expected(**scores: float) -> dict[str, float]:
    """Full marks except where told: ``expected(softmax=0)``."""
    return {**FULL, **scores}


def notebook(release_nb: Path, answers: dict[str, str], extra_end: list[str] = (),
             edit=None) -> nbformat.NotebookNode:
    """A student's notebook: the released notebook with the answer cells filled in,
    ``extra_end`` code cells appended, then ``edit(nb)`` applied (to tamper with cells)."""
    nb = nbformat.read(release_nb, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    for code in extra_end:
        nb.cells.append(nbformat.v4.new_code_cell(code))
    if edit is not None:
        edit(nb)
    return nb


def test_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in nb.cells if _is_test(c.metadata.get("nbgrader", {}))]


def clone(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return copy.deepcopy(nb)


# --- honest variants: correct answers written differently ------------------------------------

HONEST_SOFTMAX = [
    ("max subtraction via torch.max values", '''
def softmax(x, dim=-1):
    m = torch.max(x, dim=dim, keepdim=True).values
    m = torch.nan_to_num(m, neginf=0.0)
    e = (x - m).exp()
    s = e.sum(dim, keepdim=True)
    return e / s.clamp_min(torch.finfo(x.dtype).tiny)
'''),
    ("logsumexp", '''
def softmax(x, dim=-1):
    lse = torch.logsumexp(x, dim=dim, keepdim=True)
    return torch.exp(x - lse).nan_to_num(0.0)
'''),
    ("float64 inside, cast back", '''
def softmax(x, dim=-1):
    y = x.double()
    m = y.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    e = torch.exp(y - m)
    t = e.sum(dim=dim, keepdim=True)
    return (e / torch.where(t == 0, torch.ones_like(t), t)).to(x.dtype)
'''),
    ("movedim + loop over rows", '''
def softmax(x, dim=-1):
    y = x.movedim(dim, -1)
    flat = y.reshape(-1, y.shape[-1])
    rows = []
    for row in flat:
        if torch.isinf(row).all() and (row < 0).all():
            rows.append(torch.zeros_like(row))
            continue
        e = torch.exp(row - row.max())
        rows.append(e / e.sum())
    out = torch.stack(rows) if rows else flat
    return out.reshape(y.shape).movedim(-1, dim)
'''),
    ("masked_fill of the non-finite max", '''
def softmax(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True)
    m = m.masked_fill(~torch.isfinite(m), 0.0)
    e = torch.exp(x - m)
    return e / torch.clamp(e.sum(dim=dim, keepdim=True), min=torch.finfo(e.dtype).tiny)
'''),
    ("detach max (gradient-friendly trick)", '''
def softmax(x, dim=-1):
    m = x.detach().amax(dim=dim, keepdim=True).nan_to_num(0.0, neginf=0.0, posinf=0.0)
    e = torch.exp(x - m)
    d = e.sum(dim=dim, keepdim=True)
    return torch.where(d > 0, e / d, torch.zeros_like(e))
'''),
    ("log_softmax by hand then exp", '''
def softmax(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    z = x - m
    logp = z - torch.log(torch.exp(z).sum(dim=dim, keepdim=True))
    return torch.exp(logp).nan_to_num(0.0)
'''),
    ("lambda assignment", '''
_safe_max = lambda x, dim: torch.nan_to_num(x.amax(dim=dim, keepdim=True), neginf=0.0)
softmax = lambda x, dim=-1: (lambda e: e / e.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny))(
    torch.exp(x - _safe_max(x, dim)))
'''),
    ("helper in its own earlier cell", '''
def _stable_exp(x, dim):
    m = x.amax(dim=dim, keepdim=True)
    return torch.exp(x - torch.where(torch.isfinite(m), m, 0.0 * m.nan_to_num(0.0)))

def softmax(x, dim=-1):
    e = _stable_exp(x, dim)
    s = e.sum(dim=dim, keepdim=True)
    return e / torch.where(s > 0, s, torch.ones_like(s))
'''),
    ("prints to stdout and stderr on every call", '''
import sys
def softmax(x, dim=-1):
    print("softmax called with", tuple(x.shape))
    print("debug: about to exponentiate", file=sys.stderr)
    m = x.amax(dim=dim, keepdim=True).nan_to_num(0.0, neginf=0.0)
    e = torch.exp(x - m)
    return e / e.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
'''),
    ("warnings.warn on every call", '''
import warnings
def softmax(x, dim=-1):
    warnings.warn("softmax: this one is slow but right", RuntimeWarning)
    m = x.amax(dim=dim, keepdim=True).nan_to_num(0.0, neginf=0.0)
    e = torch.exp(x - m)
    return e / e.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
'''),
    ("%time magic and a class with __call__", '''
%time _ = 1 + 1
class _Softmax:
    def __call__(self, x, dim=-1):
        m = x.amax(dim=dim, keepdim=True).nan_to_num(0.0, neginf=0.0)
        e = torch.exp(x - m)
        return e / e.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
softmax = _Softmax()
'''),
    ("in-place ops on a clone", '''
def softmax(x, dim=-1):
    y = x.clone()
    m = y.amax(dim=dim, keepdim=True).nan_to_num_(0.0, neginf=0.0)
    y.sub_(m).exp_()
    y.div_(y.sum(dim=dim, keepdim=True).clamp_min_(torch.finfo(y.dtype).tiny))
    return y
'''),
    ("decorated with torch.no_grad", '''
@torch.no_grad()
def softmax(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True).nan_to_num(0.0, neginf=0.0)
    e = torch.exp(x - m)
    return e / e.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
'''),
    ("sigmoid-free reciprocal form", '''
def softmax(x, dim=-1):
    m = x.amax(dim=dim, keepdim=True).nan_to_num(0.0, neginf=0.0)
    e = torch.exp(x - m)
    s = e.sum(dim=dim, keepdim=True)
    return e * torch.where(s > 0, s.reciprocal(), torch.zeros_like(s))
'''),
    ("numpy round trip in float64", '''
import numpy as np
def softmax(x, dim=-1):
    a = x.detach().cpu().numpy().astype(np.float64)
    m = np.max(a, axis=dim, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(a - m)
    s = e.sum(axis=dim, keepdims=True)
    out = np.divide(e, s, out=np.zeros_like(e), where=s > 0)
    return torch.from_numpy(out).to(x.dtype)
'''),
    ("transpose to last dim, softmax, transpose back", '''
def softmax(x, dim=-1):
    y = x.transpose(dim, -1)
    m = y.amax(-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
    e = (y - m).exp()
    return (e / e.sum(-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)).transpose(dim, -1).contiguous()
'''),
    ("type hints, docstring, extra imports", '''
import functools, itertools, collections  # noqa
from typing import Optional
def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Stable softmax."""
    shift: Optional[Tensor] = x.amax(dim=dim, keepdim=True)
    shift = torch.where(shift.isneginf(), torch.zeros_like(shift), shift)
    e = (x - shift).exp()
    total = e.sum(dim=dim, keepdim=True)
    return e / total.where(total > 0, torch.ones_like(total))
'''),
]

HONEST_ATTENTION = [
    ("einsum, float64 inside", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    s = torch.einsum("...qd,...kd->...qk", q.double(), k.double()) / q.shape[-1] ** 0.5
    if mask is not None:
        s = s.masked_fill(mask.logical_not(), float("-inf"))
    w = softmax(s, dim=-1)
    return torch.einsum("...qk,...kd->...qd", w, v.double()).to(q.dtype), w.to(q.dtype)
'''),
    ("torch.where instead of masked_fill", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(k.size(-1))
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(float("-inf")))
    weights = softmax(scores, dim=-1)
    return torch.matmul(weights, v), weights
'''),
    ("scale q before the product", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = (q * q.shape[-1] ** -0.5) @ k.mT
    if mask is not None:
        scores = scores.masked_fill(~mask, -float("inf"))
    w = softmax(scores, -1)
    return w @ v, w
'''),
    ("the notebook's softmax plus nan_to_num", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = softmax(scores, dim=-1).nan_to_num(0.0)
    return w @ v, w
'''),
    ("large negative instead of -inf, then zero fully masked rows", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e9)
    w = softmax(scores, dim=-1)
    if mask is not None:
        w = w * mask
        w = w * mask.any(-1, keepdim=True)
    return w @ v, w
'''),
    ("bmm on flattened batch dims", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    *lead, lq, d = q.shape
    lk, dv = k.shape[-2], v.shape[-1]
    qf, kf, vf = q.reshape(-1, lq, d), k.reshape(-1, lk, d), v.reshape(-1, lk, dv)
    s = torch.bmm(qf, kf.transpose(1, 2)).reshape(*lead, lq, lk) / math.sqrt(d)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = softmax(s, dim=-1)
    out = torch.bmm(w.reshape(-1, lq, lk), vf).reshape(*lead, lq, dv)
    return out, w
'''),
    ("tensordot-free loop over queries", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask.expand_as(scores) if mask.dim() == scores.dim()
                                    else ~mask, float("-inf"))
    w = softmax(scores, dim=-1)
    outs = [w[..., i:i + 1, :] @ v for i in range(q.shape[-2])]
    return torch.cat(outs, dim=-2), w
'''),
    ("calls the provided check_mask and F.dropout when training", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    check_mask(mask, q.shape[-2], k.shape[-2])
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights
'''),
    ("prints shapes and warns", '''
import warnings
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    print("q", tuple(q.shape), "k", tuple(k.shape))
    warnings.warn("attention: debugging output left in")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = softmax(scores, dim=-1)
    return w @ v, w
'''),
    ("returns a list-free tuple built with tuple()", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = q.matmul(k.swapaxes(-2, -1)).div(math.sqrt(q.shape[-1]))
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), float("-inf"))
    w = softmax(scores, dim=-1)
    return tuple([w.matmul(v), w])
'''),
    ("addition of a float mask", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        bias = torch.zeros(mask.shape, dtype=scores.dtype).masked_fill(~mask, float("-inf"))
        scores = scores + bias
    w = softmax(scores, dim=-1)
    return w @ v, w
'''),
    ("helper functions in an extra cell", '''
def _scores(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])

def _apply_mask(s, mask):
    return s if mask is None else s.masked_fill(~mask, float("-inf"))

def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    w = softmax(_apply_mask(_scores(q, k), mask), dim=-1)
    return w @ v, w
'''),
    ("torch.no_grad decorator and contiguous outputs", '''
@torch.no_grad()
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = softmax(scores, dim=-1).contiguous()
    return (w @ v).contiguous(), w
'''),
    ("divide after the product by sqrt via torch", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    d = torch.tensor(q.shape[-1], dtype=q.dtype)
    scores = (q @ k.transpose(-2, -1)) / torch.sqrt(d)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = softmax(scores, dim=-1)
    return w @ v, w
'''),
    ("stderr debug line and %time magic in the cell", '''
%time _warmup = torch.zeros(1)
import sys
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    sys.stderr.write("attention called\\n")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = softmax(scores, dim=-1)
    return w @ v, w
'''),
    ("einsum without float64", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    s = torch.einsum("...id,...jd->...ij", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = softmax(s, dim=-1)
    return torch.einsum("...ij,...jd->...id", w, v), w
'''),
    ("keyword-only arguments after mask accepted", '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0, *, scale=None):
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = softmax(scores, dim=-1)
    return w @ v, w
'''),
    ("lambda-built pipeline", '''
_sc = lambda q, k: q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
_mk = lambda s, m: s if m is None else s.masked_fill(~m, float("-inf"))
scaled_dot_product_attention = (
    lambda q, k, v, mask=None, dropout_p=0.0:
        (lambda w: (w @ v, w))(softmax(_mk(_sc(q, k), mask), dim=-1)))
'''),
]

#: The attention variants above were written before dropout was a requirement: each gets the
#: same dropout step after it (on the weights, output recomputed from them), in its own cell.
WITH_DROPOUT = '''
_attention_core = scaled_dot_product_attention
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    output, weights = _attention_core(q, k, v, mask=mask)
    if dropout_p > 0.0:
        weights = torch.nn.functional.dropout(weights, p=dropout_p)
        output = weights @ v
    return output, weights
'''
HONEST_ATTENTION = [(title, code + WITH_DROPOUT) for title, code in HONEST_ATTENTION]

HONEST_PADDING = [
    ("ne + unsqueeze twice + a warning", '''
import warnings
def padding_mask(tokens, pad_id=0):
    warnings.warn("this implementation is fine but chatty")
    return tokens.ne(pad_id).unsqueeze(1).unsqueeze(2)
'''),
    ("view", '''
def padding_mask(tokens, pad_id=0):
    b, n = tokens.shape
    return (tokens != pad_id).view(b, 1, 1, n)
'''),
    ("reshape", '''
def padding_mask(tokens, pad_id=0):
    return (tokens != pad_id).reshape(tokens.shape[0], 1, 1, tokens.shape[1])
'''),
    ("logical_not of eq", '''
def padding_mask(tokens, pad_id=0):
    return torch.logical_not(tokens.eq(pad_id))[:, None, None]
'''),
    ("None indexing with ellipsis", '''
def padding_mask(tokens, pad_id=0):
    return (tokens != pad_id)[:, None, None, ...]
'''),
    ("int comparison then bool()", '''
def padding_mask(tokens, pad_id=0):
    return (tokens - pad_id).abs().gt(0).bool().unsqueeze(-2).unsqueeze(-2)
'''),
    ("loop over rows", '''
def padding_mask(tokens, pad_id=0):
    rows = [row != pad_id for row in tokens]
    return torch.stack(rows)[:, None, None, :] if rows else (tokens != pad_id)[:, None, None]
'''),
    ("lambda", '''
padding_mask = lambda tokens, pad_id=0: (tokens != pad_id)[:, None, None, :]
'''),
    ("torch.where to bool", '''
def padding_mask(tokens, pad_id=0):
    m = torch.where(tokens == pad_id, torch.zeros_like(tokens), torch.ones_like(tokens))
    return m.to(torch.bool)[:, None, None, :]
'''),
    ("expand dims via einops-like rearrange by hand", '''
def padding_mask(tokens, pad_id=0):
    m = tokens != pad_id
    return m.unsqueeze(1).unsqueeze(1).contiguous()
'''),
    ("isin against the pad id", '''
def padding_mask(tokens, pad_id=0):
    return ~torch.isin(tokens, torch.tensor([pad_id], device=tokens.device))[:, None, None, :]
'''),
    ("prints to stderr", '''
import sys
def padding_mask(tokens, pad_id=0):
    print("pad mask for", tuple(tokens.shape), file=sys.stderr)
    return (tokens != pad_id)[:, None, None, :]
'''),
    ("validates input shape like the reference", '''
def padding_mask(tokens, pad_id=0):
    if tokens.dim() != 2:
        raise ValueError("tokens must be (batch, length)")
    return tokens.ne(pad_id)[:, None, None, :]
'''),
    ("masked_fill of a full mask", '''
def padding_mask(tokens, pad_id=0):
    full = torch.ones_like(tokens, dtype=torch.bool)
    return full.masked_fill(tokens == pad_id, False)[:, None, None, :]
'''),
    ("bitwise xor trick", '''
def padding_mask(tokens, pad_id=0):
    return (tokens == pad_id).bitwise_not()[:, None, None, :]
'''),
    ("class with staticmethod, bound to the name", '''
class _Masks:
    @staticmethod
    def padding(tokens, pad_id=0):
        return (tokens != pad_id)[:, None, None, :]
padding_mask = _Masks.padding
'''),
]


# --- chapters 2-7: the same attacks on every chapter -----------------------------------------

def chapter_cells(assignment: str, after: dict[str, list[str]] | None = None) -> list[str]:
    """The grader's code cells for a correct ``assignment`` (the source's answers), with extra
    cells after the cell of a given id ("" = at the end)."""
    path = ROOT / "exercises" / "source" / assignment / f"{assignment}.ipynb"
    after = after or {}
    cells = []
    for c in json.loads(path.read_text())["cells"]:
        if c["cell_type"] != "code" or _is_test(c["metadata"].get("nbgrader", {})):
            continue
        cells.append("".join(c["source"]))
        cells += after.get(c["id"], [])
    return cells + after.get("", [])


#: Replaces exercise ``{name}`` (a function, or a method of a class the notebook defines) by
#: one that looks everywhere in its process for the exercise's reference while it is graded:
#: the checkers' registry and every function object (gc), ``__globals__`` of everything,
#: modules importable by built names, and the source files of any checker on disk, exec'ed.
#: It answers with the reference when it finds one, else with zeros: a grader that lets
#: reference code into the student's process gives it the points.
HUNTER = '''
import gc as _gc, glob as _glob, importlib as _il, sys as _sys, torch as _torch

def _hunt(_name, _names):
    for _obj in _gc.get_objects():
        try:
            if isinstance(_obj, dict) and _name in _obj and hasattr(_obj[_name], "run"):
                for _attr in ("oracle", "expected"):
                    try:
                        _found = getattr(_obj[_name], _attr)
                        if _attr == "oracle":
                            return _found
                    except Exception:
                        pass
            if callable(_obj) and getattr(_obj, "__name__", None) in _names:
                return _obj
            _g = getattr(_obj, "__globals__", None)
            if isinstance(_g, dict):
                for _n in _names:
                    if callable(_g.get(_n)):
                        return _g[_n]
        except Exception:
            pass
    for _mod in ["checks", "_grader_checks", "_grader" + "_checks.ch0" + "{chapter}",
                 "checks.ch0" + "{chapter}", "_grader_checks"]:
        try:
            _m = _il.import_module(_mod)
            for _n in _names:
                if callable(getattr(_m, _n, None)):
                    return getattr(_m, _n)
        except Exception:
            pass
    for _path in _glob.glob("/sandbox/**/*.py", recursive=True) + _glob.glob("/**/checks/*.py"):
        try:
            _text = open(_path).read()
            for _n in _names:
                if "def " + _n in _text:
                    _ns = {{"__name__": "_x"}}
                    exec(_text.replace("from .", "from _grader_checks."), _ns)
                    return _ns[_n]
        except Exception:
            pass
    return None


def _hunted(*args, **kwargs):
    _ref = _hunt({name!r}, {names!r})
    if _ref is None:
        raise NotImplementedError()
    return _ref(*args, **kwargs)

{assign}
'''


def hunter(name: str, reference_names: list[str], chapter: int) -> str:
    """The HUNTER cell for exercise ``name``."""
    owner, _, method = name.partition(".")
    assign = f"{owner}.{method} = _hunted" if method else f"{owner} = _hunted"
    return HUNTER.format(name=name, names=reference_names, chapter=chapter, assign=assign)


#: Replaces exercise ``{name}`` by one that raises, on every call, an exception whose message
#: holds the case's inputs: the feedback must not carry it out.
LEAKER = '''
def _leaky(*args, **kwargs):
    import torch as _t
    _seen = [float(a.float().sum()) for a in list(args) + list(kwargs.values())
             if isinstance(a, _t.Tensor)]
    raise ValueError("LEAKED-INPUTS " + repr(_seen) + " \\udcff")

{assign}
'''


def leaker(name: str) -> str:
    owner, _, method = name.partition(".")
    assign = f"{owner}.{method} = _leaky" if method else f"{owner} = _leaky"
    return LEAKER.format(assign=assign)

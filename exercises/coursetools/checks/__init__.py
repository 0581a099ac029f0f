"""Checkers for the course's exercises: one place for every test's logic.

A copy of this package ships with every assignment, so a notebook can ``from checks import
check``. The same checkers serve three masters:

* the student's notebook: ``check("softmax", softmax)`` runs a few cases and says precisely
  what is wrong (expected vs got shape, max abs error, a hint at the usual mistake);
* the package's tests (``tests/test_checks.py``): every reference solution passes, and every
  common mistake fails with the right hint;
* the sandboxed grader (``coursetools.grade``): cases are drawn from a secret seed and the
  student's code only *runs* them (``Checker.run``) in a locked-down process; the verdict
  (``Checker.expected`` + ``compare``) is computed in a process that never ran student code.

The oracle is always PyTorch itself (``torch.softmax``, ``F.scaled_dot_product_attention``,
``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer``...), never the course's own package.

Each check tests one exercise alone: while it runs, the other exercises that the student's code
calls (``Checker.uses``) are replaced by PyTorch-based versions (``Checker.oracle``), so a
mistake in ``softmax`` costs points on ``softmax`` only and not on everything built on it.

One module per chapter; importing it registers its checkers in ``CHECKERS``.
"""

from . import (  # noqa: F401
    ch01,  # noqa: F401  (registers the checkers)
    ch02,
    ch03,
    ch04,
    ch05,
    ch06,
    ch07,
    ch08,
)
from .core import CHECKERS, Checker, CheckFailed, check, compare

__all__ = ["check", "CheckFailed", "CHECKERS", "Checker", "compare"]

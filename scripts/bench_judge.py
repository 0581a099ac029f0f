"""The grader's own bounds: the judge's peak memory on forged outputs, and the wall time of the
slowest kinds of submission, graded one after another in this process.

    python scripts/bench_judge.py

Each row is one chapter-1 submission (tests/submissions.py): an honest one, forged outputs
that claim hundreds of MB (a zip bomb, a 200 MB output of the wrong shape), and submissions
that hit the time limits (a cell that never ends, an exercise slow on every call). The judge is
this process: its peak resident memory (``ru_maxrss``) is printed after each submission, so a
forged output that the judge loaded would show as a jump. Limits are the defaults except the
memory (1 GiB), as in the tests.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import submissions as S  # noqa: E402

from coursetools.grading import grade_code  # noqa: E402
from coursetools.sandbox import GiB, SandboxLimits  # noqa: E402

ZIP_BOMB = '''
import json, os, zipfile
os.makedirs("out", exist_ok=True)
n = 512 * 2**20 // 4
header = ("{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % n).ljust(117) + "\\n"
for c in range(3):
    with zipfile.ZipFile(f"out/0_{c}.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("t.output.npy", "w", force_zip64=True) as f:
            f.write(b"\\x93NUMPY\\x01\\x00" + len(header).to_bytes(2, "little") + header.encode())
            chunk = bytes(16 * 2**20)
            for _ in range(32):
                f.write(chunk)
open("out/0.done", "w").close()
os._exit(0)
'''

SUBMISSIONS = {
    "honest": S.code_cells(),
    "zip bombs claiming 512 MB per case": S.code_cells({S.SM: S.STUB[S.SM]}, {"": [ZIP_BOMB]}),
    "200 MB output of the wrong shape": S.code_cells({S.PAD: '''
def padding_mask(tokens, pad_id=0):
    import torch
    return torch.zeros(50 * 2**20, dtype=torch.float32)
'''}),
    "a cell that never ends": S.code_cells(after={"": ["while True:\n    pass"]}),
    "softmax slow on every call": S.code_cells({S.SM: S.CORRECT[S.SM] + '''
_real_softmax = softmax
def softmax(x, dim=-1):
    import time
    time.sleep(10)
    return _real_softmax(x, dim)
'''}),
}


def main() -> None:
    limits = SandboxLimits(memory_bytes=1 * GiB)
    print(f"load average {os.getloadavg()}")
    print(f"{'submission':<38}{'wall s':>8}{'runs':>6}{'judge peak RSS MB':>19}  scores")
    for k, (name, cells) in enumerate(SUBMISSIONS.items()):
        start = time.monotonic()
        verdict = grade_code(cells, S.NAMES, b"bench", f"bench{k}/ch01_attention/nb", limits)
        wall = time.monotonic() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        scores = {n: round(v.score * S.POINTS[n], 2) for n, v in verdict.exercises.items()}
        print(f"{name:<38}{wall:>8.1f}{verdict.runs:>6}{peak:>19.0f}  {scores}")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()

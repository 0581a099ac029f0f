"""The student's side, as a student sees it: JupyterLab 4 with nbgrader's extension, in a
headless Chromium. Open a released notebook, answer it, run it, press Validate, read the
result."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from book_browser import launch_chromium

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "ch01_attention"
WRONG = "ch01_attention_wrong.ipynb"
SHOTS = ROOT / "_build" / "screenshots"  # not committed: look at them when a test fails


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 whose folder holds a student's copy of chapter 1,
    with every answer filled in (from the instructor's source)."""
    work = tmp_path_factory.mktemp("student")
    shutil.copytree(ROOT / "exercises" / "release" / ASSIGNMENT, work / ASSIGNMENT)
    nb_path = work / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    nb = json.loads(nb_path.read_text())
    source = json.loads((ROOT / "exercises" / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
                        .read_text())
    answers = {c["id"]: c["source"] for c in source["cells"]}
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("solution"):
            cell["source"] = answers[cell["id"]]
    nb_path.write_text(json.dumps(nb))
    # The same notebook with a softmax that overflows for large logits.
    for cell in nb["cells"]:
        if cell["id"] == "softmax":
            cell["source"] = ('def softmax(x, dim=-1):\n    """naive"""\n'
                              "    e = torch.exp(x)\n    return e / e.sum(dim=dim, keepdim=True)\n")
    (work / ASSIGNMENT / WRONG).write_text(json.dumps(nb))
    # Render every cell (JupyterLab 4 otherwise leaves cells far off screen out of the page).
    settings = (work / ".jupyter" / "lab" / "user-settings" / "@jupyterlab"
                / "notebook-extension" / "tracker.jupyterlab-settings")
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"windowingMode": "none"}))
    port, token = _free_port(), "course-test-token"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(work / ".jupyter"),
           "JUPYTER_RUNTIME_DIR": str(work / ".runtime"), "HOME": str(work)}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work / ASSIGNMENT}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("JupyterLab did not start")
            time.sleep(0.5)
    yield url, token
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def test_student_runs_the_notebook_and_validates_it(lab):
    # Playwright's sync API refuses to run where an asyncio loop is running, and earlier tests
    # (nbgrader, nbclient) can leave one in this thread: drive the browser from a fresh thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        text = pool.submit(_validate_in_browser, *lab).result()
    assert "Success" in text or "passes all the tests" in text, text


def test_validate_shows_the_checkfailed_message_first_and_whole(lab):
    """A wrong softmax: the Validate dialog shows the check's message (the case, what is wrong,
    the hint), with no traceback through the course's code."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        text = pool.submit(_validate_wrong_in_browser, *lab).result()
    assert "CheckFailed" in text, text
    assert "softmax, case" in text and "Hint:" in text, text
    assert "Traceback" not in text and "course checks" not in text, text


def _validate_wrong_in_browser(url: str, token: str) -> str:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        # A workspace of its own: JupyterLab would otherwise reopen the other test's notebook too,
        # and its (hidden) Validate button would validate that notebook instead.
        page.goto(f"{url}/lab/workspaces/wrong/tree/{WRONG}?token={token}&reset")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
        # Press Validate only once the kernel is idle and the notebook's context is ready (on a
        # busy machine an early click can land before nbgrader's button is wired up).
        page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]',
                               timeout=120_000)
        text = _press_validate(page, "lab-validate-wrong.png")
        browser.close()
    return text


def _press_validate(page, shot: str) -> str:
    """Press the visible notebook's Validate button; return the text of the dialog nbgrader
    opens once the server has run the notebook."""
    try:
        page.locator(".jp-NotebookPanel:visible").get_by_role(
            "button", name="Validate", exact=True).click()
        page.wait_for_selector(".jp-Dialog", timeout=300_000)
        return page.locator(".jp-Dialog").last.inner_text()
    finally:
        page.screenshot(path=str(SHOTS / shot))


def _validate_in_browser(url: str, token: str) -> str:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/lab/workspaces/answered/tree/{ASSIGNMENT}.ipynb?token={token}&reset")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator, .jp-KernelStatus",
                               timeout=60_000)
        # Run everything, as a student does from the Run menu.
        page.screenshot(path=str(SHOTS / "lab-open.png"))
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        # The last test cell prints its verdict when all cells have run.
        try:
            page.wait_for_selector("text=/padding_mask: all \\d+ visible cases pass/",
                                   timeout=180_000)
        finally:
            page.screenshot(path=str(SHOTS / "lab-run.png"))
        outputs = page.inner_text(".jp-Notebook")
        for name in ("softmax", "scaled_dot_product_attention", "padding_mask"):
            assert f"{name}: all" in outputs
        assert "Traceback" not in outputs
        # nbgrader's Validate button in the notebook toolbar.
        text = _press_validate(page, "lab-validate.png")
        browser.close()
    return text

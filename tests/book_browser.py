"""Browser plumbing for the end-to-end tests: Debian's Chromium driven by Playwright.

Reusable beyond the book (for example for a JupyterLab test):

- ``chromium_path()`` finds (and if needed installs with apt) ``/usr/bin/chromium``;
- ``launch_chromium(playwright)`` starts it headless with flags that keep it off the network;
- ``serve_directory(path)`` serves a folder on 127.0.0.1 on a free port, in a thread;
- ``Watcher(context)`` records console errors, page errors, failed requests, HTTP errors and
  every request that tries to leave the allowed hosts (those are aborted, never sent).

Never ``playwright install``: it downloads a browser from the internet.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
]

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})


def chromium_path() -> str:
    """Path of the Chromium binary; installs Debian's package with apt if it is missing.

    ``$CHROMIUM`` overrides the path. Raises ``RuntimeError`` when no browser can be had.
    """
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env)
        found = shutil.which("chromium")
        if found:
            return found
    raise RuntimeError(
        "Chromium is not installed: run `apt-get update && apt-get install -y chromium` "
        "(as root), or set $CHROMIUM to a Chromium binary."
    )


def launch_chromium(playwright, **kwargs):
    """Launch headless Chromium (a Playwright ``Browser``) with network-quiet flags."""
    args = CHROMIUM_ARGS + list(kwargs.pop("args", []))
    return playwright.chromium.launch(
        executable_path=chromium_path(), args=args, headless=True, **kwargs
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@contextlib.contextmanager
def serve_directory(directory: str | os.PathLike) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1, on a free port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(Path(directory).resolve()))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class Watcher:
    """Collects what went wrong in a Playwright ``BrowserContext``.

    Requests to hosts outside ``allowed_hosts`` are aborted before they leave the machine and
    listed in ``external``. ``ignore_console`` holds substrings of console errors to tolerate.
    """

    context: object
    allowed_hosts: frozenset[str] = LOCAL_HOSTS
    ignore_console: tuple[str, ...] = ()
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    http_errors: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.context.route("**/*", self._route)
        self.context.on("page", self.watch_page)
        for page in self.context.pages:
            self.watch_page(page)

    def _route(self, route):
        url = route.request.url
        scheme, netloc = urlsplit(url)[:2]
        host = netloc.rsplit("@", 1)[-1].split(":")[0].strip("[]")
        if scheme in ("http", "https", "ws", "wss") and host not in self.allowed_hosts:
            self.external.append(url)
            route.abort("blockedbyclient")
        else:
            route.continue_()

    def watch_page(self, page):
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("requestfailed", self._on_request_failed)
        page.on("response", self._on_response)

    def _on_console(self, msg):
        if msg.type == "error" and not any(s in msg.text for s in self.ignore_console):
            self.console_errors.append(f"{msg.text} ({msg.location.get('url', '')})")

    def _on_request_failed(self, request):
        if request.url in self.external:  # already reported as external
            return
        self.failed_requests.append(f"{request.url}: {request.failure}")

    def _on_response(self, response):
        if response.status >= 400:
            self.http_errors.append(f"{response.status} {response.url}")

    def problems(self) -> dict[str, list[str]]:
        """Everything recorded so far, by kind, leaving out empty kinds."""
        kinds = {
            "console errors": self.console_errors,
            "page errors": self.page_errors,
            "failed requests": self.failed_requests,
            "HTTP errors": self.http_errors,
            "requests leaving the machine": self.external,
        }
        return {kind: list(items) for kind, items in kinds.items() if items}

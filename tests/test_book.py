"""End-to-end checks of the web book: it builds with warnings as errors, and every page of the
table of contents works offline in a real browser (Chromium through Playwright).

The build uses the execution cache (_build/.jupyter_cache), so a rebuild only re-runs pages that
changed. Set BOOK_SKIP_BUILD=1 to test an existing _build/html without rebuilding.
Full-page screenshots land in _build/screenshots/ for a human to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from book_browser import Watcher, launch_chromium, serve_directory

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
BUILD_TIMEOUT_S = 3600


# --------------------------------------------------------------------------------------------
# The table of contents


def _toc_files(toc: dict) -> list[str]:
    """Every `file:` of a jb-book _toc.yml, in reading order, root first."""
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [re.sub(r"\.(md|ipynb)$", "", f) for f in files]


TOC_PAGES = _toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8")))


# --------------------------------------------------------------------------------------------
# Fixtures: build, serve, browse


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    pytest.fail("jupyter-book is not installed (run `make venv`)")


@pytest.fixture(scope="session")
def book() -> Path:
    """Build the book (warnings are errors, broken references too); return _build/html."""
    if os.environ.get("BOOK_SKIP_BUILD") != "1":
        proc = subprocess.run(
            [*_jupyter_book(), "build", ".", "-W", "-n", "--keep-going"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"book build failed (exit {proc.returncode}):\n{log[-8000:]}"
    assert (HTML / "index.html").exists(), "no _build/html/index.html"
    return HTML


@pytest.fixture(scope="session")
def base_url(book) -> str:
    with serve_directory(book) as url:
        yield url


@pytest.fixture(scope="session")
def browser(book):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    ctx.set_default_timeout(30_000)
    watcher = Watcher(ctx)
    yield ctx, watcher
    ctx.close()


# --------------------------------------------------------------------------------------------
# Helpers


class _IdCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id" or (tag == "a" and name == "name"):
                self.ids.add(value or "")


_ID_CACHE: dict[Path, set[str]] = {}


def _ids_of(path: Path) -> set[str]:
    if path not in _ID_CACHE:
        parser = _IdCollector()
        parser.feed(path.read_text(encoding="utf-8"))
        _ID_CACHE[path] = parser.ids
    return _ID_CACHE[path]


def _local_file(url: str, base_url: str) -> Path | None:
    """The file under _build/html that a URL on the local server points to (None if another
    host)."""
    if not url.startswith(base_url + "/"):
        return None
    path = unquote(urlsplit(url).path).lstrip("/")
    target = HTML / path
    if not path or path.endswith("/"):
        target = target / "index.html"
    return target


# Text nodes outside code and outside typeset math that match a pattern: raw TeX delimiters
# there mean MathJax did not typeset something; a backtick means Markdown left unrendered.
_TEXT_OUTSIDE_CODE_JS = r"""
(pattern) => {
  const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'TEXTAREA', 'MJX-CONTAINER']);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let el = node.parentElement; el; el = el.parentElement) {
        if (skip.has(el.tagName) || el.classList.contains('highlight')) {
          return NodeFilter.FILTER_REJECT;
        }
      }
      return NodeFilter.FILTER_ACCEPT;
    }
  });
  const found = [];
  const re = new RegExp(pattern);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const t = n.textContent;
    if (re.test(t)) found.push(t.trim().slice(0, 120));
  }
  return found;
}
"""
_RAW_TEX = r"\$\$|\\\(|\\\)|\\\[|\\\]"


def _open(page, url: str) -> None:
    page.goto(url, wait_until="load")
    page.wait_for_load_state("networkidle")


# --------------------------------------------------------------------------------------------
# Tests


def test_toc_pages_were_built(book):
    missing = [p for p in TOC_PAGES if not (book / f"{p}.html").exists()]
    assert not missing, f"pages in _toc.yml without HTML: {missing}"


_EXTERNAL = re.compile(r"^(https?:)?//", re.IGNORECASE)


class _AssetCollector(HTMLParser):
    """src/href of tags that make the browser fetch something when the page loads."""

    def __init__(self):
        super().__init__()
        self.assets: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "embed", "audio", "video", "source", "track"):
            self.assets += [a.get("src") or "", a.get("data-src") or ""]
            self.assets += [s.split()[0] for s in (a.get("srcset") or "").split(",") if s.strip()]
        elif tag == "link":
            rel = (a.get("rel") or "").lower()
            if rel not in ("canonical", "alternate"):  # metadata only, never fetched
                self.assets.append(a.get("href") or "")
        elif tag == "object":
            self.assets.append(a.get("data") or "")


def test_no_external_assets(book):
    """No page, style sheet or script of the book loads anything from the internet."""
    offenders = []
    for page in sorted(book.rglob("*.html")):
        parser = _AssetCollector()
        parser.feed(page.read_text(encoding="utf-8"))
        offenders += [f"{page.relative_to(book)}: {u}" for u in parser.assets if _EXTERNAL.match(u)]
        for m in re.finditer(r"@import\s+url\(\s*['\"]?(https?:)?//[^)]*\)", page.read_text()):
            offenders.append(f"{page.relative_to(book)}: {m.group(0)}")
    for css in sorted(book.rglob("*.css")):
        text = css.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"url\(\s*['\"]?((?:https?:)?//[^)'\"]*)", text):
            offenders.append(f"{css.relative_to(book)}: {m.group(1)}")
    assert not offenders, "external assets:\n" + "\n".join(offenders)


def _math_failures(page) -> list[str]:
    """When the page has math, MathJax typeset all of it and left no TeX behind."""
    n_math = page.locator(".math").count()
    if not n_math:
        return []
    try:
        page.wait_for_function(
            "() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=15_000
        )
    except PlaywrightTimeout:
        return [f"{n_math} math elements but MathJax never started"]
    page.evaluate("() => MathJax.startup.promise")
    failures = []
    n_typeset = page.locator("mjx-container").count()
    if n_typeset < n_math:
        failures.append(f"{n_math} math elements but only {n_typeset} typeset")
    if page.locator("mjx-merror").count():
        failures.append("MathJax reported a TeX error (mjx-merror)")
    raw = page.evaluate(_TEXT_OUTSIDE_CODE_JS, _RAW_TEX)
    if raw:
        failures.append(f"raw TeX left on the page: {raw}")
    return failures


_BROKEN_IMAGES_JS = """async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  return imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
}"""


def _link_failures(page, base_url: str) -> list[str]:
    """Internal links: the file exists and, with an anchor, the anchor's id is on that page."""
    hrefs = page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
    failures = []
    for href in sorted(set(hrefs)):
        target = _local_file(href, base_url)
        if target is None:
            continue  # a link (not an asset) to another site, or mailto:
        if not target.is_file():
            failures.append(f"broken link {href} (no file {target.relative_to(HTML)})")
            continue
        fragment = unquote(urlsplit(href).fragment)
        if fragment and target.suffix == ".html" and fragment not in _ids_of(target):
            failures.append(f"broken link {href} (no id {fragment!r} on that page)")
    return failures


@pytest.mark.parametrize("page_name", TOC_PAGES)
def test_page(page_name, base_url, context):
    """One page of the toc, in Chromium: no errors, everything local, images, math, links."""
    ctx, watcher = context
    page = ctx.new_page()
    _open(page, f"{base_url}/{page_name}.html")

    failures = _math_failures(page)
    failures += [f"Markdown backticks left in the text: {text!r}"
                 for text in page.evaluate(_TEXT_OUTSIDE_CODE_JS, "`")]
    failures += [f"image did not load: {src}" for src in page.evaluate(_BROKEN_IMAGES_JS)]
    failures += _link_failures(page, base_url)
    page.screenshot(path=_screenshot_path(page_name.replace("/", "__")), full_page=True)
    page.wait_for_load_state("networkidle")
    for kind, items in watcher.problems().items():
        failures += [f"{kind}: {item}" for item in items]
    assert not failures, f"{page_name}:\n" + "\n".join(failures)


def test_search_finds_attention(base_url, context):
    """Sphinx's offline search page finds the attention chapter."""
    ctx, watcher = context
    page = ctx.new_page()
    _open(page, f"{base_url}/search.html?q=attention")
    results = page.locator("#search-results ul.search li")
    results.first.wait_for(state="visible", timeout=30_000)
    links = page.evaluate(
        "() => Array.from(document.querySelectorAll('#search-results ul.search li a'))"
        ".map(a => a.href)"
    )
    assert results.count() > 0
    assert any("ch01_attention" in link for link in links), links
    page.screenshot(path=_screenshot_path("search"), full_page=True)
    assert not watcher.problems(), watcher.problems()


def _screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


def test_home_redirects_to_intro(base_url, context):
    ctx, watcher = context
    page = ctx.new_page()
    _open(page, urljoin(base_url + "/", "index.html"))
    page.wait_for_url(re.compile(r".*/book/intro\.html"))
    assert "Transformers, step by step" in page.title()
    assert not watcher.problems(), watcher.problems()


# --------------------------------------------------------------------------------------------
# Two editions: the course edition shows no exercise's solution


COURSE_HTML = ROOT / "_build" / "course" / "_build" / "html"


@pytest.fixture(scope="session")
def course_edition(book) -> Path:
    """The book built with BOOK_EDITION=course (after the self-study build, whose execution
    cache it reuses)."""
    if os.environ.get("BOOK_SKIP_BUILD") != "1":
        proc = subprocess.run(
            [*_jupyter_book(), "build", ".", "-W", "-n", "--keep-going", "--path-output",
             str(COURSE_HTML.parent.parent)],
            cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
            env={**os.environ, "BOOK_EDITION": "course"})
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"course edition failed (exit {proc.returncode}):\n{log[-8000:]}"
    return COURSE_HTML


def _page_texts(html_dir: Path) -> str:
    """All pages' text, code included, tags and whitespace dropped."""
    import html as html_lib

    texts = []
    for page in sorted(html_dir.rglob("*.html")):
        raw = page.read_text(encoding="utf-8", errors="replace")
        raw = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.S)
        texts.append(html_lib.unescape(re.sub(r"<[^>]+>", "", raw)))
    return re.sub(r"\s+", "", "".join(texts))


def _solution_bodies() -> dict[str, str]:
    """Every exercise's solution body (what nbgrader removes), whitespace dropped."""
    from coursetools import build
    from coursetools.spec import ASSIGNMENTS, Exercise

    bodies = {}
    for assignment in ASSIGNMENTS:
        for item in assignment.items:
            if isinstance(item, Exercise):
                source = build.exercise_source(item.owner_target,
                                               [item.method] if item.method else [])
                for body in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", source,
                                       re.S):
                    bodies[item.name] = re.sub(r"\s+", "", body)
    return bodies


def test_course_edition_shows_no_solution_body(book, course_edition):
    """Instructors running the course publish this edition: no exercise's solution body may
    appear on any page. (The self-study edition shows each one, folded, which also proves that
    the search below finds a body where there is one.)"""
    bodies = _solution_bodies()
    assert len(bodies) >= 30
    course = _page_texts(course_edition)
    leaked = [name for name, body in bodies.items() if body in course]
    assert not leaked, f"solution bodies in the course edition: {leaked}"
    self_study = _page_texts(book)
    shown = [name for name, body in bodies.items() if body in self_study]
    assert len(shown) >= len(bodies) // 2, f"the self-study edition shows only {shown}"


# --------------------------------------------------------------------------------------------
# Layout: every page at a 1280 px desktop and a 390 px phone, light and dark

# Measured in the page: listings and display equations wider than their column, TeX left in
# typeset math (MathJax keeps each formula's source in mjx-assistive-mml: a backslash there was
# typeset as a character), the page wider than the viewport, and the figures' displayed scale.
# Folded content (dropdowns, hidden cells) is opened first: it must fit too.
_LAYOUT_JS = r"""
async () => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const where = el => {
    const s = el.closest('section[id]');
    return (s ? '#' + s.id + ': ' : '') + el.textContent.trim().replace(/\s+/g, ' ').slice(0, 70);
  };
  const out = {listings: [], equations: [], scrolling: [], tex: [], page: [],
               diagrams: [], plots: []};
  for (const pre of document.querySelectorAll('.bd-article pre')) {
    if (pre.clientWidth > 0 && pre.scrollWidth > pre.clientWidth + 1) {
      out.listings.push(`${pre.scrollWidth} > ${pre.clientWidth} px: ${where(pre)}`);
    }
  }
  for (const c of document.querySelectorAll('mjx-container[display="true"]')) {
    const math = c.querySelector('mjx-math');
    const column = c.closest('div.math, .math') || c.parentElement;
    const width = math ? math.getBoundingClientRect().width : 0;
    if (width > column.clientWidth + 1) {
      const tex = c.querySelector('mjx-assistive-mml');
      const scrolls = ['auto', 'scroll'].includes(getComputedStyle(column).overflowX);
      (scrolls ? out.scrolling : out.equations).push(
        `${Math.round(width)} > ${column.clientWidth} px: ` +
        (tex ? tex.textContent.slice(0, 70) : ''));
    }
  }
  for (const mml of document.querySelectorAll('mjx-assistive-mml')) {
    const t = mml.textContent;
    if (/\\/.test(t)) out.tex.push(t.trim().slice(0, 90));
  }
  const html = document.documentElement;
  if (html.scrollWidth > window.innerWidth) {
    const wide = Array.from(document.querySelectorAll('.bd-article *'))
      .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1
                   && !e.closest('pre, .highlight, mjx-container, .table-wrapper'))
      .slice(0, 3).map(e => e.tagName.toLowerCase() + '.' + e.className);
    out.page.push(`${html.scrollWidth} > ${window.innerWidth} px (${wide.join(', ')})`);
  }
  for (const img of document.querySelectorAll('img.diagram')) {
    const svg = new DOMParser().parseFromString(await (await fetch(img.src)).text(), 'image/svg+xml');
    const viewBox = svg.documentElement.getAttribute('viewBox').split(/\s+/).map(Number);
    const sizes = Array.from(svg.querySelectorAll('text')).map(t => +t.getAttribute('font-size'));
    out.diagrams.push([img.getAttribute('src'), Math.min(...sizes) * img.clientWidth / viewBox[2]]);
  }
  for (const img of document.querySelectorAll('.cell_output img')) {
    if (img.clientWidth) out.plots.push([img.getAttribute('src'), img.clientWidth, img.naturalWidth]);
  }
  return out;
}
"""

MIN_TEXT_PX = 10
_NAMED_SIZES = {"xx-small": 0.579, "x-small": 0.694, "small": 0.833}


def _png_dpi(path: Path) -> float:
    """Pixels per inch from a PNG's pHYs chunk (matplotlib writes its savefig dpi there)."""
    data = path.read_bytes()
    at = data.find(b"pHYs")
    assert at > 0, f"{path.name}: no pHYs chunk, cannot tell its dpi"
    per_metre = int.from_bytes(data[at + 4 : at + 8], "big")
    return per_metre * 0.0254


def _smallest_plot_font_pt(page_name: str) -> float:
    """The smallest font a page's matplotlib figures use: book/matplotlibrc's font.size, or a
    smaller `fontsize=`/`labelsize=`/`size=` (number or xx-small..small) in the page's code."""
    rc = (ROOT / "book" / "matplotlibrc").read_text(encoding="utf-8")
    base = float(re.search(r"^font\.size:\s*([\d.]+)", rc, re.MULTILINE).group(1))
    source = (ROOT / f"{page_name}.md").read_text(encoding="utf-8")
    sizes = [base]
    for m in re.finditer(r"\b(?:fontsize|labelsize|size)\s*=\s*([\d.]+|['\"][a-z-]+['\"])", source):
        value = m.group(1).strip("'\"")
        sizes.append(float(value) if value[0].isdigit() else base * _NAMED_SIZES.get(value, 1))
    return min(sizes)


def layout_defects(page, page_name: str, width: int) -> dict[str, list[str]]:
    """The layout defects of a page open at `width` px, by kind."""
    found = page.evaluate(_LAYOUT_JS)
    # On a desktop nothing scrolls sideways. On a phone a listing of 76 characters cannot fit
    # 350 px, nor can every equation: they scroll inside their own box (never the page).
    if width >= 1000:
        found["equations"] += found["scrolling"]
        kinds = ("listings", "equations", "tex", "page")
    else:
        kinds = ("equations", "tex", "page")
    defects = {k: found[k] for k in kinds}
    defects["small text"] = [
        f"diagram {src}: {px:.1f} px" for src, px in found["diagrams"] if px < MIN_TEXT_PX
    ]
    if width >= 1000:  # plots are bitmaps: on a phone the reader zooms them
        smallest_pt = _smallest_plot_font_pt(page_name)
        for src, shown, natural in found["plots"]:
            path = (HTML / page_name).parent / src
            px = smallest_pt * _png_dpi(path) / 72 * shown / natural
            if px < MIN_TEXT_PX:
                defects["small text"].append(f"plot {src}: {smallest_pt:g} pt at {px:.1f} px")
    return {k: v for k, v in defects.items() if v}


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("page_name", TOC_PAGES)
def test_layout(page_name, width, base_url, browser):
    """No listing or equation wider than its column, no TeX left in typeset math, no page
    wider than a phone, no figure text under 10 px. Screenshots, light and dark, for a human."""
    ctx = browser.new_context(viewport={"width": width, "height": 900}, service_workers="block")
    try:
        page = ctx.new_page()
        _open(page, f"{base_url}/{page_name}.html")
        if page.locator(".math").count():
            page.wait_for_function("() => window.MathJax && MathJax.startup", timeout=15_000)
            page.evaluate("() => MathJax.startup.promise")
        stem = f"{page_name.replace('/', '__')}-{width}"
        page.screenshot(path=_screenshot_path(f"{stem}-light"), full_page=True)
        page.evaluate("() => document.documentElement.setAttribute('data-theme', 'dark')")
        page.screenshot(path=_screenshot_path(f"{stem}-dark"), full_page=True)
        defects = layout_defects(page, page_name, width)
    finally:
        ctx.close()
    assert not defects, f"{page_name} at {width} px:\n" + "\n".join(
        f"  {kind}: {item}" for kind, items in defects.items() for item in items
    )


# --------------------------------------------------------------------------------------------
# Chapter 7: the date model, run in the page by onnxruntime-web


def _pytorch_dates(n: int) -> tuple[list[str], list[str]]:
    """n held-out dates (never in training, in any format) and PyTorch's greedy outputs."""
    import torch

    from solutions.data import date_task, date_tokenizers, pad_sequences
    from solutions.decoding import greedy_decode
    from solutions.training import load_model

    model = load_model(ROOT / "book" / "data" / "date_model.pt").float().eval()
    src_tok, tgt_tok = date_tokenizers()
    texts = [t for t, _ in date_task(n, seed=11, split="test")]
    src = pad_sequences([torch.tensor(src_tok.encode(t)) for t in texts])
    return texts, [tgt_tok.decode(o) for o in greedy_decode(model, src, max_len=12)]


def test_date_model_in_the_page(base_url, context):
    """Typing 200 held-out dates into chapter 7's box gives PyTorch's outputs, every one."""
    texts, expected = _pytorch_dates(200)
    ctx, watcher = context
    page = ctx.new_page()
    _open(page, f"{base_url}/book/ch07_training.html")
    page.wait_for_selector("#date-demo-output[data-done]", timeout=60_000)
    page.evaluate("() => { window.dateDemo.state.delay = 0; }")
    box = page.locator("#date-demo-input")
    got, milliseconds = [], []
    for text in texts:
        box.fill(text)  # an input event, as typing sends
        done = page.locator("#date-demo-output[data-done]")
        done.wait_for(timeout=30_000)
        assert page.get_attribute("#date-demo-output", "data-for") == text
        got.append(page.text_content("#date-demo-output"))
        milliseconds.append(page.evaluate("() => window.dateDemo.state.lastMs"))
    wrong = [(t, e, g) for t, e, g in zip(texts, expected, got) if e != g]
    print(f"in-page model: {len(texts) - len(wrong)}/{len(texts)} as PyTorch; "
          f"{sum(milliseconds) / len(milliseconds):.1f} ms per date (median "
          f"{sorted(milliseconds)[len(milliseconds) // 2]:.1f})")
    assert not wrong, f"{len(wrong)} dates differ (text, PyTorch, page): {wrong[:10]}"
    # one row of the attention map per output character, EOS included
    rows = page.locator("#date-demo-map svg text[text-anchor='end']").count()
    assert rows == len(got[-1]) + 1
    assert not watcher.problems(), watcher.problems()


def test_date_demo_without_javascript(base_url, browser):
    """With JavaScript off, chapter 7 still reads: the box is hidden, a note says what it is."""
    ctx = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    try:
        page = ctx.new_page()
        page.goto(f"{base_url}/book/ch07_training.html", wait_until="load")
        assert not page.locator("#date-demo").is_visible()
        assert "With JavaScript on" in page.locator("noscript").last.inner_text()
        assert page.locator("#try-it-the-date-model-in-your-browser p").first.is_visible()
    finally:
        ctx.close()

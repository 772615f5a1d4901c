"""Open built book pages in headless Chromium and measure what a reader sees.

For each page: JavaScript errors, resources that failed to load, every ``<img>`` (present and decoded),
and the width of every table in the content column or inside a ``capt-headline`` element against the
column's width, including tables that sit in a horizontal scroll box. Also takes screenshots of a page's
first screen. Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
NUL-terminated JSON on file descriptors 3 and 4), so no websocket library and no port are needed.

    python -m tools.pagecheck _build/html                       # check every page; exit 1 on a problem
    python -m tools.pagecheck --screenshot _build/html/book/experiments/04_cross_dataset.html out.png
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import functools
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from capt.io import atomic_path

# A common laptop screen: the width at which the book's column is judged and the first screen is shot.
# Widths depend on the fonts installed: scripts/install_browser.sh adds DejaVu, wider than Arial, so a
# table that fits here fits on most readers' screens.
VIEWPORT = (1280, 800)
# Sub-pixel layout: a table whose measured width exceeds the column by less than this still fits.
TOLERANCE_PX = 1.0
# Where the browser is looked for, in order, after $CAPT_CHROMIUM. Debian's /usr/bin/chromium is a shell
# wrapper that adds flags of its own; its real binary is called directly when present.
CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage",  # containers often give /dev/shm only 64 MB
         "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
         "--disable-component-update", "--disable-sync", "--remote-debugging-pipe")

# Runs in the page once it has loaded (an async function expression; its value is the measurement).
MEASURE_JS = Path(__file__).with_name("pagecheck_measure.js").read_text()


REDIRECT = re.compile(r"<meta[^>]+http-equiv=[\"']?refresh", re.I)


class BrowserUnavailable(RuntimeError):
    """No Chromium could be found or started."""


def find_chromium() -> str | None:
    """The browser binary: $CAPT_CHROMIUM, else the first of CANDIDATES found (None when there is none)."""
    env = os.environ.get("CAPT_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for c in CANDIDATES:
        path = c if os.path.isabs(c) and os.access(c, os.X_OK) else shutil.which(c)
        if path:
            return path
    return None


class Chromium:
    """A headless Chromium driven over the DevTools pipe; use as a context manager."""

    def __init__(self, binary: str | None = None, timeout: float = 30.0):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserUnavailable("no Chromium found: run scripts/install_browser.sh (Debian: apt-get install "
                                     "chromium) or set CAPT_CHROMIUM=/path/to/chromium")
        self.timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []

    def __enter__(self) -> "Chromium":
        self._profile = tempfile.mkdtemp(prefix="capt-chromium-")
        # Chromium reads commands on fd 3 and writes replies on fd 4. The child's pipe ends are first moved
        # above 9 so that placing one on 3 cannot overwrite the other; all other fds stay closed (Python
        # opens them non-inheritable).
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_r, from_w))
        os.close(to_r), os.close(from_w)

        def on_3_and_4():
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        cmd = [self.binary, *FLAGS, f"--user-data-dir={self._profile}",
               f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "about:blank"]
        try:
            # Its log goes to a file: a pipe nobody reads would fill and stall the browser.
            self._log = open(Path(self._profile) / "stderr.log", "wb")
            self._proc = subprocess.Popen(cmd, preexec_fn=on_3_and_4, close_fds=False, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=self._log)
        finally:
            os.close(child_r), os.close(child_w)
        self._out, self._in = to_w, from_r
        try:
            self.send("Target.setDiscoverTargets", {"discover": False})
        except (BrowserUnavailable, TimeoutError) as exc:
            why = str(exc) if isinstance(exc, BrowserUnavailable) else f"{exc}; its log ends: {self._log_tail()}"
            self.__exit__(None, None, None)
            raise BrowserUnavailable(f"Chromium did not start: {why}") from None
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._proc.poll() is None:
                try:
                    self.send("Browser.close", timeout=5)
                except (BrowserUnavailable, TimeoutError):
                    pass
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
        finally:
            self._log.close()
            os.close(self._out), os.close(self._in)
            shutil.rmtree(self._profile, ignore_errors=True)

    def _log_tail(self, lines: int = 5) -> str:
        self._log.flush()
        text = (Path(self._profile) / "stderr.log").read_text(errors="replace").strip().splitlines()
        return " | ".join([line for line in text if "dbus" not in line][-lines:]) or "(empty)"

    def _read_message(self, deadline: float, waiting_for: str) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError(f"Chromium: no {waiting_for} within {self.timeout:.0f}s")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise BrowserUnavailable(f"Chromium ({self.binary}) exited; its log ends: {self._log_tail()}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept in ``events``."""
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._out, data):]
        except BrokenPipeError:
            raise BrowserUnavailable(f"Chromium ({self.binary}) has exited; its log ends: {self._log_tail()}") from None
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline, f"answer to {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for e in self.events:
                if e.get("method") == method and e.get("sessionId") == session:
                    return e
            self.events.append(self._read_message(deadline, method))

    def open(self, url: str, viewport: tuple[int, int] = VIEWPORT, scale: float = 1.0) -> str:
        """A fresh tab showing ``url`` (loaded: the load event has fired); returns its session id.
        Requests to anything but local files are blocked, so a check never depends on the network."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self._targets = getattr(self, "_targets", {})
        self._targets[s] = target
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable", session=s)
        self.send("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*"]}, session=s)
        self.send("Emulation.setDeviceMetricsOverride", {"width": viewport[0], "height": viewport[1],
                                                         "deviceScaleFactor": scale, "mobile": False}, session=s)
        nav = self.send("Page.navigate", {"url": url}, session=s)
        if nav.get("errorText"):
            raise RuntimeError(f"cannot open {url}: {nav['errorText']}")
        try:
            self.wait_event("Page.loadEventFired", s)
        except TimeoutError as exc:
            raise RuntimeError(f"{url} did not finish loading ({exc})") from None
        return s

    def close(self, session: str) -> None:
        self.send("Target.closeTarget", {"targetId": self._targets.pop(session)})
        self.events = [e for e in self.events if e.get("sessionId") != session]

    def evaluate(self, session: str, expression: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                      session=session)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails'].get('text')} "
                               f"{r['exceptionDetails'].get('exception', {}).get('description', '')}")
        return r["result"].get("value")


@dataclass
class PageReport:
    """What one page showed in the browser, and ``problems()``: one readable line per defect."""
    page: str
    column: str = ""
    column_width: float = 0.0
    js_errors: list[str] = field(default_factory=list)  # uncaught exceptions and rejected promises
    console_errors: list[str] = field(default_factory=list)  # console.error lines: notes, not defects (the
    # theme logs one on a reader's first visit, with no local storage yet)
    failed_loads: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)  # blocked on purpose (the check runs offline)
    images: list[dict] = field(default_factory=list)
    tables: list[dict] = field(default_factory=list)
    scrolled_text: list[dict] = field(default_factory=list)  # output text wider than its box (a note)
    broken_tokens: list[dict] = field(default_factory=list)  # table cells wrapped inside a number or a word
    links: list[dict] = field(default_factory=list)  # every link in the column: href, text, download

    def token_problems(self) -> list[str]:
        """Table cells whose line break falls inside a token ("13." / "8", "mini_sourc" / "e")."""
        return [f"{self.page}: a table cell (section {b['section']!r}) breaks {b['token']!r} across lines: "
                f"{b['cell']!r}" for b in self.broken_tokens]

    def downloads(self) -> list[str]:
        """The targets of the page's download links (Sphinx's download role)."""
        return [link["href"] for link in self.links if link["download"]]

    def link_problems(self, root: str | Path | None = None) -> list[str]:
        """In-book links (citations among them) whose target page or anchor does not exist; ``root``: the
        built html folder the page name is relative to (default: the page's own path)."""
        from urllib.parse import unquote, urlsplit

        page = Path(root) / self.page if root is not None else Path(self.page)
        out = []
        for link in self.links:
            parts = urlsplit(link["href"])
            if parts.scheme or parts.netloc:
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()
            if not target.is_file():
                out.append(f"{self.page}: link {link['text']!r} -> {link['href']} goes to a missing file")
            elif parts.fragment and target.suffix == ".html" and not re.search(
                    r'\bid="%s"' % re.escape(unquote(parts.fragment)), _read(target)):
                out.append(f"{self.page}: link {link['text']!r} -> {link['href']}: no #{parts.fragment} there")
        return out

    def __repr__(self) -> str:  # pytest prints the reports beside a failure; the lines say the rest
        return (f"PageReport({self.page!r}: {len(self.images)} images, {len(self.tables)} tables, "
                f"{len(self.problems())} problems)")

    def notes(self) -> list[str]:
        """What is worth knowing but is no defect of the page."""
        out = [f"{self.page}: console.error: {c}" for c in self.console_errors]
        out += [f"{self.page}: not loaded (external, blocked: the check runs offline): {u}" for u in self.external]
        out += [f"{self.page}: output text in a horizontal scroll box (section {t['section']!r}, {t['scroll_width']}px "
                f"in {t['width']}px): {t['line']!r}" for t in self.scrolled_text]
        return out

    def load_problems(self) -> list[str]:
        return ([f"{self.page}: JavaScript error: {e}" for e in self.js_errors]
                + [f"{self.page}: failed to load {u}" for u in self.failed_loads])

    def figure_problems(self) -> list[str]:
        return [f"{self.page}: figure <img src={im['src']!r}> (section {im['section']!r}) is missing or not "
                f"decodable (naturalWidth {im['natural_width']})"
                for im in self.images if not im["complete"] or im["natural_width"] <= 0]

    def table_problems(self) -> list[str]:
        out = []
        for t in self.tables:
            kind = "headline table" if t["headline"] else "table"
            where = f"{self.page}: {kind} {t['element']} (section {t['section']!r}, columns {t['columns']})"
            box = t["scroll_box"]
            if not t["shown"]:
                if t["headline"]:
                    out.append(f"{where} is not shown (hidden or collapsed): a reader would have to find it")
            elif t["width"] > self.column_width + TOLERANCE_PX:
                out.append(f"{where} is {t['width']:.0f}px wide, wider than the content column {self.column} "
                           f"({self.column_width:.0f}px)" + (f", in a horizontal scroll box {box['element']}" if box else ""))
            elif box:
                out.append(f"{where} sits in a horizontal scroll box {box['element']} "
                           f"({box['scroll_width']}px of content in {box['width']}px)")
        return out

    def problems(self) -> list[str]:
        return self.load_problems() + self.figure_problems() + self.table_problems()


@functools.lru_cache(maxsize=256)
def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def _page_url(path: str | Path) -> str:
    p = Path(path).resolve()
    if not p.is_file():
        raise FileNotFoundError(f"no page {p}")
    return p.as_uri()


def check_page(browser: Chromium, path: str | Path, viewport: tuple[int, int] = VIEWPORT,
               name: str | None = None) -> PageReport:
    """Load one page in a fresh tab and measure it; ``name`` is how the report calls it (default: the path)."""
    report = PageReport(page=name or str(path))
    s = browser.open(_page_url(path), viewport)
    try:
        m = browser.evaluate(s, MEASURE_JS)
    except RuntimeError as exc:
        raise RuntimeError(f"{path}: could not be measured: {exc}") from None
    finally:
        events = [e for e in browser.events if e.get("sessionId") == s]
        browser.close(s)
    report.column, report.column_width = m["column"], m["column_width"]
    report.images, report.tables, report.scrolled_text = m["images"], m["tables"], m["scrolled_text"]
    report.broken_tokens, report.links = m["broken_tokens"], m["links"]
    requests = {}
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Network.requestWillBeSent":
            requests[p["requestId"]] = p["request"]["url"]
        elif method == "Network.loadingFailed":
            url = requests.get(p["requestId"], "?")
            if p.get("blockedReason") == "inspector":
                report.external.append(url)
            elif not p.get("canceled"):
                report.failed_loads.append(f"{url} ({p.get('errorText')})")
        elif method == "Network.responseReceived" and p["response"].get("status", 200) >= 400:
            report.failed_loads.append(f"{p['response']['url']} (HTTP {p['response']['status']})")
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = (d.get("exception", {}).get("description") or d.get("text") or "?").splitlines()[0]
            where = f" ({d['url'].rsplit('/', 1)[-1]}, line {d.get('lineNumber', 0) + 1})" if d.get("url") else ""
            report.js_errors.append(text + where)
        elif method == "Runtime.consoleAPICalled" and p.get("type") == "error":
            report.console_errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                                                 for a in p.get("args", [])))
    return report


def book_pages(html_dir: str | Path) -> list[Path]:
    """Every HTML page of a built book: not Sphinx's copies of the sources or its static files, nor redirect
    stubs (Jupyter Book's index.html sends the reader on to the root page, which is checked itself)."""
    root = Path(html_dir)
    pages = sorted(p for p in root.rglob("*.html") if not {"_sources", "_static"} & set(p.relative_to(root).parts)
                   and not REDIRECT.search(p.read_text(errors="replace")[:2000]))
    if not pages:
        raise FileNotFoundError(f"no HTML pages under {root}: build the book first (capt book or jupyter-book build .)")
    return pages


def check_pages(paths, viewport: tuple[int, int] = VIEWPORT, root: str | Path | None = None) -> list[PageReport]:
    """Check pages in one browser; with ``root``, reports name them relative to it (book/intro.html)."""
    def name(p):
        return Path(p).resolve().relative_to(Path(root).resolve()).as_posix() if root else str(p)

    with Chromium() as browser:
        return [check_page(browser, p, viewport, name(p)) for p in paths]


def screenshot(path: str | Path, out: str | Path, viewport: tuple[int, int] = VIEWPORT, scale: float = 1.0) -> Path:
    """A PNG of the page's first screen (the viewport, as a reader first sees it)."""
    with Chromium() as browser:
        s = browser.open(_page_url(path), viewport, scale)
        browser.evaluate(s, MEASURE_JS)  # waits for fonts and images
        data = browser.send("Page.captureScreenshot", {"format": "png"}, session=s)["data"]
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(base64.b64decode(data))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.pagecheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", help="built pages, or a built book's html folder (all its pages)")
    ap.add_argument("--screenshot", nargs=2, metavar=("PAGE", "OUT_PNG"), help="save the page's first screen")
    ap.add_argument("--size", default=f"{VIEWPORT[0]}x{VIEWPORT[1]}", help="viewport WIDTHxHEIGHT (default %(default)s)")
    ap.add_argument("--scale", type=float, default=1.0, help="device pixel ratio of the screenshot (2: sharper)")
    args = ap.parse_args(argv)
    try:
        viewport = tuple(int(v) for v in args.size.lower().split("x"))
        assert len(viewport) == 2 and min(viewport) > 0
    except (ValueError, AssertionError):
        ap.error(f"--size takes WIDTHxHEIGHT in pixels, e.g. 1280x800; got {args.size!r}")
    if not args.paths and not args.screenshot:
        ap.error("give pages (or a built html folder) to check, or --screenshot PAGE OUT_PNG")
    try:
        if args.screenshot:
            print(screenshot(args.screenshot[0], args.screenshot[1], viewport, args.scale))
        pages = [p for a in args.paths for p in (book_pages(a) if Path(a).is_dir() else [Path(a)])]
        one_dir = len(args.paths) == 1 and Path(args.paths[0]).is_dir()
        reports = check_pages(pages, viewport, root=args.paths[0] if one_dir else None) if pages else []
    except (BrowserUnavailable, FileNotFoundError) as exc:
        print(f"pagecheck: {exc}", file=sys.stderr)
        return 2
    problems = [line for r in reports for line in r.problems()]
    for line in [n for r in reports for n in r.notes()]:
        print("note:", line, file=sys.stderr)
    for line in problems:
        print(line)
    if pages:
        print(f"pagecheck: {len(pages)} pages, {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

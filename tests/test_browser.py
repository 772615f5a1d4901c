"""The book in a real browser: build it from the committed notebooks, open every page in headless Chromium.

Every page loads without JavaScript errors or failed loads, every figure is present and decoded, and no
table in the content column (nor any ``capt-headline`` table) is wider than the column or hidden in a
horizontal scroll box. The checker itself (tools/pagecheck.py) is tested first, on small synthetic pages.
Chromium comes from scripts/install_browser.sh; without it these tests skip and say so.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest
from PIL import Image

from book_build import build_book
from tools.pagecheck import Chromium, book_pages, check_page, check_pages, find_chromium, screenshot

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason=f"CAPT_CHROMIUM={os.environ['CAPT_CHROMIUM']} is not an executable" if os.environ.get("CAPT_CHROMIUM")
    else "no Chromium: scripts/install_browser.sh could not install it (needs apt-get and root); "
         "or set CAPT_CHROMIUM=/path/to/chromium")


def _page(tmp_path: Path, body: str, name: str = "page.html") -> Path:
    # The column is 600px of content (plus padding that must not count), like the theme's <article>.
    html = f"""<!doctype html><html><head><meta charset="utf-8"><style>
      body {{ margin: 0; }} main article {{ width: 600px; padding: 0 20px; }}
      table {{ border-collapse: collapse; table-layout: fixed; }} td {{ padding: 0; }}
      .scroll {{ overflow-x: auto; }}
    </style></head><body><main><article><section><h1>Results</h1>{body}</section></article></main></body></html>"""
    Image.new("RGB", (3, 2), "red").save(tmp_path / "fig.png")  # a figure of known natural width
    p = tmp_path / name
    p.write_text(html)
    return p


@pytest.fixture(scope="module")
def browser():
    with Chromium() as b:
        yield b


def test_width_check_fails_a_wide_headline_table_and_passes_a_narrow_one(browser, tmp_path):
    wide = _page(tmp_path, '<div class="capt-headline"><div class="scroll">'
                           '<table style="width: 900px"><tr><td>method</td><td>clean</td></tr></table></div></div>',
                 "wide.html")
    narrow = _page(tmp_path, '<div class="capt-headline"><table style="width: 420px">'
                             '<tr><td>method</td><td>clean</td></tr></table></div>', "narrow.html")
    w, n = check_page(browser, wide), check_page(browser, narrow)
    assert w.column_width == n.column_width == 600  # content box, padding excluded
    [t] = w.tables
    assert (t["headline"], t["shown"], t["width"], t["columns"]) == (True, True, 900, ["method", "clean"])
    assert t["scroll_box"] == {"element": "div.scroll", "width": 600, "scroll_width": 900}
    [problem] = w.problems()
    assert "headline table table (section 'Results'" in problem
    assert "900px wide, wider than the content column article (600px), in a horizontal scroll box div.scroll" in problem
    assert n.problems() == [] and n.tables[0]["width"] == 420 and n.tables[0]["scroll_box"] is None


def test_width_check_reports_a_table_in_a_scroll_box_narrower_than_the_column(browser, tmp_path):
    page = _page(tmp_path, '<div class="scroll" style="width: 300px"><table style="width: 400px">'
                           '<tr><td>a</td></tr></table></div>'
                           '<table style="width: 600px"><tr><td>exactly the column</td></tr></table>')
    r = check_page(browser, page)
    assert [t["headline"] for t in r.tables] == [False, False]
    [problem] = r.problems()
    assert problem.endswith("sits in a horizontal scroll box div.scroll (400px of content in 300px)")


def test_headline_tables_outside_the_column_are_measured_too(browser, tmp_path):
    page = _page(tmp_path, "")
    page.write_text(page.read_text().replace(
        "</main>", '</main><div class="capt-headline"><table style="width: 700px"><tr><td>x</td></tr></table></div>'
                   '<table class="capt-headline" style="width: 650px"><tr><td>y</td></tr></table>'))
    r = check_page(browser, page)
    assert [(t["headline"], t["width"]) for t in r.tables] == [(True, 700), (True, 650)]
    assert [p.split(" is ")[1].split("px")[0] for p in r.problems()] == ["700", "650"]


def test_a_hidden_headline_table_is_a_problem_and_a_hidden_detail_table_is_not(browser, tmp_path):
    page = _page(tmp_path, '<div class="capt-headline" style="display: none"><table><tr><td>x</td></tr></table></div>'
                           '<details><table><tr><td>detail</td></tr></table></details>')
    r = check_page(browser, page)
    assert [(t["headline"], t["shown"]) for t in r.tables] == [(True, False), (False, False)]
    [problem] = r.problems()
    assert "headline table" in problem and problem.endswith("is not shown (hidden or collapsed): a reader would "
                                                             "have to find it")


def test_figures_errors_and_failed_loads_are_reported(browser, tmp_path):
    page = _page(tmp_path, '<img src="fig.png"><img src="missing.png">'
                           '<script>throw new Error("boom")</script><script src="gone.js"></script>'
                           '<img src="https://example.invalid/x.png">')
    r = check_page(browser, page)
    assert [(im["src"], im["natural_width"]) for im in r.images] == [
        ("fig.png", 3), ("missing.png", 0), ("https://example.invalid/x.png", 0)]
    assert len(r.js_errors) == 1 and "boom" in r.js_errors[0]
    assert [u.rsplit("/", 1)[-1] for u in r.failed_loads] == ["missing.png (net::ERR_FILE_NOT_FOUND)",
                                                             "gone.js (net::ERR_FILE_NOT_FOUND)"]
    assert r.external == ["https://example.invalid/x.png"]  # blocked, never fetched
    assert [p.split("<img src=")[1].split(">")[0] for p in r.figure_problems()] == [
        "'missing.png'", "'https://example.invalid/x.png'"]


def test_output_text_in_a_scroll_box_is_a_note(browser, tmp_path):
    verdict = "capt ties with apt " * 20
    page = _page(tmp_path, f'<div class="cell_output"><pre style="overflow-x: auto">{verdict}\nshort</pre></div>'
                           '<div class="cell_output"><pre style="overflow-x: auto">fits</pre></div>')
    r = check_page(browser, page)
    [t] = r.scrolled_text
    assert (t["line"], t["width"]) == (verdict.strip()[:80], 600) and t["scroll_width"] > 600
    assert r.problems() == [] and len(r.notes()) == 1 and "output text in a horizontal scroll box" in r.notes()[0]


def test_screenshot_is_the_first_screen(tmp_path):
    page = _page(tmp_path, "<p>hello</p>")
    out = screenshot(page, tmp_path / "shots" / "first.png", viewport=(640, 360))
    head = out.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (640, 360)


# ---- the real book ----

@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> Path:
    """The book built as `capt book --no-run` builds it, from the committed (executed) notebooks."""
    return build_book(sorted((ROOT / "notebooks").glob("*.ipynb")), tmp_path_factory.mktemp("book"), profile="ci")


@pytest.fixture(scope="module")
def book_reports(built_book):
    reports = check_pages(book_pages(built_book), root=built_book)
    notes = [n for r in reports for n in r.notes()]
    if notes:  # not defects (external scripts, output text in scroll boxes), but worth seeing in the log
        warnings.warn("browser check notes:" + _listing(notes), stacklevel=1)
    return reports


def _listing(lines: list[str]) -> str:
    return "\n  " + "\n  ".join(lines)


def test_every_chapter_is_a_page(built_book):
    pages = {p.relative_to(built_book).as_posix() for p in book_pages(built_book)}
    want = {f"book/experiments/{nb.stem}.html" for nb in (ROOT / "notebooks").glob("*.ipynb")}
    want |= {f"book/{md.stem}.html" for md in (ROOT / "book").glob("*.md")}
    assert want <= pages, f"not built: {sorted(want - pages)}"


def test_pages_load_without_errors(book_reports):
    bad = [p for r in book_reports for p in r.load_problems()]
    assert not bad, "pages with load errors:" + _listing(bad)


def test_every_figure_is_present_and_decoded(book_reports):
    images = [im for r in book_reports for im in r.images]
    assert images, "the built book shows no figures at all"
    bad = [p for r in book_reports for p in r.figure_problems()]
    assert not bad, "figures missing:" + _listing(bad)


def test_no_table_is_wider_than_the_content_column(book_reports):
    assert all(r.column_width > 300 for r in book_reports), [(r.page, r.column, r.column_width) for r in book_reports]
    bad = [p for r in book_reports for p in r.table_problems()]
    assert not bad, "tables too wide for the page (or in a horizontal scroll box):" + _listing(bad)


def test_token_check_finds_a_number_broken_inside_a_cell_and_not_one_kept_whole(browser, tmp_path):
    table = '<table style="width: 160px"><tr><td style="width: 40px; {}">123456.789012</td><td>two words</td></tr></table>'
    page = _page(tmp_path, table.format("overflow-wrap: anywhere") + table.format("white-space: nowrap"))
    r = check_page(browser, page)
    [broken] = r.broken_tokens
    assert broken["token"] == "123456.789012" and broken["cell"] == "123456.789012"
    assert r.token_problems() == [f"{r.page}: a table cell (section 'Results') breaks '123456.789012' across "
                                  "lines: '123456.789012'"]


def test_link_check_reports_a_missing_anchor_and_a_missing_file(browser, tmp_path):
    (tmp_path / "refs.html").write_text('<html><body><p id="id3">entry</p></body></html>')
    page = _page(tmp_path, '<p><a href="refs.html#id3">ok</a> <a href="refs.html#id9">gone</a> '
                           '<a href="nowhere.html">lost</a> <a download href="refs.html">file</a></p>')
    r = check_page(browser, page)
    assert r.downloads() == ["refs.html"]
    assert [p.split(": ", 1)[1] for p in r.link_problems()] == [
        "link 'gone' -> refs.html#id9: no #id9 there", "link 'lost' -> nowhere.html goes to a missing file"]


def _chapters(book_reports):
    chapters = [r for r in book_reports if r.page.startswith("book/experiments/")]
    assert len(chapters) == len(list((ROOT / "notebooks").glob("*.ipynb")))
    return chapters


def test_no_table_cell_in_a_chapter_breaks_a_number_or_a_word(book_reports):
    bad = [p for r in _chapters(book_reports) for p in r.token_problems()]
    assert not bad, "table cells wrapped inside a token:" + _listing(bad)


def test_each_chapter_offers_its_notebook_and_results_table(book_reports, built_book):
    for r in _chapters(book_reports):
        stem = Path(r.page).stem
        names = [Path(d).name for d in r.downloads()]
        assert f"{stem}.ipynb" in names, (r.page, names)
        # the build placed the table beside the notebook when the ci run had saved it
        table = built_book.parent.parent / "book" / "experiments" / f"{stem}_results.csv"
        assert (f"{stem}_results.csv" in names) == table.is_file(), (r.page, names, table)
        for d in r.downloads():  # copied into the built book: they work from files, offline
            assert (built_book / r.page).parent.joinpath(d).resolve().is_file(), (r.page, d)


def test_every_in_book_link_and_citation_resolves(book_reports, built_book):
    bad = [p for r in book_reports for p in r.link_problems(built_book)]
    assert not bad, "links that go nowhere:" + _listing(bad)
    bib = next(r for r in book_reports if r.page == "book/bibliography.html")
    cited = {link["href"].split("#", 1)[1] for r in book_reports for link in r.links
             if link["href"].split("#", 1)[0].endswith("bibliography.html") and "#" in link["href"]}
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text(), re.M))
    assert len(cited) == len(keys), f"{len(keys)} works in references.bib, {len(cited)} cited"
    page = (built_book / bib.page).read_text()
    assert "could not find" not in page and all(f'id="{c}"' in page for c in cited)

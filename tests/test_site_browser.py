"""The review site in headless Chromium (Debian's, driven by Playwright): no console errors, sorting,
links, the Chinese toggle, and a screenshot of the index. Skipped when chromium or playwright is missing."""
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

from agent.site import build_site, load_workspace
from site_support import make_workspace

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
if CHROMIUM is None:
    pytest.skip("chromium not found (apt-get install -y chromium); browser tests skipped", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[dev]')")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("ws") / "history")
    out = tmp_path_factory.mktemp("site") / "site"
    build_site(load_workspace(ws.path), out, workspace=str(ws.path))
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.problems = []
    pg.on("console", lambda m: pg.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.problems.append(f"page error: {e}"))
    pg.on("requestfailed", lambda r: pg.problems.append(f"request failed: {r.url}"))
    pg.on("request", lambda r: pg.problems.append(f"network request: {r.url}")
          if not r.url.startswith("file://") else None)
    yield pg
    context.close()


def url(path: Path) -> str:
    return path.resolve().as_uri()


def test_every_page_renders_without_console_errors_and_every_link_resolves(site, page):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 11
    seen = 0
    for p in pages:
        page.goto(url(p))
        assert page.locator("main h1").first.is_visible(), p.name
        hrefs = page.eval_on_selector_all("a[href]", "as => as.map(a => a.href.baseVal !== undefined ? "
                                          "new URL(a.href.baseVal, document.baseURI).href : a.href)")
        for href in hrefs:
            target = urlparse(urldefrag(href)[0])
            assert target.scheme == "file", f"{p.name}: {href}"
            assert Path(unquote(target.path)).is_file(), f"{p.name}: {href} does not exist"
            seen += 1
    assert seen > 50
    assert page.problems == []


def test_leaderboard_sorts_when_a_header_is_clicked(site, page):
    page.goto(url(site / "leaderboard.html"))

    def column(i):
        return page.eval_on_selector_all("table.board tbody tr",
                                         f"rows => rows.map(r => r.cells[{i}].textContent.trim())")

    ids = lambda: [int(x) for x in column(0)]
    means = lambda: [None if m == "—" else float(m.split("±")[0]) for m in column(9)]
    page.click("table.board th:has-text('Mean ± std')")
    got = means()
    scored = [m for m in got if m is not None]
    assert scored == sorted(scored, reverse=True) and got[len(scored):] == [None] * (len(got) - len(scored))
    assert page.get_attribute("table.board th:has-text('Mean ± std')", "aria-sort") == "descending"
    page.click("table.board th:has-text('Mean ± std')")
    scored = [m for m in means() if m is not None]
    assert scored == sorted(scored)
    page.click("table.board th >> text='#'")
    assert ids() == sorted(ids(), reverse=True)
    page.click("table.board th >> text='Name'")
    names = column(1)
    assert names == sorted(names, key=str.lower)
    assert page.problems == []


def test_chinese_toggle_shows_the_chinese_report_and_is_remembered(site, page):
    page.goto(url(site / "c/0003.html"))
    en, zh = page.locator("#report .lang-en"), page.locator("#report .lang-zh")
    assert en.is_visible() and not zh.is_visible()
    page.click("#report button[data-set-lang='zh']")
    assert zh.is_visible() and not en.is_visible()
    text = zh.inner_text()
    assert len(CJK.findall(text)) > 50 and "实验结果的关键观察" in text
    page.goto(url(site / "c/0002.html"))
    assert page.locator("#report .lang-zh").is_visible()
    page.click("header button[data-set-lang='en']")
    assert page.locator("#report .lang-en").is_visible() and not page.locator("#report .lang-zh").is_visible()
    assert page.problems == []


def test_reverted_row_is_struck_through_in_the_browser(site, page):
    page.goto(url(site / "leaderboard.html"))
    row = page.locator("table.board tbody tr.reverted")
    assert row.count() == 1
    decoration = row.locator("td").nth(3).evaluate("td => getComputedStyle(td).textDecorationLine")
    assert decoration == "line-through"
    assert "did not reproduce" in row.locator("td.status").inner_text()


def test_index_screenshot_is_saved(site, page, tmp_path_factory, capsys):
    page.goto(url(site / "index.html"))
    assert page.locator("svg.plot").first.is_visible()
    shot = tmp_path_factory.mktemp("artifacts") / "site-index.png"
    page.screenshot(path=str(shot), full_page=True)
    with capsys.disabled():
        print(f"\nscreenshot of the index: {shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.problems == []

"""The review site built from a real workspace (tests/site_support.py): pages, links, marks, escaping, caching,
the language split, the diff view, plot size bounds at thousands of points, --serve and the CLI."""
import difflib
import re
import subprocess
import sys
import threading
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urldefrag

import pytest
from typer.testing import CliRunner

from agent import plots
from agent.cli import app
from agent.errors import ArcherError
from agent.records import TASKS, Candidate, Score
from agent.site import (INDENT_LEVELS, SiteEntry, added_lines, build_site, diff_lines, load_workspace, serve_site,
                        split_languages)
from site_support import REVERT_REASON, make_workspace, scored

ROOT = Path(__file__).resolve().parent.parent
CJK = re.compile(r"[\u4e00-\u9fff]")


class Links(HTMLParser):
    """Every href/src of a page, and the deepest nesting of <ul> it reaches."""

    def __init__(self):
        super().__init__()
        self.links, self.depth, self.max_depth = [], 0, 0

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("href", "src") and value:
                self.links.append(value)
        if tag == "ul":
            self.depth += 1
            self.max_depth = max(self.max_depth, self.depth)

    def handle_endtag(self, tag):
        if tag == "ul":
            self.depth -= 1


def parse(path: Path) -> Links:
    p = Links()
    p.feed(path.read_text())
    return p


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("ws") / "history")


@pytest.fixture(scope="module")
def site(workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    build_site(load_workspace(workspace.path), out, workspace=str(workspace.path))
    return out


def row_of(html: str, cid: int) -> str:
    rows = re.findall(r"<tr class=\"[^\"]*\">.*?</tr>", html, re.S)
    return next(r for r in rows if re.search(rf"<td>{cid}</td>", r))


def test_site_has_a_page_per_candidate_including_the_reverted_one(site, workspace):
    ids = [c.id for c in workspace.records(include_reverted=True)]
    assert ids == [0, 1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (site / "c").iterdir()) == [f"{i:04d}.html" for i in ids]
    for name in ("index.html", "leaderboard.html", "plots.html", "lineage.html", "assets/site.css", "assets/site.js"):
        assert (site / name).is_file(), name


def test_every_link_resolves_on_disk_and_nothing_is_fetched_from_the_network(site):
    pages = list(site.rglob("*.html"))
    checked = 0
    for page in pages:
        for link in parse(page).links:
            assert not re.match(r"^[a-z]+:", link), f"{page.name}: external or scheme link {link}"
            target, _ = urldefrag(link)
            if target:
                assert (page.parent / target).resolve().is_file(), f"{page.name}: {link} does not resolve"
                checked += 1
    assert checked > 50


def test_reverted_candidate_is_struck_through_with_its_reason(site):
    html = (site / "leaderboard.html").read_text()
    row = row_of(html, 5)
    assert "reverted" in row.split(">", 1)[0]
    assert f"reverted: {REVERT_REASON}" in row
    assert "reverted" not in row_of(html, 3).split(">", 1)[0]
    page = (site / "c/0005.html").read_text()
    assert f"Reverted: {REVERT_REASON}" in page
    assert "archer revert 5" not in page            # already reverted: no revert command offered
    assert "archer revert 3 --reason" in (site / "c/0003.html").read_text()


def test_baseline_and_reference_models_are_marked(site):
    html = (site / "leaderboard.html").read_text()
    assert 'class="badge baseline"' in row_of(html, 0)
    assert 'class="badge reference"' in row_of(html, 1)
    assert "badge reference" not in row_of(html, 2) and "badge baseline" not in row_of(html, 2)


def test_leaderboard_lists_scores_with_uncertainty_status_parent_proposer_and_cost(site, workspace):
    html = (site / "leaderboard.html").read_text()
    c3 = workspace.get(3)
    row = row_of(html, 3)
    for t in TASKS:
        assert f"{c3.scores[t].mean:.3f}<small>±{c3.scores[t].std:.3f}</small>" in row
    assert f"{c3.mean:.3f}<small>±{c3.std:.3f}</small>" in row
    assert 'href="c/0002.html">#2</a>' in row and "llm:test-model" in row and "0.0123" in row
    rejected = row_of(html, 4)
    assert "rejected" in rejected and "uses `open`, which is not allowed" in rejected


def test_candidate_page_escapes_code_log_and_report_text(site):
    page = (site / "c/0006.html").read_text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "# &lt;bounded&gt;" in (site / "c/0002.html").read_text()
    assert "<bounded>" not in (site / "c/0002.html").read_text()


def test_candidate_page_shows_scores_per_seed_checks_settings_and_commands(site, workspace):
    page = (site / "c/0003.html").read_text()
    c3 = workspace.get(3)
    assert "<th>seed 0</th><th>seed 1</th>" in page
    for value in c3.scores["compress"].per_seed:
        assert f"{value:.3f}" in page
    assert "causality" in page and "subquadratic" in page
    assert "12 settings" not in page and "6 settings" in page       # one row per (task, setting), seeds as columns
    for command in ("archer show 3", "archer diff 3", "archer replay 3", "archer replay 3 --onto M"):
        assert command in page


def test_report_is_rendered_to_html_in_two_switchable_languages(site):
    page = (site / "c/0003.html").read_text()
    en = re.search(r'<div class="md lang-en" lang="en">(.*?)</div>\n<div class="md lang-zh"', page, re.S).group(1)
    zh = re.search(r'<div class="md lang-zh" lang="zh">(.*?)</div>\n', page, re.S).group(1)
    assert "<h2>Key observations from the results</h2>" in en and not CJK.search(re.sub(r"<[^>]+>", "", en).split(
        "Expected")[0])
    assert "<h2>实验结果的关键观察</h2>" in zh and "在每个块内使用因果 softmax" in zh
    assert "<table>" in en                              # the outcome table is a markdown table
    assert 'data-set-lang="zh"' in page


def test_report_markdown_cannot_embed_html_or_fetch_images(tmp_path):
    report = "# 1 x\n\n<img src=x onerror=alert(1)> ![pixel](http://example.com/p.png)\n\n# 中文：1 x\n\n好。\n"
    build_site([SiteEntry(scored(0, "baseline", None, 0.0), report=report)], tmp_path / "site")
    page = (tmp_path / "site/c/0000.html").read_text()
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_report_command_has_help():
    result = CliRunner().invoke(app, ["report", "--help"])
    assert result.exit_code == 0 and "--serve" in result.output and "--out" in result.output


def test_split_languages_finds_the_chinese_part_in_both_report_layouts():
    en, zh = split_languages("# 0007 foo\n\nEnglish text.\n\n# 中文：0007 foo\n\n中文内容。\n")
    assert en.strip() == "# 0007 foo\n\nEnglish text." and zh.startswith("# 中文：0007 foo")
    en, zh = split_languages("# 0000 baseline\n\n## English\n\nThe start.\n\n## 中文\n\n搜索的起点。\n")
    assert "The start." in en and "搜索" not in en and zh.startswith("## 中文")
    assert split_languages("# only english\n\ntext\n") == ("# only english\n\ntext\n", "")


def test_diff_view_classifies_lines_and_marks_added_lines_of_the_code():
    old = "a\nb\nc\nd\n"
    new = "a\nB\nc\nd\ne\n"
    patch = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "a/naive.py", "b/naive.py"))
    kinds = [k for k, _ in diff_lines(patch)]
    assert kinds[:3] == ["file", "file", "hunk"]
    assert kinds.count("add") == 2 and kinds.count("del") == 1
    assert added_lines(patch) == {2, 5}


def test_lineage_keeps_single_child_chains_flat_and_folds_branches(tmp_path):
    entries = [SiteEntry(scored(0, "baseline", None, 0.0, proposer="baseline"))]
    for i in range(1, 150):                               # a chain of 149 single children ...
        entries.append(SiteEntry(scored(i, f"c{i}", i - 1, i * 1e-4)))
    for i in range(150, 160):                             # ... then ten siblings under one node
        entries.append(SiteEntry(scored(i, f"s{i}", 149, 0.0)))
    build_site(entries, tmp_path / "site")
    tree = parse(tmp_path / "site/lineage.html")
    assert tree.max_depth == 2                            # one level for the root list, one for the branch
    html = (tmp_path / "site/lineage.html").read_text()
    assert "10 branches · 10 descendants" in html
    assert html.count('class="node chain"') == 149


def test_lineage_of_a_deep_search_continues_in_sections_and_lists_every_candidate_once(tmp_path):
    entries = [SiteEntry(scored(0, "baseline", None, 0.0, proposer="baseline"))]
    for i in range(1, 40):                                # a spine 40 deep, a leaf beside every step
        entries.append(SiteEntry(scored(i, f"spine{i}", i - 1, 0.0)))
        entries.append(SiteEntry(scored(100 + i, f"leaf{i}", i - 1, 0.0)))
    build_site(entries, tmp_path / "site")
    page = tmp_path / "site/lineage.html"
    html = page.read_text()
    assert parse(page).max_depth <= INDENT_LEVELS + 1     # browsers flatten DOM nesting past a few hundred
    listed = re.findall(r'<div class="node[^"]*"><a href="c/(\d+)\.html"', html)
    assert sorted(map(int, listed)) == sorted(e.record.id for e in entries)
    anchors = re.findall(r'href="#(t\d+)"', html)
    assert anchors and all(f'id="{a}"' in html for a in anchors)


def test_plots_aggregate_thousands_of_points_into_a_bounded_drawing():
    xs = [float(i) for i in range(5000)]
    ys = [0.5 + 0.3 * ((i * 7919) % 1000) / 1000 for i in range(5000)]
    small = plots.search_progress("mean", xs[:1000], ys[:1000], [])
    large = plots.search_progress("mean", xs, ys, [])
    assert small.count("h0") == 1000                      # every point drawn below the limit
    assert large.count("h0") <= plots.WIDTH / 3           # one mean dot per 3-pixel column above it
    assert "5000 candidates in" in large
    pairs = {"t": [(((i * 31) % 997) / 997, ((i * 17) % 991) / 991) for i in range(30000)]}
    grid = plots.predicted_vs_measured("pvm", pairs)
    assert grid.count("<rect") <= 40 * 40 + 2
    assert plots.improvements([0.5, 0.4, 0.6, 0.6, 0.7]) == [0, 2, 4]


def test_rebuild_refreshes_changed_pages_removes_stale_ones_and_keeps_the_rest(tmp_path):
    def entry(i, parent):
        return SiteEntry(scored(i, f"c{i}", parent, 0.01 * i), code=f"x = {i}\n", report=f"# {i}\n")
    out = tmp_path / "site"
    build_site([entry(0, None), entry(1, 0), entry(2, 0), entry(3, 1)], out)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "c").iterdir()}
    build_site([entry(0, None), entry(1, 0), entry(2, 0), entry(4, 2)], out)
    assert not (out / "c/0003.html").exists()                            # gone from the search
    assert 'href="../c/0004.html">#4</a>' in (out / "c/0002.html").read_text()   # new child listed
    assert (out / "c/0000.html").stat().st_mtime_ns == stamps["0000.html"]        # untouched
    assert "0003.html" not in (out / "c/0001.html").read_text()                    # child and pager updated


def test_build_refuses_a_folder_that_is_not_an_archer_site(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ArcherError, match="not an archer site"):
        build_site([SiteEntry(Candidate(id=0, name="baseline", parent=None, proposer="baseline", status="pending"))],
                   out)
    assert (out / "notes.txt").read_text() == "keep me" and not (out / "c").exists()


def test_site_of_an_unscored_workspace_builds_with_empty_plots(tmp_path):
    out = tmp_path / "site"
    build_site([SiteEntry(Candidate(id=0, name="baseline", parent=None, proposer="baseline", status="pending"))], out)
    assert "no scored candidates yet" in (out / "plots.html").read_text()


def test_serve_site_answers_on_localhost(site):
    server = serve_site(site, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/leaderboard.html") as r:
            assert r.status == 200 and b"tanh_on_error" in r.read()
    finally:
        server.shutdown()
        server.server_close()


def test_report_command_writes_the_site_and_fails_in_one_line_on_a_missing_workspace(workspace, tmp_path):
    ok = CliRunner().invoke(app, ["report", str(workspace.path), "--out", str(tmp_path / "s")])
    assert ok.exit_code == 0, ok.output
    assert "wrote 11 pages" in ok.output and (tmp_path / "s/index.html").is_file()
    assert f"archer replay 3 --dir {workspace.path}" in (tmp_path / "s/c/0003.html").read_text()
    bad = subprocess.run([sys.executable, "-c", "from agent.cli import main; main()", "report",
                          str(tmp_path / "nowhere"), "--out", str(tmp_path / "t")], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 1
    lines = (bad.stdout + bad.stderr).strip().splitlines()
    assert len(lines) == 1 and "not an archer workspace" in lines[0]
    assert not (tmp_path / "t").exists()


def test_site_entries_carry_the_scores_of_the_workspace(workspace):
    entries = {e.record.id: e for e in load_workspace(workspace.path)}
    assert entries[5].reverted == REVERT_REASON and entries[3].reverted is None
    assert entries[2].diff.startswith("--- a/") and "torch.tanh" in entries[2].code
    assert "# 中文" in entries[2].report
    assert isinstance(entries[3].record.scores["compress"], Score)

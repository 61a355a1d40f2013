"""The review site (`archer report`): a static HTML site of a search that opens from disk with no network.

Leaderboard, plots over the search, lineage tree and one page per candidate (bilingual report, code
with its diff, scores per task and seed, checks, log tail, replay/revert commands). Built from
`SiteEntry` values, so a Workspace or synthetic data feed it alike. Tested by tests/test_site.py
(files, links, escaping, size bounds) and tests/test_site_browser.py (headless Chromium).
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import re
import shutil
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import jinja2
from markdown_it import MarkdownIt

from agent import plots
from agent.errors import ArcherError
from agent.history import Workspace
from agent.records import TASKS, TASK_TITLES, Candidate

TEMPLATES = Path(__file__).resolve().parent / "site_templates"
ASSETS = ("site.css", "site.js")
MARKER = ".archer-site"           # written into every site folder; a folder without it is never overwritten
TOP_ROWS = 25                     # leaderboard rows on the index page
TOP_LINEAGES = 10                 # lineages opened in the tree and listed on their own
LINEAGE_TAIL = 12                 # ancestors listed before each top candidate (older ones are counted)
INDENT_LEVELS = 8                 # deeper branches of the tree continue in a section of their own
OPEN_ALL_BELOW = 200              # smaller searches show the whole tree opened
REFERENCE_MODELS = ("gated_delta_net", "transformer")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass
class SiteEntry:
    """One candidate as the site shows it: its record and the texts stored beside it."""
    record: Candidate
    code: str = ""
    report: str = ""                  # markdown: an English part, then a part headed in Chinese
    diff: str = ""                    # unified diff against the parent
    reverted: str | None = None       # the reason, when the candidate was reverted


@dataclass
class SiteSummary:
    out: Path
    pages: int
    bytes: int
    seconds: float


def is_reference(c: Candidate) -> bool:
    return (c.proposer == "reference" or c.model in REFERENCE_MODELS
            or c.name.startswith(REFERENCE_MODELS))


def split_languages(report: str) -> tuple[str, str]:
    """(English, Chinese) parts of a report: the Chinese part starts at the first heading in Chinese.

    A report with no such heading is returned whole as the English part and "" as the Chinese.
    """
    lines = report.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if i > 0 and line.startswith("#") and _CJK.search(line):
            return "".join(lines[:i]).rstrip() + "\n", "".join(lines[i:])
    return report, ""


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """(css class, text) per line of a unified diff: add, del, hunk, file or ctx."""
    out = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---", "diff ", "index ")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append((kind, line))
    return out


def added_lines(diff: str) -> set[int]:
    """1-based line numbers in the new file that the diff adds."""
    added, n = set(), 0
    for line in diff.splitlines():
        m = re.match(r"@@ -\d+(?:,\d+)? \+(\d+)", line)
        if m:
            n = int(m.group(1))
        elif line.startswith(("+++", "---")) or n == 0:
            continue
        elif line.startswith("+"):
            added.add(n)
            n += 1
        elif not line.startswith("-") and not line.startswith("\\"):
            n += 1
    return added


def page_name(cid: int) -> str:
    return f"c/{cid:04d}.html"


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["score"] = lambda v: "—" if v is None else f"{v:.3f}"
    env.filters["signed"] = lambda v: "—" if v is None else f"{round(v, 3) + 0.0:+.3f}"
    env.filters["page"] = page_name
    env.filters["trend"] = lambda v: "up" if v >= 0.0005 else "down" if v <= -0.0005 else "flat"
    env.globals.update(tasks=TASKS, titles=TASK_TITLES)
    return env


@functools.lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    """Reports are untrusted text: raw HTML is escaped and images are off, so a page never fetches anything."""
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table").disable("image")


class _Writer:
    """Writes pages, skipping files whose bytes are unchanged, and counts what the site holds."""

    def __init__(self, out: Path):
        self.out, self.pages, self.bytes = out, 0, 0

    def write(self, rel: str, text: str) -> None:
        path = self.out / rel
        data = text.encode()
        self.count(len(data))
        if path.exists() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return
        path.write_bytes(data)

    def count(self, size: int) -> None:
        self.pages += 1
        self.bytes += size


def _code_digest() -> str:
    """Changes whenever a template or this module changes: part of every page's cache key."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted(TEMPLATES.iterdir()):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def _read_keys(out: Path) -> dict[str, str]:
    try:
        keys = json.loads((out / MARKER).read_text()).get("pages", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return keys if isinstance(keys, dict) else {}


def _write_keys(out: Path, keys: dict[str, str]) -> None:
    (out / MARKER).write_text(json.dumps({"written_by": "archer report", "pages": keys}) + "\n")


class _Search:
    """The derived views of a list of entries: lookup, children, best, baseline, references."""

    def __init__(self, entries: list[SiteEntry]):
        self.entries = sorted(entries, key=lambda e: e.record.id)
        self.by_id = {e.record.id: e for e in self.entries}
        self.children: dict[int, list[int]] = {}
        for e in self.entries:
            p = e.record.parent
            if p is not None and p in self.by_id and p != e.record.id:
                self.children.setdefault(p, []).append(e.record.id)
        self.live = [e for e in self.entries if e.record.scored and e.reverted is None]
        self.baseline = self.by_id.get(0)
        ranked = sorted(self.live, key=lambda e: -e.record.mean)
        self.top = [e for e in ranked if not is_reference(e.record) and e.record.id != 0][:TOP_LINEAGES]
        self.best_task = {t: max((e.record.scores[t].mean for e in self.live if t in e.record.scores), default=None)
                          for t in TASKS}

    def reference(self, model: str) -> SiteEntry | None:
        refs = [e for e in self.live if e.record.model == model or e.record.name.startswith(model)]
        return max(refs, key=lambda e: e.record.mean, default=None)

    def lineage(self, cid: int) -> list[SiteEntry]:
        chain, seen = [], set()
        while cid in self.by_id and cid not in seen:
            seen.add(cid)
            chain.append(self.by_id[cid])
            cid = self.by_id[cid].record.parent
        return chain[::-1]


def _row(s: _Search, e: SiteEntry) -> dict:
    c = e.record
    marks = []
    if c.id == 0:
        marks.append("baseline")
    if is_reference(c):
        marks.append("reference")
    parent = s.by_id.get(c.parent) if c.parent is not None else None
    return dict(
        c=c, marks=marks, reverted=e.reverted, parent_known=parent is not None,
        reason="; ".join(r.message or r.code for r in c.reasons),
        best={t for t, b in s.best_task.items() if c.scored and e.reverted is None and t in c.scores
              and b is not None and c.scores[t].mean >= b},
        delta=(c.mean - parent.record.mean) if c.scored and parent is not None and parent.record.scored else None,
    )


def _tree(s: _Search) -> list[tuple]:
    """The lineage as a flat list of events for the template. Single-child chains stay at one level;
    a branch INDENT_LEVELS deep continues in a section of its own below (browsers cap DOM depth)."""
    hot = {x.record.id for e in s.top for x in s.lineage(e.record.id)}
    open_all = len(s.entries) < OPEN_ALL_BELOW
    roots = [e.record.id for e in s.entries if e.record.parent not in s.by_id or e.record.parent == e.record.id]
    order, seen = [], set()
    for r in roots + [e.record.id for e in s.entries]:          # ids on a parent cycle become roots too
        if r in seen:
            continue
        todo = [r]
        while todo:
            cid = todo.pop()
            if cid not in seen:
                seen.add(cid)
                order.append((cid, cid == r))
                todo.extend(s.children.get(cid, []))
    size: dict[int, int] = {}
    for cid, _ in reversed(order):
        size[cid] = 1 + sum(size.get(k, 0) for k in s.children.get(cid, []) if k != cid)
    events: list[tuple] = []
    seen = set()
    sections = deque([(None, [cid for cid, is_root in order if is_root])])
    while sections:
        above, tops = sections.popleft()
        events.append(("section", None if above is None else _row(s, s.by_id[above]),
                       None if above is None else size[above] - 1))
        stack: list[tuple] = [("visit", r, 0) for r in reversed(tops)]
        while stack:
            item = stack.pop()
            if item[0] != "visit":
                events.append(item)
                continue
            cid, level, first = item[1], item[2], True
            events.append(("li",))
            while True:
                seen.add(cid)
                events.append(("node", _row(s, s.by_id[cid]), first))
                first = False
                kids = [k for k in s.children.get(cid, []) if k not in seen]
                if len(kids) != 1:
                    break
                cid = kids[0]
            if kids and level + 1 >= INDENT_LEVELS:
                events.append(("more", cid, len(kids), size[cid] - 1))
                sections.append((cid, kids))
            elif kids:
                events.append(("branch", open_all or any(k in hot for k in kids), len(kids), size[cid] - 1))
                stack.append(("end_branch",))
                stack.extend(("visit", k, level + 1) for k in reversed(kids))
            else:
                events.append(("end_li",))
        events.append(("end_section",))
    return events


def _lineages(s: _Search, tail: int = LINEAGE_TAIL) -> list[dict]:
    """Each top candidate's path from the root, told once: where it forks from an earlier path listed
    above it, and at most `tail` steps before it (the rest counted, not listed)."""
    out, shown = [], []
    for e in s.top:
        chain = [x.record.id for x in s.lineage(e.record.id)]
        fork, fork_of = 0, None
        for j, other in enumerate(shown):
            n = next((i for i, (a, b) in enumerate(zip(chain, other)) if a != b), min(len(chain), len(other)))
            if n > fork:
                fork, fork_of = n, j + 1
        steps = chain[fork:-1]
        out.append(dict(top=_row(s, e), fork=_row(s, s.by_id[chain[fork - 1]]) if fork else None, fork_of=fork_of,
                        hidden=max(0, len(steps) - tail), steps=[_row(s, s.by_id[i]) for i in steps[-tail:]]))
        shown.append(chain)
    return out


def _plots(s: _Search) -> dict[str, str]:
    scored = [e for e in s.entries if e.record.scored and e.reverted is None]
    base = s.baseline.record if s.baseline is not None and s.baseline.record.scored else None

    def progress(key: str, title: str) -> str:
        pts = [(e, e.record.mean if key == "mean" else e.record.scores[key].mean)
               for e in scored if key == "mean" or key in e.record.scores]
        ys = [y for _, y in pts]
        marks = [plots.Mark(pts[i][0].record.id, ys[i], page_name(pts[i][0].record.id),
                            f"#{pts[i][0].record.id} {pts[i][0].record.name}: {ys[i]:.3f}")
                 for i in plots.improvements(ys)]
        level = None if base is None else (base.mean if key == "mean" else
                                           base.scores[key].mean if key in base.scores else None)
        return plots.search_progress(title, [float(e.record.id) for e, _ in pts], ys, marks, level)

    compared = [e for e in (s.baseline, s.reference("gated_delta_net"), s.reference("transformer"))
                if e is not None and e.record.scored] + s.top[:3]
    groups = [TASK_TITLES[t] for t in TASKS] + ["Mean"]
    series = [plots.BarSeries(f"#{e.record.id} {e.record.name}",
                              [plots.Bar(e.record.scores[t].mean, e.record.scores[t].std) if t in e.record.scores
                               else None for t in TASKS] + [plots.Bar(e.record.mean, e.record.std)])
              for e in compared]
    pairs = {TASK_TITLES[t]: [(e.record.predicted[t], e.record.scores[t].mean) for e in scored
                              if t in e.record.predicted and t in e.record.scores] for t in TASKS}
    everyone = s.entries
    ids = [float(e.record.id) for e in everyone]
    seconds = [e.record.timings.get("total_s", sum(e.record.timings.values())) for e in everyone]
    costs = [e.record.usage.cost_usd for e in everyone]
    return dict(
        mean=progress("mean", "Mean over the six tasks"),
        tasks=[progress(t, TASK_TITLES[t]) for t in TASKS],
        compare=plots.grouped_bars("Top candidates against the baseline and the references", groups, series),
        predicted=plots.predicted_vs_measured("Predicted vs measured, per task", pairs),
        cost=plots.per_candidate("LLM cost per candidate", ids, costs, "USD", f"${sum(costs):.2f}"),
        time=plots.per_candidate("Evaluation time per candidate", ids, seconds, "s",
                                 f"{sum(seconds) / 3600:.1f} h", plots.PALETTE[5]),
    )


def commands(c: Candidate, reverted: bool, workspace_option: str = "") -> list[str]:
    """The shell commands to inspect, replay or revert candidate `c`."""
    tail = f" {workspace_option}" if workspace_option else ""
    out = [f"archer show {c.id}{tail}", f"archer diff {c.id}{tail}"]
    if c.parent is not None:
        out.append(f"archer replay {c.id}{tail}                 # same seeds: does it reproduce?")
        out.append(f"archer replay {c.id} --seeds 1,2,3{tail}   # new seeds: does it hold?")
        out.append(f"archer replay {c.id} --onto M{tail}        # re-apply its change on candidate M")
        if not reverted:
            out.append(f'archer revert {c.id} --reason "..."{tail}')
    return out


def _candidate_page(s: _Search, e: SiteEntry, prev: int | None, next_: int | None,
                    render: Callable[..., str], workspace_option: str) -> str:
    c = e.record
    md = _markdown()
    en, zh = split_languages(e.report)
    added = added_lines(e.diff)
    code = [(i, i in added, line) for i, line in enumerate(e.code.splitlines(), 1)]
    parent = s.by_id.get(c.parent) if c.parent is not None else None
    base = s.baseline if s.baseline is not None and s.baseline.record.id != c.id else None
    rows = []
    for t in TASKS:
        sc = c.scores.get(t)
        ref = [o.record.scores[t].mean if o is not None and t in o.record.scores else None for o in (parent, base)]
        rows.append(dict(title=TASK_TITLES[t], predicted=c.predicted.get(t), score=sc,
                         vs_parent=sc.mean - ref[0] if sc and ref[0] is not None else None,
                         vs_base=sc.mean - ref[1] if sc and ref[1] is not None else None))
    settings: dict[tuple[str, str], dict[int, float]] = {}
    for st in c.settings:
        settings.setdefault((st.task, st.setting), {})[st.seed] = st.accuracy
    return render("candidate.html", root="../", title=f"#{c.id} {c.name}", row=_row(s, e), e=e,
                  en=md.render(en) if en.strip() else "", zh=md.render(zh) if zh.strip() else "",
                  code=code, diff=diff_lines(e.diff), rows=rows, parent=parent, base=base,
                  children=[s.by_id[k] for k in s.children.get(c.id, [])],
                  settings=sorted(settings.items()), seeds=c.seeds,
                  commands=commands(c, e.reverted is not None, workspace_option), prev=prev, next=next_)


def _page_key(s: _Search, e: SiteEntry, prev: int | None, next_: int | None, digest: str) -> str:
    """A digest of everything a candidate page shows: when it is unchanged the page is not rendered again."""
    c = e.record
    h = hashlib.sha256(digest.encode())
    for text in (c.model_dump_json(), e.code, e.report, e.diff, str(e.reverted), f"{prev} {next_}",
                 " ".join(map(str, s.children.get(c.id, [])))):
        h.update(text.encode() + b"\0")
    for other in (s.by_id.get(c.parent) if c.parent is not None else None, s.baseline):
        if other is not None:
            h.update(json.dumps([other.record.id, other.record.name, other.record.status, other.record.mean,
                                 {t: sc.mean for t, sc in other.record.scores.items()}]).encode())
    return h.hexdigest()


def build_site(entries: list[SiteEntry], out: Path, *, title: str = "archer search", workspace: str = "",
               workspace_option: str = "", progress: Callable[[int, int], None] | None = None) -> SiteSummary:
    """Write the whole site under `out`; returns the page count, total size and build time.

    `workspace` names the source in the footer; `workspace_option` is appended to the commands shown.
    """
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ArcherError(f"{out} exists, is not empty and is not an archer site; choose another --out")
    (out / "c").mkdir(parents=True, exist_ok=True)
    (out / "assets").mkdir(exist_ok=True)
    old_keys = _read_keys(out)
    _write_keys(out, {})                     # an interrupted build leaves no page marked current
    for name in ASSETS:
        shutil.copyfile(TEMPLATES / name, out / "assets" / name)
    s = _Search(entries)
    env = _environment()
    common = dict(site_title=title, workspace=workspace, generated="")

    def render(template: str, **kw) -> str:
        return env.get_template(template).render({**common, **kw})

    w = _Writer(out)
    rows = [_row(s, e) for e in sorted(s.entries, key=lambda e: (e.reverted is not None, e.record.mean is None,
                                                                   -(e.record.mean or 0), e.record.id))]
    counts: dict[str, int] = {}
    for e in s.entries:
        key = "reverted" if e.reverted is not None else e.record.status
        counts[key] = counts.get(key, 0) + 1
    figs = _plots(s)
    lineages = _lineages(s)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    w.write("index.html", render("index.html", root="", title=title, generated=stamp, rows=rows[:TOP_ROWS],
                                 total=len(rows), counts=sorted(counts.items()), best=s.top[0] if s.top else None,
                                 cost=sum(e.record.usage.cost_usd for e in s.entries), figs=figs))
    w.write("leaderboard.html", render("leaderboard.html", root="", title="Leaderboard", rows=rows))
    w.write("plots.html", render("plots.html", root="", title="Plots", figs=figs))
    w.write("lineage.html", render("lineage.html", root="", title="Lineage", events=_tree(s), lineages=lineages, indent=INDENT_LEVELS,
                                   total=len(s.entries)))
    ids = [e.record.id for e in s.entries]
    digest = _code_digest() + title + workspace + workspace_option
    keys: dict[str, str] = {}
    for n, e in enumerate(s.entries, 1):
        prev, next_ = ids[n - 2] if n > 1 else None, ids[n] if n < len(ids) else None
        rel = page_name(e.record.id)
        keys[rel] = _page_key(s, e, prev, next_, digest)
        path = out / rel
        if old_keys.get(rel) == keys[rel] and path.exists():
            w.count(path.stat().st_size)
        else:
            w.write(rel, _candidate_page(s, e, prev, next_, render, workspace_option))
        if progress is not None:
            progress(n, len(s.entries))
    for stale in (out / "c").glob("*.html"):
        if f"c/{stale.name}" not in keys:
            stale.unlink()
    _write_keys(out, keys)
    return SiteSummary(out, w.pages, w.bytes, time.perf_counter() - t0)


def load_workspace(path: Path) -> list[SiteEntry]:
    """Every candidate of the workspace at `path`, reverted ones included, with its stored texts."""
    ws = Workspace.open(Path(path))
    reverted = ws.reverted()
    entries = []
    for c in ws.records(include_reverted=True):
        texts = []
        for read in (ws.code, ws.report, ws.diff_patch):
            try:
                texts.append(read(c.id))
            except FileNotFoundError:
                texts.append("")
        entries.append(SiteEntry(c, *texts, reverted=reverted.get(c.id)))
    return entries


def serve_site(root: Path, port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for `root` on 127.0.0.1 (port 0 picks a free one); the caller runs serve_forever()."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)

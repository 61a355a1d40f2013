"""`archer import`: the earlier pipeline's logs (a pandas-printed results table, a timestamp, an insights
text, sometimes `name:` and `success:` lines) read into a new workspace, so an old search continues.

The parser reads by tokens, not by column position, so it tolerates reordered, wrapped and truncated
tables, names as the index, blank lines and CRLF; whatever it cannot read it names, one line per problem.
Imported rows carry scores and insights but no code: their naive.py is a note (`NO_CODE_MARKER`), and
they cannot be parents or be replayed. Tested by tests/test_legacy.py on fixture logs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import Config
from agent.errors import ArcherError
from agent.history import NO_CODE_MARKER, Workspace
from agent.prompts import render
from agent.records import TASKS, TASK_TITLES, Candidate, Reason, Score

TITLE_TO_TASK = {re.sub(r"[\s_-]+", " ", title.lower()): task for task, title in TASK_TITLES.items()}
TITLE_RE = re.compile("|".join(r"[\s_-]*".join(t.split()) for t in TITLE_TO_TASK), re.IGNORECASE)
NUMBER_RE = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
MISSING = {"nan", "none", "null", "<na>", "-"}
TIMESTAMP_RE = re.compile(r"^\s*(\d{8}_\d{6})\s*$")
NAME_RE = re.compile(r"^\s*name\s*:\s*(\S+)\s*$", re.IGNORECASE)
SUCCESS_RE = re.compile(r"^\s*success\s*:\s*(\S+)\s*$", re.IGNORECASE)
INSIGHTS_RE = re.compile(r"^\s*-{2,}\s*insights\s*-{2,}\s*$", re.IGNORECASE)
FOOTER_RE = re.compile(r"^\s*\[\d+ rows x \d+ columns\]\s*$")
BASELINE_RE = re.compile(r"^delta_?net(_\d+_?layers?)?(_baseline)?$")
CANDIDATE_PREFIX = "delta_net"


@dataclass
class LegacyLog:
    source: str
    rows: dict[str, dict[str, float | None]] = field(default_factory=dict)   # name -> task -> score
    timestamp: str = ""
    insights: str = ""
    name: str = ""
    success: bool | None = None
    problems: list[str] = field(default_factory=list)


def _is_value(token: str) -> bool:
    return bool(NUMBER_RE.match(token)) or token.lower() in MISSING or token == "..."


def _header_tasks(line: str) -> list[str | None] | None:
    """The header's column labels mapped to task keys (None for any other label), or None if no header.

    A header holds at least one task title and only short labels (prose that names a task is not one)."""
    text = line.rstrip().rstrip("\\").rstrip()
    if not TITLE_RE.search(text):
        return None
    chunks = re.split(r"\s{2,}", text.strip())
    if any(len(TITLE_RE.sub("", c).split()) > 2 or re.search(r"[.,;:!?()（）。，]\s*\S+\s", TITLE_RE.sub("", c))
           for c in chunks):
        return None
    labels = []
    for chunk in chunks:
        pos, found = 0, []
        for m in TITLE_RE.finditer(chunk):
            if chunk[pos:m.start()].strip():
                found.append(None)
            found.append(TITLE_TO_TASK[re.sub(r"[\s_-]+", " ", m.group(0).lower())])
            pos = m.end()
        if chunk[pos:].strip():
            found.append("..." if chunk[pos:].strip() == "..." else None)
        labels += found
    return labels


def parse_log(text: str, source: str) -> LegacyLog:
    """One log file: its table rows (merged over wrapped blocks), timestamp, insights, name and success."""
    log = LegacyLog(source=source)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    labels: list[str | None] | None = None
    in_insights: list[str] | None = None
    hidden_columns = hidden_rows = False
    previous_header = -1
    for n, line in enumerate(lines, 1):
        where = f"{source}:{n}"
        if in_insights is not None:
            if NAME_RE.match(line) or SUCCESS_RE.match(line) or _header_tasks(line):
                log.insights = "\n".join(in_insights).strip()
                in_insights = None
            else:
                in_insights.append(line)
                continue
        if m := NAME_RE.match(line):
            log.name = m.group(1)
            continue
        if m := SUCCESS_RE.match(line):
            log.success = m.group(1).lower() in ("true", "yes", "1", "ok")
            continue
        if INSIGHTS_RE.match(line):
            in_insights, labels = [], None
            continue
        if m := TIMESTAMP_RE.match(line):
            log.timestamp, labels = m.group(1), None
            continue
        if not line.strip() or FOOTER_RE.match(line):
            continue
        if (header := _header_tasks(line)) is not None:
            labels, previous_header = header, n
            hidden_columns |= "..." in header
            continue
        if labels is None:
            if log.rows or log.timestamp:
                log.problems.append(f"{where}: unexpected text outside the table and insights: {line.strip()[:60]!r}")
            continue
        tokens = line.split()
        if tokens and tokens[-1] == "\\":
            tokens.pop()
        if tokens and tokens[0] == "..":
            hidden_rows = True
            continue
        k = len(tokens)
        while k > 0 and _is_value(tokens[k - 1]):
            k -= 1
        head, values = tokens[:k], tokens[k:]
        if head and head[0].isdigit() and len(head) > 1:
            head = head[1:]
        if not head or not values:
            continue
        if not any("." in v or v.lower() in MISSING for v in values):
            if previous_header != n - 1:
                log.problems.append(f"{where}: not a table row (no scores): {line.strip()[:60]!r}")
            continue  # the index-name line under a header ("Unnamed: 0")
        name = "_".join(head)
        first = next((i for i, lab in enumerate(labels) if lab is not None), 0)
        expected = len(labels) - first
        if len(values) != expected:
            cut = " (the file ends mid-table?)" if len(values) < expected else ""
            log.problems.append(f"{where}: {name}: {len(values)} values for {expected} columns{cut}; row skipped")
            continue
        row = log.rows.setdefault(name, {})
        for task, token in zip(labels[first:], values):
            if task in TASKS and token != "...":
                row[task] = float(token) if NUMBER_RE.match(token) else None
    if in_insights is not None:
        log.insights = "\n".join(in_insights).strip()
    if hidden_rows:
        log.problems.append(f"{source}: rows hidden by pandas ('...') could not be read")
    if hidden_columns:
        log.problems.append(f"{source}: columns hidden by pandas ('...') could not be read")
    if not log.rows:
        log.problems.append(f"{source}: no results table found")
    if log.insights and log.insights.lower().startswith("insights"):
        log.insights = log.insights[len("insights"):].strip()
    return log


@dataclass
class ImportPlan:
    """What the logs hold, resolved across files: candidates in order, references, and the problems."""
    baseline: dict[str, float | None] | None = None
    baseline_name: str = ""
    baseline_source: str = ""
    candidates: list[dict] = field(default_factory=list)   # name, scores, report, source, status, reason
    references: dict[str, dict[str, float | None]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _resolve_truncated(name: str, known: set[str], where: str, problems: list[str]) -> str:
    if not name.endswith("..."):
        return name
    stem = name[:-3]
    matches = sorted(k for k in known if k.startswith(stem) and not k.endswith("..."))
    if len(matches) == 1:
        return matches[0]
    problems.append(f"{where}: the name {name!r} was cut by pandas and matches "
                    f"{'no' if not matches else len(matches)} full names; kept as {stem.rstrip('_')!r}")
    return stem.rstrip("_")


def plan_import(logs: list[LegacyLog]) -> ImportPlan:
    plan = ImportPlan()
    logs = sorted(logs, key=lambda g: (g.timestamp or "99999999_999999", g.source))
    for g in logs:
        plan.problems += g.problems
    full = {n for g in logs for n in g.rows} | {g.name for g in logs if g.name}
    order: list[str] = []
    scores: dict[str, dict[str, float | None]] = {}
    first_seen: dict[str, int] = {}
    listed_in: dict[str, LegacyLog] = {}
    for i, g in enumerate(logs):
        for raw, row in g.rows.items():
            name = _resolve_truncated(raw, full, g.source, plan.problems)
            if name not in scores:
                order.append(name)
                first_seen[name] = i
                listed_in[name] = g
            scores.setdefault(name, {}).update({t: v for t, v in row.items()})
    reports: dict[str, LegacyLog] = {}
    for i, g in enumerate(logs):
        if not g.insights:
            continue
        target = g.name
        if not target:
            new = [n for n in order if first_seen[n] == i + 1 and n.startswith(CANDIDATE_PREFIX)]
            if len(new) == 1:
                target = new[0]
            else:
                plan.problems.append(f"{g.source}: insights without a name line could not be attributed "
                                     f"({len(new)} new rows in the next log)")
                continue
        reports[target] = g
    failed = {g.name: g for g in logs if g.name and g.name not in scores}
    for name in order:
        if BASELINE_RE.match(name) and plan.baseline is None:
            plan.baseline, plan.baseline_name, plan.baseline_source = scores[name], name, listed_in[name].source
        elif name.startswith(CANDIDATE_PREFIX):
            plan.candidates.append(_planned(name, scores[name], reports.get(name), listed_in[name]))
        else:
            plan.references[name] = scores[name]
    for name, g in failed.items():
        status, reason = ("crashed", "import.failed") if g.success is False else ("crashed", "import.no_scores")
        message = ("the earlier pipeline reported success: false" if g.success is False
                   else "named in a log, but no results table lists it")
        plan.candidates.append({"name": name, "scores": {}, "insights": g.insights, "source": g.source,
                                "timestamp": g.timestamp, "status": status,
                                "reason": Reason(code=reason, message=message)})
    if plan.baseline is None:
        plan.problems.append("no baseline row (named like delta_net_4layer): the baseline stays pending")
    return plan


def _planned(name: str, scores: dict[str, float | None], proposed_in: LegacyLog | None, listed_in: LegacyLog) -> dict:
    """A candidate from a table row, with the insights of the log that proposed it (when known)."""
    missing = [TASK_TITLES[t] for t in TASKS if scores.get(t) is None]
    log = proposed_in or listed_in
    entry = {"name": name, "scores": {t: v for t, v in scores.items() if v is not None},
             "insights": proposed_in.insights if proposed_in else "", "source": log.source,
             "timestamp": log.timestamp, "status": "ok", "reason": None}
    if missing:
        entry["status"] = "crashed"
        entry["reason"] = Reason(code="import.missing_scores", message=f"no score for {', '.join(missing)}")
    return entry


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "unnamed"


def _mean_of(scores: dict[str, float]) -> float | None:
    return sum(scores[t] for t in TASKS) / len(TASKS) if all(t in scores for t in TASKS) else None


def no_code_note(source: str) -> str:
    return (f"{NO_CODE_MARKER}\n# Imported from the earlier pipeline's log {source}: the log holds\n"
            "# this candidate's scores and insights but not its code, so it cannot be a parent or be replayed.\n")


def import_logs(paths: list[Path], into: Path, *, config: Config | None = None,
                baseline_code: str | None = None) -> tuple[Workspace, ImportPlan]:
    """Read every log, then create the workspace at `into` and record the plan's candidates in order."""
    logs = []
    for p in paths:
        try:
            logs.append(parse_log(Path(p).read_text(encoding="utf-8", errors="replace"), Path(p).name))
        except OSError as e:
            raise ArcherError(f"{p}: cannot read ({e.strerror})") from None
    plan = plan_import(logs)
    if plan.baseline is None and not plan.candidates:
        raise ArcherError("no results table could be read from " + ", ".join(str(p) for p in paths))
    ws = Workspace.init(into, config, baseline_code=baseline_code)
    base = ws.get(0)
    if plan.baseline is not None:
        scores = {t: v for t, v in plan.baseline.items() if v is not None}
        base = base.model_copy(update={
            "status": "ok", "profile": "legacy", "proposer": "import", "seeds": [],
            "scores": {t: Score(mean=v) for t, v in scores.items()}, "mean": _mean_of(scores),
            "environment": {"legacy_name": plan.baseline_name}})
        ws.update(base, render("history_import.j2", cand=base, source=plan.baseline_source, timestamp="",
                               insights="", baseline=True))
    for entry in plan.candidates:
        name = _snake(entry["name"])
        if name in ws.names():
            plan.problems.append(f"{entry['name']}: listed twice; the second is skipped")
            continue
        scores = entry["scores"]
        cand = Candidate(id=ws.next_id(), name=name, parent=0, proposer="import", status=entry["status"],
                         reasons=[entry["reason"]] if entry["reason"] else [], profile="legacy",
                         scores={t: Score(mean=v) for t, v in scores.items()},
                         mean=_mean_of(scores) if entry["status"] == "ok" else None,
                         environment={"legacy_source": entry["source"], "legacy_timestamp": entry["timestamp"]})
        report = render("history_import.j2", cand=cand, source=entry["source"], timestamp=entry["timestamp"],
                        insights=entry["insights"], baseline=False)
        ws.record(cand, no_code_note(entry["source"]), report)
    if plan.references:
        ws.save_references({n: {t: v for t, v in s.items() if v is not None} for n, s in plan.references.items()})
    return ws, plan

"""Review of a workspace from the terminal: the bodies of `archer log`, `show`, `diff` and `status`.

Each function returns rich renderables (the CLI prints them), so tests can render them to text.
Tested by tests/test_cli_history.py through the real CLI.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from rich.console import Group
from rich.markdown import Markdown
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from agent import table
from agent.errors import ArcherError, WorkspaceError
from agent.history import STATE, Workspace, unified_diff
from agent.records import TASKS, TASK_TITLES, Candidate

SORT_ALIASES = {**{t: t for t in TASKS}, **{TASK_TITLES[t].lower().replace(" ", "_"): t for t in TASKS},
                **{TASK_TITLES[t].lower(): t for t in TASKS}, "id": "id", "mean": "mean"}


def sort_key(text: str) -> str:
    key = SORT_ALIASES.get(text.strip().lower())
    if key is None:
        raise ArcherError(f"--sort {text!r}: use id, mean or a task ({', '.join(TASKS)})")
    return key


RICH_ROWS = 300   # above this many rows `archer log` prints plain text: a rich table of 5,000 rows takes seconds


def log_view(ws: Workspace, *, status: list[str] | None = None, proposer: str | None = None,
             min_mean: float | None = None, sort: str = "id", descending: bool | None = None,
             limit: int | None = None, plain: bool = False) -> Table | Text:
    """The results table; plain text when asked (pipes) or when it has more than RICH_ROWS rows."""
    df = ws.results()
    shown = table.select(df, status=status, proposer=proposer, min_mean=min_mean, sort=sort_key(sort),
                         descending=descending, limit=limit)
    reverted = len(ws.reverted())
    title = (f"{ws.path.name}: {len(shown)} of {len(df)} candidates"
             + (f" ({reverted} reverted, not shown)" if reverted else ""))
    if plain or len(shown) > RICH_ROWS:
        return Text(f"{title}\n{table.plain_text(shown)}")
    return table.rich_table(shown, title=title)


def _score_cell(cand: Candidate, task: str) -> str:
    s = cand.scores.get(task)
    if s is None:
        return "-"
    n = len(s.per_seed)
    return f"{s.mean:.3f} ± {s.std:.3f} (n={n})" if n > 1 else f"{s.mean:.3f}"


def scores_table(cand: Candidate, parent: Candidate | None) -> Table:
    out = Table(header_style="bold", box=None, pad_edge=False)
    out.add_column("task")
    out.add_column("score (mean ± spread over seeds)", justify="right")
    out.add_column(f"parent {parent.id:04d}" if parent else "parent", justify="right")
    out.add_column("Δ", justify="right")
    out.add_column("predicted", justify="right")
    for task in (*TASKS, "mean"):
        if task == "mean":
            mine = f"{cand.mean:.3f} ± {cand.std:.3f}" if cand.mean is not None else "-"
            theirs = parent.mean if parent and parent.mean is not None else None
            value = cand.mean
            predicted = None
        else:
            mine = _score_cell(cand, task)
            s, p = cand.scores.get(task), parent.scores.get(task) if parent else None
            theirs, value = (p.mean if p else None), (s.mean if s else None)
            predicted = cand.predicted.get(task)
        delta = f"{value - theirs:+.3f}" if value is not None and theirs is not None else ""
        out.add_row(TASK_TITLES.get(task, "mean"), mine, f"{theirs:.3f}" if theirs is not None else "-", delta,
                    f"{predicted:.3f}" if predicted is not None else "")
    return out


def show_view(ws: Workspace, id: int, *, diff: bool = True, report: bool = True) -> Group:
    cand = ws.get(id)
    parent = ws.get(cand.parent) if cand.parent is not None else None
    reverted = ws.reverted().get(id)
    head = Text(f"{cand.id:04d} {cand.name}", style="bold")
    facts = [f"status {cand.status}", f"proposer {cand.proposer}"]
    if cand.parent is not None:
        facts.append(f"parent {cand.parent:04d} {parent.name}")
    if cand.profile:
        facts.append(f"profile {cand.profile}, seeds {', '.join(map(str, cand.seeds)) or '-'}")
    if cand.replay_of is not None:
        facts.append(f"replay of {cand.replay_of:04d}" + (f" onto {cand.onto:04d}" if cand.onto is not None else ""))
    parts = [head, Text(" · ".join(facts))]
    if reverted:
        parts.append(Text(f"REVERTED: {reverted}", style="bold red"))
    for r in cand.reasons:
        parts.append(Text(f"{r.code}: {r.message}", style="red"))
    parts.append(scores_table(cand, parent))
    if cand.usage.calls:
        u = cand.usage
        parts.append(Text(f"LLM: {u.calls} calls, {u.prompt_tokens}+{u.completion_tokens} tokens, ${u.cost_usd:.4f}"))
    if report:
        parts.append(Panel(Markdown(ws.report(id)), title="report.md", title_align="left"))
    if diff:
        patch = ws.diff_patch(id)
        parts.append(Panel(Syntax(patch or "(no change)", "diff", word_wrap=True), title="diff.patch", title_align="left"))
    return Group(*parts)


def diff_text(ws: Workspace, n: int, m: int | None = None) -> str:
    """The unified diff from candidate M (default: N's parent) to candidate N."""
    cand = ws.get(n)
    if m is None:
        if cand.parent is None:
            raise WorkspaceError(f"{n:04d} has no parent: name the candidate to compare with (archer diff {n} M)")
        m = cand.parent
    other = ws.get(m)
    return unified_diff(ws.code(m), ws.code(n), f"a/{m:04d}-{other.name}/naive.py", f"b/{n:04d}-{cand.name}/naive.py")


def run_state(ws: Workspace) -> dict | None:
    """The loop's .archer/run.json (pid, started_at, stage, candidate) with `alive` added, or None."""
    path = ws.path / STATE / "run.json"
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return {"alive": False, "stage": "unreadable run.json"}
    pid = state.get("pid")
    alive = False
    if isinstance(pid, int) and pid > 0:
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
    return {**state, "alive": alive}


def _since(stamp: str) -> str:
    try:
        start = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return str(stamp)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    minutes = int((datetime.now(timezone.utc) - start).total_seconds() // 60)
    return f"{stamp} ({minutes // 60} h {minutes % 60} min ago)"


def _candidate_of(cand) -> str:
    if isinstance(cand, dict) and isinstance(cand.get("id"), int):
        return f", candidate {cand['id']:04d} {cand.get('name') or ''}".rstrip()
    return f", candidate {cand}" if cand is not None else ""


def status_view(ws: Workspace) -> Group:
    lines: list = []
    state = run_state(ws)
    if state is None:
        lines.append(Text("not running (no .archer/run.json)"))
    elif state.get("stopped"):
        lines.append(Text(f"not running: the last run (pid {state.get('pid')}, started {state.get('started_at')}) "
                          f"stopped: {state['stopped']}"))
    elif state["alive"]:
        lines.append(Text(f"running: pid {state.get('pid')}, since {_since(state.get('started_at'))}, "
                          f"stage {state.get('stage', '?')}{_candidate_of(state.get('candidate'))}", style="green"))
    else:
        lines.append(Text(f"not running: the last run (pid {state.get('pid')}) died at stage "
                          f"{state.get('stage', '?')}{_candidate_of(state.get('candidate'))}; "
                          "`archer run` resumes it", style="yellow"))
    pending = ws.journal.pending()
    if pending:
        work = Table("work in flight (journal)", "stage", "candidate", box=None, header_style="bold", pad_edge=False)
        for key, entry in pending.items():
            ident = entry.get("id")
            work.add_row(key, str(entry.get("stage", "?")),
                         (f"{ident:04d} " if isinstance(ident, int) else "") + str(entry.get("name", "")))
        lines.append(work)
    df = ws.results()
    counts = df["status"].value_counts().to_dict()
    lines.append(Text(f"{len(df)} candidates: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                      + (f"; {len(ws.reverted())} reverted" if ws.reverted() else "")))
    lines.append(budget_table(ws, len(df), (state or {}).get("budget")))
    best = ws.best()
    if best is not None:
        base = ws.get(0)
        vs = f", {best.mean - base.mean:+.3f} vs baseline" if base.scored and best.id != 0 else ""
        lines.append(Text(f"best so far: {best.id:04d} {best.name}, mean {best.mean:.3f} ± {best.std:.3f}{vs}",
                          style="bold"))
    else:
        lines.append(Text("best so far: nothing scored yet"))
    return Group(*lines)


def budget_table(ws: Workspace, count: int, run: dict | None = None) -> Table:
    """Budgets: the whole search (LLM usage summed over the records), the current run (run.json), the limits."""
    used = ws.usage_totals()
    calls, tokens, cost = used.calls, used.prompt_tokens + used.completion_tokens, used.cost_usd
    run = run if isinstance(run, dict) else {}
    limits = run.get("limits") or ws.config.budget.model_dump()

    def cell(value, fmt: str = "{}") -> str:
        return "-" if value is None else fmt.format(value)

    out = Table("budget", "whole search", "this run", "limit", box=None, header_style="bold", pad_edge=False)
    out.add_row("candidates", str(max(count - 1, 0)), cell(run.get("candidates")), cell(limits.get("candidates")))
    out.add_row("LLM calls", str(calls), cell(run.get("calls")), "-")
    out.add_row("tokens", f"{tokens:,}", cell(run.get("tokens"), "{:,}"), cell(limits.get("tokens"), "{:,}"))
    out.add_row("cost (USD)", f"{cost:.4f}", cell(run.get("cost_usd"), "{:.4f}"), cell(limits.get("cost_usd"), "{:.2f}"))
    out.add_row("wall hours", "-", cell(run.get("hours"), "{:.2f}"), cell(limits.get("wall_hours"), "{:g}"))
    return out

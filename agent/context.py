"""What a proposer sees: the parent, its code and the search so far, rendered once per proposal.

`build_context` reads it from the history (results table with the best per task marked, recent
reports, lessons from failures, calibration of past predictions); both proposers consume it.
Tested by tests/test_loop_context.py.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from pydantic import Field

from agent.prompts import render
from agent.proposal import Proposal
from agent.records import TASKS, TASK_TITLES, Candidate, Strict, Usage

if TYPE_CHECKING:
    from agent.history import Workspace


class ProposalContext(Strict):
    parent: Candidate
    parent_code: str
    baseline: Candidate | None = None
    records: list[Candidate] = Field(default_factory=list)   # every non-reverted candidate, in search order
    table: str = ""                                            # the results table as the LLM reads it
    best_per_task: dict[str, float] = Field(default_factory=dict)
    recent_reports: list[str] = Field(default_factory=list)   # last few insight reports (markdown)
    lessons: list[str] = Field(default_factory=list)          # distilled from failures
    calibration: str = ""                                      # predicted vs measured, past candidates
    existing_names: list[str] = Field(default_factory=list)
    existing_fingerprints: list[str] = Field(default_factory=list)  # normalised-AST hashes of earlier code


class Proposer(Protocol):
    """Both proposers: propose a change of ctx.parent_code; repair one after a failed check or run."""

    def propose(self, ctx: ProposalContext) -> tuple[Proposal, Usage]: ...

    def repair(self, ctx: ProposalContext, proposal: Proposal, failure: str) -> tuple[Proposal, Usage]: ...


TABLE_BEST_ROWS = 30       # with more candidates than fit, the table keeps the best and the latest
TABLE_LATEST_ROWS = 30
CALIBRATION_ROWS = 10
LESSON_EXAMPLES = 3
FAILED = ("rejected", "invalid", "timeout", "oom", "crashed", "nan")
ZH_MARK = "\n# 中文："   # where report_zh.j2's section begins in report.md


def best_per_task(records: list[Candidate]) -> dict[str, float]:
    """The best score of each task (and "mean") among scored candidates."""
    best: dict[str, float] = {}
    for c in records:
        if not c.scored:
            continue
        for key, value in [*((t, s.mean) for t, s in c.scores.items()), ("mean", c.mean)]:
            if key not in best or value > best[key]:
                best[key] = value
    return best


def _cell(value: float | None, best: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}*" if best is not None and value >= best else f"{value:.3f}"


def results_table(records: list[Candidate], *, keep: tuple[int, ...] = (),
                  best_rows: int = TABLE_BEST_ROWS, latest_rows: int = TABLE_LATEST_ROWS) -> str:
    """Every candidate with per-task scores, mean, spread, status and parent; the best per task marked.

    Past best_rows + latest_rows candidates, the table keeps the baseline, the ids in `keep`, the
    best by mean and the latest."""
    best = best_per_task(records)
    shown = records
    if len(records) > best_rows + latest_rows + 1 + len(keep):
        by_mean = sorted((c for c in records if c.scored), key=lambda c: (-c.mean, c.id))[:best_rows]
        ids = {0, *keep, *(c.id for c in by_mean), *(c.id for c in records[-latest_rows:])}
        shown = [c for c in records if c.id in ids]
    rows = [dict(id=f"{c.id:04d}", name=c.name,
                 cells=[_cell(c.scores[t].mean if c.scored and t in c.scores else None, best.get(t)) for t in TASKS],
                 mean=_cell(c.mean if c.scored else None, best.get("mean")),
                 std=f"{c.std:.3f}" if c.scored and len(c.seeds) > 1 else "-",
                 status=c.status if not c.reasons else f"{c.status} ({c.reasons[0].code})",
                 parent="-" if c.parent is None else f"{c.parent:04d}") for c in shown]
    return render("results_table.j2", rows=rows, titles=[TASK_TITLES[t] for t in TASKS],
                  omitted=len(records) - len(shown), best=best_rows, latest=latest_rows).rstrip()


def distill_lessons(records: list[Candidate], examples: int = LESSON_EXAMPLES) -> list[str]:
    """Failures grouped by reason code, most frequent first: count, a few candidates, the latest message."""
    groups: dict[str, list[Candidate]] = {}
    for c in records:
        if c.status in FAILED:
            code = c.reasons[0].code if c.reasons else c.status
            groups.setdefault(code, []).append(c)
    lessons = []
    for code, cands in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        last = cands[-1]
        names = ", ".join(f"{c.id:04d} {c.name}" for c in cands[-examples:])
        message = last.reasons[0].message if last.reasons else last.status
        lessons.append(f"{code} ×{len(cands)} ({last.status}; e.g. {names}): {message}")
    return lessons


def calibration(records: list[Candidate], rows: int = CALIBRATION_ROWS) -> str:
    """Predicted vs measured per task for past scored candidates, with mean absolute and signed error."""
    judged = [c for c in records if c.scored and c.predicted]
    errors = {t: [c.scores[t].mean - c.predicted[t] for c in judged if t in c.predicted and t in c.scores]
              for t in TASKS}
    table = [dict(id=f"{c.id:04d}", name=c.name,
                  cells=[f"{c.predicted[t]:.3f} → {c.scores[t].mean:.3f}" if t in c.predicted and t in c.scores
                         else "-" for t in TASKS]) for c in judged[-rows:]]
    mae = [f"{sum(abs(e) for e in errors[t]) / len(errors[t]):.3f}" if errors[t] else "-" for t in TASKS]
    bias = [f"{sum(errors[t]) / len(errors[t]):+.3f}" if errors[t] else "-" for t in TASKS]
    return render("calibration_table.j2", rows=table, titles=[TASK_TITLES[t] for t in TASKS],
                  mae=mae, bias=bias, n=len(judged)).rstrip()


def english_part(report_md: str) -> str:
    """The English section of a bilingual report (the whole text when it has no Chinese section)."""
    return report_md.split(ZH_MARK, 1)[0].rstrip()


def build_context(workspace: "Workspace", parent: Candidate, *, records: list[Candidate] | None = None,
                  fingerprints: Iterable[str] = (), reports: int = 3) -> ProposalContext:
    """Everything a proposer sees for one proposal from `parent`, read from the workspace.

    `records` (the non-reverted candidates) and `fingerprints` (of every earlier candidate's code)
    may be passed in by a loop that keeps them current, so they are not read again each time."""
    records = workspace.records() if records is None else records
    baseline = next((c for c in records if c.id == 0), None)
    recent = [c for c in records if c.status != "pending"][-reports:] if reports > 0 else []
    return ProposalContext(
        parent=parent, parent_code=workspace.code(parent.id), baseline=baseline, records=records,
        table=results_table(records, keep=(parent.id,)), best_per_task=best_per_task(records),
        recent_reports=[english_part(workspace.report(c.id)) for c in recent],
        lessons=distill_lessons(records), calibration=calibration(records),
        existing_names=sorted(workspace.names()), existing_fingerprints=list(fingerprints),
    )

"""`archer replay`: re-run a recorded candidate (does it reproduce? does it hold on new seeds or another
profile?) or re-apply its change onto another candidate with a three-way merge, and record the outcome
as a new candidate linked to the original. The evaluate function is injected. Tested by
tests/test_history_replay.py.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from agent.config import EvalConfig
from agent.errors import MergeConflict, WorkspaceError
from agent.history import Workspace
from agent.prompts import render
from agent.proposal import unique_name
from agent.records import TASKS, TASK_TITLES, Candidate, EvalResult, Reason
from agent.report import NOISE_PRIOR, SIGNIFICANCE, outcome_rows

Evaluate = Callable[..., EvalResult]


def candidate_from_result(result: EvalResult, **identity) -> Candidate:
    """A Candidate holding an evaluation's outcome; `identity` gives id, name, parent, proposer and links."""
    ok = result.status == "ok"
    reasons = [] if ok else [Reason(code=result.reason or result.status, message=result.message)]
    return Candidate(status=result.status, reasons=reasons, profile=result.profile,
                     model=result.model or "delta_net", seeds=result.seeds, scores=result.scores if ok else {},
                     mean=result.mean if ok else None, std=result.std if ok else 0.0, checks=result.checks,
                     settings=result.settings, timings=result.timings, execution=result.execution,
                     environment=result.environment, log_tail=result.log_tail, **identity)


def merge_onto(ws: Workspace, id: int, onto: int) -> str:
    """N's change (its code against its parent's) applied to candidate `onto` by `git merge-file`."""
    src = ws.get(id)
    if src.parent is None:
        raise WorkspaceError(f"{id:04d} is the baseline: it has no change to re-apply")
    theirs, base, ours = ws.code(id), ws.code(src.parent), ws.code(onto)
    merged, conflicts = ws.merge_file(ours, base, theirs, labels=(f"{onto:04d}", f"{src.parent:04d}", f"{id:04d}"))
    if conflicts:
        raise MergeConflict(conflict_summary(merged, id, onto, conflicts))
    return merged


def conflict_summary(merged: str, id: int, onto: int, count: int) -> str:
    """One line naming the file and the first conflicting hunk: its line and each side's first line."""
    lines = merged.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("<<<<<<<"))
    middle = next(i for i in range(start, len(lines)) if lines[i].startswith("======="))
    end = next(i for i in range(middle, len(lines)) if lines[i].startswith(">>>>>>>"))
    ours = next((x.strip() for x in lines[start + 1:middle] if x.strip()), "(nothing)")
    theirs = next((x.strip() for x in lines[middle + 1:end] if x.strip()), "(nothing)")
    base_marker = next((i for i in range(start, middle) if lines[i].startswith("|||||||")), None)
    if base_marker is not None:
        ours = next((x.strip() for x in lines[start + 1:base_marker] if x.strip()), "(nothing)")
    return (f"naive.py: {count} conflict{'s' if count > 1 else ''} re-applying {id:04d} onto {onto:04d}; "
            f"hunk 1 at line {start + 1}: {onto:04d} has `{ours[:60]}`, {id:04d} wants `{theirs[:60]}`")


def replay_name(ws: Workspace, src: Candidate, onto: int | None) -> str:
    stem = f"{src.name}_onto_{onto:04d}" if onto is not None else f"{src.name}_replay"
    return unique_name(stem, ws.names())


def _claim(ws: Workspace, id: int, onto: int | None, seeds: list[int], profile: str) -> tuple[str, dict]:
    """The journal entry of this replay: an unfinished identical one is taken over (same id and name)."""
    for key, entry in ws.journal.pending().items():
        if entry.get("kind") == "replay" and (entry.get("replay_of"), entry.get("onto"), entry.get("seeds"),
                                              entry.get("profile")) == (id, onto, seeds, profile):
            return key, entry
    new_id = ws.next_id()
    entry = {"kind": "replay", "id": new_id, "name": replay_name(ws, ws.get(id), onto), "stage": "evaluate",
             "replay_of": id, "onto": onto, "seeds": seeds, "profile": profile}
    key = f"replay-{new_id:04d}"
    ws.journal.put(key, entry)
    return key, entry


def replay(ws: Workspace, id: int, *, seeds: list[int] | None = None, profile: str | None = None,
           onto: int | None = None, evaluate: Evaluate | None = None,
           eval_config: EvalConfig | None = None) -> Candidate:
    """Evaluate candidate `id` again (or its change onto `onto`) and record it as a new candidate."""
    if evaluate is None:
        from agent.evaluate import evaluate_code as evaluate
    src = ws.get(id)
    for which in (id, onto):
        if which is not None and not ws.has_code(which):
            raise WorkspaceError(f"{which:04d} has no code (imported from a log): it cannot be replayed or built on")
    if onto is not None:
        ws.get(onto)
        if onto in ws.reverted():
            raise WorkspaceError(f"{onto:04d} is reverted: it cannot take a change")
    code = merge_onto(ws, id, onto) if onto is not None else ws.code(id)
    config = eval_config or ws.config.eval
    seeds = list(seeds or src.seeds or config.seeds)
    profile = profile or src.profile or config.profile
    key, entry = _claim(ws, id, onto, seeds, profile)
    result = evaluate(code, config, seeds=seeds, profile=profile)
    parent = onto if onto is not None else (id if id not in ws.reverted() else src.parent)
    cand = candidate_from_result(result, id=entry["id"], name=entry["name"], parent=parent, proposer="replay",
                                 replay_of=id, onto=onto, predicted={t: s.mean for t, s in src.scores.items()})
    if not cand.profile:
        cand = cand.model_copy(update={"profile": profile, "seeds": seeds})
    ws.record(cand, code, replay_report(ws, cand, src))
    ws.journal.done(key)
    return cand


def replay_report(ws: Workspace, cand: Candidate, src: Candidate) -> str:
    """The bilingual report of a replay: what was re-run and how its scores compare with the original's."""
    onto = ws.get(cand.onto) if cand.onto is not None else None
    reference = onto if onto is not None else src
    baseline = ws.get(0) if 0 in ws.ids() else None
    rows = outcome_rows(cand, src, reference if onto is not None else baseline)
    return render("history_replay.j2", cand=cand, src=src, onto=onto, rows=rows, titles=TASK_TITLES, tasks=TASKS,
                  significance=SIGNIFICANCE, noise_prior=NOISE_PRIOR,
                  same_seeds=sorted(cand.seeds) == sorted(src.seeds) and cand.profile == src.profile)


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None or not text.strip():
        return None
    if not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", text):
        raise WorkspaceError(f"--seeds {text!r}: give comma-separated integers, e.g. 0,1,2")
    return [int(x) for x in text.split(",")]

"""The search loop with the mutate proposer and a deterministic evaluation over a real git workspace."""
import json

import pytest

from agent.budget import Budget
from agent.config import BudgetConfig
from agent.context import distill_lessons
from agent.errors import WorkspaceError
from agent.history import Workspace
from agent.loop import Search
from agent.runner import run_lock, run_search
from agent.mutate import MutateProposer
from agent.parents import eligible
from agent.progress import Progress
from agent.records import EvalResult
from loop_support import fake_evaluate, new_workspace


def search(ws, evaluate=fake_evaluate, candidates=3, **kw):
    budget = Budget(BudgetConfig(candidates=candidates))
    progress = Progress(ws.path / ".archer", budget, live=False)
    with progress:
        return Search(ws, MutateProposer(seed=ws.config.seed), evaluate, budget=budget, progress=progress,
                      **kw).run()


def test_run_scores_the_baseline_then_records_the_budgeted_candidates(tmp_path):
    ws = new_workspace(tmp_path / "ws")
    summary = search(ws, candidates=3)
    assert summary.recorded == [1, 2, 3] and summary.stopped.startswith("budget spent (candidates 3/3)")
    records = ws.records()
    assert [c.id for c in records] == [0, 1, 2, 3]
    assert records[0].status == "ok" and records[0].mean is not None
    assert all(c.proposer == "mutate" and c.mutations and c.status == "ok" for c in records[1:])
    messages = ws.repo.git.log("--format=%s").splitlines()
    assert messages[0].startswith("0003 ") and "vs 000" in messages[0]
    assert any(m.startswith("0000 baseline: mean") for m in messages)
    assert ws.journal.pending() == {}
    assert "# 0000 baseline" in ws.report(0) and "# 中文：0000 baseline" in ws.report(0)


def test_every_report_is_complete_in_both_languages(tmp_path):
    ws = new_workspace(tmp_path / "ws")
    search(ws, candidates=2)
    for c in ws.records()[1:]:
        en, zh = ws.report(c.id).split("# 中文：")
        for heading in ("## Key observations", "## Code issues", "## Technical reasoning", "## Expected per-task",
                        "## Lessons", "## How it builds", "## Name", "## Outcome", "| Memorize |", "vs parent"):
            assert heading in en
        for heading in ("## 实验结果的关键观察", "## 发现的代码问题", "## 修改的技术论证", "## 各任务的预期分数",
                        "## 历史经验", "## 与历史尝试的关系", "## 名称", "## 结果", "| Memorize |", "相对父候选"):
            assert heading in zh
        assert f"{c.mean:.3f}" in en and f"{c.mean:.3f}" in zh


def test_greedy_policy_always_builds_on_the_best_scored_candidate(tmp_path):
    ws = new_workspace(tmp_path / "ws", parents={"policy": "greedy"})
    search(ws, candidates=4)
    records = ws.records()
    for child in records[1:]:
        earlier = eligible([c for c in records if c.id < child.id])
        assert child.parent == max(earlier, key=lambda c: (c.mean, -c.id)).id


def test_reverted_and_failed_candidates_are_never_parents(tmp_path):
    ws = new_workspace(tmp_path / "ws", parents={"policy": "greedy"})
    search(ws, candidates=2)
    best = ws.best()
    ws.revert(best.id, "suspicious result")

    calls = []

    def evaluate(code):
        calls.append(code)
        if len(calls) % 2:
            return EvalResult(status="nan", reason="nan", message="loss became nan")
        return fake_evaluate(code)

    search(ws, evaluate=evaluate, candidates=3)
    records = ws.records()
    assert all(c.parent != best.id for c in records if c.id > 2)
    failed = {c.id for c in records if c.status != "ok"}
    assert failed and all(c.parent not in failed for c in records)


def test_failed_evaluation_is_recorded_with_its_reason_and_log(tmp_path):
    ws = new_workspace(tmp_path / "ws")
    calls = []

    def evaluate(code):
        calls.append(code)
        if len(calls) == 2:
            return EvalResult(status="timeout", reason="timeout", message="killed after 3600 s wall-clock",
                              log_tail="step 1200 loss 2.31\n")
        return fake_evaluate(code)

    search(ws, evaluate=evaluate, candidates=2)
    cand = ws.get(1)
    assert cand.status == "timeout" and cand.mean is None and cand.reasons[0].code == "timeout"
    report = ws.report(1)
    assert "step 1200 loss 2.31" in report and "status **timeout**" in report
    assert len(calls) == 3                   # mutate does not repair a failed evaluation: it moves on
    assert any(lesson.startswith("timeout ×1") for lesson in distill_lessons(ws.records()))


def test_log_file_and_run_state_describe_the_run(tmp_path):
    ws = new_workspace(tmp_path / "ws")
    search(ws, candidates=1)
    log = (ws.path / ".archer" / "run.log").read_text()
    for stage in ("0001 select", "0001 propose", "0001 check", "0001 evaluate", "0001 record"):
        assert stage in log
    state = json.loads((ws.path / ".archer" / "run.json").read_text())
    assert state["stage"] == "stopped" and state["budget"]["candidates"] == 1
    assert state["best"]["id"] == ws.best().id and state["stopped"].startswith("budget spent")


def test_run_search_creates_the_workspace_and_fixes_the_auto_profile(tmp_path):
    summary = run_search(tmp_path / "fresh", overrides=BudgetConfig(candidates=1), evaluate=fake_evaluate,
                         live=False)
    ws = Workspace.open(tmp_path / "fresh")
    assert summary.recorded == [1]
    assert ws.config.eval.profile == "smoke"           # no CUDA here: auto resolves to smoke, kept in archer.toml
    assert "profile = \"smoke\"" in (ws.path / "archer.toml").read_text()


def test_a_second_run_on_the_same_workspace_is_refused(tmp_path):
    ws = new_workspace(tmp_path / "ws")
    with run_lock(ws):
        with pytest.raises(WorkspaceError, match="another `archer run`"):
            run_search(ws.path, overrides=BudgetConfig(candidates=1), evaluate=fake_evaluate, live=False)


def test_wall_time_budget_stops_before_any_new_candidate(tmp_path):
    ws = new_workspace(tmp_path / "ws")
    budget = Budget(BudgetConfig(wall_hours=0.0))
    summary = Search(ws, MutateProposer(), fake_evaluate, budget=budget).run()
    assert summary.recorded == [] and "wall time" in summary.stopped
    assert ws.get(0).status == "ok"           # the baseline is still scored first


def test_work_in_flight_whose_parent_was_reverted_is_rebased_or_dropped(tmp_path):
    ws = new_workspace(tmp_path / "ws")
    search(ws, candidates=1)
    ws.journal.put("cand-0002", {"id": 2, "parent": 1, "stage": "propose", "proposal": None, "repair": None,
                                 "rounds": 0, "duplicate_returned": False, "attempts": [], "usage": {},
                                 "raw": "", "repair_of": None})
    ws.journal.put("cand-0003", {"id": 3, "parent": 1, "stage": "evaluate", "code": ws.code(1) + "\nZ = 1\n",
                                 "proposal": None, "attempts": [], "usage": {}, "raw": "", "repair_of": None})
    ws.revert(1, "found a bug in the evaluation")
    summary = search(ws, candidates=1)
    assert summary.recorded == [2] and ws.get(2).parent == 0
    assert ws.journal.pending() == {} and 3 not in ws.ids()
    assert "0003 dropped: its parent 0001 was reverted" in (ws.path / ".archer" / "run.log").read_text()

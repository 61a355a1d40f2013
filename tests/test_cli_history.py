"""The history commands through the real CLI (typer's CliRunner, and real subprocesses for one-line errors):
init, log, show, diff, status, replay, revert, import, on real workspaces in temporary folders."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.history import Workspace
from agent.records import TASKS, Candidate, EvalResult, Reason, Score, Usage

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "legacy"
BASE = "def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):\n    u = v - k\n    return q, u\n"
runner = CliRunner()


def scored(cand: Candidate, per_task: dict[str, float]) -> Candidate:
    scores = {t: Score(mean=v, std=0.02, per_seed=[v - 0.02, v + 0.02]) for t, v in per_task.items()}
    return cand.model_copy(update={"status": "ok", "scores": scores, "seeds": [0, 1], "profile": "smoke",
                                   "mean": sum(per_task.values()) / len(per_task), "std": 0.01})


@pytest.fixture
def ws(tmp_path):
    ws = Workspace.init(tmp_path / "ws", baseline_code=BASE)
    ws.update(scored(ws.get(0), {t: 0.5 for t in TASKS}))
    good = Candidate(id=1, name="tanh_on_error", parent=0, proposer="mutate", status="ok")
    ws.record(scored(good, {**{t: 0.5 for t in TASKS}, "memorize": 0.9}), BASE.replace("v - k", "torch.tanh(v - k)"),
              "# 0001 tanh_on_error\n\n## English\n\nBounded errors.\n\n## 中文\n\n有界误差。\n")
    llm = Candidate(id=2, name="leaky", parent=1, proposer="llm:gpt-4o", status="ok",
                    usage=Usage(calls=3, prompt_tokens=1000, completion_tokens=234, cost_usd=0.0123))
    ws.record(scored(llm, {**{t: 0.55 for t in TASKS}, "memorize": 0.6}), BASE + "# leak\n", "r\n")
    bad = Candidate(id=3, name="uses_os", parent=1, proposer="mutate", status="rejected",
                    reasons=[Reason(code="static.forbidden_name", message="os")])
    ws.record(bad, "import os\n", "rejected\n")
    return ws


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def archer(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from agent.cli import main; main()", *map(str, args)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}, capture_output=True, text=True)


@pytest.mark.parametrize("command", ["init", "log", "show", "diff", "status", "replay", "revert", "import"])
def test_every_history_command_has_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output


def test_init_creates_a_workspace_and_refuses_an_existing_one_in_one_line(tmp_path):
    created = archer("init", tmp_path / "h")
    assert created.returncode == 0 and (tmp_path / "h" / "candidates" / "0000-baseline" / "naive.py").exists()
    again = archer("init", tmp_path / "h")
    assert again.returncode == 1
    assert again.stdout.strip().count("\n") == 0 and "already holds a workspace" in again.stdout


def test_log_lists_candidates_with_scores_delta_and_status(ws):
    out = invoke("log", ws.path).output
    assert "0002" in out and "leaky" in out and "rejected" in out and "-0.008" in out
    only_ok = invoke("log", ws.path, "--status", "ok", "--proposer", "mutate").output
    assert "tanh_on_error" in only_ok and "leaky" not in only_ok and "uses_os" not in only_ok
    by_memorize = invoke("log", ws.path, "--sort", "memorize", "-n", "2").output
    assert by_memorize.index("tanh_on_error") < by_memorize.index("leaky") and "baseline" not in by_memorize
    assert "baseline" not in invoke("log", ws.path, "--min-mean", "0.55").output


def test_log_prints_plain_text_when_piped_and_a_rich_table_on_request(ws):
    lines = invoke("log", ws.path).output.splitlines()
    assert lines[0] == "ws: 4 of 4 candidates" and lines[1].split()[:3] == ["id", "name", "Compress"]
    assert lines[4].split()[:2] == ["0002", "leaky"] and "-0.008" in lines[4]
    rich = invoke("log", ws.path, "--rich").output
    assert "Δparent" in rich and "CR" in rich.split() and "tanh_on_error" in rich


def test_log_with_an_unknown_sort_is_a_one_line_error(ws):
    done = archer("log", ws.path, "--sort", "speed")
    assert done.returncode == 1 and "--sort 'speed'" in done.stdout and done.stdout.strip().count("\n") == 0


def test_show_prints_scores_with_uncertainty_the_report_and_the_diff(ws):
    out = invoke("show", "1", "--dir", ws.path).output
    assert "0001 tanh_on_error" in out and "0.900 ± 0.020 (n=2)" in out and "+0.400" in out
    assert "Bounded errors." in out and "有界误差" in out and "torch.tanh(v - k)" in out
    missing = archer("show", "42", "--dir", ws.path)
    assert missing.returncode == 1 and "no candidate 0042" in missing.stdout


def test_diff_defaults_to_the_parent_and_takes_another_candidate(ws):
    out = invoke("diff", "2", "--dir", ws.path).output
    assert "a/0001-tanh_on_error/naive.py" in out and "+# leak" in out and "-    u = torch.tanh(v - k)" in out
    out = invoke("diff", "2", "0", "--dir", ws.path).output
    assert "a/0000-baseline/naive.py" in out and "-    u = torch.tanh" not in out
    assert "has no parent" in archer("diff", "0", "--dir", ws.path).stdout


def test_status_shows_the_running_loop_the_journal_budgets_and_the_best(ws):
    assert "not running" in invoke("status", ws.path).output
    (ws.path / ".archer" / "run.json").write_text(json.dumps(
        {"pid": os.getpid(), "started_at": "2026-01-01T00:00:00+00:00", "stage": "evaluate",
         "candidate": {"id": 4, "name": "next_idea", "parent": 1}, "stopped": None,
         "budget": {"candidates": 3, "calls": 7, "tokens": 12345, "cost_usd": 0.5, "hours": 1.5,
                    "limits": {"candidates": 10, "tokens": None, "cost_usd": 2.0, "wall_hours": None}}}))
    ws.journal.put("proposal-0004", {"id": 4, "name": "next_idea", "stage": "evaluate"})
    out = invoke("status", ws.path).output
    assert f"running: pid {os.getpid()}" in out and "stage evaluate, candidate 0004 next_idea" in out
    assert "12,345" in out and "2.00" in out and "1,234" in out and "0.0123" in out
    assert "proposal-0004" in out and "0004 next_idea" in out
    assert "best so far: 0001 tanh_on_error" in out and "4 candidates" in out and "1 rejected" in out
    state = json.loads((ws.path / ".archer" / "run.json").read_text())
    (ws.path / ".archer" / "run.json").write_text(json.dumps({**state, "stopped": "budget: 10 candidates"}))
    assert "stopped: budget: 10 candidates" in invoke("status", ws.path).output


def test_replay_records_a_linked_candidate(ws, monkeypatch):
    seen = []

    def fake_evaluate(code, config, *, seeds=None, profile=None):
        seen.append((code, seeds, profile))
        scores = {t: Score(mean=0.6, std=0.0, per_seed=[0.6] * len(seeds)) for t in TASKS}
        return EvalResult(status="ok", profile=profile, seeds=seeds, scores=scores, mean=0.6)

    monkeypatch.setattr("agent.evaluate.evaluate_code", fake_evaluate)
    result = invoke("replay", "1", "--dir", ws.path, "--seeds", "3,4", "--profile", "quick")
    assert result.exit_code == 0 and "0004 tanh_on_error_replay: mean 0.600" in result.output
    assert seen == [(ws.code(1), [3, 4], "quick")]
    replayed = Workspace.open(ws.path).get(4)
    assert (replayed.replay_of, replayed.parent, replayed.proposer) == (1, 1, "replay")


def test_revert_removes_the_candidate_from_the_log_and_twice_is_an_error(ws):
    result = invoke("revert", "2", "--reason", "overfits the seed", "--dir", ws.path)
    assert result.exit_code == 0 and "Revert 0002-leaky: overfits the seed" in result.output
    assert "leaky" not in invoke("log", ws.path).output
    assert "REVERTED: overfits the seed" in invoke("show", "2", "--dir", ws.path, "--no-diff").output
    twice = archer("revert", "2", "--reason", "again", "--dir", ws.path)
    assert twice.returncode == 1 and "already reverted" in twice.stdout
    assert "cannot be reverted" in archer("revert", "0", "-r", "x", "--dir", ws.path).stdout


def test_import_reads_logs_into_a_workspace_and_names_what_it_could_not_read(tmp_path):
    logs = sorted(FIXTURES.glob("*.log"))
    result = invoke("import", *logs, "--into", tmp_path / "old")
    assert result.exit_code == 0 and "imported 8 candidates and 1 reference models" in result.output
    assert "could not read: 05_no_table.log: no results table found" in result.output
    out = invoke("log", tmp_path / "old", "--sort", "mean", "-n", "1").output
    assert "softmax_normalised" in out

"""Crash recovery: a real subprocess kills itself (SIGKILL) at each step of recording, then a new one
reopens the workspace, resumes from the journal, and nothing is lost or recorded twice."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from agent.history import CRASH_ENV, CRASH_STEPS, Workspace
from agent.records import TASKS, Candidate, Score

ROOT = Path(__file__).resolve().parent.parent
BASE = "def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):\n    return q, k\n"

SEARCH = """
import sys
from agent.history import Workspace
from agent.records import TASKS, Candidate, Score

ws = Workspace.open(sys.argv[1])
for key, entry in ws.journal.pending().items():
    ws.record(Candidate.model_validate(entry["candidate"]), entry["code"], entry["report"])
    ws.journal.done(key)
name = sys.argv[2]
cand = Candidate(id=ws.next_id(), name=name, parent=0, proposer="mutate", status="ok", mean=0.6,
                 scores={t: Score(mean=0.6) for t in TASKS})
key = f"record-{cand.id:04d}"
ws.journal.put(key, {"id": cand.id, "stage": "record", "candidate": cand.model_dump(mode="json"),
                     "code": f"# {name}\\n", "report": f"report of {name}\\n"})
ws.record(cand, f"# {name}\\n", f"report of {name}\\n")
ws.journal.done(key)
"""


def run_search(path: Path, name: str, crash_at: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    done = subprocess.run([sys.executable, "-c", SEARCH, str(path), name], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr[-2000:]
    return done.returncode


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_a_search_killed_while_recording_resumes_without_loss_or_duplicates(tmp_path, step):
    ws = Workspace.init(tmp_path / "ws", baseline_code=BASE)
    ws.update(ws.get(0).model_copy(update={"status": "ok", "mean": 0.5,
                                           "scores": {t: Score(mean=0.5) for t in TASKS}}))
    assert run_search(ws.path, "first", crash_at=step) == -signal.SIGKILL
    assert run_search(ws.path, "second") == 0

    ws = Workspace.open(ws.path)
    assert ws.repairs == []
    assert [(c.id, c.name) for c in ws.records()] == [(0, "baseline"), (1, "first"), (2, "second")]
    assert [len(ws.commits_of(i)) for i in (1, 2)] == [1, 1]
    assert ws.code(1) == "# first\n" and ws.report(1) == "report of first\n"
    assert pd.read_csv(ws.path / "results.csv")["id"].tolist() == [0, 1, 2]
    assert ws.journal.pending() == {}
    assert not ws.repo.is_dirty(untracked_files=True)
    assert not (ws.path / ".git" / "index.lock").exists()
    subjects = ws.repo.git.log("--format=%s").splitlines()
    assert sum(s.startswith("0001 first") for s in subjects) == 1


def test_a_crash_during_revert_is_rolled_back_on_open(tmp_path):
    ws = Workspace.init(tmp_path / "ws", baseline_code=BASE)
    ws.record(Candidate(id=1, name="x", parent=0, proposer="mutate", status="ok", mean=0.6), "# x\n", "r")
    script = "import sys; from agent.history import Workspace; Workspace.open(sys.argv[1]).revert(1, 'oops')"
    env = {**os.environ, CRASH_ENV: "add"}
    done = subprocess.run([sys.executable, "-c", script, str(ws.path)], cwd=ROOT, env=env, capture_output=True)
    assert done.returncode == -signal.SIGKILL
    ws = Workspace.open(ws.path)
    assert ws.repairs and ws.ids() == [0, 1] and ws.reverted() == {}
    assert not ws.repo.is_dirty(untracked_files=True)
    ws.revert(1, "oops")
    assert ws.reverted() == {1: "oops"}

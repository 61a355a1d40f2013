"""The git-backed workspace on real repositories in temporary folders: init, record, update, revert, open."""
import json

import pandas as pd
import pytest

from agent.errors import CandidateNotFound, WorkspaceError
from agent.history import Workspace
from agent.records import TASKS, Candidate, Reason, Score
from agent.table import COLUMNS

BASE = "def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):\n    return q, k\n"


def scored(cand: Candidate, mean: float) -> Candidate:
    return cand.model_copy(update={"status": "ok", "mean": mean,
                                   "scores": {t: Score(mean=mean, std=0.01, per_seed=[mean]) for t in TASKS}})


def child(ws: Workspace, name: str, parent: int, mean: float | None = None, **kw) -> Candidate:
    cand = Candidate(id=ws.next_id(), name=name, parent=parent, proposer="mutate", **{"status": "ok", **kw})
    return scored(cand, mean) if mean is not None else cand


@pytest.fixture
def ws(tmp_path):
    ws = Workspace.init(tmp_path / "ws", baseline_code=BASE)
    ws.update(scored(ws.get(0), 0.5))
    return ws


def subjects(ws: Workspace) -> list[str]:
    return ws.repo.git.log("--format=%s").splitlines()


def test_init_creates_a_repository_with_config_results_and_pending_baseline(tmp_path):
    ws = Workspace.init(tmp_path / "ws", baseline_code=BASE)
    root = tmp_path / "ws"
    assert (root / ".git").is_dir() and (root / "archer.toml").exists()
    assert sorted(p.name for p in (root / "candidates" / "0000-baseline").iterdir()) == [
        "candidate.json", "diff.patch", "naive.py", "report.md"]
    base = ws.get(0)
    assert (base.name, base.status, base.parent, base.proposer) == ("baseline", "pending", None, "baseline")
    assert ws.code(0) == BASE
    assert "## English" in ws.report(0) and "## 中文" in ws.report(0)
    df = pd.read_csv(root / "results.csv")
    assert list(df.columns) == COLUMNS and df["id"].tolist() == [0]
    assert subjects(ws) == ["0000 baseline: pending (not yet evaluated)"]
    assert not ws.repo.is_dirty(untracked_files=True)


def test_init_refuses_a_folder_that_already_holds_a_workspace(ws):
    with pytest.raises(WorkspaceError, match="already holds a workspace"):
        Workspace.init(ws.path, baseline_code=BASE)


def test_record_makes_one_commit_with_the_candidate_folder_and_a_notebook_line(ws):
    cand = child(ws, "tanh_on_error", 0, 0.55)
    ws.record(cand, BASE.replace("q, k", "q, v"), "# report\n")
    assert subjects(ws)[0] == "0001 tanh_on_error: mean 0.550, +0.050 vs 0000"
    changed = ws.repo.git.show("--name-only", "--format=", "HEAD").split()
    assert sorted(changed) == sorted([f"candidates/0001-tanh_on_error/{f}" for f in
                                      ("candidate.json", "diff.patch", "naive.py", "report.md")] + ["results.csv"])
    patch = ws.diff_patch(1)
    assert "-    return q, k" in patch and "+    return q, v" in patch
    assert ws.get(1) == cand
    df = pd.read_csv(ws.path / "results.csv")
    assert df.set_index("id").loc[1, "Memorize"] == pytest.approx(0.55)
    assert not ws.repo.is_dirty(untracked_files=True)


def test_rejected_candidates_are_recorded_with_their_reason(ws):
    cand = child(ws, "uses_os", 0, status="rejected",
                 reasons=[Reason(code="static.forbidden_name", message="os is not allowed")])
    ws.record(cand, "import os\n", "rejected\n")
    assert subjects(ws)[0] == "0001 uses_os: rejected (static.forbidden_name)"
    row = pd.read_csv(ws.path / "results.csv").set_index("id").loc[1]
    assert row["status"] == "rejected" and pd.isna(row["mean"])


def test_recording_the_same_candidate_twice_commits_once(ws):
    cand = child(ws, "again", 0, 0.6)
    ws.record(cand, BASE, "r")
    ws.record(cand, BASE, "r")
    assert len(ws.commits_of(1)) == 1 and ws.ids() == [0, 1]


def test_a_used_id_or_name_is_refused(ws):
    ws.record(child(ws, "first", 0, 0.6), BASE, "r")
    with pytest.raises(WorkspaceError, match="already exists"):
        ws.record(Candidate(id=1, name="other", parent=0, proposer="mutate", status="ok"), BASE, "r")
    with pytest.raises(WorkspaceError, match="already used"):
        ws.record(child(ws, "first", 0, 0.6), BASE, "r")
    with pytest.raises(CandidateNotFound):
        ws.record(child(ws, "orphan", 42, 0.6), BASE, "r")


def test_revert_leaves_table_and_parents_but_keeps_history(ws):
    ws.record(child(ws, "good", 0, 0.6), BASE, "r1")
    ws.record(child(ws, "leaky", 1, 0.9), BASE + "# leak\n", "r2")
    ws.record(child(ws, "later", 1, 0.61), BASE, "r3")
    ws.revert(2, "reads the labels")
    assert ws.reverted() == {2: "reads the labels"}
    assert [c.id for c in ws.records()] == [0, 1, 3]
    assert [c.id for c in ws.records(include_reverted=True)] == [0, 1, 2, 3]
    assert ws.get(2).mean == 0.9 and ws.code(2).endswith("# leak\n")
    assert pd.read_csv(ws.path / "results.csv")["id"].tolist() == [0, 1, 3]
    assert not (ws.path / "candidates" / "0002-leaky").exists()
    assert subjects(ws)[0] == "Revert 0002-leaky: reads the labels"
    assert "0002 leaky: mean 0.900, +0.300 vs 0001" in subjects(ws)
    assert ws.next_id() == 4 and "leaky" in ws.names()
    with pytest.raises(CandidateNotFound):
        ws.record(child(ws, "child_of_reverted", 2, 0.5), BASE, "r")
    reopened = Workspace.open(ws.path)
    assert reopened.reverted() == {2: "reads the labels"} and reopened.repairs == []


def test_reverting_twice_or_the_baseline_is_an_error(ws):
    ws.record(child(ws, "x", 0, 0.6), BASE, "r")
    ws.revert(1, "bad idea")
    with pytest.raises(WorkspaceError, match="already reverted"):
        ws.revert(1, "again")
    with pytest.raises(WorkspaceError, match="baseline"):
        ws.revert(0, "no")
    with pytest.raises(CandidateNotFound):
        ws.revert(7, "missing")


def test_update_rewrites_the_record_in_its_own_commit(tmp_path):
    ws = Workspace.init(tmp_path / "ws", baseline_code=BASE)
    ws.update(scored(ws.get(0), 0.42), "# scored baseline\n")
    assert subjects(ws)[0] == "0000 baseline: mean 0.420 (updated)"
    assert Workspace.open(ws.path).get(0).mean == 0.42 and ws.report(0) == "# scored baseline\n"
    assert len(ws.commits_of(0)) == 2


def test_open_names_a_missing_or_corrupt_workspace(tmp_path):
    with pytest.raises(WorkspaceError, match="not an archer workspace"):
        Workspace.open(tmp_path / "nowhere")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "archer.toml").write_text("")
    with pytest.raises(WorkspaceError, match="not a git repository"):
        Workspace.open(tmp_path / "bare")
    ws = Workspace.init(tmp_path / "ws", baseline_code=BASE)
    (ws.path / "archer.toml").write_text("[eval]\nprofile = 3\nbogus = 1\n")
    with pytest.raises(WorkspaceError, match="archer.toml"):
        Workspace.open(ws.path)


def test_open_repairs_a_stale_lock_a_half_written_folder_and_a_stale_csv(ws):
    half = ws.path / "candidates" / "0001-half"
    half.mkdir()
    (half / "naive.py").write_text("partial")
    (ws.path / ".git" / "index.lock").write_text("")
    (ws.path / "results.csv").write_text("id,name\n")
    reopened = Workspace.open(ws.path)
    assert len(reopened.repairs) == 2
    assert not half.exists() and not (ws.path / ".git" / "index.lock").exists()
    assert pd.read_csv(ws.path / "results.csv")["id"].tolist() == [0]
    reopened.record(child(reopened, "after_repair", 0, 0.5), BASE, "r")
    assert reopened.ids() == [0, 1]


def test_open_regenerates_a_committed_csv_that_lost_rows(ws):
    ws.record(child(ws, "kept", 0, 0.6), BASE, "r")
    (ws.path / "results.csv").write_text((ws.path / "results.csv").read_text().splitlines()[0] + "\n")
    ws.repo.git.commit("-q", "-am", "hand edit")
    reopened = Workspace.open(ws.path)
    assert reopened.repairs == ["regenerated results.csv"]
    assert pd.read_csv(ws.path / "results.csv")["id"].tolist() == [0, 1]
    assert not reopened.repo.is_dirty()


def test_next_id_skips_ids_claimed_by_the_journal(ws):
    ws.journal.put("proposal-0001", {"id": 1, "stage": "evaluate"})
    assert ws.next_id() == 2


def test_best_is_the_highest_scored_candidate(ws):
    ws.record(child(ws, "a", 0, 0.7), BASE, "r")
    ws.record(child(ws, "b", 0, status="crashed", reasons=[Reason(code="crashed", message="boom")]), BASE, "r")
    assert ws.best().id == 1
    assert json.loads((ws.path / "reverted.json").read_text()) == {}


def test_a_second_process_that_reverted_is_seen_by_the_next_record(ws):
    ws.record(child(ws, "a", 0, 0.6), BASE, "r")
    ws.record(child(ws, "b", 0, 0.7), BASE, "r")
    ws.records()
    other = Workspace.open(ws.path)
    other.revert(1, "seen elsewhere")
    ws.record(child(ws, "c", 2, 0.65), BASE, "r")
    assert pd.read_csv(ws.path / "results.csv")["id"].tolist() == [0, 2, 3]
    assert [c.id for c in ws.records()] == [0, 2, 3] and ws.next_id() == 4


def test_updating_with_unchanged_content_makes_no_empty_commit(ws):
    before = len(ws.commits_of(0))
    ws.update(ws.get(0))
    assert len(ws.commits_of(0)) == before


def test_a_hand_edit_rolled_back_by_repair_is_kept_as_a_copy(ws):
    report = ws.path / "candidates" / "0000-baseline" / "report.md"
    report.write_text("my notes\n")
    reopened = Workspace.open(ws.path)
    assert reopened.repairs and "recovered" in reopened.repairs[0]
    assert report.read_text() != "my notes\n"
    copies = list((ws.path / ".archer" / "recovered").rglob("report.md"))
    assert [c.read_text() for c in copies] == ["my notes\n"]


def test_init_in_a_folder_with_files_leaves_them_outside_the_workspace(tmp_path):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "README.md").write_text("the project's note about this folder\n")
    ws = Workspace.init(tmp_path / "ws")
    assert ws.repo.git.status("--porcelain") == ""
    assert "README.md" not in ws.repo.git.ls_files().split()
    Workspace.open(tmp_path / "ws")
    assert (tmp_path / "ws" / "README.md").read_text() == "the project's note about this folder\n"

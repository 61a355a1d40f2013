"""`replay`: re-running a candidate, or its change onto another, recorded as a new linked candidate.

The evaluation is injected: a fake that records what it was asked and returns a canned EvalResult."""
import pytest

from agent.errors import MergeConflict, WorkspaceError
from agent.history import Workspace
from agent.records import TASKS, Candidate, EvalResult, Score
from agent.replay import parse_seeds, replay

BASE = """def helper(x):
    return x


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    u = v - k
    o = q + u
    return o, u
"""


class FakeEvaluate:
    def __init__(self, mean=0.6, status="ok"):
        self.calls = []
        self.mean, self.status = mean, status

    def __call__(self, code, config, *, seeds=None, profile=None):
        self.calls.append({"code": code, "seeds": seeds, "profile": profile})
        if self.status != "ok":
            return EvalResult(status=self.status, reason=self.status, message="killed at the limit",
                              profile=profile, seeds=seeds)
        scores = {t: Score(mean=self.mean, std=0.01, per_seed=[self.mean] * len(seeds)) for t in TASKS}
        return EvalResult(status="ok", profile=profile, seeds=seeds, scores=scores, mean=self.mean, model="delta_net")


def scored(cand: Candidate, mean: float) -> Candidate:
    return cand.model_copy(update={"status": "ok", "mean": mean, "profile": "smoke", "seeds": [0, 1],
                                   "scores": {t: Score(mean=mean, std=0.01, per_seed=[mean, mean]) for t in TASKS}})


@pytest.fixture
def ws(tmp_path):
    ws = Workspace.init(tmp_path / "ws", baseline_code=BASE)
    ws.update(scored(ws.get(0), 0.5))
    tanh = Candidate(id=1, name="tanh_on_error", parent=0, proposer="mutate", status="ok")
    ws.record(scored(tanh, 0.6), BASE.replace("u = v - k", "u = torch.tanh(v - k)"), "r")
    helper = Candidate(id=2, name="helper_doubles", parent=0, proposer="mutate", status="ok")
    ws.record(scored(helper, 0.55), BASE.replace("return x\n", "return 2 * x\n"), "r")
    return ws


def test_replay_reproduces_with_the_same_seeds_and_links_the_original(ws):
    fake = FakeEvaluate(mean=0.61)
    cand = replay(ws, 1, evaluate=fake)
    assert fake.calls == [{"code": ws.code(1), "seeds": [0, 1], "profile": "smoke"}]
    stored = ws.get(cand.id)
    assert (stored.id, stored.name, stored.parent, stored.proposer, stored.replay_of, stored.onto) == (
        3, "tanh_on_error_replay", 1, "replay", 1, None)
    assert stored.mean == pytest.approx(0.61) and ws.code(3) == ws.code(1)
    report = ws.report(3)
    assert "does it reproduce?" in report and "结果能否复现" in report and "0.610" in report
    assert ws.repo.git.log("-1", "--format=%s") == "0003 tanh_on_error_replay: mean 0.610, +0.010 vs 0001"
    assert ws.journal.pending() == {}


def test_replay_with_new_seeds_and_profile_asks_whether_it_holds(ws):
    fake = FakeEvaluate()
    replay(ws, 1, seeds=[5, 6, 7], profile="quick", evaluate=fake)
    replay(ws, 1, seeds=[8], evaluate=fake)
    assert [(c["seeds"], c["profile"]) for c in fake.calls] == [([5, 6, 7], "quick"), ([8], "smoke")]
    assert ws.get(4).name == "tanh_on_error_replay_2" and ws.get(3).seeds == [5, 6, 7]
    assert "does it hold?" in ws.report(3)


def test_replay_onto_reapplies_the_change_with_a_three_way_merge(ws):
    fake = FakeEvaluate()
    cand = replay(ws, 1, onto=2, evaluate=fake)
    merged = fake.calls[0]["code"]
    assert "return 2 * x" in merged and "u = torch.tanh(v - k)" in merged
    stored = ws.get(cand.id)
    assert (stored.name, stored.parent, stored.replay_of, stored.onto) == ("tanh_on_error_onto_0002", 2, 1, 2)
    assert "+    u = torch.tanh(v - k)" in ws.diff_patch(cand.id) and "three-way merge" in ws.report(cand.id)


def test_replay_onto_a_conflicting_candidate_names_the_file_and_hunk_and_records_nothing(ws):
    clash = Candidate(id=3, name="relu_on_error", parent=0, proposer="mutate", status="ok")
    ws.record(scored(clash, 0.5), BASE.replace("u = v - k", "u = torch.relu(v - k)"), "r")
    with pytest.raises(MergeConflict) as err:
        replay(ws, 1, onto=3, evaluate=FakeEvaluate())
    message = str(err.value)
    assert "naive.py" in message and "hunk 1 at line" in message and "torch.relu" in message and "torch.tanh" in message
    assert "\n" not in message and ws.ids() == [0, 1, 2, 3] and ws.journal.pending() == {}


def test_a_failed_replay_is_recorded_with_its_status(ws):
    cand = replay(ws, 1, evaluate=FakeEvaluate(status="timeout"))
    stored = ws.get(cand.id)
    assert stored.status == "timeout" and stored.reasons[0].code == "timeout" and stored.mean is None
    assert "0004" not in ws.repo.git.log("-1", "--format=%s") and "timeout" in ws.repo.git.log("-1", "--format=%s")


def test_an_interrupted_replay_is_taken_over_with_the_same_id(ws):
    def interrupted(code, config, *, seeds=None, profile=None):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        replay(ws, 1, evaluate=interrupted)
    assert [e["id"] for e in ws.journal.pending().values()] == [3]
    cand = replay(ws, 1, evaluate=FakeEvaluate())
    assert (cand.id, cand.name) == (3, "tanh_on_error_replay") and ws.journal.pending() == {}


def test_replaying_the_baseline_onto_something_or_a_missing_candidate_is_an_error(ws):
    with pytest.raises(WorkspaceError, match="baseline"):
        replay(ws, 0, onto=1, evaluate=FakeEvaluate())
    with pytest.raises(WorkspaceError, match="seeds"):
        parse_seeds("1,x")
    assert parse_seeds(" 1, 2 ") == [1, 2]


@pytest.mark.slow
def test_replay_with_the_real_smoke_worker_reproduces_the_scores(tmp_path):
    from agent.config import Config, EvalConfig
    from agent.evaluate import evaluate_code
    from agent.replay import candidate_from_result

    config = Config(eval=EvalConfig(profile="smoke", device="cpu", seeds=[0]))
    ws = Workspace.init(tmp_path / "ws", config)
    first = evaluate_code(ws.code(0), config.eval)
    assert first.status == "ok", first.message
    ws.update(candidate_from_result(first, id=0, name="baseline", parent=None, proposer="baseline"))
    again = replay(ws, 0)
    assert again.status == "ok" and again.replay_of == 0 and again.seeds == [0]
    assert {t: s.mean for t, s in again.scores.items()} == pytest.approx({t: s.mean for t, s in first.scores.items()})

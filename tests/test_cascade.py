"""The evaluation cascade: its gates as pure functions, and the pipelined loop running it stage by stage.

The loop's tests inject a run function that scores code from its hash (no training): the point is which
stages each candidate reaches, what is recorded, and that a run abandoned between stages resumes there.
"""
import os
import signal
import threading
from collections import Counter

import pytest

from agent import cascade
from agent.budget import Budget
from agent.config import BudgetConfig, EvalConfig
from agent.errors import ConfigError
from agent.executor import LocalExecutor
from agent.mutate import MutateProposer
from agent.pipeline import PipelinedSearch
from agent.progress import Progress
from agent.records import TASKS, Candidate, EvalResult, Score
from loop_support import fake_evaluate, new_workspace

CASCADE = {"profile": "screen", "cascade": ["quick", "screen", "mad"]}


def result(profile: str, mean: float, status: str = "ok") -> EvalResult:
    if status != "ok":
        return EvalResult(status=status, reason=status, message="no scores", profile=profile)
    scores = {t: Score(mean=mean, per_seed=[mean]) for t in TASKS}
    return EvalResult(status="ok", profile=profile, seeds=[0], scores=scores, mean=mean)


def parent_with(**means: float) -> Candidate:
    """A parent that went through the cascade with these six-task means per profile."""
    config = EvalConfig(**CASCADE)
    results = [result(p, means[p]) for p in cascade.stages(config) if p in means]
    decisions = [cascade.Decision(None, "cascade.complete", "")] * len(results)
    main = cascade.combine(config, results, decisions)
    return Candidate(id=3, name="parent", parent=0, proposer="mutate", status="ok", profile=main.profile,
                     scores=main.scores, mean=main.mean, execution=main.execution)


def test_quick_rules_out_a_candidate_worse_than_its_parent_beyond_the_noise():
    config, parent = EvalConfig(**CASCADE), parent_with(quick=0.60, screen=0.66)
    worse = cascade.decide(config, [result("quick", 0.50)], parent)
    assert worse.next is None and worse.code == "cascade.ruled_out"
    assert "0.500 vs parent 0003's 0.600" in worse.message and "not evaluated on screen" in worse.message
    close = cascade.decide(config, [result("quick", 0.58)], parent)
    assert close.next == "screen" and close.code == "cascade.promoted"


def test_the_verification_stage_is_only_for_candidates_that_beat_their_parent_beyond_the_noise():
    config, parent = EvalConfig(**CASCADE), parent_with(quick=0.60, screen=0.66)
    done = [result("quick", 0.61)]
    better = cascade.decide(config, done + [result("screen", 0.72)], parent)
    assert better.next == "mad" and better.code == "cascade.verified"
    level = cascade.decide(config, done + [result("screen", 0.68)], parent)
    assert level.next is None and level.code == "cascade.not_better"
    wider = EvalConfig(**CASCADE, cascade_sigmas=5.0)
    assert cascade.decide(wider, done + [result("screen", 0.72)], parent).code == "cascade.not_better"


def test_a_failed_stage_stops_and_the_last_stage_completes():
    config, parent = EvalConfig(**CASCADE), parent_with(quick=0.60, screen=0.66)
    assert cascade.decide(config, [result("quick", 0, "timeout")], parent).code == "cascade.failed"
    done = [result("quick", 0.7), result("screen", 0.8), result("mad", 0.8)]
    assert cascade.decide(config, done, parent).code == "cascade.complete"


def test_without_a_parent_score_the_candidate_goes_on_but_is_not_verified():
    config = EvalConfig(**CASCADE)
    first = cascade.decide(config, [result("quick", 0.6)], None)
    assert first.next == "screen" and first.code == "cascade.no_reference"
    second = cascade.decide(config, [result("quick", 0.6), result("screen", 0.6)], None)
    assert second.next is None and "not verified on mad" in second.message


def test_a_ruled_out_candidate_is_recorded_with_its_quick_scores_and_where_it_stopped():
    config, parent = EvalConfig(**CASCADE), parent_with(quick=0.60, screen=0.66)
    results = [result("quick", 0.5)]
    record = cascade.combine(config, results, [cascade.decide(config, results, parent)])
    info = record.execution["cascade"]
    assert record.profile == "quick" and record.mean == 0.5
    assert info["stopped_at"] == "quick" and info["scored_on"] == "quick" and info["complete"] is False
    assert info["stages"][0]["decision"] == "cascade.ruled_out"
    cand = Candidate(id=4, name="c", parent=3, proposer="mutate", status="ok", profile=record.profile,
                     mean=record.mean, execution=record.execution)
    assert not cascade.complete(cand)


def test_a_verified_candidate_keeps_its_screen_scores_in_the_table_and_its_mad_scores_beside_them():
    config, parent = EvalConfig(**CASCADE), parent_with(quick=0.60, screen=0.66)
    results = [result("quick", 0.61), result("screen", 0.72), result("mad", 0.75)]
    decisions = [cascade.decide(config, results[:i + 1], parent) for i in range(3)]
    record = cascade.combine(config, results, decisions)
    info = record.execution["cascade"]
    assert record.profile == "screen" and record.mean == 0.72
    assert [s["profile"] for s in info["stages"]] == ["quick", "screen", "mad"]
    assert info["stages"][2]["mean"] == 0.75 and info["complete"] is True
    assert cascade.reference(Candidate(id=5, name="v", parent=3, proposer="mutate", status="ok",
                                       profile="screen", mean=0.72, execution=record.execution),
                             "mad").mean == 0.75


def test_an_unknown_cascade_profile_is_a_one_line_error():
    with pytest.raises(ConfigError, match="eval.cascade: unknown profile 'quik'"):
        cascade.stages(EvalConfig(cascade=["quik", "screen"]))


def scored_run(calls: Counter):
    def run(job, gpu, on_start):
        calls[job.key] += 1
        out = fake_evaluate(job.code).model_dump()
        out["profile"] = job.profile
        return out
    return run


class CountingProposer(MutateProposer):
    calls = 0

    def propose(self, ctx):
        CountingProposer.calls += 1
        return super().propose(ctx)


def pipelined(ws, executor, candidates, proposer=None):
    budget = Budget(BudgetConfig(candidates=candidates))
    with Progress(ws.path / ".archer", budget, live=False) as progress:
        return PipelinedSearch(ws, proposer or MutateProposer(seed=ws.config.seed), executor, budget=budget,
                               progress=progress).run()


def test_the_loop_runs_each_stage_only_for_the_candidates_its_gate_admits(tmp_path):
    ws = new_workspace(tmp_path / "ws", eval=CASCADE)
    calls: Counter = Counter()
    with LocalExecutor([None, None], run=scored_run(calls)) as ex:
        pipelined(ws, ex, candidates=8)
    records = {c.id: c for c in ws.records()}
    assert calls["cand-0000:quick"] == calls["cand-0000:screen"] == 1 and not calls["cand-0000:mad"]
    codes = Counter()
    for cand in list(records.values())[1:]:
        info = cand.execution["cascade"]
        stages = [s["profile"] for s in info["stages"]]
        assert [calls[f"cand-{cand.id:04d}:{p}"] for p in ("quick", "screen", "mad")] == \
            [1 if p in stages else 0 for p in ("quick", "screen", "mad")]
        decision = info["stages"][-1]["decision"]
        codes[decision] += 1
        parent = records[cand.parent]
        assert cascade.complete(parent)              # a ruled-out candidate is never a parent
        if decision == "cascade.ruled_out":
            assert stages == ["quick"] and cand.profile == "quick"
            assert cand.mean < cascade.reference(parent, "quick").mean
        else:
            assert "screen" in stages and cand.profile == "screen"
        if "mad" in stages:
            assert cand.mean > cascade.reference(parent, "screen").mean
    assert codes["cascade.ruled_out"] >= 1 and codes["cascade.ruled_out"] < 8


def test_a_run_abandoned_between_stages_resumes_at_the_next_stage(tmp_path):
    ws = new_workspace(tmp_path / "ws", eval=CASCADE)
    calls: Counter = Counter()
    cancelled = threading.Event()
    score = scored_run(calls)

    class Cancellable(LocalExecutor):
        def cancel(self):
            cancelled.set()
            super().cancel()

    def run(job, gpu, on_start):
        if job.profile == "screen" and job.key != "cand-0000:screen" and not abandoned:
            abandoned.append(job.key.split(":")[0])
            calls[job.key] += 1
            os.kill(os.getpid(), signal.SIGTERM)     # abandoned while this stage runs
            cancelled.wait(60)
            return EvalResult(status="crashed", reason="killed", message="abandoned").model_dump()
        return score(job, gpu, on_start)

    abandoned: list[str] = []
    CountingProposer.calls = 0
    with Cancellable([None], run=run) as ex:
        first = pipelined(ws, ex, candidates=4, proposer=CountingProposer(seed=0))
    assert first.signal == signal.SIGTERM
    key = abandoned[0]
    assert [s["profile"] for s in ws.journal.pending()[key]["stages"]] == ["quick"]

    with LocalExecutor([None], run=score) as ex:
        second = pipelined(ws, ex, candidates=4, proposer=CountingProposer(seed=0))
    id = int(key.split("-")[1])
    assert id in second.recorded and ws.journal.pending() == {}
    assert calls[f"{key}:quick"] == 1 and calls[f"{key}:screen"] == 2
    assert CountingProposer.calls == len(ws.records()) - 1      # no proposal asked for twice
    assert [s["profile"] for s in ws.get(id).execution["cascade"]["stages"]][:2] == ["quick", "screen"]

"""Spare workers (sandbox.isolation.Spares, Worker): started ahead of their job, they take it over stdin and
answer like a worker started for it; hostile candidates stay contained in them; dead, stale, unneeded or
left-over spares go away. Real worker processes on the CPU."""
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.config import Config
from agent.executor import LocalExecutor, make_executor
from agent.slots import Job
from corpus_support import load_corpus
from sandbox import isolation
from sandbox.isolation import Spares, Worker, run_isolated

BASELINE = Path(__file__).resolve().parent.parent / "sandbox" / "naive.py"
CORPUS = Path(__file__).resolve().parent / "corpus"
PLACEMENT = dict(device="cpu", memory_mb=4096, output_mb=1)
CHECKS = dict(extra_args=("--checks-only",), timeout_s=300, **PLACEMENT)
CANARY = "sk-canary-spares-0123456789"


def wait_until(predicate, timeout_s=180.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_a_spare_takes_the_job_and_answers_like_a_worker_started_for_it():
    spares = Spares(delay_s=0)
    try:
        spares.start(**PLACEMENT)
        first = spares.waiting()[0]
        wait_until(first.ready)
        on_spare = run_isolated(BASELINE, spares=spares, **CHECKS)
        fresh = run_isolated(BASELINE, **CHECKS)
        assert on_spare["status"] == fresh["status"] == "ok", on_spare["message"] + on_spare["log_tail"]
        assert on_spare["execution"]["isolation"]["worker"] == "spare"
        assert on_spare["execution"]["isolation"]["pid"] == first.proc.pid
        assert on_spare["execution"]["spare"]["waited_s"] >= 0
        assert fresh["execution"]["isolation"]["worker"] == "started for the job"
        assert [c["name"] for c in on_spare["checks"]] == [c["name"] for c in fresh["checks"]]
        assert not first.workdir.exists()
        wait_until(lambda: spares.waiting())          # its replacement, for the next job
        assert spares.waiting()[0].proc.pid != first.proc.pid
    finally:
        left = spares.waiting()
        spares.close()
    assert left and all(gone(w.proc.pid) and not w.workdir.exists() for w in left)


def test_a_spare_trains_to_the_same_scores_as_a_fresh_worker():
    """What a spare ran ahead (the baseline, a tiny training) leaves no trace in the job's scores (CPU: exact)."""
    job = dict(extra_args=("--tasks", "context_recall,memorize", "--max-steps", "8"), timeout_s=300, **PLACEMENT)
    spares = Spares(delay_s=3600)
    try:
        spares.start(**PLACEMENT)
        wait_until(spares.waiting()[0].ready)
        on_spare = run_isolated(BASELINE, spares=spares, **job)
    finally:
        spares.close()
    fresh = run_isolated(BASELINE, **job)
    assert on_spare["status"] == fresh["status"] == "ok", on_spare["message"] + on_spare["log_tail"]
    assert on_spare["execution"]["isolation"]["worker"] == "spare"
    assert on_spare["scores"] == fresh["scores"] and on_spare["scores"]
    assert [s["accuracy"] for s in on_spare["settings"]] == [s["accuracy"] for s in fresh["settings"]]


def test_hostile_candidates_on_spares_end_as_on_fresh_workers(monkeypatch):
    """The isolation layer's corpus cases (processes, files, network, the API key, output floods, memory,
    hangs, exits) handed to spares started before the candidate existed."""
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    cases = [c for c in load_corpus() if c.layer == "isolation" and not c.gpu]
    assert len(cases) >= 8
    spares = Spares(delay_s=0)

    def evaluate(case):
        hangs = case.status == "timeout"
        return run_isolated(case.path, spares=spares, extra_args=("--checks-only",), timeout_s=40 if hangs else 300,
                            cpu_s=10 if hangs else None, **PLACEMENT)

    try:
        for _ in range(4):
            spares.start(**PLACEMENT)
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = dict(zip([c.name for c in cases], pool.map(evaluate, cases)))
    finally:
        spares.close()
    for case in cases:
        r = results[case.name]
        assert r["execution"]["isolation"]["worker"] == "spare", case.name
        assert r["status"] == case.status and (not case.reason or r["reason"] == case.reason), \
            f"{case.name}: expected {case.status} {case.reason}, got {r['status']} {r['reason']}: {r['message']}"
    assert CANARY not in json.dumps(results)
    assert not [c.escape for c in cases if c.escape and Path(c.escape).exists()]


def test_a_dead_or_stale_spare_is_not_handed_the_job(monkeypatch):
    spares = Spares(delay_s=3600)
    try:
        spares.start(**PLACEMENT)
        dead = spares.waiting()[0]
        isolation.kill_group(dead.proc.pid)
        dead.proc.wait()
        result = run_isolated(BASELINE, spares=spares, **CHECKS)
        assert result["status"] == "ok" and result["execution"]["isolation"]["worker"] == "started for the job"
        assert not dead.workdir.exists()

        spares.start(**PLACEMENT)
        stale = spares.waiting()[0]
        monkeypatch.setattr(isolation, "sandbox_fingerprint", lambda: (("worker.py", 0),))  # the code changed
        result = run_isolated(BASELINE, spares=spares, **CHECKS)
        assert result["status"] == "ok" and result["execution"]["isolation"]["worker"] == "started for the job"
        assert gone(stale.proc.pid) and not stale.workdir.exists()

        spares.start(**{**PLACEMENT, "memory_mb": 2048})          # started for another placement
        other = spares.waiting()[0]
        result = run_isolated(BASELINE, spares=spares, **CHECKS)
        assert result["execution"]["isolation"]["worker"] == "started for the job"
        assert spares.waiting() == [other] and other.proc.poll() is None
    finally:
        spares.close()


def test_a_spare_exits_by_itself_when_its_controller_goes_and_refuses_a_malformed_job():
    unneeded = Worker(None, **PLACEMENT)
    malformed = Worker(None, **PLACEMENT)
    try:
        unneeded.proc.stdin.close()                    # what a dead controller's pipe looks like
        assert unneeded.proc.wait(timeout=180) == 0
        malformed.proc.stdin.write(b'{"argv": "eval"}\n')
        malformed.proc.stdin.close()
        assert malformed.proc.wait(timeout=180) != 0
        assert "expected a JSON list of `eval` arguments" in (malformed.workdir / "log.txt").read_text()
    finally:
        unneeded.close()
        malformed.close()


def test_local_executor_starts_a_spare_per_slot_and_hands_it_each_job():
    """Each job goes to a spare started ahead (the first at the executor's start, the next after each job),
    and closing the executor leaves no spare behind."""
    code = (CORPUS / "returns_one_tensor.py").read_text()    # fails a dynamic check in a worker, quickly
    job = Job(key="spare-test", code=code, profile="smoke", seeds=(0,), device="cpu", timeout_s=300)
    executor = LocalExecutor([None], spares=True, device="cpu")
    executor.spares.delay_s = 0
    try:
        assert "spare worker started ahead" in executor.describe()
        results = [executor.submit(job).result(timeout=300) for _ in range(2)]
        wait_until(lambda: executor.spares.waiting())
        left = executor.spares.waiting()
    finally:
        executor.close()
    assert [r.status for r in results] == ["invalid", "invalid"]
    assert [r.execution["isolation"]["worker"] for r in results] == ["spare", "spare"]
    assert all(gone(w.proc.pid) for w in left)


@pytest.mark.parametrize("device, setting, expected", [("cpu", None, False), ("cpu", True, True)])
def test_spares_are_on_where_the_slots_have_gpus_unless_configured(device, setting, expected):
    config = Config.model_validate({"eval": {"device": device}, "executor": {"spare_workers": setting}})
    executor = make_executor(config)
    try:
        assert (executor.spares is not None) == expected
    finally:
        executor.close()


def test_no_room_for_a_worker_is_a_one_line_failure_with_or_without_spares(monkeypatch, tmp_path):
    """A full or missing temporary directory: no spare starts, and the job's result says why in one line."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    spares = Spares(delay_s=0)
    try:
        spares.start(**PLACEMENT)
        assert spares.waiting() == []
        for use in (spares, None):
            result = run_isolated(BASELINE, spares=use, **CHECKS)
            assert (result["status"], result["reason"]) == ("crashed", "spawn_failed")
            assert "could not start the worker" in result["message"] and "\n" not in result["message"]
    finally:
        spares.close()


@pytest.mark.gpu
def test_a_spare_on_the_gpu_starts_cuda_and_the_kernels_before_its_job():
    spares = Spares(delay_s=3600)
    try:
        spares.start(device="cuda", gpu="0")
        spare = spares.waiting()[0]
        wait_until(spare.ready, timeout_s=600)     # a cold kernel cache compiles here, before the job
        result = run_isolated(BASELINE, device="cuda", gpu="0", spares=spares, extra_args=("--checks-only",),
                              timeout_s=300)
    finally:
        spares.close()
    assert result["status"] == "ok", result["message"] + result["log_tail"]
    assert result["execution"]["isolation"]["worker"] == "spare" and result["execution"]["device"] == "cuda"
    assert "spare worker ready" in result["log_tail"] and "fused kernels ready" in result["log_tail"]

"""The local executor (slots, GPU pinning, a hung worker killed, cancellation) and the pipelined loop on it.

Real isolated workers where the worker is the point; an injected run function (no training) where the
scheduling is: which slot, how many at once, in which order results are recorded.
"""
import os
import signal
import threading
from pathlib import Path

import pytest

from agent.budget import Budget
from agent.config import BudgetConfig, ExecutorConfig, load_config
from agent.errors import ConfigError
from agent.executor import Job, LocalExecutor, executor_overrides, local_slots, run_job, visible_gpus
from agent.runner import open_workspace
from agent.mutate import MutateProposer
from agent.pipeline import PipelinedSearch
from agent.progress import Progress
from loop_support import fake_evaluate, new_workspace

BASELINE = (Path(__file__).resolve().parent.parent / "sandbox" / "naive.py").read_text()
HANGS = BASELINE.replace("    B, H, L, Dk = q.shape\n", "    while True:\n        q = q + 0\n    B, H, L, Dk = q.shape\n", 1)
NOT_FINITE = BASELINE.replace("    return o, S\n", "    return o * float(\"nan\"), S\n", 1)


def job(key, code=BASELINE, profile="smoke", timeout_s=300.0):
    return Job(key=key, code=code, profile=profile, seeds=(0,), device="cpu", timeout_s=timeout_s)


def fake_run(job, gpu, on_start):
    """The worker's result without a worker: fake_evaluate's scores, tagged with the profile."""
    result = fake_evaluate(job.code).model_dump()
    result["profile"] = job.profile
    return result


def test_slots_are_gpus_times_per_gpu_and_one_without_a_gpu():
    assert local_slots(ExecutorConfig(), "auto", gpus=["0", "1"]) == ["0", "1"]
    assert local_slots(ExecutorConfig(per_gpu=2), "auto", gpus=["0", "1"]) == ["0", "0", "1", "1"]
    assert local_slots(ExecutorConfig(gpus=[1]), "auto", gpus=["4", "6"]) == ["6"]
    assert local_slots(ExecutorConfig(), "auto", gpus=[]) == [None]
    assert local_slots(ExecutorConfig(), "cpu", gpus=["0", "1"]) == [None]
    with pytest.raises(ConfigError, match="GPU 2 is not visible"):
        local_slots(ExecutorConfig(gpus=[2]), "auto", gpus=["0", "1"])
    with pytest.raises(ConfigError, match="no GPU is visible"):
        local_slots(ExecutorConfig(), "cuda", gpus=[])


def test_slots_follow_the_controllers_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert local_slots(ExecutorConfig(), "auto") == ["3", "5"]


def test_jobs_run_at_once_each_pinned_to_its_own_gpu():
    both_running = threading.Barrier(2, timeout=60)
    seen = []

    def run(job, gpu, on_start):
        seen.append((job.key, gpu))
        both_running.wait()              # returns only when the two jobs run at the same time
        return fake_run(job, gpu, on_start)

    with LocalExecutor(["0", "1"], run=run) as ex:
        futures = [ex.submit(job("a")), ex.submit(job("b"))]
        results = [f.result() for f in futures]
    assert sorted(gpu for _, gpu in seen) == ["0", "1"]
    assert {r.execution["gpu"] for r in results} == {"0", "1"}
    assert all(r.execution["executor"] == "local" and r.status == "ok" for r in results)


def test_jobs_beyond_the_slots_wait_for_a_free_one():
    lock, running, peak = threading.Lock(), [0], [0]
    release = threading.Event()

    def run(job, gpu, on_start):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(60)
        with lock:
            running[0] -= 1
        return fake_run(job, gpu, on_start)

    with LocalExecutor(["0", "1"], run=run) as ex:
        futures = [ex.submit(job(str(i))) for i in range(5)]
        release.set()
        assert all(f.result().status == "ok" for f in futures)
    assert peak[0] == 2


def test_a_hung_worker_is_killed_at_its_timeout_while_the_other_slot_finishes():
    with LocalExecutor([None, None]) as ex:
        hung = ex.submit(job("hung", HANGS, timeout_s=5))
        other = ex.submit(job("other", NOT_FINITE))
        hung_result, other_result = hung.result(), other.result()
    assert hung_result.status == "timeout" and hung_result.reason == "timeout"
    assert other_result.status == "invalid" and "finite" in other_result.reason + other_result.message


def test_cancel_kills_the_running_worker_and_drops_the_queued_jobs():
    started = threading.Event()
    pids = []

    def run(job, gpu, on_start):
        def note(pid):
            pids.append(pid)
            on_start(pid)
            started.set()
        return run_job(job, gpu, note)

    ex = LocalExecutor([None], run=run)
    running = ex.submit(job("running", HANGS, timeout_s=300))
    queued = ex.submit(job("queued", HANGS, timeout_s=300))
    assert started.wait(120)
    ex.cancel()
    ex.close()
    assert running.result().status != "ok"            # the worker died without sending a result
    assert queued.cancelled()
    with pytest.raises(ProcessLookupError):
        os.killpg(pids[0], 0)


def pipelined(ws, executor, candidates, **kw):
    budget = Budget(BudgetConfig(candidates=candidates))
    with Progress(ws.path / ".archer", budget, live=False) as progress:
        return PipelinedSearch(ws, MutateProposer(seed=ws.config.seed), executor, budget=budget,
                               progress=progress, **kw).run()


def test_pipelined_search_keeps_slots_plus_lookahead_in_flight_and_records_in_id_order(tmp_path):
    ws = new_workspace(tmp_path / "ws", executor={"lookahead": 2})
    lock, in_flight, peak = threading.Lock(), [0], [0]
    window_full = threading.Event()

    class Watching(LocalExecutor):
        def submit(self, job):
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
                if in_flight[0] == 4:
                    window_full.set()
            return super().submit(job)

    def run(job, gpu, on_start):
        if job.key != "cand-0000:smoke":
            assert window_full.wait(60)      # nothing finishes before the loop has filled its window
        with lock:
            in_flight[0] -= 1
        return fake_run(job, gpu, on_start)

    with Watching([None, None], run=run) as ex:
        summary = pipelined(ws, ex, candidates=6)
    assert summary.recorded == [1, 2, 3, 4, 5, 6] and summary.stopped == "budget spent (candidates 6/6)"
    assert peak[0] == 4                       # 2 slots + lookahead 2, never more
    ids = [int(m[:4]) for m in ws.repo.git.log("--format=%s", "--reverse").splitlines() if m[:4].isdigit()]
    assert ids == sorted(ids)
    assert [c.id for c in ws.records()] == [0, 1, 2, 3, 4, 5, 6]
    assert all(c.status == "ok" and c.profile == "smoke" for c in ws.records())
    assert ws.journal.pending() == {}


def test_results_arriving_out_of_order_are_committed_in_id_order(tmp_path):
    ws = new_workspace(tmp_path / "ws", executor={"lookahead": 0})
    first_may_finish = threading.Event()

    def run(job, gpu, on_start):
        if job.key == "cand-0001:smoke":
            first_may_finish.wait(60)    # 0001 finishes only after 0002 has
        elif job.key == "cand-0002:smoke":
            first_may_finish.set()
        return fake_run(job, gpu, on_start)

    with LocalExecutor([None, None], run=run) as ex:
        summary = pipelined(ws, ex, candidates=2)
    assert summary.recorded == [1, 2]
    messages = ws.repo.git.log("--format=%s").splitlines()
    assert messages[0].startswith("0002 ") and messages[1].startswith("0001 ")


def test_a_job_the_executor_lost_is_recorded_as_crashed_and_the_search_goes_on(tmp_path):
    ws = new_workspace(tmp_path / "ws")

    def run(job, gpu, on_start):
        if job.key == "cand-0001:smoke":
            raise RuntimeError("node lost")
        return fake_run(job, gpu, on_start)

    with LocalExecutor([None], run=run) as ex:
        summary = pipelined(ws, ex, candidates=2)
    assert summary.recorded == [1, 2]
    lost, fine = ws.get(1), ws.get(2)
    assert lost.status == "crashed" and lost.reasons[0].code == "executor_error"
    assert "node lost" in lost.reasons[0].message and "RuntimeError" in lost.log_tail
    assert fine.status == "ok"


def test_first_ctrl_c_finishes_the_evaluations_in_flight_then_stops(tmp_path):
    ws = new_workspace(tmp_path / "ws", executor={"lookahead": 1})
    submitted = []

    def run(job, gpu, on_start):
        submitted.append(job.key)
        if job.key == "cand-0002:smoke":
            os.kill(os.getpid(), signal.SIGINT)
        return fake_run(job, gpu, on_start)

    with LocalExecutor([None, None], run=run) as ex:
        summary = pipelined(ws, ex, candidates=20)
    assert summary.signal is None and summary.stopped.startswith("stopped by Ctrl-C")
    assert summary.recorded == list(range(1, len(submitted)))      # everything submitted was recorded
    assert len(submitted) - 1 < 20 and ws.journal.pending() == {}


def test_executor_options_are_checked_and_saved_in_archer_toml(tmp_path):
    assert executor_overrides() is None
    assert executor_overrides("ray", "auto").model_dump(exclude_unset=True) == {"kind": "ray", "address": "auto"}
    with pytest.raises(ConfigError, match="--executor slurm: expected local or ray"):
        executor_overrides("slurm")
    with pytest.raises(ConfigError, match="--gpus first: expected GPU indices"):
        executor_overrides(gpus="first")
    new_workspace(tmp_path / "ws", executor={"lookahead": 3})
    ws = open_workspace(tmp_path / "ws", executor=executor_overrides(gpus="0,1"))
    assert ws.config.executor == ExecutorConfig(gpus=[0, 1], lookahead=3)
    assert load_config(tmp_path / "ws" / "archer.toml").executor.gpus == [0, 1]
    ws = open_workspace(tmp_path / "ws", executor=executor_overrides(gpus="all"))
    assert ws.config.executor.gpus is None and ws.config.executor.lookahead == 3


@pytest.mark.gpu
def test_on_gpus_each_worker_sees_only_the_gpu_of_its_slot():
    gpus = visible_gpus()
    jobs = [Job(key=f"gpu-{g}", code=BASELINE, profile="smoke", seeds=(0,), device="cuda") for g in gpus]
    with LocalExecutor(gpus) as ex:
        results = [f.result() for f in [ex.submit(j) for j in jobs]]
    assert all(r.status == "ok" for r in results), [r.message for r in results]
    assert sorted(r.execution["isolation"]["gpu"] for r in results) == sorted(gpus)
    with LocalExecutor(["99"]) as ex:             # a GPU that does not exist: the worker sees none
        missing = ex.submit(Job(key="none", code=BASELINE, profile="smoke", seeds=(0,), device="cuda")).result()
    assert missing.status != "ok" and "CUDA" in missing.message + missing.log_tail

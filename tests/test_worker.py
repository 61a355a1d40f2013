"""The worker end to end (real subprocesses) and its mapping of failures to statuses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agent.records import EvalResult
from sandbox import worker
from sandbox.tasks import baseline_setting
from sandbox.train import NonFiniteLoss, Outcome, Run

ROOT = Path(__file__).resolve().parent.parent
NON_CAUSAL = '''import torch


def delta_rule_chunkwise(q, k, v, beta, chunk_size=32):
    o = v.flip(2).cumsum(2).flip(2) * beta[..., None] + q.sum(-1, keepdim=True) * k.sum(-1, keepdim=True)
    return o, torch.einsum("bhld,bhle->bhde", k, v)
'''


def run_worker(tmp_path, *args) -> dict:
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, "-m", "sandbox", "eval", "--device", "cpu", "--out", str(out), *args],
                   cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    return json.loads(out.read_text())


def test_worker_scores_the_baseline_and_writes_a_valid_result(tmp_path):
    raw = run_worker(tmp_path, "--candidate", str(ROOT / "sandbox" / "naive.py"), "--profile", "smoke",
                     "--tasks", "memorize", "--seeds", "0")
    result = EvalResult.model_validate(raw)
    assert result.status == "ok", result.message
    assert list(result.scores) == ["memorize"] and result.scores["memorize"].mean > 0.5
    assert result.settings[0].valid_accuracy > 0 and result.settings[0].steps > 0
    assert 0 < result.settings[0].whole_set_accuracy <= 1 and list(result.whole_set_accuracy) == ["memorize"]
    assert [c.name for c in result.checks][-1] == "trains" and all(c.passed for c in result.checks)
    assert result.execution["device"] == "cpu" and result.execution["cuda_graphs"] is False
    assert result.execution["kernels"] == [] and result.timings["kernels_s"] >= 0, "the CPU keeps the torch ops"
    assert result.environment["torch"] and result.timings["train_s"] > 0
    assert "memorize" in result.log_tail and len(result.candidate_sha256) == 64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_worker_trains_through_the_fused_kernels_behind_its_guard(tmp_path):
    """Compiled before the guard, launched after it (no compiler may start then), and said so in the result."""
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, "-m", "sandbox", "eval", "--device", "cuda", "--out", str(out), "--candidate",
                    str(ROOT / "sandbox" / "naive.py"), "--profile", "smoke", "--seeds", "0"],
                   cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT), "TRITON_CACHE_DIR": str(tmp_path / "k")},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    result = EvalResult.model_validate(json.loads(out.read_text()))
    assert result.status == "ok", result.message
    assert "conv_heads:float32" in result.execution["kernels"] and not result.execution["kernels_fallback"]
    assert result.scores["context_recall"].mean > 0.5


def test_max_steps_overrides_the_profiles_cap_and_is_recorded(tmp_path):
    raw = run_worker(tmp_path, "--candidate", str(ROOT / "sandbox" / "naive.py"), "--profile", "smoke",
                     "--tasks", "memorize", "--seeds", "0", "--max-steps", "8")
    result = EvalResult.model_validate(raw)
    assert result.status == "ok" and result.execution["max_steps"] == 8
    assert [s.steps for s in result.settings] == [8]      # 256 examples at batch 32: 8 steps an epoch


def test_deterministic_flag_reaches_the_worker_through_the_executors_job(tmp_path):
    """[eval] deterministic travels in the Job to the worker, which records it; the CPU's torch settings are
    left alone (it repeats bit for bit without them)."""
    from agent.config import EvalConfig
    from agent.slots import Job
    from sandbox.isolation import run_isolated
    code = (ROOT / "sandbox" / "naive.py").read_text()
    for flag in (True, False):
        kwargs = Job.of(f"det-{flag}", code, EvalConfig(profile="smoke", device="cpu",
                                                         deterministic=flag)).isolated_kwargs()
        kwargs["extra_args"] += ("--tasks", "memorize", "--max-steps", "8")     # a short run
        result = run_isolated(code, **kwargs)
        assert result["status"] == "ok", result.get("message")
        assert result["execution"]["deterministic"] is flag
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_deterministic_cuda_evaluation_repeats_bit_for_bit(tmp_path):
    scores = []
    for n in range(2):
        out = tmp_path / f"result{n}.json"
        subprocess.run([sys.executable, "-m", "sandbox", "eval", "--device", "cuda", "--out", str(out), "--candidate",
                        str(ROOT / "sandbox" / "naive.py"), "--profile", "smoke", "--seeds", "0", "--deterministic"],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        result = EvalResult.model_validate(json.loads(out.read_text()))
        assert result.status == "ok" and result.execution["deterministic"] and result.execution["cuda_graphs"]
        scores.append([(s.task, s.setting, s.accuracy, s.valid_accuracy, s.steps) for s in result.settings])
    assert scores[0] == scores[1]


def test_worker_stops_at_the_first_failed_check(tmp_path):
    (tmp_path / "candidate.py").write_text(NON_CAUSAL)
    result = EvalResult.model_validate(run_worker(tmp_path, "--candidate", "candidate.py", "--profile", "smoke"))
    assert (result.status, result.reason) == ("invalid", "causality")
    assert result.checks[-1].name == "causality" and not result.checks[-1].passed
    assert result.scores == {} and result.settings == []


def call_main(tmp_path, monkeypatch, error: BaseException) -> dict:
    def failing(args, device, log):
        log("training ...")
        raise error
    monkeypatch.setattr(worker, "evaluate", failing)
    out = tmp_path / "r.json"
    rc = worker.main(["eval", "--candidate", "x.py", "--device", "cpu", "--profile", "smoke", "--out", str(out)])
    result = json.loads(out.read_text())
    assert rc == 1 and result["profile"] == "smoke" and result["environment"]["torch"]
    EvalResult.model_validate(result)
    return result


@pytest.mark.parametrize("error, status", [
    (NonFiniteLoss("non-finite training loss in memorize/baseline at epoch 3"), "nan"),
    (MemoryError(), "oom"),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
    (ValueError("shapes do not match"), "crashed"),
])
def test_training_failures_become_statuses(tmp_path, monkeypatch, error, status):
    result = call_main(tmp_path, monkeypatch, error)
    assert result["status"] == status


def test_a_crash_keeps_the_traceback_in_the_log_tail(tmp_path, monkeypatch):
    result = call_main(tmp_path, monkeypatch, ValueError("shapes do not match"))
    assert result["message"] == "ValueError: shapes do not match"
    assert "Traceback" in result["log_tail"] and "shapes do not match" in result["log_tail"]


def outcome(task, seed, lr, acc, valid):
    return Outcome(Run(baseline_setting(task), seed, lr, 0.0), accuracy=acc, whole_set_accuracy=acc / 2,
                   token_accuracy=acc, valid_accuracy=valid, steps=10, best_step=10, seconds=1.0)


def test_summary_keeps_the_best_validation_run_per_setting_and_spreads_over_seeds():
    outcomes = [outcome("memorize", 0, 1e-3, 0.9, valid=0.8), outcome("memorize", 0, 1e-4, 0.95, valid=0.7),
                outcome("memorize", 1, 1e-3, 0.5, valid=0.5), outcome("memorize", 1, 1e-4, 0.7, valid=0.6),
                outcome("compress", 0, 1e-3, 0.4, valid=0.4), outcome("compress", 1, 1e-3, 0.2, valid=0.2)]
    s = worker.summarize(outcomes, [0, 1])
    assert s["scores"]["memorize"]["per_seed"] == [0.9, 0.7]         # chosen on validation, not test
    assert s["whole_set_accuracy"]["memorize"]["per_seed"] == pytest.approx([0.45, 0.35])
    assert s["scores"]["memorize"]["std"] == pytest.approx(0.1414, abs=1e-3)
    assert s["mean"] == pytest.approx((0.9 + 0.4 + 0.7 + 0.2) / 4)
    assert s["std"] == pytest.approx(0.1414, abs=1e-3)               # spread of the per-seed two-task means
    assert len(s["settings"]) == 6
    assert [r["whole_set_accuracy"] for r in s["settings"]] == pytest.approx([o.accuracy / 2 for o in outcomes])

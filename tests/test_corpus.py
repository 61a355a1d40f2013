"""The corpus of hostile or broken candidates, end to end: every file ends with the status and reason
its header declares, nothing escapes (files, the API key), and the evaluator still scores the
baseline afterwards. Real worker processes through run_isolated, several at a time."""
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from corpus_support import load_corpus
from sandbox.isolation import run_isolated
from sandbox.result import STATUSES
from sandbox.static_checks import check_static, first_failure

CASES = load_corpus()
CPU_CASES = [c for c in CASES if not c.gpu]
GPU_CASES = [c for c in CASES if c.gpu]
CANARY = "sk-canary-corpus-0123456789"
BASELINE = Path(__file__).resolve().parent.parent / "sandbox" / "naive.py"
HANGING_TIMEOUT_S = 40     # wall clock for cases expected to hang; their CPU time is capped lower
HANGING_CPU_S = 10
TIMEOUT_S = 300            # for the others, which end on their own


def test_corpus_has_thirty_cases_with_declared_outcomes():
    assert len(CPU_CASES) >= 30 and GPU_CASES
    for case in CASES:
        assert case.description and case.status in STATUSES and case.status != "ok", case
        assert case.reason or case.status in ("timeout", "oom"), case
    layers = {c.layer for c in CPU_CASES}
    assert layers == {"static", "dynamic", "isolation"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_static_layer_catches_exactly_the_static_cases(case):
    failed = first_failure(check_static(case.code))
    if case.layer == "static":
        assert failed is not None and failed.reason == case.reason, failed
        assert failed.message.startswith("line ") and "\n" not in failed.message
    else:
        assert failed is None, f"{case.name} is meant to slip past the static checks: {failed}"


def evaluate(case, device="cpu"):
    hangs = case.status == "timeout"
    return run_isolated(case.path, device=device, extra_args=("--checks-only",), memory_mb=4096, output_mb=1,
                        timeout_s=HANGING_TIMEOUT_S if hangs else TIMEOUT_S, cpu_s=HANGING_CPU_S if hangs else None)


def assert_outcome(case, result):
    got = f"{result['status']} {result['reason']}: {result['message']}"
    explain = f"{case.name}: expected {case.status} {case.reason}, got {got}\n{result['log_tail'][-800:]}"
    assert result["status"] == case.status and (not case.reason or result["reason"] == case.reason), explain
    assert result["message"] and "\n" not in result["message"], case.name


def test_whole_corpus_ends_contained_and_the_next_candidate_evaluates(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    escapes = [c.escape for c in CPU_CASES if c.escape]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip([c.name for c in CPU_CASES], pool.map(evaluate, CPU_CASES)))
    failures = []
    for case in CPU_CASES:
        try:
            assert_outcome(case, results[case.name])
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n\n".join(failures)
    assert CANARY not in json.dumps(results)
    assert not [p for p in escapes if Path(p).exists()]
    after = run_isolated(BASELINE, device="cpu", extra_args=("--checks-only",), memory_mb=4096, timeout_s=TIMEOUT_S)
    assert after["status"] == "ok", after["message"]


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=[c.name for c in GPU_CASES])
def test_gpu_case_ends_contained(case):
    assert_outcome(case, evaluate(case, device="cuda"))


@pytest.mark.gpu
def test_baseline_passes_the_checks_on_the_gpu_inside_the_isolation():
    result = run_isolated(BASELINE, device="cuda", extra_args=("--checks-only",), timeout_s=TIMEOUT_S)
    assert result["status"] == "ok", result["message"] + result["log_tail"]
    assert result["execution"]["device"] == "cuda"

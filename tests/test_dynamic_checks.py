"""Dynamic checks in-process: the baseline and the token recurrence pass every check, each broken
corpus candidate fails the check its header names, and out-of-memory is handed to the worker."""
import shutil

import pytest
import torch

from corpus_support import load_corpus
from sandbox import dynamic_checks, guard
from sandbox.dynamic_checks import CHECKS, run_dynamic_checks
from sandbox.naive import delta_rule_chunkwise
from sandbox.reference import delta_rule_recurrence

DYNAMIC = [c for c in load_corpus() if c.layer == "dynamic"]


def load(case, tmp_path):
    shutil.copy(case.path, tmp_path / "candidate.py")
    return guard.load_candidate(tmp_path / "candidate.py")


def test_baseline_passes_every_check():
    findings = run_dynamic_checks(delta_rule_chunkwise, "cpu")
    assert [f["name"] for f in findings] == [c.__name__.removeprefix("check_") for c in CHECKS]
    assert all(f["passed"] for f in findings), findings
    assert set(findings[0]) == {"name", "passed", "reason", "message", "seconds"}


@pytest.mark.slow
def test_token_by_token_recurrence_passes_every_check():
    def recurrence(q, k, v, beta, chunk_size=32):
        return delta_rule_recurrence(q, k, v, beta)

    assert all(f["passed"] for f in run_dynamic_checks(recurrence, "cpu"))


@pytest.mark.parametrize("case", DYNAMIC, ids=[c.name for c in DYNAMIC])
def test_broken_candidate_fails_its_check(case, tmp_path):
    findings = run_dynamic_checks(load(case, tmp_path), "cpu")
    assert all(f["passed"] for f in findings[:-1])
    last = findings[-1]
    assert not last["passed"] and last["reason"] == case.reason, last
    assert last["message"] and "\n" not in last["message"]


def test_a_candidate_that_raises_is_named_by_its_line(tmp_path):
    case = next(c for c in DYNAMIC if c.name == "raises_name_error")
    message = run_dynamic_checks(load(case, tmp_path), "cpu")[-1]["message"]
    assert "NameError" in message and "candidate line 29" in message and "undefined_scale" in message


def test_causality_names_the_first_position_that_saw_the_future():
    def leaks_from_position_40(q, k, v, beta, chunk_size=32):
        o, S = delta_rule_chunkwise(q, k, v, beta, chunk_size)
        return o + 0.5 * torch.cat([o[:, :, :20] * 0, v[:, :, 40:41].expand(-1, -1, 44, -1)], dim=2), S

    finding = run_dynamic_checks(leaks_from_position_40, "cpu")[-1]
    assert finding["reason"] == "causality"
    assert "positions >= 31" in finding["message"] and "at position 20" in finding["message"]


def test_out_of_memory_goes_to_the_worker_with_the_check_named():
    def hungry(q, k, v, beta, chunk_size=32):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 TB")

    with pytest.raises(MemoryError, match="shapes: the candidate ran out of memory"):
        run_dynamic_checks(hungry, "cpu")


def test_sandbox_violation_is_its_own_reason():
    def reaches_out(q, k, v, beta, chunk_size=32):
        raise guard.SandboxViolation("network access is disabled in the archer worker (socket.__new__)")

    finding = run_dynamic_checks(reaches_out, "cpu")[-1]
    assert finding["reason"] == "sandbox_violation" and "network access" in finding["message"]


def test_cost_check_separates_linear_from_quadratic_growth():
    linear = [dynamic_checks.measure(delta_rule_chunkwise, L, "cpu") for L in (256, 1024)]
    assert 3.0 < linear[1]["saved_bytes"] / linear[0]["saved_bytes"] < 5.0

    def quadratic(q, k, v, beta, chunk_size=32):
        o, S = delta_rule_chunkwise(q, k, v, beta, chunk_size)
        return o + 1e-3 * (q @ k.transpose(-1, -2)).tril() @ v, S

    quad = [dynamic_checks.measure(quadratic, L, "cpu") for L in (256, 1024)]
    assert quad[1]["saved_bytes"] / quad[0]["saved_bytes"] > dynamic_checks.COST_LIMIT

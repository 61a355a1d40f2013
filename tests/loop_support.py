"""Shared pieces of the loop's tests: a deterministic stand-in for the worker and workspace builders.

The stand-in replaces only the evaluation (the expensive GPU job): its scores are derived from the
code's hash, so the same code always scores the same and different code scores differently.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from agent.config import Config, Endpoint
from agent.history import Workspace
from agent.records import TASKS, EvalResult, Score

FAIL_MARKER = "# evaluation fails here"     # code containing this line "crashes" in fake_evaluate


def fake_evaluate(code: str) -> EvalResult:
    """Pseudo-scores in [0.3, 0.9] from the code's sha256; two seeds with a small spread."""
    if FAIL_MARKER in code:
        return EvalResult(status="crashed", reason="worker_died", message="exited with code 1",
                          log_tail="Traceback (most recent call last):\nRuntimeError: boom\n")
    h = hashlib.sha256(code.encode()).digest()
    scores = {}
    for i, t in enumerate(TASKS):
        a = 0.3 + h[i] / 255 * 0.6
        b = a + (h[i + 8] / 255 - 0.5) * 0.02
        scores[t] = Score(mean=(a + b) / 2, std=abs(a - b) / 2 ** 0.5, per_seed=[a, b])
    per_seed = [sum(scores[t].per_seed[s] for t in TASKS) / len(TASKS) for s in range(2)]
    mean = sum(per_seed) / 2
    return EvalResult(status="ok", profile="smoke", model="delta_net", seeds=[0, 1], scores=scores, mean=mean,
                      std=abs(per_seed[0] - per_seed[1]) / 2 ** 0.5)


class CountingEvaluate:
    """fake_evaluate that remembers every code it was asked to score."""

    def __init__(self):
        self.codes: list[str] = []

    def __call__(self, code: str) -> EvalResult:
        self.codes.append(code)
        return fake_evaluate(code)


def new_workspace(path: Path, **sections) -> Workspace:
    """A fresh workspace on the smoke profile; `sections` override parts of the Config (as dicts)."""
    data = {"eval": {"profile": "smoke"}, **sections}
    return Workspace.init(path, Config.model_validate(data))


def llm_sections(base_url: str, *, repair_rounds: int = 2, timeout_s: float = 5.0, max_retries: int = 2,
                 structured_output: bool = True) -> dict:
    endpoint = Endpoint(name="fake", base_url=base_url, model="fake-small", api_key_env="ARCHER_TEST_KEY",
                        timeout_s=timeout_s, structured_output=structured_output,
                        price_in_per_mtok=1.0, price_out_per_mtok=2.0)
    return {"proposer": {"kind": "llm", "endpoints": [endpoint.model_dump()], "repair_rounds": repair_rounds,
                         "max_retries": max_retries}}

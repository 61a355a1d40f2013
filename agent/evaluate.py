"""The controller's one way to score code: run the isolated worker and parse its result.

The loop receives `evaluate_code` as an injected callable, so the search policy knows nothing
about subprocesses. Tested by tests/test_evaluate.py.
"""
from __future__ import annotations

from agent.config import EvalConfig
from agent.records import EvalResult
from sandbox.isolation import run_isolated


def resolve_profile(profile: str) -> str:
    """"auto" (EvalConfig's default): screen where CUDA is available, smoke where it is not."""
    if profile != "auto":
        return profile
    import torch
    return "screen" if torch.cuda.is_available() else "smoke"


def evaluate_code(code: str, config: EvalConfig, *, seeds: list[int] | None = None,
                  profile: str | None = None) -> EvalResult:
    raw = run_isolated(code, profile=resolve_profile(profile or config.profile), seeds=seeds or config.seeds,
                       model=config.model, device=config.device, timeout_s=config.timeout_s)
    return EvalResult.model_validate(raw)

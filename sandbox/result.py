"""The result JSON that the worker writes and the controller reads: the one contract between them.

Stdlib only, so that both sides (and a bare GPU node) can import it. agent/records.py mirrors it
with pydantic; tests/test_result_contract.py keeps the two in step.
"""
from __future__ import annotations

from typing import TypedDict

TASKS = ("compress", "context_recall", "fuzzy_recall", "memorize", "noisy_recall", "selective_copy")
TASK_TITLES = {
    "compress": "Compress",
    "context_recall": "Context Recall",
    "fuzzy_recall": "Fuzzy Recall",
    "memorize": "Memorize",
    "noisy_recall": "Noisy Recall",
    "selective_copy": "Selective Copy",
}
MODELS = ("delta_net", "gated_delta_net", "transformer")
SPARE_READY = "spare worker ready"   # what a spare worker logs once it waits for its job (sandbox/isolation.py)

# ok: trained and scored. invalid: failed a static or dynamic check (reason names it).
# timeout: killed at the wall-clock limit. oom: ran out of (GPU or host) memory.
# crashed: any other error, or the process died. nan: training produced non-finite loss.
STATUSES = ("ok", "invalid", "timeout", "oom", "crashed", "nan")


class Score(TypedDict):
    mean: float          # mean over seeds
    std: float           # sample standard deviation over seeds (0.0 with one seed)
    per_seed: list[float]


class SettingScore(TypedDict):
    task: str            # one of TASKS
    setting: str         # e.g. "baseline", "vocab_size=32", "seq_len=512", "num_train_examples=800"
    seed: int
    lr: float
    weight_decay: float
    accuracy: float      # MAD's accuracy (best checkpoint): macro-averaged per test batch of 128, batch-size-
                         # weighted mean over batches, as mad-lab logs it
    whole_set_accuracy: float  # macro-averaged over the whole test set at once
    token_accuracy: float  # plain (micro) accuracy over scored test positions
    valid_accuracy: float  # best validation accuracy: what chose the checkpoint (and the lr x wd pick)
    steps: int           # optimiser steps taken
    best_step: int       # step of the checkpoint chosen on the validation split
    seconds: float


class CheckFinding(TypedDict):
    name: str            # e.g. "causality"
    passed: bool
    reason: str          # machine-readable reason code, "" when passed
    message: str         # one line a person (or an LLM asked to repair) can act on
    seconds: float


class EvalResult(TypedDict):
    status: str                      # one of STATUSES
    reason: str                      # reason code of the failure, "" when ok
    message: str                     # one-line explanation, "" when ok
    model: str                       # one of MODELS
    profile: str                     # smoke | quick | screen | mad
    seeds: list[int]
    candidate_sha256: str
    scores: dict[str, Score]         # per task (keys from TASKS): MAD accuracy, mean over its settings
    whole_set_accuracy: dict[str, Score]
    token_accuracy: dict[str, Score]
    mean: float                      # mean over the six tasks (of the per-seed means)
    std: float                       # spread over seeds of the six-task mean
    settings: list[SettingScore]
    checks: list[CheckFinding]
    timings: dict[str, float]        # total_s, checks_s, train_s, compile_s ...
    execution: dict[str, object]     # device, cuda_graphs (bool), fallback_reason, batched ...
    environment: dict[str, str]      # python, torch, cuda, gpu, hostname
    log_tail: str


def failure(status: str, reason: str, message: str, **fields) -> dict:
    """A result for a run that produced no scores: every key present, scores empty."""
    assert status in STATUSES and status != "ok", status
    out = {
        "status": status, "reason": reason, "message": message,
        "model": "", "profile": "", "seeds": [], "candidate_sha256": "",
        "scores": {}, "whole_set_accuracy": {}, "token_accuracy": {}, "mean": 0.0, "std": 0.0, "settings": [],
        "checks": [], "timings": {}, "execution": {}, "environment": {}, "log_tail": "",
    }
    out.update(fields)
    return out

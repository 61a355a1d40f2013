"""Dynamic checks of a candidate's delta_rule_chunkwise, run in the worker before any training.

FIRST VERSION (to be built by the checks issue): runs no checks yet.
"""
from __future__ import annotations


def run_dynamic_checks(fn, device: str) -> list[dict]:
    """Return CheckFinding dicts (sandbox/result.py); the worker stops at the first that failed."""
    return []

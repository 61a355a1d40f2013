"""Loads the candidate inside the worker and narrows what the worker process can do.

FIRST VERSION (to be hardened by the checks issue): plain import from the file path.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path


def harden_process() -> None:
    """Called by the worker before the candidate is imported."""


def load_candidate(path: Path):
    """Import the candidate file as a fresh module and return its delta_rule_chunkwise."""
    spec = importlib.util.spec_from_file_location("candidate", str(path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.delta_rule_chunkwise

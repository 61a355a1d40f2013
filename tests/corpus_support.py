"""The corpus of hostile or broken candidates in tests/corpus/: each file's header declares its outcome.

    # corpus: what the candidate does
    # expect: STATUS [REASON]          e.g. "invalid causality", "timeout", "crashed output_limit"
    # escape: PATH                     (optional) a path the candidate tries to create: must not exist
    # gpu                              (optional) only meaningful on a CUDA device
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
STATIC_REASONS = ("static.", "duplicate")
RUNTIME_STATUSES = ("timeout", "oom", "crashed")


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    description: str
    status: str
    reason: str
    escape: str
    gpu: bool

    @property
    def code(self) -> str:
        return self.path.read_text()

    @property
    def layer(self) -> str:
        if self.reason.startswith(STATIC_REASONS):
            return "static"
        if self.status in RUNTIME_STATUSES or self.reason == "sandbox_violation":
            return "isolation"
        return "dynamic"


def header(text: str, key: str) -> str:
    match = re.search(rf"^# {key}:?(.*)$", text, re.M)
    return match.group(1).strip() if match else ""


def load_corpus() -> list[Case]:
    cases = []
    for path in sorted(CORPUS.glob("*.py")):
        text = path.read_text()
        status, _, reason = header(text, "expect").partition(" ")
        cases.append(Case(path.stem, path, header(text, "corpus"), status, reason.strip(), header(text, "escape"),
                          re.search(r"^# gpu$", text, re.M) is not None))
    return cases

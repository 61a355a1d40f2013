"""What a proposer returns: a named change of naive.py with its bilingual rationale.

Both proposers (llm, mutate) build a Proposal; `resolve_code` turns its edits into the full file.
Tested by tests/test_proposal.py.
"""
from __future__ import annotations

import re

from pydantic import Field, field_validator

from agent.errors import ProposalError
from agent.records import Strict

SECTIONS = ("observations", "code_issues", "reasoning", "expected", "lessons", "builds_on")


def unique_name(name: str, taken) -> str:
    """`name`, or `name_2`, `name_3`... : the first not in `taken`."""
    taken = set(taken)
    if name not in taken:
        return name
    n = 2
    while f"{name}_{n}" in taken:
        n += 1
    return f"{name}_{n}"


class Bilingual(Strict):
    en: str
    zh: str


class Edit(Strict):
    """One SEARCH/REPLACE block against the parent's code; `search` must occur exactly once."""
    search: str
    replace: str


class Proposal(Strict):
    name: str                                   # snake_case, unique in the workspace
    observations: Bilingual                     # what the results table shows
    code_issues: Bilingual                      # what in the parent's code limits it
    reasoning: Bilingual                        # the technical reasoning, with the math of the change
    expected: Bilingual                         # expected effect per task, in words
    lessons: Bilingual                          # lessons from the history that bear on it
    builds_on: Bilingual                        # how it builds on / differs from earlier candidates
    predicted: dict[str, float] = Field(default_factory=dict)  # expected score per task key (TASKS)
    code: str | None = None                     # the full new naive.py, or
    edits: list[Edit] = Field(default_factory=list)  # edits against the parent's code
    mutations: list[str] = Field(default_factory=list)  # mutate proposer: transformations applied

    @field_validator("name")
    @classmethod
    def _snake_case(cls, v: str) -> str:
        v = v.strip().lower()
        v = re.sub(r"[^a-z0-9_]+", "_", v).strip("_")
        if not v or not v[0].isalpha():
            raise ValueError("name must be snake_case starting with a letter")
        return v[:80]

    def resolve_code(self, parent_code: str) -> str:
        """The full candidate file: `code` as given, or the parent with every edit applied in order."""
        if self.code is not None and self.code.strip():
            return self.code
        if not self.edits:
            raise ProposalError("proposal has neither code nor edits")
        out = parent_code
        for i, e in enumerate(self.edits, 1):
            n = out.count(e.search)
            if n != 1:
                where = "not found" if n == 0 else f"found {n} times"
                raise ProposalError(f"edit {i}: SEARCH block {where} in the parent's code")
            out = out.replace(e.search, e.replace, 1)
        return out

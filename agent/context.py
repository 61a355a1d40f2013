"""What a proposer sees: the parent, its code and the search so far, rendered once per proposal.

Built by the loop (agent/loop.py) from the history; consumed by both proposers.
"""
from __future__ import annotations

from typing import Protocol

from pydantic import Field

from agent.proposal import Proposal
from agent.records import Candidate, Strict, Usage


class ProposalContext(Strict):
    parent: Candidate
    parent_code: str
    baseline: Candidate | None = None
    records: list[Candidate] = Field(default_factory=list)   # every non-reverted candidate, in search order
    table: str = ""                                            # the results table as the LLM reads it
    best_per_task: dict[str, float] = Field(default_factory=dict)
    recent_reports: list[str] = Field(default_factory=list)   # last few insight reports (markdown)
    lessons: list[str] = Field(default_factory=list)          # distilled from failures
    calibration: str = ""                                      # predicted vs measured, past candidates
    existing_names: list[str] = Field(default_factory=list)
    existing_fingerprints: list[str] = Field(default_factory=list)  # normalised-AST hashes of earlier code


class Proposer(Protocol):
    """Both proposers: propose a change of ctx.parent_code; repair one after a failed check or run."""

    def propose(self, ctx: ProposalContext) -> tuple[Proposal, Usage]: ...

    def repair(self, ctx: ProposalContext, proposal: Proposal, failure: str) -> tuple[Proposal, Usage]: ...

"""Named errors that the CLI turns into one line and a non-zero exit, in exactly one place (cli.py)."""


class ArcherError(Exception):
    """Base: anything a person can fix from the message alone."""


class WorkspaceError(ArcherError):
    """The workspace is missing, corrupt, or the operation does not fit its state."""


class CandidateNotFound(ArcherError):
    pass


class ConfigError(ArcherError):
    pass


class ProposalError(ArcherError):
    """A proposer's reply could not be turned into a Proposal (malformed, empty, refused).

    Optional details for the history: `kind` (a short code, recorded as reason "proposal.<kind>"),
    `raw` (the reply text, excerpted in report.md) and `usage` (an agent.records.Usage: what the
    failed calls cost, so budgets count them)."""

    def __init__(self, message: str = "", *, kind: str = "", raw: str = "", usage: object | None = None):
        super().__init__(message)
        self.kind = kind
        self.raw = raw
        self.usage = usage


class MergeConflict(ArcherError):
    pass


class BudgetExhausted(ArcherError):
    pass

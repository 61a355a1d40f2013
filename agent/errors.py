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
    """A proposer's reply could not be turned into a Proposal (malformed, empty, refused)."""


class MergeConflict(ArcherError):
    pass


class BudgetExhausted(ArcherError):
    pass

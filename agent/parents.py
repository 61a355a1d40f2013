"""Parent selection: which recorded candidate the next proposal modifies.

A short policy over the records (config.parents): greedy, tournament with exploration, or an
explicit id; the baseline while nothing else is scored. Reverted and non-ok candidates are never
parents. Tested by tests/test_parents.py.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

from agent.config import ParentConfig
from agent.errors import CandidateNotFound, WorkspaceError
from agent.records import Candidate


def eligible(records: Iterable[Candidate], reverted: Iterable[int] = ()) -> list[Candidate]:
    """The candidates that may be parents: scored ("ok" with a mean) and not reverted."""
    gone = set(reverted)
    return [c for c in records if c.scored and c.id not in gone]


def count_children(records: Iterable[Candidate]) -> Counter[int]:
    """How many candidates (of any status) were proposed from each id."""
    return Counter(c.parent for c in records if c.parent is not None)


def _best(pool: list[Candidate]) -> Candidate:
    return max(pool, key=lambda c: (c.mean, -c.id))


def select_parent(records: list[Candidate], config: ParentConfig, rng: random.Random, *,
                  reverted: Iterable[int] = ()) -> Candidate:
    """The next parent under config.policy; raises WorkspaceError when no candidate can be one."""
    pool = eligible(records, reverted)
    if config.policy == "explicit":
        if config.explicit is None:
            raise WorkspaceError("parents.policy is 'explicit' but parents.explicit names no candidate")
        by_id = {c.id: c for c in records}
        if config.explicit not in by_id:
            raise CandidateNotFound(f"parent {config.explicit}: no such candidate")
        chosen = next((c for c in pool if c.id == config.explicit), None)
        if chosen is None:
            raise WorkspaceError(f"parent {config.explicit} cannot be a parent "
                                 f"(status {by_id[config.explicit].status}, or reverted)")
        return chosen
    if not pool:
        raise WorkspaceError("no scored candidate to build on: the baseline must be evaluated "
                             "successfully first (see `archer show 0`)")
    if len(pool) == 1:
        return pool[0]
    if config.policy == "greedy":
        return _best(pool)
    if rng.random() < config.explore:
        children = count_children(records)
        fewest = min(children[c.id] for c in pool)
        return rng.choice([c for c in pool if children[c.id] == fewest])
    k = max(1, min(config.tournament_size, len(pool)))
    return _best(rng.sample(pool, k))

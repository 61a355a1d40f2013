"""Parent selection policies over hand-made records."""
import random
from collections import Counter

import pytest

from agent.config import ParentConfig
from agent.errors import CandidateNotFound, WorkspaceError
from agent.parents import count_children, eligible, select_parent
from agent.records import Candidate


def cand(id, mean=None, status="ok", parent=0):
    return Candidate(id=id, name=f"c{id}", parent=None if id == 0 else parent, proposer="mutate",
                     status=status, mean=mean)


RECORDS = [cand(0, 0.60), cand(1, 0.70), cand(2, 0.65), cand(3, None, "rejected"), cand(4, 0.99, "pending"),
           cand(5, 0.50, parent=1), cand(6, None, "crashed", parent=1), cand(7, 0.80, parent=1)]


def test_only_scored_unreverted_candidates_are_eligible():
    assert [c.id for c in eligible(RECORDS, reverted={7})] == [0, 1, 2, 5]


def test_greedy_takes_the_best_mean():
    assert select_parent(RECORDS, ParentConfig(policy="greedy"), random.Random(0)).id == 7


def test_greedy_skips_a_reverted_best():
    assert select_parent(RECORDS, ParentConfig(policy="greedy"), random.Random(0), reverted={7}).id == 1


def test_baseline_is_the_parent_while_nothing_else_is_scored():
    records = [cand(0, 0.6), cand(1, None, "invalid"), cand(2, None, "rejected")]
    for policy in ("greedy", "tournament"):
        assert select_parent(records, ParentConfig(policy=policy), random.Random(1)).id == 0


def test_no_scored_candidate_is_a_clear_error():
    with pytest.raises(WorkspaceError, match="baseline"):
        select_parent([cand(0, None, "pending")], ParentConfig(), random.Random(0))


def test_tournament_without_exploration_never_picks_the_worst_and_favours_the_best():
    config = ParentConfig(policy="tournament", tournament_size=3, explore=0.0)
    rng = random.Random(0)
    picks = Counter(select_parent(RECORDS, config, rng).id for _ in range(400))
    assert 5 not in picks            # the worst of five can never win a tournament of three
    assert picks.most_common(1)[0][0] == 7
    assert set(picks) <= {0, 1, 2, 7}


def test_exploration_picks_the_candidates_with_fewest_children():
    config = ParentConfig(policy="tournament", explore=1.0)
    rng = random.Random(0)
    children = count_children(RECORDS)
    picks = {select_parent(RECORDS, config, rng).id for _ in range(100)}
    assert children[1] == 3 and children[0] == 4
    assert picks == {2, 5, 7}        # each has no child yet


def test_selection_is_deterministic_given_the_seed():
    config = ParentConfig(policy="tournament", explore=0.3)
    rng1, rng2 = random.Random(9), random.Random(9)
    assert [select_parent(RECORDS, config, rng1).id for _ in range(50)] == \
           [select_parent(RECORDS, config, rng2).id for _ in range(50)]


def test_explicit_policy_returns_the_named_candidate():
    assert select_parent(RECORDS, ParentConfig(policy="explicit", explicit=2), random.Random(0)).id == 2


@pytest.mark.parametrize("explicit, error, match", [
    (None, WorkspaceError, "names no candidate"),
    (99, CandidateNotFound, "no such candidate"),
    (3, WorkspaceError, "status rejected"),
])
def test_explicit_policy_refuses_what_cannot_be_a_parent(explicit, error, match):
    with pytest.raises(error, match=match):
        select_parent(RECORDS, ParentConfig(policy="explicit", explicit=explicit), random.Random(0))

"""Behaviour of the generic bandit: tries every arm, prefers the better one, keeps exploring, resumes exactly."""
import random
from collections import Counter

import pytest

from agent.bandit import Bandit


def _simulate(bandit: Bandit, means: dict[str, float], rounds: int, noise: float = 0.02, seed: int = 1) -> Counter:
    env = random.Random(seed)
    pulls = Counter()
    for _ in range(rounds):
        arm = bandit.choose()
        bandit.update(arm, env.gauss(means[arm], noise))
        pulls[arm] += 1
    return pulls


def test_every_arm_is_tried_before_any_is_repeated():
    bandit = Bandit(["a", "b", "c", "d"], seed=3)
    first = []
    for _ in range(4):
        arm = bandit.choose()
        first.append(arm)
        bandit.update(arm, 0.0)
    assert sorted(first) == ["a", "b", "c", "d"]


def test_prefers_the_arm_with_the_larger_reward():
    means = {"good": 0.03, "bad": -0.02, "meh": 0.0}
    pulls = _simulate(Bandit(means, seed=0), means, rounds=200)
    assert pulls["good"] > pulls["meh"] and pulls["good"] > pulls["bad"]
    assert pulls["good"] > 100


def test_keeps_exploring_arms_that_are_close():
    means = {"a": 0.010, "b": 0.008}
    pulls = _simulate(Bandit(means, seed=0), means, rounds=200, noise=0.03)
    assert pulls["a"] > 10 and pulls["b"] > 10


def test_cost_divides_the_value_of_an_arm():
    bandit = Bandit(["cheap", "dear"], seed=0)
    for _ in range(20):
        bandit.update("cheap", 0.01, cost=1.0)
        bandit.update("dear", 0.015, cost=10.0)
    assert bandit.estimate("cheap") > bandit.estimate("dear")
    assert Counter(bandit.choose() for _ in range(50))["cheap"] > 40


def test_rebuilt_from_observations_chooses_like_the_live_one():
    obs = [("a", 0.01, 1.0), ("b", -0.01, 1.0), ("a", 0.02, 1.0), ("c", 0.0, 1.0), ("b", 0.0, 1.0)]
    live = Bandit(["a", "b", "c"], seed=7)
    for arm, r, c in obs:
        live.update(arm, r, c)
    rebuilt = Bandit.from_observations(["a", "b", "c"], obs + [("gone", 1.0, 1.0)], seed=7)
    assert [live.choose() for _ in range(20)] == [rebuilt.choose() for _ in range(20)]
    assert rebuilt.stats["a"].pulls == 2


def test_same_seed_same_choices_other_seed_other_choices():
    def run(seed):
        b = Bandit([f"arm{i}" for i in range(6)], seed=seed)
        return [b.choose() for _ in range(12)]
    assert run(5) == run(5)
    assert run(5) != run(6)


def test_excluded_arms_are_never_chosen_and_ranking_covers_the_rest():
    bandit = Bandit(["a", "b", "c"], seed=0)
    for arm in "abc":
        bandit.update(arm, 0.0)
    assert {bandit.choose(exclude={"a", "b"}) for _ in range(10)} == {"c"}
    assert sorted(bandit.ranking(exclude={"b"})) == ["a", "c"]
    with pytest.raises(ValueError, match="excluded"):
        bandit.choose(exclude={"a", "b", "c"})


def test_bad_updates_are_refused_with_a_clear_error():
    bandit = Bandit(["a"], seed=0)
    with pytest.raises(KeyError, match="unknown arm"):
        bandit.update("z", 0.1)
    with pytest.raises(ValueError, match="not finite"):
        bandit.update("a", float("nan"))
    with pytest.raises(ValueError, match="positive"):
        bandit.update("a", 0.1, cost=0.0)
    with pytest.raises(ValueError, match="at least one arm"):
        Bandit([], seed=0)


def test_untried_arms_come_in_the_order_their_priors_favour():
    firsts = Counter()
    for seed in range(40):
        bandit = Bandit(["plain", "promising"], seed=seed, priors={"promising": 0.1})
        firsts[bandit.choose()] += 1
    assert firsts["promising"] > 30
    bandit = Bandit(["a", "b"], seed=0, priors={"b": 0.1})
    assert bandit.estimate("b") > bandit.estimate("a") == 0.0

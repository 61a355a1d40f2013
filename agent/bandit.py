"""A generic multi-armed bandit: Gaussian Thompson sampling over rewards per unit cost.

Untried arms go first; each arm's mean reward is drawn from a normal posterior (pooled noise, a prior
mean per arm worth `prior_weight` observations) and divided by its mean cost; the largest draw wins.
Rebuilt by replaying records (`from_observations`); deterministic given the seed. Tested by
tests/test_bandit.py.
"""
from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass


@dataclass
class ArmStats:
    """Running sums of one arm (Welford for the reward variance)."""
    pulls: int = 0
    reward_mean: float = 0.0
    reward_m2: float = 0.0
    cost_sum: float = 0.0

    def add(self, reward: float, cost: float) -> None:
        self.pulls += 1
        delta = reward - self.reward_mean
        self.reward_mean += delta / self.pulls
        self.reward_m2 += delta * (reward - self.reward_mean)
        self.cost_sum += cost

    @property
    def mean_cost(self) -> float:
        return self.cost_sum / self.pulls if self.pulls else 1.0


class Bandit:
    """Choose among `arms`; learn from `update(arm, reward, cost)`.

    reward: any real number (e.g. a child's mean minus its parent's); cost: positive (GPU-hours,
    dollars, or 1.0 when all pulls cost the same). The value of an arm is reward per unit cost.
    """

    def __init__(self, arms: Iterable[Hashable], seed: int = 0, *, priors: Mapping[Hashable, float] | None = None,
                 prior_weight: float = 1.0, min_noise: float = 1e-3, default_noise: float = 0.05) -> None:
        self.arms: list[Hashable] = list(dict.fromkeys(arms))
        if not self.arms:
            raise ValueError("a bandit needs at least one arm")
        if prior_weight <= 0 or min_noise <= 0 or default_noise <= 0:
            raise ValueError("prior_weight, min_noise and default_noise must be positive")
        self.stats: dict[Hashable, ArmStats] = {a: ArmStats() for a in self.arms}
        self.priors = {a: float((priors or {}).get(a, 0.0)) for a in self.arms}
        self.prior_weight = prior_weight
        self.min_noise = min_noise
        self.default_noise = default_noise
        self.rng = random.Random(seed)

    @classmethod
    def from_observations(cls, arms: Iterable[Hashable], observations: Iterable[tuple[Hashable, float, float]],
                          seed: int = 0, **kwargs: object) -> Bandit:
        """Rebuild a bandit from (arm, reward, cost) records; records of unknown arms are ignored."""
        bandit = cls(arms, seed, **kwargs)
        for arm, reward, cost in observations:
            if arm in bandit.stats:
                bandit.update(arm, reward, cost)
        return bandit

    def update(self, arm: Hashable, reward: float, cost: float = 1.0) -> None:
        if arm not in self.stats:
            raise KeyError(f"unknown arm {arm!r}")
        if not math.isfinite(reward):
            raise ValueError(f"reward of {arm!r} is not finite: {reward}")
        if not (cost > 0 and math.isfinite(cost)):
            raise ValueError(f"cost of {arm!r} must be positive and finite, got {cost}")
        self.stats[arm].add(float(reward), float(cost))

    def noise(self) -> float:
        """The pooled standard deviation of one reward around its arm's mean."""
        m2 = sum(s.reward_m2 for s in self.stats.values())
        dof = sum(max(s.pulls - 1, 0) for s in self.stats.values())
        if dof == 0:
            return self.default_noise
        return max(math.sqrt(m2 / dof), self.min_noise)

    def estimate(self, arm: Hashable) -> float:
        """Posterior mean of the arm's reward per unit cost (shrunk toward the arm's prior)."""
        return self._posterior_mean(arm) / self.stats[arm].mean_cost

    def choose(self, exclude: Iterable[Hashable] = ()) -> Hashable:
        """One arm: an untried one if any, else the best Thompson draw. Raises if all are excluded."""
        skip = set(exclude)
        open_arms = [a for a in self.arms if a not in skip]
        if not open_arms:
            raise ValueError("every arm is excluded")
        untried = [a for a in open_arms if self.stats[a].pulls == 0]
        pool = untried or open_arms
        sigma = self.noise()
        draws = {a: self._draw(a, sigma) for a in pool}
        return max(pool, key=lambda a: draws[a])

    def ranking(self, exclude: Iterable[Hashable] = ()) -> list[Hashable]:
        """Every open arm in the order of successive `choose` calls, each excluding the ones before."""
        skip = set(exclude)
        n_open = sum(a not in skip for a in self.arms)
        order: list[Hashable] = []
        while len(order) < n_open:
            order.append(self.choose(exclude=skip | set(order)))
        return order

    def _posterior_mean(self, arm: Hashable) -> float:
        s = self.stats[arm]
        return (s.pulls * s.reward_mean + self.prior_weight * self.priors[arm]) / (s.pulls + self.prior_weight)

    def _draw(self, arm: Hashable, sigma: float) -> float:
        s = self.stats[arm]
        spread = sigma / math.sqrt(s.pulls + self.prior_weight)
        return self.rng.gauss(self._posterior_mean(arm), spread) / s.mean_cost

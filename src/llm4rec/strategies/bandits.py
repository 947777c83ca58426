"""Context-free bandits: epsilon-greedy, UCB1, Beta-Bernoulli and Gaussian Thompson sampling.

Each action is an arm with its own reward statistics; the context is
ignored. A slate is the top-k candidates by the policy's index (mean reward,
upper confidence bound, posterior draw), ties to the smaller action index,
and every shown item's reward updates its own arm (semi-bandit feedback).

Propensities (``Slate.propensities[j]`` = P(items[j] at position j)):

- ``epsilon-greedy``: exact. With probability eps_t the slate is a uniformly
  random ordered k-subset of the c candidates, else the greedy top-k by mean
  reward, so P(a at j) = eps_t / c + (1 - eps_t) [a is the greedy j-th].
- ``ucb1``: deterministic, 1.
- ``thompson``, ``gaussian-thompson``: Monte Carlo, not closed-form:
  ``propensity_samples`` (m) further independent posterior draws of the
  candidates, taken from the policy's rng in one vectorised call, and the
  share of them that put items[j] at position j, floored at 1/m (see
  :func:`~llm4rec.strategies._common.rank_frequencies`); standard error about
  sqrt(p (1 - p) / m).

``distribution`` is the same for every round (the policy is frozen and
context-free): computed once over all actions (Monte Carlo for Thompson
sampling) and broadcast, a read-only float64[n_rounds, n_actions, k] view.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from llm4rec.errors import InputError
from llm4rec.strategies._common import (
    check_feedback,
    check_request,
    check_samples,
    check_setting,
    position_frequencies,
    rank_frequencies,
)
from llm4rec.strategies.policy import Feedback, Policy, Slate
from llm4rec.strategies.rerank import top_k

__all__ = ["UCB1", "EpsilonGreedy", "GaussianThompson", "Thompson"]


class _Arms(Policy):
    """Per-arm pull counts and reward sums (float64[n_actions]), updated from every shown item."""

    _unit_rewards = True  # rewards must lie in [0, 1]

    def __init__(self, n_actions: int, *, seed: int = 0, **config: Any) -> None:
        super().__init__(n_actions, seed=seed, **config)
        self.counts_ = np.zeros(self.n_actions)
        self.sums_ = np.zeros(self.n_actions)
        self.rounds_ = 0

    def update(self, feedback: Feedback) -> None:
        """Add each shown item's reward to its arm."""
        items, rewards = check_feedback(feedback, self.n_actions, unit=self._unit_rewards)
        self._learn(items, rewards)
        self.rounds_ += 1

    def _learn(self, items: np.ndarray, rewards: np.ndarray) -> None:
        """Add int64[k] distinct arms' float64[k] rewards to their statistics."""
        self.counts_[items] += 1.0
        self.sums_[items] += rewards

    def _means(self) -> np.ndarray:
        """float64[n_actions] mean reward per arm, +inf for an arm never shown (tried first)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts_ > 0, self.sums_ / self.counts_, np.inf)

    def _state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts_, "sums": self.sums_, "rounds": np.int64(self.rounds_)}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.counts_, self.sums_ = np.array(arrays["counts"]), np.array(arrays["sums"])
        self.rounds_ = int(arrays["rounds"])

    def _check_k(self, k: int) -> int:
        if not 1 <= k <= self.n_actions:
            raise InputError("slate size k must be between 1 and the number of actions", value=k,
                             expected=f"1..{self.n_actions}")
        return int(k)

    @staticmethod
    def _broadcast(probs: np.ndarray, n_rounds: int) -> np.ndarray:
        """float64[n_actions, k] -> read-only float64[n_rounds, n_actions, k] (one per round)."""
        return np.broadcast_to(probs, (int(n_rounds), *probs.shape))


class EpsilonGreedy(_Arms):
    """Greedy top-k by mean reward; with probability eps_t a uniformly random slate instead.

    Settings: ``epsilon`` in [0, 1]; ``decay`` >= 0: eps_t = epsilon / (1 + decay * t)
    after t updates (0 keeps it constant; a positive decay makes regret sub-linear).
    Arms never shown count as best (each is tried once). Any real rewards.
    """

    name = "epsilon-greedy"
    _unit_rewards = False

    def __init__(self, n_actions: int, *, seed: int = 0, epsilon: float = 0.1, decay: float = 0.0) -> None:
        super().__init__(n_actions, seed=seed, epsilon=check_setting("epsilon", epsilon, 0.0, 1.0),
                         decay=check_setting("decay", decay, 0.0))

    def epsilon_now(self) -> float:
        """The exploration probability eps_t of the next round."""
        return self.config["epsilon"] / (1.0 + self.config["decay"] * self.rounds_)

    def select(self, context: np.ndarray | None, candidates: np.ndarray, k: int) -> Slate:
        """Greedy or (probability eps_t) uniformly random ordered k of the candidates, exact propensities."""
        cands, k = check_request(candidates, k, self.n_actions)
        eps = self.epsilon_now()
        greedy = top_k(self._means()[cands], k)  # (k,) positions in cands
        explore = self.rng.random() < eps
        order = self.rng.permutation(len(cands))[:k] if explore else greedy
        props = eps / len(cands) + (1.0 - eps) * (order == greedy)
        return Slate(cands[order], props)

    def marginals(self, candidates: np.ndarray, k: int) -> np.ndarray:
        """Exact: eps_t / c everywhere plus (1 - eps_t) on the greedy top-k of the candidates."""
        cands, k = check_request(candidates, k, self.n_actions)
        eps = self.epsilon_now()
        probs = np.full((len(cands), k), eps / len(cands))
        probs[top_k(self._means()[cands], k), np.arange(k)] += 1.0 - eps
        return probs

    def distribution(self, contexts: np.ndarray | None, n_rounds: int, k: int) -> np.ndarray:
        """Exact: eps_t / n_actions everywhere plus (1 - eps_t) on the greedy top-k."""
        k = self._check_k(k)
        eps = self.epsilon_now()
        probs = np.full((self.n_actions, k), eps / self.n_actions)
        probs[top_k(self._means(), k), np.arange(k)] += 1.0 - eps
        return self._broadcast(probs, n_rounds)


class UCB1(_Arms):
    """Top-k by the upper confidence bound mean_a + sqrt(exploration * ln t / n_a) (Auer et al., 2002).

    t is the total number of shown items so far, n_a the arm's; arms never
    shown rank first. ``exploration`` > 0 (2 is UCB1's constant for rewards
    in [0, 1], which it takes). Deterministic: propensities are 1.
    """

    name = "ucb1"

    def __init__(self, n_actions: int, *, seed: int = 0, exploration: float = 2.0) -> None:
        super().__init__(n_actions, seed=seed, exploration=check_setting("exploration", exploration, 0.0,
                                                                         low_open=True))

    def _index(self) -> np.ndarray:
        """float64[n_actions] upper confidence bounds (+inf for arms never shown)."""
        log_t = np.log(max(1.0, self.counts_.sum()))
        with np.errstate(divide="ignore", invalid="ignore"):
            bonus = np.sqrt(self.config["exploration"] * log_t / self.counts_)
        return np.where(self.counts_ > 0, self._means() + bonus, np.inf)

    def select(self, context: np.ndarray | None, candidates: np.ndarray, k: int) -> Slate:
        """The k candidates with the highest upper confidence bound."""
        cands, k = check_request(candidates, k, self.n_actions)
        return Slate(cands[top_k(self._index()[cands], k)], np.ones(k))

    def marginals(self, candidates: np.ndarray, k: int) -> np.ndarray:
        """Exact: 1 on the candidates' top-k by upper confidence bound."""
        cands, k = check_request(candidates, k, self.n_actions)
        probs = np.zeros((len(cands), k))
        probs[top_k(self._index()[cands], k), np.arange(k)] = 1.0
        return probs

    def distribution(self, contexts: np.ndarray | None, n_rounds: int, k: int) -> np.ndarray:
        """Exact: 1 on the top-k by upper confidence bound."""
        k = self._check_k(k)
        probs = np.zeros((self.n_actions, k))
        probs[top_k(self._index(), k), np.arange(k)] = 1.0
        return self._broadcast(probs, n_rounds)


class _Sampling(_Arms):
    """Thompson sampling: top-k by one posterior draw per candidate; Monte Carlo propensities."""

    @abstractmethod
    def _draws(self, cands: np.ndarray, m: int) -> np.ndarray:
        """float64[m, c] independent posterior draws of the candidates' mean rewards."""

    def select(self, context: np.ndarray | None, candidates: np.ndarray, k: int) -> Slate:
        """Top-k of one posterior draw; propensities from ``propensity_samples`` more draws."""
        cands, k = check_request(candidates, k, self.n_actions)
        draws = self._draws(cands, 1 + self.config["propensity_samples"])  # (1 + m, c) row 0 decides
        order = top_k(draws[0], k)
        return Slate(cands[order], rank_frequencies(draws[1:], order))

    def marginals(self, candidates: np.ndarray, k: int) -> np.ndarray:
        """Monte Carlo over ``propensity_samples`` posterior draws of the candidates, from a generator of
        their own (seeded by the policy's seed and rounds), so the serving stream is not disturbed."""
        cands, k = check_request(candidates, k, self.n_actions)
        rng, self.rng = self.rng, np.random.default_rng([self.seed, self.rounds_])
        try:
            draws = self._draws(cands, self.config["propensity_samples"])
        finally:
            self.rng = rng
        return position_frequencies(draws, k)

    def distribution(self, contexts: np.ndarray | None, n_rounds: int, k: int) -> np.ndarray:
        """Monte Carlo over ``propensity_samples`` posterior draws of every arm (read-only broadcast)."""
        k = self._check_k(k)
        draws = self._draws(np.arange(self.n_actions), self.config["propensity_samples"])
        return self._broadcast(position_frequencies(draws, k), n_rounds)


class Thompson(_Sampling):
    """Beta-Bernoulli Thompson sampling: arm a's mean ~ Beta(alpha + successes, beta + failures).

    Rewards in [0, 1]; a fractional reward r counts as r successes and 1 - r
    failures. Settings: ``alpha``, ``beta`` > 0 (the prior),
    ``propensity_samples`` (Monte Carlo draws per ``select``, default 1000).
    """

    name = "thompson"

    def __init__(self, n_actions: int, *, seed: int = 0, alpha: float = 1.0, beta: float = 1.0,
                 propensity_samples: int = 1000) -> None:
        super().__init__(n_actions, seed=seed, alpha=check_setting("alpha", alpha, 0.0, low_open=True),
                         beta=check_setting("beta", beta, 0.0, low_open=True),
                         propensity_samples=check_samples(propensity_samples))

    def _draws(self, cands: np.ndarray, m: int) -> np.ndarray:
        a = self.config["alpha"] + self.sums_[cands]
        b = self.config["beta"] + self.counts_[cands] - self.sums_[cands]
        return self.rng.beta(a, b, size=(m, len(cands)))


class GaussianThompson(_Sampling):
    """Thompson sampling for Gaussian rewards, per arm.

    ``prior="normal"`` (known noise): mean ~ N(prior_mean, prior_var), reward ~
    N(mean, noise_var); the posterior is normal. ``prior="normal-gamma"``
    (unknown noise): mean | precision ~ N(prior_mean, 1 / (kappa precision)),
    precision ~ Gamma(shape, rate); the mean's posterior is a Student t with
    2 shape_n degrees of freedom. Any real rewards. ``propensity_samples`` as
    for ``thompson``.
    """

    name = "gaussian-thompson"
    _unit_rewards = False

    def __init__(self, n_actions: int, *, seed: int = 0, prior: str = "normal", prior_mean: float = 0.0,
                 prior_var: float = 1.0, noise_var: float = 1.0, kappa: float = 1.0, shape: float = 1.0,
                 rate: float = 1.0, propensity_samples: int = 1000) -> None:
        if prior not in ("normal", "normal-gamma"):
            raise InputError("bad value for setting 'prior'", value=prior, expected="'normal' or 'normal-gamma'")
        positive = {name: check_setting(name, value, 0.0, low_open=True) for name, value in
                    [("prior_var", prior_var), ("noise_var", noise_var), ("kappa", kappa), ("shape", shape),
                     ("rate", rate)]}
        super().__init__(n_actions, seed=seed, prior=prior, prior_mean=float(prior_mean), **positive,
                         propensity_samples=check_samples(propensity_samples))
        self.sumsq_ = np.zeros(self.n_actions)

    def _learn(self, items: np.ndarray, rewards: np.ndarray) -> None:
        super()._learn(items, rewards)
        self.sumsq_[items] += rewards ** 2

    def _draws(self, cands: np.ndarray, m: int) -> np.ndarray:
        cfg = self.config
        n, total = self.counts_[cands], self.sums_[cands]
        if cfg["prior"] == "normal":
            precision = 1.0 / cfg["prior_var"] + n / cfg["noise_var"]  # (c,)
            mean = (cfg["prior_mean"] / cfg["prior_var"] + total / cfg["noise_var"]) / precision
            return mean + self.rng.standard_normal((m, len(cands))) / np.sqrt(precision)
        xbar = total / np.maximum(n, 1.0)
        spread = np.maximum(self.sumsq_[cands] - n * xbar ** 2, 0.0)  # sum of squared deviations
        kappa_n = cfg["kappa"] + n
        mean = (cfg["kappa"] * cfg["prior_mean"] + total) / kappa_n
        shape_n = cfg["shape"] + n / 2.0
        rate_n = cfg["rate"] + spread / 2.0 + cfg["kappa"] * n * (xbar - cfg["prior_mean"]) ** 2 / (2.0 * kappa_n)
        scale = np.sqrt(rate_n / (shape_n * kappa_n))
        return mean + scale * self.rng.standard_t(2.0 * shape_n, size=(m, len(cands)))

    def _state(self) -> dict[str, np.ndarray]:
        return {**super()._state(), "sumsq": self.sumsq_}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        super()._set_state(arrays)
        self.sumsq_ = np.array(arrays["sumsq"])

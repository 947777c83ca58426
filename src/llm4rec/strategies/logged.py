"""Fixed policies for logging and off-policy evaluation: ``uniform`` and ``empirical``.

``uniform`` shows k candidates drawn uniformly without replacement, so each
action is at each position with probability 1/c (c candidates).
``empirical`` replays the time-averaged behaviour of a logged policy: the
frequency of each action at each position in its logs
(:meth:`EmpiricalPolicy.from_logs`). For a context-free logging policy
(e.g. OBD's Bernoulli Thompson sampling) that is its average action
distribution per position over the logging window.
"""

from __future__ import annotations

import numpy as np

from llm4rec.data.logs import BanditLogs
from llm4rec.errors import InputError
from llm4rec.strategies.policy import Policy, Slate

__all__ = ["EmpiricalPolicy", "UniformPolicy"]


def _check_k(k: int, c: int) -> None:
    if not 1 <= k <= c:
        raise InputError("slate longer than the candidates", value=k, expected=f"1 <= k <= {c}")


class UniformPolicy(Policy):
    """Uniform over the candidates at every position, without replacement."""

    name = "uniform"

    def select(self, context: np.ndarray | None, candidates: np.ndarray, k: int) -> Slate:
        candidates = np.asarray(candidates, dtype=np.int64)
        _check_k(k, len(candidates))
        items = self.rng.choice(candidates, size=k, replace=False)
        return Slate(items=items, propensities=np.full(k, 1.0 / len(candidates)))

    def marginals(self, candidates: np.ndarray, k: int) -> np.ndarray:
        """float64[c, k], every entry 1/c."""
        candidates = np.asarray(candidates, dtype=np.int64)
        _check_k(k, len(candidates))
        return np.full((len(candidates), k), 1.0 / len(candidates))

    def distribution(self, contexts: np.ndarray | None, n_rounds: int, k: int) -> np.ndarray:
        """float64[n_rounds, n_actions, k], every entry 1/n_actions (a read-only broadcast view)."""
        _check_k(k, self.n_actions)
        return np.broadcast_to(np.full((1, self.n_actions, k), 1.0 / self.n_actions), (n_rounds, self.n_actions, k))


class EmpiricalPolicy(Policy):
    """The logged frequency of each action at each position, the same in every round.

    ``freq_``: float64[n_actions, n_positions], each column sums to 1.
    ``select`` fills positions in order, drawing each from its column
    restricted to the candidates not yet shown (uniform when that mass is
    0); a slate's propensity j is that draw's probability given the items
    above it, which equals the marginal ``freq_[a, j]`` only for j = 0
    when every action is a candidate.
    """

    name = "empirical"

    def __init__(self, n_actions: int, *, seed: int = 0, source: str = "") -> None:
        super().__init__(n_actions, seed=seed, source=source)
        self.freq_: np.ndarray | None = None

    @classmethod
    def from_logs(cls, logs: BanditLogs, *, seed: int = 0) -> EmpiricalPolicy:
        """The policy that replays ``logs``' action frequencies per position."""
        counts = np.zeros((logs.n_actions, logs.n_positions))
        np.add.at(counts, (logs.action, logs.position), 1.0)
        shown = counts.sum(axis=0)  # (n_positions,)
        if (shown == 0).any():
            raise InputError("no logged round at a position", path=logs.source or None,
                             value=int(np.flatnonzero(shown == 0)[0]),
                             expected=f"rows at every position 0..{logs.n_positions - 1}")
        policy = cls(logs.n_actions, seed=seed, source=logs.source)
        policy.freq_ = counts / shown
        return policy

    def _freq(self, k: int) -> np.ndarray:
        if self.freq_ is None:
            raise InputError("empirical policy without frequencies", expected="EmpiricalPolicy.from_logs(logs)")
        if k > self.freq_.shape[1]:
            raise InputError("more positions than the logs the policy was built from", value=k,
                             expected=f"k <= {self.freq_.shape[1]}")
        return self.freq_[:, :k]

    def select(self, context: np.ndarray | None, candidates: np.ndarray, k: int) -> Slate:
        candidates = np.asarray(candidates, dtype=np.int64)
        _check_k(k, len(candidates))
        weights = self._freq(k)[candidates].copy()  # (c, k)
        items, props = np.empty(k, np.int64), np.empty(k)
        free = np.ones(len(candidates), bool)
        for j in range(k):  # k positions, not rounds
            w = np.where(free, weights[:, j], 0.0)
            p = w / w.sum() if w.sum() > 0 else free / free.sum()
            pick = self.rng.choice(len(candidates), p=p)
            items[j], props[j], free[pick] = candidates[pick], p[pick], False
        return Slate(items=items, propensities=props)

    def distribution(self, contexts: np.ndarray | None, n_rounds: int, k: int) -> np.ndarray:
        """float64[n_rounds, n_actions, k]: ``freq_[:, :k]`` in every round (a read-only broadcast view)."""
        freq = self._freq(k)
        return np.broadcast_to(freq[None], (n_rounds, *freq.shape))

    def _state(self) -> dict[str, np.ndarray]:
        return {} if self.freq_ is None else {"freq": self.freq_}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.freq_ = arrays.get("freq")

"""``greedy``: show the first k candidates, in the order the caller lists them.

The caller's order is the ranking being followed: a recommender's scores
when candidates come from its top-N (the simulator of
:mod:`llm4rec.strategies.simulator` lists each session's candidates that way,
so there ``greedy`` is "rank by the recommender, show the top k, every
step"). It never learns and never explores; propensities are 1.
"""

from __future__ import annotations

import numpy as np

from llm4rec.strategies._common import check_request
from llm4rec.strategies.policy import Policy, Slate

__all__ = ["Greedy"]


class Greedy(Policy):
    """The first k of ``candidates`` (see the module docstring)."""

    name = "greedy"

    def select(self, context: np.ndarray | None, candidates: np.ndarray, k: int) -> Slate:
        """``candidates[:k]`` with propensities 1."""
        cands, k = check_request(candidates, k, self.n_actions)
        return Slate(cands[:k].copy(), np.ones(k))

    def marginals(self, candidates: np.ndarray, k: int) -> np.ndarray:
        """float64[c, k]: 1 where candidate j is at position j, else 0."""
        cands, k = check_request(candidates, k, self.n_actions)
        return np.eye(len(cands), k)

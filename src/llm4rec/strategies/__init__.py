"""Strategies: choose what to show (bandits, RL agents, re-rankers) behind one ``Policy`` interface."""

from llm4rec.strategies.policy import (
                                       POLICIES,
                                       Feedback,
                                       Policy,
                                       Slate,
                                       create_policy,
                                       load_policy,
                                       policy_class,
)
from llm4rec.strategies.rerank import mmr, top_k

__all__ = ["POLICIES", "Feedback", "Policy", "Slate", "create_policy", "load_policy", "mmr", "policy_class",
           "top_k"]

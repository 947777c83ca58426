"""Reusable test helpers: known-answer data and the conformance suite every model passes."""

from llm4rec.testing.chain import cycle_chain
from llm4rec.testing.checkerboard import checkerboard
from llm4rec.testing.conformance import RecommenderConformance

__all__ = ["RecommenderConformance", "checkerboard", "cycle_chain"]

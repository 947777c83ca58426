"""Evaluation: metrics, the batched evaluator, significance tests, reports."""

from llm4rec.evaluation.evaluator import EvalResult, evaluate

__all__ = ["EvalResult", "evaluate"]

"""Recommenders: one interface (:class:`Recommender`), many families."""

from llm4rec.models.base import ModelConfig, Recommender
from llm4rec.models.registry import MODELS, create_model, model_class, transfer_settings

__all__ = ["MODELS", "ModelConfig", "Recommender", "create_model", "model_class",
           "transfer_settings"]

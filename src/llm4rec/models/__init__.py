"""Recommenders: one interface (:class:`Recommender`), many families."""

from llm4rec.models.base import TEXT_MODELS, ModelConfig, Recommendations, Recommender
from llm4rec.models.history import Histories
from llm4rec.models.registry import MODELS, create_model, model_class, transfer_settings

__all__ = ["MODELS", "TEXT_MODELS", "Histories", "ModelConfig", "Recommendations", "Recommender", "create_model",
           "model_class", "transfer_settings"]

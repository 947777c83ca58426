"""Model names -> classes, imported lazily."""

from __future__ import annotations

import importlib
from typing import Any

from llm4rec.errors import InputError

__all__ = ["MODELS", "create_model", "model_class"]

MODELS: dict[str, str] = {
    "pop": "llm4rec.models.popularity:Popularity",
    "itemknn": "llm4rec.models.itemknn:ItemKNN",
    "ease": "llm4rec.models.ease:EASE",
    "als": "llm4rec.models.implicit_mf:ALS",
    "bpr": "llm4rec.models.implicit_mf:BPR",
    "llm-rerank": "llm4rec.models.rerank:LLMRerank",
    "llm-two-tower": "llm4rec.models.two_tower:TwoTower",
    "sasrec": "llm4rec.models.sasrec:SASRec",
    "sasrec-text": "llm4rec.models.sasrec:SASRecText",
    "semantic-knn": "llm4rec.models.semantic_knn:SemanticKNN",
    "ensemble": "llm4rec.models.ensemble:Ensemble",
}


def model_class(name: str) -> type:
    key = name.lower()
    if key not in MODELS:
        raise InputError("unknown model", value=name, expected="one of " + ", ".join(MODELS))
    module, _, attr = MODELS[key].partition(":")
    return getattr(importlib.import_module(module), attr)


def create_model(name: str, settings: dict[str, Any] | None = None):
    """Instantiate model ``name`` with validated settings (InputError on unknown keys)."""
    klass = model_class(name)
    return klass(klass.make_config(settings or {}))

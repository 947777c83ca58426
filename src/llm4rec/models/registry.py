"""Model names -> classes, imported lazily."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from llm4rec.errors import InputError

__all__ = ["MODELS", "create_model", "model_class", "transfer_settings"]

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
    "generative": "llm4rec.models.generative:Generative",
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


def transfer_settings(path: str | Path) -> tuple[str, dict[str, Any]]:
    """(model name, settings) that apply the model saved at ``path`` to another dataset.

    Only models with an ``init_from`` setting transfer (``sasrec-text``: its
    items are known by their text). The settings are the saved ones with
    ``init_from=path`` and ``epochs=0`` (zero-shot; set ``epochs`` to
    fine-tune); the seed and run directory are left to the new run.
    """
    import json

    from llm4rec.models.bundle import read_manifest

    path = Path(path)
    read_manifest(path)  # a whole, unmodified bundle of a known format, or a clear error
    meta = json.loads((path / "config.json").read_text())
    name = meta.get("model", "?")
    if "init_from" not in model_class(name).Config.model_fields:
        raise InputError("this saved model cannot be applied to another dataset's items", path=path,
                         value=name, expected="a model that knows items by their text: sasrec-text")
    settings = {k: v for k, v in meta["config"].items() if k not in ("seed", "run_dir")}
    return name, {**settings, "init_from": str(path), "epochs": 0}

"""The recommendation service: HTTP API, event store, ANN index, model registry, API keys.

``create_app(settings)`` builds the FastAPI app (``llm4rec serve`` runs it
with uvicorn); :class:`RecommendationService` is the same service without
HTTP. Nothing in the library imports this package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EventStore", "ModelRegistry", "RecommendationService", "ServiceSettings", "create_app"]

_WHERE = {"EventStore": "store", "ModelRegistry": "registry", "RecommendationService": "service",
          "ServiceSettings": "settings", "create_app": "app"}


def __getattr__(name: str) -> Any:  # lazy: importing llm4rec.serving pulls in neither fastapi nor sqlalchemy
    if name not in _WHERE:
        raise AttributeError(f"module 'llm4rec.serving' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"llm4rec.serving.{_WHERE[name]}"), name)

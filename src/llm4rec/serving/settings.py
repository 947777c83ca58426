"""The service's one typed config: where the model and the events live, limits, policies, security."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llm4rec.errors import InputError

__all__ = ["ENVIRONMENT_VARIABLE", "ServiceSettings"]

#: how ``llm4rec serve --workers N`` hands the settings to each worker process (JSON)
ENVIRONMENT_VARIABLE = "LLM4REC_SERVE_SETTINGS"


class ServiceSettings(BaseModel):
    """Everything :func:`~llm4rec.serving.create_app` needs; a misspelt key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Path = Field(..., description="A model registry root (hot reload, rollback) or one saved bundle.")
    store: str = Field("llm4rec-events.db", description="Event store: a SQLite file path or URL, or "
                                                         "postgresql://user@host/db.")
    default_k: int = Field(10, ge=1, description="List length when a request gives no k.")
    max_k: int = Field(100, ge=1, description="The largest k a request may ask for.")
    candidates: int = Field(100, ge=1, description="Candidates the model hands to the policy per request.")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Requests with a larger body get 413.")
    max_events: int = Field(1000, ge=1, description="Events per feedback batch.")
    max_history: int = Field(1000, ge=1, description="Items of a history given in a request body.")
    max_query_chars: int = Field(1000, ge=1, description="Characters of a free-text query.")
    policy: str = Field("greedy", description="The policy used when a request names none.")
    policies: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"greedy": {}, "thompson": {"propensity_samples": 200}, "uniform": {},
                                 "epsilon-greedy": {"epsilon": 0.1}},
        description="Policies a request may choose (policy name -> settings of llm4rec.strategies).")
    seed: int = Field(0, description="Seed of the policies' random streams.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; empty: CORS off.")
    metrics_key: bool = Field(False, description="Require a read key for /metrics.")
    reload_interval: float = Field(1.0, gt=0, description="Seconds between checks of the registry and the store "
                                                          "for a new model version and new items.")
    key_cache_seconds: float = Field(5.0, ge=0, description="How long a checked API key is trusted before it is "
                                                            "looked up again (a revoked key stops within this).")
    ann_threshold: int = Field(50_000, ge=0, description="Catalogues larger than this are searched with a faiss "
                                                         "index and re-scored exactly.")
    compute_threads: int = Field(2, ge=1, description="Requests computed at once per worker process (more "
                                                       "only contend for Python's GIL: use workers for cores).")
    threads: int | None = Field(None, ge=1, description="Threads of faiss searches (default: faiss's own).")
    reports: Path | None = Field(None, description="A directory of offline result files (evaluate --json, "
                                                   "simulate, ope) the dashboard charts.")
    audience_users: int = Field(100_000, ge=1, description="Users scored when the dashboard asks which users an "
                                                           "item would be recommended to.")

    @field_validator("policies")
    @classmethod
    def _known_policies(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from llm4rec.strategies.policy import POLICIES

        allowed = ("greedy", "uniform", "epsilon-greedy", "thompson", "ucb1")
        for name in value:
            if name not in POLICIES or name not in allowed:
                raise ValueError(f"policy {name!r} cannot serve (it needs per-request features); "
                                 f"expected some of {', '.join(allowed)}")
        return value

    @classmethod
    def make(cls, **values: Any) -> ServiceSettings:
        """Validated settings; a bad value is an InputError naming the setting."""
        try:
            settings = cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "?"
            raise InputError(f"bad service setting {key!r}: {err['msg']}", value=err.get("input"),
                             expected=f"a valid {key}") from None
        if settings.policy not in settings.policies:
            raise InputError("the default policy is not among the served policies", value=settings.policy,
                             expected="one of " + ", ".join(settings.policies))
        if settings.default_k > settings.max_k:
            raise InputError("default_k exceeds max_k", value=settings.default_k, expected=f"<= {settings.max_k}")
        return settings

    def to_environment(self) -> dict[str, str]:
        """The environment variable that carries these settings to worker processes."""
        return {ENVIRONMENT_VARIABLE: self.model_dump_json()}

    @classmethod
    def from_environment(cls) -> ServiceSettings:
        raw = os.environ.get(ENVIRONMENT_VARIABLE)
        if not raw:
            raise InputError(f"no service settings in ${ENVIRONMENT_VARIABLE}",
                             expected="start the service with `llm4rec serve`")
        return cls.make(**json.loads(raw))

"""Request and response bodies of the ``/v1`` API (pydantic; every one with an example in the OpenAPI schema)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ErrorBody", "Event", "FeedbackAck", "FeedbackBatch", "Health", "ItemBody", "ItemPut", "Recommended",
           "RecommendationRequest", "Recommendations", "Similar", "SimilarItem", "UserForgotten"]

#: identifiers (users, items, events, recommendations): printable, no whitespace at the ends
Id = Field(min_length=1, max_length=128, pattern=r"^[^\s\x00-\x1f](.*[^\s\x00-\x1f])?$")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Recommended(BaseModel):
    item: str = Field(description="The item's external id.")
    label: str = Field(description="Its title (PII scrubbed), or its id.")
    score: float = Field(description="The model's score (higher is better); ranks, not a probability.")
    position: int = Field(description="0-based slot in the slate.")
    propensity: float = Field(description="P(this item at this position) under the serving policy.")
    explanation: dict | None = Field(None, description="Why, when asked with explain=true.")


class Recommendations(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "recommendation_id": "4b1f9c0e8a2d4e55b7a3f0c1d2e3f4a5", "user": "196", "policy": "greedy",
        "model_version": "v000002", "fallback": False,
        "items": [{"item": "50", "label": "Star Wars (1977)", "score": 3.21, "position": 0, "propensity": 1.0,
                   "explanation": None}]}]})

    recommendation_id: str = Field(description="Quote it in feedback events about this slate.")
    user: str | None
    policy: str
    model_version: str
    fallback: bool = Field(description="True when nothing personal was known: the non-personalised ranking.")
    experiment: str | None = Field(None, description="The running experiment that chose the policy and model "
                                                     "version, if any.")
    arm: str | None = Field(None, description="The user's arm in that experiment.")
    items: list[Recommended]


class RecommendationRequest(_Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"user": "196", "history": ["50", "181"], "query": "something like Toy Story for a child", "k": 5,
         "policy": "greedy", "explain": False}]})

    user: str | None = Field(None, description="A user id: their live history is used (and extended by "
                                               "`history`).", min_length=1, max_length=128)
    history: list[str] = Field(default_factory=list, description="Item ids, oldest first; unknown ids are skipped.")
    query: str | None = Field(None, description="Free text, encoded with the model's text encoder and fused with "
                                                "the history.", min_length=1)
    k: int | None = Field(None, ge=1, description="List length (default and maximum: the service's settings).")
    policy: str | None = Field(None, description="A served policy (default: the service's).")
    explain: bool = False
    exclude_seen: bool = Field(True, description="Leave out items of the history.")

    @field_validator("history")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for i, item in enumerate(value):
            if not item or len(item) > 128:
                raise ValueError(f"history[{i}] must be an item id of 1 to 128 characters")
        return value


class SimilarItem(BaseModel):
    item: str
    label: str
    score: float = Field(description="Similarity (cosine of the embeddings, or the model's score).")


class Similar(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "item": "50", "model_version": "v000001", "items": [{"item": "181", "label": "Return of the Jedi (1983)",
                                                             "score": 0.93}]}]})

    item: str
    model_version: str
    items: list[SimilarItem]


class Event(_Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "event_id": "e-000123", "type": "click", "user": "196", "item": "50", "timestamp": 1767225600.0,
        "recommendation_id": "4b1f9c0e8a2d4e55b7a3f0c1d2e3f4a5", "position": 0, "value": None}]})

    event_id: str = Field(description="Unique per event: a retried event with the same id is stored once.",
                          min_length=1, max_length=128)
    type: Literal["impression", "click", "purchase", "rating", "dwell", "like", "dismiss"] = Field(
        description="click, like, purchase, rating and dwell join the user's history at once (click, like and "
                    "purchase reward the slate's policy); dismiss hides the item from the user's lists.")
    user: str = Field(min_length=1, max_length=128)
    item: str = Field(min_length=1, max_length=128)
    timestamp: float = Field(description="Unix seconds.")
    recommendation_id: str | None = Field(None, max_length=128, description="The slate it came from, if any.")
    position: int | None = Field(None, ge=0, le=10_000, description="Its 0-based slot in that slate.")
    value: float | None = Field(None, description="Rating value, or dwell seconds.")

    @field_validator("timestamp", "value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class FeedbackBatch(_Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"events": [
        Event.model_config["json_schema_extra"]["examples"][0]]}]})

    events: list[Event] = Field(min_length=1)


class FeedbackAck(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"accepted": 3, "duplicates": 1}]})

    accepted: int = Field(description="New events, durably stored.")
    duplicates: int = Field(description="Events whose id was already stored (ignored).")


class ItemPut(_Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "fields": {"title": "The Wild Robot (2024)", "categories": "Animation|Adventure"}}]})

    fields: dict[str, str] = Field(description="Text columns the model's template reads (e.g. title, "
                                               "categories).", min_length=1)


class ItemBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"item": "new-1", "created": True,
                                                               "model_version": "v000001", "n_items": 1683}]})

    item: str
    created: bool
    model_version: str
    n_items: int


class UserForgotten(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"events": 12, "recommendations": 3}]})

    events: int
    recommendations: int


class Health(BaseModel):
    status: str
    model_version: str | None = None
    n_items: int | None = None


class ErrorBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"error": {
        "status": 404, "message": "unknown item '999999'", "expected": "one of the model's items"}}]})

    error: dict


# ------------------------------------------------------------------ browsing (read scope)
class Me(BaseModel):
    key_id: str
    name: str
    scopes: list[str]


class UserList(BaseModel):
    users: list[str] = Field(description="User ids starting with the prefix: the model's and those seen in feedback.")


class HistoryItem(BaseModel):
    item: str
    label: str
    source: Literal["fit", "feedback"] = Field(description="From the training data, or from feedback since.")
    type: str | None = Field(None, description="The feedback event's type.")
    timestamp: float | None = None


class UserHistory(BaseModel):
    user: str
    known: bool = Field(description="The model was trained on this user.")
    items: list[HistoryItem] = Field(description="The live history, oldest first.")
    dismissed: list[str] = Field(description="Items the user dismissed (never recommended to them again).")


class ItemLabel(BaseModel):
    item: str
    label: str


class ItemList(BaseModel):
    items: list[ItemLabel]


class ItemDetail(BaseModel):
    item: str
    label: str
    fields: dict[str, str] = Field(description="The text fields given through PUT /v1/items (empty for items "
                                               "known from training only).")
    text: str = Field(description="The item's text as the page shows it (its fields, or its label).")
    n_interactions: int = Field(description="Interaction events about this item in the store.")
    users: list[str] = Field(description="Some users who interacted with it, most recent first.")
    model_version: str


# ------------------------------------------------------------------ admin
class LiveStats(BaseModel):
    now: float
    bucket_seconds: int
    model_version: str
    n_items: int
    routes: list[str]
    series: list[dict] = Field(description="Per bucket: t, requests {route: n}, p50_ms and p99_ms {route: ms}, "
                                           "errors, events. This worker only.")
    last_minute: dict = Field(description="requests_per_s, events_per_s, errors, p50_ms, p99_ms.")


class OnlineStats(BaseModel):
    bucket_seconds: int
    series: list[dict] = Field(description="Per bucket and (model_version, policy, arm): shown, clicks, ctr with "
                                           "Wilson 95% interval, purchases, conversion with interval.")
    totals: list[dict]


class ArmSpec(_Body):
    name: str = Field(min_length=1, max_length=64)
    policy: str | None = Field(None, description="A served policy (default: the service's).")
    model_version: str | None = Field(None, description="A registry version (default: the current one).")
    share: float = Field(1.0, gt=0, description="Relative share of the users.")


class ExperimentCreate(_Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "explore-vs-greedy", "arms": [{"name": "A", "policy": "greedy", "share": 0.5},
                                              {"name": "B", "policy": "epsilon-greedy", "share": 0.5}]}]})
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    arms: list[ArmSpec] = Field(min_length=2, max_length=8)


class Experiment(BaseModel):
    name: str
    arms: list[dict]
    started: float
    stopped: float | None
    active: bool


class ExperimentList(BaseModel):
    experiments: list[Experiment]


class Readout(BaseModel):
    name: str
    active: bool
    started: float
    stopped: float | None
    arms: list[dict] = Field(description="Per arm: slates, shown, clicks, ctr with Wilson 95% interval.")
    test: dict = Field(description="Two-proportion z-test of the second arm's CTR against the first's.")
    off_policy: list[dict] = Field(description="SNIPS estimate of each arm on the others' traffic, with a 95% "
                                               "interval, beside its online value.")


class Audience(BaseModel):
    item: str
    k: int
    users: list[dict] = Field(description="[{user, rank}]: users whose top-k now holds the item (0 = first).")
    scanned: int = Field(description="Users scored.")


class ModelVersion(BaseModel):
    version: str
    published: str | None
    current: bool
    serving: bool
    model: str | None
    created: str | None
    n_users: int | None
    n_items: int | None
    provenance: dict
    metrics: dict | None = Field(description="Offline metrics saved with the bundle (evaluate --save-model).")
    protocol: str | None
    stage: str | None


class ModelList(BaseModel):
    registry: bool = Field(description="False when one bundle is served (no versions to publish or roll back).")
    serving: str
    current: str | None
    versions: list[ModelVersion]
    reload_failures: int
    last_reload_error: str | None


class PublishRequest(_Body):
    bundle: str = Field(min_length=1, max_length=4096, description="A bundle directory on the server.")


class Published(BaseModel):
    version: str
    current: str | None


class ReportList(BaseModel):
    reports: list[dict] = Field(description="[{name, kind, modified}] of the JSON files in the reports directory.")


class Report(BaseModel):
    name: str
    kind: str = Field(description="evaluate, compare, simulate, ope, training or json (anything else).")
    modified: float
    data: Any = Field(description="The file's JSON (non-finite numbers as null).")

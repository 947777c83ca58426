"""Prometheus metrics of one service process (a registry per app: no module-level state).

Request counts and latency histograms per route template (never the raw path,
which holds ids), events ingested per type, slates and shown items per
policy, the model version and catalogue size, the ANN recall@10 measured at
load, and the online CTR per policy, read from the event store when scraped
(so it covers every worker).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ServiceMetrics"]

#: latency buckets (seconds) around the service's 20 ms target
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    """The collectors, in their own :class:`prometheus_client.CollectorRegistry`."""

    def __init__(self, ctr: Callable[[], dict[str, tuple[int, int]]] | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("llm4rec_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram("llm4rec_request_seconds", "HTTP request latency", ["route"], buckets=BUCKETS,
                                 registry=r)
        self.events = Counter("llm4rec_events_ingested", "Feedback events received", ["type"], registry=r)
        self.slates = Counter("llm4rec_slates", "Slates served", ["policy"], registry=r)
        self.shown = Counter("llm4rec_items_shown", "Items shown in served slates", ["policy"], registry=r)
        self.model = Info("llm4rec_model", "The served model version", registry=r)
        self.catalogue = Gauge("llm4rec_catalogue_items", "Items the served model can recommend", registry=r)
        self.recall = Gauge("llm4rec_ann_recall_at_10", "Recall@10 of the ANN index against exact scoring, "
                                                        "measured at load (1 when scoring is exact)", registry=r)
        self.reload_failures = Counter("llm4rec_reload_failures", "Model versions refused at load", registry=r)
        self.log_failures = Counter("llm4rec_slate_log_failures", "Served slates the store could not log",
                                    registry=r)
        self._ctr = ctr
        if ctr is not None:
            from prometheus_client.core import GaugeMetricFamily

            outer = self

            class _OnlineCTR:
                def collect(self) -> Any:
                    family = GaugeMetricFamily("llm4rec_online_ctr", "Clicks and purchases per shown item, per "
                                                                     "policy (all workers, from the store)",
                                               labels=["policy"])
                    for policy, (shown, rewarded) in sorted(outer._ctr().items()):
                        family.add_metric([policy], rewarded / shown if shown else 0.0)
                    yield family

            r.register(_OnlineCTR())

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def events_ingested(self, events: list[dict]) -> None:
        for e in events:
            self.events.labels(e["type"]).inc()

    def slate_served(self, policy: str, n: int) -> None:
        self.slates.labels(policy).inc()
        self.shown.labels(policy).inc(n)

    def model_loaded(self, version: str, n_items: int, recall: float | None) -> None:
        self.model.info({"version": version})
        self.catalogue.set(n_items)
        self.recall.set(1.0 if recall is None else recall)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

"""Prometheus metrics of one service process (a registry per app: no module-level state).

Request counts and latency histograms per route template (never the raw path,
which holds ids), events ingested per type, slates and shown items per
policy, the model version and catalogue size, the ANN recall@10 measured at
load, and the online CTR per policy, read from the event store when scraped
(so it covers every worker).

:class:`Timeline` keeps the last hour of the same traffic in 10-second
buckets (requests and latency percentiles per route, errors, events) for the
dashboard's live charts.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["ServiceMetrics", "Timeline"]

#: latency buckets (seconds) around the service's 20 ms target
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: the timeline's bucket width and length (seconds)
TIMELINE_BUCKET = 10
TIMELINE_SPAN = 3600
#: latencies kept per route and bucket for its percentiles (a uniform sample beyond that: reservoir)
TIMELINE_SAMPLES = 512


class _Bucket:
    __slots__ = ("errors", "events", "latencies", "requests")

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.latencies: dict[str, list[float]] = {}
        self.errors = 0
        self.events = 0


class Timeline:
    """The last ``TIMELINE_SPAN`` seconds of one process's traffic in ``TIMELINE_BUCKET``-second buckets."""

    def __init__(self, clock: Callable[[], float] = time.time, seed: int = 0) -> None:
        self._clock = clock
        self._buckets: OrderedDict[int, _Bucket] = OrderedDict()
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)

    def _bucket(self) -> _Bucket:
        key = int(self._clock() // TIMELINE_BUCKET)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
            oldest = key - TIMELINE_SPAN // TIMELINE_BUCKET
            while self._buckets and next(iter(self._buckets)) <= oldest:
                self._buckets.popitem(last=False)
        return bucket

    def request(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            b = self._bucket()
            n = b.requests[route] = b.requests.get(route, 0) + 1
            sample = b.latencies.setdefault(route, [])
            if len(sample) < TIMELINE_SAMPLES:
                sample.append(seconds)
            else:  # reservoir sampling: every request equally likely to be kept
                j = int(self._rng.integers(n))
                if j < TIMELINE_SAMPLES:
                    sample[j] = seconds
            if status >= 400:
                b.errors += 1

    def events(self, n: int) -> None:
        with self._lock:
            self._bucket().events += n

    def series(self, minutes: float = 60) -> dict[str, Any]:
        """``{"now", "bucket_seconds", "routes", "series": [...], "last_minute": {...}}`` (see the API docs)."""
        now = self._clock()
        start = int((now - minutes * 60) // TIMELINE_BUCKET)
        with self._lock:
            kept = [(key, b) for key, b in self._buckets.items() if key >= start]
            rows, routes = [], set()
            for key, b in kept:
                routes.update(b.requests)
                rows.append({"t": key * TIMELINE_BUCKET, "requests": dict(b.requests),
                             "p50_ms": {r: _ms(v, 50) for r, v in b.latencies.items()},
                             "p99_ms": {r: _ms(v, 99) for r, v in b.latencies.items()},
                             "errors": b.errors, "events": b.events})
            first = int((now - 60) // TIMELINE_BUCKET) + 1  # the buckets that began in the last minute
            recent = [b for key, b in kept if key >= first]
            pooled: dict[str, list[float]] = {}
            for b in recent:
                for r, v in b.latencies.items():
                    pooled.setdefault(r, []).extend(v)
        span = max(now - first * TIMELINE_BUCKET, 1.0)
        last = {"requests_per_s": sum(sum(b.requests.values()) for b in recent) / span,
                "events_per_s": sum(b.events for b in recent) / span,
                "errors": sum(b.errors for b in recent),
                "p50_ms": {r: _ms(v, 50) for r, v in pooled.items()},
                "p99_ms": {r: _ms(v, 99) for r, v in pooled.items()}}
        return {"now": now, "bucket_seconds": TIMELINE_BUCKET, "routes": sorted(routes), "series": rows,
                "last_minute": last}


def _ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds), q) * 1000.0)


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
        self.timeline = Timeline()
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
        self.timeline.request(f"{method} {route}", status, seconds)

    def events_ingested(self, events: list[dict]) -> None:
        for e in events:
            self.events.labels(e["type"]).inc()
        self.timeline.events(len(events))

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

"""The loop from serving back to offline evaluation: a bandit serves simulated users, its logged propensities
estimate another policy, and the estimate is checked against that policy's own online value."""

from __future__ import annotations

import json
import secrets

import numpy as np
import pytest
from fastapi.testclient import TestClient

from llm4rec.cli.main import main
from llm4rec.serving import EventStore, ServiceSettings, create_app
from llm4rec.serving.auth import hash_key, new_key
from tests.serving import _models

pytestmark = pytest.mark.slow

K = 2
POSITION = np.array([1.0, 0.6])  # click probability multiplier per slot


def run_rounds(client: TestClient, policy: str, n: int, base: dict[str, float], rng: np.random.Generator,
               prefix: str) -> tuple[int, int]:
    """Serve ``n`` fresh users with ``policy``, click with probability base[item] * POSITION[slot], send the
    clicks back in batches; (items shown, clicks)."""
    shown = clicks = 0
    events: list[dict] = []
    for r in range(n):
        body = client.get(f"/v1/users/{prefix}{r}/recommendations", params={"k": K, "policy": policy}).json()
        for slot in body["items"]:
            shown += 1
            if rng.random() < base[slot["item"]] * POSITION[slot["position"]]:
                clicks += 1
                events.append({"event_id": f"{prefix}{r}-{slot['position']}", "type": "click",
                               "user": f"{prefix}{r}", "item": slot["item"], "timestamp": float(r),
                               "recommendation_id": body["recommendation_id"], "position": slot["position"]})
            else:
                events.append({"event_id": f"{prefix}{r}-{slot['position']}", "type": "impression",
                               "user": f"{prefix}{r}", "item": slot["item"], "timestamp": float(r),
                               "recommendation_id": body["recommendation_id"], "position": slot["position"]})
        if len(events) >= 40 or r == n - 1:
            assert client.post("/v1/feedback", json={"events": events}).status_code == 200
            events = []
    return shown, clicks


def test_a_bandits_service_logs_estimate_another_policys_online_value(tmp_path, capsys):
    bundle = _models.bundle(tmp_path, "pop", n_items=20)
    registry = _models.registry(bundle, tmp_path / "registry")
    store_url = f"sqlite:///{tmp_path}/events.db"
    from llm4rec.models.base import Recommender

    items = [str(i) for i in Recommender.load(bundle).item_ids]
    n_items = len(items)
    rng = np.random.default_rng(3)
    base = dict(zip(items, rng.uniform(0.05, 0.6, n_items)))
    settings = ServiceSettings.make(model=registry, store=store_url, candidates=n_items,
                                    policies={"epsilon-greedy": {"epsilon": 0.3}, "uniform": {}},
                                    policy="epsilon-greedy")
    key = new_key()
    store = EventStore(store_url)
    store.add_key("k_" + secrets.token_hex(4), "sim", hash_key(key), ["read", "write"], None)
    with TestClient(create_app(settings)) as client:
        client.headers["X-API-Key"] = key
        run_rounds(client, "epsilon-greedy", 2500, base, rng, "eg")
        shown, clicks = run_rounds(client, "uniform", 2500, base, rng, "un")
    online = clicks / shown
    truth = float(np.mean(list(base.values())) * POSITION.mean())
    assert abs(online - truth) < 0.03  # the simulator is what it claims

    # the bandit learned: it shows the best items more than uniformly
    frame = store.impressions_frame(policy="epsilon-greedy")
    assert frame.height == 2500 * K
    best = max(base, key=base.get)
    assert (frame["item_id"] == best).mean() > 3 / n_items
    store.close()

    out = tmp_path / "ope.json"
    code = main(["ope", "--logs", str(tmp_path / "events.db"), "--logged-policy", "epsilon-greedy", "--policy", "uniform",
                 "--n-actions", str(n_items), "--bootstrap", "300", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    estimates = json.loads(out.read_text())["estimates"]
    for name in ("snips", "dr"):
        est = estimates[name]
        assert est["ci_low"] <= online <= est["ci_high"], (name, est, online)
        assert abs(est["value"] - online) / online < 0.15, (name, est, online)

"""The HTTP API in process (real store: SQLite and PostgreSQL; real models; real faiss)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from llm4rec.models.base import Recommender
from llm4rec.serving import EventStore
from tests.serving import _models
from tests.serving._models import add_key, model_item_text


def test_known_user_gets_the_models_top_k_with_propensities_and_the_slate_is_logged(serve, bundles, store_url):
    client, _ = serve()
    model = Recommender.load(bundles["semantic-knn"])
    r = client.get("/v1/users/5/recommendations", params={"k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = model.recommend(users=["5"], k=5).items[0].tolist()
    assert [i["item"] for i in body["items"]] == expected
    assert [i["propensity"] for i in body["items"]] == [1.0] * 5
    assert [i["position"] for i in body["items"]] == list(range(5))
    assert body["fallback"] is False and body["policy"] == "greedy" and body["model_version"] == "v000001"
    client.app.state.service.flush()  # slates are logged a moment after the answer
    logged = EventStore(store_url).recommendation(body["recommendation_id"])
    assert logged["items"] == expected and logged["propensities"] == [1.0] * 5


def test_feedback_counts_at_once_without_retraining(serve, bundles):
    client, _ = serve()
    model = Recommender.load(bundles["semantic-knn"])
    first = client.get("/v1/users/new-user/recommendations", params={"k": 5}).json()
    assert first["fallback"] is True  # never seen: the non-personalised ranking
    assert [i["item"] for i in first["items"]] == model.recommend(histories=[[]], k=5).items[0].tolist()
    clicked = "17"
    ack = client.post("/v1/feedback", json={"events": [
        {"event_id": "e1", "type": "click", "user": "new-user", "item": clicked, "timestamp": 1.0,
         "recommendation_id": first["recommendation_id"], "position": 0}]})
    assert ack.status_code == 200 and ack.json() == {"accepted": 1, "duplicates": 0}
    after = client.get("/v1/users/new-user/recommendations", params={"k": 5}).json()
    assert after["fallback"] is False
    assert [i["item"] for i in after["items"]] == model.recommend(histories=[[clicked]], k=5).items[0].tolist()
    again = client.post("/v1/feedback", json={"events": [
        {"event_id": "e1", "type": "click", "user": "new-user", "item": clicked, "timestamp": 1.0}]})
    assert again.json() == {"accepted": 0, "duplicates": 1}


def test_history_and_query_in_the_body(serve, bundles):
    client, _ = serve()
    model = Recommender.load(bundles["semantic-knn"])
    row = _models.data().item_table().row(40, named=True)
    title = f"{row['title']}: {row['description']}"  # the title alone also matches its sequel's
    r = client.post("/v1/recommendations", json={"query": title, "k": 3})
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["item"] == str(model.item_ids[40])  # its own text finds it
    history = [str(t) for t in model.item_ids[:4]]
    r = client.post("/v1/recommendations", json={"history": history, "k": 5})
    assert [i["item"] for i in r.json()["items"]] == model.recommend(histories=[history], k=5).items[0].tolist()
    fused = client.post("/v1/recommendations", json={"history": history, "query": title, "k": 5}).json()
    assert str(model.item_ids[40]) in [i["item"] for i in fused["items"]]
    explained = client.post("/v1/recommendations", json={"history": history, "k": 2, "explain": True}).json()
    assert explained["items"][0]["explanation"]["because"]


def test_similar_items_and_live_items(serve, bundles):
    client, _ = serve()
    model = Recommender.load(bundles["semantic-knn"])
    r = client.get("/v1/items/3/similar", params={"k": 4})
    assert r.status_code == 200
    assert "3" not in [i["item"] for i in r.json()["items"]]
    attrs = model_item_text(3)
    put = client.put("/v1/items/twin-of-3", json={"fields": attrs})
    assert put.status_code == 200, put.text
    assert put.json()["created"] is True and put.json()["n_items"] == model.n_items_ + 1
    twin = client.get("/v1/items/3/similar", params={"k": 1}).json()
    assert twin["items"][0]["item"] == "twin-of-3"  # the same text: the same embedding
    found = client.post("/v1/recommendations", json={"query": attrs["title"], "k": 2}).json()
    assert {i["item"] for i in found["items"]} == {"3", "twin-of-3"}
    assert client.get("/v1/items/nope/similar").status_code == 404


def test_id_only_models_refuse_new_items_and_queries(serve):
    client, _ = serve("als")
    r = client.put("/v1/items/x", json={"fields": {"title": "x"}})
    assert r.status_code == 422 and "retraining" in r.json()["error"]["message"]
    r = client.post("/v1/recommendations", json={"query": "a film", "k": 2})
    assert r.status_code == 422 and "text encoder" in r.json()["error"]["message"]


@pytest.mark.parametrize("name", ["als", "semantic-knn"])  # an exact view, and one that only shortlists
def test_ann_retrieval_matches_exact_scoring(serve, bundles, name):
    client, _ = serve(name, ann_threshold=0)  # force the faiss index on a small catalogue
    model = Recommender.load(bundles[name])
    users = [str(u) for u in model.user_ids[:30]]
    overlap = []
    for u in users:
        got = [i["item"] for i in client.get(f"/v1/users/{u}/recommendations", params={"k": 10}).json()["items"]]
        want = model.recommend(histories=[[str(t) for t in model.item_ids[model.fit_histories(
            np.asarray([int(model.users_.index([u])[0])])).items]]], k=10).items[0].tolist()
        overlap.append(len(set(got) & set(want)) / 10)
    assert np.mean(overlap) >= 0.95
    metrics = client.get("/metrics").text
    recall = float(next(line.split()[-1] for line in metrics.splitlines()
                        if line.startswith("llm4rec_ann_recall_at_10")))
    assert recall >= 0.95


def test_forget_user_leaves_no_trace(serve, store_url):
    client, _ = serve()
    user = "forget-me-42"
    rec = client.get(f"/v1/users/{user}/recommendations", params={"k": 3}).json()
    client.post("/v1/feedback", json={"events": [
        {"event_id": f"f{i}", "type": "click", "user": user, "item": it["item"], "timestamp": float(i),
         "recommendation_id": rec["recommendation_id"], "position": i} for i, it in enumerate(rec["items"])]})
    known = client.get("/v1/users/5/recommendations").json()
    assert known["fallback"] is False
    r = client.delete(f"/v1/users/{user}")
    assert r.status_code == 200 and r.json() == {"events": 3, "recommendations": 1}
    assert client.delete("/v1/users/5").status_code == 200
    assert client.get("/v1/users/5/recommendations").json()["fallback"] is True  # fit history no longer used
    store = EventStore(store_url)
    frame = store.events_frame()
    assert user not in frame["user_id"].to_list()
    assert all(user not in str(row) for row in store.audit_rows())
    assert user not in store.impressions_frame().to_pandas().to_string()


def test_keys_scopes_and_rate_limits(serve, store_url):
    client, _ = serve(scopes=("read",), key_cache_seconds=0)
    assert client.get("/v1/users/5/recommendations").status_code == 200
    r = client.post("/v1/feedback", json={"events": [
        {"event_id": "x", "type": "click", "user": "5", "item": "3", "timestamp": 1.0}]})
    assert r.status_code == 403 and "write" in r.json()["error"]["message"]
    assert client.delete("/v1/users/5").status_code == 403
    bare = client.get("/v1/users/5/recommendations", headers={"Authorization": ""})
    assert bare.status_code == 401
    wrong = client.get("/v1/users/5/recommendations", headers={"Authorization": "Bearer l4r_wrong"})
    assert wrong.status_code == 401
    limited = add_key(store_url, ["read"], rate=4)
    codes = [client.get("/v1/users/5/recommendations", headers={"Authorization": "Bearer " + limited})
             for _ in range(8)]
    refused = [c for c in codes if c.status_code == 429]
    assert refused and int(refused[0].headers["Retry-After"]) >= 1
    store = EventStore(store_url)
    key_id = next(k["key_id"] for k in store.list_keys() if k["rate_per_minute"] == 4)
    store.revoke_key(key_id)
    assert client.get("/v1/healthz").status_code == 404
    assert client.get("/healthz", headers={"Authorization": ""}).status_code == 200
    after = client.get("/v1/users/5/recommendations", headers={"Authorization": "Bearer " + limited})
    assert after.status_code == 401


def test_bad_requests_get_clear_4xx(serve):
    client, settings = serve(max_body_bytes=4096)
    cases = [
        client.get("/v1/users/5/recommendations", params={"k": settings.max_k + 1}),
        client.get("/v1/users/5/recommendations", params={"k": 0}),
        client.get("/v1/users/5/recommendations", params={"policy": "nope"}),
        client.post("/v1/recommendations", content=b"{not json", headers={"Content-Type": "application/json"}),
        client.post("/v1/recommendations", json={"k": 3, "surprise": 1}),
        client.post("/v1/feedback", json={"events": [{"event_id": "a", "type": "view", "user": "5", "item": "3",
                                                      "timestamp": 1.0}]}),
        client.post("/v1/feedback", json={"events": []}),
        client.post("/v1/recommendations", json={"history": ["1"] * 2000}),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, r.text
        assert r.json()["error"]["message"]
    assert cases[3].status_code == 400 and "JSON" in cases[3].json()["error"]["message"]
    assert cases[-1].status_code == 413


def test_metrics_and_logs_hold_no_personal_data(serve, caplog):
    client, _ = serve()
    secret_user = "alice@example.com"
    with caplog.at_level(logging.INFO, logger="llm4rec.serving.access"):
        client.get(f"/v1/users/{secret_user}/recommendations")
        client.get("/v1/users/5/recommendations")
    assert caplog.records and all(secret_user not in r.getMessage() for r in caplog.records)
    deadline = time.monotonic() + 10  # served slates are logged to the store in the background
    while 'llm4rec_online_ctr{policy="greedy"}' not in (text := client.get("/metrics").text) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert secret_user not in text
    assert 'llm4rec_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",status="200"} 2.0' \
        in text
    assert "llm4rec_request_seconds_bucket" in text and 'llm4rec_model_info{version="v000001"} 1.0' in text
    assert "llm4rec_catalogue_items" in text and 'llm4rec_online_ctr{policy="greedy"}' in text

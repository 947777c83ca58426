"""The API behind the web app, in process: browsing, dismiss and like, query words, live and online stats,
experiments with their readout, an item's audience, the model registry from the dashboard, store migration."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import sqlalchemy as sa

from llm4rec.models.base import Recommender
from llm4rec.serving import EventStore
from llm4rec.serving.experiments import assign, wilson
from tests.serving import _models
from tests.serving._models import add_key, model_item_text


def events(*rows) -> dict:
    return {"events": [{"event_id": uuid.uuid4().hex, "type": kind, "user": user, "item": item, "timestamp": t,
                        **extra} for kind, user, item, t, extra in rows]}


def test_me_users_items_and_history_with_titles(serve, bundles, store_url):
    client, _ = serve()
    model = Recommender.load(bundles["semantic-knn"])
    assert client.get("/v1/me").json()["scopes"] == ["admin"]
    users = client.get("/v1/users", params={"prefix": "1", "limit": 200}).json()["users"]
    expected = sorted(u for u in model.users_.tokens if u.startswith("1"))
    assert users == expected
    client.post("/v1/feedback", json=events(("click", "1zz-new", "3", 1.0, {})))
    assert "1zz-new" in client.get("/v1/users", params={"prefix": "1z"}).json()["users"]

    h = client.get("/v1/users/5/history").json()
    fit = model.fit_histories(np.asarray(model.users_.index(["5"]))).items
    assert h["known"] is True
    assert [i["item"] for i in h["items"]] == model.items_.token(fit)
    assert [i["label"] for i in h["items"]] == [str(x) for x in model.item_labels_[fit]]
    assert {i["source"] for i in h["items"]} == {"fit"}

    title = str(model.item_labels_[7])
    found = client.get("/v1/items", params={"q": title.lower()[:12]}).json()["items"]
    assert {"item": model.items_.token(7), "label": title} in found
    detail = client.get(f"/v1/items/{model.items_.token(7)}").json()
    assert detail["label"] == title and detail["n_interactions"] == 0
    assert client.get("/v1/items/nope").status_code == 404


def test_dismiss_hides_an_item_and_like_grows_the_history(serve, bundles):
    client, _ = serve()
    first = client.get("/v1/users/5/recommendations", params={"k": 5}).json()
    top = first["items"][0]["item"]
    client.post("/v1/feedback", json=events(("dismiss", "5", top, 10.0, {})))
    after = client.get("/v1/users/5/recommendations", params={"k": 5}).json()
    assert top not in [i["item"] for i in after["items"]]
    assert [i["item"] for i in after["items"]][:4] == [i["item"] for i in first["items"]][1:5]

    liked = after["items"][0]["item"]
    ack = client.post("/v1/feedback", json=events(("like", "5", liked, 11.0, {
        "recommendation_id": after["recommendation_id"], "position": 0})))
    assert ack.json()["accepted"] == 1
    h = client.get("/v1/users/5/history").json()
    assert h["dismissed"] == [top]
    assert h["items"][-1] == {"item": liked, "label": after["items"][0]["label"], "source": "feedback",
                              "type": "like", "timestamp": 11.0}
    detail = client.get(f"/v1/items/{liked}").json()
    assert detail["n_interactions"] == 1 and detail["users"] == ["5"]
    client.app.state.service.flush()
    totals = client.get("/v1/admin/online").json()["totals"]
    assert sum(t["clicks"] for t in totals) == 1  # a like rewards the slate it came from


def test_query_words_measure_each_words_part_against_the_encoder(serve, bundles):
    from llm4rec.text import text_encoder

    client, _ = serve()
    model = Recommender.load(bundles["semantic-knn"])
    query = "quiet jazz records for late evenings"
    r = client.post("/v1/recommendations", json={"query": query, "k": 3, "explain": True})
    assert r.status_code == 200, r.text
    item = r.json()["items"][0]
    words = item["explanation"]["query_words"]
    assert [w["word"] for w in words] == query.split()
    enc = text_encoder(model.config.encoder)  # the slow reference: one leave-one-word-out at a time
    v = model.item_embeddings_[model.items_.index([item["item"]])[0]]
    full = float(enc.encode([query])[0] @ v)
    for w in words:
        without = " ".join(t for t in query.split() if t != w["word"])
        assert w["weight"] == pytest.approx(full - float(enc.encode([without])[0] @ v), abs=1e-4)


def test_live_stats_count_requests_per_route_and_need_admin(serve, store_url):
    client, _ = serve()
    for _ in range(7):
        client.get("/v1/users/5/recommendations", params={"k": 3})
    client.post("/v1/feedback", json=events(("click", "5", "3", 1.0, {}), ("click", "5", "4", 2.0, {})))
    live = client.get("/v1/admin/live").json()
    route = "GET /v1/users/{user_id}/recommendations"
    assert sum(b["requests"].get(route, 0) for b in live["series"]) == 7
    assert sum(b["events"] for b in live["series"]) == 2
    assert live["last_minute"]["p99_ms"][route] >= live["last_minute"]["p50_ms"][route] > 0
    assert live["model_version"] == "v000001" and live["n_items"] == 150
    client.headers["Authorization"] = "Bearer " + add_key(store_url, ["read"])
    assert client.get("/v1/admin/live").status_code == 403


def test_online_ctr_per_policy_with_wilson_intervals(serve):
    client, _ = serve()
    clicks = []
    for i in range(10):
        rec = client.get(f"/v1/users/{i}/recommendations", params={"k": 4, "policy": "uniform"}).json()
        if i % 2 == 0:  # every other slate: a click on its first item
            clicks.append(("click", str(i), rec["items"][0]["item"], 1.0,
                           {"recommendation_id": rec["recommendation_id"], "position": 0}))
    client.post("/v1/feedback", json=events(*clicks))
    client.app.state.service.flush()
    online = client.get("/v1/admin/online", params={"bucket": 60}).json()
    (total,) = online["totals"]
    assert (total["policy"], total["shown"], total["clicks"]) == ("uniform", 40, 5)
    assert (total["ctr"], total["ctr_low"], total["ctr_high"]) == pytest.approx(wilson(5, 40))
    assert total["purchases"] == 0 and sum(b["shown"] for b in online["series"]) == 40


def test_experiment_readout_with_known_click_rates_and_off_policy_estimates(serve):
    """Anonymous users all get the same 20 candidates (popularity) and click exactly the 3 most popular:
    greedy (top 5) has CTR 3/5, uniform (5 of 20) has 3/20. The readout must show both with intervals, a
    significant difference, and estimate greedy from uniform's logs (supported) but refuse to call the
    estimate of uniform from greedy's deterministic logs supported."""
    client, _ = serve(candidates=20)
    r = client.post("/v1/admin/experiments", json={"name": "ab", "arms": [
        {"name": "greedy", "policy": "greedy", "share": 1}, {"name": "uniform", "policy": "uniform", "share": 1}]})
    assert r.status_code == 201, r.text
    arms = r.json()["arms"]
    popular = client.get("/v1/users/nobody/recommendations", params={"k": 3, "policy": "greedy"}).json()
    liked = {i["item"] for i in popular["items"]}
    clicks, served = [], {"greedy": 0, "uniform": 0}
    for i in range(600):
        user = f"sim-{i}"
        rec = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        assert rec["arm"] == assign("ab", arms, user)["name"] and rec["experiment"] == "ab"
        served[rec["arm"]] += 1
        clicks += [("click", user, it["item"], 1.0, {"recommendation_id": rec["recommendation_id"],
                                                     "position": it["position"]})
                   for it in rec["items"] if it["item"] in liked]
    assert 240 < served["greedy"] < 360  # the hash splits users about evenly
    for start in range(0, len(clicks), 500):
        assert client.post("/v1/feedback", json=events(*clicks[start:start + 500])).status_code == 200
    client.app.state.service.flush()
    out = client.get("/v1/admin/experiments/ab").json()
    by = {a["name"]: a for a in out["arms"]}
    assert by["greedy"]["ctr"] == pytest.approx(0.6)
    assert by["uniform"]["ctr_low"] < 0.15 < by["uniform"]["ctr_high"]
    assert by["greedy"]["slates"] == served["greedy"]
    assert out["test"]["significant"] and out["test"]["p_value"] < 1e-6
    ope = {(o["target_arm"], o["logging_arm"]): o for o in out["off_policy"]}
    est = ope[("greedy", "uniform")]
    assert est["supported"] and est["low"] <= 0.6 <= est["high"] and abs(est["value"] - 0.6) < 0.15
    assert est["ess"] > 30  # about 1 in 20 of uniform's impressions is what greedy would have shown
    assert not ope[("uniform", "greedy")]["supported"] and "deterministic" in ope[("uniform", "greedy")]["note"]

    assert client.post("/v1/admin/experiments", json={"name": "second", "arms": arms}).status_code == 409
    stopped = client.post("/v1/admin/experiments/ab/stop").json()
    assert stopped["active"] is False
    assert client.get("/v1/users/sim-1/recommendations").json()["arm"] is None
    bad = client.post("/v1/admin/experiments", json={"name": "bad", "arms": [
        {"name": "a", "policy": "greedy"}, {"name": "b", "policy": "no-such"}]})
    assert bad.status_code == 422 and "arms[1].policy" in bad.json()["error"]["message"]


def test_experiment_between_two_model_versions(serve, bundles, tmp_path):
    from llm4rec.serving.registry import ModelRegistry

    client, settings = serve()
    ModelRegistry(settings.model).publish(bundles["semantic-knn"], activate=False)  # v000002, not current
    r = client.post("/v1/admin/experiments", json={"name": "versions", "arms": [
        {"name": "old", "model_version": "v000001"}, {"name": "new", "model_version": "v000002"}]})
    assert r.status_code == 201, r.text
    seen = set()
    for i in range(20):
        rec = client.get(f"/v1/users/{i}/recommendations", params={"k": 3}).json()
        assert rec["model_version"] == {"old": "v000001", "new": "v000002"}[rec["arm"]]
        seen.add(rec["arm"])
    assert seen == {"old", "new"}
    client.app.state.service.flush()
    frame = client.app.state.service.store.experiment_impressions("versions")
    assert frame.height == 60 and frame["shadow"].null_count() == 0
    # the same bundle twice, greedy both: each arm would have shown exactly what the other showed
    import json
    assert all(p == 1.0 for s in frame["shadow"].to_list() for p in next(iter(json.loads(s).values())))


def test_audience_lists_the_users_whose_top_k_now_holds_a_new_item(serve, bundles):
    client, _ = serve()
    model = Recommender.load(bundles["semantic-knn"])
    last = client.get("/v1/users/5/history").json()["items"][-1]["item"]
    fields = model_item_text(int(last))
    fields["title"] += " (remastered)"  # near its twin, not tied with it
    assert client.put("/v1/items/fresh-1", json={"fields": fields}).status_code == 200
    out = client.get("/v1/admin/items/fresh-1/audience", params={"k": 10, "limit": 200}).json()
    assert out["scanned"] == model.n_users_ and out["users"]
    service = client.app.state.service
    live = service.loaded.model
    reported = {u["user"]: u["rank"] for u in out["users"]}
    for user in live.users_.tokens:  # the slow reference: each user's own top-10
        top = live.recommend(users=[user], k=10).items[0].tolist()
        if "fresh-1" in top:
            assert reported.pop(user) == top.index("fresh-1")
    assert reported == {}
    assert client.get("/v1/admin/items/nope/audience").status_code == 404


def test_publish_rollback_and_activate_from_the_dashboard_api(serve, bundles, tmp_path):
    client, _ = serve()
    models = client.get("/v1/admin/models").json()
    assert models["registry"] and models["serving"] == "v000001"
    assert [v["version"] for v in models["versions"]] == ["v000001"]
    assert models["versions"][0]["model"] == "semantic-knn"

    bad = _models.corrupt_copy(bundles["semantic-knn"], tmp_path / "corrupt")
    r = client.post("/v1/admin/models", json={"bundle": str(bad)})
    assert r.status_code == 422 and "arrays.npz" in r.json()["error"]["message"]
    assert client.get("/readyz").json()["model_version"] == "v000001"

    r = client.post("/v1/admin/models", json={"bundle": str(bundles["als"])})
    assert r.status_code == 201 and r.json() == {"version": "v000002", "current": "v000002"}
    assert client.get("/readyz").json()["model_version"] == "v000002"  # swapped before the answer
    assert client.post("/v1/admin/models/rollback").json()["current"] == "v000001"
    assert client.get("/readyz").json()["model_version"] == "v000001"
    assert client.post("/v1/admin/models/v000002/activate").json()["current"] == "v000002"
    assert client.post("/v1/admin/models/v000009/activate").status_code == 404
    actions = [a["action"] for a in client.app.state.service.store.audit_rows()]
    assert actions == ["publish", "rollback", "activate"]


def test_offline_metrics_travel_with_a_bundle_from_evaluate(tmp_path):
    from llm4rec.evaluation.experiment import run_experiment
    from llm4rec.serving.registry import ModelRegistry
    from llm4rec.serving.service import RecommendationService
    from llm4rec.serving.settings import ServiceSettings
    from llm4rec.serving.browse import model_versions

    exp = run_experiment(_models.data(), "pop", protocol="P-LOO", seed=1, stage="valid")
    reg = ModelRegistry(tmp_path / "reg")
    reg.publish(exp.model.save(tmp_path / "pop"))
    service = RecommendationService(ServiceSettings.make(model=reg.root, store=str(tmp_path / "e.db")))
    service.start(watch=False)
    try:
        (version,) = model_versions(service)["versions"]
    finally:
        service.stop()
    assert version["metrics"] == pytest.approx({**exp.record["metrics"], **exp.record["extra_metrics"]})
    assert (version["protocol"], version["stage"]) == ("P-LOO", "valid")


def test_an_older_store_gains_the_experiment_columns_and_keeps_its_rows(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    store = EventStore(url)
    store.log_recommendation("r1", "u1", "greedy", "v1", ["a"], [0], [1.0], 1.0)
    store.close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for column in ("experiment", "arm", "shadow"):
            conn.exec_driver_sql(f"ALTER TABLE recommendations DROP COLUMN {column}")
    engine.dispose()
    again = EventStore(url)
    try:
        assert again.recommendation("r1")["items"] == ["a"]
        again.log_recommendations([{"recommendation_id": "r2", "user_id": "u1", "policy": "greedy",
                                    "model_version": "v1", "items": ["b"], "actions": [1], "propensities": [1.0],
                                    "timestamp": 2.0, "experiment": "x", "arm": "A", "shadow": {"B": [0.5]}}])
        frame = again.experiment_impressions("x")
        assert frame["arm"].to_list() == ["A"] and frame["shadow"].to_list() == ['{"B": [0.5]}']
        counts = again.online_counts(0.0, 10.0).sort("arm", nulls_last=True)
        assert counts.select("t", "arm", "slates", "shown").rows() == [(0.0, "A", 1, 1), (0.0, None, 1, 1)]
    finally:
        again.close()


def test_reports_endpoints_list_and_read_result_files(serve, tmp_path):
    import json

    from llm4rec.evaluation.experiment import run_experiment

    reports = tmp_path / "reports"
    reports.mkdir()
    record = run_experiment(_models.data(), "pop", protocol="P-LOO", seed=1, stage="valid").record
    (reports / "pop.json").write_text(json.dumps(record))
    (reports / "notes.txt").write_text("not a report")
    client, _ = serve(reports=reports)
    listed = client.get("/v1/admin/reports").json()["reports"]
    assert [(r["name"], r["kind"]) for r in listed] == [("pop.json", "evaluate")]
    got = client.get("/v1/admin/reports/pop.json").json()
    assert got["kind"] == "evaluate" and got["data"]["metrics"] == pytest.approx(record["metrics"])
    for bad in ("notes.txt", "..%2Fsecret.json", "missing.json"):
        r = client.get(f"/v1/admin/reports/{bad}")
        assert r.status_code == 404 and r.json()["error"]["message"]

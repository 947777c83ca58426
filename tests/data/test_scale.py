"""The scale generator: chunk-invariant bytes, exact sizes, the planted structure, reference accuracies that a
slow recomputation confirms, and a learned model landing between popularity and the oracle."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from llm4rec.data.scale import generate_scale, read_truth
from llm4rec.errors import InputError
from tests.cli._run import run

N_INTERACTIONS, N_ITEMS, ROWS = 30_000, 2_000, 4096
FILES = ("interactions.parquet", "items.parquet", "truth_items.parquet", "truth_users.parquet", "truth.json",
         "dataset.json")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "ds"
    generate_scale(out, N_INTERACTIONS, N_ITEMS, chunk_users=1000, row_group_rows=ROWS, progress=False)
    return out


@pytest.fixture(scope="module")
def tables(generated):
    inter = pl.read_parquet(generated / "interactions.parquet")
    items = pl.read_parquet(generated / "truth_items.parquet").sort("item_id")
    users = pl.read_parquet(generated / "truth_users.parquet").sort("user_id")
    return inter, items, users, read_truth(generated)


def _digests(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES}


def test_same_seed_same_bytes_whatever_the_chunk_size(generated, tmp_path):
    for chunk in (7000, 333):
        again = generate_scale(tmp_path / f"c{chunk}", N_INTERACTIONS, N_ITEMS, chunk_users=chunk,
                               row_group_rows=ROWS, progress=False)
        assert _digests(again) == _digests(generated)
    other = generate_scale(tmp_path / "other", N_INTERACTIONS, N_ITEMS, seed=7, row_group_rows=ROWS, progress=False)
    differ = {k for k, v in _digests(other).items() if v != _digests(generated)[k]}
    assert differ == set(FILES) - {"dataset.json"}


def test_files_are_written_in_row_groups(generated):
    meta = pq.ParquetFile(generated / "interactions.parquet").metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [ROWS] * (N_INTERACTIONS // ROWS) + [N_INTERACTIONS % ROWS]
    assert pq.ParquetFile(generated / "items.parquet").metadata.num_row_groups == -(-N_ITEMS // ROWS)


def test_sizes_and_log_contract(tables):
    inter, items, users, truth = tables
    assert inter.height == N_INTERACTIONS == truth["n_interactions"]
    assert users.height == truth["n_users"] == N_INTERACTIONS // 20
    assert items.get_column("item_id").to_list() == list(range(N_ITEMS))
    assert inter.select(pl.struct("user_id", "item_id").n_unique()).item() == N_INTERACTIONS  # no repeats
    lengths = inter.group_by("user_id").len().sort("user_id").get_column("len").to_numpy()
    np.testing.assert_array_equal(lengths, users.get_column("length").to_numpy())
    assert lengths.min() >= truth["process"]["min_length"] and lengths.max() <= truth["process"]["max_length"]
    same_user = np.diff(inter.get_column("user_id").to_numpy()) == 0
    assert (np.diff(inter.get_column("user_id").to_numpy()) >= 0).all()
    assert (np.diff(inter.get_column("timestamp").to_numpy())[same_user] > 0).all()
    # successors form one cycle per topic
    topic = items.get_column("topic").to_numpy()
    succ = items.get_column("successor").to_numpy()
    assert (topic[succ] == topic).all() and np.array_equal(np.sort(succ), np.arange(N_ITEMS))
    first = items.filter(pl.col("topic") == 0).get_column("item_id")[0]
    cycle, i = 1, succ[first]
    while i != first:
        cycle, i = cycle + 1, succ[i]
    assert cycle == truth["process"]["topic_sizes"][0]


def test_text_names_the_topic(generated, tables):
    _, truth_items, _, _ = tables
    items = pl.read_parquet(generated / "items.parquet").join(truth_items, on="item_id")
    assert items.null_count().sum_horizontal().item() == 0
    words = {}
    for row in items.iter_rows(named=True):
        text = f"{row['title']} {row['description']}".lower().replace(".", " ").replace(",", " ").split()
        words.setdefault(row["topic"], []).append(set(text))
    vocab = {t: set.union(*sets) for t, sets in words.items()}
    for t, sets in words.items():
        own = vocab[t] - set.union(*(v for u, v in vocab.items() if u != t))
        assert all(s & own for s in sets)  # every item carries words no other topic uses
    assert items.group_by("topic").agg(pl.col("category").n_unique()).get_column("category").max() == 1


def _slow_reference(inter, items, users, truth):
    """Per user, dense next-item probabilities over all items: the reference metrics and in-topic rates."""
    proc = truth["process"]
    ps, pt, pn = proc["p_successor"], proc["p_topic"], proc["p_noise"]
    topic = items.get_column("topic").to_numpy()
    rank = items.get_column("rank").to_numpy()
    succ = items.get_column("successor").to_numpy()
    pi = np.array(proc["topic_shares"])
    w = (rank + 1.0) ** -proc["zipf_exponent"]
    z = w / np.bincount(topic, weights=w)[topic]
    g = pi[topic] * z
    user_topic = users.get_column("topic").to_numpy()
    index = np.arange(len(topic))
    kmax = 20
    out = {name: {"hits": np.zeros(kmax), "mass": np.zeros(kmax)} for name in ("oracle", "topic_oracle",
                                                                                 "popularity")}
    p_in = var_in = p_succ = var_succ = 0.0
    n_succ = 0
    for (u,), group in inter.group_by("user_id", maintain_order=True):
        seq = group.get_column("item_id").to_numpy()
        tu = user_topic[u]
        static = pn * g + pt * z * (topic == tu)
        seen = np.zeros(len(topic), dtype=bool)
        for t, item in enumerate(seq):
            q = static / (pt + pn) if t == 0 else static + ps * (index == succ[seq[t - 1]])
            unseen = q[~seen].sum()
            p = q[~seen & (topic == tu)].sum() / unseen
            p_in, var_in = p_in + p, var_in + p * (1 - p)
            if t:
                s = 0.0 if seen[succ[seq[t - 1]]] else q[succ[seq[t - 1]]] / unseen
                p_succ, var_succ, n_succ = p_succ + s, var_succ + s * (1 - s), n_succ + (item == succ[seq[t - 1]])
            if t == len(seq) - 1:
                for name, score in (("oracle", q), ("topic_oracle", static), ("popularity", g)):
                    masked = np.where(seen, -np.inf, score)
                    top = np.lexsort((index, -masked))[:kmax]
                    out[name]["hits"] += top == item
                    out[name]["mass"] += q[top] / unseen
            seen[item] = True
    n_users = users.height
    discount = np.log2(np.arange(kmax) + 2)
    metrics = {}
    for name, acc in out.items():
        for key, weights in (("realised", acc["hits"]), ("expected", acc["mass"])):
            metrics[name, key] = {**{f"HR@{k}": weights[:k].sum() / n_users for k in (10, 20)},
                                  **{f"NDCG@{k}": (weights[:k] / discount[:k]).sum() / n_users for k in (10, 20)},
                                  **{f"MRR@{k}": (weights[:k] / np.arange(1, k + 1)).sum() / n_users
                                     for k in (10, 20)}}
    return metrics, (p_in, var_in), (p_succ, var_succ, n_succ)


@pytest.fixture(scope="module")
def slow(tables):
    return _slow_reference(*tables)


def test_reference_accuracy_matches_a_slow_recomputation(tables, slow):
    truth = tables[3]
    metrics, _, _ = slow
    ref = truth["reference"]
    assert ref["users"] == truth["n_users"]
    for name in ("oracle", "topic_oracle", "popularity"):
        realised = {k: v for k, v in ref[name].items() if "@" in k}
        assert realised == pytest.approx(metrics[name, "realised"], abs=1e-12)
        assert ref[name]["expected"] == pytest.approx(metrics[name, "expected"], abs=1e-7)
    # the three references are ordered, and the expected values are close to the realised ones
    assert ref["oracle"]["NDCG@10"] > 2 * ref["topic_oracle"]["NDCG@10"] > 4 * ref["popularity"]["NDCG@10"]
    assert ref["oracle"]["HR@10"] == pytest.approx(ref["oracle"]["expected"]["HR@10"], abs=0.05)


def test_users_stay_in_their_topic_at_the_stated_rate(tables, slow):
    inter, items, users, truth = tables
    _, (p_in, var_in), (p_succ, var_succ, n_succ) = slow
    topic = items.get_column("topic").to_numpy()
    user_topic = users.get_column("topic").to_numpy()
    item = inter.get_column("item_id").to_numpy()
    user = inter.get_column("user_id").to_numpy()
    inside = topic[item] == user_topic[user]
    stated = truth["in_topic"]
    assert stated["observed_share"] == inside.mean()
    assert stated["expected_share"] * N_INTERACTIONS == pytest.approx(p_in, rel=1e-9)
    assert stated["expected_variance"] == pytest.approx(var_in, rel=1e-6)
    # the observed count is within binomial noise of the exact expectation (Poisson-binomial, 4 sd)
    assert abs(inside.sum() - p_in) < 4 * np.sqrt(var_in)
    assert 0.6 < stated["expected_share"] < 0.8
    per_user = np.bincount(user, weights=inside) / np.bincount(user)
    assert np.median(per_user) > 0.6  # each user's items are mostly in their topic
    # the successor rule holds at its rate too
    assert abs(n_succ - p_succ) < 4 * np.sqrt(var_succ) and p_succ / (N_INTERACTIONS - users.height) > 0.4


def test_loads_and_a_learned_model_lands_between_popularity_and_the_oracle(generated, tables):
    from llm4rec.data import load_dataset, make_split
    from llm4rec.evaluation.evaluator import evaluate
    from llm4rec.models import create_model

    ref = tables[3]["reference"]
    ds = load_dataset(generated)
    assert (ds.n_interactions, ds.n_items, ds.n_users) == (N_INTERACTIONS, N_ITEMS, N_INTERACTIONS // 20)
    assert ds.text_fields == ("title", "category", "description")
    assert ds.items.tokens[5] == "5" and ds.item_attrs.get_column("item_id")[5] == "5"
    stage = make_split(ds, "loo").stage("test")
    ndcg = {name: evaluate(create_model(name, settings).fit(stage.fit), stage).metrics["NDCG@10"]
            for name, settings in (("pop", {}), ("ease", {"l2": 50.0}))}
    assert ndcg["pop"] == pytest.approx(ref["popularity"]["NDCG@10"], abs=0.015)
    assert ref["popularity"]["NDCG@10"] < ref["topic_oracle"]["NDCG@10"] < ndcg["ease"] < ref["oracle"]["NDCG@10"]


def test_bad_sizes_and_occupied_output(tmp_path, generated):
    out = tmp_path / "x"
    cases = [({"n_interactions": 0}, "n_interactions"), ({"n_items": 300, "n_topics": 10}, "items per topic"),
             ({"n_interactions": 100, "n_users": 50}, "too few interactions"),
             ({"n_users": 10}, "too many interactions"), ({"n_topics": 0}, "n_topics")]
    for change, message in cases:
        kwargs = {"n_interactions": N_INTERACTIONS, "n_items": N_ITEMS, **change}
        with pytest.raises(InputError, match=message):
            generate_scale(out, kwargs.pop("n_interactions"), kwargs.pop("n_items"), progress=False, **kwargs)
    assert not out.exists()
    (out / "notes").mkdir(parents=True)
    with pytest.raises(InputError, match="not empty"):
        generate_scale(out, 1000, 1000, progress=False)
    with pytest.raises(InputError, match="other files"):
        generate_scale(out, 1000, 1000, progress=False, overwrite=True)
    assert (out / "notes").is_dir()
    again = tmp_path / "again"
    generate_scale(again, 1000, 1000, progress=False)
    generate_scale(again, 2000, 1000, progress=False, overwrite=True)
    assert read_truth(again)["n_interactions"] == 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "x"]  # no temporary directories left


def test_progress_callback_reaches_the_totals(tmp_path):
    calls = []
    generate_scale(tmp_path / "p", 3000, 1000, chunk_users=40, progress=lambda *a: calls.append(a))
    assert calls[-1] == ("interactions", 3000, 3000) and ("items", 1000, 1000) in calls
    assert len([c for c in calls if c[0] == "interactions"]) == 4  # 150 users in chunks of 40


def test_cli_generate(capsys, tmp_path, generated):
    out = tmp_path / "cli"
    code, stdout, err = run(capsys, "data", "generate", "--interactions", "30k", "--items", "2k", "--out", str(out),
                            "--chunk-users", "700")
    assert code == 0, err
    assert "wrote 30,000 interactions of 1,500 users on 2,000 items" in stdout and "oracle" in stdout
    truth = json.loads((out / "truth.json").read_text())
    assert truth == read_truth(generated)  # the same data as the library call with the same seed
    code, _, err = run(capsys, "data", "generate", "-n", "1.5x", "--items", "2k", "--out", str(tmp_path / "bad"))
    assert code == 2 and "bad size for --interactions" in err and "1.5x" in err
    code, _, err = run(capsys, "data", "generate", "-n", "30k", "--items", "2k", "--out", str(out))
    assert code == 2 and "not empty" in err


@pytest.mark.parametrize(("text", "value"), [("1M", 10**6), ("100k", 10**5), ("2.5M", 2_500_000), ("1B", 10**9),
                                              ("1_000", 1000), ("7", 7), (" 3K ", 3000)])
def test_sizes_with_suffixes(text, value):
    from llm4rec.cli.data_cmd import parse_count

    assert parse_count(text, "--items") == value


@pytest.mark.parametrize("text", ["", "0", "-5", "1.5", "2.0001k", "1e6", "M", "10x", "1MB"])
def test_bad_sizes_are_named(text):
    from llm4rec.cli.data_cmd import parse_count

    with pytest.raises(InputError, match="--items"):
        parse_count(text, "--items")

"""llm4rec compress: int8 and pq bundles of real models, the before/after report, refusals, all-or-nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm4rec.data import make_split, make_synthetic
from llm4rec.errors import InputError
from llm4rec.experiments.compress import compress_bundle
from llm4rec.models import Recommender, create_model
from llm4rec.models.bundle import read_manifest
from llm4rec.testing import checkerboard
from tests.cli._run import run


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(n_users=300, n_items=300, interactions_per_user=(8, 30))


@pytest.fixture(scope="module")
def two_tower(synthetic, tmp_path_factory):
    fit = make_split(synthetic, "loo").stage("test").fit
    model = create_model("llm-two-tower", {"dim": 32, "hidden": 0, "negatives": 50, "epochs": 2, "batch_size": 256,
                                           "cache_dir": str(tmp_path_factory.mktemp("cache"))}).fit(fit)
    return model.save(tmp_path_factory.mktemp("tt") / "model")


def test_int8_two_tower_is_smaller_keeps_its_ranking_and_runs_int8(two_tower, synthetic, tmp_path):
    import torch

    original = (two_tower / "bundle.json").read_bytes()
    report = compress_bundle(two_tower, tmp_path / "int8", "int8", synthetic, options={"linears": True},
                             requests=20)
    out = tmp_path / "int8"
    assert (two_tower / "bundle.json").read_bytes() == original  # the original is untouched
    assert {"compression.json", "compression.md", "bundle.json", "arrays.npz"} <= {p.name for p in out.iterdir()}
    comparison = report["comparison"]
    encoded = report["after"]["compression"]["encoded"]
    assert set(encoded) == {"net__text"}  # the 300 x 384 text table; the 32-wide ones are too small to encode
    assert comparison["weights_smaller"] > 2.5 and comparison["encoder_smaller"] > 3.5
    assert report["before"]["encoder"] == "minilm" and report["after"]["encoder"] == "minilm-qint8"
    for metric, test in comparison["paired_tests"].items():
        assert abs(test["mean_diff"]) <= 0.02, metric  # 8-bit tables barely move a ranking
        assert test["n"] == len(report["before"]["users"]) > 200
    assert report["before"]["request_ms"]["n"] == 20 and report["after"]["seconds_per_1k_items"] > 0
    saved = json.loads((out / "compression.json").read_text())
    assert saved["method"] == "int8" and "per_user" not in saved["after"]
    assert "| NDCG@10 |" in (out / "compression.md").read_text()
    manifest = read_manifest(out)
    assert manifest["compression"]["quantise_linears"] == ["attn", "user_proj"]  # the user tower
    assert manifest["provenance"]["compressed_from"]["method"] == "int8"
    model = Recommender.load(out)
    assert model.config.encoder == "minilm-qint8"
    assert isinstance(model.net_.user_proj, torch.ao.nn.quantized.dynamic.Linear)
    user = model.users_.tokens[0]
    item = model.recommend([user], k=1).items[0, 0]
    assert model.explain(user, item)["because"]  # the explanation reads the int8 layer's weights


def test_pq_bundle_of_an_als_model_carries_codes_and_is_measured(tmp_path):
    data = checkerboard(n_users=64, n_items=2400)
    model = create_model("als", {"factors": 32, "iterations": 3}).fit(make_split(data, "loo", seed=3).stage("test").fit)
    path = model.save(tmp_path / "als")
    report = compress_bundle(path, tmp_path / "pq", "pq", data, options={"pq_dims": 2}, requests=5)
    with np.load(tmp_path / "pq" / "arrays.npz") as z:
        assert z["pq__state_item_factors"].shape == (2400, 16)
    assert report["after"]["compression"]["encoded"]["item_factors"]["codec"] == "pq"
    assert report["comparison"]["weights_smaller"] > 3 and report["after"]["encoder"] is None
    assert report["protocol"] == "loo" and report["seed"] == 3
    assert set(report["comparison"]["paired_tests"]) == {"NDCG@10", "Recall@20"}
    compressed = Recommender.load(tmp_path / "pq")
    top, _ = compressed.recommend_indices(np.arange(64), k=10)
    same_side = (top % 2 == np.arange(64)[:, None] % 2).mean()  # even users like even items
    assert same_side > 0.95


def test_refusals_name_the_problem_and_write_nothing(two_tower, synthetic, tmp_path):
    other = make_synthetic(n_users=50, n_items=80, seed=5)
    with pytest.raises(InputError, match="not the dataset this model was fitted on"):
        compress_bundle(two_tower, tmp_path / "a", "int8", other)
    with pytest.raises(InputError, match="unknown compression method"):
        compress_bundle(two_tower, tmp_path / "a", "fp4", synthetic)
    with pytest.raises(InputError, match="unknown option for --method pq"):
        compress_bundle(two_tower, tmp_path / "a", "pq", synthetic, options={"sparsity": 0.5})
    with pytest.raises(InputError, match="rescore must be a shortlist size"):
        compress_bundle(two_tower, tmp_path / "a", "pq", synthetic, options={"rescore": -5})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an empty directory"):
        compress_bundle(two_tower, tmp_path / "full", "int8", synthetic)
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"
    pop = create_model("pop").fit(make_split(synthetic, "loo").stage("test").fit).save(tmp_path / "pop")
    with pytest.raises(InputError, match="shrinks the text encoder"):
        compress_bundle(pop, tmp_path / "a", "distill", synthetic)
    whole = create_model("pop").fit(synthetic).save(tmp_path / "whole")
    with pytest.raises(InputError, match="fitted on a whole dataset"):
        compress_bundle(whole, tmp_path / "a", "int8", synthetic)
    with pytest.raises(InputError):  # fails while measuring: no bundle is left behind
        compress_bundle(pop, tmp_path / "a", "int8", synthetic, stage="nonsense")
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".a.*"))


def test_the_command_writes_the_bundle_and_prints_the_report(shared_data, tmp_path, capsys):
    ml100k_path = shared_data / "ml-100k"
    code, _, err = run(capsys, "evaluate", "--data", str(ml100k_path), "--model", "ease", "--set", "l2=400",
                       "--save-model", str(tmp_path / "ease"))
    assert code == 0, err
    code, out, err = run(capsys, "compress", "--model", str(tmp_path / "ease"), "--method", "int8", "--data",
                         str(ml100k_path), "--requests", "10")
    assert code == 0, err
    target = tmp_path / "ease-int8"
    assert "| model weights |" in out and "| NDCG@10 |" in out and str(target) in out
    report = json.loads((target / "compression.json").read_text())
    ndcg = report["comparison"]["paired_tests"]["NDCG@10"]
    assert abs(ndcg["relative_change"]) < 0.01  # EASE's item-item matrix in 8 bits: within 1% on ml-100k
    assert report["comparison"]["weights_smaller"] > 3.9
    code, _, err = run(capsys, "compress", "--model", str(tmp_path / "ease"), "--method", "int8", "--data",
                       str(ml100k_path))
    assert code == 2 and "not an empty directory" in err and "Traceback" not in err
    code, _, err = run(capsys, "compress", "--model", str(tmp_path / "ease"), "--method", "zip", "--data",
                       str(ml100k_path))
    assert code == 2 and "unknown --method" in err


@pytest.mark.slow
def test_a_distilled_encoder_travels_inside_the_bundle(synthetic, tmp_path):
    import shutil

    from llm4rec.serving.registry import ModelRegistry

    fit = make_split(synthetic, "loo").stage("test").fit
    knn = create_model("semantic-knn", {}).fit(fit).save(tmp_path / "knn")
    report = compress_bundle(knn, tmp_path / "small", "distill", synthetic, options={"layers": 1, "epochs": 1},
                             requests=5)
    assert report["encoder_training"] and report["comparison"]["encoder_smaller"] > 1.5
    manifest = read_manifest(tmp_path / "small")
    carried = [n for n in manifest["files"] if n.startswith("encoder/")]
    assert carried and json.loads((tmp_path / "small" / "config.json").read_text())["config"]["encoder"] == "encoder/"
    moved = tmp_path / "elsewhere" / "small"
    shutil.copytree(tmp_path / "small", moved)  # a bundle is relocatable: its encoder is found beside it
    model = Recommender.load(moved)
    assert model.config.encoder == str((moved / "encoder").resolve())
    before = Recommender.load(knn)
    users = list(before.users_.tokens[:20])
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(before.recommend(users, k=10).items.tolist(),
                                                                  model.recommend(users, k=10).items.tolist())])
    assert overlap > 0.15  # a one-layer student, one epoch on 300 texts, still agrees (random lists: 0.03)
    version = ModelRegistry(tmp_path / "registry").publish(moved)
    assert ModelRegistry(tmp_path / "registry").load()[0] == version
    assert (ModelRegistry(tmp_path / "registry").path(version) / carried[0]).is_file()
    (moved / carried[0]).write_bytes(b"tampered")
    with pytest.raises(InputError, match="modified or corrupt|bytes, the bundle says"):
        Recommender.load(moved)

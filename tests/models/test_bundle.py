"""Bundles: identity and provenance inside; a truncated, missing, tampered or newer bundle is refused by name."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from llm4rec.data import make_split
from llm4rec.errors import InputError
from llm4rec.models import Recommender, create_model
from llm4rec.models.bundle import BUNDLE_FILES, FORMAT_VERSION, read_manifest
from llm4rec.testing import checkerboard


@pytest.fixture(scope="module")
def split():
    return make_split(checkerboard(), "loo", seed=9)


@pytest.fixture
def bundle(split, tmp_path):
    return create_model("ease", {"l2": 10.0}).fit(split.stage("test").fit).save(tmp_path / "m")


def reseal(path, name):
    """Update bundle.json's record of ``name`` after a deliberate edit (what a careful forger would do)."""
    manifest = json.loads((path / "bundle.json").read_text())
    data = (path / name).read_bytes()
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (path / "bundle.json").write_text(json.dumps(manifest))


def test_the_bundle_carries_ids_provenance_and_versions(bundle, split):
    manifest = read_manifest(bundle)
    assert manifest["format_version"] == FORMAT_VERSION and manifest["model"] == "ease"
    prov = manifest["provenance"]
    assert prov["protocol"] == "loo" and prov["stage"] == "test" and prov["seed"] == 9
    assert prov["split_fingerprint"] == split.fingerprint
    assert prov["dataset_fingerprint"] == split.dataset.fingerprint
    assert prov["fit_fingerprint"] == split.stage("test").fit.fingerprint
    assert prov["item_text_fingerprint"] == split.dataset.item_text_fingerprint
    assert set(manifest["versions"]) == {"llm4rec", "python", "numpy", "torch"}
    assert json.loads((bundle / "items.json").read_text())["tokens"] == list(split.dataset.items.tokens)
    assert json.loads((bundle / "users.json").read_text())["tokens"] == list(split.dataset.users.tokens)


def test_a_model_fitted_on_a_whole_dataset_says_so(tmp_path):
    path = create_model("pop").fit(checkerboard()).save(tmp_path / "pop")
    assert read_manifest(path)["provenance"]["stage"] == "whole dataset"


@pytest.mark.parametrize("name", [n for n in BUNDLE_FILES if n != "bundle.json"])
def test_truncated_missing_or_modified_files_are_refused_by_name(bundle, name):
    original = (bundle / name).read_bytes()
    (bundle / name).write_bytes(original[: len(original) // 2])
    with pytest.raises(InputError, match=f"{name}: the file has .* bytes, the bundle says"):
        Recommender.load(bundle)
    (bundle / name).write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(InputError, match=f"{name}: the file's content differs"):
        Recommender.load(bundle)
    (bundle / name).unlink()
    with pytest.raises(InputError, match=f"{name}: a file of the saved model is missing"):
        Recommender.load(bundle)


def test_a_broken_manifest_an_old_or_a_newer_format_are_refused(bundle):
    manifest = (bundle / "bundle.json").read_text()
    (bundle / "bundle.json").write_text(manifest[:40])
    with pytest.raises(InputError, match="bundle.json is not valid JSON"):
        Recommender.load(bundle)
    newer = json.loads(manifest)
    newer["format_version"] = FORMAT_VERSION + 1
    (bundle / "bundle.json").write_text(json.dumps(newer))
    with pytest.raises(InputError, match="saved by a newer llm4rec"):
        Recommender.load(bundle)
    (bundle / "bundle.json").unlink()
    with pytest.raises(InputError, match="older llm4rec \\(format 1"):
        Recommender.load(bundle)


def test_resealed_arrays_that_do_not_fit_are_refused_not_half_loaded(bundle):
    with np.load(bundle / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    del arrays["state_weights"]
    np.savez(bundle / "arrays.npz", **arrays)
    reseal(bundle, "arrays.npz")
    with pytest.raises(InputError, match="arrays.npz: the saved weights do not fit model 'ease'"):
        Recommender.load(bundle)


def test_saving_never_overwrites_without_being_asked(bundle, split, tmp_path):
    model = Recommender.load(bundle)
    with pytest.raises(InputError, match="a saved model is already here"):
        model.save(bundle)
    model.save(bundle, overwrite=True)
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "README.txt").write_text("my notes")
    model.save(mine)  # into a non-empty directory: only the bundle's files are added
    assert (mine / "README.txt").read_text() == "my notes" and Recommender.load(mine).name == "ease"


def test_a_gpu_trained_model_loads_on_the_cpu(tmp_path):
    from llm4rec.testing import cycle_chain

    path = create_model("sasrec", {"epochs": 1, "dim": 8, "valid": "none", "device": "cpu"}) \
        .fit(cycle_chain(n_users=20, n_items=10)).save(tmp_path / "s")
    config = json.loads((path / "config.json").read_text())
    config["config"]["device"] = "cuda"
    (path / "config.json").write_text(json.dumps(config))
    reseal(path, "config.json")
    with pytest.warns(UserWarning, match="loads on the CPU"):
        model = Recommender.load(path)
    assert model.config.device == "cpu" and model.score_indices([0]).shape == (1, 10)

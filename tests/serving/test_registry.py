"""The model registry: numbered copies, atomic publish, rollback, and corrupt bundles refused by name."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from llm4rec.errors import InputError
from llm4rec.models import Recommender, create_model
from llm4rec.serving.registry import ModelRegistry
from llm4rec.testing import checkerboard


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Two small bundles of different models on the checkerboard (even users like even items)."""
    data = checkerboard(n_users=20, n_items=16)
    root = tmp_path_factory.mktemp("bundles")
    return {"pop": create_model("pop").fit(data).save(root / "pop"),
            "itemknn": create_model("itemknn", {"neighbors": 8}).fit(data).save(root / "itemknn")}


@pytest.fixture
def registry(tmp_path):
    return ModelRegistry(tmp_path / "registry")


def flip_last_byte(path):
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))


def test_nothing_is_written_until_the_first_publish(registry):
    assert registry.current() is None and registry.versions() == [] and registry.stamp() == ""
    assert not registry.root.exists()
    with pytest.raises(InputError, match="no current model version.*llm4rec publish"):
        registry.load()
    with pytest.raises(InputError, match="nothing to roll back"):
        registry.rollback()
    assert not registry.root.exists()


def test_publish_publish_rollback(registry, bundles):
    assert registry.publish(bundles["pop"]) == "v000001"
    assert registry.current() == ("v000001", registry.root / "versions" / "v000001")
    first = registry.stamp()
    assert first

    assert registry.publish(bundles["itemknn"]) == "v000002"
    state = json.loads((registry.root / "CURRENT.json").read_text())
    assert state["version"] == "v000002" and state["previous"] == ["v000001"]
    assert set(state["published"]) == {"v000001", "v000002"}
    assert registry.versions() == ["v000001", "v000002"]
    second = registry.stamp()
    assert second not in ("", first)

    version, model = registry.load()
    assert version == "v000002" and model.name == "itemknn"
    top = model.recommend(["0", "1"], k=2).items  # user 0 is even, user 1 odd: neighbours of the same parity
    assert all(int(i) % 2 == 0 for i in top[0]) and all(int(i) % 2 == 1 for i in top[1])
    assert (model.score(["0", "1"]) == Recommender.load(bundles["itemknn"]).score(["0", "1"])).all()

    assert registry.rollback() == "v000001"
    assert registry.current()[0] == "v000001" and registry.history()["previous"] == []
    assert registry.stamp() not in (first, second)  # "published" now lists both versions
    assert registry.load()[1].name == "pop"
    assert registry.load("v000002")[1].name == "itemknn"  # a version by name, current or not
    with pytest.raises(InputError, match="nothing to roll back to: v000001 is current"):
        registry.rollback()

    registry.activate("v000002")
    assert registry.current()[0] == "v000002" and registry.history()["previous"] == ["v000001"]
    stamp = registry.stamp()
    registry.activate("v000002")  # already current: nothing changes
    assert registry.stamp() == stamp
    with pytest.raises(InputError, match=r"no such model version .*got 'v000009'; expected one of: v000001, v000002"):
        registry.activate("v000009")
    with pytest.raises(InputError, match="no such model version"):
        registry.load("../pop")


def test_publish_without_activating_keeps_the_current_version(registry, bundles):
    registry.publish(bundles["pop"])
    assert registry.publish(bundles["itemknn"], activate=False) == "v000002"
    assert registry.current()[0] == "v000001" and registry.history()["previous"] == []
    registry.activate("v000002")
    assert registry.rollback() == "v000001"


def test_the_published_copy_is_independent_of_the_source(registry, bundles, tmp_path):
    source = shutil.copytree(bundles["pop"], tmp_path / "mine")
    registry.publish(source)
    shutil.rmtree(source)
    assert registry.load()[1].recommend(["0"], k=3).items.shape == (1, 3)


@pytest.mark.parametrize("name", ["arrays.npz", "items.json", "bundle.json"])
def test_a_corrupt_bundle_is_refused_by_name_and_nothing_changes(registry, bundles, tmp_path, name):
    registry.publish(bundles["pop"])
    stamp, listing = registry.stamp(), sorted(p.name for p in (registry.root / "versions").iterdir())
    bad = shutil.copytree(bundles["itemknn"], tmp_path / "bad")
    flip_last_byte(bad / name)
    with pytest.raises(InputError) as err:
        registry.publish(bad)
    assert str(bad / name) in str(err.value)
    assert registry.stamp() == stamp and registry.current()[0] == "v000001"
    assert sorted(p.name for p in (registry.root / "versions").iterdir()) == listing == ["v000001"]


def test_a_missing_bundle_is_refused_before_anything_is_written(registry, tmp_path):
    with pytest.raises(InputError, match="not a saved model directory"):
        registry.publish(tmp_path / "nowhere")
    assert not registry.root.exists()


def test_a_version_corrupted_after_publishing_fails_to_load_and_cannot_be_made_current(registry, bundles):
    registry.publish(bundles["pop"])
    registry.publish(bundles["itemknn"])
    flip_last_byte(registry.root / "versions" / "v000001" / "arrays.npz")
    with pytest.raises(InputError, match=r"v000001/arrays\.npz: the file's content differs"):
        registry.load("v000001")
    stamp = registry.stamp()
    with pytest.raises(InputError, match=r"v000001/arrays\.npz"):
        registry.rollback()
    with pytest.raises(InputError, match=r"v000001/arrays\.npz"):
        registry.activate("v000001")
    assert registry.stamp() == stamp and registry.load()[0] == "v000002"
    (registry.root / "versions" / "v000002" / "users.json").write_text("[")
    with pytest.raises(InputError, match=r"v000002/users\.json"):
        registry.load()  # the service keeps the model it has


def test_concurrent_publishers_get_distinct_versions(registry, bundles):
    start = threading.Barrier(4)

    def publish(name):
        start.wait()
        return registry.publish(bundles[name])

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(publish, ["pop", "itemknn"] * 2))  # re-raises a publisher's error
    assert sorted(got) == registry.versions() == ["v000001", "v000002", "v000003", "v000004"]
    state = registry.history()
    assert sorted([state["version"], *state["previous"]]) == sorted(got)
    assert not [p for p in (registry.root / "versions").iterdir() if p.name.startswith(".")]
    for version in got:
        assert registry.load(version)[1].n_items_ == 16


def test_a_deleted_latest_version_does_not_give_its_name_away(registry, bundles):
    registry.publish(bundles["pop"])
    registry.publish(bundles["pop"])
    registry.rollback()
    shutil.rmtree(registry.root / "versions" / "v000002")
    assert registry.publish(bundles["pop"]) == "v000003"


def test_open_accepts_a_registry_and_refuses_a_bundle(registry, bundles, tmp_path):
    registry.publish(bundles["pop"])
    assert ModelRegistry.open(registry.root).current()[0] == "v000001"
    with pytest.raises(InputError, match="a model bundle, not a model registry.*llm4rec publish BUNDLE --registry"):
        ModelRegistry.open(bundles["pop"])
    with pytest.raises(InputError, match="does not exist"):
        ModelRegistry.open(tmp_path / "nowhere")


def test_a_damaged_current_file_is_named(registry, bundles):
    registry.publish(bundles["pop"])
    (registry.root / "CURRENT.json").write_text('{"version": "../../etc", "previous": [], "published": {}}')
    with pytest.raises(InputError, match="CURRENT.json: not a registry state"):
        registry.current()
    (registry.root / "CURRENT.json").write_text("{")
    with pytest.raises(InputError, match="CURRENT.json: not valid JSON"):
        registry.load()


def test_a_loaded_model_is_a_recommender(registry, bundles):
    registry.publish(bundles["itemknn"])
    assert isinstance(registry.load()[1], Recommender)

"""The on-disk embedding cache: hits are not re-encoded; concurrent writers lose nothing."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from llm4rec.text import EmbeddingCache, OnnxEncoder, encode_cached
from llm4rec.text.cache import default_cache_dir, text_keys

TEXTS = ["space starship galaxy", "garlic pasta recipe", "detective clue alibi", "dragon wizard castle"]


class CountingEncoder(OnnxEncoder):
    """The real int8 MiniLM, recording every text it is asked to encode."""

    def __init__(self) -> None:
        super().__init__(num_threads=1)
        self.encoded: list[str] = []

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        self.encoded.extend(texts)
        return super()._encode_batch(texts)


@pytest.fixture(scope="module")
def loaded_counter():
    return CountingEncoder().load()


@pytest.fixture
def counter(loaded_counter):
    loaded_counter.encoded.clear()
    return loaded_counter


def test_hits_are_not_encoded_again(counter, tmp_path):
    first = encode_cached(counter, TEXTS[:3], cache_dir=tmp_path, template_id="t")
    assert sorted(counter.encoded) == sorted(TEXTS[:3])
    counter.encoded.clear()
    again = encode_cached(counter, TEXTS[:3], cache_dir=tmp_path, template_id="t")
    assert counter.encoded == [] and again.dtype == np.float32
    np.testing.assert_array_equal(again, first)
    # A partial hit encodes only the new text; results come back in input order.
    mixed = encode_cached(counter, [TEXTS[3], TEXTS[0]], cache_dir=tmp_path, template_id="t")
    assert counter.encoded == [TEXTS[3]]
    np.testing.assert_array_equal(mixed[1], first[0])
    np.testing.assert_allclose(mixed[0], counter.encode([TEXTS[3]])[0], atol=1e-6)


def test_duplicates_are_encoded_once_and_the_key_includes_the_template(counter, tmp_path):
    out = encode_cached(counter, [TEXTS[0], TEXTS[1], TEXTS[0]], cache_dir=tmp_path, template_id="t")
    assert sorted(counter.encoded) == sorted(TEXTS[:2])
    np.testing.assert_array_equal(out[0], out[2])
    counter.encoded.clear()
    encode_cached(counter, [TEXTS[0]], cache_dir=tmp_path, template_id="other")
    assert counter.encoded == [TEXTS[0]]
    dirs = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*/*") if p.is_dir())
    assert dirs == [f"{counter.fingerprint}/other", f"{counter.fingerprint}/t"]
    assert (tmp_path / counter.fingerprint / "encoder.json").is_file()


def test_empty_input_and_bad_text(counter, tmp_path):
    from llm4rec.errors import InputError

    assert encode_cached(counter, [], cache_dir=tmp_path).shape == (0, 384)
    with pytest.raises(InputError, match="text 1 is empty"):
        encode_cached(counter, ["a", ""], cache_dir=tmp_path)


def test_unreadable_shards_are_skipped_and_nothing_is_pickled(counter, tmp_path):
    encode_cached(counter, TEXTS[:2], cache_dir=tmp_path, template_id="t")
    cache = EmbeddingCache(tmp_path, counter.fingerprint, "t")
    (shard,) = cache.shards()
    with np.load(shard, allow_pickle=False) as data:
        assert data["keys"].dtype == np.uint8 and data["vectors"].dtype == np.float32
    (cache.directory / "shard-0-0-broken.npz").write_bytes(b"not a zip file")
    (cache.directory / ".shard-9-9-partial.npz.tmp").write_bytes(b"half a file")  # an interrupted write
    counter.encoded.clear()
    with pytest.warns(UserWarning, match="unreadable embedding-cache shard"):
        encode_cached(counter, TEXTS[:2], cache_dir=tmp_path, template_id="t")
    assert counter.encoded == []


def test_compaction_merges_shards_without_losing_rows(counter, tmp_path, monkeypatch):
    monkeypatch.setattr("llm4rec.text.cache.COMPACT_AFTER", 3)
    for text in TEXTS:
        encode_cached(counter, [text], cache_dir=tmp_path, template_id="t")
    cache = EmbeddingCache(tmp_path, counter.fingerprint, "t")
    assert len(cache.shards()) <= 3 and len(cache) == len(TEXTS)
    vectors, found = cache.lookup(text_keys(TEXTS))
    assert found.all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM4REC_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "embeddings"
    monkeypatch.delenv("LLM4REC_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "llm4rec", "embeddings")


def _writer(root: str, worker: int, barrier) -> None:
    """Write 20 small shards (3 texts each, one shared with the other worker) into the same cache."""
    encoder = OnnxEncoder(num_threads=1)
    barrier.wait()
    for step in range(20):
        texts = [f"worker {worker} text {step} a", f"worker {worker} text {step} b", f"shared text {step}"]
        encode_cached(encoder, texts, cache_dir=root, template_id="t")


@pytest.mark.slow
def test_two_processes_writing_the_same_cache(tmp_path, counter):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, barrier)) for w in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    texts = [f"worker {w} text {s} {x}" for w in (0, 1) for s in range(20) for x in "ab"]
    texts += [f"shared text {s}" for s in range(20)]
    cache = EmbeddingCache(tmp_path, counter.fingerprint, "t")
    vectors, found = cache.lookup(text_keys(texts))
    assert found.all() and len(cache) == len(texts)  # 40 shards written, compaction ran, nothing lost
    assert len(cache.shards()) <= 33
    assert not list(cache.directory.glob(".*"))  # no temporary file left behind
    np.testing.assert_allclose(vectors, counter.encode(texts), atol=2e-2)

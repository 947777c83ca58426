"""The on-disk embedding cache: hits are not re-encoded; concurrent writers lose nothing; an interrupted
run keeps its finished work."""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
from contextlib import contextmanager

import numpy as np
import pytest

from llm4rec.text import EmbeddingCache, OnnxEncoder, TextEncoder, encode_cached
from llm4rec.text.cache import default_cache_dir, text_keys

TEXTS = ["space starship galaxy", "garlic pasta recipe", "detective clue alibi", "dragon wizard castle"]


class CountingEncoder(OnnxEncoder):
    """The real int8 MiniLM, recording every text it is asked to encode."""

    def __init__(self) -> None:
        super().__init__(num_threads=1)
        self.encoded: list[str] = []

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        self.encoded.extend(texts)
        return super()._tokenize(texts)


class FakeEncoder(TextEncoder):
    """Deterministic 8-d vectors from each text's sha256; records the texts of every batch it encodes.

    With ``stop_after=K`` it raises KeyboardInterrupt (a Ctrl-C) when asked for batch K + 1.
    """

    backend = "fake"

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.batches: list[list[str]] = []

    @property
    def encoded(self) -> list[str]:
        return [t for batch in self.batches for t in batch]

    def _identity(self) -> dict:
        return {"dim": 8}  # stop_after does not change the vectors: interrupted and clean runs share a cache

    def _load(self) -> None:
        self.dim_ = 8

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        if len(self.batches) == self.stop_after:
            raise KeyboardInterrupt
        self.batches.append(list(texts))
        digests = b"".join(hashlib.sha256(t.encode()).digest()[:8] for t in texts)
        return np.frombuffer(digests, dtype=np.uint8).reshape(len(texts), 8).astype(np.float32) + 1.0


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


def test_an_interrupted_run_keeps_its_finished_chunks_and_a_rerun_encodes_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr("llm4rec.text.cache.STORE_EVERY", 8)  # 50 texts, batches of 4: a shard every 2 batches
    texts = [f"item {k} " + "word " * (k % 7) for k in range(50)]
    texts.append(texts[3])  # a duplicate is encoded once
    first = FakeEncoder(stop_after=5)
    with pytest.raises(KeyboardInterrupt):
        encode_cached(first, texts, cache_dir=tmp_path / "run", batch_size=4)
    cache = EmbeddingCache(tmp_path / "run", first.fingerprint)
    assert len(first.encoded) == 20  # 5 batches done, then Ctrl-C in the 6th ...
    assert len(cache.shards()) == 2 and len(cache) == 16  # ... two finished chunks of 8 stored, the third lost
    stored = first.encoded[:16]
    assert cache.lookup(text_keys(stored))[1].all()

    calls = []

    @contextmanager
    def one_bar(enabled, total, description):
        advanced: list[int] = []
        calls.append((enabled, total, advanced))
        yield advanced.append

    monkeypatch.setattr("llm4rec.text.cache.progress_reporter", one_bar)
    rerun, looked_up = FakeEncoder(), []
    resumed = encode_cached(rerun, texts, cache_dir=tmp_path / "run", batch_size=4, progress=True,
                            on_lookup=lambda cached, to_encode: looked_up.append((cached, to_encode)))
    assert looked_up == [(16, 34)]
    assert len(rerun.encoded) == 34 and not set(rerun.encoded) & set(stored)
    assert [(enabled, total, sum(advanced)) for enabled, total, advanced in calls] == [(True, 34, 34)]

    clean = FakeEncoder()
    expected = encode_cached(clean, texts, cache_dir=tmp_path / "clean", batch_size=4)
    np.testing.assert_array_equal(resumed, expected)
    assert rerun.batches == clean.batches[4:]  # the rest went in the same batches as in an uninterrupted run
    assert len(EmbeddingCache(tmp_path / "run", first.fingerprint)) == 50


def test_shards_are_whole_batches_and_few(tmp_path, monkeypatch):
    monkeypatch.setattr("llm4rec.text.cache.STORE_EVERY", 2)
    texts = [f"text number {k}" for k in range(200)]
    encoder = FakeEncoder()
    encode_cached(encoder, texts, cache_dir=tmp_path, batch_size=3)
    # 200 texts / COMPACT_AFTER (32) = 7 per shard at least, rounded up to whole batches of 3: 9
    sizes = []
    for shard in EmbeddingCache(tmp_path, encoder.fingerprint).shards():
        with np.load(shard, allow_pickle=False) as data:
            sizes.append(len(data["keys"]))
    assert sorted(sizes) == [2] + [9] * 22 and len(sizes) == math.ceil(200 / 9)
    assert all(len(batch) == 3 for batch in encoder.batches[:-1])


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

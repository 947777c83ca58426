"""Compressed tables (int8 rows, product quantisation) and compressed bundles: error bounds, faiss as the
reference decoder, what stays float32, labels stored as UTF-8, legacy labels still read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm4rec.data import make_split
from llm4rec.errors import InputError
from llm4rec.models import Recommender, create_model
from llm4rec.models.bundle import _labels, _labels_utf8, read_manifest, write_bundle
from llm4rec.models.compressed import MIN_SIZE, PQ_MIN_ROWS, _two_stage, decode_arrays, encode_arrays
from llm4rec.testing import checkerboard


def _table(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_int8_rows_are_within_half_a_step_of_each_row_range():
    table = _table(600, 64) * np.linspace(0.01, 10, 600, dtype=np.float32)[:, None]  # rows of very different sizes
    arrays = {"state_table": table, "state_bias": np.ones(64, np.float32), "fit_items": np.arange(5)}
    encoded, summary = encode_arrays(arrays, "int8", n_items=600)
    assert encoded["q8__state_table"].dtype == np.uint8 and encoded["q8range__state_table"].shape == (600, 2)
    assert "state_table" not in encoded and encoded["state_bias"] is arrays["state_bias"]  # small: float32
    assert summary["table"]["codec"] == "int8" and summary["table"]["bytes_after"] == 600 * 64 + 600 * 8
    decoded = decode_arrays(encoded)
    step = (table.max(axis=1) - table.min(axis=1)) / 255
    assert np.all(np.abs(decoded["state_table"] - table) <= step[:, None] * 0.5001 + 1e-7)
    zero = decode_arrays(encode_arrays({"state_z": np.zeros((300, 64), np.float32)}, "int8", n_items=1)[0])
    assert not zero["state_z"].any()  # an all-zero row (an item never seen) stays exactly zero
    np.testing.assert_array_equal(decoded["fit_items"], arrays["fit_items"])


def test_pq_codes_decode_as_faiss_decodes_them():
    import faiss

    table = _table(PQ_MIN_ROWS + 100, 32)
    encoded, summary = encode_arrays({"state_items": table}, "pq", n_items=len(table), pq_dims=4)
    codes, centroids = encoded["pq__state_items"], encoded["pqcent__state_items"]
    assert codes.dtype == np.uint8 and codes.shape == (len(table), 8) and centroids.shape == (8, 256, 4)
    assert summary["items"]["codec"] == "pq"
    pq = faiss.ProductQuantizer(32, 8, 8)
    faiss.copy_array_to_vector(centroids.ravel(), pq.centroids)
    np.testing.assert_array_equal(decode_arrays(encoded)["state_items"], pq.decode(codes))
    np.testing.assert_array_equal(pq.compute_codes(table), codes)  # each sub-vector's nearest centroid
    error = np.linalg.norm(decode_arrays(encoded)["state_items"] - table) / np.linalg.norm(table)
    assert error < 0.6  # 8 bits per 4 Gaussian values


def test_pq_leaves_other_tables_to_int8():
    n_items = PQ_MIN_ROWS + 10
    arrays = {"state_items": _table(n_items + 1, 16),  # an item table with a padding row
              "state_users": _table(5000, 16),  # not an item table
              "state_odd": _table(n_items, 18),  # 4 does not divide 18
              "state_short": _table(1000, 64)}  # an item-sized table of another model: too few rows to train
    _, summary = encode_arrays(arrays, "pq", n_items=n_items, pq_dims=4)
    assert summary["items"]["codec"] == "pq"
    assert {summary[k]["codec"] for k in ("users", "odd", "short")} == {"int8"}
    assert _table(10, 10).size < MIN_SIZE


def test_bad_codec_options_and_broken_codes_are_clear_errors():
    with pytest.raises(InputError, match="unknown table compression"):
        encode_arrays({}, "fp4", n_items=1)
    with pytest.raises(InputError, match="pq_dims"):
        encode_arrays({}, "pq", n_items=1, pq_dims=0)
    encoded, _ = encode_arrays({"state_t": _table(300, 64)}, "int8", n_items=300)
    del encoded["q8range__state_t"]
    with pytest.raises(ValueError, match="no matching per-row ranges"):
        decode_arrays(encoded)


def test_labels_are_stored_as_utf8_and_legacy_str_arrays_still_read():
    labels = np.asarray(["Amélie (2001)", "", "東京物語", "x" * 500])
    stored = _labels_utf8(labels)
    assert stored["item_labels_utf8"].dtype == np.uint8 and stored["item_labels_offsets"][-1] == \
        sum(len(s.encode()) for s in labels)
    assert _labels(stored).tolist() == labels.tolist()
    assert _labels({"item_labels": labels}).tolist() == labels.tolist()


@pytest.fixture(scope="module")
def split():
    return make_split(checkerboard(n_users=64, n_items=2400), "loo", seed=3)


@pytest.mark.parametrize("codec", ["int8", "pq"])
def test_a_compressed_bundle_records_its_codes_and_scores_close_to_the_original(split, tmp_path, codec):
    fit = split.stage("test").fit
    model = create_model("als", {"factors": 32, "iterations": 3}).fit(fit)
    path = write_bundle(model, tmp_path / codec, compression={"method": codec, "tables": codec, "pq_dims": 2})
    manifest = read_manifest(path)
    assert manifest["compression"]["method"] == codec
    encoded = manifest["compression"]["encoded"]
    assert encoded["item_factors"]["codec"] == ("pq" if codec == "pq" else "int8")
    with np.load(path / "arrays.npz") as z:
        assert "state_item_factors" not in z.files
        assert z["fit_items"].dtype == np.uint16 and z["fit_offsets"].dtype == np.uint16  # narrowed
    loaded = Recommender.load(path)
    np.testing.assert_array_equal(loaded.fit_items_, model.fit_items_)
    np.testing.assert_array_equal(loaded.fit_offsets_, model.fit_offsets_)
    assert loaded.fit_offsets_.dtype == np.int64
    users = np.arange(20)
    a, b = model.score_indices(users), loaded.score_indices(users)
    corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert corr > (0.9999 if codec == "int8" else 0.9)
    table = encoded["item_factors"]
    assert table["bytes_after"] * 3 < table["bytes_before"]  # int8: 32 + 8 bytes for 32 floats
    plain = model.save(tmp_path / "plain")
    saved = (plain / "arrays.npz").stat().st_size - (path / "arrays.npz").stat().st_size
    assert saved >= table["bytes_before"] - table["bytes_after"] - 1024  # the saving reaches the disk (less headers)


def _two_stage_reference(approx: np.ndarray, exact: np.ndarray, shortlist: int) -> np.ndarray:
    """Row by row: the shortlist's exact scores, then the rest in approx's order (a ranking, best first)."""
    rankings = []
    for a, e in zip(approx, exact):
        short = np.argsort(-a, kind="stable")[:shortlist]
        rest = [i for i in np.argsort(-a, kind="stable") if i not in set(short)]
        rankings.append(list(short[np.argsort(-e[short], kind="stable")]) + rest)
    return np.asarray(rankings)


@pytest.mark.parametrize("restrict", [False, True])
def test_two_stage_scoring_ranks_the_shortlist_exactly_and_keeps_the_rest_in_order(restrict):
    rng = np.random.default_rng(4)
    exact = rng.standard_normal((6, 300)).astype(np.float32)
    approx = (exact + 0.5 * rng.standard_normal(exact.shape)).astype(np.float32)
    items = np.sort(rng.choice(1000, 300, replace=False)) if restrict else None
    lookup = {int(v): i for i, v in enumerate(items)} if restrict else None

    def exact_fn(cols):
        pos = [lookup[int(c)] for c in cols] if restrict else cols
        return exact[:, pos]

    out = _two_stage(approx, exact_fn, items, shortlist=20)
    expected = _two_stage_reference(approx, exact, 20)
    np.testing.assert_array_equal(np.argsort(-out, axis=1, kind="stable"), expected)
    top = np.take_along_axis(out, expected[:, :20], 1)
    np.testing.assert_array_equal(top, np.take_along_axis(exact, expected[:, :20], 1))  # exact values, not shifted
    assert (out[np.arange(6)[:, None], expected[:, 20:]] < top.min(1, keepdims=True)).all()
    np.testing.assert_array_equal(_two_stage(approx, exact_fn, items, shortlist=400), exact)  # all shortlisted


def test_a_pq_bundle_with_rescoring_keeps_int8_rows_and_ranks_like_the_original(split, tmp_path):
    fit = split.stage("test").fit
    model = create_model("als", {"factors": 32, "iterations": 3}).fit(fit)
    coarse = {"method": "pq", "tables": "pq", "pq_dims": 8}
    plain = Recommender.load(write_bundle(model, tmp_path / "pq", compression=coarse))
    path = write_bundle(model, tmp_path / "pq-rescore", compression={**coarse, "rescore": 50})
    manifest = read_manifest(path)
    assert manifest["compression"]["rescore"] == 50
    with np.load(path / "arrays.npz") as z:
        assert {"pq__state_item_factors", "rf8__state_item_factors", "rf8range__state_item_factors"} <= set(z.files)
    rescored = Recommender.load(path)
    assert rescored.rescore_shortlist_ == 50 and not hasattr(plain, "rescore_shortlist_")
    int8 = Recommender.load(write_bundle(model, tmp_path / "int8", compression={"method": "int8", "tables": "int8"}))
    users = np.arange(64)
    original = model.score_indices(users)
    best = -np.sort(-original, axis=1)[:, :10].sum(1)

    def top10(m):
        return m.recommend_indices(users, 10, exclude_seen=False)[0]

    def kept(m):  # the share of the original top-10's score mass the model's top-10 holds (scores near-tie here)
        return float(np.mean(np.take_along_axis(original, top10(m), 1).sum(1) / best))

    def like_int8(m):  # the top-10 the int8 rows alone give
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top10(m), top10(int8))])

    assert kept(rescored) > 0.9995 > 0.995 > kept(plain)
    assert like_int8(rescored) >= 0.95 > 0.8 > like_int8(plain)
    items = np.arange(0, 2400, 7)  # a candidate subset: its own shortlist, scored by the int8 rows
    sub, fine = rescored.score_indices(users[:5], items), int8.score_indices(users[:5], items)
    short = np.argsort(-sub, axis=1)[:, :50]
    np.testing.assert_allclose(np.take_along_axis(sub, short, 1), np.take_along_axis(fine, short, 1), rtol=1e-6)


def test_a_bundle_lists_only_its_own_files_and_an_encoder_folder(split, tmp_path):
    path = create_model("pop").fit(split.stage("test").fit).save(tmp_path / "m")
    manifest = json.loads((path / "bundle.json").read_text())
    manifest["files"]["../elsewhere"] = manifest["files"]["users.json"]
    (path / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="does not list the bundle's files"):
        Recommender.load(path)

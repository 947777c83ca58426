"""The public surface and item_embeddings / user_embeddings on the synthetic data."""

from __future__ import annotations

import numpy as np

import llm4rec.text
from llm4rec.data import make_synthetic
from llm4rec.text import item_embeddings, item_texts, user_embeddings, user_texts


def test_public_surface():
    assert set(llm4rec.text.__all__) == {
        "ENCODERS", "E5Encoder", "EmbeddingCache", "HFEncoder", "Int8Encoder", "OnnxEncoder", "SentenceTransformerEncoder",
        "Template", "TextEncoder", "default_cache_dir", "default_item_template", "default_user_template",
        "encode_cached", "encode_table", "get_encoder", "item_embeddings", "item_template", "item_texts",
        "item_titles", "scrub_pii", "table_texts", "text_encoder", "user_embeddings", "user_texts"}
    assert set(llm4rec.text.ENCODERS) == {"minilm", "minilm-int8", "minilm-qint8", "e5-multilingual"}


def test_item_embeddings_are_aligned_normalised_and_cached(minilm_int8, synthetic, tmp_path):
    emb = item_embeddings(synthetic, encoder=minilm_int8, cache_dir=tmp_path)
    assert emb.shape == (synthetic.n_items, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    direct = minilm_int8.encode(item_texts(synthetic))
    np.testing.assert_allclose(np.sum(emb * direct, axis=1), 1.0, atol=1e-3)  # row i is item i's text
    assert np.array_equal(item_embeddings(synthetic, encoder="minilm-int8", cache_dir=tmp_path), emb)
    titles = item_embeddings(synthetic, encoder=minilm_int8, template="{title}", cache_dir=tmp_path)
    assert not np.allclose(titles, emb)
    assert len([p for p in tmp_path.glob("*/*") if p.is_dir()]) == 2  # one directory per template


def test_item_text_embeddings_recover_the_planted_genres(minilm_int8, tmp_path):
    ds, truth = make_synthetic(n_users=30, n_items=60, interactions_per_user=(5, 20), return_truth=True)
    emb = item_embeddings(ds, encoder=minilm_int8, cache_dir=tmp_path)
    sim = emb @ emb.T
    same = truth.item_genre[:, None] == truth.item_genre[None, :]
    off_diagonal = ~np.eye(len(sim), dtype=bool)
    assert sim[same & off_diagonal].mean() > sim[~same].mean() + 0.1


def test_user_embeddings(minilm_int8, synthetic, tmp_path):
    emb = user_embeddings(synthetic, encoder=minilm_int8, history=3, cache_dir=tmp_path)
    assert emb.shape == (synthetic.n_users, 384)
    direct = minilm_int8.encode(user_texts(synthetic, history=3))
    np.testing.assert_allclose(np.sum(emb * direct, axis=1), 1.0, atol=1e-3)

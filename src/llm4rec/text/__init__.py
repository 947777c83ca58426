"""Text from data and text encoders: templates, PII scrubbing, encoders, an embedding cache.

The front door is :func:`item_embeddings`::

    from llm4rec.text import item_embeddings
    E = item_embeddings(ds)              # float32[n_items, 384], rows L2-normalised, cached on disk
    E = item_embeddings(ds, encoder="minilm-int8", template="{title}. Categories: {categories}")

and :func:`user_embeddings` for user text (profile + recent history titles).
Texts come from :func:`item_texts` / :func:`user_texts`
(:mod:`llm4rec.text.templates`), PII scrubbed by default
(:mod:`llm4rec.text.pii`); encoders from :func:`get_encoder`
(:mod:`llm4rec.text.encoders`); vectors are cached by :func:`encode_cached`
(:mod:`llm4rec.text.cache`) under ``$LLM4REC_CACHE/embeddings`` or
``~/.cache/llm4rec/embeddings``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm4rec.errors import InputError
from llm4rec.text.cache import EmbeddingCache, default_cache_dir, encode_cached
from llm4rec.text.encoders import (
    ENCODERS,
    E5Encoder,
    HFEncoder,
    Int8Encoder,
    OnnxEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    get_encoder,
)
from llm4rec.text.pii import scrub_pii
from llm4rec.text.templates import (
    Template,
    default_item_template,
    default_user_template,
    item_template,
    item_texts,
    item_titles,
    table_texts,
    user_texts,
)

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

    from llm4rec.data.dataset import Dataset

__all__ = ["ENCODERS", "E5Encoder", "EmbeddingCache", "HFEncoder", "Int8Encoder", "OnnxEncoder",
           "SentenceTransformerEncoder", "Template", "TextEncoder", "default_cache_dir", "default_item_template", "default_user_template",
           "encode_cached", "encode_table", "get_encoder", "item_embeddings", "item_template", "item_texts",
           "item_titles", "scrub_pii", "table_texts", "text_encoder", "user_embeddings", "user_texts"]


@lru_cache(maxsize=4)
def _shared_encoder(name: str) -> TextEncoder:
    """One loaded encoder per registered name or path in this process (they hold no other state)."""
    return get_encoder(name)


def text_encoder(encoder: str | TextEncoder) -> TextEncoder:
    """The process-wide encoder for a registered name or path (an encoder object is returned as it is)."""
    return encoder if isinstance(encoder, TextEncoder) else _shared_encoder(str(encoder))



def _template(template: str | Template | None) -> Template | None:
    return template if template is None or isinstance(template, Template) else Template(template)


def item_embeddings(dataset: Dataset, *, encoder: str | TextEncoder = "minilm", template: str | None = None,
                    cache_dir: str | Path | None = None, batch_size: int = 64,
                    progress: bool = False) -> np.ndarray:
    """The text embedding of every item: float32[n_items, dim], rows L2-normalised, in item-index order.

    Args:
        dataset: a dataset with item attributes (any split's fit set shares them).
        encoder: a registered name (``"minilm"``, ``"minilm-qint8"``,
            ``"minilm-int8"``, ``"e5-multilingual"``), a model path, or a
            :class:`TextEncoder`.
        template: item text template over attribute columns, a string or a
            :class:`Template` (``None``: the dataset's default, see
            :func:`default_item_template`).
        cache_dir: embedding cache root (``None``: :func:`default_cache_dir`).
            Only texts not cached for this (encoder, template) are encoded.
        batch_size: texts per encoder batch.
        progress: show a progress bar on stderr while encoding.
    """
    enc = text_encoder(encoder)
    tpl = _template(template) or default_item_template(dataset)
    texts = item_texts(dataset, tpl)
    return encode_cached(enc, texts, cache_dir=cache_dir, template_id=tpl.id, batch_size=batch_size,
                         progress=progress)


def user_embeddings(dataset: Dataset, *, encoder: str | TextEncoder = "minilm", template: str | None = None,
                    history: int = 10, cache_dir: str | Path | None = None, batch_size: int = 64,
                    progress: bool = False) -> np.ndarray:
    """The text embedding of every user (profile + the titles of the ``history`` most recent items):
    float32[n_users, dim], rows L2-normalised, in user-index order.

    Pass a split's fit set so that no held-out item appears in the text.
    Other arguments as :func:`item_embeddings`; ``template`` may use
    ``{history}`` (see :func:`default_user_template`).
    """
    enc = text_encoder(encoder)
    tpl = _template(template) or default_user_template(dataset)
    texts = user_texts(dataset, tpl, history=history)
    return encode_cached(enc, texts, cache_dir=cache_dir, template_id=tpl.id, batch_size=batch_size,
                         progress=progress)


def encode_table(table: Any, template: str, encoder: str | TextEncoder = "minilm", *,
                 cache_dir: str | Path | None = None,
                 progress: bool = False) -> tuple[list[str], pl.DataFrame, np.ndarray]:
    """Texts and embeddings of the rows of an item table, as :func:`item_embeddings` makes them.

    ``table``: a polars or pandas frame with ``item_id`` and the columns
    ``template`` reads (one row per item; ids unique). Returns (item ids,
    the table as polars with string ids, float32[n, dim] L2-normalised rows).
    This is how a model encodes items added after fit exactly as it encoded
    its catalogue.
    """
    import polars as pl

    from llm4rec.data.dataset import _to_polars

    frame = _to_polars(table)
    if "item_id" not in frame.columns:
        raise InputError("the item table has no item_id column", column="item_id",
                         expected=f"an 'item_id' column beside the text columns (found {frame.columns})")
    if frame.height == 0:
        raise InputError("the item table is empty", expected="at least one item row")
    frame = frame.with_columns(pl.col("item_id").cast(pl.Utf8))
    ids = frame.get_column("item_id")
    if ids.null_count():
        raise InputError("an item without an id", line=int(ids.is_null().arg_true()[0]) + 1, column="item_id",
                         expected="an id in every row")
    if ids.is_duplicated().any():
        raise InputError("an item id appears twice", value=ids.filter(ids.is_duplicated())[0],
                         expected="one row per item")
    tpl = Template(template)
    texts = table_texts(frame, tpl)
    vectors = encode_cached(text_encoder(encoder), texts, cache_dir=cache_dir, template_id=tpl.id,
                            progress=progress)
    return ids.to_list(), frame, vectors

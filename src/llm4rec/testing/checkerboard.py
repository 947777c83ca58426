"""A checkerboard interaction matrix with a known right answer."""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from llm4rec.data.dataset import Dataset

__all__ = ["checkerboard"]


def checkerboard(n_users: int = 40, n_items: int = 30, density: float = 0.6, seed: int = 0,
                 order: Literal["items", "random"] = "items") -> Dataset:
    """Even users interact only with even items, odd users only with odd items.

    Each user keeps a random ``density`` share of their half of the catalogue,
    so a personalised model must recommend unseen items of the user's own
    parity. Item text names the parity ("even item 4"), so text models can
    learn it too. Timestamps follow the item order (``order="items"``), or a
    random order (``"random"``: ascending sequences would teach a sequential
    model "next = a larger item", not the parity).
    """
    rng = np.random.default_rng(seed)
    users, items = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    same = (users % 2) == (items % 2)
    keep = same & (rng.random(users.shape) < density)
    u, i = users[keep], items[keep]
    frame = pl.DataFrame({"user_id": u.astype(str), "item_id": i.astype(str),
                          "timestamp": (np.arange(len(u)) if order == "items" else rng.permutation(len(u)))
                          .astype(np.float64),
                          "rating": np.where(i % 2 == 0, 4.0, 3.0)})
    item_attrs = pl.DataFrame({
        "item_id": np.arange(n_items).astype(str),
        "title": [f"{'even' if j % 2 == 0 else 'odd'} item {j}" for j in range(n_items)],
    })
    return Dataset.from_frame(frame, name="checkerboard", item_attrs=item_attrs, text_fields=("title",))

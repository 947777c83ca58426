"""Known-answer sequential data: the next item is a deterministic function of the last one."""

from __future__ import annotations

import numpy as np

from llm4rec.data import Dataset

__all__ = ["cycle_chain"]


def cycle_chain(n_users: int = 300, n_items: int = 60, length: tuple[int, int] = (8, 16), seed: int = 1) -> Dataset:
    """Users walk a fixed random cycle of ``n_items`` items for ``length`` (low, high) steps from a random
    start. Every item has a title ("item number i"), so text models can run on it too."""
    import polars as pl

    rng = np.random.default_rng(seed)
    cycle = rng.permutation(n_items)
    rows = []
    for user in range(n_users):
        start, steps = rng.integers(n_items), rng.integers(*length)
        rows += [(str(user), str(cycle[(start + t) % n_items]), float(t)) for t in range(steps)]
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
    attrs = pl.DataFrame({"item_id": [str(i) for i in range(n_items)],
                          "title": [f"item number {i}" for i in range(n_items)]})
    return Dataset.from_frame(frame, name="chain", item_attrs=attrs, text_fields=("title",))

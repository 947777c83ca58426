"""Random crop / mask / reorder of right-aligned item histories (CL4SRec, Xie et al. 2022), vectorised."""

from __future__ import annotations

import numpy as np

__all__ = ["AUGMENTATIONS", "augment_histories", "parse_augmentations"]

AUGMENTATIONS = ("crop", "mask", "reorder")


def parse_augmentations(value: str) -> str:
    """Normalise ``'none'`` or a comma list of :data:`AUGMENTATIONS`; ValueError otherwise."""
    ops = [op.strip() for op in value.split(",") if op.strip()]
    if ops == ["none"]:
        return "none"
    bad = [op for op in ops if op not in AUGMENTATIONS]
    if bad or not ops:
        raise ValueError(f"unknown augmentation {bad or value!r}; expected 'none' or a comma list of "
                         + ", ".join(AUGMENTATIONS))
    return ",".join(ops)


def augment_histories(slots: np.ndarray, mask: np.ndarray, ops: list[str], rate: float,
                      rng: np.random.Generator, *, one_of: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Augmented copies of B right-aligned histories.

    slots: int64[B, L] history entries; mask: bool[B, L] (True = real, real
    entries right-aligned). Each op touches every history of two or more
    items: ``crop`` keeps a random contiguous ``1 - rate`` of it, ``mask``
    drops each item with probability ``rate`` (never the most recent),
    ``reorder`` shuffles a random span of ``rate`` of it. All ``ops`` are
    applied in turn, or with ``one_of`` a single one drawn per history.
    Returns (slots, mask) of the same shapes, still right-aligned.
    """
    if one_of:
        pick = rng.integers(len(ops), size=len(slots))
        out_slots, out_mask = slots.copy(), mask.copy()
        for k, op in enumerate(ops):
            s, m = augment_histories(slots, mask, [op], rate, rng)
            out_slots[pick == k], out_mask[pick == k] = s[pick == k], m[pick == k]
        return out_slots, out_mask
    b, n_slots = slots.shape
    cols = np.arange(n_slots)[None, :]
    for op in ops:
        length = mask.sum(1)  # (B,)
        first = n_slots - length  # first real column
        active = length >= 2
        if op == "crop":
            keep_len = np.maximum(1, np.ceil(length * (1 - rate))).astype(np.int64)
            offset = (rng.random(b) * (length - keep_len + 1)).astype(np.int64)
            lo = (first + offset)[:, None]
            mask = mask & (~active[:, None] | ((cols >= lo) & (cols < lo + keep_len[:, None])))
        elif op == "mask":
            mask = mask & ~((rng.random((b, n_slots)) < rate) & active[:, None] & (cols < n_slots - 1))
        else:  # reorder
            span = np.maximum(2, np.floor(length * rate)).astype(np.int64)
            offset = (rng.random(b) * np.maximum(length - span + 1, 1)).astype(np.int64)
            lo = (first + offset)[:, None]
            inside = active[:, None] & (cols >= lo) & (cols < lo + span[:, None])
            key = np.where(inside, lo + rng.random((b, n_slots)) * span[:, None], cols)
            order = np.argsort(key, axis=1, kind="stable")
            slots = np.take_along_axis(slots, order, 1)
        order = np.argsort(mask, axis=1, kind="stable")  # right-align what is left, in order
        slots, mask = np.take_along_axis(slots, order, 1), np.take_along_axis(mask, order, 1)
    return slots, mask

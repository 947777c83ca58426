"""History augmentation: crop / mask / reorder keep histories valid and right-aligned."""

import numpy as np
import pytest

from llm4rec.data.augment import augment_histories, parse_augmentations


def test_history_augmentation_keeps_histories_valid():
    rng = np.random.default_rng(0)
    rows = np.arange(200).reshape(20, 10)
    lengths = rng.integers(0, 11, 20)
    mask = np.arange(10)[None, :] >= 10 - lengths[:, None]  # right-aligned
    for ops in (["crop"], ["mask"], ["reorder"], ["crop", "mask", "reorder"]):
        slots, kept = augment_histories(rows, mask, ops, 0.4, rng)
        for r in range(20):
            before, after = set(rows[r][mask[r]]), slots[r][kept[r]]
            assert set(after) <= before and len(set(after)) == len(after)
            assert (len(after) >= 1) == (len(before) >= 1)
            n = kept[r].sum()
            assert kept[r, 10 - n:].all()  # still right-aligned
            if ops == ["reorder"]:
                assert set(after) == before
            if ops == ["mask"] and len(before):
                assert rows[r][mask[r]][-1] == after[-1]  # the most recent item is never masked


def test_one_of_applies_a_single_drawn_op_per_history():
    rng = np.random.default_rng(1)
    rows = np.tile(np.arange(10), (400, 1))
    mask = np.ones((400, 10), dtype=bool)
    slots, kept = augment_histories(rows, mask, ["crop", "reorder"], 0.5, rng, one_of=True)
    cropped = kept.sum(1) < 10
    assert 150 < cropped.sum() < 250
    for r in np.flatnonzero(cropped):  # a crop keeps a contiguous run of 5, in order: not reordered too
        after = slots[r][kept[r]]
        assert len(after) == 5 and (np.diff(after) == 1).all()
    assert (slots[~cropped] != rows[~cropped]).any(1).mean() > 0.9  # the others are reordered


def test_parse_augmentations():
    assert parse_augmentations(" crop, mask ") == "crop,mask"
    assert parse_augmentations("none") == "none"
    with pytest.raises(ValueError, match="shuffle"):
        parse_augmentations("crop,shuffle")

"""EASE against its closed form, computed the slow, obvious way."""

import numpy as np
import polars as pl
import pytest

from llm4rec.data import Dataset
from llm4rec.models import create_model
from llm4rec.models.ease import _mirror_lower


@pytest.mark.parametrize("l2", [0.5, 10.0])
def test_weights_equal_the_closed_form(l2):
    rng = np.random.default_rng(3)
    u, i = np.nonzero(rng.random((50, 35)) < 0.2)
    ds = Dataset.from_frame(pl.DataFrame({"user_id": u.astype(str), "item_id": i.astype(str)}))
    model = create_model("ease", {"l2": l2}).fit(ds)
    x = ds.matrix().toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.weights_, b, atol=1e-6)
    np.testing.assert_allclose(model.score_indices(np.array([0, 1])), x[:2] @ b, atol=1e-5)


def test_mirror_lower_in_blocks():
    a = np.tril(np.arange(49, dtype=float).reshape(7, 7))
    _mirror_lower(a, block=3)
    np.testing.assert_array_equal(a, a.T)
    np.testing.assert_array_equal(np.tril(a), np.tril(np.arange(49, dtype=float).reshape(7, 7)))

"""The evaluation protocols of PROTOCOLS.md: P-LOO, P-LOO-100, P-RAND, P-COLD.

``make_split(dataset, "loo", seed=2026)`` returns a :class:`Split`; its
``stage("valid")`` / ``stage("test")`` give the fit set, the targets and the
users to evaluate. Same input and seed -> the same split and fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from llm4rec.data.dataset import Dataset
from llm4rec.errors import InputError

__all__ = ["PROTOCOLS", "Split", "Stage", "make_split", "sample_negatives"]

TRAIN, VALID, TEST = 0, 1, 2

#: protocol name -> (cutoff K, metric names reported, tuning metric)
PROTOCOLS: dict[str, dict] = {
    "loo": {"title": "P-LOO", "k": 10, "metrics": ("HR@10", "NDCG@10", "MRR@10"), "tune": "NDCG@10",
            "sampled": False},
    "loo100": {"title": "P-LOO-100", "k": 10, "metrics": ("HR@10", "NDCG@10", "MRR@10"),
               "tune": "NDCG@10", "sampled": True},
    "rand": {"title": "P-RAND", "k": 20, "metrics": ("Recall@20", "NDCG@20"), "tune": "NDCG@20",
             "sampled": False},
    "cold": {"title": "P-COLD", "k": 20, "metrics": ("Recall@20", "NDCG@20"), "tune": "NDCG@20",
             "sampled": False},
}


def check_protocol(name: str) -> str:
    key = name.lower().replace("p-", "").replace("-", "")
    if key not in PROTOCOLS:
        raise InputError("unknown protocol", value=name, expected="one of " + ", ".join(PROTOCOLS))
    return key


@dataclass(frozen=True, eq=False)
class Stage:
    """What one stage of a protocol evaluates.

    Attributes:
        protocol, name: e.g. ``"loo"``, ``"test"``.
        fit: the fit set, a :class:`Dataset` with the full vocabularies.
        targets: CSR (n_users, n_items) of target interactions.
        users: int64[n_eval] evaluated users, ascending.
        candidates: int64[m] items ranked: P-COLD's (pseudo-)cold items, or
            the protocol's catalogue when the dataset also lists items without
            any interaction; ``None`` for all items.
        negatives: int64[n_eval, 100] sampled negatives (P-LOO-100; -1 pads a
            user with fewer than 100 non-interacted items), or ``None``.
        target_ratings: CSR like ``targets`` holding the targets' ratings, or
            ``None`` when the dataset has no ratings.

    ``fit.provenance`` names the dataset, protocol, stage, seed and split, so a
    model fitted on it knows (and saves) what it has seen.
    """

    protocol: str
    name: str
    fit: Dataset
    targets: sp.csr_matrix
    users: np.ndarray
    candidates: np.ndarray | None = None
    negatives: np.ndarray | None = None
    target_ratings: sp.csr_matrix | None = None

    @property
    def k(self) -> int:
        return PROTOCOLS[self.protocol]["k"]

    @property
    def metrics(self) -> tuple[str, ...]:
        return PROTOCOLS[self.protocol]["metrics"]


@dataclass(frozen=True, eq=False)
class Split:
    """A protocol applied to a dataset.

    ``assignment`` (int8[n_interactions], aligned with the dataset's arrays) is
    0 train, 1 validation, 2 test. For P-COLD, ``cold_items`` are the test
    items C and ``valid_items`` the pseudo-cold validation items. Items of the
    dataset without any interaction are outside the protocol's catalogue: they
    are never ranked, drawn as negatives or chosen as cold items.
    """

    dataset: Dataset
    protocol: str
    seed: int
    assignment: np.ndarray
    cold_items: np.ndarray | None = None
    valid_items: np.ndarray | None = None
    _stages: dict = field(default_factory=dict, repr=False)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self.dataset.fingerprint}|{self.protocol}|{self.seed}|".encode())
        h.update(self.assignment.tobytes())
        for arr in (self.cold_items, self.valid_items):
            if arr is not None:
                h.update(arr.astype(np.int64).tobytes())
        return h.hexdigest()[:16]

    def stage(self, name: str) -> Stage:
        """The ``"valid"`` (tuning) or ``"test"`` stage."""
        if name not in ("valid", "test"):
            raise InputError("unknown stage", value=name, expected="'valid' or 'test'")
        if name not in self._stages:
            self._stages[name] = self._build_stage(name)
        return self._stages[name]

    def provenance(self, stage: str) -> dict:
        """What a model fitted on ``stage``'s fit set has seen (``Dataset.provenance``)."""
        return {"dataset": self.dataset.name, "dataset_fingerprint": self.dataset.fingerprint,
                "protocol": self.protocol, "stage": stage, "seed": self.seed,
                "split_fingerprint": self.fingerprint}

    def _build_stage(self, name: str) -> Stage:
        stage = self._cold_stage(name) if self.protocol == "cold" else self._ranking_stage(name)
        ds = self.dataset
        ratings = None
        if ds.rating is not None:  # the targets' own ratings, aligned with stage.targets
            users, items = stage.targets.nonzero()
            key = ds.user.astype(np.int64) * ds.n_items + ds.item  # unique per interaction (duplicates collapsed)
            order = np.argsort(key)
            rows = order[np.searchsorted(key[order], users.astype(np.int64) * ds.n_items + items)]
            ratings = sp.csr_matrix((ds.rating[rows], (users, items)), shape=stage.targets.shape)
            ratings.sort_indices()
        return dataclasses.replace(stage, fit=stage.fit.with_provenance(self.provenance(name)),
                                   target_ratings=ratings)

    def _ranking_stage(self, name: str) -> Stage:
        ds, a = self.dataset, self.assignment
        if self.protocol == "loo100" and name == "valid":
            raise InputError("P-LOO-100 has no validation stage of its own", value="valid",
                             expected="--stage test",
                             hint="Tune with --protocol loo; P-LOO-100 reuses that configuration")
        fit_mask = (a == TRAIN) if name == "valid" else (a != TEST)
        tgt_mask = a == (VALID if name == "valid" else TEST)
        fit = ds.subset(fit_mask)
        targets = _csr(ds.user[tgt_mask], ds.item[tgt_mask], ds.n_users, ds.n_items)
        users = np.flatnonzero(np.diff(targets.indptr) > 0).astype(np.int64)
        negatives = None
        catalogue = ds.interacted_items
        full = len(catalogue) == ds.n_items
        if self.protocol == "loo100":
            interacted = ds.matrix() if full else ds.matrix()[:, catalogue]
            negatives = sample_negatives(interacted, users, self.seed)  # catalogue positions
            if not full:
                negatives = np.where(negatives >= 0, catalogue[np.maximum(negatives, 0)], -1)
        return Stage(self.protocol, name, fit, targets, users, negatives=negatives,
                     candidates=None if full else catalogue)

    def _cold_stage(self, name: str) -> Stage:
        ds = self.dataset
        warm_mask = self.assignment != TEST
        if name == "test":
            fit_mask, tgt_mask, cands = warm_mask, ~warm_mask, self.cold_items
        else:
            in_valid = np.zeros(ds.n_items, dtype=bool)
            in_valid[self.valid_items] = True
            tgt_mask = warm_mask & in_valid[ds.item]
            fit_mask = warm_mask & ~tgt_mask
            cands = self.valid_items
        fit = ds.subset(fit_mask)
        targets = _csr(ds.user[tgt_mask], ds.item[tgt_mask], ds.n_users, ds.n_items)
        has_fit = np.bincount(fit.user, minlength=ds.n_users) > 0
        users = np.flatnonzero((np.diff(targets.indptr) > 0) & has_fit).astype(np.int64)
        return Stage("cold", name, fit, targets, users, candidates=np.sort(cands).astype(np.int64))


def _csr(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(user), dtype=np.float32), (user, item)), shape=(n_users, n_items))
    m.sort_indices()
    return m


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def make_split(dataset: Dataset, protocol: str, seed: int = 2026) -> Split:
    """Apply a protocol (``loo``, ``loo100``, ``rand``, ``cold``) with a seed."""
    protocol = check_protocol(protocol)
    if dataset.n_interactions == 0:
        raise InputError("the dataset has no interactions", expected="a non-empty dataset")
    offsets = dataset.user_offsets
    counts = np.diff(offsets)
    assignment = np.zeros(dataset.n_interactions, dtype=np.int8)
    cold = valid_items = None
    if protocol in ("loo", "loo100"):
        evaluated = counts >= 3
        assignment[offsets[1:][evaluated] - 1] = TEST
        assignment[offsets[1:][evaluated] - 2] = VALID
    elif protocol == "rand":
        rng = np.random.default_rng(seed)
        for u in np.flatnonzero(counts >= 2):  # the protocol draws one permutation per user, in order
            n = int(counts[u])
            perm = rng.permutation(n)
            n_test = max(1, _round_half_up(0.2 * n))
            n_tr = n - n_test
            n_val = max(1, _round_half_up(0.1 * n_tr)) if n_tr >= 2 else 0
            start = offsets[u]
            assignment[start + perm[:n_test]] = TEST
            assignment[start + perm[n_test:n_test + n_val]] = VALID
    else:  # cold: draws over the catalogue (items with interactions), in index order
        catalogue = dataset.interacted_items
        n_items = len(catalogue)
        perm = np.random.default_rng(seed).permutation(n_items)
        cold = np.sort(catalogue[perm[: _round_half_up(0.2 * n_items)]])
        is_cold = np.zeros(dataset.n_items, dtype=bool)
        is_cold[cold] = True
        assignment[is_cold[dataset.item]] = TEST
        warm = catalogue[~is_cold[catalogue]]
        vperm = np.random.default_rng(seed + 1).permutation(len(warm))
        valid_items = np.sort(warm[vperm[: _round_half_up(0.2 * len(warm))]])
        assignment[~is_cold[dataset.item] & np.isin(dataset.item, valid_items)] = VALID
    assignment.setflags(write=False)
    return Split(dataset, protocol, seed, assignment, cold, valid_items)


def sample_negatives(interacted: sp.csr_matrix, users: np.ndarray, seed: int = 2026,
                     n_neg: int = 100, draw: int = 200) -> np.ndarray:
    """P-LOO-100 negatives: int64[len(users), n_neg], -1 padded.

    For each user in the given (ascending) order: draw ``rng.integers(0, n_items,
    draw)`` repeatedly, keep items the user never interacted with and not yet
    kept, until ``n_neg`` are kept; leftovers of the last batch are discarded.
    A user with fewer than ``n_neg`` non-interacted items gets all of them,
    ascending. One generator for all users, as the protocol prescribes.
    """
    rng = np.random.default_rng(seed)
    n_items = interacted.shape[1]
    out = np.full((len(users), n_neg), -1, dtype=np.int64)
    seen = np.zeros(n_items, dtype=bool)
    for row, u in enumerate(users):  # sequential by definition: one generator walked user by user
        hist = interacted.indices[interacted.indptr[u]:interacted.indptr[u + 1]]
        seen[hist] = True
        n_free = n_items - len(hist)
        if n_free < n_neg:
            free = np.flatnonzero(~seen)
            out[row, : len(free)] = free
        else:
            kept: list[np.ndarray] = []
            n_kept = 0
            taken = seen.copy()
            while n_kept < n_neg:
                draws = rng.integers(0, n_items, draw)
                fresh = draws[~taken[draws]]
                _, first = np.unique(fresh, return_index=True)
                fresh = fresh[np.sort(first)][: n_neg - n_kept]  # first occurrences, in draw order
                taken[fresh] = True
                kept.append(fresh)
                n_kept += len(fresh)
            out[row] = np.concatenate(kept)
        seen[hist] = False
    return out

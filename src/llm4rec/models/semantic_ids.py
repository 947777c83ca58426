"""Semantic IDs: a short tuple of discrete codes per item, quantised from its text embedding.

TIGER (Rajput et al., NeurIPS 2023) names each item by a residual
quantisation of its content embedding, so similar items share code prefixes
and a generative model can spell out the next item code by code::

    prefixes, quantizer = residual_kmeans(E, levels=3, codebook=256, seed=0)  # int64[I, 3]
    codes = resolve_collisions(prefixes)                 # int64[I, 4], unique rows
    trie = CodeTrie(codes)                               # valid prefixes for constrained decoding
    quantizer.codes(E_new)                               # int64[N, 3]: new items, as at fit time
    next_collision_codes(codes, quantizer.codes(E_new))  # int64[N]: their last codes

:func:`rqvae` is the learned alternative (an RQ-VAE, as in the paper): the
same residual quantisation, of a small autoencoder's latent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from llm4rec.errors import InputError

__all__ = [
    "CodeTrie",
    "ResidualQuantizer",
    "kmeans",
    "next_collision_codes",
    "residual_kmeans",
    "resolve_collisions",
    "rqvae",
]


def _sqdist(x: np.ndarray, c: np.ndarray, sq: np.ndarray | None = None) -> np.ndarray:
    """float32[N, k] squared distances of points x float32[N, D] to centres c float32[k, D] (``sq``: the
    points' squared norms, when already known)."""
    sq = (x * x).sum(1) if sq is None else sq
    return np.maximum(sq[:, None] - 2 * x @ c.T + (c * c).sum(1)[None], 0)


def kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with greedy k-means++ seeding: (float32[k, D] centroids, int64[N] assignment).

    Deterministic for a seed. ``k`` is capped at N; an emptied cluster is moved
    to the point farthest from its centroid.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    sq = (x * x).sum(1)  # (N,)

    def dist(c: np.ndarray) -> np.ndarray:  # (N, k') squared distances
        return _sqdist(x, c, sq)

    centers = np.empty((k, x.shape[1]), dtype=np.float32)
    centers[0] = x[rng.integers(n)]
    closest = dist(centers[:1])[:, 0]  # (N,)
    trials = 2 + int(np.log(k))
    for j in range(1, k):  # greedy k-means++: of a few draws by squared distance, the one lowering it most
        total = closest.sum()
        picks = rng.integers(n, size=trials) if total <= 0 else \
            np.minimum(np.searchsorted(np.cumsum(closest), rng.random(trials) * total), n - 1)
        after = np.minimum(closest[:, None], dist(x[picks]))  # (N, trials)
        best = int(after.sum(0).argmin())
        centers[j], closest = x[picks[best]], after[:, best]
    assign = np.zeros(n, dtype=np.int64)
    for step in range(iterations):
        d = dist(centers)  # (N, k)
        new = d.argmin(1)
        counts = np.bincount(new, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if len(empty):  # re-seed empty clusters at the worst-served points
            far = np.argsort(-d[np.arange(n), new], kind="stable")[:len(empty)]
            new[far] = empty
            counts = np.bincount(new, minlength=k)
        if step and np.array_equal(new, assign):
            break
        assign = new
        sums = np.zeros_like(centers)
        np.add.at(sums, assign, x)
        centers = sums / counts[:, None].astype(np.float32)
    return centers, assign


def _normalised(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2 or len(emb) == 0:
        raise InputError("item embeddings must be a non-empty matrix", value=emb.shape, expected="float[I, T]")
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def _check(levels: int, codebook: int) -> None:
    if levels < 1 or codebook < 2:
        raise InputError("semantic IDs need levels >= 1 and codebook >= 2", value=(levels, codebook),
                         expected="levels >= 1, codebook >= 2")


@dataclass(frozen=True, eq=False)
class ResidualQuantizer:
    """What turns an item embedding into its prefix codes, kept so that items added later are coded as at fit.

    The embedding is L2-normalised, mapped through ``layers`` (an RQ-VAE's
    encoder; none for residual k-means), then quantised level by level: the
    nearest code of ``books[level]`` to the residual, whose centre is then
    subtracted from it.

    Attributes:
        books: float32[levels, K, D] the codebooks.
        layers: the encoder's (weight float32[out, in], bias float32[out]) pairs, ReLU between them.
    """

    books: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    def latent(self, emb: np.ndarray) -> np.ndarray:
        """float32[N, D]: what is quantised, for embeddings float[N, T]."""
        x = _normalised(emb)
        width = self.layers[0][0].shape[1] if self.layers else self.books.shape[2]
        if x.shape[1] != width:
            raise InputError("embeddings of another size than the quantiser was fitted on", value=x.shape[1],
                             expected=f"{width}-d embeddings of the text encoder the model was fitted with")
        for i, (weight, bias) in enumerate(self.layers):
            x = x @ weight.T + bias
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0)
        return np.ascontiguousarray(x, dtype=np.float32)

    def codes(self, emb: np.ndarray) -> np.ndarray:
        """int64[N, levels]: the nearest code per level of the residual (ties to the smaller code)."""
        resid = self.latent(emb)
        out = np.empty((len(resid), len(self.books)), dtype=np.int64)
        for level, book in enumerate(self.books):
            out[:, level] = _sqdist(resid, book).argmin(1)
            resid = resid - book[out[:, level]]
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The quantiser as named arrays (``books``, ``weight0``, ``bias0``, ...)."""
        out = {"books": self.books}
        for i, (weight, bias) in enumerate(self.layers):
            out[f"weight{i}"], out[f"bias{i}"] = weight, bias
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ResidualQuantizer:
        """The quantiser saved by :meth:`arrays`; KeyError / ValueError on arrays that do not fit."""
        books = np.asarray(arrays["books"], dtype=np.float32)
        layers = []
        while f"weight{len(layers)}" in arrays:
            i = len(layers)
            layers.append((np.asarray(arrays[f"weight{i}"], dtype=np.float32),
                           np.asarray(arrays[f"bias{i}"], dtype=np.float32)))
        if books.ndim != 3 or any(w.ndim != 2 or b.shape != (w.shape[0],) for w, b in layers):
            raise ValueError("the quantiser's arrays have the wrong number of dimensions")
        widths = [w.shape for w, _ in layers]  # (out, in) per layer
        if any(nxt[1] != cur[0] for cur, nxt in zip(widths, widths[1:])) or \
                (widths and widths[-1][0] != books.shape[2]):
            raise ValueError("the quantiser's layers and codebooks do not fit together")
        return cls(books, tuple(layers))


def residual_kmeans(emb: np.ndarray, levels: int = 3, codebook: int = 256,
                    seed: int = 0) -> tuple[np.ndarray, ResidualQuantizer]:
    """(int64[I, levels] codes, the quantiser): k-means of the L2-normalised embeddings, then of the
    residuals, level by level. The codes are k-means' own assignments (for a converged k-means, the
    quantiser's nearest codes)."""
    _check(levels, codebook)
    resid = _normalised(emb)
    codes = np.empty((len(resid), levels), dtype=np.int64)
    books = []
    for level in range(levels):
        centers, codes[:, level] = kmeans(resid, codebook, seed + level)
        books.append(centers)
        resid = resid - centers[codes[:, level]]
    return codes, ResidualQuantizer(np.stack(books))


def rqvae(emb: np.ndarray, levels: int = 3, codebook: int = 256, seed: int = 0, latent: int = 32,
          epochs: int = 200, batch_size: int = 1024,
          beta: float = 0.25) -> tuple[np.ndarray, ResidualQuantizer]:
    """(int64[I, levels] codes, the quantiser): a residual-quantised autoencoder (RQ-VAE) of the embeddings.

    Encoder T -> 256 -> 128 -> ``latent`` (ReLU MLP), ``levels`` codebooks
    initialised by residual k-means of the initial latents, straight-through
    gradients, loss = reconstruction MSE + codebook loss + ``beta`` x
    commitment; a codebook entry left unused in an epoch is moved onto a
    random latent residual. Deterministic for a seed (one torch thread).
    The codes are the trained quantiser's (encoder and codebooks) nearest codes.
    """
    import torch
    from torch import nn

    _check(levels, codebook)
    x_np = _normalised(emb)
    k = min(codebook, len(x_np))
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc = nn.Sequential(nn.Linear(x_np.shape[1], 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                            nn.Linear(128, latent))
        dec = nn.Sequential(nn.Linear(latent, 128), nn.ReLU(), nn.Linear(128, 256), nn.ReLU(),
                            nn.Linear(256, x_np.shape[1]))
    x = torch.from_numpy(x_np)
    with torch.no_grad():
        z = enc(x).numpy()
    books = []
    for level in range(levels):  # k-means initialisation, level by level on the residuals
        centers, assign = kmeans(z, k, seed + level)
        books.append(centers)
        z = z - centers[assign]
    books = nn.Parameter(torch.from_numpy(np.stack(books)))  # (levels, k, latent)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), books], lr=1e-3)

    def quantise(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z float[B, latent] -> (quantised float[B, latent], codebook loss, codes int64[B, levels])."""
        resid, q, loss, codes = z, torch.zeros_like(z), z.new_zeros(()), []
        for level in range(levels):
            code = torch.cdist(resid, books[level]).argmin(1)  # (B,)
            e = books[level][code]  # (B, latent)
            loss = loss + ((e - resid.detach()) ** 2).mean() + beta * ((resid - e.detach()) ** 2).mean()
            q, resid = q + e, resid - e.detach()
            codes.append(code)
        return q, loss, torch.stack(codes, 1)

    for _ in range(epochs):
        used = torch.zeros(levels, k, dtype=torch.bool)
        for index in torch.randperm(len(x), generator=gen).split(batch_size):
            z = enc(x[index])
            q, loss, codes = quantise(z)
            q = z + (q - z).detach()  # straight-through
            loss = loss + ((dec(q) - x[index]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            used[torch.arange(levels)[:, None], codes.T] = True
        with torch.no_grad():  # dead codes restart on random residuals of their level
            resid = enc(x)
            for level in range(levels):
                dead = torch.nonzero(~used[level]).ravel()
                if len(dead):
                    books[level, dead] = resid[torch.randint(len(x), (len(dead),), generator=gen)]
                resid = resid - books[level][torch.cdist(resid, books[level]).argmin(1)]
    layers = tuple((m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
                   for m in enc if isinstance(m, nn.Linear))
    quantizer = ResidualQuantizer(books.detach().numpy().copy(), layers)
    return quantizer.codes(emb), quantizer


def resolve_collisions(codes: np.ndarray) -> np.ndarray:
    """int64[I, levels + 1]: ``codes`` plus a last code, the item's rank among the items sharing its
    prefix (by item index; 0 for an item alone), so every row is unique."""
    codes = np.asarray(codes, dtype=np.int64)
    _, group = np.unique(codes, axis=0, return_inverse=True)
    group = group.ravel()
    order = np.lexsort((np.arange(len(codes)), group))  # by group, then item index
    starts = np.searchsorted(group[order], group[order], side="left")
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - starts
    return np.concatenate([codes, rank[:, None]], axis=1)


def next_collision_codes(codes: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
    """int64[N]: last codes for N new items with ``prefixes`` int64[N, m - 1], beside the items ``codes``
    int64[I, m]: the next unused one under each prefix (one past the largest there, 0 under a new prefix),
    counting up in row order for new items that share a prefix. The rows stay unique."""
    codes, prefixes = np.asarray(codes, dtype=np.int64), np.asarray(prefixes, dtype=np.int64)
    if len(prefixes) == 0:
        return np.zeros(0, dtype=np.int64)
    _, group = np.unique(np.concatenate([codes[:, :-1], prefixes]), axis=0, return_inverse=True)
    group = group.ravel()
    largest = np.full(group.max() + 1, -1, dtype=np.int64)  # per prefix, the largest last code in use
    np.maximum.at(largest, group[:len(codes)], codes[:, -1])
    new = group[len(codes):]
    order = np.argsort(new, kind="stable")
    rank = np.empty(len(new), dtype=np.int64)
    rank[order] = np.arange(len(new)) - np.searchsorted(new[order], new[order], side="left")
    return largest[new] + 1 + rank


class CodeTrie:
    """The prefix trie of unique code tuples int64[I, m], as dense tables for batched beam search.

    A prefix of depth d (its first d codes) has an id in 0..P_d - 1: the root
    is 0 at depth 0, and at depth m the prefix id is the item index.

    Attributes:
        sizes: int64[m] codebook size of each level (K_d).
        child: per depth d < m, int64[P_d, K_d]: the id of prefix + code at depth d + 1, -1 if no item has it.
        prefix: per depth d <= m, int64[I]: each item's prefix id at depth d.
        n_prefixes: per depth d <= m, P_d (P_0 = 1, P_m = I).
        kid_code: per depth d < m, int64[P_d + 1, F_d]: each prefix's children's codes, ascending, padded with
            0 to F_d, the largest number of children at depth d; row P_d (no prefix: an empty beam) is padding.
        kid: per depth d < m, int64[P_d + 1, F_d]: those children's prefix ids at depth d + 1, padded with
            P_{d + 1}.
    """

    def __init__(self, codes: np.ndarray, sizes: np.ndarray | None = None) -> None:
        codes = np.asarray(codes, dtype=np.int64)
        n, m = codes.shape
        if len(np.unique(codes, axis=0)) != n:
            raise InputError("semantic IDs are not unique", expected="resolve_collisions(codes)")
        self.codes, self.n_items, self.depth = codes, n, m
        self.sizes = codes.max(0) + 1 if sizes is None else np.asarray(sizes, dtype=np.int64)
        self.prefix = [np.zeros(n, dtype=np.int64)]
        for d in range(1, m):
            self.prefix.append(np.unique(codes[:, :d], axis=0, return_inverse=True)[1].ravel().astype(np.int64))
        self.prefix.append(np.arange(n, dtype=np.int64))
        self.child = []
        for d in range(m):
            table = np.full((self.prefix[d].max() + 1, self.sizes[d]), -1, dtype=np.int64)
            table[self.prefix[d], codes[:, d]] = self.prefix[d + 1]
            self.child.append(table)
        self.n_prefixes = [len(table) for table in self.child] + [n]
        self.kid_code, self.kid = [], []
        for d, table in enumerate(self.child):
            has = table >= 0
            width = max(int(has.sum(1).max()), 1)
            code = np.argsort(~has, axis=1, kind="stable")[:, :width]  # (P_d, F_d): the children first, ascending
            kid = np.take_along_axis(table, code, 1)
            pad = self.n_prefixes[d + 1]
            self.kid_code.append(np.concatenate([np.where(kid >= 0, code, 0), np.zeros((1, width), np.int64)]))
            self.kid.append(np.concatenate([np.where(kid >= 0, kid, pad), np.full((1, width), pad)]))
        self._count = [np.bincount(self.prefix[d]) for d in range(m + 1)]  # per depth, items under each prefix

    def dead(self, seen: sp.csr_matrix) -> list[np.ndarray]:
        """Per depth d = 1..m, int64[D_d] ascending: the keys r (P_d + 1) + p of the (row, prefix) pairs of
        ``seen`` (csr[rows, I], nonzero = seen) whose items are all seen, prefixes leading to no other item."""
        seen = sp.csr_matrix(seen > 0)
        rows = np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr))  # (nnz,)
        out = []
        for d in range(1, self.depth + 1):
            key, n_seen = np.unique(rows * (self.n_prefixes[d] + 1) + self.prefix[d][seen.indices], return_counts=True)
            out.append(key[n_seen == self._count[d][key % (self.n_prefixes[d] + 1)]])
        return out

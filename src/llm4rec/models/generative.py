"""``generative``: generative retrieval over semantic IDs (TIGER, Rajput et al., NeurIPS 2023).

Each item is named by its semantic ID, m = ``levels`` + 1 codes: a residual
quantisation of its text embedding (:mod:`llm4rec.models.semantic_ids`) and a
last code that tells apart items with the same prefix. A decoder-only
transformer (:class:`~llm4rec.nn.generative_net.GenerativeNet`) reads a
history's recent items as a flat token sequence and spells out the next item
code by code::

    tokens  = [c_1^1 .. c_1^m, c_2^1 .. c_2^m, ..., c_L^1 .. c_L^m]      # L items x m codes
    x_n     = Tok[offset(level) + code] + Pos[item position] + Lvl[level]
    h       = Blocks(x)                                                  # pre-LN causal self-attention
    p(code at level l | everything before) = softmax(h_{n-1} W_l)        # one output slice per level

Training: next-token cross-entropy at every position of windows of
``max_len + 1`` items (each user's fit sequence cut from the end, windows
sharing one item, so every next-item step is a target once), early stopping on
validation NDCG@10 through the shared :class:`~llm4rec.training.Trainer`.

Inference: a history (a known user's fit history, or any other) is read as
its last ``max_len`` items, once (its keys and values cached). Beam search
over the prefix trie of the semantic IDs, so every output is a real item,
runs as one tensor program per block of histories: at each level all (history,
beam) rows take one transformer step, their candidates are the children lists
of their prefixes, and one top-k per history keeps the best ``beam`` (ties:
the better parent, then the smaller code); with ``exclude_seen`` only
prefixes that lead to an item outside the history are expanded (evaluation
and ``recommend`` mask those items anyway, and they would take beam places).
An item's score is its sequence log-probability; items the beam did not
reach score :data:`FLOOR`. ``temperature`` > 0 turns the beam into stochastic
beam search (Kool et al., ICML 2019: Gumbel-top-k sampling of whole items
without replacement from the tempered model), the diversity knob; the score
is then the item's perturbed log-probability. The Gumbel noise of a trie node
is a counter-based draw (:mod:`llm4rec._random`) keyed by (``seed``, the row's
key, depth, the node's codes), the row's key being the known user's index or,
for a history of a user the model never saw, a 64-bit hash of its items: a
user's list does not depend on who else is decoded in the same batch, and the
same history always decodes the same. ``temperature``, ``beam`` and
``exclude_seen`` are read when scoring, so one trained model can be decoded
at several settings; validation decodes at temperature 0 with at most 20 beams.
``score(..., items=...)`` gives the exact (untempered) log-probability of the
given items, so ranking a candidate set (P-COLD) does not depend on the beam.
Items without interactions still have text, so they have semantic IDs and can
be generated; so have items added after fit (:meth:`Generative.add_items`):
coded by the saved quantiser exactly as the catalogue was, with the next
unused collision code under their prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from llm4rec._random import hash64, uniform
from llm4rec.errors import InputError
from llm4rec.models.base import ModelConfig, Recommendations
from llm4rec.models.history import Histories
from llm4rec.models.neural import NeuralRecommender
from llm4rec.models.semantic_ids import (
    CodeTrie,
    ResidualQuantizer,
    next_collision_codes,
    residual_kmeans,
    resolve_collisions,
    rqvae,
)
from llm4rec.training.config import TrainingConfig

if TYPE_CHECKING:
    import scipy.sparse as sp
    import torch

    from llm4rec.data import Dataset
    from llm4rec.nn.generative_net import GenerativeNet, GenerativeNetConfig

__all__ = ["FLOOR", "Generative", "GenerativeConfig"]

#: the score of an item the beam did not generate: finite, far below any log-probability
FLOOR = -1e30
#: histories decoded per block at inference (block x beam x codebook logits)
_BLOCK = 64
#: (history, candidate) pairs per block when scoring given items by teacher forcing
_PAIRS = 1 << 16
#: array-name prefix of the quantiser in the saved state
_QUANTIZER = "quantizer_"


class GenerativeConfig(ModelConfig, TrainingConfig):
    """Settings of ``generative`` (training options: :class:`~llm4rec.training.TrainingConfig`)."""

    batch_size: int = Field(128, ge=1, description="windows per step")
    epochs: int = Field(200, ge=1, description="maximum number of passes over the windows")
    patience: int = Field(5, ge=0, description="stop after this many epochs without a better validation NDCG@10")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate")
    valid_users: int = Field(2000, ge=0, description="validate on a seeded sample of at most this many users "
                                                     "(beam search is slow); 0 = all")
    max_len: int = Field(20, ge=1, description="most recent items the model reads (each is levels + 1 tokens)")
    dim: int = Field(64, ge=1, description="embedding and hidden size")
    layers: int = Field(2, ge=1, description="self-attention blocks")
    heads: int = Field(2, ge=1, description="attention heads (must divide dim)")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout on embeddings, attention and feed-forward")
    quantizer: Literal["rkmeans", "rqvae"] = Field("rkmeans", description="semantic IDs by residual k-means of "
                                                                          "the text embeddings, or an RQ-VAE")
    levels: int = Field(3, ge=1, description="quantisation levels (a collision code is added)")
    codebook: int = Field(256, ge=2, description="codes per quantisation level")
    beam: int = Field(50, ge=1, description="beam width: the number of items generated per user")
    temperature: float = Field(0.0, ge=0, description="0: beam search; > 0: stochastic beam search of the "
                                                      "model's distribution at this temperature (diversity)")
    exclude_seen: bool = Field(True, description="generate only items outside the history read")
    encoder: str = Field("minilm", description="text encoder of llm4rec.text.item_embeddings")
    template: str | None = Field(None, description="item text template; None = the dataset's default")
    cache_dir: str | None = Field(None, description="embedding cache directory of the text layer")


def _offsets(sizes: np.ndarray) -> np.ndarray:
    """int64[m]: the first token id of each level (token id = offset + code)."""
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def windows(data: Dataset, length: int) -> np.ndarray:
    """int64[W, length + 1]: every user's item sequence cut from the end into windows of ``length + 1``
    items sharing one item with the next, right-aligned, -1 padded; windows with one item are dropped."""
    offsets = data.user_offsets
    rank = offsets[data.user + 1] - 1 - np.arange(data.n_interactions)  # 0 = the user's most recent
    n_windows = np.diff(offsets) // length + (np.diff(offsets) % length > 0)  # per user, ceil(n / length)
    first = np.concatenate([[0], np.cumsum(n_windows)[:-1]])
    out = np.full((int(n_windows.sum()), length + 1), -1, dtype=np.int64)
    w = rank // length
    out[first[data.user] + w, length - rank % length] = data.item
    shared = (rank % length == 0) & (w > 0)  # also the first item of the next (more recent) window
    out[first[data.user[shared]] + w[shared] - 1, 0] = data.item[shared]
    return out[(out >= 0).sum(1) >= 2]


@dataclass
class TokenBatch:
    """B windows as flat tokens; column n predicts ``target[:, n]``.

    Attributes:
        inputs: int64[B, N] token ids (padding = vocabulary size), columns ``start``.. of the flat layout.
        target: int64[B, N] next token id, -1 where there is none.
        start: first column (a multiple of m: leading all-padding items are dropped).
    """

    inputs: torch.Tensor
    target: torch.Tensor
    start: int

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(self.inputs.to(device), self.target.to(device), self.start)


class _Decoder:
    """Beam search and teacher-forced scoring of a net over the semantic IDs ``codes`` int64[I, m]."""

    def __init__(self, codes: np.ndarray, sizes: np.ndarray) -> None:
        self.codes, self.sizes = codes, sizes
        self.trie = CodeTrie(codes, sizes)
        self.vocab = int(sizes.sum())
        self.offsets = _offsets(sizes)
        self.token_of = codes + self.offsets  # (I, m)
        # per depth d < m, uint64[P_d]: a hash of each prefix's codes, the noise key of its children (it
        # outlives the renumbering of prefixes when items are added)
        self.paths = []
        for d in range(self.trie.depth):
            path = np.zeros(len(self.trie.child[d]), dtype=np.uint64)
            path[self.trie.prefix[d]] = hash64(0, *codes[:, :d].T)
            self.paths.append(path)

    def tokens(self, items: np.ndarray) -> np.ndarray:
        """int64[B, L] items (-1 = none) -> int64[B, L * m] tokens (padding = vocab)."""
        tok = np.where(items[..., None] >= 0, self.token_of[np.maximum(items, 0)], self.vocab)
        return tok.reshape(len(items), -1)

    def history(self, net: GenerativeNet, items: np.ndarray) -> tuple[torch.Tensor, list, torch.Tensor]:
        """Read histories int64[B, L] -> (last state float[B, d], per-block cache, attention bias float[B H, 1, N])
        (:meth:`~llm4rec.nn.generative_net.GenerativeNet.read`)."""
        import torch

        m = self.trie.depth
        real = items >= 0
        first = int(np.argmax(real.any(0))) if real.any() else items.shape[1] - 1  # skip all-padding items
        tok = torch.from_numpy(self.tokens(items[:, first:])).to(net.head.weight.device)
        return net.read(tok, first * m)

    def log_probs(self, net: GenerativeNet, items: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """float32[B, C]: log p(candidate cand[b, c] | history items[b]), exactly, by teacher forcing."""
        import torch

        m, device = self.trie.depth, net.head.weight.device
        last, cache, bias = self.history(net, items)
        codes = torch.from_numpy(self.codes[cand]).to(device)  # (B, C, m)
        total = torch.log_softmax(net.logits(last, 0), -1).gather(1, codes[..., 0])  # (B, C)
        tokens, own = torch.from_numpy(self.token_of[cand]).to(device), None  # (B, C, m)
        for level in range(1, m):  # the beam's steps, so both score an item alike
            h, own = net.step(tokens[..., level - 1], level - 1, cache, bias, own)  # (B, C, d)
            lp = torch.log_softmax(net.logits(h, level), -1)  # (B, C, K)
            total = total + lp.gather(2, codes[..., level:level + 1])[..., 0]
        return total.cpu().numpy()

    def generate(self, net: GenerativeNet, items: np.ndarray, seen: sp.csr_matrix | None, beam: int,
                 temperature: float, keys: np.ndarray | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Constrained beam search of B histories ``items`` int64[B, L] (right-aligned, -1 padded), all rows
        and beams at once: (int64[B, beam] items, -1 = none; float32[B, beam] scores), best first.

        At depth d each of the M beams of a row (a prefix id, or P_d for an empty beam) is extended by its
        F_d children in the trie (:attr:`CodeTrie.kid`), the B x M x F_d candidates are scored from the
        level's logits and the best ``beam`` of each row kept (ties: the better parent, then the smaller
        code); the chosen beams' key-value caches follow them. ``seen`` (csr[B, I]) removes the children
        that lead only to seen items; at temperature > 0 the Gumbel noise of row b is keyed by ``keys[b]``
        (uint64[B]) and ``seed``.
        """
        import torch

        trie = self.trie
        m, b, t = trie.depth, len(items), temperature
        last, cache, bias = self.history(net, items)
        device = last.device
        kid_code = [torch.from_numpy(c).to(device) for c in trie.kid_code]  # per depth, (P_d + 1, F_d)
        kid = [torch.from_numpy(c).to(device) for c in trie.kid]
        # per depth 1..m, bool[B (P_d + 1)]: row b has seen every item under prefix p (CodeTrie.dead)
        dead = []
        for d, keys_d in enumerate([] if seen is None else trie.dead(seen)):
            dead.append(torch.zeros(b * (trie.n_prefixes[d + 1] + 1), dtype=torch.bool, device=device))
            dead[-1][torch.from_numpy(keys_d).to(device)] = True
        rows = torch.arange(b, device=device)[:, None]  # (B, 1)
        prefix = torch.zeros(b, 1, dtype=torch.int64, device=device)  # (B, M) prefix ids at depth; P_d = empty
        score = torch.zeros(b, 1, device=device)  # (B, M) log-probability (t = 0) or perturbed value G (t > 0)
        phi = torch.zeros(b, 1, device=device)  # (B, M) tempered log-probability (t > 0)
        token = None  # (B, M) the last code's token
        own = None  # per block, the beams' earlier codes' keys and values float[s, B, M, 2, H, c]
        for depth in range(m):
            if depth == 0:
                h = last[:, None]  # (B, 1, d)
            else:
                h, own = net.step(token, depth - 1, cache, bias, own)  # (B, M, d)
            logits = net.logits(h, depth)  # (B, M, K)
            beams = prefix.flatten()  # (B M,)
            code = kid_code[depth].index_select(0, beams).view(*prefix.shape, -1)  # (B, M, F) the children's codes
            child = kid[depth].index_select(0, beams).view(code.shape)  # (B, M, F) their prefix ids at depth + 1
            n_next = trie.n_prefixes[depth + 1]
            valid = child < n_next  # (B, M, F)
            if dead:  # and not a child whose items the row has all seen
                valid &= ~dead[depth].take((rows * (n_next + 1))[..., None] + child)
            if t == 0:
                lp = torch.log_softmax(logits, -1).gather(2, code)  # (B, M, F)
                cand = (score[..., None] + lp).masked_fill(~valid, float("-inf"))
            else:
                phi_c = phi[..., None] + torch.log_softmax(logits / t, -1).gather(2, code)  # (B, M, F)
                g = (phi_c + self._gumbel(valid, prefix, code, depth, keys, seed)).masked_fill(~valid, float("-inf"))
                cand = _truncated_gumbel(score[..., None], g, valid)
            width = min(beam, cand.shape[1] * cand.shape[2])
            score, index = _top(cand.flatten(1), width)  # (B, width), best first
            if t > 0:
                phi = phi_c.flatten(1).gather(1, index)
            prefix = child.flatten(1).gather(1, index).masked_fill(torch.isneginf(score), n_next)
            token = code.flatten(1).gather(1, index) + int(self.offsets[depth])
            if own is not None and depth < m - 1:  # the chosen beams' caches
                flat = (rows * cand.shape[1] + index // cand.shape[2]).flatten()  # (B width,) parent rows
                own = [kv.flatten(1, 2).index_select(1, flat).unflatten(1, (b, width)) for kv in own]
        top = torch.where(prefix < trie.n_items, prefix, -1)
        pad = beam - top.shape[1]
        return (np.pad(top.cpu().numpy(), ((0, 0), (0, pad)), constant_values=-1),
                np.pad(score.cpu().numpy(), ((0, 0), (0, pad)), constant_values=-np.inf))

    def _gumbel(self, valid: torch.Tensor, prefix: torch.Tensor, code: torch.Tensor, depth: int,
                keys: np.ndarray, seed: int) -> torch.Tensor:
        """float32[B, M, F] standard Gumbel noise at the valid children (0 elsewhere; ``valid`` bool[B, M, F],
        ``code`` their codes, ``prefix`` int64[B, M] their parents), a pure function of (``seed``, the row's
        key, depth, the parent prefix's codes, the child's code)."""
        import torch

        r, j, f = torch.nonzero(valid.cpu(), as_tuple=True)
        parent = prefix.cpu()[r, j].numpy()
        u = uniform(seed, keys[r.numpy()], depth, self.paths[depth][parent], code.cpu()[r, j, f].numpy())
        noise = torch.zeros(valid.shape)
        noise[r, j, f] = torch.from_numpy(-np.log(-np.log(np.maximum(u, 1e-20)))).float()
        return noise.to(valid.device)


def _top(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of each row of float32[B, N] (no NaN), best first, ties to the smaller column:
    (float32[B, k] values, int64[B, k] columns). One top-k of int64 keys (the value's bits, ordered as
    the floats are, then the column reversed), so no two keys tie."""
    import torch

    values = values + 0.0  # -0.0 -> 0.0: equal floats get equal bits
    bits = values.view(torch.int32)
    order = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()  # (B, N): sorts as the values do
    n = values.shape[1]
    index = ((order << 32) + torch.arange(n - 1, -1, -1, device=values.device)).topk(k, dim=1).indices
    return values.gather(1, index), index


def _truncated_gumbel(parent: torch.Tensor, g: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Children's perturbed values given the parent's: Gumbels g float[B, M, F] (-inf off ``valid``)
    conditioned on their max being parent float[B, M, 1] (Kool et al. 2019, appendix B, in a numerically
    stable form)."""
    import torch

    z = g.max(-1, keepdim=True).values
    gap = (g - z).clamp(max=0)
    log1mexp = torch.where(gap > -0.693, torch.log(-torch.expm1(gap)), torch.log1p(-torch.exp(gap)))
    v = parent - g + log1mexp
    out = parent - v.clamp(min=0) - torch.log1p(torch.exp(-v.abs()))
    return out.masked_fill(~valid | torch.isneginf(parent), float("-inf")).nan_to_num(nan=float("-inf"))


def _beams(decoder: _Decoder, net: GenerativeNet, recent: np.ndarray, seen: sp.csr_matrix | None,
           keys: np.ndarray | None, beam: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The beams of B histories (``recent``: int64[B, L] item indices, right-aligned, -1 padded): (int64[B, beam]
    items, -1 = none; float32[B, beam] scores), best first. ``seen`` (csr[B, I]) prunes seen items; ``keys``
    (uint64[B]) key the noise at temperature > 0. Decoded in blocks of histories of similar lengths (a block
    reads as many items as its longest history holds); a row's beam does not depend on its block."""
    import torch

    top = np.full((len(recent), beam), -1, dtype=np.int64)
    score = np.full((len(recent), beam), -np.inf, dtype=np.float32)
    order = np.argsort((recent >= 0).sum(1), kind="stable")  # (B,) shortest history first
    net.eval()
    with torch.no_grad():
        for start in range(0, len(recent), _BLOCK):
            rows = order[start:start + _BLOCK]
            top[rows], score[rows] = decoder.generate(net, recent[rows], None if seen is None else seen[rows], beam,
                                                      temperature, None if keys is None else keys[rows], seed)
    return top, score


def _scores(decoder: _Decoder, net: GenerativeNet, recent: np.ndarray, seen: sp.csr_matrix | None,
            items: np.ndarray | None, *, beam: int, temperature: float, keys: np.ndarray | None,
            seed: int) -> np.ndarray:
    """float32[B, n_items or len(items)] for B histories (``recent`` as in :func:`_beams`): the beam's items'
    scores (else FLOOR), or the given items' exact log-probabilities; with ``seen`` those items score FLOOR."""
    import torch

    out = np.full((len(recent), decoder.trie.n_items if items is None else len(items)), FLOOR, dtype=np.float32)
    if items is None:
        top, score = _beams(decoder, net, recent, seen, keys, beam, temperature, seed)
        r, c = np.nonzero(top >= 0)
        out[r, top[r, c]] = score[r, c]
        return out
    net.eval()
    step = max(1, _PAIRS // max(1, len(items)))
    with torch.no_grad():
        for start in range(0, len(recent), step):
            rows = slice(start, start + step)
            block = recent[rows]
            lp = decoder.log_probs(net, block, np.broadcast_to(items, (len(block), len(items))))
            if seen is not None:
                lp[seen[rows][:, items].toarray() > 0] = FLOOR
            out[rows] = lp
    return out


def _noise_keys(histories: Histories) -> np.ndarray:
    """uint64[B]: what each row's Gumbel noise is keyed by: the known user's index, else a 64-bit hash of
    the history (its items in order), so the same history always draws the same noise."""
    keys = np.maximum(histories.users, 0).astype(np.uint64)
    unknown = np.flatnonzero(histories.users < 0)
    if len(unknown):
        h = histories.take(unknown)
        position = np.arange(len(h.items)) - h.offsets[h.rows]  # 0 = the oldest item
        mixed = np.zeros(len(h), dtype=np.uint64)
        np.bitwise_xor.at(mixed, h.rows, hash64(0, position, h.items))
        keys[unknown] = hash64(1, mixed, h.lengths)
    return keys


class _Task:
    """The :class:`~llm4rec.training.TrainingTask` of the generative model on one training set."""

    def __init__(self, cfg: GenerativeConfig, net_config: GenerativeNetConfig, train: Dataset,
                 decoder: _Decoder) -> None:
        self.cfg, self.net_config, self.train, self.decoder = cfg, net_config, train, decoder
        self.windows = windows(train, cfg.max_len)  # (W, L + 1)
        self.n_examples = len(self.windows)
        self.level_of_token = np.repeat(np.arange(len(decoder.sizes)), decoder.sizes)  # (V,)
        self.net: GenerativeNet | None = None

    def build(self) -> GenerativeNet:
        from llm4rec.nn.generative_net import GenerativeNet

        self.net = GenerativeNet(self.net_config)
        return self.net

    def batch(self, index: np.ndarray, rng: np.random.Generator) -> TokenBatch:
        import torch

        m = len(self.decoder.sizes)
        window = self.windows[index]  # (B, L + 1)
        first = int(np.argmax((window >= 0).any(0)))  # drop items that are padding for the whole batch
        tok = self.decoder.tokens(window[:, first:])  # (B, N + 1)
        inputs, target = tok[:, :-1], tok[:, 1:]
        target = np.where((inputs < self.decoder.vocab) & (target < self.decoder.vocab), target, -1)
        return TokenBatch(torch.from_numpy(inputs), torch.from_numpy(target), first * m)

    def loss(self, module: GenerativeNet, batch: TokenBatch) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        states, _ = module(batch.inputs, batch.start)  # (B, N, d)
        valid = batch.target >= 0
        target = batch.target[valid]  # (P,)
        logits = module.head(states[valid])  # (P, V)
        level = torch.from_numpy(self.level_of_token).to(logits.device)
        logits = logits.masked_fill(level[None] != level[target][:, None], float("-inf"))  # softmax within a level
        return F.cross_entropy(logits, target)

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Validation decodes the training histories by plain beam search (temperature 0), whatever the
        configured temperature."""
        cfg, train = self.cfg, self.train
        h = Histories.from_sequences(train.user_offsets, train.item, users, train.n_items)
        return _scores(self.decoder, self.net, h.recent(cfg.max_len), h.matrix() if cfg.exclude_seen else None,
                       items, beam=cfg.beam, temperature=0.0, keys=None, seed=cfg.seed)


class Generative(NeuralRecommender):
    """Generative retrieval of semantic IDs (see the module docstring).

    Learned attributes besides the network: ``codes_`` (int64[n_items, m] semantic IDs), ``sizes_``
    (int64[m] codes per level), ``quantizer_`` (:class:`~llm4rec.models.semantic_ids.ResidualQuantizer`),
    ``template_`` (the item text template), ``decoder_`` (the prefix trie and decoding).
    """

    name = "generative"
    Config = GenerativeConfig
    partial_scores = True

    # ----------------------------------------------------------------- hooks
    def _prepare(self, data: Dataset) -> None:
        """Text embeddings of the whole catalogue, their quantiser and semantic IDs."""
        from llm4rec.text import item_embeddings, text_encoder
        from llm4rec.text.templates import item_template

        cfg = self.config
        if cfg.dim % cfg.heads:
            raise InputError("heads must divide dim", value=(cfg.dim, cfg.heads), expected="dim % heads == 0")
        self.template_ = item_template(data, cfg.template)
        emb = item_embeddings(data, encoder=cfg.encoder, template=self.template_, cache_dir=cfg.cache_dir,
                              progress=cfg.progress)
        self.provenance_["encoder_fingerprint"] = text_encoder(cfg.encoder).fingerprint
        quantise = residual_kmeans if cfg.quantizer == "rkmeans" else rqvae
        prefixes, self.quantizer_ = quantise(emb, cfg.levels, cfg.codebook, seed=cfg.seed)
        codes = resolve_collisions(prefixes)
        self._set_codes(codes, codes.max(0) + 1)

    def _set_codes(self, codes: np.ndarray, sizes: np.ndarray) -> None:
        self.codes_, self.sizes_ = codes, sizes
        self.decoder_ = _Decoder(codes, sizes)

    def _net_config(self) -> GenerativeNetConfig:
        from llm4rec.nn.generative_net import GenerativeNetConfig

        cfg = self.config
        return GenerativeNetConfig(sizes=tuple(int(k) for k in self.sizes_), dim=cfg.dim, layers=cfg.layers,
                                   heads=cfg.heads, dropout=cfg.dropout, max_len=cfg.max_len)

    def _task(self, train: Dataset, data: Dataset) -> _Task:
        return _Task(self.config, self._net_config(), train, self.decoder_)

    def _build(self, arrays: dict[str, np.ndarray] | None = None) -> GenerativeNet:
        from llm4rec.nn.generative_net import GenerativeNet

        return GenerativeNet(self._net_config())

    def _extra_state(self) -> dict[str, np.ndarray]:
        quantizer = {_QUANTIZER + k: v for k, v in self.quantizer_.arrays().items()}
        return {"codes": self.codes_, "sizes": self.sizes_, "template": np.asarray(self.template_), **quantizer}

    def _set_extra_state(self, arrays: dict[str, np.ndarray]) -> None:
        codes, sizes = np.array(arrays["codes"], dtype=np.int64), np.array(arrays["sizes"], dtype=np.int64)
        if codes.ndim != 2 or codes.shape != (self.n_items_, len(sizes)) or (codes < 0).any() or \
                (codes >= sizes).any():
            raise ValueError(f"semantic IDs of shape {codes.shape} do not fit {self.n_items_} items and "
                             f"{len(sizes)} levels")
        quantizer = ResidualQuantizer.from_arrays({k[len(_QUANTIZER):]: v for k, v in arrays.items()
                                                   if k.startswith(_QUANTIZER)})
        if len(quantizer.books) != len(sizes) - 1:
            raise ValueError(f"a quantiser of {len(quantizer.books)} levels for {len(sizes)}-code semantic IDs")
        self.template_, self.quantizer_ = str(arrays["template"]), quantizer
        self._set_codes(codes, sizes)

    # -------------------------------------------------------------- scoring
    def _score_histories(self, histories: Histories, items: np.ndarray | None) -> np.ndarray:
        """float32[B, n_items or len(items)]: the beam's scores (else FLOOR), or the given items' exact
        log-probabilities; with ``exclude_seen`` the history's items score FLOOR."""
        cfg = self.config
        keys = _noise_keys(histories) if cfg.temperature > 0 and items is None else None
        return _scores(self.decoder_, self.net_, histories.recent(cfg.max_len),
                       histories.matrix() if cfg.exclude_seen else None, items, beam=cfg.beam,
                       temperature=cfg.temperature, keys=keys, seed=cfg.seed)

    def generate(self, users: Any = None, *, histories: Any = None, timestamps: Any = None,
                 unknown: Literal["error", "skip"] = "error") -> Recommendations:
        """The beam per user or history, by external id: :class:`~llm4rec.models.Recommendations` of at most
        ``beam`` items, best first (None / -inf where the beam holds fewer items). Arguments as
        :meth:`score`; ``beam``, ``temperature`` and ``exclude_seen`` are the model's settings. An empty
        history gets the most popular items, scored by their counts (the fallback of :meth:`score`)."""
        from llm4rec.ranking import topk

        cfg = self.config
        h = self.histories(users, histories=histories, timestamps=timestamps, unknown=unknown)
        top, score = _beams(self.decoder_, self.net_, h.recent(cfg.max_len),
                            h.matrix() if cfg.exclude_seen else None,
                            _noise_keys(h) if cfg.temperature > 0 else None, cfg.beam, cfg.temperature, cfg.seed)
        empty = h.lengths == 0
        if empty.any():
            popular = topk(self.popularity_[None], top.shape[1])[0]
            top[empty], score[empty] = popular, self.popularity_[popular]
        ids = np.full(top.shape, None, dtype=object)
        ids[top >= 0] = self.items_.tokens[top[top >= 0]]
        return Recommendations(ids, np.where(top >= 0, score, -np.inf).astype(np.float32))

    # ------------------------------------------------------------ new items
    def add_items(self, table: Any) -> Generative:
        """New items (or new text for known ones) get semantic IDs at once, without retraining: the prefix
        from the saved quantiser (the nearest code per level of the residual, as at fit time), the last code
        the next unused one under that prefix (a known item whose prefix stays keeps its codes). A level
        that runs out of codes grows (:meth:`~llm4rec.nn.generative_net.GenerativeNet.grow`: each new
        code's token and output rows start as the mean of the level's rows). The trie and the decoder
        include the items at once."""
        from llm4rec.text import encode_table

        cfg = self.config
        ids, attrs, vectors = encode_table(table, self.template_, cfg.encoder, cache_dir=cfg.cache_dir)
        prefixes = self.quantizer_.codes(vectors)  # (N, levels); before anything changes
        index, new = self._grow_items(ids, attrs)
        m = self.codes_.shape[1]
        codes = np.concatenate([self.codes_, np.full((self.n_items_ - len(self.codes_), m), -1, dtype=np.int64)])
        moved = new | (codes[index, :-1] != prefixes).any(1)  # new items, and known ones under another prefix
        stay = np.ones(self.n_items_, dtype=bool)
        stay[index[moved]] = False
        codes[index[moved], :-1] = prefixes[moved]
        codes[index[moved], -1] = next_collision_codes(codes[stay], prefixes[moved])
        sizes = np.maximum(self.sizes_, codes.max(0) + 1)
        for level in np.flatnonzero(sizes > self.sizes_):
            self.net_.grow(int(level), int(sizes[level] - self.sizes_[level]))
        self._set_codes(codes, sizes)
        return self

"""``generative``: generative retrieval over semantic IDs (TIGER, Rajput et al., NeurIPS 2023).

Each item is named by its semantic ID, m = ``levels`` + 1 codes: a residual
quantisation of its text embedding (:mod:`llm4rec.models.semantic_ids`) and a
last code that tells apart items with the same prefix. A decoder-only
transformer reads the user's recent items as a flat token sequence and spells
out the next item code by code::

    tokens  = [c_1^1 .. c_1^m, c_2^1 .. c_2^m, ..., c_L^1 .. c_L^m]      # L items x m codes
    x_n     = Tok[offset(level) + code] + Pos[item position] + Lvl[level]
    h       = Blocks(x)                                                  # pre-LN causal self-attention
    p(code at level l | everything before) = softmax(h_{n-1} W_l)        # one output slice per level

Training: next-token cross-entropy at every position of windows of
``max_len + 1`` items (each user's fit sequence cut from the end, windows
sharing one item, so every next-item step is a target once), early stopping on
validation NDCG@10 through the shared :class:`~llm4rec.training.Trainer`.

Inference: batched beam search over the prefix trie of the semantic IDs, so
every output is a real item; with ``exclude_seen`` only prefixes that lead to
an item outside the user's fit history are expanded (evaluation and
``recommend`` mask those items anyway, and they would take beam places). An
item's score is its sequence log-probability; items the beam did not reach
score :data:`FLOOR`. ``temperature`` > 0 turns the beam into stochastic beam
search (Kool et al., ICML 2019: Gumbel-top-k sampling of whole items without
replacement from the tempered model, seeded), the diversity knob; the score is
then the item's perturbed log-probability. ``temperature``, ``beam`` and
``exclude_seen`` are read when scoring, so one trained model can be decoded
at several settings; validation decodes at temperature 0 with at most 20 beams.
``score(users, items)`` gives the
exact (untempered) log-probability of the given items, so ranking a candidate
set (P-COLD) does not depend on the beam. Items without interactions still
have text, so they have semantic IDs and can be generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from llm4rec.errors import InputError
from llm4rec.models.base import ModelConfig, Recommender
from llm4rec.models.semantic_ids import CodeTrie, resolve_collisions, residual_kmeans, rqvae
from llm4rec.models.torch_state import module_arrays, module_weights
from llm4rec.training.config import TrainingConfig

if TYPE_CHECKING:
    import scipy.sparse as sp
    import torch

    from llm4rec.data import Dataset

__all__ = ["FLOOR", "Generative", "GenerativeConfig"]

#: the score of an item the beam did not generate: finite, far below any log-probability
FLOOR = -1e30
#: users decoded per block at inference (block x beam x codebook logits)
_BLOCK = 256
#: (user, candidate) pairs per block when scoring given items by teacher forcing
_PAIRS = 1 << 16


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
    exclude_seen: bool = Field(True, description="generate only items outside the user's fit history")
    encoder: str = Field("minilm", description="text encoder of llm4rec.text.item_embeddings")
    template: str | None = Field(None, description="item text template; None = the dataset's default")
    cache_dir: str | None = Field(None, description="embedding cache directory of the text layer")


def _offsets(sizes: np.ndarray) -> np.ndarray:
    """int64[m]: the first token id of each level (token id = offset + code)."""
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def _build_net(cfg: GenerativeConfig, sizes: np.ndarray) -> torch.nn.Module:
    """The decoder over semantic-ID tokens (built by the trainer after seeding, or by ``load``).

    Token ids: ``offset(level) + code``, and ``sum(sizes)`` for padding.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    m, vocab, d, heads = len(sizes), int(sizes.sum()), cfg.dim, cfg.heads
    offsets = _offsets(sizes)
    head_dim = d // heads

    class Block(nn.Module):
        """Pre-LayerNorm causal self-attention + feed-forward, both residual; a cached-history path for decoding."""

        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.ff = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d, d),
                                    nn.Dropout(cfg.dropout))
            self.drop = nn.Dropout(cfg.dropout)

        def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            """float[..., S, d] -> q, k, v float[..., H, S, d / H]."""
            return tuple(t.unflatten(-1, (heads, head_dim)).transpose(-2, -3)
                         for t in self.qkv(self.norm1(x)).chunk(3, -1))

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """x float[B, N, d], mask bool[B, 1, N, N] (True = may attend) -> (x, k, v float[B, H, N, d / H])."""
            q, k, v = self.split(x)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                               dropout_p=cfg.dropout if self.training else 0.0)
            x = x + self.drop(self.out(a.transpose(1, 2).flatten(2)))
            return x + self.ff(self.norm2(x)), k, v

        def step(self, x: torch.Tensor, past: tuple, past_ok: torch.Tensor,
                 own: tuple | None) -> tuple[torch.Tensor, tuple]:
            """One new token for each of M continuations, x float[B, M, d], attending to the cached history
            (past: k, v float[B, H, T, d / H]; past_ok bool[B, T]) and to the continuation's earlier tokens
            (own: k, v float[B, M, H, s, d / H], or None) -> (float[B, M, d], own with the token appended)."""
            q, k, v = self.split(x[:, :, None])  # (B, M, H, 1, d / H)
            if own is not None:
                k, v = torch.cat([own[0], k], -2), torch.cat([own[1], v], -2)
            b, mm = x.shape[:2]
            qh = q[:, :, :, 0].transpose(1, 2)  # (B, H, M, d / H)
            s_past = (qh @ past[0].transpose(-1, -2)).masked_fill(~past_ok[:, None, None, :], float("-inf"))
            s_own = (q @ k.transpose(-1, -2))[:, :, :, 0].transpose(1, 2)  # (B, H, M, s + 1)
            w = torch.softmax(torch.cat([s_past, s_own], -1) * head_dim ** -0.5, -1)
            t = past[0].shape[2]
            a = w[..., :t] @ past[1] + torch.einsum("bhms,bmhsc->bhmc", w[..., t:], v)  # (B, H, M, d / H)
            x = x + self.out(a.transpose(1, 2).reshape(b, mm, d))
            return x + self.ff(self.norm2(x)), (k, v)

    class GenerativeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tokens = nn.Embedding(vocab + 1, d)  # last row: padding
            self.positions = nn.Embedding(cfg.max_len + 1, d)  # item position in the window; max_len = next item
            self.level_emb = nn.Embedding(m, d)
            for emb in (self.tokens, self.positions, self.level_emb):
                nn.init.normal_(emb.weight, std=0.02)
            self.drop = nn.Dropout(cfg.dropout)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.layers))
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab)

        def forward(self, tokens: torch.Tensor, start: int) -> tuple[torch.Tensor, list]:
            """tokens int64[B, N] (columns start.. of the flat layout) -> (float[B, N, d] states,
            per-block (k, v) float[B, H, N, d / H])."""
            n = tokens.shape[1]
            col = torch.arange(start, start + n)
            x = self.drop(self.tokens(tokens) + self.positions(col // m) + self.level_emb(col % m))
            real = tokens < vocab  # (B, N)
            # causal; no attention to padding, but every position keeps itself (no empty softmax row)
            mask = torch.ones(n, n, dtype=torch.bool).tril()[None] & (real[:, None, :] | torch.eye(n, dtype=torch.bool))
            cache = []
            for block in self.blocks:
                x, k, v = block(x, mask[:, None])
                cache.append((k, v))
            return self.norm(x), cache

        def step(self, token: torch.Tensor, level: int, cache: list, past_ok: torch.Tensor,
                 own: list | None) -> tuple[torch.Tensor, list]:
            """The next item's code at ``level`` as tokens int64[B, M] after a cached history and the
            continuations' earlier codes (per-block ``own`` caches) -> (float[B, M, d] states, own caches)."""
            x = self.tokens(token) + self.positions.weight[cfg.max_len] + self.level_emb.weight[level]
            new = []
            for i, (block, past) in enumerate(zip(self.blocks, cache)):
                x, kv = block.step(x, past, past_ok, None if own is None else own[i])
                new.append(kv)
            return self.norm(x), new

        def logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
            """float[..., d] -> float[..., K_level]: the scores of the codes of one level."""
            lo, hi = int(offsets[level]), int(offsets[level] + sizes[level])
            return F.linear(h, self.head.weight[lo:hi], self.head.bias[lo:hi])

    return GenerativeNet()


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


class _Decoder:
    """Beam search and teacher-forced scoring of a net over the semantic IDs ``codes`` int64[I, m]."""

    def __init__(self, codes: np.ndarray, sizes: np.ndarray) -> None:
        self.codes, self.sizes = codes, sizes
        self.trie = CodeTrie(codes, sizes)
        self.vocab = int(sizes.sum())
        self.token_of = codes + _offsets(sizes)  # (I, m)

    def tokens(self, items: np.ndarray) -> np.ndarray:
        """int64[B, L] items (-1 = none) -> int64[B, L * m] tokens (padding = vocab)."""
        tok = np.where(items[..., None] >= 0, self.token_of[np.maximum(items, 0)], self.vocab)
        return tok.reshape(len(items), -1)

    def history(self, net: torch.nn.Module, items: np.ndarray) -> tuple[torch.Tensor, list, torch.Tensor]:
        """Read histories int64[B, L] -> (last state float[B, d], per-block cache, real-token mask bool[B, N])."""
        import torch

        m = self.trie.depth
        real = items >= 0
        first = int(np.argmax(real.any(0))) if real.any() else items.shape[1] - 1  # skip all-padding items
        tok = torch.from_numpy(self.tokens(items[:, first:]))
        states, cache = net(tok, first * m)
        return states[:, -1], cache, tok < self.vocab

    def log_probs(self, net: torch.nn.Module, items: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """float32[B, C]: log p(candidate cand[b, c] | history items[b]), exactly, by teacher forcing."""
        import torch

        m = self.trie.depth
        last, cache, ok = self.history(net, items)
        codes = torch.from_numpy(self.codes[cand])  # (B, C, m)
        total = torch.log_softmax(net.logits(last, 0), -1).gather(1, codes[..., 0])  # (B, C)
        tokens, own = torch.from_numpy(self.token_of[cand]), None  # (B, C, m)
        for level in range(1, m):  # the beam's steps, so both score an item alike
            h, own = net.step(tokens[..., level - 1], level - 1, cache, ok, own)  # (B, C, d)
            lp = torch.log_softmax(net.logits(h, level), -1)  # (B, C, K)
            total = total + lp.gather(2, codes[..., level:level + 1])[..., 0]
        return total.numpy()

    def generate(self, net: torch.nn.Module, items: np.ndarray, seen: sp.csr_matrix | None, beam: int,
                 temperature: float, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Constrained beam search: (int64[B, beam] items, -1 = none; float32[B, beam] scores), best first.

        ``seen`` (csr[B, I]) removes prefixes that lead only to seen items; ``generator`` draws the Gumbel
        noise of stochastic beam search (temperature > 0).
        """
        import torch

        trie = self.trie
        m, b, t = trie.depth, len(items), temperature
        last, cache, ok = self.history(net, items)
        alive = [torch.from_numpy(np.ascontiguousarray(a)) for a in trie.alive(seen, b)]  # per depth 1..m
        prefix = torch.zeros(b, 1, dtype=torch.int64)  # (B, M) prefix ids, -1 = empty beam
        score = torch.zeros(b, 1)  # (B, M) log-probability (t = 0) or perturbed value G (t > 0)
        phi = torch.zeros(b, 1)  # (B, M) tempered log-probability (t > 0)
        token = torch.zeros(b, 1, dtype=torch.int64)  # (B, M) the last code's token
        own = None  # per block, the beams' (k, v) float[B, M, H, depth, d / H]
        rows = torch.arange(b)[:, None, None]
        for depth in range(m):
            if depth == 0:
                h = last[:, None]  # (B, 1, d)
            else:
                h, own = net.step(token, depth - 1, cache, ok, own)  # (B, M, d)
            logits = net.logits(h, depth)  # (B, M, K)
            child = torch.from_numpy(trie.child[depth])[prefix.clamp(min=0)]  # (B, M, K)
            valid = (child >= 0) & (prefix >= 0)[..., None] & alive[depth][rows, child.clamp(min=0)]
            if t == 0:
                cand = (score[..., None] + torch.log_softmax(logits, -1)).masked_fill(~valid, float("-inf"))
            else:
                phi_c = phi[..., None] + torch.log_softmax(logits / t, -1)  # (B, M, K)
                gumbel = -torch.log(-torch.log(torch.rand(phi_c.shape, generator=generator).clamp(1e-20, 1)))
                g = (phi_c + gumbel).masked_fill(~valid, float("-inf"))
                cand = _truncated_gumbel(score[..., None], g, valid)
                phi_c = phi_c.masked_fill(~valid, float("-inf"))
            width = min(beam, cand.shape[1] * cand.shape[2])
            score, index = cand.flatten(1).topk(width, dim=1)  # (B, width), best first
            parent, code = index // cand.shape[2], index % cand.shape[2]
            if t > 0:
                phi = phi_c.flatten(1).gather(1, index)
            empty = torch.isneginf(score)
            prefix = child.flatten(1).gather(1, index).masked_fill(empty, -1)
            token = code + int(_offsets(self.sizes)[depth])
            if own is not None:  # the chosen beams' caches
                own = [(k[rows[:, :, 0], parent], v[rows[:, :, 0], parent]) for k, v in own]
        return prefix.numpy(), score.numpy()


def _truncated_gumbel(parent: torch.Tensor, g: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Children's perturbed values given the parent's: Gumbels g float[B, M, K] conditioned on their max
    being parent float[B, M, 1] (Kool et al. 2019, appendix B, in a numerically stable form)."""
    import torch

    z = g.max(-1, keepdim=True).values
    gap = (g - z).clamp(max=0)
    log1mexp = torch.where(gap > -0.693, torch.log(-torch.expm1(gap)), torch.log1p(-torch.exp(gap)))
    v = parent - g + log1mexp
    out = parent - v.clamp(min=0) - torch.log1p(torch.exp(-v.abs()))
    return out.masked_fill(~valid | torch.isneginf(parent), float("-inf")).nan_to_num(nan=float("-inf"))


def _score(cfg: GenerativeConfig, decoder: _Decoder, net: torch.nn.Module, histories: np.ndarray,
           seen: sp.csr_matrix, users: np.ndarray, items: np.ndarray | None, temperature: float,
           beam: int) -> np.ndarray:
    """float32[len(users), n_items or len(items)]: generated items' scores (else FLOOR), or the given
    items' log-probabilities; with ``exclude_seen`` the user's fit items score FLOOR."""
    import torch

    mask = seen if cfg.exclude_seen else None
    net.eval()
    n_items = decoder.trie.n_items
    out = np.full((len(users), n_items if items is None else len(items)), FLOOR, dtype=np.float32)
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        if items is None:
            for start in range(0, len(users), _BLOCK):
                block = users[start:start + _BLOCK]
                top, score = decoder.generate(net, histories[block], None if mask is None else mask[block],
                                              beam, temperature, generator)
                r, c = np.nonzero(top >= 0)
                out[start + r, top[r, c]] = score[r, c]
            return out
        step = max(1, _PAIRS // max(1, len(items)))
        for start in range(0, len(users), step):
            block = users[start:start + step]
            lp = decoder.log_probs(net, histories[block], np.broadcast_to(items, (len(block), len(items))))
            if mask is not None:
                lp[mask[block][:, items].toarray() > 0] = FLOOR
            out[start:start + len(block)] = lp
    return out


class _Task:
    """The :class:`~llm4rec.training.TrainingTask` of the generative model on one training set."""

    def __init__(self, cfg: GenerativeConfig, train: Dataset, decoder: _Decoder) -> None:
        self.cfg, self.decoder = cfg, decoder
        self.windows = windows(train, cfg.max_len)  # (W, L + 1)
        self.n_examples = len(self.windows)
        self.history = train.recent_items(cfg.max_len)  # (U, L) validation scoring
        self.seen = train.matrix()
        m = len(decoder.sizes)
        self.level_of_token = np.repeat(np.arange(m), decoder.sizes)  # (V,)
        self.net: torch.nn.Module | None = None

    def build(self) -> torch.nn.Module:
        self.net = _build_net(self.cfg, self.decoder.sizes)
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

    def loss(self, module: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        states, _ = module(batch.inputs, batch.start)  # (B, N, d)
        valid = batch.target >= 0
        target = batch.target[valid]  # (P,)
        logits = module.head(states[valid])  # (P, V)
        level = torch.from_numpy(self.level_of_token)
        logits = logits.masked_fill(level[None] != level[target][:, None], float("-inf"))  # softmax within a level
        return F.cross_entropy(logits, target)

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Validation decodes by plain beam search (temperature 0), whatever the configured temperature."""
        return _score(self.cfg, self.decoder, self.net, self.history, self.seen,
                      np.asarray(users, dtype=np.int64), items, 0.0, self.cfg.beam)


class Generative(Recommender):
    """Generative retrieval of semantic IDs (see the module docstring)."""

    name = "generative"
    Config = GenerativeConfig
    partial_scores = True

    def _fit(self, data: Dataset) -> None:
        from pathlib import Path

        from llm4rec.text import item_embeddings
        from llm4rec.training import Trainer, holdout

        cfg = self.config
        if cfg.dim % cfg.heads:
            raise InputError("heads must divide dim", value=(cfg.dim, cfg.heads), expected="dim % heads == 0")
        emb = item_embeddings(data, encoder=cfg.encoder, template=cfg.template, cache_dir=cfg.cache_dir,
                              progress=cfg.progress)
        quantise = residual_kmeans if cfg.quantizer == "rkmeans" else rqvae
        self.codes_ = resolve_collisions(quantise(emb, cfg.levels, cfg.codebook, seed=cfg.seed))
        self.sizes_ = self.codes_.max(0) + 1
        self.decoder_ = _Decoder(self.codes_, self.sizes_)
        train, stage = holdout(data, cfg.valid, seed=cfg.seed)
        task = _Task(cfg, train, self.decoder_)
        run = {"model": self.name, "config": cfg.model_dump(mode="json")}
        result = Trainer(TrainingConfig.from_config(cfg), config=run).fit(task, stage)
        self.net_ = result.module
        self.train_summary_ = result.summary()
        self.training_history_ = result.history
        self.history_items_ = data.recent_items(cfg.max_len)  # scoring reads the whole fit set
        if cfg.run_dir is not None:
            self.save(Path(cfg.run_dir) / "model")

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        cfg = self.config
        return _score(cfg, self.decoder_, self.net_, self.history_items_, self.history_, users, None,
                      cfg.temperature, cfg.beam)

    def _score_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        cfg = self.config
        return _score(cfg, self.decoder_, self.net_, self.history_items_, self.history_, users, items,
                      cfg.temperature, cfg.beam)

    def generate(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The beam's items and scores per user: (int64[b, beam], -1 = none; float32[b, beam]), best first."""
        import torch

        self._check_fitted()
        users = self._users(users)
        cfg = self.config
        mask = self.history_[users] if cfg.exclude_seen else None
        self.net_.eval()
        with torch.no_grad():
            return self.decoder_.generate(self.net_, self.history_items_[users], mask, cfg.beam, cfg.temperature,
                                          torch.Generator().manual_seed(cfg.seed))

    def _state(self) -> dict[str, np.ndarray]:
        return {"codes": self.codes_, "sizes": self.sizes_, "history_items": self.history_items_,
                **module_arrays(self.net_)}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.codes_, self.sizes_ = np.array(arrays["codes"]), np.array(arrays["sizes"])
        self.decoder_ = _Decoder(self.codes_, self.sizes_)
        self.net_ = _build_net(self.config, self.sizes_)
        self.net_.load_state_dict(module_weights(arrays))
        self.net_.eval()
        self.history_items_ = np.array(arrays["history_items"])

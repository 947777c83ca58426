"""The towers of ``llm-two-tower`` (:mod:`llm4rec.models.two_tower`) as one torch module.

Item tower (every item, cold ones included)::

    t_i = E_i + MLP(E_i)            # E_i: LM embedding of the item text (residual; without it t_i = MLP(E_i))
    v_i = t_i + seen_i * sigmoid(gate([t_i, log(1 + n_i)])) * id_i     # the gated ID part (0 when unseen)

User tower over the last L history items (right-aligned, most recent last)::

    a_j = softmax_j(w . (v_j + p_j))                       # uniform with pooling="mean"; p_j: recency
    u   = W (sum_j a_j (v_j + p_j)) [+ U e_user]           # e_user: the known user's text embedding

Every parametric layer is batch-first, so Opacus (DP-SGD) sees examples.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

__all__ = ["TwoTowerNet", "TwoTowerNetConfig"]


@dataclass(frozen=True)
class TwoTowerNetConfig:
    """The shape and options of a :class:`TwoTowerNet`.

    Attributes:
        n_items, n_users: table sizes (users: the user text and rating biases).
        dim: size d of the user and item representations.
        text_dim: size T of the LM item embeddings; None = no text (an ID-only item tower).
        user_text_dim: size of the LM user embeddings; None = no user text.
        hidden: hidden width of the item-tower MLP; 0 = one linear layer.
        residual: t_i = E_i + MLP(E_i) with the MLP's last layer at 0 (needs dim == text_dim).
        id_embeddings: add the gated ID part.
        id_dropout: drop an item's ID part with this probability while training.
        dropout: dropout in the item tower (input and hidden layer).
        pooling: "attention" or "mean" over the history.
        max_history: L, the history slots (recency embeddings).
        ratings: rating mode (loss="mse"): global mean, user and item biases added to the score.
        init_scale: W starts as init_scale * I (an inverse softmax temperature over LM cosines).
        per_example: every example's items go through the item tower on their own (DP-SGD).
    """

    n_items: int
    n_users: int
    dim: int
    text_dim: int | None = None
    user_text_dim: int | None = None
    hidden: int = 256
    residual: bool = True
    id_embeddings: bool = True
    id_dropout: float = 0.5
    dropout: float = 0.1
    pooling: Literal["attention", "mean"] = "attention"
    max_history: int = 20
    ratings: bool = False
    init_scale: float = 10.0
    per_example: bool = False


class TwoTowerNet(nn.Module):
    """Item and user towers (see the module docstring).

    Buffers: ``text`` float[I, T] (the LM item table), ``log_count`` float[I]
    (log(1 + training interactions)), ``seen`` float[I] (1 = has training
    interactions), ``user_text`` float[U, T'], ``rating_mean`` (ratings).
    Those not given start at zero (a net built to load saved weights into).
    """

    def __init__(self, config: TwoTowerNetConfig, *, text: torch.Tensor | None = None,
                 log_count: torch.Tensor | None = None, user_text: torch.Tensor | None = None,
                 rating_mean: float = 0.0) -> None:
        super().__init__()
        cfg = self.config = config
        n_items, d = cfg.n_items, cfg.dim
        if cfg.residual and cfg.text_dim != d:
            raise ValueError(f"a residual item tower needs dim ({d}) == text_dim ({cfg.text_dim})")
        self.register_buffer("log_count", _buffer(log_count, (n_items,)))  # (I,)
        self.register_buffer("seen", (self.log_count > 0).float())  # (I,)
        self.register_buffer("text", None if cfg.text_dim is None else _buffer(text, (n_items, cfg.text_dim)))
        if cfg.text_dim is not None:
            width = cfg.text_dim
            layers: list[nn.Module] = [nn.Dropout(cfg.dropout)]
            if cfg.hidden:
                layers += [nn.Linear(width, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout)]
                width = cfg.hidden
            self.proj = nn.Sequential(*layers, nn.Linear(width, d))
            if cfg.residual:  # training starts from the LM's own similarity
                nn.init.zeros_(self.proj[-1].weight)
                nn.init.zeros_(self.proj[-1].bias)
        if cfg.id_embeddings:
            self.ids = nn.Embedding(n_items, d)
            nn.init.zeros_(self.ids.weight)  # training starts from the text tower alone
            self.gate = nn.Linear(d + 1, 1) if cfg.text_dim is not None else None
        self.recency = nn.Embedding(cfg.max_history, d)
        nn.init.normal_(self.recency.weight, std=0.01)
        self.attn = nn.Linear(d, 1) if cfg.pooling == "attention" else None
        self.user_proj = nn.Linear(d, d)
        with torch.no_grad():  # start as the (scaled) mean of the history items
            self.user_proj.weight.copy_(torch.eye(d) * (1.0 if cfg.ratings else cfg.init_scale))
            self.user_proj.bias.zero_()
        self.register_buffer("user_text", None if cfg.user_text_dim is None else
                             _buffer(user_text, (cfg.n_users, cfg.user_text_dim)))  # (U, T')
        if cfg.user_text_dim is not None:
            self.user_text_proj = nn.Linear(cfg.user_text_dim, d)
        if cfg.ratings:
            self.item_bias = nn.Embedding(n_items, 1)
            self.user_bias = nn.Embedding(cfg.n_users, 1)
            nn.init.zeros_(self.item_bias.weight)
            nn.init.zeros_(self.user_bias.weight)
            self.register_buffer("rating_mean", torch.tensor(float(rating_mean)))

    # ------------------------------------------------------------------ towers
    def items(self, index: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """int64[...] item indices -> float[..., d] representations.

        ``text`` float[..., T] replaces the stored LM embeddings of the items (LoRA fine-tuning).
        """
        cfg = self.config
        if self.text is None:
            return self.ids(index)
        text = self.text[index] if text is None else text  # (..., T)
        rep = self.proj(text) + (text if cfg.residual else 0.0)  # (..., d)
        if cfg.id_embeddings:
            gate = torch.sigmoid(self.gate(torch.cat([rep, self.log_count[index, None]], -1)))  # (..., 1)
            keep = self.seen[index, None]
            if self.training and cfg.id_dropout > 0:  # teach the text part to stand alone
                keep = keep * (torch.rand(keep.shape, device=keep.device) >= cfg.id_dropout)
            rep = rep + keep * gate * self.ids(index)
        return rep

    def pool(self, hist: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool history reps float[B, L, d] (right-aligned) under mask bool[B, L].

        Returns (float[B, d] pooled reps, float[B, L] attention weights).
        """
        n_slots = hist.shape[1]
        recency = torch.arange(n_slots - 1, -1, -1, device=hist.device).expand(hist.shape[0], -1)  # (B, L)
        keyed = hist + self.recency(recency)  # (B, L, d)
        if self.attn is None:
            logits = torch.zeros(mask.shape, dtype=hist.dtype, device=hist.device)
        else:
            logits = self.attn(keyed).squeeze(-1)  # (B, L)
        weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)
        weights = torch.nan_to_num(weights) * mask  # an empty history pools to zero
        return torch.einsum("bl,bld->bd", weights, keyed), weights

    def users(self, users: torch.Tensor, hist_reps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """float[B, d] user representations from history reps float[B, L, d].

        ``users`` int64[B]: known user indices, -1 for a user the model never
        saw (no user-text term).
        """
        pooled, _ = self.pool(hist_reps, mask)
        rep = self.user_proj(pooled)  # (B, d)
        if self.user_text is not None:
            known = (users >= 0)[:, None].to(rep.dtype)  # (B, 1)
            rep = rep + known * self.user_text_proj(self.user_text[users.clamp(min=0)])
        return rep

    def forward(self, users: torch.Tensor, history: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(float[B, d] users, float[B, d] positives, float[B or 1, N, d] negatives) of a training batch.

        Under DP (per-example negatives) every example's items go through
        the item tower in one batch-first call, which keeps Opacus'
        per-example gradients exact; otherwise each distinct item of the
        batch is computed once.
        """
        b, n_hist = history.shape
        if self.config.per_example:
            reps = self.items(torch.cat([history, pos[:, None], neg], dim=1))  # (B, L + 1 + N, d)
            return self.users(users, reps[:, :n_hist], mask), reps[:, n_hist], reps[:, n_hist + 1:]
        flat = torch.cat([history.reshape(-1), pos, neg.reshape(-1)])
        distinct, inverse = torch.unique(flat, return_inverse=True)
        # split, not sliced: the backward pass concatenates the three gradients instead of adding three
        # zero-padded copies of the whole (B L + B + |neg|, d) block
        hist, pos_rep, neg_rep = self.items(distinct)[inverse].split([b * n_hist, b, neg.numel()])
        return (self.users(users, hist.view(b, n_hist, -1), mask), pos_rep,
                neg_rep.view(*neg.shape, pos_rep.shape[-1]))

    def scores(self, users: torch.Tensor, user_rep: torch.Tensor, pos_rep: torch.Tensor, neg_rep: torch.Tensor,
               pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(float[B] positive scores, float[B, N] negative scores); ratings (biases added) in rating mode."""
        s_pos = (user_rep * pos_rep).sum(-1)  # (B,)
        if neg_rep.shape[0] == user_rep.shape[0]:
            s_neg = torch.einsum("bd,bnd->bn", user_rep, neg_rep)
        else:
            s_neg = user_rep @ neg_rep[0].T  # shared negatives: (B, d) @ (d, N)
        if self.config.ratings:
            s_pos = s_pos + self.rating_mean + self._user_bias(users) + self.item_bias(pos)[:, 0]
        return s_pos, s_neg

    def _user_bias(self, users: torch.Tensor) -> torch.Tensor:
        """float[B] rating bias of known users; 0 for users the model never saw (index -1)."""
        return self.user_bias(users.clamp(min=0))[:, 0] * (users >= 0)

    # ----------------------------------------------------------------- scoring
    @torch.no_grad()
    def item_table(self, block: int = 8192) -> torch.Tensor:
        """float[I, d]: every item's representation (call in eval mode)."""
        n_items = self.config.n_items
        device = self.log_count.device
        return torch.cat([self.items(torch.arange(s, min(n_items, s + block), device=device))
                          for s in range(0, n_items, block)])

    @torch.no_grad()
    def rank(self, users: torch.Tensor, recent: torch.Tensor, reps: torch.Tensor,
             items: torch.Tensor | None = None) -> torch.Tensor:
        """float[B, C] scores of B users against all items (C = I) or ``items`` int64[C].

        ``users`` int64[B] known user indices or -1; ``recent`` int64[B, L]
        history items, right-aligned, -1 padded; ``reps`` float[I, d] from
        :meth:`item_table`. One (B, d) @ (d, C) product.
        """
        mask = recent >= 0  # (B, L)
        user_rep = self.users(users, reps[recent.clamp(min=0)], mask)  # (B, d)
        cand = reps if items is None else reps[items]  # (C, d)
        s = user_rep @ cand.T  # (B, C)
        if self.config.ratings:
            index = torch.arange(len(reps), device=reps.device) if items is None else items
            s = s + self.rating_mean + self._user_bias(users)[:, None] + self.item_bias(index)[:, 0][None]
        return s

    @torch.no_grad()
    def predict(self, users: torch.Tensor, recent: torch.Tensor, reps: torch.Tensor,
                items: torch.Tensor) -> torch.Tensor:
        """float[B] scores (ratings in rating mode) of the pairs (users[k], items[k]); arguments as :meth:`rank`."""
        user_rep = self.users(users, reps[recent.clamp(min=0)], recent >= 0)  # (B, d)
        return self.scores(users, user_rep, reps[items], reps[:0][None], items)[0]

    # --------------------------------------------------------------- new items
    @torch.no_grad()
    def add_items(self, n_items: int, index: torch.Tensor, text: torch.Tensor) -> None:
        """Grow the item tables to ``n_items`` rows (new items: text only, no ID part, no rating bias) and
        set the LM embeddings of items ``index`` int64[n] to ``text`` float[n, T]."""
        grow = n_items - self.config.n_items
        if grow < 0:
            raise ValueError(f"cannot shrink the item tables from {self.config.n_items} to {n_items} rows")
        if grow:
            self.log_count = _pad_rows(self.log_count, grow)
            self.seen = _pad_rows(self.seen, grow)
            self.text = _pad_rows(self.text, grow)
            if self.config.id_embeddings:
                self.ids = _grown_embedding(self.ids, grow)
            if self.config.ratings:
                self.item_bias = _grown_embedding(self.item_bias, grow)
            self.config = replace(self.config, n_items=n_items)
        self.text[index] = text.to(self.text)


def _buffer(value: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 copy of ``value`` (or zeros of ``shape``), checked against ``shape``."""
    if value is None:
        return torch.zeros(shape)
    value = torch.as_tensor(value, dtype=torch.float32).clone()
    if tuple(value.shape) != shape:
        raise ValueError(f"expected a tensor of shape {shape}, got {tuple(value.shape)}")
    return value


def _pad_rows(table: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([table, table.new_zeros((rows, *table.shape[1:]))])


def _grown_embedding(table: nn.Embedding, rows: int) -> nn.Embedding:
    """A trainable copy of ``table`` with ``rows`` zero rows appended (same device; no random init)."""
    return nn.Embedding.from_pretrained(_pad_rows(table.weight.detach(), rows), freeze=False)

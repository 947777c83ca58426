"""``sasrec``: causal self-attention over the user's item sequence (Kang & McAuley, ICDM 2018).

Trained by default with full softmax cross-entropy over every item at every
position, the variant found strongest by the RecSys 2023 re-evaluations
(Klenitskiy & Vasilev, "Turning Dross Into Gold Loss"); BCE with one
sampled negative per position (the original paper) and sampled softmax over
shared negatives are options::

    x_t = E[i_t] * sqrt(d) + P[t]                    # item + learned position embedding, t = 1..L
    h   = Blocks(x)                                  # pre-LayerNorm causal self-attention + feed-forward
    s(u, j) = h_L . E[j]                             # tied input/output item embeddings

One training example per user: the last ``max_len + 1`` items of the fit
sequence, every position predicting the next item. Scoring reads the last
``max_len`` items of the whole fit sequence, so a P-LOO target is the next
item after it. Early stopping: the shared :class:`~llm4rec.training.Trainer`
on NDCG@10 of each user's last fit item (``valid``). With ``contrastive > 0``
an InfoNCE loss between two augmented views (crop / mask / reorder, one
drawn per view) of each training sequence is added (CL4SRec, Xie et al.
ICDE 2022).

Items never seen in training keep their random initial embeddings: an
ID-only model cannot rank cold items (``sasrec-text`` can).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from llm4rec.data.augment import augment_histories, parse_augmentations
from llm4rec.errors import InputError
from llm4rec.models.base import ModelConfig, Recommender
from llm4rec.models.torch_state import module_arrays, module_weights
from llm4rec.training.config import TrainingConfig

if TYPE_CHECKING:
    import torch

    from llm4rec.data import Dataset

__all__ = ["SASRec", "SASRecConfig", "SASRecText", "SASRecTextConfig"]

#: users scored per forward pass at inference
_SCORE_BLOCK = 512


class SASRecConfig(ModelConfig, TrainingConfig):
    """Settings of ``sasrec`` (training options: :class:`~llm4rec.training.TrainingConfig`)."""

    batch_size: int = Field(128, ge=1, description="sequences per step")
    epochs: int = Field(200, ge=1, description="maximum number of passes over the users' sequences")
    patience: int = Field(5, ge=0, description="stop after this many epochs without a better validation NDCG@10")
    max_len: int = Field(50, ge=1, description="most recent items the model reads")
    dim: int = Field(64, ge=1, description="embedding and hidden size")
    layers: int = Field(2, ge=1, description="self-attention blocks")
    heads: int = Field(1, ge=1, description="attention heads (must divide dim)")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout on embeddings, attention and feed-forward")
    loss: Literal["ce", "bce", "softmax"] = Field("ce", description="'ce': full softmax over all items; 'bce': "
                                                                    "one sampled negative per position; "
                                                                    "'softmax': sampled softmax over shared "
                                                                    "negatives")
    negatives: int = Field(256, ge=1, description="shared negatives per step (loss='softmax')")
    contrastive: float = Field(0.0, ge=0, description="weight of a contrastive loss between two augmented "
                                                      "views of each sequence (CL4SRec); 0 = off")
    augment: str = Field("crop,mask,reorder", description="augmentations a view draws one of")
    augment_rate: float = Field(0.3, gt=0, lt=1, description="share of a sequence cropped away, masked "
                                                             "or reordered in a view")
    cl_temperature: float = Field(1.0, gt=0, description="temperature of the contrastive loss")

    @field_validator("augment")
    @classmethod
    def _check_augment(cls, value: str) -> str:
        value = parse_augmentations(value)
        if value == "none":
            raise ValueError("a contrastive view needs an augmentation: a comma list of crop, mask, reorder")
        return value


@dataclass
class SequenceBatch:
    """B right-aligned sequences of L positions; position t predicts ``target[:, t]``.

    Attributes:
        inputs: int64[B, L] item index + 1 (0 = padding).
        target: int64[B, L] next item index, -1 where there is none.
        neg: int64[B, L] (bce) or int64[N] (softmax) sampled negatives, or None (ce).
        views: two int64[B, L'] augmented copies of ``inputs`` (contrastive loss), or None.
    """

    inputs: torch.Tensor
    target: torch.Tensor
    neg: torch.Tensor | None
    views: tuple[torch.Tensor, torch.Tensor] | None = None


def _build_net(cfg: SASRecConfig, n_items: int, text: np.ndarray | None = None,
               seen: np.ndarray | None = None) -> torch.nn.Module:
    """The transformer (built by the trainer after seeding, or by ``load``).

    With ``text`` (float32[n_items + 1, T], row 0 zeros) items are
    represented by a learned adapter of their LM embedding, plus (with
    ``cfg.id_embeddings``) an ID embedding for the items with training
    interactions (``seen``: float32[n_items + 1], 1 = seen), dropped at
    random while training so the text part learns to stand alone.
    """
    import torch
    from torch import nn

    class Block(nn.Module):
        """Pre-LayerNorm causal self-attention + point-wise feed-forward, both residual."""

        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(cfg.dim), nn.LayerNorm(cfg.dim)
            self.attn = nn.MultiheadAttention(cfg.dim, cfg.heads, dropout=cfg.dropout, batch_first=True)
            self.ff = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.Dropout(cfg.dropout),
                                    nn.Linear(cfg.dim, cfg.dim), nn.Dropout(cfg.dropout))
            self.drop = nn.Dropout(cfg.dropout)

        def forward(self, x: torch.Tensor, mask: torch.Tensor,
                    need_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
            """x: float[B, L, d]; mask: bool[B * heads, L, L] (True = may not attend)."""
            h = self.norm1(x)
            a, w = self.attn(h, h, h, attn_mask=mask, need_weights=need_weights, average_attn_weights=True)
            x = x + self.drop(a)
            return x + self.ff(self.norm2(x)), w

    class SASRecNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("text", None if text is None else torch.as_tensor(text))  # (I + 1, T)
            self.register_buffer("seen", None if seen is None else torch.as_tensor(seen))  # (I + 1,)
            if text is not None:  # starts at 0: training starts from the ID model and learns what text adds
                self.adapter = nn.Linear(text.shape[1], cfg.dim)
                nn.init.zeros_(self.adapter.weight)
                nn.init.zeros_(self.adapter.bias)
            if text is None or getattr(cfg, "id_embeddings", False):
                self.items = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)  # row 0: padding
                nn.init.normal_(self.items.weight, std=cfg.dim ** -0.5)
                with torch.no_grad():
                    self.items.weight[0].zero_()
            else:
                self.items = None
            self.positions = nn.Embedding(cfg.max_len, cfg.dim)
            self.drop = nn.Dropout(cfg.dropout)
            self.blocks = nn.ModuleList(Block() for _ in range(cfg.layers))
            self.norm = nn.LayerNorm(cfg.dim)

        def forward(self, inputs: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, list]:
            """inputs int64[B, L] (0 = padding) -> (float[B, L, d] states, per-block attention float[B, L, L])."""
            b, n = inputs.shape
            x = self.embed(inputs) * math.sqrt(cfg.dim) + self.positions.weight[cfg.max_len - n:][None]
            real = inputs > 0  # (B, L)
            x = self.drop(x) * real[..., None]
            future = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)  # (L, L)
            # no attention to the future or to padding; every position keeps itself (no empty softmax row)
            mask = (future[None] | ~real[:, None, :]) & ~torch.eye(n, dtype=torch.bool)[None]  # (B, L, L)
            mask = mask.repeat_interleave(cfg.heads, dim=0)  # (B * heads, L, L)
            weights = []
            for block in self.blocks:
                x, w = block(x, mask, need_weights)
                x = x * real[..., None]
                weights.append(w)
            return self.norm(x), weights

        def embed(self, index: torch.Tensor) -> torch.Tensor:
            """int64[...] item index + 1 (0 = padding) -> float[..., d] item representations."""
            if self.text is None:
                return self.items(index)
            rep = self.adapter(self.text[index])
            if self.items is not None:
                keep = self.seen[index, None]
                if self.training and cfg.id_dropout > 0:
                    keep = keep * (torch.rand(keep.shape, device=keep.device) >= cfg.id_dropout)
                rep = rep + keep * self.items(index)
            return rep

        def item_table(self) -> torch.Tensor:
            """float[n_items, d]: the output embedding of every item (the padding row left out)."""
            if self.text is None:
                return self.items.weight[1:]
            return self.embed(torch.arange(1, len(self.text)))

    return SASRecNet()


class _Task:
    """The :class:`~llm4rec.training.TrainingTask` of SASRec on one training set."""

    def __init__(self, cfg: SASRecConfig, train: Dataset, text: np.ndarray | None,
                 init: dict[str, torch.Tensor] | None = None) -> None:
        self.cfg, self.train, self.text, self.init = cfg, train, text, init
        window = train.recent_items(cfg.max_len + 1)  # (U, L + 1), -1 padded on the left
        self.examples = np.flatnonzero((window >= 0).sum(1) >= 2)  # users with one next-item pair at least
        self.n_examples = len(self.examples)
        self.window = window[self.examples]
        self.history = train.recent_items(cfg.max_len)  # (U, L) validation scoring
        self.n_items = train.n_items
        self.pool = np.flatnonzero(np.bincount(train.item, minlength=train.n_items) > 0)
        self.net: torch.nn.Module | None = None

    def build(self) -> torch.nn.Module:
        import torch

        seen = None
        if self.text is not None:
            seen = np.zeros(self.n_items + 1, dtype=np.float32)
            seen[1 + self.pool] = 1.0
        self.net = _build_net(self.cfg, self.n_items, self.text, seen)
        if self.init is not None:  # transfer: every weight but the ID embeddings of the source's items
            missing, _ = self.net.load_state_dict(self.init, strict=False)
            if self.net.items is not None:
                torch.nn.init.zeros_(self.net.items.weight)
            if set(missing) - {"items.weight", "text", "seen"}:
                raise InputError("the source model's weights do not fit this architecture", value=missing,
                                 expected="a sasrec-text model with the same settings")
        return self.net

    def batch(self, index: np.ndarray, rng: np.random.Generator) -> SequenceBatch:
        import torch

        window = self.window[index]  # (B, L + 1)
        inputs, target = window[:, :-1], window[:, 1:]
        target = np.where(inputs >= 0, target, -1)  # a padded input predicts nothing
        real = inputs >= 0
        first = int(np.argmax(real.any(0)))  # drop columns that are padding for the whole batch
        inputs, target = inputs[:, first:], target[:, first:]
        neg = None
        if self.cfg.loss == "bce":
            neg = torch.from_numpy(self.pool[rng.integers(len(self.pool), size=target.shape)])
        elif self.cfg.loss == "softmax":
            neg = torch.from_numpy(self.pool[rng.integers(len(self.pool), size=self.cfg.negatives)])
        views = None
        if self.cfg.contrastive > 0:
            views = tuple(self._view(inputs, rng) for _ in range(2))
        return SequenceBatch(torch.from_numpy(inputs + 1), torch.from_numpy(target), neg, views)

    def _view(self, inputs: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """int64[B, L'] one augmented copy of ``inputs`` (-1 padded) as model input (0 = padding)."""
        import torch

        slots, real = augment_histories(inputs, inputs >= 0, self.cfg.augment.split(","), self.cfg.augment_rate,
                                        rng, one_of=True)
        slots = np.where(real, slots + 1, 0)
        return torch.from_numpy(slots[:, int(np.argmax(real.any(0))):])

    def loss(self, module: torch.nn.Module, batch: SequenceBatch) -> torch.Tensor:
        import torch.nn.functional as F

        from llm4rec.nn import LOSSES

        states, _ = module(batch.inputs)  # (B, L, d)
        valid = batch.target >= 0
        h = states[valid]  # (P, d): positions with a next item
        target = batch.target[valid]  # (P,)
        table = module.item_table()  # (I, d)
        extra = 0.0
        if batch.views is not None:
            extra = self.cfg.contrastive * _contrastive(module, batch.views, self.cfg.cl_temperature)
        if self.cfg.loss == "ce":
            return F.cross_entropy(h @ table.T, target) + extra
        s_pos = (h * table[target]).sum(-1)  # (P,)
        if self.cfg.loss == "bce":
            neg = batch.neg[valid]  # (P,)
            s_neg = (h * table[neg]).sum(-1, keepdim=True)  # (P, 1)
            return LOSSES["bce"](s_pos, s_neg, (neg != target)[:, None]) + extra
        s_neg = h @ table[batch.neg].T  # (P, N)
        return LOSSES["softmax"](s_pos, s_neg, batch.neg[None, :] != target[:, None]) + extra

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        return _score(self.net, self.history, np.asarray(users, dtype=np.int64), items)


def _contrastive(module: torch.nn.Module, views: tuple[torch.Tensor, torch.Tensor],
                 temperature: float) -> torch.Tensor:
    """InfoNCE between two views of B sequences: each view's last state must pick out its twin among the
    other 2B - 2 views of the batch (NT-Xent over dot products, as in CL4SRec)."""
    import torch
    import torch.nn.functional as F

    z = torch.cat([module(v)[0][:, -1] for v in views])  # (2B, d); views are right-aligned
    b = len(z) // 2
    sim = (z @ z.T) / temperature  # (2B, 2B)
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool), float("-inf"))
    twin = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
    return F.cross_entropy(sim, twin)


class SASRec(Recommender):
    """Causal self-attention sequential recommender (see the module docstring)."""

    name = "sasrec"
    Config = SASRecConfig

    def _fit(self, data: Dataset) -> None:
        from pathlib import Path

        from llm4rec.training import Trainer, holdout

        init = self._source_weights()
        cfg = self.config
        if cfg.dim % cfg.heads:
            raise InputError("heads must divide dim", value=(cfg.dim, cfg.heads), expected="dim % heads == 0")
        if cfg.contrastive > 0 and cfg.dp_noise_multiplier > 0:
            raise InputError("the contrastive loss couples the examples of a batch; it cannot run under DP-SGD",
                             value=cfg.contrastive, expected="contrastive=0 with dp_noise_multiplier > 0")
        text = self._item_text(data)
        if cfg.epochs == 0:  # zero-shot transfer: the source's weights as they are
            self.net_ = _Task(cfg, data, text, init).build().eval()
            self.train_summary_ = {"epochs_run": 0, "init_from": cfg.init_from}
            self.training_history_ = []
        else:
            train, stage = holdout(data, cfg.valid, seed=cfg.seed)
            task = _Task(cfg, train, text, init)
            run = {"model": self.name, "config": cfg.model_dump(mode="json")}
            result = Trainer(TrainingConfig.from_config(cfg), config=run).fit(task, stage)
            self.net_ = result.module
            self.train_summary_ = result.summary()
            self.training_history_ = result.history
        self.history_items_ = data.recent_items(cfg.max_len)  # scoring reads the whole fit set
        if cfg.run_dir is not None:
            self.save(Path(cfg.run_dir) / "model")

    def _item_text(self, data: Dataset) -> np.ndarray | None:
        """float32[n_items + 1, T] LM embeddings with a zero padding row (``sasrec-text``), or None."""
        return None

    def _source_weights(self) -> dict[str, torch.Tensor] | None:
        """Weights to start from (``sasrec-text``'s ``init_from``), or None."""
        return None

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        return _score(self.net_, self.history_items_, users, None)

    def _score_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return _score(self.net_, self.history_items_, users, items)

    def explain(self, user: int, item: int, top: int = 3) -> dict[str, Any]:
        """Which history positions the prediction attended to.

        The weights are the last position's attention over the history,
        averaged over heads and multiplied through the blocks (attention
        rollout, Abnar & Zuidema 2020, with the residual path counted as half):
        float[h] summing to 1. Returns
        :func:`~llm4rec.models.explain.explanation`'s dict; each ``because``
        entry adds ``position`` (1 = most recent).
        """
        from llm4rec.models.explain import explanation

        self._check_fitted()
        user = int(self._users([user])[0])
        item = int(item)
        if not 0 <= item < self.n_items_:
            raise InputError("item index out of range", value=item, expected=f"0..{self.n_items_ - 1}")
        hist = self.history_items_[user]
        hist = hist[hist >= 0]
        weights = self.attention(user)
        out = explanation(self, user, item, hist, weights, top=top, reason="what usually comes after")
        where = {int(i): len(hist) - j for j, i in enumerate(hist.tolist())}
        for entry in out["because"]:
            entry["position"] = where[entry["item"]]
        return out

    def attention(self, user: int) -> np.ndarray:
        """float64[h]: attention rollout of the last position over the user's h history items (oldest first)."""
        import torch

        hist = self.history_items_[int(user)]
        hist = hist[hist >= 0]
        if len(hist) == 0:
            return np.zeros(0)
        net = self.net_
        net.eval()
        with torch.no_grad():
            _, per_block = net(torch.from_numpy(hist + 1)[None], need_weights=True)
        n = len(hist)
        rollout = torch.eye(n)
        for w in per_block:  # (1, L, L)
            rollout = (0.5 * w[0] + 0.5 * torch.eye(n)) @ rollout
        last = rollout[-1].double().numpy()
        return last / last.sum()

    def _state(self) -> dict[str, np.ndarray]:
        return {"history_items": self.history_items_, **module_arrays(self.net_)}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        text, seen = arrays.get("net__text"), arrays.get("net__seen")
        self.net_ = _build_net(self.config, self.n_items_, None if text is None else np.array(text),
                               None if seen is None else np.array(seen))
        self.net_.load_state_dict(module_weights(arrays))
        self.net_.eval()
        self.history_items_ = np.array(arrays["history_items"])


def _score(net: torch.nn.Module, histories: np.ndarray, users: np.ndarray, items: np.ndarray | None) -> np.ndarray:
    """float32[len(users), n_items or len(items)]: the last position's state against the item table."""
    import torch

    net.eval()
    with torch.no_grad():
        table = net.item_table()  # (I, d)
        cand = table if items is None else table[torch.from_numpy(np.asarray(items, dtype=np.int64))]
        out = np.empty((len(users), len(cand)), dtype=np.float32)
        for start in range(0, len(users), _SCORE_BLOCK):
            hist = histories[users[start:start + _SCORE_BLOCK]]  # (B, L), -1 padded
            states, _ = net(torch.from_numpy(hist + 1))
            out[start:start + len(hist)] = (states[:, -1] @ cand.T).numpy()
    return out


class SASRecTextConfig(SASRecConfig):
    """Settings of ``sasrec-text``: those of ``sasrec`` plus the text side."""

    encoder: str = Field("minilm", description="text encoder of llm4rec.text.item_embeddings")
    template: str | None = Field(None, description="item text template; None = the dataset's default")
    cache_dir: str | None = Field(None, description="embedding cache directory of the text layer")
    id_embeddings: bool = Field(True, description="add an ID embedding for items seen in training")
    id_dropout: float = Field(0.2, ge=0, lt=1, description="while training, drop an item's ID part with this "
                                                           "probability (cold items have text only)")
    init_from: str | None = Field(None, description="saved sasrec-text model directory to start from "
                                                    "(transfer to another dataset through item text)")
    epochs: int = Field(200, ge=0, description="maximum number of passes over the users' sequences; 0 (with "
                                               "init_from) applies the source model as it is (zero-shot)")

    @model_validator(mode="after")
    def _check_zero_shot(self) -> SASRecTextConfig:
        if self.epochs == 0 and self.init_from is None:
            raise ValueError("epochs=0 needs init_from (a zero-shot transfer of a saved model)")
        return self


class SASRecText(SASRec):
    """SASRec over language-model item representations: a learned adapter of the frozen LM embedding
    of each item's text (+ a gated-by-training ID embedding), so unseen items are ranked by their text."""

    name = "sasrec-text"
    Config = SASRecTextConfig

    #: settings that fix the architecture: taken from the source model under ``init_from``
    ARCHITECTURE = ("max_len", "dim", "layers", "heads", "encoder", "id_embeddings")

    def _source_weights(self) -> dict[str, torch.Tensor] | None:
        """The saved source model's weights, adopting its architecture settings; None without ``init_from``.

        The source's ID embeddings belong to its own items and are left out:
        the target's start at zero, so before fine-tuning the model scores
        items through their text only.
        """
        if self.config.init_from is None:
            return None
        source = Recommender.load(self.config.init_from)
        if not isinstance(source, SASRecText):
            raise InputError("init_from must be a saved sasrec-text model", path=self.config.init_from,
                             value=source.name, expected="sasrec-text")
        self.config = self.config.model_copy(update={k: getattr(source.config, k) for k in self.ARCHITECTURE})
        return {k: v for k, v in source.net_.state_dict().items() if k not in ("items.weight", "text", "seen")}

    def _item_text(self, data: Dataset) -> np.ndarray:
        from llm4rec.text import item_embeddings

        cfg = self.config
        emb = item_embeddings(data, encoder=cfg.encoder, template=cfg.template, cache_dir=cfg.cache_dir,
                              progress=cfg.progress)
        return np.concatenate([np.zeros((1, emb.shape[1]), dtype=np.float32), emb.astype(np.float32)])

"""``llm-two-tower``: a hybrid two-tower recommender over language-model item embeddings.

Item tower (every item, cold ones included)::

    t_i = E_i + MLP(E_i)                             # E_i: frozen LM embedding of the item text; the MLP's
                                                     # last layer starts at 0, so training starts from the
                                                     # LM's own similarity (with dim=d: t_i = MLP(E_i))
    v_i = t_i + seen_i * sigmoid(gate([t_i, log(1 + n_i)])) * id_i
                                                     # ID part: learned, gated by the text and the item's
                                                     # training count n_i; 0 for items unseen in training,
                                                     # dropped at random while training (id_dropout)

User tower (inductive: any history works)::

    a_j = softmax_j(w . (v_j + p_j))                 # attention over the last L history items
                                                     # (uniform with pooling="mean"); p_j: recency
    u   = W (sum_j a_j (v_j + p_j)) [+ U e_user]     # e_user: LM embedding of the user text (optional);
                                                     # W starts as 10 I (a softmax temperature of 0.1)

Score ``s(u, i) = u . v_i``; one ``(B, d) @ (d, I)`` matrix product scores a
block of users against every item. With ``loss="mse"`` the model predicts
explicit ratings, ``mu + b_u + b_i + u . v_i`` (see :meth:`TwoTower.predict`).
The towers are :class:`~llm4rec.nn.two_tower_net.TwoTowerNet`.

Histories: the user tower reads a history's last ``max_history`` items, so
any history scores without refitting (``score(histories=...)``), and a known
user scores exactly as their fit history does. The only per-user state is
``e_user`` (``user_text=True``) and ``b_u`` (``loss="mse"``): they apply to
rows of a known user (``Histories.users >= 0``: ``score(users=...)``, or
``users`` and ``histories`` together) and are absent (zero) for a user the
model never saw.

Training (the shared :class:`~llm4rec.training.Trainer`): one example per
interaction of the fit set; its history is the (up to) L items before it
(``history="past"``, the default: next-item training), the user's L most
recent other items (``"others"``: order-free, like P-RAND and P-COLD
targets), or either at random per example (``"mixed"``). On the validation
stages ``past`` is best for P-LOO (Amazon Beauty NDCG@10 0.061 vs 0.046 with
``mixed``) and ``mixed`` for cold start (ml-100k P-COLD Recall@20 0.313 vs
0.278): set ``history=mixed`` for a cold-start catalogue. Negatives are sampled from the items with training
interactions (shared by a batch), so cold items are never pushed down.
Losses: BCE or BPR against sampled negatives, sampled softmax (optionally
popularity sampling with logQ correction), MSE on ratings. Options: L2,
dropout, APR adversarial perturbation of the tower outputs, history
augmentation (crop / mask / reorder), DP-SGD (Opacus).

Validation and early stopping: see ``valid`` in
:class:`~llm4rec.training.TrainingConfig`; by default each user's last fit
interaction is held out and ranked (NDCG@10; RMSE of its rating with
``loss="mse"``), the best epoch is kept, and scoring then uses the whole fit
set as history. ``fit(data, valid=stage)`` validates on a protocol's
``valid`` stage of the same fit set instead (RMSE against the stage's
``target_ratings`` with ``loss="mse"``).

Encoder fine-tuning (``finetune="lora"``): after that training, LoRA
adapters on the text encoder's attention (:class:`~llm4rec.text.tuning.LoraTextEncoder`)
train through the (now fixed) towers, end to end, for ``lora_epochs`` x
``lora_steps`` small steps; the item table is then re-encoded with the tuned
encoder. (Training the towers too, with a fresh optimiser and small
batches, undid much of what they had learned.) The
fine-tuned model is kept only if it validates better than the frozen one.

New items (:meth:`TwoTower.add_items`) go through the item tower's text part,
encoded exactly as the catalogue was (the tuned encoder after LoRA).

Device: the ``device`` setting places the towers, the batches, scoring and
the text encoder (``"auto"``: cuda when available).

Saved state (``.npz`` arrays): the towers' weights and buffers (the LM item
table included, so ``load`` scores identically without re-encoding), the
item template and, after LoRA fine-tuning, the adapters' weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from llm4rec.data.augment import augment_histories, parse_augmentations
from llm4rec.errors import InputError
from llm4rec.models.base import ModelConfig
from llm4rec.models.neural import NeuralRecommender
from llm4rec.training.config import TrainingConfig

if TYPE_CHECKING:
    import torch

    from llm4rec.data import Dataset, Stage
    from llm4rec.models.history import Histories
    from llm4rec.nn.two_tower_net import TwoTowerNet, TwoTowerNetConfig
    from llm4rec.text import TextEncoder

__all__ = ["TwoTower", "TwoTowerBatch", "TwoTowerConfig"]

#: users scored per matrix product at inference
_SCORE_BLOCK = 1024
#: initial scale of the user tower's output (inverse softmax temperature over LM cosine similarities)
_INIT_SCALE = 10.0
#: representation size of a model without text when ``dim`` is None
_ID_ONLY_DIM = 64
#: key prefix of the LoRA adapters' arrays in the saved state
_LORA = "lora__"


class TwoTowerConfig(ModelConfig, TrainingConfig):
    """Settings of ``llm-two-tower`` (training options: :class:`~llm4rec.training.TrainingConfig`)."""

    encoder: str | None = Field("minilm", description="text encoder of llm4rec.text.item_embeddings; "
                                                      "None = no text (an ID-only model)")
    template: str | None = Field(None, description="item text template; None = the dataset's default")
    cache_dir: str | None = Field(None, description="embedding cache directory of the text layer")
    dim: int | None = Field(None, ge=1, description="size of the user and item representations; None = "
                                                     "the text embedding's size, with a residual item tower "
                                                     "(LM embedding + MLP) that starts from the LM's own "
                                                     "similarity (64 without text)")
    hidden: int = Field(256, ge=0, description="hidden width of the item-tower MLP; 0 = one linear layer")
    id_embeddings: bool = Field(True, description="add a gated ID embedding for items seen in training")
    id_dropout: float = Field(0.5, ge=0, lt=1, description="while training, drop an item's ID part with this "
                                                           "probability, so the text part learns to stand "
                                                           "alone (cold-start items have text only)")
    pooling: Literal["attention", "mean"] = Field("attention", description="user tower pooling")
    user_text: bool = Field(False, description="add the LM embedding of the user text (profile + "
                                               "recent titles) to the user tower")
    max_history: int = Field(20, ge=1, description="most recent history items the user tower reads")
    history: Literal["past", "others", "mixed"] = Field(
        "past", description="history of a training example: the items before the target ('past': next-item "
                            "training, for sequential data), the user's most recent other items "
                            "('others': order-free targets, as in P-RAND and P-COLD), or either at random "
                            "('mixed': better for cold start)")
    loss: Literal["bce", "bpr", "softmax", "mse"] = Field("softmax", description="training loss")
    negatives: int = Field(1000, ge=1, description="sampled negatives per step, shared by the batch (per "
                                                   "example under DP; ranking losses only)")
    sampler: Literal["uniform", "popularity"] = Field("uniform", description="negative sampling distribution "
                                                                              "over the training items")
    logq: bool = Field(False, description="logQ correction of sampled softmax (with sampler='popularity')")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in the item tower (input and hidden layer)")
    adv_eps: float = Field(0.0, ge=0, description="APR perturbation norm on the tower outputs; 0 = off")
    adv_weight: float = Field(1.0, ge=0, description="weight of the adversarial loss")
    augment: str = Field("none", description="history augmentation: 'none' or a comma list of "
                                             "crop, mask, reorder")
    augment_rate: float = Field(0.2, gt=0, lt=1, description="share of a history cropped away, masked "
                                                             "or reordered")
    finetune: Literal["none", "lora"] = Field("none", description="'lora': after training over the frozen "
                                                                  "encoder, fine-tune the encoder itself "
                                                                  "(LoRA adapters) through the fixed towers")
    lora_rank: int = Field(8, ge=1, description="LoRA rank of the encoder's attention projections")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha / rank)")
    lora_epochs: int = Field(2, ge=1, description="fine-tuning epochs (validated after each)")
    lora_steps: int = Field(100, ge=1, description="fine-tuning steps per epoch")
    lora_batch: int = Field(32, ge=1, description="examples per fine-tuning step")
    lora_negatives: int = Field(64, ge=1, description="sampled negatives per fine-tuning step (each one's "
                                                      "text goes through the encoder)")
    lora_lr: float = Field(3e-4, gt=0, description="Adam learning rate while fine-tuning")

    @field_validator("encoder", "template", "cache_dir", "dim", mode="before")
    @classmethod
    def _none_from_text(cls, value: Any) -> Any:
        """``--set encoder=none`` on the command line means None."""
        return None if isinstance(value, str) and value.strip().lower() in ("none", "null") else value

    @field_validator("augment")
    @classmethod
    def _check_augment(cls, value: str) -> str:
        return parse_augmentations(value)

    @model_validator(mode="after")
    def _check_combinations(self) -> TwoTowerConfig:
        if self.encoder is None and not self.id_embeddings:
            raise ValueError("with encoder=None the item tower needs id_embeddings=True")
        if self.encoder is None and self.user_text:
            raise ValueError("user_text needs a text encoder")
        if self.dp_noise_multiplier > 0 and self.adv_eps > 0:
            raise ValueError("adversarial training (adv_eps > 0) cannot be combined with DP-SGD")
        if self.finetune == "lora" and (self.encoder is None or self.dp_noise_multiplier > 0):
            raise ValueError("finetune='lora' needs a text encoder and cannot be combined with DP-SGD")
        return self


@dataclass
class TwoTowerBatch:
    """One training batch: B examples, L history slots, N negatives.

    Negatives are drawn per example under DP (``neg`` is [B, N], so no term
    couples two examples) and shared by the whole batch otherwise (``neg`` is
    [1, N]: one (B, d) @ (d, N) product scores them).

    Attributes:
        users: int64[B].
        history: int64[B, L] item indices, right-aligned (most recent last); padding holds 0.
        mask: bool[B, L], True on real history items.
        pos: int64[B] the positive (next) item.
        neg: int64[B or 1, N] sampled negatives (N = 0 with loss="mse").
        neg_valid: bool[B, N], False where a negative equals the example's positive.
        log_q_pos, log_q_neg: float32[B], float32[B or 1, N] log sampling probabilities (logQ
            correction), or None.
        rating: float32[B] target ratings (loss="mse"), or None.
    """

    users: torch.Tensor
    history: torch.Tensor
    mask: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor
    neg_valid: torch.Tensor
    log_q_pos: torch.Tensor | None = None
    log_q_neg: torch.Tensor | None = None
    rating: torch.Tensor | None = None

    def to(self, device: Any) -> TwoTowerBatch:
        return TwoTowerBatch(*(None if t is None else t.to(device) for t in (
            self.users, self.history, self.mask, self.pos, self.neg, self.neg_valid, self.log_q_pos,
            self.log_q_neg, self.rating)))


def _net_config(cfg: TwoTowerConfig, n_items: int, n_users: int, text_dim: int | None,
                user_text_dim: int | None) -> TwoTowerNetConfig:
    """The towers' shape and options for ``cfg`` over these tables."""
    from llm4rec.nn.two_tower_net import TwoTowerNetConfig

    dim = cfg.dim if cfg.dim is not None else _ID_ONLY_DIM if text_dim is None else text_dim
    return TwoTowerNetConfig(
        n_items=n_items, n_users=n_users, dim=dim, text_dim=text_dim, user_text_dim=user_text_dim,
        hidden=cfg.hidden, residual=cfg.dim is None and text_dim is not None, id_embeddings=cfg.id_embeddings,
        id_dropout=cfg.id_dropout, dropout=cfg.dropout, pooling=cfg.pooling, max_history=cfg.max_history,
        ratings=cfg.loss == "mse", init_scale=_INIT_SCALE, per_example=cfg.dp_noise_multiplier > 0)


def _rank(net: TwoTowerNet, reps: torch.Tensor, recent: np.ndarray, users: np.ndarray,
          items: np.ndarray | None) -> np.ndarray:
    """float32[B, n_items or len(items)] in blocks of users; ``recent`` int64[B, L] (-1 padded), ``users``
    int64[B] (-1: unknown), ``reps`` float[I, d] on the net's device."""
    import torch

    device = reps.device
    cand = None if items is None else torch.from_numpy(np.asarray(items, dtype=np.int64)).to(device)
    out = np.empty((len(users), len(reps) if items is None else len(items)), dtype=np.float32)
    for start in range(0, len(users), _SCORE_BLOCK):
        stop = start + _SCORE_BLOCK
        u = torch.from_numpy(np.asarray(users[start:stop], dtype=np.int64)).to(device)  # (B,)
        r = torch.from_numpy(np.asarray(recent[start:stop], dtype=np.int64)).to(device)  # (B, L)
        out[start:start + len(u)] = net.rank(u, r, reps, cand).cpu().numpy()
    return out


def _predict(net: TwoTowerNet, reps: torch.Tensor, recent: np.ndarray, users: np.ndarray,
             items: np.ndarray) -> np.ndarray:
    """float32[n] rating predictions of the pairs (users[k], items[k]), in blocks; arguments as :func:`_rank`."""
    import torch

    device = reps.device
    out = np.empty(len(users), dtype=np.float32)
    for start in range(0, len(users), _SCORE_BLOCK):
        stop = start + _SCORE_BLOCK
        u, r, i = (torch.from_numpy(np.asarray(a[start:stop], dtype=np.int64)).to(device)
                   for a in (users, recent, items))
        out[start:start + len(u)] = net.predict(u, r, reps, i).cpu().numpy()
    return out


class _Task:
    """The :class:`~llm4rec.training.TrainingTask` of the two-tower model on one training set."""

    def __init__(self, cfg: TwoTowerConfig, train: Dataset, text: np.ndarray | None,
                 user_text: np.ndarray | None) -> None:
        self.cfg, self.text, self.user_text = cfg, text, user_text
        self.train = train
        self.items = train.item.astype(np.int64)  # flat, users' chronological runs
        self.offsets = train.user_offsets
        start = self.offsets[train.user]
        if cfg.loss == "mse":  # a rating can be predicted from biases alone
            usable = np.ones(train.n_interactions, dtype=bool)
        elif cfg.history == "past":  # ranking examples need a non-empty history
            usable = np.arange(train.n_interactions) > start
        else:  # a "mixed" example at t = 0 drawn as "past" has an empty history: it pools to zero
            usable = np.diff(self.offsets)[train.user] >= 2
        self.examples = np.flatnonzero(usable)  # rows of train
        self.n_examples = len(self.examples)
        counts = np.bincount(self.items, minlength=train.n_items)
        self.log_count = np.log1p(counts).astype(np.float32)
        self.pool = np.flatnonzero(counts > 0)  # negatives come from items seen in training
        p = counts[self.pool].astype(np.float64) if cfg.sampler == "popularity" else np.ones(len(self.pool))
        self.cdf = np.cumsum(p / p.sum())
        self.log_q = np.full(train.n_items, -np.inf, dtype=np.float32)
        self.log_q[self.pool] = np.log(p / p.sum())
        self.rating = train.rating  # float32[n] or None
        self.rating_mean = float(train.rating.mean()) if cfg.loss == "mse" else 0.0
        self.history = train.recent_items(cfg.max_history)  # (U, L) for validation scoring
        self.n_negatives = 0 if cfg.loss == "mse" else cfg.negatives
        self.net_config = _net_config(cfg, train.n_items, train.n_users, None if text is None else text.shape[1],
                                      None if user_text is None else user_text.shape[1])
        self.net: TwoTowerNet | None = None
        self._reps: torch.Tensor | None = None  # item reps of the current weights (validation)

    def build(self) -> torch.nn.Module:
        from llm4rec.nn.two_tower_net import TwoTowerNet

        self.net = TwoTowerNet(self.net_config, text=_tensor(self.text), log_count=_tensor(self.log_count),
                               user_text=_tensor(self.user_text), rating_mean=self.rating_mean)
        return self.net

    def batch(self, index: np.ndarray, rng: np.random.Generator) -> TwoTowerBatch:
        import torch

        cfg = self.cfg
        rows = self.examples[index]  # (B,) rows of the training set
        users = self.train.user[rows].astype(np.int64)
        start = self.offsets[users]
        n_hist = cfg.max_history
        past = rows[:, None] - n_hist + np.arange(n_hist)  # (B, L) rows before the target
        slots, mask = past, past >= start[:, None]
        if cfg.history != "past":  # the user's most recent other items
            end = self.offsets[users + 1]
            others = end[:, None] - (n_hist + 1) + np.arange(n_hist + 1)  # (B, L + 1)
            kept = (others >= start[:, None]) & (others != rows[:, None])
            order = np.argsort(kept, axis=1, kind="stable")[:, 1:]  # right-align, keep L
            others, kept = np.take_along_axis(others, order, 1), np.take_along_axis(kept, order, 1)
            pick = np.ones(len(rows), dtype=bool) if cfg.history == "others" else rng.random(len(rows)) < 0.5
            slots, mask = np.where(pick[:, None], others, slots), np.where(pick[:, None], kept, mask)
        if cfg.augment != "none":
            slots, mask = augment_histories(slots, mask, cfg.augment.split(","), cfg.augment_rate, rng)
        keep = mask.any(0)  # drop slot columns that are padding for the whole batch
        if keep.any():
            first = int(np.argmax(keep))
            slots, mask = slots[:, first:], mask[:, first:]
        else:
            slots, mask = slots[:, -1:], mask[:, -1:]
        history = np.where(mask, self.items[np.maximum(slots, 0)], 0)
        pos = self.items[rows]
        shape = (len(rows), self.n_negatives) if self.net_config.per_example else (1, self.n_negatives)
        neg = self.pool[np.minimum(np.searchsorted(self.cdf, rng.random(shape)), len(self.pool) - 1)]
        logq = cfg.logq and cfg.loss == "softmax"
        return TwoTowerBatch(
            users=torch.from_numpy(users), history=torch.from_numpy(history), mask=torch.from_numpy(mask),
            pos=torch.from_numpy(pos), neg=torch.from_numpy(neg), neg_valid=torch.from_numpy(neg != pos[:, None]),
            log_q_pos=torch.from_numpy(self.log_q[pos]) if logq else None,
            log_q_neg=torch.from_numpy(self.log_q[neg]) if logq else None,
            rating=torch.from_numpy(self.rating[rows]) if cfg.loss == "mse" else None)

    def loss(self, module: torch.nn.Module, batch: TwoTowerBatch) -> torch.Tensor:
        self._reps = None  # the weights are about to change
        return self._loss(batch, list(module(batch.users, batch.history, batch.mask, batch.pos, batch.neg)))

    def _loss(self, batch: TwoTowerBatch, reps: list[torch.Tensor]) -> torch.Tensor:
        """The configured loss of a batch from its (user, positive, negative) representations."""
        from llm4rec.nn import LOSSES, apr_loss, mse_loss

        cfg, net = self.cfg, self.net

        def from_reps(reps: list[torch.Tensor]) -> torch.Tensor:
            s_pos, s_neg = net.scores(batch.users, *reps, batch.pos)  # (B,), (B, N)
            if cfg.loss == "mse":
                return mse_loss(s_pos, batch.rating)
            if cfg.loss == "softmax":
                return LOSSES["softmax"](s_pos, s_neg, batch.neg_valid, log_q_pos=batch.log_q_pos,
                                         log_q_neg=batch.log_q_neg)
            return LOSSES[cfg.loss](s_pos, s_neg, batch.neg_valid)

        if cfg.adv_eps > 0:
            return apr_loss(from_reps, reps, cfg.adv_eps, cfg.adv_weight)
        return from_reps(reps)

    def item_table(self) -> torch.Tensor:
        """float[I, d] item reps of the current weights (computed once between two training steps)."""
        if self._reps is None:
            self._reps = self.net.item_table()
        return self._reps

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Validation scores with the current weights and the training histories."""
        users = np.asarray(users, dtype=np.int64)
        return _rank(self.net, self.item_table(), self.history[users], users, items)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings float32[n] of pairs with the current weights (rating validation)."""
        return _predict(self.net, self.item_table(), self.history[users], users, items)


class _LoraTask(_Task):
    """Fine-tuning of the text encoder inside the item tower (``finetune="lora"``), after the frozen training.

    Each step draws ``lora_batch`` random training examples and
    ``lora_negatives`` negatives, whose texts all go through the LoRA encoder
    (with grad; only the adapters train, the towers stay as the frozen
    training left them). History items read the stored LM table, which is
    re-encoded with the current adapters before every validation and at the
    end: the saved model holds the tuned embeddings of every item, cold ones
    included. (Scoring some negatives from the stored table instead let the
    adapters lower the loss by moving every fresh embedding at once, which
    ranks nothing better.)
    """

    def __init__(self, cfg: TwoTowerConfig, train: Dataset, text: np.ndarray, user_text: np.ndarray | None,
                 net: TwoTowerNet, encoder: TextEncoder, texts: list[str]) -> None:
        super().__init__(cfg, train, text, user_text)
        self.net, self.base, self.texts = net, encoder, texts
        self.n_examples = cfg.lora_steps * cfg.lora_batch
        self.n_negatives = min(self.n_negatives, cfg.lora_negatives)
        self.encoder: torch.nn.Module | None = None
        self.stale = False  # the stored table predates the latest adapter step

    def build(self) -> torch.nn.Module:
        from torch import nn

        from llm4rec.text.tuning import LoraTextEncoder

        self.encoder = LoraTextEncoder(self.base, rank=self.cfg.lora_rank, alpha=self.cfg.lora_alpha)
        self.net.requires_grad_(False)  # the trained towers stay fixed; the adapters learn to serve them
        return nn.ModuleDict({"net": self.net, "encoder": self.encoder})

    def batch(self, index: np.ndarray, rng: np.random.Generator) -> TwoTowerBatch:
        return super().batch(rng.integers(len(self.examples), size=len(index)), rng)

    def loss(self, module: torch.nn.Module, batch: TwoTowerBatch) -> torch.Tensor:
        import torch

        self._reps, self.stale = None, True
        net, encoder = module["net"], module["encoder"]
        b = len(batch.pos)
        user = net.users(batch.users, net.items(batch.history), batch.mask)  # (B, d)
        distinct, inverse = torch.unique(torch.cat([batch.pos, batch.neg[0]]), return_inverse=True)
        live = encoder([self.texts[i] for i in distinct.tolist()])  # (D, T) with grad
        cand = net.items(distinct, text=live)[inverse]  # (B + N, d)
        return self._loss(batch, [user, cand[:b], cand[b:][None]])

    def refresh(self) -> None:
        """Re-encode every item's text with the current adapters into the stored LM table."""
        import torch

        if self.stale:
            table = self.encoder.encode(self.texts, progress=self.cfg.progress)
            self.net.text.copy_(torch.from_numpy(table))
            self._reps, self.stale = None, False

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        self.refresh()
        return super().score(users, items)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        self.refresh()
        return super().predict(users, items)


def _tensor(array: np.ndarray | None) -> torch.Tensor | None:
    import torch

    return None if array is None else torch.from_numpy(array)


class TwoTower(NeuralRecommender):
    """Hybrid two-tower model over LM item embeddings (see the module docstring).

    Learned attributes besides :class:`~llm4rec.models.neural.NeuralRecommender`'s:
    ``template_`` (the item text template, None without an encoder),
    ``adapters_`` (the LoRA adapters' arrays by name; empty unless
    ``finetune="lora"`` was kept).
    """

    name = "llm-two-tower"
    Config = TwoTowerConfig

    # ------------------------------------------------------------------ fit
    def _prepare(self, data: Dataset) -> None:
        """The LM item table of the whole catalogue (and the checks that need no training)."""
        from llm4rec.text.templates import item_template

        cfg = self.config
        self.device  # noqa: B018 - resolve the device now: a missing GPU fails before any encoding
        if cfg.loss == "mse" and data.rating is None:
            raise InputError(f"loss='mse' needs explicit ratings; dataset {data.name!r} has none",
                             expected="a dataset with a rating column, or another loss")
        self._table = None
        self.adapters_: dict[str, np.ndarray] = {}
        self.template_ = None if cfg.encoder is None else item_template(data, cfg.template)
        self._text = self._item_text(data)
        if cfg.encoder is not None:
            self.provenance_["encoder_fingerprint"] = self._frozen_encoder.fingerprint

    def _task(self, train: Dataset, data: Dataset) -> _Task:
        # user text (recent titles) of the training part: no validation target leaks into it
        return _Task(self.config, train, self._text, self._user_text(train) if self.config.user_text else None)

    def _validation(self, task: _Task, data: Dataset, stage: Stage | None) -> Any:
        """The ranking ``stage`` itself, or the RMSE of its targets' ratings (loss="mse")."""
        if stage is None or self.config.loss != "mse":
            return stage
        return _rmse_validation(task, data, stage)

    def _after_training(self, task: _Task, data: Dataset, stage: Stage | None, result: Any) -> None:
        import torch

        cfg = self.config
        if cfg.finetune == "lora":
            self._finetune(task, data, stage, result)
        if cfg.user_text and task.train is not data:  # scoring reads the whole fit set, its text too
            self.net_.user_text = torch.from_numpy(self._user_text(data)).to(self.device)
        del self._text
        self._table = None

    def _finetune(self, task: _Task, data: Dataset, stage: Stage | None, frozen: Any) -> None:
        """LoRA fine-tuning of the encoder from the frozen-encoder model; keeps whichever validates better.

        Adds ``train_summary_["lora"]`` (the fine-tuning summary, with ``kept``:
        False when the frozen-encoder model validated better and was kept) and,
        when kept, ``adapters_``.
        """
        from pathlib import Path

        from llm4rec.text import item_texts
        from llm4rec.training import Trainer, TrainingConfig

        cfg = self.config
        before = copy.deepcopy(self.net_.state_dict())
        lora = _LoraTask(cfg, task.train, task.text, task.user_text, self.net_, self._frozen_encoder,
                         item_texts(data, self.template_))
        valid = self._validation(lora, data, stage)
        options = TrainingConfig.from_config(cfg).model_copy(update={
            "epochs": cfg.lora_epochs, "lr": cfg.lora_lr, "batch_size": cfg.lora_batch,
            "run_dir": None if cfg.run_dir is None else str(Path(cfg.run_dir) / "lora")})
        record = {"model": self.name, "config": cfg.model_dump(mode="json")}
        run = getattr(self, "_run", None)  # the caller's callbacks see the fine-tuning epochs too
        tuned = Trainer(options, config=record, callbacks=run and run.callbacks).fit(lora, valid)
        self.net_.requires_grad_(True)
        lora.refresh()  # without validation the table still predates the last steps
        summary = tuned.summary()
        sign = 1 if valid is None or getattr(valid, "higher_is_better", True) else -1
        summary["kept"] = frozen.best_value is None or sign * tuned.best_value >= sign * frozen.best_value
        if summary["kept"]:
            self.adapters_ = lora.encoder.adapter_state()
            self.provenance_["tuned_encoder_fingerprint"] = self._item_encoder().fingerprint
        else:
            self.net_.load_state_dict(before)
        self.train_summary_["lora"] = summary

    @cached_property
    def _frozen_encoder(self) -> TextEncoder:
        """The text encoder on the model's device (the process-wide one on the CPU)."""
        from llm4rec.text import get_encoder, text_encoder

        if self.device.type == "cpu":
            return text_encoder(self.config.encoder)
        return get_encoder(self.config.encoder, device=self.config.device)

    def _item_encoder(self) -> TextEncoder:
        """What encodes item text as the catalogue was encoded: the tuned encoder after LoRA, else the frozen one."""
        if not self.adapters_:
            return self._frozen_encoder
        from llm4rec.text.tuning import TunedTextEncoder

        cfg = self.config
        return TunedTextEncoder(self._frozen_encoder, self.adapters_, rank=cfg.lora_rank, alpha=cfg.lora_alpha,
                                device=cfg.device)

    def _item_text(self, data: Dataset) -> np.ndarray | None:
        if self.config.encoder is None:
            return None
        from llm4rec.text import item_embeddings

        cfg = self.config
        emb = np.ascontiguousarray(item_embeddings(data, encoder=self._frozen_encoder, template=self.template_,
                                                   cache_dir=cfg.cache_dir, progress=cfg.progress), dtype=np.float32)
        if emb.shape[0] != data.n_items:
            raise InputError("item embeddings do not match the catalogue", value=emb.shape[0],
                             expected=f"{data.n_items} rows")
        return emb

    def _user_text(self, data: Dataset) -> np.ndarray:
        from llm4rec.text import user_embeddings

        cfg = self.config
        return np.ascontiguousarray(user_embeddings(data, encoder=self._frozen_encoder, cache_dir=cfg.cache_dir,
                                                    progress=cfg.progress), dtype=np.float32)

    # -------------------------------------------------------------- scoring
    def _item_table(self) -> torch.Tensor:
        """float[n_items, d] item-tower outputs on the model's device (computed once per fit, load or add)."""
        if getattr(self, "_table", None) is None:
            self.net_.eval()
            self._table = self.net_.item_table()
        return self._table

    def item_vectors(self) -> np.ndarray:
        """float32[n_items, d]: every item's representation v_i (the item tower's output; a user's score
        of item i is ``u . v_i``), cold and added items included."""
        self._check_fitted()
        return self._item_table().cpu().numpy().copy()

    def _score_histories(self, histories: Histories, items: np.ndarray | None) -> np.ndarray:
        """float32[B, n_items or C]: the user tower over each history's last ``max_history`` items (user text
        and rating bias for known users only), one matrix product per block of users."""
        recent = histories.recent(self.config.max_history)  # (B, L)
        return _rank(self.net_, self._item_table(), recent, histories.users, items)

    def _query_vectors(self, histories: Histories) -> np.ndarray:
        """float32[B, d]: the user tower's output u for each history, read as :meth:`_score_histories` reads
        it (user text for known users); the score of item i is ``u . v_i`` (plus the rating biases with
        ``loss="mse"``)."""
        import torch

        recent = histories.recent(self.config.max_history)  # (B, L)
        reps, net = self._item_table(), self.net_
        out = np.empty((len(histories), reps.shape[1]), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(histories), _SCORE_BLOCK):
                stop = start + _SCORE_BLOCK
                u = torch.from_numpy(np.asarray(histories.users[start:stop], dtype=np.int64)).to(reps.device)
                r = torch.from_numpy(np.asarray(recent[start:stop], dtype=np.int64)).to(reps.device)  # (B, L)
                out[start:start + len(u)] = net.users(u, reps[r.clamp(min=0)], r >= 0).cpu().numpy()
        return out

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Predicted ratings float32[n] of the pairs (users[k], items[k]) (loss="mse" only).

        ``users`` and ``items`` are dense indices (users known at fit time, by
        their fit history: as :meth:`score_indices`), e.g. the nonzeros of a
        stage's targets.
        """
        self._check_fitted()
        if self.config.loss != "mse":
            raise InputError("predict() gives ratings, which need a model trained with loss='mse'",
                             value=self.config.loss, expected="loss='mse'")
        users, items = self._user_indices(users), self._item_indices(items)
        if items.shape != users.shape:
            raise InputError("users and items must pair up", value=(len(users), len(items)),
                             expected="two arrays of one length")
        recent = self.fit_histories(users).recent(self.config.max_history)
        return _predict(self.net_, self._item_table(), recent, users, items)

    # -------------------------------------------------------- explanations
    def _explain(self, histories: Histories, item: int, top: int) -> dict[str, Any]:
        """The history items that contributed most to the score.

        The history part of the score decomposes exactly over the history:
        ``u . v_i = sum_j a_j (W (v_j + p_j)) . v_i + (W's bias, user text, rating biases) . v_i``,
        so history item j contributes ``a_j (W (v_j + p_j)) . v_i``. Each
        ``because`` entry adds ``attention`` (a_j) and ``similarity`` (cosine
        of v_j and v_i).
        """
        from llm4rec.models.explain import explanation

        hist, contrib, attention, sim = self._contributions(histories, item)
        out = explanation(self, histories, item, hist, contrib, top=top, reason="close (in text and in use) to")
        where = {int(i): j for j, i in enumerate(hist.tolist())}
        for entry in out["because"]:
            j = where[entry["item"]]
            entry.update(attention=round(float(attention[j]), 6), similarity=round(float(sim[j]), 6))
        return out

    def _contributions(self, histories: Histories, item: int) -> tuple[np.ndarray, ...]:
        """(history int64[h], contribution, attention, cosine similarity float[h]) of ``item`` for the one
        row of ``histories`` (its last ``max_history`` items, oldest first)."""
        import torch

        recent = histories.recent(self.config.max_history)[0]
        hist = recent[recent >= 0]  # (h,) oldest first
        if len(hist) == 0:
            return hist, *(np.zeros(0, dtype=np.float32) for _ in range(3))
        reps, net = self._item_table(), self.net_
        device = reps.device
        with torch.no_grad():
            h = reps[torch.from_numpy(hist).to(device)][None]  # (1, h, d)
            keyed = h + net.recency(torch.arange(len(hist) - 1, -1, -1, device=device))[None]  # (1, h, d)
            _, attention = net.pool(h, torch.ones(h.shape[:2], dtype=torch.bool, device=device))  # (1, h)
            target = reps[item]  # (d,)
            contrib = attention[0] * (keyed[0] @ _dense_weight(net.user_proj).T @ target)  # (h,)
            sim = torch.nn.functional.cosine_similarity(h[0], target[None], dim=-1)  # (h,)
        return hist, *(t.cpu().numpy() for t in (contrib, attention[0], sim))

    # ------------------------------------------------------------ new items
    def add_items(self, table: Any) -> TwoTower:
        """New items (or new text for known ids) through the item tower's text part; recommendable at once.

        ``table``: a polars or pandas frame with ``item_id`` and the columns
        of the item template. The text is encoded as the catalogue was (same
        template, PII scrubbing, cache; the LoRA-tuned encoder after
        ``finetune="lora"``). A new item has no ID part and no rating bias (as
        a cold item); a known id keeps its ID part and gets its text replaced.
        """
        import torch

        from llm4rec.text import encode_table

        self._check_fitted()
        cfg = self.config
        if cfg.encoder is None:
            raise InputError("this llm-two-tower has no text encoder (encoder=None), so it knows items only by "
                             "id and cannot rank new ones without retraining", value=cfg.encoder,
                             expected="a model fitted with a text encoder (e.g. encoder='minilm')")
        ids, attrs, vectors = encode_table(table, self.template_, self._item_encoder(), cache_dir=cfg.cache_dir,
                                           progress=cfg.progress)
        index, _ = self._grow_items(ids, attrs)
        self.net_.add_items(self.n_items_, torch.from_numpy(index).to(self.device), torch.from_numpy(vectors))
        self._table = None
        return self

    # ------------------------------------------------------------ save/load
    def _build(self, arrays: dict[str, np.ndarray] | None = None) -> TwoTowerNet:
        """The towers shaped like saved ``arrays`` (training builds them through its task)."""
        from llm4rec.nn.two_tower_net import TwoTowerNet

        cfg = self.config
        n_items = len(arrays["net__log_count"])
        if n_items != self.n_items_:
            raise ValueError(f"the item tower has {n_items} items, the vocabulary {self.n_items_}")
        text_dim = None if cfg.encoder is None else arrays["net__text"].shape[1]
        user_text_dim = arrays["net__user_text"].shape[1] if cfg.user_text else None
        return TwoTowerNet(_net_config(cfg, n_items, self.n_users_, text_dim, user_text_dim))

    def _extra_state(self) -> dict[str, np.ndarray]:
        state = {} if self.template_ is None else {"template": np.asarray(self.template_)}
        return {**state, **{_LORA + name: array for name, array in self.adapters_.items()}}

    def _set_extra_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.template_ = None if self.config.encoder is None else str(arrays["template"])
        self.adapters_ = {k[len(_LORA):]: np.asarray(v, dtype=np.float32) for k, v in arrays.items()
                          if k.startswith(_LORA)}
        self._table = None


def _dense_weight(linear: Any) -> torch.Tensor:
    """A linear layer's float weight, also for torch's int8 dynamically quantised linear (a compressed bundle)."""
    weight = linear.weight
    return weight().dequantize() if callable(weight) else weight


def _rmse_validation(task: _Task, data: Dataset, stage: Stage) -> Any:
    """RMSE of the held-out ratings of ``stage`` (lower is better).

    The truth is the stage's own ``target_ratings``; a hold-out carved from
    ``data`` (which has none) reads its targets' ratings from ``data``.
    """
    from llm4rec.training import Validation

    users, items = stage.targets.nonzero()
    if stage.target_ratings is not None:
        truth = np.asarray(stage.target_ratings[users, items]).ravel()
    elif stage.fit is not data:  # a hold-out: its targets are interactions of data
        truth = np.asarray(data.matrix("rating")[users, items]).ravel()
    else:
        raise InputError("loss='mse' validates on ratings, and the validation stage has none", value=stage.name,
                         expected="a stage built by make_split on a dataset with ratings (Stage.target_ratings)")

    def rmse() -> float:
        return float(np.sqrt(np.mean((task.predict(users, items) - truth) ** 2)))

    return Validation("valid_RMSE", rmse, higher_is_better=False)

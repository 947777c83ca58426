"""``llm-two-tower``: a hybrid two-tower recommender over frozen language-model item embeddings.

Item tower (every item, cold ones included)::

    t_i = E_i + MLP(E_i)                             # E_i: frozen LM embedding of the item text; the MLP's
                                                     # last layer starts at 0, so training starts from the
                                                     # LM's own similarity (with dim=d: t_i = MLP(E_i))
    v_i = t_i + seen_i * sigmoid(gate([t_i, log(1 + n_i)])) * id_i
                                                     # ID part: learned, gated by the text and the item's
                                                     # training count n_i; 0 for items unseen in training,
                                                     # dropped at random while training (id_dropout)

User tower (inductive: any history works, no per-user weights)::

    a_j = softmax_j(w . (v_j + p_j))                 # attention over the last L history items
                                                     # (uniform with pooling="mean"); p_j: recency
    u   = W (sum_j a_j (v_j + p_j)) [+ U e_user]     # e_user: LM embedding of the user text (optional);
                                                     # W starts as 10 I (a softmax temperature of 0.1)

Score ``s(u, i) = u . v_i``; one ``(B, d) @ (d, I)`` matrix product scores a
block of users against every item. With ``loss="mse"`` the model predicts
explicit ratings, ``mu + b_u + b_i + u . v_i`` (see :meth:`TwoTower.predict`).

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
set as history. ``fit(data, valid=stage)`` validates on a given stage of the
same fit set instead (e.g. a protocol's ``valid`` stage when tuning).

Encoder fine-tuning (``finetune="lora"``): after that training, LoRA
adapters on the text encoder's attention (:class:`~llm4rec.text.tuning.LoraTextEncoder`)
train through the (now fixed) towers, end to end, for ``lora_epochs`` x
``lora_steps`` small steps; the item table is then re-encoded with the tuned
encoder. (Training the towers too, with a fresh optimiser and small
batches, undid much of what they had learned.) The
fine-tuned model is kept only if it validates better than the frozen one.

Saved state: the module's weights and buffers (the LM item embeddings
included, so ``load`` scores identically without re-encoding) and each
user's last L items, as ``.npz`` arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
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

    from llm4rec.data import Dataset, Stage

__all__ = ["TwoTower", "TwoTowerConfig"]

#: users scored per matrix product at inference
_SCORE_BLOCK = 1024
#: initial scale of the user tower's output (inverse softmax temperature over LM cosine similarities)
_INIT_SCALE = 10.0
#: representation size of a model without text when ``dim`` is None
_ID_ONLY_DIM = 64


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


def _rep_dim(cfg: TwoTowerConfig, text: np.ndarray | None) -> int:
    if cfg.dim is not None:
        return cfg.dim
    return _ID_ONLY_DIM if text is None else text.shape[1]


def _build_net(cfg: TwoTowerConfig, text: np.ndarray | None, user_text: np.ndarray | None,
               log_count: np.ndarray, n_users: int, rating_mean: float) -> torch.nn.Module:
    """The towers as one torch module (built by the trainer after seeding, or by ``load``)."""
    import torch
    from torch import nn

    class TwoTowerNet(nn.Module):
        """Item and user towers; every parametric layer is batch-first so Opacus sees examples."""

        def __init__(self) -> None:
            super().__init__()
            n_items, d = len(log_count), _rep_dim(cfg, text)
            self.register_buffer("log_count", torch.as_tensor(log_count, dtype=torch.float32))  # (I,)
            self.register_buffer("seen", (self.log_count > 0).float())  # (I,) 1 = has training interactions
            self.register_buffer("text", None if text is None else torch.as_tensor(text))  # (I, T) frozen
            if text is not None:
                width = text.shape[1]
                layers: list[nn.Module] = [nn.Dropout(cfg.dropout)]
                if cfg.hidden:
                    layers += [nn.Linear(width, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout)]
                    width = cfg.hidden
                self.proj = nn.Sequential(*layers, nn.Linear(width, d))
                if cfg.dim is None:  # residual: training starts from the LM's own similarity
                    nn.init.zeros_(self.proj[-1].weight)
                    nn.init.zeros_(self.proj[-1].bias)
            if cfg.id_embeddings:
                self.ids = nn.Embedding(n_items, d)
                nn.init.zeros_(self.ids.weight)  # training starts from the text tower alone
                self.gate = nn.Linear(d + 1, 1) if text is not None else None
            self.recency = nn.Embedding(cfg.max_history, d)
            nn.init.normal_(self.recency.weight, std=0.01)
            self.attn = nn.Linear(d, 1) if cfg.pooling == "attention" else None
            self.user_proj = nn.Linear(d, d)
            with torch.no_grad():  # start as the (scaled) mean of the history items
                self.user_proj.weight.copy_(torch.eye(d) * (1.0 if cfg.loss == "mse" else _INIT_SCALE))
                self.user_proj.bias.zero_()
            self.register_buffer("user_text", None if user_text is None else torch.as_tensor(user_text))  # (U, T)
            if user_text is not None:
                self.user_text_proj = nn.Linear(user_text.shape[1], d)
            if cfg.loss == "mse":
                self.item_bias = nn.Embedding(n_items, 1)
                self.user_bias = nn.Embedding(n_users, 1)
                nn.init.zeros_(self.item_bias.weight)
                nn.init.zeros_(self.user_bias.weight)
                self.register_buffer("rating_mean", torch.tensor(float(rating_mean)))

        def items(self, index: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
            """int64[...] item indices -> float[..., d] representations.

            ``text`` float[..., T] replaces the stored LM embeddings of the items (LoRA fine-tuning).
            """
            if self.text is None:
                return self.ids(index)
            text = self.text[index] if text is None else text  # (..., T)
            rep = self.proj(text) + (text if cfg.dim is None else 0.0)  # (..., d)
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
            """float[B, d] user representations from history reps float[B, L, d]."""
            pooled, _ = self.pool(hist_reps, mask)
            rep = self.user_proj(pooled)
            if self.user_text is not None:
                rep = rep + self.user_text_proj(self.user_text[users])
            return rep

        def forward(self, users: torch.Tensor, history: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                    neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """(float[B, d] users, float[B, d] positives, float[B or 1, N, d] negatives) of a batch.

            Under DP (per-example negatives) every example's items go through
            the item tower in one batch-first call, which keeps Opacus'
            per-example gradients exact; otherwise each distinct item of the
            batch is computed once.
            """
            b, n_hist = history.shape
            if self.per_example:
                reps = self.items(torch.cat([history, pos[:, None], neg], dim=1))  # (B, L + 1 + N, d)
                return self.users(users, reps[:, :n_hist], mask), reps[:, n_hist], reps[:, n_hist + 1:]
            flat = torch.cat([history.reshape(-1), pos, neg.reshape(-1)])
            distinct, inverse = torch.unique(flat, return_inverse=True)
            reps = self.items(distinct)[inverse]  # (B L + B + |neg|, d)
            hist = reps[: b * n_hist].view(b, n_hist, -1)
            return (self.users(users, hist, mask), reps[b * n_hist: b * n_hist + b],
                    reps[b * n_hist + b:].view(*neg.shape, reps.shape[-1]))

        def scores(self, users: torch.Tensor, user_rep: torch.Tensor, pos_rep: torch.Tensor, neg_rep: torch.Tensor,
                   pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(float[B] positive scores, float[B, N] negative scores); ratings (biases added) with loss="mse"."""
            s_pos = (user_rep * pos_rep).sum(-1)  # (B,)
            if neg_rep.shape[0] == user_rep.shape[0]:
                s_neg = torch.einsum("bd,bnd->bn", user_rep, neg_rep)
            else:
                s_neg = user_rep @ neg_rep[0].T  # shared negatives: (B, d) @ (d, N)
            if cfg.loss == "mse":
                s_pos = s_pos + self.rating_mean + self.user_bias(users)[:, 0] + self.item_bias(pos)[:, 0]
            return s_pos, s_neg

    net = TwoTowerNet()
    net.per_example = cfg.dp_noise_multiplier > 0
    return net


class _Task:
    """The :class:`~llm4rec.training.TrainingTask` of the two-tower model on one training set."""

    def __init__(self, model: TwoTower, train: Dataset, text: np.ndarray | None,
                 user_text: np.ndarray | None) -> None:
        cfg = model.config
        self.model, self.cfg, self.text, self.user_text = model, cfg, text, user_text
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
        self.net: torch.nn.Module | None = None
        self._reps: np.ndarray | None = None  # item reps of the current weights (validation)

    def build(self) -> torch.nn.Module:
        self.net = _build_net(self.cfg, self.text, self.user_text, self.log_count, self.train.n_users,
                              self.rating_mean)
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
        shape = (len(rows), self.n_negatives) if self.net.per_example else (1, self.n_negatives)
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

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Validation scores with the current weights and the training histories."""
        if self._reps is None:
            self._reps = _all_item_reps(self.net)
        return _score(self.net, self.history, np.asarray(users, dtype=np.int64), items, self.cfg, self._reps)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings float32[n] of pairs with the current weights (rating validation)."""
        if self._reps is None:
            self._reps = _all_item_reps(self.net)
        return _predict(self.net, self.history, users, items, self._reps)


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

    def __init__(self, model: TwoTower, train: Dataset, text: np.ndarray, user_text: np.ndarray | None,
                 net: torch.nn.Module, texts: list[str]) -> None:
        super().__init__(model, train, text, user_text)
        self.net, self.texts = net, texts
        self.n_examples = self.cfg.lora_steps * self.cfg.lora_batch
        self.n_negatives = min(self.n_negatives, self.cfg.lora_negatives)
        self.encoder: torch.nn.Module | None = None
        self.stale = False  # the stored table predates the latest adapter step

    def build(self) -> torch.nn.Module:
        from torch import nn

        from llm4rec.text import get_encoder
        from llm4rec.text.tuning import LoraTextEncoder

        self.encoder = LoraTextEncoder(get_encoder(self.cfg.encoder), rank=self.cfg.lora_rank,
                                       alpha=self.cfg.lora_alpha)
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


class TwoTower(Recommender):
    """Hybrid two-tower model over frozen LM item embeddings (see the module docstring)."""

    name = "llm-two-tower"
    Config = TwoTowerConfig

    def fit(self, data: Dataset, valid: Stage | None = None) -> TwoTower:
        """Fit on ``data``; validate on the ``valid`` stage (its fit set must be ``data``) or on a hold-out."""
        if valid is not None and valid.fit.fingerprint != getattr(data, "fingerprint", None):
            raise InputError("the validation stage was built on another fit set", value=valid.name,
                             expected="a stage whose .fit is the dataset being fitted")
        self._valid_stage = valid
        try:
            return super().fit(data)
        finally:
            del self._valid_stage

    def _fit(self, data: Dataset) -> None:
        import torch

        from llm4rec.training import Trainer, TrainingConfig, holdout

        cfg = self.config
        if cfg.loss == "mse" and data.rating is None:
            raise InputError(f"loss='mse' needs explicit ratings; dataset {data.name!r} has none",
                             expected="a dataset with a rating column, or another loss")
        text = self._item_text(data)
        stage = self._valid_stage
        train = data
        if stage is None:
            train, stage = holdout(data, cfg.valid, seed=cfg.seed)
        # user text (recent titles) of the training part: no validation target leaks into it
        task = _Task(self, train, text, self._user_text(train) if cfg.user_text else None)
        valid = _validation(task, data, stage)
        run = {"model": self.name, "config": cfg.model_dump(mode="json")}
        result = Trainer(TrainingConfig.from_config(cfg), config=run).fit(task, valid)
        self.net_ = result.module
        self.train_summary_ = result.summary()
        if cfg.finetune == "lora":
            self._finetune(task, data, stage, run, result)
        if cfg.user_text and train is not data:  # scoring reads the whole fit set, its text too
            self.net_.user_text = torch.from_numpy(self._user_text(data))
        self.history_items_ = data.recent_items(cfg.max_history)  # scoring reads the whole fit set
        self.training_history_ = result.history
        self._item_reps = None
        if cfg.run_dir is not None:
            self.save(Path(cfg.run_dir) / "model")

    def _finetune(self, task: _Task, data: Dataset, stage: Stage | None, run: dict[str, Any], frozen: Any) -> None:
        """LoRA fine-tuning of the encoder from the frozen-encoder model; keeps whichever validates better.

        Adds ``train_summary_["lora"]`` (the fine-tuning summary, with ``kept``:
        False when the frozen-encoder model validated better and was kept).
        """
        import copy

        from llm4rec.text import item_texts
        from llm4rec.training import Trainer, TrainingConfig

        cfg = self.config
        before = copy.deepcopy(self.net_.state_dict())
        lora = _LoraTask(self, task.train, task.text, task.user_text, self.net_, item_texts(data, cfg.template))
        valid = _validation(lora, data, stage)
        options = TrainingConfig.from_config(cfg).model_copy(update={
            "epochs": cfg.lora_epochs, "lr": cfg.lora_lr, "batch_size": cfg.lora_batch,
            "run_dir": None if cfg.run_dir is None else str(Path(cfg.run_dir) / "lora")})
        tuned = Trainer(options, config=run).fit(lora, valid)
        self.net_.requires_grad_(True)
        lora.refresh()  # without validation the table still predates the last steps
        summary = tuned.summary()
        sign = 1 if valid is None or getattr(valid, "higher_is_better", True) else -1
        summary["kept"] = frozen.best_value is None or sign * tuned.best_value >= sign * frozen.best_value
        if not summary["kept"]:
            self.net_.load_state_dict(before)
        self.train_summary_["lora"] = summary

    def _item_text(self, data: Dataset) -> np.ndarray | None:
        if self.config.encoder is None:
            return None
        from llm4rec.text import item_embeddings

        emb = np.ascontiguousarray(item_embeddings(data, encoder=self.config.encoder, template=self.config.template,
                                                   cache_dir=self.config.cache_dir, progress=self.config.progress),
                                   dtype=np.float32)
        if emb.shape[0] != data.n_items:
            raise InputError("item embeddings do not match the catalogue", value=emb.shape[0],
                             expected=f"{data.n_items} rows")
        return emb

    def _user_text(self, data: Dataset) -> np.ndarray:
        from llm4rec.text import user_embeddings

        return np.ascontiguousarray(user_embeddings(data, encoder=self.config.encoder,
                                                    cache_dir=self.config.cache_dir, progress=self.config.progress),
                                    dtype=np.float32)

    # -------------------------------------------------------------- scoring
    def _reps(self) -> np.ndarray:
        if getattr(self, "_item_reps", None) is None:
            self._item_reps = _all_item_reps(self.net_)
        return self._item_reps

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        return _score(self.net_, self.history_items_, users, None, self.config, self._reps())

    def _score_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return _score(self.net_, self.history_items_, users, items, self.config, self._reps())

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Predicted ratings float32[n] of the pairs (users[k], items[k]) (loss="mse" only)."""
        self._check_fitted()
        if self.config.loss != "mse":
            raise InputError("predict() gives ratings, which need a model trained with loss='mse'",
                             value=self.config.loss, expected="loss='mse'")
        users = self._users(users)
        items = np.atleast_1d(np.asarray(items, dtype=np.int64))
        if items.shape != users.shape:
            raise InputError("users and items must pair up", value=(len(users), len(items)),
                             expected="two arrays of one length")
        return _predict(self.net_, self.history_items_, users, items, self._reps())

    # -------------------------------------------------------- explanations
    def explain(self, user: int, item: int, top: int = 3) -> dict[str, Any]:
        """Why ``item`` scores as it does for ``user``: the history items that contributed most.

        The history part of the score decomposes exactly over the history:
        ``u . v_i = sum_j a_j (W (v_j + p_j)) . v_i + (W's bias, user text, rating biases) . v_i``,
        so history item j contributes ``a_j (W (v_j + p_j)) . v_i``. Returns
        :func:`~llm4rec.models.explain.explanation`'s dict (``user``, ``item``,
        ``label``, ``score``, ``because``: the ``top`` largest positive
        contributions as ``{"item", "label", "weight"}``, ``text``), each
        ``because`` entry adding ``attention`` (a_j) and ``similarity`` (cosine
        of v_j and v_i).
        """
        from llm4rec.models.explain import explanation

        self._check_fitted()
        user = int(self._users([user])[0])
        item = int(item)
        if not 0 <= item < self.n_items_:
            raise InputError("item index out of range", value=item, expected=f"0..{self.n_items_ - 1}")
        hist, contrib, attention, sim = self._contributions(user, item)
        out = explanation(self, user, item, hist, contrib, top=top, reason="close (in text and in use) to")
        where = {int(i): j for j, i in enumerate(hist.tolist())}
        for entry in out["because"]:
            j = where[entry["item"]]
            entry.update(attention=round(float(attention[j]), 6), similarity=round(float(sim[j]), 6))
        return out

    def _contributions(self, user: int, item: int) -> tuple[np.ndarray, ...]:
        """(history int64[h], contribution, attention, cosine similarity float[h]) of ``item`` for ``user``."""
        import torch

        hist = self.history_items_[user]
        hist = hist[hist >= 0]  # (h,) oldest first
        reps = torch.from_numpy(self._reps())
        net = self.net_
        with torch.no_grad():
            h = reps[torch.from_numpy(hist)][None]  # (1, h, d)
            keyed = h + net.recency(torch.arange(len(hist) - 1, -1, -1))[None]  # (1, h, d)
            _, attention = net.pool(h, torch.ones(h.shape[:2], dtype=torch.bool))  # (1, h)
            target = reps[item]  # (d,)
            contrib = attention[0] * (keyed[0] @ net.user_proj.weight.T @ target)  # (h,)
            sim = torch.nn.functional.cosine_similarity(h[0], target[None], dim=-1)  # (h,)
        return hist, contrib.numpy(), attention[0].numpy(), sim.numpy()

    # ------------------------------------------------------------ save/load
    def _state(self) -> dict[str, np.ndarray]:
        return {"history_items": self.history_items_, **module_arrays(self.net_)}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        weights = module_weights(arrays)
        cfg = self.config
        text = arrays.get("net__text")
        user_text = arrays.get("net__user_text")
        self.net_ = _build_net(cfg, None if text is None else np.array(text),
                               None if user_text is None else np.array(user_text),
                               np.array(arrays["net__log_count"]), self.n_users_,
                               float(arrays["net__rating_mean"]) if "net__rating_mean" in arrays else 0.0)
        self.net_.load_state_dict(weights)
        self.net_.eval()
        self.history_items_ = np.array(arrays["history_items"])
        self._item_reps = None


def _all_item_reps(net: torch.nn.Module, block: int = 8192) -> np.ndarray:
    """float32[n_items, d] item-tower outputs in eval mode."""
    import torch

    n_items = len(net.log_count)
    net.eval()
    with torch.no_grad():
        return torch.cat([net.items(torch.arange(s, min(n_items, s + block)))
                          for s in range(0, n_items, block)]).numpy()


def _user_reps(net: torch.nn.Module, histories: np.ndarray, users: torch.Tensor,
               reps: torch.Tensor | None = None) -> torch.Tensor:
    """float[B, d] user representations from stored histories (int64[U, L], -1 padded)."""
    import torch

    hist = torch.from_numpy(histories[users.numpy()])  # (B, L)
    mask = hist >= 0
    index = hist.clamp(min=0)
    hist_reps = net.items(index) if reps is None else reps[index]  # (B, L, d)
    return net.users(users, hist_reps, mask)


def _score(net: torch.nn.Module, histories: np.ndarray, users: np.ndarray, items: np.ndarray | None,
           cfg: TwoTowerConfig, reps: np.ndarray | None = None) -> np.ndarray:
    """float32[len(users), n_items or len(items)]: one (B, d) @ (d, I) product per block of users."""
    import torch

    net.eval()
    with torch.no_grad():
        all_reps = torch.from_numpy(_all_item_reps(net) if reps is None else reps)  # (I, d)
        cand = all_reps if items is None else all_reps[torch.from_numpy(np.asarray(items, dtype=np.int64))]
        cand_index = torch.arange(len(all_reps)) if items is None else torch.from_numpy(
            np.asarray(items, dtype=np.int64))
        out = np.empty((len(users), len(cand)), dtype=np.float32)
        for start in range(0, len(users), _SCORE_BLOCK):
            u = torch.from_numpy(np.asarray(users[start:start + _SCORE_BLOCK], dtype=np.int64))
            user_rep = _user_reps(net, histories, u, all_reps)  # (B, d)
            s = user_rep @ cand.T  # (B, C)
            if cfg.loss == "mse":
                s = s + net.rating_mean + net.user_bias(u) + net.item_bias(cand_index)[:, 0][None]
            out[start:start + len(u)] = s.numpy()
    return out


def _predict(net: torch.nn.Module, histories: np.ndarray, users: np.ndarray, items: np.ndarray,
             reps: np.ndarray) -> np.ndarray:
    """float32[n] rating predictions of the pairs (users[k], items[k]), in blocks."""
    import torch

    all_reps = torch.from_numpy(reps)
    out = np.empty(len(users), dtype=np.float32)
    net.eval()
    with torch.no_grad():
        for start in range(0, len(users), _SCORE_BLOCK):
            u = torch.from_numpy(np.asarray(users[start:start + _SCORE_BLOCK], dtype=np.int64))
            i = torch.from_numpy(np.asarray(items[start:start + _SCORE_BLOCK], dtype=np.int64))
            user_rep = _user_reps(net, histories, u, all_reps)  # (B, d)
            out[start:start + len(u)] = net.scores(u, user_rep, all_reps[i], all_reps[:0][None], i)[0].numpy()
    return out


def _validation(task: _Task, data: Dataset, stage: Stage | None) -> Any:
    """What the trainer validates ``task`` on: the ranking ``stage`` itself, or its ratings' RMSE (loss="mse")."""
    return stage if stage is None or task.cfg.loss != "mse" else _rmse_validation(task, data, stage)


def _rmse_validation(task: _Task, data: Dataset, stage: Stage) -> Any:
    """RMSE of the held-out ratings of ``stage`` (lower is better)."""
    from llm4rec.training import Validation

    users, items = stage.targets.nonzero()
    truth = np.asarray(data.matrix("rating")[users, items]).ravel()

    def rmse() -> float:
        return float(np.sqrt(np.mean((task.predict(users, items) - truth) ** 2)))

    return Validation("valid_RMSE", rmse, higher_is_better=False)

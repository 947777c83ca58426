"""``sasrec``: causal self-attention over the user's item sequence (Kang & McAuley, ICDM 2018).

Trained by default with full softmax cross-entropy over every item with
training interactions at every position (items only listed in the catalogue,
such as P-COLD's cold items, are never trained as negatives), the variant found strongest by the RecSys 2023 re-evaluations
(Klenitskiy & Vasilev, "Turning Dross Into Gold Loss"); BCE with one
sampled negative per position (the original paper) and sampled softmax over
shared negatives are options. The network is
:class:`~llm4rec.nn.sasrec_net.SASRecNet`::

    x_t = E[i_t] * sqrt(d) + P[t]                    # item + learned position embedding, t = 1..L
    h   = Blocks(x)                                  # pre-LayerNorm causal self-attention + feed-forward
    s(h, j) = h_L . E[j]                             # tied input/output item embeddings

One training example per user: the last ``max_len + 1`` items of the fit
sequence, every position predicting the next item. Scoring reads the last
``max_len`` items of a history (for a known user, the whole fit sequence),
so a P-LOO target is the next item after it. Early stopping: the shared
:class:`~llm4rec.training.Trainer` on NDCG@10 of each user's last fit item
(``valid``), or on a given validation stage. With ``contrastive > 0`` an
InfoNCE loss between two augmented views (crop / mask / reorder, one drawn
per view) of each training sequence is added (CL4SRec, Xie et al. ICDE 2022).

Items never seen in training keep their random initial embeddings: an
ID-only model cannot rank cold items (``sasrec-text`` can, and takes new
items through :meth:`SASRecText.add_items`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from llm4rec.data.augment import augment_histories, parse_augmentations
from llm4rec.errors import InputError
from llm4rec.models.base import ModelConfig, Recommender
from llm4rec.models.neural import NeuralRecommender
from llm4rec.training.config import TrainingConfig

if TYPE_CHECKING:
    import torch

    from llm4rec.data import Dataset
    from llm4rec.models.history import Histories
    from llm4rec.nn.sasrec_net import SASRecNet, SASRecNetConfig

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
    loss: Literal["ce", "bce", "softmax"] = Field("ce", description="'ce': full softmax over the items with "
                                                                    "training interactions; 'bce': "
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
        groups: (start, stop, width) runs of rows whose sequences are at most ``width`` long, read
            apart (``inputs[start:stop, -width:]``) so the network skips most of the padding; one
            run of the whole batch under DP.
        views: two int64[B, L'] augmented copies of ``inputs`` (contrastive loss), or None.
    """

    inputs: torch.Tensor
    target: torch.Tensor
    neg: torch.Tensor | None
    groups: tuple[tuple[int, int, int], ...]
    views: tuple[torch.Tensor, torch.Tensor] | None = None

    def to(self, device: torch.device) -> SequenceBatch:
        """The batch on ``device``."""
        return SequenceBatch(self.inputs.to(device), self.target.to(device),
                             None if self.neg is None else self.neg.to(device), self.groups,
                             None if self.views is None else (self.views[0].to(device), self.views[1].to(device)))


@dataclass
class _NetInputs:
    """What the network to train is built from (held on the model while it fits)."""

    text: np.ndarray | None = None  # float32[n_items + 1, T] LM item embeddings, row 0 (padding) zeros
    seen: np.ndarray | None = None  # float32[n_items + 1]: 1 = the item has training interactions
    init: dict[str, torch.Tensor] | None = None  # transfer (init_from): the source model's weights


class _Task:
    """The :class:`~llm4rec.training.TrainingTask` of SASRec on one training set."""

    def __init__(self, model: SASRec, train: Dataset) -> None:
        import torch

        cfg = model.config
        self.model, self.cfg = model, cfg
        window = train.recent_items(cfg.max_len + 1)  # (U, L + 1), -1 padded on the left
        self.examples = np.flatnonzero((window >= 0).sum(1) >= 2)  # users with one next-item pair at least
        self.n_examples = len(self.examples)
        self.window = window[self.examples]
        self.history = train.recent_items(cfg.max_len)  # (U, L) validation scoring
        # negatives (sampled, or the full softmax's) are the items with training interactions only, so items
        # the fit set merely lists (P-COLD's cold items) are not trained as negatives: training is the same
        # as on a catalogue without them, into which they are added later (add_items)
        self.pool = train.interacted_items
        self.full_catalogue = len(self.pool) == train.n_items
        slot = np.full(train.n_items, -1, dtype=np.int64)
        slot[self.pool] = np.arange(len(self.pool))
        self.pool_t, self.slot_t = torch.from_numpy(self.pool.copy()), torch.from_numpy(slot)  # int64[P], [I]
        self.net: SASRecNet | None = None

    def build(self) -> SASRecNet:
        self.net = self.model._build()
        return self.net

    def batch(self, index: np.ndarray, rng: np.random.Generator) -> SequenceBatch:
        import torch

        window = self.window[index]  # (B, L + 1)
        inputs, target = window[:, :-1], window[:, 1:]
        target = np.where(inputs >= 0, target, -1)  # a padded input predicts nothing
        lengths = (inputs >= 0).sum(1)  # (B,) right-aligned: the real items are the last ones
        if self.cfg.dp_noise_multiplier > 0:  # Opacus follows one forward pass per step
            groups = ((0, len(index), int(lengths.max())),)
        else:  # shortest first, so that the batch splits into runs of about one length
            order = np.argsort(lengths, kind="stable")
            inputs, target, lengths = inputs[order], target[order], lengths[order]
            groups = _length_groups(lengths)
        first = inputs.shape[1] - int(lengths.max())  # drop columns that are padding for the whole batch
        inputs, target = inputs[:, first:], target[:, first:]
        neg = None
        if self.cfg.loss == "bce":
            neg = torch.from_numpy(self.pool[rng.integers(len(self.pool), size=target.shape)])
        elif self.cfg.loss == "softmax":
            neg = torch.from_numpy(self.pool[rng.integers(len(self.pool), size=self.cfg.negatives)])
        views = None
        if self.cfg.contrastive > 0:
            views = (self._view(inputs, rng), self._view(inputs, rng))
        return SequenceBatch(torch.from_numpy(inputs + 1), torch.from_numpy(target), neg, groups, views)

    def _view(self, inputs: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """int64[B, L'] one augmented copy of ``inputs`` (-1 padded) as model input (0 = padding)."""
        import torch

        slots, real = augment_histories(inputs, inputs >= 0, self.cfg.augment.split(","), self.cfg.augment_rate,
                                        rng, one_of=True)
        slots = np.where(real, slots + 1, 0)
        return torch.from_numpy(slots[:, int(np.argmax(real.any(0))):])

    def loss(self, module: SASRecNet, batch: SequenceBatch) -> torch.Tensor:
        import torch

        from llm4rec.nn import LOSSES, full_softmax_loss

        valid = batch.target >= 0
        # (P, d): the states of the positions with a next item, in the row-major order of ``valid``: each
        # group is read only as wide as its longest sequence, where its every next-item position lies
        h = torch.cat([module(batch.inputs[a:b, -w:])[0][valid[a:b, -w:]] for a, b, w in batch.groups])
        target = batch.target[valid]  # (P,)
        table = module.item_table()  # (I, d)
        extra = 0.0
        if batch.views is not None:
            extra = self.cfg.contrastive * _contrastive(module, batch.views, self.cfg.cl_temperature)
        if self.cfg.loss == "ce":
            if self.full_catalogue:
                return full_softmax_loss(h, table, target) + extra
            column = self.slot_t.to(h.device)[target]  # (P,) the target's column among the pool
            return full_softmax_loss(h, table[self.pool_t.to(h.device)], column) + extra
        s_pos = (h * table[target]).sum(-1)  # (P,)
        if self.cfg.loss == "bce":
            neg = batch.neg[valid]  # (P,)
            s_neg = (h * table[neg]).sum(-1, keepdim=True)  # (P, 1)
            return LOSSES["bce"](s_pos, s_neg, (neg != target)[:, None]) + extra
        s_neg = h @ table[batch.neg].T  # (P, N)
        return LOSSES["softmax"](s_pos, s_neg, batch.neg[None, :] != target[:, None]) + extra

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        return _score(self.net, self.history[np.asarray(users, dtype=np.int64)], items, self.model.device)


def _length_groups(lengths: np.ndarray) -> tuple[tuple[int, int, int], ...]:
    """(start, stop, width) runs of ``lengths`` (int[B], ascending) that share a power-of-two size class
    (up to 4, 5-8, 9-16...); ``width`` is the longest length of the run.

    A run costs one pass through the network, and no sequence longer than 4
    is padded to more than twice its length: a batch of Amazon Beauty holds
    5 runs and 1/6 of the positions of one block padded to its longest."""
    size = np.ceil(np.log2(np.maximum(lengths, 4))).astype(np.int64)  # (B,) size class
    stops = np.append(np.flatnonzero(np.diff(size)) + 1, len(lengths))  # (G,)
    starts = np.append(0, stops[:-1])
    widths = lengths[stops - 1]  # ascending: a run's longest is its last
    return tuple(zip(starts.tolist(), stops.tolist(), widths.tolist()))


def _contrastive(module: SASRecNet, views: tuple[torch.Tensor, torch.Tensor], temperature: float) -> torch.Tensor:
    """InfoNCE between two views of B sequences: each view's last state must pick out its twin among the
    other 2B - 2 views of the batch (NT-Xent over dot products, as in CL4SRec)."""
    import torch
    import torch.nn.functional as F

    z = torch.cat([module(v)[0][:, -1] for v in views])  # (2B, d); views are right-aligned
    b = len(z) // 2
    sim = (z @ z.T) / temperature  # (2B, 2B)
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    twin = torch.cat([torch.arange(b, 2 * b, device=z.device), torch.arange(b, device=z.device)])
    return F.cross_entropy(sim, twin)


def _score(net: SASRecNet, recent: np.ndarray, items: np.ndarray | None, device: torch.device) -> np.ndarray:
    """float32[B, n_items or len(items)]: the last state of each history (``recent``: int64[B, L] item
    indices, right-aligned, -1 padded) against the item table, computed on ``device``."""
    import torch

    with torch.no_grad():
        table = net.item_table()  # (I, d)
        cand = table if items is None else table[torch.as_tensor(np.asarray(items, dtype=np.int64), device=device)]
        out = np.empty((len(recent), len(cand)), dtype=np.float32)
        for rows, states in _read(net, recent, device):
            out[rows] = (states @ cand.T).cpu().numpy()
    return out


def _last_states(net: SASRecNet, recent: np.ndarray, device: torch.device) -> np.ndarray:
    """float32[B, d]: the last state of each history (``recent`` as in :func:`_score`), whose dot product
    with ``net.item_table()`` is the score (the query vector of :func:`llm4rec.models.vectors.vector_view`)."""
    import torch

    with torch.no_grad():
        out = np.empty((len(recent), net.config.dim), dtype=np.float32)
        for rows, states in _read(net, recent, device):
            out[rows] = states.cpu().numpy()
    return out


def _read(net: SASRecNet, recent: np.ndarray, device: torch.device) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(rows int64[b], their last states float[b, d]) for blocks of at most ``_SCORE_BLOCK`` rows of
    ``recent`` (as in :func:`_score`; call without gradients).

    A history is read only as wide as its power-of-two size class (up to 4
    items, 5-8, 9-16... and the whole L), which skips most of the padding of
    short histories; the width depends on the history alone, not on the
    other rows of the call, and the states equal a full-width read's up to
    rounding.
    """
    import torch

    n = recent.shape[1]
    lengths = (recent >= 0).sum(1)  # (B,)
    width = np.minimum(np.exp2(np.ceil(np.log2(np.maximum(lengths, 4)))), n).astype(np.int64)  # (B,) class
    order = np.argsort(width, kind="stable")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(width[order])) + 1, [len(order)]]).tolist()  # classes
    for start, stop in zip(bounds[:-1], bounds[1:]):
        for first in range(start, stop, _SCORE_BLOCK):
            rows = order[first:min(stop, first + _SCORE_BLOCK)]
            w = int(width[rows[0]])
            states, _ = net(torch.as_tensor(recent[rows, n - w:] + 1, device=device))  # (b, w, d); 0 = padding
            yield rows, states[:, -1]


class SASRec(NeuralRecommender):
    """Causal self-attention sequential recommender (see the module docstring).

    A history is all the model reads about a user (its last ``max_len``
    items), so a known user scores exactly like their fit history and any new
    history scores without refitting.
    """

    name = "sasrec"
    Config = SASRecConfig

    def _fit(self, data: Dataset) -> None:
        self._inputs = _NetInputs(init=self._source_weights())
        try:
            self._check_settings()
            if self.config.epochs > 0:
                super()._fit(data)
                return
            self._prepare(data)  # zero-shot transfer: the source's weights as they are
            self._inputs.seen = _seen(data)
            self.net_ = self._build().to(self.device).eval()
            self.train_summary_ = {"epochs_run": 0, "init_from": self.config.init_from}
            self.training_history_ = []
            self._save_run()
        finally:
            del self._inputs

    def _check_settings(self) -> None:
        cfg = self.config
        if cfg.dim % cfg.heads:
            raise InputError("heads must divide dim", value=(cfg.dim, cfg.heads), expected="dim % heads == 0")
        if cfg.contrastive > 0 and cfg.dp_noise_multiplier > 0:
            raise InputError("the contrastive loss couples the examples of a batch; it cannot run under DP-SGD",
                             value=cfg.contrastive, expected="contrastive=0 with dp_noise_multiplier > 0")

    def _source_weights(self) -> dict[str, torch.Tensor] | None:
        """Weights to start from (``sasrec-text``'s ``init_from``), or None."""
        return None

    def _task(self, train: Dataset, data: Dataset) -> _Task:
        if self._inputs.text is not None:
            self._inputs.seen = _seen(train)
        return _Task(self, train)

    def _net_config(self, text_dim: int) -> SASRecNetConfig:
        from llm4rec.nn.sasrec_net import SASRecNetConfig

        cfg = self.config
        return SASRecNetConfig(n_items=self.n_items_, max_len=cfg.max_len, dim=cfg.dim, heads=cfg.heads,
                               layers=cfg.layers, dropout=cfg.dropout, text_dim=text_dim)

    def _build(self, arrays: dict[str, np.ndarray] | None = None) -> SASRecNet:
        """The network to train (over the prepared text, with the source's weights under ``init_from``),
        or one shaped like the saved ``arrays``."""
        import torch

        from llm4rec.nn.sasrec_net import SASRecNet

        if arrays is not None:
            text = arrays.get("net__text")
            return SASRecNet(self._net_config(0 if text is None else text.shape[1]))
        inputs = self._inputs
        text, seen = inputs.text, inputs.seen
        net = SASRecNet(self._net_config(0 if text is None else text.shape[1]),
                        None if text is None else torch.from_numpy(text),
                        None if seen is None else torch.from_numpy(seen))
        if inputs.init is not None:  # transfer: every weight but the ID embeddings of the source's items
            missing, _ = net.load_state_dict(inputs.init, strict=False)
            if net.items is not None:
                torch.nn.init.zeros_(net.items.weight)
            if set(missing) - {"items.weight", "text", "seen"}:
                raise InputError("the source model's weights do not fit this architecture", value=missing,
                                 expected="a sasrec-text model with the same settings")
        return net

    def _score_histories(self, histories: Histories, items: np.ndarray | None) -> np.ndarray:
        """float32[B, n_items or len(items)]: the last state over each history's last ``max_len`` items."""
        return _score(self.net_, histories.recent(self.config.max_len), items, self.device)

    def _query_vectors(self, histories: Histories) -> np.ndarray:
        """float32[B, dim]: the last state over each history's last ``max_len`` items; the score of item i
        is its dot product with row i of ``net_.item_table()``."""
        return _last_states(self.net_, histories.recent(self.config.max_len), self.device)

    def _explain(self, histories: Histories, item: int, top: int) -> dict[str, Any]:
        """Which history positions the prediction attended to.

        The weights are the last position's attention over the history's last
        ``max_len`` items, averaged over heads and multiplied through the
        blocks (attention rollout, Abnar & Zuidema 2020, with the residual
        path counted as half): they sum to 1. Each ``because`` entry adds
        ``position`` (1 = most recent).
        """
        from llm4rec.models.explain import explanation

        hist = histories.recent(self.config.max_len)[0]
        hist = hist[hist >= 0]  # (h,) oldest first
        out = explanation(self, histories, item, hist, self._rollout(hist), top=top,
                          reason="what usually comes after")
        where = {int(i): len(hist) - j for j, i in enumerate(hist.tolist())}
        for entry in out["because"]:
            entry["position"] = where[entry["item"]]
        return out

    def _rollout(self, hist: np.ndarray) -> np.ndarray:
        """float64[h]: attention rollout of the last position over ``hist`` (int64[h] items, oldest first)."""
        import torch

        if len(hist) == 0:
            return np.zeros(0)
        with torch.no_grad():
            _, per_block = self.net_(torch.as_tensor(hist + 1, device=self.device)[None], need_weights=True)
            eye = torch.eye(len(hist), device=self.device)
            rollout = eye
            for w in per_block:  # (1, h, h)
                rollout = (0.5 * w[0] + 0.5 * eye) @ rollout
        last = rollout[-1].double().cpu().numpy()
        return last / last.sum()


def _seen(data: Dataset) -> np.ndarray:
    """float32[n_items + 1]: 1 at ``1 + item`` for the items with interactions in ``data`` (row 0: padding)."""
    seen = np.zeros(data.n_items + 1, dtype=np.float32)
    seen[1 + data.interacted_items] = 1.0
    return seen


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
    of each item's text (+ a gated-by-training ID embedding), so unseen items are ranked by their text.

    Learned attributes beside the network's: ``template_`` (the item text
    template, resolved at fit; items added later are encoded with it).
    """

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

    def _prepare(self, data: Dataset) -> None:
        """The LM embedding of every item's text (float32[n_items + 1, T], zero padding row first)."""
        from llm4rec.text import item_embeddings, text_encoder
        from llm4rec.text.templates import item_template

        cfg = self.config
        self.template_ = item_template(data, cfg.template)
        emb = item_embeddings(data, encoder=cfg.encoder, template=self.template_, cache_dir=cfg.cache_dir,
                              progress=cfg.progress)
        self.provenance_["encoder_fingerprint"] = text_encoder(cfg.encoder).fingerprint
        self._inputs.text = np.concatenate([np.zeros((1, emb.shape[1]), dtype=np.float32), emb.astype(np.float32)])

    def _net_config(self, text_dim: int) -> SASRecNetConfig:
        import dataclasses

        cfg = self.config
        return dataclasses.replace(super()._net_config(text_dim), id_embeddings=cfg.id_embeddings,
                                   id_dropout=cfg.id_dropout)

    def add_items(self, table: Any) -> SASRecText:
        """New items (or new text for known ones) get the adapter of their text embedding, encoded as the
        catalogue was (same template and encoder); new items have no ID part, like items never seen in
        training, and are recommendable at once."""
        import torch

        from llm4rec.text import encode_table

        cfg = self.config
        ids, attrs, vectors = encode_table(table, self.template_, cfg.encoder, cache_dir=cfg.cache_dir)
        index, _ = self._grow_items(ids, attrs)
        self.net_.set_item_text(torch.from_numpy(index), torch.from_numpy(vectors))
        return self

    def _extra_state(self) -> dict[str, np.ndarray]:
        return {"template": np.asarray(self.template_)}

    def _set_extra_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.template_ = str(arrays["template"])

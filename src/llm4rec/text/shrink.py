"""Smaller, faster copies of a mean-pooling BERT sentence encoder, trained to give the same vectors.

Two ways, both trained on the texts the copy will encode (a catalogue's item
texts) to match the teacher's L2-normalised embeddings (loss: 1 - cosine)::

    prune_encoder("minilm", texts, Path("minilm-pruned"), sparsity=0.5)    # half the heads and FFN neurons
    distill_encoder("minilm", texts, Path("minilm-l3"), layers=3)           # 3 of the 6 layers
    get_encoder("minilm-pruned").encode(texts)                               # float32[n, 384], rows L2-normalised

* :func:`prune_encoder` removes attention heads and FFN neurons (the weight
  matrices shrink), chosen by their importance on ``texts``, then fine-tunes
  what is left (recovery).
* :func:`distill_encoder` keeps the embeddings and ``layers`` evenly spaced
  layers of the teacher, then trains them.

The result is a model folder (:mod:`llm4rec.text.bert`: safetensors weights,
JSON shapes, the teacher's tokenizer) that
:func:`~llm4rec.text.encoders.get_encoder` loads as a
:class:`~llm4rec.text.bert.BertFolderEncoder`; its fingerprint differs from
the teacher's, so the embedding cache keeps their vectors apart. On the CPU
a run is deterministic for a seed and a thread count. Training leaves the word
embeddings as they are (most of the vocabulary never appears in a
catalogue) and runs without dropout.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from llm4rec._atomic import atomic_dir
from llm4rec.errors import InputError
from llm4rec.text.bert import BertFolderEncoder, BertNet, load_tokenizer, parameter_count, read_folder, write_folder
from llm4rec.text.encoders import (
    HFEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    _check_texts,
    _check_threads,
    _load_transformer,
    _mean_pooling_settings,
    _TokenEncoder,
    _torch_threads,
    get_encoder,
    progress_reporter,
    usable_cores,
)

__all__ = ["distill_encoder", "prune_encoder"]

FFN_MULTIPLE = 16  # FFN widths kept: 10% faster than odd widths in torch's CPU matrix products
COSINE_TEXTS = 2048  # the report's cosines to the teacher are over at most this many texts
IMPORTANCE = ("expected squared change of the normalised embedding when the unit is removed, to first order: "
              "sum over texts of (v . d z / d gate)^2 with z the normalised embedding, v ~ N(0, I) a random probe "
              "per text and gate the unit's output scale at 1 (Hutchinson estimate of the diagonal Gauss-Newton "
              "term of the teacher-matching loss)")


# --------------------------------------------------------------------------- public functions
def prune_encoder(encoder: str | TextEncoder, texts: Sequence[str], out: str | Path, *, sparsity: float = 0.5,
                  recovery_epochs: int = 1, scoring_texts: int = 1024, batch_size: int = 64, lr: float = 3e-4,
                  seed: int = 2026, threads: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Remove the ``sparsity`` share of ``encoder``'s attention heads and of its FFN neurons, fine-tune the rest
    to give the teacher's vectors of ``texts``, and write the model folder ``out``.

    Importance of a head or neuron: how much removing it alone would move the normalised embeddings of
    ``texts``, to first order: the sum over texts of ``(v . dz/dg)^2``, where ``g`` scales the unit's output
    (1 in the teacher), ``z`` is a text's normalised embedding and ``v`` a random N(0, I) probe per text (a
    Hutchinson estimate of ``||dz/dg||^2``, the diagonal Gauss-Newton term of the loss ``||z(g) - z||^2``; a
    plain first-order Taylor score is zero here, since the unpruned model matches the teacher exactly). Heads
    are ranked across all layers, and so are neurons; every layer keeps at least one head, and its FFN width
    is rounded to a multiple of 16 (at least 16), so the share of neurons removed is ``sparsity`` to within 8
    per layer. Then
    ``recovery_epochs`` epochs of AdamW (linear warm-up and decay) on ``1 - cos(student(text), teacher(text))``.

    Args:
        encoder: ``"minilm"``, a sentence-transformers folder of a BERT model with mean pooling, a Hugging Face
            BERT folder encoder with ``pooling="mean"``, or a folder this module wrote.
        texts: the texts to score units on and to train on (the catalogue's item texts).
        out: a new (or empty) folder; written all at once when everything succeeded.
        sparsity: share of the heads and of the FFN neurons removed, in (0, 1).
        recovery_epochs: fine-tuning passes over ``texts`` (0: none).
        scoring_texts: score the units on this many of ``texts`` (a seeded sample; all when fewer): scoring
            costs a forward and backward pass of the whole teacher per text.
        batch_size, lr, seed: batch size, peak learning rate, seed of the probes and the text order.
        threads: torch threads (default: the usable cores).
        progress: show progress bars on stderr.

    Returns the report (also written to ``out/training.json``): parameters of the teacher and the pruned
    encoder, heads and FFN neurons kept per layer, training loss (first step, last step, mean over the last
    epoch), mean cosine to the teacher on ``texts`` (at most 2,048 of them, evenly spaced) before and after
    recovery, seconds.
    """
    started = time.perf_counter()
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise InputError("bad sparsity", value=sparsity, expected="the share of heads and FFN neurons to remove, "
                                                                 "a number strictly between 0 and 1 (e.g. 0.5)")
    _check_int(recovery_epochs, "recovery_epochs", 0)
    _check_int(scoring_texts, "scoring_texts", 1)
    job = _Job.start(encoder, texts, out, batch_size=batch_size, lr=lr, threads=threads)
    with _torch_threads(job.threads):
        rows = np.sort(np.random.default_rng(seed).permutation(len(job.texts))[:scoring_texts])
        with progress_reporter(progress, len(rows), "pruning: scoring heads and neurons") as advance:
            head_scores, neuron_scores = _importance(job.teacher.net, job.corpus, rows, batch_size, seed, advance)
        heads, neurons = _keep(head_scores, sparsity), _keep(neuron_scores, sparsity, FFN_MULTIPLE)
        student = job.teacher.net.pruned(heads, neurons)
        before = job.cosine(student)
        training_started = time.perf_counter()
        losses = _fit(student, job, recovery_epochs, seed, progress, "pruning: recovery")
        training = time.perf_counter() - training_started
        after = job.cosine(student) if losses else before
    made_by = {"method": "prune", "sparsity": sparsity, "importance": IMPORTANCE, "scoring_texts": len(rows),
               "recovery_epochs": recovery_epochs, **job.settings(seed)}
    report = job.report(student, losses, recovery_epochs, {
        "heads_kept": [len(h) for h in heads], "ffn_kept": [len(n) for n in neurons],
        "heads_removed": int(sum(job.teacher.net.shape.heads) - sum(map(len, heads))),
        "ffn_removed": int(sum(job.teacher.net.shape.ffn) - sum(map(len, neurons))),
        "cosine_to_teacher": {"before_recovery": before, "after_recovery": after},
        "seconds": {"training": round(training, 2), "total": round(time.perf_counter() - started, 2)}})
    return job.write(student, made_by, report)


def distill_encoder(encoder: str | TextEncoder, texts: Sequence[str], out: str | Path, *, layers: int = 3,
                    epochs: int = 2, batch_size: int = 64, lr: float = 5e-4, seed: int = 2026,
                    threads: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Train a ``layers``-layer copy of ``encoder`` to give its vectors of ``texts``; write the model folder ``out``.

    The student starts from the teacher's embeddings and ``layers`` of its layers, evenly spaced from the
    first to the last (6 -> 3: layers 0, 2 and 5), and trains for ``epochs`` epochs of AdamW (linear warm-up
    and decay) on ``1 - cos(student(text), teacher(text))``. Arguments as :func:`prune_encoder`; ``layers``
    must be at least 1 and fewer than the teacher's.

    Returns the report (also written to ``out/training.json``): parameters of the teacher and the student,
    the teacher layers kept, training loss as :func:`prune_encoder`'s, mean cosine to the teacher on
    ``texts`` before and after training, seconds.
    """
    started = time.perf_counter()
    _check_int(layers, "layers", 1)
    _check_int(epochs, "epochs", 1)
    job = _Job.start(encoder, texts, out, batch_size=batch_size, lr=lr, threads=threads)
    depth = len(job.teacher.net.layers)
    if layers >= depth:
        raise InputError("the student must have fewer layers than the teacher", value=layers,
                         expected=f"an integer from 1 to {depth - 1} ({job.teacher.name} has {depth} layers)")
    kept = np.linspace(0, depth - 1, layers).round().astype(int).tolist()
    with _torch_threads(job.threads):
        student = job.teacher.net.with_layers(kept)
        before = job.cosine(student)
        training_started = time.perf_counter()
        losses = _fit(student, job, epochs, seed, progress, f"distilling to {layers} layers")
        training = time.perf_counter() - training_started
        after = job.cosine(student)
    made_by = {"method": "distill", "teacher_layers": kept, "epochs": epochs, **job.settings(seed)}
    report = job.report(student, losses, epochs, {
        "teacher_layers_kept": kept, "cosine_to_teacher": {"before_training": before, "after_training": after},
        "seconds": {"training": round(training, 2), "total": round(time.perf_counter() - started, 2)}})
    return job.write(student, made_by, report)


# --------------------------------------------------------------------------- the teacher and the texts
@dataclass
class _Teacher:
    net: BertNet
    tokenizer: Any  # tokenizers.Tokenizer: special tokens added, truncated at the teacher's limit, no padding
    limit: int
    pad_id: int
    folder: Path  # where its other tokenizer files are
    name: str
    fingerprint: str


def _teacher(encoder: str | Path | TextEncoder) -> _Teacher:
    """The fp32 :class:`BertNet` and tokenizer of a mean-pooling BERT encoder; InputError for any other."""
    enc = get_encoder(encoder)
    refused = InputError("pruning and distillation need a mean-pooling BERT encoder", value=enc.name,
                         expected="'minilm', a sentence-transformers folder of a BERT model with mean pooling, a "
                                  "Hugging Face BERT folder with pooling='mean', or a folder prune_encoder or "
                                  "distill_encoder wrote")
    if isinstance(enc, BertFolderEncoder):
        folder = enc._folder()
        net, settings = read_folder(folder)
        limit = enc.max_length or settings["max_seq_length"]
        return _Teacher(net, load_tokenizer(folder / "tokenizer.json", limit), limit, settings["pad_token_id"],
                        folder, enc.name, enc.fingerprint)
    if isinstance(enc, SentenceTransformerEncoder):
        folder = enc._path()
        settings = _mean_pooling_settings(folder)
        if settings is None:
            raise refused
        limit = enc.max_length or settings["max_seq_length"]
    elif isinstance(enc, HFEncoder) and enc.pooling == "mean" and enc.gguf_file is None:
        folder = enc._folder()
        limit = enc.max_length
    else:
        raise refused
    if isinstance(enc, SentenceTransformerEncoder) and hasattr(enc, "transformer_"):  # loaded: no second copy
        hf_tokenizer, model = enc.tokenizer_, enc.transformer_
    elif isinstance(enc, HFEncoder) and hasattr(enc, "model_"):
        hf_tokenizer, model = enc.tokenizer_, enc.model_
    else:
        hf_tokenizer, model = _load_transformer(folder)
    if getattr(model.config, "model_type", None) != "bert" or not hf_tokenizer.is_fast:
        raise refused
    from tokenizers import Tokenizer

    limit = min(limit, hf_tokenizer.model_max_length, model.config.max_position_embeddings)
    tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=limit)
    return _Teacher(BertNet.from_hf(model), tokenizer, limit, int(hf_tokenizer.pad_token_id or 0), folder,
                    enc.name, enc.fingerprint)


class _Corpus:
    """Texts tokenised once; padded batches of any rows, cut as :class:`_TokenEncoder` cuts them."""

    left_pad_ = False
    _pad = _TokenEncoder._pad

    def __init__(self, tokenizer: Any, texts: list[str], pad_id: int) -> None:
        tokens = [e.ids for e in tokenizer.encode_batch(texts)]
        self.lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))  # (n,)
        self.flat = np.fromiter(itertools.chain.from_iterable(tokens), dtype=np.int64,
                                count=int(self.lengths.sum()))  # all ids, text after text
        self.starts = np.cumsum(self.lengths) - self.lengths  # (n,)
        self.pad_id_ = pad_id

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """int64 (B, T) ids and mask of ``rows``, right-padded to their longest."""
        ids, mask = self._pad(self.flat, self.starts[rows], self.lengths[rows])
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def sorted_batches(self, batch_size: int, rows: np.ndarray | None = None) -> list[np.ndarray]:
        """``rows`` (default: all), longest first, in batches of ``batch_size``."""
        rows = np.arange(len(self)) if rows is None else rows
        order = rows[np.argsort(-self.lengths[rows], kind="stable")]
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    def shuffled_batches(self, batch_size: int, rng: np.random.Generator, pool: int = 50) -> list[np.ndarray]:
        """All rows in random batches of similar length: shuffled, sorted by length within runs of
        ``pool`` batches (little padding), and the batches shuffled."""
        order = rng.permutation(len(self))
        batches = []
        for start in range(0, len(order), batch_size * pool):
            run = order[start:start + batch_size * pool]
            run = run[np.argsort(-self.lengths[run], kind="stable")]
            batches += [run[i:i + batch_size] for i in range(0, len(run), batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class _Job:
    """What both functions share: the checked inputs, the teacher, the tokenised texts and their targets."""

    teacher: _Teacher
    texts: list[str]
    out: Path
    batch_size: int
    lr: float
    threads: int

    @cached_property
    def corpus(self) -> _Corpus:
        return _Corpus(self.teacher.tokenizer, self.texts, self.teacher.pad_id)

    @cached_property
    def targets(self) -> torch.Tensor:
        """float32 (n, H): the teacher's normalised embeddings of the texts."""
        return _embed(self.teacher.net, self.corpus, self.batch_size)

    @classmethod
    def start(cls, encoder: str | TextEncoder, texts: Sequence[str], out: str | Path, *, batch_size: int,
              lr: float, threads: int | None) -> _Job:
        texts = _check_texts(texts)
        if not texts:
            raise InputError("no texts to train on", expected="the texts the encoder will encode (at least one)")
        _check_int(batch_size, "batch_size", 1)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < 1:
            raise InputError("bad learning rate", value=lr, expected="a number in (0, 1), e.g. 1e-4")
        threads = _check_threads(threads) or usable_cores()
        out = Path(out).expanduser()
        if out.exists() and not (out.is_dir() and not any(out.iterdir())):
            raise InputError("the output folder exists and is not empty", path=out,
                             expected="a new or empty folder (nothing in it is removed)")
        return cls(_teacher(encoder), texts, out, batch_size, float(lr), threads)

    def cosine(self, net: BertNet) -> float:
        """Mean cosine of ``net``'s embeddings to the teacher's over :data:`COSINE_TEXTS` of the texts (evenly
        spaced; all when fewer)."""
        rows = np.unique(np.linspace(0, len(self.texts) - 1, min(len(self.texts), COSINE_TEXTS)).round().astype(int))
        cosines = (_embed(net, self.corpus, self.batch_size, rows) * self.targets[torch.from_numpy(rows)]).sum(1)
        return round(float(cosines.mean()), 6)

    def settings(self, seed: int) -> dict[str, Any]:
        digest = hashlib.sha256("\n".join(self.texts).encode()).hexdigest()[:16]
        return {"teacher": self.teacher.name, "teacher_fingerprint": self.teacher.fingerprint,
                "texts": len(self.texts), "texts_sha256": digest, "batch_size": self.batch_size, "lr": self.lr,
                "seed": seed, "trained": "all but the word embeddings; no dropout; loss 1 - cosine to the teacher"}

    def report(self, student: BertNet, losses: list[float], epochs: int, extra: dict[str, Any]) -> dict[str, Any]:
        return {"out": str(self.out), "teacher": self.teacher.name, "texts": len(self.texts),
                "parameters": {"teacher": parameter_count(self.teacher.net), "student": parameter_count(student)},
                "layers": len(student.layers), "heads": list(student.shape.heads), "ffn": list(student.shape.ffn),
                "steps": len(losses), "loss": _loss_summary(losses, epochs),
                **extra}

    def write(self, student: BertNet, made_by: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
        with atomic_dir(self.out) as tmp:
            write_folder(tmp, student, self.teacher.tokenizer, self.teacher.folder, max_seq_length=self.teacher.limit,
                         pad_id=self.teacher.pad_id, made_by=made_by, report=report)
        return report


def _loss_summary(losses: list[float], epochs: int) -> dict[str, float] | None:
    """The first step's loss, the last step's and the mean over the last epoch; None without training."""
    if not losses:
        return None
    return {"first_step": round(losses[0], 6), "last_step": round(losses[-1], 6),
            "last_epoch_mean": round(float(np.mean(losses[-(len(losses) // epochs):])), 6)}


def _check_int(value: Any, name: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(f"bad {name}", value=value, expected=f"an integer >= {least}")


# --------------------------------------------------------------------------- computing
def _embed(net: BertNet, corpus: _Corpus, batch_size: int, rows: np.ndarray | None = None) -> torch.Tensor:
    """float32 (len(rows), H) normalised embeddings of the texts ``rows`` (default: all), in that order; no grad."""
    rows = np.arange(len(corpus)) if rows is None else rows
    where = np.zeros(len(corpus), dtype=np.int64)
    where[rows] = np.arange(len(rows))  # row -> its place in the output
    out = torch.empty(len(rows), net.shape.hidden)
    with torch.inference_mode():
        for batch in corpus.sorted_batches(batch_size, rows):
            out[torch.from_numpy(where[batch])] = F.normalize(net(*corpus.batch(batch)), dim=-1)
    return out


def _importance(net: BertNet, corpus: _Corpus, rows: np.ndarray, batch_size: int, seed: int,
                advance: Callable[[int], None]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, float (heads,) and (ffn,) scores of ``net``'s units on the texts ``rows``: see :data:`IMPORTANCE`."""
    generator = torch.Generator().manual_seed(seed)
    heads = [torch.zeros(h) for h in net.shape.heads]
    neurons = [torch.zeros(f) for f in net.shape.ffn]
    net.requires_grad_(False)
    try:
        for rows in corpus.sorted_batches(batch_size, rows):
            gates = [(torch.ones(len(rows), h, requires_grad=True), torch.ones(len(rows), f, requires_grad=True))
                     for h, f in zip(net.shape.heads, net.shape.ffn, strict=True)]  # per text, per unit
            z = F.normalize(net(*corpus.batch(rows), gates), dim=-1)  # (B, H)
            probe = torch.randn(z.shape, generator=generator)  # (B, H)
            grads = torch.autograd.grad((z * probe).sum(), [g for pair in gates for g in pair])
            for i in range(len(gates)):
                heads[i] += grads[2 * i].square().sum(0)
                neurons[i] += grads[2 * i + 1].square().sum(0)
            advance(len(rows))
    finally:
        net.requires_grad_(True)
    return heads, neurons


def _keep(scores: list[torch.Tensor], sparsity: float, multiple: int = 1) -> list[torch.Tensor]:
    """Per layer, the int64 indices (ascending) of the units kept: the ``1 - sparsity`` share of all units
    with the highest scores, ranked across layers; then each layer's count rounded to a multiple of
    ``multiple`` (at least one multiple; at most the layer's size) and its best units kept."""
    sizes = torch.tensor([len(s) for s in scores])
    layer = torch.repeat_interleave(torch.arange(len(scores)), sizes)  # (units,) the layer of each unit
    top = torch.topk(torch.cat(scores), round(int(sizes.sum()) * (1 - sparsity))).indices
    counts = torch.bincount(layer[top], minlength=len(scores))  # (layers,)
    counts = torch.minimum(((counts + multiple // 2) // multiple * multiple).clamp(min=multiple), sizes)
    return [torch.sort(torch.topk(s, int(k)).indices).values for s, k in zip(scores, counts, strict=True)]


def _fit(net: BertNet, job: _Job, epochs: int, seed: int, progress: bool, description: str) -> list[float]:
    """Train ``net`` (all but its word embeddings) for ``epochs`` on ``1 - cos`` to the targets; the step losses."""
    rng = np.random.default_rng(seed)
    plan = [rows for _ in range(epochs) for rows in job.corpus.shuffled_batches(job.batch_size, rng)]
    if not plan:
        return []
    net.word_embeddings.weight.requires_grad_(False)
    params = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=job.lr, weight_decay=0.01)
    warm = max(1, len(plan) // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warm, (len(plan) - step) / max(1, len(plan) - warm)))
    losses = []
    with progress_reporter(progress, len(plan), description) as advance:
        for rows in plan:
            z = F.normalize(net(*job.corpus.batch(rows)), dim=-1)  # (B, H)
            loss = 1 - (z * job.targets[torch.from_numpy(rows)]).sum(1).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
            advance(1)
    net.word_embeddings.weight.requires_grad_(True)
    return losses

"""A mean-pooling BERT encoder in plain torch whose layers each have their own number of attention heads and
feed-forward width, and the model folder that holds one.

Pruning (:mod:`llm4rec.text.shrink`) leaves layers with, say, 5, 8 and 7 heads
and FFN widths of 700 to 900: shapes Hugging Face's ``BertConfig`` cannot
express (transformers 5 dropped ``pruned_heads``). :class:`BertNet` is the
BERT forward pass written out (embeddings, then per layer: attention over the
layer's heads, output projection, residual and layer norm; FFN with exact
GELU, residual and layer norm), and on an unpruned model it gives Hugging
Face's vectors (differences under 1e-5 on all-MiniLM-L6-v2).

A folder written by :func:`write_folder`::

    llm4rec-encoder.json   shapes, tokenizer settings, pooling, how it was made (the marker get_encoder looks for)
    model.safetensors      the weights (BertNet's parameter names)
    tokenizer.json         the teacher's fast tokenizer as it loaded (plus its vocab.txt, tokenizer_config.json...)
    training.json          the report of the run that made it (not part of the fingerprint)

:func:`~llm4rec.text.encoders.get_encoder` loads such a folder as a
:class:`BertFolderEncoder`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from llm4rec.errors import InputError
from llm4rec.text.encoders import (
    _check_device,
    _check_threads,
    _folder_digest,
    _require_path,
    _TokenEncoder,
    _torch_threads,
    pool,
    torch_device,
    usable_cores,
)

__all__ = ["MARKER", "BertFolderEncoder", "BertNet", "BertShape", "read_folder", "write_folder"]

MARKER = "llm4rec-encoder.json"
FORMAT = "llm4rec-bert"
REPORT = "training.json"
_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "added_tokens.json")


@dataclass(frozen=True)
class BertShape:
    """The sizes of a :class:`BertNet`; ``heads[l]`` and ``ffn[l]`` are layer ``l``'s head count and FFN width."""

    vocab_size: int
    hidden: int
    head_dim: int
    heads: tuple[int, ...]
    ffn: tuple[int, ...]
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BertShape:
        return cls(**{**data, "heads": tuple(data["heads"]), "ffn": tuple(data["ffn"])})


class BertLayer(nn.Module):
    """One BERT layer with ``heads`` attention heads of ``head_dim`` and an FFN of width ``ffn``."""

    def __init__(self, hidden: int, heads: int, head_dim: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.query = nn.Linear(hidden, heads * head_dim)
        self.key = nn.Linear(hidden, heads * head_dim)
        self.value = nn.Linear(hidden, heads * head_dim)
        self.attention_out = nn.Linear(heads * head_dim, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, ffn)
        self.ffn_out = nn.Linear(ffn, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, keys: torch.Tensor, head_gate: torch.Tensor | None = None,
                ffn_gate: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, T, H) -> (B, T, H); ``keys`` bool (B, 1, 1, T), True for real tokens. The optional gates
        (B, heads) and (B, ffn) scale each head's output and each FFN neuron (pruning's importance scores)."""
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, heads, T, d)
                   for proj in (self.query, self.key, self.value))
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)  # (B, heads, T, d)
        if head_gate is not None:
            context = context * head_gate[:, :, None, None]
        context = context.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)  # (B, T, heads * d)
        x = self.attention_norm(x + self.attention_out(context))
        inner = F.gelu(self.ffn_in(x))  # (B, T, ffn)
        if ffn_gate is not None:
            inner = inner * ffn_gate[:, None, :]
        return self.ffn_norm(x + self.ffn_out(inner))


class BertNet(nn.Module):
    """BERT embeddings and layers of any :class:`BertShape`, with mean pooling; no dropout, token type 0."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        if len(shape.heads) != len(shape.ffn) or min(shape.heads, default=0) < 1 or min(shape.ffn, default=0) < 1:
            raise InputError("bad BERT shape", value=asdict(shape),
                             expected="as many FFN widths as head counts, each at least 1, and at least one layer")
        self.shape = shape
        self.word_embeddings = nn.Embedding(shape.vocab_size, shape.hidden)
        self.position_embeddings = nn.Embedding(shape.max_positions, shape.hidden)
        self.token_type_embeddings = nn.Embedding(shape.type_vocab_size, shape.hidden)
        self.embedding_norm = nn.LayerNorm(shape.hidden, eps=shape.layer_norm_eps)
        self.layers = nn.ModuleList(BertLayer(shape.hidden, h, shape.head_dim, f, shape.layer_norm_eps)
                                    for h, f in zip(shape.heads, shape.ffn, strict=True))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor,
                gates: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """Mean-pooled (not normalised) embeddings (B, H) of ``ids`` and ``mask`` (B, T), right-padded;
        ``gates``: per layer the (head, FFN) gates of :meth:`BertLayer.forward`."""
        positions = torch.arange(ids.shape[1], device=ids.device)  # (T,)
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        x = self.embedding_norm(x)  # (B, T, H)
        keys = mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        for i, layer in enumerate(self.layers):
            x = layer(x, keys, *(gates[i] if gates is not None else ()))
        return pool(x, mask, "mean")

    @classmethod
    def from_hf(cls, model: nn.Module) -> BertNet:
        """A copy of a Hugging Face ``BertModel``'s weights (absolute positions, exact GELU); InputError for
        another architecture."""
        config = model.config
        if (getattr(config, "model_type", None) != "bert" or config.hidden_act != "gelu"
                or getattr(config, "position_embedding_type", "absolute") != "absolute"):
            raise InputError("not a BERT model with absolute positions and exact GELU", value=type(model).__name__,
                             expected="a Hugging Face BertModel (model_type 'bert', hidden_act 'gelu')")
        n = config.num_hidden_layers
        shape = BertShape(vocab_size=config.vocab_size, hidden=config.hidden_size,
                          head_dim=config.hidden_size // config.num_attention_heads,
                          heads=(config.num_attention_heads,) * n, ffn=(config.intermediate_size,) * n,
                          max_positions=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
                          layer_norm_eps=config.layer_norm_eps)
        hf = model.state_dict()
        net = cls(shape)
        net.load_state_dict({key: hf[_hf_name(key)].detach().float().cpu().clone() for key in net.state_dict()})
        return net.eval()

    def pruned(self, heads: Sequence[torch.Tensor], neurons: Sequence[torch.Tensor]) -> BertNet:
        """A copy keeping, in each layer ``l``, the heads ``heads[l]`` and FFN neurons ``neurons[l]``
        (int64 indices, ascending): smaller weight matrices, the same function of what is kept."""
        shape = BertShape(**{**asdict(self.shape), "heads": tuple(len(h) for h in heads),
                             "ffn": tuple(len(n) for n in neurons)})
        d = self.shape.head_dim
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        for i, (keep_heads, keep_neurons) in enumerate(zip(heads, neurons, strict=True)):
            dims = (keep_heads[:, None] * d + torch.arange(d)).reshape(-1)  # (kept heads * d,) rows of Q, K, V
            p = f"layers.{i}."
            for proj in ("query", "key", "value"):
                state[p + proj + ".weight"] = state[p + proj + ".weight"][dims]
                state[p + proj + ".bias"] = state[p + proj + ".bias"][dims]
            state[p + "attention_out.weight"] = state[p + "attention_out.weight"][:, dims]
            state[p + "ffn_in.weight"] = state[p + "ffn_in.weight"][keep_neurons]
            state[p + "ffn_in.bias"] = state[p + "ffn_in.bias"][keep_neurons]
            state[p + "ffn_out.weight"] = state[p + "ffn_out.weight"][:, keep_neurons]
        net = BertNet(shape)
        net.load_state_dict({k: v.contiguous() for k, v in state.items()})
        return net.eval()

    def with_layers(self, keep: Sequence[int]) -> BertNet:
        """A copy with the embeddings and the layers ``keep`` (in that order) only."""
        shape = BertShape(**{**asdict(self.shape), "heads": tuple(self.shape.heads[i] for i in keep),
                             "ffn": tuple(self.shape.ffn[i] for i in keep)})
        net = BertNet(shape)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("layers.")}
        for new, old in enumerate(keep):
            prefix = f"layers.{old}."
            state |= {f"layers.{new}.{k[len(prefix):]}": v for k, v in self.state_dict().items()
                      if k.startswith(prefix)}
        net.load_state_dict({k: v.detach().clone() for k, v in state.items()})
        return net.eval()


_HF_EMBEDDINGS = {"word_embeddings": "word_embeddings", "position_embeddings": "position_embeddings",
                  "token_type_embeddings": "token_type_embeddings", "embedding_norm": "LayerNorm"}
_HF_LAYER = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
             "attention_out": "attention.output.dense", "attention_norm": "attention.output.LayerNorm",
             "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm"}


def _hf_name(key: str) -> str:
    """The Hugging Face ``BertModel`` name of a :class:`BertNet` parameter (``layers.3.ffn_in.weight`` ->
    ``encoder.layer.3.intermediate.dense.weight``)."""
    module, param = key.rsplit(".", 1)
    if module.startswith("layers."):
        _, index, name = module.split(".")
        return f"encoder.layer.{index}.{_HF_LAYER[name]}.{param}"
    return f"embeddings.{_HF_EMBEDDINGS[module]}.{param}"


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def write_folder(folder: Path, net: BertNet, tokenizer: Any, tokenizer_source: Path | None, *,
                 max_seq_length: int, pad_id: int, made_by: dict[str, Any], report: dict[str, Any]) -> None:
    """Write ``net`` as a model folder into the (new, empty) ``folder``: see the module docstring.

    ``tokenizer`` (a ``tokenizers.Tokenizer``) is saved as ``tokenizer.json``; the other tokenizer files of
    ``tokenizer_source`` (the teacher's folder) are copied beside it. ``made_by`` (method, teacher, settings)
    goes into the marker, ``report`` into ``training.json``.
    """
    from safetensors.torch import save_file

    save_file({k: v.detach().float().contiguous().cpu() for k, v in net.state_dict().items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(str(folder / "tokenizer.json"))
    for name in _TOKENIZER_FILES if tokenizer_source is not None else ():
        if (tokenizer_source / name).is_file():
            shutil.copyfile(tokenizer_source / name, folder / name)
    marker = {"format": FORMAT, "version": 1, "shape": asdict(net.shape), "pooling": "mean",
              "max_seq_length": max_seq_length, "pad_token_id": pad_id, "made_by": made_by}
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    (folder / REPORT).write_text(json.dumps(report, indent=2) + "\n")


def read_folder(folder: Path) -> tuple[BertNet, dict[str, Any]]:
    """(the fp32 network in eval mode, the marker's settings) of a folder :func:`write_folder` wrote."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    settings = read_marker(folder)
    net = BertNet(settings["shape"])
    try:
        net.load_state_dict(load_file(str(folder / "model.safetensors")))
    except (OSError, RuntimeError, SafetensorError) as exc:
        raise InputError(f"the weights do not fit the shapes in {MARKER}: {str(exc).splitlines()[0]}",
                         path=folder / "model.safetensors", expected="the model.safetensors written with it") from None
    return net.eval(), settings


def read_marker(folder: Path) -> dict[str, Any]:
    """The marker's settings, its ``shape`` as a :class:`BertShape`; InputError for a broken one."""
    path = folder / MARKER
    try:
        settings = json.loads(path.read_text())
        if settings.get("format") != FORMAT:
            raise ValueError(f"format {settings.get('format')!r}")
        settings["shape"] = BertShape.from_json(settings["shape"])
        if not all(isinstance(settings[k], int) for k in ("max_seq_length", "pad_token_id")):
            raise ValueError("max_seq_length and pad_token_id must be integers")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"not a readable {MARKER}: {exc}", path=path,
                         expected=f"the file prune_encoder and distill_encoder write (format {FORMAT!r})") from None
    return settings


def load_tokenizer(path: Path, max_length: int) -> Any:
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json``: special tokens added, truncation at ``max_length``,
    no padding."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises untyped errors
        raise InputError(f"cannot read the tokenizer: {str(exc).splitlines()[0]}", path=path,
                         expected="a Hugging Face tokenizers file") from None
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


class BertFolderEncoder(_TokenEncoder):
    """A model folder written by :func:`~llm4rec.text.shrink.prune_encoder` or
    :func:`~llm4rec.text.shrink.distill_encoder` (marker ``llm4rec-encoder.json``): :class:`BertNet` with
    mean pooling, tokenised by its ``tokenizer.json``, in token-length batches.

    Args:
        path: the folder.
        max_length: truncate inputs to this many tokens (default: the folder's, 256 for MiniLM's students).
        threads: torch threads while encoding (default: the usable cores).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Its fingerprint hashes the weights, tokenizer and marker (not ``training.json``) and ``max_length``.
    """

    backend = "llm4rec-bert"

    def __init__(self, path: str | Path, *, max_length: int | None = None, threads: int | None = None,
                 device: str = "cpu") -> None:
        self.path = path
        self.max_length = max_length
        self.threads = _check_threads(threads)
        self.device = _check_device(device)

    def _folder(self) -> Path:
        folder = _require_path(self.path, "model folder")
        if not (folder / MARKER).is_file():
            raise InputError(f"not an llm4rec encoder folder: no {MARKER}", path=folder,
                             expected="a folder written by prune_encoder or distill_encoder")
        return folder

    def _identity(self) -> dict[str, Any]:
        folder = self._folder()
        digest = _folder_digest(folder)
        digest.pop(REPORT, None)
        return {"weights": digest, "max_length": self.max_length}

    def _load(self) -> None:
        folder = self._folder()
        net, settings = read_folder(folder)
        self.device_ = torch_device(self.device)
        self.net_ = net.to(self.device_)
        self.limit_ = self.max_length or int(settings["max_seq_length"])
        self.tokenizer_ = load_tokenizer(folder / "tokenizer.json", self.limit_)
        self.pad_id_ = int(settings["pad_token_id"])
        self.threads_ = self.threads or usable_cores()
        self.dim_ = net.shape.hidden

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer_.encode_batch(texts)]

    def _running(self) -> AbstractContextManager[Any]:
        return _torch_threads(self.threads_)

    def _encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            vectors = self.net_(torch.from_numpy(ids).to(self.device_), torch.from_numpy(mask).to(self.device_))
            return vectors.cpu().numpy()  # (B, H)

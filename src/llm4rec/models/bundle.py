"""Model bundles: a directory that carries a fitted model, its ids and its provenance, without pickle.

Layout (``format_version`` 2)::

    config.json   {"model": name, "config": {...}}      the resolved, typed config
    users.json    {"kind": "user", "tokens": [...]}     external ids, position = dense index
    items.json    {"kind": "item", "tokens": [...]}
    arrays.npz    fit histories, popularity, labels and the model's weights (np.load(allow_pickle=False))
    bundle.json   written last: format_version, model, created, versions (llm4rec, python, numpy,
                  torch), provenance (dataset and fit-set fingerprints, protocol, stage, seed, split
                  fingerprint or "whole dataset", item text and encoder fingerprints, items added
                  since fit) and every other file's size and sha256

:func:`read_bundle` refuses, with an InputError naming the file, a missing,
truncated or modified file, a bundle from another format version, or arrays
that do not fit the model; it builds a new model object and returns it only
when everything has loaded, so nothing is half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from llm4rec._atomic import atomic_dir
from llm4rec.errors import InputError

__all__ = ["BUNDLE_FILES", "FORMAT_VERSION", "read_bundle", "read_manifest", "write_bundle"]

FORMAT_VERSION = 2
MANIFEST = "bundle.json"
#: the files of a bundle, ``bundle.json`` last
BUNDLE_FILES = ("config.json", "users.json", "items.json", "arrays.npz", MANIFEST)
#: arrays every model's bundle holds (the rest are the model's own state, ``state_*``)
_BASE_ARRAYS = ("fit_offsets", "fit_items", "popularity", "item_labels")


def _versions() -> dict[str, str | None]:
    from llm4rec._runinfo import versions

    return versions(("llm4rec", "numpy", "torch"))


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _payload(model: Any) -> dict[str, bytes]:
    """Every file but the manifest, as bytes."""
    import io

    arrays = {"fit_offsets": model.fit_offsets_, "fit_items": model.fit_items_, "popularity": model.popularity_,
              "item_labels": np.asarray(model.item_labels_, dtype=str),
              **{f"state_{k}": np.asarray(v) for k, v in model._state().items()}}
    bad = [k for k, v in arrays.items() if v.dtype == object]
    if bad:
        raise InputError("cannot save object arrays without pickle", value=bad, expected="numeric or str arrays")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    config = {"model": model.name, "config": model.config.model_dump(mode="json")}
    return {"config.json": (json.dumps(config, indent=2) + "\n").encode(),
            "users.json": json.dumps(model.users_.to_json(), ensure_ascii=False).encode(),
            "items.json": json.dumps(model.items_.to_json(), ensure_ascii=False).encode(),
            "arrays.npz": buf.getvalue()}


def write_bundle(model: Any, path: Path, *, overwrite: bool = False) -> Path:
    """Write ``model``'s bundle to ``path`` (new or empty; or a bundle, replaced with ``overwrite``)."""
    exists = path.exists()
    if exists and not path.is_dir():
        raise InputError("the model path is a file", path=path, expected="a directory for the bundle")
    ours = [n for n in BUNDLE_FILES if (path / n).exists()] if exists else []
    others = [p.name for p in path.iterdir() if p.name not in BUNDLE_FILES] if exists else []
    if ours and not overwrite:
        raise InputError("a saved model is already here", path=path, expected="a new or empty directory",
                         hint="Pass overwrite=True (--overwrite) to replace it.")
    payload = _payload(model)
    manifest = {
        "format_version": FORMAT_VERSION, "model": model.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": _versions(),
        "provenance": model.provenance_, "n_users": int(model.n_users_), "n_items": int(model.n_items_),
        "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for name, data in payload.items()},
    }
    files = {**payload, MANIFEST: (json.dumps(manifest, indent=2) + "\n").encode()}
    if not exists or not (ours or others):  # a fresh directory: all of it appears at once
        with atomic_dir(path) as tmp:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
        return path
    # Into an existing directory: only our files, the manifest removed first and written last, so a crash in
    # between leaves a bundle that read_bundle refuses (never one that mixes two models unnoticed).
    from llm4rec._atomic import atomic_write_bytes

    (path / MANIFEST).unlink(missing_ok=True)
    for name, data in files.items():
        atomic_write_bytes(path / name, data)
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The checked ``bundle.json`` of a bundle: every file present, complete and unmodified."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("not a saved model directory", path=path, expected="a directory written by save()")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        if (path / "config.json").is_file():
            raise InputError("saved by an older llm4rec (format 1, without bundle.json)", path=path,
                             expected=f"a bundle of format {FORMAT_VERSION}; fit and save the model again")
        raise InputError("not a saved model directory (no bundle.json)", path=path,
                         expected="a directory written by save()")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"bundle.json is not valid JSON ({exc}): truncated or edited", path=manifest_path,
                         expected="the file save() wrote") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format_version"), int):
        raise InputError("bundle.json has no format_version", path=manifest_path, expected="the file save() wrote")
    version = manifest["format_version"]
    if version > FORMAT_VERSION:
        raise InputError(f"saved by a newer llm4rec (bundle format {version})", path=manifest_path,
                         expected=f"format {FORMAT_VERSION} or older: upgrade llm4rec to load it")
    if version < FORMAT_VERSION:
        raise InputError(f"saved by an older llm4rec (bundle format {version})", path=manifest_path,
                         expected=f"format {FORMAT_VERSION}; fit and save the model again")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(BUNDLE_FILES) - {MANIFEST}:
        raise InputError("bundle.json does not list the bundle's files", path=manifest_path,
                         expected=", ".join(BUNDLE_FILES[:-1]))
    for name, info in files.items():
        file = path / name
        if not file.is_file():
            raise InputError("a file of the saved model is missing", path=file, expected="every file save() wrote")
        size = file.stat().st_size
        if size != info.get("bytes"):
            raise InputError(f"the file has {size} bytes, the bundle says {info.get('bytes')}: truncated or "
                             "replaced", path=file, expected="the file save() wrote")
        if _digest(file) != info.get("sha256"):
            raise InputError("the file's content differs from what was saved (sha256 mismatch): modified or "
                             "corrupt", path=file, expected="the file save() wrote")
    return manifest


def read_bundle(path: Path) -> Any:
    """The model saved at ``path``, fully loaded and checked (see the module docstring)."""
    from llm4rec.data.vocabulary import Vocabulary
    from llm4rec.models.registry import model_class

    manifest = read_manifest(path)
    config = _json(path / "config.json")
    klass = model_class(str(config.get("model", manifest.get("model"))))
    model = klass(klass.make_config(config.get("config", {})))
    users = Vocabulary.from_json(_json(path / "users.json"))
    items = Vocabulary.from_json(_json(path / "items.json"))
    arrays_path = path / "arrays.npz"
    try:
        with np.load(arrays_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read the arrays ({type(exc).__name__}: {exc})", path=arrays_path,
                         expected="the .npz file save() wrote") from None
    missing = [k for k in _BASE_ARRAYS if k not in arrays]
    if missing:
        raise InputError("arrays are missing from the saved model", path=arrays_path, value=missing,
                         expected="the arrays save() wrote")
    n_users, n_items = len(users), len(items)
    offsets, fit_items = arrays["fit_offsets"].astype(np.int64), arrays["fit_items"].astype(np.int32)
    if len(offsets) != n_users + 1 or len(arrays["popularity"]) != n_items or \
            len(arrays["item_labels"]) != n_items or (len(fit_items) and fit_items.max() >= n_items):
        raise InputError("the arrays do not match the vocabularies", path=arrays_path,
                         expected=f"{n_users} users and {n_items} items, as users.json and items.json say")
    model.n_users_, model.n_items_ = n_users, n_items
    model.users_, model.items_ = users, items
    model.fit_offsets_, model.fit_items_ = offsets, fit_items
    rows = np.repeat(np.arange(n_users), np.diff(offsets))
    history = sp.csr_matrix((np.ones(len(fit_items), dtype=np.float32), (rows, fit_items)), shape=(n_users, n_items))
    history.sort_indices()
    model.history_ = history
    model.popularity_ = arrays["popularity"].astype(np.float32)
    model.item_labels_ = arrays["item_labels"].astype(str)
    model.provenance_ = dict(manifest.get("provenance") or {})
    try:
        model._set_state({k[len("state_"):]: v for k, v in arrays.items() if k.startswith("state_")})
    except InputError:
        raise
    except (KeyError, ValueError, RuntimeError, IndexError) as exc:
        raise InputError(f"the saved weights do not fit model {model.name!r} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})", path=arrays_path,
                         expected="a bundle saved by this model type and version") from None
    return model


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", path=path, expected="the file save() wrote") from None
    if not isinstance(value, dict):
        raise InputError("not a JSON object", path=path, expected="the file save() wrote")
    return value

"""Model bundles: a directory that carries a fitted model, its ids and its provenance, without pickle.

Layout (``format_version`` 2)::

    config.json   {"model": name, "config": {...}}      the resolved, typed config
    users.json    {"kind": "user", "tokens": [...]}     external ids, position = dense index
    items.json    {"kind": "item", "tokens": [...]}
    arrays.npz    fit histories, popularity, labels (UTF-8 bytes and offsets) and the model's weights
                  (np.load(allow_pickle=False); zip-deflated in a compressed bundle)
    encoder/      only in a bundle that carries its own text encoder (``llm4rec compress --method
                  prune|distill``): the encoder's folder, which the model's ``encoder`` setting names
    bundle.json   written last: format_version, model, created, versions (llm4rec, python, numpy,
                  torch), provenance (dataset and fit-set fingerprints, protocol, stage, seed, split
                  fingerprint or "whole dataset", item text and encoder fingerprints, items added
                  since fit), ``compression`` when the weights are compressed, and every other
                  file's size and sha256

Compressed bundles (``compression``: see :mod:`llm4rec.models.compressed`)
keep their large tables as int8 or product-quantisation codes; they are
decoded on reading, and an ``int8`` bundle's torch linear layers are then
quantised to run on int8 kernels (:func:`quantise_linears`).

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

__all__ = ["BUNDLE_FILES", "ENCODER_DIR", "FORMAT_VERSION", "bundle_files", "quantise_linears", "read_bundle",
           "read_manifest", "write_bundle"]

FORMAT_VERSION = 2
MANIFEST = "bundle.json"
#: the files of a bundle, ``bundle.json`` last
BUNDLE_FILES = ("config.json", "users.json", "items.json", "arrays.npz", MANIFEST)
#: arrays every model's bundle holds (the rest are the model's own state, ``state_*``)
_BASE_ARRAYS = ("fit_offsets", "fit_items", "popularity")
#: the folder of a text encoder carried in the bundle
ENCODER_DIR = "encoder"


def _versions() -> dict[str, str | None]:
    from llm4rec._runinfo import versions

    return versions(("llm4rec", "numpy", "torch"))


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _labels_utf8(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Labels as one UTF-8 byte string and int64[n + 1] offsets (a numpy str array pads every label to the
    longest: 4 bytes per character of the longest label, 40 MB for Amazon Beauty's titles)."""
    encoded = [str(label).encode("utf-8") for label in labels]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    return {"item_labels_utf8": np.frombuffer(b"".join(encoded), dtype=np.uint8), "item_labels_offsets": offsets}


def _labels(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The item labels of a bundle's arrays (UTF-8 with offsets; a str array in bundles written before)."""
    if "item_labels" in arrays:
        return arrays["item_labels"].astype(str)
    data, offsets = arrays["item_labels_utf8"].tobytes(), arrays["item_labels_offsets"]
    return np.asarray([data[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())],
                      dtype=str)


def _payload(model: Any, compression: dict[str, Any] | None = None) -> tuple[dict[str, bytes], dict | None]:
    """(every file but the manifest, as bytes; the compression summary or None)."""
    import io

    arrays = {"fit_offsets": model.fit_offsets_, "fit_items": model.fit_items_, "popularity": model.popularity_,
              **_labels_utf8(model.item_labels_), **{f"state_{k}": np.asarray(v) for k, v in model._state().items()}}
    bad = [k for k, v in arrays.items() if v.dtype == object]
    if bad:
        raise InputError("cannot save object arrays without pickle", value=bad, expected="numeric or str arrays")
    summary = None
    if compression is not None:
        from llm4rec.models.compressed import encode_arrays, narrow_ints

        arrays.update(narrow_ints({k: arrays[k] for k in ("fit_offsets", "fit_items")}))

        codec = compression.get("tables")
        if codec is not None:
            arrays, tables = encode_arrays(arrays, codec, n_items=int(model.n_items_),
                                           pq_dims=int(compression.get("pq_dims", 2)),
                                           rescore=bool(compression.get("rescore")))
            summary = {**compression, "encoded": tables}
        else:
            summary = dict(compression)
    buf = io.BytesIO()
    (np.savez if compression is None else np.savez_compressed)(buf, **arrays)  # compressed: zip-deflated too
    config = {"model": model.name, "config": model.config.model_dump(mode="json")}
    return {"config.json": (json.dumps(config, indent=2) + "\n").encode(),
            "users.json": json.dumps(model.users_.to_json(), ensure_ascii=False).encode(),
            "items.json": json.dumps(model.items_.to_json(), ensure_ascii=False).encode(),
            "arrays.npz": buf.getvalue()}, summary


def _encoder_files(encoder_dir: Path) -> dict[str, bytes]:
    """The files of a text encoder's folder, as ``encoder/<relative path>`` -> bytes."""
    files = sorted(p for p in encoder_dir.rglob("*") if p.is_file())
    if not files:
        raise InputError("the encoder folder is empty", path=encoder_dir, expected="a text encoder's folder")
    return {f"{ENCODER_DIR}/{p.relative_to(encoder_dir).as_posix()}": p.read_bytes() for p in files}


def write_bundle(model: Any, path: Path, *, overwrite: bool = False, compression: dict[str, Any] | None = None,
                 encoder_dir: Path | None = None) -> Path:
    """Write ``model``'s bundle to ``path`` (new or empty; or a bundle, replaced with ``overwrite``).

    ``compression``: what :func:`read_bundle` must know of a compressed bundle, recorded in the
    manifest: ``{"method": ..., "tables": "int8"|"pq"|None, "pq_dims": 2, "quantise_linears": [names of the
    network's linear layers to run in int8 after loading], ...}``
    (``tables`` picks the codec of :mod:`llm4rec.models.compressed`). ``encoder_dir``: a text encoder's
    folder to carry in the bundle (a new, empty ``path`` only); the model's ``encoder`` setting is then
    saved as ``"encoder/"`` and read back as that folder's path.
    """
    exists = path.exists()
    if exists and not path.is_dir():
        raise InputError("the model path is a file", path=path, expected="a directory for the bundle")
    ours = [n for n in BUNDLE_FILES if (path / n).exists()] if exists else []
    others = [p.name for p in path.iterdir() if p.name not in BUNDLE_FILES] if exists else []
    if ours and not overwrite:
        raise InputError("a saved model is already here", path=path, expected="a new or empty directory",
                         hint="Pass overwrite=True (--overwrite) to replace it.")
    payload, summary = _payload(model, compression)
    if encoder_dir is not None:
        if exists and (ours or others):
            raise InputError("a bundle that carries its encoder is written into a new or empty directory only",
                             path=path, expected="a new or empty directory")
        config = json.loads(payload["config.json"])
        config["config"]["encoder"] = ENCODER_DIR + "/"
        payload = {**payload, "config.json": (json.dumps(config, indent=2) + "\n").encode(),
                   **_encoder_files(Path(encoder_dir))}
    manifest = {
        "format_version": FORMAT_VERSION, "model": model.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": _versions(),
        "provenance": model.provenance_, "n_users": int(model.n_users_), "n_items": int(model.n_items_),
        **({"compression": summary} if summary is not None else {}),
        "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for name, data in payload.items()},
    }
    files = {**payload, MANIFEST: (json.dumps(manifest, indent=2) + "\n").encode()}
    if not exists or not (ours or others):  # a fresh directory: all of it appears at once
        with atomic_dir(path) as tmp:
            for name, data in files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
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
    if not isinstance(files, dict) or not set(BUNDLE_FILES[:-1]) <= set(files) or \
            any(n not in BUNDLE_FILES and not _in_encoder_dir(n) for n in files):
        raise InputError("bundle.json does not list the bundle's files", path=manifest_path,
                         expected=", ".join(BUNDLE_FILES[:-1]) + f" (and the files of {ENCODER_DIR}/)")
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


def _in_encoder_dir(name: str) -> bool:
    """Whether a manifest entry is a file of the carried encoder (a plain relative path under it)."""
    parts = Path(name).parts
    return len(parts) > 1 and parts[0] == ENCODER_DIR and ".." not in parts and not Path(name).is_absolute()


def bundle_files(path: str | Path) -> list[str]:
    """The relative paths of every file of the (checked) bundle at ``path``, ``bundle.json`` last."""
    return [*read_manifest(path)["files"], MANIFEST]


def quantise_linears(module: Any, names: list[str]) -> Any:
    """``module`` with its ``torch.nn.Linear`` submodules ``names`` replaced by torch's dynamically quantised
    int8 linear (weights int8 per tensor, activations quantised per batch, products on int8 kernels), in place.
    """
    import warnings

    import torch

    linears = {n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    unknown = sorted(set(names) - linears)
    if unknown:
        raise ValueError(f"no linear layers named {unknown} to quantise")
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao (not installed)
        warnings.simplefilter("ignore")
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(module, {n: default_dynamic_qconfig for n in names}, dtype=torch.qint8,
                                inplace=True)


def read_bundle(path: Path) -> Any:
    """The model saved at ``path``, fully loaded and checked (see the module docstring)."""
    from llm4rec.data.vocabulary import Vocabulary
    from llm4rec.models.registry import model_class

    manifest = read_manifest(path)
    config = _json(path / "config.json")
    klass = model_class(str(config.get("model", manifest.get("model"))))
    settings = dict(config.get("config", {}))
    if any(_in_encoder_dir(n) for n in manifest["files"]):
        settings["encoder"] = str((path / ENCODER_DIR).resolve())
    model = klass(klass.make_config(settings))
    users = Vocabulary.from_json(_json(path / "users.json"))
    items = Vocabulary.from_json(_json(path / "items.json"))
    arrays_path = path / "arrays.npz"
    try:
        with np.load(arrays_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read the arrays ({type(exc).__name__}: {exc})", path=arrays_path,
                         expected="the .npz file save() wrote") from None
    try:
        from llm4rec.models.compressed import decode_arrays, refined_arrays

        fine = refined_arrays(arrays)  # the int8 rows a shortlist is re-scored with (pq + rescore), or None
        arrays = decode_arrays(arrays)
    except ValueError as exc:
        raise InputError(f"cannot decode the compressed weights ({exc})", path=arrays_path,
                         expected="the arrays save() wrote") from None
    missing = [k for k in _BASE_ARRAYS if k not in arrays]
    if "item_labels" not in arrays and not {"item_labels_utf8", "item_labels_offsets"} <= set(arrays):
        missing.append("item_labels_utf8")
    if missing:
        raise InputError("arrays are missing from the saved model", path=arrays_path, value=missing,
                         expected="the arrays save() wrote")
    n_users, n_items = len(users), len(items)
    offsets, fit_items = arrays["fit_offsets"].astype(np.int64), arrays["fit_items"].astype(np.int32)
    try:
        labels = _labels(arrays)
    except (UnicodeDecodeError, ValueError, IndexError) as exc:
        raise InputError(f"cannot read the item labels ({type(exc).__name__})", path=arrays_path,
                         expected="the arrays save() wrote") from None
    if len(offsets) != n_users + 1 or len(arrays["popularity"]) != n_items or \
            len(labels) != n_items or (len(fit_items) and fit_items.max() >= n_items):
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
    model.item_labels_ = labels
    model.provenance_ = dict(manifest.get("provenance") or {})
    try:
        model._set_state({k[len("state_"):]: v for k, v in arrays.items() if k.startswith("state_")})
    except InputError:
        raise
    except (KeyError, ValueError, RuntimeError, IndexError) as exc:
        raise InputError(f"the saved weights do not fit model {model.name!r} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})", path=arrays_path,
                         expected="a bundle saved by this model type and version") from None
    compression = manifest.get("compression") or {}
    _quantise(model, compression, path)
    shortlist = int(compression.get("rescore") or 0)
    if shortlist and fine:
        import copy

        from llm4rec.models.compressed import attach_rescoring

        exact = copy.copy(model)  # shares everything but the state _set_state replaces
        exact._set_state({k[len("state_"):]: v for k, v in {**arrays, **fine}.items() if k.startswith("state_")})
        _quantise(exact, compression, path)
        attach_rescoring(model, exact, shortlist)
    return model


def _quantise(model: Any, compression: dict[str, Any], path: Path) -> None:
    """Run the linears the compression names on torch's int8 kernels."""
    names = compression.get("quantise_linears") or []
    if names:
        try:
            quantise_linears(model.net_, list(names))
        except (AttributeError, ValueError) as exc:
            raise InputError(f"cannot quantise the model's layers ({exc})", path=path / MANIFEST,
                             expected="a bundle written by llm4rec compress") from None


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", path=path, expected="the file save() wrote") from None
    if not isinstance(value, dict):
        raise InputError("not a JSON object", path=path, expected="the file save() wrote")
    return value

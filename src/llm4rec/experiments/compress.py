"""``llm4rec compress``: a smaller or faster bundle of a fitted model, and what it costs in accuracy.

Methods (each writes a new bundle; the original is never touched):

* ``int8``: the model's large tables stored as 8-bit rows (one range per
  row) and the text encoder swapped for its int8 twin (``minilm`` ->
  ``minilm-qint8``: onnxruntime integer matmuls) for new items and queries.
  With ``linears=true`` the linear layers that each request runs (the
  two-tower's user tower, SASRec's transformer) also run on torch's int8
  kernels after loading (off by default: on Amazon Beauty it cost the
  two-tower 1% of its NDCG@10 and saved no time, see bench/RESULTS.md).
  A LoRA-tuned encoder is kept as it is (its adapters need torch).
* ``pq``: the item tables by product quantisation (faiss; ``pq_dims``
  values per one-byte code), other large tables as int8.
* ``prune``: the text encoder's attention heads and feed-forward neurons cut
  to ``sparsity`` with a short recovery fine-tune on the catalogue's text
  (:func:`llm4rec.text.shrink.prune_encoder`); the catalogue is re-encoded
  with it and the encoder travels in the bundle (``encoder/``).
* ``distill``: a student encoder of ``layers`` layers trained to match the
  teacher's item embeddings on the catalogue's text
  (:func:`llm4rec.text.shrink.distill_encoder`); as ``prune`` otherwise.

The report (:func:`compress_bundle`'s return value; ``compression.json`` and
``compression.md`` in the output folder) sets the two bundles side by side,
measured in the same run: size on disk (the whole bundle, the model's weights,
the text encoder's weights), peak memory of loading the model and evaluating
it, latency of one request (one user's top 10 from their history) and of
encoding 1,000 item texts, and NDCG@10 / Recall@20 under the protocol the
model was fitted for, with a paired test over users.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

from llm4rec.data import Dataset
from llm4rec.errors import InputError
from llm4rec.models import Recommender

__all__ = ["METHODS", "compress_bundle", "write_report"]

METHODS = ("int8", "pq", "prune", "distill")
#: models whose text encoder prune and distill may replace (the catalogue is re-encoded through add_items)
ENCODER_MODELS = ("semantic-knn", "llm-two-tower", "sasrec-text")
#: an encoder's int8 twin
INT8_ENCODERS = {"minilm": "minilm-qint8"}
METRICS = ("NDCG@10", "Recall@20")
_OPTIONS = {"int8": {"linears"}, "pq": {"pq_dims", "rescore"}, "prune": {"sparsity", "recovery_epochs"},
            "distill": {"layers", "epochs"}}


def compress_bundle(model_dir: str | Path, out: str | Path, method: str, dataset: Dataset, *,
                    options: dict[str, Any] | None = None, stage: str = "test", requests: int = 200,
                    progress: bool = False, data_path: str | None = None,
                    on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the ``method``-compressed bundle of the model at ``model_dir`` to ``out`` and return the report.

    ``dataset``: the data the model was fitted on (its protocol and seed are read from the bundle), for the
    catalogue's text (prune, distill) and the before/after evaluation on ``stage``. ``options``:
    ``linears`` (int8, default False), ``pq_dims`` (pq, 2), ``rescore`` (pq, 0: the shortlist re-scored with
    int8 rows kept beside the codes; 0 keeps no rows and scores with the codes alone), ``sparsity`` (prune, 0.5), ``recovery_epochs``
    (prune, 1), ``layers`` (distill, 3), ``epochs`` (distill, 2). ``requests``: users timed one at a time.
    ``progress``: bars while an encoder trains; ``on_step(text)`` hears each step begin.
    """
    step = on_step or (lambda text: None)
    model_dir, out = Path(model_dir), Path(out)
    if method not in METHODS:
        raise InputError("unknown compression method", value=method, expected=" or ".join(METHODS))
    options = dict(options or {})
    unknown = sorted(set(options) - _OPTIONS[method])
    if unknown:
        raise InputError(f"unknown option for --method {method}", value=unknown,
                         expected=", ".join(sorted(_OPTIONS[method])) or "no options")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("the output exists and is not an empty directory", path=out,
                         expected="a new or empty directory for the compressed bundle",
                         hint="Nothing is overwritten: choose another --out.")
    if out.resolve() == model_dir.resolve():
        raise InputError("the output is the model's own directory", path=out, expected="another directory")
    model = Recommender.load(model_dir)
    prov = model.provenance_
    if prov.get("protocol") is None:
        raise InputError("this model was fitted on a whole dataset, so no stage can evaluate it honestly",
                         path=model_dir, expected="a model saved by llm4rec evaluate --save-model (a protocol's "
                                                  "fit set)")
    if prov.get("dataset_fingerprint") != dataset.fingerprint:
        raise InputError("the data is not the dataset this model was fitted on", path=data_path,
                         value=dataset.fingerprint, expected=f"dataset fingerprint {prov.get('dataset_fingerprint')}")
    from llm4rec._atomic import atomic_dir

    protocol, seed = str(prov["protocol"]), int(prov.get("seed", 2026))
    with atomic_dir(out) as target:  # the bundle and its report appear together, or nothing does
        step(f"compressing ({method})")
        start = time.perf_counter()
        record = _compress(model, model_dir, target, method, dataset, options, progress)
        record["compress_seconds"] = round(time.perf_counter() - start, 2)
        del model
        gc.collect()
        record.update(protocol=protocol, seed=seed, stage=stage, model=record.pop("model_name"))
        for side, path in (("before", model_dir), ("after", target)):
            step(f"measuring the {'original' if side == 'before' else 'compressed'} model")
            record[side] = _measure_apart(path, dataset, protocol=protocol, seed=seed, stage=stage,
                                          requests=requests, data_path=data_path)
        record["comparison"] = _compare(record["before"], record["after"])
        write_report(record, target)
    return record


# --------------------------------------------------------------------------- compressing
def _compress(model: Recommender, model_dir: Path, out: Path, method: str, dataset: Dataset,
              options: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Write the compressed bundle; returns what was done (``model_name``, ``method``, ``options``, ``notes``)."""
    record: dict[str, Any] = {"model_name": model.name, "method": method, "source": str(model_dir),
                              "options": options, "notes": []}
    encoder = getattr(model.config, "encoder", None)
    tuned = bool(getattr(model, "adapters_", None))
    prov = model.provenance_
    prov["compressed_from"] = {"path": str(model_dir), "method": method, "options": options}
    if method in ("int8", "pq"):
        compression = {"method": method, "tables": method,
                       "quantise_linears": _query_linears(model) if options.get("linears") else []}
        if method == "pq":
            compression["pq_dims"] = int(options.get("pq_dims", 2))
            compression["rescore"] = _shortlist(options.get("rescore", 0))
        if method == "int8" and encoder in INT8_ENCODERS and not tuned:
            model.config = model.config.model_copy(update={"encoder": INT8_ENCODERS[encoder]})
            record["notes"].append(f"text encoder {encoder!r} -> {INT8_ENCODERS[encoder]!r} (new items, queries)")
        elif method == "int8" and encoder is not None:
            record["notes"].append(f"text encoder {encoder!r} kept: " +
                                   ("its LoRA adapters run in torch" if tuned else "no int8 twin"))
        _write(model, out, compression)
        return record
    if model.name not in ENCODER_MODELS or encoder is None:
        raise InputError(f"--method {method} shrinks the text encoder, and this {model.name!r} model has none it "
                         "can replace", path=model_dir, value=model.name, expected=", ".join(ENCODER_MODELS))
    if tuned:
        raise InputError(f"--method {method} trains a new encoder against the frozen one, but this model's "
                         "catalogue was encoded by its LoRA-tuned encoder", path=model_dir,
                         expected="a model fitted with finetune='none'")
    from llm4rec.text.shrink import distill_encoder, prune_encoder
    from llm4rec.text.templates import item_texts

    known = model.items_.index(list(dataset.items.tokens), unknown="missing")
    rows = np.flatnonzero(known >= 0)  # the dataset's items that the model knows
    everything = item_texts(dataset, model.template_)
    texts = [everything[i] for i in rows.tolist()]
    with tempfile.TemporaryDirectory(prefix="llm4rec-encoder-") as tmp:
        folder = Path(tmp) / "encoder"
        if method == "prune":
            shrink = prune_encoder(encoder, texts, folder, sparsity=float(options.get("sparsity", 0.5)),
                                   recovery_epochs=int(options.get("recovery_epochs", 1)), progress=progress)
        else:
            shrink = distill_encoder(encoder, texts, folder, layers=int(options.get("layers", 3)),
                                     epochs=int(options.get("epochs", 2)), progress=progress)
        record["encoder_training"] = {k: v for k, v in shrink.items() if k != "out"}  # out: a temporary folder
        model.config = model.config.model_copy(update={"encoder": str(folder)})
        model.add_items(dataset.item_table(rows))  # every known item re-encoded by the new encoder
        from llm4rec.text import text_encoder

        prov["encoder_fingerprint"] = text_encoder(str(folder)).fingerprint
        record["notes"].append(f"catalogue of {len(rows)} items re-encoded with the "
                               f"{'pruned' if method == 'prune' else 'distilled'} encoder")
        _write(model, out, {"method": method, "tables": None, "quantise_linears": False}, encoder_dir=folder)
    return record


def _shortlist(value: Any) -> int:
    """The ``rescore`` option as a shortlist size (0: no re-scoring)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError("rescore must be a shortlist size", value=value,
                         expected="a whole number of items, e.g. 100 (0 for none)")
    return value


def _query_linears(model: Recommender) -> list[str]:
    """The linear layers of the network that each request runs (the item side is computed once, at load, in
    float32): the two-tower's user tower; SASRec's transformer blocks."""
    import torch

    net = getattr(model, "net_", None)
    prefixes = {"llm-two-tower": ("user_proj", "user_text_proj", "attn"), "sasrec": ("blocks.",),
                "sasrec-text": ("blocks.",)}.get(model.name)
    if net is None or prefixes is None:
        return []
    return [n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(prefixes)]


def _write(model: Recommender, out: Path, compression: dict[str, Any], encoder_dir: Path | None = None) -> None:
    from llm4rec.models.bundle import write_bundle

    write_bundle(model, out, compression=compression, encoder_dir=encoder_dir)


# --------------------------------------------------------------------------- measuring
def _measure_apart(path: Path, dataset: Dataset, **kwargs: Any) -> dict[str, Any]:
    """:func:`measure` in a fresh process, so that neither bundle's memory, threads or caches touch the other's
    numbers (the dataset travels to it by pickle, in memory only)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, path, dataset, **kwargs).result()


def measure(path: Path, dataset: Dataset, *, protocol: str, seed: int, stage: str = "test", requests: int = 200,
            data_path: str | None = None) -> dict[str, Any]:
    """Size, peak memory, latency and accuracy of the bundle at ``path`` (see the module docstring)."""
    from llm4rec.evaluation.saved import evaluate_saved
    from llm4rec.models.bundle import bundle_files, read_manifest

    manifest = read_manifest(path)
    sizes = {name: (path / name).stat().st_size for name in bundle_files(path)}
    gc.collect()
    exp = evaluate_saved(path, dataset, protocol=protocol, seed=seed, stage=stage, data_path=data_path,
                         metrics=("HR@10", *METRICS))
    model = exp.model
    out = {
        "bundle_bytes": int(sum(sizes.values())),
        "weights_bytes": _weights_bytes(path / "arrays.npz"),
        "compression": manifest.get("compression"),
        "peak_memory_mib": exp.record.get("peak_memory_mib"),
        "eval_seconds": exp.record.get("eval_seconds"),
        "metrics": {m: exp.result.metrics[m] for m in ("HR@10", *METRICS)},
        "per_user": {m: exp.result.per_user[m] for m in METRICS},
        "users": exp.result.users,
        "request_ms": _request_latency(model, exp.split.stage(stage), requests, seed),
        **_encoder_cost(model, dataset),
    }
    return out


def _weights_bytes(arrays_path: Path) -> int:
    """Bytes of the model's own arrays in ``arrays.npz`` (weights and their codes; not ids, labels, histories)."""
    with np.load(arrays_path, allow_pickle=False) as z:
        return int(sum(z[k].nbytes for k in z.files if not k.startswith(("fit_", "popularity", "item_labels"))))


def _request_latency(model: Recommender, stage: Any, requests: int, seed: int) -> dict[str, float]:
    """Milliseconds for one user's top 10 from their fit-set history (external ids in, ids out), one at a
    time, for ``requests`` random evaluated users: median, p95, mean."""
    fit = stage.fit
    rng = np.random.default_rng(seed)
    users = rng.choice(stage.users, size=min(requests, len(stage.users)), replace=False)
    offsets, items = fit.user_offsets, fit.item  # rows by user, oldest first
    tokens = np.asarray(fit.items.tokens)
    times = []
    model.recommend(histories=[list(tokens[items[offsets[users[0]]:offsets[users[0] + 1]]])], k=10)  # warm-up
    for u in users.tolist():
        history = list(tokens[items[offsets[u]:offsets[u + 1]]])
        t0 = time.perf_counter()
        model.recommend(histories=[history], k=10)
        times.append((time.perf_counter() - t0) * 1000)
    t = np.asarray(times)
    return {"p50": round(float(np.median(t)), 3), "p95": round(float(np.quantile(t, 0.95)), 3),
            "mean": round(float(t.mean()), 3), "n": len(t)}


def _encoder_cost(model: Recommender, dataset: Dataset) -> dict[str, Any]:
    """The model's text encoder: weights' bytes and seconds to encode 1,000 item texts (None without one)."""
    name = getattr(model.config, "encoder", None)
    if name is None or getattr(model, "template_", None) is None:
        return {"encoder": None, "encoder_bytes": None, "seconds_per_1k_items": None}
    from llm4rec.text import get_encoder
    from llm4rec.text.templates import item_texts

    texts = item_texts(dataset, model.template_)[:1000]
    encoder = get_encoder(name)
    encoder.encode(texts[:32])  # load and warm up
    t0 = time.perf_counter()
    encoder.encode(texts)
    seconds = (time.perf_counter() - t0) * 1000 / len(texts)
    return {"encoder": Path(name).name if Path(name).is_dir() else name, "encoder_bytes": _encoder_bytes(name, encoder),
            "seconds_per_1k_items": round(seconds, 3)}


def _encoder_bytes(name: str, encoder: Any) -> int | None:
    """Bytes of an encoder's weights as it runs (int8: the quantised graph's), or of its weight files."""
    if getattr(encoder, "weight_bytes_", None) is not None:
        return int(encoder.weight_bytes_)
    folder = Path(name)
    if not folder.is_dir():
        try:
            from llm4rec.text.tuning import _torch_source

            folder = _torch_source(encoder)[0]
        except InputError:
            return None
    return int(sum(p.stat().st_size for p in Path(folder).glob("*") if p.suffix in (".safetensors", ".bin")))


# --------------------------------------------------------------------------- report
def _compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Ratios (before / after for sizes and times) and the paired tests of each metric (after - before)."""
    from llm4rec.evaluation.significance import paired_test

    if not np.array_equal(before["users"], after["users"]):
        raise InputError("the two evaluations scored different users", expected="one stage for both")

    def ratio(key: str, a: dict = before, b: dict = after) -> float | None:
        x, y = a.get(key), b.get(key)
        return round(x / y, 3) if x and y else None

    tests = {}
    for m in METRICS:
        test = paired_test(after["per_user"][m], before["per_user"][m]).to_dict()
        base = before["metrics"][m]
        test["relative_change"] = round(test["mean_diff"] / base, 5) if base else None
        tests[m] = test
    return {"bundle_smaller": ratio("bundle_bytes"), "weights_smaller": ratio("weights_bytes"),
            "encoder_smaller": ratio("encoder_bytes"), "memory_ratio": ratio("peak_memory_mib"),
            "request_speedup": ratio("p50", before["request_ms"], after["request_ms"]),
            "encoding_speedup": ratio("seconds_per_1k_items"), "paired_tests": tests}


def write_report(record: dict[str, Any], out: Path) -> None:
    """``compression.json`` (without per-user arrays) and ``compression.md`` beside the bundle in ``out``."""
    from llm4rec._atomic import atomic_write_bytes

    plain = json.loads(json.dumps(record, default=_jsonable))
    for side in ("before", "after"):
        plain[side].pop("per_user", None)
        plain[side].pop("users", None)
    atomic_write_bytes(out / "compression.json", (json.dumps(plain, indent=2) + "\n").encode())
    atomic_write_bytes(out / "compression.md", markdown(plain).encode())


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:.2f} MB"


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (what ``compression.md`` holds)."""
    b, a, c = report["before"], report["after"], report["comparison"]

    def row(name: str, x: str, y: str, ratio: Any) -> str:
        return f"| {name} | {x} | {y} | {'' if ratio is None else ratio} |"

    lines = [f"# {report['model']}: {report['method']} ({', '.join(f'{k}={v}' for k, v in report['options'].items())})",
             "", f"{report['protocol']} seed {report['seed']}, {report['stage']} stage; source {report['source']}", "",
             "| | before | after | before / after |", "| --- | --- | --- | --- |",
             row("bundle on disk", _mb(b["bundle_bytes"]), _mb(a["bundle_bytes"]), c["bundle_smaller"]),
             row("model weights", _mb(b["weights_bytes"]), _mb(a["weights_bytes"]), c["weights_smaller"]),
             row("text encoder weights", _mb(b["encoder_bytes"]), _mb(a["encoder_bytes"]), c["encoder_smaller"]),
             row("peak memory (load + evaluate)", f"{b['peak_memory_mib']} MiB", f"{a['peak_memory_mib']} MiB",
                 c["memory_ratio"]),
             row("one request, p50 / p95", f"{b['request_ms']['p50']} / {b['request_ms']['p95']} ms",
                 f"{a['request_ms']['p50']} / {a['request_ms']['p95']} ms", c["request_speedup"]),
             row("encoding 1,000 items", _sec(b["seconds_per_1k_items"]), _sec(a["seconds_per_1k_items"]),
                 c["encoding_speedup"])]
    lines += ["", "| metric | before | after | change (after - before) [95% CI] | relative | p (t / Wilcoxon) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for m, t in c["paired_tests"].items():
        rel = "n/a" if t["relative_change"] is None else f"{100 * t['relative_change']:+.2f}%"
        lines.append(f"| {m} | {t['mean_b']:.4f} | {t['mean_a']:.4f} | {t['mean_diff']:+.4f} "
                     f"[{t['ci_low']:+.4f}, {t['ci_high']:+.4f}] | {rel} | {t['t_pvalue']:.3g} / "
                     f"{t['wilcoxon_pvalue']:.3g} |")
    if report["notes"]:
        lines += ["", *(f"- {note}" for note in report["notes"])]
    return "\n".join(lines) + "\n"


def _sec(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f} s"

"""Offline result files for the operator dashboard: ``GET /v1/admin/reports`` and ``/v1/admin/reports/{name}``.

A report is a ``.json`` file directly inside the directory given by ``llm4rec
serve --reports DIR`` (subdirectories are not searched). Its kind is read from
its content, so files can be named freely:

- ``evaluate``: one ``llm4rec evaluate --json`` record (``model``,
  ``protocol``, ``metrics``, ``extra_metrics``, ...);
- ``compare``: a list of such records, as ``llm4rec quickstart --out`` writes
  in ``results.json`` (each with ``intervals_95``: the 95% bootstrap interval
  of every main metric);
- ``simulate``: ``llm4rec simulate --out``'s ``results.json`` (``policies``
  with per-episode reward and regret curves, 95% intervals over seeds);
- ``ope``: ``llm4rec ope --json`` (``estimates``: value and 95% interval per
  estimator, and ``on_policy_value`` when the truth is known);
- ``training``: a training run's ``metrics.json`` (the ``run_dir`` setting of a
  neural model): per-epoch ``history`` of loss and validation metric;
- ``json``: anything else that parses.

Names are checked against the directory's own listing, so no name can reach
outside it. Non-finite numbers (``NaN``, ``Infinity``), which Python's json
writes but JSON does not allow, are read as ``null``.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "MAX_REPORT_BYTES", "detect_kind", "list_reports", "read_report"]

KINDS = ("evaluate", "compare", "simulate", "ope", "training", "json")
#: files larger than this are listed (kind ``json``) but not read
MAX_REPORT_BYTES = 32 * 1024 * 1024


def _error(status: int, problem: str, **kwargs: Any) -> Exception:
    from llm4rec.serving.service import ServiceError

    return ServiceError(status, problem, **kwargs)


def _is_evaluate(data: Any) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("metrics"), dict)
            and "model" in data and "protocol" in data)


def detect_kind(data: Any) -> str:
    """The kind of a parsed report (one of :data:`KINDS`), from the fields the CLI writes."""
    if _is_evaluate(data):
        return "evaluate"
    if isinstance(data, list) and data and all(_is_evaluate(r) for r in data):
        return "compare"
    if isinstance(data, dict):
        policies = data.get("policies")
        if (isinstance(policies, dict) and "simulator" in data and policies
                and all(isinstance(p, dict) and "reward_per_episode" in p for p in policies.values())):
            return "simulate"
        estimates = data.get("estimates")
        if (isinstance(estimates, dict) and "n_rounds" in data
                and all(isinstance(e, dict) and "value" in e for e in estimates.values())):
            return "ope"
        history = data.get("history")
        if (isinstance(history, list) and history and "epochs_run" in data
                and all(isinstance(h, dict) and "epoch" in h for h in history)):
            return "training"
    return "json"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _parse(path: Path) -> Any:
    """The file's JSON with non-finite numbers as None; ValueError when it does not parse."""
    text = path.read_text(encoding="utf-8")
    return _finite(json.loads(text))


@functools.lru_cache(maxsize=512)
def _kind_of(path: str, mtime_ns: int, size: int) -> str:  # keyed by what changes the answer
    if size > MAX_REPORT_BYTES:
        return "json"
    try:
        return detect_kind(_parse(Path(path)))
    except (OSError, ValueError, RecursionError):
        return "json"


def _files(directory: Path) -> dict[str, Path]:
    """The directory's regular ``.json`` files by name (not its subdirectories)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise _error(404, "no reports directory", path=directory,
                     expected="a directory given by `llm4rec serve --reports DIR`")
    return {p.name: p for p in directory.iterdir() if p.suffix == ".json" and p.is_file()}


def list_reports(directory: Path) -> list[dict]:
    """``[{name, kind, modified, bytes}]`` of the directory's ``.json`` files, by name (``modified``: unix s)."""
    out = []
    for name, path in sorted(_files(directory).items()):
        try:
            stat = path.stat()
        except OSError:  # removed since the listing
            continue
        out.append({"name": name, "kind": _kind_of(str(path), stat.st_mtime_ns, stat.st_size),
                    "modified": stat.st_mtime, "bytes": stat.st_size})
    return out


def read_report(directory: Path, name: str) -> dict:
    """``{name, kind, modified, data}``: one report's content and kind.

    A name with a path separator or ``..``, or that is not one of the
    directory's ``.json`` files, is a :class:`~llm4rec.errors.InputError`
    (``ServiceError`` with status 404); a file that does not parse is 422, one
    over :data:`MAX_REPORT_BYTES` is 413.
    """
    expected = "the name of a .json file in the reports directory (GET /v1/admin/reports lists them)"
    if not name or "/" in name or "\\" in name or ".." in name or "\x00" in name:
        raise _error(404, "bad report name", value=name, expected=expected)
    if not name.endswith(".json"):
        raise _error(404, "not a report", value=name, expected=expected)
    path = _files(directory).get(name)
    if path is None:
        raise _error(404, "no such report", value=name, expected=expected)
    try:
        stat = path.stat()
    except FileNotFoundError:  # removed since the listing
        raise _error(404, "no such report", value=name, expected=expected) from None
    if stat.st_size > MAX_REPORT_BYTES:
        raise _error(413, "report too large to show", value=name,
                     expected=f"at most {MAX_REPORT_BYTES // (1024 * 1024)} MiB")
    try:
        data = _parse(path)
    except FileNotFoundError:
        raise _error(404, "no such report", value=name, expected=expected) from None
    except UnicodeDecodeError:
        raise _error(422, "report is not UTF-8 text", value=name, expected="a JSON file") from None
    except (ValueError, RecursionError) as exc:  # json.JSONDecodeError, or nested too deep
        raise _error(422, f"report is not valid JSON ({exc})", value=name, expected="a JSON file") from None
    return {"name": name, "kind": detect_kind(data), "modified": stat.st_mtime, "data": data}

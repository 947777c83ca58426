"""Logged bandit feedback: one row per impression, with the logging policy's propensity.

:func:`load_bandit_logs` reads two layouts.

Open Bandit Dataset (OBD) campaign directory, e.g. ``obd/random/all``
    ``all.csv`` (the directory's name + ``.csv``) and ``item_context.csv``.
    ``item_id`` is the action, ``position`` 1..3 (stored 0-based), ``click``
    the reward, ``propensity_score`` the logging propensity. The number of
    actions is the number of rows of ``item_context.csv``, whose features
    become the action contexts (numeric columns as floats, text columns
    one-hot). The user context is the one-hot of every ``user_feature_*``
    column (hashed categories, as found in this file) followed by the
    ``user-item_affinity_*`` columns as floats.

A generic CSV / TSV / Parquet file
    Columns (the first name found is used): action ``action`` or ``item_id``;
    reward ``reward`` or ``click``; propensity ``propensity``,
    ``propensity_score`` or ``action_prob``; optional ``position`` (0-based
    unless ``position_base=1``; without it every row is position 0). Context
    columns are taken by prefix: ``context_*`` and ``user-item_affinity_*``
    as floats, ``user_feature_*`` one-hot. ``n_actions`` / ``n_positions``
    default to the largest value seen + 1.

Every error names the file, the line, the column and the value. The
propensity is the probability that the logging policy showed this action at
this position, so it must lie in (0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from llm4rec.data.sources._common import require_file
from llm4rec.data.sources.tabular import read_table
from llm4rec.errors import InputError

__all__ = ["BanditLogs", "load_bandit_logs"]

ACTION_NAMES = ("action", "item_id")
REWARD_NAMES = ("reward", "click")
PROPENSITY_NAMES = ("propensity", "propensity_score", "action_prob")
FLOAT_PREFIXES = ("context_", "user-item_affinity_")
CATEGORY_PREFIX = "user_feature_"
OBD_POSITIONS = 3

Fail = Callable[[str, int, str, object, str], InputError]


@dataclass(frozen=True)
class BanditLogs:
    """Logged bandit feedback, one row (round) per impression.

    Attributes:
        action: int64[n] the shown action, 0..n_actions-1.
        position: int64[n] its slot, 0..n_positions-1 (0 = first).
        reward: float64[n] the observed reward (e.g. click 0/1).
        propensity: float64[n] P_logging(action at position | context), in (0, 1].
        n_actions, n_positions: the sizes of the action set and of the slate.
        context: float64[n, d] per-round context, or None.
        action_context: float64[n_actions, d'] per-action features, or None.
        name, source: a label and where the logs came from.
    """

    action: np.ndarray
    position: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    n_actions: int
    n_positions: int
    context: np.ndarray | None = None
    action_context: np.ndarray | None = None
    name: str = "logs"
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.action)
        for field in ("position", "reward", "propensity"):
            if len(getattr(self, field)) != n:
                raise InputError(f"bandit logs: {field} has another length than action",
                                 value=len(getattr(self, field)), expected=f"{n} values")
        if self.context is not None and self.context.shape[0] != n:
            raise InputError("bandit logs: context has another number of rows than action",
                             value=self.context.shape[0], expected=f"{n} rows")
        if self.action_context is not None and self.action_context.shape[0] != self.n_actions:
            raise InputError("bandit logs: action_context has another number of rows than n_actions",
                             value=self.action_context.shape[0], expected=f"{self.n_actions} rows")

        def fail(problem: str, row: int, field: str, value: object, expected: str) -> InputError:
            return InputError(f"bandit logs, row {row}, {field}: {problem}", value=value, expected=expected)

        _validate(self.action, self.position, self.reward, self.propensity, self.n_actions, self.n_positions,
                  fail)

    @property
    def n_rounds(self) -> int:
        return len(self.action)

    @property
    def mean_reward(self) -> float:
        """The logging policy's on-policy value: the mean reward per impression."""
        return float(self.reward.mean())


def _validate(action: np.ndarray, position: np.ndarray, reward: np.ndarray, propensity: np.ndarray,
              n_actions: int, n_positions: int, fail: Fail, columns: dict[str, str] | None = None,
              base: int = 0) -> None:
    """Raise ``fail(...)`` at the first bad row: unknown action or position, bad reward or propensity.

    ``columns`` maps a field to its column name in the file (default: the field's name);
    ``base`` is the file's number of the first position.
    """
    columns = columns or {}
    if len(action) == 0:
        raise InputError("no logged rounds", expected="at least one row")
    checks = [
        ("action", (action < 0) | (action >= n_actions), action + 0,
         f"an action in 0..{n_actions - 1}", "unknown action"),
        ("position", (position < 0) | (position >= n_positions), position + base,
         f"a position in {base}..{n_positions - 1 + base}", "unknown position"),
        ("reward", ~np.isfinite(reward), reward, "a finite number", "bad reward"),
        ("propensity", ~((propensity > 0) & (propensity <= 1)), propensity,
         "a probability in (0, 1]", "propensity outside (0, 1]"),
    ]
    for field, bad, shown, expected, problem in checks:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise fail(problem, row, columns.get(field, field), shown[row].item(), expected)


def load_bandit_logs(path: str | Path, *, n_actions: int | None = None, n_positions: int | None = None,
                     position_base: int | None = None, name: str | None = None) -> BanditLogs:
    """Read logged bandit feedback (see the module docstring for the layouts).

    Args:
        path: an OBD campaign directory, or a CSV / TSV / Parquet file.
        n_actions: the size of the action set (OBD: the rows of ``item_context.csv``;
            generic: the largest action + 1).
        n_positions: the slate length (OBD: 3; generic: the largest position + 1).
        position_base: the first position's number in the file (OBD: 1; generic: 0).
        name: a label; default: the directory's or file's name.
    """
    path = Path(path)
    items = None
    if path.is_dir():
        table = next((path / f"{path.name}{s}" for s in (".csv", ".parquet") if (path / f"{path.name}{s}").is_file()),
                     None)
        if table is None:
            raise InputError("not an Open Bandit Dataset campaign directory", path=path,
                             expected=f"{path.name}.csv and item_context.csv inside it (e.g. obd/random/all)")
        items = _item_context(require_file(path / "item_context.csv", "item context table"))
        n_actions = n_actions or items.shape[0]
        n_positions = n_positions or OBD_POSITIONS
        position_base = 1 if position_base is None else position_base
        name = name or "/".join(path.parts[-2:])
    else:
        table = require_file(path, "bandit log table")
        position_base = position_base or 0
        name = name or table.stem
    frame = read_table(table)
    offset = 2 if table.suffix != ".parquet" else None

    def where(row: int) -> tuple[int | None, str]:
        return (None, f"row {row}: ") if offset is None else (row + offset, "")

    def fail(problem: str, row: int, column: str, value: object, expected: str) -> InputError:
        line, prefix = where(row)
        return InputError(prefix + problem, path=table, line=line, column=column, value=value, expected=expected)

    def pick(names: tuple[str, ...], what: str) -> str:
        found = next((c for c in names if c in frame.columns), None)
        if found is None:
            raise InputError(f"missing {what} column", path=table,
                             expected="a column named " + " or ".join(names)
                             + (" (the logging policy's probability of the logged action)"
                                if what == "propensity" else ""))
        return found

    columns = {"action": pick(ACTION_NAMES, "action"), "reward": pick(REWARD_NAMES, "reward"),
               "propensity": pick(PROPENSITY_NAMES, "propensity")}
    if "position" in frame.columns:
        columns["position"] = "position"
    values = {key: _numbers(frame.get_column(col), col, fail) for key, col in columns.items()}
    for key in ("action", "position"):
        if key in values:
            raw = values[key]
            if (bad := raw != np.round(raw)).any():
                row = int(np.flatnonzero(bad)[0])
                raise fail("not a whole number", row, columns[key], raw[row].item(), "an integer")
    action = values["action"].astype(np.int64)
    position = values["position"].astype(np.int64) - position_base if "position" in values else \
        np.zeros(len(action), np.int64)
    if n_actions is None:
        n_actions = int(action.max()) + 1 if len(action) else 1
    if n_positions is None:
        n_positions = int(position.max()) + 1 if len(position) else 1
    _validate(action, position, values["reward"], values["propensity"], n_actions, n_positions, fail,
              {"position": "position", **columns}, base=position_base)
    return BanditLogs(action=action, position=position, reward=values["reward"], propensity=values["propensity"],
                      n_actions=n_actions, n_positions=n_positions, context=_user_context(frame, fail),
                      action_context=items, name=name, source=str(path))


def _numbers(raw: pl.Series, column: str, fail: Fail) -> np.ndarray:
    """float64[n] from a text or numeric column; a blank or non-number is an error at its row."""
    parsed = raw.cast(pl.Float64) if raw.dtype.is_numeric() else \
        raw.cast(pl.Utf8).str.strip_chars().cast(pl.Float64, strict=False)
    if (bad := parsed.is_null()).any():
        row = int(bad.arg_true()[0])
        raise fail("not a number" if raw[row] is not None else "missing value", row, column, raw[row], "a number")
    return parsed.to_numpy().astype(np.float64)


def _user_context(frame: pl.DataFrame, fail: Fail) -> np.ndarray | None:
    """float64[n, d]: one-hot ``user_feature_*`` categories, then float context columns; None without any."""
    categorical = [c for c in frame.columns if c.startswith(CATEGORY_PREFIX)]
    floats = [c for c in frame.columns if c.startswith(FLOAT_PREFIXES)]
    if not categorical and not floats:
        return None
    parts = [_one_hot(frame.get_column(c)) for c in categorical]
    parts += [_numbers(frame.get_column(c), c, fail)[:, None] for c in floats]
    return np.hstack(parts)


def _one_hot(raw: pl.Series) -> np.ndarray:
    """float64[n, n_categories] in sorted category order (a missing value is its own category)."""
    codes = raw.cast(pl.Utf8).fill_null("").to_numpy()
    categories, index = np.unique(codes, return_inverse=True)
    out = np.zeros((len(codes), len(categories)))
    out[np.arange(len(codes)), index] = 1.0
    return out


def _item_context(path: Path) -> np.ndarray:
    """float64[n_items, d'] from OBD's ``item_context.csv``, rows in ``item_id`` order 0..n_items-1."""
    frame = read_table(path)
    if "item_id" not in frame.columns:
        raise InputError("missing item_id column", path=path, expected="a column named item_id")

    def fail(problem: str, row: int, column: str, value: object, expected: str) -> InputError:
        return InputError(problem, path=path, line=row + 2, column=column, value=value, expected=expected)

    ids = _numbers(frame.get_column("item_id"), "item_id", fail)
    if not np.array_equal(np.sort(ids), np.arange(len(ids))):
        row = int(np.flatnonzero(np.sort(ids) != np.arange(len(ids)))[0])
        raise InputError("item ids are not 0..n_items-1, each once", path=path, column="item_id",
                         value=np.sort(ids)[row].item(), expected=f"item id {row}")
    features = []
    for column in frame.columns:
        if column in ("", "item_id"):
            continue
        raw = frame.get_column(column)
        numeric = raw.str.strip_chars().cast(pl.Float64, strict=False)
        features.append(numeric.to_numpy()[:, None] if numeric.null_count() == 0 else _one_hot(raw))
    out = np.hstack(features) if features else np.zeros((len(ids), 0))
    return out[np.argsort(ids)]

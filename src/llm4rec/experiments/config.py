"""Experiment files: a whole comparison (data, protocol, seeds, models, report) as one TOML file.

``load_config(path, overrides)`` reads the file with :mod:`tomllib`, applies
``--set KEY=VALUE`` overrides, expands ``$VAR`` / ``${VAR:-default}`` in paths,
resolves relative paths against the file's directory and validates everything
(models, settings, tuning spaces, the dataset's path and loading options)
before any data is read. Every error names the file, the line and the dotted
key (``models.als.settings.factors``: models are addressed by label), or the
``--set`` option it came from::

    name = "ml-100k baselines, P-LOO"
    [data]
    path = "${LLM4REC_SHARED_DATA:-../../shared/data}/ml-100k"
    [protocol]
    name = "loo"          # loo, loo100, rand, cold
    seeds = [2026]
    [report]
    baseline = "ease"     # default: the first model
    [[models]]
    name = "ease"
    settings = { l2 = 400.0 }
    [[models]]
    name = "als"
    tune = { space = ["factors=[32,64,128]", "regularization=log(0.01,1)"], trials = 20 }
"""

from __future__ import annotations

import bisect
import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from llm4rec.errors import InputError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["DataConfig", "ExperimentConfig", "ModelEntry", "ProtocolConfig", "ReportConfig", "TuneConfig",
           "load_config"]

_STRICT = ConfigDict(extra="forbid", strict=True)
#: a label names files (per_user/<label>-<seed>.npz) and --set keys (models.<label>.settings...)
_LABEL = r"^[A-Za-z0-9][A-Za-z0-9_+-]*$"
#: the [data] keys that are paths: $VAR expanded, relative to the TOML file
_PATH_KEYS = ("path", "items_path", "users_path")


class DataConfig(BaseModel):
    """``[data]``: the dataset and the loading options of ``llm4rec evaluate`` (those its format takes)."""

    model_config = _STRICT
    path: str
    format: str = "auto"
    name: str | None = None
    separator: str | None = None
    user_col: str | None = None
    item_col: str | None = None
    timestamp_col: str | None = Field(None, description='"none": no timestamp, the row order is the time order')
    rating_col: str | None = Field(None, description='"none": no ratings')
    items_path: str | None = None
    item_key: str | None = None
    users_path: str | None = None
    user_key: str | None = None
    text_columns: list[str] | None = None
    ratings_file: str | None = None
    encoding: str | None = None
    tags: bool | None = None

    def loader_options(self) -> dict[str, Any]:
        """The keyword options of :func:`llm4rec.data.sources.load_dataset` that were given."""
        options = {k: v for k, v in self.model_dump(exclude={"path", "format"}).items() if v is not None}
        for key in ("timestamp_col", "rating_col"):
            if str(options.get(key, "")).lower() == "none":
                options[key] = None
        return options


class ProtocolConfig(BaseModel):
    """``[protocol]``: the split (PROTOCOLS.md), the stage evaluated and the seeds (each run once per seed)."""

    model_config = _STRICT
    name: str = "loo"
    stage: Literal["test", "valid"] = "test"
    seeds: list[int] = Field(default_factory=lambda: [2026], min_length=1)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        from llm4rec.data.splits import PROTOCOLS, check_protocol

        try:
            return check_protocol(value)
        except InputError:
            raise ValueError(f"unknown protocol; expected one of {', '.join(PROTOCOLS)}") from None

    @field_validator("seeds")
    @classmethod
    def _unique(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("a seed is listed twice")
        return value


class ReportConfig(BaseModel):
    """``[report]``: the model the others are tested against (a label) and the metrics shown."""

    model_config = _STRICT
    baseline: str | None = Field(None, description="default: the first model's label")
    metrics: list[str] = Field(default_factory=list, description="default: the protocol's metrics")


class TuneConfig(BaseModel):
    """``tune = {...}`` of a model: search ``space`` on the valid stage, then one test run of the best."""

    model_config = _STRICT
    space: list[str] = Field(min_length=1, description='specs of llm4rec tune, e.g. "l2=log(10,1000)"')
    trials: int = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0, description="seconds for the whole search")


class ModelEntry(BaseModel):
    """One ``[[models]]`` entry: a registered model with fixed ``settings``, optionally tuned."""

    model_config = _STRICT
    name: str
    label: str | None = Field(None, pattern=_LABEL, description="default: the name; unique")
    settings: dict[str, Any] = Field(default_factory=dict)
    tune: TuneConfig | None = None

    @model_validator(mode="after")
    def _default_label(self) -> ModelEntry:
        self.label = self.label or self.name
        return self


class ExperimentConfig(BaseModel):
    """A whole comparison; :func:`load_config` reads one from a TOML file."""

    model_config = _STRICT
    name: str = Field("", description="the report's title; default: the file's stem")
    data: DataConfig
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    models: list[ModelEntry] = Field(min_length=1)
    _source: Path | None = PrivateAttr(None)
    _text: str | None = PrivateAttr(None)
    _overrides: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _default_baseline(self) -> ExperimentConfig:
        self.report.baseline = self.report.baseline or self.models[0].label
        return self

    @property
    def source(self) -> Path | None:
        """The TOML file this was read from (None when built in Python)."""
        return self._source

    @property
    def text(self) -> str | None:
        """The file's text as given."""
        return self._text

    @property
    def overrides(self) -> list[str]:
        """The command-line options applied on top of the file (``--set K=V``, ``--seeds``)."""
        return list(self._overrides)

    @property
    def labels(self) -> list[str]:
        return [m.label for m in self.models]


#: the fields of each table, for "unknown key" messages (array indices dropped from the path)
_TABLES: dict[tuple[str, ...], type[BaseModel]] = {
    (): ExperimentConfig, ("data",): DataConfig, ("protocol",): ProtocolConfig, ("report",): ReportConfig,
    ("models",): ModelEntry, ("models", "tune"): TuneConfig}


# ------------------------------------------------------------------------------------------------ loading
def load_config(path: str | Path, overrides: Sequence[str] = (), *, seeds: Sequence[int] | None = None
                ) -> ExperimentConfig:
    """Read, override, resolve and validate an experiment file (InputError naming file, line and key).

    ``overrides`` are ``KEY=VALUE`` strings (``--set``): the value is read as a TOML value (a string when
    it is not one), the dotted key addresses a model by its label (``models.ease.settings.l2=200``).
    ``seeds`` replaces ``protocol.seeds`` (``--seeds``). Paths given by ``--set`` are relative to the
    current directory, those of the file to the file's directory.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("experiment file not found", path=path, expected="a TOML file")
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise InputError("the experiment file is not UTF-8 text", path=path, value=exc.reason) from None
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc)) or "bad TOML"
        raise InputError(f"not valid TOML: {message}", path=path, line=int(found[1]) if found else None) from None
    where = _Where(path, _locate(text), raw)
    for option in overrides:
        _apply_override(raw, option, where)
    if seeds is not None:
        raw.setdefault("protocol", {})["seeds"] = list(seeds)
        where.origin[("protocol", "seeds")] = f"--seeds {','.join(map(str, seeds))}"
    for key in _PATH_KEYS:
        data = raw.get("data")
        if isinstance(data, dict) and isinstance(data.get(key), str):
            loc = ("data", key)
            base = Path.cwd() if where.option(loc) else path.parent
            data[key] = str((base / Path(_expand(data[key], where, loc)).expanduser()).resolve())
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise where.from_pydantic(exc) from None
    config.name = config.name or path.stem
    _check(config, where)
    config._source, config._text = path, text
    config._overrides = [f"--set {o}" for o in overrides]
    if seeds is not None:
        config._overrides.append(where.origin[("protocol", "seeds")])
    return config


def _expand(value: str, where: _Where, loc: tuple) -> str:
    """``$VAR``, ``${VAR}`` and ``${VAR:-default}`` (the default when VAR is unset or empty), as a shell does."""
    def substitute(match: re.Match) -> str:
        name, default = match["name"] or match["bare"], match["default"]
        found = os.environ.get(name)
        if found or (found is not None and default is None):
            return found
        if default is not None:
            return default
        raise where.error(loc, f"environment variable {name} is not set", value=value,
                          expected=f"a value for {name}, or a default: ${{{name}:-DEFAULT}}")

    return re.sub(r"\$(?:\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))", substitute, value)


def _parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML value (``400``, ``[7, 11]``, ``{ l2 = 1 }``, ``true``), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_override(raw: dict, option: str, where: _Where) -> None:
    """Set ``KEY=VALUE`` in the raw TOML data; models are addressed by label (their name by default)."""
    shown = f"--set {option}"
    key, sep, text = option.partition("=")
    parts = [p.strip() for p in key.split(".")]
    if not sep or not all(parts):
        raise InputError(f"bad option {shown}", expected="--set KEY=VALUE with a dotted key, e.g. "
                         "protocol.seeds=[7,11], models.ease.settings.l2=200 or report.baseline=als")
    node: Any = raw
    loc: tuple = ()
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list) and loc == ("models",):
            labels = [m.get("label", m.get("name")) if isinstance(m, dict) else None for m in node]
            if part not in labels:
                raise InputError(f"{shown}: no model labelled {part!r}", value=part,
                                 expected="one of: " + ", ".join(map(str, labels)),
                                 hint="A model is addressed by its label (its name unless it has a label).")
            if last:
                raise InputError(f"{shown}: a model is set one key at a time",
                                 expected=f"e.g. --set models.{part}.settings.KEY=VALUE")
            index = labels.index(part)
            node, loc = node[index], (*loc, index)
            continue
        if not isinstance(node, dict):
            raise InputError(f"{shown}: {'.'.join(parts[:depth])} is a value, not a table", value=node,
                             expected="a dotted key through tables, e.g. protocol.seeds")
        loc = (*loc, part)
        if last:
            node[part] = _parse_value(text.strip())
        else:
            node = node.setdefault(part, {})
    where.origin[loc] = shown


# ------------------------------------------------------------------------------------------------ checks
def _check(config: ExperimentConfig, where: _Where) -> None:
    """What the types cannot say: models and their settings, labels, baseline, metrics, tuning, the dataset."""
    from llm4rec.data.splits import PROTOCOLS
    from llm4rec.models import create_model, model_class

    raw_models = where.raw["models"]
    seen: dict[str, int] = {}
    for i, entry in enumerate(config.models):
        try:
            klass = model_class(entry.name)
        except InputError as exc:
            raise where.wrap(exc, ("models", i, "name")) from None
        try:
            create_model(entry.name, entry.settings)
        except InputError as exc:
            try:
                klass.Config(**entry.settings)
                bad: tuple = ()
            except ValidationError as invalid:
                bad = tuple(invalid.errors()[0]["loc"])
            raise where.wrap(exc, ("models", i, "settings", *bad)) from None
        if entry.label in seen:
            loc = ("models", i, "label" if "label" in raw_models[i] else "name")
            raise where.error(loc, f"label {entry.label!r} is used twice (also by model {seen[entry.label] + 1})",
                              expected="unique labels", hint='Give one of them a label, e.g. label = "ease-200".')
        seen[entry.label] = i
        if entry.tune is not None:
            if config.protocol.stage != "test":
                raise where.error(("models", i, "tune"), "a tuned model needs protocol.stage = \"test\"",
                                  value=config.protocol.stage,
                                  expected="stage test (tuning itself runs on the valid stage)")
            _check_space(entry, i, where)
    if config.report.baseline not in seen:
        raise where.error(("report", "baseline"), "the baseline is not among the models",
                          value=config.report.baseline, expected="one of the labels: " + ", ".join(seen))
    allowed = PROTOCOLS[config.protocol.name]["metrics"]
    for j, metric in enumerate(config.report.metrics):
        if metric not in allowed:
            raise where.error(("report", "metrics", j), f"{config.protocol.name} does not report this metric",
                              value=metric, expected="some of " + ", ".join(allowed))
    _check_data(config.data, where)


def _check_space(entry: ModelEntry, i: int, where: _Where) -> None:
    """Each spec of ``tune.space`` parses and names a setting the model accepts; no setting is searched twice."""
    from llm4rec.experiments.space import check_space, parse_space

    for j, spec in enumerate(entry.tune.space):
        try:
            check_space(parse_space([spec]), entry.name, entry.settings)
        except InputError as exc:
            raise where.wrap(exc, ("models", i, "tune", "space", j)) from None
    try:
        parse_space(entry.tune.space)
    except InputError as exc:
        raise where.wrap(exc, ("models", i, "tune", "space")) from None


def _check_data(data: DataConfig, where: _Where) -> None:
    """The dataset and attribute tables exist; the format is known; every loading option applies to it."""
    import inspect

    from llm4rec.data.sources import FORMATS, detect_format, load_amazon, load_movielens, load_recbole, load_table

    for key in _PATH_KEYS:
        given = getattr(data, key)
        if given is not None and not Path(given).exists():
            raise where.error(("data", key), f"{'dataset' if key == 'path' else 'file'} not found: {given}",
                              expected="an existing file or directory")
    if data.format not in FORMATS:
        raise where.error(("data", "format"), "unknown dataset format", value=data.format,
                          expected="one of " + ", ".join(FORMATS))
    try:
        fmt = detect_format(data.path) if data.format == "auto" else data.format
    except InputError as exc:
        raise where.wrap(exc, ("data", "path")) from None
    loader = {"movielens": load_movielens, "recbole": load_recbole, "amazon": load_amazon}.get(fmt, load_table)
    takes = [p for p in inspect.signature(loader).parameters if p != "path"]
    for key in data.loader_options():
        if key not in takes:
            raise where.error(("data", key), f"this option does not apply to {fmt} data",
                              expected=f"options of the {fmt} loader: " + ", ".join(takes))


# ------------------------------------------------------------------------------------------------ errors
class _Where:
    """Turns a key path (``("models", 1, "settings", "l2")``) into the file's line, or the --set option."""

    def __init__(self, path: Path, lines: dict[tuple, int], raw: dict) -> None:
        self.path, self.lines, self.raw = path, lines, raw
        self.origin: dict[tuple, str] = {}  # key path -> the command-line option that set it

    def option(self, loc: tuple) -> str | None:
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.origin:
                return self.origin[loc[:n]]
        return None

    def dotted(self, loc: tuple) -> str:
        """``models.als.settings.factors`` (by label, as --set takes it), ``models[2]`` without one."""
        out, node = "", self.raw
        for part in loc:
            label = None
            if isinstance(part, int) and isinstance(node, list) and part < len(node) and isinstance(node[part], dict):
                label = node[part].get("label", node[part].get("name"))
            if isinstance(part, int):
                out += f".{label}" if isinstance(label, str) else f"[{part}]"
            else:
                out += f".{part}" if out else str(part)
            node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        return out.lstrip(".")

    def error(self, loc: tuple, problem: str, **details: Any) -> InputError:
        option = self.option(loc)
        if option is not None:
            return InputError(f"{option}: {problem}", **details)
        line = next((self.lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in self.lines), None)
        return InputError(problem, path=self.path, line=line, key=self.dotted(loc) or None, **details)

    def wrap(self, exc: InputError, loc: tuple) -> InputError:
        """``exc`` (e.g. from a model's config) placed at ``loc``."""
        return self.error(loc, exc.problem, value=exc.value, expected=exc.expected, hint=exc.hint)

    def from_pydantic(self, exc: ValidationError) -> InputError:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        name = str(loc[-1]) if loc else ""
        if err["type"] == "extra_forbidden":
            fields = list(_TABLES.get(tuple(p for p in loc[:-1] if isinstance(p, str)), ExperimentConfig).model_fields)
            close = difflib.get_close_matches(name, fields, n=1)
            return self.error(loc, f"unknown key {name!r}", expected="one of: " + ", ".join(fields),
                              hint=f"Did you mean {close[0]!r}?" if close else None)
        if err["type"] == "missing":
            return self.error(loc, f"missing key {name!r}")
        message = err["msg"].removeprefix("Value error, ")
        return self.error(loc, message[0].lower() + message[1:], value=err.get("input"))


def _has(node: dict | list, part: Any) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and part < len(node)


# ------------------------------------------------------------------------------------------------ lines
def _locate(text: str) -> dict[tuple, int]:
    """The line of every table, key and array element of a valid TOML document, by key path.

    ``[[models]]`` entries get their index (``("models", 1, "settings", "l2")``); keys inside inline tables
    and elements of multi-line arrays get their own line. tomllib keeps no positions, so this is a scanner
    over the (already validated) text.
    """
    return _Scanner(text).scan()


class _Scanner:
    _BARE = re.compile(r"[A-Za-z0-9_-]+")

    def __init__(self, text: str) -> None:
        self.text, self.i = text, 0
        self.starts = [0] + [m.end() for m in re.finditer(r"\n", text)]
        self.lines: dict[tuple, int] = {}
        self.arrays: dict[tuple, int] = {}  # array-of-tables path -> index of its last entry

    def line(self) -> int:
        return bisect.bisect_right(self.starts, self.i)

    def peek(self, n: int = 1) -> str:
        return self.text[self.i:self.i + n]

    def skip(self, newlines: bool) -> None:
        """Whitespace and comments (and newlines when ``newlines``)."""
        while self.i < len(self.text):
            c = self.text[self.i]
            if c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            elif c == "#":
                end = self.text.find("\n", self.i)
                self.i = len(self.text) if end < 0 else end
            else:
                return

    def scan(self) -> dict[tuple, int]:
        table: tuple = ()
        while True:
            self.skip(newlines=True)
            if self.i >= len(self.text):
                return self.lines
            line = self.line()
            if self.peek(2) == "[[":
                self.i += 2
                keys = self.key()
                self.i += 2  # ]]
                parent = self.resolve(keys[:-1]) + (keys[-1],)
                self.arrays[parent] = self.arrays.get(parent, -1) + 1
                table = (*parent, self.arrays[parent])
                self.lines.setdefault(parent, line)
            elif self.peek() == "[":
                self.i += 1
                keys = self.key()
                self.i += 1  # ]
                table = self.resolve(keys)
            else:
                self.pair(table)
                continue
            self.lines[table] = line

    def resolve(self, keys: tuple) -> tuple:
        """A header's key path with the current index of each array of tables along it."""
        out: tuple = ()
        for key in keys:
            out = (*out, key)
            if out in self.arrays:
                out = (*out, self.arrays[out])
        return out

    def key(self) -> tuple:
        """A dotted key: bare or quoted parts."""
        parts = []
        while True:
            self.skip(newlines=False)
            c = self.peek()
            if c in "\"'":
                start = self.i
                self.string()
                parts.append(tomllib.loads(f"k = {self.text[start:self.i]}")["k"])
            else:
                match = self._BARE.match(self.text, self.i)
                parts.append(match.group())
                self.i = match.end()
            self.skip(newlines=False)
            if self.peek() != ".":
                return tuple(parts)
            self.i += 1

    def pair(self, table: tuple) -> None:
        line = self.line()
        keys = self.key()
        self.i += 1  # =
        for n in range(1, len(keys)):
            self.lines.setdefault((*table, *keys[:n]), line)
        self.lines[(*table, *keys)] = line
        self.skip(newlines=False)
        self.value((*table, *keys))

    def value(self, path: tuple) -> None:
        c = self.peek()
        if c in "\"'":
            self.string()
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip(newlines=True)
                if self.peek() == "]":
                    self.i += 1
                    return
                self.lines[(*path, index)] = self.line()
                self.value((*path, index))
                self.skip(newlines=True)
                if self.peek() == ",":
                    self.i += 1
                index += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip(newlines=True)
                if self.peek() == "}":
                    self.i += 1
                    return
                self.pair(path)
                self.skip(newlines=True)
                if self.peek() == ",":
                    self.i += 1
        else:  # number, boolean, date-time (which may hold a space)
            match = re.compile(r"[^,\]}#\r\n]*").match(self.text, self.i)
            self.i = match.end()

    def string(self) -> None:
        quote = self.peek()
        delimiter = quote * 3 if self.peek(3) == quote * 3 else quote
        self.i += len(delimiter)
        while not self.text.startswith(delimiter, self.i):
            self.i += 2 if quote == '"' and self.peek() == "\\" else 1
        self.i += len(delimiter)
        if len(delimiter) == 3:  # up to two quotes may end the content: """a"""" is 'a"'
            for _ in range(2):
                if self.peek() == quote:
                    self.i += 1

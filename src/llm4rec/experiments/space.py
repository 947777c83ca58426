"""Search spaces of ``llm4rec tune``: ``l2=log(10,2000)``, ``factors=[32,64,128]``, ``lora.rank=[4,8]``.

``parse_space(["l2=log(10,2000)", "loss=[ce,bce]"])`` returns one :class:`Param`
per name. Ranges: ``log(LOW,HIGH)`` (float, log-uniform), ``float(LOW,HIGH)`` or
``uniform(LOW,HIGH)``, ``int(LOW,HIGH)``, ``intlog(LOW,HIGH)`` (bounds included).
Choices: ``[32,64]``, ``["ce","bce"]`` or bare words ``[ce,bce]`` (a grid).
A dotted name sets a nested setting, as ``--set lora.rank=8`` does.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from llm4rec.errors import InputError

__all__ = ["Param", "check_space", "parse_space", "settings_for"]

SYNTAX = ("NAME=log(LOW,HIGH), float(LOW,HIGH), uniform(LOW,HIGH), int(LOW,HIGH), intlog(LOW,HIGH) or "
          "[CHOICE,...], e.g. l2=log(10,2000), factors=[32,64,128] or loss=[ce,bce]")

_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_RANGE = re.compile(r"(log|float|uniform|int|intlog)\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)", re.IGNORECASE)


@dataclass(frozen=True)
class Param:
    """One searched setting: a range (``kind`` "float" or "int", ``log`` scale) or ``choices`` (a grid)."""

    name: str
    kind: str  # "float", "int" or "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()

    @property
    def categorical(self) -> bool:
        return self.kind == "choice"

    def suggest(self, trial: Any) -> Any:
        """This parameter's value for an Optuna ``trial``."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def values(self) -> tuple:
        """The values to check against the model's config: the bounds, or every choice."""
        return self.choices if self.categorical else (self.low, self.high)

    def spec(self) -> str:
        """The canonical spec (``parse_space([p.spec()])`` gives ``p`` back)."""
        if self.categorical:
            return f"{self.name}={json.dumps(list(self.choices))}"
        kind = {("float", True): "log", ("float", False): "float", ("int", True): "intlog",
                ("int", False): "int"}[self.kind, self.log]
        return f"{self.name}={kind}({json.dumps(self.low)}, {json.dumps(self.high)})"


def parse_space(specs: list[str]) -> dict[str, Param]:
    """Parse ``NAME=RANGE`` / ``NAME=[CHOICES]`` specs; InputError names the parameter and the syntax."""
    space: dict[str, Param] = {}
    for spec in specs:
        param = _parse_one(spec)
        for other in space:
            if other == param.name:
                raise _bad(param.name, spec, "given twice")
            if other.startswith(param.name + ".") or param.name.startswith(other + "."):
                raise _bad(param.name, spec, f"conflicts with {other!r} (a setting and one of its fields)")
        space[param.name] = param
    return space


def _bad(name: str, spec: str, problem: str, expected: str = SYNTAX) -> InputError:
    return InputError(f"search space parameter {name!r}: {problem}", value=spec, expected=expected)


def _parse_one(spec: str) -> Param:
    key, sep, body = spec.partition("=")
    name, body = key.strip().removeprefix("model."), body.strip()
    if not sep or not _NAME.fullmatch(name):
        raise _bad(name or spec, spec, "not NAME=RANGE or NAME=[CHOICES]")
    if not body:
        raise _bad(name, spec, "no range or choices after '='")
    if body.startswith("["):
        return Param(name, "choice", choices=_choices(name, spec, body))
    match = _RANGE.fullmatch(body)
    if match is None:
        raise _bad(name, spec, "cannot read the range")
    kind = match[1].lower()
    integer = kind in ("int", "intlog")
    low, high = (_number(name, spec, text, integer) for text in (match[2], match[3]))
    if not low < high:
        raise _bad(name, spec, "the low bound must be below the high bound", "LOW < HIGH")
    log = kind in ("log", "intlog")
    if log and low <= 0:
        raise _bad(name, spec, "a log scale needs a positive low bound", "0 < LOW < HIGH")
    return Param(name, "int" if integer else "float", low, high, log)


def _number(name: str, spec: str, text: str, integer: bool) -> float | int:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise _bad(name, spec, f"{text!r} is not {'a whole number' if integer else 'a number'}") from None
    if not math.isfinite(value):
        raise _bad(name, spec, f"{text!r} is not a finite number")
    return value


def _choices(name: str, spec: str, body: str) -> tuple:
    try:
        values = json.loads(body)
    except json.JSONDecodeError:
        if not body.endswith("]"):
            raise _bad(name, spec, "the list of choices has no closing ']'") from None
        values = [_word(item.strip()) for item in body[1:-1].split(",")] if body[1:-1].strip() else []
    if not isinstance(values, list):
        raise _bad(name, spec, "cannot read the list of choices")
    if not values:
        raise _bad(name, spec, "the list of choices is empty", "at least one choice, e.g. [32,64,128]")
    for value in values:
        if not (value is None or isinstance(value, (str, int, float, bool))) or value == "":
            raise _bad(name, spec, f"choice {value!r} is not a number, a word, true, false or null",
                       "scalar choices; search a nested setting through its fields, e.g. lora.rank=[4,8]")
    keys = [json.dumps(v) for v in values]
    if len(set(keys)) < len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise _bad(name, spec, f"choice {twice} is listed twice", "distinct choices")
    return tuple(values)


def _word(item: str) -> Any:
    """One choice of a bare list: JSON when it parses (``64``, ``true``), the word itself otherwise."""
    try:
        return json.loads(item)
    except json.JSONDecodeError:
        return item


def settings_for(point: dict[str, Any], fixed: dict[str, Any] | None = None) -> dict[str, Any]:
    """Model settings: ``fixed`` (nested, as from ``--set``) with the dotted ``point`` values set into it.

    ``settings_for({"lora.rank": 8}, {"lora": {"alpha": 16}})`` is
    ``{"lora": {"alpha": 16, "rank": 8}}``. A name also fixed is an InputError.
    """
    out = copy.deepcopy(fixed or {})
    for name, value in point.items():
        *sections, leaf = name.split(".")
        node = out
        for depth, section in enumerate(sections):
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise InputError(f"search space parameter {name!r} is inside the fixed setting "
                                 f"{'.'.join(sections[:depth + 1])!r}", value=name,
                                 expected="fix its fields instead (--set SECTION.FIELD=VALUE), or search it whole")
        if leaf in node:
            raise InputError(f"search space parameter {name!r} is also a fixed setting", value=name,
                             expected="either --set or --space for one setting")
        node[leaf] = value
    return out


def check_space(space: dict[str, Param], model: str, fixed: dict[str, Any] | None = None) -> None:
    """Before any work: the model knows every searched setting and accepts its bounds or choices.

    InputError names the parameter (an unknown setting, a value its config refuses,
    a clash with a fixed setting); a bad fixed setting or model name is reported as such.
    """
    from llm4rec.models import create_model

    create_model(model, fixed)
    for name, param in space.items():
        for value in param.values():
            settings = settings_for({name: value}, fixed)
            try:
                create_model(model, settings)
            except InputError as exc:
                raise _bad(name, param.spec(), exc.problem, exc.expected or SYNTAX) from None

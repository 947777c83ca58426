"""External ids <-> dense indices."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

from llm4rec.errors import InputError

__all__ = ["Vocabulary"]

_INT = re.compile(r"^[+-]?\d+$")


def _all_integers(tokens: Sequence[str]) -> bool:
    return all(_INT.match(t) for t in tokens)


class Vocabulary:
    """A fixed, ordered set of string tokens with dense indices ``0..n-1``.

    Tokens are ordered as PROTOCOLS.md requires when built by
    :meth:`from_tokens`: numerically when every token is an integer, as strings
    otherwise. :meth:`extend` appends tokens after the existing ones (a model's
    catalogue growing after fit). ``index`` raises :class:`InputError` naming
    the first unknown token.
    """

    def __init__(self, tokens: Sequence[str], *, kind: str = "id") -> None:
        self.kind = kind
        self._tokens = np.asarray([str(t) for t in tokens], dtype=object)
        self._lookup = {t: i for i, t in enumerate(self._tokens)}
        if len(self._lookup) != len(self._tokens):
            seen: set[str] = set()
            dup = next(t for t in self._tokens if t in seen or seen.add(t))
            raise InputError(f"duplicate {kind} token in a vocabulary", value=dup, expected="unique tokens")

    @classmethod
    def from_tokens(cls, tokens: Iterable[object], *, kind: str = "id") -> Vocabulary:
        """Build from any iterable of tokens (duplicates allowed), in protocol order."""
        unique = sorted({str(t) for t in tokens})
        if _all_integers(unique):
            unique.sort(key=int)
        return cls(unique, kind=kind)

    def extend(self, tokens: Iterable[object]) -> Vocabulary:
        """A new vocabulary: these tokens followed by the new ones (in the given order, duplicates once)."""
        fresh = list(dict.fromkeys(str(t) for t in tokens if str(t) not in self._lookup))
        return Vocabulary([*self._tokens, *fresh], kind=self.kind)

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return str(token) in self._lookup

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and np.array_equal(self._tokens, other._tokens)

    def __hash__(self) -> int:
        return hash(tuple(self._tokens))

    def __repr__(self) -> str:
        return f"Vocabulary({self.kind}, n={len(self)})"

    @property
    def tokens(self) -> np.ndarray:
        """Object array of the tokens, position = index (a copy)."""
        return self._tokens.copy()

    def index(self, tokens: str | Iterable[object], *,
              unknown: Literal["error", "missing"] = "error") -> int | np.ndarray:
        """Map tokens to indices: int64[n]; one string token -> one int.

        A string is one token (never its characters). An unknown token raises
        InputError (``unknown="error"``) or maps to -1 (``"missing"``).
        """
        if isinstance(tokens, (str, np.str_)):
            found = self._lookup.get(str(tokens), -1)
            if found < 0 and unknown == "error":
                raise InputError(f"unknown {self.kind} {str(tokens)!r}",
                                 expected=f"one of the {len(self)} known {self.kind}s")
            return found
        tokens = [str(t) for t in tokens]
        lookup = self._lookup
        out = np.fromiter((lookup.get(t, -1) for t in tokens), dtype=np.int64, count=len(tokens))
        if unknown == "error" and (out < 0).any():
            bad = tokens[int(np.argmax(out < 0))]
            raise InputError(f"unknown {self.kind} {bad!r}", expected=f"one of the {len(self)} known {self.kind}s")
        return out

    def token(self, indices: int | Iterable[int]) -> str | list[str]:
        """Map one index to its token, or many to a list of tokens."""
        if isinstance(indices, (int, np.integer)):
            if not 0 <= int(indices) < len(self):
                raise InputError(f"{self.kind} index out of range", value=int(indices),
                                 expected=f"0..{len(self) - 1}")
            return str(self._tokens[int(indices)])
        arr = np.asarray(list(indices), dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= len(self)):
            raise InputError(f"{self.kind} index out of range", expected=f"0..{len(self) - 1}")
        return [str(t) for t in self._tokens[arr]]

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokens": [str(t) for t in self._tokens]}

    @classmethod
    def from_json(cls, obj: dict) -> Vocabulary:
        return cls(obj["tokens"], kind=obj.get("kind", "id"))

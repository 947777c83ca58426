"""API keys, scopes and per-key rate limits for the recommendation service.

Keys are ``"l4r_"`` followed by 256 random bits (URL-safe base64); only their
SHA-256 is ever stored. Scopes are independent (``write`` does not imply
``read``), except ``admin``, which allows everything.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable

from llm4rec.errors import InputError

__all__ = ["KEY_PREFIX", "SCOPES", "RateLimiter", "allows", "check_scopes", "hash_key", "new_key"]

#: every scope a key can hold; ``admin`` implies the others, which are independent of each other
SCOPES = ("read", "write", "admin")
KEY_PREFIX = "l4r_"


def new_key() -> str:
    """A new API key: ``"l4r_"`` + 32 random bytes (256 bits) as URL-safe base64 (43 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of ``key``: what is stored and looked up, never the key itself.

    A fast, unsalted hash is the right tool here (unlike for passwords): a key
    holds 256 random bits, so there is nothing to guess or look up in a table,
    and every request can be checked with one cheap hash and an index lookup.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_scopes(scopes: list[str]) -> list[str]:
    """``scopes`` checked against :data:`SCOPES`, duplicates dropped, order kept; InputError names an unknown one."""
    if isinstance(scopes, str):
        scopes = [scopes]
    out: list[str] = []
    for scope in scopes:
        if scope not in SCOPES:
            raise InputError("unknown scope", value=scope, expected="one of: " + ", ".join(SCOPES))
        if scope not in out:
            out.append(scope)
    return out


def allows(granted: list[str], needed: str) -> bool:
    """Whether a key holding ``granted`` may do what needs ``needed`` (``admin`` allows everything)."""
    check_scopes([needed])
    return needed in granted or "admin" in granted


class RateLimiter:
    """A token bucket per key, thread-safe; ``clock`` (seconds, monotonic) can be replaced in tests.

    A key limited to ``rate_per_minute`` requests gets a bucket of
    ``max(1, rate_per_minute // 4)`` tokens (the burst it may send at once),
    full at first and refilled continuously at ``rate_per_minute / 60`` tokens
    a second; each request takes one. A key's bucket follows a change of its
    rate at the next request (the tokens it holds capped at the new burst).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, clock at that count)

    @staticmethod
    def burst(rate_per_minute: int) -> int:
        """The tokens a full bucket holds for this rate."""
        return max(1, rate_per_minute // 4)

    def take(self, key_id: str, rate_per_minute: int | None) -> float | None:
        """Take a token from ``key_id``'s bucket: None if the request may go ahead (always, for rate None), else
        the seconds until a token is available (> 0; the caller rounds it up for ``Retry-After``)."""
        if rate_per_minute is None:
            return None
        if isinstance(rate_per_minute, bool) or not isinstance(rate_per_minute, int) or rate_per_minute < 1:
            raise InputError("a rate limit is a whole number of requests a minute", value=rate_per_minute,
                             expected="an integer >= 1, or None for no limit")
        burst = self.burst(rate_per_minute)
        per_second = rate_per_minute / 60.0
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(key_id, (float(burst), now))
            tokens = min(float(burst), tokens + max(0.0, now - then) * per_second)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return None
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / per_second

    def forget(self, key_id: str) -> None:
        """Drop ``key_id``'s bucket (e.g. when the key is revoked); unknown ids are ignored."""
        with self._lock:
            self._buckets.pop(key_id, None)

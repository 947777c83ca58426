"""API keys, scopes and the per-key token bucket (with a fake clock, and under many threads)."""

from __future__ import annotations

import threading

import pytest

from llm4rec.errors import InputError
from llm4rec.serving.auth import (
    SCOPES,
    RateLimiter,
    allows,
    check_scopes,
    hash_key,
    new_key,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_keys_are_random_prefixed_and_stored_only_as_a_deterministic_hash():
    a, b = new_key(), new_key()
    assert a.startswith("l4r_") and len(a) == 4 + 43 and a != b
    assert hash_key(a) == hash_key(a) and hash_key(a) != hash_key(b)
    assert len(hash_key(a)) == 64 and int(hash_key(a), 16) >= 0
    assert a not in hash_key(a) and a[4:] not in hash_key(a)
    # a known answer: sha256("abc")
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_scopes_are_checked_deduplicated_in_order():
    assert check_scopes(["write", "read", "write", "admin", "read"]) == ["write", "read", "admin"]
    assert check_scopes([]) == []
    with pytest.raises(InputError, match=r"unknown scope \(got 'delete'; expected one of: read, write, admin\)"):
        check_scopes(["read", "delete"])


def test_admin_allows_everything_other_scopes_only_themselves():
    assert all(allows(["admin"], s) for s in SCOPES)
    assert allows(["read"], "read") and not allows(["read"], "write") and not allows(["read"], "admin")
    assert allows(["write"], "write") and not allows(["write"], "read")  # write does not imply read
    assert not allows([], "read")
    with pytest.raises(InputError, match="unknown scope"):
        allows(["admin"], "root")


def test_a_burst_then_refusals_with_the_seconds_until_the_next_token():
    clock = FakeClock()
    limiter = RateLimiter(clock)
    # 60/minute: a token a second, burst 15
    assert [limiter.take("k", 60) for _ in range(15)] == [None] * 15
    assert limiter.take("k", 60) == pytest.approx(1.0)
    clock.advance(0.25)
    assert limiter.take("k", 60) == pytest.approx(0.75)
    clock.advance(0.75)
    assert limiter.take("k", 60) is None  # one token came back
    assert limiter.take("k", 60) == pytest.approx(1.0)
    # 6/minute: a token every 10 s, burst 1
    assert limiter.take("slow", 6) is None
    assert limiter.take("slow", 6) == pytest.approx(10.0)
    clock.advance(4.0)
    assert limiter.take("slow", 6) == pytest.approx(6.0)


def test_the_bucket_refills_over_time_but_never_beyond_the_burst():
    clock = FakeClock()
    limiter = RateLimiter(clock)
    for _ in range(5):
        assert limiter.take("k", 20) is None  # burst 5
    assert limiter.take("k", 20) is not None
    clock.advance(3600.0)  # an hour idle: still only a burst of 5
    assert [limiter.take("k", 20) for _ in range(6)].count(None) == 5
    clock.advance(6.0)  # 20/minute = one token per 3 s
    assert [limiter.take("k", 20) for _ in range(3)].count(None) == 2


def test_keys_have_their_own_buckets_and_a_rate_of_none_is_unlimited():
    clock = FakeClock()
    limiter = RateLimiter(clock)
    assert limiter.take("a", 4) is None  # burst 1
    assert limiter.take("a", 4) is not None
    assert limiter.take("b", 4) is None
    assert all(limiter.take("c", None) is None for _ in range(10_000))
    limiter.forget("a")
    assert limiter.take("a", 4) is None
    for bad in (0, -5, 2.5, True):
        with pytest.raises(InputError, match="rate limit"):
            limiter.take("a", bad)


def test_many_threads_never_get_more_than_the_bucket_holds():
    clock = FakeClock()  # time stands still: exactly the burst may pass
    limiter = RateLimiter(clock)
    granted = []
    start = threading.Barrier(16)

    def worker():
        start.wait()
        mine = sum(limiter.take("shared", 400) is None for _ in range(200))
        granted.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == RateLimiter.burst(400) == 100

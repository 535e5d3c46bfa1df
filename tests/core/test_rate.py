"""The token bucket of upload limits and the per-client buckets of request limits."""

from __future__ import annotations

import pytest

from p2pshare.core.rate import ClientBuckets, TokenBucket


def test_unlimited_never_waits() -> None:
    bucket = TokenBucket(0, 1, now=0.0)
    assert bucket.take(10**9, now=0.0) == 0.0


def test_a_burst_passes_then_the_rate_holds() -> None:
    bucket = TokenBucket(100, 50, now=0.0)
    assert bucket.take(50, now=0.0) == 0.0  # the burst
    assert bucket.take(100, now=0.0) == pytest.approx(1.0)  # 100 bytes at 100 B/s
    assert bucket.take(100, now=1.0) == pytest.approx(1.0)  # still a second behind


def test_idle_time_refills_up_to_the_burst_only() -> None:
    bucket = TokenBucket(100, 50, now=0.0)
    bucket.take(50, now=0.0)
    assert bucket.take(50, now=100.0) == 0.0
    assert bucket.take(10, now=100.0) == pytest.approx(0.1)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(-1, 10, now=0.0)
    with pytest.raises(ValueError):
        TokenBucket(10, 0, now=0.0)


# -- ClientBuckets: request rate limits per client --------------------------------------


def test_a_client_gets_its_burst_then_is_refused_with_the_exact_wait() -> None:
    buckets: ClientBuckets[str] = ClientBuckets(rate=10, burst=3)
    assert [buckets.check("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.check("a", now=0.0) == pytest.approx(0.1)  # one token at 10/s
    assert buckets.check("a", now=0.05) == pytest.approx(0.05)


def test_refused_requests_spend_nothing() -> None:
    buckets: ClientBuckets[str] = ClientBuckets(rate=10, burst=1)
    assert buckets.check("a", now=0.0) == 0.0
    for i in range(1, 100):  # a client that keeps hammering while refused
        assert buckets.check("a", now=i * 0.001) > 0
    assert buckets.check("a", now=0.1) == 0.0  # served as soon as one token is back
    assert buckets.check("a", now=0.1) == pytest.approx(0.1)


def test_the_rate_holds_over_time() -> None:
    # 1024 requests/s for 3 s against 128/s (binary fractions: the arithmetic is exact)
    buckets: ClientBuckets[str] = ClientBuckets(rate=128, burst=8)
    passed = sum(buckets.check("a", now=i / 1024) == 0.0 for i in range(3072))
    assert passed == 8 + 383  # the burst, then 128/s over the 3071/1024 s that passed


def test_each_client_has_its_own_bucket() -> None:
    buckets: ClientBuckets[str] = ClientBuckets(rate=1, burst=2)
    assert buckets.check("flood", now=0.0) == 0.0
    assert buckets.check("flood", now=0.0) == 0.0
    assert buckets.check("flood", now=0.0) > 0
    assert buckets.check("quiet", now=0.0) == 0.0
    assert buckets.check("quiet", now=0.0) == 0.0


def test_idle_time_refills_up_to_the_burst_only_for_clients() -> None:
    buckets: ClientBuckets[str] = ClientBuckets(rate=10, burst=2)
    buckets.check("a", now=0.0)
    buckets.check("a", now=0.0)
    assert buckets.check("a", now=0.0) > 0
    results = [buckets.check("a", now=1000.0) for _ in range(3)]
    assert results[:2] == [0.0, 0.0] and results[2] > 0


def test_clients_idle_until_full_again_are_forgotten() -> None:
    buckets: ClientBuckets[str] = ClientBuckets(rate=10, burst=5)  # full again after 0.5 s
    buckets.check("old", now=0.0)
    buckets.check("recent", now=0.3)
    assert len(buckets) == 2
    buckets.check("new", now=0.6)  # "old" is full again: nothing lost by forgetting it
    assert len(buckets) == 2
    buckets.check("newer", now=10.0)
    assert len(buckets) == 1


def test_memory_is_bounded_least_recently_seen_forgotten_first() -> None:
    buckets: ClientBuckets[int] = ClientBuckets(rate=1, burst=1, capacity=3)
    for client in range(3):
        assert buckets.check(client, now=0.0) == 0.0
    assert buckets.check(0, now=0.0) > 0  # 0 is now the most recently seen
    assert buckets.check(3, now=0.0) == 0.0  # a fourth client: 1 is forgotten
    assert len(buckets) == 3
    assert buckets.check(0, now=0.0) > 0  # still remembered, still empty
    assert buckets.check(1, now=0.0) == 0.0  # forgotten: a fresh bucket


def test_bad_client_bucket_parameters_are_refused() -> None:
    for kwargs in (
        {"rate": 0, "burst": 1},
        {"rate": 1, "burst": 0},
        {"rate": 1, "burst": 1, "capacity": 0},
    ):
        with pytest.raises(ValueError):
            ClientBuckets(**kwargs)  # type: ignore[arg-type]

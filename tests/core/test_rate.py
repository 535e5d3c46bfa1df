"""The token bucket of upload limits."""

from __future__ import annotations

import pytest

from p2pshare.core.rate import TokenBucket


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

"""A token bucket: how long to wait before sending ``n`` more bytes at a set rate."""

from __future__ import annotations


class TokenBucket:
    """Allows ``rate`` bytes per second on average, bursts of up to ``burst`` bytes.

    ``rate == 0`` means unlimited. Time comes in as ``now`` (seconds, monotonic).
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate < 0 or burst <= 0:
            raise ValueError("rate must be >= 0 and burst > 0")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def take(self, n: int, now: float) -> float:
        """Spend ``n`` bytes; return the seconds to wait before sending them."""
        if self.rate == 0:
            return 0.0
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

"""Token buckets: how long to wait before sending ``n`` more bytes at a set rate, and
which clients are over their request rate.

``TokenBucket`` paces one stream of bytes (upload and download limits): every take
is spent, and the answer is how long to wait. ``ClientBuckets`` polices requests: one
bucket per client, and a request over the limit is refused rather than delayed.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["ClientBuckets", "TokenBucket", "client_key"]

K = TypeVar("K", bound=Hashable)


class TokenBucket:
    """Allows ``rate`` bytes per second on average, bursts of up to ``burst`` bytes.

    ``rate == 0`` means unlimited. Time comes in as ``now`` (seconds, monotonic).
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

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


class ClientBuckets(Generic[K]):
    """Request rate limits per client: ``rate`` requests per second on average, bursts
    of up to ``burst``, for each client key (an address) on its own.

    ``check(key, now)`` lets a request through (0.0) or refuses it with the seconds
    after which one would pass. A refused request spends nothing, so a client that
    keeps sending while refused is let through again as soon as its rate allows, and
    the wait it is told is exact.

    Memory is bounded: at most ``capacity`` clients are remembered. A client not seen
    for ``burst / rate`` seconds has a full bucket again, the same as a client never
    seen, and is forgotten; when more than ``capacity`` clients are active at once,
    the least recently seen one is forgotten (it starts again with a full burst).
    ``now`` must not go backwards (a monotonic clock).
    """

    def __init__(self, *, rate: float, burst: float, capacity: int = 100_000) -> None:
        if rate <= 0 or burst < 1 or capacity < 1:
            raise ValueError("rate must be > 0, burst >= 1 and capacity >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.capacity = capacity
        self._refill = self.burst / rate  # seconds an empty bucket takes to fill
        # key -> [tokens, last seen], least recently seen first
        self._buckets: OrderedDict[K, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: K, now: float) -> float:
        """0.0 if ``key`` may make a request now (it is counted); else the seconds
        until it may (nothing is counted)."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            self._forget_idle(now)
            buckets[key] = [self.burst - 1, now]
            if len(buckets) > self.capacity:
                buckets.popitem(last=False)
            return 0.0
        buckets.move_to_end(key)
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1:
            bucket[0] = tokens - 1
            return 0.0
        bucket[0] = tokens
        return (1 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        """Drop the clients whose buckets are full again (least recently seen first, so
        the first one that is not full ends the search)."""
        buckets = self._buckets
        cutoff = now - self._refill
        while buckets:
            key, (_, last) = next(iter(buckets.items()))
            if last > cutoff:
                return
            del buckets[key]


def client_key(host: str) -> str:
    """Which client a request from the address ``host`` counts as: the IPv4 address, or
    the /64 of an IPv6 one (one host usually holds a whole /64; an IPv4-mapped IPv6
    address counts as its IPv4 address)."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Address(int(address) >> 64 << 64)) + "/64"

"""Limits at the tracker's HTTP edge: requests per second per client address, and the
size of a request.

One ``RequestLimits.refuse`` decides for both servers (the own httptools one and
uvicorn): ``HotRoutes`` calls it for the heartbeats and searches it answers itself,
the FastAPI app's edge middleware for every other request, so each request is counted
once. A client over its rate gets ``429`` with ``Retry-After`` (whole seconds, at
least 1) and ``{"error": ...}``; it is served again as soon as its rate allows.

- Clients are told apart by their address as the tracker sees it: an IPv4 address,
  or the /64 prefix of an IPv6 address (one host usually holds a whole /64). Behind a
  reverse proxy every request seems to come from the proxy: turn the limit off there
  (``rate_limit = 0``) and limit at the proxy.
- ``/healthz`` is never limited: a load balancer or monitor that shares an address
  with a noisy client must not see the tracker as down (and restart it) because of that
  client; the answer is one indexed count.
- With ``workers`` > 1 each worker process keeps its own buckets, and the kernel
  spreads connections over the workers: a client gets up to ``workers`` times the rate.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from p2pshare.core.rate import ClientBuckets, client_key
from p2pshare.errors import Busy

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_URL_BYTES",
    "REQUEST_SECONDS",
    "FileRate",
    "Refusal",
    "RequestLimits",
]

MAX_URL_BYTES = 8 << 10
"""A longer request target (path and query) gets 414; a search query is at most 1 KiB."""
MAX_HEADERS = 100
"""More header lines get 431."""
MAX_HEADER_BYTES = 32 << 10
"""More bytes of header names and values get 431."""
REQUEST_SECONDS = 60.0
"""A request whose head and body have not all arrived this long after its first byte
gets 408 and its connection is closed (a client trickling bytes holds nothing for long)."""
MAX_CLIENTS = 100_000
"""Clients whose request rate is remembered at once (about 100 bytes each)."""

UNLIMITED_PATHS = frozenset({"/healthz"})

Refusal = tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]
"""Status, JSON body and extra headers of a refused request."""


class RequestLimits:
    """The request rate limit of one server process: ``rate`` requests per second per
    client on average, bursts of ``burst`` (``rate`` 0: no limit)."""

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = MAX_CLIENTS,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: ClientBuckets[str] | None = (
            ClientBuckets(rate=rate, burst=burst, capacity=capacity) if rate > 0 else None
        )

    def refuse(self, client: str | None, path: str) -> Refusal | None:
        """The 429 answer for a request of ``client`` (its address) to ``path``, or None
        if it may go on. Requests without a client address (a Unix socket, a test's
        in-process transport) are not limited."""
        buckets = self._buckets
        if buckets is None or client is None or path in UNLIMITED_PATHS:
            return None
        wait = buckets.check(client_key(client), self._clock())
        if not wait:
            return None
        seconds = max(1, math.ceil(wait))
        message = (
            f"too many requests from {client}: the limit is {self.rate:g} per second;"
            f" retry after {seconds} s"
        )
        body = json.dumps({"error": message}).encode()
        return 429, body, ((b"retry-after", b"%d" % seconds),)


class FileRate:
    """Files one client address may add or remove per second (``rate``, bursts of
    ``burst``): a registration or a change of the index spends one per file in it.

    A request over the rate is refused whole with ``Busy`` (429) and spends nothing;
    a request larger than ``burst`` passes only into a full bucket (so a peer with a
    share that size still registers, then waits). Per worker process, like the request
    rate; at most ``capacity`` addresses are remembered.
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        capacity: int = MAX_CLIENTS,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._capacity = capacity
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, last]

    def charge(self, client: str | None, files: int) -> None:
        """Spend ``files`` of ``client``'s allowance, or raise ``Busy`` with the wait."""
        if self.rate <= 0 or client is None or files <= 0:
            return
        key = client_key(client)
        now = self._clock()
        bucket = self._buckets.pop(key, None) or [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        need = min(float(files), self.burst)
        if tokens < need:
            self._remember(key, [tokens, now])
            wait = max(1, math.ceil((need - tokens) / self.rate))
            raise Busy(
                f"too many files from {client}: the limit is {self.rate:g} files added or"
                f" removed per second; retry after {wait} s"
            )
        self._remember(key, [tokens - files, now])

    def _remember(self, key: str, bucket: list[float]) -> None:
        self._buckets[key] = bucket
        if len(self._buckets) > self._capacity:
            self._buckets.popitem(last=False)

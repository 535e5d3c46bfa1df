"""Finding the providers of a content id: the tracker first, else the providers of
recent search hits and an overlay lookup of the content id (reused for a while:
a download without providers asks again every few seconds)."""

from __future__ import annotations

import time
from collections.abc import Callable

from p2pshare import errors
from p2pshare.core.query_router import DEFAULT_TTL
from p2pshare.peer.discovery.search import OVERLAY_TIMEOUT, NetworkSearch
from p2pshare.tracker.client import TrackerClient

LOOKUP_TTL = DEFAULT_TTL  # hops of an overlay search for the providers of a content id
LOOKUP_FRESH = 10.0  # seconds an overlay lookup of providers is reused by downloads


class ProviderLookup:
    """Addresses of the peers that provide a content id."""

    def __init__(
        self,
        *,
        tracker: TrackerClient | None,
        search: NetworkSearch,
        me: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tracker = tracker
        self._search = search
        self._me = me
        self._clock = clock
        self._lookups: dict[str, tuple[float, list[str]]] = {}

    async def find_providers(self, content_id: str) -> list[str]:
        """Addresses of peers that provide ``content_id``, not counting this one: from
        the tracker, else (unreachable, not configured, or it knows none) from the
        providers of recent search hits and an overlay lookup of the content id."""
        addresses: list[str] = []
        problem: errors.P2PShareError | None = None
        if self._tracker is not None:
            try:
                reply = await self._tracker.providers(content_id)
                addresses = [p.address for p in reply.providers]
            except errors.NotFound:
                addresses = []
            except (errors.TransportError, errors.Unauthenticated) as exc:
                problem = exc
        me = self._me()
        if not [a for a in addresses if a != me]:
            hit = self._search.recent.get(content_id)
            addresses = [p.address for p in hit.providers] if hit else []
            addresses += [
                a for a in await self._overlay_providers(content_id) if a not in addresses
            ]
        found = [a for a in addresses if a != me]
        if not found and problem is not None:
            raise problem
        return found

    async def _overlay_providers(self, content_id: str) -> list[str]:
        """Providers of ``content_id`` found by an overlay search, reused for a while."""
        now = self._clock()
        cached = self._lookups.get(content_id)
        if cached and now - cached[0] < LOOKUP_FRESH:
            return cached[1]
        hits = await self._search.overlay_hits(
            content_id=content_id, ttl=LOOKUP_TTL, walkers=0, limit=1, timeout=OVERLAY_TIMEOUT
        )
        providers = [p.address for h in hits for p in h.providers]
        for old in [c for c, (t, _) in self._lookups.items() if now - t >= LOOKUP_FRESH]:
            del self._lookups[old]
        self._lookups[content_id] = (now, providers)
        return providers

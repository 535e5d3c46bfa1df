"""Searches across every source at once: the tracker's index, the overlay and this
peer's own share; their hits merged by the one rule of ``core.hits``.

docs/design.md, Network: *Search* ("two paths, merged"). Each source reports how
it answered (``sources``), so a search with the tracker down still answers from
the overlay. Hits from the overlay pass our checks (content id, share name,
address) before they count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.addresses import check_address
from p2pshare.core.hits import Hit, HitMerger, Provider
from p2pshare.core.manifest import check_content_id
from p2pshare.core.names import Query, parse_query
from p2pshare.core.paths import check_share_name
from p2pshare.core.query_router import DEFAULT_TTL
from p2pshare.peer.overlay.network import Overlay
from p2pshare.peer.sharing.share import Share
from p2pshare.tracker.client import TrackerClient
from p2pshare.tracker.models import PeerRef, SearchHit

log = logging.getLogger(__name__)

OVERLAY_TIMEOUT = 3.0  # seconds an overlay search waits for hits
SOURCES = ("tracker", "overlay", "both")


@dataclass(frozen=True)
class HitsFound:
    """Hits of one source as they arrive (``search_stream``); ``state`` is set on the
    last batch of a source: how it answered ("ok", "unreachable: ...")."""

    source: str  # local, tracker, overlay
    hits: list[SearchHit]
    state: str | None = None


class NetworkSearch:
    """Searches by name everywhere this peer can ask; remembers recent hits, so a
    download can start from a content id (or a prefix of one) seen in a search."""

    def __init__(
        self,
        *,
        tracker: TrackerClient | None,
        overlay: Overlay,
        share: Share,
        me: Callable[[], PeerRef],
    ) -> None:
        self._tracker = tracker
        self._overlay = overlay
        self._share = share
        self._me = me
        self.recent: dict[str, SearchHit] = {}

    def remember(self, hit: SearchHit) -> None:
        """Keep ``hit`` unless one for its content id is known already."""
        self.recent.setdefault(hit.content_id, hit)

    async def search_everywhere(
        self,
        query: str,
        limit: int,
        *,
        source: str = "both",
        ttl: int = DEFAULT_TTL,
        walkers: int = 0,
        timeout: float = OVERLAY_TIMEOUT,
    ) -> tuple[list[SearchHit], dict[str, str]]:
        """Hits from the tracker, the overlay and this peer's share, one per content id
        with all providers; ``sources`` says how each source answered."""
        parsed = _parse(query, source)
        sources: dict[str, str] = {}
        answers: list[list[SearchHit]] = []
        asks = []
        if source in ("tracker", "both") and self._tracker is not None:
            asks.append(self._ask_tracker(self._tracker, query, limit, sources))
        if source in ("overlay", "both"):
            asks.append(self._ask_overlay(query, ttl, walkers, limit, timeout, sources))
        answers.extend(await asyncio.gather(*asks))
        me = self._me()
        merger = HitMerger()
        for hit in (h for batch in answers for h in batch):
            merger.add(hit.content_id, hit.name, hit.size, _providers(hit.providers))
        for f in self._share.files_matching(parsed, limit):
            merger.add(f.content_id, f.name, f.size, _providers([me]))
        sources["local"] = "ok"
        hits = [_to_model(h) for h in merger.ranked(limit)]
        self.recent.update((h.content_id, h) for h in hits)
        return hits, sources

    async def search_stream(
        self,
        query: str,
        limit: int,
        *,
        source: str = "both",
        ttl: int = DEFAULT_TTL,
        walkers: int = 0,
        timeout: float = OVERLAY_TIMEOUT,
    ) -> AsyncIterator[HitsFound]:
        """The hits of ``search_everywhere`` as each source gives them: this peer's
        share at once, the tracker's answer, then each overlay hit as it arrives
        (unmerged: the reader merges them by content id, as ``core.hits`` does)."""
        parsed = _parse(query, source)
        me = [self._me()]
        local = [
            SearchHit(content_id=f.content_id, name=f.name, size=f.size, providers=me)
            for f in self._share.files_matching(parsed, limit)
        ]
        yield HitsFound("local", local, "ok")
        found: asyncio.Queue[HitsFound] = asyncio.Queue()
        asks = []
        if source in ("tracker", "both") and self._tracker is not None:
            asks.append(self._stream_tracker(self._tracker, query, limit, found))
        if source in ("overlay", "both"):
            asks.append(self._stream_overlay(query, ttl, walkers, limit, timeout, found))
        tasks = [asyncio.create_task(ask) for ask in asks]
        try:
            open_sources = len(tasks)
            while open_sources:
                batch = await found.get()
                for hit in batch.hits:
                    self.remember(hit)
                open_sources -= batch.state is not None
                yield batch
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _stream_tracker(
        self, tracker: TrackerClient, query: str, limit: int, found: asyncio.Queue[HitsFound]
    ) -> None:
        sources: dict[str, str] = {}
        hits = await self._ask_tracker(tracker, query, limit, sources)
        found.put_nowait(HitsFound("tracker", hits, sources["tracker"]))

    async def _stream_overlay(
        self,
        query: str,
        ttl: int,
        walkers: int,
        limit: int,
        timeout: float,
        found: asyncio.Queue[HitsFound],
    ) -> None:
        if not self._overlay.neighbours():
            found.put_nowait(HitsFound("overlay", [], "no neighbours"))
            return
        try:
            async for hit in self._overlay.search_overlay(
                query=query, ttl=ttl, walkers=walkers, limit=limit, timeout=timeout
            ):
                checked = _checked(hit)
                if checked is not None:
                    found.put_nowait(HitsFound("overlay", [checked]))
        finally:
            found.put_nowait(HitsFound("overlay", [], "ok"))

    async def _ask_tracker(
        self, tracker: TrackerClient, query: str, limit: int, sources: dict[str, str]
    ) -> list[SearchHit]:
        try:
            hits = await tracker.search(query, limit)
        except errors.TransportError as exc:
            sources["tracker"] = f"unreachable: {exc}"
            return []
        except errors.Unauthenticated as exc:
            sources["tracker"] = f"refused: {exc}"
            return []
        sources["tracker"] = "ok"
        return hits

    async def _ask_overlay(
        self,
        query: str,
        ttl: int,
        walkers: int,
        limit: int,
        timeout: float,
        sources: dict[str, str],
    ) -> list[SearchHit]:
        if not self._overlay.neighbours():
            sources["overlay"] = "no neighbours"
            return []
        hits = await self.overlay_hits(
            query=query, ttl=ttl, walkers=walkers, limit=limit, timeout=timeout
        )
        sources["overlay"] = "ok"
        return hits

    async def overlay_hits(
        self,
        *,
        query: str = "",
        content_id: str = "",
        ttl: int,
        walkers: int,
        limit: int,
        timeout: float,
    ) -> list[SearchHit]:
        """The overlay's hits, one per content id with every provider; hits that do not
        pass our checks (id, name, address) are dropped."""
        merger = HitMerger()
        found = self._overlay.search_overlay(
            query=query,
            content_id=content_id,
            ttl=ttl,
            walkers=walkers,
            limit=limit,
            timeout=timeout,
        )
        async for hit in found:
            checked = _checked(hit)
            if checked is None or (content_id and checked.content_id != content_id):
                continue
            merger.add(
                checked.content_id, checked.name, checked.size, _providers(checked.providers)
            )
        return [_to_model(h) for h in merger.hits()]


def _parse(query: str, source: str) -> Query:
    """``query`` parsed (``core.names``), after a check that ``source`` is one of ``SOURCES``."""
    if source not in SOURCES:
        raise errors.UsageError(f"source must be one of {', '.join(SOURCES)}")
    return parse_query(query)


def _checked(hit: pb.SearchHit) -> SearchHit | None:
    """An overlay hit that passes our checks (content id, name, address), else None."""
    try:
        cid = check_content_id(hit.content_id)
        name = check_share_name(hit.name)
        address = check_address(hit.provider.address)
    except (errors.UsageError, ValueError) as exc:
        log.debug("dropping a bad overlay hit from %s: %s", hit.provider.address, exc)
        return None
    provider = PeerRef(peer_id=hit.provider.peer_id, address=address)
    return SearchHit(content_id=cid, name=name, size=hit.size, providers=[provider])


def _providers(refs: Iterable[PeerRef]) -> list[Provider]:
    return [Provider(r.peer_id, r.address) for r in refs]


def _to_model(hit: Hit) -> SearchHit:
    return SearchHit(
        content_id=hit.content_id,
        name=hit.name,
        size=hit.size,
        providers=[PeerRef(peer_id=p.peer_id, address=p.address) for p in hit.providers],
    )

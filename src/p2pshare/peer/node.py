"""A running peer: wires the share, the gRPC server, downloads, the tracker session
and the control API together. All asyncio of the peer lives here and in the
modules it starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.config import PeerSettings
from p2pshare.core.manifest import Manifest, check_content_id, check_content_id_prefix
from p2pshare.core.names import parse_query
from p2pshare.core.paths import check_share_name
from p2pshare.core.pubsub import ADDED, REMOVED, ShareChange
from p2pshare.core.query_router import DEFAULT_TTL
from p2pshare.peer.auth import GrpcAuth, ServerAuth
from p2pshare.peer.downloads import DownloadManager
from p2pshare.peer.hash_cache import HashCache
from p2pshare.peer.overlay import SAVED_NAME, Overlay
from p2pshare.peer.peer_client import PeerClients
from p2pshare.peer.peer_server import PeerService, start_server
from p2pshare.peer.publisher import NeighbourFeeds, Publisher, tracker_changes
from p2pshare.peer.share import Share, SharedFile
from p2pshare.peer.subscriptions import CATCH_UP_LIMIT, Subscriptions
from p2pshare.peer.watcher import ShareWatcher
from p2pshare.tracker.client import TrackerClient
from p2pshare.tracker.client_auth import TrackerAuth
from p2pshare.tracker.models import FileEntry, PeerRef, SearchHit, check_address

log = logging.getLogger(__name__)

RETRY_MAX = 10.0  # seconds between attempts to reach a tracker that is down
OVERLAY_TIMEOUT = 3.0  # seconds an overlay search waits for hits
LOOKUP_TTL = DEFAULT_TTL  # hops of an overlay search for the providers of a content id
LOOKUP_FRESH = 10.0  # seconds an overlay lookup of providers is reused by downloads
SOURCES = ("tracker", "overlay", "both")


@dataclass
class TrackerSession:
    """What this peer knows of its registration at the tracker."""

    url: str | None
    state: str = "not registered"
    peer_id: str = ""
    token: str = ""
    lease_seconds: float = 0.0
    last_ok: float | None = None
    neighbours: list[PeerRef] = field(default_factory=list)
    reachable: str = "not known yet"
    """Whether the tracker could dial this peer back, as its answers say."""

    def note_reachability(self, reachable: bool | None, why: str) -> None:
        known = "not known yet" if reachable is None else "yes" if reachable else "no"
        self.reachable = f"{known} ({why})" if why else known


class PeerNode:
    """One peer process."""

    def __init__(self, settings: PeerSettings) -> None:
        self.settings = settings
        self.share_root = settings.share.resolve()
        self.data_dir = settings.data.resolve()
        self.tracker = TrackerSession(settings.tracker)
        self.address = ""
        self.recent_hits: dict[str, SearchHit] = {}
        self._lookups: dict[str, tuple[float, list[str]]] = {}
        self._files_dirty = asyncio.Event()
        self._sent: dict[str, FileEntry] = {}  # the index as the tracker has it
        self.tracker_events = "not subscribed"
        self._tasks: list[asyncio.Task[None]] = []
        self.started = time.time()

    # -- start and stop -------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        try:
            self.share_root.mkdir(parents=True, exist_ok=True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.ConfigError(f"cannot create folder: {exc}") from exc
        advertised = s.advertise.rpartition(":")[0].strip("[]") if s.advertise else ""
        self.tls = None
        if s.tls != "off":
            from p2pshare import tls  # X.509 costs ~10 MB: loaded only when TLS is on

            self.tls = tls.load(s, section="peer", names=(s.host, advertised))
        self.cache = HashCache(self.data_dir / "hashes.db")
        self.share = Share(
            self.share_root,
            cache=self.cache,
            piece_size=s.piece_size,
            workers=s.hash_workers,
            whole_file_sha256=s.whole_file_sha256,
        )
        self.watcher = ShareWatcher(self.share, self._share_changed)
        self.watcher.start()  # before the scan: nothing written meanwhile is missed
        self.scan = await asyncio.to_thread(self.share.scan)
        key = s.network_key
        self.clients = PeerClients(tls=self.tls, auth=GrpcAuth(key) if key else None)
        self.overlay = Overlay(
            clients=self.clients,
            share=self.share,
            me=self.me,
            saved=self.data_dir / SAVED_NAME,
            capacity=s.neighbours,
            seeds=s.seeds,
            learn=s.learn_neighbours,
        )
        self.publisher = Publisher()
        self.feeds = NeighbourFeeds(clients=self.clients, publisher=self.publisher)
        self.overlay.add_listener(self.feeds.neighbour_changed)
        self.service = PeerService(
            share=self.share,
            me=self.me,
            overlay=self.overlay,
            publisher=self.publisher,
            partial=lambda content_id: self.downloads.partial(content_id),
            max_uploads=s.max_uploads,
            max_uploads_per_peer=s.max_uploads_per_peer,
            max_subscribers=s.max_subscribers,
            max_subscribers_per_peer=s.max_subscribers_per_peer,
            max_calls_per_peer=s.max_calls_per_peer,
            max_upload_rate=s.max_upload_rate,
        )
        self.grpc_server, port = await start_server(
            self.service,
            s.host,
            s.port,
            tls=self.tls,
            interceptors=[ServerAuth(key)] if key else (),
        )
        self.address = s.advertise or f"{_dialable(s.host)}:{port}"
        self.clients.set_me(self.me())
        self.overlay.start()
        self.downloads = DownloadManager(
            clients=self.clients,
            find_providers=self.find_providers,
            records=self.data_dir / "downloads",
            default_out=(s.downloads or s.share).resolve(),
            on_complete=self._downloaded,
            on_change=self._files_dirty.set,
            max_download_rate=s.max_download_rate,
            streams_per_provider=s.streams_per_provider,
            pieces_per_request=s.pieces_per_request,
        )
        if self.tracker.url:
            verify = self.tls.client_context() if self.tls else True
            self._tracker_client = TrackerClient(self.tracker.url, verify=verify, network_key=key)
            self._events_http = httpx.AsyncClient(
                base_url=self.tracker.url,
                timeout=httpx.Timeout(5.0, read=60.0),
                verify=verify,
                auth=TrackerAuth(key) if key else None,
            )
            await self._register_once()
            self._tasks.append(asyncio.create_task(self._tracker_loop(), name="tracker"))
        else:
            self.tracker.state = "no tracker configured"
        self.downloads.resume_interrupted()
        self.subscriptions = Subscriptions(
            data_dir=self.data_dir,
            search=self._subscription_search,
            changes=self.changes,
            fetch=self._subscription_fetch,
            me=lambda: self.address,
        )
        self.subscriptions.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.subscriptions.close()
        await self.watcher.stop()
        await self.feeds.close()
        await self.downloads.close()
        await self.overlay.stop()
        if self.tracker.url:
            if self.tracker.token:
                with contextlib.suppress(errors.P2PShareError):
                    await self._tracker_client.logout(self.tracker.peer_id, self.tracker.token)
            await self._tracker_client.aclose()
            await self._events_http.aclose()
        await self.grpc_server.stop(grace=1.0)
        await self.clients.close()

    # -- who we are -----------------------------------------------------------

    def me(self) -> pb.PeerInfo:
        return pb.PeerInfo(peer_id=self.tracker.peer_id, address=self.address)

    def file_entries(self) -> list[FileEntry]:
        """What the tracker lists this peer for: its share, and the files it is
        downloading (whose verified pieces it serves already)."""
        entries = {
            f.content_id: FileEntry(content_id=f.content_id, name=f.name, size=f.size)
            for f in self.share.files()
        }
        for m in self.downloads.sharing():
            entries.setdefault(
                m.content_id, FileEntry(content_id=m.content_id, name=m.name, size=m.size)
            )
        return list(entries.values())

    # -- the tracker session --------------------------------------------------

    async def _register_once(self) -> bool:
        try:
            reply = await self._tracker_client.register(self.address, self.file_entries())
        except errors.Unauthenticated as exc:
            self.tracker.state = f"refused: {exc}"
            log.error("tracker %s refused this peer: %s", self.tracker.url, exc)
            return False
        except errors.P2PShareError as exc:
            self.tracker.state = f"unreachable: {exc}"
            log.warning("tracker %s: %s", self.tracker.url, exc)
            return False
        self.tracker.peer_id, self.tracker.token = reply.peer_id, reply.token
        self.tracker.lease_seconds = reply.lease_seconds
        self.tracker.neighbours = list(reply.neighbours)
        self.tracker.note_reachability(reply.reachable, reply.reachability)
        self.overlay.offer(n.address for n in reply.neighbours)
        self.tracker.state = "registered"
        self.tracker.last_ok = time.time()
        self.clients.set_me(self.me())
        self._files_dirty.clear()
        self._sent = {f.content_id: f for f in self.file_entries()}
        return True

    async def _tracker_loop(self) -> None:
        backoff = 1.0
        while True:
            if not self.tracker.token:
                if not await self._register_once():
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                    continue
                backoff = 1.0
            interval = self.settings.heartbeat_seconds or max(self.tracker.lease_seconds / 3, 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._files_dirty.wait(), interval)
            try:
                if self._files_dirty.is_set():
                    self._files_dirty.clear()
                    await self._send_changes()
                else:
                    beat = await self._tracker_client.heartbeat(
                        self.tracker.peer_id, self.tracker.token
                    )
                    self.tracker.note_reachability(beat.reachable, beat.reachability)
                self.tracker.state = "registered"
                self.tracker.last_ok = time.time()
            except (errors.NotFound, errors.PermissionDenied):
                # the lease ran out (or the tracker lost us): join again with the full index
                self.tracker.token = ""
                self.tracker.state = "re-registering"
            except errors.P2PShareError as exc:
                self.tracker.state = f"unreachable: {exc}"
                self.tracker.token = ""  # the tracker may forget us while down: re-register
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX)

    async def _send_changes(self) -> None:
        """Patch the tracker's index of this peer with what changed since it was sent."""
        now = {f.content_id: f for f in self.file_entries()}
        add = [f for cid, f in now.items() if self._sent.get(cid) != f]
        remove = [cid for cid in self._sent if cid not in now]
        if not add and not remove:
            await self._tracker_client.heartbeat(self.tracker.peer_id, self.tracker.token)
            return
        self._sent = now  # a failure below re-registers with the whole index
        await self._tracker_client.patch_files(
            self.tracker.peer_id, self.tracker.token, add=add, remove=remove
        )

    # -- publish/subscribe ----------------------------------------------------

    def _share_changed(self, removed: list[SharedFile], added: list[SharedFile]) -> None:
        """The share changed (the watcher, a completed download): tell the tracker and
        the subscribers."""
        me = self.me()
        for kind, files in ((REMOVED, removed), (ADDED, added)):
            for f in files:
                self.publisher.publish(
                    ShareChange(
                        kind=kind,
                        content_id=f.content_id,
                        name=f.name,
                        size=f.size,
                        provider=me.address,
                        peer_id=me.peer_id,
                    )
                )
        self._files_dirty.set()

    async def changes(self, query: str) -> AsyncIterator[ShareChange]:
        """Changes of files matching ``query`` (empty: all) anywhere this peer hears of
        them, as they happen: its own share, its neighbours' streams, the tracker's
        events; each change once."""
        try:
            parsed = parse_query(query) if query else None
        except ValueError as exc:
            raise errors.UsageError(str(exc)) from exc
        sub = self.publisher.subscribe(parsed)
        feed: asyncio.Task[None] | None = None
        if self.tracker.url:

            def state(s: str) -> None:
                self.tracker_events = s

            async def pump() -> None:
                async for change in tracker_changes(self._events_http, query, on_state=state):
                    sub.offer(change)

            feed = asyncio.create_task(pump(), name="tracker events")
        try:
            async for change in sub:
                yield change
        finally:
            sub.close()
            if feed is not None:
                feed.cancel()
                await asyncio.gather(feed, return_exceptions=True)

    async def _subscription_search(self, query: str) -> list[SearchHit]:
        hits, _ = await self.search(query, CATCH_UP_LIMIT)
        return hits

    def _subscription_fetch(
        self, content_id: str, name: str, size: int, provider: str, into: Path
    ) -> None:
        if content_id not in self.recent_hits:
            self.recent_hits[content_id] = SearchHit(
                content_id=content_id,
                name=name,
                size=size,
                providers=[PeerRef(peer_id="", address=provider)],
            )
        self.downloads.start(content_id, into)

    # -- finding and fetching -------------------------------------------------

    async def find_providers(self, content_id: str) -> list[str]:
        """Addresses of peers that provide ``content_id``, not counting this one: from
        the tracker, else (unreachable, not configured, or it knows none) from the
        providers of recent search hits and an overlay lookup of the content id."""
        addresses: list[str] = []
        problem: errors.P2PShareError | None = None
        if self.tracker.url:
            try:
                reply = await self._tracker_client.providers(content_id)
                addresses = [p.address for p in reply.providers]
            except errors.NotFound:
                addresses = []
            except (errors.TransportError, errors.Unauthenticated) as exc:
                problem = exc
        if not [a for a in addresses if a != self.address]:
            hit = self.recent_hits.get(content_id)
            addresses = [p.address for p in hit.providers] if hit else []
            addresses += [
                a for a in await self._overlay_providers(content_id) if a not in addresses
            ]
        found = [a for a in addresses if a != self.address]
        if not found and problem is not None:
            raise problem
        return found

    async def _overlay_providers(self, content_id: str) -> list[str]:
        """Providers of ``content_id`` found by an overlay search, reused for a while (a
        download asks again every few seconds while it has no provider)."""
        now = time.monotonic()
        cached = self._lookups.get(content_id)
        if cached and now - cached[0] < LOOKUP_FRESH:
            return cached[1]
        hits = await self._overlay_hits(
            content_id=content_id, ttl=LOOKUP_TTL, walkers=0, limit=1, timeout=OVERLAY_TIMEOUT
        )
        providers = [p.address for h in hits for p in h.providers]
        for old in [c for c, (t, _) in self._lookups.items() if now - t >= LOOKUP_FRESH]:
            del self._lookups[old]
        self._lookups[content_id] = (now, providers)
        return providers

    async def _overlay_hits(
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
        merged: dict[str, SearchHit] = {}
        search = self.overlay.search(
            query=query,
            content_id=content_id,
            ttl=ttl,
            walkers=walkers,
            limit=limit,
            timeout=timeout,
        )
        async for hit in search:
            try:
                cid = check_content_id(hit.content_id)
                name = check_share_name(hit.name)
                address = check_address(hit.provider.address)
            except (errors.UsageError, ValueError) as exc:
                log.debug("dropping a bad overlay hit from %s: %s", hit.provider.address, exc)
                continue
            if content_id and cid != content_id:
                continue
            ref = PeerRef(peer_id=hit.provider.peer_id, address=address)
            known = merged.get(cid)
            if known is None:
                merged[cid] = SearchHit(content_id=cid, name=name, size=hit.size, providers=[ref])
            elif all(p.address != address for p in known.providers):
                known.providers.append(ref)
        return list(merged.values())

    async def search(
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
        from p2pshare.core.names import parse_query

        if source not in SOURCES:
            raise errors.UsageError(f"source must be one of {', '.join(SOURCES)}")
        try:
            parsed = parse_query(query)
        except ValueError as exc:
            raise errors.UsageError(str(exc)) from exc
        sources: dict[str, str] = {}
        answers: list[SearchHit] = []

        async def from_tracker() -> None:
            if not self.tracker.url:
                return
            try:
                answers.extend(await self._tracker_client.search(query, limit))
                sources["tracker"] = "ok"
            except errors.TransportError as exc:
                sources["tracker"] = f"unreachable: {exc}"
            except errors.Unauthenticated as exc:
                sources["tracker"] = f"refused: {exc}"

        async def from_overlay() -> None:
            if not self.overlay.neighbours():
                sources["overlay"] = "no neighbours"
                return
            answers.extend(
                await self._overlay_hits(
                    query=query, ttl=ttl, walkers=walkers, limit=limit, timeout=timeout
                )
            )
            sources["overlay"] = "ok"

        asks = []
        if source in ("tracker", "both"):
            asks.append(from_tracker())
        if source in ("overlay", "both"):
            asks.append(from_overlay())
        await asyncio.gather(*asks)
        me = PeerRef(peer_id=self.tracker.peer_id, address=self.address)
        local = [
            SearchHit(content_id=f.content_id, name=f.name, size=f.size, providers=[me])
            for f in self.share.search(parsed, limit)
        ]
        sources["local"] = "ok"
        merged: dict[str, SearchHit] = {}
        for hit in [*answers, *local]:
            known = merged.get(hit.content_id)
            if known is None:
                merged[hit.content_id] = hit.model_copy(deep=True)
                continue
            seen = {p.address for p in known.providers}
            known.providers.extend(p for p in hit.providers if p.address not in seen)
        hits = sorted(merged.values(), key=lambda h: (-len(h.providers), h.name))[:limit]
        self.recent_hits.update((h.content_id, h) for h in hits)
        return hits, sources

    def resolve_content_id(self, id_or_prefix: str) -> str:
        """A full content id from an id or a unique prefix of one seen by this peer."""
        prefix = check_content_id_prefix(id_or_prefix)
        if len(prefix) == 64:
            return prefix
        known = {f.content_id for f in self.share.files()} | set(self.recent_hits)
        known |= {d.content_id for d in self.downloads.all()}
        matches = sorted(c for c in known if c.startswith(prefix))
        if not matches:
            raise errors.NotFound(
                f"no content id starting with {prefix!r} seen here; search first or give all 64"
                " characters"
            )
        if len(matches) > 1:
            raise errors.InvalidContentId(
                f"{prefix!r} is ambiguous: {len(matches)} content ids start with it;"
                " give more characters"
            )
        return matches[0]

    async def _downloaded(self, path: Path, manifest: Manifest) -> None:
        """A download completed: share it, as it was verified, if it landed in the share."""
        if path.is_relative_to(self.share_root):
            before = {f.content_id for f in self.share.files()}
            shared = await asyncio.to_thread(self.share.index_file, path, manifest)
            if shared is not None and shared.content_id not in before:
                self._share_changed([], [shared])
            self._files_dirty.set()


def _dialable(host: str) -> str:
    """The host other peers dial when none was advertised."""
    if host in ("0.0.0.0", "::", ""):
        log.warning("listening on all addresses: set --advertise HOST:PORT for other machines")
        return "127.0.0.1"
    return host

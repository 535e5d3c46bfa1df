"""A running peer, the composition root: builds the share, the gRPC server and
client, the overlay, downloads, the tracker session, search and pub/sub, and wires
them together. Each part lives in its own sub-package (docs/architecture.md); the
decisions live in ``core``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.config import PeerSettings
from p2pshare.core.browser_origin import is_loopback
from p2pshare.core.manifest import Manifest, check_content_id_prefix
from p2pshare.core.names import parse_query
from p2pshare.core.paths import check_share_name
from p2pshare.core.pubsub import ADDED, REMOVED, Kind, ShareChange
from p2pshare.core.sync import FileVersion
from p2pshare.core.tracker_session import Registration
from p2pshare.peer.discovery.providers import ProviderLookup
from p2pshare.peer.discovery.search import NetworkSearch
from p2pshare.peer.discovery.tracker_session import TrackerSession
from p2pshare.peer.overlay.network import SAVED_NAME, Overlay
from p2pshare.peer.overlay.publisher import NeighbourFeeds, Publisher, tracker_changes
from p2pshare.peer.overlay.subscriptions import CATCH_UP_LIMIT, Subscription, Subscriptions
from p2pshare.peer.rpc.auth import GrpcAuth, ServerAuth
from p2pshare.peer.rpc.client import PeerClients
from p2pshare.peer.rpc.server import PeerService, start_server
from p2pshare.peer.sharing.hash_cache import HashCache
from p2pshare.peer.sharing.share import ScanResult, Share, SharedFile
from p2pshare.peer.sharing.watcher import ShareWatcher
from p2pshare.peer.sync.engine import MAX_LISTING, FolderSync, SyncEvent, SyncShare
from p2pshare.peer.sync.store import VersionStore, device_id
from p2pshare.peer.sync.wire import hit_version
from p2pshare.peer.transfer.downloads import DownloadManager
from p2pshare.tracker.client import TrackerClient
from p2pshare.tracker.client_auth import TrackerAuth
from p2pshare.tracker.models import FileEntry, PeerRef, SearchHit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OverlayStats:
    """What the overlay of this peer has done so far."""

    candidates: int
    queries_started: int
    queries_relayed: int
    messages_sent: int


@dataclass(frozen=True)
class Served:
    """What this peer has uploaded so far."""

    pieces: int
    bytes: int


class PeerNode:
    """One peer process: ``PeerNode(settings)`` builds the parts, ``start`` opens the
    folders' watch, the scan, the gRPC server and the tracker session."""

    def __init__(self, settings: PeerSettings) -> None:
        s = self.settings = settings
        self.share_root = settings.share.resolve()
        self.data_dir = settings.data.resolve()
        try:
            self.share_root.mkdir(parents=True, exist_ok=True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.ConfigError(f"cannot create folder: {exc}") from exc
        self.address = ""
        self._bound = ""  # host:port the gRPC server bound, as others on this host dial it
        self.started = time.time()
        self.scan = ScanResult()
        self.tracker_events = "not subscribed"
        self.tls = None
        if s.tls != "off":
            from p2pshare import tls  # X.509 costs ~10 MB: loaded only when TLS is on

            advertised = s.advertise.rpartition(":")[0].strip("[]") if s.advertise else ""
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
        self.versions = VersionStore(
            self.data_dir / "sync.db",
            device_id(self.data_dir),
            tombstone_days=self.settings.sync_tombstone_days,
        )
        self.sync_share = SyncShare(store=self.versions, share=self.share)
        self._sync_listeners: set[asyncio.Queue[SyncEvent]] = set()
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
            versioned_hits=self._versioned_hits,
        )
        self.publisher = Publisher()
        self.feeds = NeighbourFeeds(clients=self.clients, publisher=self.publisher)
        self.overlay.add_listener(self.feeds.neighbour_changed)
        self._build_tracker_parts()
        self._build_transfer_parts()

    def _build_tracker_parts(self) -> None:
        """The tracker client and session (when a tracker is configured), search and
        provider lookup."""
        s = self.settings
        key = s.network_key
        self.registration = Registration(s.tracker)
        self._tracker_client: TrackerClient | None = None
        self._events_http: httpx.AsyncClient | None = None
        self.session: TrackerSession | None = None
        if s.tracker:
            verify = self.tls.client_context() if self.tls else True
            self._tracker_client = TrackerClient(s.tracker, verify=verify, network_key=key)
            self._events_http = httpx.AsyncClient(
                base_url=s.tracker,
                timeout=httpx.Timeout(5.0, read=60.0),
                verify=verify,
                auth=TrackerAuth(key) if key else None,
            )
            self.session = TrackerSession(
                client=self._tracker_client,
                registration=self.registration,
                address=lambda: self.address,
                files=self.file_entries,
                on_join=self._joined,
                seen_at=self._seen_at,
                heartbeat_seconds=s.heartbeat_seconds,
            )
        self.network_search = NetworkSearch(
            tracker=self._tracker_client, overlay=self.overlay, share=self.share, me=self._me_ref
        )
        self.providers = ProviderLookup(
            tracker=self._tracker_client, search=self.network_search, me=lambda: self.address
        )

    def _build_transfer_parts(self) -> None:
        """Downloads, the gRPC service that serves the share and partial downloads, and
        the subscriptions that download into folders."""
        s = self.settings
        self.downloads = DownloadManager(
            clients=self.clients,
            find_providers=self.providers.find_providers,
            records=self.data_dir / "downloads",
            default_out=(s.downloads or s.share).resolve(),
            on_complete=self._downloaded,
            on_change=self._files_changed,
            max_download_rate=s.max_download_rate,
            streams_per_provider=s.streams_per_provider,
            pieces_per_request=s.pieces_per_request,
            # each verified piece is pushed to the downloaders fetching from us
            on_piece=lambda content_id, index: self.service.announce(content_id, index),
            blocks=s.swarm_blocks,
        )
        self.service = PeerService(
            share=self.share,
            me=self.me,
            overlay=self.overlay,
            publisher=self.publisher,
            partial=self.downloads.partial,
            max_uploads=s.max_uploads,
            max_uploads_per_peer=s.max_uploads_per_peer,
            max_subscribers=s.max_subscribers,
            max_subscribers_per_peer=s.max_subscribers_per_peer,
            max_calls_per_peer=s.max_calls_per_peer,
            max_upload_rate=s.max_upload_rate,
            super_seed=s.super_seed,
        )
        self._grpc: grpc.aio.Server | None = None
        self.subscriptions = Subscriptions(
            data_dir=self.data_dir,
            search=self._subscription_search,
            changes=self.changes,
            listing=self._sync_listing,
            folder=self._folder_sync,
            me=lambda: self.address,
        )

    # -- start and stop -------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self.watcher.start()  # before the scan: nothing written meanwhile is missed
        self.scan = await asyncio.to_thread(self.share.scan)
        self.sync_share.reconcile()  # what changed while the peer was down: new versions
        key = s.network_key
        self._grpc, port = await start_server(
            self.service,
            s.host,
            s.port,
            tls=self.tls,
            interceptors=[ServerAuth(key, names=self._own_addresses)] if key else (),
        )
        self._bound = f"{_dialable(s.host)}:{port}"
        self.address = s.advertise or self._bound
        if s.host in UNSPECIFIED and not s.advertise and not s.tracker:
            log.warning("listening on all addresses with no tracker: set --advertise HOST:PORT")
        self.clients.set_me(self.me())
        self.overlay.start()
        if self.session is not None:
            await self.session.start()
        self.downloads.resume_interrupted()
        self.subscriptions.start()

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        await self.subscriptions.close()
        await self.watcher.stop()
        await self.feeds.close()
        await self.downloads.close()
        await self.overlay.stop()
        if self._tracker_client is not None:
            await self._tracker_client.aclose()
        if self._events_http is not None:
            await self._events_http.aclose()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        await self.clients.close()
        self.versions.close()

    # -- who we are, what we did ----------------------------------------------

    def me(self) -> pb.PeerInfo:
        return pb.PeerInfo(peer_id=self.registration.peer_id, address=self.address)

    def _me_ref(self) -> PeerRef:
        return PeerRef(peer_id=self.registration.peer_id, address=self.address)

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

    @property
    def listening(self) -> str:
        """HOST:PORT the gRPC server is bound to (``address`` is what others dial)."""
        return f"{self.settings.host}:{self._bound.rsplit(':', 1)[1]}" if self._bound else ""

    def _seen_at(self, host: str) -> bool:
        """One peer per machine, bound to every address with none advertised: the
        address the tracker sees is the one other machines dial (127.0.0.1, which it
        advertised until now, reaches only this machine). True if it was taken."""
        s = self.settings
        if s.advertise or s.host not in UNSPECIFIED or is_loopback(host):
            return False
        port = self._bound.rsplit(":", 1)[1]
        seen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if seen == self.address:
            return False
        log.info("advertising %s, the address the tracker sees this peer at", seen)
        self.address = seen
        self.clients.set_me(self.me())
        return True

    def _own_addresses(self) -> tuple[str, ...]:
        """The addresses a caller may dial this peer by: a private network's proof
        names one of them (``core.auth.grpc_call``)."""
        return tuple({self.address, self._bound} - {""})

    def overlay_stats(self) -> OverlayStats:
        o = self.overlay
        return OverlayStats(
            candidates=o.candidate_count(),
            queries_started=o.queries_started,
            queries_relayed=o.queries_relayed,
            messages_sent=o.messages_sent,
        )

    def served(self) -> Served:
        return Served(pieces=self.service.pieces_served, bytes=self.service.bytes_served)

    # -- the tracker session --------------------------------------------------

    async def tracker_state_now(self) -> Registration:
        """The registration, its state checked with the tracker if not heard of lately."""
        if self.session is not None:
            await self.session.refresh()
        return self.registration

    def _joined(self, neighbours: list[PeerRef]) -> None:
        """Registered at the tracker: meet the neighbours it sampled, with our id."""
        self.overlay.offer(n.address for n in neighbours)
        self.clients.set_me(self.me())

    def _files_changed(self) -> None:
        if self.session is not None:
            self.session.files_changed()

    # -- publish/subscribe ----------------------------------------------------

    def _share_changed(self, removed: list[SharedFile], added: list[SharedFile]) -> None:
        """The share changed (the watcher, a completed download): record the names'
        versions, tell the tracker and the subscribers."""
        versions = {f.name: v for f, v in self.sync_share.changed(removed, added)}
        for kind, files in ((REMOVED, removed), (ADDED, added)):
            for f in files:
                version = versions.get(f.name)
                if version is not None and (kind == REMOVED) != version.deleted:
                    version = None  # the old content of a changed name: no version
                self._publish(kind, f.content_id, f.name, f.size, version)
        self._files_changed()

    def _publish(
        self, kind: Kind, content_id: str, name: str, size: int, version: FileVersion | None
    ) -> None:
        me = self.me()
        self.publisher.publish(
            ShareChange(
                kind=kind,
                content_id=content_id,
                name=name,
                size=size,
                provider=me.address,
                peer_id=me.peer_id,
                version=version,
            )
        )

    # -- folder sync ----------------------------------------------------------

    def _versioned_hits(self, request: pb.SearchRequest) -> list[pb.SearchHit]:
        query = parse_query(request.query) if request.query and not request.name else None
        return self.sync_share.hits(query, request.name, self.me())

    def _folder_sync(self, sub: Subscription) -> FolderSync:
        return FolderSync(
            sub_id=sub.id,
            folder=Path(sub.into),
            mirror=sub.mirror,
            keep=sub.keep,
            store=self.versions,
            cache=self.cache,
            share=self.share,
            downloads=self.downloads,
            records=self.data_dir / "downloads",
            manifest_of=lambda provider, cid: self.clients.manifest(provider, cid),
            lookup=self._sync_lookup,
            remember=self._sync_remember,
            republish=self._sync_republish,
            on_event=self._sync_event,
        )

    async def _sync_listing(self, provider: str, query: str) -> list[tuple[str, FileVersion]]:
        hits = await self.clients.search_share_of(
            provider, query, limit=MAX_LISTING, with_versions=True
        )
        out = []
        for hit in hits:
            try:
                out.append((check_share_name(hit.name), hit_version(hit)))
            except errors.P2PShareError:
                continue
        return out

    async def _sync_lookup(self, provider: str, name: str) -> FileVersion | None:
        hits = await self.clients.search_share_of(provider, "", name=name, with_versions=True)
        for hit in hits:
            if hit.name == name:
                with contextlib.suppress(errors.P2PShareError):
                    return hit_version(hit)
        return None

    def _sync_remember(self, content_id: str, name: str, size: int, provider: str) -> None:
        self.network_search.remember(
            SearchHit(
                content_id=content_id,
                name=name,
                size=size,
                providers=[PeerRef(peer_id="", address=provider)],
            )
        )

    def _sync_republish(self, path: Path) -> None:
        """A name's version changed with no change of its file (vectors merged): publish
        it again, so the other peers' vectors converge too."""
        version = self.sync_share.version_of(path)
        if version is None or version.deleted or not path.is_relative_to(self.share_root):
            return
        name = "/".join(path.relative_to(self.share_root).parts)
        self._publish(ADDED, version.content_id, name, version.size, version)

    def _sync_event(self, event: SyncEvent) -> None:
        for queue in list(self._sync_listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(event)

    async def sync_events(self) -> AsyncIterator[SyncEvent]:
        """What the folder syncs do, as they do it."""
        queue: asyncio.Queue[SyncEvent] = asyncio.Queue(1000)
        self._sync_listeners.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._sync_listeners.discard(queue)

    async def changes(
        self, query: str, *, by_version: bool = True, on_open: Callable[[], None] = lambda: None
    ) -> AsyncIterator[ShareChange]:
        """Changes of files matching ``query`` (empty: all) anywhere this peer hears of
        them, as they happen: its own share, its neighbours' streams, the tracker's
        events; each change once (``by_version``: each version of a name's content).
        ``on_open`` is called once every source is open (the tracker's stream: at each
        connection): a listing taken after it misses nothing the stream does not bring."""
        parsed = parse_query(query) if query else None
        sub = self.publisher.subscribe(parsed, by_version=by_version)
        feed: asyncio.Task[None] | None = None
        if self._events_http is None:
            on_open()
        else:
            http = self._events_http

            def state(s: str) -> None:
                self.tracker_events = s

            async def pump() -> None:
                async for change in tracker_changes(http, query, on_state=state, on_open=on_open):
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
        hits, _ = await self.network_search.search_everywhere(query, CATCH_UP_LIMIT)
        return hits

    # -- finding and fetching -------------------------------------------------

    def bytes_received(self) -> int:
        """Bytes of verified pieces downloaded since the start."""
        return sum(d.received for d in self.downloads.all())

    def resolve_content_id(self, id_or_prefix: str) -> str:
        """A full content id from an id or a unique prefix of one seen by this peer."""
        prefix = check_content_id_prefix(id_or_prefix)
        if len(prefix) == 64:
            return prefix
        known = {f.content_id for f in self.share.files()} | set(self.network_search.recent)
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
            self._files_changed()


UNSPECIFIED = ("0.0.0.0", "::", "")


def _dialable(host: str) -> str:
    """The host other peers dial when none was advertised (until the tracker says
    which address it sees: ``PeerNode._seen_at``)."""
    return "127.0.0.1" if host in UNSPECIFIED else host

"""A running peer: wires the share, the gRPC server, downloads, the tracker session
and the control API together. All asyncio of the peer lives here and in the
modules it starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.config import PeerSettings
from p2pshare.core.manifest import check_content_id_prefix
from p2pshare.peer.downloads import DownloadManager
from p2pshare.peer.hash_cache import HashCache
from p2pshare.peer.peer_client import PeerClients
from p2pshare.peer.peer_server import PeerService, start_server
from p2pshare.peer.share import Share
from p2pshare.tracker.client import TrackerClient
from p2pshare.tracker.models import FileEntry, PeerRef, SearchHit

log = logging.getLogger(__name__)

RETRY_MAX = 10.0  # seconds between attempts to reach a tracker that is down


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


class PeerNode:
    """One peer process."""

    def __init__(self, settings: PeerSettings) -> None:
        self.settings = settings
        self.share_root = settings.share.resolve()
        self.data_dir = settings.data.resolve()
        self.tracker = TrackerSession(settings.tracker)
        self.address = ""
        self.recent_hits: dict[str, SearchHit] = {}
        self._files_dirty = asyncio.Event()
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
        self.cache = HashCache(self.data_dir / "hashes.db")
        self.share = Share(
            self.share_root,
            cache=self.cache,
            piece_size=s.piece_size,
            workers=s.hash_workers,
            whole_file_sha256=s.whole_file_sha256,
        )
        self.scan = await asyncio.to_thread(self.share.scan)
        self.clients = PeerClients()
        self.service = PeerService(
            share=self.share,
            me=self.me,
            known=self.known,
            max_uploads=s.max_uploads,
            max_upload_rate=s.max_upload_rate,
        )
        self.grpc_server, port = await start_server(self.service, s.host, s.port)
        self.address = s.advertise or f"{_dialable(s.host)}:{port}"
        self.clients.set_me(self.me())
        self.downloads = DownloadManager(
            clients=self.clients,
            find_providers=self.find_providers,
            records=self.data_dir / "downloads",
            default_out=(s.downloads or s.share).resolve(),
            on_complete=self._downloaded,
            streams_per_provider=s.streams_per_provider,
            pieces_per_request=s.pieces_per_request,
        )
        if self.tracker.url:
            self._tracker_client = TrackerClient(self.tracker.url)
            await self._register_once()
            self._tasks.append(asyncio.create_task(self._tracker_loop(), name="tracker"))
        else:
            self.tracker.state = "no tracker configured"
        self.downloads.resume_interrupted()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.downloads.close()
        if self.tracker.url:
            if self.tracker.token:
                with contextlib.suppress(errors.P2PShareError):
                    await self._tracker_client.logout(self.tracker.peer_id, self.tracker.token)
            await self._tracker_client.aclose()
        await self.grpc_server.stop(grace=1.0)
        await self.clients.close()

    # -- who we are -----------------------------------------------------------

    def me(self) -> pb.PeerInfo:
        return pb.PeerInfo(peer_id=self.tracker.peer_id, address=self.address)

    def known(self) -> list[pb.PeerInfo]:
        return [pb.PeerInfo(peer_id=n.peer_id, address=n.address) for n in self.tracker.neighbours]

    def file_entries(self) -> list[FileEntry]:
        return [
            FileEntry(content_id=f.content_id, name=f.name, size=f.size) for f in self.share.files()
        ]

    # -- the tracker session --------------------------------------------------

    async def _register_once(self) -> bool:
        try:
            reply = await self._tracker_client.register(self.address, self.file_entries())
        except errors.P2PShareError as exc:
            self.tracker.state = f"unreachable: {exc}"
            log.warning("tracker %s: %s", self.tracker.url, exc)
            return False
        self.tracker.peer_id, self.tracker.token = reply.peer_id, reply.token
        self.tracker.lease_seconds = reply.lease_seconds
        self.tracker.neighbours = list(reply.neighbours)
        self.tracker.state = "registered"
        self.tracker.last_ok = time.time()
        self.clients.set_me(self.me())
        self._files_dirty.clear()
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
                    await self._tracker_client.replace_files(
                        self.tracker.peer_id, self.tracker.token, self.file_entries()
                    )
                else:
                    await self._tracker_client.heartbeat(self.tracker.peer_id, self.tracker.token)
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

    # -- finding and fetching -------------------------------------------------

    async def find_providers(self, content_id: str) -> list[str]:
        """Addresses of peers that provide ``content_id``, not counting this one."""
        addresses: list[str] = []
        if self.tracker.url:
            try:
                reply = await self._tracker_client.providers(content_id)
                addresses = [p.address for p in reply.providers]
            except errors.NotFound:
                addresses = []
            except errors.TransportError:
                hit = self.recent_hits.get(content_id)
                addresses = [p.address for p in hit.providers] if hit else []
                if not addresses:
                    raise
        return [a for a in addresses if a != self.address]

    async def search(self, query: str, limit: int) -> tuple[list[SearchHit], dict[str, str]]:
        """Hits from the tracker and this peer's share, one per content id."""
        from p2pshare.core.names import parse_query

        try:
            parsed = parse_query(query)
        except ValueError as exc:
            raise errors.UsageError(str(exc)) from exc
        sources: dict[str, str] = {}
        merged: dict[str, SearchHit] = {}
        if self.tracker.url:
            try:
                for hit in await self._tracker_client.search(query, limit):
                    merged[hit.content_id] = hit
                sources["tracker"] = "ok"
            except errors.TransportError as exc:
                sources["tracker"] = f"unreachable: {exc}"
        me = PeerRef(peer_id=self.tracker.peer_id, address=self.address)
        for f in self.share.search(parsed, limit):
            known = merged.get(f.content_id)
            providers = list(known.providers) if known else []
            if all(p.address != self.address for p in providers):
                providers.append(me)
            merged[f.content_id] = SearchHit(
                content_id=f.content_id, name=f.name, size=f.size, providers=providers
            )
        sources["local"] = "ok"
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

    async def _downloaded(self, path: Path) -> None:
        """A download completed: share it if it landed in the share folder."""
        if path.is_relative_to(self.share_root):
            await asyncio.to_thread(self.share.index_file, path)
            self._files_dirty.set()


def _dialable(host: str) -> str:
    """The host other peers dial when none was advertised."""
    if host in ("0.0.0.0", "::", ""):
        log.warning("listening on all addresses: set --advertise HOST:PORT for other machines")
        return "127.0.0.1"
    return host

"""Downloads: find providers, fetch the manifest, open the partial file, run the
swarm (``swarm.py``), move the verified file into place; one task per download."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from p2pshare import errors
from p2pshare.core.manifest import Manifest, check_content_id
from p2pshare.core.paths import check_share_name
from p2pshare.peer.rpc.client import PeerClients
from p2pshare.peer.sharing.hashing import hash_file
from p2pshare.peer.transfer.block_swarm import new_swarm
from p2pshare.peer.transfer.partial import (
    PartialDownload,
    load_record,
    partial_path,
    recorded_pieces,
)
from p2pshare.peer.transfer.progress import Download
from p2pshare.peer.transfer.swarm import BlocksMode, DownloadLimit, FindProviders, Swarm, SwarmTools

log = logging.getLogger(__name__)

OnComplete = Callable[[Path, Manifest], Awaitable[None]]

MAX_STREAMS = 64  # piece streams running at once across all downloads


@dataclass(frozen=True)
class PiecesDetail:
    """What a download's pieces map and its providers' shares show."""

    have: str  # base64 of the bitfield of verified pieces (piece i: byte i // 8, bit 0x80 >> i % 8)
    in_flight: list[int]  # pieces asked of a provider and not yet received
    delivered: dict[str, int]  # verified bytes received from each provider


class DownloadManager:
    """Runs downloads; one per content id at a time."""

    def __init__(
        self,
        *,
        clients: PeerClients,
        find_providers: FindProviders,
        records: Path,
        default_out: Path,
        on_complete: OnComplete,
        on_change: Callable[[], None] = lambda: None,
        max_download_rate: int = 0,
        streams_per_provider: int = 4,
        pieces_per_request: int = 8,
        on_piece: Callable[[str, int], None] = lambda content_id, index: None,
        blocks: BlocksMode = "auto",
    ) -> None:
        self._clients = clients
        self._find_providers = find_providers
        self._records = records
        self._default_out = default_out
        self._on_complete = on_complete
        self._streams = streams_per_provider
        self._per_request = pieces_per_request
        self._downloads: dict[str, Download] = {}
        self._partials: dict[str, PartialDownload] = {}
        self._on_change = on_change
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._swarms: dict[str, Swarm] = {}  # the running (or last) swarm of each download
        self._have: dict[str, bytes] = {}  # verified pieces when the last run ended
        self._delivered: dict[str, dict[str, int]] = {}  # bytes by provider of ended runs
        self._verified: dict[str, list[int]] = {}  # pieces a caller wrote verified (start)
        self.changed: Callable[[], None] = lambda: None  # told of every change of a download
        self._pool = ThreadPoolExecutor(max(2, os.cpu_count() or 2), "p2pshare-disk")
        self._streams_pool = ThreadPoolExecutor(MAX_STREAMS, "p2pshare-stream")
        self._tools = SwarmTools(
            clients=clients,
            find_providers=find_providers,
            disk_pool=self._pool,
            streams_pool=self._streams_pool,
            limit=DownloadLimit(max_download_rate),
            streams_per_provider=streams_per_provider,
            pieces_per_request=pieces_per_request,
            announce=on_piece,
            blocks=blocks,
        )
        records.mkdir(parents=True, exist_ok=True)

    def all(self) -> list[Download]:
        return list(self._downloads.values())

    def partial(self, content_id: str) -> PartialDownload | None:
        """The download of ``content_id`` in progress here, whose verified pieces we serve."""
        return self._partials.get(content_id)

    def sharing(self) -> list[Manifest]:
        """Manifests of the downloads in progress: their pieces are offered to others."""
        return [p.manifest for p in self._partials.values()]

    def get(self, content_id: str) -> Download:
        try:
            return self._downloads[content_id]
        except KeyError:
            raise errors.NotFound(f"no download of {content_id}") from None

    def start(
        self, content_id: str, out_dir: Path | None = None, *, verified: list[int] | None = None
    ) -> Download:
        """Start downloading ``content_id`` into ``out_dir`` (or join the running download).

        ``verified``: pieces the caller has just written into the partial file from a
        verified, unchanged local file, with a record claiming them (folder sync):
        taken without hashing them again (``PartialDownload.open``)."""
        check_content_id(content_id)
        out = (out_dir or self._default_out).resolve()
        current = self._downloads.get(content_id)
        if current is not None and (
            not current.done
            or (current.state == "complete" and current.out_dir == out and _exists(current.path))
        ):
            return current
        if current is not None and current.state == "paused":
            return self.resume(content_id)
        download = Download(content_id, out, listener=self._changed)
        self._downloads[content_id] = download
        self._verified.pop(content_id, None)
        if verified:
            self._verified[content_id] = verified
        # an interrupted earlier attempt left the manifest: no need to ask a provider
        earlier = load_record(self._records / f"{content_id}.json")
        manifest = earlier[0] if earlier and earlier[0].content_id == content_id else None
        self._tasks[content_id] = asyncio.create_task(
            self._run(download, manifest), name=f"download-{content_id[:12]}"
        )
        return download

    def resume_interrupted(self) -> int:
        """Restart downloads left by an earlier run of this peer; returns how many."""
        count = 0
        for record in sorted(self._records.glob("*.json")):
            loaded = load_record(record)
            if loaded is None or loaded[0].content_id in self._downloads:
                continue
            manifest, target = loaded
            download = Download(manifest.content_id, target.parent, listener=self._changed)
            self._downloads[manifest.content_id] = download
            if self._paused_mark(manifest.content_id).exists():  # paused: it stays so
                self._show_paused(download, manifest, record)
                continue
            self._tasks[manifest.content_id] = asyncio.create_task(self._run(download, manifest))
            count += 1
        return count

    def _paused_mark(self, content_id: str) -> Path:
        """A file beside the record that keeps a download paused across restarts."""
        return self._records / f"{content_id}.paused"

    def _show_paused(self, download: Download, manifest: Manifest, record: Path) -> None:
        have = recorded_pieces(record, manifest)
        download.name, download.size, download.pieces = (
            manifest.name,
            manifest.size,
            manifest.piece_count,
        )
        download.pieces_done = len(have)
        download.bytes_done = sum(manifest.piece_length(i) for i in have)
        download.state, download.why_stalled = "paused", "paused by the user"
        self._have[manifest.content_id] = have.to_bytes()

    def _changed(self) -> None:
        self.changed()

    async def pause(self, content_id: str) -> Download:
        """Stop fetching ``content_id``; its partial file and record stay for ``resume``."""
        download = self.get(content_id)
        if download.state == "paused":
            return download
        if download.done:
            raise errors.UsageError(f"the download is {download.state}: nothing to pause")
        await self._stop(content_id)
        download.state, download.why_stalled = "paused", "paused by the user"
        try:
            self._paused_mark(content_id).touch()
        except OSError as exc:  # paused all the same, until the next start of the peer
            log.warning("cannot keep %s paused across restarts: %s", content_id[:12], exc)
        download.touch()
        return download

    def resume(self, content_id: str) -> Download:
        """Fetch a paused download again, from the pieces its partial file holds."""
        download = self.get(content_id)
        if download.state != "paused":
            raise errors.UsageError(f"the download is {download.state}, not paused")
        earlier = load_record(self._records / f"{content_id}.json")
        manifest = earlier[0] if earlier and earlier[0].content_id == content_id else None
        self._paused_mark(content_id).unlink(missing_ok=True)
        download.restart()
        self._tasks[content_id] = asyncio.create_task(
            self._run(download, manifest), name=f"download-{content_id[:12]}"
        )
        return download

    async def cancel(self, content_id: str) -> Download:
        """Stop fetching ``content_id`` and delete its partial file and record (a failed
        download too: its partial file is kept for a resume until then)."""
        download = self.get(content_id)
        if download.state in ("complete", "cancelled"):
            raise errors.UsageError(f"the download is {download.state}: nothing to cancel")
        await self._stop(content_id)
        record = self._records / f"{content_id}.json"
        loaded = load_record(record)
        targets = [loaded[1]] if loaded else []
        if download.name:
            with contextlib.suppress(errors.DownloadFailed):  # a name we never wrote under
                targets.append(_target_path(download.out_dir, download.name))
        for path in [record, self._paused_mark(content_id), *(partial_path(t) for t in targets)]:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cancel: cannot delete %s: %s", path, exc)
        self._have.pop(content_id, None)
        download.state, download.why_stalled = "cancelled", None
        download.finished = time.monotonic()
        download.touch()
        return download

    async def _stop(self, content_id: str) -> None:
        task = self._tasks.pop(content_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def detail(self, content_id: str) -> PiecesDetail:
        """The pieces map and each provider's bytes of ``content_id``'s download."""
        download = self.get(content_id)
        delivered = dict(self._delivered.get(content_id, {}))
        swarm = self._swarms.get(content_id)
        in_flight: list[int] = []
        if swarm is not None:
            for address, n in swarm.picker.delivered().items():
                delivered[address] = delivered.get(address, 0) + n
            in_flight = sorted(swarm.picker.all_in_flight() - set(swarm.partial.have))
            have = swarm.partial.have.to_bytes()
        elif download.state == "complete" and download.pieces:
            have = _all_pieces(download.pieces)
        else:
            have = self._have.get(content_id, b"")
        return PiecesDetail(
            have=base64.b64encode(have).decode(), in_flight=in_flight, delivered=delivered
        )

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pool.shutdown(wait=True)
        self._streams_pool.shutdown(wait=True)

    async def _run(self, download: Download, manifest: Manifest | None) -> None:
        try:
            providers = await self._providers(download)
            if manifest is None:
                manifest = await self._manifest(download, providers)
            download.name, download.size = manifest.name, manifest.size
            download.pieces = manifest.piece_count
            target = _target_path(download.out_dir, manifest.name)
            if target.exists():
                await self._already_there(download, manifest, target)
                return
            record = self._records / f"{manifest.content_id}.json"
            loop = asyncio.get_running_loop()
            verified = self._verified.pop(manifest.content_id, [])
            partial = await loop.run_in_executor(
                self._pool,
                lambda: PartialDownload.open(
                    manifest, target, record, pool=self._pool, verified=verified
                ),
            )
            self._partials[manifest.content_id] = partial
            self._on_change()  # others may fetch our verified pieces from now on
            try:
                download.pieces_done = len(partial.have)
                download.bytes_done = sum(manifest.piece_length(i) for i in partial.have)
                download.state = "downloading"
                download.why_stalled = None  # the swarm says from now on why it waits
                download.touch()
                swarm = new_swarm(self._tools, download, partial, providers)
                self._swarms[manifest.content_id] = swarm
                try:
                    await swarm.run()
                finally:
                    self._swarm_ended(swarm)
                self._partials.pop(manifest.content_id, None)
                path = await loop.run_in_executor(self._pool, partial.finish)
            finally:
                self._partials.pop(manifest.content_id, None)
                partial.close()
                self._on_change()
            download.complete(path)  # the user has the file: sharing it can follow
            await self._on_complete(path, manifest)
        except errors.P2PShareError as exc:
            download.state = "failed"
            download.error = str(exc)
            log.info("download %s failed: %s", download.content_id[:12], exc)
        finally:
            download.finished = download.finished or time.monotonic()
            download.touch()

    def _swarm_ended(self, swarm: Swarm) -> None:
        """Keep what the pieces map and the providers' shares show after the swarm."""
        content_id = swarm.download.content_id
        if self._swarms.get(content_id) is swarm:
            del self._swarms[content_id]
        self._have[content_id] = swarm.partial.have.to_bytes()
        ended = self._delivered.setdefault(content_id, {})
        for address, n in swarm.picker.delivered().items():
            ended[address] = ended.get(address, 0) + n

    async def _already_there(self, download: Download, manifest: Manifest, target: Path) -> None:
        """The target exists: done if it holds these very bytes, else refuse to touch it."""
        found = await asyncio.to_thread(
            hash_file, target, name=manifest.name, piece_size=manifest.piece_size
        )
        if found.content_id != manifest.content_id:
            raise errors.DownloadFailed(
                f"{target} already exists with other content; move it away or choose another"
                " output folder"
            )
        download.pieces_done, download.bytes_done = manifest.piece_count, manifest.size
        download.complete(target)
        await self._on_complete(target, manifest)

    async def _providers(self, download: Download) -> list[str]:
        download.why_stalled = "looking for providers"
        providers = await self._find_providers(download.content_id)
        if not providers:
            raise errors.DownloadFailed(f"no peer provides {download.content_id}")
        download.providers = providers
        download.touch()
        return providers

    async def _manifest(self, download: Download, providers: list[str]) -> Manifest:
        download.why_stalled = "fetching the manifest"
        problems = []
        for address in providers:
            try:
                return await self._clients.manifest(address, download.content_id)
            except errors.P2PShareError as exc:
                problems.append(str(exc))
        raise errors.DownloadFailed("no provider gave the manifest: " + "; ".join(problems))


def _target_path(out_dir: Path, name: str) -> Path:
    """Where a file shared as ``name`` is saved under ``out_dir``, refusing escapes."""
    try:
        check_share_name(name)
    except errors.InvalidName as exc:
        raise errors.DownloadFailed(f"refusing the provider's file name: {exc}") from exc
    target = out_dir / name
    # resolve() follows every symlink on the existing part of the path
    if not target.parent.resolve().is_relative_to(out_dir.resolve()):
        raise errors.DownloadFailed(f"refusing {name!r}: it leaves {out_dir} through a symlink")
    return target


def _all_pieces(count: int) -> bytes:
    full, rest = divmod(count, 8)
    return b"\xff" * full + (bytes([(0xFF00 >> rest) & 0xFF]) if rest else b"")


def _exists(path: str | None) -> bool:
    return path is not None and Path(path).is_file()

"""Downloads: find providers, fetch the manifest, open the partial file, run the
swarm (``swarm.py``), move the verified file into place; one task per download."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from p2pshare import errors
from p2pshare.core.manifest import Manifest, check_content_id
from p2pshare.core.paths import check_share_name
from p2pshare.peer.rpc.client import PeerClients
from p2pshare.peer.sharing.hashing import hash_file
from p2pshare.peer.transfer.partial import PartialDownload, load_record
from p2pshare.peer.transfer.progress import Download
from p2pshare.peer.transfer.swarm import DownloadLimit, FindProviders, Swarm, SwarmTools

log = logging.getLogger(__name__)

OnComplete = Callable[[Path, Manifest], Awaitable[None]]

MAX_STREAMS = 64  # piece streams running at once across all downloads


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

    def start(self, content_id: str, out_dir: Path | None = None) -> Download:
        """Start downloading ``content_id`` into ``out_dir`` (or join the running download)."""
        check_content_id(content_id)
        out = (out_dir or self._default_out).resolve()
        current = self._downloads.get(content_id)
        if current is not None and (
            not current.done
            or (current.state == "complete" and current.out_dir == out and _exists(current.path))
        ):
            return current
        download = Download(content_id, out)
        self._downloads[content_id] = download
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
            download = Download(manifest.content_id, target.parent)
            self._downloads[manifest.content_id] = download
            self._tasks[manifest.content_id] = asyncio.create_task(self._run(download, manifest))
            count += 1
        return count

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
            partial = await loop.run_in_executor(
                self._pool, lambda: PartialDownload.open(manifest, target, record, pool=self._pool)
            )
            self._partials[manifest.content_id] = partial
            self._on_change()  # others may fetch our verified pieces from now on
            try:
                download.pieces_done = len(partial.have)
                download.bytes_done = sum(manifest.piece_length(i) for i in partial.have)
                download.state = "downloading"
                download.touch()
                await Swarm(self._tools, download, partial, providers).run()
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


def _exists(path: str | None) -> bool:
    return path is not None and Path(path).is_file()

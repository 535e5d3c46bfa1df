"""Downloads: find providers, fetch the manifest, swarm pieces from all providers.

Each download runs as one asyncio task that owns a ``PiecePicker`` (the pure
scheduling core) and a ``PartialDownload`` (the disk). Per provider it runs a few
concurrent piece streams. The control (which piece, which provider, retries,
bans) stays on the event loop; the data of each batch of pieces is received,
verified and written on a thread (``_BatchStream``), which reports each piece
back to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from p2pshare import errors
from p2pshare.core.manifest import Manifest, check_content_id
from p2pshare.core.paths import check_share_name
from p2pshare.core.piece_picker import PiecePicker
from p2pshare.core.rate import TokenBucket
from p2pshare.peer.hashing import hash_file
from p2pshare.peer.partial import PartialDownload, load_record
from p2pshare.peer.peer_client import PeerClients, PieceCall
from p2pshare.peer.wire import decode_piece, translate

log = logging.getLogger(__name__)

FindProviders = Callable[[str], Awaitable[list[str]]]
OnComplete = Callable[[Path], Awaitable[None]]

PIECE_TIMEOUT = 20.0  # a provider of unknown speed silent this long on a stream is stalled
MIN_STALL = 3.0  # a provider of known speed is stalled after the longer of this and
STALL_FACTOR = 4  # this many times the time its pieces in flight should take
RECORD_EVERY = 2.0  # seconds between records of verified pieces
PROVIDER_REFRESH = 3.0  # seconds between looks for new providers
HAVE_REFRESH = 1.0  # seconds between asking providers still downloading what they hold
NO_PROVIDER_GRACE = 15.0  # how long a download waits with no provider before it fails
BUSY_BACKOFF = 1.0  # seconds before asking a busy provider again
RETRY_DROPPED = 10.0  # seconds before a provider that stopped answering is tried again
MAX_FAILURES = 3  # consecutive failed requests before a provider is dropped
MAX_STREAMS = 64  # piece streams running at once across all downloads


@dataclass
class Download:
    """One download, as the control API shows it."""

    content_id: str
    out_dir: Path
    state: str = "starting"  # starting, downloading, complete, failed
    name: str = ""
    size: int = 0
    pieces: int = 0
    pieces_done: int = 0
    bytes_done: int = 0
    path: str | None = None
    error: str | None = None
    why_stalled: str | None = None
    providers: list[str] = field(default_factory=list)
    banned: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    version: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _window: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    @property
    def done(self) -> bool:
        return self.state in ("complete", "failed")

    @property
    def rate(self) -> float:
        """Bytes per second over the last two seconds."""
        if self.done or len(self._window) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._window[0], self._window[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def touch(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def add_bytes(self, n: int) -> None:
        now = time.monotonic()
        self.bytes_done += n
        self.pieces_done += 1
        self._window.append((now, self.bytes_done))
        while self._window and now - self._window[0][0] > 2.0:
            self._window.popleft()
        self.touch()

    async def wait_change(self, after: int, timeout: float, min_interval: float = 0.25) -> None:
        """Return when ``version`` exceeds ``after``, or after ``timeout`` seconds.

        Progress alone wakes a watcher at most every ``min_interval`` seconds (a piece
        arrives every millisecond; answering each would tax the download itself);
        the end of the download wakes it at once.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.version <= after and not self.done:
                    await self._changed.wait()
                while not self.done and (left := start + min_interval - loop.time()) > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), left)


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
        self._rate = _SharedLimit(max_download_rate)
        self._on_change = on_change
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._pool = ThreadPoolExecutor(max(2, os.cpu_count() or 2), "p2pshare-disk")
        self._streams_pool = ThreadPoolExecutor(MAX_STREAMS, "p2pshare-stream")
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
                await _Swarm(self, download, partial, providers).run()
                self._partials.pop(manifest.content_id, None)
                path = await loop.run_in_executor(self._pool, partial.finish)
            finally:
                self._partials.pop(manifest.content_id, None)
                partial.close()
                self._on_change()
            download.path = str(path)
            download.state = "complete"
            download.why_stalled = None
            await self._on_complete(path)
        except errors.P2PShareError as exc:
            download.state = "failed"
            download.error = str(exc)
            log.info("download %s failed: %s", download.content_id[:12], exc)
        finally:
            download.finished = time.monotonic()
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
        download.path = str(target)
        download.pieces_done, download.bytes_done = manifest.piece_count, manifest.size
        download.state = "complete"
        await self._on_complete(target)

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


class _SharedLimit:
    """The download rate limit, shared by every stream thread of every download."""

    def __init__(self, rate: int) -> None:
        self._bucket = TokenBucket(rate, max(rate / 4, 1), time.monotonic()) if rate else None
        self._lock = threading.Lock()

    def wait(self, size: int) -> None:
        """Block the calling stream thread until ``size`` more bytes are allowed."""
        if self._bucket is None:
            return
        with self._lock:
            delay = self._bucket.take(size, time.monotonic())
        if delay:
            time.sleep(delay)  # a stream thread, never the event loop


class _Superseded(errors.P2PShareError):
    """Every piece a stream still waits for arrived from elsewhere (endgame)."""


class _BatchStream:
    """One GetPieces call run on a thread: receive, verify, write, report each piece.

    The data path stays off the event loop: the blocking gRPC iterator, SHA-256
    and ``pwrite`` all release the GIL, so streams and the loop run side by side
    with little Python in between (measured: about 2.5x the throughput of the
    same path on grpc.aio).
    """

    def __init__(
        self,
        swarm: _Swarm,
        address: str,
        batch: list[int],
        pending: set[int],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.swarm = swarm
        self.address = address
        self.batch = batch
        self.pending = pending
        self.loop = loop
        self.last_piece = time.monotonic()
        self._lock = threading.Lock()
        self._call: PieceCall | None = None
        self._cancelled: errors.P2PShareError | None = None
        self._written: list[int] = []
        self._wake_pending = False

    def _report(self, index: int) -> None:
        """Hand a written piece to the loop, waking it only if no wake-up is pending:
        one wake per piece was measured as a quarter of the downloader's time."""
        with self._lock:
            self._written.append(index)
            if self._wake_pending:
                return
            self._wake_pending = True
        self.loop.call_soon_threadsafe(self.drain)

    def drain(self) -> None:
        """On the loop: credit every piece written since the last drain."""
        with self._lock:
            written, self._written = self._written, []
            self._wake_pending = False
        for index in written:
            self.swarm._piece_written(self.address, index)

    def cancel(self, why: errors.P2PShareError) -> None:
        with self._lock:
            self._cancelled = why
            if self._call is not None:
                self._call.cancel()

    def run(self) -> None:
        swarm = self.swarm
        with self._lock:
            if self._cancelled is not None:
                raise self._cancelled
            self._call = call = swarm.m._clients.pieces_blocking(
                self.address, swarm.download.content_id, self.batch,
                timeout=PIECE_TIMEOUT * len(self.batch),
            )  # fmt: skip
        got: set[int] = set()
        try:
            for raw in call:
                index, data = decode_piece(raw)
                if index not in self.pending or index in got:
                    raise errors.BadPiece(f"peer {self.address} sent piece {index} unasked")
                got.add(index)
                swarm.m._rate.wait(len(data))
                swarm.partial.write_verified(index, data)
                self.last_piece = time.monotonic()
                self.pending.discard(index)
                self._report(index)
        except grpc.RpcError as exc:
            raise self._cancelled or translate(exc, self.address) from exc
        if len(got) < len(self.batch):
            raise errors.RemoteError(f"peer {self.address} ended the stream early")


class _Swarm:
    """Fetches the missing pieces of one download from every provider at once."""

    def __init__(
        self,
        manager: DownloadManager,
        download: Download,
        partial: PartialDownload,
        providers: list[str],
    ) -> None:
        self.m = manager
        self.download = download
        self.partial = partial
        self.picker: PiecePicker[str] = PiecePicker(
            partial.manifest.piece_count, partial.have, piece_size=partial.manifest.piece_size
        )
        self.initial = providers
        self.workers: dict[str, list[asyncio.Task[None]]] = {}
        self.changed = asyncio.Event()
        self.failures: dict[str, int] = {}
        self.last_record = time.monotonic()
        self.record_lock = asyncio.Lock()
        self.fatal: errors.P2PShareError | None = None
        self.dropped: dict[str, float] = {}  # provider -> when its streams all failed
        self.busy: set[str] = set()  # providers that last answered "too many uploads"
        self.streams: set[_BatchStream] = set()  # batches being fetched right now
        self.last_progress = time.monotonic()

    async def run(self) -> None:
        for address in self.initial:
            self._add(address)
        try:
            await self._supervise()
        finally:
            for tasks in self.workers.values():
                for task in tasks:
                    task.cancel()
            await asyncio.gather(
                *(t for ts in self.workers.values() for t in ts), return_exceptions=True
            )
            # however the swarm ends, what was verified is recorded for a resume
            async with self.record_lock:
                if not self.picker.complete:
                    await self._save_record()
        if self.fatal is not None:
            raise self.fatal

    def _add(self, address: str) -> None:
        """Ask ``address`` what it holds, then start its piece streams."""
        if address in self.workers or self.picker.is_banned(address):
            return
        tasks: list[asyncio.Task[None]] = []
        self.workers[address] = tasks
        tasks.append(asyncio.create_task(self._join(address, tasks)))

    async def _join(self, address: str, tasks: list[asyncio.Task[None]]) -> None:
        try:
            have = await self.m._clients.have(address, self.download.content_id)
        except errors.P2PShareError as exc:
            log.info("provider %s: %s", address, exc)
            self.changed.set()  # reaped as a provider that did not answer
            return
        if self.picker.add_provider(address, have):
            self.failures[address] = 0
            tasks.extend(asyncio.create_task(self._worker(address)) for _ in range(self.m._streams))
            self._show_providers()

    async def _refresh_haves(self) -> None:
        """Providers still downloading hold more pieces as time goes by: ask again."""
        partial = [a for a in self.picker.providers if not self.picker.is_seeder(a)]
        haves = await asyncio.gather(
            *(self.m._clients.have(a, self.download.content_id, timeout=2) for a in partial),
            return_exceptions=True,
        )
        for address, have in zip(partial, haves, strict=True):
            if not isinstance(have, BaseException):
                self.picker.update_have(address, have)
        self.changed.set()

    def _show_providers(self) -> None:
        self.download.providers = self.picker.providers
        self.download.touch()

    async def _supervise(self) -> None:
        """Add providers as they appear; fail when none has delivered for a while."""
        last_look = last_haves = time.monotonic()
        while not self.picker.complete and self.fatal is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), PROVIDER_REFRESH)
            self.changed.clear()
            if self.picker.complete or self.fatal is not None:
                return
            self._reap()
            now = time.monotonic()
            if now - last_haves >= HAVE_REFRESH:
                last_haves = now
                await self._refresh_haves()
            healthy = [a for a in self.workers if self.failures.get(a, 0) == 0]
            if healthy and all(a in self.busy for a in healthy):
                self._stalled("all providers are busy; waiting for a free upload slot")
            elif healthy:
                self._stalled(None)
            elif self.workers:
                self._stalled("providers are not answering; retrying")
            else:
                self._stalled("no provider reachable; looking for providers")
            # look often: a swarm grows as other downloaders of the same file join
            if now - last_look > PROVIDER_REFRESH:
                last_look = now
                for address in await self._look_for_providers(now):
                    self._add(address)
            if not healthy and now - self.last_progress > NO_PROVIDER_GRACE:
                raise errors.DownloadFailed(
                    f"no provider reachable for {self.download.name or self.download.content_id}"
                    f" ({len(self.partial.have)}/{self.partial.manifest.piece_count} pieces kept;"
                    " run get again to resume)"
                )

    def _stalled(self, why: str | None) -> None:
        if self.download.why_stalled != why:
            self.download.why_stalled = why
            self.download.touch()

    def _reap(self) -> None:
        """Forget providers whose streams all ended; they may come back after a pause."""
        for address in list(self.workers):
            if all(t.done() for t in self.workers[address]):
                del self.workers[address]
                self.picker.remove_provider(address)
                self.dropped[address] = time.monotonic()
                self._show_providers()

    async def _look_for_providers(self, now: float) -> list[str]:
        try:
            found = await self.m._find_providers(self.download.content_id)
        except errors.P2PShareError as exc:
            self._stalled(f"waiting for the tracker: {exc}")
            return []
        return [
            a
            for a in found
            if a not in self.workers
            and not self.picker.is_banned(a)
            and now - self.dropped.get(a, -RETRY_DROPPED) >= RETRY_DROPPED
        ]

    async def _worker(self, address: str) -> None:
        while not self.picker.complete and self.fatal is None:
            now = time.monotonic()
            batch = self.picker.pick(
                address, min(self.m._per_request, self.picker.budget(address, now))
            )
            if not batch:
                if self.picker.is_seeder(address) and not self.picker.wanted_from(address):
                    return  # a provider still downloading may get what we miss: stay
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 1.0)
                continue
            pending = set(batch)
            try:
                await self._fetch(address, batch, pending)
                self.failures[address] = 0
                self.busy.discard(address)
            except errors.BadPiece as exc:
                log.warning("banning %s: %s", address, exc)
                self.picker.ban(address)
                self.download.banned.append(address)
                self._show_providers()
                self.changed.set()
                return
            except errors.DownloadFailed as exc:
                self.fatal = exc  # disk trouble: no provider can fix it
                self.changed.set()
                return
            except _Superseded:
                pass
            except errors.Busy:
                # alive but full: not a failure; wait and ask again
                self.busy.add(address)
                await asyncio.sleep(BUSY_BACKOFF)
            except errors.P2PShareError as exc:
                self.failures[address] = self.failures.get(address, 0) + 1
                log.info("request to %s failed: %s", address, exc)
                if self.failures[address] >= MAX_FAILURES:
                    self.changed.set()
                    return
                await asyncio.sleep(0.2 * self.failures[address])
            finally:
                for index in pending:
                    self.picker.failed(address, index)
                self.changed.set()

    async def _fetch(self, address: str, batch: list[int], pending: set[int]) -> None:
        """Fetch one batch on a stream thread, watching that it keeps moving."""
        loop = asyncio.get_running_loop()
        stream = _BatchStream(self, address, batch, pending, loop)
        job = loop.run_in_executor(self.m._streams_pool, stream.run)
        self.streams.add(stream)
        try:
            while True:
                done, _ = await asyncio.wait({job}, timeout=MIN_STALL / 3)
                if done:
                    break
                now = time.monotonic()
                if now - stream.last_piece > self._stall_after(address):
                    stream.cancel(errors.TimedOut(f"peer {address} stalled"))
        except asyncio.CancelledError:
            stream.cancel(errors.Unreachable("download stopped"))
            raise
        finally:
            stream.drain()  # pieces written but not yet credited, however the batch ended
            self.streams.discard(stream)
            await self._maybe_record()
        job.result()

    def _stall_after(self, address: str) -> float:
        """Seconds of silence after which a stream from ``address`` counts as stalled.

        Like TCP's retransmission timeout from the measured round trip: a few times
        what the provider's pieces in flight should take at its measured rate, so a
        dead link to a fast provider is noticed in seconds, a slow one is not cut off.
        """
        # the rate before the silence: measured now, the silence itself would lower it
        rate = self.picker.rate_when_last_heard(address)
        if rate <= 0:
            return PIECE_TIMEOUT
        queued = max(1, len(self.picker.in_flight(address))) * self.partial.manifest.piece_size
        return min(PIECE_TIMEOUT, max(MIN_STALL, STALL_FACTOR * queued / rate))

    def _piece_written(self, address: str, index: int) -> None:
        """A verified piece is on disk (called on the loop by a stream thread)."""
        self.last_progress = time.monotonic()
        size = self.partial.manifest.piece_length(index)
        if self.picker.received(address, index, now=self.last_progress, size=size):
            self.download.add_bytes(size)
            # endgame: a stream elsewhere that only waits for pieces now held is cancelled
            for other in self.streams:
                waiting = tuple(other.pending)  # one C-level copy: safe while its thread runs
                if (
                    other.address != address
                    and waiting
                    and all(i in self.picker.held for i in waiting)
                ):
                    other.cancel(_Superseded("pieces arrived from another provider"))

    async def _maybe_record(self) -> None:
        if time.monotonic() - self.last_record < RECORD_EVERY or self.record_lock.locked():
            return
        async with self.record_lock:
            await self._save_record()

    async def _save_record(self) -> None:
        self.last_record = time.monotonic()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.m._pool, self.partial.save_record)

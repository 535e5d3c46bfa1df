"""The swarm of one download: pieces from every provider at once.

``Swarm`` is what every swarm does: it joins providers (an ``Exchange`` stream
each, availability both ways), follows the rules of ``core.swarm_rules`` (stalls,
bans, drops, joining again, giving up), records verified pieces for a resume and
announces them. Two ways to fetch the pieces build on it:

- ``PieceSwarm``: whole pieces by ``GetPieces`` calls, scheduled by
  ``core.piece_picker``; each batch is received, verified and written on a thread
  (``_BatchStream``): the fastest path where the CPU binds (peers on one machine);
- ``block_swarm.BlockSwarm``: blocks requested on the Exchange stream itself,
  scheduled by ``core.block_picker`` and served from the provider's fair upload
  queue: the path for real links, where upload bandwidth binds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, Protocol

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.piece_picker import PiecePicker
from p2pshare.core.pieces import PieceSet
from p2pshare.core.rate import TokenBucket
from p2pshare.core.swarm_rules import (
    MIN_STALL,
    PIECE_TIMEOUT,
    Action,
    Decision,
    ProviderHealth,
    Superseded,
    stall_after,
)
from p2pshare.peer.rpc.client import CALL_TIMEOUT, ExchangeStream, PeerClients, PieceCall
from p2pshare.peer.rpc.wire import decode_piece
from p2pshare.peer.transfer.heap import HeapTrimmer
from p2pshare.peer.transfer.partial import PartialDownload
from p2pshare.peer.transfer.progress import Ban, Download
from p2pshare.peer.transfer.pulse import Flag, Pulse

log = logging.getLogger(__name__)

FindProviders = Callable[[str], Awaitable[list[str]]]

RECORD_EVERY = 2.0  # seconds between records of verified pieces
PROVIDER_REFRESH = 3.0  # seconds between looks for new providers
HAVE_REFRESH = 1.0  # seconds between asking providers still downloading what they hold

BlocksMode = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class SwarmTools:
    """What every swarm of a peer shares: clients, thread pools, limits, settings."""

    clients: PeerClients
    find_providers: FindProviders
    disk_pool: ThreadPoolExecutor
    streams_pool: ThreadPoolExecutor
    limit: DownloadLimit
    streams_per_provider: int
    pieces_per_request: int
    heap: HeapTrimmer = field(default_factory=HeapTrimmer)
    announce: Callable[[str, int], None] = lambda content_id, index: None
    """Tell the downloaders that fetch from us that a piece of ours verified."""
    blocks: BlocksMode = "auto"
    """Fetch blocks on Exchange streams (``BlockSwarm``): auto (unless every provider is
    on this machine), on, off (whole pieces by GetPieces, ``PieceSwarm``)."""


class DownloadLimit:
    """The download rate limit, shared by every stream thread of every download."""

    def __init__(self, rate: int) -> None:
        self._bucket = TokenBucket(rate, max(rate / 4, 1), time.monotonic()) if rate else None
        self._lock = threading.Lock()

    def delay(self, size: int) -> float:
        """Seconds to wait before ``size`` more bytes are allowed (spent now)."""
        if self._bucket is None:
            return 0.0
        with self._lock:
            return self._bucket.take(size, time.monotonic())

    def wait(self, size: int) -> None:
        """Block the calling stream thread until ``size`` more bytes are allowed."""
        delay = self.delay(size)
        if delay:
            time.sleep(delay)  # a stream thread, never the event loop


class _BatchStream:
    """One GetPieces call run on a thread: receive, verify, write, report each piece.

    The data path stays off the event loop: the blocking gRPC iterator, SHA-256
    and ``pwrite`` all release the GIL, so streams and the loop run side by side
    with little Python in between (measured: about 2.5x the throughput of the
    same path on grpc.aio).
    """

    def __init__(
        self,
        swarm: PieceSwarm,
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

    def _received(self, call: PieceCall) -> Iterator[bytes]:
        """The raw pieces of ``call``; a call we cancelled fails with our reason."""
        pieces = iter(call)
        while True:
            try:
                raw = next(pieces)
            except StopIteration:
                return
            except errors.P2PShareError as exc:
                if self._cancelled is not None:
                    raise self._cancelled from exc
                raise
            yield raw

    def run(self) -> None:
        swarm = self.swarm
        with self._lock:
            if self._cancelled is not None:
                raise self._cancelled
            self._call = call = swarm.tools.clients.pieces_blocking(
                self.address, swarm.download.content_id, self.batch,
                timeout=PIECE_TIMEOUT * len(self.batch),
            )  # fmt: skip
        got: set[int] = set()
        for raw in self._received(call):
            index, data = decode_piece(raw)
            if index not in self.pending or index in got:
                raise errors.BadPiece(f"piece {index} unasked")
            got.add(index)
            swarm.tools.limit.wait(len(data))
            swarm.partial.write_verified(index, data)
            swarm.tools.heap.received(len(data))
            self.last_piece = time.monotonic()
            self.pending.discard(index)
            self._report(index)
        if len(got) < len(self.batch):
            raise errors.RemoteError(f"peer {self.address} ended the stream early")


class Picker(Protocol):
    """What ``Swarm`` asks of its scheduling core (``PiecePicker`` or ``BlockPicker``)."""

    @property
    def held(self) -> PieceSet: ...

    @property
    def complete(self) -> bool: ...

    def is_banned(self, provider: str) -> bool: ...

    def is_seeder(self, provider: str) -> bool: ...

    def add_provider(self, provider: str, have: PieceSet | None = None) -> bool: ...

    def add_have(self, provider: str, index: int) -> bool: ...

    def update_have(self, provider: str, have: PieceSet | None) -> None: ...

    def remove_provider(self, provider: str) -> None: ...

    def ban(self, provider: str) -> None: ...

    def ranking(self, now: float) -> list[str]: ...

    def delivered(self) -> dict[str, int]: ...

    def all_in_flight(self) -> set[int]: ...


class Swarm:
    """Fetches the missing pieces of one download from every provider at once.

    The adapter of a picker (which piece from whom) and ``core.swarm_rules``
    (stalls, bans, drops and when to join again, when to give up): it runs the
    streams, reports what happened with the time, and acts on the answers. One
    supervisor task wakes on a ``Flag`` (or the next due time); a provider banned or
    dropped has every one of its tasks cancelled at once. Subclasses fetch: they
    start a provider's fetching (``_fetching``), hear its messages (``_heard``) and
    stop it (``_stopped``).
    """

    block_size = 0  # asked for on the Exchange stream (0: pieces go by GetPieces)
    TICK = PROVIDER_REFRESH  # the supervisor's longest sleep
    FIRST_LOOK = PROVIDER_REFRESH  # seconds before the first look for new providers,
    # doubling up to PROVIDER_REFRESH

    def __init__(
        self,
        tools: SwarmTools,
        download: Download,
        partial: PartialDownload,
        providers: list[str],
    ) -> None:
        self.tools = tools
        self.download = download
        self.partial = partial
        count = partial.manifest.piece_count
        # each downloader of a file begins somewhere else: see the pickers' policy
        self.picker = self._new_picker(random.randrange(count) if count else 0)
        self.initial = providers
        self.workers: dict[str, list[asyncio.Task[None]]] = {}  # joining or active providers
        self.changed = Flag()  # the supervisor's wake-up
        self.health = ProviderHealth()
        self.last_record = time.monotonic()
        self.record_lock = asyncio.Lock()
        self.fatal: errors.P2PShareError | None = None
        self.last_progress = time.monotonic()
        # provider -> what we send it on its Exchange stream (our Haves, requests)
        self.outbox: dict[str, asyncio.Queue[pb.ExchangeMessage]] = {}
        self.polled: set[str] = set()  # providers from before Exchange: asked by GetHave

    async def run(self) -> None:
        for address in self.initial:
            self._add(address)
        try:
            await self._supervise()
        finally:
            tasks = [t for ts in self.workers.values() for t in ts]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._ended()
            # however the swarm ends, what was verified is recorded for a resume
            async with self.record_lock:
                if not self.picker.complete:
                    await self._save_record()
        if self.fatal is not None:
            raise self.fatal

    def _new_picker(self, start: int) -> Picker:
        """The subclass's scheduling core, beginning at piece ``start`` (made first, with
        the subclass's own state)."""
        raise NotImplementedError

    async def _ended(self) -> None:
        """The swarm ends: subclasses stop what they run besides the providers' tasks."""

    def _add(self, address: str) -> None:
        """Ask ``address`` what it holds, then start fetching from it."""
        if address in self.workers or not self.health.may_join(address, time.monotonic()):
            return
        tasks: list[asyncio.Task[None]] = []
        self.workers[address] = tasks
        tasks.append(asyncio.create_task(self._join(address, tasks)))

    async def _join(self, address: str, tasks: list[asyncio.Task[None]]) -> None:
        """Open the exchange with ``address`` (its have-map, then its Haves pushed as
        they happen), or ask an older peer by GetHave; then start fetching from it."""
        stream: ExchangeStream | None = None
        try:
            try:
                stream, have = await self._open_exchange(address)
            except errors.Unsupported:
                if self.block_size:
                    raise
                have = await self.tools.clients.have(address, self.download.content_id)
                self.polled.add(address)
        except errors.P2PShareError as exc:
            log.info("provider %s: %s", address, exc)
            self._act(address, self.health.failed(address, exc, time.monotonic()), exc)
            return
        except asyncio.CancelledError:
            if stream is not None:
                stream.cancel()
            raise
        if not self.picker.add_provider(address, have):
            if stream is not None:
                stream.cancel()
            return
        self.health.joined(address)
        if stream is not None:
            queue: asyncio.Queue[pb.ExchangeMessage] = asyncio.Queue()
            self.outbox[address] = queue
            tasks.append(asyncio.create_task(self._listen(address, stream)))
            tasks.append(asyncio.create_task(self._tell(stream, queue)))
        self._fetching(address, tasks)
        self._show_providers()
        self._notify()

    def _fetching(self, address: str, tasks: list[asyncio.Task[None]]) -> None:
        """``address`` joined: start fetching from it (its tasks go into ``tasks``)."""
        raise NotImplementedError

    async def _open_exchange(self, address: str) -> tuple[ExchangeStream, PieceSet | None]:
        count = self.partial.manifest.piece_count
        stream = self.tools.clients.exchange(address)
        try:
            ours = pb.HaveMap(
                content_id=self.download.content_id,
                piece_count=count,
                bitfield=self.partial.have.to_bytes(),
            )
            opening = pb.ExchangeOpen(
                content_id=self.download.content_id, have=ours, block_size=self.block_size
            )
            await stream.write(pb.ExchangeMessage(open=opening))
            async with asyncio.timeout(CALL_TIMEOUT):
                first = await stream.read()
            if first is None or first.WhichOneof("kind") != "bitfield":
                raise errors.RemoteError(f"peer {address} did not open the exchange")
            if first.bitfield.block_size != self.block_size:
                raise errors.Unsupported(f"peer {address} does not serve blocks")
            if first.bitfield.complete:
                return stream, None
            try:
                return stream, PieceSet.from_bytes(count, first.bitfield.bitfield)
            except ValueError as exc:
                raise errors.RemoteError(f"peer {address} sent a malformed have-map") from exc
        except TimeoutError as exc:
            stream.cancel()
            raise errors.TimedOut(f"peer {address} did not open the exchange in time") from exc
        except BaseException:
            stream.cancel()
            raise

    async def _listen(self, address: str, stream: ExchangeStream) -> None:
        """The provider's messages: each piece it verified (or, a super-seeder, offers),
        and whatever the subclass asked of it."""
        count = self.partial.manifest.piece_count
        try:
            while (message := await stream.read()) is not None:
                if message.WhichOneof("kind") == "have":
                    if message.have >= count:
                        raise errors.RemoteError(f"peer {address} announced piece {message.have}")
                    if self.picker.add_have(address, message.have):
                        self._news(address)
                else:
                    await self._heard(address, message)
            raise errors.Unreachable(f"peer {address} ended the exchange")
        except errors.P2PShareError as exc:
            self._act(address, self.health.failed(address, exc, time.monotonic()), exc)
        finally:
            stream.cancel()

    def _news(self, address: str) -> None:
        """``address`` holds a piece we miss that it did not before."""

    async def _heard(self, address: str, message: pb.ExchangeMessage) -> None:
        """A message of ``address`` other than a Have."""
        raise errors.RemoteError(f"peer {address} sent {message.WhichOneof('kind')} unasked")

    async def _tell(self, stream: ExchangeStream, queue: asyncio.Queue[pb.ExchangeMessage]) -> None:
        """Our messages to the provider, in order (a super-seeder offers more on our Haves)."""
        with contextlib.suppress(errors.P2PShareError):  # _listen notices the end
            while True:
                await stream.write(await queue.get())

    async def _refresh_haves(self) -> None:
        """Providers still downloading hold more pieces as time goes by: ask again."""
        partial = [a for a in self.polled if a in self.workers and not self.picker.is_seeder(a)]
        haves = await asyncio.gather(
            *(self.tools.clients.have(a, self.download.content_id, timeout=2) for a in partial),
            return_exceptions=True,
        )
        for address, have in zip(partial, haves, strict=True):
            if not isinstance(have, BaseException):
                self.picker.update_have(address, have)
        self._wake_workers()

    def _notify(self) -> None:
        """Something the supervisor or an idle worker waits for changed."""
        self.changed.set()
        self._wake_workers()

    def _wake_workers(self) -> None:
        """Pieces may be free to ask for: every provider's fetching looks again."""

    def _show_providers(self) -> None:
        # fastest first: what status shows is also whom the swarm leans on
        self.download.providers = self.picker.ranking(time.monotonic())
        self.download.touch()

    async def _supervise(self) -> None:
        """Join providers as they appear or their wait ends; fail when the rules give up."""
        last_look = last_haves = time.monotonic()
        look_every = self.FIRST_LOOK
        while not self.picker.complete and self.fatal is None:
            now = time.monotonic()
            due = self.health.next_due(now)
            sleep = min(self.TICK, max(0.0, last_look + look_every - now))
            await self.changed.wait(sleep if due is None else min(due, sleep))
            self.changed.clear()
            if self.picker.complete or self.fatal is not None:
                return
            self._reap()
            now = time.monotonic()
            self._tick(now)
            for address in self.health.due(now):
                self._add(address)
            if self.polled and now - last_haves >= HAVE_REFRESH:
                last_haves = now
                await self._refresh_haves()
            self._stalled(self.health.why_stalled())
            why = self.health.given_up(since_progress=now - self.last_progress)
            if why is not None:
                self._stalled(why)
                raise errors.DownloadFailed(
                    f"{why} ({self.download.name or self.download.content_id}:"
                    f" {len(self.partial.have)}/{self.partial.manifest.piece_count} pieces kept;"
                    " run get again to resume)"
                )
            # look often: a swarm grows as other downloaders of the same file join
            if now - last_look >= look_every:
                last_look = now
                look_every = min(2 * look_every, PROVIDER_REFRESH)
                for address in await self._look_for_providers():
                    self._add(address)

    def _tick(self, now: float) -> None:
        """The supervisor's regular look (at least every ``TICK`` seconds)."""

    def _stalled(self, why: str | None) -> None:
        if self.download.why_stalled != why:
            self.download.why_stalled = why
            self.download.touch()

    def _reap(self) -> None:
        """Forget providers whose tasks all ended with nothing left to ask of them."""
        for address in list(self.workers):
            tasks = self.workers[address]
            if all(t.done() for t in tasks):
                del self.workers[address]
                self.outbox.pop(address, None)
                self.polled.discard(address)
                self.picker.remove_provider(address)
                self.health.left(address)
                self._show_providers()

    async def _look_for_providers(self) -> list[str]:
        try:
            found = await self.tools.find_providers(self.download.content_id)
        except errors.P2PShareError as exc:
            self._stalled(f"waiting for the tracker: {exc}")
            return []
        return [a for a in found if a not in self.workers]

    def _act(self, address: str, decision: Decision, exc: errors.P2PShareError) -> None:
        """Act on the rules' decision to stop asking ``address``: every stream and
        task of it ends now (the calling task returns by itself)."""
        if decision.action is Action.FAIL:
            self.fatal = exc  # disk trouble: no provider can fix it
        elif decision.action is Action.BAN:
            # the user is told once (a block picker bans the sender of a bad piece itself)
            if all(ban.address != address for ban in self.download.banned):
                log.warning("banning %s: %s", address, decision.reason)
                self.download.banned.append(Ban(address, decision.reason))
            self._stop_provider(address, Superseded(f"{address} banned"))
            self.picker.ban(address)
        elif decision.action is Action.DROP:
            if address in self.workers:
                log.info("dropping %s for %.2f s: %s", address, decision.wait, exc)
            self._stop_provider(address, errors.Unreachable(f"{address} dropped"))
            self.picker.remove_provider(address)
        self._show_providers()
        self._notify()

    def _stop_provider(self, address: str, why: errors.P2PShareError) -> None:
        self.outbox.pop(address, None)
        self.polled.discard(address)
        current = asyncio.current_task()
        for task in self.workers.pop(address, []):
            if task is not current:
                task.cancel()
        self._stopped(address, why)

    def _stopped(self, address: str, why: errors.P2PShareError) -> None:
        """Every task of ``address`` is cancelled: stop what else fetches from it."""

    def _verified(self, address: str, index: int, size: int) -> bool:
        """Piece ``index`` (``size`` bytes, last from ``address``) is verified on disk;
        True if the picker took it as new."""
        self.last_progress = time.monotonic()
        self.health.delivered(address)
        if not self._credit(address, index, size):
            return False
        self.download.add_bytes(size)
        # availability pushed as it changes: our downloaders, and our providers (a
        # super-seeder closes the offer and makes the next)
        self.tools.announce(self.download.content_id, index)
        for queue in self.outbox.values():
            queue.put_nowait(pb.ExchangeMessage(have=index))
        if self.picker.complete:
            self.changed.set()  # the supervisor ends the swarm now, not at its next look
        return True

    def _credit(self, address: str, index: int, size: int) -> bool:
        """Tell the picker that piece ``index`` is held; True if it is new."""
        raise NotImplementedError

    async def _maybe_record(self) -> None:
        if time.monotonic() - self.last_record < RECORD_EVERY or self.record_lock.locked():
            return
        async with self.record_lock:
            await self._save_record()

    async def _save_record(self) -> None:
        self.last_record = time.monotonic()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.tools.disk_pool, self.partial.save_record)


class PieceSwarm(Swarm):
    """Whole pieces by ``GetPieces`` calls: a few stream workers per provider, each
    asking ``PiecePicker`` for a batch and running it on a thread (``_BatchStream``).
    The stream workers of a provider wake on a ``Pulse``."""

    def _new_picker(self, start: int) -> PiecePicker[str]:
        manifest = self.partial.manifest
        self.pieces: PiecePicker[str] = PiecePicker(
            manifest.piece_count, self.partial.have, piece_size=manifest.piece_size, start=start
        )
        self.woken: dict[str, Pulse] = {}  # each provider's idle workers' wake-up
        self.streams: set[_BatchStream] = set()  # batches being fetched right now
        return self.pieces

    def _fetching(self, address: str, tasks: list[asyncio.Task[None]]) -> None:
        self.woken[address] = Pulse()
        tasks.extend(
            asyncio.create_task(self._worker(address))
            for _ in range(self.tools.streams_per_provider)
        )

    def _news(self, address: str) -> None:
        # only this provider's workers have something new to ask: waking every
        # worker on every Have cost a leecher of a loopback swarm half its CPU in
        # picks that found nothing
        self.woken[address].fire()

    def _wake_workers(self) -> None:
        for pulse in self.woken.values():
            pulse.fire()

    async def _worker(self, address: str) -> None:
        picker = self.pieces
        while not picker.complete and self.fatal is None:
            now = time.monotonic()
            batch = picker.pick(
                address, min(self.tools.pieces_per_request, picker.budget(address, now))
            )
            if not batch:
                if picker.is_seeder(address) and not picker.wanted_from(address):
                    return  # a provider still downloading may get what we miss: stay
                await self.woken[address].wait(1.0)
                continue
            pending = set(batch)
            try:
                await self._fetch(address, batch, pending)
                self.health.succeeded(address)
            except errors.P2PShareError as exc:
                decision = self.health.failed(address, exc, time.monotonic())
                if decision.action is not Action.RETRY:
                    self._act(address, decision, exc)
                    return
                if not isinstance(exc, (Superseded, errors.Busy)):
                    log.info("request to %s failed: %s", address, exc)
                if decision.wait:
                    await asyncio.sleep(decision.wait)
            finally:
                for index in pending:
                    picker.failed(address, index)
                if pending:  # pieces given back: any provider's idle worker may take them
                    self._wake_workers()

    def _stopped(self, address: str, why: errors.P2PShareError) -> None:
        for stream in list(self.streams):
            if stream.address == address:
                stream.cancel(why)

    async def _fetch(self, address: str, batch: list[int], pending: set[int]) -> None:
        """Fetch one batch on a stream thread, watching that it keeps moving."""
        loop = asyncio.get_running_loop()
        stream = _BatchStream(self, address, batch, pending, loop)
        job = loop.run_in_executor(self.tools.streams_pool, stream.run)
        # read its outcome however _fetch ends: cancelled, nobody would await it and its
        # failure would be logged as "Future exception was never retrieved"
        job.add_done_callback(_read_outcome)
        self.streams.add(stream)
        try:
            while True:
                done, _ = await asyncio.wait({job}, timeout=MIN_STALL / 3)
                if done:
                    break
                silent_for = time.monotonic() - stream.last_piece
                if silent_for > stall_after(
                    # the rate before the silence: measured now, the silence would lower it
                    rate=self.pieces.rate_when_last_heard(address),
                    in_flight=len(self.pieces.in_flight(address)),
                    piece_size=self.partial.manifest.piece_size,
                ):
                    stream.cancel(errors.TimedOut(f"peer {address} stalled"))
        except asyncio.CancelledError:
            stream.cancel(errors.Unreachable("download stopped"))
            raise
        finally:
            stream.drain()  # pieces written but not yet credited, however the batch ended
            self.streams.discard(stream)
            await self._maybe_record()
        job.result()

    def _credit(self, address: str, index: int, size: int) -> bool:
        return self.pieces.received(address, index, now=time.monotonic(), size=size)

    def _piece_written(self, address: str, index: int) -> None:
        """A verified piece is on disk (called on the loop by a stream thread)."""
        if not self._verified(address, index, self.partial.manifest.piece_length(index)):
            return
        # endgame: a stream elsewhere that only waits for pieces now held is cancelled
        for other in self.streams:
            waiting = tuple(other.pending)  # one C-level copy: safe while its thread runs
            if other.address != address and waiting and all(i in self.picker.held for i in waiting):
                other.cancel(Superseded("pieces arrived from another provider"))


def _read_outcome(job: asyncio.Future[None]) -> None:
    if not job.cancelled():
        job.exception()

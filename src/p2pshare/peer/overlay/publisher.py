"""Publishing changes of shared files, and hearing of other peers' changes.

- ``Publisher``: this peer's hub. It takes its own changes (from the share
  watcher), those its neighbours stream to it, and hands each new one (see
  ``ChangeDeduper``) to every local subscription whose query matches: the gRPC
  ``Subscribe`` streams of other peers, ``watch`` streams of the control API,
  ``subscribe --into`` folders.
- ``NeighbourFeeds``: one ``Subscribe`` stream to each overlay neighbour, opened and
  closed as neighbours come and go; what they stream is published here with one
  more hop, up to ``MAX_HOPS`` (so a change spreads as far as a search reaches,
  and every peer passes each change on once).
- ``tracker_changes``: the file events of the tracker's ``/v1/events`` stream.

Memory is bounded: the de-duplication memory, and each subscription's queue
(``QUEUE_SIZE``; a subscription that falls behind is ended, not buffered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType

import httpx

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.addresses import check_address
from p2pshare.core.manifest import check_content_id
from p2pshare.core.names import Query
from p2pshare.core.neighbours import Added, Change, Dropped
from p2pshare.core.paths import check_share_name
from p2pshare.core.pubsub import ADDED, REMOVED, ChangeDeduper, Kind, ShareChange
from p2pshare.peer.rpc.client import PeerClients
from p2pshare.peer.sync.wire import hit_version, version_to_pb

__all__ = [
    "MAX_HOPS",
    "NeighbourFeeds",
    "Publisher",
    "Subscription",
    "change_from_pb",
    "change_to_pb",
    "tracker_changes",
]

log = logging.getLogger(__name__)

MAX_HOPS = 4  # a change travels as far as a default search (TTL 4)
QUEUE_SIZE = 1_000
DEDUP_CAPACITY = 20_000
RETRY_MIN, RETRY_MAX = 0.5, 10.0

_KINDS: dict[int, Kind] = {pb.CHANGE_KIND_ADDED: ADDED, pb.CHANGE_KIND_REMOVED: REMOVED}
_PB_KINDS = {ADDED: pb.CHANGE_KIND_ADDED, REMOVED: pb.CHANGE_KIND_REMOVED}


def change_to_pb(change: ShareChange) -> pb.ShareChange:
    msg = pb.ShareChange(
        kind=_PB_KINDS[change.kind],
        content_id=change.content_id,
        name=change.name,
        size=change.size,
        provider=pb.PeerInfo(peer_id=change.peer_id, address=change.provider),
        hops=change.hops,
    )
    v = change.version
    if v is not None:
        msg.version.extend(version_to_pb(v))
        msg.mtime_ns, msg.origin, msg.deleted = v.mtime_ns, v.origin, v.deleted
    return msg


def change_from_pb(msg: pb.ShareChange, *, extra_hops: int = 1) -> ShareChange:
    """A change another peer sent, checked like a search hit; ``UsageError`` if bad."""
    try:
        kind = _KINDS[msg.kind]
        address = check_address(msg.provider.address)
    except (KeyError, ValueError) as exc:
        raise errors.UsageError(f"malformed change: {exc}") from exc
    version = hit_version(msg) if msg.version else None
    return ShareChange(
        kind=kind,
        content_id=check_content_id(msg.content_id),
        name=check_share_name(msg.name),
        size=msg.size,
        provider=address,
        peer_id=msg.provider.peer_id[:64],
        hops=msg.hops + extra_hops,
        version=version,
    )


class Subscription:
    """Changes matching one query, as they happen; an async iterator.

    It de-duplicates on its own (the same change may come from the tracker and from
    a neighbour). ``ended`` once it fell behind by ``QUEUE_SIZE`` changes or was closed.
    """

    def __init__(
        self,
        query: Query | None,
        *,
        exclude: str = "",
        by_version: bool = True,
        on_close: Callable[[Subscription], None] = lambda s: None,
    ) -> None:
        self.query = query
        self.exclude = exclude
        self.ended = False
        self._queue: asyncio.Queue[ShareChange | None] = asyncio.Queue(QUEUE_SIZE)
        self._dedup = ChangeDeduper(DEDUP_CAPACITY // 4, by_version=by_version)
        self._on_close = on_close

    def offer(self, change: ShareChange) -> None:
        if self.ended or change.provider == self.exclude:
            return
        if self.query is not None and not self.query.matches(change.name):
            return
        if not self._dedup.is_new(change):
            return
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            log.info("a subscription fell behind by %d changes: ending it", QUEUE_SIZE)
            self.close()

    def close(self) -> None:
        if self.ended:
            return
        self.ended = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        self._on_close(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ShareChange:
        change = await self._queue.get()
        if change is None:
            raise StopAsyncIteration
        return change

    async def get(self, timeout: float) -> ShareChange | None:
        """The next change, or ``None`` after ``timeout`` seconds without one;
        ``StopAsyncIteration`` once ended."""
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except TimeoutError:
            return None

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Publisher:
    """This peer's changes and those it relays, handed to local subscriptions."""

    def __init__(self) -> None:
        self._dedup = ChangeDeduper(DEDUP_CAPACITY)
        self._subs: set[Subscription] = set()
        self.published = 0
        self.relayed = 0

    def subscribe(
        self, query: Query | None, *, exclude: str = "", by_version: bool = True
    ) -> Subscription:
        """A subscription to changes matching ``query`` (``None``: all), skipping those
        of provider ``exclude`` (a peer is not told its own changes); ``by_version``:
        a new version of a name's content is a change (see ``ChangeDeduper``). Close it."""
        sub = Subscription(
            query, exclude=exclude, by_version=by_version, on_close=self._subs.discard
        )
        self._subs.add(sub)
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, change: ShareChange) -> bool:
        """Hand ``change`` to the subscriptions, unless it was seen already."""
        if change.hops > MAX_HOPS or not self._dedup.is_new(change):
            return False
        if change.hops == 0:
            self.published += 1
        else:
            self.relayed += 1
        for sub in list(self._subs):
            sub.offer(change)
        return True


class NeighbourFeeds:
    """A ``Subscribe`` stream to every neighbour, feeding a ``Publisher``."""

    def __init__(self, *, clients: PeerClients, publisher: Publisher) -> None:
        self._clients = clients
        self._publisher = publisher
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def neighbour_changed(self, change: Change) -> None:
        """An overlay listener (``Overlay.add_listener``)."""
        if isinstance(change, Added) and change.address not in self._tasks:
            self._tasks[change.address] = asyncio.create_task(
                self._follow(change.address), name=f"feed {change.address}"
            )
        elif isinstance(change, Dropped):
            task = self._tasks.pop(change.address, None)
            if task is not None:
                task.cancel()

    def following(self) -> list[str]:
        return sorted(self._tasks)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, address: str) -> None:
        delay = RETRY_MIN
        while True:
            try:
                async for msg in self._clients.subscribe(address):
                    delay = RETRY_MIN
                    try:
                        change = change_from_pb(msg)
                    except errors.UsageError as exc:
                        log.debug("dropping a change from %s: %s", address, exc)
                        continue
                    self._publisher.publish(change)
            except errors.P2PShareError as exc:
                log.debug("changes of %s: %s", address, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)


async def tracker_changes(
    http: httpx.AsyncClient,
    query: str,
    *,
    on_state: Callable[[str], None] = lambda s: None,
    on_open: Callable[[], None] = lambda: None,
) -> AsyncIterator[ShareChange]:
    """The file changes of the tracker's ``/v1/events?q=query``, reconnecting while it is
    down (``on_state`` hears ``ok`` or why not); malformed events are skipped.
    ``on_open`` is called at each connection once the tracker's first line is read:
    from then on no change is missed (the tracker subscribes before it sends it)."""
    delay = RETRY_MIN
    params = {"q": query} if query else {}
    while True:
        try:
            async with http.stream("GET", "/v1/events", params=params, timeout=None) as r:
                if r.status_code != 200:
                    raise errors.RemoteError(f"tracker answered {r.status_code} to /v1/events")
                on_state("ok")
                delay = RETRY_MIN
                data: list[str] = []
                opened = False
                async for line in r.aiter_lines():
                    if not opened:
                        opened = True
                        on_open()
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        change = _tracker_change("\n".join(data))
                        data = []
                        if change is not None:
                            yield change
        except (httpx.HTTPError, errors.P2PShareError) as exc:
            on_state(f"unreachable: {exc}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)


def _tracker_change(data: str) -> ShareChange | None:
    with contextlib.suppress(ValueError, KeyError, TypeError, errors.UsageError):
        doc = json.loads(data)
        if doc["event"] in (ADDED, REMOVED):
            return ShareChange(
                kind=doc["event"],
                content_id=check_content_id(str(doc["content_id"])),
                name=check_share_name(str(doc["name"])),
                size=int(doc["size"]),
                provider=check_address(str(doc["provider"])),
                peer_id=str(doc.get("peer_id", ""))[:64],
            )
    return None

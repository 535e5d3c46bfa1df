"""The tracker's index events: ``GET /v1/events?q=QUERY`` as server-sent events.

Events: ``peer_joined``, ``peer_left`` (a logout, a re-registration of the same
address, or an expired lease when it is purged), ``added`` and ``removed`` (a file
of a peer, with content id, name, size and the provider's address). With ``q``
only file events whose name matches are sent; without it, every event.

Where they come from: the registry's change feed (``Registry.feed_after``; see
``tracker.registry``), the one log of index changes that the search cache reads too.
Triggers write it whichever path changed the index (any REST route, the purge of
expired leases) and whichever worker process made the change: all workers share the
file, and a subscriber connected to any of them sees every event. Every tracker
process that has subscribers tails it (an indexed read every ``POLL_SECONDS``). A peer
whose address is being checked is announced once it answered (``peer_joined`` and
its files' ``added``), never before: the stream hands out only checked addresses.

Memory is bounded: each subscriber has a queue of ``QUEUE_SIZE`` events; one that
does not keep up is sent ``event: dropped`` and disconnected, never buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import StreamingResponse

from p2pshare.core.names import Query as ParsedQuery
from p2pshare.core.names import check_query
from p2pshare.tracker.registry import Registry

__all__ = ["EventHub", "IndexEvent", "install"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
QUEUE_SIZE = 1_000
KEEPALIVE_SECONDS = 15.0
BATCH = 1_000
EVENT_KINDS = frozenset({"peer_joined", "peer_left", "added", "removed"})


@dataclass(frozen=True, slots=True)
class IndexEvent:
    """One change of the tracker's index."""

    seq: int
    kind: str
    """``peer_joined``, ``peer_left``, ``added`` or ``removed``."""
    content_id: str
    name: str
    size: int
    peer_id: str
    address: str

    def to_sse(self) -> bytes:
        data: dict[str, object] = {"event": self.kind, "peer_id": self.peer_id}
        data["provider" if self.content_id else "address"] = self.address
        if self.content_id:
            data |= {"content_id": self.content_id, "name": self.name, "size": self.size}
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return f"id: {self.seq}\nevent: {self.kind}\ndata: {body}\n\n".encode()


class _Subscriber:
    def __init__(self, query: ParsedQuery | None) -> None:
        self.query = query
        self.queue: asyncio.Queue[IndexEvent | None] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = False

    def offer(self, event: IndexEvent) -> None:
        if self.dropped:
            return
        if self.query is not None and not (event.name and self.query.matches(event.name)):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped = True  # too slow: free its queue, end its stream
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)


class EventHub:
    """Tails the change feed of one registry for this process's subscribers."""

    def __init__(self, registry: Registry, *, poll: float = POLL_SECONDS) -> None:
        self._registry = registry
        self._poll = poll
        self._subscribers: set[_Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._last = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._last = self._registry.feed_end()
            self._task = asyncio.create_task(self._tail(), name="index events")

    async def _tail(self) -> None:
        while self._subscribers:
            try:
                rows = self._registry.feed_after(self._last, BATCH)
            except Exception as exc:  # noqa: BLE001 - a store's error: try again later
                log.warning("reading index events failed: %s", exc)
                rows = []
            for row in rows:
                self._last = row.seq
                if row.kind not in EVENT_KINDS:
                    continue
                event = IndexEvent(
                    row.seq, row.kind, row.content_id, row.name, row.size, row.peer_id, row.address
                )
                for sub in list(self._subscribers):
                    sub.offer(event)
            if len(rows) < BATCH:
                await asyncio.sleep(self._poll)

    async def subscribe(self, query: ParsedQuery | None) -> AsyncIterator[IndexEvent | None]:
        """Events from now on that match ``query`` (``None``: all); ``None`` once this
        subscriber was dropped for falling behind (then the iteration ends)."""
        sub = self._join(query)
        try:
            async for event in self._events(sub):
                yield event
        finally:
            self._subscribers.discard(sub)

    def _join(self, query: ParsedQuery | None) -> _Subscriber:
        sub = _Subscriber(query)
        self._subscribers.add(sub)
        self._start()
        return sub

    async def _events(self, sub: _Subscriber) -> AsyncIterator[IndexEvent | None]:
        try:
            while True:
                event = await sub.queue.get()
                yield event
                if event is None:
                    return
        finally:
            self._subscribers.discard(sub)

    async def stream(self, query: ParsedQuery | None) -> AsyncIterator[bytes]:
        """The SSE body: events, a comment every ``KEEPALIVE_SECONDS`` of silence.
        The subscriber joins before the first byte (the comment) goes out, so a client
        that has read it misses no later change: it may then search the index and
        follow the stream with nothing falling between the two (folder sync does)."""
        sub = self._join(query)
        events = self._events(sub).__aiter__()
        next_event: asyncio.Task[IndexEvent | None] | None = None
        try:
            yield b": p2pshare tracker events\n\n"
            while True:
                if next_event is None:
                    next_event = asyncio.ensure_future(events.__anext__())
                done, _ = await asyncio.wait({next_event}, timeout=KEEPALIVE_SECONDS)
                if not done:
                    yield b": keepalive\n\n"
                    continue
                try:
                    event = next_event.result()
                except StopAsyncIteration:
                    return
                next_event = None
                if event is None:
                    yield b'event: dropped\ndata: {"error":"too slow: events were dropped"}\n\n'
                    return
                yield event.to_sse()
        finally:
            if next_event is not None:
                next_event.cancel()
                with contextlib.suppress(BaseException):
                    await next_event
            await events.aclose()  # type: ignore[attr-defined]
            self._subscribers.discard(sub)


def install(app: FastAPI, registry: Registry) -> None:
    """Add ``GET /v1/events`` to the tracker's ``app`` for ``registry``'s feed."""
    hub = EventHub(registry)
    app.state.events = hub

    @app.get(
        "/v1/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events(
        q: Annotated[
            str | None,
            Query(description="Only file events whose name matches (words or a glob)."),
        ] = None,
    ) -> StreamingResponse:
        """Index events as server-sent events: ``peer_joined``, ``peer_left``, ``added``,
        ``removed`` (file events carry content_id, name, size, provider)."""
        query = check_query(q) if q else None
        return StreamingResponse(
            hub.stream(query),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

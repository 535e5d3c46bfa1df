"""The tracker's index events: ``GET /v1/events?q=QUERY`` as server-sent events.

Events: ``peer_joined``, ``peer_left`` (a logout, a re-registration of the same
address, or an expired lease when it is purged), ``added`` and ``removed`` (a file
of a peer, with content id, name, size and the provider's address). With ``q``
only file events whose name matches are sent; without it, every event.

Where they come from: SQLite triggers on the registry's ``peers`` and ``files``
tables append each change to a table ``index_events`` in the registry's own file,
and every tracker process that has subscribers tails that table (an indexed read
every ``POLL_SECONDS``). So events are complete whichever path changed the index
(any REST route, the purge of expired leases) and whichever worker process made the
change: all workers share the file, and a subscriber connected to any of them sees
every event. The triggers are installed when the first subscriber ever connects, so
a tracker nobody watches pays nothing; from then on each change of the index writes
one more row, and the table keeps only its last ``KEEP_EVENTS`` rows (a trigger
trims it).

Memory is bounded: each subscriber has a queue of ``QUEUE_SIZE`` events; one that
does not keep up is sent ``event: dropped`` and disconnected, never buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import StreamingResponse

from p2pshare.core.names import Query as ParsedQuery
from p2pshare.core.names import check_query
from p2pshare.errors import UsageError

__all__ = ["EventHub", "IndexEvent", "install"]

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
KEEP_EVENTS = 10_000
QUEUE_SIZE = 1_000
KEEPALIVE_SECONDS = 15.0
BATCH = 1_000

_TRIGGERS = f"""
CREATE TABLE IF NOT EXISTS index_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    content_id TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    peer_id TEXT NOT NULL,
    address TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS index_events_trim AFTER INSERT ON index_events BEGIN
    DELETE FROM index_events WHERE seq <= new.seq - {KEEP_EVENTS};
END;
CREATE TRIGGER IF NOT EXISTS index_events_peer_in AFTER INSERT ON peers BEGIN
    INSERT INTO index_events(kind, peer_id, address)
    VALUES ('peer_joined', new.peer_id, new.address);
END;
CREATE TRIGGER IF NOT EXISTS index_events_peer_out AFTER DELETE ON peers BEGIN
    INSERT INTO index_events(kind, peer_id, address)
    VALUES ('peer_left', old.peer_id, old.address);
END;
CREATE TRIGGER IF NOT EXISTS index_events_file_in AFTER INSERT ON files BEGIN
    INSERT INTO index_events(kind, content_id, name, size, peer_id, address)
    SELECT 'added', new.content_id, n.name, new.size, p.peer_id, p.address
    FROM peers p, names n WHERE p.id = new.peer AND n.id = new.name_id;
END;
CREATE TRIGGER IF NOT EXISTS index_events_file_out AFTER DELETE ON files BEGIN
    INSERT INTO index_events(kind, content_id, name, size, peer_id, address)
    SELECT 'removed', old.content_id, n.name, old.size, p.peer_id, p.address
    FROM peers p, names n WHERE p.id = old.peer AND n.id = old.name_id;
END;
"""


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
    """Tails ``index_events`` of one registry file for this process's subscribers."""

    def __init__(self, db: Path | str, *, poll: float = POLL_SECONDS) -> None:
        self._path = str(db)
        self._poll = poll
        self._db: sqlite3.Connection | None = None
        self._subscribers: set[_Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._last = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript("BEGIN IMMEDIATE;" + _TRIGGERS + "COMMIT;")
        return db

    async def _start(self) -> None:
        if self._db is None:
            self._db = await asyncio.to_thread(self._connect)
        if self._task is None or self._task.done():
            row = self._db.execute("SELECT coalesce(max(seq), 0) FROM index_events").fetchone()
            self._last = int(row[0])
            self._task = asyncio.create_task(self._tail(), name="index events")

    async def _tail(self) -> None:
        assert self._db is not None
        while self._subscribers:
            try:
                rows = self._db.execute(
                    "SELECT seq, kind, content_id, name, size, peer_id, address"
                    " FROM index_events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (self._last, BATCH),
                ).fetchall()
            except sqlite3.Error as exc:
                log.warning("reading index events failed: %s", exc)
                rows = []
            for row in rows:
                event = IndexEvent(*row)
                self._last = event.seq
                for sub in list(self._subscribers):
                    sub.offer(event)
            if len(rows) < BATCH:
                await asyncio.sleep(self._poll)

    async def subscribe(self, query: ParsedQuery | None) -> AsyncIterator[IndexEvent | None]:
        """Events from now on that match ``query`` (``None``: all); ``None`` once this
        subscriber was dropped for falling behind (then the iteration ends)."""
        sub = _Subscriber(query)
        self._subscribers.add(sub)
        try:
            await self._start()
            while True:
                event = await sub.queue.get()
                yield event
                if event is None:
                    return
        finally:
            self._subscribers.discard(sub)

    async def stream(self, query: ParsedQuery | None) -> AsyncIterator[bytes]:
        """The SSE body: events, a comment every ``KEEPALIVE_SECONDS`` of silence."""
        yield b": p2pshare tracker events\n\n"
        events = self.subscribe(query).__aiter__()
        next_event: asyncio.Task[IndexEvent | None] | None = None
        try:
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


def _db_path(registry: object) -> str | None:
    """The file of a SQLite registry (``None`` for any other kind)."""
    db = getattr(registry, "_db", None)
    if not isinstance(db, sqlite3.Connection):
        return None
    for _, name, path in db.execute("PRAGMA database_list"):
        if name == "main" and path:
            return str(path)
    return None


def install(app: FastAPI, registry: object) -> None:
    """Add ``GET /v1/events`` to the tracker's ``app`` for ``registry``'s file."""
    path = _db_path(registry)
    hub = EventHub(path) if path else None
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
        if hub is None:
            raise UsageError("this tracker's registry publishes no events")
        query = check_query(q) if q else None
        return StreamingResponse(
            hub.stream(query),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

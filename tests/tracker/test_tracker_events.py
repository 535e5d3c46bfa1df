"""The tracker's index events: every path that changes the index publishes, any
process on the registry file sees them, filters apply, slow subscribers are dropped."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pshare.core.names import parse_query
from p2pshare.tracker import events
from p2pshare.tracker.events import EventHub, IndexEvent
from p2pshare.tracker.models import FileEntry
from p2pshare.tracker.registry import SqliteRegistry
from tests.sqlite_raw import raw_db

NOW = 1_000_000.0


def entry(n: int, name: str) -> FileEntry:
    return FileEntry(content_id=hashlib.sha256(str(n).encode()).hexdigest(), name=name, size=n)


async def take(it: AsyncIterator[IndexEvent | None], n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        event = await asyncio.wait_for(anext(it), 5)
        assert event is not None
        out.append((event.kind, event.name or event.address))
    return out


async def tailing(hub: EventHub) -> None:
    """Once the subscriber is in: from then on every change reaches it."""
    for _ in range(1000):
        if hub.subscribers:
            return
        await asyncio.sleep(0)
    raise AssertionError("the subscription did not start")


@pytest.fixture
def registry(tmp_path: Path):
    reg = SqliteRegistry(tmp_path / "t.db", lease_seconds=60)
    yield reg
    reg.close()


async def test_join_patch_logout_and_expiry_each_publish(registry, tmp_path: Path) -> None:
    hub = EventHub(registry, poll=0.01)
    it = hub.subscribe(None)
    pending = asyncio.ensure_future(anext(it))
    await tailing(hub)
    reg = registry.register("10.0.0.1:1", [entry(1, "a.txt")], NOW)
    joined = await pending
    assert joined is not None and (joined.kind, joined.address) == ("peer_joined", "10.0.0.1:1")
    assert await take(it, 1) == [("added", "a.txt")]
    registry.patch_files(
        reg.peer_id, reg.token, [entry(2, "b.txt")], [entry(1, "a").content_id], NOW
    )
    assert sorted(await take(it, 2)) == [("added", "b.txt"), ("removed", "a.txt")]
    other = registry.register("10.0.0.2:1", [], NOW)
    assert await take(it, 1) == [("peer_joined", "10.0.0.2:1")]
    registry.remove(other.peer_id, other.token, NOW)
    assert await take(it, 1) == [("peer_left", "10.0.0.2:1")]
    registry.purge(NOW + 61)  # the lease of the first ran out
    assert await take(it, 2) == [("removed", "b.txt"), ("peer_left", "10.0.0.1:1")]
    await it.aclose()  # type: ignore[attr-defined]


async def test_another_process_on_the_same_file_sees_the_events(registry, tmp_path: Path) -> None:
    # a second registry connection stands for another worker process
    hub = EventHub(registry, poll=0.01)
    it = hub.subscribe(parse_query("song"))
    pending = asyncio.ensure_future(anext(it))
    await tailing(hub)
    worker2 = SqliteRegistry(tmp_path / "t.db", lease_seconds=60)
    try:
        worker2.register("10.0.0.3:1", [entry(3, "notes.txt"), entry(4, "a song.flac")], NOW)
        event = await asyncio.wait_for(pending, 5)
        assert event is not None and (event.kind, event.name) == ("added", "a song.flac")
        assert event.address == "10.0.0.3:1" and event.size == 4
    finally:
        worker2.close()
        await it.aclose()  # type: ignore[attr-defined]


async def test_a_slow_subscriber_is_dropped_not_buffered(
    registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "QUEUE_SIZE", 3)
    hub = EventHub(registry, poll=0.01)
    it = hub.subscribe(None)
    pending = asyncio.ensure_future(anext(it))
    await tailing(hub)
    registry.register("10.0.0.1:1", [entry(i, f"f{i}") for i in range(1, 10)], NOW)
    got = [await asyncio.wait_for(pending, 5)]
    await asyncio.sleep(0.2)  # it does not read: the queue overflows
    with pytest.raises(StopAsyncIteration):
        while True:
            got.append(await asyncio.wait_for(anext(it), 5))
    assert got[-1] is None and len(got) <= 4  # the end of its stream, not 10 events
    assert hub.subscribers == 0


def test_an_event_is_one_server_sent_event() -> None:
    e = IndexEvent(7, "added", "ab" * 32, "a.txt", 3, "p1", "10.0.0.1:1")
    body = e.to_sse().decode()
    assert body.startswith("id: 7\nevent: added\ndata: {") and body.endswith("}\n\n")
    assert '"provider":"10.0.0.1:1"' in body and '"content_id"' in body


async def test_a_peer_being_checked_is_announced_only_once_it_answered(registry) -> None:
    """The stream hands out addresses too: an unchecked one would make subscribers dial
    it (reflection, issue 14)."""
    hub = EventHub(registry, poll=0.01)
    it = hub.subscribe(None)
    pending = asyncio.ensure_future(anext(it))
    await tailing(hub)
    bad = registry.register("198.51.100.1:1", [entry(1, "bait.iso")], NOW, check=True)
    good = registry.register("10.0.0.1:1", [entry(2, "song.flac")], NOW, check=True)
    registry.settle(bad.peer_id, reachable=False, reason="closed", evict_holders=False, now=NOW)
    registry.settle(good.peer_id, reachable=True, reason="ok", evict_holders=False, now=NOW)
    first = await asyncio.wait_for(pending, 5)
    assert first is not None and (first.kind, first.address) == ("peer_joined", "10.0.0.1:1")
    assert await take(it, 1) == [("added", "song.flac")]
    registry.remove(bad.peer_id, bad.token, NOW)
    registry.remove(good.peer_id, good.token, NOW)
    assert await take(it, 2) == [("removed", "song.flac"), ("peer_left", "10.0.0.1:1")]
    await it.aclose()  # type: ignore[attr-defined]


async def test_the_search_cache_and_the_event_stream_read_one_feed(registry, tmp_path) -> None:
    """Issue 17: two change logs (``changes``, ``index_events``) were fed by triggers on
    the same table, and the event stream opened the registry's private connection."""

    hub = EventHub(registry, poll=0.01)
    it = hub.subscribe(None)
    pending = asyncio.ensure_future(anext(it))
    await tailing(hub)
    registry.register("10.0.0.1:1", [entry(1, "a.txt")], NOW)
    assert (await asyncio.wait_for(pending, 5)) is not None
    db = raw_db(tmp_path / "t.db")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert "feed" in tables and not {"changes", "index_events"} & tables
    await it.aclose()  # type: ignore[attr-defined]


async def test_a_stream_misses_nothing_after_its_first_line(registry) -> None:
    """The subscriber joins before the first byte goes out: a client that has read
    the first line, then searched the index, gets every change after that search."""
    hub = EventHub(registry, poll=0.01)
    body = hub.stream(None)
    assert (await anext(body)).startswith(b":")
    assert hub.subscribers == 1
    registry.register("10.0.0.1:1", [entry(1, "a.txt")], NOW)  # before the next read
    chunks = [await asyncio.wait_for(anext(body), 5) for _ in range(2)]
    assert b"event: peer_joined" in chunks[0] and b'"name":"a.txt"' in chunks[1]
    await body.aclose()  # type: ignore[attr-defined]
    assert hub.subscribers == 0

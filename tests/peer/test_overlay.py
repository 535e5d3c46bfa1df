"""The overlay adapter over real gRPC, several peers in one event loop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.neighbours import Added, Change
from p2pshare.peer.rpc.loopback import LoopPeer, link, start_peer


async def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def line(tmp_path: Path) -> AsyncIterator[list[LoopPeer]]:
    """Five peers p0 - p1 - p2 - p3 - p4; p4 shares ``far away.txt``, p2 ``middle.txt``."""
    (tmp_path / "p4" / "share").mkdir(parents=True)
    (tmp_path / "p4" / "share" / "far away.txt").write_text("four hops")
    (tmp_path / "p2" / "share").mkdir(parents=True)
    (tmp_path / "p2" / "share" / "middle.txt").write_text("two hops")
    peers = [await start_peer(tmp_path, f"p{i}", seed=i) for i in range(5)]
    for a, b in zip(peers, peers[1:], strict=False):
        link(a, b)
    yield peers
    for p in peers:
        await p.stop()


async def search(peer: LoopPeer, query: str, *, ttl: int, walkers: int = 0) -> list[pb.SearchHit]:
    return [
        hit
        async for hit in peer.overlay.search_overlay(
            query=query, ttl=ttl, walkers=walkers, limit=10, timeout=3.0
        )
    ]


async def test_hits_stream_back_along_the_reverse_path_with_their_hop_count(
    line: list[LoopPeer],
) -> None:
    hits = await search(line[0], "txt", ttl=4)
    found = sorted((h.name, h.provider.address, h.hops) for h in hits)
    assert found == [
        ("far away.txt", line[4].address, 4),
        ("middle.txt", line[2].address, 2),
    ]


async def test_a_query_goes_no_further_than_its_ttl(line: list[LoopPeer]) -> None:
    assert [h.name for h in await search(line[0], "txt", ttl=3)] == ["middle.txt"]


async def test_a_query_in_a_cycle_is_answered_once_by_each_peer(line: list[LoopPeer]) -> None:
    link(line[4], line[0])  # now a ring: every query reaches p2 and p4 twice
    hits = await search(line[0], "txt", ttl=4)
    assert sorted(h.name for h in hits) == ["far away.txt", "middle.txt"]
    assert sum(p.overlay.queries_relayed for p in line[1:]) > 4  # some came twice


async def test_a_content_id_lookup_finds_exactly_its_providers(line: list[LoopPeer]) -> None:
    content_id = line[4].share.files()[0].content_id
    hits = [
        h
        async for h in line[0].overlay.search_overlay(
            content_id=content_id, ttl=4, walkers=0, limit=1, timeout=3.0
        )
    ]
    assert [(h.content_id, h.provider.address) for h in hits] == [(content_id, line[4].address)]


async def test_random_walks_on_a_line_walk_to_the_end(line: list[LoopPeer]) -> None:
    hits = await search(line[0], "far", ttl=4, walkers=1)
    assert [(h.name, h.hops) for h in hits] == [("far away.txt", 4)]
    assert line[0].overlay.messages_sent == 1
    assert sum(p.overlay.messages_sent for p in line) == 4  # one walker, four hops


async def test_a_neighbour_that_stops_answering_queries_is_dropped(
    line: list[LoopPeer],
) -> None:
    await line[1].stop()
    for _ in range(3):  # max_failures
        assert await search(line[0], "txt", ttl=4) == []
    assert line[1].address not in line[0].overlay.neighbours()


async def test_a_busy_peer_answers_from_its_share_without_forwarding(
    line: list[LoopPeer],
) -> None:
    line[2].overlay._max_relays = 0
    hits = await search(line[0], "txt", ttl=4)
    assert [h.name for h in hits] == ["middle.txt"]


async def test_a_malformed_query_is_refused_and_not_passed_on(line: list[LoopPeer]) -> None:
    hits = await search(line[0], "   ", ttl=4)  # p1 refuses it: answers done, sends nothing
    assert hits == []
    assert line[0].overlay.messages_sent == 1
    assert sum(p.overlay.messages_sent for p in line[1:]) == 0


@pytest.fixture
async def hole() -> AsyncIterator[tuple[grpc.aio.Server, str, list[pb.OverlayMessage]]]:
    """A gRPC server that takes Overlay streams, records what comes and answers nothing:
    a neighbour that hangs on to every query."""
    received: list[pb.OverlayMessage] = []

    async def overlay(batches: AsyncIterator[pb.OverlayBatch], context: object) -> None:
        async for batch in batches:
            received.extend(batch.messages)

    handler = grpc.method_handlers_generic_handler(
        "p2pshare.v1.Peer",
        {
            "Overlay": grpc.stream_stream_rpc_method_handler(
                overlay,
                request_deserializer=pb.OverlayBatch.FromString,
                response_serializer=pb.OverlayBatch.SerializeToString,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield server, f"127.0.0.1:{port}", received
    await server.stop(None)


def queries_and_cancels(
    received: list[pb.OverlayMessage],
) -> tuple[list[pb.OverlayQuery], list[int]]:
    queries = [m.query for m in received if m.HasField("query")]
    return queries, [m.cancel for m in received if m.WhichOneof("kind") == "cancel"]


async def timed_search(
    peer: LoopPeer, query: str, *, timeout: float, stop_after: int = 0
) -> tuple[list[tuple[str, float]], float]:
    """The hits' names with when each came, and when the search ended (seconds)."""
    start = time.monotonic()
    hits = []
    async for hit in peer.overlay.search_overlay(
        query=query, ttl=4, walkers=0, limit=10, timeout=timeout
    ):
        hits.append((hit.name, time.monotonic() - start))
        if len(hits) == stop_after:
            break
    return hits, time.monotonic() - start


async def test_hits_come_as_found_and_a_query_ends_at_its_deadline_when_a_peer_hangs(
    line: list[LoopPeer], hole: tuple[grpc.aio.Server, str, list[pb.OverlayMessage]]
) -> None:
    _, address, received = hole
    line[2].overlay.table.heard_from(address, time.monotonic())  # p2's third neighbour
    hits, took = await timed_search(line[0], "txt", timeout=1.5)
    assert sorted(name for name, _ in hits) == ["far away.txt", "middle.txt"]
    assert max(at for _, at in hits) < 1.0  # long before the hanging peer's deadline
    assert 1.2 < took < 3.0  # the deadline ended it: the hanging peer never said done
    await eventually(lambda: bool(queries_and_cancels(received)[1]), 2, "a cancel")
    queries, cancels = queries_and_cancels(received)
    assert [q.ttl for q in queries] == [2]
    assert 0 < queries[0].timeout_ms < 1500  # each hop passes on less time than it has
    assert cancels == [queries[0].tag]  # p2 gave up on it at its own deadline


async def test_a_neighbour_killed_mid_query_counts_as_done(
    line: list[LoopPeer], hole: tuple[grpc.aio.Server, str, list[pb.OverlayMessage]]
) -> None:
    server, address, received = hole
    line[2].overlay.table.heard_from(address, time.monotonic())
    start = time.monotonic()
    hits = []
    async for hit in line[0].overlay.search_overlay(
        query="txt", ttl=4, walkers=0, limit=10, timeout=20
    ):
        hits.append(hit.name)
        if len(hits) == 2:  # both found; only the hanging peer keeps the query open
            await eventually(lambda: bool(received), 2, "the query to reach the hanging peer")
            await server.stop(None)
    assert sorted(hits) == ["far away.txt", "middle.txt"]
    assert time.monotonic() - start < 10  # far from the 20 s deadline
    assert len(line[2].overlay.paths) == 0 and len(line[0].overlay.paths) == 0


async def test_an_asker_that_stops_reading_cancels_the_query_down_the_path(
    line: list[LoopPeer], hole: tuple[grpc.aio.Server, str, list[pb.OverlayMessage]]
) -> None:
    _, address, received = hole
    line[2].overlay.table.heard_from(address, time.monotonic())
    await timed_search(line[0], "middle", timeout=20, stop_after=1)
    await eventually(lambda: bool(queries_and_cancels(received)[1]), 5, "the cancel")
    queries, cancels = queries_and_cancels(received)
    assert cancels == [queries[0].tag]
    await eventually(lambda: all(len(p.overlay.paths) == 0 for p in line), 5, "relays closed")


async def test_peers_greet_their_candidates_become_neighbours_and_save_them(
    tmp_path: Path,
) -> None:
    a = await start_peer(tmp_path, "a", maintain=True)
    b = await start_peer(tmp_path, "b", maintain=True)
    changes: list[Change] = []
    a.overlay.add_listener(changes.append)
    try:
        b.overlay.offer([a.address])
        await eventually(
            lambda: a.address in b.overlay.neighbours() and b.address in a.overlay.neighbours(),
            5,
            "a and b to become neighbours",
        )
        saved = json.loads((tmp_path / "b" / "data" / "neighbours.json").read_text())
        assert saved == {"neighbours": [a.address]}
        assert changes == [Added(b.address)]
    finally:
        await b.stop()
    again = await start_peer(tmp_path, "b", maintain=True)  # a new port, the saved list
    try:
        await eventually(
            lambda: a.address in again.overlay.neighbours(), 5, "b to rejoin through a"
        )
    finally:
        await again.stop()
        await a.stop()

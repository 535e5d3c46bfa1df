"""What one overlay message costs in CPU: a gRPC call against a message on an open stream.

Everything runs in this one process (one event loop, gRPC on 127.0.0.1), so the
CPU time (``time.process_time``: every thread, gRPC's poller included) is the
client's and the server's together:

- a ``Search`` call of a peer's own share that finds nothing: what each message
  of a flood cost when every query and hop was a call;

each one at a time and 50 at once;
- an overlay query with TTL 1 that finds nothing, on an ``Overlay`` stream
  already open between two peers (the query, its reply, and the asker's and the
  relay's bookkeeping);
- a whole flood with TTL 4 among 100 peers of degree 8 (``bench/overlay.py``'s
  graph), per query and per message sent.

    .venv/bin/python bench/overlay_cost.py [--calls 3000] [--floods 30]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from p2pshare.peer.rpc.loopback import LoopPeer, link, start_peer

sys.path.insert(0, str(Path(__file__).parent))
from overlay import random_graph  # noqa: E402  (bench/ is no package)


async def cpu_per(n: int, batch: int, one: Callable[[], Awaitable[object]]) -> float:
    """CPU microseconds per ``one()``, ``batch`` at a time, after a warm-up."""
    for _ in range(100):
        await one()
    start = time.process_time()
    for _ in range(n // batch):
        await asyncio.gather(*(one() for _ in range(batch)))
    return (time.process_time() - start) / (n // batch * batch) * 1e6


async def pair(root: Path, calls: int) -> None:
    a, b = await start_peer(root, "a"), await start_peer(root, "b")
    link(a, b)
    try:

        async def call() -> None:
            await a.clients.search_share_of(b.address, "nothing")

        async def duplicate() -> None:
            # TTL 1: b answers from its share (nothing) and sends it no further
            async for _ in a.overlay.search_overlay(
                query="nothing", ttl=1, walkers=0, limit=10, timeout=3.0
            ):
                pass

        for batch in (1, 50):
            print(f"Search call, {batch} at a time: {await cpu_per(calls, batch, call):.0f} µs CPU")
            print(
                f"query and reply on an open Overlay stream, {batch} at a time:"
                f" {await cpu_per(calls, batch, duplicate):.0f} µs CPU"
            )
    finally:
        await a.stop()
        await b.stop()


async def flood(root: Path, floods: int) -> None:
    peers: list[LoopPeer] = [
        await start_peer(root, f"p{i}", capacity=16, seed=i) for i in range(100)
    ]
    for x, y in random_graph(100, 8, random.Random(1)):
        link(peers[x], peers[y])
    rng = random.Random(2)

    async def one() -> None:
        async for _ in peers[rng.randrange(100)].overlay.search_overlay(
            query="nothing", ttl=4, walkers=0, limit=10, timeout=3.0
        ):
            pass

    try:
        for _ in range(5):  # every peer dials its links
            await one()
        sent = sum(p.overlay.messages_sent for p in peers)
        start = time.process_time()
        for _ in range(floods):
            await one()
        cpu = time.process_time() - start
        sent = sum(p.overlay.messages_sent for p in peers) - sent
        print(
            f"flood TTL 4, 100 peers of degree 8: {cpu / floods * 1000:.0f} ms CPU per query,"
            f" {sent / floods:.0f} queries sent, {cpu / sent * 1e6:.0f} µs CPU per query sent"
        )
    finally:
        for p in peers:
            await p.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--floods", type=int, default=30)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="p2pshare-overlay-cost-"))
    asyncio.run(pair(root, args.calls))
    asyncio.run(flood(root, args.floods))


if __name__ == "__main__":
    main()

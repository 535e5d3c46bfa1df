"""Many overlay peers in one process, each with its own share and gRPC server on
127.0.0.1: the overlay tests and the overlay benchmark (``bench/overlay.py``).

Each peer is the real adapter stack (``Share``, ``Overlay``, ``PeerService``,
``start_server``) without a tracker, downloads or control API. ``link`` joins two
of them directly (both tables take the other, as a ``Hello`` would), so a test or
benchmark can build exactly the graph it wants.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from p2pshare._proto import peer_pb2 as pb
from p2pshare.peer.overlay.network import Overlay
from p2pshare.peer.rpc.auth import GrpcAuth, ServerAuth
from p2pshare.peer.rpc.client import PeerClients
from p2pshare.peer.rpc.server import PeerService, start_server
from p2pshare.peer.sharing.hash_cache import HashCache
from p2pshare.peer.sharing.share import Share

PIECE_SIZE = 1 << 16


@dataclass
class LoopPeer:
    name: str
    address: str
    share: Share
    overlay: Overlay
    service: PeerService
    server: grpc.aio.Server
    clients: PeerClients
    cache: HashCache

    async def stop(self) -> None:
        await self.overlay.stop()
        await self.server.stop(grace=0.2)
        await self.clients.close()
        self.cache.close()


async def start_peer(
    root: Path,
    name: str,
    *,
    capacity: int = 8,
    seed: int = 0,
    maintain: bool = False,
    tick: float = 0.2,
    network_key: str | None = None,
) -> LoopPeer:
    """A peer sharing ``root/name/share`` (scanned once); its overlay keeps its
    neighbours alive by itself only if ``maintain``; with ``network_key``, of that
    private network."""
    share_dir, data_dir = root / name / "share", root / name / "data"
    share_dir.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    cache = HashCache(data_dir / "hashes.db")
    share = Share(share_dir, cache=cache, piece_size=PIECE_SIZE, workers=1)
    share.scan()
    me = pb.PeerInfo(peer_id=name)
    clients = PeerClients(auth=GrpcAuth(network_key) if network_key else None)
    overlay = Overlay(
        clients=clients,
        share=share,
        me=lambda: me,
        saved=data_dir / "neighbours.json",
        capacity=capacity,
        rng=random.Random(seed),
        tick=tick,
    )
    service = PeerService(share=share, me=lambda: me, overlay=overlay, max_uploads=8)
    server, port = await start_server(
        service,
        "127.0.0.1",
        0,
        interceptors=[ServerAuth(network_key, names=lambda: (me.address,))] if network_key else (),
    )
    me.address = f"127.0.0.1:{port}"
    clients.set_me(me)
    if maintain:
        overlay.start()
    else:
        overlay.table.set_me(me.address)
    return LoopPeer(name, me.address, share, overlay, service, server, clients, cache)


def link(a: LoopPeer, b: LoopPeer) -> None:
    """Make ``a`` and ``b`` neighbours of each other."""
    now = time.monotonic()
    a.overlay.table.heard_from(b.address, now, peer_id=b.name)
    b.overlay.table.heard_from(a.address, now, peer_id=a.name)

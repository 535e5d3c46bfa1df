"""A private network over real gRPC, in one event loop: keyed peers talk, nobody else
gets an answer from any method."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from p2pshare import errors
from p2pshare.core.auth import GRPC_PURPOSE, HEADER, NONCE_BYTES, CallSigner, grpc_call
from p2pshare.peer.rpc.auth import GrpcAuth
from p2pshare.peer.rpc.client import PeerClients
from p2pshare.peer.rpc.loopback import LoopPeer, link, start_peer
from p2pshare.peer.rpc.wire import decode_piece
from tests.grpc_probe import METHODS, statuses

KEY = "p2pk-" + "a" * 43
WRONG = "p2pk-" + "b" * 43
DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[LoopPeer, LoopPeer]]:
    (tmp_path / "b" / "share").mkdir(parents=True)
    (tmp_path / "b" / "share" / "secret plans.txt").write_bytes(b"x" * 200_000)
    a = await start_peer(tmp_path, "a", network_key=KEY)
    b = await start_peer(tmp_path, "b", network_key=KEY)
    link(a, b)
    yield a, b
    await a.stop()
    await b.stop()


async def test_keyed_peers_use_every_call(pair: tuple[LoopPeer, LoopPeer]) -> None:
    a, b = pair
    assert (await a.clients.hello(b.address)).accepted
    hits = await a.clients.search_share_of(b.address, "secret")
    assert [h.name for h in hits] == ["secret plans.txt"]
    content_id = hits[0].content_id
    manifest = await a.clients.manifest(b.address, content_id)
    assert await a.clients.have(b.address, content_id) is None
    call = a.clients.pieces_blocking(b.address, content_id, [0], timeout=5)
    pieces = await asyncio.to_thread(lambda: [decode_piece(raw) for raw in call])
    assert [(i, len(data)) for i, data in pieces] == [(0, manifest.piece_size)]
    relayed = [
        h
        async for h in a.overlay.search_overlay(
            query="plans", ttl=2, walkers=0, limit=5, timeout=2.0
        )
    ]
    assert [h.name for h in relayed] == ["secret plans.txt"]


@pytest.mark.parametrize("key", [None, WRONG], ids=["no key", "wrong key"])
async def test_a_client_without_the_key_learns_nothing(
    pair: tuple[LoopPeer, LoopPeer], key: str | None
) -> None:
    _, b = pair
    outsider = PeerClients(auth=GrpcAuth(key) if key else None)
    try:
        with pytest.raises(errors.PermissionDenied):
            await outsider.hello(b.address)
        with pytest.raises(errors.PermissionDenied):
            await outsider.search_share_of(b.address, "secret")
    finally:
        await outsider.close()


async def test_every_method_refuses_strangers_stale_and_replayed_calls(
    pair: tuple[LoopPeer, LoopPeer],
) -> None:
    _, b = pair
    good, wrong = GrpcAuth(KEY), GrpcAuth(WRONG)
    assert await statuses(b.address, lambda m: ()) == dict.fromkeys(METHODS, DENIED)
    assert await statuses(b.address, lambda m: wrong.metadata(m, b.address)) == dict.fromkeys(
        METHODS, DENIED
    )
    stale = CallSigner(KEY, GRPC_PURPOSE)

    def old(method: str) -> tuple[tuple[str, str], ...]:
        call = grpc_call(method, b.address)
        return ((HEADER, stale.sign(call, now=time.time() - 120, nonce=os.urandom(NONCE_BYTES))),)

    assert await statuses(b.address, old) == dict.fromkeys(METHODS, DENIED)
    captured = {m: good.metadata(m, b.address) for m in METHODS}
    first = await statuses(b.address, captured.__getitem__, timeout=0.5)
    assert DENIED not in first.values()  # the key opens every method...
    replayed = await statuses(b.address, captured.__getitem__)
    assert replayed == dict.fromkeys(METHODS, DENIED)  # ...once per proof


async def test_a_proof_for_one_method_opens_no_other(pair: tuple[LoopPeer, LoopPeer]) -> None:
    _, b = pair
    good = GrpcAuth(KEY)
    hello = good.metadata(METHODS[0], b.address)
    got = await statuses(b.address, lambda m: hello)
    assert all(code == DENIED for m, code in got.items() if m != METHODS[0])


async def test_a_proof_captured_on_its_way_to_one_peer_opens_no_other_peer(
    pair: tuple[LoopPeer, LoopPeer],
) -> None:
    """Issue 14: a proof named only the method, so a captured call was accepted by
    any peer of the network; it names the receiver now."""
    a, b = pair
    good = GrpcAuth(KEY)
    meant_for_a = {m: good.metadata(m, a.address) for m in METHODS}
    assert await statuses(b.address, meant_for_a.__getitem__) == dict.fromkeys(METHODS, DENIED)
    first = await statuses(a.address, meant_for_a.__getitem__, timeout=0.5)
    assert DENIED not in first.values()  # unused at b, it still opens a

"""A peer's limits per remote peer: one remote over its share of uploads or
subscriptions gets RESOURCE_EXHAUSTED while another is still served; a request over
the message size limit is refused and the peer keeps serving (real processes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from p2pshare._proto import peer_pb2 as pb
from p2pshare._proto import peer_pb2_grpc as pb_grpc
from p2pshare.localnet import LocalNetwork, PeerProc, wait_for
from p2pshare.peer.rpc.server import MAX_OVERLAY_STREAMS_PER_PEER
from p2pshare.peer.rpc.wire import MAX_REQUEST, decode_piece
from tests.integration.helpers import api, write_random

pytestmark = pytest.mark.integration
PIECE = 64 << 10


def remote(peer: PeerProc) -> grpc.Channel:
    """A channel on a connection of its own: on loopback, a remote peer of its own."""
    return grpc.insecure_channel(peer.address, options=[("grpc.use_local_subchannel_pool", 1)])


def start_seed(net: LocalNetwork, tmp_path: Path, settings: str) -> tuple[PeerProc, str, bytes]:
    data = write_random(tmp_path / "seed" / "share" / "big.bin", 32 * PIECE).read_bytes()
    config = tmp_path / "seed.toml"
    config.write_text(f"[peer]\npiece_size = {PIECE}\n{settings}")
    seed = net.start_peer("seed", "--config", str(config))
    content_id = api(seed, "/v1/files")["files"][0]["content_id"]
    return seed, content_id, data


def test_one_remote_over_its_uploads_is_refused_while_another_downloads(net, tmp_path):
    # 1 MiB/s: a stream of all 32 pieces (2 MiB) stays open for a second or more
    seed, content_id, data = start_seed(
        net, tmp_path, f"max_uploads_per_peer = 2\nmax_upload_rate = {1 << 20}\n"
    )
    everything = pb.PiecesRequest(content_id=content_id, indexes=list(range(32)))
    with remote(seed) as greedy_channel, remote(seed) as other_channel:
        greedy, other = pb_grpc.PeerStub(greedy_channel), pb_grpc.PeerStub(other_channel)
        streams = [greedy.GetPieces(everything, timeout=30) for _ in range(2)]
        for stream in streams:  # both are being served: each holds an upload
            next(stream)
        with pytest.raises(grpc.RpcError) as refused:
            next(greedy.GetPieces(everything, timeout=30))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "by this peer" in refused.value.details()
        request = pb.PiecesRequest(content_id=content_id, indexes=[0, 1, 2])
        got = [decode_piece(p.SerializeToString()) for p in other.GetPieces(request, timeout=30)]
        assert [(i, bytes(d)) for i, d in got] == [
            (i, data[i * PIECE : (i + 1) * PIECE]) for i in range(3)
        ]
        for stream in streams:
            stream.cancel()
        # its uploads given back, the greedy remote is served again
        wait_for(lambda: _served(greedy, content_id), 10, "the cancelled uploads to end")
    assert "Traceback" not in seed.output()


def _served(stub: pb_grpc.PeerStub, content_id: str) -> bool:
    try:
        list(stub.GetPieces(pb.PiecesRequest(content_id=content_id, indexes=[5]), timeout=10))
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        return False
    return True


def test_one_remote_over_its_subscriptions_is_refused_while_another_subscribes(net, tmp_path):
    seed, _, _ = start_seed(net, tmp_path, "max_subscribers_per_peer = 1\n")
    with remote(seed) as greedy_channel, remote(seed) as other_channel:
        greedy, other = pb_grpc.PeerStub(greedy_channel), pb_grpc.PeerStub(other_channel)
        first = greedy.Subscribe(pb.SubscribeRequest(query=""), timeout=30)
        second = greedy.Subscribe(pb.SubscribeRequest(query=""), timeout=30)
        # whichever reached the peer second is refused at once
        refused = _first_to_end([first, second])
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "subscribers" in refused.details()
        watching = other.Subscribe(pb.SubscribeRequest(query="late"), timeout=30)
        write_random(seed.share / "late.bin", 1000)
        change = next(watching)
        assert change.name == "late.bin" and change.kind == pb.CHANGE_KIND_ADDED
        for call in (first, second, watching):
            call.cancel()
    assert "Traceback" not in seed.output()


def test_one_remote_over_its_overlay_streams_is_refused_while_the_overlay_works(net, tmp_path):
    seed, _, _ = start_seed(net, tmp_path, "")
    hold = threading.Event()

    def hello_then_hold() -> Iterator[pb.OverlayBatch]:
        hello = pb.OverlayBatch()
        hello.messages.add().hello.address = "127.0.0.1:9"
        yield hello
        hold.wait(30)  # keeps the stream open until the test is done with it

    with remote(seed) as channel:  # one connection: one remote
        stub = pb_grpc.PeerStub(channel)
        streams = [
            stub.Overlay(hello_then_hold(), timeout=30)
            for _ in range(MAX_OVERLAY_STREAMS_PER_PEER + 1)
        ]
        refused = _first_to_end(streams)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "overlay streams" in refused.details()
        hold.set()
        for call in streams:
            call.cancel()
    # a real neighbour still gets its stream: a search across it finds the seed's file
    other = net.start_peer("other", "--seed", seed.address)
    wait_for(lambda: seed.address in api(other, "/v1/status")["neighbours"], 10, "the neighbours")
    hits = api(other, "/v1/search", q="big", source="overlay")["hits"]
    assert [h["name"] for h in hits] == ["big.bin"]
    assert "Traceback" not in seed.output()


def test_one_remote_over_its_call_rate_is_refused_while_another_is_answered(net, tmp_path):
    seed, content_id, _ = start_seed(net, tmp_path, "max_calls_per_peer = 5\n")
    request = pb.ManifestRequest(content_id=content_id)
    with remote(seed) as greedy_channel, remote(seed) as other_channel:
        greedy, other = pb_grpc.PeerStub(greedy_channel), pb_grpc.PeerStub(other_channel)
        codes = []
        for _ in range(40):  # a burst of 10 is allowed, then 5 per second
            try:
                greedy.GetManifest(request, timeout=5)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())  # type: ignore[attr-defined]
                assert "too many calls" in exc.details()  # type: ignore[attr-defined]
        assert codes.count(grpc.StatusCode.OK) >= 10
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 20
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        # another remote is answered meanwhile, and so is the greedy one once it slows
        assert other.GetManifest(request, timeout=5).content_id == content_id
        wait_for(lambda: _answers(greedy, request), 5, "the greedy remote to be answered again")
    assert "Traceback" not in seed.output()


def _answers(stub: pb_grpc.PeerStub, request: pb.ManifestRequest) -> bool:
    try:
        stub.GetManifest(request, timeout=5)
    except grpc.RpcError:
        return False
    return True


def _first_to_end(calls: list[grpc.Future]) -> grpc.RpcError:  # type: ignore[type-arg]
    """The one call of ``calls`` that ended (a finished streaming call is its error)."""
    wait_for(lambda: any(c.done() for c in calls), 10, "one call to be refused")
    [ended] = [c for c in calls if c.done()]
    return ended  # type: ignore[return-value]


def test_a_request_over_the_message_size_limit_is_refused_and_the_peer_serves_on(net, tmp_path):
    seed, content_id, _ = start_seed(net, tmp_path, "")
    with remote(seed) as channel:
        stub = pb_grpc.PeerStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Search(pb.SearchRequest(query="x" * (MAX_REQUEST + 1)), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        manifest = stub.GetManifest(pb.ManifestRequest(content_id=content_id), timeout=10)
        assert manifest.content_id == content_id
    assert "Traceback" not in seed.output()

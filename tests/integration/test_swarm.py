"""Partial sharing: a peer still downloading serves the pieces it has verified."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import httpx
import pytest

from p2pshare._proto import peer_pb2 as pb
from p2pshare._proto import peer_pb2_grpc as pb_grpc
from p2pshare.localnet import LocalNetwork, wait_for
from tests.integration.helpers import api, sha256, write_random

pytestmark = pytest.mark.integration
PIECE = 64 << 10


def test_a_file_from_one_slow_seeder_spreads_through_all_its_downloaders(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    size = 6 << 20
    original = write_random(tmp_path / "seed" / "share" / "release.iso", size)
    config = tmp_path / "seed.toml"
    config.write_text(f"[peer]\npiece_size = {PIECE}\nmax_upload_rate = {2 << 20}\n")
    seed = net.start_peer("seed", "--config", str(config), tracker=tracker.url)
    leeches = [net.start_peer(f"leech{i}", tracker=tracker.url) for i in range(3)]
    content_id = api(seed, "/v1/files")["files"][0]["content_id"]

    for leech in leeches:
        httpx.post(leech.api + "/v1/downloads", json={"content_id": content_id}).raise_for_status()

    def all_done() -> bool:
        views = [api(leech, f"/v1/downloads/{content_id}") for leech in leeches]
        assert not [v for v in views if v["state"] == "failed"]
        return all(v["state"] == "complete" for v in views)

    wait_for(all_done, 60, "three downloads fed by one slow seeder")
    for leech in leeches:
        assert sha256(leech.share / "release.iso") == sha256(original)
    pieces = size // PIECE
    served_by_leeches = [api(leech, "/v1/status")["pieces_served"] for leech in leeches]
    # the downloaders traded pieces among themselves, sparing the seeder
    assert sum(1 for n in served_by_leeches if n > 0) >= 2
    assert api(seed, "/v1/status")["pieces_served"] < 3 * pieces


def test_a_peer_still_downloading_refuses_pieces_it_does_not_hold(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    write_random(tmp_path / "seed" / "share" / "big.bin", 4 << 20)
    config = tmp_path / "seed.toml"
    config.write_text(f"[peer]\npiece_size = {PIECE}\nmax_upload_rate = {512 << 10}\n")
    seed = net.start_peer("seed", "--config", str(config), tracker=tracker.url)
    leech = net.start_peer("leech", tracker=tracker.url)
    content_id = api(seed, "/v1/files")["files"][0]["content_id"]
    httpx.post(leech.api + "/v1/downloads", json={"content_id": content_id}).raise_for_status()
    wait_for(
        lambda: api(leech, f"/v1/downloads/{content_id}")["pieces_done"] >= 2, 30, "two pieces"
    )
    with grpc.insecure_channel(leech.address) as channel:
        stub = pb_grpc.PeerStub(channel)
        have = stub.GetHave(pb.HaveRequest(content_id=content_id), timeout=5)
        assert not have.complete and have.piece_count == (4 << 20) // PIECE
        held = [i for i in range(have.piece_count) if have.bitfield[i // 8] & (0x80 >> (i % 8))]
        missing = next(i for i in range(have.piece_count) if i not in held)
        assert stub.GetManifest(pb.ManifestRequest(content_id=content_id)).content_id == content_id
        got = list(stub.GetPieces(pb.PiecesRequest(content_id=content_id, indexes=[held[0]])))
        assert len(got) == 1 and len(got[0].data) == PIECE
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.GetPieces(pb.PiecesRequest(content_id=content_id, indexes=[missing])))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_super_seeding_seeder_sends_about_one_copy_and_nothing_is_fetched_twice(
    net: LocalNetwork, tmp_path: Path
) -> None:
    """Availability pushed on Exchange streams and super-seeding (issue 13): the slow
    seeder offers each downloader distinct pieces, the downloaders trade the rest. It
    sent 2-3 copies when downloaders polled have-maps and fetched whatever it had.
    The pieces travel as blocks on the Exchange streams, as they do between machines
    (``swarm_blocks`` auto leaves out providers on this one)."""
    tracker = net.start_tracker()
    size = 6 << 20
    original = write_random(tmp_path / "seed" / "share" / "release.iso", size)
    config = tmp_path / "seed.toml"
    config.write_text(
        f"[peer]\npiece_size = {PIECE}\nmax_upload_rate = {2 << 20}\n"
        'super_seed = "on"\n'  # auto leaves out downloaders on this machine
    )
    seed = net.start_peer("seed", "--config", str(config), tracker=tracker.url)
    leech_config = tmp_path / "leech.toml"
    leech_config.write_text('[peer]\nswarm_blocks = "on"\n')
    leeches = [
        net.start_peer(f"leech{i}", "--config", str(leech_config), tracker=tracker.url)
        for i in range(4)
    ]
    content_id = api(seed, "/v1/files")["files"][0]["content_id"]

    for leech in leeches:
        httpx.post(leech.api + "/v1/downloads", json={"content_id": content_id}).raise_for_status()

    def all_done() -> bool:
        views = [api(leech, f"/v1/downloads/{content_id}") for leech in leeches]
        assert not [v for v in views if v["state"] == "failed"]
        return all(v["state"] == "complete" for v in views)

    wait_for(all_done, 60, "four downloads fed by one slow seeder")
    for leech in leeches:
        assert sha256(leech.share / "release.iso") == sha256(original)
    from_seed = api(seed, "/v1/status")["bytes_served"]
    from_leeches = sum(api(leech, "/v1/status")["bytes_served"] for leech in leeches)
    assert from_seed <= 1.25 * size, from_seed / size
    # blocks, not pieces, are what the endgame duplicates
    assert from_seed + from_leeches <= 1.1 * len(leeches) * size, (from_seed, from_leeches)
    assert from_leeches > 0


def test_a_provider_sending_bad_blocks_is_banned_and_the_download_completes_from_another(
    net: LocalNetwork, tmp_path: Path
) -> None:
    """Blocks on the Exchange streams (``swarm_blocks``): a piece gathered from blocks
    that does not hash right is fetched again, and a provider that sent all of one is
    banned with the reason; the file comes whole from the honest provider."""
    tracker = net.start_tracker()
    size, piece = 4 << 20, 256 << 10  # two blocks a piece
    original = write_random(tmp_path / "seed" / "share" / "data.bin", size)
    (tmp_path / "liar" / "share").mkdir(parents=True)
    rotten = tmp_path / "liar" / "share" / "data.bin"
    rotten.write_bytes(original.read_bytes())
    honest = tmp_path / "honest.toml"
    honest.write_text(f"[peer]\npiece_size = {piece}\nmax_upload_rate = {1 << 20}\n")
    seed = net.start_peer("seed", "--config", str(honest), tracker=tracker.url)
    fast = tmp_path / "fast.toml"
    fast.write_text(f"[peer]\npiece_size = {piece}\n")
    liar = net.start_peer("liar", "--config", str(fast), tracker=tracker.url)
    content_id = api(seed, "/v1/files")["files"][0]["content_id"]
    assert api(liar, "/v1/files")["files"][0]["content_id"] == content_id
    st = rotten.stat()
    with rotten.open("r+b") as f:  # behind the liar's back: it serves the changed bytes
        f.write(b"\xff" * size)
    os.utime(rotten, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as indexed
    config = tmp_path / "fetcher.toml"
    config.write_text('[peer]\nswarm_blocks = "on"\n')
    fetcher = net.start_peer("fetcher", "--config", str(config), tracker=tracker.url)

    httpx.post(fetcher.api + "/v1/downloads", json={"content_id": content_id}).raise_for_status()

    def done() -> bool:
        view = api(fetcher, f"/v1/downloads/{content_id}")
        assert view["state"] != "failed", view
        return bool(view["state"] == "complete")

    wait_for(done, 60, "the download from the honest provider")
    assert sha256(fetcher.share / "data.bin") == sha256(original)
    view = api(fetcher, f"/v1/downloads/{content_id}")
    assert [b["address"] for b in view["banned"]] == [liar.address], view
    assert "does not match its hash" in view["banned"][0]["reason"]

"""A tracker and peers as real processes: search, multi-source download, restarts."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest

from p2pshare.core.pieces import PieceSet
from p2pshare.localnet import LocalNetwork, wait_for
from tests.integration.helpers import api, cli, sha256, write_random

pytestmark = pytest.mark.integration


def test_file_held_by_two_peers_is_found_and_downloaded_from_both(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    original = write_random(tmp_path / "alice" / "share" / "big video.mkv", 24 << 20)
    (tmp_path / "bob" / "share").mkdir(parents=True)
    shutil.copy(original, tmp_path / "bob" / "share" / "big video.mkv")
    alice = net.start_peer("alice", tracker=tracker.url)
    bob = net.start_peer("bob", tracker=tracker.url)
    carol = net.start_peer("carol", tracker=tracker.url)

    found = cli("search", "big vid", "--json", "--api", carol.api)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert [h["name"] for h in hits] == ["big video.mkv"]
    assert {p["address"] for p in hits[0]["providers"]} == {alice.address, bob.address}

    out = tmp_path / "out"
    got = cli("get", hits[0]["content_id"][:10], "-o", str(out), "--api", carol.api)
    assert got.returncode == 0, got.stderr
    assert str(out / "big video.mkv") in got.stdout
    assert sha256(out / "big video.mkv") == sha256(original)
    # both providers served pieces
    assert api(alice, "/v1/status")["pieces_served"] > 0
    assert api(bob, "/v1/status")["pieces_served"] > 0
    assert not list(out.glob(".*"))  # no partial file left behind


def test_downloaded_file_into_share_is_shared_in_turn(net: LocalNetwork, tmp_path: Path) -> None:
    tracker = net.start_tracker()
    original = write_random(tmp_path / "alice" / "share" / "album.zip", 3 << 20)
    alice = net.start_peer("alice", tracker=tracker.url)
    bob = net.start_peer("bob", tracker=tracker.url)
    content_id = api(alice, "/v1/files")["files"][0]["content_id"]

    got = cli("get", content_id, "--api", bob.api)  # default: into bob's share folder
    assert got.returncode == 0, got.stderr
    assert sha256(bob.share / "album.zip") == sha256(original)
    wait_for(
        lambda: len(api(bob, "/v1/search", q="album")["hits"][0]["providers"]) == 2,
        10,
        "the tracker to list bob as a provider",
    )


def test_restarted_peer_reuses_its_hash_cache(net: LocalNetwork, tmp_path: Path) -> None:
    write_random(tmp_path / "alice" / "share" / "a.bin", 2 << 20)
    write_random(tmp_path / "alice" / "share" / "sub" / "b.bin", 1 << 20)
    alice = net.start_peer("alice")
    assert api(alice, "/v1/status")["scan"]["hashed"] == 2
    net.stop_all()

    alice = net.start_peer("alice")
    scan = api(alice, "/v1/status")["scan"]
    assert (scan["hashed"], scan["cached"]) == (0, 2)
    names = sorted(f["name"] for f in api(alice, "/v1/files")["files"])
    assert names == ["a.bin", "sub/b.bin"]


def test_corrupt_pieces_are_discarded_and_fetched_elsewhere(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    original = write_random(tmp_path / "good" / "share" / "data.bin", 8 << 20)
    liar_copy = tmp_path / "liar" / "share" / "data.bin"
    liar_copy.parent.mkdir(parents=True)
    shutil.copy(original, liar_copy)
    good = net.start_peer("good", tracker=tracker.url)
    liar = net.start_peer("liar", tracker=tracker.url)
    # rot the liar's bytes behind its back: same size, same mtime, so it still serves them
    st = liar_copy.stat()
    with liar_copy.open("r+b") as f:
        f.write(b"\xff" * (8 << 20))
    os.utime(liar_copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    fetcher = net.start_peer("fetcher", tracker=tracker.url)
    content_id = api(good, "/v1/files")["files"][0]["content_id"]

    got = cli("get", content_id, "-o", str(tmp_path / "out"), "--json", "--api", fetcher.api)
    assert got.returncode == 0, got.stderr
    view = json.loads(got.stdout)
    assert sha256(tmp_path / "out" / "data.bin") == sha256(original)
    assert [b["address"] for b in view["banned"]] == [liar.address]
    assert view["banned"][0]["reason"].startswith("sent a bad piece: piece ")


def test_interrupted_download_resumes_without_refetching_verified_pieces(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    size, piece = 8 << 20, 64 << 10
    pieces = size // piece
    original = write_random(tmp_path / "seed" / "share" / "slow.bin", size)
    config = tmp_path / "seed.toml"
    config.write_text(f"[peer]\npiece_size = {piece}\nmax_upload_rate = {2 << 20}\n")
    seed = net.start_peer("seed", "--config", str(config), tracker=tracker.url)
    fetcher = net.start_peer("fetcher", tracker=tracker.url)
    content_id = api(seed, "/v1/files")["files"][0]["content_id"]

    httpx.post(fetcher.api + "/v1/downloads", json={"content_id": content_id}).raise_for_status()
    record = fetcher.data / "downloads" / f"{content_id}.json"
    wait_for(record.exists, 20, "a record of verified pieces")
    fetcher.stop(signal.SIGKILL)
    served_before = api(seed, "/v1/status")["pieces_served"]
    verified = PieceSet.from_bytes(pieces, base64.b64decode(json.loads(record.read_text())["have"]))
    assert 0 < len(verified) < pieces

    fetcher = net.start_peer("fetcher", tracker=tracker.url)  # resumes by itself
    got = cli("get", content_id, "--api", fetcher.api)
    assert got.returncode == 0, got.stderr
    assert sha256(fetcher.share / "slow.bin") == sha256(original)
    assert not record.exists()  # the record goes once the file is in place
    refetched = api(seed, "/v1/status")["pieces_served"] - served_before
    assert refetched <= pieces - len(verified)


def test_peer_registers_again_with_a_tracker_that_lost_it(
    net: LocalNetwork, tmp_path: Path
) -> None:
    first = net.start_tracker()
    write_random(tmp_path / "p" / "share" / "kept.txt", 100)
    peer = net.start_peer("p", tracker=first.url, env={"P2PSHARE_PEER_HEARTBEAT_SECONDS": "0.3"})
    first.stop(signal.SIGKILL)
    wait_for(
        lambda: api(peer, "/v1/status")["tracker"]["state"].startswith("unreachable"),
        10,
        "the peer to notice the tracker is down",
    )
    port = first.url.rsplit(":", 1)[1]
    # a new tracker with an empty registry on the same address
    second = net.start_tracker("--host", "127.0.0.1", "--port", port, db=tmp_path / "new.db")
    wait_for(
        lambda: httpx.get(second.url + "/v1/search", params={"q": "kept"}).json()["hits"],
        15,
        "the peer to register again with its files",
    )
    assert api(peer, "/v1/status")["tracker"]["state"] == "registered"

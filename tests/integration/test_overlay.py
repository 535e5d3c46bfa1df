"""The overlay with real processes: search and download with the tracker dead, rejoining."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from p2pshare.localnet import LocalNetwork, PeerProc, wait_for
from tests.integration.helpers import api, cli, sha256, write_random

pytestmark = pytest.mark.integration

# a line of peers: the tracker hands out no neighbours and nobody learns peers from
# Hello answers, so each peer has exactly the one before and the one after it
LINE_ENV = {"P2PSHARE_PEER_LEARN_NEIGHBOURS": "false"}


def neighbours(peer: PeerProc) -> set[str]:
    return set(api(peer, "/v1/status")["neighbours"])


def start_line(net: LocalNetwork, count: int, tracker: str) -> list[PeerProc]:
    peers: list[PeerProc] = []
    for i in range(count):
        seeds = ["--seed", peers[-1].address] if peers else []
        peers.append(net.start_peer(f"p{i}", *seeds, tracker=tracker, env=LINE_ENV))
    for i, peer in enumerate(peers):
        want = {p.address for p in peers[max(i - 1, 0) : i + 2] if p is not peer}
        wait_for(lambda p=peer, w=want: neighbours(p) == w, 10, f"{peer.name}'s neighbours")
    return peers


def search(peer: PeerProc, query: str, *args: str) -> list[dict[str, object]]:
    found = cli("search", query, "--json", "--api", peer.api, *args)
    assert found.returncode == 0, found.stderr
    hits: list[dict[str, object]] = json.loads(found.stdout)
    return hits


def providers(hit: dict[str, object]) -> set[str]:
    return {str(p["address"]) for p in hit["providers"]}  # type: ignore[attr-defined]


def test_with_the_tracker_killed_a_file_four_hops_away_is_found_and_downloaded(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker(env={"P2PSHARE_TRACKER_NEIGHBOUR_SAMPLE": "0"})
    near = write_random(tmp_path / "p0" / "share" / "field recording.flac", 3 << 20)
    far = write_random(tmp_path / "p9" / "share" / "field notes.pdf", 1 << 20)
    peers = start_line(net, 10, tracker.url)
    tracker.stop(signal.SIGKILL)

    # p4 is four hops from p0 and five from p9: a flood with TTL 4 finds only the first
    hits = search(peers[4], "field", "--source", "overlay")
    assert [h["name"] for h in hits] == ["field recording.flac"]
    assert providers(hits[0]) == {peers[0].address}
    hits = search(peers[4], "field", "--ttl", "5")  # both sources: the tracker is dead
    assert sorted(str(h["name"]) for h in hits) == ["field notes.pdf", "field recording.flac"]
    walked = search(peers[4], "recording", "--source", "overlay", "--walkers", "2", "--ttl", "4")
    assert len(walked) <= 1  # two walkers on a line: found when both go the same way

    recording = next(h for h in hits if h["name"] == "field recording.flac")
    prefix = str(recording["content_id"])[:12]
    got = cli("get", prefix, "-o", str(tmp_path / "out4"), "--api", peers[4].api)
    assert got.returncode == 0, got.stderr
    assert sha256(tmp_path / "out4" / "field recording.flac") == sha256(near)

    # p5 never searched: it finds the providers of a full content id through the overlay
    notes_id = api(peers[9], "/v1/files")["files"][0]["content_id"]
    got = cli("get", notes_id, "-o", str(tmp_path / "out5"), "--api", peers[5].api)
    assert got.returncode == 0, got.stderr
    assert sha256(tmp_path / "out5" / "field notes.pdf") == sha256(far)


def test_a_peer_restarted_without_the_tracker_rejoins_through_its_saved_neighbours(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker(env={"P2PSHARE_TRACKER_NEIGHBOUR_SAMPLE": "0"})
    write_random(tmp_path / "p0" / "share" / "old map.png", 100_000)
    peers = start_line(net, 4, tracker.url)
    saved = json.loads((peers[2].data / "neighbours.json").read_text())["neighbours"]
    assert set(saved) == {peers[1].address, peers[3].address}
    tracker.stop(signal.SIGKILL)
    peers[2].stop()

    # no tracker, no seeds: only the saved neighbours (its own port is new)
    again = net.start_peer("p2", env=LINE_ENV)
    wait_for(
        lambda: neighbours(again) == {peers[1].address, peers[3].address},
        10,
        "the restarted peer to rejoin its saved neighbours",
    )
    wait_for(lambda: again.address in neighbours(peers[1]), 10, "p1 to keep the restarted peer")
    hits = search(again, "map")
    assert [h["name"] for h in hits] == ["old map.png"]
    assert providers(hits[0]) == {peers[0].address}
    assert search(peers[3], "map", "--source", "overlay")  # through the restarted peer

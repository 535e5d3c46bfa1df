"""Folder sync with real peers (issue 16): a subscribed folder follows its publishers'
edits, appends, truncations, renames and removals, keeps replaced versions, keeps a
local change that conflicts as a conflict copy, catches up after a restart, gets the
files shared just before it started, refuses a second subscription into its folder,
and three peers syncing one folder both ways converge after concurrent edits."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from p2pshare.localnet import LocalNetwork, PeerProc, TrackerProc, wait_for
from tests.integration.helpers import api, cli, sha256, write_random

pytestmark = pytest.mark.integration

MiB = 1 << 20


def subscription(peer: PeerProc, index: int = 0) -> dict[str, Any]:
    return api(peer, "/v1/subscriptions")["subscriptions"][index]


def subscribe(peer: PeerProc, query: str, into: Path, *extra: str) -> dict[str, Any]:
    made = cli("subscribe", query, "--into", str(into), "--api", peer.api, "--json", *extra)
    assert made.returncode == 0, made.stderr
    return json.loads(made.stdout)  # type: ignore[no-any-return]


def same_as(path: Path, expected: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == expected
    except OSError:
        return False


def edit(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def pair(net: LocalNetwork) -> tuple[TrackerProc, PeerProc, PeerProc]:
    tracker = net.start_tracker()
    a = net.start_peer("a", tracker=tracker.url)
    b = net.start_peer("b", "--seed", a.address, tracker=tracker.url)
    wait_for(lambda: api(b, "/v1/status")["neighbours"] == [a.address], 10, "b's neighbour")
    return tracker, a, b


def test_edits_appends_truncations_renames_and_removals_reach_a_mirror(
    net: LocalNetwork, tmp_path: Path
) -> None:
    _, a, b = pair(net)
    doc = write_random(a.share / "doc.bin", 8 * MiB)
    into = tmp_path / "mirror"
    subscribe(b, "*", into, "--mirror", "--versions", "2")
    wait_for(lambda: same_as(into / "doc.bin", sha256(doc)), 15, "the first version")

    # an edit in place: only the changed piece moves, the old version is kept
    old = sha256(doc)
    edit(doc, 3 * MiB + 100, os.urandom(1000))
    wait_for(lambda: same_as(into / "doc.bin", sha256(doc)), 10, "the edit")
    sub = subscription(b)
    replaced = [e for e in sub["events"] if e["action"] == "replaced"]
    assert replaced and replaced[-1]["fetched"] <= MiB, replaced
    assert replaced[-1]["reused"] >= 7 * MiB
    kept = list((into / ".p2pshare" / "versions").glob("doc~*.bin"))
    assert [sha256(k) for k in kept] == [old]

    # an append: the pieces before the end stay
    with doc.open("ab") as f:
        f.write(os.urandom(300_000))
    wait_for(lambda: same_as(into / "doc.bin", sha256(doc)), 10, "the append")
    last = subscription(b)["events"][-1]
    assert last["action"] == "replaced" and last["fetched"] <= 2 * MiB, last

    # a truncation
    with doc.open("r+b") as f:
        f.truncate(5 * MiB + 7)
    wait_for(lambda: same_as(into / "doc.bin", sha256(doc)), 10, "the truncation")
    assert subscription(b)["events"][-1]["fetched"] <= MiB
    # only two versions are kept per name
    wait_for(lambda: len(list((into / ".p2pshare" / "versions").glob("doc~*"))) == 2, 5, "keep 2")

    # a rename: the new name arrives (from local pieces), the old one goes
    content = sha256(doc)
    doc.rename(a.share / "renamed.bin")
    wait_for(lambda: same_as(into / "renamed.bin", content), 10, "the new name")
    wait_for(lambda: not (into / "doc.bin").exists(), 10, "the old name to go")
    assert subscription(b)["events"][-1]["fetched"] == 0 or any(
        e["name"] == "renamed.bin" and e["fetched"] == 0 for e in subscription(b)["events"]
    )

    # a removal: moved to the versions, not deleted
    (a.share / "renamed.bin").unlink()
    wait_for(lambda: not (into / "renamed.bin").exists(), 10, "the removal")
    assert [sha256(k) for k in (into / ".p2pshare" / "versions").glob("renamed~*")] == [content]
    listed = cli("subscriptions", "--api", b.api)
    assert listed.returncode == 0 and "removed renamed.bin" in listed.stdout, listed.stdout


def sync_events(peer: PeerProc, found: list[dict[str, Any]], stop: threading.Event) -> None:
    """The ``sync`` events of the peer's event stream, appended to ``found``."""
    with httpx.stream("GET", peer.api + "/v1/events", params={"q": "keep"}, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data:") and '"event": "sync"' in line:
                found.append(json.loads(line[5:]))
            if stop.is_set():
                return


def test_without_mirror_removals_are_kept(net: LocalNetwork, tmp_path: Path) -> None:
    _, a, b = pair(net)
    found: list[dict[str, Any]] = []
    stop = threading.Event()
    reader = threading.Thread(target=sync_events, args=(b, found, stop), daemon=True)
    reader.start()
    f = write_random(a.share / "keep me.txt", 50_000)
    into = tmp_path / "copy"
    subscribe(b, "keep", into)
    wait_for(lambda: same_as(into / "keep me.txt", sha256(f)), 10, "the file")
    wait_for(lambda: found, 10, "the event stream to tell")
    assert found[0]["action"] == "added" and found[0]["name"] == "keep me.txt"
    assert found[0]["folder"] == str(into) and found[0]["fetched"] == 50_000
    stop.set()
    f.unlink()
    later = write_random(a.share / "keep later.txt", 1000)  # a change after the removal
    wait_for(lambda: same_as(into / "keep later.txt", sha256(later)), 10, "a later file")
    assert (into / "keep me.txt").exists()


def test_a_local_change_that_conflicts_is_kept_and_upstream_takes_the_name(
    net: LocalNetwork, tmp_path: Path
) -> None:
    _, a, b = pair(net)
    f = write_random(a.share / "notes.txt", 200_000)
    into = tmp_path / "notes"
    subscribe(b, "notes", into)
    wait_for(lambda: same_as(into / "notes.txt", sha256(f)), 10, "the file")
    (into / "notes.txt").write_bytes(b"my own notes\n")
    mine = sha256(into / "notes.txt")
    time.sleep(0.05)
    write_random(f, 150_000)
    wait_for(lambda: same_as(into / "notes.txt", sha256(f)), 10, "upstream's version")
    copies = list(into.glob("notes.sync-conflict-*.txt"))
    assert [sha256(c) for c in copies] == [mine]
    sub = subscription(b)
    assert sub["conflicts"] == [copies[0].name]
    assert any(e["action"] == "conflict" for e in sub["events"])
    listed = cli("subscriptions", "--api", b.api)
    assert "conflict notes.txt" in listed.stdout, listed.stdout
    status = "".join(cli("status", "--api", b.api).stdout.split())  # unwrapped
    assert "conflictcopieskept:" in status and copies[0].name in status, status


def test_a_subscriber_down_during_changes_catches_up_after_a_restart(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker, a, b = pair(net)
    one = write_random(a.share / "one.dat", 300_000)
    two = write_random(a.share / "two.dat", 300_000)
    # both shared before b subscribes: this test is about the restart (a file shared
    # just before a subscription starts: test_files_shared_just_before_...)
    wait_for(lambda: len(api(a, "/v1/files")["files"]) == 2, 10, "a to share both")
    into = tmp_path / "sub"
    subscribe(b, "*.dat", into, "--mirror")
    wait_for(lambda: same_as(into / "two.dat", sha256(two)), 10, "both files")
    wait_for(lambda: same_as(into / "one.dat", sha256(one)), 10, "both files")
    b.stop()
    edit(one, 1000, b"changed while b was down")
    two.unlink()
    three = write_random(a.share / "three.dat", 1000)
    b = net.start_peer("b", "--seed", a.address, tracker=tracker.url)
    wait_for(lambda: same_as(into / "one.dat", sha256(one)), 15, "the edit, after the restart")
    wait_for(lambda: same_as(into / "three.dat", sha256(three)), 10, "the new file")
    wait_for(lambda: not (into / "two.dat").exists(), 10, "the removal")


def test_files_shared_just_before_a_subscription_starts_all_arrive(
    net: LocalNetwork, tmp_path: Path
) -> None:
    """A subscription's listing of a publisher is taken even when its stream brought
    a change of that publisher first: a file whose change went out before the stream
    opened is in that listing. (Once, one.dat was never synced: its change came before
    the stream opened; two.dat's came on the stream while the search ran, the search
    then found the publisher "known" and it was never listed.)"""
    tracker, a, b = pair(net)
    # a neighbour that does not answer holds b's searches for the overlay's whole
    # timeout: the stream brings a change of a before the subscription's search ends
    mute = net.start_peer("mute", "--seed", b.address, tracker=tracker.url)
    wait_for(lambda: len(api(b, "/v1/status")["neighbours"]) == 2, 10, "b's two neighbours")
    early = write_random(a.share / "early.dat", 300_000)
    wait_for(
        lambda: httpx.get(tracker.url + "/v1/search", params={"q": "early"}).json()["hits"],
        10,
        "the tracker to index early.dat (its change is past: no stream will bring it)",
    )
    # and some still being hashed when the subscription starts
    hashing = [write_random(a.share / f"big{i}.dat", 32 * MiB) for i in range(2)]
    into = tmp_path / "sub"
    mute.popen.send_signal(signal.SIGSTOP)
    try:
        made = httpx.post(b.api + "/v1/subscriptions", json={"query": "*.dat", "into": str(into)})
        assert made.status_code == 201, made.text
        late = write_random(a.share / "late.dat", 1000)
        for f in [late, *hashing, early]:
            wait_for(lambda f=f: same_as(into / f.name, sha256(f)), 20, f.name)
    finally:
        mute.popen.send_signal(signal.SIGCONT)


def test_a_second_subscription_into_a_subscribed_folder_is_refused_with_a_clear_error(
    net: LocalNetwork, tmp_path: Path
) -> None:
    peer = net.start_peer("b")
    subscribe(peer, "*.dat", tmp_path / "sync" / "music")
    inside = cli(
        "subscribe", "rock", "--into", str(tmp_path / "sync" / "music" / "rock"), "--api", peer.api
    )
    assert inside.returncode != 0 and "Traceback" not in inside.stderr
    assert "is inside the folder of subscription" in inside.stderr, inside.stderr
    holding = httpx.post(
        peer.api + "/v1/subscriptions", json={"query": "rock", "into": str(tmp_path / "sync")}
    )
    assert 400 <= holding.status_code < 500
    assert "holds the folder of subscription" in holding.text, holding.text
    assert len(api(peer, "/v1/subscriptions")["subscriptions"]) == 1


def _slow_publisher_and_subscriber(net: LocalNetwork) -> tuple[PeerProc, PeerProc]:
    """Peer a uploads at 4 MiB/s (a version takes seconds to move); b has a as neighbour."""
    tracker = net.start_tracker()
    slow = {"P2PSHARE_PEER_MAX_UPLOAD_RATE": str(4 * MiB)}
    a = net.start_peer("a", tracker=tracker.url, env=slow)
    b = net.start_peer("b", "--seed", a.address, tracker=tracker.url)
    wait_for(lambda: api(b, "/v1/status")["neighbours"] == [a.address], 10, "b's neighbour")
    return a, b


def test_a_new_version_while_the_previous_one_still_downloads(
    net: LocalNetwork, tmp_path: Path
) -> None:
    a, b = _slow_publisher_and_subscriber(net)
    big = write_random(a.share / "big.iso", 24 * MiB)
    into = tmp_path / "isos"
    subscribe(b, "iso", into)
    wait_for(lambda: subscription(b)["syncing"] == ["big.iso"], 10, "the download to start")
    wait_for(
        lambda: any(d["bytes_done"] >= 2 * MiB for d in api(b, "/v1/downloads")),
        10,
        "a few MiB of the first version",
    )
    edit(big, 20 * MiB, os.urandom(MiB))  # the next version, before the first landed
    wait_for(lambda: same_as(into / "big.iso", sha256(big)), 30, "the newest version")
    sub = subscription(b)
    done = [e for e in sub["events"] if e["name"] == "big.iso"]
    assert [e["action"] for e in done] == ["added"], done
    # what the first version's download had verified was taken along, not fetched again
    assert sub["bytes_fetched"] <= 26 * MiB
    assert not list((into / ".p2pshare" / "incoming").rglob("*.p2pshare-part"))


def test_three_peers_sync_one_folder_both_ways_and_converge(net: LocalNetwork) -> None:
    tracker = net.start_tracker()
    a = net.start_peer("a", tracker=tracker.url)
    b = net.start_peer("b", "--seed", a.address, tracker=tracker.url)
    c = net.start_peer("c", "--seed", a.address, "--seed", b.address, tracker=tracker.url)
    peers = [a, b, c]
    for p in peers:
        wait_for(lambda p=p: len(api(p, "/v1/status")["neighbours"]) == 2, 10, "a full mesh")
    for p in peers:
        sub = subscribe(p, "*", p.share, "--mirror")
        assert sub["two_way"]

    def everywhere(name: str, digest: str) -> bool:
        return all(same_as(p.share / name, digest) for p in peers)

    # a file made at one peer reaches the others, and stops there (no ping-pong)
    f = write_random(a.share / "plan.txt", 100_000)
    wait_for(lambda: everywhere("plan.txt", sha256(f)), 10, "plan.txt everywhere")
    edit(b.share / "plan.txt", 10, b"b was here")
    wait_for(lambda: everywhere("plan.txt", sha256(b.share / "plan.txt")), 10, "b's edit")
    time.sleep(1.5)
    synced = [len(subscription(p)["events"]) for p in peers]
    time.sleep(1.5)
    assert [len(subscription(p)["events"]) for p in peers] == synced, "still syncing: a loop"

    # concurrent edits at a and c: one wins everywhere, the other is a conflict copy
    (a.share / "plan.txt").write_bytes(b"a's version\n")
    (c.share / "plan.txt").write_bytes(b"c's version\n")

    def converged() -> bool:
        contents = [sorted((p.share).glob("plan*")) for p in peers]
        names = [[q.name for q in ps] for ps in contents]
        if names[0] != names[1] or names[1] != names[2] or len(names[0]) != 2:
            return False
        return all(len({sha256(p.share / n) for p in peers}) == 1 for n in names[0])

    wait_for(converged, 20, "the three peers to converge")
    winner = (a.share / "plan.txt").read_bytes()
    copy = next(a.share.glob("plan.sync-conflict-*.txt")).read_bytes()
    assert {winner, copy} == {b"a's version\n", b"c's version\n"}

    # a removal with --mirror goes everywhere, into each peer's versions
    (b.share / "plan.txt").unlink()
    wait_for(lambda: not any((p.share / "plan.txt").exists() for p in peers), 10, "removed")
    for p in peers:
        assert list((p.share / ".p2pshare" / "versions").glob("plan~*.txt")) or p is b


def test_the_old_version_stays_readable_until_the_new_one_is_complete(
    net: LocalNetwork, tmp_path: Path
) -> None:
    a, b = _slow_publisher_and_subscriber(net)
    f = write_random(a.share / "video.mkv", 4 * MiB)
    into = tmp_path / "videos"
    subscribe(b, "video", into, "--versions", "0")
    wait_for(lambda: same_as(into / "video.mkv", sha256(f)), 15, "the first version")
    old = sha256(f)
    edit(f, 0, os.urandom(12 * MiB))  # 12 MiB to fetch at 4 MiB/s
    new = sha256(f)
    wait_for(lambda: subscription(b)["syncing"] == ["video.mkv"], 10, "the new version to start")
    seen = []
    while subscription(b)["syncing"]:
        seen.append(sha256(into / "video.mkv"))
        time.sleep(0.2)
    assert set(seen) <= {old, new}, "a half-written file under the name"  # only ever whole
    assert seen.count(old) >= 3
    wait_for(lambda: same_as(into / "video.mkv", sha256(f)), 10, "the new version")
    assert not (into / ".p2pshare" / "versions").exists()  # --versions 0: none kept

"""Publish/subscribe with real processes: share folders watched, changes reaching
`watch` (through the tracker and through the overlay), `subscribe --into`."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from p2pshare.localnet import LocalNetwork, PeerProc, TrackerProc, p2pshare_argv, wait_for
from tests.integration.helpers import api, cli, sha256, write_random

pytestmark = pytest.mark.integration


class Watch:
    """`p2pshare watch QUERY --json` running in the background; its lines, parsed."""

    def __init__(self, peer: PeerProc, query: str) -> None:
        self.proc = subprocess.Popen(
            p2pshare_argv("watch", query, "--json", "--api", peer.api),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[dict[str, object]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def next(self, timeout: float) -> dict[str, object]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no watch output within {timeout}s") from None

    def wait_event(self, event: str, name: str, timeout: float) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(deadline - time.monotonic(), 0.01))
            if line["event"] == event and line["name"] == name:
                return line

    def until_live(self, share: Path, stem: str, timeout: float = 10) -> None:
        """Drop probe files into ``share`` until one shows up: the watch is then live
        (a change published before the watch subscribed is not replayed)."""
        deadline = time.monotonic() + timeout
        for i in range(1000):
            name = stem.format(i)
            (share / name).write_text(name)
            try:
                self.wait_event("added", name, 0.5)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def iter_now(lines: queue.Queue[dict[str, object]]) -> Iterator[dict[str, object]]:
    while not lines.empty():
        yield lines.get_nowait()


@pytest.fixture
def watches() -> Iterator[list[Watch]]:
    started: list[Watch] = []
    yield started
    for w in started:
        w.stop()


def tracker_names(tracker: TrackerProc, query: str) -> set[str]:
    hits = httpx.get(tracker.url + "/v1/search", params={"q": query}, timeout=5).json()["hits"]
    return {h["name"] for h in hits}


def test_a_dropped_file_reaches_watch_and_tracker_search_and_a_deleted_one_leaves(
    net: LocalNetwork, tmp_path: Path, watches: list[Watch]
) -> None:
    tracker = net.start_tracker()
    a = net.start_peer("a", tracker=tracker.url)
    b = net.start_peer("b", "--seed", a.address, tracker=tracker.url)
    wait_for(lambda: api(b, "/v1/status")["neighbours"] == [a.address], 10, "b's neighbour")
    w = Watch(b, "holiday")
    watches.append(w)
    w.until_live(a.share, "holiday probe {}")

    start = time.monotonic()
    write_random(a.share / "holiday photos.zip", 300_000)
    seen = w.wait_event("added", "holiday photos.zip", 2)
    latency = time.monotonic() - start
    assert seen["provider"] == a.address and seen["size"] == 300_000
    assert seen["content_id"] == json.loads(cli("hash", str(a.share / "holiday photos.zip"),
                                                 "--json").stdout)["content_id"]  # fmt: skip
    left = 2 - (time.monotonic() - start)
    wait_for(lambda: "holiday photos.zip" in tracker_names(tracker, "holiday"), left, "tracker")
    print(f"drop to watch output: {latency * 1000:.0f} ms,", end=" ")
    print(f"to tracker search: {(time.monotonic() - start) * 1000:.0f} ms")

    start = time.monotonic()
    (a.share / "holiday photos.zip").unlink()
    gone = w.wait_event("removed", "holiday photos.zip", 2)
    assert gone["content_id"] == seen["content_id"]
    left = 2 - (time.monotonic() - start)
    wait_for(lambda: "holiday photos.zip" not in tracker_names(tracker, "holiday"), left, "gone")

    # hidden files and partial downloads are never published
    (a.share / ".holiday secret").write_text("x")
    (a.share / "holiday.p2pshare-part").write_text("x")
    (a.share / "holiday last.txt").write_text("last")
    assert w.wait_event("added", "holiday last.txt", 2)["provider"] == a.address
    probes = [line for line in iter_now(w.lines) if "probe" not in str(line["name"])]
    assert probes == []


def test_watch_keeps_working_through_the_overlay_while_the_tracker_is_dead(
    net: LocalNetwork, watches: list[Watch]
) -> None:
    # a line a - b - c: a's changes reach c only as b relays them
    tracker = net.start_tracker(env={"P2PSHARE_TRACKER_NEIGHBOUR_SAMPLE": "0"})
    line = {"P2PSHARE_PEER_LEARN_NEIGHBOURS": "false"}
    a = net.start_peer("a", tracker=tracker.url, env=line)
    b = net.start_peer("b", "--seed", a.address, tracker=tracker.url, env=line)
    c = net.start_peer("c", "--seed", b.address, tracker=tracker.url, env=line)
    following = lambda: api(c, "/v1/status")["pubsub"]["following"] == [b.address]  # noqa: E731
    wait_for(following, 10, "c to follow b's changes, and only b's")
    wait_for(lambda: a.address in api(b, "/v1/status")["pubsub"]["following"], 10, "b follows a")
    tracker.stop(signal.SIGKILL)
    w = Watch(c, "*.flac")
    watches.append(w)
    w.until_live(a.share, "probe {}.flac")

    start = time.monotonic()
    write_random(a.share / "song.flac", 200_000)
    seen = w.wait_event("added", "song.flac", 2)
    print(f"drop to watch output, tracker dead: {(time.monotonic() - start) * 1000:.0f} ms")
    assert seen["provider"] == a.address
    (a.share / "song.flac").unlink()
    w.wait_event("removed", "song.flac", 2)


def test_subscribe_into_fetches_later_files_and_survives_a_restart(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    a = net.start_peer("a", tracker=tracker.url)
    early = write_random(a.share / "report 1.pdf", 150_000)
    wait_for(lambda: api(a, "/v1/files")["files"], 10, "a's index")
    b = net.start_peer("b", "--seed", a.address, tracker=tracker.url)
    into = tmp_path / "reports"

    refused = cli("subscribe", "report", "--into", str(b.data / "x"), "--api", b.api)
    assert refused.returncode == 2 and "data folder" in refused.stderr
    assert "Traceback" not in refused.stderr
    made = cli("subscribe", "report", "--into", str(into), "--api", b.api, "--json")
    assert made.returncode == 0, made.stderr
    sub_id = json.loads(made.stdout)["id"]
    wait_for(lambda: (into / "report 1.pdf").exists(), 10, "the current match")
    assert sha256(into / "report 1.pdf") == sha256(early)

    later = write_random(a.share / "report 2.pdf", 150_000)
    wait_for(lambda: (into / "report 2.pdf").exists(), 10, "a match published later")
    assert sha256(into / "report 2.pdf") == sha256(later)

    b.stop()
    b = net.start_peer("b", "--seed", a.address, tracker=tracker.url)
    listed = cli("subscriptions", "--json", "--api", b.api)
    assert [s["id"] for s in json.loads(listed.stdout)] == [sub_id]
    wait_for(lambda: len(api(b, "/v1/status")["neighbours"]) == 1, 10, "b's neighbour again")
    third = write_random(a.share / "report 3.pdf", 150_000)
    wait_for(lambda: (into / "report 3.pdf").exists(), 10, "a match after the restart")
    assert sha256(into / "report 3.pdf") == sha256(third)

    assert cli("unsubscribe", sub_id, "--api", b.api).returncode == 0
    assert json.loads(cli("subscriptions", "--json", "--api", b.api).stdout) == []
    assert cli("unsubscribe", sub_id, "--api", b.api).returncode == 2

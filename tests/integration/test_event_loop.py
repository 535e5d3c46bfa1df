"""A downloading peer's event loop stays free: it answers while pieces flow.

Idle piece workers once waited on an ``asyncio.Event`` that only another task
cleared; from Python 3.12 on, ``wait_for`` of a set event returns without
yielding, so they spun forever and the peer stopped answering anything. This is
the watchdog for that class of bug, run on every Python the project claims.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from p2pshare.localnet import LocalNetwork, wait_for
from tests.integration.helpers import api, sha256, write_random

pytestmark = pytest.mark.integration
PIECE = 64 << 10


def test_downloading_peers_keep_answering_healthz_until_their_downloads_end(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    original = write_random(tmp_path / "seed" / "share" / "slow.bin", 4 << 20)
    config = tmp_path / "seed.toml"
    # slow enough that the download lasts seconds, with idle workers waiting for pieces
    config.write_text(f"[peer]\npiece_size = {PIECE}\nmax_upload_rate = {1 << 20}\n")
    seed = net.start_peer("seed", "--config", str(config), tracker=tracker.url)
    leeches = [net.start_peer(f"leech{i}", tracker=tracker.url) for i in range(2)]
    content_id = api(seed, "/v1/files")["files"][0]["content_id"]
    for leech in leeches:
        httpx.post(leech.api + "/v1/downloads", json={"content_id": content_id}).raise_for_status()

    answered_while_downloading = 0
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=2.0) as client:
        while True:
            states = [api(leech, f"/v1/downloads/{content_id}")["state"] for leech in leeches]
            assert "failed" not in states
            if all(state == "complete" for state in states):
                break
            assert time.monotonic() < deadline, f"downloads still {states} after 60 s"
            for leech in leeches:
                # a loop that spins never answers: httpx raises ReadTimeout after 2 s
                assert client.get(leech.api + "/healthz").json()["status"] == "ok"
            answered_while_downloading += 1
            time.sleep(0.1)

    assert answered_while_downloading >= 5  # the watch really ran during the downloads
    for leech in leeches:
        assert sha256(leech.share / "slow.bin") == sha256(original)
    # and each stops at once when asked: a spinning loop ignores SIGTERM
    for leech in leeches:
        leech.popen.terminate()
    wait_for(lambda: not any(leech.alive() for leech in leeches), 10, "the peers to stop")

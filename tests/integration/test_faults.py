"""Downloads that survive faults: providers and the tracker dying, a full disk."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from p2pshare.core.pieces import PieceSet
from p2pshare.localnet import LocalNetwork, PeerProc, p2pshare_argv, wait_for
from tests.integration.helpers import api, cli, sha256, write_random

pytestmark = pytest.mark.integration
PIECE = 64 << 10


def slow_provider_config(tmp_path: Path, rate: int) -> Path:
    config = tmp_path / f"slow-{rate}.toml"
    config.write_text(f"[peer]\npiece_size = {PIECE}\nmax_upload_rate = {rate}\n")
    return config


def start_download(peer: PeerProc, content_id: str, out: Path | None = None) -> None:
    body: dict[str, str] = {"content_id": content_id}
    if out is not None:
        body["out_dir"] = str(out)
    httpx.post(peer.api + "/v1/downloads", json=body, timeout=10).raise_for_status()


def wait_progress(peer: PeerProc, content_id: str, fraction: float) -> None:
    def far_enough() -> bool:
        response = httpx.get(f"{peer.api}/v1/downloads/{content_id}", timeout=10)
        if response.status_code == 404:  # not started yet
            return False
        view = response.json()
        return bool(view["bytes_done"] >= fraction * max(view["size"], 1))

    wait_for(far_enough, 30, f"{fraction:.0%} of the download")


def test_a_provider_killed_mid_download_leaves_the_others_to_finish(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    original = write_random(tmp_path / "a" / "share" / "movie.bin", 24 << 20)
    (tmp_path / "b" / "share").mkdir(parents=True)
    shutil.copy(original, tmp_path / "b" / "share" / "movie.bin")
    slow = str(slow_provider_config(tmp_path, 4 << 20))
    a = net.start_peer("a", "--config", slow, tracker=tracker.url)
    net.start_peer("b", "--config", slow, tracker=tracker.url)
    fetcher = net.start_peer("fetcher", tracker=tracker.url)
    content_id = api(a, "/v1/files")["files"][0]["content_id"]

    start_download(fetcher, content_id)
    wait_progress(fetcher, content_id, 0.25)
    a.stop(signal.SIGKILL)
    got = cli("get", content_id, "--api", fetcher.api)
    assert got.returncode == 0, got.stderr
    assert sha256(fetcher.share / "movie.bin") == sha256(original)


def test_the_tracker_killed_mid_download_does_not_stop_it(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    original = write_random(tmp_path / "a" / "share" / "movie.bin", 12 << 20)
    a = net.start_peer(
        "a", "--config", str(slow_provider_config(tmp_path, 4 << 20)), tracker=tracker.url
    )
    fetcher = net.start_peer("fetcher", tracker=tracker.url)
    content_id = api(a, "/v1/files")["files"][0]["content_id"]

    start_download(fetcher, content_id)
    wait_progress(fetcher, content_id, 0.2)
    tracker.stop(signal.SIGKILL)
    got = cli("get", content_id, "--api", fetcher.api)
    assert got.returncode == 0, got.stderr
    assert sha256(fetcher.share / "movie.bin") == sha256(original)


def test_every_provider_gone_fails_with_one_line_and_a_later_get_resumes(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    size = 8 << 20
    original = write_random(tmp_path / "a" / "share" / "album.bin", size)
    slow = str(slow_provider_config(tmp_path, 2 << 20))
    a = net.start_peer("a", "--config", slow, tracker=tracker.url)
    fetcher = net.start_peer("fetcher", tracker=tracker.url)
    content_id = api(a, "/v1/files")["files"][0]["content_id"]

    getting = subprocess.Popen(
        p2pshare_argv("get", content_id, "--api", fetcher.api),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_progress(fetcher, content_id, 0.3)
        a.stop(signal.SIGKILL)
        out, err = getting.communicate(timeout=60)
    finally:
        getting.kill()
    assert getting.returncode == 1
    assert err.startswith("p2pshare: no provider reachable") and len(err.splitlines()) == 1
    partial = fetcher.share / ".album.bin.p2pshare-part"
    assert partial.exists()
    assert not (fetcher.share / "album.bin").exists()
    record = json.loads((fetcher.data / "downloads" / f"{content_id}.json").read_text())
    kept = PieceSet.from_bytes(size // PIECE, base64.b64decode(record["have"]))
    assert len(kept) > 0

    fast = tmp_path / "fast.toml"
    fast.write_text(f"[peer]\npiece_size = {PIECE}\n")
    a = net.start_peer("a", "--config", str(fast), tracker=tracker.url)  # back, at full speed
    got = cli("get", content_id, "--api", fetcher.api)
    assert got.returncode == 0, got.stderr
    assert sha256(fetcher.share / "album.bin") == sha256(original)
    assert api(a, "/v1/status")["pieces_served"] <= size // PIECE - len(kept)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_clearly_and_the_download_resumes_after_space_is_freed(
    net: LocalNetwork, tmp_path: Path, small_disk: Path
) -> None:
    original = write_random(tmp_path / "a" / "share" / "big.bin", 4 << 20)
    tracker = net.start_tracker()
    a = net.start_peer("a", tracker=tracker.url)
    fetcher = net.start_peer("fetcher", tracker=tracker.url)
    content_id = api(a, "/v1/files")["files"][0]["content_id"]

    full = cli("get", content_id, "-o", str(small_disk), "--api", fetcher.api)
    assert full.returncode == 1
    # the free space is checked before the first byte (a disk that fills up later
    # fails with "disk full while writing ...": see partial.py)
    assert "not enough free space" in full.stderr and len(full.stderr.splitlines()) == 1
    assert not (small_disk / "big.bin").exists()

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    got = cli("get", content_id, "-o", str(small_disk), "--api", fetcher.api)
    assert got.returncode == 0, got.stderr
    assert sha256(small_disk / "big.bin") == sha256(original)

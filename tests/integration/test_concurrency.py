"""Many transfers at once: every download verified, limits respected."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from p2pshare.localnet import LocalNetwork, PeerProc, wait_for
from tests.integration.helpers import api, sha256, write_random

pytestmark = pytest.mark.integration


def all_complete(peers: list[PeerProc], expected: int) -> bool:
    views = [d for p in peers for d in api(p, "/v1/downloads")]
    failed = [d for d in views if d["state"] == "failed"]
    assert not failed, failed[0]["error"]
    return len(views) == expected and all(d["state"] == "complete" for d in views)


def test_ten_peers_run_fifty_downloads_at_once(net: LocalNetwork, tmp_path: Path) -> None:
    tracker = net.start_tracker()
    names = [f"peer{i}" for i in range(10)]
    digests: dict[str, str] = {}
    for i, name in enumerate(names):
        for j in range(5):
            path = write_random(tmp_path / name / "share" / f"file-{i}-{j}.bin", (1 << 20) + j)
            digests[path.name] = sha256(path)
    peers = [net.start_peer(name, tracker=tracker.url) for name in names]
    ids = {f["name"]: f["content_id"] for p in peers for f in api(p, "/v1/files")["files"]}

    # each peer fetches five files held by the next peers, all at once
    for i, peer in enumerate(peers):
        for k in range(5):
            wanted = f"file-{(i + 1 + k) % 10}-{k}.bin"
            out = str(tmp_path / "got" / peer.name)
            response = httpx.post(
                peer.api + "/v1/downloads", json={"content_id": ids[wanted], "out_dir": out}
            )
            assert response.status_code == 202, response.text
    wait_for(lambda: all_complete(peers, 50), 120, "fifty downloads")
    got = list((tmp_path / "got").rglob("*.bin"))
    assert len(got) == 50
    for path in got:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digests[path.name]


def test_a_provider_at_its_upload_limit_makes_others_wait_not_fail(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    # three different files, so the downloaders cannot trade pieces among themselves
    originals = [
        write_random(tmp_path / "seed" / "share" / f"popular-{i}.bin", 1 << 20) for i in range(3)
    ]
    # one upload at a time, slowly: a request of a few pieces holds the only slot for
    # about a second, so the other two downloaders are turned away for long enough
    # that their status shows it at some poll (at 4 MiB/s the busy spells were a few
    # tens of milliseconds and a poll could miss them all)
    config = tmp_path / "one-upload.toml"
    config.write_text(
        f"[peer]\npiece_size = {64 << 10}\nmax_uploads = 1\nmax_upload_rate = {512 << 10}\n"
    )
    seed = net.start_peer("seed", "--config", str(config), tracker=tracker.url)
    fetchers = [net.start_peer(f"f{i}", tracker=tracker.url) for i in range(3)]
    ids = {f["name"]: f["content_id"] for f in api(seed, "/v1/files")["files"]}
    wanted = [ids[p.name] for p in originals]
    for f, content_id in zip(fetchers, wanted, strict=True):
        httpx.post(f.api + "/v1/downloads", json={"content_id": content_id}).raise_for_status()
    saw_busy = False

    def done() -> bool:
        nonlocal saw_busy
        views = [api(f, f"/v1/downloads/{c}") for f, c in zip(fetchers, wanted, strict=True)]
        saw_busy |= any(
            (v["why_stalled"] or "").startswith("all providers are busy") for v in views
        )
        return all_complete(fetchers, 3)

    wait_for(done, 60, "three downloads from a provider that serves one at a time")
    assert saw_busy
    for f, original in zip(fetchers, originals, strict=True):
        assert sha256(f.share / original.name) == sha256(original)


def test_the_download_rate_limit_holds(net: LocalNetwork, tmp_path: Path) -> None:
    tracker = net.start_tracker()
    size, rate = 3 << 20, 1 << 20
    original = write_random(tmp_path / "seed" / "share" / "limited.bin", size)
    config = tmp_path / "slow-down.toml"
    config.write_text(f"[peer]\nmax_download_rate = {rate}\n")
    seed = net.start_peer("seed", tracker=tracker.url)
    fetcher = net.start_peer("fetcher", "--config", str(config), tracker=tracker.url)
    content_id = api(seed, "/v1/files")["files"][0]["content_id"]
    got = httpx.post(fetcher.api + "/v1/downloads", json={"content_id": content_id})
    got.raise_for_status()
    wait_for(lambda: all_complete([fetcher], 1), 30, "the limited download")
    view = api(fetcher, f"/v1/downloads/{content_id}")
    # a quarter second of burst, then 1 MiB/s: 3 MiB cannot take much under 2.75 s
    assert view["seconds"] >= (size - rate / 4) / rate - 0.25
    assert sha256(fetcher.share / "limited.bin") == sha256(original)

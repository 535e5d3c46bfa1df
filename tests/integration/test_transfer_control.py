"""Pausing, resuming and cancelling downloads; the live streams the web page reads
(search hits as they arrive, status and download changes); the page itself."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from p2pshare.localnet import LocalNetwork, PeerProc, TrackerProc, wait_for
from p2pshare.peer.transfer.partial import partial_path
from tests.integration.helpers import api, cli, sha256, wait_registered, write_random

pytestmark = pytest.mark.integration


def _slow_pair(
    net: LocalNetwork, tmp_path: Path, size: int, rate: int = 1 << 20
) -> tuple[PeerProc, PeerProc, str]:
    """A seed of one file and a fetcher limited to ``rate`` bytes/s; the file's content id."""
    tracker = net.start_tracker()
    write_random(tmp_path / "seed" / "share" / "slow.bin", size)
    config = tmp_path / "slow.toml"
    config.write_text(f"[peer]\nmax_download_rate = {rate}\n")
    seed = net.start_peer("seed", tracker=tracker.url)
    fetcher = net.start_peer("fetcher", "--config", str(config), tracker=tracker.url)
    wait_registered(seed)
    content_id = api(seed, "/v1/files")["files"][0]["content_id"]
    return seed, fetcher, content_id


def _post(peer: PeerProc, path: str, body: dict[str, Any] | None = None) -> Any:
    answer = httpx.post(peer.api + path, json=body, timeout=10)
    answer.raise_for_status()
    return answer.json()


def _sse(peer: PeerProc, path: str, **params: Any) -> Iterator[tuple[str, Any]]:
    with httpx.stream("GET", peer.api + path, params=params, timeout=10) as response:
        response.raise_for_status()
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                yield event, json.loads(line[6:])


def test_pause_keeps_the_partial_file_across_a_restart_and_resume_finishes_from_it(
    net: LocalNetwork, tmp_path: Path
) -> None:
    # 16 s for the whole file: the pause (a CLI process) lands long before the end
    seed, fetcher, cid = _slow_pair(net, tmp_path, 4 << 20, rate=256 << 10)
    _post(fetcher, "/v1/downloads", {"content_id": cid})
    wait_for(lambda: api(fetcher, f"/v1/downloads/{cid}")["bytes_done"] > 0, 20, "progress")
    paused = cli("pause", cid[:12], "--api", fetcher.api)
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("paused: slow.bin")
    assert partial_path(fetcher.share / "slow.bin").exists()
    view = api(fetcher, f"/v1/downloads/{cid}")
    assert view["state"] == "paused" and view["rate"] == 0
    kept = view["bytes_done"]
    have = base64.b64decode(view["have"])
    assert 0 < sum(bin(b).count("1") for b in have) == view["pieces_done"]

    # a restart of the peer keeps it paused, with what it holds (restarted without the
    # rate limit, so the resume finishes at once)
    fetcher.stop()
    tracker = next(p for p in net.procs if isinstance(p, TrackerProc))
    config = str(tmp_path / "fast.toml")
    (tmp_path / "fast.toml").write_text("[peer]\n")
    fetcher = net.start_peer("fetcher", "--config", config, tracker=tracker.url)
    view = api(fetcher, f"/v1/downloads/{cid}")
    assert (view["state"], view["name"], view["bytes_done"]) == ("paused", "slow.bin", kept)
    wait_registered(fetcher)

    result = cli("resume", cid[:12], "--api", fetcher.api)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: api(fetcher, f"/v1/downloads/{cid}")["state"] == "complete", 30, "the resume")
    done = api(fetcher, f"/v1/downloads/{cid}")
    assert sha256(fetcher.share / "slow.bin") == sha256(seed.share / "slow.bin")
    assert done["received"] <= (4 << 20) - kept + (1 << 20)  # resumed, not fetched again
    assert sum(done["delivered"].values()) >= done["received"]
    assert list(done["delivered"]) == [seed.address]


def test_cancel_stops_the_download_and_deletes_the_partial_file(
    net: LocalNetwork, tmp_path: Path
) -> None:
    _, fetcher, cid = _slow_pair(net, tmp_path, 8 << 20)
    _post(fetcher, "/v1/downloads", {"content_id": cid})
    wait_for(lambda: api(fetcher, f"/v1/downloads/{cid}")["bytes_done"] > 0, 20, "progress")
    result = cli("cancel", cid, "--api", fetcher.api)
    assert result.returncode == 0, result.stderr
    view = api(fetcher, f"/v1/downloads/{cid}")
    assert view["state"] == "cancelled"
    assert not partial_path(fetcher.share / "slow.bin").exists()
    assert not list((fetcher.data / "downloads").glob("*.json"))
    again = cli("cancel", cid, "--api", fetcher.api)
    assert again.returncode == 2 and "nothing to cancel" in again.stderr


def test_search_hits_stream_in_by_source_and_the_live_status_follows_a_download(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    write_random(tmp_path / "seed" / "share" / "holiday photos.zip", 300_000)
    seed = net.start_peer("seed", tracker=tracker.url)
    fetcher = net.start_peer("fetcher", tracker=tracker.url)
    wait_registered(seed)
    wait_registered(fetcher)

    events = list(_sse(fetcher, "/v1/search/stream", q="holiday", timeout=0.5))
    assert events[-1][0] == "done"
    sources = [(e["source"], e["state"]) for kind, e in events if kind == "hits" and e["state"]]
    assert sources[0] == ("local", "ok") and ("tracker", "ok") in sources
    hits = [h for kind, e in events if kind == "hits" for h in e["hits"]]
    assert {h["name"] for h in hits} == {"holiday photos.zip"}
    bad = httpx.get(fetcher.api + "/v1/search/stream", params={"q": " "})
    assert bad.status_code == 422

    cid = hits[0]["content_id"]
    _post(fetcher, "/v1/downloads", {"content_id": cid})
    states = []
    for kind, doc in _sse(fetcher, "/v1/status/events"):
        if kind == "status":
            assert doc["peer_id"] and "downloads" not in doc
        elif kind == "download":
            states.append(doc["state"])
            if doc["state"] == "complete":
                assert base64.b64decode(doc["have"]) == b"\x80"  # its one piece verified
                break
    assert states[-1] == "complete"


def test_the_page_is_served_with_a_strict_content_security_policy(
    net: LocalNetwork,
) -> None:
    peer = net.start_peer("p", tracker="")
    page = httpx.get(peer.api + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script" in page.text and "<script>" not in page.text  # no inline script
    for name in ("app.js", "logic.js", "style.css"):
        assert httpx.get(f"{peer.api}/web/{name}").status_code == 200
    assert httpx.get(f"{peer.api}/web/secret.txt").status_code == 404
    # the page's own files obey the Host gate like every route
    rebound = {"Host": "attacker.example:" + peer.api.rsplit(":", 1)[1]}
    assert httpx.get(peer.api + "/", headers=rebound).status_code == 403

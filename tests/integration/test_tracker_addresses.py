"""The tracker dials registered addresses back (real tracker, real peers, 127.0.0.1):
only addresses that answer as their registrant are handed out, and a live peer's
address is not taken over by a stranger's registration."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from p2pshare.localnet import LocalNetwork, wait_for
from tests.integration.helpers import cli

pytestmark = pytest.mark.integration


def heartbeat(url: str, reg: dict[str, str]) -> dict[str, object]:
    r = httpx.post(
        f"{url}/v1/peers/{reg['peer_id']}/heartbeat",
        headers={"Authorization": f"Bearer {reg['token']}"},
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def settled(url: str, reg: dict[str, str]) -> dict[str, object]:
    answer: dict[str, object] = {}

    def done() -> bool:
        answer.update(heartbeat(url, reg))
        return answer["reachable"] is not None

    wait_for(done, 15, "the dial-back to settle")
    return answer


def providers(url: str, name: str) -> set[str]:
    hits = httpx.get(f"{url}/v1/search", params={"q": name}).json()["hits"]
    return {p["address"] for h in hits for p in h["providers"]}


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 where nothing listens (bound, never listening)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def test_a_forged_registration_neither_evicts_a_live_peer_nor_gets_handed_out(
    net: LocalNetwork, tmp_path: Path
) -> None:
    tracker = net.start_tracker()
    (tmp_path / "alice" / "share").mkdir(parents=True)
    (tmp_path / "alice" / "share" / "holiday photos.zip").write_bytes(b"x" * 1000)
    alice = net.start_peer(
        "alice", tracker=tracker.url, env={"P2PSHARE_PEER_HEARTBEAT_SECONDS": "0.3"}
    )
    wait_for(lambda: alice.address in providers(tracker.url, "holiday"), 15, "alice handed out")
    # the peer's status says what the tracker found (from its heartbeat answers)
    wait_for(
        lambda: "yes" in cli("status", "--api", alice.api).stdout,
        15,
        "alice to know it is reachable",
    )
    shown = cli("status", "--api", alice.api).stdout
    assert f"reachable from the tracker: yes ({alice.address} answered as this peer)" in shown

    forged_files = [{"content_id": "ab" * 32, "name": "holiday fake.zip", "size": 1}]
    for _ in range(2):  # each waits out the dial-back's two retries
        forged = httpx.post(
            f"{tracker.url}/v1/peers", json={"address": alice.address, "files": forged_files}
        ).json()
        state = settled(tracker.url, forged)
        assert state["reachable"] is False
        assert "answered as the peer registered there before you" in str(state["reachability"])
    assert providers(tracker.url, "holiday") == {alice.address}
    hits = httpx.get(f"{tracker.url}/v1/search", params={"q": "holiday"}).json()["hits"]
    assert [h["name"] for h in hits] == ["holiday photos.zip"]


def test_an_address_where_no_peer_answers_is_not_handed_out_and_says_why(
    net: LocalNetwork, closed_port: int
) -> None:
    tracker = net.start_tracker()
    port = closed_port
    files = [{"content_id": "cd" * 32, "name": "reflect me.iso", "size": 1}]
    reg = httpx.post(
        f"{tracker.url}/v1/peers", json={"address": f"127.0.0.1:{port}", "files": files}
    )
    assert reg.status_code == 201 and reg.json()["seen_from"] == "127.0.0.1"
    state = settled(tracker.url, reg.json())
    assert state["reachable"] is False
    assert f"port {port} closed" in str(state["reachability"])
    assert providers(tracker.url, "reflect") == set()
    assert httpx.get(f"{tracker.url}/v1/files/{'cd' * 32}/providers").status_code == 404
    joined = httpx.post(f"{tracker.url}/v1/peers", json={"address": "127.0.0.1:9"}).json()
    assert joined["neighbours"] == []

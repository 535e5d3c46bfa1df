"""The tracker dials registered addresses back (in process, with a stand-in dial):
an address is handed out, or taken over, only when it answers as its registrant."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from p2pshare.core.reachability import Answer
from p2pshare.tracker import dial_back
from p2pshare.tracker.app import create_app, with_hot_routes
from p2pshare.tracker.registry import SqliteRegistry

ADDRESS = "10.0.0.1:8461"


def cid(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


class Network:
    """Who answers Hello where: address -> peer id (None: connection refused)."""

    def __init__(self) -> None:
        self.at: dict[str, str | None] = {}
        self.dialled: list[str] = []

    async def dial(self, address: str) -> Answer:
        self.dialled.append(address)
        await asyncio.sleep(0)
        peer_id = self.at.get(address)
        return Answer(failure="refused") if peer_id is None else Answer(peer_id=peer_id)


@pytest.fixture
def network(monkeypatch):
    monkeypatch.setattr(dial_back, "RETRY_DELAYS", (0.01, 0.01))
    return Network()


@pytest.fixture(params=["fastapi", "hot-routes"])
async def tracker(request, tmp_path, network):
    registry = SqliteRegistry(tmp_path / "t.db", lease_seconds=60)
    app = create_app(registry, neighbour_sample=8, dial=network.dial)
    asgi = with_hot_routes(app) if request.param == "hot-routes" else app

    def client(host: str = "192.0.2.50") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=asgi, client=(host, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://tracker")

    yield client
    await app.state.address_check.close()
    registry.close()


async def join(http, address=ADDRESS, files=(), **extra):
    body = {"address": address, "files": [*files], **extra}
    r = await http.post("/v1/peers", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def a_file(n: int, name: str) -> dict[str, object]:
    return {"content_id": cid(n), "name": name, "size": 1}


async def settled(http, peer) -> dict[str, object]:
    """The heartbeat answer once the dial-back is done (polled, with a deadline)."""
    for _ in range(500):
        r = await http.post(
            f"/v1/peers/{peer['peer_id']}/heartbeat",
            headers={"Authorization": f"Bearer {peer['token']}"},
        )
        assert r.status_code == 200, r.text
        if r.json()["reachable"] is not None:
            return r.json()  # type: ignore[no-any-return]
        await asyncio.sleep(0.01)
    raise AssertionError("the dial-back never settled")


async def providers(http, n: int) -> list[str]:
    r = await http.get(f"/v1/files/{cid(n)}/providers")
    return [p["peer_id"] for p in r.json()["providers"]] if r.status_code == 200 else []


async def test_a_registration_is_handed_out_once_its_address_answers_as_it(tracker, network):
    async with tracker() as http:
        me = await join(http, files=[a_file(1, "song.flac")])
        assert me["seen_from"] == "192.0.2.50"
        assert me["reachable"] is None and "dialling" in me["reachability"]
        network.at[ADDRESS] = me["peer_id"]
        state = await settled(http, me)
        assert state["reachable"] is True and "answered as this peer" in state["reachability"]
        assert await providers(http, 1) == [me["peer_id"]]
        hits = (await http.get("/v1/search", params={"q": "song"})).json()["hits"]
        assert [h["content_id"] for h in hits] == [cid(1)]


async def test_an_address_that_does_not_answer_is_never_handed_out(tracker, network):
    """Reflection (issue 14): any HOST:PORT was handed out, and the network dialled it."""
    async with tracker() as http:
        victim = "198.51.100.9:443"
        me = await join(http, victim, files=[a_file(1, "bait.iso")])
        state = await settled(http, me)
        assert state["reachable"] is False and "port 443 closed" in state["reachability"]
        assert await providers(http, 1) == []
        assert (await http.get("/v1/search", params={"q": "bait"})).json()["hits"] == []
        other = await join(http, "10.0.0.2:1")
        assert other["neighbours"] == []


async def test_registering_a_live_peers_address_does_not_evict_it(tracker, network):
    """Issue 14 item 2: one unauthenticated registration removed a peer from the index."""
    async with tracker() as http:
        victim = await join(http, files=[a_file(1, "victim.txt")])
        network.at[ADDRESS] = victim["peer_id"]
        assert (await settled(http, victim))["reachable"] is True
    async with tracker("203.0.113.66") as http:
        attacker = await join(http, files=[a_file(2, "fake.txt")])
        state = await settled(http, attacker)
        assert state["reachable"] is False
        assert "answered as the peer registered there before you" in state["reachability"]
        for _ in range(15):  # the attack repeated
            await settled(http, await join(http))
        assert await providers(http, 1) == [victim["peer_id"]]
        assert await providers(http, 2) == []
        assert (await settled(http, victim))["reachable"] is True  # still registered


async def test_a_restarted_peer_takes_its_address_back_by_answering_as_the_new_registration(
    tracker, network
):
    async with tracker() as http:
        before = await join(http, files=[a_file(1, "a.txt")])
        network.at[ADDRESS] = before["peer_id"]
        await settled(http, before)
        after = await join(http, files=[a_file(1, "a.txt")])
        network.at[ADDRESS] = after["peer_id"]  # the restarted peer answers with its new id
        assert (await settled(http, after))["reachable"] is True
        assert await providers(http, 1) == [after["peer_id"]]
        r = await http.post(
            f"/v1/peers/{before['peer_id']}/heartbeat",
            headers={"Authorization": f"Bearer {before['token']}"},
        )
        assert r.status_code == 404


async def test_the_old_token_or_a_silent_old_registrant_lets_an_address_go(tracker, network):
    async with tracker() as http:
        old = await join(http, files=[a_file(1, "a.txt")])
        network.at[ADDRESS] = old["peer_id"]
        await settled(http, old)
        previous = {"peer_id": old["peer_id"], "token": old["token"]}
        new = await join(http, files=[a_file(1, "a.txt")], previous=previous)
        assert await providers(http, 1) == []  # the old one is gone at once
        network.at[ADDRESS] = new["peer_id"]
        await settled(http, new)
        assert await providers(http, 1) == [new["peer_id"]]
        # the holder stopped answering (its port closed): a newcomer's dial-back frees it
        network.at[ADDRESS] = None
        third = await join(http)
        assert (await settled(http, third))["reachable"] is False
        assert await providers(http, 1) == []


async def test_a_loopback_address_from_another_machine_is_refused_without_a_dial(tracker, network):
    async with tracker("203.0.113.7") as http:
        me = await join(http, "127.0.0.1:8461")
        state = await settled(http, me)
        assert state["reachable"] is False
        assert 'advertise = "203.0.113.7:8461"' in str(state["reachability"])
        assert network.dialled == []


async def test_an_unreachable_peer_is_dialled_again_when_it_heartbeats(
    tracker, network, monkeypatch
):
    """A peer that opened its port (or read its new id after the last retry) becomes
    reachable without registering again."""
    monkeypatch.setattr(dial_back, "RECHECK_SECONDS", 0.0)
    async with tracker() as http:
        me = await join(http, files=[a_file(1, "late.txt")])
        assert (await settled(http, me))["reachable"] is False
        network.at[ADDRESS] = me["peer_id"]
        for _ in range(500):
            if (await settled(http, me))["reachable"]:
                break
            await asyncio.sleep(0.01)
        assert await providers(http, 1) == [me["peer_id"]]


async def test_one_address_cannot_make_the_tracker_dial_at_the_rate_it_registers(
    tracker, network, monkeypatch
):
    """Reflection through the tracker itself: each registration is a dial-back."""
    monkeypatch.setattr(dial_back, "RECHECK_SECONDS", 3600.0)
    # no refill while the test runs, however slowly (at 1/s a loaded machine earned one)
    monkeypatch.setattr(dial_back, "DIALS_PER_SECOND", 1e-6)
    async with tracker("203.0.113.66") as http:
        victim = "198.51.100.9:443"
        states = []
        for _ in range(dial_back.DIAL_BURST + 4):
            me = await join(http, victim)
            states.append((await settled(http, me))["reachability"])
        assert network.dialled.count(victim) == dial_back.DIAL_BURST
        assert all("too many registrations" in str(s) for s in states[dial_back.DIAL_BURST :])
    async with tracker("192.0.2.1") as http:  # another address is dialled as usual
        await settled(http, await join(http, victim))
        assert network.dialled.count(victim) == dial_back.DIAL_BURST + 1

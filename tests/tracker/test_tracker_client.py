"""TrackerClient against the app in process, and its translation of failures."""

from __future__ import annotations

import hashlib
import socket

import httpx
import pytest

from p2pshare.errors import (
    NotFound,
    PermissionDenied,
    RemoteError,
    TimedOut,
    Unreachable,
    UsageError,
)
from p2pshare.tracker.app import create_app
from p2pshare.tracker.client import TrackerClient
from p2pshare.tracker.models import FileEntry, ProvidersResponse, RegisterResponse
from p2pshare.tracker.registry import SqliteRegistry


def cid(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


@pytest.fixture
async def client(tmp_path):
    registry = SqliteRegistry(tmp_path / "t.db", lease_seconds=60)
    app = create_app(registry)
    async with TrackerClient("http://tracker/", transport=httpx.ASGITransport(app=app)) as c:
        yield c
    registry.close()


def mock(handler) -> TrackerClient:
    return TrackerClient("http://tracker", transport=httpx.MockTransport(handler))


async def test_a_peer_session_round_trip(client):
    files = [FileEntry(content_id=cid(1), name="dir/Linux Mint.iso", size=3)]
    reg = await client.register("127.0.0.1:9", files)
    assert isinstance(reg, RegisterResponse) and reg.lease_seconds == 60
    assert (await client.heartbeat(reg.peer_id, reg.token)).lease_seconds == 60
    [hit] = await client.search("mint")
    assert hit.content_id == cid(1) and hit.providers[0].peer_id == reg.peer_id
    prov = await client.providers(cid(1))
    assert isinstance(prov, ProvidersResponse) and prov.name == "dir/Linux Mint.iso"
    assert [p.address for p in await client.peers()] == ["127.0.0.1:9"]
    more = [FileEntry(content_id=cid(2), name="b.txt", size=1)]
    assert (await client.patch_files(reg.peer_id, reg.token, add=more)).files == 2
    assert (await client.replace_files(reg.peer_id, reg.token, more)).files == 1
    await client.logout(reg.peer_id, reg.token)
    with pytest.raises(NotFound):
        await client.heartbeat(reg.peer_id, reg.token)


async def test_wrong_token_is_permission_denied(client):
    reg = await client.register("127.0.0.1:9", [])
    with pytest.raises(PermissionDenied, match="token"):
        await client.logout(reg.peer_id, "forged")


async def test_unknown_content_id_is_not_found(client):
    with pytest.raises(NotFound):
        await client.providers(cid(5))


async def test_bad_input_is_usage_error_with_the_servers_message(client):
    with pytest.raises(UsageError, match="the query is empty"):
        await client.search("  ")


async def test_connection_refused_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with TrackerClient(f"http://127.0.0.1:{port}") as c:
        with pytest.raises(Unreachable) as info:
            await c.peers()
    assert isinstance(info.value.__cause__, httpx.ConnectError)


async def test_timeout_is_timed_out():
    def handler(request):
        raise httpx.ReadTimeout("slow", request=request)

    async with mock(handler) as c:
        with pytest.raises(TimedOut) as info:
            await c.peers()
    assert isinstance(info.value.__cause__, httpx.TimeoutException)


async def test_server_error_is_remote_error():
    async with mock(lambda r: httpx.Response(503, text="busy")) as c:
        with pytest.raises(RemoteError, match="503"):
            await c.search("x")


async def test_malformed_answer_is_remote_error():
    async with mock(lambda r: httpx.Response(200, text="<html>")) as c:
        with pytest.raises(RemoteError, match="malformed"):
            await c.peers()
    async with mock(lambda r: httpx.Response(200, json={"peers": "nope"})) as c:
        with pytest.raises(RemoteError):
            await c.peers()


async def test_requests_carry_the_bearer_token():
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"lease_seconds": 5})

    async with mock(handler) as c:
        await c.heartbeat("p1", "tok")
    assert seen == ["Bearer tok"]


async def test_registering_again_with_the_previous_token_replaces_the_registration(client):
    first = await client.register("127.0.0.1:9", [])
    again = await client.register("127.0.0.1:9", [], previous=(first.peer_id, first.token))
    assert [p.peer_id for p in await client.peers()] == [again.peer_id]
    with pytest.raises(PermissionDenied):
        await client.register("127.0.0.1:9", [], previous=(again.peer_id, "not the token"))


async def test_a_newer_trackers_extra_answer_fields_are_ignored():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"lease_seconds": 60, "some_new_field": [1, 2]})

    async with mock(handler) as c:
        assert (await c.heartbeat("p", "t")).lease_seconds == 60

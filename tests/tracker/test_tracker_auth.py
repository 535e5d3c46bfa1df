"""A private network's tracker in process: every route but /healthz needs proof of the
key, on the FastAPI app and on the fast path alike."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from p2pshare.core.auth import HEADER, HTTP_PURPOSE, CallSigner, http_call
from p2pshare.errors import Unauthenticated
from p2pshare.tracker.app import create_app, with_hot_routes
from p2pshare.tracker.client import TrackerClient
from p2pshare.tracker.client_auth import TrackerAuth
from p2pshare.tracker.registry import SqliteRegistry
from tests.http_probe import requests_of

KEY = "p2pk-" + "t" * 43
WRONG = "p2pk-" + "w" * 43


@pytest.fixture(params=["fastapi", "hot-routes"])
async def asgi(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[object]:
    registry = SqliteRegistry(tmp_path / "t.db", lease_seconds=60)
    app = create_app(registry, network_key=KEY)
    yield with_hot_routes(app) if request.param == "hot-routes" else app
    registry.close()


def client(asgi: object, key: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=asgi),  # type: ignore[arg-type]
        base_url="http://tracker",
        auth=TrackerAuth(key) if key else None,
    )


def refused(r: httpx.Response) -> bool:
    return r.status_code == 401 and isinstance(r.json().get("error"), str)


async def test_keyed_clients_use_the_tracker(asgi: object) -> None:
    async with TrackerClient("http://tracker", transport=httpx.ASGITransport(app=asgi),  # type: ignore[arg-type]
                             network_key=KEY) as c:  # fmt: skip
        reg = await c.register("10.0.0.1:8461", [])
        await c.heartbeat(reg.peer_id, reg.token)
        assert await c.search("anything") == []
        assert [p.address for p in await c.peers()] == ["10.0.0.1:8461"]


@pytest.mark.parametrize("key", [None, WRONG], ids=["no key", "wrong key"])
async def test_a_client_without_the_key_is_refused(asgi: object, key: str | None) -> None:
    async with TrackerClient("http://tracker", transport=httpx.ASGITransport(app=asgi),  # type: ignore[arg-type]
                             network_key=key) as c:  # fmt: skip
        with pytest.raises(Unauthenticated, match="refused us"):
            await c.register("10.0.0.1:8461", [])
        with pytest.raises(Unauthenticated):
            await c.search("anything")


async def test_every_route_but_healthz_refuses_strangers_stale_and_replayed_requests(
    asgi: object,
) -> None:
    async with client(asgi, KEY) as keyed, client(asgi) as plain, client(asgi, WRONG) as wrong:
        spec = (await keyed.get("/openapi.json")).json()
        # /v1/events is a stream: tests/integration/test_private_network.py probes it
        probes = [p for p in requests_of(spec) if p[1] not in ("/healthz", "/v1/events")]
        assert len(probes) >= 12
        stale = CallSigner(KEY, HTTP_PURPOSE)
        for method, path, query in probes:
            body = b"{}" if method in ("POST", "PUT", "PATCH") else None
            for c in (plain, wrong):
                r = await c.request(method, path, params=query, content=body)
                assert refused(r), (method, path, r.status_code, r.text)
            url = httpx.URL(path, params=query)
            proof = stale.sign(
                http_call(method, url.path, url.query.decode()),
                now=time.time() - 300,
                nonce=os.urandom(16),
                body=body or b"",
            )
            r = await plain.request(method, path, params=query, content=body,
                                    headers={HEADER: proof})  # fmt: skip
            assert refused(r), (method, path, "stale")
            request = keyed.build_request(method, path, params=query, content=body)
            first = await keyed.send(request)
            assert first.status_code != 401, (method, path, first.text)
            again = await plain.send(request)  # the same headers: a replay
            assert refused(again), (method, path, "replay")
            assert "replayed" in again.json()["error"]
        health = await plain.get("/healthz")
        assert health.status_code == 200


async def test_a_proof_does_not_carry_over_to_another_body_or_query(asgi: object) -> None:
    async with client(asgi, KEY) as keyed, client(asgi) as plain:
        request = keyed.build_request("GET", "/v1/search", params={"q": "a"})
        await keyed.send(request)  # signs it
        other = plain.build_request("GET", "/v1/search", params={"q": "b"})
        other.headers[HEADER] = request.headers[HEADER]
        assert refused(await plain.send(other))
        post = keyed.build_request("POST", "/v1/peers", json={"address": "10.0.0.1:1", "files": []})
        await keyed.send(post)
        forged = plain.build_request(
            "POST", "/v1/peers", json={"address": "10.6.6.6:1", "files": []}
        )
        forged.headers[HEADER] = post.headers[HEADER]
        r = await plain.send(forged)
        assert refused(r) and "wrong network key" in r.json()["error"]


def test_the_tracker_client_loads_no_server_side_auth():
    """Peers and the CLI sign requests (``client_auth``); the middleware that checks
    them (``auth``) is the tracker's alone."""
    import subprocess
    import sys

    probe = "import sys, p2pshare.tracker.client; print('p2pshare.tracker.auth' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

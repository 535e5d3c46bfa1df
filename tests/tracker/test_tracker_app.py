"""The tracker's REST API in process (httpx.ASGITransport), with a settable clock."""

from __future__ import annotations

import hashlib

import httpx
import pytest

import p2pshare
from p2pshare.tracker.app import create_app, with_hot_routes
from p2pshare.tracker.registry import SqliteRegistry

LEASE = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def cid(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def file(n: int, name: str, size: int = 10) -> dict[str, object]:
    return {"content_id": cid(n), "name": name, "size": size}


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(params=["fastapi", "hot-routes"])
async def http(request, tmp_path, clock):
    """Every test runs against the FastAPI app alone and behind the fast path that the
    server runs (``with_hot_routes``): both must answer alike."""
    registry = SqliteRegistry(tmp_path / "t.db", lease_seconds=LEASE)
    app = create_app(registry, neighbour_sample=2, clock=clock, max_body=64 << 10)
    asgi = with_hot_routes(app) if request.param == "hot-routes" else app
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://tracker") as client:
        yield client
    registry.close()


async def join(http, address="10.0.0.1:8461", files=()):
    r = await http.post("/v1/peers", json={"address": address, "files": list(files)})
    assert r.status_code == 201, r.text
    return r.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_readable_error(r: httpx.Response, status: int, *fragments: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert "Traceback" not in r.text and 'File "' not in r.text
    for fragment in fragments:
        assert fragment in body["error"]


async def test_register_answers_token_lease_and_neighbours(http):
    for i in range(3):
        await join(http, f"10.0.0.{i}:1")
    reply = await join(http, "10.0.1.1:1", [file(1, "a.iso")])
    assert reply["token"] and reply["peer_id"]
    assert reply["lease_seconds"] == LEASE
    assert len(reply["neighbours"]) == 2
    assert reply["peer_id"] not in {n["peer_id"] for n in reply["neighbours"]}


async def test_search_finds_files_with_providers(http):
    me = await join(http, files=[file(1, "debian-linux-12.iso", 7)])
    r = await http.get("/v1/search", params={"q": "lin iso"})
    assert r.status_code == 200
    assert r.json() == {
        "hits": [
            {
                "content_id": cid(1),
                "name": "debian-linux-12.iso",
                "size": 7,
                "providers": [{"peer_id": me["peer_id"], "address": "10.0.0.1:8461"}],
            }
        ]
    }


async def test_heartbeat_renews_the_lease(http, clock):
    me = await join(http, files=[file(1, "a.iso")])
    clock.now += 50
    r = await http.post(f"/v1/peers/{me['peer_id']}/heartbeat", headers=bearer(me["token"]))
    assert r.status_code == 200 and r.json() == {"lease_seconds": LEASE}
    clock.now += 50
    assert (await http.get(f"/v1/files/{cid(1)}/providers")).status_code == 200


async def test_heartbeat_after_the_lease_ran_out_is_404(http, clock):
    me = await join(http)
    clock.now += LEASE + 1
    r = await http.post(f"/v1/peers/{me['peer_id']}/heartbeat", headers=bearer(me["token"]))
    assert_readable_error(r, 404, "register again")


async def test_expired_peer_disappears_from_search_and_peers(http, clock):
    await join(http, files=[file(1, "a.iso")])
    clock.now += LEASE + 1
    assert (await http.get("/v1/search", params={"q": "a"})).json() == {"hits": []}
    assert (await http.get("/v1/peers")).json() == {"peers": []}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "x"}])
async def test_updates_without_the_right_token_are_403(http, headers):
    me = await join(http, files=[file(1, "a.iso")])
    pid = me["peer_id"]
    calls = [
        http.post(f"/v1/peers/{pid}/heartbeat", headers=headers),
        http.put(f"/v1/peers/{pid}/files", json={"files": []}, headers=headers),
        http.patch(f"/v1/peers/{pid}/files", json={"remove": [cid(1)]}, headers=headers),
        http.delete(f"/v1/peers/{pid}", headers=headers),
    ]
    for call in calls:
        assert_readable_error(await call, 403, "token")
    assert len((await http.get("/v1/search", params={"q": "a"})).json()["hits"]) == 1


async def test_another_peers_token_cannot_touch_a_registration(http):
    victim = await join(http, "10.0.0.1:1", [file(1, "a.iso")])
    thief = await join(http, "10.0.0.2:1")
    r = await http.delete(f"/v1/peers/{victim['peer_id']}", headers=bearer(thief["token"]))
    assert_readable_error(r, 403)
    r = await http.put(
        f"/v1/peers/{victim['peer_id']}/files", json={"files": []}, headers=bearer(thief["token"])
    )
    assert_readable_error(r, 403)


async def test_put_patch_and_delete_update_the_index(http):
    me = await join(http, files=[file(1, "one.txt")])
    auth = bearer(me["token"])
    url = f"/v1/peers/{me['peer_id']}/files"
    r = await http.put(
        url, json={"files": [file(2, "two.txt"), file(3, "three.txt")]}, headers=auth
    )
    assert r.status_code == 200 and r.json()["files"] == 2
    r = await http.patch(url, json={"add": [file(4, "four.txt")], "remove": [cid(2)]}, headers=auth)
    assert r.status_code == 200 and r.json()["files"] == 2
    names = {
        h["name"] for h in (await http.get("/v1/search", params={"q": "*.txt"})).json()["hits"]
    }
    assert names == {"three.txt", "four.txt"}
    r = await http.delete(f"/v1/peers/{me['peer_id']}", headers=auth)
    assert r.status_code == 204 and r.content == b""
    assert (await http.get("/v1/search", params={"q": "*.txt"})).json() == {"hits": []}


async def test_providers_of_unknown_content_id_is_404(http):
    assert_readable_error(await http.get(f"/v1/files/{cid(9)}/providers"), 404, cid(9))


async def test_providers_of_a_malformed_content_id_is_422(http):
    assert_readable_error(await http.get("/v1/files/xyz/providers"), 422, "content id")


async def test_malformed_json_is_422_with_a_readable_message(http):
    r = await http.post(
        "/v1/peers", content=b'{"address": ', headers={"Content-Type": "application/json"}
    )
    assert_readable_error(r, 422, "malformed JSON")


async def test_bad_fields_are_422_naming_each_field(http):
    bad = {
        "address": "nohost",
        "files": [{"content_id": "ZZ", "name": "../etc/passwd", "size": -1}],
    }
    r = await http.post("/v1/peers", json=bad)
    assert_readable_error(
        r, 422, "address", "files.0.content_id", "files.0.name", "files.0.size", "'..'"
    )


async def test_unknown_fields_are_refused(http):
    r = await http.post("/v1/peers", json={"address": "h:1", "files": [], "admin": True})
    assert_readable_error(r, 422, "admin")


@pytest.mark.parametrize(("q", "why"), [("", "empty"), ("   ", "empty"), ("x" * 300, "longer")])
async def test_empty_or_too_long_query_is_422(http, q, why):
    assert_readable_error(await http.get("/v1/search", params={"q": q}), 422, why)


async def test_missing_query_is_422(http):
    assert_readable_error(await http.get("/v1/search"), 422, "q")


async def test_body_over_the_limit_is_413(http):
    files = [file(i, f"{'n' * 200}{i}.bin") for i in range(400)]
    r = await http.post("/v1/peers", json={"address": "h:1", "files": files})
    assert_readable_error(r, 413, "larger than")


async def test_unknown_route_is_404_json(http):
    assert_readable_error(await http.get("/v2/nothing"), 404)


async def test_healthz(http):
    await join(http, files=[file(1, "a"), file(2, "b")])
    assert (await http.get("/healthz")).json() == {
        "status": "ok",
        "version": p2pshare.__version__,
        "peers": 1,
        "files": 2,
    }


async def test_metrics_is_prometheus_text(http):
    await join(http, files=[file(1, "a")])
    await http.get("/v1/search", params={"q": "a"})
    r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE p2pshare_tracker_requests_total counter" in text
    assert 'route="/v1/search"' in text
    assert "p2pshare_tracker_request_seconds_bucket" in text
    assert "p2pshare_tracker_live_peers 1.0" in text
    assert "p2pshare_tracker_files 1.0" in text


async def test_two_apps_have_separate_metrics(tmp_path):
    registries = [SqliteRegistry(tmp_path / f"{i}.db", lease_seconds=LEASE) for i in range(2)]
    try:
        apps = [create_app(r) for r in registries]
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=apps[0]), base_url="http://a"
        ) as a:
            await a.get("/healthz")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=apps[1]), base_url="http://b"
        ) as b:
            text = (await b.get("/metrics")).text
        assert 'route="/healthz"' not in text
    finally:
        for r in registries:
            r.close()


async def test_openapi_lists_the_routes(http):
    spec = (await http.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/v1/peers"]) == {"get", "post"}
    assert "post" in paths["/v1/peers/{peer_id}/heartbeat"]
    assert set(paths["/v1/peers/{peer_id}/files"]) == {"put", "patch"}
    assert "delete" in paths["/v1/peers/{peer_id}"]
    assert "get" in paths["/v1/search"]
    assert "get" in paths["/v1/files/{content_id}/providers"]
    assert "FileEntry" in spec["components"]["schemas"]


async def test_streamed_body_over_the_limit_is_413(http):
    async def chunks():
        yield b'{"address": "h:1", "files": ['
        for _ in range(100):
            yield b" " * 1024

    r = await http.post("/v1/peers", content=chunks(), headers={"Content-Type": "application/json"})
    assert_readable_error(r, 413, "larger than")

"""The tracker's request limits in process: rate per client address (429 with
Retry-After), sizes of the request target and headers (414, 431)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from p2pshare.core.rate import client_key
from p2pshare.tracker.app import create_app, with_hot_routes
from p2pshare.tracker.limits import MAX_HEADERS, MAX_URL_BYTES, RequestLimits
from p2pshare.tracker.registry import SqliteRegistry
from tests.tracker.test_tracker_app import Clock, assert_readable_error, bearer, join

Client = Callable[[str], httpx.AsyncClient]


@pytest.fixture(params=["fastapi", "hot-routes"])
async def clients(request, tmp_path) -> AsyncIterator[tuple[Client, Clock]]:
    """HTTP clients from given addresses to one tracker app limited to 1 request/s,
    bursts of 3; the limiter's clock is the returned one."""
    registry = SqliteRegistry(tmp_path / "t.db", lease_seconds=60)
    clock = Clock()
    limits = RequestLimits(rate=1, burst=3, clock=clock)
    app = create_app(registry, limits=limits)
    asgi = with_hot_routes(app) if request.param == "hot-routes" else app
    opened: list[httpx.AsyncClient] = []

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=asgi, client=(address, 40000))
        opened.append(httpx.AsyncClient(transport=transport, base_url="http://tracker"))
        return opened[-1]

    yield client, clock
    for c in opened:
        await c.aclose()
    registry.close()


def assert_throttled(r: httpx.Response, retry_after: int) -> None:
    assert_readable_error(r, 429, "too many requests", "per second")
    assert r.headers["retry-after"] == str(retry_after)


async def test_a_client_over_its_rate_gets_429_with_retry_after_on_every_route(clients):
    client, clock = clients
    flood = client("10.0.0.9")
    reg = await join(flood)  # 1 of 3
    beat = await flood.post(f"/v1/peers/{reg['peer_id']}/heartbeat", headers=bearer(reg["token"]))
    assert beat.status_code == 200  # 2 of 3
    assert (await flood.get("/v1/search", params={"q": "x"})).status_code == 200  # 3 of 3
    assert_throttled(await flood.get("/v1/search", params={"q": "x"}), 1)
    assert_throttled(
        await flood.post(f"/v1/peers/{reg['peer_id']}/heartbeat", headers=bearer(reg["token"])), 1
    )
    assert_throttled(await flood.get("/v1/peers"), 1)
    assert_throttled(await flood.post("/v1/peers", json={"address": "10.0.0.9:1"}), 1)
    clock.now += 1.0  # one request's worth of time
    assert (await flood.get("/v1/peers")).status_code == 200
    assert_throttled(await flood.get("/v1/peers"), 1)


async def test_retry_after_is_whole_seconds_and_enough(tmp_path):
    registry = SqliteRegistry(tmp_path / "t.db", lease_seconds=60)
    clock = Clock()
    app = with_hot_routes(
        create_app(registry, limits=RequestLimits(rate=0.25, burst=1, clock=clock))
    )
    transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/v1/search?q=a")).status_code == 200
        clock.now += 0.5
        r = await http.get("/v1/search?q=a")
        assert_throttled(r, 4)  # 3.5 s until a token: rounded up
        clock.now += 3.5
        assert (await http.get("/v1/search?q=a")).status_code == 200
    registry.close()


async def test_another_client_is_served_while_one_is_throttled(clients):
    client, _ = clients
    flood, quiet = client("10.0.0.9"), client("10.0.0.10")
    for _ in range(3):
        await flood.get("/v1/search", params={"q": "x"})
    assert (await flood.get("/v1/search", params={"q": "x"})).status_code == 429
    assert (await quiet.get("/v1/search", params={"q": "x"})).status_code == 200
    assert (await join(quiet))["peer_id"]


async def test_healthz_is_never_throttled(clients):
    client, _ = clients
    monitor = client("10.0.0.9")
    for _ in range(10):
        assert (await monitor.get("/healthz")).status_code == 200
    assert (await monitor.get("/v1/peers")).status_code == 200  # healthz spent nothing


async def test_refused_requests_are_counted_in_the_metrics(clients):
    client, _ = clients
    flood = client("10.0.0.9")
    for _ in range(5):
        await flood.get("/v1/search", params={"q": "x"})
    metrics = (await client("10.0.0.10").get("/metrics")).text
    refused = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("p2pshare_tracker_requests_total") and 'status="429"' in line
    ]
    assert sum(refused) == 2


async def test_no_limit_when_rate_is_zero(tmp_path):
    registry = SqliteRegistry(tmp_path / "t.db", lease_seconds=60)
    app = with_hot_routes(create_app(registry, limits=RequestLimits(rate=0, burst=1)))
    transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for _ in range(50):
            assert (await http.get("/v1/search?q=a")).status_code == 200
    registry.close()


async def test_a_too_long_request_target_is_414(clients):
    client, _ = clients
    http = client("10.0.0.9")
    r = await http.get("/v1/search", params={"q": "a", "pad": "x" * MAX_URL_BYTES})
    assert_readable_error(r, 414, "longer than")
    r = await http.get("/v1/peers/" + "x" * MAX_URL_BYTES)
    assert_readable_error(r, 414, "longer than")


async def test_too_many_headers_is_431(clients):
    client, _ = clients
    http = client("10.0.0.9")
    headers = [(f"x-h{i}", "v") for i in range(MAX_HEADERS + 1)]
    r = await http.get("/v1/search", params={"q": "a"}, headers=headers)
    assert_readable_error(r, 431, "header")


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_clients_are_keyed_by_ipv4_address_or_ipv6_slash_64(host, key):
    assert client_key(host) == key


@pytest.fixture
async def capped(tmp_path) -> AsyncIterator[tuple[Client, Clock]]:
    """A tracker app with small per-address caps: 2 peers, 6 files, 4 files per
    request, 4 files per second."""
    from p2pshare.tracker.limits import FileRate
    from p2pshare.tracker.registry import ClientLimits

    limits = ClientLimits(max_peers_per_client=2, max_files_per_client=6, max_files_per_peer=4)
    registry = SqliteRegistry(tmp_path / "t.db", lease_seconds=60, client_limits=limits)
    clock = Clock()
    app = create_app(registry, file_rate=FileRate(rate=4, burst=4, clock=clock))
    opened: list[httpx.AsyncClient] = []

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        opened.append(httpx.AsyncClient(transport=transport, base_url="http://tracker"))
        return opened[-1]

    yield client, clock
    for c in opened:
        await c.aclose()
    registry.close()


def files(*ns: int) -> list[dict[str, object]]:
    from tests.tracker.test_tracker_app import file

    return [file(n, f"file {n}.bin") for n in ns]


async def test_one_address_cannot_flood_the_index(capped):
    """Issue 14: one address registered 223 peers and 490,000 files in seconds."""
    client, clock = capped
    flood = client("10.0.0.9")
    first = await join(flood, "10.0.0.9:1", files(1, 2, 3))
    r = await flood.post("/v1/peers", json={"address": "10.0.0.9:2", "files": files(4, 5)})
    assert_readable_error(r, 429, "too many files from 10.0.0.9", "4 files added or removed")
    clock.now += 1.0
    await join(flood, "10.0.0.9:2", files(4, 5))
    clock.now += 1.0
    r = await flood.post("/v1/peers", json={"address": "10.0.0.9:3"})
    assert_readable_error(r, 429, "already has 2 live registrations")
    r = await flood.patch(
        f"/v1/peers/{first['peer_id']}/files",
        json={"add": files(6, 7)},
        headers=bearer(first["token"]),
    )
    assert_readable_error(r, 429, "would index 7 files", "at most 6")
    clock.now += 10.0
    r = await flood.put(
        f"/v1/peers/{first['peer_id']}/files",
        json={"files": files(10, 11, 12, 13, 14)},
        headers=bearer(first["token"]),
    )
    assert_readable_error(r, 422, "5 files in one request", "at most 4")
    await join(client("10.0.0.10"), "10.0.0.10:1", files(20, 21, 22, 23))  # another address

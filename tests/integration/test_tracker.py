"""The tracker as a real process on 127.0.0.1 (port 0), over real HTTP."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2pshare.errors import NotFound, PermissionDenied, Unreachable, UsageError
from p2pshare.localnet import LocalNetwork, TrackerProc, p2pshare_argv, wait_for
from p2pshare.tracker.client import TrackerClient
from p2pshare.tracker.models import FileEntry

pytestmark = pytest.mark.integration


def cid(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


@pytest.fixture
def tracker(net: LocalNetwork) -> TrackerProc:
    return net.start_tracker()


async def test_register_search_and_heartbeat_over_http(tracker):
    async with TrackerClient(tracker.url) as client:
        files = [FileEntry(content_id=cid(1), name="isos/debian-12.iso", size=3)]
        reg = await client.register("127.0.0.1:40001", files)
        other = await client.register("127.0.0.1:40002", [])
        assert [n.peer_id for n in other.neighbours] == [reg.peer_id]
        [hit] = await client.search("deb iso")
        assert hit.name == "isos/debian-12.iso"
        assert [p.address for p in hit.providers] == ["127.0.0.1:40001"]
        assert (await client.heartbeat(reg.peer_id, reg.token)).lease_seconds > 0
        assert (await client.providers(cid(1))).providers[0].peer_id == reg.peer_id
        with pytest.raises(PermissionDenied):
            await client.heartbeat(reg.peer_id, other.token)


async def test_killed_tracker_restarted_on_the_same_db_still_knows_its_peers(net):
    first = net.start_tracker()
    async with TrackerClient(first.url) as client:
        reg = await client.register(
            "127.0.0.1:40001", [FileEntry(content_id=cid(7), name="kept.mkv", size=9)]
        )
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL

    second = net.start_tracker(db=first.db)
    async with TrackerClient(second.url) as client:
        assert [h.content_id for h in await client.search("kept")] == [cid(7)]
        await client.heartbeat(reg.peer_id, reg.token)
        assert [p.peer_id for p in await client.peers()] == [reg.peer_id]


async def test_bad_inputs_get_clear_errors_over_the_wire(tracker):
    async with httpx.AsyncClient(base_url=tracker.url) as http:
        r = await http.post(
            "/v1/peers", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 422 and "malformed JSON" in r.json()["error"]
        r = await http.post("/v1/peers", json={"address": "x", "files": []})
        assert r.status_code == 422 and "HOST:PORT" in r.json()["error"]
        r = await http.post("/v1/peers/nobody/heartbeat", headers={"Authorization": "Bearer t"})
        assert r.status_code == 404
        assert "Traceback" not in r.text
    async with TrackerClient(tracker.url) as client:
        with pytest.raises(UsageError, match="empty"):
            await client.search("")
        with pytest.raises(NotFound):
            await client.providers(cid(3))
    assert "Traceback" not in tracker.output()


def test_sigterm_stops_the_tracker_cleanly(net):
    t = net.start_tracker()
    assert httpx.get(t.url + "/healthz").json()["status"] == "ok"
    assert t.stop(signal.SIGTERM) == 0
    assert "Traceback" not in t.output()


def test_sigterm_ends_open_event_streams_instead_of_waiting_for_them(net):
    """An /v1/events subscriber is told the tracker goes: the stop does not wait out the
    5 s grace that in-flight requests get (it used to, for streams that never end)."""
    t = net.start_tracker()
    with httpx.stream("GET", t.url + "/v1/events", timeout=10) as stream:
        assert stream.status_code == 200
        start = time.monotonic()
        assert t.stop(signal.SIGTERM) == 0
        took = time.monotonic() - start
        with contextlib.suppress(httpx.HTTPError):
            for _ in stream.iter_bytes():
                pass  # the stream ends (or the connection drops) once the tracker is gone
    assert took < 4.5, f"the tracker took {took:.1f} s to stop with a subscriber"
    assert "Traceback" not in t.output()


async def test_a_stopped_tracker_is_unreachable(net):
    t = net.start_tracker()
    t.stop()
    async with TrackerClient(t.url, timeout=2) as client:
        with pytest.raises(Unreachable):
            await client.peers()


def test_expired_peers_vanish_without_logout(net):
    t = net.start_tracker(env={"P2PSHARE_TRACKER_LEASE_SECONDS": "5"})
    body = {"address": "127.0.0.1:40001", "files": []}
    assert httpx.post(t.url + "/v1/peers", json=body).status_code == 201
    assert httpx.get(t.url + "/v1/peers").json()["peers"]
    wait_for(
        lambda: httpx.get(t.url + "/v1/peers").json()["peers"] == [],
        15,
        "the lease to run out",
    )


def test_port_in_use_is_one_line_error(tmp_path):
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        argv = p2pshare_argv("tracker", "--port", str(port), "--db", str(tmp_path / "t.db"))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode != 0
    assert "cannot listen" in done.stderr
    assert "Traceback" not in done.stderr


def _server_pid_of_connection(
    conn: http.client.HTTPConnection, server_pids: list[int]
) -> int | None:
    """The pid among ``server_pids`` holding the server end of ``conn``, an established
    loopback TCP connection (an earlier connection from the same client port may linger
    in TIME_WAIT, with no process's socket: it is not the one)."""
    assert conn.sock is not None
    client_port, server_port = conn.sock.getsockname()[1], conn.sock.getpeername()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if (
            int(local.split(":")[1], 16) == server_port
            and int(remote.split(":")[1], 16) == client_port
            and state == "01"  # ESTABLISHED
        ):
            inode = fields[9]
    for pid in server_pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
    return None


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _call(conn: http.client.HTTPConnection, method: str, path: str, token: str = "") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request(method, path, headers=headers)
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def test_workers_share_one_registry(net):
    t = net.start_tracker(env={"P2PSHARE_TRACKER_WORKERS": "2"})
    workers = _children(t.pid)
    assert len(workers) == 2
    files = [{"content_id": cid(1), "name": "w.iso", "size": 1}]
    reg = httpx.post(t.url + "/v1/peers", json={"address": "127.0.0.1:1", "files": files}).json()
    beat = f"/v1/peers/{reg['peer_id']}/heartbeat"
    served_by: set[int | None] = set()
    host, port = t.url.removeprefix("http://").rsplit(":", 1)
    for _ in range(40):  # each on a new connection: the kernel spreads them over the workers
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            assert _call(conn, "POST", beat, reg["token"])[0] == 200
            status, body = _call(conn, "GET", "/v1/search?q=w")
            assert [h["name"] for h in body["hits"]] == ["w.iso"]
            assert _call(conn, "POST", beat, "forged")[0] == 403
            assert conn.sock is not None
            served_by.add(_server_pid_of_connection(conn, workers))
        finally:
            conn.close()
    assert served_by == set(workers)
    assert t.stop(signal.SIGTERM) == 0
    assert "Traceback" not in t.output()


def _scrape(host: str, port: int, workers: list[int]) -> tuple[int | None, str]:
    """``/metrics`` on a new connection: the worker that answered, and the text."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        assert r.status == 200
        assert conn.sock is not None
        return _server_pid_of_connection(conn, workers), r.read().decode()
    finally:
        conn.close()


def _requests_by_route(text: str) -> tuple[dict[str, float], dict[str, float], float]:
    """Requests per route from the counter and from the latency histogram's counts,
    and the live peers gauge, of a ``/metrics`` text."""
    counted: dict[str, float] = {}
    timed: dict[str, float] = {}
    peers = -1.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            route = sample.labels.get("route", "")
            if sample.name == "p2pshare_tracker_requests_total":
                counted[route] = counted.get(route, 0) + sample.value
            elif sample.name == "p2pshare_tracker_request_seconds_count":
                timed[route] = timed.get(route, 0) + sample.value
            elif sample.name == "p2pshare_tracker_live_peers":
                peers = sample.value
    return counted, timed, peers


def test_metrics_of_workers_count_the_whole_tracker(net, tmp_path):
    """With 2 workers, every scrape counts each request once, whichever worker answers."""
    run_dir = tmp_path / "tmp"  # where the supervisor makes its metrics directory
    run_dir.mkdir()
    t = net.start_tracker(env={"P2PSHARE_TRACKER_WORKERS": "2", "TMPDIR": str(run_dir)})
    workers = _children(t.pid)
    assert len(workers) == 2
    files = [{"content_id": f"{n:064x}", "name": f"nothing {n}", "size": 1} for n in range(8)]
    reg = httpx.post(t.url + "/v1/peers", json={"address": "127.0.0.1:1", "files": files}).json()
    beat = f"/v1/peers/{reg['peer_id']}/heartbeat"
    host, port = t.url.removeprefix("http://").rsplit(":", 1)
    served_by: set[int | None] = set()
    rounds = 40
    for _ in range(rounds):  # each on a new connection: the kernel spreads them over the workers
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            assert _call(conn, "POST", beat, reg["token"])[0] == 200
            assert _call(conn, "GET", "/v1/search?q=nothing")[0] == 200
            assert conn.sock is not None
            served_by.add(_server_pid_of_connection(conn, workers))
        finally:
            conn.close()
    assert served_by == set(workers)
    want = {"/v1/peers": 1, "/v1/peers/{peer_id}/heartbeat": rounds, "/v1/search": rounds}
    scrapes_by = dict.fromkeys(workers, 0)
    scrapes = 0
    # until each worker has answered 3 scrapes (the kernel picks one per connection)
    while min(scrapes_by.values()) < 3 and scrapes < 40:
        worker, text = _scrape(host, int(port), workers)
        assert worker in scrapes_by
        scrapes_by[worker] += 1
        counted, timed, peers = _requests_by_route(text)
        # a scrape is counted once answered: this one is not in its own text
        assert counted == {**want, **({"/metrics": scrapes} if scrapes else {})}, worker
        assert timed == counted
        assert peers == 1
        scrapes += 1
    assert min(scrapes_by.values()) >= 3, scrapes_by
    # each worker searched its index once and kept the answer for the others (a worker
    # adds its search counts every half second)
    searches: dict[str, float] = {}

    def all_searches_counted() -> bool:
        searches.clear()
        for family in text_string_to_metric_families(_scrape(host, int(port), workers)[1]):
            for sample in family.samples:
                if sample.name == "p2pshare_tracker_searches_total":
                    searches[sample.labels["answer"]] = sample.value
        return sum(searches.values()) == rounds

    wait_for(all_searches_counted, 10, "both workers' search counts")
    assert searches == {"run": 2, "kept": rounds - 2}
    assert t.stop(signal.SIGTERM) == 0
    assert list(run_dir.iterdir()) == []  # the metrics directory goes with the tracker
    assert "Traceback" not in t.output()


def test_workers_die_with_a_killed_tracker(net, tmp_path):
    run_dir = tmp_path / "tmp"  # where the supervisor makes its metrics folder
    run_dir.mkdir()
    env = {"P2PSHARE_TRACKER_WORKERS": "2", "TMPDIR": str(run_dir)}
    t = net.start_tracker(env=env)
    workers = _children(t.pid)
    assert len(workers) == 2
    [left] = list(run_dir.iterdir())
    t.stop(signal.SIGKILL)
    wait_for(
        lambda: not any(os.path.exists(f"/proc/{w}") and _alive(w) for w in workers),
        10,
        "the workers to exit",
    )
    # a killed supervisor cannot remove its metrics folder: the next tracker does
    assert left.exists()
    again = net.start_tracker(env=env)
    assert not left.exists()
    assert len(list(run_dir.iterdir())) == 1  # its own
    assert again.stop(signal.SIGTERM) == 0
    assert list(run_dir.iterdir()) == []


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def test_the_supervisor_of_workers_is_small_and_stops_them(net, tmp_path):
    """Once its workers are forked the supervisor runs a small program (the same pid):
    none of the app's modules, a fraction of a worker's memory, and SIGTERM still
    goes to the workers."""
    run_dir = tmp_path / "tmp"  # where the supervisor makes its metrics folder
    run_dir.mkdir()
    t = net.start_tracker(env={"P2PSHARE_TRACKER_WORKERS": "2", "TMPDIR": str(run_dir)})
    workers = _children(t.pid)
    assert len(workers) == 2
    mapped = Path(f"/proc/{t.pid}/maps").read_text()
    assert "pydantic_core" not in mapped
    assert "site-packages" not in mapped  # no extension module of any dependency
    own = _vm_hwm_kb(t.pid)  # ~10 MB, against ~50 MB for an idle worker
    assert own < 30_000
    assert own < min(_vm_hwm_kb(w) for w in workers) / 2
    assert t.stop(signal.SIGTERM) == 0
    assert not any(_alive(w) for w in workers)
    assert list(run_dir.iterdir()) == []
    assert "Traceback" not in t.output()


def _alive(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return False


def test_a_busy_port_is_refused_with_workers_too(net):
    t = net.start_tracker(env={"P2PSHARE_TRACKER_WORKERS": "2"})
    port = t.url.rsplit(":", 1)[1]
    import subprocess

    argv = p2pshare_argv("tracker", "--port", port, "--db", str(net.root / "other.db"))
    env = {**os.environ, "P2PSHARE_TRACKER_WORKERS": "2"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, check=False)
    assert done.returncode != 0
    assert "cannot listen" in done.stderr


def _raw(url: str, data: bytes, *, until_close: bool = False, timeout: float = 10) -> bytes:
    """Send ``data`` on one connection; read until it closes or goes quiet."""
    import socket

    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        s.settimeout(timeout if until_close else 1.0)
        with contextlib.suppress(TimeoutError):
            while chunk := s.recv(65536):
                out += chunk
        return out


def test_pipelined_requests_are_answered_in_order(tracker):
    reg = httpx.post(tracker.url + "/v1/peers", json={"address": "127.0.0.1:1"}).json()
    beat = (
        f"POST /v1/peers/{reg['peer_id']}/heartbeat HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {reg['token']}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    search = b"GET /v1/search?q=zz HTTP/1.1\r\nHost: t\r\n\r\n"
    healthz = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"  # through the FastAPI app
    last = b"GET /v1/peers HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    out = _raw(tracker.url, beat + healthz + search + beat + last, until_close=True)
    assert out.count(b"HTTP/1.1 200 ") == 5
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in out.split(b"HTTP/1.1 ")[1:]]
    assert [json.loads(b).keys() for b in bodies] == [
        {"lease_seconds"},
        {"status", "version", "peers", "files"},
        {"hits"},
        {"lease_seconds"},
        {"peers"},
    ]


def test_malformed_http_gets_400_and_the_connection_closes(tracker):
    out = _raw(tracker.url, b"NOT HTTP AT ALL\r\n\r\n", until_close=True)
    assert out.startswith(b"HTTP/1.1 400 ")
    assert b'"error"' in out


def test_chunked_register_and_http10_work(tracker):
    body = json.dumps({"address": "127.0.0.1:7", "files": []}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    out = _raw(
        tracker.url,
        b"POST /v1/peers HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked,
        until_close=True,
    )
    assert out.startswith(b"HTTP/1.1 201 "), out[:200]
    out = _raw(tracker.url, b"GET /v1/search?q=x HTTP/1.0\r\n\r\n", until_close=True)
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b'{"hits":[]}')


def test_too_large_body_is_413(net):
    t = net.start_tracker()
    out = _raw(
        t.url,
        b"POST /v1/peers HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n" + b"x" * 70000,
        until_close=True,
    )
    assert out.startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize("server", ["own", "uvicorn"])
async def test_both_http_servers_answer_alike(net, server):
    env = {"P2PSHARE_TRACKER_HTTP": "uvicorn"} if server == "uvicorn" else {}
    t = net.start_tracker(env=env)
    async with TrackerClient(t.url) as client:
        files = [FileEntry(content_id=cid(1), name="both/alike.iso", size=3)]
        reg = await client.register("127.0.0.1:40001", files)
        [hit] = await client.search("alike")
        assert hit.providers[0].peer_id == reg.peer_id
        await client.heartbeat(reg.peer_id, reg.token)
        with pytest.raises(PermissionDenied):
            await client.heartbeat(reg.peer_id, "forged")
        with pytest.raises(NotFound):
            await client.heartbeat("nobody", reg.token)
        with pytest.raises(UsageError):
            await client.search("")
        await client.logout(reg.peer_id, reg.token)
    assert t.stop(signal.SIGTERM) == 0
    assert "Traceback" not in t.output()


def test_expect_100_continue_is_answered(tracker):
    body = json.dumps({"address": "127.0.0.1:9", "files": []}).encode()
    import socket

    host, port = tracker.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"POST /v1/peers HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        assert s.recv(100).startswith(b"HTTP/1.1 201 ")


def test_requests_sent_before_a_half_close_are_all_answered(tracker):
    import socket

    host, port = tracker.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /v1/search?q=a HTTP/1.1\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert out.count(b"HTTP/1.1 200 ") == 2

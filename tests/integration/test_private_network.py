"""A private network of real processes: keyed peers search and download; outsiders
(no key, a wrong key, a replayed or stale call) get nothing from any gRPC method or
tracker route but /healthz."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import grpc
import httpx
import pytest

from p2pshare.core.auth import HEADER, HTTP_PURPOSE, NONCE_BYTES, CallSigner, http_call
from p2pshare.localnet import LocalNetwork, wait_for
from p2pshare.peer.rpc.auth import GrpcAuth
from p2pshare.tracker.client_auth import TrackerAuth
from tests.grpc_probe import METHODS, statuses
from tests.http_probe import requests_of
from tests.integration.helpers import api, cli, sha256, wait_registered, write_random

pytestmark = pytest.mark.integration

KEY = "p2pk-" + "s" * 43
WRONG = "p2pk-" + "m" * 43
DENIED = grpc.StatusCode.PERMISSION_DENIED


def refused(r: httpx.Response) -> bool:
    return r.status_code == 401 and isinstance(r.json().get("error"), str)


async def test_outsiders_are_refused_by_every_method_and_route(tmp_path: Path) -> None:
    net = LocalNetwork(tmp_path, network_key=KEY)
    try:
        tracker = net.start_tracker()
        write_random(tmp_path / "alice" / "share" / "secret.bin", 100_000)
        alice = net.start_peer("alice", tracker=tracker.url)
        wait_registered(alice)

        # gRPC: every method of the service descriptor
        assert await statuses(alice.address, lambda m: ()) == dict.fromkeys(METHODS, DENIED)
        wrong = GrpcAuth(WRONG)
        to_alice = alice.address
        assert await statuses(to_alice, lambda m: wrong.metadata(m, to_alice)) == dict.fromkeys(
            METHODS, DENIED
        )
        captured = {m: GrpcAuth(KEY).metadata(m, to_alice) for m in METHODS}
        first = await statuses(alice.address, captured.__getitem__, timeout=0.5)
        assert DENIED not in first.values()
        replayed = await statuses(alice.address, captured.__getitem__)
        assert replayed == dict.fromkeys(METHODS, DENIED)

        # the tracker: every route of its OpenAPI document, and those outside it
        stale = CallSigner(KEY, HTTP_PURPOSE)
        timeout = httpx.Timeout(5.0, read=2.0)
        with (
            httpx.Client(base_url=tracker.url, auth=TrackerAuth(KEY), timeout=timeout) as keyed,
            httpx.Client(base_url=tracker.url, timeout=timeout) as plain,
            httpx.Client(base_url=tracker.url, auth=TrackerAuth(WRONG), timeout=timeout) as bad,
        ):
            spec = keyed.get("/openapi.json").json()
            probes = [p for p in requests_of(spec) if p[1] != "/healthz"]
            assert ("GET", "/v1/events", {}) in probes
            for method, path, query in probes:
                body = b"{}" if method in ("POST", "PUT", "PATCH") else None
                for client in (plain, bad):
                    r = client.request(method, path, params=query, content=body)
                    assert refused(r), (method, path, r.status_code, r.text)
                url = httpx.URL(path, params=query)
                call = http_call(method, url.path, url.query.decode())
                old = stale.sign(
                    call, now=time.time() - 120, nonce=os.urandom(NONCE_BYTES), body=body or b""
                )
                r = plain.request(method, path, params=query, content=body, headers={HEADER: old})
                assert refused(r), (method, path, "stale")
                request = keyed.build_request(method, path, params=query, content=body)
                first_answer = keyed.send(request, stream=True)  # /v1/events never ends
                first_answer.close()
                assert first_answer.status_code != 401, (method, path)
                again = plain.send(request)
                assert refused(again), (method, path, "replayed")
            assert plain.get("/healthz").status_code == 200
    finally:
        net.stop_all()


def test_a_private_network_works_and_keeps_a_wrong_key_out(tmp_path: Path) -> None:
    net = LocalNetwork(tmp_path, network_key=KEY)
    try:
        tracker = net.start_tracker()
        original = write_random(tmp_path / "alice" / "share" / "plans.bin", 3 << 20)
        alice = net.start_peer("alice", tracker=tracker.url)
        bob = net.start_peer("bob", tracker=tracker.url)
        wait_registered(alice)
        wait_registered(bob)

        found = cli("search", "plans", "--json", "--api", bob.api)
        assert found.returncode == 0, found.stderr
        hits = json.loads(found.stdout)
        assert [(h["name"], [p["address"] for p in h["providers"]]) for h in hits] == [
            ("plans.bin", [alice.address])
        ]
        # the overlay too: its stream between keyed neighbours carries the proof
        wait_for(
            lambda: alice.address in api(bob, "/v1/status")["neighbours"],
            10,
            "bob to take alice as a neighbour",
        )
        by_overlay = cli("search", "plans", "--source", "overlay", "--json", "--api", bob.api)
        assert by_overlay.returncode == 0, by_overlay.stderr
        assert [h["name"] for h in json.loads(by_overlay.stdout)] == ["plans.bin"]
        out = tmp_path / "got"
        got = cli("get", hits[0]["content_id"], "-o", str(out), "--api", bob.api)
        assert got.returncode == 0, got.stderr
        assert sha256(out / "plans.bin") == sha256(original)

        mallory = net.start_peer(
            "mallory",
            "--seed",
            alice.address,
            tracker=tracker.url,
            env={"P2PSHARE_NETWORK_KEY": WRONG},
        )
        state = api(mallory, "/v1/status")["tracker"]["state"]
        assert state.startswith("refused:") and "wrong network key" in state, state
        wait_for(
            lambda: f"hello {alice.address} refused" in mallory.output(),
            10,
            "mallory to log that alice refused it",
        )
        assert "wrong network key" in mallory.output()
        assert api(mallory, "/v1/status")["neighbours"] == []
        search = api(mallory, "/v1/search", q="plans")
        assert search["hits"] == []
        assert search["sources"]["tracker"].startswith("refused:")
        peers = httpx.get(tracker.url + "/v1/peers", auth=TrackerAuth(KEY)).json()["peers"]
        assert mallory.address not in {p["address"] for p in peers}
    finally:
        net.stop_all()


def test_a_control_api_off_loopback_demands_its_token(tmp_path: Path) -> None:
    net = LocalNetwork(tmp_path)
    try:
        peer = net.start_peer("p", env={"P2PSHARE_PEER_API_HOST": "0.0.0.0"})
        token_file = peer.data / "api-token"
        assert f"demands the token in {token_file}" in peer.output()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert token not in peer.output()
        local = peer.api.replace("0.0.0.0", "127.0.0.1")

        r = httpx.get(local + "/v1/status")
        assert r.status_code == 401 and "token" in r.json()["error"]
        wrong = httpx.get(local + "/v1/status", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = httpx.get(local + "/v1/status", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert httpx.get(local + "/healthz").status_code == 200

        os.environ.pop("P2PSHARE_API_TOKEN", None)
        config = tmp_path / "p2pshare.toml"
        config.write_text(f'[peer]\ndata = "{peer.data}"\n')
        via_file = cli("ls", "--json", "--api", local, "--config", str(config))
        assert via_file.returncode == 0, via_file.stderr
        config.write_text('[peer]\ndata = "/nonexistent"\n')
        without = cli("ls", "--api", local, "--config", str(config))
        assert without.returncode == 2
        assert "P2PSHARE_API_TOKEN" in without.stderr and "Traceback" not in without.stderr
        os.environ["P2PSHARE_API_TOKEN"] = token
        try:
            via_env = cli("status", "--api", local, "--config", str(config))
        finally:
            del os.environ["P2PSHARE_API_TOKEN"]
        assert via_env.returncode == 0, via_env.stderr
    finally:
        net.stop_all()

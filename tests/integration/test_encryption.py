"""Encryption with real processes: what a wire tap between peers, and between a peer and
the tracker, sees with TLS on and off; who gets in; tls = "files" end to end."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from p2pshare import errors, tls
from p2pshare._proto import peer_pb2 as pb
from p2pshare._proto import peer_pb2_grpc as pb_grpc
from p2pshare.config import PeerSettings
from p2pshare.localnet import LocalNetwork, network_env
from p2pshare.peer.rpc.client import PeerClients
from p2pshare.tracker.client import TrackerClient
from tests.integration.helpers import api, cli, sha256, wait_registered, write_random

pytestmark = pytest.mark.integration

KEY = "p2pk-" + "n" * 43
OTHER_KEY = "p2pk-" + "m" * 43


class Relay:
    """A TCP relay on 127.0.0.1 to ``target`` that records every byte, both ways, of
    every connection through it: what a wire tap on that path would see."""

    def __init__(self, target: tuple[str, int] | None = None) -> None:
        """``target`` may be set later (``aim``): a connection waits for it."""
        self.target = target
        self._aimed = threading.Event()
        if target is not None:
            self._aimed.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._streams: list[bytearray] = []
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                if not self._aimed.wait(10) or self.target is None:
                    raise OSError("the relay has no target")
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        stream = bytearray()  # one direction of one connection: no interleaving
        with self._lock:
            self._streams.append(stream)
        try:
            while data := src.recv(1 << 16):
                with self._lock:
                    stream += data
                dst.sendall(data)
            how = socket.SHUT_WR  # pass the end of this direction on
        except OSError:
            how = socket.SHUT_RDWR  # one side is gone: end both directions
        for sock in (dst,) if how == socket.SHUT_WR else (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(how)

    def aim(self, target: tuple[str, int]) -> None:
        self.target = target
        self._aimed.set()

    def streams(self) -> list[bytes]:
        with self._lock:
            return [bytes(s) for s in self._streams]

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._socks:
                sock.close()


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _auto(key: str) -> tls.Tls:
    security = tls.load(PeerSettings(network_key=key, tls="auto"), section="test")
    assert security is not None
    return security


@pytest.mark.parametrize("encrypted", [True, False], ids=["tls-auto", "plaintext"])
def test_a_wire_tap_sees_the_file_only_without_tls(tmp_path: Path, encrypted: bool) -> None:
    env = network_env(network_key=KEY, tls="auto") if encrypted else {}
    net = LocalNetwork(tmp_path, env=env)
    relays: list[Relay] = []
    try:
        tracker = net.start_tracker()
        assert tracker.url.startswith("https://" if encrypted else "http://")
        to_tracker = Relay(_host_port(tracker.url))
        to_alice = Relay()  # aimed at alice once she has a port
        relays += [to_tracker, to_alice]
        tapped_tracker = f"{urlsplit(tracker.url).scheme}://127.0.0.1:{to_tracker.port}"

        tag = uuid.uuid4().hex
        marker = f"PLAINTEXT-MARKER-{tag}".encode()
        name = f"quarterly-secret-{tag}.bin"
        blocks = [marker + os.urandom(64 << 10) for _ in range(32)]  # ~2 MiB
        original = tmp_path / "alice" / "share" / name
        original.parent.mkdir(parents=True)
        original.write_bytes(b"".join(blocks))
        # alice is dialled through the relay: that is the address the tracker hands out
        alice = net.start_peer(
            "alice",
            "--advertise", f"127.0.0.1:{to_alice.port}",
            tracker=tapped_tracker,
        )  # fmt: skip
        to_alice.aim(_host_port("//" + api(alice, "/v1/status")["listening"]))
        bob = net.start_peer("bob", tracker=tapped_tracker)
        wait_registered(alice)
        wait_registered(bob)
        content_id = api(alice, "/v1/files")["files"][0]["content_id"]

        got = cli("get", content_id, "-o", str(tmp_path / "out"), "--api", bob.api)
        assert got.returncode == 0, got.stderr
        assert sha256(tmp_path / "out" / name) == sha256(original)
    finally:
        net.stop_all()
        for relay in relays:
            relay.close()

    peer_traffic = to_alice.streams()
    tracker_traffic = to_tracker.streams()
    # the whole download crossed the tap
    assert sum(map(len, peer_traffic)) > original.stat().st_size
    assert tracker_traffic
    seen_marker = any(marker in s for s in peer_traffic)
    seen_name = any(name.encode() in s for s in tracker_traffic + peer_traffic)
    assert seen_marker is not encrypted
    assert seen_name is not encrypted


def test_outsiders_get_a_clean_refusal_and_the_network_keeps_serving(
    tmp_path: Path,
) -> None:
    net = LocalNetwork(tmp_path, env=network_env(network_key=KEY, tls="auto"))
    try:
        tracker = net.start_tracker()
        original = write_random(tmp_path / "alice" / "share" / "plans.bin", 1 << 20)
        alice = net.start_peer("alice", tracker=tracker.url)
        content_id = api(alice, "/v1/files")["files"][0]["content_id"]

        # a peer process of another network (another key, so another CA)
        mallory = net.start_peer(
            "mallory",
            "--seed", alice.address,
            tracker=tracker.url,
            env=network_env(network_key=OTHER_KEY, tls="auto"),
        )  # fmt: skip
        state = api(mallory, "/v1/status")["tracker"]["state"]
        assert state.startswith("unreachable") and "TLS failed" in state
        asyncio.run(_foreign_calls_fail(alice.address, tracker.url, content_id))
        _plaintext_calls_fail(alice.address, tracker.url)

        # the network serves its own as before
        bob = net.start_peer("bob", tracker=tracker.url)
        got = cli("get", content_id, "-o", str(tmp_path / "out"), "--api", bob.api)
        assert got.returncode == 0, got.stderr
        assert sha256(tmp_path / "out" / "plans.bin") == sha256(original)
        health = httpx.get(tracker.url + "/healthz", verify=_auto(KEY).client_context())
        assert health.json()["peers"] == 2  # alice and bob, never mallory
        assert not list((mallory.share).iterdir())
    finally:
        net.stop_all()


async def _foreign_calls_fail(address: str, tracker_url: str, content_id: str) -> None:
    """Another network's certificate gets nothing from a peer or the tracker."""
    clients = PeerClients(tls=_auto(OTHER_KEY))
    try:
        with pytest.raises(errors.Unreachable):
            await clients.manifest(address, content_id, timeout=5)
    finally:
        await clients.close()
    async with TrackerClient(tracker_url, verify=_auto(OTHER_KEY).client_context()) as client:
        with pytest.raises(errors.Unreachable, match="TLS failed"):
            await client.search("plans")


def _plaintext_calls_fail(address: str, tracker_url: str) -> None:
    """Plain text, or TLS without a network certificate, fails at once: no hang."""
    started = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as failed:
            pb_grpc.PeerStub(channel).Hello(pb.HelloRequest(), timeout=8)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    # trusting the network's CA is not enough: a peer wants a network certificate back
    roots = _auto(KEY).roots
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    options = [("grpc.ssl_target_name_override", tls.AUTO_NAME)]
    with grpc.secure_channel(address, credentials, options) as channel:
        with pytest.raises(grpc.RpcError) as failed:
            pb_grpc.PeerStub(channel).Hello(pb.HelloRequest(), timeout=8)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(httpx.TransportError):
        httpx.get(tracker_url.replace("https://", "http://") + "/healthz", timeout=8)
    assert time.monotonic() - started < 8


def _make_ca_and_leaf(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 and localhost signed by it, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # what a real CA's certificate carries; Python 3.13 verifies strictly by default
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_tls_with_certificate_files_works_end_to_end(tmp_path: Path) -> None:
    ca, cert, key = _make_ca_and_leaf(tmp_path)
    net = LocalNetwork(tmp_path, env=network_env(tls="files", cert=cert, key=key, ca=ca))
    try:
        tracker = net.start_tracker()
        assert tracker.url.startswith("https://")
        original = write_random(tmp_path / "alice" / "share" / "report.pdf", 1 << 20)
        alice = net.start_peer("alice", tracker=tracker.url)
        bob = net.start_peer("bob", tracker=tracker.url)
        wait_registered(alice)
        wait_registered(bob)
        content_id = api(alice, "/v1/files")["files"][0]["content_id"]
        got = cli("get", content_id, "-o", str(tmp_path / "out"), "--api", bob.api)
        assert got.returncode == 0, got.stderr
        assert sha256(tmp_path / "out" / "report.pdf") == sha256(original)
        # the tracker's certificate holds for a client that checks the name
        checked = ssl.create_default_context(cafile=str(ca))
        assert httpx.get(tracker.url + "/healthz", verify=checked).json()["peers"] == 2
    finally:
        net.stop_all()


@pytest.mark.parametrize("server", ["own", "uvicorn"])
def test_every_tracker_worker_serves_https(tmp_path: Path, server: str) -> None:
    net = LocalNetwork(tmp_path, env=network_env(network_key=KEY, tls="auto"))
    env = {"P2PSHARE_TRACKER_WORKERS": "2"}
    if server == "uvicorn":
        env["P2PSHARE_TRACKER_HTTP"] = "uvicorn"
    try:
        tracker = net.start_tracker(env=env)
        assert tracker.url.startswith("https://")
        verify = _auto(KEY).client_context()
        # a new connection each time: the kernel spreads them over both workers
        for _ in range(8):
            with httpx.Client(verify=verify) as client:
                assert client.get(tracker.url + "/healthz").json()["status"] == "ok"
    finally:
        net.stop_all()

"""A provider on its own network namespace, joined by a veth link that the test cuts.

Needs root (``ip netns``); the namespaces and links are the test's own and are
removed afterwards. Traffic stays on this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from p2pshare.localnet import PEER_READY, LocalNetwork, PeerProc, spawn, wait_for
from tests.integration.helpers import api, cli, sha256, write_random

pytestmark = pytest.mark.integration
PIECE = 64 << 10


@dataclass
class Link:
    namespace: str
    host_if: str
    host_ip: str
    ns_ip: str

    def set(self, state: str) -> None:
        subprocess.run(["ip", "link", "set", self.host_if, state], check=True)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def link() -> Iterator[Link]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make network namespaces")
    n = os.getpid() % 200 + 20
    ns, host_if, ns_if = f"p2pt{os.getpid()}", f"p2ph{os.getpid()}", f"p2pn{os.getpid()}"
    host_ip, ns_ip = f"10.231.{n}.1", f"10.231.{n}.2"
    try:
        ip("netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode().strip()}")
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        ip("link", "set", ns_if, "netns", ns)
        ip("addr", "add", f"{host_ip}/24", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield Link(ns, host_if, host_ip, ns_ip)
    finally:
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def start_peer_in(net: LocalNetwork, link: Link, name: str, tracker: str, config: Path) -> PeerProc:
    share, data = net.root / name / "share", net.root / name / "data"
    argv = ["ip", "netns", "exec", link.namespace, sys.executable, "-m", "p2pshare", "peer",
            "--config", str(config), "--share", str(share), "--data", str(data),
            "--host", link.ns_ip, "--port", "0", "--api-port", "0",
            "--tracker", tracker]  # fmt: skip
    proc, match = spawn(argv, PEER_READY, log=net.root / "logs" / f"{name}.log", name=name)
    peer = PeerProc(proc.name, proc.popen, proc.log, address=match["address"], api=match["api"],
                    share=share, data=data)  # fmt: skip
    net.procs.append(peer)
    return peer


def test_a_provider_cut_off_mid_download_is_left_behind_and_used_again_when_back(
    net: LocalNetwork, tmp_path: Path, link: Link
) -> None:
    original = write_random(tmp_path / "far" / "share" / "film.bin", 48 << 20)
    (tmp_path / "near" / "share").mkdir(parents=True)
    shutil.copy(original, tmp_path / "near" / "share" / "film.bin")
    slow = tmp_path / "slow.toml"
    slow.write_text(f"[peer]\npiece_size = {PIECE}\nmax_upload_rate = {2 << 20}\n")
    far_config = tmp_path / "far.toml"
    # off loopback, far's control API demands a token
    token = "far-control-api-token"
    far_config.write_text(slow.read_text() + f'api_host = "{link.ns_ip}"\napi_token = "{token}"\n')

    tracker = net.start_tracker("--host", link.host_ip)
    far = start_peer_in(net, link, "far", tracker.url, far_config)
    net.start_peer("near", "--config", str(slow), tracker=tracker.url)
    fetcher = net.start_peer("fetcher", tracker=tracker.url)
    content_id = api(far, "/v1/files", token=token)["files"][0]["content_id"]
    getting = subprocess.Popen(
        [sys.executable, "-m", "p2pshare", "get", content_id, "--json", "--api", fetcher.api],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: api(far, "/v1/status", token=token)["pieces_served"] > 20, 30, "far to serve"
        )
        link.set("down")
        wait_for(
            lambda: far.address not in api(fetcher, f"/v1/downloads/{content_id}")["providers"],
            30,
            "the fetcher to leave the cut-off provider behind",
        )
        link.set("up")
        served = api(far, "/v1/status", token=token)["pieces_served"]
        wait_for(
            lambda: api(far, "/v1/status", token=token)["pieces_served"] > served,
            40,
            "the provider to be used again once its link is back",
        )
        out, err = getting.communicate(timeout=120)
    finally:
        getting.kill()
    assert getting.returncode == 0, err
    assert sha256(fetcher.share / "film.bin") == sha256(original)
    assert cli("status", "--api", fetcher.api).returncode == 0

"""Every process says which release it is, from the package metadata alone."""

from __future__ import annotations

from importlib.metadata import version

import grpc
import httpx
import pytest

from p2pshare._proto import peer_pb2 as pb
from p2pshare._proto import peer_pb2_grpc as pb_grpc
from p2pshare.localnet import LocalNetwork
from tests.integration.helpers import cli

pytestmark = pytest.mark.integration
RELEASE = version("p2pshare")


def test_the_cli_prints_the_installed_release() -> None:
    done = cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"p2pshare {RELEASE}\n"


def test_tracker_and_peer_report_their_release_in_healthz_and_hello(net: LocalNetwork) -> None:
    tracker = net.start_tracker()
    peer = net.start_peer("a", tracker=tracker.url)
    assert httpx.get(tracker.url + "/healthz").json()["version"] == RELEASE
    assert httpx.get(peer.api + "/healthz").json()["version"] == RELEASE
    with grpc.insecure_channel(peer.address) as channel:
        hello = pb_grpc.PeerStub(channel).Hello(pb.HelloRequest(), timeout=10)
    assert hello.software_version == RELEASE

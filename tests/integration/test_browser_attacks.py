"""A web page in the user's browser cannot drive the peer: DNS rebinding and
cross-site requests are refused, while the CLI and the API's own pages go on."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from p2pshare.localnet import LocalNetwork
from tests.integration.helpers import api, cli

pytestmark = pytest.mark.integration
CID = "ab" * 32


def test_a_rebound_host_name_gets_nothing_and_changes_nothing(
    net: LocalNetwork, tmp_path: Path
) -> None:
    peer = net.start_peer("p", tracker="")
    port = peer.api.rsplit(":", 1)[1]
    rebound = {"Host": f"attacker.example:{port}"}
    ssh = tmp_path / "home" / ".ssh"

    status = httpx.get(peer.api + "/v1/status", headers=rebound)
    assert status.status_code == 403
    assert "DNS rebinding" in status.json()["error"]
    download = {"content_id": CID, "out_dir": str(ssh)}
    assert httpx.post(peer.api + "/v1/downloads", json=download, headers=rebound).status_code == 403
    subscription = {"query": "authorized_keys", "into": str(ssh)}
    answer = httpx.post(peer.api + "/v1/subscriptions", json=subscription, headers=rebound)
    assert answer.status_code == 403
    assert not ssh.exists()
    assert api(peer, "/v1/downloads") == []
    assert api(peer, "/v1/subscriptions")["subscriptions"] == []
    # a monitor may still ask whether the peer is alive
    assert httpx.get(peer.api + "/healthz", headers=rebound).status_code == 200


def test_cross_site_requests_are_refused_and_same_origin_ones_answered(
    net: LocalNetwork, tmp_path: Path
) -> None:
    peer = net.start_peer("p", tracker="")
    into = tmp_path / "subscribed"
    subscription = {"query": "holiday", "into": str(into)}
    for headers in (
        {"Origin": "http://attacker.example"},
        {"Origin": "http://localhost:3000"},  # another web app on this machine
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        answer = httpx.post(peer.api + "/v1/subscriptions", json=subscription, headers=headers)
        assert answer.status_code == 403, headers
    assert not into.exists()

    own = {"Origin": peer.api, "Sec-Fetch-Site": "same-origin"}
    answer = httpx.post(peer.api + "/v1/subscriptions", json=subscription, headers=own)
    assert answer.status_code in (200, 201), answer.text
    assert into.is_dir()


def test_the_cli_works_unchanged_and_a_listed_name_is_answered(
    net: LocalNetwork, tmp_path: Path
) -> None:
    config = tmp_path / "p.toml"
    config.write_text('[peer]\napi_allowed_hosts = ["mybox.lan"]\n')
    peer = net.start_peer("p", "--config", str(config), tracker="")
    port = peer.api.rsplit(":", 1)[1]
    assert cli("status", "--api", peer.api).returncode == 0
    named = httpx.get(peer.api + "/v1/status", headers={"Host": f"MyBox.lan:{port}"})
    assert named.status_code == 200
    other = httpx.get(peer.api + "/v1/status", headers={"Host": f"other.lan:{port}"})
    assert other.status_code == 403

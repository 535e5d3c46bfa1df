"""A provider on a host of its own (``p2pshare.netlab``), whose link the test cuts.

Needs root (network namespaces; skipped with the reason otherwise); the lab removes
its namespaces and links afterwards. Traffic stays on this machine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from p2pshare.localnet import PEER_READY, LocalNetwork, PeerProc, spawn, wait_for
from p2pshare.netlab import Host, NetLab
from tests.integration.helpers import api, cli, sha256, write_random

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("netlab")]
PIECE = 64 << 10


def start_peer_in(net: LocalNetwork, host: Host, name: str, tracker: str, config: Path) -> PeerProc:
    share, data = net.root / name / "share", net.root / name / "data"
    argv = host.exec_argv([sys.executable, "-m", "p2pshare", "peer",
            "--config", str(config), "--share", str(share), "--data", str(data),
            "--host", host.address, "--port", "0", "--api-port", "0",
            "--tracker", tracker])  # fmt: skip
    proc, match = spawn(argv, PEER_READY, log=net.root / "logs" / f"{name}.log", name=name)
    peer = PeerProc(proc.name, proc.popen, proc.log, address=match["address"], api=match["api"],
                    share=share, data=data)  # fmt: skip
    net.procs.append(peer)
    return peer


def served_by(peer: PeerProc, token: str) -> int | None:
    """Pieces ``peer`` served, or None while it cannot be reached."""
    try:
        return int(api(peer, "/v1/status", token=token)["pieces_served"])
    except httpx.TransportError:
        return None


def test_a_provider_cut_off_mid_download_is_left_behind_and_used_again_when_back(
    lab: NetLab, net: LocalNetwork, tmp_path: Path
) -> None:
    far_host = lab.add_host("far")
    original = write_random(tmp_path / "far" / "share" / "film.bin", 48 << 20)
    (tmp_path / "near" / "share").mkdir(parents=True)
    shutil.copy(original, tmp_path / "near" / "share" / "film.bin")
    slow = tmp_path / "slow.toml"
    slow.write_text(f"[peer]\npiece_size = {PIECE}\nmax_upload_rate = {2 << 20}\n")
    far_config = tmp_path / "far.toml"
    # off loopback, far's control API demands a token
    token = "far-control-api-token"
    far_config.write_text(
        slow.read_text() + f'api_host = "{far_host.address}"\napi_token = "{token}"\n'
    )

    tracker = net.start_tracker("--host", lab.gateway)
    far = start_peer_in(net, far_host, "far", tracker.url, far_config)
    # near at half far's rate: the download outlasts far's return by far (near alone
    # needs ~45 s), so "used again" is seen before the file is complete
    slower = tmp_path / "slower.toml"
    slower.write_text(f"[peer]\npiece_size = {PIECE}\nmax_upload_rate = {1 << 20}\n")
    net.start_peer("near", "--config", str(slower), tracker=tracker.url)
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
        lab.cut(far_host)
        wait_for(
            lambda: far.address not in api(fetcher, f"/v1/downloads/{content_id}")["providers"],
            30,
            "the fetcher to leave the cut-off provider behind",
        )
        lab.restore(far_host)
        # the link is up again, but the first packets may still find no route
        # (neighbour discovery failed while it was cut): ask until far answers
        wait_for(lambda: served_by(far, token) is not None, 20, "far to answer again")
        served = served_by(far, token)
        wait_for(
            lambda: (served_by(far, token) or 0) > (served or 0),
            40,
            "the provider to be used again once its link is back",
        )
        out, err = getting.communicate(timeout=120)
    finally:
        getting.kill()
        getting.communicate()  # its pipes, closed
    assert getting.returncode == 0, err
    assert sha256(fetcher.share / "film.bin") == sha256(original)
    assert cli("status", "--api", fetcher.api).returncode == 0

"""Helpers for tests that drive real tracker and peer processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx

from p2pshare.localnet import PeerProc, p2pshare_argv, wait_for


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``p2pshare ARGS`` as a user would, capturing its output."""
    return subprocess.run(
        p2pshare_argv(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


def api(peer: PeerProc, path: str, *, token: str | None = None, **params: Any) -> Any:
    """GET ``path`` of the peer's control API (``token``: for one bound off loopback)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(peer.api + path, params=params, headers=headers, timeout=10)
    response.raise_for_status()
    return response.json()


def write_random(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_registered(peer: PeerProc, timeout: float = 10) -> None:
    wait_for(
        lambda: api(peer, "/v1/status")["tracker"]["state"] == "registered",
        timeout,
        f"{peer.name} to register",
    )


def join_as_provider(provider: Any, tracker_url: str, entries: list[dict[str, Any]]) -> None:
    """Register a provider a test runs itself (its ``address``; it must answer ``Hello``
    with its ``peer_id``, set here) and wait until the tracker hands it out, once its
    dial-back got that answer."""
    joined = httpx.post(
        tracker_url + "/v1/peers", json={"address": provider.address, "files": entries}
    )
    provider.peer_id = joined.raise_for_status().json()["peer_id"]
    first = entries[0]["content_id"]
    wait_for(
        lambda: httpx.get(f"{tracker_url}/v1/files/{first}/providers").status_code == 200,
        10,
        "the tracker to hand the provider out (its dial-back answered)",
    )

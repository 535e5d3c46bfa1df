"""What docs/deploy.md ships: units that systemd accepts, configs that p2pshare accepts,
and a cloud-init user data that writes exactly those."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from p2pshare.config import PeerSettings, TrackerSettings, load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALLED = "/opt/p2pshare/bin/p2pshare"


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_accepts_the_units_without_a_warning(unit: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    text = unit.read_text()
    assert f"ExecStart={INSTALLED} " in text
    # verify checks that ExecStart exists: point it at this venv's p2pshare
    here = Path(sys.executable).parent / "p2pshare"
    (tmp_path / unit.name).write_text(text.replace(INSTALLED, str(here)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / unit.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 even for unknown keys and bad values: its output is the verdict
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_the_units_run_hardened_as_their_own_user(unit: Path) -> None:
    lines = set(unit.read_text().splitlines())
    for setting in (
        "User=p2pshare",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
    ):
        assert setting in lines, setting


def test_the_sample_configs_load_as_they_are() -> None:
    tracker = load_settings(TrackerSettings, "tracker", DEPLOY / "tracker.toml")
    assert tracker.host == "0.0.0.0"
    peer = load_settings(PeerSettings, "peer", DEPLOY / "peer.toml")
    assert (peer.host, peer.api_host) == ("0.0.0.0", "127.0.0.1")


def test_cloud_init_writes_the_same_unit_and_config_as_deploy() -> None:
    text = (DEPLOY / "cloud-init-peer.yaml").read_text()
    assert text.startswith("#cloud-config\n")
    files = {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}
    assert files["/etc/p2pshare/peer.toml"] == (DEPLOY / "peer.toml").read_text()
    unit = DEPLOY / "systemd" / "p2pshare-peer.service"
    assert files["/etc/systemd/system/p2pshare-peer.service"] == unit.read_text()

"""When the control API demands a token, and where the token comes from."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from p2pshare.config import PeerSettings
from p2pshare.errors import ConfigError
from p2pshare.peer.api.control import api_token_for


def test_loopback_needs_no_token(tmp_path: Path) -> None:
    assert api_token_for(PeerSettings(), tmp_path, "127.0.0.1") == (None, "")
    assert not list(tmp_path.iterdir())


def test_a_token_is_made_once_private_and_kept(tmp_path: Path) -> None:
    token, note = api_token_for(PeerSettings(), tmp_path, "0.0.0.0")
    path = tmp_path / "api-token"
    assert token is not None and len(token) >= 32
    assert str(path) in note and token not in note
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert api_token_for(PeerSettings(), tmp_path, "0.0.0.0")[0] == token


def test_a_configured_token_wins(tmp_path: Path) -> None:
    settings = PeerSettings(api_token="s" * 20)
    token, note = api_token_for(settings, tmp_path, "10.0.0.1")
    assert token == "s" * 20 and "api_token" in note
    assert not (tmp_path / "api-token").exists()


def test_an_unreadable_token_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "api-token").mkdir()  # unreadable as a file, even for root
    with pytest.raises(ConfigError, match=r"peer\.api_token: cannot read"):
        api_token_for(PeerSettings(), tmp_path, "0.0.0.0")

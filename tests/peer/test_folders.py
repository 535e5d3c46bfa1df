"""Folders the peer is told to write into (-o, --into): checked before anything is made."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2pshare.errors import UsageError
from p2pshare.peer.sharing.folders import check_out_folder
from tests.hostile_names import HOSTILE


@pytest.mark.parametrize(("name", "why"), HOSTILE, ids=[why for _, why in HOSTILE])
def test_every_hostile_name_is_refused_as_a_folder(name: str, why: str, tmp_path: Path) -> None:
    """Relative names (escapes, Windows paths, look-alikes) would land wherever the peer
    was started; the absolute ones are the root, a system or a network folder."""
    with pytest.raises(UsageError, match="^-o: "):
        check_out_folder(name, data_dir=tmp_path / "data", option="-o")
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("folder", "why"),
    [
        ("relative/dir", "relative"),
        ("/", "root"),
        ("/etc/cron.d", "system"),
        ("/tmp/a\nb", "control"),
        ("/tmp/a\x00b", "control"),
        ("//host/share", "network path"),
        ("/tmp/" + "x" * 5000, "longer than"),
    ],
)
def test_hostile_folders_are_refused_saying_why(folder: str, why: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=why):
        check_out_folder(folder, data_dir=tmp_path / "data", option="--into")


def test_the_data_folder_and_a_file_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "file").write_text("x")
    os.symlink(data, tmp_path / "link")
    for bad in (data, data / "sub", data / "downloads", tmp_path / "link" / "sub", tmp_path):
        with pytest.raises(UsageError, match="data folder"):
            check_out_folder(str(bad), data_dir=data, option="--into")
    with pytest.raises(UsageError, match="not a folder"):
        check_out_folder(str(tmp_path / "file"), data_dir=data, option="--into")


def test_an_absolute_folder_is_accepted_normalised(tmp_path: Path) -> None:
    data = tmp_path / "data"
    got = check_out_folder(str(tmp_path / "ok" / ".." / "fine"), data_dir=data, option="-o")
    assert got == tmp_path / "fine"
    assert not got.exists()  # checked, not made

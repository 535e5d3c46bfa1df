"""Folders a user names for the peer to write into: ``get -o DIR`` and
``subscribe --into DIR``, both through the control API.

The control API runs with the peer's rights, so a folder that reaches it is checked
before anything is created: absolute (a relative one would land wherever the peer
happened to start), free of control characters, not a network path, not the root,
a system folder or the peer's own data folder, and not a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from p2pshare import errors

MAX_FOLDER_LENGTH = 4096
_SYSTEM = ("/proc", "/sys", "/dev", "/boot", "/etc", "/bin", "/sbin", "/usr", "/lib")


def check_out_folder(folder: str, *, data_dir: Path, option: str) -> Path:
    """``folder`` made absolute and checked; ``UsageError`` naming ``option`` says
    what is wrong."""
    if not folder or any(ord(c) < 32 or c == "\x7f" for c in folder):
        raise errors.UsageError(f"{option}: give a folder name without control characters")
    if len(folder) > MAX_FOLDER_LENGTH:
        raise errors.UsageError(f"{option}: the folder name is longer than {MAX_FOLDER_LENGTH}")
    path = Path(folder)
    if not path.is_absolute():
        raise errors.UsageError(f"{option}: {folder!r} is relative; give an absolute folder")
    if folder.startswith("//"):
        # POSIX leaves a leading // to the system; Windows reads it as another machine
        raise errors.UsageError(f"{option}: {folder!r} is a network path; give a local folder")
    real = Path(os.path.realpath(path))
    data = Path(os.path.realpath(data_dir))
    if real == Path(real.anchor):
        raise errors.UsageError(f"{option}: refusing the root folder")
    if real.is_relative_to(data) or data.is_relative_to(real):
        raise errors.UsageError(f"{option}: {folder} holds or is inside the peer's data folder")
    if any(real == Path(s) or real.is_relative_to(s) for s in _SYSTEM):
        raise errors.UsageError(f"{option}: refusing the system folder {real}")
    if real.exists() and not real.is_dir():
        raise errors.UsageError(f"{option}: {folder} exists and is not a folder")
    return real

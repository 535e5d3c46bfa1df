"""Seeding a new version's partial download from local files (runs in a thread).

The file being replaced is copied whole into the partial file (``copy_file_range``:
in the kernel, a reflink where the file system has them), pieces found elsewhere in
local files are copied to their place, and a download record claims them all. The
download (``DownloadManager``) then checks every claimed piece against the new
manifest, as it does on any resume, and fetches only the rest: a piece is never
trusted because it was copied.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from p2pshare.core.manifest import Manifest
from p2pshare.core.pieces import PieceSet
from p2pshare.core.sync import PiecePlan, plan_pieces
from p2pshare.peer.transfer.partial import PartialDownload

__all__ = ["Source", "seed_partial"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """A local file and the hashes of its pieces at the new version's piece size."""

    path: Path
    piece_hashes: Sequence[bytes]
    piece_size: int
    size: int
    verified_as: tuple[int, int, int] | None = None
    """(size, mtime_ns, inode) of the file when its hashes were verified: if it is so
    before and after the copy, the pieces copied from it need no hashing again."""


def seed_partial(
    manifest: Manifest, target: Path, record: Path, base: Source | None, others: Sequence[Source]
) -> tuple[PiecePlan, list[int]]:
    """Write what local files hold of ``manifest`` into the partial file of ``target``
    and a record claiming it; returns the plan (``fetch``: what the network must give)
    and the pieces verified already (copied from an unchanged, verified base file).

    ``base``: the file the new version replaces (copied whole); ``others``: more
    local files to take pieces from (say, the partial file of a version given up).
    """
    size = manifest.piece_size
    sources = [s for s in ([base] if base else []) + list(others) if s.piece_size == size]
    usable = [
        [(h, i * size) for i, h in enumerate(s.piece_hashes) if i * size < s.size] for s in sources
    ]
    base_hashes = base.piece_hashes if base is not None and base.piece_size == size else ()
    plan = plan_pieces(manifest.piece_hashes, base_hashes, usable)
    claimed = list(plan.same) + list(plan.copy)
    if not claimed:
        return plan, []
    trusted: list[int] = []
    partial = PartialDownload(manifest, target, record, PieceSet(manifest.piece_count, claimed))
    try:
        if plan.same and base is not None:
            before = _stat_key(base.path)
            _copy_whole(base.path, partial.partial, manifest.size)
            if base.verified_as is not None and before == base.verified_as == _stat_key(base.path):
                trusted = list(plan.same)
        fds: dict[int, int] = {}
        out = os.open(partial.partial, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            for index, (source, offset) in plan.copy.items():
                if source not in fds:
                    fds[source] = os.open(sources[source].path, os.O_RDONLY | os.O_NOFOLLOW)
                data = os.pread(fds[source], manifest.piece_length(index), offset)
                os.pwrite(out, data, manifest.piece_offset(index))
            if hasattr(os, "posix_fadvise"):  # to the disk now: the final fsync waits less
                os.posix_fadvise(out, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(out)
            for fd in fds.values():
                os.close(fd)
        partial.save_record()
    except OSError as exc:  # nothing lost: the pieces will be fetched
        log.info("cannot reuse local pieces for %r: %s", manifest.name, exc)
        record.unlink(missing_ok=True)
        return PiecePlan(fetch=list(range(manifest.piece_count))), []
    finally:
        partial.close()
    return plan, trusted


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _copy_whole(src: Path, dst: Path, size: int) -> None:
    """``dst`` = the first ``size`` bytes of ``src`` (shorter if ``src`` is), by the
    kernel; the rest of ``dst`` stays a hole."""
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        if hasattr(os, "posix_fadvise"):  # read ahead more: it may come from the disk
            os.posix_fadvise(fin.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        fout.truncate(0)
        left = min(os.fstat(fin.fileno()).st_size, size)
        offset = 0
        while left > 0:
            try:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), left, offset, offset)
            except OSError:
                n = 0
            if n <= 0:  # not supported here: plain copy
                fin.seek(offset)
                fout.seek(offset)
                chunk = fin.read(min(left, 8 << 20))
                if not chunk:
                    break
                fout.write(chunk)
                n = len(chunk)
            offset += n
            left -= n
        fout.truncate(size)

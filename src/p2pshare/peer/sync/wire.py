"""Versions on the wire: ``VersionCounter`` lists of ``ShareChange`` and ``SearchHit``."""

from __future__ import annotations

from collections.abc import Iterable

from p2pshare import errors
from p2pshare._proto import peer_pb2 as pb
from p2pshare.core.manifest import check_content_id
from p2pshare.core.sync import MAX_COUNTERS, FileVersion, Vector

__all__ = ["MAX_COUNTER", "hit_version", "version_from_pb", "version_to_pb"]

MAX_COUNTER = 1 << 62  # larger ones from the network are refused: bumps stay in a uint64


def version_to_pb(version: FileVersion) -> list[pb.VersionCounter]:
    return [pb.VersionCounter(device=d, value=n) for d, n in version.vector.items()]


def version_from_pb(
    counters: Iterable[pb.VersionCounter],
    *,
    content_id: str,
    size: int,
    mtime_ns: int,
    origin: str,
    deleted: bool,
) -> FileVersion:
    """A version another peer sent; ``UsageError`` if malformed."""
    items = list(counters)
    if len(items) > MAX_COUNTERS:
        raise errors.UsageError(f"a version vector of more than {MAX_COUNTERS} devices")
    if any(c.value > MAX_COUNTER for c in items):
        raise errors.UsageError("a version counter out of range")
    try:
        vector = Vector((c.device[:64], int(c.value)) for c in items)
    except ValueError as exc:
        raise errors.UsageError(f"malformed version vector: {exc}") from exc
    if not deleted:
        check_content_id(content_id)
    return FileVersion(
        content_id="" if deleted else content_id,
        size=0 if deleted else size,
        vector=vector,
        mtime_ns=mtime_ns,
        origin=origin[:64],
        deleted=deleted,
    )


def hit_version(hit: pb.SearchHit | pb.ShareChange) -> FileVersion:
    """The version a search hit or a share change carries (both have its fields)."""
    return version_from_pb(
        hit.version,
        content_id=hit.content_id,
        size=hit.size,
        mtime_ns=hit.mtime_ns,
        origin=hit.origin,
        deleted=hit.deleted,
    )

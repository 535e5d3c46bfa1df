"""Folder sync without I/O: version vectors, what to do with a version another peer
has of a file (``decide``), the names of conflict copies and kept versions, and which
pieces of a new version local files already hold (``plan_pieces``).

The rules (README, "Keeping folders in sync"):

- Every file name has a version vector: one counter per device that changed it. A
  local change bumps this device's counter above every counter of the vector; taking
  another peer's version takes its vector (merged with ours). A version is *newer*
  when its vector dominates ours, *older or the same* when ours dominates it, and
  *concurrent* otherwise.
- Newer: it replaces ours (a removal only with ``mirror``). Older or the same: ignored;
  that is what stops loops: a peer that took a version publishes it again with the
  same vector, which its origin ignores.
- Concurrent and the same content: only the vectors are merged. Concurrent and
  different: a conflict. A change beats a removal. In a folder this peer does not
  publish (one-way), the upstream version takes the name; in a folder it publishes
  (two-way), every peer picks the same winner, as Syncthing does: the later
  modification time, then the smaller device id. Every peer that holds the loser
  keeps it as ``NAME.sync-conflict-YYYYMMDD-HHMMSS.EXT`` (its modification time: the
  same name everywhere), which then syncs as a file of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "CONFLICT_MARK",
    "Adopt",
    "Decision",
    "FileVersion",
    "Ignore",
    "Moment",
    "Order",
    "PiecePlan",
    "Remove",
    "Replace",
    "Vector",
    "conflict_name",
    "decide",
    "is_conflict_name",
    "kept_version_name",
    "plan_pieces",
    "retry_delay",
    "versions_to_prune",
]

CONFLICT_MARK = ".sync-conflict-"
MAX_COUNTERS = 64  # a vector from the network with more is refused (check_vector)
RETRY_FIRST = 5.0  # seconds before a version whose download failed is tried again
RETRY_MOST = 600.0  # the wait doubles with each failure in a row, up to this


class Order(Enum):
    EQUAL = "equal"
    NEWER = "newer"  # the left vector dominates the right one
    OLDER = "older"
    CONCURRENT = "concurrent"


class Vector:
    """A version vector: ``{device id: counter}``, immutable; zero counters are left out."""

    __slots__ = ("_counters",)

    def __init__(self, counters: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        items = counters.items() if isinstance(counters, Mapping) else counters
        made: dict[str, int] = {}
        for device, value in items:
            if value < 0:
                raise ValueError(f"negative counter for {device!r}")
            if value:
                made[device] = max(made.get(device, 0), value)
        self._counters = dict(sorted(made.items()))

    def __repr__(self) -> str:
        return f"Vector({self._counters!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vector) and self._counters == other._counters

    def __hash__(self) -> int:
        return hash(tuple(self._counters.items()))

    def __bool__(self) -> bool:
        return bool(self._counters)

    def items(self) -> Iterator[tuple[str, int]]:
        return iter(self._counters.items())

    def get(self, device: str) -> int:
        return self._counters.get(device, 0)

    def to_json(self) -> dict[str, int]:
        return dict(self._counters)

    def bump(self, device: str) -> Vector:
        """This vector after a change made by ``device``: its counter goes above every
        counter of the vector (a Lamport clock), so the result dominates the vector."""
        top = max(self._counters.values(), default=0)
        return Vector({**self._counters, device: top + 1})

    def merge(self, other: Vector) -> Vector:
        """The smallest vector that dominates both (each device's larger counter)."""
        return Vector(list(self.items()) + list(other.items()))

    def compare(self, other: Vector) -> Order:
        """How this vector orders against ``other`` (``NEWER``: this one dominates)."""
        ahead = any(v > other.get(d) for d, v in self.items())
        behind = any(v > self.get(d) for d, v in other.items())
        if ahead and behind:
            return Order.CONCURRENT
        if ahead:
            return Order.NEWER
        if behind:
            return Order.OLDER
        return Order.EQUAL


@dataclass(frozen=True, slots=True)
class FileVersion:
    """One peer's version of one file name: its content (none once removed), the
    vector, when it was made (nanoseconds since the epoch) and by which device."""

    content_id: str
    size: int
    vector: Vector
    mtime_ns: int
    origin: str
    """The device that made this version (the last change)."""
    deleted: bool = False

    def same_content(self, other: FileVersion) -> bool:
        if self.deleted or other.deleted:
            return self.deleted and other.deleted
        return self.content_id == other.content_id

    def rank(self) -> tuple[int, int, str, str]:
        """Larger wins a conflict on every peer alike: a change beats a removal, then
        the later modification, then the smaller device id, then the content id."""
        return (0 if self.deleted else 1, self.mtime_ns, _inverted(self.origin), self.content_id)


def _inverted(text: str) -> str:
    """A key that sorts ``text`` in reverse (for ASCII device ids)."""
    return "".join(chr(0x10FFFF - ord(c)) for c in text) + "\U0010ffff"


@dataclass(frozen=True, slots=True)
class Ignore:
    why: str


@dataclass(frozen=True, slots=True)
class Adopt:
    """Keep the local file as it is and record ``vector`` for it (the same content, or
    a conflict the local version won)."""

    vector: Vector
    why: str


@dataclass(frozen=True, slots=True)
class Replace:
    """Fetch the remote version and give it the name, with ``vector``. The local file
    (if any) goes to the kept versions, or, with ``conflict``, beside it as a
    conflict copy (a local change that lost)."""

    vector: Vector
    conflict: bool = False


@dataclass(frozen=True, slots=True)
class Remove:
    """The remote removal is newer: move the local file to the kept versions."""

    vector: Vector


Decision = Ignore | Adopt | Replace | Remove


def decide(
    local: FileVersion | None,
    remote: FileVersion,
    *,
    mirror: bool,
    two_way: bool,
) -> Decision:
    """What to do with ``remote``, another peer's version of a name, given ``local``,
    this peer's version of it (``None``: never had it; a local change must already be
    in it: its vector bumped by this device, which is its origin).

    ``mirror``: removals are followed. ``two_way``: this peer publishes the folder, so
    its local changes compete with the others' by the same rule on every peer.
    Whenever the result changes the local vector, the caller publishes the name again
    (so the peers' vectors converge too).
    """
    if local is None:  # as if removed before anything was known
        local = FileVersion("", 0, Vector(), 0, "", deleted=True)
    order = remote.vector.compare(local.vector)
    if order is Order.EQUAL and not remote.same_content(local):
        order = Order.CONCURRENT  # two resolutions of one conflict that differ
    if order in (Order.OLDER, Order.EQUAL):
        return Ignore("not newer than the version here")
    merged = remote.vector.merge(local.vector)
    if remote.same_content(local):
        return Adopt(merged, "the same content")
    if order is Order.NEWER:
        if not remote.deleted:
            return Replace(remote.vector)
        return Remove(remote.vector) if mirror else Ignore("removals are kept (no --mirror)")
    # concurrent, different content: a conflict
    if (two_way or remote.deleted) and local.rank() > remote.rank():
        # the vectors stay as they are: the peers holding the loser take ours as a
        # conflict, keep theirs as a copy, and publish the merged vector
        return Ignore("the local version wins the conflict")
    if remote.deleted:
        return Remove(merged) if mirror else Ignore("removals are kept (no --mirror)")
    # every peer that holds the loser keeps it, under the same name (conflict_name of
    # its modification time): the copies are one file, whoever made them
    return Replace(merged, conflict=not local.deleted)


# -- names --------------------------------------------------------------------------


def _split(name: str) -> tuple[str, str, str]:
    """``(folder/, stem, .ext)`` of a share name; a leading dot is not an extension."""
    folder, _, base = name.rpartition("/")
    folder = folder + "/" if folder else ""
    dot = base.rfind(".")
    if dot <= 0:
        return folder, base, ""
    return folder, base[:dot], base[dot:]


Moment = tuple[int, int, int, int, int, int]
"""Local year, month, day, hour, minute, second (``time.localtime(t)[:6]``)."""


def _stamp(when: Moment) -> str:
    y, mo, d, h, mi, s = when
    return f"{y:04d}{mo:02d}{d:02d}-{h:02d}{mi:02d}{s:02d}"


def conflict_name(name: str, when: Moment, taken: Iterable[str] = ()) -> str:
    """``NAME.sync-conflict-YYYYMMDD-HHMMSS.EXT`` for ``name``, ``when`` being the
    losing version's modification time (so every peer that keeps it picks the same
    name), with ``-2``, ``-3``... after the time if that name is ``taken``."""
    folder, stem, ext = _split(name)
    base = f"{folder}{stem}{CONFLICT_MARK}{_stamp(when)}"
    used = set(taken)
    made, n = f"{base}{ext}", 1
    while made in used:
        n += 1
        made = f"{base}-{n}{ext}"
    return made


_CONFLICT = re.compile(re.escape(CONFLICT_MARK) + r"\d{8}-\d{6}(-\d+)?(\.[^/]*)?$")


def is_conflict_name(name: str) -> bool:
    return _CONFLICT.search(name) is not None


def kept_version_name(name: str, when: Moment, n: int = 1) -> str:
    """The name of a replaced or removed version of ``name`` among the kept versions:
    ``NAME~YYYYMMDD-HHMMSS.EXT`` (Syncthing's simple versioning); the ``n``-th of
    one second gets ``-n`` after the time."""
    folder, stem, ext = _split(name)
    return f"{folder}{stem}~{_stamp(when)}{f'-{n}' if n > 1 else ''}{ext}"


def versions_to_prune(kept: Sequence[str], name: str, keep: int) -> list[str]:
    """Of the kept versions ``kept`` (names as ``kept_version_name`` makes them),
    those of ``name`` beyond the newest ``keep``, oldest first."""
    folder, stem, ext = _split(name)
    pattern = re.compile(re.escape(f"{folder}{stem}~") + r"(\d{8}-\d{6})(-\d+)?" + re.escape(ext))
    mine = sorted(
        (m.group(1), int((m.group(2) or "-1")[1:]), k) for k in kept if (m := pattern.fullmatch(k))
    )
    return [k for *_, k in mine[: max(len(mine) - max(keep, 0), 0)]]


def retry_delay(failures: int, *, first: float = RETRY_FIRST, most: float = RETRY_MOST) -> float:
    """Seconds before a name whose download failed ``failures`` times in a row (1: the
    first failure) is tried again: ``first``, doubling with each failure, ``most`` at
    most. A success starts the count again."""
    if failures < 1:
        return 0.0
    return min(first * 2.0 ** min(failures - 1, 64), most)


# -- pieces -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PiecePlan:
    """How to build a new version: ``same`` pieces are where the old file (copied
    whole) has them already, ``copy`` maps a piece to a (source, offset) of a local
    file holding its bytes elsewhere, ``fetch`` is what only the network has."""

    same: list[int] = field(default_factory=list)
    copy: dict[int, tuple[int, int]] = field(default_factory=dict)
    fetch: list[int] = field(default_factory=list)

    def local_bytes(self, piece_length: Sequence[int]) -> int:
        return sum(piece_length[i] for i in self.same) + sum(piece_length[i] for i in self.copy)


def plan_pieces(
    new: Sequence[bytes],
    base: Sequence[bytes],
    others: Sequence[Sequence[tuple[bytes, int]]] = (),
) -> PiecePlan:
    """Which pieces of a new version (``new``: its piece hashes) local files hold.

    ``base``: the piece hashes of the file the new version replaces, at the same piece
    size (copied whole first, so a piece equal at the same index costs nothing);
    ``others[s]``: ``(hash, offset)`` of pieces of local source ``s`` (``s`` = 0 is the
    base file again, for pieces that moved). Hashes compare the full piece, so the
    last, shorter piece matches only a piece of the same length and content.
    """
    plan = PiecePlan()
    where: dict[bytes, tuple[int, int]] = {}
    for source, pieces in enumerate(others):
        for digest, offset in pieces:
            where.setdefault(digest, (source, offset))
    for index, digest in enumerate(new):
        if index < len(base) and base[index] == digest:
            plan.same.append(index)
        elif digest in where:
            plan.copy[index] = where[digest]
        else:
            plan.fetch.append(index)
    return plan

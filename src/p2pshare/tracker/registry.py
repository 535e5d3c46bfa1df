"""The tracker's registry: live peers, the files each shares, and name search.

``Registry`` is the interface a store follows (SQLite here; memory or Redis
later). Every method takes the current time ``now`` as an argument, so leases are
tested with exact clocks. A peer whose lease ran out is never in an answer, even
before ``purge`` deletes it; nor is one whose address has not answered the tracker's
dial-back as it (``reachable`` 0: see ``settle`` and ``core.reachability``). Several
registrations may name one address; one replaces another only with proof (its token,
or the dial-back). A logged-out or evicted peer gets ``expires`` 0: out of every
answer at once, its rows deleted in slices.

``SqliteRegistry`` keeps everything in one SQLite file (WAL, ``synchronous=NORMAL``)::

    peers(id, peer_id, address, token_hash, expires, file_count,
          client, reachable, checked, reason)
                                            indexes on expires, address, (client, expires)
    names(id, name, words)                  each distinct share name once
    names_fts(words)                        FTS5 over names.words (external content),
                                            prefix indexes for terms of 1 to 3 letters
    files(peer, content_id, name_id, size, shared)
                                            primary key (peer, content_id); indexes on
                                            (content_id, shared) and (name_id, size,
                                            shared): a search reads no row of files
                                            itself

``files.shared`` is 1 when another file row has the same content id (triggers keep it
so on every insert and delete, whichever path makes them). Most content in a file
sharing network has one copy: a search hit whose row says 0 already holds its only
provider, and only the shared ones cost a second query for their providers.

``feed(seq, kind, content_id, name_id, words, name, size, peer_id, address)`` is the
registry's one change feed, written by triggers whichever path changes the index:
``added`` and ``removed`` for a file row of a peer that is handed out (with its name,
the name's words, size and the provider), ``peer_joined`` and ``peer_left`` for such
a peer (a peer whose address passed its dial-back joins then, with all its files),
``hidden`` for a file of a peer taken out of the answers before its rows are deleted
(a logout, an eviction), and ``reset``: anything may have changed. Two readers: each
tracker process reads it before a search and drops the kept answers
(``SearchCache``) the changes could alter, and the event stream (``tracker.events``)
tails it through ``feed_after``. ``tidy`` trims it.

``names.words`` holds the name's words as ``p2pshare.core.names.words`` folds them,
so the FTS5 prefix query for a term is exactly "some word starts with it"; every
candidate is still checked with ``Query.matches``, so the tracker never answers a
name that a peer's own matcher would refuse.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import secrets
import sqlite3
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import zstandard

from p2pshare.core.names import Query, words
from p2pshare.core.rate import client_key
from p2pshare.core.search_cache import SearchCache
from p2pshare.errors import Busy, ConfigError, NotFound, PermissionDenied, UsageError
from p2pshare.tracker.models import SEARCH_HITS, FileEntry, PeerRef, SearchHit, hit_json

__all__ = [
    "CHECKING",
    "NOT_CHECKED",
    "SLICE_ROWS",
    "ClientLimits",
    "FeedRow",
    "Reachability",
    "Registration",
    "Registry",
    "RegistryStats",
    "SqliteRegistry",
    "fts_terms",
    "run_steps",
    "tidy",
]

MAX_PROVIDERS = 50
"""At most this many providers are listed per content id (the freshest first)."""
GLOB_SCAN_LIMIT = 5_000
"""A glob looks at no more candidate files than this before answering (a glob with no
word start, such as ``*tux*``, is a scan: over a large registry its answer is partial)."""
_SQL_VARS = 500
MMAP_BYTES = 1 << 30
CACHE_KIB = 32 << 10
HEARTBEAT_FLUSH_SECONDS = 0.5
MERGE_PAGES = 200
"""Renewed leases are written to the file in one transaction at most this often."""
CHANGES_KEPT = 10_000
"""``tidy`` trims the change log to about this many rows; a process that has not read
the rows trimmed drops all its kept answers."""
_CHANGES_READ = 256
"""More changes than this since a process last looked: it drops all its kept answers
instead of reading them."""
SAMPLE_TRIES_PER_PEER = 8
"""``sample`` tries this many random row ids per peer wanted before reading them all."""
CACHED_FROM_ROWS = 4
"""A search that visited fewer index rows than this is cheaper to run again than to keep."""
_COPIES_READ = 1_000
"""A changed content with more copies than this drops all kept answers (its names are
not read)."""


SLICE_ROWS = 500
"""A write changes at most this many file rows per transaction, then lets others in
(``*_steps``): replacing, deleting or purging 60,000 files froze the tracker for 5-31 s
in one transaction; a slice holds the write lock for tens of milliseconds."""
_READ_ROWS = 5_000
CHECKING = "the tracker is dialling this address back"
NOT_CHECKED = "not checked: this tracker does not dial peers back (verify_addresses = false)"

T = TypeVar("T")


def run_steps(steps: Generator[None, None, T]) -> T:
    """Run the steps of a sliced write to the end at once; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What one client address may hold in the registry (0: no limit)."""

    max_peers_per_client: int = 0
    """Live registrations made from one address (IPv4, or IPv6 /64)."""
    max_files_per_client: int = 0
    """Files indexed for all the live registrations made from one address."""
    max_files_per_peer: int = 0
    """Files in one registration, and in one request."""


@dataclass(frozen=True, slots=True)
class Reachability:
    """What the tracker knows of whether a registration's address answers as its peer:
    ``reachable`` None while unknown (being checked, or not checked at all)."""

    reachable: bool | None
    reason: str
    handed_out: bool


def _reachability(reachable: int, checked: int, reason: str) -> Reachability:
    known = bool(reachable) if checked else None
    return Reachability(known, reason, bool(reachable))


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One row of the registry's change feed (see the module's docstring)."""

    seq: int
    kind: str
    """``added``, ``removed``, ``peer_joined``, ``peer_left``; ``hidden``, ``reset``
    (for kept answers only)."""
    content_id: str
    name: str
    size: int
    peer_id: str
    address: str


@dataclass(frozen=True, slots=True)
class Registration:
    """What ``register`` gives a joining peer."""

    peer_id: str
    token: str
    neighbours: list[PeerRef]


@dataclass(frozen=True, slots=True)
class RegistryStats:
    """Live peers and the files they share (for ``/healthz`` and ``/metrics``)."""

    peers: int
    files: int


class Registry(Protocol):
    """A store of registrations. Tokens are checked here; times are given, never read.

    Writes that may touch many files come in two forms: ``x_steps`` yields after each
    slice of ``SLICE_ROWS`` rows (the tracker's event loop serves others in between),
    and ``x`` runs those steps to the end at once."""

    @property
    def lease_seconds(self) -> float: ...

    def register(
        self,
        address: str,
        files: Sequence[FileEntry],
        now: float,
        *,
        neighbours: int = 8,
        client: str | None = None,
        check: bool = False,
        previous: tuple[str, str] | None = None,
    ) -> Registration: ...

    def register_steps(
        self,
        address: str,
        files: Sequence[FileEntry],
        now: float,
        *,
        neighbours: int = 8,
        client: str | None = None,
        check: bool = False,
        previous: tuple[str, str] | None = None,
    ) -> Generator[None, None, Registration]: ...

    def settle(
        self, peer_id: str, *, reachable: bool, reason: str, evict_holders: bool, now: float
    ) -> bool: ...

    def settle_steps(
        self, peer_id: str, *, reachable: bool, reason: str, evict_holders: bool, now: float
    ) -> Generator[None, None, bool]: ...

    def holders(self, peer_id: str, now: float) -> list[str]: ...

    def reachability(self, peer_id: str) -> Reachability: ...

    def address_of(self, peer_id: str) -> tuple[str, str | None] | None: ...

    def heartbeat(self, peer_id: str, token: str, now: float) -> Reachability: ...

    def replace_files(
        self, peer_id: str, token: str, files: Sequence[FileEntry], now: float
    ) -> int: ...

    def replace_files_steps(
        self, peer_id: str, token: str, files: Sequence[FileEntry], now: float
    ) -> Generator[None, None, int]: ...

    def patch_files(
        self,
        peer_id: str,
        token: str,
        add: Sequence[FileEntry],
        remove_content_ids: Sequence[str],
        now: float,
    ) -> int: ...

    def patch_files_steps(
        self,
        peer_id: str,
        token: str,
        add: Sequence[FileEntry],
        remove_content_ids: Sequence[str],
        now: float,
    ) -> Generator[None, None, int]: ...

    def remove(self, peer_id: str, token: str, now: float) -> None: ...

    def remove_steps(self, peer_id: str, token: str, now: float) -> Generator[None, None, None]: ...

    def search(self, query: Query, limit: int, now: float) -> list[SearchHit]: ...

    def search_json(self, query: Query, limit: int, now: float) -> bytes: ...

    def search_counts(self) -> tuple[int, int]: ...

    def feed_after(self, seq: int, limit: int) -> list[FeedRow]: ...

    def feed_end(self) -> int: ...

    def providers(self, content_id: str, now: float) -> SearchHit: ...

    def live_peers(self, limit: int, now: float) -> list[PeerRef]: ...

    def sample(self, n: int, exclude: Iterable[str], now: float) -> list[PeerRef]: ...

    def stats(self, now: float) -> RegistryStats: ...

    def purge(self, now: float, *, batch: int = 0) -> int: ...

    def flush(self, now: float) -> int: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
    id INTEGER PRIMARY KEY,
    peer_id TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL,
    token_hash BLOB NOT NULL,
    expires REAL NOT NULL,
    file_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS peers_expires ON peers(expires);
CREATE INDEX IF NOT EXISTS peers_address ON peers(address);
CREATE TABLE IF NOT EXISTS names (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    words TEXT NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS names_fts USING fts5(
    words, content='names', content_rowid='id',
    tokenize='unicode61 remove_diacritics 2', prefix='1 2 3'
);
CREATE TRIGGER IF NOT EXISTS names_ai AFTER INSERT ON names BEGIN
    INSERT INTO names_fts(rowid, words) VALUES (new.id, new.words);
END;
CREATE TRIGGER IF NOT EXISTS names_ad AFTER DELETE ON names BEGIN
    INSERT INTO names_fts(names_fts, rowid, words) VALUES ('delete', old.id, old.words);
END;
CREATE TABLE IF NOT EXISTS feed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    content_id TEXT NOT NULL DEFAULT '',
    name_id INTEGER,
    words TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    peer_id TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS files (
    peer INTEGER NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    content_id TEXT NOT NULL,
    name_id INTEGER NOT NULL REFERENCES names(id),
    size INTEGER NOT NULL,
    shared INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (peer, content_id)
) WITHOUT ROWID;
"""

_PEER_COLUMNS = {
    "client": "TEXT NOT NULL DEFAULT ''",
    "reachable": "INTEGER NOT NULL DEFAULT 1",
    "checked": "INTEGER NOT NULL DEFAULT 0",
    "reason": "TEXT NOT NULL DEFAULT ''",
}
"""Columns added to ``peers`` after the first release (a registration of an older file
stays handed out, as it was)."""

_FILE_INDEXES = """
CREATE INDEX IF NOT EXISTS peers_client ON peers(client, expires);
DROP INDEX IF EXISTS files_name;
DROP INDEX IF EXISTS files_content;
DROP INDEX IF EXISTS files_name_size;
CREATE INDEX IF NOT EXISTS files_by_content ON files(content_id, shared);
CREATE INDEX IF NOT EXISTS files_by_name ON files(name_id, size, shared);
CREATE TRIGGER IF NOT EXISTS files_shared_in AFTER INSERT ON files
WHEN EXISTS (SELECT 1 FROM files WHERE content_id = new.content_id AND peer != new.peer)
BEGIN
    UPDATE files SET shared = 1 WHERE content_id = new.content_id AND shared = 0;
END;
CREATE TRIGGER IF NOT EXISTS files_shared_out AFTER DELETE ON files
WHEN old.shared = 1 AND (
    SELECT count(*) FROM (SELECT 1 FROM files WHERE content_id = old.content_id LIMIT 2)
) = 1
BEGIN
    UPDATE files SET shared = 0 WHERE content_id = old.content_id;
END;
DROP TRIGGER IF EXISTS files_changed_in;
DROP TRIGGER IF EXISTS files_changed_out;
DROP TRIGGER IF EXISTS index_events_trim;
DROP TRIGGER IF EXISTS index_events_peer_in;
DROP TRIGGER IF EXISTS index_events_peer_out;
DROP TRIGGER IF EXISTS index_events_file_in;
DROP TRIGGER IF EXISTS index_events_file_out;
DROP TABLE IF EXISTS changes;
DROP TABLE IF EXISTS index_events;
CREATE TRIGGER IF NOT EXISTS feed_file_in AFTER INSERT ON files
WHEN (SELECT reachable FROM peers WHERE id = new.peer) = 1
BEGIN
    INSERT INTO feed(kind, content_id, name_id, words, name, size, peer_id, address)
    SELECT 'added', new.content_id, new.name_id, n.words, n.name, new.size, p.peer_id, p.address
    FROM peers p, names n WHERE p.id = new.peer AND n.id = new.name_id;
END;
CREATE TRIGGER IF NOT EXISTS feed_file_out AFTER DELETE ON files
WHEN (SELECT reachable FROM peers WHERE id = old.peer) = 1
BEGIN
    INSERT INTO feed(kind, content_id, name_id, words, name, size, peer_id, address)
    SELECT 'removed', old.content_id, old.name_id, n.words, n.name, old.size, p.peer_id, p.address
    FROM peers p, names n WHERE p.id = old.peer AND n.id = old.name_id;
END;
CREATE TRIGGER IF NOT EXISTS feed_peer_in AFTER INSERT ON peers WHEN new.reachable = 1
BEGIN
    INSERT INTO feed(kind, peer_id, address) VALUES ('peer_joined', new.peer_id, new.address);
END;
CREATE TRIGGER IF NOT EXISTS feed_peer_out AFTER DELETE ON peers WHEN old.reachable = 1
BEGIN
    INSERT INTO feed(kind, peer_id, address) VALUES ('peer_left', old.peer_id, old.address);
END;
DROP TRIGGER IF EXISTS feed_peer_shown;
CREATE TRIGGER IF NOT EXISTS feed_peer_shown AFTER UPDATE OF reachable ON peers
WHEN new.reachable = 1 AND old.reachable != 1
BEGIN
    INSERT INTO feed(kind, peer_id, address) VALUES ('peer_joined', new.peer_id, new.address);
END;
"""
_MARK_SHARED = """
UPDATE files SET shared = 1 WHERE content_id IN (
    SELECT content_id FROM files GROUP BY content_id HAVING count(*) > 1
)
"""


def _statements(script: str) -> Iterator[str]:
    """The statements of ``script`` one by one (a trigger's body holds semicolons too)."""
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            yield current
            current = ""


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def tidy(path: Path | str) -> None:
    """Tidy the registry at ``path`` on a connection of its own (it may fsync: the
    tracker runs it on a thread, never on its event loop):

    - trim the change log to its last ``CHANGES_KEPT`` rows;
    - merge a little of the name index: every registration adds a small FTS5 segment,
      and a search looks its terms up in every segment. Merged into one, a search over
      100k names spent 34-40 us in FTS5 instead of 52-55. A step writes at most
      ``MERGE_PAGES`` pages (~25 ms with the write lock held), nothing once merged;
    - copy the WAL into the database, without blocking readers or writers (passive).
    """
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=5000")
        # negative: merge segments of any level, towards one, like 'optimize' in steps
        db.execute("INSERT INTO names_fts(names_fts, rank) VALUES('merge', ?)", (-MERGE_PAGES,))
        db.execute("DELETE FROM feed WHERE seq <= (SELECT max(seq) FROM feed) - ?", (CHANGES_KEPT,))
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        db.close()


def fts_terms(query: Query) -> list[str]:
    """The words of ``query`` that every matching name has a word starting with.

    For a words query these are its terms. For a glob, only literal words that
    begin the glob or follow a literal separator count (in ``*an.iso`` the ``an``
    may end a word, ``iso`` must start one); nothing after a ``[`` counts.
    """
    if query.glob is None:
        return list(query.terms)
    glob = query.glob.split("[", 1)[0]
    terms: list[str] = []
    word_start = True
    current = ""
    for c in glob:
        if c.isalnum():
            current += c
            continue
        if current and word_start:
            terms.append(current)
        current = ""
        word_start = c not in "*?"
    # the last run may be cut by a "[" or end the glob: it still starts a word
    if current and word_start:
        terms.append(current)
    return [t for t in terms if words(t) == [t]]


def _match_expression(terms: Iterable[str]) -> str:
    return " AND ".join('"' + t.replace('"', '""') + '"*' for t in terms)


@dataclass(slots=True)
class _PickedHits:
    """The hits a search keeps of its candidate rows (``_pick_hits``)."""

    found: dict[str, str]
    """Content id -> its hit as JSON, in the order of the rows."""
    shared_ids: list[str]
    """Content ids of ``found`` shared by several peers: their rows name one provider."""
    scanned: int
    """Rows read."""
    valid_until: float
    """When the answer stops holding: the first of its providers expires."""
    cut_at: int | None
    """The last name read, if the answer stops short of all; else None."""


def _pick_hits(rows: Iterable[tuple[Any, ...]], query: Query, limit: int) -> _PickedHits:
    """The first ``limit`` content ids of ``rows`` (``SqliteRegistry._hit_rows``) whose
    name matches ``query``, one hit each; a glob reads at most ``GLOB_SCAN_LIMIT`` rows."""
    found: dict[str, str] = {}
    shared_ids: list[str] = []
    checked: dict[str, bool] = {}
    scanned = 0
    valid_until = math.inf  # the answer holds until one of its providers expires
    cut_at: int | None = None  # the last name read, if the answer stops short of all
    glob = query.glob is not None
    spaced_terms = [" " + t for t in query.terms]
    for name_id, content_id, name, name_words, shared, expires, hit in rows:
        scanned += 1
        if glob and scanned > GLOB_SCAN_LIMIT:
            cut_at = name_id
            break
        if content_id in found:
            continue
        ok = checked.get(name)
        if ok is None:
            if glob:
                ok = query.matches(name)
            else:
                # names.words is words(name) joined by spaces, so " t" in " words"
                # is "some word starts with t": Query.matches without folding again
                padded = " " + name_words
                ok = all(t in padded for t in spaced_terms)
            checked[name] = ok
        if ok:
            found[content_id] = hit
            if shared:
                shared_ids.append(content_id)
            elif expires < valid_until:
                valid_until = expires
            if len(found) >= limit:
                cut_at = name_id
                break
    return _PickedHits(found, shared_ids, scanned, valid_until, cut_at)


class SqliteRegistry:
    """The registry in one SQLite file; a tracker restart on the same file keeps it all.

    Use it from one thread at a time (the tracker's event loop): each call is a
    few indexed statements and returns in well under a millisecond.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        lease_seconds: float,
        rng: random.Random | None = None,
        auto_checkpoint: bool = True,
        search_cache_bytes: int = 0,
        client_limits: ClientLimits | None = None,
    ) -> None:
        """``auto_checkpoint=False``: commits never copy the WAL into the database (and
        never fsync it); the owner calls ``tidy(path)`` from another thread.
        ``search_cache_bytes``: memory for search answers kept until a change could
        alter them (0: none kept). ``client_limits``: what one client address may
        hold (default: no limit)."""
        self._lease = float(lease_seconds)
        self._limits = client_limits or ClientLimits()
        self._rng = rng or random.SystemRandom()
        # renewed leases not yet written: peer pk -> new expiry (see ``heartbeat``)
        self._pending: dict[int, float] = {}
        self._hidden_from = math.inf  # a read at or after this time must flush first
        self._flushed_at = -math.inf
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        except sqlite3.OperationalError as exc:
            # e.g. its folder does not exist: the user gets the setting to fix, not a trace
            raise ConfigError(f"tracker.db: cannot open {path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # reads through a memory map (no system call per page) and a larger page
            # cache: a search over a million files touches a few dozen scattered pages
            self._db.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            if not auto_checkpoint:
                self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._transaction() as db:
                self._create_schema(db)
            self._cache = SearchCache(search_cache_bytes) if search_cache_bytes > 0 else None
            self._searches_kept = self._searches_run = 0
            self._pack = zstandard.ZstdCompressor(level=1)
            self._unpack = zstandard.ZstdDecompressor()
            self._seen = int(
                self._db.execute("SELECT coalesce(max(seq), 0) FROM feed").fetchone()[0]
            )
            self._db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS staging ("
                " content_id TEXT NOT NULL, name TEXT NOT NULL, words TEXT NOT NULL,"
                " size INTEGER NOT NULL)"
            )
        except BaseException:
            self._db.close()
            raise

    @staticmethod
    def _create_schema(db: sqlite3.Connection) -> None:
        """Create the tables, or bring a file of an older tracker up to date (once: every
        worker process runs this, one at a time, and all but the first find it done)."""
        columns = {row[1] for row in db.execute("PRAGMA table_info(files)")}
        for statement in _statements(_SCHEMA):
            db.execute(statement)
        if columns and "shared" not in columns:
            db.execute("ALTER TABLE files ADD COLUMN shared INTEGER NOT NULL DEFAULT 0")
            db.execute(_MARK_SHARED)
        peer_columns = {row[1] for row in db.execute("PRAGMA table_info(peers)")}
        for name, kind in _PEER_COLUMNS.items():
            if name not in peer_columns:
                db.execute(f"ALTER TABLE peers ADD COLUMN {name} {kind}")
        for statement in _statements(_FILE_INDEXES):
            db.execute(statement)

    @property
    def lease_seconds(self) -> float:
        return self._lease

    def close(self) -> None:
        """Write renewed leases, then close the file."""
        try:
            if self._pending:
                self.flush(self._flushed_at)
        finally:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- writes ------------------------------------------------------------------------

    def register(
        self,
        address: str,
        files: Sequence[FileEntry],
        now: float,
        *,
        neighbours: int = 8,
        client: str | None = None,
        check: bool = False,
        previous: tuple[str, str] | None = None,
    ) -> Registration:
        """``register_steps`` run to the end at once."""
        return run_steps(
            self.register_steps(
                address,
                files,
                now,
                neighbours=neighbours,
                client=client,
                check=check,
                previous=previous,
            )
        )

    def register_steps(
        self,
        address: str,
        files: Sequence[FileEntry],
        now: float,
        *,
        neighbours: int = 8,
        client: str | None = None,
        check: bool = False,
        previous: tuple[str, str] | None = None,
    ) -> Generator[None, None, Registration]:
        """Add a peer with its files, in slices of ``SLICE_ROWS`` (a step each), and
        pick up to ``neighbours`` other peers for it among those handed out.

        Other live registrations of the same address are left alone: an address is
        taken over only with proof, here ``previous`` (the peer id and token of the
        registration it replaces: a wrong token is ``PermissionDenied``), or the
        dial-back (``settle``). ``client``: the address the request came from, whose
        registrations count against ``ClientLimits`` (``Busy`` beyond them).
        ``check``: the tracker dials the address back; until ``settle`` says it
        answered as this peer, the registration is not handed out.
        """
        self._check_files(len(files))
        peer_id = secrets.token_hex(16)
        token = secrets.token_urlsafe(32)
        key = client_key(client) if client else ""
        with self._transaction() as db:
            replaced = self._proven(address, previous, now) if previous else []
            if key:
                self._check_client(key, now, peers=1, files=len(files), leaving=replaced)
            for old in replaced:
                self._hide(old)
            reachable, reason = (0, CHECKING) if check else (1, NOT_CHECKED)
            pk = db.execute(
                "INSERT INTO peers(peer_id, address, token_hash, expires, file_count, client,"
                " reachable, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    peer_id,
                    address,
                    _token_hash(token),
                    now + self._lease,
                    len(files),
                    key,
                    reachable,
                    reason,
                ),
            ).fetchone()[0]
        yield from self._change_steps(pk, (), files, now)
        yield from self._drop_steps(replaced)
        return Registration(peer_id, token, self.sample(neighbours, (peer_id,), now))

    def settle(
        self, peer_id: str, *, reachable: bool, reason: str, evict_holders: bool, now: float
    ) -> bool:
        """``settle_steps`` run to the end at once."""
        return run_steps(
            self.settle_steps(
                peer_id, reachable=reachable, reason=reason, evict_holders=evict_holders, now=now
            )
        )

    def settle_steps(
        self, peer_id: str, *, reachable: bool, reason: str, evict_holders: bool, now: float
    ) -> Generator[None, None, bool]:
        """Record the dial-back's verdict on a registration (``core.reachability``);
        with ``evict_holders`` the other live registrations of its address are dropped
        at once from every answer (the purge deletes them). False if the registration
        is gone meanwhile. A peer shown joins the feed with its files' ``added`` rows,
        ``SLICE_ROWS`` a step."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id, address, reachable, file_count FROM peers"
                " WHERE peer_id = ? AND expires > 0",
                (peer_id,),
            ).fetchone()
            if row is None:
                return False
            pk, address, was, files = row
            db.execute(
                "UPDATE peers SET reachable = ?, checked = 1, reason = ? WHERE id = ?",
                (int(reachable), reason[:500], pk),
            )
            if was and not reachable:
                self._log_files_of(pk)
            shown = reachable and not was
            if shown and files > _CHANGES_READ:
                # the kept answers go at once; the files' rows follow in slices
                db.execute("INSERT INTO feed(kind) VALUES ('reset')")
            if evict_holders:
                for old in self._holders(address, pk, now):
                    self._hide(old)
            after = self._announce_files(pk, "") if shown else None
        while after is not None:
            yield
            with self._transaction():
                if not self._db.execute(
                    "SELECT 1 FROM peers WHERE id = ? AND expires > 0 AND reachable = 1", (pk,)
                ).fetchone():
                    break
                after = self._announce_files(pk, after)
        return True

    def _announce_files(self, pk: int, after: str) -> str | None:
        """Log ``added`` for up to ``SLICE_ROWS`` files of a peer just shown, those with a
        content id past ``after``; the last content id logged (None: all are)."""
        logged = [
            r[0]
            for r in self._db.execute(
                "INSERT INTO feed(kind, content_id, name_id, words, name, size, peer_id, address)"
                " SELECT 'added', f.content_id, f.name_id, n.words, n.name, f.size, p.peer_id,"
                " p.address FROM files f JOIN names n ON n.id = f.name_id"
                " JOIN peers p ON p.id = f.peer"
                " WHERE f.peer = ? AND f.content_id > ? ORDER BY f.content_id LIMIT ?"
                " RETURNING content_id",
                (pk, after, SLICE_ROWS),
            )
        ]
        return max(logged) if len(logged) >= SLICE_ROWS else None

    def holders(self, peer_id: str, now: float) -> list[str]:
        """The peer ids of the other live registrations of ``peer_id``'s address."""
        row = self._db.execute(
            "SELECT id, address FROM peers WHERE peer_id = ?", (peer_id,)
        ).fetchone()
        if row is None:
            return []
        pks = self._holders(row[1], row[0], now)
        if not pks:
            return []
        marks = ",".join("?" * len(pks))
        return [
            r[0] for r in self._db.execute(f"SELECT peer_id FROM peers WHERE id IN ({marks})", pks)
        ]

    def address_of(self, peer_id: str) -> tuple[str, str | None] | None:
        """The address of a live registration and the client address it came from."""
        row = self._db.execute(
            "SELECT address, client FROM peers WHERE peer_id = ? AND expires > 0", (peer_id,)
        ).fetchone()
        return None if row is None else (row[0], row[1] or None)

    def reachability(self, peer_id: str) -> Reachability:
        """What the tracker knows of whether ``peer_id``'s address answers as it."""
        row = self._db.execute(
            "SELECT reachable, checked, reason FROM peers WHERE peer_id = ?", (peer_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no live peer {peer_id!r:.80} (register again)")
        return _reachability(*row)

    def heartbeat(self, peer_id: str, token: str, now: float) -> Reachability:
        """Renew the lease of a live peer; return what the tracker knows of its address.

        The new expiry is written with the next ``flush`` (at most
        ``HEARTBEAT_FLUSH_SECONDS`` of ``now`` later, or before a read of this registry
        that it would change), so a heartbeat is one indexed read and no write
        transaction; tracker processes sharing the file do not queue on its write lock.
        """
        row = self._db.execute(
            "SELECT id, token_hash, expires, reachable, checked, reason FROM peers"
            " WHERE peer_id = ?",
            (peer_id,),
        ).fetchone()
        pk, stored = self._check_token(peer_id, token, now, row)
        self._pending[pk] = now + self._lease
        self._hidden_from = min(self._hidden_from, stored)
        if not 0 <= now - self._flushed_at < HEARTBEAT_FLUSH_SECONDS:
            self.flush(now)
        return _reachability(row[3], row[4], row[5])

    def flush(self, now: float) -> int:
        """Write the leases renewed since the last flush; return how many."""
        pending = self._pending
        self._flushed_at = now
        if not pending:
            return 0
        with self._transaction() as db:
            # max(): another tracker process may have written a later renewal; a peer
            # logged out or evicted meanwhile (expires 0) stays gone
            db.executemany(
                "UPDATE peers SET expires = max(expires, ?) WHERE id = ? AND expires > 0",
                [(expires, pk) for pk, expires in pending.items()],
            )
            if self._hidden_from <= now:
                # a peer renewed here may have looked expired to another process, which
                # then answered searches without it: its kept answers must go
                db.execute("INSERT INTO feed(kind) VALUES ('reset')")
        n = len(pending)
        self._pending = {}
        self._hidden_from = math.inf
        return n

    def _fresh(self, now: float) -> None:
        """Flush first if a peer renewed here would look expired in the file at ``now``."""
        if now >= self._hidden_from:
            self.flush(now)

    def replace_files(
        self, peer_id: str, token: str, files: Sequence[FileEntry], now: float
    ) -> int:
        """``replace_files_steps`` run to the end at once."""
        return run_steps(self.replace_files_steps(peer_id, token, files, now))

    def replace_files_steps(
        self, peer_id: str, token: str, files: Sequence[FileEntry], now: float
    ) -> Generator[None, None, int]:
        """Make ``files`` the whole index of the peer; renew its lease; return the file
        count. Only what differs from the index as it is is written, in slices of
        ``SLICE_ROWS`` (a step each): replacing 60,000 files by the same 60,000 is one
        read."""
        pk, _ = self._authorize(peer_id, token, now)
        self._check_files(len(files))
        current: dict[str, tuple[str, int]] = {}
        after = ""
        while True:  # read in slices too: 100,000 rows take a while
            rows = self._db.execute(
                "SELECT f.content_id, n.name, f.size FROM files f"
                " JOIN names n ON n.id = f.name_id WHERE f.peer = ? AND f.content_id > ?"
                " ORDER BY f.content_id LIMIT ?",
                (pk, after, _READ_ROWS),
            ).fetchall()
            current.update((cid, (name, size)) for cid, name, size in rows)
            if len(rows) < _READ_ROWS:
                break
            after = rows[-1][0]
            yield
        wanted: dict[str, FileEntry] = {}
        for f in files:
            wanted.setdefault(f.content_id, f)  # a repeated content id keeps its first name
        remove = [
            cid
            for cid, kept in current.items()
            if (w := wanted.get(cid)) is None or (w.name, w.size) != kept
        ]
        add = [f for cid, f in wanted.items() if current.get(cid) != (f.name, f.size)]
        self._check_client_of(pk, now, files=len(add) - len(remove))
        return (yield from self._change_steps(pk, remove, add, now))

    def patch_files(
        self,
        peer_id: str,
        token: str,
        add: Sequence[FileEntry],
        remove_content_ids: Sequence[str],
        now: float,
    ) -> int:
        """``patch_files_steps`` run to the end at once."""
        return run_steps(self.patch_files_steps(peer_id, token, add, remove_content_ids, now))

    def patch_files_steps(
        self,
        peer_id: str,
        token: str,
        add: Sequence[FileEntry],
        remove_content_ids: Sequence[str],
        now: float,
    ) -> Generator[None, None, int]:
        """Remove then add files of the peer (a re-added content id takes its new name
        and size); renew its lease; return the file count. In slices, as
        ``replace_files_steps``."""
        pk, _ = self._authorize(peer_id, token, now)
        self._check_files(len(add) + len(remove_content_ids))
        wanted: dict[str, FileEntry | None] = dict.fromkeys(remove_content_ids)
        firsts: dict[str, FileEntry] = {}
        for f in add:
            firsts.setdefault(f.content_id, f)
        wanted.update(firsts)
        current: dict[str, tuple[str, int]] = {}
        touched = list(wanted)
        for start in range(0, len(touched), _SQL_VARS):
            chunk = touched[start : start + _SQL_VARS]
            marks = ",".join("?" * len(chunk))
            for cid, name, size in self._db.execute(
                "SELECT f.content_id, n.name, f.size FROM files f"
                f" JOIN names n ON n.id = f.name_id WHERE f.peer = ? AND f.content_id IN ({marks})",
                (pk, *chunk),
            ):
                current[cid] = (name, size)
        remove = [
            cid
            for cid, kept in current.items()
            if (w := wanted[cid]) is None or (w.name, w.size) != kept
        ]
        new = [
            f for cid, f in wanted.items() if f is not None and current.get(cid) != (f.name, f.size)
        ]
        self._check_client_of(pk, now, files=len(new) - len(remove))
        return (yield from self._change_steps(pk, remove, new, now))

    def remove(self, peer_id: str, token: str, now: float) -> None:
        """``remove_steps`` run to the end at once."""
        run_steps(self.remove_steps(peer_id, token, now))

    def remove_steps(self, peer_id: str, token: str, now: float) -> Generator[None, None, None]:
        """Log the peer out: it is gone from every answer at once; its files are
        deleted in slices (a step each)."""
        pk, _ = self._authorize(peer_id, token, now)
        with self._transaction():
            self._hide(pk)
        yield from self._drop_steps([pk])

    def purge(self, now: float, *, batch: int = 0) -> int:
        """Delete up to ``batch`` rows (``SLICE_ROWS`` if 0) of peers whose lease ran out
        or that were logged out or evicted: their files, then the peer once it has none.
        Return the rows deleted (0: nothing left to purge); call again until then."""
        self.flush(now)
        budget = batch or SLICE_ROWS
        deleted = 0
        with self._transaction() as db:
            expired = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM peers WHERE expires <= ? ORDER BY expires LIMIT ?",
                    (now, budget),
                )
            ]
            for pk in expired:
                n, done = self._drop_slice(pk, budget - deleted)
                deleted += n + done
                if deleted >= budget:
                    break
        return deleted

    # -- the steps of a write -----------------------------------------------------------

    def _change_steps(
        self, pk: int, remove: Sequence[str], add: Sequence[FileEntry], now: float
    ) -> Generator[None, None, int]:
        """Delete the content ids ``remove`` of peer ``pk``, then insert ``add``, at most
        ``SLICE_ROWS`` rows per transaction, a step after each; renew the lease last.
        ``NotFound`` if the peer is logged out, evicted or purged meanwhile."""
        for start in range(0, len(remove), SLICE_ROWS):
            with self._transaction():
                self._still_there(pk)
                orphans = self._delete_files(pk, remove[start : start + SLICE_ROWS])
                self._drop_orphan_names(orphans)
            yield
        for start in range(0, len(add), SLICE_ROWS):
            with self._transaction():
                self._still_there(pk)
                self._insert_files(pk, add[start : start + SLICE_ROWS])
            yield
        with self._transaction():
            self._still_there(pk)
            return self._touch(pk, now)

    def _delete_files(self, pk: int, content_ids: Sequence[str]) -> list[int]:
        orphans: list[int] = []
        for cid in content_ids:
            orphans += [
                r[0]
                for r in self._db.execute(
                    "DELETE FROM files WHERE peer = ? AND content_id = ? RETURNING name_id",
                    (pk, cid),
                )
            ]
        return orphans

    def _drop_steps(self, pks: Sequence[int]) -> Generator[None, None, None]:
        """Delete peers (hidden already) and their files, ``SLICE_ROWS`` rows a step."""
        for pk in pks:
            done = False
            while not done:
                with self._transaction():
                    _, done = self._drop_slice(pk, SLICE_ROWS)
                yield

    def _drop_slice(self, pk: int, budget: int) -> tuple[int, bool]:
        """Delete up to ``budget`` files of peer ``pk``, and the peer once none is left
        (inside a transaction): the files deleted, and whether the peer is gone."""
        orphans = [
            r[0]
            for r in self._db.execute(
                # plain ? only: Python 3.12 deprecates ?NNN with a sequence of values
                "DELETE FROM files WHERE peer = ? AND content_id IN"
                " (SELECT content_id FROM files WHERE peer = ? LIMIT ?) RETURNING name_id",
                (pk, pk, max(budget, 1)),
            )
        ]
        self._drop_orphan_names(orphans)
        if len(orphans) >= max(budget, 1):
            return len(orphans), False
        self._db.execute("DELETE FROM peers WHERE id = ?", (pk,))
        return len(orphans), True

    def _hide(self, pk: int) -> None:
        """Take a peer out of every answer at once (inside a transaction): its lease
        ends (``expires`` 0, which a renewal never undoes); the purge deletes it."""
        self._pending.pop(pk, None)
        row = self._db.execute(
            "UPDATE peers SET expires = 0 WHERE id = ? RETURNING reachable", (pk,)
        ).fetchone()
        if row is not None and row[0]:  # answers held its files: they must go
            self._log_files_of(pk)

    def _log_files_of(self, pk: int) -> None:
        """Log the files of a peer taken out of the answers (``hidden``, for kept
        answers; inside a transaction); many files: a ``reset``."""
        rows = self._db.execute(
            "SELECT f.content_id, f.name_id, n.words FROM files f"
            " JOIN names n ON n.id = f.name_id WHERE f.peer = ? LIMIT ?",
            (pk, _CHANGES_READ + 1),
        ).fetchall()
        if len(rows) > _CHANGES_READ:
            self._db.execute("INSERT INTO feed(kind) VALUES ('reset')")
        elif rows:
            self._db.executemany(
                "INSERT INTO feed(kind, content_id, name_id, words) VALUES ('hidden', ?, ?, ?)",
                rows,
            )

    def _still_there(self, pk: int) -> None:
        if self._db.execute("SELECT 1 FROM peers WHERE id = ? AND expires > 0", (pk,)).fetchone():
            return
        raise NotFound("this registration was logged out or taken over meanwhile (register again)")

    def _holders(self, address: str, pk: int, now: float) -> list[int]:
        return [
            r[0]
            for r in self._db.execute(
                "SELECT id FROM peers WHERE address = ? AND id != ? AND expires > ?",
                (address, pk, now),
            )
        ]

    def _proven(self, address: str, previous: tuple[str, str], now: float) -> list[int]:
        """The registration that ``previous`` (peer id, token) proves the new one
        replaces: ``PermissionDenied`` for a wrong token; none if it is not live at
        ``address``."""
        peer_id, token = previous
        row = self._db.execute(
            "SELECT id, token_hash, expires, address FROM peers WHERE peer_id = ?", (peer_id,)
        ).fetchone()
        if row is None or row[2] <= now or row[3] != address:
            return []
        if not hmac.compare_digest(row[1], _token_hash(token)):
            raise PermissionDenied(f"wrong token for peer {peer_id!r:.80}")
        return [int(row[0])]

    def _check_files(self, n: int) -> None:
        limit = self._limits.max_files_per_peer
        if limit and n > limit:
            raise UsageError(
                f"{n} files in one request; this tracker takes at most {limit} per peer"
            )

    def _check_client(
        self, key: str, now: float, *, peers: int, files: int, leaving: Sequence[int] = ()
    ) -> None:
        """``Busy`` if client ``key``'s live registrations would pass ``ClientLimits``."""
        limits = self._limits
        if not (limits.max_peers_per_client or limits.max_files_per_client):
            return
        live, indexed = self._db.execute(
            "SELECT count(*), coalesce(sum(file_count), 0) FROM peers"
            " WHERE client = ? AND expires > ?",
            (key, now),
        ).fetchone()
        live -= len(leaving)
        if peers and limits.max_peers_per_client and live + peers > limits.max_peers_per_client:
            raise Busy(
                f"{key} already has {live} live registrations, the most this tracker takes"
                f" from one address ({limits.max_peers_per_client}): log the others out or"
                " let their leases run out"
            )
        if (
            files > 0
            and limits.max_files_per_client
            and indexed + files > limits.max_files_per_client
        ):
            raise Busy(
                f"the registrations from {key} would index {indexed + files} files; this"
                f" tracker indexes at most {limits.max_files_per_client} from one address"
            )

    def _check_client_of(self, pk: int, now: float, *, files: int) -> None:
        row = self._db.execute("SELECT client FROM peers WHERE id = ?", (pk,)).fetchone()
        if row is not None and row[0]:
            self._check_client(row[0], now, peers=0, files=files)

    def _authorize(self, peer_id: str, token: str, now: float) -> tuple[int, float]:
        """The peer's pk and expiry as stored; NotFound or PermissionDenied."""
        row = self._db.execute(
            "SELECT id, token_hash, expires FROM peers WHERE peer_id = ?", (peer_id,)
        ).fetchone()
        return self._check_token(peer_id, token, now, row)

    def _check_token(self, peer_id: str, token: str, now: float, row: Any) -> tuple[int, float]:
        if row is None or max(row[2], self._pending.get(row[0], row[2])) <= now:
            raise NotFound(f"no live peer {peer_id!r:.80} (register again)")
        if not hmac.compare_digest(row[1], _token_hash(token)):
            raise PermissionDenied(f"wrong token for peer {peer_id!r:.80}")
        return int(row[0]), float(row[2])

    def _touch(self, pk: int, now: float) -> int:
        row = self._db.execute(
            "UPDATE peers SET expires = ?,"
            " file_count = (SELECT count(*) FROM files WHERE peer = ?)"
            " WHERE id = ? RETURNING file_count",
            (now + self._lease, pk, pk),
        ).fetchone()
        return int(row[0])

    def _insert_files(self, pk: int, files: Sequence[FileEntry]) -> None:
        """Add files of peer ``pk`` (in a transaction); a repeated content id keeps its first
        name. The caller updates the file count with ``_touch``."""
        if not files:
            return
        db = self._db
        db.executemany(
            "INSERT INTO staging(content_id, name, words, size) VALUES (?, ?, ?, ?)",
            ((f.content_id, f.name, " ".join(words(f.name)), f.size) for f in files),
        )
        db.execute(
            "INSERT OR IGNORE INTO names(name, words)"
            " SELECT name, min(words) FROM staging GROUP BY name"
        )
        db.execute(
            "INSERT OR IGNORE INTO files(peer, content_id, name_id, size)"
            " SELECT ?, s.content_id, n.id, s.size FROM staging s"
            " JOIN names n ON n.name = s.name ORDER BY s.rowid",
            (pk,),
        )
        db.execute("DELETE FROM staging")

    def _drop_orphan_names(self, name_ids: Iterable[int]) -> None:
        self._db.executemany(
            "DELETE FROM names WHERE id = ? AND NOT EXISTS (SELECT 1 FROM files WHERE name_id = ?)",
            ((i, i) for i in set(name_ids)),
        )

    # -- reads -------------------------------------------------------------------------

    def search(self, query: Query, limit: int, now: float) -> list[SearchHit]:
        """Up to ``limit`` content ids whose name matches ``query``, with live providers."""
        return SEARCH_HITS.validate_json(self.search_json(query, limit, now))

    def search_json(self, query: Query, limit: int, now: float) -> bytes:
        """``search``'s hits as the JSON array ``SearchHit`` models encode to (UTF-8):
        the tracker's hot path, where building and encoding a model per hit cost more
        than the query. SQLite writes the object of each hit as it reads its row."""
        self._fresh(now)
        if limit <= 0:
            return b"[]"
        terms = fts_terms(query)
        cache = self._cache if terms else None
        key = (query.terms, query.glob, limit)
        if cache is not None:
            self._catch_up(cache)
            kept = cache.get(key, now)
            if kept is not None:
                self._searches_kept += 1
                return self._unpack.decompress(kept)
        self._searches_run += 1
        rows = self._hit_rows(terms, now)
        picked = _pick_hits(rows, query, limit)
        rows.close()
        if picked.shared_ids:
            self._name_every_provider(picked, now)
        answer = ("[" + ",".join(picked.found.values()) + "]").encode()
        if cache is not None and picked.scanned >= CACHED_FROM_ROWS:
            # zstd level 1: 11.6 kB of 50 hits take 4.8 kB, read back in 13 us (zlib: 5 kB,
            # 65 us); so 24 MiB keep the answers of the load benchmark's 5,000 words.
            # Copied: zstd's bytes sit in a block of the worst-case size, whose unused
            # end, between kept answers, would stay a hole (RSS was twice the budget)
            packed = bytes(memoryview(self._pack.compress(answer)))
            cache.put(key, terms, packed, picked.valid_until, last_rank=picked.cut_at)
        return answer

    def _hit_rows(self, terms: list[str], now: float) -> sqlite3.Cursor:
        """Candidate rows of a search: ``(name id, content id, name, words, shared,
        expires, hit as JSON)`` of every file of a live, reachable provider whose name
        has words starting with ``terms`` (every file, without terms). The row's peer is
        the provider; for shared content, one of several."""
        columns = (
            "n.id, f.content_id, n.name, n.words, f.shared, p.expires,"
            " json_object('content_id', f.content_id, 'name', n.name, 'size', f.size,"
            " 'providers', json_array(json_object('peer_id', p.peer_id, 'address', p.address)))"
        )
        if terms:
            return self._db.execute(
                f"SELECT {columns} FROM names_fts"
                " JOIN names n ON n.id = names_fts.rowid"
                " JOIN files f ON f.name_id = n.id"
                " JOIN peers p ON p.id = f.peer"
                " WHERE names_fts MATCH ? AND p.expires > ? AND p.reachable = 1"
                # names in the order they were first registered (FTS5 reads them so:
                # no sort), so that a new name cannot enter an answer cut at its limit
                " ORDER BY names_fts.rowid",
                (_match_expression(terms), now),
            )
        return self._db.execute(
            f"SELECT {columns} FROM files f"
            " JOIN names n ON n.id = f.name_id"
            " JOIN peers p ON p.id = f.peer"
            " WHERE p.expires > ? AND p.reachable = 1",
            (now,),
        )

    def _name_every_provider(self, picked: _PickedHits, now: float) -> None:
        """Give each hit of shared content (found with one provider) all its live
        providers; the answer then holds only until the first of them expires."""
        providers, earliest = self._providers_of(picked.shared_ids, now)
        picked.valid_until = min(picked.valid_until, earliest)
        found = picked.found
        for cid in picked.shared_ids:
            hit = json.loads(found[cid])
            found[cid] = hit_json(cid, hit["name"], hit["size"], providers.get(cid, []))

    def feed_after(self, seq: int, limit: int) -> list[FeedRow]:
        """Up to ``limit`` rows of the change feed after ``seq``, oldest first."""
        return [
            FeedRow(*row)
            for row in self._db.execute(
                "SELECT seq, kind, content_id, name, size, peer_id, address FROM feed"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            )
        ]

    def feed_end(self) -> int:
        """The last row of the change feed (0: none)."""
        return int(self._db.execute("SELECT coalesce(max(seq), 0) FROM feed").fetchone()[0])

    def search_counts(self) -> tuple[int, int]:
        """Searches answered from kept answers, and searches run, since the start."""
        return self._searches_kept, self._searches_run

    def _catch_up(self, cache: SearchCache) -> None:
        """Drop the kept answers that the changes logged since the last look could alter."""
        rows = self._db.execute(
            "SELECT seq, kind, content_id, name_id, words FROM feed WHERE seq > ?"
            " ORDER BY seq LIMIT ?",
            (self._seen, _CHANGES_READ + 1),
        ).fetchall()
        if not rows:
            return
        if len(rows) > _CHANGES_READ or rows[0][0] != self._seen + 1:
            # too many to be worth reading, or trimmed before this process saw them
            self._seen = int(self._db.execute("SELECT max(seq) FROM feed").fetchone()[0])
            cache.clear()
            return
        self._seen = rows[-1][0]
        contents: set[str] = set()
        for _, kind, content_id, name_id, name_words in rows:
            if kind == "reset":
                cache.clear()
                return
            if not content_id:
                continue  # a peer joined or left: its files have rows of their own
            cache.forget_words(name_words.split(), name_id)
            contents.add(content_id)
        # an answer lists a content's providers whatever name matched: the answers of
        # every other name of a changed content may have changed too
        for content_id in contents:
            name_ids = {
                r[0]
                for r in self._db.execute(
                    "SELECT name_id FROM files WHERE content_id = ? LIMIT ?",
                    (content_id, _COPIES_READ + 1),
                )
            }
            if len(name_ids) > _COPIES_READ:
                cache.clear()
                return
            for name_id, name_words in self._db.execute(
                f"SELECT id, words FROM names WHERE id IN ({','.join('?' * len(name_ids))})",
                tuple(name_ids),
            ):
                cache.forget_words(name_words.split(), name_id)

    def providers(self, content_id: str, now: float) -> SearchHit:
        """The content id's name, size and live providers; ``NotFound`` if none is live."""
        self._fresh(now)
        row = self._db.execute(
            "SELECT n.name, f.size FROM files f"
            " JOIN peers p ON p.id = f.peer JOIN names n ON n.id = f.name_id"
            " WHERE f.content_id = ? AND p.expires > ? AND p.reachable = 1"
            " ORDER BY p.expires DESC LIMIT 1",
            (content_id, now),
        ).fetchone()
        if row is None:
            raise NotFound(f"no live peer provides {content_id}")
        refs = self._providers_of([content_id], now)[0].get(content_id, [])
        return SearchHit(
            content_id=content_id,
            name=row[0],
            size=row[1],
            providers=[PeerRef(peer_id=p, address=a) for p, a in refs],
        )

    def _providers_of(
        self, content_ids: list[str], now: float
    ) -> tuple[dict[str, list[tuple[str, str]]], float]:
        """(peer id, address) of up to ``MAX_PROVIDERS`` live providers per content id, the
        freshest first; and the earliest lease among those listed."""
        found: dict[str, list[tuple[float, str, str]]] = {}
        for start in range(0, len(content_ids), _SQL_VARS):
            chunk = content_ids[start : start + _SQL_VARS]
            marks = ",".join("?" * len(chunk))
            for cid, expires, peer_id, address in self._db.execute(
                "SELECT f.content_id, p.expires, p.peer_id, p.address"
                " FROM files f JOIN peers p ON p.id = f.peer"
                f" WHERE f.content_id IN ({marks}) AND p.expires > ? AND p.reachable = 1",
                (*chunk, now),
            ):
                found.setdefault(cid, []).append((expires, peer_id, address))
        out: dict[str, list[tuple[str, str]]] = {}
        earliest = math.inf
        for cid, refs in found.items():
            if len(refs) > 1:
                refs.sort(reverse=True)
            listed = refs[:MAX_PROVIDERS]
            earliest = min(earliest, listed[-1][0])
            out[cid] = [(peer_id, address) for _, peer_id, address in listed]
        return out, earliest

    def live_peers(self, limit: int, now: float) -> list[PeerRef]:
        """Up to ``limit`` live peers, the most recently heard of first."""
        self._fresh(now)
        return [
            PeerRef(peer_id=peer_id, address=address)
            for peer_id, address in self._db.execute(
                "SELECT peer_id, address FROM peers WHERE expires > ? AND reachable = 1"
                " ORDER BY expires DESC LIMIT ?",
                (now, max(limit, 0)),
            )
        ]

    def sample(self, n: int, exclude: Iterable[str], now: float) -> list[PeerRef]:
        """Up to ``n`` live peers chosen at random, none of whose ids is in ``exclude``.

        Rejection sampling: a random row id between the smallest and the largest, kept
        if its peer is live and not excluded, so each such peer is as likely as any
        other; one indexed read per try. Reading every live peer to pick 8 took a
        registration 14 ms with 10,000 peers, and a tenth of a tracker's time at 10
        registrations per second. When ids are sparse or live peers few, the tries
        run out and it picks among all of them.
        """
        self._fresh(now)
        if n <= 0:
            return []
        skip = set(exclude)
        lo, hi = self._db.execute("SELECT min(id), max(id) FROM peers").fetchone()
        if lo is None:
            return []
        found: dict[int, PeerRef] = {}
        for _ in range(SAMPLE_TRIES_PER_PEER * n):
            pk = self._rng.randint(lo, hi)
            if pk in found:
                continue
            row = self._db.execute(
                "SELECT peer_id, address FROM peers WHERE id = ? AND expires > ? AND reachable = 1",
                (pk, now),
            ).fetchone()
            if row is not None and row[0] not in skip:
                found[pk] = PeerRef(peer_id=row[0], address=row[1])
                if len(found) == n:
                    return list(found.values())
        ids = [
            pk
            for pk, peer_id in self._db.execute(
                "SELECT id, peer_id FROM peers WHERE expires > ? AND reachable = 1", (now,)
            )
            if peer_id not in skip
        ]
        chosen = self._rng.sample(ids, min(n, len(ids)))
        if not chosen:
            return []
        marks = ",".join("?" * len(chosen))
        rows = {
            pk: PeerRef(peer_id=peer_id, address=address)
            for pk, peer_id, address in self._db.execute(
                f"SELECT id, peer_id, address FROM peers WHERE id IN ({marks})", chosen
            )
        }
        return [rows[pk] for pk in chosen]

    def stats(self, now: float) -> RegistryStats:
        self._fresh(now)
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(file_count), 0) FROM peers WHERE expires > ?", (now,)
        ).fetchone()
        return RegistryStats(peers=int(row[0]), files=int(row[1]))

"""SqliteRegistry on a temporary file, with explicit clocks."""

from __future__ import annotations

import hashlib
import json
import random
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.core.names import parse_query
from p2pshare.errors import NotFound, PermissionDenied
from p2pshare.tracker import registry as registry_module
from p2pshare.tracker.models import FileEntry
from p2pshare.tracker.registry import SqliteRegistry, fts_terms, tidy
from tests.sqlite_raw import raw_db

LEASE = 60.0
T0 = 1_000_000.0


def cid(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def entry(n: int, name: str, size: int = 10) -> FileEntry:
    return FileEntry(content_id=cid(n), name=name, size=size)


@pytest.fixture
def reg(tmp_path):
    r = SqliteRegistry(tmp_path / "tracker.db", lease_seconds=LEASE, rng=random.Random(7))
    yield r
    r.close()


def names_of(reg, query: str, now: float = T0) -> set[str]:
    return {h.name for h in reg.search(parse_query(query), 100, now)}


def test_registered_files_are_found_with_their_provider(reg):
    a = reg.register("10.0.0.1:1", [entry(1, "debian-linux-12.iso", 42)], T0)
    [hit] = reg.search(parse_query("linux"), 10, T0)
    assert (hit.content_id, hit.name, hit.size) == (cid(1), "debian-linux-12.iso", 42)
    assert [(p.peer_id, p.address) for p in hit.providers] == [(a.peer_id, "10.0.0.1:1")]


def test_search_groups_providers_per_content_id(reg):
    a = reg.register("10.0.0.1:1", [entry(1, "movie.mkv")], T0)
    b = reg.register("10.0.0.2:1", [entry(1, "other name of movie.mkv")], T0)
    hits = reg.search(parse_query("movie"), 10, T0)
    assert len(hits) == 1
    assert {p.peer_id for p in hits[0].providers} == {a.peer_id, b.peer_id}


def test_search_limit_counts_content_ids(reg):
    reg.register("10.0.0.1:1", [entry(i, f"song {i}.mp3") for i in range(20)], T0)
    assert len(reg.search(parse_query("song"), 5, T0)) == 5


def test_expired_peer_is_absent_from_search_providers_and_peers(reg):
    old = reg.register("10.0.0.1:1", [entry(1, "old.txt")], T0)
    new = reg.register("10.0.0.2:1", [entry(2, "new.txt")], T0 + 30)
    later = T0 + LEASE + 1
    assert names_of(reg, "txt", later) == {"new.txt"}
    with pytest.raises(NotFound):
        reg.providers(cid(1), later)
    assert [p.peer_id for p in reg.live_peers(10, later)] == [new.peer_id]
    assert old.peer_id not in {p.peer_id for p in reg.sample(10, (), later)}
    assert reg.stats(later).peers == 1


def test_heartbeat_extends_the_lease(reg):
    a = reg.register("10.0.0.1:1", [entry(1, "a.txt")], T0)
    reg.heartbeat(a.peer_id, a.token, T0 + 50)
    assert reg.providers(cid(1), T0 + 100).providers[0].peer_id == a.peer_id
    with pytest.raises(NotFound):
        reg.providers(cid(1), T0 + 111)


def test_heartbeat_of_expired_peer_is_not_found_even_with_its_token(reg):
    a = reg.register("10.0.0.1:1", [], T0)
    with pytest.raises(NotFound):
        reg.heartbeat(a.peer_id, a.token, T0 + LEASE)


def test_unknown_peer_is_not_found(reg):
    with pytest.raises(NotFound):
        reg.heartbeat("nobody", "x", T0)


def test_wrong_token_is_denied_for_every_update(reg):
    a = reg.register("10.0.0.1:1", [entry(1, "a.txt")], T0)
    b = reg.register("10.0.0.2:1", [], T0)
    for call in (
        lambda: reg.heartbeat(a.peer_id, b.token, T0),
        lambda: reg.replace_files(a.peer_id, b.token, [], T0),
        lambda: reg.patch_files(a.peer_id, "", [], [cid(1)], T0),
        lambda: reg.remove(a.peer_id, a.token + "x", T0),
    ):
        with pytest.raises(PermissionDenied):
            call()
    assert names_of(reg, "a") == {"a.txt"}


def test_only_a_hash_of_the_token_is_stored(reg, tmp_path):
    a = reg.register("10.0.0.1:1", [], T0)
    dump = "\n".join(raw_db(tmp_path / "tracker.db").iterdump())
    assert a.token not in dump


def test_replace_files_swaps_the_whole_index(reg):
    a = reg.register("10.0.0.1:1", [entry(1, "one.txt"), entry(2, "two.txt")], T0)
    assert reg.replace_files(a.peer_id, a.token, [entry(3, "three.txt")], T0) == 1
    assert names_of(reg, "txt") == {"three.txt"}
    assert reg.stats(T0).files == 1


def test_patch_adds_and_removes_files(reg):
    a = reg.register("10.0.0.1:1", [entry(1, "one.txt"), entry(2, "two.txt")], T0)
    count = reg.patch_files(a.peer_id, a.token, [entry(3, "three.txt")], [cid(1)], T0)
    assert count == 2
    assert names_of(reg, "txt") == {"two.txt", "three.txt"}
    with pytest.raises(NotFound):
        reg.providers(cid(1), T0)


def test_patch_re_adding_a_content_id_renames_it(reg):
    a = reg.register("10.0.0.1:1", [entry(1, "draft.txt")], T0)
    reg.patch_files(a.peer_id, a.token, [entry(1, "final.txt")], [], T0)
    assert names_of(reg, "txt") == {"final.txt"}


def test_remove_logs_out_at_once(reg):
    a = reg.register("10.0.0.1:1", [entry(1, "a.txt")], T0)
    reg.remove(a.peer_id, a.token, T0)
    assert names_of(reg, "a") == set()
    with pytest.raises(NotFound):
        reg.heartbeat(a.peer_id, a.token, T0)


def test_registering_another_peers_address_does_not_evict_it(reg):
    """Issue 14: one unauthenticated registration removed a live peer and its files."""
    old = reg.register("10.0.0.1:1", [entry(1, "a.txt")], T0)
    new = reg.register("10.0.0.1:1", [entry(2, "b.txt")], T0 + 1)
    reg.heartbeat(old.peer_id, old.token, T0 + 1)
    assert [p.peer_id for p in reg.providers(cid(1), T0 + 1).providers] == [old.peer_id]
    assert reg.holders(new.peer_id, T0 + 1) == [old.peer_id]


def test_the_old_token_takes_an_address_over_at_once(reg):
    old = reg.register("10.0.0.1:1", [entry(1, "a.txt")], T0)
    with pytest.raises(PermissionDenied):
        reg.register("10.0.0.1:1", [], T0 + 1, previous=(old.peer_id, "wrong"))
    new = reg.register("10.0.0.1:1", [entry(1, "a.txt")], T0 + 1, previous=(old.peer_id, old.token))
    assert [p.peer_id for p in reg.providers(cid(1), T0 + 1).providers] == [new.peer_id]
    with pytest.raises(NotFound):
        reg.heartbeat(old.peer_id, old.token, T0 + 1)
    # a previous registration of another address proves nothing here
    other = reg.register("10.0.0.2:1", [], T0 + 2)
    reg.register("10.0.0.1:1", [], T0 + 2, previous=(other.peer_id, other.token))
    reg.heartbeat(other.peer_id, other.token, T0 + 2)


def test_a_checked_registration_is_handed_out_only_once_it_answered(reg):
    holder = reg.register("10.0.0.1:1", [entry(1, "a.txt")], T0)
    new = reg.register("10.0.0.1:1", [entry(1, "a.txt")], T0 + 1, check=True)
    assert reg.reachability(new.peer_id).reachable is None
    assert [p.peer_id for p in reg.providers(cid(1), T0 + 1).providers] == [holder.peer_id]
    assert new.peer_id not in {p.peer_id for p in reg.live_peers(10, T0 + 1)}
    assert reg.settle(
        new.peer_id, reachable=True, reason="answered", evict_holders=True, now=T0 + 1
    )
    assert [p.peer_id for p in reg.providers(cid(1), T0 + 1).providers] == [new.peer_id]
    assert reg.heartbeat(new.peer_id, new.token, T0 + 2).reachable is True
    with pytest.raises(NotFound):
        reg.heartbeat(holder.peer_id, holder.token, T0 + 2)
    reg.purge(T0 + 2)
    assert [p.peer_id for p in reg.live_peers(10, T0 + 2)] == [new.peer_id]


def test_a_registration_that_failed_its_dial_back_is_never_handed_out(reg):
    bad = reg.register("198.51.100.1:1", [entry(1, "a.txt")], T0, check=True)
    reg.settle(bad.peer_id, reachable=False, reason="port 1 closed?", evict_holders=False, now=T0)
    state = reg.heartbeat(bad.peer_id, bad.token, T0 + 1)
    assert (state.reachable, state.reason) == (False, "port 1 closed?")
    assert names_of(reg, "a", T0 + 1) == set()
    assert reg.live_peers(10, T0 + 1) == [] and reg.sample(5, (), T0 + 1) == []
    with pytest.raises(NotFound):
        reg.providers(cid(1), T0 + 1)


def test_neighbours_are_other_live_peers(reg):
    others = {reg.register(f"10.0.0.{i}:1", [], T0).peer_id for i in range(5)}
    me = reg.register("10.0.1.1:1", [], T0, neighbours=3)
    assert len(me.neighbours) == 3
    assert {n.peer_id for n in me.neighbours} <= others
    assert len(reg.register("10.0.1.2:1", [], T0, neighbours=100).neighbours) == 6


def test_a_sample_is_uniform_over_live_peers_whatever_the_gaps_in_ids(tmp_path):
    """Rejection sampling on row ids: peers after a run of deleted ids are no likelier
    than others, expired and excluded peers never come, and with few live peers the
    sample falls back to all of them."""
    reg = SqliteRegistry(tmp_path / "t.db", lease_seconds=LEASE, rng=random.Random(3))
    try:
        regs = [reg.register(f"10.0.0.{i}:1", [], T0, neighbours=0) for i in range(40)]
        for r in regs[10:30]:  # a gap of 20 ids before regs[30]
            reg.remove(r.peer_id, r.token, T0)
        live = [r.peer_id for r in regs[:10] + regs[30:]]
        counts = dict.fromkeys(live, 0)
        for _ in range(2_000):
            picked = [p.peer_id for p in reg.sample(4, (live[0],), T0)]
            assert len(set(picked)) == 4
            for peer_id in picked:
                counts[peer_id] += 1
        assert counts.pop(live[0]) == 0
        # 8,000 picks over 19 peers: 421 each on average; a peer after the gap, if
        # favoured, would get about 20 times that
        assert max(counts.values()) < 1.3 * min(counts.values()), counts
        later = T0 + LEASE + 1
        reg.heartbeat(regs[0].peer_id, regs[0].token, T0 + LEASE / 2)
        reg.heartbeat(regs[35].peer_id, regs[35].token, T0 + LEASE / 2)
        assert {p.peer_id for p in reg.sample(8, (), later)} == {
            regs[0].peer_id,
            regs[35].peer_id,
        }
    finally:
        reg.close()


def test_live_peers_lists_the_most_recent_first(reg):
    a = reg.register("10.0.0.1:1", [], T0)
    b = reg.register("10.0.0.2:1", [], T0 + 1)
    assert [p.peer_id for p in reg.live_peers(10, T0 + 2)] == [b.peer_id, a.peer_id]
    assert len(reg.live_peers(1, T0 + 2)) == 1


def test_purge_deletes_expired_peers_and_their_names(reg, tmp_path):
    reg.register("10.0.0.1:1", [entry(1, "gone.txt")], T0)
    keep = reg.register("10.0.0.2:1", [entry(2, "kept.txt")], T0 + 30)
    assert reg.purge(T0 + LEASE) == 2  # a file row and its peer
    assert reg.purge(T0 + LEASE) == 0
    db = raw_db(tmp_path / "tracker.db")
    assert [r[0] for r in db.execute("SELECT name FROM names")] == ["kept.txt"]
    assert [r[0] for r in db.execute("SELECT peer_id FROM peers")] == [keep.peer_id]


def test_restart_on_the_same_file_keeps_registrations(tmp_path):
    path = tmp_path / "tracker.db"
    first = SqliteRegistry(path, lease_seconds=LEASE)
    a = first.register("10.0.0.1:1", [entry(1, "kept.iso")], T0)
    first.close()
    second = SqliteRegistry(path, lease_seconds=LEASE)
    try:
        assert [h.name for h in second.search(parse_query("kept"), 10, T0)] == ["kept.iso"]
        second.heartbeat(a.peer_id, a.token, T0 + 1)
        with pytest.raises(PermissionDenied):
            second.heartbeat(a.peer_id, "forged", T0 + 1)
    finally:
        second.close()


NAMES = [
    "debian-linux-12.iso",
    "Ubuntu_22.04_desktop.ISO",
    "music/Café del Mar - Été.flac",
    "music/cafeteria.mp3",
    "docs/Straße und Weg.pdf",
    "photos/IMG_0001.JPG",
    "photos/img0002.jpeg",
    "books/Ωmega Ünïcode.epub",
    "notes.txt",
    "a/b/c/deep name.tar.gz",
]

QUERIES = [
    "linux",
    "lin iso",
    "LIN",
    "cafe",
    "café",
    "ete",
    "strasse",
    "straße",
    "img",
    "0001",
    "ωmega",
    "unicode",
    "deep tar",
    "nux",
    "*.iso",
    "*.ISO",
    "*linux*",
    "deb*an*",
    "music/*",
    "photos/img_????.jpg",
    "*",
    "*.[jt]*",
    "?otes.txt",
    "d*",
]


@pytest.mark.parametrize("text", QUERIES)
def test_search_agrees_with_core_names(reg, text):
    reg.register("10.0.0.1:1", [entry(i, n) for i, n in enumerate(NAMES)], T0)
    query = parse_query(text)
    assert names_of(reg, text) == {n for n in NAMES if query.matches(n)}


def test_prefix_query_needs_a_word_start():
    # "nux" is inside "linux" but starts no word
    assert fts_terms(parse_query("nux")) == ["nux"]


@pytest.mark.parametrize(
    ("glob", "terms"),
    [
        ("*.iso", ["iso"]),
        ("deb*an.iso", ["deb", "iso"]),
        ("*", []),
        ("a?c", ["a"]),
        ("photos/[ab]*.jpg", ["photos"]),
    ],
)
def test_glob_uses_only_literal_word_starts_as_fts_terms(glob, terms):
    assert fts_terms(parse_query(glob)) == terms


def test_a_heartbeat_reaches_the_file_by_the_next_flush(tmp_path):
    path = tmp_path / "shared.db"
    one = SqliteRegistry(path, lease_seconds=LEASE)
    other = SqliteRegistry(path, lease_seconds=LEASE)  # another tracker process
    try:
        a = one.register("10.0.0.1:1", [entry(1, "kept.iso")], T0)
        one.heartbeat(a.peer_id, a.token, T0 + 10)  # written: expires T0 + 70
        one.heartbeat(a.peer_id, a.token, T0 + 10.4)  # within the flush interval: pending
        assert other.search(parse_query("kept"), 10, T0 + 70.2) == []
        assert one.flush(T0 + 10.5) == 1
        [hit] = other.search(parse_query("kept"), 10, T0 + 70.2)
        assert hit.providers[0].peer_id == a.peer_id
        other.heartbeat(a.peer_id, a.token, T0 + 70.3)  # the other process renews it
    finally:
        one.close()
        other.close()


def test_this_registry_sees_its_own_unwritten_heartbeats(reg):
    a = reg.register("10.0.0.1:1", [entry(1, "mine.iso")], T0)
    reg.heartbeat(a.peer_id, a.token, T0 + 1)  # written: expires T0 + 61
    reg.heartbeat(a.peer_id, a.token, T0 + 1.1)  # not yet written
    assert names_of(reg, "mine", T0 + 61) == {"mine.iso"}
    reg.heartbeat(a.peer_id, a.token, T0 + 59)
    reg.heartbeat(a.peer_id, a.token, T0 + 59.1)
    assert names_of(reg, "mine", T0 + 100) == {"mine.iso"}
    assert [p.peer_id for p in reg.live_peers(10, T0 + 100)] == [a.peer_id]
    reg.heartbeat(a.peer_id, a.token, T0 + 110)
    assert reg.purge(T0 + 150) == 0


def test_a_stale_flush_never_shortens_a_lease(tmp_path):
    path = tmp_path / "shared.db"
    one = SqliteRegistry(path, lease_seconds=LEASE)
    other = SqliteRegistry(path, lease_seconds=LEASE)
    try:
        a = one.register("10.0.0.1:1", [entry(1, "x.iso")], T0)
        one.heartbeat(a.peer_id, a.token, T0 + 10)
        one.heartbeat(a.peer_id, a.token, T0 + 10.1)  # pending in one: expires T0 + 70.1
        other.heartbeat(a.peer_id, a.token, T0 + 30)  # written: expires T0 + 90
        one.flush(T0 + 31)
        assert names_of(other, "x", T0 + 80) == {"x.iso"}
    finally:
        one.close()
        other.close()


def test_close_writes_pending_heartbeats(tmp_path):
    path = tmp_path / "t.db"
    first = SqliteRegistry(path, lease_seconds=LEASE)
    a = first.register("10.0.0.1:1", [entry(1, "x.iso")], T0)
    first.heartbeat(a.peer_id, a.token, T0 + 50)
    first.heartbeat(a.peer_id, a.token, T0 + 50.1)
    first.close()
    second = SqliteRegistry(path, lease_seconds=LEASE)
    try:
        assert names_of(second, "x", T0 + 100) == {"x.iso"}
    finally:
        second.close()


def test_tidy_from_another_connection_keeps_everything(tmp_path):
    path = tmp_path / "t.db"
    reg = SqliteRegistry(path, lease_seconds=LEASE, auto_checkpoint=False)
    try:
        for i in range(50):
            reg.register(f"10.0.0.{i}:1", [entry(i, f"file-{i}.iso")], T0)
        wal = path.with_name("t.db-wal")
        assert wal.stat().st_size > 0
        tidy(path)  # while the registry is open and in use
        reg.register("10.0.1.1:1", [entry(99, "late.iso")], T0)
        assert len(names_of(reg, "file")) == 50
    finally:
        reg.close()
    again = SqliteRegistry(path, lease_seconds=LEASE)
    try:
        assert len(names_of(again, "file")) == 50 and names_of(again, "late") == {"late.iso"}
    finally:
        again.close()


# -- files.shared: the second providers query is skipped only for a content's only copy

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["register", "replace", "patch", "remove", "expire"]),
        st.integers(0, 3),  # which address (peer)
        st.lists(st.integers(0, 5), max_size=4),  # content ids added
        st.lists(st.integers(0, 5), max_size=2),  # content ids removed (patch)
    ),
    max_size=25,
)


def _shared_is_exact(db_path) -> None:
    db = raw_db(db_path)
    try:
        wrong = db.execute(
            "SELECT content_id, shared, (SELECT count(*) FROM files g"
            " WHERE g.content_id = f.content_id) FROM files f"
            " WHERE shared != ((SELECT count(*) FROM files g"
            " WHERE g.content_id = f.content_id) > 1)"
        ).fetchall()
    finally:
        db.close()
    assert wrong == []


@settings(max_examples=60)
@given(ops=_OPS)
def test_search_lists_every_live_provider_whatever_the_history(tmp_path_factory, ops):
    path = tmp_path_factory.mktemp("reg") / "tracker.db"
    reg = SqliteRegistry(path, lease_seconds=LEASE, rng=random.Random(1))
    now = T0
    peers: dict[int, tuple[str, str]] = {}
    try:
        for op, who, add, drop in ops:
            now += 1
            files = [entry(n, f"item {n} of peer {who}.bin") for n in add]
            if op == "register" or who not in peers:
                r = reg.register(f"10.0.0.{who}:1", files, now)
                peers[who] = (r.peer_id, r.token)
            elif op == "replace":
                reg.replace_files(*peers[who], files, now)
            elif op == "patch":
                reg.patch_files(*peers[who], files, [cid(n) for n in drop], now)
            elif op == "remove":
                reg.remove(*peers[who], now)
                del peers[who]
            else:  # the peer's lease runs out (the others renew theirs), the purge deletes it
                for other, creds in peers.items():
                    if other != who:
                        reg.heartbeat(*creds, now)
                        reg.heartbeat(*creds, now + LEASE / 2)
                now += LEASE + 1
                reg.purge(now)
                del peers[who]
            reg.flush(now)
            _shared_is_exact(path)
        for hit in reg.search(parse_query("item"), 100, now):
            expected = reg.providers(hit.content_id, now).providers
            assert sorted(hit.providers, key=str) == sorted(expected, key=str)
    finally:
        reg.close()


def test_a_file_of_an_older_tracker_gets_its_shared_marks(tmp_path):
    path = tmp_path / "tracker.db"
    reg = SqliteRegistry(path, lease_seconds=LEASE)
    a = reg.register("10.0.0.1:1", [entry(1, "common.iso"), entry(2, "rare.iso")], T0)
    b = reg.register("10.0.0.2:1", [entry(1, "common copy.iso")], T0)
    reg.close()
    # the file as the tracker before files.shared left it
    db = raw_db(path)
    db.executescript(
        "DROP TRIGGER files_shared_in; DROP TRIGGER files_shared_out;"
        " DROP INDEX files_by_content; DROP INDEX files_by_name;"
        " ALTER TABLE files DROP COLUMN shared;"
        " CREATE INDEX files_content ON files(content_id, peer);"
        " CREATE INDEX files_name_size ON files(name_id, size);"
    )
    db.close()
    reg = SqliteRegistry(path, lease_seconds=LEASE)
    try:
        _shared_is_exact(path)
        [hit] = reg.search(parse_query("common"), 10, T0)
        assert {p.peer_id for p in hit.providers} == {a.peer_id, b.peer_id}
        reg.remove(b.peer_id, b.token, T0)
        _shared_is_exact(path)
    finally:
        reg.close()


def test_the_hot_paths_json_is_the_models_json_for_awkward_names(reg):
    awkward = [
        *NAMES,
        'say "hi".txt',
        "back\\slash\\name.txt",
        "emoji 🎵 song.mp3",
        "ctrl\x01char.txt",
        "tab\tname.txt",
        "line\u2028sep.txt",
        "quote'd & <tagged>.html",
        "漢字 かな.txt",
    ]

    def valid(n: int, name: str) -> FileEntry | None:
        try:
            return entry(n, name)
        except ValueError:
            return None

    files = [f for n, name in enumerate(awkward) if (f := valid(n, name)) is not None]
    assert {'say "hi".txt', "emoji 🎵 song.mp3", "漢字 かな.txt"} <= {f.name for f in files}
    reg.register("10.0.0.1:1", files, T0)
    # every other one has a second copy: those hits take their providers from a query
    reg.register('10.0.0.2:1"\\', files[::2], T0)
    query = parse_query("*")
    hits = reg.search(query, 500, T0)
    assert len(hits) == len(files)
    assert json.loads(reg.search_json(query, 500, T0)) == [h.model_dump(mode="json") for h in hits]
    assert {len(h.providers) for h in hits} == {1, 2}


def test_tidy_merges_the_name_index_and_searches_answer_the_same(tmp_path):
    path = tmp_path / "t.db"
    reg = SqliteRegistry(path, lease_seconds=LEASE, auto_checkpoint=False)
    try:
        # one registration, one small segment of the name index each
        for i in range(90):  # names_of answers up to 100
            reg.register(f"10.0.{i}.1:1", [entry(i, f"show {i % 7} part-{i}.mkv")], T0)
        before = {q: names_of(reg, q) for q in ("show", "part", "show 3", "pa*")}
        db = raw_db(path)
        pages = db.execute("SELECT count(*) FROM names_fts_data").fetchone()[0]
        for _ in range(20):
            tidy(path)
        assert db.execute("SELECT count(*) FROM names_fts_data").fetchone()[0] < pages
        db.execute("INSERT INTO names_fts(names_fts) VALUES('integrity-check')")
        db.close()
        assert {q: names_of(reg, q) for q in before} == before
        assert len(before["show"]) == 90 and before["show 3"] < before["show"]
    finally:
        reg.close()


# -- kept search answers: a caching registry answers as a fresh search would


def _answers(reg, queries, now):
    out = {}
    for text, limit in queries:
        hits = reg.search(parse_query(text), limit, now)
        out[text, limit] = [
            (h.content_id, h.name, h.size, sorted((p.peer_id, p.address) for p in h.providers))
            for h in hits
        ]
    return out


_VOCAB = ["alpha", "alpine", "beta", "bet", "gamma"]
_QUERIES = [
    (q, limit)
    for q in ("a", "al", "alp", "alpha", "be", "beta", "g", "alpha beta", "al ga", "alp*.bin")
    for limit in (2, 100)
]
_CACHE_OPS = st.lists(
    st.tuples(
        st.sampled_from(["register", "replace", "patch", "remove", "heartbeat", "tick"]),
        st.integers(0, 3),  # which address (peer)
        # files added: (content id, name of 1 to 3 vocabulary words); the same content
        # id under different names by different peers makes shared content
        st.lists(
            st.tuples(st.integers(0, 6), st.lists(st.sampled_from(_VOCAB), min_size=1, max_size=3)),
            max_size=4,
        ),
        st.integers(0, 1),  # through which of the two caching registries
        st.sampled_from([0.4, 1, 20, 40, 59.5, 61]),  # seconds a tick moves the clock
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(ops=_CACHE_OPS)
def test_kept_answers_are_what_a_fresh_search_answers(tmp_path_factory, ops):
    """Two caching registries on one file (two tracker workers) and one that keeps
    nothing: after any history of registrations, file changes, log-outs, heartbeats and
    leases running out, made through either, all three answer every query the same."""
    path = tmp_path_factory.mktemp("reg") / "tracker.db"
    with mock.patch.object(registry_module, "CACHED_FROM_ROWS", 0):  # keep every answer
        _check_kept_answers(path, ops)


def _check_kept_answers(path, ops) -> None:
    cached = [
        SqliteRegistry(path, lease_seconds=LEASE, search_cache_bytes=1 << 20) for _ in range(2)
    ]
    fresh = SqliteRegistry(path, lease_seconds=LEASE)
    now = T0
    peers: dict[int, tuple[str, str]] = {}
    try:
        for op, who, add, via, seconds in ops:
            reg = cached[via]
            files = [entry(n, " ".join(ws) + ".bin") for n, ws in add]
            creds = peers.get(who)
            try:
                if op == "tick":
                    now += seconds
                elif op == "heartbeat" and creds:
                    reg.heartbeat(*creds, now)
                elif op == "replace" and creds:
                    reg.replace_files(*creds, files, now)
                elif op == "patch" and creds:
                    reg.patch_files(*creds, files[1:], [cid(n) for n, _ in add[:1]], now)
                elif op == "remove" and creds:
                    reg.remove(*creds, now)
                    del peers[who]
                elif op != "remove":
                    r = reg.register(f"10.0.0.{who}:1", files, now)
                    peers[who] = (r.peer_id, r.token)
            except NotFound:  # its lease ran out: gone for good
                del peers[who]
            # the tracker's flush task writes renewed leases within half a second
            for r in cached:
                r.flush(now)
            expected = _answers(fresh, _QUERIES, now)
            for r in cached:
                assert _answers(r, _QUERIES, now) == expected
    finally:
        for r in (*cached, fresh):
            r.close()


def test_a_peer_renewed_on_the_edge_of_its_lease_is_not_left_out_of_kept_answers(tmp_path):
    """Worker A renews P just before its lease ends but writes it later; meanwhile worker
    B answers without P (its lease looks over in the file) and keeps that answer. When
    A's write lands, B must answer with P again."""
    path = tmp_path / "tracker.db"
    a = SqliteRegistry(path, lease_seconds=LEASE, search_cache_bytes=1 << 20)
    b = SqliteRegistry(path, lease_seconds=LEASE, search_cache_bytes=1 << 20)
    try:
        p = a.register("10.0.0.1:1", [entry(1, "tux edge.iso")], T0)
        later = T0 + LEASE / 2
        # Q's five files make B's answer worth keeping
        a.register("10.0.0.2:1", [entry(n, f"tux {n}.iso") for n in range(2, 7)], later)
        a.flush(T0 + LEASE - 0.3)
        a.heartbeat(p.peer_id, p.token, T0 + LEASE - 0.2)  # pending in A: flushed 0.1 s ago
        now = T0 + LEASE + 0.1
        assert cid(1) not in {h.content_id for h in b.search(parse_query("tux"), 50, now)}
        b.search(parse_query("tux"), 50, now)
        assert b.search_counts() == (1, 1)  # B kept its answer without P
        a.flush(now + 0.1)
        found = {h.content_id for h in b.search(parse_query("tux"), 50, now + 0.2)}
        assert cid(1) in found
        assert b.search_counts() == (1, 2)
    finally:
        a.close()
        b.close()


def test_a_kept_answer_is_served_again_and_dropped_by_a_matching_change(tmp_path):
    path = tmp_path / "tracker.db"
    reg = SqliteRegistry(path, lease_seconds=LEASE, search_cache_bytes=1 << 20)
    other = SqliteRegistry(path, lease_seconds=LEASE)
    try:
        reg.register("10.0.0.1:1", [entry(n, f"tux {n}.iso") for n in range(8)], T0)
        first = reg.search_json(parse_query("tux"), 50, T0)
        assert reg.search_json(parse_query("tux"), 50, T0 + 1) == first
        assert reg.search_counts() == (1, 1)  # one kept answer served, one search run
        other.register("10.0.0.2:1", [entry(99, "zebra.iso")], T0 + 2)  # matches no "tux"
        reg.search_json(parse_query("tux"), 50, T0 + 3)
        assert reg.search_counts() == (2, 1)
        other.register("10.0.0.3:1", [entry(100, "tuxedo.iso")], T0 + 4)
        hits = reg.search(parse_query("tux"), 50, T0 + 5)
        assert cid(100) in {h.content_id for h in hits}
        assert reg.search_counts() == (2, 2)
    finally:
        reg.close()
        other.close()


def test_tidy_trims_the_change_log_and_a_process_behind_it_starts_over(tmp_path, monkeypatch):
    path = tmp_path / "tracker.db"
    monkeypatch.setattr(registry_module, "CHANGES_KEPT", 5)
    reg = SqliteRegistry(path, lease_seconds=LEASE, search_cache_bytes=1 << 20)
    other = SqliteRegistry(path, lease_seconds=LEASE)
    try:
        reg.register("10.0.0.1:1", [entry(n, f"tux {n}.iso") for n in range(8)], T0)
        assert len(reg.search(parse_query("tux"), 50, T0)) == 8
        other.register("10.0.0.2:1", [entry(n, f"tuxedo {n}.iso") for n in range(8, 20)], T0)
        tidy(path)
        db = raw_db(path)
        assert db.execute("SELECT count(*) FROM feed").fetchone()[0] == 5
        db.close()
        assert len(reg.search(parse_query("tux"), 50, T0 + 1)) == 20
    finally:
        reg.close()
        other.close()


def test_large_writes_are_done_in_slices_that_each_commit(reg, tmp_path):
    """Issue 14: one 60,000-file transaction froze the tracker for seconds."""
    n = 3 * registry_module.SLICE_ROWS + 1
    files = [entry(i, f"file {i}.bin") for i in range(n)]
    steps = reg.register_steps("10.0.0.1:1", files, T0)
    other = raw_db(tmp_path / "tracker.db", timeout=0)
    taken = 0
    try:
        while True:
            next(steps)
            taken += 1
            # between steps nothing is held: another connection writes at once
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
    except StopIteration as stop:
        me = stop.value
    assert taken >= 4
    replaced = [entry(i, f"file {i}.bin") for i in range(1, n + 1)]
    steps = reg.replace_files_steps(me.peer_id, me.token, replaced, T0)
    assert registry_module.run_steps(steps) == n
    assert sum(1 for _ in reg.remove_steps(me.peer_id, me.token, T0)) >= 4
    assert other.execute("SELECT count(*) FROM files").fetchone()[0] == 0
    other.close()


def test_replacing_a_list_by_itself_writes_nothing(reg, tmp_path):
    files = [entry(i, f"file {i}.bin") for i in range(2000)]
    me = reg.register("10.0.0.1:1", files, T0)
    db = raw_db(tmp_path / "tracker.db")
    before = db.execute("SELECT max(seq) FROM feed").fetchone()[0]
    assert reg.replace_files(me.peer_id, me.token, files, T0 + 1) == 2000
    assert db.execute("SELECT max(seq) FROM feed").fetchone()[0] == before
    renamed = [*files[:-1], entry(1999, "renamed.bin")]
    assert reg.replace_files(me.peer_id, me.token, renamed, T0 + 2) == 2000
    assert names_of(reg, "renamed", T0 + 2) == {"renamed.bin"}
    assert db.execute("SELECT max(seq) FROM feed").fetchone()[0] == before + 2
    db.close()


def test_expired_peers_are_purged_a_slice_at_a_time(reg):
    n = 2 * registry_module.SLICE_ROWS
    reg.register("10.0.0.1:1", [entry(i, f"f{i}") for i in range(n)], T0)
    done = [reg.purge(T0 + LEASE + 1) for _ in range(4)]
    assert done == [registry_module.SLICE_ROWS, registry_module.SLICE_ROWS, 1, 0]


def test_client_limits_bound_peers_and_files_per_address(tmp_path):
    limits = registry_module.ClientLimits(
        max_peers_per_client=2, max_files_per_client=5, max_files_per_peer=4
    )
    reg = SqliteRegistry(tmp_path / "t.db", lease_seconds=LEASE, client_limits=limits)
    try:
        from p2pshare.errors import Busy, UsageError

        a = reg.register("10.0.0.1:1", [entry(1, "a"), entry(2, "b")], T0, client="192.0.2.9")
        reg.register("10.0.0.2:1", [entry(3, "c")], T0, client="192.0.2.9")
        with pytest.raises(Busy, match="2 live registrations"):
            reg.register("10.0.0.3:1", [], T0, client="192.0.2.9")
        reg.register("10.0.0.3:1", [], T0, client="192.0.2.10")  # another address
        with pytest.raises(UsageError, match="at most 4"):
            reg.replace_files(a.peer_id, a.token, [entry(i, f"x{i}") for i in range(5)], T0)
        with pytest.raises(Busy, match="would index 6 files"):
            reg.patch_files(
                a.peer_id, a.token, [entry(4, "d"), entry(5, "e"), entry(6, "f")], [], T0
            )
        assert (
            reg.patch_files(a.peer_id, a.token, [entry(4, "d"), entry(5, "e")], [cid(1)], T0) == 3
        )
        # an expired registration no longer counts
        reg.register("10.0.0.4:1", [], T0 + LEASE + 1, client="192.0.2.9")
    finally:
        reg.close()


def test_a_big_peer_shown_after_its_dial_back_is_announced_in_slices(reg, tmp_path):
    n = 2 * registry_module.SLICE_ROWS + 7
    me = reg.register("10.0.0.1:1", [entry(i, f"f{i}") for i in range(n)], T0, check=True)
    db = raw_db(tmp_path / "tracker.db")
    assert db.execute("SELECT count(*) FROM feed WHERE kind = 'added'").fetchone()[0] == 0
    steps = reg.settle_steps(me.peer_id, reachable=True, reason="ok", evict_holders=False, now=T0)
    assert sum(1 for _ in steps) == 2  # three transactions
    kinds = dict(db.execute("SELECT kind, count(*) FROM feed GROUP BY kind").fetchall())
    assert kinds == {"reset": 1, "peer_joined": 1, "added": n}
    db.close()


def test_a_registration_never_handed_out_leaves_kept_answers_alone(reg, tmp_path):
    """Only a peer that was in answers can change them: an unchecked registration
    coming and going (a flood) does not make every worker drop its kept answers."""
    me = reg.register("10.0.0.1:1", [entry(i, f"f{i}") for i in range(300)], T0, check=True)
    reg.remove(me.peer_id, me.token, T0)
    db = raw_db(tmp_path / "tracker.db")
    assert db.execute("SELECT kind FROM feed").fetchall() == []
    db.close()

"""Folder sync decisions, exactly: version vectors, what each remote version does to
the local one, conflict and kept-version names, piece reuse; and a simulation of
peers editing one file concurrently with messages in any order: they converge, and
no edit is lost without a newer version having seen it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from p2pshare.core.sync import (
    Adopt,
    FileVersion,
    Ignore,
    Order,
    Remove,
    Replace,
    Vector,
    conflict_name,
    decide,
    is_conflict_name,
    kept_version_name,
    plan_pieces,
    retry_delay,
    versions_to_prune,
)


def v(cid: str, vector: dict[str, int], *, mtime: int = 0, origin: str = "a") -> FileVersion:
    return FileVersion(cid, 1, Vector(vector), mtime, origin, deleted=cid == "")


GONE = ""


def test_vectors_order_by_domination() -> None:
    a1, b1 = Vector({"a": 1}), Vector({"b": 1})
    assert a1.compare(a1) is Order.EQUAL
    assert a1.bump("b").compare(a1) is Order.NEWER
    assert a1.compare(a1.bump("a")) is Order.OLDER
    assert a1.compare(b1) is Order.CONCURRENT
    assert a1.merge(b1) == Vector({"a": 1, "b": 1})
    assert a1.merge(b1).compare(a1) is Order.NEWER
    assert Vector({"a": 0}) == Vector() and not Vector({"a": 0})
    assert Vector({"a": 3, "b": 1}).bump("b") == Vector({"a": 3, "b": 4})
    with pytest.raises(ValueError):
        Vector({"a": -1})


def test_a_newer_version_replaces_and_an_older_or_equal_one_is_ignored() -> None:
    local = v("x", {"a": 1})
    assert decide(local, v("y", {"a": 2}), mirror=False, two_way=False) == Replace(Vector({"a": 2}))
    assert isinstance(decide(local, v("w", {}), mirror=False, two_way=False), Ignore)
    # a peer that took our version publishes it again: ignored (no loop)
    assert isinstance(decide(local, local, mirror=True, two_way=True), Ignore)
    assert decide(None, v("y", {"a": 1}), mirror=False, two_way=False) == Replace(Vector({"a": 1}))
    # a removal heard first is remembered: the older file arriving later is ignored
    assert decide(None, v(GONE, {"a": 2}), mirror=True, two_way=True) == Adopt(
        Vector({"a": 2}), "the same content"
    )


def test_the_same_content_only_merges_the_vectors() -> None:
    got = decide(v("x", {"a": 1}), v("x", {"b": 1}), mirror=False, two_way=True)
    assert got == Adopt(Vector({"a": 1, "b": 1}), "the same content")


def test_a_newer_removal_needs_mirror_and_goes_to_the_kept_versions() -> None:
    local, gone = v("x", {"a": 1}), v(GONE, {"a": 2})
    assert isinstance(decide(local, gone, mirror=False, two_way=False), Ignore)
    assert decide(local, gone, mirror=True, two_way=False) == Remove(Vector({"a": 2}))
    assert isinstance(decide(v(GONE, {"a": 1}), gone, mirror=True, two_way=False), Adopt)


def test_one_way_a_local_change_loses_to_upstream_and_is_kept_as_a_conflict_copy() -> None:
    synced = Vector({"a": 1})
    local = v("mine", dict(synced.bump("b").items()), mtime=99, origin="b")
    upstream = v("theirs", {"a": 2}, mtime=1, origin="a")
    got = decide(local, upstream, mirror=False, two_way=False)
    assert got == Replace(Vector({"a": 2, "b": 2}), conflict=True)


def test_two_way_every_peer_picks_the_later_change_then_the_smaller_device() -> None:
    early, late = v("x", {"a": 1}, mtime=1, origin="a"), v("y", {"c": 1}, mtime=2, origin="c")
    merged = Vector({"a": 1, "c": 1})
    # at a: the later (c's) wins; a keeps its own change as a conflict copy
    assert decide(early, late, mirror=True, two_way=True) == Replace(merged, True)
    # so does b, which held a's version: every peer holding the loser keeps it
    # at c: its own change wins; a will publish the merged vector
    assert decide(late, early, mirror=True, two_way=True) == Ignore(
        "the local version wins the conflict"
    )
    tie_a, tie_c = replace(early, mtime_ns=5), replace(late, mtime_ns=5)
    assert isinstance(decide(tie_c, tie_a, mirror=True, two_way=True), Replace)
    assert isinstance(decide(tie_a, tie_c, mirror=True, two_way=True), Ignore)


def test_a_change_beats_a_concurrent_removal() -> None:
    changed, gone = v("y", {"a": 2}, mtime=1), v(GONE, {"a": 1, "c": 1}, mtime=9, origin="c")
    for two_way in (True, False):
        assert isinstance(decide(changed, gone, mirror=True, two_way=two_way), Ignore)
        got = decide(gone, changed, mirror=True, two_way=two_way)
        assert got == Replace(Vector({"a": 2, "c": 1}))


def test_conflict_and_kept_version_names() -> None:
    when = (2026, 3, 4, 5, 6, 7)
    assert conflict_name("dir/report.pdf", when) == "dir/report.sync-conflict-20260304-050607.pdf"
    assert conflict_name("Makefile", when) == "Makefile.sync-conflict-20260304-050607"
    assert conflict_name(".env", when) == ".env.sync-conflict-20260304-050607"
    taken = {"a.sync-conflict-20260304-050607.txt"}
    assert conflict_name("a.txt", when, taken) == "a.sync-conflict-20260304-050607-2.txt"
    assert is_conflict_name("dir/report.sync-conflict-20260304-050607.pdf")
    assert is_conflict_name("a.sync-conflict-20260304-050607-2.txt")
    assert not is_conflict_name("report.pdf")
    assert kept_version_name("dir/a.tar.gz", when) == "dir/a.tar~20260304-050607.gz"
    assert kept_version_name("a.txt", when, 3) == "a~20260304-050607-3.txt"
    kept = [kept_version_name("a.txt", when, n) for n in (1, 2, 3, 10)]
    assert versions_to_prune(kept, "a.txt", 2) == kept[:2]


def test_only_the_newest_versions_are_kept() -> None:
    kept = [
        "a~20260101-000003.txt",
        "a~20260101-000001.txt",
        "a~20260101-000002.txt",
        "a~20260101-000002-2.txt",
        "b~20260101-000000.txt",
        "ab~20260101-000000.txt",
    ]
    assert versions_to_prune(kept, "a.txt", 2) == ["a~20260101-000001.txt", "a~20260101-000002.txt"]
    assert versions_to_prune(kept, "a.txt", 10) == []
    assert len(versions_to_prune(kept, "a.txt", 0)) == 4


def test_pieces_in_place_moved_or_new() -> None:
    base = [b"p0", b"p1", b"p2"]
    plan = plan_pieces([b"p0", b"X", b"p1", b"p2", b"Y"], base, [[(b"p1", 10), (b"p2", 20)]])
    assert plan.same == [0]
    assert plan.copy == {2: (0, 10), 3: (0, 20)}
    assert plan.fetch == [1, 4]
    assert plan.local_bytes([5, 5, 5, 5, 5]) == 15


# -- a simulation of peers that sync one file both ways --------------------------------


@dataclass
class Peer:
    name: str
    version: FileVersion | None = None
    conflict_copies: list[str] = field(default_factory=list)


@dataclass
class World:
    peers: list[Peer]
    inbox: list[tuple[int, FileVersion]] = field(default_factory=list)  # (to, version)
    made: list[FileVersion] = field(default_factory=list)
    clock: int = 0

    def broadcast(self, sender: int, version: FileVersion) -> None:
        self.inbox += [(i, version) for i in range(len(self.peers)) if i != sender]

    def edit(self, i: int, delete: bool, mtime: int) -> None:
        peer = self.peers[i]
        if delete and (peer.version is None or peer.version.deleted):
            return
        before = peer.version.vector if peer.version else Vector()
        self.clock += 1
        made = FileVersion(
            "" if delete else f"c{self.clock}", 1, before.bump(peer.name), mtime, peer.name, delete
        )
        peer.version = made
        self.made.append(made)
        note(f"{peer.name} makes {made}")
        self.broadcast(i, made)

    def deliver(self, k: int) -> None:
        to, remote = self.inbox.pop(k % len(self.inbox))
        peer = self.peers[to]
        got = decide(peer.version, remote, mirror=True, two_way=True)
        note(f"{peer.name} had {peer.version}, hears {remote}: {got}")
        if isinstance(got, Adopt):
            peer.version = replace(peer.version or remote, vector=got.vector)
            self.broadcast(to, peer.version)  # the vector changed: published again
        elif isinstance(got, Replace | Remove):
            if isinstance(got, Replace) and got.conflict:
                assert peer.version is not None
                peer.conflict_copies.append(peer.version.content_id)
            peer.version = replace(remote, vector=got.vector)
            self.broadcast(to, peer.version)  # the watcher sees the file change


ops = st.lists(
    st.one_of(
        st.tuples(st.just("edit"), st.integers(0, 2), st.booleans(), st.integers(0, 3)),
        st.tuples(st.just("deliver"), st.integers(0, 1000), st.just(False), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=500, deadline=None)
@given(ops, st.lists(st.integers(0, 1000), max_size=200))
def test_three_peers_converge_and_lose_no_edit_unseen(
    steps: list[tuple[str, int, bool, int]], order: list[int]
) -> None:
    world = World([Peer("a"), Peer("b"), Peer("c")])
    for op, arg, delete, mtime in steps:
        if op == "edit":
            world.edit(arg, delete, mtime)
        elif world.inbox:
            world.deliver(arg)
    picks = iter(order)
    sent = 0
    while world.inbox:
        world.deliver(next(picks, 0))
        sent += 1
        assert sent < 10_000, "messages never stop: a loop"
    finals = [p.version for p in world.peers]
    if not world.made:
        return
    first = finals[0]
    assert first is not None
    for other in finals[1:]:
        assert other is not None
        assert other.same_content(first) and other.vector == first.vector
    kept = {c for p in world.peers for c in p.conflict_copies}
    for made in world.made:
        seen_later = any(m.vector.compare(made.vector) is Order.NEWER for m in world.made)
        lost = made.content_id not in kept and not made.same_content(first)
        assert not lost or seen_later or made.deleted, f"{made} was lost"
        assert first.vector.compare(made.vector) in (Order.NEWER, Order.EQUAL)


def test_one_way_a_subscriber_always_ends_with_upstream() -> None:
    upstream = v("u2", {"a": 2}, mtime=1, origin="a")
    for local in (
        v("mine", {"a": 1, "s": 2}, mtime=50, origin="s"),
        v("u1", {"a": 1}, origin="a"),
        v(GONE, {"a": 1, "s": 2}, mtime=50, origin="s"),
    ):
        got = decide(local, upstream, mirror=True, two_way=False)
        assert isinstance(got, Replace)


def test_a_failed_download_is_retried_later_with_each_failure_in_a_row() -> None:
    assert [retry_delay(n) for n in range(1, 10)] == [5, 10, 20, 40, 80, 160, 320, 600, 600]
    assert retry_delay(10_000) == 600  # no overflow however long it fails
    assert retry_delay(0) == 0  # no failure: no wait
    assert retry_delay(3, first=1, most=3) == 3

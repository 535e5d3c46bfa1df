"""De-duplication of published changes and debouncing of file events, with exact clocks."""

from __future__ import annotations

import pytest

from p2pshare.core.pubsub import ADDED, REMOVED, ChangeDeduper, Debouncer, ShareChange

CID = "ab" * 32


def change(kind: str = ADDED, provider: str = "10.0.0.1:1", cid: str = CID) -> ShareChange:
    return ShareChange(kind=kind, content_id=cid, name="a.txt", size=1, provider=provider)  # type: ignore[arg-type]


def test_the_same_change_over_a_second_path_is_a_duplicate() -> None:
    d = ChangeDeduper()
    assert d.is_new(change())
    assert not d.is_new(change())
    assert not d.is_new(ShareChange(ADDED, CID, "a.txt", 1, "10.0.0.1:1", hops=3))
    # the same content under another name is another change (a rename, for folder sync)
    assert d.is_new(ShareChange(ADDED, CID, "other name.txt", 1, "10.0.0.1:1"))


def test_a_new_version_of_the_same_content_is_a_new_change() -> None:
    from p2pshare.core.sync import FileVersion, Vector

    d = ChangeDeduper()
    one = FileVersion(CID, 1, Vector({"a": 1}), 0, "a")
    assert d.is_new(ShareChange(ADDED, CID, "a.txt", 1, "p:1", version=one))
    assert not d.is_new(ShareChange(ADDED, CID, "a.txt", 1, "p:1", hops=2, version=one))
    two = FileVersion(CID, 1, Vector({"a": 1, "b": 1}), 0, "a")
    assert d.is_new(ShareChange(ADDED, CID, "a.txt", 1, "p:1", version=two))
    # the tracker's copy of the change carries no version: it tells nothing new
    assert not d.is_new(ShareChange(ADDED, CID, "a.txt", 1, "p:1"))
    # a relay of the first version, late, after a removal and a return: stale
    assert d.is_new(ShareChange(REMOVED, CID, "a.txt", 1, "p:1"))
    assert not d.is_new(ShareChange(ADDED, CID, "a.txt", 1, "p:1", hops=3, version=one))


def test_a_versioned_change_after_its_unversioned_copy_is_new_only_for_a_sync() -> None:
    from p2pshare.core.sync import FileVersion, Vector

    one = FileVersion(CID, 1, Vector({"a": 1}), 0, "a")
    sync, person = ChangeDeduper(), ChangeDeduper(by_version=False)
    for d in (sync, person):
        assert d.is_new(ShareChange(ADDED, CID, "a.txt", 1, "p:1"))  # the tracker, first
    # the neighbour's copy brings the version a folder sync needs; a watcher saw it all
    assert sync.is_new(ShareChange(ADDED, CID, "a.txt", 1, "p:1", version=one))
    assert not person.is_new(ShareChange(ADDED, CID, "a.txt", 1, "p:1", version=one))
    # a rewrite to the same content (a newer vector) is news to a sync only
    two = FileVersion(CID, 1, Vector({"a": 2}), 0, "a")
    assert sync.is_new(ShareChange(ADDED, CID, "a.txt", 1, "p:1", version=two))
    assert not person.is_new(ShareChange(ADDED, CID, "a.txt", 1, "p:1", version=two))


def test_a_removal_then_a_new_addition_both_pass_once() -> None:
    d = ChangeDeduper()
    assert d.is_new(change(ADDED))
    assert d.is_new(change(REMOVED))
    assert not d.is_new(change(REMOVED))
    assert d.is_new(change(ADDED))


def test_another_provider_of_the_same_content_is_a_new_change() -> None:
    d = ChangeDeduper()
    assert d.is_new(change(provider="10.0.0.1:1"))
    assert d.is_new(change(provider="10.0.0.2:1"))


def test_the_memory_is_bounded_and_forgets_the_least_recent_first() -> None:
    d = ChangeDeduper(capacity=2)
    assert d.is_new(change(provider="a:1"))
    assert d.is_new(change(provider="b:1"))
    assert not d.is_new(change(provider="a:1"))  # a is now the most recent
    assert d.is_new(change(provider="c:1"))  # evicts b
    assert len(d) == 2
    assert not d.is_new(change(provider="a:1"))
    assert d.is_new(change(provider="b:1"))
    with pytest.raises(ValueError):
        ChangeDeduper(capacity=0)


def test_a_burst_of_events_on_one_path_is_due_once_after_the_quiet_time() -> None:
    d: Debouncer[str, int] = Debouncer(quiet=0.25)
    for t in (0.0, 0.125, 0.25):
        d.touch("f", 1, t)
    assert d.next_due() == 0.5
    assert d.due(0.375) == []
    assert d.due(0.5) == [("f", 1)]
    assert d.due(1.0) == [] and d.next_due() is None


def test_the_signature_of_the_last_touch_is_what_the_caller_compares() -> None:
    # the watcher compares it with the file now: a file still growing is touched again
    d: Debouncer[str, int] = Debouncer(quiet=0.25)
    d.touch("f", 100, 0.0)
    assert d.due(0.25) == [("f", 100)]
    d.touch("f", 200, 0.25)  # it grew meanwhile
    assert d.due(0.375) == []
    assert d.due(0.5) == [("f", 200)]


def test_paths_are_due_independently_oldest_first() -> None:
    d: Debouncer[str, None] = Debouncer(quiet=1.0)
    d.touch("a", None, 0.0)
    d.touch("b", None, 0.5)
    d.touch("a", None, 0.6)
    assert d.due(1.5) == [("b", None)]
    assert d.due(1.6) == [("a", None)]


def test_too_many_waiting_paths_overflow_instead_of_growing() -> None:
    d: Debouncer[int, None] = Debouncer(quiet=1.0, capacity=3)
    for i in range(5):
        d.touch(i, None, 0.0)
    assert len(d) == 3 and d.overflowed


def test_a_change_prints_as_watch_json() -> None:
    assert change().to_json() == {
        "event": "added",
        "content_id": CID,
        "name": "a.txt",
        "size": 1,
        "provider": "10.0.0.1:1",
    }

"""The upload queue: requesters served in turn, a copy at a time, choked over their share."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pshare.core.upload_queue import MIN_SHARE, UploadQueue, limit_for


def test_requesters_are_served_in_turn_however_much_each_queued() -> None:
    q: UploadQueue[str, int] = UploadQueue()
    for i in range(5):
        q.request("greedy", i)
    q.request("modest", 100)
    served = [q.next() for _ in range(4)]
    assert served == [("greedy", 0), ("modest", 100), ("greedy", 1), ("greedy", 2)]
    assert len(q) == 2


def test_a_cancelled_item_is_not_sent() -> None:
    q: UploadQueue[str, int] = UploadQueue()
    q.request("a", 1)
    q.request("a", 2)
    assert q.cancel("a", 1) and not q.cancel("a", 1)
    assert q.next() == ("a", 2)
    assert q.next() is None


def test_a_requester_whose_link_is_full_keeps_its_place_while_others_are_served() -> None:
    q: UploadQueue[str, tuple[int, int]] = UploadQueue(group=lambda block: block[0])
    q.request("slow", (1, 0))
    q.request("fast", (2, 0))
    q.request("fast", (2, 1))
    assert q.next(lambda r: r != "slow") == ("fast", (2, 0))
    assert q.next(lambda r: r != "slow") == ("fast", (2, 1))
    assert q.next(lambda r: r != "slow") is None and len(q) == 1
    assert q.next() == ("slow", (1, 0))


def test_a_requester_that_leaves_takes_its_queue_with_it() -> None:
    q: UploadQueue[str, int] = UploadQueue()
    q.request("a", 1)
    q.request("b", 2)
    assert q.drop("a") == [1]
    assert q.next() == ("b", 2) and len(q) == 0


def test_the_copy_furthest_along_goes_first() -> None:
    """Blocks (piece, n): once a copy of piece 7 to "a" has begun, a's blocks of it go
    before b's, so a holds the whole piece (and can forward it) sooner."""
    q: UploadQueue[str, tuple[int, int]] = UploadQueue(group=lambda block: block[0])
    q.request("a", (7, 0))
    q.request("b", (7, 0))
    assert q.next() == ("a", (7, 0))
    q.request("a", (7, 1))  # a's next request comes in while b waits
    assert q.next() == ("a", (7, 1))
    assert q.next() == ("b", (7, 0))
    q.request("a", (8, 0))  # a new piece for a: b's copy is further along
    q.request("b", (7, 1))
    assert q.next() == ("b", (7, 1))


def test_a_requester_over_its_share_is_choked_then_unchoked_when_it_has_room() -> None:
    q: UploadQueue[str, int] = UploadQueue(max_queued=4)
    assert q.share("a") == 4
    assert all(q.request("a", i) for i in range(4))
    assert not q.request("a", 4) and q.is_choked("a")
    assert q.request("b", 10)  # b has its own share: 4 // 2
    assert q.share() == 2
    assert q.unchoke() is None  # a still holds more than its share
    for _ in range(3):
        q.next()
    assert q.unchoke() == "a" and not q.is_choked("a")


def test_every_requester_may_queue_a_few_however_many_there_are() -> None:
    q: UploadQueue[int, int] = UploadQueue(max_queued=4)
    for i in range(MIN_SHARE):
        for requester in range(10):
            assert q.request(requester, i)
    assert q.share() == MIN_SHARE
    assert not any(q.request(requester, 99) for requester in range(10))


def test_the_queue_limit_is_half_a_second_of_the_uplink() -> None:
    assert limit_for(40e6 / 8, 128 * 1024) == 19
    assert limit_for(1000, 128 * 1024) == 4


@settings(max_examples=100)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 20)), max_size=60))
def test_every_accepted_item_is_sent_once_unless_cancelled(requests) -> None:
    q: UploadQueue[str, int] = UploadQueue(max_queued=8, group=lambda i: i // 4)
    accepted = []
    for requester, item in requests:
        if (requester, item) not in accepted and q.request(requester, item):
            accepted.append((requester, item))
    cancelled = set(accepted[::3])
    for requester, item in cancelled:
        assert q.cancel(requester, item)
    sent = []
    while (item := q.next()) is not None:
        sent.append(item)
    assert sorted(sent) == sorted(set(accepted) - cancelled)

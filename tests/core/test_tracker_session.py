"""The tracker session's rules: states, backoff, index diff (core.tracker_session)."""

from __future__ import annotations

from p2pshare.core.tracker_session import RETRY_MAX, Backoff, Registration, index_diff


def test_without_a_tracker_the_state_says_so():
    assert Registration(None).state == "no tracker configured"
    assert Registration("http://t").state == "not registered"


def test_registering_keeps_the_token_and_the_time_of_the_answer():
    reg = Registration("http://t")
    reg.registered(peer_id="p1", token="tok", lease_seconds=30, now=100.0)
    assert (reg.joined, reg.state, reg.peer_id, reg.last_ok) == (True, "registered", "p1", 100.0)
    reg.answered(130.0)
    assert reg.last_ok == 130.0


def test_a_lost_lease_an_outage_or_a_refusal_means_joining_again():
    for fail in (
        lambda r: r.lost(),
        lambda r: r.unreachable("down"),
        lambda r: r.refused("bad key"),
    ):
        reg = Registration("http://t")
        reg.registered(peer_id="p1", token="tok", lease_seconds=30, now=1.0)
        fail(reg)
        assert not reg.joined
    reg.unreachable("connection refused")
    assert reg.state == "unreachable: connection refused"


def test_heartbeats_come_every_third_of_the_lease_unless_configured():
    reg = Registration("http://t")
    reg.registered(peer_id="p", token="t", lease_seconds=30, now=0.0)
    assert reg.heartbeat_every(0.0) == 10.0
    assert reg.heartbeat_every(2.5) == 2.5
    reg.lease_seconds = 1
    assert reg.heartbeat_every(0.0) == 1  # never faster than once a second


def test_backoff_doubles_up_to_the_most_and_resets():
    b = Backoff()
    waits = [b.next() for _ in range(6)]
    assert waits == [1.0, 2.0, 4.0, 8.0, RETRY_MAX, RETRY_MAX]
    b.reset()
    assert b.next() == 1.0


def test_index_diff_sends_new_and_changed_entries_and_removes_gone_ones():
    sent = {"a": ("a", 1), "b": ("b", 2), "c": ("c", 3)}
    now = {"a": ("a", 1), "b": ("b", 20), "d": ("d", 4)}
    assert index_diff(sent, now) == ([("b", 20), ("d", 4)], ["c"])
    assert index_diff(now, now) == ([], [])


def test_a_registration_is_stale_once_the_tracker_was_not_heard_of_lately() -> None:
    reg = Registration("http://t")
    assert not reg.stale(100.0, 2.0)  # not joined: nothing to check
    reg.registered(peer_id="p", token="t", lease_seconds=60, now=100.0)
    assert not reg.stale(101.5, 2.0)
    assert reg.stale(102.5, 2.0)
    reg.silent("no answer in 1 s")
    assert reg.state == "unreachable: no answer in 1 s"
    assert reg.joined  # the next heartbeat decides whether to join again

"""The tracker's rule for a dial-back's answer (core.reachability)."""

from __future__ import annotations

from p2pshare.core.reachability import Answer, judge

ADDRESS = "203.0.113.7:8461"


def test_answering_as_the_new_registration_proves_the_address_and_evicts_older_holders():
    v = judge(ADDRESS, "new", ["old"], Answer(peer_id="new"), tries_left=0)
    assert v.reachable and v.evict_holders and not v.retry
    alone = judge(ADDRESS, "new", [], Answer(peer_id="new"), tries_left=2)
    assert alone.reachable and not alone.evict_holders


def test_an_older_holder_that_still_answers_keeps_its_address():
    first = judge(ADDRESS, "new", ["old"], Answer(peer_id="old"), tries_left=1)
    assert first.retry and not first.evict_holders and not first.reachable
    last = judge(ADDRESS, "new", ["old"], Answer(peer_id="old"), tries_left=0)
    assert not last.reachable and not last.evict_holders and not last.retry
    assert "answered as the peer registered there before you" in last.reason


def test_an_address_answering_as_a_stranger_is_not_reachable():
    v = judge(ADDRESS, "new", [], Answer(peer_id="someone"), tries_left=0)
    assert not v.reachable and "another peer" in v.reason
    v = judge(ADDRESS, "new", [], Answer(peer_id=""), tries_left=0)
    assert "not registered" in v.reason


def test_no_answer_says_why_and_drops_holders_that_no_longer_answer():
    closed = judge(ADDRESS, "new", ["old"], Answer(failure="refused"), tries_left=2)
    assert not closed.reachable and closed.evict_holders and not closed.retry
    assert "port 8461 closed" in closed.reason
    assert (
        "did not answer in time"
        in judge(ADDRESS, "n", [], Answer(failure="timeout"), tries_left=0).reason
    )
    assert "does not resolve" in judge(ADDRESS, "n", [], Answer(failure="dns"), tries_left=0).reason


def test_no_proof_without_a_dial_or_with_a_refused_call():
    for failure in ("loopback", "denied"):
        v = judge(ADDRESS, "new", ["old"], Answer(failure=failure, detail="why"), tries_left=0)  # type: ignore[arg-type]
        assert not v.reachable and not v.evict_holders

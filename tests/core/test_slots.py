"""Concurrency limits in total and per remote peer."""

from __future__ import annotations

import pytest

from p2pshare.core.slots import Slots


def test_one_key_gets_at_most_its_share_and_others_still_get_theirs() -> None:
    slots: Slots[str] = Slots(total=5, per_key=2)
    assert slots.acquire("greedy") is None
    assert slots.acquire("greedy") is None
    assert slots.acquire("greedy") == "2 in use by this peer already"
    assert slots.acquire("other") is None
    assert len(slots) == 3


def test_the_total_holds_across_keys() -> None:
    slots: Slots[int] = Slots(total=3, per_key=2)
    for key in (1, 1, 2):
        assert slots.acquire(key) is None
    assert slots.acquire(3) == "all 3 in use"
    slots.release(1)
    assert slots.acquire(3) is None


def test_released_slots_can_be_taken_again_and_idle_keys_cost_no_memory() -> None:
    slots: Slots[str] = Slots(total=10, per_key=1)
    for round_ in range(3):
        for key in ("a", "b", "c"):
            assert slots.acquire(key) is None, round_
        for key in ("a", "b", "c"):
            slots.release(key)
    assert len(slots) == 0
    assert slots.holders() == 0


def test_releasing_what_was_not_taken_is_a_bug() -> None:
    slots: Slots[str] = Slots(total=1, per_key=1)
    with pytest.raises(ValueError):
        slots.release("nobody")


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        Slots(total=0, per_key=1)
    with pytest.raises(ValueError):
        Slots(total=1, per_key=0)

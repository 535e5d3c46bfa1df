"""The swarm's rules for providers (core.swarm_rules)."""

from __future__ import annotations

import pytest

from p2pshare import errors
from p2pshare.core.swarm_rules import (
    BUSY_BACKOFF,
    MAX_FAILURES,
    MIN_STALL,
    NO_PROVIDER_GRACE,
    PIECE_TIMEOUT,
    RETRY_DROPPED,
    Action,
    ProviderHealth,
    Superseded,
    stall_after,
)

MiB = 1 << 20


def test_a_provider_of_unknown_speed_is_stalled_after_the_piece_timeout():
    assert stall_after(rate=0, in_flight=4, piece_size=MiB) == PIECE_TIMEOUT


def test_a_fast_provider_is_stalled_after_a_few_times_its_queue_but_never_under_the_minimum():
    assert stall_after(rate=100 * MiB, in_flight=4, piece_size=MiB) == MIN_STALL
    assert stall_after(rate=1 * MiB, in_flight=2, piece_size=MiB) == 8.0
    assert stall_after(rate=1 * MiB, in_flight=0, piece_size=MiB) == 4.0  # one piece at least
    assert stall_after(rate=1024, in_flight=8, piece_size=MiB) == PIECE_TIMEOUT


def test_a_bad_piece_bans_and_a_disk_failure_fails_the_download():
    h = ProviderHealth()
    assert h.failed("a", errors.BadPiece("x")).action is Action.BAN
    assert h.failed("a", errors.DownloadFailed("disk full")).action is Action.FAIL


def test_a_busy_provider_is_asked_again_later_and_not_counted_as_failing():
    h = ProviderHealth()
    h.joined("a")
    d = h.failed("a", errors.Busy("full"))
    assert (d.action, d.wait) == (Action.RETRY, BUSY_BACKOFF)
    assert h.healthy(["a"]) == ["a"]
    assert h.why_stalled(["a"]) == "all providers are busy; waiting for a free upload slot"
    h.succeeded("a")
    assert h.why_stalled(["a"]) is None


def test_a_superseded_stream_is_no_failure_and_retries_at_once():
    d = ProviderHealth().failed("a", Superseded("endgame"))
    assert (d.action, d.wait) == (Action.RETRY, 0.0)


def test_failures_in_a_row_back_off_longer_then_drop_the_provider():
    h = ProviderHealth()
    waits = [h.failed("a", errors.TimedOut("slow")) for _ in range(MAX_FAILURES)]
    assert [d.action for d in waits] == [Action.RETRY] * (MAX_FAILURES - 1) + [Action.DROP]
    assert waits[0].wait < waits[1].wait
    assert h.healthy(["a"]) == []
    assert h.why_stalled(["a"]) == "providers are not answering; retrying"
    h.succeeded("a")
    assert h.failed("a", errors.TimedOut("slow")).action is Action.RETRY  # the count restarts


def test_a_provider_whose_streams_ended_is_tried_again_only_after_a_pause():
    h = ProviderHealth()
    assert h.may_try("a", now=0.0)
    h.ended("a", now=100.0)
    assert not h.may_try("a", now=100.0 + RETRY_DROPPED - 0.1)
    assert h.may_try("a", now=100.0 + RETRY_DROPPED)


@pytest.mark.parametrize(
    ("providers", "failing", "since", "given_up"),
    [
        ([], [], NO_PROVIDER_GRACE + 1, True),
        ([], [], NO_PROVIDER_GRACE, False),
        (["a"], [], NO_PROVIDER_GRACE + 1, False),
        (["a"], ["a"], NO_PROVIDER_GRACE + 1, True),
    ],
)
def test_the_download_fails_only_without_a_healthy_provider_past_the_grace(
    providers, failing, since, given_up
):
    h = ProviderHealth()
    for a in failing:
        h.failed(a, errors.Unreachable("down"))
    assert h.given_up(providers, since_progress=since) is given_up


def test_with_no_provider_at_all_the_user_is_told_the_swarm_is_looking():
    assert ProviderHealth().why_stalled([]) == "no provider reachable; looking for providers"

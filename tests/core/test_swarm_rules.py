"""The swarm's rules for providers (core.swarm_rules)."""

from __future__ import annotations

import pytest

from p2pshare import errors
from p2pshare.core.swarm_rules import (
    BUSY_BACKOFF,
    MIN_STALL,
    NO_PROVIDER_GRACE,
    PIECE_TIMEOUT,
    RETRY_FIRST,
    RETRY_MAX,
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


def test_a_bad_piece_bans_with_the_reason_and_a_disk_failure_fails_the_download():
    h = ProviderHealth()
    h.joined("a")
    d = h.failed("a", errors.BadPiece("piece 12 does not match its hash"), now=0.0)
    assert (d.action, d.reason) == (
        Action.BAN,
        "sent a bad piece: piece 12 does not match its hash",
    )
    assert h.banned == {"a": d.reason}
    assert not h.may_join("a", now=100.0)
    assert h.failed("b", errors.DownloadFailed("disk full"), now=0.0).action is Action.FAIL


def test_a_busy_provider_is_asked_again_later_and_not_counted_as_failing():
    h = ProviderHealth()
    h.joined("a")
    d = h.failed("a", errors.Busy("full"), now=0.0)
    assert (d.action, d.wait) == (Action.RETRY, BUSY_BACKOFF)
    assert h.why_stalled() == "all providers are busy; waiting for a free upload slot"
    assert h.given_up(since_progress=NO_PROVIDER_GRACE * 10) is None
    h.succeeded("a")
    assert h.why_stalled() is None


def test_a_superseded_stream_is_no_failure_and_retries_at_once():
    h = ProviderHealth()
    h.joined("a")
    d = h.failed("a", Superseded("endgame"), now=0.0)
    assert (d.action, d.wait) == (Action.RETRY, 0.0)


def test_a_failing_provider_is_dropped_and_joined_again_after_a_wait_that_starts_small_and_grows():
    h = ProviderHealth()
    h.joined("a")
    waits = []
    now = 0.0
    for _ in range(6):
        d = h.failed("a", errors.Unreachable("down"), now=now)
        assert d.action is Action.DROP
        waits.append(d.wait)
        assert not h.may_join("a", now=now) and h.due(now) == []
        assert h.next_due(now) == d.wait
        now += d.wait
        assert h.due(now) == ["a"] and h.may_join("a", now=now)
        h.joined("a")
    assert waits == [RETRY_FIRST, 2 * RETRY_FIRST, 4 * RETRY_FIRST, RETRY_MAX, RETRY_MAX, RETRY_MAX]
    h.delivered("a")
    assert h.failed("a", errors.TimedOut("slow"), now=now).wait == RETRY_FIRST  # counts afresh


def test_a_provider_that_cannot_be_joined_again_waits_longer_each_time():
    """Joining again failed before ``joined``: it was tried again at once, forever (a
    downloader of the hard netswarm dialled a departed peer 5000 times in 40 s)."""
    h = ProviderHealth()
    h.joined("a")
    now, waits = 0.0, []
    for _ in range(4):
        d = h.failed("a", errors.Unreachable("refused"), now=now)
        assert d.action is Action.DROP and d.wait > 0
        waits.append(d.wait)
        now += d.wait
        assert h.due(now) == ["a"] and h.may_join("a", now=now)
    assert waits == [RETRY_FIRST, 2 * RETRY_FIRST, 4 * RETRY_FIRST, RETRY_MAX]


def test_other_streams_of_a_dropped_provider_do_not_lengthen_its_wait():
    h = ProviderHealth()
    h.joined("a")
    first = h.failed("a", errors.Unreachable("down"), now=0.0)
    again = h.failed("a", errors.Unreachable("down"), now=0.1)
    assert again.action is Action.DROP and again.wait == pytest.approx(first.wait - 0.1)


def test_a_provider_that_never_sends_a_piece_fails_the_download_after_the_grace():
    h = ProviderHealth()
    h.joined("a")
    assert h.why_stalled() is None
    assert h.given_up(since_progress=NO_PROVIDER_GRACE) is None
    assert h.given_up(since_progress=NO_PROVIDER_GRACE + 0.1) == (
        f"no provider sent a piece for {NO_PROVIDER_GRACE:g} s (a sent nothing)"
    )


def test_a_provider_that_delivered_is_given_time_its_stall_detection_decides():
    h = ProviderHealth()
    h.joined("a")
    h.delivered("a")
    assert h.given_up(since_progress=NO_PROVIDER_GRACE * 2) is None
    h.failed("a", errors.TimedOut("peer a stalled"), now=0.0)
    assert h.given_up(since_progress=NO_PROVIDER_GRACE * 2) == (
        "no provider reachable (peer a stalled)"
    )


def test_the_only_provider_banned_ends_the_download_with_who_and_why():
    h = ProviderHealth()
    h.joined("a")
    h.failed("a", errors.BadPiece("piece 12 does not match its hash"), now=0.0)
    reason = "the only provider, a, was banned: sent a bad piece: piece 12 does not match its hash"
    assert h.why_stalled() == reason + "; looking for other providers"
    assert h.given_up(since_progress=NO_PROVIDER_GRACE) is None
    assert h.given_up(since_progress=NO_PROVIDER_GRACE + 1) == reason
    h.joined("b")
    h.failed("b", errors.BadPiece("piece 3 unasked"), now=0.0)
    assert h.given_up(since_progress=NO_PROVIDER_GRACE + 1) == (
        "every provider was banned: a sent a bad piece: piece 12 does not match its hash;"
        " b sent a bad piece: piece 3 unasked"
    )


def test_unreachable_providers_and_banned_ones_are_both_named():
    h = ProviderHealth()
    h.joined("a")
    h.joined("b")
    h.failed("a", errors.BadPiece("piece 1 does not match its hash"), now=0.0)
    h.failed("b", errors.Unreachable("peer b: connection refused"), now=0.0)
    assert h.why_stalled() == (
        "providers are not answering; retrying; banned: a sent a bad piece:"
        " piece 1 does not match its hash"
    )
    assert h.given_up(since_progress=NO_PROVIDER_GRACE + 1) == (
        "no provider reachable (peer b: connection refused); banned: a sent a bad piece:"
        " piece 1 does not match its hash"
    )


def test_with_no_provider_at_all_the_user_is_told_the_swarm_is_looking():
    h = ProviderHealth()
    assert h.why_stalled() == "no provider reachable; looking for providers"
    assert h.given_up(since_progress=NO_PROVIDER_GRACE + 1) == "no provider reachable"

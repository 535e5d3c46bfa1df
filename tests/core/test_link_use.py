"""An uplink below the rate it has shown it can keep up, with exact clocks."""

from __future__ import annotations

from p2pshare.core.link_use import PEAK_TAU, SETTLE, LinkUse

MBIT = 1_000_000 / 8  # bytes per second


def send(use: LinkUse, rate: float, start: float, seconds: float, step: float = 0.01) -> float:
    """Count ``rate`` bytes per second from ``start`` for ``seconds``; the end time."""
    t = start
    while t < start + seconds - 1e-9:
        t += step
        use.count(int(rate * step), t)
    return t


def test_a_link_kept_at_its_rate_is_not_underused() -> None:
    use = LinkUse()
    t = send(use, 40 * MBIT, 0.0, 10.0)
    assert use.peak(t) > 0.9 * 40 * MBIT
    assert not use.underused(t)


def test_a_link_that_falls_to_a_third_of_its_rate_is_underused() -> None:
    # the hard netswarm run: 40 Mbit/s for 8 s, then a few lossy connections carry 13
    use = LinkUse()
    t = send(use, 40 * MBIT, 0.0, 8.0)
    t = send(use, 13 * MBIT, t, 3.0)
    assert use.underused(t)
    # offers bring more connections: the rate comes back, room is gone
    t = send(use, 38 * MBIT, t, 4.0)
    assert not use.underused(t)


def test_the_first_burst_into_socket_buffers_is_no_peak() -> None:
    use = LinkUse()
    use.count(4_000_000, 0.01)  # 4 MB taken by the sockets at once
    t = send(use, 10 * MBIT, 0.01, SETTLE - 0.1)
    assert use.peak(t) == 0  # nothing counts before the rate has settled
    assert not use.underused(t)
    t = send(use, 10 * MBIT, t, 3 * SETTLE)
    assert not use.underused(t)  # the burst has faded from the average before it counts


def test_a_link_that_got_slower_is_learnt_again() -> None:
    use = LinkUse()
    t = send(use, 40 * MBIT, 0.0, 10.0)
    t = send(use, 20 * MBIT, t, 3.0)
    assert use.underused(t)
    t = send(use, 20 * MBIT, t, 2 * PEAK_TAU)
    assert not use.underused(t)  # the old peak decayed: 20 Mbit/s is all there is


def test_nothing_sent_is_not_underused() -> None:
    use = LinkUse()
    assert use.peak(5.0) == 0 and not use.underused(5.0)

"""Whether this peer's uplink runs below what it has shown it can carry.

A super-seeder offers more pieces when its uplink idles (``core.super_seed``). "Idle"
once meant nothing queued; but under packet loss one TCP connection carries a few
Mbit/s (1% loss: ~7 Mbit/s at the netswarm testbed's round trip), so a 40 Mbit/s
uplink serving a handful of downloaders keeps blocks queued for each of them while
the link runs at a third of its rate: nothing ever looked idle, nobody new was
offered a piece, and the seeder's uplink, the scarce resource, went unused for the
second half of the hard netswarm run. The uplink's capacity is not configured and
not known; what is known is the best rate it kept up (``peak``), so a rate well below
that (``UNDERUSED``) counts as room to spare.

The peak is taken only from a rate averaged over ``SETTLE`` seconds or more: the
first writes fill socket buffers faster than the link drains them, and a peak taken
then would make a full link look underused for good. It decays with ``PEAK_TAU``, so
a link that got slower (other traffic, a shaper) is learnt again.
"""

from __future__ import annotations

import math

from p2pshare.core.piece_picker import RATE_TAU, Throughput

__all__ = ["PEAK_TAU", "SETTLE", "UNDERUSED", "LinkUse"]

UNDERUSED = 0.75  # a rate below this share of the peak leaves room on the link
SETTLE = 2 * RATE_TAU  # seconds of sending before a rate may count as a peak
PEAK_TAU = 20.0  # seconds: the time constant of the peak's decay


class LinkUse:
    """Bytes sent, the rate they go at and the best rate kept up; pure (``now`` given)."""

    def __init__(self) -> None:
        self._meter = Throughput()
        self._peak = 0.0
        self._peak_at = 0.0

    def count(self, size: int, now: float) -> None:
        """``size`` bytes went out at ``now``."""
        self._meter.count(size, now)
        if now - self._meter.first_update >= SETTLE:
            rate = self._meter.rate(now)
            if rate >= self.peak(now):
                self._peak, self._peak_at = rate, now

    def rate(self, now: float) -> float:
        return self._meter.rate(now)

    def peak(self, now: float) -> float:
        """The best rate kept up, decayed since it was seen (0 until ``SETTLE``)."""
        return self._peak * math.exp(-(now - self._peak_at) / PEAK_TAU)

    def underused(self, now: float) -> bool:
        """Whether the link runs well below its peak: there is room for more senders."""
        peak = self.peak(now)
        return peak > 0 and self._meter.rate(now) < UNDERUSED * peak

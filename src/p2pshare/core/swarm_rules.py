"""The swarm's rules for providers, without I/O: when a silent stream counts as
stalled, what a failed request means for its provider (ban, give up the download,
wait and retry, drop), when a dropped provider may be tried again, and what to
tell the user while the download is not moving.

docs/design.md, Network: *Transfer*. Which piece goes to whom is
``core.piece_picker``; the asyncio side (``p2pshare.peer.transfer.swarm``) runs
the streams, reports each outcome here and acts on the answer.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from p2pshare import errors

PIECE_TIMEOUT = 20.0  # a provider of unknown speed silent this long on a stream is stalled
MIN_STALL = 3.0  # a provider of known speed is stalled after the longer of this and
STALL_FACTOR = 4  # this many times the time its pieces in flight should take
NO_PROVIDER_GRACE = 15.0  # how long a download waits with no provider before it fails
BUSY_BACKOFF = 1.0  # seconds before asking a busy provider again
RETRY_DROPPED = 10.0  # seconds before a provider that stopped answering is tried again
MAX_FAILURES = 3  # consecutive failed requests before a provider is dropped
FAILURE_BACKOFF = 0.2  # seconds per consecutive failure before asking again


class Superseded(errors.P2PShareError):
    """Every piece a stream still waits for arrived from elsewhere (endgame)."""


def stall_after(*, rate: float, in_flight: int, piece_size: int) -> float:
    """Seconds of silence after which a stream from a provider counts as stalled.

    Like TCP's retransmission timeout from the measured round trip: a few times
    what the provider's pieces in flight should take at its measured ``rate``
    (bytes a second, measured before the silence; 0 when unknown), so a dead link
    to a fast provider is noticed in seconds, a slow one is not cut off.
    """
    if rate <= 0:
        return PIECE_TIMEOUT
    queued = max(1, in_flight) * piece_size
    return min(PIECE_TIMEOUT, max(MIN_STALL, STALL_FACTOR * queued / rate))


class Action(enum.Enum):
    RETRY = "retry"  # ask the provider again (after ``wait``)
    BAN = "ban"  # it sent a bad piece: never ask it again
    FAIL = "fail"  # no provider can fix this (the disk): the download fails
    DROP = "drop"  # it failed too often in a row: stop asking it for now


@dataclass(frozen=True)
class Decision:
    action: Action
    wait: float = 0.0


class ProviderHealth:
    """How each provider of one download has been doing."""

    def __init__(self) -> None:
        self._failures: dict[str, int] = {}
        self._busy: set[str] = set()  # providers that last answered "too many uploads"
        self._dropped: dict[str, float] = {}  # provider -> when its streams all ended

    def joined(self, address: str) -> None:
        self._failures[address] = 0

    def succeeded(self, address: str) -> None:
        self._failures[address] = 0
        self._busy.discard(address)

    def failed(self, address: str, exc: errors.P2PShareError) -> Decision:
        """What to do after a request to ``address`` failed with ``exc``."""
        if isinstance(exc, errors.BadPiece):
            return Decision(Action.BAN)
        if isinstance(exc, errors.DownloadFailed):
            return Decision(Action.FAIL)
        if isinstance(exc, Superseded):
            return Decision(Action.RETRY)
        if isinstance(exc, errors.Busy):
            # alive but full: not a failure; wait and ask again
            self._busy.add(address)
            return Decision(Action.RETRY, BUSY_BACKOFF)
        failures = self._failures[address] = self._failures.get(address, 0) + 1
        if failures >= MAX_FAILURES:
            return Decision(Action.DROP)
        return Decision(Action.RETRY, FAILURE_BACKOFF * failures)

    def ended(self, address: str, now: float) -> None:
        """Every stream of ``address`` ended: it may come back after a pause."""
        self._dropped[address] = now

    def may_try(self, address: str, now: float) -> bool:
        """Whether a provider found again may be asked (not dropped just now)."""
        return now - self._dropped.get(address, -RETRY_DROPPED) >= RETRY_DROPPED

    def healthy(self, providers: Iterable[str]) -> list[str]:
        """The providers whose last request did not fail."""
        return [a for a in providers if self._failures.get(a, 0) == 0]

    def why_stalled(self, providers: Iterable[str]) -> str | None:
        """What to tell the user about a download asking ``providers`` (None: moving)."""
        providers = list(providers)
        healthy = self.healthy(providers)
        if healthy and all(a in self._busy for a in healthy):
            return "all providers are busy; waiting for a free upload slot"
        if healthy:
            return None
        if providers:
            return "providers are not answering; retrying"
        return "no provider reachable; looking for providers"

    def given_up(self, providers: Iterable[str], *, since_progress: float) -> bool:
        """Whether the download should fail: no healthy provider, and no piece for
        longer than the grace period."""
        return not self.healthy(providers) and since_progress > NO_PROVIDER_GRACE

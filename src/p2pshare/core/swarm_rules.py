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
from dataclasses import dataclass

from p2pshare import errors

PIECE_TIMEOUT = 20.0  # a provider of unknown speed silent this long on a stream is stalled
MIN_STALL = 3.0  # a provider of known speed is stalled after the longer of this and
STALL_FACTOR = 4  # this many times the time its pieces in flight should take
NO_PROVIDER_GRACE = 15.0  # how long a download waits with no provider before it fails
BUSY_BACKOFF = 1.0  # seconds before asking a busy provider again
RETRY_FIRST = 0.25  # seconds before a provider that stopped answering is joined again,
RETRY_MAX = 2.0  # doubling with each drop in a row up to this


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
    RETRY = "retry"  # ask the provider again (after ``wait``) on the same stream worker
    BAN = "ban"  # it sent a bad piece: never ask it again in this download
    FAIL = "fail"  # no provider can fix this (the disk): the download fails
    DROP = "drop"  # it stopped answering: stop every stream to it, join again after ``wait``


@dataclass(frozen=True)
class Decision:
    action: Action
    wait: float = 0.0
    reason: str = ""  # BAN: why, as the user reads it ("sent a bad piece: ...")


def retry_wait(drops: int) -> float:
    """Seconds before a provider dropped ``drops`` times in a row is joined again:
    small at first (a provider back after a restart is used within seconds), doubling,
    capped (a dead one costs one failed call every ``RETRY_MAX`` seconds)."""
    return min(RETRY_MAX, RETRY_FIRST * (1 << min(max(drops - 1, 0), 16)))


class ProviderHealth:
    """How each provider of one download has been doing, and what follows from it.

    A provider is *active* (its streams run), *waiting* (dropped after a failure,
    joined again at ``retry_at``), *banned* (with the reason), or unknown. The adapter
    reports joins, verified pieces and failures with the time; the answers say what
    to do with the provider, whom to join again now, what to tell the user, and when
    the download gives up (``given_up``).
    """

    def __init__(self) -> None:
        self._active: set[str] = set()
        self._proven: set[str] = set()  # active and delivered a piece since it joined
        self._busy: set[str] = set()  # active and last answered "too many uploads"
        self._drops: dict[str, int] = {}  # consecutive drops with no piece in between
        self._retry_at: dict[str, float] = {}  # waiting provider -> when to join it again
        self._last_error: dict[str, str] = {}
        self.banned: dict[str, str] = {}  # provider -> why, in the order banned

    # -- what happened ---------------------------------------------------------

    def joined(self, address: str) -> None:
        self._active.add(address)
        self._retry_at.pop(address, None)

    def delivered(self, address: str) -> None:
        """A verified piece came from ``address``."""
        if address in self._active:
            self._proven.add(address)
        self._drops.pop(address, None)
        self._busy.discard(address)

    def succeeded(self, address: str) -> None:
        """A request to ``address`` ended well (it is not busy any more)."""
        self._busy.discard(address)

    def left(self, address: str) -> None:
        """Every stream to ``address`` ended with nothing left to ask of it."""
        self._forget(address)

    def failed(self, address: str, exc: errors.P2PShareError, now: float) -> Decision:
        """What to do after a request to ``address`` (or joining it) failed with ``exc``."""
        if address in self.banned:
            return Decision(Action.BAN, reason=self.banned[address])
        if isinstance(exc, errors.BadPiece):
            reason = f"sent a bad piece: {exc}"
            self._forget(address)
            self.banned[address] = reason
            return Decision(Action.BAN, reason=reason)
        if isinstance(exc, errors.DownloadFailed):
            return Decision(Action.FAIL)
        if isinstance(exc, Superseded):
            return Decision(Action.RETRY)
        if isinstance(exc, errors.Busy) and address in self._active:
            # alive but full: not a failure; wait and ask again
            self._busy.add(address)
            return Decision(Action.RETRY, BUSY_BACKOFF)
        if self._retry_at.get(address, now) > now:  # another stream of it already dropped
            return Decision(Action.DROP, self._retry_at[address] - now)
        drops = self._drops[address] = self._drops.get(address, 0) + 1
        wait = retry_wait(drops)
        self._forget(address)
        self._retry_at[address] = now + wait
        self._last_error[address] = str(exc)
        return Decision(Action.DROP, wait)

    def _forget(self, address: str) -> None:
        self._active.discard(address)
        self._proven.discard(address)
        self._busy.discard(address)
        self._retry_at.pop(address, None)

    # -- what to do ------------------------------------------------------------

    def may_join(self, address: str, now: float) -> bool:
        """Whether a provider found (again) may be joined now."""
        if address in self.banned or address in self._active:
            return False
        return now >= self._retry_at.get(address, now)

    def due(self, now: float) -> list[str]:
        """Dropped providers whose wait is over: join them again now."""
        return [a for a, at in self._retry_at.items() if at <= now]

    def next_due(self, now: float) -> float | None:
        """Seconds until the next dropped provider is due (None: nobody waits)."""
        if not self._retry_at:
            return None
        return max(0.0, min(self._retry_at.values()) - now)

    def why_stalled(self) -> str | None:
        """What to tell the user about the download now (None: it is moving)."""
        if self._active:
            if all(a in self._busy for a in self._active):
                return "all providers are busy; waiting for a free upload slot"
            return None
        if self._retry_at:
            return "providers are not answering; retrying" + self._bans(";")
        if self.banned:
            return self._only_bans() + "; looking for other providers"
        return "no provider reachable; looking for providers"

    def given_up(self, *, since_progress: float) -> str | None:
        """Why the download fails now, or None: it fails when no piece came for longer
        than the grace period and no provider gives hope (one that delivered since it
        joined, or waits for an upload slot, may be slow; one that sent nothing, was
        dropped or banned gives none)."""
        if since_progress <= NO_PROVIDER_GRACE:
            return None
        if any(a in self._proven or a in self._busy for a in self._active):
            return None
        grace = f"{NO_PROVIDER_GRACE:g} s"
        if self._active:
            silent = ", ".join(sorted(self._active))
            return f"no provider sent a piece for {grace} ({silent} sent nothing)" + self._bans(";")
        if self._retry_at or not self.banned:
            last = "; ".join(self._last_error[a] for a in self._retry_at)
            why = f" ({last})" if last else ""
            return "no provider reachable" + why + self._bans(";")
        return self._only_bans()

    def _only_bans(self) -> str:
        if len(self.banned) == 1:
            ((address, reason),) = self.banned.items()
            return f"the only provider, {address}, was banned: {reason}"
        return "every provider was banned: " + "; ".join(f"{a} {r}" for a, r in self.banned.items())

    def _bans(self, sep: str) -> str:
        if not self.banned:
            return ""
        return f"{sep} banned: " + "; ".join(f"{a} {r}" for a, r in self.banned.items())

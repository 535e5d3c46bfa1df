"""The tracker session without I/O: what a peer knows of its registration at the
tracker, how long it waits before trying again, and what of its index the tracker
still lacks.

docs/design.md, Network: *Join*. The asyncio side
(``p2pshare.peer.discovery.tracker_session``) makes the calls, and reports each
answer or failure here with the time it happened (``now``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

RETRY_FIRST = 1.0  # seconds before the first retry of a tracker that did not answer
RETRY_MAX = 10.0  # seconds between attempts to reach a tracker that is down

E = TypeVar("E")


@dataclass
class Registration:
    """What this peer knows of its registration at the tracker."""

    url: str | None
    state: str = "not registered"
    peer_id: str = ""
    token: str = ""
    lease_seconds: float = 0.0
    last_ok: float | None = None
    reachable: str = "not known yet"
    """Whether the tracker could dial this peer back, and why not, as its answers say."""

    def __post_init__(self) -> None:
        if self.url is None:
            self.state = "no tracker configured"

    @property
    def joined(self) -> bool:
        """Whether this peer holds a token (else the next call is a registration)."""
        return bool(self.token)

    def registered(self, *, peer_id: str, token: str, lease_seconds: float, now: float) -> None:
        self.peer_id, self.token, self.lease_seconds = peer_id, token, lease_seconds
        self.answered(now)

    def answered(self, now: float) -> None:
        """A heartbeat or a patch of the index went through."""
        self.state = "registered"
        self.last_ok = now

    def note_reachability(self, reachable: bool | None, why: str) -> None:
        known = "not known yet" if reachable is None else "yes" if reachable else "no"
        self.reachable = f"{known} ({why})" if why else known

    def refused(self, why: str) -> None:
        """The tracker refused this peer (a private network's key, say)."""
        self.state = f"refused: {why}"
        self.token = ""

    def unreachable(self, why: str) -> None:
        """No answer: the tracker may forget us while down, so join again after."""
        self.state = f"unreachable: {why}"
        self.token = ""

    def silent(self, why: str) -> None:
        """A check between heartbeats got no answer: say so now, and keep the token
        for the next heartbeat to decide (the tracker may only be slow)."""
        self.state = f"unreachable: {why}"

    def stale(self, now: float, within: float) -> bool:
        """Whether the last answer is older than ``within`` seconds (a status shown
        from it could say "registered" of a tracker that died since)."""
        return self.joined and (self.last_ok is None or now - self.last_ok > within)

    def lost(self) -> None:
        """The lease ran out (or the tracker lost us): join again with the full index."""
        self.state = "re-registering"
        self.token = ""

    def heartbeat_every(self, configured: float) -> float:
        """Seconds between heartbeats: as configured, else a third of the lease."""
        return configured or max(self.lease_seconds / 3, 1)


class Backoff:
    """Waits that double after each failure, up to ``most``; ``reset`` on success."""

    def __init__(self, first: float = RETRY_FIRST, most: float = RETRY_MAX) -> None:
        self._first = first
        self._most = most
        self._next = first

    def next(self) -> float:
        """How long to wait now; the wait after it doubles."""
        delay = self._next
        self._next = min(delay * 2, self._most)
        return delay

    def reset(self) -> None:
        self._next = self._first


def index_diff(sent: Mapping[str, E], now: Mapping[str, E]) -> tuple[list[E], list[str]]:
    """``(add, remove)``: the entries of ``now`` the tracker lacks or has otherwise
    (``sent`` is what it was last told), and the content ids it should forget."""
    add = [entry for cid, entry in now.items() if sent.get(cid) != entry]
    remove = [cid for cid in sent if cid not in now]
    return add, remove

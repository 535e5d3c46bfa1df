"""Whether a registered address is really the registering peer's: the tracker's rule
for the answer of its dial-back (design: *Addresses*; issues 13 and 14).

After a registration the tracker calls ``Hello`` on the advertised address. What it
got (``Answer``) and who else holds that address decide (``judge``):

- the address answered with the new registration's peer id: it is reachable, and any
  older registration of the same address is dropped: the address is proven to be the
  new registrant's (a restarted peer takes its address back this way);
- it answered with another peer id (an older registrant still lives there, or the
  address is someone else's): not reachable, and the older registrations stay; the
  tracker asks again a little later first (the peer may not have read its new id
  from the registration's answer yet);
- nothing answered: not reachable, and older registrations of the address are
  dropped too (their holder no longer answers there either), unless the address was
  not dialled (a loopback address from another machine) or the call was refused.

Only reachable registrations are handed out (search hits, providers, neighbours,
events), so nobody can make the network dial an address that does not answer as a
p2pshare peer (reflection), or push a live peer out of the index without proof
(address takeover). The other proof is the old registration's token, which the
registry checks itself.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "RETRY_DELAYS",
    "Answer",
    "Failure",
    "Verdict",
    "judge",
    "failure_reason",
]

Failure = Literal["refused", "timeout", "dns", "denied", "protocol", "loopback"]
"""Why nothing answered as a peer: connection refused, no answer in time, a host name
that does not resolve, the call refused (another network or key), not p2pshare's
gRPC on that port, a loopback address advertised from another machine."""

RETRY_DELAYS = (0.5, 2.0)
"""Seconds to wait before asking again an address that answered with another id."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What a dial-back got: the peer id the address answered ``Hello`` with, or why
    it did not answer (``failure``, with ``detail`` for the reason shown)."""

    peer_id: str | None = None
    failure: Failure | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one dial-back."""

    reachable: bool
    reason: str
    """Shown to the peer (its ``status``): why it is or is not reachable."""
    evict_holders: bool
    """Drop the other live registrations of the same address."""
    retry: bool
    """Ask again after the next of ``RETRY_DELAYS`` instead of settling now."""


def failure_reason(address: str, failure: Failure, detail: str = "") -> str:
    """The sentence a peer reads when the tracker could not reach it."""
    port = address.rpartition(":")[2]
    if failure == "refused":
        return f"nothing answers at {address} (port {port} closed or not forwarded?)"
    if failure == "timeout":
        return (
            f"{address} did not answer in time (a firewall dropping packets to port"
            f" {port}, or not this machine's address?)"
        )
    if failure == "dns":
        return f"the host of {address} does not resolve"
    if failure == "denied":
        return f"{address} refused the tracker's hello (another network, or another network_key?)"
    if failure == "loopback":
        return detail
    return f"{address} does not answer as a p2pshare peer (another service on port {port}?)"


def judge(
    address: str,
    peer_id: str,
    holders: Collection[str],
    answer: Answer,
    *,
    tries_left: int,
) -> Verdict:
    """The verdict on registration ``peer_id`` of ``address`` given the dial-back's
    ``answer``; ``holders``: the peer ids of the other live registrations of the address;
    ``tries_left``: how many more times the tracker may ask."""
    if answer.peer_id is not None and answer.peer_id == peer_id:
        return Verdict(True, f"{address} answered as this peer", bool(holders), retry=False)
    if answer.peer_id is not None:
        if tries_left > 0:
            return Verdict(False, "", False, retry=True)
        if answer.peer_id in holders:
            who = "the peer registered there before you, which still answers"
        elif answer.peer_id:
            who = "another peer"
        else:
            who = "a peer that is not registered"
        return Verdict(False, f"{address} answered as {who}", False, retry=False)
    failure = answer.failure or "protocol"
    # the holders no longer answer there; a loopback address was not dialled, and a
    # refused hello may be a holder that does not know this tracker's key: no proof
    evict = bool(holders) and failure not in ("loopback", "denied")
    return Verdict(False, failure_reason(address, failure, answer.detail), evict, retry=False)

"""Peer addresses: the ``HOST:PORT`` strings at which other peers dial a peer.

An address crosses the network in registrations, tracker answers, overlay hellos and
published events; every one that comes in passes ``check_address`` (the tracker's
API models and the peer's overlay share it). ``loopback_mismatch`` is the rule the
tracker applies before it dials an address back: a peer that advertises a loopback
or unspecified host from another machine gave an address nobody else can dial.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

__all__ = [
    "MAX_ADDRESS_LENGTH",
    "check_address",
    "host_of",
    "is_loopback",
    "loopback_mismatch",
]

MAX_ADDRESS_LENGTH = 262
"""A DNS name (253) in brackets, a colon and a port."""


def check_address(value: str) -> str:
    """Return ``value`` if it is ``HOST:PORT`` (``[v6]:PORT`` allowed); else ``ValueError``."""
    host, sep, port = value.rpartition(":")
    if (
        not sep
        or not host
        or len(value) > MAX_ADDRESS_LENGTH
        or not port.isascii()
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or any(c.isspace() or c in "/@?#" for c in host)
    ):
        raise ValueError("address must be HOST:PORT, for example 203.0.113.7:8461")
    return value


def host_of(address: str) -> str:
    """The host of ``HOST:PORT`` (an IPv6 literal without its brackets)."""
    return address.rpartition(":")[0].strip("[]")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: a loopback or unspecified address,
    or ``localhost``."""
    if host.lower() in ("localhost", "localhost.", ""):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def loopback_mismatch(
    address: str, seen_from: str | None, *, this_machine: Collection[str] = ()
) -> str | None:
    """Why ``address`` cannot be dialled by others when its registration came from
    ``seen_from`` (the client address the tracker saw), or None if it may be.

    A loopback host advertised from another machine names the tracker's own machine
    (and dialling it would reach whatever listens there): it is refused without a
    dial. From the tracker's machine itself (a loopback client, or one of
    ``this_machine``: the machine's other addresses) it is fine: a test, one machine.
    """
    host = host_of(address)
    if not is_loopback(host) or seen_from is None or is_loopback(seen_from):
        return None
    if seen_from in this_machine:
        return None
    port = address.rpartition(":")[2]
    return (
        f"advertised {address}, which only this machine can dial; the tracker sees"
        f' you at {seen_from}: set advertise = "{_bracketed(seen_from)}:{port}"'
        " (or the address others reach you at)"
    )


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host

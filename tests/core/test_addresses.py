"""Peer addresses: one check shared by the tracker and the peer."""

from __future__ import annotations

import pytest

from p2pshare.core.addresses import check_address, is_loopback, loopback_mismatch


@pytest.mark.parametrize("good", ["203.0.113.7:8461", "[2001:db8::1]:1", "peer.example:65535"])
def test_check_address_accepts_host_and_port(good: str) -> None:
    assert check_address(good) == good


@pytest.mark.parametrize(
    "bad", ["", "8461", ":8461", "host:", "host:0", "host:65536", "a b:1", "u@h:1", "h:１"]
)
def test_check_address_refuses_anything_else(bad: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        check_address(bad)


def test_loopback_hosts_are_told_apart() -> None:
    for host in ("127.0.0.1", "127.8.0.1", "::1", "0.0.0.0", "::", "localhost", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
    for host in ("203.0.113.7", "10.0.0.1", "peer.example", "2001:db8::1"):
        assert not is_loopback(host), host


def test_a_loopback_address_from_another_machine_is_refused_with_the_address_seen() -> None:
    why = loopback_mismatch("127.0.0.1:8461", "203.0.113.7")
    assert why is not None and 'advertise = "203.0.113.7:8461"' in why
    assert "[2001:db8::7]:8461" in (loopback_mismatch("[::1]:8461", "2001:db8::7") or "")
    assert loopback_mismatch("127.0.0.1:8461", "127.0.0.1") is None  # one machine
    assert loopback_mismatch("203.0.113.7:8461", "198.51.100.1") is None  # NAT, a proxy
    assert loopback_mismatch("127.0.0.1:8461", None) is None


def test_a_loopback_address_from_the_trackers_own_other_address_is_fine() -> None:
    """A peer on the tracker's machine that reaches it at 10.0.0.1 (not 127.0.0.1)."""
    assert loopback_mismatch("127.0.0.1:8461", "10.0.0.1", this_machine={"10.0.0.1"}) is None
    assert loopback_mismatch("127.0.0.1:8461", "10.0.0.2", this_machine={"10.0.0.1"})

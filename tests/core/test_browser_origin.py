"""The control API's rules against DNS rebinding and cross-site requests."""

from __future__ import annotations

import pytest

from p2pshare.core.browser_origin import host_allowed, is_loopback, origin_allowed

NONE: frozenset[str] = frozenset()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.255.0.9", "::1", "[::1]"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "fe80::1"])
def test_other_addresses_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8462", "localhost:8462", "LOCALHOST", "[::1]:8462", "127.0.0.1", "::1"]
)
def test_hosts_that_name_this_machine_are_answered(host: str) -> None:
    assert host_allowed(host, NONE)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:8462",  # a rebound name
        "127.0.0.1.evil.example:8462",
        "localhost.evil.example",
        "10.0.0.5:8462",
        "",
        "[::1",
        "0.0.0.0:8462",
    ],
)
def test_other_hosts_are_refused(host: str) -> None:
    assert not host_allowed(host, NONE)


def test_a_name_the_user_listed_is_answered() -> None:
    assert host_allowed("MyBox.lan:8462", frozenset({"mybox.lan"}))
    assert not host_allowed("other.lan:8462", frozenset({"mybox.lan"}))


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://127.0.0.1:8462", "127.0.0.1:8462"),
        ("http://localhost:8462", "localhost:8462"),
        ("http://[::1]:8462", "[::1]:8462"),
        ("http://localhost", "localhost:80"),
        ("https://mybox.lan", "mybox.lan"),
    ],
)
def test_the_apis_own_origin_is_answered(origin: str, host: str) -> None:
    assert origin_allowed(origin, host)


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://evil.example", "127.0.0.1:8462"),
        ("http://localhost:3000", "127.0.0.1:8462"),  # another local web app
        ("http://127.0.0.1:3000", "127.0.0.1:8462"),
        ("http://localhost:8462", "127.0.0.1:8462"),  # a different origin to the browser
        ("null", "127.0.0.1:8462"),
        ("file://", "127.0.0.1:8462"),
        ("http://127.0.0.1:99999", "127.0.0.1:8462"),
        ("", "127.0.0.1:8462"),
    ],
)
def test_other_origins_are_refused(origin: str, host: str) -> None:
    assert not origin_allowed(origin, host)

"""Which browser requests a peer's control API answers: the rules against DNS
rebinding and cross-site requests.

Any web page the user opens can make the browser send requests to 127.0.0.1. The
browser keeps the page from reading the answers of another origin, but two holes
remain: a page whose own host name the attacker re-points at 127.0.0.1 (DNS
rebinding: the browser then counts the control API as the page's own origin, so
it reads ``/v1/status`` and POSTs downloads into ``~/.ssh``), and requests
that change state without reading the answer (CSRF). Transmission (CVE-2018-5702)
and Syncthing answer both the same way as here:

- On loopback, the ``Host`` header must name this machine: ``localhost``, a
  loopback address, or a name the user listed (``api_allowed_hosts``). A rebound
  name arrives as ``Host: evil.example`` and is refused.
- A request that carries an ``Origin`` (browsers send it on every POST/PUT/DELETE
  and on cross-origin reads) must come from the API's own origin; and a request
  that the browser marks ``Sec-Fetch-Site: cross-site`` is refused.

Off loopback the control API demands its token as well; the token is never in a
cookie, so a page cannot make the browser send it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``, IPv6 with or without brackets)
    is this machine only: 127.0.0.0/8 and ::1. An unspecified address (0.0.0.0, ::)
    is every address."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return host.lower().rstrip(".") == "localhost"


def host_of(host_header: str) -> str:
    """The host name or address of a ``Host`` header value, without the port."""
    value = host_header.strip().lower()
    if value.startswith("["):  # [::1]:8462
        return value[1 : value.find("]")] if "]" in value else ""
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(host_header: str, allowed: frozenset[str]) -> bool:
    """A loopback control API answers a ``Host`` that names this machine, or one of
    ``allowed`` (lower case)."""
    host = host_of(host_header)
    return bool(host) and (is_loopback(host) or host.rstrip(".") in allowed)


def origin_allowed(origin: str, host_header: str) -> bool:
    """Whether a request with ``Origin: origin`` comes from the API's own pages: the
    origin's host and port are the ones the request was sent to. ``null`` (a
    sandboxed frame, a file) never is."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    default = 443 if parts.scheme == "https" else 80
    origin_host = parts.hostname.lower()
    request_host = host_of(host_header)
    try:
        request_port = urlsplit(f"//{host_header.strip().lower()}").port or default
    except ValueError:
        return False
    return origin_host == request_host and (port or default) == request_port

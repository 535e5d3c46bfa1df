"""The one error hierarchy of p2pshare.

Grouped by what the caller can do about each::

    P2PShareError                  root: catch this to catch everything of ours
    ├── UsageError                 the local caller did something wrong; fix the input
    │   ├── ConfigError            a bad config value (names the key)
    │   ├── InvalidName            a file name or path that would leave the share folder
    │   ├── InvalidContentId       not 64 hex characters / not a unique prefix
    │   └── InvalidQuery           an empty, wordless or overlong name query
    ├── NotFound                   nothing known under that id or name
    ├── PermissionDenied           a missing or wrong token
    │   └── Unauthenticated        no valid proof of the network key (a private network)
    ├── RemoteError                the other side misbehaved; try another one
    │   ├── BadPiece               a piece whose hash does not match its manifest
    │   ├── BadManifest            a manifest whose content id does not match
    │   └── Unsupported            it does not know the call (an older version)
    ├── TransportError             could not talk to the other side at all
    │   ├── Unreachable            connection refused, no route, tracker down
    │   ├── TimedOut               it did not answer in time
    │   └── Busy                   it is at a limit; retry a little later
    └── DownloadFailed             a download cannot finish (no provider left, disk full)

Third-party exceptions (grpc, httpx, sqlite3, OSError) are translated to these once,
at the edge where they arise, with ``raise ... from exc``.
"""

from __future__ import annotations


class P2PShareError(Exception):
    """Root of every error p2pshare raises on purpose."""


class UsageError(P2PShareError):
    """The local caller gave input that can never work; the message says how to fix it."""


class ConfigError(UsageError):
    """A configuration value is missing or invalid."""


class InvalidName(UsageError):
    """A file name that is not a safe relative path inside a share folder."""


class InvalidContentId(UsageError):
    """A content id that is malformed or an ambiguous prefix."""


class InvalidQuery(UsageError, ValueError):
    """A name query that selects nothing by construction: empty, no letters or digits,
    too long. Also a ``ValueError``, so pydantic validators report it as bad input."""


class NotFound(P2PShareError):
    """Nothing is known under the given id or name."""


class PermissionDenied(P2PShareError):
    """The caller lacks the token that this action needs."""


class Unauthenticated(PermissionDenied):
    """A private network's call without valid proof of its key: none, a wrong key, a
    time off the receiver's clock, or a replay."""


class RemoteError(P2PShareError):
    """A remote peer or the tracker answered with something wrong."""


class BadPiece(RemoteError):
    """A piece whose SHA-256 does not match the manifest."""


class BadManifest(RemoteError):
    """A manifest that does not hash to the content id it was asked for."""


class Unsupported(RemoteError):
    """The other side does not implement the call (an older version of p2pshare)."""


class TransportError(P2PShareError):
    """The other side could not be reached or did not answer."""


class Unreachable(TransportError):
    """Connection refused, reset, or no route."""


class TimedOut(TransportError):
    """No answer within the deadline."""


class Busy(TransportError):
    """The other side is at its limit (uploads, streams); try again a little later."""


class DownloadFailed(P2PShareError):
    """A download stopped before it completed; its verified pieces are kept."""

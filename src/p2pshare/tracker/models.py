"""The tracker's REST API messages, shared by the tracker and the peer's tracker client.

Every field that comes in from the network is validated here: content ids are 64
lowercase hex characters, names pass ``check_share_name``, addresses are
``HOST:PORT``.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

from p2pshare.core.manifest import check_content_id
from p2pshare.core.paths import check_share_name
from p2pshare.errors import UsageError

__all__ = [
    "MAX_FILES_PER_REQUEST",
    "Address",
    "ContentId",
    "ErrorResponse",
    "FileEntry",
    "FilesResponse",
    "HealthResponse",
    "HeartbeatResponse",
    "PatchFilesRequest",
    "PeerRef",
    "PeersResponse",
    "ProvidersResponse",
    "SEARCH_HITS",
    "RegisterRequest",
    "RegisterResponse",
    "ReplaceFilesRequest",
    "SearchHit",
    "SearchResponse",
    "ShareName",
    "check_address",
]

MAX_FILES_PER_REQUEST = 200_000
MAX_ADDRESS_LENGTH = 262


def _content_id(value: str) -> str:
    try:
        return check_content_id(value)
    except UsageError as exc:
        raise ValueError(str(exc)) from exc


def _share_name(value: str) -> str:
    try:
        return check_share_name(value)
    except UsageError as exc:
        raise ValueError(str(exc)) from exc


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


ContentId = Annotated[str, AfterValidator(_content_id)]
"""A full content id: 64 lowercase hex characters."""
ShareName = Annotated[str, AfterValidator(_share_name)]
"""A safe relative share name (see ``p2pshare.core.paths.check_share_name``)."""
Address = Annotated[str, AfterValidator(check_address)]
"""``HOST:PORT`` at which other peers reach a peer's gRPC server."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Model):
    """One shared file as the tracker indexes it."""

    content_id: ContentId
    name: ShareName
    size: int = Field(ge=0)


class PeerRef(_Model):
    """A live peer: its id at the tracker and the address it is dialled at."""

    peer_id: str
    address: str


class RegisterRequest(_Model):
    """``POST /v1/peers``: join with an address and the files shared."""

    address: Address
    files: list[FileEntry] = Field(default_factory=list, max_length=MAX_FILES_PER_REQUEST)


class RegisterResponse(_Model):
    """The new registration: the token alone may update or remove it."""

    peer_id: str
    token: str
    lease_seconds: float
    neighbours: list[PeerRef]


class HeartbeatResponse(_Model):
    """The lease was renewed for this many seconds from now."""

    lease_seconds: float


class ReplaceFilesRequest(_Model):
    """``PUT /v1/peers/{peer_id}/files``: the whole new index of a peer."""

    files: list[FileEntry] = Field(max_length=MAX_FILES_PER_REQUEST)


class PatchFilesRequest(_Model):
    """``PATCH /v1/peers/{peer_id}/files``: files added and content ids removed."""

    add: list[FileEntry] = Field(default_factory=list, max_length=MAX_FILES_PER_REQUEST)
    remove: list[ContentId] = Field(default_factory=list, max_length=MAX_FILES_PER_REQUEST)


class FilesResponse(_Model):
    """How many files the tracker now indexes for the peer (its lease is renewed too)."""

    files: int
    lease_seconds: float


class SearchHit(_Model):
    """One content id whose name matched, with the live peers that provide it."""

    content_id: str
    name: str
    size: int
    providers: list[PeerRef]


class SearchResponse(_Model):
    """``GET /v1/search``."""

    hits: list[SearchHit]


class ProvidersResponse(_Model):
    """``GET /v1/files/{content_id}/providers``."""

    content_id: str
    name: str
    size: int
    providers: list[PeerRef]


class PeersResponse(_Model):
    """``GET /v1/peers``."""

    peers: list[PeerRef]


class HealthResponse(_Model):
    """``GET /healthz``."""

    status: str
    version: str  # the tracker's p2pshare release
    peers: int
    files: int


class ErrorResponse(_Model):
    """The body of every 4xx/5xx answer."""

    error: str


compact_json = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False
).encode
"""JSON as the tracker's hot routes write it: compact, UTF-8 kept."""


SEARCH_HITS = TypeAdapter(list[SearchHit])
"""Reads a JSON array of search hits (``Registry.search_json``) into models."""


def hit_json(content_id: str, name: str, size: int, providers: list[tuple[str, str]]) -> str:
    """A search hit as ``SearchHit`` encodes it, from plain data (no model built)."""
    refs = [{"peer_id": peer_id, "address": address} for peer_id, address in providers]
    return compact_json({"content_id": content_id, "name": name, "size": size, "providers": refs})

"""Content: pieces, piece hashes, manifests and content ids.

A file is cut into fixed-size pieces; each piece has a SHA-256. The content id is
the SHA-256 of a canonical encoding of (file size, piece size, piece hashes), so it
names the bytes, not the file name, and every piece can be checked on arrival.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from p2pshare.errors import BadManifest, BadPiece, InvalidContentId

DEFAULT_PIECE_SIZE = 1 << 20
MIN_PIECE_SIZE = 16 << 10
MAX_PIECE_SIZE = 16 << 20
HASH_SIZE = 32
_DOMAIN = b"p2pshare/content/v1\x00"
_CONTENT_ID = re.compile(r"[0-9a-f]{64}")
_ID_PREFIX = re.compile(r"[0-9a-f]{1,64}")


def piece_count(size: int, piece_size: int) -> int:
    """How many pieces a file of ``size`` bytes has (an empty file has none)."""
    return (size + piece_size - 1) // piece_size


def piece_length(size: int, piece_size: int, index: int) -> int:
    """Length of piece ``index``: ``piece_size`` except for a shorter last piece."""
    count = piece_count(size, piece_size)
    if not 0 <= index < count:
        raise IndexError(f"piece {index} out of range 0..{count - 1}")
    if index < count - 1:
        return piece_size
    return size - piece_size * (count - 1)


def check_piece_size(piece_size: int) -> int:
    """Return ``piece_size`` if it is a power of two within the allowed range."""
    if not MIN_PIECE_SIZE <= piece_size <= MAX_PIECE_SIZE or piece_size & (piece_size - 1):
        raise ValueError(
            f"piece size must be a power of two between {MIN_PIECE_SIZE} and {MAX_PIECE_SIZE}"
        )
    return piece_size


def content_id_of(size: int, piece_size: int, piece_hashes: Iterable[bytes]) -> str:
    """The content id: SHA-256 over the canonical encoding of the three fields."""
    h = hashlib.sha256(_DOMAIN)
    h.update(struct.pack(">QI", size, piece_size))
    for ph in piece_hashes:
        h.update(ph)
    return h.hexdigest()


def check_content_id(value: str) -> str:
    """Return ``value`` if it is a full content id (64 lowercase hex characters)."""
    if not isinstance(value, str) or not _CONTENT_ID.fullmatch(value):
        raise InvalidContentId(f"not a content id (64 hex characters): {value!r:.80}")
    return value


def check_content_id_prefix(value: str) -> str:
    """Return ``value`` lower-cased if it can be a content id or a prefix of one."""
    v = value.strip().lower()
    if not _ID_PREFIX.fullmatch(v):
        raise InvalidContentId(f"not a content id or prefix (hex characters): {value!r:.80}")
    return v


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a downloader needs to fetch and verify one file."""

    name: str
    size: int
    piece_size: int
    piece_hashes: tuple[bytes, ...]
    file_sha256: bytes = b""

    @property
    def content_id(self) -> str:
        return content_id_of(self.size, self.piece_size, self.piece_hashes)

    @property
    def piece_count(self) -> int:
        return len(self.piece_hashes)

    def piece_length(self, index: int) -> int:
        return piece_length(self.size, self.piece_size, index)

    def piece_offset(self, index: int) -> int:
        return index * self.piece_size

    def verify_piece(self, index: int, data: bytes | memoryview) -> None:
        """Raise ``BadPiece`` unless ``data`` is exactly piece ``index``."""
        if not 0 <= index < self.piece_count:
            raise BadPiece(f"piece index {index} out of range")
        if len(data) != self.piece_length(index):
            expected = self.piece_length(index)
            raise BadPiece(f"piece {index} has {len(data)} bytes, expected {expected}")
        if hashlib.sha256(data).digest() != self.piece_hashes[index]:
            raise BadPiece(f"piece {index} does not match its hash")


def validate_manifest(
    *,
    content_id: str,
    name: str,
    size: int,
    piece_size: int,
    piece_hashes: Sequence[bytes],
    file_sha256: bytes = b"",
) -> Manifest:
    """Build a manifest received from elsewhere, checking it really is ``content_id``."""
    try:
        check_piece_size(piece_size)
    except ValueError as exc:
        raise BadManifest(str(exc)) from exc
    if size < 0 or len(piece_hashes) != piece_count(size, piece_size):
        raise BadManifest(f"{len(piece_hashes)} piece hashes for {size} bytes")
    if any(len(h) != HASH_SIZE for h in piece_hashes):
        raise BadManifest("a piece hash is not 32 bytes")
    if file_sha256 and len(file_sha256) != HASH_SIZE:
        raise BadManifest("file_sha256 is not 32 bytes")
    manifest = Manifest(name, size, piece_size, tuple(piece_hashes), file_sha256)
    if manifest.content_id != content_id:
        raise BadManifest(f"manifest does not hash to content id {content_id[:16]}…")
    return manifest

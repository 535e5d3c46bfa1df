from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_FLOOD: _ClassVar[SearchMode]
    SEARCH_MODE_WALK: _ClassVar[SearchMode]

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_ADDED: _ClassVar[ChangeKind]
    CHANGE_KIND_REMOVED: _ClassVar[ChangeKind]
SEARCH_MODE_FLOOD: SearchMode
SEARCH_MODE_WALK: SearchMode
CHANGE_KIND_ADDED: ChangeKind
CHANGE_KIND_REMOVED: ChangeKind

class PeerInfo(_message.Message):
    __slots__ = ("peer_id", "address")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    peer_id: str
    address: str
    def __init__(self, peer_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ("peer",)
    PEER_FIELD_NUMBER: _ClassVar[int]
    peer: PeerInfo
    def __init__(self, peer: _Optional[_Union[PeerInfo, _Mapping]] = ...) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ("peer", "known", "protocol_version", "accepted", "software_version")
    PEER_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    peer: PeerInfo
    known: _containers.RepeatedCompositeFieldContainer[PeerInfo]
    protocol_version: int
    accepted: bool
    software_version: str
    def __init__(self, peer: _Optional[_Union[PeerInfo, _Mapping]] = ..., known: _Optional[_Iterable[_Union[PeerInfo, _Mapping]]] = ..., protocol_version: _Optional[int] = ..., accepted: _Optional[bool] = ..., software_version: _Optional[str] = ...) -> None: ...

class ManifestRequest(_message.Message):
    __slots__ = ("content_id",)
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    content_id: str
    def __init__(self, content_id: _Optional[str] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("content_id", "name", "size", "piece_size", "piece_hashes", "file_sha256")
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PIECE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PIECE_HASHES_FIELD_NUMBER: _ClassVar[int]
    FILE_SHA256_FIELD_NUMBER: _ClassVar[int]
    content_id: str
    name: str
    size: int
    piece_size: int
    piece_hashes: _containers.RepeatedScalarFieldContainer[bytes]
    file_sha256: bytes
    def __init__(self, content_id: _Optional[str] = ..., name: _Optional[str] = ..., size: _Optional[int] = ..., piece_size: _Optional[int] = ..., piece_hashes: _Optional[_Iterable[bytes]] = ..., file_sha256: _Optional[bytes] = ...) -> None: ...

class PiecesRequest(_message.Message):
    __slots__ = ("content_id", "indexes")
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    INDEXES_FIELD_NUMBER: _ClassVar[int]
    content_id: str
    indexes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, content_id: _Optional[str] = ..., indexes: _Optional[_Iterable[int]] = ...) -> None: ...

class Piece(_message.Message):
    __slots__ = ("index", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    data: bytes
    def __init__(self, index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class HaveRequest(_message.Message):
    __slots__ = ("content_id",)
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    content_id: str
    def __init__(self, content_id: _Optional[str] = ...) -> None: ...

class HaveMap(_message.Message):
    __slots__ = ("content_id", "complete", "piece_count", "bitfield", "block_size")
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    PIECE_COUNT_FIELD_NUMBER: _ClassVar[int]
    BITFIELD_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    content_id: str
    complete: bool
    piece_count: int
    bitfield: bytes
    block_size: int
    def __init__(self, content_id: _Optional[str] = ..., complete: _Optional[bool] = ..., piece_count: _Optional[int] = ..., bitfield: _Optional[bytes] = ..., block_size: _Optional[int] = ...) -> None: ...

class ExchangeOpen(_message.Message):
    __slots__ = ("content_id", "have", "block_size")
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    HAVE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    content_id: str
    have: HaveMap
    block_size: int
    def __init__(self, content_id: _Optional[str] = ..., have: _Optional[_Union[HaveMap, _Mapping]] = ..., block_size: _Optional[int] = ...) -> None: ...

class BlockRef(_message.Message):
    __slots__ = ("piece", "block")
    PIECE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    piece: int
    block: int
    def __init__(self, piece: _Optional[int] = ..., block: _Optional[int] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("piece", "block", "data")
    PIECE_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    piece: int
    block: int
    data: bytes
    def __init__(self, piece: _Optional[int] = ..., block: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ExchangeMessage(_message.Message):
    __slots__ = ("open", "bitfield", "have", "request", "cancel", "block", "refused", "unchoke")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    BITFIELD_FIELD_NUMBER: _ClassVar[int]
    HAVE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    UNCHOKE_FIELD_NUMBER: _ClassVar[int]
    open: ExchangeOpen
    bitfield: HaveMap
    have: int
    request: BlockRef
    cancel: BlockRef
    block: Block
    refused: BlockRef
    unchoke: bool
    def __init__(self, open: _Optional[_Union[ExchangeOpen, _Mapping]] = ..., bitfield: _Optional[_Union[HaveMap, _Mapping]] = ..., have: _Optional[int] = ..., request: _Optional[_Union[BlockRef, _Mapping]] = ..., cancel: _Optional[_Union[BlockRef, _Mapping]] = ..., block: _Optional[_Union[Block, _Mapping]] = ..., refused: _Optional[_Union[BlockRef, _Mapping]] = ..., unchoke: _Optional[bool] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("query", "limit", "content_id", "with_versions", "name")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    query: str
    limit: int
    content_id: str
    with_versions: bool
    name: str
    def __init__(self, query: _Optional[str] = ..., limit: _Optional[int] = ..., content_id: _Optional[str] = ..., with_versions: _Optional[bool] = ..., name: _Optional[str] = ...) -> None: ...

class VersionCounter(_message.Message):
    __slots__ = ("device", "value")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    device: str
    value: int
    def __init__(self, device: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("content_id", "name", "size", "provider", "hops", "version", "mtime_ns", "origin", "deleted")
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    content_id: str
    name: str
    size: int
    provider: PeerInfo
    hops: int
    version: _containers.RepeatedCompositeFieldContainer[VersionCounter]
    mtime_ns: int
    origin: str
    deleted: bool
    def __init__(self, content_id: _Optional[str] = ..., name: _Optional[str] = ..., size: _Optional[int] = ..., provider: _Optional[_Union[PeerInfo, _Mapping]] = ..., hops: _Optional[int] = ..., version: _Optional[_Iterable[_Union[VersionCounter, _Mapping]]] = ..., mtime_ns: _Optional[int] = ..., origin: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...

class OverlayQuery(_message.Message):
    __slots__ = ("tag", "query_id", "ttl", "mode", "walkers", "origin", "query", "content_id", "limit", "timeout_ms", "covers")
    TAG_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    WALKERS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    COVERS_FIELD_NUMBER: _ClassVar[int]
    tag: int
    query_id: str
    ttl: int
    mode: SearchMode
    walkers: int
    origin: PeerInfo
    query: str
    content_id: str
    limit: int
    timeout_ms: int
    covers: bool
    def __init__(self, tag: _Optional[int] = ..., query_id: _Optional[str] = ..., ttl: _Optional[int] = ..., mode: _Optional[_Union[SearchMode, str]] = ..., walkers: _Optional[int] = ..., origin: _Optional[_Union[PeerInfo, _Mapping]] = ..., query: _Optional[str] = ..., content_id: _Optional[str] = ..., limit: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., covers: _Optional[bool] = ...) -> None: ...

class OverlayReply(_message.Message):
    __slots__ = ("tag", "hits", "done")
    TAG_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    tag: int
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    done: bool
    def __init__(self, tag: _Optional[int] = ..., hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., done: _Optional[bool] = ...) -> None: ...

class OverlayMessage(_message.Message):
    __slots__ = ("hello", "query", "reply", "cancel")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    hello: PeerInfo
    query: OverlayQuery
    reply: OverlayReply
    cancel: int
    def __init__(self, hello: _Optional[_Union[PeerInfo, _Mapping]] = ..., query: _Optional[_Union[OverlayQuery, _Mapping]] = ..., reply: _Optional[_Union[OverlayReply, _Mapping]] = ..., cancel: _Optional[int] = ...) -> None: ...

class OverlayBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[OverlayMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[OverlayMessage, _Mapping]]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("query", "sender")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    query: str
    sender: PeerInfo
    def __init__(self, query: _Optional[str] = ..., sender: _Optional[_Union[PeerInfo, _Mapping]] = ...) -> None: ...

class ShareChange(_message.Message):
    __slots__ = ("kind", "content_id", "name", "size", "provider", "hops", "version", "mtime_ns", "origin", "deleted")
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MTIME_NS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    kind: ChangeKind
    content_id: str
    name: str
    size: int
    provider: PeerInfo
    hops: int
    version: _containers.RepeatedCompositeFieldContainer[VersionCounter]
    mtime_ns: int
    origin: str
    deleted: bool
    def __init__(self, kind: _Optional[_Union[ChangeKind, str]] = ..., content_id: _Optional[str] = ..., name: _Optional[str] = ..., size: _Optional[int] = ..., provider: _Optional[_Union[PeerInfo, _Mapping]] = ..., hops: _Optional[int] = ..., version: _Optional[_Iterable[_Union[VersionCounter, _Mapping]]] = ..., mtime_ns: _Optional[int] = ..., origin: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...

"""The hand-written Piece codec speaks exactly protobuf's wire format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare._proto import peer_pb2 as pb
from p2pshare.errors import RemoteError
from p2pshare.peer.rpc.wire import decode_piece, encode_piece, remote_key

indexes = st.integers(min_value=0, max_value=2**32 - 1)


@given(indexes, st.binary(max_size=4096))
def test_encode_piece_is_byte_for_byte_protobuf(index: int, data: bytes) -> None:
    assert encode_piece(index, data) == pb.Piece(index=index, data=data).SerializeToString()


@given(indexes, st.binary(max_size=4096))
def test_decode_piece_reads_what_protobuf_writes(index: int, data: bytes) -> None:
    got_index, got_data = decode_piece(pb.Piece(index=index, data=data).SerializeToString())
    assert (got_index, bytes(got_data)) == (index, data)


def test_decode_piece_skips_fields_it_does_not_know() -> None:
    known = pb.Piece(index=7, data=b"abc").SerializeToString()
    unknown_varint = bytes([0x18, 0x05])  # field 3, varint 5
    unknown_bytes = bytes([0x22, 0x02]) + b"zz"  # field 4, 2 bytes
    index, data = decode_piece(unknown_varint + known + unknown_bytes)
    assert (index, bytes(data)) == (7, b"abc")


@pytest.mark.parametrize(
    "raw",
    [
        bytes([0x12, 0x05]) + b"abc",  # data shorter than its length
        bytes([0x08]),  # varint cut off
        bytes([0x08] + [0xFF] * 11),  # varint too long
        bytes([0x0B]),  # wire type 3 (groups) is not ours
    ],
)
def test_decode_piece_refuses_malformed_messages(raw: bytes) -> None:
    with pytest.raises(RemoteError):
        decode_piece(raw)


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("ipv4:203.0.113.7:51234", "203.0.113.7"),
        ("ipv4:203.0.113.7:40000", "203.0.113.7"),  # another connection, the same remote
        ("ipv6:[2001:db8:1:2::7]:51234", "2001:db8:1:2::/64"),
        ("ipv6:[::ffff:198.51.100.4]:1", "198.51.100.4"),
        # peers of this machine share one address: each connection is one remote
        ("ipv4:127.0.0.1:51234", "ipv4:127.0.0.1:51234"),
        ("ipv6:[::1]:51234", "ipv6:[::1]:51234"),
        ("unix:/run/p.sock", "unix:/run/p.sock"),
    ],
)
def test_a_remote_peer_is_its_ip_address_or_on_loopback_its_connection(peer, key) -> None:
    assert remote_key(peer) == key

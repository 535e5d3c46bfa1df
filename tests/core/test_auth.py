"""Proof of the network key: signing, verification, the window, the replay memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pshare.core.auth import (
    GRPC_PURPOSE,
    HTTP_PURPOSE,
    CallSigner,
    CallVerifier,
    derive_key,
    grpc_call,
    http_call,
)
from p2pshare.errors import Unauthenticated

KEY = "p2pk-" + "k" * 40
OTHER = "p2pk-" + "o" * 40
T = 1_700_000_000.0
CALL = "/p2pshare.v1.Peer/Hello"


def nonce(i: int) -> bytes:
    return i.to_bytes(16, "big")


def signer(key: str = KEY, purpose: str = GRPC_PURPOSE) -> CallSigner:
    return CallSigner(key, purpose)


def verifier(**kw: float) -> CallVerifier:
    return CallVerifier(KEY, GRPC_PURPOSE, **kw)  # type: ignore[arg-type]


def test_a_signed_call_is_accepted_once() -> None:
    v = verifier()
    value = signer().sign(CALL, now=T, nonce=nonce(1))
    v.verify(value, CALL, now=T + 1)
    with pytest.raises(Unauthenticated, match="replayed"):
        v.verify(value, CALL, now=T + 2)


def test_each_fresh_nonce_is_accepted() -> None:
    v = verifier()
    for i in range(100):
        v.verify(signer().sign(CALL, now=T, nonce=nonce(i)), CALL, now=T)
    assert len(v) == 100


def test_a_missing_value_says_the_network_is_private() -> None:
    with pytest.raises(Unauthenticated, match="private network"):
        verifier().verify(None, CALL, now=T)
    with pytest.raises(Unauthenticated, match="private network"):
        verifier().verify("", CALL, now=T)


def test_a_wrong_key_is_refused() -> None:
    value = signer(OTHER).sign(CALL, now=T, nonce=nonce(1))
    with pytest.raises(Unauthenticated, match="wrong network key"):
        verifier().verify(value, CALL, now=T)


def test_a_proof_for_another_purpose_is_refused() -> None:
    value = signer(purpose=HTTP_PURPOSE).sign(CALL, now=T, nonce=nonce(1))
    with pytest.raises(Unauthenticated, match="wrong network key"):
        verifier().verify(value, CALL, now=T)


def test_purposes_get_different_keys() -> None:
    assert derive_key(KEY, GRPC_PURPOSE) != derive_key(KEY, HTTP_PURPOSE)
    assert derive_key(KEY, GRPC_PURPOSE) != KEY.encode()
    assert derive_key(KEY, GRPC_PURPOSE) == derive_key(KEY, GRPC_PURPOSE)


def test_a_proof_for_another_call_is_refused() -> None:
    value = signer().sign(CALL, now=T, nonce=nonce(1))
    with pytest.raises(Unauthenticated, match="wrong network key"):
        verifier().verify(value, "/p2pshare.v1.Peer/GetManifest", now=T)


def test_the_body_is_covered() -> None:
    call = http_call("POST", "/v1/peers", "")
    value = signer().sign(call, now=T, nonce=nonce(1), body=b'{"address":"a:1"}')
    with pytest.raises(Unauthenticated, match="wrong network key"):
        verifier().verify(value, call, now=T, body=b'{"address":"b:1"}')
    verifier().verify(value, call, now=T, body=b'{"address":"a:1"}')


def test_http_call_names_method_path_and_query() -> None:
    assert http_call("get", "/v1/search", "q=a&limit=3") == "GET /v1/search?q=a&limit=3"
    assert http_call("POST", "/v1/peers", "") == "POST /v1/peers"
    assert http_call("GET", "/v1/search", "q=a") != http_call("GET", "/v1/search", "q=b")


@pytest.mark.parametrize("skew", [-60.0, 60.0, 0.0, -59.999])
def test_times_within_the_window_are_accepted(skew: float) -> None:
    verifier().verify(signer().sign(CALL, now=T + skew, nonce=nonce(1)), CALL, now=T)


@pytest.mark.parametrize("skew", [-60.002, 60.002, -3600.0, 86400.0])
def test_times_outside_the_window_are_refused(skew: float) -> None:
    value = signer().sign(CALL, now=T + skew, nonce=nonce(1))
    with pytest.raises(Unauthenticated, match="off this clock"):
        verifier().verify(value, CALL, now=T)


def test_a_nonce_is_forgotten_only_once_its_time_left_the_window() -> None:
    v = verifier(window=10)
    value = signer().sign(CALL, now=T, nonce=nonce(1))
    v.verify(value, CALL, now=T)
    v.verify(signer().sign(CALL, now=T + 10, nonce=nonce(2)), CALL, now=T + 10)
    assert len(v) == 2  # the first is still within the window at T + 10
    v.verify(signer().sign(CALL, now=T + 10.5, nonce=nonce(3)), CALL, now=T + 10.5)
    assert len(v) == 2  # now it is not: forgotten, and refused by the window
    with pytest.raises(Unauthenticated, match="off this clock"):
        v.verify(value, CALL, now=T + 10.5)


def test_a_full_memory_refuses_what_it_forgot() -> None:
    v = verifier(memory=3)
    values = [signer().sign(CALL, now=T + i, nonce=nonce(i)) for i in range(5)]
    for value in values:
        v.verify(value, CALL, now=T + 5)
    assert len(v) == 3
    assert v.floor == int((T + 1) * 1000)
    for value in values:  # none of them, forgotten or remembered, passes twice
        with pytest.raises(Unauthenticated):
            v.verify(value, CALL, now=T + 5)
    older = signer().sign(CALL, now=T + 0.5, nonce=nonce(9))
    with pytest.raises(Unauthenticated, match="too old"):
        v.verify(older, CALL, now=T + 5)
    v.verify(signer().sign(CALL, now=T + 5, nonce=nonce(10)), CALL, now=T + 5)


@pytest.mark.parametrize(
    "value",
    [
        "v2.1.00000000000000000000000000000000.mac",
        "v1.x.00000000000000000000000000000000.mac",
        "v1.1.0000.mac",
        "v1.1.00000000000000000000000000000000.",
        "v1.99999999999999999999.00000000000000000000000000000000.mac",
        "garbage",
        "v1...",
    ],
)
def test_malformed_values_are_refused(value: str) -> None:
    with pytest.raises(Unauthenticated, match="malformed"):
        verifier().verify(value, CALL, now=T)


@given(
    call=st.text(max_size=200),
    body=st.binary(max_size=300),
    skew=st.floats(min_value=-59, max_value=59),
    n=st.binary(min_size=16, max_size=16),
)
def test_any_call_round_trips(call: str, body: bytes, skew: float, n: bytes) -> None:
    value = signer().sign(call, now=T + skew, nonce=n, body=body)
    verifier().verify(value, call, now=T, body=body)


@given(
    value=st.text(max_size=120),
    mutation=st.integers(min_value=0, max_value=200),
)
def test_nothing_but_a_signature_passes(value: str, mutation: int) -> None:
    good = signer().sign(CALL, now=T, nonce=nonce(7))
    # arbitrary text, and the real value with one character changed, are both refused
    changed = list(good)
    i = mutation % len(changed)
    changed[i] = "A" if changed[i] != "A" else "B"
    for candidate in (value, "".join(changed)):
        with pytest.raises(Unauthenticated):
            verifier().verify(candidate, CALL, now=T)


def test_a_grpc_proof_names_its_receiver() -> None:
    signer = CallSigner("k" * 32, "peer-grpc")
    value = signer.sign(grpc_call("/p.S/Hello", "10.0.0.1:8461"), now=1000.0, nonce=b"n" * 16)
    other = CallVerifier("k" * 32, "peer-grpc")
    with pytest.raises(Unauthenticated, match="another receiver"):
        other.verify(value, grpc_call("/p.S/Hello", "10.0.0.2:8461"), "x", now=1000.0)
    mine = CallVerifier("k" * 32, "peer-grpc")
    names = ("127.0.0.1:8461", "10.0.0.1:8461")
    mine.verify(value, *(grpc_call("/p.S/Hello", n) for n in names), now=1000.0)

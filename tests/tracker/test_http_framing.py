"""How the tracker's own HTTP server frames an ASGI app's answer (``_Response``): the
head goes out with the first body message, with a Content-Length when that message is
the whole body, else chunked; a HEAD answer has no body."""

from __future__ import annotations

from p2pshare.tracker.http_server import _Response


def _start(status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {"type": "http.response.start", "status": status, "headers": headers or []}


def _body(body: bytes, more: bool = False) -> dict:
    return {"type": "http.response.body", "body": body, "more_body": more}


def test_a_body_in_one_message_gets_a_content_length() -> None:
    response = _Response("GET", keep_alive=True)
    assert response.encode(_start(headers=[(b"Content-Type", b"text/plain")])) is None
    assert response.encode(_body(b"hello")) == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"
    )
    assert response.done


def test_a_body_in_several_messages_is_chunked_and_ends_with_an_empty_chunk() -> None:
    response = _Response("GET", keep_alive=False)
    response.encode(_start())
    assert response.encode(_body(b"ab", more=True)) == (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\nab\r\n"
    )
    assert not response.done
    assert response.encode(_body(b"", more=True)) == b""
    assert response.encode(_body(b"c")) == b"1\r\nc\r\n0\r\n\r\n"
    assert response.done


def test_a_head_answer_says_the_length_and_sends_no_body() -> None:
    response = _Response("HEAD", keep_alive=True)
    response.encode(_start())
    assert response.encode(_body(b"hello")) == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


def test_nothing_goes_out_before_the_start_nor_for_other_messages() -> None:
    response = _Response("GET", keep_alive=True)
    assert response.encode(_body(b"early")) is None
    assert response.encode({"type": "http.response.trailers"}) is None
    assert not response.started
    response.encode(_start(204))
    assert response.encode(_body(b"")) == b"HTTP/1.1 204 No Content\r\n\r\n"

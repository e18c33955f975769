"""The OpenRouter client reads the body a network read at a time and takes the
chunked framing off itself: over a real socket server on 127.0.0.1 that writes
the exact bytes of each answer, in pieces cut anywhere."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
import typing as t

import pytest

from ngai_chat import errors
from ngai_chat.upstream.openrouter import OpenRouterUpstream

EVENTS = (
    b'data: {"choices":[{"delta":{"content":"h\xc3\xa9"}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"llo"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"


def chunked(*pieces: bytes, extension: bytes = b"", trailers: bytes = b"") -> bytes:
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(piece), extension, piece) for piece in pieces)
    return body + b"0\r\n" + trailers + b"\r\n"


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        #: what to answer to each request, in order: the head's end and body, and
        #: the size of the pieces it is written in
        self.answers: list[tuple[bytes, int]] = []
        self.connections = 0
        #: seconds a connection that said ``Connection: close`` stays open, silent,
        #: before it closes (a peer whose close is still on its way)
        self.linger = 0.0


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.server.connections += 1
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        while self.server.answers:
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not line:
                return
            reader.read(length)
            answer, piece = self.server.answers.pop(0)
            for start in range(0, len(answer), piece):
                sock.sendall(answer[start : start + piece])
            if b"Connection: close" in answer:
                if self.server.linger:
                    time.sleep(self.server.linger)
                sock.shutdown(socket.SHUT_WR)
                return


@pytest.fixture
def server() -> t.Iterator[_Server]:
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def client(server: _Server) -> t.Iterator[OpenRouterUpstream]:
    host, port = server.server_address[:2]
    upstream = OpenRouterUpstream(
        api_key="k", base_url=f"http://{host}:{port}/v1", title="t", read_timeout=5
    )
    yield upstream
    upstream.close()


def texts(client: OpenRouterUpstream) -> str:
    stream = client.stream_chat({"model": "m", "messages": []}, referer=None)
    try:
        return "".join(chunk.content for chunk in stream)
    finally:
        stream.close()


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64, 100_000])
def test_chunked_framing_cut_anywhere(
    server: _Server, client: OpenRouterUpstream, piece: int
) -> None:
    body = chunked(
        EVENTS[:10], EVENTS[10:60], EVENTS[60:], extension=b";name=value", trailers=b"X-T: 1\r\n"
    )
    server.answers = [(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body, piece)] * 2
    assert [texts(client), texts(client)] == ["héllo", "héllo"]
    assert server.connections == 1  # read to its end: the connection was reused


def test_many_events_in_one_chunk_and_one_event_in_many(
    server: _Server, client: OpenRouterUpstream
) -> None:
    one = b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'
    pieces = [one * 50, *[bytes([byte]) for byte in one], EVENTS]
    server.answers = [(HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(*pieces), 4096)]
    assert texts(client) == "x" * 51 + "héllo"


def test_a_body_with_a_content_length(server: _Server, client: OpenRouterUpstream) -> None:
    head = HEAD + b"Content-Length: %d\r\n\r\n" % len(EVENTS)
    server.answers = [(head + EVENTS, 5), (head + EVENTS, 1000)]
    assert [texts(client), texts(client)] == ["héllo", "héllo"]
    assert server.connections == 1


def test_a_connection_the_upstream_closes_is_not_reused(
    server: _Server, client: OpenRouterUpstream
) -> None:
    """A body read to its end on a response that said ``Connection: close`` does not
    put its connection back in the pool: the next request, sent before the peer's
    close arrives, would go out on a dying connection and fail.
    """
    answer = HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked(EVENTS)
    server.answers = [(answer, 1000)] * 2
    server.linger = 1.0
    assert [texts(client), texts(client)] == ["héllo", "héllo"]
    assert server.connections == 2


def test_a_body_ended_by_closing(server: _Server, client: OpenRouterUpstream) -> None:
    server.answers = [(HEAD + b"Connection: close\r\n\r\n" + EVENTS, 3)]
    assert texts(client) == "héllo"


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\n" + EVENTS,  # not a hex size
        b"-5\r\n" + EVENTS,  # a negative one
        b"%x\r\n%sXY" % (len(EVENTS), EVENTS),  # data not ended by CRLF
        b"1" * 5000,  # a size line that never ends
    ],
)
def test_broken_framing_is_an_interrupted_answer(
    server: _Server, client: OpenRouterUpstream, body: bytes
) -> None:
    answer = HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body
    server.answers = [(answer, 1000)]
    with pytest.raises(errors.UpstreamInterrupted):
        texts(client)


def test_a_body_cut_in_the_middle_of_a_chunk(server: _Server, client: OpenRouterUpstream) -> None:
    body = b"%x\r\n%s" % (len(EVENTS) + 50, EVENTS)
    answer = HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body
    server.answers = [(answer, 1000)]
    with pytest.raises(errors.UpstreamInterrupted):
        texts(client)

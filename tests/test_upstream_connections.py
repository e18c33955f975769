"""The OpenRouter client over a real keep-alive HTTP/1.1 server on 127.0.0.1: the
connection of a finished answer is reused by the next one, and a bounded read."""

from __future__ import annotations

import http.server
import threading
import typing as t

import pytest

from ngai_chat import errors
from ngai_chat.upstream.openrouter import OpenRouterUpstream

EVENTS = (
    b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    b'data: {"choices":[{"delta":{"content":"b"},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


class _KeepAlive(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: t.ClassVar[list[tuple[str, int]]] = []
    body: t.ClassVar[list[bytes]] = [EVENTS]

    def setup(self) -> None:
        super().setup()
        self.connections.append(self.client_address)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in self.body:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: t.Any) -> None:
        pass


@pytest.fixture
def server() -> t.Iterator[http.server.ThreadingHTTPServer]:
    _KeepAlive.connections = []
    _KeepAlive.body = [EVENTS]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeepAlive)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _client(server: http.server.ThreadingHTTPServer, **options: t.Any) -> OpenRouterUpstream:
    host, port = server.server_address[:2]
    return OpenRouterUpstream(
        api_key="k", base_url=f"http://{host}:{port}/v1", title="t", read_timeout=5, **options
    )


def _texts(client: OpenRouterUpstream) -> str:
    stream = client.stream_chat({"model": "m", "messages": []}, referer=None)
    try:
        return "".join(chunk.content for chunk in stream)
    finally:
        stream.close()


def test_finished_answers_reuse_one_connection(server: http.server.ThreadingHTTPServer) -> None:
    client = _client(server)
    try:
        assert [_texts(client) for _ in range(3)] == ["ab"] * 3
    finally:
        client.close()
    assert len(_KeepAlive.connections) == 1  # drained after [DONE], back to the pool


def test_events_split_across_http_chunks(server: http.server.ThreadingHTTPServer) -> None:
    _KeepAlive.body = [EVENTS[i : i + 5] for i in range(0, len(EVENTS), 5)]
    client = _client(server)
    try:
        assert _texts(client) == "ab"
    finally:
        client.close()


def test_an_endless_event_is_refused(server: http.server.ThreadingHTTPServer) -> None:
    _KeepAlive.body = [b"data: " + b"x" * 65536] * 40  # 2.5 MB, no line break
    client = _client(server, max_event_bytes=100_000)
    try:
        with pytest.raises(errors.UpstreamStreamError) as caught:
            _texts(client)
    finally:
        client.close()
    assert "NGAI_MAX_EVENT_BYTES" in caught.value.message

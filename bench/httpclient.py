"""A minimal HTTP/1.1 client over gevent sockets, lean enough to drive hundreds of
streams from one process without becoming the bottleneck.

It sends one request per connection (``Connection: close``), parses the status
line and headers, and decodes the body incrementally: ``chunked``,
``Content-Length`` or close-delimited. :class:`FrameCounter` counts the SSE frames
of a body as they arrive, so a stream is never buffered whole. Only
``127.0.0.1`` is ever dialled: :func:`connect` takes a port, not a host.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import typing as t

from gevent import socket

__all__ = [
    "LOOPBACK",
    "STAMP",
    "ChunkedDecoder",
    "FrameCounter",
    "HttpError",
    "Response",
    "connect",
    "fetch_json",
    "open_response",
]

LOOPBACK = "127.0.0.1"
#: bytes asked of the socket per read
READ_SIZE = 65536
#: the longest response head accepted
MAX_HEAD = 65536
#: the send time the fake upstream wrote into a chunk's text (``bench/series.py``):
#: its ``CLOCK_MONOTONIC`` in microseconds, the clock every process here shares
STAMP = re.compile(rb"ts=(\d+);")


class HttpError(Exception):
    """The server answered something this client cannot use."""


def connect(port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to ``127.0.0.1:port`` with Nagle off (``timeout`` None: none)."""
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _request_bytes(method: str, path: str, port: int, body: bytes | None) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {LOOPBACK}:{port}",
        "Connection: close",
        "Accept: */*",
    ]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (body or b"")


class ChunkedDecoder:
    """Push parser for ``Transfer-Encoding: chunked``: feed raw bytes, get payload bytes."""

    def __init__(self) -> None:
        self._pending = b""
        #: payload bytes left in the current chunk
        self._left = 0
        #: bytes of the CRLF after the current chunk's payload still to skip
        self._skip = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf = self._pending + data if self._pending else data
        out: list[bytes] = []
        pos = 0
        while not self.done:
            if self._left:
                take = min(self._left, len(buf) - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                if self._left:
                    break
                self._skip = 2
            if self._skip:
                step = min(self._skip, len(buf) - pos)
                pos += step
                self._skip -= step
                if self._skip:
                    break
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            size = int(buf[pos:end].split(b";", 1)[0], 16)
            pos = end + 2
            if size == 0:
                self.done = True
            self._left = size
        self._pending = buf[pos:]
        return b"".join(out)


class FrameCounter:
    """Counts the SSE frames of a body that carry data, as the bytes arrive.

    Works for the relay's frames (``id``/``event``/``data``) and the upstream's
    (``data`` only); comments and ``retry:`` frames are not counted.

    :param latencies: when given, each frame with a send time stamped by the fake
        (:data:`STAMP`) adds its latency in microseconds: the time :meth:`feed`
        was called (the bytes had just been read) minus the stamp.
    """

    def __init__(self, latencies: list[int] | None = None) -> None:
        self._latencies = latencies
        self._tail = b""
        #: frames with a ``data:`` line, the terminal one included
        self.events = 0
        #: a terminal frame came: ``event: done``/``event: error`` or ``data: [DONE]``
        self.finished = False
        #: the data of the relay's ``error`` event, if one came
        self.error: str | None = None

    def feed(self, data: bytes) -> int:
        """Count the frames completed by ``data``; returns how many carried data."""
        arrived = time.monotonic_ns() // 1000 if self._latencies is not None else 0
        frames = (self._tail + data).split(b"\n\n")
        self._tail = frames.pop()
        before = self.events
        for frame in frames:
            if b"data:" not in frame:
                continue
            self.events += 1
            if self._latencies is not None and (stamp := STAMP.search(frame)) is not None:
                self._latencies.append(arrived - int(stamp[1]))
            if b"event: error" in frame or frame.startswith(b'data: {"type":"error"'):
                self.error = frame.partition(b"data: ")[2].decode("utf-8", "replace")
                self.finished = True
            elif b"event: done" in frame or frame.endswith(b"data: [DONE]"):
                self.finished = True
        return self.events - before


@dataclasses.dataclass
class Response:
    """An HTTP response whose head has been read; the body is read on demand."""

    sock: socket.socket
    status: int
    headers: dict[str, str]
    #: ``time.perf_counter()`` when the first byte of the response arrived
    first_byte_at: float
    _body_start: bytes

    def body_pieces(self) -> t.Iterator[bytes]:
        """The decoded body as it arrives (pieces may be empty)."""
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        remaining = int(length) if length is not None and not chunked else -1
        decoder = ChunkedDecoder() if chunked else None
        data = self._body_start
        while True:
            if data:
                piece = decoder.feed(data) if decoder is not None else data
                yield piece
                if decoder is not None and decoder.done:
                    return
                if remaining >= 0:
                    remaining -= len(data)
            if remaining == 0:
                return
            data = self.sock.recv(READ_SIZE)
            if not data:
                if decoder is not None or remaining > 0:
                    raise HttpError("the connection closed before the end of the body")
                return

    def read_all(self) -> bytes:
        return b"".join(self.body_pieces())

    def close(self) -> None:
        self.sock.close()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise HttpError(f"not an HTTP status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def open_response(
    port: int, method: str, path: str, body: bytes | None = None, *, timeout: float | None
) -> Response:
    """Send one request to ``127.0.0.1:port`` and read the response head.

    :param timeout: seconds allowed for connecting and for each read.
    """
    sock = connect(port, timeout)
    try:
        sock.sendall(_request_bytes(method, path, port, body))
        buf = sock.recv(READ_SIZE)
        first_byte_at = time.perf_counter()
        while b"\r\n\r\n" not in buf:
            more = sock.recv(READ_SIZE)
            if not more or len(buf) > MAX_HEAD:
                raise HttpError("the connection closed before the end of the response head")
            buf += more
        head, _, rest = buf.partition(b"\r\n\r\n")
        status, headers = _parse_head(head)
    except BaseException:
        sock.close()
        raise
    return Response(sock, status, headers, first_byte_at, rest)


def fetch_json(
    port: int, method: str, path: str, payload: t.Any = None, *, timeout: float
) -> tuple[int, t.Any]:
    """A whole JSON exchange: the status and the decoded body (None if not JSON)."""
    body = None if payload is None else json.dumps(payload).encode()
    response = open_response(port, method, path, body, timeout=timeout)
    try:
        raw = response.read_all()
    finally:
        response.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, None

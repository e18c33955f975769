"""The soak's fake upstream, in a process of its own:
``python -m bench.soak_upstream <model> <chunks> <gap>``.

Every ``POST …/chat/completions`` gets the soak's numbered answer: ``chunks``
chunks ``gap`` seconds apart on a fixed schedule, the text of chunk ``i`` being
``n=<i>;ts=<CLOCK_MONOTONIC µs>; `` (what :mod:`bench.soak_load` checks), then the
finish chunk, the usage chunk and ``[DONE]``, as chunked ``text/event-stream`` on a
kept-alive connection; ``GET …/models`` gets the fake's model list.

Why not :class:`~bench.fake_upstream.FakeUpstream` (a thread per connection, right
for tests): at the soak's 1,000 paced streams it took a third of a core (every write
a hand-over of the GIL between threads), half a core under gevent (a poll per
wait). Here one asyncio loop writes every stream from timers, about 10 µs a chunk,
so the machine's cores go to what the soak measures. It prints its base URL on one
line and serves until the process that started it is gone, or it is terminated.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from bench.fake_chunks import make_chunk
from bench.fake_chunks import new_generation_id
from bench.fake_chunks import usage_chunk
from bench.fake_upstream import DEFAULT_MODELS

__all__ = ["main"]

_PLACEHOLDER = "\x00soak\x00"
_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 body chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class Answer:
    """One answer being written: its numbered chunks on the loop's timers."""

    def __init__(self, server: Upstream, transport: asyncio.Transport) -> None:
        self.server = server
        self.transport = transport
        gen_id = new_generation_id()
        model = server.model
        encoded = json.dumps(
            make_chunk(_PLACEHOLDER, model=model, gen_id=gen_id), separators=(",", ":")
        ).encode()
        head, tail = encoded.split(json.dumps(_PLACEHOLDER).encode()[1:-1])
        self.head, self.tail = b"data: " + head + b"n=", b"; " + tail + b"\n\n"
        usage = {
            "prompt_tokens": 1,
            "completion_tokens": server.chunks,
            "total_tokens": server.chunks + 1,
        }
        self.ending = b"".join(
            _chunk(data)
            for data in (
                _event(make_chunk("", finish_reason="stop", model=model, gen_id=gen_id)),
                _event(usage_chunk(usage, model=model, gen_id=gen_id)),
                b"data: [DONE]\n\n",
            )
        ) + _chunk(b"")
        self.index = 0
        self.start = time.monotonic()
        transport.write(_HEAD + _chunk(_event(make_chunk("", model=model, gen_id=gen_id))))
        self._next()

    def _next(self) -> None:
        if self.transport.is_closing():
            return
        if self.index >= self.server.chunks:
            self.transport.write(self.ending)
            return
        data = b"%s%d;ts=%d%s" % (self.head, self.index, time.monotonic_ns() // 1000, self.tail)
        self.transport.write(_chunk(data))
        self.index += 1
        due = self.start + self.index * self.server.gap
        self.server.loop.call_at(due, self._next)


class Connection(asyncio.Protocol):
    """One kept-alive connection: requests one after another."""

    def __init__(self, server: Upstream) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            self.answer(head.split(" ", 2))

    def answer(self, request_line: list[str]) -> None:
        assert self.transport is not None
        method, path = request_line[0], request_line[1] if len(request_line) > 1 else ""
        if method == "POST" and path.endswith("/chat/completions"):
            Answer(self.server, self.transport)
            return
        if method == "GET" and path.endswith("/models"):
            body = json.dumps(DEFAULT_MODELS).encode()
            status = b"200 OK"
        else:
            body, status = b'{"error":{"code":404,"message":"not here"}}', b"404 Not Found"
        self.transport.write(
            b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status, len(body), body)
        )


class Upstream:
    """The server: where it listens and what it answers."""

    def __init__(self, model: str, chunks: int, gap: float) -> None:
        self.model, self.chunks, self.gap = model, chunks, gap
        self.loop = asyncio.get_running_loop()

    async def serve(self) -> None:
        server = await self.loop.create_server(
            lambda: Connection(self), "127.0.0.1", 0, backlog=4096
        )
        port = server.sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{port}/api/v1", flush=True)
        parent = os.getppid()
        while os.getppid() == parent:
            await asyncio.sleep(1.0)


async def _main(argv: list[str]) -> None:
    await Upstream(argv[0], int(argv[1]), float(argv[2])).serve()


def main(argv: list[str]) -> int:
    asyncio.run(_main(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

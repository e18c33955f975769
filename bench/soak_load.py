"""The soak's load generator: ``python -m bench.soak_load '<job JSON>'``, one gevent
process. It keeps ``users`` sessions going until ``deadline`` (``CLOCK_MONOTONIC``,
shared by every process here), each a ``POST /prepare`` and a ``GET /stream``, with
a second reader on a share of them, and checks every reader: each chunk exactly once
and in order (the fake numbers them), one terminal event. A reader whose connection
breaks without a terminal event reconnects with ``Last-Event-ID``, as an
``EventSource`` does. Prints one JSON line: the readers' records and a sample of
the chunk latencies.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
import typing as t

import gevent

from ngai_chat.worker import tune_gc

from .httpclient import STAMP
from .httpclient import ChunkedDecoder
from .httpclient import HttpError
from .httpclient import _parse_head
from .httpclient import connect
from .httpclient import fetch_json
from .jobs import MESSAGES

__all__ = ["main"]

#: the chunk's number, written by the fake into its text (``bench/soak.py``)
NUMBER = re.compile(rb"n=(\d+);")
CODE = re.compile(rb'"code":"([a-z_]+)"')
#: every this many chunk latencies, one is kept for the percentiles
LATENCY_STRIDE = 10
#: reconnections a reader makes at most
RECONNECTS = 5


class Reader:
    """One reader's check of one stream."""

    def __init__(self, kind: str, chunks: int) -> None:
        self.kind = kind
        self.chunks = chunks
        self.expected = 0
        self.lost = 0
        self.repeated = 0
        self.last_id = 0
        self.terminal: str | None = None
        self.reconnects = 0
        self.started = time.monotonic()
        self.first_chunk: float | None = None
        self.ended = 0.0
        self.note = ""

    def record(self) -> dict[str, t.Any]:
        return {
            "kind": self.kind,
            "outcome": self.terminal or f"broken: {self.note}"[:200],
            "received": self.expected - self.lost,
            "lost": self.lost + max(0, self.chunks - self.expected),
            "repeated": self.repeated,
            "reconnects": self.reconnects,
            "ttfc": None if self.first_chunk is None else self.first_chunk - self.started,
            "started": self.started,
            "ended": self.ended,
        }


class Load:
    def __init__(self, job: dict[str, t.Any]) -> None:
        self.port: int = job["port"]
        self.model: str = job["model"]
        self.chunks: int = job["chunks"]
        self.users: int = job["users"]
        self.deadline: float = job["deadline"]
        self.second: float = job["second_readers"]
        self.answer_seconds: float = job["answer_seconds"]
        self.records: list[dict[str, t.Any]] = []
        self.latencies: list[int] = []
        #: when each of them was taken (``CLOCK_MONOTONIC`` µs, shared by the soak)
        self.latency_at: list[int] = []
        self._seen = 0
        self.sessions = 0
        self.prepare_failures: list[str] = []

    def run(self) -> dict[str, t.Any]:
        ramp = min(10.0, self.answer_seconds / 3)
        users = [gevent.spawn(self.user, ramp * i / self.users) for i in range(self.users)]
        gevent.joinall(users)
        return {
            "records": self.records,
            "latencies_us": self.latencies,
            "latency_at_us": self.latency_at,
            "latency_stride": LATENCY_STRIDE,
            "sessions": self.sessions,
            "prepare_failures": self.prepare_failures[:20],
            "prepare_failed": len(self.prepare_failures),
        }

    def user(self, delay: float) -> None:
        gevent.sleep(delay)
        while time.monotonic() < self.deadline:
            self.session()

    def session(self) -> None:
        try:
            status, body = fetch_json(
                self.port,
                "POST",
                "/prepare",
                {"model": self.model, "messages": MESSAGES},
                timeout=30,
            )
        except (OSError, HttpError) as exc:
            self.prepare_failures.append(f"{type(exc).__name__}: {exc}")
            gevent.sleep(1)
            return
        if status != 200 or not isinstance(body, dict):
            self.prepare_failures.append(f"{status}: {body!r}"[:200])
            gevent.sleep(1)
            return
        self.sessions += 1
        path = str(body["streamUrl"])
        readers = [gevent.spawn(self.read, path, "first", 0.0)]
        if random.random() < self.second:
            delay = random.uniform(0, self.answer_seconds / 2)
            readers.append(gevent.spawn(self.read, path, "second", delay))
        gevent.joinall(readers)

    def read(self, path: str, kind: str, delay: float) -> None:
        gevent.sleep(delay)
        reader = Reader(kind, self.chunks)
        try:
            with gevent.Timeout(
                self.answer_seconds * 3 + 60, HttpError("no terminal event in time")
            ):
                while reader.terminal is None:
                    if self.stream(path, reader):
                        break
                    reader.reconnects += 1
                    if reader.reconnects > RECONNECTS:
                        reader.note = "too many reconnections"
                        break
                    gevent.sleep(0.5)  # as EventSource's retry
        except (OSError, HttpError) as exc:
            reader.note = f"{type(exc).__name__}: {exc}"
        reader.ended = time.monotonic()
        self.records.append(reader.record())

    def stream(self, path: str, reader: Reader) -> bool:
        """Read the stream once; ``True`` when it ended for good (a terminal event, or
        an answer that is not a stream)."""
        try:
            sock = connect(self.port, timeout=60)
        except OSError as exc:
            reader.note = f"connect: {exc}"
            return False
        try:
            last = f"Last-Event-ID: {reader.last_id}\r\n" if reader.last_id else ""
            sock.sendall(
                (
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                    f"Connection: close\r\nAccept: text/event-stream\r\n{last}\r\n"
                ).encode()
            )
            buf = b""
            while b"\r\n\r\n" not in buf:
                more = sock.recv(65536)
                if not more:
                    reader.note = "closed before the response head"
                    return False
                buf += more
            head, _, rest = buf.partition(b"\r\n\r\n")
            status, headers = _parse_head(head)
            if status != 200:
                reader.terminal = f"http {status}"
                return True
            decoder = (
                ChunkedDecoder() if "chunked" in headers.get("transfer-encoding", "") else None
            )
            tail = b""
            data = rest
            while True:
                if data:
                    piece = decoder.feed(data) if decoder is not None else data
                    frames = (tail + piece).split(b"\n\n")
                    tail = frames.pop()
                    for frame in frames:
                        self.frame(frame, reader)
                        if reader.terminal is not None:
                            return True
                    if decoder is not None and decoder.done:
                        break
                data = sock.recv(65536)
                if not data:
                    break
            reader.note = "closed without a terminal event"
            return False
        except OSError as exc:
            reader.note = f"{type(exc).__name__}: {exc}"
            return False
        finally:
            sock.close()

    def frame(self, frame: bytes, reader: Reader) -> None:
        if b"data:" not in frame:
            return  # a comment (keep-alive) or retry:
        if frame.startswith(b"id: "):
            reader.last_id = int(frame[4 : frame.index(b"\n")])
        if b"event: chunk" in frame:
            number = NUMBER.search(frame)
            if number is None:
                return  # the role or usage chunk
            index = int(number[1])
            if index == reader.expected:
                reader.expected += 1
            elif index < reader.expected:
                reader.repeated += 1
            else:
                reader.lost += index - reader.expected
                reader.expected = index + 1
            if reader.first_chunk is None:
                reader.first_chunk = time.monotonic()
            # the lag of chunks followed live: not of a second reader's replay, nor
            # of what a reconnection replays
            if reader.kind != "first" or reader.reconnects:
                return
            self._seen += 1
            if not self._seen % LATENCY_STRIDE and (stamp := STAMP.search(frame)) is not None:
                now = time.monotonic_ns() // 1000
                self.latencies.append(now - int(stamp[1]))
                self.latency_at.append(now)
        elif b"event: done" in frame:
            reader.terminal = "done"
        elif b"event: error" in frame:
            code = CODE.search(frame)
            reader.terminal = f"error: {code[1].decode() if code else '?'}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(args[0])
    # as a worker does: a full collection here pauses every reader and would show
    # as chunk lag the relay did not cause
    tune_gc()
    result = Load(job).run()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

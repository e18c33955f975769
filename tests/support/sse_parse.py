"""A strict little SSE parser for tests: events, comments and retry, in order."""

from __future__ import annotations

import dataclasses
import json
import typing as t

__all__ = ["Frame", "parse", "texts"]


@dataclasses.dataclass
class Frame:
    """One parsed frame: an event (``name``/``data``/``id``), a comment, or a retry."""

    name: str | None = None
    data: str | None = None
    id: str | None = None
    comment: str | None = None
    retry: int | None = None

    @property
    def json(self) -> t.Any:
        assert self.data is not None
        return json.loads(self.data)


def parse_block(block: str) -> Frame:
    frame = Frame()
    data_lines: list[str] = []
    for line in block.split("\n"):
        if line.startswith(":"):
            frame.comment = (frame.comment + "\n" if frame.comment else "") + line[1:].lstrip(" ")
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data_lines.append(value)
        elif field == "event":
            frame.name = value
        elif field == "id":
            frame.id = value
        elif field == "retry":
            frame.retry = int(value)
        else:
            raise AssertionError(f"unexpected SSE line {line!r}")
    if data_lines:
        frame.data = "\n".join(data_lines)
    return frame


def parse(text: str) -> list[Frame]:
    """Every frame of a complete SSE body (which must end with a blank line)."""
    assert text.endswith("\n\n") or not text, f"stream did not end at a frame boundary: {text!r}"
    return [parse_block(block) for block in text.split("\n\n") if block]


def events(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.data is not None]


def texts(frames: list[Frame]) -> str:
    """The concatenated ``content`` of every ``chunk`` event."""
    return "".join(f.json["content"] for f in frames if f.name == "chunk")


class StreamReader:
    """Reads an SSE response over a real socket, frame by frame, as it arrives.

    :param url: the stream URL.
    :param headers: e.g. ``{"Last-Event-ID": "3"}``.
    :param timeout: seconds of silence before a read fails.
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 10):
        import requests

        self.response = requests.get(url, headers=headers, stream=True, timeout=(5, timeout))
        self._buffer = b""
        self._eof = False
        self.frames: list[Frame] = []

    @property
    def status(self) -> int:
        return int(self.response.status_code)

    def next(self) -> Frame | None:
        """The next whole frame, or ``None`` at the end of the body."""
        while b"\n\n" not in self._buffer:
            if self._eof:
                assert not self._buffer, f"body ended inside a frame: {self._buffer!r}"
                return None
            data = self.response.raw.read1(65536)
            if not data:
                self._eof = True
            self._buffer += data
        block, self._buffer = self._buffer.split(b"\n\n", 1)
        frame = parse_block(block.decode("utf-8"))  # strict: split characters would fail
        self.frames.append(frame)
        return frame

    def until(self, predicate: t.Callable[[Frame], bool]) -> Frame:
        """Read until a frame matches ``predicate``; fail at the end of the body."""
        while True:
            frame = self.next()
            assert frame is not None, f"stream ended before the expected frame: {self.frames}"
            if predicate(frame):
                return frame

    def read_all(self) -> list[Frame]:
        """Every remaining frame, up to the end of the body."""
        while self.next() is not None:
            pass
        return self.frames

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

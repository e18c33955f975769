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

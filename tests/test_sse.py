"""SSE framing against exact bytes."""

from __future__ import annotations

import pytest

from ngai_chat import sse


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "x"}, b"data: x\n\n"),
        ({"data": "x", "name": "chunk", "id": 7}, b"id: 7\nevent: chunk\ndata: x\n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": " lead and trail "}, b"data:  lead and trail \n\n"),
        ({"data": "x", "name": "do\nne", "id": "1\r\n2"}, b"id: 12\nevent: done\ndata: x\n\n"),
        ({"data": "é😀"}, "data: é😀\n\n".encode()),
    ],
)
def test_event(kwargs: dict, expected: bytes) -> None:
    assert sse.event(**kwargs) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("keep-alive", b": keep-alive\n\n"),
        ("", b": \n\n"),
        ("two\nlines", b": two\n: lines\n\n"),
    ],
)
def test_comment(text: str, expected: bytes) -> None:
    assert sse.comment(text) == expected


def test_retry() -> None:
    assert sse.retry(3000) == b"retry: 3000\n\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": "é 😀"}, '{"a":"é 😀"}'),
        ({"a": "lone \ud83d"}, '{"a":"lone \\ud83d"}'),
        ([1, None, True], "[1,null,true]"),
    ],
)
def test_json_data_always_encodes(value: object, expected: str) -> None:
    text = sse.json_data(value)
    assert text == expected
    text.encode("utf-8")

"""Log events → the AI SDK's UI message stream (ngai_chat.wire.ui_stream), exact bytes."""

from __future__ import annotations

import typing as t

import pytest

from ngai_chat import errors
from ngai_chat.chunks import Answer
from ngai_chat.chunks import Chunk
from ngai_chat.chunks import chunk_event_data
from ngai_chat.chunks import done_data
from ngai_chat.chunks import error_data
from ngai_chat.store import Event
from ngai_chat.wire.ui_stream import UIStream
from ngai_chat.wire.ui_stream import finish_reason

START = b'data: {"type":"start","messageId":"m1"}\n\ndata: {"type":"start-step"}\n\n'
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "cost": 0.001}


def delta(**fields: t.Any) -> dict[str, t.Any]:
    return {"id": "gen-1", "model": "m/x", "choices": [{"index": 0, "delta": fields}]}


def finish(reason: str | None) -> dict[str, t.Any]:
    return {"id": "gen-1", "model": "m/x", "choices": [{"delta": {}, "finish_reason": reason}]}


def usage() -> dict[str, t.Any]:
    return {"id": "gen-1", "model": "m/x", "choices": [], "usage": USAGE}


def log(*chunks: dict[str, t.Any], end: str | None = "done", cancel: bool = False) -> list[Event]:
    """The events the generation would append for these upstream chunks."""
    answer = Answer("m/asked")
    events = []
    for number, value in enumerate(chunks, 1):
        chunk = Chunk.from_value(value)
        answer.add(chunk)
        events.append(Event(number, "chunk", chunk_event_data(chunk)))
    if end == "done":
        data = done_data(answer, "cancelled" if cancel else None)
        events.append(Event(len(events) + 1, "done", data))
    elif end == "error":
        failure = errors.UpstreamStreamError("Provider returned error")
        events.append(Event(len(events) + 1, "error", error_data(failure)))
    return events


def lines(*parts: str) -> bytes:
    return b"".join(f"data: {part}\n\n".encode() for part in parts)


FINISH_STOP = (
    '{"type":"finish","finishReason":"stop","messageMetadata":{"model":"m/x","usage":'
    '{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"cost":0.001},'
    '"generationId":"gen-1"}}'
)

CASES: list[tuple[str, list[Event], bytes]] = [
    (
        "plain text, usage",
        log(
            delta(role="assistant", content=""),
            delta(content="Hé"),
            delta(content="llo 😀\n"),
            finish("stop"),
            usage(),
        ),
        lines(
            '{"type":"text-start","id":"text-0"}',
            '{"type":"text-delta","id":"text-0","delta":"Hé"}',
            '{"type":"text-delta","id":"text-0","delta":"llo 😀\\n"}',
            '{"type":"text-end","id":"text-0"}',
            '{"type":"finish-step"}',
            FINISH_STOP,
            "[DONE]",
        ),
    ),
    (
        "thinking, text, thinking again: new blocks with new ids; reasoning details",
        log(
            delta(
                reasoning="Hm",
                reasoning_details=[{"type": "reasoning.text", "text": "Hm", "index": 0}],
            ),
            delta(
                reasoning=".",
                content="A",
                reasoning_details=[{"type": "reasoning.text", "text": ".", "index": 0}],
            ),
            delta(reasoning="again"),
            delta(content="B"),
            finish("length"),
        ),
        lines(
            '{"type":"reasoning-start","id":"reasoning-0"}',
            '{"type":"reasoning-delta","id":"reasoning-0","delta":"Hm"}',
            '{"type":"reasoning-delta","id":"reasoning-0","delta":"."}',
            '{"type":"reasoning-end","id":"reasoning-0"}',
            '{"type":"text-start","id":"text-1"}',
            '{"type":"text-delta","id":"text-1","delta":"A"}',
            '{"type":"text-end","id":"text-1"}',
            '{"type":"reasoning-start","id":"reasoning-2"}',
            '{"type":"reasoning-delta","id":"reasoning-2","delta":"again"}',
            '{"type":"reasoning-end","id":"reasoning-2"}',
            '{"type":"text-start","id":"text-3"}',
            '{"type":"text-delta","id":"text-3","delta":"B"}',
            '{"type":"text-end","id":"text-3"}',
            '{"type":"finish-step"}',
            '{"type":"finish","finishReason":"length","messageMetadata":{"model":"m/x","usage":null,'
            '"generationId":"gen-1","reasoningDetails":[{"type":"reasoning.text","text":"Hm.","index":0}]}}',
            "[DONE]",
        ),
    ),
    (
        "citations once per URL, title when given",
        log(
            delta(
                content="See",
                annotations=[
                    {
                        "type": "url_citation",
                        "url_citation": {"url": "https://a.x", "title": "A", "start_index": 0},
                    },
                    {"type": "url_citation", "url_citation": {"url": "https://b.x"}},
                    {"type": "file", "file": {}},
                ],
            ),
            delta(
                annotations=[
                    {"type": "url_citation", "url_citation": {"url": "https://a.x", "title": "A"}}
                ]
            ),
            finish("stop"),
        ),
        lines(
            '{"type":"text-start","id":"text-0"}',
            '{"type":"text-delta","id":"text-0","delta":"See"}',
            '{"type":"source-url","sourceId":"source-0","url":"https://a.x","title":"A"}',
            '{"type":"source-url","sourceId":"source-1","url":"https://b.x"}',
            '{"type":"text-end","id":"text-0"}',
            '{"type":"finish-step"}',
            '{"type":"finish","finishReason":"stop","messageMetadata":{"model":"m/x","usage":null,"generationId":"gen-1"}}',
            "[DONE]",
        ),
    ),
    (
        "tool calls: start on the first fragment with id and name, deltas, input at the end",
        log(
            delta(content="Let me check."),
            delta(
                tool_calls=[
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": ""},
                    }
                ]
            ),
            delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}]),
            delta(tool_calls=[{"index": 1, "function": {"arguments": "{bad"}}]),
            delta(tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}]),
            delta(tool_calls=[{"index": 1, "id": "call_2", "function": {"name": "search"}}]),
            finish("tool_calls"),
        ),
        lines(
            '{"type":"text-start","id":"text-0"}',
            '{"type":"text-delta","id":"text-0","delta":"Let me check."}',
            '{"type":"tool-input-start","toolCallId":"call_1","toolName":"weather"}',
            '{"type":"tool-input-delta","toolCallId":"call_1","inputTextDelta":"{\\"city\\":"}',
            '{"type":"tool-input-delta","toolCallId":"call_1","inputTextDelta":"\\"Paris\\"}"}',
            '{"type":"tool-input-start","toolCallId":"call_2","toolName":"search"}',
            '{"type":"tool-input-delta","toolCallId":"call_2","inputTextDelta":"{bad"}',
            '{"type":"text-end","id":"text-0"}',
            '{"type":"tool-input-available","toolCallId":"call_1","toolName":"weather","input":{"city":"Paris"}}',
            '{"type":"tool-input-error","toolCallId":"call_2","toolName":"search","input":"{bad",'
            '"errorText":"The model sent arguments for search that are not JSON."}',
            '{"type":"finish-step"}',
            '{"type":"finish","finishReason":"tool-calls","messageMetadata":{"model":"m/x","usage":null,"generationId":"gen-1"}}',
            "[DONE]",
        ),
    ),
    (
        "a one-shot call without id or arguments; an image",
        log(
            delta(tool_calls=[{"type": "function", "function": {"name": "now"}}]),
            delta(
                images=[
                    {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklG"}},
                    {"type": "image_url", "image_url": {"url": "https://i.x/1"}},
                    {"x": 1},
                ]
            ),
            finish(None),
        ),
        lines(
            '{"type":"file","url":"data:image/webp;base64,UklG","mediaType":"image/webp"}',
            '{"type":"file","url":"https://i.x/1","mediaType":"image/png"}',
            '{"type":"tool-input-start","toolCallId":"call-0","toolName":"now"}',
            '{"type":"tool-input-available","toolCallId":"call-0","toolName":"now","input":{}}',
            '{"type":"finish-step"}',
            '{"type":"finish","finishReason":"other","messageMetadata":{"model":"m/x","usage":null,"generationId":"gen-1"}}',
            "[DONE]",
        ),
    ),
    (
        "cancelled: the open block ends, then abort",
        log(delta(content="Hal"), cancel=True),
        lines(
            '{"type":"text-start","id":"text-0"}',
            '{"type":"text-delta","id":"text-0","delta":"Hal"}',
            '{"type":"text-end","id":"text-0"}',
            '{"type":"abort"}',
            "[DONE]",
        ),
    ),
    (
        "mid-stream error",
        log(delta(reasoning="x"), end="error"),
        lines(
            '{"type":"reasoning-start","id":"reasoning-0"}',
            '{"type":"reasoning-delta","id":"reasoning-0","delta":"x"}',
            '{"type":"reasoning-end","id":"reasoning-0"}',
            '{"type":"error","errorText":"Provider returned error"}',
            "[DONE]",
        ),
    ),
    (
        "an error before any chunk; chunks without choices or delta",
        [
            Event(1, "chunk", '{"choices":[],"content":"","reasoning":""}'),
            Event(2, "chunk", '{"choices":[{"index":0}],"content":"","reasoning":""}'),
            Event(3, "error", error_data(errors.UpstreamRateLimited())),
        ],
        lines(f'{{"type":"error","errorText":"{errors.UpstreamRateLimited().message}"}}', "[DONE]"),
    ),
]


@pytest.mark.parametrize(("events", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_encode(events: list[Event], expected: bytes) -> None:
    encoder = UIStream("m1")
    assert encoder.start() == START
    assert encoder.feed(events) == expected


@pytest.mark.parametrize(("events", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_any_batching_gives_the_same_bytes(events: list[Event], expected: bytes) -> None:
    """One event at a time (a live reader) or all at once (a replay): the same stream."""
    encoder = UIStream("m1")
    assert b"".join(encoder.feed([event]) for event in events) == expected


def test_lone_surrogate_goes_out_as_its_escape() -> None:
    events = [Event(1, "chunk", '{"choices":[{"delta":{"content":"a\\ud83d"}}]}')]
    out = UIStream("m1").feed(events)
    assert out == lines(
        '{"type":"text-start","id":"text-0"}',
        '{"type":"text-delta","id":"text-0","delta":"a\\ud83d"}',
    )


def test_out_of_log_error_closes_the_block() -> None:
    encoder = UIStream("m1")
    encoder.feed(log(delta(content="a"), end=None))
    assert encoder.error(errors.StoreUnavailable("Redis is down.")) == lines(
        '{"type":"text-end","id":"text-0"}',
        '{"type":"error","errorText":"Redis is down."}',
        "[DONE]",
    )


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content-filter"),
        ("tool_calls", "tool-calls"),
        ("function_call", "tool-calls"),
        ("error", "error"),
        (None, "other"),
        ("end_turn", "other"),
        (3, "other"),
    ],
)
def test_finish_reasons(upstream: t.Any, expected: str) -> None:
    assert finish_reason(upstream) == expected

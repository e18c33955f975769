"""The OpenAI door's pure encoder against exact bytes: the raw chunk behind a
``chunk`` event, the assembled ``chat.completion``, the error bodies.
"""

from __future__ import annotations

import json
import typing as t

import pytest

from bench.fake_upstream import fixture_path
from ngai_chat import errors
from ngai_chat import sse
from ngai_chat.chunks import Answer
from ngai_chat.chunks import chunk_event_data
from ngai_chat.chunks import done_data
from ngai_chat.chunks import error_data
from ngai_chat.chunks import parse_chunk
from ngai_chat.wire.openai import DONE_FRAME
from ngai_chat.wire.openai import Completion
from ngai_chat.wire.openai import chunk_frame
from ngai_chat.wire.openai import chunk_frame_of
from ngai_chat.wire.openai import error_body
from ngai_chat.wire.openai import error_frame
from ngai_chat.wire.openai import error_type
from ngai_chat.wire.openai import model_list
from ngai_chat.wire.openai import raw_chunk

# --- the raw chunk: chunk_event_data's splice undone -------------------------------

RAW_CHUNKS = [
    pytest.param('{"id":"g","choices":[{"delta":{"content":"Hi"}}]}', id="text"),
    pytest.param('{"id":"g","choices":[]}', id="empty-choices"),
    pytest.param("{}", id="empty-object"),
    pytest.param('{"choices":[{"delta":{"content":"wörld 😀 亚"}}]}', id="non-ascii"),
    pytest.param('{"choices":[{"delta":{"content":"a\\nb\\t\\"c\\"\\\\"}}]}', id="escapes"),
    pytest.param('{"choices":[{"delta":{"content":"\\u00e9"}}]}', id="upstream-u-escape"),
    pytest.param('{"choices":[{"delta":{"reasoning":"think","content":""}}]}', id="reasoning"),
    pytest.param(
        '{"choices":[{"delta":{"content":",\\"reasoning\\":\\"x\\"}"}}]}', id="keys-in-text"
    ),
    pytest.param('{"content":"top","reasoning":"level","choices":[]}', id="own-top-level-keys"),
    pytest.param('{"a": 1,  "choices": [ ]}', id="upstream-whitespace-inside"),
    pytest.param('{"choices":[{"delta":{"content":"\\u2028 \\u0000"}}]}', id="separators"),
    pytest.param('{"choices":[{"delta":{"content":"\\ud83d"}}]}', id="lone-surrogate"),
]


@pytest.mark.parametrize("upstream", RAW_CHUNKS)
def test_raw_chunk_is_the_upstreams_text(upstream: str) -> None:
    chunk = parse_chunk(upstream.encode())
    assert chunk is not None
    assert raw_chunk(chunk_event_data(chunk)) == upstream


#: the cases whose texts have no escapes: cut from the NGAI frame's bytes
PLAIN = {"text", "empty-choices", "empty-object", "non-ascii", "reasoning", "own-top-level-keys",
         "upstream-whitespace-inside", "multi-line-json", "upstream-u-escape"}  # fmt: skip


@pytest.mark.parametrize(
    "upstream",
    [*RAW_CHUNKS, pytest.param('{"a":1,\n"choices":[]}', id="multi-line-json")],
)
def test_chunk_frame_of_the_ngai_frame(upstream: str, request: pytest.FixtureRequest) -> None:
    chunk = parse_chunk(upstream.encode())
    assert chunk is not None
    data = chunk_event_data(chunk)
    cut = chunk_frame_of(sse.event(data, name="chunk", id=1234))
    # spliced texts with escapes are left to chunk_frame
    assert (cut is not None) == (request.node.callspec.id in PLAIN)
    assert cut is None or cut == chunk_frame(data)


@pytest.mark.parametrize(
    "frame",
    [
        b'id: 1\nevent: chunk\ndata: {"a":1}\n\n',
        b'id: 1\nevent: chunk\ndata: {"a":1,"content":"x","reasoning":1}\n\n',
        b'id: 1\nevent: chunk\ndata: {"a":1,"content":"x"}\n\n',
        b'id: 1\nevent: chunk\ndata: {"a":1 "content":"x","reasoning":""}\n\n',
        b'id: 1\nevent: chunk\ndata: {"a":1,"content":"x","reasoning":"y"}',
        b'{"a":1,"content":"x","reasoning":"y"}\n\n',
    ],
    ids=["no-splice", "not-a-string", "no-reasoning", "no-separator", "unended", "no-data-line"],
)
def test_chunk_frame_of_refuses_what_is_not_a_splice(frame: bytes) -> None:
    assert chunk_frame_of(frame) is None


def test_whitespace_around_the_closing_brace_is_dropped() -> None:
    # the splice itself drops it (chunk_event_data): the one change to the bytes
    chunk = parse_chunk(b'{"a":1 }  ')
    assert chunk is not None
    assert raw_chunk(chunk_event_data(chunk)) == '{"a":1}'


def test_key_quoted_by_the_upstream_stays_scrubbed() -> None:
    secret = "sk-or-v1-secret"
    chunk = parse_chunk(b'{"choices":[{"delta":{"content":"\\u0073k-or-v1-secret"}}]}', secret)
    assert chunk is not None
    assert secret not in raw_chunk(chunk_event_data(chunk))
    assert json.loads(raw_chunk(chunk_event_data(chunk))) == {
        "choices": [{"delta": {"content": "[redacted]"}}]
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"a":1,"content":"x","reasoning":1}', '{"a":1}'),
        ('{"a":1,"content":"x"}', '{"a":1}'),
        ('{"content":"","reasoning":"","a":1}', '{"a":1}'),
        ('{"a":"\\u00e9","content":"\\u0078","reasoning":""}', '{"a":"é"}'),
    ],
    ids=["reasoning-not-a-string", "no-reasoning", "keys-not-last", "non-canonical-text"],
)
def test_raw_chunk_reserializes_what_the_splice_did_not_write(data: str, expected: str) -> None:
    assert raw_chunk(data) == expected


def test_fixture_streams_come_back_exactly() -> None:
    for name in (
        "01-plain-text-usage-claude37",
        "03-tool-call-bedrock-haiku45-empty-choices-usage",
    ):
        for line in fixture_path(name).read_bytes().split(b"\n"):
            if not line.startswith(b"data: {"):
                continue
            chunk = parse_chunk(line[6:])
            assert chunk is not None
            assert chunk_frame(chunk_event_data(chunk)) == line + b"\n\n"


@pytest.mark.parametrize(
    ("data", "frame"),
    [
        ('{"content":"","reasoning":""}', b"data: {}\n\n"),
        ('{"a":"\\u00e9","content":"","reasoning":""}', b'data: {"a":"\\u00e9"}\n\n'),
        ('{"b":2,\n"a":1,"content":"","reasoning":""}', b'data: {"b":2,\ndata: "a":1}\n\n'),
    ],
    ids=["empty", "escape-kept", "line-break-in-json"],
)
def test_chunk_frame(data: str, frame: bytes) -> None:
    assert chunk_frame(data) == frame


def test_done_frame() -> None:
    assert DONE_FRAME == b"data: [DONE]\n\n"


# --- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "insufficient_quota"),
        (403, "permission_error"),
        (404, "invalid_request_error"),
        (405, "invalid_request_error"),
        (413, "invalid_request_error"),
        (415, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "api_error"),
        (504, "api_error"),
        (507, "api_error"),
    ],
)
def test_error_type(status: int, kind: str) -> None:
    assert error_type(status) == kind


@pytest.mark.parametrize(
    ("error", "body"),
    [
        (
            errors.InvalidRequest("bad role", field="messages[0].role"),
            {
                "message": "bad role",
                "type": "invalid_request_error",
                "param": "messages[0].role",
                "code": "invalid_request",
            },
        ),
        (
            errors.RateLimited("slow down", retry_after=7),
            {
                "message": "slow down",
                "type": "rate_limit_error",
                "param": None,
                "code": "rate_limited",
            },
        ),
        (
            errors.InsufficientCredits("pay", upstream={"code": 402}),
            {
                "message": "pay",
                "type": "insufficient_quota",
                "param": None,
                "code": "insufficient_credits",
            },
        ),
        (
            errors.TooLong("long"),
            {"message": "long", "type": "api_error", "param": None, "code": "too_long"},
        ),
    ],
)
def test_error_body(error: errors.ApiError, body: dict[str, t.Any]) -> None:
    assert error_body(error.to_dict()) == {"error": body}


def test_error_frame() -> None:
    data = json.loads(error_data(errors.UpstreamStreamError("gone")))
    assert error_frame(data) == (
        b'data: {"error":{"message":"gone","type":"api_error","param":null,'
        b'"code":"upstream_error"}}\n\n'
    )


# --- the non-streamed completion --------------------------------------------------


def events_of(*chunks: dict[str, t.Any]) -> list[tuple[str, str]]:
    """The log's events for these upstream chunks: what the generation appends."""
    answer = Answer("asked/model")
    found = []
    for value in chunks:
        chunk = parse_chunk(json.dumps(value, separators=(",", ":")).encode())
        assert chunk is not None
        answer.add(chunk)
        found.append(("chunk", chunk_event_data(chunk)))
    found.append(("done", done_data(answer)))
    return found


def delta(created: int = 1700000000, **fields: t.Any) -> dict[str, t.Any]:
    return {
        "id": "gen-1",
        "model": "m/1",
        "created": created,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": fields, "finish_reason": None}],
    }


def completion_of(events: list[tuple[str, str]]) -> Completion:
    completion = Completion()
    for name, data in events:
        completion.add(name, data)
    return completion


def test_completion_of_text() -> None:
    finish = delta(content="")
    finish["choices"][0]["finish_reason"] = "stop"
    usage = {"id": "gen-1", "choices": [], "usage": {"total_tokens": 5, "cost": 0.1}}
    events = events_of(
        delta(role="assistant", content=""),
        delta(content="Hel"),
        delta(content="lo"),
        finish,
        usage,
    )
    assert completion_of(events).result(42, "chatcmpl-x") == {
        "id": "gen-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "m/1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"total_tokens": 5, "cost": 0.1},
    }


def test_completion_of_everything() -> None:
    citation = {"url": "https://a.example", "title": "A"}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    events = events_of(
        delta(
            reasoning="Hm", reasoning_details=[{"type": "reasoning.text", "text": "Hm", "index": 0}]
        ),
        delta(
            reasoning=".", reasoning_details=[{"type": "reasoning.text", "text": ".", "index": 0}]
        ),
        delta(content="See", annotations=[{"type": "url_citation", "url_citation": citation}]),
        delta(annotations=[{"type": "url_citation", "url_citation": citation}]),
        delta(images=[image]),
        delta(
            tool_calls=[
                {
                    "index": 0,
                    "id": "c",
                    "type": "function",
                    "function": {"name": "f", "arguments": "{"},
                }
            ]
        ),
        delta(tool_calls=[{"index": 0, "function": {"arguments": "}"}}]),
    )
    message = completion_of(events).result(42, "x")["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": "See",
        "reasoning": "Hm.",
        "reasoning_details": [{"type": "reasoning.text", "text": "Hm.", "index": 0}],
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
        "annotations": [{"type": "url_citation", "url_citation": citation}],
        "images": [image],
    }


def test_completion_of_tool_calls_only_has_null_content() -> None:
    events = events_of(
        delta(
            tool_calls=[
                {
                    "index": 0,
                    "id": "c",
                    "type": "function",
                    "function": {"name": "f", "arguments": "{}"},
                }
            ]
        )
    )
    message = completion_of(events).result(42, "x")["choices"][0]["message"]
    assert message["content"] is None


def test_completion_without_chunks() -> None:
    completion = completion_of(events_of())
    assert completion.result(42, "chatcmpl-s") == {
        "id": "chatcmpl-s",
        "object": "chat.completion",
        "created": 42,
        "model": "asked/model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": None}
        ],
        "usage": None,
    }


def test_completion_keeps_the_error() -> None:
    completion = Completion()
    completion.add("chunk", chunk_event_data(parse_chunk(b'{"choices":[]}')))  # type: ignore[arg-type]
    completion.add("error", error_data(errors.UpstreamStreamError("boom")))
    assert completion.done is None
    assert completion.error is not None and completion.error["code"] == "upstream_error"


# --- models -----------------------------------------------------------------------


def test_model_list() -> None:
    data = {
        "data": [
            {"id": "openai/gpt-4o", "created": 1715558400, "pricing": {}},
            {"id": "ngai-demo"},
            {"id": ""},
            "junk",
            {"id": "a/b", "created": "yesterday"},
        ]
    }
    assert model_list(data, owner="openrouter") == {
        "object": "list",
        "data": [
            {"id": "openai/gpt-4o", "object": "model", "created": 1715558400, "owned_by": "openai"},
            {"id": "ngai-demo", "object": "model", "created": 0, "owned_by": "openrouter"},
            {"id": "a/b", "object": "model", "created": 0, "owned_by": "a"},
        ],
    }

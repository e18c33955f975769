"""The AI SDK door, in process: ``POST /chat`` and ``GET``/``DELETE /chat/<id>/stream``
over Flask's test client and a scripted upstream (shapes, codes, guards, state).

Timing (a running answer resumed, stopped, replaced; several processes) is in
``test_ui_chat_live.py``; the SDK itself reads the stream in ``test_ai_sdk.py``.
"""

from __future__ import annotations

import json
import typing as t

import pytest

from tests.support.scripted import ScriptedUpstream
from tests.support.scripted import chunk
from tests.support.scripted import text_stream

USER = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hello"}]}


def body(**changes: t.Any) -> dict[str, t.Any]:
    return {"id": "chat-1", "messages": [USER], "trigger": "submit-message", **changes}


def parts(response: t.Any) -> list[t.Any]:
    """The parts of a UI message stream; ``"[DONE]"`` for its last line."""
    text = response.get_data(as_text=True)
    assert text.endswith("data: [DONE]\n\n"), text
    found = []
    for block in text.split("\n\n")[:-1]:
        if block.startswith(":"):
            continue
        assert block.startswith("data: ") and "\n" not in block, block
        data = block[6:]
        found.append(data if data == "[DONE]" else json.loads(data))
    return found


def assert_error(response: t.Any, status: int, code: str, field: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field


def test_answer_streams_as_ui_message_parts(client: t.Any, upstream: ScriptedUpstream) -> None:
    response = client.post("/chat", json=body(model="m/x", temperature=0.5))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["Cache-Control"] == "no-cache, no-transform"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Length" not in response.headers
    found = parts(response)
    assert found[0]["type"] == "start" and found[0]["messageId"].startswith("msg-")
    assert found[1:] == [
        {"type": "start-step"},
        {"type": "text-start", "id": "text-0"},
        {"type": "text-delta", "id": "text-0", "delta": "Hello"},
        {"type": "text-delta", "id": "text-0", "delta": " world"},
        {"type": "text-end", "id": "text-0"},
        {"type": "finish-step"},
        {
            "type": "finish",
            "finishReason": "stop",
            "messageMetadata": {
                "model": "test/model",
                "usage": {"total_tokens": 3},
                "generationId": "gen-test",
            },
        },
        "[DONE]",
    ]
    [(sent, _)] = upstream.requests
    assert sent == {
        "model": "m/x",
        "messages": [{"role": "user", "content": "Hello"}],
        "temperature": 0.5,
    }


def test_regenerate_keeps_the_requests_message_id(client: t.Any) -> None:
    found = parts(client.post("/chat", json=body(trigger="regenerate-message", messageId="a-1")))
    assert found[0] == {"type": "start", "messageId": "a-1"}
    # a submit's messageId names the user's message: the answer gets a new id
    found = parts(client.post("/chat", json=body(messageId="u1")))
    assert found[0]["messageId"] != "u1"


def test_finished_chat_has_nothing_to_resume(client: t.Any, upstream: ScriptedUpstream) -> None:
    parts(client.post("/chat", json=body()))
    assert client.get("/chat/chat-1/stream").status_code == 204
    assert client.get("/chat/unknown/stream").status_code == 204
    assert client.get("/chat/bad%20id!/stream").status_code == 204
    assert client.get("/chat/a/b/stream").status_code == 204  # any string: no routing 404
    assert client.get("/chat//stream").status_code == 204
    assert client.delete("/chat/a%0Ab/stream").status_code == 204
    assert client.delete("/chat/chat-1/stream").status_code == 204
    assert client.delete("/chat/unknown/stream").status_code == 204
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": "a/b"}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"id": None}, "id"),
        ({"trigger": "resume"}, "trigger"),
        ({"messageId": 5}, "messageId"),
        ({"messages": []}, "messages"),
        (
            {"messages": [USER, {"role": "user", "parts": [{"type": "video"}]}]},
            "messages[1].parts[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "parts": [{"type": "file", "mediaType": "audio/mp3", "url": "x"}],
                    }
                ]
            },
            "messages[0].parts[0].mediaType",
        ),
        ({"temperature": "hot"}, "temperature"),
        ({"mystery": 1}, "mystery"),
        ({"model": ""}, "model"),
    ],
)
def test_bad_requests_name_the_field(client: t.Any, changes: dict, field: str) -> None:
    assert_error(client.post("/chat", json=body(**changes)), 400, "invalid_request", field)


def test_refusals_before_the_stream_are_json(make_app: t.Any) -> None:
    app = make_app(NGAI_API_TOKENS="tok-a,tok-b", NGAI_MAX_BODY_BYTES="2000")
    client = app.test_client()
    assert_error(client.post("/chat", json=body()), 401, "unauthorized")
    auth = {"Authorization": "Bearer tok-a"}
    assert_error(
        client.post("/chat", data="{", headers=auth, content_type="application/json"),
        400,
        "invalid_json",
    )
    assert_error(
        client.post("/chat", data="x", headers=auth, content_type="text/plain"),
        415,
        "unsupported_media_type",
    )
    big = body(messages=[{"role": "user", "parts": [{"type": "text", "text": "x" * 3000}]}])
    assert_error(client.post("/chat", json=big, headers=auth), 413, "payload_too_large")
    assert_error(client.get("/chat/chat-1/stream"), 401, "unauthorized")
    assert_error(client.delete("/chat/chat-1/stream"), 401, "unauthorized")


def test_model_allowlist_and_rate_limit_hold_here_too(make_app: t.Any) -> None:
    app = make_app(NGAI_MODEL_ALLOWLIST="m/ok", NGAI_RATE_LIMIT="2/minute")
    client = app.test_client()
    assert_error(client.post("/chat", json=body(model="m/other")), 403, "model_not_allowed")
    assert client.post("/chat", json=body(model="m/ok")).status_code == 200
    response = client.post("/chat", json=body(model="m/ok"))
    assert_error(response, 429, "rate_limited")
    assert "Retry-After" in response.headers


def test_error_before_the_first_chunk_is_an_error_part(make_app: t.Any) -> None:
    from ngai_chat import errors

    app = make_app(ScriptedUpstream(refuse=errors.UpstreamRateLimited()))
    found = parts(app.test_client().post("/chat", json=body()))
    assert found == [
        found[0],
        {"type": "start-step"},
        {"type": "error", "errorText": errors.UpstreamRateLimited().message},
        "[DONE]",
    ]


def test_assistant_history_goes_upstream(client: t.Any, upstream: ScriptedUpstream) -> None:
    history = [
        USER,
        {
            "id": "a1",
            "role": "assistant",
            "metadata": {
                "model": "m",
                "reasoningDetails": [{"type": "reasoning.encrypted", "data": "x"}],
            },
            "parts": [
                {"type": "step-start"},
                {"type": "reasoning", "text": "hm"},
                {
                    "type": "tool-weather",
                    "toolCallId": "c1",
                    "state": "output-available",
                    "input": {"city": "Paris"},
                    "output": "sunny",
                },
            ],
        },
        {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "And?"}]},
    ]
    parts(client.post("/chat", json=body(messages=history)))
    [(sent, _)] = upstream.requests
    assert sent["messages"] == [
        {"role": "user", "content": "Hello"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
            "reasoning_details": [{"type": "reasoning.encrypted", "data": "x"}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '"sunny"'},
        {"role": "user", "content": "And?"},
    ]


def test_a_chat_belongs_to_its_token(make_app: t.Any) -> None:
    """Another token finds nothing: 204 on GET and DELETE, and its own POST with the
    same chat id is its own chat (it stops nothing of the first token's)."""
    upstream = ScriptedUpstream([chunk("a"), 5, *text_stream("b")])
    app = make_app(upstream, NGAI_API_TOKENS="tok-a,tok-b")
    client = app.test_client()
    a = {"Authorization": "Bearer tok-a"}
    b = {"Authorization": "Bearer tok-b"}
    running = client.post("/chat", json=body(), headers=a, buffered=False)
    assert running.status_code == 200
    live = iter(running.response)
    first = next(live)  # start + start-step
    assert b'"type":"start"' in first
    assert b'"delta":"a"' in next(live)  # the answer is running: its first chunk came
    assert client.get("/chat/chat-1/stream", headers=b).status_code == 204
    assert client.delete("/chat/chat-1/stream", headers=b).status_code == 204
    resumed = client.get("/chat/chat-1/stream", headers=a, buffered=False)
    assert resumed.status_code == 200
    assert next(iter(resumed.response)) == first  # the same message id
    assert client.delete("/chat/chat-1/stream", headers=a).status_code == 204
    rest = b"".join(resumed.response)
    assert rest.endswith(b'data: {"type":"abort"}\n\ndata: [DONE]\n\n'), rest
    assert b"".join(live).endswith(b'data: {"type":"abort"}\n\ndata: [DONE]\n\n')
    assert client.get("/chat/chat-1/stream", headers=a).status_code == 204
    running.close()
    resumed.close()


# --- the stream's writes (ngai_chat.doors.ui_chat._parts) ---------------------------


class _Reader:
    """Batches, then an exception, as :class:`ngai_chat.relay.Reader` would."""

    def __init__(self, batches: list[t.Any], failure: BaseException | None = None) -> None:
        self.batches = batches
        self.failure = failure

    def __iter__(self) -> t.Iterator[t.Any]:
        yield from self.batches
        if self.failure is not None:
            raise self.failure


def _chunk_event(number: int, text: str) -> t.Any:
    from ngai_chat.chunks import Chunk
    from ngai_chat.chunks import chunk_event_data
    from ngai_chat.store import Event

    value = {"choices": [{"index": 0, "delta": {"content": text}}]}
    return Event(number, "chunk", chunk_event_data(Chunk.from_value(value)))


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("store", "Redis is down."),
        ("gone", None),
        ("shutdown", "This server is restarting; reload to receive the rest of the answer."),
    ],
)
def test_failures_while_streaming_end_with_an_error_part(failure: str, message: str | None) -> None:
    from ngai_chat import errors
    from ngai_chat.doors.ui_chat import _parts
    from ngai_chat.relay import ShuttingDown
    from ngai_chat.wire.ui_stream import UIStream

    exc: BaseException = {
        "store": errors.StoreUnavailable("Redis is down."),
        "gone": errors.SessionNotFound(),
        "shutdown": ShuttingDown(1),
    }[failure]
    reader = _Reader([[_chunk_event(1, "Hi")], None], exc)
    out = b"".join(_parts(t.cast(t.Any, reader), UIStream("m1")))
    expected = message or errors.SessionNotFound().message
    assert out.endswith(
        b'"delta":"Hi"}\n\n: keep-alive\n\ndata: {"type":"text-end","id":"text-0"}\n\n'
        + f'data: {{"type":"error","errorText":"{expected}"}}\n\ndata: [DONE]\n\n'.encode()
    ), out


def test_a_long_replay_goes_out_in_bounded_writes() -> None:
    from ngai_chat.doors.base import SLICE_BYTES
    from ngai_chat.doors.ui_chat import _parts
    from ngai_chat.wire.ui_stream import UIStream

    events = [_chunk_event(n, "x" * 1000) for n in range(1, 301)]  # ~300 KB
    writes = list(_parts(t.cast(t.Any, _Reader([events])), UIStream("m1")))
    assert len(writes) > 4
    assert max(len(w) for w in writes) < SLICE_BYTES + 2000
    text = b"".join(writes).decode()
    assert text.count('"type":"text-delta"') == 300

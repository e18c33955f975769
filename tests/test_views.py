"""The endpoints, in process: Flask's test client over a scripted upstream.

Timing (heartbeats, cancel latency, split bytes) is tested over real sockets in
``test_live.py``; here is everything about shapes, codes and state.
"""

from __future__ import annotations

import json
import logging
import re
import typing as t

import pytest
from flask import Flask

from ngai_chat import chat_blueprint
from ngai_chat import errors
from ngai_chat import get_services
from ngai_chat.sweeper import sweep_once
from tests.conftest import API_KEY
from tests.support.scripted import ScriptedUpstream
from tests.support.scripted import chunk
from tests.support.scripted import text_stream
from tests.support.sse_parse import Frame
from tests.support.sse_parse import events
from tests.support.sse_parse import parse
from tests.support.sse_parse import texts

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def prepare(client: t.Any, body: t.Any = HELLO, **kwargs: t.Any) -> str:
    response = client.post("/prepare", json=body, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    return str(response.get_json()["sessionId"])


def stream(client: t.Any, url: str, **kwargs: t.Any) -> list[Frame]:
    response = client.get(url, **kwargs)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    return parse(response.get_data(as_text=True))


def assert_error(response: t.Any, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code and error["status"] == status
    assert isinstance(error["message"], str) and error["message"]
    if field is not None:
        assert error["field"] == field
    return error


# --- POST /prepare ------------------------------------------------------------


def test_prepare_answers_the_spec_shape(client: t.Any) -> None:
    response = client.post("/prepare", json=HELLO)
    body = response.get_json()
    assert UUID.match(body["sessionId"])
    assert body["streamUrl"] == f"/stream/{body['sessionId']}"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", body["expiresAt"])


def test_prepare_sends_the_request_upstream(client: t.Any, upstream: ScriptedUpstream) -> None:
    body = {
        "model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.2,
        "stream": False,
    }
    sid = prepare(client, body, headers={"Origin": "https://app.example"})
    stream(client, f"/stream/{sid}")
    sent, referer = upstream.requests[0]
    assert sent == {
        "model": "openai/gpt-4o",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.2,
    }
    assert referer == "https://app.example"


def test_default_model_system_prompt_fallbacks_and_referer(
    make_app: t.Any, upstream: ScriptedUpstream
) -> None:
    client = make_app(
        NGAI_DEFAULT_MODEL="x/default",
        NGAI_SYSTEM_PROMPT="Be kind.",
        NGAI_FALLBACK_MODELS="y/one,z/two",
        REFERER="https://configured.example",
    ).test_client()
    stream(client, f"/stream/{prepare(client, headers={'Origin': 'https://other.example'})}")
    sent, referer = upstream.requests[0]
    assert sent["model"] == "x/default"
    assert sent["messages"][0] == {"role": "system", "content": "Be kind."}
    assert sent["models"] == ["y/one", "z/two"]
    assert referer == "https://configured.example"


def test_system_prompt_not_added_when_request_has_one(
    make_app: t.Any, upstream: ScriptedUpstream
) -> None:
    client = make_app(NGAI_SYSTEM_PROMPT="Be kind.").test_client()
    body = {"messages": [{"role": "system", "content": "Mine"}, {"role": "user", "content": "x"}]}
    stream(client, f"/stream/{prepare(client, body)}")
    assert [m["content"] for m in upstream.requests[0][0]["messages"]] == ["Mine", "x"]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "{}", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"data": "messages=hi"}, 415, "unsupported_media_type"),
        ({"data": "{nope", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": b"\xff", "content_type": "application/json"}, 400, "invalid_json"),
        ({"json": []}, 400, "invalid_request"),
        ({"json": {"messages": [{"role": "x", "content": "y"}]}}, 400, "invalid_request"),
    ],
)
def test_prepare_bad_input(client: t.Any, kwargs: dict, status: int, code: str) -> None:
    assert_error(client.post("/prepare", **kwargs), status, code)


def test_prepare_names_the_bad_field(client: t.Any) -> None:
    body = {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}
    error = assert_error(client.post("/prepare", json=body), 400, "invalid_request")
    assert error["field"] == "messages[1].role"
    unknown = assert_error(
        client.post("/prepare", json={**HELLO, "foo": 1}), 400, "invalid_request"
    )
    assert unknown["field"] == "foo" and "foo" in unknown["message"]


def test_prepare_body_too_large(make_app: t.Any) -> None:
    client = make_app(NGAI_MAX_BODY_BYTES="100").test_client()
    body = {"messages": [{"role": "user", "content": "x" * 200}]}
    assert_error(client.post("/prepare", json=body), 413, "payload_too_large")
    assert client.post("/prepare", json=HELLO).status_code == 200


def test_model_allowlist(make_app: t.Any) -> None:
    client = make_app(NGAI_MODEL_ALLOWLIST="*:free,openai/gpt-4o").test_client()
    denied = client.post("/prepare", json={**HELLO, "model": "anthropic/claude-3"})
    error = assert_error(denied, 403, "model_not_allowed")
    assert "anthropic/claude-3" in error["message"]
    assert client.post("/prepare", json={**HELLO, "model": "a/b:free"}).status_code == 200
    assert client.post("/prepare", json={**HELLO, "model": "openai/gpt-4o"}).status_code == 200
    fallback = client.post("/prepare", json={**HELLO, "model": "a:free", "models": ["x/y"]})
    assert_error(fallback, 403, "model_not_allowed", field="models[0]")


def test_errors_carry_cors_headers(client: t.Any) -> None:
    response = client.post("/prepare", data="x", headers={"Origin": "https://a.example"})
    assert response.status_code == 415
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_preflight_allows_the_spec_headers(make_app: t.Any) -> None:
    client = make_app(NGAI_CORS_ORIGINS="https://a.example").test_client()
    response = client.options(
        "/prepare",
        headers={
            "Origin": "https://a.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization, last-event-id",
        },
    )
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"content-type", "authorization", "last-event-id"} <= {
        h.strip() for h in allowed.split(",")
    }
    other = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


# --- GET /stream -------------------------------------------------------------


def test_stream_relays_chunks_then_done(client: t.Any, upstream: ScriptedUpstream) -> None:
    upstream.steps = text_stream("Hel", "lo ", " wörld 😀", usage={"total_tokens": 9})
    frames = stream(client, f"/stream/{prepare(client)}")
    assert frames[0].retry == 3000 and frames[1].comment
    evs = events(frames)
    assert [int(e.id) for e in evs] == list(range(1, len(evs) + 1))
    assert [e.name for e in evs] == ["chunk"] * 5 + ["done"]
    assert texts(frames) == "Hello  wörld 😀"
    first = evs[0].json
    assert first["choices"][0]["delta"]["content"] == "Hel" and first["content"] == "Hel"
    assert evs[4].json["content"] == "" and evs[4].json["choices"] == []
    assert evs[-1].json == {
        "finishReason": "stop",
        "model": "test/model",
        "usage": {"total_tokens": 9},
        "generationId": "gen-test",
        "citations": [],
        "reasoningDetails": [],
        "toolCalls": [],
    }
    assert all(e.json["reasoning"] == "" for e in evs[:-1])


def test_chunk_without_content_gets_empty_content(
    client: t.Any, upstream: ScriptedUpstream
) -> None:
    upstream.steps = [
        '{"id":"a","choices":[{"delta":{"role":"assistant"}}]}',
        '{"id":"a","choices":[{"delta":{"content":null,"tool_calls":[{"index":0}]}}]}',
        chunk("", finish="tool_calls"),
    ]
    evs = events(stream(client, f"/stream/{prepare(client)}"))
    assert [e.json["content"] for e in evs[:2]] == ["", ""]
    assert evs[1].json["choices"][0]["delta"]["tool_calls"] == [{"index": 0}]
    assert evs[-1].json["finishReason"] == "tool_calls"


def test_done_without_finish_reason(client: t.Any, upstream: ScriptedUpstream) -> None:
    upstream.steps = [chunk("a")]  # then [DONE] without any finish reason
    evs = events(stream(client, f"/stream/{prepare(client, {**HELLO, 'model': 'm/asked'})}"))
    assert evs[-1].name == "done"
    assert evs[-1].json == {
        "finishReason": None,
        "model": "test/model",
        "usage": None,
        "generationId": "gen-test",
        "citations": [],
        "reasoningDetails": [],
        "toolCalls": [],
    }


def test_done_reports_requested_model_when_no_chunk_came(
    client: t.Any, upstream: ScriptedUpstream
) -> None:
    upstream.steps = []
    evs = events(stream(client, f"/stream/{prepare(client, {**HELLO, 'model': 'm/asked'})}"))
    assert evs == [evs[-1]] and evs[-1].json["model"] == "m/asked"


def test_interrupted_after_finish_is_still_done(client: t.Any, upstream: ScriptedUpstream) -> None:
    upstream.steps = [chunk("a"), chunk("", finish="length"), errors.UpstreamInterrupted()]
    evs = events(stream(client, f"/stream/{prepare(client)}"))
    assert evs[-1].name == "done" and evs[-1].json["finishReason"] == "length"


def test_interrupted_before_finish_is_an_error(client: t.Any, upstream: ScriptedUpstream) -> None:
    upstream.steps = [chunk("a"), errors.UpstreamInterrupted()]
    evs = events(stream(client, f"/stream/{prepare(client)}"))
    assert [e.name for e in evs] == ["chunk", "error"]
    assert evs[-1].json["code"] == "upstream_interrupted" and evs[-1].json["retryable"] is True


def test_midstream_error_chunk_becomes_an_error_event(
    client: t.Any, upstream: ScriptedUpstream
) -> None:
    upstream.steps = [
        chunk("partial"),
        {
            "id": "x",
            "error": {"code": 429, "message": "Rate limit exceeded", "metadata": {"raw": "why"}},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        },
        chunk("never"),
    ]
    evs = events(stream(client, f"/stream/{prepare(client)}"))
    assert [e.name for e in evs] == ["chunk", "error"]
    error = evs[-1].json
    assert error["code"] == "upstream_error" and error["status"] == 502
    assert error["message"] == "Rate limit exceeded" and error["retryable"] is True
    assert error["upstream"]["metadata"] == {"raw": "why"}


@pytest.mark.parametrize(
    ("refusal", "code", "status", "retryable"),
    [
        (errors.UpstreamBadRequest("bad model"), "upstream_bad_request", 400, False),
        (errors.UpstreamUnauthorized(), "upstream_unauthorized", 502, False),
        (
            errors.ContentBlocked(upstream={"metadata": {"reasons": ["x"]}}),
            "content_blocked",
            403,
            False,
        ),
        (errors.InsufficientCredits(), "insufficient_credits", 402, False),
        (errors.UpstreamRateLimited(), "upstream_rate_limited", 429, True),
        (errors.UpstreamUnavailable(), "upstream_unavailable", 502, True),
        (errors.UpstreamTimeout(), "upstream_timeout", 504, True),
    ],
)
def test_upstream_refusal_is_one_error_event(
    client: t.Any,
    upstream: ScriptedUpstream,
    refusal: errors.ApiError,
    code: str,
    status: int,
    retryable: bool,
) -> None:
    upstream.refuse = refusal
    evs = events(stream(client, f"/stream/{prepare(client)}"))
    assert [(e.id, e.name) for e in evs] == [("1", "error")]
    assert evs[0].json["code"] == code and evs[0].json["status"] == status
    assert evs[0].json["retryable"] is retryable


def test_a_bug_in_the_upstream_is_internal_error_without_traceback(
    client: t.Any, upstream: ScriptedUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.steps = [chunk("a"), RuntimeError("boom at line 3")]
    body = client.get(f"/stream/{prepare(client)}").get_data(as_text=True)
    assert "boom" not in body and "Traceback" not in body
    assert events(parse(body))[-1].json["code"] == "internal_error"


def test_too_long(make_app: t.Any, upstream: ScriptedUpstream) -> None:
    upstream.steps = text_stream(*"abcdefgh")
    client = make_app(NGAI_MAX_EVENTS="5").test_client()
    evs = events(stream(client, f"/stream/{prepare(client)}"))
    assert len(evs) == 5
    assert evs[-1].name == "error" and evs[-1].json["code"] == "too_long"
    assert evs[-1].json["status"] == 507


@pytest.mark.parametrize(
    "path",
    [
        "/stream/00000000-0000-4000-8000-000000000000",
        "/stream/not-a-session",
        "/stream/../../etc/passwd",
        "/stream/a/b/c",
        "/stream/",
        "/stream/%00",
    ],
)
def test_unknown_session_is_an_error_event_with_an_id(client: t.Any, path: str) -> None:
    frames = stream(client, path)
    [event] = events(frames)
    assert (event.id, event.name) == ("1", "error")
    assert event.json["code"] == "session_not_found" and event.json["status"] == 404
    assert event.json["retryable"] is False


def test_unknown_session_with_last_event_id_is_204(client: t.Any) -> None:
    response = client.get("/stream/not-a-session", headers={"Last-Event-ID": "1"})
    assert response.status_code == 204 and response.data == b""


def test_resume_after_n_replays_the_rest(client: t.Any, upstream: ScriptedUpstream) -> None:
    upstream.steps = text_stream("a", "b", "c", "d")
    sid = prepare(client)
    full = events(stream(client, f"/stream/{sid}"))
    for n in range(len(full) - 1):
        by_header = events(stream(client, f"/stream/{sid}", headers={"Last-Event-ID": str(n)}))
        by_query = events(stream(client, f"/stream/{sid}?lastEventId={n}"))
        assert [e.id for e in by_header] == [e.id for e in full[n:]]
        assert [e.data for e in by_query] == [e.data for e in full[n:]]
    assert len(upstream.requests) == 1


def test_reconnect_at_or_past_the_end_is_204(client: t.Any) -> None:
    sid = prepare(client)
    last = events(stream(client, f"/stream/{sid}"))[-1].id
    for value in (last, str(int(last) + 5)):
        response = client.get(f"/stream/{sid}", headers={"Last-Event-ID": value})
        assert response.status_code == 204


def test_many_gets_one_upstream_request(client: t.Any, upstream: ScriptedUpstream) -> None:
    sid = prepare(client)
    bodies = [client.get(f"/stream/{sid}").get_data(as_text=True) for _ in range(4)]
    assert len(upstream.requests) == 1
    assert len({json.dumps([e.data for e in events(parse(b))]) for b in bodies}) == 1


# --- DELETE /stream -------------------------------------------------------------


def test_delete_before_get_never_calls_upstream(client: t.Any, upstream: ScriptedUpstream) -> None:
    sid = prepare(client, {**HELLO, "model": "m/x"})
    assert client.delete(f"/stream/{sid}").status_code == 204
    evs = events(stream(client, f"/stream/{sid}"))
    assert [e.name for e in evs] == ["done"]
    assert evs[0].json == {
        "finishReason": "cancelled",
        "model": "m/x",
        "usage": None,
        "generationId": None,
        "citations": [],
        "reasoningDetails": [],
        "toolCalls": [],
    }
    assert upstream.requests == []


def test_delete_unknown_is_404_json(client: t.Any) -> None:
    assert_error(client.delete("/stream/not-a-session"), 404, "session_not_found")
    assert_error(
        client.delete("/stream/00000000-0000-4000-8000-000000000000"), 404, "session_not_found"
    )


def test_delete_after_end_is_harmless(client: t.Any) -> None:
    sid = prepare(client)
    before = events(stream(client, f"/stream/{sid}"))
    assert client.delete(f"/stream/{sid}").status_code == 204
    assert events(stream(client, f"/stream/{sid}")) == before


# --- expiry and sweeping ------------------------------------------------------------


def test_session_expires_at_ttl_without_a_sweep(make_app: t.Any, clock: t.Any) -> None:
    client = make_app(NGAI_SESSION_TTL="60").test_client()
    sid = prepare(client)
    clock.advance(60)
    [event] = events(stream(client, f"/stream/{sid}"))
    assert event.json["code"] == "session_not_found"


def test_finished_stream_replayable_until_replay_ttl(make_app: t.Any, clock: t.Any) -> None:
    client = make_app(NGAI_REPLAY_TTL="30").test_client()
    sid = prepare(client)
    first = events(stream(client, f"/stream/{sid}"))
    clock.advance(29)
    assert events(stream(client, f"/stream/{sid}")) == first
    clock.advance(1)
    [event] = events(stream(client, f"/stream/{sid}"))
    assert event.json["code"] == "session_not_found"


def test_sweep_frees_expired_sessions(make_app: t.Any, clock: t.Any) -> None:
    app = make_app(NGAI_SESSION_TTL="60", NGAI_REPLAY_TTL="30")
    client = app.test_client()
    pending = [prepare(client) for _ in range(3)]
    finished = prepare(client)
    stream(client, f"/stream/{finished}")
    with app.app_context():
        store = get_services().store
    assert store.count_live() == 3
    assert sweep_once(store, clock.now) == 0
    clock.advance(30)
    assert sweep_once(store, clock.now) == 1  # the finished log
    clock.advance(30)
    assert sweep_once(store, clock.now) == 3
    assert all(store.get(sid) is None for sid in pending)
    assert client.get("/health").get_json()["sessions"] == 0


# --- GET /models, /health, misc ---------------------------------------------------

MODELS = {
    "data": [
        {"id": "a/free:free", "pricing": {"prompt": "0", "completion": "0"}},
        {"id": "b/zero", "pricing": {"prompt": "0.0", "completion": "0"}},
        {"id": "c/paid", "pricing": {"prompt": "0.000003", "completion": "0.00001"}},
        {"id": "openrouter/auto", "pricing": {"prompt": "-1", "completion": "-1"}},
        {"id": "d/noprice"},
    ]
}


def ids(response: t.Any) -> list[str]:
    return [m["id"] for m in response.get_json()["data"]]


def test_models_cached_filtered_and_free(make_app: t.Any, clock: t.Any) -> None:
    up = ScriptedUpstream(models=MODELS)
    client = make_app(up).test_client()
    assert ids(client.get("/models")) == [m["id"] for m in MODELS["data"]]
    assert ids(client.get("/models?free=1")) == ["a/free:free", "b/zero"]
    assert up.model_calls == 1
    allow = make_app(ScriptedUpstream(models=MODELS), NGAI_MODEL_ALLOWLIST="*:free,c/*")
    assert ids(allow.test_client().get("/models")) == ["a/free:free", "c/paid"]


def test_models_stale_copy_then_502(make_app: t.Any) -> None:
    up = ScriptedUpstream(models=MODELS)
    client = make_app(up, NGAI_MODELS_CACHE_TTL="0").test_client()
    assert "Warning" not in client.get("/models").headers
    up.models = errors.UpstreamUnavailable()
    stale = client.get("/models")
    assert stale.status_code == 200 and stale.headers["Warning"].startswith("110")
    assert ids(stale) == [m["id"] for m in MODELS["data"]]
    cold = make_app(ScriptedUpstream(models=errors.UpstreamUnavailable())).test_client()
    assert_error(cold.get("/models"), 502, "upstream_unavailable")


def test_health(client: t.Any) -> None:
    prepare(client)
    body = client.get("/health").get_json()
    assert body == {
        "status": "ok",
        "upstream": "openrouter",
        "store": "memory",
        "sessions": 1,
        "streams": 0,
        "version": body["version"],
    }
    assert re.match(r"^\d+\.\d+\.\d+", body["version"])


def test_unknown_route_and_method_are_json(client: t.Any) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/prepare"), 405, "method_not_allowed")


def test_demo_mode_streams_the_demo_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from ngai_chat import create_app
    from ngai_chat.upstream.demo import DemoUpstream

    app = create_app({"NGAI_DEMO": "1"}, upstream=DemoUpstream(sleep=lambda _: None))
    client = app.test_client()
    assert ids(client.get("/models")) == ["ngai/demo"]
    frames = stream(
        client,
        f"/stream/{prepare(client, {'messages': [{'role': 'user', 'content': 'Ping pong'}]})}",
    )
    assert "Ping pong" in texts(frames)
    assert events(frames)[-1].json["model"] == "ngai/demo"
    assert client.get("/health").get_json()["upstream"] == "demo"


# --- mounting -------------------------------------------------------------------


def test_blueprint_mounts_under_a_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NGAI_DEMO", "1")
    host = Flask("host")

    @host.get("/")
    def home() -> str:
        return "host home"

    host.register_blueprint(chat_blueprint, url_prefix="/api/chat")
    client = host.test_client()
    assert client.get("/").data == b"host home"
    body = client.post("/api/chat/prepare", json=HELLO).get_json()
    assert body["streamUrl"] == f"/api/chat/stream/{body['sessionId']}"
    assert client.get("/api/chat/health").get_json()["upstream"] == "demo"
    assert_error(client.post("/api/chat/prepare", data="x"), 415, "unsupported_media_type")


def test_host_app_config_is_read_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "from-env")
    host = Flask("host")
    host.config.update(NGAI_MODEL_ALLOWLIST="only/this", OPENROUTER_BASE_URL="http://127.0.0.1:9")
    host.register_blueprint(chat_blueprint, url_prefix="/chat")
    with host.app_context():
        settings = get_services().settings
    assert settings.model_allowlist == ("only/this",) and settings.api_key == "from-env"


# --- the key never leaks --------------------------------------------------------


def test_key_never_in_responses_or_logs(
    client: t.Any, upstream: ScriptedUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream.refuse = errors.UpstreamUnauthorized()
    seen = [client.get("/health").data, client.get("/models").data]
    sid = prepare(client)
    seen.append(client.get(f"/stream/{sid}").data)
    assert all(API_KEY.encode() not in body for body in seen)
    # whatever logs it, by message or by argument, the line comes out scrubbed
    logging.getLogger("ngai_chat.anywhere").warning("oops %s", API_KEY)
    logging.getLogger("ngai_chat").error(f"key={API_KEY}")
    err = capsys.readouterr().err
    assert "oops [redacted]" in err and "key=[redacted]" in err
    assert API_KEY not in err


def test_split_surrogate_pairs_stay_escaped(client: t.Any, upstream: ScriptedUpstream) -> None:
    # some providers split an emoji's UTF-16 surrogate pair across two chunks
    upstream.steps = [
        '{"choices":[{"delta":{"content":"hi \\ud83d"}}]}',
        '{"choices":[{"delta":{"content":"\\ude00!"}}]}',
        chunk("", finish="stop"),
    ]
    response = client.get(f"/stream/{prepare(client)}")
    body = response.get_data(as_text=True)
    evs = events(parse(body))
    assert [e.json["content"] for e in evs[:2]] == ["hi \ud83d", "\ude00!"]
    assert "".join(e.json["content"] for e in evs[:2]) == "hi \ud83d\ude00!"
    assert evs[-1].name == "done"


def test_lone_surrogate_in_the_request_is_kept(client: t.Any, upstream: ScriptedUpstream) -> None:
    body = '{"messages": [{"role": "user", "content": "odd \\ud800 text"}]}'
    response = client.post("/prepare", data=body, content_type="application/json")
    assert response.status_code == 200
    stream(client, response.get_json()["streamUrl"])
    assert upstream.requests[0][0]["messages"][0]["content"] == "odd \ud800 text"

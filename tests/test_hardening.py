"""Tokens, rate limits, capacity caps, metrics, OpenAPI, JSON logs, startup checks, drain."""

from __future__ import annotations

import json
import signal
import time
import typing as t

import pytest
import requests

from bench import fake_upstream as fu
from bench.live import LiveApp
from bench.live import wait_until
from tests.conftest import API_KEY
from tests.support.sse_parse import StreamReader
from tests.support.sse_parse import events
from tests.support.sse_parse import parse

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}


def error_of(response: t.Any, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code and error["status"] == status and error["message"]
    return error


# --- in process -------------------------------------------------------------------


def test_api_tokens_guard_prepare_and_delete(make_app: t.Any) -> None:
    client = make_app(NGAI_API_TOKENS="tok-a,tok-b").test_client()
    error_of(client.post("/prepare", json=HELLO), 401, "unauthorized")
    wrong = client.post("/prepare", json=HELLO, headers={"Authorization": "Bearer nope"})
    error_of(wrong, 401, "unauthorized")
    error_of(
        client.post("/prepare", json=HELLO, headers={"Authorization": "tok-a"}), 401, "unauthorized"
    )
    ok = client.post("/prepare", json=HELLO, headers={"Authorization": "Bearer tok-b"})
    assert ok.status_code == 200
    sid = ok.get_json()["sessionId"]
    # EventSource cannot send headers: the stream itself needs no token
    assert client.get(f"/stream/{sid}").status_code == 200
    error_of(client.delete(f"/stream/{sid}"), 401, "unauthorized")
    deleted = client.delete(f"/stream/{sid}", headers={"Authorization": "bearer tok-a"})
    assert deleted.status_code == 204


def test_rate_limit_per_client(make_app: t.Any) -> None:
    client = make_app(NGAI_RATE_LIMIT="2/second").test_client()
    assert [client.post("/prepare", json=HELLO).status_code for _ in range(2)] == [200, 200]
    limited = client.post("/prepare", json=HELLO)
    error = error_of(limited, 429, "rate_limited")
    assert error["retryable"] is True and error["retryAfter"] == 1
    assert limited.headers["Retry-After"] == str(error["retryAfter"])
    assert "2/second" in error["message"] and "NGAI_RATE_LIMIT" in error["message"]
    other = client.post("/prepare", json=HELLO, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200  # another client has its own budget
    # the moving window frees a call a second after the first one
    wait_until(lambda: client.post("/prepare", json=HELLO).status_code == 200, 3, "a free call")


def test_rate_limit_sees_the_client_behind_a_trusted_proxy(make_app: t.Any) -> None:
    client = make_app(NGAI_RATE_LIMIT="1/minute", NGAI_TRUSTED_PROXIES="1").test_client()

    def post(forwarded_for: str) -> int:
        headers = {"X-Forwarded-For": forwarded_for}
        return client.post("/prepare", json=HELLO, headers=headers).status_code

    assert [post("203.0.113.1"), post("203.0.113.2"), post("203.0.113.1")] == [200, 200, 429]
    # without a trusted proxy the header is ignored: one client, the socket's address
    untrusting = make_app(NGAI_RATE_LIMIT="1/minute").test_client()
    statuses = [
        untrusting.post("/prepare", json=HELLO, headers={"X-Forwarded-For": ip}).status_code
        for ip in ("203.0.113.1", "203.0.113.2")
    ]
    assert statuses == [200, 429]


def test_rate_limit_keys_on_token(make_app: t.Any) -> None:
    client = make_app(NGAI_RATE_LIMIT="1/hour", NGAI_API_TOKENS="a,b").test_client()

    def post(token: str) -> int:
        return client.post(
            "/prepare", json=HELLO, headers={"Authorization": f"Bearer {token}"}
        ).status_code

    assert [post("a"), post("a"), post("b")] == [200, 429, 200]


def test_max_sessions(make_app: t.Any, clock: t.Any) -> None:
    client = make_app(NGAI_MAX_SESSIONS="2", NGAI_SESSION_TTL="60").test_client()
    sids = [client.post("/prepare", json=HELLO).get_json()["sessionId"] for _ in range(2)]
    full = client.post("/prepare", json=HELLO)
    error = error_of(full, 503, "capacity_exceeded")
    assert error["retryable"] is True and full.headers["Retry-After"] == str(error["retryAfter"])
    client.get(f"/stream/{sids[0]}").get_data()  # finished sessions no longer count
    assert client.post("/prepare", json=HELLO).status_code == 200
    clock.advance(60)  # nor do expired ones
    assert client.post("/prepare", json=HELLO).status_code == 200


def test_max_streams_refusal_keeps_the_last_event_id(make_app: t.Any) -> None:
    app = make_app(NGAI_MAX_STREAMS="1")
    client = app.test_client()
    sid = client.post("/prepare", json=HELLO).get_json()["sessionId"]
    app.extensions["ngai_chat"].relay.open_streams = 1  # one stream already open
    for headers, expected_id in (({}, "0"), ({"Last-Event-ID": "3"}, "3")):
        response = client.get(f"/stream/{sid}", headers=headers)
        frames = parse(response.get_data(as_text=True))
        [event] = events(frames)
        assert event.name == "error" and event.id == expected_id
        assert event.json["code"] == "capacity_exceeded" and event.json["retryable"] is True
        assert event.json["retryAfter"] >= 1
    app.extensions["ngai_chat"].relay.open_streams = 0
    # refused streams did not touch the session: it streams in full afterwards
    evs = events(parse(client.get(f"/stream/{sid}").get_data(as_text=True)))
    assert evs[0].id == "1" and evs[-1].name == "done"


def test_metrics_off_is_not_found(client: t.Any) -> None:
    error_of(client.get("/metrics"), 404, "not_found")


def test_metrics(make_app: t.Any) -> None:
    client = make_app(NGAI_METRICS="1").test_client()
    sid = client.post("/prepare", json=HELLO).get_json()["sessionId"]
    with client.get(f"/stream/{sid}") as stream:  # closing it is what a server does
        stream.get_data()
    client.post("/prepare", data="x")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.get_data(as_text=True)
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["ngai_sessions_created_total"] == 1
    assert samples['ngai_generations_total{outcome="done"}'] == 1
    assert samples['ngai_events_total{event="chunk"}'] == 4
    assert samples['ngai_requests_rejected_total{code="unsupported_media_type"}'] == 1
    assert (
        samples["ngai_streams_open"] == 0
        and samples[
            "gen_ai_client_operation_time_to_first_chunk_seconds_count"
            '{gen_ai_operation_name="chat",gen_ai_provider_name="openrouter"}'
        ]
        == 1
    )
    for name in ("ngai_sessions_live", "ngai_generations_running", "ngai_streams_total"):
        assert f"# TYPE {name} " in text


def test_openapi_document(client: t.Any) -> None:
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    assert {"/prepare", "/stream/{sessionId}", "/models", "/health"} <= set(doc["paths"])
    stream = doc["paths"]["/stream/{sessionId}"]
    assert {"get", "delete"} <= set(stream)
    codes = doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"]
    assert "session_not_found" in codes and "upstream_interrupted" in codes
    assert {"ChunkEvent", "DoneEvent", "ErrorEvent"} <= set(doc["components"]["schemas"])


def test_openapi_paths_carry_the_mount_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask

    from ngai_chat import chat_blueprint

    monkeypatch.setenv("NGAI_DEMO", "1")
    host = Flask("host")
    host.register_blueprint(chat_blueprint, url_prefix="/api/chat")
    doc = host.test_client().get("/api/chat/openapi.json").get_json()
    assert "/api/chat/prepare" in doc["paths"] and "/api/chat/stream/{sessionId}" in doc["paths"]


# --- over real processes ----------------------------------------------------------------


def boot_failure(env: dict[str, str], **kwargs: t.Any) -> str:
    app = LiveApp(env, **kwargs)
    try:
        with pytest.raises(AssertionError, match="gunicorn exited early"):
            app.start(timeout=20)
        return app.log_text()
    finally:
        app.close()


@pytest.mark.live
def test_missing_key_stops_startup_with_the_fix() -> None:
    log = boot_failure({})
    assert "Missing OPENROUTER_API_KEY" in log and "NGAI_DEMO=1" in log
    assert "Traceback" not in log


@pytest.mark.live
def test_malformed_setting_stops_startup_naming_it() -> None:
    log = boot_failure({"NGAI_DEMO": "1", "NGAI_SESSION_TTL": "abc"})
    assert "NGAI_SESSION_TTL" in log and "'abc'" in log and "Traceback" not in log


@pytest.mark.live
def test_several_workers_need_redis() -> None:
    log = boot_failure({"NGAI_DEMO": "1"}, workers=2)
    assert "REDIS_URL" in log and "one worker" in log


@pytest.mark.live
def test_json_logs_are_one_object_per_line(fake: fu.FakeUpstream) -> None:
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_LOG_FORMAT": "json",
    }
    with LiveApp(env) as live:
        model = "test/json-logs"
        fake.script(model, [fu.error_response(401, f"bad key {API_KEY}")])
        sid = requests.post(live.url("/prepare"), json={**HELLO, "model": model}, timeout=5).json()[
            "sessionId"
        ]
        with StreamReader(live.url(f"/stream/{sid}")) as reader:
            reader.read_all()
        live.stop()
        lines = [line for line in live.log_text().splitlines() if line.strip()]
    assert len(lines) >= 5
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "message"} <= set(entry) for entry in parsed)
    messages = " ".join(entry["message"] for entry in parsed)
    assert "Booting worker" in messages  # gunicorn's own lines too
    assert "upstream_unauthorized" in messages and API_KEY not in messages


@pytest.mark.live
def test_sigterm_drains_open_streams_with_a_terminal_event(fake: fu.FakeUpstream) -> None:
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "GUNICORN_GRACEFUL_TIMEOUT": "8",
        "NGAI_UPSTREAM_READ_TIMEOUT": "60",
    }
    model = "test/drain"
    fake.script(model, fu.text_chunks(["tok "] * 400, interval=0.1))
    with LiveApp(env) as live:
        sid = requests.post(live.url("/prepare"), json={**HELLO, "model": model}, timeout=5).json()[
            "sessionId"
        ]
        with StreamReader(live.url(f"/stream/{sid}"), timeout=20) as reader:
            reader.until(lambda f: f.name == "chunk")
            assert live.proc is not None
            sent_at = time.monotonic()
            live.proc.send_signal(signal.SIGTERM)
            frames = reader.read_all()
            ended_after = time.monotonic() - sent_at
        evs = events(frames)
        assert evs[-1].name == "error" and evs[-1].json["code"] == "upstream_interrupted"
        assert [e.name for e in evs].count("error") == 1
        assert evs[-1].json["retryable"] is True
        assert 3 <= ended_after < 8  # ended before gunicorn's graceful timeout cut it
        assert live.proc.wait(10) == 0
        upstream = fake.wait_for_request(model)
        assert upstream.closed

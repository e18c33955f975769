"""Hostile clients (issue 8), against the app served by gunicorn on 127.0.0.1.

One test per row of the issue's table that is not on the streaming hot path:
a flood of ``/prepare`` from one client, half-sent requests and readers that do
not read, odd last event ids, odd paths under ``/stream/``, ``1e999``, ``HEAD``,
token guessing, and the ``RateLimit-*`` headers with two windows; the per-client
limits again over Redis. Every wait is bounded; every socket is the test's own.
"""

from __future__ import annotations

import socket
import threading
import time
import typing as t
import uuid

import pytest
import requests

from bench import fake_upstream as fu
from bench.live import LiveApp
from bench.live import connect
from bench.live import vm_rss_kib
from bench.live import wait_until
from tests.conftest import API_KEY
from tests.support.sse_parse import StreamReader
from tests.support.sse_parse import events
from tests.support.sse_parse import parse

pytestmark = pytest.mark.live

HELLO = {"messages": [{"role": "user", "content": "Hello"}]}
#: NGAI_CLIENT_TIMEOUT of the timeout app, in seconds
CLIENT_TIMEOUT = 2.0
#: seconds until a slow sender is closed: the headers within the timeout; the
#: body within it too (answered 400), then what is left of it once more. Both
#: below gunicorn's 5 s keep-alive timer, which would otherwise close them.
CLOSE_WITHIN = {"headers": CLIENT_TIMEOUT + 1.5, "body": 2 * CLIENT_TIMEOUT + 0.9}


def prepare(live: LiveApp, body: t.Any = None, **kwargs: t.Any) -> requests.Response:
    return requests.post(live.url("/prepare"), json=body or HELLO, timeout=5, **kwargs)


def session_id(live: LiveApp, model: str, **kwargs: t.Any) -> str:
    response = prepare(live, {**HELLO, "model": model}, **kwargs)
    assert response.status_code == 200, response.text
    return str(response.json()["sessionId"])


def health(live: LiveApp) -> dict[str, t.Any]:
    response = requests.get(live.url("/health"), timeout=5)
    assert response.status_code == 200
    return dict(response.json())


def closed_by_server(sock: socket.socket, within: float) -> bytes:
    """Read until the server closes the connection; fail after ``within`` seconds.

    :return: whatever the server sent before closing.
    """
    deadline = time.monotonic() + within
    received = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the server kept the connection open; got {received[:200]!r}")
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data


def timed_health(live: LiveApp) -> float:
    started = time.monotonic()
    health(live)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def live(fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    """The app with a short client timeout and heartbeat, over the fake upstream."""
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_CLIENT_TIMEOUT": str(CLIENT_TIMEOUT),
        "NGAI_HEARTBEAT_INTERVAL": "0.5",
        "NGAI_ABANDON_TIMEOUT": "0",
        "NGAI_MAX_EVENTS": "100000",
    }
    with LiveApp(env) as app:
        yield app


# --- slow clients: NGAI_CLIENT_TIMEOUT --------------------------------------------


def test_half_sent_requests_are_closed_after_the_client_timeout(live: LiveApp) -> None:
    body_head = (
        b"POST /prepare HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b'Content-Length: 400\r\n\r\n{"messages": ['
    )
    header_head = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: "
    socks: list[tuple[str, socket.socket]] = []
    try:
        for index in range(60):
            sock = connect(live)
            sock.sendall(body_head if index % 2 else header_head)
            socks.append(("body" if index % 2 else "headers", sock))
        opened = time.monotonic()
        # every one of them is held by the worker, yet it answers others at once
        assert max(timed_health(live) for _ in range(5)) < 1.0
        for kind, sock in socks:
            received = closed_by_server(sock, within=CLOSE_WITHIN[kind])
            if kind == "body":  # the app answered with a clear error before closing
                assert b" 400 " in received.split(b"\r\n", 1)[0], received[:300]
                assert b"NGAI_CLIENT_TIMEOUT" in received
            else:
                assert received == b""
            assert time.monotonic() - opened < CLOSE_WITHIN[kind]
        assert time.monotonic() - opened >= CLIENT_TIMEOUT * 0.8
    finally:
        for _, sock in socks:
            sock.close()
    assert "Traceback" not in live.log_text()


def test_trickled_headers_and_body_meet_the_deadline_too(live: LiveApp) -> None:
    """A byte every 0.3 s passes every single socket wait, but not the deadline."""
    parts = {
        "headers": b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100,
        "body": (
            b"POST /prepare HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n" + b" " * 100
        ),
    }
    for kind, data in parts.items():
        sock = connect(live)
        head, _, rest = data.partition(b"X-Slow: " if kind == "headers" else b"\r\n\r\n")
        sock.sendall(head + (b"X-Slow: " if kind == "headers" else b"\r\n\r\n"))
        started = time.monotonic()
        closed = threading.Event()

        def trickle(
            sock: socket.socket = sock, rest: bytes = rest, closed: threading.Event = closed
        ) -> None:
            for byte in rest:
                if closed.wait(0.3):
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        try:
            received = closed_by_server(sock, within=CLOSE_WITHIN[kind])
        finally:
            closed.set()
            sender.join(5)
            sock.close()
        assert time.monotonic() - started < CLOSE_WITHIN[kind]
        assert kind == "headers" or b" 400 " in received.split(b"\r\n", 1)[0]


def test_a_reader_that_stops_reading_is_dropped_and_cleaned_up(
    live: LiveApp, fake: fu.FakeUpstream
) -> None:
    model = f"test/big-{uuid.uuid4().hex[:8]}"
    piece = "0123456789abcdef" * 4096  # 64 KiB of text per chunk
    # a 6 MiB answer: 12 MiB of event data (content twice), under NGAI_MAX_LOG_BYTES
    fake.script(model, fu.text_chunks([piece] * 100))
    sid = session_id(live, model)
    with StreamReader(live.url(f"/stream/{sid}"), timeout=30) as reader:
        frames = reader.read_all()
    assert events(frames)[-1].name == "done"  # a reader that reads gets it all
    [worker] = live.worker_pids()
    rss_before = vm_rss_kib(worker)

    sock = connect(live, rcvbuf=4096)
    sock.sendall(f"GET /stream/{sid} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    stop = threading.Event()
    got = bytearray()

    def read_a_byte_a_second() -> None:
        while not stop.wait(1.0):
            try:
                data = sock.recv(1)
            except OSError:
                return
            if not data:
                return
            got.extend(data)

    slow = threading.Thread(target=read_a_byte_a_second, daemon=True)
    slow.start()
    try:
        wait_until(lambda: health(live)["streams"] == 1, 5, "the slow stream to open")
        opened = time.monotonic()
        # the stream's own cleanup (call_on_close) ran: it no longer counts
        wait_until(
            lambda: health(live)["streams"] == 0, CLIENT_TIMEOUT + 10, "the slow reader's drop"
        )
        dropped_after = time.monotonic() - opened
        assert CLIENT_TIMEOUT * 0.8 <= dropped_after < CLIENT_TIMEOUT + 10
        assert timed_health(live) < 1.0
    finally:
        stop.set()
        slow.join(5)
    # what was in flight arrives, then the server's close: the answer was cut short
    rest = closed_by_server(sock, within=10)
    sock.close()
    total = len(got) + len(rest)
    assert total < 10 * 1024 * 1024
    assert b"event: done" not in rest
    assert vm_rss_kib(worker) - rss_before < 64 * 1024  # nothing held for the gone reader
    assert "Traceback" not in live.log_text()
    assert "NGAI_CLIENT_TIMEOUT" in live.log_text()


def test_long_quiet_streams_are_not_cut(live: LiveApp, fake: fu.FakeUpstream) -> None:
    """Silence longer than the client timeout, with heartbeats, is not a stalled client."""
    model = f"test/quiet-{uuid.uuid4().hex[:8]}"
    fake.script(model, [fu.Pause(2.5 * CLIENT_TIMEOUT), *fu.text_chunks(["late ", "answer"])])
    sid = session_id(live, model)
    started = time.monotonic()
    with StreamReader(live.url(f"/stream/{sid}"), timeout=30) as reader:
        frames = reader.read_all()
    assert time.monotonic() - started >= 2.5 * CLIENT_TIMEOUT
    assert sum(frame.comment == "keep-alive" for frame in frames) >= 3
    evs = events(frames)
    assert evs[-1].name == "done" and "".join(e.json["content"] for e in evs[:-1]) == (
        "late answer"
    )


# --- input rules (SPEC §4) --------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "query"),
    [
        (None, "%C2%B2"),  # ²
        (None, "%E2%91%A0"),  # ①
        (b"\xb2", None),  # a raw 0xB2 byte in the header
        ("\u0661\u0662".encode(), None),  # Arabic-Indic 12, sent as UTF-8 bytes
        (None, "%F0%9D%9F%9A"),  # mathematical double-struck 2
        (None, "%D9%A1%D9%A2"),  # Arabic-Indic 12
        ("9" * 12, None),  # too long
        ("3x", None),
    ],
)
def test_odd_last_event_ids_count_as_zero(
    live: LiveApp, fake: fu.FakeUpstream, header: bytes | str | None, query: str | None
) -> None:
    model = f"test/ids-{uuid.uuid4().hex[:8]}"
    fake.script(model, fu.text_chunks(["a", "b"]))
    sid = session_id(live, model)
    # an unknown session with a last event id (0): 204, not a 500
    url = live.url(f"/stream/{uuid.uuid4()}") + (f"?lastEventId={query}" if query else "")
    headers = {"Last-Event-ID": header} if header is not None else {}
    gone = requests.get(url, headers=headers, timeout=5)
    assert gone.status_code == 204
    # a real session: the whole log from event 1
    url = live.url(f"/stream/{sid}") + (f"?lastEventId={query}" if query else "")
    response = requests.get(url, headers=headers, timeout=10)
    assert response.status_code == 200
    evs = events(parse(response.text))
    assert evs[0].id == "1" and evs[-1].name == "done"


@pytest.mark.parametrize(
    "path",
    ["abc%0D%0A", "abc%0A", "a/b", "a/b/c/", "%2F", "/x", "%00", "%ff", "\u00e9t\u00e9", ""],
)
def test_no_routing_404_under_stream(live: LiveApp, path: str) -> None:
    response = requests.get(live.url(f"/stream/{path}"), timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    [event] = events(parse(response.text))
    assert event.name == "error" and event.json["code"] == "session_not_found"
    assert event.id == "1"
    deleted = requests.delete(live.url(f"/stream/{path}"), timeout=5)
    assert deleted.status_code == 404 and deleted.json()["error"]["code"] == "session_not_found"


def test_no_routing_404_under_a_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask

    from ngai_chat import chat_blueprint

    monkeypatch.setenv("NGAI_DEMO", "1")
    host = Flask("host")
    host.register_blueprint(chat_blueprint, url_prefix="/api/chat")
    client = host.test_client()
    for path in ("abc%0D%0A", "a/b", ""):
        body = client.get(f"/api/chat/stream/{path}").get_data(as_text=True)
        assert events(parse(body))[0].json["code"] == "session_not_found"


def test_non_finite_numbers_are_refused_naming_the_field(live: LiveApp) -> None:
    raw = b'{"messages": [{"role": "user", "content": "Hi"}], "logit_bias": {"1": 1e999}}'
    response = requests.post(
        live.url("/prepare"),
        data=raw,
        headers={"Content-Type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["field"] == "logit_bias.1"
    assert "logit_bias.1" in error["message"]


def test_head_starts_nothing(live: LiveApp, fake: fu.FakeUpstream) -> None:
    model = f"test/head-{uuid.uuid4().hex[:8]}"
    fake.script(model, fu.text_chunks(["only ", "once"]))
    sid = session_id(live, model)
    for _ in range(3):
        head = requests.head(live.url(f"/stream/{sid}"), timeout=5)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Type"].startswith("text/event-stream")
        assert head.headers["Cache-Control"] == "no-cache, no-transform"
    assert health(live)["streams"] == 0
    assert not [r for r in fake.requests if r.model == model]  # nothing billed
    # the session is untouched: the first GET starts the one upstream request
    response = requests.get(live.url(f"/stream/{sid}"), timeout=10)
    evs = events(parse(response.text))
    assert evs[0].id == "1" and evs[-1].name == "done"
    assert len([r for r in fake.requests if r.model == model]) == 1
    assert (
        requests.head(live.url(f"/stream/{sid}"), headers={"Last-Event-ID": "99"}).status_code
        == 204
    )
    assert requests.head(live.url(f"/stream/{uuid.uuid4()}"), timeout=5).status_code == 200


# --- per client: rate limit and session cap, on memory and on Redis ---------------------


def on_store(request: pytest.FixtureRequest, env: dict[str, str]) -> dict[str, str]:
    """``env`` for the store the fixture is parametrized with (Redis: a fresh prefix)."""
    if request.param == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
        env["NGAI_REDIS_KEY_PREFIX"] = f"ngai-test-{uuid.uuid4().hex}:"
    return env


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def guarded(request: pytest.FixtureRequest) -> t.Iterator[LiveApp]:
    """Demo mode with tokens, a two-window rate limit, and a small session cap."""
    env = {
        "NGAI_DEMO": "1",
        "NGAI_API_TOKENS": "tok-good,tok-other",
        "NGAI_RATE_LIMIT": "3/2 seconds;5/minute",
        "NGAI_TRUSTED_PROXIES": "1",
    }
    with LiveApp(on_store(request, env)) as app:
        yield app


def test_wrong_tokens_are_rate_limited(guarded: LiveApp) -> None:
    guesser = {"X-Forwarded-For": "203.0.113.50"}
    statuses = []
    for index in range(8):
        headers = {**guesser, "Authorization": f"Bearer guess-{index}"}
        response = prepare(guarded, headers=headers)
        statuses.append(response.status_code)
        assert "RateLimit-Remaining" in response.headers
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3:] == [429] * 5  # guessing costs calls like any other
    limited = prepare(guarded, headers={**guesser, "Authorization": "Bearer guess-x"})
    error = limited.json()["error"]
    assert error["code"] == "rate_limited" and error["retryable"] is True
    assert int(limited.headers["Retry-After"]) == error["retryAfter"] >= 1
    # the right token is its own client: not limited by the guesser's calls
    ok = prepare(guarded, headers={**guesser, "Authorization": "Bearer tok-good"})
    assert ok.status_code == 200


def test_rate_limit_headers_describe_the_window_with_fewest_calls_left(guarded: LiveApp) -> None:
    who = {"X-Forwarded-For": "203.0.113.60", "Authorization": "Bearer tok-other"}

    def call() -> requests.Response:
        return prepare(guarded, headers={**who, "X-Forwarded-For": "203.0.113.60"})

    # a client of its own: the token is the key, so use the one nobody else used
    first = call()
    assert first.status_code == 200
    assert first.headers["RateLimit-Limit"] == "3"  # 2 left of 3 per 2 s, 4 of 5 per minute
    assert first.headers["RateLimit-Remaining"] == "2"
    assert 0 < int(first.headers["RateLimit-Reset"]) <= 2
    call(), call()
    refused = call()  # the 2 s window is full (a refused call counts in the minute one)
    refused_at = time.monotonic()
    assert refused.status_code == 429
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= 2 and refused.headers["RateLimit-Remaining"] == "0"
    assert "3/2 seconds" in refused.json()["error"]["message"]
    # once the wait it stated has passed, the short window has room again ...
    wait_until(lambda: time.monotonic() >= refused_at + wait, wait + 1, "the stated wait")
    assert call().status_code == 200
    # ... and the minute window is the one with the fewest calls left
    last = call()
    assert last.status_code == 429 and "5/minute" in last.json()["error"]["message"]
    assert last.headers["RateLimit-Limit"] == "5" and last.headers["RateLimit-Remaining"] == "0"
    assert 50 <= int(last.headers["RateLimit-Reset"]) <= 60
    assert 50 <= int(last.headers["Retry-After"]) <= 60


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def capped(request: pytest.FixtureRequest, fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_MAX_SESSIONS": "20",
        "NGAI_MAX_SESSIONS_PER_CLIENT": "3",
        "NGAI_SESSION_TTL": "120",
        "NGAI_TRUSTED_PROXIES": "1",
        "NGAI_ABANDON_TIMEOUT": "0",
        # heartbeats are how a gone reader is noticed
        "NGAI_HEARTBEAT_INTERVAL": "0.5",
    }
    with LiveApp(on_store(request, env)) as app:
        yield app


def test_one_client_cannot_exhaust_the_sessions(capped: LiveApp) -> None:
    flooder = {"X-Forwarded-For": "198.51.100.7"}
    started = time.monotonic()
    statuses = [prepare(capped, headers=flooder).status_code for _ in range(300)]
    flood_seconds = time.monotonic() - started
    assert statuses[:3] == [200] * 3 and set(statuses[3:]) == {429}
    refused = prepare(capped, headers=flooder)
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and "NGAI_MAX_SESSIONS_PER_CLIENT" in error["message"]
    # the real wait: until its oldest pending session expires (the 120 s TTL)
    assert 100 <= error["retryAfter"] <= 120 and f"{error['retryAfter']} s" in error["message"]
    assert refused.headers["Retry-After"] == str(error["retryAfter"])
    # everybody else still gets sessions, and the server counts only the three
    for other in ("198.51.100.8", "198.51.100.9"):
        assert prepare(capped, headers={"X-Forwarded-For": other}).status_code == 200
    assert health(capped)["sessions"] == 5
    assert flood_seconds < 30


def test_finished_sessions_free_the_client_and_running_ones_say_so(
    capped: LiveApp, fake: fu.FakeUpstream
) -> None:
    client = {"X-Forwarded-For": "192.0.2.77"}
    quick = f"test/quick-{uuid.uuid4().hex[:8]}"
    slow = f"test/slow-{uuid.uuid4().hex[:8]}"
    fake.script(quick, fu.text_chunks(["done"]))
    fake.script(slow, [fu.Pause(30), *fu.text_chunks(["late"])])
    first = session_id(capped, quick, headers=client)
    response = requests.get(capped.url(f"/stream/{first}"), timeout=10)
    assert events(parse(response.text))[-1].name == "done"  # finished: no longer held
    running = [session_id(capped, slow, headers=client) for _ in range(3)]
    readers = [StreamReader(capped.url(f"/stream/{sid}"), timeout=30) for sid in running]
    try:
        for reader in readers:
            reader.next()  # the preamble: the generation is claimed and running
        wait_until(
            lambda: len([r for r in fake.requests if r.model == slow]) == 3, 10, "3 generations"
        )
        refused = prepare(capped, headers=client)
        error = refused.json()["error"]
        assert refused.status_code == 429 and "streaming" in error["message"]
        assert error["retryAfter"] == 5 and f"{error['retryAfter']} s" in error["message"]
    finally:
        for reader in readers:
            reader.close()
    # readers gone, abandon timeout 0: the generations end, and free the client
    wait_until(lambda: prepare(capped, headers=client).status_code == 200, 15, "a freed session")


def test_the_allowlist_governs_online_variants(make_app: t.Any) -> None:
    """``:online`` (web search) is a model id like any other for the allowlist."""
    client = make_app(NGAI_MODEL_ALLOWLIST="*:free,openai/gpt-4o-mini").test_client()

    def status(model: str, **extra: t.Any) -> int:
        return int(client.post("/prepare", json={**HELLO, "model": model, **extra}).status_code)

    assert status("openai/gpt-4o-mini") == 200
    assert status("openai/gpt-4o-mini:online") == 403
    assert status("openai/gpt-4o:online") == 403
    assert status("openai/gpt-4o-mini", plugins=[{"id": "web"}], session_id="conv-7") == 200
    assert status("a/b:free", models=["openai/gpt-4o:online"]) == 403

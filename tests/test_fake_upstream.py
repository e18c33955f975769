"""The fake OpenRouter of :mod:`bench.fake_upstream`, tested over real sockets.

The relay's timing tests trust it, so it is held to exact bytes, exact writes and
prompt disconnect detection here, with plain ``requests`` and raw sockets.
"""

from __future__ import annotations

import base64
import json
import socket
import time
import typing as t
from pathlib import Path

import pytest
import requests

from bench.fake_upstream import Abort
from bench.fake_upstream import Begin
from bench.fake_upstream import Comment
from bench.fake_upstream import Done
from bench.fake_upstream import FakeUpstream
from bench.fake_upstream import Hang
from bench.fake_upstream import Pause
from bench.fake_upstream import Raw
from bench.fake_upstream import Recorded
from bench.fake_upstream import Trickle
from bench.fake_upstream import data_url
from bench.fake_upstream import error_chunk
from bench.fake_upstream import error_response
from bench.fake_upstream import fixture_path
from bench.fake_upstream import fixtures_dir
from bench.fake_upstream import html_error
from bench.fake_upstream import image_chunk
from bench.fake_upstream import text_chunks
from bench.fake_upstream import tool_call_chunks

REPO = Path(__file__).resolve().parents[1]
SSE_FIXTURES = sorted(path.stem for path in fixtures_dir().glob("*.sse"))


@pytest.fixture
def fake() -> t.Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def post_chat(fake: FakeUpstream, model: str, **body: t.Any) -> requests.Response:
    """A streamed chat request; use the response in a ``with`` block."""
    return requests.post(
        f"{fake.base_url}/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], **body},
        stream=True,
        timeout=5,
    )


def open_raw(fake: FakeUpstream, model: str) -> socket.socket:
    """A raw socket that has sent a chat request for ``model``."""
    body = json.dumps({"model": model, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", fake.port), timeout=5)
    sock.sendall(
        b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    return sock


def recv_all(sock: socket.socket) -> list[bytes]:
    """Every ``recv()`` result until EOF, one item per read."""
    reads = []
    while data := sock.recv(65536):
        reads.append(data)
    return reads


def recv_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        data = sock.recv(65536)
        assert data, f"EOF before {marker!r}; got {received!r}"
        received += data
    return received


def sse_data(body: bytes) -> list[t.Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded except ``[DONE]``."""
    events = []
    for line in body.decode().splitlines():
        if line.startswith("data: "):
            payload = line.removeprefix("data: ")
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_script_round_trip_exact_bytes_one_write_per_step(fake: FakeUpstream) -> None:
    fake.script(
        "test/round-trip",
        [Comment(), {"choices": [{"delta": {"content": "Grüß 👋"}}]}, Raw(b": x\n\n"), Done()],
    )

    with post_chat(fake, "test/round-trip") as response:
        pieces = list(response.iter_content(chunk_size=None))
        headers = response.headers

    assert headers["Content-Type"] == "text/event-stream"
    assert headers["Transfer-Encoding"] == "chunked"
    assert pieces == [
        b": OPENROUTER PROCESSING\n\n",
        'data: {"choices":[{"delta":{"content":"Grüß 👋"}}]}\n\n'.encode(),
        b": x\n\n",
        b"data: [DONE]\n\n",
    ]
    (request,) = fake.chat_requests("test/round-trip")
    assert request.method == "POST"
    assert request.path == "/api/v1/chat/completions"
    assert request.json["messages"] == [{"role": "user", "content": "hi"}]
    fake.wait_for(lambda: request.closed, message="the server closing")
    assert not request.client_closed
    assert request.started_at <= t.cast(float, request.closed_at)


def test_text_chunks_are_shaped_like_openrouter(fake: FakeUpstream) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    fake.script("test/text", text_chunks(["Hel", "lo"], model="test/text", usage=usage))

    with post_chat(fake, "test/text") as response:
        events = sse_data(response.content)

    role, *content, finish, usage_event, done = events
    assert role["object"] == "chat.completion.chunk"
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [event["choices"][0]["delta"]["content"] for event in content] == ["Hel", "lo"]
    assert {event["id"] for event in events[:-1]} == {role["id"]}
    assert {event["model"] for event in events[:-1]} == {"test/text"}
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage_event["choices"] == []
    assert usage_event["usage"] == usage
    assert done == "[DONE]"


def test_error_chunk_matches_the_documented_midstream_error() -> None:
    documented = json.loads(
        fixture_path("11-midstream-error-DOCS-EXAMPLE").read_text().removeprefix("data: ")
    )
    made = error_chunk(429, "Rate limit exceeded", metadata={"error_type": "rate_limit_exceeded"})

    assert made["error"] == documented["error"]
    assert made["choices"][0]["finish_reason"] == "error"
    assert made.keys() == documented.keys()


@pytest.mark.parametrize("name", SSE_FIXTURES)
def test_fixture_replay_equals_the_file(fake: FakeUpstream, name: str) -> None:
    with post_chat(fake, f"fixture:{name}") as response:
        body = response.content

    assert response.status_code == 200
    assert body == fixture_path(name).read_bytes()


@pytest.mark.parametrize(
    ("name", "status"),
    [("07-error-401-no-auth-credentials", 401), ("09-error-402-insufficient-credits", 402)],
)
def test_json_fixture_is_an_error_response(fake: FakeUpstream, name: str, status: int) -> None:
    with post_chat(fake, f"fixture:{name}") as response:
        body = response.content

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert body == fixture_path(name, ".json").read_bytes()


def test_disconnect_during_pause_is_seen_at_once(fake: FakeUpstream) -> None:
    fake.script("test/pause", [Comment(), Pause(30), Done()])

    with open_raw(fake, "test/pause") as sock:
        recv_until(sock, b"OPENROUTER PROCESSING")
        request = fake.wait_for_request("test/pause")
        assert not request.closed
    closed_by_client = time.monotonic()

    seen = fake.wait_closed(request, timeout=2)
    assert request.client_closed
    assert seen - closed_by_client < 0.5


def test_disconnect_before_any_byte_is_seen(fake: FakeUpstream) -> None:
    fake.script("test/hang", [Hang()])

    with open_raw(fake, "test/hang"):
        request = fake.wait_for_request("test/hang")
    closed_by_client = time.monotonic()

    assert fake.wait_closed(request, timeout=2) - closed_by_client < 0.5


def test_wait_closed_fails_when_the_server_ended_the_response(fake: FakeUpstream) -> None:
    fake.script("test/short", [Done()])
    with post_chat(fake, "test/short") as response:
        assert response.content == b"data: [DONE]\n\n"
    request = fake.wait_for_request("test/short")

    with pytest.raises(AssertionError, match="ended before the client closed"):
        fake.wait_closed(request, timeout=2)


def test_wait_for_times_out_with_a_message(fake: FakeUpstream) -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0\.1 s: nothing"):
        fake.wait_for(lambda: False, timeout=0.1, message="nothing")


def test_error_status_with_openrouter_json_body(fake: FakeUpstream) -> None:
    fake.script("test/limited", [Pause(0.01), error_response(429, headers={"Retry-After": "7"})])
    fake.script(
        "test/credits",
        [error_response(402, "Need credits", metadata={"provider_name": None})],
    )

    with post_chat(fake, "test/limited") as limited, post_chat(fake, "test/credits") as credits:
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "7"
        assert limited.headers["Content-Type"] == "application/json"
        assert limited.json() == {
            "error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min."}
        }
        assert credits.status_code == 402
        assert credits.json()["error"] == {
            "code": 402,
            "message": "Need credits",
            "metadata": {"provider_name": None},
        }


def test_html_error_page(fake: FakeUpstream) -> None:
    fake.script("test/html", [html_error(502)])

    with post_chat(fake, "test/html") as response:
        assert response.status_code == 502
        assert response.headers["Content-Type"].startswith("text/html")
        assert "<title>502 Bad Gateway</title>" in response.text


def test_unknown_model_is_a_400(fake: FakeUpstream) -> None:
    with post_chat(fake, "nobody/nothing") as response:
        assert response.status_code == 400
        assert response.json() == {
            "error": {"code": 400, "message": "nobody/nothing is not a valid model ID"}
        }


def test_trickle_sends_each_byte_in_its_own_write(fake: FakeUpstream) -> None:
    data = "é€👋".encode()
    fake.script("test/trickle", [Trickle(data, interval=0.001)])

    with post_chat(fake, "test/trickle") as response:
        pieces = list(response.iter_content(chunk_size=None))

    assert pieces == [bytes([byte]) for byte in data]


def test_begin_sends_the_head_before_any_body(fake: FakeUpstream) -> None:
    fake.script("test/begin", [Begin({"X-Extra": "1"}), Hang()])

    with open_raw(fake, "test/begin") as sock:
        head = recv_until(sock, b"\r\n\r\n")

    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"X-Extra: 1\r\n" in head and b"Transfer-Encoding: chunked\r\n" in head


def test_abort_ends_the_body_unfinished(fake: FakeUpstream) -> None:
    fake.script("test/abort", [Comment(), Abort()])

    with post_chat(fake, "test/abort") as response:
        assert response.status_code == 200
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            list(response.iter_content(chunk_size=None))


def test_abort_with_reset(fake: FakeUpstream) -> None:
    fake.script("test/reset", [Comment(), Pause(0.05), Abort(reset=True)])

    with open_raw(fake, "test/reset") as sock, pytest.raises(ConnectionResetError):
        recv_all(sock)


def test_models_list(fake: FakeUpstream) -> None:
    with requests.get(f"{fake.base_url}/models", timeout=5) as response:
        models = {model["id"]: model for model in response.json()["data"]}
    assert response.status_code == 200
    assert models["mistralai/mistral-7b-instruct:free"]["pricing"]["prompt"] == "0"
    assert models["openai/gpt-4o"]["pricing"]["completion"] != "0"
    assert models["openrouter/auto"]["pricing"]["prompt"] == "-1"

    fake.models = {"data": [{"id": "only/one"}]}
    with requests.get(f"{fake.base_url}/models", timeout=5) as response:
        assert response.json() == {"data": [{"id": "only/one"}]}

    assert [request.path for request in fake.requests] == ["/api/v1/models"] * 2


def test_request_headers_are_recorded(fake: FakeUpstream) -> None:
    headers = {
        "Authorization": "Bearer sk-or-test",
        "HTTP-Referer": "https://example.org",
        "X-Title": "NGAI Chatbot Backend",
        "X-OpenRouter-Title": "NGAI Chatbot Backend",
    }
    with requests.post(
        f"{fake.base_url}/chat/completions", json={"model": "echo"}, headers=headers, timeout=5
    ) as response:
        assert response.status_code == 200

    request = fake.wait_for_request("echo")
    assert request.headers["authorization"] == "Bearer sk-or-test"
    assert request.headers["http-referer"] == "https://example.org"
    assert request.headers["X-TITLE"] == "NGAI Chatbot Backend"
    assert request.headers["x-openrouter-title"] == "NGAI Chatbot Backend"
    assert "X-Missing" not in request.headers


@pytest.mark.parametrize(
    "content",
    [
        "  Hello,  how are\nyou? ",
        [{"type": "text", "text": "Grüß "}, {"type": "text", "text": "Gott"}],
    ],
)
def test_echo_streams_the_last_user_message_word_by_word(
    fake: FakeUpstream, content: str | list[dict[str, str]]
) -> None:
    messages = [{"role": "user", "content": "first"}, {"role": "user", "content": content}]

    with post_chat(fake, "echo", messages=messages) as response:
        events = sse_data(response.content)

    text = content if isinstance(content, str) else "Grüß Gott"
    pieces = [event["choices"][0]["delta"]["content"] for event in events[1:-3]]
    assert "".join(pieces) == text
    assert len(pieces) > 1
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["choices"] == []
    assert events[-1] == "[DONE]"


def test_bench_model_streams_n_chunks(fake: FakeUpstream) -> None:
    with post_chat(fake, "bench/5") as response:
        events = sse_data(response.content)

    assert [event["choices"][0]["delta"]["content"] for event in events[1:6]] == [
        "w1 ",
        "w2 ",
        "w3 ",
        "w4 ",
        "w5 ",
    ]
    assert events[-1] == "[DONE]"


def test_callable_script_and_echo_script(fake: FakeUpstream) -> None:
    def shout(request: Recorded) -> list[dict[str, t.Any]]:
        return [{"said": request.json["messages"][-1]["content"].upper()}]

    fake.script("test/shout", shout)
    fake.script("any/model", fake.echo)

    with post_chat(fake, "test/shout") as shouted, post_chat(fake, "any/model") as echoed:
        assert shouted.content == b'data: {"said":"HI"}\n\n'
        assert sse_data(echoed.content)[1]["choices"][0]["delta"]["content"] == "hi"


def test_a_failing_script_answers_500(fake: FakeUpstream) -> None:
    def broken(request: Recorded) -> list[Done]:
        raise RuntimeError("script bug")

    fake.script("test/broken", broken)

    with post_chat(fake, "test/broken") as response:
        assert response.status_code == 500
        assert "script bug" in response.json()["error"]["message"]


def test_stop_ends_open_streams_promptly() -> None:
    fake = FakeUpstream().start()
    fake.script("test/hang", [Comment(), Hang()])
    with open_raw(fake, "test/hang") as sock:
        request = fake.wait_for_request("test/hang")
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 1
        recv_all(sock)

    assert request.closed
    assert not request.client_closed


def test_hundreds_of_concurrent_streams(fake: FakeUpstream) -> None:
    fake.script("test/hang", [Comment(), Hang()])
    socks = []
    try:
        for _ in range(200):
            socks.append(open_raw(fake, "test/hang"))
        fake.wait_for(lambda: len(fake.chat_requests("test/hang")) == 200, timeout=10)
        for sock in socks:
            recv_until(sock, b"OPENROUTER PROCESSING")
    finally:
        for sock in socks:
            sock.close()

    requests_ = fake.chat_requests("test/hang")
    fake.wait_for(lambda: all(request.client_closed for request in requests_), timeout=5)


def test_images_of_several_mb_and_tool_call_fragments(fake: FakeUpstream) -> None:
    # issue 16: what other branches' tests script through the fake
    url = data_url(5_000_000, "image/png", seed=7)
    assert abs(len(url) - 5_000_000) <= 4
    assert base64.b64decode(url.split(",", 1)[1], validate=True)
    calls = tool_call_chunks("f", '{"x": "é"}', index=0, pieces=3, finish=False)
    others = tool_call_chunks("g", "[1, 2]", index=1, call_id="call_b", pieces=2)
    fake.script("test/images", [image_chunk(url), *calls, *others, Done()])

    with post_chat(fake, "test/images") as response:
        events = sse_data(response.content)

    image, *fragments, finish, done = events
    assert image["choices"][0]["delta"]["images"] == [
        {"type": "image_url", "image_url": {"url": url}}
    ]
    deltas = [event["choices"][0]["delta"]["tool_calls"][0] for event in fragments]
    assert deltas[0] == {
        "index": 0,
        "id": "call_fake_0",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    by_index: dict[int, str] = {}
    for delta in deltas:
        by_index[delta["index"]] = by_index.get(delta["index"], "") + delta["function"]["arguments"]
    assert by_index == {0: '{"x": "é"}', 1: "[1, 2]"}
    assert len(deltas) == 2 + 3 + 2
    assert finish["choices"][0]["finish_reason"] == "tool_calls" and done == "[DONE]"

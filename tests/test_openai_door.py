"""The OpenAI-compatible door with the official ``openai`` Python SDK, against the app
served by gunicorn + gevent on 127.0.0.1, relaying from the fake upstream.

Every exception class the SDK raises comes from the status and body this door
answers with; the streams are compared byte for byte with what the upstream sent.
"""

from __future__ import annotations

import http.client
import json
import time
import typing as t
import uuid

import openai
import pytest
import requests
from openai import OpenAI

from bench import fake_upstream as fu
from bench.live import LiveApp
from tests.conftest import API_KEY
from tests.support.sse_parse import events
from tests.support.sse_parse import parse

pytestmark = pytest.mark.live

TOKEN = "tok-openai-door"
HEARTBEAT = 0.5
ALLOWLIST = "test/*,fake/*,openai/*"
RATE_LIMIT = 4


@pytest.fixture(scope="module")
def app(fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_API_TOKENS": f"other-token,{TOKEN}",
        "NGAI_MODEL_ALLOWLIST": ALLOWLIST,
        "NGAI_HEARTBEAT_INTERVAL": str(HEARTBEAT),
        # long: only this door's own rule can close the upstream within a second
        "NGAI_ABANDON_TIMEOUT": "60",
        "NGAI_UPSTREAM_READ_TIMEOUT": "5",
    }
    with LiveApp(env) as live:
        yield live


@pytest.fixture
def limited(fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    """No tokens (the client is its IP), a rate limit and a small body limit; one
    per test, so that each starts with the whole rate limit.
    """
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_RATE_LIMIT": f"{RATE_LIMIT}/minute",
        "NGAI_MAX_BODY_BYTES": "4096",
    }
    with LiveApp(env) as live:
        yield live


@pytest.fixture(scope="module")
def quiet(fake: fu.FakeUpstream) -> t.Iterator[LiveApp]:
    """A long heartbeat: nothing is written to a stream while the upstream is silent."""
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_HEARTBEAT_INTERVAL": "60",
        "NGAI_ABANDON_TIMEOUT": "60",
    }
    with LiveApp(env) as live:
        yield live


#: the SDK clients a test made, closed after it (an SDK client left to the garbage
#: collector leaves its kept-alive socket open: a ResourceWarning, an error here)
_CLIENTS: list[OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> t.Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def client(app: LiveApp, api_key: str = TOKEN, **options: t.Any) -> OpenAI:
    sdk = OpenAI(base_url=app.url("/v1"), api_key=api_key, max_retries=0, **options)
    _CLIENTS.append(sdk)
    return sdk


def scripted(fake: fu.FakeUpstream, steps: t.Any) -> str:
    model = f"test/{uuid.uuid4().hex[:12]}"
    fake.script(model, steps)
    return model


USER = [{"role": "user", "content": "Hello"}]


# --- answers -------------------------------------------------------------------


def test_streamed_chunks_are_the_upstreams_bytes(app: LiveApp, fake: fu.FakeUpstream) -> None:
    steps = fu.text_chunks(["Hél", "lo, ", "wörld 😀\n", "```py\nx = 1\n```"])
    model = scripted(fake, [fu.Comment(), *steps])
    response = requests.post(
        app.url("/v1/chat/completions"),
        json={"model": model, "messages": USER, "stream": True},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    sent = b"".join(
        b"data: " + fu._dumps(step.data) + b"\n\n" for step in steps if isinstance(step, fu.Chunk)
    )
    # exactly the upstream's data lines, then [DONE]: no splice, no event: or id: lines
    assert response.content == sent + b"data: [DONE]\n\n"


def test_streaming_with_the_sdk(app: LiveApp, fake: fu.FakeUpstream) -> None:
    pieces = ["Hel", "lo ", "wörld 😀"]
    model = scripted(fake, fu.text_chunks(pieces, usage={"prompt_tokens": 2, "total_tokens": 9}))
    stream = client(app).chat.completions.create(model=model, messages=USER, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(pieces)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 9
    assert {c.model for c in chunks} == {fu.DEFAULT_MODEL}


def test_non_streaming_with_the_sdk(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = scripted(fake, fu.text_chunks(["Hel", "lo ", "there"], usage=fu.DEFAULT_USAGE))
    completion = client(app).chat.completions.create(model=model, messages=USER)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("gen-fake-")
    assert completion.model == fu.DEFAULT_MODEL
    assert completion.created > 0
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello there"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 13
    # the upstream was streamed, with the client's parameters
    assert fake.wait_for_request(model).json["stream"] is True


def tool_call_steps(model: str) -> list[t.Any]:
    gen = fu.new_generation_id()

    def tool(fragment: dict[str, t.Any]) -> fu.Chunk:
        chunk = fu.make_chunk(None, model=model, gen_id=gen)
        chunk["choices"][0]["delta"]["tool_calls"] = [fragment]
        return fu.Chunk(chunk)

    return [
        fu.Chunk(fu.make_chunk("", model=model, gen_id=gen)),
        tool(
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ),
        tool({"index": 0, "function": {"arguments": '{"city": '}}),
        tool({"index": 0, "function": {"arguments": '"Paris"}'}}),
        fu.Chunk(fu.make_chunk("", finish_reason="tool_calls", model=model, gen_id=gen)),
        fu.Chunk(fu.usage_chunk(model=model, gen_id=gen)),
        fu.Done(),
    ]


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_tools(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = f"test/{uuid.uuid4().hex[:12]}"
    fake.script(model, tool_call_steps(model))
    sdk = client(app)
    completion = sdk.chat.completions.create(
        model=model, messages=USER, tools=TOOLS, tool_choice="auto"
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert (call.id, call.type) == ("call_1", "function")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    sent = fake.wait_for_request(model).json
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "auto"

    # streamed: the fragments as the upstream sent them
    chunks = list(sdk.chat.completions.create(model=model, messages=USER, tools=TOOLS, stream=True))
    fragments = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert "".join(f.function.arguments or "" for f in fragments if f.function) == (
        '{"city": "Paris"}'
    )
    assert fragments[0].function is not None and fragments[0].function.name == "get_weather"

    # and the tool's answer goes back upstream as the next turn
    follow = [
        *USER,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]
    echo = scripted(fake, fu.text_chunks(["21 degrees"]))
    answer = sdk.chat.completions.create(model=echo, messages=follow, tools=TOOLS)
    assert answer.choices[0].message.content == "21 degrees"
    assert fake.wait_for_request(echo).json["messages"][2]["tool_call_id"] == "call_1"


def reasoning_steps(model: str) -> list[t.Any]:
    gen = fu.new_generation_id()

    def thought(text: str, index: int = 0) -> fu.Chunk:
        chunk = fu.make_chunk(None, model=model, gen_id=gen)
        chunk["choices"][0]["delta"]["reasoning"] = text
        chunk["choices"][0]["delta"]["reasoning_details"] = [
            {"type": "reasoning.text", "text": text, "index": index, "format": "x"}
        ]
        return fu.Chunk(chunk)

    return [
        thought("Let me "),
        thought("think."),
        *fu.text_chunks(["Forty", "-two."], model=model)[1:],
    ]


def test_reasoning(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = f"test/{uuid.uuid4().hex[:12]}"
    fake.script(model, reasoning_steps(model))
    sdk = client(app)
    completion = sdk.chat.completions.create(
        model=model, messages=USER, extra_body={"reasoning": {"effort": "low"}}
    )
    message = completion.choices[0].message
    assert message.content == "Forty-two."
    extra = message.model_extra or {}
    assert extra["reasoning"] == "Let me think."
    assert extra["reasoning_details"] == [
        {"type": "reasoning.text", "text": "Let me think.", "index": 0, "format": "x"}
    ]
    assert fake.wait_for_request(model).json["reasoning"] == {"effort": "low"}

    chunks = list(sdk.chat.completions.create(model=model, messages=USER, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join((d.model_extra or {}).get("reasoning") or "" for d in deltas) == "Let me think."


def test_models_list(app: LiveApp, fake: fu.FakeUpstream) -> None:
    models = client(app).models.list()
    listed = [(m.id, m.object, m.owned_by, m.created) for m in models]
    # the fake's list, with the allowlist applied
    assert listed == [("openai/gpt-4o", "model", "openai", 1715558400)]


def test_keep_alive_comments_while_the_upstream_thinks(app: LiveApp, fake: fu.FakeUpstream) -> None:
    steps = fu.text_chunks(["late"])
    model = scripted(fake, [steps[0], fu.Pause(HEARTBEAT * 3), *steps[1:]])
    response = requests.post(
        app.url("/v1/chat/completions"),
        json={"model": model, "messages": USER, "stream": True},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    frames = parse(response.text)
    assert any(f.comment == "keep-alive" for f in frames)
    assert frames[-1].data == "[DONE]"


def test_the_key_is_scrubbed(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = scripted(fake, fu.text_chunks([f"the key is {API_KEY}!"]))
    raw = requests.post(
        app.url("/v1/chat/completions"),
        json={"model": model, "messages": USER, "stream": True},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    ).text
    assert API_KEY not in raw and "the key is" in raw
    completion = client(app).chat.completions.create(model=model, messages=USER)
    assert API_KEY not in (completion.choices[0].message.content or "")


# --- errors: each SDK exception class ---------------------------------------------


def test_authentication_error(app: LiveApp) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(app, api_key="wrong").chat.completions.create(model="test/x", messages=USER)
    assert caught.value.status_code == 401
    assert caught.value.code == "unauthorized"
    assert caught.value.type == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        client(app, api_key="wrong").models.list()


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        pytest.param({"extra_body": {"frobnicate": 1}}, "frobnicate", id="unknown-key"),
        pytest.param({"n": 2}, "n", id="n-above-1"),
        pytest.param({"temperature": "hot"}, "temperature", id="bad-pass-through"),
        pytest.param({"extra_body": {"stream_options": 3}}, "stream_options", id="options"),
    ],
)
def test_bad_request_error(app: LiveApp, extra: dict[str, t.Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(app).chat.completions.create(model="test/x", messages=USER, **extra)
    assert caught.value.param == param
    assert caught.value.code == "invalid_request"
    assert caught.value.type == "invalid_request_error"
    assert param in caught.value.message


def test_bad_message_names_its_field(app: LiveApp) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(app).chat.completions.create(
            model="test/x",
            messages=[*USER, {"role": "robot", "content": "x"}],  # type: ignore[list-item]
        )
    assert caught.value.param == "messages[1].role"


def test_permission_denied_error_for_a_model_outside_the_allowlist(app: LiveApp) -> None:
    for stream in (False, True):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client(app).chat.completions.create(model="other/model", messages=USER, stream=stream)
        assert caught.value.code == "model_not_allowed"
        assert caught.value.type == "permission_error"
        assert caught.value.param == "model"


@pytest.mark.parametrize(
    ("status", "exception", "code", "kind"),
    [
        pytest.param(400, openai.BadRequestError, "upstream_bad_request", "invalid_request_error"),
        pytest.param(402, openai.APIStatusError, "insufficient_credits", "insufficient_quota"),
        pytest.param(403, openai.PermissionDeniedError, "content_blocked", "permission_error"),
        pytest.param(429, openai.RateLimitError, "upstream_rate_limited", "rate_limit_error"),
        pytest.param(500, openai.InternalServerError, "upstream_unavailable", "api_error"),
        pytest.param(401, openai.InternalServerError, "upstream_unauthorized", "api_error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_upstream_refusals(
    app: LiveApp,
    fake: fu.FakeUpstream,
    status: int,
    exception: type[openai.APIStatusError],
    code: str,
    kind: str,
    stream: bool,
) -> None:
    """Refused before the upstream accepted: an HTTP error, streamed or not."""
    model = scripted(fake, [fu.error_response(status, headers={"Retry-After": "7"})])
    with pytest.raises(exception) as caught:
        client(app).chat.completions.create(model=model, messages=USER, stream=stream)
    assert caught.value.status_code == (status if status < 500 and status != 401 else 502)
    assert (caught.value.code, caught.value.type) == (code, kind)
    if status == 429:
        assert caught.value.response.headers["Retry-After"] == "7"


def test_not_found_error(app: LiveApp) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(app).models.retrieve("test/x")
    assert caught.value.code == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/v1/chat/completions", 405, "POST"),
        ("DELETE", "/v1/models", 405, "GET, HEAD"),
        ("POST", "/v1/embeddings", 404, None),
        ("GET", "/v1/", 404, None),
    ],
)
def test_routing_errors_under_v1(
    app: LiveApp, method: str, path: str, status: int, allow: str | None
) -> None:
    response = requests.request(
        method, app.url(path), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )
    assert response.status_code == status
    assert response.headers.get("Allow") == allow
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


def test_unsupported_media_type(app: LiveApp) -> None:
    response = requests.post(
        app.url("/v1/chat/completions"),
        data="hello",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain"},
        timeout=5,
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_mid_stream_error(app: LiveApp, fake: fu.FakeUpstream) -> None:
    steps = fu.text_chunks(["partial "], finish_reason=None, usage=None, done=False)
    model = scripted(fake, [*steps, fu.Chunk(fu.error_chunk(502, "Provider went away"))])
    raw = requests.post(
        app.url("/v1/chat/completions"),
        json={"model": model, "messages": USER, "stream": True},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    ).text
    frames = parse(raw)
    assert frames[-1].json == {
        "error": {
            "message": "Provider went away",
            "type": "api_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    assert "[DONE]" not in raw

    sdk = client(app)
    seen = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in sdk.chat.completions.create(model=model, messages=USER, stream=True):
            seen.append(chunk.choices[0].delta.content)
    assert "partial " in seen
    assert caught.value.message == "Provider went away"
    assert caught.value.code == "upstream_error"
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.chat.completions.create(model=model, messages=USER)
    assert failed.value.status_code == 502 and failed.value.code == "upstream_error"


def test_payload_too_large(limited: LiveApp) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client(limited).chat.completions.create(
            model="test/x", messages=[{"role": "user", "content": "x" * 5000}]
        )
    assert caught.value.status_code == 413
    assert caught.value.code == "payload_too_large"
    assert caught.value.type == "invalid_request_error"


def test_rate_limit_counts_every_door(limited: LiveApp, fake: fu.FakeUpstream) -> None:
    """One client (its IP: the API key names nobody without tokens) limited on
    /prepare is limited on /v1 too, and the other way round.
    """
    model = scripted(fake, fu.text_chunks(["ok"]))
    body = {"model": model, "messages": USER}
    calls = 0
    for index in range(RATE_LIMIT):
        if index % 2:
            response = requests.post(limited.url("/prepare"), json=body, timeout=5)
            assert response.status_code == 200, response.text
        else:
            # a different key each time: still the same client
            sdk = client(limited, api_key=f"key-{index}")
            assert sdk.chat.completions.create(model=model, messages=USER).choices
        calls += 1
    assert calls == RATE_LIMIT
    with pytest.raises(openai.RateLimitError) as caught:
        client(limited, api_key="yet-another").chat.completions.create(model=model, messages=USER)
    assert caught.value.code == "rate_limited"
    assert caught.value.type == "rate_limit_error"
    assert int(caught.value.response.headers["Retry-After"]) > 0
    assert caught.value.response.headers["RateLimit-Remaining"] == "0"
    assert requests.post(limited.url("/prepare"), json=body, timeout=5).status_code == 429


def test_budget_counts_this_doors_answers(fake: fu.FakeUpstream) -> None:
    """An answer's usage on /v1 spends the client's budget; past it, 429
    budget_exceeded on /v1 and on /prepare alike.
    """
    env = {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": fake.base_url,
        "NGAI_BUDGET_PER_CLIENT": "10 tokens/day",
    }
    model = scripted(fake, fu.text_chunks(["spent"], usage={"total_tokens": 13}))
    with LiveApp(env) as live:
        sdk = client(live)
        assert sdk.chat.completions.create(model=model, messages=USER).usage.total_tokens == 13

        # counted before the answer's end shows: the very next request is refused
        answer = requests.post(
            live.url("/prepare"), json={"model": model, "messages": USER}, timeout=5
        )
        assert answer.status_code == 429
        assert answer.json()["error"]["code"] == "budget_exceeded"
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.chat.completions.create(model=model, messages=USER, stream=True)
        assert caught.value.code == "budget_exceeded"
        assert int(caught.value.response.headers["Retry-After"]) > 0


def test_a_refused_request_keeps_its_connection_usable(app: LiveApp, fake: fu.FakeUpstream) -> None:
    """The SDKs reuse connections: a 401 answered before the body was read must
    not leave the body to be read as the next request.
    """
    model = scripted(fake, fu.text_chunks(["fine"]))
    body = json.dumps({"model": model, "messages": USER, "pad": "x" * 20000}).encode()
    good = json.dumps({"model": model, "messages": USER}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Authorization": "Bearer wrong"}
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        first = conn.getresponse()
        assert first.status == 401
        assert json.loads(first.read())["error"]["code"] == "unauthorized"
        sock = conn.sock
        assert sock is not None  # kept alive
        headers["Authorization"] = f"Bearer {TOKEN}"
        conn.request("POST", "/v1/chat/completions", body=good, headers=headers)
        second = conn.getresponse()
        assert conn.sock is sock  # the same connection
        assert second.status == 200
        assert json.loads(second.read())["choices"][0]["message"]["content"] == "fine"
    finally:
        conn.close()


# --- the client going away ---------------------------------------------------------


def test_closing_a_stream_stops_the_upstream_within_a_second(
    app: LiveApp, fake: fu.FakeUpstream
) -> None:
    steps = fu.text_chunks(["first "], finish_reason=None, usage=None, done=False)
    model = scripted(fake, [*steps, fu.Hang()])
    stream = client(app).chat.completions.create(model=model, messages=USER, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    request = fake.wait_for_request(model)
    stream.close()
    closed_at = time.monotonic()
    assert fake.wait_closed(request, timeout=5) - closed_at < 1.0


def test_a_non_streaming_client_that_leaves_stops_the_upstream(
    app: LiveApp, fake: fu.FakeUpstream
) -> None:
    steps = fu.text_chunks(["thinking"], finish_reason=None, usage=None, done=False)
    model = scripted(fake, [*steps, fu.Hang()])
    with pytest.raises(openai.APITimeoutError):
        client(app, timeout=1.0).chat.completions.create(model=model, messages=USER)
    gone_at = time.monotonic()
    request = fake.wait_for_request(model)
    assert fake.wait_closed(request, timeout=5) - gone_at < 1.0


def test_a_streaming_client_that_leaves_while_the_upstream_is_silent(
    quiet: LiveApp, fake: fu.FakeUpstream
) -> None:
    """Nothing is written while the upstream is silent: the socket watch sees the
    client go, not a failed write.
    """
    steps = fu.text_chunks(["x"], finish_reason=None, usage=None, done=False)
    model = scripted(fake, [*steps, fu.Hang()])
    response = requests.post(
        quiet.url("/v1/chat/completions"),
        json={"model": model, "messages": USER, "stream": True},
        stream=True,
        timeout=10,
    )
    assert response.status_code == 200
    request = fake.wait_for_request(model)
    response.close()
    gone_at = time.monotonic()
    assert fake.wait_closed(request, timeout=5) - gone_at < 1.0


# --- invariant 10: the same answer through /stream and /v1 ------------------------


def full_answer_steps(model: str) -> list[t.Any]:
    """Thinking, text, a citation, an image, a tool call and usage."""
    gen = fu.new_generation_id()

    def delta(**fields: t.Any) -> fu.Chunk:
        chunk = fu.make_chunk(None, model=model, gen_id=gen)
        chunk["choices"][0]["delta"].update(fields)
        return fu.Chunk(chunk)

    citation = {"url": "https://example.com/a", "title": "A", "start_index": 0, "end_index": 3}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    return [
        delta(reasoning="Hmm, ", reasoning_details=[{"type": "reasoning.text", "text": "Hmm, "}]),
        delta(reasoning="yes."),
        delta(content="See "),
        delta(content="this.", annotations=[{"type": "url_citation", "url_citation": citation}]),
        delta(images=[image]),
        delta(
            tool_calls=[
                {"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}},
            ]
        ),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"a":1}'}}]),
        fu.Chunk(fu.make_chunk("", finish_reason="tool_calls", model=model, gen_id=gen)),
        fu.Chunk(fu.usage_chunk({"prompt_tokens": 3, "total_tokens": 12}, model=model, gen_id=gen)),
        fu.Done(),
    ]


def test_invariant_10_the_same_answer_on_every_door(app: LiveApp, fake: fu.FakeUpstream) -> None:
    model = f"test/{uuid.uuid4().hex[:12]}"
    fake.script(model, full_answer_steps(model))
    auth = {"Authorization": f"Bearer {TOKEN}"}

    # the NGAI door
    prepared = requests.post(
        app.url("/prepare"), json={"model": model, "messages": USER}, headers=auth, timeout=5
    ).json()
    evs = events(parse(requests.get(app.url(prepared["streamUrl"]), timeout=10).text))
    chunks = [e.json for e in evs if e.name == "chunk"]
    done = evs[-1].json
    assert evs[-1].name == "done"
    ngai = {
        "text": "".join(c["content"] for c in chunks),
        "thinking": "".join(c["reasoning"] for c in chunks),
        "tool_calls": done["toolCalls"],
        "citations": done["citations"],
        "images": [
            i for c in chunks if c["choices"] for i in c["choices"][0]["delta"].get("images", [])
        ],
        "usage": done["usage"],
    }

    # /v1, streamed: what the chunks say, as an OpenAI client adds them up
    sdk = client(app)
    streamed = list(sdk.chat.completions.create(model=model, messages=USER, stream=True))
    deltas = [c.choices[0].delta for c in streamed if c.choices]
    calls: dict[int, dict[str, t.Any]] = {}
    for d in deltas:
        for fragment in d.tool_calls or []:
            call = calls.setdefault(
                fragment.index,
                {"id": None, "type": "function", "function": {"name": None, "arguments": ""}},
            )
            call["id"] = fragment.id or call["id"]
            if fragment.function is not None:
                call["function"]["name"] = fragment.function.name or call["function"]["name"]
                call["function"]["arguments"] += fragment.function.arguments or ""
    v1_stream = {
        "text": "".join(d.content or "" for d in deltas),
        "thinking": "".join((d.model_extra or {}).get("reasoning") or "" for d in deltas),
        "tool_calls": list(calls.values()),
        "citations": [
            a["url_citation"]
            for d in deltas
            for a in (d.model_extra or {}).get("annotations") or []
        ],
        "images": [i for d in deltas for i in (d.model_extra or {}).get("images") or []],
        "usage": streamed[-1].usage.model_dump(exclude_none=True) if streamed[-1].usage else None,
    }

    # /v1, not streamed
    message = sdk.chat.completions.create(model=model, messages=USER).choices[0].message
    completion = sdk.chat.completions.with_raw_response.create(model=model, messages=USER)
    usage = json.loads(completion.http_response.text)["usage"]
    extra = message.model_extra or {}
    v1 = {
        "text": message.content,
        "thinking": extra["reasoning"],
        "tool_calls": [c.model_dump() for c in message.tool_calls or []],
        "citations": [a.url_citation.model_dump() for a in message.annotations or []],
        "images": extra["images"],
        "usage": usage,
    }
    assert ngai["text"] == "See this."
    assert ngai["thinking"] == "Hmm, yes."
    assert len(ngai["tool_calls"]) == 1 and len(ngai["images"]) == 1
    assert ngai["citations"][0]["url"] == "https://example.com/a"
    assert ngai["usage"] == {"prompt_tokens": 3, "total_tokens": 12}
    assert v1_stream == ngai
    assert v1 == ngai


# --- the door in process (the Flask test client: no socket to watch) ---------------


def test_the_door_under_a_host_apps_prefix_with_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask

    from ngai_chat import chat_blueprint

    monkeypatch.setenv("NGAI_DEMO", "1")
    host = Flask("host")
    host.register_blueprint(chat_blueprint, url_prefix="/api/chat")
    client = host.test_client()
    listed = client.get("/api/chat/v1/models").get_json()
    assert [m["id"] for m in listed["data"]] == ["ngai/demo"]
    body = {"model": "ngai/demo", "messages": [{"role": "user", "content": "Say *hi*"}]}
    completion = client.post("/api/chat/v1/chat/completions", json=body).get_json()
    message = completion["choices"][0]["message"]
    assert "*hi*" in message["content"] and message["reasoning"]
    assert message["annotations"][0]["type"] == "url_citation"
    assert completion["usage"]["total_tokens"] > 0
    missing = client.get("/api/chat/v1/nothing")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"

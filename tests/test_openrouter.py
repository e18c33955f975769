"""The OpenRouter client, with ``responses``: request shape, parsing, error mapping."""

from __future__ import annotations

import json

import pytest
import requests
import responses

from bench.fake_upstream import fixtures_dir
from ngai_chat import errors
from ngai_chat.upstream.openrouter import OpenRouterUpstream

BASE = "https://openrouter.test/api/v1"
KEY = "sk-or-v1-SECRET-abcdef"
FIXTURES = fixtures_dir()


@pytest.fixture
def client() -> OpenRouterUpstream:
    upstream = OpenRouterUpstream(
        api_key=KEY, base_url=BASE, title="Test Title", connect_timeout=1, read_timeout=2
    )
    yield upstream
    upstream.close()


def stream_body(*events: str) -> bytes:
    return "".join(events).encode()


def add_stream(body: bytes, status: int = 200, content_type: str = "text/event-stream") -> None:
    responses.add(
        responses.POST,
        f"{BASE}/chat/completions",
        body=body,
        status=status,
        content_type=content_type,
    )


def chunks(client: OpenRouterUpstream, referer: str | None = None) -> list[dict]:
    stream = client.stream_chat({"model": "m", "messages": []}, referer=referer)
    try:
        return [c.value for c in stream]
    finally:
        stream.close()


@responses.activate
def test_request_shape(client: OpenRouterUpstream) -> None:
    add_stream(b"data: [DONE]\n\n")
    chunks(client, referer="https://site.example")
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["HTTP-Referer"] == "https://site.example"
    assert sent.headers["X-Title"] == "Test Title"
    assert sent.headers["X-OpenRouter-Title"] == "Test Title"
    assert sent.headers["Accept"] == "text/event-stream"
    assert json.loads(sent.body) == {"model": "m", "messages": [], "stream": True}


@responses.activate
def test_no_referer_header_when_unknown(client: OpenRouterUpstream) -> None:
    add_stream(b"data: [DONE]\n\n")
    chunks(client)
    assert "HTTP-Referer" not in responses.calls[0].request.headers


@responses.activate
def test_recorded_openrouter_stream_parses(client: OpenRouterUpstream) -> None:
    add_stream((FIXTURES / "01-plain-text-usage-claude37.sse").read_bytes())
    values = chunks(client)
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in values if c.get("choices")
    )
    assert text == 'You used 3,600 "a" characters in your message.'
    assert values[-1]["usage"]["total_tokens"] == 1439
    assert values[-2]["choices"][0]["finish_reason"] == "stop"


@responses.activate
def test_chunk_text_is_kept_as_received(client: OpenRouterUpstream) -> None:
    raw = '{"id":"x",  "choices":[{"delta":{"content":" \\u00e9 "}}]}'
    add_stream(f": OPENROUTER PROCESSING\n\ndata: {raw}\n\ndata: [DONE]\n\n".encode())
    stream = client.stream_chat({"model": "m", "messages": []}, referer=None)
    [only] = list(stream)
    assert only.text == raw
    assert only.value["choices"][0]["delta"]["content"] == " é "


@responses.activate
def test_eof_without_done_is_interrupted(client: OpenRouterUpstream) -> None:
    add_stream((FIXTURES / "06-processing-comments-gpt4o-mini-partial.sse").read_bytes())
    stream = client.stream_chat({"model": "m", "messages": []}, referer=None)
    seen = []
    with pytest.raises(errors.UpstreamInterrupted):
        seen.extend(stream)
    assert [c.value["choices"][0]["delta"]["content"] for c in seen] == ["", "亚"]


@pytest.mark.parametrize(
    ("status", "cls", "code", "http"),
    [
        (400, errors.UpstreamBadRequest, "upstream_bad_request", 400),
        (401, errors.UpstreamUnauthorized, "upstream_unauthorized", 502),
        (402, errors.InsufficientCredits, "insufficient_credits", 402),
        (403, errors.ContentBlocked, "content_blocked", 403),
        (404, errors.UpstreamBadRequest, "upstream_bad_request", 400),
        (408, errors.UpstreamTimeout, "upstream_timeout", 504),
        (429, errors.UpstreamRateLimited, "upstream_rate_limited", 429),
        (500, errors.UpstreamUnavailable, "upstream_unavailable", 502),
        (502, errors.UpstreamUnavailable, "upstream_unavailable", 502),
        (503, errors.UpstreamUnavailable, "upstream_unavailable", 502),
    ],
)
@responses.activate
def test_status_mapping(
    client: OpenRouterUpstream, status: int, cls: type, code: str, http: int
) -> None:
    body = {"error": {"code": status, "message": f"upstream says {status}", "metadata": {"x": 1}}}
    add_stream(json.dumps(body).encode(), status=status, content_type="application/json")
    with pytest.raises(cls) as info:
        chunks(client)
    error = info.value
    assert (error.code, error.status) == (code, http)
    assert error.message == f"upstream says {status}"
    assert error.upstream == body["error"]


@responses.activate
def test_recorded_402_keeps_message_and_metadata(client: OpenRouterUpstream) -> None:
    body = (FIXTURES / "09-error-402-insufficient-credits.json").read_bytes()
    add_stream(body, status=402, content_type="application/json")
    with pytest.raises(errors.InsufficientCredits) as info:
        chunks(client)
    assert info.value.message.startswith("This request requires more credits")
    assert info.value.upstream["metadata"] == {"provider_name": None}
    assert info.value.retryable is False


@responses.activate
def test_429_keeps_retry_after(client: OpenRouterUpstream) -> None:
    responses.add(
        responses.POST,
        f"{BASE}/chat/completions",
        json={"error": {"code": 429, "message": "slow down"}},
        status=429,
        headers={"Retry-After": "17"},
    )
    with pytest.raises(errors.UpstreamRateLimited) as info:
        chunks(client)
    assert info.value.retry_after == 17 and info.value.retryable


@pytest.mark.parametrize("status", [200, 502])
@responses.activate
def test_html_page_is_unavailable(client: OpenRouterUpstream, status: int) -> None:
    add_stream(b"<html><body>Bad gateway</body></html>", status=status, content_type="text/html")
    with pytest.raises(errors.UpstreamUnavailable) as info:
        chunks(client)
    assert "HTML" in info.value.message and "<html>" not in info.value.message


@responses.activate
def test_json_error_with_status_200(client: OpenRouterUpstream) -> None:
    add_stream(b'{"error": {"code": 400, "message": "bad model"}}', content_type="application/json")
    with pytest.raises(errors.UpstreamBadRequest, match="bad model"):
        chunks(client)


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (requests.ConnectionError("refused"), errors.UpstreamUnavailable),
        (requests.ConnectTimeout("slow"), errors.UpstreamTimeout),
        (requests.ReadTimeout("silent"), errors.UpstreamTimeout),
    ],
)
@responses.activate
def test_connection_failures(client: OpenRouterUpstream, exc: Exception, cls: type) -> None:
    responses.add(responses.POST, f"{BASE}/chat/completions", body=exc)
    with pytest.raises(cls) as info:
        chunks(client)
    assert info.value.retryable


@responses.activate
def test_key_is_scrubbed_from_upstream_errors(client: OpenRouterUpstream) -> None:
    body = {"error": {"code": 401, "message": f"Invalid key {KEY}", "metadata": {"raw": KEY}}}
    add_stream(json.dumps(body).encode(), status=401, content_type="application/json")
    with pytest.raises(errors.UpstreamUnauthorized) as info:
        chunks(client)
    assert KEY not in json.dumps(info.value.to_dict())
    assert "[redacted]" in info.value.message


@responses.activate
def test_key_is_scrubbed_from_chunks(client: OpenRouterUpstream) -> None:
    add_stream(f'data: {{"choices":[{{"delta":{{"content":"{KEY}"}}}}]}}\n\n'.encode())
    stream = client.stream_chat({"model": "m", "messages": []}, referer=None)
    with pytest.raises(errors.UpstreamInterrupted):
        for chunk in stream:
            assert KEY not in chunk.text
            assert chunk.value["choices"][0]["delta"]["content"] == "[redacted]"


@responses.activate
def test_models(client: OpenRouterUpstream) -> None:
    responses.add(responses.GET, f"{BASE}/models", json={"data": [{"id": "a/b"}]})
    assert client.list_models() == {"data": [{"id": "a/b"}]}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": 503, "json": {"error": {"code": 503, "message": "down"}}},
        {"status": 200, "body": "<html></html>", "content_type": "text/html"},
        {"status": 200, "json": {"models": []}},
        {"body": requests.ConnectionError("refused")},
    ],
)
@responses.activate
def test_models_failures(client: OpenRouterUpstream, kwargs: dict) -> None:
    responses.add(responses.GET, f"{BASE}/models", **kwargs)
    with pytest.raises(errors.UpstreamError):
        client.list_models()


def test_repr_hides_the_key(client: OpenRouterUpstream) -> None:
    assert KEY not in repr(client)


@responses.activate
def test_invalid_utf8_is_an_upstream_error(client: OpenRouterUpstream) -> None:
    add_stream(b'data: {"choices":[{"delta":{"content":"\xff\xfe"}}]}\n\n')
    stream = client.stream_chat({"model": "m", "messages": []}, referer=None)
    with pytest.raises(errors.UpstreamStreamError, match="UTF-8"):
        list(stream)
